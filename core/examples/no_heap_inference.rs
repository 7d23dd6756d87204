//! Inference the way firmware runs it: the model file and the test set are byte slices (flash on
//! a device; read from files here, the only use of std besides printing), every buffer is a
//! fixed-size array, and the inference allocates nothing. Only ienk's no_std API is used.
//!
//! ```sh
//! gunzip -k data/mnist/t10k-images-idx3-ubyte.gz data/mnist/t10k-labels-idx1-ubyte.gz
//! cargo run --release -p ienk-core --example no_heap_inference -- model.safetensors \
//!     data/mnist/t10k-images-idx3-ubyte data/mnist/t10k-labels-idx1-ubyte
//! ```
//!
//! prints `test accuracy: 0.9723 (9723/10000)`, the line `ienk-cli eval` prints for the same
//! model (CI checks that they agree).

use std::process::ExitCode;

use ienk::idx::{IMAGE_PIXELS, NUM_CLASSES, Split};
use ienk::loss::argmax;
use ienk::mlp::{Layout, pixels_to_unit};
use ienk::safetensors;

/// The network this firmware is built for.
const LAYOUT: Layout = Layout::mnist(HIDDEN);
const HIDDEN: usize = 128;
const PARAMS: usize = IMAGE_PIXELS * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES;
/// Images per forward pass.
const BATCH: usize = 20;
/// GEMM scratch floats reserved; checked against `LAYOUT.forward_scratch_len(BATCH)`.
const SCRATCH: usize = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, images, labels] = args.as_slice() else {
        eprintln!(
            "usage: no_heap_inference MODEL.safetensors T10K_IMAGES_IDX T10K_LABELS_IDX (uncompressed)"
        );
        return ExitCode::from(2);
    };
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    let result = (|| {
        let (model, images, labels) = (read(model)?, read(images)?, read(labels)?);
        accuracy(&model, &images, &labels)
    })();
    match result {
        Ok((correct, total)) => {
            let acc = correct as f64 / total.max(1) as f64;
            println!("test accuracy: {acc:.4} ({correct}/{total})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("no_heap_inference: {e}");
            ExitCode::from(2)
        }
    }
}

/// What the firmware runs: parse the model and the test set in place, then classify every image,
/// `BATCH` at a time, with stack buffers only. Returns (correct, total).
fn accuracy(model: &[u8], images: &[u8], labels: &[u8]) -> Result<(usize, usize), String> {
    let m = safetensors::read(model, IMAGE_PIXELS, NUM_CLASSES).map_err(|e| format!("model: {e}"))?;
    if m.layout != LAYOUT {
        return Err(format!(
            "model: hidden size {}, this build expects {HIDDEN}",
            m.layout.hidden
        ));
    }
    let mut theta = [0f32; PARAMS];
    m.copy_params(&mut theta).map_err(|e| format!("model: {e}"))?;
    let test = Split::parse(images, labels).map_err(|e| format!("test set: {e}"))?;
    let need = LAYOUT.forward_scratch_len(BATCH);
    if need > SCRATCH {
        return Err(format!("GEMM scratch: {need} floats needed, {SCRATCH} reserved"));
    }
    let (mut scratch, mut x) = ([0f32; SCRATCH], [0f32; BATCH * IMAGE_PIXELS]);
    let (mut hidden, mut logits) = ([0f32; BATCH * HIDDEN], [0f32; BATCH * NUM_CLASSES]);
    let mut correct = 0;
    for start in (0..test.len()).step_by(BATCH) {
        let n = BATCH.min(test.len() - start);
        for (r, row) in x.chunks_exact_mut(IMAGE_PIXELS).take(n).enumerate() {
            pixels_to_unit(test.image(start + r).ok_or("test image out of range")?, row);
        }
        LAYOUT
            .forward(
                &theta,
                &x[..n * IMAGE_PIXELS],
                &mut hidden[..n * HIDDEN],
                &mut logits[..n * NUM_CLASSES],
                &mut scratch[..need],
            )
            .map_err(|e| format!("forward pass: {e}"))?;
        // The first largest logit, as `ienk-cli eval` takes it.
        for (r, z) in logits.chunks_exact(NUM_CLASSES).take(n).enumerate() {
            correct += usize::from(test.label(start + r) == Some(argmax(z) as u8));
        }
    }
    Ok((correct, test.len()))
}
