//! The CSV metrics log of a training run, written row by row (flushed, so a killed run keeps
//! what it logged).
//!
//! Columns:
//! - `kind`: `step` (a logged training step) or `epoch` (the end of an epoch);
//! - `epoch`: 0-based epoch; `step`: optimizer steps since the start;
//! - `examples`: training examples seen since the start; `seconds`: wall time since the start;
//! - `loss`, `accuracy`: the batch's (step rows) or the epoch's running mean (epoch rows), measured
//!   before each update;
//! - `test_loss`, `test_accuracy`: on the test split, epoch rows only (empty on step rows);
//! - `val_loss`, `val_accuracy`: on the examples `--validation` holds out, epoch rows of runs
//!   that hold some out (empty otherwise).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// The header row.
pub const HEADER: &str =
    "kind,epoch,step,examples,seconds,loss,accuracy,test_loss,test_accuracy,val_loss,val_accuracy";

/// The header of the logs written before `--validation` existed (refused by
/// [`MetricsLog::append`]: its rows have two columns fewer).
const HEADER_BEFORE_VALIDATION: &str =
    "kind,epoch,step,examples,seconds,loss,accuracy,test_loss,test_accuracy";

/// One row.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// `step` or `epoch`.
    pub kind: &'static str,
    /// 0-based epoch.
    pub epoch: u32,
    /// Optimizer steps since the start.
    pub step: u64,
    /// Examples seen since the start.
    pub examples: u64,
    /// Seconds since the start.
    pub seconds: f64,
    /// Training loss.
    pub loss: f64,
    /// Training accuracy.
    pub accuracy: f64,
    /// Test loss and accuracy (epoch rows).
    pub test: Option<(f64, f64)>,
    /// Validation loss and accuracy (epoch rows of runs with `--validation`).
    pub validation: Option<(f64, f64)>,
}

/// An open metrics file.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Creates (truncates) the file and writes the header.
    pub fn create(path: &Path) -> Result<MetricsLog> {
        let file = File::create(path).map_err(|e| CliError::write(path, e))?;
        let mut log = MetricsLog {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        };
        log.write_line(HEADER)?;
        Ok(log)
    }

    /// Opens the file to add rows after those it holds (`train --resume`): a new or empty file
    /// gets the header; a file that does not start with it is refused, unchanged.
    pub fn append(path: &Path) -> Result<MetricsLog> {
        // The first line is enough to tell: an empty (or new) file, or a log.
        let mut first = String::new();
        match File::open(path) {
            Ok(f) => {
                BufReader::new(f)
                    .read_line(&mut first)
                    .map_err(|e| CliError::read(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CliError::read(path, e)),
        }
        let empty = first.is_empty();
        let first = first.trim_end_matches(['\n', '\r']);
        if first == HEADER_BEFORE_VALIDATION {
            return Err(CliError::bad_file(
                path,
                "a metrics log of an older ienk-cli train, without the val_loss and val_accuracy columns; \
                 give --log a new file",
            ));
        }
        if !empty && first != HEADER {
            return Err(CliError::bad_file(
                path,
                "not a metrics log of ienk-cli train (its first line is not the header); rows are only appended to one",
            ));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CliError::write(path, e))?;
        let mut log = MetricsLog {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        };
        if empty {
            log.write_line(HEADER)?;
        }
        Ok(log)
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(|e| CliError::write(&self.path, e))
    }

    /// Appends a row.
    pub fn row(&mut self, r: &Row) -> Result<()> {
        let pair = |p: Option<(f64, f64)>| match p {
            Some((l, a)) => format!("{l:.6},{a:.6}"),
            None => ",".into(),
        };
        let line = format!(
            "{},{},{},{},{:.3},{:.6},{:.6},{},{}",
            r.kind,
            r.epoch,
            r.step,
            r.examples,
            r.seconds,
            r.loss,
            r.accuracy,
            pair(r.test),
            pair(r.validation)
        );
        self.write_line(&line)
    }
}
