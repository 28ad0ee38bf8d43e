#!/usr/bin/env python3
"""Generates the reference data of tests/test_metrics.cpp (tests/fixtures/metrics/metrics.json).

Classification references come from scikit-learn (roc_auc_score, roc_curve, accuracy_score,
confusion_matrix, precision_recall_fscore_support); retrieval and VQA references are computed here with
numpy / sklearn from their definitions:

* binary:      scores (ties, imbalance, float32 values) and 0/1 labels -> roc_auc_score, roc_curve
               (drop_intermediate=True; the +inf first threshold is left out of the JSON).
* multiclass:  probabilities [N, C] for C = 2, 3, 11 (rows of k / K with integer k, so values tie; some
               rows duplicated) -> one-vs-rest AUC (macro, weighted, micro, per class; C == 2: AUC of
               column 1), the paper's hard AUC (roc_auc_score fed argmax labels, or the one-hot argmax
               with multi_class="ovr" for C > 2), and accuracy / confusion matrix / precision, recall, F1
               (binary for C == 2, micro, macro, weighted) of the argmax (first index on ties).
* f1:          prediction / label vectors with labels only in one of them, non-contiguous and negative
               values, all-zero binary problems -> precision_recall_fscore_support with zero_division=0
               for each average ("error" where sklearn raises).
* retrieval:   similarity matrices with many exact ties and duplicated caption strings; the reference
               orders each row by (similarity descending, index ascending) with a stable argsort and
               takes the 1-based position of the first candidate whose caption string equals the query's
               -> ranks, recall@k (fractions), mean and numpy median rank, image->text and text->image.
* vqa:         synthetic answers with OPEN / CLOSED types (a few spelled "CLOSED " / "open") ->
               accuracy_score and f1_score(average="weighted") overall and per type. The script also
               checks that the paper's own computation (one-hot indicator arrays, zero_division=1) gives
               the same weighted F1.

Usage: python3 tools/gen_metric_fixtures.py [--out DIR]     (seeded; numpy + scikit-learn >= 1.3)
"""
import argparse
import json
import os
import warnings

import numpy as np
import sklearn
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support,
                             roc_auc_score, roc_curve)
from sklearn.preprocessing import label_binarize


def fl(a):
    return [float(x) for x in np.asarray(a).ravel()]


def il(a):
    return [int(x) for x in np.asarray(a).ravel()]


def binary_case(name, scores, labels):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    fpr, tpr, thr = roc_curve(labels, scores)
    assert np.isinf(thr[0])
    return {"name": name, "scores": fl(scores), "labels": il(labels), "auc": roc_auc_score(labels, scores),
            "fpr": fl(fpr), "tpr": fl(tpr), "thresholds": fl(thr[1:])}


def prf(labels, preds, average):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, r, f, _ = precision_recall_fscore_support(labels, preds, average=average, zero_division=0)
        return [float(p), float(r), float(f)]
    except ValueError:
        return "error"


def prf_all(labels, preds):
    return {a: prf(labels, preds, a) for a in ("binary", "micro", "macro", "weighted")}


def probs_rows(rng, n, c, k_total, dup_frac):
    alpha = rng.uniform(0.3, 2.0, size=c)
    rows = []
    for _ in range(n):
        k = rng.multinomial(k_total, rng.dirichlet(alpha))
        rows.append(k)
    rows = np.array(rows)
    ndup = int(dup_frac * n)
    src = rng.integers(0, n, size=ndup)
    dst = rng.choice(n, size=ndup, replace=False)
    rows[dst] = rows[src]
    return rows / k_total


