# PyTorch on the workloads of mc's bench_kernels (same case names, same sizes, same RESULT lines), for a
# side-by-side table in bench/gpu.sh. Eager PyTorch: the aten kernel a user's code reaches (SDPA for
# attention, fused AdamW, cuBLAS / cuDNN for GEMM and convolution; NCHW layout like mc).
#   python bench/torch_kernels.py [--iters N] [NAME...]    (NAME: a case, a prefix of names, or a group)
import torch
import torch.nn.functional as F

from torch_bench_common import args, error, peaks, result, selected, time_ms

dev = "cuda"
NAME, DRAM, BF16, TF32, F32 = peaks()
WANT, ITERS = args()
DT = {"f32": torch.float32, "bf16": torch.bfloat16}
aten = torch.ops.aten


def bw(name, fn, nbytes):
    ms = time_ms(fn, iters=ITERS)
    gbs = nbytes / ms / 1e6
    result(name, ms, gbs, "GB/s", 100 * gbs / DRAM)


def fl(name, fn, flops, peak):
    ms = time_ms(fn, iters=ITERS)
    tf = flops / ms / 1e9
    result(name, ms, tf, "TFLOP/s", 100 * tf / peak)


CASES = []  # (name, group, fn)


def case(name, group):
    def deco(fn):
        CASES.append((name, group, fn))
        return fn
    return deco


def randn(*shape, dtype=torch.float32, std=1.0):
    return torch.randn(*shape, device=dev, dtype=torch.float32).mul_(std).to(dtype)


# ---- elementwise ----
N64M = 1 << 26
for tag, dt in DT.items():
    esz = torch.finfo(dt).bits // 8

    @case(f"add_{tag}_64M", "elementwise")
    def _(name, dt=dt, esz=esz):
        a, b, o = randn(N64M, dtype=dt), randn(N64M, dtype=dt), torch.empty(N64M, device=dev, dtype=dt)
        bw(name, lambda: torch.add(a, b, out=o), 3 * N64M * esz)

    @case(f"gelu_{tag}_64M", "elementwise")
    def _(name, dt=dt, esz=esz):
        a = randn(N64M, dtype=dt)
        bw(name, lambda: F.gelu(a), 2 * N64M * esz)

    @case(f"gelu_bwd_{tag}_64M", "elementwise")
    def _(name, dt=dt, esz=esz):
        g, x = randn(N64M, dtype=dt), randn(N64M, dtype=dt)
        bw(name, lambda: aten.gelu_backward(g, x), 3 * N64M * esz)

# ---- softmax ----
for stag, rows, cols in (("vit_b16", 256 * 12 * 197, 197), ("4096", 4096, 4096)):
    for tag, dt in DT.items():
        esz = torch.finfo(dt).bits // 8

        @case(f"softmax_fwd_{stag}_{tag}", "softmax")
        def _(name, rows=rows, cols=cols, dt=dt, esz=esz):
            x = randn(rows, cols, dtype=dt)
            bw(name, lambda: torch.softmax(x, -1), 2 * rows * cols * esz)

        @case(f"softmax_bwd_{stag}_{tag}", "softmax")
        def _(name, rows=rows, cols=cols, dt=dt, esz=esz):
            y, gy = torch.softmax(randn(rows, cols, dtype=dt), -1), randn(rows, cols, dtype=dt)
            bw(name, lambda: aten._softmax_backward_data(gy, y, -1, dt), 3 * rows * cols * esz)

# ---- layer norm ----
for stag, rows in (("b32", 256 * 50), ("b16", 256 * 197)):
    for tag, dt in DT.items():
        esz = torch.finfo(dt).bits // 8

        @case(f"layernorm_fwd_{stag}_{tag}", "layernorm")
        def _(name, rows=rows, dt=dt, esz=esz):
            x, w, b = randn(rows, 768, dtype=dt), randn(768, dtype=dt), randn(768, dtype=dt)
            bw(name, lambda: aten.native_layer_norm(x, [768], w, b, 1e-5), 2 * rows * 768 * esz)

        @case(f"layernorm_bwd_{stag}_{tag}", "layernorm")
        def _(name, rows=rows, dt=dt, esz=esz):
            x, w, b = randn(rows, 768, dtype=dt), randn(768, dtype=dt), randn(768, dtype=dt)
            _, mean, rstd = aten.native_layer_norm(x, [768], w, b, 1e-5)
            gy = randn(rows, 768, dtype=dt)
            bw(name, lambda: aten.native_layer_norm_backward(gy, x, [768], mean, rstd, w, b, [True, True, True]),
               3 * rows * 768 * esz)


