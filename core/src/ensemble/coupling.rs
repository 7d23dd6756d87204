//! The EKI's coupling matrix `D_kj = <G_k - Gbar, g_j>` (ALGORITHM.md section 4), accumulated
//! in f64: member k's output spread against member j's innovation.
//!
//! `M^2 dim` multiply-adds in f64 (a twentieth of the update's `M^2 P` in f32 for MNIST at batch
//! 500): [`coupling_rows`] centres [`ROWS`] outputs at a time in f64, then takes their dot
//! products with the innovations [`COLS`] at a time, each in [`LANES`] partial sums, so that
//! every loaded value feeds several sums and the compiler keeps the sums in vector registers.
//! Each sum's order does not depend on the block or on the CPU: lane `l` adds the terms `t = l
//! mod LANES` in turn, the lanes meet as `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`,
//! then the tail's terms follow. So the portable build and the AVX and AVX-512 builds of the
//! same code give the same bits (tested), and any cut of D's rows gives the rows of the whole.

use core::ops::Range;

use crate::gemm::KernelPath;
use crate::mlp::{MlpError, check_len};

/// Outputs centred and multiplied together (rows of D per block).
pub const ROWS: usize = 4;
/// Innovations per block (columns of D).
pub const COLS: usize = 2;
/// Partial sums per dot product.
pub const LANES: usize = 8;

/// Bytes of innovations a pass over D's rows reads: a tile of innovations this large stays in
/// a core's L2 cache while every block of rows goes past it, instead of all M innovations
/// being read again for each block.
const TILE_BYTES: usize = 512 * 1024;

/// Innovations of `dim` numbers per tile: as many as fit in [`TILE_BYTES`], a multiple of
/// [`COLS`], at least [`COLS`].
fn tile_members(dim: usize) -> usize {
    let fit = TILE_BYTES / (4 * dim.max(1));
    (fit / COLS * COLS).max(COLS)
}

/// f64 workspace [`coupling_rows`] needs per call: [`ROWS`] centred outputs of `dim` numbers.
pub fn coupling_workspace_len(dim: usize) -> usize {
    ROWS * dim
}

/// The members' mean output `gbar` (length `dim`), summed in f64. O(M dim).
pub fn output_mean(members: &MemberOutputs<'_>, gbar: &mut [f64]) -> Result<(), MlpError> {
    let dim = gbar.len();
    check_len(
        "member outputs",
        members.outputs.len(),
        members.members.saturating_mul(dim),
    )?;
    gbar.fill(0.0);
    for gk in members.outputs.chunks_exact(dim.max(1)) {
        gbar.iter_mut().zip(gk).for_each(|(s, &z)| *s += f64::from(z));
    }
    let count = members.members.max(1) as f64;
    gbar.iter_mut().for_each(|s| *s /= count);
    Ok(())
}

/// M members' outputs `G_k` and innovations `g_j` (the loss's gradient with respect to the
/// outputs), `dim` numbers each, members after one another.
#[derive(Clone, Copy, Debug)]
pub struct MemberOutputs<'a> {
    /// `G_1 .. G_M`, `M x dim`.
    pub outputs: &'a [f32],
    /// `g_1 .. g_M`, `M x dim`.
    pub innovations: &'a [f32],
    /// M.
    pub members: usize,
}

/// Rows `rows` of `D` (written to `d_rows`, `rows.len() x M` row-major):
/// `D_kj = sum_t (outputs[k][t] - gbar[t]) innovations[j][t]`, every term and sum in f64, with
/// `gbar` the members' mean output ([`output_mean`]) and `centred`
/// [`coupling_workspace_len`]`(dim)` floats. Runs the AVX or AVX-512 build on those paths, with
/// the same results. Costs `rows.len() M dim` multiply-adds.
pub fn coupling_rows(
    path: KernelPath,
    members: &MemberOutputs<'_>,
    gbar: &[f64],
    rows: Range<usize>,
    centred: &mut [f64],
    d_rows: &mut [f64],
) -> Result<(), MlpError> {
    let (m, dim) = (members.members, gbar.len());
    let len = m.checked_mul(dim).ok_or(MlpError::Length {
        what: "member outputs",
        expected: usize::MAX,
        found: m,
    })?;
    check_len("member outputs", members.outputs.len(), len)?;
    check_len("innovations", members.innovations.len(), len)?;
    check_len("coupling workspace", centred.len(), coupling_workspace_len(dim))?;
    if rows.end > m || rows.start > rows.end {
        return Err(MlpError::Length {
            what: "coupling rows",
            expected: m,
            found: rows.end,
        });
    }
    check_len("coupling rows", d_rows.len(), rows.len() * m)?;
    let problem = Coupling {
        outputs: members.outputs,
        innovations: members.innovations,
        gbar,
        rows,
        members: m,
    };
    #[cfg(target_arch = "x86_64")]
    {
        if path == KernelPath::Avx512 && path.is_supported() {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { x86::rows_avx512(&problem, centred, d_rows) };
            return Ok(());
        }
        if path.runs_avx2_build() {
            // SAFETY: runs_avx2_build checked that the CPU has AVX2, hence AVX.
            unsafe { x86::rows_avx(&problem, centred, d_rows) };
            return Ok(());
        }
    }
    let _ = path;
    problem.rows(centred, d_rows);
    Ok(())
}

