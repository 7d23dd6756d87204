//! One whole resampled IEnK step in caller buffers, on the caller's workers: what firmware calls
//! to train on one thread ([`Resampled::step`]) and `ienk-cli train --optimizer ienk` calls on
//! its thread pool ([`Resampled::step_on`]).
//!
//! The phases: the mean's forward pass and innovation, the members' coefficients (member or
//! draw ranges, one per worker), [`Stabiliser`], the update (parameter blocks, draw ranges and
//! row ranges per worker). Every phase gives the same numbers however it is cut, so a step does
//! not depend on the number of workers, bit for bit. Full rank, the members perturb only the
//! input columns the batch uses and the rest of the direction is drawn at once
//! ([`super::collapse`]); the perturbations are regenerated from their seeds in the update
//! unless the caller gives room to store them, or room for the direction, which the first
//! worker's members then sum as they go (and whose spare floats keep the later workers'
//! members' perturbations, as many as fit). Low rank, every draw's factors are kept for the
//! update's matrix products, unless one worker is given room for the direction: then each
//! draw's share is added to it as the draw's members finish, one draw's factors at a time (or
//! up to [`SUM_DRAWS_MAX`] draws', given a larger workspace).
//! Full rank, and low rank with that room, the workspace is therefore O(P + B (inputs + H))
//! floats plus GEMM scratch and, per worker, a member workspace, whatever the number of members
//! (the members read the full network's output layer in place, and the update's direction
//! reuses the member phase's room): for the thesis's network (P = 101,770) on one worker
//! 107,868 floats (0.43 MB) at batch 1, 271,332 at batch 32.

use core::fmt;

use super::collapse::{active_columns, draw_coefficient_norm, expand_w1_rows, restrict_batch};
use super::low_rank_update::{DrawRows, SUM_DRAWS_MAX};
use super::perturb::{BLOCK, Perturbations};
use super::resampled::{
    Carver, FactorsTo, Kept, KeptPerturbations, MeanView, NonFiniteCoefficient, Resampled, Stabiliser,
    innovation,
};
use crate::loss::BatchStats;
use crate::mlp::{Layout, MlpError, check_len};
use crate::normal::Normal;
use crate::workers::{OneThread, Workers, optional_chunks, part_len, part_ranges, shares};

/// Why [`Resampled::step`] stopped. Either way theta was not changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepError {
    /// A buffer of the wrong length, or a label past the outputs.
    Mlp(MlpError),
    /// A member's coefficient is NaN or infinite: the step diverged.
    Diverged(NonFiniteCoefficient),
    /// [`StepBuffers::direction`] was given to a step that cannot sum the direction in its
    /// member phase; the text says why.
    NoDirectionRoom(&'static str),
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Mlp(e) => write!(f, "{e}"),
            StepError::Diverged(e) => write!(f, "the step diverged: {e}"),
            StepError::NoDirectionRoom(why) => write!(f, "room for the direction given, but {why}"),
        }
    }
}

impl core::error::Error for StepError {}

impl From<MlpError> for StepError {
    fn from(e: MlpError) -> Self {
        StepError::Mlp(e)
    }
}

impl From<NonFiniteCoefficient> for StepError {
    fn from(e: NonFiniteCoefficient) -> Self {
        StepError::Diverged(e)
    }
}

/// Where a step's move goes.
#[derive(Debug)]
pub enum Move<'a> {
    /// `theta -= h sum_k c_k delta_k`, each layer with its step ([`Resampled::layer_steps`]),
    /// through `velocity` (length P) when the rule has momentum.
    Theta {
        /// The momentum's velocity (length P), or `None` without momentum.
        velocity: Option<&'a mut [f32]>,
    },
    /// Theta stays as it is; `estimate` (length P) is overwritten with the ensemble's estimate
    /// of the batch loss's gradient, `sum_k c_k delta_k / (M (c s_l)^2)` on layer l, for an
    /// optimizer of the caller's (`ienk-cli --update adam`).
    Estimate {
        /// The gradient estimate, length P.
        estimate: &'a mut [f32],
    },
}

