// The procedural image-caption domains of the study in miniature, and contrastive pre-training on them.
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "mc/data/synthetic.hpp"
#include "mc/tasks/demo.hpp"
#include "mc/tasks/pretrain.hpp"

using namespace mc;
namespace syn = mc::data::synthetic;

namespace {

bool has_word(const std::string& text, const std::string& word) {
  size_t i = 0;
  while ((i = text.find(word, i)) != std::string::npos) {
    const bool start = i == 0 || !std::isalpha(static_cast<unsigned char>(text[i - 1]));
    const size_t e = i + word.size();
    const bool end = e == text.size() || !std::isalpha(static_cast<unsigned char>(text[e]));
    if (start && end) return true;
    ++i;
  }
  return false;
}

// Mean grey level of the image in the box [x0, x1) x [y0, y1).
double box_mean(const io::Image& im, int x0, int x1, int y0, int y1) {
  double s = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) s += im.at(y, x, 0);
  return s / double((x1 - x0) * (y1 - y0));
}

}  // namespace

TEST_CASE("synthetic: the same seed gives the same data, bit for bit", "[synthetic]") {
  for (syn::Domain d : {syn::Domain::General, syn::Domain::Medical}) {
    const syn::PairSet a = syn::make_pairs(d, 24, 7), b = syn::make_pairs(d, 24, 7), c = syn::make_pairs(d, 24, 8);
    const syn::PairSet head = syn::make_pairs(d, 10, 7);  // sample i does not depend on the set's size
    CHECK(a.captions == b.captions);
    CHECK(a.keys == b.keys);
    CHECK(a.pixels.to_vector<float>() == b.pixels.to_vector<float>());
    CHECK(a.pixels.shape() == Shape{24, 3, syn::kImageSize, syn::kImageSize});
    CHECK(head.captions == std::vector<std::string>(a.captions.begin(), a.captions.begin() + 10));
    CHECK(head.images[9].pixels == a.images[9].pixels);
    CHECK(a.captions != c.captions);
    CHECK(a.images[0].pixels != c.images[0].pixels);
    CHECK(a.images[0].channels == (d == syn::Domain::General ? 3 : 1));
  }
  syn::SyntheticOptions o;
  o.seed = 11;
  o.cls_train = o.cls_val = o.cls_test = 12;
  o.vqa_train_images = o.vqa_val_images = o.vqa_test_images = 6;
  const syn::ClassificationSet x = syn::make_classification(o), y = syn::make_classification(o);
  CHECK(x.test.labels == y.test.labels);
  CHECK(x.test.pixels.to_vector<float>() == y.test.pixels.to_vector<float>());
  const syn::VqaSet v = syn::make_vqa(o), w = syn::make_vqa(o);
  REQUIRE(v.train.items.size() == w.train.items.size());
  for (size_t i = 0; i < v.train.items.size(); ++i) CHECK(v.train.items[i].question == w.train.items[i].question);
}

