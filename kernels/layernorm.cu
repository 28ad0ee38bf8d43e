// kernels/layernorm.cu — layer norm forward and backward, and the fused residual add + layer norm.
//
// x (contiguous) is viewed as [rows, cols]; each row is normalised with its mean and biased variance,
// computed as the CPU does (mc/cpu/norm.hpp): mean = sum(x) * (1/cols), var = sum((x - mean)^2) * (1/cols),
// rstd = 1 / sqrt(max(var, 0) + eps), y = (x rstd - mean rstd) [* w] [+ b], in f32 (f64 for f64) and
// rounded once. mean/rstd are f32 (f64 for f64).
//
// Rows of up to 1024 values whose rows are 16-byte aligned take the warp path: one warp per row, 16-byte
// loads, the row kept in registers between the passes. Other rows take the block path: one block per
// row, three passes over global memory (L1/L2 hits after the first).
//
// Backward: gx = rstd (dy - mean(dy) - xhat mean(dy xhat)) with dy = gy [* w], written as the CPU does
// (gx = dy rstd + (x - mean) kx + k0). gw = sum_rows(gy xhat), gb = sum_rows(gy) are reduced in two
// deterministic stages: every block sums its rows into its own row of an f32 (f64) scratch matrix, then
// one thread per column adds up the blocks in order. No atomics.
//
// Weights may have the input's dtype or f32 (the ops layer's rule); they are converted once to the compute
// type when they differ, and gw/gb are produced in the compute type and converted into their tensors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

template <class C, class T>
__device__ __forceinline__ C ln_load(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return C(__bfloat162float(v));
  else if constexpr (std::is_same_v<T, __half>) return C(__half2float(v));
  else return C(v);
}
template <class T, class C>
__device__ __forceinline__ T ln_round(C v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(float(v));
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(float(v));
  else return T(v);
}

template <class C>
__device__ __forceinline__ C warp_sum(C v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (256 threads); every thread gets the result. `red` holds 8 values.
template <class C>
__device__ __forceinline__ C block_sum(C v, C* red) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // red may still be read from the previous call
  if (lane == 0) red[w] = v;
  __syncthreads();
  C s = C(0);
#pragma unroll
  for (int i = 0; i < 8; ++i) s += red[i];
  return s;
}

__device__ __forceinline__ float inv_sqrt(float v) { return 1.0f / sqrtf(v); }
__device__ __forceinline__ double inv_sqrt(double v) { return 1.0 / sqrt(v); }

template <class T>
struct LnFwd {
  const T* x = nullptr;
  const T* res = nullptr;  // fused add: x + res (rounded to T) is what gets normalised
  T* sum_out = nullptr;
  T* out = nullptr;
  const acc_of<T>* w = nullptr;
  const acc_of<T>* b = nullptr;
  acc_of<T>* mean = nullptr;
  acc_of<T>* rstd = nullptr;
  int64_t rows = 0;
  int cols = 0;
  acc_of<T> eps = 0;
};

constexpr int kThreads = 256, kWarps = kThreads / 32;

// ---- forward, warp per row: NCH 16-byte chunks per lane (chunk c = lane + 32 k) ----
template <class T, int NCH, bool RES>
__global__ void __launch_bounds__(kThreads) ln_fwd_warp(const LnFwd<T> a) {
  using C = acc_of<T>;
  constexpr int V = int(16 / sizeof(T));
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= a.rows) return;  // whole warps leave together
  const int nchunk = a.cols / V;
  const int64_t base = row * a.cols;
  C v[NCH][V];
#pragma unroll
  for (int k = 0; k < NCH; ++k) {
    const int c = lane + 32 * k;
    if (c < nchunk) {
      uint4 raw = __ldg(reinterpret_cast<const uint4*>(a.x + base) + c);
      const T* e = reinterpret_cast<const T*>(&raw);
      if constexpr (RES) {
        uint4 rraw = __ldg(reinterpret_cast<const uint4*>(a.res + base) + c);
        const T* r = reinterpret_cast<const T*>(&rraw);
        uint4 sraw;
        T* s = reinterpret_cast<T*>(&sraw);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          s[i] = ln_round<T>(ln_load<C>(e[i]) + ln_load<C>(r[i]));
          v[k][i] = ln_load<C>(s[i]);
        }
        reinterpret_cast<uint4*>(a.sum_out + base)[c] = sraw;
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) v[k][i] = ln_load<C>(e[i]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) v[k][i] = C(0);
    }
  }
  const C inv = C(1) / C(a.cols);
  C s = C(0);
