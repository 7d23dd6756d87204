//! ienk on a microcontroller: the thesis's IEnK (10 members, one example per update, h = 0.001,
//! the thesis's innovation with the coefficients clipped to 2), or a build's low-rank members
//! (`IENK_RANK`), trained on a Cortex-M4F from ienk's `no_std` core, with every buffer a static
//! of fixed size and no allocator at all.
//!
//! It runs on QEMU's `mps2-an386` board (Arm's MPS2 with a Cortex-M4F, 4 MB of RAM for data) and
//! reaches the host through semihosting: MNIST is read from the host's IDX files a record at a
//! time (as a device reads flash), the progress goes to the host's console and the model is
//! streamed to a host file 256 bytes at a time. After each epoch it prints the training loss and
//! accuracy, the test accuracy, and the core clock's ticks per example (`ticks`: cycles on a
//! board, 40 instructions each under `qemu.sh`), and a tenth of the way through each epoch the
//! same so far; at the end, the most stack it used. The model is the one `ienk-cli train --kernel
//! portable --optimizer ienk --form thesis --clip 2 --particles 10 --batch-size 1 --lr 0.001
//! --limit N --epochs E --seed S` writes on a PC, bit for bit (CI checks it); a low-rank build's
//! is that of `ienk-cli train --kernel portable --optimizer ienk --rank R --antithetic
//! --particles M --batch-size B --lr L --low-memory --threads 1` with the build's settings.
//!
//! The build sets the network's width, the examples a run may use, the scheme, room for the
//! step's direction and the RAM the linker may fill (`build.rs`: `IENK_HIDDEN`,
//! `IENK_MAX_EXAMPLES`, `IENK_RANK` with `IENK_PARTICLES`, `IENK_BATCH` and `IENK_LR`,
//! `IENK_DIRECTION_ROOM`, `IENK_RAM_KB`); a width other than 128 is `--hidden H` on the PC.
//!
//! ```sh
//! gunzip -k data/mnist/*.gz          # the firmware reads uncompressed IDX files
//! cd core/firmware && cargo run --release -- ../../data/mnist model.safetensors 200 1 0
//! ```

#![no_std]
#![no_main]

mod failure;
mod host;
mod mnist;
mod stack;
mod ticks;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{hprint, hprintln};
use ienk::batch::shuffle;
use ienk::ensemble::perturb::{BLOCK, Perturbations};
use ienk::ensemble::resampled::{Form, Resampled, Stabiliser};
use ienk::ensemble::step::StepBuffers;
use ienk::idx::{IMAGE_PIXELS, NUM_CLASSES};
use ienk::loss::{BatchStats, argmax};
use ienk::mlp::{Layout, pixels_to_unit};
use ienk::normal::Normal;
use ienk::safetensors::{self, WriteError};
use ienk::seeds::{Stream, perturbation_seed, rng};

use failure::Failure;
use host::{File, FileName, Mode};
use mnist::{Split, Which};

/// The command line, printed with usage errors.
pub const USAGE: &str = "usage: ienk-firmware DATA_DIR OUT.safetensors [EXAMPLES [EPOCHS [SEED [TEST_EXAMPLES]]]]\n  \
     DATA_DIR holds MNIST's four IDX files, uncompressed; EXAMPLES: the first N training examples \
     (default: as many as the build holds, IENK_MAX_EXAMPLES, 60000 unless set); EPOCHS (default \
     1); SEED (default 0); TEST_EXAMPLES: the first N test examples scored after each epoch \
     (default 10000)";