TEST_CASE("synthetic: captions state the scene's attributes", "[synthetic]") {
  const syn::PairSet g = syn::make_pairs(syn::Domain::General, 200);
  std::set<std::string> keys;
  for (int64_t i = 0; i < g.size(); ++i) {
    const syn::Scene& s = g.scenes[size_t(i)];
    const std::string full = syn::caption(s, 0);
    CHECK(full == g.keys[size_t(i)]);
    keys.insert(full);
    for (int st = 0; st < syn::kFullCaptionStyles; ++st) {
      const std::string c = syn::caption(s, st);
      CHECK(has_word(c, syn::kShapes[size_t(s.shape)]));
      CHECK(has_word(c, syn::kColors[size_t(s.color)]));
      CHECK(has_word(c, syn::kSizes[size_t(s.size)]));
      CHECK(c.find(syn::position_phrase(s.position)) != std::string::npos);
      for (int other = 0; other < 4; ++other)
        if (other != s.shape) CHECK_FALSE(has_word(c, syn::kShapes[size_t(other)]));
    }
    // Every caption, partial ones included, names the shape and nothing false.
    CHECK(has_word(g.captions[size_t(i)], syn::kShapes[size_t(s.shape)]));
  }
  CHECK(keys.size() > 60);  // 128 combinations: the keys tell contents apart

  const syn::PairSet m = syn::make_pairs(syn::Domain::Medical, 200);
  for (int64_t i = 0; i < m.size(); ++i) {
    const syn::Scene& s = m.scenes[size_t(i)];
    for (int st = 0; st < syn::kCaptionStyles; ++st) {
      const std::string c = syn::caption(s, st);
      for (int f = 1; f < 4; ++f) CHECK(has_word(c, syn::kFindings[size_t(f)]) == (f == s.finding));
      if (s.finding == 0) continue;
      if (st < syn::kFullCaptionStyles) {
        CHECK(has_word(c, syn::kZones[size_t(s.zone)]));
        CHECK_FALSE(has_word(c, syn::kZones[size_t(1 - s.zone)]));
        CHECK(has_word(c, syn::kSides[size_t(s.side)]));
        CHECK_FALSE(has_word(c, syn::kSides[size_t(1 - s.side)]));
        CHECK(has_word(c, syn::kSizes[size_t(s.size)]));
        CHECK(has_word(c, "heart") == s.enlarged_heart);
      }
    }
    if (s.finding == 3) CHECK(s.zone == 1);  // effusions are at the base
  }
  CHECK_THROWS_WITH(syn::caption(m.scenes[0], syn::kCaptionStyles), Catch::Contains("style"));
}

TEST_CASE("synthetic: the pictures show what the captions say", "[synthetic]") {
  // General: the pixels near the shape's colour lie on the named side, and large shapes cover more.
  static const double base[4][3] = {{215, 40, 40}, {40, 190, 60}, {45, 80, 225}, {225, 210, 40}};
  const syn::PairSet g = syn::make_pairs(syn::Domain::General, 160, 3);
  double area[2] = {0, 0};
  int count[2] = {0, 0}, placed = 0;
  for (int64_t i = 0; i < g.size(); ++i) {
    const syn::Scene& s = g.scenes[size_t(i)];
    const io::Image& im = g.images[size_t(i)];
    double n = 0, sx = 0, sy = 0;
    for (int y = 0; y < syn::kImageSize; ++y)
      for (int x = 0; x < syn::kImageSize; ++x) {
        double d = 0;
        for (int c = 0; c < 3; ++c) d += std::abs(im.at(y, x, c) - base[s.color][c]);
        if (d < 75) n += 1, sx += x, sy += y;
      }
    area[s.size] += n;
    ++count[s.size];
    if (n < 4) continue;
    const double cx = sx / n - 15.5, cy = sy / n - 15.5;
    const bool ok = s.position == 0 ? cx < -3 : s.position == 1 ? cx > 3 : s.position == 2 ? cy < -3 : cy > 3;
    placed += ok;
  }
  CHECK(placed >= int(g.size()) * 9 / 10);
  REQUIRE(count[0] > 0);
  REQUIRE(count[1] > 0);
  CHECK(area[1] / count[1] > 2.5 * area[0] / count[0]);

  // Medical: a finding brightens its lung; an enlarged heart widens the bright area above the diaphragm.
  syn::SyntheticOptions o;
  o.cls_test = 200;
  const syn::ClassificationSet cls = syn::make_classification(o);
  int right_side = 0, abnormal = 0;
  double heart[2] = {0, 0};
  int hearts[2] = {0, 0};
  for (int64_t i = 0; i < cls.test.size(); ++i) {
    const syn::Scene& s = cls.test.scenes[size_t(i)];
    const io::Image& im = cls.test.images[size_t(i)];
    CHECK(cls.test.labels[size_t(i)] == s.finding);
    heart[s.enlarged_heart] += box_mean(im, 7, 10, 19, 26) + box_mean(im, 22, 25, 19, 26);
    ++hearts[s.enlarged_heart];
    if (s.finding == 0) continue;
    ++abnormal;
    const double left = box_mean(im, 5, 13, 5, 28), right = box_mean(im, 19, 27, 5, 28);
    right_side += (right > left) == (s.side == 1);
  }
  CHECK(right_side >= abnormal * 8 / 10);
  REQUIRE(hearts[0] > 0);
  REQUIRE(hearts[1] > 0);
  CHECK(heart[1] / hearts[1] > heart[0] / hearts[0] + 10);
}

