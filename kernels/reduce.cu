// kernels/reduce.cu — sum / mean / max / min / prod over any dims, and argmax / argmin (mc/cpu/reduce.hpp
// is the reference).
//
// As on the CPU, floating inputs accumulate in f64 and integers (and bool) in i64; Max/Min let NaN win;
// Mean divides once at the end; the result is converted to the output's dtype (which may differ from the
// input's: sums of integers are i64). f64 accumulation costs nothing here: the kernels are bound by memory
// bandwidth, and the H100/H200 FP64 rate is a large fraction of FP32's.
//
// The reduced dims are sorted by stride (largest first) and merged where contiguous; the kept dims are
// merged where both x and out allow it. Then, as on the CPU:
// - row mode (a reduced dim has the smallest stride: each output reduces runs of memory): a warp per output
//   for short rows, a block per output for long ones; contiguous rows use 16-byte loads.
// - column mode (a kept dim is innermost): a block of 32 x 8 threads, 32 adjacent outputs along the kept
//   innermost dim (coalesced) and 8 lanes over the reduced elements, combined in shared memory.
// When that leaves the GPU underused (few outputs, long reductions, e.g. a full reduction or a bias
// gradient), the reduced range is split over blockIdx.y; each split writes a partial accumulator to scratch
// and a second kernel combines the partials of each output in a fixed order (deterministic).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kMaxSplits = 1024;


// Up to 8 dims of sizes and strides; the reduced dims use FastDiv (their product is below 2^32).
struct RDims {
  int n = 0;
  FastDiv size[kMaxDims];
  int64_t stride[kMaxDims] = {};
  __device__ __forceinline__ int64_t offset(uint32_t i) const {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; --d) {
      const uint32_t q = size[d].div(i);
      off += int64_t(i - q * size[d].d) * stride[d];
      i = q;
    }
    return off;
  }
};

// Kept dims: an output index -> offsets in x and in out (once per output, plain 64-bit arithmetic).
struct KDims {
  int n = 0;
  int64_t size[kMaxDims] = {};
  int64_t xs[kMaxDims] = {};
  int64_t os[kMaxDims] = {};
  __device__ __forceinline__ void offsets(int64_t i, int64_t& xo, int64_t& oo) const {
    xo = 0;
    oo = 0;
    for (int d = n - 1; d >= 0; --d) {
      const int64_t q = i / size[d], r = i - q * size[d];
      xo += r * xs[d];
      oo += r * os[d];
      i = q;
    }
  }
};

template <class T> struct acc_for { using type = int64_t; };
template <> struct acc_for<float> { using type = double; };
template <> struct acc_for<double> { using type = double; };
template <> struct acc_for<__nv_bfloat16> { using type = double; };
template <> struct acc_for<__half> { using type = double; };
template <class T> using acc_for_t = typename acc_for<T>::type;

template <class Acc, class T> __device__ __forceinline__ Acc load_acc(T v) { return Acc(v); }
template <> __device__ __forceinline__ double load_acc<double, __nv_bfloat16>(__nv_bfloat16 v) {
  return double(__bfloat162float(v));
}
template <> __device__ __forceinline__ double load_acc<double, __half>(__half v) { return double(__half2float(v)); }

template <class Acc>
struct Red {
  int op;  // ReduceOp
  __device__ __forceinline__ Acc init() const {
    switch (ReduceOp(op)) {
      case ReduceOp::Max:
        return std::numeric_limits<Acc>::has_infinity ? -std::numeric_limits<Acc>::infinity()
                                                      : std::numeric_limits<Acc>::lowest();
      case ReduceOp::Min:
        return std::numeric_limits<Acc>::has_infinity ? std::numeric_limits<Acc>::infinity()
                                                      : std::numeric_limits<Acc>::max();
      case ReduceOp::Prod: return Acc(1);
      default: return Acc(0);
    }
  }
  __device__ __forceinline__ Acc operator()(Acc a, Acc v) const {
    switch (ReduceOp(op)) {
      case ReduceOp::Max: return (a != a || a > v) ? a : v;  // NaN propagates
      case ReduceOp::Min: return (a != a || a < v) ? a : v;
      case ReduceOp::Prod: return a * v;
      default: return a + v;
    }
  }
};

