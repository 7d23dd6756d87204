//! Standard normal sampling by the ziggurat method (Marsaglia & Tsang 2000, 256 layers, with the
//! table recursion of Doornik's ZIGNOR, 2005), on any `rand_core` generator.
//!
//! One 64-bit draw feeds two samples (32 bits each: 8 for the layer, 1 for the sign, 23 for the
//! abscissa); 98.5% of samples take the fast path, a multiply and a compare. [`Normal::fill`]
//! runs that path branch-free over chunks of 64 samples, then redoes the rejected ones exactly
//! (tail or wedge test; the wedge test mostly decides from polynomial bounds on the density,
//! without `expf`). [`Normal::fill_lanes`] does the same 8 samples at a time on an 8-lane
//! generator ([`Lanes`]), with AVX2 intrinsics where the CPU has them. Tables live in the
//! [`Normal`] value (8 KiB, built once by [`Normal::new`] with libm), so there is no heap and no
//! global state.

use rand_core::Rng;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod lanes;

pub use lanes::Lanes;

/// Number of layers of the ziggurat.
const LAYERS: usize = 256;
/// Right edge of the base layer for 256 layers (Marsaglia & Tsang 2000).
const R: f64 = 3.654_152_885_361_009;
/// Area of each layer for 256 layers (Marsaglia & Tsang 2000).
const V: f64 = 4.928_673_233_99e-3;
/// 2^-23: turns 23 random bits into a uniform in [0, 1).
const U23: f32 = 1.0 / (1u32 << 23) as f32;
/// Bits of a sample's 32 that pick the layer.
const LAYER_MASK: u32 = 0xff;
/// The bit that picks the sign.
const SIGN_BIT: u32 = 0x100;
/// Relative widening of the wedge test's bounds: more than the error of `expf` on an argument
/// rounded to f32 (at most about 6e-7 relative for arguments down to -R^2 / 2), so the bounds
/// never decide differently from `expf`.
const SQUEEZE_MARGIN: f64 = 4e-6;
/// Samples per branch-free pass of [`Normal::fill`].
const CHUNK: usize = 64;

/// A standard normal sampler: tables of the ziggurat, built once. Sampling is O(1) expected:
/// on one Zen 3 core [`Normal::fill`] takes about 4.3 ns per sample with xoshiro256++, and
/// [`Normal::fill_lanes`] about 1.1 ns on AVX2 (`cargo bench --bench normal`).
#[derive(Clone, Debug)]
pub struct Normal {
    /// Layer edges x_0 > x_1 = R > ... > x_127 > x_128 = 0 (x_0 = V / f(R) for the base strip).
    x: [f32; LAYERS + 1],
    /// x_{i+1} / x_i: below it a point of layer i is inside the curve for sure.
    ratio: [f32; LAYERS],
    /// `x_i` in the low 32 bits and `ratio_i` in the high 32 bits of entry i: one 8-byte load
    /// fetches both (the AVX2 sampler's table).
    #[cfg(target_arch = "x86_64")]
    pairs: [u64; LAYERS],
    /// Edges in f64 for the rare wedge test.
    xd: [f64; LAYERS + 1],
    /// Density at each edge, f(x_i), for the wedge test.
    fx: [f64; LAYERS + 1],
}

fn density(x: f64) -> f64 {
    libm::exp(-0.5 * x * x)
}

impl Default for Normal {
    fn default() -> Self {
        Normal::new()
    }
}

impl Normal {
    /// Builds the tables. O(128) libm calls, about a microsecond.
    pub fn new() -> Normal {
        let mut xd = [0f64; LAYERS + 1];
        xd[0] = V / density(R);
        xd[1] = R;
        for i in 2..LAYERS {
            xd[i] = libm::sqrt(-2.0 * libm::log(V / xd[i - 1] + density(xd[i - 1])));
        }
        xd[LAYERS] = 0.0;
        let mut x = [0f32; LAYERS + 1];
        let mut ratio = [0f32; LAYERS];
        let mut fx = [0f64; LAYERS + 1];
        for i in 0..=LAYERS {
            x[i] = xd[i] as f32;
            fx[i] = density(xd[i]);
        }
        for i in 0..LAYERS {
            ratio[i] = (xd[i + 1] / xd[i]) as f32;
        }
        Normal {
            #[cfg(target_arch = "x86_64")]
            pairs: core::array::from_fn(|i| {
                u64::from(x[i].to_bits()) | (u64::from(ratio[i].to_bits()) << 32)
            }),
            x,
            ratio,
            xd,
            fx,
        }
    }

