//! Back-propagated gradients of a batch, with the batch's rows spread over threads.
//!
//! Layer 1's weights are kept transposed (`W1^T`, `inputs x hidden`) by the caller, which is the
//! layout the input layer's products want: each batch is split by columns ([`SplitRows`]), the
//! often non-zero inputs taking a GEMM against their rows of `W1^T`, the others the sparse
//! products, where each non-zero adds one row of `W1^T` to the forward pass and one row of
//! `dW1^T` in the backward pass; the optimizer updates `W1^T` in place, so no step transposes
//! anything. Without sparse inputs, the dense GEMM passes run on a copy of theta with W1
//! written back.
//!
//! Each worker runs forward and backward on its share of the rows, with its loss gradient scaled
//! so that the sum of the workers' gradients is the gradient of the mean batch loss; the partial
//! gradients are then added in worker order (deterministic for a given thread count).

use ienk::batch::Batch;
use ienk::loss::{BatchStats, cross_entropy_grad};
use ienk::mlp::{Layout, MlpError, PIXEL_SCALE};
use ienk::sparse::{SplitBuffers, SplitRows, transpose};

use crate::buffers::{product, zeros};
use crate::error::{CliError, Result};
use crate::pool::Pool;

/// Fewer rows than this per thread cost more than they save: each worker's gradient (P floats)
/// is added to the first one's after every step (a batch of 32 ran slower on two threads than
/// on one, even with the persistent pool).
pub const MIN_ROWS_PER_THREAD: usize = 64;

/// The split of a worker's rows ([`ienk::sparse::SplitRows`]): an input goes dense when it is
/// non-zero in more than `DENSE_SHARE n + DENSE_EXTRA_ROWS` of the `n` rows. The share is the
/// cost of a dense entry against a sparse non-zero (0.2 ran Adam at batch 500 fastest of 0.1 to
/// 0.45 here); the extra rows pay for gathering the input's row of `W1^T` and scattering its
/// row of `dW1^T` at every step, which a batch of 32 did not repay (with them, an MNIST pixel
/// goes dense in about one batch of 32 in 200; about 260 of 784 do at batch 500).
const DENSE_SHARE: f32 = 0.2;
/// See [`DENSE_SHARE`].
const DENSE_EXTRA_ROWS: f32 = 24.0;

fn fail(e: MlpError) -> CliError {
    CliError::Failed(format!("gradient computation failed: {e}"))
}

fn share_overflow() -> CliError {
    CliError::Failed("internal error: a batch share exceeds its worker's buffers".into())
}

/// The buffers of one worker, sized for at most `rows` examples.
struct Worker {
    /// The share of the batch as dense rows (the dense passes), or the dense part of its
    /// split, and its labels.
    x: Vec<f32>,
    y: Vec<u8>,
    /// The sparse part of the share in compressed rows, and its transpose.
    ptr: Vec<u32>,
    idx: Vec<u32>,
    vals: Vec<f32>,
    t_ptr: Vec<u32>,
    t_idx: Vec<u32>,
    t_vals: Vec<f32>,
    /// The split's per-input counts, its dense inputs and their bit masks.
    counts: Vec<u32>,
    dense_cols: Vec<u32>,
    masks: Vec<u32>,
    /// Rows of `W1^T` (forward) or `dW1^T` (backward) of the dense inputs.
    panel: Vec<f32>,
    /// theta with W1 written back from W1^T, for the dense passes.
    dense_theta: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    dhidden: Vec<f32>,
    /// The gradient of W1, transposed (`inputs x hidden`).
    dw1t: Vec<f32>,
    /// The gradient in theta's layout; its W1 part is not used (see `dw1t`).
    grad: Vec<f32>,
    scratch: Vec<f32>,
    /// The loss and accuracy of the worker's share of the last batch.
    stats: BatchStats,
}

