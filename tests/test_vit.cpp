// Tests of models/vit.hpp (VisionTransformer, ResidualBlock) and models/clip_text.hpp (ClipTextTransformer)
// against the reference implementations: tiny open_clip CLIP (OpenAI layout, QuickGELU, causal text tower)
// and timm VisionTransformer models with random weights, written by tools/gen_vit_fixtures.py into
// tests/fixtures/vit (state dicts by torch.save, inputs / outputs / gradients as .npz).
//
// Error metric: for each compared tensor, max_i |mc_i - ref_i| / max_i |ref_i| (the largest deviation
// relative to the tensor's scale), required <= 1e-4 in f32.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "mc/io/npy.hpp"
#include "mc/io/torch_load.hpp"
#include "mc/mc.hpp"
#include "mc/models/clip_text.hpp"
#include "mc/models/vit.hpp"

using namespace mc;

namespace {

constexpr double kTol = 1e-4;

std::string fixture(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/tests/fixtures/vit/" + name; }

nn::NamedTensors load_sd(const std::string& name) { return io::find_state_dict(io::load_torch(fixture(name))); }

const std::map<std::string, Tensor>& npz(const std::string& name) {
  static std::map<std::string, std::map<std::string, Tensor>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, io::load_npz_map(fixture(name))).first;
  return it->second;
}

Tensor ref(const std::string& file, const std::string& key) {
  const auto& m = npz(file);
  auto it = m.find(key);
  INFO("npz key " << key);
  REQUIRE(it != m.end());
  return it->second;
}

// max |a - b| / max |b|, over tensors of one shape.
double rel_err(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.detach().to(DType::F64).to_vector<double>(), y = b.to(DType::F64).to_vector<double>();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::fabs(x[i] - y[i]));
    scale = std::max(scale, std::fabs(y[i]));
  }
  return diff / std::max(scale, 1e-30);
}

#define CHECK_CLOSE(got, want)                                     \
  do {                                                             \
    const double e_ = rel_err(got, want);                          \
    INFO(#got << ": max error " << e_ << " relative to max |ref|"); \
    CHECK(e_ <= kTol);                                             \
  } while (0)

// Entries of sd whose name starts with prefix, prefix removed; `skip` names are left out.
nn::NamedTensors with_prefix(const nn::NamedTensors& sd, const std::string& prefix, bool inside,
                             const std::vector<std::string>& skip = {}) {
  nn::NamedTensors r;
  for (auto& [n, t] : sd) {
    if (std::find(skip.begin(), skip.end(), n) != skip.end()) continue;
    const bool has = n.rfind(prefix, 0) == 0;
    if (has && inside) r.emplace_back(n.substr(prefix.size()), t);
    if (!has && !inside) r.emplace_back(n, t);
  }
  return r;
}

std::vector<std::string> names(const nn::NamedTensors& v) {
  std::vector<std::string> r;
  for (auto& [n, t] : v) r.push_back(n);
  return r;
}

// Every parameter got a gradient with a non-zero entry; those recorded in the fixture ("grad." + prefix +
// name) match.
void check_grads(const nn::Module& m, const std::string& file, const std::string& prefix, size_t expect_recorded) {
  size_t compared = 0;
  for (auto& [n, p] : m.named_parameters()) {
    INFO("parameter " << n);
    Tensor g = p.grad();
    REQUIRE(g.defined());
    REQUIRE(g.shape() == p.shape());
    std::vector<float> gv = g.to_vector<float>();
    CHECK(std::any_of(gv.begin(), gv.end(), [](float v) { return v != 0.0f; }));
    const auto& refs = npz(file);
    auto it = refs.find("grad." + prefix + n);
    if (it == refs.end()) continue;
    CHECK_CLOSE(g, it->second);
    ++compared;
  }
  CHECK(compared == expect_recorded);
}

size_t count_grads(const std::string& file, const std::string& prefix, const std::string& exclude = "\x01") {
  size_t n = 0;
  for (auto& [k, t] : npz(file))
    if (k.rfind("grad." + prefix, 0) == 0 && k.rfind("grad." + exclude, 0) != 0) ++n;
  return n;
}

models::ViTConfig openai_cfg() {
  models::ViTConfig c;
  c.variant = "openai";
  c.image_size = 32;
  c.patch_size = 8;
  c.width = 32;
  c.layers = 2;
  c.heads = 4;
  c.output_dim = 16;
  c.act = "quick_gelu";
  return c;
}

models::ViTConfig timm_cfg() {
  models::ViTConfig c;
  c.variant = "timm";
  c.image_size = 32;
  c.patch_size = 8;
  c.width = 32;
  c.layers = 2;
  c.heads = 4;
  c.output_dim = 0;
  c.ln_eps = 1e-6;
  c.act = "gelu";
  return c;
}

models::ClipTextConfig text_cfg() {
  models::ClipTextConfig c;
  c.vocab_size = 100;
  c.context_length = 12;
  c.width = 32;
  c.layers = 2;
  c.heads = 4;
  c.output_dim = 16;
  return c;
}

// A CLIP-shaped holder: the image tower under "visual", the text tower inline, logit_scale at the top level.
struct TinyClip : nn::Module {
  std::shared_ptr<models::VisionTransformer> visual;
  std::shared_ptr<models::ClipTextTransformer> text;
  Tensor logit_scale;
  TinyClip() {
    logit_scale = register_parameter("logit_scale", scalar_tensor(std::log(1 / 0.07)));
    visual = register_module("visual", std::make_shared<models::VisionTransformer>(openai_cfg()));
    text = register_module("", std::make_shared<models::ClipTextTransformer>(text_cfg()));
  }
};

template <class F>
void require_error(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
    return;
  }
  FAIL("no mc::Error thrown (expected one mentioning '" << needle << "')");
}

}  // namespace

