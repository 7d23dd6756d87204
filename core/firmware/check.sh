#!/usr/bin/env bash
# The firmware on QEMU's Cortex-M4F board against ienk-cli on this PC: with the same settings
# and seed, it must write the same model bit for bit and print the same test accuracy after
# every epoch, as built by default, for parts with 256 KiB of RAM, with room for the direction
# (in 1 MiB, and in 256 KiB), and with low-rank members (in 4 MiB, and in 256 KiB); a build
# setting that would be ignored must stop the build; on bad input it must stop with a message
# naming the file, exit 1 and leave no model behind. Needs MNIST in $IENK_DATA (raw or .gz), qemu-system-arm, rustup's
# thumbv7em-none-eabihf target, and python3 with numpy and safetensors.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: "${IENK_DATA:?set IENK_DATA to the MNIST directory}"
mkdir "$work/data"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -f "$IENK_DATA/$f" ]; then cp "$IENK_DATA/$f" "$work/data/$f"; else gunzip -c "$IENK_DATA/$f.gz" > "$work/data/$f"; fi
done
(cd "$root" && cargo build --release -p ienk-cli)
cd "$root/core/firmware"
cargo build --release
firmware=target/thumbv7em-none-eabihf/release/ienk-firmware
run() { timeout 600 ./qemu.sh "$firmware" "$@"; }
# The stack build.rs leaves room for, in KiB (its MIN_STACK_KB).
min_stack_kb=$(sed -n 's/^const MIN_STACK_KB: u64 = \([0-9]*\);$/\1/p' build.rs)

