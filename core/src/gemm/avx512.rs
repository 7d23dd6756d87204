//! x86_64 AVX-512F micro-kernel: 12 x 32 tile, 24 zmm accumulators; ragged edges through masked
//! loads and stores of C, with only the rows and 16-column halves they need.

use core::arch::x86_64::{
    __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::kernel::Kernel;

/// The AVX-512F kernel.
pub(crate) struct Avx512;

/// Every lane of a 16-float half.
const ALL: __mmask16 = 0xFFFF;

impl Kernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    // 144 x 384 floats of packed A = 216 KiB, inside a 1-2 MiB L2.
    const MC: usize = 144;
    // The AVX2 kernel's depth: the same split of the depth (784 as 3 x 262) and the same FMA
    // chain per element, so both paths give the same bits and a seed the same model on any
    // AVX2 CPU, with or without AVX-512. One 384 x 32 panel of packed B = 48 KiB, Zen 5's L1;
    // measured as fast as 256 on the shapes of Kernel benchmarks.
    const KC: usize = 384;
    // 384 x 1024 floats of packed B = 1.5 MiB, in L2 / L3.
    const NC: usize = 1024;
    // 8 columns of 16 partial sums: 8 independent zmm chains for the two FMA pipes.
    const DOT_COLUMNS: usize = 8;

    #[inline(always)]
    unsafe fn tile(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
        // SAFETY: same contract as `Kernel::tile`, forwarded unchanged; the masks cover the tile.
        unsafe { tile_masked::<12, 2>(kc, alpha, a, b, beta, c, ldc, [ALL, ALL]) }
    }

    #[inline(always)]
    unsafe fn edge(
        mr: usize,
        nr: usize,
        kc: usize,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        beta: f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let masks = [lanes(nr), lanes(nr.saturating_sub(16))];
        // SAFETY: same contract as `Kernel::edge`: `mr <= 12` rows, and the masks leave out
        // every column past `nr`, so only the corner's elements of C are touched.
        unsafe {
            if nr <= 16 {
                edge_rows::<1>(mr, kc, alpha, a, b, beta, c, ldc, masks)
            } else {
                edge_rows::<2>(mr, kc, alpha, a, b, beta, c, ldc, masks)
            }
        }
    }

    #[inline(always)]
    unsafe fn transpose8(rows: &[*const f32; 8], dst: *mut f32, stride: usize) {
        // SAFETY: same contract; AVX-512F CPUs have AVX2, and the AVX-512 entry point enables it.
        unsafe { super::avx2::transpose_8x8(rows, dst, stride) }
    }
}

/// The mask of the first `cols` lanes of a 16-float half (all of them from 16 on). O(1).
fn lanes(cols: usize) -> __mmask16 {
    if cols >= 16 {
        ALL
    } else {
        ((1u32 << cols) - 1) as __mmask16
    }
}

/// [`tile_masked`] for `mr` (1 to 12) rows and `H` halves.
///
/// # Safety
/// As [`tile_masked`] with `R = mr`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn edge_rows<const H: usize>(
    mr: usize,
    kc: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    masks: [__mmask16; 2],
) {
    // SAFETY: forwarded contract; each arm computes `mr` rows.
    unsafe {
        match mr {
            1 => tile_masked::<1, H>(kc, alpha, a, b, beta, c, ldc, masks),
            2 => tile_masked::<2, H>(kc, alpha, a, b, beta, c, ldc, masks),
            3 => tile_masked::<3, H>(kc, alpha, a, b, beta, c, ldc, masks),
            4 => tile_masked::<4, H>(kc, alpha, a, b, beta, c, ldc, masks),
            5 => tile_masked::<5, H>(kc, alpha, a, b, beta, c, ldc, masks),
            6 => tile_masked::<6, H>(kc, alpha, a, b, beta, c, ldc, masks),
            7 => tile_masked::<7, H>(kc, alpha, a, b, beta, c, ldc, masks),
            8 => tile_masked::<8, H>(kc, alpha, a, b, beta, c, ldc, masks),
            9 => tile_masked::<9, H>(kc, alpha, a, b, beta, c, ldc, masks),
            10 => tile_masked::<10, H>(kc, alpha, a, b, beta, c, ldc, masks),
            11 => tile_masked::<11, H>(kc, alpha, a, b, beta, c, ldc, masks),
            _ => tile_masked::<12, H>(kc, alpha, a, b, beta, c, ldc, masks),
        }
    }
}

/// `C = alpha Ap Bp + beta C` on the first `R` rows of a packed 12-row A panel and the first
/// `16 H` columns of a packed 32-column B panel, each half `h` of a row of C limited to the
/// lanes of `masks[h]` (the other lanes of C are neither read nor written). When `beta == 0` C
/// is never read. Per step of the depth, `2 R H` broadcast FMAs on `R H` accumulators.
///
/// # Safety
/// As [`Kernel::tile`] with `MR = 12`, `NR = 32`, except that C needs only the masked lanes of
/// `R` rows; `R <= 12`, `H <= 2`; the CPU has AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_masked<const R: usize, const H: usize>(
    kc: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    masks: [__mmask16; 2],
) {
    debug_assert!(R <= 12 && H <= 2);
    let mut acc: [[__m512; H]; R] = [[_mm512_setzero_ps(); H]; R];
    // One rank-1 update of the R x 16 H accumulator tile per step of the depth.
    let step = |acc: &mut [[__m512; H]; R], p: usize| {
        let mut bv = [_mm512_setzero_ps(); H];
        for (h, v) in bv.iter_mut().enumerate() {
            // SAFETY: `p < kc` and `16 h + 16 <= 32`: inside the packed `kc x 32` panel.
            *v = unsafe { _mm512_loadu_ps(b.add(32 * p + 16 * h)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: `p < kc` and `i < R <= 12`: inside the packed `12 x kc` panel.
            let ai = _mm512_set1_ps(unsafe { *a.add(12 * p + i) });
            for (x, &bh) in row.iter_mut().zip(&bv) {
                *x = _mm512_fmadd_ps(ai, bh, *x);
            }
        }
    };
    // Unrolled by 4 to amortise the loop counter over 4 x 2 R H FMAs.
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
        for ((h, &v), &mask) in row.iter().enumerate().zip(&masks) {
            // SAFETY: row `i < R` of the caller's tile of C; its lanes `16 h ..` that `mask`
            // keeps are inside the tile (a masked load or store does not touch the others).
            unsafe {
                let dst = c.add(i * ldc + 16 * h);
                let old = || {
                    if mask == ALL {
                        _mm512_loadu_ps(dst)
                    } else {
                        _mm512_maskz_loadu_ps(mask, dst)
                    }
                };
                let out = if beta == 0.0 {
                    _mm512_mul_ps(va, v)
                } else if beta == 1.0 {
                    _mm512_add_ps(_mm512_mul_ps(va, v), old())
                } else {
                    _mm512_add_ps(_mm512_mul_ps(va, v), _mm512_mul_ps(vb, old()))
                };
                if mask == ALL {
                    _mm512_storeu_ps(dst, out);
                } else {
                    _mm512_mask_storeu_ps(dst, mask, out);
                }
            }
        }
    }
}