// HIDDEN, MAX_EXAMPLES, DIRECTION_ROOM, RANK, MEMBERS, BATCH, LR, SUM_DRAWS and LOW_RANK_WORK,
// set at build time (build.rs): by default the thesis's 128 hidden units and scheme (full rank,
// 10 members, one example per update, lr 0.001), MNIST's 60000 training examples, and no room
// for the direction.
include!(concat!(env!("OUT_DIR"), "/config.rs"));
const LAYOUT: Layout = Layout::mnist(HIDDEN);
const PARAMS: usize = IMAGE_PIXELS * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES;
/// Low-rank members: each draw's share of the update is summed into room for the whole
/// direction as it comes, so that the workspace does not grow with the members.
const LOW_RANK: bool = RANK != 0;
/// Bound on each coefficient of the thesis's scheme: its update stays exact otherwise (README,
/// Results). The low-rank build's logit form needs none.
const CLIP: f64 = 2.0;
/// Non-zero pixels an image may have: the step works on the network restricted to them, so its
/// workspace is sized for this many (MNIST's training images have at most 351).
const MAX_ACTIVE: usize = 400;
/// Parameters of the network restricted to `MAX_ACTIVE` inputs.
const RESTRICTED: usize = MAX_ACTIVE * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES;
/// Workspace floats reserved: checked against `step_workspace_len_for(1, MAX_ACTIVE, 1)` (about
/// one restricted network: a member's perturbation, whose room then holds the direction, and a
/// perturbation block for the update) and the input row after it; with `DIRECTION_ROOM`,
/// against `step_workspace_len_with_room_for`, whose members sum the whole direction, so that
/// the update needs no perturbation block. An evaluation batch takes as many test images as it
/// holds.
/// The low-rank build's: the step's workspace as build.rs sized it, then the batch's input rows.
const WORK: usize = match LOW_RANK {
    true => LOW_RANK_WORK + BATCH * IMAGE_PIXELS,
    false => RESTRICTED + 8 * 1024 - if DIRECTION_ROOM { BLOCK } else { 0 },
};
/// Floats of room for the step's direction: one restricted network with `DIRECTION_ROOM`
/// (checked against `step_direction_len_for(MAX_ACTIVE)`), none without; the whole network's
/// for low rank, whose members perturb every input column.
const DIRECTION: usize = match (LOW_RANK, DIRECTION_ROOM) {
    (true, _) => PARAMS,
    (false, true) => RESTRICTED,
    (false, false) => 0,
};
/// Entries of the batch's active input columns, which only full-rank steps use.
const COLUMNS: usize = if LOW_RANK { 0 } else { IMAGE_PIXELS };
// The order holds the examples' indices as u16.
const _: () = assert!(MAX_EXAMPLES <= u16::MAX as usize + 1);
/// Test images per forward pass at most (fewer when the workspace holds fewer).
const EVAL_BATCH: usize = 20;
/// Labels of a training batch or an evaluation batch.
const LABELS: usize = if BATCH > EVAL_BATCH { BATCH } else { EVAL_BATCH };
/// Bytes of the command line kept.
const CMDLINE: usize = 1024;
/// Progress lines per epoch (an epoch takes hours on a chip).
const PROGRESS_LINES: usize = 10;

/// Every buffer of a run: one static, zeroed at boot.
struct Buffers {
    cmdline: [u8; CMDLINE],
    training: Training,
}

/// The buffers of training and evaluation.
struct Training {
    theta: [f32; PARAMS],
    work: [f32; WORK],
    direction: [f32; DIRECTION],
    columns: [u32; COLUMNS],
    coefficients: [f64; MEMBERS],
    order: [u16; MAX_EXAMPLES],
    pixels: [u8; IMAGE_PIXELS],
    labels: [u8; LABELS],
}

static mut BUFFERS: Buffers = Buffers {
    cmdline: [0; CMDLINE],
    training: Training {
        theta: [0.0; PARAMS],
        work: [0.0; WORK],
        direction: [0.0; DIRECTION],
        columns: [0; COLUMNS],
        coefficients: [0.0; MEMBERS],
        order: [0; MAX_EXAMPLES],
        pixels: [0; IMAGE_PIXELS],
        labels: [0; LABELS],
    },
};

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once and no interrupt handler touches BUFFERS, so this is the only
    // reference to it, for the rest of the program.
    let buffers = unsafe { &mut *core::ptr::addr_of_mut!(BUFFERS) };
    if let Some(peripherals) = cortex_m::Peripherals::take() {
        ticks::start(peripherals.SYST);
    }
    let ok = match run(&mut buffers.cmdline, &mut buffers.training) {
        Ok(()) => true,
        Err(e) => {
            hprintln!("ienk-firmware: {}", e);
            false
        }
    };
    host::exit(ok)
}

/// What the command line asks for.
struct Args<'a> {
    data: &'a str,
    out: &'a str,
    examples: usize,
    epochs: u64,
    seed: u64,
    test_examples: usize,
}