TEST_CASE("vit: open_clip (OpenAI layout) VisionTransformer matches the reference", "[vit]") {
  const nn::NamedTensors sd = with_prefix(load_sd("clip.pt"), "visual.", true);
  models::VisionTransformer vit(openai_cfg());
  CHECK(names(vit.state_dict()) == names(sd));  // same keys, same order
  vit.load_state_dict(sd);
  vit.eval();
  const std::string f = "clip_ref.npz";
  Tensor pixels = ref(f, "pixels");
  CHECK_CLOSE(vit.forward_tokens(pixels), ref(f, "vis_tokens"));
  CHECK_CLOSE(vit.forward(pixels), ref(f, "vis_pooled"));

  Tensor loss = add(sum(mul(vit.forward(pixels), ref(f, "r_vis_pooled"))),
                    sum(mul(vit.forward_tokens(pixels), ref(f, "r_vis_tokens"))));
  loss.backward();
  check_grads(vit, f, "visual.", count_grads(f, "visual."));
}

TEST_CASE("vit: open_clip CLIP text tower matches the reference", "[vit]") {
  const nn::NamedTensors sd = with_prefix(load_sd("clip.pt"), "visual.", false, {"logit_scale"});
  models::ClipTextTransformer txt(text_cfg());
  CHECK(names(txt.state_dict()) == names(sd));
  txt.load_state_dict(sd);
  txt.eval();
  const std::string f = "clip_ref.npz";
  Tensor ids = ref(f, "ids");
  CHECK_CLOSE(txt.forward_tokens(ids, false), ref(f, "txt_tokens_pre"));
  CHECK_CLOSE(txt.forward_tokens(ids), ref(f, "txt_tokens"));
  CHECK_CLOSE(txt.forward(ids), ref(f, "txt_pooled"));
  // Fewer tokens than the context (one row padded after EOT).
  Tensor short_ids = ref(f, "short_ids");
  CHECK_CLOSE(txt.forward_tokens(short_ids, false), ref(f, "short_tokens_pre"));
  CHECK_CLOSE(txt.forward(short_ids), ref(f, "short_pooled"));
  // i32 ids give the same result.
  CHECK_CLOSE(txt.forward(short_ids.to(DType::I32)), ref(f, "short_pooled"));

  Tensor loss = add(sum(mul(txt.forward(ids), ref(f, "r_txt_pooled"))),
                    sum(mul(txt.forward_tokens(ids), ref(f, "r_txt_tokens"))));
  loss.backward();
  check_grads(txt, f, "", count_grads(f, "", "visual."));
}

