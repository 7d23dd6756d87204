//! The core's one-thread IEnK step (`Resampled::step`, what firmware calls) against a second
//! implementation: `ienk-cli`'s trainer, which runs the same phases split over threads and
//! composes them itself. Both must move theta identically, bit for bit, on every setting; and
//! the step must refuse what it cannot use without touching theta.

mod common;

use common::TestRng;
use ienk::batch::Batch;
use ienk::ensemble::perturb::Perturbations;
use ienk::ensemble::resampled::{Form, NonFiniteCoefficient, Resampled, Stabiliser};
use ienk::ensemble::step::{StepBuffers, StepError};
use ienk::idx::{IMAGE_PIXELS, Split};
use ienk::mlp::{Layout, MlpError, pixels_to_unit};
use ienk::normal::Normal;
use ienk::seeds::{Stream, perturbation_seed, rng};
use ienk_cli::ensemble::{EnsembleConfig, IenkOptimizer};
use ienk_cli::optimizer::Optimizer;
use ienk_cli::train::EnsembleSettings;

const HIDDEN: usize = 7;
const SEED: u64 = 5;

/// IDX files of `count` MNIST-like images: about a fifth of the pixels non-zero, in a blob
/// that moves from image to image, so that batches leave different columns at zero.
fn idx_files(count: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = TestRng::new(17);
    let mut images = [0x0803u32, count as u32, 28, 28]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>();
    let mut labels = [0x0801u32, count as u32]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>();
    for _ in 0..count {
        let (cr, cc) = (6 + rng.below(16), 6 + rng.below(16));
        for r in 0..28usize {
            for c in 0..28usize {
                let near = r.abs_diff(cr) < 6 && c.abs_diff(cc) < 5;
                let v = if near && rng.uniform() > -0.6 {
                    1 + rng.below(255)
                } else {
                    0
                };
                images.push(v as u8);
            }
        }
        labels.push(rng.below(10) as u8);
    }
    (images, labels)
}

/// One setting of both implementations.
#[derive(Clone, Copy)]
struct Setting {
    members: usize,
    batch: usize,
    threads: usize,
    form: Form,
    rank: usize,
    antithetic: bool,
    momentum: f32,
    normalize: bool,
    stabiliser: Stabiliser,
    lr: f32,
}

const BASE: Setting = Setting {
    members: 10,
    batch: 1,
    threads: 2,
    form: Form::Thesis,
    rank: 0,
    antithetic: false,
    momentum: 0.0,
    normalize: false,
    stabiliser: Stabiliser {
        center: false,
        clip: None,
    },
    lr: 0.5,
};

/// The core's rule for a setting, seeded as `ienk-cli train --seed SEED` seeds it.
fn rule(s: &Setting) -> Resampled {
    let layout = Layout::mnist(HIDDEN);
    let [s1, s2] = layout.glorot_std();
    Resampled {
        perturb: Perturbations {
            layout,
            std: [s1, s2],
            rank: s.rank,
            antithetic: s.antithetic,
            seed: perturbation_seed(SEED),
        },
        members: s.members,
        form: s.form,
        lr: s.lr,
        momentum: s.momentum,
        normalize: s.normalize,
    }
}

/// The CLI's trainer for a setting.
fn cli_optimizer(s: &Setting) -> IenkOptimizer {
    let cfg = EnsembleConfig {
        members: s.members,
        sigma_scale: 1.0,
        threads: s.threads,
        batch: s.batch,
        seed: SEED,
    };
    let settings = EnsembleSettings {
        particles: s.members,
        form: s.form,
        antithetic: s.antithetic,
        rank: s.rank,
        center: s.stabiliser.center,
        momentum: s.momentum,
        normalize: s.normalize,
        clip: s.stabiliser.clip.map(|c| c as f32),
        ..EnsembleSettings::default()
    };
    IenkOptimizer::new(Layout::mnist(HIDDEN), cfg, &settings, s.lr).unwrap()
}

fn glorot_theta() -> Vec<f32> {
    let layout = Layout::mnist(HIDDEN);
    let mut theta = vec![0f32; layout.num_params()];
    layout
        .init_glorot(&mut theta, &Normal::new(), &mut rng(SEED, Stream::Init))
        .unwrap();
    theta
}

