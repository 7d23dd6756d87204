//! The ensemble optimizers behind `train --optimizer ienk|eki`: their buffers, and their steps
//! on the trainer's thread pool (IEnK's is the core's `Resampled::step_on`; EKI splits its
//! members' forward passes over the threads).

use ienk::batch::Batch;
use ienk::ensemble::eki::Eki;
use ienk::ensemble::low_rank_update::SUM_DRAWS_MAX;
use ienk::ensemble::perturb::Perturbations;
use ienk::ensemble::resampled::{Resampled, Stabiliser};
use ienk::ensemble::step::{Move, StepBuffers, StepError};
use ienk::loss::BatchStats;
use ienk::mlp::{Layout, MlpError};
use ienk::normal::Normal;
use ienk::optim::Adam;
use ienk::seeds::{Stream, perturbation_seed, rng};
use ienk::workers::part_ranges;
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

/// The resampled IEnK (thesis's scheme): `Resampled::step_on` on the trainer's thread pool.
pub struct IenkOptimizer {
    rule: Resampled,
    dense: DenseRows,
    normal: Normal,
    pool: Pool,
    step: u64,
    /// The step's workspace for the pool's threads.
    work: Vec<f32>,
    /// The batch's active input columns (full rank).
    cols: Vec<u32>,
    coeffs: Vec<f64>,
    /// The M perturbations of a step, with `--store-perturbations`.
    stored: Option<Vec<f32>>,
    /// Room for the direction, which the first thread's members then sum as they go (full
    /// rank, coefficients not centred, perturbations not stored), and on several threads one
    /// network more, where the later threads' members keep as many of their perturbations as
    /// fit for the update (typically the other five of ten members on an MNIST image): the same
    /// numbers, fewer draws (half of them on one thread), O(P) memory.
    direction: Option<Vec<f32>>,
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
        let p = layout.num_params();
        // The workspace's parts are each below the address space when the buffers the flags
        // size are (checked first), but their sum may not be.
        product("the hidden layer", &[cfg.batch, layout.hidden])?;
        product("the restricted batch", &[cfg.batch, layout.inputs])?;
        let stabiliser = Stabiliser {
            center: e.center,
            clip: e.clip.map(f64::from),
        };
        let store = store && rank == 0;
        // What train_flags refuses on the command line, for callers of the library too.
        if e.low_memory && (rank == 0 || threads > 1) {
            return Err(CliError::BadInput(format!(
                "--low-memory sums a low-rank direction on one thread: got --rank {rank} and \
                 {threads} threads"
            )));
        }
        // Full rank: room for the direction wherever the step can take it, beside which one
        // thread's workspace is smaller. Low rank: with --low-memory (one thread), where each
        // draw's share is summed into it as it comes.
        let room = match rank {
            0 => rule.direction_room_refusal(stabiliser, store, threads).is_none(),
            _ => e.low_memory,
        };
        let room_len =
            rule.step_direction_len_for(layout.inputs) * if threads > 1 && rank == 0 { 2 } else { 1 };
        let work_len = match (room, rank) {
            // Low rank summing into the room: as many draws at a time as it takes (the same
            // bits as one at a time, fewer passes over the direction).
            (true, 1..) => rule.summing_workspace_len(cfg.batch, SUM_DRAWS_MAX),
            (true, 0) => rule.step_workspace_len_with_room_for(cfg.batch, layout.inputs, threads),
            (false, _) => rule.step_workspace_len(cfg.batch, threads),
        };
        Ok(IenkOptimizer {
            dense: DenseRows::new(cfg.batch)?,
            normal: Normal::new(),
            pool: Pool::new(threads)?,
            step: 0,
            work: zeros("the step workspace", work_len)?,
            cols: zeros("the active columns", layout.inputs)?,
            coeffs: zeros("the coefficients", cfg.members)?,
            stored: store
                .then(|| {
                    zeros(
                        "the stored perturbations",
                        product("the stored perturbations", &[cfg.members, p])?,
                    )
                })
                .transpose()?,
            direction: room.then(|| zeros("the direction", room_len)).transpose()?,
            velocity: (momentum != 0.0).then(|| zeros("the velocity", p)).transpose()?,
            adam: e.adam.then(|| AdamState::new(lr, p)).transpose()?,
            stabiliser,
            rule,
        })
    }
}

