//! `ienk-cli predict`: the digit and class probabilities of one image.

use std::fmt::Write as _;

use ienk::idx::{IMAGE_PIXELS, NUM_CLASSES};
use ienk::loss::{argmax, softmax};
use ienk::mlp::pixels_to_unit;

use crate::error::{CliError, Result};
use crate::model_io::LoadedModel;

/// Runs the model on 784 pixels; returns the report. O(P).
pub fn report(model: &LoadedModel, pixels: &[u8], label: Option<u8>) -> Result<String> {
    let layout = model.layout;
    let mut x = vec![0f32; IMAGE_PIXELS];
    pixels_to_unit(pixels, &mut x);
    let mut hidden = vec![0f32; layout.hidden];
    let mut logits = vec![0f32; NUM_CLASSES];
    let mut scratch = vec![0f32; layout.forward_scratch_len(1)];
    layout
        .forward(&model.theta, &x, &mut hidden, &mut logits, &mut scratch)
        .map_err(|e| CliError::Failed(format!("prediction failed: {e}")))?;
    let mut probs = [0f32; NUM_CLASSES];
    softmax(&logits, &mut probs);
    let mut out = String::new();
    let _ = writeln!(out, "predicted digit: {}", argmax(&logits));
    if let Some(l) = label {
        let _ = writeln!(out, "true label: {l}");
    }
    let _ = writeln!(out, "probabilities:");
    for (d, p) in probs.iter().enumerate() {
        let _ = writeln!(out, "  {d}: {p:.4}");
    }
    Ok(out)
}
