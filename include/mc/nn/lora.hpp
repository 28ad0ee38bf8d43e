// mc/nn/lora.hpp — LoRA (Hu et al., 2021): trainable low-rank updates of frozen weights, on Linear, Conv2d
// and the packed q/k/v projections of the transformer blocks (models::PackedInProjection, timm's attn.qkv).
//
//   root.freeze("*");                                    // the base model stays fixed ...
//   nn::LoraConfig cfg;                                  // r 8, alpha 16, dropout 0
//   cfg.targets = {"visual.*.attn.in_proj", "visual.*.mlp.*"};
//   nn::apply_lora(root, cfg);                           // ... the adapters, created after, train
//   ... train ...
//   nn::save_lora("adapter.safetensors", root, cfg);     // adapter tensors + the config
//   nn::merge_lora(root);                                // W += (alpha / r) B A: plain layers for inference
//
// What an adapter computes (y is the layer's own output, s = alpha / r, drop = dropout(p) in training):
//   Linear [out, in]       y + s * B (A drop(x)),        A [r, in], B [out, r]
//   Conv2d [out, in, k, k] y + s * B * (A * drop(x)),    A a conv [r, in, kh, kw] with the layer's stride,
//                          padding and dilation; B a 1x1 conv [out, r, 1, 1] (stride 1). Merged, the kernel
//                          gains s * (B[out, r] @ A[r, in*kh*kw]) reshaped to [out, in, kh, kw], which is
//                          exact: a 1x1 conv after a conv is the conv with the composed kernel. Grouped
//                          convolutions (groups > 1) are not supported.
//   packed q/k/v [3W, W]   by default one adapter on the whole projection, A [r, W], B [3W, r]. With
//                          LoraConfig::qkv_parts (e.g. "qv") each listed part gets its own rank-r adapter
//                          and the other parts none; the tensors are stacked as loralib's MergedLinear does:
//                          A [n r, W] (rows i r .. (i+1) r - 1 for the i-th listed part, in q, k, v order),
//                          B [n W, r] (rows i W .. (i+1) W - 1), n = number of parts. qkv_parts applies
//                          only to layers that declare packed_outputs = 3; other matched layers get the
//                          plain adapter.
// A is initialised kaiming-uniform (a = sqrt 5, fan-in = in * kh * kw), B with zeros, so a fresh adapter
// leaves the model's outputs exactly unchanged. Adapters take the dtype and device of the layer's weight.
// Adapter parameters are trainable when created; nothing else is touched, so freeze the base first
// (root.freeze("*") then apply_lora), or call mark_only_lora_trainable(root) at any time after apply_lora.
// root.freeze("*") AFTER apply_lora freezes the adapters too (they are ordinary parameters).
//
// Names. Layers are matched by their adapted path: the module path (Module::named_modules), or for the
// inline packed projection "<attn path>.in_proj" (Adaptable::adapter_name). Patterns are glob_match
// patterns: '*' spans dots, so "visual.*.mlp.*" matches every MLP linear of the tower. In the model's own
// state_dict() an adapter's tensors sit under its layer: "<path>.lora_A" / "<path>.lora_B" (e.g.
// "visual.transformer.resblocks.0.mlp.c_fc.lora_A"), and for the packed projection, whose tensors live at
// the attention's level, "<attn path>.in_proj_lora_A" / "in_proj_lora_B". A full checkpoint of a LoRA run
// therefore holds the adapters. lora_state_dict() uses peft's names instead:
// "base_model.model.<adapted path>.lora_A.weight" / ".lora_B.weight" with peft's shapes (Conv2d: A
// [r, in, kh, kw], B [out, r, 1, 1]).
//
// Merging. merge_lora adds s * B A into each base weight and makes the adapters pass-through;
// unmerge_lora subtracts the same tensor (an exact inverse up to float rounding). Merged adapters get no
// gradients; a state_dict() taken while merged holds the merged weights AND the adapters, so load it only
// into a merged model (save checkpoints unmerged, or save_lora).
//
// Files. save_lora writes lora_state_dict() as safetensors with metadata "mc.format" = "mc.lora.v1" and
// "mc.lora_config" = {"r", "lora_alpha", "lora_dropout", "target_modules", "qkv_parts"} (JSON, peft's key
// names). load_lora applies that config to a model without adapters (or checks it against the adapters
// already there) and loads the tensors strictly.
#pragma once
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/io/safetensors.hpp"
#include "mc/nn/layers.hpp"
#include "mc/ops/linalg.hpp"
#include "mc/ops/nn.hpp"
#include "mc/ops/shape.hpp"

