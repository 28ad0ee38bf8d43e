// mc/optim/optimizer.hpp — SGD (momentum, Nesterov), Adam, AdamW and Adamax with parameter groups,
// global-norm gradient clipping, and optimizer state save / load.
//
// Update rules are PyTorch's (torch.optim): Adam adds weight decay to the gradient, AdamW decays the weight
// (w *= 1 - lr * wd) before the Adam update, Adamax uses the infinity norm u = max(b2 * u, |g| + eps).
// The per-element update is a fused backend primitive: each step gathers the parameters that share a
// device, a dtype and identical hyper-parameters (step count included) and updates them with one
// adam_step_multi / sgd_step_multi call (a few kernel launches on the GPU instead of one per tensor).
#pragma once
#include <algorithm>
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

  // Calls f(group, param, contiguous grad, state) for every parameter that has a gradient, without
  // recording autograd.
  template <class F>
  void for_each_update(F&& f) {
    NoGradGuard ng;
    for (size_t i = 0; i < groups_.size(); ++i) {
      const ParamGroup& g = groups_[i];
      for (size_t j = 0; j < g.params.size(); ++j) {
        const Tensor& p = g.params[j];
        Tensor grad = p.grad();
        if (grad.defined()) f(g, p, grad.contiguous(), state_[i][j]);
      }
    }
  }

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
    struct Batch {
      Device device;
      DType dtype;
      AdamParams ap;
      std::vector<Tensor> p, g, m, v;
    };
    std::vector<Batch> batches;
    for_each_update([&](const ParamGroup& g, const Tensor& p, const Tensor& grad, ParamState& s) {
      if (s.step == 0) {
        s.a = zeros_like(p);
        s.b = zeros_like(p);
      }
      ++s.step;
      const AdamParams ap{kind_, g.lr, g.beta1, g.beta2, g.eps, g.weight_decay, s.step};
      auto same = [&](const Batch& b) {
        return b.device == p.device() && b.dtype == p.dtype() && b.ap.lr == ap.lr && b.ap.beta1 == ap.beta1 &&
               b.ap.beta2 == ap.beta2 && b.ap.eps == ap.eps && b.ap.weight_decay == ap.weight_decay &&
               b.ap.step == ap.step;
      };
      auto it = std::find_if(batches.begin(), batches.end(), same);
      Batch& b = it != batches.end() ? *it : batches.emplace_back(Batch{p.device(), p.dtype(), ap, {}, {}, {}, {}});
      b.p.push_back(p);
      b.g.push_back(grad);
      b.m.push_back(s.a);
      b.v.push_back(s.b);
    });
    NoGradGuard ng;
    for (const Batch& b : batches) backend(b.device).adam_step_multi(b.p, b.g, b.m, b.v, b.ap);
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
    struct Batch {
      Device device;
      DType dtype;
      SgdParams sp;
      std::vector<Tensor> p, g, buf;
    };
    std::vector<Batch> batches;
    for_each_update([&](const ParamGroup& g, const Tensor& p, const Tensor& grad, ParamState& s) {
      const bool first = s.step == 0;
      if (first && g.momentum != 0) s.a = zeros_like(p);
      ++s.step;
      const SgdParams sp{g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov, first};
      auto same = [&](const Batch& b) {
        return b.device == p.device() && b.dtype == p.dtype() && b.sp.lr == sp.lr && b.sp.momentum == sp.momentum &&
               b.sp.dampening == sp.dampening && b.sp.weight_decay == sp.weight_decay &&
               b.sp.nesterov == sp.nesterov && b.sp.first_step == sp.first_step;
      };
      auto it = std::find_if(batches.begin(), batches.end(), same);
      Batch& b = it != batches.end() ? *it : batches.emplace_back(Batch{p.device(), p.dtype(), sp, {}, {}, {}});
      b.p.push_back(p);
      b.g.push_back(grad);
      b.buf.push_back(g.momentum != 0 ? s.a : Tensor());
    });
    NoGradGuard ng;
    for (const Batch& b : batches) backend(b.device).sgd_step_multi(b.p, b.g, b.buf, b.sp);
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
  // The squares are summed where the gradients live and read back once (one device sync, not one each).
  Tensor acc;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor g64 = detail::cast(g, DType::F64);
    Tensor s = sum(g64 * g64);
    acc = !acc.defined() ? s : acc + (s.device() == acc.device() ? s : s.to(acc.device()));
  }
  const double total = acc.defined() ? std::sqrt(acc.item<double>()) : 0.0;
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
