// mc/ops/norm.hpp — layer_norm and batch_norm with autograd (torch.nn.functional semantics).
//
// Parameters (weight, bias, running statistics) have the input's dtype, or f32 when the input is bf16/f16
// (PyTorch's mixed-dtype rule); all given parameters share one dtype. Gradients are returned in the dtype
// of the tensor they belong to.
#pragma once
#include "mc/ops/nn.hpp"

namespace mc {
namespace detail {

// The dtype of saved per-row / per-channel statistics.
inline DType norm_stat_dtype(DType x) { return x == DType::F64 ? DType::F64 : DType::F32; }

inline void check_norm_param(const Tensor& x, const Tensor& p, const char* op, const char* name, DType& shared,
                             const char*& shared_name) {
  if (!p.defined()) return;
  check_same_device(x, p, op);
  const bool half = x.dtype() == DType::BF16 || x.dtype() == DType::F16;
  MC_CHECK(p.dtype() == x.dtype() || (half && p.dtype() == DType::F32), op, ": ", name, " has dtype ",
           dtype_name(p.dtype()), " but the input is ", dtype_name(x.dtype()),
           half ? " (parameters must be the input's dtype or f32)" : " (parameters must be the input's dtype)");
  if (shared_name) {
    MC_CHECK(p.dtype() == shared, op, ": ", name, " has dtype ", dtype_name(p.dtype()), " but ", shared_name, " has ",
             dtype_name(shared));
  } else {
    shared = p.dtype();
    shared_name = name;
  }
}

}  // namespace detail

// Normalises x over its trailing dims `normalized_shape` (mean and biased variance), then applies the
// optional elementwise affine weight/bias of shape normalized_shape. torch.nn.functional.layer_norm.
inline Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {},
                         const Tensor& bias = {}, double eps = 1e-5) {
  MC_CHECK(is_floating(x.dtype()), "layer_norm: expects a floating input, got ", dtype_name(x.dtype()));
  const size_t k = normalized_shape.size();
  MC_CHECK(k >= 1, "layer_norm: normalized_shape must have at least one dimension");
  bool match = size_t(x.dim()) >= k;
  for (size_t i = 0; match && i < k; ++i) match = x.shape()[size_t(x.dim()) - k + i] == normalized_shape[i];
  MC_CHECK(match, "layer_norm: normalized_shape ", shape_str(normalized_shape),
           " does not match the trailing dims of input ", shape_str(x.shape()));
  MC_CHECK(!weight.defined() || weight.shape() == normalized_shape, "layer_norm: weight has shape ",
           shape_str(weight.defined() ? weight.shape() : Shape{}), ", expected normalized_shape ",
           shape_str(normalized_shape));
  MC_CHECK(!bias.defined() || bias.shape() == normalized_shape, "layer_norm: bias has shape ",
           shape_str(bias.defined() ? bias.shape() : Shape{}), ", expected normalized_shape ",
           shape_str(normalized_shape));
  MC_CHECK(eps >= 0, "layer_norm: eps must be non-negative, got ", eps);
  DType pdt = x.dtype();
  const char* pname = nullptr;
  detail::check_norm_param(x, weight, "layer_norm", "weight", pdt, pname);
  detail::check_norm_param(x, bias, "layer_norm", "bias", pdt, pname);

  int64_t rows = 1;
  for (size_t i = 0; i + k < size_t(x.dim()); ++i) rows *= x.shape()[i];
  const DType sdt = detail::norm_stat_dtype(x.dtype());
  Tensor xc = x.contiguous();
  Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, sdt, x.device()), rstd = Tensor::empty({rows}, sdt, x.device());
  backend(x.device()).layer_norm(out, mean, rstd, xc.detach(), w, b, eps);
  return record(out, "layer_norm", {xc, weight, bias},
                [x_ = xc.detach(), w, mean, rstd, bshape = bias.defined() ? bias.shape() : Shape{},
                 bdt = bias.defined() ? bias.dtype() : x.dtype()](const Tensor& g, const Needs& n) {
                  Tensor gy = detail::cast(g, x_.dtype()).contiguous();
                  Tensor gx = n[0] ? Tensor::empty(x_.shape(), x_.dtype(), x_.device()) : Tensor();
                  Tensor gw = n[1] ? Tensor::empty(w.shape(), w.dtype(), w.device()) : Tensor();
                  Tensor gb = n[2] ? Tensor::empty(bshape, bdt, x_.device()) : Tensor();
                  backend(x_.device()).layer_norm_backward(gx, gw, gb, gy, x_, w, mean, rstd);
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

// Batch normalisation of x [N, C, *] per channel (torch.nn.functional.batch_norm). Training: batch
// statistics; running_mean/running_var (optional in training, [C]) are updated in place with momentum
// and the unbiased variance. Eval: normalises with the running statistics. weight/bias are optional [C].
inline Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                         const Tensor& bias, bool training, double momentum = 0.1, double eps = 1e-5) {
  MC_CHECK(is_floating(x.dtype()), "batch_norm: expects a floating input, got ", dtype_name(x.dtype()));
  MC_CHECK(x.dim() >= 2, "batch_norm: input must be [N, C, *], got ", shape_str(x.shape()));
  const int64_t C = x.size(1);
  const std::pair<const Tensor*, const char*> params[] = {
      {&weight, "weight"}, {&bias, "bias"}, {&running_mean, "running_mean"}, {&running_var, "running_var"}};
  DType pdt = x.dtype();
  const char* pname = nullptr;
  for (auto [p, name] : params) {
    if (!p->defined()) continue;
    MC_CHECK(p->dim() == 1 && p->size(0) == C, "batch_norm: ", name, " has shape ", shape_str(p->shape()),
             ", expected [", C, "] for input ", shape_str(x.shape()));
    detail::check_norm_param(x, *p, "batch_norm", name, pdt, pname);
  }
  MC_CHECK(running_mean.defined() == running_var.defined(),
           "batch_norm: running_mean and running_var must be given together");
  MC_CHECK(training || running_mean.defined(),
           "batch_norm: running_mean and running_var must be given in evaluation mode");
  MC_CHECK(!(running_mean.defined() && running_mean.requires_grad()) &&
               !(running_var.defined() && running_var.requires_grad()),
           "batch_norm: running statistics must not require grad");
  MC_CHECK(eps >= 0, "batch_norm: eps must be non-negative, got ", eps);
  if (training) {
    int64_t per_channel = x.size(0);
    for (int d = 2; d < x.dim(); ++d) per_channel *= x.size(d);
    MC_CHECK(per_channel > 1, "batch_norm: expected more than 1 value per channel when training, got input of shape ",
             shape_str(x.shape()));
  }

  const DType sdt = detail::norm_stat_dtype(x.dtype());
  Tensor xc = x.contiguous();
  Tensor w = weight.defined() ? weight.detach() : Tensor();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({C}, sdt, x.device()), rstd = Tensor::empty({C}, sdt, x.device());
  backend(x.device())
      .batch_norm(out, mean, rstd, xc.detach(), w, bias.defined() ? bias.detach() : Tensor(),
                  running_mean.defined() ? running_mean.detach() : Tensor(),
                  running_var.defined() ? running_var.detach() : Tensor(), training, momentum, eps);
  return record(out, "batch_norm", {xc, weight, bias},
                [x_ = xc.detach(), w, mean, rstd, training, bdt = bias.defined() ? bias.dtype() : x.dtype()](
                    const Tensor& g, const Needs& n) {
                  Tensor gy = detail::cast(g, x_.dtype()).contiguous();
                  const Shape cs{x_.size(1)};
                  Tensor gx = n[0] ? Tensor::empty(x_.shape(), x_.dtype(), x_.device()) : Tensor();
                  Tensor gw = n[1] ? Tensor::empty(cs, w.dtype(), x_.device()) : Tensor();
                  Tensor gb = n[2] ? Tensor::empty(cs, bdt, x_.device()) : Tensor();
                  backend(x_.device()).batch_norm_backward(gx, gw, gb, gy, x_, w, mean, rstd, training);
                  return std::vector<Tensor>{gx, gw, gb};
                });
}

}  // namespace mc
