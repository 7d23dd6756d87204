//! `ienk-cli info`: a summary of each split, so a user sees at once that the data is right.

use std::fmt::Write as _;

use ienk::idx::{IMAGE_SIDE, Split};

use crate::data::Mnist;

/// The report printed by `info`. O(size of MNIST).
pub fn report(mnist: &Mnist) -> crate::error::Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "data directory: {}", mnist.dir.display());
    let _ = writeln!(out, "matrix kernel: {}", ienk::gemm::active_kernel());
    for (name, files) in [("train", &mnist.train), ("test", &mnist.test)] {
        let split = files.view()?;
        let _ = writeln!(
            out,
            "{name}: {} examples of {IMAGE_SIDE}x{IMAGE_SIDE} pixels",
            split.len()
        );
        let _ = writeln!(out, "  images: {}", files.images_path.display());
        let _ = writeln!(out, "  labels: {}", files.labels_path.display());
        let _ = writeln!(out, "  class counts: {}", class_counts(&split));
        let mean = split.mean_pixel();
        let _ = writeln!(out, "  mean pixel: {mean:.2} of 255 ({:.4})", mean / 255.0);
    }
    Ok(out)
}

fn class_counts(split: &Split<'_>) -> String {
    let counts = split.class_counts();
    counts
        .iter()
        .enumerate()
        .map(|(digit, n)| format!("{digit}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
