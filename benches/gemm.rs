//! Criterion benches of the GEMM kernels on the model's shapes (X W^T, W stored [out, in]):
//! ienk on every kernel path this CPU supports, matrixmultiply, and a naive loop on the shapes
//! where it finishes in reasonable time. Throughput is reported in flop/s (2 m n k per call).
//! `IENK_KERNEL=avx2 cargo bench --bench gemm` keeps one path.

mod support;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use support::{Operands, SHAPES, bench_paths};

fn gemm_shapes(c: &mut Criterion) {
    let paths = bench_paths();
    for shape in SHAPES {
        let mut group = c.benchmark_group(format!("gemm/{}", shape.label()));
        group.throughput(Throughput::Elements(shape.flops() as u64));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let mut ops = Operands::new(shape);
        for &path in &paths {
            group.bench_function(BenchmarkId::new("ienk", path.name()), |b| {
                b.iter(|| ops.ienk(path))
            });
        }
        group.bench_function("matrixmultiply", |b| b.iter(|| ops.matrixmultiply()));
        if shape.flops() < 2e8 {
            group.bench_function("naive", |b| b.iter(|| ops.naive()));
        }
        group.finish();
    }
}

criterion_group!(benches, gemm_shapes);
criterion_main!(benches);
