// mc/models/card.hpp — ModelCard: everything mc needs to know about one image-text dual encoder.
//
// A card is a small JSON document (weights/<model>.json) that names the architecture of each tower, where
// its tensors live in the checkpoint's state dict, how embeddings are pooled and projected, which logit
// scale the study uses, how text is tokenized and images preprocessed, and where the checkpoint comes
// from. `mc convert` stores the card inside the converted .safetensors file (metadata "mc.card"), so a
// converted model is self-describing. Parsing is strict: an unknown key, a value of the wrong type or an
// unknown enumerated value throws mc::Error naming the key path ("vision.config.widht"). Keys marked
// "default" below may be left out; to_json() writes every key, and parse(to_json(c)) gives c back.
//
//   {
//     "name": "clip-vit-b32",                      short identifier
//     "description": "...",                        free text (default "")
//     "embed_dim": 512,                            size of the joint embedding space
//     "vision": {
//       "arch": "vit" | "modified_resnet" | "resnet",
//       "prefix": "visual",                        state-dict prefix of the tower ("visual.trunk", ...)
//       "config": {...},                           the arch's config fields (below); unset fields default
//       "projection": {"type": "none"}             the tower's output is the embedding (openai ViT: the
//                                                  proj matrix lives inside the ViT; ModifiedResNet: attnpool)
//                   | {"type": "linear", "name": "visual.head.proj", "bias": false}
//     },
//     "text": {
//       "arch": "clip" | "bert",
//       "prefix": "",                              "" = the CLIP text tower sits at the top level
//       "config": {...},
//       "pool": "eot"                              CLIP: ln_final at the argmax (end-of-text) token
//             | "cls"                              BERT: last_hidden_state[:, 0]
//             | "last_token"                       BERT: last_hidden_state at attention_mask.sum - 1
//             | "pooler_output",                   BERT: tanh(dense(cls)) (needs config.pooler = true)
//       "use_attention_mask": true,                pass the padding mask to BERT (default true); when
//                                                  false the tower sees every position, as PMC-CLIP's code
//       "projection": {"type": "none"}             (CLIP: text_projection lives in the text tower)
//                   | {"type": "matrix", "name": "text_projection"}            x @ W, W [width, embed_dim]
//                   | {"type": "linear", "name": "...", "bias": true}          Linear(width, embed_dim)
//                   | {"type": "mlp", "name": "text.proj", "hidden": 640, "bias": false, "act": "gelu"}
//                                                  name.0 Linear(width, hidden) -> act -> name.2 Linear(hidden,
//                                                  embed_dim) (open_clip's Sequential)
//     },
//     "logit_scale": {
//       "name": "logit_scale" | null,              the scalar parameter in the checkpoint (null: none)
//       "train": "exp" | "raw" | <number>,         scale of the contrastive logits in training / retrieval
//       "zero_shot": "exp" | "raw" | <number>      scale at zero-shot classification
//     },                                           exp: exp(parameter); raw: the parameter as is; a number:
//                                                  that fixed value
//     "tokenizer": {"type": "clip_bpe" | "wordpiece", "context_length": 77, "lowercase": true},
//     "preprocess": {"size": 224, "interpolation": "bicubic" | "bilinear", "mean": [r, g, b], "std": [r, g, b]},
//     "checkpoint": {
//       "url": "...", "file": "ViT-B-32.pt",       where a user downloads the original checkpoint
//       "sha256": "..." | null,                    null when not known
//       "format": "torchscript" | "zip" | "legacy",
//       "state_dict": "state_dict" | null,         the entry holding the state dict (null: the top level or
//                                                  whatever find_state_dict finds); informational
//       "strip_prefix": ["module."],               removed from the front of every key that has it
//       "drop": ["*.num_batches_tracked", ...],    glob patterns of keys the model does not use
//       "notes": "..."                             free text (default "")
//     }
//   }
//
// Config fields per arch (defaults are those of the config structs):
//   vit:             variant ("openai" | "timm"), image_size, patch_size, width, layers, heads, mlp_ratio,
//                    ln_eps, act ("quick_gelu" | "gelu" | "gelu_tanh"), output_dim (openai: proj columns)
//   modified_resnet: layers [4], width, heads, output_dim, image_size, bn_eps
//   resnet:          block ("basic" | "bottleneck"), layers [4], width, bn_eps
//   clip (text):     vocab_size, context_length, width, layers, heads, output_dim, ln_eps, act
//   bert:            vocab_size, hidden_size, layers, heads, intermediate_size, max_position_embeddings,
//                    type_vocab_size, pad_token_id, ln_eps, hidden_dropout, attention_dropout, pooler, act
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/core/error.hpp"
#include "mc/data/transforms.hpp"
#include "mc/io/file.hpp"
#include "mc/models/bert.hpp"
#include "mc/models/clip_text.hpp"
#include "mc/models/resnet.hpp"
#include "mc/models/vit.hpp"

