// mc/tasks/experiment.hpp — the experiment file of `mc run`: one model, one task, one data set, one strategy
// and its hyper-parameters, read strictly (an unknown key, a value of the wrong type or an unknown
// enumerated value is an mc::Error naming the file and the key path, e.g. "train.lerning_rate").
//
//   {
//     "name": "breastmnist-clip-partial",          default: the file name without ".json"
//     "model": "../weights/clip-vit-b32.safetensors",  a model converted by `mc convert --card`, or a model
//                                                  card (.json): that architecture with random weights
//                                                  (seeded), e.g. to time a run without a checkpoint (required)
//     "vocab": "",                                 with a card: the tokenizer vocabulary file (CLIP merges or
//                                                  vocab.txt), needed by tasks that read text
//     "family": "auto",                            clip | biomedclip | pmc-clip | cxr-clip | auto (from the
//                                                  card name: biomedclip*, pmc*, cxr*, clip* / openai*);
//                                                  chooses the defaults below
//     "task": "classification" | "retrieval" | "vqa",                                        (required)
//     "data": {...},                               below (required)
//     "strategy": "zeroshot" | "partial" | "full" | "lora"                                 (required)
//               | {"name": "lora", "train": [globs], "freeze": [globs], "groups": [...], "lora": {...}},
//                                                  see mc/tasks/strategy.hpp
//     "train": {...},                              hyper-parameters, below (all optional)
//     "classification" | "retrieval" | "vqa": {...},  options of the task named by "task" (optional)
//     "seed": 8464,                                model init, data order, subsets, dropout
//     "device": "cpu",                             cpu | cuda | cuda:N (cuda needs the CUDA backend)
//     "output": "runs/<name>",                     results folder (default: runs/<name> under the current
//                                                  directory)
//     "progress": "auto"                           auto (a bar on a terminal, plain lines otherwise) | bar |
//                                                  plain | off
//   }
// Relative paths in the file ("model", "vocab", "data.path", "data.images_dir", "data.dlinks", "output") are
// taken relative to the folder of the experiment file.
//
// "data", per data set ("max_*": keep that many samples of the split, a seeded random subset in data
// order, 0 = all; "image_size": 0 = the card's preprocess size, which a ViT requires):
//   {"dataset": "medmnist", "path": "breastmnist_224.npz", "flag": "" (from the file name),
//    "percentage": 1.0 (training fraction, stratified per class unless "stratified": false),
//    "train_split": "train", "val_split": "val" ("" = no validation), "test_split": "test",
//    "max_train"/"max_val"/"max_test": 0, "image_size": 0}
//   {"dataset": "vqa-rad", "path": ROOT, "images_dir": "", "val_fraction": 0.2024 (51/252, the paper's
//    image-based split of trainset.json), "train_split": "train", "val_split": "val", "test_split": "test",
//    "max_*", "image_size", "cache_images": true, "skip_missing": false}
//   {"dataset": "slake", "path": ROOT, "images_dir": "", "language": "en", "train_split": "train",
//    "val_split": "validate", "test_split": "test", "max_*", "image_size", "cache_images": true,
//    "skip_missing": false}
//   {"dataset": "roco", "path": ROOT, "data_type": "radiology" | "non-radiology" | "all", "images_dir": "",
//    "dlinks": "", "train_split": "train", "val_split": "validation", "test_split": "test", "max_*",
//    "image_size", "cache_images": false, "skip_missing": false}
// "cache_images" keeps every decoded, preprocessed image in memory (VQA sets reuse few images);
// "skip_missing" drops the samples whose image file is missing (counted in results.json) instead of
// stopping with an error naming the file.
//
// "train" (defaults per family and task: the tables below):
//   epochs, batch_size, eval_batch_size (default batch_size), optimizer ("adam" | "adamw" | "adamax" |
//   "sgd"), lr, weight_decay, betas [b1, b2] (0.9, 0.999), eps (1e-6), momentum (sgd, 0),
//   encoder_lr / encoder_weight_decay / head_lr / head_weight_decay (the two groups of "full"),
//   schedule ("constant" | "cosine", stepped per batch), warmup_steps (0), min_lr_ratio (0, cosine floor),
//   grad_clip (0 = off; global L2 norm), patience (early stopping on validation loss; 0 = off),
//   min_delta (0), restore_best (true), num_workers (0: batches are made on the training thread).
//
// Defaults (the paper's code, PAPER-CODE.md); retrieval's batch size is mc's (the paper's 3 is a defect):
//   classification  clip        lr 5e-5 wd 0.1  epochs 32  patience 5  batch 64  adam
//                   biomedclip  lr 1e-5 wd 0    epochs 196 patience 7  batch 64  adam
//                   pmc-clip    lr 5e-5 wd 0.1  epochs 32  patience 7  batch 64  adam
//                   cxr-clip    lr 5e-5 wd 0    epochs 32  patience 5  batch 64  adam
//                   "full": encoders lr 5e-5 (biomedclip 1e-5) wd 1e-3, heads lr 1e-5 wd 0
//   retrieval       all         lr 5e-4 wd 0.1  epochs 32  patience 5  batch 32  adam (pmc, cxr: adamw);
//                   "full": both groups at lr / weight_decay
//   vqa             all         lr 5e-3 wd 0    epochs 200 patience 5  batch 196 adamax;
//                   "full": both groups at lr / weight_decay
//
// Task options:
//   "classification": {"head": "linear" (Linear on the image feature, cross-entropy) | "contrastive"
//      (cross-entropy over scale * cos(image, prompt embeddings), the text tower in the loop),
//      "input": "embedding" (projected) | "features" (before the projection; cxr-clip's default for the
//      linear head, 2048-d), "prompt": template with "{}" (clip, biomedclip: "this is a photo of {}";
//      pmc-clip, cxr-clip: "{}"), "prompts": one text per class (instead of "prompt"; cxr-clip's default
//      for binary sets is "No <finding>" for the normal class and "<finding>" for the other, with the
//      classes the right way round), "class_names": [...] (default: medmnist INFO),
//      "zero_shot_scale": "card" | number}
//   "retrieval": {"ks": [1, 5, 10]}
//   "vqa": {"image_input": "embedding" (the pooled projected embedding, one token, as the paper) |
//      "features" (before the projection; cxr-clip's default) | "tokens" (the patch / grid tokens),
//      "question_mask": true (padding is masked in the text tower and BAN; false = the paper's variant),
//      "glimpses": 4, "k": 3, "dropout_fc": 0.2, "dropout_att": 0.5, "dropout_q": 0.2, "dropout_cls": 0.5}
#pragma once
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/core/error.hpp"
#include "mc/data/common.hpp"
#include "mc/data/vqa.hpp"
#include "mc/io/file.hpp"
#include "mc/models/card.hpp"

