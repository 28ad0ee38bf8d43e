// nn: Module names / state_dict / freezing, layers; optim: update rules vs PyTorch, schedules, clipping,
// state round trip; and tiny networks that must train to a low loss.
#include <catch2/catch.hpp>

#include "mc/mc.hpp"

using namespace mc;

namespace {

struct Block : nn::Module {
  std::shared_ptr<nn::Linear> fc1, fc2;
  std::shared_ptr<nn::LayerNorm> norm;
  Block() {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(4, 8));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(8));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(8, 2, false));
  }
};

struct Net : nn::Module {
  std::shared_ptr<Block> block;
  Tensor scale;
  std::shared_ptr<nn::Sequential> head;
  Net() {
    scale = register_parameter("logit_scale", scalar_tensor(2.0));
    block = register_module("block", std::make_shared<Block>());
    head = register_module("head", std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::UnaryModule>>{
        std::make_shared<nn::Linear>(2, 3), nn::ReLU(), std::make_shared<nn::Dropout>(0.1)}));
  }
};

std::vector<std::string> names(const nn::NamedTensors& v) {
  std::vector<std::string> r;
  for (auto& [n, t] : v) r.push_back(n);
  return r;
}

}  // namespace

TEST_CASE("modules name their tensors like PyTorch state_dicts", "[nn]") {
  Net net;
  CHECK(names(net.named_parameters()) ==
        std::vector<std::string>{"logit_scale", "block.fc1.weight", "block.fc1.bias", "block.norm.weight",
                                 "block.norm.bias", "block.fc2.weight", "head.0.weight", "head.0.bias"});
  CHECK(net.num_parameters() == 1 + 32 + 8 + 8 + 8 + 16 + 6 + 3);
  // An inline child (empty name) puts its tensors at the parent's level, as CLIP's text tower.
  nn::Module root;
  root.register_module("", std::make_shared<nn::Linear>(2, 2));
  root.register_module("visual", std::make_shared<nn::Linear>(2, 2, false));
  CHECK(names(root.state_dict()) == std::vector<std::string>{"weight", "bias", "visual.weight"});
  root.register_module("", std::make_shared<nn::Linear>(2, 2));
  CHECK_THROWS_AS(root.state_dict(), Error);  // two tensors named "weight"
  nn::BatchNorm2d bn(3);
  CHECK(names(bn.state_dict()) == std::vector<std::string>{"weight", "bias", "running_mean", "running_var"});
  CHECK(nn::glob_match("block.*.weight", "block.fc1.weight"));
  CHECK(nn::glob_match("*norm*", "block.norm.bias"));
  CHECK(!nn::glob_match("block.fc?.bias", "block.norm.bias"));
  CHECK(net.freeze("block.*") == 5);
  CHECK(net.num_parameters(true) == 1 + 9);
  CHECK(!net.block->fc1->weight.requires_grad());
  CHECK(net.unfreeze("block.fc2.*") == 1);
  CHECK(net.block->fc2->weight.requires_grad());
  net.eval();
  CHECK(!net.head->is_training());
  net.train();
  CHECK(net.block->norm->is_training());
}

TEST_CASE("load_state_dict reports missing, unexpected and mismatched keys", "[nn]") {
  Net a, b;
  nn::NamedTensors sd = a.state_dict();
  b.load_state_dict(sd);
  CHECK(b.block->fc1->weight.to_vector<float>() == a.block->fc1->weight.to_vector<float>());
  CHECK(b.block->fc1->weight.storage() != a.block->fc1->weight.storage());  // copied, not aliased
  nn::NamedTensors bad = sd;
  bad.erase(bad.begin() + 1);                                   // missing block.fc1.weight
  bad.emplace_back("extra.weight", zeros({1}));                 // unexpected
  bad[0].second = zeros({2});                                   // logit_scale has the wrong shape
  Tensor before = b.block->fc1->bias.clone();
  try {
    b.load_state_dict(bad);
    FAIL("strict load accepted a bad state dict");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("block.fc1.weight") != std::string::npos);
    CHECK(m.find("extra.weight") != std::string::npos);
    CHECK(m.find("logit_scale") != std::string::npos);
  }
  CHECK(b.block->fc1->bias.to_vector<float>() == before.to_vector<float>());  // nothing was modified
  nn::LoadReport r = b.load_state_dict(bad, false);
  CHECK(r.missing == std::vector<std::string>{"block.fc1.weight"});
  CHECK(r.unexpected == std::vector<std::string>{"extra.weight"});
  REQUIRE(r.mismatched.size() == 1);
  // dtype conversion on load
  nn::NamedTensors half;
  for (auto& [n, t] : sd) half.emplace_back(n, t.to(DType::BF16));
  b.load_state_dict(half);
  CHECK(b.block->fc1->weight.dtype() == DType::F32);
  b.to(DType::BF16);
  CHECK(b.block->fc1->weight.dtype() == DType::BF16);
  CHECK(b.named_parameters()[1].second.dtype() == DType::BF16);  // the registry sees the change
}