/// The caller's buffers of [`Resampled::step`]; their contents between steps do not matter.
#[derive(Debug)]
pub struct StepBuffers<'a> {
    /// At least [`Resampled::step_workspace_len`] floats for the batch size and the workers, or
    /// [`Resampled::step_workspace_len_for`] with a bound on the batch's non-zero input columns
    /// (a batch beyond the bound is refused); with [`StepBuffers::direction`],
    /// [`Resampled::step_workspace_len_with_room_for`] is enough.
    pub work: &'a mut [f32],
    /// At least `layout.inputs` entries (the batch's active input columns; unused with low rank).
    pub columns: &'a mut [u32],
    /// Exactly M entries: the members' coefficients, left there after the step.
    pub coefficients: &'a mut [f64],
    /// Full rank only: room for the M perturbations (exactly `M x P` floats), drawn once by the
    /// member phase and read back by the update, which then draws only the inactive inputs'
    /// part of the direction: half the members' normal draws for `M P` floats of memory.
    /// `None` regenerates them from their seeds (O(P) memory).
    pub stored: Option<&'a mut [f32]>,
    /// Full rank, coefficients not centred, perturbations not stored: room for the direction
    /// on the batch's active inputs (at least [`Resampled::step_direction_len_for`] floats for
    /// the bound on them). The first worker's members (the leading `ceil(M / workers)`) then
    /// add their shares `c_k delta_k` while their perturbations are at hand, in member order,
    /// and the update draws only the other members' perturbations again. That saves half the
    /// members' normal draws on one worker (a Cortex-M4F's step takes about 30% fewer
    /// instructions), `1 / (2 w)` of them on `w`, for one restricted network's floats (less
    /// [`BLOCK`] on one worker, whose workspace can be smaller: see
    /// [`Resampled::step_workspace_len_with_room_for`]). On several workers, what the room
    /// holds past the batch's restricted network keeps the perturbations of the members after
    /// the first worker's, as many whole ones as fit in member order, and the update reads
    /// those instead of drawing them again (on two workers, ten members and an MNIST image,
    /// about twice the direction keeps all five). The same numbers, bit for bit, on any number
    /// of workers and any room. Low rank, on one worker: room for the whole direction (P
    /// floats), to which each draw's share is added as soon as its members' coefficients are
    /// known, so that the step keeps one draw's factors instead of every draw's: a workspace
    /// that does not grow with M ([`Resampled::step_workspace_len_with_room_for`]; a larger
    /// one, [`Resampled::summing_workspace_len`], sums up to [`SUM_DRAWS_MAX`] draws' shares
    /// at a time, loading and storing the direction that many times fewer, the same bits), for a
    /// direction summed draw after draw instead of by a matrix product (the same coefficients,
    /// bit for bit; the direction's last bits may differ, see
    /// [`super::low_rank_update`]), slower on a PC. Given to any other step
    /// (centred coefficients, stored perturbations, low rank on several workers), it is refused
    /// ([`StepError::NoDirectionRoom`]).
    pub direction: Option<&'a mut [f32]>,
}

/// `region`'s first `len` floats, or the error naming `what`.
fn prefix<'a>(what: &'static str, region: &'a mut [f32], len: usize) -> Result<&'a mut [f32], MlpError> {
    let found = region.len();
    region.get_mut(..len).ok_or(MlpError::Length {
        what,
        expected: len,
        found,
    })
}

