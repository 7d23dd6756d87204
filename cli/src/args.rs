//! Command-line options (clap derive). Each flag's doc comment is its `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::compare::RunName;
use crate::train::OptimizerKind;

/// Train and evaluate a 784-H-10 MLP on MNIST without derivatives (iterative ensemble Kalman
/// method) or with gradient baselines (SGD, NAG, Adam).
///
/// Exit status: 0 on success, 2 on bad input (missing or malformed data, model or image files,
/// invalid flags), 1 when a run fails on good input (training diverged, an output file could not
/// be written).
#[derive(Debug, Parser)]
#[command(name = "ienk-cli", version, about, long_about)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The end of `train --help`: settings whose results the README's Results section reproduces.
const TRAIN_EXAMPLES: &str = "\
Examples (full MNIST, 10 epochs, --seed 0; test accuracy after the last epoch, from the README's
Results, each reproducible with the same command):
  # The thesis's scheme, its exact update: peaks near 0.86, then runs away (0.7978)
  ienk-cli train --optimizer ienk --form thesis --particles 10 --batch-size 1 --lr 0.001
  # The same with each coefficient clipped to [-2, 2]: 0.8865
  ienk-cli train --optimizer ienk --form thesis --particles 10 --batch-size 1 --lr 0.001 --clip 2
  # Derivative-free, 12000 rank-1 members in antithetic pairs: 0.9735
  ienk-cli train --optimizer ienk --particles 12000 --rank 1 --antithetic --batch-size 100 \\
      --lr 0.006 --lr-decay 0.5 --lr-decay-every 3
  # Back-propagation: Adam, 0.9792 (gradient models depend on --threads through the order of
  # sums; ienk's do not)
  ienk-cli train --optimizer adam --lr 0.002 --batch-size 128 --threads 1
With the defaults (10 members, batch 500, lr 0.001) ienk moves little: 0.1539 after 10 epochs, as
ten members carry too little information per step for a batch of 500.";

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory holding the four MNIST IDX files (raw or .gz, `train-images-idx3-ubyte` or
    /// `train-images.idx3-ubyte` naming). Get them with `scripts/fetch-mnist.sh DIR`.
    #[arg(
        long,
        global = true,
        env = "IENK_DATA",
        default_value = "data/mnist",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Kernel path (GEMM, sparse products, normal sampler, Adam): `auto` picks the best this CPU
    /// supports (AVX-512F, else AVX2+FMA, else portable on x86_64; NEON on aarch64; the sparse
    /// products, the sampler and Adam use their AVX2 build on the AVX-512 path and their
    /// portable build on NEON); forcing one the CPU lacks is an error. avx2 and avx512 give the
    /// same results bit for bit; portable and neon round differently.
    #[arg(long, global = true, env = "IENK_KERNEL", value_enum, default_value_t = KernelArg::Auto)]
    pub kernel: KernelArg,
}

/// The `--kernel` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    /// The best path this CPU supports.
    Auto,
    /// Plain Rust, vectorised by the compiler.
    Portable,
    /// x86_64 AVX2 + FMA.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print, per split, the number of examples, the image size, the count of each class and the
    /// mean pixel value.
    Info,
    /// Train a 784-H-10 MLP on the training split, report the test accuracy after each epoch and
    /// save the model (safetensors, PyTorch tensor names).
    ///
    /// Progress lines follow the thesis: `=== Epoch: E/N === Iter:EXAMPLES === Loss: batch loss
    /// === BAcc: batch accuracy === TAcc: accuracy over the epoch so far === Remain: time left ===
    /// examples per second ===`. Loss and accuracies are measured before each update. A NaN,
    /// infinite or exploded (above 1e4) loss stops the run with exit status 1 and writes no model
    /// (with --save-every-epoch, the model of the last finished epoch stays, or with --keep-best
    /// the best one so far). A flag the chosen
    /// optimizer does not read (each ensemble flag's help names the optimizer that reads it), or
    /// one that another flag would make it ignore, is refused (exit 2) rather than ignored.
    #[command(after_long_help = TRAIN_EXAMPLES)]
    Train(TrainArgs),
    /// Evaluate a saved model on the test split: accuracy, loss, per-class accuracy and the
    /// confusion matrix, then the training record in its metadata (optimizer, epochs, settings)
    /// and each weight tensor's Frobenius norm.
    Eval(EvalArgs),
    /// Predict the digit of one image: a test example by index, or a 28x28 PNG or PGM file.
    Predict(PredictArgs),
    /// Reproduce the thesis's comparison: train SGD, NAG, Adam, IEnK as in the thesis (its exact
    /// update, and the same with the coefficients clipped to [-2, 2]) and our best
    /// derivative-free IEnK with one seed and one data order; print the thesis's table beside ours;
    /// write compare.csv (per epoch), accuracy.svg (test accuracy against epoch), and each run's
    /// metrics CSV and model into --out-dir. Each thesis IEnK run makes 600,000 updates of 10
    /// particles and our best derivative-free run trains 12000 particles: each takes 2 to 5
    /// minutes on two cores (a Zen 5 and a Zen 3 EPYC); their results do not depend on the
    /// thread count; leave them out with --runs.
    Compare(CompareArgs),
}

