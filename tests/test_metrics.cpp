// Evaluation metrics (mc/tasks/metrics.hpp) against scikit-learn and numpy references
// (tests/fixtures/metrics/metrics.json from tools/gen_metric_fixtures.py), hand-checked cases and the
// error cases.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/tasks/metrics.hpp"

namespace {

using Json = nlohmann::json;
using namespace mc::tasks;
using Catch::Matchers::Contains;

const Json& fixture() {
  static const Json j = [] {
    const std::string path = std::string(MC_SOURCE_DIR) + "/tests/fixtures/metrics/metrics.json";
    std::ifstream f(path);
    REQUIRE(f.good());
    return Json::parse(f);
  }();
  return j;
}

void require_close(double got, double want, const std::string& what, double tol = 1e-12) {
  INFO(what << ": got " << got << " want " << want);
  REQUIRE(std::fabs(got - want) <= tol);
}

void require_close(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) require_close(got[i], want[i], what + "[" + std::to_string(i) + "]");
}

Average average_of(const std::string& s) {
  if (s == "binary") return Average::binary;
  if (s == "micro") return Average::micro;
  if (s == "macro") return Average::macro;
  return Average::weighted;
}

void check_prf(const std::vector<int64_t>& preds, const std::vector<int64_t>& labels, const Json& ref,
               const std::string& name) {
  for (const auto& [avg, want] : ref.items()) {
    const Average a = average_of(avg);
    INFO(name << " average=" << avg);
    if (want.is_string()) {
      REQUIRE(want.get<std::string>() == "error");
      REQUIRE_THROWS_AS(f1(preds, labels, a), mc::Error);
      REQUIRE_THROWS_AS(precision_recall_f1(preds, labels, a), mc::Error);
      continue;
    }
    const PrecisionRecallF1 s = precision_recall_f1(preds, labels, a);
    require_close(s.precision, want[0].get<double>(), "precision");
    require_close(s.recall, want[1].get<double>(), "recall");
    require_close(s.f1, want[2].get<double>(), "f1");
    REQUIRE(f1(preds, labels, a) == s.f1);
    REQUIRE(precision(preds, labels, a) == s.precision);
    REQUIRE(recall(preds, labels, a) == s.recall);
  }
}

void check_retrieval(const RetrievalMetrics& m, const Json& ref, const std::string& what) {
  INFO(what);
  REQUIRE(m.ranks == ref["ranks"].get<std::vector<int64_t>>());
  require_close(m.recall, ref["recall"].get<std::vector<double>>(), "recall");
  require_close(m.mean_rank, ref["mean_rank"].get<double>(), "mean_rank");
  REQUIRE(m.median_rank == ref["median_rank"].get<double>());
}

mc::Tensor f32_tensor(const Matrix& m) {
  mc::Tensor t = mc::Tensor::empty({m.rows, m.cols}, mc::DType::F32);
  float* p = t.data<float>();
  for (size_t i = 0; i < m.data.size(); ++i) p[i] = float(m.data[i]);
  return t;
}

}  // namespace

TEST_CASE("metrics: binary ROC AUC and roc_curve match sklearn", "[metrics]") {
  for (const Json& c : fixture()["binary"]) {
    const std::string name = c["name"];
    INFO(name);
    const auto scores = c["scores"].get<std::vector<double>>();
    const auto labels = c["labels"].get<std::vector<int64_t>>();
    require_close(roc_auc_binary(scores, labels), c["auc"].get<double>(), "auc");
    const RocCurve r = roc_curve(scores, labels);
    require_close(r.fpr, c["fpr"].get<std::vector<double>>(), "fpr");
    require_close(r.tpr, c["tpr"].get<std::vector<double>>(), "tpr");
    const auto thr = c["thresholds"].get<std::vector<double>>();
    REQUIRE(r.thresholds.size() == thr.size() + 1);
    REQUIRE(std::isinf(r.thresholds[0]));
    REQUIRE(r.thresholds[0] > 0);
    for (size_t i = 0; i < thr.size(); ++i) REQUIRE(r.thresholds[i + 1] == thr[i]);
  }
}

