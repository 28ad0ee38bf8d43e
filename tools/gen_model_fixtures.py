#!/usr/bin/env python3
"""Writes the parity fixtures of tests/test_models.cpp into tests/fixtures/models/.

Developer tooling (needs torch, numpy, open_clip_torch, timm, transformers and torchvision); the outputs are
committed, so the tests need none of them.

    python3 tools/gen_model_fixtures.py [--bpe PATH]                 scaled-down fixtures (< 3 MB)
    python3 tools/gen_model_fixtures.py --full DIR [--bpe PATH]      full-size random models into DIR
                                                                     (for tools/parity_full.sh; not committed)

Each of the four architectures is built with the reference implementation, its weights drawn at random
(fixed seeds, scaled so that every layer matters, batch-norm statistics random too), and saved in the format
of the original checkpoint:

  clip.pt        OpenAI CLIP (open_clip.model.CLIP, QuickGELU) as a TorchScript archive like ViT-B-32.pt:
                 fp16 weights, original key names, plus the input_resolution / context_length / vocab_size
                 buffers of OpenAI's archive;
  biomedclip.bin open_clip CustomTextCLIP with a timm ViT trunk and an HF BertModel (config from a local
                 directory), torch.save(state_dict) like open_clip_pytorch_model.bin, with the text
                 embeddings.position_ids buffer;
  pmc.pt         open_clip's ModifiedResNet + transformers BertModel (with pooler) + text_projection + the
                 unused fusion_module / mlm_projection / img_special_token / positional_embedding / ln_final,
                 saved as {"epoch", "name", "state_dict" (keys prefixed "module."), "optimizer"};
  cxr.tar        a torchvision ResNet (Bottleneck blocks, small widths, fc deleted) + BertModel + Linear
                 projections, saved as {"model", "optimizer", "scheduler", "config", "epoch", "train_loss"}.

Plus bpe.txt.gz (the first merges of the CLIP BPE file, header line included: a vocabulary of 514 + merges
tokens), vocab.txt (a small WordPiece vocabulary), <model>.json (the card: weights/<card>.json with the
scaled hyper-parameters) and <model>.npz holding the inputs and the reference outputs, float32:
  pixels [B, 3, S, S]      already preprocessed images
  input_ids, attention_mask (int64 [T, L]) and texts (the strings, one per row, joined with newlines as uint8)
  image_embeds [B, D], text_embeds [T, D]   the model's own encode path:
        CLIP: encode_image / encode_text;  BiomedCLIP: open_clip encode_image / encode_text;
        PMC-CLIP: visual(x); BERT(input_ids) without mask, hidden state at [CLS] @ text_projection
                  (text_embeds_pooler: pooler_output @ text_projection, the quick-start variant);
        CXR-CLIP: ResNet features -> image_projection; BERT(ids, mask, token types 0) at mask.sum - 1 ->
                  text_projection
  image_tokens [B, N, W]   ViT patch tokens after the final norm / the flattened last ResNet feature map
  text_tokens [T, L, W]    CLIP: transformer output before ln_final; BERT: last_hidden_state (with the mask)
  logit_scale []           the trained parameter

With --full, the same four in full size (ViT-B/32, ViT-B/16 + BERT-base, RN50 + BERT-base, ResNet-50 +
BERT-base) go to DIR with full-size vocabularies (the real CLIP BPE file; synthetic vocab.txt files of the
real sizes) and the real context lengths.
"""
import argparse
import copy
import gzip
import json
import os
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "tests", "fixtures", "models")
DEFAULT_BPE = os.path.join(REPO, "..", "shared", "data", "tokenizers", "clip", "bpe_simple_vocab_16e6.txt.gz")

TEXTS = ["a photo of a chest x-ray", "Pneumonia", "this is a photo of malignant breast ultrasound tissue, "
         "seen on the ct and mri of the lung; no pneumonia there"]

WORDS = ["this", "is", "a", "photo", "of", "chest", "x", "ray", "pneumonia", "malignant", "benign", "breast",
         "ultrasound", "tissue", "seen", "on", "the", "and", "ct", "mri", "lung", "no", "there", "normal", "organ",
         "liver", "kidney", "heart", "left", "right", "image", "scan", "##s", "##ed", "##ing", "##ly", "an"]


