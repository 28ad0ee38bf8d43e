// kernels/batchnorm.cu — batch normalisation over x [N, C, *] (viewed as [N, C, S]), forward and backward.
//
// Semantics are the CPU's (mc/cpu/norm.hpp): training normalises with the batch mean and biased variance
// and updates the running statistics in place with the unbiased variance; eval uses the running
// statistics; save_mean / save_rstd (f32, f64 for f64 input) receive the statistics used.
//
// Three launches per call:
//   1. statistics: grid (C, P); block (c, p) walks a contiguous part of channel c's N*S values in packs of
//      up to 16 bytes (when S and the pointer allow; single elements otherwise) with a Welford accumulator
//      per thread (each pack or group of four is folded in with one Chan merge), merges the threads and
//      writes a partial (count, mean, M2) — f32 for f32/bf16/f16, f64 for f64. The backward's block sums
//      gy and gy * (x - mean) instead.
//   2. finalize: one thread per channel merges the P partials in f64, updates the running statistics and
//      turns everything into per-channel coefficients (computed in f64 like the CPU, stored in the compute
//      type).
//   3. apply: out = u * ku[c] + (v - vm[c]) * kv[c] + kc[c] elementwise in packs (v only in the training
//      backward); planes that packs cannot follow (7x7) use flat packs with the channel found per element.
// P is chosen so that the grid fills the GPU several times over while each block keeps >= 4096 values.
// Index math is 32-bit (multiply-high division) whenever the sizes allow, 64-bit otherwise.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kFinalizeThreads = 128;
constexpr int64_t kIntMaxGrid = 2147483647;  // gridDim.x limit

// Fast n / d for 32-bit n < 2^31 (multiply-high by a magic number; d fixed per launch).
struct Div32 {
  uint32_t d = 1, magic = 1, shift = 0;
  Div32() = default;
  explicit Div32(uint32_t divisor) : d(divisor) {
    while (shift < 32 && (uint64_t(1) << shift) < d) ++shift;
    magic = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, magic) + n) >> shift; }
};

template <class C, class T>
__device__ __forceinline__ C load_c(T v) {
  if constexpr (std::is_same_v<T, double>) return v; else return C(to_float(v));
}
template <class T, class C>
__device__ __forceinline__ T store_c(C v) {
  if constexpr (std::is_same_v<T, double>) return v; else return from_float<T>(float(v));
}

// A 1-d per-channel parameter (weight, bias, running stats, their gradients) of any floating dtype.
struct Param {
  void* p = nullptr;
  int64_t stride = 1;
  DType dt = DType::F32;
};

Param param_of(const Tensor& t, const char* what, int64_t channels) {
  if (!t.defined()) return {};
  MC_CHECK(t.numel() == channels, what, ": parameters must have ", channels, " elements, got ", shape_str(t.shape()));
  MC_CHECK(t.dim() <= 1 || t.is_contiguous(), what, ": parameter of shape ", shape_str(t.shape()),
           " must be contiguous");
  const DType dt = t.dtype();
  MC_CHECK(dt == DType::F32 || dt == DType::F64 || dt == DType::BF16 || dt == DType::F16, what,
           ": expected a floating parameter, got ", dtype_name(dt));
  return {t.raw_data(), t.dim() == 1 ? t.stride(0) : 1, dt};
}

__device__ __forceinline__ double load_param(const Param& q, int64_t i) {
  const int64_t k = i * q.stride;
  switch (q.dt) {
    case DType::F64: return static_cast<const double*>(q.p)[k];
    case DType::BF16: return double(__bfloat162float(static_cast<const __nv_bfloat16*>(q.p)[k]));
    case DType::F16: return double(__half2float(static_cast<const __half*>(q.p)[k]));
    default: return double(static_cast<const float*>(q.p)[k]);
  }
}