TEST_CASE("metrics: multi-class AUC, hard AUC, accuracy, confusion matrix and F1 match sklearn", "[metrics]") {
  for (const Json& c : fixture()["multiclass"]) {
    const std::string name = c["name"];
    INFO(name);
    const int64_t n = c["n"], k = c["c"];
    const Matrix probs(n, k, c["probs"].get<std::vector<double>>());
    const auto labels = c["labels"].get<std::vector<int64_t>>();
    const auto pred = argmax_rows(probs);
    REQUIRE(pred == c["argmax"].get<std::vector<int64_t>>());
    require_close(roc_auc_ovr(probs, labels), c["auc_macro"].get<double>(), "auc macro");
    require_close(roc_auc_ovr(probs, labels, Average::macro), c["auc_macro"].get<double>(), "auc macro");
    require_close(roc_auc_ovr(probs, labels, Average::weighted), c["auc_weighted"].get<double>(), "auc weighted");
    require_close(roc_auc_ovr(probs, labels, Average::micro), c["auc_micro"].get<double>(), "auc micro");
    if (k > 2)
      require_close(roc_auc_ovr_per_class(probs, labels), c["auc_per_class"].get<std::vector<double>>(), "per class");
    else
      REQUIRE_THROWS_WITH(roc_auc_ovr_per_class(probs, labels), Contains("more than 2 classes"));
    require_close(auc_hard(probs, labels), c["auc_hard"].get<double>(), "auc_hard");
    require_close(accuracy(pred, labels), c["accuracy"].get<double>(), "accuracy");
    const ConfusionMatrix cm = confusion_matrix(pred, labels, k);
    REQUIRE(cm.counts == c["confusion"].get<std::vector<int64_t>>());
    check_prf(pred, labels, c["prf"], name);

    const ClassificationMetrics m = classification_metrics(probs, labels);
    REQUIRE(m.num_classes == k);
    require_close(m.auc, c["auc_macro"].get<double>(), "summary auc");
    require_close(m.auc_hard, c["auc_hard"].get<double>(), "summary auc_hard");
    require_close(m.accuracy, c["accuracy"].get<double>(), "summary accuracy");
    const Json& f = c["prf"][k == 2 ? "binary" : "weighted"];
    require_close(m.f1, f[2].get<double>(), "summary f1");
    require_close(m.f1_macro, c["prf"]["macro"][2].get<double>(), "summary f1 macro");

    // The same through tensors (labels as [N, 1] like MedMNIST; probabilities in f32 change the values,
    // so compare with the f32-rounded matrix).
    mc::Tensor tp = f32_tensor(probs);
    mc::Tensor tl = mc::Tensor::empty({n, 1}, mc::DType::I64);
    std::copy(labels.begin(), labels.end(), tl.data<int64_t>());
    const Matrix p32 = Matrix::from_tensor(tp);
    REQUIRE(labels_from_tensor(tl) == labels);
    const ClassificationMetrics mt = classification_metrics(tp, tl);
    REQUIRE(mt.auc == classification_metrics(p32, labels).auc);
  }
}

TEST_CASE("metrics: precision / recall / F1 for every average match sklearn", "[metrics]") {
  for (const Json& c : fixture()["f1"]) {
    const std::string name = c["name"];
    const auto preds = c["preds"].get<std::vector<int64_t>>();
    const auto labels = c["labels"].get<std::vector<int64_t>>();
    check_prf(preds, labels, c["prf"], name);
  }
}

