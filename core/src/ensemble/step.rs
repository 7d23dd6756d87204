//! One whole resampled IEnK step on one thread, in caller buffers: what firmware calls to train.
//!
//! [`Resampled::step`] runs the phases `ienk-cli train --optimizer ienk` spreads over threads
//! (the mean's forward pass and innovation, the members' coefficients, [`Stabiliser`], the
//! update) one after the other, with the same numbers bit for bit: every phase gives the same
//! results however it is cut. Full rank, the members perturb only the input columns the batch
//! uses and the rest of the direction is drawn at once ([`super::collapse`]); the perturbations
//! are regenerated from their seeds in the update, never stored. The workspace is therefore
//! O(P + B (inputs + H)) floats plus GEMM scratch, whatever the number of members: for the
//! thesis's network (P = 101,770) 312,372 floats (1.2 MB) at batch 1, 474,872 at batch 32.

use core::fmt;

use super::collapse::{active_columns, draw_coefficient_norm, expand_w1_rows, restrict};
use super::perturb::{BLOCK, Perturbations};
use super::resampled::{Carver, MeanView, NonFiniteCoefficient, Resampled, Stabiliser, innovation};
use crate::loss::BatchStats;
use crate::mlp::{Layout, MlpError, check_len};

use crate::normal::Normal;

/// Why [`Resampled::step`] stopped. Either way theta was not changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepError {
    /// A buffer of the wrong length, or a label past the outputs.
    Mlp(MlpError),
    /// A member's coefficient is NaN or infinite: the step diverged.
    Diverged(NonFiniteCoefficient),
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Mlp(e) => write!(f, "{e}"),
            StepError::Diverged(e) => write!(f, "the step diverged: {e}"),
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

