#!/usr/bin/env python3
"""Generates the reference data of tests/test_image.cpp (tests/fixtures/image/).

Everything is computed with Pillow and torchvision, the libraries the PyTorch reference code preprocesses
images with:

* resample: a synthetic image given by a formula (synth_value below; the test computes the same formula in
  C++) resized with every Pillow filter, up, down and mixed, so the C++ resampler can be checked without
  any image decoder involved. Pillow 13 runs the vertical pass first for some resizes (see
  mc/data/transforms.hpp); a few cases also record the horizontal-first order of older Pillow versions,
  obtained by resizing one axis at a time.
* pipeline: torchvision Resize(size, interpolation) + CenterCrop(size) on synthetic images, and the output
  sizes / crop offsets torchvision picks for a list of image sizes (pads included).
* formats: small synthetic JPEG / PNG / BMP files in various modes (written here, stored in the fixture
  directory) with the pixels PIL's convert("RGB") gives for them.
* vqa_rad: for a few VQA-RAD JPEGs (read from the shared data directory, never copied), the uint8 output
  of convert("RGB") -> Resize(224, BICUBIC or BILINEAR) -> CenterCrop(224), i.e. before ToTensor, plus
  the SHA-256 of PIL's decoded pixels and a grid of decoded sample values so the test can tell JPEG
  decoder differences from resampling differences.
* medmnist: the same pipelines for a few 28x28 BreastMNIST test images (indices recorded; the test reads
  them from the .npz itself).
* normalize: torchvision ToTensor + Normalize of every 8-bit value with the OpenAI and ImageNet mean/std
  (normalize.bin.gz: float32 little-endian [preset][channel][value]).

Pixel blobs are stored gzip-compressed after a gradient prediction filter: each sample is stored as
(v - (left + up - upleft)) mod 256, taking the same channel of the neighbouring pixels and 0 outside the
image. Offsets and shapes are listed in index.json. The gzip files end their DEFLATE stream with a sync
flush and an empty final stored block, so that the last Huffman-coded symbol is never in the last bytes of
the stream (an inflater that reads ahead of the data it decodes, like stb_image's, needs this).

Usage: python3 tools/gen_image_fixtures.py [--data DIR] [--out DIR]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
import torchvision
from PIL import Image
from torchvision import transforms as T

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
TV_FILTERS = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
}

# name -> pipelines stored (bicubic is what CLIP, BiomedCLIP and PMC-CLIP use; bilinear is CXR-CLIP's)
VQA_RAD_IMAGES = {
    "synpic51426.jpg": ["bicubic"],              # 256x256, grey content, mild downscale
    "synpic53816.jpg": ["bicubic", "bilinear"],  # 260x335, portrait, grey content
    "synpic17738.jpg": ["bicubic"],              # 1024x1157, grey content, strong downscale
    "synpic100132.jpg": ["bicubic", "bilinear"], # 2321x1384, landscape, colour, ~6x downscale
}
MEDMNIST_INDICES = [0, 7, 42, 155]


def synth_value(x, y, c, w, h):
    """One 8-bit sample of the synthetic test image (mirrored in tests/test_image.cpp)."""
    band = (x * 4) // w
    if band == 0:  # 2x2 checkerboard, black/white: exercises overshoot clipping
        return 255 if ((x >> 1) + (y >> 1) + c) & 1 else 0
    if band == 1:  # wrapping ramps: smooth with hard edges
        return (x * 7 + y * 5 + c * 40) & 255
    if band == 2:  # hashed noise
        v = (x * 2654435761 ^ y * 2246822519 ^ c * 3266489917) & 0xFFFFFFFF
        v ^= v >> 15
        v = (v * 2246822519) & 0xFFFFFFFF
        v ^= v >> 13
        return v >> 24
    return ((y * 255) // max(h - 1, 1) + c * 30) % 256  # vertical gradient


def synth(w, h, channels):
    a = np.zeros((h, w, channels), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            for c in range(channels):
                a[y, x, c] = synth_value(x, y, c, w, h)
    return a


def to_pil(a):
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def pil_array(im):
    a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def delta(a):
    """Gradient prediction filter over an HWC uint8 array, flattened (see the module docstring)."""
    v = a.astype(np.int32)
    p = np.zeros_like(v)
    p[:, 1:] += v[:, :-1]
    p[1:, :] += v[:-1, :]
    p[1:, 1:] -= v[:-1, :-1]
    return ((v - p) & 255).astype(np.uint8).tobytes()


class Blob:
    """Collects HWC uint8 arrays into one delta-filtered, gzip-compressed file."""

    def __init__(self, name):
        self.name = name
        self.parts = []
        self.size = 0

    def add(self, a):
        data = delta(a)
        entry = {"blob": self.name, "offset": self.size, "height": int(a.shape[0]), "width": int(a.shape[1]),
                 "channels": int(a.shape[2])}
        self.parts.append(data)
        self.size += len(data)
        return entry

    def write(self, out_dir):
        data = gzip_padded(b"".join(self.parts))
        assert gzip.decompress(data) == b"".join(self.parts)
        with open(os.path.join(out_dir, self.name), "wb") as f:
            f.write(data)
        return len(data)


def gzip_padded(raw):
    """A single-member gzip file (mtime 0) whose DEFLATE data ends with empty stored blocks."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH) + b"\x01\x00\x00\xff\xff"
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + body + struct.pack("<II", zlib.crc32(raw) & 0xFFFFFFFF, len(raw) & 0xFFFFFFFF)


