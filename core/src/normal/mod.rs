//! Standard normal sampling by the ziggurat method (Marsaglia & Tsang 2000, 256 layers, with the
//! table recursion of Doornik's ZIGNOR, 2005), on any `rand_core` generator.
//!
//! One 64-bit draw feeds two samples (32 bits each: 8 for the layer, 1 for the sign, 23 for the
//! abscissa); 98.5% of samples take the fast path, a multiply and a compare. [`Normal::fill`]
//! runs that path branch-free over chunks of 64 samples, then redoes the rejected ones exactly
//! (tail or wedge test; the wedge test mostly decides in f32 from polynomial bounds on the
//! density, without `expf`, and in f64 only within a hair of the boundary, so that a chip whose
//! FPU is single precision rarely needs f64 in software). [`Normal::fill_lanes`] does the same 8
//! samples at a time on an 8-lane generator ([`Lanes`]), with AVX2 intrinsics where the CPU has
//! them. Tables live in the [`Normal`] value (10 KiB on x86_64, 8 KiB elsewhere, built once by
//! [`Normal::new`] with libm), so there is no heap and no global state.

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
/// Slack of the f32 wedge tests, in units of the wedge's largest density f(x_{i+1}): a test
/// decides only when its margin exceeds this. For wedge points (|x| <= R, s <= 0.75) the f32
/// values differ from the f64 test's by less than 1.5e-5 of it in the worst case: x by 1.2e-7
/// relative, y by 5e-7, the bounds' s by 4.5e-6 (so the lower bound by 5e-6, the upper by
/// 1e-5), `expf` of the f32 argument from `expf` of the rounded f64 one by 3.5e-6, and that from
/// the exact density by 6e-7 (measured on 5 million points: at most 1.1e-6, 1.1e-7, 1.1e-6,
/// 1.0e-6 and 3e-7). So a test outside the slack decides as the f64 test would.
const WEDGE_SLACK: f32 = 2e-5;
/// 2^-24: turns 24 random bits into a uniform in [0, 1).
const U24: f32 = 1.0 / (1u32 << 24) as f32;
/// Samples per branch-free pass of [`Normal::fill`].
const CHUNK: usize = 64;