/// The caller's buffers of [`Resampled::step`]; their contents between steps do not matter.
#[derive(Debug)]
pub struct StepBuffers<'a> {
    /// At least [`Resampled::step_workspace_len`] floats for the batch size.
    pub work: &'a mut [f32],
    /// At least `layout.inputs` entries (the batch's active input columns; unused with low rank).
    pub columns: &'a mut [u32],
    /// Exactly M entries: the members' coefficients, left there after the step.
    pub coefficients: &'a mut [f64],
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
    /// Lengths of the parts of the step workspace for `batch` rows: the mean's pre-activation,
    /// hidden layer, logits, probabilities and innovation, its GEMM scratch, the member phase's
    /// workspace, and the update's.
    fn step_parts(&self, batch: usize) -> [usize; 8] {
        let l = &self.perturb.layout;
        let (bh, bo) = (batch * l.hidden, batch * l.outputs);
        let update = if self.perturb.rank == 0 {
            // The restricted parameters, batch and direction, a perturbation block, a W1 row.
            2 * l.num_params() + batch * l.inputs + BLOCK + l.inputs
        } else {
            self.low_rank_update_len()
        };
        [
            bh,
            bh,
            bo,
            bo,
            bo,
            l.gemm_scratch_len(batch),
            self.member_workspace_len(batch),
            update,
        ]
    }

    /// Floats of [`StepBuffers::work`] a step on up to `batch` rows needs. O(1).
    pub fn step_workspace_len(&self, batch: usize) -> usize {
        self.step_parts(batch).iter().sum()
    }

    /// One update of `theta` on the batch `x` (`B x inputs`, pixels in [0, 1]) with labels `y`:
    /// the coefficients of the M members of step number `step` (which, with the rule's seed,
    /// fixes their perturbations), `stabiliser` applied to them, then `theta -= h sum_k c_k
    /// delta_k` (through `velocity`, length P, which momentum needs). Returns the batch's loss
    /// and accuracy under theta before the move. Costs what the threaded trainer's step costs
    /// in all: full rank, `M (H a + P_2)` normal draws for the members' perturbations (`a` the
    /// active inputs), twice (forward and update), `H inputs` for the rest of the direction,
    /// and `2 B M (H a + 2 H outputs)` flops; low rank, `D factor_len` normal draws (D draws:
    /// M, or ceil(M / 2) with antithetic pairs), once, the member phase's flops
    /// ([`Resampled::low_rank_coefficients`]) and the update's `2 D r P`.
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
        let layout = self.perturb.layout;
        let (i, h, o, p) = (layout.inputs, layout.hidden, layout.outputs, layout.num_params());
        let b = y.len();
        check_len("parameter vector", theta.len(), p)?;
        match velocity.as_deref() {
            Some(v) => check_len("velocity", v.len(), p)?,
            None if self.momentum != 0.0 => check_len("velocity", 0, p)?,
            None => {}
        }
        let parts = self.step_parts(b);
        let mut carve = Carver(prefix("step workspace", buffers.work, parts.iter().sum())?);
        let (pre, hidden, logits) = (carve.take(parts[0]), carve.take(parts[1]), carve.take(parts[2]));
        let (probs, g, scratch) = (carve.take(parts[3]), carve.take(parts[4]), carve.take(parts[5]));
        let (member_ws, update_ws) = (carve.take(parts[6]), carve.take(parts[7]));
        layout.forward_keep_pre(theta, x, pre, hidden, logits, scratch)?;
        let stats = innovation(self.form, logits, o, y, probs, g)?;
        let mean = MeanView {
            pre,
            logits,
            probs,
            innovation: g,
        };
        let coeffs = buffers.coefficients;
        if self.perturb.rank != 0 {
            let mut update = self.update_workspace(update_ws)?;
            let (draws, rows) = (0..self.draws(), update.rows.reborrow());
            self.low_rank_coefficients(normal, theta, x, &mean, step, draws, member_ws, coeffs, rows)?;
            stabiliser.apply(coeffs)?;
            self.low_rank_update(theta, velocity, coeffs, update)?;
            return Ok(stats);
        }
        let all = 0..self.members;

        // Full rank: the members of the network restricted to the active inputs.
        let active = active_columns(x, i, buffers.columns)?;
        let cols = &buffers.columns[..active];
        let sub_rule = Resampled {
            perturb: Perturbations {
                layout: Layout {
                    inputs: active,
                    ..layout
                },
                ..self.perturb
            },
            ..*self
        };
        let pm = sub_rule.perturb.layout.num_params();
        let mut carve = Carver(update_ws);
        let (theta_sub, x_sub, d_sub) = (carve.take(p), carve.take(b * i), carve.take(p));
        let (block, row) = (carve.take(BLOCK), carve.take(i));
        let (theta_sub, x_sub, d_sub) = (&mut theta_sub[..pm], &mut x_sub[..b * active], &mut d_sub[..pm]);
        restrict(&layout, theta, x, cols, theta_sub, x_sub)?;
        let ws = prefix("member workspace", member_ws, sub_rule.member_workspace_len(b))?;
        sub_rule.dense_coefficients(normal, theta_sub, x_sub, &mean, step, all, ws, coeffs, None)?;
        stabiliser.apply(coeffs)?;

        // The restricted direction sum_k c_k delta_k.
        sub_rule.direction_blocks(normal, d_sub, 0, coeffs, step, None, block)?;

        // theta -= h d: W1 a row at a time (the inactive columns drawn at once), then b1, W2 and
        // b2, which the restricted network shares.
        let noise_std = self.perturb.std[0] * draw_coefficient_norm(&self.perturb, coeffs) as f32;
        let (sub_w1, shared) = d_sub.split_at(h * active);
        let (w1, rest) = theta.split_at_mut(h * i);
        let (mut v1, v_rest) = match velocity {
            Some(v) => {
                let (a, b) = v.split_at_mut(h * i);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        for (r, w1_row) in w1.chunks_exact_mut(i.max(1)).enumerate() {
            expand_w1_rows(&self.perturb, normal, cols, sub_w1, noise_std, step, r, row)?;
            let v = v1.as_deref_mut().map(|v| &mut v[r * i..(r + 1) * i]);
            self.apply_layers(w1_row, row, v, r * i);
        }
        self.apply_layers(rest, shared, v_rest, h * i);
        Ok(stats)
    }
}
