// Tests of the study's main job (mc/tasks/{experiment,strategy,trainer,classification,retrieval,vqa,run}.hpp):
// strict experiment files, the strategies' parameter sets, resuming an interrupted run, the files `mc run`
// writes, and two real-data checks on ../shared/data: a small model fine-tuned on the official BreastMNIST
// beats the majority class, and BAN on VQA-RAD beats the majority answer on closed questions.
//
// Models are the scaled-down cards of tests/fixtures/models with random weights (seeded); synthetic data
// sets (a MedMNIST-style .npz, a ROCO-style folder) are written to a temporary folder.
#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mc/io/inflate.hpp"
#include "mc/mc.hpp"
#include "mc/tasks/run.hpp"

namespace {

using mc_test::contains;
using mc_test::error_of;
using mc_test::npy;
using mc_test::put16;
using mc_test::put32;
using mc_test::zip_stored;

struct TempDir : mc_test::TempDir {
  TempDir() : mc_test::TempDir("mc_test_study") {}
};

namespace fs = std::filesystem;
using namespace mc;
using namespace mc::tasks;

const std::string kShared = std::string(MC_SOURCE_DIR) + "/../shared/data/";

std::string fixture(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/tests/fixtures/models/" + name; }


std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// ---- models ----

// A fixture card (tests/fixtures/models/<short>.json), optionally changed by a JSON merge patch, with random
// weights drawn from `seed` and a tokenizer vocabulary (the fixture's unless `vocab` names another file).
std::shared_ptr<models::DualEncoder> tiny_model(const std::string& short_name, const std::string& patch = "{}",
                                                const std::string& vocab = "", uint64_t seed = 1) {
  models::card_json j = models::ModelCard::load(fixture(short_name + ".json")).to_json();
  j.merge_patch(models::card_json::parse(patch));
  const models::ModelCard card = models::ModelCard::from_json(j, short_name);
  manual_seed(seed);
  auto m = std::make_shared<models::DualEncoder>(card);
  const std::string v = !vocab.empty() ? vocab : fixture(short_name == "clip" ? "bpe.txt.gz" : "vocab.txt");
  m->set_vocab(models::read_vocab(v, card));
  m->eval();
  return m;
}

// Writes a model as `mc convert --card` does (weights, card, vocabulary).
void save_model(const models::DualEncoder& m, const std::string& path) {
  nn::NamedTensors t = m.state_dict();
  const std::string& v = m.vocab();
  Tensor bytes = Tensor::empty({int64_t(v.size())}, DType::U8);
  std::memcpy(bytes.raw_data(), v.data(), v.size());
  t.emplace_back(models::kVocabTensor, bytes);
  io::save_safetensors(path, t, {{models::kCardKey, m.card().dump()}, {models::kFormatKey, models::kModelFormat}});
}

// ---- synthetic data ----


// A .npy (version 1.0) of uint8 data.


// A learnable 28x28 grey image of class c (0 or 1): a bright square in one of two corners, plus noise.
std::string synthetic_image(int c, data::SeededRng& rng) {
  std::string px(28 * 28, '\0');
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x) {
      const bool on = c == 1 ? (x < 12 && y < 12) : (x >= 16 && y >= 16);
      px[size_t(y * 28 + x)] = char(int(on ? 170 : 40) + int(rng.below(60)));
    }
  return px;
}

// <dir>/breastmnist.npz: train / val / test splits of synthetic_image with balanced labels.
std::string synthetic_breastmnist(const TempDir& dir, int64_t n_train = 48, int64_t n_val = 16, int64_t n_test = 16) {
  data::SeededRng rng(7, 0);
  std::vector<std::pair<std::string, std::string>> entries;
  for (auto [split, n] : {std::pair<const char*, int64_t>{"train", n_train}, {"val", n_val}, {"test", n_test}}) {
    std::string images, labels;
    for (int64_t i = 0; i < n; ++i) {
      const int c = int(i % 2);
      images += synthetic_image(c, rng);
      labels += char(c);
    }
    entries.emplace_back(std::string(split) + "_images.npy", npy("|u1", {n, 28, 28}, images));
    entries.emplace_back(std::string(split) + "_labels.npy", npy("|u1", {n, 1}, labels));
  }
  dir.write("breastmnist.npz", zip_stored(entries));
  return dir.file("breastmnist.npz");
}

// A 24-bit BMP of w x h pixels filled by rgb(x, y).
template <class F>
std::string bmp(int w, int h, F&& rgb) {
  const int row = (3 * w + 3) / 4 * 4;
  std::string s = "BM";
  put32(s, uint32_t(54 + row * h));
  put32(s, 0);
  put32(s, 54);
  put32(s, 40);
  put32(s, uint32_t(w));
  put32(s, uint32_t(h));
  put16(s, 1);
  put16(s, 24);
  for (int i = 0; i < 6; ++i) put32(s, 0);
  for (int y = h - 1; y >= 0; --y) {
    std::string line;
    for (int x = 0; x < w; ++x) {
      const auto [r, g, b] = rgb(x, y);
      line += char(b);
      line += char(g);
      line += char(r);
    }
    line.resize(size_t(row), '\0');
    s += line;
  }
  return s;
}

// <dir>/roco/{train,validation,test}/radiology: captions.txt and images/<ID>.jpg (BMP content; mc reads
// images by their signature). Four concepts (a colour and a caption); captions repeat across samples.
std::string synthetic_roco(const TempDir& dir) {
  const char* captions[4] = {"a red square on black", "a green bar, vertical", "a blue disc", "a grey ring"};
  const int colours[4][3] = {{220, 40, 40}, {40, 200, 60}, {50, 60, 220}, {150, 150, 150}};
  int id = 0;
  for (auto [split, n] : {std::pair<const char*, int>{"train", 16}, {"validation", 8}, {"test", 12}}) {
    const std::string sub = std::string("roco/") + split + "/radiology/";
    std::string lines;
    for (int i = 0; i < n; ++i, ++id) {
      const int c = i % 4;
      char name[32];
      std::snprintf(name, sizeof name, "ROCO_%05d", id);
      lines += std::string(name) + "\t " + captions[c] + "\n";
      dir.write(sub + "images/" + name + ".jpg", bmp(20, 20, [&](int x, int y) {
                  const int v = (x * 7 + y * 3 + id) % 16;
                  return std::array<int, 3>{colours[c][0] - v, colours[c][1] - v, colours[c][2] - v};
                }));
    }
    dir.write(sub + "captions.txt", lines);
  }
  return dir.file("roco");
}

RunOptions options(std::ostream* out, bool resume = false, int64_t stop_after = 0) {
  RunOptions o;
  o.out = out;
  o.resume = resume;
  o.stop_after = stop_after;
  return o;
}

// An experiment from a JSON text (strict parse); `base` resolves relative paths.
Experiment experiment(const std::string& json, const std::string& base = "") {
  return Experiment::parse(json, "test experiment", base);
}

// ---- parameter bookkeeping ----

std::map<std::string, Tensor> snapshot(const nn::Module& m) {
  NoGradGuard ng;
  std::map<std::string, Tensor> out;
  for (const auto& [n, t] : m.state_dict()) out[n] = t.detach().to(Device::cpu()).contiguous().clone();
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor x = a.detach().to(Device::cpu()).contiguous(), y = b.detach().to(Device::cpu()).contiguous();
  return std::memcmp(x.raw_data(), y.raw_data(), size_t(x.numel()) * dtype_size(x.dtype())) == 0;
}

struct CardFacts {
  std::string vision_prefix;
  std::set<std::string> vision_projection, text_projection;
  bool trained_logit_scale;
  bool batch_norm;
};

const CardFacts& facts(const std::string& short_name) {
  static const std::map<std::string, CardFacts> f = {
      {"clip", {"visual", {"visual.proj"}, {"text_projection"}, true, false}},
      {"biomedclip", {"visual.trunk", {"visual.head.proj.weight"}, {"text.proj.0.weight", "text.proj.2.weight"}, false, false}},
      {"pmc", {"visual", {"visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias"}, {"text_projection"}, true, true}},
      {"cxr",
       {"image_encoder.resnet",
        {"image_projection.projection.weight", "image_projection.projection.bias"},
        {"text_projection.projection.weight", "text_projection.projection.bias"},
        true,
        true}},
  };
  return f.at(short_name);
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool is_adapter(const std::string& n) { return contains(n, "lora_A") || contains(n, "lora_B"); }

struct Built {
  Experiment e;
  std::shared_ptr<models::DualEncoder> model;
  std::unique_ptr<Task> task;
  std::unique_ptr<TaskModel> tm;
  StrategyPlan plan;
};

// Model, task and strategy of an experiment, as run_experiment builds them.
Built build(const std::string& short_name, const std::string& json) {
  Built b;
  b.e = experiment(json);
  b.model = tiny_model(short_name);
  resolve(b.e, b.model->card());
  manual_seed(b.e.seed);
  b.task = make_task(b.e, b.model, Device::cpu());
  b.tm = std::make_unique<TaskModel>(b.model, b.task->head());
  const bool zero_shot = b.e.strategy.name == "zeroshot";
  b.plan = apply_strategy(*b.tm, b.e, zero_shot ? std::set<std::string>() : used_parameters(*b.task, *b.tm));
  return b;
}

// Trains one short epoch and checks that exactly the parameters in `expected` are trainable (the plan, the
// requires_grad flags, the optimizer groups) and that every other tensor of the model is unchanged.
void check_trains_exactly(Built& b, const std::set<std::string>& expected, bool buffers_may_change) {
  const std::set<std::string> trainable(b.plan.trainable_names.begin(), b.plan.trainable_names.end());
  CHECK(trainable == expected);
  int64_t elements = 0, in_groups = 0;
  for (const auto& [n, t] : b.tm->named_parameters()) {
    CHECK(t.requires_grad() == (expected.count(n) == 1));
    if (expected.count(n)) elements += t.numel();
  }
  for (const auto& g : b.plan.groups) in_groups += int64_t(g.params.size());
  CHECK(b.plan.trainable == elements);
  CHECK(in_groups == int64_t(expected.size()));
  CHECK(contains(b.plan.summary(), "parameters train"));

  const auto before = snapshot(*b.tm);
  FitResult r = fit(*b.task, *b.tm, b.plan, b.e.train, b.e.seed, {});
  CHECK(r.finished);
  const auto after = snapshot(*b.tm);
  std::set<std::string> params;
  for (const auto& [n, t] : b.tm->named_parameters()) params.insert(n);
  bool head_changed = false;
  for (const auto& [n, t] : before) {
    const bool same = same_bits(t, after.at(n));
    if (!params.count(n)) {
      if (!buffers_may_change) CHECK((same || n.find("num_batches") != std::string::npos));
      continue;
    }
    if (!expected.count(n)) {
      INFO(n);
      CHECK(same);
    }
    if (starts_with(n, "head.") && !same) head_changed = true;
  }
  if (b.task->head()) CHECK(head_changed);
}

}  // namespace

TEST_CASE("experiment files are read strictly, naming the key", "[study][experiment]") {
  const std::string base = R"({"model": "m.safetensors", "task": "classification",
      "data": {"dataset": "medmnist", "path": "breastmnist.npz"}, "strategy": "partial")";
  auto with = [&](const std::string& more) { return base + more + "}"; };
  auto err = [&](const std::string& json) { return error_of([&] { experiment(json); }); };

