//! IEnK, variant "resampled" (the thesis's scheme, ALGORITHM.md section 3): at every update a
//! fresh ensemble `theta + delta_k` is drawn around the mean, run forward on the batch, and
//! `theta <- theta - h sum_k c_k delta_k`, with
//! - thesis form: `c_k = (1/B) sum_b <softmax(z_kb) - p_b, g_b>`, `g_b = -y_b / (p_b + 0.005)`;
//! - logit form: `c_k = (1/B) sum_b <z_kb - z_b, p_b - y_b>`.
//!
//! `E[sum_k c_k delta_k] = M (c s_l)^2 grad` per layer, so the effective learning rate of layer l
//! is `h M (c s_l)^2`. The coefficients are accumulated in f64. The work is split so that callers
//! can use threads: [`Resampled::dense_coefficients`] over member ranges, then
//! [`Resampled::update_blocks`] over parameter blocks (full rank), or
//! [`Resampled::low_rank_coefficients`] over draw ranges, which leaves each draw's factors for
//! [`Resampled::low_rank_update`] (low rank; [`super::low_rank_update`]), or, on one thread
//! with room for the direction ([`super::step`]), adds each draw's share to it as it comes.

use core::fmt;
use core::ops::Range;

use super::low_rank_update::{DrawRows, SUM_DRAWS_MAX};
use super::particles::{self, Factors};
use super::perturb::{BLOCK, Perturbations};
use super::projected::{
    logit_coefficient_scratch_len, low_rank_logit_coefficients, project_innovation, projected_innovation_len,
};
use crate::gemm;
use crate::loss::{self, BatchStats};
use crate::mlp::{Layout, MlpError, check_len};
use crate::normal::Normal;
use crate::sparse::{self, SparseRows};

/// The thesis's stabiliser in `-y / (p + 0.005)`: keeps the innovation finite (at most 200)
/// when the true class's probability collapses.
pub const THESIS_STABILISER: f64 = 0.005;

/// Low-rank members handled together: their draws' `X b1^T` projections share one sparse
/// product ([`crate::sparse`]), over the batch's non-zero inputs only. At rank 1 it is `B x 128`
/// wide, or `B x 64` with antithetic pairs: at least the 64 output columns the AVX2 sparse
/// kernel keeps in registers (chunks of 64 members, 32 columns with antithetic pairs, took 20%
/// longer per step at 12000 members; 256 and 512 members were no faster). A draw's projection
/// is the same whatever its column, so the chunk's width does not change the results.
pub const LOW_RANK_CHUNK: usize = 128;

/// How the data misfit enters the coefficients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// The thesis's innovation in probability space, `-y / (p + 0.005)`.
    Thesis,
    /// The logit-space innovation `p - y` (bounded by 1; the default).
    Logit,
}

/// The mean network's outputs on a batch and the innovation the members are compared with.
#[derive(Clone, Copy, Debug)]
pub struct MeanView<'a> {
    /// Layer-1 pre-activation `X W1^T + b1` (`B x H`).
    pub pre: &'a [f32],
    /// Logits (`B x outputs`).
    pub logits: &'a [f32],
    /// Softmax of the logits (`B x outputs`).
    pub probs: &'a [f32],
    /// Innovation `g` (`B x outputs`), already divided by B.
    pub innovation: &'a [f32],
}

/// Writes the mean's probabilities and the innovation of `form` for `labels`; returns the mean's
/// loss and accuracy. O(B outputs).
pub fn innovation(
    form: Form,
    logits: &[f32],
    outputs: usize,
    labels: &[u8],
    probs: &mut [f32],
    g: &mut [f32],
) -> Result<BatchStats, MlpError> {
    let stats = loss::cross_entropy_grad(logits, outputs, labels, g)?;
    check_len("probabilities", probs.len(), logits.len())?;
    let inv_b = 1.0 / labels.len().max(1) as f64;
    let rows = logits.chunks_exact(outputs).zip(probs.chunks_exact_mut(outputs));
    for ((row, prow), (grow, &y)) in rows.zip(g.chunks_exact_mut(outputs).zip(labels)) {
        loss::softmax(row, prow);
        if form == Form::Thesis {
            // cross_entropy_grad wrote (p - y) / B; the thesis's innovation is -y / (p + 0.005) / B,
            // non-zero at the label only.
            grow.fill(0.0);
            let py = f64::from(prow[usize::from(y)]);
            grow[usize::from(y)] = (-inv_b / (py + THESIS_STABILISER)) as f32;
        }
    }
    Ok(stats)
}

/// Clips every coefficient to `[-limit, limit]`: bounds the step when the thesis form's
/// innovation `-y / (p + 0.005)` (up to 200) meets a member far from the mean. O(M).
pub fn clip_coefficients(coeffs: &mut [f64], limit: f64) {
    coeffs.iter_mut().for_each(|c| *c = c.clamp(-limit, limit));
}

