//! The core's IEnK step on several threads against the same step on one thread
//! (`Resampled::step`, what firmware calls): `Resampled::step_on` on scoped threads (with the
//! perturbations stored or regenerated) and `ienk-cli`'s trainer on its pool must move theta
//! identically, bit for bit, on every setting; the gradient estimate must be the move's
//! direction; and the step must refuse what it cannot use without touching theta.

mod common;

use common::{ScopedThreads, TestRng, bits};
use ienk::batch::Batch;
use ienk::ensemble::low_rank_update::SUM_DRAWS_MAX;
use ienk::ensemble::perturb::{BLOCK, Perturbations};
use ienk::ensemble::resampled::{Form, NonFiniteCoefficient, Resampled, Stabiliser};
use ienk::ensemble::step::{Move, StepBuffers, StepError};
use ienk::idx::{IMAGE_PIXELS, Split};
use ienk::loss::BatchStats;
use ienk::mlp::{Layout, MlpError, pixels_to_unit};
use ienk::normal::Normal;
use ienk::seeds::{Stream, perturbation_seed, rng};
use ienk::workers::{OneThread, Workers};
use ienk_cli::ensemble::{EnsembleConfig, IenkOptimizer};
use ienk_cli::error::CliError;
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
    /// Full rank: the threaded runs store the perturbations (`--store-perturbations`).
    store: bool,
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
    store: false,
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
        store: s.store,
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

/// Buffers of one run of the core's step.
struct CoreRun {
    theta: Vec<f32>,
    velocity: Option<Vec<f32>>,
    work: Vec<f32>,
    columns: Vec<u32>,
    coefficients: Vec<f64>,
    stored: Option<Vec<f32>>,
    direction: Option<Vec<f32>>,
}

impl CoreRun {
    /// Buffers for `workers` workers, the workspace (and with `direction`, room for the
    /// direction, beside which the workspace may be smaller) sized for batches with at most
    /// `active` non-zero input columns.
    fn new(r: &Resampled, s: &Setting, workers: usize, active: usize, store: bool, direction: bool) -> Self {
        let layout = r.perturb.layout;
        let p = layout.num_params();
        let work_len = match direction {
            true => r.step_workspace_len_with_room_for(s.batch, active, workers),
            false => r.step_workspace_len_for(s.batch, active, workers),
        };
        CoreRun {
            theta: glorot_theta(),
            velocity: (s.momentum != 0.0).then(|| vec![0f32; p]),
            work: vec![0f32; work_len],
            columns: vec![0u32; layout.inputs],
            coefficients: vec![0f64; s.members],
            stored: store.then(|| vec![0f32; s.members * p]),
            direction: direction.then(|| vec![0f32; r.step_direction_len_for(active)]),
        }
    }

    fn buffers(&mut self) -> (&mut [f32], Move<'_>, StepBuffers<'_>) {
        let buffers = StepBuffers {
            work: &mut self.work,
            columns: &mut self.columns,
            coefficients: &mut self.coefficients,
            stored: self.stored.as_deref_mut(),
            direction: self.direction.as_deref_mut(),
        };
        let target = Move::Theta {
            velocity: self.velocity.as_deref_mut(),
        };
        (&mut self.theta, target, buffers)
    }
}

