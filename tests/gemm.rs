//! The GEMM kernels against a naive f64 reference, on every kernel path this CPU supports.
//!
//! Error bound: each element of op(A) op(B) is a sum of k products computed in f32 in some order
//! (blocked, with FMA or not). The classical bound for any summation order is
//! `|fl(s) - s| <= gamma_k * sum |a_ip b_pj|` with `gamma_k = k u / (1 - k u)`, u = 2^-24; alpha,
//! beta and the bias add three more roundings. We allow `(k + 4) u` times the magnitude
//! `|alpha| sum |a b| + |beta c| + |bias|`, doubled for slack: a wrong index, a missed tile or a
//! stale accumulator shows up as an error of order 1, far above it.

mod common;

use common::TestRng;
use ienk::gemm::{Epilogue, GemmError, KernelPath, MatMut, MatRef, gemm, gemm_on, scratch_len};

const U: f64 = 1.0 / (1u64 << 24) as f64;

struct Case {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    pad: usize,
    epilogue: u8, // 0 none, 1 bias, 2 bias + relu
}

fn paths() -> Vec<KernelPath> {
    common::supported_paths("kernel path")
}

/// The `rows x cols` matrix stored in `data` with leading dimension `ld`, transposed when
/// `trans`.
fn view(data: &[f32], rows: usize, cols: usize, ld: usize, trans: bool) -> MatRef<'_> {
    let v = MatRef::new(data, rows, cols, ld);
    if trans { v.t() } else { v }
}

/// Runs one case on `path` and checks every element against the f64 reference.
fn check(path: KernelPath, case: &Case, rng: &mut TestRng) {
    let Case {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha,
        beta,
        pad,
        epilogue,
    } = *case;
    // Stored shapes: A is m x k or (k x m when transposed), B is k x n or (n x k).
    let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if trans_b { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
    let a = rng.vec(ar * lda);
    let b = rng.vec(br * ldb);
    let bias = rng.vec(n);
    let c0: Vec<f32> = if beta == 0.0 {
        vec![f32::NAN; m * ldc]
    } else {
        rng.vec(m * ldc)
    };
    let mut c = c0.clone();
    let a_at = |i: usize, p: usize| if trans_a { a[p * lda + i] } else { a[i * lda + p] };
    let b_at = |p: usize, j: usize| if trans_b { b[j * ldb + p] } else { b[p * ldb + j] };

    let (av, bv) = (view(&a, ar, ac, lda, trans_a), view(&b, br, bc, ldb, trans_b));
    let epi = match epilogue {
        0 => Epilogue::None,
        1 => Epilogue::Bias(&bias),
        _ => Epilogue::BiasRelu(&bias),
    };
    let mut scratch = vec![0f32; scratch_len(m, n, k)];
    gemm_on(
        path,
        alpha,
        av,
        bv,
        beta,
        MatMut::new(&mut c, m, n, ldc),
        epi,
        &mut scratch,
    )
    .unwrap();

    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0f64, 0f64);
            for p in 0..k {
                let prod = f64::from(a_at(i, p)) * f64::from(b_at(p, j));
                exact += prod;
                mag += prod.abs();
            }
            exact *= f64::from(alpha);
            mag *= f64::from(alpha).abs();
            if beta != 0.0 {
                let cb = f64::from(beta) * f64::from(c0[i * ldc + j]);
                exact += cb;
                mag += cb.abs();
            }
            if epilogue > 0 {
                exact += f64::from(bias[j]);
                mag += f64::from(bias[j]).abs();
            }
            if epilogue == 2 {
                exact = exact.max(0.0);
            }
            let got = f64::from(c[i * ldc + j]);
            let tol = 2.0 * (k as f64 + 4.0) * U * mag + 1e-30;
            assert!(
                (got - exact).abs() <= tol,
                "{path}: m={m} n={n} k={k} ta={trans_a} tb={trans_b} alpha={alpha} beta={beta} \
                 epi={epilogue}: C[{i},{j}] = {got}, expected {exact} (tolerance {tol})"
            );
        }
        // Padding columns of C are never touched.
        for j in n..ldc {
            let (got, was) = (c[i * ldc + j], c0[i * ldc + j]);
            assert!(
                got.to_bits() == was.to_bits(),
                "{path}: padding C[{i},{j}] changed"
            );
        }
    }
}

const ODD_SIZES: [usize; 13] = [0, 1, 2, 3, 5, 7, 13, 16, 17, 31, 97, 127, 257];

#[test]
fn every_transpose_and_odd_shape_matches_reference() {
    for path in paths() {
        let mut rng = TestRng::new(7);
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for _ in 0..40 {
                    let case = Case {
                        m: ODD_SIZES[rng.below(ODD_SIZES.len())],
                        n: ODD_SIZES[rng.below(ODD_SIZES.len())],
                        k: ODD_SIZES[rng.below(ODD_SIZES.len())],
                        trans_a,
                        trans_b,
                        alpha: [1.0, -0.5, 2.5][rng.below(3)],
                        beta: [0.0, 1.0, -1.5][rng.below(3)],
                        pad: [0, 3][rng.below(2)],
                        epilogue: rng.below(3) as u8,
                    };
                    check(path, &case, &mut rng);
                }
            }
        }
    }
}