TEST_CASE("metrics: recall@k with duplicate captions matches the numpy reference", "[metrics]") {
  for (const Json& c : fixture()["retrieval"]) {
    const std::string name = c["name"];
    INFO(name);
    const int64_t rows = c["rows"], cols = c["cols"];
    const Matrix sim(rows, cols, c["sim"].get<std::vector<double>>());
    const auto caps = c["image_captions"].get<std::vector<std::string>>();
    const auto texts = c["texts"].get<std::vector<std::string>>();
    const auto ks = c["ks"].get<std::vector<int64_t>>();
    const GroundTruth gt = gt_from_keys(caps, texts);
    const RetrievalMetrics i2t = recall_at_k(sim, gt, ks);
    check_retrieval(i2t, c["i2t"], "i2t matrix");
    REQUIRE(i2t.ks == ks);
    REQUIRE(i2t.recall_at(ks[0]) == i2t.recall[0]);
    mc::Tensor t = f32_tensor(sim);  // the values are quarters: exact in f32 and bf16
    check_retrieval(recall_at_k(t, gt, ks), c["i2t"], "i2t f32 tensor");
    check_retrieval(recall_at_k(t.to(mc::DType::F64), gt, ks), c["i2t"], "i2t f64 tensor");
    check_retrieval(recall_at_k(t.to(mc::DType::BF16), gt, ks), c["i2t"], "i2t bf16 tensor");
    if (c.contains("t2i")) {
      const GroundTruth gt_txt = invert_gt(gt, cols);
      const GroundTruth gt_txt2 = gt_from_keys(texts, caps);
      REQUIRE(gt_txt == gt_txt2);
      check_retrieval(recall_at_k_t2i(sim, gt_txt, ks), c["t2i"], "t2i matrix");
      check_retrieval(recall_at_k_t2i(t, gt_txt, ks), c["t2i"], "t2i f32 tensor");
      check_retrieval(recall_at_k(t.t(), gt_txt, ks), c["t2i"], "t2i as i2t of the transposed view");
      check_retrieval(recall_at_k(Matrix::from_tensor(t.t()), gt_txt, ks), c["t2i"], "t2i transposed copy");
    }
  }
}

TEST_CASE("metrics: VQA accuracy and weighted F1 overall / open / closed match sklearn", "[metrics]") {
  const Json& v = fixture()["vqa"];
  const auto pred = v["pred"].get<std::vector<std::string>>();
  const auto gt = v["gt"].get<std::vector<std::string>>();
  const auto types = v["types"].get<std::vector<std::string>>();
  const VqaMetrics m = vqa_metrics(pred, gt, types);
  const Json& r = v["ref"];
  REQUIRE(m.count == r["all"]["count"].get<int64_t>());
  REQUIRE(m.count_open == r["open"]["count"].get<int64_t>());
  REQUIRE(m.count_closed == r["closed"]["count"].get<int64_t>());
  require_close(m.accuracy, r["all"]["accuracy"].get<double>(), "accuracy");
  require_close(m.accuracy_open, r["open"]["accuracy"].get<double>(), "accuracy open");
  require_close(m.accuracy_closed, r["closed"]["accuracy"].get<double>(), "accuracy closed");
  require_close(m.f1, r["all"]["f1"].get<double>(), "f1");
  require_close(m.f1_open, r["open"]["f1"].get<double>(), "f1 open");
  require_close(m.f1_closed, r["closed"]["f1"].get<double>(), "f1 closed");
}

