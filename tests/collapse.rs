//! Full-rank perturbations collapsed on the inputs a batch leaves at zero, against independent
//! references: naive column scans and copies, the plain forward pass of the full network, and
//! the uncollapsed update, whose direction must have the same distribution.

mod common;

use common::{Mean, TestRng, logits_of};
use ienk::ensemble::collapse::{
    active_columns, draw_coefficient_norm, expand_direction, expand_w1_rows, restrict_batch,
};
use ienk::ensemble::perturb::{BLOCK, Perturbations};
use ienk::ensemble::resampled::{Form, Kept, Resampled};
use ienk::mlp::{Layout, MlpError};
use ienk::normal::Normal;

/// 13 inputs (a prime), of which the batches below leave several at zero.
const LAYOUT: Layout = Layout {
    inputs: 13,
    hidden: 6,
    outputs: 4,
};

fn perturbations(antithetic: bool) -> Perturbations {
    let [s1, s2] = LAYOUT.glorot_std();
    Perturbations {
        layout: LAYOUT,
        std: [s1, s2],
        rank: 0,
        antithetic,
        seed: 9,
    }
}

/// A batch of `rows` whose columns in `zero` are 0 in every row; other entries are non-zero.
fn sparse_batch(rng: &mut TestRng, rows: usize, zero: &[usize]) -> Vec<f32> {
    let mut x = rng.vec(rows * LAYOUT.inputs);
    for (idx, v) in x.iter_mut().enumerate() {
        if zero.contains(&(idx % LAYOUT.inputs)) {
            *v = 0.0;
        } else if *v == 0.0 {
            *v = 0.5;
        }
    }
    x
}

const ZERO: [usize; 6] = [0, 1, 4, 7, 11, 12];

#[test]
fn active_columns_are_the_columns_non_zero_in_some_row() {
    let mut rng = TestRng::new(1);
    let mut x = sparse_batch(&mut rng, 3, &ZERO);
    // Column 4 is non-zero in the last row only.
    x[2 * 13 + 4] = -0.25;
    let mut cols = vec![u32::MAX; 13];
    let n = active_columns(&x, 13, &mut cols).unwrap();
    let want: Vec<u32> = (0..13u32)
        .filter(|c| !ZERO.contains(&(*c as usize)) || *c == 4)
        .collect();
    assert_eq!(&cols[..n], &want[..]);
    // A batch with every entry zero has none; bad lengths are errors.
    assert_eq!(active_columns(&[0.0; 26], 13, &mut cols).unwrap(), 0);
    assert!(matches!(
        active_columns(&x[..20], 13, &mut cols),
        Err(MlpError::Length { .. })
    ));
    assert!(matches!(
        active_columns(&x, 13, &mut cols[..12]),
        Err(MlpError::Length { .. })
    ));
}

#[test]
fn restricted_network_gives_the_full_networks_logits() {
    let mut rng = TestRng::new(2);
    let theta = rng.vec(LAYOUT.num_params());
    let x = sparse_batch(&mut rng, 3, &ZERO);
    let mut cols = vec![0u32; 13];
    let a = active_columns(&x, 13, &mut cols).unwrap();
    let cols = &cols[..a];
    let sub = Layout { inputs: a, ..LAYOUT };
    let mut x_sub = vec![f32::NAN; 3 * a];
    restrict_batch(13, &x, cols, &mut x_sub).unwrap();
    // The restricted network by naive copies: W1's active columns, then b1, W2 and b2.
    let mut theta_sub: Vec<f32> = (0..6)
        .flat_map(|row| cols.iter().map(move |&c| (row, c as usize)))
        .map(|(row, c)| theta[row * 13 + c])
        .collect();
    theta_sub.extend_from_slice(&theta[6 * 13..]);
    assert_eq!(theta_sub.len(), sub.num_params());
    // A member of the restricted network is a member of the full one whatever the inactive
    // columns of its W1 perturbation hold.
    let delta_sub = rng.vec(sub.num_params());
    let member_sub: Vec<f32> = theta_sub.iter().zip(&delta_sub).map(|(t, d)| t + d).collect();
    let mut member = theta.clone();
    for (idx, m) in member.iter_mut().enumerate() {
        let (row, col) = (idx / 13, idx % 13);
        *m += if idx < 6 * 13 {
            match cols.iter().position(|&c| c as usize == col) {
                Some(q) => delta_sub[row * a + q],
                None => 100.0 * rng.uniform(),
            }
        } else {
            delta_sub[idx - 6 * 13 + 6 * a]
        };
    }
    let (got, want) = (
        logits_of(&sub, &member_sub, &x_sub),
        logits_of(&LAYOUT, &member, &x),
    );
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
    }
    // Columns out of order or past the inputs are refused.
    let mut xs = x_sub.clone();
    assert!(matches!(
        restrict_batch(13, &x, &[3, 2], &mut xs[..6]),
        Err(MlpError::Columns { index: 1, value: 2 })
    ));
    assert!(matches!(
        restrict_batch(13, &x, &[3, 13], &mut xs[..6]),
        Err(MlpError::Columns { index: 1, value: 13 })
    ));
}