/// Runs `steps` steps on consecutive batches three ways: the core's step on one thread (its
/// workspace only as large as the batches' active input columns need), on `s.threads` scoped
/// threads (storing the perturbations when `s.store`), and the CLI's trainer; asserts the same
/// theta (bits) and the same batch statistics after each. Full rank without centring, also with
/// room for the direction, which the first worker's members sum as they go: on one thread and
/// on `s.threads`.
fn assert_same_steps(s: &Setting, steps: usize) {
    let (images, labels) = idx_files(s.batch * steps);
    let split = Split::parse(&images, &labels).unwrap();
    // The most input columns any batch has non-zero somewhere.
    let active = split
        .pixels()
        .chunks(s.batch * IMAGE_PIXELS)
        .map(|batch| {
            (0..IMAGE_PIXELS)
                .filter(|&j| batch.iter().skip(j).step_by(IMAGE_PIXELS).any(|&v| v != 0))
                .count()
        })
        .max()
        .unwrap();
    assert!(active < IMAGE_PIXELS, "no inactive column to leave out");
    let r = rule(s);
    let normal = Normal::new();
    let mut cli = cli_optimizer(s);
    let mut theta_cli = glorot_theta();
    let mut one = CoreRun::new(&r, s, 1, active, false, false);
    let mut threaded = CoreRun::new(&r, s, s.threads, IMAGE_PIXELS, s.store, false);
    let sums = s.rank == 0 && !s.stabiliser.center;
    // Room for the direction and, past it, for none, one or every later member's perturbation
    // (each as large as the direction; more of them fit in a batch with fewer active inputs),
    // which the later workers' members keep for the update.
    let room = r.step_direction_len_for(active);
    let mut summing: Vec<(usize, CoreRun)> = [1, s.threads]
        .into_iter()
        .flat_map(|w| [(w, 1), (w, 2), (w, s.members + 1)])
        .filter(|_| sums)
        .map(|(w, rooms)| {
            let mut run = CoreRun::new(&r, s, w, active, false, true);
            run.direction = Some(vec![0f32; rooms * room]);
            (w, run)
        })
        .collect();
    let mut x = vec![0f32; s.batch * IMAGE_PIXELS];
    let indices: Vec<u32> = (0..(s.batch * steps) as u32).collect();
    for (t, idx) in indices.chunks(s.batch).enumerate() {
        let batch = Batch::new(split, idx).unwrap();
        let want = cli.step(&mut theta_cli, &batch).unwrap();
        let y: Vec<u8> = idx.iter().map(|&i| split.label(i as usize).unwrap()).collect();
        for (row, &i) in x.chunks_exact_mut(IMAGE_PIXELS).zip(idx) {
            pixels_to_unit(split.image(i as usize).unwrap(), row);
        }
        let (theta, Move::Theta { velocity }, buffers) = one.buffers() else {
            unreachable!("CoreRun moves theta")
        };
        let got = r
            .step(&normal, s.stabiliser, theta, velocity, &x, &y, t as u64, buffers)
            .unwrap();
        // `step_on` on `workers` scoped threads.
        let on = |run: &mut CoreRun, workers: usize| {
            let (theta, target, buffers) = run.buffers();
            let threads = ScopedThreads(workers);
            r.step_on(
                &threads,
                &normal,
                s.stabiliser,
                theta,
                target,
                &x,
                &y,
                t as u64,
                buffers,
            )
            .unwrap()
        };
        let on_threads = on(&mut threaded, s.threads);
        for (workers, run) in &mut summing {
            let stats = on(run, *workers);
            assert_eq!((stats.loss_sum, stats.correct), (want.loss_sum, want.correct));
            assert_eq!(
                bits(&run.theta),
                bits(&one.theta),
                "step {t}: direction summed by the members on {workers} workers"
            );
        }
        for stats in [got, on_threads] {
            assert_eq!(
                (stats.loss_sum, stats.correct, stats.count),
                (want.loss_sum, want.correct, want.count)
            );
        }
        assert_eq!(bits(&one.theta), bits(&theta_cli), "step {t}: the CLI's trainer");
        assert_eq!(bits(&one.theta), bits(&threaded.theta), "step {t}: step_on");
    }
    // The steps did move theta.
    assert_ne!(one.theta, glorot_theta());
}

#[test]
fn the_thesis_scheme_one_example_per_step() {
    assert_same_steps(&BASE, 6);
}

#[test]
fn the_thesis_scheme_with_clipped_coefficients_on_three_threads() {
    // Not centred, not stored: the CLI's trainer gives the step room for the direction, and
    // the first of three workers sums the shares of members 0 to 3 (clipped) as it goes.
    let s = Setting {
        threads: 3,
        stabiliser: Stabiliser {
            center: false,
            clip: Some(0.0625),
        },
        ..BASE
    };
    assert_same_steps(&s, 6);
}