def grey_if_equal(a):
    """Keeps one channel when R == G == B everywhere (the test replicates it back)."""
    if a.shape[2] == 3 and (a[:, :, 0] == a[:, :, 1]).all() and (a[:, :, 0] == a[:, :, 2]).all():
        return a[:, :, :1]
    return a


def tv_pipeline(im, size, filt):
    t = T.Compose([T.Resize(size, interpolation=TV_FILTERS[filt]), T.CenterCrop(size)])
    return t(im)


def png_bytes(w, h, color_type, depth, samples):
    """A minimal PNG (for 16-bit colour modes, which PIL cannot write)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    rows = samples.astype(">u2").reshape(h, -1).tobytes() if depth == 16 else samples.reshape(h, -1).tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_resample(index, blob):
    sources = {"rgb": (41, 33, 3), "grey": (41, 33, 1), "large": (300, 200, 3)}
    index["resample_sources"] = {k: {"width": w, "height": h, "channels": c} for k, (w, h, c) in sources.items()}
    sizes = {
        "rgb": [(13, 11), (29, 23), (5, 4), (1, 1), (67, 49), (45, 35), (120, 9), (9, 120), (41, 20), (70, 33)],
        "grey": [(13, 11), (67, 49), (40, 34)],
        "large": [(21, 14), (75, 50), (300, 9)],
    }
    cases = []
    for src, (w, h, c) in sources.items():
        im = to_pil(synth(w, h, c))
        for fname, f in FILTERS.items():
            for ow, oh in sizes[src]:
                out = pil_array(im.resize((ow, oh), f))
                e = blob.add(out)
                e.update({"source": src, "filter": fname, "order": "pillow"})
                cases.append(e)
    # Pillow before 13.0 always ran the horizontal pass first. Resizing one axis at a time reproduces that
    # (a single-axis resize is the same in every version), for resizes where Pillow 13 goes vertical first.
    im = to_pil(synth(41, 33, 3))
    for fname in ["bilinear", "bicubic", "lanczos"]:
        for ow, oh in [(120, 9), (40, 11), (38, 20)]:
            out = pil_array(im.resize((ow, 33), FILTERS[fname]).resize((ow, oh), FILTERS[fname]))
            e = blob.add(out)
            e.update({"source": "rgb", "filter": fname, "order": "horizontal_first"})
            cases.append(e)
    index["resample"] = cases


def make_pipeline(index, blob):
    cases = []
    # (100, 260): a tall image, which Pillow 13 resizes vertical pass first.
    for (w, h, c) in [(257, 199, 3), (50, 61, 1), (30, 30, 3), (100, 260, 3)]:
        im = to_pil(synth(w, h, c))
        for filt in TV_FILTERS:
            out = pil_array(tv_pipeline(im, 64, filt))
            e = blob.add(out)
            e.update({"source_width": w, "source_height": h, "source_channels": c, "size": 64, "filter": filt})
            cases.append(e)
    index["pipeline"] = cases

    # Output sizes of Resize(size) and the crop offsets of CenterCrop, learnt from torchvision itself on
    # images whose pixels encode their own coordinates.
    sizes = []
    for (w, h, s) in [(2321, 1384, 224), (1384, 2321, 224), (256, 256, 224), (260, 335, 224), (263, 324, 224),
                      (1024, 1311, 224), (1023, 841, 224), (28, 28, 224), (640, 427, 224), (333, 500, 336),
                      (7, 1000, 3), (999, 3, 7)]:
        out = T.Resize(s)(Image.new("L", (w, h)))
        sizes.append({"width": w, "height": h, "size": s, "out_width": out.size[0], "out_height": out.size[1]})
    index["resize_sizes"] = sizes

    crops = []
    for (w, h, cw, ch) in [(225, 224, 224, 224), (227, 230, 224, 224), (224, 229, 224, 224), (300, 201, 224, 224),
                           (10, 10, 4, 4), (11, 13, 4, 6), (5, 5, 8, 8), (4, 7, 9, 3), (6, 20, 9, 10)]:
        a = np.zeros((h, w, 3), dtype=np.uint8)
        a[:, :, 0] = (np.arange(w)[None, :] + 1)
        a[:, :, 1] = (np.arange(h)[:, None] + 1)
        a[:, :, 2] = 7
        out = np.asarray(T.CenterCrop((ch, cw))(Image.fromarray(a)))
        inside = np.argwhere(out[:, :, 2] == 7)
        r0, c0 = inside[0]
        src_x = int(out[r0, c0, 0]) - 1 - int(c0)
        src_y = int(out[r0, c0, 1]) - 1 - int(r0)
        crops.append({"width": w, "height": h, "crop_width": cw, "crop_height": ch, "offset_x": src_x,
                      "offset_y": src_y, "zero_pixels": int((out[:, :, 2] == 0).sum())})
    index["center_crop"] = crops


def make_formats(index, blob, out_dir):
    w, h = 23, 17
    rgb = synth(w, h, 3)
    grey = synth(w, h, 1)[:, :, 0]
    alpha = ((np.arange(w)[None, :] * 11 + np.arange(h)[:, None] * 3) & 255).astype(np.uint8)
    files = {}

    def save(name, im, **kw):
        b = io.BytesIO()
        im.save(b, **kw)
        files[name] = b.getvalue()

    smooth = np.zeros((h, w, 3), dtype=np.uint8)
    smooth[:, :, 0] = (np.arange(w)[None, :] * 10) & 255
    smooth[:, :, 1] = (np.arange(h)[:, None] * 14) & 255
    smooth[:, :, 2] = 90
    save("grey.jpg", Image.fromarray(grey), format="JPEG", quality=90)
    save("rgb420.jpg", Image.fromarray(smooth), format="JPEG", quality=90, subsampling=2)
    save("rgb444.jpg", Image.fromarray(rgb), format="JPEG", quality=95, subsampling=0)
    save("progressive.jpg", Image.fromarray(smooth), format="JPEG", quality=85, progressive=True)
    save("grey.png", Image.fromarray(grey), format="PNG")
    save("la.png", Image.fromarray(np.stack([grey, alpha], axis=2), "LA"), format="PNG")
    save("rgb.png", Image.fromarray(rgb), format="PNG")
    save("rgba.png", Image.fromarray(np.concatenate([rgb, alpha[:, :, None]], axis=2), "RGBA"), format="PNG")
    pal = Image.fromarray(rgb).quantize(colors=16)
    save("palette.png", pal, format="PNG", transparency=3)
    save("grey_trns.png", Image.fromarray(grey), format="PNG", transparency=0)
    g16 = (np.arange(w * h, dtype=np.uint32).reshape(h, w) * 397 % 65536).astype(np.uint16)
    g16[0, :6] = [0, 1, 255, 256, 1000, 65535]
    files["grey16.png"] = png_bytes(w, h, 0, 16, g16)
    c16 = (np.arange(w * h * 3, dtype=np.uint32).reshape(h, w, 3) * 1021 % 65536).astype(np.uint16)
    files["rgb16.png"] = png_bytes(w, h, 2, 16, c16)
    la16 = (np.arange(w * h * 2, dtype=np.uint32).reshape(h, w, 2) * 733 % 65536).astype(np.uint16)
    files["la16.png"] = png_bytes(w, h, 4, 16, la16)
    save("rgb24.bmp", Image.fromarray(rgb), format="BMP")
    save("grey8.bmp", Image.fromarray(grey), format="BMP")
    save("rgba32.bmp", Image.fromarray(np.concatenate([rgb, alpha[:, :, None]], axis=2), "RGBA"), format="BMP")
    save("bw1.bmp", Image.fromarray(grey).convert("1"), format="BMP")

    entries = []
    for name, data in files.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data))
        mode = im.mode
        out = pil_array(im.convert("RGB"))
        e = blob.add(out)
        e.update({"file": name, "pil_mode": mode, "exact": not name.endswith(".jpg")})
        entries.append(e)
    index["formats"] = entries


def make_vqa_rad(index, blob, data_dir):
    entries = []
    for name, filters in VQA_RAD_IMAGES.items():
        path = os.path.join(data_dir, "vqa_rad", "images", name)
        im = Image.open(path)
        rgb = im.convert("RGB")
        dec = np.asarray(rgb, dtype=np.uint8)
        hgt, wid = dec.shape[:2]
        ys = np.linspace(0, hgt - 1, 12).round().astype(int)
        xs = np.linspace(0, wid - 1, 12).round().astype(int)
        probes = [[int(y), int(x)] + [int(v) for v in dec[y, x]] for y in ys for x in xs]
        e = {"file": name, "width": wid, "height": hgt, "pil_mode": im.mode,
             "decoded_sha256": hashlib.sha256(dec.tobytes()).hexdigest(), "probes": probes, "outputs": {}}
        for filt in filters:
            out = grey_if_equal(pil_array(tv_pipeline(rgb, 224, filt)))
            e["outputs"][filt] = blob.add(out)
        entries.append(e)
    index["vqa_rad"] = entries


def make_medmnist(index, blob, data_dir):
    path = os.path.join(data_dir, "medmnist", "breastmnist.npz")
    arr = np.load(path)["test_images"]
    entries = []
    for i in MEDMNIST_INDICES:
        im = Image.fromarray(arr[i]).convert("RGB")
        e = {"index": i, "outputs": {}}
        for filt in TV_FILTERS:
            out = grey_if_equal(pil_array(tv_pipeline(im, 224, filt)))
            e["outputs"][filt] = blob.add(out)
        entries.append(e)
    index["medmnist"] = {"file": "medmnist/breastmnist.npz", "array": "test_images", "images": entries}


def to_json(index):
    """JSON with one line per top-level key, or per element of a top-level list."""
    def dump(v):
        return json.dumps(v, separators=(",", ":"))
    lines = []
    for k, v in index.items():
        if isinstance(v, list):
            lines.append(f"{dump(k)}:[\n  " + ",\n  ".join(dump(e) for e in v) + "]")
        else:
            lines.append(f"{dump(k)}:{dump(v)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def make_normalize(index, out_dir):
    presets = {"openai": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
               "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))
    parts = []
    for mean, std in presets.values():
        t = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(ramp)  # [3, 1, 256]
        parts.append(t.numpy().astype("<f4").tobytes())
    with open(os.path.join(out_dir, "normalize.bin.gz"), "wb") as f:
        f.write(gzip_padded(b"".join(parts)))
    index["normalize"] = {"file": "normalize.bin.gz", "presets": list(presets)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(root, "..", "shared", "data"), help="shared data directory")
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "image"), help="output directory")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    index = {"pillow": PIL.__version__, "torchvision": torchvision.__version__,
             "encoding": "gzip of HWC uint8 stored as (v - (left + up - upleft)) mod 256"}
    blobs = {k: Blob(k + ".bin.gz") for k in ["resample", "pipeline", "formats", "vqa_rad", "medmnist"]}
    make_resample(index, blobs["resample"])
    make_pipeline(index, blobs["pipeline"])
    make_formats(index, blobs["formats"], args.out)
    make_vqa_rad(index, blobs["vqa_rad"], args.data)
    make_medmnist(index, blobs["medmnist"], args.data)
    make_normalize(index, args.out)
    for k, b in blobs.items():
        n = b.write(args.out)
        index.setdefault("blob_sizes", {})[b.name] = {"raw": b.size, "gzip": n}
    with open(os.path.join(args.out, "index.json"), "w") as f:
        f.write(to_json(index))
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"wrote {args.out}: {total} bytes")


if __name__ == "__main__":
    main()