/// Subtracts the members' mean coefficient from each, `c_k - (1/M) sum_j c_j`: as `c_k` is linear
/// in the member's output (its logits in the logit form, its probabilities in the thesis form),
/// this compares each member with the ensemble's mean output instead of the mean network's, the
/// anomalies of the ensemble Kalman filter's sample covariance. The update loses the term
/// `cbar sum_k delta_k`, noise with no direction in it, which is large when every member's
/// coefficient has the same sign (the thesis form, when the true class's probability has
/// collapsed). With antithetic pairs `sum_k delta_k = 0` and nothing changes but rounding.
/// O(M), in f64.
pub fn center_coefficients(coeffs: &mut [f64]) {
    let mean = coeffs.iter().sum::<f64>() / coeffs.len().max(1) as f64;
    coeffs.iter_mut().for_each(|c| *c -= mean);
}

/// What is done to the coefficients between the member phase and the update (`ienk-cli train
/// --center`, `--clip`): centring first, then clipping. The default does nothing, the thesis's
/// update.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stabiliser {
    /// Subtract the members' mean coefficient ([`center_coefficients`]).
    pub center: bool,
    /// Clip each coefficient to `[-clip, clip]` ([`clip_coefficients`]).
    pub clip: Option<f64>,
}

impl Stabiliser {
    /// Centres, then clips, `coeffs` as configured, then checks that every coefficient is
    /// finite (a NaN survives both): the first that is not is the error, and the update must not
    /// be made. O(M).
    pub fn apply(&self, coeffs: &mut [f64]) -> Result<(), NonFiniteCoefficient> {
        if self.center {
            center_coefficients(coeffs);
        }
        if let Some(limit) = self.clip {
            clip_coefficients(coeffs, limit);
        }
        match coeffs.iter().position(|c| !c.is_finite()) {
            Some(member) => Err(NonFiniteCoefficient {
                member,
                value: coeffs[member],
            }),
            None => Ok(()),
        }
    }

    /// One member's coefficient as [`Stabiliser::apply`] leaves it when it does not centre
    /// (clipped, if clipping), for a step that uses each coefficient as soon as it has it. O(1).
    pub fn clipped(&self, mut c: f64) -> f64 {
        if let Some(limit) = self.clip {
            clip_coefficients(core::slice::from_mut(&mut c), limit);
        }
        c
    }
}

/// A member whose coefficient is NaN or infinite: the step diverged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFiniteCoefficient {
    /// The first such member.
    pub member: usize,
    /// Its coefficient.
    pub value: f64,
}

impl fmt::Display for NonFiniteCoefficient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member {}'s coefficient is {}", self.member, self.value)
    }
}

impl core::error::Error for NonFiniteCoefficient {}

/// The coefficient `c_k` of one member from its logits (`B x outputs`), in f64.
pub fn coefficient(form: Form, member_logits: &[f32], mean: &MeanView<'_>, outputs: usize) -> f64 {
    let mut c = 0f64;
    match form {
        Form::Logit => {
            for ((&zk, &z0), &g) in member_logits.iter().zip(mean.logits).zip(mean.innovation) {
                c += (f64::from(zk) - f64::from(z0)) * f64::from(g);
            }
        }
        Form::Thesis => {
            let mut pk = [0f32; 64];
            for ((zrow, prow), grow) in member_logits
                .chunks_exact(outputs)
                .zip(mean.probs.chunks_exact(outputs))
                .zip(mean.innovation.chunks_exact(outputs))
            {
                let pk = &mut pk[..outputs.min(64)];
                loss::softmax(zrow, pk);
                for ((&a, &b), &g) in pk.iter().zip(prow).zip(grow) {
                    c += (f64::from(a) - f64::from(b)) * f64::from(g);
                }
            }
        }
    }
    c
}

/// The resampled IEnK update rule.
#[derive(Clone, Copy, Debug)]
pub struct Resampled {
    /// How perturbations are drawn (layout, per-layer std, rank, antithetic, seed).
    pub perturb: Perturbations,
    /// Ensemble size M.
    pub members: usize,
    /// Thesis or logit form.
    pub form: Form,
    /// Step size h (the effective learning rate of layer l is `h M (c s_l)^2`, divided by
    /// `1 - momentum` at steady state).
    pub lr: f32,
    /// Momentum mu of the heavy-ball form `v <- mu v + sum_k c_k delta_k; theta <- theta - h v`
    /// (0 = the thesis's plain update, no velocity needed).
    pub momentum: f32,
    /// Divide layer l's direction by `M (c s_l)^2`, making it an unbiased estimate of the
    /// gradient, so that `lr` is a learning rate as in SGD, the same for both layers (false = the
    /// thesis's `theta -= h sum_k c_k delta_k`).
    pub normalize: bool,
}