#[test]
fn every_small_m_row_count_matches_reference() {
    // 1..=SMALL_M rows take the unpacked path, SMALL_M + 1 the packed one.
    for path in paths() {
        let mut rng = TestRng::new(11);
        for m in 1..=ienk::gemm::SMALL_M + 1 {
            for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
                for beta in [0.0, 0.75] {
                    let case = Case {
                        m,
                        n: 37,
                        k: 61,
                        trans_a,
                        trans_b,
                        alpha: 1.5,
                        beta,
                        pad: 1,
                        epilogue: 2,
                    };
                    check(path, &case, &mut rng);
                }
            }
        }
    }
}

#[test]
fn every_ragged_row_count_of_the_packed_path_matches_reference() {
    // SMALL_M + 1 ..= SMALL_M + 24 rows leave every remainder of every kernel's MR (4, 6, 8, 12)
    // in the last tile, which the kernels compute with their short-edge variants.
    for path in paths() {
        let mut rng = TestRng::new(17);
        for m in ienk::gemm::SMALL_M + 1..=ienk::gemm::SMALL_M + 24 {
            for beta in [0.0, 0.75] {
                let case = Case {
                    m,
                    n: 37,
                    k: 61,
                    trans_a: false,
                    trans_b: true,
                    alpha: 1.5,
                    beta,
                    pad: 1,
                    epilogue: 2,
                };
                check(path, &case, &mut rng);
            }
        }
    }
}

#[test]
fn large_and_block_crossing_shapes_match_reference() {
    // 1023 crosses every MC, KC and NC block boundary of every kernel and is prime-ish (3 x 11 x 31).
    // (3, 50, 2100) with both transposed gathers A rows in chunks on the unpacked path.
    let shapes = [
        (1023, 67, 1023, false, true),
        (131, 1031, 300, true, true),
        (500, 128, 784, false, true),
        (37, 1280, 784, true, false),
        (3, 50, 2100, true, true),
        (301, 10, 128, false, true), // few columns: ragged NR panels
    ];
    for path in paths() {
        let mut rng = TestRng::new(13);
        for &(m, n, k, trans_a, trans_b) in &shapes {
            let case = Case {
                m,
                n,
                k,
                trans_a,
                trans_b,
                alpha: 1.0,
                beta: 0.5,
                pad: 0,
                epilogue: 1,
            };
            check(path, &case, &mut rng);
        }
    }
}

