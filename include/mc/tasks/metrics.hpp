// mc/tasks/metrics.hpp — the study's evaluation metrics, computed on the host in double precision.
//
// Classification (MedMNIST): ROC AUC (binary; one-vs-rest macro / weighted / micro), the ROC curve, the
// paper's "hard" AUC (kept only to compare with its tables), accuracy, confusion matrix, precision / recall
// / F1 (binary, micro, macro, weighted). Retrieval (ROCO): recall@k, mean and median rank, image->text and
// text->image, with ground truth given as sets (duplicate captions). VQA (VQA-RAD, SLAKE): accuracy and
// weighted F1, overall and split into open / closed questions.
//
// Every function matches scikit-learn (>= 1.3) where one exists; the differences are on error cases
// and are listed below. Argument order: predictions or scores FIRST, ground truth SECOND, in every
// function (the reverse of sklearn's (y_true, y_pred)).
//
//   using namespace mc::tasks;
//   Matrix probs = Matrix::from_tensor(softmax(logits, -1));      // [N, C], any float dtype / device
//   std::vector<int64_t> y = labels_from_tensor(targets);         // [N] or [N, 1]
//   double auc = roc_auc_ovr(probs, y);                           // C == 2: AUC of column 1
//   double f1w = f1(argmax_rows(probs), y, Average::weighted);
//   ClassificationMetrics m = classification_metrics(probs, y);   // everything the study reports
//
// Conventions and deviations from sklearn:
// - Errors throw mc::Error naming the metric and the reason: length mismatch, empty input, a label
//   outside the allowed range, a NaN or infinite score, probabilities whose rows do not sum to 1 (one-vs-
//   rest with C > 2, sklearn's np.allclose check).
// - ROC AUC and roc_curve with a single class present in the labels THROW. sklearn raised ValueError
//   there until 1.4; since 1.6 it warns (UndefinedMetricWarning) and returns NaN (roc_curve: NaN rates).
//   One-vs-rest with a class absent from the labels throws, as sklearn does.
// - Binary ROC inputs are labels in {0, 1}; 1 is the positive class (sklearn: the larger label).
// - Ties in scores are one ROC point (sklearn's distinct thresholds); the area is the trapezoid rule,
//   computed from integer counts and divided once, so it is exact to rounding.
// - F1 / precision / recall consider the sorted union of the values in predictions and labels (any
//   int64 values). Zero divisions give 0 (sklearn's zero_division="warn" value, without the warning);
//   F1 is computed from counts, 2 tp / (2 tp + fp + fn), as sklearn >= 1.3 does. For F1 the
//   zero_division setting only matters for a label absent from both inputs, which averages over the
//   union never meet; so the paper's zero_division=1 gives the same weighted F1.
// - Average::binary needs at most two distinct values in predictions and labels together, and scores
//   the label 1 (sklearn's pos_label=1): it throws when there are more values, or two values without 1.
//   With a single value other than 1 it returns 0, as sklearn does.
#pragma once
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/ops/reduce.hpp"
#include "mc/ops/view.hpp"

namespace mc::tasks {

// ---------------------------------------------------------------------------------------------------
// Host data
// ---------------------------------------------------------------------------------------------------

// A row-major [rows, cols] matrix of doubles on the host: probabilities [N, C] or similarities
// [N_query, N_pool].
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> data;

  Matrix() = default;
  Matrix(int64_t r, int64_t c, std::vector<double> values) : rows(r), cols(c), data(std::move(values)) {
    MC_CHECK(r >= 0 && c >= 0, "Matrix: negative shape [", r, ", ", c, "]");
    MC_CHECK(int64_t(data.size()) == r * c, "Matrix: ", data.size(), " values for shape [", r, ", ", c, "]");
  }
  // A copy of a 2-d tensor of any dtype, on any device, converted to double.
  static Matrix from_tensor(const Tensor& t) {
    MC_CHECK(t.defined(), "Matrix::from_tensor: undefined tensor");
    MC_CHECK(t.dim() == 2, "Matrix::from_tensor: expected a 2-d tensor, got shape ", shape_str(t.shape()));
    return Matrix(t.size(0), t.size(1), t.to_vector<double>());
  }
  double operator()(int64_t r, int64_t c) const { return data[size_t(r * cols + c)]; }
  std::span<const double> row(int64_t r) const { return {data.data() + r * cols, size_t(cols)}; }
};