// Converts the accumulator to the output dtype the way the CPU's convert<T>() does.
template <class Acc>
__device__ __forceinline__ void store_out(void* base, int64_t off, int dt, Acc v) {
  switch (DType(dt)) {
    case DType::F32: static_cast<float*>(base)[off] = float(v); break;
    case DType::F64: static_cast<double*>(base)[off] = double(v); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(base)[off] = __float2bfloat16_rn(float(v)); break;
    case DType::F16: static_cast<__half*>(base)[off] = __float2half_rn(float(v)); break;
    case DType::I32: static_cast<int32_t*>(base)[off] = int32_t(v); break;
    case DType::I64: static_cast<int64_t*>(base)[off] = int64_t(v); break;
    case DType::U8: static_cast<uint8_t*>(base)[off] = uint8_t(v); break;
    case DType::Bool: static_cast<bool*>(base)[off] = v != Acc(0); break;
  }
}

// Combines across aligned groups of W lanes (W a power of two up to 32); every lane of the warp takes part.
template <class Acc, int W = 32>
__device__ __forceinline__ Acc warp_reduce(Red<Acc> red, Acc a) {
#pragma unroll
  for (int m = W / 2; m > 0; m >>= 1) a = red(a, __shfl_xor_sync(0xffffffffu, a, m));
  return a;
}

struct ReduceArgs {
  const void* x;
  void* out;
  void* partial;  // [nout, splits] accumulators when splits > 1
  int op, out_dtype;
  KDims kept;
  RDims red;
  int64_t nout, count, chunk;  // chunk: reduced elements per split
  int splits;
  bool vec;  // row mode: rows are contiguous and 16-byte aligned
  // column mode: the kept innermost dim
  int64_t csize, cxs, cos;
};

template <class Acc>
__device__ __forceinline__ void finish(const ReduceArgs& a, Acc v, int64_t o, int64_t oo, int split) {
  if (a.splits > 1) {
    static_cast<Acc*>(a.partial)[o * a.splits + split] = v;
    return;
  }
  if (ReduceOp(a.op) == ReduceOp::Mean) v = Acc(v / Acc(a.count));
  store_out<Acc>(a.out, oo, a.out_dtype, v);
}

// Row mode: a group of G threads (8 or 32 lanes of a warp, or the whole block when G == kBlock) per
// (output, split).
template <class T, int G>
__global__ void __launch_bounds__(kBlock) row_kernel(ReduceArgs a) {
  using Acc = acc_for_t<T>;
  constexpr int V = int(16 / sizeof(T));
  const Red<Acc> red{a.op};
  const int lane = threadIdx.x % G;
  const int64_t o = G == kBlock ? int64_t(blockIdx.x) : int64_t(blockIdx.x) * (kBlock / G) + threadIdx.x / G;
  // Groups past the last output still take part in the warp shuffles (groups smaller than a warp).
  if (G >= 32 && o >= a.nout) return;  // uniform within a warp
  const bool valid = o < a.nout;
  const int split = blockIdx.y;
  const int64_t lo = int64_t(split) * a.chunk;
  const int64_t hi = !valid ? lo : (lo + a.chunk < a.count ? lo + a.chunk : a.count);
  int64_t xo = 0, oo = 0;
  if (valid) a.kept.offsets(o, xo, oo);
  const T* x = static_cast<const T*>(a.x) + xo;
  Acc acc = red.init();
  if (a.vec) {  // one contiguous dim of stride 1, row starts and lo aligned to the pack
    const int64_t vhi = lo + (hi - lo) / V * V;
    struct alignas(16) P { T v[V]; };
    int64_t r = lo + int64_t(lane) * V;
    for (; r + int64_t(G) * V < vhi; r += 2 * int64_t(G) * V) {  // two packs in flight
      const P p0 = *reinterpret_cast<const P*>(x + r);
      const P p1 = *reinterpret_cast<const P*>(x + r + int64_t(G) * V);
#pragma unroll
      for (int k = 0; k < V; ++k) acc = red(acc, load_acc<Acc>(p0.v[k]));
#pragma unroll
      for (int k = 0; k < V; ++k) acc = red(acc, load_acc<Acc>(p1.v[k]));
    }
    if (r < vhi) {
      const P p0 = *reinterpret_cast<const P*>(x + r);
#pragma unroll
      for (int k = 0; k < V; ++k) acc = red(acc, load_acc<Acc>(p0.v[k]));
    }
    for (int64_t r = vhi + lane; r < hi; r += G) acc = red(acc, load_acc<Acc>(x[r]));
  } else if (a.red.n == 1) {
    const int64_t s = a.red.stride[0];
    int64_t r = lo + lane;
    for (; r + 3 * G < hi; r += 4 * G) {  // four loads in flight
      const T v0 = x[r * s], v1 = x[(r + G) * s], v2 = x[(r + 2 * G) * s], v3 = x[(r + 3 * G) * s];
      acc = red(acc, load_acc<Acc>(v0));
      acc = red(acc, load_acc<Acc>(v1));
      acc = red(acc, load_acc<Acc>(v2));
      acc = red(acc, load_acc<Acc>(v3));
    }
    for (; r < hi; r += G) acc = red(acc, load_acc<Acc>(x[r * s]));
  } else {
    for (int64_t r = lo + lane; r < hi; r += G) acc = red(acc, load_acc<Acc>(x[a.red.offset(uint32_t(r))]));
  }
  acc = warp_reduce<Acc, (G < 32 ? G : 32)>(red, acc);
  if constexpr (G > 32) {
    __shared__ Acc sh[G / 32];
    const int w = threadIdx.x / 32;
    if (lane % 32 == 0) sh[w] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      acc = sh[0];
      for (int k = 1; k < G / 32; ++k) acc = red(acc, sh[k]);
    }
  }
  if (lane == 0 && valid) finish<Acc>(a, acc, o, oo, split);
}

