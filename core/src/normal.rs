//! Standard normal sampling by the ziggurat method (Marsaglia & Tsang 2000, in the 128-layer form
//! of Doornik's ZIGNOR, 2005), on any `rand_core` generator.
//!
//! One 64-bit draw feeds two samples (32 bits each: 7 for the layer, 24 for the abscissa, 1 for
//! the sign); about 98.8% of samples take the fast path, a multiply and a compare. Tables live in
//! the [`Normal`] value (1.5 KiB, built once by [`Normal::new`] with libm), so there is no heap and
//! no global state.

use rand_core::Rng;

/// Number of layers of the ziggurat.
const LAYERS: usize = 128;
/// Right edge of the base layer for 128 layers (Doornik 2005, Table 1).
const R: f64 = 3.442_619_855_899;
/// Area of each layer for 128 layers (Doornik 2005, Table 1).
const V: f64 = 9.912_563_035_262_17e-3;
/// 2^-24: turns 24 random bits into a uniform in [0, 1).
const U24: f32 = 1.0 / (1u32 << 24) as f32;

/// A standard normal sampler: tables of the ziggurat, built once. Sampling is O(1) expected.
#[derive(Clone, Debug)]
pub struct Normal {
    /// Layer edges x_0 > x_1 = R > ... > x_127 > x_128 = 0 (x_0 = V / f(R) for the base strip).
    x: [f32; LAYERS + 1],
    /// x_{i+1} / x_i: below it a point of layer i is inside the curve for sure.
    ratio: [f32; LAYERS],
    /// Edges in f64 for the rare wedge test.
    xd: [f64; LAYERS + 1],
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
        for i in 0..=LAYERS {
            x[i] = xd[i] as f32;
        }
        for i in 0..LAYERS {
            ratio[i] = (xd[i + 1] / xd[i]) as f32;
        }
        Normal { x, ratio, xd }
    }

    /// One standard normal sample. Uses half of a 64-bit draw on the fast path.
    #[inline]
    pub fn sample<G: Rng + ?Sized>(&self, rng: &mut G) -> f32 {
        let bits = rng.next_u64();
        match self.fast(bits as u32) {
            Some(z) => z,
            None => self.slow(bits as u32, rng),
        }
    }

    /// Fills `out` with independent `N(0, scale^2)` samples. O(len), two samples per 64-bit draw.
    pub fn fill<G: Rng + ?Sized>(&self, rng: &mut G, out: &mut [f32], scale: f32) {
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = rng.next_u64();
            for (slot, half) in pair.iter_mut().zip([bits as u32, (bits >> 32) as u32]) {
                let z = match self.fast(half) {
                    Some(z) => z,
                    None => self.slow(half, rng),
                };
                *slot = scale * z;
            }
        }
        for slot in pairs.into_remainder() {
            *slot = scale * self.sample(rng);
        }
    }

    /// The fast path on 32 random bits: `Some` when the point falls in a layer's inner rectangle.
    #[inline(always)]
    fn fast(&self, bits: u32) -> Option<f32> {
        let layer = (bits & 0x7f) as usize;
        let u = ((bits >> 8) as f32) * U24; // [0, 1)
        let u = if bits & 0x80 != 0 { -u } else { u };
        if u.abs() < self.ratio[layer] {
            Some(u * self.x[layer])
        } else {
            None
        }
    }

    /// The rare path: the tail beyond R, or the wedge test against the density.
    #[cold]
    fn slow<G: Rng + ?Sized>(&self, first: u32, rng: &mut G) -> f32 {
        let mut bits = first;
        loop {
            let layer = (bits & 0x7f) as usize;
            let u = ((bits >> 8) as f64) * f64::from(U24);
            let negative = bits & 0x80 != 0;
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
            let f0 = density(self.xd[layer]);
            let f1 = density(self.xd[layer + 1]);
            if f1 + uniform_open(rng) * (f0 - f1) < density(x) {
                return signed(x);
            }
            bits = rng.next_u32();
        }
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

    /// Moments and tail frequencies of 4 M samples against the exact normal values, each within
    /// 5 standard errors.
    #[test]
    fn samples_have_normal_moments_and_tails() {
        let n = Normal::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let count = 4_000_000usize;
        let mut buf = [0f32; 1000];
        let (mut s1, mut s2, mut s4) = (0f64, 0f64, 0f64);
        let mut tails = [0usize; 4];
        let limits = [1.0, 2.0, 3.0, R];
        for _ in 0..count / buf.len() {
            n.fill(&mut rng, &mut buf, 1.0);
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
        let exact = [0.317_310_507_9, 0.045_500_263_9, 0.002_699_796_1, 5.761_085e-4];
        for ((&t, &p), l) in tails.iter().zip(&exact).zip(limits) {
            let freq = t as f64 / c;
            assert!(
                (freq - p).abs() < 5.0 * se(p * (1.0 - p)),
                "P(|Z| > {l}) = {freq}, expected {p}"
            );
        }
    }
}
