//! Mini-batches: a seeded shuffle of example indices and the gathering of a batch into f32.

use rand_core::Rng;

use crate::idx::{IMAGE_PIXELS, Split};

/// Uniform integer in `0..n` by Lemire's multiply-shift (bias below 2^-32 for n < 2^32).
fn below<G: Rng + ?Sized>(rng: &mut G, n: usize) -> usize {
    ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize
}

/// Shuffles `indices` in place (Fisher-Yates). O(len).
pub fn shuffle<G: Rng + ?Sized>(indices: &mut [u32], rng: &mut G) {
    for i in (1..indices.len()).rev() {
        indices.swap(i, below(rng, i + 1));
    }
}

/// Copies the examples `indices` of `split` into `x` (`len x 784`, pixels / 255) and `y`.
/// Returns `false`, writing nothing, when an index is out of range or a buffer has the wrong
/// length. O(len x 784).
pub fn gather(split: &Split<'_>, indices: &[u32], x: &mut [f32], y: &mut [u8]) -> bool {
    let ok = x.len() == indices.len() * IMAGE_PIXELS
        && y.len() == indices.len()
        && indices.iter().all(|&i| (i as usize) < split.len());
    if !ok {
        return false;
    }
    for ((&i, row), label) in indices
        .iter()
        .zip(x.chunks_exact_mut(IMAGE_PIXELS))
        .zip(y.iter_mut())
    {
        let i = i as usize;
        if let (Some(pixels), Some(l)) = (split.image(i), split.label(i)) {
            crate::mlp::pixels_to_unit(pixels, row);
            *label = l;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn shuffle_is_a_permutation_and_roughly_uniform() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut first = [0usize; 5];
        for _ in 0..20000 {
            let mut v = [0u32, 1, 2, 3, 4];
            shuffle(&mut v, &mut rng);
            let mut sorted = v;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            first[v[0] as usize] += 1;
        }
        // Each value leads 4000 +- 5 sd (sd = sqrt(20000 * 0.2 * 0.8) = 57).
        assert!(first.iter().all(|&c| (3715..=4285).contains(&c)), "{first:?}");
    }
}
