//! x86_64 AVX-512F micro-kernel: 12 x 32 tile, 24 zmm accumulators.

use core::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::kernel::Kernel;

/// The AVX-512F kernel.
pub(crate) struct Avx512;

impl Kernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    // 144 x 256 floats of packed A = 144 KiB, inside a 1-2 MiB L2.
    const MC: usize = 144;
    // One 256 x 32 panel of packed B = 32 KiB, the size of L1 on AVX-512 Xeons (48 KiB on newer).
    const KC: usize = 256;
    // 256 x 1024 floats of packed B = 1 MiB, in L2 / L3.
    const NC: usize = 1024;

    #[inline(always)]
    unsafe fn tile(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
        // SAFETY: same contract as `Kernel::tile`, forwarded unchanged.
        unsafe { tile_12x32(kc, alpha, a, b, beta, c, ldc) }
    }

    #[inline(always)]
    unsafe fn transpose8(rows: &[*const f32; 8], dst: *mut f32, stride: usize) {
        // SAFETY: same contract; AVX-512F CPUs have AVX2, and the AVX-512 entry point enables it.
        unsafe { super::avx2::transpose_8x8(rows, dst, stride) }
    }
}

/// # Safety
/// As [`Kernel::tile`] with `MR = 12`, `NR = 32`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_12x32(
    kc: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc: [[__m512; 2]; 12] = [[_mm512_setzero_ps(); 2]; 12];
    // One rank-1 update of the 12 x 32 accumulator tile per step of the depth.
    let step = |acc: &mut [[__m512; 2]; 12], p: usize| {
        // SAFETY: `p < kc`, so `b + 32 p + 32` and `a + 12 p + 12` stay inside the packed panels.
        let (b0, b1) = unsafe {
            (
                _mm512_loadu_ps(b.add(32 * p)),
                _mm512_loadu_ps(b.add(32 * p + 16)),
            )
        };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: as above, `12 p + i < 12 kc`.
            let ai = _mm512_set1_ps(unsafe { *a.add(12 * p + i) });
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
    };
    // Unrolled by 4 to amortise the loop counter over 4 x 24 FMAs.
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
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row `i < 12` and column `16 h + 15 < 32` are inside the caller's tile of C.
            unsafe {
                let dst = c.add(i * ldc + 16 * h);
                let out = if beta == 0.0 {
                    _mm512_mul_ps(va, v)
                } else if beta == 1.0 {
                    _mm512_add_ps(_mm512_mul_ps(va, v), _mm512_loadu_ps(dst))
                } else {
                    _mm512_add_ps(_mm512_mul_ps(va, v), _mm512_mul_ps(vb, _mm512_loadu_ps(dst)))
                };
                _mm512_storeu_ps(dst, out);
            }
        }
    }
}