namespace mc::models {

using card_json = nlohmann::ordered_json;

// A projection head after a tower's pooled output.
struct ProjectionSpec {
  std::string type = "none";  // none | linear | matrix | mlp
  std::string name;           // dotted state-dict name of the layer / parameter (mlp: of the Sequential)
  bool bias = false;          // linear, mlp
  int64_t hidden = 0;         // mlp: width of the hidden layer
  std::string act = "gelu";   // mlp: activation between the two layers (gelu | gelu_tanh | quick_gelu | relu)
};

struct VisionSpec {
  std::string arch = "vit";  // vit | modified_resnet | resnet
  std::string prefix = "visual";
  ViTConfig vit;
  ModifiedResNetConfig modified_resnet;
  ResNetConfig resnet;
  ProjectionSpec projection;
};

struct TextSpec {
  std::string arch = "clip";  // clip | bert
  std::string prefix;
  ClipTextConfig clip;
  BertConfig bert;
  std::string pool = "eot";  // eot | cls | last_token | pooler_output
  bool use_attention_mask = true;
  ProjectionSpec projection;
};

// A logit-scale convention: exp(parameter), the raw parameter, or a fixed number.
struct ScaleRule {
  std::string mode = "exp";  // exp | raw | fixed
  double value = 0;          // fixed
};

struct LogitScaleSpec {
  std::optional<std::string> name = "logit_scale";
  ScaleRule train, zero_shot;
};

struct TokenizerSpec {
  std::string type = "clip_bpe";  // clip_bpe | wordpiece
  int64_t context_length = 77;
  bool lowercase = true;
};

struct PreprocessSpec {
  int64_t size = 224;
  std::string interpolation = "bicubic";  // bicubic | bilinear
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};

  // The torchvision pipeline: Resize(size, interpolation) -> CenterCrop(size) -> RGB -> Normalize.
  data::Preprocess make() const {
    data::Preprocess p;
    p.size = int(size);
    p.filter = interpolation == "bilinear" ? data::Filter::Bilinear : data::Filter::Bicubic;
    for (size_t c = 0; c < 3; ++c) {
      p.mean[c] = float(mean[c]);
      p.std[c] = float(std[c]);
    }
    return p;
  }
};

struct CheckpointSpec {
  std::string url, file;
  std::optional<std::string> sha256;
  std::string format = "zip";  // torchscript | zip | legacy
  std::optional<std::string> state_dict;
  std::vector<std::string> strip_prefix{"module."};
  std::vector<std::string> drop;
  std::string notes;
};

struct ModelCard {
  std::string name, description;
  int64_t embed_dim = 512;
  VisionSpec vision;
  TextSpec text;
  LogitScaleSpec logit_scale;
  TokenizerSpec tokenizer;
  PreprocessSpec preprocess;
  CheckpointSpec checkpoint;

  static ModelCard parse(const std::string& json_text, const std::string& what = "model card");
  static ModelCard from_json(const card_json& j, const std::string& what = "model card");
  static ModelCard load(const std::string& path);
  card_json to_json() const;
  std::string dump(int indent = 2) const { return to_json().dump(indent); }
  // Checks the fields against each other (dims, pools, tokenizer); throws mc::Error naming the key.
  void validate(const std::string& what = "model card") const;
};

namespace card_detail {

// Reads one JSON object strictly: each get marks its key as known; finish() rejects the rest.
class Reader {
 public:
  Reader(const card_json& j, std::string path, std::string what) : j_(j), path_(std::move(path)), what_(std::move(what)) {
    MC_CHECK(j.is_object(), what_, ": ", where(), " must be a JSON object, got ", j.type_name());
  }

  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  bool has(const std::string& key) const { return j_.contains(key); }

  const card_json* find(const std::string& key, bool required) {
    known_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end()) {
      MC_CHECK(!required, what_, ": missing key '", key_path(key), "'");
      return nullptr;
    }
    return &*it;
  }

