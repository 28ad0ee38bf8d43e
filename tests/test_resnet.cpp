// Tests of models/resnet.hpp: torchvision's ResNet and CLIP's ModifiedResNet against the reference code.
//
// Fixtures (tests/fixtures/resnet, written by tools/gen_resnet_fixtures.py): scaled-down models built from
// torchvision's Bottleneck / BasicBlock and open_clip's ModifiedResNet with random weights and non-trivial BN
// running statistics (<name>.pt = torch.save(state_dict)), and reference arrays computed by PyTorch in float64
// (<name>.npz): eval-mode features and outputs, the train-mode output, a few parameter gradients and the BN
// statistics after one train-mode pass. Inputs are recomputed here from their formula.
//
// Metric: relative error = max |mc - ref| / max |ref| over the tensor; required <= 1e-4 in float32.
#include <catch2/catch.hpp>

// GCC 12 reports a false -Wdangling-pointer for the std::vector default member initializer of
// ModifiedResNetConfig when it is inlined here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "mc/io/npy.hpp"
#include "mc/io/torch_load.hpp"
#include "mc/mc.hpp"
#include "mc/models/resnet.hpp"

namespace {

using mc::Shape;
using mc::Tensor;
using mc::models::ModifiedResNet;
using mc::models::ModifiedResNetConfig;
using mc::models::ResNet;
using mc::models::ResNetConfig;

constexpr double kTol = 1e-4;

std::string fixture(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/tests/fixtures/resnet/" + name; }

// The checkpoint's state dict as a converter gives it: BatchNorm's num_batches_tracked dropped.
mc::nn::NamedTensors load_state_dict_file(const std::string& name) {
  mc::nn::NamedTensors out;
  for (auto& [k, t] : mc::io::find_state_dict(mc::io::load_torch(fixture(name + ".pt"))))
    if (k.size() < 20 || k.substr(k.size() - 20) != ".num_batches_tracked") out.emplace_back(k, t);
  return out;
}

// Element i is sin(0.61 * i + 1.3 * seed), rounded to float32 (as the fixture generator).
Tensor pattern(const Shape& shape, int seed) {
  std::vector<float> v(size_t(mc::numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(std::sin(0.61 * double(i) + 1.3 * double(seed)));
  return mc::from_vector(v, shape);
}

Shape shape_of(const Tensor& t) {
  Shape s;
  for (int64_t v : t.to_vector<int64_t>()) s.push_back(v);
  return s;
}

double rel_err(const Tensor& got, const Tensor& ref) {
  REQUIRE(got.defined());
  REQUIRE(got.shape() == ref.shape());
  std::vector<double> a = got.to_vector<double>(), b = ref.to_vector<double>();
  double diff = 0, mag = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    mag = std::max(mag, std::fabs(b[i]));
  }
  return std::isfinite(diff) ? diff / mag : 1e30;
}

void check_close(const std::string& what, const Tensor& got, const Tensor& ref) {
  const double e = rel_err(got, ref);
  INFO(what << ": relative error " << e);
  CHECK(e <= kTol);
}

std::vector<std::string> sorted_keys(const mc::nn::NamedTensors& sd) {
  std::vector<std::string> k;
  for (auto& [n, t] : sd) k.push_back(n);
  std::sort(k.begin(), k.end());
  return k;
}

Tensor find(const mc::nn::NamedTensors& ts, const std::string& name) {
  for (auto& [n, t] : ts)
    if (n == name) return t;
  FAIL("no tensor named " << name);
  return {};
}

// Shared checks for a model and its fixture: names, strict load, eval / train outputs, gradients, statistics.
// `forward` runs the model's forward(); `extra` checks more eval-mode outputs.
using Arrays = std::map<std::string, Tensor>;
template <class Model>
void check_against_reference(Model& model, const std::string& name, const std::string& output_key,
                             const std::function<void(Model&, Arrays&, const Tensor&)>& extra = {}) {
  mc::nn::NamedTensors sd = load_state_dict_file(name);
  Arrays ref = mc::io::load_npz_map(fixture(name + ".npz"));
  CHECK(sorted_keys(model.state_dict()) == sorted_keys(sd));
  REQUIRE(model.load_state_dict(sd, /*strict=*/true).ok());
  const Tensor x = pattern(shape_of(ref.at("input_shape")), 1);

  model.eval();
  {
    mc::NoGradGuard ng;
    check_close(name + " eval features", model.forward_features(x), ref.at("eval_features"));
    check_close(name + " eval output", model.forward(x), ref.at(output_key));
    if (extra) extra(model, ref, x);
  }

  model.train();
  Tensor y = model.forward(x);
  check_close(name + " train output", y, ref.at("train_output"));
  for (auto& [k, t] : ref)  // "running_mean.<bn>" -> buffer "<bn>.running_mean"
    if (k.rfind("running_", 0) == 0) {
      const size_t dot = k.find('.');
      check_close(name + " " + k, find(model.named_buffers(), k.substr(dot + 1) + "." + k.substr(0, dot)), t);
    }
  mc::sum(mc::mul(y, pattern(y.shape(), 2))).backward();
  mc::nn::NamedTensors params = model.named_parameters();
  for (auto& [k, t] : ref)
    if (k.rfind("grad.", 0) == 0) check_close(name + " " + k, find(params, k.substr(5)).grad(), t);
  for (auto& [n, p] : params) {
    INFO(name << ": gradient of " << n);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().shape() == p.shape());
  }
}

}  // namespace

TEST_CASE("resnet: torchvision Bottleneck ResNet matches torchvision", "[resnet]") {
  ResNetConfig c;
  c.block = "bottleneck";
  c.layers = {1, 2, 1, 1};
  c.width = 2;
  c.num_classes = 3;
  ResNet model(c);
  CHECK(model.out_channels() == 64);
  check_against_reference<ResNet>(model, "tv_bottleneck", "eval_output");
}

TEST_CASE("resnet: torchvision BasicBlock ResNet without fc matches torchvision", "[resnet]") {
  ResNetConfig c;
  c.block = "basic";
  c.layers = {2, 1, 1, 1};
  c.width = 2;
  ResNet model(c);
  CHECK(model.out_channels() == 16);
  check_against_reference<ResNet>(model, "tv_basic", "eval_output");
}

TEST_CASE("resnet: CLIP ModifiedResNet matches open_clip (heads 4 and 2)", "[resnet]") {
  ModifiedResNetConfig c;
  c.layers = {1, 2, 1, 1};
  c.width = 4;
  c.heads = 4;
  c.output_dim = 32;
  c.image_size = 64;
  ModifiedResNet model(c);
  CHECK(model.feature_channels() == 128);
  check_against_reference<ModifiedResNet>(
      model, "clip_modified", "eval_output_h4", [](ModifiedResNet& m, Arrays& ref, const Tensor& x) {
        m.attnpool->num_heads = 2;  // the weights do not depend on the head count
        check_close("clip_modified eval output, 2 heads", m.forward(x), ref.at("eval_output_h2"));
        m.attnpool->num_heads = 4;
        const Tensor odd = pattern(shape_of(ref.at("input_shape_odd")), 3);
        check_close("clip_modified eval features, odd-sized input", m.forward_features(odd),
                    ref.at("eval_features_odd"));
      });
}

namespace {

// Parameter counts by formula, checked against the reference models at full size (from torchvision /
// open_clip) and against the built modules at small widths (building full-size towers is slow here).
int64_t count_resnet(const ResNetConfig& c) {
  const int64_t e = c.block == "basic" ? 1 : 4;
  int64_t n = 3 * c.width * 49 + 2 * c.width, in = c.width;
  for (int k = 0; k < 4; ++k) {
    const int64_t p = c.width << k;
    for (int64_t i = 0; i < c.layers[size_t(k)]; ++i) {
      n += e == 1 ? in * p * 9 + p * p * 9 + 4 * p : in * p + p * p * 9 + p * p * e + 4 * p + 2 * p * e;
      if (i == 0 && (k > 0 || in != p * e)) n += in * p * e + 2 * p * e;
      in = p * e;
    }
  }
  return n + (c.num_classes > 0 ? in * c.num_classes + c.num_classes : 0);
}
int64_t count_modified(const ModifiedResNetConfig& c) {
  const int64_t w = c.width, h = w / 2, C = w * 32, S = c.image_size / 32;
  int64_t n = 3 * h * 9 + h * h * 9 + h * w * 9 + 2 * (h + h + w), in = w;
  for (int k = 0; k < 4; ++k) {
    const int64_t p = w << k;
    for (int64_t i = 0; i < c.layers[size_t(k)]; ++i) {
      n += in * p + p * p * 9 + p * 4 * p + 2 * (p + p + 4 * p);
      if (i == 0) n += in * 4 * p + 2 * 4 * p;  // every layer's first block has a downsample
      in = 4 * p;
    }
  }
  return n + (S * S + 1) * C + 3 * (C * C + C) + C * c.output_dim + c.output_dim;
}

}  // namespace

TEST_CASE("resnet: configurations have the reference sizes and names", "[resnet]") {
  CHECK(count_resnet(ResNetConfig::depth(50)) == 23508032);  // torchvision resnet50 without fc
  CHECK(count_resnet(ResNetConfig::depth(18)) == 11176512);  // torchvision resnet18 without fc
  ResNetConfig r50fc = ResNetConfig::depth(50);
  r50fc.num_classes = 1000;
  CHECK(count_resnet(r50fc) == 25557032);  // torchvision resnet50
  ModifiedResNetConfig pmc;
  pmc.output_dim = 768;
  CHECK(count_modified(pmc) == 37792352);  // open_clip ModifiedResNet RN50, output 768 (PMC-CLIP)
  ModifiedResNetConfig rn50;
  CHECK(count_modified(rn50) == 38316896);  // open_clip RN50, output 1024

  CHECK_THROWS_WITH(ResNetConfig::depth(20), Catch::Contains("unknown depth 20"));
  CHECK(ResNetConfig::depth(34).block == "basic");
  CHECK(ResNetConfig::depth(34).layers == std::vector<int64_t>{3, 4, 6, 3});
  CHECK(ResNetConfig::depth(101).layers == std::vector<int64_t>{3, 4, 23, 3});
  CHECK(ResNetConfig::depth(152).layers == std::vector<int64_t>{3, 8, 36, 3});

  // Full depth, small width: same module tree as the real towers.
  for (int depth : {18, 50}) {
    ResNetConfig c = ResNetConfig::depth(depth);
    c.width = 2;
    ResNet r(c);
    CHECK(r.num_parameters() == count_resnet(c));
    CHECK(r.out_channels() == (depth == 18 ? 16 : 64));
    CHECK(r.state_dict().size() == (depth == 18 ? 100u : 265u));  // torchvision's keys without fc
  }
  ModifiedResNetConfig mc50;
  mc50.width = 2;
  mc50.heads = 4;
  ModifiedResNet m(mc50);
  CHECK(m.num_parameters() == count_modified(mc50));
  CHECK(m.feature_channels() == 64);
  CHECK(m.state_dict().size() == 284u);  // open_clip RN50's keys without num_batches_tracked
  CHECK(find(m.named_parameters(), "attnpool.positional_embedding").shape() == Shape{50, 64});
  CHECK(find(m.named_parameters(), "layer4.0.downsample.0.weight").shape() == Shape{64, 32, 1, 1});
  CHECK(find(m.named_buffers(), "layer4.0.downsample.1.running_var").shape() == Shape{64});
  CHECK(find(m.named_parameters(), "layer3.5.bn3.weight").shape() == Shape{32});
}

TEST_CASE("resnet: bad inputs and configurations give clear errors", "[resnet]") {
  ResNetConfig c;
  c.block = "basic";
  c.layers = {1, 1, 1, 1};
  c.width = 2;
  ResNet r(c);
  r.eval();
  CHECK_THROWS_WITH(r.forward(mc::zeros({1, 4, 32, 32})), Catch::Contains("3 (RGB) channels, got 4"));
  CHECK_THROWS_WITH(r.forward(mc::zeros({3, 32, 32})), Catch::Contains("[B, 3, H, W]"));
  CHECK_THROWS_WITH(r.forward(mc::zeros({1, 3, 32, 32}, mc::DType::I64)), Catch::Contains("must be floating"));

  ModifiedResNetConfig mc_;
  mc_.layers = {1, 1, 1, 1};
  mc_.width = 4;
  mc_.heads = 2;
  mc_.output_dim = 8;
  mc_.image_size = 64;
  ModifiedResNet m(mc_);
  m.eval();
  CHECK(m.forward(mc::zeros({1, 3, 64, 64})).shape() == Shape{1, 8});
  CHECK_THROWS_WITH(m.forward(mc::zeros({1, 1, 64, 64})), Catch::Contains("3 (RGB) channels, got 1"));
  // A 32x32 image gives a 1x1 grid, but the positional embedding has 2x2 positions.
  CHECK_THROWS_WITH(m.forward(mc::zeros({1, 3, 32, 32})),
                    Catch::Contains("1x1 feature grid") && Catch::Contains("positional_embedding has 4"));
  CHECK_THROWS_WITH(m.forward_features(mc::zeros({1, 3, 16, 16})), Catch::Contains("too small"));
  CHECK_THROWS_WITH(m.attnpool->forward(mc::zeros({1, 128, 3, 3})), Catch::Contains("gives 10 tokens"));

  auto bad_resnet = [](auto edit) {
    ResNetConfig b;
    edit(b);
    ResNet x(b);
  };
  CHECK_THROWS_WITH(bad_resnet([](ResNetConfig& b) { b.block = "wide"; }), Catch::Contains("block must be"));
  CHECK_THROWS_WITH(bad_resnet([](ResNetConfig& b) { b.layers = {2, 2, 2}; }), Catch::Contains("4 block counts"));
  CHECK_THROWS_WITH(bad_resnet([](ResNetConfig& b) { b.layers = {2, 0, 2, 2}; }),
                    Catch::Contains("at least one block"));
  auto bad_modified = [](auto edit) {
    ModifiedResNetConfig b;
    b.width = 4;
    edit(b);
    ModifiedResNet x(b);
  };
  CHECK_THROWS_WITH(bad_modified([](ModifiedResNetConfig& b) { b.heads = 3; }), Catch::Contains("divide embed_dim"));
  CHECK_THROWS_WITH(bad_modified([](ModifiedResNetConfig& b) { b.width = 5; }), Catch::Contains("even"));
  CHECK_THROWS_WITH(bad_modified([](ModifiedResNetConfig& b) { b.image_size = 16; }), Catch::Contains("at least 32"));

  // A checkpoint with a missing key does not load strictly.
  mc::nn::NamedTensors sd = load_state_dict_file("tv_basic");
  sd.pop_back();
  ResNetConfig tb = c;
  tb.layers = {2, 1, 1, 1};
  ResNet t(tb);
  CHECK_THROWS_WITH(t.load_state_dict(sd), Catch::Contains("missing keys"));
}
