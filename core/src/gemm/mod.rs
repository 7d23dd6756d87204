//! Cache-blocked f32 matrix multiplication over plain slices:
//! `C = alpha op(A) op(B) + beta C`, then an optional fused bias (+ ReLU) epilogue.
//!
//! The structure is BLIS's: op(B) is packed KC x NC at a time, op(A) MC x KC at a time, into
//! caller-provided scratch, and a register-tiled micro-kernel computes MR x NR tiles of C. The
//! micro-kernel is chosen once per process from CPUID (AVX-512F, else AVX2 + FMA, else portable;
//! NEON on aarch64) and can be forced with [`force_kernel`]. At most [`SMALL_M`] rows skip packing altogether.
//!
//! Contract: when `beta == 0`, C is never read (NaN in C does not leak into the result).
//! Shapes, leading dimensions and slice lengths are checked; a mismatch is an error, never
//! undefined behaviour. The core is single-threaded: to use several threads, split C into row
//! blocks with [`MatMut::split_rows`] and A with [`MatRef::rows`], and call [`gemm`] on each.

mod dispatch;
mod driver;
mod kernel;
mod pack;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use core::fmt;

pub use dispatch::{KernelPath, active_kernel, detect_best, force_kernel};
pub use driver::SMALL_M;

use driver::{Problem, a_pack_len, b_pack_len};
use kernel::{Kernel, Portable};

