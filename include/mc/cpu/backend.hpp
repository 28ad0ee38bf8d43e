// mc/cpu/backend.hpp — the CPU backend: the reference implementation of every primitive.
//
// Kernels live one family per header (elementwise, reduce, gemm, norm, conv, index, attention, optim);
// this class only routes the Backend interface to them.
//
// Header-only by default: every translation unit that uses mc compiles the CPU kernels. A program with
// many translation units can compile them once instead: define MC_CPU_BACKEND_EXTERN everywhere, and in
// exactly one source file also define MC_CPU_BACKEND_IMPLEMENTATION before including mc (mc's own test
// binary does this).
#pragma once
#include "mc/core/backend.hpp"

#if defined(MC_CPU_BACKEND_EXTERN) && !defined(MC_CPU_BACKEND_IMPLEMENTATION)
namespace mc {
Backend& cpu_backend();
}  // namespace mc
#else
#include "mc/cpu/attention.hpp"
#include "mc/cpu/conv.hpp"
#include "mc/cpu/elementwise.hpp"
#include "mc/cpu/gemm.hpp"
#include "mc/cpu/index.hpp"
#include "mc/cpu/norm.hpp"
#include "mc/cpu/optim.hpp"
#include "mc/cpu/reduce.hpp"
#include "mc/cpu/softmax.hpp"

namespace mc::cpu {

// out[b] = a[b] @ b[b]; bf16/f16 are multiplied in f32.
inline void matmul(const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  auto run = [&](auto tag, const Tensor& o, const Tensor& x, const Tensor& y) {
    using T = decltype(tag);
    gemm_batched<T>(B, M, N, K, T(1), ptr<const T>(x), x.stride(0), x.stride(1), x.stride(2), ptr<const T>(y),
                    y.stride(0), y.stride(1), y.stride(2), T(0), ptr<T>(o), o.stride(0), o.stride(1), o.stride(2));
  };
  switch (out.dtype()) {
    case DType::F32: run(float{}, out, a, b); break;
    case DType::F64: run(double{}, out, a, b); break;
    case DType::BF16:
    case DType::F16: {
      Tensor x = Tensor::empty(a.shape()), y = Tensor::empty(b.shape()), o = Tensor::empty(out.shape());
      copy(x, a);
      copy(y, b);
      run(float{}, o, x, y);
      copy(out, o);
      break;
    }
    default: fail("matmul: not defined for dtype ", dtype_name(out.dtype()));
  }
}

class CpuBackend final : public Backend {
 public:
  void copy(const Tensor& d, const Tensor& s) override { cpu::copy(d, s); }
  void fill(const Tensor& d, double v) override { cpu::fill(d, v); }
  void unary(UnaryOp op, const Tensor& o, const Tensor& x, double a, double b) override { cpu::unary(op, o, x, a, b); }
  void binary(BinaryOp op, const Tensor& o, const Tensor& a, const Tensor& b) override { cpu::binary(op, o, a, b); }
  void where(const Tensor& o, const Tensor& c, const Tensor& a, const Tensor& b) override { cpu::where(o, c, a, b); }
  void reduce(ReduceOp op, const Tensor& o, const Tensor& x) override { cpu::reduce(op, o, x); }
  void arg_reduce(bool mx, const Tensor& o, const Tensor& x, int d) override { cpu::arg_reduce(mx, o, x, d); }
  void matmul(const Tensor& o, const Tensor& a, const Tensor& b) override { cpu::matmul(o, a, b); }
  void softmax(const Tensor& o, const Tensor& x, bool log) override { cpu::softmax(o, x, log); }
  void softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, bool log) override {
    cpu::softmax_backward(gx, gy, y, log);
  }
  void layer_norm(const Tensor& o, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& w,
                  const Tensor& b, double eps) override {
    cpu::layer_norm(o, mean, rstd, x, w, b, eps);
  }
  void layer_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                           const Tensor& w, const Tensor& mean, const Tensor& rstd) override {
    cpu::layer_norm_backward(gx, gw, gb, gy, x, w, mean, rstd);
  }
  void batch_norm(const Tensor& o, const Tensor& sm, const Tensor& sr, const Tensor& x, const Tensor& w,
                  const Tensor& b, const Tensor& rm, const Tensor& rv, bool training, double momentum,
                  double eps) override {
    cpu::batch_norm(o, sm, sr, x, w, b, rm, rv, training, momentum, eps);
  }
  void batch_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                           const Tensor& w, const Tensor& sm, const Tensor& sr, bool training) override {
    cpu::batch_norm_backward(gx, gw, gb, gy, x, w, sm, sr, training);
  }
  void conv2d(const Tensor& o, const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) override {
    cpu::conv2d(o, x, w, b, p);
  }
  void conv2d_backward_input(const Tensor& gx, const Tensor& gy, const Tensor& w, const Conv2dParams& p) override {
    cpu::conv2d_backward_input(gx, gy, w, p);
  }
  void conv2d_backward_weight(const Tensor& gw, const Tensor& gy, const Tensor& x, const Conv2dParams& p) override {
    cpu::conv2d_backward_weight(gw, gy, x, p);
  }
  void max_pool2d(const Tensor& o, const Tensor& i, const Tensor& x, const Pool2dParams& p) override {
    cpu::max_pool2d(o, i, x, p);
  }
  void max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& i) override {
    cpu::max_pool2d_backward(gx, gy, i);
  }
  void avg_pool2d(const Tensor& o, const Tensor& x, const Pool2dParams& p) override { cpu::avg_pool2d(o, x, p); }
  void avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dParams& p) override {
    cpu::avg_pool2d_backward(gx, gy, p);
  }
  void adaptive_avg_pool2d(const Tensor& o, const Tensor& x) override { cpu::adaptive_avg_pool2d(o, x); }
  void adaptive_avg_pool2d_backward(const Tensor& gx, const Tensor& gy) override {
    cpu::adaptive_avg_pool2d_backward(gx, gy);
  }
  void index_select(const Tensor& o, const Tensor& x, int d, const Tensor& i) override { cpu::index_select(o, x, d, i); }
  void index_add(const Tensor& o, int d, const Tensor& i, const Tensor& s) override { cpu::index_add(o, d, i, s); }
  void gather(const Tensor& o, const Tensor& x, int d, const Tensor& i) override { cpu::gather(o, x, d, i); }
  void scatter_add(const Tensor& o, int d, const Tensor& i, const Tensor& s) override { cpu::scatter_add(o, d, i, s); }
  void attention(const Tensor& o, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionParams& p) override {
    cpu::attention(o, lse, q, k, v, p);
  }
  void attention_backward(const Tensor& gq, const Tensor& gk, const Tensor& gv, const Tensor& go, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                          const AttentionParams& p) override {
    cpu::attention_backward(gq, gk, gv, go, q, k, v, o, lse, p);
  }
  void random(const Tensor& o, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) override {
    cpu::random(o, kind, seed, offset, a, b);
  }
  void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamParams& a) override {
    cpu::adam_step(p, g, m, v, a);
  }
  void sgd_step(const Tensor& p, const Tensor& g, const Tensor& b, const SgdParams& s) override {
    cpu::sgd_step(p, g, b, s);
  }
};

}  // namespace mc::cpu

namespace mc {
MC_CPU_BACKEND_LINKAGE Backend& cpu_backend() {
  static cpu::CpuBackend b;
  return b;
}
}  // namespace mc
#endif
