// mc/nn/layers.hpp — the basic layers, with PyTorch's parameter names and default initialisation:
// Linear, Conv2d, BatchNorm2d, LayerNorm, Embedding, Dropout, activations, Sequential; and the hook by
// which Linear and Conv2d carry an adapter (LayerAdapter, Adaptable; LoRA lives in mc/nn/lora.hpp).
#pragma once
#include <cmath>
#include <functional>
#include <memory>
#include <string>

#include "mc/nn/init.hpp"
#include "mc/nn/module.hpp"
#include "mc/ops/conv.hpp"
#include "mc/ops/norm.hpp"

namespace mc::nn {

// A module with one input and one output, so it can sit in a Sequential.
class UnaryModule : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// ---- adapter hook ----
// An additive adapter attached to a layer (LoRA: mc/nn/lora.hpp). The layer's forward passes its input x
// and its own output y through adapt(), which returns y plus the adapter's contribution (or y itself
// when the adapter is merged into the weight). The adapter is registered as an inline child of the
// layer, so its tensors are named under the layer's path and follow train()/eval(), to() and state_dict().
class LayerAdapter : public Module {
 public:
  virtual Tensor adapt(const Tensor& x, const Tensor& y) = 0;
};

// The layers that can carry an adapter (Linear, Conv2d, models::PackedInProjection). Without an adapter
// (the default) the layer computes exactly what it did before.
class Adaptable {
 public:
  virtual ~Adaptable() = default;
  std::shared_ptr<LayerAdapter> adapter;  // null: none
  // The name of the adapted map relative to the module's path: "" (the module itself), or e.g. "in_proj"
  // for a projection registered inline, whose tensors sit at its parent's level.
  std::string adapter_name;
  // Equal blocks packed along the output dimension (3 for a packed q/k/v projection), else 1.
  int64_t packed_outputs = 1;
  // The weight an adapter adds its update to when merged: [out, in] or [out, in/groups, kh, kw].
  virtual Tensor& adaptable_weight() = 0;

 protected:
  Tensor adapted(const Tensor& x, const Tensor& y) { return adapter ? adapter->adapt(x, y) : y; }
};

class Linear : public UnaryModule, public Adaptable {
 public:
  Tensor weight, bias;  // [out, in], [out]
  Linear(int64_t in, int64_t out, bool with_bias = true, Generator* g = nullptr) {
    MC_CHECK(in > 0 && out > 0, "Linear: sizes must be positive (", in, ", ", out, ")");
    weight = register_parameter("weight", empty({out, in}));
    init::kaiming_uniform_(weight, std::sqrt(5.0), g);
    if (with_bias) {
      bias = register_parameter("bias", empty({out}));
      const double bound = 1.0 / std::sqrt(double(in));
      init::uniform_(bias, -bound, bound, g);
    }
  }
  Tensor forward(const Tensor& x) override { return adapted(x, linear(x, weight, bias)); }
  Tensor& adaptable_weight() override { return weight; }
};

class Conv2d : public UnaryModule, public Adaptable {
 public:
  Tensor weight, bias;  // [out, in/groups, kh, kw], [out]
  Conv2dParams params;
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0, int64_t dilation = 1,
         int64_t groups = 1, bool with_bias = true, Generator* g = nullptr) {
    MC_CHECK(in > 0 && out > 0 && kernel > 0 && groups > 0 && in % groups == 0 && out % groups == 0,
             "Conv2d: invalid configuration (in ", in, ", out ", out, ", kernel ", kernel, ", groups ", groups, ")");
    params.stride[0] = params.stride[1] = stride;
    params.padding[0] = params.padding[1] = padding;
    params.dilation[0] = params.dilation[1] = dilation;
    params.groups = groups;
    weight = register_parameter("weight", empty({out, in / groups, kernel, kernel}));
    init::kaiming_uniform_(weight, std::sqrt(5.0), g);
    if (with_bias) {
      bias = register_parameter("bias", empty({out}));
      const double bound = 1.0 / std::sqrt(double(init::fans(weight).first));
      init::uniform_(bias, -bound, bound, g);
    }
  }
  Tensor forward(const Tensor& x) override { return adapted(x, conv2d(x, weight, bias, params)); }
  Tensor& adaptable_weight() override { return weight; }
};

