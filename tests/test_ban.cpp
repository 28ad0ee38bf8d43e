// Tests of tasks/ban.hpp (BanHead, the BAN VQA head, and its parts) against a PyTorch reference of the
// ban-vqa design with random weights, written by tools/gen_ban_fixtures.py into tests/fixtures/ban:
// "pooled" (Nv = 1, glimpses 2) and "grid" (Nv = 7 with two all-zero v rows, glimpses 4), Nq = 9, k = 3.
//
// Error metric: for each compared tensor, max_i |mc_i - ref_i| / max_i |ref_i|, required <= 1e-4 in f32.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "mc/io/npy.hpp"
#include "mc/io/torch_load.hpp"
#include "mc/mc.hpp"
#include "mc/tasks/ban.hpp"

using namespace mc;
using mc::tasks::BanConfig;
using mc::tasks::BanHead;

namespace {

constexpr double kTol = 1e-4;

std::string ban_fixture(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/tests/fixtures/ban/" + name; }

struct BanCase {
  std::string name;
  BanConfig cfg;
};

// The fixtures' configs (tools/gen_ban_fixtures.py, configs.json).
BanCase ban_case(const std::string& name) {
  BanConfig c;
  if (name == "pooled") {
    c.v_dim = 12;
    c.q_dim = c.hidden = 16;
    c.glimpses = 2;
    c.n_answers = 7;
  } else {
    c.v_dim = 10;
    c.q_dim = c.hidden = 12;
    c.glimpses = 4;
    c.n_answers = 5;
  }
  c.k = 3;
  return {name, c};
}

const std::map<std::string, Tensor>& ban_npz(const std::string& name) {
  static std::map<std::string, std::map<std::string, Tensor>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, io::load_npz_map(ban_fixture(name + ".npz"))).first;
  return it->second;
}

Tensor ban_ref(const std::string& name, const std::string& key) {
  const auto& m = ban_npz(name);
  auto it = m.find(key);
  INFO("npz key " << key);
  REQUIRE(it != m.end());
  return it->second;
}

// max |a - b| / max |b| over the entries where b is finite; a must be +-inf exactly where b is.
double ban_rel_err(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.detach().to(DType::F64).to_vector<double>(), y = b.to(DType::F64).to_vector<double>();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(y[i])) {
      if (x[i] != y[i]) return INFINITY;
      continue;
    }
    if (!std::isfinite(x[i])) return INFINITY;
    diff = std::max(diff, std::fabs(x[i] - y[i]));
    scale = std::max(scale, std::fabs(y[i]));
  }
  return diff / std::max(scale, 1e-30);
}

#define BAN_CHECK_CLOSE(what, got, want, worst)                      \
  do {                                                               \
    const double e_ = ban_rel_err(got, want);                        \
    worst = std::max(worst, e_);                                     \
    INFO(what << ": max error " << e_ << " relative to max |ref|");  \
    CHECK(e_ <= kTol);                                               \
  } while (0)

std::shared_ptr<BanHead> load_head(const BanCase& c) {
  auto h = std::make_shared<BanHead>(c.cfg);
  h->load_state_dict(io::find_state_dict(io::load_torch(ban_fixture(c.name + ".pt"))));
  h->eval();
  return h;
}

// A tiny f64 head with random (not freshly initialised) weights, in eval mode.
std::shared_ptr<BanHead> tiny_head(const BanConfig& c, uint64_t seed) {
  Generator gen(seed);
  auto h = std::make_shared<BanHead>(c, &gen);
  h->to(DType::F64);
  h->eval();
  NoGradGuard ng;
  for (auto& [n, t] : h->named_parameters()) {
    Tensor p = t;
    if (n.size() > 2 && n.compare(n.size() - 2, 2, "_g") == 0) {
      mul_(p, 0.8);
    } else {
      Tensor r = randn(p.shape(), &gen, DType::F64);
      add_(p, r, 0.1);
    }
  }
  return h;
}

BanConfig tiny_config() {
  BanConfig c;
  c.v_dim = 3;
  c.q_dim = c.hidden = 3;
  c.glimpses = 2;
  c.n_answers = 3;
  c.k = 3;
  return c;
}

}  // namespace

