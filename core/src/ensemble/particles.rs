//! Forward passes of many networks on one batch (the hot path of every ensemble step).
//!
//! Dense: `Mc` members' layer-1 weights stacked as one `(Mc H) x inputs` matrix give all hidden
//! activations in one blocked product `X W1s^T` (`B x Mc H`, bias and ReLU fused), then each
//! member's logits from its column block (leading dimension `Mc H`, no copy).
//!
//! Low rank: with the mean network's pre-activation `A0 = X W1^T + b1` computed once
//! ([`Layout::forward_keep_pre`]) and the
//! members' `b` factors stacked (`Mc r x inputs`), one product `X Bs^T` (`B x Mc r`) gives every
//! member's projections; member k's pre-activation is then `A0 + (X b_k^T) a_k^T + db1_k`, a rank-r
//! update costing `B H r` instead of `B H inputs`.

use crate::gemm::{self, Epilogue, MatMut, MatRef};
use crate::mlp::{Layout, MlpError, check_len};

/// Stacked weights of `Mc` members, each block as in the flat parameter vector.
#[derive(Clone, Copy, Debug)]
pub struct Stacked<'a> {
    /// `Mc H x inputs`: member j's W1 in rows `j H .. (j + 1) H`.
    pub w1: &'a [f32],
    /// `Mc H`.
    pub b1: &'a [f32],
    /// `Mc x outputs x H`: member j's W2 at `j outputs H`.
    pub w2: &'a [f32],
    /// `Mc x outputs`.
    pub b2: &'a [f32],
}

/// Floats of GEMM scratch the dense particle forward of `members` members needs on `batch` rows.
pub fn dense_scratch_len(layout: &Layout, batch: usize, members: usize) -> usize {
    gemm::scratch_len(batch, members * layout.hidden, layout.inputs).max(gemm::scratch_len(
        batch,
        layout.outputs,
        layout.hidden,
    ))
}

/// Dense particle forward of `members` stacked networks on `x` (`B x inputs`): `hidden`
/// (`B x members H`) and `logits` (`members x B x outputs`, member after member).
/// Costs `2 B members P` flops in `1 + members` GEMM calls.
pub fn forward_dense(
    layout: &Layout,
    members: usize,
    x: &[f32],
    w: Stacked<'_>,
    hidden: &mut [f32],
    logits: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), MlpError> {
    let (i, h, o) = (layout.inputs, layout.hidden, layout.outputs);
    let batch = x.len() / i.max(1);
    check_len("input batch", x.len(), batch * i)?;
    check_len("stacked W1", w.w1.len(), members * h * i)?;
    check_len("stacked b1", w.b1.len(), members * h)?;
    check_len("stacked W2", w.w2.len(), members * o * h)?;
    check_len("stacked b2", w.b2.len(), members * o)?;
    check_len("stacked hidden", hidden.len(), batch * members * h)?;
    check_len("stacked logits", logits.len(), members * batch * o)?;
    let mh = members * h;
    gemm::gemm(
        1.0,
        MatRef::new(x, batch, i, i),
        MatRef::new(w.w1, mh, i, i).t(),
        0.0,
        MatMut::new(hidden, batch, mh, mh),
        Epilogue::BiasRelu(w.b1),
        scratch,
    )?;
    for (j, z) in logits
        .chunks_exact_mut((batch * o).max(1))
        .take(members)
        .enumerate()
    {
        let hj = if batch == 0 {
            &hidden[..0]
        } else {
            &hidden[j * h..]
        };
        gemm::gemm(
            1.0,
            MatRef::new(hj, batch, h, mh),
            MatRef::new(&w.w2[j * o * h..(j + 1) * o * h], o, h, h).t(),
            0.0,
            MatMut::new(z, batch, o, o),
            Epilogue::Bias(&w.b2[j * o..(j + 1) * o]),
            scratch,
        )?;
    }
    Ok(())
}

/// Floats of GEMM scratch [`forward_delta_member`] needs on `batch` rows.
pub fn delta_scratch_len(layout: &Layout, batch: usize) -> usize {
    gemm::scratch_len(batch, layout.hidden, layout.inputs).max(gemm::scratch_len(
        batch,
        layout.outputs,
        layout.hidden,
    ))
}

