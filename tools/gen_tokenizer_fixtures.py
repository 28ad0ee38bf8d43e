#!/usr/bin/env python3
"""Generates the reference fixtures of tests/test_tokenize.cpp under tests/fixtures/tokenize/.

Usage (from the repository root; needs open_clip_torch, ftfy, regex, transformers, tokenizers and the
shared data at ../shared/data):

    python tools/gen_tokenizer_fixtures.py [--retrain-vocab]

Outputs (small; the captions and questions themselves are read at test time from ../shared/data):

- clip_roco.bin.gz       open_clip's SimpleTokenizer.encode(caption) (no SOT/EOT) for every ROCO caption,
                         in file order, as columns (little-endian, gzip): "MCTK", u32 version = 1, u32 n,
                         n x u32 ID number minus the previous one (IDs are "ROCO_%05d"), n x u16 token
                         count, n x u64 fnv1a64 of the ids
- clip_roco_ids.tsv.gz   ID <TAB> space separated ids, for the first CLIP_FULL captions
- clip_tricky.jsonl      {"text", "ids", "row77" (open_clip.tokenize(text)[0]), "decoded" (decode(ids)),
                         "known_diff"?} per string
- clip_known_diff.tsv    ROCO IDs whose ids mc does not reproduce, with the reason (ideally none)
- vocab.txt              an uncased WordPiece vocabulary trained here on the ROCO captions, VQA-RAD train
                         questions and SLAKE English questions ([PAD]=0 [UNK] [CLS] [SEP] [MASK])
- wordpiece_texts.bin.gz BertTokenizer(vocab, do_lower_case=True).encode(text, add_special_tokens=False)
                         for every distinct text of that corpus (first occurrence order; the corpus order
                         is ROCO captions, VQA-RAD trainset.json, SLAKE test/train/validate.json English
                         questions), as columns: "MCTK", u32 version = 1, u32 n, n x u16 token count,
                         n x u32 low half of the fnv1a64 of the ids (32 bits keep the file small)
- wordpiece_ids.tsv.gz   corpus key <TAB> ids, for the first WP_FULL distinct texts; keys: roco/<ID>,
                         vqa_rad/train/<index>, slake/<split>/<index> (index = position in the JSON list)
- wordpiece_tricky.jsonl {"text", "lower", "ids"} per string and case setting, plus
                         {"batch": [...], "context_length", "pad_to_max", "input_ids", "attention_mask"}

vocab.txt is trained only when missing or with --retrain-vocab (the trainer does not order ties
reproducibly, so a retrained vocabulary differs); every other file is regenerated from the present one.

fnv1a64: FNV-1a (offset 0xcbf29ce484222325, prime 0x100000001b3) over each id as 8 little-endian bytes.
The WordPiece reference is transformers' Python BertTokenizer (named BertTokenizerLegacy in transformers
5; BertTokenizer itself in transformers 4).
"""
import argparse
import glob
import gzip
import hashlib
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenize")
CLIP_FULL = 200
WP_FULL = 300

# ROCO captions whose CLIP ids mc does not reproduce: {ID: reason}. Filled from test runs; see the
# known_diff notes of the tricky strings for what is not replicated.
CLIP_KNOWN_DIFF = {}