TEST_CASE("layers: shapes, default init, modes", "[nn]") {
  manual_seed(1);
  nn::Linear fc(100, 50);
  const double bound = 1.0 / std::sqrt(100.0);
  CHECK(amax(abs(fc.weight)).item<float>() <= bound);
  CHECK(amax(abs(fc.weight)).item<float>() > 0.9 * bound);
  CHECK(fc(zeros({7, 100})).shape() == Shape{7, 50});
  CHECK_THROWS_AS(fc(zeros({7, 99})), Error);
  nn::Embedding emb(10, 4, 0);
  CHECK(emb.weight.select(0, 0).to_vector<float>() == std::vector<float>{0, 0, 0, 0});
  CHECK(emb(from_vector(std::vector<int64_t>{1, 2}, {2})).shape() == Shape{2, 4});
  nn::Dropout d(0.5);
  Tensor x = ones({100});
  d.eval();
  CHECK(d(x).is_same(x));
  d.train();
  CHECK(!d(x).is_same(x));
}

namespace {
// Three steps on f(p) = sum(c * p^2) + (k + 1) sum(p); the expected values come from torch.optim.
std::vector<float> run_optimizer(const std::function<std::unique_ptr<optim::Optimizer>(Tensor&)>& make) {
  Tensor p = tensor({1.0f, -2.0f, 0.5f}).requires_grad_();
  auto opt = make(p);
  for (int k = 0; k < 3; ++k) {
    opt->zero_grad();
    Tensor loss = sum(p * p * tensor({1, 2, 3})) + sum(p) * double(k + 1);
    loss.backward();
    opt->step();
  }
  return p.to_vector<float>();
}
void check_vec(const std::vector<float>& v, const std::vector<double>& e) {
  REQUIRE(v.size() == e.size());
  for (size_t i = 0; i < v.size(); ++i) CHECK(v[i] == Approx(e[i]).epsilon(1e-5));
}
}  // namespace

TEST_CASE("optimizers match torch.optim", "[optim]") {
  auto group = [](Tensor& p, double lr, double wd) {
    optim::ParamGroup g;
    g.params = {p};
    g.lr = lr;
    g.weight_decay = wd;
    g.beta2 = 0.99;
    g.eps = 1e-6;
    return std::vector<optim::ParamGroup>{g};
  };
  check_vec(run_optimizer([&](Tensor& p) { return std::make_unique<optim::Adam>(group(p, 0.1, 0.01)); }),
            {0.7002472281455994, -1.7046921253204346, 0.1995863914489746});
  check_vec(run_optimizer([&](Tensor& p) { return std::make_unique<optim::AdamW>(group(p, 0.1, 0.1)); }),
            {0.6734980940818787, -1.6487880945205688, 0.187730073928833});
  check_vec(run_optimizer([&](Tensor& p) { return std::make_unique<optim::Adamax>(group(p, 0.1, 0.01)); }),
            {0.7262628078460693, -1.729153037071228, 0.21231228113174438});
  auto sgd = [](Tensor& p, double momentum, double damp, double wd, bool nesterov) {
    optim::ParamGroup g;
    g.params = {p};
    g.lr = 0.05;
    g.momentum = momentum;
    g.dampening = damp;
    g.weight_decay = wd;
    g.nesterov = nesterov;
    return std::make_unique<optim::SGD>(std::vector<optim::ParamGroup>{g});
  };
  check_vec(run_optimizer([&](Tensor& p) { return sgd(p, 0.9, 0.1, 0.01, false); }),
            {0.09065882116556168, -0.586318850517273, -0.4887658953666687});
  check_vec(run_optimizer([&](Tensor& p) { return sgd(p, 0.9, 0, 0, true); }),
            {-0.3164684474468231, -0.34978407621383667, -0.6701319813728333});
  check_vec(run_optimizer([&](Tensor& p) { return sgd(p, 0, 0, 0, false); }),
            {0.44850000739097595, -1.2860000133514404, -0.0729999989271164});
  Tensor q = tensor({1});
  CHECK_THROWS_AS(sgd(q, 0, 0, 0, true), Error);
}