#pragma unroll
  for (int k = 0; k < NCH; ++k)
#pragma unroll
    for (int i = 0; i < V; ++i) s += v[k][i];
  const C m = warp_sum(s) * inv;
  C q = C(0);
#pragma unroll
  for (int k = 0; k < NCH; ++k) {
    if (lane + 32 * k < nchunk) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const C d = v[k][i] - m;
        q += d * d;
      }
    }
  }
  const C var = warp_sum(q) * inv;
  const C rs = inv_sqrt(max(var, C(0)) + a.eps);
  if (lane == 0) {
    a.mean[row] = m;
    a.rstd[row] = rs;
  }
  const C sh = -m * rs;
#pragma unroll
  for (int k = 0; k < NCH; ++k) {
    const int c = lane + 32 * k;
    if (c < nchunk) {
      uint4 oraw;
      T* o = reinterpret_cast<T*>(&oraw);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int j = c * V + i;
        C y = v[k][i] * rs + sh;
        if (a.w) y *= a.w[j];
        if (a.b) y += a.b[j];
        o[i] = ln_round<T>(y);
      }
      reinterpret_cast<uint4*>(a.out + base)[c] = oraw;
    }
  }
}

// ---- forward, block per row (long or unaligned rows) ----
template <class T, bool RES>
__global__ void __launch_bounds__(kThreads) ln_fwd_block(const LnFwd<T> a) {
  using C = acc_of<T>;
  __shared__ C red[kWarps];
  const int64_t row = blockIdx.x;
  const int64_t base = row * a.cols;
  const T* src = RES ? a.sum_out + base : a.x + base;
  C s = C(0);
  for (int j = threadIdx.x; j < a.cols; j += kThreads) {
    if constexpr (RES) {
      const T t = ln_round<T>(ln_load<C>(a.x[base + j]) + ln_load<C>(a.res[base + j]));
      a.sum_out[base + j] = t;  // read back below by this same thread
      s += ln_load<C>(t);
    } else {
      s += ln_load<C>(a.x[base + j]);
    }
  }
  const C inv = a.cols ? C(1) / C(a.cols) : C(0);
  const C m = block_sum(s, red) * inv;
  C q = C(0);
  for (int j = threadIdx.x; j < a.cols; j += kThreads) {
    const C d = ln_load<C>(src[j]) - m;
    q += d * d;
  }
  const C var = block_sum(q, red) * inv;
  const C rs = inv_sqrt(max(var, C(0)) + a.eps);
  if (threadIdx.x == 0) {
    a.mean[row] = m;
    a.rstd[row] = rs;
  }
  const C sh = -m * rs;
  for (int j = threadIdx.x; j < a.cols; j += kThreads) {
    C y = ln_load<C>(src[j]) * rs + sh;
    if (a.w) y *= a.w[j];
    if (a.b) y += a.b[j];
    a.out[base + j] = ln_round<T>(y);
  }
}

// ---- backward ----
template <class T>
struct LnBwd {
  const T* gy = nullptr;
  const T* x = nullptr;
  T* gx = nullptr;  // null: not wanted
  const acc_of<T>* w = nullptr;
  const acc_of<T>* mean = nullptr;
  const acc_of<T>* rstd = nullptr;
  acc_of<T>* part = nullptr;  // [gridDim.x][2 cols]: per-block sums of gy xhat, then of gy (null: not wanted)
  int64_t rows = 0;
  int cols = 0;
};

