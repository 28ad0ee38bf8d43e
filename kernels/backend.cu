// kernels/backend.cu — the CUDA Backend: routes each primitive to its kernel family (kernels.cuh).
#include "kernels.cuh"

namespace mc::cuda {

class CudaBackend final : public Backend {
 public:
  void copy(const Tensor& d, const Tensor& s) override { cuda::copy(d, s); }
  void fill(const Tensor& d, double v) override { cuda::fill(d, v); }
  void unary(UnaryOp op, const Tensor& o, const Tensor& x, double a, double b) override { cuda::unary(op, o, x, a, b); }
  void binary(BinaryOp op, const Tensor& o, const Tensor& a, const Tensor& b) override { cuda::binary(op, o, a, b); }
  void where(const Tensor& o, const Tensor& c, const Tensor& a, const Tensor& b) override { cuda::where(o, c, a, b); }
  void reduce(ReduceOp op, const Tensor& o, const Tensor& x) override { cuda::reduce(op, o, x); }
  void arg_reduce(bool mx, const Tensor& o, const Tensor& x, int d) override { cuda::arg_reduce(mx, o, x, d); }
  void matmul(const Tensor& o, const Tensor& a, const Tensor& b) override { cuda::matmul(o, a, b); }
  void softmax(const Tensor& o, const Tensor& x, bool log) override { cuda::softmax(o, x, log); }
  void softmax_backward(const Tensor& gx, const Tensor& gy, const Tensor& y, bool log) override {
    cuda::softmax_backward(gx, gy, y, log);
  }
  void layer_norm(const Tensor& o, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& w,
                  const Tensor& b, double eps) override {
    cuda::layer_norm(o, mean, rstd, x, w, b, eps);
  }
  void layer_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                           const Tensor& w, const Tensor& mean, const Tensor& rstd) override {
    cuda::layer_norm_backward(gx, gw, gb, gy, x, w, mean, rstd);
  }
  void batch_norm(const Tensor& o, const Tensor& sm, const Tensor& sr, const Tensor& x, const Tensor& w,
                  const Tensor& b, const Tensor& rm, const Tensor& rv, bool training, double momentum,
                  double eps) override {
    cuda::batch_norm(o, sm, sr, x, w, b, rm, rv, training, momentum, eps);
  }
  void batch_norm_backward(const Tensor& gx, const Tensor& gw, const Tensor& gb, const Tensor& gy, const Tensor& x,
                           const Tensor& w, const Tensor& sm, const Tensor& sr, bool training) override {
    cuda::batch_norm_backward(gx, gw, gb, gy, x, w, sm, sr, training);
  }
  void conv2d(const Tensor& o, const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) override {
    cuda::conv2d(o, x, w, b, p);
  }
  void conv2d_backward_input(const Tensor& gx, const Tensor& gy, const Tensor& w, const Conv2dParams& p) override {
    cuda::conv2d_backward_input(gx, gy, w, p);
  }
  void conv2d_backward_weight(const Tensor& gw, const Tensor& gy, const Tensor& x, const Conv2dParams& p) override {
    cuda::conv2d_backward_weight(gw, gy, x, p);
  }
  void max_pool2d(const Tensor& o, const Tensor& i, const Tensor& x, const Pool2dParams& p) override {
    cuda::max_pool2d(o, i, x, p);
  }
  void max_pool2d_backward(const Tensor& gx, const Tensor& gy, const Tensor& i) override {
    cuda::max_pool2d_backward(gx, gy, i);
  }
  void avg_pool2d(const Tensor& o, const Tensor& x, const Pool2dParams& p) override { cuda::avg_pool2d(o, x, p); }
  void avg_pool2d_backward(const Tensor& gx, const Tensor& gy, const Pool2dParams& p) override {
    cuda::avg_pool2d_backward(gx, gy, p);
  }
  void adaptive_avg_pool2d(const Tensor& o, const Tensor& x) override { cuda::adaptive_avg_pool2d(o, x); }
  void adaptive_avg_pool2d_backward(const Tensor& gx, const Tensor& gy) override {
    cuda::adaptive_avg_pool2d_backward(gx, gy);
  }
  void index_select(const Tensor& o, const Tensor& x, int d, const Tensor& i) override { cuda::index_select(o, x, d, i); }
  void index_add(const Tensor& o, int d, const Tensor& i, const Tensor& s) override { cuda::index_add(o, d, i, s); }
  void gather(const Tensor& o, const Tensor& x, int d, const Tensor& i) override { cuda::gather(o, x, d, i); }
  void scatter_add(const Tensor& o, int d, const Tensor& i, const Tensor& s) override { cuda::scatter_add(o, d, i, s); }
  void attention(const Tensor& o, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionParams& p) override {
    cuda::attention(o, lse, q, k, v, p);
  }
  void attention_backward(const Tensor& gq, const Tensor& gk, const Tensor& gv, const Tensor& go, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                          const AttentionParams& p) override {
    cuda::attention_backward(gq, gk, gv, go, q, k, v, o, lse, p);
  }
  void random(const Tensor& o, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) override {
    cuda::random(o, kind, seed, offset, a, b);
  }
  void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamParams& a) override {
    cuda::adam_step(p, g, m, v, a);
  }
  void sgd_step(const Tensor& p, const Tensor& g, const Tensor& b, const SgdParams& s) override {
    cuda::sgd_step(p, g, b, s);
  }
  void adam_step_multi(const std::vector<Tensor>& p, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                       const std::vector<Tensor>& v, const AdamParams& a) override {
    cuda::adam_step_multi(p, g, m, v, a);
  }
  void sgd_step_multi(const std::vector<Tensor>& p, const std::vector<Tensor>& g, const std::vector<Tensor>& b,
                      const SgdParams& s) override {
    cuda::sgd_step_multi(p, g, b, s);
  }
};

Backend& backend(int device) {
  MC_CHECK(device == 0, "cuda:", device, ": mc's CUDA backend drives one GPU (cuda:0)");
  static CudaBackend b;
  return b;
}

}  // namespace mc::cuda
