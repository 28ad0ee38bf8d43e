// mc/cpu/reduce.hpp — sum / mean / max / min / prod over any set of dims, and argmax / argmin.
//
// `out` has x's rank with size 1 on the reduced dims. Two loop orders, chosen by where x is contiguous:
// rows (the reduced dims hold x's smallest stride: each output element reduces a run of memory) and
// columns (a kept dim is innermost: whole rows of x are accumulated into a vector of outputs).
// Floating inputs accumulate in double, integers in int64.
#pragma once
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "mc/cpu/elementwise.hpp"

namespace mc::cpu {

template <class Acc>
struct Reducer {
  ReduceOp op;
  Acc init() const {
    switch (op) {
      case ReduceOp::Max: return std::numeric_limits<Acc>::has_infinity ? -std::numeric_limits<Acc>::infinity()
                                                                         : std::numeric_limits<Acc>::lowest();
      case ReduceOp::Min: return std::numeric_limits<Acc>::has_infinity ? std::numeric_limits<Acc>::infinity()
                                                                         : std::numeric_limits<Acc>::max();
      case ReduceOp::Prod: return Acc(1);
      default: return Acc(0);
    }
  }
  Acc operator()(Acc a, Acc v) const {
    switch (op) {
      case ReduceOp::Max: return (a != a || a > v) ? a : v;  // NaN propagates
      case ReduceOp::Min: return (a != a || a < v) ? a : v;
      case ReduceOp::Prod: return a * v;
      default: return a + v;
    }
  }
};

inline void store_scalar(void* p, DType dt, double v) {
  MC_DISPATCH(dt, T, *static_cast<T*>(p) = convert<T>(v));
}
inline void store_scalar(void* p, DType dt, int64_t v) {
  MC_DISPATCH(dt, T, *static_cast<T*>(p) = convert<T>(v));
}

inline void reduce(ReduceOp op, const Tensor& out, const Tensor& x) {
  const int nd = x.dim();
  std::vector<int64_t> ksize, kxs, kos, rsize, rxs;  // kept / reduced dims: sizes and strides
  for (int d = 0; d < nd; ++d) {
    if (x.size(d) == 1) continue;
    if (out.size(d) == 1) {
      rsize.push_back(x.size(d));
      rxs.push_back(x.stride(d));
    } else {
      ksize.push_back(x.size(d));
      kxs.push_back(x.stride(d));
      kos.push_back(out.stride(d));
    }
  }
  int64_t count = 1;
  for (int64_t s : rsize) count *= s;
  int64_t nout = 1;
  for (int64_t s : ksize) nout *= s;
  if (x.numel() == 0) {
    MC_CHECK(op == ReduceOp::Sum || op == ReduceOp::Prod || op == ReduceOp::Mean, "reduce: max/min of an empty tensor");
    fill(out, op == ReduceOp::Prod ? 1.0 : (op == ReduceOp::Mean ? NAN : 0.0));
    return;
  }
  // Sort reduced dims so the last one has the smallest stride (inner loop).
  for (size_t i = 0; i < rsize.size(); ++i)
    for (size_t j = i + 1; j < rsize.size(); ++j)
      if (std::abs(rxs[j]) > std::abs(rxs[i])) { std::swap(rxs[i], rxs[j]); std::swap(rsize[i], rsize[j]); }
  int64_t min_kept = std::numeric_limits<int64_t>::max(), min_red = min_kept;
  size_t cdim = 0;
  for (size_t i = 0; i < kxs.size(); ++i)
    if (std::abs(kxs[i]) < min_kept) { min_kept = std::abs(kxs[i]); cdim = i; }
  for (int64_t s : rxs) min_red = std::min(min_red, std::abs(s));
  const bool row_mode = rsize.empty() || ksize.empty() || min_red <= min_kept;
  const DType odt = out.dtype();
  char* obase = static_cast<char*>(out.raw_data());
  const size_t osz = out.element_size();

  MC_DISPATCH(x.dtype(), T, {
    using Acc = std::conditional_t<std::is_floating_point_v<acc_t<T>>, double, int64_t>;
    const Reducer<Acc> red{op};
    const T* xb = ptr<const T>(x);
    auto finish = [&](Acc a) -> Acc { return op == ReduceOp::Mean ? Acc(a / Acc(count)) : a; };
    // Visits every reduced offset, calling f(offset).
    auto for_reduced = [&](auto&& f) {
      const size_t nr = rsize.size();
      if (nr == 0) { f(int64_t(0)); return; }
      std::vector<int64_t> idx(nr, 0);
      const int64_t inner = rsize[nr - 1], is = rxs[nr - 1];
      int64_t off = 0;
      for (;;) {
        for (int64_t i = 0; i < inner; ++i) f(off + i * is);
        size_t d = nr - 1;
        for (;;) {
          if (d == 0) return;
          --d;
          if (++idx[d] < rsize[d]) { off += rxs[d]; break; }
          off -= (rsize[d] - 1) * rxs[d];
          idx[d] = 0;
        }
      }
    };
    auto kept_offsets = [&](int64_t flat, int64_t& xo, int64_t& oo, size_t skip) {
      xo = 0; oo = 0;
      for (size_t d = ksize.size(); d-- > 0;) {
        if (d == skip) continue;
        int64_t i = flat % ksize[d];
        flat /= ksize[d];
        xo += i * kxs[d];
        oo += i * kos[d];
      }
    };
    if (row_mode) {
      parallel_for(nout, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, count)), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          int64_t xo, oo;
          kept_offsets(o, xo, oo, size_t(-1));
          Acc a = red.init();
          const T* xp = xb + xo;
          for_reduced([&](int64_t r) { a = red(a, Acc(acc_t<T>(xp[r]))); });
          store_scalar(obase + oo * int64_t(osz), odt, finish(a));
        }
      });
    } else {
      const int64_t csize = ksize[cdim], cxs = kxs[cdim], cos_ = kos[cdim];
      const int64_t nouter = nout / csize;
      const int64_t cchunk = nouter >= 4 ? csize : std::max<int64_t>(64, (csize + 3) / 4);
      const int64_t nchunks = (csize + cchunk - 1) / cchunk;
      parallel_for(nouter * nchunks, 1, [&](int64_t b, int64_t e) {
        std::vector<Acc> acc;
        for (int64_t w = b; w < e; ++w) {
          int64_t outer = w / nchunks, c0 = (w % nchunks) * cchunk, c1 = std::min(csize, c0 + cchunk);
          int64_t xo, oo;
          kept_offsets(outer, xo, oo, cdim);
          acc.assign(size_t(c1 - c0), red.init());
          const T* xp = xb + xo + c0 * cxs;
          for_reduced([&](int64_t r) {
            const T* rp = xp + r;
            for (int64_t j = 0; j < c1 - c0; ++j) acc[size_t(j)] = red(acc[size_t(j)], Acc(acc_t<T>(rp[j * cxs])));
          });
          for (int64_t j = c0; j < c1; ++j) store_scalar(obase + (oo + j * cos_) * int64_t(osz), odt, finish(acc[size_t(j - c0)]));
        }
      });
    }
  });
}