namespace mc::nn {

struct LoraConfig {
  int64_t r = 8;        // rank
  double alpha = 16;    // the update is scaled by alpha / r
  double dropout = 0;   // dropout on the adapter's input, in training mode
  // Glob patterns on adapted layer paths, e.g. "visual.*.attn.in_proj", "visual.*.mlp.*". Each must match
  // at least one adaptable layer.
  std::vector<std::string> targets;
  // Packed q/k/v projections: "" = one adapter on the whole projection; otherwise the parts that get their
  // own adapter, a subset of "qkv" (e.g. "qv").
  std::string qkv_parts;
};

inline constexpr const char* kLoraFormatKey = "mc.format";
inline constexpr const char* kLoraFormat = "mc.lora.v1";
inline constexpr const char* kLoraConfigKey = "mc.lora_config";

namespace lora_detail {

inline std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  return b.empty() ? a : a + "." + b;
}

// "" -> {}; otherwise the part indices (q 0, k 1, v 2) in ascending order.
inline std::vector<int> parse_parts(const std::string& s, const char* who) {
  std::vector<int> parts;
  for (char c : s) {
    const int i = c == 'q' ? 0 : c == 'k' ? 1 : c == 'v' ? 2 : -1;
    MC_CHECK(i >= 0, who, ": qkv_parts '", s, "' may only contain the letters q, k and v");
    MC_CHECK(std::find(parts.begin(), parts.end(), i) == parts.end(), who, ": qkv_parts '", s, "' repeats '", c, "'");
    parts.push_back(i);
  }
  std::sort(parts.begin(), parts.end());
  return parts;
}

inline std::string parts_str(const std::vector<int>& parts) {
  std::string s;
  for (int i : parts) s += "qkv"[i];
  return s;
}

// Rank, alpha, dropout and qkv_parts; with_targets: also the target patterns.
inline void check_config(const LoraConfig& c, const std::string& who, bool with_targets = true) {
  MC_CHECK(c.r > 0, who, ": rank r must be positive, got ", c.r);
  MC_CHECK(std::isfinite(c.alpha) && c.alpha > 0, who, ": alpha must be positive and finite, got ", c.alpha);
  MC_CHECK(c.dropout >= 0 && c.dropout < 1, who, ": dropout must be in [0, 1), got ", c.dropout);
  if (with_targets) {
    MC_CHECK(!c.targets.empty(), who, ": no target patterns given (LoraConfig::targets is empty)");
    for (const std::string& t : c.targets) MC_CHECK(!t.empty(), who, ": empty target pattern");
  }
  parse_parts(c.qkv_parts, who.c_str());
}

}  // namespace lora_detail

// The adapter of one layer (see the top of this file). Registered as an inline child of the layer.
class LoraAdapter : public LayerAdapter {
 public:
  Tensor lora_A, lora_B;

