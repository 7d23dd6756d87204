//! Command-line options (clap derive). Each flag's doc comment is its `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print, per split, the number of examples, the image size, the count of each class and the
    /// mean pixel value.
    Info,
}
