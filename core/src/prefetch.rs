//! Cache hints for data read in an order the hardware prefetcher cannot guess (images picked by
//! a shuffle, rows picked by column indices). Hints only: they never change a result.

/// How many rows (images) ahead of the one being read the row readers prefetch: enough to
/// cover a miss to memory while a 784-entry row is processed.
pub const ROWS_AHEAD: usize = 4;

/// Asks the CPU to start loading every 64-byte line of `data` into L1 (x86_64; a no-op
/// elsewhere). O(len / 64) instructions, no waiting.
#[inline]
pub fn bytes<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = data.as_ptr().cast::<i8>();
        for offset in (0..core::mem::size_of_val(data)).step_by(64) {
            // SAFETY: SSE, the intrinsic's only requirement, is part of the x86_64 baseline; a
            // prefetch reads nothing architecturally and never faults, and the address stays
            // inside `data` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
