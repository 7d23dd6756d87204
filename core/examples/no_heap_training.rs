//! Training the way firmware runs it: the thesis's IEnK (10 members, one example per update,
//! h = 0.001, the thesis's innovation with the coefficients clipped to 2) on byte slices, every
//! buffer a fixed-size array (static RAM on a device), nothing allocated, only ienk's no_std API.
//! The perturbations are regenerated from seeds, never stored, so the memory does not grow with
//! the members: the network, one step workspace (about three networks restricted to an image's
//! non-zero pixels, at most `MAX_ACTIVE` of them; reused to evaluate) and the example order.
//! The model file is streamed out 256 bytes at a time (`safetensors::write_to`), as flash pages
//! are written. Files are read and written with std only at the edges.
//!
//! ```sh
//! gunzip -k data/mnist/*.gz
//! cargo run --release -p ienk-core --example no_heap_training -- data/mnist/train-images-idx3-ubyte \
//!     data/mnist/train-labels-idx1-ubyte data/mnist/t10k-images-idx3-ubyte \
//!     data/mnist/t10k-labels-idx1-ubyte model.safetensors 60000 1 0
//! ```
//!
//! The last three arguments are the training examples used (the first N), the epochs and the
//! seed. The model is the one `ienk-cli train --optimizer ienk --form thesis --clip 2 --particles
//! 10 --batch-size 1 --lr 0.001 --limit N --epochs E --seed S` writes, parameter for parameter
//! (CI checks it): one seed fixes the initial weights, the data order and the perturbations the
//! same way in both.

mod support;

use std::io::Write;
use std::process::ExitCode;

use ienk::batch::shuffle;
use ienk::ensemble::perturb::Perturbations;
use ienk::ensemble::resampled::{Form, Resampled, Stabiliser};
use ienk::ensemble::step::StepBuffers;
use ienk::idx::{IMAGE_PIXELS, NUM_CLASSES, Split};
use ienk::loss::BatchStats;
use ienk::mlp::{Layout, pixels_to_unit};
use ienk::normal::Normal;
use ienk::safetensors::{self, WriteError};
use ienk::seeds::{Stream, perturbation_seed, rng};
use support::{EvalBuffers, correct_answers};

/// The thesis's network.
const HIDDEN: usize = 128;
const LAYOUT: Layout = Layout::mnist(HIDDEN);
const PARAMS: usize = IMAGE_PIXELS * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES;
/// The thesis's scheme: members, examples per update, step size.
const MEMBERS: usize = 10;
const BATCH: usize = 1;
const LR: f32 = 0.001;
/// Bound on each coefficient: the thesis's update stays exact otherwise (README, Results).
const CLIP: f64 = 2.0;
/// Non-zero pixels an image may have: the step works on the network restricted to them, so its
/// workspace is sized for this many (MNIST's training images have at most 351).
const MAX_ACTIVE: usize = 400;
/// Parameters of the network restricted to `MAX_ACTIVE` inputs.
const RESTRICTED: usize = MAX_ACTIVE * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES;
/// Step workspace floats reserved; checked against `step_workspace_len_for(BATCH, MAX_ACTIVE,
/// 1)`, and large enough to evaluate in.
const WORK: usize = 3 * RESTRICTED + 16 * 1024;
/// Training examples at most (MNIST's training split).
const MAX_EXAMPLES: usize = 60_000;
/// Test images per forward pass, with buffers carved from the step workspace.
const EVAL_BATCH: usize = 20;