// As the CPU's store: f64 -> the parameter's compute type (f32 for the half types) -> the parameter.
__device__ __forceinline__ void store_param(const Param& q, int64_t i, double v) {
  const int64_t k = i * q.stride;
  switch (q.dt) {
    case DType::F64: static_cast<double*>(q.p)[k] = v; break;
    case DType::BF16: static_cast<__nv_bfloat16*>(q.p)[k] = __float2bfloat16_rn(float(v)); break;
    case DType::F16: static_cast<__half*>(q.p)[k] = __float2half_rn(float(v)); break;
    default: static_cast<float*>(q.p)[k] = float(v); break;
  }
}

// ---- Welford ----

template <class C>
struct Welford {
  C n = 0, mean = 0, m2 = 0;
  __device__ __forceinline__ void add(C v) {
    n += C(1);
    const C d = v - mean;
    mean += d / n;
    m2 += d * (v - mean);
  }
  __device__ __forceinline__ void merge(C nb, C mb, C m2b) {
    const C tot = n + nb;
    if (nb == C(0)) return;
    const C d = mb - mean, f = nb / tot;
    mean += d * f;
    m2 += m2b + d * d * n * f;
    n = tot;
  }
};

// Packs of V elements (16 bytes at most), loaded and stored as one vector.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Element offset of vector jv of channel c, with Sv vectors of V elements per [n, c] segment of S = Sv * V.
template <int V, bool kFast>
__device__ __forceinline__ int64_t vec_offset(int64_t jv, int64_t Sv, int64_t Cn, int64_t c, const Div32& divSv) {
  int64_t n, s;
  if constexpr (kFast) {
    const uint32_t q = divSv.div(uint32_t(jv));
    n = q;
    s = jv - int64_t(q) * Sv;
  } else {
    n = jv / Sv;
    s = jv - n * Sv;
  }
  return ((n * Cn + c) * Sv + s) * V;
}

// Folds a pack into a Welford accumulator: the pack's own mean and M2 first, then one merge.
template <class C, class T, int V>
__device__ __forceinline__ void welford_pack(Welford<C>& w, const Pack<T, V>& p) {
  if constexpr (V == 1) {
    w.add(load_c<C>(p.v[0]));
  } else {
    C vals[V], sum = 0;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      vals[i] = load_c<C>(p.v[i]);
      sum += vals[i];
    }
    const C mean = sum * (C(1) / C(V));
    C m2 = 0;
#pragma unroll
    for (int i = 0; i < V; ++i) m2 += (vals[i] - mean) * (vals[i] - mean);
    w.merge(C(V), mean, m2);
  }
}

// Partial Welford statistics of channel blockIdx.x over its part blockIdx.y (vectors [y * chunk, (y+1) * chunk)
// of the channel's Mv): part[(c * P + p) * 3 + {0,1,2}] = count, mean, M2.
template <class T, class C, int V, bool kFast>
__global__ void __launch_bounds__(kThreads) stats_kernel(const T* __restrict__ x, int64_t Cn, int64_t Sv, int64_t Mv,
                                                         int64_t chunk, Div32 divSv, C* __restrict__ part) {
  using P = Pack<T, V>;
  const int64_t c = blockIdx.x;
  const int64_t j0 = int64_t(blockIdx.y) * chunk, j1 = min(Mv, j0 + chunk);
  const int64_t step = blockDim.x;
  Welford<C> w;
  int64_t j = j0 + threadIdx.x;
  if constexpr (V == 1) {  // scalar loads: four in flight, folded in as one group (one division per four)
    for (; j + 3 * step < j1; j += 4 * step) {
      Pack<T, 4> q;
#pragma unroll
      for (int i = 0; i < 4; ++i) q.v[i] = x[vec_offset<1, kFast>(j + i * step, Sv, Cn, c, divSv)];
      welford_pack<C>(w, q);
    }
  }
  for (; j + step < j1; j += 2 * step) {  // two loads in flight per thread
    const P a = *reinterpret_cast<const P*>(x + vec_offset<V, kFast>(j, Sv, Cn, c, divSv));
    const P b = *reinterpret_cast<const P*>(x + vec_offset<V, kFast>(j + step, Sv, Cn, c, divSv));
    welford_pack<C>(w, a);
    welford_pack<C>(w, b);
  }
  if (j < j1) welford_pack<C>(w, *reinterpret_cast<const P*>(x + vec_offset<V, kFast>(j, Sv, Cn, c, divSv)));

  // Merge across the warp, then across warps.
  for (int o = 16; o > 0; o >>= 1) {
    const C nb = __shfl_down_sync(0xffffffffu, w.n, o), mb = __shfl_down_sync(0xffffffffu, w.mean, o),
            m2b = __shfl_down_sync(0xffffffffu, w.m2, o);
    w.merge(nb, mb, m2b);
  }
  __shared__ C sh[3][kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    sh[0][warp] = w.n;
    sh[1][warp] = w.mean;
    sh[2][warp] = w.m2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Welford<C> t;
    for (int i = 0; i < nwarps; ++i) t.merge(sh[0][i], sh[1][i], sh[2][i]);
    C* o = part + (c * gridDim.y + blockIdx.y) * 3;
    o[0] = t.n;
    o[1] = t.mean;
    o[2] = t.m2;
  }
}