impl Worker {
    fn new(layout: &Layout, rows: usize) -> Result<Self> {
        let (i, h) = (layout.inputs, layout.hidden);
        let cells = product("a worker's batch share", &[rows, i])?;
        let hidden = product("a worker's hidden layer", &[rows, h])?;
        let logits = product("a worker's logits", &[rows, layout.outputs])?;
        Ok(Worker {
            x: zeros("a worker's dense inputs", SplitBuffers::dense_len(rows, i))?,
            y: zeros("a worker's labels", rows)?,
            ptr: zeros("a worker's row pointers", rows + 1)?,
            idx: zeros("a worker's sparse inputs", cells)?,
            vals: zeros("a worker's sparse inputs", cells)?,
            t_ptr: zeros("a worker's column pointers", i + 1)?,
            t_idx: zeros("a worker's transposed inputs", cells)?,
            t_vals: zeros("a worker's transposed inputs", cells)?,
            counts: zeros("a worker's column counts", i)?,
            dense_cols: zeros("a worker's dense columns", i)?,
            masks: zeros("a worker's column masks", i.div_ceil(32))?,
            panel: zeros("a worker's panel of W1", i * h)?,
            dense_theta: zeros("a worker's parameters", layout.num_params())?,
            hidden: zeros("a worker's hidden layer", hidden)?,
            logits: zeros("a worker's logits", logits)?,
            dlogits: zeros("a worker's logit gradients", logits)?,
            dhidden: zeros("a worker's hidden gradients", hidden)?,
            dw1t: zeros("a worker's gradient of W1", i * h)?,
            grad: zeros("a worker's gradient", layout.num_params())?,
            scratch: zeros("a worker's GEMM scratch", layout.gemm_scratch_len(rows))?,
            stats: BatchStats::default(),
        })
    }

    /// Forward + backward on `share`, a share of a batch of `batch` examples, at the parameters
    /// `theta` with layer 1's weights `w1t` (theta's W1 is not read); the gradient lands in
    /// `self.dw1t` (W1, transposed) and `self.grad` (the rest). With `sparse_inputs`, the share
    /// is compressed straight from its images and split into dense and sparse inputs;
    /// otherwise it is gathered into dense rows.
    fn run(
        &mut self,
        layout: &Layout,
        theta: &[f32],
        w1t: &[f32],
        share: &Batch<'_>,
        batch: usize,
        sparse_inputs: bool,
    ) -> Result<BatchStats> {
        let (n, i, h) = (share.len(), layout.inputs, layout.hidden);
        let (hidden, logits) = (&mut self.hidden[..n * h], &mut self.logits[..n * layout.outputs]);
        let (dlogits, dhidden) = (
            &mut self.dlogits[..n * layout.outputs],
            &mut self.dhidden[..n * h],
        );
        let y = &mut self.y[..n];
        if !share.labels_into(y) {
            return Err(share_overflow());
        }
        // The gradient of the mean over the batch, from this share's rows.
        let scale_share = |dlogits: &mut [f32]| {
            // cross_entropy_grad divides by this share's size; the batch mean divides by `batch`.
            let share = n as f32 / batch as f32;
            dlogits.iter_mut().for_each(|d| *d *= share);
        };
        if !sparse_inputs {
            let x = &mut self.x[..n * i];
            if !share.gather(x, y) {
                return Err(share_overflow());
            }
            self.dense_theta.copy_from_slice(theta);
            transpose(w1t, i, h, &mut self.dense_theta[..h * i]).map_err(fail)?;
            layout
                .forward(&self.dense_theta, x, hidden, logits, &mut self.scratch)
                .map_err(fail)?;
            let stats = cross_entropy_grad(logits, layout.outputs, y, dlogits).map_err(fail)?;
            scale_share(dlogits);
            layout
                .backward(
                    &self.dense_theta,
                    x,
                    hidden,
                    dlogits,
                    dhidden,
                    &mut self.grad,
                    &mut self.scratch,
                )
                .map_err(fail)?;
            transpose(&self.grad[..h * i], h, i, &mut self.dw1t).map_err(fail)?;
            return Ok(stats);
        }
        let bufs = SplitBuffers {
            ptr: &mut self.ptr,
            idx: &mut self.idx,
            vals: &mut self.vals,
            counts: &mut self.counts,
            dense_cols: &mut self.dense_cols,
            masks: &mut self.masks,
            dense: &mut self.x,
        };
        let dense_above = DENSE_SHARE * n as f32 + DENSE_EXTRA_ROWS;
        let sx =
            SplitRows::from_bytes(n, i, |b| share.image(b), PIXEL_SCALE, dense_above, bufs).map_err(fail)?;
        layout
            .forward_sparse(
                theta,
                w1t,
                &sx,
                hidden,
                logits,
                &mut self.scratch,
                &mut self.panel,
            )
            .map_err(fail)?;
        let stats = cross_entropy_grad(logits, layout.outputs, y, dlogits).map_err(fail)?;
        scale_share(dlogits);
        let xt = sx
            .sparse()
            .transpose_into(&mut self.t_ptr, &mut self.t_idx, &mut self.t_vals)
            .map_err(fail)?;
        layout
            .backward_sparse(
                theta,
                &sx,
                &xt,
                hidden,
                dlogits,
                dhidden,
                &mut self.grad,
                &mut self.dw1t,
                &mut self.scratch,
                &mut self.panel,
            )
            .map_err(fail)?;
        Ok(stats)
    }
}

