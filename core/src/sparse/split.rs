//! A batch split by columns: the columns non-zero in many of its rows (the centre of an MNIST
//! digit: 195 of 784 pixels are non-zero in over 40% of images, and hold 72% of the non-zeros)
//! are held as a dense matrix for the GEMM kernels, which reuse each loaded weight across rows;
//! the other columns stay in compressed rows for the sparse kernels, which touch only their
//! non-zeros. A sparse non-zero costs about 2.5 dense entries here (one row of `W1^T` from L2
//! per non-zero against the GEMM's packed, cached panels), so a column pays its way as dense
//! from a share of about 0.3 to 0.4 of non-zero rows.

use super::{SparseRows, at_least};
use crate::gemm::MatRef;
use crate::mlp::MlpError;

/// Caller-provided room for a [`SplitRows`] of up to `rows x cols` entries.
pub struct SplitBuffers<'a> {
    /// Row pointers of the sparse part: at least `rows + 1`.
    pub ptr: &'a mut [u32],
    /// Column indices of the sparse part: at least `rows cols`.
    pub idx: &'a mut [u32],
    /// Values of the sparse part: at least `rows cols`.
    pub vals: &'a mut [f32],
    /// Per-column counts, then slots: at least `cols`.
    pub slots: &'a mut [u32],
    /// The dense columns: at least `cols`.
    pub dense_cols: &'a mut [u32],
    /// The dense part: at least `rows (cols + 1)`.
    pub dense: &'a mut [f32],
}

/// A batch (`rows x cols`) as the sum of a dense part over a few columns and a sparse part
/// over the others.
#[derive(Clone, Copy, Debug)]
pub struct SplitRows<'a> {
    sparse: SparseRows<'a>,
    dense_cols: &'a [u32],
    /// `rows x (dense_cols.len() + 1)`, row-major; the last column of each row is unused.
    dense: &'a [f32],
}

impl<'a> SplitRows<'a> {
    /// Compresses `rows` rows of `cols` bytes (row `b` is `row(b)`, byte `p` standing for
    /// `f32::from(p) * scale`, as [`SparseRows::from_bytes`]) and splits them: the columns
    /// non-zero in more than `dense_above` rows go to the dense part (none when `dense_above`
    /// is at least `rows`; every column with a non-zero when it is negative). O(rows cols) for
    /// the compression, O(nnz + rows dense columns) for the split.
    pub fn from_bytes<'r>(
        rows: usize,
        cols: usize,
        row: impl Fn(usize) -> &'r [u8],
        scale: f32,
        dense_above: f32,
        bufs: SplitBuffers<'a>,
    ) -> Result<SplitRows<'a>, MlpError> {
        let nnz = SparseRows::from_bytes(rows, cols, row, scale, bufs.ptr, bufs.idx, bufs.vals)?.nnz();
        split(rows, cols, nnz, dense_above, bufs)
    }

    /// As [`SplitRows::from_bytes`] for the dense batch `x` (`rows x cols`, f32).
    pub fn from_dense(
        x: &[f32],
        cols: usize,
        dense_above: f32,
        bufs: SplitBuffers<'a>,
    ) -> Result<SplitRows<'a>, MlpError> {
        let rows = x.len() / cols.max(1);
        let nnz = SparseRows::from_dense(x, cols, bufs.ptr, bufs.idx, bufs.vals)?.nnz();
        split(rows, cols, nnz, dense_above, bufs)
    }

    /// The sparse part: the batch's non-zeros outside the dense columns.
    pub fn sparse(&self) -> &SparseRows<'a> {
        &self.sparse
    }

    /// The dense columns, increasing.
    pub fn dense_cols(&self) -> &'a [u32] {
        self.dense_cols
    }

    /// The dense part: `rows x dense_cols().len()`, column `q` holding the batch's column
    /// `dense_cols()[q]`.
    pub fn dense(&self) -> MatRef<'a> {
        let k = self.dense_cols.len();
        MatRef::new(self.dense, self.rows(), k, k + 1)
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.sparse.rows()
    }

    /// Columns of the batch.
    pub fn cols(&self) -> usize {
        self.sparse.cols()
    }
}

/// Splits the `nnz` compressed entries of `rows x cols` in `bufs.ptr`, `bufs.idx` and
/// `bufs.vals` (as compressed there) by the number of rows in which each column is non-zero.
fn split<'a>(
    rows: usize,
    cols: usize,
    nnz: usize,
    dense_above: f32,
    bufs: SplitBuffers<'a>,
) -> Result<SplitRows<'a>, MlpError> {
    let SplitBuffers {
        ptr,
        idx,
        vals,
        slots,
        dense_cols,
        dense,
    } = bufs;
    at_least("column slots", slots.len(), cols)?;
    at_least("dense columns", dense_cols.len(), cols)?;
    let slots = &mut slots[..cols];
    if dense_above >= rows as f32 {
        // No column can be non-zero in more rows than there are: all sparse, as compressed.
        return Ok(all_sparse(rows, cols, nnz, ptr, idx, vals, dense_cols));
    }
    slots.fill(0);
    for &j in &idx[..nnz] {
        slots[j as usize] += 1;
    }
    // Each column's slot: its place among the dense columns, or `k` (one past them) for the
    // sparse ones, whose values the split below drops into the unused last column.
    let mut k = 0;
    for (j, slot) in slots.iter_mut().enumerate() {
        if *slot as f32 > dense_above {
            dense_cols[k] = j as u32;
            *slot = k as u32;
            k += 1;
        } else {
            *slot = u32::MAX;
        }
    }
    if k == 0 {
        return Ok(all_sparse(rows, cols, nnz, ptr, idx, vals, dense_cols));
    }
    slots
        .iter_mut()
        .filter(|s| **s == u32::MAX)
        .for_each(|s| *s = k as u32);
    let ld = k + 1;
    at_least("dense part", dense.len(), rows * ld)?;
    let dense = &mut dense[..rows * ld];
    dense.fill(0.0);
    // In place, branch-free: every entry is written to both parts, and only the sparse ones
    // advance the compressed rows (write position <= read position, so nothing unread is lost).
    let mut kept = 0;
    let mut start = 0;
    for b in 0..rows {
        let end = ptr[b + 1] as usize;
        let row = &mut dense[b * ld..(b + 1) * ld];
        for e in start..end {
            let (j, v) = (idx[e], vals[e]);
            let slot = slots[j as usize] as usize;
            row[slot] = v;
            idx[kept] = j;
            vals[kept] = v;
            kept += usize::from(slot == k);
        }
        start = end;
        ptr[b + 1] = kept as u32;
    }
    Ok(SplitRows {
        sparse: SparseRows {
            cols,
            ptr: &ptr[..rows + 1],
            idx: &idx[..kept],
            vals: &vals[..kept],
        },
        dense_cols: &dense_cols[..k],
        dense,
    })
}

/// The split with no dense column: the compressed rows as they are.
fn all_sparse<'a>(
    rows: usize,
    cols: usize,
    nnz: usize,
    ptr: &'a [u32],
    idx: &'a [u32],
    vals: &'a [f32],
    dense_cols: &'a [u32],
) -> SplitRows<'a> {
    SplitRows {
        sparse: SparseRows {
            cols,
            ptr: &ptr[..rows + 1],
            idx: &idx[..nnz],
            vals: &vals[..nnz],
        },
        dense_cols: &dense_cols[..0],
        dense: &[],
    }
}
