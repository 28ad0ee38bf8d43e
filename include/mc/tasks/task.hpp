// mc/tasks/task.hpp — what the study's tasks have in common: the Task interface the trainer drives, the
// TaskModel (dual encoder + task head) the strategies act on, and small helpers of the task files.
//
//   class MyTask : public Task { ... };           // classification.hpp, retrieval.hpp, vqa.hpp
//   TaskModel model(encoder, task.head());        // the encoder's tensors keep their checkpoint names,
//                                                 // the head's sit under "head."
//
// A task owns its data (train / val / test splits, already subsampled as the experiment says) and its head
// (null when the task has no parameters of its own: zero-shot and contrastive classification, retrieval).
// Training batches are made by make_batch from loader threads (so it may only read shared state); loss and
// evaluate run on the training thread, in whatever mode (train / eval) the caller set.
#pragma once
#include <algorithm>
#include <any>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/data/common.hpp"
#include "mc/data/transforms.hpp"
#include "mc/models/dual_encoder.hpp"
#include "mc/ops/factory.hpp"
#include "mc/ops/shape.hpp"

namespace mc::tasks {

using ojson = nlohmann::ordered_json;

// Loss and metrics of a task over one split.
struct Evaluation {
  double loss = std::numeric_limits<double>::quiet_NaN();  // mean per-sample loss
  int64_t count = 0;                                         // samples
  ojson metrics = ojson::object();                           // numbers (NaN where undefined)
  ojson extra = ojson::object();                             // other results (e.g. "roc": the ROC curve)
  std::vector<std::string> header;                           // predictions.csv, when asked for
  std::vector<std::vector<std::string>> rows;
};

// What the trainer and `mc run` need from a task. Splits are "train", "val" and "test".
class Task {
 public:
  virtual ~Task() = default;
  virtual int64_t size(const std::string& split) const = 0;
  // The task's own parameters (registered under "head" in the TaskModel); null when it has none.
  virtual std::shared_ptr<nn::Module> head() const { return nullptr; }
  // A training batch of the training samples `idx`. Called from loader threads: may only read shared state.
  virtual std::any make_batch(const std::vector<int64_t>& idx) const = 0;
  // The mean loss of a batch from make_batch (forward in the current mode, recording autograd).
  virtual Tensor loss(const std::any& batch) = 0;
  // Loss and metrics over a split, in the current mode, without autograd; with_predictions fills the rows
  // of predictions.csv.
  virtual Evaluation evaluate(const std::string& split, bool with_predictions) = 0;
  // Facts about the data for results.json (split sizes, vocabulary size, skipped samples, ...).
  virtual ojson describe() const = 0;
};

// The dual encoder (registered inline: its parameters keep the checkpoint's names, "visual.conv1.weight",
// "text_projection", ...) plus the task head at "head".
class TaskModel : public nn::Module {
 public:
  std::shared_ptr<models::DualEncoder> encoder;
  std::shared_ptr<nn::Module> head;  // may be null

