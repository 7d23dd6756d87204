//! Ensemble perturbations, regenerated on demand from seeds instead of stored.
//!
//! A full-rank perturbation of member k at step t is a vector of P entries, entry i of layer l
//! drawn from N(0, (c s_l)^2). It is cut into blocks of [`BLOCK`] entries, each with its own
//! generator seeded from (seed, t, k, block), so any thread can regenerate any block of any member
//! in any order: the update needs O(P) memory however many members there are.
//!
//! A low-rank perturbation replaces each weight matrix's perturbation by
//! `c s_l a b^T / sqrt(r)` with `a`, `b` standard normal of `r` columns (each entry then has
//! variance (c s_l)^2), and keeps full-rank bias perturbations: `r (2 H + inputs + outputs) + H +
//! outputs` numbers per member instead of P.
//!
//! With antithetic pairs, member `2j + 1` is member `2j` negated.

use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::particles::Factors;
use crate::mlp::Layout;
use crate::normal::{Lanes, Normal};

/// Entries per independently seeded block of a full-rank perturbation.
pub const BLOCK: usize = 4096;

/// The draw index of the collapsed direction's noise: no member's (members are numbered from 0;
/// low-rank factors use block `u64::MAX` of their draw).
const NOISE_DRAW: u64 = u64::MAX;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of one (step, draw, block) triple of a run seeded with `seed`.
fn block_rng(seed: u64, step: u64, draw: u64, block: u64) -> Xoshiro256PlusPlus {
    // Golden-ratio increments keep the four inputs apart before each mix.
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let h = mix64(
        seed ^ mix64(step.wrapping_add(K) ^ mix64(draw.wrapping_add(K.wrapping_mul(2)) ^ mix64(block))),
    );
    Xoshiro256PlusPlus::seed_from_u64(h)
}

/// Where one member's low-rank factors are drawn to, each part in a slice of its own (lengths
/// as in [`FactorRanges`]).
#[derive(Debug)]
pub(crate) struct FactorSlots<'a> {
    pub(crate) a1: &'a mut [f32],
    pub(crate) b1: &'a mut [f32],
    pub(crate) db1: &'a mut [f32],
    pub(crate) a2: &'a mut [f32],
    pub(crate) b2: &'a mut [f32],
    pub(crate) db2: &'a mut [f32],
}

/// How a run's perturbations are drawn: the layout, the per-layer standard deviations `c s_l`,
/// the rank (0 = full), antithetic pairs, and the seed.
#[derive(Clone, Copy, Debug)]
pub struct Perturbations {
    /// The network.
    pub layout: Layout,
    /// Standard deviation of each layer's entries (`c s_l`).
    pub std: [f32; 2],
    /// 0 for full-rank perturbations, else the rank of each weight matrix's perturbation.
    pub rank: usize,
    /// Whether odd members are their even neighbour negated.
    pub antithetic: bool,
    /// The run's perturbation seed.
    pub seed: u64,
}

/// Index ranges of the low-rank factors inside one member's factor vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactorRanges {
    /// `a` of layer 1, `hidden x r`.
    pub a1: core::ops::Range<usize>,
    /// `b` of layer 1, `r x inputs` (one row per rank).
    pub b1: core::ops::Range<usize>,
    /// Bias perturbation of layer 1, `hidden`.
    pub db1: core::ops::Range<usize>,
    /// `a` of layer 2, `outputs x r`.
    pub a2: core::ops::Range<usize>,
    /// `b` of layer 2, `r x hidden`.
    pub b2: core::ops::Range<usize>,
    /// Bias perturbation of layer 2, `outputs`.
    pub db2: core::ops::Range<usize>,
}

impl FactorRanges {
    /// The factors of one member, views into its factor vector `member` (as
    /// [`Perturbations::fill_factors`] writes it). Panics if `member` is shorter than the
    /// ranges. O(1).
    pub fn factors<'a>(&self, member: &'a [f32]) -> Factors<'a> {
        Factors {
            a1: &member[self.a1.clone()],
            db1: &member[self.db1.clone()],
            a2: &member[self.a2.clone()],
            b2: &member[self.b2.clone()],
            db2: &member[self.db2.clone()],
        }
    }
}

impl Perturbations {
    /// Which independent draw member `k` uses, and its sign.
    pub fn draw_of(&self, member: usize) -> (u64, f32) {
        if self.antithetic {
            (
                (member / 2) as u64,
                if member.is_multiple_of(2) { 1.0 } else { -1.0 },
            )
        } else {
            (member as u64, 1.0)
        }
    }