// Warp per row, rows strided over the grid; per-lane column sums, combined per block in shared memory.
template <class T, int NCH>
__global__ void __launch_bounds__(kThreads) ln_bwd_warp(const LnBwd<T> a) {
  using C = acc_of<T>;
  constexpr int V = int(16 / sizeof(T));
  extern __shared__ __align__(16) unsigned char smem_raw[];
  C* buf = reinterpret_cast<C*>(smem_raw);  // [kWarps][cols]
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int nchunk = a.cols / V;
  const C inv = C(1) / C(a.cols);
  C aw[NCH][V], ab[NCH][V];
#pragma unroll
  for (int k = 0; k < NCH; ++k)
#pragma unroll
    for (int i = 0; i < V; ++i) aw[k][i] = ab[k][i] = C(0);

  for (int64_t row = int64_t(blockIdx.x) * kWarps + w; row < a.rows; row += int64_t(gridDim.x) * kWarps) {
    const int64_t base = row * a.cols;
    C xv[NCH][V], gv[NCH][V];
#pragma unroll
    for (int k = 0; k < NCH; ++k) {
      const int c = lane + 32 * k;
      if (c < nchunk) {
        uint4 xr = __ldg(reinterpret_cast<const uint4*>(a.x + base) + c);
        uint4 gr = __ldg(reinterpret_cast<const uint4*>(a.gy + base) + c);
        const T* xe = reinterpret_cast<const T*>(&xr);
        const T* ge = reinterpret_cast<const T*>(&gr);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          xv[k][i] = ln_load<C>(xe[i]);
          gv[k][i] = ln_load<C>(ge[i]);
        }
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) xv[k][i] = gv[k][i] = C(0);
      }
    }
    const C m = a.mean[row], rs = a.rstd[row];
    if (a.gx) {
      C s1 = C(0), s2 = C(0);
#pragma unroll
      for (int k = 0; k < NCH; ++k)
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const int j = (lane + 32 * k) * V + i;
          const C dy = a.w && j < a.cols ? gv[k][i] * a.w[j] : gv[k][i];
          s1 += dy;
          s2 += dy * (xv[k][i] - m);
        }
      s1 = warp_sum(s1);
      s2 = warp_sum(s2);
      const C kx = -s2 * rs * rs * rs * inv, k0 = -s1 * rs * inv;
#pragma unroll
      for (int k = 0; k < NCH; ++k) {
        const int c = lane + 32 * k;
        if (c < nchunk) {
          uint4 oraw;
          T* o = reinterpret_cast<T*>(&oraw);
#pragma unroll
          for (int i = 0; i < V; ++i) {
            const int j = c * V + i;
            const C dy = a.w ? gv[k][i] * a.w[j] : gv[k][i];
            o[i] = ln_round<T>(dy * rs + (xv[k][i] - m) * kx + k0);
          }
          reinterpret_cast<uint4*>(a.gx + base)[c] = oraw;
        }
      }
    }
    if (a.part) {
#pragma unroll
      for (int k = 0; k < NCH; ++k)
#pragma unroll
        for (int i = 0; i < V; ++i) {
          aw[k][i] += gv[k][i] * ((xv[k][i] - m) * rs);
          ab[k][i] += gv[k][i];
        }
    }
  }
  if (!a.part) return;  // uniform over the block
  // Block partials: each warp's lanes into buf[w][...], then the warps summed in order, for gw then gb.
  C* out = a.part + int64_t(blockIdx.x) * 2 * a.cols;
  for (int pass = 0; pass < 2; ++pass) {
    __syncthreads();
#pragma unroll
    for (int k = 0; k < NCH; ++k) {
      const int c = lane + 32 * k;
      if (c < nchunk)
#pragma unroll
        for (int i = 0; i < V; ++i) buf[w * a.cols + c * V + i] = pass == 0 ? aw[k][i] : ab[k][i];
    }
    __syncthreads();
    for (int j = threadIdx.x; j < a.cols; j += kThreads) {
      C s = C(0);
#pragma unroll
      for (int i = 0; i < kWarps; ++i) s += buf[i * a.cols + j];
      out[pass * a.cols + j] = s;
    }
  }
}

