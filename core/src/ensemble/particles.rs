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

/// Floats of GEMM scratch [`forward_delta_member`] needs on `batch` rows: the products of a
/// forward pass ([`Layout::forward_scratch_len`]).
pub fn delta_scratch_len(layout: &Layout, batch: usize) -> usize {
    layout.forward_scratch_len(batch)
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

/// Floats of scratch [`forward_low_rank_member`] needs: a hidden row, the `(outputs + r) x H`
/// rows of `[W2; b2]` and, above rank 1, `a1` transposed (`r x H`). O(1).
pub fn low_rank_scratch_len(layout: &Layout, rank: usize) -> usize {
    let a1t = if rank > 1 { rank } else { 0 };
    layout.hidden * (1 + layout.outputs + rank + a1t)
}

/// A rank of at least 1 (0 is full rank, not a low-rank member), else the error naming `what`.
pub(super) fn check_low_rank(what: &'static str, rank: usize) -> Result<(), MlpError> {
    if rank == 0 {
        return Err(MlpError::Length {
            what,
            expected: 1,
            found: 0,
        });
    }
    Ok(())
}

/// Checks what a low-rank member's pass on a batch of `batch` reads besides the mean: a rank of
/// at least 1, the factors' lengths for `layout` and `rank`, and projections `xb` of `batch` rows
/// of `rank` with leading dimension `ld_xb`. O(1).
pub(super) fn check_low_rank_member(
    layout: &Layout,
    rank: usize,
    batch: usize,
    xb: &[f32],
    ld_xb: usize,
    f: &Factors<'_>,
) -> Result<(), MlpError> {
    let (h, o, r) = (layout.hidden, layout.outputs, rank);
    check_low_rank("a1 of a rank-0 member (low rank starts at 1)", r)?;
    check_len("a1", f.a1.len(), h * r)?;
    check_len("db1", f.db1.len(), h)?;
    check_len("a2", f.a2.len(), o * r)?;
    check_len("b2", f.b2.len(), r * h)?;
    check_len("db2", f.db2.len(), o)?;
    if batch > 0 && ld_xb < r {
        return Err(MlpError::Length {
            what: "projections' leading dimension",
            expected: r,
            found: ld_xb,
        });
    }
    let xb_len = if batch == 0 { 0 } else { (batch - 1) * ld_xb + r };
    if xb.len() < xb_len {
        return Err(MlpError::Length {
            what: "projections",
            expected: xb_len,
            found: xb.len(),
        });
    }
    Ok(())
}

/// Logits (`B x outputs`) of the network `theta + low-rank perturbation`, given the mean's
/// pre-activation `pre` (`B x H`) and this member's projections `xb` (`B` rows of `r`, leading
/// dimension `ld_xb`: `X b1^T`); `scratch` holds [`low_rank_scratch_len`] floats. Costs
/// `2 B (2 H r + H outputs + r outputs)` flops, one example at a time: the member's hidden row
/// is built (`relu(pre_b + db1 + xb_b a1^T)`), then each logit is `b2 + db2 + W2 h + (h b2^T)
/// a2^T`, the dot products over H in 8 partial sums, eight rows of `[W2; b2]` (copied once per
/// call) side by side. Everything stays in L1. Runs on `path` (`gemm::active_kernel()` for the
/// best this CPU has): 8 lanes at a time in its AVX build where `path` runs it, else the
/// portable build, with the same IEEE results on every path.
#[allow(clippy::too_many_arguments)]
pub fn forward_low_rank_member(
    path: gemm::KernelPath,
    layout: &Layout,
    rank: usize,
    theta: &[f32],
    pre: &[f32],
    xb: &[f32],
    ld_xb: usize,
    f: Factors<'_>,
    scratch: &mut [f32],
    logits: &mut [f32],
) -> Result<(), MlpError> {
    let p = layout.split(theta)?;
    let (h, o, r) = (layout.hidden, layout.outputs, rank);
    let batch = pre.len() / h.max(1);
    check_len("pre-activation", pre.len(), batch * h)?;
    check_len("low-rank scratch", scratch.len(), low_rank_scratch_len(layout, r))?;
    check_len("logits", logits.len(), batch * o)?;
    check_low_rank_member(layout, r, batch, xb, ld_xb, &f)?;
    let (hidden, rest) = scratch.split_at_mut(h);
    let (rows, a1t) = rest.split_at_mut((o + r) * h);
    let (w2_rows, b2_rows) = rows.split_at_mut(o * h);
    w2_rows.copy_from_slice(p.w2);
    b2_rows.copy_from_slice(f.b2);
    if r > 1 {
        transpose_a1(f.a1, r, a1t);
    }
    let member = LowRankMember {
        rows,
        b2: p.b2,
        f,
        a1t,
        rank: r,
    };
    #[cfg(target_arch = "x86_64")]
    if path.runs_avx2_build() {
        // SAFETY: runs_avx2_build checked that the CPU has AVX2, hence AVX.
        unsafe { avx::rows(&member, pre, xb, ld_xb, hidden, logits) };
        return Ok(());
    }
    let _ = path;
    low_rank_rows::<Portable>(&member, pre, xb, ld_xb, hidden, logits);
    Ok(())
}

/// Writes `a1` (`H x r`, row-major) transposed to the front of `a1t` (`r x H`), so that each
/// rank's correction of a hidden row is a contiguous pass over H. O(H r).
pub(super) fn transpose_a1(a1: &[f32], r: usize, a1t: &mut [f32]) {
    let h = a1.len() / r.max(1);
    for (j, a1_j) in a1.chunks_exact(r.max(1)).enumerate() {
        for (q, &a) in a1_j.iter().enumerate() {
            a1t[q * h + j] = a;
        }
    }
}

/// `out = relu(((pre + db1) + x_0 a1_0) + x_1 a1_1 ...)`: a member's hidden row above rank 1,
/// with `x` its `r` projections on the example and `a1t` its `a1` transposed (`r x H`), a pass
/// over H per rank (a NaN stays a NaN). Inlined, so that each build vectorises it for its
/// instruction set. O(H r).
#[inline(always)]
pub(super) fn hidden_rank_r(pre: &[f32], db1: &[f32], a1t: &[f32], x: &[f32], out: &mut [f32]) {
    let h = out.len();
    for ((v, &p), &d) in out.iter_mut().zip(pre).zip(db1) {
        *v = p + d;
    }
    for (&x, a1_q) in x.iter().zip(a1t.chunks_exact(h.max(1))) {
        for (v, &a) in out.iter_mut().zip(a1_q) {
            *v += x * a;
        }
    }
    out.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
}

/// What one low-rank member's rows need besides the batch: `[W2; b2]` (`(outputs + r) x H`), the
/// mean's output bias, the factors and, above rank 1, `a1` transposed (`r x H`).
struct LowRankMember<'a> {
    rows: &'a [f32],
    b2: &'a [f32],
    f: Factors<'a>,
    a1t: &'a [f32],
    rank: usize,
}