  SECTION("a minimal experiment takes the family's defaults") {
    Experiment e = experiment(with(""), "/x/y");
    CHECK(e.model == "/x/y/m.safetensors");
    CHECK(e.data.path == "/x/y/breastmnist.npz");
    CHECK(e.seed == 8464);
    CHECK(e.output == "runs/medmnist-classification-partial");
    resolve(e, tiny_model("clip")->card());
    CHECK(e.family == "clip");
    CHECK(e.train.lr == 5e-5);
    CHECK(e.train.weight_decay == 0.1);
    CHECK(e.train.epochs == 32);
    CHECK(e.train.patience == 5);
    CHECK(e.train.optimizer == "adam");
    CHECK(e.classification.prompt == "this is a photo of {}");
    CHECK(e.data.image_size == 32);

    Experiment b = experiment(with(R"(, "train": {"lr": 3e-4})"));
    resolve(b, tiny_model("biomedclip")->card());
    CHECK(b.family == "biomedclip");
    CHECK(b.train.lr == 3e-4);  // the file's value wins
    CHECK(b.train.epochs == 196);
    CHECK(b.train.encoder_lr == 1e-5);

    Experiment c = experiment(with(""));
    resolve(c, tiny_model("cxr")->card());
    CHECK(c.classification.input == "features");
    Experiment z = experiment(R"({"model": "m.safetensors", "task": "classification", "strategy": "zeroshot",
        "data": {"dataset": "medmnist", "path": "breastmnist.npz"}})");
    resolve(z, tiny_model("cxr")->card());
    CHECK(z.classification.input == "embedding");
    CHECK(class_prompts(z, {"malignant", "normal, benign"}) == std::vector<std::string>{"malignant", "No malignant"});
    CHECK(class_prompts(z, {"normal", "pneumonia"}) == std::vector<std::string>{"No pneumonia", "pneumonia"});

