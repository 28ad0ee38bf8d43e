# What bench/torch_kernels.py and bench/torch_step.py share: the card's peaks, CUDA-event timing and the
# RESULT line format of mc's CUDA benchmarks (bench/cuda/bench_common.hpp), so that bench/gpu.sh can put
# mc and PyTorch side by side by case name.
import math
import sys

import torch


def peaks():
    """(name, DRAM GB/s, bf16, tf32, f32 dense TFLOP/s) — the same table as mc's bench_common.hpp."""
    p = torch.cuda.get_device_properties(0)
    name = p.name
    clk = getattr(p, "memory_clock_rate", 0)  # kHz, when this torch exposes it
    bus = getattr(p, "memory_bus_width", 0)
    dram = 2.0 * clk * 1e3 * bus / 8 / 1e9 if clk and bus else 0.0
    if "H200" in name:
        return name, dram if dram > 1000 else 4800.0, 989.0, 494.0, 67.0
    if "H100" in name and "PCI" in name:
        return name, dram if dram > 1000 else 2000.0, 756.0, 378.0, 51.0
    if "H100" in name:
        return name, dram if dram > 1000 else 3350.0, 989.0, 494.0, 67.0
    sms = p.multi_processor_count
    clk_ghz = 1.7
    bf16 = 2 * (2048 if p.major >= 9 else 1024) * sms * clk_ghz * 1e9 / 1e12
    return name, dram if dram > 0 else 2000.0, bf16, bf16 / 2, 2 * 128 * sms * clk_ghz * 1e9 / 1e12


def time_ms(fn, warm=3, iters=None, target_ms=100.0):
    """Mean ms per call over `iters` calls (chosen for ~target_ms when None), timed by two CUDA events."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    if iters is None:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        once = max(s.elapsed_time(e), 1e-3)
        iters = int(min(100, max(3, target_ms / once)))
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters


def peak_gib():
    return torch.cuda.max_memory_allocated() / 2**30


def result(name, ms, value, unit, pct, check="-"):
    print(f"RESULT {name:<34s} {ms:10.4f} ms {value:10.2f} {unit:<8s} {pct:6.1f}% check={check} mem={peak_gib():.2f}GiB",
          flush=True)


def error(name, ex):
    print(f"# error in {name}: {type(ex).__name__}: {ex}", flush=True)
    result(name, math.nan, math.nan, "-", math.nan, "ERROR")


def selected(want, name, group):
    return not want or any(w == group or name.startswith(w) for w in want)


def args():
    want, iters = [], None
    a = sys.argv[1:]
    i = 0
    while i < len(a):
        if a[i] == "--iters" and i + 1 < len(a):
            iters = int(a[i + 1])
            i += 2
            continue
        want.append(a[i])
        i += 1
    return want, iters