TEST_CASE("gradient clipping by global norm", "[optim]") {
  Tensor p = tensor({0, 0}).requires_grad_(), q = tensor({0}).requires_grad_();
  p.set_grad(tensor({3, 4}));
  q.set_grad(tensor({12}));
  CHECK(optim::clip_grad_norm_({p, q}, 1.0) == Approx(13.0));
  CHECK(p.grad().to_vector<float>()[0] == Approx(0.23076921701431274));
  CHECK(q.grad().item<float>() == Approx(0.923076868057251));
  CHECK(optim::clip_grad_norm_({p, q}, 5.0) == Approx(1.0).epsilon(1e-5));  // below the limit: unchanged
  CHECK(q.grad().item<float>() == Approx(0.923076868057251));
}

TEST_CASE("learning-rate schedules", "[optim]") {
  auto wc = optim::warmup_cosine(110, 10);
  CHECK(wc(0) == 0.0);
  CHECK(wc(5) == Approx(0.5));
  CHECK(wc(10) == Approx(1.0));
  CHECK(wc(60) == Approx(0.5));
  CHECK(wc(110) == Approx(0.0).margin(1e-12));
  CHECK(optim::warmup_cosine(100, 0, 0.1)(100) == Approx(0.1));
  CHECK(optim::step_decay(10, 0.5)(25) == Approx(0.25));
  CHECK(optim::linear_warmup(4, 0.2)(2) == Approx(0.6));
  Tensor p = tensor({1}).requires_grad_();
  optim::ParamGroup g1, g2;
  g1.params = {p};
  g1.lr = 1.0;
  g2.lr = 0.1;
  optim::SGD opt({g1, g2});
  optim::Scheduler s(opt, optim::warmup_cosine(10, 2));
  CHECK(opt.groups()[0].lr == 0.0);
  s.step();
  CHECK(opt.groups()[0].lr == Approx(0.5));
  CHECK(opt.groups()[1].lr == Approx(0.05));
  CHECK_THROWS_AS(optim::warmup_cosine(10, 20), Error);
}

TEST_CASE("optimizer state round trip resumes exactly", "[optim]") {
  auto make = [](Tensor& p) {
    optim::ParamGroup g;
    g.params = {p};
    g.lr = 0.05;
    g.weight_decay = 0.01;
    return std::make_unique<optim::AdamW>(std::vector<optim::ParamGroup>{g});
  };
  auto step = [](Tensor& p, optim::Optimizer& o, int k) {
    o.zero_grad();
    sum(p * p * double(k + 1)).backward();
    o.step();
  };
  Tensor a = tensor({1, -2, 3}).requires_grad_();
  auto oa = make(a);
  for (int k = 0; k < 6; ++k) step(a, *oa, k);
  Tensor b = tensor({1, -2, 3}).requires_grad_();
  auto ob = make(b);
  for (int k = 0; k < 3; ++k) step(b, *ob, k);
  nn::NamedTensors st = ob->state_dict();
  Tensor c = b.detach().clone().requires_grad_();
  auto oc = make(c);
  oc->load_state_dict(st);
  for (int k = 3; k < 6; ++k) step(c, *oc, k);
  CHECK(c.to_vector<float>() == a.to_vector<float>());
  st.pop_back();
  auto od = make(c);
  CHECK_THROWS_AS(od->load_state_dict({}), Error);
}

