// kernels/attention.cu — scaled dot-product attention, forward and backward, flash-style: query tiles per
// block, key tiles staged in shared memory, an online softmax with a running max and sum in f32 (f64 for
// f64), so the L x L score matrix never exists in memory.
//
// Semantics are the CPU's (mc/cpu/attention.hpp): s_ij = scale q_i . k_j over the keys row i may see (not
// padded, and j <= i + Lk - Lq when causal); out_i = softmax(s_i) v; lse_i = log sum_j exp(s_ij) (natural
// log, f32). A row that sees no key gets out_i = 0, lse_i = -inf and zero gradients.
//
// Two families of kernels:
// - tensor cores (bf16 / f16, head dim 32, 64 or 128, q/k/v of one head dim): mma.sync m16n8k16 with f32
//   accumulation. A warp owns 16 rows of a 64-row tile; scores live in registers, and P (rounded to the
//   input type) feeds the second product straight from the score fragments, as in FlashAttention-2.
//   The streamed tiles are double-buffered with cp.async (the next tile loads while this one computes).
// - SIMT (f32, f64, and any other head dim <= 256): 32 x 32 tiles in shared memory in the compute type,
//   register micro-tiles, exact f32 / f64 arithmetic (f32 stays within rounding of the CPU).
// Backward (both families): Di = rowsum(dO * O) first; then one kernel per key tile accumulates dK, dV over
// the query tiles, and one per query tile accumulates dQ over the key tiles (P recomputed from q, k and
// lse). Every gradient element is written by exactly one thread: deterministic, no atomics. In f64 the row
// statistics are recomputed exactly instead of read from the f32 lse (as the CPU does).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.69314718055994531f;

// ---- element conversion in the compute type (f64 kept exact) ----
template <class C, class T>
__device__ __forceinline__ C to_acc(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return C(__bfloat162float(v));
  else if constexpr (std::is_same_v<T, __half>) return C(__half2float(v));
  else return C(v);
}
template <class T, class C>
__device__ __forceinline__ T from_acc(C v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(float(v));
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(float(v));
  else return T(v);
}
__device__ __forceinline__ float cexp(float x) { return expf(x); }
__device__ __forceinline__ double cexp(double x) { return exp(x); }
__device__ __forceinline__ float clog(float x) { return logf(x); }
__device__ __forceinline__ double clog(double x) { return log(x); }
template <class C>
__device__ __forceinline__ C neg_inf() {
  return -C(INFINITY);
}

// ---- what every kernel gets (by value) ----
struct In {  // a [B, H, L, *] operand with unit stride on the last dim
  const void* p = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0;
};
struct Out {
  void* p = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0;
};
struct Args {
  In q, k, v, o, go;            // inputs (o, go: backward only)
  Out out, gq, gk, gv;          // outputs
  float* lse_out = nullptr;     // forward
  const float* lse = nullptr;   // backward
  int64_t ls0 = 0, ls1 = 0, ls2 = 0;
  const double* lse64 = nullptr;  // f64 backward: exact row statistics, [B*H*Lq]
  const void* di = nullptr;       // backward: rowsum(dO * O) in the compute type, [B*H*Lq]
  const uint8_t* mask = nullptr;  // key padding, nonzero = ignored key
  int64_t ms0 = 0, ms1 = 0;
  int H = 1, Lq = 0, Lk = 0, D = 0, Dv = 0, off = 0;
  bool causal = false, vec = false;  // vec: 16-byte loads/stores of rows are aligned
  float scale = 1.0f;
};

__device__ __forceinline__ bool key_kept(const Args& a, int b, int j) {
  return j < a.Lk && !(a.mask && a.mask[b * a.ms0 + j * a.ms1]);
}

// Keys [0, kend) hold every key some row of [q0, qlast] may see.
__device__ __forceinline__ int key_end(const Args& a, int qlast) {
  if (!a.causal) return a.Lk;
  const int64_t e = int64_t(qlast) + a.off + 1;
  return int(e < 0 ? 0 : (e > a.Lk ? a.Lk : e));
}

template <class T>
__device__ __forceinline__ const T* row_ptr(const In& t, int b, int h) {
  return static_cast<const T*>(t.p) + b * t.s0 + h * t.s1;
}
template <class T>
__device__ __forceinline__ T* row_ptr(const Out& t, int b, int h) {
  return static_cast<T*>(t.p) + b * t.s0 + h * t.s1;
}

// =====================================================================================================
// Tensor-core kernels (bf16 / f16)
// =====================================================================================================

template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// c += a (16x16, row-major) * b (16x8, column-major), f32 accumulation.
template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t lds32(const void* p) { return *static_cast<const uint32_t*>(p); }

// Fragment layout of m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g)
//   C (16x8):  c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// A from a row-major shared tile (rows row0.., columns k0..).
template <int LD, class T>
__device__ __forceinline__ void frag_a(uint32_t (&a)[4], const T* s, int row0, int k0, int g, int t) {
  const T* p = s + (row0 + g) * LD + k0 + 2 * t;
  a[0] = lds32(p);
  a[1] = lds32(p + 8 * LD);
  a[2] = lds32(p + 8);
  a[3] = lds32(p + 8 * LD + 8);
}
// B where the shared tile is stored [n][k] (row n holds the k values): two 32-bit loads.
template <int LD, class T>
__device__ __forceinline__ void frag_b(uint32_t& b0, uint32_t& b1, const T* s, int n0, int k0, int g, int t) {
  const T* p = s + (n0 + g) * LD + k0 + 2 * t;
  b0 = lds32(p);
  b1 = lds32(p + 8);
}
// B for two adjacent n-blocks where the shared tile is stored [k][n]: ldmatrix with transposition.
// Matrices: 0 = (k0..k0+7, n0..n0+7), 1 = (k0+8.., n0..), 2 = (k0.., n0+8..), 3 = (k0+8.., n0+8..).
template <int LD, class T>
__device__ __forceinline__ void frag_b_trans2(uint32_t (&b)[4], const T* s, int k0, int n0, int lane) {
  const T* p = s + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + n0 + (lane >> 4) * 8;
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
               : "r"(addr)
               : "memory");
}

// cp.async: 16 bytes global -> shared without a register round trip; src_bytes 0 writes zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t sa = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Rows [r0, r0 + R) of an [L, D] matrix (row stride rs, unit column stride) into shared rows of LD
// elements; rows at or past L become zero. With `vec`, 16-byte cp.async copies that complete at the next
// cp_async_wait (the caller commits the group); otherwise plain loads, complete on return. Either way a
// __syncthreads must follow before other threads read the tile.
template <class T, int D, int LD, int R>
__device__ __forceinline__ void load_rows(T* s, const T* base, int64_t rs, int r0, int L, bool vec, int tid) {
  if (vec) {
    constexpr int CPR = D / 8;
    for (int c = tid; c < R * CPR; c += 128) {
      const int r = c / CPR, col = (c % CPR) * 8;
      const bool in = r0 + r < L;
      cp_async16(s + r * LD + col, in ? base + int64_t(r0 + r) * rs + col : base, in ? 16 : 0);
    }
  } else {
    for (int e = tid; e < R * D; e += 128) {
      const int r = e / D, col = e % D;
      s[r * LD + col] = r0 + r < L ? base[int64_t(r0 + r) * rs + col] : from_acc<T>(0.0f);
    }
  }
}

// The reverse: shared rows to rows [r0, min(r0 + R, L)) of the output.
template <class T, int D, int LD, int R>
__device__ __forceinline__ void store_rows(T* base, int64_t rs, const T* s, int r0, int L, bool vec, int tid) {
  if (vec) {
    constexpr int CPR = D / 8;
    for (int c = tid; c < R * CPR; c += 128) {
      const int r = c / CPR, col = (c % CPR) * 8;
      if (r0 + r < L)
        *reinterpret_cast<uint4*>(base + int64_t(r0 + r) * rs + col) =
            *reinterpret_cast<const uint4*>(s + r * LD + col);
    }
  } else {
    for (int e = tid; e < R * D; e += 128) {
      const int r = e / D, col = e % D;
      if (r0 + r < L) base[int64_t(r0 + r) * rs + col] = s[r * LD + col];
    }
  }
}

