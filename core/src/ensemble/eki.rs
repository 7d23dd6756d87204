//! EKI, variant "ensemble" (Kovachki & Stuart, ALGORITHM.md section 4): a persistent ensemble
//! `u_1 .. u_M`, moved on each batch by
//! `u_j <- u_j - (h / M) sum_k D_kj (u_k - ubar)`, `D_kj = <G(u_k) - Gbar, g_j>`,
//! `g_j = (softmax(G(u_j)) - Y) / B`, with the adaptive step `h = h0 / (||D||_F + eps)`,
//! optional multiplicative inflation and randomisation around the mean every R steps (EKI(R)).
//! Predictions use the mean `ubar`.
//!
//! The ensemble is stored grouped (`M x |W1|`, then `M x |b1|`, `M x |W2|`, `M x |b2|`), so that
//! consecutive members' W1 are already one stacked matrix for the particle forward, and the update
//! is one `M x M` by `M x P` product, done by column blocks of [`UPDATE_COLUMNS`] cut into
//! pieces of [`MIX_COLUMNS`]. D is accumulated in f64 ([`super::coupling`]). The update's
//! parts (D's rows, the mean, the centring, the pieces of the product) can be cut over a
//! caller's [`Workers`], with the same results for any number of them.

use core::convert::Infallible;
use core::ops::Range;

use rand_core::Rng;

use super::coupling::{self, MemberOutputs};
use super::particles::{self, Stacked};
use crate::gemm::{self, Epilogue, MatMut, MatRef};
use crate::loss::{self, BatchStats};
use crate::mlp::{Layout, MlpError, check_len};
use crate::normal::Normal;
use crate::workers::{Workers, part_len, part_ranges, pieces};

/// Columns of the ensemble updated per product (bounds the temporary to `M x UPDATE_COLUMNS`).
pub const UPDATE_COLUMNS: usize = 2048;

/// The EKI update rule and its options.
#[derive(Clone, Copy, Debug)]
pub struct Eki {
    /// The network.
    pub layout: Layout,
    /// Ensemble size M.
    pub members: usize,
    /// Step numerator h0 of `h = h0 / (||D||_F + eps)`.
    pub h0: f32,
    /// The `eps` of the adaptive step (keeps it finite when D vanishes).
    pub eps: f32,
    /// Multiplicative inflation alpha: `u_j <- ubar + (1 + alpha)(u_j - ubar)` after each update.
    pub inflation: f32,
    /// Standard deviation of each layer's spread at initialisation and randomisation (`c s_l`).
    pub std: [f32; 2],
}

/// What one EKI step did.
#[derive(Clone, Copy, Debug, Default)]
pub struct EkiStep {
    /// Loss and accuracy of the mean of the members' logits (`Gbar`), before the update.
    pub stats: BatchStats,
    /// `||D||_F`.
    pub d_norm: f64,
    /// The step size h used.
    pub h: f64,
}

impl Eki {
    /// The four groups' ranges inside the ensemble buffer (`M P` floats).
    pub fn group_ranges(&self) -> [Range<usize>; 4] {
        let m = self.members;
        let mut start = 0;
        self.layout.ranges().map(|r| {
            let g = start..start + m * r.len();
            start = g.end;
            g
        })
    }

    /// Floats of the ensemble buffer.
    pub fn ensemble_len(&self) -> usize {
        self.members * self.layout.num_params()
    }

    /// Copies member `j`'s parameter vector out of the ensemble. O(P).
    pub fn member(&self, ensemble: &[f32], j: usize, out: &mut [f32]) {
        for (g, r) in self.group_ranges().into_iter().zip(self.layout.ranges()) {
            let n = r.len();
            out[r].copy_from_slice(&ensemble[g.start + j * n..g.start + (j + 1) * n]);
        }
    }

    /// The ensemble mean `ubar` (length P), each group's columns cut over `workers`; every
    /// entry is the same sum, in member order, whatever the cut. O(M P).
    pub fn mean<W: Workers>(&self, workers: &W, ensemble: &[f32], out: &mut [f32]) {
        let inv = 1.0 / self.members as f32;
        let count = workers.count().max(1);
        for (g, r) in self.group_ranges().into_iter().zip(self.layout.ranges()) {
            let n = r.len();
            let u = &ensemble[g];
            let jobs = part_ranges(n, count).zip(out[r].chunks_mut(part_len(n, count)));
            let Ok(()) = workers.each(jobs, |(cols, dst)| {
                dst.fill(0.0);
                for row in u.chunks_exact(n) {
                    dst.iter_mut().zip(&row[cols.clone()]).for_each(|(d, &v)| *d += v);
                }
                dst.iter_mut().for_each(|d| *d *= inv);
                Ok::<(), Infallible>(())
            });
        }
    }

