// kernels/softmax.cu — softmax / log_softmax over the last dim, and their backward (mc/cpu/softmax.hpp is
// the reference). The ops layer passes contiguous tensors viewed as [rows, cols]; other layouts are made
// contiguous here.
//
// Same formulas as the CPU, in f32 (f64 for f64): m = max of the row (0 when the row is all -inf, so such a
// row gives NaN like torch), t = x - m, s = sum exp(t); log_softmax = t - log(s), softmax = exp(t) * (1/s).
// Backward: softmax gx = y * (gy - sum(gy * y)); log_softmax gx = gy - exp(y) * sum(gy).
// Rows of up to 1024 columns (512 for f64) are held in registers, a warp per row, 32*NPER columns each:
// one read and one write per element. Longer rows get a block each and read the row again per pass (max,
// sum, write), which the L2 cache mostly serves.
#include <cmath>
#include <cstdint>
#include <limits>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kRowThreads = 512;

template <class T> struct comp { using type = float; };
template <> struct comp<double> { using type = double; };
template <class T> using comp_t = typename comp<T>::type;

template <class T> __device__ __forceinline__ comp_t<T> ld(T v) { return comp_t<T>(v); }
template <> __device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float ld(__half v) { return __half2float(v); }
template <class T> __device__ __forceinline__ T st(comp_t<T> v) { return T(v); }
template <> __device__ __forceinline__ __nv_bfloat16 st(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half st(float v) { return __float2half_rn(v); }

// std::max as the CPU uses it: (m < v) ? v : m (a NaN never becomes the maximum).
template <class C> __device__ __forceinline__ C cpu_max(C m, C v) { return m < v ? v : m; }

template <class C> __device__ __forceinline__ C warp_sum(C v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class C> __device__ __forceinline__ C warp_max(C v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = cpu_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max over kRowThreads threads; every thread gets the result.
template <class C, bool kMax>
__device__ __forceinline__ C block_reduce(C v) {
  __shared__ C sh[kRowThreads / 32];
  v = kMax ? warp_max(v) : warp_sum(v);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // sh may still be read from a previous call
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < kRowThreads / 32 ? sh[lane] : (kMax ? -std::numeric_limits<C>::infinity() : C(0));
  return kMax ? warp_max(v) : warp_sum(v);
}

template <class T, int NPER>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) softmax_warp(T* out, const T* x, int64_t rows, int cols,
                                                                    bool log) {
  using C = comp_t<T>;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + row * cols;
  T* orow = out + row * cols;
  C v[NPER];
  C m = -std::numeric_limits<C>::infinity();
#pragma unroll
  for (int k = 0; k < NPER; ++k) {
    const int j = lane + 32 * k;
    v[k] = j < cols ? ld(xr[j]) : -std::numeric_limits<C>::infinity();
    m = cpu_max(m, v[k]);
  }
  m = warp_max(m);
  if (m == -std::numeric_limits<C>::infinity()) m = 0;
  C s = 0;
  if (log) {
#pragma unroll
    for (int k = 0; k < NPER; ++k) {
      v[k] -= m;
      if (lane + 32 * k < cols) s += std::exp(v[k]);
    }
    const C ls = std::log(warp_sum(s));
#pragma unroll
    for (int k = 0; k < NPER; ++k)
      if (lane + 32 * k < cols) orow[lane + 32 * k] = st<T>(v[k] - ls);
  } else {
#pragma unroll
    for (int k = 0; k < NPER; ++k) {
      v[k] = std::exp(v[k] - m);  // kept: the CPU's exp(t) * (1/s) uses the same value
      if (lane + 32 * k < cols) s += v[k];
    }
    const C inv = C(1) / warp_sum(s);
#pragma unroll
    for (int k = 0; k < NPER; ++k)
      if (lane + 32 * k < cols) orow[lane + 32 * k] = st<T>(v[k] * inv);
  }
}

template <class T>
__global__ void __launch_bounds__(kRowThreads) softmax_block(T* out, const T* x, int64_t cols, bool log) {
  using C = comp_t<T>;
  const T* xr = x + int64_t(blockIdx.x) * cols;
  T* orow = out + int64_t(blockIdx.x) * cols;
  C m = -std::numeric_limits<C>::infinity();
  for (int64_t j = threadIdx.x; j < cols; j += kRowThreads) m = cpu_max(m, ld(xr[j]));
  m = block_reduce<C, true>(m);
  if (m == -std::numeric_limits<C>::infinity()) m = 0;
  C s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += kRowThreads) s += std::exp(ld(xr[j]) - m);
  s = block_reduce<C, false>(s);
  if (log) {
    const C ls = std::log(s);
    for (int64_t j = threadIdx.x; j < cols; j += kRowThreads) orow[j] = st<T>((ld(xr[j]) - m) - ls);
  } else {
    const C inv = C(1) / s;
    for (int64_t j = threadIdx.x; j < cols; j += kRowThreads) orow[j] = st<T>(std::exp(ld(xr[j]) - m) * inv);
  }
}

template <class T, int NPER>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) softmax_bwd_warp(T* gx, const T* gy, const T* y,
                                                                        int64_t rows, int cols, bool log) {
  using C = comp_t<T>;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t base = row * cols;
  C g[NPER], yv[NPER];
  C s = 0;
#pragma unroll
  for (int k = 0; k < NPER; ++k) {
    const int j = lane + 32 * k;
    g[k] = j < cols ? ld(gy[base + j]) : C(0);
    yv[k] = j < cols ? ld(y[base + j]) : C(0);
    s += log ? g[k] : g[k] * yv[k];
  }
  s = warp_sum(s);
#pragma unroll
  for (int k = 0; k < NPER; ++k) {
    const int j = lane + 32 * k;
    if (j < cols) gx[base + j] = st<T>(log ? g[k] - std::exp(yv[k]) * s : yv[k] * (g[k] - s));
  }
}

