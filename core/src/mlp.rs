//! The fixed-layout MLP `inputs -> hidden (ReLU) -> outputs` over one flat parameter vector
//! `[W1 | b1 | W2 | b2]`, weights in PyTorch's `[out, in]` row-major order.
//!
//! Forward and backward run on the blocked GEMM kernels with the bias (+ ReLU) fused into the
//! product. All buffers are the caller's: [`Layout::gemm_scratch_len`] says how much GEMM scratch a
//! batch needs, [`Layout::forward_scratch_len`] how much a forward pass alone needs.

use core::fmt;
use core::ops::Range;

use rand_core::Rng;

use crate::gemm::{self, Epilogue, GemmError, MatMut, MatRef};
use crate::idx::{IMAGE_PIXELS, NUM_CLASSES};
use crate::normal::Normal;
use crate::sparse::{SparseRows, SplitRows, sparse_product, sparse_times_dense};

/// Hidden units of the thesis's network.
pub const DEFAULT_HIDDEN: usize = 128;

/// Sizes of the three layers of units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Input features (784 for MNIST).
    pub inputs: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Outputs (10 classes for MNIST).
    pub outputs: usize,
}

/// Why a forward or backward call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpError {
    /// A buffer whose length does not fit the layout and batch size.
    Length {
        /// Which buffer.
        what: &'static str,
        /// Floats needed.
        expected: usize,
        /// Floats given.
        found: usize,
    },
    /// A label outside `0..outputs`.
    Label {
        /// Position in the batch.
        index: usize,
        /// The label.
        value: u8,
    },
    /// A list of input columns that is not strictly increasing inside `0..inputs`.
    Columns {
        /// Position in the list.
        index: usize,
        /// The column found there.
        value: u32,
    },
    /// A GEMM refused its arguments (scratch too small, typically).
    Gemm(GemmError),
}

impl fmt::Display for MlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MlpError::Length {
                what,
                expected,
                found,
            } => {
                write!(f, "{what} has {found} floats, expected {expected}")
            }
            MlpError::Label { index, value } => write!(f, "label {index} of the batch is {value}"),
            MlpError::Columns { index, value } => write!(
                f,
                "input column {index} of the list is {value}: not increasing or past the inputs"
            ),
            MlpError::Gemm(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for MlpError {}

impl From<GemmError> for MlpError {
    fn from(e: GemmError) -> Self {
        MlpError::Gemm(e)
    }
}

/// Checks that `buf` holds exactly `expected` floats.
pub(crate) fn check_len(what: &'static str, buf: usize, expected: usize) -> Result<(), MlpError> {
    if buf == expected {
        Ok(())
    } else {
        Err(MlpError::Length {
            what,
            expected,
            found: buf,
        })
    }
}

/// Read-only views of the four parameter blocks.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    /// `hidden x inputs`.
    pub w1: &'a [f32],
    /// `hidden`.
    pub b1: &'a [f32],
    /// `outputs x hidden`.
    pub w2: &'a [f32],
    /// `outputs`.
    pub b2: &'a [f32],
}

/// Mutable views of the four parameter blocks.
#[derive(Debug)]
pub struct ParamsMut<'a> {
    /// `hidden x inputs`.
    pub w1: &'a mut [f32],
    /// `hidden`.
    pub b1: &'a mut [f32],
    /// `outputs x hidden`.
    pub w2: &'a mut [f32],
    /// `outputs`.
    pub b2: &'a mut [f32],
}

impl Layout {
    /// The MNIST network: 784 inputs, `hidden` units, 10 classes.
    pub const fn mnist(hidden: usize) -> Layout {
        Layout {
            inputs: IMAGE_PIXELS,
            hidden,
            outputs: NUM_CLASSES,
        }
    }

    /// Number of parameters P (101,770 for 784-128-10).
    pub const fn num_params(&self) -> usize {
        self.hidden * self.inputs + self.hidden + self.outputs * self.hidden + self.outputs
    }

