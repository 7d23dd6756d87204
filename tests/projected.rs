//! The low-rank members' coefficients against an independent reference: each member's network
//! written out in f64 from its factors, forwarded, and its coefficient taken from the
//! definitions of ALGORITHM.md section 3. The logit form never forms a member's logits
//! (`ienk::ensemble::projected`), the thesis form does; both must agree with the reference.
//! And the projected kernel on every path against its portable path, bit for bit, on odd shapes.

mod common;

use common::{Mean, TestRng};
use ienk::ensemble::particles::{forward_low_rank_member, low_rank_scratch_len};
use ienk::ensemble::perturb::Perturbations;
use ienk::ensemble::projected::{
    logit_coefficient_scratch_len, low_rank_logit_coefficients, project_innovation, projected_innovation_len,
};
use ienk::ensemble::resampled::{Form, Resampled};
use ienk::gemm::KernelPath;
use ienk::mlp::Layout;
use ienk::normal::Normal;

fn rule(layout: Layout, members: usize, rank: usize, antithetic: bool, form: Form) -> Resampled {
    let [s1, s2] = layout.glorot_std();
    Resampled {
        perturb: Perturbations {
            layout,
            std: [1.5 * s1, 1.5 * s2],
            rank,
            antithetic,
            seed: 9,
        },
        members,
        form,
        lr: 0.01,
        momentum: 0.0,
        normalize: false,
    }
}

/// Logits (`B x outputs`, f64) of `theta` plus the low-rank perturbation of `factors`, each
/// weight written out as `w + sum_q a_q b_q` in f64.
fn member_logits(pt: &Perturbations, theta: &[f32], factors: &[f32], x: &[f32]) -> Vec<f64> {
    let l = pt.layout;
    let (i, h, o, r) = (l.inputs, l.hidden, l.outputs, pt.rank);
    let p = l.split(theta).unwrap();
    let f = pt.factor_ranges().factors(factors);
    let d = |v: f32| f64::from(v);
    let mut z = Vec::new();
    for xb in x.chunks_exact(i) {
        let hidden: Vec<f64> = (0..h)
            .map(|j| {
                let mut t = d(p.b1[j]) + d(f.db1[j]);
                for (c, &xc) in xb.iter().enumerate() {
                    let low: f64 = (0..r)
                        .map(|q| d(f.a1[j * r + q]) * d(factors[pt.factor_ranges().b1][q * i + c]))
                        .sum();
                    t += (d(p.w1[j * i + c]) + low) * d(xc);
                }
                t.max(0.0)
            })
            .collect();
        for k in 0..o {
            let mut t = d(p.b2[k]) + d(f.db2[k]);
            for (j, &hj) in hidden.iter().enumerate() {
                let low: f64 = (0..r).map(|q| d(f.a2[k * r + q]) * d(f.b2[q * h + j])).sum();
                t += (d(p.w2[k * h + j]) + low) * hj;
            }
            z.push(t);
        }
    }
    z
}