// Class labels from a tensor of shape [N] or [N, 1] (MedMNIST stores [N, 1]). Floating tensors must hold
// whole numbers.
inline std::vector<int64_t> labels_from_tensor(const Tensor& t) {
  MC_CHECK(t.defined(), "labels_from_tensor: undefined tensor");
  MC_CHECK(t.dim() == 1 || (t.dim() == 2 && t.size(1) == 1),
           "labels_from_tensor: expected shape [N] or [N, 1], got ", shape_str(t.shape()));
  if (!is_floating(t.dtype())) return t.to_vector<int64_t>();
  std::vector<double> v = t.to_vector<double>();
  std::vector<int64_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    MC_CHECK(std::isfinite(v[i]) && v[i] == std::floor(v[i]) && std::fabs(v[i]) < 9.0e15,
             "labels_from_tensor: element ", i, " = ", v[i], " is not a whole number");
    out[i] = int64_t(v[i]);
  }
  return out;
}

// Scores from a tensor of shape [N] or [N, 1], as doubles.
inline std::vector<double> scores_from_tensor(const Tensor& t) {
  MC_CHECK(t.defined(), "scores_from_tensor: undefined tensor");
  MC_CHECK(t.dim() == 1 || (t.dim() == 2 && t.size(1) == 1),
           "scores_from_tensor: expected shape [N] or [N, 1], got ", shape_str(t.shape()));
  return t.to_vector<double>();
}

// Index of the largest value of each row; ties go to the first index (numpy / torch argmax). NaN throws.
inline std::vector<int64_t> argmax_rows(const Matrix& m) {
  MC_CHECK(m.cols > 0, "argmax_rows: matrix has no columns");
  std::vector<int64_t> out(size_t(m.rows));
  for (int64_t r = 0; r < m.rows; ++r) {
    int64_t best = 0;
    for (int64_t c = 0; c < m.cols; ++c) {
      MC_CHECK(!std::isnan(m(r, c)), "argmax_rows: NaN at [", r, ", ", c, "]");
      if (m(r, c) > m(r, best)) best = c;
    }
    out[size_t(r)] = best;
  }
  return out;
}

namespace detail {

inline void check_same_length(const char* metric, const char* a_name, size_t a, const char* b_name, size_t b) {
  MC_CHECK(a == b, metric, ": ", a_name, " has ", a, " elements but ", b_name, " has ", b);
  MC_CHECK(a > 0, metric, ": empty input");
}

// The ROC points at each distinct threshold, in decreasing threshold order (sklearn's
// confusion_matrix_at_thresholds): fps[i] / tps[i] count the negatives / positives with score >= thr[i].
struct BinaryCurve {
  std::vector<double> fps, tps, thr;
  int64_t pos = 0, neg = 0;
};

inline BinaryCurve binary_curve(std::span<const double> scores, std::span<const int64_t> labels,
                                const char* metric) {
  check_same_length(metric, "scores", scores.size(), "labels", labels.size());
  const size_t n = scores.size();
  BinaryCurve c;
  for (size_t i = 0; i < n; ++i) {
    MC_CHECK(std::isfinite(scores[i]), metric, ": score ", i, " is ", scores[i], " (scores must be finite)");
    MC_CHECK(labels[i] == 0 || labels[i] == 1, metric, ": label ", i, " = ", labels[i],
             " is out of range (binary labels are 0 or 1; 1 is the positive class)");
    (labels[i] ? c.pos : c.neg) += 1;
  }
  MC_CHECK(c.pos > 0 && c.neg > 0, metric, ": only one class present in labels (", c.pos, " positive, ", c.neg,
           " negative); ROC AUC is undefined (sklearn warns and returns NaN)");
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  double tp = 0, fp = 0;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = order[k];
    (labels[i] ? tp : fp) += 1;
    if (k + 1 == n || scores[order[k + 1]] != scores[i]) {
      c.fps.push_back(fp);
      c.tps.push_back(tp);
      c.thr.push_back(scores[i]);
    }
  }
  return c;
}

inline double curve_auc(const BinaryCurve& c) {
  // Trapezoids between consecutive points, starting at (0, 0); counts are integers, so the sum is exact.
  double twice_area = 0, fp0 = 0, tp0 = 0;
  for (size_t i = 0; i < c.fps.size(); ++i) {
    twice_area += (c.fps[i] - fp0) * (c.tps[i] + tp0);
    fp0 = c.fps[i];
    tp0 = c.tps[i];
  }
  return twice_area / (2.0 * double(c.pos) * double(c.neg));
}