// Partial sums of gy and gy * (x - mean[c]) over the same parts: part[(c * P + p) * 2 + {0,1}].
template <class T, class C, int V, bool kFast>
__global__ void __launch_bounds__(kThreads) grad_sums_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                                             const C* __restrict__ mean, int64_t Cn, int64_t Sv,
                                                             int64_t Mv, int64_t chunk, Div32 divSv,
                                                             C* __restrict__ part) {
  using P = Pack<T, V>;
  const int64_t c = blockIdx.x;
  const int64_t j0 = int64_t(blockIdx.y) * chunk, j1 = min(Mv, j0 + chunk);
  const int64_t step = blockDim.x;
  const C mc = mean[c];
  C s1 = 0, s2 = 0;
#pragma unroll 4
  for (int64_t j = j0 + threadIdx.x; j < j1; j += step) {
    const int64_t o = vec_offset<V, kFast>(j, Sv, Cn, c, divSv);
    const P pg = *reinterpret_cast<const P*>(g + o), px = *reinterpret_cast<const P*>(x + o);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const C gv = load_c<C>(pg.v[i]);
      s1 += gv;
      s2 += gv * (load_c<C>(px.v[i]) - mc);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    s1 += __shfl_down_sync(0xffffffffu, s1, o);
    s2 += __shfl_down_sync(0xffffffffu, s2, o);
  }
  __shared__ C sh[2][kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    sh[0][warp] = s1;
    sh[1][warp] = s2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    C a = 0, b = 0;
    for (int i = 0; i < nwarps; ++i) {
      a += sh[0][i];
      b += sh[1][i];
    }
    C* o = part + (c * gridDim.y + blockIdx.y) * 2;
    o[0] = a;
    o[1] = b;
  }
}

// Per channel: the statistics (merged partials when training, the running ones in eval), the running
// update, save_mean / save_rstd, and out = x * scale + shift.
template <class C>
__global__ void finalize_forward_kernel(const C* __restrict__ part, int P, int64_t Cn, double M, bool training,
                                        double momentum, double eps, Param w, Param b, Param rm, Param rv,
                                        C* save_mean, C* save_rstd, C* scale, C* shift) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < Cn; c += int64_t(gridDim.x) * blockDim.x) {
    double mean, var;
    if (training) {
      double n = 0, m = 0, m2 = 0;
      for (int p = 0; p < P; ++p) {
        const C* q = part + (c * P + p) * 3;
        const double nb = double(q[0]);
        if (nb == 0) continue;
        const double tot = n + nb, d = double(q[1]) - m, f = nb / tot;
        m += d * f;
        m2 += double(q[2]) + d * d * n * f;
        n = tot;
      }
      mean = m;
      var = fmax(0.0, m2 / M);
      if (rm.p && rv.p) {
        const double unbias = M / (M - 1);
        store_param(rm, c, (1 - momentum) * load_param(rm, c) + momentum * mean);
        store_param(rv, c, (1 - momentum) * load_param(rv, c) + momentum * var * unbias);
      }
    } else {
      mean = load_param(rm, c);
      var = load_param(rv, c);
    }
    const double rs = 1.0 / sqrt(var + eps);
    const double a = w.p ? rs * load_param(w, c) : rs;
    scale[c] = C(a);
    shift[c] = C((b.p ? load_param(b, c) : 0.0) - mean * a);
    save_mean[c] = C(mean);
    save_rstd[c] = C(rs);
  }
}

