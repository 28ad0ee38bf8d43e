// kernels/common.cuh — what every CUDA kernel file shares: error checks, the stream, dtype mapping and
// strided indexing. Included only by kernels/*.cu (nvcc).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "mc/core/backend.hpp"
#include "mc/cuda/runtime.hpp"

namespace mc::cuda {

// ---- errors: every runtime call and every launch is checked; failures become mc::Error naming the op ----
[[noreturn]] void raise(cudaError_t e, const char* op, const char* call, const char* file, int line);
// After a launch: the launch error, and with sync launches (MC_CUDA_SYNC=1) also the kernel's own fault.
void check_launch(const char* op, const char* file, int line);

}  // namespace mc::cuda

#define MC_CUDA_CHECK(call, op)                                                           \
  do {                                                                                     \
    cudaError_t mc_err_ = (call);                                                          \
    if (mc_err_ != cudaSuccess) ::mc::cuda::raise(mc_err_, op, #call, __FILE__, __LINE__); \
  } while (0)
#define MC_CUDA_LAUNCHED(op) ::mc::cuda::check_launch(op, __FILE__, __LINE__)

namespace mc::cuda {

// The stream all of mc's work on the current device is queued on (one in-order stream per device: the
// caching allocator reuses a block as soon as it is freed, which is safe because of that order).
cudaStream_t stream();
// Properties of the current device, queried once.
const cudaDeviceProp& props();

// Scratch memory that lives until the next call on the same stream (cuBLASLt / cuDNN workspaces, partial
// sums). Allocated through the caching allocator as a tensor; keep the returned tensor alive while used.
inline Tensor scratch(int64_t nbytes) {
  return Tensor::empty({nbytes}, DType::U8, Device::cuda(0));
}

// ---- dtype mapping: mc's host types -> CUDA's device types ----
template <class T> struct dev_type { using type = T; };
template <> struct dev_type<mc::bf16> { using type = __nv_bfloat16; };
template <> struct dev_type<mc::f16> { using type = __half; };
template <class T> using dev_t = typename dev_type<T>::type;

// The compute type: f64 for f64, f32 for everything else (the half types included).
template <class T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };
template <class T> using acc_of = typename acc_type<T>::type;

// Load to the compute type and store from it, rounding once (to nearest even for the half types).
template <class T> __device__ __forceinline__ acc_of<T> to_float(T v) { return acc_of<T>(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <class T> __device__ __forceinline__ T from_float(acc_of<T> v) { return T(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// Dispatch on a runtime dtype with T = the device type.
#define MC_CUDA_CASE(ENUM, CTYPE, T, ...) \
  case ::mc::DType::ENUM: { using T = CTYPE; __VA_ARGS__; break; }
#define MC_CUDA_DISPATCH_FLOAT(dt, what, T, ...)                                              \
  switch (dt) {                                                                               \
    MC_CUDA_CASE(F32, float, T, __VA_ARGS__)                                                  \
    MC_CUDA_CASE(F64, double, T, __VA_ARGS__)                                                 \
    MC_CUDA_CASE(BF16, __nv_bfloat16, T, __VA_ARGS__)                                         \
    MC_CUDA_CASE(F16, __half, T, __VA_ARGS__)                                                 \
    default: ::mc::fail(what, ": expected a floating dtype, got ", ::mc::dtype_name(dt));     \
  }
#define MC_CUDA_DISPATCH(dt, T, ...)                          \
  switch (dt) {                                               \
    MC_CUDA_CASE(F32, float, T, __VA_ARGS__)                  \
    MC_CUDA_CASE(F64, double, T, __VA_ARGS__)                 \
    MC_CUDA_CASE(BF16, __nv_bfloat16, T, __VA_ARGS__)         \
    MC_CUDA_CASE(F16, __half, T, __VA_ARGS__)                 \
    MC_CUDA_CASE(I32, int32_t, T, __VA_ARGS__)                \
    MC_CUDA_CASE(I64, int64_t, T, __VA_ARGS__)                \
    MC_CUDA_CASE(U8, uint8_t, T, __VA_ARGS__)                 \
    MC_CUDA_CASE(Bool, bool, T, __VA_ARGS__)                  \
  }

// n / d for n < 2^32 with a multiply-high and a shift (d fixed per launch): index arithmetic of the
// strided kernels without hardware division.
struct FastDiv {
  uint32_t d = 1, m = 1, s = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t div) : d(div) {
    s = 0;
    while (s < 32 && (uint64_t(1) << s) < div) ++s;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << s) - div)) / div + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return uint32_t((uint64_t(__umulhi(n, m)) + n) >> s);
  }
};

// ---- strided indexing: element i (row-major over `size`) of a view lives at offset(i) ----
constexpr int kMaxDims = 8;
struct Strided {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  __host__ __device__ __forceinline__ int64_t offset(int64_t i) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t s = size[d];
      off += (i % s) * stride[d];
      i /= s;
    }
    return off;
  }
};
// The view of `t` with size-1 dims dropped and contiguous runs merged (fewer divisions per element).
Strided strided(const Tensor& t);
// Same, but with dims merged only where they are mergeable in every tensor given (for loops that walk
// several tensors of one shape in lock-step).
void strided_many(const Tensor* ts, int n, Strided* out);

// Device pointer to the first element of a CUDA tensor, typed with the device type.
template <class T>
inline T* dptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 32) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return unsigned(b < max_blocks ? b : max_blocks);
}

// A contiguous copy on the device when `t` is not contiguous (kernels that need dense rows use it).
Tensor contiguous(const Tensor& t);

}  // namespace mc::cuda