#[test]
fn identity_times_b_is_b_exactly() {
    for path in paths() {
        let mut rng = TestRng::new(3);
        for n in [1, 15, 33] {
            let m = 29;
            let mut eye = vec![0f32; m * m];
            (0..m).for_each(|i| eye[i * m + i] = 1.0);
            let b = rng.vec(m * n);
            let mut c = vec![f32::NAN; m * n];
            let mut scratch = vec![0f32; scratch_len(m, n, m)];
            let (a, bv) = (MatRef::new(&eye, m, m, m), MatRef::new(&b, m, n, n));
            gemm_on(
                path,
                1.0,
                a,
                bv,
                0.0,
                MatMut::new(&mut c, m, n, n),
                Epilogue::None,
                &mut scratch,
            )
            .unwrap();
            assert_eq!(c, b, "{path}");
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_ub() {
    let a = [0f32; 6];
    let mut c = [0f32; 4];
    let mut s = vec![0f32; scratch_len(2, 2, 3)];
    let err = gemm(
        1.0,
        MatRef::new(&a, 2, 3, 3),
        MatRef::new(&a, 2, 3, 3),
        0.0,
        MatMut::new(&mut c, 2, 2, 2),
        Epilogue::None,
        &mut s,
    );
    assert!(matches!(err, Err(GemmError::ShapeMismatch { .. })), "{err:?}");
    let err = gemm(
        1.0,
        MatRef::new(&a, 2, 3, 3),
        MatRef::new(&a[..5], 3, 2, 2),
        0.0,
        MatMut::new(&mut c, 2, 2, 2),
        Epilogue::None,
        &mut s,
    );
    assert!(matches!(err, Err(GemmError::SliceTooShort { .. })), "{err:?}");
    let err = gemm(
        1.0,
        MatRef::new(&a, 2, 3, 2),
        MatRef::new(&a, 3, 2, 2),
        0.0,
        MatMut::new(&mut c, 2, 2, 2),
        Epilogue::None,
        &mut s,
    );
    assert!(matches!(err, Err(GemmError::LeadingDimension { .. })), "{err:?}");
    let err = gemm(
        1.0,
        MatRef::new(&a, 2, 3, 3),
        MatRef::new(&a, 3, 2, 2),
        0.0,
        MatMut::new(&mut c, 2, 2, 2),
        Epilogue::Bias(&a[..3]),
        &mut s,
    );
    assert!(
        matches!(
            err,
            Err(GemmError::BiasLength {
                expected: 2,
                found: 3
            })
        ),
        "{err:?}"
    );
    let big = vec![0f32; 64 * 64];
    let mut cbig = vec![0f32; 64 * 64];
    let err = gemm(
        1.0,
        MatRef::new(&big, 64, 64, 64),
        MatRef::new(&big, 64, 64, 64),
        0.0,
        MatMut::new(&mut cbig, 64, 64, 64),
        Epilogue::None,
        &mut s,
    );
    assert!(matches!(err, Err(GemmError::ScratchTooSmall { .. })), "{err:?}");
    let huge = MatRef::new(&a, usize::MAX, 3, usize::MAX);
    let err = gemm(
        1.0,
        huge,
        MatRef::new(&a, 3, 2, 2),
        0.0,
        MatMut::new(&mut c, 2, 2, 2),
        Epilogue::None,
        &mut s,
    );
    assert!(err.is_err());
}

#[test]
fn row_blocks_computed_separately_equal_the_whole() {
    let (m, n, k) = (101, 40, 77);
    let mut rng = TestRng::new(5);
    let a = rng.vec(m * k);
    let b = rng.vec(n * k);
    let mut whole = vec![0f32; m * n];
    let mut s = vec![0f32; scratch_len(m, n, k)];
    let (av, bv) = (MatRef::new(&a, m, k, k), MatRef::new(&b, n, k, k).t());
    gemm(
        1.0,
        av,
        bv,
        0.0,
        MatMut::new(&mut whole, m, n, n),
        Epilogue::None,
        &mut s,
    )
    .unwrap();
    let mut parts = vec![0f32; m * n];
    let (top, bottom) = MatMut::new(&mut parts, m, n, n).split_rows(60).unwrap();
    gemm(1.0, av.rows(0, 60).unwrap(), bv, 0.0, top, Epilogue::None, &mut s).unwrap();
    gemm(
        1.0,
        av.rows(60, 41).unwrap(),
        bv,
        0.0,
        bottom,
        Epilogue::None,
        &mut s,
    )
    .unwrap();
    assert_eq!(whole, parts);
}

#[test]
fn forcing_a_path_changes_the_active_kernel() {
    use ienk::gemm::{active_kernel, detect_best, force_kernel};
    for path in paths() {
        force_kernel(Some(path)).unwrap();
        assert_eq!(active_kernel(), path);
    }
    force_kernel(None).unwrap();
    assert_eq!(active_kernel(), detect_best());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        assert_eq!(detect_best(), KernelPath::Avx512);
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert_eq!(detect_best(), KernelPath::Avx2);
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(detect_best(), KernelPath::Neon);
    for path in KernelPath::ALL.into_iter().filter(|p| !p.is_supported()) {
        assert_eq!(force_kernel(Some(path)), Err(path));
    }
}

/// The AVX-512 path gives the AVX2 path's bits: the same depth blocking and the same FMA chain
/// per element, whatever the tile shapes (so a seed trains the same model on both). Every
/// transpose, epilogue and alpha/beta, on odd shapes, shapes of the small-row path, ragged
/// tiles of both kernels and depths that cross their blocks. Skipped unless the CPU has both.
#[test]
fn avx512_gives_the_avx2_bits() {
    let (avx2, avx512) = (KernelPath::Avx2, KernelPath::Avx512);
    if !(avx2.is_supported() && avx512.is_supported()) {
        eprintln!("SKIPPED avx512_gives_the_avx2_bits: this CPU lacks AVX2 or AVX-512");
        return;
    }
    let mut rng = TestRng::new(29);
    let shapes = [
        (1, 128, 784),
        (3, 10, 128),
        (4, 33, 300),
        (5, 128, 784),
        (13, 47, 1000),
        (100, 10, 128),
        (500, 128, 784),
        (128, 784, 1500),
        (7, 9, 13),
        (31, 257, 97),
    ];
    for (s, &(m, n, k)) in shapes.iter().enumerate() {
        let (trans_a, trans_b) = (s % 2 == 1, s % 3 != 0);
        let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
        let (br, bc) = if trans_b { (n, k) } else { (k, n) };
        let (a, b, bias, c0) = (rng.vec(ar * ac), rng.vec(br * bc), rng.vec(n), rng.vec(m * n));
        let (av, bv) = (view(&a, ar, ac, ac, trans_a), view(&b, br, bc, bc, trans_b));
        let mut scratch = vec![0f32; scratch_len(m, n, k)];
        for (alpha, beta, epilogue) in [
            (1.0, 0.0, Epilogue::BiasRelu(&bias)),
            (0.7, 1.0, Epilogue::None),
            (-1.3, 0.5, Epilogue::Bias(&bias)),
        ] {
            let mut run = |path| {
                let mut c = c0.clone();
                let out = MatMut::new(&mut c, m, n, n);
                gemm_on(path, alpha, av, bv, beta, out, epilogue, &mut scratch).unwrap();
                c
            };
            let (x, y) = (run(avx2), run(avx512));
            let differ = x
                .iter()
                .zip(&y)
                .filter(|(p, q)| p.to_bits() != q.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{m}x{n}x{k} ta={trans_a} tb={trans_b} alpha={alpha} beta={beta}: {differ} elements differ"
            );
        }
    }
}