// A warp's 16 x (8 NB) f32 accumulator rows, rounded, into a shared tile (rows row0 + g, row0 + g + 8).
template <class T, int LD, int NB>
__device__ __forceinline__ void stage_frag(T* s, const float (&c)[NB][4], int row0, float mul_lo, float mul_hi,
                                           int g, int t) {
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    T* p = s + (row0 + g) * LD + nb * 8 + 2 * t;
    *reinterpret_cast<uint32_t*>(p) = pack2<T>(c[nb][0] * mul_lo, c[nb][1] * mul_lo);
    *reinterpret_cast<uint32_t*>(p + 8 * LD) = pack2<T>(c[nb][2] * mul_hi, c[nb][3] * mul_hi);
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D>
constexpr int mma_ld() {
  return D + 8;  // padded rows: conflict-free 32-bit fragment loads, 16-byte aligned ldmatrix rows
}

// ---- forward: 64 queries per block (16 per warp), key tiles of 64 ----
constexpr int kMmaBQ = 64, kMmaBK = 64;
// Tuning knobs: the query tile of the dK/dV pass for head dims <= 64 (32 or 64), and the minimum resident
// blocks per SM the forward asks the register allocator for (head dims <= 64).
// (Measured on an H200 at the study's shapes: 32 and 4 beat 64 and 1 by 5-15%.)
#ifndef MC_ATTN_DKDV_BQ
#define MC_ATTN_DKDV_BQ 32
#endif
#ifndef MC_ATTN_FWD_MINB
#define MC_ATTN_FWD_MINB 4
#endif

template <class T, int D>
constexpr size_t fwd_mma_smem() {  // Q, two K/V buffers, two key-bias rows
  return size_t(kMmaBQ + 4 * kMmaBK) * mma_ld<D>() * sizeof(T) + 2 * kMmaBK * sizeof(float);
}

// Key tile `k0` of K and V into one buffer pair (asynchronously when a.vec), and its key bias.
template <class T, int D>
__device__ __forceinline__ void fwd_issue_kv(const Args& a, int b, const T* kbase, const T* vbase, T* Ks, T* Vs,
                                             float* kbias, int k0, int tid) {
  constexpr int LD = mma_ld<D>();
  load_rows<T, D, LD, kMmaBK>(Ks, kbase, a.k.s2, k0, a.Lk, a.vec, tid);
  load_rows<T, D, LD, kMmaBK>(Vs, vbase, a.v.s2, k0, a.Lk, a.vec, tid);
  if (tid < kMmaBK) kbias[tid] = key_kept(a, b, k0 + tid) ? 0.0f : -INFINITY;
}

// K/V tiles are double-buffered: tile kt + 1 is in flight (cp.async) while tile kt is computed.
template <class T, int D>
__global__ void __launch_bounds__(128, D <= 64 ? MC_ATTN_FWD_MINB : 1) attn_fwd_mma(const Args a) {
  constexpr int BQ = kMmaBQ, BK = kMmaBK, LD = mma_ld<D>(), KD = D / 16, ND = D / 8, NB = BK / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* Kbuf = Qs + BQ * LD;           // [2][BK][LD]
  T* Vbuf = Kbuf + 2 * BK * LD;     // [2][BK][LD]
  float* kbbuf = reinterpret_cast<float*>(Vbuf + 2 * BK * LD);  // [2][BK]: 0 kept key, -inf padded

  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H;
  const int q0 = blockIdx.y * BQ;
  const T* kbase = row_ptr<T>(a.k, b, h);
  const T* vbase = row_ptr<T>(a.v, b, h);
  const int kend = key_end(a, min(a.Lq, q0 + BQ) - 1);
  const int nkt = (kend + BK - 1) / BK;
  const bool active = q0 + w * 16 < a.Lq;  // the warp has a valid row
  const int r_lo = q0 + w * 16 + g, r_hi = r_lo + 8;
  const float sl2 = a.scale * kLog2e;  // scores in log2 units: exp2 is one instruction
  load_rows<T, D, LD, BQ>(Qs, row_ptr<T>(a.q, b, h), a.q.s2, q0, a.Lq, a.vec, tid);
  if (nkt > 0) fwd_issue_kv<T, D>(a, b, kbase, vbase, Kbuf, Vbuf, kbbuf, 0, tid);
  cp_async_commit();

  float o[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;  // l: this thread's columns only

  for (int kt = 0; kt < nkt; ++kt) {
    const int k0 = kt * BK, cur = kt & 1;
    if (kt + 1 < nkt) {  // the other buffer pair was released by the barrier ending iteration kt - 1
      fwd_issue_kv<T, D>(a, b, kbase, vbase, Kbuf + (cur ^ 1) * BK * LD, Vbuf + (cur ^ 1) * BK * LD,
                         kbbuf + (cur ^ 1) * BK, k0 + BK, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* Ks = Kbuf + cur * BK * LD;
    const T* Vs = Vbuf + cur * BK * LD;
    const float* kbias = kbbuf + cur * BK;
    if (active) {
      const int kvalid = min(BK, kend - k0);

      // S = Q K^T (Q fragments re-read from shared memory: fewer registers, more resident blocks).
      float s[NB][4];
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        uint32_t qa[4];
        frag_a<LD>(qa, Qs, w * 16, kk * 16, g, t);
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
          if (nb * 8 < kvalid) {
            uint32_t b0, b1;
            frag_b<LD>(b0, b1, Ks, nb * 8, kk * 16, g, t);
            mma16816<T>(s[nb], qa, b0, b1);
          }
        }
      }
      // Scale, mask, and the running max of each row (rows r_lo, r_hi; a row's columns span the quad).
      // A tile every row of the warp sees whole (no padding mask, inside kend and the causal limit)
      // skips the masking.
      const bool whole = !a.mask && k0 + BK <= kend && !(a.causal && k0 + BK - 1 > q0 + w * 16 + a.off);
      float mx_lo = -INFINITY, mx_hi = -INFINITY;
      if (whole) {
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nb][e] *= sl2;
          mx_lo = fmaxf(mx_lo, fmaxf(s[nb][0], s[nb][1]));
          mx_hi = fmaxf(mx_hi, fmaxf(s[nb][2], s[nb][3]));
        }
      } else {
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = nb * 8 + 2 * t + (e & 1), key = k0 + col, row = e < 2 ? r_lo : r_hi;
            float x = s[nb][e] * sl2 + kbias[col];
            if (key >= kend || (a.causal && key > row + a.off)) x = -INFINITY;
            s[nb][e] = x;
            if (e < 2) mx_lo = fmaxf(mx_lo, x);
            else mx_hi = fmaxf(mx_hi, x);
          }
        }
      }
      mx_lo = quad_max(mx_lo);
      mx_hi = quad_max(mx_hi);
      const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
      const float mu_lo = mn_lo == -INFINITY ? 0.0f : mn_lo, mu_hi = mn_hi == -INFINITY ? 0.0f : mn_hi;
      const float al_lo = exp2f(m_lo - mu_lo), al_hi = exp2f(m_hi - mu_hi);
      m_lo = mn_lo;
      m_hi = mn_hi;
      l_lo *= al_lo;
      l_hi *= al_hi;
#pragma unroll
      for (int nd = 0; nd < ND; ++nd) {
        o[nd][0] *= al_lo;
        o[nd][1] *= al_lo;
        o[nd][2] *= al_hi;
        o[nd][3] *= al_hi;
      }
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        s[nb][0] = exp2f(s[nb][0] - mu_lo);
        s[nb][1] = exp2f(s[nb][1] - mu_lo);
        s[nb][2] = exp2f(s[nb][2] - mu_hi);
        s[nb][3] = exp2f(s[nb][3] - mu_hi);
        l_lo += s[nb][0] + s[nb][1];
        l_hi += s[nb][2] + s[nb][3];
      }
      // O += P V: the score fragments of key blocks 2kc, 2kc+1 are the A fragment of key chunk kc.
