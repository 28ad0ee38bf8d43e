// mc/core/random.hpp — counter-based random numbers (Philox4x32-10).
//
// A draw of n numbers from a Generator uses key = seed and, for element i, the counter
// (i / 4 as 64 bits, offset as 64 bits); the generator's offset advances by one per draw. Element i takes
// word i % 4 of its block. Any backend computes element i independently of the others, so CPU and CUDA
// produce the same init and the same dropout masks for one seed.
//   uniform: (word >> 8) * 2^-24, in [0, 1)
//   normal:  Box-Muller on words (0,1) and (2,3) of the block: even i takes the cosine, odd i the sine.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

namespace mc {

#if defined(__CUDACC__)
#define MC_HD __host__ __device__
#else
#define MC_HD
#endif

MC_HD inline void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = uint64_t(0xD2511F53u) * c0, p1 = uint64_t(0xCD9E8D57u) * c2;
  uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0), hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
  uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
  c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
}

// Philox4x32 with 10 rounds; fills out[4].
MC_HD inline void philox4x32(uint64_t seed, uint64_t block, uint64_t offset, uint32_t out[4]) {
  uint32_t c0 = uint32_t(block), c1 = uint32_t(block >> 32), c2 = uint32_t(offset), c3 = uint32_t(offset >> 32);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

MC_HD inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  uint32_t w[4];
  philox4x32(seed, i >> 2, offset, w);
  return float(w[i & 3] >> 8) * (1.0f / 16777216.0f);
}

MC_HD inline float philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
  uint32_t w[4];
  philox4x32(seed, i >> 2, offset, w);
  unsigned pair = unsigned(i & 2);
  // u1 in (0, 1] so the log is finite.
  float u1 = (float(w[pair] >> 8) + 1.0f) * (1.0f / 16777216.0f);
  float u2 = float(w[pair + 1] >> 8) * (1.0f / 16777216.0f);
  float r = sqrtf(-2.0f * logf(u1)), t = 6.283185307179586f * u2;
  return (i & 1) ? r * sinf(t) : r * cosf(t);
}

// A seed and a draw counter. Not thread-safe; use one per thread or guard it.
struct Generator {
  uint64_t seed = 8464;
  uint64_t offset = 0;
  explicit Generator(uint64_t s = 8464) : seed(s) {}
  // Reserves one draw: returns its offset.
  uint64_t next_draw() { return offset++; }
};

// The process-wide default generator (mc::manual_seed sets it).
inline Generator& default_generator() {
  static Generator g;
  return g;
}
inline void manual_seed(uint64_t seed) { default_generator() = Generator(seed); }

}  // namespace mc
