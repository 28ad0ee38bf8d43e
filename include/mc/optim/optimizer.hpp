// mc/optim/optimizer.hpp — SGD (momentum, Nesterov), Adam, AdamW and Adamax with parameter groups,
// global-norm gradient clipping, and optimizer state save / load.
//
// Update rules are PyTorch's (torch.optim): Adam adds weight decay to the gradient, AdamW decays the weight
// (w *= 1 - lr * wd) before the Adam update, Adamax uses the infinity norm u = max(b2 * u, |g| + eps).
// The per-element update is one fused backend primitive (adam_step / sgd_step) per parameter tensor.
#pragma once
#include <cmath>
#include <string>

#include "mc/nn/module.hpp"
#include "mc/ops/reduce.hpp"

namespace mc::optim {

using nn::NamedTensors;

struct ParamGroup {
  std::vector<Tensor> params;
  double lr = 1e-3;
  double weight_decay = 0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam family
  double momentum = 0, dampening = 0;             // SGD
  bool nesterov = false;
  std::string name;  // shown in logs
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
    for (auto& g : groups_) {
      MC_CHECK(g.lr >= 0 && g.weight_decay >= 0 && g.eps >= 0, "optimizer: negative lr / weight_decay / eps in group '",
               g.name, "'");
      MC_CHECK(g.beta1 >= 0 && g.beta1 < 1 && g.beta2 >= 0 && g.beta2 < 1, "optimizer: betas must be in [0, 1) in group '",
               g.name, "'");
      for (auto& p : g.params)
        MC_CHECK(p.defined() && p.is_leaf() && is_floating(p.dtype()), "optimizer: parameters must be floating leaf tensors");
      state_.emplace_back(g.params.size());
    }
  }
  virtual ~Optimizer() = default;

  std::vector<ParamGroup>& groups() { return groups_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  virtual void step() = 0;

  void zero_grad() {
    for (auto& g : groups_)
      for (auto& p : g.params) p.set_grad(Tensor());
  }

  // The state as named tensors: per group "group.{i}.lr" etc. (f64 0-d), per parameter
  // "group.{i}.param.{j}.step" (i64) and its buffers. Save it with io::save_safetensors.
  NamedTensors state_dict() const {
    NamedTensors out;
    for (size_t i = 0; i < groups_.size(); ++i) {
      const ParamGroup& g = groups_[i];
      const std::string gp = "group." + std::to_string(i) + ".";
      for (auto [k, v] : group_scalars(g)) out.emplace_back(gp + k, scalar_tensor(v, DType::F64));
      for (size_t j = 0; j < g.params.size(); ++j) {
        const ParamState& s = state_[i][j];
        if (s.step == 0) continue;
        const std::string pp = gp + "param." + std::to_string(j) + ".";
        out.emplace_back(pp + "step", scalar_tensor(double(s.step), DType::I64));
        if (s.a.defined()) out.emplace_back(pp + buffer_names().first, s.a);
        if (s.b.defined()) out.emplace_back(pp + buffer_names().second, s.b);
      }
    }
    return out;
  }

  // Restores a state_dict() of an optimizer built over the same parameters (same groups, same shapes).
  void load_state_dict(const NamedTensors& sd) {
    std::map<std::string, Tensor> m(sd.begin(), sd.end());
    auto get = [&](const std::string& k) -> const Tensor& {
      auto it = m.find(k);
      MC_CHECK(it != m.end(), "optimizer state: missing '", k, "'");
      return it->second;
    };
    for (size_t i = 0; i < groups_.size(); ++i) {
      ParamGroup& g = groups_[i];
      const std::string gp = "group." + std::to_string(i) + ".";
      set_group_scalars(g, [&](const std::string& k) { return get(gp + k).item<double>(); });
      for (size_t j = 0; j < g.params.size(); ++j) {
        ParamState& s = state_[i][j];
        const std::string pp = gp + "param." + std::to_string(j) + ".";
        auto it = m.find(pp + "step");
        if (it == m.end()) {
          s = ParamState();
          continue;
        }
        s.step = it->second.item<int64_t>();
        auto load = [&](const std::string& name, Tensor& dst) {
          auto b = m.find(pp + name);
          if (b == m.end()) return;
          MC_CHECK(b->second.shape() == g.params[j].shape(), "optimizer state: '", pp + name, "' has shape ",
                   shape_str(b->second.shape()), ", parameter has ", shape_str(g.params[j].shape()));
          dst = detail::contiguous_copy(detail::cast(b->second, g.params[j].dtype()).to(g.params[j].device()));
        };
        load(buffer_names().first, s.a);
        load(buffer_names().second, s.b);
      }
    }
  }

 protected:
  struct ParamState {
    int64_t step = 0;
    Tensor a, b;  // exp_avg / exp_avg_sq (Adam), exp_avg / exp_inf (Adamax), momentum_buffer (SGD)
  };
  virtual std::pair<std::string, std::string> buffer_names() const = 0;

  static std::vector<std::pair<std::string, double>> group_scalars(const ParamGroup& g) {
    return {{"lr", g.lr},           {"weight_decay", g.weight_decay}, {"beta1", g.beta1},
            {"beta2", g.beta2},     {"eps", g.eps},                   {"momentum", g.momentum},
            {"dampening", g.dampening}, {"nesterov", g.nesterov ? 1.0 : 0.0}};
  }
  template <class Get>
  static void set_group_scalars(ParamGroup& g, Get get) {
    g.lr = get("lr");
    g.weight_decay = get("weight_decay");
    g.beta1 = get("beta1");
    g.beta2 = get("beta2");
    g.eps = get("eps");
    g.momentum = get("momentum");
    g.dampening = get("dampening");
    g.nesterov = get("nesterov") != 0;
  }

  std::vector<ParamGroup> groups_;
  std::vector<std::vector<ParamState>> state_;
};

class AdamFamily : public Optimizer {
 public:
  AdamFamily(std::vector<ParamGroup> groups, AdamKind kind) : Optimizer(std::move(groups)), kind_(kind) {}
  void step() override {
    NoGradGuard ng;
    for (size_t i = 0; i < groups_.size(); ++i) {
      const ParamGroup& g = groups_[i];
      for (size_t j = 0; j < g.params.size(); ++j) {
        const Tensor& p = g.params[j];
        Tensor grad = p.grad();
        if (!grad.defined()) continue;
        ParamState& s = state_[i][j];
        if (s.step == 0) {
          s.a = zeros_like(p);
          s.b = zeros_like(p);
        }
        ++s.step;
        AdamParams ap{kind_, g.lr, g.beta1, g.beta2, g.eps, g.weight_decay, s.step};
        backend(p.device()).adam_step(p, grad.contiguous(), s.a, s.b, ap);
      }
    }
  }

