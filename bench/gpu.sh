#!/usr/bin/env bash
# bench/gpu.sh — everything mc's CUDA backend needs on a GPU machine, in one run from the repository root:
# configure + build (sm_90), the CUDA tests (ctest), compute-sanitizer on a small subset, mc's kernel and
# training-step benchmarks, the same workloads in PyTorch, and a side-by-side table at the end.
#
#   bash tools/prepare_gpu_deps.sh        once, on a machine with stb + Catch2 2.13 (fills .deps/include)
#   bash bench/gpu.sh [LOGDIR]            on the GPU machine; logs go to LOGDIR (default $OUT, else gpu-logs)
#
# Environment (all optional):
#   GPU_STAGES="build test sanitize bench torch"   the stages to run, in this order (a rerun can skip some;
#                                                  "" runs none and only prints the summary of LOGDIR)
#   GPU_BUILD_DIR=build-gpu  GPU_JOBS=16           build folder and parallel jobs
#   GPU_TEST_REGEX=^test_cuda_                     which ctest entries (label "cuda") to run; GPU_TEST_JOBS=4
#   GPU_SANITIZE_TOOLS="memcheck racecheck"        compute-sanitizer tools (also: initcheck synccheck)
#   GPU_SANITIZE_FILTER="[sanitize]"               Catch2 filter of the tests run under the sanitizer
#   GPU_BENCH="..."  GPU_STEP="..."                case names / prefixes / groups for the kernel and step
#                                                  benchmarks (mc and PyTorch alike); empty = all
#   TORCH_COMPILE=0                                skip the torch.compile step
#   T_BUILD=200 T_TEST=80 T_SANITIZE=50 T_BENCH=90 T_TORCH=90    per-stage limits in seconds (8.5 min in all;
#                                                  a stage that ends early leaves its time unused)
# A stage that fails or times out does not stop the later ones; the summary says what happened to each.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=${1:-${OUT:-gpu-logs}}
mkdir -p "$LOG"
LOG=$(cd "$LOG" && pwd)
STAGES=${GPU_STAGES-build test sanitize bench torch}
B=${GPU_BUILD_DIR:-build-gpu}
JOBS=${GPU_JOBS:-16}
export PATH=/usr/local/cuda/bin:$PATH
[ -x /usr/local/cuda/bin/nvcc ] && export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
: > "$LOG/stages.txt"

has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

# run_step NAME LIMIT CMD...: runs CMD under `timeout`, output to $LOG/NAME.log; records rc and seconds.
run_step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc
  echo "== $name (limit ${limit}s): $*" | tee "$LOG/$name.log"
  timeout -k 10 "$limit" "$@" >> "$LOG/$name.log" 2>&1
  rc=$?
  local dt=$((SECONDS - t0)) what=ok
  [ $rc -ne 0 ] && what="FAILED rc=$rc"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="TIMED OUT after ${limit}s"
  printf '%-26s %-24s %4ds\n' "$name" "$what" "$dt" | tee -a "$LOG/stages.txt"
  if [ $rc -ne 0 ]; then tail -n 25 "$LOG/$name.log" | sed 's/^/    | /'; fi
  return $rc
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null) ($(git status --porcelain 2>/dev/null | wc -l) changed files)"
  nvidia-smi -L 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -n 2
  cmake --version 2>&1 | head -n 1
  g++ --version 2>&1 | head -n 1
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1
} > "$LOG/env.txt"
cat "$LOG/env.txt"

# ---- build ----
if has_stage build; then
  if [ ! -f .deps/include/catch2/catch.hpp ] || [ ! -f .deps/include/stb/stb_image.h ]; then
    echo "bench/gpu.sh: .deps/include lacks catch2/catch.hpp or stb/stb_image.h; trying tools/prepare_gpu_deps.sh"
    bash tools/prepare_gpu_deps.sh || echo "bench/gpu.sh: no Catch2 2.13 / stb here: the build will fail"
  fi
  gen=()
  if [ ! -f "$B/CMakeCache.txt" ] && command -v ninja > /dev/null; then gen=(-G Ninja); fi
  t_build=${T_BUILD:-200}
  t0=$SECONDS
  run_step configure 90 cmake -S . -B "$B" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DMC_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DMC_EXTRA_INCLUDE="$ROOT/.deps/include" -DMC_BUILD_TOOLS=OFF \
    -DMC_BUILD_TESTS=ON -DMC_BUILD_BENCH=ON
  left=$((t_build - (SECONDS - t0)))
  run_step build $((left > 30 ? left : 30)) cmake --build "$B" -j "$JOBS" --target mc_cuda_tests bench_kernels bench_step
fi
TESTS_BIN=$B/tests/mc_cuda_tests

# ---- CUDA tests ----
if has_stage test; then
  run_step test "${T_TEST:-80}" ctest --test-dir "$B" -L cuda -R "${GPU_TEST_REGEX:-^test_cuda_}" \
    -V -j "${GPU_TEST_JOBS:-4}" --timeout 600 --output-junit "$LOG/ctest.xml"