/// The fixed buffers: on a device, one static of this type.
struct Buffers {
    theta: [f32; PARAMS],
    work: [f32; WORK],
    columns: [u32; IMAGE_PIXELS],
    coefficients: [f64; MEMBERS],
    order: [u32; MAX_EXAMPLES],
    x: [f32; BATCH * IMAGE_PIXELS],
    y: [u8; BATCH],
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        train_images,
        train_labels,
        test_images,
        test_labels,
        out,
        rest @ ..,
    ] = args.as_slice()
    else {
        eprintln!(
            "usage: no_heap_training TRAIN_IMAGES TRAIN_LABELS T10K_IMAGES T10K_LABELS (IDX, uncompressed) \
             OUT.safetensors [EXAMPLES [EPOCHS [SEED]]]"
        );
        return ExitCode::from(2);
    };
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    let number = |i: usize, name: &str, default: u64| match rest.get(i) {
        Some(s) => s.parse::<u64>().map_err(|e| format!("{name} {s:?}: {e}")),
        None => Ok(default),
    };
    // The buffers are large for a stack: a thread with room for them stands for static RAM.
    let run = || -> Result<(), String> {
        let (examples, epochs, seed) = (
            number(0, "EXAMPLES", MAX_EXAMPLES as u64)?,
            number(1, "EPOCHS", 1)?,
            number(2, "SEED", 0)?,
        );
        let files = [train_images, train_labels, test_images, test_labels].map(|p| read(p));
        let [ti, tl, vi, vl] = files;
        let (ti, tl, vi, vl) = (ti?, tl?, vi?, vl?);
        let train = Split::parse(&ti, &tl).map_err(|e| format!("training set: {e}"))?;
        let test = Split::parse(&vi, &vl).map_err(|e| format!("test set: {e}"))?;
        let mut buffers = Buffers {
            theta: [0.0; PARAMS],
            work: [0.0; WORK],
            columns: [0; IMAGE_PIXELS],
            coefficients: [0.0; MEMBERS],
            order: [0; MAX_EXAMPLES],
            x: [0.0; BATCH * IMAGE_PIXELS],
            y: [0; BATCH],
        };
        if examples == 0 {
            return Err("EXAMPLES must be at least 1".into());
        }
        let n = (examples as usize).min(train.len()).min(MAX_EXAMPLES);
        // The output is opened first, so that a path that cannot be written fails before training.
        let mut file = std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?;
        println!(
            "training the 784-{HIDDEN}-10 MLP on {n} examples, {epochs} epoch(s), seed {seed}, in {} KB of fixed \
             buffers",
            core::mem::size_of::<Buffers>() / 1024
        );
        let trained = train_model(&mut buffers, &train.take(n), &test, epochs, seed).and_then(|()| {
            // Streamed a few hundred bytes at a time, as a device writes flash pages.
            let metadata = [("optimizer", "ienk"), ("trainer", "no_heap_training")];
            let mut to_file = |bytes: &[u8]| file.write_all(bytes);
            safetensors::write_to(&LAYOUT, &buffers.theta, &metadata, &mut to_file).map_err(|e| match e {
                WriteError::Format(e) => format!("model: {e}"),
                WriteError::Sink(e) => format!("{out}: {e}"),
            })
        });
        if let Err(e) = trained {
            // No model, or part of one: nothing is left behind.
            drop(file);
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
        println!("saved {out}");
        Ok(())
    };
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(core::mem::size_of::<Buffers>() + (8 << 20))
            .spawn_scoped(scope, run)
            .map_err(|e| format!("cannot start the training thread: {e}"))?
            .join()
            .map_err(|_| "the training thread panicked".to_string())?
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("no_heap_training: {e}");
            ExitCode::from(2)
        }
    }
}