    /// Sets every member to `center + xi_j`, `xi_j` of layer l ~ N(0, std_l^2): the initial
    /// ensemble (center = theta_0) and the EKI(R) randomisation (center = ubar). O(M P).
    pub fn scatter<G: Rng + ?Sized>(
        &self,
        normal: &Normal,
        rng: &mut G,
        center: &[f32],
        ensemble: &mut [f32],
    ) {
        for (k, (g, r)) in self
            .group_ranges()
            .into_iter()
            .zip(self.layout.ranges())
            .enumerate()
        {
            // Groups 0 and 1 are layer 1 (W1, b1), 2 and 3 layer 2; biases are spread too.
            let std = if k < 2 { self.std[0] } else { self.std[1] };
            let n = r.len();
            for row in ensemble[g].chunks_exact_mut(n.max(1)) {
                normal.fill(rng, row, std);
                row.iter_mut().zip(&center[r.clone()]).for_each(|(u, &c)| *u += c);
            }
        }
    }

    /// Floats of workspace [`Eki::member_logits`] needs per thread for batches of `batch` rows.
    pub fn forward_workspace_len(&self, batch: usize, chunk: usize) -> usize {
        batch * chunk * self.layout.hidden + particles::dense_scratch_len(&self.layout, batch, chunk)
    }

    /// Logits of `members` (`members.len() x B x outputs`) on `x`, `chunk` members per stacked
    /// product. Costs `2 B members P` flops.
    pub fn member_logits(
        &self,
        ensemble: &[f32],
        x: &[f32],
        members: Range<usize>,
        chunk: usize,
        workspace: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), MlpError> {
        let l = &self.layout;
        let (h, o) = (l.hidden, l.outputs);
        let batch = x.len() / l.inputs.max(1);
        check_len("member logits", logits.len(), members.len() * batch * o)?;
        check_len(
            "forward workspace",
            workspace.len(),
            self.forward_workspace_len(batch, chunk),
        )?;
        let (hidden, scratch) = workspace.split_at_mut(batch * chunk * h);
        let [gw1, gb1, gw2, gb2] = self.group_ranges();
        let [rw1, rb1, rw2, rb2] = l.ranges();
        let group = |g: &Range<usize>, n: usize, js: Range<usize>| {
            &ensemble[g.start + js.start * n..g.start + js.end * n]
        };
        let mut j = members.start;
        while j < members.end {
            let c = chunk.min(members.end - j);
            let js = j..j + c;
            let stacked = Stacked {
                w1: group(&gw1, rw1.len(), js.clone()),
                b1: group(&gb1, rb1.len(), js.clone()),
                w2: group(&gw2, rw2.len(), js.clone()),
                b2: group(&gb2, rb2.len(), js),
            };
            let off = (j - members.start) * batch * o;
            particles::forward_dense(
                l,
                c,
                x,
                stacked,
                &mut hidden[..batch * c * h],
                &mut logits[off..off + c * batch * o],
                scratch,
            )?;
            j += c;
        }
        Ok(())
    }

    /// Lengths of the f32 and f64 workspaces [`Eki::update_with`] needs for member outputs
    /// of `dim` numbers each on `workers` workers (f32: the mixing matrix, `ubar`, one column
    /// block of the product and each worker's GEMM scratch; f64: D, `Gbar` and each worker's
    /// centred outputs).
    pub fn update_with_len(&self, dim: usize, workers: usize) -> (usize, usize) {
        let (m, w) = (self.members, workers.max(1));
        let f32_len = m * m // mixing matrix
            + self.layout.num_params() // ubar
            + m * UPDATE_COLUMNS // product of one column block
            + w * gemm::scratch_len(m, MIX_COLUMNS, m);
        (f32_len, m * m + dim + w * coupling::coupling_workspace_len(dim))
    }