// Block per row, rows strided over the grid; this block's partial row accumulates in global memory
// (each column owned by one thread).
template <class T>
__global__ void __launch_bounds__(kThreads) ln_bwd_block(const LnBwd<T> a) {
  using C = acc_of<T>;
  __shared__ C red[kWarps];
  const C inv = C(1) / C(a.cols > 0 ? a.cols : 1);
  C* pw = a.part ? a.part + int64_t(blockIdx.x) * 2 * a.cols : nullptr;
  if (pw)
    for (int j = threadIdx.x; j < 2 * a.cols; j += kThreads) pw[j] = C(0);
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    const int64_t base = row * a.cols;
    const C m = a.mean[row], rs = a.rstd[row];
    if (a.gx) {
      C s1 = C(0), s2 = C(0);
      for (int j = threadIdx.x; j < a.cols; j += kThreads) {
        C dy = ln_load<C>(a.gy[base + j]);
        if (a.w) dy *= a.w[j];
        s1 += dy;
        s2 += dy * (ln_load<C>(a.x[base + j]) - m);
      }
      s1 = block_sum(s1, red);
      s2 = block_sum(s2, red);
      const C kx = -s2 * rs * rs * rs * inv, k0 = -s1 * rs * inv;
      for (int j = threadIdx.x; j < a.cols; j += kThreads) {
        C dy = ln_load<C>(a.gy[base + j]);
        if (a.w) dy *= a.w[j];
        a.gx[base + j] = ln_round<T>(dy * rs + (ln_load<C>(a.x[base + j]) - m) * kx + k0);
      }
    }
    if (pw) {
      for (int j = threadIdx.x; j < a.cols; j += kThreads) {
        const C g = ln_load<C>(a.gy[base + j]);
        pw[j] += g * ((ln_load<C>(a.x[base + j]) - m) * rs);
        pw[a.cols + j] += g;
      }
    }
  }
}

// gw[j] = sum_g part[g][j], gb[j] = sum_g part[g][cols + j], blocks in order (deterministic).
template <class C>
__global__ void __launch_bounds__(kThreads) ln_bwd_colsum(const C* part, int nparts, int cols, C* gw, C* gb) {
  const int j = blockIdx.x * kThreads + threadIdx.x;
  if (j >= 2 * cols) return;
  C* dst = j < cols ? gw : gb;
  if (!dst) return;
  C s = C(0);
  for (int g = 0; g < nparts; ++g) s += part[int64_t(g) * 2 * cols + j];
  dst[j < cols ? j : j - cols] = s;
}

// ---- host side ----

DType compute_dtype(DType x) { return x == DType::F64 ? DType::F64 : DType::F32; }

void check_stats(const Tensor& s, DType want, int64_t rows, const char* what) {
  MC_CHECK(s.dtype() == want && s.is_contiguous() && s.numel() == rows, what, ": statistics tensor must be ",
           "contiguous ", dtype_name(want), " with ", rows, " elements, got ", dtype_name(s.dtype()), " ",
           shape_str(s.shape()));
}

// A parameter as a contiguous tensor of the compute type (itself when it already is one).
Tensor param_as(const Tensor& p, DType c, int64_t cols, const char* what) {
  if (!p.defined()) return p;
  MC_CHECK(p.numel() == cols, what, ": weight/bias must have ", cols, " elements");
  MC_CHECK(is_floating(p.dtype()), what, ": weight/bias must be floating, got ", dtype_name(p.dtype()));
  if (p.dtype() == c && p.is_contiguous()) return p;
  Tensor t = Tensor::empty(p.shape(), c, p.device());
  copy(t, p);
  return t;
}

