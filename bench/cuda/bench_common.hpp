// bench/cuda/bench_common.hpp — what the CUDA benchmarks share: timing with CUDA events on mc's stream,
// the card's peak bandwidth and tensor throughput, the one-line result format, and a CPU-vs-CUDA check.
//
// Result lines (parsed by bench/gpu.sh, printed the same way by bench/torch_*.py):
//   RESULT <name> <ms per iteration> ms <throughput> <unit> <% of peak>% check=<ok|FAIL|-> mem=<peak GiB>
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "mc/cuda/runtime.hpp"
#include "mc/mc.hpp"

namespace mc::cuda {
// The stream mc queues all device work on (defined in kernels/, declared in kernels/common.cuh).
cudaStream_t stream();
}  // namespace mc::cuda

namespace bench {

using namespace mc;

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

// ---- the card ----
struct Peaks {
  std::string name;
  double dram_gbs = 0;     // GB/s
  double bf16_tflops = 0;  // dense tensor-core
  double tf32_tflops = 0;  // dense tensor-core
  double f32_tflops = 0;   // CUDA cores (FMA)
};

// Bandwidth from the memory clock and bus width; tensor throughput from a table of the cards mc targets,
// or estimated from the SM count and clock for other Hopper / Ampere parts.
inline Peaks peaks() {
  Peaks p;
  cudaDeviceProp prop{};
  cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  p.name = prop.name;
  int mem_khz = 0, bus_bits = 0, sm_khz = 0;
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
  cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, 0);
  p.dram_gbs = 2.0 * double(mem_khz) * 1e3 * double(bus_bits) / 8.0 / 1e9;
  auto has = [&](const char* s) { return p.name.find(s) != std::string::npos; };
  if (has("H200")) {
    p.bf16_tflops = 989;
    p.tf32_tflops = 494;
    p.f32_tflops = 67;
    if (p.dram_gbs < 1000) p.dram_gbs = 4800;
  } else if (has("H100") && (has("PCIe") || has("PCI"))) {
    p.bf16_tflops = 756;
    p.tf32_tflops = 378;
    p.f32_tflops = 51;
    if (p.dram_gbs < 1000) p.dram_gbs = 2000;
  } else if (has("H100")) {  // SXM (and NVL, close enough)
    p.bf16_tflops = 989;
    p.tf32_tflops = 494;
    p.f32_tflops = 67;
    if (p.dram_gbs < 1000) p.dram_gbs = 3350;
  } else {
    // Dense bf16: 1024 FMA per SM per clock on sm_80, 2048 on sm_90; f32: 128 FMA per SM per clock.
    const double clk = double(sm_khz) * 1e3, sms = prop.multiProcessorCount;
    const double bf16_fma = prop.major >= 9 ? 2048 : 1024;
    p.bf16_tflops = 2 * bf16_fma * sms * clk / 1e12;
    p.tf32_tflops = p.bf16_tflops / 2;
    p.f32_tflops = 2 * 128 * sms * clk / 1e12;
  }
  return p;
}

// ---- timing ----
// Mean milliseconds per call of f over `iters` calls, after `warm` calls, measured by two CUDA events on
// mc's stream (the host only queues work; launch overhead that stalls the queue is included).
inline double time_ms(const std::function<void()>& f, int warm, int iters) {
  for (int i = 0; i < warm; ++i) f();
  cuda::synchronize();
  cudaEvent_t a, b;
  cuda_ok(cudaEventCreate(&a), "cudaEventCreate");
  cuda_ok(cudaEventCreate(&b), "cudaEventCreate");
  cuda_ok(cudaEventRecord(a, cuda::stream()), "cudaEventRecord");
  for (int i = 0; i < iters; ++i) f();
  cuda_ok(cudaEventRecord(b, cuda::stream()), "cudaEventRecord");
  cuda_ok(cudaEventSynchronize(b), "cudaEventSynchronize");
  float ms = 0;
  cuda_ok(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cuda::synchronize();  // surfaces asynchronous kernel faults here rather than in the next case
  return double(ms) / iters;
}

// Iterations for about `target_ms` of work, from one timed call (at least 3, at most 100).
inline int iters_for(const std::function<void()>& f, double target_ms = 100) {
  const double once = time_ms(f, 1, 1);
  return int(std::clamp(target_ms / std::max(once, 1e-3), 3.0, 100.0));
}

inline double peak_gib() { return double(cuda::memory_stats().peak_bytes) / double(1ull << 30); }

inline void print_result(const std::string& name, double ms, double value, const char* unit, double pct,
                         const std::string& check) {
  std::printf("RESULT %-34s %10.4f ms %10.2f %-8s %6.1f%% check=%s mem=%.2fGiB\n", name.c_str(), ms, value, unit,
              pct, check.c_str(), peak_gib());
  std::fflush(stdout);
}

// ---- checks ----
// Normwise-floored relative error of `got` against the CPU result `ref`: max |g - r| / (|r| + rms(r)).
inline double rel_err(const Tensor& ref, const Tensor& got) {
  std::vector<double> r = ref.to_vector<double>(), g = got.to_vector<double>();
  if (r.size() != g.size()) return INFINITY;
  double ss = 0;
  for (double v : r) ss += std::isfinite(v) ? v * v : 0;
  const double rms = r.empty() ? 0 : std::sqrt(ss / double(r.size()));
  double worst = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (std::isnan(r[i]) != std::isnan(g[i])) return INFINITY;
    if (std::isnan(r[i])) continue;
    const double d = std::fabs(r[i] - g[i]), den = std::fabs(r[i]) + rms;
    worst = std::max(worst, den > 0 ? d / den : d);
  }
  return worst;
}

// Runs f on CPU copies and on CUDA copies of `inputs`; "ok" when every output agrees within tol.
inline std::string check(const std::vector<Tensor>& inputs,
                         const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f, double tol) {
  try {
    std::vector<Tensor> hi, gi;
    for (const Tensor& t : inputs) {
      hi.push_back(t);
      gi.push_back(t.to(Device::cuda()));
    }
    std::vector<Tensor> ho = f(hi), go = f(gi);
    double worst = 0;
    for (size_t i = 0; i < ho.size(); ++i) worst = std::max(worst, rel_err(ho[i], go[i]));
    if (worst <= tol) return "ok";
    char buf[64];
    std::snprintf(buf, sizeof buf, "FAIL(err=%.3g)", worst);
    return buf;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "check threw: %s\n", e.what());
    return "FAIL(threw)";
  }
}

inline Tensor randn_h(const Shape& s, DType dt = DType::F32, double std = 1.0, uint64_t seed = 1) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  normal_(t, 0, std, &g);
  return t.to(dt);
}
// Random data made on the device (the CUDA random kernel), for the big timed inputs.
inline Tensor randn_d(const Shape& s, DType dt = DType::F32, double std = 1.0, uint64_t seed = 2) {
  Generator g(seed);
  Tensor t = Tensor::empty(s, dt, Device::cuda());
  normal_(t, 0, std, &g);
  return t;
}

// Whether a case name is selected by the command line: no names = all; a name selects itself, any case it
// is a prefix of, and any case of a group with that name.
inline bool selected(const std::vector<std::string>& want, const std::string& name, const std::string& group) {
  if (want.empty()) return true;
  for (const std::string& w : want)
    if (w == group || name.rfind(w, 0) == 0) return true;
  return false;
}

}  // namespace bench