/// A standard normal sampler: tables of the ziggurat, built once. Sampling is O(1) expected:
/// on one Zen 3 core [`Normal::fill`] takes about 4.3 ns per sample with xoshiro256++, and
/// [`Normal::fill_lanes`] about 1.1 ns on AVX2 (`cargo bench --bench normal`).
#[derive(Clone, Debug)]
pub struct Normal {
    /// Layer edges x_0 > x_1 = R > ... > x_255 > x_256 = 0 (x_0 = V / f(R) for the base strip).
    x: [f32; LAYERS + 1],
    /// x_i 2^-23: a sample's abscissa is its 23 random bits, as an integer, times this (exactly
    /// the f32 product of their uniform in [0, 1) and x_i, as scaling by 2^-23 is exact).
    x_step: [f32; LAYERS],
    /// The ratio x_{i+1} / x_i (rounded to f32) times 2^23, rounded up: the uniform of 23 random
    /// bits `k` is below the ratio, inside the curve for sure, exactly when `k` is below this.
    limit: [u32; LAYERS],
    /// `x_i` in the low 32 bits and `ratio_i` in the high 32 bits of entry i: one 8-byte load
    /// fetches both (the AVX2 sampler's table).
    #[cfg(target_arch = "x86_64")]
    pairs: [u64; LAYERS],
    /// Edges in f64 for the slow path's result and the wedge test near the boundary.
    xd: [f64; LAYERS + 1],
    /// Density at each edge, f(x_i), for the wedge test near the boundary.
    fx: [f64; LAYERS + 1],
    /// The same densities rounded to f32, for the wedge test away from the boundary.
    fx_f32: [f32; LAYERS + 1],
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
        // Built in place, field by field, without tables of its own: the struct is 8 to 10 KB,
        // and on a microcontroller its constructor's stack counts.
        let mut n = Normal {
            x: [0.0; LAYERS + 1],
            x_step: [0.0; LAYERS],
            limit: [0; LAYERS],
            #[cfg(target_arch = "x86_64")]
            pairs: [0; LAYERS],
            xd: [0.0; LAYERS + 1],
            fx: [0.0; LAYERS + 1],
            fx_f32: [0.0; LAYERS + 1],
        };
        n.xd[0] = V / density(R);
        n.xd[1] = R;
        for i in 2..LAYERS {
            n.xd[i] = libm::sqrt(-2.0 * libm::log(V / n.xd[i - 1] + density(n.xd[i - 1])));
        }
        n.xd[LAYERS] = 0.0;
        for i in 0..=LAYERS {
            n.x[i] = n.xd[i] as f32;
            n.fx[i] = density(n.xd[i]);
            n.fx_f32[i] = n.fx[i] as f32;
        }
        for i in 0..LAYERS {
            let ratio = (n.xd[i + 1] / n.xd[i]) as f32;
            n.x_step[i] = n.x[i] * U23;
            n.limit[i] = libm::ceilf(ratio / U23) as u32;
            #[cfg(target_arch = "x86_64")]
            {
                n.pairs[i] = u64::from(n.x[i].to_bits()) | (u64::from(ratio.to_bits()) << 32);
            }
        }
        n
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
        let k = bits >> 9; // the uniform k 2^-23 in [0, 1)
        let sign = (bits & SIGN_BIT) << 23;
        (
            f32::from_bits(((k as f32) * self.x_step[layer]).to_bits() | sign),
            k < self.limit[layer],
        )
    }

    /// The rare path: the tail beyond R, or the wedge test against the density.
    #[cold]
    fn slow<G: Rng + ?Sized>(&self, first: u32, rng: &mut G) -> f32 {
        let mut bits = first;
        loop {
            let layer = (bits & LAYER_MASK) as usize;
            let k = bits >> 9;
            let u = (k as f32) * U23; // exact
            let negative = bits & SIGN_BIT != 0;
            let signed = |v: f64| if negative { -v as f32 } else { v as f32 };
            if k < self.limit[layer] {
                return signed(f64::from(u) * self.xd[layer]);
            }
            if layer == 0 {
                // Tail beyond R (Marsaglia 1964).
                loop {
                    let x = -libm::log(uniform_open(rng.next_u64())) / R;
                    let y = -libm::log(uniform_open(rng.next_u64()));
                    if 2.0 * y > x * x {
                        return signed(R + x);
                    }
                }
            }
            if self.under_density(layer, u, rng.next_u64()) {
                return signed(f64::from(u) * self.xd[layer]);
            }
            bits = rng.next_u32();
        }
    }

    /// The wedge test of the point `u` of `layer`'s wedge (`u >= x_{i+1} / x_i`) with the 64
    /// random bits `draw` for its height: [`Normal::wedge_test_f32`], or within a hair of the
    /// boundary [`Normal::under_density_f64`], which defines the samples.
    #[inline(always)]
    fn under_density(&self, layer: usize, u: f32, draw: u64) -> bool {
        self.wedge_test_f32(layer, u, draw)
            .unwrap_or_else(|| self.under_density_f64(layer, u, draw))
    }

    /// The wedge test in f32: the answer of [`Normal::under_density_f64`], or `None` when the
    /// height lies within [`WEDGE_SLACK`] of a bound or of the density. With `x = u x_i` and
    /// `s = (x^2 - x_{i+1}^2) / 2 >= 0`, `f(x) = f(x_{i+1}) e^-s` and `1 - s <= e^-s <= 1 - s +
    /// s^2 / 2`: outside that band the answer is known without `expf`.
    #[inline(always)]
    fn wedge_test_f32(&self, layer: usize, u: f32, draw: u64) -> Option<bool> {
        let (x, x1) = (u * self.x[layer], self.x[layer + 1]);
        let (f0, f1) = (self.fx_f32[layer], self.fx_f32[layer + 1]);
        let y = f1 + ((draw >> 40) as u32 as f32) * U24 * (f0 - f1);
        let slack = WEDGE_SLACK * f1;
        let s = 0.5 * (x * x - x1 * x1);
        if y < f1 * (1.0 - s) - slack {
            return Some(true);
        }
        if y >= f1 * (1.0 - s + 0.5 * s * s) + slack {
            return Some(false);
        }
        let density = libm::expf(-0.5 * (x * x));
        if y < density - slack {
            return Some(true);
        }
        if y >= density + slack {
            return Some(false);
        }
        None
    }

    /// The wedge test in f64, which defines the samples: the height `f(x_{i+1}) + w (f(x_i) -
    /// f(x_{i+1}))`, with `w` the uniform of `draw`, against `expf` at `x = u x_i` (f32 precision
    /// is ample: it moves the accept boundary by about 1e-7 of the wedge).
    fn under_density_f64(&self, layer: usize, u: f32, draw: u64) -> bool {
        let x = f64::from(u) * self.xd[layer];
        let (f0, f1) = (self.fx[layer], self.fx[layer + 1]);
        let y = f1 + uniform_open(draw) * (f0 - f1);
        y < f64::from(libm::expf(-0.5 * (x * x) as f32))
    }
}

