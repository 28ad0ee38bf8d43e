#!/usr/bin/env python3
"""Writes the small checkpoint / array fixtures of tests/test_io_checkpoint.cpp.

Developer tooling (needs torch and numpy); the outputs are committed, so the tests need neither.

    python3 tools/gen_checkpoint_fixtures.py [--shared ../shared/data]

Writes into tests/fixtures/checkpoints/:
  * torch.save files in the zip format and the legacy format (_use_new_zipfile_serialization=False):
    a small module's state dict, nested training checkpoints, every dtype with non-contiguous views that
    share one storage, a 0-d and empty tensors, a pickle-protocol-4 file, and a file with int8/int16 tensors;
  * a hand-built legacy file whose storage ids carry view metadata (PyTorch < 0.4 storage slices);
  * TorchScript archives (torch.jit.script and torch.jit.trace) of a tiny CLIP-like module;
  * np.savez / np.savez_compressed archives and single .npy files (format versions 2 and 3, plus
    unsupported ones: big-endian, object, int16);
  * hostile files whose pickles name disallowed globals; plain pickles of protocols 0-5;
  * for each, a JSON of expected values computed with torch.load / numpy;
  * resnet20_expected.json: expected values of the real ResNet-20 CIFAR-10 checkpoint in the shared data
    folder (the checkpoint itself is never copied into the repository) and the tensor counts of its
    ResNet-32/44/56 siblings; breastmnist_expected.json: the arrays of the MedMNIST BreastMNIST npz.
"""
import argparse
import collections
import io
import json
import os
import struct
import sys
import warnings
import zipfile

import numpy as np
import torch
import torch.nn as nn

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "tests", "fixtures", "checkpoints")

MC_DTYPE = {
    torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
    torch.int64: "i64", torch.int32: "i32", torch.uint8: "u8", torch.bool: "bool",
}
NP_DTYPE = {
    np.dtype("float32"): "f32", np.dtype("float64"): "f64", np.dtype("float16"): "f16", np.dtype("int32"): "i32",
    np.dtype("int64"): "i64", np.dtype("uint8"): "u8", np.dtype("bool"): "bool",
}
FULL_VALUES_MAX = 64  # tensors up to this many elements are recorded in full


def num(x):
    """A JSON number: ints stay exact, floats are doubles."""
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    return float(x)


def flat_values(arr):
    """C-order values of a numpy array as JSON numbers."""
    return [num(v) for v in arr.reshape(-1).tolist()]