inline void check_probs(const Matrix& probs, std::span<const int64_t> labels, const char* metric) {
  MC_CHECK(int64_t(probs.data.size()) == probs.rows * probs.cols, metric, ": matrix holds ", probs.data.size(),
           " values for shape [", probs.rows, ", ", probs.cols, "]");
  check_same_length(metric, "probs rows", size_t(probs.rows), "labels", labels.size());
  MC_CHECK(probs.cols >= 2, metric, ": probs has ", probs.cols, " columns; at least 2 classes are needed");
  for (size_t i = 0; i < labels.size(); ++i)
    MC_CHECK(labels[i] >= 0 && labels[i] < probs.cols, metric, ": label ", i, " = ", labels[i],
             " is out of range [0, ", probs.cols, ")");
  for (size_t i = 0; i < probs.data.size(); ++i)
    MC_CHECK(std::isfinite(probs.data[i]), metric, ": probs[", int64_t(i) / probs.cols, ", ",
             int64_t(i) % probs.cols, "] is ", probs.data[i], " (scores must be finite)");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------
// ROC
// ---------------------------------------------------------------------------------------------------

// Area under the ROC curve of `scores` for labels in {0, 1} (= sklearn roc_auc_score(labels, scores)).
inline double roc_auc_binary(std::span<const double> scores, std::span<const int64_t> labels) {
  return detail::curve_auc(detail::binary_curve(scores, labels, "roc_auc_binary"));
}

struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;  // thresholds[0] = +inf (sklearn >= 1.3)
};

// sklearn roc_curve(labels, scores) with drop_intermediate=True: the points at distinct thresholds in
// decreasing order, collinear middle points dropped, (0, 0) at threshold +inf prepended.
inline RocCurve roc_curve(std::span<const double> scores, std::span<const int64_t> labels) {
  detail::BinaryCurve c = detail::binary_curve(scores, labels, "roc_curve");
  const size_t m = c.fps.size();
  RocCurve r;
  r.fpr.push_back(0);
  r.tpr.push_back(0);
  r.thresholds.push_back(std::numeric_limits<double>::infinity());
  for (size_t i = 0; i < m; ++i) {
    if (m > 2 && i > 0 && i + 1 < m && c.fps[i - 1] - 2 * c.fps[i] + c.fps[i + 1] == 0 &&
        c.tps[i - 1] - 2 * c.tps[i] + c.tps[i + 1] == 0)
      continue;
    r.fpr.push_back(c.fps[i] / double(c.neg));
    r.tpr.push_back(c.tps[i] / double(c.pos));
    r.thresholds.push_back(c.thr[i]);
  }
  return r;
}

enum class Average { binary, micro, macro, weighted };

inline const char* average_name(Average a) {
  switch (a) {
    case Average::binary: return "binary";
    case Average::micro: return "micro";
    case Average::macro: return "macro";
    case Average::weighted: return "weighted";
  }
  return "?";
}

// One-vs-rest AUC of each class: AUC of column c for the labels (label == c). Needs C > 2 and every class
// present; rows must sum to 1 within sklearn's np.allclose tolerance (1e-8 + 1e-5 * |sum|).
inline std::vector<double> roc_auc_ovr_per_class(const Matrix& probs, std::span<const int64_t> labels) {
  const char* metric = "roc_auc_ovr";
  detail::check_probs(probs, labels, metric);
  MC_CHECK(probs.cols > 2, metric, ": per-class one-vs-rest AUC needs more than 2 classes (got ", probs.cols,
           "); use roc_auc_binary on column 1");
  for (int64_t r = 0; r < probs.rows; ++r) {
    double s = 0;
    for (double v : probs.row(r)) s += v;
    MC_CHECK(std::fabs(1.0 - s) <= 1e-8 + 1e-5 * std::fabs(s), metric, ": row ", r, " of probs sums to ", s,
             "; one-vs-rest AUC needs probabilities that sum to 1 over classes (apply softmax)");
  }
  std::vector<int64_t> count(size_t(probs.cols), 0);
  for (int64_t y : labels) ++count[size_t(y)];
  for (int64_t c = 0; c < probs.cols; ++c)
    MC_CHECK(count[size_t(c)] > 0, metric, ": class ", c, " is absent from labels; the number of classes in "
             "labels must equal the number of columns of probs (", probs.cols, ")");
  std::vector<double> col(size_t(probs.rows));
  std::vector<int64_t> is_c(size_t(probs.rows));
  std::vector<double> out(size_t(probs.cols));
  for (int64_t c = 0; c < probs.cols; ++c) {
    for (int64_t r = 0; r < probs.rows; ++r) {
      col[size_t(r)] = probs(r, c);
      is_c[size_t(r)] = labels[size_t(r)] == c;
    }
    out[size_t(c)] = roc_auc_binary(col, is_c);
  }
  return out;
}