#[test]
fn draw_coefficient_norm_pairs_antithetic_members() {
    let c = [1.0, 3.0, -2.0, 0.5, 4.0];
    // Pairs (1, 3) and (-2, 0.5) share a draw with opposite signs: e = -2, -2.5, 4.
    let paired = draw_coefficient_norm(&perturbations(true), &c);
    assert!((paired - 26.25f64.sqrt()).abs() < 1e-12, "{paired}");
    let plain = draw_coefficient_norm(&perturbations(false), &c);
    assert!((plain - 5.5).abs() < 1e-12, "{plain}");
}

#[test]
fn expand_places_the_restricted_direction_and_draws_the_rest() {
    let p = perturbations(false);
    let normal = Normal::new();
    let cols = [2u32, 3, 5, 6, 8, 9, 10];
    let sub = Layout { inputs: 7, ..LAYOUT };
    let mut rng = TestRng::new(3);
    let d_sub = rng.vec(sub.num_params());
    let (steps, std) = (3000u64, 0.7f32);
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    let mut d = vec![f32::NAN; LAYOUT.num_params()];
    for step in 0..steps {
        expand_direction(&p, &normal, &cols, &d_sub, std, step, &mut d).unwrap();
        for (idx, &v) in d.iter().enumerate() {
            if idx >= 6 * 13 {
                assert_eq!(v, d_sub[idx - 6 * 13 + 6 * 7]);
                continue;
            }
            let (row, col) = (idx / 13, idx % 13);
            match cols.iter().position(|&c| c as usize == col) {
                Some(q) => assert_eq!(v, d_sub[row * 7 + q]),
                None => {
                    sum += f64::from(v);
                    sum2 += f64::from(v) * f64::from(v);
                    count += 1;
                }
            }
        }
        // Rows filled in two calls (as two threads would) are the same rows.
        let mut split = vec![0f32; 6 * 13];
        let (top, bottom) = split.split_at_mut(2 * 13);
        expand_w1_rows(&p, &normal, &cols, &d_sub[..6 * 7], std, step, 0, top).unwrap();
        expand_w1_rows(&p, &normal, &cols, &d_sub[..6 * 7], std, step, 2, bottom).unwrap();
        assert_eq!(&split[..], &d[..6 * 13]);
    }
    // The inactive entries are N(0, std^2): mean and variance within 5 standard errors.
    let n = count as f64;
    let var = f64::from(std * std);
    assert!((sum / n).abs() < 5.0 * (var / n).sqrt(), "mean {}", sum / n);
    assert!(
        (sum2 / n - var).abs() < 5.0 * var * (2.0 / n).sqrt(),
        "variance {}",
        sum2 / n
    );
}

/// The direction `sum_k c_k delta_k` of one step, uncollapsed (every member's full perturbation)
/// or collapsed (restricted members, then expanded), as f64.
fn direction(r: &Resampled, theta: &[f32], x: &[f32], y: &[u8], step: u64, collapsed: bool) -> Vec<f64> {
    let normal = Normal::new();
    let layout = r.perturb.layout;
    let b = y.len();
    let mean_state = Mean::new(&layout, r.form, theta, x, y);
    let mean = mean_state.view();
    let mut cols = vec![0u32; layout.inputs];
    let a = if collapsed {
        active_columns(x, layout.inputs, &mut cols).unwrap()
    } else {
        layout.inputs
    };
    let sub = Layout { inputs: a, ..layout };
    let mut x_sub = vec![0f32; b * a];
    let member_rule = Resampled {
        perturb: Perturbations {
            layout: sub,
            ..r.perturb
        },
        ..*r
    };
    let (th, xm) = if collapsed {
        // As the step gives them: the batch's active columns, and for the members' output
        // layer the last floats of theta.
        restrict_batch(layout.inputs, x, &cols[..a], &mut x_sub).unwrap();
        (&theta[theta.len() - sub.num_params()..], &x_sub[..])
    } else {
        (theta, x)
    };
    let mut ws = vec![0f32; member_rule.member_workspace_len(b)];
    let mut coeffs = vec![0f64; r.members];
    member_rule
        .dense_coefficients(
            &normal,
            th,
            xm,
            &mean,
            step,
            0..r.members,
            &mut ws,
            &mut coeffs,
            Kept::Nothing,
        )
        .unwrap();
    let mut d_sub = vec![0f32; sub.num_params()];
    let mut tmp = vec![0f32; BLOCK];
    member_rule
        .add_direction_blocks(&normal, &mut d_sub, 0, &coeffs, 0, step, None, &mut tmp)
        .unwrap();
    if !collapsed {
        return d_sub.into_iter().map(f64::from).collect();
    }
    let noise = r.perturb.std[0] * draw_coefficient_norm(&r.perturb, &coeffs) as f32;
    let mut d = vec![0f32; layout.num_params()];
    expand_direction(&r.perturb, &normal, &cols[..a], &d_sub, noise, step, &mut d).unwrap();
    d.into_iter().map(f64::from).collect()
}