// Column mode: blockIdx.x = (outer kept index, tile of 32 columns), blockIdx.y = split; threadIdx.y walks
// the reduced elements.
constexpr int kColX = 32, kColY = 8;

// CV adjacent columns of one reduced element: a 16-byte pack when CV > 1 (aligned, see reduce()).
template <class T, int CV, class Acc>
__device__ __forceinline__ void load_cols(const T* p, T (&v)[CV]) {
  if constexpr (CV == 1) {
    v[0] = *p;
  } else {
    struct alignas(16) P { T v[CV]; };
    const P pk = *reinterpret_cast<const P*>(p);
#pragma unroll
    for (int c = 0; c < CV; ++c) v[c] = pk.v[c];
  }
}

template <class T, int CV>
__global__ void __launch_bounds__(kColX * kColY) col_kernel(ReduceArgs a) {
  using Acc = acc_for_t<T>;
  constexpr int TW = kColX * CV;  // columns per tile
  const Red<Acc> red{a.op};
  const int64_t ntiles = (a.csize + TW - 1) / TW;
  const int64_t outer = int64_t(blockIdx.x) / ntiles, tile = int64_t(blockIdx.x) - outer * ntiles;
  const int64_t j0 = tile * TW + int64_t(threadIdx.x) * CV;  // this thread's first column (CV divides csize)
  const int split = blockIdx.y;
  const int64_t lo = int64_t(split) * a.chunk;
  const int64_t hi = lo + a.chunk < a.count ? lo + a.chunk : a.count;
  int64_t xo, oo;
  a.kept.offsets(outer, xo, oo);
  Acc acc[CV];
#pragma unroll
  for (int c = 0; c < CV; ++c) acc[c] = red.init();
  if (j0 < a.csize) {
    const T* x = static_cast<const T*>(a.x) + xo + j0 * a.cxs;
    if (a.red.n == 1) {
      const int64_t s = a.red.stride[0];
      int64_t r = lo + threadIdx.y;
      for (; r + 3 * kColY < hi; r += 4 * kColY) {  // four loads in flight before accumulating
        T v[4][CV];
#pragma unroll
        for (int u = 0; u < 4; ++u) load_cols<T, CV, Acc>(x + (r + u * kColY) * s, v[u]);
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int c = 0; c < CV; ++c) acc[c] = red(acc[c], load_acc<Acc>(v[u][c]));
      }
      for (; r < hi; r += kColY) {
        T v[CV];
        load_cols<T, CV, Acc>(x + r * s, v);
#pragma unroll
        for (int c = 0; c < CV; ++c) acc[c] = red(acc[c], load_acc<Acc>(v[c]));
      }
    } else {
      for (int64_t r = lo + threadIdx.y; r < hi; r += kColY) {
        T v[CV];
        load_cols<T, CV, Acc>(x + a.red.offset(uint32_t(r)), v);
#pragma unroll
        for (int c = 0; c < CV; ++c) acc[c] = red(acc[c], load_acc<Acc>(v[c]));
      }
    }
  }
  __shared__ Acc sh[kColY][TW];
