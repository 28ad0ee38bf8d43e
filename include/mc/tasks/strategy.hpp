// mc/tasks/strategy.hpp — fine-tuning strategies: which parameters train, in which optimizer groups.
//
// The trained module is a TaskModel (mc/tasks/task.hpp): the dual encoder under the checkpoint's names and
// the task head under "head." (the linear classifier "head.weight", the BAN "head.v_att..."). Every
// parameter belongs to one part:
//   vision_tower       the image encoder (prefix vision.prefix), without its projection
//   vision_projection  the card's vision projection; inside the tower: the openai ViT's "proj" and the
//                      ModifiedResNet's "attnpool.c_proj" (the layer that maps to the embedding)
//   text_tower         the text encoder, without its projection
//   text_projection    the card's text projection (CLIP: "text_projection" inside the tower)
//   logit_scale        the card's logit-scale parameter
//   head               the task head ("head.*")
//   adapter            LoRA tensors ("...lora_A", "...lora_B")
// Only parameters the task's loss reaches can train (a linear classifier on image embeddings never touches
// the text tower; BAN reads the text tower's tokens, not its projection): the caller passes that set, found
// by one forward and backward pass (trainer.hpp: used_parameters), so a strategy trains exactly what it
// names and no trainable parameter sits idle.
//
// Presets (then "train": [globs] makes more parameters trainable, "freeze": [globs] fewer; each glob must
// match a parameter; glob syntax of nn::glob_match, '*' spans dots):
//   zeroshot  nothing trains (evaluation only; "train", "freeze" and "groups" are refused)
//   partial   vision_projection, text_projection, logit_scale, head — both encoders frozen
//   full      every part the task uses, in two groups:
//               "encoders" (lr train.encoder_lr, wd train.encoder_weight_decay): vision_tower, text_tower,
//                          adapter, except the names of the next line
//               "heads"    (lr train.head_lr, wd train.head_weight_decay): projections, logit_scale, head,
//                          and, as the paper's code groups them, every "*positional_embedding",
//                          "*token_embedding.*" and "*ln_final.*"
//   lora      adapter, vision_projection, text_projection, head. Adapters go on the vision tower: by default
//             "<vision prefix>.*.attn.*" and "<vision prefix>.*.mlp.*" (ViT: q/k/v + output projection, both
//             MLP linears) or "<vision prefix>.*conv*" and "<vision prefix>.*downsample.0" (ResNets: every
//             convolution); r 8, alpha 16, dropout 0. "lora": {"r", "alpha", "dropout", "targets": [globs
//             of adapted layer paths], "qkv_parts": "qv" (separate adapters on some of a packed q/k/v)}
//             changes them (mc/nn/lora.hpp). A (kaiming) and B (zero) are initialised as loralib does, so
//             training starts from the pretrained model.
//   partial and lora use one group "trainable" (lr train.lr, wd train.weight_decay).
// Groups can be changed with "groups": [{"name": "heads", "lr": 2e-5}] (a preset group's lr / weight
// decay) or added: [{"name": "proj", "params": ["visual.proj"], "lr": 1e-4, "weight_decay": 0}] — a group
// with "params" takes the trainable parameters its globs match before the preset groups do. A group left
// without parameters is dropped.
//
// set_training_mode(root, true) puts the model in training mode except every module whose parameters are
// all frozen: those run in eval mode, so frozen towers keep their batch-norm statistics and drop no
// activations. Parameter-free modules (dropout) follow their parent.
#pragma once
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mc/nn/lora.hpp"
#include "mc/optim/optimizer.hpp"
#include "mc/tasks/experiment.hpp"
#include "mc/tasks/task.hpp"