#pragma unroll
      for (int kc = 0; kc < BK / 16; ++kc) {
        if (kc * 16 < kvalid) {
          const uint32_t pa[4] = {pack2<T>(s[2 * kc][0], s[2 * kc][1]), pack2<T>(s[2 * kc][2], s[2 * kc][3]),
                                  pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                  pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
          for (int nd = 0; nd < ND; nd += 2) {
            uint32_t vb[4];
            frag_b_trans2<LD>(vb, Vs, kc * 16, nd * 8, lane);
            mma16816<T>(o[nd], pa, vb[0], vb[1]);
            mma16816<T>(o[nd + 1], pa, vb[2], vb[3]);
          }
        }
      }
    }  // active
    __syncthreads();  // buffer pair `cur` is consumed
  }

  l_lo = quad_sum(l_lo);
  l_hi = quad_sum(l_hi);
  cp_async_wait<0>();  // Q's copy, when no key tile was visited
  __syncthreads();     // Qs is reused to stage the output
  stage_frag<T, LD, ND>(Qs, o, w * 16, l_lo > 0.0f ? 1.0f / l_lo : 0.0f, l_hi > 0.0f ? 1.0f / l_hi : 0.0f, g, t);
  if (t == 0) {
    float* lp = a.lse_out + b * a.ls0 + h * a.ls1;
    if (r_lo < a.Lq) lp[r_lo * a.ls2] = l_lo > 0.0f ? (m_lo + log2f(l_lo)) * kLn2 : -INFINITY;
    if (r_hi < a.Lq) lp[r_hi * a.ls2] = l_hi > 0.0f ? (m_hi + log2f(l_hi)) * kLn2 : -INFINITY;
  }
  __syncthreads();
  store_rows<T, D, LD, BQ>(row_ptr<T>(a.out, b, h), a.out.s2, Qs, q0, a.Lq, a.vec, tid);
}

// ---- backward, dK and dV: 64 keys per block (16 per warp), looping over query tiles of BQ ----
template <class T, int D, int BQ>
constexpr size_t dkdv_mma_smem() {  // K, V, two Q/dO buffer pairs, two lse/Di rows, key bias
  return size_t(2 * kMmaBK + 4 * BQ) * mma_ld<D>() * sizeof(T) + (4 * BQ + kMmaBK) * sizeof(float);
}

// Query tile `q0` of Q and dO into one buffer pair (asynchronously when a.vec), with its lse and Di.
template <class T, int D, int BQ>
__device__ __forceinline__ void dkdv_issue_q(const Args& a, int b, int h, int bh, T* Qs, T* Gs, float* lse2,
                                             float* dis, int q0, int tid) {
  constexpr int LD = mma_ld<D>();
  load_rows<T, D, LD, BQ>(Qs, row_ptr<T>(a.q, b, h), a.q.s2, q0, a.Lq, a.vec, tid);
  load_rows<T, D, LD, BQ>(Gs, row_ptr<T>(a.go, b, h), a.go.s2, q0, a.Lq, a.vec, tid);
  if (tid < BQ) {
    const int i = q0 + tid;
    lse2[tid] = i < a.Lq ? a.lse[b * a.ls0 + h * a.ls1 + int64_t(i) * a.ls2] * kLog2e : -INFINITY;
    dis[tid] = i < a.Lq ? static_cast<const float*>(a.di)[int64_t(bh) * a.Lq + i] : 0.0f;
  }
}

// Q/dO tiles are double-buffered: tile it + 1 is in flight while tile it is computed.
template <class T, int D, int BQ>
__global__ void __launch_bounds__(128) attn_bwd_dkdv_mma(const Args a) {
  constexpr int BK = kMmaBK, LD = mma_ld<D>(), KD = D / 16, ND = D / 8, NB = BQ / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + BK * LD;
  T* Qbuf = Vs + BK * LD;         // [2][BQ][LD]
  T* Gbuf = Qbuf + 2 * BQ * LD;   // dO, [2][BQ][LD]
  float* lbuf = reinterpret_cast<float*>(Gbuf + 2 * BQ * LD);  // [2][BQ] lse in log2 units (-inf: sees nothing)
  float* dbuf = lbuf + 2 * BQ;                                 // [2][BQ] Di
  float* kbias = dbuf + 2 * BQ;

  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H;
  const int k0 = blockIdx.y * BK;
  // Under the causal mask, query i sees key j when i >= j - off: skip the query tiles before that.
  const int qfirst = ((a.causal ? max(0, k0 - a.off) : 0) / BQ) * BQ;
  load_rows<T, D, LD, BK>(Ks, row_ptr<T>(a.k, b, h), a.k.s2, k0, a.Lk, a.vec, tid);
  load_rows<T, D, LD, BK>(Vs, row_ptr<T>(a.v, b, h), a.v.s2, k0, a.Lk, a.vec, tid);
  if (tid < BK) kbias[tid] = key_kept(a, b, k0 + tid) ? 0.0f : -INFINITY;
  if (qfirst < a.Lq) dkdv_issue_q<T, D, BQ>(a, b, h, bh, Qbuf, Gbuf, lbuf, dbuf, qfirst, tid);
  cp_async_commit();
  const bool active = k0 + w * 16 < a.Lk;
  const int key_lo = k0 + w * 16 + g, key_hi = key_lo + 8;
  const float sl2 = a.scale * kLog2e;

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[nd][e] = dv[nd][e] = 0.0f;

  for (int q0 = qfirst, it = 0; q0 < a.Lq; q0 += BQ, ++it) {
    const int cur = it & 1;
    if (q0 + BQ < a.Lq) {
      dkdv_issue_q<T, D, BQ>(a, b, h, bh, Qbuf + (cur ^ 1) * BQ * LD, Gbuf + (cur ^ 1) * BQ * LD,
                             lbuf + (cur ^ 1) * BQ, dbuf + (cur ^ 1) * BQ, q0 + BQ, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* Qs = Qbuf + cur * BQ * LD;
    const T* Gs = Gbuf + cur * BQ * LD;
    const float* lse2 = lbuf + cur * BQ;
    const float* dis = dbuf + cur * BQ;
    if (active) {
      const int qvalid = min(BQ, a.Lq - q0);
      const float kb_lo = kbias[w * 16 + g], kb_hi = kbias[w * 16 + g + 8];

      // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys (rows) and the tile's queries (columns).
      float st[NB][4], dpt[NB][4];
#pragma unroll
      for (int nb = 0; nb < NB; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nb][e] = dpt[nb][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        uint32_t ka[4], va[4];
        frag_a<LD>(ka, Ks, w * 16, kk * 16, g, t);
        frag_a<LD>(va, Vs, w * 16, kk * 16, g, t);
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
          if (nb * 8 < qvalid) {
            uint32_t b0, b1;
            frag_b<LD>(b0, b1, Qs, nb * 8, kk * 16, g, t);
            mma16816<T>(st[nb], ka, b0, b1);
            frag_b<LD>(b0, b1, Gs, nb * 8, kk * 16, g, t);
            mma16816<T>(dpt[nb], va, b0, b1);
          }
        }
      }
      // P^T = exp(S^T scale - lse) on the visible pairs, dS^T = P^T (dP^T - Di).
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nb * 8 + 2 * t + (e & 1), i = q0 + col, key = e < 2 ? key_lo : key_hi;
          const float l2 = lse2[col];
          const bool vis = (e < 2 ? kb_lo : kb_hi) == 0.0f && l2 != -INFINITY && !(a.causal && key > i + a.off);
          const float p = vis ? exp2f(st[nb][e] * sl2 - l2) : 0.0f;
          st[nb][e] = p;
          dpt[nb][e] = p * (dpt[nb][e] - dis[col]);
        }
      }
      // dV += P^T dO, dK += dS^T Q (scaled at the end); queries are the reduction dim.
#pragma unroll
      for (int kc = 0; kc < BQ / 16; ++kc) {
        if (kc * 16 < qvalid) {
          const uint32_t pa[4] = {pack2<T>(st[2 * kc][0], st[2 * kc][1]), pack2<T>(st[2 * kc][2], st[2 * kc][3]),
                                  pack2<T>(st[2 * kc + 1][0], st[2 * kc + 1][1]),
                                  pack2<T>(st[2 * kc + 1][2], st[2 * kc + 1][3])};
          const uint32_t da[4] = {pack2<T>(dpt[2 * kc][0], dpt[2 * kc][1]), pack2<T>(dpt[2 * kc][2], dpt[2 * kc][3]),
                                  pack2<T>(dpt[2 * kc + 1][0], dpt[2 * kc + 1][1]),
                                  pack2<T>(dpt[2 * kc + 1][2], dpt[2 * kc + 1][3])};
#pragma unroll
          for (int nd = 0; nd < ND; nd += 2) {
            uint32_t fb[4];
            frag_b_trans2<LD>(fb, Gs, kc * 16, nd * 8, lane);
            mma16816<T>(dv[nd], pa, fb[0], fb[1]);
            mma16816<T>(dv[nd + 1], pa, fb[2], fb[3]);
            frag_b_trans2<LD>(fb, Qs, kc * 16, nd * 8, lane);
            mma16816<T>(dk[nd], da, fb[0], fb[1]);
            mma16816<T>(dk[nd + 1], da, fb[2], fb[3]);
          }
        }
      }
    }  // active
    __syncthreads();  // buffer pair `cur` is consumed
  }

  cp_async_wait<0>();  // K/V copies, when no query tile was visited
  __syncthreads();     // Ks / Vs are reused to stage the gradients
  stage_frag<T, LD, ND>(Ks, dk, w * 16, a.scale, a.scale, g, t);
  stage_frag<T, LD, ND>(Vs, dv, w * 16, 1.0f, 1.0f, g, t);
  __syncthreads();
  store_rows<T, D, LD, BK>(row_ptr<T>(a.gk, b, h), a.gk.s2, Ks, k0, a.Lk, a.vec, tid);
  store_rows<T, D, LD, BK>(row_ptr<T>(a.gv, b, h), a.gv.s2, Vs, k0, a.Lk, a.vec, tid);
}

