//! What a training run writes to `--out`, and when: the model of an epoch with its metadata,
//! the best epoch so far under `--keep-best`, and what a failed run's message says of the file.

use ienk::mlp::Layout;

use crate::buffers;
use crate::error::{CliError, Result};
use crate::model_io;
use crate::resume;
use crate::train::{EpochResult, TrainConfig};

/// A model as saved: after how many epochs, and its accuracies then.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Saved {
    /// Epochs done.
    pub(crate) epochs: u32,
    /// Test accuracy after them.
    pub(crate) test_accuracy: f64,
    /// Validation accuracy after them, with `--validation`.
    pub(crate) validation_accuracy: Option<f64>,
}

impl Saved {
    /// The model after epoch `epoch` (counted from 0) with its results.
    pub(crate) fn after(epoch: u32, result: &EpochResult) -> Saved {
        Saved {
            epochs: epoch + 1,
            test_accuracy: result.test_accuracy,
            validation_accuracy: result.validation.map(|(_, a)| a),
        }
    }

    /// `test accuracy A`, and `, validation accuracy V` when there is one.
    pub(crate) fn accuracies(&self) -> String {
        let validation = self
            .validation_accuracy
            .map(|a| format!(", validation accuracy {a:.4}"))
            .unwrap_or_default();
        format!("test accuracy {:.4}{validation}", self.test_accuracy)
    }

    /// `epoch E (test accuracy A ...)`.
    pub(crate) fn describe(&self) -> String {
        format!("epoch {} ({})", self.epochs, self.accuracies())
    }
}

/// With `--keep-best`: the epoch of the best validation accuracy so far, and its parameters.
pub(crate) struct BestEpoch {
    /// The best epoch so far, once there is one.
    pub(crate) kept: Option<Saved>,
    /// Its parameters.
    pub(crate) theta: Vec<f32>,
}

impl BestEpoch {
    /// Room for `params` parameters (fallible, like every large buffer of a run).
    pub(crate) fn new(params: usize) -> Result<BestEpoch> {
        Ok(BestEpoch {
            kept: None,
            theta: buffers::zeros("the best epoch's parameters", params)?,
        })
    }

    /// Keeps `epoch` (with its parameters `theta`) when its validation accuracy beats the kept
    /// one's, or none is kept yet; an epoch that only ties does not replace an earlier one.
    /// Whether it was kept. O(P) when kept.
    pub(crate) fn offer(&mut self, epoch: Saved, theta: &[f32]) -> bool {
        let accuracy = |s: &Saved| s.validation_accuracy.unwrap_or(f64::NEG_INFINITY);
        let better = self.kept.as_ref().is_none_or(|k| accuracy(&epoch) > accuracy(k));
        if better {
            self.kept = Some(epoch);
            self.theta.copy_from_slice(theta);
        }
        better
    }
}

/// Saves `theta` to `cfg.out` (atomically) with the run's metadata, as `saved` says it was
/// trained. O(P).
pub(crate) fn save(cfg: &TrainConfig, layout: &Layout, theta: &[f32], saved: Saved) -> Result<()> {
    let (epochs, seed, hidden, lr, batch_s, acc) = (
        saved.epochs.to_string(),
        cfg.seed.to_string(),
        cfg.hidden.to_string(),
        cfg.lr.to_string(),
        cfg.batch_size.to_string(),
        format!("{:.4}", saved.test_accuracy),
    );
    let validation = saved.validation_accuracy.map(|a| format!("{a:.4}"));
    let settings = resume::settings_record(cfg);
    let mut metadata = vec![
        ("format", model_io::FORMAT),
        ("optimizer", cfg.optimizer.name()),
        ("epochs", epochs.as_str()),
        ("seed", seed.as_str()),
        ("hidden", hidden.as_str()),
        ("lr", lr.as_str()),
        ("batch_size", batch_s.as_str()),
        ("test_accuracy", acc.as_str()),
        ("settings", settings.as_str()),
    ];
    if let Some(v) = &validation {
        metadata.push(("validation_accuracy", v.as_str()));
    }
    model_io::save_model(&cfg.out, layout, theta, &metadata)
}

/// A failed run's error `e`, completed with what became of the model: nothing was written, or
/// `out` keeps the checkpoint `saved`.
pub(crate) fn with_model_status(e: CliError, out: &std::path::Path, saved: Option<Saved>) -> CliError {
    let status = match saved {
        None => "no model was written".to_string(),
        Some(saved) => format!("{} keeps the model of {}", out.display(), saved.describe()),
    };
    match e {
        CliError::Failed(msg) => CliError::Failed(format!("{msg}; {status}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epochs: u32, validation: f64) -> Saved {
        Saved {
            epochs,
            test_accuracy: 0.5,
            validation_accuracy: Some(validation),
        }
    }

    /// The first epoch is kept, a better one replaces it with its parameters, a tie or a worse
    /// one does not.
    #[test]
    fn the_best_epoch_is_the_earliest_of_the_highest_validation_accuracy() {
        let mut best = BestEpoch::new(2).unwrap();
        let offers = [
            (0.6, [1.0, 1.0], true),
            (0.7, [2.0, 2.0], true),
            (0.7, [3.0, 3.0], false),
            (0.65, [4.0, 4.0], false),
        ];
        for (e, (accuracy, theta, kept)) in offers.into_iter().enumerate() {
            assert_eq!(
                best.offer(epoch(e as u32 + 1, accuracy), &theta),
                kept,
                "epoch {}",
                e + 1
            );
        }
        assert_eq!(best.kept.map(|k| k.epochs), Some(2));
        assert_eq!(best.theta, [2.0, 2.0]);
    }
}
