# PyTorch on the training steps of mc's bench_step (same case names and RESULT lines): timm's
# vit_base_patch32_clip_224 (11 classes, batch 256) and torchvision-equivalent resnet50 (timm, 11 classes,
# batch 128); forward, cross-entropy, backward and fused AdamW (lr 1e-5, weight decay 0.01).
#   f32: full f32, no TF32; tf32: TF32 GEMMs / convolutions; bf16: autocast(bfloat16) with f32 weights
#   (PyTorch's usual mixed precision); *_bf16_compile: the same under torch.compile (skipped with
#   TORCH_COMPILE=0).
#   python bench/torch_step.py [--iters N] [NAME...]
import os

import torch
import torch.nn.functional as F

from torch_bench_common import args, error, peaks, result, selected, time_ms

dev = "cuda"
NAME, DRAM, BF16, TF32, F32 = peaks()
WANT, ITERS = args()
STEPS = ITERS or 10


def vit_flops_fwd():
    W, L, T, hidden, g = 768, 12, 50, 3072, 7
    per_token = 2 * (3 * W * W + W * W + 2 * W * hidden)
    return L * (T * per_token + 2 * 2 * T * T * W) + 2 * 3 * 32 * 32 * W * g * g + 2 * W * 11


MODELS = {"vit_b32": ("vit_base_patch32_clip_224", 256, vit_flops_fwd()),
          "resnet50": ("resnet50", 128, 2 * 4.09e9)}
MODES = (("f32", False, False, False), ("tf32", True, False, False), ("bf16", True, True, False),
         ("bf16_compile", True, True, True))


def run(case, arch, batch, flops, tf32, amp, compile_):
    import timm
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    model = timm.create_model(arch, pretrained=False, num_classes=11).to(dev).train()
    fwd = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=True)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.arange(batch, device=dev) * 7 % 11
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    torch.cuda.reset_peak_memory_stats()
    ms = time_ms(step, warm=5 if compile_ else 3, iters=STEPS)
    ips = batch * 1000.0 / ms
    tflops = 3 * flops * ips / 1e12
    peak = BF16 if amp else TF32 if tf32 else F32
    print(f"# {case}: batch {batch}, loss {losses[0].item():.4f} -> {losses[-1].item():.4f}, {tflops:.1f} TFLOP/s",
          flush=True)
    result(case, ms, ips, "img/s", 100 * tflops / peak, "ok" if torch.isfinite(losses[-1]).item() else "FAIL(nan)")


def main():
    print(f"# torch {torch.__version__} on {NAME}", flush=True)
    use_compile = os.environ.get("TORCH_COMPILE", "1") != "0"
    for mtag, tf32, amp, compile_ in MODES:
        for key, (arch, batch, flops) in MODELS.items():
            case = f"{key}_step_{mtag}"
            if compile_ and (not use_compile or key != "vit_b32"):
                continue
            if not selected(WANT, case, mtag):
                continue
            torch.cuda.empty_cache()
            try:
                run(case, arch, batch, flops, tf32, amp, compile_)
            except Exception as ex:
                error(case, ex)
    torch.backends.cuda.matmul.allow_tf32 = False


if __name__ == "__main__":
    main()