TEST_CASE("vit: a CLIP holder with the text tower inline loads the whole checkpoint strictly", "[vit]") {
  const nn::NamedTensors sd = load_sd("clip.pt");
  TinyClip clip;
  std::vector<std::string> mine = names(clip.state_dict()), theirs = names(sd);
  std::sort(mine.begin(), mine.end());
  std::sort(theirs.begin(), theirs.end());
  CHECK(mine == theirs);
  clip.load_state_dict(sd);
  CHECK(clip.logit_scale.item<float>() == Approx(2.5));
  clip.eval();
  CHECK_CLOSE(clip.visual->forward(ref("clip_ref.npz", "pixels")), ref("clip_ref.npz", "vis_pooled"));
  CHECK_CLOSE(clip.text->forward(ref("clip_ref.npz", "ids")), ref("clip_ref.npz", "txt_pooled"));
  // A block's projections are reachable through the block, for adapters, and are the registered tensors.
  auto* packed = dynamic_cast<models::PackedInProjection*>((*clip.visual->blocks)[1].attn->in_proj.get());
  REQUIRE(packed != nullptr);
  Tensor registered;
  for (auto& [n, t] : clip.named_parameters())
    if (n == "visual.transformer.resblocks.1.attn.in_proj_weight") registered = t;
  CHECK(packed->in_proj_weight.is_same(registered));
}

TEST_CASE("vit: timm VisionTransformer matches the reference", "[vit]") {
  const nn::NamedTensors sd = load_sd("timm_vit.pt");
  models::VisionTransformer vit(timm_cfg());
  CHECK(names(vit.state_dict()) == names(sd));
  vit.load_state_dict(sd);
  vit.eval();
  const std::string f = "timm_ref.npz";
  Tensor pixels = ref(f, "pixels");
  CHECK_CLOSE(vit.forward_tokens(pixels), ref(f, "tokens"));
  Tensor pooled = vit.forward(pixels);
  CHECK(pooled.shape() == Shape{2, 32});
  CHECK_CLOSE(pooled, ref(f, "pooled"));

  Tensor loss = add(sum(mul(vit.forward(pixels), ref(f, "r_pooled"))),
                    sum(mul(vit.forward_tokens(pixels), ref(f, "r_tokens"))));
  loss.backward();
  check_grads(vit, f, "", count_grads(f, ""));
}

