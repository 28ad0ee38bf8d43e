#!/usr/bin/env bash
# Builds mc and runs the test suite with ctest.
#   bash tools/test.sh              Release build in build/
#   bash tools/test.sh --sanitize   AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/ (tests only;
#                                   CPU only: the CUDA kernels are not built there)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
  export MC_BUILD_DIR=build-asan MC_BUILD_TYPE=Debug
  flags="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  bash tools/build.sh -DMC_CUDA=OFF -DMC_BUILD_BENCH=OFF -DMC_BUILD_TOOLS=OFF -DCMAKE_CXX_FLAGS_DEBUG="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  export MC_BUILD_DIR=build
  bash tools/build.sh
fi
ctest --test-dir "$MC_BUILD_DIR" --output-on-failure -j 2
