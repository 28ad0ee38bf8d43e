// The Catch2 runner of the CUDA tests. Without a usable GPU it prints why and exits with 77, which ctest
// reports as "Skipped" (SKIP_RETURN_CODE), never as passed. At the end it lists the comparisons that came
// closest to their tolerance (MC_CUDA_TEST_MARGINS=N sets how many; 0 turns the list off).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <utility>
#include <vector>

#include "cuda_test.hpp"

int main(int argc, char** argv) {
  if (!mc::cuda::available()) {
    std::printf("SKIPPED: no CUDA device (%s)\n", mc::cuda::device_name(0));
    return 77;
  }
  std::printf("mc CUDA tests on %s\n", mc::cuda::device_name(0));
  std::fflush(stdout);
  mc::cuda::set_tf32(false);  // f32 tolerances assume full f32 GEMMs; TF32 cases turn it on themselves
  const int rc = Catch::Session().run(argc, argv);

  const char* env = std::getenv("MC_CUDA_TEST_MARGINS");
  const int show = env ? std::atoi(env) : 12;
  if (show > 0 && !mct::margins().empty()) {
    std::vector<std::pair<double, std::string>> v;
    for (auto& [what, m] : mct::margins()) v.emplace_back(m, what);
    std::sort(v.rbegin(), v.rend());
    std::printf("closest comparisons (error / allowed error; > 1 failed):\n");
    for (int i = 0; i < show && i < int(v.size()); ++i)
      std::printf("MARGIN %10.3g  %s\n", v[size_t(i)].first, v[size_t(i)].second.c_str());
    const mc::AllocatorStats s = mc::cuda::memory_stats(0);
    std::printf("cuda allocator: peak %.1f MiB, cached %.1f MiB, %lld allocations\n", double(s.peak_bytes) / 1048576.0,
                double(s.cached_bytes) / 1048576.0, static_cast<long long>(s.allocations));
  }
  return rc;
}
