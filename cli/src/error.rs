//! The CLI's error type: one line for the user, naming the file and the problem, and an exit code.

use std::fmt;
use std::path::{Path, PathBuf};

/// Exit status for bad input: a missing or malformed data, model or image file, or bad flags.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for a run that failed on good input (training diverged, a file could not be written).
pub const EXIT_FAILURE: u8 = 1;

/// Everything that can stop a command.
#[derive(Debug)]
pub enum CliError {
    /// A file that could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
        /// Whether it was being written (a failure on good input) rather than read.
        writing: bool,
    },
    /// A file that was read but is not what it should be.
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Input that is wrong without being a file: flags, a missing data set.
    BadInput(String),
    /// A run that failed on good input.
    Failed(String),
}

impl CliError {
    /// A malformed file.
    pub fn bad_file(path: &Path, reason: impl fmt::Display) -> Self {
        CliError::BadFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    /// A file that could not be read.
    pub fn read(path: &Path, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.to_path_buf(),
            source,
            writing: false,
        }
    }

    /// A file that could not be written.
    pub fn write(path: &Path, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.to_path_buf(),
            source,
            writing: true,
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Io { writing: true, .. } | CliError::Failed(_) => EXIT_FAILURE,
            _ => EXIT_BAD_INPUT,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Io {
                path,
                source,
                writing,
            } => {
                let verb = if *writing { "cannot write" } else { "cannot read" };
                write!(f, "{}: {verb}: {source}", path.display())
            }
            CliError::BadFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            CliError::BadInput(msg) | CliError::Failed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CliError {}

/// Result of a CLI step.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
