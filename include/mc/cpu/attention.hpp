// mc/cpu/attention.hpp — scaled dot-product attention on the CPU: attention (forward) and attention_backward.
//
// Shapes: q [B,H,Lq,D], k [B,H,Lk,D], v [B,H,Lk,Dv], out [B,H,Lq,Dv], lse f32 [B,H,Lq]; any strides (the
// inner products go through gemm, which takes a row and a column stride per operand). Per query row i:
//   s_ij = scale * q_i . k_j for the keys j it may see (all of them, minus those with key_padding_mask[b,j]
//   true, minus j > i + (Lk - Lq) when causal), p_i = softmax(s_i), out_i = sum_j p_ij v_j,
//   lse_i = log sum_j exp(s_ij).
// A row that may see no key at all gets out_i = 0, lse_i = -inf, and zero gradients (torch gives NaN).
//
// Forward: the work is cut into tasks (b, h, block of query rows); blocks are only split below the whole
// sequence when B*H alone cannot keep the thread pool busy, or to bound the scratch. Each task computes its
// score block S = scale Q K^T with one gemm into a per-chunk scratch buffer (O(rows * Lk), never
// O(B*H*Lq*Lk)), runs the masked softmax in place (an AVX2 exp for f32), then O = P V with a second gemm.
// Under causal masking only the keys the block's last row may see enter the products.
//
// Backward (dO given): per query block, P is recomputed from the saved lse (in f64 the row statistics are
// recomputed exactly instead, as lse is kept in f32), then
//   dP = dO V^T, dS = P * (dP - rowsum(dO * O)), dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO,
// with dK and dV accumulated over the query blocks in per-task buffers. Tasks are (b, h) pairs; when there
// are fewer pairs than threads, each pair's query blocks are shared among several tasks whose partial dK/dV
// are summed afterwards.
//
// bf16/f16 operands are converted to f32 tiles and all arithmetic runs in f32; f32 and f64 read the tensors
// in place.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "mc/cpu/elementwise.hpp"
#include "mc/cpu/gemm.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace mc::cpu {

// Knobs for tests and benchmarks; 0 means automatic. block_rows: query rows per block; groups: tasks that
// share one (b, h) pair in the backward.
struct AttentionTuning {
  int64_t block_rows = 0;
  int64_t groups = 0;
};
inline AttentionTuning& attention_tuning() {
  static AttentionTuning t;
  return t;
}

namespace attention_detail {

// ---- row primitives (float: AVX2 when available; double: scalar) ----

#if defined(__AVX2__) && defined(__FMA__)
// exp(x) for 8 floats: x = n ln2 + r with |r| <= ln2/2, a degree-7 minimax-type polynomial on r, scaled
// by 2^n. Inputs below ~-87.34 (results under FLT_MIN, and -inf) give exactly 0; NaN propagates.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.336544f), hi = _mm256_set1_ps(88.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));  // operand order keeps NaN
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

inline float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if (n >= 8) {
    __m256 vm = _mm256_loadu_ps(x);
    for (j = 8; j + 8 <= n; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + j));
    m = hmax8(vm);
  }
#endif
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

inline double row_max(const double* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// x[j] = exp(x[j] - m) for j < n; returns the sum of the new values.
inline float exp_shift_sum(float* x, int64_t n, float m) {
  int64_t j = 0;
  float s = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
    _mm256_storeu_ps(x + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  s = hsum8(acc);
#endif
  for (; j < n; ++j) {
    x[j] = std::exp(x[j] - m);
    s += x[j];
  }
  return s;
}

inline double exp_shift_sum(double* x, int64_t n, double m) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = std::exp(x[j] - m);
    s += x[j];
  }
  return s;
}

template <class C>
inline void scale_row(C* x, int64_t n, C a) {
  for (int64_t j = 0; j < n; ++j) x[j] *= a;
}

template <class C>
inline void zero_row(C* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = C(0);
}

// Masks row s[0, lim) with the key padding row (true = ignored; null = none) by setting -inf.
template <class C>
inline void mask_row(C* s, int64_t lim, const bool* mrow, int64_t mstride) {
  if (!mrow) return;
  for (int64_t j = 0; j < lim; ++j)
    if (mrow[j * mstride]) s[j] = -std::numeric_limits<C>::infinity();
}

