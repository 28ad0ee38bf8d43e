// mc/cpu/gemm.hpp — CPU general matrix multiply: C = alpha * A * B + beta * C (f32 and f64).
//
// Design (the classic BLIS/Goto layering):
//   * Every operand is addressed through a (row stride, column stride) pair, so transposed or
//     sliced operands cost nothing: element (i, k) of A is A[i*rsa + k*csa], same for B and C.
//   * Loops, outermost first: jc over N in steps of NC, pc over K in steps of KC (pack a KC x NC
//     block of B into NR-column micro-panels), ic over M in steps of MC (pack an MC x KC block of
//     A into MR-row micro-panels), then the macro-kernel: jr over the NR panels of B, ir over the
//     MR panels of A, and a register-blocked MR x NR micro-kernel that runs the whole KC loop with
//     the C tile held in vector registers (one vector load per NR/W of B, one broadcast per row of
//     A, MR*NR/W FMAs per k). A packed B micro-panel (KC x NR) stays in L1 while the ir loop sweeps
//     the packed A block, which stays in L2; the packed B block lives in L2/L3.
//   * Micro-kernels: AVX-512 (built with -mavx512f, e.g. -march=native), AVX2+FMA (the default
//     x86-64-v3 build), and a portable scalar kernel for any other target. f32 and f64 share the
//     driver; only the vector width changes.
//   * Packing pads partial panels with zeros. Full tiles run the MR x NR kernel; edge tiles run
//     the smallest of the {MR, MR/2} x {NR, NR/2} kernels that covers them and write C with masked
//     loads/stores, so nothing outside the matrix is read or written. A C with a column stride
//     other than 1 goes through a small stack tile. beta is applied on the first K block only
//     (beta == 0 never reads C, so NaNs in C do not leak); later K blocks accumulate.
//   * M == 1 or N == 1 (matrix-vector) with a unit stride along K or along the output skips packing,
//     which would cost as much as the product: dot products or column sweeps stream the matrix once.
//   * Threads (mc::parallel_for, one chunk per pool thread): the M or the N range is cut into
//     contiguous pieces of whole micro-panels, whichever cut gives the lower estimated time
//     (balance of whole panels plus the packing that each thread repeats), and every thread runs
//     the serial algorithm on its own piece with its own packing buffers — one fork/join per
//     call, no shared state. Problems below ~64^3 multiply-adds run on the calling thread.
//   * Packing buffers are thread_local, 64-byte aligned and grown on demand, so concurrent calls
//     from several threads are safe. gemm_batched runs whole small problems in parallel across the
//     batch, and large ones one after another, each parallel inside.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

#include "mc/core/error.hpp"
#include "mc/core/parallel.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define MC_GEMM_X86_SIMD 1  // an AVX2+FMA or AVX-512 kernel is compiled in (#undef at the end)
#include <immintrin.h>
#endif

