//! The gradient baselines: SGD, Nesterov momentum and Adam, over flat slices. Their state lives in
//! caller-provided slices of the parameter vector's length. Each step is O(P).

/// Plain stochastic gradient descent: `theta -= lr g`.
#[derive(Clone, Copy, Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
}

impl Sgd {
    /// One step.
    pub fn step(&self, theta: &mut [f32], grad: &[f32]) {
        theta.iter_mut().zip(grad).for_each(|(t, &g)| *t -= self.lr * g);
    }
}

/// Nesterov momentum in PyTorch's form (`torch.optim.SGD(nesterov=True)`), a reparametrisation of
/// Sutskever's look-ahead form that needs the gradient at `theta` only:
/// `v = mu v + g; theta -= lr (g + mu v)`.
#[derive(Clone, Copy, Debug)]
pub struct Nag {
    /// Learning rate.
    pub lr: f32,
    /// Momentum mu (0.9 in the thesis).
    pub momentum: f32,
}

impl Nag {
    /// Momentum of the thesis.
    pub const MOMENTUM: f32 = 0.9;

    /// One step; `velocity` starts at zeros.
    pub fn step(&self, theta: &mut [f32], grad: &[f32], velocity: &mut [f32]) {
        for ((t, &g), v) in theta.iter_mut().zip(grad).zip(velocity) {
            *v = self.momentum * *v + g;
            *t -= self.lr * (g + self.momentum * *v);
        }
    }
}

/// Adam (Kingma & Ba 2015) with bias correction:
/// `m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; theta -= lr mhat / (sqrt(vhat) + eps)`.
#[derive(Clone, Copy, Debug)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment (0.9).
    pub beta1: f32,
    /// Decay of the second moment (0.999).
    pub beta2: f32,
    /// Added to the root of the second moment (1e-8).
    pub eps: f32,
}

impl Adam {
    /// Adam with the usual constants (0.9, 0.999, 1e-8).
    pub fn new(lr: f32) -> Adam {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Step number `t` (1 for the first step); `m` and `v` start at zeros. O(P); 8 lanes at a
    /// time on AVX2 CPUs (chosen like the GEMM kernels), 4 elsewhere, with the same IEEE
    /// results.
    pub fn step(&self, t: u32, theta: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        let k = self.constants(t);
        #[cfg(target_arch = "x86_64")]
        if crate::gemm::active_kernel().runs_avx2_build() {
            // SAFETY: the CPU has AVX2, hence AVX (runs_avx2_build checks it).
            unsafe { adam_avx(&k, theta, grad, m, v) };
            return;
        }
        adam_lanes(&k, theta, grad, m, v, sqrt4);
    }

    /// The step's scalars: `theta -= lr / c1 * m / (sqrt(v / c2) + eps)`, with the bias
    /// corrections folded in.
    fn constants(&self, t: u32) -> AdamConstants {
        let t = t.max(1) as i32;
        let c1 = 1.0 - libm::pow(f64::from(self.beta1), f64::from(t));
        let c2 = 1.0 - libm::pow(f64::from(self.beta2), f64::from(t));
        AdamConstants {
            step: (f64::from(self.lr) / c1) as f32,
            inv_c2: (1.0 / c2) as f32,
            b1: self.beta1,
            b2: self.beta2,
            eps: self.eps,
        }
    }
}

/// The scalars of one Adam step.
struct AdamConstants {
    step: f32,
    inv_c2: f32,
    b1: f32,
    b2: f32,
    eps: f32,
}

/// The Adam update, `L` lanes at a time so that the square roots are one packed instruction
/// (`sqrt`) and the rest vectorises; the tail element by element. Every lane count gives the
/// same IEEE results.
#[inline(always)]
fn adam_lanes<const L: usize>(
    k: &AdamConstants,
    theta: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    sqrt: impl Fn([f32; L]) -> [f32; L],
) {
    let (b1, b2, eps, step, inv_c2) = (k.b1, k.b2, k.eps, k.step, k.inv_c2);
    let mut tc = theta.chunks_exact_mut(L);
    let mut gc = grad.chunks_exact(L);
    let mut mc = m.chunks_exact_mut(L);
    let mut vc = v.chunks_exact_mut(L);
    for (((t, g), m), v) in (&mut tc).zip(&mut gc).zip(&mut mc).zip(&mut vc) {
        let mut scaled = [0f32; L];
        for l in 0..L {
            m[l] = b1 * m[l] + (1.0 - b1) * g[l];
            v[l] = b2 * v[l] + (1.0 - b2) * g[l] * g[l];
            scaled[l] = v[l] * inv_c2;
        }
        let root = sqrt(scaled);
        for l in 0..L {
            t[l] -= step * m[l] / (root[l] + eps);
        }
    }
    let tails = tc
        .into_remainder()
        .iter_mut()
        .zip(gc.remainder())
        .zip(mc.into_remainder())
        .zip(vc.into_remainder());
    for (((t, &g), m), v) in tails {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *t -= step * *m / (libm::sqrtf(*v * inv_c2) + eps);
    }
}

/// [`adam_lanes`] with 8 lanes, compiled for AVX.
///
/// # Safety
/// The CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn adam_avx(k: &AdamConstants, theta: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
    // SAFETY: the CPU has AVX (this function's contract).
    adam_lanes(k, theta, grad, m, v, |x| unsafe { sqrt8(x) });
}

/// Eight correctly rounded square roots in one AVX instruction.
///
/// # Safety
/// The CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sqrt8(x: [f32; 8]) -> [f32; 8] {
    use core::arch::x86_64::{_mm256_loadu_ps, _mm256_sqrt_ps, _mm256_storeu_ps};
    let mut out = [0f32; 8];
    // SAFETY: `x` and `out` each hold 8 floats for the unaligned load and store; the CPU has
    // AVX (caller's contract).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_sqrt_ps(_mm256_loadu_ps(x.as_ptr()))) };
    out
}

