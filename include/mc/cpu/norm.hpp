// mc/cpu/norm.hpp — layer norm and batch norm on the CPU, forward and backward.
//
// Layer norm: x (contiguous) viewed as [rows, cols]; each row is normalised with its own mean and biased
// variance, then scaled by w and shifted by b (both optional, [cols], any floating dtype). mean/rstd hold
// one value per row, f64 for f64 input and f32 otherwise.
//
// Batch norm: x (contiguous) viewed as [N, C, S] with S the product of the trailing dims; channel c is
// normalised with statistics over its N*S values. Training uses the batch statistics (biased variance)
// and, when running_mean/running_var are given, updates them in place with the unbiased variance:
// running = (1 - momentum) * running + momentum * batch. Eval uses the running statistics. save_mean and
// save_rstd receive the statistics actually used, so the backward needs nothing else.
//
// Row statistics are computed in the compute type (f32 for f32/bf16/f16, f64 for f64) with several
// independent accumulators (vectorisable, and more accurate than one running sum); batch-norm statistics
// and parameter gradients are combined in f64 across rows, like PyTorch's CPU kernels.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "mc/cpu/elementwise.hpp"

namespace mc::cpu {
namespace norm_detail {

template <class C>
inline constexpr int kLanes = std::is_same_v<C, double> ? 8 : 16;

// Element storage as the loops see it: bf16 as its raw bits (uint16_t), so that loads and stores are plain
// integer operations the vectoriser handles; other types as themselves. raw() converts a pointer.
template <class T>
using raw_t = std::conditional_t<std::is_same_v<T, bf16>, uint16_t, T>;

template <class T>
inline raw_t<T>* raw(T* p) {
  return reinterpret_cast<raw_t<T>*>(p);
}
template <class T>
inline const raw_t<T>* raw(const T* p) {
  return reinterpret_cast<const raw_t<T>*>(p);
}

// Element j in the compute type, and rounding back; for bf16 the same round-to-nearest-even (NaN stays
// NaN) as mc::bf16, written without branches.
template <class T, class C>
inline C ld(const raw_t<T>* p, int64_t j) {
  if constexpr (std::is_same_v<T, bf16>) {
    return std::bit_cast<float>(uint32_t(p[j]) << 16);
  } else {
    return C(p[j]);
  }
}

template <class T, class C>
inline void st(raw_t<T>* p, int64_t j, C v) {
  if constexpr (std::is_same_v<T, bf16>) {
    const uint32_t u = std::bit_cast<uint32_t>(float(v));
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, q = (u >> 16) | 0x40u;
    p[j] = uint16_t((u & 0x7fffffffu) > 0x7f800000u ? q : r);
  } else {
    p[j] = T(v);
  }
}

// Runs the statement(s) in __VA_ARGS__ for j in [0, n): blocks of L lanes, then the tail. A constant inner
// trip count is what GCC vectorises at -O2; the body is written out in place rather than passed as a lambda
// because captured pointers defeat the vectoriser, and ivdep records that the rows never overlap.
#if defined(__GNUC__) && !defined(__clang__)
#define MC_NORM_IVDEP _Pragma("GCC ivdep")
#else
#define MC_NORM_IVDEP
#endif
#define MC_NORM_LOOP(L, n, ...)                   \
  do {                                            \
    int64_t blk_ = 0;                             \
    for (; blk_ + (L) <= (n); blk_ += (L)) {      \
      MC_NORM_IVDEP                               \
      for (int k_ = 0; k_ < (L); ++k_) {          \
        const int64_t j = blk_ + k_;              \
        __VA_ARGS__                               \
      }                                           \
    }                                             \
    for (int64_t j = blk_; j < (n); ++j) {        \
      __VA_ARGS__                                 \
    }                                             \
  } while (0)

template <class C, int L>
inline C fold(C (&a)[L]) {
  for (int w = L / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) a[k] += a[k + w];
  return a[0];
}

// Reductions with L independent accumulators (lane k takes elements k, k + L, ...).

// sum(p[0..n))
template <class T, class C>
inline C sum_row(const raw_t<T>* __restrict p, int64_t n) {
  constexpr int L = kLanes<C>;
  C a[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) a[k] += ld<T, C>(p, i + k);
  for (int k = 0; i < n; ++i, ++k) a[k] += ld<T, C>(p, i);
  return fold<C, L>(a);
}

// sum((p - m)^2)
template <class T, class C>
inline C sumsq_centered(const raw_t<T>* __restrict p, int64_t n, C m) {
  constexpr int L = kLanes<C>;
  C a[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) {
      const C d = ld<T, C>(p, i + k) - m;
      a[k] += d * d;
    }
  for (int k = 0; i < n; ++i, ++k) {
    const C d = ld<T, C>(p, i) - m;
    a[k] += d * d;
  }
  return fold<C, L>(a);
}

// s1 = sum(dy), s2 = sum(dy * (x - m)) with dy = g * w (HW) or g.
template <bool HW, class T, class C>
inline void sums_dy(const raw_t<T>* __restrict g, const C* __restrict w, const raw_t<T>* __restrict x, int64_t n, C m,
                    C& s1, C& s2) {
  constexpr int L = kLanes<C>;
  C a[L] = {}, b[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) {
      C gv = ld<T, C>(g, i + k);
      if constexpr (HW) gv *= w[i + k];
      a[k] += gv;
      b[k] += gv * (ld<T, C>(x, i + k) - m);
    }
  for (int k = 0; i < n; ++i, ++k) {
    C gv = ld<T, C>(g, i);
    if constexpr (HW) gv *= w[i];
    a[k] += gv;
    b[k] += gv * (ld<T, C>(x, i) - m);
  }
  s1 = fold<C, L>(a);
  s2 = fold<C, L>(b);
}

// s1 = sum(g), s2 = sum(g * (x - m))
template <class T, class C>
inline void sums_g_gx(const raw_t<T>* __restrict g, const raw_t<T>* __restrict x, int64_t n, C m, C& s1, C& s2) {
  sums_dy<false, T, C>(g, nullptr, x, n, m, s1, s2);
}

// Row loops (o, and the partial sums, never overlap the inputs).

// o = (x rs + sh) [* w] [+ b]
template <bool HW, bool HB, class T, class C>
inline void ln_out_row(raw_t<T>* __restrict o, const raw_t<T>* __restrict x, const C* __restrict w,
                       const C* __restrict b, int64_t n, C rs, C sh) {
  MC_NORM_LOOP(kLanes<C>, n, {
    C v = ld<T, C>(x, j) * rs + sh;
    if constexpr (HW) v *= w[j];
    if constexpr (HB) v += b[j];
    st<T, C>(o, j, v);
  });
}

// o = g [* w] rs + (x - m) kx + k0
template <bool HW, class T, class C>
inline void ln_gx_row(raw_t<T>* __restrict o, const raw_t<T>* __restrict g, const raw_t<T>* __restrict x,
                      const C* __restrict w, int64_t n, C rs, C m, C kx, C k0) {
  MC_NORM_LOOP(kLanes<C>, n, {
    C dy = ld<T, C>(g, j);
    if constexpr (HW) dy *= w[j];
    st<T, C>(o, j, dy * rs + (ld<T, C>(x, j) - m) * kx + k0);
  });
}

// pw += g (x - m) rs, pb += g
template <bool WW, bool WB, class T, class C>
inline void ln_acc_row(C* __restrict pw, C* __restrict pb, const raw_t<T>* __restrict g, const raw_t<T>* __restrict x,
                       int64_t n, C m, C rs) {
  MC_NORM_LOOP(kLanes<C>, n, {
    const C gv = ld<T, C>(g, j);
    if constexpr (WW) pw[j] += gv * ((ld<T, C>(x, j) - m) * rs);
    if constexpr (WB) pb[j] += gv;
  });
}

// o = u a + (v - m) bb + cc with scalar coefficients (HV), or o = u a + cc
template <bool HV, class T, class C>
inline void affine_seg(raw_t<T>* __restrict o, const raw_t<T>* __restrict u, const raw_t<T>* __restrict v, int64_t n,
                       C a, C m, C bb, C cc) {
  MC_NORM_LOOP(kLanes<C>, n, {
    C r = ld<T, C>(u, j) * a + cc;
    if constexpr (HV) r += (ld<T, C>(v, j) - m) * bb;
    st<T, C>(o, j, r);
  });
}

// The same with per-element coefficients.
template <bool HV, class T, class C>
inline void affine_row(raw_t<T>* __restrict o, const raw_t<T>* __restrict u, const raw_t<T>* __restrict v,
                       const C* __restrict a, const C* __restrict m, const C* __restrict bb, const C* __restrict cc,
                       int64_t n) {
  MC_NORM_LOOP(kLanes<C>, n, {
    C r = ld<T, C>(u, j) * a[j] + cc[j];
    if constexpr (HV) r += (ld<T, C>(v, j) - m[j]) * bb[j];
    st<T, C>(o, j, r);
  });
}

// acc += x
template <class T, class C>
inline void col_sum(double* __restrict acc, const raw_t<T>* __restrict x, int64_t n) {
  MC_NORM_LOOP(kLanes<C>, n, { acc[j] += double(ld<T, C>(x, j)); });
}

// acc += (x - mk)^2
template <class T, class C>
inline void col_sumsq(double* __restrict acc, const raw_t<T>* __restrict x, const C* __restrict mk, int64_t n) {
  MC_NORM_LOOP(kLanes<C>, n, {
    const C d = ld<T, C>(x, j) - mk[j];
    acc[j] += double(d * d);
  });
}

// a1 += g, a2 += g (x - mk)
template <class T, class C>
inline void col_sum_grad(double* __restrict a1, double* __restrict a2, const raw_t<T>* __restrict g,
                         const raw_t<T>* __restrict x, const C* __restrict mk, int64_t n) {
  MC_NORM_LOOP(kLanes<C>, n, {
    const C gv = ld<T, C>(g, j);
    a1[j] += double(gv);
    a2[j] += double(gv * (ld<T, C>(x, j) - mk[j]));
  });
}

// A 1-d (or contiguous) floating tensor as a vector of C; empty when t is undefined.
template <class C>
inline std::vector<C> load_vec(const Tensor& t, const char* what) {
  if (!t.defined()) return {};
  std::vector<C> v(size_t(t.numel()));
  MC_CHECK(t.dim() <= 1 || t.is_contiguous(), what, ": parameter of shape ", shape_str(t.shape()),
           " must be contiguous");
  const int64_t st = t.dim() == 1 ? t.stride(0) : 1;
  MC_DISPATCH_FLOAT(t.dtype(), what, P, {
    const P* p = ptr<const P>(t);
    for (size_t i = 0; i < v.size(); ++i) v[i] = C(acc_t<P>(p[int64_t(i) * st]));
  });
  return v;
}

// Writes vals (t.numel() values) into t, converting to its dtype.
template <class C>
inline void store_vec(const Tensor& t, const C* vals, const char* what) {
  MC_CHECK(t.dim() <= 1 || t.is_contiguous(), what, ": output of shape ", shape_str(t.shape()), " must be contiguous");
  const int64_t st = t.dim() == 1 ? t.stride(0) : 1, n = t.numel();
  MC_DISPATCH_FLOAT(t.dtype(), what, P, {
    P* p = ptr<P>(t);
    for (int64_t i = 0; i < n; ++i) p[i * st] = P(acc_t<P>(vals[i]));
  });
}

template <class T>
inline void check_stat_dtype(const Tensor& s, const char* what) {
  constexpr DType want = std::is_same_v<T, double> ? DType::F64 : DType::F32;
  MC_CHECK(s.dtype() == want && s.is_contiguous(), what, ": statistics tensor must be contiguous ", dtype_name(want),
           ", got ", dtype_name(s.dtype()));
}

// Splits [0, n) into at most one chunk per thread (chunks of >= grain items): {chunks, step}.
inline std::pair<int64_t, int64_t> chunking(int64_t n, int64_t grain) {
  const int64_t most = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(most, thread_pool().size()));
  return {chunks, (n + chunks - 1) / chunks};
}

// Batch norm views x as [N, C, S]. Channel path: channel c owns N contiguous segments of S values. Row
// path (small S, e.g. [N, C]): rows of K = C*S values, reduced over N with per-thread partials and applied
// with per-element coefficients. The statistics switch to the channel path later than the elementwise
// passes, because short segments make their per-segment reductions comparatively expensive.
inline constexpr int64_t kSegmentApply = 16, kSegmentStats = 64;

// The statistics also take the row path for long segments when there are fewer channels than threads
// (it splits the columns instead), as long as its per-column buffers stay small.
inline bool stats_by_channel(int64_t Cn, int64_t S) {
  return S >= kSegmentStats && (Cn >= thread_pool().size() || Cn * S > (int64_t(1) << 20));
}

// Column sums of a row-major [N, K] layout in double: returns nsum * K values, where f(n, acc, k0, k1) adds
// row n's columns [k0, k1) into acc (sum i of column k at acc[i * K + k]). Wide rows are split into column
// blocks, one accumulator; narrow ones into chunks of rows with per-thread partials that are added up.
template <class F>
inline std::vector<double> column_sums(int64_t N, int64_t K, int nsum, F&& f) {
  constexpr int64_t kBlock = 1024;
  std::vector<double> acc(size_t(K * nsum), 0.0);
  if (K >= kBlock * thread_pool().size() || N < 2 * thread_pool().size()) {
    parallel_for(K, std::min<int64_t>(K, kBlock), [&](int64_t k0, int64_t k1) {
      for (int64_t n = 0; n < N; ++n) f(n, acc.data(), k0, k1);
    });
    return acc;
  }
  const auto chunked = chunking(N, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, K)));
  const int64_t chunks = chunked.first, step = chunked.second;
  std::vector<double> part(size_t((chunks - 1) * K * nsum), 0.0);
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      double* a = c == 0 ? acc.data() : part.data() + (c - 1) * K * nsum;
      for (int64_t n = c * step, e = std::min(N, (c + 1) * step); n < e; ++n) f(n, a, int64_t(0), K);
    }
  });
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t k = 0; k < K * nsum; ++k) acc[size_t(k)] += part[size_t((c - 1) * K * nsum + k)];
  return acc;
}

