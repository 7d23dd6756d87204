//! `ienk-cli predict --image`'s PNG reader on any bytes: an error, never a panic, and 784 gray
//! levels whenever it reads an image.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    if let Ok(pixels) = ienk_cli::png::parse(data) {
        assert_eq!(pixels.len(), 784);
    }
});
