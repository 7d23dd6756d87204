//! Criterion benches of the ensemble hot paths on the 784-128-10 network:
//! - `particles/dense/M`: M full networks forwarded on a batch of 500, 10 members per stacked
//!   product (what EKI runs every step);
//! - `particles/low_rank/M`: M rank-1 antithetic members forwarded on a batch of 500 (the mean's
//!   X W^T once, then each member's correction), coefficients and factor draws included;
//!   `particles/low_rank_2/M` the same at rank 2 (the rank-r path);
//! - `ienk_step/{rng,forward,update}/M/B`: one resampled IEnK step's parts: drawing the
//!   perturbations, the members' forward passes (from stored perturbations) and the update (from
//!   stored perturbations), all on every input column;
//! - `ienk_step/step/M/B`: the whole step as `ienk-cli train` runs it, on one thread
//!   (`Resampled::step`: the mean's forward pass, the members restricted to the input columns
//!   the batch uses; full rank, perturbations regenerated for the update).
//!
//! Full rank for M <= 100; rank 1 for M = 1000 (500 antithetic draws), where `forward` includes
//! drawing the (small) factors, which it leaves for the update, `update` starts from a fresh
//! copy of them and draws nothing, and `rng` times the factors alone. The batches are digit-like: each row non-zero in
//! a 13 x 11 blob (143 of 784 pixels, an MNIST digit has about 150) whose place moves by up to 3
//! pixels from row to row, so a batch of 500 uses 323 columns.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use ienk::ensemble::particles::{Stacked, dense_scratch_len, forward_dense};
use ienk::ensemble::perturb::{BLOCK, Perturbations};
use ienk::ensemble::resampled::{Form, MeanView, Resampled, Stabiliser, innovation};
use ienk::ensemble::step::StepBuffers;
use ienk::mlp::Layout;
use ienk::normal::Normal;
use ienk::workers::OneThread;

const LAYOUT: Layout = Layout::mnist(128);

fn fill(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0)
        .collect()
}

fn resampled(members: usize, rank: usize) -> Resampled {
    let [s1, s2] = LAYOUT.glorot_std();
    let perturb = Perturbations {
        layout: LAYOUT,
        std: [s1, s2],
        rank,
        antithetic: true,
        seed: 1,
    };
    Resampled {
        perturb,
        members,
        form: Form::Logit,
        lr: 0.001,
        momentum: 0.0,
        normalize: false,
    }
}

/// `batch` rows of 28 x 28 pixels in (0, 1], non-zero in a 13 x 11 blob near the centre whose
/// place moves from row to row.
fn digit_like(batch: usize) -> Vec<f32> {
    let values = fill(batch * 784, 1);
    let mut x = vec![0f32; batch * 784];
    for (r, row) in x.chunks_exact_mut(784).enumerate() {
        let (ci, cj) = (11 + (r * 3) % 7, 11 + (r * 5) % 7);
        for (k, v) in row.iter_mut().enumerate() {
            let (i, j) = (k / 28, k % 28);
            if i.abs_diff(ci) < 7 && j.abs_diff(cj) < 6 {
                *v = 0.001 + values[r * 784 + k];
            }
        }
    }
    x
}

/// The mean network's state on a batch.
struct Mean {
    theta: Vec<f32>,
    x: Vec<f32>,
    y: Vec<u8>,
    pre: Vec<f32>,
    logits: Vec<f32>,
    probs: Vec<f32>,
    g: Vec<f32>,
}