// out = u * ku[c] + (v - vm[c]) * kv[c] + kc[c] over the [N, C, S] layout; v may be null (then vm and kv
// are unused).
template <class T, class C>
inline void bn_apply(raw_t<T>* out, const raw_t<T>* u, const raw_t<T>* v, const std::vector<C>& ku,
                     const std::vector<C>& vm, const std::vector<C>& kv, const std::vector<C>& kc, int64_t N,
                     int64_t Cn, int64_t S) {
  if (S >= kSegmentApply) {
    parallel_for(N * Cn, std::max<int64_t>(1, 32768 / S), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const size_t c = size_t(r % Cn);
        const C a = ku[c], cc = kc[c];
        if (v)
          affine_seg<true, T, C>(out + r * S, u + r * S, v + r * S, S, a, vm[c], kv[c], cc);
        else
          affine_seg<false, T, C>(out + r * S, u + r * S, nullptr, S, a, C(0), C(0), cc);
      }
    });
    return;
  }
  const int64_t K = Cn * S;
  auto expand = [&](const std::vector<C>& per_channel) {
    std::vector<C> e(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) e[size_t(k)] = per_channel[size_t(k / S)];
    return e;
  };
  const std::vector<C> eu = expand(ku), ec = expand(kc), em = v ? expand(vm) : std::vector<C>(),
                       ev = v ? expand(kv) : std::vector<C>();
  parallel_for(N, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, K)), [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      if (v)
        affine_row<true, T, C>(out + n * K, u + n * K, v + n * K, eu.data(), em.data(), ev.data(), ec.data(), K);
      else
        affine_row<false, T, C>(out + n * K, u + n * K, nullptr, eu.data(), nullptr, nullptr, ec.data(), K);
    }
  });
}