impl Resampled {
    /// The step of each layer: `lr`, or `lr / (M (c s_l)^2)` when normalizing.
    pub fn layer_steps(&self) -> [f32; 2] {
        let m = self.members as f32;
        self.perturb.std.map(|s| {
            if self.normalize {
                self.lr / (m * s * s)
            } else {
                self.lr
            }
        })
    }

    /// Applies a whole direction `d` (length P, `sum_k c_k delta_k`) to `theta`: `theta -= h_l d`
    /// per layer, through `velocity` (length P) when momentum is used. O(P).
    pub fn apply_direction(
        &self,
        theta: &mut [f32],
        d: &[f32],
        velocity: Option<&mut [f32]>,
    ) -> Result<(), MlpError> {
        let p = self.perturb.layout.num_params();
        check_len("parameter vector", theta.len(), p)?;
        check_len("direction", d.len(), p)?;
        if let Some(v) = velocity.as_deref() {
            check_len("velocity", v.len(), p)?;
        }
        self.apply_layers(theta, d, velocity, 0);
        Ok(())
    }

    /// Applies the direction `d` of the entries `start .. start + d.len()` of theta (`part`),
    /// with each layer's step.
    pub(crate) fn apply_layers(
        &self,
        part: &mut [f32],
        d: &[f32],
        velocity: Option<&mut [f32]>,
        start: usize,
    ) {
        let [h1, h2] = self.layer_steps();
        let cut = self.perturb.layout.layer_ranges()[0]
            .end
            .saturating_sub(start)
            .min(part.len());
        let (p1, p2) = part.split_at_mut(cut);
        let (d1, d2) = d.split_at(cut);
        match velocity {
            Some(v) => {
                let (v1, v2) = v.split_at_mut(cut);
                apply(p1, d1, Some(v1), h1, self.momentum);
                apply(p2, d2, Some(v2), h2, self.momentum);
            }
            None => {
                apply(p1, d1, None, h1, self.momentum);
                apply(p2, d2, None, h2, self.momentum);
            }
        }
    }
}

/// What the full-rank member phase ([`Resampled::dense_coefficients`]) keeps of each member's
/// perturbation once it has the member's coefficient.
#[derive(Debug)]
pub enum Kept<'a> {
    /// Nothing: the update regenerates the perturbations from their seeds.
    Nothing,
    /// The perturbations themselves, of the range's first `len / P` members in order (all of
    /// them with `members x P` floats, for [`Resampled::update_blocks`] to read; fewer for
    /// [`Resampled::add_direction_blocks`], see [`KeptPerturbations`]); the others are not kept.
    Stored(&'a mut [f32]),
    /// Their shares `c_k delta_k`, added in member order to the direction held in these P
    /// floats, each `c_k` clipped to `[-clip, clip]` when given, as [`Stabiliser::apply`] leaves
    /// it without centring (a centred coefficient needs them all first).
    Summed {
        /// The direction the members' shares are added to.
        direction: &'a mut [f32],
        /// The stabiliser's clip.
        clip: Option<f64>,
    },
}

/// Perturbations a member phase kept ([`Kept::Stored`]) for the update's sums to read instead of
/// drawing them again: those of members `first .. first + data.len() / P`, P floats each, in
/// member order.
#[derive(Clone, Copy, Debug)]
pub struct KeptPerturbations<'a> {
    /// The first kept member.
    pub first: usize,
    /// Their perturbations, a whole number of P floats.
    pub data: &'a [f32],
}

impl<'a> KeptPerturbations<'a> {
    /// Member `k`'s entries `range` (of its P), when it is kept. O(1).
    fn member(&self, k: usize, p_len: usize, range: Range<usize>) -> Option<&'a [f32]> {
        let j = k.checked_sub(self.first)?;
        let start = j.checked_mul(p_len)?;
        self.data.get(start + range.start..start + range.end)
    }
}

/// That `len` floats of kept perturbations are a whole number of `p_len`-float perturbations, at
/// most `members` of them, else the length error naming them. O(1).
fn check_whole_perturbations(len: usize, members: usize, p_len: usize) -> Result<(), MlpError> {
    let whole = len.min(members * p_len) / p_len.max(1) * p_len;
    check_len("stored perturbations", len, whole)
}