  // `path` (the adapted path) only names the layer in error messages.
  LoraAdapter(Adaptable& layer, const LoraConfig& cfg, const std::string& path)
      : layer_(&layer), r_(cfg.r), alpha_(cfg.alpha), scaling_(cfg.alpha / double(cfg.r)), dropout_(cfg.dropout) {
    lora_detail::check_config(cfg, "LoRA: layer '" + path + "'", false);
    const Tensor& w = layer.adaptable_weight();
    MC_CHECK(w.defined() && is_floating(w.dtype()), "LoRA: layer '", path, "' has no floating weight");
    const std::string prefix = layer.adapter_name.empty() ? "" : layer.adapter_name + "_";
    const int64_t out = w.size(0);
    if (w.dim() == 4) {
      auto* conv = dynamic_cast<Conv2d*>(&layer);
      MC_CHECK(conv, "LoRA: layer '", path, "' has a 4-d weight but is not a Conv2d");
      conv_ = true;
      conv_params_ = conv->params;
      MC_CHECK(conv_params_.groups == 1, "LoRA: layer '", path, "' is a grouped convolution (groups ",
               conv_params_.groups, "); LoRA supports groups = 1 only");
      lora_A = register_parameter(prefix + "lora_A", empty({r_, w.size(1), w.size(2), w.size(3)}, w.dtype(), w.device()));
      lora_B = register_parameter(prefix + "lora_B", zeros({out, r_, 1, 1}, w.dtype(), w.device()));
    } else {
      MC_CHECK(w.dim() == 2, "LoRA: layer '", path, "' has a weight of shape ", shape_str(w.shape()),
               " (expected [out, in] or [out, in, kh, kw])");
      packed_ = layer.packed_outputs == 3;
      if (packed_) parts_ = lora_detail::parse_parts(cfg.qkv_parts, "LoRA");
      if (!parts_.empty())
        MC_CHECK(out % 3 == 0, "LoRA: packed q/k/v layer '", path, "' has ", out, " outputs, not a multiple of 3");
      const int64_t n = parts_.empty() ? 1 : int64_t(parts_.size());
      const int64_t b_rows = parts_.empty() ? out : n * (out / 3);
      lora_A = register_parameter(prefix + "lora_A", empty({n * r_, w.size(1)}, w.dtype(), w.device()));
      lora_B = register_parameter(prefix + "lora_B", zeros({b_rows, r_}, w.dtype(), w.device()));
    }
    init::kaiming_uniform_(lora_A, std::sqrt(5.0));
  }

  int64_t r() const { return r_; }
  double alpha() const { return alpha_; }
  double scaling() const { return scaling_; }
  double dropout_p() const { return dropout_; }
  bool is_conv() const { return conv_; }
  bool is_packed() const { return packed_; }  // on a packed q/k/v projection
  bool merged() const { return merged_; }
  // The adapted parts of a packed q/k/v layer ("" = the whole output).
  std::string qkv_parts() const { return lora_detail::parts_str(parts_); }

  Tensor adapt(const Tensor& x, const Tensor& y) override {
    if (merged_) return y;
    Tensor h = dropout(x, dropout_, is_training());
    // The scaling is folded into B (r columns), the cheapest place for it.
    if (conv_) return add(y, conv2d(conv2d(h, lora_A, Tensor(), conv_params_), lora_B * scaling_));
    return add(y, linear(linear(h, lora_A), full_B() * scaling_));
  }

  // s * B A in the shape of the layer's weight (differentiable; merge() evaluates it without grad).
  Tensor delta_weight() const {
    const Tensor& w = layer_->adaptable_weight();
    if (conv_) {
      Tensor ba = matmul(lora_B.reshape({lora_B.size(0), r_}), lora_A.reshape({r_, lora_A.numel() / r_}));
      return (ba * scaling_).reshape(w.shape());
    }
    return matmul(full_B(), lora_A) * scaling_;
  }

  void merge() {
    if (merged_) return;
    NoGradGuard ng;
    add_(layer_->adaptable_weight(), delta_weight());
    merged_ = true;
  }
  void unmerge() {
    if (!merged_) return;
    NoGradGuard ng;
    add_(layer_->adaptable_weight(), delta_weight(), -1.0);
    merged_ = false;
  }