/// Options of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Epochs of every run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,
    /// Directory for the CSVs, the models and the plot (created if missing).
    #[arg(long, default_value = "compare", value_name = "DIR")]
    pub out_dir: PathBuf,
    /// The one seed of every run (initial weights, data order, perturbations).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores; at most 1024).
    #[arg(long, value_parser = thread_count)]
    pub threads: Option<usize>,
    /// Train on the first N training examples only (quick runs).
    #[arg(long, value_name = "N", value_parser = positive_usize)]
    pub limit: Option<usize>,
    /// Which runs, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sgd,nag,adam,ienk-thesis,ienk-thesis-clip,ienk-best"
    )]
    pub runs: Vec<RunName>,
}

/// Options of `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The optimizer.
    #[arg(long, value_enum)]
    pub optimizer: OptimizerKind,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,
    /// Examples per update (the last batch of an epoch may be smaller).
    #[arg(long, default_value_t = 500, value_parser = positive_usize)]
    pub batch_size: usize,
    /// Learning rate. sgd, nag, adam: the usual step on the gradient. ienk: the h of
    /// `theta -= h sum_k c_k delta_k`, an effective rate of `h M (c s_l)^2` on layer l (M
    /// particles, c the sigma scale, s_l = 0.0468 and 0.1204 the layers' Glorot stds for
    /// 784-128-10), or an SGD-like rate with --normalize. eki: the h0 of the adaptive step
    /// `h = h0 / (||D||_F + eps)`; ||D|| grows with the members, so h0 must too (MNIST at batch
    /// 500: 100 for 100 members, 3000 for 1000, 6000 for 2000).
    #[arg(long, default_value_t = 0.001, value_parser = positive_f32)]
    pub lr: f32,
    /// Step decay: multiply the learning rate by F every --lr-decay-every epochs (the rate of
    /// epoch e, counted from 0, is lr F^floor(e / N)). Applies to every optimizer; one of the
    /// stabilisers of the thesis's scheme.
    #[arg(long, value_name = "F", value_parser = decay_factor)]
    pub lr_decay: Option<f32>,
    /// Epochs between two decays of --lr-decay.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = positive_u32, requires = "lr_decay")]
    pub lr_decay_every: u32,
    /// Hidden units (at most 1048576).
    #[arg(long, default_value_t = 128, value_parser = hidden_units)]
    pub hidden: usize,
    /// Seed of the initial weights, the data order (the same for every optimizer) and the
    /// perturbations. Same seed, same thread count: the same model, bit for bit.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores). sgd, nag, adam split the batch's rows across them
    /// (results depend on the thread count through the order of floating-point sums only); ienk
    /// and eki split the members, ienk the parameter blocks of its update, and eki the rows of D
    /// and the column pieces of its update (ienk's and eki's results do not depend on the thread
    /// count). At most 1024.
    #[arg(long, value_parser = thread_count)]
    pub threads: Option<usize>,
    /// Where to save the model (checked before training; written atomically: a temporary file,
    /// then a rename).
    #[arg(long, default_value = "model.safetensors", value_name = "FILE")]
    pub out: PathBuf,
    /// Also save the model to --out after every epoch (its metadata's `epochs` says how many
    /// are done), so that a run stopped or diverged later keeps its last finished epoch. Costs
    /// one write of the model per epoch.
    #[arg(long)]
    pub save_every_epoch: bool,
    /// Continue the run whose model is --out (a finished run, or the last epoch
    /// --save-every-epoch saved before the run stopped) up to --epochs: give the same command
    /// with --resume. The file's record of its run's settings must match this command's (the
    /// thread count aside); the data order and the perturbations continue as if the run had
    /// not stopped, so sgd and ienk write the uninterrupted run's model, bit for bit (sgd: with
    /// the same --threads). eki does too where the run stopped at a step that redrew its
    /// members around their mean (the steps done a multiple of --randomize-every; with 60000
    /// examples in batches of 500, --randomize-every 120 makes every epoch's end such a step),
    /// and is refused elsewhere. nag, adam, and ienk with --momentum or --update adam keep
    /// state between steps that the model file does not hold, and are refused. --log is
    /// appended to (its seconds restart from 0).
    #[arg(long)]
    pub resume: bool,
    /// Write a CSV of metrics: a row per progress line (kind=step) and per epoch (kind=epoch), with
    /// columns kind,epoch,step,examples,seconds,loss,accuracy,test_loss,test_accuracy,val_loss,
    /// val_accuracy (the last two with --validation).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Train on the first N training examples only (quick runs).
    #[arg(long, value_name = "N", value_parser = positive_usize)]
    pub limit: Option<usize>,
    /// Hold out the last N examples of the training split (of the first --limit ones, with
    /// --limit) for validation: no step trains on them, and after every epoch the model's loss
    /// and accuracy on them are printed and logged, so that epochs and settings can be chosen
    /// without looking at the test split (5000 or 10000 are usual for MNIST).
    #[arg(long, value_name = "N", value_parser = positive_usize)]
    pub validation: Option<usize>,
    /// Save the model of the epoch with the best validation accuracy (the earliest of ties)
    /// instead of the last epoch's, and with --save-every-epoch the best so far after every
    /// epoch. Needs --validation; keeps a second copy of the parameters in memory. Such a model
    /// file cannot be resumed: it may hold an earlier epoch than the last.
    #[arg(long, requires = "validation", conflicts_with = "resume")]
    pub keep_best: bool,
    /// Progress lines per epoch.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = positive_usize)]
    pub progress: usize,
    /// Options of the ensemble optimizers (ienk, eki).
    #[command(flatten)]
    pub ensemble: EnsembleArgs,
}

