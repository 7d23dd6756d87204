//! Library half of the `ienk-cli` binary: argument parsing, data loading and the commands, so
//! that integration tests can drive them in-process.

pub mod args;
pub mod data;
pub mod error;
pub mod info;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

use args::{Cli, Command};
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
    let cli = Cli::try_parse_from(argv)?;
    Ok(dispatch(cli, out))
}

fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<()> {
    match cli.command {
        Command::Info => {
            let mnist = data::Mnist::load(&cli.global.data_dir)?;
            let report = info::report(&mnist)?;
            out.write_all(report.as_bytes())
                .map_err(|e| CliError::Failed(format!("cannot write the report: {e}")))
        }
    }
}