    Experiment r = experiment(R"({"model": "m.safetensors", "task": "retrieval", "strategy": "full",
        "data": {"dataset": "roco", "path": "roco"}})");
    resolve(r, tiny_model("pmc")->card());
    CHECK(r.train.optimizer == "adamw");
    CHECK(r.train.lr == 5e-4);
    CHECK(r.train.encoder_lr == 5e-4);
    Experiment v = experiment(R"({"model": "m.safetensors", "task": "vqa", "strategy": "lora",
        "data": {"dataset": "vqa-rad", "path": "rad"}})");
    resolve(v, tiny_model("biomedclip")->card());
    CHECK(v.train.optimizer == "adamax");
    CHECK(v.train.lr == 5e-3);
    CHECK(v.train.batch_size == 196);
    CHECK(v.data.cache_images);
    CHECK(v.vqa.image_input == "embedding");
  }

  SECTION("unknown keys") {
    CHECK(contains(err(with(R"(, "modle": 1)")), "unknown key 'modle'"));
    CHECK(contains(err(with(R"(, "train": {"lerning_rate": 1e-3})")), "unknown key 'train.lerning_rate'"));
    CHECK(contains(err(R"({"model": "m", "task": "classification", "strategy": "partial",
        "data": {"dataset": "medmnist", "pth": "x.npz", "path": "x.npz"}})"), "unknown key 'data.pth'"));
    CHECK(contains(err(with(R"(, "classification": {"heads": "linear"})")), "unknown key 'classification.heads'"));
    CHECK(contains(err(R"({"model": "m", "task": "classification", "data": {"dataset": "medmnist", "path": "x.npz"},
        "strategy": {"name": "lora", "lora": {"rank": 4}}})"), "unknown key 'strategy.lora.rank'"));
    CHECK(contains(err(R"({"model": "m", "task": "classification", "data": {"dataset": "medmnist", "path": "x.npz"},
        "strategy": {"name": "full", "groups": [{"name": "heads", "lrr": 1}]}})"), "unknown key 'strategy.groups[0].lrr'"));
    CHECK(contains(err(R"({"model": "m", "task": "vqa", "strategy": "partial",
        "data": {"dataset": "vqa-rad", "path": "rad", "percentage": 0.5}})"), "unknown key 'data.percentage'"));
    CHECK(contains(err(with(R"(, "precision": "bf16")")), "unknown key 'precision'"));
  }

  SECTION("unknown values and wrong types") {
    CHECK(contains(err(with(R"(, "train": {"optimizer": "adamm"})")), "train.optimizer: unknown value \"adamm\""));
    CHECK(contains(err(with(R"(, "train": {"schedule": "linear"})")), "train.schedule: unknown value"));
    CHECK(contains(err(with(R"(, "progress": "fancy")")), "progress: unknown value \"fancy\""));
    CHECK(contains(err(with(R"(, "device": "tpu")")), "device: unknown device \"tpu\""));
    CHECK(contains(err(with(R"(, "family": "openclip")")), "family: unknown value"));
    CHECK(contains(err(with(R"(, "train": {"epochs": "3"})")), "train.epochs must be an integer"));
    CHECK(contains(err(with(R"(, "train": {"epochs": 0})")), "train.epochs: must be at least 1"));
    CHECK(contains(err(with(R"(, "train": {"betas": [0.9]})")), "train.betas"));
    CHECK(contains(err(with(R"(, "classification": {"prompt": "no placeholder"})")), "classification.prompt"));
    CHECK(contains(err(with(R"(, "classification": {"zero_shot_scale": -1})")), "classification.zero_shot_scale"));
    CHECK(contains(err(R"({"model": "m", "task": "classification", "strategy": "half",
        "data": {"dataset": "medmnist", "path": "x.npz"}})"), "strategy: unknown value \"half\""));
    CHECK(contains(err(R"({"model": "m", "task": "classification", "strategy": "partial",
        "data": {"dataset": "mnist", "path": "x.npz"}})"), "data.dataset: unknown value \"mnist\""));
    CHECK(contains(err(R"({"model": "m", "task": "classification", "strategy": "partial",
        "data": {"dataset": "medmnist", "path": "x.npz", "percentage": 0}})"), "data.percentage"));
    CHECK(contains(err(R"({"task": "classification", "strategy": "partial",
        "data": {"dataset": "medmnist", "path": "x.npz"}})"), "missing key 'model'"));
  }

  SECTION("settings that contradict each other") {
    CHECK(contains(err(R"({"model": "m", "task": "classification", "strategy": "partial",
        "data": {"dataset": "roco", "path": "roco"}})"), "classification reads a medmnist data set"));
    CHECK(contains(err(with(R"(, "vqa": {"glimpses": 2})")), "'vqa'"));
    CHECK(contains(err(R"({"model": "m", "task": "vqa", "strategy": "zeroshot",
        "data": {"dataset": "slake", "path": "slake"}})"), "vqa has no zero-shot strategy"));
    CHECK(contains(err(R"({"model": "m", "task": "classification", "data": {"dataset": "medmnist", "path": "x.npz"},
        "strategy": {"name": "partial", "lora": {"r": 4}}})"), "strategy.lora"));
    CHECK(contains(err(with(R"(, "vocab": "vocab.txt")")), "vocab"));
    Experiment big = experiment(R"({"model": "m", "task": "classification", "strategy": "partial",
        "data": {"dataset": "medmnist", "path": "x.npz", "image_size": 64}})");
    CHECK(contains(error_of([&] { resolve(big, tiny_model("clip")->card()); }), "data.image_size"));
    Experiment zc = experiment(R"({"model": "m", "task": "classification", "strategy": "zeroshot",
        "data": {"dataset": "medmnist", "path": "x.npz"}, "classification": {"input": "features"}})");
    CHECK(contains(error_of([&] { resolve(zc, tiny_model("clip")->card()); }), "classification.input"));
  }

  SECTION("the example experiments are valid") {
    int n = 0;
    for (const auto& f : fs::directory_iterator(std::string(MC_SOURCE_DIR) + "/examples")) {
      // Experiment files name a task (the folder also holds sweep files for `mc sweep`).
      if (f.path().extension() != ".json" || !ojson::parse(read_text(f.path().string())).contains("task")) continue;
      INFO(f.path().string());
      CHECK(error_of([&] { Experiment::load(f.path().string()); }).empty());
      ++n;
    }
    CHECK(n >= 6);
  }

  SECTION("errors name the file") {
    TempDir dir;
    dir.write("exp.json", with(R"(, "train": {"lerning_rate": 1})"));
    CHECK(contains(error_of([&] { Experiment::load(dir.file("exp.json")); }), dir.file("exp.json")));
    dir.write("ok.json", with(""));
    CHECK(Experiment::load(dir.file("ok.json")).name == "ok");
  }
}

TEST_CASE("each strategy trains exactly the parameters it names", "[study][strategy]") {
  TempDir dir;
  const std::string npz = synthetic_breastmnist(dir);
  auto cls = [&](const std::string& strategy) {
    return R"({"model": "m", "task": "classification", "strategy": )" + strategy + R"(,
        "data": {"dataset": "medmnist", "path": ")" + npz + R"(", "max_train": 8, "max_val": 4, "max_test": 4},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2}})";
  };

  for (const std::string name : {"clip", "biomedclip", "pmc", "cxr"}) {
    DYNAMIC_SECTION("classification, " << name) {
      const CardFacts& f = facts(name);
      const bool features = name == "cxr";  // CXR-CLIP's linear head reads the 2048-d tower output
      std::set<std::string> head{"head.weight", "head.bias"};

      Built partial = build(name, cls("\"partial\""));
      std::set<std::string> want = head;
      if (!features) want.insert(f.vision_projection.begin(), f.vision_projection.end());
      check_trains_exactly(partial, want, false);

      Built full = build(name, cls("\"full\""));
      std::set<std::string> all = head;
      for (const auto& [n, t] : full.tm->named_parameters())
        if (starts_with(n, f.vision_prefix + ".") || (!features && f.vision_projection.count(n))) all.insert(n);
      check_trains_exactly(full, all, f.batch_norm);
      // The paper's two groups: encoders at encoder_lr, projections / head / positional embeddings at head_lr.
      REQUIRE(full.plan.info.size() == 2);
      CHECK(full.plan.info[0].name == "encoders");
      CHECK(full.plan.info[0].lr == full.e.train.encoder_lr);
      CHECK(full.plan.info[1].name == "heads");
      CHECK(full.plan.info[1].lr == full.e.train.head_lr);
      int64_t heads = 0;
      for (const auto& [n, t] : full.tm->named_parameters())
        if (all.count(n) && (head.count(n) || f.vision_projection.count(n) || contains(n, "positional_embedding")))
          heads += t.numel();
      CHECK(full.plan.info[1].elements == heads);

      Built lora = build(name, cls(R"({"name": "lora", "lora": {"r": 2}})"));
      std::set<std::string> adapters = head;
      if (!features) adapters.insert(f.vision_projection.begin(), f.vision_projection.end());
      int64_t n_adapters = 0;
      for (const auto& [n, t] : lora.tm->named_parameters()) {
        if (!is_adapter(n)) continue;
        adapters.insert(n);
        ++n_adapters;
        CHECK(starts_with(n, f.vision_prefix + "."));
      }
      CHECK(n_adapters >= 8);
      check_trains_exactly(lora, adapters, false);

      Built zs = build(name, R"({"model": "m", "task": "classification", "strategy": "zeroshot",
          "data": {"dataset": "medmnist", "path": ")" + npz + R"(", "max_train": 4, "max_test": 4}})");
      CHECK(zs.plan.trainable == 0);
      CHECK(zs.plan.groups.empty());
    }
  }

  SECTION("retrieval: partial trains both projections and the learnt logit scale") {
    const std::string roco = synthetic_roco(dir);
    for (const std::string name : {"clip", "biomedclip", "pmc", "cxr"}) {
      INFO(name);
      const CardFacts& f = facts(name);
      Built b = build(name, R"({"model": "m", "task": "retrieval", "strategy": "partial",
          "data": {"dataset": "roco", "path": ")" + roco + R"("}, "train": {"epochs": 1, "batch_size": 4}})");
      std::set<std::string> want = f.vision_projection;
      want.insert(f.text_projection.begin(), f.text_projection.end());
      if (f.trained_logit_scale) want.insert("logit_scale");
      check_trains_exactly(b, want, false);
    }
    // full: the CLIP text tower trains too; its embeddings and ln_final sit in the heads group (the paper's).
    Built full = build("clip", R"({"model": "m", "task": "retrieval", "strategy": "full",
        "data": {"dataset": "roco", "path": ")" + roco + R"("}, "train": {"epochs": 1, "batch_size": 4}})");
    std::set<std::string> all;
    for (const auto& [n, t] : full.tm->named_parameters()) all.insert(n);
    check_trains_exactly(full, all, false);
    int64_t heads = 0;
    for (const auto& [n, t] : full.tm->named_parameters())
      if (n == "visual.proj" || n == "text_projection" || n == "logit_scale" || contains(n, "positional_embedding") ||
          starts_with(n, "token_embedding.") || starts_with(n, "ln_final."))
        heads += t.numel();
    CHECK(full.plan.info.at(1).elements == heads);
  }

  SECTION("vqa: partial trains the image projection and the BAN head, not the text projection") {
    for (const std::string name : {"clip", "biomedclip"}) {
      INFO(name);
      Built b = build(name, R"({"model": "m", "task": "vqa", "strategy": "partial",
          "data": {"dataset": "vqa-rad", "path": ")" + kShared + R"(vqa_rad", "max_train": 8, "max_val": 4,
                   "max_test": 4}, "train": {"epochs": 1, "batch_size": 4}, "vqa": {"glimpses": 2}})");
      std::set<std::string> want = facts(name).vision_projection;
      for (const auto& [n, t] : b.tm->named_parameters())
        if (starts_with(n, "head.")) want.insert(n);
      check_trains_exactly(b, want, false);
    }
  }

  SECTION("presets can be changed from the experiment file") {
    Built b = build("clip", cls(R"({"name": "partial", "train": ["visual.ln_post.*"], "freeze": ["head.bias"],
        "groups": [{"name": "proj", "params": ["visual.proj"], "lr": 0.5}, {"name": "trainable", "weight_decay": 0.25}]})"));
    check_trains_exactly(b, {"visual.proj", "visual.ln_post.weight", "visual.ln_post.bias", "head.weight"}, false);
    REQUIRE(b.plan.info.size() == 2);
    CHECK(b.plan.info[0].name == "proj");
    CHECK(b.plan.info[0].lr == 0.5);
    CHECK(b.plan.info[0].tensors == 1);
    CHECK(b.plan.info[1].name == "trainable");
    CHECK(b.plan.info[1].weight_decay == 0.25);
    CHECK(contains(error_of([&] { build("clip", cls(R"({"name": "partial", "train": ["visual.nothing*"]})")); }),
                   "strategy.train: 'visual.nothing*' matches no parameter"));
    CHECK(contains(error_of([&] { build("clip", cls(R"({"name": "zeroshot", "train": ["visual.proj"]})")); }),
                   "zeroshot trains nothing"));
    CHECK(contains(error_of([&] { build("clip", cls(R"({"name": "full", "groups": [{"name": "extra"}]})")); }),
                   "needs \"params\""));
  }
}