// sklearn roc_auc_score(labels, probs, multi_class="ovr", average=...) with average macro (default),
// weighted (by class support) or micro (one binary problem over all N * C entries of the one-hot labels).
// For C == 2 it is sklearn's binary case: the AUC of column 1, whatever `average` says.
inline double roc_auc_ovr(const Matrix& probs, std::span<const int64_t> labels, Average average = Average::macro) {
  const char* metric = "roc_auc_ovr";
  MC_CHECK(average != Average::binary, metric, ": average must be macro, weighted or micro");
  detail::check_probs(probs, labels, metric);
  if (probs.cols == 2) {
    std::vector<double> col(size_t(probs.rows));
    for (int64_t r = 0; r < probs.rows; ++r) col[size_t(r)] = probs(r, 1);
    return roc_auc_binary(col, labels);
  }
  std::vector<double> per_class = roc_auc_ovr_per_class(probs, labels);
  if (average == Average::micro) {
    std::vector<int64_t> onehot(probs.data.size(), 0);
    for (size_t r = 0; r < labels.size(); ++r) onehot[r * size_t(probs.cols) + size_t(labels[r])] = 1;
    return roc_auc_binary(probs.data, onehot);
  }
  std::vector<double> weight(size_t(probs.cols), 1.0);
  if (average == Average::weighted) {
    std::fill(weight.begin(), weight.end(), 0.0);
    for (int64_t y : labels) weight[size_t(y)] += 1;
  }
  double num = 0, den = 0;
  for (size_t c = 0; c < per_class.size(); ++c) {
    num += per_class[c] * weight[c];
    den += weight[c];
  }
  return num / den;
}

// The paper's "AUC", reported ONLY to compare with its tables: sklearn roc_auc_score fed hard predictions
// instead of scores. C == 2: the AUC of the argmax labels (0 / 1) as scores, which is the balanced
// accuracy (TPR + TNR) / 2. C > 2: one-vs-rest macro AUC of the one-hot argmax, i.e. the mean over classes
// of (1 + TPR_c - FPR_c) / 2. Argmax ties go to the first class. Use roc_auc_ovr for the real AUC.
inline double auc_hard(const Matrix& probs, std::span<const int64_t> labels) {
  const char* metric = "auc_hard";
  detail::check_probs(probs, labels, metric);
  std::vector<int64_t> pred = argmax_rows(probs);
  Matrix onehot(probs.rows, probs.cols, std::vector<double>(probs.data.size(), 0.0));
  for (size_t r = 0; r < pred.size(); ++r) onehot.data[r * size_t(probs.cols) + size_t(pred[r])] = 1.0;
  return roc_auc_ovr(onehot, labels, Average::macro);
}

// ---------------------------------------------------------------------------------------------------
// Hard-label metrics
// ---------------------------------------------------------------------------------------------------

// Fraction of predictions equal to the labels (sklearn accuracy_score).
inline double accuracy(std::span<const int64_t> preds, std::span<const int64_t> labels) {
  detail::check_same_length("accuracy", "preds", preds.size(), "labels", labels.size());
  int64_t hit = 0;
  for (size_t i = 0; i < preds.size(); ++i) hit += preds[i] == labels[i];
  return double(hit) / double(preds.size());
}

// Counts [num_classes, num_classes], row = true label, column = prediction (sklearn confusion_matrix
// with labels = 0 .. num_classes - 1).
struct ConfusionMatrix {
  int64_t num_classes = 0;
  std::vector<int64_t> counts;
  int64_t operator()(int64_t truth, int64_t pred) const { return counts[size_t(truth * num_classes + pred)]; }
};

inline ConfusionMatrix confusion_matrix(std::span<const int64_t> preds, std::span<const int64_t> labels,
                                        int64_t num_classes) {
  detail::check_same_length("confusion_matrix", "preds", preds.size(), "labels", labels.size());
  MC_CHECK(num_classes > 0, "confusion_matrix: num_classes = ", num_classes, " must be positive");
  ConfusionMatrix cm{num_classes, std::vector<int64_t>(size_t(num_classes * num_classes), 0)};
  for (size_t i = 0; i < preds.size(); ++i) {
    MC_CHECK(labels[i] >= 0 && labels[i] < num_classes, "confusion_matrix: label ", i, " = ", labels[i],
             " is out of range [0, ", num_classes, ")");
    MC_CHECK(preds[i] >= 0 && preds[i] < num_classes, "confusion_matrix: prediction ", i, " = ", preds[i],
             " is out of range [0, ", num_classes, ")");
    ++cm.counts[size_t(labels[i] * num_classes + preds[i])];
  }
  return cm;
}