/// The mean's logits in f64.
fn mean_logits(layout: &Layout, theta: &[f32], x: &[f32]) -> Vec<f64> {
    let pt = Perturbations {
        layout: *layout,
        std: [0.0, 0.0],
        rank: 1,
        antithetic: false,
        seed: 0,
    };
    let zero = vec![0f32; pt.factor_len()];
    member_logits(&pt, theta, &zero, x)
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().fold(f64::MIN, |a, &b| a.max(b));
    let e: Vec<f64> = z.iter().map(|&u| (u - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|u| u / s).collect()
}

#[test]
fn low_rank_coefficients_match_an_f64_forward_of_each_member() {
    let normal = Normal::new();
    // Hidden sizes around the 8 lanes, outputs of 1 to 10, ranks 1 to 3 and 9 (more than the 8
    // rows a dot-product kernel takes at once), batches of 0 to 5.
    for (hidden, outputs, rank, batch) in [
        (6, 4, 1, 3),
        (6, 4, 2, 3),
        (1, 1, 1, 1),
        (8, 10, 1, 5),
        (13, 3, 3, 4),
        (17, 10, 1, 5),
        (9, 2, 1, 0),
        (19, 5, 9, 2),
    ] {
        let layout = Layout {
            inputs: 11,
            hidden,
            outputs,
        };
        let mut rng = TestRng::new(hidden as u64);
        let theta = rng.vec(layout.num_params());
        let x: Vec<f32> = rng.vec(batch * layout.inputs).iter().map(|v| v.abs()).collect();
        let y: Vec<u8> = (0..batch).map(|b| (b * 7 % outputs) as u8).collect();
        // 7 antithetic members leave the last draw unpaired.
        for (form, antithetic, members) in [
            (Form::Logit, false, 6),
            (Form::Logit, true, 6),
            (Form::Logit, true, 7),
            (Form::Thesis, false, 6),
            (Form::Thesis, true, 6),
            (Form::Thesis, true, 7),
        ] {
            let r = rule(layout, members, rank, antithetic, form);
            let mean = Mean::new(&layout, form, &theta, &x, &y);
            let mut ws = vec![f32::NAN; r.member_workspace_len(batch)];
            let mut update = vec![f32::NAN; r.low_rank_update_len(1)];
            let mut coeffs = vec![0f64; r.members];
            // The draws in two ranges, as two threads take them.
            let mut rows = r.update_workspace(&mut update, 1).unwrap().rows;
            let mut rest = coeffs.as_mut_slice();
            for draws in [0..1, 1..r.draws()] {
                let (c, tail) = rest.split_at_mut(r.members_of(draws.clone()).len());
                rest = tail;
                let (mine, others) = rows.split_draws(&r, draws.len());
                rows = others;
                let view = mean.view();
                r.low_rank_coefficients(&normal, &theta, &x, &view, 4, draws, &mut ws, c, mine)
                    .unwrap();
            }
            assert!(rest.is_empty());
            // The rows hold each draw's factors, as its first member draws them.
            let ranges = r.perturb.factor_ranges();
            let rows = r.update_workspace(&mut update, 1).unwrap().rows;
            let (l, o) = (layout.hidden * rank, outputs * rank);
            let (i, b2) = (layout.inputs * rank, layout.hidden * rank);
            for d in 0..r.draws() {
                let mut factors = vec![0f32; r.perturb.factor_len()];
                r.perturb
                    .fill_factors(&normal, 4, r.perturb.first_member(d), &mut factors);
                for (part, slot) in [
                    (ranges.a1.clone(), &rows.a1[d * l..(d + 1) * l]),
                    (ranges.b1.clone(), &rows.b1[d * i..(d + 1) * i]),
                    (ranges.db1.clone(), &rows.db1[d * hidden..(d + 1) * hidden]),
                    (ranges.a2.clone(), &rows.a2[d * o..(d + 1) * o]),
                    (ranges.b2.clone(), &rows.b2[d * b2..(d + 1) * b2]),
                    (ranges.db2.clone(), &rows.db2[d * outputs..(d + 1) * outputs]),
                ] {
                    assert_eq!(&factors[part], slot, "draw {d}");
                }
            }
            let z0 = mean_logits(&layout, &theta, &x);
            {
                for (k, &c) in coeffs.iter().enumerate() {
                    let mut factors = vec![0f32; r.perturb.factor_len()];
                    r.perturb.fill_factors(&normal, 4, k, &mut factors);
                    let zk = member_logits(&r.perturb, &theta, &factors, &x);
                    let mut want = 0f64;
                    let mut scale = 0f64;
                    for (b, &label) in y.iter().enumerate() {
                        let rows = b * outputs..(b + 1) * outputs;
                        let (pk, p0) = (softmax(&zk[rows.clone()]), softmax(&z0[rows.clone()]));
                        for (o, idx) in rows.enumerate() {
                            let yo = if usize::from(label) == o { 1.0 } else { 0.0 };
                            let term = match form {
                                Form::Logit => (zk[idx] - z0[idx]) * (p0[o] - yo) / batch as f64,
                                Form::Thesis => (pk[o] - p0[o]) * (-yo / (p0[o] + 0.005)) / batch as f64,
                            };
                            want += term;
                            scale += term.abs();
                        }
                    }
                    assert!(
                        (c - want).abs() < 1e-5 * (1.0 + scale),
                        "{form:?}, H {hidden}, outputs {outputs}, rank {rank}, antithetic {antithetic}, member {k}: {c} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn projected_logit_coefficient_is_the_same_on_every_path_and_in_pairs() {
    let normal = Normal::new();
    // Hidden sizes of 0, 1, primes and non-multiples of the 8 lanes, and the thesis's 128; ranks
    // 1 to 3, and 9 and 17 (past the 8 rows a dot-product kernel takes at once).
    for (hidden, rank, batch) in [
        (0, 1, 2),
        (1, 1, 3),
        (7, 1, 3),
        (8, 1, 1),
        (13, 1, 4),
        (17, 2, 3),
        (31, 3, 2),
        (128, 1, 5),
        (0, 2, 2),
        (1, 2, 3),
        (8, 3, 1),
        (23, 9, 2),
        (128, 2, 5),
        (40, 17, 3),
    ] {
        let layout = Layout {
            inputs: 5,
            hidden,
            outputs: 10,
        };
        let mut rng = TestRng::new(3 + hidden as u64);
        let theta = rng.vec(layout.num_params());
        let pre = rng.vec(batch * hidden);
        let g = rng.vec(batch * 10);
        // Two members' projections side by side in each example's row, as a chunk holds them.
        let ld = 2 * rank + 1;
        let xb = rng.vec(batch * ld);
        let xbs = [&xb[..], &xb[rank..]];
        let pt = rule(layout, 2, rank, false, Form::Logit).perturb;
        let mut factors = vec![0f32; 2 * pt.factor_len()];
        let (first, second) = factors.split_at_mut(pt.factor_len());
        pt.fill_factors(&normal, 1, 0, first);
        pt.fill_factors(&normal, 1, 1, second);
        let ranges = pt.factor_ranges();
        let f = [ranges.factors(first), ranges.factors(second)];
        let mut projected = vec![f32::NAN; projected_innovation_len(&layout, batch)];
        let g = project_innovation(&layout, &theta, &g, &mut projected).unwrap();
        let mut scratch = vec![f32::NAN; logit_coefficient_scratch_len(&layout, rank, batch, 2)];
        let mut one = vec![f32::NAN; logit_coefficient_scratch_len(&layout, rank, batch, 1)];
        let mut single = |path, e: usize| {
            let s = &mut one;
            low_rank_logit_coefficients(path, &layout, rank, &pre, [xbs[e]], ld, [f[e]], &g, s).unwrap()[0]
        };
        let portable = [single(KernelPath::Portable, 0), single(KernelPath::Portable, 1)];
        assert!(portable.iter().all(|c| c.is_finite()));
        assert_ne!(portable[0], portable[1]);
        let mut paths = common::supported_paths("projected logit coefficient");
        paths.push(KernelPath::Portable);
        for path in paths {
            for (e, want) in portable.iter().enumerate() {
                let c = single(path, e);
                assert_eq!(c.to_bits(), want.to_bits(), "{path:?}, H {hidden}, rank {rank}");
            }
            // Both members at once: each the same as alone, bit for bit.
            let pair =
                low_rank_logit_coefficients(path, &layout, rank, &pre, xbs, ld, f, &g, &mut scratch).unwrap();
            assert_eq!(
                pair.map(f64::to_bits),
                portable.map(f64::to_bits),
                "pair, {path:?}, H {hidden}, rank {rank}"
            );
        }
        // A NaN in the mean's pre-activation (in the last example, inside the 8-lane part
        // when there is one) survives every path's ReLU: the step must see it.
        if hidden > 0 {
            let mut nan_pre = pre.clone();
            nan_pre[(batch - 1) * hidden + hidden.min(8) / 2] = f32::NAN;
            let mut paths = common::supported_paths("projected logit coefficient, NaN");
            paths.push(KernelPath::Portable);
            for path in paths {
                let pair =
                    low_rank_logit_coefficients(path, &layout, rank, &nan_pre, xbs, ld, f, &g, &mut scratch)
                        .unwrap();
                assert!(pair.iter().all(|c| c.is_nan()), "{path:?}, H {hidden}: {pair:?}");
            }
        }
    }
}

#[test]
fn projected_logit_coefficient_refuses_short_buffers() {
    let layout = Layout {
        inputs: 5,
        hidden: 4,
        outputs: 3,
    };
    let (rank, batch) = (2, 3);
    let pt = rule(layout, 2, rank, false, Form::Logit).perturb;
    let factors = vec![0.3f32; pt.factor_len()];
    let f = pt.factor_ranges().factors(&factors);
    let theta = vec![0.1f32; layout.num_params()];
    let (pre, g) = (vec![0.2f32; batch * 4], vec![0.1f32; batch * 3]);
    let mut projected = vec![0f32; projected_innovation_len(&layout, batch)];
    assert!(project_innovation(&layout, &theta, &g, &mut projected[1..]).is_err());
    let g = project_innovation(&layout, &theta, &g, &mut projected).unwrap();
    let mut scratch = vec![0f32; logit_coefficient_scratch_len(&layout, rank, batch, 1)];
    let run = |xb: &[f32], ld: usize, scratch: &mut [f32]| {
        low_rank_logit_coefficients(
            KernelPath::Portable,
            &layout,
            rank,
            &pre,
            [xb],
            ld,
            [f],
            &g,
            scratch,
        )
        .map(|[c]| c)
    };
    // A leading dimension below the rank, too few projections and a short scratch are
    // refused; the right lengths are not.
    assert!(run(&[0.5; 6], 1, &mut scratch).is_err());
    assert!(run(&[0.5; 7], 3, &mut scratch).is_err());
    assert!(run(&[0.5; 8], 3, &mut scratch[1..]).is_err());
    assert!(run(&[0.5; 8], 3, &mut scratch).unwrap().is_finite());
    // Rank 0 is not a low-rank member: refused by both low-rank kernels, not a panic.
    let pt0 = rule(layout, 2, 0, false, Form::Logit).perturb;
    let f0 = pt0.factor_ranges().factors(&factors[..pt0.factor_len()]);
    let zero_scratch = &mut scratch[..logit_coefficient_scratch_len(&layout, 0, batch, 1)];
    let zero_rank = low_rank_logit_coefficients(
        KernelPath::Portable,
        &layout,
        0,
        &pre,
        [&[]],
        0,
        [f0],
        &g,
        zero_scratch,
    );
    assert!(zero_rank.is_err(), "{zero_rank:?}");
    let mut logits = vec![0f32; batch * 3];
    let mut fused_scratch = vec![0f32; low_rank_scratch_len(&layout, 0)];
    let fused = forward_low_rank_member(
        KernelPath::Portable,
        &layout,
        0,
        &theta,
        &pre,
        &[],
        0,
        f0,
        &mut fused_scratch,
        &mut logits,
    );
    assert!(fused.is_err(), "{fused:?}");
}

#[test]
fn low_rank_member_phase_refuses_rank_zero_and_mismatched_draws() {
    let normal = Normal::new();
    let layout = Layout {
        inputs: 5,
        hidden: 4,
        outputs: 3,
    };
    let mut rng = TestRng::new(3);
    let theta = rng.vec(layout.num_params());
    let x: Vec<f32> = rng.vec(2 * layout.inputs).iter().map(|v| v.abs()).collect();
    let y = [1u8, 2];
    let r = rule(layout, 6, 1, true, Form::Logit);
    let mean = Mean::new(&layout, Form::Logit, &theta, &x, &y);
    let view = mean.view();
    let mut ws = vec![0f32; r.member_workspace_len(2)];
    let mut update = vec![0f32; r.low_rank_update_len(1)];
    let mut coeffs = vec![0f64; r.members];
    let mut run =
        |r: &Resampled, draws: std::ops::Range<usize>, n: usize, ws: &mut [f32], update: &mut [f32]| {
            let rows = r.update_workspace(update, 1).unwrap().rows;
            let (rows, _) = rows.split_draws(r, draws.len());
            r.low_rank_coefficients(&normal, &theta, &x, &view, 0, draws, ws, &mut coeffs[..n], rows)
        };
    // Three antithetic draws: a fourth, a range past them, and a coefficient slice that is not
    // the range's members are refused; the right call is not.
    assert!(run(&r, 0..4, 6, &mut ws, &mut update).is_err());
    assert!(run(&r, 2..4, 2, &mut ws, &mut update).is_err());
    assert!(run(&r, 0..2, 3, &mut ws, &mut update).is_err());
    assert!(run(&r, 0..2, 4, &mut ws[1..], &mut update).is_err());
    run(&r, 1..3, 4, &mut ws, &mut update).unwrap();
    run(&r, 0..3, 6, &mut ws, &mut update).unwrap();
    // Rank 0 is not a low-rank member phase: an error whatever the workspace, not a panic.
    let zero = Resampled {
        perturb: Perturbations { rank: 0, ..r.perturb },
        ..r
    };
    let mut zero_update = vec![0f32; zero.low_rank_update_len(1)];
    for len in 0..1024 {
        let mut zero_ws = vec![0f32; len];
        let refused = run(&zero, 0..3, 6, &mut zero_ws, &mut zero_update);
        let message = refused.expect_err("rank 0 refused").to_string();
        assert!(message.contains("low rank starts at 1"), "{len}: {message}");
    }
}