template <class T>
__global__ void __launch_bounds__(kRowThreads) softmax_bwd_block(T* gx, const T* gy, const T* y, int64_t cols,
                                                                 bool log) {
  using C = comp_t<T>;
  const int64_t base = int64_t(blockIdx.x) * cols;
  C s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += kRowThreads) {
    const C g = ld(gy[base + j]);
    s += log ? g : g * ld(y[base + j]);
  }
  s = block_reduce<C, false>(s);
  for (int64_t j = threadIdx.x; j < cols; j += kRowThreads) {
    const C g = ld(gy[base + j]), yv = ld(y[base + j]);
    gx[base + j] = st<T>(log ? g - std::exp(yv) * s : yv * (g - s));
  }
}

// Calls f(std::integral_constant<int, NPER>) with the smallest NPER in {1,2,4,...,32} covering cols.
template <class F>
void with_nper(int cols, F f) {
  const int need = (cols + 31) / 32;
  if (need <= 1) f(std::integral_constant<int, 1>{});
  else if (need <= 2) f(std::integral_constant<int, 2>{});
  else if (need <= 4) f(std::integral_constant<int, 4>{});
  else if (need <= 8) f(std::integral_constant<int, 8>{});
  else if (need <= 16) f(std::integral_constant<int, 16>{});
  else f(std::integral_constant<int, 32>{});
}

int64_t warp_limit(DType dt) { return dt == DType::F64 ? 512 : 1024; }

// A contiguous target for `t`: t itself, or a temporary copied back by the caller.
Tensor dense_target(const Tensor& t) {
  return t.is_contiguous() ? t : Tensor::empty(t.shape(), t.dtype(), t.device());
}

}  // namespace

void softmax(const Tensor& out, const Tensor& x_in, bool log) {
  const char* what = log ? "log_softmax" : "softmax";
  MC_CHECK(out.shape() == x_in.shape() && out.dtype() == x_in.dtype(), what, ": output ", shape_str(out.shape()),
           " ", dtype_name(out.dtype()), " does not match input ", shape_str(x_in.shape()), " ",
           dtype_name(x_in.dtype()));
  const int64_t cols = x_in.dim() ? x_in.size(-1) : 1, rows = cols ? x_in.numel() / cols : 0;
  if (rows == 0 || cols == 0) return;
  MC_CHECK(rows < (int64_t(1) << 31), what, ": too many rows (", rows, ")");
  const Tensor x = x_in.is_contiguous() ? x_in : contiguous(x_in);
  const Tensor o = dense_target(out);
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), what, T, {
    T* op = dptr<T>(o);
    const T* xp = dptr<const T>(x);
    if (cols <= warp_limit(x.dtype())) {
      const unsigned blocks = unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
      with_nper(int(cols), [&](auto n) {
        softmax_warp<T, decltype(n)::value><<<blocks, kWarpsPerBlock * 32, 0, stream()>>>(op, xp, rows, int(cols), log);
      });
    } else {
      softmax_block<T><<<unsigned(rows), kRowThreads, 0, stream()>>>(op, xp, cols, log);
    }
  });
  MC_CUDA_LAUNCHED(what);
  if (!o.is_same(out)) copy(out, o);
}

void softmax_backward(const Tensor& gx, const Tensor& gy_in, const Tensor& y_in, bool log) {
  const char* what = log ? "log_softmax_backward" : "softmax_backward";
  MC_CHECK(gx.shape() == y_in.shape() && gy_in.shape() == y_in.shape() && gx.dtype() == y_in.dtype() &&
               gy_in.dtype() == y_in.dtype(),
           what, ": gradient / output shapes or dtypes differ");
  const int64_t cols = y_in.dim() ? y_in.size(-1) : 1, rows = cols ? y_in.numel() / cols : 0;
  if (rows == 0 || cols == 0) return;
  MC_CHECK(rows < (int64_t(1) << 31), what, ": too many rows (", rows, ")");
  const Tensor gy = gy_in.is_contiguous() ? gy_in : contiguous(gy_in);
  const Tensor y = y_in.is_contiguous() ? y_in : contiguous(y_in);
  const Tensor g = dense_target(gx);
  MC_CUDA_DISPATCH_FLOAT(y.dtype(), what, T, {
    T* gp = dptr<T>(g);
    const T* gyp = dptr<const T>(gy);
    const T* yp = dptr<const T>(y);
    if (cols <= warp_limit(y.dtype())) {
      const unsigned blocks = unsigned((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
      with_nper(int(cols), [&](auto n) {
        softmax_bwd_warp<T, decltype(n)::value>
            <<<blocks, kWarpsPerBlock * 32, 0, stream()>>>(gp, gyp, yp, rows, int(cols), log);
      });
    } else {
      softmax_bwd_block<T><<<unsigned(rows), kRowThreads, 0, stream()>>>(gp, gyp, yp, cols, log);
    }
  });
  MC_CUDA_LAUNCHED(what);
  if (!g.is_same(gx)) copy(gx, g);
}

}  // namespace mc::cuda
