#!/usr/bin/env bash
# Interop: a model trained for one epoch by ienk-cli, loaded by safetensors.numpy, must give in
# numpy exactly the test accuracy `ienk-cli eval` prints; the core's no-heap examples must agree
# with the CLI (inference: the same accuracy line; training: the same parameters). Needs MNIST in
# $IENK_DATA, python3 with numpy and safetensors (CI installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -p ienk-cli
./target/release/ienk-cli train --optimizer adam --epochs 1 --seed 0 --out "$work/model.safetensors" --progress 1
./target/release/ienk-cli eval --model "$work/model.safetensors" | tee "$work/eval.txt"
python3 tests/interop/check_model.py "$work/model.safetensors" "$IENK_DATA" "$work/eval.txt"

# The core's no-heap inference example must print the same accuracy line as `ienk-cli eval`.
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte train-images-idx3-ubyte train-labels-idx1-ubyte; do
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

# The core's no-heap training example must write the model `ienk-cli train` writes with the same
# settings and seed (2 epochs over 3000 examples: the order is reshuffled between them).
cargo build --release -p ienk-core --example no_heap_training
./target/release/examples/no_heap_training "$work/train-images-idx3-ubyte" "$work/train-labels-idx1-ubyte" \
  "$work/t10k-images-idx3-ubyte" "$work/t10k-labels-idx1-ubyte" "$work/no_heap.safetensors" 3000 2 4
./target/release/ienk-cli train --optimizer ienk --form thesis --clip 2 --particles 10 --batch-size 1 \
  --lr 0.001 --limit 3000 --epochs 2 --seed 4 --threads 2 --progress 1 --out "$work/cli_ienk.safetensors"
python3 tests/interop/same_params.py "$work/no_heap.safetensors" "$work/cli_ienk.safetensors"
echo "interop: the no-heap training example wrote ienk-cli train's model"
