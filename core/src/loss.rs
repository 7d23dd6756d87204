//! Softmax cross-entropy over rows of logits, through log-sum-exp, and its gradient.

use crate::exp::exp_into;
use crate::mlp::MlpError;

/// Sums over a batch: total loss, correct predictions, examples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Sum of the per-example losses `logsumexp(z) - z_y` (f64).
    pub loss_sum: f64,
    /// Examples whose arg-max logit is the label.
    pub correct: usize,
    /// Examples.
    pub count: usize,
}

impl BatchStats {
    /// Mean loss (0 for no example).
    pub fn mean_loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }

    /// Fraction of correct predictions (0 for no example).
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }

    /// Adds another batch's sums.
    pub fn merge(&mut self, other: BatchStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
    }
}

/// Index of the largest value (the first one on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best
}

/// Calls `each(j, libm::exp(f64::from(row[j]) - shift))` for every `j` in order, the
/// exponentials taken [`crate::exp::exp_into`] a chunk at a time.
fn exps(row: &[f32], shift: f64, mut each: impl FnMut(usize, f64)) {
    const CHUNK: usize = 16;
    let (mut args, mut vals) = ([0f64; CHUNK], [0f64; CHUNK]);
    for (c, chunk) in row.chunks(CHUNK).enumerate() {
        let n = chunk.len();
        args.iter_mut()
            .zip(chunk)
            .for_each(|(a, &z)| *a = f64::from(z) - shift);
        exp_into(&args[..n], &mut vals[..n]);
        vals[..n]
            .iter()
            .enumerate()
            .for_each(|(j, &e)| each(CHUNK * c + j, e));
    }
}

/// `log sum exp(row)` with the maximum subtracted, in f64 (the sum taken in order).
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max = f64::from(max);
    let mut sum = 0.0;
    exps(row, max, |_, e| sum += e);
    max + libm::log(sum)
}

fn check_labels(labels: &[u8], classes: usize) -> Result<(), MlpError> {
    match labels.iter().position(|&l| usize::from(l) >= classes) {
        Some(index) => Err(MlpError::Label {
            index,
            value: labels[index],
        }),
        None => Ok(()),
    }
}

/// Loss and accuracy of `logits` (`labels.len() x classes`). O(batch classes).
pub fn cross_entropy(logits: &[f32], classes: usize, labels: &[u8]) -> Result<BatchStats, MlpError> {
    crate::mlp::check_len("logits", logits.len(), labels.len() * classes)?;
    check_labels(labels, classes)?;
    let mut stats = BatchStats::default();
    for (row, &y) in logits.chunks_exact(classes.max(1)).zip(labels) {
        add_example(&mut stats, row, y, log_sum_exp(row));
    }
    Ok(stats)
}

/// Adds one example with logits `row`, label `y` and `log sum exp(row)` = `lse` to `stats`.
fn add_example(stats: &mut BatchStats, row: &[f32], y: u8, lse: f64) {
    let y = usize::from(y);
    stats.count += 1;
    stats.loss_sum += lse - f64::from(row[y]);
    stats.correct += usize::from(argmax(row) == y);
}

/// As [`cross_entropy`], and writes the gradient of the mean batch loss with respect to the
/// logits: `dlogits = (softmax(z) - onehot(y)) / batch`. O(batch classes): `2 classes`
/// exponentials and a logarithm per example.
pub fn cross_entropy_grad(
    logits: &[f32],
    classes: usize,
    labels: &[u8],
    dlogits: &mut [f32],
) -> Result<BatchStats, MlpError> {
    crate::mlp::check_len("logits", logits.len(), labels.len() * classes)?;
    crate::mlp::check_len("dlogits", dlogits.len(), logits.len())?;
    check_labels(labels, classes)?;
    let mut stats = BatchStats::default();
    let inv_batch = 1.0 / labels.len().max(1) as f64;
    for ((row, drow), &y) in logits
        .chunks_exact(classes.max(1))
        .zip(dlogits.chunks_exact_mut(classes.max(1)))
        .zip(labels)
    {
        let lse = log_sum_exp(row);
        add_example(&mut stats, row, y, lse);
        exps(row, lse, |j, p| {
            let target = if j == usize::from(y) { 1.0 } else { 0.0 };
            drow[j] = ((p - target) * inv_batch) as f32;
        });
    }
    Ok(stats)
}

/// Softmax of one row of logits into `probs`. O(len).
pub fn softmax(logits: &[f32], probs: &mut [f32]) {
    let lse = log_sum_exp(logits);
    let n = probs.len().min(logits.len());
    exps(&logits[..n], lse, |j, p| probs[j] = p as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_loss_and_gradient() {
        // Row [0, ln 3]: softmax = [1/4, 3/4]; label 0 -> loss ln 4; label 1 -> loss ln(4/3).
        let z = [0.0, 3f32.ln(), 0.0, 3f32.ln()];
        let mut d = [0f32; 4];
        let s = cross_entropy_grad(&z, 2, &[0, 1], &mut d).unwrap();
        let expected = (4f64.ln() + (4.0f64 / 3.0).ln()) / 2.0;
        assert!((s.mean_loss() - expected).abs() < 1e-6);
        assert_eq!(s.correct, 1);
        let want = [(0.25 - 1.0) / 2.0, 0.75 / 2.0, 0.25 / 2.0, (0.75 - 1.0) / 2.0];
        for (a, b) in d.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{d:?}");
        }
    }

    #[test]
    fn huge_logits_do_not_overflow() {
        let s = cross_entropy(&[1000.0, -1000.0], 2, &[1]).unwrap();
        assert!((s.loss_sum - 2000.0).abs() < 1e-9);
    }

    #[test]
    fn bad_label_is_an_error() {
        assert!(matches!(
            cross_entropy(&[0.0; 3], 3, &[3]),
            Err(MlpError::Label { index: 0, value: 3 })
        ));
    }
}
