//! The micro-kernel contract shared by every ISA, and the portable micro-kernel.

/// Largest `MR * NR` of any micro-kernel; sizes the stack tile used for ragged edges.
pub(crate) const MAX_TILE: usize = 12 * 32;

/// A register-tiled micro-kernel and the cache block sizes that feed it.
///
/// The block sizes follow the BLIS loop nest: `KC` sets the depth of a packed panel so that one
/// `KC x NR` panel of B stays in L1, `MC x KC` of packed A stays in L2, and `KC x NC` of packed B
/// in L3 (or in L2 on small parts).
pub(crate) trait Kernel {
    /// Rows of C computed by one call of [`Kernel::tile`].
    const MR: usize;
    /// Columns of C computed by one call of [`Kernel::tile`].
    const NR: usize;
    /// Rows of A packed at once (a multiple of `MR`).
    const MC: usize;
    /// Depth of a packed panel.
    const KC: usize;
    /// Columns of B packed at once (a multiple of `NR`).
    const NC: usize;
    /// Columns of C the unpacked path for a few rows computes at once, each in 16 partial
    /// sums: 1, 4 or 8, as many as keep the partial sums in registers (8 needs 32 AVX-512
    /// registers' worth of 16 floats: the 4 x 16 of the other kernels are too few chains to
    /// keep its two FMA pipes busy; a Cortex-M4F's 32 single-precision registers hold one
    /// column's 16). A column's sum is the same either way.
    const DOT_COLUMNS: usize = 4;

    /// `C[0..MR, 0..NR] = alpha * Ap * Bp + beta * C`, where `Ap` is a packed `MR x kc` panel
    /// (column after column) and `Bp` a packed `kc x NR` panel (row after row). When `beta == 0`
    /// C is never read.
    ///
    /// # Safety
    /// `a` is valid for `kc * MR` reads, `b` for `kc * NR` reads, `c` for reads and writes of
    /// `MR` rows of `NR` floats at stride `ldc`, and the CPU supports the kernel's ISA.
    unsafe fn tile(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize);

    /// The first `rows` (1 to MR) rows of [`Kernel::tile`]'s product with beta = 0, written to
    /// `c` at stride `ldc`: the ragged bottom edge of C. The default computes the whole tile, so
    /// `c` must then hold MR rows; a kernel that overrides it computes only `rows` rows, saving
    /// the wasted FMAs of a short edge (a 32-row product is 5 full AVX2 tiles and 2 rows).
    ///
    /// # Safety
    /// As [`Kernel::tile`], with `c` valid for writes of MR rows of `NR` floats.
    #[inline(always)]
    unsafe fn tile_rows(
        rows: usize,
        kc: usize,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let _ = rows;
        // SAFETY: forwarded contract; c holds MR rows.
        unsafe { Self::tile(kc, alpha, a, b, 0.0, c, ldc) }
    }

    /// A ragged `mr x nr` corner of C (`mr <= MR`, `nr <= NR`, one of them short): `C = alpha
    /// Ap Bp + beta C` on those elements only. The default has [`Kernel::tile_rows`] write a
    /// whole tile on the stack, then merges its valid part into C; a kernel with masked loads
    /// and stores overrides it to write C directly.
    ///
    /// # Safety
    /// As [`Kernel::tile`], but C needs only `mr x nr` valid elements.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn edge(
        mr: usize,
        nr: usize,
        kc: usize,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        beta: f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut tile = [0f32; MAX_TILE];
        debug_assert!(Self::MR * Self::NR <= MAX_TILE && mr <= Self::MR && nr <= Self::NR);
        // SAFETY: `tile` holds MR x NR floats at stride NR, and `mr <= MR`.
        unsafe { Self::tile_rows(mr, kc, alpha, a, b, tile.as_mut_ptr(), Self::NR) };
        for r in 0..mr {
            // SAFETY: row `r < mr` of the corner holds `nr` writable floats.
            let row = unsafe { core::slice::from_raw_parts_mut(c.add(r * ldc), nr) };
            let src = &tile[r * Self::NR..r * Self::NR + nr];
            if beta == 0.0 {
                row.copy_from_slice(src);
            } else {
                row.iter_mut().zip(src).for_each(|(o, &v)| *o = v + beta * *o);
            }
        }
    }

    /// Transposes an 8 x 8 block while packing: element q of row l (`rows[l] + q`) goes to
    /// `dst + q stride + l`. The default is scalar; the x86 kernels use register shuffles.
    ///
    /// # Safety
    /// Each `rows[l]` is valid for 8 reads, `dst` for writes at `q stride + l` (q, l < 8), and the
    /// CPU supports the kernel's ISA.
    #[inline(always)]
    unsafe fn transpose8(rows: &[*const f32; 8], dst: *mut f32, stride: usize) {
        for q in 0..8 {
            for (l, row) in rows.iter().enumerate() {
                // SAFETY: the caller guarantees both ranges.
                unsafe { *dst.add(q * stride + l) = *row.add(q) };
            }
        }
    }
}

/// Plain Rust micro-kernel: the path of every target without a hand-written one (thumbv7em
/// included); LLVM vectorises it with whatever the target offers.
pub(crate) struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;
    const NR: usize = 8;
    const MC: usize = 64;
    const KC: usize = 256;
    const NC: usize = 512;
    /// One column on 32-bit Arm: 4 columns' 64 partial sums spill from a Cortex-M4F's
    /// registers (the firmware's forward passes take 1.39 instead of 2.03 million instructions
    /// per step).
    const DOT_COLUMNS: usize = if cfg!(target_arch = "arm") { 1 } else { 4 };

    #[inline(always)]
    unsafe fn tile(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
        const MR: usize = Portable::MR;
        const NR: usize = Portable::NR;
        debug_assert!(!a.is_null() && !b.is_null() && !c.is_null());
        // SAFETY: the caller guarantees `a` holds `kc * MR` floats and `b` holds `kc * NR`.
        let (ap, bp) = unsafe {
            (
                core::slice::from_raw_parts(a, kc * MR),
                core::slice::from_raw_parts(b, kc * NR),
            )
        };
        let mut acc = [[0f32; NR]; MR];
        for (ak, bk) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
            for i in 0..MR {
                for j in 0..NR {
                    acc[i][j] += ak[i] * bk[j];
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the caller guarantees `MR` rows of `NR` writable floats at stride `ldc`.
            let out = unsafe { core::slice::from_raw_parts_mut(c.add(i * ldc), NR) };
            if beta == 0.0 {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = alpha * v;
                }
            } else {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = alpha * v + beta * *o;
                }
            }
        }
    }
}