/// Options of the ensemble optimizers. Learning-rate conventions: for `ienk`, --lr is the h of
/// `theta -= h sum_k c_k delta_k`, whose effective rate on layer l is `h M (c s_l)^2` (M members,
/// c the sigma scale, s_l the layer's Glorot std: 0.0468 and 0.1204 for 784-128-10); for `eki`,
/// --lr is the h0 of the adaptive step `h = h0 / (||D||_F + eps)`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Ensemble optimizers (ienk, eki)")]
pub struct EnsembleArgs {
    /// Ensemble members M (at most 16777216; at least 2 for eki and for --center, which move by
    /// the members' spread around their mean).
    #[arg(long, default_value_t = 10, value_name = "M", value_parser = particles)]
    pub particles: usize,
    /// Perturbation scale c: member entries of layer l are drawn with std c s_l (s_l = the
    /// layer's Glorot std). For eki, the spread of the initial ensemble and of randomisations.
    #[arg(long, default_value_t = 1.0, value_name = "C", value_parser = positive_f32)]
    pub sigma_scale: f32,
    /// ienk: how the misfit enters c_k. `thesis`: probability space with -y/(p + 0.005), exactly
    /// the thesis's update; `logit`: c_k = (1/B) sum_b <z_kb - z_b, p_b - y_b> (bounded, safer).
    #[arg(long, value_enum, default_value_t = FormArg::Logit)]
    pub form: FormArg,
    /// ienk: antithetic pairs (member 2j+1 = -member 2j), which cancels curvature in c_k;
    /// --particles must be even.
    #[arg(long)]
    pub antithetic: bool,
    /// ienk: rank r of each weight perturbation (delta_W = c s_l a b^T / sqrt(r)); 0 = full rank.
    /// Low rank computes X W^T once plus each member's rank-r correction: thousands of members
    /// cost about as much as a few full forward passes. Full rank: the members perturb only the
    /// layer-1 columns of the inputs that are non-zero somewhere in the batch; the rest of the
    /// update, which no member's output depends on, is drawn at once with the same distribution
    /// (for one MNIST image, about 0.3 M normal draws per step instead of M P = 1 M). At most
    /// 784, the input count: a higher rank costs more than full rank.
    #[arg(long, default_value_t = 0, value_name = "R", value_parser = rank)]
    pub rank: usize,
    /// ienk: heavy-ball momentum mu on the ensemble direction, v <- mu v + sum_k c_k delta_k;
    /// theta <- theta - lr v (0 = the thesis's plain update). Averages the noisy ensemble
    /// estimate over about 1 / (1 - mu) steps; the steady-state step grows by that factor too.
    /// In [0, 1).
    #[arg(long, default_value_t = 0.0, value_name = "MU", value_parser = momentum)]
    pub momentum: f32,
    /// ienk: divide each layer's direction sum_k c_k delta_k by M (c s_l)^2, which makes it an
    /// unbiased estimate of the gradient: --lr is then a learning rate as in SGD, the same for
    /// both layers (without it layer l moves at h M (c s_l)^2, 6.6 times faster on layer 2).
    #[arg(long)]
    pub normalize: bool,
    /// ienk: how the ensemble's direction moves theta. `plain`: theta -= lr sum_k c_k delta_k (with
    /// --momentum and --normalize as given; the thesis's rule). `adam`: Adam (0.9, 0.999, 1e-8) with
    /// learning rate --lr on the gradient estimate sum_k c_k delta_k / (M (c s_l)^2), as OpenAI's
    /// evolution strategies did; Adam's per-parameter scaling shrinks steps where the estimate is
    /// mostly noise (--momentum and --normalize do not apply to it).
    #[arg(long, value_enum, default_value_t = UpdateArg::Plain)]
    pub update: UpdateArg,
    /// ienk: subtract the members' mean coefficient, c_k - mean_j c_j, before any clipping:
    /// each member's output is compared with the ensemble's mean output instead of the mean
    /// network's (the anomalies of the ensemble Kalman filter's sample covariance). Removes the
    /// update's term mean_j c_j sum_k delta_k, noise that the thesis form makes large when the
    /// true class's probability collapses; no change with --antithetic (sum_k delta_k = 0).
    #[arg(long)]
    pub center: bool,
    /// ienk: clip each coefficient c_k to [-C, C] before the update; stabilises the thesis form,
    /// whose innovation -y / (p + 0.005) reaches 200 when the true class's probability collapses
    /// (with the thesis's settings, 2 gave 0.8857-0.8921 after 10 epochs on eight seeds).
    #[arg(long, value_name = "C", value_parser = positive_f32)]
    pub clip: Option<f32>,
    /// ienk (full rank): keep the M perturbations in memory (M times the parameters the batch's
    /// inputs touch) between the forward passes and the update instead of regenerating them from
    /// their seeds (O(P) memory). A little faster on several threads; without it the first
    /// thread's members sum their shares of the update as they go and the others keep as many
    /// perturbations as one more network holds, so that on one thread each perturbation is
    /// drawn once, and on two, with one image per step, nearly each. Small for small batches.
    #[arg(long)]
    pub store_perturbations: bool,
    /// ienk (low rank, one thread): memory that does not grow with --particles. Each draw's
    /// share of the update is added to the direction (P floats) as soon as its members'
    /// coefficients are known, so at most 64 draws' factors are held at a time, where the default
    /// keeps every member's factors (M (inputs + 2 H + outputs) r floats and more) for one
    /// matrix product at the end. The microcontroller build's path (core/firmware). Slower on a
    /// PC (the whole direction is read and written once per 64 draws: 2 to 3 times the
    /// default's time); the same coefficients, a direction summed in another order, so models
    /// differ from the default's in their last bits. Runs on one
    /// thread: --threads, when given, must be 1. Not with --center, which needs every
    /// coefficient first.
    #[arg(long)]
    pub low_memory: bool,
    /// eki: the eps of the adaptive step h0 / (||D||_F + eps).
    #[arg(long, default_value_t = 1e-8, value_name = "EPS", value_parser = positive_f32)]
    pub eki_eps: f32,
    /// eki: multiplicative inflation alpha >= 0, u_j <- ubar + (1 + alpha)(u_j - ubar) after each
    /// step.
    #[arg(long, default_value_t = 0.0, value_name = "ALPHA", value_parser = non_negative_f32)]
    pub inflation: f32,
    /// eki: redraw the ensemble around its mean every R steps (EKI(R)); 0 = never.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub randomize_every: u64,
}