/// `acc += c delta`, one member's share of the direction: the one multiply-add that the
/// update's sums ([`Resampled::add_direction_blocks`]) and a member phase summing as it goes
/// ([`Kept::Summed`]) both make, so that they agree bit for bit (a low-rank draw's share adds
/// each rank's rows with it too). Without a fused multiply-add, the same bits on every target.
/// O(len).
pub(super) fn add_share(acc: &mut [f32], c: f32, delta: &[f32]) {
    acc.iter_mut().zip(delta).for_each(|(a, &d)| *a += c * d);
}

/// Applies a direction `d` (the sum `sum_k c_k delta_k` over some entries) to `theta`, through
/// the velocity `v` when there is one: `v = mu v + d; theta -= h v`, else `theta -= h d`.
fn apply(theta: &mut [f32], d: &[f32], velocity: Option<&mut [f32]>, lr: f32, mu: f32) {
    match velocity {
        Some(v) => {
            for ((t, &di), vi) in theta.iter_mut().zip(d).zip(v.iter_mut()) {
                *vi = mu * *vi + di;
                *t -= lr * *vi;
            }
        }
        None => theta.iter_mut().zip(d).for_each(|(t, &di)| *t -= lr * di),
    }
}

/// Carves one caller buffer into named parts.
pub(crate) struct Carver<'a>(pub(crate) &'a mut [f32]);

impl<'a> Carver<'a> {
    /// The next `len` floats.
    pub(crate) fn take(&mut self, len: usize) -> &'a mut [f32] {
        let buf = core::mem::take(&mut self.0);
        let (head, tail) = buf.split_at_mut(len);
        self.0 = tail;
        head
    }
}

/// The factors of the member that reads `(draw, negated)` of a chunk whose first draw is row
/// `done` of `rows`: its draw's, or, for an antithetic partner (`negated`), their negation
/// written into `buf` ([`Perturbations::partner`]).
fn member_factors<'a>(
    rule: &Resampled,
    rows: &'a DrawRows<'_>,
    done: usize,
    (draw, negated): (usize, bool),
    buf: &'a mut [f32],
) -> Factors<'a> {
    let first = rows.factors(rule, done + draw);
    if negated {
        rule.perturb.partner(first, buf)
    } else {
        first
    }
}

/// Lengths of the parts of a full-rank member-phase workspace.
fn dense_parts(layout: &Layout, batch: usize) -> [usize; 5] {
    [
        layout.num_params(),
        batch * layout.hidden,
        layout.outputs,
        batch * layout.outputs,
        particles::delta_scratch_len(layout, batch),
    ]
}

/// Floats of a chunk of `c` members' draws' `b1` rows transposed: none when the chunk is one
/// draw of rank 1, whose one row is its own transpose.
fn transposed_b1_len(p: &Perturbations, c: usize) -> usize {
    match c / p.members_per_draw() * p.rank {
        1 => 0,
        rows => rows * p.layout.inputs,
    }
}

/// Lengths of the parts of a low-rank member-phase workspace for chunks of `c` members: two
/// antithetic partners' negated factors (the logit form computes two members at a time), the
/// projections `X b1^T` of every member of a chunk and of its draws (a partner's are its
/// first's negated), a member's scratch, its logits (thesis form), a chunk's draws' `b1` transposed,
/// the batch compressed ([`SparseRows::from_dense_in`]) and the projected innovation (logit
/// form, which needs no member's logits: [`super::projected`]). The factors themselves go to
/// the update's [`DrawRows`].
fn low_rank_parts(p: &Perturbations, form: Form, batch: usize, c: usize) -> [usize; 7] {
    let (l, r) = (&p.layout, p.rank);
    let (scratch, logits, projected) = match form {
        Form::Thesis => (particles::low_rank_scratch_len(l, r), batch * l.outputs, 0),
        Form::Logit => (
            logit_coefficient_scratch_len(l, r, batch, 2),
            0,
            projected_innovation_len(l, batch),
        ),
    };
    [
        2 * p.partner_len(),
        2 * batch * c * r,
        scratch,
        logits,
        transposed_b1_len(p, c),
        sparse::compressed_len(batch, l.inputs),
        projected,
    ]
}

impl Resampled {
    /// Floats of workspace one thread's member phase needs for batches of up to `batch` rows.
    pub fn member_workspace_len(&self, batch: usize) -> usize {
        if self.perturb.rank == 0 {
            dense_parts(&self.perturb.layout, batch).iter().sum()
        } else {
            low_rank_parts(&self.perturb, self.form, batch, LOW_RANK_CHUNK)
                .iter()
                .sum()
        }
    }

    /// Floats of workspace the member phase of a low-rank step that sums the direction as it
    /// goes needs for batches of up to `batch` rows, `draws` draws at a time: the low-rank member phase's for chunks of that
    /// many draws, whatever the number of members. O(1).
    pub fn summing_member_workspace_len(&self, batch: usize, draws: usize) -> usize {
        let chunk = draws * self.perturb.members_per_draw();
        low_rank_parts(&self.perturb, self.form, batch, chunk)
            .iter()
            .sum()
    }

