// mc/ops/nn.hpp — neural-network functions: softmax, log_softmax, dropout, L2 norm / normalize, and the
// losses (cross_entropy, binary_cross_entropy_with_logits, mse_loss).
#pragma once
#include "mc/ops/linalg.hpp"
#include "mc/ops/shape.hpp"

namespace mc {

enum class Reduction { None, Mean, Sum };

namespace detail {

inline Tensor apply_reduction(const Tensor& loss, Reduction r) {
  switch (r) {
    case Reduction::Mean: return mean(loss);
    case Reduction::Sum: return sum(loss);
    default: return loss;
  }
}

inline Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  MC_CHECK(is_floating(x.dtype()), name, ": expects a floating tensor, got ", dtype_name(x.dtype()));
  if (x.dim() == 0) return softmax_impl(x.reshape({1}), 0, log).reshape({});
  const int d = wrap_dim(dim, size_t(x.dim()), name);
  const int last = x.dim() - 1;
  // The kernel works on contiguous rows of the last dim; move `dim` there and back.
  Tensor xt = d == last ? x.contiguous() : x.transpose(d, last).contiguous();
  Tensor y = empty_like(xt);
  backend(x.device()).softmax(y, xt.detach(), log);
  y = record(y, name, {xt}, [y_ = y.detach(), log](const Tensor& g, const Needs&) {
    Tensor gx = empty_like(y_);
    backend(g.device()).softmax_backward(gx, g.contiguous(), y_, log);
    return std::vector<Tensor>{gx};
  });
  return d == last ? y : y.transpose(d, last);
}

}  // namespace detail

inline Tensor softmax(const Tensor& x, int64_t dim = -1) { return detail::softmax_impl(x, dim, false); }
inline Tensor log_softmax(const Tensor& x, int64_t dim = -1) { return detail::softmax_impl(x, dim, true); }

// Inverted dropout: zeroes elements with probability p and scales the rest by 1/(1-p) in training mode.
// The mask comes from the counter-based generator, so it is the same on every backend for one seed.
inline Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr) {
  MC_CHECK(p >= 0 && p <= 1, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0) return x;
  if (p == 1) return x * 0.0;
  Tensor u = rand(x.shape(), gen, DType::F32, x.device());
  Tensor mask = detail::cast(u >= p, x.dtype()) * (1.0 / (1.0 - p));
  return x * mask;
}

// Euclidean norm over `dim`; its gradient at a zero vector is 0 (a subgradient), as torch's.
inline Tensor l2_norm(const Tensor& x, int64_t dim = -1, bool keepdim = false) {
  const int d = wrap_dim(dim, size_t(x.dim()), "l2_norm");
  Tensor n;
  {
    NoGradGuard ng;
    n = sqrt(sum(x * x, {d}, true));
  }
  Tensor out = keepdim ? n : n.squeeze(d);
  return record(detail::as_strided(out, out.shape(), out.strides(), out.offset()), "l2_norm", {x},
                [x_ = x.detach(), n](const Tensor& g, const Needs&) {
                  Tensor safe = where(n == 0.0, ones_like(n), n);
                  return std::vector<Tensor>{x_ * (g.reshape(n.shape()) / safe)};
                });
}

// x / max(||x||_2, eps) along dim (torch.nn.functional.normalize with p = 2).
inline Tensor normalize(const Tensor& x, int64_t dim = -1, double eps = 1e-12) {
  return x / clamp(l2_norm(x, dim, true), eps);
}