  void get(const std::string& key, std::string& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      check(v->is_string(), key, "a string", *v);
      out = v->get<std::string>();
    }
  }
  void get(const std::string& key, std::optional<std::string>& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      if (v->is_null()) {
        out.reset();
        return;
      }
      check(v->is_string(), key, "a string or null", *v);
      out = v->get<std::string>();
    }
  }
  void get(const std::string& key, int64_t& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      check(v->is_number_integer(), key, "an integer", *v);
      out = v->get<int64_t>();
    }
  }
  void get(const std::string& key, double& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      check(v->is_number(), key, "a number", *v);
      out = v->get<double>();
    }
  }
  void get(const std::string& key, bool& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      check(v->is_boolean(), key, "true or false", *v);
      out = v->get<bool>();
    }
  }
  void get(const std::string& key, std::vector<int64_t>& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      check(v->is_array(), key, "an array of integers", *v);
      out.clear();
      for (const auto& e : *v) {
        check(e.is_number_integer(), key, "an array of integers", *v);
        out.push_back(e.get<int64_t>());
      }
    }
  }
  void get(const std::string& key, std::vector<std::string>& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      check(v->is_array(), key, "an array of strings", *v);
      out.clear();
      for (const auto& e : *v) {
        check(e.is_string(), key, "an array of strings", *v);
        out.push_back(e.get<std::string>());
      }
    }
  }
  void get(const std::string& key, std::array<double, 3>& out, bool required = false) {
    if (const card_json* v = find(key, required)) {
      check(v->is_array() && v->size() == 3, key, "an array of 3 numbers", *v);
      for (size_t i = 0; i < 3; ++i) {
        check((*v)[i].is_number(), key, "an array of 3 numbers", *v);
        out[i] = (*v)[i].get<double>();
      }
    }
  }
  // A string that must be one of `allowed`.
  void get_enum(const std::string& key, std::string& out, std::initializer_list<const char*> allowed,
                bool required = false) {
    if (!has(key)) {
      find(key, required);
      return;
    }
    std::string s;
    get(key, s);
    check_enum(key, s, allowed);
    out = s;
  }
  void check_enum(const std::string& key, const std::string& s, std::initializer_list<const char*> allowed) const {
    for (const char* a : allowed)
      if (s == a) return;
    std::string list;
    for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + "\"" + a + "\"";
    fail(what_, ": ", key_path(key), ": unknown value \"", s, "\" (expected one of ", list, ")");
  }
  // A nested object (required or not); nullptr when absent.
  const card_json* object(const std::string& key, bool required = false) {
    const card_json* v = find(key, required);
    if (v) check(v->is_object(), key, "a JSON object", *v);
    return v;
  }

  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      MC_CHECK(known_.count(it.key()), what_, ": unknown key '", key_path(it.key()), "'");
  }

  [[noreturn]] void bad(const std::string& key, const std::string& msg) const {
    fail(what_, ": ", key_path(key), ": ", msg);
  }
  const std::string& path() const { return path_; }
  const std::string& what() const { return what_; }

 private:
  std::string where() const { return path_.empty() ? std::string("the card") : "'" + path_ + "'"; }
  void check(bool ok, const std::string& key, const char* expected, const card_json& v) const {
    MC_CHECK(ok, what_, ": ", key_path(key), " must be ", expected, ", got ", v.dump());
  }
  const card_json& j_;
  std::string path_, what_;
  std::set<std::string> known_;
};

inline void read_projection(Reader& r, ProjectionSpec& p, std::initializer_list<const char*> types) {
  r.get_enum("type", p.type, types, true);
  if (p.type == "none") return;
  r.get("name", p.name, true);
  MC_CHECK(!p.name.empty(), r.what(), ": ", r.key_path("name"), " must not be empty");
  if (p.type == "linear" || p.type == "mlp") r.get("bias", p.bias);
  if (p.type == "mlp") {
    r.get("hidden", p.hidden, true);
    r.get_enum("act", p.act, {"gelu", "gelu_tanh", "quick_gelu", "relu"});
  }
}

inline card_json projection_json(const ProjectionSpec& p) {
  card_json j;
  j["type"] = p.type;
  if (p.type == "none") return j;
  j["name"] = p.name;
  if (p.type == "linear" || p.type == "mlp") j["bias"] = p.bias;
  if (p.type == "mlp") {
    j["hidden"] = p.hidden;
    j["act"] = p.act;
  }
  return j;
}