TEST_CASE("synthetic: downstream sets are balanced and their answers follow the scenes", "[synthetic]") {
  syn::SyntheticOptions o;
  o.cls_train = 40;
  o.cls_val = o.cls_test = 8;
  o.vqa_train_images = 40;
  o.vqa_val_images = o.vqa_test_images = 10;
  const syn::ClassificationSet cls = syn::make_classification(o);
  std::map<int64_t, int> per;
  for (int64_t l : cls.train.labels) ++per[l];
  CHECK(per == std::map<int64_t, int>{{0, 10}, {1, 10}, {2, 10}, {3, 10}});
  CHECK(cls.class_names == std::vector<std::string>{"normal", "nodule", "opacity", "effusion"});
  REQUIRE(cls.prompt_sets.size() == 4);
  for (int c = 1; c < 4; ++c)
    for (const std::string& p : cls.prompt_sets[size_t(c)]) CHECK(has_word(p, cls.class_names[size_t(c)]));

  const syn::RetrievalSet ret = syn::make_retrieval(o);
  for (int64_t i = 0; i < ret.test.size(); ++i)
    CHECK(ret.test.captions[size_t(i)] == syn::caption_key(ret.test.scenes[size_t(i)]));

  const syn::VqaSet v = syn::make_vqa(o);
  CHECK(v.train.size() == 40 * o.vqa_questions_per_image);
  CHECK(v.train.count(data::AnswerType::Closed) == v.train.count(data::AnswerType::Open));
  CHECK(v.answers.answers().back() == "unknown");
  for (const syn::VqaSplit* sp : {&v.train, &v.test})
    for (const syn::VqaQuestion& q : sp->items) {
      const syn::Scene& s = sp->scenes[size_t(q.image)];
      const bool yes_no = q.answer == "yes" || q.answer == "no";
      CHECK(yes_no == (q.answer_type == data::AnswerType::Closed));
      if (q.question == "is the heart enlarged?") CHECK(q.answer == (s.enlarged_heart ? "yes" : "no"));
      if (q.question == "is this scan normal?") CHECK(q.answer == (s.finding == 0 ? "yes" : "no"));
      if (q.question == "what is the main finding?")
        CHECK(q.answer == (s.finding == 0 ? std::string("none") : syn::kFindings[size_t(s.finding)]));
      if (q.question == "which lung is affected?") CHECK(q.answer == syn::kSides[size_t(s.side)]);
      if (q.kind == "presence")
        for (int f = 1; f < 4; ++f)
          if (has_word(q.question, syn::kFindings[size_t(f)])) CHECK(q.answer == (s.finding == f ? "yes" : "no"));
      if (sp == &v.train) CHECK(v.answers.contains(q.answer));
    }
}

TEST_CASE("synthetic: the vocabulary covers every word the generators write", "[synthetic]") {
  auto model = tasks::make_tiny_model("vocab-check");
  syn::SyntheticOptions o;
  o.vqa_train_images = 30;
  const syn::PairSet g = syn::make_pairs(syn::Domain::General, 100), m = syn::make_pairs(syn::Domain::Medical, 100);
  const syn::VqaSet v = syn::make_vqa(o);
  std::vector<std::string> texts = g.captions;
  texts.insert(texts.end(), m.captions.begin(), m.captions.end());
  for (const auto& q : v.train.items) texts.push_back(q.question);
  const models::TokenBatch tb = model->tokenize(texts);
  const std::vector<int64_t> ids = tb.input_ids.to_vector<int64_t>();
  CHECK(std::count(ids.begin(), ids.end(), int64_t(1)) == 0);  // [UNK]
  // Real tokens never reach the end of the context (no caption is cut).
  const std::vector<int64_t> mask = tb.attention_mask.to_vector<int64_t>();
  const int64_t L = tb.attention_mask.size(1);
  for (size_t r = 0; r < texts.size(); ++r) CHECK(mask[r * size_t(L) + size_t(L - 1)] == 0);
}

