#!/usr/bin/env python3
"""Generates the reference files of tests/test_safetensors.cpp (tests/fixtures/safetensors/).

Both files are written by the `safetensors` package from torch tensors, so the C++ reader is checked
against the reference writer (its header layout, its tensor order, its padding):

* torch_dtypes.safetensors: one tensor of every dtype mc supports, with exact values (IEEE special values
  and subnormals given as bit patterns), a 0-d tensor, empty tensors, a transposed (then made contiguous)
  matrix, and metadata with non-ASCII text. The test hard-codes the same values.
* torch_unsupported.safetensors: dtypes that safetensors knows but mc does not (int16, uint32,
  float8_e4m3fn, complex64) next to one f32 tensor; the file must open and only those tensors fail.

The writer keeps metadata in a hash map, so the order of the metadata keys in the header (and hence the
bytes of the first file) can differ between runs; the values do not.

Usage: python3 tools/gen_safetensors_fixtures.py [--out DIR]
"""
import argparse
import os

import numpy as np
import torch
from safetensors.torch import save_file


def from_bits(values, np_uint, np_view, torch_view=None):
    """A tensor with the given raw bit patterns: np_uint -> np_view (numpy), then -> torch_view (torch)."""
    a = torch.from_numpy(np.array(values, dtype=np_uint).view(np_view).copy())
    return a.view(torch_view) if torch_view is not None else a


F32_BITS = [0x00000000, 0x80000000, 0x3F800000, 0xC0490FDB, 0x7F800000, 0xFF800000, 0x7FC00000, 0x00000001,
            0x7F7FFFFF, 0x00800000, 0x3EAAAAAB, 0xFFC00001]
F64_BITS = [0x0000000000000000, 0x8000000000000000, 0x3FF0000000000000, 0x400921FB54442D18, 0x7FF0000000000000,
            0x0000000000000001]
BF16_BITS = [0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x4049]
F16_BITS = [0x0000, 0x8000, 0x3C00, 0xBC00, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x7BFF]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                  "safetensors"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    t = {
        "f32": from_bits(F32_BITS, np.uint32, np.float32).reshape(3, 4),
        "f64": from_bits(F64_BITS, np.uint64, np.float64).reshape(2, 3),
        "bf16": from_bits(BF16_BITS, np.uint16, np.int16, torch.bfloat16),
        "f16": from_bits(F16_BITS, np.uint16, np.float16).reshape(3, 3),
        "i32": torch.tensor([-2147483648, -1, 0, 1, 2147483647], dtype=torch.int32),
        "i64": torch.tensor([-(2**63), -1, 0, 1, 2**63 - 1, 1234567890123], dtype=torch.int64).reshape(3, 2),
        "u8": torch.arange(0, 256, 17, dtype=torch.int32).to(torch.uint8).reshape(2, 2, 4),
        "bool": torch.tensor([True, False, True, True, False]),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "empty_i64": torch.zeros(2, 0, dtype=torch.int64),
        "transposed": torch.arange(12, dtype=torch.float32).reshape(3, 4).t().contiguous(),
        "model.layers.0.weight": (torch.arange(6, dtype=torch.float32) * 0.25 - 1).reshape(2, 3),
    }
    meta = {"format": "pt", "note": "h\u00e9llo \u2713", "empty": ""}
    save_file(t, os.path.join(args.out, "torch_dtypes.safetensors"), metadata=meta)

    u = {
        "ok": torch.tensor([1.0, 2.0]),
        "i16": torch.tensor([1, -2, 3], dtype=torch.int16),
        "u32": torch.tensor([7], dtype=torch.uint32),
        "f8": torch.tensor([1.0, 2.0], dtype=torch.float8_e4m3fn),
        "c64": torch.tensor([1 + 2j], dtype=torch.complex64),
    }
    save_file(u, os.path.join(args.out, "torch_unsupported.safetensors"))


if __name__ == "__main__":
    main()