/// Four square roots (correctly rounded, like `libm::sqrtf`): one SSE instruction on x86_64,
/// where SSE is part of the baseline; libm elsewhere.
#[inline(always)]
fn sqrt4(x: [f32; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_loadu_ps, _mm_sqrt_ps, _mm_storeu_ps};
        let mut out = [0f32; 4];
        // SAFETY: SSE is part of the x86_64 baseline, so these instructions always exist; `x`
        // and `out` each hold 4 floats for the unaligned load and store.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), _mm_sqrt_ps(_mm_loadu_ps(x.as_ptr()))) };
        out
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        x.map(libm::sqrtf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX build (8 lanes) and the 4-lane one give the same bits, tail included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn adam_lane_counts_agree_bit_for_bit() {
        if !crate::gemm::KernelPath::Avx2.is_supported() {
            std::eprintln!("SKIPPED the AVX Adam step: this CPU lacks AVX2");
            return;
        }
        let n = 1003;
        let wave = |i: usize, f: f32| libm::sinf(i as f32 * f) * 0.3;
        let grad: std::vec::Vec<f32> = (0..n).map(|i| wave(i, 0.7)).collect();
        let start: std::vec::Vec<f32> = (0..n).map(|i| wave(i, 1.3)).collect();
        let k = Adam::new(0.01).constants(3);
        let (mut t4, mut m4, mut v4) = (
            start.clone(),
            start.clone(),
            start.iter().map(|x| x * x).collect::<std::vec::Vec<_>>(),
        );
        let (mut t8, mut m8, mut v8) = (t4.clone(), m4.clone(), v4.clone());
        adam_lanes(&k, &mut t4, &grad, &mut m4, &mut v4, sqrt4);
        // SAFETY: AVX2 (hence AVX) was checked above.
        unsafe { adam_avx(&k, &mut t8, &grad, &mut m8, &mut v8) };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::vec::Vec<_>>();
        assert_eq!(bits(&t4), bits(&t8));
        assert_eq!(bits(&m4), bits(&m8));
        assert_eq!(bits(&v4), bits(&v8));
    }

    fn close(a: &[f32], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((f64::from(*x) - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_by_hand() {
        let mut t = [1.0, -2.0];
        Sgd { lr: 0.1 }.step(&mut t, &[0.5, -1.0]);
        close(&t, &[0.95, -1.9]);
    }

    #[test]
    fn nag_by_hand() {
        // Step 1: v = g = 1; theta = 1 - 0.1 (1 + 0.9) = 0.81.
        // Step 2 (g = 2): v = 0.9 + 2 = 2.9; theta = 0.81 - 0.1 (2 + 2.61) = 0.349.
        let opt = Nag {
            lr: 0.1,
            momentum: 0.9,
        };
        let (mut t, mut v) = ([1.0f32], [0.0f32]);
        opt.step(&mut t, &[1.0], &mut v);
        close(&t, &[0.81]);
        opt.step(&mut t, &[2.0], &mut v);
        close(&t, &[0.349]);
        close(&v, &[2.9]);
    }

    #[test]
    fn packed_square_roots_equal_libm() {
        for x in [0.0f32, 1e-30, 2.0, 3.0, 1e10, f32::MAX, 0.5, 7.25] {
            assert_eq!(sqrt4([x; 4]), [libm::sqrtf(x); 4]);
        }
    }

    #[test]
    fn adam_on_a_vector_matches_the_formula_in_f64() {
        // 11 entries: two packed chunks and a tail of 3.
        let opt = Adam::new(0.01);
        let g: [f32; 11] = core::array::from_fn(|i| (i as f32 - 5.0) * 0.3);
        let (mut t, mut m, mut v) = ([1.0f32; 11], [0.0f32; 11], [0.0f32; 11]);
        for step in 1..=3 {
            opt.step(step, &mut t, &g, &mut m, &mut v);
        }
        for (i, &gi) in g.iter().enumerate() {
            let (mut mm, mut vv, mut tt) = (0f64, 0f64, 1f64);
            for step in 1..=3 {
                let gd = f64::from(gi);
                mm = 0.9 * mm + 0.1 * gd;
                vv = 0.999 * vv + 0.001 * gd * gd;
                let (mh, vh) = (mm / (1.0 - 0.9f64.powi(step)), vv / (1.0 - 0.999f64.powi(step)));
                tt -= 0.01 * mh / (vh.sqrt() + 1e-8);
            }
            assert!((f64::from(t[i]) - tt).abs() < 1e-5, "entry {i}: {} vs {tt}", t[i]);
        }
    }

    #[test]
    fn adam_by_hand() {
        // Step 1: mhat = g, vhat = g^2 -> theta -= lr g / (|g| + eps) = lr sign(g).
        // Step 2 (g = 0.5 after g = 2): m = 0.9*0.2 + 0.05 = 0.23, mhat = 0.23 / 0.19;
        // v = 0.999*0.004 + 0.00025 = 0.004246, vhat = 0.004246 / 0.001999.
        let opt = Adam::new(0.01);
        let (mut t, mut m, mut v) = ([1.0f32], [0.0f32], [0.0f32]);
        opt.step(1, &mut t, &[2.0], &mut m, &mut v);
        close(&t, &[0.99]);
        opt.step(2, &mut t, &[0.5], &mut m, &mut v);
        let mhat = 0.23 / 0.19;
        let vhat: f64 = 0.004246 / (1.0 - 0.999f64 * 0.999);
        close(&t, &[0.99 - 0.01 * mhat / (vhat.sqrt() + 1e-8)]);
    }
}