// Per channel: gx coefficients (gx = gy * k1 + (x - km) * kx + k0), gw = sum(gy xhat), gb = sum(gy).
template <class C>
__global__ void finalize_backward_kernel(const C* __restrict__ part, int P, int64_t Cn, double M, bool training,
                                         bool want_gx, Param w, const C* __restrict__ save_mean,
                                         const C* __restrict__ save_rstd, C* k1, C* km, C* kx, C* k0, Param gw,
                                         Param gb) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < Cn; c += int64_t(gridDim.x) * blockDim.x) {
    double sg = 0, sgx = 0;
    if (part)
      for (int p = 0; p < P; ++p) {
        sg += double(part[(c * P + p) * 2]);
        sgx += double(part[(c * P + p) * 2 + 1]);
      }
    const double mean = double(save_mean[c]), rstd = double(save_rstd[c]);
    if (want_gx) {
      const double a = (w.p ? load_param(w, c) : 1.0) * rstd;
      const double k = training ? -a * rstd * rstd * sgx / M : 0.0;
      k1[c] = C(a);
      km[c] = C(mean);
      kx[c] = C(k);
      k0[c] = training ? C(-a * sg / M + k * (double(C(mean)) - mean)) : C(0);
    }
    if (gw.p) store_param(gw, c, sgx * rstd);
    if (gb.p) store_param(gb, c, sg);
  }
}

// out = u * ku[c] + (v - vm[c]) * kv[c] + kc[c] over [N, C, S] in packs of V (S a multiple of V); v may be null.
template <class T, class C, int V, bool kFast, bool kHasV>
__global__ void __launch_bounds__(kThreads) apply_kernel(T* __restrict__ out, const T* __restrict__ u,
                                                         const T* __restrict__ v, const C* __restrict__ ku,
                                                         const C* __restrict__ vm, const C* __restrict__ kv,
                                                         const C* __restrict__ kc, int64_t total_v, int64_t Sv,
                                                         int64_t Cn, Div32 divSv, Div32 divC) {
  using P = Pack<T, V>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total_v; i += stride) {
    int64_t c;
    if constexpr (kFast) {
      const uint32_t plane = divSv.div(uint32_t(i));
      c = int64_t(plane - divC.div(plane) * uint32_t(Cn));
    } else {
      c = (i / Sv) % Cn;
    }
    const C a = ku[c], k = kc[c];
    const P pu = reinterpret_cast<const P*>(u)[i];
    P po;
    if constexpr (kHasV) {
      const P pv = reinterpret_cast<const P*>(v)[i];
      const C m = vm[c], b = kv[c];
#pragma unroll
      for (int j = 0; j < V; ++j) po.v[j] = store_c<T>(load_c<C>(pu.v[j]) * a + k + (load_c<C>(pv.v[j]) - m) * b);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) po.v[j] = store_c<T>(load_c<C>(pu.v[j]) * a + k);
    }
    reinterpret_cast<P*>(out)[i] = po;
  }
}