// In-place masked softmax of the score row s[0, n): keys [lim, n) are hidden by the causal limit, padded
// keys by mrow. Returns the row's logsumexp (-inf, with an all-zero row, when no key is visible).
template <class C>
inline C softmax_row(C* s, int64_t lim, int64_t n, const bool* mrow, int64_t mstride) {
  mask_row(s, lim, mrow, mstride);
  zero_row(s + lim, n - lim);
  const C m = row_max(s, lim);
  if (m == -std::numeric_limits<C>::infinity()) {  // no visible key
    zero_row(s, lim);
    return m;
  }
  const C sum = exp_shift_sum(s, lim, m);
  scale_row(s, lim, C(1) / sum);
  return m + std::log(sum);
}

// ---- tiles ----

// A read-only strided matrix: element (i, j) at p[i * rs + j * cs].
template <class C>
struct Mat {
  const C* p = nullptr;
  int64_t rs = 0, cs = 0;
};

// dst[i * cols + j] = src[i * rs + j * cs], converted to C.
template <class C, class T>
inline void load_tile(C* dst, const T* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* s = src + i * rs;
    C* d = dst + i * cols;
    if (cs == 1) {
      for (int64_t j = 0; j < cols; ++j) d[j] = C(s[j]);
    } else {
      for (int64_t j = 0; j < cols; ++j) d[j] = C(s[j * cs]);
    }
  }
}

// dst[i * rs + j * cs] = src[i * ld + j], rounded to T.
template <class T, class C>
inline void store_tile(T* dst, int64_t rs, int64_t cs, const C* src, int64_t ld, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    T* d = dst + i * rs;
    const C* s = src + i * ld;
    if (cs == 1) {
      for (int64_t j = 0; j < cols; ++j) d[j] = T(s[j]);
    } else {
      for (int64_t j = 0; j < cols; ++j) d[j * cs] = T(s[j]);
    }
  }
}

template <class T>
inline void zero_tile(T* dst, int64_t rs, int64_t cs, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[i * rs + j * cs] = T(0.0f);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Query rows per block: the scores of a block stay within ~64 KiB of f32 (16 to 256 rows).
inline int64_t block_rows(int64_t Lq, int64_t Lk) {
  const int64_t forced = attention_tuning().block_rows;
  const int64_t r = forced > 0 ? forced : std::clamp<int64_t>(16384 / std::max<int64_t>(1, Lk), 16, 256);
  return std::max<int64_t>(1, std::min(Lq, r));
}

// How many leading keys query row i may see under the causal limit (all Lk otherwise), before key padding.
inline int64_t key_limit(int64_t i, int64_t Lk, int64_t offset, bool causal) {
  return causal ? std::clamp<int64_t>(i + offset + 1, 0, Lk) : Lk;
}

struct Dims {
  int64_t B, H, Lq, Lk, D, Dv, offset;
};

inline Dims dims_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3), k.size(2) - q.size(2)};
}

inline void check_shapes(const char* what, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                         const Tensor& lse, const AttentionParams& p) {
  MC_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && o.dim() == 4 && lse.dim() == 3, what,
           ": expects 4-d q, k, v, out and 3-d lse");
  const Dims d = dims_of(q, k, v);
  MC_CHECK(k.size(0) == d.B && v.size(0) == d.B && k.size(1) == d.H && v.size(1) == d.H && v.size(2) == d.Lk &&
               k.size(3) == d.D,
           what, ": q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()),
           " do not fit together");
  MC_CHECK(o.shape() == Shape({d.B, d.H, d.Lq, d.Dv}) && lse.shape() == Shape({d.B, d.H, d.Lq}), what,
           ": out ", shape_str(o.shape()), " or lse ", shape_str(lse.shape()), " has the wrong shape");
  MC_CHECK(lse.dtype() == DType::F32, what, ": lse must be f32");
  MC_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype() && o.dtype() == q.dtype(), what,
           ": q, k, v and out must share one dtype");
  if (p.key_padding_mask.defined())
    MC_CHECK(p.key_padding_mask.dtype() == DType::Bool && p.key_padding_mask.shape() == Shape({d.B, d.Lk}), what,
             ": key_padding_mask must be bool [", d.B, ", ", d.Lk, "]");
}