/// How the row loop does its two kernels: the hidden row of a rank-1 member and the dot products
/// over H. [`Portable`] is plain Rust; the AVX build does the same operations in the same order.
trait RowKernels {
    /// `out_j = relu((pre_j + db1_j) + x a1_j)` (a NaN stays a NaN).
    fn hidden_rank1(pre: &[f32], db1: &[f32], a1: &[f32], x: f32, out: &mut [f32]);
    /// `out_g = dot8(row g of mat, h)` for each of the `out.len()` (at most 8) rows of `mat`
    /// (`out.len() x h.len()`), computed side by side.
    fn dots(mat: &[f32], h: &[f32], out: &mut [f32]);
}

/// `sum_i a_i b_i` in 8 partial sums (lane `i mod 8`), reduced as `((l0 + l4) + (l2 + l6)) +
/// ((l1 + l5) + (l3 + l7))`, then the tail past the last multiple of 8 added in order.
#[inline(always)]
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let (a8, a_tail) = a.as_chunks::<8>();
    let (b8, b_tail) = b.as_chunks::<8>();
    let mut l = [0f32; 8];
    for (x, y) in a8.iter().zip(b8) {
        for i in 0..8 {
            l[i] += x[i] * y[i];
        }
    }
    let mut sum = reduce8(&l);
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

/// The sum of 8 partial sums `l`, as `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`: the
/// order in which the AVX kernels reduce their 8 lanes.
#[inline(always)]
pub(super) fn reduce8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// Rows whose dot products with the hidden row are computed side by side.
pub(super) const GROUP: usize = 8;

