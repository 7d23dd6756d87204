//! The sparse-times-dense kernel in AVX2 + FMA intrinsics: a 64-column block of the output row
//! stays in 8 ymm accumulators while every non-zero of the input row adds its row of the dense
//! factor (one broadcast and 8 FMAs with the loads folded in), so the output is loaded and stored
//! once per row instead of once per non-zero.

use core::arch::x86_64::{
    __m256, _mm256_cmpgt_epi32, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_maskstore_ps,
    _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps,
};

use super::SparseRows;

/// How many non-zeros ahead the kernel prefetches the dense factor's row. Those rows come from
/// L2 in a data-dependent order the hardware prefetcher cannot follow; 4 to 12 ahead took 15%
/// off the forward product on MNIST-like batches, 8 was best on both products (Zen 3).
const AHEAD: usize = 8;

/// `out += X m` with `ADD`, else `out = X m` (`m`: `cols x n`, `out`: `rows x n`).
///
/// # Safety
/// The CPU has AVX2 and FMA; `m.len() == x.cols() n` and `out.len() == x.rows() n`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn sparse_times_dense<const ADD: bool>(
    x: &SparseRows<'_>,
    m: &[f32],
    n: usize,
    out: &mut [f32],
) {
    for (b, out_row) in out.chunks_exact_mut(n.max(1)).enumerate().take(x.rows()) {
        let (cols, vals) = x.row(b);
        let mut c0 = 0;
        while c0 + 64 <= n {
            // SAFETY: c0 + 64 <= n; every column index is below x.cols() (SparseRows' invariant),
            // so row j of m spans j n .. j n + n inside m; the CPU has AVX2 and FMA.
            unsafe { block::<8, ADD>(cols, vals, m, n, c0, out_row) };
            c0 += 64;
        }
        while c0 + 8 <= n {
            // SAFETY: as above with c0 + 8 <= n.
            unsafe { block::<1, ADD>(cols, vals, m, n, c0, out_row) };
            c0 += 8;
        }
        if c0 < n {
            // SAFETY: c0 < n and the n - c0 < 8 remaining columns are the mask's lanes; as
            // above for the rows of m.
            unsafe { tail::<ADD>(cols, vals, m, n, c0, out_row) };
        }
    }
}

/// The last `n - c0` (1 to 7) columns of one output row, as [`block`] computes a column (the
/// same FMA chain over the row's non-zeros), with masked loads and stores: a column's value
/// does not depend on where it lies in the output.
///
/// # Safety
/// The CPU has AVX2 and FMA; `0 < n - c0 < 8`, `n == out_row.len()`; every `cols[q] < m.len()
/// / n`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tail<const ADD: bool>(
    cols: &[u32],
    vals: &[f32],
    m: &[f32],
    n: usize,
    c0: usize,
    out_row: &mut [f32],
) {
    let lanes = (n - c0) as i32;
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(lanes),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let dst = out_row[c0..].as_mut_ptr();
    let mut acc = if ADD {
        // SAFETY: the mask's lanes are the n - c0 floats of out_row from dst; masked-off lanes
        // are not read.
        unsafe { _mm256_maskload_ps(dst, mask) }
    } else {
        _mm256_setzero_ps()
    };
    for (&j, &v) in cols.iter().zip(vals) {
        // SAFETY: row j of m spans j n .. j n + n (caller's contract), and the mask's lanes are
        // its columns c0 .. n; masked-off lanes are not read.
        let row = unsafe { _mm256_maskload_ps(m.as_ptr().add(j as usize * n + c0), mask) };
        acc = _mm256_fmadd_ps(_mm256_set1_ps(v), row, acc);
    }
    // SAFETY: as for the load of dst; masked-off lanes are not written.
    unsafe { _mm256_maskstore_ps(dst, mask, acc) };
}

/// Columns `c0 .. c0 + 8 W` of one output row: `out_row += sum_q vals[q] m[cols[q]]` with
/// `ADD`, else `out_row = ...` (the accumulators start at zero instead of the output).
///
/// # Safety
/// The CPU has AVX2 and FMA; `c0 + 8 W <= n == out_row.len()`; every `cols[q] < m.len() / n`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const W: usize, const ADD: bool>(
    cols: &[u32],
    vals: &[f32],
    m: &[f32],
    n: usize,
    c0: usize,
    out_row: &mut [f32],
) {
    let dst = out_row[c0..c0 + 8 * W].as_mut_ptr();
    let mut acc: [__m256; W] = core::array::from_fn(|w| {
        if ADD {
            // SAFETY: dst addresses 8 W floats of out_row (the slice above is that long).
            unsafe { _mm256_loadu_ps(dst.add(8 * w)) }
        } else {
            _mm256_setzero_ps()
        }
    });
    for (q, (&j, &v)) in cols.iter().zip(vals).enumerate() {
        if let Some(&ahead) = cols.get(q + AHEAD) {
            let start = ahead as usize * n + c0;
            crate::prefetch::bytes(m.get(start..start + 8 * W).unwrap_or_default());
        }
        let vv = _mm256_set1_ps(v);
        // SAFETY: row j of m starts at j n, and c0 + 8 W <= n keeps the W loads inside it
        // (caller's contract: j < m.len() / n).
        let row = unsafe { m.as_ptr().add(j as usize * n + c0) };
        for (w, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above, 8 floats at row + 8 w lie inside row j of m.
            *a = _mm256_fmadd_ps(vv, unsafe { _mm256_loadu_ps(row.add(8 * w)) }, *a);
        }
    }
    for (w, a) in acc.into_iter().enumerate() {
        // SAFETY: as for the loads of dst above.
        unsafe { _mm256_storeu_ps(dst.add(8 * w), a) };
    }
}