// ---- backward, dQ: 64 queries per block (16 per warp), looping over key tiles of BK ----
template <class T, int D, int BK>
constexpr size_t dq_mma_smem() {  // Q, dO, two K/V buffer pairs, two key-bias rows
  return size_t(2 * kMmaBQ + 4 * BK) * mma_ld<D>() * sizeof(T) + 2 * BK * sizeof(float);
}

// K/V tiles are double-buffered as in the forward.
template <class T, int D, int BK>
__global__ void __launch_bounds__(128) attn_bwd_dq_mma(const Args a) {
  constexpr int BQ = kMmaBQ, LD = mma_ld<D>(), KD = D / 16, ND = D / 8, NB = BK / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* Gs = Qs + BQ * LD;  // dO
  T* Kbuf = Gs + BQ * LD;          // [2][BK][LD]
  T* Vbuf = Kbuf + 2 * BK * LD;    // [2][BK][LD]
  float* kbbuf = reinterpret_cast<float*>(Vbuf + 2 * BK * LD);  // [2][BK]

  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H;
  const int q0 = blockIdx.y * BQ;
  const T* kbase = row_ptr<T>(a.k, b, h);
  const T* vbase = row_ptr<T>(a.v, b, h);
  const int kend = key_end(a, min(a.Lq, q0 + BQ) - 1);
  load_rows<T, D, LD, BQ>(Qs, row_ptr<T>(a.q, b, h), a.q.s2, q0, a.Lq, a.vec, tid);
  load_rows<T, D, LD, BQ>(Gs, row_ptr<T>(a.go, b, h), a.go.s2, q0, a.Lq, a.vec, tid);
  auto issue_kv = [&](int k0, int buf) {
    load_rows<T, D, LD, BK>(Kbuf + buf * BK * LD, kbase, a.k.s2, k0, a.Lk, a.vec, tid);
    load_rows<T, D, LD, BK>(Vbuf + buf * BK * LD, vbase, a.v.s2, k0, a.Lk, a.vec, tid);
    if (tid < BK) kbbuf[buf * BK + tid] = key_kept(a, b, k0 + tid) ? 0.0f : -INFINITY;
  };
  if (kend > 0) issue_kv(0, 0);
  cp_async_commit();
  const bool active = q0 + w * 16 < a.Lq;
  const int r_lo = q0 + w * 16 + g, r_hi = r_lo + 8;
  const float* lbase = a.lse + b * a.ls0 + h * a.ls1;
  const float* dibase = static_cast<const float*>(a.di) + int64_t(bh) * a.Lq;
  const float l2_lo = r_lo < a.Lq ? lbase[int64_t(r_lo) * a.ls2] * kLog2e : -INFINITY;
  const float l2_hi = r_hi < a.Lq ? lbase[int64_t(r_hi) * a.ls2] * kLog2e : -INFINITY;
  const float di_lo = r_lo < a.Lq ? dibase[r_lo] : 0.0f, di_hi = r_hi < a.Lq ? dibase[r_hi] : 0.0f;
  const float sl2 = a.scale * kLog2e;

  float dq[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd) dq[nd][0] = dq[nd][1] = dq[nd][2] = dq[nd][3] = 0.0f;

  for (int k0 = 0, it = 0; k0 < kend; k0 += BK, ++it) {
    const int cur = it & 1;
    if (k0 + BK < kend) {
      issue_kv(k0 + BK, cur ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* Ks = Kbuf + cur * BK * LD;
    const T* Vs = Vbuf + cur * BK * LD;
    const float* kbias = kbbuf + cur * BK;
    if (active) {
      const int kvalid = min(BK, kend - k0);

      float s[NB][4], dp[NB][4];
#pragma unroll
      for (int nb = 0; nb < NB; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nb][e] = dp[nb][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        uint32_t qa[4], ga[4];
        frag_a<LD>(qa, Qs, w * 16, kk * 16, g, t);
        frag_a<LD>(ga, Gs, w * 16, kk * 16, g, t);
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
          if (nb * 8 < kvalid) {
            uint32_t b0, b1;
            frag_b<LD>(b0, b1, Ks, nb * 8, kk * 16, g, t);
            mma16816<T>(s[nb], qa, b0, b1);
            frag_b<LD>(b0, b1, Vs, nb * 8, kk * 16, g, t);
            mma16816<T>(dp[nb], ga, b0, b1);
          }
        }
      }
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nb * 8 + 2 * t + (e & 1), key = k0 + col, row = e < 2 ? r_lo : r_hi;
          const float l2 = e < 2 ? l2_lo : l2_hi;
          const bool vis = key < kend && kbias[col] == 0.0f && l2 != -INFINITY && !(a.causal && key > row + a.off);
          const float p = vis ? exp2f(s[nb][e] * sl2 - l2) : 0.0f;
          s[nb][e] = p * (dp[nb][e] - (e < 2 ? di_lo : di_hi));  // dS
        }
      }
      // dQ += dS K (scaled at the end).
#pragma unroll
      for (int kc = 0; kc < BK / 16; ++kc) {
        if (kc * 16 < kvalid) {
          const uint32_t da[4] = {pack2<T>(s[2 * kc][0], s[2 * kc][1]), pack2<T>(s[2 * kc][2], s[2 * kc][3]),
                                  pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                  pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
          for (int nd = 0; nd < ND; nd += 2) {
            uint32_t fb[4];
            frag_b_trans2<LD>(fb, Ks, kc * 16, nd * 8, lane);
            mma16816<T>(dq[nd], da, fb[0], fb[1]);
            mma16816<T>(dq[nd + 1], da, fb[2], fb[3]);
          }
        }
      }
    }  // active
    __syncthreads();  // buffer pair `cur` is consumed
  }

  cp_async_wait<0>();  // Q/dO copies, when no key tile was visited
  __syncthreads();
  stage_frag<T, LD, ND>(Qs, dq, w * 16, a.scale, a.scale, g, t);
  __syncthreads();
  store_rows<T, D, LD, BQ>(row_ptr<T>(a.gq, b, h), a.gq.s2, Qs, q0, a.Lq, a.vec, tid);
}