// Batch mean and biased variance per channel, in double.
template <class T>
inline void bn_stats(const raw_t<T>* x, int64_t N, int64_t Cn, int64_t S, std::vector<double>& mean,
                     std::vector<double>& var) {
  using C = acc_t<T>;
  const double M = double(N * S);
  mean.assign(size_t(Cn), 0.0);
  var.assign(size_t(Cn), 0.0);
  if (stats_by_channel(Cn, S)) {
    parallel_for(Cn, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, N * S)), [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += double(sum_row<T, C>(x + (n * Cn + c) * S, S));
        const double m = s / M;
        const C mc = C(m);
        double q = 0;
        for (int64_t n = 0; n < N; ++n) q += double(sumsq_centered<T, C>(x + (n * Cn + c) * S, S, mc));
        const double d = m - double(mc);  // sum((x-m)^2) = sum((x-mc)^2) - M (m-mc)^2
        mean[size_t(c)] = m;
        var[size_t(c)] = std::max(0.0, q / M - d * d);
      }
    });
    return;
  }
  const int64_t K = Cn * S;
  std::vector<double> s = column_sums(N, K, 1, [&](int64_t n, double* acc, int64_t k0, int64_t k1) {
    col_sum<T, C>(acc + k0, x + n * K + k0, k1 - k0);
  });
  for (int64_t k = 0; k < K; ++k) mean[size_t(k / S)] += s[size_t(k)];
  for (double& m : mean) m /= M;
  std::vector<C> mk(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) mk[size_t(k)] = C(mean[size_t(k / S)]);
  std::vector<double> q = column_sums(N, K, 1, [&](int64_t n, double* acc, int64_t k0, int64_t k1) {
    col_sumsq<T, C>(acc + k0, x + n * K + k0, mk.data() + k0, k1 - k0);
  });
  for (int64_t k = 0; k < K; ++k) var[size_t(k / S)] += q[size_t(k)];
  for (int64_t c = 0; c < Cn; ++c) {
    const double d = mean[size_t(c)] - double(C(mean[size_t(c)]));
    var[size_t(c)] = std::max(0.0, var[size_t(c)] / M - d * d);
  }
}