/// The `--update` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UpdateArg {
    /// theta -= lr sum_k c_k delta_k.
    Plain,
    /// Adam on the gradient estimate.
    Adam,
}

/// The `--form` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormArg {
    /// The thesis's innovation in probability space, -y / (p + 0.005).
    Thesis,
    /// The innovation in logit space, p - y.
    Logit,
}

/// Options of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model file (safetensors) written by `train`.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Worker threads (default: all cores; at most 1024).
    #[arg(long, value_parser = thread_count)]
    pub threads: Option<usize>,
}

/// Options of `predict`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["index", "image"])))]
pub struct PredictArgs {
    /// The model file (safetensors) written by `train`.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Index of a test example (0..10000); its true label is printed too.
    #[arg(long, value_name = "I")]
    pub index: Option<usize>,
    /// A 28x28 image: PNG (any non-interlaced colour type and bit depth; colour by its luma,
    /// transparency over black) or PGM (P5 or P2, maxval <= 255). As in MNIST, dark is the
    /// background and light the ink; see --invert.
    #[arg(long, value_name = "FILE.png|FILE.pgm")]
    pub image: Option<PathBuf>,
    /// With --image: take 255 minus each gray level, for dark ink on a light background (a
    /// digit drawn in black on white).
    // `conflicts_with` rather than `requires = "image"`, which clap satisfies with any member
    // of the input group (clap-rs/clap#4707).
    #[arg(long, conflicts_with = "index")]
    pub invert: bool,
}

