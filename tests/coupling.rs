//! The EKI's coupling matrix D against a naive f64 double loop, on odd shapes (1 and prime
//! member counts, output lengths 0, 1 and primes, non-multiples of the kernel's blocks, lanes and
//! cache tiles), row ranges against the whole matrix, every kernel path against the portable one
//! bit for bit, and the refusals of wrong lengths.

mod common;

use common::{TestRng, supported_paths};
use ienk::ensemble::coupling::{
    COLS, LANES, MemberOutputs, ROWS, coupling_rows, coupling_workspace_len, output_mean,
};
use ienk::gemm::KernelPath;
use ienk::mlp::MlpError;

/// Member counts: 1, primes, and the blocks' sizes plus and minus one.
const MEMBERS: [usize; 7] = [1, 2, 3, ROWS + 1, 7, 2 * COLS + 1, 13];
/// Output lengths: none, one, primes, the lanes' count plus and minus one.
const DIMS: [usize; 8] = [0, 1, LANES - 1, LANES, LANES + 1, 17, 37, 5 * LANES + 3];

/// The naive reference: `D_kj = sum_t (G_k[t] - Gbar[t]) g_j[t]` in f64, one term after
/// another, with `Gbar` the f64 mean; and `sum_t |(G_k[t] - Gbar[t]) g_j[t]|` for the error bound.
fn naive(outputs: &[f32], innovations: &[f32], m: usize, dim: usize) -> (Vec<f64>, Vec<f64>) {
    let gbar: Vec<f64> = (0..dim)
        .map(|t| (0..m).map(|k| f64::from(outputs[k * dim + t])).sum::<f64>() / m as f64)
        .collect();
    let mut d = vec![0f64; m * m];
    let mut size = vec![0f64; m * m];
    for k in 0..m {
        for j in 0..m {
            for t in 0..dim {
                let term = (f64::from(outputs[k * dim + t]) - gbar[t]) * f64::from(innovations[j * dim + t]);
                d[k * m + j] += term;
                size[k * m + j] += term.abs();
            }
        }
    }
    (d, size)
}

/// D's rows `rows` on `path` for `m` members' `outputs` and `innovations`.
fn rows_on(
    path: KernelPath,
    outputs: &[f32],
    innovations: &[f32],
    m: usize,
    rows: std::ops::Range<usize>,
) -> Vec<f64> {
    let dim = outputs.len() / m;
    let members = MemberOutputs {
        outputs,
        innovations,
        members: m,
    };
    let mut gbar = vec![f64::NAN; dim];
    output_mean(&members, &mut gbar).unwrap();
    let mut centred = vec![f64::NAN; coupling_workspace_len(dim)];
    let mut d = vec![f64::NAN; rows.len() * m];
    coupling_rows(path, &members, &gbar, rows, &mut centred, &mut d).unwrap();
    d
}

/// Long outputs: the kernel reads the innovations in tiles of 4 members (half a MiB), so 13
/// members take four tiles, the last of one member.
const LONG: usize = 30011;

#[test]
fn coupling_matches_the_naive_double_loop_on_odd_shapes() {
    let mut rng = TestRng::new(21);
    let shapes = MEMBERS.iter().flat_map(|&m| DIMS.map(|dim| (m, dim)));
    for (m, dim) in shapes.chain([(13, LONG), (2, LONG)]) {
        // Outputs around an offset, so that centring matters.
        let outputs: Vec<f32> = rng.vec(m * dim).iter().map(|v| 3.0 + v).collect();
        let innovations = rng.vec(m * dim);
        let (want, size) = naive(&outputs, &innovations, m, dim);
        let got = rows_on(KernelPath::Portable, &outputs, &innovations, m, 0..m);
        for (i, ((&g, &w), &s)) in got.iter().zip(&want).zip(&size).enumerate() {
            // Two recursive sums of `dim` f64 terms in other orders: each is within `dim`
            // roundings of the sum of the terms' sizes.
            assert!(
                (g - w).abs() <= (dim as f64 + 1.0) * f64::EPSILON * s,
                "M {m}, dim {dim}, entry {i}: {g} against {w}"
            );
            if dim == 0 {
                assert_eq!(g, 0.0);
            }
        }
    }
}

#[test]
fn coupling_rows_are_the_rows_of_the_whole_matrix() {
    let mut rng = TestRng::new(22);
    let (m, dim) = (13, 5 * LANES + 3);
    let (outputs, innovations) = (rng.vec(m * dim), rng.vec(m * dim));
    let whole = rows_on(KernelPath::Portable, &outputs, &innovations, m, 0..m);
    for rows in [0..0, 0..1, 3..4, 2..7, 5..13, 12..13] {
        let part = rows_on(KernelPath::Portable, &outputs, &innovations, m, rows.clone());
        assert_eq!(part, whole[rows.start * m..rows.end * m], "rows {rows:?}");
    }
}

#[test]
fn every_kernel_path_gives_the_portable_bits() {
    let mut rng = TestRng::new(23);
    let shapes = MEMBERS.iter().flat_map(|&m| DIMS.map(|dim| (m, dim)));
    for (m, dim) in shapes.chain([(13, LONG)]) {
        let (outputs, innovations) = (rng.vec(m * dim), rng.vec(m * dim));
        let portable = rows_on(KernelPath::Portable, &outputs, &innovations, m, 0..m);
        for path in supported_paths("the coupling matrix") {
            let got = rows_on(path, &outputs, &innovations, m, 0..m);
            let same = got.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{path}, M {m}, dim {dim}");
        }
    }
}

#[test]
fn wrong_lengths_are_refused() {
    let (m, dim) = (3, 5);
    let outputs = vec![0.5f32; m * dim];
    let innovations = vec![0.25f32; m * dim];
    let members = MemberOutputs {
        outputs: &outputs,
        innovations: &innovations,
        members: m,
    };
    let gbar = vec![0f64; dim];
    let mut centred = vec![0f64; coupling_workspace_len(dim)];
    let mut d = vec![0f64; m * m];
    let what = |r: Result<(), MlpError>| match r {
        Err(MlpError::Length { what, .. }) => what,
        other => panic!("not refused: {other:?}"),
    };
    let path = KernelPath::Portable;
    let short = &mut centred[..ROWS * dim - 1];
    assert_eq!(
        what(coupling_rows(path, &members, &gbar, 0..m, short, &mut d)),
        "coupling workspace"
    );
    assert_eq!(
        what(coupling_rows(
            path,
            &members,
            &gbar,
            0..m + 1,
            &mut centred,
            &mut d
        )),
        "coupling rows"
    );
    assert_eq!(
        what(coupling_rows(path, &members, &gbar, 0..2, &mut centred, &mut d)),
        "coupling rows"
    );
    let fewer = MemberOutputs {
        innovations: &innovations[1..],
        ..members
    };
    assert_eq!(
        what(coupling_rows(path, &fewer, &gbar, 0..m, &mut centred, &mut d)),
        "innovations"
    );
    assert_eq!(
        what(output_mean(&members, &mut vec![0f64; dim + 1])),
        "member outputs"
    );
    assert!(d.iter().all(|&v| v == 0.0), "a refused call wrote D");
}
