// mc/cpu/conv.hpp — 2-d convolution and pooling (NCHW) on the CPU.
//
// Convolution is lowered to GEMM (mc::cpu::gemm). For a chunk of nb images, im2col writes the
// patches as a matrix cols[C*kh*kw, nb*OH*OW] (row r = (c, ki, kj), column j = (image, oh, ow));
// group g owns the rows of its input channels, so every group is one GEMM on a slice of cols:
//   forward          out_g[Og, cols]     = w_g[Og, Kg] @ cols_g[Kg, cols]
//   backward input   gcols_g[Kg, cols]   = w_g^T @ gy_g[Og, cols], then col2im sums into gx
//   backward weight  gw_g[Og, Kg]       += gy_g @ cols_g^T  (accumulated over the chunks)
// A 1x1 convolution with stride 1 and no padding uses the image itself as cols (no copy) when its
// planes are big enough to make a good GEMM on their own; otherwise a few images are packed side by
// side so that the GEMM is wide. cols is bounded by cols_budget() elements: the batch is walked in
// chunks of images, and an image too large for the budget in bands of output rows. bf16/f16 are
// converted to f32, computed, and rounded once on the way out; f64 computes in f64.
//
// Pooling kernels work on (n, c) planes in parallel. max_pool2d stores for each output the flat
// index h*W + w of the chosen input within its plane (as torch); NaN wins like in torch.
// avg_pool2d follows torch's divisor rule (count_include_pad counts the padding inside the padded
// extent only); adaptive_avg_pool2d uses bins [floor(i*H/OH), ceil((i+1)*H/OH)).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "mc/cpu/elementwise.hpp"
#include "mc/cpu/gemm.hpp"

namespace mc::cpu {
namespace conv_detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sizes of one convolution; group-local sizes are Cg = C/G, Og = O/G, Kg = Cg*kh*kw.
struct Geom {
  int64_t N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, G;
  int64_t HW() const { return H * W; }
  int64_t OHW() const { return OH * OW; }
  int64_t Cg() const { return C / G; }
  int64_t Og() const { return O / G; }
  int64_t Kg() const { return Cg() * kh * kw; }
  int64_t K() const { return C * kh * kw; }
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

// x [N, C, H, W], w [O, C/G, kh, kw], y [N, O, OH, OW] (y is the output or the output gradient).
inline Geom make_geom(const char* what, const Tensor& x, const Tensor& w, const Tensor& y, const Conv2dParams& p) {
  MC_CHECK(x.dim() == 4 && w.dim() == 4 && y.dim() == 4, what, ": expects 4-d input, weight and output, got ",
           shape_str(x.shape()), ", ", shape_str(w.shape()), ", ", shape_str(y.shape()));
  Geom g{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), y.size(2), y.size(3), w.size(2), w.size(3),
         p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], p.groups};
  MC_CHECK(g.G > 0 && g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0 && g.ph >= 0 && g.pw >= 0, what,
           ": invalid groups/stride/dilation/padding");
  MC_CHECK(g.C % g.G == 0 && g.O % g.G == 0 && w.size(1) == g.Cg(), what, ": input ", shape_str(x.shape()),
           " and weight ", shape_str(w.shape()), " do not match for groups = ", g.G);
  const int64_t oh = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  const int64_t ow = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  MC_CHECK(y.size(0) == g.N && y.size(1) == g.O && y.size(2) == oh && y.size(3) == ow, what, ": output ",
           shape_str(y.shape()), " does not match input ", shape_str(x.shape()), " and weight ", shape_str(w.shape()));
  return g;
}

// t as a contiguous tensor of element type C (t itself when it already is one).
template <class C>
Tensor as_compute(const Tensor& t) {
  if (t.dtype() == dtype_of<C>::value && t.is_contiguous()) return t;
  Tensor c = Tensor::empty(t.shape(), dtype_of<C>::value);
  copy(c, t);
  return c;
}

// A contiguous tensor of element type C to compute `out` in (out itself when possible).
template <class C>
Tensor compute_target(const Tensor& out) {
  if (out.dtype() == dtype_of<C>::value && out.is_contiguous()) return out;
  return Tensor::empty(out.shape(), dtype_of<C>::value);
}

inline void store_back(const Tensor& out, const Tensor& computed) {
  if (!computed.is_same(out)) copy(out, computed);
}

// Scratch memory reused across calls on one thread (slot 0: cols, slot 1: packed output/gradient).
// Fresh large blocks cost a page fault per 4 KiB on first touch, often more than the im2col itself;
// blocks above kScratchCacheBytes are allocated for the call only.
constexpr size_t kScratchCacheBytes = size_t(96) << 20;