def multiclass_case(rng, name, n, c, k_total, class_p, signal):
    labels = rng.choice(c, size=n, p=class_p)
    labels[:c] = np.arange(c)  # every class present
    probs = probs_rows(rng, n, c, k_total, 0.2)
    # make the scores informative: move some mass towards the true class, keeping rows of k / K
    counts = np.rint(probs * k_total).astype(np.int64)
    for i in range(n):
        if rng.random() < signal:
            take = rng.integers(0, k_total // 2)
            for j in rng.permutation(c):
                moved = min(take, counts[i, j]) if j != labels[i] else 0
                counts[i, j] -= moved
                counts[i, labels[i]] += moved
                take -= moved
    probs = counts / k_total
    assert np.allclose(probs.sum(axis=1), 1)
    pred = probs.argmax(axis=1)
    out = {"name": name, "n": n, "c": c, "probs": fl(probs), "labels": il(labels), "argmax": il(pred)}
    if c == 2:
        out["auc_macro"] = out["auc_weighted"] = out["auc_micro"] = roc_auc_score(labels, probs[:, 1])
        out["auc_hard"] = roc_auc_score(labels, pred)
    else:
        for avg in ("macro", "weighted", "micro"):
            out["auc_" + avg] = roc_auc_score(labels, probs, multi_class="ovr", average=avg)
        out["auc_per_class"] = fl(roc_auc_score(labels, probs, multi_class="ovr", average=None))
        out["auc_hard"] = roc_auc_score(labels, label_binarize(pred, classes=list(range(c))), multi_class="ovr")
    out["accuracy"] = accuracy_score(labels, pred)
    out["confusion"] = il(confusion_matrix(labels, pred, labels=list(range(c))))
    out["prf"] = prf_all(labels, pred)
    return out


def retrieval_ref(sim, query_keys, pool_keys, ks):
    ranks = []
    for q in range(sim.shape[0]):
        order = np.argsort(-sim[q], kind="stable")
        hits = [p for p, j in enumerate(order) if pool_keys[j] == query_keys[q]]
        ranks.append(hits[0] + 1)
    ranks = np.array(ranks)
    return {"ranks": il(ranks), "recall": [float(np.mean(ranks <= k)) for k in ks],
            "mean_rank": float(np.mean(ranks)), "median_rank": float(np.median(ranks))}


def retrieval_case(rng, name, n_img, n_txt, n_unique, levels, ks, t2i):
    vocab = ["caption %02d: finding %d" % (i, rng.integers(0, 1000)) for i in range(n_unique)]
    image_captions = [vocab[i] for i in rng.integers(0, n_unique, size=n_img)]
    if n_txt == n_img:
        texts = list(image_captions)  # the study's pool: the captions of the test images themselves
    else:
        texts = image_captions + [vocab[i] for i in rng.integers(0, n_unique, size=n_txt - n_img)]
        perm = rng.permutation(n_txt)
        texts = [texts[i] for i in perm]
    sim = rng.integers(0, levels, size=(n_img, n_txt)) / 4.0
    out = {"name": name, "rows": n_img, "cols": n_txt, "sim": fl(sim), "image_captions": image_captions,
           "texts": texts, "ks": ks, "i2t": retrieval_ref(sim, image_captions, texts, ks)}
    if t2i:
        out["t2i"] = retrieval_ref(sim.T, texts, image_captions, ks)
    return out


def vqa_case(rng, n):
    closed_answers = ["yes", "no", "left", "right"]
    open_answers = ["liver", "left lung", "ct", "mri", "x-ray", "brain", "kidney", "heart", "2", "3",
                    "axial", "coronal", "pneumonia", "nodule", "colon", "spleen"]
    extra_preds = ["stomach", "unknown"]  # predicted, never the ground truth
    types, gt, pred = [], [], []
    for i in range(n):
        closed = rng.random() < 0.45
        t = "CLOSED" if closed else "OPEN"
        r = rng.random()
        if r < 0.03:
            t = "CLOSED " if closed else "OPEN "
        elif r < 0.06:
            t = t.lower()
        pool = closed_answers if closed else open_answers
        g = pool[rng.integers(0, len(pool))] if not closed or rng.random() < 0.3 else ["yes", "no"][rng.integers(0, 2)]
        if rng.random() < 0.6:
            p = g
        else:
            allp = closed_answers + open_answers + extra_preds
            p = allp[rng.integers(0, len(allp))]
        types.append(t)
        gt.append(g)
        pred.append(p)
    norm = [t.strip().upper() for t in types]
    res = {}
    for key, sel in (("all", None), ("open", "OPEN"), ("closed", "CLOSED")):
        idx = [i for i in range(n) if sel is None or norm[i] == sel]
        g = [gt[i] for i in idx]
        p = [pred[i] for i in idx]
        res[key] = {"count": len(idx), "accuracy": accuracy_score(g, p),
                    "f1": f1_score(g, p, average="weighted", zero_division=0)}
        # the paper's way: one-hot indicator rows over the whole answer list, zero_division=1
        answers = sorted(set(gt) | set(pred))
        oh = lambda xs: np.array([[1 if a == x else 0 for a in answers] for x in xs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f_paper = f1_score(oh(g), oh(p), average="weighted", zero_division=1)
        assert abs(f_paper - res[key]["f1"]) < 1e-12, (key, f_paper, res[key]["f1"])
        assert abs(accuracy_score(oh(p), oh(g)) - res[key]["accuracy"]) < 1e-12
    return {"pred": pred, "gt": gt, "types": types, "ref": res}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "metrics"))
    args = ap.parse_args()
    rng = np.random.default_rng(20240611)

    binary = []
    n = 200
    y = (rng.random(n) < 0.2).astype(int)
    binary.append(binary_case("ties_imbalanced", np.round(rng.random(n) * 0.6 + 0.4 * y, 1), y))
    n = 150
    y = rng.integers(0, 2, size=n)
    binary.append(binary_case("continuous", rng.normal(size=n) + 0.8 * y, y))
    n = 60
    y = (rng.random(n) < 0.5).astype(int)
    binary.append(binary_case("three_levels", rng.choice([0.0, 0.5, 1.0], size=n), y))
    n = 31
    y = (rng.random(n) < 0.7).astype(int)
    binary.append(binary_case("float32", (rng.normal(size=n) + y).astype(np.float32).astype(np.float64), y))
    binary.append(binary_case("perfect", [0.1, 0.2, 0.3, 0.8, 0.9], [0, 0, 0, 1, 1]))
    binary.append(binary_case("inverted", [0.9, 0.8, 0.3, 0.2], [0, 0, 1, 1]))
    binary.append(binary_case("all_tied", [0.5] * 6, [0, 1, 0, 1, 1, 0]))
    binary.append(binary_case("hard_labels", [1, 0, 1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 1, 1, 0]))

    multiclass = [
        multiclass_case(rng, "c2", 120, 2, 20, [0.7, 0.3], 0.5),
        multiclass_case(rng, "c3", 150, 3, 10, [0.5, 0.3, 0.2], 0.5),
        multiclass_case(rng, "c11_imbalanced", 220, 11, 20,
                        np.array([30, 20, 12, 10, 8, 6, 5, 4, 3, 1.5, 0.5]) / 100.0, 0.6),
    ]

    f1_cases = []
    def add_f1(name, preds, labels):
        f1_cases.append({"name": name, "preds": il(preds), "labels": il(labels), "prf": prf_all(labels, preds)})
    n = 90
    add_f1("binary_imbalanced", (rng.random(n) < 0.3).astype(int), (rng.random(n) < 0.2).astype(int))
    add_f1("pred_only_label", rng.integers(0, 5, size=n), rng.integers(0, 4, size=n))
    add_f1("true_only_label", rng.integers(0, 3, size=n), rng.integers(0, 5, size=n))
    add_f1("odd_values", rng.choice([-7, 3, 12, 40], size=50), rng.choice([-7, 3, 12], size=50))
    add_f1("all_zero", [0] * 7, [0] * 7)
    add_f1("all_one", [1] * 5, [1] * 5)
    add_f1("no_positive_predicted", [0] * 6, [0, 1, 0, 1, 0, 0])
    add_f1("two_without_one", [0, 2, 2, 0], [2, 0, 2, 2])
    add_f1("one_and_two", [1, 2, 2, 1, 1], [2, 1, 2, 1, 2])

    retrieval = [
        retrieval_case(rng, "square_dup", 40, 40, 22, 12, [1, 5, 10], True),
        retrieval_case(rng, "pool_larger", 30, 45, 20, 8, [1, 2, 5, 10, 60], False),
    ]

    fixture = {"sklearn_version": sklearn.__version__, "numpy_version": np.__version__, "binary": binary,
               "multiclass": multiclass, "f1": f1_cases, "retrieval": retrieval, "vqa": vqa_case(rng, 300)}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "metrics.json")
    with open(path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