TEST_CASE("early stopping ends after `patience` epochs without improvement and keeps the best weights",
          "[study][trainer]") {
  TempDir dir;
  const std::string npz = synthetic_breastmnist(dir);
  // A learning rate far too high: the validation loss soon stops improving.
  Built b = build("clip", R"({"model": "m", "task": "classification", "strategy": "full",
      "data": {"dataset": "medmnist", "path": ")" + npz + R"(", "max_train": 16},
      "train": {"epochs": 12, "batch_size": 4, "lr": 0.05, "encoder_lr": 0.05, "head_lr": 0.05, "patience": 2}})");
  const FitResult r = fit(*b.task, *b.tm, b.plan, b.e.train, b.e.seed, {});
  CHECK(r.finished);
  CHECK(r.stopped_early);
  CHECK(r.epochs_completed < 12);
  CHECK(r.epochs_completed == r.best_epoch + 2);
  CHECK(r.history.size() == size_t(r.epochs_completed));
  CHECK(r.history.at(size_t(r.best_epoch - 1))["best"] == true);
  set_training_mode(*b.tm, false);
  CHECK(b.task->evaluate("val", false).loss == r.best_val_loss);  // the restored weights are the best epoch's
}

TEST_CASE("an interrupted and resumed run ends with the weights of an uninterrupted one", "[study][resume]") {
  TempDir dir;
  const std::string npz = synthetic_breastmnist(dir);
  save_model(*tiny_model("clip"), dir.file("clip-tiny.safetensors"));
  // LoRA with dropout (random masks), cosine schedule with warm-up, clipping and a validation split.
  auto exp = [&](const std::string& out, int workers, double lr = 3e-3) {
    Experiment e = experiment(R"({"model": "clip-tiny.safetensors", "task": "classification",
        "data": {"dataset": "medmnist", "path": "breastmnist.npz", "max_train": 40},
        "strategy": {"name": "lora", "lora": {"r": 2, "alpha": 4, "dropout": 0.2}},
        "train": {"epochs": 4, "batch_size": 8, "lr": )" + std::to_string(lr) + R"(, "schedule": "cosine",
                  "warmup_steps": 3, "grad_clip": 1.0, "patience": 0, "num_workers": )" + std::to_string(workers) + R"(},
        "output": ")" + out + R"(", "progress": "plain"})", dir.path);
    return e;
  };
  std::ostringstream log_a, log_b;
  RunResult a = run_experiment(exp("a", 0), options(&log_a));
  REQUIRE(a.finished);
  CHECK(contains(log_a.str(), "strategy lora: "));
  CHECK(contains(log_a.str(), "epoch 4/4  train loss"));

  RunResult b1 = run_experiment(exp("b", 0), options(&log_b, false, 2));
  CHECK_FALSE(b1.finished);
  CHECK(b1.fit.epochs_completed == 2);
  CHECK_FALSE(fs::exists(dir.file("b/results.json")));
  CHECK(contains(error_of([&] { run_experiment(exp("b", 0, 1e-3), options(nullptr, true)); }),
                 "differs from the interrupted run's at 'train.lr'"));
  RunResult b2 = run_experiment(exp("b", 2), options(&log_b, true));  // other worker count: same batches
  REQUIRE(b2.finished);
  CHECK(b2.fit.resumed_from == 2);
  CHECK(contains(log_b.str(), "resumed from"));

  // Bit-identical trainable state (best and last), predictions and log.
  io::SafetensorsFile ca = io::SafetensorsFile::open(dir.file("a/checkpoint.safetensors"));
  io::SafetensorsFile cb = io::SafetensorsFile::open(dir.file("b/checkpoint.safetensors"));
  REQUIRE(ca.names() == cb.names());
  int64_t state_tensors = 0;
  for (const std::string& n : ca.names()) {
    INFO(n);
    CHECK(same_bits(ca.get(n), cb.get(n)));
    state_tensors += starts_with(n, "state.");
  }
  CHECK(state_tensors > 10);
  CHECK(read_text(dir.file("a/predictions.csv")) == read_text(dir.file("b/predictions.csv")));
  const std::string log_text = read_text(dir.file("b/log.jsonl"));
  CHECK(std::count(log_text.begin(), log_text.end(), '\n') == 4);
  CHECK(a.results["metrics"] == b2.results["metrics"]);
  CHECK(a.results["history"].size() == 4);
  // Resuming a finished run only evaluates again.
  RunResult c = run_experiment(exp("b", 0), options(nullptr, true));
  CHECK(c.results["metrics"] == a.results["metrics"]);
}

