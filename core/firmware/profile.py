"""Where the firmware's instructions go in one IEnK training step, function by function.

usage: python3 profile.py FIRMWARE.elf DATA_DIR [TOP]

Boots the firmware twice with qemu.sh (QEMU's mps2-an386 board, counting instructions) and
QEMU's execution log (-d exec,nochain,in_asm): once training on 1 example, once on 3, with no
test examples. The log gives every translated block's instructions and every execution of a
block, so each function's instruction count is exact; the difference between the two runs,
halved, is one training step without the start-up (zeroing RAM, the sampler's tables, the
initial weights) and the model's writing. Prints the TOP (default 15) functions by instructions
per step. Needs qemu-system-arm; the log is read as it comes, never stored.
"""
import collections
import os
import re
import subprocess
import sys

TRACE = re.compile(r"\[[0-9a-f]+/([0-9a-f]+)/[0-9a-f]+/[0-9a-f]+\] (\S*)")
INSN = re.compile(r"0x([0-9a-f]{8}):\s")
LEGACY_PART = re.compile(r"(\d+)")


def demangle(symbol):
    """Rust symbol to a readable path: legacy `_ZN...E` fully, v0 `_R...` by its last name."""
    if symbol.startswith("_ZN") and symbol.endswith("E"):
        body, parts = symbol[3:-1], []
        while body:
            m = LEGACY_PART.match(body)
            if not m:
                break
            n = int(m.group(1))
            start = m.end()
            parts.append(body[start : start + n])
            body = body[start + n :]
        if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
            parts.pop()
        name = "::".join(parts)
        for code, text in [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$u7b$", "{"),
                           ("$u7d$", "}"), ("$RF$", "&"), ("$C$", ","), ("..", "::")]:
            name = name.replace(code, text)
        return name
    if symbol.startswith("_R"):
        # The last path component is `<length>[_]<name>` running to the symbol's end (the `_`
        # separates a name that starts with `_` or a digit).
        for m in re.finditer(r"\d+", symbol):
            rest = symbol[m.end() :]
            if rest.startswith("_") and len(rest) == int(m.group()) + 1:
                return rest[1:]
            if rest and len(rest) == int(m.group()) and not rest[0].isdigit():
                return rest
    return symbol


def instructions_by_function(elf, data, examples):
    """Runs the firmware on `examples` training examples; returns {function: instructions}."""
    qemu = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qemu.sh")
    cmd = [qemu, elf, data, "/dev/null", str(examples), "1", "0", "0"]
    env = dict(os.environ, IENK_QEMU_LOG="exec,nochain,in_asm")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    executions, symbol_of, size = collections.Counter(), {}, collections.Counter()
    block = None
    for line in proc.stderr:
        if line.startswith("Trace "):
            m = TRACE.search(line)
            if m:
                pc = int(m.group(1), 16)
                executions[pc] += 1
                symbol_of[pc] = m.group(2)
        elif line.startswith("IN:"):
            block = None
        elif (m := INSN.match(line)) is not None:
            if block is None:
                block = int(m.group(1), 16)
                size[block] = 0
            size[block] += 1
        elif not line.strip():
            block = None
    if proc.wait() != 0:
        sys.exit(f"profile: the firmware failed on {examples} example(s)")
    totals = collections.Counter()
    for pc, count in executions.items():
        totals[demangle(symbol_of[pc])] += count * size[pc]
    return totals


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    elf, data = sys.argv[1:3]
    top = int(sys.argv[3]) if len(sys.argv) == 4 else 15
    one, three = (instructions_by_function(elf, data, n) for n in (1, 3))
    step = {f: (three[f] - one[f]) / 2 for f in three}
    total = sum(step.values())
    if total <= 0:
        sys.exit("profile: QEMU's log showed no instructions for the training steps")
    print(f"instructions per training step: {total / 1e6:.2f} million")
    for name, count in sorted(step.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{count / total * 100:6.2f}%  {count / 1e6:7.2f} M  {name}")


if __name__ == "__main__":
    main()