# Tricky strings that exercise what mc replicates. Strings whose ids are known to differ from open_clip
# carry the reason as a second element.
CLIP_TRICKY = [
    "",
    "   ",
    "A chest X-ray.",
    "It's the patient's CT; they're sure we've seen it, I'm told they'll do what he'd do.",
    "IT'S LOUD 'S 'T",
    "''s ''t 's",
    "&amp; &lt;b&gt; &quot;q&quot; &#39;x&#39; &#x27;y&#x27; &deg; &micro;g &plusmn;2 &nbsp;nbsp",
    "&amp;amp; double &amp;lt;escaped&amp;gt;",
    "&ampx &lt3 &notit; &notin; &AMP; &EACUTE;t&Eacute; &SZLIG; &ntilde; &NTILDE; &nTILDE;",
    "&#0; &#13; &#128; &#150; &#1114112; &#xD800; &#xFFFE; &#65 &#x41 &#x;",
    "a < b &amp; c",  # ftfy skips entities when '<' is present, html.unescape does not
    "line one &amp;\nline two < three &amp; four\nline &amp; five",
    "\u201ccurly\u201d \u2018single\u2019 \u201equote\u201f \u02bcmodifier",
    "\ufb01brosis \ufb02ow \ufb03x \ufb04 \ufb05 \ufb06 \u0132 \u0133 \u01c4 \u01c6 \u01f1 \u0149",
    "\uff21\uff22\uff23\u3000\uff11\uff12\uff13\uff01 \uff76\uff80\uff76\uff85 \uffe3",
    "caf\u00e9 cafe\u0301 na\u00efve r\u00f6ntgen \u00c5ngstr\u00f6m \u212bngstr\u00f6m \u2126 ohm",
    "\u0391\u039b\u03a6\u0391 \u03b2-blocker \u00b5g \u03bcg \u03a3 \u039f\u0394\u039f\u03a3 \u039f\u0394\u039f\u03a3. \u03a3\u03b1",
    "\u0130stanbul DIYARBAKIR \u1e9e stra\u00dfe \u0149 K\u212a",
    "\u4e2d\u6587\u6d4b\u8bd5 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4 \u1100\u1161\u11a8",
    "emoji \U0001f600\U0001f44d\U0001f3fd \u2764\ufe0f \U0001f1fa\U0001f1f8 \U0001d54d",
    "digits 12345 3.14 \u0661\u0662\u0663 \u00bd \u2460\u2461 \u2168 x\u00b2",
    "tabs\tand\nnewlines\r\nand\rreturns\u2028sep\u2029para\u0085nel \u00a0nbsp \u2003em",
    "ctrl\x00\x01\x07\x0b\x0c\x1b[31mred\x1b[0m\x7f\u200b\u200d\ufeffbom \u206a\ufff9",
    "c1 \x80\x85\x91\x92\x93\x94\x81\x9d",
    "<start_of_text> <end_of_text> <START_OF_TEXT> <\u017ftart_of_text> <|startoftext|> <|endoftext|>",
    "x'\u017f 'S",
    "punct!!! ??? ... --- (a) [b] {c} @#$%^&*_+=~`|\\/ \u00a9\u00ae\u2122 \u00b0C \u00b1 \u00d7 \u2192 \u2264",
    "r\u00e9sum\u00e9 \u00e0 la \u00e7a \u00f1 \u00f8 \u00e6 \u0153 \u00df \u0142 \u0111 \u0127 \u00fe",
    "\u1e9b\u0323 \u0071\u0307\u0323 \u0345x \u0958 \u2000 \u2126 \u1f71 \u0340\u0341 \u0344",
    "\U0002f800 \uf900 \u2f00 \u3400 \U00020000",
    "A" * 50 + " " + " ".join(["word%d" % i for i in range(120)]),
    "The study shows " * 30,
    " \t leading and trailing whitespace \n ",
    "Hyper-intense lesion (arrow) in the left frontal lobe; T2/FLAIR, 3 mm slices @ 1.5T.",
    ("s\u00c3\u00b3 mojibake", "ftfy's fix_encoding (mojibake repair) is not replicated"),
    ("\u00e2\u0080\u0099quoted\u00e2\u0080\u009d", "ftfy's fix_encoding (mojibake repair) is not replicated"),
]

