//! aarch64 NEON micro-kernel: 8 x 12 tile, 24 q-register accumulators (of 32), each step one
//! lane-indexed FMA per accumulator, so A's column is loaded once into two registers instead of
//! being broadcast.

use core::arch::aarch64::{
    float32x4_t, vaddq_f32, vdupq_n_f32, vfmaq_laneq_f32, vld1q_f32, vmulq_f32, vst1q_f32,
};

use super::kernel::Kernel;

/// The NEON kernel.
pub(crate) struct Neon;

impl Kernel for Neon {
    const MR: usize = 8;
    const NR: usize = 12;
    // 128 x 256 floats of packed A = 128 KiB, a quarter of a 512 KiB L2 (Neoverse N1 / V1,
    // Cortex-A76 and later have 512 KiB to 1 MiB).
    const MC: usize = 128;
    // One 256 x 12 panel of packed B = 12 KiB, inside a 64 KiB L1.
    const KC: usize = 256;
    // 256 x 3072 floats of packed B = 3 MiB, in L3 or system cache.
    const NC: usize = 3072;

    #[inline(always)]
    unsafe fn tile(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
        // SAFETY: same contract as `Kernel::tile`, forwarded unchanged.
        unsafe { tile_8x12(kc, alpha, a, b, beta, c, ldc) }
    }
}

/// # Safety
/// As [`Kernel::tile`] with `MR = 8`, `NR = 12`; the CPU has NEON.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn tile_8x12(kc: usize, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32, ldc: usize) {
    let mut acc: [[float32x4_t; 3]; 8] = [[vdupq_n_f32(0.0); 3]; 8];
    for p in 0..kc {
        // SAFETY: `p < kc`, so the 8 floats at `a + 8 p` and the 12 at `b + 12 p` lie inside the
        // packed panels (caller's contract).
        let (a_lo, a_hi, bp) = unsafe {
            (
                vld1q_f32(a.add(8 * p)),
                vld1q_f32(a.add(8 * p + 4)),
                [
                    vld1q_f32(b.add(12 * p)),
                    vld1q_f32(b.add(12 * p + 4)),
                    vld1q_f32(b.add(12 * p + 8)),
                ],
            )
        };
        // Row i of the tile takes lane i % 4 of A's column (the lane must be a constant).
        macro_rules! row {
            ($i:literal, $half:ident, $lane:literal) => {
                for (q, acc) in acc[$i].iter_mut().enumerate() {
                    *acc = vfmaq_laneq_f32::<$lane>(*acc, bp[q], $half);
                }
            };
        }
        row!(0, a_lo, 0);
        row!(1, a_lo, 1);
        row!(2, a_lo, 2);
        row!(3, a_lo, 3);
        row!(4, a_hi, 0);
        row!(5, a_hi, 1);
        row!(6, a_hi, 2);
        row!(7, a_hi, 3);
    }
    let va = vdupq_n_f32(alpha);
    let vb = vdupq_n_f32(beta);
    for (i, row) in acc.iter().enumerate() {
        for (q, &v) in row.iter().enumerate() {
            // SAFETY: row `i < 8` and columns `4 q .. 4 q + 4 <= 12` are inside the caller's tile
            // of C; with beta == 0 it is written, never read.
            unsafe {
                let dst = c.add(i * ldc + 4 * q);
                let out = if beta == 0.0 {
                    vmulq_f32(va, v)
                } else if beta == 1.0 {
                    vaddq_f32(vmulq_f32(va, v), vld1q_f32(dst))
                } else {
                    vaddq_f32(vmulq_f32(va, v), vmulq_f32(vb, vld1q_f32(dst)))
                };
                vst1q_f32(dst, out);
            }
        }
    }
}
