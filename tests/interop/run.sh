#!/usr/bin/env bash
# Interop: a model trained for one epoch by ienk-cli, loaded by safetensors.numpy, must give in
# numpy exactly the test accuracy `ienk-cli eval` prints. Needs MNIST in $IENK_DATA, python3 with
# numpy and safetensors (CI installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -p ienk-cli
./target/release/ienk-cli train --optimizer adam --epochs 1 --seed 0 --out "$work/model.safetensors" --progress 1
./target/release/ienk-cli eval --model "$work/model.safetensors" | tee "$work/eval.txt"
python3 tests/interop/check_model.py "$work/model.safetensors" "$IENK_DATA" "$work/eval.txt"