// Per channel: sg = sum(g), sgx = sum(g * (x - mean)), in double.
template <class T>
inline void bn_grad_sums(const raw_t<T>* g, const raw_t<T>* x, const std::vector<double>& mean, int64_t N, int64_t Cn,
                         int64_t S, std::vector<double>& sg, std::vector<double>& sgx) {
  using C = acc_t<T>;
  sg.assign(size_t(Cn), 0.0);
  sgx.assign(size_t(Cn), 0.0);
  if (stats_by_channel(Cn, S)) {
    parallel_for(Cn, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, N * S)), [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        const C mc = C(mean[size_t(c)]);
        const double d = mean[size_t(c)] - double(mc);
        double s1 = 0, s2 = 0;
        for (int64_t n = 0; n < N; ++n) {
          C a, bb;
          sums_g_gx<T, C>(g + (n * Cn + c) * S, x + (n * Cn + c) * S, S, mc, a, bb);
          s1 += double(a);
          s2 += double(bb);
        }
        sg[size_t(c)] = s1;
        sgx[size_t(c)] = s2 - d * s1;  // sum(g (x - m)) = sum(g (x - mc)) - (m - mc) sum(g)
      }
    });
    return;
  }
  const int64_t K = Cn * S;
  std::vector<C> mk(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) mk[size_t(k)] = C(mean[size_t(k / S)]);
  std::vector<double> s = column_sums(N, K, 2, [&](int64_t n, double* acc, int64_t k0, int64_t k1) {
    col_sum_grad<T, C>(acc + k0, acc + K + k0, g + n * K + k0, x + n * K + k0, mk.data() + k0, k1 - k0);
  });
  for (int64_t k = 0; k < K; ++k) {
    sg[size_t(k / S)] += s[size_t(k)];
    sgx[size_t(k / S)] += s[size_t(K + k)];
  }
  for (int64_t c = 0; c < Cn; ++c) sgx[size_t(c)] -= (mean[size_t(c)] - double(C(mean[size_t(c)]))) * sg[size_t(c)];
}

