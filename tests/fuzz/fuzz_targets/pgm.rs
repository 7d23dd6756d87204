//! `ienk-cli predict --image`'s PGM reader (P2 and P5) on any bytes: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let _ = ienk_cli::pgm::parse(data);
});
