//! The update rule every trainer drives: the `Optimizer` trait, the batch buffers the optimizers
//! share, and the refusal of `--resume` for rules that keep state between steps.

use ienk::batch::Batch;
use ienk::idx::IMAGE_PIXELS;
use ienk::loss::BatchStats;

use crate::buffers;
use crate::error::{CliError, Result};

/// One update rule: moves `theta` on a batch and reports the batch's loss and accuracy measured
/// before the move.
pub trait Optimizer {
    /// One update on `batch`.
    fn step(&mut self, theta: &mut [f32], batch: &Batch<'_>) -> Result<BatchStats>;

    /// Sets the learning rate (`--lr`'s meaning for this optimizer) for the next steps.
    fn set_lr(&mut self, lr: f32);

    /// Makes the next step number `steps` of the run, for parameters saved after `steps` steps
    /// (`--resume`). An error, before any step, when the optimizer keeps state between steps
    /// that a model file does not hold: its run could not continue as it would have. O(1).
    fn resume_at(&mut self, steps: u64) -> Result<()>;

    /// Writes back into `theta` what the optimizer keeps in a layout of its own between steps;
    /// the trainer calls it before it reads theta (evaluation, saving). O(P) at most.
    fn sync(&mut self, _theta: &mut [f32]) -> Result<()> {
        Ok(())
    }
}

/// Buffers for a batch as dense f32 rows and labels, for the optimizers that read it that way.
pub(crate) struct DenseRows {
    x: Vec<f32>,
    y: Vec<u8>,
}

impl DenseRows {
    /// Buffers for batches of up to `batch` examples.
    pub(crate) fn new(batch: usize) -> Result<Self> {
        Ok(DenseRows {
            x: buffers::zeros(
                "the batch's rows",
                buffers::product("the batch's rows", &[batch, IMAGE_PIXELS])?,
            )?,
            y: buffers::zeros("the batch's labels", batch)?,
        })
    }

    /// `batch` as rows of pixels / 255 (`len x 784`) and labels. O(len x 784).
    pub(crate) fn load(&mut self, batch: &Batch<'_>) -> Result<(&[f32], &[u8])> {
        let n = batch.len();
        if let (Some(x), Some(y)) = (self.x.get_mut(..n * IMAGE_PIXELS), self.y.get_mut(..n))
            && batch.gather(x, y)
        {
            return Ok((x, y));
        }
        Err(CliError::Failed(format!(
            "internal error: a batch of {n} exceeds the optimizer's buffers"
        )))
    }
}

/// The refusal of `--resume` for an optimizer that keeps `state` between steps.
pub(crate) fn cannot_resume(optimizer: &str, state: &str) -> CliError {
    CliError::BadInput(format!(
        "--resume: {optimizer} keeps {state} between steps, which the model file does not hold, so the run \
         cannot continue as it would have; train it again from the start"
    ))
}