// Cross-entropy of logits [N, C] against class indices [N] (i64) or class probabilities [N, C] (float).
// label_smoothing mixes the target with the uniform distribution; rows whose index equals ignore_index
// are left out (mean over the rest).
inline Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::Mean,
                            double label_smoothing = 0.0, int64_t ignore_index = -100) {
  MC_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, C], got ", shape_str(logits.shape()));
  MC_CHECK(label_smoothing >= 0 && label_smoothing <= 1, "cross_entropy: label_smoothing must be in [0, 1]");
  const int64_t N = logits.size(0), C = logits.size(1);
  Tensor logp = log_softmax(logits, 1);
  if (is_floating(target.dtype())) {
    MC_CHECK(target.shape() == logits.shape(), "cross_entropy: probability targets ", shape_str(target.shape()),
             " must match logits ", shape_str(logits.shape()));
    Tensor t = detail::cast(target, logits.dtype());
    if (label_smoothing > 0) t = t * (1.0 - label_smoothing) + label_smoothing / double(C);
    return detail::apply_reduction(-sum(t * logp, {1}), reduction);
  }
  MC_CHECK(target.dim() == 1 && target.size(0) == N, "cross_entropy: class targets must be [N] = [", N, "], got ",
           shape_str(target.shape()));
  Tensor t = check_index_tensor(target, "cross_entropy");
  std::vector<int64_t> tv = t.to_vector<int64_t>();
  std::vector<float> keep(static_cast<size_t>(N));
  int64_t kept = 0;
  for (size_t i = 0; i < tv.size(); ++i) {
    if (tv[i] == ignore_index) {
      tv[i] = 0;
      continue;
    }
    MC_CHECK(tv[i] >= 0 && tv[i] < C, "cross_entropy: target ", tv[i], " at row ", i, " is not a class in [0, ", C, ")");
    keep[i] = 1;
    ++kept;
  }
  Tensor idx = from_vector(tv, {N, 1}, logits.device());
  Tensor w = detail::cast(from_vector(keep, {N}, logits.device()), logits.dtype());
  Tensor nll = -gather(logp, 1, idx).reshape({N});
  Tensor loss = label_smoothing > 0 ? nll * (1.0 - label_smoothing) - mean(logp, {1}) * label_smoothing : nll;
  loss = loss * w;
  if (reduction == Reduction::Mean) return sum(loss) / double(std::max<int64_t>(1, kept));
  return detail::apply_reduction(loss, reduction);
}

// Numerically stable sigmoid + binary cross-entropy; pos_weight (optional) weighs positive targets.
inline Tensor binary_cross_entropy_with_logits(const Tensor& x, const Tensor& y, Reduction reduction = Reduction::Mean,
                                               const Tensor& pos_weight = Tensor()) {
  MC_CHECK(x.shape() == y.shape(), "binary_cross_entropy_with_logits: input ", shape_str(x.shape()),
           " and target ", shape_str(y.shape()), " differ");
  MC_CHECK(!pos_weight.defined() || broadcast_shapes(pos_weight.shape(), x.shape(), "binary_cross_entropy_with_logits") == x.shape(),
           "binary_cross_entropy_with_logits: pos_weight ", shape_str(pos_weight.shape()), " does not broadcast to ",
           shape_str(x.shape()));
  Tensor loss, lw, sp;
  {
    NoGradGuard ng;
    lw = pos_weight.defined() ? (pos_weight - 1.0) * y + 1.0 : ones_like(x);
    sp = log1p(exp(-abs(x))) + relu(-x);  // log(1 + exp(-x)), stable
    loss = (1.0 - y) * x + lw * sp;
  }
  std::vector<Tensor> inputs{x, y};
  if (pos_weight.defined()) inputs.push_back(pos_weight);
  loss = record(loss, "binary_cross_entropy_with_logits", std::move(inputs),
                [x_ = x.detach(), y_ = y.detach(), lw, sp, pw = pos_weight.detach()](const Tensor& g, const Needs& n) {
                  std::vector<Tensor> r(n.size());
                  if (n[0]) r[0] = g * ((1.0 - y_) - lw * sigmoid(-x_));
                  if (n[1]) r[1] = g * (pw.defined() ? (pw - 1.0) * sp - x_ : -x_);
                  if (n.size() > 2 && n[2]) r[2] = sum_to(g * y_ * sp, pw.shape());
                  return r;
                });
  return detail::apply_reduction(loss, reduction);
}

inline Tensor mse_loss(const Tensor& x, const Tensor& y, Reduction reduction = Reduction::Mean) {
  Tensor d = x - y;
  return detail::apply_reduction(d * d, reduction);
}

}  // namespace mc
