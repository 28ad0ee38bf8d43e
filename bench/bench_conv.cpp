// bench_conv — throughput of the CPU conv2d kernels (f32) on the convolutions of a ResNet-50 at 224 px.
//
// Usage: bench_conv [batch]       (default batch 8)
// Shapes are printed as channels@side (square maps). For each layer shape: forward, backward-input and backward-weight, each warmed up and then timed a few
// times (best run shown), with GFLOP/s counting 2 * N * O * OH * OW * (C / groups) * kh * kw per pass.
// A square GEMM is timed first as the machine's reference. Thread count: MC_NUM_THREADS if set, else all
// hardware threads. Timings are wall-clock and sensitive to other load on the machine.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "mc/mc.hpp"

namespace {

struct Layer {
  std::string name;
  int64_t C, H, O, k, stride, pad;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best time in seconds over a few runs after one warm-up run; about `budget` seconds per call site.
double best_time(const std::function<void()>& f, double budget = 0.4) {
  double t0 = now_s();
  f();
  const double once = std::max(now_s() - t0, 1e-6);
  const int reps = int(std::clamp(budget / once, 2.0, 20.0));
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    t0 = now_s();
    f();
    best = std::min(best, now_s() - t0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::atoll(argv[1]) : 8;
  if (N <= 0) {
    std::fprintf(stderr, "usage: bench_conv [batch > 0]\n");
    return 1;
  }
  mc::manual_seed(0);
  std::printf("threads: %d, batch: %lld\n", mc::thread_pool().size(), static_cast<long long>(N));
  {
    const int64_t n = 1024;
    std::vector<float> a(size_t(n * n), 0.5f), b(size_t(n * n), 0.25f), c(size_t(n * n));
    const double t = best_time([&] { mc::cpu::gemm(n, n, n, 1.f, a.data(), n, 1, b.data(), n, 1, 0.f, c.data(), n, 1); });
    std::printf("reference gemm 1024^3: %.2f ms, %.1f GFLOP/s\n\n", t * 1e3, 2.0 * double(n * n * n) / t * 1e-9);
  }

  const std::vector<Layer> layers = {
      {"stem 7x7/2", 3, 224, 64, 7, 2, 3},
      {"l1 1x1 64->64", 64, 56, 64, 1, 1, 0},
      {"l1 3x3 64", 64, 56, 64, 3, 1, 1},
      {"l1 1x1 64->256", 64, 56, 256, 1, 1, 0},
      {"l1 1x1 256->64", 256, 56, 64, 1, 1, 0},
      {"l2 3x3/2 128", 128, 56, 128, 3, 2, 1},
      {"l2 1x1/2 256->512", 256, 56, 512, 1, 2, 0},
      {"l2 3x3 128", 128, 28, 128, 3, 1, 1},
      {"l2 1x1 512->128", 512, 28, 128, 1, 1, 0},
      {"l2 1x1 128->512", 128, 28, 512, 1, 1, 0},
      {"l3 3x3 256", 256, 14, 256, 3, 1, 1},
      {"l3 1x1 1024->256", 1024, 14, 256, 1, 1, 0},
      {"l3 1x1 256->1024", 256, 14, 1024, 1, 1, 0},
      {"l4 3x3/2 512", 512, 14, 512, 3, 2, 1},
      {"l4 3x3 512", 512, 7, 512, 3, 1, 1},
      {"l4 1x1 2048->512", 2048, 7, 512, 1, 1, 0},
      {"l4 1x1 512->2048", 512, 7, 2048, 1, 1, 0},
  };

  std::printf("%-20s %-22s %7s | %9s %7s | %9s %7s | %9s %7s\n", "layer", "input -> output", "GFLOP", "fwd ms",
              "GF/s", "bwd-in ms", "GF/s", "bwd-w ms", "GF/s");
  double tot_flop = 0, tot_t[3] = {0, 0, 0};
  for (const Layer& l : layers) {
    mc::Conv2dParams p;
    p.stride[0] = p.stride[1] = l.stride;
    p.padding[0] = p.padding[1] = l.pad;
    const int64_t OH = (l.H + 2 * l.pad - l.k) / l.stride + 1;
    mc::Tensor x = mc::randn({N, l.C, l.H, l.H}), w = mc::randn({l.O, l.C, l.k, l.k});
    mc::Tensor y = mc::empty({N, l.O, OH, OH}), gy = mc::randn({N, l.O, OH, OH});
    mc::Tensor gx = mc::empty(x.shape()), gw = mc::empty(w.shape());
    const double flop = 2.0 * double(N * l.O * OH * OH) * double(l.C * l.k * l.k);
    const double tf = best_time([&] { mc::cpu::conv2d(y, x, w, mc::Tensor(), p); });
    const double ti = best_time([&] { mc::cpu::conv2d_backward_input(gx, gy, w, p); });
    const double tw = best_time([&] { mc::cpu::conv2d_backward_weight(gw, gy, x, p); });
    char shapes[64];
    std::snprintf(shapes, sizeof shapes, "%lld@%lld -> %lld@%lld", static_cast<long long>(l.C),
                  static_cast<long long>(l.H), static_cast<long long>(l.O), static_cast<long long>(OH));
    std::printf("%-20s %-22s %7.2f | %9.2f %7.1f | %9.2f %7.1f | %9.2f %7.1f\n", l.name.c_str(), shapes, flop * 1e-9,
                tf * 1e3, flop / tf * 1e-9, ti * 1e3, flop / ti * 1e-9, tw * 1e3, flop / tw * 1e-9);
    std::fflush(stdout);
    tot_flop += flop;
    tot_t[0] += tf;
    tot_t[1] += ti;
    tot_t[2] += tw;
  }
  std::printf("%-20s %-22s %7.2f | %9.2f %7.1f | %9.2f %7.1f | %9.2f %7.1f\n", "total", "", tot_flop * 1e-9,
              tot_t[0] * 1e3, tot_flop / tot_t[0] * 1e-9, tot_t[1] * 1e3, tot_flop / tot_t[1] * 1e-9, tot_t[2] * 1e3,
              tot_flop / tot_t[2] * 1e-9);

  // The pools of the same network, for scale (memory-bound; ms only).
  {
    mc::Tensor x = mc::randn({N, 64, 112, 112});
    mc::Pool2dParams mp;
    mp.kernel[0] = mp.kernel[1] = 3;
    mp.stride[0] = mp.stride[1] = 2;
    mp.padding[0] = mp.padding[1] = 1;
    mc::Tensor y = mc::empty({N, 64, 56, 56}), idx = mc::empty({N, 64, 56, 56}, mc::DType::I64);
    mc::Tensor gx = mc::empty(x.shape()), gy = mc::randn(y.shape());
    const double tf = best_time([&] { mc::cpu::max_pool2d(y, idx, x, mp); });
    const double tb = best_time([&] { mc::cpu::max_pool2d_backward(gx, gy, idx); });
    std::printf("\nmax_pool2d 3x3/2 64@112 -> 64@56: fwd %.2f ms, bwd %.2f ms\n", tf * 1e3, tb * 1e3);
    mc::Tensor f = mc::randn({N, 2048, 7, 7}), fy = mc::empty({N, 2048, 1, 1}), gf = mc::empty(f.shape());
    const double af = best_time([&] { mc::cpu::adaptive_avg_pool2d(fy, f); });
    const double ab = best_time([&] { mc::cpu::adaptive_avg_pool2d_backward(gf, fy); });
    std::printf("adaptive_avg_pool2d 2048@7 -> 2048@1: fwd %.2f ms, bwd %.2f ms\n", af * 1e3, ab * 1e3);
  }
  return 0;
}
