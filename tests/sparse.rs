//! Sparse-input kernels and the sparse forward/backward passes against naive f64 loops and the
//! dense passes, on every kernel path this CPU has, on odd shapes and densities.

mod common;

use common::TestRng;
use ienk::gemm::{Epilogue, GemmError, KernelPath, MatMut, MatRef, gemm_on, scratch_len};
use ienk::mlp::{Layout, MlpError};
use ienk::sparse::{
    SparseRows, SplitBuffers, SplitRows, compressed_len, sparse_product_on, sparse_times_dense_on, transpose,
    transpose_on,
};

fn paths() -> Vec<KernelPath> {
    common::supported_paths("sparse kernels")
}

/// A `rows x cols` batch with about `density` of its entries non-zero.
fn batch(rng: &mut TestRng, rows: usize, cols: usize, density: f32) -> Vec<f32> {
    (0..rows * cols)
        .map(|_| {
            let keep = (rng.uniform() + 1.0) / 2.0 < density;
            if keep { rng.uniform() + 2.0 } else { 0.0 }
        })
        .collect()
}

/// `len` bytes, each non-zero (1 to 255) with probability about `density`.
fn random_bytes(rng: &mut TestRng, len: usize, density: f32) -> Vec<u8> {
    (0..len)
        .map(|_| {
            let keep = (rng.uniform() + 1.0) / 2.0 < density;
            if keep {
                1 + ((rng.uniform() + 1.0) * 127.0) as u8
            } else {
                0
            }
        })
        .collect()
}

struct Compressed {
    ptr: Vec<u32>,
    idx: Vec<u32>,
    vals: Vec<f32>,
}

impl Compressed {
    fn new(x: &[f32], cols: usize) -> Self {
        Compressed {
            ptr: vec![0; x.len() / cols.max(1) + 1],
            idx: vec![0; x.len()],
            vals: vec![0.0; x.len()],
        }
    }

    fn rows<'a>(&'a mut self, x: &[f32], cols: usize) -> SparseRows<'a> {
        SparseRows::from_dense(x, cols, &mut self.ptr, &mut self.idx, &mut self.vals).unwrap()
    }
}

fn assert_close(got: &[f32], want: &[f64], k: usize, what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        // Each entry is a sum of k products of numbers below 4 in magnitude, plus the start value.
        let tol = 1e-6 * (16.0 * k as f64 + 4.0);
        assert!((f64::from(g) - w).abs() <= tol, "{what} entry {i}: {g} vs {w}");
    }
}

#[test]
fn kernels_match_naive_loops_on_odd_shapes() {
    let mut rng = TestRng::new(1);
    for path in paths() {
        for &(rows, cols, n) in &[
            (0, 5, 3),
            (1, 1, 1),
            (7, 13, 17),
            (3, 31, 128),
            (11, 784, 8),
            (5, 9, 0),
        ] {
            for density in [0.0, 0.2, 1.0] {
                let x = batch(&mut rng, rows, cols, density);
                let mut c = Compressed::new(&x, cols);
                let sx = c.rows(&x, cols);
                assert_eq!(sx.nnz(), x.iter().filter(|v| **v != 0.0).count());
                let what = format!("{path} {rows}x{cols}x{n} density {density}");
                // out += X m.
                let m = rng.vec(cols * n);
                let start = rng.vec(rows * n);
                let mut out = start.clone();
                sparse_times_dense_on(path, &sx, &m, n, &mut out).unwrap();
                let want: Vec<f64> = (0..rows * n)
                    .map(|e| {
                        let (b, o) = (e / n, e % n);
                        f64::from(start[e])
                            + (0..cols)
                                .map(|j| f64::from(x[b * cols + j]) * f64::from(m[j * n + o]))
                                .sum::<f64>()
                    })
                    .collect();
                assert_close(&out, &want, cols, &format!("X m, {what}"));
                // out = X m, whatever out held.
                let mut fresh = rng.vec(rows * n);
                sparse_product_on(path, &sx, &m, n, &mut fresh).unwrap();
                let want_fresh: Vec<f64> = want.iter().zip(&start).map(|(w, &s)| w - f64::from(s)).collect();
                assert_close(&fresh, &want_fresh, cols, &format!("X m overwritten, {what}"));
                // X^T in compressed rows is the compression of the dense transpose.
                let (mut tp, mut ti, mut tv) =
                    (vec![0u32; cols + 1], vec![0u32; sx.nnz()], vec![0f32; sx.nnz()]);
                let xt = sx.transpose_into(&mut tp, &mut ti, &mut tv).unwrap();
                let mut dense_t = vec![0f32; rows * cols];
                transpose(&x, rows, cols, &mut dense_t).unwrap();
                let mut c2 = Compressed::new(&dense_t, rows.max(1));
                if rows > 0 {
                    let want_t = c2.rows(&dense_t, rows);
                    assert_eq!(
                        (xt.rows(), xt.cols(), xt.nnz()),
                        (want_t.rows(), want_t.cols(), want_t.nnz())
                    );
                    // Same products with any dense factor: X^T d.
                    let d = rng.vec(rows * n);
                    let (mut a, mut b) = (vec![0f32; cols * n], vec![0f32; cols * n]);
                    sparse_times_dense_on(path, &xt, &d, n, &mut a).unwrap();
                    sparse_times_dense_on(path, &want_t, &d, n, &mut b).unwrap();
                    assert_eq!(a, b, "X^T d, {what}");
                }
            }
        }
    }
}

