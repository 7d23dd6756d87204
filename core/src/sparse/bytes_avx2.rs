//! Compressing a row of bytes (an image) into column indices and scaled values with AVX2: 32
//! bytes are tested against zero at once, and each group of 8 with a non-zero is packed by a
//! table lookup (the positions of its non-zeros) and one byte shuffle, then widened to 8
//! indices and 8 floats stored whole; only the count of non-zeros advances the output.

use core::arch::x86_64::{
    __m128i, _mm_cvtsi64_si128, _mm_loadl_epi64, _mm_shuffle_epi8, _mm256_add_epi32, _mm256_cmpeq_epi8,
    _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_mul_ps,
    _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_si256, _mm256_storeu_ps, _mm256_storeu_si256,
};

/// For each 8-bit mask, the positions of its set bits in increasing order, one per byte from
/// the lowest; the bytes past the count are 0x80 (a shuffle writes 0 there).
const POSITIONS: [u64; 256] = positions();

const fn positions() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut bytes, mut count, mut bit) = ([0x80u8; 8], 0, 0);
        while bit < 8 {
            if mask & (1 << bit) != 0 {
                bytes[count] = bit as u8;
                count += 1;
            }
            bit += 1;
        }
        table[mask] = u64::from_le_bytes(bytes);
        mask += 1;
    }
    table
}

/// Writes the non-zero bytes of `row` as `f32::from(byte) * scale` to the front of `vals`, and
/// their positions (increasing) to the front of `idx`; returns how many. Entries of `idx` and
/// `vals` past that count up to `row.len()` may be overwritten. O(row.len()).
///
/// # Safety
/// The CPU has AVX2; `idx` and `vals` hold at least `row.len()` entries.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn compact_row(row: &[u8], scale: f32, idx: &mut [u32], vals: &mut [f32]) -> usize {
    let whole = row.len() / 32 * 32;
    let mut kept = 0;
    for start in (0..whole).step_by(32) {
        // SAFETY: start + 32 <= whole <= row.len().
        let nonzero = unsafe { nonzero_mask(row.as_ptr().add(start)) };
        for part in 0..4 {
            let mask = (nonzero >> (8 * part)) & 0xff;
            if mask != 0 {
                // SAFETY: the group's 8 bytes lie inside `row` (start + 8 part + 8 <= whole);
                // kept counts the non-zeros before the group, at most start + 8 part of them,
                // so 8 entries from kept fit in idx and vals (both >= row.len(), the caller's
                // contract); the CPU has AVX2.
                kept += unsafe { pack_group(row, start + 8 * part, mask, scale, idx, vals, kept) };
            }
        }
    }
    for (j, &byte) in row.iter().enumerate().skip(whole) {
        // Branch-free, like the portable compaction: every byte is written, non-zeros advance.
        idx[kept] = j as u32;
        vals[kept] = f32::from(byte) * scale;
        kept += usize::from(byte != 0);
    }
    kept
}

/// Bit `q` set when byte `q` of the 32 at `at` is non-zero.
///
/// # Safety
/// The CPU has AVX2; 32 bytes are readable at `at`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn nonzero_mask(at: *const u8) -> u32 {
    // SAFETY: 32 readable bytes at `at` (the caller's contract); an unaligned load.
    let bytes = unsafe { _mm256_loadu_si256(at.cast()) };
    !(_mm256_movemask_epi8(_mm256_cmpeq_epi8(bytes, _mm256_setzero_si256())) as u32)
}

/// Packs the group of 8 bytes at `row[first..first + 8]`, whose non-zeros are the set bits of
/// `mask`, to `idx` and `vals` from entry `kept` (8 entries written); returns how many it kept.
///
/// # Safety
/// The CPU has AVX2; `first + 8 <= row.len()`; `kept + 8 <= idx.len()` and `<= vals.len()`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pack_group(
    row: &[u8],
    first: usize,
    mask: u32,
    scale: f32,
    idx: &mut [u32],
    vals: &mut [f32],
    kept: usize,
) -> usize {
    let positions: __m128i = _mm_cvtsi64_si128(POSITIONS[mask as usize] as i64);
    // SAFETY: row[first..first + 8] exists (the caller's contract); an unaligned 8-byte load.
    let bytes = unsafe { _mm_loadl_epi64(row.as_ptr().add(first).cast()) };
    let packed = _mm_shuffle_epi8(bytes, positions);
    let values = _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(packed)),
        _mm256_set1_ps(scale),
    );
    let columns = _mm256_add_epi32(_mm256_cvtepu8_epi32(positions), _mm256_set1_epi32(first as i32));
    // SAFETY: kept + 8 <= idx.len() and vals.len() (the caller's contract); unaligned stores.
    unsafe {
        _mm256_storeu_si256(idx.as_mut_ptr().add(kept).cast(), columns);
        _mm256_storeu_ps(vals.as_mut_ptr().add(kept), values);
    }
    mask.count_ones() as usize
}