namespace mc::cpu {
namespace gemm_detail {

// ---------------------------------------------------------------------------------------------
// Thread-local, 64-byte aligned, reusable scratch buffers.
struct AlignedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() {
    if (ptr) ::operator delete(ptr, std::align_val_t(64));
  }
  template <class T>
  T* get(size_t n) {
    size_t need = n * sizeof(T);
    if (need > bytes) {
      if (ptr) ::operator delete(ptr, std::align_val_t(64));
      ptr = nullptr;
      bytes = 0;
      size_t grow = std::max(need, size_t(64) << 10);
      ptr = ::operator new(grow, std::align_val_t(64));
      bytes = grow;
    }
    return static_cast<T*>(ptr);
  }
};

// which: 0 = packed A, 1 = packed B.
inline AlignedBuffer& thread_buffer(int which) {
  thread_local AlignedBuffer bufs[2];
  return bufs[which];
}

// ---------------------------------------------------------------------------------------------
// SIMD abstraction used by the generic micro-kernel: V is the vector type, W its lane count.
#if defined(__AVX512F__)
struct F32x16 {
  using T = float;
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const T* p) { return _mm512_load_ps(p); }
  static V loadu(const T* p) { return _mm512_loadu_ps(p); }
  static void storeu(T* p, V v) { _mm512_storeu_ps(p, v); }
  static V bcast(const T* p) { return _mm512_set1_ps(*p); }
  static V set1(T x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V load_n(const T* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
  static void store_n(T* p, V v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }
};
struct F64x8 {
  using T = double;
  using V = __m512d;
  static constexpr int W = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const T* p) { return _mm512_load_pd(p); }
  static V loadu(const T* p) { return _mm512_loadu_pd(p); }
  static void storeu(T* p, V v) { _mm512_storeu_pd(p, v); }
  static V bcast(const T* p) { return _mm512_set1_pd(*p); }
  static V set1(T x) { return _mm512_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V load_n(const T* p, int n) { return _mm512_maskz_loadu_pd(__mmask8((1u << n) - 1), p); }
  static void store_n(T* p, V v, int n) { _mm512_mask_storeu_pd(p, __mmask8((1u << n) - 1), v); }
};
#endif
#if defined(__AVX2__) && defined(__FMA__)
struct F32x8 {
  using T = float;
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const T* p) { return _mm256_load_ps(p); }
  static V loadu(const T* p) { return _mm256_loadu_ps(p); }
  static void storeu(T* p, V v) { _mm256_storeu_ps(p, v); }
  static V bcast(const T* p) { return _mm256_broadcast_ss(p); }
  static V set1(T x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static __m256i mask(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  static V load_n(const T* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store_n(T* p, V v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
};
struct F64x4 {
  using T = double;
  using V = __m256d;
  static constexpr int W = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const T* p) { return _mm256_load_pd(p); }
  static V loadu(const T* p) { return _mm256_loadu_pd(p); }
  static void storeu(T* p, V v) { _mm256_storeu_pd(p, v); }
  static V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  static V set1(T x) { return _mm256_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static __m256i mask(int n) { return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)); }
  static V load_n(const T* p, int n) { return _mm256_maskload_pd(p, mask(n)); }
  static void store_n(T* p, V v, int n) { _mm256_maskstore_pd(p, mask(n), v); }
};
#endif
// Portable fallback: one lane, plain arithmetic (the compiler may still vectorise it).
template <class TT>
struct Scalar1 {
  using T = TT;
  using V = TT;
  static constexpr int W = 1;
  static V zero() { return V(0); }
  static V load(const T* p) { return *p; }
  static V loadu(const T* p) { return *p; }
  static void storeu(T* p, V v) { *p = v; }
  static V bcast(const T* p) { return *p; }
  static V set1(T x) { return x; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V mul(V a, V b) { return a * b; }
  static V load_n(const T* p, int) { return *p; }  // W == 1: never partial
  static void store_n(T* p, V v, int) { *p = v; }
};

// ---------------------------------------------------------------------------------------------
// Micro-kernel. a: packed micro-panel of A (row stride MR), b: packed micro-panel of B (row stride
// NV*W), both 64-byte aligned. Computes the MRU x NVU*W corner (MRU <= MR, NVU <= NV) of the tile
//   acc[r][j] = sum_k a[k*MR + r] * b[k*NV*W + j]
// and writes its first mr rows and nr columns to C (row stride rsc, column stride 1):
//   C = alpha * acc + beta * C   (beta == 0: C is not read).
// Edge tiles use masked loads/stores, so nothing outside the mr x nr corner is touched.
template <class Ops, int MR, int NV, int MRU, int NVU>
inline void micro_kernel(int64_t kc, const typename Ops::T* __restrict a, const typename Ops::T* __restrict b,
                         typename Ops::T* __restrict c, int64_t rsc, typename Ops::T alpha, typename Ops::T beta,
                         int mr, int nr) {
  using T = typename Ops::T;
  using V = typename Ops::V;
  constexpr int W = Ops::W;
  constexpr int NR = NV * W;
  V acc[MRU][NVU];
#pragma GCC unroll 32
  for (int r = 0; r < MRU; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NVU; ++v) acc[r][v] = Ops::zero();

#if defined(MC_GEMM_X86_SIMD)
  // Pull the C tile towards L1 while the k loop runs (prefetches never fault).
  constexpr int kLines = (NVU * W * int(sizeof(T)) + 63) / 64;
#pragma GCC unroll 32
  for (int r = 0; r < MRU; ++r)
#pragma GCC unroll 8
    for (int l = 0; l <= kLines; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(c + r * rsc) + std::min(64 * l, NVU * W * int(sizeof(T)) - 1),
                   _MM_HINT_T0);
#endif

#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    V bv[NVU];
#pragma GCC unroll 8
    for (int v = 0; v < NVU; ++v) bv[v] = Ops::load(b + v * W);
#pragma GCC unroll 32
    for (int r = 0; r < MRU; ++r) {
      V ar = Ops::bcast(a + r);
#pragma GCC unroll 8
      for (int v = 0; v < NVU; ++v) acc[r][v] = Ops::fma(ar, bv[v], acc[r][v]);
    }
    a += MR;
    b += NR;
  }

  const V va = Ops::set1(alpha), vb = Ops::set1(beta);
  const bool full = mr == MRU && nr == NVU * W;
  const int mode = beta == T(0) ? 0 : beta == T(1) ? 1 : 2;
#pragma GCC unroll 32
  for (int r = 0; r < MRU; ++r) {
    if (!full && r >= mr) break;
#pragma GCC unroll 8
    for (int v = 0; v < NVU; ++v) {
      T* p = c + r * rsc + v * W;
      const int n = full ? W : std::min(W, nr - v * W);
      if (n == W) {
        V x = mode == 0 ? Ops::mul(acc[r][v], va)
              : mode == 1 ? Ops::fma(acc[r][v], va, Ops::loadu(p))
                          : Ops::fma(acc[r][v], va, Ops::mul(Ops::loadu(p), vb));
        Ops::storeu(p, x);
      } else if (n > 0) {
        V x = mode == 0 ? Ops::mul(acc[r][v], va)
              : mode == 1 ? Ops::fma(acc[r][v], va, Ops::load_n(p, n))
                          : Ops::fma(acc[r][v], va, Ops::mul(Ops::load_n(p, n), vb));
        Ops::store_n(p, x, n);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Per-type configuration: micro-kernel shape and cache blocking.
//   MR x NR : register tile (MR*NR/W accumulators + NR/W B vectors + 1 broadcast <= register count);
//   KC : depth of a packed block (the KC x NR B micro-panel is re-read from L1/L2 by every A panel);
//   MC : rows of the packed A block (MC x KC, kept in L2);  NC : columns of the packed B block.
// The f32 values were tuned on Zen 5 (48 KiB L1d, 1 MiB L2 per core); the single-core kernels run at
// ~96% (AVX2) and ~90% (AVX-512) of peak there, and the exact KC/MC matter only a few percent.
template <class T>
struct Config;

#if defined(__AVX512F__)
template <>
struct Config<float> {
  using Ops = F32x16;
  static constexpr int MR = 12, NV = 2, NR = 32, KC = 512, MC = 96, NC = 3072;
};
template <>
struct Config<double> {
  using Ops = F64x8;
  static constexpr int MR = 12, NV = 2, NR = 16, KC = 256, MC = 96, NC = 2048;
};
#elif defined(__AVX2__) && defined(__FMA__)
template <>
struct Config<float> {
  using Ops = F32x8;
  static constexpr int MR = 6, NV = 2, NR = 16, KC = 384, MC = 96, NC = 3072;
};
template <>
struct Config<double> {
  using Ops = F64x4;
  static constexpr int MR = 6, NV = 2, NR = 8, KC = 256, MC = 96, NC = 2048;
};
#else
template <>
struct Config<float> {
  using Ops = Scalar1<float>;
  static constexpr int MR = 4, NV = 8, NR = 8, KC = 256, MC = 128, NC = 2048;
};
template <>
struct Config<double> {
  using Ops = Scalar1<double>;
  static constexpr int MR = 4, NV = 4, NR = 4, KC = 256, MC = 128, NC = 2048;
};
#endif

// ---------------------------------------------------------------------------------------------
// Packing.
// A block (mc x kc, element (i,k) at A[i*rsa + k*csa]) -> panels of MR rows: panel p holds
// dst[p*MR*kc + k*MR + r] = A[(p*MR + r), k], rows past mc are zero.
template <class T, int MR>
inline void pack_A(int64_t mc, int64_t kc, const T* A, int64_t rsa, int64_t csa, T* __restrict dst) {
  if (rsa == 1) {
    // Columns of A are contiguous (A is a transposed row-major matrix): walk k outermost so each
    // source row is read once, front to back, and scatter it over the panels.
    const int64_t full = mc / MR, rem = mc % MR;
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = A + k * csa;
      T* d = dst + k * MR;
      for (int64_t p = 0; p < full; ++p) {
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) d[p * MR * kc + r] = src[p * MR + r];
      }
      if (rem) {
        T* dl = d + full * MR * kc;
        for (int64_t r = 0; r < MR; ++r) dl[r] = r < rem ? src[full * MR + r] : T(0);
      }
    }
    return;
  }
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int64_t mr = std::min<int64_t>(MR, mc - i0);
    const T* a = A + i0 * rsa;
    if (mr == MR && csa == 1) {
      const T* rows[MR];
      for (int r = 0; r < MR; ++r) rows[r] = a + r * rsa;
      for (int64_t k = 0; k < kc; ++k) {
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) dst[k * MR + r] = rows[r][k];
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        int64_t r = 0;
        for (; r < mr; ++r) dst[k * MR + r] = a[r * rsa + k * csa];
        for (; r < MR; ++r) dst[k * MR + r] = T(0);
      }
    }
    dst += MR * kc;
  }
}

#if defined(MC_GEMM_X86_SIMD)
// dst[i*ld_dst + j] = src[j*ld_src + i] for an 8 x 8 block of floats.
inline void transpose8x8(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m256 r0 = _mm256_loadu_ps(src + 0 * ld_src), r1 = _mm256_loadu_ps(src + 1 * ld_src);
  __m256 r2 = _mm256_loadu_ps(src + 2 * ld_src), r3 = _mm256_loadu_ps(src + 3 * ld_src);
  __m256 r4 = _mm256_loadu_ps(src + 4 * ld_src), r5 = _mm256_loadu_ps(src + 5 * ld_src);
  __m256 r6 = _mm256_loadu_ps(src + 6 * ld_src), r7 = _mm256_loadu_ps(src + 7 * ld_src);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * ld_dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * ld_dst, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld_dst, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld_dst, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld_dst, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld_dst, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld_dst, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld_dst, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

// B block (kc x nc, element (k,j) at B[k*rsb + j*csb]) -> panels of NR columns: panel q holds
// dst[q*NR*kc + k*NR + j] = B[k, q*NR + j], columns past nc are zero.
template <class T, int NR>
inline void pack_B(int64_t kc, int64_t nc, const T* B, int64_t rsb, int64_t csb, T* __restrict dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR) {
    const int64_t nr = std::min<int64_t>(NR, nc - j0);
    const T* b = B + j0 * csb;
    if (nr == NR && csb == 1) {
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * NR, b + k * rsb, NR * sizeof(T));
    } else if (nr == NR && rsb == 1) {
      // Columns are contiguous in k (B is a transposed row-major matrix): transpose 8 x 8 blocks.
      int64_t k = 0;
#if defined(MC_GEMM_X86_SIMD)
      if constexpr (std::is_same_v<T, float> && NR % 8 == 0) {
        for (; k + 8 <= kc; k += 8)
          for (int j = 0; j < NR; j += 8) transpose8x8(b + j * csb + k, csb, dst + k * NR + j, NR);
      }
#endif
      for (; k + 8 <= kc; k += 8)
        for (int j = 0; j < NR; ++j) {
          const T* src = b + j * csb + k;
#pragma GCC unroll 8
          for (int kk = 0; kk < 8; ++kk) dst[(k + kk) * NR + j] = src[kk];
        }
      for (; k < kc; ++k)
        for (int j = 0; j < NR; ++j) dst[k * NR + j] = b[j * csb + k];
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        int64_t j = 0;
        for (; j < nr; ++j) dst[k * NR + j] = b[k * rsb + j * csb];
        for (; j < NR; ++j) dst[k * NR + j] = T(0);
      }
    }
    dst += NR * kc;
  }
}

// C[m x n] = beta * C (beta == 0 writes zeros).
template <class T>
inline void scale_c(int64_t m, int64_t n, T beta, T* C, int64_t rsc, int64_t csc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T& c = C[i * rsc + j * csc];
      c = beta == T(0) ? T(0) : beta * c;
    }
}

