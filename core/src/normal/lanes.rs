//! The 8-lane generator and the bulk sampler built on it: eight xoshiro128++ streams side by
//! side feed the ziggurat's fast path eight samples at a time. The AVX2 build ([`super::avx2`])
//! and the portable one compute the same numbers by operations that round alike (the portable
//! one tests acceptance on integers, the AVX2 one on floats, which decide alike), so a seed
//! gives the same numbers on every CPU.

use rand_core::Rng;

use super::{CHUNK, Normal};
use crate::gemm::{KernelPath, active_kernel};

/// Eight independent xoshiro128++ generators (Blackman & Vigna 2018) side by side, one per lane:
/// a draw of 8 words costs about as much as one scalar draw. Used for bulk perturbations by
/// [`Normal::fill_lanes`].
#[derive(Clone, Debug)]
pub struct Lanes {
    /// The four state words of each lane: `s[i][lane]`.
    pub(super) s: [[u32; 8]; 4],
}

impl Lanes {
    /// Seeds the 8 lanes from `rng` (16 draws of 64 bits). A lane whose state came out all zero
    /// (probability 2^-128) is given a fixed non-zero state.
    pub fn from_rng<G: Rng + ?Sized>(rng: &mut G) -> Lanes {
        let mut s = [[0u32; 8]; 4];
        for lane in 0..8 {
            let (a, b) = (rng.next_u64(), rng.next_u64());
            let words = if a == 0 && b == 0 {
                [1, 0, 0, 0]
            } else {
                [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32]
            };
            for (row, v) in s.iter_mut().zip(words) {
                row[lane] = v;
            }
        }
        Lanes { s }
    }

    /// The next 32-bit word of each lane. O(1).
    #[inline(always)]
    pub fn next_words(&mut self) -> [u32; 8] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u32; 8];
        for l in 0..8 {
            out[l] = s0[l].wrapping_add(s3[l]).rotate_left(7).wrapping_add(s0[l]);
            let t = s1[l] << 9;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(11);
        }
        out
    }

    /// The next `groups.len()` groups of words, each what [`Lanes::next_words`] would return,
    /// computed a lane at a time: the lane's four state words stay in registers for all its
    /// steps, which is what a core with few registers (a Cortex-M's 13) needs. O(len).
    pub fn fill_groups(&mut self, groups: &mut [[u32; 8]]) {
        for lane in 0..8 {
            let [mut s0, mut s1, mut s2, mut s3] = [0, 1, 2, 3].map(|i| self.s[i][lane]);
            for group in groups.iter_mut() {
                group[lane] = s0.wrapping_add(s3).rotate_left(7).wrapping_add(s0);
                let t = s1 << 9;
                s2 ^= s0;
                s3 ^= s1;
                s1 ^= s2;
                s0 ^= s3;
                s2 ^= t;
                s3 = s3.rotate_left(11);
            }
            for (row, v) in self.s.iter_mut().zip([s0, s1, s2, s3]) {
                row[lane] = v;
            }
        }
    }
}

impl Normal {
    /// Fills `out` with independent `N(0, scale^2)` samples drawn from the 8-lane generator
    /// `lanes` (and from `aux` for the 1.2% of samples that need the exact slow path). O(len);
    /// on the AVX2 path (chosen like the GEMM kernels, see [`crate::gemm::active_kernel`])
    /// about 1.1 ns per sample on one Zen 3 core, 4x faster than [`Normal::fill`].
    /// Every path gives the same numbers.
    pub fn fill_lanes<G: Rng + ?Sized>(&self, lanes: &mut Lanes, aux: &mut G, out: &mut [f32], scale: f32) {
        self.fill_lanes_checked(active_kernel(), lanes, aux, out, scale);
    }

    /// [`Normal::fill_lanes`] on a chosen instruction set (the AVX-512 path uses the AVX2
    /// sampler). Fails, writing nothing, when the CPU lacks `path`.
    pub fn fill_lanes_on<G: Rng + ?Sized>(
        &self,
        path: KernelPath,
        lanes: &mut Lanes,
        aux: &mut G,
        out: &mut [f32],
        scale: f32,
    ) -> Result<(), KernelPath> {
        if !path.is_supported() {
            return Err(path);
        }
        self.fill_lanes_checked(path, lanes, aux, out, scale);
        Ok(())
    }

    /// Runs the sampler of `path`, which the CPU supports.
    fn fill_lanes_checked<G: Rng + ?Sized>(
        &self,
        path: KernelPath,
        lanes: &mut Lanes,
        aux: &mut G,
        out: &mut [f32],
        scale: f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        if path.runs_avx2_build() {
            // SAFETY: the CPU supports AVX2 (runs_avx2_build checks it).
            unsafe { super::avx2::fill_lanes(self, lanes, aux, out, scale) };
            return;
        }
        let _ = path;
        self.fill_lanes_portable(lanes, aux, out, scale);
    }

    /// The portable sampler: 64 words from the lanes, then each sample by the fast path, or
    /// at once by the slow path when rejected (the same samples as the AVX2 sampler's branch-free
    /// pass and redo: the slow path draws from `aux` in the same order). A branch that goes the
    /// rare way for 1.2% of samples costs less here than gathering a mask of them.
    fn fill_lanes_portable<G: Rng + ?Sized>(
        &self,
        lanes: &mut Lanes,
        aux: &mut G,
        out: &mut [f32],
        scale: f32,
    ) {
        let mut bits = [[0u32; 8]; CHUNK / 8];
        for chunk in out.chunks_mut(CHUNK) {
            lanes.fill_groups(&mut bits);
            for (slot, &word) in chunk.iter_mut().zip(bits.as_flattened()) {
                let (z, accepted) = self.fast(word);
                *slot = scale * if accepted { z } else { self.slow(word, aux) };
            }
        }
    }
}
