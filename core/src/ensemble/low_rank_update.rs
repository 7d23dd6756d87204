//! The low-rank IEnK update in phases that threads can share without changing a bit.
//!
//! With rank-r members the direction `sum_k c_k delta_k` is, per weight block,
//! `sum_k c_k a_k b_k^T = (C A)^T B`, plus the bias sums. It is summed over the independent
//! draws, not the members: an antithetic pair's members are `delta` and `-delta`, so the pair
//! adds `(c_2j - c_2j+1) delta` ([`crate::ensemble::perturb::Perturbations::draw_coefficient`])
//! and the products have depth `D r`: D = ceil(M / 2) draws with antithetic pairs, else M.
//! The member phase ([`Resampled::low_rank_coefficients`]) leaves every draw's factors in the
//! products' operands ([`DrawRows`]), so nothing is drawn twice; the update then runs in three
//! phases:
//! 1. [`Resampled::scale_draw_rows`]: each draw's `a` factors become `e_d a^T` (`e_d` the
//!    draw's coefficient) and its bias perturbations `e_d db`, in place: any split of the
//!    draws gives the same rows;
//! 2. [`Resampled::low_rank_bias_direction`]: the bias sums, draw after draw;
//! 3. [`Resampled::low_rank_direction_rows`]: rows of each weight block's direction, one GEMM
//!    each: every element is the same sum in the same order whatever the rows asked for, as long
//!    as each call has more than [`gemm::SMALL_M`] rows ([`direction_row_parts`] says how
//!    many calls a block allows).
//!
//! [`Resampled::low_rank_update`] runs them one after the other, phases 1 and 3 spread over the
//! caller's [`Workers`], with the same result bit for bit on any number of them.

use core::ops::Range;

use super::particles::Factors;
use super::perturb::FactorSlots;
use super::resampled::{Carver, Resampled, add_share};
use crate::gemm::{self, Epilogue, MatMut, MatRef};
use crate::mlp::{MlpError, check_len};
use crate::workers::{Workers, part_ranges, shares};

/// Every draw's low-rank factors, in the layout of the update's products. For draw d, rows `d r
/// .. (d + 1) r` of `b1` (`r x inputs` each) and `b2` (`r x H`), and draw d's blocks of `a1`
/// (`H r`), `a2` (`outputs r`), `db1` (`H`) and `db2` (`outputs`). The member phase
/// ([`Resampled::low_rank_coefficients`]) writes them as drawn (`a1`: `H x r`, `a2`: `outputs
/// x r`); [`Resampled::scale_draw_rows`] turns each `a` block into `e_d a^T` (`r x H`, `r x
/// outputs`) and each bias block into `e_d db`, in place, the operands of the direction's
/// products.
#[derive(Debug)]
pub struct DrawRows<'a> {
    /// `a1` (`H x r`), then `e_d a1^T` (`r x H`), per draw.
    pub a1: &'a mut [f32],
    /// `b1`, `D r x inputs`.
    pub b1: &'a mut [f32],
    /// `a2` (`outputs x r`), then `e_d a2^T` (`r x outputs`), per draw.
    pub a2: &'a mut [f32],
    /// `b2`, `D r x H`.
    pub b2: &'a mut [f32],
    /// `db1`, then `e_d db1`, `D x H`.
    pub db1: &'a mut [f32],
    /// `db2`, then `e_d db2`, `D x outputs`.
    pub db2: &'a mut [f32],
}

/// Floats per draw of each of [`DrawRows`]' arrays, in field order: `a1` (`r H`), `b1` (`r
/// inputs`), `a2` (`r outputs`), `b2` (`r H`), `db1` (`H`), `db2` (`outputs`). O(1).
fn per_draw(rule: &Resampled) -> [usize; 6] {
    let l = &rule.perturb.layout;
    let (h, i, o, r) = (l.hidden, l.inputs, l.outputs, rule.perturb.rank);
    [r * h, r * i, r * o, r * h, h, o]
}

