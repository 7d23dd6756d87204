//! EKI, variant "ensemble" (Kovachki & Stuart, ALGORITHM.md section 4): a persistent ensemble
//! `u_1 .. u_M`, moved on each batch by
//! `u_j <- u_j - (h / M) sum_k D_kj (u_k - ubar)`, `D_kj = <G(u_k) - Gbar, g_j>`,
//! `g_j = (softmax(G(u_j)) - Y) / B`, with the adaptive step `h = h0 / (||D||_F + eps)`,
//! optional multiplicative inflation and randomisation around the mean every R steps (EKI(R)).
//! Predictions use the mean `ubar`.
//!
//! The ensemble is stored grouped (`M x |W1|`, then `M x |b1|`, `M x |W2|`, `M x |b2|`), so that
//! consecutive members' W1 are already one stacked matrix for the particle forward, and the update
//! is one `M x M` by `M x P` product, done by column blocks. D is accumulated in f64.

use core::ops::Range;

use rand_core::Rng;

use super::particles::{self, Stacked};
use crate::gemm::{self, Epilogue, MatMut, MatRef};
use crate::loss::{self, BatchStats};
use crate::mlp::{Layout, MlpError, check_len};
use crate::normal::Normal;

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

    /// The ensemble mean `ubar` (length P). O(M P).
    pub fn mean(&self, ensemble: &[f32], out: &mut [f32]) {
        let inv = 1.0 / self.members as f32;
        for (g, r) in self.group_ranges().into_iter().zip(self.layout.ranges()) {
            let n = r.len();
            let dst = &mut out[r];
            dst.fill(0.0);
            for row in ensemble[g].chunks_exact(n.max(1)) {
                dst.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
            }
            dst.iter_mut().for_each(|d| *d *= inv);
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

    /// Lengths of the f32 and f64 workspaces [`Eki::update_with`] needs for member outputs of
    /// `dim` numbers each.
    pub fn update_with_len(&self, dim: usize) -> (usize, usize) {
        let m = self.members;
        let f32_len = m * m // mixing matrix
            + self.layout.num_params() // ubar
            + m * UPDATE_COLUMNS // product of one column block
            + gemm::scratch_len(m, UPDATE_COLUMNS, m);
        (f32_len, m * m + dim)
    }

    /// The EKI update for any model and loss: `outputs` holds `G(u_j)` and `innovations` the
    /// gradients `g_j` of the loss with respect to those outputs (both `M x dim`, member after
    /// member). Returns `(||D||_F, h)`. Costs `M^2 dim` f64 multiply-adds and `2 M^2 P` flops.
    pub fn update_with(
        &self,
        ensemble: &mut [f32],
        outputs: &[f32],
        innovations: &[f32],
        work: &mut [f32],
        work64: &mut [f64],
    ) -> Result<(f64, f64), MlpError> {
        let m = self.members;
        let dim = outputs.len() / m.max(1);
        let (len32, len64) = self.update_with_len(dim);
        check_len("ensemble", ensemble.len(), self.ensemble_len())?;
        check_len("member outputs", outputs.len(), m * dim)?;
        check_len("innovations", innovations.len(), m * dim)?;
        check_len("update workspace", work.len(), len32)?;
        check_len("update f64 workspace", work64.len(), len64)?;
        let (amat, rest) = work.split_at_mut(m * m);
        let (ubar, rest) = rest.split_at_mut(self.layout.num_params());
        let (temp, scratch) = rest.split_at_mut(m * UPDATE_COLUMNS);
        let (d, gbar) = work64.split_at_mut(m * m);
        gbar.fill(0.0);
        for gk in outputs.chunks_exact(dim.max(1)) {
            gbar.iter_mut().zip(gk).for_each(|(s, &z)| *s += f64::from(z));
        }
        gbar.iter_mut().for_each(|s| *s /= m as f64);
        // D_kj = <G_k - Gbar, g_j>, in f64.
        for k in 0..m {
            let gk = &outputs[k * dim..(k + 1) * dim];
            for j in 0..m {
                let gj = &innovations[j * dim..(j + 1) * dim];
                d[k * m + j] = gk
                    .iter()
                    .zip(gbar.iter())
                    .zip(gj)
                    .map(|((&z, &zb), &gv)| (f64::from(z) - zb) * f64::from(gv))
                    .sum();
            }
        }
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
        self.mean(ensemble, ubar);
        for (grp, r) in self.group_ranges().into_iter().zip(self.layout.ranges()) {
            let n = r.len();
            if n == 0 {
                continue;
            }
            let u = &mut ensemble[grp];
            let ub = &ubar[r];
            for row in u.chunks_exact_mut(n) {
                row.iter_mut().zip(ub).for_each(|(x, &c)| *x -= c);
            }
            let mut c0 = 0;
            while c0 < n {
                let cols = UPDATE_COLUMNS.min(n - c0);
                let t = &mut temp[..m * cols];
                gemm::gemm(
                    1.0,
                    MatRef::new(amat, m, m, m),
                    MatRef::new(&u[c0..], m, cols, n),
                    0.0,
                    MatMut::new(t, m, cols, cols),
                    Epilogue::None,
                    scratch,
                )?;
                for (j, trow) in t.chunks_exact(cols).enumerate() {
                    let dst = &mut u[j * n + c0..j * n + c0 + cols];
                    dst.iter_mut()
                        .zip(trow)
                        .zip(&ub[c0..c0 + cols])
                        .for_each(|((x, &v), &c)| *x = v + c);
                }
                c0 += cols;
            }
        }
        Ok((d_norm, h))
    }

    /// Lengths of the f32 and f64 workspaces [`Eki::update`] needs for batches of `batch` rows.
    pub fn update_workspace_len(&self, batch: usize) -> (usize, usize) {
        let (m, bo) = (self.members, batch * self.layout.outputs);
        let (w32, w64) = self.update_with_len(bo);
        (w32 + m * bo + bo, w64)
    }

    /// One EKI update of `ensemble` from all members' `logits` (`M x B x outputs`) on a batch
    /// with `labels`, for the mean cross-entropy (`g_j = (softmax(G_j) - Y) / B`); returns the loss
    /// and accuracy of the mean logits before the update, `||D||_F` and h.
    pub fn update(
        &self,
        ensemble: &mut [f32],
        logits: &[f32],
        labels: &[u8],
        work: &mut [f32],
        work64: &mut [f64],
    ) -> Result<EkiStep, MlpError> {
        let (m, o, b) = (self.members, self.layout.outputs, labels.len());
        let bo = b * o;
        let (len32, _) = self.update_workspace_len(b);
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
        let (d_norm, h) = self.update_with(ensemble, logits, g, rest, work64)?;
        Ok(EkiStep { stats, d_norm, h })
    }
}
