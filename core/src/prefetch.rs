//! Cache hints for data read in an order the hardware prefetcher cannot guess (images picked by
//! a shuffle, rows picked by column indices). Hints only: they never change a result.

/// How many rows (images) ahead of the one being read the row readers prefetch: enough to
/// cover a miss to memory while a 784-entry row is processed.
pub const ROWS_AHEAD: usize = 4;

/// Asks the CPU to start loading every 64-byte line `data` touches into L1, the line of its
/// last byte included when `data` does not start on a line (x86_64; a no-op elsewhere).
/// O(len / 64) instructions, no waiting.
#[inline]
pub fn bytes<T>(data: &[T]) {
    span(data.as_ptr().cast(), core::mem::size_of_val(data));
}

/// [`bytes`] for the `len` bytes at `start`, for callers that hold a raw pointer (a tile of a
/// matrix being written). Any address is allowed, since a prefetch never faults.
// The address is only handed to the prefetch instruction, never dereferenced.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[inline]
pub(crate) fn span(start: *const i8, len: usize) {
    for offset in (0..len).step_by(64) {
        line(start.wrapping_add(offset));
    }
    if len > 0 && !(start as usize).is_multiple_of(64) {
        line(start.wrapping_add(len - 1));
    }
}

/// Asks the CPU to start loading the 64-byte line holding `address` into L1 (x86_64; a no-op
/// elsewhere). One instruction; any address is allowed, since a prefetch never faults.
// The address is only handed to the prefetch instruction, never dereferenced.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[inline(always)]
pub(crate) fn line(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE, the intrinsic's only requirement, is part of the x86_64 baseline; a
        // prefetch reads nothing architecturally and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