/// One call's operands, lengths checked.
struct Coupling<'a> {
    outputs: &'a [f32],
    innovations: &'a [f32],
    gbar: &'a [f64],
    rows: Range<usize>,
    members: usize,
}

impl Coupling<'_> {
    /// The whole call: [`ROWS`] outputs centred at a time, then their blocks against every
    /// innovation.
    #[inline(always)]
    fn rows(&self, centred: &mut [f64], d_rows: &mut [f64]) {
        let (m, dim) = (self.members, self.gbar.len());
        let tile = tile_members(dim);
        for j0 in (0..m).step_by(tile) {
            let js = j0..m.min(j0 + tile);
            let mut k = self.rows.start;
            while k < self.rows.end {
                let r = ROWS.min(self.rows.end - k);
                for (a, c) in centred.chunks_exact_mut(dim.max(1)).take(r).enumerate() {
                    let z = &self.outputs[(k + a) * dim..(k + a + 1) * dim];
                    c.iter_mut()
                        .zip(z)
                        .zip(self.gbar)
                        .for_each(|((c, &z), &zb)| *c = f64::from(z) - zb);
                }
                let out = &mut d_rows[(k - self.rows.start) * m..(k - self.rows.start + r) * m];
                match r {
                    4 => self.row_block::<4>(centred, out, js.clone()),
                    3 => self.row_block::<3>(centred, out, js.clone()),
                    2 => self.row_block::<2>(centred, out, js.clone()),
                    _ => self.row_block::<1>(centred, out, js.clone()),
                }
                k += r;
            }
        }
    }

    /// `R` centred outputs against the innovations `js`, [`COLS`] at a time; `out` is `R x M`.
    #[inline(always)]
    fn row_block<const R: usize>(&self, centred: &[f64], out: &mut [f64], js: Range<usize>) {
        let (m, dim) = (self.members, self.gbar.len());
        let mut j = js.start;
        while j < js.end {
            let c = COLS.min(js.end - j);
            let g = &self.innovations[j * dim..(j + c) * dim];
            if c == COLS {
                block::<R, COLS>(centred, g, dim, out, j, m);
            } else {
                block::<R, 1>(centred, g, dim, out, j, m);
            }
            j += c;
        }
    }
}

/// The `R x C` dot products of `R` centred outputs (the first `R dim` of `centred`) with `C`
/// innovations (`g`, `C x dim`), written to `out[a m + j0 + b]`.
#[inline(always)]
fn block<const R: usize, const C: usize>(
    centred: &[f64],
    g: &[f32],
    dim: usize,
    out: &mut [f64],
    j0: usize,
    m: usize,
) {
    let whole = dim / LANES * LANES;
    let mut rows: [&[f64]; R] = [&[]; R];
    for (a, row) in rows.iter_mut().enumerate() {
        *row = &centred[a * dim..a * dim + whole];
    }
    let mut cols: [&[f32]; C] = [&[]; C];
    for (b, col) in cols.iter_mut().enumerate() {
        *col = &g[b * dim..b * dim + whole];
    }
    let mut acc = [[[0f64; LANES]; C]; R];
    let mut t = 0;
    while t < whole {
        let mut gv = [[0f64; LANES]; C];
        for (gb, col) in gv.iter_mut().zip(&cols) {
            for (v, &y) in gb.iter_mut().zip(&col[t..t + LANES]) {
                *v = f64::from(y);
            }
        }
        for (acc_a, row) in acc.iter_mut().zip(&rows) {
            let x = &row[t..t + LANES];
            for (acc_ab, gb) in acc_a.iter_mut().zip(&gv) {
                for l in 0..LANES {
                    acc_ab[l] += x[l] * gb[l];
                }
            }
        }
        t += LANES;
    }
    for (a, acc_a) in acc.iter().enumerate() {
        let row = &centred[a * dim..(a + 1) * dim];
        for (b, lanes) in acc_a.iter().enumerate() {
            let col = &g[b * dim..(b + 1) * dim];
            let mut sum = reduce8(lanes);
            for (&x, &y) in row[whole..].iter().zip(&col[whole..]) {
                sum += x * f64::from(y);
            }
            out[a * m + j0 + b] = sum;
        }
    }
}

/// The sum of 8 partial sums: `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
#[inline(always)]
fn reduce8(l: &[f64; LANES]) -> f64 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Coupling;

    /// [`Coupling::rows`] compiled for AVX (4 lanes of f64 per register; no FMA, so the same
    /// roundings as the portable build).
    #[target_feature(enable = "avx")]
    pub(super) fn rows_avx(problem: &Coupling<'_>, centred: &mut [f64], d_rows: &mut [f64]) {
        problem.rows(centred, d_rows);
    }

    /// [`Coupling::rows`] compiled for AVX-512F (8 lanes of f64 per register; no FMA
    /// contraction, so the same roundings as the portable build).
    #[target_feature(enable = "avx512f")]
    pub(super) fn rows_avx512(problem: &Coupling<'_>, centred: &mut [f64], d_rows: &mut [f64]) {
        problem.rows(centred, d_rows);
    }
}
