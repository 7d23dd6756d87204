//! The MLP's forward and backward against independent f64 references: naive loops for the
//! forward, central finite differences of an f64 loss for every parameter of the backward.

mod common;

use common::TestRng;
use ienk::loss::{cross_entropy, cross_entropy_grad};
use ienk::mlp::Layout;

/// Mean cross-entropy of the network in f64, by naive loops (the reference).
fn loss_f64(layout: &Layout, theta: &[f64], x: &[f32], labels: &[u8]) -> f64 {
    let (i_n, h_n, o_n) = (layout.inputs, layout.hidden, layout.outputs);
    let [w1, b1, w2, b2] = layout.ranges();
    let mut total = 0.0;
    for (b, &y) in labels.iter().enumerate() {
        let xb = &x[b * i_n..(b + 1) * i_n];
        let h: Vec<f64> = (0..h_n)
            .map(|j| {
                let a = theta[b1.start + j]
                    + (0..i_n)
                        .map(|i| theta[w1.start + j * i_n + i] * f64::from(xb[i]))
                        .sum::<f64>();
                a.max(0.0)
            })
            .collect();
        let z: Vec<f64> = (0..o_n)
            .map(|k| {
                theta[b2.start + k]
                    + (0..h_n)
                        .map(|j| theta[w2.start + k * h_n + j] * h[j])
                        .sum::<f64>()
            })
            .collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += lse - z[usize::from(y)];
    }
    total / labels.len() as f64
}

fn setup(layout: &Layout, batch: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
    let mut rng = TestRng::new(seed);
    let theta = rng.vec(layout.num_params());
    let x = rng.vec(batch * layout.inputs);
    let labels = (0..batch).map(|_| rng.below(layout.outputs) as u8).collect();
    (theta, x, labels)
}

#[test]
fn backward_matches_central_differences_for_every_parameter() {
    let layout = Layout {
        inputs: 7,
        hidden: 5,
        outputs: 3,
    };
    let batch = 6;
    let (theta, x, labels) = setup(&layout, batch, 21);
    let mut hidden = vec![0f32; batch * 5];
    let mut logits = vec![0f32; batch * 3];
    let mut dlogits = vec![0f32; batch * 3];
    let mut dhidden = vec![0f32; batch * 5];
    let mut grad = vec![0f32; layout.num_params()];
    let mut scratch = vec![0f32; layout.gemm_scratch_len(batch)];
    layout
        .forward(&theta, &x, &mut hidden, &mut logits, &mut scratch)
        .unwrap();
    cross_entropy_grad(&logits, 3, &labels, &mut dlogits).unwrap();
    layout
        .backward(
            &theta,
            &x,
            &hidden,
            &dlogits,
            &mut dhidden,
            &mut grad,
            &mut scratch,
        )
        .unwrap();

    let theta64: Vec<f64> = theta.iter().map(|&t| f64::from(t)).collect();
    let step = 1e-6;
    for p in 0..layout.num_params() {
        let mut plus = theta64.clone();
        let mut minus = theta64.clone();
        plus[p] += step;
        minus[p] -= step;
        let fd =
            (loss_f64(&layout, &plus, &x, &labels) - loss_f64(&layout, &minus, &x, &labels)) / (2.0 * step);
        let got = f64::from(grad[p]);
        assert!(
            (got - fd).abs() <= 1e-5 + 1e-4 * fd.abs(),
            "parameter {p}: backward {got}, finite difference {fd}"
        );
    }
}

#[test]
fn forward_loss_matches_naive_f64_network() {
    let layout = Layout {
        inputs: 13,
        hidden: 11,
        outputs: 4,
    };
    let batch = 9;
    let (theta, x, labels) = setup(&layout, batch, 5);
    let mut hidden = vec![0f32; batch * 11];
    let mut logits = vec![0f32; batch * 4];
    let mut scratch = vec![0f32; layout.gemm_scratch_len(batch)];
    layout
        .forward(&theta, &x, &mut hidden, &mut logits, &mut scratch)
        .unwrap();
    let got = cross_entropy(&logits, 4, &labels).unwrap().mean_loss();
    let theta64: Vec<f64> = theta.iter().map(|&t| f64::from(t)).collect();
    let want = loss_f64(&layout, &theta64, &x, &labels);
    assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "{got} vs {want}");
}

#[test]
fn glorot_scales_and_init_match_the_thesis() {
    let layout = Layout::mnist(128);
    assert_eq!(layout.num_params(), 101_770);
    let [s1, s2] = layout.glorot_std();
    assert!((s1 - 0.04683).abs() < 1e-5 && (s2 - 0.12039).abs() < 1e-5);
    let mut theta = vec![1f32; layout.num_params()];
    let normal = ienk::normal::Normal::new();
    let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand_core::SeedableRng>::seed_from_u64(0);
    layout.init_glorot(&mut theta, &normal, &mut rng).unwrap();
    let [w1, b1, w2, b2] = layout.ranges();
    let std = |s: &[f32]| (s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    assert!((std(&theta[w1]) - 0.04683).abs() < 0.001);
    assert!((std(&theta[w2]) - 0.12039).abs() < 0.005);
    assert!(theta[b1].iter().chain(&theta[b2]).all(|&b| b == 0.0));
}

#[test]
fn wrong_buffer_lengths_are_errors() {
    let layout = Layout {
        inputs: 3,
        hidden: 2,
        outputs: 2,
    };
    let theta = vec![0f32; layout.num_params()];
    let mut s = vec![0f32; layout.gemm_scratch_len(2)];
    let (mut h, mut z) = (vec![0f32; 4], vec![0f32; 3]);
    assert!(layout.forward(&theta, &[0.0; 6], &mut h, &mut z, &mut s).is_err());
    assert!(
        layout
            .forward(&theta[1..], &[0.0; 6], &mut h, &mut [0.0; 4], &mut s)
            .is_err()
    );
}
