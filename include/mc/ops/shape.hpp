// mc/ops/shape.hpp — joining and splitting (cat, stack, split, chunk) and indexing (index_select, gather,
// scatter_add, embedding), with autograd.
#pragma once
#include "mc/ops/reduce.hpp"

namespace mc {

inline Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0) {
  MC_CHECK(!xs.empty(), "cat: no tensors given");
  const Tensor& x0 = xs[0];
  const int d = wrap_dim(dim, size_t(std::max(1, x0.dim())), "cat");
  DType dt = x0.dtype();
  for (const Tensor& x : xs) dt = detail::promote(dt, x.dtype());
  Shape shape = x0.shape();
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    detail::check_same_device(x0, x, "cat");
    MC_CHECK(x.dim() == x0.dim(), "cat: tensor ", i, " has ", x.dim(), " dims, tensor 0 has ", x0.dim());
    for (int k = 0; k < x.dim(); ++k)
      MC_CHECK(k == d || x.size(k) == x0.size(k), "cat: tensor ", i, " has shape ", shape_str(x.shape()),
               ", incompatible with ", shape_str(x0.shape()), " along dims other than ", d);
    total += x.size(d);
  }
  shape[size_t(d)] = total;
  Tensor out = Tensor::empty(shape, dt, x0.device());
  std::vector<int64_t> sizes;
  int64_t at = 0;
  for (const Tensor& x : xs) {
    backend(out.device()).copy(detail::narrow(out, d, at, x.size(d)), detail::cast(x, dt));
    at += x.size(d);
    sizes.push_back(x.size(d));
  }
  std::vector<DType> dts;
  for (const Tensor& x : xs) dts.push_back(x.dtype());
  return record(out, "cat", xs, [sizes, dts, d](const Tensor& g, const Needs& n) {
    std::vector<Tensor> r(sizes.size());
    int64_t at2 = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (n[i]) r[i] = detail::cast(detail::contiguous_copy(detail::narrow(g, d, at2, sizes[i])), dts[i]);
      at2 += sizes[i];
    }
    return r;
  });
}

inline Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0) {
  MC_CHECK(!xs.empty(), "stack: no tensors given");
  const int d = wrap_dim(dim, size_t(xs[0].dim()) + 1, "stack");
  std::vector<Tensor> u;
  for (const Tensor& x : xs) {
    MC_CHECK(x.shape() == xs[0].shape(), "stack: shapes differ (", shape_str(x.shape()), " vs ",
             shape_str(xs[0].shape()), ")");
    u.push_back(x.unsqueeze(d));
  }
  return cat(u, d);
}

// Pieces of `size` along dim (the last may be smaller); views of x.
inline std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t dim = 0) {
  const int d = wrap_dim(dim, size_t(x.dim()), "split");
  MC_CHECK(size > 0, "split: size must be positive, got ", size);
  std::vector<Tensor> r;
  for (int64_t at = 0; at < x.size(d); at += size) r.push_back(x.narrow(d, at, std::min(size, x.size(d) - at)));
  return r;
}
inline std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  const int d = wrap_dim(dim, size_t(x.dim()), "split");
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  MC_CHECK(total == x.size(d), "split: sizes sum to ", total, " but dim ", d, " has size ", x.size(d));
  std::vector<Tensor> r;
  int64_t at = 0;
  for (int64_t s : sizes) {
    r.push_back(x.narrow(d, at, s));
    at += s;
  }
  return r;
}
// `chunks` pieces of equal size ceil(n / chunks) (torch.chunk).
inline std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0) {
  MC_CHECK(chunks > 0, "chunk: chunks must be positive");
  const int d = wrap_dim(dim, size_t(x.dim()), "chunk");
  return split(x, std::max<int64_t>(1, (x.size(d) + chunks - 1) / chunks), d);
}

inline Tensor check_index_tensor(const Tensor& idx, const char* what) {
  MC_CHECK(idx.dtype() == DType::I64 || idx.dtype() == DType::I32, what, ": indices must be i64 or i32, got ",
           dtype_name(idx.dtype()));
  return detail::cast(idx, DType::I64);
}

// Rows of x along dim at idx (1-d).
inline Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  const int d = wrap_dim(dim, size_t(x.dim()), "index_select");
  MC_CHECK(index.dim() <= 1, "index_select: index must be 0-d or 1-d, got ", shape_str(index.shape()));
  Tensor idx = check_index_tensor(index, "index_select").reshape({-1});
  detail::check_same_device(x, idx, "index_select");
  Shape s = x.shape();
  s[size_t(d)] = idx.numel();
  Tensor out = Tensor::empty(s, x.dtype(), x.device());
  backend(x.device()).index_select(out, x, d, idx);
  return record(out, "index_select", {x}, [idx, in = x.shape(), dt = x.dtype(), d](const Tensor& g, const Needs&) {
    Tensor gx = zeros(in, dt, g.device());
    backend(g.device()).index_add(gx, d, idx, g.contiguous());
    return std::vector<Tensor>{gx};
  });
}