/// Logits (`B x outputs`) of the network `theta + delta` (full-rank `delta`, length P), given
/// the mean's pre-activation `pre` (`B x H`): `relu(pre + X dW1^T + db1)` then
/// `h W2^T + h dW2^T + b2 + db2`, so `theta + delta` is never formed. `hidden` (`B x H`) and
/// `bias` (`outputs`) are scratch. Costs `2 B (inputs H + 2 H outputs)` flops.
#[allow(clippy::too_many_arguments)]
pub fn forward_delta_member(
    layout: &Layout,
    theta: &[f32],
    pre: &[f32],
    x: &[f32],
    delta: &[f32],
    hidden: &mut [f32],
    bias: &mut [f32],
    logits: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), MlpError> {
    let p = layout.split(theta)?;
    let d = layout.split(delta)?;
    let (i, h, o) = (layout.inputs, layout.hidden, layout.outputs);
    let batch = pre.len() / h.max(1);
    check_len("input batch", x.len(), batch * i)?;
    check_len("hidden", hidden.len(), batch * h)?;
    check_len("logits", logits.len(), batch * o)?;
    check_len("bias", bias.len(), o)?;
    hidden.copy_from_slice(pre);
    gemm::gemm(
        1.0,
        MatRef::new(x, batch, i, i),
        MatRef::new(d.w1, h, i, i).t(),
        1.0,
        MatMut::new(hidden, batch, h, h),
        Epilogue::BiasRelu(d.b1),
        scratch,
    )?;
    bias.iter_mut()
        .zip(p.b2.iter().zip(d.b2))
        .for_each(|(s, (a, b))| *s = a + b);
    gemm::gemm(
        1.0,
        MatRef::new(hidden, batch, h, h),
        MatRef::new(p.w2, o, h, h).t(),
        0.0,
        MatMut::new(logits, batch, o, o),
        Epilogue::Bias(bias),
        scratch,
    )?;
    gemm::gemm(
        1.0,
        MatRef::new(hidden, batch, h, h),
        MatRef::new(d.w2, o, h, h).t(),
        1.0,
        MatMut::new(logits, batch, o, o),
        Epilogue::None,
        scratch,
    )?;
    Ok(())
}

/// One low-rank member's factors (see `perturb`): `a1` `H x r`, `b1` `r x inputs`, `db1` `H`,
/// `a2` `outputs x r`, `b2` `r x H`, `db2` `outputs`.
#[derive(Clone, Copy, Debug)]
pub struct Factors<'a> {
    /// `H x r`.
    pub a1: &'a [f32],
    /// `H`.
    pub db1: &'a [f32],
    /// `outputs x r`.
    pub a2: &'a [f32],
    /// `r x H`.
    pub b2: &'a [f32],
    /// `outputs`.
    pub db2: &'a [f32],
}

/// Buffers of one low-rank member's forward pass.
#[derive(Debug)]
pub struct LowRankBuffers<'a> {
    /// `B x H`: the member's hidden activation.
    pub hidden: &'a mut [f32],
    /// `B x r`: `hidden b2^T`.
    pub proj: &'a mut [f32],
    /// `outputs`: `b2 + db2`.
    pub bias: &'a mut [f32],
    /// GEMM scratch ([`low_rank_scratch_len`]).
    pub scratch: &'a mut [f32],
}

/// Floats of GEMM scratch one low-rank member's forward needs.
pub fn low_rank_scratch_len(layout: &Layout, batch: usize, rank: usize) -> usize {
    let (h, o) = (layout.hidden, layout.outputs);
    [
        gemm::scratch_len(batch, h, rank),
        gemm::scratch_len(batch, o, h),
        gemm::scratch_len(batch, rank, h),
        gemm::scratch_len(batch, o, rank),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// Logits (`B x outputs`) of the network `theta + low-rank perturbation`, given the mean's
/// pre-activation `pre` (`B x H`) and this member's projections `xb` (`B` rows of `r`, leading
/// dimension `ld_xb`: `X b1^T`). Costs `2 B (H r + H outputs + H r + r outputs)` flops.
#[allow(clippy::too_many_arguments)]
pub fn forward_low_rank_member(
    layout: &Layout,
    rank: usize,
    theta: &[f32],
    pre: &[f32],
    xb: &[f32],
    ld_xb: usize,
    f: Factors<'_>,
    buf: LowRankBuffers<'_>,
    logits: &mut [f32],
) -> Result<(), MlpError> {
    let p = layout.split(theta)?;
    let (h, o, r) = (layout.hidden, layout.outputs, rank);
    let batch = pre.len() / h.max(1);
    check_len("hidden", buf.hidden.len(), batch * h)?;
    check_len("projection", buf.proj.len(), batch * r)?;
    check_len("logits", logits.len(), batch * o)?;
    // hidden = relu(pre + xb a1^T + db1).
    buf.hidden.copy_from_slice(pre);
    gemm::gemm(
        1.0,
        MatRef::new(xb, batch, r, ld_xb),
        MatRef::new(f.a1, h, r, r).t(),
        1.0,
        MatMut::new(buf.hidden, batch, h, h),
        Epilogue::BiasRelu(f.db1),
        buf.scratch,
    )?;
    // logits = hidden W2^T + (b2 + db2) + (hidden b2f^T) a2^T.
    buf.bias
        .iter_mut()
        .zip(p.b2.iter().zip(f.db2))
        .for_each(|(s, (a, b))| *s = a + b);
    gemm::gemm(
        1.0,
        MatRef::new(buf.hidden, batch, h, h),
        MatRef::new(p.w2, o, h, h).t(),
        0.0,
        MatMut::new(logits, batch, o, o),
        Epilogue::Bias(buf.bias),
        buf.scratch,
    )?;
    gemm::gemm(
        1.0,
        MatRef::new(buf.hidden, batch, h, h),
        MatRef::new(f.b2, r, h, h).t(),
        0.0,
        MatMut::new(buf.proj, batch, r, r),
        Epilogue::None,
        buf.scratch,
    )?;
    gemm::gemm(
        1.0,
        MatRef::new(buf.proj, batch, r, r),
        MatRef::new(f.a2, o, r, r).t(),
        1.0,
        MatMut::new(logits, batch, o, o),
        Epilogue::None,
        buf.scratch,
    )?;
    Ok(())
}