// The same over the flat index in packs of V that may straddle planes (S not a multiple of V): the channel is
// found per element. total < 2^31; the last total % V elements are done one by one.
template <class T, class C, int V, bool kHasV>
__global__ void __launch_bounds__(kThreads) apply_flat_kernel(T* __restrict__ out, const T* __restrict__ u,
                                                              const T* __restrict__ v, const C* __restrict__ ku,
                                                              const C* __restrict__ vm, const C* __restrict__ kv,
                                                              const C* __restrict__ kc, uint32_t total, uint32_t Cn,
                                                              Div32 divS, Div32 divC) {
  using P = Pack<T, V>;
  auto one = [&](uint32_t e, T uu, T vv) -> T {
    const uint32_t plane = divS.div(e);
    const uint32_t c = plane - divC.div(plane) * Cn;
    C r = load_c<C>(uu) * ku[c] + kc[c];
    if constexpr (kHasV) r += (load_c<C>(vv) - vm[c]) * kv[c];
    return store_c<T>(r);
  };
  const uint32_t total_v = total / V;
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total_v; i += stride) {
    const P pu = reinterpret_cast<const P*>(u)[i];
    P pv;
    if constexpr (kHasV) pv = reinterpret_cast<const P*>(v)[i];
    P po;
#pragma unroll
    for (int j = 0; j < V; ++j) po.v[j] = one(i * V + j, pu.v[j], kHasV ? pv.v[j] : pu.v[j]);
    reinterpret_cast<P*>(out)[i] = po;
  }
  if (blockIdx.x == 0 && threadIdx.x < total - total_v * V) {
    const uint32_t e = total_v * V + threadIdx.x;
    out[e] = one(e, u[e], kHasV ? v[e] : u[e]);
  }
}

// The widest pack (16 bytes at most) that divides S and that every pointer is aligned to.
template <class T>
int pack_size(int64_t S, std::initializer_list<const void*> ptrs) {
  int V = int(16 / sizeof(T));
  for (; V > 1; V /= 2) {
    bool ok = S % V == 0;
    for (const void* p : ptrs) ok = ok && (!p || reinterpret_cast<uintptr_t>(p) % (uintptr_t(V) * sizeof(T)) == 0);
    if (ok) break;
  }
  return V;
}

// Calls f(std::integral_constant<int, V>) for the runtime pack size V.
template <class T, class F>
void with_pack(int V, F&& f) {
  switch (V) {
    case 8: if constexpr (sizeof(T) * 8 <= 16) { f(std::integral_constant<int, 8>{}); return; } break;
    case 4: if constexpr (sizeof(T) * 4 <= 16) { f(std::integral_constant<int, 4>{}); return; } break;
    case 2: if constexpr (sizeof(T) * 2 <= 16) { f(std::integral_constant<int, 2>{}); return; } break;
    default: break;
  }
  f(std::integral_constant<int, 1>{});
}