# ---- AdamW over CLIP ViT-B/32's parameters (mc's tensor shapes: open_clip layout, both towers) ----
def clip_b32_shapes():
    def blocks(w, layers):
        s = []
        for _ in range(layers):
            s += [(w,), (w,), (3 * w, w), (3 * w,), (w, w), (w,), (w,), (w,), (4 * w, w), (4 * w,), (w, 4 * w), (w,)]
        return s
    vis = [(768,), (50, 768), (768, 512), (768, 3, 32, 32), (768,), (768,)] + blocks(768, 12) + [(768,), (768,)]
    txt = [(77, 512), (512, 512), (49408, 512)] + blocks(512, 12) + [(512,), (512,)]
    return vis + txt


@case("adamw_clip_b32_151M_f32", "adamw")
def _(name):
    params = [torch.nn.Parameter(randn(*s, std=0.02)) for s in clip_b32_shapes()]
    for p in params:
        p.grad = randn(*p.shape, std=1e-3)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.2, fused=True)
    total = sum(p.numel() for p in params)
    print(f"# adamw: {len(params)} tensors, {total / 1e6:.1f}M parameters", flush=True)
    bw(name, opt.step, 7 * 4 * total)


# ---- attention (SDPA; q, k, v as views of a packed [B, L, 3, H, D] projection, as mc's models) ----
ATT = (("vit_b32", 256, 12, 50, 64, False, False), ("vit_b16", 128, 12, 197, 64, False, False),
       ("bert_mask", 64, 12, 256, 64, False, True), ("clip_text_causal", 256, 8, 77, 64, True, False))
