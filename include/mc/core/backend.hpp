// mc/core/backend.hpp — the primitive ops every device implements.
//
// The ops layer (mc/ops) checks arguments, allocates outputs, broadcasts, and records autograd; it then
// calls these primitives on the Backend of the tensors' device. A backend only computes: every output
// tensor it receives is already allocated with the right shape and dtype, and inputs are on its device.
// The CPU backend (mc/cpu) is the reference. A build with the CUDA backend (MC_WITH_CUDA) routes CUDA
// devices to mc::cuda::backend(); backend_slot() lets a program install another backend for a device type.
//
// Conventions shared by all primitives:
// - Tensors may be non-contiguous unless a primitive says otherwise; broadcast inputs arrive expanded to
//   the output shape (stride 0), so elementwise primitives see operands of identical shape.
// - Floating kernels compute in f32 for bf16/f16 (f64 in f64) and round once when storing.
#pragma once
#include <cstdint>
#include <vector>

#include "mc/core/tensor.hpp"

namespace mc {

enum class UnaryOp : uint8_t {
  Neg, Exp, Log, Log1p, Sqrt, Rsqrt, Abs, Sign, Tanh, Sigmoid, Relu, GeluErf, GeluTanh, QuickGelu, Sin, Cos,
  Reciprocal, Floor, LogicalNot,
  Clamp,     // clamp(x, a, b); a = -inf or b = +inf leave that side open
  PowScalar  // x ** a
};

enum class BinaryOp : uint8_t {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum,
  Eq, Ne, Lt, Le, Gt, Ge, LogicalAnd, LogicalOr,  // output dtype bool
  // fused backward of activations: out = a (the incoming gradient) * f'(b) with b the input x,
  // except SigmoidBackward / TanhBackward where b is the forward output y.
  ReluBackward, GeluErfBackward, GeluTanhBackward, QuickGeluBackward, SigmoidBackward, TanhBackward
};

enum class ReduceOp : uint8_t { Sum, Mean, Max, Min, Prod };

struct Conv2dParams {
  int64_t stride[2] = {1, 1}, padding[2] = {0, 0}, dilation[2] = {1, 1}, groups = 1;
};

struct Pool2dParams {
  int64_t kernel[2] = {1, 1}, stride[2] = {1, 1}, padding[2] = {0, 0}, dilation[2] = {1, 1};
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg pool
};

struct AttentionParams {
  float scale = 1.0f;      // usually 1/sqrt(head_dim)
  bool causal = false;     // query i attends to keys j <= i (+ Lk - Lq when the lengths differ)
  Tensor key_padding_mask; // optional bool [B, Lk]; true marks padding (ignored keys), as torch's MHA
};

enum class AdamKind : uint8_t { Adam, AdamW, Adamax };
struct AdamParams {
  AdamKind kind = AdamKind::Adam;
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  int64_t step = 1;  // 1 on the first update (bias correction)
};

struct SgdParams {
  double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool first_step = true;  // the momentum buffer is initialised from the gradient
};

enum class RandomKind : uint8_t { Uniform, Normal };

class Backend {
 public:
  virtual ~Backend() = default;

  // ---- memory ----
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;  // same shape; converts dtype
  virtual void fill(const Tensor& dst, double value) = 0;