/// The uniform in (0, 1] of a 64-bit draw's top 53 bits, never 0 (safe for `log`).
fn uniform_open(draw: u64) -> f64 {
    ((draw >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64)
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

    /// The fast path's integer tables decide and scale as the uniform in f32 would: `k <
    /// limit_i` exactly when `k 2^-23 < x_{i+1} / x_i` (rounded to f32), on the integers around
    /// every limit, and `k x_step_i` is the f32 product `(k 2^-23) x_i`, on random `k`.
    #[test]
    fn integer_tables_match_the_float_test() {
        let n = Normal::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
        for layer in 0..LAYERS {
            let ratio = (n.xd[layer + 1] / n.xd[layer]) as f32;
            let limit = n.limit[layer];
            for k in limit.saturating_sub(3)..(limit + 3).min(1 << 23) {
                let u = (k as f32) / (1 << 23) as f32;
                assert_eq!(k < limit, u < ratio, "layer {layer}, k {k}");
            }
            for _ in 0..1000 {
                let k = rng.next_u32() >> 9;
                let u = (k as f32) / (1 << 23) as f32;
                let want = u * (n.xd[layer] as f32);
                assert_eq!((k as f32 * n.x_step[layer]).to_bits(), want.to_bits());
            }
        }
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

    /// The f32 wedge test decides as the f64 test, written here from its definition (the
    /// height against `expf` of the point), on random points of every layer's wedge, on heights
    /// just outside the slack around the density and the two bounds (where f32 decides) and
    /// within 2e-6 of the density (where it must leave the answer to f64); and it leaves under
    /// 1% of random points to f64.
    #[test]
    fn f32_wedge_test_decides_as_the_f64_test() {
        let n = Normal::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let uniform = |draw: u64| ((draw >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let (mut random_points, mut left_to_f64) = (0usize, 0usize);
        for layer in 1..LAYERS {
            let (x1, f0, f1) = (n.xd[layer + 1], n.fx[layer], n.fx[layer + 1]);
            // The draw whose height is closest to `y`.
            let draw_for = |y: f64| {
                let w = ((y - f1) / (f0 - f1)).clamp(0.0, 1.0);
                (((w * (1u64 << 53) as f64) as u64).clamp(1, (1 << 53) - 1) - 1) << 11
            };
            let mut tested = 0;
            while tested < 2000 {
                let bits = (rng.next_u32() & !LAYER_MASK) | layer as u32;
                let u = ((bits >> 9) as f32) * U23;
                if u < (n.xd[layer + 1] / n.xd[layer]) as f32 {
                    continue;
                }
                tested += 1;
                let x = f64::from(u) * n.xd[layer];
                let density = f64::from(libm::expf(-0.5 * (x * x) as f32));
                let s = 0.5 * (x * x - x1 * x1);
                let side = if rng.next_u32() & 1 == 0 { -1.0 } else { 1.0 };
                let edge = side * 1.05 * f64::from(WEDGE_SLACK) * f1;
                let heights = [
                    density + (uniform(rng.next_u64()) - 0.5) * 4e-6 * f1,
                    density + edge,
                    f1 * (1.0 - s) + edge,
                    f1 * (1.0 - s + 0.5 * s * s) + edge,
                ];
                let random = core::iter::once((rng.next_u64(), true));
                for (draw, random) in random.chain(heights.map(|y| (draw_for(y), false))) {
                    let expected = f1 + uniform(draw) * (f0 - f1) < density;
                    let decided = n.wedge_test_f32(layer, u, draw);
                    if random {
                        random_points += 1;
                        left_to_f64 += usize::from(decided.is_none());
                    }
                    assert!(
                        decided.is_none_or(|d| d == expected),
                        "layer {layer}, u {u}, draw {draw:#x}: f32 says {decided:?}"
                    );
                    assert_eq!(n.under_density(layer, u, draw), expected);
                }
            }
        }
        assert!(
            left_to_f64 * 100 < random_points,
            "{left_to_f64} of {random_points} random points left to f64"
        );
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
