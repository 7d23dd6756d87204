//! The ensemble optimizers against independent references: dense forward passes of expanded
//! perturbations, naive f64 updates, back-propagated gradients.

mod common;

use common::{Mean, ScopedThreads, TestRng, bits, logits_of};
use ienk::ensemble::eki::{Eki, UPDATE_COLUMNS};
use ienk::ensemble::particles::{forward_low_rank_member, low_rank_scratch_len};
use ienk::ensemble::perturb::{BLOCK, Perturbations};
use ienk::ensemble::resampled::{Form, Kept, KeptPerturbations, Resampled};
use ienk::gemm::KernelPath;
use ienk::loss::cross_entropy_grad;
use ienk::mlp::Layout;
use ienk::normal::Normal;
use ienk::workers::{OneThread, Workers};

const TINY: Layout = Layout {
    inputs: 9,
    hidden: 6,
    outputs: 4,
};

fn perturbations(layout: Layout, rank: usize, antithetic: bool, scale: f32) -> Perturbations {
    let [s1, s2] = layout.glorot_std();
    Perturbations {
        layout,
        std: [scale * s1, scale * s2],
        rank,
        antithetic,
        seed: 42,
    }
}

/// One low-rank member's logits on `path`, from the batch's projections `X b1^T` computed here
/// naively (leading dimension `ld`).
#[allow(clippy::too_many_arguments)]
fn low_rank_logits(
    path: KernelPath,
    layout: &Layout,
    rank: usize,
    theta: &[f32],
    x: &[f32],
    factors: &[f32],
    fr: &ienk::ensemble::perturb::FactorRanges,
    ld: usize,
) -> Vec<f32> {
    let batch = x.len() / layout.inputs;
    let mean = Mean::new(layout, Form::Logit, theta, x, &vec![0; batch]);
    let b1 = &factors[fr.b1.clone()];
    let mut xb = vec![f32::NAN; batch * ld];
    for b in 0..batch {
        for q in 0..rank {
            xb[b * ld + q] = (0..layout.inputs)
                .map(|i| x[b * layout.inputs + i] * b1[q * layout.inputs + i])
                .sum();
        }
    }
    let f = fr.factors(factors);
    let mut scratch = vec![f32::NAN; low_rank_scratch_len(layout, rank)];
    let mut got = vec![0f32; batch * layout.outputs];
    forward_low_rank_member(
        path,
        layout,
        rank,
        theta,
        &mean.pre,
        &xb,
        ld,
        f,
        &mut scratch,
        &mut got,
    )
    .unwrap();
    got
}

#[test]
fn low_rank_forward_equals_dense_forward_of_the_expanded_perturbation() {
    let normal = Normal::new();
    // Hidden sizes around the 8 lanes (and the thesis's 128), outputs below and past a group of
    // 8 dot products, ranks 1 to 3 and 9 (a hidden row built a pass per rank over `a1`
    // transposed), batches of 0, 1 and 5.
    for (hidden, outputs, rank, batch) in [
        (11, 5, 1, 7),
        (11, 5, 3, 7),
        (1, 1, 1, 1),
        (1, 2, 2, 3),
        (7, 3, 2, 5),
        (8, 10, 1, 5),
        (13, 10, 1, 0),
        (17, 9, 3, 5),
        (19, 4, 9, 3),
        (128, 10, 1, 5),
        (128, 10, 2, 5),
    ] {
        let layout = Layout {
            inputs: 23,
            hidden,
            outputs,
        };
        let mut rng = TestRng::new(1);
        let theta = rng.vec(layout.num_params());
        let x = rng.vec(batch * layout.inputs);
        let pt = perturbations(layout, rank, false, 1.0);
        let fr = pt.factor_ranges();
        let mut factors = vec![0f32; pt.factor_len()];
        pt.fill_factors(&normal, 5, 2, &mut factors);
        // Reference: theta + expanded perturbation through the plain forward pass.
        let mut delta = vec![0f32; layout.num_params()];
        pt.expand_factors(&factors, &mut delta);
        let perturbed: Vec<f32> = theta.iter().zip(&delta).map(|(a, b)| a + b).collect();
        let want = logits_of(&layout, &perturbed, &x);
        let portable = low_rank_logits(
            KernelPath::Portable,
            &layout,
            rank,
            &theta,
            &x,
            &factors,
            &fr,
            rank + 2,
        );
        for (a, b) in portable.iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "H {hidden}, rank {rank}: {portable:?} vs {want:?}"
            );
        }
        // Every kernel path gives the portable path's numbers, bit for bit.
        for path in common::supported_paths("low-rank member forward") {
            let got = low_rank_logits(path, &layout, rank, &theta, &x, &factors, &fr, rank + 2);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{path:?}, H {hidden}, outputs {outputs}, rank {rank}"
            );
        }
    }
}

fn one_step(r: &Resampled, theta: &mut [f32], x: &[f32], y: &[u8], store: bool) -> Vec<f64> {
    let normal = Normal::new();
    let layout = r.perturb.layout;
    let mean = Mean::new(&layout, r.form, theta, x, y);
    let mut ws = vec![0f32; r.member_workspace_len(y.len())];
    let mut coeffs = vec![0f64; r.members];
    let mut stored = store.then(|| vec![0f32; r.members * layout.num_params()]);
    r.dense_coefficients(
        &normal,
        theta,
        x,
        &mean.view(),
        3,
        0..r.members,
        &mut ws,
        &mut coeffs,
        stored.as_deref_mut().map_or(Kept::Nothing, Kept::Stored),
    )
    .unwrap();
    let mut tmp = vec![0f32; BLOCK];
    r.update_blocks(&normal, theta, None, 0, &coeffs, 3, stored.as_deref(), &mut tmp)
        .unwrap();
    coeffs
}

#[test]
fn regenerated_update_equals_stored_update() {
    let layout = Layout {
        inputs: 60,
        hidden: 70,
        outputs: 10,
    }; // P = 5020: two blocks
    let mut rng = TestRng::new(2);
    let theta0 = rng.vec(layout.num_params());
    let x = rng.vec(5 * 60);
    let y = [1, 4, 9, 0, 3];
    for form in [Form::Thesis, Form::Logit] {
        let r = Resampled {
            perturb: perturbations(layout, 0, true, 1.0),
            members: 10,
            form,
            lr: 0.01,
            momentum: 0.0,
            normalize: false,
        };
        let (mut a, mut b) = (theta0.clone(), theta0.clone());
        let ca = one_step(&r, &mut a, &x, &y, false);
        let cb = one_step(&r, &mut b, &x, &y, true);
        assert_eq!(ca, cb);
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{form:?}"
        );
        assert!(a != theta0);
    }
}