// =====================================================================================================
// SIMT kernels (f32, f64, other head dims): 32 x 32 tiles, 128 threads, tiles in the compute type with
// DP >= max(D, Dv) columns (zero padding beyond the head dim, so it drops out of every product).
// Score micro-tile: thread (tr = tid / 8, tc = tid % 8) owns rows 2tr, 2tr+1 and columns tc + 8j (j < 4);
// a row's 8 threads are consecutive lanes (shuffle reductions). Accumulator micro-tile: thread
// (ar = tid / 16, ac = tid % 16) owns rows 4ar..4ar+3 and columns ac + 16j (j < DP/16).
// =====================================================================================================
constexpr int kSimtB = 32;

template <class C>
__device__ __forceinline__ C oct_max(C v) {
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <class C>
__device__ __forceinline__ C oct_sum(C v) {
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Rows [r0, r0 + 32) of an [L, n] matrix into a [32][LDS] tile of C with DP columns (zero-padded).
template <class T, class C, int DP>
__device__ __forceinline__ void simt_load(C* s, const T* base, int64_t rs, int r0, int L, int n, int tid) {
  constexpr int LDS = DP + 1;
  for (int e = tid; e < kSimtB * DP; e += 128) {
    const int r = e / DP, c = e % DP;
    s[r * LDS + c] = (r0 + r < L && c < n) ? to_acc<C>(base[int64_t(r0 + r) * rs + c]) : C(0);
  }
}

// acc[i][j] = sum_d A[2tr + i][d] * B[tc + 8j][d] over d < DP.
template <class C, int DP>
__device__ __forceinline__ void simt_abt(C (&acc)[2][4], const C* A, const C* Bm, int tr, int tc) {
  constexpr int LDS = DP + 1;
  const C* a0 = A + (2 * tr) * LDS;
  const C* b0 = Bm + tc * LDS;
#pragma unroll 8
  for (int d = 0; d < DP; ++d) {
    const C x0 = a0[d], x1 = a0[LDS + d];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const C y = b0[8 * j * LDS + d];
      acc[0][j] += x0 * y;
      acc[1][j] += x1 * y;
    }
  }
}

template <class C, int DP>
constexpr size_t fwd_simt_smem() {
  return sizeof(C) * (size_t(3) * kSimtB * (DP + 1) + kSimtB * (kSimtB + 1) + 3 * kSimtB);
}

template <class T, int DP>
__global__ void __launch_bounds__(128) attn_fwd_simt(const Args a) {
  using C = acc_of<T>;
  constexpr int B = kSimtB, LDS = DP + 1, LP = B + 1, NJ = DP / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  C* Qs = reinterpret_cast<C*>(smem_raw);
  C* Ks = Qs + B * LDS;
  C* Vs = Ks + B * LDS;
  C* Ps = Vs + B * LDS;
  C* alpha = Ps + B * LP;
  C* kbias = alpha + B;
  C* lsum = kbias + B;

  const int tid = threadIdx.x, tr = tid >> 3, tc = tid & 7, ar = tid >> 4, ac = tid & 15;
  const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H;
  const int q0 = blockIdx.y * B;
  simt_load<T, C, DP>(Qs, row_ptr<T>(a.q, b, h), a.q.s2, q0, a.Lq, a.D, tid);
  const T* kbase = row_ptr<T>(a.k, b, h);
  const T* vbase = row_ptr<T>(a.v, b, h);
  const int kend = key_end(a, min(a.Lq, q0 + B) - 1);
  const C scale = C(a.scale);

  C m[2] = {neg_inf<C>(), neg_inf<C>()}, l[2] = {C(0), C(0)};
  C o[4][NJ];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j) o[i][j] = C(0);

  for (int k0 = 0; k0 < kend; k0 += B) {
    __syncthreads();
    simt_load<T, C, DP>(Ks, kbase, a.k.s2, k0, a.Lk, a.D, tid);
    simt_load<T, C, DP>(Vs, vbase, a.v.s2, k0, a.Lk, a.Dv, tid);
    if (tid < B) kbias[tid] = key_kept(a, b, k0 + tid) ? C(0) : neg_inf<C>();
    __syncthreads();
    C s[2][4] = {};
    simt_abt<C, DP>(s, Qs, Ks, tr, tc);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = q0 + 2 * tr + i;
      C mx = neg_inf<C>();
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = tc + 8 * j, key = k0 + col;
        C x = s[i][j] * scale + kbias[col];
        if (key >= kend || (a.causal && key > row + a.off)) x = neg_inf<C>();
        s[i][j] = x;
        mx = max(mx, x);
      }
      mx = oct_max(mx);
      const C mn = max(m[i], mx), mu = mn == neg_inf<C>() ? C(0) : mn;
      const C al = cexp(m[i] - mu);
      C sum = C(0);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const C p = cexp(s[i][j] - mu);
        Ps[(2 * tr + i) * LP + tc + 8 * j] = p;
        sum += p;
      }
      l[i] = l[i] * al + oct_sum(sum);
      m[i] = mn;
      if (tc == 0) alpha[2 * tr + i] = al;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const C al = alpha[4 * ar + i];
#pragma unroll
      for (int j = 0; j < NJ; ++j) o[i][j] *= al;
    }
#pragma unroll 4
    for (int c = 0; c < B; ++c) {
      C vv[NJ];
#pragma unroll
      for (int j = 0; j < NJ; ++j) vv[j] = Vs[c * LDS + ac + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const C p = Ps[(4 * ar + i) * LP + c];
#pragma unroll
        for (int j = 0; j < NJ; ++j) o[i][j] += p * vv[j];
      }
    }
  }

  if (tc == 0) {
    float* lp = a.lse_out + b * a.ls0 + h * a.ls1;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = 2 * tr + i;
      lsum[r] = l[i];
      if (q0 + r < a.Lq) lp[int64_t(q0 + r) * a.ls2] = l[i] > C(0) ? float(m[i] + clog(l[i])) : -INFINITY;
    }
  }
  __syncthreads();
  T* obase = row_ptr<T>(a.out, b, h);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = 4 * ar + i;
    if (q0 + r >= a.Lq) continue;
    const C inv = lsum[r] > C(0) ? C(1) / lsum[r] : C(0);
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int d = ac + 16 * j;
      if (d < a.Dv) obase[int64_t(q0 + r) * a.out.s2 + d] = from_acc<T>(o[i][j] * inv);
    }
  }
}

// Row statistic for the SIMT backward: the given f32 lse, or the exact f64 one.
template <class C>
__device__ __forceinline__ C row_lse(const Args& a, int b, int h, int bh, int i) {
  if constexpr (std::is_same_v<C, double>) {
    return a.lse64[int64_t(bh) * a.Lq + i];
  } else {
    return a.lse[b * a.ls0 + h * a.ls1 + int64_t(i) * a.ls2];
  }
}

template <class C, int DP>
constexpr size_t dkdv_simt_smem() {
  return sizeof(C) * (size_t(4) * kSimtB * (DP + 1) + 2 * kSimtB * (kSimtB + 1) + 3 * kSimtB);
}