template <class T, class C>
void launch_apply(T* out, const T* u, const T* v, const C* ku, const C* vm, const C* kv, const C* kc, int64_t total,
                  int64_t S, int64_t Cn, const char* what) {
  if (total == 0) return;
  const int widest = int(16 / sizeof(T));
  if (S % widest != 0 && total < (int64_t(1) << 31) && pack_size<T>(widest, {out, u, v}) == widest) {
    // Planes that packs cannot follow (e.g. 7x7): flat packs, channel per element.
    with_pack<T>(widest, [&](auto vtag) {
      constexpr int V = decltype(vtag)::value;
      const unsigned blocks = blocks_for(total / V, kThreads);
      const Div32 dS{uint32_t(S)}, dC{uint32_t(Cn)};
      if (v)
        apply_flat_kernel<T, C, V, true><<<blocks, kThreads, 0, stream()>>>(out, u, v, ku, vm, kv, kc,
                                                                            uint32_t(total), uint32_t(Cn), dS, dC);
      else
        apply_flat_kernel<T, C, V, false><<<blocks, kThreads, 0, stream()>>>(out, u, v, ku, vm, kv, kc,
                                                                             uint32_t(total), uint32_t(Cn), dS, dC);
      MC_CUDA_LAUNCHED(what);
    });
    return;
  }
  with_pack<T>(pack_size<T>(S, {out, u, v}), [&](auto vtag) {
    constexpr int V = decltype(vtag)::value;
    const int64_t total_v = total / V, Sv = S / V;
    const unsigned blocks = blocks_for(total_v, kThreads);
    const bool fast = total_v < (int64_t(1) << 31);
    const Div32 dS(fast ? uint32_t(Sv) : 1u), dC(fast ? uint32_t(Cn) : 1u);
    if (fast && v)
      apply_kernel<T, C, V, true, true><<<blocks, kThreads, 0, stream()>>>(out, u, v, ku, vm, kv, kc, total_v, Sv, Cn,
                                                                           dS, dC);
    else if (fast)
      apply_kernel<T, C, V, true, false><<<blocks, kThreads, 0, stream()>>>(out, u, v, ku, vm, kv, kc, total_v, Sv,
                                                                            Cn, dS, dC);
    else if (v)
      apply_kernel<T, C, V, false, true><<<blocks, kThreads, 0, stream()>>>(out, u, v, ku, vm, kv, kc, total_v, Sv,
                                                                            Cn, dS, dC);
    else
      apply_kernel<T, C, V, false, false><<<blocks, kThreads, 0, stream()>>>(out, u, v, ku, vm, kv, kc, total_v, Sv,
                                                                             Cn, dS, dC);
    MC_CUDA_LAUNCHED(what);
  });
}

// Parts per channel for the reduction kernels.
int parts_for(int64_t Cn, int64_t M) {
  const int64_t target = 8 * int64_t(std::max(1, props().multiProcessorCount));
  const int64_t want = (target + Cn - 1) / Cn;
  const int64_t most = std::max<int64_t>(1, M / 4096);
  return int(std::clamp<int64_t>(std::min(want, most), 1, 65535));
}

void dims(const Tensor& x, int64_t& N, int64_t& Cn, int64_t& S, const char* what) {
  MC_CHECK(x.dim() >= 2, what, ": input must be [N, C, *], got ", shape_str(x.shape()));
  N = x.size(0);
  Cn = x.size(1);
  S = 1;
  for (int d = 2; d < x.dim(); ++d) S *= x.size(d);
}

template <class T>
void check_stat(const Tensor& s, const char* what) {
  constexpr DType want = std::is_same_v<T, double> ? DType::F64 : DType::F32;
  MC_CHECK(s.dtype() == want && s.is_contiguous(), what, ": statistics tensor must be contiguous ", dtype_name(want),
           ", got ", dtype_name(s.dtype()));
}

Tensor target_for(const Tensor& t) {
  return t.is_contiguous() ? t : Tensor::empty(t.shape(), t.dtype(), Device::cuda(0));
}

// Launches the statistics kernel of x over grid (C, P) with the widest usable pack.
template <class T, class C>
void launch_stats(const T* x, int64_t Cn, int64_t S, int64_t M, int P, C* part, const char* what) {
  with_pack<T>(pack_size<T>(S, {x}), [&](auto vtag) {
    constexpr int V = decltype(vtag)::value;
    const int64_t Sv = S / V, Mv = M / V, chunk = std::max<int64_t>(1, (Mv + P - 1) / P);
    const dim3 grid{unsigned(Cn), unsigned(P)};
    if (Mv < (int64_t(1) << 31))
      stats_kernel<T, C, V, true><<<grid, kThreads, 0, stream()>>>(x, Cn, Sv, Mv, chunk,
                                                                   Div32(uint32_t(std::max<int64_t>(Sv, 1))), part);
    else
      stats_kernel<T, C, V, false><<<grid, kThreads, 0, stream()>>>(x, Cn, Sv, Mv, chunk, Div32(), part);
    MC_CUDA_LAUNCHED(what);
  });
}