  // ---- elementwise ----
  virtual void unary(UnaryOp op, const Tensor& out, const Tensor& x, double a, double b) = 0;
  virtual void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) = 0;
  virtual void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) = 0;

  // ---- reductions: `out` has x's rank, with size 1 on the reduced dims ----
  virtual void reduce(ReduceOp op, const Tensor& out, const Tensor& x) = 0;
  virtual void arg_reduce(bool is_max, const Tensor& out, const Tensor& x, int dim) = 0;  // out i64

  // ---- linear algebra: out[b] = a[b] @ b[b] for 3-d [B,M,K] x [B,K,N] -> [B,M,N] ----
  virtual void matmul(const Tensor& out, const Tensor& a, const Tensor& b) = 0;

  // ---- normalisation (rows of the contiguous last dimension(s)) ----
  virtual void softmax(const Tensor& out, const Tensor& x, bool log) = 0;
  virtual void softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, bool log) = 0;
  // x viewed as [rows, cols]; mean/rstd are [rows] (f32; f64 for f64 input); w/b optional [cols].
  virtual void layer_norm(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                          const Tensor& w, const Tensor& b, double eps) = 0;
  virtual void layer_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy,
                                   const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd) = 0;
  // x [N, C, *]; save_mean/save_rstd [C] (f32; f64 for f64 input). Training: batch statistics, running stats updated in place
  // (unbiased variance) when given. Eval: the running stats.
  virtual void batch_norm(const Tensor& out, const Tensor& save_mean, const Tensor& save_rstd, const Tensor& x,
                          const Tensor& w, const Tensor& b, const Tensor& running_mean, const Tensor& running_var,
                          bool training, double momentum, double eps) = 0;
  virtual void batch_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy,
                                   const Tensor& x, const Tensor& w, const Tensor& save_mean,
                                   const Tensor& save_rstd, bool training) = 0;

  // ---- convolution and pooling, NCHW ----
  virtual void conv2d(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Conv2dParams& p) = 0;
  virtual void conv2d_backward_input(const Tensor& gx, const Tensor& gy, const Tensor& w, const Conv2dParams& p) = 0;
  virtual void conv2d_backward_weight(const Tensor& gw, const Tensor& gy, const Tensor& x, const Conv2dParams& p) = 0;
  virtual void max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x, const Pool2dParams& p) = 0;
  virtual void max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& indices) = 0;
  virtual void avg_pool2d(const Tensor& out, const Tensor& x, const Pool2dParams& p) = 0;
  virtual void avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dParams& p) = 0;
  virtual void adaptive_avg_pool2d(const Tensor& out, const Tensor& x) = 0;
  virtual void adaptive_avg_pool2d_backward(const Tensor& gx, const Tensor& gy) = 0;

  // ---- indexing (idx is i64) ----
  virtual void index_select(const Tensor& out, const Tensor& x, int dim, const Tensor& idx) = 0;
  virtual void index_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src) = 0;  // out[idx] += src
  virtual void gather(const Tensor& out, const Tensor& x, int dim, const Tensor& idx) = 0;
  virtual void scatter_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src) = 0;

  // ---- attention: q [B,H,Lq,D], k/v [B,H,Lk,D], out [B,H,Lq,D], lse f32 [B,H,Lq] ----
  virtual void attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionParams& p) = 0;
  virtual void attention_backward(const Tensor& gq, const Tensor& gk, const Tensor& gv, const Tensor& gout,
                                  const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const AttentionParams& p) = 0;

  // ---- random numbers (mc/core/random.hpp): element i of `out` in row-major order ----
  virtual void random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) = 0;

  // ---- optimizer updates, in place on contiguous tensors of one shape ----
  virtual void adam_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                         const AdamParams& p) = 0;
  virtual void sgd_step(const Tensor& param, const Tensor& grad, const Tensor& buf, const SgdParams& p) = 0;

  // The same updates over many tensors with one set of hyper-parameters (element i of each vector forms
  // one adam_step / sgd_step; bufs[i] may be undefined as in sgd_step). A backend may fuse them into a few
  // launches; the default runs the single-tensor update on each, so results do not depend on the grouping.
  virtual void adam_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                               const std::vector<Tensor>& ms, const std::vector<Tensor>& vs, const AdamParams& p) {
    MC_CHECK(grads.size() == params.size() && ms.size() == params.size() && vs.size() == params.size(),
             "adam_step_multi: ", params.size(), " params but ", grads.size(), " grads, ", ms.size(), " / ",
             vs.size(), " state tensors");
    for (size_t i = 0; i < params.size(); ++i) adam_step(params[i], grads[i], ms[i], vs[i], p);
  }
  virtual void sgd_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                              const std::vector<Tensor>& bufs, const SgdParams& p) {
    MC_CHECK(grads.size() == params.size() && bufs.size() == params.size(), "sgd_step_multi: ", params.size(),
             " params but ", grads.size(), " grads, ", bufs.size(), " buffers");
    for (size_t i = 0; i < params.size(); ++i) sgd_step(params[i], grads[i], bufs[i], p);
  }
};

inline Backend*& backend_slot(DeviceType t) {
  static Backend* slots[2] = {nullptr, nullptr};
  return slots[int(t)];
}

// Defined in mc/cpu/backend.hpp: inline (header-only), or in one translation unit (MC_CPU_BACKEND_EXTERN).
#if defined(MC_CPU_BACKEND_EXTERN)
#define MC_CPU_BACKEND_LINKAGE
#else
#define MC_CPU_BACKEND_LINKAGE inline
#endif
MC_CPU_BACKEND_LINKAGE Backend& cpu_backend();

#if defined(MC_WITH_CUDA)
namespace cuda {
Backend& backend(int device);  // mc/cuda/runtime.hpp, compiled in kernels/
}
#endif

inline Backend& backend(Device d) {
  if (d.is_cpu()) return cpu_backend();
  Backend* b = backend_slot(d.type);
#if defined(MC_WITH_CUDA)
  if (!b && d.is_cuda()) return cuda::backend(d.index);
#endif
  MC_CHECK(b, "no backend for device ", d.str(), " (mc was built without CUDA support)");
  return *b;
}

}  // namespace mc
