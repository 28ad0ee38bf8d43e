// mc/nn/init.hpp — parameter initialisers with PyTorch's formulas (torch.nn.init), drawing from mc's
// counter-based generator. All write in place without recording autograd.
#pragma once
#include <cmath>

#include "mc/ops/nn.hpp"

namespace mc::nn::init {

// fan_in, fan_out of a weight: [out, in] or [out, in/groups, kh, kw].
inline std::pair<int64_t, int64_t> fans(const Tensor& w) {
  MC_CHECK(w.dim() >= 2, "init: fan in/out need a tensor with at least 2 dims, got ", shape_str(w.shape()));
  int64_t receptive = 1;
  for (int d = 2; d < w.dim(); ++d) receptive *= w.size(d);
  return {w.size(1) * receptive, w.size(0) * receptive};
}

inline Tensor& uniform_(Tensor& t, double lo, double hi, Generator* g = nullptr) {
  NoGradGuard ng;
  return mc::uniform_(t, lo, hi, g);
}
inline Tensor& normal_(Tensor& t, double mean, double std, Generator* g = nullptr) {
  NoGradGuard ng;
  return mc::normal_(t, mean, std, g);
}
inline Tensor& constant_(Tensor& t, double v) {
  NoGradGuard ng;
  return fill_(t, v);
}
inline Tensor& zeros_(Tensor& t) { return constant_(t, 0); }
inline Tensor& ones_(Tensor& t) { return constant_(t, 1); }

// gain for leaky_relu with negative slope a: sqrt(2 / (1 + a^2)).
inline Tensor& kaiming_uniform_(Tensor& w, double a = 0, Generator* g = nullptr) {
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const double bound = gain * std::sqrt(3.0 / double(fans(w).first));
  return init::uniform_(w, -bound, bound, g);
}
inline Tensor& kaiming_normal_(Tensor& w, double a = 0, Generator* g = nullptr) {
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  return init::normal_(w, 0, gain / std::sqrt(double(fans(w).first)), g);
}
inline Tensor& xavier_uniform_(Tensor& w, double gain = 1, Generator* g = nullptr) {
  auto [fi, fo] = fans(w);
  const double bound = gain * std::sqrt(6.0 / double(fi + fo));
  return init::uniform_(w, -bound, bound, g);
}
inline Tensor& xavier_normal_(Tensor& w, double gain = 1, Generator* g = nullptr) {
  auto [fi, fo] = fans(w);
  return init::normal_(w, 0, gain * std::sqrt(2.0 / double(fi + fo)), g);
}
// Normal(mean, std) truncated to [a, b] (timm's ViT init) by inverse-CDF sampling of a uniform draw.
inline Tensor& trunc_normal_(Tensor& t, double mean = 0, double std = 1, double a = -2, double b = 2,
                             Generator* g = nullptr) {
  NoGradGuard ng;
  auto cdf = [](double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))); };
  const double lo = cdf((a - mean) / std), hi = cdf((b - mean) / std);
  Tensor u = rand(t.shape(), g, DType::F64, t.device());
  std::vector<double> v = u.to_vector<double>();
  for (double& x : v) {
    // inverse normal CDF through erfinv, computed by Newton steps on erf
    double p = 2 * (lo + (hi - lo) * x) - 1;
    p = std::min(std::max(p, -1 + 1e-12), 1 - 1e-12);
    double y = 0;
    for (int it = 0; it < 60; ++it) {
      double err = std::erf(y) - p;
      y -= err / (2 / std::sqrt(M_PI) * std::exp(-y * y));
    }
    x = std::min(std::max(mean + std * std::sqrt(2.0) * y, a), b);
  }
  copy_(t, from_vector(v, t.shape(), t.device()));
  return t;
}

}  // namespace mc::nn::init