Tensor dense(const Tensor& t) { return t.is_contiguous() ? t : contiguous(t); }
Tensor dense_out(const Tensor& t) {
  return t.is_contiguous() ? t : Tensor::empty(t.shape(), t.dtype(), t.device());
}
void finish(const Tensor& dst, const Tensor& tmp) {
  if (tmp.defined() && !tmp.is_same(dst)) copy(dst, tmp);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Chunks per lane instantiated for the warp kernels: exact for the common widths (768 = 3 x 256 bf16
// chunks... per lane: 3 for bf16, 6 for f32), else rounded up.
int lane_chunks(int n) {
  for (int c : {1, 2, 3, 4, 6, 8}) if (n <= c) return c;
  return 16;
}

template <class T>
constexpr int max_warp_chunks() {  // 16-byte chunks per lane: up to 32 values of the compute type
  return int(32 / (16 / sizeof(T)));
}

template <class T, bool RES>
void fwd_launch(const LnFwd<T>& a, bool vec) {
  constexpr int V = int(16 / sizeof(T));
  const char* what = RES ? "add_layer_norm" : "layer_norm";
  MC_CHECK(a.rows <= 0x7fffffffLL, what, ": ", a.rows, " rows exceed the grid limit");
  if (vec && a.cols > 0 && a.cols % V == 0 && a.cols <= 32 * V * max_warp_chunks<T>()) {
    const unsigned grid = unsigned((a.rows + kWarps - 1) / kWarps);
    switch (lane_chunks((a.cols / V + 31) / 32)) {
      case 1: ln_fwd_warp<T, 1, RES><<<grid, kThreads, 0, stream()>>>(a); break;
      case 2: ln_fwd_warp<T, 2, RES><<<grid, kThreads, 0, stream()>>>(a); break;
      case 3: ln_fwd_warp<T, 3, RES><<<grid, kThreads, 0, stream()>>>(a); break;
      case 4: ln_fwd_warp<T, 4, RES><<<grid, kThreads, 0, stream()>>>(a); break;
      case 6:
        if constexpr (max_warp_chunks<T>() >= 6) ln_fwd_warp<T, 6, RES><<<grid, kThreads, 0, stream()>>>(a);
        break;
      case 8:
        if constexpr (max_warp_chunks<T>() >= 8) ln_fwd_warp<T, 8, RES><<<grid, kThreads, 0, stream()>>>(a);
        break;
      default:
        if constexpr (max_warp_chunks<T>() >= 16) ln_fwd_warp<T, 16, RES><<<grid, kThreads, 0, stream()>>>(a);
        break;
    }
  } else {
    ln_fwd_block<T, RES><<<unsigned(a.rows), kThreads, 0, stream()>>>(a);
  }
  MC_CUDA_LAUNCHED(what);
}

template <class T>
void forward_typed(const Tensor& out, const Tensor& sum_out, const Tensor& mean, const Tensor& rstd,
                   const Tensor& x, const Tensor& res, const Tensor& w, const Tensor& b, double eps, int64_t rows,
                   int64_t cols) {
  using C = acc_of<T>;
  LnFwd<T> a;
  a.x = static_cast<const T*>(x.raw_data());
  a.out = static_cast<T*>(out.raw_data());
  a.w = w.defined() ? static_cast<const C*>(w.raw_data()) : nullptr;
  a.b = b.defined() ? static_cast<const C*>(b.raw_data()) : nullptr;
  a.mean = static_cast<C*>(mean.raw_data());
  a.rstd = static_cast<C*>(rstd.raw_data());
  a.rows = rows;
  a.cols = int(cols);
  a.eps = C(eps);
  bool vec = aligned16(a.x) && aligned16(a.out);
  if (res.defined()) {
    a.res = static_cast<const T*>(res.raw_data());
    a.sum_out = static_cast<T*>(sum_out.raw_data());
    vec = vec && aligned16(a.res) && aligned16(a.sum_out);
    fwd_launch<T, true>(a, vec);
  } else {
    fwd_launch<T, false>(a, vec);
  }
}

// Shared by layer_norm and add_layer_norm: checks, dense views, dispatch.
void forward_common(const char* what, const Tensor& out, const Tensor& sum_out, const Tensor& mean,
                    const Tensor& rstd, const Tensor& x, const Tensor& residual, const Tensor& w, const Tensor& b,
                    double eps) {
  const int64_t rows = mean.numel(), cols = rows ? x.numel() / rows : 0;
  if (rows == 0) return;
  MC_CHECK(is_floating(x.dtype()), what, ": expects a floating input, got ", dtype_name(x.dtype()));
  MC_CHECK(rows * cols == x.numel() && out.numel() == x.numel() && out.dtype() == x.dtype(), what,
           ": inconsistent sizes (x ", shape_str(x.shape()), ", ", rows, " rows)");
  MC_CHECK(cols <= 0x7fffffffLL, what, ": rows of ", cols, " values are too long");
  const DType c = compute_dtype(x.dtype());
  check_stats(mean, c, rows, what);
  check_stats(rstd, c, rows, what);
  const Tensor wc = param_as(w, c, cols, what), bc = param_as(b, c, cols, what);
  const Tensor xd = dense(x), od = dense_out(out);
  Tensor rd, sd;
  if (residual.defined()) {
    MC_CHECK(residual.numel() == x.numel() && residual.dtype() == x.dtype() && sum_out.numel() == x.numel() &&
                 sum_out.dtype() == x.dtype(),
             what, ": residual and sum output must match x ", shape_str(x.shape()), " ", dtype_name(x.dtype()));
    rd = dense(residual);
    sd = dense_out(sum_out);
  }
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), what, T,
                         { forward_typed<T>(od, sd, mean, rstd, xd, rd, wc, bc, eps, rows, cols); });
  finish(out, od);
  if (residual.defined()) finish(sum_out, sd);
}