    /// One standard normal sample (32 bits of a 64-bit draw on the fast path).
    #[inline]
    pub fn sample<G: Rng + ?Sized>(&self, rng: &mut G) -> f32 {
        let bits = rng.next_u64() as u32;
        match self.fast(bits) {
            (z, true) => z,
            _ => self.slow(bits, rng),
        }
    }

    /// Fills `out` with independent `N(0, scale^2)` samples. O(len), two samples per 64-bit draw.
    pub fn fill<G: Rng + ?Sized>(&self, rng: &mut G, out: &mut [f32], scale: f32) {
        let mut bits = [0u32; CHUNK];
        for chunk in out.chunks_mut(CHUNK) {
            // Pass 1, branch-free: every sample takes the fast path; rejections are flagged.
            let mut rejected = 0u64;
            for (pair, b) in chunk.chunks_mut(2).zip(bits.chunks_exact_mut(2)) {
                let draw = rng.next_u64();
                b[0] = draw as u32;
                b[1] = (draw >> 32) as u32;
                for (slot, &word) in pair.iter_mut().zip(b.iter()) {
                    let (z, ok) = self.fast(word);
                    *slot = scale * z;
                    rejected = (rejected << 1) | u64::from(!ok);
                }
            }
            // Pass 2: the rejected few go through the exact tail or wedge test.
            let n = chunk.len();
            while rejected != 0 {
                let i = n - 1 - rejected.trailing_zeros() as usize;
                chunk[i] = scale * self.slow(bits[i], rng);
                rejected &= rejected - 1;
            }
        }
    }

    /// The fast path on 32 random bits: the candidate value and whether it falls in its layer's
    /// inner rectangle (accepted). The sign is applied by setting the float's sign bit: a branch
    /// on a random bit would be mispredicted half the time.
    #[inline(always)]
    fn fast(&self, bits: u32) -> (f32, bool) {
        let layer = (bits & LAYER_MASK) as usize;
        let u = ((bits >> 9) as f32) * U23; // [0, 1)
        let sign = (bits & SIGN_BIT) << 23;
        (
            f32::from_bits((u * self.x[layer]).to_bits() | sign),
            u < self.ratio[layer],
        )
    }

    /// The rare path: the tail beyond R, or the wedge test against the density.
    #[cold]
    fn slow<G: Rng + ?Sized>(&self, first: u32, rng: &mut G) -> f32 {
        let mut bits = first;
        loop {
            let layer = (bits & LAYER_MASK) as usize;
            let u = ((bits >> 9) as f64) * f64::from(U23);
            let negative = bits & SIGN_BIT != 0;
            let signed = |v: f64| if negative { -v as f32 } else { v as f32 };
            if (u as f32) < self.ratio[layer] {
                return signed(u * self.xd[layer]);
            }
            if layer == 0 {
                // Tail beyond R (Marsaglia 1964).
                loop {
                    let x = -libm::log(uniform_open(rng)) / R;
                    let y = -libm::log(uniform_open(rng));
                    if 2.0 * y > x * x {
                        return signed(R + x);
                    }
                }
            }
            let x = u * self.xd[layer];
            let (f0, f1) = (self.fx[layer], self.fx[layer + 1]);
            if self.under_density(layer, x, f1 + uniform_open(rng) * (f0 - f1)) {
                return signed(x);
            }
            bits = rng.next_u32();
        }
    }

    /// The wedge test `y < f(x)` for `x` in `layer`'s wedge (`x >= x_{layer+1}`), decided as
    /// `expf` decides it (f32 precision is ample: it moves the accept boundary by about 1e-7 of
    /// the wedge) but mostly without calling it. With `s = (x^2 - x_{layer+1}^2) / 2 >= 0`,
    /// `f(x) = f(x_{layer+1}) e^-s` and `1 - s <= e^-s <= 1 - s + s^2 / 2`; outside that band
    /// (widened by [`SQUEEZE_MARGIN`], which covers expf's error) the answer is known.
    #[inline(always)]
    fn under_density(&self, layer: usize, x: f64, y: f64) -> bool {
        let (x1, f1) = (self.xd[layer + 1], self.fx[layer + 1]);
        let s = 0.5 * (x * x - x1 * x1);
        if y < f1 * (1.0 - s) * (1.0 - SQUEEZE_MARGIN) {
            return true;
        }
        if y >= f1 * (1.0 - s + 0.5 * s * s) * (1.0 + SQUEEZE_MARGIN) {
            return false;
        }
        y < f64::from(libm::expf(-0.5 * (x * x) as f32))
    }
}

