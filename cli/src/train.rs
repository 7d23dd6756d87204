//! `ienk-cli train`: the training loop shared by every optimizer.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use ienk::batch::{Batch, shuffle};
use ienk::ensemble::resampled::Form;
use ienk::idx::Split;
use ienk::loss::BatchStats;
use ienk::mlp::Layout;
use ienk::normal::Normal;
use ienk::optim::{Adam, Nag, Sgd};
use ienk::seeds::{Stream, rng};

use crate::baseline::{Baseline, Rule};
use crate::buffers;
use crate::checkpoint::{BestEpoch, Saved, save, with_model_status};
use crate::ensemble::{EkiOptimizer, EnsembleConfig, IenkOptimizer};
use crate::error::{CliError, Result};
use crate::eval::evaluate;
use crate::metrics::{MetricsLog, Row};
use crate::model_io;
use crate::optimizer::Optimizer;
use crate::progress;
use crate::resume;

/// A mean batch cross-entropy above this has exploded: the chance level is ln 10 = 2.3, and a
/// loss of 1e4 means logits thousands apart. Training stops there rather than saving garbage.
pub const EXPLODED_LOSS: f64 = 1e4;

/// The optimizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerKind {
    /// Stochastic gradient descent: theta -= lr g.
    Sgd,
    /// Nesterov momentum 0.9, PyTorch's form: v = 0.9 v + g; theta -= lr (g + 0.9 v).
    Nag,
    /// Adam (0.9, 0.999, 1e-8) with bias correction.
    Adam,
    /// Resampled iterative ensemble Kalman (the thesis's scheme): a fresh ensemble around the
    /// mean at every update, theta -= lr sum_k c_k delta_k (effective rate lr M (c s_l)^2).
    Ienk,
    /// Kovachki & Stuart's ensemble Kalman inversion: a persistent ensemble, adaptive step
    /// lr / (||D||_F + eps); predictions use the ensemble mean.
    Eki,
}

impl OptimizerKind {
    /// The name used on the command line and in model metadata.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Nag => "nag",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Ienk => "ienk",
            OptimizerKind::Eki => "eki",
        }
    }
}

/// A validated training configuration.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Which optimizer.
    pub optimizer: OptimizerKind,
    /// Passes over the training data.
    pub epochs: u32,
    /// Examples per update.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f32,
    /// Hidden units.
    pub hidden: usize,
    /// Seed of the initial weights, the data order and the perturbations.
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
    /// Where the model is saved.
    pub out: PathBuf,
    /// Where the metrics CSV is written, if anywhere.
    pub log: Option<PathBuf>,
    /// Train on the first N examples only.
    pub limit: Option<usize>,
    /// Hold out the last N of those examples for validation: not trained on, evaluated after
    /// every epoch.
    pub validation: Option<usize>,
    /// Save the epoch with the best validation accuracy instead of the last (needs
    /// `validation`; not with `resume`).
    pub keep_best: bool,
    /// Progress lines per epoch.
    pub progress_lines: usize,
    /// Also save the model to `out` after every epoch but the last, so that a run stopped or
    /// diverged later keeps its last finished epoch.
    pub save_every_epoch: bool,
    /// Continue the run saved in `out` (`--resume`) instead of starting from a fresh
    /// initialisation.
    pub resume: bool,
    /// Settings of the ensemble optimizers.
    pub ensemble: EnsembleSettings,
    /// Step decay of the learning rate, if any.
    pub lr_decay: Option<LrDecay>,
    /// sgd, nag, adam: split each batch's inputs into often non-zero ones (a GEMM) and the rest
    /// (sparse products on their non-zeros); otherwise the whole input layer is a dense GEMM
    /// (the CLI always splits; benchmarks turn it off to compare).
    pub sparse_inputs: bool,
}

/// Step decay: the learning rate of epoch e is `lr factor^floor(e / every)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrDecay {
    /// Factor applied at each decay, in (0, 1].
    pub factor: f32,
    /// Epochs between two decays (at least 1).
    pub every: u32,
}

impl LrDecay {
    /// The learning rate of `epoch` (counted from 0) for a base rate `lr`. O(1).
    pub fn lr_at(&self, lr: f32, epoch: u32) -> f32 {
        let decays = epoch / self.every.max(1);
        (f64::from(lr) * f64::from(self.factor).powi(decays as i32)) as f32
    }
}

