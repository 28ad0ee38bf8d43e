#!/usr/bin/env python3
"""Writes the fixtures of tests/test_vit.cpp: tiny reference transformers with random weights.

Developer tooling (needs torch, numpy, open_clip_torch and timm); the outputs are committed, so the tests
need none of them.

    python3 tools/gen_vit_fixtures.py

Writes into tests/fixtures/vit/:
  * clip.pt: the state dict of a tiny open_clip CLIP with the OpenAI layout and QuickGELU (vision: image 32,
    patch 8, width 32, 2 layers, 4 heads; text: vocab 100, context 12, width 32, 2 layers, 4 heads, causal
    mask, argmax (EOT) pooling; embed dim 16);
  * clip_ref.npz: inputs and reference outputs of that model's two towers: image tokens after ln_post, pooled
    image features, token states before and after ln_final, pooled text features (full-length ids and a
    shorter batch), and the gradients of a fixed scalar loss;
  * timm_vit.pt / timm_ref.npz: the same for a timm VisionTransformer (image 32, patch 8, width 32, 2 layers,
    4 heads, class token, no pre-norm, exact GELU, LayerNorm eps 1e-6, no head).

Every parameter is randomised (LayerNorm affine parameters, biases, class and positional embeddings
included) so that nothing is trivially zero or one. The loss whose gradients are recorded is
    sum(pooled * r_pooled) + sum(tokens * r_tokens)
with fixed random r_*; gradients of the blocks' weight matrices and of the patch convolution are left out to
keep the fixtures small (the test still checks that they are reached).
"""
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "vit")

# Gradients not recorded: the weight matrices of the blocks and the patch convolution (large; their biases,
# recorded, take the same paths backwards).
SKIP_GRAD = ("in_proj_weight", "out_proj.weight", "qkv.weight", "attn.proj.weight", "mlp.c_fc.weight",
             "mlp.c_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight", "conv1.weight", "patch_embed.proj.weight")