TEST_CASE("mc run writes results.json and predictions.csv", "[study][run]") {
  TempDir dir;
  const std::string npz = synthetic_breastmnist(dir);
  const std::string roco = synthetic_roco(dir);
  save_model(*tiny_model("clip"), dir.file("clip.safetensors"));
  save_model(*tiny_model("biomedclip"), dir.file("biomedclip.safetensors"));

  SECTION("classification, zero-shot and fine-tuned") {
    dir.write("zs.json", R"({"model": "clip.safetensors", "task": "classification", "strategy": "zeroshot",
        "data": {"dataset": "medmnist", "path": "breastmnist.npz"}, "output": "zs", "progress": "off"})");
    RunResult z = run_experiment(Experiment::load(dir.file("zs.json")), {});
    REQUIRE(z.finished);
    const ojson r = ojson::parse(read_text(dir.file("zs/results.json")));
    CHECK(r["name"] == "zs");
    CHECK(r["model"] == "clip-vit-b32-scaled");
    CHECK(r["dataset"] == "breastmnist");
    CHECK(r["strategy"] == "zeroshot");
    CHECK(r["trainable_parameters"] == 0);
    CHECK(r["data"]["prompts"] == ojson::array({"this is a photo of malignant", "this is a photo of normal, benign"}));
    for (const char* k : {"auc", "auc_hard", "accuracy", "f1", "f1_macro", "f1_weighted", "majority_accuracy"})
      CHECK(r["metrics"][k].is_number());
    CHECK(r["roc"]["fpr"].size() == r["roc"]["tpr"].size());
    CHECK_FALSE(fs::exists(dir.file("zs/checkpoint.safetensors")));
    const std::string csv = read_text(dir.file("zs/predictions.csv"));
    CHECK(starts_with(csv, "index,row,label,prediction,prob_0,prob_1\n"));
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 17);

    dir.write("lin.json", R"({"model": "biomedclip.safetensors", "task": "classification", "strategy": "partial",
        "data": {"dataset": "medmnist", "path": "breastmnist.npz"}, "output": "lin", "progress": "off",
        "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2}})");
    RunResult l = run_experiment(Experiment::load(dir.file("lin.json")), {});
    REQUIRE(l.finished);
    const ojson lr = ojson::parse(read_text(dir.file("lin/results.json")));
    CHECK(lr["family"] == "biomedclip");
    CHECK(lr["trainable_parameters"].get<int64_t>() == l.plan.trainable);
    CHECK(lr["timing"]["epochs"] == 3);
    CHECK(lr["history"].size() == 3);
    CHECK(lr["val_metrics"]["accuracy"].is_number());
    CHECK(lr["config"]["train"]["lr"] == 1e-2);
    // The synthetic classes are easy: the trained head separates them.
    CHECK(lr["metrics"]["accuracy"].get<double>() > 0.8);
  }

  SECTION("retrieval") {
    dir.write("itr.json", R"({"model": "clip.safetensors", "task": "retrieval", "strategy": "full",
        "data": {"dataset": "roco", "path": "roco"}, "output": "itr", "progress": "off",
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3}})");
    RunResult r = run_experiment(Experiment::load(dir.file("itr.json")), {});
    REQUIRE(r.finished);
    const ojson& m = r.results["metrics"];
    CHECK(r.results["dataset"] == "roco-radiology");
    CHECK(m["count"] == 12);
    // 4 distinct captions, each 3 times: any copy counts, so r@4 would already be 1; r@k grows with k.
    CHECK(m["r@1"].get<double>() <= m["r@5"].get<double>());
    CHECK(m["r@5"].get<double>() <= m["r@10"].get<double>());
    CHECK(m["r@10"].get<double>() == 1.0);
    CHECK(m["t2i_r@10"].get<double>() == 1.0);
    const std::string csv = read_text(dir.file("itr/predictions.csv"));
    CHECK(starts_with(csv, "index,id,subset,rank,top1,t2i_rank\n0,ROCO_00024,radiology,"));
  }

  SECTION("missing images: an error naming the file, or skipped and counted") {
    fs::remove(dir.file("roco/test/radiology/images/ROCO_00030.jpg"));
    auto json = [](const std::string& data_extra) {
      return R"({"model": "clip.safetensors", "task": "retrieval", "strategy": "zeroshot",
          "data": {"dataset": "roco", "path": "roco")" + data_extra + R"(}, "output": "itr0", "progress": "off"})";
    };
    dir.write("a.json", json(""));
    CHECK(contains(error_of([&] { run_experiment(Experiment::load(dir.file("a.json")), {}); }), "ROCO_00030.jpg"));
    dir.write("b.json", json(R"(, "skip_missing": true)"));
    RunResult r = run_experiment(Experiment::load(dir.file("b.json")), {});
    CHECK(r.results["data"]["skipped_missing_images"] == 1);
    CHECK(r.results["metrics"]["count"] == 11);
  }

  SECTION("a model card with random weights, and the device option") {
    RunOptions o;
    o.device = "cuda";
    dir.write("card.json", R"({"model": ")" + fixture("cxr.json") + R"(", "task": "classification",
        "strategy": "partial", "data": {"dataset": "medmnist", "path": "breastmnist.npz", "image_size": 32},
        "train": {"epochs": 1}, "output": "card", "progress": "off"})");
    const Experiment e = Experiment::load(dir.file("card.json"));
