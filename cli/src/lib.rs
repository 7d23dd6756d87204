//! Library half of the `ienk-cli` binary: argument parsing, data loading, training and the
//! commands, so that integration tests can drive them in-process.

pub mod args;
pub mod baseline;
pub mod buffers;
mod checkpoint;
pub mod compare;
pub mod data;
pub mod ensemble;
pub mod error;
pub mod eval;
pub mod gradient;
pub mod huge_pages;
pub mod info;
pub mod metrics;
pub mod model_io;
pub mod optimizer;
pub mod pgm;
pub mod png;
pub mod pool;
pub mod predict;
pub mod progress;
pub mod resume;
pub mod svg;
pub mod train;
pub mod train_flags;

use std::ffi::OsString;
use std::io::Write;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use args::{Cli, Command, TrainArgs};
use error::{CliError, Result};

/// Parses `argv` and runs the command, writing its report to `out`.
///
/// Errors from clap itself (bad flags, `--help`, `--version`) are returned as `Err(clap::Error)`
/// in the outer result so that `main` can let clap print them.
pub fn run<I, T>(argv: I, out: &mut dyn Write) -> std::result::Result<Result<()>, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Train(a), Some(m)) = (&cli.command, matches.subcommand_matches("train")) {
        let given: Vec<String> = m
            .ids()
            .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.to_string())
            .collect();
        if let Err(why) = train_flags::check(a, &given) {
            return Ok(Err(CliError::BadInput(why)));
        }
    }
    Ok(dispatch(cli, out))
}

/// `requested`, or all cores up to [`args::MAX_THREADS`].
fn threads(requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(args::MAX_THREADS)))
}

fn emit(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Failed(format!("cannot write the report: {e}")))
}

/// Turns `train`'s flags into a validated configuration.
pub fn train_config(a: &TrainArgs) -> train::TrainConfig {
    train::TrainConfig {
        optimizer: a.optimizer,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        hidden: a.hidden,
        seed: a.seed,
        // --low-memory runs on one thread (train_flags refuses more).
        threads: match a.ensemble.low_memory {
            true => 1,
            false => threads(a.threads),
        },
        out: a.out.clone(),
        log: a.log.clone(),
        limit: a.limit,
        validation: a.validation,
        keep_best: a.keep_best,
        progress_lines: a.progress,
        save_every_epoch: a.save_every_epoch,
        resume: a.resume,
        sparse_inputs: true,
        lr_decay: a.lr_decay.map(|factor| train::LrDecay {
            factor,
            every: a.lr_decay_every,
        }),
        ensemble: train::EnsembleSettings {
            particles: a.ensemble.particles,
            sigma_scale: a.ensemble.sigma_scale,
            form: match a.ensemble.form {
                args::FormArg::Thesis => ienk::ensemble::resampled::Form::Thesis,
                args::FormArg::Logit => ienk::ensemble::resampled::Form::Logit,
            },
            antithetic: a.ensemble.antithetic,
            rank: a.ensemble.rank,
            store: a.ensemble.store_perturbations,
            low_memory: a.ensemble.low_memory,
            center: a.ensemble.center,
            momentum: a.ensemble.momentum,
            normalize: a.ensemble.normalize,
            adam: a.ensemble.update == args::UpdateArg::Adam,
            clip: a.ensemble.clip,
            eps: a.ensemble.eki_eps,
            inflation: a.ensemble.inflation,
            randomize_every: a.ensemble.randomize_every,
        },
    }
}

/// Applies `--kernel` to the process-wide GEMM path.
fn select_kernel(kernel: args::KernelArg) -> Result<()> {
    use ienk::gemm::{KernelPath, force_kernel};
    let path = match kernel {
        args::KernelArg::Auto => None,
        args::KernelArg::Portable => Some(KernelPath::Portable),
        args::KernelArg::Avx2 => Some(KernelPath::Avx2),
        args::KernelArg::Avx512 => Some(KernelPath::Avx512),
        args::KernelArg::Neon => Some(KernelPath::Neon),
    };
    force_kernel(path)
        .map_err(|p| CliError::BadInput(format!("--kernel {p}: this CPU lacks its instructions")))
}

fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<()> {
    select_kernel(cli.global.kernel)?;
    let data_dir = &cli.global.data_dir;
    match &cli.command {
        Command::Info => {
            let mnist = data::Mnist::load(data_dir)?;
            emit(out, &info::report(&mnist)?)
        }
        Command::Train(a) => {
            let cfg = train_config(a);
            let mnist = data::Mnist::load(data_dir)?;
            train::train(&cfg, &mnist.train.view()?, &mnist.test.view()?, out).map(|_| ())
        }
        Command::Compare(a) => {
            let cfg = compare::CompareConfig {
                epochs: a.epochs,
                out_dir: a.out_dir.clone(),
                seed: a.seed,
                threads: threads(a.threads),
                limit: a.limit,
                runs: a.runs.clone(),
            };
            let mnist = data::Mnist::load(data_dir)?;
            let table = compare::compare(&cfg, &mnist.train.view()?, &mnist.test.view()?, out)?;
            emit(out, &table)
        }
        Command::Eval(a) => {
            let model = model_io::load_model(&a.model)?;
            let test = data::SplitFiles::load(data_dir, data::SplitName::Test)?;
            let evaluation = eval::evaluate(&model.layout, &model.theta, &test.view()?, threads(a.threads))?;
            emit(
                out,
                &(evaluation.report() + &model.metadata.describe(&model.layout) + &model.weight_norms()),
            )
        }
        Command::Predict(a) => {
            let model = model_io::load_model(&a.model)?;
            let (pixels, label) = match (&a.image, a.index) {
                (Some(path), _) => {
                    let bytes = std::fs::read(path).map_err(|e| CliError::read(path, e))?;
                    let parsed = match png::is_png(&bytes) {
                        true => png::parse(&bytes),
                        false => pgm::parse(&bytes),
                    };
                    let mut pixels = parsed.map_err(|e| CliError::bad_file(path, e))?;
                    if a.invert {
                        pixels.iter_mut().for_each(|p| *p = 255 - *p);
                    }
                    (pixels, None)
                }
                (None, Some(i)) => {
                    let test = data::SplitFiles::load(data_dir, data::SplitName::Test)?;
                    let split = test.view()?;
                    match (split.image(i), split.label(i)) {
                        (Some(img), Some(l)) => (img.to_vec(), Some(l)),
                        _ => {
                            return Err(CliError::BadInput(format!(
                                "--index {i} is out of range: the test split has {} examples",
                                split.len()
                            )));
                        }
                    }
                }
                (None, None) => return Err(CliError::BadInput("give --index or --image".into())),
            };
            emit(out, &predict::report(&model, &pixels, label)?)
        }
    }
}