inline void bn_dims(const Tensor& x, int64_t& N, int64_t& Cn, int64_t& S, const char* what) {
  MC_CHECK(x.dim() >= 2, what, ": input must be [N, C, *], got ", shape_str(x.shape()));
  N = x.size(0);
  Cn = x.size(1);
  S = 1;
  for (int d = 2; d < x.dim(); ++d) S *= x.size(d);
}

}  // namespace norm_detail

// ---- layer norm ----

inline void layer_norm(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& w,
                       const Tensor& b, double eps) {
  using namespace norm_detail;
  MC_CHECK(x.is_contiguous() && out.is_contiguous(), "layer_norm: cpu kernel expects contiguous tensors");
  const int64_t rows = mean.numel(), cols = rows ? x.numel() / rows : 0;
  if (rows == 0) return;
  MC_CHECK(rows * cols == x.numel() && rstd.numel() == rows && out.numel() == x.numel(),
           "layer_norm: inconsistent sizes (x ", shape_str(x.shape()), ", ", rows, " rows)");
  MC_CHECK((!w.defined() || w.numel() == cols) && (!b.defined() || b.numel() == cols),
           "layer_norm: weight/bias must have ", cols, " elements");
  MC_DISPATCH_FLOAT(x.dtype(), "layer_norm", T, {
    using C = acc_t<T>;
    check_stat_dtype<T>(mean, "layer_norm");
    check_stat_dtype<T>(rstd, "layer_norm");
    const std::vector<C> wv = load_vec<C>(w, "layer_norm"), bv = load_vec<C>(b, "layer_norm");
    const C* wp = w.defined() ? wv.data() : nullptr;
    const C* bp = b.defined() ? bv.data() : nullptr;
    const raw_t<T>* xp = raw(ptr<const T>(x));
    raw_t<T>* op = raw(ptr<T>(out));
    C* mp = ptr<C>(mean);
    C* rp = ptr<C>(rstd);
    const C inv = cols ? C(1) / C(cols) : C(0), ce = C(eps);
    parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, cols)), [&](int64_t rb, int64_t re) {
      for (int64_t r = rb; r < re; ++r) {
        const raw_t<T>* xr = xp + r * cols;
        const C m = sum_row<T, C>(xr, cols) * inv;
        const C var = sumsq_centered<T, C>(xr, cols, m) * inv;
        const C rs = C(1) / std::sqrt(std::max(var, C(0)) + ce);
        mp[r] = m;
        rp[r] = rs;
        const C sh = -m * rs;
        raw_t<T>* o = op + r * cols;
        if (wp && bp)
          ln_out_row<true, true, T, C>(o, xr, wp, bp, cols, rs, sh);
        else if (wp)
          ln_out_row<true, false, T, C>(o, xr, wp, bp, cols, rs, sh);
        else if (bp)
          ln_out_row<false, true, T, C>(o, xr, wp, bp, cols, rs, sh);
        else
          ln_out_row<false, false, T, C>(o, xr, wp, bp, cols, rs, sh);
      }
    });
  });
}