#[test]
fn a_member_phase_keeps_the_leading_members_its_store_holds() {
    let layout = Layout {
        inputs: 60,
        hidden: 70,
        outputs: 10,
    };
    let (p, step, members) = (layout.num_params(), 3, 4..10);
    let mut rng = TestRng::new(8);
    let theta = rng.vec(p);
    let x = rng.vec(2 * 60);
    let y = [7, 2];
    let r = Resampled {
        perturb: perturbations(layout, 0, false, 1.0),
        members: 10,
        form: Form::Thesis,
        lr: 0.01,
        momentum: 0.0,
        normalize: false,
    };
    let normal = Normal::new();
    let mean = Mean::new(&layout, r.form, &theta, &x, &y);
    let mut ws = vec![0f32; r.member_workspace_len(y.len())];
    let mut phase = |kept: Kept<'_>| {
        let mut coeffs = vec![0f64; members.len()];
        let done = r.dense_coefficients(
            &normal,
            &theta,
            &x,
            &mean.view(),
            step,
            members.clone(),
            &mut ws,
            &mut coeffs,
            kept,
        );
        done.map(|()| coeffs)
    };
    let want = phase(Kept::Nothing).unwrap();
    // Room for members 4 to 6 of the range 4..10: those three are kept, as drawn, and the
    // coefficients do not change.
    let mut store = vec![f32::NAN; 3 * p];
    assert_eq!(phase(Kept::Stored(&mut store)).unwrap(), want);
    let mut delta = vec![0f32; p];
    for (j, kept) in store.chunks_exact(p).enumerate() {
        r.perturb.fill_member(&normal, step, 4 + j, &mut delta);
        assert_eq!(bits(kept), bits(&delta), "member {}", 4 + j);
    }
    // Part of a member, or more members than the range has, is refused.
    for len in [3 * p + 1, 7 * p] {
        let mut store = vec![0f32; len];
        assert!(phase(Kept::Stored(&mut store)).is_err(), "{len} floats");
    }
    // The update's sums refuse kept perturbations of members past M, or part of one.
    let coeffs = vec![0.5f64; 10];
    let (mut part, mut tmp) = (vec![0f32; p], vec![0f32; BLOCK]);
    for (first, len) in [(8, 3 * p), (4, 2 * p - 1)] {
        let data = vec![0f32; len];
        let kept = Some(KeptPerturbations { first, data: &data });
        let refused = r.add_direction_blocks(&normal, &mut part, 0, &coeffs, 4, step, kept, &mut tmp);
        assert!(refused.is_err(), "first {first}, {len} floats");
    }
}

/// The mean network's state and the coefficients of all of `r`'s members at `theta` on
/// `(x, y)` (step 0), as the trainer computes them.
fn all_coefficients(r: &Resampled, theta: &[f32], x: &[f32], y: &[u8]) -> (Mean, Vec<f64>) {
    let mean = Mean::new(&r.perturb.layout, r.form, theta, x, y);
    let coeffs = member_coefficients(r, theta, x, &mean);
    (mean, coeffs)
}

/// The coefficients of all of `r`'s members (step 0) given the mean network's state, with
/// `theta` as the members' parameters.
fn member_coefficients(r: &Resampled, theta: &[f32], x: &[f32], mean: &Mean) -> Vec<f64> {
    let mut ws = vec![0f32; r.member_workspace_len(mean.logits.len() / r.perturb.layout.outputs)];
    let mut coeffs = vec![0f64; r.members];
    r.dense_coefficients(
        &Normal::new(),
        theta,
        x,
        &mean.view(),
        0,
        0..r.members,
        &mut ws,
        &mut coeffs,
        Kept::Nothing,
    )
    .unwrap();
    coeffs
}

