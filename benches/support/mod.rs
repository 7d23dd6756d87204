//! Shapes and runners shared by the GEMM benches: ienk on a given path, matrixmultiply, a naive loop.
#![allow(dead_code)]

use ienk::gemm::{Epilogue, KernelPath, MatMut, MatRef, gemm_on, scratch_len};

/// One benchmarked product: op(A) is m x k (row-major), op(B) = W^T with W stored n x k, the
/// layout of a layer's forward pass `X W^T`.
#[derive(Clone, Copy)]
pub struct Shape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl Shape {
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }

    pub fn label(&self) -> String {
        format!("{}x{}x{}", self.m, self.k, self.n)
    }
}

/// The shapes of issue 3: layer 1 of one network and of 10 stacked members, a small batch,
/// layer 2, one example, the whole test set, and the classic cube.
pub const SHAPES: [Shape; 7] = [
    Shape {
        m: 500,
        k: 784,
        n: 128,
    },
    Shape {
        m: 500,
        k: 784,
        n: 1280,
    },
    Shape {
        m: 32,
        k: 784,
        n: 1280,
    },
    Shape {
        m: 500,
        k: 128,
        n: 10,
    },
    Shape { m: 1, k: 784, n: 128 },
    Shape {
        m: 10000,
        k: 784,
        n: 128,
    },
    Shape {
        m: 1024,
        k: 1024,
        n: 1024,
    },
];

/// Operands of one shape, filled with a fixed pattern.
pub struct Operands {
    pub shape: Shape,
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub c: Vec<f32>,
    pub scratch: Vec<f32>,
}

impl Operands {
    pub fn new(shape: Shape) -> Self {
        let fill = |len: usize, seed: usize| {
            (0..len)
                .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        Operands {
            shape,
            x: fill(shape.m * shape.k, 1),
            w: fill(shape.n * shape.k, 2),
            c: vec![0.0; shape.m * shape.n],
            scratch: vec![0.0; scratch_len(shape.m, shape.n, shape.k)],
        }
    }

    /// C = X W^T on the given ienk kernel path.
    pub fn ienk(&mut self, path: KernelPath) {
        let Shape { m, k, n } = self.shape;
        let a = MatRef::new(&self.x, m, k, k);
        let b = MatRef::new(&self.w, n, k, k).t();
        gemm_on(
            path,
            1.0,
            a,
            b,
            0.0,
            MatMut::new(&mut self.c, m, n, n),
            Epilogue::None,
            &mut self.scratch,
        )
        .expect("valid shapes");
    }

    /// C = X W^T with the matrixmultiply crate.
    pub fn matrixmultiply(&mut self) {
        let Shape { m, k, n } = self.shape;
        // SAFETY: the strides describe the row-major buffers allocated above for these shapes.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                self.x.as_ptr(),
                k as isize,
                1,
                self.w.as_ptr(),
                1,
                k as isize,
                0.0,
                self.c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }

    /// C = X W^T with the textbook triple loop (i, j, p), what a first attempt would write.
    pub fn naive(&mut self) {
        let Shape { m, k, n } = self.shape;
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += self.x[i * k + p] * self.w[j * k + p];
                }
                self.c[i * n + j] = s;
            }
        }
    }
}

/// Kernel paths this CPU supports, honouring `IENK_KERNEL=name` to keep only one.
pub fn bench_paths() -> Vec<KernelPath> {
    let only = std::env::var("IENK_KERNEL").ok();
    KernelPath::ALL
        .into_iter()
        .filter(|p| {
            let ok = p.is_supported();
            if !ok {
                eprintln!("skipped kernel path {p}: this CPU lacks its instructions");
            }
            ok && only.as_deref().is_none_or(|o| o == "auto" || o == p.name())
        })
        .collect()
}