impl Resampled {
    /// Lengths of the parts of the step workspace for `batch` rows with at most `active`
    /// non-zero input columns on `workers` workers, with [`StepBuffers::direction`] given
    /// (`room`) or not: the mean's pre-activation, hidden layer, logits, probabilities and
    /// innovation, its GEMM scratch, the member phase's workspaces, and the update's (low rank
    /// on one worker with the room: `draws` draws' factors at a time).
    fn step_parts(
        &self,
        batch: usize,
        active: usize,
        workers: usize,
        room: bool,
        draws: usize,
    ) -> [usize; 8] {
        let l = &self.perturb.layout;
        let (bh, bo, w) = (batch * l.hidden, batch * l.outputs, workers.max(1));
        let (members, update) = if self.perturb.rank == 0 {
            // Per worker a member workspace of the restricted network, whose first one's room for
            // a perturbation holds the restricted direction once the members are done; then the
            // restricted batch, per worker a W1 row and, unless the members sum the whole
            // direction, a perturbation block.
            let (active, sub) = (active.min(l.inputs), self.restricted_to(active.min(l.inputs)));
            (
                sub.member_workspace_len(batch),
                batch * active + w * (self.update_block_len(w, room) + l.inputs),
            )
        } else if room && w == 1 {
            // `draws` draws' factors at a time, summed into the room as they come.
            (
                self.summing_member_workspace_len(batch, draws),
                self.draw_rows_len(draws),
            )
        } else {
            (self.member_workspace_len(batch), self.low_rank_update_len(w))
        };
        [
            bh,
            bh,
            bo,
            bo,
            bo,
            l.forward_scratch_len(batch),
            w * members,
            update,
        ]
    }

    /// Floats of perturbation block each of `workers` workers needs to add members' shares to
    /// the direction: [`BLOCK`], or none when the direction has `room` and one worker's members
    /// are all of them, so that they sum it all as they go. O(1).
    fn update_block_len(&self, workers: usize, room: bool) -> usize {
        if room && part_len(self.members, workers) >= self.members {
            0
        } else {
            BLOCK
        }
    }

    /// This rule on the network restricted to `active` input columns: the full-rank members'
    /// network on a batch with that many active inputs. O(1).
    fn restricted_to(&self, active: usize) -> Resampled {
        Resampled {
            perturb: Perturbations {
                layout: Layout {
                    inputs: active,
                    ..self.perturb.layout
                },
                ..self.perturb
            },
            ..*self
        }
    }

    /// Floats of [`StepBuffers::work`] a step on up to `batch` rows needs on `workers` workers
    /// ([`Workers::count`]; 1 for [`Resampled::step`]), whatever the batch. O(1).
    pub fn step_workspace_len(&self, batch: usize, workers: usize) -> usize {
        self.step_workspace_len_for(batch, self.perturb.layout.inputs, workers)
    }

    /// As [`Resampled::step_workspace_len`], for batches with at most `active` input columns
    /// that are non-zero in some row (less for full-rank members, which are restricted to those
    /// columns; the same for low rank). A step on a batch with more fails, changing nothing. A
    /// firmware's bound for MNIST digits: at most 351 non-zero pixels in any training image.
    /// O(1).
    pub fn step_workspace_len_for(&self, batch: usize, active: usize, workers: usize) -> usize {
        self.step_parts(batch, active, workers, false, 1).iter().sum()
    }

    /// As [`Resampled::step_workspace_len_for`], for a step also given
    /// [`StepBuffers::direction`]: on one worker the members then sum the whole direction, and
    /// the update needs no perturbation block ([`BLOCK`] floats fewer; low rank, the member
    /// phase and the update keep one draw's factors instead of every draw's, a workspace that
    /// does not grow with M); on several, as many floats as without the room. O(1).
    pub fn step_workspace_len_with_room_for(&self, batch: usize, active: usize, workers: usize) -> usize {
        self.step_parts(batch, active, workers, true, 1).iter().sum()
    }

