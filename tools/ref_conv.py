#!/usr/bin/env python3
"""Reference values for tests/test_conv.cpp, computed with PyTorch.

Inputs are deterministic: element i of an input made with seed s is sin(0.61 * i + 1.3 * s) * scale,
computed in double and rounded to f32 (the test builds the same tensors with the same formula).
Prints C++ initialisers to paste into the test.
"""
import math

import torch
import torch.nn.functional as F


def pattern(shape, seed, scale=1.0):
    n = math.prod(shape)
    vals = [math.sin(0.61 * i + 1.3 * seed) * scale for i in range(n)]
    return torch.tensor(vals, dtype=torch.float64).to(torch.float32).reshape(shape)


def emit(name, t):
    flat = t.detach().reshape(-1).tolist()
    if t.dtype in (torch.int64, torch.int32):
        body = ", ".join(str(int(v)) for v in flat)
        print(f"const std::vector<int64_t> {name} = {{{body}}};")
    else:
        body = ", ".join(f"{v:.8g}f" for v in flat)
        print(f"const std::vector<float> {name} = {{{body}}};")


def conv_case(name, xs, ws, bias, stride, padding, dilation, groups):
    x = pattern(xs, 1)
    w = pattern(ws, 2, 0.5)
    b = pattern([ws[0]], 3) if bias else None
    emit(name, F.conv2d(x, w, b, stride, padding, dilation, groups))


def main():
    print("// conv2d")
    conv_case("ref_conv_s2p1", [2, 3, 7, 6], [4, 3, 3, 3], True, 2, 1, 1, 1)
    conv_case("ref_conv_d2", [1, 2, 7, 7], [3, 2, 3, 3], False, 1, 1, 2, 1)
    conv_case("ref_conv_g2", [1, 4, 4, 5], [4, 2, 3, 2], True, 1, (1, 0), 1, 2)
    conv_case("ref_conv_1x1", [3, 5, 4, 3], [2, 5, 1, 1], True, 1, 0, 1, 1)
    conv_case("ref_conv_stem", [1, 3, 11, 9], [2, 3, 7, 7], False, 2, 3, 1, 1)
    conv_case("ref_conv_1x1s2", [2, 3, 5, 6], [2, 3, 1, 1], False, 2, 0, 1, 1)

    # bf16 / f16: the same inputs rounded to the half type, convolved in f32.
    x = pattern([2, 3, 7, 6], 1)
    w = pattern([4, 3, 3, 3], 2, 0.5)
    b = pattern([4], 3)
    for dt, nm in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
        r = lambda t: t.to(dt).to(torch.float32)
        emit(f"ref_conv_s2p1_{nm}", F.conv2d(r(x), r(w), r(b), 2, 1))

    print("// max_pool2d")
    x = pattern([2, 2, 7, 6], 4)
    y, i = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    emit("ref_max_k3s2p1", y)
    emit("ref_max_k3s2p1_idx", i)
    x = pattern([1, 2, 7, 7], 5)
    y, i = F.max_pool2d(x, 3, 2, 1, dilation=2, return_indices=True)
    emit("ref_max_d2", y)
    emit("ref_max_d2_idx", i)
    x = pattern([1, 1, 5, 5], 6)
    y, i = F.max_pool2d(x, 2, 2, 1, ceil_mode=True, return_indices=True)
    emit("ref_max_ceil", y)
    emit("ref_max_ceil_idx", i)
    x = pattern([1, 2, 6, 7], 7)
    y, i = F.max_pool2d(x, 3, 2, 0, ceil_mode=True, return_indices=True)
    emit("ref_max_ceil2", y)
    emit("ref_max_ceil2_idx", i)

    print("// avg_pool2d")
    x = pattern([1, 2, 6, 6], 8)
    for ceil in (False, True):
        for cip in (True, False):
            emit(f"ref_avg_c{int(ceil)}_p{int(cip)}", F.avg_pool2d(x, 3, 2, 1, ceil_mode=ceil, count_include_pad=cip))
    x = pattern([1, 1, 5, 5], 9)
    emit("ref_avg_k2p1_ceil", F.avg_pool2d(x, 2, 2, 1, ceil_mode=True, count_include_pad=True))

    print("// adaptive_avg_pool2d")
    x = pattern([2, 2, 5, 7], 10)
    emit("ref_adapt_5x7_3x2", F.adaptive_avg_pool2d(x, (3, 2)))
    x = pattern([1, 3, 7, 7], 11)
    emit("ref_adapt_7x7_1x1", F.adaptive_avg_pool2d(x, 1))
    x = pattern([1, 1, 6, 6], 12)
    emit("ref_adapt_6x6_4x4", F.adaptive_avg_pool2d(x, 4))


if __name__ == "__main__":
    main()