    /// Index ranges of W1, b1, W2, b2 in the flat vector.
    pub const fn ranges(&self) -> [Range<usize>; 4] {
        let w1 = self.hidden * self.inputs;
        let b1 = w1 + self.hidden;
        let w2 = b1 + self.outputs * self.hidden;
        let b2 = w2 + self.outputs;
        [0..w1, w1..b1, b1..w2, w2..b2]
    }

    /// Index ranges of the two layers (weights and bias of each), the unit of the Glorot scale.
    pub const fn layer_ranges(&self) -> [Range<usize>; 2] {
        let [w1, b1, w2, b2] = self.ranges();
        [w1.start..b1.end, w2.start..b2.end]
    }

    /// Glorot-normal standard deviations `sqrt(2 / (fan_in + fan_out))` of the two layers
    /// (0.04683 and 0.12039 for 784-128-10).
    pub fn glorot_std(&self) -> [f32; 2] {
        let s = |fan_in: usize, fan_out: usize| libm::sqrtf(2.0 / (fan_in + fan_out) as f32);
        [s(self.inputs, self.hidden), s(self.hidden, self.outputs)]
    }

    /// Splits a parameter vector into its blocks.
    pub fn split<'a>(&self, theta: &'a [f32]) -> Result<Params<'a>, MlpError> {
        check_len("parameter vector", theta.len(), self.num_params())?;
        let [w1, b1, w2, b2] = self.ranges();
        Ok(Params {
            w1: &theta[w1],
            b1: &theta[b1],
            w2: &theta[w2],
            b2: &theta[b2],
        })
    }

    /// Splits a mutable parameter vector into its blocks.
    pub fn split_mut<'a>(&self, theta: &'a mut [f32]) -> Result<ParamsMut<'a>, MlpError> {
        check_len("parameter vector", theta.len(), self.num_params())?;
        let [w1, b1, w2, _] = self.ranges();
        let (w1s, rest) = theta.split_at_mut(w1.end);
        let (b1s, rest) = rest.split_at_mut(b1.len());
        let (w2s, b2s) = rest.split_at_mut(w2.len());
        Ok(ParamsMut {
            w1: w1s,
            b1: b1s,
            w2: w2s,
            b2: b2s,
        })
    }

    /// Glorot-normal initialisation: weights of layer l ~ N(0, s_l^2), biases 0. O(P).
    pub fn init_glorot<G: Rng + ?Sized>(
        &self,
        theta: &mut [f32],
        normal: &Normal,
        rng: &mut G,
    ) -> Result<(), MlpError> {
        let [s1, s2] = self.glorot_std();
        let p = self.split_mut(theta)?;
        normal.fill(rng, p.w1, s1);
        p.b1.fill(0.0);
        normal.fill(rng, p.w2, s2);
        p.b2.fill(0.0);
        Ok(())
    }

    /// Floats of GEMM scratch that [`Layout::forward`] and [`Layout::backward`] need for a batch of
    /// `batch` examples. O(1).
    pub fn gemm_scratch_len(&self, batch: usize) -> usize {
        let (b, i, h, o) = (batch, self.inputs, self.hidden, self.outputs);
        [
            self.forward_scratch_len(b),
            gemm::scratch_len(o, h, b), // dW2 = dZ^T H
            gemm::scratch_len(b, h, o), // dH = dZ W2
            gemm::scratch_len(h, i, b), // dW1 = dA^T X
            gemm::scratch_len(i, h, b), // dW1^T of the dense columns = X^T dA
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// Floats of GEMM scratch that [`Layout::forward`] alone needs for a batch of `batch`
    /// examples (its two products; [`Layout::gemm_scratch_len`] covers the backward pass too).
    /// O(1).
    pub fn forward_scratch_len(&self, batch: usize) -> usize {
        let (b, i, h, o) = (batch, self.inputs, self.hidden, self.outputs);
        // hidden = X W1^T, logits = H W2^T
        gemm::scratch_len(b, h, i).max(gemm::scratch_len(b, o, h))
    }

    /// Forward pass of `batch` examples `x` (`batch x inputs`): `hidden = relu(x W1^T + b1)`
    /// (`batch x hidden`, bias and ReLU fused into the product) and `logits = hidden W2^T + b2`
    /// (`batch x outputs`). Costs `2 batch P` flops.
    pub fn forward(
        &self,
        theta: &[f32],
        x: &[f32],
        hidden: &mut [f32],
        logits: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), MlpError> {
        let (p, batch) = self.check_forward(theta, x, hidden, logits)?;
        self.input_layer(p.w1, x, batch, hidden, Epilogue::BiasRelu(p.b1), scratch)?;
        self.output_layer(&p, hidden, logits, scratch)
    }

    /// As [`Layout::forward`], also keeping the layer-1 pre-activation `pre = x W1^T + b1`
    /// (`batch x hidden`), which the low-rank ensemble members start from.
    pub fn forward_keep_pre(
        &self,
        theta: &[f32],
        x: &[f32],
        pre: &mut [f32],
        hidden: &mut [f32],
        logits: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), MlpError> {
        let (p, batch) = self.check_forward(theta, x, hidden, logits)?;
        check_len("pre-activation", pre.len(), batch * self.hidden)?;
        self.input_layer(p.w1, x, batch, pre, Epilogue::Bias(p.b1), scratch)?;
        hidden
            .iter_mut()
            .zip(pre.iter())
            .for_each(|(a, &v)| *a = if v < 0.0 { 0.0 } else { v });
        self.output_layer(&p, hidden, logits, scratch)
    }

    /// Splits theta and checks the buffers of a forward pass; returns the batch size.
    fn check_forward<'a>(
        &self,
        theta: &'a [f32],
        x: &[f32],
        hidden: &[f32],
        logits: &[f32],
    ) -> Result<(Params<'a>, usize), MlpError> {
        let batch = x.len() / self.inputs.max(1);
        check_len("input batch", x.len(), batch * self.inputs)?;
        Ok((self.check_outputs(theta, batch, hidden, logits)?, batch))
    }

    /// Splits theta and checks the activation buffers of a forward pass of `batch` examples.
    fn check_outputs<'a>(
        &self,
        theta: &'a [f32],
        batch: usize,
        hidden: &[f32],
        logits: &[f32],
    ) -> Result<Params<'a>, MlpError> {
        let p = self.split(theta)?;
        check_len("hidden activations", hidden.len(), batch * self.hidden)?;
        check_len("logits", logits.len(), batch * self.outputs)?;
        Ok(p)
    }

    /// `out = x W1^T`, then `epilogue` (the layer's bias, with or without the ReLU).
    fn input_layer(
        &self,
        w1: &[f32],
        x: &[f32],
        batch: usize,
        out: &mut [f32],
        epilogue: Epilogue<'_>,
        scratch: &mut [f32],
    ) -> Result<(), MlpError> {
        let (i, h) = (self.inputs, self.hidden);
        gemm::gemm(
            1.0,
            MatRef::new(x, batch, i, i),
            MatRef::new(w1, h, i, i).t(),
            0.0,
            MatMut::new(out, batch, h, h),
            epilogue,
            scratch,
        )?;
        Ok(())
    }

    /// `logits = hidden W2^T + b2`.
    fn output_layer(
        &self,
        p: &Params<'_>,
        hidden: &[f32],
        logits: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), MlpError> {
        let (h, o) = (self.hidden, self.outputs);
        let batch = hidden.len() / h.max(1);
        gemm::gemm(
            1.0,
            MatRef::new(hidden, batch, h, h),
            MatRef::new(p.w2, o, h, h).t(),
            0.0,
            MatMut::new(logits, batch, o, o),
            Epilogue::Bias(p.b2),
            scratch,
        )?;
        Ok(())
    }

    /// Backward pass: from `dlogits` (`batch x outputs`, the gradient of the loss with respect to
    /// the logits) and the forward's `x` and `hidden`, writes the gradient with respect to every
    /// parameter into `grad` (length P). `dhidden` (`batch x hidden`) is scratch.
    /// Costs about `4 batch P` flops.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        theta: &[f32],
        x: &[f32],
        hidden: &[f32],
        dlogits: &[f32],
        dhidden: &mut [f32],
        grad: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), MlpError> {
        let batch = x.len() / self.inputs.max(1);
        check_len("input batch", x.len(), batch * self.inputs)?;
        let (i, h) = (self.inputs, self.hidden);
        self.backward_to_hidden(theta, batch, hidden, dlogits, dhidden, grad, scratch)?;
        let g = self.split_mut(grad)?;
        // dW1 = dA^T X.
        gemm::gemm(
            1.0,
            MatRef::new(dhidden, batch, h, h).t(),
            MatRef::new(x, batch, i, i),
            0.0,
            MatMut::new(g.w1, h, i, i),
            Epilogue::None,
            scratch,
        )?;
        Ok(())
    }

    /// As [`Layout::forward`] for a batch split into dense and sparse columns ([`SplitRows`]),
    /// with layer 1's weights given transposed as `w1t` (`inputs x hidden`,
    /// [`crate::sparse::transpose`] of W1; theta's own W1 is not read): the sparse part adds
    /// one row of `W1^T` per non-zero (`2 nnz H` flops), the dense part is a GEMM against the
    /// dense columns' rows of `W1^T`, gathered into `panel` (at least `inputs x hidden`
    /// floats). MNIST's input layer costs about a third of its dense flops this way. Equal to
    /// the dense pass up to the order of floating-point sums.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_sparse(
        &self,
        theta: &[f32],
        w1t: &[f32],
        x: &SplitRows<'_>,
        hidden: &mut [f32],
        logits: &mut [f32],
        scratch: &mut [f32],
        panel: &mut [f32],
    ) -> Result<(), MlpError> {
        let (i, h, batch) = (self.inputs, self.hidden, x.rows());
        let p = self.check_outputs(theta, batch, hidden, logits)?;
        check_len("sparse input columns", x.cols(), i)?;
        check_len("W1^T", w1t.len(), i * h)?;
        for row in hidden.chunks_exact_mut(h.max(1)) {
            row.copy_from_slice(p.b1);
        }
        sparse_times_dense(x.sparse(), w1t, h, hidden)?;
        let cols = x.dense_cols();
        if !cols.is_empty() {
            let panel = dense_panel(panel, cols.len(), h)?;
            for (out, &j) in panel.chunks_exact_mut(h).zip(cols) {
                out.copy_from_slice(&w1t[j as usize * h..(j as usize + 1) * h]);
            }
            gemm::gemm(
                1.0,
                x.dense(),
                MatRef::new(panel, cols.len(), h, h),
                1.0,
                MatMut::new(hidden, batch, h, h),
                Epilogue::None,
                scratch,
            )?;
        }
        hidden
            .iter_mut()
            .for_each(|a| *a = if *a < 0.0 { 0.0 } else { *a });
        self.output_layer(&p, hidden, logits, scratch)
    }

    /// As [`Layout::backward`] for a batch split into dense and sparse columns, given with the
    /// transpose `xt` of its sparse part (`inputs x batch`, from
    /// [`SparseRows::transpose_into`] of [`SplitRows::sparse`]): writes the gradient of W1
    /// transposed into `dw1t` (`inputs x hidden`; `dW1^T = X^T dA`, a sparse product and a GEMM
    /// through `panel`, at least `inputs x hidden` floats) and the others into `grad`, whose W1
    /// part is left as it was.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_sparse(
        &self,
        theta: &[f32],
        x: &SplitRows<'_>,
        xt: &SparseRows<'_>,
        hidden: &[f32],
        dlogits: &[f32],
        dhidden: &mut [f32],
        grad: &mut [f32],
        dw1t: &mut [f32],
        scratch: &mut [f32],
        panel: &mut [f32],
    ) -> Result<(), MlpError> {
        let (i, h, batch) = (self.inputs, self.hidden, x.rows());
        check_len("sparse input columns", x.cols(), i)?;
        check_len("transposed sparse inputs", xt.rows(), i)?;
        check_len("transposed sparse batch", xt.cols(), batch)?;
        check_len("dW1^T", dw1t.len(), i * h)?;
        self.backward_to_hidden(theta, batch, hidden, dlogits, dhidden, grad, scratch)?;
        // The dense columns have no sparse entries: their rows come out zero here and are
        // overwritten below.
        sparse_product(xt, dhidden, h, dw1t)?;
        let cols = x.dense_cols();
        if !cols.is_empty() {
            let panel = dense_panel(panel, cols.len(), h)?;
            gemm::gemm(
                1.0,
                x.dense().t(),
                MatRef::new(dhidden, batch, h, h),
                0.0,
                MatMut::new(panel, cols.len(), h, h),
                Epilogue::None,
                scratch,
            )?;
            for (row, &j) in panel.chunks_exact(h).zip(cols) {
                dw1t[j as usize * h..(j as usize + 1) * h].copy_from_slice(row);
            }
        }
        Ok(())
    }

    /// The part of the backward pass above the input layer: `dW2`, `db2`, `db1` into `grad`, and
    /// `dhidden = (dZ W2)` masked where the ReLU was off.
    #[allow(clippy::too_many_arguments)]
    fn backward_to_hidden(
        &self,
        theta: &[f32],
        batch: usize,
        hidden: &[f32],
        dlogits: &[f32],
        dhidden: &mut [f32],
        grad: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), MlpError> {
        let p = self.split(theta)?;
        check_len("hidden activations", hidden.len(), batch * self.hidden)?;
        check_len("dlogits", dlogits.len(), batch * self.outputs)?;
        check_len("dhidden", dhidden.len(), batch * self.hidden)?;
        let (h, o) = (self.hidden, self.outputs);
        let g = self.split_mut(grad)?;
        let dz = MatRef::new(dlogits, batch, o, o);
        // dW2 = dZ^T H; db2 = column sums of dZ.
        gemm::gemm(
            1.0,
            dz.t(),
            MatRef::new(hidden, batch, h, h),
            0.0,
            MatMut::new(g.w2, o, h, h),
            Epilogue::None,
            scratch,
        )?;
        column_sums(dlogits, o, g.b2);
        // dA = (dZ W2) masked where the ReLU was off; db1 = column sums of dA.
        gemm::gemm(
            1.0,
            dz,
            MatRef::new(p.w2, o, h, h),
            0.0,
            MatMut::new(dhidden, batch, h, h),
            Epilogue::None,
            scratch,
        )?;
        // A select that always writes (not a conditional store), so that it vectorises.
        dhidden
            .iter_mut()
            .zip(hidden)
            .for_each(|(d, &a)| *d = if a <= 0.0 { 0.0 } else { *d });
        column_sums(dhidden, h, g.b1);
        Ok(())
    }
}

/// The first `k x h` floats of `panel`, or an error when it is shorter.
fn dense_panel(panel: &mut [f32], k: usize, h: usize) -> Result<&mut [f32], MlpError> {
    let (needed, found) = (k * h, panel.len());
    panel.get_mut(..needed).ok_or(MlpError::Length {
        what: "dense column panel",
        expected: needed,
        found,
    })
}

/// `out[j] = sum_b m[b][j]` for a row-major matrix with `out.len()` columns.
fn column_sums(m: &[f32], cols: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in m.chunks_exact(cols) {
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
    }
}

/// The f32 value of a pixel is `pixel * PIXEL_SCALE`, in [0, 1].
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// Converts u8 pixels to f32 in [0, 1] (`pixel * PIXEL_SCALE`). O(len).
pub fn pixels_to_unit(pixels: &[u8], out: &mut [f32]) {
    out.iter_mut()
        .zip(pixels)
        .for_each(|(o, &p)| *o = f32::from(p) * PIXEL_SCALE);
}