TEST_CASE("ban: state_dict names, order and shapes equal the reference's; strict load", "[ban]") {
  for (const char* name : {"pooled", "grid"}) {
    INFO(name);
    BanCase c = ban_case(name);
    nn::NamedTensors ref = io::find_state_dict(io::load_torch(ban_fixture(c.name + ".pt")));
    BanHead h(c.cfg);
    nn::NamedTensors mine = h.state_dict();
    REQUIRE(mine.size() == ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      INFO(ref[i].first);
      CHECK(mine[i].first == ref[i].first);
      CHECK(mine[i].second.shape() == ref[i].second.shape());
    }
    CHECK(h.load_state_dict(ref).ok());
    // Strict load refuses a dict with a key missing or renamed, and changes nothing.
    nn::NamedTensors bad(ref.begin() + 1, ref.end());
    CHECK_THROWS_AS(h.load_state_dict(bad), Error);
    bad = ref;
    bad[1].first = "v_att.logits.h_mat";
    CHECK_THROWS_WITH(h.load_state_dict(bad), Catch::Contains("v_att.logits.h_mat_g"));
  }
  // Names of one config, spelled out.
  BanHead h(ban_case("pooled").cfg);
  std::vector<std::string> names;
  for (auto& [n, t] : h.state_dict()) names.push_back(n);
  CHECK(names[0] == "v_att.logits.h_bias");
  CHECK(names[1] == "v_att.logits.h_mat_g");
  CHECK(names[2] == "v_att.logits.h_mat_v");
  CHECK(names[3] == "v_att.logits.v_net.main.1.bias");
  CHECK(names[4] == "v_att.logits.v_net.main.1.weight_g");
  CHECK(names[5] == "v_att.logits.v_net.main.1.weight_v");
  CHECK(std::count(names.begin(), names.end(), "b_net.1.q_net.main.1.weight_v") == 1);
  CHECK(std::count(names.begin(), names.end(), "q_prj.1.main.1.bias") == 1);
  CHECK(names[names.size() - 6] == "classifier.main.0.bias");
  CHECK(names.back() == "classifier.main.3.weight_v");
  CHECK(h.v_att->logits->h_mat_g.dim() == 0);
}

TEST_CASE("ban: logits, attention maps and gradients match the PyTorch reference (eval)", "[ban]") {
  for (const char* name : {"pooled", "grid"}) {
    INFO(name);
    BanCase c = ban_case(name);
    auto h = load_head(c);
    Tensor v = ban_ref(name, "v").clone(), q = ban_ref(name, "q").clone();
    v.requires_grad_(true);
    q.requires_grad_(true);
    tasks::BanOutput out = h->forward_all(v, q);
    double worst = 0, worst_grad = 0;
    BAN_CHECK_CLOSE("logits", out.logits, ban_ref(name, "logits"), worst);
    BAN_CHECK_CLOSE("attention", out.attention, ban_ref(name, "att"), worst);
    BAN_CHECK_CLOSE("attention logits", out.attention_logits, ban_ref(name, "att_logits"), worst);
    CHECK(h->last_attention().shape() == out.attention.shape());

    sum(out.logits * ban_ref(name, "r")).backward();
    BAN_CHECK_CLOSE("grad v", v.grad(), ban_ref(name, "grad.v"), worst_grad);
    BAN_CHECK_CLOSE("grad q", q.grad(), ban_ref(name, "grad.q"), worst_grad);
    int64_t n = 0;
    for (auto& [pn, p] : h->named_parameters()) {
      INFO(pn);
      REQUIRE(p.grad().defined());
      if (pn == "v_att.logits.h_bias") {
        // h_bias shifts every logit of a glimpse alike, which the softmax ignores: its gradient is zero, and
        // both sides hold rounding noise only.
        CHECK(amax(abs(p.grad())).item<float>() < 1e-5f);
        CHECK(amax(abs(ban_ref(name, "grad." + pn))).item<float>() < 1e-5f);
      } else {
        BAN_CHECK_CLOSE("grad " + pn, p.grad(), ban_ref(name, "grad." + pn), worst_grad);
      }
      ++n;
    }
    CHECK(n == int64_t(h->state_dict().size()));
    INFO(name << ": max relative error, outputs " << worst << ", gradients " << worst_grad);
    CHECK(std::max(worst, worst_grad) <= kTol);
  }
}

