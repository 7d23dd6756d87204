//! The 8-lane generator and the bulk sampler built on it: eight xoshiro128++ streams side by
//! side feed the ziggurat's fast path eight samples at a time. The AVX2 build ([`super::avx2`])
//! and the portable one run the same integer and IEEE operations, so a seed gives the same
//! numbers on every CPU.

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

    /// The portable sampler: the fast path over 64 samples, then the rejected few.
    fn fill_lanes_portable<G: Rng + ?Sized>(
        &self,
        lanes: &mut Lanes,
        aux: &mut G,
        out: &mut [f32],
        scale: f32,
    ) {
        let mut bits = [0u32; CHUNK];
        for chunk in out.chunks_mut(CHUNK) {
            for group in bits.chunks_exact_mut(8) {
                group.copy_from_slice(&lanes.next_words());
            }
            let mut vals = [0f32; CHUNK];
            let mut rejected = 0u64;
            for i in 0..CHUNK {
                let (z, accepted) = self.fast(bits[i]);
                vals[i] = scale * z;
                rejected |= u64::from(!accepted) << i;
            }
            chunk.copy_from_slice(&vals[..chunk.len()]);
            self.redo_rejected(chunk, &bits, rejected, aux, scale);
        }
    }

    /// Replaces the samples of `chunk` flagged in `rejected` (bit i = sample i, from the 32
    /// random bits `bits[i]`) by the exact slow path's. O(rejected).
    #[inline(always)]
    pub(super) fn redo_rejected<G: Rng + ?Sized>(
        &self,
        chunk: &mut [f32],
        bits: &[u32; CHUNK],
        mut rejected: u64,
        aux: &mut G,
        scale: f32,
    ) {
        if chunk.len() < CHUNK {
            rejected &= (1u64 << chunk.len()) - 1;
        }
        while rejected != 0 {
            let i = rejected.trailing_zeros() as usize;
            chunk[i] = scale * self.slow(bits[i], aux);
            rejected &= rejected - 1;
        }
    }
}