// Blocks of a grid-strided kernel: enough to fill the device once (the partial sums grow with it).
template <class K>
int64_t resident_blocks(K kernel, size_t smem, int64_t wanted) {
  int per_sm = 0;
  MC_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem),
                "layer_norm_backward");
  const int64_t full = int64_t(props().multiProcessorCount) * std::max(1, per_sm);
  return std::max<int64_t>(1, std::min(wanted, full));
}

// Launches the row kernel on `grid` blocks with per-block partial sums (when wanted), then the column sums.
template <class T, class K>
void bwd_run(K kernel, LnBwd<T> a, int64_t grid, size_t smem, const Tensor& gwc, const Tensor& gbc,
             const Tensor& like) {
  using C = acc_of<T>;
  const bool want_sums = gwc.defined() || gbc.defined();
  Tensor part;
  if (want_sums) {
    part = Tensor::empty({grid, 2 * int64_t(a.cols)}, compute_dtype(like.dtype()), like.device());
    a.part = static_cast<C*>(part.raw_data());
  }
  kernel<<<unsigned(grid), kThreads, want_sums ? smem : 0, stream()>>>(a);
  MC_CUDA_LAUNCHED("layer_norm_backward");
  if (want_sums) {
    ln_bwd_colsum<C><<<unsigned((2 * int64_t(a.cols) + kThreads - 1) / kThreads), kThreads, 0, stream()>>>(
        a.part, int(grid), a.cols, gwc.defined() ? static_cast<C*>(gwc.raw_data()) : nullptr,
        gbc.defined() ? static_cast<C*>(gbc.raw_data()) : nullptr);
    MC_CUDA_LAUNCHED("layer_norm_backward");
  }
}

template <class T, int NCH>
void bwd_warp_launch(const LnBwd<T>& a, const Tensor& gwc, const Tensor& gbc, const Tensor& like) {
  using C = acc_of<T>;
  const size_t smem = size_t(kWarps) * size_t(a.cols) * sizeof(C);  // <= 32 KiB (cols <= 1024 f32, 512 f64)
  static const int64_t full = resident_blocks(ln_bwd_warp<T, NCH>, smem > 0 ? 32 * 1024 : 0, INT64_MAX);
  const int64_t grid = std::max<int64_t>(1, std::min((a.rows + kWarps - 1) / kWarps, full));
  bwd_run<T>(ln_bwd_warp<T, NCH>, a, grid, smem, gwc, gbc, like);
}

