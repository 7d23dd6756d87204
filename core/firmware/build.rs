//! The build's configuration, from the environment (each a whole number unless said):
//! - `IENK_HIDDEN`: hidden units of the network (default 128, the thesis's);
//! - `IENK_MAX_EXAMPLES`: training examples a run may use, 1 to 65536 (default 60000, MNIST's
//!   training split); the example order holds that many u16;
//! - `IENK_RANK`: 0 (the default) trains the thesis's scheme (10 full-rank members, one example
//!   per update, lr 0.001, the thesis form with the coefficients clipped to 2); 1 or more trains
//!   low-rank members of that rank instead, in antithetic pairs, with the logit form, each
//!   draw's share of the update summed into room for the direction as it comes (`ienk-cli
//!   train --low-memory`), so that memory does not grow with the members;
//! - `IENK_PARTICLES` (even, default 200), `IENK_BATCH` (examples per update, 1 to 1024,
//!   default 10) and `IENK_LR` (a decimal, default 0.002): the low-rank build's members, batch
//!   and step size; `IENK_SUM_DRAWS` (1 to 64, default 1): how many draws' shares it sums into
//!   the direction at a time, which loads and stores the direction that many times fewer for
//!   that many draws' factors (the same model); all refused with `IENK_RANK=0`, whose scheme
//!   fixes them;
//! - `IENK_DIRECTION_ROOM`: 1 to give the thesis's step room for the direction (one network
//!   restricted to an image's non-zero pixels), so that the members sum it as they go and the
//!   update does not draw their perturbations again: about 30% fewer instructions a step, for
//!   one restricted network less the update's perturbation block (16 KiB) that the workspace
//!   then does without; 0 (the default) to keep the memory; refused with `IENK_RANK` above 0,
//!   whose step always has its room;
//! - `IENK_RAM_KB`: KiB of RAM the linker may place the buffers and the stack in, 1 to 4096
//!   (default 4096, QEMU's board): a build whose static buffers do not fit, with 16 KiB left
//!   for the stack, fails to link.
//!
//! Writes `config.rs` (the settings as constants) and `memory.x` (the board's memory map, where
//! cortex-m-rt's `link.x` looks for it) into `OUT_DIR`. The low-rank step's workspace is sized
//! here by the core itself (a build dependency), for this host's kernels: the most any of them
//! needs, which is at least what the Cortex-M4F's portable kernels need (the firmware checks
//! that at run time).

use std::path::PathBuf;

use ienk::ensemble::low_rank_update::SUM_DRAWS_MAX;
use ienk::ensemble::perturb::Perturbations;
use ienk::ensemble::resampled::{Form, Resampled};
use ienk::idx::IMAGE_PIXELS;
use ienk::mlp::Layout;

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

/// Whether the environment variable `name` is set (and asks cargo to rebuild when it changes).
fn is_set(name: &str) -> bool {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var_os(name).is_some()
}

/// The step size from `IENK_LR`, a positive decimal, or `default` when unset; anything else
/// stops the build naming the variable.
fn step_size(default: f32) -> f32 {
    println!("cargo:rerun-if-env-changed=IENK_LR");
    let Ok(text) = std::env::var("IENK_LR") else {
        return default;
    };
    match text.trim().parse::<f32>() {
        Ok(lr) if lr.is_finite() && lr > 0.0 => lr,
        _ => panic!("IENK_LR={text:?}: expected a positive decimal, such as 0.002"),
    }
}

/// The low-rank build's rule, as `ienk-cli train --optimizer ienk --rank RANK --antithetic
/// --particles MEMBERS --lr LR` makes it (the seed does not change the workspace).
fn low_rank_rule(hidden: usize, rank: usize, members: usize, lr: f32) -> Resampled {
    let layout = Layout::mnist(hidden);
    Resampled {
        perturb: Perturbations {
            layout,
            std: layout.glorot_std(),
            rank,
            antithetic: true,
            seed: 0,
        },
        members,
        form: Form::Logit,
        lr,
        momentum: 0.0,
        normalize: false,
    }
}