impl Mean {
    fn new(batch: usize) -> Mean {
        let mut theta = fill(LAYOUT.num_params(), 3);
        theta.iter_mut().for_each(|t| *t = (*t - 0.5) * 0.1);
        let (x, y) = (
            digit_like(batch),
            (0..batch).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
        );
        let mut m = Mean {
            pre: vec![0.0; batch * 128],
            logits: vec![0.0; batch * 10],
            probs: vec![0.0; batch * 10],
            g: vec![0.0; batch * 10],
            theta,
            x,
            y,
        };
        let mut hidden = vec![0f32; batch * 128];
        let mut s = vec![0f32; LAYOUT.gemm_scratch_len(batch)];
        LAYOUT
            .forward_keep_pre(&m.theta, &m.x, &mut m.pre, &mut hidden, &mut m.logits, &mut s)
            .unwrap();
        innovation(Form::Logit, &m.logits, 10, &m.y, &mut m.probs, &mut m.g).unwrap();
        m
    }

    fn view(&self) -> MeanView<'_> {
        MeanView {
            pre: &self.pre,
            logits: &self.logits,
            probs: &self.probs,
            innovation: &self.g,
        }
    }
}

fn particles(c: &mut Criterion) {
    let mut group = c.benchmark_group("particles");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let batch = 500;
    let chunk = 10;
    let theta = fill(LAYOUT.num_params(), 5);
    let mut w1 = Vec::new();
    for _ in 0..chunk {
        w1.extend_from_slice(&theta[..128 * 784]);
    }
    let (b1, w2, b2) = (
        vec![0.01f32; chunk * 128],
        fill(chunk * 1280, 2),
        vec![0f32; chunk * 10],
    );
    let x = fill(batch * 784, 1);
    let mut hidden = vec![0f32; batch * chunk * 128];
    let mut logits = vec![0f32; chunk * batch * 10];
    let mut scratch = vec![0f32; dense_scratch_len(&LAYOUT, batch, chunk)];
    for members in [10, 100, 1000] {
        group.bench_function(BenchmarkId::new("dense", members), |b| {
            b.iter(|| {
                for _ in 0..members / chunk {
                    let w = Stacked {
                        w1: &w1,
                        b1: &b1,
                        w2: &w2,
                        b2: &b2,
                    };
                    forward_dense(&LAYOUT, chunk, &x, w, &mut hidden, &mut logits, &mut scratch).unwrap();
                }
                black_box(&logits);
            })
        });
    }
    let mean = Mean::new(batch);
    let normal = Normal::new();
    for (rank, members) in [1, 2]
        .into_iter()
        .flat_map(|rank| [10, 100, 1000].map(|m| (rank, m)))
    {
        let r = resampled(members, rank);
        let mut ws = vec![0f32; r.member_workspace_len(batch)];
        let mut uw = vec![0f32; r.low_rank_update_len(1)];
        let mut coeffs = vec![0f64; members];
        let name = if rank == 1 {
            "low_rank".to_string()
        } else {
            format!("low_rank_{rank}")
        };
        group.bench_function(BenchmarkId::new(name, members), |b| {
            b.iter(|| {
                let rows = r.update_workspace(&mut uw, 1).unwrap().rows;
                let view = mean.view();
                r.low_rank_coefficients(
                    &normal,
                    &mean.theta,
                    &mean.x,
                    &view,
                    0,
                    0..r.draws(),
                    &mut ws,
                    &mut coeffs,
                    rows,
                )
                .unwrap();
                black_box(&coeffs);
            })
        });
    }
    group.finish();
}

