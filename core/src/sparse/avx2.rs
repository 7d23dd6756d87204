//! The sparse-times-dense kernel in AVX2 + FMA intrinsics: a 64-column block of the output row
//! stays in 8 ymm accumulators while every non-zero of the input row adds its row of the dense
//! factor (one broadcast and 8 FMAs with the loads folded in), so the output is loaded and stored
//! once per row instead of once per non-zero.

use core::arch::x86_64::{
    __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
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
        for (o, out) in out_row.iter_mut().enumerate().skip(c0) {
            *out = if ADD { *out } else { 0.0 }
                + cols
                    .iter()
                    .zip(vals)
                    .map(|(&j, &v)| v * m[j as usize * n + o])
                    .sum::<f32>();
        }
    }
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
