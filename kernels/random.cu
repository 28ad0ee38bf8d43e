// kernels/random.cu — random fills with the CPU's Philox stream (mc/core/random.hpp).
//
// Element i (row-major over out's shape) gets word i % 4 of the Philox block i / 4, mapped as the CPU does
// (mc/cpu/optim.hpp random): uniform a + (b - a) * u with u in [0, 1), normal a + b * z (a = mean,
// b = std), both computed in f64 and rounded to the output dtype through f32 (f64 output keeps the f64
// value), each operation rounded on its own as the CPU code evaluates it without FMA contraction. One
// thread computes one Philox block and writes its four elements. The normal draws use the device's
// logf / sinf / cosf, which can differ from the host C library's by one unit in the last place, so normal
// values may differ from the CPU's in the last bit of f32 (uniform draws match exactly).
#include "common.cuh"
#include "kernels.cuh"
#include "mc/core/random.hpp"

namespace mc::cuda {

namespace {

template <class T>
__device__ __forceinline__ T store_value(double u) {
  if constexpr (std::is_same_v<T, double>) return u;
  else if constexpr (std::is_same_v<T, float>) return float(u);
  else return from_float<T>(float(u));
}

template <class T>
struct alignas(sizeof(T) * 4) Vec4 {
  T v[4];
};

// The four values of block `blk`, in f64 before rounding: the same arithmetic as philox_uniform /
// philox_normal (mc/core/random.hpp) on each word, without recomputing the block per element.
template <bool Normal>
__device__ __forceinline__ void block_values(uint64_t seed, uint64_t offset, uint64_t blk, double a, double b,
                                             double out[4]) {
  uint32_t w[4];
  philox4x32(seed, blk, offset, w);
  if constexpr (Normal) {
#pragma unroll
    for (int pair = 0; pair < 4; pair += 2) {
      const float u1 = (float(w[pair] >> 8) + 1.0f) * (1.0f / 16777216.0f);
      const float u2 = float(w[pair + 1] >> 8) * (1.0f / 16777216.0f);
      const float r = sqrtf(-2.0f * logf(u1)), t = 6.283185307179586f * u2;
      out[pair] = __dadd_rn(a, __dmul_rn(b, double(r * cosf(t))));
      out[pair + 1] = __dadd_rn(a, __dmul_rn(b, double(r * sinf(t))));
    }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      out[k] = __dadd_rn(a, __dmul_rn(b - a, double(float(w[k] >> 8) * (1.0f / 16777216.0f))));
  }
}

// Contiguous output; `vec` when the pointer is aligned for a 4-element store.
template <class T, bool Normal, bool Vec>
__global__ void random_contig_kernel(T* __restrict__ o, int64_t n, uint64_t seed, uint64_t offset, double a,
                                     double b) {
  const int64_t nb = (n + 3) / 4;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t blk = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; blk < nb; blk += step) {
    double u[4];
    block_values<Normal>(seed, offset, uint64_t(blk), a, b, u);
    const int64_t i0 = blk * 4;
    if (Vec && i0 + 4 <= n) {
      Vec4<T> v;
#pragma unroll
      for (int k = 0; k < 4; ++k) v.v[k] = store_value<T>(u[k]);
      reinterpret_cast<Vec4<T>*>(o)[blk] = v;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (i0 + k < n) o[i0 + k] = store_value<T>(u[k]);
    }
  }
}

// Any strides: element i goes to s.offset(i).
template <class T, bool Normal>
__global__ void random_strided_kernel(T* o, const Strided s, int64_t n, uint64_t seed, uint64_t offset, double a,
                                      double b) {
  const int64_t nb = (n + 3) / 4;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t blk = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; blk < nb; blk += step) {
    double u[4];
    block_values<Normal>(seed, offset, uint64_t(blk), a, b, u);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = blk * 4 + k;
      if (i < n) o[s.offset(i)] = store_value<T>(u[k]);
    }
  }
}

template <class T, bool Normal>
void launch(const Tensor& out, uint64_t seed, uint64_t offset, double a, double b) {
  constexpr int kThreads = 256;
  const int64_t n = out.numel();
  const unsigned grid = blocks_for((n + 3) / 4, kThreads);
  T* o = dptr<T>(out);
  if (out.is_contiguous()) {
    if (reinterpret_cast<uintptr_t>(o) % (4 * sizeof(T)) == 0)
      random_contig_kernel<T, Normal, true><<<grid, kThreads, 0, stream()>>>(o, n, seed, offset, a, b);
    else
      random_contig_kernel<T, Normal, false><<<grid, kThreads, 0, stream()>>>(o, n, seed, offset, a, b);
  } else {
    random_strided_kernel<T, Normal><<<grid, kThreads, 0, stream()>>>(o, strided(out), n, seed, offset, a, b);
  }
  MC_CUDA_LAUNCHED("random");
}

}  // namespace

void random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  if (out.numel() == 0) return;
  MC_CUDA_DISPATCH_FLOAT(out.dtype(), "random", T, {
    if (kind == RandomKind::Normal) launch<T, true>(out, seed, offset, a, b);
    else launch<T, false>(out, seed, offset, a, b);
  });
}

}  // namespace mc::cuda
