//! Independent random streams derived from one user seed, so that one `--seed` fixes the
//! initialisation, the data order and the perturbations, each unaffected by the others' use.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The uses of randomness in a training run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Initial weights.
    Init = 1,
    /// The order of the training examples (the same for every optimizer).
    Order = 2,
    /// Ensemble perturbations.
    Perturb = 3,
}

/// The generator of `stream` for `seed`. `seed_from_u64` expands the 64-bit input with SplitMix64,
/// so neighbouring inputs give unrelated states.
pub fn rng(seed: u64, stream: Stream) -> Xoshiro256PlusPlus {
    // Golden-ratio multiplier: spreads the user seed before the stream tag is mixed in.
    const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;
    Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_mul(SPREAD) ^ ((stream as u64) << 56))
}

/// The seed of the resampled IEnK's perturbations
/// ([`Perturbations::seed`](crate::ensemble::perturb::Perturbations::seed)) for a run seeded
/// with `seed`: the first number of its [`Stream::Perturb`] stream. O(1).
pub fn perturbation_seed(seed: u64) -> u64 {
    rng(seed, Stream::Perturb).next_u64()
}