// One C tile with unit column stride: the full kernel, or for edge tiles the smallest of the
// {MR, MR/2} x {NV, NV/2} kernels that covers the mr x nr corner.
template <class T>
inline void run_tile(int64_t kc, const T* ap, const T* bp, T* c, int64_t rsc, T alpha, T beta, int mr, int nr) {
  using Cfg = Config<T>;
  using Ops = typename Cfg::Ops;
  constexpr int MR = Cfg::MR, NV = Cfg::NV, W = Ops::W;
  constexpr int MRH = (MR + 1) / 2, NVH = (NV + 1) / 2;
  if (mr > MRH) {
    if (nr > NVH * W)
      micro_kernel<Ops, MR, NV, MR, NV>(kc, ap, bp, c, rsc, alpha, beta, mr, nr);
    else
      micro_kernel<Ops, MR, NV, MR, NVH>(kc, ap, bp, c, rsc, alpha, beta, mr, nr);
  } else {
    if (nr > NVH * W)
      micro_kernel<Ops, MR, NV, MRH, NV>(kc, ap, bp, c, rsc, alpha, beta, mr, nr);
    else
      micro_kernel<Ops, MR, NV, MRH, NVH>(kc, ap, bp, c, rsc, alpha, beta, mr, nr);
  }
}

