//! The vectorised `exp` against `libm::exp`, bit for bit, on every kernel path this CPU has:
//! random arguments over the whole range, and many on each side of every branch of the scalar
//! code (the argument-reduction cases, the range where the vector path hands over to libm).

mod common;

use ienk::exp::exp_into_on;

/// `x` and its neighbours up to `ulps` representable values away on each side.
fn around(x: f64, ulps: i64) -> impl Iterator<Item = f64> {
    (-ulps..=ulps).map(move |d| f64::from_bits((x.to_bits() as i64 + d) as u64))
}

fn arguments() -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut xs = vec![];
    // Uniform over [-750, 750], and over the softmax's usual [-40, 0].
    for _ in 0..200_000 {
        let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
        xs.push(1500.0 * u - 750.0);
        xs.push(-40.0 * u);
    }
    // Every branch boundary of e_exp.c, on both signs: 2^-28, 0.5 ln 2, 1.5 ln 2, 708.39 (the
    // vector path's limit), the overflow and underflow thresholds; and the points where
    // INVLN2 x + 1/2 crosses an integer (the truncation of k).
    let ln2 = core::f64::consts::LN_2;
    let mut edges = vec![
        2f64.powi(-28),
        0.5 * ln2,
        1.5 * ln2,
        708.396_418_532_264_1,
        709.782_712_893_384,
        745.133_219_101_941_1,
    ];
    edges.extend((1..1024).map(|n| (n as f64 + 0.5) * ln2));
    for e in edges {
        for x in around(e, 40).chain(around(-e, 40)) {
            xs.push(x);
        }
    }
    xs.extend([
        0.0,
        -0.0,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        1e-310,
        -1e-310,
        f64::MAX,
        f64::MIN,
    ]);
    xs.extend([f64::INFINITY, f64::NEG_INFINITY, f64::NAN]);
    xs
}

#[test]
fn vector_exp_equals_libm_bit_for_bit() {
    let xs = arguments();
    for path in common::supported_paths("exp") {
        // Offsets 0..4 put each value in every lane, and the last few in the scalar tail.
        for offset in 0..4 {
            let xs = &xs[offset..];
            let mut out = vec![0f64; xs.len()];
            exp_into_on(path, xs, &mut out);
            for (&x, &got) in xs.iter().zip(&out) {
                let want = libm::exp(x);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{path:?}: exp({x:e}) = {got:e}, libm {want:e}"
                );
            }
        }
    }
}
