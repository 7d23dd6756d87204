//! The logit-form coefficient of a low-rank member, from its hidden rows alone.
//!
//! In the logit form a member's coefficient is `c_k = sum_b <z_kb - z_b, g_b>`: only the
//! projection of its logits on the innovation counts, not the logits. With `v_b = W2^T g_b`
//! (`B x H`, once per step for every member: [`project_innovation`]) and the member's output
//! layer `W2 + a2 b2^T` (the factors scaled as [`super::perturb::Perturbations::fill_factors`]
//! draws them),
//!
//! `c_k = sum_b <h_kb - h_b, v_b> + sum_b sum_q (b2_q . h_kb) (a2_q . g_b) + <db2, sum_b g_b>`,
//!
//! where `h_kb = relu((pre_b + db1) + (x_b b1^T) a1^T)` is the member's hidden row and `h_b =
//! relu(pre_b)` the mean's. That is `1 + r` dot products over H per example instead of the
//! `outputs + r` of the member's logits ([`super::particles::forward_low_rank_member`]), and
//! the hidden rows' difference is taken before its sum, so that the small change a member makes
//! is not the difference of two large f32 sums. Rank 1, the hidden row is never stored: each 8
//! of its entries meet `v_b` and `b2` in registers (AVX CPUs, chosen like the GEMM kernels) or
//! in 8 partial sums (portable), with the same IEEE results on every path. Two members are
//! computed together there ([`low_rank_logit_coefficients`] with `N = 2`), so each 8 entries of
//! `pre_b` and `v_b` are loaded once for both, and their sums are independent chains.

use super::particles::{self, Factors, check_low_rank_member, reduce8};
use crate::gemm;
use crate::mlp::{Layout, MlpError, check_len};

/// What every member's coefficient reads of the innovation `G` (`B x outputs`), computed once
/// per step by [`project_innovation`].
#[derive(Clone, Copy, Debug)]
pub struct ProjectedInnovation<'a> {
    /// `V = G W2`, `B x H`: each example's innovation through the mean's output weights.
    pub v: &'a [f32],
    /// `G^T`, `outputs x B`.
    pub gt: &'a [f32],
    /// `sum_b g_b` (`outputs`), each summed in f64 and rounded once.
    pub sums: &'a [f32],
}

/// Floats [`project_innovation`] writes for a batch of `batch`: `B (H + outputs) + outputs`.
/// O(1).
pub fn projected_innovation_len(layout: &Layout, batch: usize) -> usize {
    batch * (layout.hidden + layout.outputs) + layout.outputs
}

/// The [`ProjectedInnovation`] of `innovation` (`B x outputs`) for the mean `theta`, written
/// into `out` ([`projected_innovation_len`] floats): `v_bj = sum_o g_bo W2_oj` added in the
/// order of o, `G^T`, and the column sums of `G`. O(B outputs H).
pub fn project_innovation<'a>(
    layout: &Layout,
    theta: &[f32],
    innovation: &[f32],
    out: &'a mut [f32],
) -> Result<ProjectedInnovation<'a>, MlpError> {
    let p = layout.split(theta)?;
    let (h, o) = (layout.hidden, layout.outputs);
    let batch = innovation.len() / o.max(1);
    check_len("innovation", innovation.len(), batch * o)?;
    check_len(
        "projected innovation",
        out.len(),
        projected_innovation_len(layout, batch),
    )?;
    let (v, rest) = out.split_at_mut(batch * h);
    let (gt, sums) = rest.split_at_mut(o * batch);
    let rows = innovation.chunks_exact(o.max(1));
    for (b, g) in rows.clone().enumerate() {
        for (k, &gk) in g.iter().enumerate() {
            gt[k * batch + b] = gk;
        }
    }
    for (v_b, g) in v.chunks_exact_mut(h.max(1)).zip(rows) {
        v_b.fill(0.0);
        for (&gk, w2_row) in g.iter().zip(p.w2.chunks_exact(h.max(1))) {
            for (vj, &w) in v_b.iter_mut().zip(w2_row) {
                *vj += gk * w;
            }
        }
    }
    for (k, sum) in sums.iter_mut().enumerate() {
        let column = &gt[k * batch..(k + 1) * batch];
        *sum = column.iter().map(|&g| f64::from(g)).sum::<f64>() as f32;
    }
    Ok(ProjectedInnovation { v, gt, sums })
}