/// The gradient of one batch: layer 1's weights transposed, and the other parameters.
pub struct Gradient<'a> {
    /// `dW1^T` (`inputs x hidden`).
    pub w1t: &'a [f32],
    /// The gradient in theta's layout; only the parts after W1 (b1, W2, b2) are meaningful.
    pub rest: &'a [f32],
}

/// Computes gradients of the mean batch loss on up to `threads` threads of a caller's pool.
pub struct GradientEngine {
    layout: Layout,
    workers: Vec<Worker>,
    rows_per_worker: usize,
    sparse_inputs: bool,
}

impl GradientEngine {
    /// Buffers for batches of up to `batch` examples on up to `threads` threads, each given at
    /// least [`MIN_ROWS_PER_THREAD`] rows; with `sparse_inputs`, batches are split into dense
    /// and sparse inputs for the input layer, else they take the dense passes. An error when
    /// the machine cannot hold the buffers.
    pub fn new(layout: Layout, batch: usize, threads: usize, sparse_inputs: bool) -> Result<Self> {
        let threads = threads.clamp(1, batch.div_ceil(MIN_ROWS_PER_THREAD).max(1));
        let rows_per_worker = batch.div_ceil(threads);
        Ok(GradientEngine {
            layout,
            workers: (0..threads)
                .map(|_| Worker::new(&layout, rows_per_worker))
                .collect::<Result<_>>()?,
            rows_per_worker,
            sparse_inputs,
        })
    }

    /// The gradient of the mean loss of `examples` at `theta` with layer 1's weights `w1t` (W1
    /// transposed; theta's own W1 is not read), and the batch's loss and accuracy before any
    /// update, the batch's rows split over at most as many of `pool`'s threads as the engine
    /// has workers. Costs about `6 batch P` flops dense, a fifth of the layer-1 part of it
    /// on MNIST's sparse inputs.
    pub fn gradient(
        &mut self,
        pool: &Pool,
        theta: &[f32],
        w1t: &[f32],
        examples: &Batch<'_>,
    ) -> Result<(Gradient<'_>, BatchStats)> {
        let batch = examples.len();
        let per = self.rows_per_worker;
        if batch > per * self.workers.len() {
            return Err(CliError::Failed(format!(
                "batch of {batch} exceeds the engine's size"
            )));
        }
        let layout = self.layout;
        let used = batch.div_ceil(per);
        let jobs = self
            .workers
            .iter_mut()
            .enumerate()
            .take(used)
            .map(|(k, w)| (w, examples.slice(k * per, per)));
        let sparse = self.sparse_inputs;
        pool.each(jobs.collect(), |(w, share)| {
            w.stats = w.run(&layout, theta, w1t, &share, batch, sparse)?;
            Ok(())
        })?;
        let mut stats = BatchStats::default();
        for w in &self.workers[..used] {
            stats.merge(w.stats);
        }
        let (first, rest) = self.workers.split_at_mut(1);
        let w1_len = layout.inputs * layout.hidden;
        for w in &rest[..used - 1] {
            first[0].dw1t.iter_mut().zip(&w.dw1t).for_each(|(a, b)| *a += b);
            first[0].grad[w1_len..]
                .iter_mut()
                .zip(&w.grad[w1_len..])
                .for_each(|(a, b)| *a += b);
        }
        let g = Gradient {
            w1t: &first[0].dw1t,
            rest: &first[0].grad,
        };
        Ok((g, stats))
    }
}