// ---------------------------------------------------------------------------------------------
// Serial algorithm on the sub-problem C[m x n] (already offset), A rows [0,m), B columns [0,n).
template <class T>
inline void gemm_serial(int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t rsa, int64_t csa,
                        const T* B, int64_t rsb, int64_t csb, T beta, T* C, int64_t rsc, int64_t csc) {
  using Cfg = Config<T>;
  using Ops = typename Cfg::Ops;
  constexpr int MR = Cfg::MR, NR = Cfg::NR, NV = Cfg::NV;
  constexpr int64_t KC = Cfg::KC, MC = Cfg::MC, NC = Cfg::NC;

  const int64_t kc_max = std::min<int64_t>(KC, k);
  const int64_t nc_max = std::min<int64_t>(NC, (n + NR - 1) / NR * NR);
  const int64_t mc_max = std::min<int64_t>(MC, (m + MR - 1) / MR * MR);
  T* Bp = thread_buffer(1).get<T>(size_t(kc_max * nc_max));
  T* Ap = thread_buffer(0).get<T>(size_t(kc_max * mc_max));
  alignas(64) T tile[MR * NR];

  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += KC) {
      const int64_t kc = std::min<int64_t>(KC, k - pc);
      const T beta_k = pc == 0 ? beta : T(1);
      pack_B<T, NR>(kc, nc, B + pc * rsb + jc * csb, rsb, csb, Bp);
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min<int64_t>(MC, m - ic);
        pack_A<T, MR>(mc, kc, A + ic * rsa + pc * csa, rsa, csa, Ap);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = std::min<int64_t>(NR, nc - jr);
          const T* bp = Bp + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = std::min<int64_t>(MR, mc - ir);
            const T* ap = Ap + ir * kc;
            T* c = C + (ic + ir) * rsc + (jc + jr) * csc;
            if (csc == 1) {
              run_tile<T>(kc, ap, bp, c, rsc, alpha, beta_k, int(mr), int(nr));
            } else {
              micro_kernel<Ops, MR, NV, MR, NV>(kc, ap, bp, tile, NR, T(1), T(0), MR, NR);
              for (int64_t i = 0; i < mr; ++i)
                for (int64_t j = 0; j < nr; ++j) {
                  T& cij = c[i * rsc + j * csc];
                  cij = beta_k == T(0) ? alpha * tile[i * NR + j] : alpha * tile[i * NR + j] + beta_k * cij;
                }
            }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix-vector products (M == 1 or N == 1): packing would cost as much as the product itself, so
// these stream the matrix once. y[i] = alpha * sum_k Mt(i, k) * x[k] + beta * y[i] for i in [0, L),
// Mt(i, k) = Mt[i*rs + k*cs], x[k] = x[k*sx], y[i] = y[i*sy].
template <class T>
inline void store_y(int64_t n, const T* t, T alpha, T beta, T* y, int64_t sy) {
  for (int64_t j = 0; j < n; ++j) {
    T& yj = y[j * sy];
    yj = beta == T(0) ? alpha * t[j] : alpha * t[j] + beta * yj;
  }
}

// Rows of Mt contiguous (cs == 1), x contiguous: dot products, four rows at a time.
template <class T>
inline void gemv_dot(int64_t i0, int64_t i1, int64_t K, T alpha, const T* Mt, int64_t rs, const T* x, T beta,
                     T* y, int64_t sy) {
  using Ops = typename Config<T>::Ops;
  using V = typename Ops::V;
  constexpr int W = Ops::W;
  for (int64_t i = i0; i < i1; i += 4) {
    const int rows = int(std::min<int64_t>(4, i1 - i));
    const T* r[4];
    for (int q = 0; q < 4; ++q) r[q] = Mt + (i + std::min(q, rows - 1)) * rs;
    V acc[4] = {Ops::zero(), Ops::zero(), Ops::zero(), Ops::zero()};
    int64_t k = 0;
    for (; k + W <= K; k += W) {
      const V xv = Ops::loadu(x + k);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) acc[q] = Ops::fma(Ops::loadu(r[q] + k), xv, acc[q]);
    }
    T t[4];
    for (int q = 0; q < 4; ++q) {
      alignas(64) T lanes[W];
      Ops::storeu(lanes, acc[q]);
      T sum = T(0);
      for (int l = 0; l < W; ++l) sum += lanes[l];
      for (int64_t kk = k; kk < K; ++kk) sum += r[q][kk] * x[kk];
      t[q] = sum;
    }
    store_y(rows, t, alpha, beta, y + i * sy, sy);
  }
}