#pragma unroll
  for (int c = 0; c < CV; ++c) sh[threadIdx.y][threadIdx.x * CV + c] = acc[c];
  __syncthreads();
  if (threadIdx.y == 0 && j0 < a.csize) {
#pragma unroll
    for (int c = 0; c < CV; ++c) {
      Acc v = acc[c];
      for (int k = 1; k < kColY; ++k) v = red(v, sh[k][threadIdx.x * CV + c]);
      // Output number o = outer * csize + j: the kept dims flattened with the column dim last (see reduce()).
      const int64_t j = j0 + c;
      finish<Acc>(a, v, outer * a.csize + j, oo + j * a.cos, split);
    }
  }
}

// Combines the partials of each output (a warp per output, fixed order) and stores the result.
template <class Acc>
__global__ void __launch_bounds__(kBlock) combine_kernel(ReduceArgs a, KDims out_dims) {
  const Red<Acc> red{a.op};
  const int64_t o = int64_t(blockIdx.x) * (kBlock / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= a.nout) return;
  const Acc* p = static_cast<const Acc*>(a.partial) + o * a.splits;
  Acc acc = red.init();
  for (int s = lane; s < a.splits; s += 32) acc = red(acc, p[s]);
  acc = warp_reduce(red, acc);
  if (lane == 0) {
    int64_t xo, oo;
    out_dims.offsets(o, xo, oo);
    if (ReduceOp(a.op) == ReduceOp::Mean) acc = Acc(acc / Acc(a.count));
    store_out<Acc>(a.out, oo, a.out_dtype, acc);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Splits of the reduced range so that `base_threads` threads become about one full wave, each split
// keeping at least `min_per_split` elements; chunk is a multiple of `align`.
void choose_splits(int64_t base_threads, int64_t count, int64_t min_per_split, int64_t align, int& splits,
                   int64_t& chunk) {
  const int64_t target = int64_t(props().multiProcessorCount) * 2048;
  int64_t s = 1;
  if (base_threads < target) s = std::min(ceil_div(target, base_threads), ceil_div(count, min_per_split));
  s = std::max<int64_t>(1, std::min<int64_t>(s, kMaxSplits));
  chunk = ceil_div(ceil_div(count, s), align) * align;
  splits = int(ceil_div(count, chunk));
}

}  // namespace

void reduce(ReduceOp op, const Tensor& out, const Tensor& x_in) {
  MC_CHECK(out.dim() == x_in.dim(), "reduce: output rank ", out.dim(), " differs from the input's ", x_in.dim());
  for (int d = 0; d < x_in.dim(); ++d)
    MC_CHECK(out.size(d) == x_in.size(d) || out.size(d) == 1, "reduce: output ", shape_str(out.shape()),
             " does not match input ", shape_str(x_in.shape()));
  if (out.numel() == 0) return;
  if (x_in.numel() == 0) {
    MC_CHECK(op == ReduceOp::Sum || op == ReduceOp::Prod || op == ReduceOp::Mean, "reduce: max/min of an empty tensor");
    fill(out, op == ReduceOp::Prod ? 1.0 : (op == ReduceOp::Mean ? NAN : 0.0));
    return;
  }
  Tensor x = x_in;
  for (int attempt = 0; attempt < 2; ++attempt) {
    // Kept and reduced dims (size-1 dims of x play no part).
    std::vector<int64_t> ks, kx, ko, rs, rx;
    for (int d = 0; d < x.dim(); ++d) {
      if (x.size(d) == 1) continue;
      if (out.size(d) == 1) {
        rs.push_back(x.size(d));
        rx.push_back(x.stride(d));
      } else {
        ks.push_back(x.size(d));
        kx.push_back(x.stride(d));
        ko.push_back(out.stride(d));
      }
    }
    // Reduced dims: largest |stride| first, then merge contiguous neighbours.
    std::vector<size_t> order(rs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t i, size_t j) { return std::llabs(rx[i]) > std::llabs(rx[j]); });
    std::vector<int64_t> mrs, mrx;
    for (size_t i : order) {
      if (!mrs.empty() && mrx.back() == rx[i] * rs[i]) {
        mrs.back() *= rs[i];
        mrx.back() = rx[i];
      } else {
        mrs.push_back(rs[i]);
        mrx.push_back(rx[i]);
      }
    }
    // Kept dims: merge where both x and out are contiguous across the pair.
    std::vector<int64_t> mks, mkx, mko;
    for (size_t i = 0; i < ks.size(); ++i) {
      if (!mks.empty() && mkx.back() == kx[i] * ks[i] && mko.back() == ko[i] * ks[i]) {
        mks.back() *= ks[i];
        mkx.back() = kx[i];
        mko.back() = ko[i];
      } else {
        mks.push_back(ks[i]);
        mkx.push_back(kx[i]);
        mko.push_back(ko[i]);
      }
    }
    int64_t count = 1, nout = 1;
    for (int64_t s : mrs) count *= s;
    for (int64_t s : mks) nout *= s;
    const bool fits = mrs.size() <= size_t(kMaxDims) && mks.size() <= size_t(kMaxDims) &&
                      (mrs.size() <= 1 || count < (int64_t(1) << 32));
    if (!fits) {
      MC_CHECK(attempt == 0 && !x.is_contiguous(), "reduce: layout of ", shape_str(x.shape()),
               " has too many non-mergeable dims (or over 2^32 reduced elements over several dims)");
      x = contiguous(x);
      continue;
    }

    int64_t min_kept = std::numeric_limits<int64_t>::max(), min_red = min_kept;
    size_t cdim = 0;
    for (size_t i = 0; i < mkx.size(); ++i)
      if (std::llabs(mkx[i]) < min_kept) { min_kept = std::llabs(mkx[i]); cdim = i; }
    for (int64_t s : mrx) min_red = std::min<int64_t>(min_red, std::llabs(s));
    const bool row_mode = mrs.empty() || mks.empty() || min_red <= min_kept;

    ReduceArgs a{};
    a.x = x.raw_data();
    a.out = out.raw_data();
    a.op = int(op);
    a.out_dtype = int(out.dtype());
    a.nout = nout;
    a.count = count;
    a.red.n = int(mrs.size());
    for (size_t i = 0; i < mrs.size(); ++i) {
      a.red.size[i] = FastDiv(uint32_t(mrs.size() == 1 ? 1 : mrs[i]));
      a.red.stride[i] = mrx[i];
    }
    // Output dims in the order the kernels number outputs; used by combine_kernel for the store offset.
    KDims out_dims;
    Tensor partial;
    const bool is_float = is_floating(x.dtype());
    const size_t acc_size = 8;  // double or int64

    if (row_mode) {
      a.kept.n = int(mks.size());
      for (size_t i = 0; i < mks.size(); ++i) {
        a.kept.size[i] = mks[i];
        a.kept.xs[i] = mkx[i];
        a.kept.os[i] = mko[i];
      }
      out_dims = a.kept;
      const int64_t V = int64_t(16 / x.element_size());
      bool vec = mrs.size() == 1 && mrx[0] == 1 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 && count >= 2 * V;
      for (int64_t s : mkx) vec = vec && s % V == 0;
      a.vec = vec;
      const int G = count >= 2048 ? kBlock : (count > 128 ? 32 : 8);
      choose_splits(nout * G, count, int64_t(G) * 16, vec ? V : 1, a.splits, a.chunk);
      if (a.splits > 1) {
        partial = scratch(nout * a.splits * int64_t(acc_size));
        a.partial = partial.raw_data();
      }
      const int64_t gx = G == kBlock ? nout : ceil_div(nout, kBlock / G);
      MC_CHECK(gx < (int64_t(1) << 31), "reduce: too many outputs (", nout, ")");
      const dim3 grid(unsigned(gx), unsigned(a.splits));
      MC_CUDA_DISPATCH(x.dtype(), T, {
        if (G == kBlock) row_kernel<T, kBlock><<<grid, kBlock, 0, stream()>>>(a);
        else if (G == 32) row_kernel<T, 32><<<grid, kBlock, 0, stream()>>>(a);
        else row_kernel<T, 8><<<grid, kBlock, 0, stream()>>>(a);
      });
      MC_CUDA_LAUNCHED("reduce");
    } else {
      // Kept dims without the column dim (outer), the column dim handled by threadIdx.x.
      a.csize = mks[cdim];
      a.cxs = mkx[cdim];
      a.cos = mko[cdim];
      int n = 0;
      for (size_t i = 0; i < mks.size(); ++i) {
        if (i == cdim) continue;
        a.kept.size[n] = mks[i];
        a.kept.xs[n] = mkx[i];
        a.kept.os[n] = mko[i];
        ++n;
      }
      a.kept.n = n;
      // Output number o = outer * csize + j: the outer dims followed by the column dim.
      out_dims = a.kept;
      out_dims.size[n] = a.csize;
      out_dims.xs[n] = a.cxs;
      out_dims.os[n] = a.cos;
      out_dims.n = n + 1;
      // Packs of CV = 16 / element-size adjacent columns per thread when every pack is aligned.
      const int64_t CV = int64_t(16 / x.element_size());
      bool cvec = a.cxs == 1 && a.csize % CV == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
      for (int d = 0; d < a.kept.n; ++d) cvec = cvec && a.kept.xs[d] % CV == 0;
      for (size_t i = 0; i < mrx.size(); ++i) cvec = cvec && mrx[i] % CV == 0;
      const int64_t tw = kColX * (cvec ? CV : 1);
      const int64_t nouter = nout / a.csize, ntiles = ceil_div(a.csize, tw);
      const int64_t gx = nouter * ntiles;
      MC_CHECK(gx < (int64_t(1) << 31), "reduce: too many outputs (", nout, ")");
      choose_splits(gx * kColX * kColY, count, kColY * 32, 1, a.splits, a.chunk);
      if (a.splits > 1) {
        partial = scratch(nout * a.splits * int64_t(acc_size));
        a.partial = partial.raw_data();
      }
      const dim3 grid(unsigned(gx), unsigned(a.splits));
      const dim3 block(kColX, kColY);
      MC_CUDA_DISPATCH(x.dtype(), T, {
        if (cvec) col_kernel<T, int(16 / sizeof(T))><<<grid, block, 0, stream()>>>(a);
        else col_kernel<T, 1><<<grid, block, 0, stream()>>>(a);
      });
      MC_CUDA_LAUNCHED("reduce");
    }
    if (a.splits > 1) {
      const unsigned blocks = unsigned(ceil_div(nout, kBlock / 32));
      if (is_float) combine_kernel<double><<<blocks, kBlock, 0, stream()>>>(a, out_dims);
      else combine_kernel<int64_t><<<blocks, kBlock, 0, stream()>>>(a, out_dims);
      MC_CUDA_LAUNCHED("reduce");
    }
    return;
  }
}