TEST_CASE("ban: all-zero v rows are masked as in ban-vqa; mask_empty_v = false turns it off", "[ban]") {
  BanCase c = ban_case("grid");
  auto h = load_head(c);
  Tensor v = ban_ref("grid", "v"), q = ban_ref("grid", "q");
  NoGradGuard ng;
  tasks::BanOutput out = h->forward_all(v, q);
  // Sample 1's rows 5 and 6 are zero: no attention there.
  Tensor a = out.attention.select(0, 1).narrow(1, 5, 2);
  CHECK(sum(abs(a)).item<double>() == 0.0);
  CHECK(std::isinf(out.attention_logits.select(0, 1).select(1, 5).select(1, 0).select(0, 0).item<float>()));

  // One sample with Nv = 1 and a zero pooled embedding: NaN for it (as the reference), finite for others.
  BanCase p = ban_case("pooled");
  auto hp = load_head(p);
  Tensor vp = ban_ref("pooled", "v").clone();
  Tensor row = vp.select(0, 0);
  fill_(row, 0);
  std::vector<float> lg = hp->forward(vp, ban_ref("pooled", "q")).to_vector<float>();
  const int64_t A = p.cfg.n_answers;
  CHECK(std::all_of(lg.begin(), lg.begin() + A, [](float x) { return std::isnan(x); }));
  CHECK(std::all_of(lg.begin() + A, lg.end(), [](float x) { return std::isfinite(x); }));

  BanConfig off = p.cfg;
  off.mask_empty_v = false;
  BanHead h2(off);
  h2.load_state_dict(hp->state_dict());
  h2.eval();
  std::vector<float> lg2 = h2.forward(vp, ban_ref("pooled", "q")).to_vector<float>();
  CHECK(std::all_of(lg2.begin(), lg2.end(), [](float x) { return std::isfinite(x); }));
  for (size_t i = size_t(A); i < lg.size(); ++i) CHECK(lg2[i] == Approx(lg[i]).epsilon(1e-6));
}

TEST_CASE("ban: q_mask gives the logits of the sample truncated to its real tokens", "[ban]") {
  BanCase c = ban_case("grid");
  auto h = load_head(c);
  Tensor v = ban_ref("grid", "v"), q = ban_ref("grid", "q");
  NoGradGuard ng;
  const int64_t B = q.size(0), Nq = q.size(1), real = 5;
  std::vector<float> m(size_t(B * Nq), 1.0f);
  for (int64_t j = real; j < Nq; ++j) m[size_t(2 * Nq + j)] = 0;  // sample 2: 5 real tokens
  Tensor mask = from_vector(m, {B, Nq});
  Tensor masked = h->forward(v, q, mask);
  Tensor full_ones = h->forward(v, q, ones({B, Nq}));
  Tensor plain = h->forward(v, q);
  double unused = 0;
  BAN_CHECK_CLOSE("all-ones mask", full_ones, plain, unused);
  BAN_CHECK_CLOSE("unmasked samples", masked.narrow(0, 0, 2), plain.narrow(0, 0, 2), unused);
  Tensor trunc = h->forward(v.narrow(0, 2, 1), q.narrow(0, 2, 1).narrow(1, 0, real));
  BAN_CHECK_CLOSE("masked sample vs truncated", masked.narrow(0, 2, 1), trunc, unused);
  CHECK(ban_rel_err(masked.narrow(0, 2, 1), plain.narrow(0, 2, 1)) > 1e-3);
  // A boolean mask works the same.
  Tensor bmask = mask != 0.0;
  BAN_CHECK_CLOSE("bool mask", h->forward(v, q, bmask), masked, unused);
}

