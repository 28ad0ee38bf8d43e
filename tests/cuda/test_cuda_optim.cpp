// CUDA optimizer updates against the CPU: several steps of Adam, AdamW, Adamax and SGD (momentum,
// dampening, Nesterov, weight decay) over parameters of odd sizes (an empty one included), f32 and bf16;
// after every step the parameters, their change since the start, and the optimizer state must match. Also
// gradient clipping by global norm.
#include "cuda_test.hpp"

using namespace mct;

namespace {

const std::vector<Shape> kParamShapes = {{1}, {7}, {129, 3}, {1031}, {768, 768}, {3, 0}, {2304}};

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>)>;

// Runs `steps` updates on `dev`; returns the parameters after each step, then the final state tensors.
std::vector<std::vector<Tensor>> run_steps(Device dev, const std::vector<Tensor>& init,
                                           const std::vector<std::vector<Tensor>>& grads_per_step, const MakeOpt& make) {
  std::vector<Tensor> params;
  for (const Tensor& p : init) {
    Tensor t = detail::contiguous_copy(p).to(dev);
    t.requires_grad_(true);
    params.push_back(t);
  }
  auto opt = make(params);
  std::vector<std::vector<Tensor>> out;
  for (size_t s = 0; s < grads_per_step.size(); ++s) {
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor& g = grads_per_step[s][i];
      params[i].set_grad(g.defined() ? detail::contiguous_copy(g).to(dev) : Tensor());
    }
    if (dev.is_cuda()) poison();
    opt->step();
    std::vector<Tensor> snap;
    for (const Tensor& p : params) snap.push_back(detail::contiguous_copy(p.detach()).to(host()));  // a copy
    out.push_back(snap);
  }
  std::vector<Tensor> state;
  for (auto& [name, t] : opt->state_dict()) state.push_back(t.to(host()));
  out.push_back(state);
  return out;
}

void check_optimizer(const std::string& name, DType dt, const MakeOpt& make, int steps = 5) {
  std::vector<Tensor> init;
  for (const Shape& s : kParamShapes) init.push_back(randn_h(s, dt));
  std::vector<std::vector<Tensor>> gs;
  for (int k = 0; k < steps; ++k) {
    std::vector<Tensor> g;
    for (size_t i = 0; i < kParamShapes.size(); ++i)
      g.push_back(k == 2 && i == 1 ? Tensor() : randn_h(kParamShapes[i], dt, 0, 0.5 + 0.1 * k));  // one skipped grad
    gs.push_back(g);
  }
  auto c = run_steps(host(), init, gs, make);
  decltype(c) g;
  try {
    g = run_steps(gpu(), init, gs, make);
  } catch (const std::exception& e) {
    FAIL_CHECK(name << " " << dtype_name(dt) << ": CUDA run threw: " << e.what());
    return;
  }
  for (int k = 0; k < steps; ++k) {
    for (size_t i = 0; i < init.size(); ++i) {
      const std::string what = name + " " + dtype_name(dt) + " step " + std::to_string(k + 1) + " param " +
                                shape_str(kParamShapes[i]);
      compare(what, c[size_t(k)][i], g[size_t(k)][i]);
      if (dt == DType::F32) {
        // The change since the start, in f64: an update error far below the parameter's size still shows.
        Tensor dc = detail::cast(c[size_t(k)][i], DType::F64) - detail::cast(init[i], DType::F64);
        Tensor dg = detail::cast(g[size_t(k)][i], DType::F64) - detail::cast(init[i], DType::F64);
        // 1e-3: the CPU reference is compiled with FMA contraction, which changes the update of the rare
        // element whose second moment is near eps^2 by up to ~1e-3 of the update's rms (seen on an H200).
        compare(what + " delta", dc, dg, 1e-3);
      }
    }
  }
  const auto& cs = c.back();
  const auto& gsd = g.back();
  REQUIRE(cs.size() == gsd.size());
  // bf16 moments round to 8 bits every step; a rounding that falls the other way (FMA contraction on the
  // CPU) is carried into the next steps: a few elements in a million differ by up to ~3% of the rms.
  const double state_rtol = dt == DType::BF16 ? 3e-2 : -1;
  for (size_t i = 0; i < cs.size(); ++i)
    compare(name + " " + dtype_name(dt) + " state " + std::to_string(i), cs[i], gsd[i], state_rtol);
}

optim::ParamGroup group(std::vector<Tensor> params, double lr, double wd) {
  optim::ParamGroup g;
  g.params = std::move(params);
  g.lr = lr;
  g.weight_decay = wd;
  return g;
}

}  // namespace

TEST_CASE("Adam, AdamW and Adamax steps", "[optim]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (double wd : {0.0, 0.05}) {
      const std::string tag = " wd " + std::to_string(wd);
      check_optimizer("Adam" + tag, dt, [wd](std::vector<Tensor> p) {
        return std::unique_ptr<optim::Optimizer>(new optim::Adam({group(std::move(p), 1e-2, wd)}));
      });
      check_optimizer("AdamW" + tag, dt, [wd](std::vector<Tensor> p) {
        auto g = group(std::move(p), 1e-2, wd);
        g.beta1 = 0.8;
        g.beta2 = 0.98;
        g.eps = 1e-6;
        return std::unique_ptr<optim::Optimizer>(new optim::AdamW({g}));
      });
      check_optimizer("Adamax" + tag, dt, [wd](std::vector<Tensor> p) {
        return std::unique_ptr<optim::Optimizer>(new optim::Adamax({group(std::move(p), 2e-2, wd)}));
      });
    }
  }
}

TEST_CASE("SGD steps: momentum, dampening, Nesterov, weight decay", "[optim]") {
  struct V {
    double momentum, dampening, wd;
    bool nesterov;
  };
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const V& v : {V{0, 0, 0, false}, V{0.9, 0, 0, false}, V{0.9, 0.1, 0.01, false}, V{0.9, 0, 0.01, true}}) {
      const std::string tag = "SGD m " + std::to_string(v.momentum) + " d " + std::to_string(v.dampening) + " wd " +
                              std::to_string(v.wd) + (v.nesterov ? " nesterov" : "");
      check_optimizer(tag, dt, [v](std::vector<Tensor> p) {
        auto g = group(std::move(p), 0.05, v.wd);
        g.momentum = v.momentum;
        g.dampening = v.dampening;
        g.nesterov = v.nesterov;
        return std::unique_ptr<optim::Optimizer>(new optim::SGD({g}));
      });
    }
  }
}

TEST_CASE("gradient clipping by global norm", "[optim]") {
  std::vector<Tensor> gs;
  for (const Shape& s : kParamShapes) gs.push_back(randn_h(s, DType::F32, 0, 3));
  for (double max_norm : {1.0, 1e6}) {
    auto run = [&](Device dev) {
      std::vector<Tensor> ps;
      for (size_t i = 0; i < gs.size(); ++i) {
        Tensor p = zeros(kParamShapes[i], DType::F32, dev);
        p.requires_grad_(true);
        p.set_grad(detail::contiguous_copy(gs[i]).to(dev));  // clipping scales it in place
        ps.push_back(p);
      }
      const double n = optim::clip_grad_norm_(ps, max_norm);
      std::vector<Tensor> r{full({}, n, DType::F64)};
      for (auto& p : ps) r.push_back(p.grad().to(host()));
      return r;
    };
    auto c = run(host()), g = run(gpu());
    for (size_t i = 0; i < c.size(); ++i)
      compare("clip_grad_norm_ max " + std::to_string(max_norm) + " tensor " + std::to_string(i), c[i], g[i],
              i == 0 ? 1e-10 : 1e-5);
  }
}