struct ScratchBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { std::free(p); }
  void* get(size_t n) {
    if (n > bytes) {
      std::free(p);
      bytes = 0;
      p = std::aligned_alloc(64, (n + 63) / 64 * 64);
      MC_CHECK(p, "conv2d: out of memory allocating ", n, " bytes of scratch");
      bytes = n;
    }
    return p;
  }
};

// Uninitialised memory for n elements of C; `holder` keeps a one-off block alive for the call.
template <class C>
C* scratch(int slot, int64_t n, Tensor& holder) {
  const size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(C);
  if (bytes > kScratchCacheBytes) {
    holder = Tensor::empty({std::max<int64_t>(n, 1)}, dtype_of<C>::value);
    return ptr<C>(holder);
  }
  thread_local ScratchBuffer buffers[2];
  return static_cast<C*>(buffers[slot].get(bytes));
}

// Elements of the im2col buffer per block (16 MiB in f32); adjustable, e.g. to exercise the
// chunked paths in tests.
inline int64_t& cols_budget() {
  static int64_t budget = int64_t(1) << 22;
  return budget;
}
constexpr int64_t kWideColumns = 1024;  // a GEMM this wide runs well on its own

// How the batch is walked: in blocks of nb whole images, or (nb == 1) in bands of `rows` output rows
// of one image when a whole image would overflow the budget. `direct` uses x itself as cols (1x1,
// stride 1, no padding, one image at a time).
struct Plan {
  bool direct;
  int64_t nb, rows;
};

inline Plan make_plan(const Geom& g) {
  const int64_t ohw = std::max<int64_t>(1, g.OHW());
  const int64_t per_image = std::max<int64_t>(1, g.K() * ohw), budget = std::max<int64_t>(1, cols_budget());
  int64_t nb = 1;
  if (ohw < kWideColumns && g.N > 1)
    nb = std::clamp<int64_t>(std::min(ceil_div(2 * kWideColumns, ohw), budget / per_image), 1, g.N);
  if (nb == 1 && g.pointwise()) return {true, 1, g.OH};
  int64_t rows = g.OH;
  if (nb == 1 && per_image > budget)
    rows = std::clamp<int64_t>(budget / std::max<int64_t>(1, g.K() * g.OW), 1, std::max<int64_t>(1, g.OH));
  return {false, nb, rows};
}

// One block of work: images [n0, n0 + nb), output rows [oh0, oh1) of each. Its cols matrix has
// ncols() = nb * (oh1 - oh0) * OW columns, image b's at offset b * (oh1 - oh0) * OW.
struct Block {
  int64_t n0, nb, oh0, oh1;
  int64_t rows() const { return oh1 - oh0; }
};

template <class F>
void for_each_block(const Geom& g, const Plan& plan, F f) {
  for (int64_t n0 = 0; n0 < g.N; n0 += plan.nb) {
    const int64_t nb = std::min(plan.nb, g.N - n0);
    for (int64_t oh0 = 0; oh0 < g.OH; oh0 += plan.rows) f(Block{n0, nb, oh0, std::min(g.OH, oh0 + plan.rows)});
  }
}

// Column range [lo, hi) of outputs whose input coordinate o*s + off lies in [0, n).
inline void valid_range(int64_t off, int64_t s, int64_t n, int64_t count, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : ceil_div(-off, s);
  hi = n - off <= 0 ? 0 : ceil_div(n - off, s);
  hi = std::min(hi, count);
  lo = std::min(lo, hi);
}

// cols[r, b*bw + (oh - oh0)*OW + ow] = x[n0 + b, c, oh*sh - ph + ki*dh, ow*sw - pw + kj*dw] (0 outside)
// for r = (c, ki, kj) and the block's rows, with bw = rows * OW; x points at image n0.
template <class C>
void im2col(const C* x, const Block& blk, const Geom& g, C* cols) {
  const int64_t nb = blk.nb, bw = blk.rows() * g.OW, ld = nb * bw, khw = g.kh * g.kw;
  parallel_for(g.K() * nb, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, bw)), [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t r = it / nb, b = it % nb;
      const int64_t c = r / khw, ki = (r / g.kw) % g.kh, kj = r % g.kw;
      const C* plane = x + (b * g.C + c) * g.HW();
      C* dst = cols + r * ld + b * bw;
      const int64_t off_w = kj * g.dw - g.pw;
      int64_t lo, hi;
      valid_range(off_w, g.sw, g.W, g.OW, lo, hi);
      for (int64_t oh = blk.oh0; oh < blk.oh1; ++oh) {
        C* d = dst + (oh - blk.oh0) * g.OW;
        const int64_t ih = oh * g.sh - g.ph + ki * g.dh;
        if (ih < 0 || ih >= g.H) {
          std::fill(d, d + g.OW, C(0));
          continue;
        }
        const C* src = plane + ih * g.W + off_w;
        std::fill(d, d + lo, C(0));
        if (g.sw == 1) {
          if (hi > lo) std::memcpy(d + lo, src + lo, size_t(hi - lo) * sizeof(C));
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) d[ow] = src[ow * g.sw];
        }
        std::fill(d + hi, d + g.OW, C(0));
      }
    }
  });
}