template <class T, class C>
void launch_grad_sums(const T* g, const T* x, const C* mean, int64_t Cn, int64_t S, int64_t M, int P, C* part,
                      const char* what) {
  with_pack<T>(pack_size<T>(S, {g, x}), [&](auto vtag) {
    constexpr int V = decltype(vtag)::value;
    const int64_t Sv = S / V, Mv = M / V, chunk = std::max<int64_t>(1, (Mv + P - 1) / P);
    const dim3 grid{unsigned(Cn), unsigned(P)};
    if (Mv < (int64_t(1) << 31))
      grad_sums_kernel<T, C, V, true><<<grid, kThreads, 0, stream()>>>(
          g, x, mean, Cn, Sv, Mv, chunk, Div32(uint32_t(std::max<int64_t>(Sv, 1))), part);
    else
      grad_sums_kernel<T, C, V, false><<<grid, kThreads, 0, stream()>>>(g, x, mean, Cn, Sv, Mv, chunk, Div32(), part);
    MC_CUDA_LAUNCHED(what);
  });
}

template <class T>
void batch_norm_impl(const Tensor& out, const Tensor& save_mean, const Tensor& save_rstd, const Tensor& x,
                     const Param& pw, const Param& pb, const Param& prm, const Param& prv, bool training,
                     double momentum, double eps, int64_t Cn, int64_t S, int64_t M, const char* what) {
  using C = acc_of<T>;
  check_stat<T>(save_mean, what);
  check_stat<T>(save_rstd, what);
  const Tensor xc = contiguous(x);
  // Per-channel scale and shift ([2, C] in the compute type).
  const Tensor coef = scratch(int64_t(2 * Cn * sizeof(C)));
  C* scale = static_cast<C*>(coef.raw_data());
  C* shift = scale + Cn;
  Tensor part_t;
  int P = 1;
  if (training) {
    P = parts_for(Cn, M);
    part_t = scratch(int64_t(Cn) * P * 3 * int64_t(sizeof(C)));
    launch_stats<T, C>(dptr<const T>(xc), Cn, S, M, P, static_cast<C*>(part_t.raw_data()), what);
  }
  finalize_forward_kernel<C><<<blocks_for(Cn, kFinalizeThreads), kFinalizeThreads, 0, stream()>>>(
      training ? static_cast<const C*>(part_t.raw_data()) : nullptr, P, Cn, double(M), training, momentum, eps, pw,
      pb, prm, prv, dptr<C>(save_mean), dptr<C>(save_rstd), scale, shift);
  MC_CUDA_LAUNCHED(what);
  const Tensor oc = target_for(out);
  launch_apply<T, C>(dptr<T>(oc), dptr<const T>(xc), nullptr, scale, nullptr, nullptr, shift, xc.numel(), S, Cn,
                     what);
  if (!oc.is_same(out)) copy(out, oc);
}

template <class T>
void batch_norm_backward_impl(const Tensor& gx, const Param& pgw, const Param& pgb, const Tensor& gy, const Tensor& x,
                              const Param& pw, const Tensor& save_mean, const Tensor& save_rstd, bool training,
                              bool need_sums, int64_t Cn, int64_t S, int64_t M, const char* what) {
  using C = acc_of<T>;
  check_stat<T>(save_mean, what);
  check_stat<T>(save_rstd, what);
  const bool want_gx = gx.defined();
  const Tensor xc = contiguous(x), gyc = contiguous(gy);
  Tensor part_t;
  int P = 1;
  if (need_sums) {
    P = M > 0 ? parts_for(Cn, M) : 1;
    part_t = scratch(int64_t(Cn) * P * 2 * int64_t(sizeof(C)));
    launch_grad_sums<T, C>(dptr<const T>(gyc), dptr<const T>(xc), dptr<const C>(save_mean), Cn, S, M, P,
                           static_cast<C*>(part_t.raw_data()), what);
  }
  const Tensor coef = scratch(int64_t(4 * Cn * sizeof(C)));
  C* k1 = static_cast<C*>(coef.raw_data());
  C* km = k1 + Cn;
  C* kx = km + Cn;
  C* k0 = kx + Cn;
  finalize_backward_kernel<C><<<blocks_for(Cn, kFinalizeThreads), kFinalizeThreads, 0, stream()>>>(
      need_sums ? static_cast<const C*>(part_t.raw_data()) : nullptr, P, Cn, double(std::max<int64_t>(1, M)),
      training, want_gx, pw, dptr<const C>(save_mean), dptr<const C>(save_rstd), k1, km, kx, k0, pgw, pgb);
  MC_CUDA_LAUNCHED(what);
  if (want_gx) {
    const Tensor gc = target_for(gx);
    launch_apply<T, C>(dptr<T>(gc), dptr<const T>(gyc), training ? dptr<const T>(xc) : nullptr, k1, km, kx, k0,
                       xc.numel(), S, Cn, what);
    if (!gc.is_same(gx)) copy(gx, gc);
  }
}

}  // namespace