 private:
  // B as a [out, n r] matrix: B itself, or for per-part adapters the block matrix whose row block of part
  // p holds that part's B in the columns of its A rows (zeros elsewhere, and for parts left out).
  Tensor full_B() const {
    if (parts_.empty()) return lora_B;
    const int64_t n = int64_t(parts_.size()), P = lora_B.size(0) / n;
    const DType dt = lora_B.dtype();
    const Device dev = lora_B.device();
    std::vector<Tensor> rows;
    for (int slot = 0; slot < 3; ++slot) {
      auto it = std::find(parts_.begin(), parts_.end(), slot);
      if (it == parts_.end()) {
        rows.push_back(zeros({P, n * r_}, dt, dev));
        continue;
      }
      const int64_t i = it - parts_.begin();
      std::vector<Tensor> cols;
      if (i > 0) cols.push_back(zeros({P, i * r_}, dt, dev));
      cols.push_back(lora_B.narrow(0, i * P, P));
      if (i < n - 1) cols.push_back(zeros({P, (n - 1 - i) * r_}, dt, dev));
      rows.push_back(cols.size() == 1 ? cols[0] : cat(cols, 1));
    }
    return cat(rows, 0);
  }

  Adaptable* layer_;  // the owner (the adapter is its child, so it outlives the adapter)
  int64_t r_;
  double alpha_, scaling_, dropout_;
  std::vector<int> parts_;
  bool conv_ = false, packed_ = false;
  Conv2dParams conv_params_;
  bool merged_ = false;
};

namespace lora_detail {

struct LayerRef {
  std::string path;  // adapted path: module path + adapter_name
  Module* module;
  Adaptable* layer;
};

// Every adaptable layer under root, depth first, each once (a module shared by two paths keeps the first).
inline std::vector<LayerRef> adaptable_layers(const Module& root) {
  std::vector<LayerRef> out;
  std::set<const Module*> seen;
  auto rec = [&](auto&& self, const std::string& path, Module& m) -> void {
    if (auto* a = dynamic_cast<Adaptable*>(&m); a && seen.insert(&m).second) out.push_back({join(path, a->adapter_name), &m, a});
    for (auto& [name, child] : m.named_children()) self(self, join(path, name), *child);
  };
  // The tree is only read here; callers with a const root only read tensor handles.
  rec(rec, "", const_cast<Module&>(root));
  return out;
}

}  // namespace lora_detail

// The LoRA adapters under root with their adapted paths, depth first.
inline std::vector<std::pair<std::string, LoraAdapter*>> lora_adapters(const Module& root) {
  std::vector<std::pair<std::string, LoraAdapter*>> out;
  for (auto& l : lora_detail::adaptable_layers(root))
    if (auto* a = dynamic_cast<LoraAdapter*>(l.layer->adapter.get())) out.emplace_back(l.path, a);
  return out;
}

// Attaches a LoRA adapter to every adaptable layer whose adapted path matches one of cfg.targets; returns
// how many. Throws (changing nothing) when the config is invalid, a pattern matches no adaptable layer, or
// a matched layer already has an adapter.
inline int64_t apply_lora(Module& root, const LoraConfig& cfg) {
  lora_detail::check_config(cfg, "apply_lora");
  const auto layers = lora_detail::adaptable_layers(root);
  std::vector<const lora_detail::LayerRef*> chosen;
  for (const std::string& pat : cfg.targets) {
    int64_t hits = 0;
    for (const auto& l : layers)
      if (glob_match(pat, l.path)) ++hits;
    if (hits == 0) {
      std::string examples;
      for (size_t i = 0; i < layers.size() && i < 4; ++i) examples += (i ? ", '" : "'") + layers[i].path + "'";
      fail("apply_lora: target pattern '", pat, "' matches no adaptable layer (Linear, Conv2d, packed q/k/v "
           "projection); ", layers.empty() ? std::string("the module has none") : "adaptable layers are named like " + examples);
    }
  }
  for (const auto& l : layers) {
    bool match = false;
    for (const std::string& pat : cfg.targets) match = match || glob_match(pat, l.path);
    if (!match) continue;
    MC_CHECK(!l.layer->adapter, "apply_lora: layer '", l.path, "' already has an adapter (LoRA applied twice?)");
    chosen.push_back(&l);
  }
  // Build every adapter before attaching any, so a failure leaves the model as it was.
  std::vector<std::shared_ptr<LoraAdapter>> made;
  for (const auto* l : chosen) made.push_back(std::make_shared<LoraAdapter>(*l->layer, cfg, l->path));
  for (size_t i = 0; i < chosen.size(); ++i) {
    chosen[i]->module->register_module("", made[i]);
    made[i]->train(chosen[i]->module->is_training());
    chosen[i]->layer->adapter = made[i];
  }
  return int64_t(chosen.size());
}