inline void read_scale(Reader& r, const std::string& key, ScaleRule& s) {
  const card_json* v = r.find(key, true);
  if (v->is_number()) {
    s.mode = "fixed";
    s.value = v->get<double>();
    MC_CHECK(std::isfinite(s.value) && s.value > 0, r.what(), ": ", r.key_path(key), " must be a positive number, got ",
             v->dump());
    return;
  }
  MC_CHECK(v->is_string(), r.what(), ": ", r.key_path(key), " must be \"exp\", \"raw\" or a number, got ", v->dump());
  s.mode = v->get<std::string>();
  s.value = 0;
  r.check_enum(key, s.mode, {"exp", "raw"});
}

inline card_json scale_json(const ScaleRule& s) { return s.mode == "fixed" ? card_json(s.value) : card_json(s.mode); }

inline void read_vision(Reader& r, VisionSpec& v) {
  r.get_enum("arch", v.arch, {"vit", "modified_resnet", "resnet"}, true);
  r.get("prefix", v.prefix, true);
  if (const card_json* c = r.object("config")) {
    Reader cr(*c, r.key_path("config"), r.what());
    if (v.arch == "vit") {
      ViTConfig& k = v.vit;
      cr.get_enum("variant", k.variant, {"openai", "timm"});
      cr.get("image_size", k.image_size);
      cr.get("patch_size", k.patch_size);
      cr.get("width", k.width);
      cr.get("layers", k.layers);
      cr.get("heads", k.heads);
      cr.get("mlp_ratio", k.mlp_ratio);
      cr.get("ln_eps", k.ln_eps);
      cr.get_enum("act", k.act, {"quick_gelu", "gelu", "gelu_tanh"});
      cr.get("output_dim", k.output_dim);
    } else if (v.arch == "modified_resnet") {
      ModifiedResNetConfig& k = v.modified_resnet;
      cr.get("layers", k.layers);
      cr.get("width", k.width);
      cr.get("heads", k.heads);
      cr.get("output_dim", k.output_dim);
      cr.get("image_size", k.image_size);
      cr.get("bn_eps", k.bn_eps);
    } else {
      ResNetConfig& k = v.resnet;
      cr.get_enum("block", k.block, {"basic", "bottleneck"});
      cr.get("layers", k.layers);
      cr.get("width", k.width);
      cr.get("bn_eps", k.bn_eps);
    }
    cr.finish();
  }
  const card_json* p = r.object("projection", true);
  Reader pr(*p, r.key_path("projection"), r.what());
  read_projection(pr, v.projection, {"none", "linear"});
  pr.finish();
}

inline card_json vision_json(const VisionSpec& v) {
  card_json j, c;
  j["arch"] = v.arch;
  j["prefix"] = v.prefix;
  if (v.arch == "vit") {
    const ViTConfig& k = v.vit;
    c = {{"variant", k.variant}, {"image_size", k.image_size}, {"patch_size", k.patch_size}, {"width", k.width},
         {"layers", k.layers}, {"heads", k.heads}, {"mlp_ratio", k.mlp_ratio}, {"ln_eps", k.ln_eps},
         {"act", k.act}, {"output_dim", k.output_dim}};
  } else if (v.arch == "modified_resnet") {
    const ModifiedResNetConfig& k = v.modified_resnet;
    c = {{"layers", k.layers}, {"width", k.width}, {"heads", k.heads}, {"output_dim", k.output_dim},
         {"image_size", k.image_size}, {"bn_eps", k.bn_eps}};
  } else {
    const ResNetConfig& k = v.resnet;
    c = {{"block", k.block}, {"layers", k.layers}, {"width", k.width}, {"bn_eps", k.bn_eps}};
  }
  j["config"] = c;
  j["projection"] = projection_json(v.projection);
  return j;
}

