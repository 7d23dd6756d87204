//! A batch split by columns: the columns non-zero in many of its rows (the centre of an MNIST
//! digit: 195 of 784 pixels are non-zero in over 40% of images, and hold 72% of the non-zeros)
//! are held as a dense matrix for the GEMM kernels, which reuse each loaded weight across rows;
//! the other columns stay in compressed rows for the sparse kernels, which touch only their
//! non-zeros. A sparse non-zero costs about 2.5 dense entries here (one row of `W1^T` from L2
//! per non-zero against the GEMM's packed, cached panels), so a column pays its way as dense
//! from a share of about 0.3 to 0.4 of non-zero rows.

use super::{Entry, SparseRows, at_least, check_path};
use crate::gemm::{KernelPath, MatRef, active_kernel};
use crate::mlp::{MlpError, check_len};
use crate::prefetch;

/// Padding past the dense columns in each row of the dense part: the AVX2 split stores 8
/// values at a time.
const ROW_PAD: usize = 8;

/// Caller-provided room for a [`SplitRows`] of up to `rows x cols` entries.
pub struct SplitBuffers<'a> {
    /// Row pointers of the sparse part: at least `rows + 1`.
    pub ptr: &'a mut [u32],
    /// Column indices of the sparse part: at least `rows cols`.
    pub idx: &'a mut [u32],
    /// Values of the sparse part: at least `rows cols`.
    pub vals: &'a mut [f32],
    /// Each column's count of non-zero rows: at least `cols`.
    pub counts: &'a mut [u32],
    /// The dense columns: at least `cols`.
    pub dense_cols: &'a mut [u32],
    /// Which columns are dense, a bit each: at least `cols.div_ceil(32)`.
    pub masks: &'a mut [u32],
    /// The dense part: at least `rows (cols + 8)`.
    pub dense: &'a mut [f32],
}

impl SplitBuffers<'_> {
    /// Entries of [`SplitBuffers::dense`] needed for `rows x cols`.
    pub fn dense_len(rows: usize, cols: usize) -> usize {
        rows * (cols + ROW_PAD)
    }
}

/// A batch (`rows x cols`) as the sum of a dense part over a few columns and a sparse part
/// over the others.
#[derive(Clone, Copy, Debug)]
pub struct SplitRows<'a> {
    sparse: SparseRows<'a>,
    dense_cols: &'a [u32],
    /// `rows x (dense_cols.len() + ROW_PAD)`, row-major; the padding is unused.
    dense: &'a [f32],
}

impl<'a> SplitRows<'a> {
    /// Splits `rows` rows of `cols` bytes (row `b` is `row(b)`, byte `p` standing for
    /// `f32::from(p) * scale`): the columns non-zero in more than `dense_above` rows go to the
    /// dense part (none when `dense_above` is at least `rows`; every column with a non-zero
    /// when it is negative), the other columns' non-zeros to compressed rows. Two passes over
    /// the bytes (one counting, one splitting), 32 at a time with AVX2. A row of another
    /// length, or buffers too short, are errors.
    pub fn from_bytes<'r>(
        rows: usize,
        cols: usize,
        row: impl Fn(usize) -> &'r [u8],
        scale: f32,
        dense_above: f32,
        bufs: SplitBuffers<'a>,
    ) -> Result<SplitRows<'a>, MlpError> {
        Self::from_bytes_on(active_kernel(), rows, cols, row, scale, dense_above, bufs)
    }

    /// [`SplitRows::from_bytes`] on a chosen instruction set (the AVX-512 path uses the AVX2
    /// build); `GemmError::Unsupported` when the CPU lacks it. For tests and benches.
    #[allow(clippy::too_many_arguments)]
    pub fn from_bytes_on<'r>(
        path: KernelPath,
        rows: usize,
        cols: usize,
        row: impl Fn(usize) -> &'r [u8],
        scale: f32,
        dense_above: f32,
        bufs: SplitBuffers<'a>,
    ) -> Result<SplitRows<'a>, MlpError> {
        check_path(path)?;
        for b in 0..rows {
            check_len("row", row(b).len(), cols)?;
        }
        check_room(rows, cols, &bufs)?;
        #[cfg(target_arch = "x86_64")]
        if path.runs_avx2_build() {
            let counts = &mut bufs.counts[..cols];
            counts.fill(0);
            // SAFETY: the CPU has AVX2 (runs_avx2_build checks it); every row is `cols` long
            // (checked above), as long as `counts`.
            unsafe { super::bytes_avx2::count_nonzeros(rows, &row, counts) };
            let split_row = |r: &[u8], masks: &[u32], i: &mut [u32], v: &mut [f32], d: &mut [f32]| {
                // SAFETY: the CPU has AVX2; split hands `masks` for `cols` columns, `i` and `v`
                // of `cols` entries and `d` of the dense columns plus ROW_PAD (check_room).
                unsafe { super::bytes_avx2::split_row(r, masks, scale, i, v, d) }
            };
            return split(rows, cols, &row, dense_above, split_row, bufs);
        }
        split_portable(rows, cols, &row, |p| f32::from(p) * scale, dense_above, bufs)
    }

    /// As [`SplitRows::from_bytes`] for the dense batch `x` (`rows x cols`, f32), on the
    /// portable path.
    pub fn from_dense(
        x: &[f32],
        cols: usize,
        dense_above: f32,
        bufs: SplitBuffers<'a>,
    ) -> Result<SplitRows<'a>, MlpError> {
        let rows = x.len() / cols.max(1);
        check_len("input batch", x.len(), rows * cols)?;
        check_room(rows, cols, &bufs)?;
        let row = |b: usize| &x[b * cols..(b + 1) * cols];
        split_portable(rows, cols, &row, |e| e, dense_above, bufs)
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
        MatRef::new(self.dense, self.rows(), k, k + ROW_PAD)
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