template <class T>
struct Operand {  // the base pointer and strides of a 4-d tensor
  const T* p;
  int64_t s0, s1, s2, s3;
  explicit Operand(const Tensor& t)
      : p(ptr<const T>(t)), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)), s3(t.stride(3)) {}
  const T* at(int64_t b, int64_t h, int64_t i) const { return p + b * s0 + h * s1 + i * s2; }
};

template <class T>
inline void forward_impl(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionParams& prm) {
  using C = acc_t<T>;
  constexpr bool direct = std::is_same_v<T, C>;
  const Dims d = dims_of(q, k, v);
  const int64_t BH = d.B * d.H;
  if (BH == 0 || d.Lq == 0) return;
  const Operand<T> Q(q), K(k), V(v);
  T* op = ptr<T>(out);
  float* lp = ptr<float>(lse);
  const bool* mp = prm.key_padding_mask.defined() ? ptr<const bool>(prm.key_padding_mask) : nullptr;
  const int64_t ms0 = mp ? prm.key_padding_mask.stride(0) : 0, ms1 = mp ? prm.key_padding_mask.stride(1) : 0;
  const C scale = C(prm.scale);

  int64_t qb = block_rows(d.Lq, d.Lk);
  const int64_t nthreads = thread_pool().size();
  if (attention_tuning().block_rows <= 0)
    while (qb > 16 && BH * ceil_div(d.Lq, qb) < 2 * nthreads) qb = std::max<int64_t>(16, qb / 2);
  const int64_t nqb = ceil_div(d.Lq, qb), ntasks = BH * nqb;
  const double task_work = double(qb) * double(d.Lk) * double(d.D + d.Dv + 8);
  const int64_t grain = std::max<int64_t>(1, int64_t(65536.0 / std::max(1.0, task_work)));

  parallel_for(ntasks, grain, [&](int64_t t0, int64_t t1) {
    std::vector<C> S(size_t(qb * d.Lk));
    std::vector<C> qt, kt, vt, ot;  // f32 tiles of half-precision operands
    if constexpr (!direct) {
      qt.resize(size_t(qb * d.D));
      kt.resize(size_t(d.Lk * d.D));
      vt.resize(size_t(d.Lk * d.Dv));
      ot.resize(size_t(qb * d.Dv));
    }
    int64_t loaded_bh = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / nqb, b = bh / d.H, h = bh % d.H;
      const int64_t i0 = (t % nqb) * qb, m = std::min(qb, d.Lq - i0);
      const int64_t nk = key_limit(i0 + m - 1, d.Lk, d.offset, prm.causal);  // keys the block's last row sees
      T* orow = op + b * out.stride(0) + h * out.stride(1) + i0 * out.stride(2);
      float* lrow = lp + b * lse.stride(0) + h * lse.stride(1) + i0 * lse.stride(2);
      if (nk == 0) {  // no row of the block sees a key
        zero_tile(orow, out.stride(2), out.stride(3), m, d.Dv);
        for (int64_t r = 0; r < m; ++r) lrow[r * lse.stride(2)] = -std::numeric_limits<float>::infinity();
        continue;
      }
      Mat<C> Qm, Km, Vm;
      if constexpr (direct) {
        Qm = {Q.at(b, h, i0), Q.s2, Q.s3};
        Km = {K.at(b, h, 0), K.s2, K.s3};
        Vm = {V.at(b, h, 0), V.s2, V.s3};
      } else {
        load_tile(qt.data(), Q.at(b, h, i0), Q.s2, Q.s3, m, d.D);
        if (bh != loaded_bh) {
          load_tile(kt.data(), K.at(b, h, 0), K.s2, K.s3, d.Lk, d.D);
          load_tile(vt.data(), V.at(b, h, 0), V.s2, V.s3, d.Lk, d.Dv);
          loaded_bh = bh;
        }
        Qm = {qt.data(), d.D, 1};
        Km = {kt.data(), d.D, 1};
        Vm = {vt.data(), d.Dv, 1};
      }
      // S = scale Q K^T over the visible key range; element (c, j) of K^T is K[j * rs + c * cs].
      gemm(m, nk, d.D, scale, Qm.p, Qm.rs, Qm.cs, Km.p, Km.cs, Km.rs, C(0), S.data(), nk, 1);
      const bool* mrow = mp ? mp + b * ms0 : nullptr;
      for (int64_t r = 0; r < m; ++r) {
        const int64_t lim = key_limit(i0 + r, d.Lk, d.offset, prm.causal);
        lrow[r * lse.stride(2)] = float(softmax_row(S.data() + r * nk, lim, nk, mrow, ms1));
      }
      if constexpr (direct) {
        gemm(m, d.Dv, nk, C(1), S.data(), nk, 1, Vm.p, Vm.rs, Vm.cs, C(0), orow, out.stride(2), out.stride(3));
      } else {
        gemm(m, d.Dv, nk, C(1), S.data(), nk, 1, Vm.p, Vm.rs, Vm.cs, C(0), ot.data(), d.Dv, 1);
        store_tile(orow, out.stride(2), out.stride(3), ot.data(), d.Dv, m, d.Dv);
      }
    }
  });
}