// The adjoint of im2col: adds each cols entry into the input position it was copied from. gx points at
// image n0; its planes are zeroed first when the block starts at output row 0 (the first band).
template <class C>
void col2im(const C* cols, const Block& blk, const Geom& g, C* gx) {
  const int64_t bw = blk.rows() * g.OW, ld = blk.nb * bw;
  parallel_for(blk.nb * g.C, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.kh * g.kw * bw)),
               [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t b = it / g.C, c = it % g.C;
      C* plane = gx + (b * g.C + c) * g.HW();
      if (blk.oh0 == 0) std::fill(plane, plane + g.HW(), C(0));
      for (int64_t ki = 0; ki < g.kh; ++ki)
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          const int64_t r = (c * g.kh + ki) * g.kw + kj;
          const C* src = cols + r * ld + b * bw;
          const int64_t off_w = kj * g.dw - g.pw;
          int64_t lo, hi;
          valid_range(off_w, g.sw, g.W, g.OW, lo, hi);
          for (int64_t oh = blk.oh0; oh < blk.oh1; ++oh) {
            const int64_t ih = oh * g.sh - g.ph + ki * g.dh;
            if (ih < 0 || ih >= g.H) continue;
            C* d = plane + ih * g.W + off_w;
            const C* s = src + (oh - blk.oh0) * g.OW;
            if (g.sw == 1) {
              for (int64_t ow = lo; ow < hi; ++ow) d[ow] += s[ow];
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) d[ow * g.sw] += s[ow];
            }
          }
        }
    }
  });
}

// dst[o, b*ohw + p] = src[b, o, p] for the nb images at src (a batch of [rows, ohw] maps as one wide matrix).
template <class C>
void gather_images(const C* src, int64_t nb, int64_t rows, int64_t ohw, C* dst) {
  parallel_for(nb * rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, ohw)), [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t o = it / nb, b = it % nb;
      std::memcpy(dst + o * nb * ohw + b * ohw, src + (b * rows + o) * ohw, size_t(ohw) * sizeof(C));
    }
  });
}

// dst[b, o, p] = src[o, b*ohw + p] (+ bias[o]).
template <class C>
void scatter_images(const C* src, int64_t nb, int64_t rows, int64_t ohw, const C* bias, C* dst) {
  parallel_for(nb * rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, ohw)), [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t b = it / rows, o = it % rows;
      const C* s = src + o * nb * ohw + b * ohw;
      C* d = dst + (b * rows + o) * ohw;
      if (bias) {
        const C bv = bias[o];
        for (int64_t p = 0; p < ohw; ++p) d[p] = s[p] + bv;
      } else {
        std::memcpy(d, s, size_t(ohw) * sizeof(C));
      }
    }
  });
}

// The cols matrix of a block: x itself (direct) or the im2col buffer, filled. ld is its row stride.
template <class C>
const C* block_cols(const Geom& g, const Plan& plan, const Block& blk, const C* x, C* cols, int64_t& ld) {
  const C* xin = x + blk.n0 * g.C * g.HW();
  if (plan.direct) {
    ld = g.HW();
    return xin + blk.oh0 * g.OW;
  }
  im2col(xin, blk, g, cols);
  ld = blk.nb * blk.rows() * g.OW;
  return cols;
}

// The [O, block columns] matrix of a block of an [N, O, OH, OW] tensor y: a view into y for one image,
// else packed into buf. ld is its row stride.
template <class C>
const C* block_rows_of(const Geom& g, const Block& blk, const C* y, C* buf, int64_t& ld) {
  const C* yn = y + blk.n0 * g.O * g.OHW();
  if (blk.nb == 1) {
    ld = g.OHW();
    return yn + blk.oh0 * g.OW;
  }
  gather_images(yn, blk.nb, g.O, g.OHW(), buf);
  ld = blk.nb * g.OHW();
  return buf;
}

