//! Packing of A and B blocks into contiguous micro-panels, zero-padded to whole tiles.
//!
//! A panel is `kc` groups of `W` floats (`W = MR` for A, `NR` for B): group `p` holds element p of
//! each of the panel's `W` lines (rows of op(A), columns of op(B)). Both operands reduce to one
//! routine, [`pack_lines`], over "lines" with a line stride and an element stride.

use super::kernel::Kernel;

/// Widest panel of any kernel (AVX-512's NR).
const MAX_W: usize = 32;

/// How far ahead of the element being packed each line is prefetched, in floats: the lines
/// are read from L3 or memory (a batch of inputs, a weight matrix), several at once, and the
/// hardware prefetcher alone leaves the packing waiting on them.
const PREFETCH_FLOATS: usize = 128;

/// Prefetches element `p + PREFETCH_FLOATS` of each line (beyond a line's end this merely
/// touches the next bytes of memory; a prefetch never faults). O(lines.len()).
#[inline(always)]
fn prefetch_ahead(lines: &[*const f32], p: usize) {
    for line in lines {
        crate::prefetch::line(line.wrapping_add(p + PREFETCH_FLOATS).cast());
    }
}

/// Packs `count` lines into panels of `w` lines each (`w` is the kernel's constant MR or NR, so
/// the inner loops unroll once this is inlined), `kc` elements deep. Element `p` of line `l`
/// is at `src[l line_stride + p elem_stride]`; lines past `count` in the last panel are zeros.
/// O(count kc).
///
/// # Safety
/// `src` is valid for every read these strides address; `dst` for `round_up(count, w) * kc`
/// writes; `w <= MAX_W`.
#[inline(always)]
unsafe fn pack_lines<K: Kernel>(
    w: usize,
    count: usize,
    kc: usize,
    src: *const f32,
    line_stride: usize,
    elem_stride: usize,
    dst: *mut f32,
) {
    debug_assert!(w <= MAX_W);
    for (panel, l0) in (0..count).step_by(w).enumerate() {
        let lines = w.min(count - l0);
        // SAFETY: panel `panel` of `w * kc` floats lies inside `dst`.
        let out = unsafe { dst.add(panel * kc * w) };
        // SAFETY: line `l0 + l` exists for `l < lines`.
        let line = |l: usize| unsafe { src.add((l0 + l) * line_stride) };
        if lines == w && elem_stride == 1 {
            // Full panel of contiguous lines: w sequential streams, one group per step.
            let mut ptrs = [core::ptr::null::<f32>(); MAX_W];
            for (l, ptr) in ptrs.iter_mut().enumerate().take(w) {
                *ptr = line(l);
            }
            // 8 x 8 blocks through the kernel's register transpose, then the remaining depth.
            let mut p = 0;
            if w.is_multiple_of(8) {
                while p + 8 <= kc {
                    prefetch_ahead(&ptrs[..w], p);
                    for g in (0..w).step_by(8) {
                        let mut rows = [core::ptr::null::<f32>(); 8];
                        for (l, row) in rows.iter_mut().enumerate() {
                            // SAFETY: line `g + l < w` has elements `p .. p + 8 <= kc`.
                            *row = unsafe { ptrs[g + l].add(p) };
                        }
                        // SAFETY: the 8 x 8 block at group p, line g lies inside the panel.
                        unsafe { K::transpose8(&rows, out.add(p * w + g), w) };
                    }
                    p += 8;
                }
            } else if (4..8).contains(&w) {
                // Narrow panel (AVX2's MR = 6, the portable MR = 4): the 8 x 8 transpose of the
                // w lines (the last one repeated to fill 8) writes 8 floats per group at stride
                // w; each store's 8 - w <= w surplus floats fall on the next group, which a
                // later store writes. The last group's surplus falls on group p + 8, so this
                // runs only while that group exists (p + 8 < kc); the scalar loop or the next
                // block writes it afterwards.
                let mut rows = [core::ptr::null::<f32>(); 8];
                while p + 8 < kc {
                    prefetch_ahead(&ptrs[..w], p);
                    for (l, row) in rows.iter_mut().enumerate() {
                        // SAFETY: line `min(l, w - 1) < w` has elements `p .. p + 8 < kc`.
                        *row = unsafe { ptrs[l.min(w - 1)].add(p) };
                    }
                    // SAFETY: the writes end at `(p + 7) w + 8 <= (p + 9) w <= kc w` (w >= 4,
                    // p + 8 < kc), inside the panel, and are made in increasing group order.
                    unsafe { K::transpose8(&rows, out.add(p * w), w) };
                    p += 8;
                }
            }
            if w > 8 && w < 16 {
                // Between one and two transposes wide (AVX-512's MR = 12): lines 8.. (the last
                // repeated to fill 8) first, as the narrow panels above, so each store's 16 - w
                // surplus floats fall on the first lines of the next group; then lines 0..8,
                // whose stores overwrite that surplus. The last group's surplus falls on group
                // p + 8, so this runs only while that group exists; the next block or the
                // scalar loop writes it afterwards.
                let mut rows = [core::ptr::null::<f32>(); 8];
                while p + 8 < kc {
                    prefetch_ahead(&ptrs[..w], p);
                    for (l, row) in rows.iter_mut().enumerate() {
                        // SAFETY: line `min(8 + l, w - 1) < w` has elements `p .. p + 8 < kc`.
                        *row = unsafe { ptrs[(8 + l).min(w - 1)].add(p) };
                    }
                    // SAFETY: the writes end at `(p + 7) w + 16 <= (p + 9) w <= kc w` (w > 8,
                    // p + 8 < kc), inside the panel, in increasing group order.
                    unsafe { K::transpose8(&rows, out.add(p * w + 8), w) };
                    for (l, row) in rows.iter_mut().enumerate() {
                        // SAFETY: line `l < 8 < w` has elements `p .. p + 8 < kc`.
                        *row = unsafe { ptrs[l].add(p) };
                    }
                    // SAFETY: groups p .. p + 8, lines 0..8, inside the panel.
                    unsafe { K::transpose8(&rows, out.add(p * w), w) };
                    p += 8;
                }
            }
            for p in p..kc {
                for (l, ptr) in ptrs.iter().enumerate().take(w) {
                    // SAFETY: `p < kc` elements of each line are readable; `p w + l` is in the panel.
                    unsafe { *out.add(p * w + l) = *ptr.add(p) };
                }
            }
        } else if lines == w && line_stride == 1 {
            // Full panel whose groups are contiguous in the source: copy w floats per step.
            for p in 0..kc {
                // SAFETY: group `p` is `w` contiguous readable floats; the panel has room for it.
                unsafe { core::ptr::copy_nonoverlapping(src.add(l0 + p * elem_stride), out.add(p * w), w) };
            }
        } else {
            // Ragged last panel or general strides.
            for p in 0..kc {
                for l in 0..w {
                    let v = if l < lines {
                        // SAFETY: line `l < lines` has element `p < kc`.
                        unsafe { *line(l).add(p * elem_stride) }
                    } else {
                        0.0
                    };
                    // SAFETY: `p w + l` is in the panel.
                    unsafe { *out.add(p * w + l) = v };
                }
            }
        }
    }
}