template <class T, int DP>
__global__ void __launch_bounds__(128) attn_bwd_dkdv_simt(const Args a) {
  using C = acc_of<T>;
  constexpr int B = kSimtB, LDS = DP + 1, LP = B + 1, NJ = DP / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  C* Ks = reinterpret_cast<C*>(smem_raw);
  C* Vs = Ks + B * LDS;
  C* Qs = Vs + B * LDS;
  C* Gs = Qs + B * LDS;
  C* Ps = Gs + B * LDS;  // [query][key]
  C* Ss = Ps + B * LP;   // dS, [query][key]
  C* lrow = Ss + B * LP;
  C* dis = lrow + B;
  C* kbias = dis + B;

  const int tid = threadIdx.x, tr = tid >> 3, tc = tid & 7, ar = tid >> 4, ac = tid & 15;
  const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H;
  const int k0 = blockIdx.y * B;
  simt_load<T, C, DP>(Ks, row_ptr<T>(a.k, b, h), a.k.s2, k0, a.Lk, a.D, tid);
  simt_load<T, C, DP>(Vs, row_ptr<T>(a.v, b, h), a.v.s2, k0, a.Lk, a.Dv, tid);
  if (tid < B) kbias[tid] = key_kept(a, b, k0 + tid) ? C(0) : neg_inf<C>();
  const T* qbase = row_ptr<T>(a.q, b, h);
  const T* gbase = row_ptr<T>(a.go, b, h);
  const C* dibase = static_cast<const C*>(a.di) + int64_t(bh) * a.Lq;
  const C scale = C(a.scale);
  const int qstart = a.causal ? max(0, k0 - a.off) : 0;

  C dk[4][NJ], dv[4][NJ];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j) dk[i][j] = dv[i][j] = C(0);

  for (int q0 = (qstart / B) * B; q0 < a.Lq; q0 += B) {
    __syncthreads();
    simt_load<T, C, DP>(Qs, qbase, a.q.s2, q0, a.Lq, a.D, tid);
    simt_load<T, C, DP>(Gs, gbase, a.go.s2, q0, a.Lq, a.Dv, tid);
    if (tid < B) {
      const int i = q0 + tid;
      lrow[tid] = i < a.Lq ? row_lse<C>(a, b, h, bh, i) : neg_inf<C>();
      dis[tid] = i < a.Lq ? dibase[i] : C(0);
    }
    __syncthreads();
    C s[2][4] = {}, dp[2][4] = {};
    simt_abt<C, DP>(s, Qs, Ks, tr, tc);
    simt_abt<C, DP>(dp, Gs, Vs, tr, tc);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = 2 * tr + i, qi = q0 + r;
      const C L = lrow[r], di = dis[r];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = tc + 8 * j, key = k0 + col;
        const bool vis = kbias[col] == C(0) && L != neg_inf<C>() && !(a.causal && key > qi + a.off);
        const C p = vis ? cexp(s[i][j] * scale - L) : C(0);
        Ps[r * LP + col] = p;
        Ss[r * LP + col] = p * (dp[i][j] - di);
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int qq = 0; qq < B; ++qq) {
      C gv[NJ], qv[NJ];
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        gv[j] = Gs[qq * LDS + ac + 16 * j];
        qv[j] = Qs[qq * LDS + ac + 16 * j];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const C p = Ps[qq * LP + 4 * ar + i], ds = Ss[qq * LP + 4 * ar + i];
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          dv[i][j] += p * gv[j];
          dk[i][j] += ds * qv[j];
        }
      }
    }
  }

  T* gkb = row_ptr<T>(a.gk, b, h);
  T* gvb = row_ptr<T>(a.gv, b, h);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int key = k0 + 4 * ar + i;
    if (key >= a.Lk) continue;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int d = ac + 16 * j;
      if (d < a.D) gkb[int64_t(key) * a.gk.s2 + d] = from_acc<T>(dk[i][j] * scale);
      if (d < a.Dv) gvb[int64_t(key) * a.gv.s2 + d] = from_acc<T>(dv[i][j]);
    }
  }
}

template <class C, int DP>
constexpr size_t dq_simt_smem() {
  return sizeof(C) * (size_t(4) * kSimtB * (DP + 1) + kSimtB * (kSimtB + 1) + 3 * kSimtB);
}

template <class T, int DP>
__global__ void __launch_bounds__(128) attn_bwd_dq_simt(const Args a) {
  using C = acc_of<T>;
  constexpr int B = kSimtB, LDS = DP + 1, LP = B + 1, NJ = DP / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  C* Qs = reinterpret_cast<C*>(smem_raw);
  C* Gs = Qs + B * LDS;
  C* Ks = Gs + B * LDS;
  C* Vs = Ks + B * LDS;
  C* Ss = Vs + B * LDS;  // dS, [query][key]
  C* lrow = Ss + B * LP;
  C* dis = lrow + B;
  C* kbias = dis + B;

  const int tid = threadIdx.x, tr = tid >> 3, tc = tid & 7, ar = tid >> 4, ac = tid & 15;
  const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H;
  const int q0 = blockIdx.y * B;
  simt_load<T, C, DP>(Qs, row_ptr<T>(a.q, b, h), a.q.s2, q0, a.Lq, a.D, tid);
  simt_load<T, C, DP>(Gs, row_ptr<T>(a.go, b, h), a.go.s2, q0, a.Lq, a.Dv, tid);
  if (tid < B) {
    const int i = q0 + tid;
    lrow[tid] = i < a.Lq ? row_lse<C>(a, b, h, bh, i) : neg_inf<C>();
    dis[tid] = i < a.Lq ? static_cast<const C*>(a.di)[int64_t(bh) * a.Lq + i] : C(0);
  }
  const T* kbase = row_ptr<T>(a.k, b, h);
  const T* vbase = row_ptr<T>(a.v, b, h);
  const int kend = key_end(a, min(a.Lq, q0 + B) - 1);
  const C scale = C(a.scale);

  C dq[4][NJ];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j) dq[i][j] = C(0);

  for (int k0 = 0; k0 < kend; k0 += B) {
    __syncthreads();
    simt_load<T, C, DP>(Ks, kbase, a.k.s2, k0, a.Lk, a.D, tid);
    simt_load<T, C, DP>(Vs, vbase, a.v.s2, k0, a.Lk, a.Dv, tid);
    if (tid < B) kbias[tid] = key_kept(a, b, k0 + tid) ? C(0) : neg_inf<C>();
    __syncthreads();
    C s[2][4] = {}, dp[2][4] = {};
    simt_abt<C, DP>(s, Qs, Ks, tr, tc);
    simt_abt<C, DP>(dp, Gs, Vs, tr, tc);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = 2 * tr + i, qi = q0 + r;
      const C L = lrow[r], di = dis[r];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = tc + 8 * j, key = k0 + col;
        const bool vis = key < kend && kbias[col] == C(0) && L != neg_inf<C>() && !(a.causal && key > qi + a.off);
        const C p = vis ? cexp(s[i][j] * scale - L) : C(0);
        Ss[r * LP + col] = p * (dp[i][j] - di);
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int c = 0; c < B; ++c) {
      C kv[NJ];
#pragma unroll
      for (int j = 0; j < NJ; ++j) kv[j] = Ks[c * LDS + ac + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const C ds = Ss[(4 * ar + i) * LP + c];
#pragma unroll
        for (int j = 0; j < NJ; ++j) dq[i][j] += ds * kv[j];
      }
    }
  }

  T* gqb = row_ptr<T>(a.gq, b, h);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = q0 + 4 * ar + i;
    if (r >= a.Lq) continue;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int d = ac + 16 * j;
      if (d < a.D) gqb[int64_t(r) * a.gq.s2 + d] = from_acc<T>(dq[i][j] * scale);
    }
  }
}

// ---- backward preprocessing ----

// Di = rowsum(dO * O) in the compute type; 8 lanes per row (16-byte chunks when VEC).
template <class T, bool VEC>
__global__ void __launch_bounds__(256) attn_bwd_rowdot(const Args a, int64_t rows, acc_of<T>* di) {
  using C = acc_of<T>;
  constexpr int V = VEC ? int(16 / sizeof(T)) : 1;
  const int64_t gl = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, row = gl >> 3;
  const int sub = int(gl & 7);
  C s = C(0);
  if (row < rows) {
    const int bh = int(row / a.Lq), i = int(row % a.Lq), b = bh / a.H, h = bh % a.H;
    const T* op = row_ptr<T>(a.o, b, h) + int64_t(i) * a.o.s2;
    const T* gp = row_ptr<T>(a.go, b, h) + int64_t(i) * a.go.s2;
    for (int d = sub * V; d < a.Dv; d += 8 * V) {
      if constexpr (VEC) {
        const uint4 ov = __ldg(reinterpret_cast<const uint4*>(op + d));
        const uint4 gv = __ldg(reinterpret_cast<const uint4*>(gp + d));
        const T* oe = reinterpret_cast<const T*>(&ov);
        const T* ge = reinterpret_cast<const T*>(&gv);
#pragma unroll
        for (int e = 0; e < V; ++e) s += to_acc<C>(oe[e]) * to_acc<C>(ge[e]);
      } else {
        s += to_acc<C>(op[d]) * to_acc<C>(gp[d]);
      }
    }
  }
  s = oct_sum(s);
  if (row < rows && sub == 0) di[row] = s;
}

