// mc/ops/linalg.hpp — matmul (torch.matmul semantics: 1-d operands, broadcast batch dims), bmm, linear.
#pragma once
#include "mc/ops/reduce.hpp"

namespace mc {
namespace detail {

// A 3-d [B, R, C] view of t (shape [..., R, C]) whose batch dims collapse into one stride, or a copy.
inline Tensor as_batched3(const Tensor& t) {
  const int nd = t.dim();
  const int64_t R = t.size(-2), C = t.size(-1);
  int64_t B = 1;
  for (int d = 0; d < nd - 2; ++d) B *= t.size(d);
  // The batch dims collapse into one stride when, walking outwards, each stride is the next one times its
  // size (size-1 dims ignored), or when every batch stride is 0 (a broadcast operand).
  bool ok = true, all_zero = true, first = true;
  int64_t bstride = 0, expect = 0;
  for (int d = nd - 3; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    all_zero = all_zero && t.stride(d) == 0;
    if (first) {
      bstride = t.stride(d);
      first = false;
    } else if (t.stride(d) != expect) {
      ok = false;
    }
    expect = t.stride(d) * t.size(d);
  }
  if (all_zero) { ok = true; bstride = 0; }
  if (ok) return as_strided(t, {B, R, C}, {bstride, t.stride(-2), t.stride(-1)}, t.offset());
  Tensor c = contiguous_copy(t);
  return as_strided(c, {B, R, C}, {R * C, C, 1}, 0);
}

// Raw batched product of [..., M, K] and [..., K, N] with equal (already broadcast) batch shapes.
inline Tensor matmul_raw(const Tensor& a, const Tensor& b) {
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(b.size(-1));
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  if (out.numel() == 0) return out;
  if (a.size(-1) == 0) {
    backend(a.device()).fill(out, 0);
    return out;
  }
  Tensor o3 = as_strided(out, {numel(out_shape) / (out_shape[out_shape.size() - 2] * out_shape.back()),
                               out_shape[out_shape.size() - 2], out_shape.back()},
                         {out_shape[out_shape.size() - 2] * out_shape.back(), out_shape.back(), 1}, 0);
  backend(a.device()).matmul(o3, as_batched3(a), as_batched3(b));
  return out;
}

}  // namespace detail

inline Tensor matmul(const Tensor& a, const Tensor& b) {
  MC_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both operands need at least 1 dim");
  detail::check_same_device(a, b, "matmul");
  MC_CHECK(is_floating(a.dtype()) && a.dtype() == b.dtype(), "matmul: operands must share a floating dtype (",
           dtype_name(a.dtype()), ", ", dtype_name(b.dtype()), ")");
  if (a.dim() == 1 && b.dim() == 1) return matmul(a.unsqueeze(0), b.unsqueeze(1)).reshape({});
  if (a.dim() == 1) return matmul(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul(a, b.unsqueeze(1)).squeeze(-1);
  MC_CHECK(a.size(-1) == b.size(-2), "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
           " cannot be multiplied (", a.size(-1), " != ", b.size(-2), ")");
  Shape ab(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(ab, bb, "matmul");
  Shape as = batch, bs = batch;
  as.insert(as.end(), {a.size(-2), a.size(-1)});
  bs.insert(bs.end(), {b.size(-2), b.size(-1)});
  Tensor out = detail::matmul_raw(detail::expand(a, as), detail::expand(b, bs));
  return record(out, "matmul", {a, b}, [a_ = a.detach(), b_ = b.detach(), as, bs](const Tensor& g, const Needs& n) {
    Tensor ga, gb;
    if (n[0]) ga = sum_to(detail::matmul_raw(g, detail::expand(b_, bs).transpose(-1, -2)), a_.shape());
    if (n[1]) gb = sum_to(detail::matmul_raw(detail::expand(a_, as).transpose(-1, -2), g), b_.shape());
    return std::vector<Tensor>{ga, gb};
  });
}

inline Tensor bmm(const Tensor& a, const Tensor& b) {
  MC_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0), "bmm: expects [B,M,K] and [B,K,N], got ",
           shape_str(a.shape()), " and ", shape_str(b.shape()));
  return matmul(a, b);
}

// y = x @ w^T + b with x [..., in], w [out, in], b [out] (optional).
inline Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor()) {
  MC_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input ", shape_str(x.shape()),
           " does not match weight ", shape_str(w.shape()));
  MC_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0)), "linear: bias ", shape_str(b.shape()),
           " does not match weight ", shape_str(w.shape()));
  detail::check_same_device(x, w, "linear");
  MC_CHECK(x.dtype() == w.dtype() && (!b.defined() || b.dtype() == w.dtype()), "linear: dtypes differ (input ",
           dtype_name(x.dtype()), ", weight ", dtype_name(w.dtype()), ")");
  const int64_t in = w.size(1), out_f = w.size(0);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor x2 = detail::reshape(x, {x.numel() / std::max<int64_t>(1, in), in});
  Tensor y = detail::matmul_raw(x2, detail::permute(w, {1, 0}));
  if (b.defined()) backend(y.device()).binary(BinaryOp::Add, y, y, detail::expand(b, y.shape()));
  y = detail::reshape(y, out_shape);
  std::vector<Tensor> inputs{x, w};
  if (b.defined()) inputs.push_back(b);
  return record(y, "linear", std::move(inputs), [x2 = x2.detach(), w_ = w.detach(), xs = x.shape(), out_f](const Tensor& g, const Needs& n) {
    Tensor g2 = detail::reshape(g, {g.numel() / std::max<int64_t>(1, out_f), out_f});
    std::vector<Tensor> r(n.size());
    if (n[0]) r[0] = detail::reshape(detail::matmul_raw(g2, w_), xs);
    if (n[1]) r[1] = detail::matmul_raw(detail::permute(g2, {1, 0}), x2);
    if (n.size() > 2 && n[2]) r[2] = detail::reduce(ReduceOp::Sum, g2, {0}, g2.dtype()).reshape({out_f});
    return r;
  });
}

}  // namespace mc