    /// Full-rank member phase: the coefficients of `members` (written to `coeffs`, one per member
    /// of the range), and of each member's perturbation what `kept` asks for: the perturbation
    /// itself, generated in [`Kept::Stored`] (`members.len() x P` for
    /// [`Resampled::update_blocks`], or room for the leading members' only), or its share added
    /// to [`Kept::Summed`]'s direction
    /// (`P` floats, `P` more flops per member). Of `theta` (length P) only the
    /// output layer (`W2`, `b2`) is read, its input layer entering through `mean.pre`: so the
    /// network restricted to a batch's active inputs can be given as the last P floats of the
    /// full network's parameters, whose output layer is the same, without gathering its `W1`.
    /// Costs `members P` normal draws and `2 B members P` flops.
    #[allow(clippy::too_many_arguments)]
    pub fn dense_coefficients(
        &self,
        normal: &Normal,
        theta: &[f32],
        x: &[f32],
        mean: &MeanView<'_>,
        step: u64,
        members: Range<usize>,
        workspace: &mut [f32],
        coeffs: &mut [f64],
        kept: Kept<'_>,
    ) -> Result<(), MlpError> {
        let layout = &self.perturb.layout;
        let o = layout.outputs;
        let p_len = layout.num_params();
        let batch = mean.logits.len() / o;
        let parts = dense_parts(layout, batch);
        check_len("member workspace", workspace.len(), parts.iter().sum())?;
        check_len("coefficients", coeffs.len(), members.len())?;
        // The perturbations' destination, and the direction their shares are added to.
        let (mut store, mut sum) = match kept {
            Kept::Nothing => (None, None),
            Kept::Stored(s) => (Some(s), None),
            Kept::Summed { direction, clip } => (None, Some((direction, Stabiliser { center: false, clip }))),
        };
        if let Some(s) = store.as_deref() {
            check_whole_perturbations(s.len(), members.len(), p_len)?;
        }
        if let Some((direction, _)) = sum.as_ref() {
            check_len("direction", direction.len(), p_len)?;
        }
        let mut carve = Carver(workspace);
        let (own_delta, hidden, bias) = (carve.take(parts[0]), carve.take(parts[1]), carve.take(parts[2]));
        let (logits, scratch) = (carve.take(parts[3]), carve.take(parts[4]));
        for (j, member) in members.enumerate() {
            let delta = match store
                .as_deref_mut()
                .and_then(|s| s.get_mut(j * p_len..(j + 1) * p_len))
            {
                Some(slot) => slot,
                None => &mut *own_delta,
            };
            self.perturb.fill_member(normal, step, member, delta);
            particles::forward_delta_member(
                layout, theta, mean.pre, x, delta, hidden, bias, logits, scratch,
            )?;
            coeffs[j] = coefficient(self.form, logits, mean, o);
            if let Some((direction, stabiliser)) = sum.as_mut() {
                add_share(direction, stabiliser.clipped(coeffs[j]) as f32, delta);
            }
        }
        Ok(())
    }

    /// Full-rank update of the parameter blocks `first_block ..`, whose entries are `part`
    /// (a contiguous piece of theta starting at `first_block * BLOCK`): `part -= h sum_k c_k
    /// delta_k` (through `velocity`, the same piece of the velocity, when momentum is used), each
    /// delta regenerated from its seed, or read from `stored` (`M x P`) when given. `tmp` holds
    /// `BLOCK` floats; the sums take `BLOCK` floats (16 KB) of stack. Costs `M len(part)` normal
    /// draws (none when stored).
    #[allow(clippy::too_many_arguments)]
    pub fn update_blocks(
        &self,
        normal: &Normal,
        part: &mut [f32],
        mut velocity: Option<&mut [f32]>,
        first_block: usize,
        coeffs: &[f64],
        step: u64,
        stored: Option<&[f32]>,
        tmp: &mut [f32],
    ) -> Result<(), MlpError> {
        if let Some(s) = stored {
            check_len(
                "stored perturbations",
                s.len(),
                self.members * self.perturb.layout.num_params(),
            )?;
        }
        let stored = stored.map(|data| KeptPerturbations { first: 0, data });
        self.check_sum_buffers(coeffs, stored, tmp)?;
        if let Some(v) = velocity.as_deref() {
            check_len("velocity", v.len(), part.len())?;
        }
        let mut acc = [0f32; BLOCK];
        for (b, chunk) in part.chunks_mut(BLOCK).enumerate() {
            let block = first_block + b;
            let acc = &mut acc[..chunk.len()];
            acc.fill(0.0);
            self.sum_block(normal, acc, block, coeffs, 0, step, stored, tmp);
            let v = velocity
                .as_deref_mut()
                .map(|v| &mut v[b * BLOCK..b * BLOCK + chunk.len()]);
            self.apply_layers(chunk, acc, v, block * BLOCK);
        }
        Ok(())
    }