// Columns of Mt contiguous (rs == 1): y += x[k] * column k, streaming the columns front to back
// into an accumulator block of y that stays in L1.
template <class T>
inline void gemv_axpy(int64_t i0, int64_t i1, int64_t K, T alpha, const T* Mt, int64_t cs, const T* x,
                      int64_t sx, T beta, T* y, int64_t sy) {
  using Ops = typename Config<T>::Ops;
  constexpr int W = Ops::W;
  constexpr int64_t LB = 1024;
  alignas(64) T t[LB];
  for (int64_t ib = i0; ib < i1; ib += LB) {
    const int64_t n = std::min(LB, i1 - ib);
    std::fill(t, t + n, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T xk = x[k * sx];
      const auto xv = Ops::set1(xk);
      const T* col = Mt + k * cs + ib;
      int64_t j = 0;
#pragma GCC unroll 4
      for (; j + W <= n; j += W) Ops::storeu(t + j, Ops::fma(xv, Ops::loadu(col + j), Ops::loadu(t + j)));
      for (; j < n; ++j) t[j] += xk * col[j];
    }
    store_y(n, t, alpha, beta, y + ib * sy, sy);
  }
}

// Returns false when the strides do not suit the streaming kernels (the caller then packs).
template <class T>
inline bool gemv(int64_t L, int64_t K, T alpha, const T* Mt, int64_t rs, int64_t cs, const T* x, int64_t sx,
                 T beta, T* y, int64_t sy, bool allow_threads) {
  const bool dot = cs == 1, axpy = !dot && rs == 1;
  if (!dot && !axpy) return false;
  if (dot && sx != 1) {  // make x contiguous (the caller's buffer, read-only for the workers)
    T* xc = thread_buffer(1).get<T>(size_t(K));
    for (int64_t k = 0; k < K; ++k) xc[k] = x[k * sx];
    x = xc;
    sx = 1;
  }
  auto run = [&](int64_t b, int64_t e) {
    if (dot)
      gemv_dot(b, e, K, alpha, Mt, rs, x, beta, y, sy);
    else
      gemv_axpy(b, e, K, alpha, Mt, cs, x, sx, beta, y, sy);
  };
  const int64_t quantum = 4 * Config<T>::Ops::W;  // rows per block of either kernel
  if (allow_threads && double(L) * double(K) >= double(1 << 18) && L >= 2 * quantum) {
    const int64_t blocks = (L + quantum - 1) / quantum;
    parallel_for(blocks, 1, [&](int64_t b, int64_t e) { run(b * quantum, std::min(L, e * quantum)); });
  } else {
    run(0, L);
  }
  return true;
}