TEST_CASE("synthetic: a tiny contrastive pre-training learns the medical domain", "[synthetic]") {
  const syn::PairSet pairs = syn::make_pairs(syn::Domain::Medical, 1024, 5);
  auto model = tasks::make_tiny_model("mini-medical", 5);
  syn::SyntheticOptions o;
  o.cls_test = 200;
  const syn::ClassificationSet cls = syn::make_classification(o);
  const double before = tasks::zero_shot_classify(*model, cls.test.pixels, cls.prompt_sets, cls.test.labels).accuracy;
  tasks::PretrainConfig cfg;
  cfg.epochs = 8;
  cfg.batch = 64;
  cfg.lr = 3e-3;
  int calls = 0;
  const tasks::PretrainResult r = tasks::pretrain_clip(*model, pairs, cfg, [&](const tasks::PretrainProgress& p) {
    ++calls;
    CHECK(std::isfinite(p.loss));
  });
  CHECK(r.steps == 8 * (1024 / 64));
  CHECK(calls == 7);  // every 20 steps, and the last (128)
  CHECK(r.epoch_loss.size() == 8);
  CHECK(r.first_loss == Approx(std::log(64.0)).margin(0.3));  // about chance at the start
  CHECK(r.final_loss < r.first_loss - 0.4);
  CHECK(r.epoch_loss.back() < r.epoch_loss.front());
  const tasks::ZeroShotResult z = tasks::zero_shot_classify(*model, cls.test.pixels, cls.prompt_sets, cls.test.labels);
  INFO("zero-shot accuracy before " << before << ", after " << z.accuracy);
  CHECK(z.accuracy > 0.37);  // 4 balanced classes: chance is 0.25 (0.03 standard deviation on 200 scans)
  CHECK(z.accuracy > before + 0.1);

  // The model file round-trips: same embeddings after save_model / load_model's reading of its tensors.
  const models::Converted c = tasks::to_converted(*model);
  auto back = models::model_from_tensors(c.tensors, c.metadata, "round trip");
  NoGradGuard ng;
  const Tensor px = cls.test.pixels.narrow(0, 0, 4);
  CHECK(back->encode_image(px).to_vector<float>() == model->encode_image(px).to_vector<float>());
  CHECK(back->has_tokenizer());
}

TEST_CASE("synthetic: a quick run of the demo fills every table of the paper", "[synthetic]") {
  const auto dir = std::filesystem::temp_directory_path() / "mc_test_synthetic_demo";
  std::filesystem::remove_all(dir);
  tasks::DemoOptions o;
  o.scale = 0.05;  // tiny sets, two epochs: the plumbing, not the numbers
  o.out = dir.string();
  std::ostringstream out;
  const tasks::DemoResult r = tasks::run_demo(o, out);
  // classification 2 models x (zero-shot + 3 strategies) + 2 x 2 x 4 fractions, retrieval 2 x 4, VQA 2 x 3
  CHECK(r.records.size() == 8 + 16 + 8 + 6);
  CHECK(tasks::paper_tables(r.records).size() == 6);
  for (const tasks::ResultRecord& rec : r.records)
    for (const auto& [k, v] : rec.metrics) CHECK(std::isfinite(v));
  const std::string text = out.str();
  CHECK(text.find("IN MINIATURE") != std::string::npos);
  CHECK(text.find("Table 6: ") != std::string::npos);
  CHECK(text.find("mc convert") != std::string::npos);
  CHECK(std::filesystem::is_regular_file(dir / "tables.md"));
  CHECK(std::filesystem::is_regular_file(dir / "plots" / "pretraining.svg"));
  CHECK(std::filesystem::is_regular_file(dir / "plots" / "roc_chest-findings.svg"));
  std::filesystem::remove_all(dir);
}
