//! The ensemble optimizers behind `train --optimizer ienk|eki`: buffers, and the split of their
//! work over threads (members for the forward passes, parameter blocks for the update).

use std::ops::Range;

use ienk::batch::Batch;
use ienk::ensemble::collapse::{
    active_columns, copy_shared_parts, draw_coefficient_norm, expand_w1_rows, restrict,
};
use ienk::ensemble::eki::Eki;
use ienk::ensemble::low_rank_update::{WeightBlock, direction_row_parts, direction_rows};
use ienk::ensemble::perturb::{BLOCK, Perturbations};
use ienk::ensemble::resampled::{MeanView, Resampled, Stabiliser, innovation};
use ienk::loss::BatchStats;
use ienk::mlp::{Layout, MlpError};
use ienk::normal::Normal;
use ienk::optim::Adam;
use ienk::seeds::{Stream, perturbation_seed, rng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::buffers::{product, zeros};
use crate::error::{CliError, Result};
use crate::optimizer::{DenseRows, Optimizer, cannot_resume};
use crate::pool::Pool;
use crate::train::EnsembleSettings;

/// Settings shared by both ensemble optimizers.
#[derive(Clone, Copy, Debug)]
pub struct EnsembleConfig {
    /// Members M.
    pub members: usize,
    /// Scale c of the per-layer Glorot standard deviations.
    pub sigma_scale: f32,
    /// Worker threads.
    pub threads: usize,
    /// Largest batch.
    pub batch: usize,
    /// Run seed.
    pub seed: u64,
}

fn failed(e: MlpError) -> CliError {
    CliError::Failed(format!("ensemble step failed: {e}"))
}

/// `0..n` cut into `parts` contiguous ranges of nearly equal length (empty ones dropped).
fn split(n: usize, parts: usize) -> Vec<Range<usize>> {
    let per = n.div_ceil(parts.max(1)).max(1);
    (0..n).step_by(per).map(|s| s..(s + per).min(n)).collect()
}

/// The low-rank update's buffers: the workspace of `Resampled::low_rank_update` (where the member
/// phase leaves every draw's factors) and, per thread, transpose and GEMM scratch (all empty at
/// full rank).
struct LowRankBuffers {
    workspace: Vec<f32>,
    tmp: Vec<Vec<f32>>,
    scratch: Vec<Vec<f32>>,
}

impl LowRankBuffers {
    /// Buffers for `rule` (nothing at full rank) and `threads` threads.
    fn new(rule: &Resampled, threads: usize) -> Result<Self> {
        if rule.perturb.rank == 0 {
            return Ok(LowRankBuffers {
                workspace: Vec::new(),
                tmp: Vec::new(),
                scratch: Vec::new(),
            });
        }
        let whole_blocks = rule.whole_direction_scratch_len();
        Ok(LowRankBuffers {
            workspace: zeros("the low-rank update", rule.low_rank_update_len())?,
            tmp: (0..threads)
                .map(|_| zeros("the update's transpose scratch", rule.transpose_scratch_len()))
                .collect::<Result<_>>()?,
            scratch: (0..threads)
                .map(|_| zeros("the update's GEMM scratch", whole_blocks))
                .collect::<Result<_>>()?,
        })
    }

    /// The direction `sum_k c_k delta_k` of `coeffs`, from the draws' factors the member phase
    /// left in the workspace, by the phases of `ienk::ensemble::low_rank_update` spread over
    /// `pool`: the draws' rows by draw ranges, the biases on this thread, the weight blocks by
    /// row ranges. The same numbers as `Resampled::low_rank_update` on one thread, bit for bit.
    fn direction(&mut self, pool: &Pool, rule: &Resampled, coeffs: &[f64]) -> Result<&[f32]> {
        let layout = rule.perturb.layout;
        let ws = rule.update_workspace(&mut self.workspace).map_err(failed)?;
        let mut rows = ws.rows;
        let mut jobs = Vec::new();
        let mut rest = rows.reborrow();
        for (draws, tmp) in split(rule.draws(), pool.threads()).into_iter().zip(&mut self.tmp) {
            let (mine, others) = rest.split_draws(rule, draws.len());
            rest = others;
            jobs.push((draws, tmp, mine));
        }
        pool.each(jobs, |(draws, tmp, mine)| {
            rule.scale_draw_rows(coeffs, draws, tmp, mine).map_err(failed)
        })?;
        let d = layout.split_mut(ws.direction).map_err(failed)?;
        rule.low_rank_bias_direction(rows.db1, rows.db2, d.b1, d.b2)
            .map_err(failed)?;
        for (block, total, a_t, b, out) in [
            (WeightBlock::W1, layout.hidden, &*rows.a1, &*rows.b1, d.w1),
            (WeightBlock::W2, layout.outputs, &*rows.a2, &*rows.b2, d.w2),
        ] {
            let parts = direction_row_parts(total, pool.threads());
            let cols = out.len() / total.max(1);
            let mut jobs = Vec::new();
            let mut rest = &mut *out;
            for (part, scratch) in (0..parts).zip(&mut self.scratch) {
                let range = direction_rows(total, parts, part);
                let (mine, others) = rest.split_at_mut(range.len() * cols);
                rest = others;
                jobs.push((range, mine, scratch));
            }
            pool.each(jobs, |(range, mine, scratch)| {
                rule.low_rank_direction_rows(block, a_t, b, range, mine, scratch)
                    .map_err(failed)
            })?;
        }
        Ok(ws.direction)
    }
}

/// The resampled IEnK (thesis's scheme).
pub struct IenkOptimizer {
    rule: Resampled,
    dense: DenseRows,
    normal: Normal,
    pool: Pool,
    step: u64,
    pre: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    probs: Vec<f32>,
    innovation: Vec<f32>,
    scratch: Vec<f32>,
    workspaces: Vec<Vec<f32>>,
    coeffs: Vec<f64>,
    stored: Option<Vec<f32>>,
    blocks: Vec<Vec<f32>>,
    /// Full rank: the batch's active input columns, the restricted parameters, batch and
    /// direction, and the full direction.
    cols: Vec<u32>,
    theta_sub: Vec<f32>,
    x_sub: Vec<f32>,
    d_sub: Vec<f32>,
    direction: Vec<f32>,
    low_rank: LowRankBuffers,
    velocity: Option<Vec<f32>>,
    adam: Option<AdamState>,
    stabiliser: Stabiliser,
}

/// Adam on the ensemble's gradient estimate (`--update adam`).
struct AdamState {
    rule: Adam,
    step: u32,
    m: Vec<f32>,
    v: Vec<f32>,
    /// The gradient estimate of the current step.
    estimate: Vec<f32>,
}

impl AdamState {
    fn new(lr: f32, p: usize) -> Result<Self> {
        Ok(AdamState {
            rule: Adam::new(lr),
            step: 0,
            m: zeros("Adam's first moments", p)?,
            v: zeros("Adam's second moments", p)?,
            estimate: zeros("the gradient estimate", p)?,
        })
    }
}

impl IenkOptimizer {
    /// Buffers for `cfg` and the `ienk` settings of `e` (rank 0 is full rank; `e.store` keeps the
    /// M perturbations, M P floats, between the forward passes and the update instead of
    /// regenerating them), with step size `lr`. An error when the machine cannot hold them.
    pub fn new(layout: Layout, cfg: EnsembleConfig, e: &EnsembleSettings, lr: f32) -> Result<Self> {
        let (form, rank, antithetic, momentum, store) = (e.form, e.rank, e.antithetic, e.momentum, e.store);
        let [s1, s2] = layout.glorot_std();
        let perturb = Perturbations {
            layout,
            std: [cfg.sigma_scale * s1, cfg.sigma_scale * s2],
            rank,
            antithetic,
            seed: perturbation_seed(cfg.seed),
        };
        let rule = Resampled {
            perturb,
            members: cfg.members,
            form,
            lr,
            momentum,
            normalize: e.normalize,
        };
        let threads = cfg.threads.clamp(1, cfg.members.max(1));
        let (b, h, o, p) = (cfg.batch, layout.hidden, layout.outputs, layout.num_params());
        let bh = product("the hidden layer", &[b, h])?;
        let bo = product("the logits", &[b, o])?;
        let full_rank = |what: &str, len: usize| {
            if rank == 0 {
                zeros(what, len)
            } else {
                Ok(Vec::new())
            }
        };
        Ok(IenkOptimizer {
            dense: DenseRows::new(b)?,
            normal: Normal::new(),
            pool: Pool::new(threads)?,
            step: 0,
            pre: zeros("the pre-activations", bh)?,
            hidden: zeros("the hidden layer", bh)?,
            logits: zeros("the logits", bo)?,
            probs: zeros("the probabilities", bo)?,
            innovation: zeros("the innovations", bo)?,
            scratch: zeros("the GEMM scratch", layout.gemm_scratch_len(b))?,
            workspaces: (0..threads)
                .map(|_| zeros("a member workspace", rule.member_workspace_len(b)))
                .collect::<Result<_>>()?,
            coeffs: zeros("the coefficients", cfg.members)?,
            stored: (store && rank == 0)
                .then(|| {
                    zeros(
                        "the stored perturbations",
                        product("the stored perturbations", &[cfg.members, p])?,
                    )
                })
                .transpose()?,
            blocks: (0..threads)
                .map(|_| zeros("a perturbation block", BLOCK))
                .collect::<Result<_>>()?,
            cols: zeros("the active columns", layout.inputs)?,
            theta_sub: full_rank("the restricted parameters", p)?,
            x_sub: full_rank(
                "the restricted batch",
                product("the restricted batch", &[b, layout.inputs])?,
            )?,
            d_sub: full_rank("the restricted direction", p)?,
            direction: full_rank("the direction", p)?,
            low_rank: LowRankBuffers::new(&rule, threads)?,
            velocity: (momentum != 0.0).then(|| zeros("the velocity", p)).transpose()?,
            adam: e.adam.then(|| AdamState::new(lr, p)).transpose()?,
            stabiliser: Stabiliser {
                center: e.center,
                clip: e.clip.map(f64::from),
            },
            rule,
        })
    }
}

impl Optimizer for IenkOptimizer {
    fn step(&mut self, theta: &mut [f32], batch: &Batch<'_>) -> Result<BatchStats> {
        let (x, y) = self.dense.load(batch)?;
        let layout = self.rule.perturb.layout;
        let b = y.len();
        let (h, o) = (layout.hidden, layout.outputs);
        let (pre, hidden, logits) = (
            &mut self.pre[..b * h],
            &mut self.hidden[..b * h],
            &mut self.logits[..b * o],
        );
        layout
            .forward_keep_pre(theta, x, pre, hidden, logits, &mut self.scratch)
            .map_err(failed)?;
        let (probs, g) = (&mut self.probs[..b * o], &mut self.innovation[..b * o]);
        let stats = innovation(self.rule.form, logits, o, y, probs, g).map_err(failed)?;
        let mean = MeanView {
            pre,
            logits,
            probs,
            innovation: g,
        };
        let (rule, normal, step) = (&self.rule, &self.normal, self.step);

        // Full rank: the members perturb only the input columns this batch uses, the rest of
        // the direction is drawn at once (the same update in distribution; see
        // ienk::ensemble::collapse).
        let full_rank = rule.perturb.rank == 0;
        let active = if full_rank {
            active_columns(x, layout.inputs, &mut self.cols).map_err(failed)?
        } else {
            layout.inputs
        };
        let cols = &self.cols[..active];
        let sub = Layout {
            inputs: active,
            ..layout
        };
        let sub_rule = Resampled {
            perturb: Perturbations {
                layout: sub,
                ..rule.perturb
            },
            ..*rule
        };
        let (member_rule, th, xm) = if full_rank {
            let (ts, xs) = (
                &mut self.theta_sub[..sub.num_params()],
                &mut self.x_sub[..b * active],
            );
            restrict(&layout, theta, x, cols, ts, xs).map_err(failed)?;
            (&sub_rule, &*ts, &*xs)
        } else {
            (rule, &*theta, x)
        };
        let pm = member_rule.perturb.layout.num_params();

        // Member phase: contiguous member ranges per thread; with low rank, the members of
        // contiguous draw ranges, each draw's factors left in the update's rows.
        let pool = &self.pool;
        let ws_len = member_rule.member_workspace_len(b);
        if full_rank {
            let mut jobs = Vec::new();
            let mut rest = self.coeffs.as_mut_slice();
            let mut stored_rest = self.stored.as_deref_mut().map(|s| &mut s[..rule.members * pm]);
            for (r, ws) in split(rule.members, pool.threads())
                .into_iter()
                .zip(&mut self.workspaces)
            {
                let (c, tail) = rest.split_at_mut(r.len());
                rest = tail;
                let s = stored_rest.take().map(|s| {
                    let (head, tail) = s.split_at_mut(r.len() * pm);
                    stored_rest = Some(tail);
                    head
                });
                jobs.push((r, c, s, ws));
            }
            pool.each(jobs, |(members, coeffs, store, ws)| {
                let ws = &mut ws[..ws_len];
                member_rule
                    .dense_coefficients(normal, th, xm, &mean, step, members, ws, coeffs, store)
                    .map_err(failed)
            })?;
        } else {
            let update = rule
                .update_workspace(&mut self.low_rank.workspace)
                .map_err(failed)?;
            let mut rows = update.rows;
            let mut jobs = Vec::new();
            let mut rest = self.coeffs.as_mut_slice();
            for (draws, ws) in split(rule.draws(), pool.threads())
                .into_iter()
                .zip(&mut self.workspaces)
            {
                let (c, tail) = rest.split_at_mut(rule.members_of(draws.clone()).len());
                rest = tail;
                let (mine, others) = rows.split_draws(rule, draws.len());
                rows = others;
                jobs.push((draws, c, mine, ws));
            }
            pool.each(jobs, |(draws, coeffs, rows, ws)| {
                let ws = &mut ws[..ws_len];
                rule.low_rank_coefficients(normal, th, xm, &mean, step, draws, ws, coeffs, rows)
                    .map_err(failed)
            })?;
        }
        if let Err(e) = self.stabiliser.apply(&mut self.coeffs) {
            return Err(CliError::Failed(format!(
                "training diverged at step {}: {e}",
                self.step + 1
            )));
        }

        // Update phase: theta -= h d directly, or, with Adam, the gradient estimate
        // d / (M (c s_l)^2) is written into a zero vector by the same update with h = -1.
        let coeffs = &self.coeffs;
        let estimating = Resampled {
            lr: -1.0,
            normalize: true,
            momentum: 0.0,
            ..*rule
        };
        let (target_rule, target, velocity) = match self.adam.as_mut() {
            Some(a) => {
                a.estimate.fill(0.0);
                (&estimating, &mut a.estimate[..], None)
            }
            None => (rule, &mut *theta, self.velocity.as_deref_mut()),
        };
        if full_rank {
            // The restricted direction sum_k c_k delta_k, by parameter blocks over the threads,
            // then the full one.
            let d_sub = &mut self.d_sub[..pm];
            let stored = self.stored.as_deref().map(|s| &s[..rule.members * pm]);
            let per_thread = sub_rule.perturb.blocks().div_ceil(self.blocks.len()).max(1);
            let span = per_thread * BLOCK;
            let jobs: Vec<_> = d_sub
                .chunks_mut(span)
                .zip(self.blocks.iter_mut())
                .enumerate()
                .collect();
            pool.each(jobs, |(t, (part, tmp))| {
                sub_rule
                    .direction_blocks(normal, part, t * per_thread, coeffs, step, stored, tmp)
                    .map_err(failed)
            })?;
            let noise_std = rule.perturb.std[0] * draw_coefficient_norm(&rule.perturb, coeffs) as f32;
            // b1, W2 and b2 are copied; W1's rows are split over the threads.
            copy_shared_parts(&rule.perturb, active, d_sub, &mut self.direction).map_err(failed)?;
            let (i, rows_per) = (layout.inputs, h.div_ceil(pool.threads()).max(1));
            let w1 = &mut self.direction[..h * i];
            let sub_w1 = &d_sub[..h * active];
            let jobs: Vec<_> = w1.chunks_mut(rows_per * i).enumerate().collect();
            pool.each(jobs, |(t, rows)| {
                expand_w1_rows(
                    &rule.perturb,
                    normal,
                    cols,
                    sub_w1,
                    noise_std,
                    step,
                    t * rows_per,
                    rows,
                )
                .map_err(failed)
            })?;
            target_rule
                .apply_direction(target, &self.direction, velocity)
                .map_err(failed)?;
        } else {
            let d = self.low_rank.direction(pool, target_rule, coeffs)?;
            target_rule.apply_direction(target, d, velocity).map_err(failed)?;
        }
        if let Some(a) = self.adam.as_mut() {
            a.step += 1;
            a.rule.step(a.step, theta, &a.estimate, &mut a.m, &mut a.v);
        }
        self.step += 1;
        Ok(stats)
    }

    fn set_lr(&mut self, lr: f32) {
        self.rule.lr = lr;
        if let Some(a) = self.adam.as_mut() {
            a.rule.lr = lr;
        }
    }

    /// The perturbations of step t depend on t alone: the plain update resumes exactly.
    fn resume_at(&mut self, steps: u64) -> Result<()> {
        if self.velocity.is_some() {
            return Err(cannot_resume("ienk with --momentum", "a velocity"));
        }
        if self.adam.is_some() {
            return Err(cannot_resume(
                "ienk with --update adam",
                "Adam's moment estimates",
            ));
        }
        self.step = steps;
        Ok(())
    }
}

/// Kovachki & Stuart's EKI, with EKI(R) randomisation.
pub struct EkiOptimizer {
    eki: Eki,
    dense: DenseRows,
    normal: Normal,
    rng: Xoshiro256PlusPlus,
    pool: Pool,
    randomize_every: u64,
    step: u64,
    /// The members, `M x P`; drawn around theta at the first step.
    ensemble: Vec<f32>,
    logits: Vec<f32>,
    forward: Vec<Vec<f32>>,
    work: Vec<f32>,
    work64: Vec<f64>,
}

/// Members per stacked product in EKI's forward passes.
const EKI_CHUNK: usize = 8;

impl EkiOptimizer {
    /// Buffers for `cfg`: `h0` and `eps` of the adaptive step, inflation alpha, and
    /// randomisation around the mean every `randomize_every` steps (0 = never).
    pub fn new(
        layout: Layout,
        cfg: EnsembleConfig,
        h0: f32,
        eps: f32,
        inflation: f32,
        randomize_every: u64,
    ) -> Result<Self> {
        let [s1, s2] = layout.glorot_std();
        let eki = Eki {
            layout,
            members: cfg.members,
            h0,
            eps,
            inflation,
            std: [cfg.sigma_scale * s1, cfg.sigma_scale * s2],
        };
        let threads = cfg.threads.clamp(1, cfg.members.max(1));
        let (w32, w64) = eki.update_workspace_len(cfg.batch);
        Ok(EkiOptimizer {
            dense: DenseRows::new(cfg.batch)?,
            normal: Normal::new(),
            rng: rng(cfg.seed, Stream::Perturb),
            pool: Pool::new(threads)?,
            randomize_every,
            step: 0,
            ensemble: zeros("the ensemble", eki.ensemble_len())?,
            logits: zeros(
                "the members' logits",
                product("the members' logits", &[cfg.members, cfg.batch, layout.outputs])?,
            )?,
            forward: (0..threads)
                .map(|_| {
                    zeros(
                        "a forward workspace",
                        eki.forward_workspace_len(cfg.batch, EKI_CHUNK),
                    )
                })
                .collect::<Result<_>>()?,
            work: zeros("the update workspace", w32)?,
            work64: zeros("the update workspace", w64)?,
            eki,
        })
    }
}

impl Optimizer for EkiOptimizer {
    fn step(&mut self, theta: &mut [f32], batch: &Batch<'_>) -> Result<BatchStats> {
        let (x, y) = self.dense.load(batch)?;
        let eki = &self.eki;
        if self.step == 0 {
            // u_j = theta_0 + xi_j.
            eki.scatter(&self.normal, &mut self.rng, theta, &mut self.ensemble);
        }
        let b = y.len();
        let bo = b * eki.layout.outputs;
        let (w32, w64) = eki.update_workspace_len(b);
        let ranges = split(eki.members, self.pool.threads());
        let ens = &self.ensemble;
        let mut parts = Vec::new();
        let mut rest = &mut self.logits[..eki.members * bo];
        for r in ranges {
            let (head, tail) = rest.split_at_mut(r.len() * bo);
            rest = tail;
            parts.push((r, head));
        }
        let jobs: Vec<_> = parts.into_iter().zip(self.forward.iter_mut()).collect();
        self.pool.each(jobs, |((members, out), ws)| {
            let need = eki.forward_workspace_len(b, EKI_CHUNK);
            eki.member_logits(ens, x, members, EKI_CHUNK, &mut ws[..need], out)
                .map_err(failed)
        })?;
        let step = eki
            .update(
                &mut self.ensemble,
                &self.logits[..eki.members * bo],
                y,
                &mut self.work[..w32],
                &mut self.work64[..w64],
            )
            .map_err(failed)?;
        if !step.h.is_finite() || !step.d_norm.is_finite() {
            return Err(CliError::Failed(format!(
                "training diverged at step {}: ||D|| = {}",
                self.step + 1,
                step.d_norm
            )));
        }
        self.step += 1;
        eki.mean(&self.ensemble, theta);
        if self.randomize_every > 0 && self.step.is_multiple_of(self.randomize_every) {
            eki.scatter(&self.normal, &mut self.rng, theta, &mut self.ensemble);
        }
        Ok(step.stats)
    }

    fn set_lr(&mut self, lr: f32) {
        self.eki.h0 = lr;
    }

    fn resume_at(&mut self, _steps: u64) -> Result<()> {
        Err(cannot_resume("eki", "its ensemble"))
    }
}