    /// The EKI update for any model and loss: `outputs` holds `G(u_j)` and `innovations` the
    /// gradients `g_j` of the loss with respect to those outputs (both `M x dim`, member after
    /// member). Returns `(||D||_F, h)`. D's rows, the mean, the centring and the mixing
    /// product's [`MIX_COLUMNS`]-column pieces are cut over `workers` (the results do not
    /// depend on how many there are);
    /// the workspaces are [`Eki::update_with_len`]`(dim, workers.count())` long. Costs
    /// `M^2 dim` f64 multiply-adds and `2 M^2 P` flops.
    pub fn update_with<W: Workers>(
        &self,
        workers: &W,
        ensemble: &mut [f32],
        outputs: &[f32],
        innovations: &[f32],
        work: &mut [f32],
        work64: &mut [f64],
    ) -> Result<(f64, f64), MlpError> {
        let m = self.members;
        let dim = outputs.len() / m.max(1);
        let count = workers.count().max(1);
        let (len32, len64) = self.update_with_len(dim, count);
        check_len("ensemble", ensemble.len(), self.ensemble_len())?;
        check_len("member outputs", outputs.len(), m * dim)?;
        check_len("innovations", innovations.len(), m * dim)?;
        check_len("update workspace", work.len(), len32)?;
        check_len("update f64 workspace", work64.len(), len64)?;
        let (amat, rest) = work.split_at_mut(m * m);
        let (ubar, rest) = rest.split_at_mut(self.layout.num_params());
        let (temp, scratch) = rest.split_at_mut(m * UPDATE_COLUMNS);
        let (d, rest64) = work64.split_at_mut(m * m);
        let (gbar, centred) = rest64.split_at_mut(dim);
        let members = MemberOutputs {
            outputs,
            innovations,
            members: m,
        };
        coupling::output_mean(&members, gbar)?;
        // D_kj = <G_k - Gbar, g_j>, in f64, rows cut over the workers.
        let path = gemm::active_kernel();
        let per = part_len(m, count);
        let centred_len = coupling::coupling_workspace_len(dim);
        let jobs = part_ranges(m, count)
            .zip(d.chunks_mut(per * m.max(1)))
            .zip(pieces(centred, centred_len));
        let gbar = &*gbar;
        workers.each(jobs, |((rows, d_rows), c)| {
            coupling::coupling_rows(path, &members, gbar, rows, c, d_rows)
        })?;
        let d_norm = libm::sqrt(d.iter().map(|v| v * v).sum::<f64>());
        let h = f64::from(self.h0) / (d_norm + f64::from(self.eps));
        // Mixing matrix A_jk = (1 + alpha)(delta_jk - (h / M) D_kj): U_c <- A U_c.
        let scale = 1.0 + f64::from(self.inflation);
        for j in 0..m {
            for k in 0..m {
                let eye = if j == k { 1.0 } else { 0.0 };
                amat[j * m + k] = (scale * (eye - h / m as f64 * d[k * m + j])) as f32;
            }
        }
        // U <- ubar + A (U - ubar), group by group, by column blocks.
        self.mean(workers, ensemble, ubar);
        let ubar = &*ubar;
        let groups = self.group_ranges().into_iter().zip(self.layout.ranges());
        for (grp, r) in groups.clone() {
            let n = r.len();
            let ub = &ubar[r];
            let jobs = pieces(&mut ensemble[grp], per * n).take(count);
            workers.each(jobs, |rows| {
                for row in rows.chunks_exact_mut(n.max(1)) {
                    row.iter_mut().zip(ub).for_each(|(x, &c)| *x -= c);
                }
                Ok::<(), MlpError>(())
            })?;
        }
        for (grp, r) in groups {
            let (n, ub) = (r.len(), &ubar[r]);
            let u = &mut ensemble[grp];
            for c0 in (0..n).step_by(UPDATE_COLUMNS) {
                let cols = c0..n.min(c0 + UPDATE_COLUMNS);
                mix_columns(workers, amat, u, n, cols.clone(), temp, scratch)?;
                add_mean_back(workers, u, n, cols, temp, ub)?;
            }
        }
        Ok((d_norm, h))
    }

    /// Lengths of the f32 and f64 workspaces [`Eki::update`] needs for batches of `batch`
    /// rows on `workers` workers.
    pub fn update_workspace_len(&self, batch: usize, workers: usize) -> (usize, usize) {
        let (m, bo) = (self.members, batch * self.layout.outputs);
        let (w32, w64) = self.update_with_len(bo, workers);
        (w32 + m * bo + bo, w64)
    }