struct PrecisionRecallF1 {
  double precision = 0, recall = 0, f1 = 0;
};

namespace detail {

inline PrecisionRecallF1 prf(std::span<const int64_t> preds, std::span<const int64_t> labels, Average average,
                             const char* metric) {
  detail::check_same_length(metric, "preds", preds.size(), "labels", labels.size());
  std::vector<int64_t> classes(labels.begin(), labels.end());
  classes.insert(classes.end(), preds.begin(), preds.end());
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  auto index = [&](int64_t v) { return size_t(std::lower_bound(classes.begin(), classes.end(), v) - classes.begin()); };
  const size_t L = classes.size();
  std::vector<int64_t> tp(L, 0), pred_sum(L, 0), true_sum(L, 0);
  for (size_t i = 0; i < preds.size(); ++i) {
    const size_t p = index(preds[i]), t = index(labels[i]);
    ++pred_sum[p];
    ++true_sum[t];
    if (p == t) ++tp[p];
  }
  auto div = [](double a, double b) { return b == 0 ? 0.0 : a / b; };
  auto score = [&](int64_t t, int64_t ps, int64_t ts) {
    return PrecisionRecallF1{div(double(t), double(ps)), div(double(t), double(ts)),
                             div(2.0 * double(t), double(ps + ts))};
  };
  if (average == Average::binary) {
    MC_CHECK(L <= 2, metric, ": average=binary but the target is multiclass (", L,
             " distinct values in preds and labels); choose micro, macro or weighted");
    const bool has_one = std::binary_search(classes.begin(), classes.end(), int64_t(1));
    MC_CHECK(has_one || L < 2, metric, ": average=binary scores label 1, which is absent from preds and labels (",
             classes[0], ", ", classes[L - 1], ")");
    if (!has_one) return {};  // a single class other than 1: tp = fp = fn = 0 for label 1 -> 0 (sklearn)
    const size_t k = index(1);
    return score(tp[k], pred_sum[k], true_sum[k]);
  }
  if (average == Average::micro) {
    int64_t t = 0, ps = 0, ts = 0;
    for (size_t k = 0; k < L; ++k) t += tp[k], ps += pred_sum[k], ts += true_sum[k];
    return score(t, ps, ts);
  }
  PrecisionRecallF1 sum;
  double wsum = 0;
  for (size_t k = 0; k < L; ++k) {
    const double w = average == Average::weighted ? double(true_sum[k]) : 1.0;
    const PrecisionRecallF1 s = score(tp[k], pred_sum[k], true_sum[k]);
    sum.precision += w * s.precision;
    sum.recall += w * s.recall;
    sum.f1 += w * s.f1;
    wsum += w;
  }
  return {sum.precision / wsum, sum.recall / wsum, sum.f1 / wsum};
}

}  // namespace detail

// sklearn precision_recall_fscore_support(labels, preds, average=...) with zero_division=0 (see the top
// of this file for the label set and the binary rules).
inline PrecisionRecallF1 precision_recall_f1(std::span<const int64_t> preds, std::span<const int64_t> labels,
                                             Average average) {
  return detail::prf(preds, labels, average, "precision_recall_f1");
}

// sklearn f1_score(labels, preds, average=..., zero_division=0); the default is binary with pos_label 1.
inline double f1(std::span<const int64_t> preds, std::span<const int64_t> labels, Average average = Average::binary) {
  return detail::prf(preds, labels, average, "f1").f1;
}
inline double precision(std::span<const int64_t> preds, std::span<const int64_t> labels,
                        Average average = Average::binary) {
  return detail::prf(preds, labels, average, "precision").precision;
}
inline double recall(std::span<const int64_t> preds, std::span<const int64_t> labels,
                     Average average = Average::binary) {
  return detail::prf(preds, labels, average, "recall").recall;
}

// What the study reports for a classifier with class probabilities [N, C] (C >= 2, labels in [0, C)):
struct ClassificationMetrics {
  int64_t num_classes = 0;
  double auc = 0;       // C == 2: roc_auc_binary(column 1); C > 2: one-vs-rest macro (all classes present)
  double auc_hard = 0;  // the paper's variant, for comparison only (see auc_hard)
  double accuracy = 0;  // of the argmax
  double f1 = 0;        // of the argmax: binary (label 1) for C == 2, weighted for C > 2 (the paper's choice)
  double f1_macro = 0;  // of the argmax
};