    /// Members that share one draw: 2 with antithetic pairs, else 1. O(1).
    pub fn members_per_draw(&self) -> usize {
        if self.antithetic { 2 } else { 1 }
    }

    /// Independent draws behind `members` members: `ceil(M / 2)` with antithetic pairs (an odd
    /// M leaves the last draw unpaired), else M. O(1).
    pub fn draws(&self, members: usize) -> usize {
        members.div_ceil(self.members_per_draw())
    }

    /// The first member of draw `draw` (the one [`Perturbations::fill_factors`] and
    /// [`Perturbations::fill_block`] draw with sign +1). O(1).
    pub fn first_member(&self, draw: usize) -> usize {
        self.members_per_draw() * draw
    }

    /// The coefficient of draw `draw` in `sum_k c_k delta_k`, from the members' `coeffs`: an
    /// antithetic pair's members are `delta` and `-delta`, so the pair adds `(c_2j - c_2j+1)
    /// delta`; an unpaired draw's is its member's. In f64. Panics if `coeffs` lacks the draw's
    /// first member. O(1).
    pub fn draw_coefficient(&self, coeffs: &[f64], draw: usize) -> f64 {
        let first = self.first_member(draw);
        match coeffs.get(first + 1) {
            Some(&partner) if self.antithetic => coeffs[first] - partner,
            _ => coeffs[first],
        }
    }

    /// The generator of row `row` of the collapsed direction's noise at `step` (see
    /// [`super::collapse`]): a stream of its own, apart from every member's.
    pub(crate) fn noise_rng(&self, step: u64, row: u64) -> Xoshiro256PlusPlus {
        block_rng(self.seed, step, NOISE_DRAW, row)
    }

    /// Blocks of a full-rank perturbation.
    pub fn blocks(&self) -> usize {
        self.layout.num_params().div_ceil(BLOCK)
    }

    /// Writes block `block` of member `member`'s full-rank perturbation at `step` into `out`
    /// (length `min(BLOCK, P - block BLOCK)`). O(BLOCK).
    pub fn fill_block(&self, normal: &Normal, step: u64, member: usize, block: usize, out: &mut [f32]) {
        let (draw, sign) = self.draw_of(member);
        let mut rng = block_rng(self.seed, step, draw, block as u64);
        let mut lanes = Lanes::from_rng(&mut rng);
        let start = block * BLOCK;
        let split = self.layout.layer_ranges()[0].end;
        // The layer boundary may cut the block in two.
        let cut = split.saturating_sub(start).min(out.len());
        let (first, second) = out.split_at_mut(cut);
        normal.fill_lanes(&mut lanes, &mut rng, first, sign * self.std[0]);
        normal.fill_lanes(&mut lanes, &mut rng, second, sign * self.std[1]);
    }

    /// Writes member `member`'s whole full-rank perturbation (length P). O(P).
    pub fn fill_member(&self, normal: &Normal, step: u64, member: usize, out: &mut [f32]) {
        for (block, chunk) in out.chunks_mut(BLOCK).enumerate() {
            self.fill_block(normal, step, member, block, chunk);
        }
    }

    /// Layout of one member's low-rank factor vector.
    pub fn factor_ranges(&self) -> FactorRanges {
        let (i, h, o, r) = (
            self.layout.inputs,
            self.layout.hidden,
            self.layout.outputs,
            self.rank,
        );
        let a1 = 0..h * r;
        let b1 = a1.end..a1.end + i * r;
        let db1 = b1.end..b1.end + h;
        let a2 = db1.end..db1.end + o * r;
        let b2 = a2.end..a2.end + h * r;
        let db2 = b2.end..b2.end + o;
        FactorRanges {
            a1,
            b1,
            db1,
            a2,
            b2,
            db2,
        }
    }

    /// Numbers in one member's low-rank factor vector.
    pub fn factor_len(&self) -> usize {
        self.factor_ranges().db2.end
    }