    /// One EKI update of `ensemble` from all members' `logits` (`M x B x outputs`) on a batch
    /// with `labels`, for the mean cross-entropy (`g_j = (softmax(G_j) - Y) / B`), with
    /// [`Eki::update_with`]'s work cut over `workers`; returns the loss and accuracy of the
    /// mean logits before the update, `||D||_F` and h. The workspaces are
    /// [`Eki::update_workspace_len`]`(batch, workers.count())` long.
    pub fn update<W: Workers>(
        &self,
        workers: &W,
        ensemble: &mut [f32],
        logits: &[f32],
        labels: &[u8],
        work: &mut [f32],
        work64: &mut [f64],
    ) -> Result<EkiStep, MlpError> {
        let (m, o, b) = (self.members, self.layout.outputs, labels.len());
        let bo = b * o;
        let (len32, _) = self.update_workspace_len(b, workers.count());
        check_len("member logits", logits.len(), m * bo)?;
        check_len("update workspace", work.len(), len32)?;
        let (g, rest) = work.split_at_mut(m * bo);
        let (mean_logits, rest) = rest.split_at_mut(bo);
        for (zk, gk) in logits.chunks_exact(bo.max(1)).zip(g.chunks_exact_mut(bo.max(1))) {
            loss::cross_entropy_grad(zk, o, labels, gk)?;
        }
        mean_logits.fill(0.0);
        for zk in logits.chunks_exact(bo.max(1)) {
            mean_logits
                .iter_mut()
                .zip(zk)
                .for_each(|(s, &z)| *s += z / m as f32);
        }
        let stats = loss::cross_entropy(mean_logits, o, labels)?;
        let (d_norm, h) = self.update_with(workers, ensemble, logits, g, rest, work64)?;
        Ok(EkiStep { stats, d_norm, h })
    }
}

/// Columns of one product of the mixing step: a column block is cut into pieces this wide,
/// whatever the number of workers, so that every product has the same shape and rounds alike.
pub const MIX_COLUMNS: usize = 256;

/// `A U[:, cols]` into `temp` for one group's centred members `u` (`M x n`), by pieces of
/// [`MIX_COLUMNS`] columns cut over `workers`: piece `q` is the `M x w_q` matrix at `temp[q M
/// MIX_COLUMNS..]`; each worker's GEMM scratch is an equal share of `scratch`. Costs `2 M^2
/// cols.len()` flops.
fn mix_columns<W: Workers>(
    workers: &W,
    amat: &[f32],
    u: &[f32],
    n: usize,
    cols: Range<usize>,
    temp: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), MlpError> {
    let m = u.len() / n.max(1);
    let count = workers.count().max(1);
    let pieces_of = cols.len().div_ceil(MIX_COLUMNS);
    let per = part_len(pieces_of, count);
    let share = scratch.len() / count;
    let jobs = part_ranges(pieces_of, count)
        .zip(pieces(&mut temp[..m * cols.len()], per * m * MIX_COLUMNS))
        .zip(pieces(scratch, share));
    workers.each(jobs, |((own, out), s)| {
        for (q, piece) in own.zip(out.chunks_mut(m * MIX_COLUMNS)) {
            let c = cols.start + q * MIX_COLUMNS;
            let w = MIX_COLUMNS.min(cols.end - c);
            gemm::gemm(
                1.0,
                MatRef::new(amat, m, m, m),
                MatRef::new(&u[c..], m, w, n),
                0.0,
                MatMut::new(piece, m, w, w),
                Epilogue::None,
                s,
            )?;
        }
        Ok(())
    })
}

/// Writes the mixed columns `cols` of [`mix_columns`]'s `temp` back into the members `u`
/// (`M x n`), adding the mean `ubar` of the group, members cut over `workers`. O(M
/// cols.len()).
fn add_mean_back<W: Workers>(
    workers: &W,
    u: &mut [f32],
    n: usize,
    cols: Range<usize>,
    temp: &[f32],
    ubar: &[f32],
) -> Result<(), MlpError> {
    let m = u.len() / n.max(1);
    let count = workers.count().max(1);
    let per = part_len(m, count);
    let jobs = part_ranges(m, count).zip(pieces(u, per * n));
    workers.each(jobs, |(members, rows)| {
        for (j, row) in members.zip(rows.chunks_exact_mut(n)) {
            let dst = &mut row[cols.clone()];
            for (q, chunk) in dst.chunks_mut(MIX_COLUMNS).enumerate() {
                let w = chunk.len();
                let at = q * m * MIX_COLUMNS + j * w;
                let mean = &ubar[cols.start + q * MIX_COLUMNS..][..w];
                chunk
                    .iter_mut()
                    .zip(&temp[at..at + w])
                    .zip(mean)
                    .for_each(|((x, &v), &c)| *x = v + c);
            }
        }
        Ok(())
    })
}