# Trains on QEMU with the firmware ELF $1 (built for $2 hidden units) on 300 examples for two
# epochs (the order is reshuffled between them), scores the whole test split, and compares the
# model and the test accuracies with those of ienk-cli's run with the build's flags (the rest
# of the arguments; by default the thesis's scheme), and that it reported the stack it used.
same_as_cli() { # ELF HIDDEN [IENK-CLI FLAGS...]
  local elf="$1" hidden="$2" ours theirs
  shift 2
  local flags=("$@")
  [ ${#flags[@]} -gt 0 ] || flags=(--form thesis --clip 2 --particles 10 --batch-size 1 --lr 0.001)
  timeout 600 ./qemu.sh "$elf" "$work/data" "$work/firmware.safetensors" 300 2 4 10000 | tee "$work/firmware.txt"
  "$root/target/release/ienk-cli" train --data-dir "$work/data" --kernel portable --optimizer ienk \
    "${flags[@]}" --hidden "$hidden" --limit 300 \
    --epochs 2 --seed 4 --threads 1 --progress 1 --out "$work/cli.safetensors" | tee "$work/cli.txt"
  python3 "$root/tests/interop/same_params.py" "$work/firmware.safetensors" "$work/cli.safetensors"
  ours=$(sed -n 's/^epoch \([0-9]*\)\/.*test acc \([0-9.]*\).*/\1 \2/p' "$work/firmware.txt")
  theirs=$(sed -n 's/^--- epoch \([0-9]*\)\/.*| test loss [0-9.]* acc \([0-9.]*\).*/\1 \2/p' "$work/cli.txt")
  if [ -z "$ours" ] || [ "$ours" != "$theirs" ]; then
    echo "firmware: test accuracy per epoch [$ours], ienk-cli [$theirs]" >&2
    exit 1
  fi
  # build.rs links only builds that leave MIN_STACK_KB for the stack: it must stay within it.
  stack=$(sed -n 's/.*stack: \([0-9]*\) bytes used at most.*/\1/p' "$work/firmware.txt")
  if [ -z "$stack" ] || [ -z "$min_stack_kb" ] || [ "$stack" -gt $((min_stack_kb * 1024)) ]; then
    echo "firmware: stack used [$stack] bytes, over the [$min_stack_kb] KiB that build.rs reserves" >&2
    exit 1
  fi
  echo "firmware: the Cortex-M4F wrote ienk-cli train's model and test accuracies ($(echo $ours | tr '\n' ' '))"
}
same_as_cli "$firmware" 128
# The build for parts with 256 KiB of RAM: 16 hidden units, linked into 256 KiB (which fails
# when the buffers leave under 16 KiB for the stack).
IENK_HIDDEN=16 IENK_RAM_KB=256 cargo build --release --target-dir target/h16
same_as_cli target/h16/thumbv7em-none-eabihf/release/ienk-firmware 16
# With room for the direction, whose members sum it as they go (fewer draws, the same model),
# linked into 1 MiB.
IENK_DIRECTION_ROOM=1 IENK_RAM_KB=1024 cargo build --release --target-dir target/room
same_as_cli target/room/thumbv7em-none-eabihf/release/ienk-firmware 128
# The same for parts with 256 KiB of RAM: the room's workspace needs no perturbation block for
# the update, which makes room for the direction there.
IENK_HIDDEN=16 IENK_DIRECTION_ROOM=1 IENK_RAM_KB=256 cargo build --release --target-dir target/h16room
same_as_cli target/h16room/thumbv7em-none-eabihf/release/ienk-firmware 16
# Low-rank members in antithetic pairs, each draw's share of the update summed into the room for
# the direction as it comes (ienk-cli's --low-memory): batches of 10 in QEMU's 4 MiB, eight
# draws' shares at a time, and one example per update in 256 KiB, one draw's at a time.
IENK_RANK=1 IENK_HIDDEN=16 IENK_SUM_DRAWS=8 cargo build --release --target-dir target/lowrank
same_as_cli target/lowrank/thumbv7em-none-eabihf/release/ienk-firmware 16 \
  --rank 1 --antithetic --particles 200 --batch-size 10 --lr 0.002 --low-memory
IENK_RANK=1 IENK_HIDDEN=16 IENK_BATCH=1 IENK_LR=0.0002 IENK_RAM_KB=256 cargo build --release --target-dir target/lowrank256
same_as_cli target/lowrank256/thumbv7em-none-eabihf/release/ienk-firmware 16 \
  --rank 1 --antithetic --particles 200 --batch-size 1 --lr 0.0002 --low-memory
# A low-rank setting given to the thesis's build would be ignored: the build stops naming it.
if IENK_BATCH=4 cargo build --release --target-dir target/refused 2>"$work/build.txt"; then
  echo "firmware: IENK_BATCH without IENK_RANK built" >&2
  exit 1
fi
grep -qF "IENK_BATCH sets the low-rank build (IENK_RANK above 0) only" "$work/build.txt" || {
  echo "firmware: IENK_BATCH without IENK_RANK: $(cat "$work/build.txt")" >&2
  exit 1
}

# Bad input: the status, the message, and no model left behind.
expect_failure() { # MESSAGE ARGS...
  local message="$1" out
  shift
  if out=$(run "$@" 2>&1); then
    echo "firmware: succeeded on bad input: $*" >&2
    exit 1
  fi
  grep -qF -- "$message" <<<"$out" || { echo "firmware: expected '$message', got: $out" >&2; exit 1; }
  if [ -e "$work/bad.safetensors" ]; then echo "firmware: left a model behind: $*" >&2; exit 1; fi
}
expect_failure "DATA_DIR and OUT are missing"
expect_failure 'EXAMPLES "3x" is not a number' "$work/data" "$work/bad.safetensors" 3x
expect_failure "EPOCHS must be at least 1" "$work/data" "$work/bad.safetensors" 3 0
expect_failure "$work/none/train-images-idx3-ubyte: open failed: no such file or directory" \
  "$work/none" "$work/bad.safetensors"
mkdir "$work/bad"
cp "$work/data/"* "$work/bad/"
head -c 1000 "$work/data/train-images-idx3-ubyte" > "$work/bad/train-images-idx3-ubyte"
expect_failure "$work/bad/train-images-idx3-ubyte: truncated: expected 47040016 bytes" \
  "$work/bad" "$work/bad.safetensors" 5
# A label that is not a digit, met during training: the model file opened before is removed.
cp "$work/data/train-images-idx3-ubyte" "$work/bad/"
printf '\x0b' | dd of="$work/bad/train-labels-idx1-ubyte" bs=1 seek=$((8 + 2)) conv=notrunc status=none
expect_failure "$work/bad/train-labels-idx1-ubyte: label 2 is 11" "$work/bad" "$work/bad.safetensors" 5 1 0 0
# More examples than a build's order holds.
IENK_MAX_EXAMPLES=200 cargo build --release --target-dir target/max200
firmware=target/max200/thumbv7em-none-eabihf/release/ienk-firmware
expect_failure "EXAMPLES 300: this build holds at most 200 training examples" "$work/data" "$work/bad.safetensors" 300
firmware=target/thumbv7em-none-eabihf/release/ienk-firmware
echo "firmware: bad input stops with the file named, status 1, no model left"

# The instruction profile of one step (profile.py) still reads QEMU's log.
python3 profile.py "$firmware" "$work/data" 5
