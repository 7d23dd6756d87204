//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ienk::ensemble::resampled::{Form, MeanView, innovation};
use ienk::gemm::KernelPath;
use ienk::mlp::Layout;
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

/// The kernel paths this CPU supports; each one it lacks is reported as `SKIPPED what on PATH`.
pub fn supported_paths(what: &str) -> Vec<KernelPath> {
    KernelPath::ALL
        .into_iter()
        .filter(|p| {
            let ok = p.is_supported();
            if !ok {
                eprintln!("SKIPPED {what} on {p}: this CPU lacks its instructions");
            }
            ok
        })
        .collect()
}

/// The bits of `v`: equal for two slices that hold the same floats bit for bit.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Logits of a plain network, by the MLP's own forward pass.
pub fn logits_of(layout: &Layout, theta: &[f32], x: &[f32]) -> Vec<f32> {
    let batch = x.len() / layout.inputs;
    let mut hidden = vec![0f32; batch * layout.hidden];
    let mut logits = vec![0f32; batch * layout.outputs];
    let mut s = vec![0f32; layout.gemm_scratch_len(batch)];
    layout
        .forward(theta, x, &mut hidden, &mut logits, &mut s)
        .unwrap();
    logits
}

/// The mean network's pre-activation, logits, probabilities and innovation on a batch.
pub struct Mean {
    pub pre: Vec<f32>,
    pub logits: Vec<f32>,
    pub probs: Vec<f32>,
    pub g: Vec<f32>,
}

impl Mean {
    pub fn new(layout: &Layout, form: Form, theta: &[f32], x: &[f32], y: &[u8]) -> Self {
        let b = y.len();
        let mut m = Mean {
            pre: vec![0.0; b * layout.hidden],
            logits: vec![0.0; b * layout.outputs],
            probs: vec![0.0; b * layout.outputs],
            g: vec![0.0; b * layout.outputs],
        };
        let mut hidden = vec![0f32; b * layout.hidden];
        let mut s = vec![0f32; layout.gemm_scratch_len(b)];
        layout
            .forward_keep_pre(theta, x, &mut m.pre, &mut hidden, &mut m.logits, &mut s)
            .unwrap();
        innovation(form, &m.logits, layout.outputs, y, &mut m.probs, &mut m.g).unwrap();
        m
    }

    pub fn view(&self) -> MeanView<'_> {
        MeanView {
            pre: &self.pre,
            logits: &self.logits,
            probs: &self.probs,
            innovation: &self.g,
        }
    }
}

/// `count` workers for the core's steps, independent of `ienk-cli`'s pool: every job on its own
/// scoped thread, all at once.
pub struct ScopedThreads(pub usize);

impl ienk::workers::Workers for ScopedThreads {
    fn count(&self) -> usize {
        self.0
    }

    fn each<J: Send, E: Send>(
        &self,
        jobs: impl Iterator<Item = J>,
        work: impl Fn(J) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let work = &work;
        std::thread::scope(|s| {
            let running: Vec<_> = jobs.map(|job| s.spawn(move || work(job))).collect();
            running
                .into_iter()
                .try_for_each(|t| t.join().expect("a job panicked"))
        })
    }
}