 protected:
  std::pair<std::string, std::string> buffer_names() const override {
    return {"exp_avg", kind_ == AdamKind::Adamax ? "exp_inf" : "exp_avg_sq"};
  }

 private:
  AdamKind kind_;
};

class Adam : public AdamFamily {
 public:
  explicit Adam(std::vector<ParamGroup> groups) : AdamFamily(std::move(groups), AdamKind::Adam) {}
};
class AdamW : public AdamFamily {
 public:
  explicit AdamW(std::vector<ParamGroup> groups) : AdamFamily(std::move(groups), AdamKind::AdamW) {}
};
class Adamax : public AdamFamily {
 public:
  explicit Adamax(std::vector<ParamGroup> groups) : AdamFamily(std::move(groups), AdamKind::Adamax) {}
};

class SGD : public Optimizer {
 public:
  explicit SGD(std::vector<ParamGroup> groups) : Optimizer(std::move(groups)) {
    for (auto& g : groups_)
      MC_CHECK(!g.nesterov || (g.momentum > 0 && g.dampening == 0),
               "SGD: Nesterov momentum needs momentum > 0 and dampening = 0");
  }
  void step() override {
    NoGradGuard ng;
    for (size_t i = 0; i < groups_.size(); ++i) {
      const ParamGroup& g = groups_[i];
      for (size_t j = 0; j < g.params.size(); ++j) {
        const Tensor& p = g.params[j];
        Tensor grad = p.grad();
        if (!grad.defined()) continue;
        ParamState& s = state_[i][j];
        const bool first = s.step == 0;
        if (first && g.momentum != 0) s.a = zeros_like(p);
        ++s.step;
        SgdParams sp{g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov, first};
        backend(p.device()).sgd_step(p, grad.contiguous(), g.momentum != 0 ? s.a : Tensor(), sp);
      }
    }
  }

 protected:
  std::pair<std::string, std::string> buffer_names() const override { return {"momentum_buffer", "unused"}; }
};

// One group over all trainable parameters of a module, with the given hyper-parameters.
inline ParamGroup group_of(const nn::Module& m, ParamGroup hyper) {
  for (auto& [n, p] : m.named_parameters())
    if (p.requires_grad()) hyper.params.push_back(p);
  return hyper;
}

// Scales all gradients so that their global L2 norm is at most max_norm (torch.nn.utils.clip_grad_norm_:
// coefficient max_norm / (norm + 1e-6), applied only when below 1). Returns the norm before clipping.
inline double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard ng;
  double total = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor g64 = detail::cast(g, DType::F64);
    total += sum(g64 * g64).item<double>();
  }
  total = std::sqrt(total);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1) {
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) mul_(g, coef);
    }
  }
  return total;
}

}  // namespace mc::optim