#if !defined(MC_WITH_CUDA)
    CHECK(contains(error_of([&] { run_experiment(e, o); }), "no CUDA backend"));
#endif
    RunResult r = run_experiment(e, {});
    REQUIRE(r.finished);
    CHECK(r.results["model"] == "cxr-clip-r50-scaled");
    CHECK(r.results["data"]["image_size"] == 32);
  }
}

TEST_CASE("a small model fine-tuned on BreastMNIST beats the majority class", "[study][real]") {
  // The official 28 px BreastMNIST (../shared/data/medmnist/breastmnist.npz): 546 / 78 / 156 images; the
  // majority class ("normal, benign") is 73.1 % of the test split. The model: CXR-CLIP's architecture
  // scaled down (torchvision ResNet, basic blocks [1, 1, 1, 1], width 8) at 64 px, random initialisation,
  // every parameter trained.
  TempDir dir;
  auto model = tiny_model("cxr", R"({"vision": {"config": {"block": "basic", "layers": [1, 1, 1, 1], "width": 8}}})");
  Experiment e = experiment(R"({"model": "unused", "task": "classification", "strategy": "full",
      "data": {"dataset": "medmnist", "path": ")" + kShared + R"(medmnist/breastmnist.npz"},
      "train": {"epochs": 12, "batch_size": 32, "lr": 1e-3, "encoder_lr": 1e-3, "head_lr": 1e-3,
                "weight_decay": 0, "schedule": "cosine", "patience": 0},
      "output": ")" + dir.file("breast") + R"(", "progress": "off"})");
  RunResult r = run_experiment(e, model, {});
  REQUIRE(r.finished);
  const ojson& m = r.results["metrics"];
  const double auc = m["auc"], acc = m["accuracy"], majority = m["majority_accuracy"];
  WARN("BreastMNIST test: AUC " << auc << ", accuracy " << acc << " (majority class " << majority << "), best epoch "
                                << r.fit.best_epoch << ", " << r.fit.seconds << " s");
  CHECK(std::abs(majority - 114.0 / 156.0) < 1e-12);
  CHECK(auc > 0.70);
  CHECK(acc > majority + 0.03);
}

