//! Criterion benches of the normal sampler, per sample (throughput in elements): one 4096-sample
//! perturbation block drawn by
//! - `ienk/lanes/PATH`: [`Normal::fill_lanes`] on each instruction set this CPU supports (what
//!   the ensembles use);
//! - `ienk/scalar`: [`Normal::fill`] on xoshiro256++;
//! - `rand_distr`: rand_distr's ziggurat `StandardNormal` on xoshiro256++, the reference.
//!
//! `cargo bench --bench normal`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ienk::gemm::KernelPath;
use ienk::normal::{Lanes, Normal};
use rand_core::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

const SAMPLES: usize = 4096;

fn samplers(c: &mut Criterion) {
    let mut group = c.benchmark_group("normal");
    group
        .throughput(Throughput::Elements(SAMPLES as u64))
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let normal = Normal::new();
    let mut out = vec![0f32; SAMPLES];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut lanes = Lanes::from_rng(&mut rng);
    for path in KernelPath::ALL.into_iter().filter(|p| p.is_supported()) {
        group.bench_function(BenchmarkId::new("ienk/lanes", path.name()), |b| {
            b.iter(|| {
                normal
                    .fill_lanes_on(path, &mut lanes, &mut rng, &mut out, 1.0)
                    .expect("supported path");
                black_box(&out);
            })
        });
    }
    group.bench_function("ienk/scalar", |b| {
        b.iter(|| {
            normal.fill(&mut rng, &mut out, 1.0);
            black_box(&out);
        })
    });
    group.bench_function("rand_distr", |b| {
        b.iter(|| {
            out.iter_mut().for_each(|v| *v = StandardNormal.sample(&mut rng));
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, samplers);
criterion_main!(benches);
