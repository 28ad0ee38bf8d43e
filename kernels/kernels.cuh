// kernels/kernels.cuh — the CUDA implementation of each Backend primitive, one family per .cu file.
// The signatures are Backend's (mc/core/backend.hpp); kernels/backend.cu only routes to them.
#pragma once
#include "mc/core/backend.hpp"

namespace mc::cuda {

// runtime.cu: memory (copy also moves between host and device, either direction)
void copy(const Tensor& dst, const Tensor& src);
void fill(const Tensor& dst, double value);

// elementwise.cu
void unary(UnaryOp op, const Tensor& out, const Tensor& x, double a, double b);
void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);
void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b);

// reduce.cu
void reduce(ReduceOp op, const Tensor& out, const Tensor& x);
void arg_reduce(bool is_max, const Tensor& out, const Tensor& x, int dim);

// gemm.cu (cuBLASLt)
void matmul(const Tensor& out, const Tensor& a, const Tensor& b);

// softmax.cu
void softmax(const Tensor& out, const Tensor& x, bool log);
void softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, bool log);

// layernorm.cu
void layer_norm(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& w,
                const Tensor& b, double eps);
void layer_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                         const Tensor& w, const Tensor& mean, const Tensor& rstd);

// batchnorm.cu
void batch_norm(const Tensor& out, const Tensor& save_mean, const Tensor& save_rstd, const Tensor& x,
                const Tensor& w, const Tensor& b, const Tensor& running_mean, const Tensor& running_var,
                bool training, double momentum, double eps);
void batch_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                         const Tensor& w, const Tensor& save_mean, const Tensor& save_rstd, bool training);

// conv.cu (cuDNN)
void conv2d(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p);
void conv2d_backward_input(const Tensor& gx, const Tensor& gy, const Tensor& w, const Conv2dParams& p);
void conv2d_backward_weight(const Tensor& gw, const Tensor& gy, const Tensor& x, const Conv2dParams& p);

// pool.cu
void max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x, const Pool2dParams& p);
void max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& indices);
void avg_pool2d(const Tensor& out, const Tensor& x, const Pool2dParams& p);
void avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dParams& p);
void adaptive_avg_pool2d(const Tensor& out, const Tensor& x);
void adaptive_avg_pool2d_backward(const Tensor& gx, const Tensor& gy);

// index.cu
void index_select(const Tensor& out, const Tensor& x, int dim, const Tensor& idx);
void index_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src);
void gather(const Tensor& out, const Tensor& x, int dim, const Tensor& idx);
void scatter_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src);

// attention.cu (flash-style, online softmax)
void attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
               const AttentionParams& p);
void attention_backward(const Tensor& gq, const Tensor& gk, const Tensor& gv, const Tensor& gout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const AttentionParams& p);

// random.cu (the CPU's Philox stream, mc/core/random.hpp)
void random(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b);

// optim.cu
void adam_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamParams& p);
void sgd_step(const Tensor& param, const Tensor& grad, const Tensor& buf, const SgdParams& p);
// optim.cu: the multi-tensor updates (Backend::adam_step_multi / sgd_step_multi), a few launches per call
void adam_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& ms,
                     const std::vector<Tensor>& vs, const AdamParams& p);
void sgd_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& bufs,
                    const SgdParams& p);

// gemm.cu: the fused linear layer (not a Backend primitive). out [M, N] = epilogue(x [M, K] @ w[N, K]^T),
// any strides; bias [N] of out's dtype. cuBLASLt's GELU is the tanh form (UnaryOp::GeluTanh).
// GeluAuxBias also stores the GELU input (x @ w^T + bias) into aux, contiguous [M, N], for the backward.
enum class LinearEpilogue : uint8_t { None, Bias, Gelu, GeluBias, GeluAuxBias };
void linear_fused(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias, LinearEpilogue epilogue,
                  const Tensor& aux = Tensor());

// layernorm.cu: residual add + layer norm in one pass (not a Backend primitive): sum_out = x + residual
// (rounded to x's dtype) and ln_out = layer_norm(sum_out) with mean/rstd as layer_norm's; the pre-norm
// transformer's "h = h + f(h); y = ln(h)". Same shapes and dtypes as layer_norm, residual/sum_out as x.
void add_layer_norm(const Tensor& sum_out, const Tensor& ln_out, const Tensor& mean, const Tensor& rstd,
                    const Tensor& x, const Tensor& residual, const Tensor& w, const Tensor& b, double eps);

}  // namespace mc::cuda