def randomize(model, gen):
    """Random values for every parameter, at scales that keep the activations of order one."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if p.dim() == 1 and ("ln" in name or "norm" in name) and leaf == "weight":
                p.copy_(1.0 + 0.25 * torch.randn(p.shape, generator=gen))
            elif leaf.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 0:
                p.fill_(2.5)
            elif "embed" in name or "token" in name or "cls" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else int(np.prod(p.shape[1:]))
                if leaf in ("proj", "text_projection"):  # [in, out] matrices used as x @ proj
                    fan_in = p.shape[0]
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))


def f32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def grads(model, prefix=""):
    out = {}
    for name, p in model.named_parameters():
        if name.endswith(SKIP_GRAD) or name == "logit_scale":
            continue
        assert p.grad is not None, name
        out["grad." + prefix + name] = f32(p.grad)
    return out


def clip_fixtures(gen):
    from open_clip.model import CLIP

    model = CLIP(embed_dim=16,
                 vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=8, mlp_ratio=4.0),
                 text_cfg=dict(context_length=12, vocab_size=100, width=32, heads=4, layers=2),
                 quick_gelu=True)
    model.eval()
    randomize(model, gen)
    assert model.text_pool_type == "argmax"
    v = model.visual
    B = 2
    pixels = torch.randn(B, 3, 32, 32, generator=gen)
    # Text ids: SOT (98), random tokens, EOT (99, the largest id), zero padding; one row fills the context.
    lengths = [12, 7, 3]
    ids = torch.zeros(len(lengths), 12, dtype=torch.int64)
    for i, n in enumerate(lengths):
        ids[i, 0] = 98
        ids[i, 1:n - 1] = torch.randint(1, 98, (n - 2,), generator=gen)
        ids[i, n - 1] = 99
    short = ids[1:, :7].clone()  # L = 7 < context: row 0 ends at EOT, row 1 is padded

    def vision_tokens(x):
        x = v._embeds(x)
        x = v.transformer(x)
        return v.ln_post(x)

    def text_tokens_pre(t):
        L = t.shape[1]
        x = model.token_embedding(t) + model.positional_embedding[:L]
        return model.transformer(x, attn_mask=model.attn_mask[:L, :L])

    def text_pool(pre, t):
        x = model.ln_final(pre)
        return x[torch.arange(x.shape[0]), t.argmax(dim=-1)] @ model.text_projection

    with torch.no_grad():
        vis_tokens = vision_tokens(pixels)
        vis_pooled = model.encode_image(pixels)
        txt_pre = text_tokens_pre(ids)
        txt_tokens = model.ln_final(txt_pre)
        txt_pooled = model.encode_text(ids)
        assert torch.allclose(text_pool(txt_pre, ids), txt_pooled, atol=1e-6)
        assert torch.allclose(vis_tokens[:, 0] @ v.proj, vis_pooled, atol=1e-6)
        short_pre = text_tokens_pre(short)
        short_pooled = text_pool(short_pre, short)
        # Causality: the first 7 positions of the full rows see the same keys.
        assert torch.allclose(short_pre, txt_pre[1:, :7], atol=1e-5)

    r_vp = torch.randn(vis_pooled.shape, generator=gen)
    r_vt = torch.randn(vis_tokens.shape, generator=gen)
    r_tp = torch.randn(txt_pooled.shape, generator=gen)
    r_tt = torch.randn(txt_tokens.shape, generator=gen)
    model.zero_grad()
    loss = (model.encode_image(pixels) * r_vp).sum() + (vision_tokens(pixels) * r_vt).sum()
    loss = loss + (model.encode_text(ids) * r_tp).sum() + (model.ln_final(text_tokens_pre(ids)) * r_tt).sum()
    loss.backward()
    g = grads(model)

    torch.save(model.state_dict(), os.path.join(OUT, "clip.pt"))
    np.savez(os.path.join(OUT, "clip_ref.npz"), pixels=f32(pixels), vis_tokens=f32(vis_tokens),
             vis_pooled=f32(vis_pooled), ids=ids.numpy(), txt_tokens_pre=f32(txt_pre), txt_tokens=f32(txt_tokens),
             txt_pooled=f32(txt_pooled), short_ids=short.numpy(), short_tokens_pre=f32(short_pre),
             short_pooled=f32(short_pooled), r_vis_pooled=f32(r_vp), r_vis_tokens=f32(r_vt),
             r_txt_pooled=f32(r_tp), r_txt_tokens=f32(r_tt), **g)


def timm_fixtures(gen):
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0,
                              global_pool="token", class_token=True, pre_norm=False)
    model.eval()
    assert isinstance(model.blocks[0].mlp.act, torch.nn.GELU) and model.blocks[0].mlp.act.approximate == "none"
    assert model.norm.eps == 1e-6
    randomize(model, gen)
    pixels = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        tokens = model.forward_features(pixels)
        pooled = model(pixels)
        assert torch.equal(pooled, tokens[:, 0])
    r_p = torch.randn(pooled.shape, generator=gen)
    r_t = torch.randn(tokens.shape, generator=gen)
    model.zero_grad()
    loss = (model(pixels) * r_p).sum() + (model.forward_features(pixels) * r_t).sum()
    loss.backward()
    torch.save(model.state_dict(), os.path.join(OUT, "timm_vit.pt"))
    np.savez(os.path.join(OUT, "timm_ref.npz"), pixels=f32(pixels), tokens=f32(tokens), pooled=f32(pooled),
             r_pooled=f32(r_p), r_tokens=f32(r_t), **grads(model))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    clip_fixtures(gen)
    timm_fixtures(gen)
    total = 0
    for f in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, f))
        total += size
        print(f"{f}: {size} bytes")
    print(f"total: {total} bytes")


if __name__ == "__main__":
    main()