    /// Floats of [`StepBuffers::work`] with which a low-rank step on one worker, given
    /// [`StepBuffers::direction`], sums the shares of `draws` draws at a time (1 to
    /// [`SUM_DRAWS_MAX`]): each pass over the direction then adds that many, for their factors'
    /// memory; the bits do not change. With 1, [`Resampled::step_workspace_len_with_room_for`].
    /// A step given a workspace between two of these sizes takes the smaller's draws. O(1).
    pub fn summing_workspace_len(&self, batch: usize, draws: usize) -> usize {
        let draws = draws.clamp(1, SUM_DRAWS_MAX);
        self.step_parts(batch, self.perturb.layout.inputs, 1, true, draws)
            .iter()
            .sum()
    }

    /// The most draws (at most [`SUM_DRAWS_MAX`] and the rule's) whose shares a low-rank step on
    /// one worker with room for the direction sums at a time in a workspace of `len` floats, for
    /// batches of up to `batch` rows; 1 when even one does not fit (the step then refuses the
    /// workspace). O(SUM_DRAWS_MAX).
    pub fn draws_summed_in(&self, batch: usize, len: usize) -> usize {
        (1..=SUM_DRAWS_MAX.min(self.draws()))
            .take_while(|&k| self.summing_workspace_len(batch, k) <= len)
            .last()
            .unwrap_or(1)
    }