    /// Adds the shares `c_k delta_k` of the members `from..M` to the direction held in `part`,
    /// over the parameter blocks `first_block ..`, member by member: the sums of
    /// [`Resampled::update_blocks`], bit for bit, when `part` starts at zero (`from` = 0) or
    /// holds the first `from` members' shares summed in member order from zero (what a member
    /// phase with room for the direction leaves), made in `part` itself, so without the update's
    /// stack. The members `stored` holds are read from it, the others drawn again. O(as the
    /// update, for `M - from` members; no draws for the stored ones).
    #[allow(clippy::too_many_arguments)]
    pub fn add_direction_blocks(
        &self,
        normal: &Normal,
        part: &mut [f32],
        first_block: usize,
        coeffs: &[f64],
        from: usize,
        step: u64,
        stored: Option<KeptPerturbations<'_>>,
        tmp: &mut [f32],
    ) -> Result<(), MlpError> {
        self.check_sum_buffers(coeffs, stored, tmp)?;
        for (b, chunk) in part.chunks_mut(BLOCK).enumerate() {
            self.sum_block(normal, chunk, first_block + b, coeffs, from, step, stored, tmp);
        }
        Ok(())
    }

    /// Checks the buffers of [`Resampled::update_blocks`] and [`Resampled::add_direction_blocks`]:
    /// a coefficient per member, a block of `tmp`, and stored perturbations, if any, of members
    /// that exist (a whole number of P floats). O(1).
    fn check_sum_buffers(
        &self,
        coeffs: &[f64],
        stored: Option<KeptPerturbations<'_>>,
        tmp: &[f32],
    ) -> Result<(), MlpError> {
        check_len("coefficients", coeffs.len(), self.members)?;
        check_len("block buffer", tmp.len(), BLOCK)?;
        if let Some(s) = stored {
            let (p_len, members) = (self.perturb.layout.num_params(), self.members);
            check_whole_perturbations(s.data.len(), members.saturating_sub(s.first), p_len)?;
        }
        Ok(())
    }

    /// Adds `sum_{k >= from} c_k delta_k` over the first `acc.len()` entries of parameter block
    /// `block` to `acc`, member by member, each delta read from `stored` when it holds it, else
    /// regenerated into `tmp`. Costs `len(acc)` normal draws per member not stored.
    #[allow(clippy::too_many_arguments)]
    fn sum_block(
        &self,
        normal: &Normal,
        acc: &mut [f32],
        block: usize,
        coeffs: &[f64],
        from: usize,
        step: u64,
        stored: Option<KeptPerturbations<'_>>,
        tmp: &mut [f32],
    ) {
        let (p_len, start) = (self.perturb.layout.num_params(), block * BLOCK);
        for (k, &c) in coeffs.iter().enumerate().skip(from) {
            let delta: &[f32] = match stored.and_then(|s| s.member(k, p_len, start..start + acc.len())) {
                Some(kept) => kept,
                None => {
                    let t = &mut tmp[..acc.len()];
                    self.perturb.fill_block(normal, step, k, block, t);
                    t
                }
            };
            add_share(acc, c as f32, delta);
        }
    }

    /// The members of draws `draws` (an antithetic pair's two, or one each): `first_member(d0)
    /// .. first_member(d1)`, the last cut at M. O(1).
    pub fn members_of(&self, draws: Range<usize>) -> Range<usize> {
        let end = |d: usize| self.perturb.first_member(d).min(self.members);
        end(draws.start)..end(draws.end).max(end(draws.start))
    }

    /// Low-rank member phase: the coefficients of the members of draws `draws`
    /// ([`Resampled::members_of`]), given the mean's pre-activation. Each draw's factors are
    /// drawn once, into `rows` (those draws' rows of the update's [`DrawRows`], see
    /// [`DrawRows::split_draws`]), where [`Resampled::low_rank_update`] reads them; an
    /// antithetic partner's are its first member's negated. Costs `draws (factor_len)` normal
    /// draws, `2 nnz(X) draws r` flops for the draws' projections `X b1^T` (a pair shares
    /// them; only the batch's non-zero inputs count, and `b1` is transposed a chunk at a time
    /// for it), and per member about `2 B (2 H r + H outputs)` in the thesis form, which forms
    /// each member's logits; the logit form needs only their projection on the innovation
    /// ([`super::projected`]): `2 B 2 H (1 + r)` per member, plus `2 B H outputs` once.
    #[allow(clippy::too_many_arguments)]
    pub fn low_rank_coefficients(
        &self,
        normal: &Normal,
        theta: &[f32],
        x: &[f32],
        mean: &MeanView<'_>,
        step: u64,
        draws: Range<usize>,
        workspace: &mut [f32],
        coeffs: &mut [f64],
        rows: DrawRows<'_>,
    ) -> Result<(), MlpError> {
        self.low_rank_phase(
            normal,
            theta,
            x,
            mean,
            step,
            draws,
            workspace,
            coeffs,
            rows,
            FactorsTo::Rows,
        )
    }