inline ClassificationMetrics classification_metrics(const Matrix& probs, std::span<const int64_t> labels) {
  detail::check_probs(probs, labels, "classification_metrics");
  const std::vector<int64_t> pred = argmax_rows(probs);
  ClassificationMetrics m;
  m.num_classes = probs.cols;
  m.auc = roc_auc_ovr(probs, labels, Average::macro);
  m.auc_hard = auc_hard(probs, labels);
  m.accuracy = accuracy(pred, labels);
  m.f1 = f1(pred, labels, probs.cols == 2 ? Average::binary : Average::weighted);
  m.f1_macro = f1(pred, labels, Average::macro);
  return m;
}

inline ClassificationMetrics classification_metrics(const Tensor& probs, const Tensor& labels) {
  return classification_metrics(Matrix::from_tensor(probs), labels_from_tensor(labels));
}

// ---------------------------------------------------------------------------------------------------
// Retrieval
// ---------------------------------------------------------------------------------------------------

// gt[q] = the pool indices counted as correct for query q.
using GroundTruth = std::vector<std::vector<int64_t>>;

// gt[q] = { j : pool_keys[j] == query_keys[q] }. With query_keys = each image's caption and pool_keys =
// the candidate captions, an image scores a hit when ANY copy of its caption string is retrieved, as the
// study counts (it compares caption strings).
inline GroundTruth gt_from_keys(std::span<const std::string> query_keys, std::span<const std::string> pool_keys) {
  std::unordered_map<std::string_view, std::vector<int64_t>> where;
  for (size_t j = 0; j < pool_keys.size(); ++j) where[pool_keys[j]].push_back(int64_t(j));
  GroundTruth gt(query_keys.size());
  for (size_t q = 0; q < query_keys.size(); ++q) {
    auto it = where.find(query_keys[q]);
    if (it != where.end()) gt[q] = it->second;
  }
  return gt;
}

// The relation seen from the pool side: out[j] = { q : j in gt[q] } (for text->image from image->text).
inline GroundTruth invert_gt(const GroundTruth& gt, int64_t pool_size) {
  GroundTruth out(size_t(std::max<int64_t>(pool_size, 0)));
  for (size_t q = 0; q < gt.size(); ++q)
    for (int64_t j : gt[q]) {
      MC_CHECK(j >= 0 && j < pool_size, "invert_gt: query ", q, " lists index ", j, " outside [0, ", pool_size, ")");
      out[size_t(j)].push_back(int64_t(q));
    }
  return out;
}

struct RetrievalMetrics {
  std::vector<int64_t> ks;
  std::vector<double> recall;  // recall[i] = fraction (not percent) of queries with rank <= ks[i]
  std::vector<int64_t> ranks;  // per query: 1-based rank of its best-ranked correct item
  double mean_rank = 0, median_rank = 0;  // median of an even count: mean of the two middle ranks (numpy)

  double recall_at(int64_t k) const {
    for (size_t i = 0; i < ks.size(); ++i)
      if (ks[i] == k) return recall[i];
    fail("RetrievalMetrics::recall_at: k = ", k, " was not computed");
  }
};

