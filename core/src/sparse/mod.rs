//! Sparse input rows: an MNIST image is about 80% zeros, so the input layer's products
//! `X W1^T` (forward) and `X^T dA` (the gradient of W1, transposed) cost a fifth of their dense
//! flops when they skip the zeros. Rows are kept in compressed form ([`SparseRows`], built into
//! caller buffers; [`SparseRows::transpose_into`] gives `X^T` in the same form), and
//! [`sparse_times_dense`] adds, for each non-zero `x[b][j]`, `x[b][j]` times row j of a dense
//! matrix: four rows per pass over the output row in portable code that the compiler vectorises,
//! or, on CPUs with AVX2 + FMA (chosen like the GEMM kernels), 64 output columns held in
//! registers across all of a row's non-zeros (module `avx2`). But the centre of a digit is non-zero
//! in most images, and there a dense GEMM, which reuses each loaded weight across rows, is
//! cheaper per entry than the sparse kernel per non-zero: [`SplitRows`] holds a batch's often
//! non-zero columns dense and the rest compressed, each part for its own kernel, built straight
//! from an image's bytes, 32 at a time with AVX2 (module `bytes_avx2`).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod bytes_avx2;
mod split;

pub use split::{SplitBuffers, SplitRows};

use crate::gemm::{GemmError, KernelPath, active_kernel};
use crate::mlp::{MlpError, check_len};
use crate::prefetch;

/// Rows of a batch in compressed sparse row form: row `b`'s non-zeros are
/// `idx[ptr[b]..ptr[b+1]]` (their columns, increasing) and the same range of `vals`. Only the
/// constructors here build one, so every column index is below `cols` and `ptr` is
/// non-decreasing within `idx` (the AVX2 kernel relies on it).
#[derive(Clone, Copy, Debug)]
pub struct SparseRows<'a> {
    cols: usize,
    ptr: &'a [u32],
    idx: &'a [u32],
    vals: &'a [f32],
}

impl<'a> SparseRows<'a> {
    /// Compresses the dense batch `x` (`rows x cols`) into `ptr` (at least `rows + 1` entries),
    /// `idx` and `vals` (each at least `x.len()`, enough for any batch). O(x).
    pub fn from_dense(
        x: &[f32],
        cols: usize,
        ptr: &'a mut [u32],
        idx: &'a mut [u32],
        vals: &'a mut [f32],
    ) -> Result<SparseRows<'a>, MlpError> {
        let rows = x.len() / cols.max(1);
        check_len("input batch", x.len(), rows * cols)?;
        let row = |b: usize| &x[b * cols..(b + 1) * cols];
        compress(
            rows,
            cols,
            row,
            |r, i, v| compact_row(r, |e| e, i, v),
            ptr,
            idx,
            vals,
        )
    }

    /// [`SparseRows::from_dense`] into the one f32 buffer `buf` of at least [`compressed_len`]
    /// floats: the row pointers and column indices are stored as `u32` in the bits of its first
    /// `rows (cols + 1) + 1` floats, the values after them. For callers whose scratch is all
    /// f32. O(x).
    pub fn from_dense_in(x: &[f32], cols: usize, buf: &'a mut [f32]) -> Result<SparseRows<'a>, MlpError> {
        // from_dense checks that x holds whole rows.
        let rows = x.len() / cols.max(1);
        at_least("compressed batch", buf.len(), compressed_len(rows, cols))?;
        let (ints, vals) = buf.split_at_mut(rows + 1 + rows * cols);
        let (ptr, idx) = as_u32(ints).split_at_mut(rows + 1);
        SparseRows::from_dense(x, cols, ptr, idx, vals)
    }

    /// Compresses `rows` rows of `cols` bytes, row `b` being `row(b)`, each byte `p` standing
    /// for the value `f32::from(p) * scale` (MNIST's pixels with `scale = 1/255`: the values
    /// [`crate::mlp::pixels_to_unit`] gives, without the dense copy). `ptr` holds at least
    /// `rows + 1` entries, `idx` and `vals` at least `rows cols`; a row of another length is an
    /// error. Prefetches the rows a few ahead, which may lie anywhere in memory. O(rows cols).
    /// (The gradient passes use [`SplitRows::from_bytes`], which is vectorised; with
    /// `dense_above >= rows` its sparse part is this compression.)
    pub fn from_bytes<'r>(
        rows: usize,
        cols: usize,
        row: impl Fn(usize) -> &'r [u8],
        scale: f32,
        ptr: &'a mut [u32],
        idx: &'a mut [u32],
        vals: &'a mut [f32],
    ) -> Result<SparseRows<'a>, MlpError> {
        let compact = |r: &[u8], i: &mut [u32], v: &mut [f32]| compact_row(r, |p| f32::from(p) * scale, i, v);
        compress(rows, cols, row, compact, ptr, idx, vals)
    }

    /// Writes the transpose `X^T` (`cols x rows`) in compressed rows into `ptr` (at least
    /// `cols + 1` entries), `idx` and `vals` (at least `nnz` each), by a counting sort on the
    /// columns. O(nnz + cols).
    pub fn transpose_into<'b>(
        &self,
        ptr: &'b mut [u32],
        idx: &'b mut [u32],
        vals: &'b mut [f32],
    ) -> Result<SparseRows<'b>, MlpError> {
        let (rows, cols, nnz) = (self.rows(), self.cols, self.nnz());
        at_least("sparse row pointers", ptr.len(), cols + 1)?;
        at_least("sparse column indices", idx.len(), nnz)?;
        at_least("sparse values", vals.len(), nnz)?;
        let ptr = &mut ptr[..cols + 1];
        ptr.fill(0);
        for &j in self.idx {
            ptr[j as usize + 1] += 1;
        }
        for j in 0..cols {
            ptr[j + 1] += ptr[j];
        }
        // ptr[j] is now the next free slot of column j; after the fill it is the end of column j,
        // which the shift below turns back into the start.
        for b in 0..rows {
            let (cs, vs) = self.row(b);
            for (&j, &v) in cs.iter().zip(vs) {
                let slot = ptr[j as usize] as usize;
                idx[slot] = b as u32;
                vals[slot] = v;
                ptr[j as usize] += 1;
            }
        }
        for j in (1..=cols).rev() {
            ptr[j] = ptr[j - 1];
        }
        ptr[0] = 0;
        Ok(SparseRows {
            cols: rows,
            ptr,
            idx: &idx[..nnz],
            vals: &vals[..nnz],
        })
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.ptr.len() - 1
    }

    /// Columns (inputs) of each row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Stored non-zeros.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }

    /// Row `b`'s columns and values.
    fn row(&self, b: usize) -> (&'a [u32], &'a [f32]) {
        let (s, e) = (self.ptr[b] as usize, self.ptr[b + 1] as usize);
        (&self.idx[s..e], &self.vals[s..e])
    }
}

