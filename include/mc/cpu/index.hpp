// mc/cpu/index.hpp — index_select / index_add (embedding lookup and its gradient), gather / scatter_add.
#pragma once
#include "mc/cpu/elementwise.hpp"

namespace mc::cpu {

// t with `dim` fixed at index i (the dim removed): a view, no copy.
inline Tensor slice_at(const Tensor& t, int dim, int64_t i) {
  Shape sh = t.shape(), st = t.strides();
  int64_t off = t.offset() + i * st[size_t(dim)];
  sh.erase(sh.begin() + dim);
  st.erase(st.begin() + dim);
  return Tensor::view_of(t.storage(), t.dtype(), sh, st, off);
}

inline int64_t checked_index(int64_t v, int64_t n, const char* op) {
  MC_CHECK(v >= -n && v < n, op, ": index ", v, " is out of range for a dimension of size ", n);
  return v < 0 ? v + n : v;
}

inline void index_select(const Tensor& out, const Tensor& x, int dim, const Tensor& idx) {
  const int64_t* ix = ptr<const int64_t>(idx);
  const int64_t n = idx.numel(), is = idx.dim() ? idx.stride(0) : 1, size = x.size(dim);
  for (int64_t i = 0; i < n; ++i) checked_index(ix[i * is], size, "index_select");
  parallel_for(n, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, x.numel() / std::max<int64_t>(1, size))),
               [&](int64_t b, int64_t e) {
                 for (int64_t i = b; i < e; ++i)
                   copy(slice_at(out, dim, i), slice_at(x, dim, checked_index(ix[i * is], size, "index_select")));
               });
}

// out[.., idx[i], ..] += src[.., i, ..]; sequential over i so repeated indices accumulate.
inline void index_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src) {
  const int64_t* ix = ptr<const int64_t>(idx);
  const int64_t n = idx.numel(), is = idx.dim() ? idx.stride(0) : 1, size = out.size(dim);
  for (int64_t i = 0; i < n; ++i) {
    Tensor o = slice_at(out, dim, checked_index(ix[i * is], size, "index_add"));
    binary(BinaryOp::Add, o, o, slice_at(src, dim, i));
  }
}

// x viewed with idx's shape and stride 0 along `dim`, so a loop over idx's shape walks x.
inline Tensor along_dim_view(const Tensor& x, int dim, const Shape& shape) {
  Shape st = x.strides();
  st[size_t(dim)] = 0;
  return Tensor::view_of(x.storage(), x.dtype(), shape, st, x.offset());
}

inline void gather(const Tensor& out, const Tensor& x, int dim, const Tensor& idx) {
  const int64_t size = x.size(dim), ds = x.stride(dim);
  Tensor xv = along_dim_view(x, dim, idx.shape());
  const int64_t* ib = ptr<const int64_t>(idx);
  MC_DISPATCH(x.dtype(), T, {
    T* o = ptr<T>(out);
    const T* xb = ptr<const T>(xv);
    for_each_row<3>(idx.shape(), {&out.strides(), &idx.strides(), &xv.strides()},
                    [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
                      for (int64_t i = 0; i < n; ++i)
                        o[off[0] + i * st[0]] =
                            xb[off[2] + i * st[2] + checked_index(ib[off[1] + i * st[1]], size, "gather") * ds];
                    });
  });
}

inline void scatter_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src) {
  const int64_t size = out.size(dim), ds = out.stride(dim);
  Tensor ov = along_dim_view(out, dim, idx.shape());
  const int64_t* ib = ptr<const int64_t>(idx);
  MC_DISPATCH_FLOAT(out.dtype(), "scatter_add", T, {
    T* o = ptr<T>(ov);
    const T* sb = ptr<const T>(src);
    for_each_row<3>(
        idx.shape(), {&ov.strides(), &idx.strides(), &src.strides()},
        [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
          for (int64_t i = 0; i < n; ++i) {
            T& dst = o[off[0] + i * st[0] + checked_index(ib[off[1] + i * st[1]], size, "scatter_add") * ds];
            dst = T(acc_t<T>(dst) + acc_t<T>(sb[off[2] + i * st[2]]));
          }
        },
        std::numeric_limits<int64_t>::max());  // one thread: indices may repeat
  });
}

}  // namespace mc::cpu
