//! How deep the stack went: cortex-m-rt paints the stack's whole room with a known word at boot
//! (its `paint-stack` feature), so the words still painted were never touched.

use cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    /// The top of the stack, which grows down from it (cortex-m-rt's linker script).
    static _stack_start: u32;
    /// The lowest address the stack may reach: the end of the static buffers.
    static _stack_end: u32;
}

/// The most bytes of stack used since boot, and the bytes of its room (RAM after the static
/// buffers). O(bytes never used).
pub fn usage() -> (usize, usize) {
    let top = &raw const _stack_start as usize;
    let bottom = &raw const _stack_end as usize;
    let mut lowest_touched = bottom;
    while lowest_touched < top && still_painted(lowest_touched) {
        lowest_touched += 4;
    }
    (top - lowest_touched, top - bottom)
}

/// Whether the word at `address`, within the stack's room, still holds the paint.
fn still_painted(address: usize) -> bool {
    // SAFETY: `usage` passes only addresses from `_stack_end` (4-aligned by the linker script)
    // up to `_stack_start`, in steps of 4: RAM that the linker reserves for the stack, readable
    // at any time. A volatile read, because the compiler does not know that the stack wrote
    // there.
    unsafe { core::ptr::read_volatile(address as *const u32) == STACK_PAINT_VALUE }
}