/// Mean, variance and the standard error of each, per coordinate, of `samples`.
fn moments(samples: &[Vec<f64>]) -> Vec<(f64, f64, f64, f64)> {
    let n = samples.len() as f64;
    (0..samples[0].len())
        .map(|i| {
            let mean = samples.iter().map(|s| s[i]).sum::<f64>() / n;
            let c = |p: i32| samples.iter().map(|s| (s[i] - mean).powi(p)).sum::<f64>() / n;
            let (var, m4) = (c(2), c(4));
            (
                mean,
                var,
                (var / n).sqrt(),
                ((m4 - var * var).max(0.0) / n).sqrt(),
            )
        })
        .collect()
}

#[test]
fn collapsed_direction_has_the_uncollapsed_distribution() {
    let mut rng = TestRng::new(4);
    let theta = rng.vec(LAYOUT.num_params());
    let x = sparse_batch(&mut rng, 2, &ZERO);
    let y = [1u8, 3];
    for (form, antithetic) in [(Form::Logit, false), (Form::Thesis, true)] {
        let r = Resampled {
            perturb: perturbations(antithetic),
            members: 6,
            form,
            lr: 0.01,
            momentum: 0.0,
            normalize: false,
        };
        let steps = 4000;
        let full: Vec<Vec<f64>> = (0..steps)
            .map(|t| direction(&r, &theta, &x, &y, t, false))
            .collect();
        let coll: Vec<Vec<f64>> = (0..steps)
            .map(|t| direction(&r, &theta, &x, &y, t, true))
            .collect();
        for (i, (f, c)) in moments(&full).into_iter().zip(moments(&coll)).enumerate() {
            let (mean_se, var_se) = ((f.2 * f.2 + c.2 * c.2).sqrt(), (f.3 * f.3 + c.3 * c.3).sqrt());
            assert!(
                (f.0 - c.0).abs() <= 5.0 * mean_se,
                "{form:?} coordinate {i}: mean {} vs {} (se {mean_se})",
                f.0,
                c.0
            );
            assert!(
                (f.1 - c.1).abs() <= 5.0 * var_se,
                "{form:?} coordinate {i}: variance {} vs {} (se {var_se})",
                f.1,
                c.1
            );
            assert!(f.1 > 0.0 && c.1 > 0.0, "coordinate {i} does not move");
        }
    }
}

#[test]
fn apply_direction_follows_the_formula_per_layer() {
    let mut rng = TestRng::new(5);
    let p = LAYOUT.num_params();
    let (theta, d, v) = (rng.vec(p), rng.vec(p), rng.vec(p));
    let r = Resampled {
        perturb: perturbations(false),
        members: 4,
        form: Form::Logit,
        lr: 0.3,
        momentum: 0.5,
        normalize: true,
    };
    let (mut t, mut vel) = (theta.clone(), v.clone());
    r.apply_direction(&mut t, &d, Some(&mut vel)).unwrap();
    let split = 6 * 13 + 6;
    for i in 0..p {
        // normalize: layer l's step is lr / (M (c s_l)^2).
        let s = f64::from(r.perturb.std[usize::from(i >= split)]);
        let h = 0.3 / (4.0 * s * s);
        let v_new = 0.5 * f64::from(v[i]) + f64::from(d[i]);
        let want = f64::from(theta[i]) - h * v_new;
        assert!((f64::from(vel[i]) - v_new).abs() < 1e-6, "velocity {i}");
        assert!(
            (f64::from(t[i]) - want).abs() < 1e-4 * (1.0 + want.abs()),
            "theta {i}: {} vs {want}",
            t[i]
        );
    }
    // Wrong lengths are errors.
    assert!(r.apply_direction(&mut t, &d[..p - 1], None).is_err());
    assert!(r.apply_direction(&mut t, &d, Some(&mut vel[..3])).is_err());
}