/// Block `j` of `n` floats of `s`. Panics past `s`.
fn nth<T>(s: &[T], j: usize, n: usize) -> &[T] {
    &s[j * n..(j + 1) * n]
}

/// Block `j` of `n` floats of `s`, writable. Panics past `s`.
fn nth_mut<T>(s: &mut [T], j: usize, n: usize) -> &mut [T] {
    &mut s[j * n..(j + 1) * n]
}

/// The most draws whose shares a low-rank step with room for the direction sums into it at a
/// time ([`Resampled::summing_workspace_len`]).
pub const SUM_DRAWS_MAX: usize = 64;

/// Columns of a weight block's direction that [`add_outer_products`] keeps in registers while it
/// adds a call's draws (16 floats: half a Cortex-M4F's single-precision registers).
const SUM_COLUMNS: usize = 16;

/// `out += sum_d sum_q (e_d a_d[row, q]) b_d[q]` for every row of a weight block's direction
/// `out` (`rows x cols`, the rows of `a_d`): `a` holds each draw's `rows x r` block (`a_len`
/// floats), `b` each draw's `r x cols` rows. Every entry adds its terms in draw order, then rank
/// order, each product `(e_d a) b` rounded as [`add_share`] rounds it, so the bits are those of
/// adding the draws one at a time. The terms go by groups of up to [`SUM_DRAWS_MAX`], whose
/// scales `e_d a` a row computes once; each group loads and stores an entry once,
/// [`SUM_COLUMNS`] of them at a time. O(draws r rows cols).
fn add_outer_products(e: &[f32], a: &[f32], a_len: usize, b: &[f32], r: usize, cols: usize, out: &mut [f32]) {
    let b_len = r * cols;
    // The terms (draw, rank) in order, by groups.
    let terms = e.len() * r;
    for (row, out_row) in out.chunks_exact_mut(cols.max(1)).enumerate() {
        for group in (0..terms).step_by(SUM_DRAWS_MAX) {
            let n = SUM_DRAWS_MAX.min(terms - group);
            if n == 1 {
                // One term: along the row, the same sums without the blocks' set-up.
                let (j, q) = (group / r, group % r);
                let s = e[j] * a[j * a_len + row * r + q];
                add_share(out_row, s, &b[j * b_len + q * cols..][..cols]);
                continue;
            }
            // Each term's scale and the start of its row of b.
            let mut scale = [0f32; SUM_DRAWS_MAX];
            let mut offset = [0usize; SUM_DRAWS_MAX];
            for (t, (s, o)) in scale.iter_mut().zip(&mut offset).take(n).enumerate() {
                let (j, q) = ((group + t) / r, (group + t) % r);
                *s = e[j] * a[j * a_len + row * r + q];
                *o = j * b_len + q * cols;
            }
            for (start, acc_out) in (0..).step_by(SUM_COLUMNS).zip(out_row.chunks_mut(SUM_COLUMNS)) {
                let mut acc = [0f32; SUM_COLUMNS];
                let width = acc_out.len();
                acc[..width].copy_from_slice(acc_out);
                for (&s, &o) in scale[..n].iter().zip(&offset[..n]) {
                    let b_row = &b[o + start..][..width];
                    match <&[f32; SUM_COLUMNS]>::try_from(b_row) {
                        // A whole block: a fixed length the compiler unrolls, in registers.
                        Ok(block) => acc.iter_mut().zip(block).for_each(|(x, &v)| *x += s * v),
                        Err(_) => add_share(&mut acc[..width], s, b_row),
                    }
                }
                acc_out.copy_from_slice(&acc[..width]);
            }
        }
    }
}

impl Default for DrawRows<'_> {
    /// No draw's rows.
    fn default() -> Self {
        DrawRows {
            a1: &mut [],
            b1: &mut [],
            a2: &mut [],
            b2: &mut [],
            db1: &mut [],
            db2: &mut [],
        }
    }
}