// Full driver: argument handling, threading decision.
template <class T>
inline void gemm_driver(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t rsa, int64_t csa,
                        const T* B, int64_t rsb, int64_t csb, T beta, T* C, int64_t rsc, int64_t csc,
                        bool allow_threads) {
  MC_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  if (M == 0 || N == 0) return;
  MC_CHECK(C != nullptr, "gemm: C is null");
  if (K == 0 || alpha == T(0)) {
    if (beta != T(1)) scale_c(M, N, beta, C, rsc, csc);
    return;
  }
  MC_CHECK(A != nullptr && B != nullptr, "gemm: A or B is null");
  // Matrix-vector shapes: C column = A * B column, or C row = B^T * A row.
  if (N == 1 && gemv(M, K, alpha, A, rsa, csa, B, rsb, beta, C, rsc, allow_threads)) return;
  if (M == 1 && gemv(N, K, alpha, B, csb, rsb, A, csa, beta, C, csc, allow_threads)) return;

  using Cfg = Config<T>;
  constexpr int64_t MR = Cfg::MR, NR = Cfg::NR;
  int64_t nthreads = 1;
  if (allow_threads && double(M) * double(N) * double(K) >= 64.0 * 64.0 * 64.0)
    nthreads = thread_pool().size();
  if (nthreads <= 1) {
    gemm_serial(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, csc);
    return;
  }

  // Choose the cut. Cost model in multiply-adds per thread: whole panels of compute, plus
  // packing (an element packed ~ kPack multiply-adds) that each thread repeats.
  const int64_t mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
  const double kPack = 8.0;
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  const int64_t tm = std::min<int64_t>(nthreads, mp), tn = std::min<int64_t>(nthreads, np);
  const double cost_m = double(ceil_div(mp, tm) * MR) * double(np * NR) * double(K) +
                        kPack * (double(K) * double(N) + double(K) * double(M) / double(tm));
  const double cost_n = double(mp * MR) * double(ceil_div(np, tn) * NR) * double(K) +
                        kPack * (double(K) * double(M) + double(K) * double(N) / double(tn));
  const bool split_m = cost_m <= cost_n;
  const int64_t parts = split_m ? tm : tn;
  const int64_t panels = split_m ? mp : np;
  const int64_t per = panels / parts, extra = panels % parts;  // first `extra` parts get one more

  parallel_for(parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t p0 = t * per + std::min(t, extra), p1 = p0 + per + (t < extra ? 1 : 0);
      if (split_m) {
        const int64_t i0 = p0 * MR, i1 = std::min(M, p1 * MR);
        if (i0 < i1)
          gemm_serial(i1 - i0, N, K, alpha, A + i0 * rsa, rsa, csa, B, rsb, csb, beta, C + i0 * rsc, rsc, csc);
      } else {
        const int64_t j0 = p0 * NR, j1 = std::min(N, p1 * NR);
        if (j0 < j1)
          gemm_serial(M, j1 - j0, K, alpha, A, rsa, csa, B + j0 * csb, rsb, csb, beta, C + j0 * csc, rsc, csc);
      }
    }
  });
}

}  // namespace gemm_detail