/// Settings of `ienk` and `eki` (ignored by the gradient optimizers).
#[derive(Clone, Copy, Debug)]
pub struct EnsembleSettings {
    /// Members M.
    pub particles: usize,
    /// Scale c of each layer's Glorot standard deviation s_l.
    pub sigma_scale: f32,
    /// `ienk`: thesis or logit form.
    pub form: Form,
    /// `ienk`: antithetic pairs.
    pub antithetic: bool,
    /// `ienk`: rank of the weight perturbations (0 = full rank).
    pub rank: usize,
    /// `ienk`: keep the M perturbations in memory between forward and update.
    pub store: bool,
    /// `ienk`, low rank, one thread: add each draw's share to the direction as it comes, for
    /// memory that does not grow with M.
    pub low_memory: bool,
    /// `ienk`: subtract the members' mean coefficient (compare each member with the ensemble's
    /// mean output rather than the mean network's).
    pub center: bool,
    /// `ienk`: heavy-ball momentum on the ensemble direction (0 = the thesis's update).
    pub momentum: f32,
    /// `ienk`: divide each layer's direction by `M (c s_l)^2` (an SGD-like learning rate).
    pub normalize: bool,
    /// `ienk`: step with Adam on the ensemble's gradient estimate instead of the plain update.
    pub adam: bool,
    /// `ienk`: clip each coefficient c_k to `[-clip, clip]`.
    pub clip: Option<f32>,
    /// `eki`: the eps of the adaptive step.
    pub eps: f32,
    /// `eki`: multiplicative inflation alpha.
    pub inflation: f32,
    /// `eki`: redraw the ensemble around its mean every R steps (0 = never).
    pub randomize_every: u64,
}

impl Default for EnsembleSettings {
    fn default() -> Self {
        EnsembleSettings {
            particles: 10,
            sigma_scale: 1.0,
            form: Form::Logit,
            antithetic: false,
            rank: 0,
            store: false,
            low_memory: false,
            center: false,
            momentum: 0.0,
            normalize: false,
            adam: false,
            clip: None,
            eps: 1e-8,
            inflation: 0.0,
            randomize_every: 0,
        }
    }
}

/// The optimizer of `cfg` with its buffers, for batches of up to `batch` examples.
fn make_optimizer(cfg: &TrainConfig, layout: Layout, batch: usize) -> Result<Box<dyn Optimizer>> {
    let p = layout.num_params();
    let e = &cfg.ensemble;
    let ens = EnsembleConfig {
        members: e.particles,
        sigma_scale: e.sigma_scale,
        threads: cfg.threads,
        batch,
        seed: cfg.seed,
    };
    let rule = match cfg.optimizer {
        OptimizerKind::Sgd => Rule::Sgd(Sgd { lr: cfg.lr }),
        OptimizerKind::Nag => Rule::Nag(
            Nag {
                lr: cfg.lr,
                momentum: Nag::MOMENTUM,
            },
            buffers::zeros("NAG's velocity", p)?,
        ),
        OptimizerKind::Adam => Rule::Adam(
            Adam::new(cfg.lr),
            buffers::zeros("Adam's first moments", p)?,
            buffers::zeros("Adam's second moments", p)?,
            0,
        ),
        OptimizerKind::Ienk => {
            return Ok(Box::new(IenkOptimizer::new(layout, ens, e, cfg.lr)?));
        }
        OptimizerKind::Eki => {
            return Ok(Box::new(EkiOptimizer::new(
                layout,
                ens,
                cfg.lr,
                e.eps,
                e.inflation,
                e.randomize_every,
            )?));
        }
    };
    Ok(Box::new(Baseline::new(
        rule,
        layout,
        batch,
        cfg.threads,
        cfg.sparse_inputs,
    )?))
}

/// The ensemble settings in force, for the opening line.
fn ensemble_summary(cfg: &TrainConfig) -> String {
    let e = &cfg.ensemble;
    match cfg.optimizer {
        OptimizerKind::Ienk => {
            format!(
                "; {} particles, sigma scale {}, {} form, rank {}{}{}",
                e.particles,
                e.sigma_scale,
                if e.form == Form::Thesis { "thesis" } else { "logit" },
                if e.rank == 0 {
                    "full".to_string()
                } else {
                    e.rank.to_string()
                },
                if e.antithetic { ", antithetic" } else { "" },
                if e.store { ", stored perturbations" } else { "" },
            ) + &format!(
                "{}{}{}{}",
                if e.low_memory {
                    ", low memory (the direction summed draw by draw)"
                } else {
                    ""
                },
                if e.center { ", centred coefficients" } else { "" },
                if e.normalize { ", normalized" } else { "" },
                if e.adam { ", Adam on the estimate" } else { "" },
            ) + &e
                .clip
                .map(|c| format!(", coefficients clipped to {c}"))
                .unwrap_or_default()
                + &if e.momentum != 0.0 {
                    format!(", momentum {}", e.momentum)
                } else {
                    String::new()
                }
        }
        OptimizerKind::Eki => format!(
            "; {} particles, sigma scale {}, eps {}, inflation {}, randomise every {} steps",
            e.particles, e.sigma_scale, e.eps, e.inflation, e.randomize_every
        ),
        _ => String::new(),
    }
}

