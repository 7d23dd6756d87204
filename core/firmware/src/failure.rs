//! Why a run stopped: one message, naming the file or the step, printed before the board exits
//! with failure.

use core::fmt;

use ienk::ensemble::step::StepError;
use ienk::idx::IdxError;
use ienk::mlp::MlpError;
use ienk::safetensors::SafetensorsError;

use crate::host::{FileName, HostError};

/// Everything that can stop the firmware; `'a` borrows the command line.
pub enum Failure<'a> {
    /// The command line is wrong; the text says how.
    Usage(&'static str),
    /// The host could not give the command line.
    CommandLine(HostError),
    /// An argument that should be a number is not one.
    Number {
        /// The argument's name in the usage line.
        name: &'static str,
        /// What was given.
        value: &'a str,
    },
    /// A path longer than the firmware holds.
    PathTooLong(FileName<'a>),
    /// A host file could not be opened, read or written.
    Host {
        /// The file.
        path: FileName<'a>,
        /// What went wrong.
        error: HostError,
    },
    /// An IDX file is not what MNIST's is.
    Idx {
        /// The file (for a count mismatch, the labels').
        path: FileName<'a>,
        /// What is wrong with it.
        error: IdxError,
    },
    /// A training image has more non-zero pixels than the step workspace is sized for.
    TooManyPixels {
        /// The image's index in the training file.
        index: usize,
        /// Its non-zero pixels.
        active: usize,
        /// The bound the workspace is sized for.
        bound: usize,
    },
    /// More training examples asked for than the build's order holds.
    TooManyExamples {
        /// Examples the run would use.
        asked: usize,
        /// `MAX_EXAMPLES` of this build.
        bound: usize,
    },
    /// A buffer reserved at build time is smaller than the run needs.
    Workspace {
        /// What the buffer is for.
        what: &'static str,
        /// Floats needed.
        need: usize,
        /// Floats reserved.
        have: usize,
    },
    /// An IEnK step failed (it diverged, or a buffer was wrong); the parameters were not changed.
    Step {
        /// The epoch, from 1.
        epoch: u64,
        /// The step, from 1.
        step: u64,
        /// Why.
        error: StepError,
    },
    /// A forward pass or the initialisation refused its buffers.
    Network(MlpError),
    /// The model cannot be written as safetensors.
    Model(SafetensorsError<'static>),
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(why) => write!(f, "{why}\n{}", crate::USAGE),
            Failure::CommandLine(e) => write!(f, "the command line: {e}"),
            Failure::Number { name, value } => write!(f, "{name} {value:?} is not a number"),
            Failure::PathTooLong(file) => write!(f, "{file}: the path is longer than 255 bytes"),
            Failure::Host { path, error } => write!(f, "{path}: {error}"),
            Failure::Idx { path, error } => write!(f, "{path}: {error}"),
            Failure::TooManyPixels { index, active, bound } => write!(
                f,
                "training image {index} has {active} non-zero pixels; the step workspace is sized for {bound} \
                 (raise MAX_ACTIVE)"
            ),
            Failure::TooManyExamples { asked, bound } => write!(
                f,
                "EXAMPLES {asked}: this build holds at most {bound} training examples (set \
                 IENK_MAX_EXAMPLES, up to 65536, when building)"
            ),
            Failure::Workspace { what, need, have } => {
                write!(f, "{what}: {need} floats needed, {have} reserved")
            }
            Failure::Step { epoch, step, error } => write!(f, "epoch {epoch}, step {step}: {error}"),
            Failure::Network(e) => write!(f, "network: {e}"),
            Failure::Model(e) => write!(f, "model: {e}"),
        }
    }
}