impl Optimizer for IenkOptimizer {
    /// One step on the pool; with `--update adam` the step writes the gradient estimate and
    /// Adam moves theta.
    fn step(&mut self, theta: &mut [f32], batch: &Batch<'_>) -> Result<BatchStats> {
        let (x, y) = self.dense.load(batch)?;
        let target = match self.adam.as_mut() {
            Some(a) => Move::Estimate {
                estimate: &mut a.estimate,
            },
            None => Move::Theta {
                velocity: self.velocity.as_deref_mut(),
            },
        };
        let buffers = StepBuffers {
            work: &mut self.work,
            columns: &mut self.cols,
            coefficients: &mut self.coeffs,
            stored: self.stored.as_deref_mut(),
            direction: self.direction.as_deref_mut(),
        };
        let (normal, stabiliser) = (&self.normal, self.stabiliser);
        let stats = self
            .rule
            .step_on(
                &self.pool, normal, stabiliser, theta, target, x, y, self.step, buffers,
            )
            .map_err(|e| match e {
                StepError::Diverged(e) => {
                    CliError::Failed(format!("training diverged at step {}: {e}", self.step + 1))
                }
                StepError::Mlp(e) => failed(e),
                StepError::NoDirectionRoom(why) => {
                    CliError::Failed(format!("internal error: room for the direction given, but {why}"))
                }
            })?;
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
    /// Whether the next step first draws the members around theta: at the start of a run, and
    /// of a resumed one (the uninterrupted run redrew them around the same mean there).
    scatter_first: bool,
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
        let (w32, w64) = eki.update_workspace_len(cfg.batch, threads);
        Ok(EkiOptimizer {
            dense: DenseRows::new(cfg.batch)?,
            normal: Normal::new(),
            rng: rng(cfg.seed, Stream::Perturb),
            pool: Pool::new(threads)?,
            randomize_every,
            step: 0,
            scatter_first: true,
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
        if self.scatter_first {
            // u_j = theta + xi_j: theta_0, or the mean a resumed run was saved with.
            eki.scatter(&self.normal, &mut self.rng, theta, &mut self.ensemble);
            self.scatter_first = false;
        }
        let b = y.len();
        let bo = b * eki.layout.outputs;
        let (w32, w64) = eki.update_workspace_len(b, self.pool.threads());
        let ranges = part_ranges(eki.members, self.pool.threads());
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
                &self.pool,
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
        eki.mean(&self.pool, &self.ensemble, theta);
        if self.randomize_every > 0 && self.step.is_multiple_of(self.randomize_every) {
            eki.scatter(&self.normal, &mut self.rng, theta, &mut self.ensemble);
        }
        Ok(step.stats)
    }

    fn set_lr(&mut self, lr: f32) {
        self.eki.h0 = lr;
    }

    /// After a step at which EKI(R) redrew the members around their mean, the ensemble is that
    /// mean (the saved model) plus the next draws of the perturbation stream: the run resumes
    /// exactly, once the draws of the `steps / R` earlier scatters are replayed (`M P` normal
    /// draws each). Anywhere else the ensemble is state the model file does not hold.
    fn resume_at(&mut self, steps: u64) -> Result<()> {
        let r = self.randomize_every;
        if steps > 0 && (r == 0 || !steps.is_multiple_of(r)) {
            let redrawn = match r {
                0 => "never redraws them (--randomize-every 0)".to_string(),
                _ => format!(
                    "redraws them every {r} steps (--randomize-every) and stopped after step \
                     {steps}"
                ),
            };
            return Err(CliError::BadInput(format!(
                "--resume: eki keeps its ensemble between steps, which the model file does not \
                 hold; a run continues only from a step at which the members were redrawn \
                 around their mean, and this one {redrawn}; train it again from the start"
            )));
        }
        let center = zeros("the replayed scatters' centre", self.eki.layout.num_params())?;
        for _ in 0..steps.checked_div(r).unwrap_or(0) {
            self.eki
                .scatter(&self.normal, &mut self.rng, &center, &mut self.ensemble);
        }
        self.step = steps;
        Ok(())
    }
}
