#!/usr/bin/env bash
# Boots the firmware ELF on QEMU's mps2-an386 board (a Cortex-M4F with 4 MB + 4 MB of RAM) with
# semihosting on, so that it reads and writes the host's files; the arguments after the ELF
# become its command line. QEMU's exit status is the firmware's: 0 on success, 1 on failure.
# `cargo run` calls this as the runner: cargo run --release -- DATA_DIR OUT [EXAMPLES ...]
# IENK_QEMU_LOG=ITEMS adds QEMU's `-d ITEMS` log on stderr (profile.py reads exec,nochain,in_asm).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: qemu.sh FIRMWARE.elf [ARGS...]" >&2; exit 2; }
command -v qemu-system-arm >/dev/null || {
  echo "qemu.sh: qemu-system-arm not found (Debian/Ubuntu: apt install qemu-system-arm)" >&2
  exit 2
}
config="enable=on,target=native,arg=ienk-firmware"
elf="$1"
shift
for a in "$@"; do
  case "$a" in
    *[,\ ]*) echo "qemu.sh: argument '$a' holds a comma or a space, which the command line cannot carry" >&2; exit 2 ;;
  esac
  config+=",arg=$a"
done
# -icount shift=0: one instruction per nanosecond of virtual time, so that the firmware's clock
# ticks (the board's 25 MHz core clock) count instructions, 40 a tick, the same on every run.
exec qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none -serial none \
  -icount shift=0,align=off,sleep=off -semihosting-config "$config" -kernel "$elf" \
  ${IENK_QEMU_LOG:+-d "$IENK_QEMU_LOG"}
