#!/usr/bin/env python3
"""Writes the OmegaConf checkpoint fixtures of tests/test_io_checkpoint.cpp.

Developer tooling (needs torch, numpy and omegaconf); the outputs are committed, so the tests need none of them.

    python3 tools/gen_omegaconf_fixture.py

Training scripts built on Hydra (CXR-CLIP among them) save the run's config beside the weights:
torch.save({"model", "optimizer", "scheduler", "config": cfg, "epoch", "train_loss"}) with cfg an OmegaConf
DictConfig. Writes into tests/fixtures/checkpoints/:
  * omegaconf_zip.pt: such a checkpoint of a tiny CXR-CLIP-like model (torch.save's defaults: zip, pickle
    protocol 2), with a struct-flagged nested config as Hydra makes it (dicts, lists, None, bools, floats, a
    missing "???" value and an unresolved interpolation);
  * omegaconf_proto4_zip.pt: the same object with pickle protocol 4 (STACK_GLOBAL, MEMOIZE, FRAME);
  * omegaconf_proto1_legacy.pt: the legacy format with pickle protocol 1, where OmegaConf objects are made by
    copyreg._reconstructor instead of NEWOBJ;
  * omegaconf_*.json: the expected state dict, plain values, the config's leaves by dotted key and the
    globals each pickle names;
  * hostile_omegaconf.pt: a zip checkpoint whose DictConfig (allow_objects) holds a value that unpickles by
    calling os.system: it must be refused by the global's name although everything around it is allowed.
"""
import io
import os
import pickletools
import sys
import warnings
import zipfile

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_checkpoint_fixtures import OUT, record_state_dict, write_json  # noqa: E402

import omegaconf  # noqa: E402
from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402

warnings.filterwarnings("ignore")


class ImageEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = nn.Sequential()
        self.resnet.add_module("conv1", nn.Conv2d(3, 4, 3, bias=False))
        self.resnet.add_module("bn1", nn.BatchNorm2d(4))


class TextEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.text_encoder = nn.Module()
        self.text_encoder.embeddings = nn.Module()
        self.text_encoder.embeddings.word_embeddings = nn.Embedding(10, 4)


class Projection(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.projection = nn.Linear(d_in, d_out)


class TinyCxrClip(nn.Module):
    """The key layout of CXR-CLIP's model, at toy sizes."""

    def __init__(self):
        super().__init__()
        self.image_encoder = ImageEncoder()
        self.text_encoder = TextEncoder()
        self.image_projection = Projection(4, 3)
        self.text_projection = Projection(4, 3)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))


def make_config():
    """A config as Hydra composes it for a CXR-CLIP run (struct flag set, interpolations resolved but one)."""
    cfg = OmegaConf.create({
        "base": {"seed": 1234, "amp": True, "loss_best": "contrastive",
                 "output": {"checkpoint": "./checkpoints/", "tensorboard": "./tensorboard/"}},
        "model": {"name": "clip_custom", "temperature": 0.07,
                  "image_encoder": {"name": "resnet", "resnet_type": "resnet50", "pretrained": True},
                  "text_encoder": {"name": "emilyalsentzer/Bio_ClinicalBERT", "pretrained": True,
                                   "gradient_checkpointing": False, "pooling": "eos", "cache_dir": None},
                  "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": 512}},
        "tokenizer": {"source": "huggingface", "pretrained_model_name_or_path": "${model.text_encoder.name}"},
        "data_train": {"mimic_cxr": {"name": "mimic_cxr", "data_path": "datasets/mimic.csv", "text_max_length": 256,
                                     "loss_weights": [1.0, 0.5], "crops": [[224, 224], [256, 256]]}},
        "optimizer": {"name": "adamw", "config": {"lr": 5e-5, "weight_decay": 1e-4}},
        "scheduler": {"name": "cosine", "config": {"total_epochs": 15, "warmup_epochs": "???"}},
    })
    OmegaConf.set_struct(cfg, True)
    return cfg