template <class C>
void forward(const Geom& g, const C* x, const C* w, const C* bias, C* out) {
  const Plan plan = make_plan(g);
  const int64_t ohw = g.OHW(), Og = g.Og(), Kg = g.Kg();
  Tensor cols_t, buf_t;
  C* cols = plan.direct ? nullptr : scratch<C>(0, g.K() * plan.nb * plan.rows * g.OW, cols_t);
  C* tmp = plan.nb > 1 ? scratch<C>(1, g.O * plan.nb * ohw, buf_t) : nullptr;
  for_each_block(g, plan, [&](const Block& blk) {
    int64_t ldb;
    const C* B = block_cols(g, plan, blk, x, cols, ldb);
    const int64_t ncols = blk.nb * blk.rows() * g.OW;
    C* dst = blk.nb == 1 ? out + blk.n0 * g.O * ohw + blk.oh0 * g.OW : tmp;
    const int64_t ldc = blk.nb == 1 ? ohw : ncols;
    for (int64_t gr = 0; gr < g.G; ++gr)  // out_g[Og, ncols] = w_g[Og, Kg] @ cols_g[Kg, ncols]
      gemm(Og, ncols, Kg, C(1), w + gr * Og * Kg, Kg, 1, B + gr * Kg * ldb, ldb, 1, C(0), dst + gr * Og * ldc, ldc, 1);
    if (blk.nb > 1) {
      scatter_images(tmp, blk.nb, g.O, ohw, bias, out + blk.n0 * g.O * ohw);
    } else if (bias) {
      parallel_for(g.O, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, ncols)), [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o) {
          C* d = dst + o * ldc;
          const C bv = bias[o];
          for (int64_t p = 0; p < ncols; ++p) d[p] += bv;
        }
      });
    }
  });
}

template <class C>
void backward_input(const Geom& g, const C* gy, const C* w, C* gx) {
  const Plan plan = make_plan(g);
  const int64_t Og = g.Og(), Kg = g.Kg();
  Tensor cols_t, buf_t;
  C* gcols = plan.direct ? nullptr : scratch<C>(0, g.K() * plan.nb * plan.rows * g.OW, cols_t);
  C* gyb = plan.nb > 1 ? scratch<C>(1, g.O * plan.nb * g.OHW(), buf_t) : nullptr;
  for_each_block(g, plan, [&](const Block& blk) {
    int64_t lda;
    const C* A = block_rows_of(g, blk, gy, gyb, lda);
    const int64_t ncols = blk.nb * blk.rows() * g.OW;
    C* gxn = gx + blk.n0 * g.C * g.HW();
    C* dst = plan.direct ? gxn + blk.oh0 * g.OW : gcols;
    const int64_t ldd = plan.direct ? g.HW() : ncols;
    for (int64_t gr = 0; gr < g.G; ++gr)  // dst_g[Kg, ncols] = w_g^T[Kg, Og] @ gy_g[Og, ncols]
      gemm(Kg, ncols, Og, C(1), w + gr * Og * Kg, 1, Kg, A + gr * Og * lda, lda, 1, C(0), dst + gr * Kg * ldd, ldd, 1);
    if (!plan.direct) col2im(gcols, blk, g, gxn);
  });
}

template <class C>
void backward_weight(const Geom& g, const C* gy, const C* x, C* gw) {
  const Plan plan = make_plan(g);
  const int64_t Og = g.Og(), Kg = g.Kg();
  if (g.N == 0 || g.OHW() == 0) {
    std::fill(gw, gw + g.O * Kg, C(0));
    return;
  }
  Tensor cols_t, buf_t;
  C* cols = plan.direct ? nullptr : scratch<C>(0, g.K() * plan.nb * plan.rows * g.OW, cols_t);
  C* gyb = plan.nb > 1 ? scratch<C>(1, g.O * plan.nb * g.OHW(), buf_t) : nullptr;
  bool first = true;
  for_each_block(g, plan, [&](const Block& blk) {
    int64_t lda, ldb;
    const C* A = block_rows_of(g, blk, gy, gyb, lda);
    const C* B = block_cols(g, plan, blk, x, cols, ldb);
    const int64_t ncols = blk.nb * blk.rows() * g.OW;
    const C beta = first ? C(0) : C(1);
    first = false;
    for (int64_t gr = 0; gr < g.G; ++gr)  // gw_g[Og, Kg] (+)= gy_g[Og, ncols] @ cols_g^T[ncols, Kg]
      gemm(Og, Kg, ncols, C(1), A + gr * Og * lda, lda, 1, B + gr * Kg * ldb, 1, ldb, beta, gw + gr * Og * Kg, Kg, 1);
  });
}