// f64: the exact logsumexp of each row (one warp per row), as the CPU recomputes it instead of trusting
// the f32 lse.
__global__ void __launch_bounds__(256) attn_row_lse_f64(const Args a, int64_t rows, double* out) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps leave together
  const int bh = int(row / a.Lq), i = int(row % a.Lq), b = bh / a.H, h = bh % a.H;
  const double* qp = row_ptr<double>(a.q, b, h) + int64_t(i) * a.q.s2;
  const double* kb = row_ptr<double>(a.k, b, h);
  const int lim = key_end(a, i);
  double m = -INFINITY, l = 0.0;
  for (int j = 0; j < lim; ++j) {
    if (!key_kept(a, b, j)) continue;
    double s = 0.0;
    for (int d = lane; d < a.D; d += 32) s += qp[d] * kb[int64_t(j) * a.k.s2 + d];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    s *= double(a.scale);
    if (s > m) {
      l = l * exp(m - s) + 1.0;
      m = s;
    } else {
      l += exp(s - m);
    }
  }
  if (lane == 0) out[row] = l > 0.0 ? m + log(l) : -INFINITY;
}

// =====================================================================================================
// Host side
// =====================================================================================================

struct Dims {
  int64_t B, H, Lq, Lk, D, Dv;
};

Dims check_shapes(const char* what, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                  const Tensor& lse, const AttentionParams& p) {
  MC_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && o.dim() == 4 && lse.dim() == 3, what,
           ": expects 4-d q, k, v, out and 3-d lse");
  const Dims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  MC_CHECK(k.size(0) == d.B && v.size(0) == d.B && k.size(1) == d.H && v.size(1) == d.H && v.size(2) == d.Lk &&
               k.size(3) == d.D,
           what, ": q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()),
           " do not fit together");
  MC_CHECK(o.shape() == Shape({d.B, d.H, d.Lq, d.Dv}) && lse.shape() == Shape({d.B, d.H, d.Lq}), what, ": out ",
           shape_str(o.shape()), " or lse ", shape_str(lse.shape()), " has the wrong shape");
  MC_CHECK(lse.dtype() == DType::F32, what, ": lse must be f32");
  MC_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype() && o.dtype() == q.dtype(), what,
           ": q, k, v and out must share one dtype");
  MC_CHECK(is_floating(q.dtype()), what, ": expects a floating dtype, got ", dtype_name(q.dtype()));
  if (p.key_padding_mask.defined())
    MC_CHECK(p.key_padding_mask.dtype() == DType::Bool && p.key_padding_mask.shape() == Shape({d.B, d.Lk}), what,
             ": key_padding_mask must be bool [", d.B, ", ", d.Lk, "]");
  // Limits of the launch geometry and 32-bit row indices.
  MC_CHECK(d.B * d.H <= 0x7fffffffLL, what, ": batch * heads = ", d.B * d.H, " exceeds 2^31 - 1");
  MC_CHECK(d.Lq < (int64_t(1) << 30) && d.Lk < (int64_t(1) << 30), what, ": sequence lengths must be below 2^30");
  MC_CHECK(std::max(d.D, d.Dv) <= 256, what, ": head dims above 256 are not supported on CUDA (got ", d.D, ", ",
           d.Dv, ")");
  MC_CHECK(q.dtype() != DType::F64 || std::max(d.D, d.Dv) <= 128, what,
           ": f64 head dims above 128 are not supported on CUDA (got ", std::max(d.D, d.Dv), ")");
  return d;
}

// A view with a unit stride on the last dim (a contiguous copy otherwise).
Tensor unit_inner(const Tensor& t) { return t.size(3) <= 1 || t.stride(3) == 1 ? t : contiguous(t); }
// An output the kernels can write: itself, or a contiguous temporary copied back by finish().
Tensor writable(const Tensor& t) {
  return t.size(3) <= 1 || t.stride(3) == 1 ? t : Tensor::empty(t.shape(), t.dtype(), t.device());
}
void finish(const Tensor& dst, const Tensor& tmp) {
  if (!tmp.is_same(dst)) copy(dst, tmp);
}

In in_of(const Tensor& t) { return {t.raw_data(), t.stride(0), t.stride(1), t.stride(2)}; }
Out out_of(const Tensor& t) { return {t.raw_data(), t.stride(0), t.stride(1), t.stride(2)}; }

// 16-byte row chunks are safe when the base is 16-byte aligned and the row, head and batch strides
// keep it so.
bool aligned16(const Tensor& t) {
  const int64_t per = int64_t(16 / t.element_size());
  return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0 &&
         (t.size(0) <= 1 || t.stride(0) % per == 0) && (t.size(1) <= 1 || t.stride(1) % per == 0) &&
         (t.size(2) <= 1 || t.stride(2) % per == 0) && t.size(3) % per == 0;
}

Args base_args(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p) {
  Args a;
  a.q = in_of(q);
  a.k = in_of(k);
  a.v = in_of(v);
  a.H = int(d.H);
  a.Lq = int(d.Lq);
  a.Lk = int(d.Lk);
  a.D = int(d.D);
  a.Dv = int(d.Dv);
  a.off = int(d.Lk - d.Lq);
  a.causal = p.causal;
  a.scale = p.scale;
  if (p.key_padding_mask.defined()) {
    a.mask = static_cast<const uint8_t*>(p.key_padding_mask.raw_data());
    a.ms0 = p.key_padding_mask.stride(0);
    a.ms1 = p.key_padding_mask.stride(1);
  }
  return a;
}

// Dynamic shared memory above the default 48 KiB needs an opt-in per kernel (done once per kernel: the
// launchers keep the result in a function-local static).
template <class K>
bool prepare_smem(K kernel, size_t bytes, const char* what) {
  const size_t limit = size_t(props().sharedMemPerBlockOptin);
  MC_CHECK(bytes <= limit, what, ": needs ", bytes, " bytes of shared memory per block, the device allows ", limit);
  if (bytes > 48 * 1024)
    MC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), what);
  return true;
}

unsigned tiles(int64_t n, int64_t tile, const char* what) {
  const int64_t t = std::max<int64_t>(1, (n + tile - 1) / tile);
  MC_CHECK(t <= 65535, what, ": ", t, " tiles exceed the grid limit");
  return unsigned(t);
}

int simt_dp(int64_t dmax) { return dmax <= 32 ? 32 : dmax <= 64 ? 64 : dmax <= 128 ? 128 : 256; }

template <class T, int D>
void fwd_mma_launch(const Args& a, int64_t BH) {
  constexpr size_t smem = fwd_mma_smem<T, D>();
  static const bool ready1 = prepare_smem(attn_fwd_mma<T, D>, smem, "attention");
  (void)ready1;
  attn_fwd_mma<T, D><<<dim3(unsigned(BH), tiles(a.Lq, kMmaBQ, "attention")), 128, smem, stream()>>>(a);
  MC_CUDA_LAUNCHED("attention");
}

template <class T, int DP>
void fwd_simt_launch(const Args& a, int64_t BH) {
  using C = acc_of<T>;
  constexpr size_t smem = fwd_simt_smem<C, DP>();
  static const bool ready2 = prepare_smem(attn_fwd_simt<T, DP>, smem, "attention");
  (void)ready2;
  attn_fwd_simt<T, DP><<<dim3(unsigned(BH), tiles(a.Lq, kSimtB, "attention")), 128, smem, stream()>>>(a);
  MC_CUDA_LAUNCHED("attention");
}