/// `out_g = dot8(row g of mat, h)` for the `out.len()` rows of `mat` (`out.len() x h.len()`,
/// at most [`GROUP`] rows), with the portable kernels: what `avx::dots` computes, bit for bit.
/// O(out.len() h).
pub(super) fn dots_portable(mat: &[f32], h: &[f32], out: &mut [f32]) {
    debug_assert!(out.len() <= GROUP, "{} rows, more than GROUP", out.len());
    Portable::dots(mat, h, out);
}

/// The reference kernels, in plain Rust.
struct Portable;

impl RowKernels for Portable {
    #[inline(always)]
    fn hidden_rank1(pre: &[f32], db1: &[f32], a1: &[f32], x: f32, out: &mut [f32]) {
        for (((o, &p), &d), &a) in out.iter_mut().zip(pre).zip(db1).zip(a1) {
            let t = (p + d) + x * a;
            *o = if t < 0.0 { 0.0 } else { t };
        }
    }

    #[inline(always)]
    fn dots(mat: &[f32], h: &[f32], out: &mut [f32]) {
        for (o, row) in out.iter_mut().zip(mat.chunks_exact(h.len().max(1))) {
            *o = dot8(row, h);
        }
    }
}

/// The rows of [`forward_low_rank_member`] with kernels `K`; the lengths are checked by the
/// caller.
#[inline(always)]
fn low_rank_rows<K: RowKernels>(
    m: &LowRankMember<'_>,
    pre: &[f32],
    xb: &[f32],
    ld_xb: usize,
    hidden: &mut [f32],
    logits: &mut [f32],
) {
    let (h, r) = (hidden.len(), m.rank);
    let o = m.b2.len();
    let rows = pre.chunks_exact(h.max(1)).zip(logits.chunks_exact_mut(o.max(1)));
    for (b, (pre_b, z)) in rows.enumerate() {
        let xb_b = &xb[b * ld_xb..b * ld_xb + r];
        if r == 1 {
            K::hidden_rank1(pre_b, m.f.db1, m.f.a1, xb_b[0], hidden);
        } else {
            hidden_rank_r(pre_b, m.f.db1, m.a1t, xb_b, hidden);
        }
        // The dot products of W2's o rows, then of b2's r rows, GROUP at a time: logit k is
        // b2 + db2 + W2_k h, then gets (b2_q h) a2_kq for q = 0, 1, ... in turn.
        let mut first = 0;
        while first < o + r {
            let n = GROUP.min(o + r - first);
            let mut sums = [0f32; GROUP];
            K::dots(&m.rows[first * h..(first + n) * h], hidden, &mut sums[..n]);
            for (i, &sum) in (first..).zip(&sums[..n]) {
                if i < o {
                    z[i] = (m.b2[i] + m.f.db2[i]) + sum;
                } else {
                    let q = i - o;
                    for (k, zk) in z.iter_mut().enumerate() {
                        *zk += sum * m.f.a2[k * r + q];
                    }
                }
            }
            first += n;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx {
    use core::arch::x86_64::{
        __m256, _CMP_LT_OQ, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps,
        _mm256_add_ps, _mm256_blendv_ps, _mm256_castps256_ps128, _mm256_cmp_ps, _mm256_extractf128_ps,
        _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::{LowRankMember, RowKernels, low_rank_rows};

    /// The AVX kernels: 8 lanes, the portable kernels' operations in the same order.
    struct Avx;

    /// 8 floats from a chunk.
    #[inline]
    #[target_feature(enable = "avx")]
    fn load(x: &[f32; 8]) -> __m256 {
        // SAFETY: `x` holds the 8 floats of the unaligned load; the CPU has AVX (this function's
        // target feature).
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }

    impl RowKernels for Avx {
        #[inline(always)]
        fn hidden_rank1(pre: &[f32], db1: &[f32], a1: &[f32], x: f32, out: &mut [f32]) {
            // SAFETY: only reached from `rows`, compiled for (and called on) a CPU with AVX.
            unsafe { hidden_rank1(pre, db1, a1, x, out) }
        }

        #[inline(always)]
        fn dots(mat: &[f32], h: &[f32], out: &mut [f32]) {
            // SAFETY: only reached from `rows`, compiled for (and called on) a CPU with AVX.
            unsafe {
                match out.len() {
                    1 => dots_n::<1>(mat, h, out),
                    2 => dots_n::<2>(mat, h, out),
                    3 => dots_n::<3>(mat, h, out),
                    4 => dots_n::<4>(mat, h, out),
                    5 => dots_n::<5>(mat, h, out),
                    6 => dots_n::<6>(mat, h, out),
                    7 => dots_n::<7>(mat, h, out),
                    _ => dots_n::<8>(mat, h, out),
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx")]
    fn hidden_rank1(pre: &[f32], db1: &[f32], a1: &[f32], x: f32, out: &mut [f32]) {
        let n = out.len().min(pre.len()).min(db1.len()).min(a1.len());
        let (o8, _) = out[..n].as_chunks_mut::<8>();
        let (p8, p_tail) = pre[..n].as_chunks::<8>();
        let (d8, d_tail) = db1[..n].as_chunks::<8>();
        let (a8, a_tail) = a1[..n].as_chunks::<8>();
        let (xs, zero) = (_mm256_set1_ps(x), _mm256_setzero_ps());
        for (((o, p), d), a) in o8.iter_mut().zip(p8).zip(d8).zip(a8) {
            let t = _mm256_add_ps(_mm256_add_ps(load(p), load(d)), _mm256_mul_ps(xs, load(a)));
            // t < 0 -> 0; a NaN compares false and stays.
            let r = _mm256_blendv_ps(t, zero, _mm256_cmp_ps::<_CMP_LT_OQ>(t, zero));
            // SAFETY: `o` holds the 8 floats of the unaligned store; the CPU has AVX.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), r) };
        }
        let done = 8 * p8.len();
        let tails = out[done..n].iter_mut().zip(p_tail).zip(d_tail).zip(a_tail);
        for (((o, &p), &d), &a) in tails {
            let t = (p + d) + x * a;
            *o = if t < 0.0 { 0.0 } else { t };
        }
    }

    /// `out_g = dot8(row g of mat, h)` for the N rows of `mat` (`N x h.len()`), with N
    /// accumulators side by side (one dependency chain each), every sum in `dot8`'s order.
    /// Nothing is written when the lengths are not those.
    #[inline]
    #[target_feature(enable = "avx")]
    fn dots_n<const N: usize>(mat: &[f32], h: &[f32], out: &mut [f32]) {
        let n = h.len();
        if mat.len() != N * n || out.len() != N {
            return;
        }
        let chunks = n / 8;
        let base = mat.as_ptr();
        let mut acc = [_mm256_setzero_ps(); N];
        for c in 0..chunks {
            // SAFETY: 8 c + 8 <= n = h.len(): the 8 floats of the unaligned load are h's; the
            // CPU has AVX (this function's target feature).
            let hv = unsafe { _mm256_loadu_ps(h.as_ptr().add(8 * c)) };
            for (g, a) in acc.iter_mut().enumerate() {
                // SAFETY: row g is mat[g n .. g n + n] (mat holds N n floats), and 8 c + 8 <= n.
                let rv = unsafe { _mm256_loadu_ps(base.add(g * n + 8 * c)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(rv, hv));
            }
        }
        let done = 8 * chunks;
        for ((a, row), o) in acc.iter().zip(mat.chunks_exact(n.max(1))).zip(out) {
            let mut sum = lanes_sum(*a);
            for (x, y) in row[done..].iter().zip(&h[done..]) {
                sum += x * y;
            }
            *o = sum;
        }
    }

    /// The sum of the 8 lanes of `a` in [`super::reduce8`]'s order: `[l0 + l4, l1 + l5, l2 + l6,
    /// l3 + l7]`, then `[(l0 + l4) + (l2 + l6), (l1 + l5) + (l3 + l7)]`, then their sum.
    #[inline]
    #[target_feature(enable = "avx")]
    pub(in crate::ensemble) fn lanes_sum(a: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let t = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<1>(t, t)))
    }

    /// [`super::dots_portable`] with the AVX kernels, at most [`super::GROUP`] rows side by
    /// side.
    #[target_feature(enable = "avx")]
    pub(in crate::ensemble) fn dots(mat: &[f32], h: &[f32], out: &mut [f32]) {
        debug_assert!(out.len() <= super::GROUP, "{} rows, more than GROUP", out.len());
        <Avx as RowKernels>::dots(mat, h, out);
    }

    /// [`low_rank_rows`] with the AVX kernels.
    #[target_feature(enable = "avx")]
    pub(super) fn rows(
        m: &LowRankMember<'_>,
        pre: &[f32],
        xb: &[f32],
        ld_xb: usize,
        hidden: &mut [f32],
        logits: &mut [f32],
    ) {
        low_rank_rows::<Avx>(m, pre, xb, ld_xb, hidden, logits);
    }
}
