//! The core clock's ticks since [`start`], counted by SysTick: its 24-bit down-counter, and its
//! wraps counted by the SysTick exception. On a board a tick is a core cycle. Under QEMU with
//! `-icount shift=0` (as `qemu.sh` runs it) each instruction is one nanosecond of virtual time
//! and the mps2-an386 core clock runs at 25 MHz, so a tick is 40 instructions: an exact,
//! repeatable instruction count (QEMU does not model cycles).

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;

/// The counter's reload value: the full 24 bits.
const RELOAD: u32 = 0x00FF_FFFF;

/// Times the counter went from 1 to 0 since `start`.
static WRAPS: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick on the core clock, wrapping every 2^24 ticks with an exception.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    // The first tick loads RELOAD into the cleared counter: count from there.
    while SYST::get_current() == 0 {}
}

/// Ticks since `start` (a counter read between two reads of the wrap count, retried if a wrap
/// came between them).
pub fn now() -> u64 {
    loop {
        let wraps = WRAPS.load(Ordering::Acquire);
        let current = SYST::get_current();
        if WRAPS.load(Ordering::Acquire) == wraps {
            return u64::from(wraps) * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current);
        }
    }
}

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::AcqRel);
}