fn positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

/// The largest `--hidden`: about 0.8 G parameters, 3.3 GB per copy of them.
pub const MAX_HIDDEN: usize = 1 << 20;
/// The largest `--particles`: keeps every ensemble size (`M P`, EKI's `M x M`) within `usize`.
pub const MAX_PARTICLES: usize = 1 << 24;
/// The largest `--rank`: the input count, past which a rank-r perturbation of layer 1 costs more
/// than a full-rank one.
pub const MAX_RANK: usize = ienk::idx::IMAGE_PIXELS;

fn in_range(s: &str, min: usize, max: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        Ok(_) => Err(format!("must be in {min}..={max}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The largest `--threads`: each thread costs a stack and a few memory mappings, and tens of
/// thousands of them exhaust the system's before a start can fail cleanly.
pub const MAX_THREADS: usize = 1024;

fn thread_count(s: &str) -> Result<usize, String> {
    in_range(s, 1, MAX_THREADS)
}

fn hidden_units(s: &str) -> Result<usize, String> {
    in_range(s, 1, MAX_HIDDEN)
}

fn particles(s: &str) -> Result<usize, String> {
    in_range(s, 1, MAX_PARTICLES)
}

fn rank(s: &str) -> Result<usize, String> {
    in_range(s, 0, MAX_RANK)
        .map_err(|e| format!("{e} (a rank above the 784 inputs costs more than full rank, 0)"))
}

fn momentum(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        Ok(_) => Err("must be in [0, 1)".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn non_negative_f32(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number >= 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_u32(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

fn decay_factor(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        Ok(_) => Err("must be in (0, 1]".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_f32(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a positive finite number".into()),
        Err(e) => Err(e.to_string()),
    }
}