/// Parses `ienk-firmware DATA_DIR OUT [EXAMPLES [EPOCHS [SEED [TEST_EXAMPLES]]]]`.
fn parse_args(line: &str) -> Result<Args<'_>, Failure<'_>> {
    let mut words = line.split(' ').filter(|w| !w.is_empty()).skip(1);
    let data = words
        .next()
        .ok_or(Failure::Usage("DATA_DIR and OUT are missing"))?;
    let out = words.next().ok_or(Failure::Usage("OUT is missing"))?;
    let mut number = |name: &'static str, default: u64| match words.next() {
        Some(value) => value.parse::<u64>().map_err(|_| Failure::Number { name, value }),
        None => Ok(default),
    };
    let examples = number("EXAMPLES", MAX_EXAMPLES as u64)?;
    let epochs = number("EPOCHS", 1)?;
    let seed = number("SEED", 0)?;
    let test_examples = number("TEST_EXAMPLES", 10_000)?;
    if words.next().is_some() {
        return Err(Failure::Usage("too many arguments"));
    }
    if examples == 0 {
        return Err(Failure::Usage("EXAMPLES must be at least 1"));
    }
    if epochs == 0 {
        return Err(Failure::Usage("EPOCHS must be at least 1"));
    }
    let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(Args {
        data,
        out,
        examples: clamp(examples),
        epochs,
        seed,
        test_examples: clamp(test_examples),
    })
}

/// Reads the command line, trains, saves.
fn run<'a>(cmdline: &'a mut [u8; CMDLINE], b: &mut Training) -> Result<(), Failure<'a>> {
    let line = host::command_line(cmdline).map_err(Failure::CommandLine)?;
    let args = parse_args(line)?;
    let mut train = Split::open(args.data, Which::Train)?;
    let mut test = Split::open(args.data, Which::Test)?;
    let n = args.examples.min(train.len());
    if n > MAX_EXAMPLES {
        return Err(Failure::TooManyExamples {
            asked: n,
            bound: MAX_EXAMPLES,
        });
    }
    let n_test = args.test_examples.min(test.len());
    let out = FileName {
        dir: "",
        name: args.out,
    };
    let out_path = out.path().ok_or(Failure::PathTooLong(out))?;
    // Opened first, so that a path that cannot be written fails before training.
    let mut file = File::open(&out_path, Mode::Write).map_err(|error| Failure::Host { path: out, error })?;
    hprint!(
        "ienk-firmware: training the 784-{}-10 MLP on {} examples, {} {}, seed {}, on a Cortex-M4F, in {} KB \
         of static buffers: ",
        HIDDEN,
        n,
        args.epochs,
        if args.epochs == 1 { "epoch" } else { "epochs" },
        args.seed,
        core::mem::size_of::<Buffers>() / 1024
    );
    match LOW_RANK {
        true => hprintln!(
            "{} rank-{} members in antithetic pairs, logit form, batch {}, lr {}, the direction summed draw by draw",
            MEMBERS,
            RANK,
            BATCH,
            LR
        ),
        false => hprintln!(
            "the thesis's scheme, {} members, one example per update, lr {}, coefficients clipped to {}",
            MEMBERS,
            LR,
            CLIP
        ),
    }
    let trained = train_model(b, &mut train, n, &mut test, n_test, &args).and_then(|()| {
        let metadata = [("optimizer", "ienk"), ("trainer", "ienk-firmware")];
        let mut to_file = |bytes: &[u8]| file.write_all(bytes);
        safetensors::write_to(&LAYOUT, &b.theta[..], &metadata, &mut to_file).map_err(|e| match e {
            WriteError::Format(e) => Failure::Model(e),
            WriteError::Sink(error) => Failure::Host { path: out, error },
        })
    });
    if let Err(e) = trained {
        // No model, or part of one: nothing is left behind.
        drop(file);
        let _ = host::remove(&out_path);
        return Err(e);
    }
    let (used, room) = stack::usage();
    hprintln!("saved {} | stack: {} bytes used at most, of {}", out, used, room);
    Ok(())
}