impl<'a> DrawRows<'a> {
    /// The same rows, borrowed for a shorter while (to split them, then use them whole). O(1).
    pub fn reborrow(&mut self) -> DrawRows<'_> {
        DrawRows {
            a1: self.a1,
            b1: self.b1,
            a2: self.a2,
            b2: self.b2,
            db1: self.db1,
            db2: self.db2,
        }
    }

    /// The rows of the first `draws` draws, and those of the rest, for rule `rule`. O(1).
    pub fn split_draws(self, rule: &Resampled, draws: usize) -> (DrawRows<'a>, DrawRows<'a>) {
        let [a1_n, b1_n, a2_n, b2_n, db1_n, db2_n] = per_draw(rule);
        let cut = |s: &'a mut [f32], per_draw: usize| s.split_at_mut((draws * per_draw).min(s.len()));
        let (a1, a1_rest) = cut(self.a1, a1_n);
        let (b1, b1_rest) = cut(self.b1, b1_n);
        let (a2, a2_rest) = cut(self.a2, a2_n);
        let (b2, b2_rest) = cut(self.b2, b2_n);
        let (db1, db1_rest) = cut(self.db1, db1_n);
        let (db2, db2_rest) = cut(self.db2, db2_n);
        (
            DrawRows {
                a1,
                b1,
                a2,
                b2,
                db1,
                db2,
            },
            DrawRows {
                a1: a1_rest,
                b1: b1_rest,
                a2: a2_rest,
                b2: b2_rest,
                db1: db1_rest,
                db2: db2_rest,
            },
        )
    }

    /// These rows (every draw's) cut for `parts` workers: each of the consecutive draw ranges
    /// of [`part_ranges`]`(draws, parts)` with its draws' rows. O(1) per range.
    pub(crate) fn by_parts(
        self,
        rule: &Resampled,
        parts: usize,
    ) -> impl Iterator<Item = (Range<usize>, DrawRows<'a>)> {
        let rule = *rule;
        let mut rest = self;
        part_ranges(rule.draws(), parts).map(move |range| {
            let (mine, others) = core::mem::take(&mut rest).split_draws(&rule, range.len());
            rest = others;
            (range, mine)
        })
    }

    /// Checks that the rows hold exactly `draws` draws of `rule`'s factors.
    pub(crate) fn check(&self, rule: &Resampled, draws: usize) -> Result<(), MlpError> {
        let [a1, b1, a2, b2, db1, db2] = per_draw(rule);
        check_len("a1 rows", self.a1.len(), draws * a1)?;
        check_len("b1 rows", self.b1.len(), draws * b1)?;
        check_len("a2 rows", self.a2.len(), draws * a2)?;
        check_len("b2 rows", self.b2.len(), draws * b2)?;
        check_len("db1 rows", self.db1.len(), draws * db1)?;
        check_len("db2 rows", self.db2.len(), draws * db2)
    }

    /// Where draw `j` of these rows is drawn to. Panics past the rows. O(1).
    pub(crate) fn slots(&mut self, rule: &Resampled, j: usize) -> FactorSlots<'_> {
        let [a1, b1, a2, b2, db1, db2] = per_draw(rule);
        FactorSlots {
            a1: nth_mut(self.a1, j, a1),
            b1: nth_mut(self.b1, j, b1),
            db1: nth_mut(self.db1, j, db1),
            a2: nth_mut(self.a2, j, a2),
            b2: nth_mut(self.b2, j, b2),
            db2: nth_mut(self.db2, j, db2),
        }
    }

    /// Draw `j`'s factors as drawn (before [`Resampled::scale_draw_rows`]), for the member
    /// kernels. Panics past the rows. O(1).
    pub(crate) fn factors(&self, rule: &Resampled, j: usize) -> Factors<'_> {
        let [a1, _, a2, b2, db1, db2] = per_draw(rule);
        Factors {
            a1: nth(self.a1, j, a1),
            db1: nth(self.db1, j, db1),
            a2: nth(self.a2, j, a2),
            b2: nth(self.b2, j, b2),
            db2: nth(self.db2, j, db2),
        }
    }
}