namespace mc::tasks {

enum class Part { vision_tower, vision_projection, text_tower, text_projection, logit_scale, head, adapter };

inline const char* part_name(Part p) {
  switch (p) {
    case Part::vision_tower: return "vision_tower";
    case Part::vision_projection: return "vision_projection";
    case Part::text_tower: return "text_tower";
    case Part::text_projection: return "text_projection";
    case Part::logit_scale: return "logit_scale";
    case Part::head: return "head";
    case Part::adapter: return "adapter";
  }
  return "?";
}

namespace strategy_detail {

inline bool is_adapter_name(const std::string& name) {
  const size_t dot = name.rfind('.');
  const std::string last = dot == std::string::npos ? name : name.substr(dot + 1);
  return last.size() >= 6 && (last.compare(last.size() - 6, 6, "lora_A") == 0 || last.compare(last.size() - 6, 6, "lora_B") == 0);
}

inline std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

inline std::string fmt_count(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

inline std::string fmt_num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

}  // namespace strategy_detail

// The part of every parameter of m, by name.
inline std::map<std::string, Part> parameter_parts(const TaskModel& m) {
  namespace sd = strategy_detail;
  const models::DualEncoder& enc = *m.encoder;
  const models::ModelCard& card = enc.card();
  std::map<std::string, Part> parts;
  auto mark = [&](const nn::NamedTensors& named, Part p) {
    for (const auto& [n, t] : named) parts[n] = p;
  };
  const std::string vp = card.vision.prefix, tp = card.text.prefix;
  if (enc.vit) {
    mark(enc.vit->named_parameters(vp), Part::vision_tower);
    if (enc.vit->proj.defined()) parts[sd::join(vp, "proj")] = Part::vision_projection;
  } else if (enc.modified_resnet) {
    mark(enc.modified_resnet->named_parameters(vp), Part::vision_tower);
    mark(enc.modified_resnet->attnpool->c_proj->named_parameters(sd::join(vp, "attnpool.c_proj")), Part::vision_projection);
  } else {
    mark(enc.resnet->named_parameters(vp), Part::vision_tower);
  }
  if (enc.vision_projection) mark(enc.vision_projection->named_parameters(card.vision.projection.name), Part::vision_projection);
  if (enc.clip_text) {
    mark(enc.clip_text->named_parameters(tp), Part::text_tower);
    parts[sd::join(tp, "text_projection")] = Part::text_projection;
  } else {
    mark(enc.bert->named_parameters(tp), Part::text_tower);
  }
  if (enc.text_projection) mark(enc.text_projection->named_parameters(card.text.projection.name), Part::text_projection);
  if (enc.text_projection_matrix.defined()) parts[card.text.projection.name] = Part::text_projection;
  if (enc.logit_scale_param.defined()) parts[*card.logit_scale.name] = Part::logit_scale;
  if (m.head) mark(m.head->named_parameters("head"), Part::head);
  for (const auto& [n, t] : m.named_parameters()) {
    if (strategy_detail::is_adapter_name(n)) {
      parts[n] = Part::adapter;
      continue;
    }
    MC_CHECK(parts.count(n), "strategy: parameter '", n, "' belongs to no part of the model");
  }
  return parts;
}

// The LoRA configuration of the "lora" strategy for this model (defaults at the top of this file).
inline nn::LoraConfig lora_config(const models::ModelCard& card, const LoraOptions& o) {
  nn::LoraConfig c;
  c.r = o.r;
  c.alpha = o.alpha;
  c.dropout = o.dropout;
  c.qkv_parts = o.qkv_parts;
  c.targets = o.targets;
  if (c.targets.empty()) {
    const std::string& p = card.vision.prefix;
    if (card.vision.arch == "vit") c.targets = {p + ".*.attn.*", p + ".*.mlp.*"};
    else c.targets = {p + ".*conv*", p + ".*downsample.0"};
  }
  return c;
}

struct GroupInfo {
  std::string name;
  double lr = 0, weight_decay = 0;
  int64_t tensors = 0, elements = 0;
};

// What apply_strategy decided.
struct StrategyPlan {
  std::string name;
  std::vector<optim::ParamGroup> groups;  // non-empty groups, for the optimizer
  std::vector<GroupInfo> info;            // the same groups, described
  std::vector<std::string> trainable_names;
  int64_t trainable = 0, total = 0;       // elements
  bool lora = false;
  nn::LoraConfig lora_config;
  std::map<std::string, int64_t> trainable_by_part;

