// mc/autograd/gradcheck.hpp — finite-difference gradient checks in double precision.
//
// gradcheck(f, inputs) converts the floating inputs to contiguous f64 leaves, draws a random weighting v
// of the output, and compares the analytic gradient of L = sum(v * f(inputs)) (one backward pass) with
// central differences (L(x + eps e_i) - L(x - eps e_i)) / 2 eps for every element of every floating input.
// Integer inputs (indices) are passed through unchanged. Non-contiguous and broadcast cases are tested by
// building them inside f (e.g. f = [](auto& in) { return op(in[0].transpose(0, 1)); }).
#pragma once
#include <cmath>
#include <functional>
#include <sstream>
#include <string>

#include "mc/autograd/engine.hpp"
#include "mc/ops/reduce.hpp"

namespace mc::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string message;  // the first mismatches, for test output
};

inline GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                 const std::vector<Tensor>& inputs, GradcheckOptions opt = {}) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    if (t.defined() && is_floating(t.dtype())) {
      Tensor c = detail::cast(t.detach(), DType::F64);
      if (c.is_same(t) || !c.is_contiguous()) c = detail::contiguous_copy(c);
      c.requires_grad_(true);
      xs.push_back(c);
    } else {
      xs.push_back(t);
    }
  }
  Tensor y = f(xs);
  MC_CHECK(y.dtype() == DType::F64, "gradcheck: f must return an f64 tensor (got ", dtype_name(y.dtype()), ")");
  Generator gen(opt.seed);
  Tensor v = randn(y.shape(), &gen, DType::F64);
  auto L = [&](const std::vector<Tensor>& in) {
    NoGradGuard ng;
    return sum(f(in) * v).item<double>();
  };
  sum(y * v).backward();

  GradcheckResult r;
  std::ostringstream msg;
  int reported = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    if (!xs[k].defined() || !xs[k].requires_grad()) continue;
    Tensor analytic = xs[k].grad();
    std::vector<double> ga = analytic.defined() ? analytic.to_vector<double>() : std::vector<double>(size_t(xs[k].numel()), 0.0);
    double* p = xs[k].data<double>();
    for (int64_t i = 0; i < xs[k].numel(); ++i) {
      const double orig = p[i];
      p[i] = orig + opt.eps;
      const double lp = L(xs);
      p[i] = orig - opt.eps;
      const double lm = L(xs);
      p[i] = orig;
      const double num = (lp - lm) / (2 * opt.eps);
      const double err = std::fabs(num - ga[size_t(i)]);
      r.max_abs_error = std::max(r.max_abs_error, err);
      if (!(err <= opt.atol + opt.rtol * std::fabs(num))) {
        r.ok = false;
        if (reported++ < 5)
          msg << "input " << k << " element " << i << ": analytic " << ga[size_t(i)] << ", numerical " << num << "\n";
      }
    }
  }
  r.message = msg.str();
  return r;
}

}  // namespace mc::autograd

namespace mc {
using autograd::gradcheck;
using autograd::GradcheckOptions;
using autograd::GradcheckResult;
}  // namespace mc