    /// Writes member `member`'s low-rank factors at `step` into `out` (length
    /// [`Perturbations::factor_len`]): `a` factors standard normal, `b` factors scaled by
    /// `sign c s_l / sqrt(r)`, bias perturbations by `sign c s_l`. O(factor_len).
    pub fn fill_factors(&self, normal: &Normal, step: u64, member: usize, out: &mut [f32]) {
        let f = self.factor_ranges();
        let (a1, rest) = out[..f.db2.end].split_at_mut(f.a1.end);
        let (b1, rest) = rest.split_at_mut(f.b1.len());
        let (db1, rest) = rest.split_at_mut(f.db1.len());
        let (a2, rest) = rest.split_at_mut(f.a2.len());
        let (b2, db2) = rest.split_at_mut(f.b2.len());
        let slots = FactorSlots {
            a1,
            b1,
            db1,
            a2,
            b2,
            db2,
        };
        self.fill_factor_slots(normal, step, member, slots);
    }

    /// [`Perturbations::fill_factors`] into six slices of their own, of the lengths of
    /// [`FactorRanges`] (the caller's duty: the random stream runs through them in order).
    /// O(factor_len).
    pub(crate) fn fill_factor_slots(&self, normal: &Normal, step: u64, member: usize, out: FactorSlots<'_>) {
        let (draw, sign) = self.draw_of(member);
        let mut rng = block_rng(self.seed, step, draw, u64::MAX);
        let mut lanes = Lanes::from_rng(&mut rng);
        let inv_sqrt_r = 1.0 / libm::sqrtf(self.rank.max(1) as f32);
        let parts = [
            (out.a1, 1.0),
            (out.b1, sign * self.std[0] * inv_sqrt_r),
            (out.db1, sign * self.std[0]),
            (out.a2, 1.0),
            (out.b2, sign * self.std[1] * inv_sqrt_r),
            (out.db2, sign * self.std[1]),
        ];
        for (slot, scale) in parts {
            normal.fill_lanes(&mut lanes, &mut rng, slot, scale);
        }
    }

    /// Floats [`Perturbations::partner`] writes: `H + r H + outputs`. O(1).
    pub fn partner_len(&self) -> usize {
        let l = &self.layout;
        l.hidden * (1 + self.rank) + l.outputs
    }

    /// The factors of an antithetic pair's partner (member 2j + 1) from its first member's `f`
    /// (member 2j's, as [`Perturbations::fill_factors`] draws them), without drawing: `a1` and
    /// `a2` shared, the signed `db1`, `b2` and `db2` negated into `buf`
    /// ([`Perturbations::partner_len`] floats). That is exactly what `fill_factors` draws for the
    /// partner (each value is `sign scale z` from the same `z`); its `b1` is the first's negated
    /// too, so its projections `X b1^T` are the first's negated. O(H r).
    pub fn partner<'a>(&self, f: Factors<'a>, buf: &'a mut [f32]) -> Factors<'a> {
        let (db1, rest) = buf.split_at_mut(f.db1.len());
        let (b2, rest) = rest.split_at_mut(f.b2.len());
        let db2 = &mut rest[..f.db2.len()];
        for (to, from) in [(&mut *db1, f.db1), (&mut *b2, f.b2), (&mut *db2, f.db2)] {
            to.iter_mut().zip(from).for_each(|(t, &v)| *t = -v);
        }
        Factors {
            a1: f.a1,
            db1,
            a2: f.a2,
            b2,
            db2,
        }
    }

    /// Whether member `member` is the second of an antithetic pair (its draw's sign is -1), whose
    /// factors [`Perturbations::partner`] derives from the first's. O(1).
    pub fn is_partner(&self, member: usize) -> bool {
        self.draw_of(member).1 < 0.0
    }

    /// Expands low-rank factors into the dense perturbation they stand for (length P):
    /// `W_l += a b^T` blocks and the biases. O(P r). For tests and for storing.
    pub fn expand_factors(&self, factors: &[f32], out: &mut [f32]) {
        let (i, h, o, r) = (
            self.layout.inputs,
            self.layout.hidden,
            self.layout.outputs,
            self.rank,
        );
        let f = self.factor_ranges();
        let [w1, b1, w2, b2] = self.layout.ranges();
        let outer = |a: &[f32], b: &[f32], rows: usize, cols: usize, dst: &mut [f32]| {
            for row in 0..rows {
                for col in 0..cols {
                    dst[row * cols + col] = (0..r).map(|q| a[row * r + q] * b[q * cols + col]).sum();
                }
            }
        };
        outer(&factors[f.a1.clone()], &factors[f.b1.clone()], h, i, &mut out[w1]);
        out[b1].copy_from_slice(&factors[f.db1]);
        outer(&factors[f.a2.clone()], &factors[f.b2.clone()], o, h, &mut out[w2]);
        out[b2].copy_from_slice(&factors[f.db2]);
    }
}
