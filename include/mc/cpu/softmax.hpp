// mc/cpu/softmax.hpp — softmax / log_softmax over the last dim of a contiguous tensor, and their backward.
#pragma once
#include <cmath>

#include "mc/cpu/elementwise.hpp"

namespace mc::cpu {

inline void softmax(const Tensor& out, const Tensor& x, bool log) {
  MC_CHECK(x.is_contiguous() && out.is_contiguous(), "softmax: cpu kernel expects contiguous tensors");
  const int64_t cols = x.dim() ? x.size(-1) : 1, rows = cols ? x.numel() / cols : 0;
  MC_DISPATCH_FLOAT(x.dtype(), "softmax", T, {
    using C = acc_t<T>;
    const T* xp = ptr<const T>(x);
    T* op = ptr<T>(out);
    parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols)), [&](int64_t b, int64_t e) {
      std::vector<C> tmp(static_cast<size_t>(cols));
      for (int64_t r = b; r < e; ++r) {
        const T* xr = xp + r * cols;
        T* orow = op + r * cols;
        C m = -std::numeric_limits<C>::infinity();
        for (int64_t j = 0; j < cols; ++j) m = std::max(m, C(xr[j]));
        if (m == -std::numeric_limits<C>::infinity()) m = 0;  // an all -inf row gives NaN like torch
        double s = 0;  // long rows: a sequential f32 sum would drift by ~1e-5 relative
        for (int64_t j = 0; j < cols; ++j) {
          tmp[size_t(j)] = C(xr[j]) - m;
          s += double(std::exp(tmp[size_t(j)]));
        }
        if (log) {
          const C ls = C(std::log(s));
          for (int64_t j = 0; j < cols; ++j) orow[j] = T(tmp[size_t(j)] - ls);
        } else {
          const C inv = C(1.0 / s);
          for (int64_t j = 0; j < cols; ++j) orow[j] = T(std::exp(tmp[size_t(j)]) * inv);
        }
      }
    });
  });
}

// softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy).
inline void softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, bool log) {
  MC_CHECK(gx.is_contiguous() && gy.is_contiguous() && y.is_contiguous(),
           "softmax_backward: cpu kernel expects contiguous tensors");
  const int64_t cols = y.dim() ? y.size(-1) : 1, rows = cols ? y.numel() / cols : 0;
  MC_DISPATCH_FLOAT(y.dtype(), "softmax_backward", T, {
    using C = acc_t<T>;
    const T* g = ptr<const T>(gy);
    const T* yp = ptr<const T>(y);
    T* o = ptr<T>(gx);
    parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* gr = g + r * cols;
        const T* yr = yp + r * cols;
        T* orow = o + r * cols;
        double acc = 0;  // the row sum in f64, as the forward's
        if (log) {
          for (int64_t j = 0; j < cols; ++j) acc += double(gr[j]);
          const C s = C(acc);
          for (int64_t j = 0; j < cols; ++j) orow[j] = T(C(gr[j]) - std::exp(C(yr[j])) * s);
        } else {
          for (int64_t j = 0; j < cols; ++j) acc += double(C(gr[j]) * C(yr[j]));
          const C s = C(acc);
          for (int64_t j = 0; j < cols; ++j) orow[j] = T(C(yr[j]) * (C(gr[j]) - s));
        }
      }
    });
  });
}

}  // namespace mc::cpu