// Index of the first max (min) along `dim`; NaN counts as the maximum (and the minimum), like torch.
inline void arg_reduce(bool is_max, const Tensor& out, const Tensor& x, int dim) {
  const int64_t n = x.size(dim), xs = x.stride(dim);
  MC_CHECK(n > 0, is_max ? "argmax" : "argmin", ": empty dimension");
  Shape outer_shape = x.shape();
  outer_shape[size_t(dim)] = 1;
  Shape xst = x.strides(), ost = out.strides();
  int64_t* o = ptr<int64_t>(out);
  MC_DISPATCH(x.dtype(), T, {
    const T* xb = ptr<const T>(x);
    for_each_row<2>(outer_shape, {&xst, &ost}, [&](const std::array<int64_t, 2>& off, int64_t cnt,
                                                   const std::array<int64_t, 2>& st) {
      for (int64_t i = 0; i < cnt; ++i) {
        const T* xp = xb + off[0] + i * st[0];
        int64_t best = 0;
        auto bv = acc_t<T>(xp[0]);
        for (int64_t j = 1; j < n && bv == bv; ++j) {
          auto v = acc_t<T>(xp[j * xs]);
          if (v != v || (is_max ? v > bv : v < bv)) { bv = v; best = j; }
        }
        o[off[1] + i * st[1]] = best;
      }
    });
  });
}

}  // namespace mc::cpu