template <class T, int D>
void bwd_mma_launch(const Args& a, int64_t BH) {
  // Query tile of the dK/dV pass: its registers hold two D-wide accumulators plus two BQ-wide score rows.
  constexpr int BQ = D <= 64 ? MC_ATTN_DKDV_BQ : 16;
  constexpr int BK = D <= 64 ? 64 : 32;  // key tile of the dQ pass
  constexpr size_t s1 = dkdv_mma_smem<T, D, BQ>(), s2 = dq_mma_smem<T, D, BK>();
  static const bool ready3 = prepare_smem(attn_bwd_dkdv_mma<T, D, BQ>, s1, "attention_backward");
  (void)ready3;
  static const bool ready4 = prepare_smem(attn_bwd_dq_mma<T, D, BK>, s2, "attention_backward");
  (void)ready4;
  attn_bwd_dkdv_mma<T, D, BQ>
      <<<dim3(unsigned(BH), tiles(a.Lk, kMmaBK, "attention_backward")), 128, s1, stream()>>>(a);
  MC_CUDA_LAUNCHED("attention_backward");
  attn_bwd_dq_mma<T, D, BK><<<dim3(unsigned(BH), tiles(a.Lq, kMmaBQ, "attention_backward")), 128, s2, stream()>>>(a);
  MC_CUDA_LAUNCHED("attention_backward");
}

template <class T, int DP>
void bwd_simt_launch(const Args& a, int64_t BH) {
  using C = acc_of<T>;
  constexpr size_t s1 = dkdv_simt_smem<C, DP>(), s2 = dq_simt_smem<C, DP>();
  static const bool ready5 = prepare_smem(attn_bwd_dkdv_simt<T, DP>, s1, "attention_backward");
  (void)ready5;
  static const bool ready6 = prepare_smem(attn_bwd_dq_simt<T, DP>, s2, "attention_backward");
  (void)ready6;
  attn_bwd_dkdv_simt<T, DP><<<dim3(unsigned(BH), tiles(a.Lk, kSimtB, "attention_backward")), 128, s1, stream()>>>(a);
  MC_CUDA_LAUNCHED("attention_backward");
  attn_bwd_dq_simt<T, DP><<<dim3(unsigned(BH), tiles(a.Lq, kSimtB, "attention_backward")), 128, s2, stream()>>>(a);
  MC_CUDA_LAUNCHED("attention_backward");
}

template <class T>
void forward_typed(const Args& a, int64_t BH) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
    if (a.D == a.Dv) {
      switch (a.D) {
        case 32: return fwd_mma_launch<T, 32>(a, BH);
        case 64: return fwd_mma_launch<T, 64>(a, BH);
        case 128: return fwd_mma_launch<T, 128>(a, BH);
        default: break;
      }
    }
  }
  switch (simt_dp(std::max(a.D, a.Dv))) {
    case 32: return fwd_simt_launch<T, 32>(a, BH);
    case 64: return fwd_simt_launch<T, 64>(a, BH);
    case 128: return fwd_simt_launch<T, 128>(a, BH);
    default:
      if constexpr (!std::is_same_v<T, double>) return fwd_simt_launch<T, 256>(a, BH);
      fail("attention: unsupported head dim ", a.D);  // excluded by check_shapes
  }
}

template <class T>
void backward_typed(const Args& a, int64_t BH) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
    if (a.D == a.Dv) {
      switch (a.D) {
        case 32: return bwd_mma_launch<T, 32>(a, BH);
        case 64: return bwd_mma_launch<T, 64>(a, BH);
        case 128: return bwd_mma_launch<T, 128>(a, BH);
        default: break;
      }
    }
  }
  switch (simt_dp(std::max(a.D, a.Dv))) {
    case 32: return bwd_simt_launch<T, 32>(a, BH);
    case 64: return bwd_simt_launch<T, 64>(a, BH);
    case 128: return bwd_simt_launch<T, 128>(a, BH);
    default:
      if constexpr (!std::is_same_v<T, double>) return bwd_simt_launch<T, 256>(a, BH);
      fail("attention_backward: unsupported head dim ", a.D);
  }
}

}  // namespace

void attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
               const AttentionParams& p) {
  const Dims d = check_shapes("attention", q, k, v, out, lse, p);
  const int64_t BH = d.B * d.H;
  if (BH == 0 || d.Lq == 0) return;
  const Tensor qd = unit_inner(q), kd = unit_inner(k), vd = unit_inner(v), od = writable(out);
  Args a = base_args(d, qd, kd, vd, p);
  a.out = out_of(od);
  a.lse_out = static_cast<float*>(lse.raw_data());
  a.ls0 = lse.stride(0);
  a.ls1 = lse.stride(1);
  a.ls2 = lse.stride(2);
  a.vec = aligned16(qd) && aligned16(kd) && aligned16(vd) && aligned16(od);
  MC_CUDA_DISPATCH_FLOAT(q.dtype(), "attention", T, { forward_typed<T>(a, BH); });
  finish(out, od);
}

void attention_backward(const Tensor& gq, const Tensor& gk, const Tensor& gv, const Tensor& gout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const AttentionParams& p) {
  const Dims d = check_shapes("attention_backward", q, k, v, out, lse, p);
  MC_CHECK(gq.shape() == q.shape() && gk.shape() == k.shape() && gv.shape() == v.shape() &&
               gout.shape() == out.shape(),
           "attention_backward: gradient shapes do not match q, k, v, out");
  MC_CHECK(gq.dtype() == q.dtype() && gk.dtype() == q.dtype() && gv.dtype() == q.dtype() &&
               gout.dtype() == q.dtype(),
           "attention_backward: gradients must have the dtype of q");
  const int64_t BH = d.B * d.H;
  if (BH == 0) return;
  if (d.Lq == 0 || d.Lk == 0) {  // nothing attends: every gradient is zero
    if (gq.numel()) fill(gq, 0.0);
    if (gk.numel()) fill(gk, 0.0);
    if (gv.numel()) fill(gv, 0.0);
    return;
  }
  const Tensor qd = unit_inner(q), kd = unit_inner(k), vd = unit_inner(v), od = unit_inner(out),
               god = unit_inner(gout);
  const Tensor gqd = writable(gq), gkd = writable(gk), gvd = writable(gv);
  Args a = base_args(d, qd, kd, vd, p);
  a.o = in_of(od);
  a.go = in_of(god);
  a.gq = out_of(gqd);
  a.gk = out_of(gkd);
  a.gv = out_of(gvd);
  a.lse = static_cast<const float*>(lse.raw_data());
  a.ls0 = lse.stride(0);
  a.ls1 = lse.stride(1);
  a.ls2 = lse.stride(2);
  a.vec = aligned16(qd) && aligned16(kd) && aligned16(vd) && aligned16(god) && aligned16(gqd) && aligned16(gkd) &&
          aligned16(gvd);
  const int64_t rows = BH * d.Lq;
  const bool f64 = q.dtype() == DType::F64;
  const Tensor di = Tensor::empty({rows}, f64 ? DType::F64 : DType::F32, q.device());
  a.di = di.raw_data();
  MC_CHECK(rows / 8 < 0x7fffffffLL, "attention_backward: too many rows (", rows, ")");
  Tensor lse64;
  if (f64) {
    lse64 = Tensor::empty({rows}, DType::F64, q.device());
    a.lse64 = static_cast<const double*>(lse64.raw_data());
    attn_row_lse_f64<<<unsigned((rows + 7) / 8), 256, 0, stream()>>>(a, rows, static_cast<double*>(lse64.raw_data()));
    MC_CUDA_LAUNCHED("attention_backward");
  }
  const unsigned pre_blocks = unsigned((rows * 8 + 255) / 256);
  const bool pre_vec = aligned16(od) && aligned16(god);
  MC_CUDA_DISPATCH_FLOAT(q.dtype(), "attention_backward", T, {
    if (pre_vec)
      attn_bwd_rowdot<T, true><<<pre_blocks, 256, 0, stream()>>>(a, rows, static_cast<acc_of<T>*>(di.raw_data()));
    else
      attn_bwd_rowdot<T, false><<<pre_blocks, 256, 0, stream()>>>(a, rows, static_cast<acc_of<T>*>(di.raw_data()));
    MC_CUDA_LAUNCHED("attention_backward");
    backward_typed<T>(a, BH);
  });
  finish(gq, gqd);
  finish(gk, gkd);
  finish(gv, gvd);
}

}  // namespace mc::cuda