// ---------------------------------------------------------------------------------------------
// argmax / argmin: the index of the first extremum along `dim`; NaN counts as the extremum and the
// first NaN wins (the CPU's scan stops at it).

namespace {

template <class T> struct cmp_of { using type = T; };
template <> struct cmp_of<__nv_bfloat16> { using type = float; };
template <> struct cmp_of<__half> { using type = float; };
template <> struct cmp_of<uint8_t> { using type = int; };  // widened so that warp shuffles apply
template <> struct cmp_of<bool> { using type = int; };

template <class T>
__device__ __forceinline__ typename cmp_of<T>::type cmp_load(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return typename cmp_of<T>::type(v);
}

// Is candidate (v, i) better than (bv, bi)? Equivalent to the CPU's sequential scan when the
// candidates are combined in any order: NaN beats numbers, then the larger (smaller) value, ties and
// NaN-vs-NaN go to the lower index.
template <class C>
__device__ __forceinline__ bool better(bool is_max, C v, int64_t i, C bv, int64_t bi) {
  const bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn && (!bn || i < bi);
  if (is_max ? v > bv : v < bv) return true;
  return v == bv && i < bi;
}

struct ArgArgs {
  const void* x;
  int64_t* out;
  KDims outer;  // x strides in xs, out strides in os
  int64_t n, xs, nout;
  bool is_max;
};

// A warp per output (reads along dim coalesced when its stride is 1).
template <class T>
__global__ void __launch_bounds__(kBlock) arg_warp_kernel(ArgArgs a) {
  using C = typename cmp_of<T>::type;
  const int64_t o = int64_t(blockIdx.x) * (kBlock / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (o >= a.nout) return;
  int64_t xo, oo;
  a.outer.offsets(o, xo, oo);
  const T* x = static_cast<const T*>(a.x) + xo;
  C bv = C(0);
  int64_t bi = -1;
  for (int64_t j = lane; j < a.n; j += 32) {
    const C v = cmp_load(x[j * a.xs]);
    if (bi < 0 || better(a.is_max, v, j, bv, bi)) { bv = v; bi = j; }
  }
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const C ov = __shfl_xor_sync(0xffffffffu, bv, m);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, m);
    if (oi >= 0 && (bi < 0 || better(a.is_max, ov, oi, bv, bi))) { bv = ov; bi = oi; }
  }
  if (lane == 0) a.out[oo] = bi;
}