def config_leaves(node, prefix=""):
    """Expected values of every leaf (raw: no interpolation resolved) and the length of every container."""
    out = []
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    out.append({"key": prefix.rstrip("."), "len": len(node)} if prefix else {"key": "", "len": len(node)})
    for k in keys:
        child = node._get_node(k)
        key = prefix + str(k)
        if isinstance(child, (DictConfig, ListConfig)):
            out += config_leaves(child, key + ".")
            continue
        v = child._value()
        if v is None:
            out.append({"key": key, "none": True})
        elif isinstance(v, bool):
            out.append({"key": key, "bool": v})
        elif isinstance(v, int):
            out.append({"key": key, "int": v})
        elif isinstance(v, float):
            out.append({"key": key, "float": v})
        else:
            out.append({"key": key, "str": str(v)})
    return out


def pickle_globals(data):
    """Sorted names of the globals a pickle refers to (GLOBAL and STACK_GLOBAL), as module.name."""
    names, pushed, memo = set(), [], {}  # pushed: what each op pushed (a str, or None for anything else)
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
        if op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo[arg])
        elif op.name == "STACK_GLOBAL":
            names.add(pushed[-2] + "." + pushed[-1])
            pushed.append(None)
        elif op.name != "FRAME":
            pushed.append(arg if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8") else None)
    return sorted(names)


def data_pkl(path):
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def make_checkpoint():
    torch.manual_seed(5)
    model = TinyCxrClip()
    with torch.no_grad():
        model.image_encoder.resnet.bn1.running_mean.copy_(torch.randn(4))
        model.image_encoder.resnet.bn1.running_var.copy_(torch.rand(4) + 0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=15)
    x = torch.randn(2, 3, 5, 5)
    feat = model.image_encoder.resnet(x).mean(dim=(2, 3))
    (model.image_projection.projection(feat).sum() * model.logit_scale).backward()
    opt.step()
    sched.step()
    sd = model.state_dict()
    obj = {"model": sd, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "config": make_config(),
           "epoch": 3, "train_loss": 0.8125}
    return obj, sd


def expected(obj, sd, name, fmt, pkl_globals):
    osd = obj["optimizer"]
    return {
        "file": name, "format": fmt, "omegaconf_version": omegaconf.__version__,
        "state_dict": record_state_dict(sd),
        "values": [
            {"path": ["epoch"], "int": 3},
            {"path": ["train_loss"], "float": 0.8125},
            {"path": ["optimizer", "param_groups", 0, "lr"], "float": osd["param_groups"][0]["lr"]},
            {"path": ["optimizer", "param_groups", 0, "weight_decay"], "float": 1e-4},
            {"path": ["optimizer", "state"], "len": len(osd["state"])},
            {"path": ["scheduler", "last_epoch"], "int": obj["scheduler"]["last_epoch"]},
            {"path": ["scheduler", "T_max"], "int": 15},
        ],
        "config_class": "omegaconf.dictconfig.DictConfig",
        "config": config_leaves(obj["config"]),
        "globals": pickle_globals(pkl_globals),
    }


def gen_checkpoints():
    obj, sd = make_checkpoint()
    for name, kwargs in (("omegaconf_zip.pt", {}), ("omegaconf_proto4_zip.pt", {"pickle_protocol": 4})):
        path = os.path.join(OUT, name)
        torch.save(obj, path, **kwargs)
        write_json(name.replace(".pt", ".json"), expected(obj, sd, name, "zip", data_pkl(path)))
    name = "omegaconf_proto1_legacy.pt"
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False, pickle_protocol=1)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(buf.getvalue())
    # The legacy format is several pickles in a row; list the globals of all of them.
    data, pos, names = buf.getvalue(), 0, set()
    while pos < len(data):
        try:
            ops = list(pickletools.genops(io.BytesIO(data[pos:])))
        except Exception:
            break  # the raw storage bytes after the last pickle
        names.update(pickle_globals(data[pos:pos + ops[-1][2] + 1]))
        pos += ops[-1][2] + 1
    exp = expected(obj, sd, name, "legacy", b".")
    exp["globals"] = sorted(names)
    write_json(name.replace(".pt", ".json"), exp)


class CallsSystem:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def gen_hostile():
    cfg = OmegaConf.create({"model": {"name": "clip_custom", "hook": CallsSystem()}}, flags={"allow_objects": True})
    torch.save({"model": {"w": torch.zeros(2)}, "config": cfg}, os.path.join(OUT, "hostile_omegaconf.pt"))


def main():
    os.makedirs(OUT, exist_ok=True)
    gen_checkpoints()
    gen_hostile()
    print("omegaconf %s: wrote the omegaconf fixtures into %s" % (omegaconf.__version__, OUT))


if __name__ == "__main__":
    main()
