//! What the no-heap examples share: counting a network's correct answers on the test split, in
//! buffers the caller owns.

use ienk::idx::{IMAGE_PIXELS, Split};
use ienk::loss::argmax;
use ienk::mlp::{Layout, pixels_to_unit};

/// The buffers of one evaluation pass: `x` holds the rows of a batch of images (its length
/// fixes the batch), `hidden` and `logits` at least as many rows of the network's widths, and
/// `scratch` the GEMM scratch of `Layout::gemm_scratch_len` for that batch.
pub struct EvalBuffers<'a> {
    pub x: &'a mut [f32],
    pub hidden: &'a mut [f32],
    pub logits: &'a mut [f32],
    pub scratch: &'a mut [f32],
}

/// How many images of `test` the network `theta` (of `layout`) classifies correctly, taking the
/// first largest logit as `ienk-cli eval` does, a batch at a time.
pub fn correct_answers(
    layout: &Layout,
    theta: &[f32],
    test: &Split<'_>,
    b: EvalBuffers<'_>,
) -> Result<usize, String> {
    let (h, o) = (layout.hidden, layout.outputs);
    let batch = b.x.len() / IMAGE_PIXELS;
    if batch == 0 || b.hidden.len() < batch * h || b.logits.len() < batch * o {
        return Err(format!(
            "evaluation buffers: {} pixel, {} hidden and {} logit floats hold no batch of the 784-{h}-{o} network",
            b.x.len(),
            b.hidden.len(),
            b.logits.len()
        ));
    }
    let mut correct = 0;
    for start in (0..test.len()).step_by(batch) {
        let n = batch.min(test.len() - start);
        for (r, row) in b.x.chunks_exact_mut(IMAGE_PIXELS).take(n).enumerate() {
            pixels_to_unit(test.image(start + r).ok_or("test image out of range")?, row);
        }
        layout
            .forward(
                theta,
                &b.x[..n * IMAGE_PIXELS],
                &mut b.hidden[..n * h],
                &mut b.logits[..n * o],
                b.scratch,
            )
            .map_err(|e| format!("forward pass: {e}"))?;
        for (r, z) in b.logits.chunks_exact(o).take(n).enumerate() {
            correct += usize::from(test.label(start + r) == Some(argmax(z) as u8));
        }
    }
    Ok(correct)
}