// Runs body<C>() with C = double for f64 and float for f32/bf16/f16.
template <class F>
void dispatch_compute(DType dt, const char* what, F&& body) {
  switch (dt) {
    case DType::F64: body(double{}); break;
    case DType::F32:
    case DType::BF16:
    case DType::F16: body(float{}); break;
    default: fail(what, ": expected a floating dtype, got ", dtype_name(dt));
  }
}

inline void check_dtypes(const char* what, std::initializer_list<const Tensor*> ts) {
  const DType dt = (*ts.begin())->dtype();
  for (const Tensor* t : ts)
    MC_CHECK(!t->defined() || t->dtype() == dt, what, ": dtypes differ (", dtype_name(dt), ", ",
             dtype_name(t->dtype()), ")");
}

// A contiguous tensor with t's values and dtype (t itself when it already is contiguous).
inline Tensor contiguous_of(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  copy(c, t);
  return c;
}

// ---- pooling helpers ----

struct PoolGeom {
  int64_t planes, H, W, OH, OW;
};

inline PoolGeom pool_geom(const char* what, const Tensor& x, const Tensor& y) {
  MC_CHECK(x.dim() == 4 && y.dim() == 4 && x.size(0) == y.size(0) && x.size(1) == y.size(1), what,
           ": expects 4-d input and output with equal N and C, got ", shape_str(x.shape()), " and ",
           shape_str(y.shape()));
  return {x.size(0) * x.size(1), x.size(2), x.size(3), y.size(2), y.size(3)};
}

// Runs body(plane, acc) for planes in parallel, where acc (H*W elements of the compute type, zeroed)
// accumulates the gradient of one input plane; the result is stored into gx (contiguous, dtype T).
template <class T, class F>
void accumulate_planes(T* gx, int64_t planes, int64_t hw, int64_t work_per_plane, F body) {
  using C = acc_t<T>;
  parallel_for(planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_plane)), [&](int64_t p0, int64_t p1) {
    std::vector<C> buf;
    if constexpr (!std::is_same_v<C, T>) buf.resize(size_t(hw));
    for (int64_t pl = p0; pl < p1; ++pl) {
      T* dst = gx + pl * hw;
      C* acc;
      if constexpr (std::is_same_v<C, T>) {
        acc = dst;
      } else {
        acc = buf.data();
      }
      std::fill(acc, acc + hw, C(0));
      body(pl, acc);
      if constexpr (!std::is_same_v<C, T>)
        for (int64_t i = 0; i < hw; ++i) dst[i] = T(acc[i]);
    }
  });
}

}  // namespace conv_detail

// ---------------------------------------------------------------------------------------------
// Convolution.

// out [N, O, OH, OW] = conv(x [N, C, H, W], w [O, C/groups, kh, kw]) + bias [O] (bias may be undefined).
inline void conv2d(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  using namespace conv_detail;
  const Geom g = make_geom("conv2d", x, w, out, p);
  check_dtypes("conv2d", {&out, &x, &w, &bias});
  MC_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == g.O), "conv2d: bias ", shape_str(bias.shape()),
           " does not match ", g.O, " output channels");
  if (out.numel() == 0) return;
  dispatch_compute(out.dtype(), "conv2d", [&](auto tag) {
    using C = decltype(tag);
    Tensor xc = as_compute<C>(x), wc = as_compute<C>(w), oc = compute_target<C>(out);
    Tensor bc = bias.defined() ? as_compute<C>(bias) : Tensor();
    forward<C>(g, ptr<const C>(xc), ptr<const C>(wc), bc.defined() ? ptr<const C>(bc) : nullptr, ptr<C>(oc));
    store_back(out, oc);
  });
}

// gx [N, C, H, W] = gradient of conv2d with respect to its input, given gy [N, O, OH, OW].
inline void conv2d_backward_input(const Tensor& gx, const Tensor& gy, const Tensor& w, const Conv2dParams& p) {
  using namespace conv_detail;
  const Geom g = make_geom("conv2d_backward_input", gx, w, gy, p);
  check_dtypes("conv2d_backward_input", {&gx, &gy, &w});
  if (gx.numel() == 0) return;
  dispatch_compute(gx.dtype(), "conv2d_backward_input", [&](auto tag) {
    using C = decltype(tag);
    Tensor gc = compute_target<C>(gx);
    if (gy.numel() == 0 || g.O == 0) {
      fill(gc, 0);
    } else {
      Tensor gyc = as_compute<C>(gy), wc = as_compute<C>(w);
      backward_input<C>(g, ptr<const C>(gyc), ptr<const C>(wc), ptr<C>(gc));
    }
    store_back(gx, gc);
  });
}