/// An error unless `bufs` has room for `rows x cols`.
fn check_room(rows: usize, cols: usize, bufs: &SplitBuffers<'_>) -> Result<(), MlpError> {
    at_least("sparse row pointers", bufs.ptr.len(), rows + 1)?;
    at_least("sparse column indices", bufs.idx.len(), rows * cols)?;
    at_least("sparse values", bufs.vals.len(), rows * cols)?;
    at_least("column counts", bufs.counts.len(), cols)?;
    at_least("dense columns", bufs.dense_cols.len(), cols)?;
    at_least("dense column masks", bufs.masks.len(), cols.div_ceil(32))?;
    at_least(
        "dense part",
        bufs.dense.len(),
        SplitBuffers::dense_len(rows, cols),
    )
}

/// The portable split: counts each column's non-zero rows, then [`split`] with [`split_row`],
/// entry `e` standing for `value(e)`. The room and the rows' lengths were checked.
fn split_portable<'a, 'r, T: Entry + 'r>(
    rows: usize,
    cols: usize,
    row: &impl Fn(usize) -> &'r [T],
    value: impl Fn(T) -> f32,
    dense_above: f32,
    bufs: SplitBuffers<'a>,
) -> Result<SplitRows<'a>, MlpError> {
    let counts = &mut bufs.counts[..cols];
    counts.fill(0);
    for b in 0..rows {
        counts
            .iter_mut()
            .zip(row(b))
            .for_each(|(c, &e)| *c += u32::from(e.is_nonzero()));
    }
    let split_one = |r: &[T], masks: &[u32], i: &mut [u32], v: &mut [f32], d: &mut [f32]| {
        split_row(r, &value, masks, i, v, d)
    };
    split(rows, cols, row, dense_above, split_one, bufs)
}

/// The portable split of one row for [`split`]: entry `e` stands for `value(e)`; dense
/// columns (bits of `masks`) go in order to `dense_row`, the others' non-zeros to `idx` and
/// `vals`, whose count it returns. O(row.len()).
fn split_row<T: Entry>(
    row: &[T],
    value: impl Fn(T) -> f32,
    masks: &[u32],
    idx: &mut [u32],
    vals: &mut [f32],
    dense_row: &mut [f32],
) -> usize {
    let (mut kept, mut placed) = (0, 0);
    for (j, &e) in row.iter().enumerate() {
        if masks[j / 32] >> (j % 32) & 1 == 1 {
            dense_row[placed] = value(e);
            placed += 1;
        } else {
            // Branch-free, as in the compression.
            idx[kept] = j as u32;
            vals[kept] = value(e);
            kept += usize::from(e.is_nonzero());
        }
    }
    kept
}

/// Picks the dense columns from `bufs.counts` (more than `dense_above` non-zero rows), then
/// splits each row with `split_row(row, masks, idx, vals, dense_row)` (which returns the
/// sparse entries it wrote), prefetching rows a few ahead. The room was checked.
fn split<'a, 'r, T: 'r>(
    rows: usize,
    cols: usize,
    row: &impl Fn(usize) -> &'r [T],
    dense_above: f32,
    split_row: impl Fn(&[T], &[u32], &mut [u32], &mut [f32], &mut [f32]) -> usize,
    bufs: SplitBuffers<'a>,
) -> Result<SplitRows<'a>, MlpError> {
    let SplitBuffers {
        ptr,
        idx,
        vals,
        counts,
        dense_cols,
        masks,
        dense,
    } = bufs;
    let masks = &mut masks[..cols.div_ceil(32)];
    masks.fill(0);
    let mut k = 0;
    for (j, &count) in counts[..cols].iter().enumerate() {
        if count as f32 > dense_above {
            dense_cols[k] = j as u32;
            masks[j / 32] |= 1 << (j % 32);
            k += 1;
        }
    }
    let ld = k + ROW_PAD;
    let (mut nnz, masks) = (0, &*masks);
    ptr[0] = 0;
    for b in 0..rows {
        if b + prefetch::ROWS_AHEAD < rows {
            prefetch::bytes(row(b + prefetch::ROWS_AHEAD));
        }
        let dense_row = &mut dense[b * ld..(b + 1) * ld];
        nnz += split_row(
            row(b),
            masks,
            &mut idx[nnz..nnz + cols],
            &mut vals[nnz..nnz + cols],
            dense_row,
        );
        ptr[b + 1] = nnz as u32;
    }
    Ok(SplitRows {
        sparse: SparseRows {
            cols,
            ptr: &ptr[..rows + 1],
            idx: &idx[..nnz],
            vals: &vals[..nnz],
        },
        dense_cols: &dense_cols[..k],
        dense: &dense[..rows * ld],
    })
}