inline void read_text(Reader& r, TextSpec& t) {
  r.get_enum("arch", t.arch, {"clip", "bert"}, true);
  r.get("prefix", t.prefix, true);
  if (const card_json* c = r.object("config")) {
    Reader cr(*c, r.key_path("config"), r.what());
    if (t.arch == "clip") {
      ClipTextConfig& k = t.clip;
      cr.get("vocab_size", k.vocab_size);
      cr.get("context_length", k.context_length);
      cr.get("width", k.width);
      cr.get("layers", k.layers);
      cr.get("heads", k.heads);
      cr.get("output_dim", k.output_dim);
      cr.get("ln_eps", k.ln_eps);
      cr.get_enum("act", k.act, {"quick_gelu", "gelu", "gelu_tanh"});
    } else {
      BertConfig& k = t.bert;
      cr.get("vocab_size", k.vocab_size);
      cr.get("hidden_size", k.hidden_size);
      cr.get("layers", k.layers);
      cr.get("heads", k.heads);
      cr.get("intermediate_size", k.intermediate_size);
      cr.get("max_position_embeddings", k.max_position_embeddings);
      cr.get("type_vocab_size", k.type_vocab_size);
      cr.get("pad_token_id", k.pad_token_id);
      cr.get("ln_eps", k.ln_eps);
      cr.get("hidden_dropout", k.hidden_dropout);
      cr.get("attention_dropout", k.attention_dropout);
      cr.get("pooler", k.pooler);
      cr.get_enum("act", k.act, {"gelu", "gelu_tanh", "relu"});
    }
    cr.finish();
  }
  r.get_enum("pool", t.pool, {"eot", "cls", "last_token", "pooler_output"}, true);
  r.get("use_attention_mask", t.use_attention_mask);
  const card_json* p = r.object("projection", true);
  Reader pr(*p, r.key_path("projection"), r.what());
  read_projection(pr, t.projection, {"none", "matrix", "linear", "mlp"});
  pr.finish();
}

inline card_json text_json(const TextSpec& t) {
  card_json j, c;
  j["arch"] = t.arch;
  j["prefix"] = t.prefix;
  if (t.arch == "clip") {
    const ClipTextConfig& k = t.clip;
    c = {{"vocab_size", k.vocab_size}, {"context_length", k.context_length}, {"width", k.width},
         {"layers", k.layers}, {"heads", k.heads}, {"output_dim", k.output_dim}, {"ln_eps", k.ln_eps},
         {"act", k.act}};
  } else {
    const BertConfig& k = t.bert;
    c = {{"vocab_size", k.vocab_size}, {"hidden_size", k.hidden_size}, {"layers", k.layers}, {"heads", k.heads},
         {"intermediate_size", k.intermediate_size}, {"max_position_embeddings", k.max_position_embeddings},
         {"type_vocab_size", k.type_vocab_size}, {"pad_token_id", k.pad_token_id}, {"ln_eps", k.ln_eps},
         {"hidden_dropout", k.hidden_dropout}, {"attention_dropout", k.attention_dropout},
         {"pooler", k.pooler}, {"act", k.act}};
  }
  j["config"] = c;
  j["pool"] = t.pool;
  j["use_attention_mask"] = t.use_attention_mask;
  j["projection"] = projection_json(t.projection);
  return j;
}

}  // namespace card_detail

inline ModelCard ModelCard::from_json(const card_json& j, const std::string& what) {
  using card_detail::Reader;
  ModelCard c;
  Reader r(j, "", what);
  r.get("name", c.name, true);
  MC_CHECK(!c.name.empty(), what, ": name must not be empty");
  r.get("description", c.description);
  r.get("embed_dim", c.embed_dim, true);
  {
    Reader v(*r.object("vision", true), "vision", what);
    card_detail::read_vision(v, c.vision);
    v.finish();
  }
  {
    Reader t(*r.object("text", true), "text", what);
    card_detail::read_text(t, c.text);
    t.finish();
  }
  {
    Reader l(*r.object("logit_scale", true), "logit_scale", what);
    l.get("name", c.logit_scale.name, true);
    card_detail::read_scale(l, "train", c.logit_scale.train);
    card_detail::read_scale(l, "zero_shot", c.logit_scale.zero_shot);
    l.finish();
  }
  {
    Reader t(*r.object("tokenizer", true), "tokenizer", what);
    t.get_enum("type", c.tokenizer.type, {"clip_bpe", "wordpiece"}, true);
    t.get("context_length", c.tokenizer.context_length, true);
    t.get("lowercase", c.tokenizer.lowercase);
    t.finish();
  }
  if (const card_json* p = r.object("preprocess")) {
    Reader pr(*p, "preprocess", what);
    pr.get("size", c.preprocess.size);
    pr.get_enum("interpolation", c.preprocess.interpolation, {"bicubic", "bilinear"});
    pr.get("mean", c.preprocess.mean);
    pr.get("std", c.preprocess.std);
    pr.finish();
  }
  if (const card_json* p = r.object("checkpoint")) {
    Reader cr(*p, "checkpoint", what);
    cr.get("url", c.checkpoint.url);
    cr.get("file", c.checkpoint.file);
    cr.get("sha256", c.checkpoint.sha256);
    cr.get_enum("format", c.checkpoint.format, {"torchscript", "zip", "legacy"});
    cr.get("state_dict", c.checkpoint.state_dict);
    cr.get("strip_prefix", c.checkpoint.strip_prefix);
    cr.get("drop", c.checkpoint.drop);
    cr.get("notes", c.checkpoint.notes);
    cr.finish();
    if (c.checkpoint.sha256) {
      const std::string& s = *c.checkpoint.sha256;
      MC_CHECK(s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos, what,
               ": checkpoint.sha256 must be 64 lower-case hex digits or null, got \"", s, "\"");
    }
  }
  r.finish();
  c.validate(what);
  return c;
}