// gw [O, C/groups, kh, kw] = gradient of conv2d with respect to its weight, summed over the batch.
inline void conv2d_backward_weight(const Tensor& gw, const Tensor& gy, const Tensor& x, const Conv2dParams& p) {
  using namespace conv_detail;
  const Geom g = make_geom("conv2d_backward_weight", x, gw, gy, p);
  check_dtypes("conv2d_backward_weight", {&gw, &gy, &x});
  if (gw.numel() == 0) return;
  dispatch_compute(gw.dtype(), "conv2d_backward_weight", [&](auto tag) {
    using C = decltype(tag);
    Tensor gc = compute_target<C>(gw);
    Tensor gyc = as_compute<C>(gy), xc = as_compute<C>(x);
    backward_weight<C>(g, ptr<const C>(gyc), ptr<const C>(xc), ptr<C>(gc));
    store_back(gw, gc);
  });
}

// ---------------------------------------------------------------------------------------------
// Pooling.

// out / indices [N, C, OH, OW]; indices (i64) hold h*W + w of each maximum within its plane.
inline void max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x, const Pool2dParams& p) {
  using namespace conv_detail;
  const PoolGeom pg = pool_geom("max_pool2d", x, out);
  MC_CHECK(indices.shape() == out.shape() && indices.dtype() == DType::I64, "max_pool2d: indices must be i64 ",
           shape_str(out.shape()), ", got ", dtype_name(indices.dtype()), " ", shape_str(indices.shape()));
  check_dtypes("max_pool2d", {&out, &x});
  if (out.numel() == 0) return;
  MC_CHECK(pg.H * pg.W > 0, "max_pool2d: empty input plane ", shape_str(x.shape()));
  const int64_t kh = p.kernel[0], kw = p.kernel[1], sh = p.stride[0], sw = p.stride[1];
  const int64_t ph = p.padding[0], pw = p.padding[1], dh = p.dilation[0], dw = p.dilation[1];
  MC_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0 && dh > 0 && dw > 0, "max_pool2d: invalid kernel/stride/dilation");
  MC_DISPATCH_FLOAT(x.dtype(), "max_pool2d", T, {
    using C = acc_t<T>;
    Tensor xc = contiguous_of(x);
    Tensor oc = out.is_contiguous() ? out : Tensor::empty(out.shape(), out.dtype());
    Tensor ic = indices.is_contiguous() ? indices : Tensor::empty(indices.shape(), DType::I64);
    const T* xp = ptr<const T>(xc);
    T* op = ptr<T>(oc);
    int64_t* ip = ptr<int64_t>(ic);
    const int64_t H = pg.H, W = pg.W, OH = pg.OH, OW = pg.OW;
    parallel_for(pg.planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, OH * OW * kh * kw)),
                 [&](int64_t p0, int64_t p1) {
      for (int64_t pl = p0; pl < p1; ++pl) {
        const T* xs = xp + pl * H * W;
        T* ys = op + pl * OH * OW;
        int64_t* is = ip + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = oh * sh - ph;
          const int64_t ih0 = h0 >= 0 ? h0 : h0 + ceil_div(-h0, dh) * dh;  // first row inside the input
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = ow * sw - pw;
            const int64_t iw0 = w0 >= 0 ? w0 : w0 + ceil_div(-w0, dw) * dw;
            // As torch: start from the first position inside the input at -inf, keep the first
            // strict maximum; a NaN beats everything and the last NaN wins. Written branch-free.
            C best = -std::numeric_limits<C>::infinity();
            int64_t bi = std::min(ih0, H - 1) * W + std::min(iw0, W - 1), nan_at = -1;
            const int64_t ih1 = std::min(h0 + (kh - 1) * dh + 1, H), iw1 = std::min(w0 + (kw - 1) * dw + 1, W);
            for (int64_t ih = ih0; ih < ih1; ih += dh) {
              const T* row = xs + ih * W;
              for (int64_t iw = iw0; iw < iw1; iw += dw) {
                const C v = C(row[iw]);
                const bool gt = v > best;
                best = gt ? v : best;
                bi = gt ? ih * W + iw : bi;
                nan_at = v != v ? ih * W + iw : nan_at;
              }
            }
            if (nan_at >= 0) {
              best = C(xs[nan_at]);
              bi = nan_at;
            }
            ys[oh * OW + ow] = T(best);
            is[oh * OW + ow] = bi;
          }
        }
      }
    });
    store_back(out, oc);
    store_back(indices, ic);
  });
}

