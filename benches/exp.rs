//! Criterion bench of `ienk::exp::exp_into` (bit for bit `libm::exp`) on a batch's softmax
//! arguments: 5,000 values in [-20, 0] (500 examples x 10 logits, shifted by their maximum),
//! on each kernel path this CPU has (`portable` is `libm::exp` value by value).
//! `cargo bench --bench exp`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ienk::exp::exp_into_on;
use ienk::gemm::KernelPath;

fn exps(c: &mut Criterion) {
    let xs: Vec<f64> = (0..5000)
        .map(|i| -20.0 * ((i * 7919) % 5000) as f64 / 5000.0)
        .collect();
    let mut out = vec![0f64; xs.len()];
    let mut group = c.benchmark_group("exp");
    group
        .throughput(Throughput::Elements(xs.len() as u64))
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for path in KernelPath::ALL.into_iter().filter(|p| p.is_supported()) {
        group.bench_function(BenchmarkId::new("exp_into", path.name()), |b| {
            b.iter(|| {
                exp_into_on(path, black_box(&xs), &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, exps);
criterion_main!(benches);