#[test]
fn dense_coefficients_match_a_naive_member_forward() {
    let mut rng = TestRng::new(3);
    let theta = rng.vec(TINY.num_params());
    let x = rng.vec(3 * 9);
    let y = [2, 0, 3];
    let normal = Normal::new();
    for form in [Form::Thesis, Form::Logit] {
        let r = Resampled {
            perturb: perturbations(TINY, 0, false, 1.0),
            members: 11,
            form,
            lr: 0.01,
            momentum: 0.0,
            normalize: false,
        };
        let (mean, coeffs) = all_coefficients(&r, &theta, &x, &y);
        for (k, &c) in coeffs.iter().enumerate() {
            let mut delta = vec![0f32; TINY.num_params()];
            r.perturb.fill_member(&normal, 0, k, &mut delta);
            let member: Vec<f32> = theta.iter().zip(&delta).map(|(a, b)| a + b).collect();
            let z = logits_of(&TINY, &member, &x);
            // Reference coefficient in f64 from the definitions of ALGORITHM.md section 3.
            let mut want = 0f64;
            for b in 0..3 {
                let zk = &z[b * 4..b * 4 + 4];
                let z0 = &mean.logits[b * 4..b * 4 + 4];
                let sm = |v: &[f32]| {
                    let m = v.iter().fold(f64::MIN, |a, &b| a.max(f64::from(b)));
                    let e: Vec<f64> = v.iter().map(|&u| (f64::from(u) - m).exp()).collect();
                    let s: f64 = e.iter().sum();
                    e.into_iter().map(|u| u / s).collect::<Vec<f64>>()
                };
                let (pk, p0) = (sm(zk), sm(z0));
                for o in 0..4 {
                    let yo = if usize::from(y[b]) == o { 1.0 } else { 0.0 };
                    want += match form {
                        Form::Logit => (f64::from(zk[o]) - f64::from(z0[o])) * (p0[o] - yo) / 3.0,
                        Form::Thesis => (pk[o] - p0[o]) * (-yo / (p0[o] + 0.005)) / 3.0,
                    };
                }
            }
            assert!(
                (c - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{form:?} member {k}: {c} vs {want}"
            );
        }
    }
}

/// The member phase reads only theta's output layer, its input layer entering through the
/// mean's pre-activation: with `W1` and `b1` NaN, the same coefficients bit for bit. The step
/// relies on it to give the restricted network as the tail of the full network's parameters.
#[test]
fn dense_coefficients_read_only_the_output_layer() {
    let mut rng = TestRng::new(4);
    let theta = rng.vec(TINY.num_params());
    let x = rng.vec(2 * 9);
    let y = [1, 3];
    for form in [Form::Thesis, Form::Logit] {
        let r = Resampled {
            perturb: perturbations(TINY, 0, false, 1.0),
            members: 5,
            form,
            lr: 0.01,
            momentum: 0.0,
            normalize: false,
        };
        let mean = Mean::new(&TINY, form, &theta, &x, &y);
        let coefficients = |t: &[f32]| {
            let coeffs = member_coefficients(&r, t, &x, &mean);
            coeffs.iter().map(|c| c.to_bits()).collect::<Vec<_>>()
        };
        let mut blind = theta.clone();
        let p = TINY.split_mut(&mut blind).unwrap();
        p.w1.fill(f32::NAN);
        p.b1.fill(f32::NAN);
        assert_eq!(coefficients(&blind), coefficients(&theta), "{form:?}");
    }
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn ensemble_estimate_points_along_the_gradient() {
    // sum_k c_k delta_k / (M s_l^2) -> grad L as M grows (Stein's lemma); small s keeps the
    // linearisation exact to first order.
    let layout = TINY;
    let mut rng = TestRng::new(4);
    let theta: Vec<f32> = rng.vec(layout.num_params());
    let (x, y) = (rng.vec(4 * 9), [1u8, 3, 0, 2]);
    // Back-propagated gradient (the reference).
    let (mut hid, mut z, mut dz, mut dh) = (vec![0f32; 24], vec![0f32; 16], vec![0f32; 16], vec![0f32; 24]);
    let mut grad = vec![0f32; layout.num_params()];
    let mut s = vec![0f32; layout.gemm_scratch_len(4)];
    layout.forward(&theta, &x, &mut hid, &mut z, &mut s).unwrap();
    cross_entropy_grad(&z, 4, &y, &mut dz).unwrap();
    layout
        .backward(&theta, &x, &hid, &dz, &mut dh, &mut grad, &mut s)
        .unwrap();
    let grad: Vec<f64> = grad.iter().map(|&g| f64::from(g)).collect();
    let normal = Normal::new();
    for (form, antithetic) in [(Form::Logit, true), (Form::Thesis, true), (Form::Logit, false)] {
        let members = 40_000;
        let r = Resampled {
            perturb: perturbations(layout, 0, antithetic, 0.01),
            members,
            form,
            lr: 1.0,
            momentum: 0.0,
            normalize: false,
        };
        let (_, coeffs) = all_coefficients(&r, &theta, &x, &y);
        // theta - 1.0 * sum c delta, so the estimate is (theta0 - theta1).
        let mut moved = theta.clone();
        let mut tmp = vec![0f32; BLOCK];
        r.update_blocks(&normal, &mut moved, None, 0, &coeffs, 0, None, &mut tmp)
            .unwrap();
        let [l1, l2] = layout.layer_ranges();
        let [s1, s2] = r.perturb.std;
        let est: Vec<f64> = (0..layout.num_params())
            .map(|i| {
                let s = if l1.contains(&i) {
                    s1
                } else {
                    debug_assert!(l2.contains(&i));
                    s2
                };
                (f64::from(theta[i]) - f64::from(moved[i])) / (members as f64 * f64::from(s) * f64::from(s))
            })
            .collect();
        let cos = cosine(&est, &grad);
        assert!(cos > 0.99, "{form:?} antithetic={antithetic}: cosine {cos}");
    }
}

/// EKI with the given ensemble on one batch: logits of every member, then the update.
fn eki_step(eki: &Eki, ens: &mut [f32], x: &[f32], y: &[u8]) -> ienk::ensemble::eki::EkiStep {
    eki_step_on(&OneThread, eki, ens, x, y)
}

/// [`eki_step`] with the update's work cut over `workers`.
fn eki_step_on(
    workers: &impl Workers,
    eki: &Eki,
    ens: &mut [f32],
    x: &[f32],
    y: &[u8],
) -> ienk::ensemble::eki::EkiStep {
    let b = y.len();
    let mut logits = vec![0f32; eki.members * b * eki.layout.outputs];
    let mut fw = vec![0f32; eki.forward_workspace_len(b, 3)];
    eki.member_logits(ens, x, 0..eki.members, 3, &mut fw, &mut logits)
        .unwrap();
    let (l32, l64) = eki.update_workspace_len(b, workers.count());
    let (mut w32, mut w64) = (vec![f32::NAN; l32], vec![f64::NAN; l64]);
    eki.update(workers, ens, &logits, y, &mut w32, &mut w64).unwrap()
}

/// 700 inputs and 3 hidden units: W1's 2100 parameters span two of the update's column blocks
/// ([`UPDATE_COLUMNS`]), the last one partly.
const WIDE: Layout = Layout {
    inputs: 700,
    hidden: 3,
    outputs: 4,
};

#[test]
fn eki_update_on_workers_gives_one_threads_bits() {
    const { assert!(WIDE.inputs * WIDE.hidden > UPDATE_COLUMNS) };
    for members in [1, 2, 5, 7] {
        let mut rng = TestRng::new(40 + members as u64);
        let eki = Eki {
            layout: WIDE,
            members,
            h0: 0.3,
            eps: 1e-8,
            inflation: 0.1,
            std: [0.2, 0.3],
        };
        let theta0 = rng.vec(WIDE.num_params());
        let mut start = vec![0f32; eki.ensemble_len()];
        eki.scatter(&Normal::new(), &mut rand_xoshiro_rng(3), &theta0, &mut start);
        let (x, y) = (rng.vec(3 * WIDE.inputs), [0u8, 3, 1]);
        let mut alone = start.clone();
        let want = eki_step(&eki, &mut alone, &x, &y);
        let mut want_mean = vec![0f32; WIDE.num_params()];
        eki.mean(&OneThread, &alone, &mut want_mean);
        for workers in [2, 3, 4, 8] {
            let threads = ScopedThreads(workers);
            let mut ens = start.clone();
            let got = eki_step_on(&threads, &eki, &mut ens, &x, &y);
            let at = format!("{members} members, {workers} workers");
            assert_eq!(got.h.to_bits(), want.h.to_bits(), "{at}: h");
            assert_eq!(got.d_norm.to_bits(), want.d_norm.to_bits(), "{at}: ||D||");
            assert_eq!(bits(&ens), bits(&alone), "{at}: the ensemble");
            let mut mean = vec![f32::NAN; WIDE.num_params()];
            eki.mean(&threads, &ens, &mut mean);
            assert_eq!(bits(&mean), bits(&want_mean), "{at}: the mean");
        }
    }
}

fn members_of(eki: &Eki, ens: &[f32]) -> Vec<Vec<f64>> {
    (0..eki.members)
        .map(|j| {
            let mut u = vec![0f32; eki.layout.num_params()];
            eki.member(ens, j, &mut u);
            u.into_iter().map(f64::from).collect()
        })
        .collect()
}

/// An EKI rule on the tiny network and its ensemble scattered around a random theta_0 (drawn
/// from `rng`), with spread `spread` on both layers.
fn eki_ensemble(
    rng: &mut TestRng,
    members: usize,
    h0: f32,
    inflation: f32,
    spread: f32,
    seed: u64,
) -> (Eki, Vec<f32>) {
    let eki = Eki {
        layout: TINY,
        members,
        h0,
        eps: 1e-8,
        inflation,
        std: [spread, spread],
    };
    let theta0 = rng.vec(TINY.num_params());
    let mut ens = vec![0f32; eki.ensemble_len()];
    eki.scatter(&Normal::new(), &mut rand_xoshiro_rng(seed), &theta0, &mut ens);
    (eki, ens)
}

#[test]
fn eki_update_equals_the_naive_formula() {
    let mut rng = TestRng::new(5);
    let (eki, ens) = eki_ensemble(&mut rng, 7, 0.3, 0.0, 0.5, 1);
    let (x, y) = (rng.vec(5 * 9), [0u8, 1, 2, 3, 1]);
    let before = members_of(&eki, &ens);
    // Naive f64: G_k, Gbar, g_j, D_kj, h, u_j - (h/M) sum_k D_kj (u_k - ubar).
    let m = eki.members;
    let g_of = |u: &[f64]| logits_of(&TINY, &u.iter().map(|&v| v as f32).collect::<Vec<_>>(), &x);
    let gs: Vec<Vec<f32>> = before.iter().map(|u| g_of(u)).collect();
    let gbar: Vec<f64> = (0..20)
        .map(|i| gs.iter().map(|g| f64::from(g[i])).sum::<f64>() / m as f64)
        .collect();
    let innov: Vec<Vec<f64>> = gs
        .iter()
        .map(|g| {
            let mut d = vec![0f32; 20];
            cross_entropy_grad(g, 4, &y, &mut d).unwrap();
            d.into_iter().map(f64::from).collect()
        })
        .collect();
    let d: Vec<Vec<f64>> = (0..m)
        .map(|k| {
            (0..m)
                .map(|j| {
                    (0..20)
                        .map(|i| (f64::from(gs[k][i]) - gbar[i]) * innov[j][i])
                        .sum()
                })
                .collect()
        })
        .collect();
    let dn = d.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
    let h = 0.3 / (dn + 1e-8);
    let p = TINY.num_params();
    let ubar: Vec<f64> = (0..p)
        .map(|i| before.iter().map(|u| u[i]).sum::<f64>() / m as f64)
        .collect();
    let want: Vec<Vec<f64>> = (0..m)
        .map(|j| {
            (0..p)
                .map(|i| {
                    before[j][i]
                        - h / m as f64 * (0..m).map(|k| d[k][j] * (before[k][i] - ubar[i])).sum::<f64>()
                })
                .collect()
        })
        .collect();
    let start = ens;
    for workers in [1, 3] {
        let mut ens = start.clone();
        let step = eki_step_on(&ScopedThreads(workers), &eki, &mut ens, &x, &y);
        assert!((step.h - h).abs() < 1e-6 * h, "{} vs {h}", step.h);
        let got = members_of(&eki, &ens);
        for (gj, wj) in got.iter().zip(&want) {
            for (a, b) in gj.iter().zip(wj) {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                    "{workers} workers: {a} vs {b}"
                );
            }
        }
    }
}

fn rand_xoshiro_rng(seed: u64) -> rand_xoshiro::Xoshiro256PlusPlus {
    <rand_xoshiro::Xoshiro256PlusPlus as rand_core::SeedableRng>::seed_from_u64(seed)
}

/// Orthonormal basis (Gram-Schmidt in f64) of the vectors `u - origin`.
fn span_basis(vectors: &[Vec<f64>], origin: &[f64]) -> Vec<Vec<f64>> {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for u in vectors {
        let mut v: Vec<f64> = u.iter().zip(origin).map(|(a, b)| a - b).collect();
        for e in &basis {
            let d: f64 = v.iter().zip(e).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(e).for_each(|(a, b)| *a -= d * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 1e-9 {
            basis.push(v.into_iter().map(|a| a / n).collect());
        }
    }
    basis
}

/// Relative distance of `u - origin` from the span of `basis`.
fn off_span(u: &[f64], origin: &[f64], basis: &[Vec<f64>]) -> f64 {
    let mut v: Vec<f64> = u.iter().zip(origin).map(|(a, b)| a - b).collect();
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    for e in basis {
        let d: f64 = v.iter().zip(e).map(|(a, b)| a * b).sum();
        v.iter_mut().zip(e).for_each(|(a, b)| *a -= d * b);
    }
    v.iter().map(|a| a * a).sum::<f64>().sqrt() / norm
}

fn mean_of(vs: &[Vec<f64>]) -> Vec<f64> {
    (0..vs[0].len())
        .map(|i| vs.iter().map(|u| u[i]).sum::<f64>() / vs.len() as f64)
        .collect()
}

#[test]
fn eki_on_a_linear_model_is_h_cug_g_lowers_the_loss_and_keeps_the_span() {
    // G(u) = A u (d x P), loss_j = |A u_j - y|^2 / 2, g_j = A u_j - y. The parameter vector is
    // laid out as a layout with P inputs and one "hidden" unit: W1 holds the P entries of u and
    // b1 one entry the model ignores.
    let (d, p_model, m) = (6, 12, 5);
    let layout = Layout {
        inputs: p_model,
        hidden: 1,
        outputs: 0,
    };
    let p = layout.num_params();
    let eki = Eki {
        layout,
        members: m,
        h0: 0.01,
        eps: 1e-8,
        inflation: 0.0,
        std: [1.0, 1.0],
    };
    let mut rng = TestRng::new(6);
    let a: Vec<f64> = rng.vec(d * p_model).into_iter().map(f64::from).collect();
    let y: Vec<f64> = rng.vec(d).into_iter().map(f64::from).collect();
    let normal = Normal::new();
    let mut ens = vec![0f32; eki.ensemble_len()];
    eki.scatter(&normal, &mut rand_xoshiro_rng(3), &vec![0.0; p], &mut ens);
    let start = members_of(&eki, &ens);
    let ubar0 = mean_of(&start);
    let basis = span_basis(&start, &ubar0);
    let g_of = |u: &[f64]| -> Vec<f64> {
        (0..d)
            .map(|r| (0..p_model).map(|c| a[r * p_model + c] * u[c]).sum())
            .collect()
    };
    let loss = |us: &[Vec<f64>]| -> f64 {
        us.iter()
            .map(|u| {
                g_of(u)
                    .iter()
                    .zip(&y)
                    .map(|(g, t)| (g - t).powi(2) / 2.0)
                    .sum::<f64>()
            })
            .sum()
    };
    let (l32, l64) = eki.update_with_len(d, 1);
    let (mut w32, mut w64) = (vec![0f32; l32], vec![0f64; l64]);
    let mut last = loss(&start);
    for step in 0..30 {
        let us = members_of(&eki, &ens);
        let outputs: Vec<f64> = us.iter().flat_map(|u| g_of(u)).collect();
        let innov: Vec<f64> = outputs
            .chunks(d)
            .flat_map(|g| g.iter().zip(&y).map(|(a, b)| a - b))
            .collect();
        let (o32, i32v): (Vec<f32>, Vec<f32>) = (
            outputs.iter().map(|&v| v as f32).collect(),
            innov.iter().map(|&v| v as f32).collect(),
        );
        let (_, h) = eki
            .update_with(&OneThread, &mut ens, &o32, &i32v, &mut w32, &mut w64)
            .unwrap();
        // The known answer: u_j <- u_j - h C^{uG} g_j, C^{uG} = (1/M) sum_k (u_k - ubar)(G_k - Gbar)^T.
        let ubar = mean_of(&us);
        let gbar = mean_of(&outputs.chunks(d).map(<[f64]>::to_vec).collect::<Vec<_>>());
        for (j, got) in members_of(&eki, &ens).iter().enumerate() {
            let gj = &innov[j * d..(j + 1) * d];
            for i in 0..p {
                let cug_g: f64 = (0..m)
                    .map(|k| {
                        let gk = &outputs[k * d..(k + 1) * d];
                        (us[k][i] - ubar[i])
                            * gk.iter()
                                .zip(&gbar)
                                .zip(gj)
                                .map(|((a, b), c)| (a - b) * c)
                                .sum::<f64>()
                    })
                    .sum::<f64>()
                    / m as f64;
                let want = us[j][i] - h * cug_g;
                assert!(
                    (got[i] - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "step {step}: {} vs {want}",
                    got[i]
                );
            }
        }
        let now = loss(&members_of(&eki, &ens));
        assert!(now < last, "step {step}: loss rose from {last} to {now}");
        last = now;
        for u in members_of(&eki, &ens) {
            let off = off_span(&u, &ubar0, &basis);
            assert!(off < 1e-5, "step {step}: left the initial affine span by {off}");
        }
    }
}

#[test]
fn eki_on_the_mlp_stays_in_the_initial_affine_span() {
    let mut rng = TestRng::new(7);
    let (eki, mut ens) = eki_ensemble(&mut rng, 5, 0.5, 0.0, 0.3, 2);
    let (x, y) = (rng.vec(6 * 9), [0u8, 1, 2, 3, 1, 0]);
    let start = members_of(&eki, &ens);
    let ubar0 = mean_of(&start);
    let basis = span_basis(&start, &ubar0);
    for _ in 0..10 {
        eki_step(&eki, &mut ens, &x, &y);
    }
    for u in members_of(&eki, &ens) {
        let off = off_span(&u, &ubar0, &basis);
        assert!(off < 1e-5, "left the initial affine span by {off}");
    }
}

#[test]
fn momentum_accumulates_the_plain_directions() {
    // With the plain update d_t = (theta_{t-1} - theta_t) / h; with momentum mu the second step
    // must move by h (mu d_1 + d_2), for full rank and for low rank.
    let layout = Layout {
        inputs: 30,
        hidden: 8,
        outputs: 4,
    };
    let mut rng = TestRng::new(8);
    let theta0 = rng.vec(layout.num_params());
    let x = rng.vec(4 * 30);
    let y = [0u8, 3, 2, 1];
    let normal = Normal::new();
    for rank in [0, 2] {
        let (h, mu) = (0.01f32, 0.9f32);
        let step = |r: &Resampled, theta: &mut Vec<f32>, v: Option<&mut [f32]>, t: u64| {
            let mean = Mean::new(&layout, Form::Logit, theta, &x, &y);
            let mut ws = vec![0f32; r.member_workspace_len(4)];
            let mut coeffs = vec![0f64; r.members];
            if rank == 0 {
                r.dense_coefficients(
                    &normal,
                    theta,
                    &x,
                    &mean.view(),
                    t,
                    0..r.members,
                    &mut ws,
                    &mut coeffs,
                    Kept::Nothing,
                )
                .unwrap();
                let mut tmp = vec![0f32; BLOCK];
                r.update_blocks(&normal, theta, v, 0, &coeffs, t, None, &mut tmp)
                    .unwrap();
            } else {
                let mut uw = vec![0f32; r.low_rank_update_len(1)];
                let mut update = r.update_workspace(&mut uw, 1).unwrap();
                let (draws, rows) = (0..r.draws(), update.rows.reborrow());
                let view = mean.view();
                r.low_rank_coefficients(&normal, theta, &x, &view, t, draws, &mut ws, &mut coeffs, rows)
                    .unwrap();
                r.low_rank_update(&OneThread, theta, v, &coeffs, update).unwrap();
            }
        };
        let plain = Resampled {
            perturb: perturbations(layout, rank, true, 1.0),
            members: 6,
            form: Form::Logit,
            lr: h,
            momentum: 0.0,
            normalize: false,
        };
        let heavy = Resampled {
            momentum: mu,
            ..plain
        };
        let mut a = theta0.clone();
        step(&plain, &mut a, None, 0);
        let d1: Vec<f32> = theta0.iter().zip(&a).map(|(p, q)| (p - q) / h).collect();
        let mut b = theta0.clone();
        let mut v = vec![0f32; layout.num_params()];
        step(&heavy, &mut b, Some(&mut v), 0);
        assert!(
            a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6),
            "rank {rank}: first steps differ"
        );
        let theta1 = a.clone();
        step(&plain, &mut a, None, 1);
        step(&heavy, &mut b, Some(&mut v), 1);
        for i in 0..layout.num_params() {
            let d2 = (theta1[i] - a[i]) / h;
            let want = theta1[i] - h * (mu * d1[i] + d2);
            assert!(
                (b[i] - want).abs() < 1e-5 * (1.0 + want.abs()),
                "rank {rank}, entry {i}: {} vs {want}",
                b[i]
            );
        }
    }
}

#[test]
fn normalize_divides_each_layer_by_m_s_squared() {
    let layout = Layout {
        inputs: 30,
        hidden: 8,
        outputs: 4,
    };
    let mut rng = TestRng::new(9);
    let theta0 = rng.vec(layout.num_params());
    let x = rng.vec(3 * 30);
    let y = [1u8, 0, 2];
    let plain = Resampled {
        perturb: perturbations(layout, 0, false, 1.0),
        members: 7,
        form: Form::Logit,
        lr: 1.0,
        momentum: 0.0,
        normalize: false,
    };
    let scaled = Resampled {
        normalize: true,
        ..plain
    };
    let (mut a, mut b) = (theta0.clone(), theta0.clone());
    one_step(&plain, &mut a, &x, &y, false);
    one_step(&scaled, &mut b, &x, &y, false);
    let [l1, _] = layout.layer_ranges();
    let [s1, s2] = plain.perturb.std;
    for i in 0..layout.num_params() {
        let s = if l1.contains(&i) { s1 } else { s2 };
        let want = theta0[i] - (theta0[i] - a[i]) / (7.0 * s * s);
        assert!(
            (b[i] - want).abs() < 1e-4 * (1.0 + want.abs()),
            "entry {i}: {} vs {want}",
            b[i]
        );
    }
}

/// Softmax of each row of `width` values, in f64.
fn softmax_rows(z: &[f64], width: usize) -> Vec<f64> {
    z.chunks(width)
        .flat_map(|row| {
            let m = row.iter().fold(f64::MIN, |a, &b| a.max(b));
            let e: Vec<f64> = row.iter().map(|&u| (u - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |u| u / s)
        })
        .collect()
}

#[test]
fn centred_coefficients_compare_each_member_with_the_ensemble_mean_output() {
    let mut rng = TestRng::new(12);
    let theta = rng.vec(TINY.num_params());
    let x = rng.vec(3 * 9);
    let y = [1, 3, 0];
    let normal = Normal::new();
    let members = 9;
    for form in [Form::Thesis, Form::Logit] {
        let r = Resampled {
            perturb: perturbations(TINY, 0, false, 1.0),
            members,
            form,
            lr: 0.01,
            momentum: 0.0,
            normalize: false,
        };
        let (mean, mut coeffs) = all_coefficients(&r, &theta, &x, &y);
        ienk::ensemble::resampled::center_coefficients(&mut coeffs);
        // Reference in f64: each member's output (logits, or probabilities for the thesis
        // form), the ensemble's mean of them, and <output_k - ensemble mean, g>.
        let outputs: Vec<Vec<f64>> = (0..members)
            .map(|k| {
                let mut delta = vec![0f32; TINY.num_params()];
                r.perturb.fill_member(&normal, 0, k, &mut delta);
                let member: Vec<f32> = theta.iter().zip(&delta).map(|(a, b)| a + b).collect();
                let z: Vec<f64> = logits_of(&TINY, &member, &x).into_iter().map(f64::from).collect();
                match form {
                    Form::Logit => z,
                    Form::Thesis => softmax_rows(&z, 4),
                }
            })
            .collect();
        let z0: Vec<f64> = mean.logits.iter().map(|&v| f64::from(v)).collect();
        let p0 = softmax_rows(&z0, 4);
        let ensemble_mean: Vec<f64> = (0..12)
            .map(|i| outputs.iter().map(|o| o[i]).sum::<f64>() / members as f64)
            .collect();
        for (k, &c) in coeffs.iter().enumerate() {
            let mut want = 0f64;
            for (i, (&ok, &obar)) in outputs[k].iter().zip(&ensemble_mean).enumerate() {
                let (b, o) = (i / 4, i % 4);
                let yo = if usize::from(y[b]) == o { 1.0 } else { 0.0 };
                let g = match form {
                    Form::Logit => (p0[i] - yo) / 3.0,
                    Form::Thesis => -yo / (p0[i] + 0.005) / 3.0,
                };
                want += (ok - obar) * g;
            }
            assert!(
                (c - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{form:?} member {k}: {c} vs {want}"
            );
        }
    }
}

#[test]
fn clipping_bounds_every_coefficient_and_keeps_the_rest() {
    let mut c = [-250.0, -0.5, 0.0, 0.25, 3.0, f64::INFINITY];
    ienk::ensemble::resampled::clip_coefficients(&mut c, 1.0);
    assert_eq!(c, [-1.0, -0.5, 0.0, 0.25, 1.0, 1.0]);
}

#[test]
fn a_stabiliser_clips_one_coefficient_as_it_clips_them_all() {
    use ienk::ensemble::resampled::Stabiliser;
    let c = [
        -250.0,
        -1.0,
        -0.5,
        0.0,
        0.25,
        1.0,
        3.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    // Written out: the values clamped to [-1, 1], and without a limit, unchanged.
    let want = [-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0, 1.0, -1.0];
    let clipping = Stabiliser {
        center: false,
        clip: Some(1.0),
    };
    let one_by_one: Vec<f64> = c.iter().map(|&v| clipping.clipped(v)).collect();
    assert_eq!(one_by_one, want);
    let mut all = c;
    clipping.apply(&mut all).unwrap();
    assert_eq!(all, want);
    let plain = Stabiliser::default();
    assert_eq!(c.map(|v| plain.clipped(v)), c);
    assert!(clipping.clipped(f64::NAN).is_nan());
}

#[test]
fn inflation_scales_the_spread_around_an_unchanged_mean() {
    let mut rng = TestRng::new(10);
    let alpha = 0.25f32;
    let (eki, mut ens) = eki_ensemble(&mut rng, 4, 0.0, alpha, 0.3, 4);
    let before = members_of(&eki, &ens);
    let (x, y) = (rng.vec(3 * 9), [0u8, 1, 2]);
    let step = eki_step(&eki, &mut ens, &x, &y);
    assert_eq!(step.h, 0.0);
    let after = members_of(&eki, &ens);
    let (m0, m1) = (mean_of(&before), mean_of(&after));
    for i in 0..TINY.num_params() {
        assert!((m0[i] - m1[i]).abs() < 1e-5, "mean moved at {i}");
        for j in 0..4 {
            let want = m0[i] + f64::from(1.0 + alpha) * (before[j][i] - m0[i]);
            assert!(
                (after[j][i] - want).abs() < 1e-5,
                "member {j}, entry {i}: {} vs {want}",
                after[j][i]
            );
        }
    }
}

#[test]
fn low_rank_forward_refuses_short_projections() {
    let layout = Layout {
        inputs: 5,
        hidden: 4,
        outputs: 3,
    };
    let (rank, batch) = (2, 3);
    let theta = vec![0.1f32; layout.num_params()];
    let pre = vec![0.2f32; batch * layout.hidden];
    let pt = perturbations(layout, rank, false, 1.0);
    let fr = pt.factor_ranges();
    let factors = vec![0.3f32; pt.factor_len()];
    let f = fr.factors(&factors);
    let mut scratch = vec![0f32; low_rank_scratch_len(&layout, rank)];
    let mut logits = vec![7f32; batch * layout.outputs];
    let run = |xb: &[f32], ld: usize, scratch: &mut [f32], logits: &mut [f32]| {
        forward_low_rank_member(
            KernelPath::Portable,
            &layout,
            rank,
            &theta,
            &pre,
            xb,
            ld,
            f,
            scratch,
            logits,
        )
    };
    // A leading dimension below the rank, even with enough floats, and too few floats.
    let too_narrow = run(&[0.5; 6], 1, &mut scratch, &mut logits);
    assert!(
        matches!(
            too_narrow,
            Err(ienk::mlp::MlpError::Length {
                expected: 2,
                found: 1,
                ..
            })
        ),
        "{too_narrow:?}"
    );
    let too_short = run(&[0.5; 7], 3, &mut scratch, &mut logits);
    assert!(
        matches!(
            too_short,
            Err(ienk::mlp::MlpError::Length {
                expected: 8,
                found: 7,
                ..
            })
        ),
        "{too_short:?}"
    );
    assert!(logits.iter().all(|&z| z == 7.0), "written before refusing");
    run(&[0.5; 8], 3, &mut scratch, &mut logits).unwrap();
    assert!(logits.iter().all(|&z| z != 7.0));
}

/// The update workspace of `rule` for `workers` with every draw's factors at `step` in its rows,
/// as the member phase leaves them, written here from `fill_factors` of each draw's first
/// member.
fn workspace_with_factors(rule: &Resampled, normal: &Normal, step: u64, workers: usize) -> Vec<f32> {
    let mut ws = vec![f32::NAN; rule.low_rank_update_len(workers)];
    let rows = rule.update_workspace(&mut ws, workers).unwrap().rows;
    let ranges = rule.perturb.factor_ranges();
    let mut factors = vec![0f32; rule.perturb.factor_len()];
    for d in 0..rule.draws() {
        rule.perturb
            .fill_factors(normal, step, rule.perturb.first_member(d), &mut factors);
        for (part, slot) in [
            (ranges.a1.clone(), &mut *rows.a1),
            (ranges.b1.clone(), &mut *rows.b1),
            (ranges.db1.clone(), &mut *rows.db1),
            (ranges.a2.clone(), &mut *rows.a2),
            (ranges.b2.clone(), &mut *rows.b2),
            (ranges.db2.clone(), &mut *rows.db2),
        ] {
            let n = part.len();
            slot[d * n..(d + 1) * n].copy_from_slice(&factors[part]);
        }
    }
    ws
}

#[test]
fn low_rank_update_on_threads_equals_the_one_thread_update() {
    let normal = Normal::new();
    // Block rows below, at and past the GEMM's unpacked path (4 rows), odd member counts,
    // more threads than draws.
    for (hidden, outputs, rank, members, antithetic) in [
        (128, 10, 1, 37, false),
        (11, 5, 3, 8, true),
        (16, 12, 2, 5, false),
        (3, 2, 1, 4, true),
        (29, 9, 2, 1, false),
        (128, 10, 1, 41, true),
    ] {
        let layout = Layout {
            inputs: 23,
            hidden,
            outputs,
        };
        let rule = Resampled {
            perturb: perturbations(layout, rank, antithetic, 1.0),
            members,
            form: Form::Logit,
            lr: 0.1,
            momentum: 0.0,
            normalize: false,
        };
        let mut rng = TestRng::new(members as u64);
        let theta0 = rng.vec(layout.num_params());
        let coeffs: Vec<f64> = rng.vec(members).iter().map(|&c| f64::from(c)).collect();
        let mut whole = theta0.clone();
        let mut ws = workspace_with_factors(&rule, &normal, 3, 1);
        let u = rule.update_workspace(&mut ws, 1).unwrap();
        rule.low_rank_update(&OneThread, &mut whole, None, &coeffs, u)
            .unwrap();
        for threads in [2, 3, 5, 64] {
            let mut ws = workspace_with_factors(&rule, &normal, 3, threads);
            let u = rule.update_workspace(&mut ws, threads).unwrap();
            let mut split = theta0.clone();
            rule.low_rank_update(&ScopedThreads(threads), &mut split, None, &coeffs, u)
                .unwrap();
            assert_eq!(
                split.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "H {hidden}, outputs {outputs}, rank {rank}, {members} members, {threads} threads"
            );
        }
    }
}

#[test]
fn low_rank_update_moves_theta_by_the_coefficients_sum_of_expanded_perturbations() {
    let normal = Normal::new();
    // An odd member count with antithetic pairs leaves the last draw unpaired; no hidden units
    // leaves only the output bias.
    for (rank, members, antithetic, hidden) in [
        (1, 6, true, 11),
        (3, 5, false, 11),
        (2, 7, true, 11),
        (1, 1, true, 11),
        (2, 4, true, 0),
    ] {
        let layout = Layout {
            inputs: 13,
            hidden,
            outputs: 7,
        };
        let h = 0.5f32;
        let rule = Resampled {
            perturb: perturbations(layout, rank, antithetic, 1.0),
            members,
            form: Form::Logit,
            lr: h,
            momentum: 0.0,
            normalize: false,
        };
        let mut rng = TestRng::new(9);
        let theta0 = rng.vec(layout.num_params());
        let coeffs: Vec<f64> = rng.vec(members).iter().map(|&c| f64::from(c)).collect();
        let mut theta = theta0.clone();
        let mut ws = workspace_with_factors(&rule, &normal, 2, 1);
        let u = rule.update_workspace(&mut ws, 1).unwrap();
        rule.low_rank_update(&OneThread, &mut theta, None, &coeffs, u)
            .unwrap();
        // Reference: each member's factors expanded into a dense perturbation, summed in f64.
        let mut want = vec![0f64; layout.num_params()];
        let mut factors = vec![0f32; rule.perturb.factor_len()];
        let mut delta = vec![0f32; layout.num_params()];
        for (k, &c) in coeffs.iter().enumerate() {
            rule.perturb.fill_factors(&normal, 2, k, &mut factors);
            rule.perturb.expand_factors(&factors, &mut delta);
            want.iter_mut()
                .zip(&delta)
                .for_each(|(w, &d)| *w += c * f64::from(d));
        }
        for (j, ((&before, &after), &w)) in theta0.iter().zip(&theta).zip(&want).enumerate() {
            let got = f64::from(before - after) / f64::from(h);
            assert!(
                (got - w).abs() < 1e-4 * (1.0 + w.abs()),
                "rank {rank}, entry {j}: {got} against {w}"
            );
        }
    }
}

#[test]
fn an_antithetic_partners_factors_are_the_first_members_negated_bit_for_bit() {
    let normal = Normal::new();
    let layout = Layout {
        inputs: 23,
        hidden: 11,
        outputs: 7,
    };
    for rank in [1, 2, 3] {
        let pt = perturbations(layout, rank, true, 1.5);
        let f = pt.factor_ranges();
        let mut first = vec![0f32; pt.factor_len()];
        let mut drawn = vec![0f32; pt.factor_len()];
        let mut buf = vec![f32::NAN; pt.partner_len()];
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (step, pair) in [(0, 0), (3, 1), (7, 20)] {
            pt.fill_factors(&normal, step, 2 * pair, &mut first);
            pt.fill_factors(&normal, step, 2 * pair + 1, &mut drawn);
            let derived = pt.partner(f.factors(&first), &mut buf);
            let want = f.factors(&drawn);
            let what = format!("rank {rank}, step {step}, pair {pair}");
            for (got, want) in [
                (derived.a1, want.a1),
                (derived.db1, want.db1),
                (derived.a2, want.a2),
                (derived.b2, want.b2),
                (derived.db2, want.db2),
            ] {
                assert_eq!(bits(got), bits(want), "{what}");
            }
            // b1 is not derived: the partner's projections X b1^T are the first's negated.
            let negated: Vec<f32> = first[f.b1.clone()].iter().map(|v| -v).collect();
            assert_eq!(bits(&negated), bits(&drawn[f.b1.clone()]), "{what}");
            // Only the second member of a pair is derived; the first is drawn.
            assert!(pt.is_partner(2 * pair + 1) && !pt.is_partner(2 * pair));
        }
    }
    // Without antithetic pairs nothing is derived.
    let pt = perturbations(layout, 1, false, 1.0);
    assert!((0..6).all(|k| !pt.is_partner(k)));
}

#[test]
fn add_direction_blocks_sum_the_members_perturbations_in_place_as_update_blocks_does() {
    // P = 6110: a whole block of BLOCK = 4096 floats and a short one.
    let layout = Layout {
        inputs: 50,
        hidden: 100,
        outputs: 10,
    };
    let r = Resampled {
        perturb: perturbations(layout, 0, false, 1.0),
        members: 7,
        form: Form::Logit,
        lr: 0.25,
        momentum: 0.0,
        normalize: false,
    };
    let coeffs = [0.3, -1.7, 2.5, 0.0, -0.01, 4.0, -2.2];
    let (normal, p, step) = (Normal::new(), layout.num_params(), 5);
    // Naively: every member's whole perturbation, summed member by member in f32 from zero;
    // `partial[j]` holds the first j members' shares.
    let mut stored = vec![0f32; r.members * p];
    let mut partial = vec![vec![0f32; p]];
    for (k, &c) in coeffs.iter().enumerate() {
        let delta = &mut stored[k * p..(k + 1) * p];
        r.perturb.fill_member(&normal, step, k, delta);
        let mut next = partial[k].clone();
        for (e, &d) in next.iter_mut().zip(delta.iter()) {
            *e += c as f32 * d;
        }
        partial.push(next);
    }
    let expected = &partial[r.members];
    let mut tmp = vec![0f32; BLOCK];
    // None kept, all of them, or some: members 2 to 4, or 6 alone (the others drawn again).
    let kept_runs = [(0, 0), (0, 7), (2, 5), (6, 7)];
    for kept in kept_runs.map(|(first, end)| {
        (end > first).then(|| KeptPerturbations {
            first,
            data: &stored[first * p..end * p],
        })
    }) {
        // From zero or from the first `from` members' shares (what a member phase summing as
        // it goes leaves), whole and from the second block on.
        for from in [0, 1, 3, 6, 7] {
            let mut whole = partial[from].clone();
            r.add_direction_blocks(&normal, &mut whole, 0, &coeffs, from, step, kept, &mut tmp)
                .unwrap();
            let which = kept.map(|k| (k.first, k.data.len() / p));
            assert_eq!(
                bits(&whole),
                bits(expected),
                "from {from}, kept (first, count) {which:?}"
            );
            let mut tail = partial[from][BLOCK..].to_vec();
            r.add_direction_blocks(&normal, &mut tail, 1, &coeffs, from, step, kept, &mut tmp)
                .unwrap();
            assert_eq!(bits(&tail), bits(&expected[BLOCK..]), "from {from}");
        }
    }
    // The update moves theta by -h times the same sums (h = 0.25 on both layers).
    let theta: Vec<f32> = (0..p).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut moved = theta.clone();
    r.update_blocks(&normal, &mut moved, None, 0, &coeffs, step, None, &mut tmp)
        .unwrap();
    let want: Vec<f32> = theta.iter().zip(expected).map(|(t, d)| t - 0.25 * d).collect();
    assert_eq!(bits(&moved), bits(&want));
}