template <class T>
inline void backward_impl(const Tensor& gq, const Tensor& gk, const Tensor& gv, const Tensor& go, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                          const AttentionParams& prm) {
  using C = acc_t<T>;
  constexpr bool direct = std::is_same_v<T, C>;
  constexpr bool exact_stats = std::is_same_v<C, double>;  // recompute row statistics instead of f32 lse
  const Dims d = dims_of(q, k, v);
  const int64_t BH = d.B * d.H;
  if (BH == 0) return;
  const Operand<T> Q(q), K(k), V(v), O(o), GO(go);
  T* gqp = ptr<T>(gq);
  T* gkp = ptr<T>(gk);
  T* gvp = ptr<T>(gv);
  const float* lp = ptr<const float>(lse);
  const bool* mp = prm.key_padding_mask.defined() ? ptr<const bool>(prm.key_padding_mask) : nullptr;
  const int64_t ms0 = mp ? prm.key_padding_mask.stride(0) : 0, ms1 = mp ? prm.key_padding_mask.stride(1) : 0;
  const C scale = C(prm.scale);

  const int64_t qb = d.Lq ? block_rows(d.Lq, d.Lk) : 1, nqb = ceil_div(d.Lq, qb);
  const int64_t nthreads = thread_pool().size();
  int64_t G = attention_tuning().groups > 0 ? attention_tuning().groups
                                             : (BH < nthreads ? ceil_div(nthreads, BH) : 1);
  G = std::max<int64_t>(1, std::min(G, nqb));
  const int64_t ntasks = BH * G, kv = d.Lk * (d.D + d.Dv);  // kv: one task's dK and dV values
  std::vector<C> partial(G > 1 ? size_t(ntasks * kv) : 0);
  const double task_work = double(d.Lq) / double(G) * double(d.Lk) * double(3 * d.D + 2 * d.Dv + 8);
  const int64_t grain = std::max<int64_t>(1, int64_t(65536.0 / std::max(1.0, task_work)));

  parallel_for(ntasks, grain, [&](int64_t t0, int64_t t1) {
    std::vector<C> S(size_t(qb * d.Lk)), dP(size_t(qb * d.Lk)), Di(static_cast<size_t>(qb));
    std::vector<C> acc(G > 1 ? 0 : size_t(kv));
    std::vector<C> qt, kt, vt, got, gqt;  // f32 tiles of half-precision operands
    if constexpr (!direct) {
      qt.resize(size_t(qb * d.D));
      got.resize(size_t(qb * d.Dv));
      gqt.resize(size_t(qb * d.D));
      kt.resize(size_t(d.Lk * d.D));
      vt.resize(size_t(d.Lk * d.Dv));
    }
    int64_t loaded_bh = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / G, g = t % G, b = bh / d.H, h = bh % d.H;
      C* dK = G > 1 ? partial.data() + t * kv : acc.data();
      C* dV = dK + d.Lk * d.D;
      zero_row(dK, kv);
      Mat<C> Km, Vm;
      if constexpr (direct) {
        Km = {K.at(b, h, 0), K.s2, K.s3};
        Vm = {V.at(b, h, 0), V.s2, V.s3};
      } else {
        if (bh != loaded_bh) {
          load_tile(kt.data(), K.at(b, h, 0), K.s2, K.s3, d.Lk, d.D);
          load_tile(vt.data(), V.at(b, h, 0), V.s2, V.s3, d.Lk, d.Dv);
          loaded_bh = bh;
        }
        Km = {kt.data(), d.D, 1};
        Vm = {vt.data(), d.Dv, 1};
      }
      const bool* mrow = mp ? mp + b * ms0 : nullptr;
      const float* lrow = lp + b * lse.stride(0) + h * lse.stride(1);
      for (int64_t blk = g * nqb / G; blk < (g + 1) * nqb / G; ++blk) {
        const int64_t i0 = blk * qb, m = std::min(qb, d.Lq - i0);
        const int64_t nk = key_limit(i0 + m - 1, d.Lk, d.offset, prm.causal);
        T* gqrow = gqp + b * gq.stride(0) + h * gq.stride(1) + i0 * gq.stride(2);
        if (nk == 0) {
          zero_tile(gqrow, gq.stride(2), gq.stride(3), m, d.D);
          continue;
        }
        Mat<C> Qm, GOm;
        if constexpr (direct) {
          Qm = {Q.at(b, h, i0), Q.s2, Q.s3};
          GOm = {GO.at(b, h, i0), GO.s2, GO.s3};
        } else {
          load_tile(qt.data(), Q.at(b, h, i0), Q.s2, Q.s3, m, d.D);
          load_tile(got.data(), GO.at(b, h, i0), GO.s2, GO.s3, m, d.Dv);
          Qm = {qt.data(), d.D, 1};
          GOm = {got.data(), d.Dv, 1};
        }
        // Di = rowsum(dO * O), from the stored output.
        for (int64_t r = 0; r < m; ++r) {
          const T* orow = O.at(b, h, i0 + r);
          const T* grow = GO.at(b, h, i0 + r);
          C s = 0;
          for (int64_t c = 0; c < d.Dv; ++c) s += C(orow[c * O.s3]) * C(grow[c * GO.s3]);
          Di[size_t(r)] = s;
        }
        // P (in S): recomputed scores, normalised with the saved lse.
        gemm(m, nk, d.D, scale, Qm.p, Qm.rs, Qm.cs, Km.p, Km.cs, Km.rs, C(0), S.data(), nk, 1);
        for (int64_t r = 0; r < m; ++r) {
          C* s = S.data() + r * nk;
          const int64_t lim = key_limit(i0 + r, d.Lk, d.offset, prm.causal);
          if constexpr (exact_stats) {
            softmax_row(s, lim, nk, mrow, ms1);
          } else {
            const C l = C(lrow[(i0 + r) * lse.stride(2)]);
            if (l == -std::numeric_limits<C>::infinity()) {
              zero_row(s, nk);
              continue;
            }
            mask_row(s, lim, mrow, ms1);
            exp_shift_sum(s, lim, l);
            zero_row(s + lim, nk - lim);
          }
        }
        // dS = P * (dO V^T - Di), in dP.
        gemm(m, nk, d.Dv, C(1), GOm.p, GOm.rs, GOm.cs, Vm.p, Vm.cs, Vm.rs, C(0), dP.data(), nk, 1);
        for (int64_t r = 0; r < m; ++r) {
          C* dp = dP.data() + r * nk;
          const C* pr = S.data() + r * nk;
          const C di = Di[size_t(r)];
          for (int64_t j = 0; j < nk; ++j) dp[j] = pr[j] * (dp[j] - di);
        }
        // dQ = scale dS K.
        if constexpr (direct) {
          gemm(m, d.D, nk, scale, dP.data(), nk, 1, Km.p, Km.rs, Km.cs, C(0), gqrow, gq.stride(2), gq.stride(3));
        } else {
          gemm(m, d.D, nk, scale, dP.data(), nk, 1, Km.p, Km.rs, Km.cs, C(0), gqt.data(), d.D, 1);
          store_tile(gqrow, gq.stride(2), gq.stride(3), gqt.data(), d.D, m, d.D);
        }
        // dK += scale dS^T Q, dV += P^T dO over the visible keys; (j, r) of dS^T is dP[r * nk + j].
        gemm(nk, d.D, m, scale, dP.data(), 1, nk, Qm.p, Qm.rs, Qm.cs, C(1), dK, d.D, 1);
        gemm(nk, d.Dv, m, C(1), S.data(), 1, nk, GOm.p, GOm.rs, GOm.cs, C(1), dV, d.Dv, 1);
      }
      if (G == 1) {
        store_tile(gkp + b * gk.stride(0) + h * gk.stride(1), gk.stride(2), gk.stride(3), dK, d.D, d.Lk, d.D);
        store_tile(gvp + b * gv.stride(0) + h * gv.stride(1), gv.stride(2), gv.stride(3), dV, d.Dv, d.Lk, d.Dv);
      }
    }
  });

  if (G > 1) {  // sum the groups' partial dK / dV, one key row per item
    parallel_for(BH * d.Lk, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, G * (d.D + d.Dv))),
                 [&](int64_t r0, int64_t r1) {
                   std::vector<C> row(size_t(d.D + d.Dv));
                   for (int64_t r = r0; r < r1; ++r) {
                     const int64_t bh = r / d.Lk, j = r % d.Lk, b = bh / d.H, h = bh % d.H;
                     zero_row(row.data(), d.D + d.Dv);
                     for (int64_t g = 0; g < G; ++g) {
                       const C* pk = partial.data() + (bh * G + g) * kv + j * d.D;
                       const C* pv = partial.data() + (bh * G + g) * kv + d.Lk * d.D + j * d.Dv;
                       for (int64_t c = 0; c < d.D; ++c) row[size_t(c)] += pk[c];
                       for (int64_t c = 0; c < d.Dv; ++c) row[size_t(d.D + c)] += pv[c];
                     }
                     store_tile(gkp + b * gk.stride(0) + h * gk.stride(1) + j * gk.stride(2), 0, gk.stride(3),
                                row.data(), 0, 1, d.D);
                     store_tile(gvp + b * gv.stride(0) + h * gv.stride(1) + j * gv.stride(2), 0, gv.stride(3),
                                row.data() + d.D, 0, 1, d.Dv);
                   }
                 });
  }
}

}  // namespace attention_detail