for stag, B, H, L, D, causal, masked in ATT:
    for tag, dt in (("bf16", torch.bfloat16), ("f32", torch.float32)):
        for bwd in (False, True):
            @case(f"attention_{'fwdbwd' if bwd else 'fwd'}_{stag}_{tag}", "attention")
            def _(name, B=B, H=H, L=L, D=D, causal=causal, masked=masked, dt=dt, bwd=bwd):
                qkv = randn(B, L, 3, H, D, dtype=dt).requires_grad_(bwd)
                mask = None
                if masked:  # True = attend (SDPA's convention); the same lengths as mc's bench
                    lens = torch.tensor([L - (b * 53) % (L // 2) for b in range(B)], device=dev)
                    mask = (torch.arange(L, device=dev)[None, :] < lens[:, None])[:, None, None, :]
                go = randn(B, H, L, D, dtype=dt)

                def f():
                    q, k, v = (qkv.select(2, i).permute(0, 2, 1, 3) for i in range(3))
                    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
                    if bwd:
                        o.backward(go)
                flops = 4.0 * B * H * L * L * D * (0.5 if causal else 1.0) * (3.5 if bwd else 1.0)
                fl(name, f, flops, BF16 if dt == torch.bfloat16 else F32)

# ---- GEMM ----
T = 256 * 50
GEMM = (("4096", 4096, 4096, 4096, False, False), ("vit_qkv", T, 2304, 768, False, True),
        ("vit_fc1", T, 3072, 768, False, True), ("vit_fc2", T, 768, 3072, False, True),
        ("vit_fc1_dgrad", T, 768, 3072, False, False), ("vit_fc1_wgrad", 3072, 768, T, True, False))
for stag, M, N, K, ta, tb in GEMM:
    for mtag in ("bf16", "tf32", "f32"):
        @case(f"gemm_{stag}_{mtag}", "gemm")
        def _(name, M=M, N=N, K=K, ta=ta, tb=tb, mtag=mtag):
            dt = torch.bfloat16 if mtag == "bf16" else torch.float32
            torch.backends.cuda.matmul.allow_tf32 = mtag == "tf32"
            a = randn(K, M, dtype=dt).t() if ta else randn(M, K, dtype=dt)
            b = randn(N, K, dtype=dt).t() if tb else randn(K, N, dtype=dt)
            peak = BF16 if mtag == "bf16" else TF32 if mtag == "tf32" else F32
            try:
                fl(name, lambda: torch.matmul(a, b), 2.0 * M * N * K, peak)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = False

# ---- convolution (ResNet-50 layers, batch 128, NCHW) ----
CONV = (("r50_conv1_7x7s2", 3, 224, 64, 7, 2, 3), ("r50_l1_3x3", 64, 56, 64, 3, 1, 1),
        ("r50_l1_1x1_expand", 64, 56, 256, 1, 1, 0), ("r50_l2_3x3s2", 128, 56, 128, 3, 2, 1),
        ("r50_l3_3x3", 256, 14, 256, 3, 1, 1), ("r50_l3_1x1_reduce", 1024, 14, 256, 1, 1, 0),
        ("r50_l4_3x3", 512, 7, 512, 3, 1, 1))
for stag, C, Hs, O, k, s, p in CONV:
    for mtag in ("bf16", "tf32", "f32"):
        for ptag in ("fwd", "dgrad", "wgrad"):
            if ptag != "fwd" and (stag not in ("r50_l1_3x3", "r50_l3_3x3") or mtag == "f32"):
                continue

            @case(f"conv_{ptag}_{stag}_{mtag}", "conv")
            def _(name, C=C, Hs=Hs, O=O, k=k, s=s, p=p, mtag=mtag, ptag=ptag):
                dt = torch.bfloat16 if mtag == "bf16" else torch.float32
                torch.backends.cudnn.allow_tf32 = mtag == "tf32"
                torch.backends.cudnn.benchmark = True
                Nb = 128
                OH = (Hs + 2 * p - k) // s + 1
                x = randn(Nb, C, Hs, Hs, dtype=dt)
                w = randn(O, C, k, k, dtype=dt, std=(C * k * k) ** -0.5)
                gy = randn(Nb, O, OH, OH, dtype=dt)
                if ptag == "fwd":
                    f = lambda: F.conv2d(x, w, None, s, p)
                else:
                    mask = [ptag == "dgrad", ptag == "wgrad", False]
                    f = lambda: aten.convolution_backward(gy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)
                peak = BF16 if mtag == "bf16" else TF32 if mtag == "tf32" else F32
                try:
                    fl(name, f, 2.0 * Nb * O * OH * OH * C * k * k, peak)
                finally:
                    torch.backends.cudnn.allow_tf32 = True

# ---- batch norm (training) ----
for tag, dt in DT.items():
    esz = torch.finfo(dt).bits // 8
    for bwd in (False, True):
        @case(f"batchnorm_{'bwd' if bwd else 'fwd'}_r50_l1_{tag}", "batchnorm")
        def _(name, dt=dt, esz=esz, bwd=bwd):
            Nb, C, Hs = 128, 256, 56
            x = randn(Nb, C, Hs, Hs, dtype=dt).requires_grad_(bwd)
            w, b = randn(C), randn(C)
            rm, rv = torch.zeros(C, device=dev), torch.ones(C, device=dev)
            n = Nb * C * Hs * Hs
            if not bwd:
                with torch.no_grad():
                    bw(name, lambda: F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5), 2 * n * esz)
            else:
                y = F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
                gy = randn(Nb, C, Hs, Hs, dtype=dt)
                bw(name, lambda: torch.autograd.grad(y, x, gy, retain_graph=True), 3 * n * esz)


def main():
    print(f"# torch {torch.__version__} on {NAME}; peaks: DRAM {DRAM:.0f} GB/s, bf16 {BF16:.0f}, tf32 {TF32:.0f}, "
          f"f32 {F32:.1f} TFLOP/s", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    for name, group, fn in CASES:
        if not selected(WANT, name, group):
            continue
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            fn(name)
        except Exception as ex:  # keep going: one failing case must not hide the others
            error(name, ex)


if __name__ == "__main__":
    main()
