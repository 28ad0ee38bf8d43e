// mc/core/math.hpp — scalar definitions of the elementwise ops, shared by every backend.
//
// Each function computes in T (float or double). GELU: erf form 0.5 x (1 + erf(x / sqrt 2)); tanh form
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); QuickGELU x * sigmoid(1.702 x).
#pragma once
#include <cmath>

#include "mc/core/random.hpp"  // MC_HD

namespace mc::math {

template <class T> MC_HD inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
template <class T> MC_HD inline T gelu_erf(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440))); }
template <class T> MC_HD inline T gelu_erf_grad(T x) {
  T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
  T pdf = std::exp(T(-0.5) * x * x) * T(0.39894228040143267794);
  return cdf + x * pdf;
}
template <class T> MC_HD inline T gelu_tanh(T x) {
  const T k = T(0.79788456080286535588);
  return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
}
template <class T> MC_HD inline T gelu_tanh_grad(T x) {
  const T k = T(0.79788456080286535588);
  T t = std::tanh(k * (x + T(0.044715) * x * x * x));
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * T(0.044715) * x * x);
}
template <class T> MC_HD inline T quick_gelu(T x) { return x * sigmoid(T(1.702) * x); }
template <class T> MC_HD inline T quick_gelu_grad(T x) {
  T s = sigmoid(T(1.702) * x);
  return s + T(1.702) * x * s * (T(1) - s);
}

}  // namespace mc::math
