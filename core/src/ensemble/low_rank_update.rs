//! The low-rank IEnK update in phases that threads can share without changing a bit.
//!
//! With rank-r members the direction `sum_k c_k delta_k` is, per weight block,
//! `sum_k c_k a_k b_k^T = (C A)^T B`, one product of depth `M r`, plus the bias sums. The update
//! runs in three phases:
//! 1. [`Resampled::fill_member_rows`]: each member's factors are drawn again from its seed and
//!    written, `c_k a` transposed, as its own rows of the products' operands ([`MemberRows`]):
//!    any split of the members gives the same rows;
//! 2. [`Resampled::low_rank_bias_direction`]: the bias sums, member after member;
//! 3. [`Resampled::low_rank_direction_rows`]: rows of each weight block's direction, one GEMM
//!    each: every element is the same sum in the same order whatever the rows asked for, as long
//!    as each call has more than [`gemm::SMALL_M`] rows ([`direction_row_parts`] says how
//!    many calls a block allows).
//!
//! [`Resampled::low_rank_update`] runs them one after the other on one thread; `ienk-cli`
//! spreads phases 1 and 3 over its workers, with the same result bit for bit.

use core::ops::Range;

use super::resampled::{Carver, Resampled};
use crate::gemm::{self, Epilogue, MatMut, MatRef};
use crate::mlp::{MlpError, check_len};
use crate::normal::Normal;

/// Members' rows of the low-rank direction's operands: for member k, rows `k r .. (k + 1) r` of
/// `c_k a1^T` (`r x H` each), `b1` (`r x inputs`), `c_k a2^T` (`r x outputs`) and `b2`
/// (`r x H`), and row k of the bias perturbations `db1` (`H`) and `db2` (`outputs`).
#[derive(Debug)]
pub struct MemberRows<'a> {
    /// `c_k a1^T`, `M r x H`.
    pub a1t: &'a mut [f32],
    /// `b1`, `M r x inputs`.
    pub b1: &'a mut [f32],
    /// `c_k a2^T`, `M r x outputs`.
    pub a2t: &'a mut [f32],
    /// `b2`, `M r x H`.
    pub b2: &'a mut [f32],
    /// `db1`, `M x H`.
    pub db1: &'a mut [f32],
    /// `db2`, `M x outputs`.
    pub db2: &'a mut [f32],
}

impl<'a> MemberRows<'a> {
    /// The same rows, borrowed for a shorter while (to split them, then use them whole). O(1).
    pub fn reborrow(&mut self) -> MemberRows<'_> {
        MemberRows {
            a1t: self.a1t,
            b1: self.b1,
            a2t: self.a2t,
            b2: self.b2,
            db1: self.db1,
            db2: self.db2,
        }
    }

    /// The rows of the first `members` members, and those of the rest, for rule `rule`. O(1).
    pub fn split_members(self, rule: &Resampled, members: usize) -> (MemberRows<'a>, MemberRows<'a>) {
        let l = &rule.perturb.layout;
        let (h, i, o, r) = (l.hidden, l.inputs, l.outputs, rule.perturb.rank);
        let cut = |s: &'a mut [f32], per_member: usize| s.split_at_mut((members * per_member).min(s.len()));
        let (a1t, a1t_rest) = cut(self.a1t, r * h);
        let (b1, b1_rest) = cut(self.b1, r * i);
        let (a2t, a2t_rest) = cut(self.a2t, r * o);
        let (b2, b2_rest) = cut(self.b2, r * h);
        let (db1, db1_rest) = cut(self.db1, h);
        let (db2, db2_rest) = cut(self.db2, o);
        (
            MemberRows {
                a1t,
                b1,
                a2t,
                b2,
                db1,
                db2,
            },
            MemberRows {
                a1t: a1t_rest,
                b1: b1_rest,
                a2t: a2t_rest,
                b2: b2_rest,
                db1: db1_rest,
                db2: db2_rest,
            },
        )
    }
}