TEST_CASE("metrics: hand-checked cases", "[metrics]") {
  using V = std::vector<double>;
  using L = std::vector<int64_t>;
  SECTION("ROC AUC counts a tied positive / negative pair as one half") {
    REQUIRE(roc_auc_binary(V{0.5, 0.5}, L{0, 1}) == 0.5);
    REQUIRE(roc_auc_binary(V{0.1, 0.5, 0.5, 0.9}, L{0, 0, 1, 1}) == 0.875);
    const RocCurve r = roc_curve(V{0.1, 0.4, 0.35, 0.8}, L{0, 0, 1, 1});  // sklearn's docstring example
    REQUIRE(r.fpr == V{0, 0, 0.5, 0.5, 1});
    REQUIRE(r.tpr == V{0, 0.5, 0.5, 1, 1});
    REQUIRE(r.thresholds == V{std::numeric_limits<double>::infinity(), 0.8, 0.4, 0.35, 0.1});
  }
  SECTION("the paper's hard AUC is the balanced accuracy for two classes") {
    const Matrix p(6, 2, V{0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7, 0.5, 0.5, 0.1, 0.9});  // argmax 0 1 0 1 0 1
    const L y{0, 0, 1, 1, 1, 1};
    // TPR = 2/4, TNR = 1/2 -> 0.5; the 0.5 / 0.5 row goes to class 0 (first index)
    REQUIRE(argmax_rows(p) == L{0, 1, 0, 1, 0, 1});
    REQUIRE(auc_hard(p, y) == 0.5);
    REQUIRE(roc_auc_ovr(p, y) == roc_auc_binary(V{0.1, 0.8, 0.4, 0.7, 0.5, 0.9}, y));
  }
  SECTION("retrieval ties go to the lower index; any correct copy counts") {
    const Matrix sim(3, 3, V{0.5, 0.5, 0.5, 0.1, 0.9, 0.9, 0.3, 0.2, 0.1});
    const GroundTruth gt{{2}, {2}, {1, 2}};
    const RetrievalMetrics m = recall_at_k(sim, gt, {1, 2, 3});
    REQUIRE(m.ranks == L{3, 2, 2});
    REQUIRE(m.recall == V{0, 2.0 / 3, 1});
    REQUIRE(m.median_rank == 2);
    const RetrievalMetrics big_k = recall_at_k(sim, gt, {100});
    REQUIRE(big_k.recall == V{1});
    const std::vector<std::string> caps{"a", "b", "a"};
    REQUIRE(gt_from_keys(caps, caps) == GroundTruth{{0, 2}, {1}, {0, 2}});
  }
  SECTION("VQA answer types are trimmed and case-insensitive; an empty subset reports NaN") {
    REQUIRE(parse_answer_type(" closed ") == AnswerType::closed);
    REQUIRE(parse_answer_type("Open") == AnswerType::open);
    const std::vector<std::string> p{"yes", "no"}, g{"yes", "yes"}, t{"CLOSED", "CLOSED "};
    const VqaMetrics m = vqa_metrics(p, g, t);
    REQUIRE(m.count_closed == 2);
    REQUIRE(m.count_open == 0);
    REQUIRE(std::isnan(m.accuracy_open));
    REQUIRE(std::isnan(m.f1_open));
    REQUIRE(m.accuracy == 0.5);
    REQUIRE(m.accuracy_closed == 0.5);
  }
}