template <class T>
void backward_typed(const Tensor& gx, const Tensor& gwc, const Tensor& gbc, const Tensor& gy, const Tensor& x,
                    const Tensor& wc, const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t cols) {
  using C = acc_of<T>;
  constexpr int V = int(16 / sizeof(T));
  constexpr int kMaxChunks = max_warp_chunks<T>() > 8 ? 8 : max_warp_chunks<T>();  // registers: x, gy, 2 sums
  LnBwd<T> a;
  a.gy = static_cast<const T*>(gy.raw_data());
  a.x = static_cast<const T*>(x.raw_data());
  a.gx = gx.defined() ? static_cast<T*>(gx.raw_data()) : nullptr;
  a.w = wc.defined() ? static_cast<const C*>(wc.raw_data()) : nullptr;
  a.mean = static_cast<const C*>(mean.raw_data());
  a.rstd = static_cast<const C*>(rstd.raw_data());
  a.rows = rows;
  a.cols = int(cols);
  const bool vec = aligned16(a.gy) && aligned16(a.x) && (!a.gx || aligned16(a.gx)) && cols > 0 && cols % V == 0 &&
                   cols <= 32 * V * kMaxChunks;
  if (vec) {
    switch (lane_chunks((a.cols / V + 31) / 32)) {
      case 1: return bwd_warp_launch<T, 1>(a, gwc, gbc, gy);
      case 2: return bwd_warp_launch<T, 2>(a, gwc, gbc, gy);
      case 3: return bwd_warp_launch<T, 3>(a, gwc, gbc, gy);
      case 4: return bwd_warp_launch<T, 4>(a, gwc, gbc, gy);
      case 6:
        if constexpr (kMaxChunks >= 6) return bwd_warp_launch<T, 6>(a, gwc, gbc, gy);
        break;
      default:
        if constexpr (kMaxChunks >= 8) return bwd_warp_launch<T, 8>(a, gwc, gbc, gy);
        break;
    }
  }
  static const int64_t full = resident_blocks(ln_bwd_block<T>, 0, INT64_MAX);
  bwd_run<T>(ln_bwd_block<T>, a, std::min<int64_t>(rows, full), 0, gwc, gbc, gy);
}

// A gradient output the column sums can write in the compute type: itself or a temporary.
Tensor grad_out(const Tensor& g, DType c) {
  if (!g.defined()) return g;
  return g.dtype() == c && g.is_contiguous() ? g : Tensor::empty(g.shape(), c, g.device());
}

}  // namespace

void layer_norm(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& w,
                const Tensor& b, double eps) {
  forward_common("layer_norm", out, Tensor(), mean, rstd, x, Tensor(), w, b, eps);
}

void add_layer_norm(const Tensor& sum_out, const Tensor& ln_out, const Tensor& mean, const Tensor& rstd,
                    const Tensor& x, const Tensor& residual, const Tensor& w, const Tensor& b, double eps) {
  MC_CHECK(residual.defined() && sum_out.defined(), "add_layer_norm: residual and sum_out must be given");
  forward_common("add_layer_norm", ln_out, sum_out, mean, rstd, x, residual, w, b, eps);
}

void layer_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                         const Tensor& w, const Tensor& mean, const Tensor& rstd) {
  const char* what = "layer_norm_backward";
  const int64_t rows = mean.numel(), cols = rows ? x.numel() / rows : 0;
  if (rows == 0) {
    if (gw.defined() && gw.numel()) fill(gw, 0.0);
    if (gb.defined() && gb.numel()) fill(gb, 0.0);
    return;
  }
  MC_CHECK(is_floating(x.dtype()), what, ": expects a floating input, got ", dtype_name(x.dtype()));
  MC_CHECK(rows * cols == x.numel() && gy.numel() == x.numel() && gy.dtype() == x.dtype() &&
               (!gx.defined() || (gx.numel() == x.numel() && gx.dtype() == x.dtype())),
           what, ": inconsistent sizes");
  MC_CHECK((!gw.defined() || gw.numel() == cols) && (!gb.defined() || gb.numel() == cols), what,
           ": weight gradients must have ", cols, " elements");
  MC_CHECK(cols <= 0x7fffffffLL, what, ": rows of ", cols, " values are too long");
  if (!gx.defined() && !gw.defined() && !gb.defined()) return;
  const DType c = compute_dtype(x.dtype());
  check_stats(mean, c, rows, what);
  check_stats(rstd, c, rows, what);
  const Tensor wc = param_as(w, c, cols, what);
  const Tensor xd = dense(x), gyd = dense(gy), gxd = gx.defined() ? dense_out(gx) : Tensor();
  const Tensor gwc = grad_out(gw, c), gbc = grad_out(gb, c);
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), what, T,
                         { backward_typed<T>(gxd, gwc, gbc, gyd, xd, wc, mean, rstd, rows, cols); });
  if (gx.defined()) finish(gx, gxd);
  if (gw.defined()) finish(gw, gwc);
  if (gb.defined()) finish(gb, gbc);
}

}  // namespace mc::cuda
