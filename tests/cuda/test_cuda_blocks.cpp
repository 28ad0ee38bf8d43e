// Whole blocks and small models on both devices with the same weights (Module::to(Device)): the pre-norm
// transformer block of the ViT / CLIP text / BERT-style encoders (plain, causal, key padding), ResNet
// bottlenecks in training mode (batch statistics and running-stat updates), and short training runs of a
// small ViT and a small ResNet with AdamW / SGD. Outputs, the input gradient, every parameter gradient,
// the buffers and the updated parameters must match the CPU.
#include "cuda_test.hpp"

#include "mc/models/resnet.hpp"
#include "mc/models/vit.hpp"

using namespace mct;

namespace {

// A copy of `cpu` on the GPU: same architecture from `make`, the CPU module's state dict, then to(cuda).
template <class M>
std::shared_ptr<M> gpu_copy(const M& cpu, const std::function<std::shared_ptr<M>()>& make) {
  auto g = make();
  g->load_state_dict(cpu.state_dict());
  g->to(gpu());
  for (auto& [n, t] : g->named_parameters()) REQUIRE(t.device() == gpu());
  for (auto& [n, t] : g->named_buffers()) REQUIRE(t.device() == gpu());
  return g;
}

template <class M>
void check_module(const std::string& name, const std::function<std::shared_ptr<M>()>& make,
                  const std::function<Tensor(M&, const Tensor&)>& fwd, const Tensor& x, double rtol, double grad_rtol,
                  bool training = true) {
  INFO(name);
  auto mc = make();
  auto mg = gpu_copy<M>(*mc, make);
  mc->train(training);
  mg->train(training);

  Tensor xh = detail::contiguous_copy(x), xg = x.to(gpu());
  xh.requires_grad_(true);
  xg.requires_grad_(true);
  Tensor yh = fwd(*mc, xh);
  poison();
  Tensor yg;
  try {
    yg = fwd(*mg, xg);
  } catch (const std::exception& e) {
    FAIL(name << ": CUDA forward threw: " << e.what());
  }
  compare(name + " output", yh, yg, rtol);
  Tensor w = randn_h(yh.shape(), yh.dtype());
  yh.backward(w);
  try {
    yg.backward(w.to(gpu()));
  } catch (const std::exception& e) {
    FAIL(name << ": CUDA backward threw: " << e.what());
  }
  compare(name + " input grad", xh.grad(), xg.grad(), grad_rtol);
  auto ph = mc->named_parameters(), pg = mg->named_parameters();
  REQUIRE(ph.size() == pg.size());
  for (size_t i = 0; i < ph.size(); ++i) {
    REQUIRE(ph[i].first == pg[i].first);
    compare(name + " grad " + ph[i].first, ph[i].second.grad(), pg[i].second.grad(), grad_rtol);
  }
  auto bh = mc->named_buffers(), bg = mg->named_buffers();
  REQUIRE(bh.size() == bg.size());
  for (size_t i = 0; i < bh.size(); ++i) compare(name + " buffer " + bh[i].first, bh[i].second, bg[i].second, rtol);
}

models::BlockConfig block_config(int64_t width, int64_t heads, models::Activation act, models::BlockNaming naming) {
  models::BlockConfig c;
  c.width = width;
  c.heads = heads;
  c.act = act;
  c.naming = naming;
  return c;
}

}  // namespace

TEST_CASE("pre-norm transformer block: forward and every gradient", "[blocks]") {
  using models::ResidualBlock;
  struct C {
    std::string name;
    models::BlockConfig cfg;
    Shape x;
    bool causal, mask;
  };
  const std::vector<C> cases = {
      {"ViT-B/32 block", block_config(768, 12, models::Activation::QuickGelu, models::BlockNaming::OpenAI), {4, 50, 768},
       false, false},
      {"CLIP text block (causal)", block_config(512, 8, models::Activation::QuickGelu, models::BlockNaming::OpenAI),
       {4, 77, 512}, true, false},
      {"timm ViT-B/16 block (gelu)", block_config(768, 12, models::Activation::Gelu, models::BlockNaming::Timm),
       {2, 197, 768}, false, false},
      {"BERT-like block with key padding", block_config(768, 12, models::Activation::Gelu, models::BlockNaming::Timm),
       {3, 64, 768}, false, true},
      {"odd block (width 200, 5 heads of 40, gelu_tanh)",
       block_config(200, 5, models::Activation::GeluTanh, models::BlockNaming::OpenAI), {3, 33, 200}, true, false},
  };
  for (const C& c : cases) {
    auto make = [cfg = c.cfg] {
      manual_seed(11);
      return std::make_shared<ResidualBlock>(cfg);
    };
    Tensor x = randn_h(c.x);
    std::vector<bool> mv;
    for (int64_t b = 0; b < c.x[0]; ++b)
      for (int64_t j = 0; j < c.x[1]; ++j) mv.push_back(j >= c.x[1] - 9 * b);
    Tensor mask_h = from_vector(mv, {c.x[0], c.x[1]});
    const bool causal = c.causal, use_mask = c.mask;
    check_module<ResidualBlock>(
        c.name + " f32", make,
        [causal, use_mask, mask_h](ResidualBlock& m, const Tensor& x) {
          return m.forward(x, causal, use_mask ? mask_h.to(x.device()) : Tensor());
        },
        x, 1e-4, 2e-4);
  }
}