/// KiB of RAM the build must leave for the stack: a run uses about 14 (the normal sampler's
/// tables, 8, and the few-row GEMM's row buffer, 4, are the most of it).
const MIN_STACK_KB: u64 = 16;

fn main() {
    let hidden = setting("IENK_HIDDEN", 128, 1, 4096);
    let max_examples = setting("IENK_MAX_EXAMPLES", 60_000, 1, 65_536);
    let rank = setting("IENK_RANK", 0, 0, IMAGE_PIXELS as u64);
    let low_rank_settings = ["IENK_PARTICLES", "IENK_BATCH", "IENK_LR", "IENK_SUM_DRAWS"];
    if rank == 0
        && let Some(name) = low_rank_settings.into_iter().find(|n| is_set(n))
    {
        panic!(
            "{name} sets the low-rank build (IENK_RANK above 0) only: the thesis's scheme (IENK_RANK=0) \
             fixes 10 members, one example per update and lr 0.001"
        );
    }
    let members = setting("IENK_PARTICLES", 200, 2, 1 << 20);
    assert!(
        members.is_multiple_of(2),
        "IENK_PARTICLES={members}: the low-rank build makes antithetic pairs, so it must be even"
    );
    let batch = setting("IENK_BATCH", 10, 1, 1024);
    let sum_draws = setting("IENK_SUM_DRAWS", 1, 1, SUM_DRAWS_MAX as u64);
    let direction_room = setting("IENK_DIRECTION_ROOM", 0, 0, 1) == 1;
    assert!(
        !(direction_room && rank > 0),
        "IENK_DIRECTION_ROOM=1 is for the thesis's scheme (IENK_RANK=0): the low-rank build's step \
         always sums the direction in its room"
    );
    let ram_kb = setting("IENK_RAM_KB", 4096, 1, 4096);
    let (members, batch, lr, sum_draws) = match rank {
        0 => (10, 1, 0.001, 1),
        _ => (members, batch, step_size(0.002), sum_draws),
    };
    // The low-rank step's workspace for a batch (its members perturb every input column).
    let low_rank_work = match rank {
        0 => 0,
        _ => low_rank_rule(hidden as usize, rank as usize, members as usize, lr)
            .summing_workspace_len(batch as usize, sum_draws as usize),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let config = format!(
        "/// Hidden units of the network (`IENK_HIDDEN` at build time).\n\
         const HIDDEN: usize = {hidden};\n\
         /// Training examples a run may use at most (`IENK_MAX_EXAMPLES` at build time).\n\
         const MAX_EXAMPLES: usize = {max_examples};\n\
         /// Room for the step's direction (`IENK_DIRECTION_ROOM=1` at build time).\n\
         const DIRECTION_ROOM: bool = {direction_room};\n\
         /// Rank of the members' weight perturbations, 0 for full rank (`IENK_RANK`).\n\
         const RANK: usize = {rank};\n\
         /// Members (`IENK_PARTICLES`; the thesis's 10 at full rank).\n\
         const MEMBERS: usize = {members};\n\
         /// Examples per update (`IENK_BATCH`; the thesis's 1 at full rank).\n\
         const BATCH: usize = {batch};\n\
         /// Step size h (`IENK_LR`; the thesis's 0.001 at full rank).\n\
         const LR: f32 = {lr:?};\n\
         /// Draws whose shares a low-rank step sums at a time (`IENK_SUM_DRAWS`).\n\
         const SUM_DRAWS: usize = {sum_draws};\n\
         /// Floats of the low-rank step's workspace (0 at full rank), as the core sizes it.\n\
         const LOW_RANK_WORK: usize = {low_rank_work};\n"
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
         {MIN_STACK_KB} KiB of RAM left for the stack: raise IENK_RAM_KB, or lower IENK_HIDDEN, \
         IENK_MAX_EXAMPLES or IENK_BATCH\");\n"
    );
    std::fs::write(out.join("memory.x"), memory).expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
}