void batch_norm(const Tensor& out, const Tensor& save_mean, const Tensor& save_rstd, const Tensor& x, const Tensor& w,
                const Tensor& b, const Tensor& running_mean, const Tensor& running_var, bool training,
                double momentum, double eps) {
  const char* what = "batch_norm";
  int64_t N, Cn, S;
  dims(x, N, Cn, S, what);
  MC_CHECK(out.numel() == x.numel() && out.dtype() == x.dtype(), what, ": output ", shape_str(out.shape()),
           " does not match input ", shape_str(x.shape()));
  const bool have_running = running_mean.defined() && running_var.defined();
  MC_CHECK(training || have_running, what, ": running_mean and running_var must be given in evaluation mode");
  MC_CHECK(!training || N * S > 1, what, ": expected more than 1 value per channel when training, got input of shape ",
           shape_str(x.shape()));
  MC_CHECK(save_mean.numel() == Cn && save_rstd.numel() == Cn, what, ": statistics must have ", Cn, " elements");
  MC_CHECK(Cn <= kIntMaxGrid, what, ": too many channels (", Cn, ")");
  const Param pw = param_of(w, what, Cn), pb = param_of(b, what, Cn);
  const Param prm = have_running ? param_of(running_mean, what, Cn) : Param{};
  const Param prv = have_running ? param_of(running_var, what, Cn) : Param{};
  if (Cn == 0) return;
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), what, T, {
    batch_norm_impl<T>(out, save_mean, save_rstd, x, pw, pb, prm, prv, training, momentum, eps, Cn, S, N * S, what);
  });
}

void batch_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                         const Tensor& w, const Tensor& save_mean, const Tensor& save_rstd, bool training) {
  const char* what = "batch_norm_backward";
  int64_t N, Cn, S;
  dims(x, N, Cn, S, what);
  MC_CHECK(gy.numel() == x.numel() && (!gx.defined() || gx.numel() == x.numel()), what, ": inconsistent sizes");
  MC_CHECK(gy.dtype() == x.dtype() && (!gx.defined() || gx.dtype() == x.dtype()), what, ": dtypes differ (",
           dtype_name(x.dtype()), ", ", dtype_name(gy.dtype()), ")");
  MC_CHECK(save_mean.numel() == Cn && save_rstd.numel() == Cn, what, ": statistics must have ", Cn, " elements");
  MC_CHECK(Cn <= kIntMaxGrid, what, ": too many channels (", Cn, ")");
  const Param pw = param_of(w, what, Cn), pgw = param_of(gw, what, Cn), pgb = param_of(gb, what, Cn);
  if (Cn == 0) return;
  const bool need_sums = gw.defined() || gb.defined() || (training && gx.defined());
  if (!gx.defined() && !need_sums) return;
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), what, T, {
    batch_norm_backward_impl<T>(gx, pgw, pgb, gy, x, pw, save_mean, save_rstd, training, need_sums, Cn, S, N * S,
                                what);
  });
}

}  // namespace mc::cuda