  std::string summary() const {
    namespace sd = strategy_detail;
    std::ostringstream o;
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.2f", total > 0 ? 100.0 * double(trainable) / double(total) : 0.0);
    o << "strategy " << name << ": " << sd::fmt_count(trainable) << " of " << sd::fmt_count(total)
      << " parameters train (" << pct << " %)";
    for (const GroupInfo& g : info)
      o << "; group " << g.name << ": " << sd::fmt_count(g.elements) << " in " << g.tensors << " tensors, lr "
        << sd::fmt_num(g.lr) << ", weight decay " << sd::fmt_num(g.weight_decay);
    return o.str();
  }
  ojson to_json() const {
    ojson j;
    j["name"] = name;
    j["trainable_parameters"] = trainable;
    j["total_parameters"] = total;
    ojson by = ojson::object();
    for (const auto& [p, n] : trainable_by_part) by[p] = n;
    j["trainable_by_part"] = by;
    ojson gs = ojson::array();
    for (const GroupInfo& g : info)
      gs.push_back({{"name", g.name}, {"lr", g.lr}, {"weight_decay", g.weight_decay}, {"tensors", g.tensors},
                    {"parameters", g.elements}});
    j["groups"] = gs;
    if (lora)
      j["lora"] = {{"r", lora_config.r}, {"alpha", lora_config.alpha}, {"dropout", lora_config.dropout},
                   {"targets", lora_config.targets}, {"qkv_parts", lora_config.qkv_parts}};
    return j;
  }
};

// Applies e.strategy to m: adds LoRA adapters (strategy "lora"), sets requires_grad on every parameter, and
// builds the optimizer groups. `used`: the names of the parameters the task's loss reaches (LoRA adapters,
// added here, count as used).
inline StrategyPlan apply_strategy(TaskModel& m, const Experiment& e, const std::set<std::string>& used) {
  namespace sd = strategy_detail;
  const StrategyConfig& s = e.strategy;
  const std::string what = e.source + ": strategy";
  StrategyPlan plan;
  plan.name = s.name;
  if (s.name == "lora") {
    bool vision = false;
    for (const auto& [n, p] : parameter_parts(m)) vision = vision || (p == Part::vision_tower && used.count(n));
    MC_CHECK(vision, what, ": lora adapts the vision tower, which this task does not use");
    plan.lora = true;
    plan.lora_config = lora_config(m.encoder->card(), s.lora);
    try {
      nn::apply_lora(m, plan.lora_config);
    } catch (const Error& ex) {
      fail(what, ".lora: ", ex.what());
    }
  }
  const std::map<std::string, Part> parts = parameter_parts(m);
  std::set<Part> preset;
  if (s.name == "partial") preset = {Part::vision_projection, Part::text_projection, Part::logit_scale, Part::head};
  else if (s.name == "full") preset = {Part::vision_tower, Part::vision_projection, Part::text_tower, Part::text_projection,
                                       Part::logit_scale, Part::head, Part::adapter};
  else if (s.name == "lora") preset = {Part::adapter, Part::vision_projection, Part::text_projection, Part::head};
  if (s.name == "zeroshot")
    MC_CHECK(s.train.empty() && s.freeze.empty() && s.groups.empty(), what,
             ": zeroshot trains nothing; \"train\", \"freeze\" and \"groups\" do not apply");

  nn::NamedTensors params = m.named_parameters();
  std::map<std::string, bool> on;
  for (const auto& [n, t] : params) {
    const Part p = parts.at(n);
    on[n] = preset.count(p) && (used.count(n) || p == Part::adapter);
  }
  auto apply_globs = [&](const std::vector<std::string>& globs, bool value, const char* key) {
    for (const std::string& g : globs) {
      int64_t hits = 0;
      for (const auto& [n, t] : params)
        if (nn::glob_match(g, n)) on[n] = value, ++hits;
      MC_CHECK(hits > 0, what, ".", key, ": '", g, "' matches no parameter (names look like '", params.front().first, "')");
    }
  };
  apply_globs(s.train, true, "train");
  apply_globs(s.freeze, false, "freeze");

  // Groups: the preset's, then the file's changes and additions.
  struct Group {
    std::string name;
    double lr, wd;
    std::vector<std::string> globs;  // user groups only
    std::vector<std::pair<std::string, Tensor>> members;
  };
  std::vector<Group> preset_groups, user_groups;
  const TrainConfig& t = e.train;
  if (s.name == "full") {
    preset_groups.push_back({"encoders", t.encoder_lr, t.encoder_weight_decay, {}, {}});
    preset_groups.push_back({"heads", t.head_lr, t.head_weight_decay, {}, {}});
  } else {
    preset_groups.push_back({"trainable", t.lr, t.weight_decay, {}, {}});
  }
  for (const GroupSpec& g : s.groups) {
    auto it = std::find_if(preset_groups.begin(), preset_groups.end(), [&](const Group& p) { return p.name == g.name; });
    if (it != preset_groups.end()) {
      MC_CHECK(g.params.empty(), what, ".groups: '", g.name, "' is a group of the preset; give it \"lr\" / "
               "\"weight_decay\" only, or add a group under a new name");
      if (g.lr) it->lr = *g.lr;
      if (g.weight_decay) it->wd = *g.weight_decay;
      continue;
    }
    MC_CHECK(!g.params.empty(), what, ".groups: '", g.name, "' is not a group of the preset '", s.name,
             "', so it needs \"params\" (globs)");
    user_groups.push_back({g.name, g.lr.value_or(t.lr), g.weight_decay.value_or(t.weight_decay), g.params, {}});
  }
  const std::vector<std::string> head_like = {"*positional_embedding", "*token_embedding.*", "*ln_final.*"};
  for (const auto& [n, tensor] : params) {
    Tensor h = tensor;
    h.requires_grad_(on[n]);
    plan.total += tensor.numel();
    if (!on[n]) continue;
    plan.trainable += tensor.numel();
    plan.trainable_names.push_back(n);
    plan.trainable_by_part[part_name(parts.at(n))] += tensor.numel();
    Group* dst = nullptr;
    for (Group& g : user_groups)
      for (const std::string& glob : g.globs)
        if (!dst && nn::glob_match(glob, n)) dst = &g;
    if (!dst) {
      if (s.name == "full") {
        const Part p = parts.at(n);
        bool encoder = p == Part::vision_tower || p == Part::text_tower || p == Part::adapter;
        for (const std::string& glob : head_like) encoder = encoder && !nn::glob_match(glob, n);
        dst = &preset_groups[encoder ? 0 : 1];
      } else {
        dst = &preset_groups[0];
      }
    }
    dst->members.emplace_back(n, tensor);
  }
  for (const std::vector<Group>* list : {&user_groups, &preset_groups})
    for (const Group& g : *list) {
      if (g.members.empty()) continue;
      optim::ParamGroup pg;
      pg.name = g.name;
      pg.lr = g.lr;
      pg.weight_decay = g.wd;
      pg.beta1 = t.beta1;
      pg.beta2 = t.beta2;
      pg.eps = t.eps;
      pg.momentum = t.momentum;
      GroupInfo info{g.name, g.lr, g.wd, 0, 0};
      for (const auto& [n, tensor] : g.members) {
        pg.params.push_back(tensor);
        ++info.tensors;
        info.elements += tensor.numel();
      }
      plan.groups.push_back(std::move(pg));
      plan.info.push_back(info);
    }
  MC_CHECK(s.name == "zeroshot" || plan.trainable > 0, what, ": strategy '", s.name,
           "' leaves no parameter to train for this task");
  return plan;
}

// Training mode for root, except modules whose parameters are all frozen (eval); or eval everywhere.
inline void set_training_mode(nn::Module& root, bool training) {
  if (!training) {
    root.eval();
    return;
  }
  root.train(true);
  for (auto& [name, mod] : root.named_modules()) {
    bool any = false, trainable = false;
    for (const auto& [n, t] : mod->named_parameters()) {
      any = true;
      if (t.requires_grad()) {
        trainable = true;
        break;
      }
    }
    if (any && !trainable && mod->is_training()) mod->eval();
  }
}

}  // namespace mc::tasks