// Freezes every parameter except the LoRA adapters' (which become trainable); returns the number of
// trainable elements.
inline int64_t mark_only_lora_trainable(Module& root) {
  const auto adapters = lora_adapters(root);
  MC_CHECK(!adapters.empty(), "mark_only_lora_trainable: the module has no LoRA adapters (call apply_lora first)");
  root.freeze("*");
  for (auto& [path, a] : adapters) a->unfreeze("*");
  return root.num_parameters(true);
}

// Adds each adapter's update into its layer's weight (adapters already merged are skipped); returns the
// number merged now. Throws when root has no LoRA adapters.
inline int64_t merge_lora(Module& root) {
  const auto adapters = lora_adapters(root);
  MC_CHECK(!adapters.empty(), "merge_lora: the module has no LoRA adapters");
  int64_t n = 0;
  for (auto& [path, a] : adapters)
    if (!a->merged()) {
      a->merge();
      ++n;
    }
  return n;
}

// Subtracts the merged updates again (the inverse of merge_lora); returns the number unmerged now.
inline int64_t unmerge_lora(Module& root) {
  const auto adapters = lora_adapters(root);
  MC_CHECK(!adapters.empty(), "unmerge_lora: the module has no LoRA adapters");
  int64_t n = 0;
  for (auto& [path, a] : adapters)
    if (a->merged()) {
      a->unmerge();
      ++n;
    }
  return n;
}

// The adapter tensors with peft's names: "base_model.model.<adapted path>.lora_A.weight" / ".lora_B.weight".
inline NamedTensors lora_state_dict(const Module& root) {
  NamedTensors out;
  for (auto& [path, a] : lora_adapters(root)) {
    const std::string base = lora_detail::join("base_model.model", path);
    out.emplace_back(base + ".lora_A.weight", a->lora_A);
    out.emplace_back(base + ".lora_B.weight", a->lora_B);
  }
  return out;
}

// Copies adapter tensors (peft names, as lora_state_dict) into root's adapters, converting dtype and
// device. strict: missing, unexpected or mismatched keys throw listing them all, and nothing is changed;
// otherwise what matches is loaded and the report returned. Merged adapters are refused (unmerge first).
inline LoadReport load_lora_state_dict(Module& root, const NamedTensors& sd, bool strict = true) {
  const auto adapters = lora_adapters(root);
  MC_CHECK(!adapters.empty(), "load_lora_state_dict: the module has no LoRA adapters (call apply_lora first)");
  for (auto& [path, a] : adapters)
    MC_CHECK(!a->merged(), "load_lora_state_dict: the adapter of '", path, "' is merged (call unmerge_lora first)");
  return load_named(lora_state_dict(root), sd, strict, "load_lora_state_dict");
}

namespace lora_detail {

inline std::string config_json(const LoraConfig& c) {
  nlohmann::json j;
  j["r"] = c.r;
  j["lora_alpha"] = c.alpha;
  j["lora_dropout"] = c.dropout;
  j["target_modules"] = c.targets;
  j["qkv_parts"] = c.qkv_parts;
  return j.dump();
}

inline LoraConfig parse_config_json(const std::string& text, const std::string& path) {
  LoraConfig c;
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    c.r = j.at("r").get<int64_t>();
    c.alpha = j.at("lora_alpha").get<double>();
    c.dropout = j.at("lora_dropout").get<double>();
    c.targets = j.at("target_modules").get<std::vector<std::string>>();
    c.qkv_parts = j.value("qkv_parts", std::string());
  } catch (const nlohmann::json::exception& e) {
    fail("load_lora: ", path, ": invalid LoRA config in metadata '", kLoraConfigKey, "' (", e.what(), ")");
  }
  return c;
}