/// Packs the `mc x kc` block of op(A) at `a` (element (i, p) at `a[i rs + p cs]`) into
/// `ceil(mc / MR)` panels of `kc x MR`. O(mc kc).
///
/// # Safety
/// `a` is valid for every read the strides address; `dst` for `round_up(mc, MR) * kc` writes.
#[inline(always)]
pub(crate) unsafe fn pack_a<K: Kernel>(
    mc: usize,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    dst: *mut f32,
) {
    // SAFETY: forwarded contract; rows of op(A) are the lines.
    unsafe { pack_lines::<K>(K::MR, mc, kc, a, rs, cs, dst) }
}

/// Packs the `kc x nc` block of op(B) at `b` (element (p, j) at `b[p rs + j cs]`) into
/// `ceil(nc / NR)` panels of `kc x NR`. O(kc nc).
///
/// # Safety
/// `b` is valid for every read the strides address; `dst` for `kc * round_up(nc, NR)` writes.
#[inline(always)]
pub(crate) unsafe fn pack_b<K: Kernel>(
    kc: usize,
    nc: usize,
    b: *const f32,
    rs: usize,
    cs: usize,
    dst: *mut f32,
) {
    // SAFETY: forwarded contract; columns of op(B) are the lines.
    unsafe { pack_lines::<K>(K::NR, nc, kc, b, cs, rs, dst) }
}
