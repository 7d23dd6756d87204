//! Criterion benches of EKI's update on the 784-128-10 network at batch 500 (`dim` = 5000
//! outputs per member):
//! - `eki_coupling/{naive,blocked}/M`: the coupling matrix `D_kj = <G_k - Gbar, g_j>` in f64,
//!   by the plain double loop of dot products the update used before (the reference, kept
//!   here) and by `ienk::ensemble::coupling` (blocked, on the `auto` kernel path), one thread;
//! - `eki_update/T/M`: the whole update (`Eki::update`: D, the mixing matrix, the mean, the
//!   centring and the `M x M` by `M x P` product) on `ienk-cli`'s pool of T threads.
//!
//! Outputs and innovations are synthetic (their values do not change the work).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ienk::ensemble::coupling::{MemberOutputs, coupling_rows, coupling_workspace_len, output_mean};
use ienk::ensemble::eki::Eki;
use ienk::gemm::active_kernel;
use ienk::mlp::Layout;
use ienk::normal::Normal;
use ienk_cli::pool::Pool;

const LAYOUT: Layout = Layout::mnist(128);
const BATCH: usize = 500;

fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// The update's D before the blocked kernel: one f64 dot product per entry, centring each
/// term again for every j.
fn naive_coupling(outputs: &[f32], innovations: &[f32], gbar: &[f64], d: &mut [f64]) {
    let dim = gbar.len();
    let m = outputs.len() / dim;
    for k in 0..m {
        let gk = &outputs[k * dim..(k + 1) * dim];
        for j in 0..m {
            let gj = &innovations[j * dim..(j + 1) * dim];
            d[k * m + j] = gk
                .iter()
                .zip(gbar)
                .zip(gj)
                .map(|((&z, &zb), &g)| (f64::from(z) - zb) * f64::from(g))
                .sum();
        }
    }
}

fn coupling(c: &mut Criterion) {
    let mut group = c.benchmark_group("eki_coupling");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let dim = BATCH * LAYOUT.outputs;
    for m in [100, 1000] {
        let outputs = fill(m * dim, 1);
        let innovations = fill(m * dim, 2);
        let members = MemberOutputs {
            outputs: &outputs,
            innovations: &innovations,
            members: m,
        };
        let mut gbar = vec![0f64; dim];
        output_mean(&members, &mut gbar).unwrap();
        let mut d = vec![0f64; m * m];
        group.bench_function(BenchmarkId::new("naive", m), |b| {
            b.iter(|| naive_coupling(&outputs, &innovations, &gbar, black_box(&mut d)));
        });
        let mut centred = vec![0f64; coupling_workspace_len(dim)];
        let path = active_kernel();
        group.bench_function(BenchmarkId::new("blocked", m), |b| {
            b.iter(|| {
                coupling_rows(path, &members, &gbar, 0..m, &mut centred, black_box(&mut d)).unwrap();
            });
        });
    }
    group.finish();
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("eki_update");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for m in [100, 1000] {
        let eki = Eki {
            layout: LAYOUT,
            members: m,
            h0: 1.0,
            eps: 1e-8,
            inflation: 0.0,
            std: LAYOUT.glorot_std(),
        };
        let mut ensemble = vec![0f32; eki.ensemble_len()];
        let theta = fill(LAYOUT.num_params(), 3);
        let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand_core::SeedableRng>::seed_from_u64(4);
        eki.scatter(&Normal::new(), &mut rng, &theta, &mut ensemble);
        let logits = fill(m * BATCH * LAYOUT.outputs, 5);
        let labels: Vec<u8> = (0..BATCH).map(|i| (i % 10) as u8).collect();
        for threads in [1, 2].into_iter().filter(|&t| t <= cores) {
            let pool = Pool::new(threads).unwrap();
            let (l32, l64) = eki.update_workspace_len(BATCH, threads);
            let (mut w32, mut w64) = (vec![0f32; l32], vec![0f64; l64]);
            // Each update moves the ensemble a little; the work does not depend on where it is.
            group.bench_function(BenchmarkId::new(threads.to_string(), m), |b| {
                b.iter(|| {
                    eki.update(&pool, &mut ensemble, &logits, &labels, &mut w32, &mut w64)
                        .unwrap()
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, coupling, update);
criterion_main!(benches);