/// Glorot initialisation, then `args.epochs` passes over the first `n` training examples in a
/// fresh order each, one IEnK step per `BATCH` examples read from the host (the last batch of an
/// epoch takes what is left, as in `ienk-cli`), and the accuracy on the first `n_test` test
/// examples after each epoch.
fn train_model<'a>(
    b: &mut Training,
    train: &mut Split<'a>,
    n: usize,
    test: &mut Split<'a>,
    n_test: usize,
    args: &Args<'_>,
) -> Result<(), Failure<'a>> {
    let [s1, s2] = LAYOUT.glorot_std();
    let rule = Resampled {
        perturb: Perturbations {
            layout: LAYOUT,
            std: [s1, s2],
            rank: RANK,
            antithetic: LOW_RANK,
            seed: perturbation_seed(args.seed),
        },
        members: MEMBERS,
        form: if LOW_RANK { Form::Logit } else { Form::Thesis },
        lr: LR,
        momentum: 0.0,
        normalize: false,
    };
    let stabiliser = Stabiliser {
        center: false,
        clip: (!LOW_RANK).then_some(CLIP),
    };
    // The step's workspace, then the batch's input rows.
    let need = match (LOW_RANK, DIRECTION_ROOM) {
        (true, _) => rule.summing_workspace_len(BATCH, SUM_DRAWS),
        (false, true) => rule.step_workspace_len_with_room_for(1, MAX_ACTIVE, 1),
        (false, false) => rule.step_workspace_len_for(1, MAX_ACTIVE, 1),
    };
    if need + BATCH * IMAGE_PIXELS > WORK {
        return Err(Failure::Workspace {
            what: "step workspace and input rows",
            need: need + BATCH * IMAGE_PIXELS,
            have: WORK,
        });
    }
    let direction_need = rule.step_direction_len_for(MAX_ACTIVE);
    if (LOW_RANK || DIRECTION_ROOM) && direction_need > DIRECTION {
        return Err(Failure::Workspace {
            what: "direction",
            need: direction_need,
            have: DIRECTION,
        });
    }
    let Training {
        theta,
        work,
        direction,
        columns,
        coefficients,
        order,
        pixels,
        labels,
    } = b;
    let normal = Normal::new();
    LAYOUT
        .init_glorot(theta, &normal, &mut rng(args.seed, Stream::Init))
        .map_err(Failure::Network)?;
    let order = &mut order[..n];
    order.iter_mut().zip(0u16..).for_each(|(o, i)| *o = i);
    let mut order_rng = rng(args.seed, Stream::Order);
    let mut step = 0u64;
    let progress_every = (n / PROGRESS_LINES).max(1);
    for epoch in 1..=args.epochs {
        let started = ticks::now();
        shuffle(order, &mut order_rng);
        let mut seen = BatchStats::default();
        let mut done = 0;
        for batch in order.chunks(BATCH) {
            let (work, x) = work.split_at_mut(need);
            let (x, y) = (&mut x[..batch.len() * IMAGE_PIXELS], &mut labels[..batch.len()]);
            for ((&i, row), label) in batch
                .iter()
                .zip(x.chunks_exact_mut(IMAGE_PIXELS))
                .zip(y.chunks_exact_mut(1))
            {
                let i = i as usize;
                read_example(train, i, pixels, label, row)?;
                let active = pixels.iter().filter(|&&p| p != 0).count();
                if !LOW_RANK && active > MAX_ACTIVE {
                    return Err(Failure::TooManyPixels {
                        index: i,
                        active,
                        bound: MAX_ACTIVE,
                    });
                }
            }
            let buffers = StepBuffers {
                work,
                columns: &mut columns[..],
                coefficients: &mut coefficients[..],
                stored: None,
                direction: (LOW_RANK || DIRECTION_ROOM).then_some(&mut direction[..]),
            };
            step += 1;
            let stats = rule
                .step(&normal, stabiliser, theta, None, x, y, step - 1, buffers)
                .map_err(|error| Failure::Step { epoch, step, error })?;
            seen.merge(stats);
            // A progress line each time another tenth of the epoch is done.
            let before = done / progress_every;
            done += batch.len();
            if done / progress_every > before && done < n {
                hprintln!(
                    "  epoch {}/{}: {} of {} examples, train loss {:.4} acc {:.4} so far, {} clock ticks per example",
                    epoch,
                    args.epochs,
                    done,
                    n,
                    seen.mean_loss(),
                    seen.accuracy(),
                    (ticks::now() - started) / done as u64
                );
            }
        }
        let trained = ticks::now();
        let per_training_example = (trained - started) / n as u64;
        let tested = match n_test {
            0 => None,
            _ => {
                let eval = Eval {
                    theta,
                    work,
                    pixels,
                    labels,
                };
                let correct = correct_answers(eval, test, n_test)?;
                let per_test_example = (ticks::now() - trained) / n_test as u64;
                Some((correct as f64 / n_test as f64, per_test_example))
            }
        };
        let (loss, acc) = (seen.mean_loss(), seen.accuracy());
        hprint!(
            "epoch {}/{}: train loss {:.4} acc {:.4}",
            epoch,
            args.epochs,
            loss,
            acc
        );
        match tested {
            Some((test_acc, per_test_example)) => hprintln!(
                " | test acc {:.4} | clock ticks per example: {} training, {} testing",
                test_acc,
                per_training_example,
                per_test_example
            ),
            None => hprintln!(" | clock ticks per example: {} training", per_training_example),
        }
    }
    Ok(())
}