/// A read-only matrix view: `rows x cols` logically, over a row-major slice with leading
/// dimension `ld`, possibly transposed.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    ld: usize,
    transposed: bool,
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` matrix stored row-major in `data` with `ld` floats between rows.
    /// Checked when used by [`gemm`].
    pub fn new(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            ld,
            transposed: false,
        }
    }

    /// The transposed view (no copy): a `cols x rows` matrix.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            transposed: !self.transposed,
            ..self
        }
    }

    /// Logical rows.
    pub fn nrows(&self) -> usize {
        self.rows
    }

    /// Logical columns.
    pub fn ncols(&self) -> usize {
        self.cols
    }

    /// Logical rows `start..start + count` as a view (no copy), or `None` if out of range.
    pub fn rows(self, start: usize, count: usize) -> Option<Self> {
        if start.checked_add(count)? > self.rows {
            return None;
        }
        let step = if self.transposed { 1 } else { self.ld };
        let offset = if count == 0 { 0 } else { start * step };
        Some(MatRef {
            data: self.data.get(offset.min(self.data.len())..)?,
            rows: count,
            ..self
        })
    }

    /// (row stride, column stride) of the logical matrix.
    fn strides(&self) -> (usize, usize) {
        if self.transposed {
            (1, self.ld)
        } else {
            (self.ld, 1)
        }
    }

    fn check(&self, operand: Operand) -> Result<(), GemmError> {
        let (stored_rows, stored_cols) = if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        };
        check_storage(operand, self.data.len(), stored_rows, stored_cols, self.ld)
    }
}

/// A mutable row-major matrix view: `rows x cols` with leading dimension `ld`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a> MatMut<'a> {
    /// A `rows x cols` matrix stored row-major in `data` with `ld` floats between rows.
    /// Checked when used by [`gemm`].
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        MatMut { data, rows, cols, ld }
    }

    /// Rows.
    pub fn nrows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn ncols(&self) -> usize {
        self.cols
    }

    /// Splits into rows `0..at` and `at..` (no copy), for handing row blocks to threads.
    /// `None` if `at > rows` or the slice is shorter than `at` rows.
    pub fn split_rows(self, at: usize) -> Option<(MatMut<'a>, MatMut<'a>)> {
        if at > self.rows {
            return None;
        }
        let cut = at.checked_mul(self.ld)?;
        if cut > self.data.len() {
            return None;
        }
        let (top, bottom) = self.data.split_at_mut(cut);
        Some((
            MatMut {
                data: top,
                rows: at,
                ..self
            },
            MatMut {
                data: bottom,
                rows: self.rows - at,
                ..self
            },
        ))
    }
}

/// What a [`gemm`] call does to each element of C after the product.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// Nothing.
    None,
    /// `c_ij += bias_j`.
    Bias(&'a [f32]),
    /// `c_ij = max(c_ij + bias_j, 0)` (NaN propagates).
    BiasRelu(&'a [f32]),
}

/// Which operand an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The left factor.
    A,
    /// The right factor.
    B,
    /// The output.
    C,
}

/// Why a [`gemm`] call was refused. Nothing is written to C when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmError {
    /// op(A) is `m x k` but op(B) is `k' x n` with `k != k'`, or C is not `m x n`.
    ShapeMismatch {
        /// op(A) rows and columns.
        a: (usize, usize),
        /// op(B) rows and columns.
        b: (usize, usize),
        /// C rows and columns.
        c: (usize, usize),
    },
    /// A leading dimension smaller than the stored row length.
    LeadingDimension {
        /// The operand.
        operand: Operand,
        /// The leading dimension given.
        ld: usize,
        /// The stored row length it must cover.
        cols: usize,
    },
    /// A slice shorter than its shape and leading dimension need.
    SliceTooShort {
        /// The operand.
        operand: Operand,
        /// Floats needed.
        needed: usize,
        /// Floats given.
        found: usize,
    },
    /// A bias whose length is not the number of columns of C.
    BiasLength {
        /// Columns of C.
        expected: usize,
        /// Bias length.
        found: usize,
    },
    /// The CPU lacks the instructions of the requested kernel path.
    Unsupported(KernelPath),
    /// Scratch shorter than [`scratch_len`] asks for.
    ScratchTooSmall {
        /// Floats needed.
        needed: usize,
        /// Floats given.
        found: usize,
    },
}

impl fmt::Display for GemmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GemmError::ShapeMismatch { a, b, c } => write!(
                f,
                "shape mismatch: op(A) is {}x{}, op(B) is {}x{}, C is {}x{}",
                a.0, a.1, b.0, b.1, c.0, c.1
            ),
            GemmError::LeadingDimension { operand, ld, cols } => write!(
                f,
                "leading dimension {ld} of {operand:?} is smaller than its row length {cols}"
            ),
            GemmError::SliceTooShort {
                operand,
                needed,
                found,
            } => write!(f, "{operand:?} needs {needed} floats, the slice has {found}"),
            GemmError::BiasLength { expected, found } => {
                write!(f, "bias has {found} floats, C has {expected} columns")
            }
            GemmError::Unsupported(path) => write!(f, "this CPU cannot run the {path} kernel"),
            GemmError::ScratchTooSmall { needed, found } => {
                write!(f, "GEMM scratch needs {needed} floats, got {found}")
            }
        }
    }
}

impl core::error::Error for GemmError {}

fn check_storage(operand: Operand, len: usize, rows: usize, cols: usize, ld: usize) -> Result<(), GemmError> {
    if rows > 1 && ld < cols {
        return Err(GemmError::LeadingDimension { operand, ld, cols });
    }
    let needed = if rows == 0 || cols == 0 {
        Some(0)
    } else {
        (rows - 1).checked_mul(ld).and_then(|x| x.checked_add(cols))
    };
    match needed {
        Some(needed) if needed <= len => Ok(()),
        needed => Err(GemmError::SliceTooShort {
            operand,
            needed: needed.unwrap_or(usize::MAX),
            found: len,
        }),
    }
}

/// Floats a buffer is padded by so that each packed block can start on a 64-byte line.
const ALIGN_PAD: usize = 16;

fn scratch_for<K: Kernel>(m: usize, n: usize, k: usize) -> usize {
    if m <= SMALL_M {
        return 0;
    }
    a_pack_len::<K>(m, k) + b_pack_len::<K>(n, k) + 2 * ALIGN_PAD
}

/// Floats of scratch a [`gemm`] of op(A) `m x k` by op(B) `k x n` needs, whatever kernel runs:
/// at most `MC KC + KC NC` plus padding (under 0.85 M floats, 3.3 MB), far less for small shapes, 0 for
/// `m <= SMALL_M`. O(1).
pub fn scratch_len(m: usize, n: usize, k: usize) -> usize {
    let portable = scratch_for::<Portable>(m, n, k);
    #[cfg(target_arch = "x86_64")]
    {
        portable
            .max(scratch_for::<avx2::Avx2>(m, n, k))
            .max(scratch_for::<avx512::Avx512>(m, n, k))
    }
    #[cfg(target_arch = "aarch64")]
    {
        portable.max(scratch_for::<neon::Neon>(m, n, k))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        portable
    }
}

/// `C = alpha op(A) op(B) + beta C`, then `epilogue`, on the active kernel
/// ([`active_kernel`]).
///
/// op(A) is `m x k`, op(B) `k x n`, C `m x n`; `scratch` holds at least
/// [`scratch_len`]`(m, n, k)` floats. Costs `2 m n k` flops plus `O(m k + k n)` packing.
/// With `beta == 0`, C is not read.
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    epilogue: Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<(), GemmError> {
    gemm_on(active_kernel(), alpha, a, b, beta, c, epilogue, scratch)
}

/// As [`gemm`], on the given kernel path; [`GemmError::Unsupported`] if this CPU lacks it.
/// For tests and benchmarks that compare paths without touching the process-wide choice.
#[allow(clippy::too_many_arguments)]
pub fn gemm_on(
    path: KernelPath,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    epilogue: Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<(), GemmError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || c.rows != m || c.cols != n {
        return Err(GemmError::ShapeMismatch {
            a: (a.rows, a.cols),
            b: (b.rows, b.cols),
            c: (c.rows, c.cols),
        });
    }
    a.check(Operand::A)?;
    b.check(Operand::B)?;
    check_storage(Operand::C, c.data.len(), c.rows, c.cols, c.ld)?;
    let (bias, relu) = match epilogue {
        Epilogue::None => (None, false),
        Epilogue::Bias(bias) => (Some(bias), false),
        Epilogue::BiasRelu(bias) => (Some(bias), true),
    };
    if let Some(bias) = bias
        && bias.len() != n
    {
        return Err(GemmError::BiasLength {
            expected: n,
            found: bias.len(),
        });
    }
    let needed = scratch_len(m, n, k);
    if scratch.len() < needed {
        return Err(GemmError::ScratchTooSmall {
            needed,
            found: scratch.len(),
        });
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    let problem = Problem {
        m,
        n,
        k,
        alpha,
        beta,
        a: a.data.as_ptr(),
        rsa,
        csa,
        b: b.data.as_ptr(),
        rsb,
        csb,
        c: c.data.as_mut_ptr(),
        ldc: c.ld,
        bias: bias.map_or(core::ptr::null(), <[f32]>::as_ptr),
        relu,
    };
    if !path.is_supported() {
        return Err(GemmError::Unsupported(path));
    }
    let (apack, bpack) = split_scratch(scratch, path, m, k);
    // SAFETY: shapes, strides and lengths were checked above; the packed buffers are disjoint
    // parts of `scratch` of the sizes the kernel needs; the CPU supports `path` (checked above).
    unsafe { run_on(path, &problem, apack, bpack) };
    Ok(())
}

/// Floats of packed A that `path` uses.
fn a_pack_len_on(path: KernelPath, m: usize, k: usize) -> usize {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => a_pack_len::<avx2::Avx2>(m, k),
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => a_pack_len::<avx512::Avx512>(m, k),
        #[cfg(target_arch = "aarch64")]
        KernelPath::Neon => a_pack_len::<neon::Neon>(m, k),
        _ => a_pack_len::<Portable>(m, k),
    }
}

/// Cuts scratch into the 64-byte-aligned packed-A and packed-B buffers of `path`.
fn split_scratch(scratch: &mut [f32], path: KernelPath, m: usize, k: usize) -> (*mut f32, *mut f32) {
    if m <= SMALL_M {
        return (core::ptr::null_mut(), core::ptr::null_mut());
    }
    let a_start = scratch.as_ptr().align_offset(64).min(ALIGN_PAD);
    let b_from = a_start + a_pack_len_on(path, m, k);
    let b_start = b_from + scratch[b_from..].as_ptr().align_offset(64).min(ALIGN_PAD);
    let base = scratch.as_mut_ptr();
    // SAFETY: both offsets are within `scratch`, whose length was checked against scratch_len.
    unsafe { (base.add(a_start), base.add(b_start)) }
}

/// # Safety
/// As `driver::run`, with the CPU supporting `path`.
unsafe fn run_on(path: KernelPath, p: &Problem, apack: *mut f32, bpack: *mut f32) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees the CPU has AVX-512F.
        KernelPath::Avx512 => unsafe { run_avx512(p, apack, bpack) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees the CPU has AVX2 and FMA.
        KernelPath::Avx2 => unsafe { run_avx2(p, apack, bpack) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller guarantees the CPU has NEON.
        KernelPath::Neon => unsafe { run_neon(p, apack, bpack) },
        // SAFETY: forwarded contract; the portable kernel needs no CPU feature.
        _ => unsafe { driver::run::<Portable>(p, apack, bpack) },
    }
}

/// # Safety
/// As `driver::run`; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(p: &Problem, apack: *mut f32, bpack: *mut f32) {
    // SAFETY: forwarded contract.
    unsafe { driver::run::<avx2::Avx2>(p, apack, bpack) }
}

/// # Safety
/// As `driver::run`; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512(p: &Problem, apack: *mut f32, bpack: *mut f32) {
    // SAFETY: forwarded contract.
    unsafe { driver::run::<avx512::Avx512>(p, apack, bpack) }
}

/// # Safety
/// As `driver::run`; the CPU has NEON.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn run_neon(p: &Problem, apack: *mut f32, bpack: *mut f32) {
    // SAFETY: forwarded contract.
    unsafe { driver::run::<neon::Neon>(p, apack, bpack) }
}
