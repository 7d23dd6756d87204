//! Back-propagated gradients of a batch, with the batch's rows spread over threads.
//!
//! Each worker runs forward and backward on its share of the rows, with its loss gradient scaled
//! so that the sum of the workers' gradients is the gradient of the mean loss of the whole batch;
//! the partial gradients are then added in worker order (deterministic for a given thread count).

use ienk::loss::{BatchStats, cross_entropy_grad};
use ienk::mlp::Layout;

use crate::error::{CliError, Result};

/// Fewer rows than this per thread cost more in thread start-up than they save (a batch of 32
/// ran slower on two threads than on one).
pub const MIN_ROWS_PER_THREAD: usize = 64;

/// The buffers of one worker, sized for at most `rows` examples.
struct Worker {
    hidden: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    dhidden: Vec<f32>,
    grad: Vec<f32>,
    scratch: Vec<f32>,
}

impl Worker {
    fn new(layout: &Layout, rows: usize) -> Self {
        Worker {
            hidden: vec![0.0; rows * layout.hidden],
            logits: vec![0.0; rows * layout.outputs],
            dlogits: vec![0.0; rows * layout.outputs],
            dhidden: vec![0.0; rows * layout.hidden],
            grad: vec![0.0; layout.num_params()],
            scratch: vec![0.0; layout.gemm_scratch_len(rows)],
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
        layout
            .forward(theta, x, hidden, logits, &mut self.scratch)
            .map_err(fail)?;
        let stats = cross_entropy_grad(logits, layout.outputs, y, dlogits).map_err(fail)?;
        // cross_entropy_grad divides by this share's size; the batch mean divides by `batch`.
        let share = n as f32 / batch as f32;
        dlogits.iter_mut().for_each(|d| *d *= share);
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
        Ok(stats)
    }
}

/// Computes gradients of the mean batch loss on up to `threads` threads.
pub struct GradientEngine {
    layout: Layout,
    workers: Vec<Worker>,
    rows_per_worker: usize,
}

impl GradientEngine {
    /// Buffers for batches of up to `batch` examples on up to `threads` threads, each given at
    /// least [`MIN_ROWS_PER_THREAD`] rows.
    pub fn new(layout: Layout, batch: usize, threads: usize) -> Self {
        let threads = threads.clamp(1, batch.div_ceil(MIN_ROWS_PER_THREAD).max(1));
        let rows_per_worker = batch.div_ceil(threads);
        GradientEngine {
            layout,
            workers: (0..threads)
                .map(|_| Worker::new(&layout, rows_per_worker))
                .collect(),
            rows_per_worker,
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
        let results: Vec<Result<BatchStats>> = if used == 1 {
            jobs.map(|((w, y), x)| w.run(&layout, theta, x, y, batch))
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = jobs
                    .map(|((w, y), x)| s.spawn(move || w.run(&layout, theta, x, y, batch)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(CliError::Failed("a worker thread panicked".into())))
                    })
                    .collect()
            })
        };
        let mut stats = BatchStats::default();
        for r in results {
            stats.merge(r?);
        }
        let (first, rest) = self.workers.split_at_mut(1);
        for w in &rest[..used - 1] {
            first[0].grad.iter_mut().zip(&w.grad).for_each(|(a, b)| *a += b);
        }
        Ok((&first[0].grad, stats))
    }
}