/// Reads example `index` of `split` into `label` and, through the one image buffer `pixels`
/// (which keeps its bytes), onto the input row `row` (pixels in [0, 1]): a batch is read an image
/// at a time, as a device reads flash. O(IMAGE_PIXELS).
fn read_example<'a>(
    split: &mut Split<'a>,
    index: usize,
    pixels: &mut [u8],
    label: &mut [u8],
    row: &mut [f32],
) -> Result<(), Failure<'a>> {
    split.read(index, pixels, label)?;
    pixels_to_unit(pixels, row);
    Ok(())
}

/// What an evaluation reads and works in.
struct Eval<'b> {
    theta: &'b [f32],
    work: &'b mut [f32],
    pixels: &'b mut [u8],
    labels: &'b mut [u8],
}

/// How many of the first `n` test examples the network classifies correctly (the first largest
/// logit, as `ienk-cli eval`), up to `EVAL_BATCH` at a time (as many as the workspace holds), in
/// buffers carved from the workspace.
fn correct_answers<'a>(b: Eval<'_>, test: &mut Split<'a>, n: usize) -> Result<usize, Failure<'a>> {
    // Floats a forward pass of `batch` images needs: its input, hidden and logit rows, then
    // GEMM scratch.
    let need =
        |batch: usize| batch * (IMAGE_PIXELS + HIDDEN + NUM_CLASSES) + LAYOUT.forward_scratch_len(batch);
    let Some(batch) = (1..=EVAL_BATCH).rev().find(|&batch| need(batch) <= WORK) else {
        return Err(Failure::Workspace {
            what: "evaluation",
            need: need(1),
            have: WORK,
        });
    };
    let scratch_len = LAYOUT.forward_scratch_len(batch);
    let lens = [batch * IMAGE_PIXELS, batch * HIDDEN, batch * NUM_CLASSES];
    let (x, rest) = b.work.split_at_mut(lens[0]);
    let (hidden, rest) = rest.split_at_mut(lens[1]);
    let (logits, rest) = rest.split_at_mut(lens[2]);
    let scratch = &mut rest[..scratch_len];
    let mut correct = 0;
    for start in (0..n).step_by(batch) {
        let m = batch.min(n - start);
        let labels = &mut b.labels[..m];
        for (i, (label, row)) in labels
            .chunks_exact_mut(1)
            .zip(x.chunks_exact_mut(IMAGE_PIXELS))
            .enumerate()
        {
            read_example(test, start + i, b.pixels, label, row)?;
        }
        LAYOUT
            .forward(
                b.theta,
                &x[..m * IMAGE_PIXELS],
                &mut hidden[..m * HIDDEN],
                &mut logits[..m * NUM_CLASSES],
                scratch,
            )
            .map_err(Failure::Network)?;
        for (z, &label) in logits.chunks_exact(NUM_CLASSES).zip(labels.iter()) {
            correct += usize::from(argmax(z) == usize::from(label));
        }
    }
    Ok(correct)
}

/// A panic (a bug: every expected failure is a `Failure`) ends the run with failure.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("ienk-firmware: panicked: {}", info);
    host::exit(false)
}

/// A fault (a bad memory access, say) ends the run with failure instead of hanging the board.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("ienk-firmware: hard fault at pc {:#010x}", frame.pc());
    host::exit(false)
}