/// The parts of [`Resampled::low_rank_update`]'s workspace.
#[derive(Debug)]
pub struct UpdateWorkspace<'a> {
    /// One member's factors (`factor_len` floats).
    pub factor: &'a mut [f32],
    /// Every member's rows.
    pub rows: MemberRows<'a>,
    /// The direction, P floats.
    pub direction: &'a mut [f32],
    /// GEMM scratch for [`Resampled::low_rank_direction_rows`] on whole blocks.
    pub scratch: &'a mut [f32],
}

/// How many calls of [`Resampled::low_rank_direction_rows`] a weight block of `rows` rows may be
/// split into for `threads` threads: at most one per thread, each of more than
/// [`gemm::SMALL_M`] rows (a smaller call takes the GEMM's unpacked path, which adds in
/// another order); 1 when the block is that small already. O(1).
pub fn direction_row_parts(rows: usize, threads: usize) -> usize {
    threads.min(rows / (gemm::SMALL_M + 1)).max(1)
}

/// Part `part` of a weight block of `rows` rows cut into `parts` ranges whose lengths differ by
/// at most one (with `parts` from [`direction_row_parts`], each has more than
/// [`gemm::SMALL_M`] rows). O(1).
pub fn direction_rows(rows: usize, parts: usize, part: usize) -> Range<usize> {
    let parts = parts.max(1);
    let (len, longer) = (rows / parts, rows % parts);
    let start = part * len + part.min(longer);
    start..(start + len + usize::from(part < longer)).min(rows)
}

/// Which weight block of the direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightBlock {
    /// W1, `H x inputs`.
    W1,
    /// W2, `outputs x H`.
    W2,
}

impl Resampled {
    /// Lengths of the update workspace's parts: a member's factors, the six member-row arrays,
    /// the direction, the GEMM scratch.
    fn update_parts(&self) -> [usize; 9] {
        let (l, r, m) = (&self.perturb.layout, self.perturb.rank, self.members);
        let (h, i, o, mr) = (l.hidden, l.inputs, l.outputs, m * r);
        [
            self.perturb.factor_len(),
            mr * h,
            mr * i,
            mr * o,
            mr * h,
            m * h,
            m * o,
            l.num_params(),
            self.direction_scratch_len(h),
        ]
    }

    /// Floats of workspace [`Resampled::low_rank_update`] needs. O(1).
    pub fn low_rank_update_len(&self) -> usize {
        self.update_parts().iter().sum()
    }

    /// Floats of GEMM scratch [`Resampled::low_rank_direction_rows`] needs for calls of up to
    /// `rows` rows. O(1).
    pub fn direction_scratch_len(&self, rows: usize) -> usize {
        let l = &self.perturb.layout;
        let mr = self.members * self.perturb.rank;
        gemm::scratch_len(rows.min(l.hidden), l.inputs, mr).max(gemm::scratch_len(
            rows.min(l.outputs),
            l.hidden,
            mr,
        ))
    }