namespace detail {

// Query q's scores are base[q * qstride + j * jstride], j < n_pool. The pool is ordered by score, higher
// first, ties broken by lower pool index; the rank is the 1-based position of the first correct item.
template <class T>
RetrievalMetrics retrieval(const T* base, int64_t n_query, int64_t n_pool, int64_t qstride, int64_t jstride,
                           const GroundTruth& gt, const std::vector<int64_t>& ks, const char* metric) {
  MC_CHECK(n_query > 0 && n_pool > 0, metric, ": empty similarity matrix (", n_query, " queries, ", n_pool,
           " candidates)");
  MC_CHECK(int64_t(gt.size()) == n_query, metric, ": ground truth has ", gt.size(), " entries for ", n_query,
           " queries");
  MC_CHECK(!ks.empty(), metric, ": no k given");
  for (int64_t k : ks) MC_CHECK(k >= 1, metric, ": k = ", k, " must be at least 1");
  RetrievalMetrics out;
  out.ks = ks;
  out.ranks.resize(size_t(n_query));
  for (int64_t q = 0; q < n_query; ++q) {
    const T* s = base + q * qstride;
    MC_CHECK(!gt[size_t(q)].empty(), metric, ": query ", q, " has no correct item");
    int64_t best = -1;
    for (int64_t j : gt[size_t(q)]) {
      MC_CHECK(j >= 0 && j < n_pool, metric, ": query ", q, " lists correct index ", j, " outside [0, ", n_pool, ")");
      if (best < 0 || s[j * jstride] > s[best * jstride] || (s[j * jstride] == s[best * jstride] && j < best)) best = j;
    }
    const T sb = s[best * jstride];
    int64_t before = 0;
    for (int64_t j = 0; j < n_pool; ++j) {
      const T v = s[j * jstride];
      MC_CHECK(!std::isnan(double(v)), metric, ": similarity of query ", q, " and candidate ", j, " is NaN");
      before += v > sb || (v == sb && j < best);
    }
    out.ranks[size_t(q)] = before + 1;
  }
  for (int64_t k : ks) {
    int64_t hit = 0;
    for (int64_t r : out.ranks) hit += r <= k;
    out.recall.push_back(double(hit) / double(n_query));
  }
  double sum = 0;
  for (int64_t r : out.ranks) sum += double(r);
  out.mean_rank = sum / double(n_query);
  std::vector<int64_t> sorted = out.ranks;
  std::sort(sorted.begin(), sorted.end());
  const size_t h = sorted.size() / 2;
  out.median_rank = sorted.size() % 2 ? double(sorted[h]) : 0.5 * (double(sorted[h - 1]) + double(sorted[h]));
  return out;
}

}  // namespace detail

// Image->text: sim [N_img, N_txt] (row q = image q against every caption), gt[q] = correct caption indices.
// recall@k = fraction of images whose best-ranked correct caption is among the top k. Ties in similarity
// are broken by index order (the lower caption index ranks first), so results are deterministic; the
// paper's numpy argsort leaves tie order to the sort. NaN similarities throw; +-inf are allowed.
inline RetrievalMetrics recall_at_k(const Matrix& sim, const GroundTruth& gt,
                                    const std::vector<int64_t>& ks = {1, 5, 10}) {
  MC_CHECK(int64_t(sim.data.size()) == sim.rows * sim.cols, "recall_at_k: matrix holds ", sim.data.size(),
           " values for shape [", sim.rows, ", ", sim.cols, "]");
  return detail::retrieval(sim.data.data(), sim.rows, sim.cols, sim.cols, 1, gt, ks, "recall_at_k");
}

// Text->image on the same sim [N_img, N_txt] (read by columns): gt_txt[t] = correct image indices of
// caption t (invert_gt of the image->text ground truth, or gt_from_keys(captions, image_captions)).
inline RetrievalMetrics recall_at_k_t2i(const Matrix& sim, const GroundTruth& gt_txt,
                                        const std::vector<int64_t>& ks = {1, 5, 10}) {
  MC_CHECK(int64_t(sim.data.size()) == sim.rows * sim.cols, "recall_at_k_t2i: matrix holds ", sim.data.size(),
           " values for shape [", sim.rows, ", ", sim.cols, "]");
  return detail::retrieval(sim.data.data(), sim.cols, sim.rows, 1, sim.cols, gt_txt, ks, "recall_at_k_t2i");
}

namespace detail {
// A host view of a 2-d similarity tensor without copying when it is already f32 / f64 on the cpu (an
// 8k x 8k ROCO matrix is 256 MB in f32); otherwise a converted f64 copy kept in `hold`.
template <class F>
RetrievalMetrics with_sim_tensor(const Tensor& sim, const char* metric, F&& run) {
  MC_CHECK(sim.defined() && sim.dim() == 2, metric, ": expected a 2-d similarity tensor");
  if (sim.device().is_cpu() && sim.dtype() == DType::F32)
    return run(sim.data<float>(), sim.size(0), sim.size(1), sim.stride(0), sim.stride(1));
  if (sim.device().is_cpu() && sim.dtype() == DType::F64)
    return run(sim.data<double>(), sim.size(0), sim.size(1), sim.stride(0), sim.stride(1));
  const std::vector<double> hold = sim.to_vector<double>();
  return run(hold.data(), sim.size(0), sim.size(1), sim.size(1), int64_t(1));
}
}  // namespace detail

