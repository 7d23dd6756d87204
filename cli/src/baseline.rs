//! SGD, NAG and Adam on back-propagated gradients, the update split over a worker pool.

use ienk::batch::Batch;
use ienk::loss::BatchStats;
use ienk::mlp::Layout;
use ienk::optim::{Adam, Nag, Sgd};
use ienk::sparse::transpose;

use crate::buffers;
use crate::error::{CliError, Result};
use crate::gradient::GradientEngine;
use crate::optimizer::{Optimizer, cannot_resume};
use crate::pool::Pool;

/// SGD, NAG or Adam on back-propagated gradients. Layer 1's weights live transposed in `w1t`
/// from the first step on (theta's W1 is stale until [`Optimizer::sync`]), and the rule updates
/// them there with the transposed gradient: the same numbers, element by element, without two
/// transposes per step.
pub(crate) struct Baseline {
    engine: GradientEngine,
    /// Runs the gradient's row shares and the update's parameter ranges.
    pool: Pool,
    rule: Rule,
    layout: Layout,
    /// W1^T once the first step has taken it from theta.
    w1t: Option<Vec<f32>>,
}

/// The rule and its state: NAG's velocity; Adam's two moments and its step count.
pub(crate) enum Rule {
    /// Plain SGD.
    Sgd(Sgd),
    /// NAG with its velocity.
    Nag(Nag, Vec<f32>),
    /// Adam with its first and second moments and the steps taken.
    Adam(Adam, Vec<f32>, Vec<f32>, u32),
}

/// One step of the rule, as applied to any range of the parameters.
#[derive(Clone, Copy)]
enum Kind {
    Sgd(Sgd),
    Nag(Nag),
    /// With the step number (1 for the first), for the bias correction.
    Adam(Adam, u32),
}

/// A contiguous range of the parameters, its gradient and its state (none for SGD, the velocity
/// for NAG, the two moments for Adam; unused ones are empty).
struct Piece<'a> {
    theta: &'a mut [f32],
    grad: &'a [f32],
    s1: &'a mut [f32],
    s2: &'a mut [f32],
}

/// Elements per range at least, so that a range's update outweighs handing it to a thread.
const MIN_PIECE: usize = 8192;

impl<'a> Piece<'a> {
    /// Cuts a piece into ranges of `per` elements (the state vectors alike, when not empty).
    fn cut(self, per: usize, out: &mut Vec<Piece<'a>>) {
        let Piece {
            theta,
            grad,
            mut s1,
            mut s2,
        } = self;
        for (theta, grad) in theta.chunks_mut(per).zip(grad.chunks(per)) {
            let (n1, n2) = (theta.len().min(s1.len()), theta.len().min(s2.len()));
            let (a, rest1) = core::mem::take(&mut s1).split_at_mut(n1);
            let (b, rest2) = core::mem::take(&mut s2).split_at_mut(n2);
            (s1, s2) = (rest1, rest2);
            out.push(Piece {
                theta,
                grad,
                s1: a,
                s2: b,
            });
        }
    }

    /// Applies one step of `kind` to the range.
    fn apply(self, kind: Kind) {
        match kind {
            Kind::Sgd(opt) => opt.step(self.theta, self.grad),
            Kind::Nag(opt) => opt.step(self.theta, self.grad, self.s1),
            Kind::Adam(opt, t) => opt.step(t, self.theta, self.grad, self.s1, self.s2),
        }
    }
}

impl Baseline {
    /// `rule` on gradients of `layout` for batches of up to `batch` examples, with `threads`
    /// workers; `sparse_inputs` picks the split input layer over the dense GEMM one.
    pub(crate) fn new(
        rule: Rule,
        layout: Layout,
        batch: usize,
        threads: usize,
        sparse_inputs: bool,
    ) -> Result<Self> {
        Ok(Baseline {
            engine: GradientEngine::new(layout, batch, threads, sparse_inputs)?,
            pool: Pool::new(threads)?,
            rule,
            layout,
            w1t: None,
        })
    }
}

impl Optimizer for Baseline {
    fn step(&mut self, theta: &mut [f32], batch: &Batch<'_>) -> Result<BatchStats> {
        let (i, h) = (self.layout.inputs, self.layout.hidden);
        let w1_len = i * h;
        let w1t = match &mut self.w1t {
            Some(w) => w,
            None => {
                let mut w = buffers::zeros("W1 transposed", w1_len)?;
                transpose(&theta[..w1_len], h, i, &mut w)
                    .map_err(|e| CliError::Failed(format!("cannot transpose W1: {e}")))?;
                self.w1t.insert(w)
            }
        };
        let (grad, stats) = self.engine.gradient(&self.pool, theta, w1t, batch)?;
        // The rule is elementwise: W1^T with dW1^T, then the rest with the rest, the state
        // vectors split the same way, each cut into ranges for the pool's threads. Every
        // element gets the same operations whatever the cut, so the model does not depend on
        // the thread count.
        let (kind, s1, s2): (Kind, &mut [f32], &mut [f32]) = match &mut self.rule {
            Rule::Sgd(opt) => (Kind::Sgd(*opt), &mut [], &mut []),
            Rule::Nag(opt, v) => (Kind::Nag(*opt), v, &mut []),
            Rule::Adam(opt, m, v, t) => {
                *t += 1;
                (Kind::Adam(*opt, *t), m, v)
            }
        };
        let (s1_w1, s1_rest) = s1.split_at_mut(w1_len.min(s1.len()));
        let (s2_w1, s2_rest) = s2.split_at_mut(w1_len.min(s2.len()));
        let per = (theta.len().div_ceil(self.pool.threads()))
            .max(MIN_PIECE)
            .next_multiple_of(8);
        let mut pieces = Vec::new();
        let layer1 = Piece {
            theta: w1t,
            grad: grad.w1t,
            s1: s1_w1,
            s2: s2_w1,
        };
        layer1.cut(per, &mut pieces);
        let others = Piece {
            theta: &mut theta[w1_len..],
            grad: &grad.rest[w1_len..],
            s1: s1_rest,
            s2: s2_rest,
        };
        others.cut(per, &mut pieces);
        self.pool.each(pieces, |piece| {
            piece.apply(kind);
            Ok(())
        })?;
        Ok(stats)
    }

    fn sync(&mut self, theta: &mut [f32]) -> Result<()> {
        let (i, h) = (self.layout.inputs, self.layout.hidden);
        if let Some(w1t) = &self.w1t {
            transpose(w1t, i, h, &mut theta[..i * h])
                .map_err(|e| CliError::Failed(format!("cannot transpose W1: {e}")))?;
        }
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) {
        match &mut self.rule {
            Rule::Sgd(opt) => opt.lr = lr,
            Rule::Nag(opt, _) => opt.lr = lr,
            Rule::Adam(opt, ..) => opt.lr = lr,
        }
    }

    fn resume_at(&mut self, _steps: u64) -> Result<()> {
        match self.rule {
            Rule::Sgd(_) => Ok(()),
            Rule::Nag(..) => Err(cannot_resume("nag", "its velocity")),
            Rule::Adam(..) => Err(cannot_resume("adam", "its moment estimates")),
        }
    }
}
