#!/usr/bin/env bash
# Full-size parity check of the four dual encoders: random full-size models built and saved in their original
# checkpoint formats by the reference implementations (tools/gen_model_fixtures.py --full), converted with
# `mc convert`, embedded with `mc embed --pixels/--tokens`, and compared with the references.
#
#   bash tools/parity_full.sh DIR [MC]     DIR: a scratch folder (about 2.5 GB); MC: the mc binary (build/tools/mc)
#
# Needs python3 with torch, open_clip_torch, timm, transformers, torchvision, safetensors, and the CLIP BPE
# file (default ../shared/data/tokenizers/clip/bpe_simple_vocab_16e6.txt.gz; set BPE=... to override).
# Prints the max relative error (max |mc - ref| / max |ref|) of each embedding.
set -euo pipefail
dir=${1:?usage: bash tools/parity_full.sh DIR [path/to/mc]}
repo=$(cd "$(dirname "$0")/.." && pwd)
mc=${2:-$repo/build/tools/mc}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
bpe_opt=()
[ -n "${BPE:-}" ] && bpe_opt=(--bpe "$BPE")
if [ ! -f "$dir/cxr.npz" ]; then
  python3 "$repo/tools/gen_model_fixtures.py" --full "$dir" "${bpe_opt[@]}"
fi
for m in clip biomedclip pmc cxr; do
  case $m in
    clip) ckpt=clip.pt vocab=bpe.txt.gz ;;
    biomedclip) ckpt=biomedclip.bin vocab=vocab-biomedclip.txt ;;
    pmc) ckpt=pmc.pt vocab=vocab-pmc.txt ;;
    cxr) ckpt=cxr.tar vocab=vocab-cxr.txt ;;
  esac
  "$mc" convert "$dir/$ckpt" --card "$dir/$m.json" --tokenizer "$dir/$vocab" -o "$dir/$m.safetensors" | head -1
  "$mc" embed --model "$dir/$m.safetensors" --pixels "$dir/$m.npz" --tokens "$dir/$m.npz" \
    -o "$dir/$m.embeds.safetensors" >/dev/null
  python3 - "$dir" "$m" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
d, m = sys.argv[1:]
got, ref = load_file(f"{d}/{m}.embeds.safetensors"), np.load(f"{d}/{m}.npz")
for k in ("image_embeds", "text_embeds"):
    err = np.abs(got[k].astype(np.float64) - ref[k]).max() / np.abs(ref[k]).max()
    print(f"{m:10s} {k:12s} {str(ref[k].shape):10s} max relative error {err:.3e}")
PY
done