// gx [N, C, H, W] = sum of gy at the positions recorded in indices.
inline void max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& indices) {
  using namespace conv_detail;
  const PoolGeom pg = pool_geom("max_pool2d_backward", gx, gy);
  MC_CHECK(indices.shape() == gy.shape() && indices.dtype() == DType::I64,
           "max_pool2d_backward: indices must be i64 with the shape of the output gradient ", shape_str(gy.shape()));
  check_dtypes("max_pool2d_backward", {&gx, &gy});
  if (gx.numel() == 0) return;
  MC_DISPATCH_FLOAT(gx.dtype(), "max_pool2d_backward", T, {
    using C = acc_t<T>;
    Tensor gyc = contiguous_of(gy), ic = contiguous_of(indices);
    Tensor gc = gx.is_contiguous() ? gx : Tensor::empty(gx.shape(), gx.dtype());
    const T* gp = ptr<const T>(gyc);
    const int64_t* ip = ptr<const int64_t>(ic);
    const int64_t hw = pg.H * pg.W, ohw = pg.OH * pg.OW;
    accumulate_planes<T>(ptr<T>(gc), pg.planes, hw, ohw, [&](int64_t pl, C* acc) {
      const T* g = gp + pl * ohw;
      const int64_t* id = ip + pl * ohw;
      for (int64_t i = 0; i < ohw; ++i) {
        const int64_t k = id[i];
        MC_CHECK(k >= 0 && k < hw, "max_pool2d_backward: index ", k, " out of range for a ", pg.H, "x", pg.W,
                 " plane");
        acc[k] += C(g[i]);
      }
    });
    store_back(gx, gc);
  });
}

// Window of output (oh, ow): rows [h0, h1) and columns [w0, w1) clipped to the input, and its divisor.
struct AvgWindow {
  int64_t h0, h1, w0, w1, div;
};

inline AvgWindow avg_window(int64_t oh, int64_t ow, int64_t H, int64_t W, const Pool2dParams& p) {
  int64_t h0 = oh * p.stride[0] - p.padding[0], w0 = ow * p.stride[1] - p.padding[1];
  int64_t h1 = std::min(h0 + p.kernel[0], H + p.padding[0]), w1 = std::min(w0 + p.kernel[1], W + p.padding[1]);
  const int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, H);
  w1 = std::min(w1, W);
  const int64_t inside = std::max<int64_t>(0, h1 - h0) * std::max<int64_t>(0, w1 - w0);
  return {h0, h1, w0, w1, p.count_include_pad ? padded : inside};
}

inline void check_avg_params(const char* what, const Pool2dParams& p) {
  MC_CHECK(p.kernel[0] > 0 && p.kernel[1] > 0 && p.stride[0] > 0 && p.stride[1] > 0 && p.padding[0] >= 0 &&
               p.padding[1] >= 0,
           what, ": invalid kernel/stride/padding");
}

inline void avg_pool2d(const Tensor& out, const Tensor& x, const Pool2dParams& p) {
  using namespace conv_detail;
  const PoolGeom pg = pool_geom("avg_pool2d", x, out);
  check_dtypes("avg_pool2d", {&out, &x});
  check_avg_params("avg_pool2d", p);
  if (out.numel() == 0) return;
  MC_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", T, {
    using C = acc_t<T>;
    Tensor xc = contiguous_of(x);
    Tensor oc = out.is_contiguous() ? out : Tensor::empty(out.shape(), out.dtype());
    const T* xp = ptr<const T>(xc);
    T* op = ptr<T>(oc);
    const int64_t H = pg.H, W = pg.W, OH = pg.OH, OW = pg.OW;
    parallel_for(pg.planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, OH * OW * p.kernel[0] * p.kernel[1])),
                 [&](int64_t p0, int64_t p1) {
      for (int64_t pl = p0; pl < p1; ++pl) {
        const T* xs = xp + pl * H * W;
        T* ys = op + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const AvgWindow a = avg_window(oh, ow, H, W, p);
            C s = 0;
            for (int64_t ih = a.h0; ih < a.h1; ++ih)
              for (int64_t iw = a.w0; iw < a.w1; ++iw) s += C(xs[ih * W + iw]);
            ys[oh * OW + ow] = T(a.div > 0 ? s / C(a.div) : C(0));
          }
      }
    });
    store_back(out, oc);
  });
}

