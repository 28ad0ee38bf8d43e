// LoRA (nn/lora.hpp): fresh adapters change nothing; merge / unmerge against the unmerged forward; which
// parameters train; gradients (gradcheck); peft names and the safetensors round trip; errors; the
// parameter count of a ViT-B/32-sized tower.
#include <catch2/catch.hpp>

// GCC 12 reports a false -Wdangling-pointer for the std::vector default member initializers of the
// ResNet configs when they are inlined here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "mc/mc.hpp"
#include "mc/models/resnet.hpp"
#include "mc/models/vit.hpp"
#include "mc/nn/lora.hpp"

using namespace mc;

namespace {

models::ViTConfig tiny_vit(const std::string& variant) {
  models::ViTConfig c;
  c.variant = variant;
  c.image_size = 16;
  c.patch_size = 8;
  c.width = 16;
  c.layers = 2;
  c.heads = 2;
  c.output_dim = variant == "openai" ? 8 : 0;
  c.act = variant == "openai" ? "quick_gelu" : "gelu";
  return c;
}

models::ResNetConfig tiny_resnet() {
  models::ResNetConfig c;
  c.block = "bottleneck";
  c.layers = {1, 1, 1, 1};
  c.width = 4;
  return c;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

double max_abs(const Tensor& a) {
  double m = 0;
  for (double v : a.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

bool same_values(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<float>() == b.to_vector<float>();
}

// Copies of every tensor of a state dict (the live handles change in place when merging).
nn::NamedTensors snapshot(const nn::Module& m) {
  nn::NamedTensors out;
  for (auto& [n, t] : m.state_dict()) out.emplace_back(n, t.detach().clone());
  return out;
}

// Gives every adapter a random B (fresh ones are zero) so that the adapters change the outputs.
void randomize_B(nn::Module& m, double std_) {
  for (auto& [path, a] : nn::lora_adapters(m)) nn::init::normal_(a->lora_B, 0, std_);
}

nn::LoraConfig config(std::vector<std::string> targets, int64_t r = 4, double alpha = 8) {
  nn::LoraConfig c;
  c.r = r;
  c.alpha = alpha;
  c.targets = std::move(targets);
  return c;
}

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("mc_test_lora_" + name)).string();
}

}  // namespace

TEST_CASE("lora: fresh adapters leave the outputs unchanged", "[lora]") {
  manual_seed(11);
  SECTION("Linear") {
    auto lin = std::make_shared<nn::Linear>(6, 5);
    Tensor x = randn({3, 6});
    Tensor before = lin->forward(x);
    REQUIRE(nn::apply_lora(*lin, config({"*"})) == 1);
    CHECK(same_values(lin->forward(x), before));
    CHECK(max_abs(lin->forward(x)) > 0);
  }
  SECTION("Conv2d, stride 2, padding 1") {
    auto conv = std::make_shared<nn::Conv2d>(3, 4, 3, 2, 1);
    Tensor x = randn({2, 3, 9, 9});
    Tensor before = conv->forward(x);
    REQUIRE(nn::apply_lora(*conv, config({"*"})) == 1);
    Tensor after = conv->forward(x);
    CHECK(after.shape() == Shape{2, 4, 5, 5});
    CHECK(same_values(after, before));
  }
  SECTION("ViT, openai and timm") {
    for (std::string variant : {"openai", "timm"}) {
      models::VisionTransformer vit(tiny_vit(variant));
      vit.eval();
      Tensor x = randn({2, 3, 16, 16});
      Tensor before = vit.forward(x);
      CHECK(nn::apply_lora(vit, config({"*"})) > 0);  // every linear, the packed projections, the patch conv
      CHECK(same_values(vit.forward(x), before));
    }
  }
  SECTION("ResNet") {
    models::ResNet net(tiny_resnet());
    net.eval();
    Tensor x = randn({2, 3, 32, 32});
    Tensor before = net.forward(x);
    CHECK(nn::apply_lora(net, config({"layer*.conv*", "conv1", "layer*.downsample.0"})) == 12 + 1 + 4);
    CHECK(same_values(net.forward(x), before));
  }
}

TEST_CASE("lora: merge equals the unmerged forward, unmerge restores the weights", "[lora]") {
  manual_seed(12);
  auto check = [](nn::Module& m, const std::function<Tensor()>& run) {
    const nn::NamedTensors base = snapshot(m);
    randomize_B(m, 0.5);
    Tensor unmerged = run();
    REQUIRE(nn::merge_lora(m) == int64_t(nn::lora_adapters(m).size()));
    CHECK(nn::merge_lora(m) == 0);  // already merged: nothing added twice
    Tensor merged = run();
    CHECK(max_abs_diff(merged, unmerged) <= 1e-5 * std::max(1.0, max_abs(unmerged)));
    // The adapters did change the weights, so the comparison above means something.
    double changed = 0;
    for (auto& [n, t] : m.state_dict())
      for (auto& [bn, bt] : base)
        if (bn == n && n.find("lora_") == std::string::npos) changed = std::max(changed, max_abs_diff(t, bt));
    CHECK(changed > 1e-3);
    REQUIRE(nn::unmerge_lora(m) == int64_t(nn::lora_adapters(m).size()));
    for (auto& [n, t] : m.state_dict())
      for (auto& [bn, bt] : base)
        if (bn == n && n.find("lora_") == std::string::npos)
          CHECK(max_abs_diff(t, bt) <= 1e-6 * std::max(1.0, max_abs(bt)));
    CHECK(max_abs_diff(run(), unmerged) <= 1e-6 * std::max(1.0, max_abs(unmerged)));
  };
  SECTION("Linear") {
    nn::Linear lin(7, 5);
    Tensor x = randn({4, 7});
    nn::apply_lora(lin, config({"*"}, 3, 6));
    check(lin, [&] { return lin.forward(x); });
  }
  SECTION("Conv2d, stride 2, padding 1, dilation 2") {
    nn::Conv2d conv(3, 6, 3, 2, 1, 2);
    Tensor x = randn({2, 3, 11, 11});
    nn::apply_lora(conv, config({"*"}, 2, 1));
    check(conv, [&] { return conv.forward(x); });
  }
  SECTION("ViT openai: packed in-projection (whole), out_proj, MLP") {
    models::VisionTransformer vit(tiny_vit("openai"));
    vit.eval();
    Tensor x = randn({2, 3, 16, 16});
    nn::apply_lora(vit, config({"transformer.*.attn.in_proj", "transformer.*.attn.out_proj", "transformer.*.mlp.*"}));
    check(vit, [&] { return vit.forward(x); });
  }
  SECTION("ViT timm: q and v parts of attn.qkv only") {
    models::VisionTransformer vit(tiny_vit("timm"));
    vit.eval();
    Tensor x = randn({2, 3, 16, 16});
    nn::LoraConfig c = config({"blocks.*.attn.qkv"});
    c.qkv_parts = "vq";
    nn::apply_lora(vit, c);
    auto adapters = nn::lora_adapters(vit);
    REQUIRE(adapters.size() == 2);
    CHECK(adapters[0].first == "blocks.0.attn.qkv");
    CHECK(adapters[0].second->qkv_parts() == "qv");
    CHECK(adapters[0].second->lora_A.shape() == Shape{8, 16});
    CHECK(adapters[0].second->lora_B.shape() == Shape{32, 4});
    Tensor w = std::dynamic_pointer_cast<nn::Linear>(vit.blocks->blocks[0]->attn->in_proj)->weight;
    const Tensor before = w.clone();
    randomize_B(vit, 0.5);
    nn::merge_lora(vit);
    CHECK(same_values(w.narrow(0, 16, 16), before.narrow(0, 16, 16)));  // k untouched
    CHECK(max_abs_diff(w.narrow(0, 0, 16), before.narrow(0, 0, 16)) > 1e-3);
    CHECK(max_abs_diff(w.narrow(0, 32, 16), before.narrow(0, 32, 16)) > 1e-3);
    CHECK(max_abs_diff(w, before + adapters[0].second->delta_weight()) < 1e-6);
    nn::unmerge_lora(vit);
    nn::init::zeros_(adapters[0].second->lora_B);
    nn::init::zeros_(adapters[1].second->lora_B);
    check(vit, [&] { return vit.forward(x); });
  }
  SECTION("ModifiedResNet and ResNet convolutions, attention pool linears") {
    models::ModifiedResNetConfig mc_;
    mc_.layers = {1, 1, 1, 1};
    mc_.width = 4;
    mc_.heads = 2;
    mc_.output_dim = 8;
    mc_.image_size = 32;
    models::ModifiedResNet mr(mc_);
    mr.eval();
    Tensor x = randn({2, 3, 32, 32});
    nn::apply_lora(mr, config({"conv*", "layer*.conv*", "attnpool.*_proj"}));
    check(mr, [&] { return mr.forward(x); });
    models::ResNet rn(tiny_resnet());
    rn.eval();
    nn::apply_lora(rn, config({"conv1", "layer*.conv2", "layer*.downsample.0"}));
    check(rn, [&] { return rn.forward(x); });
  }
}

TEST_CASE("lora: only adapter parameters train after freeze + apply", "[lora]") {
  manual_seed(13);
  models::VisionTransformer vit(tiny_vit("openai"));
  Tensor x = randn({2, 3, 16, 16});
  vit.freeze("*");
  REQUIRE(nn::apply_lora(vit, config({"transformer.*.attn.in_proj", "transformer.*.mlp.*"})) == 6);
  randomize_B(vit, 0.1);
  sum(vit.forward(x)).backward();
  int64_t with_grad = 0;
  for (auto& [n, t] : vit.named_parameters()) {
    const bool adapter = n.find("lora_") != std::string::npos;
    CHECK(t.requires_grad() == adapter);
    CHECK(t.grad().defined() == adapter);
    if (adapter && t.grad().defined() && max_abs(t.grad()) > 0) ++with_grad;
  }
  CHECK(with_grad == 12);
  // The model's own names: under the layer, and at the attention's level for the inline projection.
  std::vector<std::string> names;
  for (auto& [n, t] : vit.state_dict()) names.push_back(n);
  for (std::string want : {"transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.in_proj_lora_A",
                           "transformer.resblocks.0.attn.in_proj_lora_B", "transformer.resblocks.1.mlp.c_fc.lora_A",
                           "transformer.resblocks.1.mlp.c_proj.lora_B"})
    CHECK(std::count(names.begin(), names.end(), want) == 1);
  auto sd = nn::lora_state_dict(vit);
  REQUIRE(sd.size() == 12);
  CHECK(sd[0].first == "base_model.model.transformer.resblocks.0.attn.in_proj.lora_A.weight");
  CHECK(sd[0].second.shape() == Shape{4, 16});
  CHECK(sd[1].first == "base_model.model.transformer.resblocks.0.attn.in_proj.lora_B.weight");
  CHECK(sd[1].second.shape() == Shape{48, 4});
  CHECK(sd[2].first == "base_model.model.transformer.resblocks.0.mlp.c_fc.lora_A.weight");

  // Freezing after apply_lora freezes the adapters too; mark_only_lora_trainable restores the split.
  vit.freeze("*");
  CHECK(vit.num_parameters(true) == 0);
  vit.unfreeze("*");
  const int64_t adapter_params = [&] {
    int64_t n = 0;
    for (auto& [k, t] : sd) n += t.numel();
    return n;
  }();
  CHECK(nn::mark_only_lora_trainable(vit) == adapter_params);
}

TEST_CASE("lora: adapters follow the model's mode and dtype; dropout acts in training", "[lora]") {
  manual_seed(14);
  nn::Linear lin(8, 8);
  lin.eval();
  nn::LoraConfig c = config({"*"});
  c.dropout = 0.5;
  nn::apply_lora(lin, c);
  auto adapter = nn::lora_adapters(lin).at(0).second;
  CHECK_FALSE(adapter->is_training());
  randomize_B(lin, 1.0);
  Tensor x = randn({4, 8});
  Tensor e1 = lin.forward(x), e2 = lin.forward(x);
  CHECK(same_values(e1, e2));  // eval: no dropout
  lin.train();
  CHECK(adapter->is_training());
  CHECK(max_abs_diff(lin.forward(x), e1) > 1e-3);  // training: the adapter's input is dropped out
  lin.to(DType::F64);
  CHECK(adapter->lora_A.dtype() == DType::F64);
  CHECK(adapter->lora_B.dtype() == DType::F64);
}

TEST_CASE("lora: gradcheck of LoRA Linear, packed q/v and Conv2d", "[lora][gradcheck]") {
  manual_seed(15);
  auto ok = [](const autograd::GradcheckResult& r) {
    INFO(r.message);
    CHECK(r.ok);
  };
  SECTION("Linear") {
    nn::Linear lin(5, 4);
    nn::apply_lora(lin, config({"*"}, 2, 3));
    lin.to(DType::F64);
    auto* a = nn::lora_adapters(lin).at(0).second;
    ok(autograd::gradcheck(
        [&](const std::vector<Tensor>& in) {
          lin.weight = in[1];
          lin.bias = in[2];
          a->lora_A = in[3];
          a->lora_B = in[4];
          return lin.forward(in[0]);
        },
        {randn({3, 5}), randn({4, 5}), randn({4}), randn({2, 5}), randn({4, 2})}));
  }
  SECTION("packed q/k/v, parts k and v") {
    nn::Linear lin(4, 12);
    lin.packed_outputs = 3;
    nn::LoraConfig c = config({"*"}, 2, 3);
    c.qkv_parts = "kv";
    nn::apply_lora(lin, c);
    lin.to(DType::F64);
    auto* a = nn::lora_adapters(lin).at(0).second;
    ok(autograd::gradcheck(
        [&](const std::vector<Tensor>& in) {
          lin.weight = in[1];
          a->lora_A = in[2];
          a->lora_B = in[3];
          return lin.forward(in[0]);
        },
        {randn({2, 3, 4}), randn({12, 4}), randn({4, 4}), randn({8, 2})}));
  }
  SECTION("Conv2d, stride 2, padding 1") {
    nn::Conv2d conv(2, 3, 3, 2, 1);
    nn::apply_lora(conv, config({"*"}, 2, 4));
    conv.to(DType::F64);
    auto* a = nn::lora_adapters(conv).at(0).second;
    ok(autograd::gradcheck(
        [&](const std::vector<Tensor>& in) {
          conv.weight = in[1];
          a->lora_A = in[2];
          a->lora_B = in[3];
          return conv.forward(in[0]);
        },
        {randn({2, 2, 5, 5}), randn({3, 2, 3, 3}), randn({2, 2, 3, 3}), randn({3, 2, 1, 1})}));
  }
}

TEST_CASE("lora: save / load round trip with the config in the metadata", "[lora]") {
  const std::string path = temp_file("round_trip.safetensors");
  manual_seed(16);
  models::VisionTransformer a(tiny_vit("timm"));
  manual_seed(16);
  models::VisionTransformer b(tiny_vit("timm"));
  a.eval();
  b.eval();
  nn::LoraConfig c = config({"blocks.*.attn.qkv", "blocks.*.mlp.fc1"}, 3, 5);
  c.qkv_parts = "qv";
  c.dropout = 0.1;
  REQUIRE(nn::apply_lora(a, c) == 4);
  randomize_B(a, 0.3);
  nn::save_lora(path, a, c);

  io::SafetensorsFile f = io::SafetensorsFile::open(path);
  CHECK(f.metadata().at(nn::kLoraFormatKey) == nn::kLoraFormat);
  CHECK(f.has("base_model.model.blocks.0.attn.qkv.lora_A.weight"));
  CHECK(f.info("base_model.model.blocks.0.attn.qkv.lora_A.weight").shape == Shape{6, 16});
  CHECK(f.info("base_model.model.blocks.1.mlp.fc1.lora_B.weight").shape == Shape{64, 3});
  CHECK(f.size() == 8);

  nn::LoraConfig got = nn::load_lora(path, b);
  CHECK(got.r == 3);
  CHECK(got.alpha == 5);
  CHECK(got.dropout == 0.1);
  CHECK(got.targets == c.targets);
  CHECK(got.qkv_parts == "qv");
  Tensor x = randn({2, 3, 16, 16});
  CHECK(same_values(a.forward(x), b.forward(x)));
  CHECK(max_abs_diff(a.forward(x), b.forward(x)) == 0);

  // Into a model whose adapters already exist (same config): loads; a different rank: refused.
  randomize_B(b, 0.3);
  nn::load_lora(path, b);
  CHECK(same_values(a.forward(x), b.forward(x)));
  manual_seed(16);
  models::VisionTransformer d(tiny_vit("timm"));
  nn::LoraConfig c2 = c;
  c2.r = 2;
  nn::apply_lora(d, c2);
  CHECK_THROWS_WITH(nn::load_lora(path, d), Catch::Contains("r 2") && Catch::Contains("blocks.0.attn.qkv"));

  // Saving with a config that does not describe the adapters is refused.
  CHECK_THROWS_WITH(nn::save_lora(path, a, c2), Catch::Contains("save_lora"));

  // load_lora_state_dict: strict lists what is wrong; non-strict loads what matches.
  auto sd = nn::lora_state_dict(a);
  sd.pop_back();
  sd.emplace_back("base_model.model.blocks.9.mlp.fc1.lora_A.weight", zeros({3, 16}));
  CHECK_THROWS_WITH(nn::load_lora_state_dict(b, sd), Catch::Contains("missing keys (1)") &&
                                                          Catch::Contains("unexpected keys (1)"));
  nn::LoadReport rep = nn::load_lora_state_dict(b, sd, false);
  CHECK(rep.missing.size() == 1);
  CHECK(rep.unexpected.size() == 1);
  nn::merge_lora(b);
  CHECK_THROWS_WITH(nn::load_lora_state_dict(b, sd, false), Catch::Contains("merged"));

  // A plain safetensors file is not an adapter file.
  io::save_safetensors(path, {{"x", zeros({2})}});
  CHECK_THROWS_WITH(nn::load_lora(path, d), Catch::Contains("not a LoRA adapter file"));
  std::filesystem::remove(path);
}

TEST_CASE("lora: errors", "[lora]") {
  manual_seed(17);
  models::VisionTransformer vit(tiny_vit("openai"));
  const int64_t n_params = int64_t(vit.named_parameters().size());
  // A pattern that matches nothing (or only non-adaptable modules): error, and nothing is attached.
  CHECK_THROWS_WITH(nn::apply_lora(vit, config({"transformer.*.mlp.*", "visual.*.attn.in_proj"})),
                    Catch::Contains("'visual.*.attn.in_proj' matches no adaptable layer"));
  CHECK_THROWS_WITH(nn::apply_lora(vit, config({"ln_post"})), Catch::Contains("matches no adaptable layer"));
  CHECK(nn::lora_adapters(vit).empty());
  CHECK(int64_t(vit.named_parameters().size()) == n_params);
  // Twice on one layer.
  nn::apply_lora(vit, config({"transformer.resblocks.0.mlp.c_fc"}));
  CHECK_THROWS_WITH(nn::apply_lora(vit, config({"transformer.*.mlp.*"})),
                    Catch::Contains("'transformer.resblocks.0.mlp.c_fc' already has an adapter"));
  CHECK(nn::lora_adapters(vit).size() == 1);
  // Invalid configurations.
  CHECK_THROWS_WITH(nn::apply_lora(vit, config({"conv1"}, 0)), Catch::Contains("rank r must be positive"));
  CHECK_THROWS_WITH(nn::apply_lora(vit, config({})), Catch::Contains("no target patterns"));
  nn::LoraConfig bad = config({"conv1"});
  bad.qkv_parts = "qx";
  CHECK_THROWS_WITH(nn::apply_lora(vit, bad), Catch::Contains("qkv_parts"));
  bad.qkv_parts = "";
  bad.dropout = 1;
  CHECK_THROWS_WITH(nn::apply_lora(vit, bad), Catch::Contains("dropout"));
  // Grouped convolutions are not supported.
  nn::Conv2d grouped(4, 4, 3, 1, 1, 1, 2);
  CHECK_THROWS_WITH(nn::apply_lora(grouped, config({"*"})), Catch::Contains("grouped convolution"));
  // Merging a model without adapters.
  nn::Linear plain(2, 2);
  CHECK_THROWS_WITH(nn::merge_lora(plain), Catch::Contains("no LoRA adapters"));
}

TEST_CASE("lora: trainable parameters of a ViT-B/32-sized tower", "[lora]") {
  manual_seed(18);
  models::ViTConfig c;  // ViT-B/32 widths; two blocks and one patch keep the test fast
  c.image_size = 32;
  c.patch_size = 32;
  c.layers = 2;
  models::VisionTransformer vit(c);
  vit.freeze("*");
  nn::LoraConfig lc = config({"transformer.*.attn.*", "transformer.*.mlp.*"}, 8, 16);
  REQUIRE(nn::apply_lora(vit, lc) == 4 * c.layers);
  // Per block: in_proj r (W + 3W), out_proj r (W + W), c_fc r (W + 4W), c_proj r (4W + W) = 16 r W.
  const int64_t W = 768, r = 8;
  CHECK(vit.num_parameters(true) == c.layers * 16 * r * W);
  CHECK(vit.num_parameters(true) == c.layers * 98304);
}