fi

# ---- compute-sanitizer on the sweep subset ----
if has_stage sanitize; then
  tools=${GPU_SANITIZE_TOOLS:-memcheck racecheck}
  n=$(echo $tools | wc -w)
  per=$(( ${T_SANITIZE:-50} / (n > 0 ? n : 1) ))
  for tool in $tools; do
    extra=()
    [ "$tool" = racecheck ] && extra=(--racecheck-report hazard)
    run_step "sanitize-$tool" "$per" env MC_CUDA_TEST_POISON_MB=1 MC_CUDA_TEST_MARGINS=0 \
      compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 9 --print-limit 30 \
      "$TESTS_BIN" "${GPU_SANITIZE_FILTER:-[sanitize]}"
  done
fi

# ---- benchmarks: mc, then PyTorch ----
read -r -a BENCH_ARGS <<< "${GPU_BENCH:-}"
read -r -a STEP_ARGS <<< "${GPU_STEP:-}"
if has_stage bench; then
  tb=${T_BENCH:-90}
  run_step bench-kernels $((tb * 2 / 3)) "$B/bench/bench_kernels" "${BENCH_ARGS[@]}"
  run_step bench-step $((tb / 3)) "$B/bench/bench_step" "${STEP_ARGS[@]}"
fi
if has_stage torch; then
  tt=${T_TORCH:-90}
  # torch.compile runs last in torch_step.py: if the limit cuts it, the eager results are already out.
  run_step torch-kernels $((tt * 9 / 20)) python3 bench/torch_kernels.py "${BENCH_ARGS[@]}"
  run_step torch-step $((tt * 11 / 20)) python3 bench/torch_step.py "${STEP_ARGS[@]}"
fi

# ---- summary ----
{
  echo
  echo "================ summary ($LOG) ================"
  echo "-- stages"
  cat "$LOG/stages.txt"
  if [ -f "$LOG/test.log" ]; then
    echo "-- tests"
    grep -E "tests passed|tests failed|SKIPPED" "$LOG/test.log" | sed 's/^[0-9]*: //' | sort -u | head -n 20
    grep -A40 "The following tests" "$LOG/test.log" | grep -E "^ +[0-9]+ - " | head -n 20
    echo "-- closest comparisons (error / allowed error; > 1 failed)"
    grep -h "MARGIN " "$LOG/test.log" | sed 's/^.*MARGIN //' | sort -gr -k1,1 | head -n 15
  fi
  for f in "$LOG"/sanitize-*.log; do
    [ -f "$f" ] || continue
    echo "-- $(basename "$f" .log): $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|All tests passed|test cases" "$f" | tr '\n' ' ')"
  done
  echo "-- benchmarks (speedup = torch ms / mc ms; > 1: mc faster)"
  python3 - "$LOG" << 'EOF'
import math, os, re, sys
log = sys.argv[1]
def read(files):
    r = {}
    for f in files:
        p = os.path.join(log, f)
        if not os.path.exists(p):
            continue
        for line in open(p, errors="replace"):
            if not line.startswith("RESULT "):
                continue
            t = line.split()
            try:
                r[t[1]] = dict(ms=float(t[2]), val=float(t[4]), unit=t[5], pct=t[6],
                               check=next((x[6:] for x in t if x.startswith("check=")), "-"),
                               mem=next((x[4:] for x in t if x.startswith("mem=")), "-"))
            except (IndexError, ValueError):
                pass
    return r
mc = read(["bench-kernels.log", "bench-step.log"])
th = read(["torch-kernels.log", "torch-step.log"])
names = list(mc) + [n for n in th if n not in mc]
if not names:
    print("  (no RESULT lines)")
fmt = "{:<36s} {:>10s} {:>10s} {:>8s} {:>12s} {:>8s} {:>7s} {:>9s} {:>9s}"
print(fmt.format("case", "mc ms", "torch ms", "speedup", "mc thruput", "unit", "mc %pk", "mc mem", "check"))
for n in names:
    a, b = mc.get(n), th.get(n)
    ms = lambda d: "-" if d is None or math.isnan(d["ms"]) else f"{d['ms']:.3f}"
    sp = "-"
    if a and b and a["ms"] > 0 and not math.isnan(a["ms"]) and not math.isnan(b["ms"]):
        sp = f"{b['ms'] / a['ms']:.2f}x"
    print(fmt.format(n, ms(a), ms(b), sp, f"{a['val']:.1f}" if a and not math.isnan(a["val"]) else "-",
                     a["unit"] if a else (b["unit"] if b else "-"), a["pct"] if a else "-",
                     a["mem"] if a else "-", a["check"] if a else "-"))
EOF
} 2>&1 | tee "$LOG/summary.txt"