/// Test-set results at the end of one epoch.
#[derive(Clone, Copy, Debug)]
pub struct EpochResult {
    /// Mean training loss over the epoch (before each update).
    pub train_loss: f64,
    /// Training accuracy over the epoch (before each update).
    pub train_accuracy: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Loss and accuracy on the held-out validation examples, with `--validation`.
    pub validation: Option<(f64, f64)>,
    /// Seconds of training in this epoch (evaluation excluded).
    pub train_seconds: f64,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Per-epoch results.
    pub epochs: Vec<EpochResult>,
    /// The parameters after the last epoch (with `keep_best`, the saved model may be an
    /// earlier epoch's).
    pub theta: Vec<f32>,
}

/// The examples to train on and, with `--validation N`, the last `N` held out of them; bad
/// input when that leaves none to train on. O(1).
fn hold_out<'a>(train: Split<'a>, validation: Option<usize>) -> Result<(Split<'a>, Option<Split<'a>>)> {
    let Some(held) = validation else {
        return Ok((train, None));
    };
    if held >= train.len() {
        return Err(CliError::BadInput(format!(
            "--validation {held} holds out every training example (there are {}): \
             leave some to train on",
            train.len()
        )));
    }
    let (kept, held_out) = train.split_at(train.len() - held);
    Ok((kept, Some(held_out)))
}

