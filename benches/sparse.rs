//! Criterion benches of the sparse input-layer products on a batch shaped like MNIST's (500 rows
//! of 784 inputs, a fifth of them non-zero, in runs like pen strokes):
//! - `forward/PATH`: `X W1^T` from compressed rows (`500 x 784` times `784 x 128`);
//! - `backward/PATH`: `X^T dA`, the gradient of W1 transposed (`784 x 500` times `500 x 128`);
//! - `transpose`: building `X^T` from `X`;
//! - `dense/PATH`: the same forward product as a dense GEMM, for the ratio;
//! - `split/PATH`: splitting it from its bytes into the columns non-zero in more than a fifth
//!   of the rows, held dense, and the rest compressed (`SplitRows::from_bytes_on`), as the
//!   gradient optimizers do.
//!
//! Throughput is in non-zeros. `cargo bench --bench sparse`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ienk::gemm::{Epilogue, KernelPath, MatMut, MatRef, gemm_on, scratch_len};
use ienk::sparse::{SparseRows, SplitBuffers, SplitRows, sparse_times_dense_on};

const ROWS: usize = 500;
const INPUTS: usize = 784;
const HIDDEN: usize = 128;

/// A deterministic batch with MNIST's density: in each row, runs of 3 to 10 non-zero pixels
/// start at random places until a fifth of the row is covered.
fn batch() -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut x = vec![0f32; ROWS * INPUTS];
    for row in x.chunks_exact_mut(INPUTS) {
        while row.iter().filter(|v| **v != 0.0).count() < INPUTS / 5 {
            let start = (next() % INPUTS as u64) as usize;
            let len = 3 + (next() % 8) as usize;
            for v in row.iter_mut().skip(start).take(len) {
                *v = (1 + next() % 255) as f32 / 255.0;
            }
        }
    }
    x
}

fn products(c: &mut Criterion) {
    let x = batch();
    let (mut ptr, mut idx, mut vals) = (vec![0u32; ROWS + 1], vec![0u32; x.len()], vec![0f32; x.len()]);
    let sx = SparseRows::from_dense(&x, INPUTS, &mut ptr, &mut idx, &mut vals).expect("sizes");
    let (mut tptr, mut tidx, mut tvals) = (vec![0u32; INPUTS + 1], vec![0u32; x.len()], vec![0f32; x.len()]);
    let w1t: Vec<f32> = (0..INPUTS * HIDDEN)
        .map(|i| ((i * 7919) % 1000) as f32 / 1e4 - 0.05)
        .collect();
    let da: Vec<f32> = (0..ROWS * HIDDEN)
        .map(|i| ((i * 104_729) % 1000) as f32 / 1e4 - 0.05)
        .collect();
    let mut out = vec![0f32; ROWS * HIDDEN];
    let mut dw1t = vec![0f32; INPUTS * HIDDEN];

    let mut group = c.benchmark_group("sparse");
    group
        .throughput(Throughput::Elements(sx.nnz() as u64))
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let supported: Vec<KernelPath> = KernelPath::ALL.into_iter().filter(|p| p.is_supported()).collect();
    for &path in &supported {
        group.bench_function(BenchmarkId::new("forward", path.name()), |b| {
            b.iter(|| {
                sparse_times_dense_on(path, &sx, &w1t, HIDDEN, &mut out).expect("supported path");
                black_box(&out);
            })
        });
    }
    let xt = sx
        .transpose_into(&mut tptr, &mut tidx, &mut tvals)
        .expect("sizes");
    for &path in &supported {
        group.bench_function(BenchmarkId::new("backward", path.name()), |b| {
            b.iter(|| {
                dw1t.fill(0.0);
                sparse_times_dense_on(path, &xt, &da, HIDDEN, &mut dw1t).expect("supported path");
                black_box(&dw1t);
            })
        });
    }
    let (mut tptr, mut tidx, mut tvals) = (vec![0u32; INPUTS + 1], vec![0u32; x.len()], vec![0f32; x.len()]);
    group.bench_function("transpose", |b| {
        b.iter(|| {
            let xt = sx
                .transpose_into(&mut tptr, &mut tidx, &mut tvals)
                .expect("sizes");
            black_box(xt.nnz());
        })
    });
    let w1: Vec<f32> = (0..HIDDEN * INPUTS)
        .map(|i| w1t[(i % INPUTS) * HIDDEN + i / INPUTS])
        .collect();
    let mut scratch = vec![0f32; scratch_len(ROWS, HIDDEN, INPUTS)];
    for &path in &supported {
        group.bench_function(BenchmarkId::new("dense", path.name()), |b| {
            b.iter(|| {
                let a = MatRef::new(&x, ROWS, INPUTS, INPUTS);
                let w = MatRef::new(&w1, HIDDEN, INPUTS, INPUTS).t();
                let c = MatMut::new(&mut out, ROWS, HIDDEN, HIDDEN);
                gemm_on(path, 1.0, a, w, 0.0, c, Epilogue::None, &mut scratch).expect("supported path");
                black_box(&out);
            })
        });
    }
    let bytes: Vec<u8> = x.iter().map(|&v| (v * 255.0).round() as u8).collect();
    let row = |b: usize| &bytes[b * INPUTS..(b + 1) * INPUTS];
    let (mut counts, mut cols, mut masks) = (
        vec![0u32; INPUTS],
        vec![0u32; INPUTS],
        vec![0u32; INPUTS.div_ceil(32)],
    );
    let mut dense = vec![0f32; SplitBuffers::dense_len(ROWS, INPUTS)];
    for &path in &supported {
        group.bench_function(BenchmarkId::new("split", path.name()), |b| {
            b.iter(|| {
                let bufs = SplitBuffers {
                    ptr: &mut ptr,
                    idx: &mut idx,
                    vals: &mut vals,
                    counts: &mut counts,
                    dense_cols: &mut cols,
                    masks: &mut masks,
                    dense: &mut dense,
                };
                let above = ROWS as f32 / 5.0;
                let sx = SplitRows::from_bytes_on(path, ROWS, INPUTS, row, 1.0 / 255.0, above, bufs)
                    .expect("sizes");
                black_box(sx.sparse().nnz());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, products);
criterion_main!(benches);