  TaskModel(std::shared_ptr<models::DualEncoder> enc, std::shared_ptr<nn::Module> task_head)
      : encoder(std::move(enc)), head(std::move(task_head)) {
    MC_CHECK(encoder, "TaskModel: no encoder");
    register_module("", encoder);
    if (head) register_module("head", head);
  }
};

namespace task_util {

// The slot of a split name in a task's arrays (train 0, val 1, test 2).
inline int split_slot(const std::string& split, const char* task) {
  if (split == "train") return 0;
  if (split == "val") return 1;
  if (split == "test") return 2;
  fail(task, ": unknown split '", split, "' (expected train, val or test)");
}

// A seeded random subset of [0, n) with `max` elements, in ascending order (all of them when max is 0 or
// at least n).
inline std::vector<int64_t> pick(int64_t n, int64_t max, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> out;
  if (max <= 0 || max >= n) {
    for (int64_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  std::vector<int64_t> p = data::permutation(n, seed, stream);
  out.assign(p.begin(), p.begin() + max);
  std::sort(out.begin(), out.end());
  return out;
}

// 0, 1, ..., n-1.
inline std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
  return v;
}

// Consecutive slices of `idx` with at most `size` elements each.
inline std::vector<std::vector<int64_t>> chunks(const std::vector<int64_t>& idx, int64_t size) {
  MC_CHECK(size > 0, "chunks: size must be positive");
  std::vector<std::vector<int64_t>> out;
  for (size_t b = 0; b < idx.size(); b += size_t(size))
    out.emplace_back(idx.begin() + long(b), idx.begin() + long(std::min(idx.size(), b + size_t(size))));
  return out;
}

// Rows `rows` of a 2-d CPU tensor (token ids / masks), as a new contiguous tensor.
inline Tensor take_rows(const Tensor& t, const std::vector<int64_t>& rows) {
  return index_select(t, 0, from_vector(rows, {int64_t(rows.size())}));
}

// Whether the text tower's output ignores padding beyond the mask, so a batch may be cut to its longest
// text: true except for a BERT tower that the card runs without an attention mask (PMC-CLIP).
inline bool padding_is_inert(const models::ModelCard& card) {
  return card.text.arch == "clip" || card.text.use_attention_mask;
}

// Ids and mask cut to the longest row of the mask.
inline models::TokenBatch trim_padding(const models::TokenBatch& b) {
  const std::vector<int64_t> m = b.attention_mask.to_vector<int64_t>();
  const int64_t n = b.input_ids.size(0), L = b.input_ids.size(1);
  int64_t longest = 1;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t k = L - 1; k >= 0; --k)
      if (m[size_t(r * L + k)] != 0) {
        longest = std::max(longest, k + 1);
        break;
      }
  if (longest == L) return b;
  return {b.input_ids.narrow(1, 0, longest).contiguous(), b.attention_mask.narrow(1, 0, longest).contiguous()};
}

// A CSV field (RFC 4180: quoted when it holds a comma, quote or line break).
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

inline std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// A metric, or NaN when it is undefined for these labels (e.g. an AUC with one class present).
template <class F>
double or_nan(F&& f) {
  try {
    return f();
  } catch (const Error&) {
    return std::numeric_limits<double>::quiet_NaN();
  }
}

// The model card's preprocessing at `size` pixels.
inline data::Preprocess preprocess_for(const models::ModelCard& card, int64_t size) {
  data::Preprocess p = card.preprocess.make();
  p.size = int(size);
  return p;
}

// What a data set does about missing image files: an error naming the file, or (skip) drop and count.
inline data::ImageCheck image_check(bool skip_missing) {
  data::ImageCheck c;
  c.skip_missing = skip_missing;
  return c;
}

// Preprocessed images of files, optionally kept in memory after the first decode. Thread-safe.
class ImageCache {
 public:
  ImageCache(data::Preprocess pre, bool enabled) : pre_(pre), enabled_(enabled) {}

  // [N, 3, S, S] for the given files.
  Tensor batch(const std::vector<std::string>& paths) const {
    if (!enabled_) return pre_.batch_files(paths);
    warm(paths);
    const int64_t S = pre_.size, per = 3 * S * S, n = int64_t(paths.size());
    Tensor out = Tensor::empty({n, 3, S, S}, DType::F32);
    float* dst = out.data<float>();
    std::lock_guard<std::mutex> lk(m_);
    for (int64_t i = 0; i < n; ++i) {
      const auto& v = *cache_.at(paths[size_t(i)]);
      std::copy(v.begin(), v.end(), dst + i * per);
    }
    return out;
  }

 private:
  // Decodes (in parallel) the files not cached yet.
  void warm(const std::vector<std::string>& paths) const {
    std::vector<std::string> todo;
    {
      std::lock_guard<std::mutex> lk(m_);
      std::set<std::string> seen;
      for (const std::string& p : paths)
        if (!cache_.count(p) && seen.insert(p).second) todo.push_back(p);
    }
    if (todo.empty()) return;
    Tensor t = pre_.batch_files(todo);
    const int64_t S = pre_.size, per = 3 * S * S;
    const float* src = t.data<float>();
    std::lock_guard<std::mutex> lk(m_);
    for (size_t i = 0; i < todo.size(); ++i)
      cache_.emplace(todo[i], std::make_shared<std::vector<float>>(src + int64_t(i) * per, src + int64_t(i + 1) * per));
  }

  data::Preprocess pre_;
  bool enabled_;
  mutable std::mutex m_;
  mutable std::map<std::string, std::shared_ptr<const std::vector<float>>> cache_;
};

}  // namespace task_util

}  // namespace mc::tasks
