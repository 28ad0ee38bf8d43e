#!/usr/bin/env bash
# Copies the headers a GPU build machine may lack into .deps/include (git-ignored), run on a machine that
# has them (Debian: libstb-dev, catch2 2.13): stb, which some images do not ship, and Catch2 2.13's single
# header, which must come before an image's Catch2 3 (bench/gpu.sh passes -DMC_EXTRA_INCLUDE=.deps/include).
# The folder then travels with the working tree to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-/usr/include}
dst=.deps/include
mkdir -p "$dst"
if [ ! -f "$src/stb/stb_image.h" ]; then
  echo "prepare_gpu_deps: $src/stb/stb_image.h not found (install libstb-dev)" >&2
  exit 1
fi
if [ ! -f "$src/catch2/catch.hpp" ] || ! grep -q "Catch v2\." "$src/catch2/catch.hpp"; then
  echo "prepare_gpu_deps: $src/catch2/catch.hpp is not Catch2 2.x (install Debian's catch2 2.13)" >&2
  exit 1
fi
rm -rf "$dst/stb" "$dst/catch2"
cp -r "$src/stb" "$dst/"
cp -r "$src/catch2" "$dst/"
echo "prepare_gpu_deps: $(du -sh .deps | cut -f1) in .deps/include ($(grep -m1 -o 'Catch v2\.[0-9.]*' "$dst/catch2/catch.hpp"), stb)"
