#!/usr/bin/env python3
"""Writes the fixtures of tests/test_ban.cpp: a PyTorch reference of the bilinear attention network (BAN)
VQA head with random weights.

Developer tooling (needs torch and numpy); the outputs are committed, so the tests need neither.

    python3 tools/gen_ban_fixtures.py

The reference below restates the design of ban-vqa (Kim et al., "Bilinear Attention Networks", 2018) as
the study uses it on top of a CLIP-like model: the image features v [B, Nv, v_dim] and the question token
features q [B, Nq, h] go through

  v_att    BiAttention(v_dim, h, h, glimpses): a BCNet(k=3, h_out=glimpses) whose h_mat is weight-normed
           (dim=None, so h_mat_g is a scalar), low-rank bilinear logits
               logits[b,g,i,j] = sum_c h_mat[g,c] * v_[b,i,c] * q_[b,j,c] + h_bias[g]
           with v_ = Dropout(.5)(v_net(v)), q_ = q_net(q), v_net / q_net = FCNet([dim, h*k], ReLU, dropout .2);
           rows of v that are all zero are masked with -inf (ban-vqa's v_mask=True default); softmax over the
           Nv*Nq cells of each glimpse;
  b_net.g  BCNet(k=1, h_out=None).forward_with_weights: b[b,c] = sum_ij v_g[b,i,c] att[b,g,i,j] q_g[b,j,c]
           (v_g / q_g from FCNet([dim, h], ReLU, dropout .2));
  q_prj.g  FCNet([h, h], act='', dropout .2) (no activation): q = q_prj.g(b.unsqueeze(1)) + q;
  classifier  SimpleClassifier: weight-normed Linear(h, 2h) -> ReLU -> Dropout(.5) -> weight-normed
           Linear(2h, n_answers), applied to q.sum(1).

No counter module (the study's head has none). Writes into tests/fixtures/ban/, for each config:
  <name>.pt   the state dict (torch.save), keys in PyTorch's order;
  <name>.npz  inputs v, q; outputs logits, att (softmax maps [B, G, Nv, Nq]), att_logits (masked logits,
              -inf on masked rows); the gradients of the loss sum(logits * r) (r fixed random, stored) with
              respect to v, q and every parameter (keys "grad.<param name>"); all in eval mode (no dropout).
Configs: "pooled" (Nv = 1, the paper's single pooled image embedding; glimpses 2) and "grid" (Nv = 7 grid
tokens, glimpses 4, two all-zero v rows in one sample to exercise the masking). Both use Nq = 9, k = 3.
"""
import json
import os
import warnings

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import weight_norm

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "ban")


class FCNet(nn.Module):
    """[Dropout] -> weight-normed Linear -> [activation], per pair of dims (Dropout only when p > 0)."""

    def __init__(self, dims, act="ReLU", dropout=0.0):
        super().__init__()
        layers = []
        for i in range(len(dims) - 1):
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(weight_norm(nn.Linear(dims[i], dims[i + 1]), dim=None))
            if act != "":
                layers.append(getattr(nn, act)())
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


class BCNet(nn.Module):
    """Bilinear connect network; h_out = None (glimpse pooling) or <= 32 (attention logits via h_mat)."""

    def __init__(self, v_dim, q_dim, h_dim, h_out, act="ReLU", dropout=(0.2, 0.5), k=3):
        super().__init__()
        self.k, self.h_dim, self.h_out = k, h_dim, h_out
        self.v_net = FCNet([v_dim, h_dim * k], act=act, dropout=dropout[0])
        self.q_net = FCNet([q_dim, h_dim * k], act=act, dropout=dropout[0])
        self.dropout = nn.Dropout(dropout[1])
        if k > 1:
            self.p_net = nn.AvgPool1d(k, stride=k)
        if h_out is not None:
            assert h_out <= 32
            self.h_mat = nn.Parameter(torch.Tensor(1, h_out, 1, h_dim * k).normal_())
            self.h_bias = nn.Parameter(torch.Tensor(1, h_out, 1, 1).normal_())

    def forward(self, v, q):
        v_ = self.dropout(self.v_net(v)).unsqueeze(1)          # b x 1 x v x d
        q_ = self.q_net(q)                                      # b x q x d
        h_ = v_ * self.h_mat                                    # b x h_out x v x d
        logits = torch.matmul(h_, q_.unsqueeze(1).transpose(2, 3))  # b x h_out x v x q
        return logits + self.h_bias

    def forward_with_weights(self, v, q, w):
        v_ = self.v_net(v).transpose(1, 2).unsqueeze(2)         # b x d x 1 x v
        q_ = self.q_net(q).transpose(1, 2).unsqueeze(3)         # b x d x q x 1
        logits = torch.matmul(torch.matmul(v_, w.unsqueeze(1)), q_).squeeze(3).squeeze(2)  # b x d
        if self.k > 1:
            logits = self.p_net(logits.unsqueeze(1)).squeeze(1) * self.k  # sum pooling
        return logits