TEST_CASE("BAN on VQA-RAD beats the majority answer on closed questions", "[study][real]") {
  // VQA-RAD (../shared/data/vqa_rad) with the paper's image-based train / validation split. The encoder: CLIP's
  // architecture scaled down (ViT 32 px, text width 64, 2 layers) with the real CLIP tokenizer, random
  // initialisation, trained with BAN for a few epochs on the pooled image embedding and the question tokens.
  TempDir dir;
  auto model = tiny_model("clip",
                          R"({"text": {"config": {"vocab_size": 49408, "context_length": 32, "width": 64}},
                              "tokenizer": {"context_length": 32}})",
                          kShared + "tokenizers/clip/bpe_simple_vocab_16e6.txt.gz");
  Experiment e = experiment(R"({"model": "unused", "task": "vqa", "strategy": "full",
      "data": {"dataset": "vqa-rad", "path": ")" + kShared + R"(vqa_rad"},
      "train": {"epochs": 6, "batch_size": 64, "lr": 2e-3, "patience": 0, "restore_best": false},
      "output": ")" + dir.file("rad") + R"(", "progress": "off"})");
  RunResult r = run_experiment(e, model, {});
  REQUIRE(r.finished);
  const ojson& m = r.results["metrics"];
  const double closed = m["acc_closed"], majority = m["majority_accuracy_closed"];
  WARN("VQA-RAD test: closed accuracy " << closed << " (majority answer " << majority << "), open "
                                        << m["acc_open"].get<double>() << ", overall " << m["accuracy"].get<double>()
                                        << ", " << r.fit.seconds << " s");
  CHECK(r.results["data"]["answers"].get<int64_t>() > 400);
  CHECK(m["count"] == 451);
  CHECK(closed > majority + 0.05);
}
