// mc/cpu/optim.hpp — random fills and fused optimizer updates on the CPU.
#pragma once
#include <cmath>

#include "mc/core/random.hpp"
#include "mc/cpu/elementwise.hpp"

namespace mc::cpu {

inline void random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  if (!out.is_contiguous()) {
    Tensor tmp = Tensor::empty(out.shape(), out.dtype());
    random(tmp, kind, seed, offset, a, b);
    copy(out, tmp);
    return;
  }
  MC_DISPATCH_FLOAT(out.dtype(), "random", T, {
    T* o = ptr<T>(out);
    parallel_for(out.numel(), 4096, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        double u = kind == RandomKind::Uniform ? a + (b - a) * double(philox_uniform(seed, offset, uint64_t(i)))
                                               : a + b * double(philox_normal(seed, offset, uint64_t(i)));
        o[i] = T(acc_t<T>(u));
      }
    });
  });
}

inline void adam_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamParams& p) {
  MC_CHECK(param.is_contiguous() && grad.is_contiguous() && m.is_contiguous() && v.is_contiguous(),
           "adam_step: tensors must be contiguous");
  MC_DISPATCH_FLOAT(param.dtype(), "adam_step", T, {
    using C = acc_t<T>;
    T* w = ptr<T>(param);
    const T* g = ptr<const T>(grad);
    T* mm = ptr<T>(m);
    T* vv = ptr<T>(v);
    const C b1 = C(p.beta1), b2 = C(p.beta2), eps = C(p.eps), wd = C(p.weight_decay), lr = C(p.lr);
    const C bc1 = C(1 - std::pow(p.beta1, double(p.step)));
    const C bc2_sqrt = C(std::sqrt(1 - std::pow(p.beta2, double(p.step))));
    const AdamKind kind = p.kind;
    parallel_for(param.numel(), 16384, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        C wi = C(w[i]), gi = C(g[i]);
        if (kind == AdamKind::AdamW) wi *= C(1) - lr * wd;
        else gi += wd * wi;
        C mi = b1 * C(mm[i]) + (C(1) - b1) * gi;
        mm[i] = T(mi);
        if (kind == AdamKind::Adamax) {
          C ui = std::max(b2 * C(vv[i]), std::fabs(gi) + eps);
          vv[i] = T(ui);
          wi -= (lr / bc1) * mi / ui;
        } else {
          C vi = b2 * C(vv[i]) + (C(1) - b2) * gi * gi;
          vv[i] = T(vi);
          wi -= (lr / bc1) * mi / (std::sqrt(vi) / bc2_sqrt + eps);
        }
        w[i] = T(wi);
      }
    });
  });
}

inline void sgd_step(const Tensor& param, const Tensor& grad, const Tensor& buf, const SgdParams& p) {
  MC_CHECK(param.is_contiguous() && grad.is_contiguous() && (!buf.defined() || buf.is_contiguous()),
           "sgd_step: tensors must be contiguous");
  MC_DISPATCH_FLOAT(param.dtype(), "sgd_step", T, {
    using C = acc_t<T>;
    T* w = ptr<T>(param);
    const T* g = ptr<const T>(grad);
    T* bb = buf.defined() ? ptr<T>(buf) : nullptr;
    const C lr = C(p.lr), mom = C(p.momentum), damp = C(p.dampening), wd = C(p.weight_decay);
    parallel_for(param.numel(), 16384, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        C gi = C(g[i]) + wd * C(w[i]);
        if (bb) {
          C b = p.first_step ? gi : mom * C(bb[i]) + (C(1) - damp) * gi;
          bb[i] = T(b);
          gi = p.nesterov ? gi + mom * b : b;
        }
        w[i] = T(C(w[i]) - lr * gi);
      }
    });
  });
}

}  // namespace mc::cpu