// out = softmax(scale q k^T + masks) v per (batch, head), and lse = the rows' logsumexp (f32).
inline void attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                      const AttentionParams& p) {
  attention_detail::check_shapes("attention", q, k, v, out, lse, p);
  MC_DISPATCH_FLOAT(q.dtype(), "attention", T, { attention_detail::forward_impl<T>(out, lse, q, k, v, p); });
}

// Gradients of attention for q, k, v given gout and the forward's out and lse; gq, gk, gv are written whole.
inline void attention_backward(const Tensor& gq, const Tensor& gk, const Tensor& gv, const Tensor& gout,
                               const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               const Tensor& lse, const AttentionParams& p) {
  attention_detail::check_shapes("attention_backward", q, k, v, out, lse, p);
  MC_CHECK(gq.shape() == q.shape() && gk.shape() == k.shape() && gv.shape() == v.shape() &&
               gout.shape() == out.shape(),
           "attention_backward: gradient shapes do not match q, k, v, out");
  MC_CHECK(gq.dtype() == q.dtype() && gk.dtype() == q.dtype() && gv.dtype() == q.dtype() &&
               gout.dtype() == q.dtype(),
           "attention_backward: gradients must have the dtype of q");
  MC_DISPATCH_FLOAT(q.dtype(), "attention_backward", T,
                    { attention_detail::backward_impl<T>(gq, gk, gv, gout, q, k, v, out, lse, p); });
}

}  // namespace mc::cpu
