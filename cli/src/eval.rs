//! Evaluation of a model on a split: loss, accuracy, per-class accuracy, confusion matrix.
//! The split is cut into chunks of rows, and chunks are spread over threads.

use std::fmt::Write as _;

use ienk::batch::Batch;
use ienk::idx::{IMAGE_PIXELS, NUM_CLASSES, Split};
use ienk::loss::{BatchStats, argmax, cross_entropy};
use ienk::mlp::Layout;

use crate::error::{CliError, Result};

/// Rows evaluated per forward pass.
const CHUNK: usize = 1000;

/// What an evaluation found.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Summed loss, correct count, example count.
    pub stats: BatchStats,
    /// `confusion[label][predicted]`.
    pub confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
}

impl Evaluation {
    fn merge(&mut self, other: &Evaluation) {
        self.stats.merge(other.stats);
        for (row, orow) in self.confusion.iter_mut().zip(&other.confusion) {
            row.iter_mut().zip(orow).for_each(|(a, b)| *a += b);
        }
    }

    /// The report of `ienk-cli eval`: accuracy line, loss, per-class accuracy, confusion matrix.
    pub fn report(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "test accuracy: {:.4} ({}/{})",
            s.accuracy(),
            s.correct,
            s.count
        );
        let _ = writeln!(out, "test loss: {:.4}", s.mean_loss());
        let _ = writeln!(out, "per-class accuracy:");
        for (digit, row) in self.confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            let acc = if total == 0 {
                0.0
            } else {
                row[digit] as f64 / total as f64
            };
            let _ = writeln!(out, "  {digit}: {acc:.4} ({}/{total})", row[digit]);
        }
        let _ = writeln!(out, "confusion matrix (rows: label, columns: predicted):");
        let _ = writeln!(
            out,
            "     {}",
            (0..NUM_CLASSES).map(|d| format!("{d:>6}")).collect::<String>()
        );
        for (digit, row) in self.confusion.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {digit}: {}",
                row.iter().map(|n| format!("{n:>6}")).collect::<String>()
            );
        }
        out
    }
}

fn evaluate_rows(
    layout: &Layout,
    theta: &[f32],
    split: &Split<'_>,
    rows: std::ops::Range<usize>,
) -> Result<Evaluation> {
    let mut eval = Evaluation::default();
    let n = CHUNK.min(rows.len());
    let mut x = vec![0f32; n * IMAGE_PIXELS];
    let mut y = vec![0u8; n];
    let mut hidden = vec![0f32; n * layout.hidden];
    let mut logits = vec![0f32; n * layout.outputs];
    let mut scratch = vec![0f32; layout.forward_scratch_len(n)];
    let mut start = rows.start;
    while start < rows.end {
        let len = CHUNK.min(rows.end - start);
        let idx: Vec<u32> = (start as u32..(start + len) as u32).collect();
        let (x, y) = (&mut x[..len * IMAGE_PIXELS], &mut y[..len]);
        let (hidden, logits) = (
            &mut hidden[..len * layout.hidden],
            &mut logits[..len * layout.outputs],
        );
        if !Batch::new(*split, &idx).is_some_and(|b| b.gather(x, y)) {
            return Err(CliError::Failed(
                "internal error: evaluation batch out of range".into(),
            ));
        }
        layout
            .forward(theta, x, hidden, logits, &mut scratch)
            .map_err(|e| CliError::Failed(format!("evaluation failed: {e}")))?;
        let stats = cross_entropy(logits, layout.outputs, y)
            .map_err(|e| CliError::Failed(format!("evaluation failed: {e}")))?;
        eval.stats.merge(stats);
        for (row, &label) in logits.chunks_exact(layout.outputs).zip(y.iter()) {
            eval.confusion[usize::from(label)][argmax(row)] += 1;
        }
        start += len;
    }
    Ok(eval)
}

/// Evaluates `theta` on the whole split with `threads` threads. Costs `2 n P` flops.
pub fn evaluate(layout: &Layout, theta: &[f32], split: &Split<'_>, threads: usize) -> Result<Evaluation> {
    let n = split.len();
    let per = n.div_ceil(threads.max(1)).max(1);
    let parts: Vec<Result<Evaluation>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(per)
            .map(|start| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || {
                        evaluate_rows(layout, theta, split, start..(start + per).min(n))
                    })
                    .map_err(|e| {
                        CliError::BadInput(format!("cannot start an evaluation thread: {e}; lower --threads"))
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h?.join()
                    .unwrap_or_else(|_| Err(CliError::Failed("an evaluation thread panicked".into())))
            })
            .collect()
    });
    let mut total = Evaluation::default();
    for part in parts {
        total.merge(&part?);
    }
    Ok(total)
}
