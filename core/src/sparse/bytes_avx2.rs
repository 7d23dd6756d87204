//! Rows of bytes (images) with AVX2, for [`super::SplitRows`]: counting each column's non-zeros,
//! and splitting a row into its dense columns' values and its other columns' non-zeros (column
//! indices and scaled values). 32 bytes are tested against zero at once, and each group of 8
//! with entries to keep is packed by a table lookup (the positions to keep) and one byte
//! shuffle, then widened to 8 indices and 8 floats stored whole; only the count kept advances
//! the output.

use core::arch::x86_64::{
    __m128i, __m256i, _mm_cvtsi64_si128, _mm_loadl_epi64, _mm_shuffle_epi8, _mm256_add_epi32,
    _mm256_cmpeq_epi8, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32, _mm256_loadu_si256, _mm256_movemask_epi8,
    _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_si256, _mm256_storeu_ps,
    _mm256_storeu_si256, _mm256_sub_epi8,
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

/// Splits `row` by the column masks `dense` (bit `q` of word `w` set when column `32 w + q` is
/// dense, `row.len().div_ceil(32)` words): every dense column's value, zero or not, goes in
/// order to the front of `dense_row`; the other columns' non-zeros go, with their columns
/// (increasing), to the front of `idx` and `vals`. Values are `f32::from(byte) * scale`. Returns how many sparse entries it
/// wrote. Entries past those written, up to `row.len()` in `idx` and `vals` and 7 past the
/// dense columns in `dense_row`, may be overwritten. O(row.len()).
///
/// # Safety
/// The CPU has AVX2; `dense` holds `row.len().div_ceil(32)` words; `idx` and `vals` hold at
/// least `row.len()` entries; `dense_row` holds at least the number of dense columns plus 7.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn split_row(
    row: &[u8],
    dense: &[u32],
    scale: f32,
    idx: &mut [u32],
    vals: &mut [f32],
    dense_row: &mut [f32],
) -> usize {
    let whole = row.len() / 32 * 32;
    let (mut kept, mut placed) = (0, 0);
    for (start, &dense_mask) in (0..whole).step_by(32).zip(dense) {
        // SAFETY: start + 32 <= whole <= row.len().
        let sparse_mask = unsafe { nonzero_mask(row.as_ptr().add(start)) } & !dense_mask;
        for part in 0..4 {
            let first = start + 8 * part;
            let (to_compress, to_place) = (
                (sparse_mask >> (8 * part)) & 0xff,
                (dense_mask >> (8 * part)) & 0xff,
            );
            if to_compress != 0 {
                // SAFETY: the group lies in `row`; kept counts the entries written before it, at
                // most `first`, so 8 from kept fit in idx and vals (both >= row.len(), the
                // caller's contract); the CPU has AVX2.
                kept += unsafe { pack_group(row, first, to_compress, scale, idx, vals, kept) };
            }
            if to_place != 0 {
                // SAFETY: placed counts the dense columns before this group, so placed + 8 is at
                // most the dense columns plus 7 (the caller's bound on dense_row); the group lies
                // in `row`; the CPU has AVX2.
                placed += unsafe { pack_values(row, first, to_place, scale, dense_row, placed) };
            }
        }
    }
    for (j, &byte) in row.iter().enumerate().skip(whole) {
        let value = f32::from(byte) * scale;
        if dense[j / 32] >> (j % 32) & 1 == 1 {
            dense_row[placed] = value;
            placed += 1;
        } else {
            idx[kept] = j as u32;
            vals[kept] = value;
            kept += usize::from(byte != 0);
        }
    }
    kept
}