WP_TRICKY = [
    "",
    "Is there a pneumothorax?",
    "What modality is used to take this image?",
    "Hello [SEP]world [cls] a[SEP]b [MASK][UNK]x [PAD] [[SEP]]",
    "Caf\u00e9 na\u00efve R\u00d6NTGEN \u00c5ngstr\u00f6m \u212bngstr\u00f6m cafe\u0301 \u00e9\u00e9",
    "\u0130stanbul \u03a3\u039f\u03a3 \u039f\u0394\u039f\u03a3. \u03b1\u03b2\u03b3 \u00b5g \u00df",
    "\u4e2d\u56fd\u533b\u5b66 x\u4e2dy \u65e5\u672c\u8a9e \u3042\u3044 \ud55c\uad6d\uc5b4 \U00020000 \uf900",
    "x-ray, CT/MRI (T1; T2)... \"quoted\" 'single' a.b.c $5 ^ ` ~ | \u00bf\u00a1 \u2014 \u2013 \u2026 \u00a7",
    "ctrl\x00a\x01b\x7fc\u200bd\ufeffe\ufffdf\x85g\u2028h\u2029i\u00a0j\u3000k\tl\nm\rn",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101 + " " + "\u00e9" * 101,
    "pneumo" * 20 + " unmatchable\u2603word ok",
    "emoji \U0001f600 \u2764\ufe0f",
    "The chest radiograph shows bilateral infiltrates consistent with pneumonia. " * 10,
    "\u1e9b\u0323 \u0345x \u0958 combining\u0301\u0301 \u0301alone",
]
WP_BATCHES = [
    (["Is there a pneumothorax?", "", " ".join(["lesion"] * 300), "x-ray"], 77, True),
    (["Is there a pneumothorax?", "", " ".join(["lesion"] * 300), "x-ray"], 256, True),
    (["Is there a pneumothorax?", "", "a b c", "x-ray"], 77, False),
    (["The chest radiograph shows bilateral infiltrates consistent with pneumonia. " * 10], 77, True),
    (["a b c d e f g"], 5, True),
    (["a b", "a b c d"], 5, False),
]


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in struct.pack("<q", int(i)):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def roco_captions():
    out = []
    for f in sorted(glob.glob(os.path.join(DATA, "roco", "*", "*", "captions.txt"))):
        text = open(f, "rb").read().decode("utf-8")
        for line in text.split("\n"):
            if not line:
                continue
            cid, cap = line.split("\t", 1)
            out.append((cid, cap))
    assert out, "no ROCO captions found under " + DATA
    return out


def wp_corpus(captions):
    """(key, text) for the WordPiece corpus, in the order the C++ test rebuilds it."""
    out = [("roco/" + cid, cap) for cid, cap in captions]
    vqa = json.load(open(os.path.join(DATA, "vqa_rad", "trainset.json"), encoding="utf-8"))
    out += [("vqa_rad/train/%d" % i, q["question"]) for i, q in enumerate(vqa)]
    for f in sorted(glob.glob(os.path.join(DATA, "slake", "*.json"))):
        split = os.path.splitext(os.path.basename(f))[0]
        items = json.load(open(f, encoding="utf-8"))
        out += [("slake/%s/%d" % (split, i), q["question"]) for i, q in enumerate(items) if q.get("q_lang") == "en"]
    return out


def write_gz(path, data):
    # mtime=0 and no file name: the bytes depend on the content only.
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as g:
            g.write(data)


def gen_clip(captions):
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    shared_bpe = os.path.join(DATA, "tokenizers", "clip", "bpe_simple_vocab_16e6.txt.gz")
    a = hashlib.sha256(open(default_bpe(), "rb").read()).hexdigest()
    b = hashlib.sha256(open(shared_bpe, "rb").read()).hexdigest()
    assert a == b, "open_clip's bpe file differs from the shared one"
    tok = SimpleTokenizer()
    deltas, counts, hashes, full = [], [], [], []
    prev = 0
    for n, (cid, cap) in enumerate(captions):
        ids = tok.encode(cap)
        assert cid.startswith("ROCO_") and len(cid) == 10 and "ROCO_%05d" % int(cid[5:]) == cid, cid
        deltas.append((int(cid[5:]) - prev) & 0xFFFFFFFF)
        prev = int(cid[5:])
        assert len(ids) < 65536
        counts.append(len(ids))
        hashes.append(fnv1a64(ids))
        if n < CLIP_FULL:
            full.append("%s\t%s" % (cid, " ".join(map(str, ids))))
    body = struct.pack("<4sII", b"MCTK", 1, len(captions))
    body += struct.pack("<%dI" % len(deltas), *deltas)
    body += struct.pack("<%dH" % len(counts), *counts)
    body += struct.pack("<%dQ" % len(hashes), *hashes)
    write_gz(os.path.join(OUT, "clip_roco.bin.gz"), body)
    write_gz(os.path.join(OUT, "clip_roco_ids.tsv.gz"), "\n".join(full) + "\n")
    with open(os.path.join(OUT, "clip_known_diff.tsv"), "w", encoding="utf-8") as f:
        f.write("# ROCO caption ID <TAB> why mc's CLIP ids differ from open_clip's\n")
        for cid, why in sorted(CLIP_KNOWN_DIFF.items()):
            f.write("%s\t%s\n" % (cid, why))
    with open(os.path.join(OUT, "clip_tricky.jsonl"), "w", encoding="utf-8") as f:
        for item in CLIP_TRICKY:
            text, why = (item, None) if isinstance(item, str) else item
            ids = tok.encode(text)
            rec = {"text": text, "ids": ids, "row77": open_clip.tokenize([text])[0].tolist(),
                   "decoded": tok.decode(ids)}
            if why:
                rec["known_diff"] = why
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
    print("clip: %d captions, %d tricky strings" % (len(captions), len(CLIP_TRICKY)))


