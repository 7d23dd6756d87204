//! The build's configuration, from the environment (each a whole number):
//! - `IENK_HIDDEN`: hidden units of the network (default 128, the thesis's);
//! - `IENK_MAX_EXAMPLES`: training examples a run may use, 1 to 65536 (default 60000, MNIST's
//!   training split); the example order holds that many u16;
//! - `IENK_DIRECTION_ROOM`: 1 to give the step room for the direction (one network restricted
//!   to an image's non-zero pixels), so that the members sum it as they go and the update does
//!   not draw their perturbations again: about 30% fewer instructions a step, for one
//!   restricted network less the update's perturbation block (16 KiB) that the workspace then
//!   does without; 0 (the default) to keep the memory;
//! - `IENK_RAM_KB`: KiB of RAM the linker may place the buffers and the stack in, 1 to 4096
//!   (default 4096, QEMU's board): a build whose static buffers do not fit, with 16 KiB left
//!   for the stack, fails to link.
//!
//! Writes `config.rs` (the settings as constants) and `memory.x` (the board's memory map, where
//! cortex-m-rt's `link.x` looks for it) into `OUT_DIR`.

use std::path::PathBuf;

/// A whole number from the environment variable `name` in `min..=max`, or `default` when unset.
/// Anything else stops the build with a message naming the variable.
fn setting(name: &str, default: u64, min: u64, max: u64) -> u64 {
    println!("cargo:rerun-if-env-changed={name}");
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => n,
        _ => panic!("{name}={text:?}: expected a whole number from {min} to {max}"),
    }
}

/// KiB of RAM the build must leave for the stack: a run uses about 14 (the normal sampler's
/// tables, 8, and the few-row GEMM's row buffer, 4, are the most of it).
const MIN_STACK_KB: u64 = 16;

fn main() {
    let hidden = setting("IENK_HIDDEN", 128, 1, 4096);
    let max_examples = setting("IENK_MAX_EXAMPLES", 60_000, 1, 65_536);
    let direction_room = setting("IENK_DIRECTION_ROOM", 0, 0, 1) == 1;
    let ram_kb = setting("IENK_RAM_KB", 4096, 1, 4096);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let config = format!(
        "/// Hidden units of the network (`IENK_HIDDEN` at build time).\n\
         const HIDDEN: usize = {hidden};\n\
         /// Training examples a run may use at most (`IENK_MAX_EXAMPLES` at build time).\n\
         const MAX_EXAMPLES: usize = {max_examples};\n\
         /// Room for the step's direction (`IENK_DIRECTION_ROOM=1` at build time).\n\
         const DIRECTION_ROOM: bool = {direction_room};\n"
    );
    std::fs::write(out.join("config.rs"), config).expect("OUT_DIR is writable");
    let memory = format!(
        "/* QEMU's mps2-an386 (Arm's MPS2 board with the AN386 Cortex-M4 image): 4 MB of SSRAM for\n   \
         the code at 0, 4 MB of SSRAM for the data at 0x20000000, of which the build may use\n   \
         IENK_RAM_KB. A board of your own needs its own map. */\n\
         MEMORY\n{{\n  FLASH : ORIGIN = 0x00000000, LENGTH = 4M\n  \
         RAM : ORIGIN = 0x20000000, LENGTH = {ram_kb}K\n}}\n\
         /* The stack takes the RAM after the static buffers; a run measured 14 KiB at most. */\n\
         ASSERT(_stack_start - _stack_end >= {MIN_STACK_KB}K, \"ienk-firmware: under \
         {MIN_STACK_KB} KiB of RAM left for the stack: raise IENK_RAM_KB, or lower IENK_HIDDEN \
         or IENK_MAX_EXAMPLES\");\n"
    );
    std::fs::write(out.join("memory.x"), memory).expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
}
