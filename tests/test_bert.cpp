// models/bert.hpp: BertModel against transformers' BertModel on three tiny random configurations
// (tests/fixtures/bert, written by tools/gen_bert_fixtures.py): state_dict names, strict loading, outputs
// and gradients, train / eval behaviour, and argument errors.
//
// Error metric: max |mc - reference| / max |reference| over a tensor (f32), required <= 1e-4.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/io/npy.hpp"
#include "mc/io/torch_load.hpp"
#include "mc/mc.hpp"
#include "mc/models/bert.hpp"

using namespace mc;
using mc::models::BertConfig;
using mc::models::BertModel;
using mc::models::BertOutput;

namespace {

const char* const kConfigs[] = {"tiny", "nopool", "relu"};
constexpr double kTol = 1e-4;

std::string fixture(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/tests/fixtures/bert/" + name; }

const nlohmann::json& configs() {
  static const nlohmann::json j = [] {
    std::ifstream f(fixture("configs.json"));
    REQUIRE(f.good());
    return nlohmann::json::parse(f);
  }();
  return j;
}

BertConfig config_of(const std::string& name) {
  const auto& j = configs().at(name);
  BertConfig c;
  c.vocab_size = j.at("vocab_size");
  c.hidden_size = j.at("hidden_size");
  c.layers = j.at("layers");
  c.heads = j.at("heads");
  c.intermediate_size = j.at("intermediate_size");
  c.max_position_embeddings = j.at("max_position_embeddings");
  c.type_vocab_size = j.at("type_vocab_size");
  c.pad_token_id = j.at("pad_token_id");
  c.ln_eps = j.at("ln_eps");
  c.pooler = j.at("pooler");
  c.act = j.at("act");
  return c;
}

std::vector<std::string> hf_keys(const std::string& name) {
  return configs().at(name).at("state_dict_keys").get<std::vector<std::string>>();
}

// The checkpoint's state dict without HF's non-persistent buffers (kept by some transformers versions).
nn::NamedTensors load_state(const std::string& name) {
  io::TorchFile f = io::load_torch(fixture(name + ".pt"));
  nn::NamedTensors sd = io::find_state_dict(f);
  std::erase_if(sd, [](const auto& kv) {
    return kv.first == "embeddings.position_ids" || kv.first == "embeddings.token_type_ids";
  });
  return sd;
}

std::map<std::string, Tensor> arrays(const std::string& name) { return io::load_npz_map(fixture(name + ".npz")); }

// A model of fixture `name` with the fixture's weights, in eval mode.
std::unique_ptr<BertModel> loaded(const std::string& name, BertConfig c) {
  auto m = std::make_unique<BertModel>(c);
  m->load_state_dict(load_state(name));
  m->eval();
  return m;
}
std::unique_ptr<BertModel> loaded(const std::string& name) { return loaded(name, config_of(name)); }

// max |a - b| / max |b|; 0 when both are all zero.
double rel_err(const Tensor& a, const Tensor& b) {
  REQUIRE(a.defined());
  REQUIRE(a.shape() == b.shape());
  std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(double(x[i]) - double(y[i])));
    scale = std::max(scale, std::abs(double(y[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector<float>()) m = std::max(m, std::abs(double(v)));
  return m;
}

bool all_zero(const Tensor& t) {
  auto v = t.to_vector<float>();
  return std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; });
}

bool equal(const Tensor& a, const Tensor& b) { return a.to_vector<float>() == b.to_vector<float>(); }

std::vector<std::string> names(const nn::NamedTensors& v) {
  std::vector<std::string> r;
  for (auto& [n, t] : v) r.push_back(n);
  return r;
}

}  // namespace

TEST_CASE("BertModel state_dict names and shapes are HF BertModel's", "[bert]") {
  for (const char* name : kConfigs) {
    INFO(name);
    BertModel m(config_of(name));
    CHECK(names(m.state_dict()) == hf_keys(name));
    CHECK(m.named_buffers().empty());  // no position_ids / token_type_ids buffers
    nn::NamedTensors sd = load_state(name);
    CHECK(names(sd) == hf_keys(name));
    std::map<std::string, Shape> shapes;
    for (auto& [n, t] : sd) shapes[n] = t.shape();
    for (auto& [n, t] : m.state_dict()) CHECK(t.shape() == shapes[n]);
    CHECK(bool(m.pooler) == config_of(name).pooler);
  }
  // The defaults are BERT-base's (BiomedCLIP's PubMedBERT, PMC-CLIP's text encoder).
  BertConfig base;
  CHECK((base.vocab_size == 30522 && base.hidden_size == 768 && base.layers == 12 && base.heads == 12 &&
         base.intermediate_size == 3072 && base.max_position_embeddings == 512 && base.type_vocab_size == 2 &&
         base.pad_token_id == 0 && base.ln_eps == 1e-12 && base.pooler && base.act == "gelu"));
}

TEST_CASE("BertModel fresh weights follow HF's initialisation", "[bert]") {
  BertConfig c = config_of("nopool");
  BertModel m(c);
  auto row = m.embeddings->word_embeddings->weight.narrow(0, c.pad_token_id, 1);
  CHECK(all_zero(row));
  CHECK(all_zero(m.encoder->layer->layers[0]->attention->self->query->bias));
  CHECK(equal(m.embeddings->LayerNorm->weight, ones({c.hidden_size})));
  Tensor w = m.encoder->layer->layers[0]->intermediate->dense->weight;
  const double sd = stddev(w).item<double>();
  CHECK(sd > 0.015);
  CHECK(sd < 0.025);
}

TEST_CASE("BertModel loads strictly", "[bert]") {
  nn::NamedTensors sd = load_state("tiny");
  BertModel m(config_of("tiny"));
  CHECK(m.load_state_dict(sd).ok());
  for (auto& [n, t] : sd)
    if (n == "encoder.layer.1.output.dense.weight") CHECK(equal(m.encoder->layer->layers[1]->output->dense->weight, t));

  nn::NamedTensors extra = sd;
  extra.emplace_back("embeddings.position_ids", arange(24).reshape({1, 24}));
  CHECK_THROWS_WITH(m.load_state_dict(extra), Catch::Contains("embeddings.position_ids"));
  nn::NamedTensors missing(sd.begin(), sd.end() - 2);  // no pooler
  CHECK_THROWS_WITH(m.load_state_dict(missing), Catch::Contains("pooler.dense.weight"));
  // A pooler-less model does not take a checkpoint with a pooler; non-strict loading reports it.
  BertConfig c = config_of("tiny");
  c.pooler = false;
  BertModel nopool(c);
  CHECK_THROWS_AS(nopool.load_state_dict(sd), Error);
  nn::LoadReport r = nopool.load_state_dict(sd, false);
  CHECK(r.unexpected == std::vector<std::string>{"pooler.dense.weight", "pooler.dense.bias"});
  CHECK(r.missing.empty());
  // A different vocabulary size is a shape mismatch.
  c.vocab_size = 121;
  BertModel wrong(c);
  CHECK_THROWS_WITH(wrong.load_state_dict(sd), Catch::Contains("embeddings.word_embeddings.weight"));
}

TEST_CASE("BertModel matches HF BertModel (padded batch, mask, token types, hidden states)", "[bert]") {
  for (const char* name : kConfigs) {
    INFO(name);
    auto m = loaded(name);
    auto a = arrays(name);
    BertOutput o = m->forward(a["input_ids"], a["attention_mask"], a["token_type_ids"], true);
    const double e_last = rel_err(o.last_hidden_state, a["last_hidden_state"]);
    CHECK(e_last <= kTol);
    const int64_t layers = m->config().layers;
    REQUIRE(int64_t(o.hidden_states.size()) == layers + 1);
    for (int64_t i = 0; i <= layers; ++i) {
      const double e = rel_err(o.hidden_states[size_t(i)], a["hidden_state_" + std::to_string(i)]);
      CHECK(e <= kTol);
    }
    CHECK(o.hidden_states.back().is_same(o.last_hidden_state));
    if (m->config().pooler) {
      const double e_pool = rel_err(o.pooler_output, a["pooler_output"]);
      CHECK(e_pool <= kTol);
    } else {
      CHECK(!o.pooler_output.defined());
    }
    // Without output_hidden_states nothing is kept; a bool mask and i32 ids give the same result.
    BertOutput q = m->forward(a["input_ids"].to(DType::I32), a["attention_mask"] != 0.0,
                              a["token_type_ids"].to(DType::I32));
    CHECK(q.hidden_states.empty());
    CHECK(equal(q.last_hidden_state, o.last_hidden_state));
  }
}

TEST_CASE("BertModel matches HF BertModel without mask and token types", "[bert]") {
  for (const char* name : kConfigs) {
    INFO(name);
    auto m = loaded(name);
    auto a = arrays(name);
    BertOutput o = m->forward(a["input_ids"]);
    const double e_last = rel_err(o.last_hidden_state, a["nomask_last_hidden_state"]);
    CHECK(e_last <= kTol);
    if (m->config().pooler) {
      const double e_pool = rel_err(o.pooler_output, a["nomask_pooler_output"]);
      CHECK(e_pool <= kTol);
    }
    // An all-ones mask and all-zero token types are the same as none.
    Tensor ids = a["input_ids"];
    BertOutput p = m->forward(ids, ones(ids.shape(), DType::I64), zeros(ids.shape(), DType::I64));
    CHECK(rel_err(p.last_hidden_state, o.last_hidden_state) <= 1e-6);
    // The mask matters: padded keys are ignored.
    CHECK(rel_err(o.last_hidden_state, a["last_hidden_state"]) > 1e-3);
  }
}

TEST_CASE("BertModel gradients match HF BertModel", "[bert]") {
  for (const char* name : kConfigs) {
    INFO(name);
    auto m = loaded(name);
    auto a = arrays(name);
    BertOutput o = m->forward(a["input_ids"], a["attention_mask"], a["token_type_ids"]);
    Tensor loss = sum(o.last_hidden_state * a["loss_w_last"]);
    if (m->config().pooler) loss = loss + sum(o.pooler_output * a["loss_w_pool"]);
    loss.backward();
    for (auto& [pname, p] : m->named_parameters()) {
      INFO(pname);
      REQUIRE(p.grad().defined());
      const std::string suffix = "attention.self.key.bias";
      if (pname.ends_with(suffix)) {
        // A key bias adds the same q.b to every score of a query row, which softmax cancels: its true
        // gradient is 0 and both sides hold rounding noise. Bound it by the key weight's gradient scale.
        const std::string kw = "grad." + pname.substr(0, pname.size() - 4) + "weight";
        const double noise = max_abs(p.grad()), scale = max_abs(a[kw]);
        CHECK(noise <= 1e-5 * scale);
        continue;
      }
      const double e = rel_err(p.grad(), a["grad." + pname]);
      CHECK(e <= kTol);
    }
    // Zero exactly where no gradient is expected: unused word ids, the padding id, positions >= L.
    const BertConfig& c = m->config();
    Tensor gw = m->embeddings->word_embeddings->weight.grad();
    std::vector<int64_t> ids = a["input_ids"].to_vector<int64_t>();
    for (int64_t v = 0; v < c.vocab_size; ++v) {
      const bool used = std::find(ids.begin(), ids.end(), v) != ids.end() && v != c.pad_token_id;
      CHECK(all_zero(gw.narrow(0, v, 1)) == !used);
    }
    const int64_t L = a["input_ids"].size(1);
    Tensor gp = m->embeddings->position_embeddings->weight.grad();
    CHECK(!all_zero(gp.narrow(0, 0, L)));
    if (L < c.max_position_embeddings) CHECK(all_zero(gp.narrow(0, L, c.max_position_embeddings - L)));
  }
}

TEST_CASE("BertModel without token types trains token type row 0 only", "[bert]") {
  auto m = loaded("tiny");
  auto a = arrays("tiny");
  BertOutput o = m->forward(a["input_ids"], a["attention_mask"]);
  sum(o.last_hidden_state * a["loss_w_last"]).backward();
  for (auto& [pname, p] : m->named_parameters()) {
    INFO(pname);
    if (pname.starts_with("pooler.")) {
      CHECK(!p.grad().defined());  // the pooler is not in this loss
      continue;
    }
    REQUIRE(p.grad().defined());
    if (!pname.ends_with("attention.self.key.bias")) CHECK(!all_zero(p.grad()));  // key bias: 0 up to rounding
  }
  Tensor gt = m->embeddings->token_type_embeddings->weight.grad();
  CHECK(!all_zero(gt.narrow(0, 0, 1)));
  CHECK(all_zero(gt.narrow(0, 1, 1)));
  // Frozen parameters get no gradient.
  m->zero_grad();
  m->freeze("embeddings.*");
  sum(m->forward(a["input_ids"], a["attention_mask"]).last_hidden_state).backward();
  CHECK(!m->embeddings->word_embeddings->weight.grad().defined());
  CHECK(m->encoder->layer->layers[0]->attention->self->key->weight.grad().defined());
}

TEST_CASE("BertModel dropout is active only in training", "[bert]") {
  auto a = arrays("tiny");
  const Tensor ids = a["input_ids"], mask = a["attention_mask"], types = a["token_type_ids"];
  auto m = loaded("tiny");
  NoGradGuard ng;
  Tensor e1 = m->forward(ids, mask, types).last_hidden_state, e2 = m->forward(ids, mask, types).last_hidden_state;
  CHECK(equal(e1, e2));
  CHECK(rel_err(e1, a["last_hidden_state"]) <= kTol);
  m->train();
  CHECK(m->encoder->layer->layers[1]->output->is_training());
  manual_seed(7);
  Tensor t1 = m->forward(ids, mask, types).last_hidden_state;
  Tensor t2 = m->forward(ids, mask, types).last_hidden_state;
  CHECK(rel_err(t1, e1) > 1e-2);
  CHECK(rel_err(t2, t1) > 1e-2);
  manual_seed(7);
  CHECK(equal(m->forward(ids, mask, types).last_hidden_state, t1));  // reproducible for one seed
  m->eval();
  CHECK(equal(m->forward(ids, mask, types).last_hidden_state, e1));

  // Attention-probability dropout is not applied (the fused attention op has none): with only
  // attention_dropout set, training mode gives the eval output.
  BertConfig c = config_of("tiny");
  c.hidden_dropout = 0;
  c.attention_dropout = 0.5;
  auto n = loaded("tiny", c);
  n->train();
  CHECK(equal(n->forward(ids, mask, types).last_hidden_state, e1));
}

TEST_CASE("BertModel rejects bad inputs and configs", "[bert]") {
  auto m = loaded("tiny");
  const BertConfig& c = m->config();
  auto a = arrays("tiny");
  const Tensor ids = a["input_ids"], mask = a["attention_mask"], types = a["token_type_ids"];
  Tensor big = ids.clone();
  {
    NoGradGuard ng;
    Tensor cell = big.narrow(0, 1, 1).narrow(1, 2, 1);
    fill_(cell, double(c.vocab_size));
  }
  CHECK_THROWS_WITH(m->forward(big), Catch::Contains("BertModel") && Catch::Contains("input_ids") &&
                                         Catch::Contains("vocab_size"));
  CHECK_THROWS_WITH(m->forward(ids - 1.0), Catch::Contains("input_ids"));  // -1 where ids were 0
  Tensor long_ids = zeros({1, c.max_position_embeddings + 1}, DType::I64);
  CHECK_THROWS_WITH(m->forward(long_ids), Catch::Contains("max_position_embeddings"));
  CHECK_NOTHROW(m->forward(zeros({1, c.max_position_embeddings}, DType::I64)));
  CHECK_THROWS_WITH(m->forward(ids, mask.narrow(1, 0, 5)), Catch::Contains("attention_mask"));
  CHECK_THROWS_WITH(m->forward(ids, mask, types.narrow(0, 0, 1)), Catch::Contains("token_type_ids"));
  CHECK_THROWS_WITH(m->forward(ids, mask, types + 1.0), Catch::Contains("type_vocab_size"));
  CHECK_THROWS_WITH(m->forward(ids.to(DType::F32)), Catch::Contains("input_ids must be i64"));
  CHECK_THROWS_WITH(m->forward(ids.reshape({-1})), Catch::Contains("[B, L]"));
  CHECK_THROWS_WITH(m->forward(Tensor()), Catch::Contains("undefined"));
  CHECK_THROWS_WITH(m->forward(zeros({2, 0}, DType::I64)), Catch::Contains("empty"));

  BertConfig bad = c;
  bad.heads = 5;
  CHECK_THROWS_WITH(BertModel(bad), Catch::Contains("multiple of heads"));
  bad = c;
  bad.act = "swish";
  CHECK_THROWS_WITH(BertModel(bad), Catch::Contains("swish"));
  bad = c;
  bad.pad_token_id = c.vocab_size;
  CHECK_THROWS_WITH(BertModel(bad), Catch::Contains("pad_token_id"));
  bad = c;
  bad.hidden_dropout = 1.0;
  CHECK_THROWS_WITH(BertModel(bad), Catch::Contains("dropout"));
}
