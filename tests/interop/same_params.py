"""Interop check: two model files hold the same tensors, bit for bit (the metadata may differ).

usage: python3 same_params.py A.safetensors B.safetensors
"""
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    a_path, b_path = sys.argv[1:3]
    a, b = load_file(a_path), load_file(b_path)
    if sorted(a) != sorted(b):
        sys.exit(f"tensors differ: {sorted(a)} in {a_path}, {sorted(b)} in {b_path}")
    for name in sorted(a):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            sys.exit(f"{name}: {x.dtype} {x.shape} in {a_path}, {y.dtype} {y.shape} in {b_path}")
        differ = int(np.count_nonzero(x.view(np.uint32) != y.view(np.uint32)))
        if differ:
            sys.exit(f"{name}: {differ} of {x.size} values differ between {a_path} and {b_path}")
    print(f"same parameters: {', '.join(f'{n} {list(a[n].shape)}' for n in sorted(a))}")


if __name__ == "__main__":
    main()