fn ienk_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("ienk_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let normal = Normal::new();
    let p = LAYOUT.num_params();
    for (members, batch) in [
        (10, 1),
        (10, 32),
        (10, 500),
        (100, 1),
        (100, 32),
        (100, 500),
        (1000, 1),
        (1000, 32),
        (1000, 500),
    ] {
        let rank = if members >= 1000 { 1 } else { 0 };
        let r = resampled(members, rank);
        let mut mean = Mean::new(batch);
        let mut ws = vec![0f32; r.member_workspace_len(batch)];
        let mut coeffs = vec![0f64; members];
        let id = format!("{members}/{batch}");
        if rank == 0 {
            let mut stored = vec![0f32; members * p];
            group.bench_function(BenchmarkId::new("rng", &id), |b| {
                b.iter(|| {
                    for (k, d) in stored.chunks_exact_mut(p).enumerate() {
                        r.perturb.fill_member(&normal, 0, k, d);
                    }
                })
            });
            let view = mean.view();
            group.bench_function(BenchmarkId::new("forward", &id), |b| {
                // Members from stored perturbations: no random numbers.
                let mut hidden = vec![0f32; batch * 128];
                let (mut bias, mut logits) = ([0f32; 10], vec![0f32; batch * 10]);
                let mut s = vec![0f32; ienk::ensemble::particles::delta_scratch_len(&LAYOUT, batch)];
                b.iter(|| {
                    for d in stored.chunks_exact(p) {
                        ienk::ensemble::particles::forward_delta_member(
                            &LAYOUT,
                            &mean.theta,
                            view.pre,
                            &mean.x,
                            d,
                            &mut hidden,
                            &mut bias,
                            &mut logits,
                            &mut s,
                        )
                        .unwrap();
                    }
                })
            });
            let mut theta = mean.theta.clone();
            let mut tmp = vec![0f32; BLOCK];
            group.bench_function(BenchmarkId::new("update", &id), |b| {
                b.iter(|| {
                    r.update_blocks(&normal, &mut theta, None, 0, &coeffs, 0, Some(&stored), &mut tmp)
                        .unwrap()
                })
            });
        } else {
            // The member phase draws each draw's factors once (an antithetic partner's are
            // derived) and leaves them in the update's workspace.
            let mut uw = vec![0f32; r.low_rank_update_len(1)];
            let mut factors = vec![0f32; r.perturb.factor_len()];
            group.bench_function(BenchmarkId::new("rng", &id), |b| {
                b.iter(|| {
                    for d in 0..r.draws() {
                        r.perturb
                            .fill_factors(&normal, 0, r.perturb.first_member(d), &mut factors)
                    }
                })
            });
            group.bench_function(BenchmarkId::new("forward", &id), |b| {
                b.iter(|| {
                    let view = mean.view();
                    let rows = r.update_workspace(&mut uw, 1).unwrap().rows;
                    let draws = 0..r.draws();
                    r.low_rank_coefficients(
                        &normal,
                        &mean.theta,
                        &mean.x,
                        &view,
                        0,
                        draws,
                        &mut ws,
                        &mut coeffs,
                        rows,
                    )
                    .unwrap()
                })
            });
            // The update scales the factors in place: each run starts from the member phase's.
            group.bench_function(BenchmarkId::new("update", &id), |b| {
                b.iter_batched_ref(
                    || uw.clone(),
                    |w| {
                        let u = r.update_workspace(w, 1).unwrap();
                        r.low_rank_update(&OneThread, &mut mean.theta, None, &coeffs, u)
                            .unwrap()
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        let mut theta = mean.theta.clone();
        let mut work = vec![0f32; r.step_workspace_len(batch, 1)];
        let mut columns = vec![0u32; LAYOUT.inputs];
        // The whole step as the trainer runs it on one thread; at full rank also with room for
        // the direction, which the members then sum as they go.
        let mut direction = vec![
            0f32;
            if rank == 0 {
                r.step_direction_len_for(LAYOUT.inputs)
            } else {
                0
            }
        ];
        let variants: &[(&str, bool)] = match rank {
            0 => &[("step", false), ("step_summing", true)],
            _ => &[("step", false)],
        };
        for &(name, summing) in variants {
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| {
                    let buffers = StepBuffers {
                        work: &mut work,
                        columns: &mut columns,
                        coefficients: &mut coeffs,
                        stored: None,
                        direction: summing.then_some(&mut direction[..]),
                    };
                    let stabiliser = Stabiliser::default();
                    r.step(
                        &normal, stabiliser, &mut theta, None, &mean.x, &mean.y, 0, buffers,
                    )
                    .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, particles, ienk_step);
criterion_main!(benches);