inline void avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dParams& p) {
  using namespace conv_detail;
  const PoolGeom pg = pool_geom("avg_pool2d_backward", gx, gy);
  check_dtypes("avg_pool2d_backward", {&gx, &gy});
  check_avg_params("avg_pool2d_backward", p);
  if (gx.numel() == 0) return;
  MC_DISPATCH_FLOAT(gx.dtype(), "avg_pool2d_backward", T, {
    using C = acc_t<T>;
    Tensor gyc = contiguous_of(gy);
    Tensor gc = gx.is_contiguous() ? gx : Tensor::empty(gx.shape(), gx.dtype());
    const T* gp = ptr<const T>(gyc);
    const int64_t H = pg.H, W = pg.W, OH = pg.OH, OW = pg.OW;
    accumulate_planes<T>(ptr<T>(gc), pg.planes, H * W, OH * OW * p.kernel[0] * p.kernel[1], [&](int64_t pl, C* acc) {
      const T* g = gp + pl * OH * OW;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const AvgWindow a = avg_window(oh, ow, H, W, p);
          if (a.div <= 0) continue;
          const C v = C(g[oh * OW + ow]) / C(a.div);
          for (int64_t ih = a.h0; ih < a.h1; ++ih)
            for (int64_t iw = a.w0; iw < a.w1; ++iw) acc[ih * W + iw] += v;
        }
    });
    store_back(gx, gc);
  });
}

// Bin i of n over a length-L axis: [floor(i*L/n), ceil((i+1)*L/n)).
inline void adaptive_bin(int64_t i, int64_t L, int64_t n, int64_t& lo, int64_t& hi) {
  lo = (i * L) / n;
  hi = ((i + 1) * L + n - 1) / n;
}

inline void adaptive_avg_pool2d(const Tensor& out, const Tensor& x) {
  using namespace conv_detail;
  const PoolGeom pg = pool_geom("adaptive_avg_pool2d", x, out);
  check_dtypes("adaptive_avg_pool2d", {&out, &x});
  if (out.numel() == 0) return;
  MC_CHECK(pg.H > 0 && pg.W > 0, "adaptive_avg_pool2d: empty input plane ", shape_str(x.shape()));
  MC_DISPATCH_FLOAT(x.dtype(), "adaptive_avg_pool2d", T, {
    using C = acc_t<T>;
    Tensor xc = contiguous_of(x);
    Tensor oc = out.is_contiguous() ? out : Tensor::empty(out.shape(), out.dtype());
    const T* xp = ptr<const T>(xc);
    T* op = ptr<T>(oc);
    const int64_t H = pg.H, W = pg.W, OH = pg.OH, OW = pg.OW;
    parallel_for(pg.planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, H * W + OH * OW)), [&](int64_t p0, int64_t p1) {
      for (int64_t pl = p0; pl < p1; ++pl) {
        const T* xs = xp + pl * H * W;
        T* ys = op + pl * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
          int64_t h0, h1;
          adaptive_bin(oh, H, OH, h0, h1);
          for (int64_t ow = 0; ow < OW; ++ow) {
            int64_t w0, w1;
            adaptive_bin(ow, W, OW, w0, w1);
            C s = 0;
            for (int64_t ih = h0; ih < h1; ++ih)
              for (int64_t iw = w0; iw < w1; ++iw) s += C(xs[ih * W + iw]);
            ys[oh * OW + ow] = T(s / C((h1 - h0) * (w1 - w0)));
          }
        }
      }
    });
    store_back(out, oc);
  });
}

inline void adaptive_avg_pool2d_backward(const Tensor& gx, const Tensor& gy) {
  using namespace conv_detail;
  const PoolGeom pg = pool_geom("adaptive_avg_pool2d_backward", gx, gy);
  check_dtypes("adaptive_avg_pool2d_backward", {&gx, &gy});
  if (gx.numel() == 0) return;
  MC_DISPATCH_FLOAT(gx.dtype(), "adaptive_avg_pool2d_backward", T, {
    using C = acc_t<T>;
    Tensor gyc = contiguous_of(gy);
    Tensor gc = gx.is_contiguous() ? gx : Tensor::empty(gx.shape(), gx.dtype());
    const T* gp = ptr<const T>(gyc);
    const int64_t H = pg.H, W = pg.W, OH = pg.OH, OW = pg.OW;
    accumulate_planes<T>(ptr<T>(gc), pg.planes, H * W, H * W + OH * OW, [&](int64_t pl, C* acc) {
      const T* g = gp + pl * OH * OW;
      for (int64_t oh = 0; oh < OH; ++oh) {
        int64_t h0, h1;
        adaptive_bin(oh, H, OH, h0, h1);
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t w0, w1;
          adaptive_bin(ow, W, OW, w0, w1);
          const C v = C(g[oh * OW + ow]) / C((h1 - h0) * (w1 - w0));
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) acc[ih * W + iw] += v;
        }
      }
    });
    store_back(gx, gc);
  });
}

}  // namespace mc::cpu