/// An entry type rows can be compressed from.
trait Entry: Copy {
    /// Whether every entry of a group of 8 is zero (as a value: -0.0 counts as zero).
    fn all_zero(group: &[Self; 8]) -> bool;
    /// Whether this entry is non-zero.
    fn is_nonzero(self) -> bool;
}

impl Entry for f32 {
    fn all_zero(group: &[f32; 8]) -> bool {
        group.iter().fold(0u32, |m, v| m | v.to_bits()) & 0x7fff_ffff == 0
    }

    fn is_nonzero(self) -> bool {
        self != 0.0
    }
}

impl Entry for u8 {
    fn all_zero(group: &[u8; 8]) -> bool {
        u64::from_ne_bytes(*group) == 0
    }

    fn is_nonzero(self) -> bool {
        self != 0
    }
}

/// Compresses `rows` rows of `cols` entries (row `b` is `row(b)`) into `ptr`, `idx` and
/// `vals`, prefetching the rows a few ahead. `compact(row, idx, vals)` writes one row's
/// non-zeros (columns increasing) to the front of `idx` and `vals`, each `cols` long, and
/// returns how many. O(rows cols).
fn compress<'a, 'r, T: 'r>(
    rows: usize,
    cols: usize,
    row: impl Fn(usize) -> &'r [T],
    compact: impl Fn(&[T], &mut [u32], &mut [f32]) -> usize,
    ptr: &'a mut [u32],
    idx: &'a mut [u32],
    vals: &'a mut [f32],
) -> Result<SparseRows<'a>, MlpError> {
    at_least("sparse row pointers", ptr.len(), rows + 1)?;
    at_least("sparse column indices", idx.len(), rows * cols)?;
    at_least("sparse values", vals.len(), rows * cols)?;
    let mut nnz = 0usize;
    ptr[0] = 0;
    for b in 0..rows {
        if b + prefetch::ROWS_AHEAD < rows {
            prefetch::bytes(row(b + prefetch::ROWS_AHEAD));
        }
        let entries = row(b);
        check_len("row", entries.len(), cols)?;
        nnz += compact(entries, &mut idx[nnz..nnz + cols], &mut vals[nnz..nnz + cols]);
        ptr[b + 1] = nnz as u32;
    }
    Ok(SparseRows {
        cols,
        ptr: &ptr[..rows + 1],
        idx: &idx[..nnz],
        vals: &vals[..nnz],
    })
}

