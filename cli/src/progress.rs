//! The thesis's progress line and the time-remaining estimate.

use std::time::Duration;

/// Time left, assuming the remaining steps go at the average pace so far.
pub fn remaining(elapsed: Duration, done: u64, total: u64) -> Duration {
    if done == 0 || done >= total {
        return Duration::ZERO;
    }
    elapsed.mul_f64((total - done) as f64 / done as f64)
}

/// `1 epoch`, `2 epochs`: a count with its unit, singular for one. O(1).
pub fn counted(count: usize, unit: &str) -> String {
    match count {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    }
}

/// `H Hrs M Mins S Secs`.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{} Hrs {} Mins {} Secs", s / 3600, (s / 60) % 60, s % 60)
}

/// The thesis's progress line, with the examples per second appended.
#[allow(clippy::too_many_arguments)]
pub fn line(
    epoch: u32,
    epochs: u32,
    examples: usize,
    loss: f64,
    batch_acc: f64,
    running_acc: f64,
    left: Duration,
    per_sec: f64,
) -> String {
    format!(
        "=== Epoch: {epoch}/{epochs} === Iter:{examples} === Loss: {loss:.2} === BAcc: {batch_acc:.2} === \
         TAcc: {running_acc:.2} === Remain: {} === {per_sec:.0} ex/s ===",
        hms(left)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_is_proportional() {
        assert_eq!(remaining(Duration::from_secs(10), 1, 5), Duration::from_secs(40));
        assert_eq!(remaining(Duration::from_secs(10), 5, 5), Duration::ZERO);
        assert_eq!(hms(Duration::from_secs(3723)), "1 Hrs 2 Mins 3 Secs");
    }

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(counted(1, "epoch"), "1 epoch");
        assert_eq!(counted(0, "epoch"), "0 epochs");
        assert_eq!(counted(3, "epoch"), "3 epochs");
    }

    #[test]
    fn line_has_the_thesis_fields() {
        let l = line(0, 10, 500, 2.391, 0.1, 0.1, Duration::from_secs(12), 1000.0);
        assert_eq!(
            l,
            "=== Epoch: 0/10 === Iter:500 === Loss: 2.39 === BAcc: 0.10 === TAcc: 0.10 === \
             Remain: 0 Hrs 0 Mins 12 Secs === 1000 ex/s ==="
        );
    }
}