TEST_CASE("metrics: error cases", "[metrics]") {
  using V = std::vector<double>;
  using L = std::vector<int64_t>;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  // lengths, empty input
  REQUIRE_THROWS_WITH(roc_auc_binary(V{0.1, 0.2}, L{0, 1, 1}), Contains("roc_auc_binary") && Contains("3"));
  REQUIRE_THROWS_WITH(roc_auc_binary(V{}, L{}), Contains("roc_auc_binary: empty input"));
  REQUIRE_THROWS_WITH(accuracy(L{}, L{}), Contains("accuracy: empty input"));
  REQUIRE_THROWS_WITH(f1(L{1, 0}, L{1}, Average::macro), Contains("f1") && Contains("preds has 2"));
  // labels out of range, non-finite scores, a single class
  REQUIRE_THROWS_WITH(roc_auc_binary(V{0.1, 0.2}, L{0, 2}), Contains("out of range"));
  REQUIRE_THROWS_WITH(roc_curve(V{0.1, 0.2}, L{-1, 1}), Contains("roc_curve") && Contains("out of range"));
  REQUIRE_THROWS_WITH(roc_auc_binary(V{0.1, nan}, L{0, 1}), Contains("score 1 is nan"));
  REQUIRE_THROWS_WITH(roc_auc_binary(V{0.1, inf}, L{0, 1}), Contains("finite"));
  REQUIRE_THROWS_WITH(roc_auc_binary(V{0.1, 0.2}, L{1, 1}), Contains("only one class"));
  REQUIRE_THROWS_WITH(roc_curve(V{0.1, 0.2}, L{0, 0}), Contains("only one class"));
  const Matrix p3(3, 3, V{0.2, 0.3, 0.5, 0.6, 0.2, 0.2, 0.1, 0.1, 0.8});
  REQUIRE_NOTHROW(roc_auc_ovr(p3, L{0, 1, 2}));
  REQUIRE_THROWS_WITH(roc_auc_ovr(p3, L{0, 1, 3}), Contains("roc_auc_ovr") && Contains("out of range [0, 3)"));
  REQUIRE_THROWS_WITH(roc_auc_ovr(p3, L{0, 1, 1}), Contains("class 2 is absent"));
  REQUIRE_THROWS_WITH(auc_hard(p3, L{0, 0, 1}), Contains("absent"));
  REQUIRE_THROWS_WITH(roc_auc_ovr(p3, L{0, 1}), Contains("labels has 2"));
  REQUIRE_THROWS_WITH(roc_auc_ovr(p3, L{0, 1, 2}, Average::binary), Contains("average"));
  const Matrix logits(3, 3, V{2, 0, 1, 0, 3, 1, 1, 1, 4});
  REQUIRE_THROWS_WITH(roc_auc_ovr(logits, L{0, 1, 2}), Contains("sum to 1"));
  const Matrix pnan(3, 3, V{0.2, 0.3, 0.5, nan, 0.2, 0.2, 0.1, 0.1, 0.8});
  REQUIRE_THROWS_WITH(roc_auc_ovr(pnan, L{0, 1, 2}), Contains("probs[1, 0] is nan"));
  REQUIRE_THROWS_WITH(argmax_rows(pnan), Contains("argmax_rows: NaN"));
  REQUIRE_THROWS_WITH(roc_auc_ovr(Matrix(2, 1, V{1, 1}), L{0, 0}), Contains("at least 2 classes"));
  REQUIRE_THROWS_WITH(roc_auc_ovr(Matrix(2, 2, V{0.5, 0.5, 0.4, 0.6}), L{1, 1}), Contains("only one class"));
  REQUIRE_THROWS_WITH(Matrix(2, 2, V{1, 2, 3}), Contains("3 values for shape [2, 2]"));
  // F1
  REQUIRE_THROWS_WITH(f1(L{0, 1, 2}, L{0, 1, 1}), Contains("multiclass"));
  REQUIRE_THROWS_WITH(f1(L{0, 2}, L{2, 0}), Contains("label 1"));
  REQUIRE(f1(L{0, 0}, L{0, 0}) == 0.0);
  REQUIRE_THROWS_WITH(confusion_matrix(L{0, 3}, L{0, 1}, 3), Contains("prediction 1 = 3"));
  REQUIRE_THROWS_WITH(confusion_matrix(L{0, 1}, L{-1, 1}, 3), Contains("label 0 = -1"));
  // retrieval
  const Matrix sim(2, 3, V{0.1, 0.2, 0.3, 0.3, 0.2, 0.1});
  REQUIRE_THROWS_WITH(recall_at_k(sim, GroundTruth{{0}, {}}), Contains("query 1 has no correct item"));
  REQUIRE_THROWS_WITH(recall_at_k(sim, GroundTruth{{0}, {3}}), Contains("outside [0, 3)"));
  REQUIRE_THROWS_WITH(recall_at_k(sim, GroundTruth{{0}}), Contains("1 entries for 2 queries"));
  REQUIRE_THROWS_WITH(recall_at_k(sim, GroundTruth{{0}, {1}}, {0}), Contains("k = 0"));
  REQUIRE_THROWS_WITH(recall_at_k_t2i(sim, GroundTruth{{0}, {1}}), Contains("3 queries"));
  REQUIRE_THROWS_WITH(recall_at_k(Matrix(2, 3, V{0.1, nan, 0.3, 0.3, 0.2, 0.1}), GroundTruth{{0}, {1}}),
                      Contains("NaN"));
  REQUIRE_THROWS_WITH(recall_at_k(sim, GroundTruth{{0}, {1}}).recall_at(7), Contains("k = 7"));
  REQUIRE_THROWS_WITH(invert_gt(GroundTruth{{5}}, 3), Contains("invert_gt"));
  // VQA
  const std::vector<std::string> a{"yes"}, b{"no"}, bad_type{"YESNO"}, none{};
  REQUIRE_THROWS_WITH(vqa_metrics(a, b, bad_type), Contains("unknown answer type"));
  REQUIRE_THROWS_WITH(vqa_metrics(none, none, none), Contains("vqa_metrics: empty input"));
  REQUIRE_THROWS_WITH(vqa_metrics(a, b, none), Contains("answer types has 0"));
  // tensors
  mc::Tensor bad = mc::Tensor::empty({2}, mc::DType::F32);
  bad.data<float>()[0] = 1.0f;
  bad.data<float>()[1] = 0.5f;
  REQUIRE_THROWS_WITH(labels_from_tensor(bad), Contains("not a whole number"));
  REQUIRE_THROWS_WITH(Matrix::from_tensor(bad), Contains("2-d"));
}