// Embedding lookup: weight [V, D], ids of any shape -> [..., D]. Rows at padding_idx get no gradient.
inline Tensor embedding(const Tensor& ids, const Tensor& weight, int64_t padding_idx = -1) {
  MC_CHECK(weight.dim() == 2, "embedding: weight must be 2-d, got ", shape_str(weight.shape()));
  Tensor flat = check_index_tensor(ids, "embedding").reshape({-1});
  detail::check_same_device(weight, flat, "embedding");
  Shape s = ids.shape();
  s.push_back(weight.size(1));
  Tensor out = Tensor::empty({flat.numel(), weight.size(1)}, weight.dtype(), weight.device());
  backend(weight.device()).index_select(out, weight, 0, flat);
  out = detail::reshape(out, s);
  return record(out, "embedding", {weight}, [flat, ws = weight.shape(), dt = weight.dtype(), padding_idx](const Tensor& g, const Needs&) {
    Tensor gw = zeros(ws, dt, g.device());
    backend(g.device()).index_add(gw, 0, flat, detail::reshape(g, {flat.numel(), ws[1]}).contiguous());
    if (padding_idx >= 0) backend(g.device()).fill(detail::narrow(gw, 0, padding_idx, 1), 0);
    return std::vector<Tensor>{gw};
  });
}

// out[i][j] = x[i][idx[i][j]] (dim = 1), torch.gather.
inline Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  const int d = wrap_dim(dim, size_t(x.dim()), "gather");
  Tensor idx = check_index_tensor(index, "gather");
  detail::check_same_device(x, idx, "gather");
  MC_CHECK(idx.dim() == x.dim(), "gather: index has ", idx.dim(), " dims, input has ", x.dim());
  for (int k = 0; k < x.dim(); ++k)
    MC_CHECK(k == d || idx.size(k) <= x.size(k), "gather: index shape ", shape_str(idx.shape()),
             " exceeds input shape ", shape_str(x.shape()), " at dim ", k);
  Tensor out = Tensor::empty(idx.shape(), x.dtype(), x.device());
  backend(x.device()).gather(out, x, d, idx);
  return record(out, "gather", {x}, [idx, in = x.shape(), dt = x.dtype(), d](const Tensor& g, const Needs&) {
    Tensor gx = zeros(in, dt, g.device());
    backend(g.device()).scatter_add(gx, d, idx, g);
    return std::vector<Tensor>{gx};
  });
}

// A copy of x with src added at idx along dim (torch.scatter_add, out of place).
inline Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  const int d = wrap_dim(dim, size_t(x.dim()), "scatter_add");
  Tensor idx = check_index_tensor(index, "scatter_add");
  detail::check_same_device(x, idx, "scatter_add");
  detail::check_same_device(x, src, "scatter_add");
  MC_CHECK(idx.dim() == x.dim() && src.dim() == x.dim(), "scatter_add: index, src and input need equal ranks");
  for (int k = 0; k < x.dim(); ++k)
    MC_CHECK(idx.size(k) <= src.size(k) && (k == d || idx.size(k) <= x.size(k)), "scatter_add: index shape ",
             shape_str(idx.shape()), " does not fit src ", shape_str(src.shape()), " / input ", shape_str(x.shape()));
  MC_CHECK(src.dtype() == x.dtype(), "scatter_add: src dtype ", dtype_name(src.dtype()), " differs from input ",
           dtype_name(x.dtype()));
  Tensor out = detail::contiguous_copy(x);
  backend(x.device()).scatter_add(out, d, idx, src);
  return record(out, "scatter_add", {x, src}, [idx, d, ss = src.shape()](const Tensor& g, const Needs& n) {
    Tensor gs;
    if (n[1]) {
      Tensor part = Tensor::empty(idx.shape(), g.dtype(), g.device());
      backend(g.device()).gather(part, g, d, idx);
      gs = zeros(ss, g.dtype(), g.device());
      Shape is = idx.shape();
      Tensor view = gs;
      for (int k = 0; k < int(is.size()); ++k) view = detail::narrow(view, k, 0, is[size_t(k)]);
      backend(g.device()).copy(view, part);
    }
    return std::vector<Tensor>{n[0] ? g : Tensor(), gs};
  });
}

}  // namespace mc
