//! Run-time choice of the micro-kernel: detected once from CPUID, cached in an atomic, and
//! overridable so tests and benchmarks can run every path the CPU supports.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// A micro-kernel family (an instruction set the GEMM driver is compiled for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// Plain Rust, vectorised by the compiler for the build target; runs everywhere.
    Portable,
    /// x86_64 AVX2 + FMA, 6 x 16 tiles.
    Avx2,
    /// x86_64 AVX-512F, 12 x 32 tiles.
    Avx512,
    /// aarch64 NEON (Advanced SIMD), 8 x 12 tiles.
    Neon,
}

impl KernelPath {
    /// Every path, in order of preference from worst to best (no CPU has both an x86 path and
    /// NEON).
    pub const ALL: [KernelPath; 4] = [
        KernelPath::Portable,
        KernelPath::Avx2,
        KernelPath::Avx512,
        KernelPath::Neon,
    ];

    /// The name used by `--kernel` flags and the `IENK_KERNEL` variable.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Portable => "portable",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Neon => "neon",
        }
    }

    /// Parses a name produced by [`KernelPath::name`].
    pub fn from_name(name: &str) -> Option<KernelPath> {
        KernelPath::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether this CPU can run the path. CPUID is read once per process (it traps to the
    /// hypervisor in a VM); later calls cost one atomic load.
    pub fn is_supported(self) -> bool {
        let mut bits = FEATURES.load(Ordering::Relaxed);
        if bits & FEATURES_READ == 0 {
            bits = FEATURES_READ
                | if cpu::has_avx2_fma() {
                    1 << KernelPath::Avx2.code()
                } else {
                    0
                }
                | if cpu::has_avx512f() {
                    1 << KernelPath::Avx512.code()
                } else {
                    0
                };
            FEATURES.store(bits, Ordering::Relaxed);
        }
        match self {
            KernelPath::Portable => true,
            // NEON is part of every aarch64 target that enables it at all (Linux, macOS,
            // Android); there is nothing to ask the CPU.
            KernelPath::Neon => cfg!(all(target_arch = "aarch64", target_feature = "neon")),
            _ => bits & (1 << self.code()) != 0,
        }
    }

    /// Whether the kernels that exist only in an AVX2 + FMA build besides the portable one (the
    /// sparse products, the bulk normal sampler, Adam) run that build on this path: every path
    /// but the portable one, on a CPU with AVX2 and FMA (the AVX-512 path uses it too).
    pub fn runs_avx2_build(self) -> bool {
        self != KernelPath::Portable && KernelPath::Avx2.is_supported()
    }

    fn code(self) -> u8 {
        match self {
            KernelPath::Portable => 1,
            KernelPath::Avx2 => 2,
            KernelPath::Avx512 => 3,
            KernelPath::Neon => 4,
        }
    }

    fn from_code(code: u8) -> Option<KernelPath> {
        KernelPath::ALL.into_iter().find(|p| p.code() == code)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bit `code` set when the CPU supports that path; `FEATURES_READ` once CPUID was read.
static FEATURES: AtomicU8 = AtomicU8::new(0);
const FEATURES_READ: u8 = 0x80;

/// 0 = not chosen yet; otherwise `KernelPath::code`.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The best path this CPU supports.
pub fn detect_best() -> KernelPath {
    KernelPath::ALL
        .into_iter()
        .rev()
        .find(|p| p.is_supported())
        .unwrap_or(KernelPath::Portable)
}

/// The path every GEMM call uses: the forced one, or else the best detected (cached after the
/// first call, so it costs one atomic load).
pub fn active_kernel() -> KernelPath {
    if let Some(p) = KernelPath::from_code(ACTIVE.load(Ordering::Relaxed)) {
        return p;
    }
    let best = detect_best();
    ACTIVE.store(best.code(), Ordering::Relaxed);
    best
}

/// Forces every later GEMM call of the process onto `path`, or back to automatic detection with
/// `None`. Fails, changing nothing, when the CPU lacks the path's instructions.
pub fn force_kernel(path: Option<KernelPath>) -> Result<(), KernelPath> {
    let path = match path {
        Some(p) if !p.is_supported() => return Err(p),
        Some(p) => p,
        None => detect_best(),
    };
    ACTIVE.store(path.code(), Ordering::Relaxed);
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod cpu {
    use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    /// XCR0 bits: SSE and AVX register state enabled by the OS.
    const XCR0_YMM: u64 = 0b110;
    /// XCR0 bits: SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state enabled by the OS.
    const XCR0_ZMM: u64 = 0b1110_0110;

    struct Features {
        avx2_fma: bool,
        avx512f: bool,
    }

    fn read() -> Features {
        let none = Features {
            avx2_fma: false,
            avx512f: false,
        };
        let max_leaf = __cpuid(0).eax;
        if max_leaf < 7 {
            return none;
        }
        let leaf1 = __cpuid(1);
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        let avx = leaf1.ecx & (1 << 28) != 0;
        let fma = leaf1.ecx & (1 << 12) != 0;
        if !(osxsave && avx) {
            return none;
        }
        let xcr0 = xcr0();
        let leaf7 = __cpuid_count(7, 0);
        let avx2 = leaf7.ebx & (1 << 5) != 0;
        let avx512f = leaf7.ebx & (1 << 16) != 0;
        Features {
            avx2_fma: avx2 && fma && xcr0 & XCR0_YMM == XCR0_YMM,
            avx512f: avx512f && xcr0 & XCR0_ZMM == XCR0_ZMM,
        }
    }

    fn xcr0() -> u64 {
        #[target_feature(enable = "xsave")]
        fn read_xcr0() -> u64 {
            // SAFETY: XGETBV with ECX = 0 is valid once CPUID reports OSXSAVE, which `read` checked.
            unsafe { _xgetbv(0) }
        }
        // SAFETY: OSXSAVE (checked by the caller) implies the XSAVE instruction family exists.
        unsafe { read_xcr0() }
    }

    pub(super) fn has_avx2_fma() -> bool {
        read().avx2_fma
    }

    pub(super) fn has_avx512f() -> bool {
        read().avx512f
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cpu {
    pub(super) fn has_avx2_fma() -> bool {
        false
    }

    pub(super) fn has_avx512f() -> bool {
        false
    }
}
