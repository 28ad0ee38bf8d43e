#!/usr/bin/env bash
# Installs what the build needs (Debian packages, when run as root and missing), then configures and builds
# mc in build/ (Release). Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(cmake g++ make catch2 nlohmann-json3-dev libstb-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "mc: please install: ${missing[*]}" >&2
    exit 1
  fi
fi
build=${MC_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=${MC_BUILD_TYPE:-Release} "$@"
cmake --build "$build" -j "$(nproc)"