// Whether an existing adapter was made with this config (rank, alpha, dropout, packed parts).
inline void check_adapter(const LoraAdapter& a, const std::string& layer, const LoraConfig& c, const char* who,
                          const std::string& where) {
  MC_CHECK(a.r() == c.r && a.alpha() == c.alpha && a.dropout_p() == c.dropout, who, ": ", where, "the adapter of '",
           layer, "' has r ", a.r(), ", alpha ", a.alpha(), ", dropout ", a.dropout_p(), " but the config has r ", c.r,
           ", alpha ", c.alpha, ", dropout ", c.dropout);
  const std::string parts = a.qkv_parts();
  MC_CHECK(!a.is_packed() || parts == parts_str(parse_parts(c.qkv_parts, who)), who, ": ", where, "the adapter of '",
           layer, "' covers q/k/v parts '", parts, "' but the config says '", c.qkv_parts, "'");
}

}  // namespace lora_detail

// Writes root's adapters (lora_state_dict) and cfg to a safetensors file, atomically. cfg must describe
// the adapters (the config they were applied with): every adapter's rank, alpha, dropout and q/k/v parts
// equal cfg's and its path matches one of cfg.targets.
inline void save_lora(const std::string& path, const Module& root, const LoraConfig& cfg) {
  lora_detail::check_config(cfg, "save_lora");
  const auto adapters = lora_adapters(root);
  MC_CHECK(!adapters.empty(), "save_lora: ", path, ": the module has no LoRA adapters");
  for (auto& [layer, a] : adapters) {
    lora_detail::check_adapter(*a, layer, cfg, "save_lora", path + ": ");
    bool match = false;
    for (const std::string& pat : cfg.targets) match = match || glob_match(pat, layer);
    MC_CHECK(match, "save_lora: ", path, ": the adapter of '", layer, "' matches none of the config's targets");
  }
  io::save_safetensors(path, lora_state_dict(root),
                       {{kLoraFormatKey, kLoraFormat}, {kLoraConfigKey, lora_detail::config_json(cfg)}});
}

// Reads a save_lora file into root: applies its config when root has no adapters yet (otherwise checks
// that the adapters there were made with it), then loads the tensors strictly. Returns the config. If the
// tensors then fail to load, root keeps the fresh adapters, which leave its outputs unchanged.
inline LoraConfig load_lora(const std::string& path, Module& root) {
  io::SafetensorsFile f = io::SafetensorsFile::open(path);
  const auto& meta = f.metadata();
  auto fmt = meta.find(kLoraFormatKey);
  MC_CHECK(fmt != meta.end() && fmt->second == kLoraFormat, "load_lora: ", path, ": not a LoRA adapter file (metadata '",
           kLoraFormatKey, "' is ", fmt == meta.end() ? std::string("missing") : "'" + fmt->second + "'", ", expected '",
           kLoraFormat, "')");
  auto conf = meta.find(kLoraConfigKey);
  MC_CHECK(conf != meta.end(), "load_lora: ", path, ": metadata '", kLoraConfigKey, "' is missing");
  LoraConfig cfg = lora_detail::parse_config_json(conf->second, path);
  lora_detail::check_config(cfg, "load_lora: " + path);
  NamedTensors sd;
  for (const std::string& n : f.names()) sd.emplace_back(n, f.get(n));
  const auto existing = lora_adapters(root);
  for (auto& [layer, a] : existing) lora_detail::check_adapter(*a, layer, cfg, "load_lora", path + ": ");
  try {
    if (existing.empty()) apply_lora(root, cfg);
    load_lora_state_dict(root, sd, true);
  } catch (const Error& e) {
    fail("load_lora: ", path, ": ", e.what());
  }
  return cfg;
}

}  // namespace mc::nn