/// The parts of [`Resampled::low_rank_update`]'s workspace for some number of workers.
#[derive(Debug)]
pub struct UpdateWorkspace<'a> {
    /// Per worker, a block of `a` factors being transposed ([`Resampled::transpose_scratch_len`]
    /// floats each).
    pub tmp: &'a mut [f32],
    /// Every draw's factors: the member phase fills them, the update reads them.
    pub rows: DrawRows<'a>,
    /// The direction, P floats.
    pub direction: &'a mut [f32],
    /// Per worker, GEMM scratch for [`Resampled::low_rank_direction_rows`] on whole blocks
    /// ([`Resampled::whole_direction_scratch_len`] floats each).
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
    /// Independent draws behind the members ([`Perturbations::draws`]). O(1).
    ///
    /// [`Perturbations::draws`]: crate::ensemble::perturb::Perturbations::draws
    pub fn draws(&self) -> usize {
        self.perturb.draws(self.members)
    }

    /// Lengths of the update workspace's parts for `workers` workers: the transpose scratch,
    /// every draw's rows ([`Resampled::draw_rows`]), the direction, the GEMM scratch.
    fn update_parts(&self, workers: usize) -> [usize; 4] {
        let w = workers.max(1);
        [
            w * self.transpose_scratch_len(),
            self.draw_rows_len(self.draws()),
            self.perturb.layout.num_params(),
            w * self.whole_direction_scratch_len(),
        ]
    }

    /// Floats of workspace [`Resampled::low_rank_update`] needs on `workers` workers, the draws'
    /// factors included ([`Resampled::update_workspace`]). O(1).
    pub fn low_rank_update_len(&self, workers: usize) -> usize {
        self.update_parts(workers).iter().sum()
    }

    /// Floats of scratch [`Resampled::scale_draw_rows`] needs: one draw's `a1` or `a2`. O(1).
    pub fn transpose_scratch_len(&self) -> usize {
        let l = &self.perturb.layout;
        self.perturb.rank * l.hidden.max(l.outputs)
    }

    /// Floats of GEMM scratch [`Resampled::low_rank_direction_rows`] needs for calls of up to
    /// `rows` rows. O(1).
    pub fn direction_scratch_len(&self, rows: usize) -> usize {
        let l = &self.perturb.layout;
        let dr = self.draws() * self.perturb.rank;
        gemm::scratch_len(rows.min(l.hidden), l.inputs, dr).max(gemm::scratch_len(
            rows.min(l.outputs),
            l.hidden,
            dr,
        ))
    }

    /// Floats of GEMM scratch [`Resampled::low_rank_direction_rows`] needs for whole weight
    /// blocks: calls of up to `max(H, outputs)` rows. O(1).
    pub fn whole_direction_scratch_len(&self) -> usize {
        let l = &self.perturb.layout;
        self.direction_scratch_len(l.hidden.max(l.outputs))
    }

    /// Carves `workspace` ([`Resampled::low_rank_update_len`] floats for `workers`) into its
    /// parts. O(1).
    pub fn update_workspace<'a>(
        &self,
        workspace: &'a mut [f32],
        workers: usize,
    ) -> Result<UpdateWorkspace<'a>, MlpError> {
        let parts = self.update_parts(workers);
        check_len("update workspace", workspace.len(), parts.iter().sum())?;
        let mut carve = Carver(workspace);
        let tmp = carve.take(parts[0]);
        let rows = self.draw_rows(carve.take(parts[1]), self.draws())?;
        Ok(UpdateWorkspace {
            tmp,
            rows,
            direction: carve.take(parts[2]),
            scratch: carve.take(parts[3]),
        })
    }

    /// Floats of rows for `draws` draws' factors as [`Resampled::draw_rows`] carves them: `draws`
    /// times [`Perturbations::factor_len`]. O(1).
    ///
    /// [`Perturbations::factor_len`]: crate::ensemble::perturb::Perturbations::factor_len
    pub fn draw_rows_len(&self, draws: usize) -> usize {
        draws * per_draw(self).iter().sum::<usize>()
    }

    /// Carves `buf` ([`Resampled::draw_rows_len`]`(draws)` floats) into the rows of `draws`
    /// draws' factors: a chunk's for a step that sums the direction as it goes ([`super::step`]).
    /// O(1).
    pub fn draw_rows<'a>(&self, buf: &'a mut [f32], draws: usize) -> Result<DrawRows<'a>, MlpError> {
        check_len("draw rows", buf.len(), self.draw_rows_len(draws))?;
        let [a1, b1, a2, b2, db1, db2] = per_draw(self).map(|n| draws * n);
        let mut carve = Carver(buf);
        Ok(DrawRows {
            a1: carve.take(a1),
            b1: carve.take(b1),
            a2: carve.take(a2),
            b2: carve.take(b2),
            db1: carve.take(db1),
            db2: carve.take(db2),
        })
    }

    /// Adds the shares `e_d delta_d` of the `draws` draws whose factors as drawn are the rows of
    /// `rows`, `e_d` the draw's coefficient from `coeffs` (those draws' members'), to
    /// `direction` (P floats): `e_d a b^T` per weight block and `e_d db` per bias, with the
    /// products [`Resampled::scale_draw_rows`] forms (`e_d a` rounded to f32 first). Each entry
    /// adds its terms in draw order, then rank order, exactly as one call per draw would, so
    /// any number of draws at a time gives the same bits; more of them load and store the
    /// direction fewer times (it is read and written once per call, [`SUM_COLUMNS`] columns at
    /// a time). Draw after draw, the biases get the sums of
    /// [`Resampled::low_rank_bias_direction`], bit for bit. O(draws r P).
    pub(crate) fn add_draw_shares(
        &self,
        coeffs: &[f64],
        draws: usize,
        rows: &DrawRows<'_>,
        direction: &mut [f32],
    ) -> Result<(), MlpError> {
        let l = &self.perturb.layout;
        if draws > SUM_DRAWS_MAX {
            return Err(MlpError::Length {
                what: "draws summed at a time",
                expected: SUM_DRAWS_MAX,
                found: draws,
            });
        }
        rows.check(self, draws)?;
        let [a1_n, _, a2_n, _, db1_n, db2_n] = per_draw(self);
        let r = self.perturb.rank.max(1);
        let e: [f32; SUM_DRAWS_MAX] = core::array::from_fn(|d| match d < draws {
            true => self.perturb.draw_coefficient(coeffs, d) as f32,
            false => 0.0,
        });
        let d = l.split_mut(direction)?;
        add_outer_products(&e[..draws], rows.a1, a1_n, rows.b1, r, l.inputs, d.w1);
        add_outer_products(&e[..draws], rows.a2, a2_n, rows.b2, r, l.hidden, d.w2);
        for (j, &e) in e[..draws].iter().enumerate() {
            add_share(d.b1, e, nth(rows.db1, j, db1_n));
            add_share(d.b2, e, nth(rows.db2, j, db2_n));
        }
        Ok(())
    }

    /// Checks that `draws` is a range of this rule's draws.
    pub(crate) fn check_draws(&self, draws: &Range<usize>) -> Result<(), MlpError> {
        if draws.start > draws.end || draws.end > self.draws() {
            return Err(MlpError::Length {
                what: "draws",
                expected: self.draws(),
                found: draws.end,
            });
        }
        Ok(())
    }

    /// Phase 1 (once per member phase: it scales in place): the rows of draws `draws`, as the
    /// member phase left them, become the products' operands: each draw's `a1` and `a2` blocks
    /// `e_d a^T` (through `tmp`, [`Resampled::transpose_scratch_len`] floats), its bias blocks
    /// `e_d db`, with `e_d` from every member's coefficient `coeffs` (M of them). `rows` are
    /// those draws' rows only (see [`DrawRows::split_draws`]). O(draws (r (H + outputs) + H +
    /// outputs)).
    pub fn scale_draw_rows(
        &self,
        coeffs: &[f64],
        draws: Range<usize>,
        tmp: &mut [f32],
        mut rows: DrawRows<'_>,
    ) -> Result<(), MlpError> {
        let pt = &self.perturb;
        let l = &pt.layout;
        let (h, o, r) = (l.hidden, l.outputs, pt.rank);
        check_len("coefficients", coeffs.len(), self.members)?;
        self.check_draws(&draws)?;
        check_len("transpose scratch", tmp.len(), self.transpose_scratch_len())?;
        rows.check(self, draws.len())?;
        for (j, draw) in draws.enumerate() {
            let e = pt.draw_coefficient(coeffs, draw) as f32;
            let slots = rows.slots(self, j);
            // e a^T: row q of the draw's block is column q of a, scaled.
            let mut transpose_scaled = |block: &mut [f32], len: usize| {
                let a = &mut tmp[..block.len()];
                a.copy_from_slice(block);
                for (q, out_row) in block.chunks_exact_mut(len.max(1)).enumerate() {
                    for (v, a_row) in out_row.iter_mut().zip(a.chunks_exact(r)) {
                        *v = e * a_row[q];
                    }
                }
            };
            transpose_scaled(slots.a1, h);
            transpose_scaled(slots.a2, o);
            let scale = |db: &mut [f32]| db.iter_mut().for_each(|v| *v *= e);
            scale(slots.db1);
            scale(slots.db2);
        }
        Ok(())
    }

    /// Phase 2: the direction's biases `sum_d e_d db_d` (`d_b1`: H, `d_b2`: outputs): the sums
    /// of every draw's scaled `db1` and `db2` rows, draw after draw. O(D (H + outputs)).
    pub fn low_rank_bias_direction(
        &self,
        db1: &[f32],
        db2: &[f32],
        d_b1: &mut [f32],
        d_b2: &mut [f32],
    ) -> Result<(), MlpError> {
        let l = &self.perturb.layout;
        let (h, o, d) = (l.hidden, l.outputs, self.draws());
        check_len("e db1 rows", db1.len(), d * h)?;
        check_len("e db2 rows", db2.len(), d * o)?;
        check_len("b1 direction", d_b1.len(), h)?;
        check_len("b2 direction", d_b2.len(), o)?;
        d_b1.fill(0.0);
        d_b2.fill(0.0);
        for j in 0..d {
            d_b1.iter_mut().zip(nth(db1, j, h)).for_each(|(x, &v)| *x += v);
            d_b2.iter_mut().zip(nth(db2, j, o)).for_each(|(x, &v)| *x += v);
        }
        Ok(())
    }

    /// Phase 3: rows `rows` of weight block `block`'s direction, `out` (`rows.len() x cols`) =
    /// those columns of `(e a^T)^T` times `b`, from every draw's rows (`a_t`: `D r x block
    /// rows`, `b`: `D r x cols`: [`DrawRows`]'s `a1` and `b1`, or `a2` and `b2`, after
    /// [`Resampled::scale_draw_rows`]). `scratch` holds [`Resampled::direction_scratch_len`]
    /// for `rows.len()` floats. Costs `2 D r rows.len() cols` flops.
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
        let dr = self.draws() * self.perturb.rank;
        let (total, cols) = match block {
            WeightBlock::W1 => (l.hidden, l.inputs),
            WeightBlock::W2 => (l.outputs, l.hidden),
        };
        check_len("direction operand a^T", a_t.len(), dr * total)?;
        check_len("direction operand b", b.len(), dr * cols)?;
        if rows.start > rows.end || rows.end > total {
            return Err(MlpError::Length {
                what: "direction rows",
                expected: total,
                found: rows.end,
            });
        }
        check_len("direction rows", out.len(), rows.len() * cols)?;
        if rows.is_empty() || dr == 0 {
            out.fill(0.0);
            return Ok(());
        }
        gemm::gemm(
            1.0,
            MatRef::new(&a_t[rows.start..], dr, rows.len(), total).t(),
            MatRef::new(b, dr, cols, cols),
            0.0,
            MatMut::new(out, rows.len(), cols, cols),
            Epilogue::None,
            scratch,
        )?;
        Ok(())
    }

    /// Low-rank update on `workers`, from the draws' factors that
    /// [`Resampled::low_rank_coefficients`] left in `workspace`'s rows at this step
    /// ([`Resampled::update_workspace`] for as many workers): the three phases (1 and 3 cut over
    /// the workers), then `theta -= h d` (through `velocity`, length P, when momentum is used).
    /// The same numbers on any number of workers. The rows are scaled in place, so each update
    /// needs the member phase's fresh factors. Costs `2 D r P` flops (D draws: M, or ceil(M /
    /// 2) with antithetic pairs) and no random numbers.
    pub fn low_rank_update<W: Workers>(
        &self,
        workers: &W,
        theta: &mut [f32],
        velocity: Option<&mut [f32]>,
        coeffs: &[f64],
        workspace: UpdateWorkspace<'_>,
    ) -> Result<(), MlpError> {
        let l = self.perturb.layout;
        let count = workers.count().max(1);
        check_len("coefficients", coeffs.len(), self.members)?;
        check_len("parameter vector", theta.len(), l.num_params())?;
        if let Some(v) = velocity.as_deref() {
            check_len("velocity", v.len(), l.num_params())?;
        }
        let ws = workspace;
        check_len("direction", ws.direction.len(), l.num_params())?;
        let (tmp_len, scratch_len) = (self.transpose_scratch_len(), self.whole_direction_scratch_len());
        check_len("transpose scratch", ws.tmp.len(), count * tmp_len)?;
        check_len("direction GEMM scratch", ws.scratch.len(), count * scratch_len)?;
        let mut rows = ws.rows;

        // Phase 1 by draw ranges: each worker scales its draws' rows.
        let jobs = rows.reborrow().by_parts(self, count).zip(shares(ws.tmp, tmp_len));
        workers.each(jobs, |((range, mine), tmp)| {
            self.scale_draw_rows(coeffs, range, tmp, mine)
        })?;

        // Phase 2 on this thread, phase 3 by row ranges of each weight block.
        let d = l.split_mut(ws.direction)?;
        self.low_rank_bias_direction(rows.db1, rows.db2, d.b1, d.b2)?;
        for (block, total, a_t, b, out) in [
            (WeightBlock::W1, l.hidden, &*rows.a1, &*rows.b1, d.w1),
            (WeightBlock::W2, l.outputs, &*rows.a2, &*rows.b2, d.w2),
        ] {
            let parts = direction_row_parts(total, count);
            let cols = out.len() / total.max(1);
            let mut rest = &mut *out;
            let jobs = (0..parts)
                .zip(shares(ws.scratch, scratch_len))
                .map(|(part, scratch)| {
                    let range = direction_rows(total, parts, part);
                    let (mine, others) = core::mem::take(&mut rest).split_at_mut(range.len() * cols);
                    rest = others;
                    (range, mine, scratch)
                });
            workers.each(jobs, |(range, mine, scratch)| {
                self.low_rank_direction_rows(block, a_t, b, range, mine, scratch)
            })?;
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