#[test]
fn antithetic_pairs_on_one_thread() {
    // One worker: the CLI's trainer and the summing run sum the whole direction in the member
    // phase, and the update draws no member's perturbation again.
    let s = Setting {
        members: 8,
        batch: 2,
        threads: 1,
        form: Form::Logit,
        antithetic: true,
        ..BASE
    };
    assert_same_steps(&s, 4);
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
fn low_rank_rank_two_with_momentum_and_stabilisers() {
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

#[test]
fn stored_perturbations_on_more_threads_than_members() {
    let s = Setting {
        members: 5,
        threads: 7,
        store: true,
        ..BASE
    };
    assert_same_steps(&s, 4);
}

#[test]
fn low_rank_antithetic_pairs_over_several_chunks_and_threads() {
    // 300 members: three chunks of the member phase; 150 draws over three threads.
    let s = Setting {
        members: 300,
        batch: 2,
        threads: 3,
        rank: 1,
        antithetic: true,
        form: Form::Logit,
        lr: 0.05,
        ..BASE
    };
    assert_same_steps(&s, 3);
}

#[test]
fn the_gradient_estimate_is_the_direction_of_the_normalised_move() {
    let (images, labels) = idx_files(3);
    let split = Split::parse(&images, &labels).unwrap();
    let y: Vec<u8> = (0..3).map(|i| split.label(i).unwrap()).collect();
    let mut x = vec![0f32; 3 * IMAGE_PIXELS];
    for (i, row) in x.chunks_exact_mut(IMAGE_PIXELS).enumerate() {
        pixels_to_unit(split.image(i).unwrap(), row);
    }
    let normal = Normal::new();
    for (rank, antithetic, form) in [
        (0, false, Form::Logit),
        (0, true, Form::Thesis),
        (1, true, Form::Logit),
        (2, false, Form::Thesis),
    ] {
        let s = Setting {
            members: 9,
            batch: 3,
            threads: 2,
            rank,
            antithetic,
            form,
            normalize: true,
            lr: 0.01,
            ..BASE
        };
        let r = rule(&s);
        let threads = ScopedThreads(2);
        // theta -= lr d / (M (c s_l)^2): the plain move, normalised.
        let mut moved = CoreRun::new(&r, &s, 2, IMAGE_PIXELS, false, false);
        let (theta, target, buffers) = moved.buffers();
        r.step_on(&threads, &normal, s.stabiliser, theta, target, &x, &y, 4, buffers)
            .unwrap();
        // The same step writing the estimate d / (M (c s_l)^2), theta left as it is; at full
        // rank also with room for the direction, which must give the same estimate.
        let estimate_with = |room: bool| {
            let mut estimating = CoreRun::new(&r, &s, 2, IMAGE_PIXELS, false, room);
            let mut estimate = vec![f32::NAN; estimating.theta.len()];
            let (theta, _, buffers) = estimating.buffers();
            let target = Move::Estimate {
                estimate: &mut estimate,
            };
            r.step_on(&threads, &normal, s.stabiliser, theta, target, &x, &y, 4, buffers)
                .unwrap();
            assert_eq!(bits(&estimating.theta), bits(&glorot_theta()), "rank {rank}");
            estimate
        };
        let estimate = estimate_with(false);
        if rank == 0 {
            assert_eq!(bits(&estimate_with(true)), bits(&estimate), "room, rank {rank}");
        }
        let start = glorot_theta();
        let mut largest = 0f32;
        for (k, ((&e, &t0), &t1)) in estimate.iter().zip(&start).zip(&moved.theta).enumerate() {
            let want = (t0 - t1) / s.lr;
            // theta's rounding, about 1e-8, divided by the rate.
            assert!(
                (e - want).abs() <= 1e-5 + 1e-4 * want.abs(),
                "rank {rank}, parameter {k}: estimate {e}, move / lr {want}"
            );
            largest = largest.max(e.abs());
        }
        assert!(
            largest > 1e-3,
            "rank {rank}: the estimate is about zero ({largest})"
        );
    }
}

/// `step_on` on the refusals' example (non-zero in the input columns j with j % 3 != 0,
/// label 3) at step 0.
fn step_on_the_example(
    r: &Resampled,
    workers: &impl Workers,
    stabiliser: Stabiliser,
    theta: &mut [f32],
    target: Move<'_>,
    buffers: StepBuffers<'_>,
) -> Result<BatchStats, StepError> {
    let x: Vec<f32> = (0..IMAGE_PIXELS).map(|j| (j % 3) as f32 * 0.5).collect();
    r.step_on(
        workers,
        &Normal::new(),
        stabiliser,
        theta,
        target,
        &x,
        &[3],
        0,
        buffers,
    )
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
        stored: None,
        direction: None,
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
    let inputs = r.perturb.layout.inputs;
    // `refused`'s example is non-zero in the columns j with j % 3 != 0: the full-rank step needs
    // room for those only.
    let active = (0..inputs).filter(|j| j % 3 != 0).count();
    let need = r.step_workspace_len_for(1, active, 1);
    assert!(need < r.step_workspace_len(1, 1));
    assert!(need > r.step_workspace_len_for(1, active - 1, 1));
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

#[test]
fn stored_perturbations_at_low_rank_and_a_short_estimate_are_refused() {
    let low_rank = Setting { rank: 1, ..BASE };
    let r = rule(&low_rank);
    let mut run = CoreRun::new(&r, &low_rank, 1, IMAGE_PIXELS, true, false);
    let (theta, target, buffers) = run.buffers();
    let stored = step_on_the_example(&r, &OneThread, BASE.stabiliser, theta, target, buffers);
    assert!(
        matches!(stored, Err(StepError::Mlp(MlpError::Length { what, expected: 0, .. })) if what.contains("low rank")),
        "{stored:?}"
    );
    let mut run = CoreRun::new(&r, &low_rank, 1, IMAGE_PIXELS, false, false);
    let mut estimate = vec![0f32; run.theta.len() - 1];
    let (theta, _, buffers) = run.buffers();
    let target = Move::Estimate {
        estimate: &mut estimate,
    };
    let short = step_on_the_example(&r, &OneThread, BASE.stabiliser, theta, target, buffers);
    assert!(
        matches!(
            short,
            Err(StepError::Mlp(MlpError::Length {
                what: "gradient estimate",
                ..
            }))
        ),
        "{short:?}"
    );
    assert_eq!(run.theta, glorot_theta());
}

#[test]
fn room_for_the_direction_is_refused_where_the_members_cannot_sum_it() {
    let centred = Stabiliser {
        center: true,
        clip: None,
    };
    let cases = [
        (
            Setting { rank: 1, ..BASE },
            2,
            false,
            BASE.stabiliser,
            "one worker",
        ),
        (Setting { rank: 2, ..BASE }, 1, false, centred, "centred"),
        (BASE, 1, false, centred, "centred"),
        (BASE, 1, true, BASE.stabiliser, "stored"),
    ];
    for (s, workers, store, stabiliser, why) in cases {
        let r = rule(&s);
        let mut run = CoreRun::new(&r, &s, workers, IMAGE_PIXELS, store, true);
        let (theta, target, buffers) = run.buffers();
        let got = step_on_the_example(&r, &ScopedThreads(workers), stabiliser, theta, target, buffers);
        assert!(
            matches!(got, Err(StepError::NoDirectionRoom(text)) if text.contains(why)),
            "{why}: {got:?}"
        );
        assert_eq!(run.theta, glorot_theta(), "{why}");
    }
    // Room one float short of the restricted network.
    let r = rule(&BASE);
    let active = (0..IMAGE_PIXELS).filter(|j| j % 3 != 0).count();
    let mut run = CoreRun::new(&r, &BASE, 1, IMAGE_PIXELS, false, true);
    let need = r.step_direction_len_for(active);
    assert_eq!(need, active * HIDDEN + HIDDEN + HIDDEN * 10 + 10);
    run.direction = Some(vec![0f32; need - 1]);
    assert_one_float_short(&r, &mut run, "direction", need);
}

/// Asserts that a one-thread step on the synthetic example with `run`'s buffers is refused for
/// `what`, one float short of `need`, and leaves theta at its start.
fn assert_one_float_short(r: &Resampled, run: &mut CoreRun, what: &'static str, need: usize) {
    let (theta, target, buffers) = run.buffers();
    let short = step_on_the_example(r, &OneThread, BASE.stabiliser, theta, target, buffers);
    assert_eq!(
        short,
        Err(StepError::Mlp(MlpError::Length {
            what,
            expected: need,
            found: need - 1
        }))
    );
    assert_eq!(run.theta, glorot_theta(), "{what}");
}

#[test]
fn room_for_the_direction_spares_one_worker_the_update_block() {
    let r = rule(&BASE);
    let active = (0..IMAGE_PIXELS).filter(|j| j % 3 != 0).count();
    // One worker's members sum the whole direction: the update redraws no member, and needs no
    // perturbation block. Several workers' update redraws the others' members a block at a
    // time.
    let without = r.step_workspace_len_for(1, active, 1);
    let with_room = r.step_workspace_len_with_room_for(1, active, 1);
    assert_eq!(without - with_room, BLOCK);
    for workers in [2, 3] {
        assert_eq!(
            r.step_workspace_len_with_room_for(1, active, workers),
            r.step_workspace_len_for(1, active, workers)
        );
    }
    // The smaller workspace is enough, and one float fewer is refused before anything moves.
    let mut run = CoreRun::new(&r, &BASE, 1, active, false, true);
    assert_eq!(run.work.len(), with_room);
    run.work.pop();
    assert_one_float_short(&r, &mut run, "step workspace", with_room);
    run.work.push(0.0);
    let (theta, target, buffers) = run.buffers();
    step_on_the_example(&r, &OneThread, BASE.stabiliser, theta, target, buffers).unwrap();
    assert_ne!(run.theta, glorot_theta());
    let mut drawn_again = CoreRun::new(&r, &BASE, 1, active, false, false);
    let (theta, target, buffers) = drawn_again.buffers();
    step_on_the_example(&r, &OneThread, BASE.stabiliser, theta, target, buffers).unwrap();
    assert_eq!(bits(&run.theta), bits(&drawn_again.theta));
}

/// `s`'s batches of `idx_files`, as pixels in [0, 1] and labels.
fn batches(s: &Setting, steps: usize) -> Vec<(Vec<f32>, Vec<u8>)> {
    let (images, labels) = idx_files(s.batch * steps);
    let split = Split::parse(&images, &labels).unwrap();
    (0..steps)
        .map(|t| {
            let idx = t * s.batch..(t + 1) * s.batch;
            let mut x = vec![0f32; s.batch * IMAGE_PIXELS];
            for (row, i) in x.chunks_exact_mut(IMAGE_PIXELS).zip(idx.clone()) {
                pixels_to_unit(split.image(i).unwrap(), row);
            }
            (x, idx.map(|i| split.label(i).unwrap()).collect())
        })
        .collect()
}

/// `sum_k c_k delta_k` at step `t` in f64, each member's low-rank factors expanded into its
/// dense perturbation (the reference of a low-rank direction).
fn expanded_direction(r: &Resampled, coeffs: &[f64], t: u64) -> Vec<f64> {
    let (normal, p) = (Normal::new(), r.perturb.layout.num_params());
    let mut want = vec![0f64; p];
    let mut factors = vec![0f32; r.perturb.factor_len()];
    let mut delta = vec![0f32; p];
    for (k, &c) in coeffs.iter().enumerate() {
        r.perturb.fill_factors(&normal, t, k, &mut factors);
        r.perturb.expand_factors(&factors, &mut delta);
        want.iter_mut()
            .zip(&delta)
            .for_each(|(w, &d)| *w += c * f64::from(d));
    }
    want
}

#[test]
fn low_rank_members_sum_the_direction_draw_by_draw_in_its_room() {
    let clipped = Stabiliser {
        center: false,
        clip: Some(0.05),
    };
    // Antithetic pairs and an unpaired last draw, ranks 1 to 3, both forms, a clip that bites,
    // momentum and per-layer normalisation, the logit form without pairs.
    let settings = [
        Setting {
            members: 6,
            batch: 3,
            rank: 1,
            antithetic: true,
            form: Form::Logit,
            ..BASE
        },
        Setting {
            members: 5,
            batch: 2,
            rank: 2,
            form: Form::Thesis,
            stabiliser: clipped,
            ..BASE
        },
        Setting {
            members: 7,
            batch: 1,
            rank: 3,
            antithetic: true,
            form: Form::Logit,
            normalize: true,
            lr: 0.01,
            ..BASE
        },
        Setting {
            members: 4,
            batch: 2,
            rank: 1,
            momentum: 0.9,
            ..BASE
        },
        // The logit form without pairs: the matrix product's member phase computes two members
        // at a time, the room's one.
        Setting {
            members: 5,
            batch: 3,
            rank: 2,
            form: Form::Logit,
            ..BASE
        },
    ];
    let normal = Normal::new();
    for s in settings {
        let r = rule(&s);
        let mut matrix = CoreRun::new(&r, &s, 1, IMAGE_PIXELS, false, false);
        let mut summed = CoreRun::new(&r, &s, 1, IMAGE_PIXELS, false, true);
        assert_eq!(
            summed.direction.as_ref().unwrap().len(),
            r.perturb.layout.num_params()
        );
        // Larger workspaces sum 2, 3 and all the draws at a time (the last also past them
        // all, and a float short of 3 sums 2): the same bits as one at a time.
        let draws = r.perturb.draws(s.members);
        let mut at_once: Vec<CoreRun> = [
            r.summing_workspace_len(s.batch, 2),
            r.summing_workspace_len(s.batch, 3) - 1,
            r.summing_workspace_len(s.batch, 3),
            r.summing_workspace_len(s.batch, draws) + 1000,
        ]
        .into_iter()
        .zip([2, 2, 3, draws.min(SUM_DRAWS_MAX)])
        .map(|(len, k)| {
            assert_eq!(r.draws_summed_in(s.batch, len), k, "{len} floats");
            let mut run = CoreRun::new(&r, &s, 1, IMAGE_PIXELS, false, true);
            run.work = vec![0f32; len];
            run
        })
        .collect();
        let mut clips = 0;
        for (t, (x, y)) in batches(&s, 3).iter().enumerate() {
            // Both from the same theta and velocity: the matrix product's.
            summed.theta.clone_from(&matrix.theta);
            summed.velocity.clone_from(&matrix.velocity);
            let before = matrix.theta.clone();
            for run in at_once.iter_mut() {
                run.theta.clone_from(&matrix.theta);
                run.velocity.clone_from(&matrix.velocity);
            }
            for run in [&mut matrix, &mut summed].into_iter().chain(at_once.iter_mut()) {
                let (theta, Move::Theta { velocity }, buffers) = run.buffers() else {
                    unreachable!("CoreRun moves theta")
                };
                r.step(&normal, s.stabiliser, theta, velocity, x, y, t as u64, buffers)
                    .unwrap();
            }
            let what = format!("rank {}, step {t}", s.rank);
            let c = &summed.coefficients;
            assert_eq!(c, &matrix.coefficients, "{what}: the coefficients");
            for run in &at_once {
                let len = run.work.len();
                assert_eq!(bits(&run.theta), bits(&summed.theta), "{what}: {len} floats");
            }
            clips += c.iter().filter(|c| c.abs() == 0.05).count();
            // The move against the expanded perturbations' sum in f64 (with momentum, the
            // velocity's first step only), and against the matrix product's.
            let want = expanded_direction(&r, c, t as u64);
            let cut = r.perturb.layout.layer_ranges()[0].end;
            let steps = r.layer_steps();
            let mut largest = 0f64;
            for (j, (((&t0, &t1), &w), &m)) in before
                .iter()
                .zip(&summed.theta)
                .zip(&want)
                .zip(&matrix.theta)
                .enumerate()
            {
                let h = steps[usize::from(j >= cut)];
                if s.momentum == 0.0 || t == 0 {
                    let got = f64::from(t0 - t1) / f64::from(h);
                    assert!(
                        (got - w).abs() < 1e-5 + 1e-4 * w.abs(),
                        "{what}, parameter {j}: moved by {got} / h, expanded sum {w}"
                    );
                }
                let step = f64::from(t0 - m);
                assert!(
                    f64::from(t1 - m).abs() <= 1e-6 * (1.0 + step.abs() / f64::from(h)) * f64::from(h),
                    "{what}, parameter {j}: {t1} summed, {m} by the product"
                );
                largest = largest.max(w.abs());
            }
            assert!(largest > 1e-3, "{what}: the direction is about zero");
        }
        if s.stabiliser.clip.is_some() {
            assert!(clips > 0, "the clip never bit");
        }
    }
}

#[test]
fn low_rank_room_gives_the_gradient_estimate_of_the_matrix_product() {
    let s = Setting {
        members: 8,
        batch: 2,
        rank: 2,
        antithetic: true,
        form: Form::Logit,
        ..BASE
    };
    let r = rule(&s);
    let (x, y) = &batches(&s, 1)[0];
    let estimate_with = |room: bool| {
        let mut run = CoreRun::new(&r, &s, 1, IMAGE_PIXELS, false, room);
        let mut estimate = vec![f32::NAN; run.theta.len()];
        let (theta, _, buffers) = run.buffers();
        let target = Move::Estimate {
            estimate: &mut estimate,
        };
        r.step_on(
            &OneThread,
            &Normal::new(),
            s.stabiliser,
            theta,
            target,
            x,
            y,
            2,
            buffers,
        )
        .unwrap();
        assert_eq!(
            bits(&run.theta),
            bits(&glorot_theta()),
            "room {room}: theta moved"
        );
        (estimate, run.coefficients)
    };
    let (summed, c) = estimate_with(true);
    let (product, _) = estimate_with(false);
    // d / (M (c s_l)^2) per layer, d the expanded perturbations' sum.
    let want = expanded_direction(&r, &c, 2);
    let cut = r.perturb.layout.layer_ranges()[0].end;
    for (j, ((&got, &w), &m)) in summed.iter().zip(&want).zip(&product).enumerate() {
        let std = f64::from(r.perturb.std[usize::from(j >= cut)]);
        let w = w / (s.members as f64 * std * std);
        assert!(
            (f64::from(got) - w).abs() < 1e-4 * (1.0 + w.abs()),
            "parameter {j}: {got} against {w}"
        );
        assert!(
            (got - m).abs() <= 1e-5 * (1.0 + m.abs()),
            "parameter {j}: {got} against {m}"
        );
    }
}

#[test]
fn low_rank_room_keeps_a_workspace_that_does_not_grow_with_the_members() {
    let with_members = |members: usize| {
        let s = Setting {
            members,
            rank: 1,
            antithetic: true,
            batch: 10,
            ..BASE
        };
        let r = rule(&s);
        (
            r.step_workspace_len_with_room_for(10, IMAGE_PIXELS, 1),
            r.step_workspace_len(10, 1),
            r.step_workspace_len_with_room_for(10, IMAGE_PIXELS, 2),
            r.step_workspace_len(10, 2),
        )
    };
    let (room_10, matrix_10, _, _) = with_members(10);
    let (room_1000, matrix_1000, room_two, matrix_two) = with_members(1000);
    assert_eq!(room_10, room_1000);
    assert!(room_10 < matrix_10 && matrix_10 < matrix_1000);
    // 500 draws' factors (784 + 2 H + 10 + H + 10 floats each) are the most of it.
    assert!(matrix_1000 - room_1000 > 500 * (IMAGE_PIXELS + 3 * HIDDEN + 20) - IMAGE_PIXELS);
    // Two workers take no room at low rank: their workspace is as without.
    assert_eq!(room_two, matrix_two);

    // The smaller workspace is enough, one float fewer of it or of the room is refused before
    // anything moves, and so is the room on two workers.
    let s = Setting {
        members: 6,
        rank: 1,
        antithetic: true,
        ..BASE
    };
    let r = rule(&s);
    let mut run = CoreRun::new(&r, &s, 1, IMAGE_PIXELS, false, true);
    let need = run.work.len();
    assert_eq!(need, r.step_workspace_len_with_room_for(1, IMAGE_PIXELS, 1));
    run.work.pop();
    assert_one_float_short(&r, &mut run, "step workspace", need);
    run.work.push(0.0);
    let p = r.perturb.layout.num_params();
    run.direction = Some(vec![0f32; p - 1]);
    assert_one_float_short(&r, &mut run, "direction", p);
    run.direction = Some(vec![0f32; p]);
    // A NaN weight of the second layer reaches every coefficient: the step stops before the
    // move, the shares already summed into the room notwithstanding.
    run.theta[p - 11] = f32::NAN;
    let before = bits(&run.theta);
    let (theta, target, buffers) = run.buffers();
    let nan = step_on_the_example(&r, &OneThread, BASE.stabiliser, theta, target, buffers);
    assert!(
        matches!(nan, Err(StepError::Diverged(NonFiniteCoefficient { member: 0, value })) if value.is_nan()),
        "{nan:?}"
    );
    assert_eq!(bits(&run.theta), before);
    run.theta = glorot_theta();
    let (theta, target, buffers) = run.buffers();
    step_on_the_example(&r, &OneThread, BASE.stabiliser, theta, target, buffers).unwrap();
    assert_ne!(run.theta, glorot_theta());
}

#[test]
fn the_cli_trainer_refuses_low_memory_where_the_step_cannot_take_its_room() {
    // Full rank, or low rank on two threads.
    for (rank, threads) in [(0, 1), (1, 2)] {
        let cfg = EnsembleConfig {
            members: 10,
            sigma_scale: 1.0,
            threads,
            batch: 1,
            seed: SEED,
        };
        let settings = EnsembleSettings {
            particles: 10,
            rank,
            low_memory: true,
            ..EnsembleSettings::default()
        };
        let got = IenkOptimizer::new(Layout::mnist(HIDDEN), cfg, &settings, 0.1);
        assert!(
            matches!(&got, Err(CliError::BadInput(m)) if m.contains("--low-memory")),
            "rank {rank}, {threads} threads"
        );
    }
}
