// bench_gemm — throughput of mc::cpu::gemm (f32) on square and transformer-shaped problems.
//
// Usage: bench_gemm            run the whole table
//        bench_gemm N          one square N x N x N problem
//        bench_gemm M N K      one M x N x K problem (row-major A, B, C)
// Each case is warmed up, then timed several times; the table shows the best and the median run.
// Thread count: MC_NUM_THREADS if set, else all hardware threads.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "mc/core/parallel.hpp"
#include "mc/cpu/gemm.hpp"

namespace {

struct Case {
  std::string name;
  int64_t M, N, K;
  bool transA = false;  // A stored K x M (weight-gradient shape: C = A^T * B)
  bool transB = false;  // B stored N x K (linear layer: y = x * W^T)
  int64_t batch = 1;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void run_case(const Case& c) {
  const int64_t M = c.M, N = c.N, K = c.K, nb = c.batch;
  std::vector<float> A(size_t(M * K * nb)), B(size_t(K * N * nb)), C(size_t(M * N * nb));
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (auto& x : A) x = dist(rng);
  for (auto& x : B) x = dist(rng);
  const int64_t rsa = c.transA ? 1 : K, csa = c.transA ? M : 1;
  const int64_t rsb = c.transB ? 1 : N, csb = c.transB ? K : 1;
  auto call = [&] {
    if (nb == 1)
      mc::cpu::gemm(M, N, K, 1.f, A.data(), rsa, csa, B.data(), rsb, csb, 0.f, C.data(), N, 1);
    else
      mc::cpu::gemm_batched<float>(nb, M, N, K, 1.f, A.data(), M * K, rsa, csa, B.data(), K * N, rsb, csb, 0.f,
                                   C.data(), M * N, N, 1);
  };
  const double flop = 2.0 * double(M) * double(N) * double(K) * double(nb);
  // Warm up, then choose a repetition count so that each case takes ~1 s at most.
  double t0 = now_s();
  call();
  double once = now_s() - t0;
  call();
  int reps = int(std::clamp(0.6 / std::max(once, 1e-6), 5.0, 200.0));
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    double t = now_s();
    call();
    times.push_back(now_s() - t);
  }
  std::sort(times.begin(), times.end());
  const double best = times.front(), med = times[times.size() / 2];
  std::printf("%-34s %9.3f %9.3f %9.1f %9.1f %5d\n", c.name.c_str(), best * 1e3, med * 1e3, flop / best * 1e-9,
              flop / med * 1e-9, reps);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Case> cases;
  if (argc == 2) {
    int64_t n = std::atoll(argv[1]);
    cases.push_back({"square " + std::to_string(n), n, n, n});
  } else if (argc == 4) {
    int64_t m = std::atoll(argv[1]), n = std::atoll(argv[2]), k = std::atoll(argv[3]);
    cases.push_back({std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k), m, n, k});
  } else {
    for (int64_t n : {256, 512, 1024, 2048, 4096}) cases.push_back({"square " + std::to_string(n), n, n, n});
    cases.push_back({"12800x768x768 (qkv/proj)", 12800, 768, 768});
    cases.push_back({"12800x768x768 B^T (x*W^T)", 12800, 768, 768, false, true});
    cases.push_back({"12800x3072x768 (mlp up)", 12800, 3072, 768});
    cases.push_back({"12800x768x3072 (mlp down)", 12800, 768, 3072});
    cases.push_back({"768x768x12800 A^T (weight grad)", 768, 768, 12800, true, false});
    cases.push_back({"1x3072x768 (M=1, matrix-vector)", 1, 3072, 768});
    cases.push_back({"50x50x64 (one head)", 50, 50, 64});
    cases.push_back({"batched 256 x 50x50x64 (heads)", 50, 50, 64, false, false, 256});
    cases.push_back({"batched 256 x 50x64x50 (att*V)", 50, 64, 50, false, false, 256});
  }
  std::printf("mc::cpu::gemm f32, threads: %d\n", mc::thread_pool().size());
  std::printf("%-34s %9s %9s %9s %9s %5s\n", "shape (MxNxK)", "best ms", "med ms", "best GF/s", "med GF/s", "runs");
  for (const auto& c : cases) run_case(c);
  return 0;
}