/// What the firmware runs: Glorot initialisation, then `epochs` passes over `train` in a fresh
/// order each, one IEnK step per example, and the test accuracy after each epoch.
fn train_model(
    b: &mut Buffers,
    train: &Split<'_>,
    test: &Split<'_>,
    epochs: u64,
    seed: u64,
) -> Result<(), String> {
    let [s1, s2] = LAYOUT.glorot_std();
    let rule = Resampled {
        perturb: Perturbations {
            layout: LAYOUT,
            std: [s1, s2],
            rank: 0,
            antithetic: false,
            seed: perturbation_seed(seed),
        },
        members: MEMBERS,
        form: Form::Thesis,
        lr: LR,
        momentum: 0.0,
        normalize: false,
    };
    let stabiliser = Stabiliser {
        center: false,
        clip: Some(CLIP),
    };
    let need = rule.step_workspace_len_for(BATCH, MAX_ACTIVE, 1);
    if need > WORK {
        return Err(format!("step workspace: {need} floats needed, {WORK} reserved"));
    }
    let busiest = (0..train.len())
        .filter_map(|i| train.image(i))
        .map(|image| image.iter().filter(|&&p| p != 0).count())
        .max()
        .unwrap_or(0);
    if busiest > MAX_ACTIVE {
        return Err(format!(
            "an image has {busiest} non-zero pixels; the step workspace is sized for {MAX_ACTIVE} (raise MAX_ACTIVE)"
        ));
    }
    let normal = Normal::new();
    LAYOUT
        .init_glorot(&mut b.theta, &normal, &mut rng(seed, Stream::Init))
        .map_err(|e| format!("initialisation: {e}"))?;
    let n = train.len();
    let order = &mut b.order[..n];
    order.iter_mut().zip(0u32..).for_each(|(o, i)| *o = i);
    let mut order_rng = rng(seed, Stream::Order);
    let mut step = 0u64;
    for epoch in 1..=epochs {
        shuffle(order, &mut order_rng);
        let mut seen = BatchStats::default();
        for idx in order.chunks(BATCH) {
            let rows = b.x.chunks_exact_mut(IMAGE_PIXELS).zip(b.y.iter_mut()).zip(idx);
            for ((row, label), &i) in rows {
                let i = i as usize;
                pixels_to_unit(train.image(i).ok_or("training image out of range")?, row);
                *label = train.label(i).ok_or("training label out of range")?;
            }
            let m = idx.len();
            let buffers = StepBuffers {
                work: &mut b.work,
                columns: &mut b.columns,
                coefficients: &mut b.coefficients,
                stored: None,
            };
            let stats = rule
                .step(
                    &normal,
                    stabiliser,
                    &mut b.theta,
                    None,
                    &b.x[..m * IMAGE_PIXELS],
                    &b.y[..m],
                    step,
                    buffers,
                )
                .map_err(|e| format!("epoch {epoch}, step {}: {e}", step + 1))?;
            seen.merge(stats);
            step += 1;
        }
        let (correct, total) = accuracy(&b.theta, test, &mut b.work)?;
        println!(
            "epoch {epoch}/{epochs}: train loss {:.4} acc {:.4} | test acc {:.4}",
            seen.mean_loss(),
            seen.accuracy(),
            correct as f64 / total.max(1) as f64
        );
    }
    Ok(())
}

/// Correct answers of `theta` on `test`, and the test set's size, `EVAL_BATCH` images at a time,
/// in buffers carved from `work`.
fn accuracy(theta: &[f32], test: &Split<'_>, work: &mut [f32]) -> Result<(usize, usize), String> {
    let scratch_len = LAYOUT.gemm_scratch_len(EVAL_BATCH);
    let lens = [
        EVAL_BATCH * IMAGE_PIXELS,
        EVAL_BATCH * HIDDEN,
        EVAL_BATCH * NUM_CLASSES,
    ];
    let need = lens.iter().sum::<usize>() + scratch_len;
    if need > work.len() {
        return Err(format!(
            "evaluation: {need} floats needed, {} reserved",
            work.len()
        ));
    }
    let (x, rest) = work.split_at_mut(lens[0]);
    let (hidden, rest) = rest.split_at_mut(lens[1]);
    let (logits, rest) = rest.split_at_mut(lens[2]);
    let buffers = EvalBuffers {
        x,
        hidden,
        logits,
        scratch: &mut rest[..scratch_len],
    };
    let correct = correct_answers(&LAYOUT, theta, test, buffers)?;
    Ok((correct, test.len()))
}