// torch's BatchNorm2d also keeps `num_batches_tracked`, used only when momentum is None (a cumulative
// average, which mc does not offer); mc leaves it out, and checkpoint conversion drops it.
class BatchNorm2d : public UnaryModule {
 public:
  Tensor weight, bias, running_mean, running_var;
  double eps, momentum;
  explicit BatchNorm2d(int64_t channels, double eps_ = 1e-5, double momentum_ = 0.1, bool affine = true)
      : eps(eps_), momentum(momentum_) {
    if (affine) {
      weight = register_parameter("weight", ones({channels}));
      bias = register_parameter("bias", zeros({channels}));
    }
    running_mean = register_buffer("running_mean", zeros({channels}));
    running_var = register_buffer("running_var", ones({channels}));
  }
  Tensor forward(const Tensor& x) override {
    return batch_norm(x, running_mean, running_var, weight, bias, is_training(), momentum, eps);
  }
};

class LayerNorm : public UnaryModule {
 public:
  Tensor weight, bias;
  Shape normalized_shape;
  double eps;
  explicit LayerNorm(Shape shape, double eps_ = 1e-5, bool affine = true) : normalized_shape(std::move(shape)), eps(eps_) {
    if (affine) {
      weight = register_parameter("weight", ones(normalized_shape));
      bias = register_parameter("bias", zeros(normalized_shape));
    }
  }
  explicit LayerNorm(int64_t dim, double eps_ = 1e-5, bool affine = true) : LayerNorm(Shape{dim}, eps_, affine) {}
  Tensor forward(const Tensor& x) override { return layer_norm(x, normalized_shape, weight, bias, eps); }
};

class Embedding : public Module {
 public:
  Tensor weight;  // [num, dim]
  int64_t padding_idx;
  Embedding(int64_t num, int64_t dim, int64_t padding_idx_ = -1, Generator* g = nullptr) : padding_idx(padding_idx_) {
    MC_CHECK(padding_idx < num, "Embedding: padding_idx ", padding_idx, " >= ", num);
    weight = register_parameter("weight", empty({num, dim}));
    init::normal_(weight, 0, 1, g);
    if (padding_idx >= 0) {
      NoGradGuard ng;
      Tensor row = weight.narrow(0, padding_idx, 1);
      fill_(row, 0);
    }
  }
  Tensor forward(const Tensor& ids) { return embedding(ids, weight, padding_idx); }
  Tensor operator()(const Tensor& ids) { return forward(ids); }
};

class Dropout : public UnaryModule {
 public:
  double p;
  explicit Dropout(double p_ = 0.5) : p(p_) { MC_CHECK(p >= 0 && p <= 1, "Dropout: p must be in [0, 1], got ", p); }
  Tensor forward(const Tensor& x) override { return dropout(x, p, is_training()); }
};

// Stateless modules wrapping a function (ReLU, GELU, ...), for Sequential.
class Lambda : public UnaryModule {
 public:
  explicit Lambda(std::function<Tensor(const Tensor&)> f) : f_(std::move(f)) {}
  Tensor forward(const Tensor& x) override { return f_(x); }

 private:
  std::function<Tensor(const Tensor&)> f_;
};
inline std::shared_ptr<Lambda> ReLU() { return std::make_shared<Lambda>([](const Tensor& x) { return relu(x); }); }
inline std::shared_ptr<Lambda> GELU(bool tanh_approx = false) {
  return std::make_shared<Lambda>([tanh_approx](const Tensor& x) { return gelu(x, tanh_approx); });
}
inline std::shared_ptr<Lambda> QuickGELU() { return std::make_shared<Lambda>([](const Tensor& x) { return quick_gelu(x); }); }
inline std::shared_ptr<Lambda> Identity() { return std::make_shared<Lambda>([](const Tensor& x) { return x; }); }

// Children named "0", "1", ... applied in order.
class Sequential : public UnaryModule {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<UnaryModule>> mods) {
    for (auto& m : mods) push_back(m);
  }
  void push_back(std::shared_ptr<UnaryModule> m) {
    register_module(std::to_string(layers_.size()), m);
    layers_.push_back(std::move(m));
  }
  size_t size() const { return layers_.size(); }
  UnaryModule& operator[](size_t i) { return *layers_.at(i); }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& m : layers_) h = m->forward(h);
    return h;
  }

 private:
  std::vector<std::shared_ptr<UnaryModule>> layers_;
};

}  // namespace mc::nn