// With xhat = (x - mean) * rstd and dy = gy * w (gy without w):
//   gx = rstd * (dy - mean_j(dy) - xhat * mean_j(dy * xhat)),  gw = sum_rows(gy * xhat),  gb = sum_rows(gy).
// Any of gx, gw, gb may be undefined (not wanted).
inline void layer_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                                const Tensor& w, const Tensor& mean, const Tensor& rstd) {
  using namespace norm_detail;
  MC_CHECK(x.is_contiguous() && gy.is_contiguous() && (!gx.defined() || gx.is_contiguous()),
           "layer_norm_backward: cpu kernel expects contiguous tensors");
  const int64_t rows = mean.numel(), cols = rows ? x.numel() / rows : 0;
  if (rows == 0) {
    if (gw.defined()) fill(gw, 0);
    if (gb.defined()) fill(gb, 0);
    return;
  }
  MC_CHECK(gy.numel() == x.numel() && (!gx.defined() || gx.numel() == x.numel()) && rstd.numel() == rows,
           "layer_norm_backward: inconsistent sizes");
  MC_CHECK((!w.defined() || w.numel() == cols) && (!gw.defined() || gw.numel() == cols) &&
               (!gb.defined() || gb.numel() == cols),
           "layer_norm_backward: weight and its gradients must have ", cols, " elements");
  MC_DISPATCH_FLOAT(x.dtype(), "layer_norm_backward", T, {
    using C = acc_t<T>;
    check_stat_dtype<T>(mean, "layer_norm_backward");
    check_stat_dtype<T>(rstd, "layer_norm_backward");
    const std::vector<C> wv = load_vec<C>(w, "layer_norm_backward");
    const C* wp = w.defined() ? wv.data() : nullptr;
    const raw_t<T>* xp = raw(ptr<const T>(x));
    const raw_t<T>* gp = raw(ptr<const T>(gy));
    raw_t<T>* gxp = gx.defined() ? raw(ptr<T>(gx)) : nullptr;
    const C* mp = ptr<const C>(mean);
    const C* rp = ptr<const C>(rstd);
    const bool want_w = gw.defined(), want_b = gb.defined();
    const C inv = C(1) / C(std::max<int64_t>(1, cols));
    const auto chunked = chunking(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols)));
    const int64_t chunks = chunked.first, step = chunked.second;
    // Per-chunk partial sums of gw (first cols) and gb (next cols).
    std::vector<C> part(want_w || want_b ? size_t(chunks * 2 * cols) : 0, C(0));
    parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t ch = cb; ch < ce; ++ch) {
        C* pw = want_w || want_b ? part.data() + ch * 2 * cols : nullptr;
        C* pb = pw ? pw + cols : nullptr;
        for (int64_t r = ch * step, re = std::min(rows, (ch + 1) * step); r < re; ++r) {
          const raw_t<T>* xr = xp + r * cols;
          const raw_t<T>* gr = gp + r * cols;
          const C m = mp[r], rs = rp[r];
          if (gxp) {
            // gx = rs*dy + (x - m)*kx + k0 with kx = -s2 rs^3 / cols, k0 = -s1 rs / cols
            C s1, s2;
            if (wp)
              sums_dy<true, T, C>(gr, wp, xr, cols, m, s1, s2);
            else
              sums_dy<false, T, C>(gr, wp, xr, cols, m, s1, s2);
            const C kx = -s2 * rs * rs * rs * inv, k0 = -s1 * rs * inv;
            if (wp)
              ln_gx_row<true, T, C>(gxp + r * cols, gr, xr, wp, cols, rs, m, kx, k0);
            else
              ln_gx_row<false, T, C>(gxp + r * cols, gr, xr, wp, cols, rs, m, kx, k0);
          }
          if (want_w && want_b)
            ln_acc_row<true, true, T, C>(pw, pb, gr, xr, cols, m, rs);
          else if (want_w)
            ln_acc_row<true, false, T, C>(pw, pb, gr, xr, cols, m, rs);
          else if (want_b)
            ln_acc_row<false, true, T, C>(pw, pb, gr, xr, cols, m, rs);
        }
      }
    });
    if (want_w || want_b) {
      std::vector<C> red(size_t(2 * cols));
      parallel_for(2 * cols, 4096, [&](int64_t b0, int64_t e0) {
        for (int64_t j = b0; j < e0; ++j) {
          C s = 0;
          for (int64_t ch = 0; ch < chunks; ++ch) s += part[size_t(ch * 2 * cols + j)];
          red[size_t(j)] = s;
        }
      });
      if (want_w) store_vec<C>(gw, red.data(), "layer_norm_backward");
      if (want_b) store_vec<C>(gb, red.data() + cols, "layer_norm_backward");
    }
  });
}