class BiAttention(nn.Module):
    def __init__(self, x_dim, y_dim, z_dim, glimpse, dropout=(0.2, 0.5), k=3):
        super().__init__()
        self.glimpse = glimpse
        self.logits = weight_norm(BCNet(x_dim, y_dim, z_dim, glimpse, dropout=dropout, k=k), name="h_mat", dim=None)

    def forward(self, v, q, v_mask=True):
        v_num, q_num = v.size(1), q.size(1)
        logits = self.logits(v, q)  # b x g x v x q
        if v_mask:
            mask = (0 == v.abs().sum(2)).unsqueeze(1).unsqueeze(3).expand(logits.size())
            logits.data.masked_fill_(mask.data, -float("inf"))
        p = nn.functional.softmax(logits.view(-1, self.glimpse, v_num * q_num), 2)
        return p.view(-1, self.glimpse, v_num, q_num), logits


class SimpleClassifier(nn.Module):
    def __init__(self, in_dim, hid_dim, out_dim, dropout):
        super().__init__()
        self.main = nn.Sequential(
            weight_norm(nn.Linear(in_dim, hid_dim), dim=None),
            nn.ReLU(),
            nn.Dropout(dropout),
            weight_norm(nn.Linear(hid_dim, out_dim), dim=None),
        )

    def forward(self, x):
        return self.main(x)


class BanHead(nn.Module):
    def __init__(self, v_dim, h, glimpses, n_answers, k=3):
        super().__init__()
        self.glimpse = glimpses
        self.v_att = BiAttention(v_dim, h, h, glimpses, k=k)
        self.b_net = nn.ModuleList([BCNet(v_dim, h, h, None, k=1) for _ in range(glimpses)])
        self.q_prj = nn.ModuleList([FCNet([h, h], "", 0.2) for _ in range(glimpses)])
        self.classifier = SimpleClassifier(h, 2 * h, n_answers, 0.5)

    def forward(self, v, q):
        att, att_logits = self.v_att(v, q)
        for g in range(self.glimpse):
            b_emb = self.b_net[g].forward_with_weights(v, q, att[:, g, :, :])
            q = self.q_prj[g](b_emb.unsqueeze(1)) + q
        return self.classifier(q.sum(1)), att, att_logits


def randomize(model, gen):
    """Random values everywhere; each weight_g differs from the norm of its weight_v."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight_v"):
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[1]))
            elif name.endswith("h_mat_v"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                v = dict(model.named_parameters())[name[:-1] + "v"]
                p.copy_(v.norm() * (0.7 + 0.6 * torch.rand((), generator=gen)))
            elif name.endswith("h_mat_g"):
                p.fill_(0.6 * np.sqrt(p_numel(model, name)))  # attention logits of order a few


def p_numel(model, g_name):
    return dict(model.named_parameters())[g_name[:-1] + "v"].numel()


def f32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def make(name, batch, nv, nq, v_dim, h, glimpses, n_answers, zero_rows, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = BanHead(v_dim, h, glimpses, n_answers)
    randomize(model, gen)
    model.eval()
    v = torch.randn(batch, nv, v_dim, generator=gen)
    q = torch.randn(batch, nq, h, generator=gen)
    for b, i in zero_rows:
        v[b, i] = 0
    v.requires_grad_(True)
    q.requires_grad_(True)
    logits, att, att_logits = model(v, q)
    r = torch.randn(logits.shape, generator=gen)
    (logits * r).sum().backward()

    arrays = {"v": f32(v), "q": f32(q), "logits": f32(logits), "att": f32(att), "att_logits": f32(att_logits),
              "r": f32(r), "grad.v": f32(v.grad), "grad.q": f32(q.grad)}
    for pname, p in model.named_parameters():
        arrays["grad." + pname] = f32(p.grad)
    sd = model.state_dict()
    torch.save(sd, os.path.join(OUT, name + ".pt"))
    np.savez(os.path.join(OUT, name + ".npz"), **arrays)
    cfg = {"batch": batch, "nv": nv, "nq": nq, "v_dim": v_dim, "hidden": h, "glimpses": glimpses,
           "n_answers": n_answers, "k": 3, "zero_rows": zero_rows, "keys": list(sd.keys())}
    ent = -(att.clamp_min(1e-30).log() * att).sum(-1).sum(-1)
    print(f"{name}: {len(sd)} tensors, logits |max| {logits.abs().max():.3f}, attention entropy "
          f"{ent.min():.2f}..{ent.max():.2f} (uniform {np.log(nv * nq):.2f})")
    return cfg


def main():
    os.makedirs(OUT, exist_ok=True)
    configs = {
        "pooled": make("pooled", batch=3, nv=1, nq=9, v_dim=12, h=16, glimpses=2, n_answers=7, zero_rows=[],
                       seed=11),
        "grid": make("grid", batch=3, nv=7, nq=9, v_dim=10, h=12, glimpses=4, n_answers=5,
                     zero_rows=[[1, 5], [1, 6]], seed=12),
    }
    with open(os.path.join(OUT, "configs.json"), "w") as f:
        json.dump(configs, f, indent=1)


if __name__ == "__main__":
    main()