def record_array(name, arr, dtype, extra=None):
    """Expected values of one array: full values when tiny, else sum, sum of squares and samples."""
    arr = np.asarray(arr)
    rec = {"name": name, "dtype": dtype, "shape": list(arr.shape)}
    if extra:
        rec.update(extra)
    as64 = arr.astype(np.float64) if arr.dtype != np.bool_ else arr.astype(np.float64)
    if arr.size <= FULL_VALUES_MAX:
        rec["values"] = flat_values(arr if arr.dtype.kind in "iub" else as64)
    else:
        flat = as64.reshape(-1)
        rec["sum"] = float(flat.sum())
        rec["sumsq"] = float((flat * flat).sum())
        idx = list(dict.fromkeys([0, flat.size // 3, (2 * flat.size) // 3, flat.size - 1]))
        rec["samples"] = [[int(i), float(flat[i])] for i in idx]
    return rec


def record_tensor(name, t):
    t = t.detach()
    arr = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    extra = {"strides": list(t.stride()), "offset": int(t.storage_offset())}
    rec = record_array(name, arr, MC_DTYPE[t.dtype], extra)
    if t.dtype == torch.bfloat16 and "values" in rec:
        rec["values"] = [float(v) for v in t.float().reshape(-1).tolist()]
    return rec


def record_state_dict(sd):
    return [record_tensor(k, v) for k, v in sd.items()]


def write_json(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def save_both(name, obj):
    torch.save(obj, os.path.join(OUT, name + "_zip.pt"))
    torch.save(obj, os.path.join(OUT, name + "_legacy.pt"), _use_new_zipfile_serialization=False)


def shared_groups(d):
    """Names of the tensors of a flat dict grouped by the storage they share."""
    groups = collections.OrderedDict()
    for k, v in d.items():
        if isinstance(v, torch.Tensor) and v.untyped_storage().nbytes() > 0:
            groups.setdefault(v.untyped_storage().data_ptr(), []).append(k)
    return [g for g in groups.values() if len(g) > 1]


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(16, 5)


def small_state_dict():
    torch.manual_seed(1)
    m = Small()
    with torch.no_grad():
        m.bn1.running_mean.copy_(torch.randn(4))
        m.bn1.running_var.copy_(torch.rand(4) + 0.5)
        m.bn1.weight.copy_(torch.randn(4))
        m.bn1.num_batches_tracked.fill_(17)
    return m.state_dict()


def gen_state_dicts():
    sd = small_state_dict()
    save_both("sd", sd)
    for fmt in ("zip", "legacy"):
        write_json("sd_%s.json" % fmt, {"file": "sd_%s.pt" % fmt, "format": fmt, "state_dict": record_state_dict(sd)})


def gen_nested():
    sd = small_state_dict()
    torch.manual_seed(2)
    model = Small()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.fc(torch.randn(2, 16)).sum().backward()
    opt.step()
    osd = opt.state_dict()
    config = collections.OrderedDict([
        ("lr", 0.001), ("name", "clip-tiny"), ("layers", [1, 2, 3]), ("betas", (0.9, 0.98)), ("use_amp", True),
        ("nothing", None), ("ns", argparse.Namespace(embed_dim=8, heads=2)), ("np_float", np.float64(0.25)),
        ("np_int", np.int64(7)), ("np_array", np.arange(6, dtype=np.float32).reshape(2, 3)),
        ("size", torch.Size([2, 3])), ("dtype", torch.float16), ("device", torch.device("cpu")),
        ("tags", {"a", "b"}), ("big", 2 ** 70), ("negative", -123456789), ("blob", b"\x00\xff\x10"),
        ("unicode", "r\u00e9sum\u00e9 \u2713"),
    ])
    obj = {"model": sd, "config": config, "epoch": 3, "optimizer": osd}
    torch.save(obj, os.path.join(OUT, "nested_zip.pt"))
    first = next(iter(osd["state"]))  # an int key: only parameters that got gradients have state
    exp_avg = osd["state"][first]["exp_avg"]
    values = [
        {"path": ["epoch"], "int": 3},
        {"path": ["config", "lr"], "float": 0.001},
        {"path": ["config", "name"], "str": "clip-tiny"},
        {"path": ["config", "layers"], "len": 3},
        {"path": ["config", "layers", 2], "int": 3},
        {"path": ["config", "betas", 1], "float": 0.98},
        {"path": ["config", "use_amp"], "bool": True},
        {"path": ["config", "nothing"], "none": True},
        {"path": ["config", "np_float"], "float": 0.25},
        {"path": ["config", "np_int"], "int": 7},
        {"path": ["config", "size"], "len": 2},
        {"path": ["config", "size", 1], "int": 3},
        {"path": ["config", "tags"], "len": 2},
        {"path": ["config", "negative"], "int": -123456789},
        {"path": ["config", "blob"], "bytes": [0, 255, 16]},
        {"path": ["config", "unicode"], "str": config["unicode"]},
        {"path": ["optimizer", "param_groups", 0, "lr"], "float": 0.001},
        {"path": ["optimizer", "param_groups", 0, "params"], "len": len(osd["param_groups"][0]["params"])},
        {"path": ["optimizer", "state"], "len": len(osd["state"])},
    ]
    tensors_at = [
        {"path": ["optimizer", "state", first, "exp_avg"], **record_tensor("exp_avg", exp_avg)},
        {"path": ["optimizer", "state", first, "step"], **record_tensor("step", osd["state"][first]["step"])},
        {"path": ["config", "np_array"], **record_array("np_array", config["np_array"], "f32")},
    ]
    write_json("nested_zip.json", {"file": "nested_zip.pt", "format": "zip", "state_dict": record_state_dict(sd),
                                   "values": values, "tensors_at": tensors_at})

    msd = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
    obj = {"best_prec1": 91.5, "arch": "small", "state_dict": msd}
    torch.save(obj, os.path.join(OUT, "nested_legacy.pt"), _use_new_zipfile_serialization=False)
    write_json("nested_legacy.json", {
        "file": "nested_legacy.pt", "format": "legacy", "state_dict": record_state_dict(msd),
        "values": [{"path": ["best_prec1"], "float": 91.5}, {"path": ["arch"], "str": "small"}]})


def dtype_dict():
    torch.manual_seed(3)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    d = collections.OrderedDict([
        ("f32", torch.randn(3, 4)),
        ("f16", torch.randn(5).half()),
        ("bf16", torch.randn(2, 3).bfloat16()),
        ("f64", torch.randn(3).double()),
        ("i64", torch.tensor([-3, 0, 2 ** 40])),
        ("i32", torch.tensor([1, -2, 3], dtype=torch.int32)),
        ("bool", torch.tensor([True, False, True])),
        ("u8", torch.tensor([0, 255, 7], dtype=torch.uint8)),
        ("base", base),
        ("base_t", base.t()),
        ("base_slice", base[1:3, 2:5]),
        ("base_col", base[:, 1]),
        ("base_step", base[::2, ::3]),
        ("expanded", torch.tensor([1.0, 2.0, 3.0]).expand(4, 3)),
        ("scalar", torch.tensor(2.5)),
        ("empty", torch.empty(0, 3)),
        ("empty2", torch.zeros(2, 0, dtype=torch.int64)),
        ("large", torch.randn(20, 20)),
        ("large_half_t", torch.randn(16, 12).half().t()),
    ])
    return d


def gen_dtypes():
    d = dtype_dict()
    save_both("dtypes", d)
    for fmt in ("zip", "legacy"):
        write_json("dtypes_%s.json" % fmt, {"file": "dtypes_%s.pt" % fmt, "format": fmt,
                                           "state_dict": record_state_dict(d), "shared": shared_groups(d)})
    # Pickle protocol 4: FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL.
    torch.save(d, os.path.join(OUT, "dtypes_proto4_zip.pt"), pickle_protocol=4)
    write_json("dtypes_proto4_zip.json", {"file": "dtypes_proto4_zip.pt", "format": "zip",
                                          "state_dict": record_state_dict(d), "shared": shared_groups(d)})


def gen_legacy_views():
    """A legacy file whose persistent ids carry view_metadata (as PyTorch < 0.4 wrote for storage slices):
    'whole' covers storage 'k', 'view' covers its elements 2..4 through the view key 'k_view'."""
    import pickle

    class Ref:
        def __init__(self, pid):
            self.pid = pid

    class Rebuild:
        def __init__(self, pid, offset, size, stride):
            self.args = (Ref(pid), offset, size, stride)

        def __reduce__(self):
            return (torch._utils._rebuild_tensor, self.args)

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, Ref) else None

    root = ("storage", torch.FloatStorage, "k", "cuda:0", 6, None)
    view = ("storage", torch.FloatStorage, "k", "cuda:0", 6, ("k_view", 2, 3))
    obj = collections.OrderedDict([("whole", Rebuild(root, 0, (2, 3), (3, 1))),
                                   ("view", Rebuild(view, 1, (2,), (1,)))])
    main = io.BytesIO()
    P(main, protocol=2).dump(obj)
    keys = io.BytesIO()
    pickle.dump(["k"], keys, protocol=2)
    data = struct.pack("<q", 6) + struct.pack("<6f", 0.5, 1.5, 2.5, 3.5, 4.5, 5.5)
    path = os.path.join(OUT, "legacy_views.pt")
    with open(path, "wb") as f:
        f.write(legacy_prefix() + main.getvalue() + keys.getvalue() + data)
    d = torch.load(path, map_location="cpu", weights_only=False)
    recs = record_state_dict(d)
    # torch gives the view an offset into its storage slice; mc views the root storage, so the offset
    # also counts the slice's start (2).
    recs[1]["offset"] = d["view"].storage_offset() + 2
    write_json("legacy_views.json", {"file": "legacy_views.pt", "format": "legacy", "state_dict": recs,
                                     "shared": [["whole", "view"]]})


def gen_unsupported():
    d = collections.OrderedDict([("ok", torch.tensor([1.0, 2.0])), ("i8", torch.tensor([1, -2], dtype=torch.int8)),
                                 ("i16", torch.tensor([3, 4], dtype=torch.int16))])
    save_both("unsupported", d)


# ---- TorchScript: a tiny CLIP-like module


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(x)


class TinyClip(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.blocks = nn.Sequential(Block(d), Block(d))
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(torch.randn(d, 4))
        self.logit_scale = nn.Parameter(torch.ones([]) * 2.6592)
        self.register_buffer("position_ids", torch.arange(5))
        self.register_buffer("attn_mask", torch.full((3, 3), float("-inf")).triu(1).nan_to_num(-1e4),
                             persistent=False)
        self.plain_attr = torch.zeros(2)  # a tensor attribute that is neither parameter nor buffer

    def forward(self, x):
        y = self.blocks(x + self.class_embedding)
        return self.ln_post(y) @ self.proj * self.logit_scale.exp() + self.plain_attr.sum()


def strip_debug_info(path):
    """Rewrites a TorchScript archive without its optional *.debug_pkl entries (source ranges that embed
    the absolute paths of the generating machine), keeping the entry order, the compression of each entry
    and the 64-byte alignment of stored entries that torch.jit.save uses."""
    with zipfile.ZipFile(path) as z:
        entries = [(i, z.read(i.filename)) for i in z.infolist() if not i.filename.endswith(".debug_pkl")]
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w") as out:
        for info, data in entries:
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = info.compress_type
            if info.compress_type == zipfile.ZIP_STORED:
                # pad the local header's extra field so that the data starts on a 64-byte boundary
                start = out.fp.tell() + 30 + len(info.filename.encode()) + 4
                pad = (-start) % 64
                zi.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            out.writestr(zi, data)
    os.replace(tmp, path)


def gen_torchscript():
    torch.manual_seed(4)
    m = TinyClip().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    for kind in ("script", "trace"):
        path = os.path.join(OUT, "clip_%s.pt" % kind)
        if kind == "script":
            sm = torch.jit.script(m)
        else:
            sm = torch.jit.trace(m, torch.randn(3, 1, 8))
        torch.jit.save(sm, path)
        strip_debug_info(path)
        sd = torch.jit.load(path).state_dict()
        write_json("clip_%s.json" % kind, {"file": "clip_%s.pt" % kind, "format": "torchscript",
                                           "state_dict": record_state_dict(sd)})


# ---- numpy


def np_arrays():
    rng = np.random.default_rng(5)
    return collections.OrderedDict([
        ("f32", rng.standard_normal((2, 3)).astype(np.float32)),
        ("f64", rng.standard_normal(4)),
        ("f16", rng.standard_normal(3).astype(np.float16)),
        ("i32", np.array([1, -2, 3], dtype=np.int32)),
        ("i64", np.array([-5, 2 ** 40], dtype=np.int64)),
        ("u8", np.array([[0, 255], [7, 8]], dtype=np.uint8)),
        ("bool", np.array([True, False, True])),
        ("fortran", np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))),
        ("scalar", np.array(1.5, dtype=np.float32)),
        ("empty", np.zeros((0, 2), dtype=np.float32)),
        ("large", rng.standard_normal((30, 30)).astype(np.float32)),
    ])


def gen_numpy():
    arrs = np_arrays()
    recs = []
    for k, a in arrs.items():
        extra = {"fortran_order": bool(a.flags.f_contiguous and not a.flags.c_contiguous)}
        recs.append(record_array(k, a, NP_DTYPE[a.dtype], extra))
    for name, fn in (("np_savez", np.savez), ("np_savez_compressed", np.savez_compressed)):
        fn(os.path.join(OUT, name + ".npz"), **arrs)
        with zipfile.ZipFile(os.path.join(OUT, name + ".npz")) as z:
            methods = sorted({i.compress_type for i in z.infolist()})
        write_json(name + ".json", {"file": name + ".npz", "format": "npz", "zip_methods": methods, "arrays": recs})
    a = np.arange(6, dtype=np.float64).reshape(2, 3) / 4
    for ver in ((2, 0), (3, 0)):
        with open(os.path.join(OUT, "v%d.npy" % ver[0]), "wb") as f:
            np.lib.format.write_array(f, a, version=ver)
    write_json("npy_versions.json", {"arrays": [record_array("v2", a, "f64"), record_array("v3", a, "f64")]})
    np.save(os.path.join(OUT, "bad_bigendian.npy"), np.arange(3, dtype=">f4"))
    np.save(os.path.join(OUT, "bad_object.npy"), np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(os.path.join(OUT, "bad_int16.npy"), np.arange(3, dtype=np.int16))


# ---- hostile files: pickles that name globals outside the allow-list


def legacy_prefix():
    """The magic-number, protocol-version and sys_info pickles of the legacy format."""
    import pickle
    out = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, out, protocol=2)
    pickle.dump(1001, out, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
                out, protocol=2)
    return out.getvalue()


def gen_hostile():
    # GLOBAL 'os system', then REDUCE with ('echo pwned',): never executed, must be refused by name.
    evil = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    with open(os.path.join(OUT, "hostile_global.pkl"), "wb") as f:
        f.write(evil)
    # protocol 4: STACK_GLOBAL builtins.eval
    class CallsEval:
        def __reduce__(self):
            return (eval, ("1+1",))

    import pickle
    evil4 = pickle.dumps(CallsEval(), protocol=4)  # only written, never loaded
    with open(os.path.join(OUT, "hostile_stack_global.pkl"), "wb") as f:
        f.write(evil4)
    # a zip-format checkpoint whose data.pkl calls subprocess.Popen
    popen = b"\x80\x02csubprocess\nPopen\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03."
    with zipfile.ZipFile(os.path.join(OUT, "hostile_zip.pt"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("hostile_zip/data.pkl", popen)
        z.writestr("hostile_zip/byteorder", "little")
        z.writestr("hostile_zip/version", "3\n")
    # a legacy checkpoint whose main pickle calls os.system
    with open(os.path.join(OUT, "hostile_legacy.pt"), "wb") as f:
        f.write(legacy_prefix() + evil + b"\x80\x02]q\x00.")


# ---- plain pickles of every protocol (the test knows the expected structure)


def gen_pickles():
    import pickle
    shared = [9]
    obj = {
        "int": 7, "neg": -300000, "big": 2 ** 100, "negbig": -2 ** 70, "i64min": -2 ** 63, "float": 1.25,
        "str": "h\u00e9llo \u2713\nline", "bytes": b"\x00\x01\xff", "list": [1, [2, 3], ()],
        "tuple": (1, "a", None, True, False), "intkeys": {1: "one", -2: "minus two"}, "set": {5},
        "frozenset": frozenset({6}), "shared": [shared, shared],
        "od": collections.OrderedDict([("b", 1), ("a", 2)]), "empty_str": "", "tuple_key": {(1, "x"): 3},
    }
    for proto in range(6):
        with open(os.path.join(OUT, "proto%d.pkl" % proto), "wb") as f:
            f.write(pickle.dumps(obj, protocol=proto))


# ---- real data in the shared folder (never copied into the repository)


def gen_real(shared):
    ck = os.path.join(shared, "checkpoints", "resnet_cifar10_akamaster")
    path = os.path.join(ck, "resnet20-12fca82f.th")
    if not os.path.exists(path):
        print("skipping real checkpoints: %s not found" % path, file=sys.stderr)
        return
    obj = torch.load(path, map_location="cpu", weights_only=False)
    sd = obj["state_dict"]
    recs = []
    for k, v in sd.items():
        a = v.detach().double().numpy().reshape(-1)
        idx = list(dict.fromkeys([0, a.size // 3, (2 * a.size) // 3, a.size - 1]))
        recs.append({"name": k, "dtype": MC_DTYPE[v.dtype], "shape": list(v.shape), "sum": float(a.sum()),
                     "sumsq": float((a * a).sum()), "samples": [[int(i), float(a[i])] for i in idx]})
    others = {}
    for name in sorted(os.listdir(ck)):
        if name.endswith(".th") and name != "resnet20-12fca82f.th":
            o = torch.load(os.path.join(ck, name), map_location="cpu", weights_only=False)
            others[name] = {"tensors": len(o["state_dict"]),
                            "first": next(iter(o["state_dict"])),
                            "top_level_keys": list(o.keys())}
    write_json("resnet20_expected.json", {
        "file": "checkpoints/resnet_cifar10_akamaster/resnet20-12fca82f.th", "format": "legacy",
        "top_level_keys": list(obj.keys()), "best_prec1": float(obj["best_prec1"]),
        "state_dict": recs, "others": others})

    npz = os.path.join(shared, "medmnist", "breastmnist.npz")
    if os.path.exists(npz):
        z = np.load(npz)
        arrays = []
        for k in z.files:
            a = z[k]
            flat = a.reshape(-1).astype(np.float64)
            idx = list(dict.fromkeys([0, flat.size // 3, (2 * flat.size) // 3, flat.size - 1]))
            arrays.append({"name": k, "dtype": NP_DTYPE[a.dtype], "shape": list(a.shape), "sum": float(flat.sum()),
                           "samples": [[int(i), float(flat[i])] for i in idx]})
        write_json("breastmnist_expected.json", {"file": "medmnist/breastmnist.npz", "arrays": arrays})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "data"),
                    help="the shared data folder (real checkpoints, MedMNIST)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    gen_state_dicts()
    gen_nested()
    gen_dtypes()
    gen_unsupported()
    gen_legacy_views()
    gen_torchscript()
    gen_numpy()
    gen_hostile()
    gen_pickles()
    gen_real(args.shared)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes, into %s" % (len(os.listdir(OUT)), total, OUT))


if __name__ == "__main__":
    main()
