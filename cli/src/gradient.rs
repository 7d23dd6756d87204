//! Back-propagated gradients of a batch, with the batch's rows spread over threads.
//!
//! Each worker runs forward and backward on its share of the rows, with its loss gradient scaled
//! so that the sum of the workers' gradients is the gradient of the mean loss of the whole batch;
//! the partial gradients are then added in worker order (deterministic for a given thread count).

use ienk::loss::{BatchStats, cross_entropy_grad};
use ienk::mlp::Layout;
use ienk::sparse::SparseRows;

use crate::error::{CliError, Result};
use crate::pool::Pool;

/// Fewer rows than this per thread cost more than they save: each worker's gradient (P floats)
/// is added to the first one's after every step (a batch of 32 ran slower on two threads than
/// on one, even with the persistent pool).
pub const MIN_ROWS_PER_THREAD: usize = 64;

/// Batches with fewer than one non-zero input in this many take the sparse passes.
const SPARSE_BELOW: usize = 3;

/// The buffers of one worker, sized for at most `rows` examples.
struct Worker {
    /// The share of the batch in compressed rows, and W1^T / dW1^T, for the sparse passes.
    ptr: Vec<u32>,
    idx: Vec<u32>,
    vals: Vec<f32>,
    t_ptr: Vec<u32>,
    t_idx: Vec<u32>,
    t_vals: Vec<f32>,
    w1t: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    dhidden: Vec<f32>,
    grad: Vec<f32>,
    scratch: Vec<f32>,
    /// The loss and accuracy of the worker's share of the last batch.
    stats: BatchStats,
}

impl Worker {
    fn new(layout: &Layout, rows: usize) -> Self {
        Worker {
            ptr: vec![0; rows + 1],
            idx: vec![0; rows * layout.inputs],
            vals: vec![0.0; rows * layout.inputs],
            t_ptr: vec![0; layout.inputs + 1],
            t_idx: vec![0; rows * layout.inputs],
            t_vals: vec![0.0; rows * layout.inputs],
            w1t: vec![0.0; layout.inputs * layout.hidden],
            hidden: vec![0.0; rows * layout.hidden],
            logits: vec![0.0; rows * layout.outputs],
            dlogits: vec![0.0; rows * layout.outputs],
            dhidden: vec![0.0; rows * layout.hidden],
            grad: vec![0.0; layout.num_params()],
            scratch: vec![0.0; layout.gemm_scratch_len(rows)],
            stats: BatchStats::default(),
        }
    }

    /// Forward + backward on `x`/`y`, a share of a batch of `batch` examples; the gradient lands
    /// in `self.grad`.
    fn run(
        &mut self,
        layout: &Layout,
        theta: &[f32],
        x: &[f32],
        y: &[u8],
        batch: usize,
        sparse_inputs: bool,
    ) -> Result<BatchStats> {
        let n = y.len();
        let fail = |e: ienk::mlp::MlpError| CliError::Failed(format!("gradient computation failed: {e}"));
        let (hidden, logits) = (
            &mut self.hidden[..n * layout.hidden],
            &mut self.logits[..n * layout.outputs],
        );
        let (dlogits, dhidden) = (
            &mut self.dlogits[..n * layout.outputs],
            &mut self.dhidden[..n * layout.hidden],
        );
        let sx = SparseRows::from_dense(x, layout.inputs, &mut self.ptr, &mut self.idx, &mut self.vals)
            .map_err(fail)?;
        let sparse = sparse_inputs && sx.nnz() * SPARSE_BELOW < x.len();
        if sparse {
            layout
                .forward_sparse(theta, &sx, &mut self.w1t, hidden, logits, &mut self.scratch)
                .map_err(fail)?;
        } else {
            layout
                .forward(theta, x, hidden, logits, &mut self.scratch)
                .map_err(fail)?;
        }
        let stats = cross_entropy_grad(logits, layout.outputs, y, dlogits).map_err(fail)?;
        // cross_entropy_grad divides by this share's size; the batch mean divides by `batch`.
        let share = n as f32 / batch as f32;
        dlogits.iter_mut().for_each(|d| *d *= share);
        if sparse {
            let xt = sx
                .transpose_into(&mut self.t_ptr, &mut self.t_idx, &mut self.t_vals)
                .map_err(fail)?;
            layout
                .backward_sparse(
                    theta,
                    &xt,
                    hidden,
                    dlogits,
                    dhidden,
                    &mut self.grad,
                    &mut self.w1t,
                    &mut self.scratch,
                )
                .map_err(fail)?;
        } else {
            layout
                .backward(
                    theta,
                    x,
                    hidden,
                    dlogits,
                    dhidden,
                    &mut self.grad,
                    &mut self.scratch,
                )
                .map_err(fail)?;
        }
        Ok(stats)
    }
}

/// Computes gradients of the mean batch loss on up to `threads` threads.
pub struct GradientEngine {
    layout: Layout,
    workers: Vec<Worker>,
    rows_per_worker: usize,
    pool: Pool,
    sparse_inputs: bool,
}

impl GradientEngine {
    /// Buffers for batches of up to `batch` examples on up to `threads` threads, each given at
    /// least [`MIN_ROWS_PER_THREAD`] rows; with `sparse_inputs`, batches whose non-zeros are
    /// fewer than a third of their entries take the sparse input-layer passes.
    pub fn new(layout: Layout, batch: usize, threads: usize, sparse_inputs: bool) -> Self {
        let threads = threads.clamp(1, batch.div_ceil(MIN_ROWS_PER_THREAD).max(1));
        let rows_per_worker = batch.div_ceil(threads);
        GradientEngine {
            layout,
            workers: (0..threads)
                .map(|_| Worker::new(&layout, rows_per_worker))
                .collect(),
            rows_per_worker,
            pool: Pool::new(threads),
            sparse_inputs,
        }
    }

    /// The gradient of the mean loss of the batch `x`/`y` at `theta`, and the batch's loss and
    /// accuracy before any update. Costs about `6 batch P` flops.
    pub fn gradient(&mut self, theta: &[f32], x: &[f32], y: &[u8]) -> Result<(&[f32], BatchStats)> {
        let batch = y.len();
        let per = self.rows_per_worker;
        if batch > per * self.workers.len() {
            return Err(CliError::Failed(format!(
                "batch of {batch} exceeds the engine's size"
            )));
        }
        let layout = self.layout;
        let jobs = self
            .workers
            .iter_mut()
            .zip(y.chunks(per))
            .zip(x.chunks(per * layout.inputs));
        let used = batch.div_ceil(per);
        let sparse = self.sparse_inputs;
        self.pool.each(jobs.collect(), |((w, y), x)| {
            w.stats = w.run(&layout, theta, x, y, batch, sparse)?;
            Ok(())
        })?;
        let mut stats = BatchStats::default();
        for w in &self.workers[..used] {
            stats.merge(w.stats);
        }
        let (first, rest) = self.workers.split_at_mut(1);
        for w in &rest[..used - 1] {
            first[0].grad.iter_mut().zip(&w.grad).for_each(|(a, b)| *a += b);
        }
        Ok((&first[0].grad, stats))
    }
}
