//! x86_64 AVX2 + FMA micro-kernel: 6 x 16 tile, 12 ymm accumulators.

use core::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_mul_ps,
    _mm256_permute2f128_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_shuffle_ps, _mm256_storeu_ps,
    _mm256_unpackhi_ps, _mm256_unpacklo_ps,
};

use super::kernel::Kernel;

/// The AVX2 + FMA kernel.
pub(crate) struct Avx2;

impl Kernel for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    // 72 x 384 floats of packed A = 108 KiB, a fifth of Zen 3's 512 KiB L2.
    const MC: usize = 72;
    // One 384 x 16 panel of packed B = 24 KiB, inside a 32 KiB L1 (784 splits as 3 x 262).
    const KC: usize = 384;
    // 384 x 2048 floats of packed B = 3 MiB, in L3; wide enough for 10 stacked members (1280).
    const NC: usize = 2048;

    #[inline(always)]
    unsafe fn tile(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
        // SAFETY: same contract as `Kernel::tile`, forwarded unchanged.
        unsafe { tile_6x16(kc, alpha, a, b, beta, c, ldc) }
    }

    #[inline(always)]
    unsafe fn transpose8(rows: &[*const f32; 8], dst: *mut f32, stride: usize) {
        // SAFETY: same contract as `Kernel::transpose8`, forwarded unchanged.
        unsafe { transpose_8x8(rows, dst, stride) }
    }
}

/// 8 x 8 transpose in registers: 8 loads, 24 shuffles, 8 stores.
///
/// # Safety
/// As [`Kernel::transpose8`]; the CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn transpose_8x8(rows: &[*const f32; 8], dst: *mut f32, stride: usize) {
    // SAFETY: each row pointer is valid for 8 reads (caller's contract).
    let r = rows.map(|row| unsafe { _mm256_loadu_ps(row) });
    // Interleave pairs of rows, then pairs of pairs, then swap 128-bit halves.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let columns = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    for (q, col) in columns.into_iter().enumerate() {
        // SAFETY: group q of 8 floats at `dst + q stride` is writable (caller's contract).
        unsafe { _mm256_storeu_ps(dst.add(q * stride), col) };
    }
}

/// # Safety
/// As [`Kernel::tile`] with `MR = 6`, `NR = 16`; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_6x16(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
    let mut acc: [[__m256; 2]; 6] = [[_mm256_setzero_ps(); 2]; 6];
    // One rank-1 update of the 6 x 16 accumulator tile per step of the depth.
    let step = |acc: &mut [[__m256; 2]; 6], p: usize| {
        // SAFETY: `p < kc`, so `b + 16 p + 16` and `a + 6 p + 6` stay inside the packed panels.
        let (b0, b1) = unsafe { (_mm256_loadu_ps(b.add(16 * p)), _mm256_loadu_ps(b.add(16 * p + 8))) };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: as above, `6 p + i < 6 kc`.
            let ai = unsafe { _mm256_broadcast_ss(&*a.add(6 * p + i)) };
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    };
    // Unrolled by 4 to amortise the loop counter over 4 x 12 FMAs.
    let mut p = 0;
    while p + 4 <= kc {
        step(&mut acc, p);
        step(&mut acc, p + 1);
        step(&mut acc, p + 2);
        step(&mut acc, p + 3);
        p += 4;
    }
    while p < kc {
        step(&mut acc, p);
        p += 1;
    }
    let va = _mm256_set1_ps(alpha);
    let vb = _mm256_set1_ps(beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row `i < 6` and column `8 h + 7 < 16` are inside the caller's tile of C.
            unsafe {
                let dst = c.add(i * ldc + 8 * h);
                let out = if beta == 0.0 {
                    _mm256_mul_ps(va, v)
                } else if beta == 1.0 {
                    _mm256_add_ps(_mm256_mul_ps(va, v), _mm256_loadu_ps(dst))
                } else {
                    _mm256_add_ps(_mm256_mul_ps(va, v), _mm256_mul_ps(vb, _mm256_loadu_ps(dst)))
                };
                _mm256_storeu_ps(dst, out);
            }
        }
    }
}