namespace mc::tasks {

using ojson = nlohmann::ordered_json;

struct TrainConfig {
  int64_t epochs = 32, batch_size = 64, eval_batch_size = 0;
  std::string optimizer = "adam";
  double lr = 5e-5, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-6, momentum = 0;
  double encoder_lr = 5e-5, encoder_weight_decay = 1e-3, head_lr = 1e-5, head_weight_decay = 0;
  std::string schedule = "constant";
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0, grad_clip = 0;
  int64_t patience = 5;
  double min_delta = 0;
  bool restore_best = true;
  int64_t num_workers = 0;
};

struct LoraOptions {
  int64_t r = 8;
  double alpha = 16, dropout = 0;
  std::vector<std::string> targets;  // empty: the vision tower's attention + MLP, or its convolutions
  std::string qkv_parts;
};

struct GroupSpec {
  std::string name;
  std::vector<std::string> params;  // globs; empty: changes the lr / weight decay of a preset group
  std::optional<double> lr, weight_decay;
};

struct StrategyConfig {
  std::string name;                        // zeroshot | partial | full | lora
  std::vector<std::string> train, freeze;  // globs applied after the preset
  std::vector<GroupSpec> groups;
  LoraOptions lora;
};

struct DataConfig {
  std::string dataset;  // medmnist | vqa-rad | slake | roco
  std::string path;
  std::string train_split, val_split, test_split;
  int64_t max_train = 0, max_val = 0, max_test = 0, image_size = 0;
  bool cache_images = false, skip_missing = false;
  // medmnist
  std::string flag;
  double percentage = 1.0;
  bool stratified = true;
  // vqa-rad / slake / roco
  std::string images_dir;
  double val_fraction = data::kVqaRadPaperValFraction;
  std::string language = "en";
  std::string data_type = "radiology", dlinks;
};

struct ClassificationOptions {
  std::string head = "linear";  // linear | contrastive
  std::string input;            // embedding | features
  std::string prompt;           // template with "{}"
  std::vector<std::string> prompts, class_names;
  std::optional<double> zero_shot_scale;  // unset: the card's rule
};

struct RetrievalOptions {
  std::vector<int64_t> ks{1, 5, 10};
};

struct VqaOptions {
  std::string image_input;  // embedding | features | tokens
  bool question_mask = true;
  int64_t glimpses = 4, k = 3;
  double dropout_fc = 0.2, dropout_att = 0.5, dropout_q = 0.2, dropout_cls = 0.5;
};

struct Experiment {
  std::string name, model, vocab, family = "auto", task;
  DataConfig data;
  StrategyConfig strategy;
  TrainConfig train;
  ClassificationOptions classification;
  RetrievalOptions retrieval;
  VqaOptions vqa;
  uint64_t seed = data::kDefaultSeed;
  std::string device = "cpu", output, progress = "auto";