/// The portable compaction of one row for [`compress`]: entry `e` stands for `value(e)`.
/// Groups of 8 zeros are skipped whole; the rest is branch-free. O(entries.len()).
fn compact_row<T: Entry>(
    entries: &[T],
    value: impl Fn(T) -> f32,
    idx: &mut [u32],
    vals: &mut [f32],
) -> usize {
    let mut kept = 0;
    let mut compact = |first: usize, group: &[T]| {
        // Branch-free: every entry is written, only non-zeros advance (a branch on the
        // pixel pattern would be mispredicted about one time in five).
        for (j, &e) in (first..).zip(group) {
            idx[kept] = j as u32;
            vals[kept] = value(e);
            kept += usize::from(e.is_nonzero());
        }
    };
    let mut groups = entries.chunks_exact(8);
    for (g, group) in groups.by_ref().enumerate() {
        // Groups of 8 zeros (most of an image's border) are skipped whole.
        if !<&[T; 8]>::try_from(group).is_ok_and(T::all_zero) {
            compact(8 * g, group);
        }
    }
    compact(entries.len() - groups.remainder().len(), groups.remainder());
    kept
}

/// Floats [`SparseRows::from_dense_in`] needs for any batch of `rows x cols`: `rows + 1` row
/// pointers, then `rows cols` column indices and as many values. O(1).
pub fn compressed_len(rows: usize, cols: usize) -> usize {
    rows + 1 + 2 * rows * cols
}

/// The floats of `buf` seen as `u32`s with the same bits: index storage in f32 scratch.
fn as_u32(buf: &mut [f32]) -> &mut [u32] {
    // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is a valid
    // value of both; the view takes over buf's exclusive borrow for its whole life, so the
    // floats are not reachable meanwhile.
    unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u32>(), buf.len()) }
}

/// An error unless `found >= needed`.
fn at_least(what: &'static str, found: usize, needed: usize) -> Result<(), MlpError> {
    if found < needed {
        return Err(MlpError::Length {
            what,
            expected: needed,
            found,
        });
    }
    Ok(())
}

/// `out += X m` for sparse `X` (`rows x cols`) and dense row-major `m` (`cols x n`); `out` is
/// `rows x n`. O(nnz n) flops.
pub fn sparse_times_dense(x: &SparseRows<'_>, m: &[f32], n: usize, out: &mut [f32]) -> Result<(), MlpError> {
    sparse_times_dense_on(active_kernel(), x, m, n, out)
}

/// `out = X m`, as [`sparse_times_dense`] without reading `out` first (rows of `X` without
/// non-zeros give zero rows). O(nnz n) flops plus one write of `out`.
pub fn sparse_product(x: &SparseRows<'_>, m: &[f32], n: usize, out: &mut [f32]) -> Result<(), MlpError> {
    sparse_product_on(active_kernel(), x, m, n, out)
}

/// [`sparse_times_dense`] on a chosen instruction set (the AVX-512 path uses the AVX2 + FMA
/// build); `GemmError::Unsupported` when the CPU lacks it. For tests and benches.
pub fn sparse_times_dense_on(
    path: KernelPath,
    x: &SparseRows<'_>,
    m: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), MlpError> {
    product_on::<true>(path, x, m, n, out)
}

/// [`sparse_product`] on a chosen instruction set, as [`sparse_times_dense_on`].
pub fn sparse_product_on(
    path: KernelPath,
    x: &SparseRows<'_>,
    m: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), MlpError> {
    product_on::<false>(path, x, m, n, out)
}

/// `out += X m` with `ADD`, else `out = X m`, on `path`.
fn product_on<const ADD: bool>(
    path: KernelPath,
    x: &SparseRows<'_>,
    m: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), MlpError> {
    check_path(path)?;
    check_len("dense factor", m.len(), x.cols * n)?;
    check_len("product", out.len(), x.rows() * n)?;
    #[cfg(target_arch = "x86_64")]
    if path.runs_avx2_build() {
        // SAFETY: the CPU has AVX2 and FMA (runs_avx2_build checks both);
        // the lengths of m and out were checked above.
        unsafe { avx2::sparse_times_dense::<ADD>(x, m, n, out) };
        return Ok(());
    }
    if !ADD {
        out.fill(0.0);
    }
    spmm_body(x, m, n, out);
    Ok(())
}

fn check_path(path: KernelPath) -> Result<(), MlpError> {
    if path.is_supported() {
        Ok(())
    } else {
        Err(MlpError::Gemm(GemmError::Unsupported(path)))
    }
}