TEST_CASE("pre-norm transformer block in bf16 (coarse)", "[blocks][bf16]") {
  using models::ResidualBlock;
  auto make = [] {
    manual_seed(12);
    auto b = std::make_shared<ResidualBlock>(
        block_config(768, 12, models::Activation::QuickGelu, models::BlockNaming::OpenAI));
    b->to(DType::BF16);
    return b;
  };
  // Many bf16 roundings in a row: only a coarse, normwise agreement is expected.
  check_module<ResidualBlock>("ViT-B/32 block bf16", make,
                              [](ResidualBlock& m, const Tensor& x) { return m.forward(x); },
                              randn_h({4, 50, 768}, DType::BF16), 5e-2, 8e-2);
}

TEST_CASE("ResNet bottlenecks in training mode", "[blocks]") {
  using models::ResNetBottleneck;
  struct C {
    std::string name;
    int64_t inplanes, planes, stride;
    Shape x;
  };
  const std::vector<C> cases = {
      {"bottleneck 256->64->256", 256, 64, 1, {8, 256, 14, 14}},
      {"bottleneck 256->128->512 stride 2 (downsample)", 256, 128, 2, {4, 256, 28, 28}},
      {"bottleneck 64->64->256 (first block, projection)", 64, 64, 1, {4, 64, 21, 21}},
  };
  for (const C& c : cases) {
    for (bool training : {true, false}) {
      auto make = [c] {
        manual_seed(13);
        auto b = std::make_shared<ResNetBottleneck>(c.inplanes, c.planes, c.stride, 1e-5);
        // Non-trivial BN parameters and running statistics (the defaults are 1 / 0).
        NoGradGuard ng;
        for (auto& [n, t] : b->named_parameters())
          if (t.dim() == 1) {
            Tensor h = t;
            uniform_(h, 0.5, 1.5);
          }
        for (auto& [n, t] : b->named_buffers()) {
          Tensor h = t;
          if (n.find("running_var") != std::string::npos) uniform_(h, 0.5, 2.0);
          else normal_(h, 0, 0.1);
        }
        return b;
      };
      check_module<ResNetBottleneck>(
          c.name + (training ? " train" : " eval"), make,
          [](ResNetBottleneck& m, const Tensor& x) { return m.forward(x); }, randn_h(c.x), 1e-4, 2e-4, training);
    }
  }
}

namespace {

// Runs `steps` training steps of `model` on `dev`; returns the losses and the parameters at the end.
template <class M>
std::pair<std::vector<double>, nn::NamedTensors> train_steps(M& model, Device dev, const Tensor& x, const Tensor& y,
                                                             bool adamw, int steps) {
  optim::ParamGroup g = optim::group_of(model, {});
  // eps 1e-3: Adam's update m / (sqrt(v) + eps) would otherwise turn the sign of a near-zero gradient,
  // which rounding may flip, into a full +-lr step.
  g.eps = 1e-3;
  g.lr = adamw ? 1e-3 : 0.05;
  g.weight_decay = 0.01;
  g.momentum = adamw ? 0 : 0.9;
  std::unique_ptr<optim::Optimizer> opt;
  if (adamw) opt.reset(new optim::AdamW({g}));
  else opt.reset(new optim::SGD({g}));
  Tensor xd = x.to(dev), yd = y.to(dev);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    opt->zero_grad();
    if (dev.is_cuda()) poison();
    Tensor loss = cross_entropy(model.forward(xd), yd);
    loss.backward();
    opt->step();
    losses.push_back(loss.template item<double>());
  }
  nn::NamedTensors params;
  for (auto& [n, t] : model.named_parameters()) params.emplace_back(n, t.detach().to(host()));
  return {losses, params};
}

template <class M>
void check_training(const std::string& name, const std::function<std::shared_ptr<M>()>& make, const Tensor& x,
                    const Tensor& y, bool adamw, double rtol) {
  auto mc = make();
  auto mg = gpu_copy<M>(*mc, make);
  auto [lc, pc] = train_steps(*mc, host(), x, y, adamw, 3);
  std::pair<std::vector<double>, nn::NamedTensors> rg;
  try {
    rg = train_steps(*mg, gpu(), x, y, adamw, 3);
  } catch (const std::exception& e) {
    FAIL(name << ": CUDA training threw: " << e.what());
  }
  for (size_t s = 0; s < lc.size(); ++s)
    compare(name + " loss step " + std::to_string(s + 1), full({}, lc[s], DType::F64), full({}, rg.first[s], DType::F64),
            rtol);
  REQUIRE(pc.size() == rg.second.size());
  for (size_t i = 0; i < pc.size(); ++i) compare(name + " param " + pc[i].first, pc[i].second, rg.second[i].second, rtol);
}

}  // namespace

TEST_CASE("short training runs of a small ViT and a small ResNet", "[blocks][train]") {
  models::ViTConfig vc;
  vc.image_size = 64;
  vc.patch_size = 16;
  vc.width = 96;
  vc.layers = 2;
  vc.heads = 4;
  vc.output_dim = 10;
  auto make_vit = [vc] {
    manual_seed(21);
    return std::make_shared<models::VisionTransformer>(vc);
  };
  Tensor x = randn_h({8, 3, 64, 64}), y = randint_h({8}, 0, 10);
  check_training<models::VisionTransformer>("small ViT AdamW", make_vit, x, y, true, 1e-4);

  models::ResNetConfig rc = models::ResNetConfig::depth(18);
  rc.layers = {1, 1, 1, 1};
  rc.width = 16;
  rc.num_classes = 10;
  auto make_resnet = [rc] {
    manual_seed(22);
    return std::make_shared<models::ResNet>(rc);
  };
  check_training<models::ResNet>("small ResNet SGD", make_resnet, randn_h({8, 3, 64, 64}), y, false, 1e-4);
}