inline ModelCard ModelCard::parse(const std::string& json_text, const std::string& what) {
  card_json j;
  try {
    j = card_json::parse(json_text);
  } catch (const std::exception& e) {
    fail(what, ": not valid JSON (", e.what(), ")");
  }
  return from_json(j, what);
}

inline ModelCard ModelCard::load(const std::string& path) {
  auto bytes = io::read_file(path);
  return parse(std::string(bytes.begin(), bytes.end()), path);
}

inline card_json ModelCard::to_json() const {
  card_json j;
  j["name"] = name;
  j["description"] = description;
  j["embed_dim"] = embed_dim;
  j["vision"] = card_detail::vision_json(vision);
  j["text"] = card_detail::text_json(text);
  j["logit_scale"] = {{"name", logit_scale.name ? card_json(*logit_scale.name) : card_json(nullptr)},
                      {"train", card_detail::scale_json(logit_scale.train)},
                      {"zero_shot", card_detail::scale_json(logit_scale.zero_shot)}};
  j["tokenizer"] = {{"type", tokenizer.type}, {"context_length", tokenizer.context_length},
                    {"lowercase", tokenizer.lowercase}};
  j["preprocess"] = {{"size", preprocess.size}, {"interpolation", preprocess.interpolation},
                     {"mean", preprocess.mean}, {"std", preprocess.std}};
  const CheckpointSpec& k = checkpoint;
  j["checkpoint"] = {{"url", k.url},
                     {"file", k.file},
                     {"sha256", k.sha256 ? card_json(*k.sha256) : card_json(nullptr)},
                     {"format", k.format},
                     {"state_dict", k.state_dict ? card_json(*k.state_dict) : card_json(nullptr)},
                     {"strip_prefix", k.strip_prefix},
                     {"drop", k.drop},
                     {"notes", k.notes}};
  return j;
}

