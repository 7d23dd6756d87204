//! Fallible allocation of the trainers' buffers. Their sizes come from the flags (`--hidden`,
//! `--particles`, `--batch-size`, `--store-perturbations`), and `vec![0.0; n]` aborts the process
//! when the machine cannot hold `n` values; [`zeros`] turns that into an error naming the buffer,
//! its size and the flags to lower.

use crate::error::{CliError, Result};

/// The product of `factors` (a buffer's length), or an error naming `what` when it does not fit
/// in `usize`. O(factors).
pub fn product(what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| too_large(what, None))
}

/// `len` zeroed values, or an error naming `what` and the bytes it needed when the allocator
/// refuses them. The request is tried first with `try_reserve_exact`, then the buffer comes from
/// `vec!`, which gets zeroed pages from the system without touching them (so a buffer sized for
/// the worst case costs memory only where it is written). O(1) beyond the allocation.
pub fn zeros<T: Clone + Default>(what: &str, len: usize) -> Result<Vec<T>> {
    let mut probe: Vec<T> = Vec::new();
    if probe.try_reserve_exact(len).is_err() {
        let bytes = (len as u128).saturating_mul(size_of::<T>() as u128);
        return Err(too_large(what, Some(bytes)));
    }
    drop(probe);
    Ok(vec![T::default(); len])
}

fn too_large(what: &str, bytes: Option<u128>) -> CliError {
    let size = bytes.map_or_else(|| "more than the address space".to_string(), human_bytes);
    CliError::BadInput(format!(
        "cannot allocate {what} ({size}): lower --hidden, --particles or --batch-size, or drop \
         --store-perturbations"
    ))
}

/// `bytes` in the largest unit that keeps a leading digit: `512 B`, `1.5 GB` (powers of 1000).
fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_multiplies_and_reports_overflow() {
        assert_eq!(product("x", &[3, 5, 7]).ok(), Some(105));
        assert_eq!(product("x", &[]).ok(), Some(1));
        let err = product("the stored perturbations", &[usize::MAX / 2, 3]).unwrap_err();
        assert!(err.to_string().contains("the stored perturbations"), "{err}");
        assert!(err.to_string().contains("address space"), "{err}");
    }

    #[test]
    fn zeros_gives_zeroed_buffers_and_refuses_impossible_ones() {
        assert_eq!(zeros::<f32>("x", 5).unwrap(), vec![0.0; 5]);
        assert!(zeros::<u8>("x", 0).unwrap().is_empty());
        // Past isize::MAX bytes no allocator can succeed.
        let err = zeros::<f64>("the ensemble", usize::MAX / 8).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cannot allocate the ensemble (18.4 EB)"), "{msg}");
        assert!(msg.contains("--particles"), "{msg}");
        assert_eq!(err.exit_code(), crate::error::EXIT_BAD_INPUT);
    }

    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(318_000_000_040), "318.0 GB");
        assert_eq!(human_bytes(3_500_000_000_000_000), "3.5 PB");
        assert_eq!(human_bytes(25 * 10u128.pow(20)), "2500.0 EB");
    }
}