// C[M x N] = alpha * A[M x K] * B[K x N] + beta * C; element (i,k) of A is A[i*rsa + k*csa], etc.
inline void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa,
                 const float* B, int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc) {
  gemm_detail::gemm_driver<float>(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, csc, true);
}

inline void gemm(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t rsa, int64_t csa,
                 const double* B, int64_t rsb, int64_t csb, double beta, double* C, int64_t rsc, int64_t csc) {
  gemm_detail::gemm_driver<double>(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, csc, true);
}

// Batched: problem b uses A + b*sa, B + b*sb, C + b*sc. Small problems run in parallel across the
// batch (each on one thread); large ones run one after another, each using all threads.
template <class T>
inline void gemm_batched(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t sa,
                         int64_t rsa, int64_t csa, const T* B, int64_t sb, int64_t rsb, int64_t csb, T beta,
                         T* C, int64_t sc, int64_t rsc, int64_t csc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm_batched: float or double");
  MC_CHECK(batch >= 0, "gemm_batched: negative batch ", batch);
  if (batch == 0 || M == 0 || N == 0) return;
  const double flops = double(M) * double(N) * double(K);
  const int64_t nthreads = thread_pool().size();
  // Per-problem threading pays off only for big problems or when the batch cannot fill the pool.
  const bool across_batch = batch > 1 && (flops < 256.0 * 256.0 * 256.0 || batch % nthreads == 0);
  if (!across_batch) {
    for (int64_t b = 0; b < batch; ++b)
      gemm_detail::gemm_driver<T>(M, N, K, alpha, A + b * sa, rsa, csa, B + b * sb, rsb, csb, beta, C + b * sc,
                                  rsc, csc, true);
    return;
  }
  // Enough problems per chunk to amortise the dispatch (~64^3 multiply-adds at least).
  const int64_t grain = std::max<int64_t>(1, int64_t(64.0 * 64.0 * 64.0 / std::max(1.0, flops)));
  parallel_for(batch, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      gemm_detail::gemm_driver<T>(M, N, K, alpha, A + b * sa, rsa, csa, B + b * sb, rsb, csb, beta, C + b * sc,
                                  rsc, csc, false);
  });
}

}  // namespace mc::cpu

#undef MC_GEMM_X86_SIMD