def train_vocab(corpus, path):
    from tokenizers import BertWordPieceTokenizer

    texts = [t for _, t in corpus]
    t = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
    t.train_from_iterator(texts, vocab_size=5000, min_frequency=2, show_progress=False,
                          special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                          initial_alphabet=list("\u00e9\u00fc\u00f6\u00df\u00f8\u00b5\u03b1\u03b2\u03b3\u4e2d\u56fd\u533b\u5b66"))
    vocab = t.get_vocab()
    with open(path, "w", encoding="utf-8") as f:
        for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write(tok + "\n")


def gen_wordpiece(corpus, retrain):
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as SlowBert
        from transformers import BertTokenizer as FastBert
    except ImportError:  # transformers 4
        from transformers import BertTokenizer as SlowBert
        from transformers import BertTokenizerFast as FastBert

    vocab = os.path.join(OUT, "vocab.txt")
    if retrain or not os.path.exists(vocab):
        train_vocab(corpus, vocab)
    slow = SlowBert(vocab, do_lower_case=True)
    slow_cased = SlowBert(vocab, do_lower_case=False)
    fast = FastBert(vocab, do_lower_case=True)  # only compared, for information
    seen = set()
    counts, hashes, full = [], [], []
    fast_diff = 0
    for key, text in corpus:
        if text in seen:
            continue
        seen.add(text)
        ids = slow.encode(text, add_special_tokens=False)
        if fast.encode(text, add_special_tokens=False) != ids:
            fast_diff += 1
        assert len(ids) < 65536
        counts.append(len(ids))
        hashes.append(fnv1a64(ids) & 0xFFFFFFFF)
        if len(full) < WP_FULL:
            full.append("%s\t%s" % (key, " ".join(map(str, ids))))
    body = struct.pack("<4sII", b"MCTK", 1, len(counts))
    body += struct.pack("<%dH" % len(counts), *counts)
    body += struct.pack("<%dI" % len(hashes), *hashes)
    write_gz(os.path.join(OUT, "wordpiece_texts.bin.gz"), body)
    write_gz(os.path.join(OUT, "wordpiece_ids.tsv.gz"), "\n".join(full) + "\n")
    with open(os.path.join(OUT, "wordpiece_tricky.jsonl"), "w", encoding="utf-8") as f:
        for text in WP_TRICKY:
            for lower, tok in ((True, slow), (False, slow_cased)):
                rec = {"text": text, "lower": lower, "ids": tok.encode(text, add_special_tokens=False)}
                f.write(json.dumps(rec, ensure_ascii=True) + "\n")
        for texts, ctx, pad_to_max in WP_BATCHES:
            enc = slow(texts, padding="max_length" if pad_to_max else True, truncation=True, max_length=ctx)
            rec = {"batch": texts, "context_length": ctx, "pad_to_max": pad_to_max,
                   "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
    print("wordpiece: %d texts, %d distinct, %d where the fast tokenizer differs from the slow one"
          % (len(corpus), len(counts), fast_diff))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain-vocab", action="store_true", help="train vocab.txt again even if it exists")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    captions = roco_captions()
    gen_clip(captions)
    gen_wordpiece(wp_corpus(captions), args.retrain_vocab)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("fixtures: %d bytes in %s" % (total, OUT))


if __name__ == "__main__":
    sys.exit(main())
