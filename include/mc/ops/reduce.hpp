// mc/ops/reduce.hpp — reductions over any dims with keepdim: sum, mean, amax, amin, argmax, argmin,
// var, std, logsumexp. An empty dims list means all dims.
#pragma once
#include "mc/ops/elementwise.hpp"

namespace mc {
namespace detail {

// Sorted, unique, wrapped dims; all dims when `dims` is empty.
inline std::vector<int> reduce_dims(const Tensor& x, const Shape& dims, const char* what) {
  std::vector<int> r;
  if (dims.empty()) {
    for (int d = 0; d < x.dim(); ++d) r.push_back(d);
    return r;
  }
  for (int64_t d : dims) r.push_back(wrap_dim(d, size_t(x.dim()), what));
  std::sort(r.begin(), r.end());
  MC_CHECK(std::adjacent_find(r.begin(), r.end()) == r.end(), what, ": repeated dim");
  return r;
}

inline Shape keep_shape(const Tensor& x, const std::vector<int>& dims) {
  Shape s = x.shape();
  for (int d : dims) s[size_t(d)] = 1;
  return s;
}

inline Shape drop_shape(const Tensor& x, const std::vector<int>& dims) {
  Shape s;
  for (int d = 0; d < x.dim(); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) s.push_back(x.size(d));
  return s;
}

// Raw reduction; output dtype `odt`, keepdim shape.
inline Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int>& dims, DType odt) {
  Tensor out = Tensor::empty(keep_shape(x, dims), odt, x.device());
  backend(x.device()).reduce(op, out, x);
  return out;
}

inline int64_t count_of(const Tensor& x, const std::vector<int>& dims) {
  int64_t n = 1;
  for (int d : dims) n *= x.size(d);
  return n;
}

}  // namespace detail

inline Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  auto d = detail::reduce_dims(x, dims, "sum");
  DType odt = is_floating(x.dtype()) ? x.dtype() : DType::I64;
  Tensor out = detail::reduce(ReduceOp::Sum, x, d, odt);
  if (!keepdim) out = detail::reshape(out, detail::drop_shape(x, d));
  return record(out, "sum", {x}, [in = x.shape(), keep = detail::keep_shape(x, d)](const Tensor& g, const Needs&) {
    return std::vector<Tensor>{detail::expand(g.reshape(keep), in).contiguous()};
  });
}
inline Tensor sum(const Tensor& x) { return sum(x, {}, false); }

inline Tensor mean(const Tensor& x, const Shape& dims = {}, bool keepdim = false) {
  MC_CHECK(is_floating(x.dtype()), "mean: expects a floating tensor, got ", dtype_name(x.dtype()));
  auto d = detail::reduce_dims(x, dims, "mean");
  Tensor out = detail::reduce(ReduceOp::Mean, x, d, x.dtype());
  if (!keepdim) out = detail::reshape(out, detail::drop_shape(x, d));
  const double n = double(detail::count_of(x, d));
  return record(out, "mean", {x}, [in = x.shape(), keep = detail::keep_shape(x, d), n](const Tensor& g, const Needs&) {
    return std::vector<Tensor>{detail::expand(g.reshape(keep) / n, in).contiguous()};
  });
}

// Max / min over dims. The gradient is shared evenly among tied extrema (torch's amax rule).
inline Tensor amax_amin(const Tensor& x, const Shape& dims, bool keepdim, bool is_max) {
  const char* name = is_max ? "amax" : "amin";
  auto d = detail::reduce_dims(x, dims, name);
  Tensor kept = detail::reduce(is_max ? ReduceOp::Max : ReduceOp::Min, x, d, x.dtype());
  Tensor out = keepdim ? kept : detail::reshape(kept, detail::drop_shape(x, d));
  if (!is_floating(x.dtype())) return out;
  return record(out, name, {x}, [x_ = x.detach(), k = kept.detach(), d](const Tensor& g, const Needs&) {
    Tensor mask = detail::cast(eq(x_, k), g.dtype());
    Tensor cnt = detail::reduce(ReduceOp::Sum, mask, d, g.dtype());
    return std::vector<Tensor>{mask * (g.reshape(k.shape()) / cnt)};
  });
}
inline Tensor amax(const Tensor& x, const Shape& dims = {}, bool keepdim = false) { return amax_amin(x, dims, keepdim, true); }
inline Tensor amin(const Tensor& x, const Shape& dims = {}, bool keepdim = false) { return amax_amin(x, dims, keepdim, false); }
inline Tensor max(const Tensor& x, int64_t dim, bool keepdim = false) { return amax(x, {dim}, keepdim); }
inline Tensor min(const Tensor& x, int64_t dim, bool keepdim = false) { return amin(x, {dim}, keepdim); }

inline Tensor arg_reduce(const Tensor& x, int64_t dim, bool keepdim, bool is_max) {
  const int d = wrap_dim(dim, size_t(std::max(1, x.dim())), is_max ? "argmax" : "argmin");
  Tensor xx = x.dim() == 0 ? detail::reshape(x, {1}) : x;
  Shape ks = xx.shape();
  ks[size_t(d)] = 1;
  Tensor out = Tensor::empty(ks, DType::I64, x.device());
  backend(x.device()).arg_reduce(is_max, out, xx, d);
  if (!keepdim) out = detail::reshape(out, detail::drop_shape(xx, {d}));
  return out;
}
inline Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false) { return arg_reduce(x, dim, keepdim, true); }
inline Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false) { return arg_reduce(x, dim, keepdim, false); }

// Variance with Bessel's correction by default (correction = 1), as torch.var.
inline Tensor var(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false) {
  auto d = detail::reduce_dims(x, dims, "var");
  Shape dd(d.begin(), d.end());
  const int64_t n = detail::count_of(x, d);
  Tensor c = x - mean(x, dd, true);
  return sum(c * c, dd, keepdim) / double(std::max<int64_t>(0, n - correction));
}
inline Tensor stddev(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false) {
  return sqrt(var(x, dims, correction, keepdim));
}

// log(sum(exp(x))) over dims, computed stably; rows of -inf give -inf.
inline Tensor logsumexp(const Tensor& x, const Shape& dims, bool keepdim = false) {
  auto d = detail::reduce_dims(x, dims, "logsumexp");
  Shape dd(d.begin(), d.end());
  Tensor m = detail::reduce(ReduceOp::Max, x, d, x.dtype());
  // Replace infinite maxima by 0 so that x - m stays finite (all -inf rows give log(0) = -inf).
  Tensor finite = lt(abs(m), scalar_tensor(std::numeric_limits<double>::infinity(), m.dtype(), m.device()));
  m = where(finite, m, zeros({}, m.dtype(), m.device()));
  Tensor r = log(sum(exp(x - m), dd, true)) + m;
  return keepdim ? r : r.reshape(detail::drop_shape(x, d));
}

}  // namespace mc