#[test]
fn rows_compressed_from_bytes_hold_the_scaled_bytes() {
    let mut rng = TestRng::new(5);
    // Around the groups of 8 the compaction skips when all zero.
    let shapes = [
        (0, 5),
        (1, 0),
        (1, 1),
        (3, 7),
        (13, 784),
        (9, 17),
        (4, 31),
        (4, 32),
        (5, 33),
        (3, 40),
        (2, 63),
        (2, 64),
        (3, 97),
    ];
    for &(rows, cols) in &shapes {
        for density in [0.0, 0.2, 0.7, 1.0] {
            let bytes = random_bytes(&mut rng, rows * cols, density);
            let (mut ptr, mut idx, mut vals) = (
                vec![0u32; rows + 1],
                vec![0u32; rows * cols],
                vec![0f32; rows * cols],
            );
            let row = |b: usize| &bytes[b * cols..(b + 1) * cols];
            let scale = 1.0 / 255.0;
            let sx = SparseRows::from_bytes(rows, cols, row, scale, &mut ptr, &mut idx, &mut vals).unwrap();
            assert_eq!((sx.rows(), sx.cols()), (rows, cols));
            assert_eq!(sx.nnz(), bytes.iter().filter(|&&p| p != 0).count());
            // X e_o picks column o of X: every entry, scaled, in its place.
            let n = cols;
            let identity: Vec<f32> = (0..cols * n)
                .map(|e| f32::from(u8::from(e / n == e % n)))
                .collect();
            let mut out = vec![0f32; rows * n];
            sparse_times_dense_on(KernelPath::Portable, &sx, &identity, n, &mut out).unwrap();
            let want: Vec<f32> = bytes.iter().map(|&p| f32::from(p) * scale).collect();
            assert_eq!(out, want, "{rows}x{cols} density {density}");
        }
    }
    let bytes = [1u8, 0, 2, 0, 3];
    let (mut ptr, mut idx, mut vals) = (vec![0u32; 3], vec![0u32; 6], vec![0f32; 6]);
    let short = |b: usize| &bytes[b * 3..(b * 3 + 3).min(5)];
    assert!(matches!(
        SparseRows::from_bytes(2, 3, short, 1.0, &mut ptr, &mut idx, &mut vals),
        Err(MlpError::Length { .. })
    ));
    assert!(matches!(
        SparseRows::from_bytes(2, 3, short, 1.0, &mut ptr, &mut idx[..5], &mut vals),
        Err(MlpError::Length { .. })
    ));
}

#[test]
fn bad_buffers_and_paths_are_errors() {
    let x = [0.0, 1.0, 2.0, 0.0, 0.0, 3.0];
    let (mut ptr, mut idx, mut vals) = (vec![0u32; 3], vec![0u32; 6], vec![0f32; 6]);
    assert!(matches!(
        SparseRows::from_dense(&x, 3, &mut ptr[..2], &mut idx, &mut vals),
        Err(MlpError::Length { .. })
    ));
    assert!(matches!(
        SparseRows::from_dense(&x, 4, &mut ptr, &mut idx, &mut vals),
        Err(MlpError::Length { .. })
    ));
    assert!(matches!(
        SparseRows::from_dense(&x, 3, &mut ptr, &mut idx[..5], &mut vals),
        Err(MlpError::Length { .. })
    ));
    let sx = SparseRows::from_dense(&x, 3, &mut ptr, &mut idx, &mut vals).unwrap();
    assert_eq!((sx.rows(), sx.cols(), sx.nnz()), (2, 3, 3));
    let mut out = vec![0f32; 4];
    assert!(matches!(
        sparse_times_dense_on(KernelPath::Portable, &sx, &[0.0; 5], 2, &mut out),
        Err(MlpError::Length { .. })
    ));
    for path in KernelPath::ALL.into_iter().filter(|p| !p.is_supported()) {
        assert_eq!(
            sparse_times_dense_on(path, &sx, &[0.0; 6], 2, &mut out),
            Err(MlpError::Gemm(GemmError::Unsupported(path)))
        );
    }
}

