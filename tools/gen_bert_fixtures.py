#!/usr/bin/env python3
"""Writes the fixtures of tests/test_bert.cpp into tests/fixtures/bert/.

Developer tooling (needs torch, numpy and transformers); the outputs are committed, so the tests need none
of them.

    python3 tools/gen_bert_fixtures.py

For each of three tiny configurations of transformers' BertModel (eval mode, eager attention, weights
drawn at random with a fixed seed and scaled so that every layer matters):

  * <name>.pt     torch.save(model.state_dict()) in torch's zip format (the non-persistent buffers
                  embeddings.position_ids / embeddings.token_type_ids are not part of it);
  * <name>.npz    inputs and reference outputs, float32 unless noted:
                    input_ids, attention_mask, token_type_ids (int64 [B, L]; padded rows, 1 = real token)
                    last_hidden_state, pooler_output (when the model has a pooler), hidden_state_<i> for
                    i = 0 (embeddings output) .. layers: model(input_ids, attention_mask, token_type_ids,
                    output_hidden_states=True)
                    nomask_last_hidden_state, nomask_pooler_output: model(input_ids) (no mask, no token types)
                    loss_w_last, loss_w_pool: weights of the loss
                    sum(last_hidden_state * loss_w_last) + sum(pooler_output * loss_w_pool) on the masked run
                    grad.<parameter name>: the gradient of that loss for every parameter
  * configs.json  the configurations, with mc's field names (BertConfig in include/mc/models/bert.hpp).
"""
import json
import os
import warnings

import numpy as np
import torch
import transformers

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "tests", "fixtures", "bert")

# mc activation name -> transformers hidden_act
HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}

CONFIGS = {
    # the main case: 2 layers, pooler, exact GELU, BERT's eps
    "tiny": dict(vocab_size=120, hidden_size=32, layers=2, heads=4, intermediate_size=48, max_position_embeddings=24,
                 type_vocab_size=2, pad_token_id=0, ln_eps=1e-12, pooler=True, act="gelu", seq_len=9,
                 lengths=[9, 6, 4], seed=1),
    # no pooler, tanh GELU, pad id 1, three token types, a sequence as long as max_position_embeddings
    "nopool": dict(vocab_size=50, hidden_size=18, layers=1, heads=3, intermediate_size=30, max_position_embeddings=16,
                   type_vocab_size=3, pad_token_id=1, ln_eps=1e-5, pooler=False, act="gelu_tanh", seq_len=16,
                   lengths=[16, 11], seed=2),
    # ReLU with a pooler
    "relu": dict(vocab_size=40, hidden_size=16, layers=1, heads=2, intermediate_size=24, max_position_embeddings=12,
                 type_vocab_size=2, pad_token_id=0, ln_eps=1e-12, pooler=True, act="relu", seq_len=7,
                 lengths=[5, 7], seed=3),
}


def build(c):
    cfg = transformers.BertConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], intermediate_size=c["intermediate_size"],
        max_position_embeddings=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
        pad_token_id=c["pad_token_id"], layer_norm_eps=c["ln_eps"], hidden_act=HF_ACT[c["act"]],
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    cfg._attn_implementation = "eager"
    model = transformers.BertModel(cfg, add_pooling_layer=c["pooler"]).eval()
    g = torch.Generator().manual_seed(c["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif "embeddings" in name:
                p.copy_(0.5 * r)
            else:  # Linear weights [out, in]
                p.copy_(r / np.sqrt(p.shape[1]))
    return model, g


def inputs(c, g):
    B, L = len(c["lengths"]), c["seq_len"]
    ids = torch.full((B, L), c["pad_token_id"], dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    types = torch.zeros((B, L), dtype=torch.long)
    for b, n in enumerate(c["lengths"]):
        ids[b, :n] = torch.randint(0, c["vocab_size"], (n,), generator=g)
        mask[b, :n] = 1
        # segments: 0 for the first half, then 1, 2, ... up to type_vocab_size - 1
        for t in range(1, c["type_vocab_size"]):
            types[b, (n * t) // c["type_vocab_size"] + 1: n] = t
    return ids, mask, types


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    configs = {}
    for name, c in CONFIGS.items():
        model, g = build(c)
        ids, mask, types = inputs(c, g)
        sd = {k: v for k, v in model.state_dict().items()
              if k not in ("embeddings.position_ids", "embeddings.token_type_ids")}
        torch.save(sd, os.path.join(OUT, name + ".pt"))

        arrays = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        arrays["last_hidden_state"] = out.last_hidden_state.detach().numpy()
        assert len(out.hidden_states) == c["layers"] + 1
        for i, h in enumerate(out.hidden_states):
            arrays[f"hidden_state_{i}"] = h.detach().numpy()
        w_last = torch.randn(out.last_hidden_state.shape, generator=g)
        loss = (out.last_hidden_state * w_last).sum()
        arrays["loss_w_last"] = w_last.numpy()
        if c["pooler"]:
            arrays["pooler_output"] = out.pooler_output.detach().numpy()
            w_pool = torch.randn(out.pooler_output.shape, generator=g)
            loss = loss + (out.pooler_output * w_pool).sum()
            arrays["loss_w_pool"] = w_pool.numpy()
        loss.backward()
        for pname, p in model.named_parameters():
            arrays["grad." + pname] = p.grad.numpy()

        with torch.no_grad():
            plain = model(input_ids=ids)
        arrays["nomask_last_hidden_state"] = plain.last_hidden_state.numpy()
        if c["pooler"]:
            arrays["nomask_pooler_output"] = plain.pooler_output.numpy()
        np.savez_compressed(os.path.join(OUT, name + ".npz"), **arrays)

        configs[name] = {k: v for k, v in c.items() if k not in ("seq_len", "lengths", "seed")}
        configs[name]["state_dict_keys"] = list(sd.keys())
    with open(os.path.join(OUT, "configs.json"), "w") as f:
        json.dump(configs, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, into {OUT}")


if __name__ == "__main__":
    main()