/// Adds to `counts[j]` the number of the `rows` rows (row `b` is `row(b)`, each `counts.len()`
/// bytes long) whose byte `j` is non-zero. O(rows counts.len() / 32) vector operations.
///
/// # Safety
/// The CPU has AVX2; every `row(b)` for `b < rows` holds exactly `counts.len()` bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn count_nonzeros<'r>(rows: usize, row: impl Fn(usize) -> &'r [u8], counts: &mut [u32]) {
    /// Columns counted per pass over the rows, in byte lanes held on the stack.
    const BLOCK: usize = 1024;
    /// Rows a byte lane can count before it must be added to `counts`.
    const FLUSH: usize = 255;
    let cols = counts.len();
    let whole = cols / 32 * 32;
    for block in (0..whole).step_by(BLOCK) {
        let width = BLOCK.min(whole - block);
        let mut lanes = [_mm256_setzero_si256(); BLOCK / 32];
        for b in 0..rows {
            if block == 0 && b + crate::prefetch::ROWS_AHEAD < rows {
                crate::prefetch::bytes(row(b + crate::prefetch::ROWS_AHEAD));
            }
            let bytes = &row(b)[block..block + width];
            for (lane, chunk) in lanes.iter_mut().zip(bytes.chunks_exact(32)) {
                // SAFETY: `chunk` is 32 bytes; an unaligned load.
                let v = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) };
                // A zero byte compares to -1: subtracting counts the zeros.
                *lane = _mm256_sub_epi8(*lane, _mm256_cmpeq_epi8(v, _mm256_setzero_si256()));
            }
            if (b + 1) % FLUSH == 0 || b + 1 == rows {
                let counted = (b % FLUSH + 1) as u32;
                flush(
                    &mut lanes[..width / 32],
                    counted,
                    &mut counts[block..block + width],
                );
            }
        }
    }
    for b in 0..rows {
        for (count, &byte) in counts[whole..].iter_mut().zip(&row(b)[whole..]) {
            *count += u32::from(byte != 0);
        }
    }
}

/// Adds `counted - zeros` to each column's count, the zeros being the byte lanes, and clears
/// the lanes.
#[target_feature(enable = "avx2")]
fn flush(lanes: &mut [__m256i], counted: u32, counts: &mut [u32]) {
    for (lane, counts) in lanes.iter_mut().zip(counts.chunks_exact_mut(32)) {
        let mut zeros = [0u8; 32];
        // SAFETY: `zeros` is 32 bytes; an unaligned store.
        unsafe { _mm256_storeu_si256(zeros.as_mut_ptr().cast(), *lane) };
        for (count, &z) in counts.iter_mut().zip(&zeros) {
            *count += counted - u32::from(z);
        }
        *lane = _mm256_setzero_si256();
    }
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
    let columns = _mm256_add_epi32(_mm256_cvtepu8_epi32(positions), _mm256_set1_epi32(first as i32));
    // SAFETY: kept + 8 <= idx.len() (the caller's contract); an unaligned store.
    unsafe { _mm256_storeu_si256(idx.as_mut_ptr().add(kept).cast(), columns) };
    // SAFETY: the caller's contract, as pack_values needs it.
    unsafe { pack_values(row, first, mask, scale, vals, kept) }
}

/// Writes the bytes of `row[first..first + 8]` picked by the set bits of `mask`, in order and
/// as `f32::from(byte) * scale`, to `out` from entry `at` (8 entries written); returns how many
/// it picked.
///
/// # Safety
/// The CPU has AVX2; `first + 8 <= row.len()`; `at + 8 <= out.len()`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pack_values(row: &[u8], first: usize, mask: u32, scale: f32, out: &mut [f32], at: usize) -> usize {
    let positions: __m128i = _mm_cvtsi64_si128(POSITIONS[mask as usize] as i64);
    // SAFETY: row[first..first + 8] exists (the caller's contract); an unaligned 8-byte load.
    let bytes = unsafe { _mm_loadl_epi64(row.as_ptr().add(first).cast()) };
    let packed = _mm_shuffle_epi8(bytes, positions);
    let values = _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(packed)),
        _mm256_set1_ps(scale),
    );
    // SAFETY: at + 8 <= out.len() (the caller's contract); an unaligned store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(at), values) };
    mask.count_ones() as usize
}