// ---- batch norm ----

inline void batch_norm(const Tensor& out, const Tensor& save_mean, const Tensor& save_rstd, const Tensor& x,
                       const Tensor& w, const Tensor& b, const Tensor& running_mean, const Tensor& running_var,
                       bool training, double momentum, double eps) {
  using namespace norm_detail;
  MC_CHECK(x.is_contiguous() && out.is_contiguous(), "batch_norm: cpu kernel expects contiguous tensors");
  int64_t N, Cn, S;
  bn_dims(x, N, Cn, S, "batch_norm");
  const bool have_running = running_mean.defined() && running_var.defined();
  MC_CHECK(training || have_running, "batch_norm: running_mean and running_var must be given in evaluation mode");
  MC_CHECK(!training || N * S > 1,
           "batch_norm: expected more than 1 value per channel when training, got input of shape ",
           shape_str(x.shape()));
  MC_CHECK(save_mean.numel() == Cn && save_rstd.numel() == Cn, "batch_norm: statistics must have ", Cn, " elements");
  for (const Tensor* t : {&w, &b, &running_mean, &running_var})
    MC_CHECK(!t->defined() || t->numel() == Cn, "batch_norm: parameters must have ", Cn, " elements, got ",
             shape_str(t->shape()));
  MC_DISPATCH_FLOAT(x.dtype(), "batch_norm", T, {
    using C = acc_t<T>;
    check_stat_dtype<T>(save_mean, "batch_norm");
    check_stat_dtype<T>(save_rstd, "batch_norm");
    const raw_t<T>* xp = raw(ptr<const T>(x));
    std::vector<double> mean, var;
    if (training) {
      bn_stats<T>(xp, N, Cn, S, mean, var);
      if (have_running) {
        std::vector<double> rm = load_vec<double>(running_mean, "batch_norm"),
                            rv = load_vec<double>(running_var, "batch_norm");
        const double M = double(N * S), unbias = M / (M - 1);
        for (int64_t c = 0; c < Cn; ++c) {
          rm[size_t(c)] = (1 - momentum) * rm[size_t(c)] + momentum * mean[size_t(c)];
          rv[size_t(c)] = (1 - momentum) * rv[size_t(c)] + momentum * var[size_t(c)] * unbias;
        }
        store_vec<double>(running_mean, rm.data(), "batch_norm");
        store_vec<double>(running_var, rv.data(), "batch_norm");
      }
    } else {
      mean = load_vec<double>(running_mean, "batch_norm");
      var = load_vec<double>(running_var, "batch_norm");
    }
    const std::vector<double> wv = load_vec<double>(w, "batch_norm"), bv = load_vec<double>(b, "batch_norm");
    std::vector<C> scale(static_cast<size_t>(Cn)), shift(static_cast<size_t>(Cn));
    C* sm = ptr<C>(save_mean);
    C* sr = ptr<C>(save_rstd);
    for (size_t c = 0; c < size_t(Cn); ++c) {
      const double rs = 1.0 / std::sqrt(var[c] + eps);
      const double a = w.defined() ? rs * wv[c] : rs;
      scale[c] = C(a);
      shift[c] = C((b.defined() ? bv[c] : 0.0) - mean[c] * a);
      sm[c] = C(mean[c]);
      sr[c] = C(rs);
    }
    bn_apply<T, C>(raw(ptr<T>(out)), xp, nullptr, scale, {}, {}, shift, N, Cn, S);
  });
}