def wordpiece_vocab(size=None):
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    toks += [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    toks += [str(d) for d in range(10)] + list(".,;:-!?()'\"/")
    toks += WORDS
    if size:
        toks += ["[unused%d]" % i for i in range(size - len(toks))]
    return toks


# ----------------------------------------------------------------------------------------------------------
# random weights
# ----------------------------------------------------------------------------------------------------------

def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim == 0:
                p.fill_(3.1)
            elif p.ndim == 1 and leaf == "weight":
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 4:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                fan = max(p.shape[-1], p.shape[0]) if p.ndim == 2 else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / fan ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    model.eval()
    return model


def bert_config(c):
    import transformers
    return transformers.BertConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                                   num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                                   intermediate_size=c["intermediate_size"],
                                   max_position_embeddings=c["max_position_embeddings"],
                                   type_vocab_size=c["type_vocab_size"], pad_token_id=c["pad_token_id"],
                                   layer_norm_eps=c["ln_eps"], hidden_act="gelu", attn_implementation="eager")


def hf_tokenize(vocab_path, texts, length):
    import transformers
    cls = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer
    tok = cls(vocab_file=vocab_path, do_lower_case=True)
    enc = tok(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    return enc["input_ids"].long(), enc["attention_mask"].long()


def load_card(name, scaled):
    with open(os.path.join(REPO, "weights", name + ".json")) as f:
        card = json.load(f)
    if scaled:
        card["name"] += "-scaled"
        card["description"] = "Scaled-down random-weight test model of the same architecture. " + card["description"]
        for sect in ("vision", "text"):
            card[sect]["config"].update(scaled[sect])
        card["embed_dim"] = scaled["embed_dim"]
        card["tokenizer"]["context_length"] = scaled["context_length"]
        card["preprocess"]["size"] = scaled["image_size"]
        if card["text"]["projection"]["type"] == "mlp":
            card["text"]["projection"]["hidden"] = scaled["mlp_hidden"]
    return card


def texts_array():
    return np.frombuffer("\n".join(TEXTS).encode(), dtype=np.uint8)


def pixels(seed, n, size):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def save_npz(path, **arrays):
    np.savez_compressed(path, **{k: (v.detach().numpy() if torch.is_tensor(v) else v) for k, v in arrays.items()})


def add_position_ids(sd, key, n):
    sd[key] = torch.arange(n).unsqueeze(0)
    return sd


def optimizer_state(model):
    model = copy.deepcopy(model)  # the step must not touch the saved weights
    opt = torch.optim.AdamW([p for p in model.parameters()][:3], lr=1e-4)
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.zeros_like(p)
    opt.step()
    return opt.state_dict()


# ----------------------------------------------------------------------------------------------------------
# the four models
# ----------------------------------------------------------------------------------------------------------

def gen_clip(out, card, bpe_text, prefix):
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer
    v, t = card["vision"]["config"], card["text"]["config"]
    vision_cfg = dict(image_size=v["image_size"], layers=v["layers"], width=v["width"], patch_size=v["patch_size"],
                      head_width=v["width"] // v["heads"], mlp_ratio=v["mlp_ratio"])
    text_cfg = dict(context_length=t["context_length"], vocab_size=t["vocab_size"], width=t["width"],
                    heads=t["heads"], layers=t["layers"])
    model = open_clip.model.CLIP(card["embed_dim"], vision_cfg, text_cfg, quick_gelu=True)
    randomize(model, 11)
    # OpenAI's archive holds fp16 weights: round them, and compute the reference in fp32 from the rounded ones.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())

    bpe_path = os.path.join(out, prefix + "bpe.txt.gz")
    tok = SimpleTokenizer(bpe_path=bpe_path, context_length=t["context_length"])
    ids = tok(TEXTS)
    mask = torch.zeros_like(ids)
    for r in range(ids.shape[0]):
        eot = (ids[r] == tok.eot_token_id).nonzero()[0, 0]
        mask[r, : eot + 1] = 1
    x = pixels(1, 2, v["image_size"])
    with torch.no_grad():
        img = model.encode_image(x)
        txt = model.encode_text(ids)
        vis = model.visual
        image_tokens = vis.ln_post(vis.transformer(vis._embeds(x)))[:, 1:]
        e = model.token_embedding(ids) + model.positional_embedding
        text_tokens = model.transformer(e, attn_mask=model.attn_mask)
    save_npz(os.path.join(out, prefix + "clip.npz"), pixels=x, input_ids=ids, attention_mask=mask, texts=texts_array(),
             image_embeds=img, text_embeds=txt, image_tokens=image_tokens, text_tokens=text_tokens,
             logit_scale=model.logit_scale.detach())

    class Wrapper(nn.Module):  # scripting open_clip's CLIP directly is not supported; trace both encoders
        def __init__(self, m):
            super().__init__()
            for k, child in m.named_children():
                self.add_module(k, child)
            for k, p in m.named_parameters(recurse=False):
                self.register_parameter(k, p)
            for k, b in m.named_buffers(recurse=False):
                if k != "attn_mask":
                    self.register_buffer(k, b)
            self.m = [m]
            for k, val in (("input_resolution", v["image_size"]), ("context_length", t["context_length"]),
                           ("vocab_size", t["vocab_size"])):
                self.register_buffer(k, torch.tensor(val))  # as in OpenAI's archive

        def forward(self, x):
            return self.m[0].encode_image(x)

        def encode_text(self, ids):
            return self.m[0].encode_text(ids)

    w = Wrapper(model)
    traced = torch.jit.trace_module(w, {"forward": x, "encode_text": ids}, check_trace=False)
    traced = traced.half()
    torch.jit.save(traced, os.path.join(out, prefix + "clip.pt"))
    back = dict(torch.jit.load(os.path.join(out, prefix + "clip.pt")).state_dict())
    expect = set(model.state_dict().keys()) | {"input_resolution", "context_length", "vocab_size"}
    assert set(back.keys()) == expect, sorted(set(back.keys()) ^ expect)
    assert back["visual.conv1.weight"].dtype == torch.float16


def gen_biomedclip(out, card, vocab_path, prefix):
    import open_clip
    import timm
    v, t = card["vision"]["config"], card["text"]["config"]
    with tempfile.TemporaryDirectory() as d:
        bert_config(t).save_pretrained(d)
        vision_cfg = dict(timm_model_name="vit_base_patch16_224", timm_model_pretrained=False, timm_pool="",
                          timm_proj="linear", image_size=v["image_size"])
        text_cfg = dict(hf_model_name=d, hf_tokenizer_name=d, hf_proj_type="mlp",
                        hf_pooler_type="cls_last_hidden_state_pooler", hf_model_pretrained=False,
                        context_length=card["tokenizer"]["context_length"])
        model = open_clip.model.CustomTextCLIP(card["embed_dim"], vision_cfg, text_cfg)
    if v["width"] != 768 or v["layers"] != 12 or v["patch_size"] != 16 or v["image_size"] != 224:
        model.visual.trunk = timm.models.vision_transformer.VisionTransformer(
            img_size=v["image_size"], patch_size=v["patch_size"], embed_dim=v["width"], depth=v["layers"],
            num_heads=v["heads"], mlp_ratio=v["mlp_ratio"], num_classes=0, global_pool="token")
        model.visual.head.proj = nn.Linear(v["width"], card["embed_dim"], bias=False)
    randomize(model, 12)
    ids, mask = hf_tokenize(vocab_path, TEXTS, card["tokenizer"]["context_length"])
    x = pixels(2, 2, v["image_size"])
    with torch.no_grad():
        img = model.encode_image(x)
        txt = model.encode_text(ids)
        image_tokens = model.visual.trunk.forward_features(x)[:, 1:]
        text_tokens = model.text.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    save_npz(os.path.join(out, prefix + "biomedclip.npz"), pixels=x, input_ids=ids, attention_mask=mask,
             texts=texts_array(), image_embeds=img, text_embeds=txt, image_tokens=image_tokens,
             text_tokens=text_tokens, logit_scale=model.logit_scale.detach())
    sd = model.state_dict()
    add_position_ids(sd, "text.transformer.embeddings.position_ids", t["max_position_embeddings"])
    torch.save(sd, os.path.join(out, prefix + "biomedclip.bin"))


def gen_pmc(out, card, vocab_path, prefix):
    import open_clip
    import transformers
    v, t = card["vision"]["config"], card["text"]["config"]
    D, W = card["embed_dim"], t["hidden_size"]

    class PMC(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = open_clip.modified_resnet.ModifiedResNet(
                layers=v["layers"], output_dim=v["output_dim"], heads=v["heads"], image_size=v["image_size"],
                width=v["width"])
            self.text_encoder = transformers.BertModel(bert_config(t), add_pooling_layer=True)
            L = card["tokenizer"]["context_length"]
            self.positional_embedding = nn.Parameter(torch.empty(L, W))
            self.ln_final = nn.LayerNorm(W)
            self.text_projection = nn.Parameter(torch.empty(W, D))
            self.mlm_projection = nn.Parameter(torch.empty(W, t["vocab_size"]))
            self.logit_scale = nn.Parameter(torch.ones([]))
            self.img_special_token = nn.Parameter(torch.zeros(1, 1, D))
            self.fusion_module = open_clip.transformer.Transformer(width=W, layers=1, heads=t["heads"])

    model = randomize(PMC(), 13)
    ids, mask = hf_tokenize(vocab_path, TEXTS, card["tokenizer"]["context_length"])
    x = pixels(3, 2, v["image_size"])
    with torch.no_grad():
        img = model.visual(x)
        out_nomask = model.text_encoder(input_ids=ids)
        hidden = out_nomask["last_hidden_state"]
        cls_pos = torch.nonzero(ids == 2)  # PMC-CLIP finds the [CLS] id (2 in its vocabulary; here too)
        txt = hidden[torch.arange(hidden.shape[0]), cls_pos[:, 1]] @ model.text_projection
        txt_pooler = out_nomask["pooler_output"] @ model.text_projection
        vis = model.visual
        h = vis.act1(vis.bn1(vis.conv1(x)))
        h = vis.act2(vis.bn2(vis.conv2(h)))
        h = vis.act3(vis.bn3(vis.conv3(h)))
        h = vis.avgpool(h)
        h = vis.layer4(vis.layer3(vis.layer2(vis.layer1(h))))
        image_tokens = h.flatten(2).transpose(1, 2)
        text_tokens = model.text_encoder(input_ids=ids, attention_mask=mask)["last_hidden_state"]
    save_npz(os.path.join(out, prefix + "pmc.npz"), pixels=x, input_ids=ids, attention_mask=mask, texts=texts_array(),
             image_embeds=img, text_embeds=txt, text_embeds_pooler=txt_pooler, image_tokens=image_tokens,
             text_tokens=text_tokens, logit_scale=model.logit_scale.detach())
    sd = model.state_dict()
    add_position_ids(sd, "text_encoder.embeddings.position_ids", t["max_position_embeddings"])
    ckpt = {"epoch": 100, "name": card["name"], "state_dict": {"module." + k: val for k, val in sd.items()},
            "optimizer": optimizer_state(model)}
    torch.save(ckpt, os.path.join(out, prefix + "pmc.pt"))


def gen_cxr(out, card, vocab_path, prefix):
    import torchvision
    import transformers
    from torchvision.models.resnet import Bottleneck
    v, t = card["vision"]["config"], card["text"]["config"]
    D = card["embed_dim"]

    class SmallResNet(torchvision.models.resnet.ResNet):
        """torchvision's ResNet with the stem / layer widths scaled by width / 64 (same module names)."""

        def __init__(self, layers, width):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(Bottleneck, width, layers[0])
            self.layer2 = self._make_layer(Bottleneck, width * 2, layers[1], stride=2)
            self.layer3 = self._make_layer(Bottleneck, width * 4, layers[2], stride=2)
            self.layer4 = self._make_layer(Bottleneck, width * 8, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    class ImageEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            if v["width"] == 64:
                self.resnet = torchvision.models.resnet50()
                del self.resnet.fc
            else:
                self.resnet = SmallResNet(v["layers"], v["width"])
            self.out_dim = v["width"] * 32

        def features(self, x):
            r = self.resnet
            x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
            return r.layer4(r.layer3(r.layer2(r.layer1(x))))

        def forward(self, x):
            return torch.flatten(self.resnet.avgpool(self.features(x)), 1)

    class TextEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.text_encoder = transformers.BertModel(bert_config(t), add_pooling_layer=True)

    class Proj(nn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.projection = nn.Linear(a, b)

        def forward(self, x):
            return self.projection(x)

    class CXR(nn.Module):
        def __init__(self):
            super().__init__()
            self.image_encoder = ImageEncoder()
            self.text_encoder = TextEncoder()
            self.image_projection = Proj(v["width"] * 32, D)
            self.text_projection = Proj(t["hidden_size"], D)
            self.logit_scale = nn.Parameter(torch.ones([]))

    model = randomize(CXR(), 14)
    ids, mask = hf_tokenize(vocab_path, TEXTS, card["tokenizer"]["context_length"])
    x = pixels(4, 2, card["preprocess"]["size"])
    with torch.no_grad():
        img = model.image_projection(model.image_encoder(x))
        hidden = model.text_encoder.text_encoder(input_ids=ids, attention_mask=mask,
                                                 token_type_ids=torch.zeros_like(ids))["last_hidden_state"]
        eos = mask.sum(dim=-1) - 1
        txt = model.text_projection(hidden[torch.arange(hidden.shape[0]), eos])
        image_tokens = model.image_encoder.features(x).flatten(2).transpose(1, 2)
    save_npz(os.path.join(out, prefix + "cxr.npz"), pixels=x, input_ids=ids, attention_mask=mask, texts=texts_array(),
             image_embeds=img, text_embeds=txt, image_tokens=image_tokens, text_tokens=hidden,
             logit_scale=model.logit_scale.detach())
    sd = model.state_dict()
    add_position_ids(sd, "text_encoder.text_encoder.embeddings.position_ids", t["max_position_embeddings"])
    ckpt = {"model": sd, "optimizer": optimizer_state(model), "scheduler": {"last_epoch": 3, "_step_count": 4},
            "config": {"model": {"name": "clip_custom", "temperature": 0.07,
                                 "text_encoder": {"pooling": "eos"}}, "base": {"amp": True}},
            "epoch": 4, "train_loss": 0.25}
    torch.save(ckpt, os.path.join(out, prefix + "cxr.tar"))


# ----------------------------------------------------------------------------------------------------------

SCALED = {
    "clip-vit-b32": dict(embed_dim=24, context_length=16, image_size=32,
                         vision=dict(image_size=32, patch_size=8, width=32, layers=2, heads=2, output_dim=24),
                         text=dict(vocab_size=514 + 300, context_length=16, width=32, layers=2, heads=4, output_dim=24)),
    "biomedclip": dict(embed_dim=24, context_length=16, image_size=32, mlp_hidden=28,
                       vision=dict(image_size=32, patch_size=8, width=32, layers=2, heads=2),
                       text=dict(hidden_size=32, layers=2, heads=4, intermediate_size=48, max_position_embeddings=24)),
    "pmc-clip": dict(embed_dim=24, context_length=16, image_size=64,
                     vision=dict(layers=[1, 2, 1, 1], width=4, heads=2, output_dim=24, image_size=64),
                     text=dict(hidden_size=32, layers=2, heads=4, intermediate_size=48, max_position_embeddings=24)),
    "cxr-clip-r50": dict(embed_dim=24, context_length=16, image_size=64,
                         vision=dict(layers=[1, 2, 1, 1], width=4),
                         text=dict(hidden_size=32, layers=2, heads=4, intermediate_size=48, max_position_embeddings=24)),
}
FILES = {"clip-vit-b32": "clip", "biomedclip": "biomedclip", "pmc-clip": "pmc", "cxr-clip-r50": "cxr"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bpe", default=DEFAULT_BPE, help="the CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz)")
    ap.add_argument("--full", metavar="DIR", help="write full-size random models to DIR instead")
    args = ap.parse_args()
    torch.manual_seed(0)
    full = args.full is not None
    out = args.full if full else OUT
    os.makedirs(out, exist_ok=True)
    with gzip.open(args.bpe, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")

    cards = {}
    for name, short in FILES.items():
        card = load_card(name, None if full else SCALED[name])
        if not full and card["text"]["arch"] == "bert":
            card["text"]["config"]["vocab_size"] = len(wordpiece_vocab())
        cards[name] = card
        with open(os.path.join(out, short + ".json"), "w") as f:
            json.dump(card, f, indent=1)
            f.write("\n")

    n_merges = cards["clip-vit-b32"]["text"]["config"]["vocab_size"] - 514
    with gzip.GzipFile(os.path.join(out, "bpe.txt.gz"), "wb", compresslevel=9, mtime=0) as f:  # reproducible bytes
        f.write("\n".join(lines[: 1 + n_merges]).encode())  # no final newline: open_clip would read an empty merge
    vocabs = {}
    for name in ("biomedclip", "pmc-clip", "cxr-clip-r50"):
        size = cards[name]["text"]["config"]["vocab_size"] if full else None
        path = os.path.join(out, ("vocab-%s.txt" % FILES[name]) if full else "vocab.txt")
        with open(path, "w") as f:
            f.write("\n".join(wordpiece_vocab(size)) + "\n")
        vocabs[name] = path

    gen_clip(out, cards["clip-vit-b32"], None, "")
    gen_biomedclip(out, cards["biomedclip"], vocabs["biomedclip"], "")
    gen_pmc(out, cards["pmc-clip"], vocabs["pmc-clip"], "")
    gen_cxr(out, cards["cxr-clip-r50"], vocabs["cxr-clip-r50"], "")
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print("wrote %s (%d bytes)" % (out, total))


if __name__ == "__main__":
    main()