/// Trains from a fresh Glorot initialisation, printing progress to `out`, logging to the metrics
/// file, and saving the model when done (and after every epoch with `save_every_epoch`): the
/// last epoch's, or with `keep_best` the one with the best validation accuracy. A non-finite or
/// exploded loss stops the run; the model on disk is then the last checkpoint, or none.
pub fn train(
    cfg: &TrainConfig,
    train: &Split<'_>,
    test: &Split<'_>,
    out: &mut dyn Write,
) -> Result<TrainSummary> {
    let train = match cfg.limit {
        Some(n) => train.take(n),
        None => *train,
    };
    let (train, held_out) = hold_out(train, cfg.validation)?;
    if cfg.keep_best && held_out.is_none() {
        return Err(CliError::BadInput(
            "--keep-best needs --validation: the best epoch is the best on held-out examples".into(),
        ));
    }
    let n = train.len();
    if n == 0 {
        return Err(CliError::BadInput("the training split holds no example".into()));
    }
    let layout = Layout::mnist(cfg.hidden);
    let batch = cfg.batch_size.min(n);
    // What can fail without training first: an output that cannot be written, then a size the
    // machine cannot hold, before any work or file.
    model_io::check_writable(&cfg.out, "--out")?;
    let checkpoint = match cfg.resume {
        true => Some(resume::load_checkpoint(&cfg.out, cfg, &layout)?),
        false => None,
    };
    let steps_per_epoch = n.div_ceil(batch);
    // Epochs and steps already done (by the run being resumed).
    let first_epoch = checkpoint.as_ref().map_or(0, |c| c.epochs);
    let first_step = u64::from(first_epoch) * steps_per_epoch as u64;
    let mut optimizer = make_optimizer(cfg, layout, batch)?;
    if checkpoint.is_some() {
        optimizer.resume_at(first_step)?;
    }
    // The resumed run's parameters, or a fresh initialisation; and the epoch and test accuracy
    // of the model on disk, if any.
    let (mut theta, mut saved) = match checkpoint {
        Some(c) => (
            c.theta,
            Some(Saved {
                epochs: c.epochs,
                test_accuracy: c.test_accuracy,
                validation_accuracy: None,
            }),
        ),
        None => {
            let mut theta = buffers::zeros("the parameters", layout.num_params())?;
            layout
                .init_glorot(&mut theta, &Normal::new(), &mut rng(cfg.seed, Stream::Init))
                .map_err(|e| CliError::Failed(format!("initialisation failed: {e}")))?;
            (theta, None)
        }
    };
    let open_log = |path: &std::path::Path| match cfg.resume {
        true => MetricsLog::append(path),
        false => MetricsLog::create(path),
    };
    let mut metrics = match cfg.log.as_deref() {
        Some(path) => Some(open_log(path).map_err(|e| match e {
            // Nothing has run yet: a --log that cannot be created is a bad flag, like --out.
            CliError::Io { source, .. } => {
                CliError::BadInput(format!("--log {}: cannot write there: {source}", path.display()))
            }
            other => other,
        })?),
        None => None,
    };
    let mut order_rng = rng(cfg.seed, Stream::Order);
    let mut order: Vec<u32> = (0..n as u32).collect();
    // The orders of the epochs done: the next epoch's order is the uninterrupted run's.
    for _ in 0..first_epoch {
        shuffle(&mut order, &mut order_rng);
    }
    let log_every = (steps_per_epoch / cfg.progress_lines.max(1)).max(1);
    let total_steps = u64::from(cfg.epochs) * steps_per_epoch as u64;
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(
        out,
        format!(
            "training a 784-{}-10 MLP ({} parameters) with {} on {n} examples: {}, batch {batch}, lr {}, \
             seed {}, {}",
            cfg.hidden,
            layout.num_params(),
            cfg.optimizer.name(),
            progress::counted(cfg.epochs as usize, "epoch"),
            cfg.lr,
            cfg.seed,
            progress::counted(cfg.threads, "thread")
        ) + &cfg
            .lr_decay
            .map(|d| {
                format!(
                    ", lr times {} every {}",
                    d.factor,
                    progress::counted(d.every as usize, "epoch")
                )
            })
            .unwrap_or_default()
            + &ensemble_summary(cfg),
    );
    if let Some(s) = saved {
        say(
            out,
            format!(
                "resuming {} after epoch {}/{} (test accuracy {:.4})",
                cfg.out.display(),
                s.epochs,
                cfg.epochs,
                s.test_accuracy
            ),
        );
    }
    // With --keep-best: the best epoch so far, and its parameters.
    let mut best = match cfg.keep_best {
        true => Some(BestEpoch::new(theta.len())?),
        false => None,
    };
    let start = Instant::now();
    let mut train_time = 0.0;
    let mut step = first_step;
    let mut results = Vec::new();
    // The epochs, in a closure so that whatever stops them is reported once, with what became
    // of the model (no file yet, or the last checkpoint).
    let mut run_epochs = || -> Result<()> {
        for epoch in first_epoch..cfg.epochs {
            if let Some(decay) = cfg.lr_decay {
                let lr = decay.lr_at(cfg.lr, epoch);
                if epoch > 0 && lr != decay.lr_at(cfg.lr, epoch - 1) {
                    say(out, format!("--- epoch {}: learning rate now {lr}", epoch + 1));
                }
                optimizer.set_lr(lr);
            }
            shuffle(&mut order, &mut order_rng);
            let epoch_start = Instant::now();
            let mut running = BatchStats::default();
            for (s, idx) in order.chunks(batch).enumerate() {
                let Some(batch) = Batch::new(train, idx) else {
                    return Err(CliError::Failed(
                        "internal error: a batch index is out of range".into(),
                    ));
                };
                let stats = optimizer.step(&mut theta, &batch)?;
                step += 1;
                let batch_loss = stats.mean_loss();
                if !batch_loss.is_finite() || batch_loss > EXPLODED_LOSS {
                    return Err(CliError::Failed(format!(
                        "training diverged in epoch {}/{}, step {step}: the batch loss is {batch_loss} (try a \
                     smaller --lr)",
                        epoch + 1,
                        cfg.epochs
                    )));
                }
                running.merge(stats);
                if (s + 1) % log_every == 0 || s + 1 == steps_per_epoch {
                    let elapsed = start.elapsed();
                    let epoch_secs = epoch_start.elapsed().as_secs_f64();
                    let left = progress::remaining(elapsed, step - first_step, total_steps - first_step);
                    say(
                        out,
                        progress::line(
                            epoch,
                            cfg.epochs,
                            running.count,
                            stats.mean_loss(),
                            stats.accuracy(),
                            running.accuracy(),
                            left,
                            running.count as f64 / epoch_secs.max(1e-9),
                        ),
                    );
                    if let Some(m) = metrics.as_mut() {
                        m.row(&Row {
                            kind: "step",
                            epoch,
                            step,
                            examples: u64::from(epoch) * n as u64 + running.count as u64,
                            seconds: elapsed.as_secs_f64(),
                            loss: stats.mean_loss(),
                            accuracy: stats.accuracy(),
                            test: None,
                            validation: None,
                        })?;
                    }
                }
            }
            let epoch_secs = epoch_start.elapsed().as_secs_f64();
            train_time += epoch_secs;
            optimizer.sync(&mut theta)?;
            if theta.iter().any(|t| !t.is_finite()) {
                return Err(CliError::Failed(format!(
                    "training diverged in epoch {}/{}: a parameter is not finite",
                    epoch + 1,
                    cfg.epochs
                )));
            }
            let eval = evaluate(&layout, &theta, test, cfg.threads)?;
            let validation = match &held_out {
                Some(v) => {
                    let stats = evaluate(&layout, &theta, v, cfg.threads)?.stats;
                    Some((stats.mean_loss(), stats.accuracy()))
                }
                None => None,
            };
            let result = EpochResult {
                train_loss: running.mean_loss(),
                train_accuracy: running.accuracy(),
                test_loss: eval.stats.mean_loss(),
                test_accuracy: eval.stats.accuracy(),
                validation,
                train_seconds: epoch_secs,
            };
            let validation_text = result
                .validation
                .map(|(l, a)| format!(" | val loss {l:.4} acc {a:.4}"))
                .unwrap_or_default();
            say(
                out,
                format!(
                    "--- epoch {}/{}: train loss {:.4} acc {:.4}{validation_text} | test loss {:.4} acc {:.4} | {:.2} s ({:.0} ex/s)",
                    epoch + 1,
                    cfg.epochs,
                    result.train_loss,
                    result.train_accuracy,
                    result.test_loss,
                    result.test_accuracy,
                    epoch_secs,
                    n as f64 / epoch_secs.max(1e-9)
                ),
            );
            if let Some(m) = metrics.as_mut() {
                m.row(&Row {
                    kind: "epoch",
                    epoch,
                    step,
                    examples: u64::from(epoch + 1) * n as u64,
                    seconds: start.elapsed().as_secs_f64(),
                    loss: result.train_loss,
                    accuracy: result.train_accuracy,
                    test: Some((result.test_loss, result.test_accuracy)),
                    validation: result.validation,
                })?;
            }
            results.push(result);
            let this_epoch = Saved::after(epoch, &result);
            // The model to checkpoint: this epoch's, or with --keep-best the best so far (none
            // to write when it did not change).
            let checkpoint = match best.as_mut() {
                None => Some((this_epoch, &theta[..])),
                Some(b) => b.offer(this_epoch, &theta).then_some((this_epoch, &b.theta[..])),
            };
            if let (true, true, Some((model, params))) =
                (cfg.save_every_epoch, epoch + 1 < cfg.epochs, checkpoint)
            {
                save(cfg, &layout, params, model)?;
                saved = Some(model);
                say(
                    out,
                    format!(
                        "--- saved {} (epoch {}/{}, {})",
                        cfg.out.display(),
                        model.epochs,
                        cfg.epochs,
                        model.accuracies()
                    ),
                );
            }
        }
        Ok(())
    };
    let outcome = run_epochs();
    outcome.map_err(|e| with_model_status(e, &cfg.out, saved))?;
    let (model, params) = match (&best, results.last()) {
        (
            Some(BestEpoch {
                kept: Some(kept),
                theta: kept_theta,
            }),
            _,
        ) => (*kept, &kept_theta[..]),
        (_, Some(last)) => (Saved::after(cfg.epochs - 1, last), &theta[..]),
        // No epoch to run (`epochs` 0, which only the library allows): the initial model.
        (_, None) => (
            Saved {
                epochs: cfg.epochs,
                test_accuracy: f64::NAN,
                validation_accuracy: None,
            },
            &theta[..],
        ),
    };
    save(cfg, &layout, params, model)?;
    let kept = match cfg.keep_best {
        true => format!(
            ", the best validation accuracy of {}",
            progress::counted(cfg.epochs as usize, "epoch")
        ),
        false => String::new(),
    };
    say(
        out,
        format!(
            "saved {}: {}{kept}; training time {train_time:.2} s, {:.3} s per epoch",
            cfg.out.display(),
            model.describe(),
            train_time / f64::from((cfg.epochs - first_epoch).max(1))
        ),
    );
    Ok(TrainSummary {
        epochs: results,
        theta,
    })
}