TEST_CASE("a two-layer MLP learns XOR-like data", "[nn][train]") {
  manual_seed(8464);
  // Points in four clusters; the label is the XOR of the coordinates' signs.
  Generator g(5);
  Tensor x = randn({256, 2}, &g);
  std::vector<float> xv = x.to_vector<float>();
  std::vector<int64_t> yv(256);
  for (size_t i = 0; i < 256; ++i) yv[i] = (xv[2 * i] > 0) != (xv[2 * i + 1] > 0);
  Tensor y = from_vector(yv, {256});
  nn::Sequential mlp({std::make_shared<nn::Linear>(2, 32), nn::ReLU(), std::make_shared<nn::Linear>(32, 2)});
  optim::ParamGroup pg;
  pg.lr = 0.02;
  optim::Adam opt({optim::group_of(mlp, pg)});
  double first = 0, last = 0;
  for (int it = 0; it < 300; ++it) {
    opt.zero_grad();
    Tensor loss = cross_entropy(mlp(x), y);
    loss.backward();
    opt.step();
    if (it == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  CHECK(first > 0.6);
  CHECK(last < 0.1);
  NoGradGuard ng;
  const double acc = mean(eq(argmax(mlp(x), 1), y).to(DType::F32)).item<double>();
  CHECK(acc > 0.97);
}

TEST_CASE("a small CNN learns to tell bars from crosses", "[nn][train]") {
  manual_seed(8464);
  // 8x8 images: a horizontal bar (class 0), a vertical bar (1) or a plus (2) at a random place, plus noise.
  const int64_t n = 96, S = 8;
  Generator g(11);
  std::vector<float> noise = randn({n, S, S}, &g).to_vector<float>(), pos = rand({n, 2}, &g).to_vector<float>();
  std::vector<float> img(size_t(n * S * S));
  std::vector<int64_t> label(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i % 3, cy = 2 + int64_t(pos[size_t(2 * i)] * 4), cx = 2 + int64_t(pos[size_t(2 * i + 1)] * 4);
    label[size_t(i)] = c;
    for (int64_t y = 0; y < S; ++y)
      for (int64_t x = 0; x < S; ++x) {
        const bool h = y == cy && std::abs(x - cx) <= 2, v = x == cx && std::abs(y - cy) <= 2;
        const bool on = c == 0 ? h : c == 1 ? v : (h || v);
        img[size_t((i * S + y) * S + x)] = (on ? 1.0f : 0.0f) + 0.2f * noise[size_t((i * S + y) * S + x)];
      }
  }
  Tensor x = from_vector(img, {n, 1, S, S}), y = from_vector(label, {n});
  nn::Sequential cnn({std::make_shared<nn::Conv2d>(1, 8, 3, 1, 1), std::make_shared<nn::BatchNorm2d>(8), nn::ReLU(),
                      std::make_shared<nn::Lambda>([](const Tensor& t) { return max_pool2d(t, 2); }),
                      std::make_shared<nn::Conv2d>(8, 16, 3, 1, 1), nn::ReLU(),
                      std::make_shared<nn::Lambda>([](const Tensor& t) { return adaptive_avg_pool2d(t, 1, 1).flatten(1); }),
                      std::make_shared<nn::Linear>(16, 3)});
  optim::ParamGroup pg;
  pg.lr = 0.01;
  optim::AdamW opt({optim::group_of(cnn, pg)});
  double first = 0, last = 0;
  for (int it = 0; it < 150; ++it) {
    opt.zero_grad();
    Tensor loss = cross_entropy(cnn(x), y);
    loss.backward();
    opt.step();
    if (it == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  CHECK(first > 0.9);
  CHECK(last < 0.1);
  cnn.eval();  // running statistics from training
  NoGradGuard ng;
  CHECK(mean(eq(argmax(cnn(x), 1), y).to(DType::F32)).item<double>() > 0.95);
}