    /// Why a step of this rule with `stabiliser`, its perturbations `stored` or not, on
    /// `workers` workers, cannot take [`StepBuffers::direction`] (low-rank members on several
    /// workers, centred coefficients, stored perturbations), or `None` when it can: what
    /// [`Resampled::step_on`] refuses with [`StepError::NoDirectionRoom`], for a caller
    /// deciding whether to give the room. O(1).
    pub fn direction_room_refusal(
        &self,
        stabiliser: Stabiliser,
        stored: bool,
        workers: usize,
    ) -> Option<&'static str> {
        [
            (
                self.perturb.rank != 0 && workers > 1,
                "low-rank members sum the direction on one worker only",
            ),
            (
                stabiliser.center,
                "the coefficients are centred, which needs them all first",
            ),
            (stored, "the perturbations are stored"),
        ]
        .into_iter()
        .find_map(|(refused, why)| refused.then_some(why))
    }

    /// Floats of [`StepBuffers::direction`] a step on batches with at most `active` non-zero
    /// input columns needs: full rank, the parameters of the network restricted to them (more
    /// room keeps later workers' perturbations, see [`StepBuffers::direction`]); low rank,
    /// whose members perturb every input column, P. O(1).
    pub fn step_direction_len_for(&self, active: usize) -> usize {
        let active = match self.perturb.rank {
            0 => active.min(self.perturb.layout.inputs),
            _ => self.perturb.layout.inputs,
        };
        self.restricted_to(active).perturb.layout.num_params()
    }

    /// One update of `theta` on the batch `x` (`B x inputs`, pixels in [0, 1]) with labels `y`,
    /// on this thread: [`Resampled::step_on`] with [`OneThread`] and [`Move::Theta`].
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        normal: &Normal,
        stabiliser: Stabiliser,
        theta: &mut [f32],
        velocity: Option<&mut [f32]>,
        x: &[f32],
        y: &[u8],
        step: u64,
        buffers: StepBuffers<'_>,
    ) -> Result<BatchStats, StepError> {
        let target = Move::Theta { velocity };
        self.step_on(&OneThread, normal, stabiliser, theta, target, x, y, step, buffers)
    }

    /// One step on the batch `x` (`B x inputs`, pixels in [0, 1]) with labels `y`, its work cut
    /// over `workers`: the coefficients of the M members of step number `step` (which, with the
    /// rule's seed, fixes their perturbations), `stabiliser` applied to them, then the move
    /// `target` (theta moved, or the gradient estimate written). The same numbers on any
    /// number of workers. Returns the batch's loss and accuracy under theta before the move.
    /// Costs, over all workers: full rank, `M (H a + P_2)` normal draws for the members'
    /// perturbations (`a` the active inputs), twice (forward and update; once when stored, and
    /// for the members that sum the direction or that its room keeps), `H inputs` for the rest
    /// of the direction, and
    /// `2 B M (H a + 2 H outputs)` flops; low rank, `D factor_len` normal draws (D draws: M, or
    /// ceil(M / 2) with antithetic pairs), once, the member phase's flops
    /// ([`Resampled::low_rank_coefficients`]) and the update's `2 D r P` (with room for the
    /// direction, the same count, draw after draw).
    #[allow(clippy::too_many_arguments)]
    pub fn step_on<W: Workers>(
        &self,
        workers: &W,
        normal: &Normal,
        stabiliser: Stabiliser,
        theta: &mut [f32],
        target: Move<'_>,
        x: &[f32],
        y: &[u8],
        step: u64,
        buffers: StepBuffers<'_>,
    ) -> Result<BatchStats, StepError> {
        let layout = self.perturb.layout;
        let (i, p, m) = (layout.inputs, layout.num_params(), self.members);
        let (b, count) = (y.len(), workers.count().max(1));
        check_len("parameter vector", theta.len(), p)?;
        match &target {
            Move::Theta { velocity: Some(v) } => check_len("velocity", v.len(), p)?,
            Move::Theta { velocity: None } if self.momentum != 0.0 => check_len("velocity", 0, p)?,
            Move::Theta { velocity: None } => {}
            Move::Estimate { estimate } => check_len("gradient estimate", estimate.len(), p)?,
        }
        let coeffs = buffers.coefficients;
        check_len("coefficients", coeffs.len(), m)?;
        match buffers.stored.as_deref() {
            Some(s) if self.perturb.rank != 0 => {
                check_len("stored perturbations (low rank stores none)", s.len(), 0)?
            }
            Some(s) => check_len("stored perturbations", s.len(), m * p)?,
            None => {}
        }
        let room_given = buffers.direction.is_some();
        if room_given
            && let Some(why) = self.direction_room_refusal(stabiliser, buffers.stored.is_some(), count)
        {
            return Err(StepError::NoDirectionRoom(why));
        }
        // Full rank works on the batch's active input columns: the update's part depends on
        // how many there are.
        let active = match self.perturb.rank {
            0 => active_columns(x, i, buffers.columns)?,
            _ => i,
        };
        let draws_at_once = match (self.perturb.rank, room_given, count) {
            (1.., true, 1) => self.draws_summed_in(b, buffers.work.len()),
            _ => 1,
        };
        let parts = self.step_parts(b, active, count, room_given, draws_at_once);
        let mut carve = Carver(prefix("step workspace", buffers.work, parts.iter().sum())?);
        let (pre, hidden, logits) = (carve.take(parts[0]), carve.take(parts[1]), carve.take(parts[2]));
        let (probs, g, scratch) = (carve.take(parts[3]), carve.take(parts[4]), carve.take(parts[5]));
        let (member_ws, update_ws) = (carve.take(parts[6]), carve.take(parts[7]));
        layout.forward_keep_pre(theta, x, pre, hidden, logits, scratch)?;
        let stats = innovation(self.form, logits, layout.outputs, y, probs, g)?;
        let mean = MeanView {
            pre,
            logits,
            probs,
            innovation: g,
        };
        if self.perturb.rank != 0 {
            if let Some(room) = buffers.direction {
                // One worker: each draw's share is added to the direction as its members finish.
                let direction = prefix("direction", room, p)?;
                let rows = self.draw_rows(update_ws, draws_at_once)?;
                let sink = FactorsTo::Direction {
                    direction: &mut *direction,
                    clip: stabiliser.clip,
                    draws: draws_at_once,
                };
                let draws = 0..self.draws();
                self.low_rank_phase(
                    normal, theta, x, &mean, step, draws, member_ws, coeffs, rows, sink,
                )?;
                stabiliser.apply(coeffs)?;
                let (mover, target, velocity) = self.mover(target, theta);
                mover.apply_layers(target, direction, velocity, 0);
                return Ok(stats);
            }
            let mut update = self.update_workspace(update_ws, count)?;
            let members = shares(member_ws, self.member_workspace_len(b));
            self.low_rank_members(
                workers,
                normal,
                theta,
                x,
                &mean,
                step,
                members,
                coeffs,
                update.rows.reborrow(),
            )?;
            stabiliser.apply(coeffs)?;
            let (mover, target, velocity) = self.mover(target, theta);
            mover.low_rank_update(workers, target, velocity, coeffs, update)?;
            return Ok(stats);
        }

        // Full rank: the members of the network restricted to the active inputs.
        let cols = &buffers.columns[..active];
        let sub_rule = self.restricted_to(active);
        let pm = sub_rule.perturb.layout.num_params();
        let mut carve = Carver(update_ws);
        let (x_sub, blocks, rows) = (
            carve.take(b * active),
            carve.take(count * self.update_block_len(count, room_given)),
            carve.take(count * i),
        );
        restrict_batch(i, x, cols, x_sub)?;
        // The members read only the output layer, which the last `pm` floats of theta hold as
        // the restricted network would.
        let theta_sub = &theta[p - pm..];
        let mut stored = buffers.stored.map(|s| &mut s[..m * pm]);
        let sub_ws_len = sub_rule.member_workspace_len(b);
        // With room for the direction, the first job's members (the leading ones) add their
        // shares `c_k delta_k` to it while their perturbations are at hand, in member order as
        // the update would sum them; the update then adds the other members' shares.
        // What the room holds past the direction keeps the perturbations of the members after
        // the first job's, as many as fit: the update reads those instead of drawing them again.
        let (mut room, spare) = match buffers.direction {
            Some(room) => {
                prefix("direction", room, pm)?;
                let (d, spare) = room.split_at_mut(pm);
                d.fill(0.0);
                (Some(d), spare)
            }
            None => (None, &mut [][..]),
        };
        let per = part_len(m, count);
        let later = m.saturating_sub(per);
        let kept_members = (spare.len() / pm.max(1)).min(later);
        let spare = &mut spare[..kept_members * pm];
        let rooms = core::iter::once(room.as_deref_mut()).chain(core::iter::repeat_with(|| None));
        // The later jobs' shares of the spare room: job t keeps its leading members that fit.
        let spares = core::iter::once(None).chain(optional_chunks(Some(&mut *spare), per * pm));
        let kept = optional_chunks(stored.as_deref_mut(), per * pm)
            .zip(rooms)
            .zip(spares)
            .map(|((store, room), spare)| match (room, store, spare) {
                (Some(direction), _, _) => Kept::Summed {
                    direction,
                    clip: stabiliser.clip,
                },
                (None, Some(s), _) => Kept::Stored(s),
                (None, None, Some(s)) => Kept::Stored(s),
                (None, None, _) => Kept::Nothing,
            });
        let jobs = part_ranges(m, count)
            .zip(coeffs.chunks_mut(per))
            .zip(kept)
            .zip(shares(&mut *member_ws, sub_ws_len));
        workers.each(jobs, |(((members, c), kept), ws)| {
            sub_rule.dense_coefficients(normal, theta_sub, x_sub, &mean, step, members, ws, c, kept)
        })?;
        stabiliser.apply(coeffs)?;
        // The restricted direction sum_k c_k delta_k, by parameter blocks: the room holds the
        // first job's members' shares, or the first member workspace (which starts with room
        // for a perturbation) holds the whole sum.
        let (d_sub, summed) = match room {
            Some(d) => (d, per.min(m)),
            None => {
                let d = &mut member_ws[..pm];
                d.fill(0.0);
                (d, 0)
            }
        };
        if summed < m {
            let stored = match stored.as_deref() {
                Some(data) => Some(KeptPerturbations { first: 0, data }),
                None => Some(KeptPerturbations {
                    first: summed,
                    data: &*spare,
                }),
            };
            let per = sub_rule.perturb.blocks().div_ceil(count).max(1);
            let jobs = d_sub
                .chunks_mut(per * BLOCK)
                .zip(shares(blocks, BLOCK))
                .enumerate();
            workers.each(jobs, |(t, (part, tmp))| {
                sub_rule.add_direction_blocks(normal, part, t * per, coeffs, summed, step, stored, tmp)
            })?;
        }
        let d_sub = &*d_sub;
        let coeffs = &*coeffs;

        // The move: W1 a row at a time (the inactive columns drawn at once), by row ranges,
        // then b1, W2 and b2, which the restricted network shares.
        let (mover, target, velocity) = self.mover(target, theta);
        let h = layout.hidden;
        let noise_std = self.perturb.std[0] * draw_coefficient_norm(&self.perturb, coeffs) as f32;
        let (sub_w1, shared) = d_sub.split_at(h * active);
        let (w1, rest) = target.split_at_mut(h * i);
        let (v1, v_rest) = match velocity {
            Some(v) => {
                let (a, b) = v.split_at_mut(h * i);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let per = part_len(h, count);
        let jobs = w1
            .chunks_mut((per * i).max(1))
            .zip(optional_chunks(v1, per * i))
            .zip(shares(rows, i))
            .enumerate();
        workers.each(jobs, |(t, ((w1_rows, mut v_rows), row))| {
            for (k, w1_row) in w1_rows.chunks_exact_mut(i.max(1)).enumerate() {
                let r = t * per + k;
                expand_w1_rows(&self.perturb, normal, cols, sub_w1, noise_std, step, r, row)?;
                let v = v_rows.as_deref_mut().map(|v| &mut v[k * i..(k + 1) * i]);
                mover.apply_layers(w1_row, row, v, r * i);
            }
            Ok::<(), MlpError>(())
        })?;
        mover.apply_layers(rest, shared, v_rest, h * i);
        Ok(stats)
    }

    /// What the move `target` of a step changes, with the rule that changes it: `theta` and its
    /// velocity under this rule, or the gradient estimate, zeroed, under this rule with h = -1,
    /// normalised per layer and without momentum (so that `theta -= h d` writes `d / (M (c
    /// s_l)^2)` there). O(P) for the estimate, O(1) otherwise.
    fn mover<'t>(
        &self,
        target: Move<'t>,
        theta: &'t mut [f32],
    ) -> (Resampled, &'t mut [f32], Option<&'t mut [f32]>) {
        match target {
            Move::Theta { velocity } => (*self, theta, velocity),
            Move::Estimate { estimate } => {
                estimate.fill(0.0);
                let estimating = Resampled {
                    lr: -1.0,
                    normalize: true,
                    momentum: 0.0,
                    ..*self
                };
                (estimating, estimate, None)
            }
        }
    }

    /// The low-rank member phase cut over `workers` by draw ranges: each worker's draws'
    /// members' coefficients (in `coeffs`, all M) and factors (in `rows`, every draw's), with
    /// one of `workspaces` ([`Resampled::member_workspace_len`] each).
    #[allow(clippy::too_many_arguments)]
    fn low_rank_members<'w, W: Workers>(
        &self,
        workers: &W,
        normal: &Normal,
        theta: &[f32],
        x: &[f32],
        mean: &MeanView<'_>,
        step: u64,
        workspaces: impl Iterator<Item = &'w mut [f32]>,
        coeffs: &mut [f64],
        rows: DrawRows<'_>,
    ) -> Result<(), MlpError> {
        let mut coeffs_left = coeffs;
        let jobs = rows
            .by_parts(self, workers.count())
            .zip(workspaces)
            .map(|((draws, r), ws)| {
                let members = self.members_of(draws.clone()).len();
                let (c, others) = core::mem::take(&mut coeffs_left).split_at_mut(members);
                coeffs_left = others;
                (draws, c, r, ws)
            });
        workers.each(jobs, |(draws, c, r, ws)| {
            self.low_rank_coefficients(normal, theta, x, mean, step, draws, ws, c, r)
        })
    }
}
