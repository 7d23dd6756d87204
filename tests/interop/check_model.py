"""Interop check: load an ienk model with safetensors.numpy, recompute the MNIST test accuracy in
numpy (float64), and compare with the accuracy line `ienk-cli eval` printed.

usage: python3 check_model.py MODEL.safetensors MNIST_DIR EVAL_OUTPUT.txt
"""
import gzip
import os
import re
import sys

import numpy as np
from safetensors.numpy import load_file


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(directory, stem, idx):
    for name in (f"{stem}-{idx}-ubyte", f"{stem}.{idx}-ubyte"):
        for suffix in ("", ".gz"):
            path = os.path.join(directory, name + suffix)
            if os.path.exists(path):
                return path
    sys.exit(f"no {stem} file in {directory}")


def main():
    model_path, mnist_dir, eval_out = sys.argv[1:4]
    t = load_file(model_path)
    w1, b1, w2, b2 = (t[k].astype(np.float64) for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    assert w1.shape[1] == 784 and w2.shape[0] == 10, (w1.shape, w2.shape)
    x = read_idx(find(mnist_dir, "t10k-images", "idx3")).reshape(-1, 784).astype(np.float64) / 255.0
    y = read_idx(find(mnist_dir, "t10k-labels", "idx1"))
    h = np.maximum(x @ w1.T + b1, 0.0)
    z = h @ w2.T + b2
    correct = int((z.argmax(axis=1) == y).sum())
    ours = f"test accuracy: {correct / len(y):.4f} ({correct}/{len(y)})"
    with open(eval_out) as f:
        theirs = next(line.strip() for line in f if line.startswith("test accuracy:"))
    print(f"numpy:    {ours}\nienk-cli: {theirs}")
    if ours != theirs:
        sys.exit("MISMATCH between numpy and ienk-cli eval")
    print("interop: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
