# Reference values for tests/test_attention.cpp, computed with PyTorch in float64.
# Inputs are the deterministic fills used by the test: element i (row-major) of a tensor is
# amp * sin(a * i + b). Prints C++ initializer lists.
import math
import torch

torch.set_default_dtype(torch.float64)


def fill(shape, a, b, amp=1.0):
    n = math.prod(shape)
    x = torch.tensor([amp * math.sin(a * i + b) for i in range(n)])
    # the test builds f32 tensors, so round through f32
    return x.float().double().reshape(shape)


def attention(q, k, v, scale, causal=False, kpm=None):
    """softmax(scale q k^T + masks) v; rows that see no key give zeros (and no gradient)."""
    Lq, Lk = q.shape[2], k.shape[2]
    s = (q @ k.transpose(-1, -2)) * scale
    hide = torch.zeros(q.shape[0], 1, Lq, Lk, dtype=torch.bool)
    if causal:  # bottom-right aligned: key j visible to query i iff j <= i + Lk - Lq
        i = torch.arange(Lq)[:, None]
        j = torch.arange(Lk)[None, :]
        hide = hide | (j > i + (Lk - Lq))
    if kpm is not None:
        hide = hide | kpm[:, None, None, :]
    hide = hide.expand(s.shape)
    s = s.masked_fill(hide, float("-inf"))
    empty = hide.all(-1, keepdim=True)
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s.masked_fill(empty, 0.0), -1) * (~empty)
    out = p @ v
    # cross-check against torch's own implementation where no row is empty
    if not empty.any():
        mask = ~hide
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        assert torch.allclose(ref, out, atol=1e-12)
    return out, lse


def lit(name, t):
    vals = ", ".join(
        ("-INF" if math.isinf(x) and x < 0 else f"{x:.9g}") for x in t.flatten().tolist()
    )
    print(f"const std::vector<double> {name} = {{{vals}}};")


def case(tag, B, H, Lq, Lk, D, causal, kpm, grads):
    q = fill((B, H, Lq, D), 0.71, 0.3, 1.5).requires_grad_()
    k = fill((B, H, Lk, D), 1.37, -0.4).requires_grad_()
    v = fill((B, H, Lk, D), 0.53, 1.1).requires_grad_()
    scale = float(torch.tensor(1.0 / math.sqrt(D), dtype=torch.float32))
    out, lse = attention(q, k, v, scale, causal, kpm)
    lit(f"{tag}_out", out.detach())
    lit(f"{tag}_lse", lse.detach())
    if grads:
        g = fill(out.shape, 0.29, 0.7)
        out.backward(g)
        lit(f"{tag}_gq", q.grad)
        lit(f"{tag}_gk", k.grad)
        lit(f"{tag}_gv", v.grad)


case("plain", 2, 2, 4, 5, 3, False, None, False)
kpm = torch.tensor([[False, False, False, True], [True, False, False, False]])
case("causal_pad", 2, 2, 4, 4, 3, True, kpm, True)
case("causal_short", 1, 2, 3, 5, 3, True, None, False)