TEST_CASE("vit: shapes, names and parameter counts of the full-size towers", "[vit]") {
  // The layouts, built at a small width: names only depend on the layer count.
  models::ViTConfig c = openai_cfg();
  c.output_dim = 0;
  models::VisionTransformer noproj(c);
  CHECK(!noproj.proj.defined());
  CHECK(noproj.forward(randn({1, 3, 32, 32})).shape() == Shape{1, 32});
  CHECK(noproj.forward_tokens(randn({1, 3, 32, 32})).shape() == Shape{1, 17, 32});

  // Parameter counts of OpenAI ViT-B/32's towers (87,849,216 + 63,428,096 of 151,277,313, the rest being
  // logit_scale) and of BiomedCLIP's timm ViT-B/16 trunk (85,798,656), from the formulas the modules use.
  // ln_1 + ln_2, in_proj, out_proj, c_fc, c_proj (weights and biases).
  auto block_params = [](int64_t w) { return 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w); };
  const int64_t w = 768;
  const int64_t vis = 3 * w * 32 * 32 + w + 50 * w + 2 * w + 12 * block_params(w) + 2 * w + w * 512;
  CHECK(vis == 87849216);
  const int64_t tw = 512;
  const int64_t txt = 49408 * tw + 77 * tw + 12 * block_params(tw) + 2 * tw + tw * 512;
  CHECK(txt == 63428096);
  CHECK(vis + txt + 1 == 151277313);
  const int64_t trunk = 3 * w * 16 * 16 + w + w + 197 * w + 12 * block_params(w) + 2 * w;
  CHECK(trunk == 85798656);
  // The same from the modules, built without blocks to keep this quick (the blocks' shapes are those of the
  // reference checkpoints above; strict loading checks them), the vocabulary cut to 1000 rows.
  models::ViTConfig b32;
  b32.layers = 0;
  CHECK(models::VisionTransformer(b32).num_parameters() == vis - 12 * block_params(w));
  models::ViTConfig b16 = b32;
  b16.variant = "timm";
  b16.patch_size = 16;
  b16.output_dim = 0;
  b16.ln_eps = 1e-6;
  b16.act = "gelu";
  CHECK(models::VisionTransformer(b16).num_parameters() == trunk - 12 * block_params(w));
  models::ClipTextConfig t;
  t.layers = 0;
  t.vocab_size = 1000;
  CHECK(models::ClipTextTransformer(t).num_parameters() == txt - 12 * block_params(tw) - (49408 - 1000) * tw);
}

TEST_CASE("vit: errors name the model and the reason", "[vit]") {
  models::VisionTransformer vit(openai_cfg());
  require_error([&] { vit.forward(randn({1, 3, 64, 64})); }, "interpolation is not supported");
  require_error([&] { vit.forward(randn({1, 3, 32, 24})); }, "image size 32x32");
  require_error([&] { vit.forward(randn({1, 1, 32, 32})); }, "pixels must be [B, 3, H, W]");
  require_error([&] { vit.forward_tokens(randn({3, 32, 32})); }, "pixels must be [B, 3, H, W]");

  models::ViTConfig c = openai_cfg();
  c.patch_size = 7;
  require_error([&] { models::VisionTransformer m(c); }, "multiple of the patch size");
  c = timm_cfg();
  c.output_dim = 16;
  require_error([&] { models::VisionTransformer m(c); }, "output_dim must be 0 for the timm variant");
  c = openai_cfg();
  c.variant = "swin";
  require_error([&] { models::VisionTransformer m(c); }, "unknown variant 'swin'");
  c = openai_cfg();
  c.act = "relu";
  require_error([&] { models::VisionTransformer m(c); }, "unknown activation 'relu'");
  c = openai_cfg();
  c.heads = 5;
  require_error([&] { models::VisionTransformer m(c); }, "multiple of heads");

  models::ClipTextTransformer txt(text_cfg());
  require_error([&] { txt.forward(zeros({1, 13}, DType::I64)); }, "more than the context length 12");
  require_error([&] { txt.forward(full({1, 4}, 100, DType::I64)); }, "token ids must lie in [0, 100), got 100");
  require_error([&] { txt.forward_tokens(full({1, 4}, -1, DType::I64)); }, "got -1");
  require_error([&] { txt.forward(zeros({1, 4})); }, "ids must be i64 or i32");
  require_error([&] { txt.forward(zeros({4}, DType::I64)); }, "ids must be [B, L]");

  // Strict loading reports wrong shapes and missing / unexpected names.
  nn::NamedTensors sd = vit.state_dict();
  sd.erase(sd.begin());
  sd.emplace_back("visual.extra", zeros({1}));
  require_error([&] { vit.load_state_dict(sd); }, "missing keys (1): class_embedding");
}
