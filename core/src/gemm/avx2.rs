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
    // 512 (784 as 2 x 392) measured level to a few per cent faster, but a different split of
    // the depth rounds differently, and every model trained so far would change in its last bits.
    const KC: usize = 384;
    // 384 x 2048 floats of packed B = 3 MiB, in L3; wide enough for 10 stacked members (1280).
    const NC: usize = 2048;

    #[inline(always)]
    unsafe fn tile(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
        // SAFETY: same contract as `Kernel::tile`, forwarded unchanged.
        unsafe { tile_rx16::<6>(kc, alpha, a, b, beta, c, ldc) }
    }

    #[inline(always)]
    unsafe fn tile_rows(
        rows: usize,
        kc: usize,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: same contract as `Kernel::tile_rows`; each arm computes `rows <= 6` rows.
        unsafe {
            match rows {
                1 => tile_rx16::<1>(kc, alpha, a, b, 0.0, c, ldc),
                2 => tile_rx16::<2>(kc, alpha, a, b, 0.0, c, ldc),
                3 => tile_rx16::<3>(kc, alpha, a, b, 0.0, c, ldc),
                4 => tile_rx16::<4>(kc, alpha, a, b, 0.0, c, ldc),
                5 => tile_rx16::<5>(kc, alpha, a, b, 0.0, c, ldc),
                _ => tile_rx16::<6>(kc, alpha, a, b, 0.0, c, ldc),
            }
        }
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

/// The first `R` rows (R <= 6) of the 6 x 16 tile: `2 R` ymm accumulators, the packed A panel
/// read at its stride of 6. `R = 6` is the full kernel, the others the bottom edge of C.
///
/// # Safety
/// As [`Kernel::tile`] with `MR = 6`, `NR = 16`, C holding `R` rows; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_rx16<const R: usize>(
    kc: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    let acc = if R == 6 {
        // SAFETY: forwarded contract; the 6-row accumulators are the `R = 6` ones.
        let full = unsafe { accumulate_6x16(kc, a, b) };
        core::array::from_fn(|i| full[i])
    } else {
        // SAFETY: forwarded contract.
        unsafe { accumulate_rx16::<R>(kc, a, b) }
    };
    // SAFETY: forwarded contract.
    unsafe { store_rx16(&acc, alpha, beta, c, ldc) }
}

/// `Ap Bp` for the first `R` rows of a packed 6-row A panel and a 16-column B panel, in
/// registers: what the compiler makes of plain intrinsics, good enough for the short edges.
///
/// # Safety
/// `a` is valid for `6 kc` reads, `b` for `16 kc`; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn accumulate_rx16<const R: usize>(kc: usize, a: *const f32, b: *const f32) -> [[__m256; 2]; R] {
    let mut acc: [[__m256; 2]; R] = [[_mm256_setzero_ps(); 2]; R];
    for p in 0..kc {
        // SAFETY: `p < kc`, so `b + 16 p + 16` and `a + 6 p + 6` stay inside the packed panels.
        let (b0, b1) = unsafe { (_mm256_loadu_ps(b.add(16 * p)), _mm256_loadu_ps(b.add(16 * p + 8))) };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: as above, `6 p + i < 6 kc` for `i < R <= 6`.
            let ai = unsafe { _mm256_broadcast_ss(&*a.add(6 * p + i)) };
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    }
    acc
}