  std::string source;                 // the file (or "experiment") errors name
  std::set<std::string> given;        // dotted keys set by the file (the rest take defaults)

  bool has(const std::string& key) const { return given.count(key) != 0; }

  static Experiment from_json(const ojson& j, const std::string& what = "experiment", const std::string& base_dir = "");
  static Experiment parse(const std::string& text, const std::string& what = "experiment", const std::string& base_dir = "");
  // Reads an experiment file; relative paths are taken against its folder, the name defaults to its stem.
  static Experiment load(const std::string& path);
  // Every key, with the defaults filled in (after resolve()): what results.json records.
  ojson to_json() const;
};

namespace experiment_detail {

using Reader = models::card_detail::Reader;

// A model given as a model card (random weights) rather than a converted file.
inline bool is_card_path(const std::string& p) { return p.size() >= 5 && p.compare(p.size() - 5, 5, ".json") == 0; }

inline std::string resolve_path(const std::string& base, const std::string& p) {
  if (p.empty() || base.empty() || p.front() == '/') return p;
  return (std::filesystem::path(base) / p).lexically_normal().string();
}

// Reads `key` into `out` and records "<prefix><key>" in `given` when present.
template <class T>
void get(Reader& r, std::set<std::string>& given, const std::string& key, T& out, bool required = false) {
  if (r.has(key)) given.insert(r.key_path(key));
  r.get(key, out, required);
}
inline void get_enum(Reader& r, std::set<std::string>& given, const std::string& key, std::string& out,
                     std::initializer_list<const char*> allowed, bool required = false) {
  if (r.has(key)) given.insert(r.key_path(key));
  r.get_enum(key, out, allowed, required);
}
inline void get_opt(Reader& r, std::set<std::string>& given, const std::string& key, std::optional<double>& out) {
  if (!r.has(key)) return;
  double v = 0;
  get(r, given, key, v);
  out = v;
}
inline void positive(const Reader& r, const std::string& key, double v, bool allow_zero = false) {
  if (!(allow_zero ? v >= 0 : v > 0)) r.bad(key, std::string("must be ") + (allow_zero ? "non-negative" : "positive"));
}

inline void read_train(Reader& r, TrainConfig& t, std::set<std::string>& g) {
  get(r, g, "epochs", t.epochs);
  get(r, g, "batch_size", t.batch_size);
  get(r, g, "eval_batch_size", t.eval_batch_size);
  get_enum(r, g, "optimizer", t.optimizer, {"adam", "adamw", "adamax", "sgd"});
  get(r, g, "lr", t.lr);
  get(r, g, "weight_decay", t.weight_decay);
  if (r.has("betas")) {
    g.insert(r.key_path("betas"));
    const auto* v = r.find("betas", false);
    if (!v->is_array() || v->size() != 2 || !(*v)[0].is_number() || !(*v)[1].is_number())
      r.bad("betas", "must be an array of two numbers, got " + v->dump());
    t.beta1 = (*v)[0].get<double>();
    t.beta2 = (*v)[1].get<double>();
    if (!(t.beta1 >= 0 && t.beta1 < 1 && t.beta2 >= 0 && t.beta2 < 1)) r.bad("betas", "must be in [0, 1)");
  }
  get(r, g, "eps", t.eps);
  get(r, g, "momentum", t.momentum);
  get(r, g, "encoder_lr", t.encoder_lr);
  get(r, g, "encoder_weight_decay", t.encoder_weight_decay);
  get(r, g, "head_lr", t.head_lr);
  get(r, g, "head_weight_decay", t.head_weight_decay);
  get_enum(r, g, "schedule", t.schedule, {"constant", "cosine"});
  get(r, g, "warmup_steps", t.warmup_steps);
  get(r, g, "min_lr_ratio", t.min_lr_ratio);
  get(r, g, "grad_clip", t.grad_clip);
  get(r, g, "patience", t.patience);
  get(r, g, "min_delta", t.min_delta);
  get(r, g, "restore_best", t.restore_best);
  get(r, g, "num_workers", t.num_workers);
  r.finish();
  if (t.epochs < 1) r.bad("epochs", "must be at least 1");
  if (t.batch_size < 1) r.bad("batch_size", "must be at least 1");
  if (t.eval_batch_size < 0) r.bad("eval_batch_size", "must be positive (0 = batch_size)");
  for (auto [k, v] : {std::pair<const char*, double>{"lr", t.lr}, {"weight_decay", t.weight_decay}, {"eps", t.eps},
                      {"momentum", t.momentum}, {"encoder_lr", t.encoder_lr},
                      {"encoder_weight_decay", t.encoder_weight_decay}, {"head_lr", t.head_lr},
                      {"head_weight_decay", t.head_weight_decay}, {"grad_clip", t.grad_clip},
                      {"min_delta", t.min_delta}})
    positive(r, k, v, true);
  if (t.warmup_steps < 0) r.bad("warmup_steps", "must be non-negative");
  if (!(t.min_lr_ratio >= 0 && t.min_lr_ratio <= 1)) r.bad("min_lr_ratio", "must be in [0, 1]");
  if (t.patience < 0) r.bad("patience", "must be non-negative (0 = no early stopping)");
  if (t.num_workers < 0 || t.num_workers > 64) r.bad("num_workers", "must be in [0, 64]");
}

inline void read_strategy(const ojson* v, Reader& parent, StrategyConfig& s, std::set<std::string>& g) {
  if (v->is_string()) {
    s.name = v->get<std::string>();
    parent.check_enum("strategy", s.name, {"zeroshot", "partial", "full", "lora"});
    return;
  }
  if (!v->is_object()) parent.bad("strategy", "must be a strategy name or an object, got " + v->dump());
  Reader r(*v, parent.key_path("strategy"), parent.what());
  get_enum(r, g, "name", s.name, {"zeroshot", "partial", "full", "lora"}, true);
  get(r, g, "train", s.train);
  get(r, g, "freeze", s.freeze);
  if (const ojson* gs = r.find("groups", false)) {
    g.insert(r.key_path("groups"));
    if (!gs->is_array()) r.bad("groups", "must be an array of objects");
    std::set<std::string> names;
    for (size_t i = 0; i < gs->size(); ++i) {
      Reader gr((*gs)[i], r.key_path("groups") + "[" + std::to_string(i) + "]", r.what());
      GroupSpec spec;
      gr.get("name", spec.name, true);
      if (spec.name.empty()) gr.bad("name", "must not be empty");
      if (!names.insert(spec.name).second) gr.bad("name", "group '" + spec.name + "' is given twice");
      gr.get("params", spec.params);
      std::set<std::string> unused;
      get_opt(gr, unused, "lr", spec.lr);
      get_opt(gr, unused, "weight_decay", spec.weight_decay);
      gr.finish();
      if (spec.lr && *spec.lr < 0) gr.bad("lr", "must be non-negative");
      if (spec.weight_decay && *spec.weight_decay < 0) gr.bad("weight_decay", "must be non-negative");
      s.groups.push_back(std::move(spec));
    }
  }
  if (const ojson* lv = r.object("lora", false)) {
    if (s.name != "lora") r.bad("lora", "is only allowed with the strategy \"lora\"");
    Reader lr(*lv, r.key_path("lora"), r.what());
    get(lr, g, "r", s.lora.r);
    get(lr, g, "alpha", s.lora.alpha);
    get(lr, g, "dropout", s.lora.dropout);
    get(lr, g, "targets", s.lora.targets);
    get(lr, g, "qkv_parts", s.lora.qkv_parts);
    lr.finish();
    if (s.lora.r < 1) lr.bad("r", "must be at least 1");
    if (!(s.lora.alpha > 0)) lr.bad("alpha", "must be positive");
    if (!(s.lora.dropout >= 0 && s.lora.dropout < 1)) lr.bad("dropout", "must be in [0, 1)");
  }
  r.finish();
}

inline void read_data(Reader& r, DataConfig& d, std::set<std::string>& g, const std::string& base) {
  get_enum(r, g, "dataset", d.dataset, {"medmnist", "vqa-rad", "slake", "roco"}, true);
  get(r, g, "path", d.path, true);
  if (d.path.empty()) r.bad("path", "must not be empty");
  d.path = resolve_path(base, d.path);
  if (d.dataset == "medmnist") {
    d.train_split = "train", d.val_split = "val", d.test_split = "test";
  } else if (d.dataset == "vqa-rad") {
    d.train_split = "train", d.val_split = "val", d.test_split = "test";
    d.cache_images = true;
  } else if (d.dataset == "slake") {
    d.train_split = "train", d.val_split = "validate", d.test_split = "test";
    d.cache_images = true;
  } else {
    d.train_split = "train", d.val_split = "validation", d.test_split = "test";
  }
  get(r, g, "train_split", d.train_split);
  get(r, g, "val_split", d.val_split);
  get(r, g, "test_split", d.test_split);
  get(r, g, "max_train", d.max_train);
  get(r, g, "max_val", d.max_val);
  get(r, g, "max_test", d.max_test);
  get(r, g, "image_size", d.image_size);
  if (d.dataset == "medmnist") {
    get(r, g, "flag", d.flag);
    get(r, g, "percentage", d.percentage);
    get(r, g, "stratified", d.stratified);
    if (!(d.percentage > 0 && d.percentage <= 1)) r.bad("percentage", "must be a fraction in (0, 1] (0.1 = 10 %)");
  } else {
    get(r, g, "cache_images", d.cache_images);
    get(r, g, "skip_missing", d.skip_missing);
    get(r, g, "images_dir", d.images_dir);
    d.images_dir = resolve_path(base, d.images_dir);
  }
  if (d.dataset == "vqa-rad") {
    get(r, g, "val_fraction", d.val_fraction);
    if (!(d.val_fraction >= 0 && d.val_fraction < 1)) r.bad("val_fraction", "must be in [0, 1)");
  }
  if (d.dataset == "slake") get(r, g, "language", d.language);
  if (d.dataset == "roco") {
    get_enum(r, g, "data_type", d.data_type, {"radiology", "non-radiology", "all"});
    get(r, g, "dlinks", d.dlinks);
    d.dlinks = resolve_path(base, d.dlinks);
  }
  r.finish();
  if (d.train_split.empty()) r.bad("train_split", "must not be empty");
  if (d.test_split.empty()) r.bad("test_split", "must not be empty");
  for (auto [k, v] : {std::pair<const char*, int64_t>{"max_train", d.max_train}, {"max_val", d.max_val},
                      {"max_test", d.max_test}, {"image_size", d.image_size}})
    if (v < 0) r.bad(k, "must be non-negative (0 = all / the card's)");
}

inline void read_task_options(Reader& r, Experiment& e, std::set<std::string>& g) {
  for (const char* t : {"classification", "retrieval", "vqa"}) {
    if (!r.has(t)) continue;
    if (e.task != t) r.bad(t, "options for the task '" + std::string(t) + "' but the task is '" + e.task + "'");
  }
  if (const ojson* v = r.object(e.task, false)) {
    Reader o(*v, e.task, r.what());
    if (e.task == "classification") {
      ClassificationOptions& c = e.classification;
      get_enum(o, g, "head", c.head, {"linear", "contrastive"});
      get_enum(o, g, "input", c.input, {"embedding", "features"});
      get(o, g, "prompt", c.prompt);
      get(o, g, "prompts", c.prompts);
      get(o, g, "class_names", c.class_names);
      if (const ojson* z = o.find("zero_shot_scale", false)) {
        g.insert("classification.zero_shot_scale");
        if (z->is_number() && z->get<double>() > 0) c.zero_shot_scale = z->get<double>();
        else if (!(z->is_string() && z->get<std::string>() == "card"))
          o.bad("zero_shot_scale", "must be \"card\" or a positive number, got " + z->dump());
      }
      o.finish();
      if (o.has("prompt") && c.prompt.find("{}") == std::string::npos)
        o.bad("prompt", "must contain \"{}\" where the class name goes");
      if (o.has("prompt") && o.has("prompts")) o.bad("prompts", "give \"prompt\" (a template) or \"prompts\", not both");
    } else if (e.task == "retrieval") {
      get(o, g, "ks", e.retrieval.ks);
      o.finish();
      if (e.retrieval.ks.empty()) o.bad("ks", "must not be empty");
      for (int64_t k : e.retrieval.ks)
        if (k < 1) o.bad("ks", "must be positive");
    } else {
      VqaOptions& q = e.vqa;
      get_enum(o, g, "image_input", q.image_input, {"embedding", "features", "tokens"});
      get(o, g, "question_mask", q.question_mask);
      get(o, g, "glimpses", q.glimpses);
      get(o, g, "k", q.k);
      get(o, g, "dropout_fc", q.dropout_fc);
      get(o, g, "dropout_att", q.dropout_att);
      get(o, g, "dropout_q", q.dropout_q);
      get(o, g, "dropout_cls", q.dropout_cls);
      o.finish();
      if (q.glimpses < 1 || q.glimpses > 32) o.bad("glimpses", "must be in [1, 32]");
      if (q.k < 1) o.bad("k", "must be at least 1");
      for (auto [k, v] : {std::pair<const char*, double>{"dropout_fc", q.dropout_fc}, {"dropout_att", q.dropout_att},
                          {"dropout_q", q.dropout_q}, {"dropout_cls", q.dropout_cls}})
        if (!(v >= 0 && v < 1)) o.bad(k, "must be in [0, 1)");
    }
  }
}

}  // namespace experiment_detail

inline Experiment Experiment::from_json(const ojson& j, const std::string& what, const std::string& base_dir) {
  namespace ed = experiment_detail;
  Experiment e;
  e.source = what;
  ed::Reader r(j, "", what);
  auto& g = e.given;
  ed::get(r, g, "name", e.name);
  ed::get(r, g, "model", e.model, true);
  if (e.model.empty()) r.bad("model", "must not be empty");
  e.model = ed::resolve_path(base_dir, e.model);
  ed::get(r, g, "vocab", e.vocab);
  e.vocab = ed::resolve_path(base_dir, e.vocab);
  if (!e.vocab.empty() && !ed::is_card_path(e.model))
    r.bad("vocab", "only applies to a model given as a card (.json); a converted model holds its vocabulary");
  ed::get_enum(r, g, "family", e.family, {"auto", "clip", "biomedclip", "pmc-clip", "cxr-clip"});
  ed::get_enum(r, g, "task", e.task, {"classification", "retrieval", "vqa"}, true);
  {
    const ojson* d = r.object("data", true);
    ed::Reader dr(*d, "data", what);
    ed::read_data(dr, e.data, g, base_dir);
  }
  if (e.task == "classification" && e.data.dataset != "medmnist")
    r.bad("data", "classification reads a medmnist data set, got \"" + e.data.dataset + "\"");
  if (e.task == "retrieval" && e.data.dataset != "roco")
    r.bad("data", "retrieval reads the roco data set, got \"" + e.data.dataset + "\"");
  if (e.task == "vqa" && e.data.dataset != "vqa-rad" && e.data.dataset != "slake")
    r.bad("data", "vqa reads vqa-rad or slake, got \"" + e.data.dataset + "\"");
  ed::read_strategy(r.find("strategy", true), r, e.strategy, g);
  if (e.task == "vqa" && e.strategy.name == "zeroshot")
    r.bad("strategy", "vqa has no zero-shot strategy (the BAN head must be trained)");
  if (const ojson* t = r.object("train", false)) {
    ed::Reader tr(*t, "train", what);
    ed::read_train(tr, e.train, g);
  }
  ed::read_task_options(r, e, g);
  int64_t seed = int64_t(e.seed);
  ed::get(r, g, "seed", seed);
  if (seed < 0) r.bad("seed", "must be non-negative");
  e.seed = uint64_t(seed);
  ed::get(r, g, "device", e.device);
  try {
    Device::parse(e.device);
  } catch (const Error&) {
    r.bad("device", "unknown device \"" + e.device + "\" (expected cpu, cuda or cuda:N)");
  }
  ed::get(r, g, "output", e.output);
  ed::get_enum(r, g, "progress", e.progress, {"auto", "bar", "plain", "off"});
  r.finish();
  if (e.name.empty()) e.name = e.data.dataset + "-" + e.task + "-" + e.strategy.name;
  for (char c : e.name)
    if (c == '/' || c == '\\' || c == '\0') r.bad("name", "must not contain path separators");
  if (e.output.empty()) e.output = "runs/" + e.name;
  else e.output = ed::resolve_path(base_dir, e.output);
  return e;
}

inline Experiment Experiment::parse(const std::string& text, const std::string& what, const std::string& base_dir) {
  ojson j;
  try {
    j = ojson::parse(text);
  } catch (const std::exception& ex) {
    fail(what, ": not valid JSON (", ex.what(), ")");
  }
  return from_json(j, what, base_dir);
}

inline Experiment Experiment::load(const std::string& path) {
  MC_CHECK(data::file_exists(path), path, ": experiment file not found");
  auto bytes = io::read_file(path);
  ojson j;
  try {
    j = ojson::parse(bytes.begin(), bytes.end());
  } catch (const std::exception& ex) {
    fail(path, ": not valid JSON (", ex.what(), ")");
  }
  // The name defaults to the file's stem (set before parsing so the default output folder uses it).
  if (j.is_object() && !j.contains("name")) j["name"] = data::file_stem(path);
  Experiment e = from_json(j, path, std::filesystem::path(path).parent_path().string());
  return e;
}

// The model family from a card name (biomedclip*, pmc*, cxr*, clip* / openai*).
inline std::string family_of_card(const models::ModelCard& card, const std::string& what) {
  const std::string n = data::ascii_lower(card.name);
  auto starts = [&](const char* p) { return n.rfind(p, 0) == 0; };
  if (starts("biomedclip")) return "biomedclip";
  if (starts("pmc")) return "pmc-clip";
  if (starts("cxr")) return "cxr-clip";
  if (starts("clip") || starts("openai")) return "clip";
  fail(what, ": family: cannot tell the model family from the card name '", card.name,
       "'; set \"family\" to clip, biomedclip, pmc-clip or cxr-clip");
}

// Fills the family ("auto") and every default that depends on the family and the task; keys the file set
// are kept.
inline void resolve(Experiment& e, const models::ModelCard& card) {
  if (e.family == "auto") e.family = family_of_card(card, e.source);
  TrainConfig d;  // the defaults of this family and task
  const std::string& f = e.family;
  if (e.task == "classification") {
    d.optimizer = "adam";
    d.batch_size = 64;
    if (f == "clip") d.lr = 5e-5, d.weight_decay = 0.1, d.epochs = 32, d.patience = 5;
    if (f == "biomedclip") d.lr = 1e-5, d.weight_decay = 0, d.epochs = 196, d.patience = 7;
    if (f == "pmc-clip") d.lr = 5e-5, d.weight_decay = 0.1, d.epochs = 32, d.patience = 7;
    if (f == "cxr-clip") d.lr = 5e-5, d.weight_decay = 0, d.epochs = 32, d.patience = 5;
    d.encoder_lr = f == "biomedclip" ? 1e-5 : 5e-5;
    d.encoder_weight_decay = 1e-3;
    d.head_lr = 1e-5;
    d.head_weight_decay = 0;
  } else if (e.task == "retrieval") {
    d.optimizer = f == "pmc-clip" || f == "cxr-clip" ? "adamw" : "adam";
    d.lr = 5e-4, d.weight_decay = 0.1, d.epochs = 32, d.patience = 5, d.batch_size = 32;
  } else {
    d.optimizer = "adamax";
    d.lr = 5e-3, d.weight_decay = 0, d.epochs = 200, d.patience = 5, d.batch_size = 196;
  }
  TrainConfig& t = e.train;
  auto set = [&](const char* key, auto& field, const auto& value) {
    if (!e.has(std::string("train.") + key)) field = value;
  };
  set("optimizer", t.optimizer, d.optimizer);
  set("batch_size", t.batch_size, d.batch_size);
  set("lr", t.lr, d.lr);
  set("weight_decay", t.weight_decay, d.weight_decay);
  set("epochs", t.epochs, d.epochs);
  set("patience", t.patience, d.patience);
  if (e.task == "classification") {
    set("encoder_lr", t.encoder_lr, d.encoder_lr);
    set("encoder_weight_decay", t.encoder_weight_decay, d.encoder_weight_decay);
    set("head_lr", t.head_lr, d.head_lr);
    set("head_weight_decay", t.head_weight_decay, d.head_weight_decay);
  } else {
    set("encoder_lr", t.encoder_lr, t.lr);
    set("encoder_weight_decay", t.encoder_weight_decay, t.weight_decay);
    set("head_lr", t.head_lr, t.lr);
    set("head_weight_decay", t.head_weight_decay, t.weight_decay);
  }
  if (t.eval_batch_size == 0) t.eval_batch_size = t.batch_size;
  if (e.data.image_size == 0) e.data.image_size = card.preprocess.size;
  if (card.vision.arch == "vit" && e.data.image_size != card.vision.vit.image_size)
    fail(e.source, ": data.image_size: ", e.data.image_size, " does not fit the ViT of '", card.name, "', which takes ",
         card.vision.vit.image_size, " px images (its positional embeddings are fixed)");

  if (e.task == "classification") {
    ClassificationOptions& c = e.classification;
    // The linear head reads cxr-clip's 2048-d tower output (the paper's choice); zero-shot and contrastive
    // logits compare the projected embeddings.
    const bool linear = e.strategy.name != "zeroshot" && c.head == "linear";
    if (c.input.empty()) c.input = f == "cxr-clip" && linear ? "features" : "embedding";
    if (!linear && c.input != "embedding")
      fail(e.source, ": classification.input: \"", c.input, "\" needs the linear head (zero-shot and contrastive ",
           "logits use the projected embeddings)");
    // cxr-clip keeps an empty template: its binary prompts are "No <finding>" / "<finding>" (class_prompts).
    if (c.prompt.empty() && c.prompts.empty() && f != "cxr-clip")
      c.prompt = f == "clip" || f == "biomedclip" ? "this is a photo of {}" : "{}";
  }
  if (e.task == "vqa" && e.vqa.image_input.empty()) e.vqa.image_input = f == "cxr-clip" ? "features" : "embedding";
}

inline ojson Experiment::to_json() const {
  ojson j;
  j["name"] = name;
  j["model"] = model;
  if (!vocab.empty()) j["vocab"] = vocab;
  j["family"] = family;
  j["task"] = task;
  ojson d;
  d["dataset"] = data.dataset;
  d["path"] = data.path;
  d["train_split"] = data.train_split;
  d["val_split"] = data.val_split;
  d["test_split"] = data.test_split;
  d["max_train"] = data.max_train;
  d["max_val"] = data.max_val;
  d["max_test"] = data.max_test;
  d["image_size"] = data.image_size;
  if (data.dataset == "medmnist") {
    d["flag"] = data.flag;
    d["percentage"] = data.percentage;
    d["stratified"] = data.stratified;
  } else {
    d["cache_images"] = data.cache_images;
    d["skip_missing"] = data.skip_missing;
    d["images_dir"] = data.images_dir;
  }
  if (data.dataset == "vqa-rad") d["val_fraction"] = data.val_fraction;
  if (data.dataset == "slake") d["language"] = data.language;
  if (data.dataset == "roco") {
    d["data_type"] = data.data_type;
    d["dlinks"] = data.dlinks;
  }
  j["data"] = d;
  ojson s;
  s["name"] = strategy.name;
  s["train"] = strategy.train;
  s["freeze"] = strategy.freeze;
  ojson gs = ojson::array();
  for (const GroupSpec& g : strategy.groups) {
    ojson x;
    x["name"] = g.name;
    x["params"] = g.params;
    if (g.lr) x["lr"] = *g.lr;
    if (g.weight_decay) x["weight_decay"] = *g.weight_decay;
    gs.push_back(x);
  }
  s["groups"] = gs;
  if (strategy.name == "lora")
    s["lora"] = {{"r", strategy.lora.r}, {"alpha", strategy.lora.alpha}, {"dropout", strategy.lora.dropout},
                 {"targets", strategy.lora.targets}, {"qkv_parts", strategy.lora.qkv_parts}};
  j["strategy"] = s;
  const TrainConfig& t = train;
  j["train"] = {{"epochs", t.epochs},
                {"batch_size", t.batch_size},
                {"eval_batch_size", t.eval_batch_size},
                {"optimizer", t.optimizer},
                {"lr", t.lr},
                {"weight_decay", t.weight_decay},
                {"betas", {t.beta1, t.beta2}},
                {"eps", t.eps},
                {"momentum", t.momentum},
                {"encoder_lr", t.encoder_lr},
                {"encoder_weight_decay", t.encoder_weight_decay},
                {"head_lr", t.head_lr},
                {"head_weight_decay", t.head_weight_decay},
                {"schedule", t.schedule},
                {"warmup_steps", t.warmup_steps},
                {"min_lr_ratio", t.min_lr_ratio},
                {"grad_clip", t.grad_clip},
                {"patience", t.patience},
                {"min_delta", t.min_delta},
                {"restore_best", t.restore_best},
                {"num_workers", t.num_workers}};
  if (task == "classification") {
    ojson c;
    c["head"] = classification.head;
    c["input"] = classification.input;
    if (!classification.prompts.empty()) c["prompts"] = classification.prompts;
    else if (!classification.prompt.empty()) c["prompt"] = classification.prompt;
    if (!classification.class_names.empty()) c["class_names"] = classification.class_names;
    if (classification.zero_shot_scale) c["zero_shot_scale"] = *classification.zero_shot_scale;
    else c["zero_shot_scale"] = "card";
    j["classification"] = c;
  } else if (task == "retrieval") {
    j["retrieval"] = {{"ks", retrieval.ks}};
  } else {
    j["vqa"] = {{"image_input", vqa.image_input}, {"question_mask", vqa.question_mask}, {"glimpses", vqa.glimpses},
                {"k", vqa.k},
                {"dropout_fc", vqa.dropout_fc},
                {"dropout_att", vqa.dropout_att},
                {"dropout_q", vqa.dropout_q},
                {"dropout_cls", vqa.dropout_cls}};
  }
  j["seed"] = seed;
  j["device"] = device;
  j["output"] = output;
  j["progress"] = progress;
  return j;
}

}  // namespace mc::tasks