#[inline(always)]
fn spmm_body(x: &SparseRows<'_>, m: &[f32], n: usize, out: &mut [f32]) {
    let m_row = |j: u32| &m[j as usize * n..(j as usize + 1) * n];
    for (b, out_row) in out.chunks_exact_mut(n.max(1)).enumerate().take(x.rows()) {
        let (cols, vals) = x.row(b);
        // Four non-zeros per pass over the output row: one load and store of it per four rows
        // of m instead of per row.
        let (c4, v4) = (cols.chunks_exact(4), vals.chunks_exact(4));
        let (c_rest, v_rest) = (c4.remainder(), v4.remainder());
        for (c, v) in c4.zip(v4) {
            let (m0, m1, m2, m3) = (m_row(c[0]), m_row(c[1]), m_row(c[2]), m_row(c[3]));
            let rows = out_row.iter_mut().zip(m0).zip(m1).zip(m2).zip(m3);
            for ((((out, &a), &b), &c), &d) in rows {
                *out += v[0] * a + v[1] * b + v[2] * c + v[3] * d;
            }
        }
        for (&j, &v) in c_rest.iter().zip(v_rest) {
            out_row.iter_mut().zip(m_row(j)).for_each(|(o, &w)| *o += v * w);
        }
    }
}

/// Writes the transpose of `src` (`rows x cols`, row-major) to `dst` (`cols x rows`), by 8 x 8
/// blocks so that both sides stay in cache (in registers on the AVX2 path). O(rows cols).
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) -> Result<(), MlpError> {
    transpose_on(active_kernel(), src, rows, cols, dst)
}

/// [`transpose`] on a chosen instruction set; `GemmError::Unsupported` when the CPU lacks it.
pub fn transpose_on(
    path: KernelPath,
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
) -> Result<(), MlpError> {
    check_path(path)?;
    check_len("transpose source", src.len(), rows * cols)?;
    check_len("transpose destination", dst.len(), rows * cols)?;
    let (r8, c8) = register_blocks(path, src, rows, cols, dst);
    // What the register blocks did not cover (everything on the portable path): the columns
    // past c8 of the rows they covered, then every column of the other rows.
    let mut copy = |r_range: core::ops::Range<usize>, c_range: core::ops::Range<usize>| {
        for r0 in r_range.clone().step_by(8) {
            for c0 in c_range.clone().step_by(8) {
                let c1 = (c0 + 8).min(c_range.end);
                for r in r0..(r0 + 8).min(r_range.end) {
                    // Row r's columns c0..c1 down column r of dst, without an index check each.
                    let from = &src[r * cols + c0..r * cols + c1];
                    for (to, &v) in dst[c0 * rows + r..].iter_mut().step_by(rows).zip(from) {
                        *to = v;
                    }
                }
            }
        }
    };
    copy(0..r8, c8..cols);
    copy(r8..rows, 0..cols);
    Ok(())
}

/// Transposes the whole 8 x 8 blocks in registers when `path` allows it (x86_64 with AVX2);
/// returns how many rows and columns they covered.
fn register_blocks(
    path: KernelPath,
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if path.runs_avx2_build() {
        let (r8, c8) = (rows - rows % 8, cols - cols % 8);
        // SAFETY: the CPU has AVX2 (runs_avx2_build checks it); the caller checked both lengths.
        unsafe { transpose_blocks_avx2(src, rows, cols, r8, c8, dst) };
        return (r8, c8);
    }
    let _ = (path, src, rows, cols, dst);
    (0, 0)
}

/// The 8 x 8 blocks of rows `0..r8` and columns `0..c8` (multiples of 8) of the transpose, each
/// transposed in registers.
///
/// # Safety
/// The CPU has AVX2; `src` and `dst` hold `rows x cols` floats, `r8 <= rows`, `c8 <= cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_blocks_avx2(
    src: &[f32],
    rows: usize,
    cols: usize,
    r8: usize,
    c8: usize,
    dst: &mut [f32],
) {
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            let block: [*const f32; 8] = core::array::from_fn(|q| src[(r0 + q) * cols + c0..].as_ptr());
            // SAFETY: source rows r0..r0+8 each have 8 floats from column c0 (c0 + 8 <= cols), and
            // destination rows c0..c0+8 each have 8 floats from column r0 (r0 + 8 <= rows) at a
            // stride of `rows`, all inside the slices; the CPU has AVX2 (caller's contract).
            unsafe { crate::gemm::avx2::transpose_8x8(&block, dst[c0 * rows + r0..].as_mut_ptr(), rows) };
        }
    }
}