inline RetrievalMetrics recall_at_k(const Tensor& sim, const GroundTruth& gt,
                                    const std::vector<int64_t>& ks = {1, 5, 10}) {
  return detail::with_sim_tensor(sim, "recall_at_k", [&](const auto* p, int64_t r, int64_t c, int64_t s0, int64_t s1) {
    return detail::retrieval(p, r, c, s0, s1, gt, ks, "recall_at_k");
  });
}
inline RetrievalMetrics recall_at_k_t2i(const Tensor& sim, const GroundTruth& gt_txt,
                                        const std::vector<int64_t>& ks = {1, 5, 10}) {
  return detail::with_sim_tensor(sim, "recall_at_k_t2i",
                                 [&](const auto* p, int64_t r, int64_t c, int64_t s0, int64_t s1) {
                                   return detail::retrieval(p, c, r, s1, s0, gt_txt, ks, "recall_at_k_t2i");
                                 });
}

// ---------------------------------------------------------------------------------------------------
// VQA
// ---------------------------------------------------------------------------------------------------

enum class AnswerType { open, closed };

// "OPEN" / "CLOSED", case-insensitive, surrounding white space ignored (VQA-RAD has a few "CLOSED " /
// "OPEN " entries; the paper's code drops those from its open / closed split but counts them overall).
inline AnswerType parse_answer_type(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  const std::string_view t = b == std::string_view::npos ? std::string_view() : s.substr(b, s.find_last_not_of(ws) - b + 1);
  auto eq = [&](std::string_view w) {
    if (t.size() != w.size()) return false;
    for (size_t i = 0; i < t.size(); ++i)
      if (std::toupper(static_cast<unsigned char>(t[i])) != w[i]) return false;
    return true;
  };
  if (eq("OPEN")) return AnswerType::open;
  if (eq("CLOSED")) return AnswerType::closed;
  fail("vqa_metrics: unknown answer type \"", s, "\" (expected OPEN or CLOSED)");
}

// Accuracy and weighted F1 (sklearn f1_score(gt, pred, average="weighted") over the answers present), for
// all questions and for the open / closed ones. A subset with no questions reports count 0 and NaN.
struct VqaMetrics {
  int64_t count = 0, count_open = 0, count_closed = 0;
  double accuracy = 0, accuracy_open = 0, accuracy_closed = 0;
  double f1 = 0, f1_open = 0, f1_closed = 0;
};

// Answers as class ids (e.g. indices into the answer vocabulary, with out-of-vocabulary test answers
// mapped to the "unknown" id by the caller).
inline VqaMetrics vqa_metrics(std::span<const int64_t> pred, std::span<const int64_t> gt,
                              std::span<const AnswerType> types) {
  detail::check_same_length("vqa_metrics", "predictions", pred.size(), "ground-truth answers", gt.size());
  detail::check_same_length("vqa_metrics", "predictions", pred.size(), "answer types", types.size());
  VqaMetrics m;
  m.count = int64_t(pred.size());
  m.accuracy = accuracy(pred, gt);
  m.f1 = f1(pred, gt, Average::weighted);
  for (AnswerType want : {AnswerType::open, AnswerType::closed}) {
    std::vector<int64_t> p, g;
    for (size_t i = 0; i < pred.size(); ++i)
      if (types[i] == want) p.push_back(pred[i]), g.push_back(gt[i]);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double acc = p.empty() ? nan : accuracy(p, g), f = p.empty() ? nan : f1(p, g, Average::weighted);
    if (want == AnswerType::open) m.count_open = int64_t(p.size()), m.accuracy_open = acc, m.f1_open = f;
    else m.count_closed = int64_t(p.size()), m.accuracy_closed = acc, m.f1_closed = f;
  }
  return m;
}

// Answers as strings, compared exactly (normalise case / white space before, as the vocabulary does).
inline VqaMetrics vqa_metrics(std::span<const std::string> pred_answers, std::span<const std::string> gt_answers,
                              std::span<const std::string> answer_types) {
  detail::check_same_length("vqa_metrics", "predictions", pred_answers.size(), "ground-truth answers",
                            gt_answers.size());
  detail::check_same_length("vqa_metrics", "predictions", pred_answers.size(), "answer types", answer_types.size());
  std::unordered_map<std::string_view, int64_t> id;
  auto get = [&](const std::string& s) { return id.emplace(s, int64_t(id.size())).first->second; };
  std::vector<int64_t> p(pred_answers.size()), g(gt_answers.size());
  std::vector<AnswerType> t(answer_types.size());
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] = get(pred_answers[i]);
    g[i] = get(gt_answers[i]);
    t[i] = parse_answer_type(answer_types[i]);
  }
  return vqa_metrics(p, g, t);
}

}  // namespace mc::tasks
