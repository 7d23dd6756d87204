//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A seeded generator of test data.
pub struct TestRng(Xoshiro256PlusPlus);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.0.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// Uniform integer in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }

    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.uniform()).collect()
    }
}

/// The real MNIST directory: `IENK_DATA`, else `data/mnist` of the workspace when it exists.
/// Otherwise `None`, with a printed notice; with `IENK_REQUIRE_DATA=1` (CI) a missing data set
/// fails the test instead.
pub fn mnist_dir(test: &str) -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("IENK_DATA") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("IENK_REQUIRE_DATA").is_none(),
        "{test}: IENK_REQUIRE_DATA is set but {} holds no MNIST",
        dir.display()
    );
    eprintln!(
        "SKIPPED {test}: no MNIST in {}; set IENK_DATA or run scripts/fetch-mnist.sh",
        dir.display()
    );
    None
}