    /// The low-rank member phase of [`Resampled::low_rank_coefficients`] (`sink` the update's
    /// rows), or of one worker that adds each draw's share of the direction `sum_k c_k delta_k`
    /// as soon as its members' coefficients are known (`sink` the direction, P floats, zeroed
    /// first, as [`super::step`] gives it), a chunk of draws at a time (1 to
    /// [`SUM_DRAWS_MAX`]), so that it keeps that many draws' factors instead of every draw's:
    /// the coefficients of all the draws' members (in `coeffs`, each clipped when the sink
    /// says, as [`Stabiliser::apply`] leaves them without centring, which needs them all
    /// first), and with a direction sink the whole direction. The workspace then holds
    /// [`Resampled::summing_member_workspace_len`] floats, `rows` a chunk's draws
    /// ([`Resampled::draw_rows`]). The coefficients are the same bits either way; the direction
    /// is the one [`Resampled::low_rank_update`] forms, summed draw after draw instead of by a
    /// matrix product, so its last bits may differ from it, but not with the chunk's size.
    /// Costs, with a direction sink, `2 D r P` flops more, which load and store the direction
    /// once per chunk (slower than the update's matrix product on a PC, for memory independent
    /// of M).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn low_rank_phase(
        &self,
        normal: &Normal,
        theta: &[f32],
        x: &[f32],
        mean: &MeanView<'_>,
        step: u64,
        draws: Range<usize>,
        workspace: &mut [f32],
        coeffs: &mut [f64],
        mut rows: DrawRows<'_>,
        mut sink: FactorsTo<'_>,
    ) -> Result<(), MlpError> {
        let pt = &self.perturb;
        let layout = &pt.layout;
        let (i, o, r) = (layout.inputs, layout.outputs, pt.rank);
        let batch = mean.logits.len() / o;
        particles::check_low_rank("rank of a low-rank member phase (low rank starts at 1)", r)?;
        // Members per chunk: as many as LOW_RANK_CHUNK, or one draw's when summing, whose rows
        // then hold that draw only (row 0).
        let per_draw = pt.members_per_draw();
        let (chunk_members, row_draws) = match &mut sink {
            FactorsTo::Rows => (LOW_RANK_CHUNK, draws.len()),
            FactorsTo::Direction {
                direction,
                draws: at_once,
                ..
            } => {
                check_len("direction", direction.len(), layout.num_params())?;
                if !(1..=SUM_DRAWS_MAX).contains(at_once) {
                    return Err(MlpError::Length {
                        what: "draws summed at a time",
                        expected: SUM_DRAWS_MAX,
                        found: *at_once,
                    });
                }
                direction.fill(0.0);
                (*at_once * per_draw, *at_once)
            }
        };
        let parts = low_rank_parts(pt, self.form, batch, chunk_members);
        check_len("member workspace", workspace.len(), parts.iter().sum())?;
        self.check_draws(&draws)?;
        let members = self.members_of(draws.clone());
        check_len("coefficients", coeffs.len(), members.len())?;
        rows.check(self, row_draws)?;
        let mut carve = Carver(workspace);
        let (partners, xb, hidden) = (carve.take(parts[0]), carve.take(parts[1]), carve.take(parts[2]));
        let (partner0, partner1) = partners.split_at_mut(pt.partner_len());
        let (logits, b1t) = (carve.take(parts[3]), carve.take(parts[4]));
        let x_sparse = SparseRows::from_dense_in(x, i, carve.take(parts[5]))?;
        let projected = match self.form {
            Form::Logit => Some(project_innovation(
                layout,
                theta,
                mean.innovation,
                carve.take(parts[6]),
            )?),
            Form::Thesis => None,
        };
        let path = gemm::active_kernel();
        let per_chunk = chunk_members / per_draw;
        let mut done = 0;
        let mut k = 0;
        while done < draws.len() {
            let chunk = per_chunk.min(draws.len() - done);
            // The chunk's first draw's row: `done`, or 0 when the rows hold one chunk.
            let row0 = match sink {
                FactorsTo::Rows => done,
                FactorsTo::Direction { .. } => 0,
            };
            for j in 0..chunk {
                let member = pt.first_member(draws.start + done + j);
                pt.fill_factor_slots(normal, step, member, rows.slots(self, row0 + j));
            }
            // Member m of the chunk reads column `source[m]` of the draws' projections,
            // negated for an antithetic partner.
            let mut source = [(0usize, false); LOW_RANK_CHUNK];
            let mut in_chunk = 0;
            for d in 0..chunk {
                let first = pt.first_member(draws.start + done + d);
                for member in first..members.end.min(first + per_draw) {
                    source[in_chunk] = (d, pt.is_partner(member));
                    in_chunk += 1;
                }
            }
            let (cr, sr) = (in_chunk * r, chunk * r);
            let (xb, xs) = xb.split_at_mut(batch * cr);
            let xs = &mut xs[..batch * sr];
            // X b1^T over the non-zero inputs only: b1's rows transposed, so that each
            // non-zero pixel adds one contiguous row of it (one row is its own transpose).
            let b1 = &rows.b1[row0 * r * i..(row0 + chunk) * r * i];
            let b1t = match sr {
                1 => b1,
                _ => {
                    let b1t = &mut b1t[..sr * i];
                    sparse::transpose_on(path, b1, sr, i, b1t)?;
                    &*b1t
                }
            };
            sparse::sparse_product_on(path, &x_sparse, b1t, sr, xs)?;
            for (xb_b, xs_b) in xb.chunks_exact_mut(cr.max(1)).zip(xs.chunks_exact(sr.max(1))) {
                for (out, &(column, negated)) in xb_b.chunks_exact_mut(r).zip(&source[..in_chunk]) {
                    // Element by element: at rank 1 a copy_from_slice is a call to memcpy per float.
                    let from = &xs_b[column * r..(column + 1) * r];
                    for (o, &v) in out.iter_mut().zip(from) {
                        *o = if negated { -v } else { v };
                    }
                }
            }
            let xbm = |m: usize| {
                if batch == 0 {
                    &xb[..0]
                } else {
                    &xb[m * r..batch * cr]
                }
            };
            let mut m = 0;
            while m < in_chunk {
                if let Some(g) = &projected
                    && m + 1 < in_chunk
                {
                    // Two members at a time: each reads the mean's rows once for both.
                    let f = [
                        member_factors(self, &rows, row0, source[m], partner0),
                        member_factors(self, &rows, row0, source[m + 1], partner1),
                    ];
                    let xbs = [xbm(m), xbm(m + 1)];
                    let pair = low_rank_logit_coefficients(path, layout, r, mean.pre, xbs, cr, f, g, hidden)?;
                    coeffs[k..k + 2].copy_from_slice(&pair);
                    (m, k) = (m + 2, k + 2);
                    continue;
                }
                let f = member_factors(self, &rows, row0, source[m], partner0);
                coeffs[k] = match &projected {
                    Some(g) => {
                        let scratch = &mut hidden[..logit_coefficient_scratch_len(layout, r, batch, 1)];
                        low_rank_logit_coefficients(path, layout, r, mean.pre, [xbm(m)], cr, [f], g, scratch)?
                            [0]
                    }
                    None => {
                        particles::forward_low_rank_member(
                            path,
                            layout,
                            r,
                            theta,
                            mean.pre,
                            xbm(m),
                            cr,
                            f,
                            hidden,
                            logits,
                        )?;
                        coefficient(self.form, logits, mean, o)
                    }
                };
                (m, k) = (m + 1, k + 1);
            }
            if let FactorsTo::Direction { direction, clip, .. } = &mut sink {
                // The chunk's members' coefficients are the last `in_chunk`; its draws' rows the
                // first `chunk`.
                let first = k - in_chunk;
                if let Some(limit) = *clip {
                    clip_coefficients(&mut coeffs[first..k], limit);
                }
                let (mine, _) = rows.reborrow().split_draws(self, chunk);
                self.add_draw_shares(&coeffs[first..k], chunk, &mine, direction)?;
            }
            done += chunk;
        }
        Ok(())
    }
}

/// Where a low-rank member phase leaves each draw's factors.
pub(crate) enum FactorsTo<'a> {
    /// In the update's rows, each draw of the range in its own row, for
    /// [`Resampled::low_rank_update`].
    Rows,
    /// In the rows of `draws` draws, reused chunk after chunk: once a chunk's members'
    /// coefficients are known (and clipped to `[-clip, clip]` when given), its draws' shares
    /// are added to `direction`.
    Direction {
        /// The direction, P floats, zeroed before the first draw.
        direction: &'a mut [f32],
        /// The stabiliser's clip.
        clip: Option<f64>,
        /// Draws per chunk.
        draws: usize,
    },
}