TEST_CASE("ban: gradcheck (f64, eval) with respect to v, q and parameters", "[ban]") {
  BanConfig c = tiny_config();
  auto h = tiny_head(c, 7);
  Generator gen(3);
  const int64_t B = 2, Nv = 2, Nq = 3;
  Tensor v = randn({B, Nv, c.v_dim}, &gen, DType::F64), q = randn({B, Nq, c.q_dim}, &gen, DType::F64);
  Tensor mask = from_vector(std::vector<double>{1, 1, 1, 1, 1, 0}, {B, Nq});

  GradcheckResult r = gradcheck([&](const std::vector<Tensor>& in) { return h->forward(in[0], in[1]); }, {v, q});
  INFO(r.message);
  CHECK(r.ok);
  GradcheckResult rm = gradcheck([&](const std::vector<Tensor>& in) { return h->forward(in[0], in[1], mask); }, {v, q});
  INFO(rm.message);
  CHECK(rm.ok);

  // Parameters: central differences of L = sum(logits * w) against the analytic gradient.
  Tensor w = randn({B, c.n_answers}, &gen, DType::F64);
  h->zero_grad();
  sum(h->forward(v, q) * w).backward();
  auto loss = [&]() {
    NoGradGuard ng;
    return sum(h->forward(v, q) * w).item<double>();
  };
  std::map<std::string, Tensor> params;
  for (auto& [n, t] : h->named_parameters()) params[n] = t;
  double worst = 0;
  for (const char* pn : {"v_att.logits.h_mat_g", "v_att.logits.h_mat_v", "v_att.logits.h_bias",
                         "v_att.logits.q_net.main.1.weight_g", "b_net.1.v_net.main.1.weight_v",
                         "b_net.0.q_net.main.1.bias", "q_prj.0.main.1.weight_g", "q_prj.1.main.1.weight_v",
                         "classifier.main.0.weight_g", "classifier.main.3.bias"}) {
    INFO(pn);
    REQUIRE(params.count(pn));
    Tensor p = params[pn];
    REQUIRE(p.is_contiguous());
    std::vector<double> ga = p.grad().to_vector<double>();
    double* d = p.data<double>();
    for (int64_t i = 0; i < std::min<int64_t>(p.numel(), 6); ++i) {
      const double orig = d[i], eps = 1e-6;
      d[i] = orig + eps;
      const double lp = loss();
      d[i] = orig - eps;
      const double lm = loss();
      d[i] = orig;
      const double num = (lp - lm) / (2 * eps);
      worst = std::max(worst, std::fabs(num - ga[size_t(i)]));
      INFO("element " << i << ": analytic " << ga[size_t(i)] << ", numerical " << num);
      CHECK(std::fabs(num - ga[size_t(i)]) <= 1e-6 + 1e-4 * std::fabs(num));
    }
  }
  INFO("gradcheck: v/q max abs error " << std::max(r.max_abs_error, rm.max_abs_error) << ", parameters " << worst);
  CHECK(worst <= 1e-6);
}

TEST_CASE("ban: train mode applies dropout, reproducibly for one seed", "[ban]") {
  BanConfig c = ban_case("grid").cfg;
  auto h = load_head(ban_case("grid"));
  Tensor v = ban_ref("grid", "v"), q = ban_ref("grid", "q");
  NoGradGuard ng;
  Tensor e1 = h->forward(v, q), e2 = h->forward(v, q);
  CHECK(ban_rel_err(e1, e2) == 0.0);
  h->train();
  manual_seed(5);
  Tensor a = h->forward(v, q);
  manual_seed(5);
  Tensor b = h->forward(v, q);
  manual_seed(6);
  Tensor d = h->forward(v, q);
  CHECK(ban_rel_err(a, b) == 0.0);
  CHECK(ban_rel_err(a, d) > 1e-3);
  CHECK(ban_rel_err(a, e1) > 1e-3);
  // With every dropout probability 0, training mode equals eval mode.
  c.dropout_fc = c.dropout_att = c.dropout_q = c.dropout_cls = 0;
  BanHead z(c);
  // dropout_fc = 0 removes the Dropout layers of the FCNets, so their Linear moves to main.0 (ban-vqa's layout).
  nn::NamedTensors sd;
  for (auto& [n, t] : h->state_dict()) {
    std::string m = n;
    const size_t at = m.find("main.1.");
    if (at != std::string::npos && m.rfind("classifier", 0) != 0) m.replace(at, 7, "main.0.");
    sd.emplace_back(m, t);
  }
  z.load_state_dict(sd);
  z.train();
  manual_seed(5);
  double unused = 0;
  BAN_CHECK_CLOSE("no-dropout train vs eval", z.forward(v, q), e1, unused);
}