/// Runs `steps` steps of both on consecutive batches; asserts the same theta (bits) and the same
/// batch statistics after each.
fn assert_same_steps(s: &Setting, steps: usize) {
    let (images, labels) = idx_files(s.batch * steps);
    let split = Split::parse(&images, &labels).unwrap();
    let r = rule(s);
    let layout = r.perturb.layout;
    let normal = Normal::new();
    let mut cli = cli_optimizer(s);
    let (mut theta_cli, mut theta_core) = (glorot_theta(), glorot_theta());
    let mut velocity = (s.momentum != 0.0).then(|| vec![0f32; layout.num_params()]);
    let mut work = vec![0f32; r.step_workspace_len(s.batch)];
    let mut columns = vec![0u32; layout.inputs];
    let mut coefficients = vec![0f64; s.members];
    let mut x = vec![0f32; s.batch * IMAGE_PIXELS];
    let indices: Vec<u32> = (0..(s.batch * steps) as u32).collect();
    for (t, idx) in indices.chunks(s.batch).enumerate() {
        let batch = Batch::new(split, idx).unwrap();
        let want = cli.step(&mut theta_cli, &batch).unwrap();
        let y: Vec<u8> = idx.iter().map(|&i| split.label(i as usize).unwrap()).collect();
        for (row, &i) in x.chunks_exact_mut(IMAGE_PIXELS).zip(idx) {
            pixels_to_unit(split.image(i as usize).unwrap(), row);
        }
        let buffers = StepBuffers {
            work: &mut work,
            columns: &mut columns,
            coefficients: &mut coefficients,
        };
        let got = r
            .step(
                &normal,
                s.stabiliser,
                &mut theta_core,
                velocity.as_deref_mut(),
                &x,
                &y,
                t as u64,
                buffers,
            )
            .unwrap();
        assert_eq!(
            (got.loss_sum, got.correct, got.count),
            (want.loss_sum, want.correct, want.count)
        );
        let differ = theta_cli
            .iter()
            .zip(&theta_core)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "step {t}: {differ} parameters differ");
    }
    // The steps did move theta.
    assert_ne!(theta_core, glorot_theta());
}

#[test]
fn the_thesis_scheme_one_example_per_step() {
    assert_same_steps(&BASE, 6);
}

#[test]
fn batches_with_antithetic_pairs_centred_and_clipped_coefficients() {
    let s = Setting {
        members: 8,
        batch: 5,
        threads: 3,
        form: Form::Logit,
        antithetic: true,
        stabiliser: Stabiliser {
            center: true,
            // A limit that is the same in f32 (the CLI's flag) and f64.
            clip: Some(0.0625),
        },
        ..BASE
    };
    assert_same_steps(&s, 5);
}

#[test]
fn momentum_and_per_layer_normalisation() {
    let s = Setting {
        members: 7,
        batch: 3,
        momentum: 0.9,
        normalize: true,
        lr: 0.01,
        form: Form::Logit,
        ..BASE
    };
    assert_same_steps(&s, 5);
}

#[test]
fn low_rank_members_over_several_chunks() {
    let s = Setting {
        members: 19,
        batch: 4,
        threads: 2,
        rank: 2,
        form: Form::Logit,
        momentum: 0.5,
        stabiliser: Stabiliser {
            center: true,
            clip: Some(0.0625),
        },
        ..BASE
    };
    assert_same_steps(&s, 4);
}

/// A step on one synthetic example with buffers for `batch`, returning the result and theta.
fn refused(
    s: &Setting,
    theta: &mut [f32],
    velocity: Option<&mut [f32]>,
    work_len: usize,
    columns_len: usize,
) -> Result<(), StepError> {
    let r = rule(s);
    let mut work = vec![0f32; work_len];
    let mut columns = vec![0u32; columns_len];
    let mut coefficients = vec![0f64; s.members];
    let x: Vec<f32> = (0..IMAGE_PIXELS).map(|j| (j % 3) as f32 * 0.5).collect();
    let buffers = StepBuffers {
        work: &mut work,
        columns: &mut columns,
        coefficients: &mut coefficients,
    };
    r.step(
        &Normal::new(),
        s.stabiliser,
        theta,
        velocity,
        &x,
        &[3],
        0,
        buffers,
    )
    .map(|_| ())
}

#[test]
fn refusals_leave_theta_untouched() {
    let r = rule(&BASE);
    let need = r.step_workspace_len(1);
    let inputs = r.perturb.layout.inputs;
    let start = glorot_theta();
    let mut theta = start.clone();
    let short = refused(&BASE, &mut theta, None, need - 1, inputs);
    assert_eq!(
        short,
        Err(StepError::Mlp(MlpError::Length {
            what: "step workspace",
            expected: need,
            found: need - 1
        }))
    );
    let no_columns = refused(&BASE, &mut theta, None, need, inputs - 1);
    assert!(
        matches!(no_columns, Err(StepError::Mlp(MlpError::Length { .. }))),
        "{no_columns:?}"
    );
    let heavy = Setting {
        momentum: 0.9,
        ..BASE
    };
    let no_velocity = refused(&heavy, &mut theta, None, need, inputs);
    assert!(
        matches!(
            no_velocity,
            Err(StepError::Mlp(MlpError::Length { what: "velocity", .. }))
        ),
        "{no_velocity:?}"
    );
    assert_eq!(theta, start);

    // A NaN weight of the second layer reaches every member's coefficient.
    let p = theta.len();
    theta[p - 11] = f32::NAN;
    let before: Vec<u32> = theta.iter().map(|v| v.to_bits()).collect();
    let nan = refused(&BASE, &mut theta, None, need, inputs);
    assert!(
        matches!(nan, Err(StepError::Diverged(NonFiniteCoefficient { member: 0, value })) if value.is_nan()),
        "{nan:?}"
    );
    assert_eq!(theta.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), before);

    // A larger workspace than needed is fine.
    let mut theta = start.clone();
    refused(&BASE, &mut theta, None, need + 100, inputs + 3).unwrap();
    assert_ne!(theta, start);
}