// Training (xhat = (x - mean) rstd, M = N*S values per channel):
//   gx = w rstd (gy - sum(gy)/M - xhat sum(gy xhat)/M);  eval: gx = w rstd gy.
//   gw = sum(gy xhat), gb = sum(gy) in both modes. Any of gx, gw, gb may be undefined.
inline void batch_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                                const Tensor& w, const Tensor& save_mean, const Tensor& save_rstd, bool training) {
  using namespace norm_detail;
  MC_CHECK(x.is_contiguous() && gy.is_contiguous() && (!gx.defined() || gx.is_contiguous()),
           "batch_norm_backward: cpu kernel expects contiguous tensors");
  int64_t N, Cn, S;
  bn_dims(x, N, Cn, S, "batch_norm_backward");
  MC_CHECK(gy.numel() == x.numel() && (!gx.defined() || gx.numel() == x.numel()),
           "batch_norm_backward: inconsistent sizes");
  MC_CHECK(save_mean.numel() == Cn && save_rstd.numel() == Cn, "batch_norm_backward: statistics must have ", Cn,
           " elements");
  for (const Tensor* t : {&w, &gw, &gb})
    MC_CHECK(!t->defined() || t->numel() == Cn, "batch_norm_backward: parameters must have ", Cn, " elements");
  MC_DISPATCH_FLOAT(x.dtype(), "batch_norm_backward", T, {
    using C = acc_t<T>;
    check_stat_dtype<T>(save_mean, "batch_norm_backward");
    check_stat_dtype<T>(save_rstd, "batch_norm_backward");
    const raw_t<T>* xp = raw(ptr<const T>(x));
    const raw_t<T>* gp = raw(ptr<const T>(gy));
    const std::vector<double> mean = load_vec<double>(save_mean, "batch_norm_backward"),
                              rstd = load_vec<double>(save_rstd, "batch_norm_backward"),
                              wv = load_vec<double>(w, "batch_norm_backward");
    std::vector<double> sg, sgx;
    const bool need_sums = gw.defined() || gb.defined() || (training && gx.defined());
    if (need_sums) bn_grad_sums<T>(gp, xp, mean, N, Cn, S, sg, sgx);
    if (gx.defined()) {
      const double M = double(std::max<int64_t>(1, N * S));
      std::vector<C> k1(static_cast<size_t>(Cn)), km(static_cast<size_t>(Cn)), kx(static_cast<size_t>(Cn)),
          k0(static_cast<size_t>(Cn));
      for (size_t c = 0; c < size_t(Cn); ++c) {
        const double a = (w.defined() ? wv[c] : 1.0) * rstd[c];
        k1[c] = C(a);
        km[c] = C(mean[c]);
        // training: gx = a gy + (x - mean) kx + k0; the centring uses the rounded mean, so k0 absorbs the rest
        const double k = training ? -a * rstd[c] * rstd[c] * sgx[c] / M : 0.0;
        kx[c] = C(k);
        k0[c] = training ? C(-a * sg[c] / M + k * (double(km[c]) - mean[c])) : C(0);
      }
      bn_apply<T, C>(raw(ptr<T>(gx)), gp, training ? xp : nullptr, k1, km, kx, k0, N, Cn, S);
    }
    if (gw.defined()) {
      std::vector<double> v(static_cast<size_t>(Cn));
      for (size_t c = 0; c < size_t(Cn); ++c) v[c] = sgx[c] * rstd[c];
      store_vec<double>(gw, v.data(), "batch_norm_backward");
    }
    if (gb.defined()) store_vec<double>(gb, sg.data(), "batch_norm_backward");
  });
}

}  // namespace mc::cpu

#undef MC_NORM_LOOP
#undef MC_NORM_IVDEP
