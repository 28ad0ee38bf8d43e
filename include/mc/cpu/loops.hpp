// mc/cpu/loops.hpp — iteration over N strided operands of one shape.
//
// for_each_row<N>(shape, {strides...}, fn) coalesces dimensions that are contiguous for every operand,
// then calls fn(offsets, n, inner_strides) once per row of the innermost (coalesced) dimension, where
// offsets[k] is the element offset of operand k at the row start. Rows are spread over the thread pool.
#pragma once
#include <array>
#include <cstdint>

#include "mc/core/error.hpp"
#include "mc/core/parallel.hpp"
#include "mc/core/shape.hpp"

namespace mc::cpu {

template <size_t N>
struct Layout {
  Shape shape;
  std::array<Shape, N> strides;
};

// Drops size-1 dims and merges dims i, i+1 when every operand has stride[i] == stride[i+1] * shape[i+1].
template <size_t N>
Layout<N> coalesce(const Shape& shape, const std::array<const Shape*, N>& strides) {
  Layout<N> l;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !l.shape.empty();
    for (size_t k = 0; k < N && merge; ++k)
      merge = l.strides[k].back() == (*strides[k])[d] * shape[d];
    if (merge) {
      l.shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) l.strides[k].back() = (*strides[k])[d];
    } else {
      l.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) l.strides[k].push_back((*strides[k])[d]);
    }
  }
  if (l.shape.empty()) {  // a scalar or all dims of size 1
    l.shape.push_back(1);
    for (size_t k = 0; k < N; ++k) l.strides[k].push_back(0);
  }
  return l;
}

// fn(const std::array<int64_t, N>& offsets, int64_t n, const std::array<int64_t, N>& inner_strides)
template <size_t N, class F>
void for_each_row(const Shape& shape, const std::array<const Shape*, N>& strides, F&& fn,
                  int64_t grain_elements = 32768) {
  if (numel(shape) == 0) return;
  Layout<N> l = coalesce<N>(shape, strides);
  const int nd = int(l.shape.size());
  MC_CHECK(nd <= 17, "cpu loop: more than 17 non-trivial dims are not supported");
  const int64_t inner = l.shape[nd - 1];
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = l.strides[k][nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= l.shape[d];
  if (rows == 1) {  // one long row: split it
    parallel_for(inner, grain_elements, [&](int64_t b, int64_t e) {
      std::array<int64_t, N> off;
      for (size_t k = 0; k < N; ++k) off[k] = b * inner_strides[k];
      fn(off, e - b, inner_strides);
    });
    return;
  }
  int64_t grain_rows = std::max<int64_t>(1, grain_elements / std::max<int64_t>(1, inner));
  parallel_for(rows, grain_rows, [&](int64_t rb, int64_t re) {
    // Decompose rb into a multi-index over the outer dims, then step like an odometer.
    std::array<int64_t, 16> idx{};
    std::array<int64_t, N> off{};
    int64_t r = rb;
    for (int d = nd - 2; d >= 0; --d) {
      idx[size_t(d)] = r % l.shape[size_t(d)];
      r /= l.shape[size_t(d)];
      for (size_t k = 0; k < N; ++k) off[k] += idx[size_t(d)] * l.strides[k][size_t(d)];
    }
    for (int64_t row = rb; row < re; ++row) {
      fn(off, inner, inner_strides);
      for (int d = nd - 2; d >= 0; --d) {
        size_t ud = size_t(d);
        if (++idx[ud] < l.shape[ud]) {
          for (size_t k = 0; k < N; ++k) off[k] += l.strides[k][ud];
          break;
        }
        for (size_t k = 0; k < N; ++k) off[k] -= (l.shape[ud] - 1) * l.strides[k][ud];
        idx[ud] = 0;
      }
    }
  });
}

}  // namespace mc::cpu
