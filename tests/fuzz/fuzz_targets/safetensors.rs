//! `ienk::safetensors::read` on any bytes, for the thesis's network's input and output sizes and
//! for a tiny one, then the parameters and metadata of whatever it accepts: an error, never a
//! panic or an out-of-bounds read.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    if let Ok(model) = ienk::safetensors::read(data, 784, 10) {
        let mut theta = vec![0f32; model.layout.num_params()];
        let _ = model.copy_params(&mut theta);
        let _ = model.metadata("settings");
        let _ = model.metadata("optimizer");
    }
    if let Ok(model) = ienk::safetensors::read(data, 3, 2) {
        let mut theta = vec![0f32; model.layout.num_params()];
        let _ = model.copy_params(&mut theta);
    }
});