#[test]
fn a_column_of_a_product_does_not_depend_on_its_position() {
    // The low-rank member phase puts a draw's projection in any column of a chunk's product,
    // and its threads cut the chunks differently: column j of X m must have the same bits
    // whether it lies in a 64-column block, an 8-column block or the last few columns.
    let mut rng = TestRng::new(41);
    let (rows, cols) = (5, 37);
    let x = batch(&mut rng, rows, cols, 0.4);
    let mut c = Compressed::new(&x, cols);
    let sx = c.rows(&x, cols);
    for path in paths() {
        for n in [1, 3, 8, 13, 64, 71, 130] {
            let m: Vec<f32> = (0..cols * n).map(|_| rng.uniform()).collect();
            for add in [false, true] {
                let start: Vec<f32> = (0..rows * n).map(|_| rng.uniform()).collect();
                let mut whole = start.clone();
                let run = |m: &[f32], n: usize, out: &mut [f32]| {
                    if add {
                        sparse_times_dense_on(path, &sx, m, n, out).unwrap();
                    } else {
                        sparse_product_on(path, &sx, m, n, out).unwrap();
                    }
                };
                run(&m, n, &mut whole);
                for j in 0..n {
                    let column: Vec<f32> = (0..cols).map(|i| m[i * n + j]).collect();
                    let mut alone: Vec<f32> = (0..rows).map(|b| start[b * n + j]).collect();
                    run(&column, 1, &mut alone);
                    for b in 0..rows {
                        assert_eq!(
                            whole[b * n + j].to_bits(),
                            alone[b].to_bits(),
                            "{path:?}, n {n}, add {add}, row {b}, column {j}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn rows_compressed_into_one_float_buffer_are_the_same_rows() {
    let mut rng = TestRng::new(43);
    for (rows, cols) in [(0, 5), (1, 1), (3, 7), (6, 784)] {
        let x = batch(&mut rng, rows, cols, 0.3);
        let mut c = Compressed::new(&x, cols);
        let want = c.rows(&x, cols);
        let len = compressed_len(rows, cols);
        let mut buf = vec![f32::NAN; len];
        let got = SparseRows::from_dense_in(&x, cols, &mut buf).unwrap();
        assert_eq!(
            (got.rows(), got.cols(), got.nnz()),
            (want.rows(), want.cols(), want.nnz())
        );
        // Times the identity, the rows give back the batch.
        let identity: Vec<f32> = (0..cols * cols)
            .map(|e| f32::from(u8::from(e % (cols + 1) == 0)))
            .collect();
        let mut back = vec![f32::NAN; rows * cols];
        sparse_product_on(KernelPath::Portable, &got, &identity, cols, &mut back).unwrap();
        assert_eq!(back, x, "{rows} x {cols}");
        if len > 0 {
            let mut short = vec![0f32; len - 1];
            assert!(matches!(
                SparseRows::from_dense_in(&x, cols, &mut short),
                Err(MlpError::Length { .. })
            ));
        }
    }
}

#[test]
fn transpose_matches_index_swap() {
    let mut rng = TestRng::new(2);
    for path in paths() {
        for &(r, c) in &[(0, 3), (1, 1), (7, 13), (128, 784), (9, 8), (16, 17), (24, 8)] {
            let src = rng.vec(r * c);
            let mut dst = vec![f32::NAN; r * c];
            transpose_on(path, &src, r, c, &mut dst).unwrap();
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(dst[j * r + i], src[i * c + j], "{path} {r}x{c}");
                }
            }
        }
    }
}

/// Owned room for a [`SplitRows`] of `rows x cols`.
struct SplitRoom {
    ptr: Vec<u32>,
    idx: Vec<u32>,
    vals: Vec<f32>,
    counts: Vec<u32>,
    dense_cols: Vec<u32>,
    masks: Vec<u32>,
    dense: Vec<f32>,
}

impl SplitRoom {
    fn new(rows: usize, cols: usize) -> Self {
        SplitRoom {
            ptr: vec![0; rows + 1],
            idx: vec![0; rows * cols],
            vals: vec![0.0; rows * cols],
            counts: vec![0; cols],
            dense_cols: vec![0; cols],
            masks: vec![0; cols.div_ceil(32)],
            dense: vec![0.0; SplitBuffers::dense_len(rows, cols)],
        }
    }

    fn split<'a>(&'a mut self, x: &[f32], cols: usize, share: f32) -> SplitRows<'a> {
        let rows = x.len() / cols.max(1);
        SplitRows::from_dense(x, cols, share * rows as f32, self.bufs()).unwrap()
    }

    fn bufs(&mut self) -> SplitBuffers<'_> {
        SplitBuffers {
            ptr: &mut self.ptr,
            idx: &mut self.idx,
            vals: &mut self.vals,
            counts: &mut self.counts,
            dense_cols: &mut self.dense_cols,
            masks: &mut self.masks,
            dense: &mut self.dense,
        }
    }
}

/// `rows x cols` with ones at `(q, cols[q])`: multiplying by it scatters columns to `cols`.
fn selector(picked: &[u32], cols: usize) -> Vec<f32> {
    let mut m = vec![0f32; picked.len() * cols];
    for (q, &j) in picked.iter().enumerate() {
        m[q * cols + j as usize] = 1.0;
    }
    m
}

/// The batch a split stands for: its sparse part times the identity, plus its dense part
/// scattered back to its columns (each entry one product by 1: exact).
fn reconstruct(sx: &SplitRows<'_>, rows: usize, cols: usize) -> Vec<f32> {
    let identity = selector(&(0..cols as u32).collect::<Vec<_>>(), cols);
    let mut back = vec![0f32; rows * cols];
    sparse_times_dense_on(KernelPath::Portable, sx.sparse(), &identity, cols, &mut back).unwrap();
    let k = sx.dense_cols().len();
    if rows > 0 && k > 0 {
        let scatter = selector(sx.dense_cols(), cols);
        let mut scratch = vec![0f32; scratch_len(rows, cols, k)];
        let c = MatMut::new(&mut back, rows, cols, cols);
        let s = MatRef::new(&scatter, k, cols, cols);
        gemm_on(
            KernelPath::Portable,
            1.0,
            sx.dense(),
            s,
            1.0,
            c,
            Epilogue::None,
            &mut scratch,
        )
        .unwrap();
    }
    back
}

#[test]
fn splits_from_bytes_equal_the_split_of_their_values() {
    let mut rng = TestRng::new(12);
    // Around the AVX2 path's blocks: 32 columns tested at once and packed by groups of 8, 1024
    // counted per pass, counts flushed every 255 rows. A share of 1 keeps every column sparse:
    // the split is then a plain compression.
    let shapes = [
        (0, 32),
        (1, 1),
        (3, 31),
        (7, 33),
        (4, 40),
        (2, 63),
        (300, 64),
        (600, 97),
        (20, 784),
        (5, 1100),
    ];
    for path in paths() {
        for &(rows, cols) in &shapes {
            for (density, share) in [0.1, 0.5, 1.0].into_iter().flat_map(|d| [(d, 0.3), (d, 1.0)]) {
                let bytes = random_bytes(&mut rng, rows * cols, density);
                let scale = 1.0 / 255.0;
                let values: Vec<f32> = bytes.iter().map(|&p| f32::from(p) * scale).collect();
                let above = share * rows as f32;
                let mut want_room = SplitRoom::new(rows, cols);
                let want = want_room.split(&values, cols, share);
                let mut room = SplitRoom::new(rows, cols);
                let bufs = room.bufs();
                let row = |b: usize| &bytes[b * cols..(b + 1) * cols];
                let got = SplitRows::from_bytes_on(path, rows, cols, row, scale, above, bufs).unwrap();
                let what = format!("{path:?} {rows}x{cols} density {density} share {share}");
                assert_eq!(got.dense_cols(), want.dense_cols(), "{what}");
                assert_eq!(got.sparse().nnz(), want.sparse().nnz(), "{what}");
                assert_eq!(reconstruct(&got, rows, cols), values, "{what}");
            }
        }
    }
}

#[test]
fn a_split_batch_is_its_dense_plus_its_sparse_part() {
    let mut rng = TestRng::new(11);
    for &(rows, cols) in &[(0, 4), (1, 1), (5, 7), (33, 13), (40, 97)] {
        for density in [0.0, 0.2, 0.6, 1.0] {
            for share in [0.0, 0.3, 0.5, 1.0] {
                let x = batch(&mut rng, rows, cols, density);
                let mut room = SplitRoom::new(rows, cols);
                let sx = room.split(&x, cols, share);
                let what = format!("{rows}x{cols} density {density} share {share}");
                // The dense columns are those non-zero in more than `share` of the rows.
                let want_cols: Vec<u32> = (0..cols)
                    .filter(|&j| {
                        (0..rows).filter(|&b| x[b * cols + j] != 0.0).count() as f32 > share * rows as f32
                    })
                    .map(|j| j as u32)
                    .collect();
                assert_eq!(sx.dense_cols(), want_cols, "{what}");
                let in_dense = |e: usize| want_cols.contains(&((e % cols) as u32));
                let sparse_nnz = (0..rows * cols).filter(|&e| x[e] != 0.0 && !in_dense(e)).count();
                assert_eq!(sx.sparse().nnz(), sparse_nnz, "{what}");
                assert_eq!(reconstruct(&sx, rows, cols), x, "{what}");
            }
        }
    }
    // Too little room is an error, not a panic.
    let x = vec![1f32; 6];
    let mut room = SplitRoom::new(2, 3);
    room.dense.truncate(SplitBuffers::dense_len(2, 3) - 1);
    let bufs = room.bufs();
    assert!(matches!(
        SplitRows::from_dense(&x, 3, 1.0, bufs),
        Err(MlpError::Length { .. })
    ));
}

#[test]
fn sparse_passes_equal_the_dense_passes() {
    let mut rng = TestRng::new(3);
    for layout in [
        Layout {
            inputs: 13,
            hidden: 7,
            outputs: 3,
        },
        Layout::mnist(128),
    ] {
        // All inputs sparse, some dense, every non-zero input dense.
        for (batch_size, share) in [(1, 1.0), (5, 0.3), (33, 0.0), (33, 0.15), (70, 1.0)] {
            let (i, h, o) = (layout.inputs, layout.hidden, layout.outputs);
            let theta = rng.vec(layout.num_params());
            let x = batch(&mut rng, batch_size, i, 0.2);
            let mut room = SplitRoom::new(batch_size, i);
            let sx = room.split(&x, i, share);
            let mut s = vec![0f32; layout.gemm_scratch_len(batch_size)];
            let (mut hd, mut zd) = (vec![0f32; batch_size * h], vec![0f32; batch_size * o]);
            layout.forward(&theta, &x, &mut hd, &mut zd, &mut s).unwrap();
            let (mut hs, mut zs) = (vec![0f32; batch_size * h], vec![0f32; batch_size * o]);
            let mut w1t = vec![0f32; i * h];
            transpose(&theta[..h * i], h, i, &mut w1t).unwrap();
            // The sparse pass reads layer 1 from w1t only: theta's W1 is poisoned, and so is
            // the panel it gathers into.
            let mut poisoned = theta.clone();
            poisoned[..h * i].fill(f32::NAN);
            let mut panel = vec![f32::NAN; i * h];
            layout
                .forward_sparse(&poisoned, &w1t, &sx, &mut hs, &mut zs, &mut s, &mut panel)
                .unwrap();
            let tol = |v: f32| 1e-5 * (1.0 + v.abs()) * (i as f32).sqrt();
            for (a, b) in hs.iter().zip(&hd).chain(zs.iter().zip(&zd)) {
                assert!((a - b).abs() <= tol(*b), "forward {a} vs {b}");
            }
            let dl = rng.vec(batch_size * o);
            let mut dh = vec![0f32; batch_size * h];
            let (mut gd, mut gs) = (
                vec![0f32; layout.num_params()],
                vec![f32::NAN; layout.num_params()],
            );
            layout
                .backward(&theta, &x, &hd, &dl, &mut dh, &mut gd, &mut s)
                .unwrap();
            let nnz = sx.sparse().nnz();
            let (mut tp, mut ti, mut tv) = (vec![0u32; i + 1], vec![0u32; nnz], vec![0f32; nnz]);
            let xt = sx.sparse().transpose_into(&mut tp, &mut ti, &mut tv).unwrap();
            let mut dw1t = vec![f32::NAN; i * h];
            panel.fill(f32::NAN);
            layout
                .backward_sparse(
                    &theta, &sx, &xt, &hd, &dl, &mut dh, &mut gs, &mut dw1t, &mut s, &mut panel,
                )
                .unwrap();
            // dW1 arrives transposed; the rest in theta's layout (gs's W1 part is not written).
            transpose(&dw1t, i, h, &mut gs[..h * i]).unwrap();
            for (k, (a, b)) in gs.iter().zip(&gd).enumerate() {
                assert!(
                    (a - b).abs() <= tol(*b),
                    "gradient {k}: {a} vs {b} (share {share})"
                );
            }
        }
    }
}