TEST_CASE("ban: WeightNormLinear is g * v / ||v|| with one scalar g", "[ban]") {
  Generator gen(1);
  tasks::WeightNormLinear l(4, 3, true, &gen);
  std::vector<std::string> names;
  for (auto& [n, t] : l.state_dict()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"bias", "weight_g", "weight_v"});
  CHECK(l.weight_g.dim() == 0);
  double unused = 0;
  BAN_CHECK_CLOSE("fresh weight", l.weight().detach(), l.weight_v.detach(), unused);
  {
    NoGradGuard ng;
    fill_(l.weight_g, 2.0);
  }
  Tensor wv = l.weight_v.detach();
  Tensor expect = wv * (2.0 / std::sqrt(sum(wv * wv).item<double>()));
  BAN_CHECK_CLOSE("scaled weight", l.weight().detach(), expect, unused);
  Tensor x = randn({2, 5, 4}, &gen);
  BAN_CHECK_CLOSE("forward", l.forward(x).detach(), linear(x, expect, l.bias.detach()), unused);
  CHECK_THROWS_WITH(l.forward(randn({2, 5})), Catch::Contains("WeightNormLinear"));
}

TEST_CASE("ban: bad shapes and configs throw mc::Error", "[ban]") {
  BanConfig c = tiny_config();
  BanHead h(c);
  Tensor v = randn({2, 1, 3}), q = randn({2, 4, 3});
  CHECK_NOTHROW(h.forward(v, q));
  CHECK(h.forward(v, q).shape() == Shape{2, 3});
  CHECK_THROWS_WITH(h.forward(randn({2, 3}), q), Catch::Contains("BanHead: v must be"));
  CHECK_THROWS_WITH(h.forward(randn({2, 1, 4}), q), Catch::Contains("BanHead: v must be"));
  CHECK_THROWS_WITH(h.forward(randn({2, 0, 3}), q), Catch::Contains("BanHead: v must be"));
  CHECK_THROWS_WITH(h.forward(v, randn({2, 4, 5})), Catch::Contains("BanHead: q must be"));
  CHECK_THROWS_WITH(h.forward(v, randn({2, 4})), Catch::Contains("BanHead: q must be"));
  CHECK_THROWS_WITH(h.forward(v, randn({3, 4, 3})), Catch::Contains("batch sizes"));
  CHECK_THROWS_WITH(h.forward(v, q, ones({2, 5})), Catch::Contains("q_mask"));
  CHECK_THROWS_WITH(h.forward(v, q, ones({2})), Catch::Contains("q_mask"));
  CHECK_THROWS_WITH(h.forward(v.to(DType::F64), q), Catch::Contains("dtype"));
  CHECK_THROWS_WITH(h.forward(v.to(DType::F64), q.to(DType::F64)), Catch::Contains("parameters are"));
  CHECK_THROWS_WITH(h.forward(Tensor(), q), Catch::Contains("must be defined"));

  auto bad = [&](auto edit) {
    BanConfig b = tiny_config();
    edit(b);
    return [b]() { BanHead x(b); };
  };
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.q_dim = 4; })(), Catch::Contains("must equal hidden"));
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.glimpses = 0; })(), Catch::Contains("glimpses"));
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.glimpses = 33; })(), Catch::Contains("glimpses"));
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.n_answers = 0; })(), Catch::Contains("positive"));
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.v_dim = -1; })(), Catch::Contains("positive"));
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.k = 0; })(), Catch::Contains("positive"));
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.dropout_cls = 1.0; })(), Catch::Contains("dropout_cls"));
  CHECK_THROWS_WITH(bad([](BanConfig& b) { b.dropout_att = -0.1; })(), Catch::Contains("dropout_att"));

  tasks::BCNet pool(3, 3, 3, 0, 1, 0.2, 0.5);
  CHECK_THROWS_WITH(pool.forward(v, q), Catch::Contains("h_out = 0"));
  CHECK_THROWS_WITH(pool.forward_with_weights(v, q, ones({2, 2, 4})), Catch::Contains("forward_with_weights"));
  CHECK_THROWS_WITH(pool.forward_with_weights(v, randn({3, 4, 3}), ones({2, 1, 4})), Catch::Contains("one B"));
  CHECK_THROWS_WITH(h.v_att->forward(v, q, ones({2, 3})), Catch::Contains("BiAttention: q_mask"));
}
