#!/usr/bin/env bash
# Interop: a model trained for one epoch by ienk-cli, loaded by safetensors.numpy, must give in
# numpy exactly the test accuracy `ienk-cli eval` prints, and the core's no-heap inference example
# the same accuracy line. Needs MNIST in $IENK_DATA, python3 with numpy and safetensors (CI
# installs them). The no-heap training is core/firmware's, checked by core/firmware/check.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -p ienk-cli
./target/release/ienk-cli train --optimizer adam --epochs 1 --seed 0 --out "$work/model.safetensors" --progress 1
./target/release/ienk-cli eval --model "$work/model.safetensors" | tee "$work/eval.txt"
python3 tests/interop/check_model.py "$work/model.safetensors" "$IENK_DATA" "$work/eval.txt"

# The core's no-heap inference example must print the same accuracy line as `ienk-cli eval`.
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -f "$IENK_DATA/$f" ]; then cp "$IENK_DATA/$f" "$work/$f"; else gunzip -c "$IENK_DATA/$f.gz" > "$work/$f"; fi
done
cargo build --release -p ienk-core --example no_heap_inference
example=$(./target/release/examples/no_heap_inference "$work/model.safetensors" \
  "$work/t10k-images-idx3-ubyte" "$work/t10k-labels-idx1-ubyte")
eval_line=$(grep '^test accuracy:' "$work/eval.txt")
echo "example:  $example"
if [ "$example" != "$eval_line" ]; then
  echo "interop: the no-heap example printed '$example', ienk-cli eval '$eval_line'" >&2
  exit 1
fi
echo "interop: the no-heap example agrees with ienk-cli eval"