    /// Carves `workspace` ([`Resampled::low_rank_update_len`] floats) into its parts. O(1).
    pub fn update_workspace<'a>(&self, workspace: &'a mut [f32]) -> Result<UpdateWorkspace<'a>, MlpError> {
        let parts = self.update_parts();
        check_len("update workspace", workspace.len(), parts.iter().sum())?;
        let mut carve = Carver(workspace);
        let factor = carve.take(parts[0]);
        let rows = MemberRows {
            a1t: carve.take(parts[1]),
            b1: carve.take(parts[2]),
            a2t: carve.take(parts[3]),
            b2: carve.take(parts[4]),
            db1: carve.take(parts[5]),
            db2: carve.take(parts[6]),
        };
        Ok(UpdateWorkspace {
            factor,
            rows,
            direction: carve.take(parts[7]),
            scratch: carve.take(parts[8]),
        })
    }

    /// Phase 1: the rows of members `first .. first + coeffs.len()` (coefficients `coeffs`) at
    /// `step`: each member's factors drawn again into `factor` (`factor_len` floats), then
    /// written to `rows` (those members' rows only, see [`MemberRows::split_members`]). Costs
    /// the members' factor draws and `r (H + outputs)` products each.
    pub fn fill_member_rows(
        &self,
        normal: &Normal,
        coeffs: &[f64],
        first: usize,
        step: u64,
        factor: &mut [f32],
        rows: MemberRows<'_>,
    ) -> Result<(), MlpError> {
        let pt = &self.perturb;
        let l = &pt.layout;
        let (h, i, o, r, n) = (l.hidden, l.inputs, l.outputs, pt.rank, coeffs.len());
        check_len("factor scratch", factor.len(), pt.factor_len())?;
        check_len("c a1^T rows", rows.a1t.len(), n * r * h)?;
        check_len("b1 rows", rows.b1.len(), n * r * i)?;
        check_len("c a2^T rows", rows.a2t.len(), n * r * o)?;
        check_len("b2 rows", rows.b2.len(), n * r * h)?;
        check_len("db1 rows", rows.db1.len(), n * h)?;
        check_len("db2 rows", rows.db2.len(), n * o)?;
        let fr = pt.factor_ranges();
        for (j, &c) in coeffs.iter().enumerate() {
            // `factor` holds member first + j - 1's factors from the previous turn.
            if j > 0 && pt.is_partner(first + j) {
                pt.partner_factors(factor);
            } else {
                pt.fill_factors(normal, step, first + j, factor);
            }
            let c = c as f32;
            // c a^T: row q of the member's block is column q of a, scaled.
            let transpose_scaled = |a: &[f32], out: &mut [f32], len: usize| {
                for (q, out_row) in out.chunks_exact_mut(len.max(1)).enumerate() {
                    for (v, a_row) in out_row.iter_mut().zip(a.chunks_exact(r)) {
                        *v = c * a_row[q];
                    }
                }
            };
            transpose_scaled(
                &factor[fr.a1.clone()],
                &mut rows.a1t[j * r * h..(j + 1) * r * h],
                h,
            );
            transpose_scaled(
                &factor[fr.a2.clone()],
                &mut rows.a2t[j * r * o..(j + 1) * r * o],
                o,
            );
            rows.b1[j * r * i..(j + 1) * r * i].copy_from_slice(&factor[fr.b1.clone()]);
            rows.b2[j * r * h..(j + 1) * r * h].copy_from_slice(&factor[fr.b2.clone()]);
            rows.db1[j * h..(j + 1) * h].copy_from_slice(&factor[fr.db1.clone()]);
            rows.db2[j * o..(j + 1) * o].copy_from_slice(&factor[fr.db2.clone()]);
        }
        Ok(())
    }

    /// Phase 2: the direction's biases `sum_k c_k db_k` (`d_b1`: H, `d_b2`: outputs) from every
    /// member's `db1` and `db2` rows, member after member. O(M (H + outputs)).
    pub fn low_rank_bias_direction(
        &self,
        coeffs: &[f64],
        db1: &[f32],
        db2: &[f32],
        d_b1: &mut [f32],
        d_b2: &mut [f32],
    ) -> Result<(), MlpError> {
        let l = &self.perturb.layout;
        let (h, o, m) = (l.hidden, l.outputs, coeffs.len());
        check_len("db1 rows", db1.len(), m * h)?;
        check_len("db2 rows", db2.len(), m * o)?;
        check_len("b1 direction", d_b1.len(), h)?;
        check_len("b2 direction", d_b2.len(), o)?;
        d_b1.fill(0.0);
        d_b2.fill(0.0);
        for (k, &c) in coeffs.iter().enumerate() {
            let c = c as f32;
            d_b1.iter_mut()
                .zip(&db1[k * h..(k + 1) * h])
                .for_each(|(x, &v)| *x += c * v);
            d_b2.iter_mut()
                .zip(&db2[k * o..(k + 1) * o])
                .for_each(|(x, &v)| *x += c * v);
        }
        Ok(())
    }

    /// Phase 3: rows `rows` of weight block `block`'s direction, `out` (`rows.len() x cols`) =
    /// those columns of `(c a^T)^T` times `b`, from every member's rows (`a_t`: `M r x
    /// block rows`, `b`: `M r x cols`: [`MemberRows`]'s `a1t` and `b1`, or `a2t` and `b2`).
    /// `scratch` holds [`Resampled::direction_scratch_len`] for `rows.len()` floats. Costs
    /// `2 M r rows.len() cols` flops.
    pub fn low_rank_direction_rows(
        &self,
        block: WeightBlock,
        a_t: &[f32],
        b: &[f32],
        rows: Range<usize>,
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), MlpError> {
        let l = &self.perturb.layout;
        let mr = self.members * self.perturb.rank;
        let (total, cols) = match block {
            WeightBlock::W1 => (l.hidden, l.inputs),
            WeightBlock::W2 => (l.outputs, l.hidden),
        };
        check_len("direction operand a^T", a_t.len(), mr * total)?;
        check_len("direction operand b", b.len(), mr * cols)?;
        if rows.start > rows.end || rows.end > total {
            return Err(MlpError::Length {
                what: "direction rows",
                expected: total,
                found: rows.end,
            });
        }
        check_len("direction rows", out.len(), rows.len() * cols)?;
        if rows.is_empty() || mr == 0 {
            out.fill(0.0);
            return Ok(());
        }
        gemm::gemm(
            1.0,
            MatRef::new(&a_t[rows.start..], mr, rows.len(), total).t(),
            MatRef::new(b, mr, cols, cols),
            0.0,
            MatMut::new(out, rows.len(), cols, cols),
            Epilogue::None,
            scratch,
        )?;
        Ok(())
    }

    /// Low-rank update on one thread: the three phases, then `theta -= h d` (through `velocity`,
    /// length P, when momentum is used). Costs `2 M r P` flops and `M factor_len` normal draws.
    pub fn low_rank_update(
        &self,
        normal: &Normal,
        theta: &mut [f32],
        velocity: Option<&mut [f32]>,
        coeffs: &[f64],
        step: u64,
        workspace: &mut [f32],
    ) -> Result<(), MlpError> {
        let l = self.perturb.layout;
        check_len("coefficients", coeffs.len(), self.members)?;
        check_len("parameter vector", theta.len(), l.num_params())?;
        if let Some(v) = velocity.as_deref() {
            check_len("velocity", v.len(), l.num_params())?;
        }
        let ws = self.update_workspace(workspace)?;
        let mut rows = ws.rows;
        self.fill_member_rows(normal, coeffs, 0, step, ws.factor, rows.reborrow())?;
        {
            let d = l.split_mut(ws.direction)?;
            self.low_rank_bias_direction(coeffs, rows.db1, rows.db2, d.b1, d.b2)?;
            let (w1, w2) = (WeightBlock::W1, WeightBlock::W2);
            self.low_rank_direction_rows(w1, rows.a1t, rows.b1, 0..l.hidden, d.w1, ws.scratch)?;
            self.low_rank_direction_rows(w2, rows.a2t, rows.b2, 0..l.outputs, d.w2, ws.scratch)?;
        }
        self.apply_layers(theta, ws.direction, velocity, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_row_ranges_cover_the_block_in_parts_past_the_unpacked_path() {
        for rows in 0..200 {
            for threads in 1..40 {
                let parts = direction_row_parts(rows, threads);
                assert!(parts >= 1 && parts <= threads);
                let mut next = 0;
                for part in 0..parts {
                    let r = direction_rows(rows, parts, part);
                    assert_eq!(r.start, next, "{rows} rows, {parts} parts");
                    assert!(r.len() + 1 >= rows / parts && r.len() <= rows.div_ceil(parts));
                    if parts > 1 {
                        assert!(r.len() > gemm::SMALL_M, "{rows} rows, {parts} parts: {r:?}");
                    }
                    next = r.end;
                }
                assert_eq!(next, rows);
            }
        }
    }
}