/// Uniform in (0, 1], never 0 (safe for `log`).
fn uniform_open<G: Rng + ?Sized>(rng: &mut G) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn tables_match_doornik() {
        let n = Normal::new();
        // The recursion must close: the last layer's edge is close to 0 and positive.
        assert!(
            n.xd[LAYERS - 1] > 0.0 && n.xd[LAYERS - 1] < 0.3,
            "{}",
            n.xd[LAYERS - 1]
        );
        assert!(n.x.windows(2).all(|w| w[0] > w[1]));
    }

    /// Moments and tail frequencies of 4 M samples of `fill` against the exact normal values,
    /// each within 5 standard errors.
    #[test]
    fn samples_have_normal_moments_and_tails() {
        let n = Normal::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        check_moments_and_tails(|buf| n.fill(&mut rng, buf, 1.0));
    }

    /// The same for the 8-lane sampler, on odd buffer lengths (partial chunks).
    #[test]
    fn lane_samples_have_normal_moments_and_tails() {
        let n = Normal::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let mut lanes = Lanes::from_rng(&mut rng);
        check_moments_and_tails(|buf| {
            let (a, b) = buf.split_at_mut(37);
            n.fill_lanes(&mut lanes, &mut rng, a, 1.0);
            n.fill_lanes(&mut lanes, &mut rng, b, 1.0);
        });
    }

    /// The squeezed wedge test decides as the plain `expf` test, on random points of every
    /// layer's wedge and on points within 1e-6 of the density, where the bounds are tightest.
    #[test]
    fn squeezed_wedge_test_matches_expf() {
        let n = Normal::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let mut uniform = || uniform_open(&mut rng);
        for layer in 1..LAYERS {
            let (x0, x1) = (n.xd[layer], n.xd[layer + 1]);
            let (f0, f1) = (n.fx[layer], n.fx[layer + 1]);
            for _ in 0..2000 {
                let x = x1 + uniform() * (x0 - x1);
                let fx = f64::from(libm::expf(-0.5 * (x * x) as f32));
                let near = fx * (1.0 + (uniform() - 0.5) * 2e-6);
                for y in [f1 + uniform() * (f0 - f1), near] {
                    assert_eq!(
                        n.under_density(layer, x, y),
                        y < fx,
                        "layer {layer}, x {x}, y {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn scale_multiplies_every_sample() {
        let n = Normal::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut lanes = Lanes::from_rng(&mut rng);
        let (mut a, mut b) = ([0f32; 200], [0f32; 200]);
        n.fill_lanes(&mut lanes.clone(), &mut rng.clone(), &mut a, 1.0);
        n.fill_lanes(&mut lanes, &mut rng, &mut b, -0.5);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| (x * -0.5 - y).abs() <= 1e-7 * x.abs())
        );
    }

    fn check_moments_and_tails(mut fill: impl FnMut(&mut [f32])) {
        let count = 4_000_000usize;
        let mut buf = [0f32; 1000];
        let (mut s1, mut s2, mut s4) = (0f64, 0f64, 0f64);
        let mut tails = [0usize; 4];
        let limits = [1.0, 2.0, 3.0, R];
        for _ in 0..count / buf.len() {
            fill(&mut buf);
            for &z in &buf {
                let z = f64::from(z);
                s1 += z;
                s2 += z * z;
                s4 += z * z * z * z;
                for (t, &l) in tails.iter_mut().zip(&limits) {
                    if z.abs() > l {
                        *t += 1;
                    }
                }
            }
        }
        let c = count as f64;
        let se = |var: f64| (var / c).sqrt();
        assert!((s1 / c).abs() < 5.0 * se(1.0), "mean {}", s1 / c);
        assert!((s2 / c - 1.0).abs() < 5.0 * se(2.0), "variance {}", s2 / c);
        assert!((s4 / c - 3.0).abs() < 5.0 * se(96.0), "fourth moment {}", s4 / c);
        // P(|Z| > l) for l = 1, 2, 3, R.
        let exact = [0.317_310_507_9, 0.045_500_263_9, 0.002_699_796_1, 2.580_325e-4];
        for ((&t, &p), l) in tails.iter().zip(&exact).zip(limits) {
            let freq = t as f64 / c;
            assert!(
                (freq - p).abs() < 5.0 * se(p * (1.0 - p)),
                "P(|Z| > {l}) = {freq}, expected {p}"
            );
        }
    }
}