/// One depth step of the full 6 x 16 kernel, as assembly text: two loads of B, then for each
/// of the 6 rows a broadcast of A and two FMAs. `$a` and `$b` are byte offsets from the
/// panels' current positions.
macro_rules! step_6x16 {
    ($a:literal, $b:literal) => {
        concat!(
            "vmovups {b0}, [{b} + ",
            $b,
            "]\n",
            "vmovups {b1}, [{b} + ",
            $b,
            " + 32]\n",
            "vbroadcastss {t}, dword ptr [{a} + ",
            $a,
            "]\n",
            "vfmadd231ps {c00}, {b0}, {t}\n",
            "vfmadd231ps {c01}, {b1}, {t}\n",
            "vbroadcastss {t}, dword ptr [{a} + ",
            $a,
            " + 4]\n",
            "vfmadd231ps {c10}, {b0}, {t}\n",
            "vfmadd231ps {c11}, {b1}, {t}\n",
            "vbroadcastss {t}, dword ptr [{a} + ",
            $a,
            " + 8]\n",
            "vfmadd231ps {c20}, {b0}, {t}\n",
            "vfmadd231ps {c21}, {b1}, {t}\n",
            "vbroadcastss {t}, dword ptr [{a} + ",
            $a,
            " + 12]\n",
            "vfmadd231ps {c30}, {b0}, {t}\n",
            "vfmadd231ps {c31}, {b1}, {t}\n",
            "vbroadcastss {t}, dword ptr [{a} + ",
            $a,
            " + 16]\n",
            "vfmadd231ps {c40}, {b0}, {t}\n",
            "vfmadd231ps {c41}, {b1}, {t}\n",
            "vbroadcastss {t}, dword ptr [{a} + ",
            $a,
            " + 20]\n",
            "vfmadd231ps {c50}, {b0}, {t}\n",
            "vfmadd231ps {c51}, {b1}, {t}\n",
        )
    };
}

/// `Ap Bp` for a full packed 6-row A panel and 16-column B panel, in registers. Written in
/// assembly because LLVM, given the same loop in intrinsics, hoists the next step's loads of B
/// past the 16 registers and spills an accumulator to the stack on every step (seen in the
/// disassembly; about a fifth of the kernel's speed). Here the 12 accumulators, 2 B vectors and
/// 1 broadcast use 15 of the 16 ymm registers, and the depth loop is unrolled by 4.
///
/// # Safety
/// `a` is valid for `6 kc` reads, `b` for `16 kc`; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn accumulate_6x16(kc: usize, a: *const f32, b: *const f32) -> [[__m256; 2]; 6] {
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
    let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
    // SAFETY: the loops read `a[0 .. 6 kc]` and `b[0 .. 16 kc]` only (4 steps per pass of the
    // first loop while at least 4 remain, then one step per pass), inside the panels the caller
    // vouches for; the code writes no memory and touches no stack, and AVX2 + FMA are enabled.
    unsafe {
        core::arch::asm!(
            "cmp {quads}, 0",
            "je 3f",
            "2:",
            step_6x16!("0", "0"),
            step_6x16!("24", "64"),
            step_6x16!("48", "128"),
            step_6x16!("72", "192"),
            "add {a}, 96",
            "add {b}, 256",
            "dec {quads}",
            "jnz 2b",
            "3:",
            "cmp {rest}, 0",
            "je 5f",
            "4:",
            step_6x16!("0", "0"),
            "add {a}, 24",
            "add {b}, 64",
            "dec {rest}",
            "jnz 4b",
            "5:",
            quads = inout(reg) kc / 4 => _,
            rest = inout(reg) kc % 4 => _,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            b0 = out(ymm_reg) _,
            b1 = out(ymm_reg) _,
            t = out(ymm_reg) _,
            c00 = inout(ymm_reg) c00,
            c01 = inout(ymm_reg) c01,
            c10 = inout(ymm_reg) c10,
            c11 = inout(ymm_reg) c11,
            c20 = inout(ymm_reg) c20,
            c21 = inout(ymm_reg) c21,
            c30 = inout(ymm_reg) c30,
            c31 = inout(ymm_reg) c31,
            c40 = inout(ymm_reg) c40,
            c41 = inout(ymm_reg) c41,
            c50 = inout(ymm_reg) c50,
            c51 = inout(ymm_reg) c51,
            options(nostack, readonly),
        );
    }
    [
        [c00, c01],
        [c10, c11],
        [c20, c21],
        [c30, c31],
        [c40, c41],
        [c50, c51],
    ]
}

/// `C = alpha acc + beta C` for the first `R` rows of a 16-column tile (C not read when
/// beta = 0).
///
/// # Safety
/// `c` is valid for reads and writes of `R` rows of 16 floats at stride `ldc`; the CPU has AVX.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_rx16<const R: usize>(acc: &[[__m256; 2]; R], alpha: f32, beta: f32, c: *mut f32, ldc: usize) {
    let va = _mm256_set1_ps(alpha);
    let vb = _mm256_set1_ps(beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row `i < R` and column `8 h + 7 < 16` are inside the caller's tile of C.
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