/// Floats of scratch [`low_rank_logit_coefficients`] needs for `members` members on a batch of
/// `batch` at rank `rank`: a hidden row, each member's `r x B` products `a2_q . g_b` and, above
/// rank 1, a member's `a1` transposed (`r x H`) and a second hidden row. O(1).
pub fn logit_coefficient_scratch_len(layout: &Layout, rank: usize, batch: usize, members: usize) -> usize {
    let rank_r = if rank > 1 { (rank + 1) * layout.hidden } else { 0 };
    layout.hidden + members * rank * batch + rank_r
}

/// The logit-form coefficients `sum_b <z_kb - z_b, g_b>` (f64) of the `N` members with factors
/// `f[e]` and rank `rank`, given the mean's pre-activation `pre` (`B x H`), each member's
/// projections `xb[e]` (`B` rows of `r`, leading dimension `ld_xb`: `X b1^T`) and the step's
/// [`ProjectedInnovation`] `g`; `scratch` holds [`logit_coefficient_scratch_len`] floats for
/// `N` members. Costs, per member, `2 B H (2 + 2 r)` flops plus `2 B r outputs` for `a2_q .
/// g_b`, against `2 B H (2 r + outputs + r)` for the member's logits; the sum over the batch is
/// in f64. Each member's coefficient is the same, bit for bit, whatever `N` and whichever
/// members it comes with. At rank 1 the `N` members are computed together, so each example's
/// rows of `pre` and `V` are read once for all of them and their sums run side by side (the
/// one-member loop waited on its two chains of sums and read those rows again for every
/// member). Runs on `path` (`gemm::active_kernel()` for the best this CPU has):
/// its AVX build where `path` runs it, else the portable one, with the same result on every
/// path.
#[allow(clippy::too_many_arguments)]
pub fn low_rank_logit_coefficients<const N: usize>(
    path: gemm::KernelPath,
    layout: &Layout,
    rank: usize,
    pre: &[f32],
    xb: [&[f32]; N],
    ld_xb: usize,
    f: [Factors<'_>; N],
    g: &ProjectedInnovation<'_>,
    scratch: &mut [f32],
) -> Result<[f64; N], MlpError> {
    let (h, o, r) = (layout.hidden, layout.outputs, rank);
    let batch = g.gt.len() / o.max(1);
    check_len("innovation's transpose", g.gt.len(), batch * o)?;
    check_len("innovation's sums", g.sums.len(), o)?;
    check_len("pre-activation", pre.len(), batch * h)?;
    check_len("projected innovation", g.v.len(), batch * h)?;
    check_len(
        "coefficient scratch",
        scratch.len(),
        logit_coefficient_scratch_len(layout, r, batch, N),
    )?;
    for (xb, f) in xb.iter().zip(&f) {
        check_low_rank_member(layout, r, batch, xb, ld_xb, f)?;
    }
    let (hk, rest) = scratch.split_at_mut(h);
    let per_member = r * batch;
    let (a2g, a1t) = rest.split_at_mut(N * per_member);
    let mut c = [0f64; N];
    for ((c, f), a2g) in c.iter_mut().zip(&f).zip(a2g.chunks_exact_mut(per_member.max(1))) {
        // a2g[q B + b] = a2_q . g_b, added in the order of o.
        for (q, row) in a2g.chunks_exact_mut(batch.max(1)).take(r).enumerate() {
            row.fill(0.0);
            for (a2_o, gt_o) in f.a2.chunks_exact(r).zip(g.gt.chunks_exact(batch.max(1))) {
                for (v, &gk) in row.iter_mut().zip(gt_o) {
                    *v += a2_o[q] * gk;
                }
            }
        }
        *c = f
            .db2
            .iter()
            .zip(g.sums)
            .map(|(&d, &s)| f64::from(d) * f64::from(s))
            .sum();
    }
    let a2g = &*a2g;
    if r == 1 {
        let members = Rank1Members {
            pre,
            v: g.v,
            xb,
            ld_xb,
            a2g: core::array::from_fn(|e| &a2g[e * batch..(e + 1) * batch]),
            f,
            hidden: h,
        };
        return Ok(rank1_sums(path, c, &members));
    }
    let members = RankRMembers {
        pre,
        v: g.v,
        xb,
        ld_xb,
        a2g,
        f,
        hidden: h,
        rank: r,
    };
    let (a1t, diff_row) = a1t.split_at_mut(r * h);
    Ok(rank_r_sums(path, c, &members, [hk, &mut diff_row[..h]], a1t))
}

/// `t` if it is not below 0 (a NaN stays a NaN), else 0.
#[inline(always)]
fn relu(t: f32) -> f32 {
    if t < 0.0 { 0.0 } else { t }
}

/// What `N` members of rank above 1 read, checked by [`low_rank_logit_coefficients`]: the mean's
/// pre-activation and `V` (`B x H` each), each member's projections `xb` (example b's `r` at `b
/// ld_xb`), all members' `a2g` (member e's `a2_q . g_b` at `e r B + q B + b`) and factors.
struct RankRMembers<'a, const N: usize> {
    pre: &'a [f32],
    v: &'a [f32],
    xb: [&'a [f32]; N],
    ld_xb: usize,
    a2g: &'a [f32],
    f: [Factors<'a>; N],
    hidden: usize,
    rank: usize,
}

/// `c[e]` plus, example after example, member e's `<h_b - relu(pre_b), v_b> + sum_q <h_b,
/// b2_q> (a2_q . g_b)` in f64, with `h_b = relu((pre_b + db1) + sum_q (X b1^T)_bq a1_q)` (the
/// ranks added in order) and each dot product over H in [`lanes8`]'s order: where `path` runs
/// the AVX kernels, the loops compiled for AVX and the dot products on the AVX row kernels,
/// else both portable (the same operations, so the same bits); the path is chosen once for the
/// batch. `rows` are two hidden rows (H each: `h_b` and `h_b - relu(pre_b)`) and `a1t` a
/// member's `a1` transposed (`r x H`), so that each rank's correction is a contiguous pass over
/// H. O(N B H r).
fn rank_r_sums<const N: usize>(
    path: gemm::KernelPath,
    c: [f64; N],
    m: &RankRMembers<'_, N>,
    rows: [&mut [f32]; 2],
    a1t: &mut [f32],
) -> [f64; N] {
    #[cfg(target_arch = "x86_64")]
    if path.runs_avx2_build() {
        // SAFETY: runs_avx2_build checked that the CPU has AVX2, hence AVX.
        return unsafe { avx::rank_r_sums(c, m, rows, a1t) };
    }
    let _ = path;
    rank_r_fold(c, m, rows, a1t, particles::dots_portable)
}

/// The loops of [`rank_r_sums`], inlined into each build so that the compiler vectorises the
/// passes over H for its instruction set, with `dots` (`out_g = <row g of mat, h>` for at most
/// [`particles::GROUP`] rows, in [`lanes8`]'s order) the build's dot products.
#[inline(always)]
fn rank_r_fold<const N: usize>(
    mut c: [f64; N],
    m: &RankRMembers<'_, N>,
    rows: [&mut [f32]; 2],
    a1t: &mut [f32],
    dots: impl Fn(&[f32], &[f32], &mut [f32]),
) -> [f64; N] {
    let (h, r) = (m.hidden, m.rank);
    let batch = m.pre.len() / h.max(1);
    let per_member = r * batch;
    let [hk, diff_row] = rows;
    for (e, (c, f)) in c.iter_mut().zip(&m.f).enumerate() {
        let a2g = &m.a2g[e * per_member..(e + 1) * per_member];
        particles::transpose_a1(f.a1, r, a1t);
        let examples = m.pre.chunks_exact(h.max(1)).zip(m.v.chunks_exact(h.max(1)));
        for (b, (pre_b, v_b)) in examples.enumerate() {
            let xb_b = &m.xb[e][b * m.ld_xb..b * m.ld_xb + r];
            particles::hidden_rank_r(pre_b, f.db1, a1t, xb_b, hk);
            for ((d, &t), &p) in diff_row.iter_mut().zip(&*hk).zip(pre_b) {
                *d = t - relu(p);
            }
            let mut diff = [0f32];
            dots(v_b, diff_row, &mut diff);
            *c += f64::from(diff[0]);
            let mut b2_h = [0f32; particles::GROUP];
            for (first, b2) in (0..r)
                .step_by(particles::GROUP)
                .zip(f.b2.chunks(particles::GROUP * h.max(1)))
            {
                let n = particles::GROUP.min(r - first);
                dots(b2, hk, &mut b2_h[..n]);
                for (q, &sum) in (first..).zip(&b2_h[..n]) {
                    *c += f64::from(sum) * f64::from(a2g[q * batch + b]);
                }
            }
        }
    }
    c
}

/// `K` sums over `j < n` of `term(j)`, each in 8 partial sums (term j into lane `j mod 8`, for
/// the whole groups of 8) reduced as [`reduce8`] does, then the remaining terms added in order:
/// the order of the AVX kernel's 8 lanes.
#[inline(always)]
fn lanes8<const K: usize>(n: usize, term: impl Fn(usize) -> [f32; K]) -> [f32; K] {
    let whole = n / 8 * 8;
    let mut lanes = [[0f32; 8]; K];
    for start in (0..whole).step_by(8) {
        for i in 0..8 {
            for (l, t) in lanes.iter_mut().zip(term(start + i)) {
                l[i] += t;
            }
        }
    }
    let mut sums = lanes.map(|l| reduce8(&l));
    for j in whole..n {
        for (s, t) in sums.iter_mut().zip(term(j)) {
            *s += t;
        }
    }
    sums
}

/// What `N` rank-1 members' coefficients read, checked by [`low_rank_logit_coefficients`]: the
/// mean's pre-activation and `V` (`B x H` each), and each member's projections `xb` (example
/// b's at `b ld_xb`), `a2g` (`a2 . g_b`, B) and factors.
struct Rank1Members<'a, const N: usize> {
    pre: &'a [f32],
    v: &'a [f32],
    xb: [&'a [f32]; N],
    ld_xb: usize,
    a2g: [&'a [f32]; N],
    f: [Factors<'a>; N],
    hidden: usize,
}

/// `c[e]` plus, example after example, member e's `<h_b - relu(pre_b), v_b> + <h_b, b2> (a2 .
/// g_b)` in f64, each pair of dot products over H in [`lanes8`]'s order; the path is chosen
/// once for the batch. O(N B H).
fn rank1_sums<const N: usize>(path: gemm::KernelPath, c: [f64; N], m: &Rank1Members<'_, N>) -> [f64; N] {
    #[cfg(target_arch = "x86_64")]
    if path == gemm::KernelPath::Avx512 && path.is_supported() {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { avx512::rank1_sums(c, m) };
    }
    #[cfg(target_arch = "x86_64")]
    if path.runs_avx2_build() {
        // SAFETY: runs_avx2_build checked that the CPU has AVX2, hence AVX.
        return unsafe { avx::rank1_sums(c, m) };
    }
    let _ = path;
    rank1_fold(c, m, |pre, v, x| {
        core::array::from_fn(|e| {
            let f = &m.f[e];
            let n = pre
                .len()
                .min(f.db1.len())
                .min(f.a1.len())
                .min(v.len())
                .min(f.b2.len());
            lanes8(n, |j| rank1_terms(pre, v, x[e], f, j))
        })
    })
}

/// Entry `j`'s terms of a rank-1 member's two sums over H: `[(h_j - relu(pre_j)) v_j, h_j
/// b2_j]` with `h_j = relu((pre_j + db1_j) + x a1_j)`.
#[inline(always)]
fn rank1_terms(pre: &[f32], v: &[f32], x: f32, f: &Factors<'_>, j: usize) -> [f32; 2] {
    let hk = relu((pre[j] + f.db1[j]) + x * f.a1[j]);
    [(hk - relu(pre[j])) * v[j], hk * f.b2[j]]
}

/// `sums` plus the terms of entries `rest` ([`rank1_terms`]), added in order: the vector
/// paths' tail past their whole groups of 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rank1_tail(
    mut sums: [f32; 2],
    pre: &[f32],
    v: &[f32],
    x: f32,
    f: &Factors<'_>,
    rest: core::ops::Range<usize>,
) -> [f32; 2] {
    for j in rest {
        let [d, w] = rank1_terms(pre, v, x, f, j);
        sums[0] += d;
        sums[1] += w;
    }
    sums
}

/// The batch loop of [`rank1_sums`] on either path: `c[e]` plus, example after example,
/// `diff + b2_h (a2 . g_b)` in f64, with member e's `[diff, b2_h]` the e-th of `pairs(pre_b,
/// v_b, x_b)` (`x_b` each member's projection).
#[inline(always)]
fn rank1_fold<const N: usize>(
    c: [f64; N],
    m: &Rank1Members<'_, N>,
    pairs: impl Fn(&[f32], &[f32], [f32; N]) -> [[f32; 2]; N],
) -> [f64; N] {
    let h = m.hidden.max(1);
    let rows = m.pre.chunks_exact(h).zip(m.v.chunks_exact(h));
    rows.enumerate().fold(c, |c, (b, (pre, v))| {
        m.add_example(c, b, pairs(pre, v, m.projections(b)))
    })
}

impl<const N: usize> Rank1Members<'_, N> {
    /// Each member's projection `x_b b1^T` of example `b`. O(N).
    fn projections(&self, b: usize) -> [f32; N] {
        self.xb.map(|xb| xb[b * self.ld_xb])
    }

    /// `c` plus each member's term of example `b` in f64, `diff + b2_h (a2 . g_b)`, from its
    /// `[diff, b2_h]` in `sums`: how every path adds an example. O(N).
    #[inline(always)]
    fn add_example(&self, c: [f64; N], b: usize, sums: [[f32; 2]; N]) -> [f64; N] {
        core::array::from_fn(|e| {
            let [diff, b2_h] = sums[e];
            c[e] + (f64::from(diff) + f64::from(b2_h) * f64::from(self.a2g[e][b]))
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use core::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_mul_ps, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_sub_ps,
    };

    use super::super::particles::avx::{dots, lanes_sum};
    use super::{Factors, Rank1Members, RankRMembers, rank_r_fold, rank1_fold, rank1_tail};

    /// [`super::rank1_sums`] with 8 lanes: the portable path's operations in the same order.
    #[target_feature(enable = "avx")]
    pub(super) fn rank1_sums<const N: usize>(c: [f64; N], m: &Rank1Members<'_, N>) -> [f64; N] {
        rank1_fold(c, m, |pre, v, x| rank1(pre, v, x, &m.f))
    }

    /// [`super::rank_r_sums`]'s loops compiled for AVX, with the AVX row kernels' dot
    /// products: the portable build's operations in the same order.
    #[target_feature(enable = "avx")]
    pub(super) fn rank_r_sums<const N: usize>(
        c: [f64; N],
        m: &RankRMembers<'_, N>,
        rows: [&mut [f32]; 2],
        a1t: &mut [f32],
    ) -> [f64; N] {
        rank_r_fold(c, m, rows, a1t, |mat, h, out| dots(mat, h, out))
    }

    /// `t` where it is not below 0, else +0, in one instruction: `vmaxps` returns its second
    /// operand `t` unless `0 > t`, so a NaN and a -0 stay as they are, as in the portable
    /// `relu`.
    #[inline]
    #[target_feature(enable = "avx")]
    fn relu8(t: __m256) -> __m256 {
        _mm256_max_ps(_mm256_setzero_ps(), t)
    }

    /// For each member e, `[<h - relu(pre), v>, <h, b2>]` for its rank-1 hidden row `h =
    /// relu((pre + db1) + x[e] a1)`, 8 lanes at a time, then the rest in order:
    /// [`super::lanes8`]'s order. Each 8 lanes of `pre` and `v` are loaded once for the `N`
    /// members.
    #[inline]
    #[target_feature(enable = "avx")]
    pub(super) fn rank1<const N: usize>(
        pre: &[f32],
        v: &[f32],
        x: [f32; N],
        f: &[Factors<'_>; N],
    ) -> [[f32; 2]; N] {
        let shortest = f
            .iter()
            .map(|f| f.db1.len().min(f.a1.len()).min(f.b2.len()))
            .min();
        let n = pre.len().min(v.len()).min(shortest.unwrap_or(0));
        let whole = n / 8 * 8;
        let xs = x.map(|x| _mm256_set1_ps(x));
        let (mut diff, mut b2_h) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        for j in (0..whole).step_by(8) {
            // SAFETY: j + 8 <= n, the shortest slice's length: the 8 floats of each unaligned
            // load are the slices'; the CPU has AVX (this function's target feature).
            let (p, vv) = unsafe {
                (
                    _mm256_loadu_ps(pre.as_ptr().add(j)),
                    _mm256_loadu_ps(v.as_ptr().add(j)),
                )
            };
            let relu_p = relu8(p);
            for e in 0..N {
                // SAFETY: as above, for member e's factors.
                let (d, a, w) = unsafe {
                    (
                        _mm256_loadu_ps(f[e].db1.as_ptr().add(j)),
                        _mm256_loadu_ps(f[e].a1.as_ptr().add(j)),
                        _mm256_loadu_ps(f[e].b2.as_ptr().add(j)),
                    )
                };
                let hk = relu8(_mm256_add_ps(_mm256_add_ps(p, d), _mm256_mul_ps(xs[e], a)));
                diff[e] = _mm256_add_ps(diff[e], _mm256_mul_ps(_mm256_sub_ps(hk, relu_p), vv));
                b2_h[e] = _mm256_add_ps(b2_h[e], _mm256_mul_ps(hk, w));
            }
        }
        core::array::from_fn(|e| {
            let f = &f[e];
            let sums = [lanes_sum(diff[e]), lanes_sum(b2_h[e])];
            rank1_tail(sums, pre, v, x[e], f, whole..n)
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::{
        __m512, _mm256_castps_pd, _mm256_loadu_ps, _mm512_add_ps, _mm512_broadcast_f64x4, _mm512_castpd_ps,
        _mm512_castps_pd, _mm512_castps256_ps512, _mm512_insertf64x4, _mm512_max_ps, _mm512_mul_ps,
        _mm512_permute_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_storeu_ps, _mm512_sub_ps,
    };

    use super::{Factors, Rank1Members, rank1_tail};

    /// [`super::rank1_sums`] two examples at a time, one in each 256-bit half of a zmm
    /// register: each half runs the AVX path's 8-lane operations for its example, so the sums
    /// are the same bit for bit, with half the instructions. An odd batch's last example runs
    /// the AVX path. The examples' terms reach `c` in order.
    #[target_feature(enable = "avx512f")]
    pub(super) fn rank1_sums<const N: usize>(mut c: [f64; N], m: &Rank1Members<'_, N>) -> [f64; N] {
        let h = m.hidden.max(1);
        let rows = m.pre.len().min(m.v.len()) / h;
        fn row(s: &[f32], b: usize, h: usize) -> &[f32] {
            &s[b * h..(b + 1) * h]
        }
        let mut b = 0;
        while b + 2 <= rows {
            let [first, second] = rank1_two(
                [row(m.pre, b, h), row(m.pre, b + 1, h)],
                [row(m.v, b, h), row(m.v, b + 1, h)],
                [m.projections(b), m.projections(b + 1)],
                &m.f,
            );
            c = m.add_example(c, b, first);
            c = m.add_example(c, b + 1, second);
            b += 2;
        }
        if b < rows {
            let x = m.projections(b);
            c = m.add_example(c, b, super::avx::rank1(row(m.pre, b, h), row(m.v, b, h), x, &m.f));
        }
        c
    }

    /// The 8 floats at `s[j..]` of each of two slices, the first in the low half.
    ///
    /// # Safety
    /// `j + 8` is within both slices.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn halves(s: [&[f32]; 2], j: usize) -> __m512 {
        // SAFETY: the caller guarantees 8 floats from `j` in each slice.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_ps(s[0].as_ptr().add(j)),
                _mm256_loadu_ps(s[1].as_ptr().add(j)),
            )
        };
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(_mm512_castps256_ps512(lo)),
            _mm256_castps_pd(hi),
        ))
    }

    /// The 8 floats at `s[j..]` in both halves.
    ///
    /// # Safety
    /// `j + 8` is within `s`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn both(s: &[f32], j: usize) -> __m512 {
        // SAFETY: the caller guarantees 8 floats from `j`.
        let v = unsafe { _mm256_loadu_ps(s.as_ptr().add(j)) };
        _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(v)))
    }

    /// `t` where it is not below 0, else +0, in one instruction: `vmaxps` returns its second
    /// operand `t` unless `0 > t`, so a NaN and a -0 stay as they are, as in the AVX path's
    /// `relu8`, lane for lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn relu16(t: __m512) -> __m512 {
        _mm512_max_ps(_mm512_setzero_ps(), t)
    }

    /// For examples `[b, b + 1]` (their rows `pre[i]`, `v[i]` and each member's projection
    /// `x[i][e]`), each member's `[<h - relu(pre), v>, <h, b2>]` as the AVX path's `rank1`
    /// computes it for one example: the same operations on the same 8 lanes, then the same
    /// reduction and tail.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rank1_two<const N: usize>(
        pre: [&[f32]; 2],
        v: [&[f32]; 2],
        x: [[f32; N]; 2],
        f: &[Factors<'_>; N],
    ) -> [[[f32; 2]; N]; 2] {
        let shortest = f
            .iter()
            .map(|f| f.db1.len().min(f.a1.len()).min(f.b2.len()))
            .min();
        let n = pre[0]
            .len()
            .min(pre[1].len())
            .min(v[0].len())
            .min(v[1].len())
            .min(shortest.unwrap_or(0));
        let whole = n / 8 * 8;
        // Member e's projection of example b in the low half, of b + 1 in the high half.
        let xs: [__m512; N] = core::array::from_fn(|e| {
            let (lo, hi) = ([x[0][e]; 8], [x[1][e]; 8]);
            // SAFETY: both arrays hold 8 floats.
            unsafe { halves([&lo, &hi], 0) }
        });
        let (mut diff, mut b2_h) = ([_mm512_setzero_ps(); N], [_mm512_setzero_ps(); N]);
        for j in (0..whole).step_by(8) {
            // SAFETY: j + 8 <= n, the shortest slice's length.
            let (p, vv) = unsafe { (halves(pre, j), halves(v, j)) };
            let relu_p = relu16(p);
            for e in 0..N {
                // SAFETY: as above, for member e's factors.
                let (d, a, w) = unsafe { (both(f[e].db1, j), both(f[e].a1, j), both(f[e].b2, j)) };
                let hk = relu16(_mm512_add_ps(_mm512_add_ps(p, d), _mm512_mul_ps(xs[e], a)));
                diff[e] = _mm512_add_ps(diff[e], _mm512_mul_ps(_mm512_sub_ps(hk, relu_p), vv));
                b2_h[e] = _mm512_add_ps(b2_h[e], _mm512_mul_ps(hk, w));
            }
        }
        let reduced: [[[f32; 2]; 2]; N] = core::array::from_fn(|e| lane_sums(diff[e], b2_h[e]));
        [0, 1].map(|i| {
            core::array::from_fn(|e| rank1_tail(reduced[e][i], pre[i], v[i], x[i][e], &f[e], whole..n))
        })
    }

    /// The AVX path's `lanes_sum` of each 256-bit half of `d` and of `w`, all four at once:
    /// `[[d_0, w_0], [d_1, w_1]]` for halves 0 and 1. Each result is made of the same additions
    /// of the same lanes: the two 128-bit quarters of a half, then lanes 0 + 2 and 1 + 3, then
    /// those two.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lane_sums(d: __m512, w: __m512) -> [[f32; 2]; 2] {
        // Quarter q of `s`: the low plus the high quarter of d's half 0, d's half 1, w's half 0,
        // w's half 1.
        let low = _mm512_shuffle_f32x4::<0b10_00_10_00>(d, w);
        let high = _mm512_shuffle_f32x4::<0b11_01_11_01>(d, w);
        let s = _mm512_add_ps(low, high);
        let t = _mm512_add_ps(s, _mm512_permute_ps::<0b11_10_11_10>(s));
        let r = _mm512_add_ps(t, _mm512_permute_ps::<0b01_01_01_01>(t));
        let mut out = [0f32; 16];
        // SAFETY: `out` holds the 16 floats of the store.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), r) };
        [[out[0], out[8]], [out[4], out[12]]]
    }
}
