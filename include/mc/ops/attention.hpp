// mc/ops/attention.hpp — scaled dot-product attention with autograd: scaled_dot_product_attention and
// attention_params.
//
//   out = softmax(scale * q k^T + mask) v      per (batch, head), with q [B,H,Lq,D], k and v [B,H,Lk,D]
//
// Masks (AttentionParams): `causal` lets query i see keys j <= i + (Lk - Lq) (aligned at the bottom right,
// as flash-attention; torch's is_causal aligns at the top left, the same thing when Lq == Lk);
// `key_padding_mask` is bool [B, Lk] with true marking keys to ignore (torch.nn.MultiheadAttention's
// convention). Difference from torch: a query row that sees no key at all (every key padded, or cut off by
// the causal mask) gets a zero output and zero gradients instead of NaN.
//
// q, k, v may be strided views (e.g. heads split out of a packed QKV projection); only a non-unit stride
// on the head dim costs a copy. Gradients flow to q, k and v.
#pragma once
#include <cmath>

#include "mc/ops/nn.hpp"

namespace mc {

// Parameters for heads of size head_dim: scale 1/sqrt(head_dim).
inline AttentionParams attention_params(int64_t head_dim, bool causal = false, Tensor key_padding_mask = {}) {
  MC_CHECK(head_dim > 0, "attention_params: head_dim must be positive, got ", head_dim);
  AttentionParams p;
  p.scale = float(1.0 / std::sqrt(double(head_dim)));
  p.causal = causal;
  p.key_padding_mask = std::move(key_padding_mask);
  return p;
}

inline Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const AttentionParams& p) {
  const char* name = "scaled_dot_product_attention";
  MC_CHECK(q.defined() && k.defined() && v.defined(), name, ": q, k and v must be defined");
  MC_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, name, ": q, k, v must be 4-d [B, H, L, D], got ",
           shape_str(q.shape()), ", ", shape_str(k.shape()), ", ", shape_str(v.shape()));
  MC_CHECK(is_floating(q.dtype()) && k.dtype() == q.dtype() && v.dtype() == q.dtype(), name,
           ": q, k, v must share one floating dtype, got ", dtype_name(q.dtype()), ", ", dtype_name(k.dtype()), ", ",
           dtype_name(v.dtype()));
  detail::check_same_device(q, k, name);
  detail::check_same_device(q, v, name);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  MC_CHECK(k.size(0) == B && v.size(0) == B && k.size(1) == H && v.size(1) == H, name,
           ": batch and head sizes differ: q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
           shape_str(v.shape()));
  MC_CHECK(k.size(3) == D && v.size(3) == D, name, ": head dims differ: q ", shape_str(q.shape()), ", k ",
           shape_str(k.shape()), ", v ", shape_str(v.shape()));
  MC_CHECK(v.size(2) == Lk, name, ": k ", shape_str(k.shape()), " and v ", shape_str(v.shape()),
           " have different lengths");
  if (p.key_padding_mask.defined()) {
    const Tensor& m = p.key_padding_mask;
    MC_CHECK(m.dtype() == DType::Bool, name, ": key_padding_mask must be bool (true = ignored key), got ",
             dtype_name(m.dtype()));
    MC_CHECK(m.dim() == 2 && m.size(0) == B && m.size(1) == Lk, name, ": key_padding_mask ", shape_str(m.shape()),
             " must be [B, Lk] = [", B, ", ", Lk, "]");
    detail::check_same_device(q, m, name);
  }
  // Kernels get a unit stride on the head dim (every other stride is free).
  auto unit_inner = [](const Tensor& t) { return t.size(3) <= 1 || t.stride(3) == 1 ? t : t.contiguous(); };
  const Tensor qd = unit_inner(q.detach()), kd = unit_inner(k.detach()), vd = unit_inner(v.detach());
  Tensor out = Tensor::empty({B, H, Lq, D}, q.dtype(), q.device());
  Tensor lse = Tensor::empty({B, H, Lq}, DType::F32, q.device());
  backend(q.device()).attention(out, lse, qd, kd, vd, p);
  return record(out, name, {q, k, v},
                [qd, kd, vd, o = out.detach(), lse, p, unit_inner](const Tensor& g, const Needs& n) {
                  Tensor gq = empty_like(qd), gk = empty_like(kd), gv = empty_like(vd);
                  backend(g.device()).attention_backward(gq, gk, gv, unit_inner(g), qd, kd, vd, o, lse, p);
                  return std::vector<Tensor>{n[0] ? gq : Tensor(), n[1] ? gk : Tensor(), n[2] ? gv : Tensor()};
                });
}

}  // namespace mc