// A thread per output (adjacent outputs adjacent in memory when dim is not the innermost).
template <class T>
__global__ void __launch_bounds__(kBlock) arg_thread_kernel(ArgArgs a) {
  using C = typename cmp_of<T>::type;
  const int64_t o = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (o >= a.nout) return;
  int64_t xo, oo;
  a.outer.offsets(o, xo, oo);
  const T* x = static_cast<const T*>(a.x) + xo;
  C bv = cmp_load(x[0]);
  int64_t bi = 0;
  for (int64_t j = 1; j < a.n && bv == bv; ++j) {
    const C v = cmp_load(x[j * a.xs]);
    if (v != v || (a.is_max ? v > bv : v < bv)) { bv = v; bi = j; }
  }
  a.out[oo] = bi;
}

}  // namespace

void arg_reduce(bool is_max, const Tensor& out, const Tensor& x, int dim) {
  const char* what = is_max ? "argmax" : "argmin";
  MC_CHECK(dim >= 0 && dim < x.dim(), what, ": dim ", dim, " out of range for ", shape_str(x.shape()));
  MC_CHECK(out.dtype() == DType::I64, what, ": output must be i64");
  MC_CHECK(out.dim() == x.dim(), what, ": output rank differs from the input's");
  const int64_t n = x.size(dim);
  MC_CHECK(n > 0, what, ": empty dimension");
  ArgArgs a{};
  a.x = x.raw_data();
  a.out = static_cast<int64_t*>(out.raw_data());
  a.n = n;
  a.xs = x.stride(dim);
  a.is_max = is_max;
  // Outer dims: every dim but `dim`, merged where x and out are both contiguous across a pair.
  std::vector<int64_t> s, xs, os;
  for (int d = 0; d < x.dim(); ++d) {
    if (d == dim || x.size(d) == 1) continue;
    MC_CHECK(out.size(d) == x.size(d), what, ": output ", shape_str(out.shape()), " does not match input ",
             shape_str(x.shape()));
    if (!s.empty() && xs.back() == x.stride(d) * x.size(d) && os.back() == out.stride(d) * x.size(d)) {
      s.back() *= x.size(d);
      xs.back() = x.stride(d);
      os.back() = out.stride(d);
    } else {
      s.push_back(x.size(d));
      xs.push_back(x.stride(d));
      os.push_back(out.stride(d));
    }
  }
  if (s.size() > size_t(kMaxDims)) {
    MC_CHECK(!x.is_contiguous(), what, ": too many dims");
    arg_reduce(is_max, out, contiguous(x), dim);
    return;
  }
  a.nout = 1;
  a.outer.n = int(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    a.outer.size[i] = s[i];
    a.outer.xs[i] = xs[i];
    a.outer.os[i] = os[i];
    a.nout *= s[i];
  }
  // A thread per output when dim is not the innermost of x and the outputs are many; else a warp each.
  const bool inner_outer = !s.empty() && std::llabs(xs.back()) < std::llabs(a.xs);
  const bool per_thread = inner_outer && a.nout >= 4096;
  MC_CUDA_DISPATCH(x.dtype(), T, {
    if (per_thread) {
      arg_thread_kernel<T><<<blocks_for(a.nout, kBlock, int64_t(1) << 31), kBlock, 0, stream()>>>(a);
    } else {
      const int64_t blocks = ceil_div(a.nout, kBlock / 32);
      MC_CHECK(blocks < (int64_t(1) << 31), what, ": too many outputs");
      arg_warp_kernel<T><<<unsigned(blocks), kBlock, 0, stream()>>>(a);
    }
  });
  MC_CUDA_LAUNCHED(what);
}

}  // namespace mc::cuda
