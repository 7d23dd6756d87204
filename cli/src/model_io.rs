//! Saving (atomically) and loading model files.

use std::io::Write;
use std::path::{Path, PathBuf};

use ienk::idx::{IMAGE_PIXELS, NUM_CLASSES};
use ienk::mlp::Layout;
use ienk::safetensors;

use crate::error::{CliError, Result};

/// Version string written in every model's metadata.
pub const FORMAT: &str = "ienk-model-1";

/// A model read from disk.
#[derive(Debug)]
pub struct LoadedModel {
    /// Its layout.
    pub layout: Layout,
    /// Its parameters.
    pub theta: Vec<f32>,
    /// The metadata entries `train` writes, as found (raw strings, absent when missing).
    pub metadata: ModelMetadata,
}

impl LoadedModel {
    /// The Frobenius norm of each tensor, in the file's order and with its names, for `ienk-cli
    /// eval`: `weights (Frobenius norms): 0.weight 14.83, 0.bias 0.00, 2.weight 4.28, 2.bias 0.00`
    /// (a Glorot initialisation of the thesis's network), the sums of squares accumulated in
    /// f64. A run that ran away shows here as a layer-1 norm several times its initial one. O(P).
    pub fn weight_norms(&self) -> String {
        let norms: Vec<String> = safetensors::TENSOR_NAMES
            .iter()
            .zip(self.layout.ranges())
            .map(|(name, range)| {
                let squares: f64 = self.theta[range]
                    .iter()
                    .map(|&w| f64::from(w) * f64::from(w))
                    .sum();
                format!("{name} {:.2}", squares.sqrt())
            })
            .collect();
        format!("weights (Frobenius norms): {}\n", norms.join(", "))
    }
}

/// The metadata entries of a model file that `ienk-cli` reads back.
#[derive(Debug, Default)]
pub struct ModelMetadata {
    /// The optimizer that trained it.
    pub optimizer: Option<String>,
    /// The record of the run's settings (`resume::settings_record`).
    pub settings: Option<String>,
    /// Epochs done.
    pub epochs: Option<String>,
    /// Test accuracy after them.
    pub test_accuracy: Option<String>,
    /// Accuracy on the examples `train --validation` held out, when it did.
    pub validation_accuracy: Option<String>,
}

impl ModelMetadata {
    /// Where a model came from, for `ienk-cli eval`: its layout, then, when `train` wrote it,
    /// the optimizer, the epochs, the test accuracy recorded when it was saved and the run's
    /// settings (a line each). O(length of the settings).
    pub fn describe(&self, layout: &Layout) -> String {
        let shape = format!("{}-{}-{}", layout.inputs, layout.hidden, layout.outputs);
        let Some(optimizer) = &self.optimizer else {
            return format!("model: {shape} MLP, no training record (not written by ienk-cli train)\n");
        };
        let mut out = format!("model: {shape} MLP trained by {optimizer}");
        if let Some(epochs) = &self.epochs {
            let unit = if epochs == "1" { "epoch" } else { "epochs" };
            out += &format!(" for {epochs} {unit}");
        }
        if let Some(accuracy) = &self.test_accuracy {
            out += &format!(", test accuracy {accuracy} when saved");
        }
        if let Some(accuracy) = &self.validation_accuracy {
            out += &format!(" (validation accuracy {accuracy})");
        }
        out.push('\n');
        if let Some(settings) = &self.settings {
            out += &format!("settings: {settings}\n");
        }
        out
    }
}

/// The temporary file [`save_atomic`] writes before renaming it to `path`: a hidden name in the
/// same directory, unique to this process.
fn temp_path(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Checks, before a long run, that [`save_atomic`] will be able to write `path`: `path` is not a
/// directory, and its temporary file can be created (then removed) in its directory. An error
/// names `flag` and the reason (bad input: nothing has run yet). O(1) file operations.
pub fn check_writable(path: &Path, flag: &str) -> Result<()> {
    let refuse = |reason: String| CliError::BadInput(format!("{flag} {}: {reason}", path.display()));
    if path.is_dir() {
        return Err(refuse("is a directory; give a file name".into()));
    }
    let tmp = temp_path(path);
    std::fs::File::create(&tmp).map_err(|e| refuse(format!("cannot write there: {e}")))?;
    std::fs::remove_file(&tmp).map_err(|e| refuse(format!("cannot remove the probe {}: {e}", tmp.display())))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to disk,
/// then renamed over `path`. A crash leaves either the old file or the new one, never half of one.
pub fn save_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::write(path, e)
    })
}

/// Serialises a model with its metadata and saves it atomically.
pub fn save_model(path: &Path, layout: &Layout, theta: &[f32], metadata: &[(&str, &str)]) -> Result<()> {
    let mut bytes = vec![0u8; safetensors::serialized_len(layout, metadata)];
    safetensors::write(layout, theta, metadata, &mut bytes)
        .map_err(|e| CliError::Failed(format!("cannot serialise the model: {e}")))?;
    save_atomic(path, &bytes)
}

/// Reads and validates a model file of a 784-H-10 network.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).map_err(|e| CliError::read(path, e))?;
    let model = safetensors::read(&bytes, IMAGE_PIXELS, NUM_CLASSES)
        .map_err(|e| CliError::bad_file(path, format_args!("not a valid ienk model: {e}")))?;
    let mut theta = vec![0f32; model.layout.num_params()];
    model
        .copy_params(&mut theta)
        .map_err(|e| CliError::bad_file(path, e))?;
    Ok(LoadedModel {
        layout: model.layout,
        theta,
        metadata: ModelMetadata {
            optimizer: model.metadata("optimizer").map(str::to_owned),
            settings: model.metadata("settings").map(str::to_owned),
            epochs: model.metadata("epochs").map(str::to_owned),
            test_accuracy: model.metadata("test_accuracy").map(str::to_owned),
            validation_accuracy: model.metadata("validation_accuracy").map(str::to_owned),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_the_layout_and_what_train_recorded() {
        let layout = Layout::mnist(64);
        let foreign = ModelMetadata::default();
        assert_eq!(
            foreign.describe(&layout),
            "model: 784-64-10 MLP, no training record (not written by ienk-cli train)\n"
        );
        let trained = ModelMetadata {
            optimizer: Some("ienk".into()),
            settings: Some("optimizer=ienk lr=0.001".into()),
            epochs: Some("10".into()),
            test_accuracy: Some("0.8865".into()),
            validation_accuracy: None,
        };
        assert_eq!(
            trained.describe(&layout),
            "model: 784-64-10 MLP trained by ienk for 10 epochs, test accuracy 0.8865 when saved\n\
             settings: optimizer=ienk lr=0.001\n"
        );
        let selected = ModelMetadata {
            epochs: Some("1".into()),
            validation_accuracy: Some("0.9012".into()),
            ..trained
        };
        assert_eq!(
            selected.describe(&layout),
            "model: 784-64-10 MLP trained by ienk for 1 epoch, test accuracy 0.8865 when saved \
             (validation accuracy 0.9012)\nsettings: optimizer=ienk lr=0.001\n"
        );
    }
}