inline void ModelCard::validate(const std::string& what) const {
  auto need = [&](bool ok, const std::string& key, auto&&... msg) {
    if (!ok) fail(what, ": ", key, ": ", msg...);
  };
  need(embed_dim > 0, "embed_dim", "must be positive, got ", embed_dim);
  // Vision: the tower's output (after the projection) must be embed_dim wide.
  const ProjectionSpec& vp = vision.projection;
  need(!vision.prefix.empty(), "vision.prefix", "must not be empty (the image tower needs a name)");
  if (vision.arch == "vit") {
    const ViTConfig& k = vision.vit;
    need(k.image_size > 0 && k.patch_size > 0 && k.image_size % k.patch_size == 0, "vision.config",
         "image_size (", k.image_size, ") must be a positive multiple of patch_size (", k.patch_size, ")");
    need(k.width > 0 && k.layers > 0 && k.heads > 0 && k.width % k.heads == 0, "vision.config",
         "width (", k.width, "), layers (", k.layers, ") and heads (", k.heads,
         ") must be positive with heads dividing width");
    if (k.variant == "openai") {
      need(vp.type == "none", "vision.projection.type", "must be \"none\" for an openai ViT (its proj is inside)");
      need(k.output_dim == embed_dim, "vision.config.output_dim", "must equal embed_dim (", embed_dim, "), got ",
           k.output_dim);
    } else {
      need(k.output_dim == 0, "vision.config.output_dim", "must be 0 for a timm ViT, got ", k.output_dim);
      need(vp.type == "linear", "vision.projection.type", "must be \"linear\" for a timm ViT");
    }
  } else if (vision.arch == "modified_resnet") {
    const ModifiedResNetConfig& k = vision.modified_resnet;
    need(k.layers.size() == 4, "vision.config.layers", "must list 4 block counts");
    need(k.width > 0 && k.heads > 0 && (k.width * 32) % k.heads == 0, "vision.config",
         "heads (", k.heads, ") must divide the attention-pool width (32 * width = ", k.width * 32, ")");
    need(k.image_size >= 32 && k.image_size % 32 == 0, "vision.config.image_size", "must be a multiple of 32, got ",
         k.image_size);
    need(vp.type == "none", "vision.projection.type", "must be \"none\" for modified_resnet (attnpool projects)");
    need(k.output_dim == embed_dim, "vision.config.output_dim", "must equal embed_dim (", embed_dim, "), got ",
         k.output_dim);
  } else {
    const ResNetConfig& k = vision.resnet;
    need(k.layers.size() == 4, "vision.config.layers", "must list 4 block counts");
    need(k.width > 0, "vision.config.width", "must be positive");
    need(vp.type == "linear", "vision.projection.type", "must be \"linear\" for resnet (the tower gives pooled features)");
  }
  // Text.
  const ProjectionSpec& tp = text.projection;
  if (text.arch == "clip") {
    const ClipTextConfig& k = text.clip;
    need(k.width > 0 && k.layers > 0 && k.heads > 0 && k.width % k.heads == 0, "text.config",
         "width, layers and heads must be positive with heads dividing width");
    need(k.vocab_size > 0 && k.context_length > 0, "text.config", "vocab_size and context_length must be positive");
    need(text.pool == "eot", "text.pool", "must be \"eot\" for the CLIP text tower");
    need(tp.type == "none", "text.projection.type", "must be \"none\" for the CLIP text tower (text_projection is inside)");
    need(k.output_dim == embed_dim, "text.config.output_dim", "must equal embed_dim (", embed_dim, "), got ",
         k.output_dim);
    need(tokenizer.type == "clip_bpe", "tokenizer.type", "must be \"clip_bpe\" for the CLIP text tower");
    need(tokenizer.lowercase, "tokenizer.lowercase", "must be true for clip_bpe (CLIP's tokenizer always lower-cases)");
    need(tokenizer.context_length == k.context_length, "tokenizer.context_length", "must equal text.config.context_length (",
         k.context_length, ")");
  } else {
    const BertConfig& k = text.bert;
    need(k.hidden_size > 0 && k.layers > 0 && k.heads > 0 && k.hidden_size % k.heads == 0, "text.config",
         "hidden_size, layers and heads must be positive with heads dividing hidden_size");
    need(k.vocab_size > 0 && k.max_position_embeddings > 0, "text.config",
         "vocab_size and max_position_embeddings must be positive");
    need(text.pool != "eot", "text.pool", "\"eot\" is for the CLIP text tower; BERT pools with cls, last_token or pooler_output");
    need(text.pool != "pooler_output" || k.pooler, "text.pool", "\"pooler_output\" needs text.config.pooler = true");
    need(tp.type != "none", "text.projection.type", "a BERT tower needs a projection to embed_dim");
    need(tp.type != "mlp" || tp.hidden > 0, "text.projection.hidden", "must be positive");
    need(tokenizer.type == "wordpiece", "tokenizer.type", "must be \"wordpiece\" for a BERT text tower");
    need(tokenizer.context_length <= k.max_position_embeddings, "tokenizer.context_length",
         "must be at most text.config.max_position_embeddings (", k.max_position_embeddings, ")");
  }
  need(tokenizer.context_length >= 2, "tokenizer.context_length", "must be at least 2");
  // Logit scale.
  for (const auto* rule : {&logit_scale.train, &logit_scale.zero_shot})
    need(rule->mode == "fixed" || logit_scale.name.has_value(), "logit_scale.name",
         "is null, but a convention uses the parameter (\"", rule->mode, "\")");
  if (logit_scale.name) need(!logit_scale.name->empty(), "logit_scale.name", "must not be empty (use null)");
  need(preprocess.size > 0, "preprocess.size", "must be positive");
  for (size_t c = 0; c < 3; ++c) need(preprocess.std[c] > 0, "preprocess.std", "must be positive");
}

}  // namespace mc::models
