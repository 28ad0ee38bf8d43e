// mc/tasks/classification.hpp — MedMNIST classification: zero-shot from text prompts, a linear head, or
// contrastive fine-tuning on the class prompts.
//
//   head "linear"       logits = Linear(feature, C)(image feature); feature = the projected embedding
//                       (input "embedding") or the tower output before the vision projection ("features",
//                       CXR-CLIP's 2048-d input). Cross-entropy on the logits (one softmax: the paper's
//                       extra sigmoid / softmax before CrossEntropyLoss is not copied).
//   head "contrastive"  logits = the card's training scale * cos(image embedding, prompt embedding of each
//                       class); cross-entropy. The text tower and the projections are in the loop (no head
//                       parameters).
//   strategy zeroshot   the same logits with the card's zero-shot scale (or classification.
//                       zero_shot_scale), no training.
// Prompts: "prompts" (one per class), or the "prompt" template with each class name (medmnist INFO names
// unless class_names says otherwise: "this is a photo of {}" for CLIP and BiomedCLIP, the bare name for
// PMC-CLIP). CXR-CLIP without a template: for two classes "No <finding>" for the normal class and
// "<finding>" for the other, where the normal class is the one whose name contains "normal" (BreastMNIST:
// "malignant" / "No malignant"; PneumoniaMNIST: "No pneumonia" / "pneumonia") — the classes stay the right
// way round, unlike the paper's code; otherwise the bare class names.
//
// Metrics (mc/tasks/metrics.hpp, from the softmax probabilities): auc (binary: of class 1; else one-vs-rest
// macro), auc_hard (the paper's AUC from argmax labels, for comparison only), accuracy, f1 (binary for two
// classes, else weighted), f1_macro, f1_weighted, majority_accuracy (the share of this split's samples in
// the training split's most frequent class: the baseline to beat), count. An AUC that is undefined (one
// class present) is NaN. Binary sets also give the ROC curve (Evaluation::extra "roc": fpr, tpr, auc).
// predictions.csv: index, row (in the file's split), label, prediction, prob_0 .. prob_{C-1}.
#pragma once
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "mc/data/medmnist.hpp"
#include "mc/nn/layers.hpp"
#include "mc/ops/nn.hpp"
#include "mc/tasks/experiment.hpp"
#include "mc/tasks/metrics.hpp"
#include "mc/tasks/task.hpp"

namespace mc::tasks {

// The zero-shot / contrastive prompt of every class (rules at the top of this file).
inline std::vector<std::string> class_prompts(const Experiment& e, const std::vector<std::string>& names) {
  const ClassificationOptions& c = e.classification;
  if (!c.prompts.empty()) {
    MC_CHECK(c.prompts.size() == names.size(), e.source, ": classification.prompts has ", c.prompts.size(),
             " prompts for ", names.size(), " classes");
    return c.prompts;
  }
  std::vector<std::string> out;
  if (c.prompt.empty() && e.family == "cxr-clip" && names.size() == 2) {
    auto normal = [](const std::string& s) { return data::ascii_lower(s).find("normal") != std::string::npos; };
    const size_t finding = normal(names[1]) && !normal(names[0]) ? 0 : 1;
    out.resize(2);
    out[finding] = names[finding];
    out[1 - finding] = "No " + names[finding];
    return out;
  }
  const std::string t = c.prompt.empty() ? "{}" : c.prompt;
  const size_t at = t.find("{}");
  MC_CHECK(at != std::string::npos, e.source, ": classification.prompt must contain \"{}\"");
  for (const std::string& n : names) out.push_back(t.substr(0, at) + n + t.substr(at + 2));
  return out;
}

class ClassificationTask : public Task {
 public:
  struct Batch {
    Tensor images, labels;
  };

  // `e` must be resolved (mc/tasks/experiment.hpp: resolve); the encoder is on `device`.
  ClassificationTask(const Experiment& e, std::shared_ptr<models::DualEncoder> enc, Device device)
      : exp_(e), enc_(std::move(enc)), device_(device) {
    const DataConfig& d = e.data;
    data::MedMnistOptions o;
    o.flag = d.flag;
    o.seed = e.seed;
    data::MedMnistOptions train_o = o;
    train_o.percentage = d.percentage;
    train_o.stratified = d.stratified;
    sets_[0] = data::MedMnist::open(d.path, d.train_split, train_o);
    if (!d.val_split.empty()) sets_[1] = data::MedMnist::open(d.path, d.val_split, o);
    sets_[2] = data::MedMnist::open(d.path, d.test_split, o);
    idx_[0] = task_util::pick(sets_[0].size(), d.max_train, e.seed, 101);
    if (!d.val_split.empty()) idx_[1] = task_util::pick(sets_[1].size(), d.max_val, e.seed, 102);
    idx_[2] = task_util::pick(sets_[2].size(), d.max_test, e.seed, 103);
    pre_ = task_util::preprocess_for(enc_->card(), d.image_size);

    const int C = sets_[0].num_classes();
    class_names_ = e.classification.class_names.empty() ? sets_[0].class_names() : e.classification.class_names;
    MC_CHECK(int(class_names_.size()) == C, e.source, ": classification.class_names has ", class_names_.size(),
             " names but ", sets_[0].flag(), " has ", C, " classes");
    std::vector<int64_t> counts(size_t(C), 0);
    for (int64_t i : idx_[0]) ++counts[size_t(sets_[0].label(i))];
    majority_ = int64_t(std::max_element(counts.begin(), counts.end()) - counts.begin());

    zero_shot_ = e.strategy.name == "zeroshot";
    contrastive_ = zero_shot_ || e.classification.head == "contrastive";
    if (contrastive_) {
      prompts_ = class_prompts(e, class_names_);
      MC_CHECK(enc_->has_tokenizer(), e.source, ": the model has no tokenizer vocabulary, needed for the prompts");
      models::TokenBatch tok = enc_->tokenize(prompts_);
      prompt_ids_ = tok.input_ids.to(device_);
      prompt_mask_ = tok.attention_mask.to(device_);
    } else {
      int64_t dim = 0;
      {
        NoGradGuard ng;
        enc_->eval();
        Tensor probe = zeros({1, 3, pre_.size, pre_.size}, DType::F32, device_);
        dim = (features_input() ? enc_->image_features(probe) : enc_->encode_image(probe)).size(1);
      }
      head_ = std::make_shared<nn::Linear>(dim, int64_t(C));
      head_->to(device_);
    }
  }

  std::shared_ptr<nn::Module> head() const override { return head_; }
  int num_classes() const { return sets_[0].num_classes(); }
  const std::vector<std::string>& prompts() const { return prompts_; }

  int64_t size(const std::string& split) const override {
    return int64_t(idx_[task_util::split_slot(split, "classification")].size());
  }

  std::any make_batch(const std::vector<int64_t>& idx) const override { return batch_of(0, idx); }

  Tensor loss(const std::any& batch) override {
    const Batch& b = std::any_cast<const Batch&>(batch);
    return cross_entropy(logits(b.images.to(device_)), b.labels.to(device_));
  }

  Evaluation evaluate(const std::string& split, bool with_predictions) override {
    NoGradGuard ng;
    const int s = task_util::split_slot(split, "classification");
    const int64_t C = num_classes();
    std::vector<double> probs;
    std::vector<int64_t> labels;
    double loss_sum = 0;
    Tensor txt;
    if (contrastive_) txt = enc_->encode_text(prompt_ids_, prompt_mask_);
    for (const auto& chunk : task_util::chunks(task_util::iota(size(split)), exp_.train.eval_batch_size)) {
      Batch b = batch_of(s, chunk);
      Tensor lg = logits(b.images.to(device_), txt).to(DType::F32);
      loss_sum += cross_entropy(lg, b.labels.to(device_)).to(Device::cpu()).item<double>() * double(chunk.size());
      std::vector<double> p = softmax(lg, -1).to(Device::cpu()).to_vector<double>();
      probs.insert(probs.end(), p.begin(), p.end());
      std::vector<int64_t> l = b.labels.to_vector<int64_t>();
      labels.insert(labels.end(), l.begin(), l.end());
    }
    Evaluation ev;
    ev.count = int64_t(labels.size());
    if (ev.count == 0) return ev;
    ev.loss = loss_sum / double(ev.count);
    const Matrix pm(ev.count, C, probs);
    const std::vector<int64_t> pred = argmax_rows(pm);
    ojson& m = ev.metrics;
    m["auc"] = task_util::or_nan([&] { return roc_auc_ovr(pm, labels, Average::macro); });
    m["auc_hard"] = task_util::or_nan([&] { return auc_hard(pm, labels); });
    m["accuracy"] = accuracy(pred, labels);
    m["f1"] = f1(pred, labels, C == 2 ? Average::binary : Average::weighted);
    m["f1_macro"] = f1(pred, labels, Average::macro);
    m["f1_weighted"] = f1(pred, labels, Average::weighted);
    m["majority_accuracy"] = double(std::count(labels.begin(), labels.end(), majority_)) / double(ev.count);
    m["count"] = ev.count;
    if (C == 2 && std::count(labels.begin(), labels.end(), 1) % ev.count != 0) {
      std::vector<double> score(size_t(ev.count));
      for (int64_t i = 0; i < ev.count; ++i) score[size_t(i)] = pm(i, 1);
      const RocCurve roc = roc_curve(score, labels);
      ev.extra["roc"] = {{"fpr", roc.fpr}, {"tpr", roc.tpr}, {"auc", m["auc"]}};
    }
    if (with_predictions) {
      ev.header = {"index", "row", "label", "prediction"};
      for (int64_t c = 0; c < C; ++c) ev.header.push_back("prob_" + std::to_string(c));
      const std::vector<int64_t>& rows = sets_[s].rows();
      for (int64_t i = 0; i < ev.count; ++i) {
        std::vector<std::string> row{std::to_string(i), std::to_string(rows[size_t(idx_[s][size_t(i)])]),
                                     std::to_string(labels[size_t(i)]), std::to_string(pred[size_t(i)])};
        for (int64_t c = 0; c < C; ++c) row.push_back(task_util::fmt(pm(i, c)));
        ev.rows.push_back(std::move(row));
      }
    }
    return ev;
  }

  ojson describe() const override {
    ojson j;
    j["flag"] = sets_[0].flag();
    j["classes"] = class_names_;
    j["train"] = size("train");
    j["val"] = size("val");
    j["test"] = size("test");
    j["train_class_counts"] = sets_[0].class_counts();
    j["image_size"] = pre_.size;
    if (contrastive_) j["prompts"] = prompts_;
    return j;
  }

 private:
  bool features_input() const { return exp_.classification.input == "features"; }

  // Images and labels of positions `positions` of split slot s.
  Batch batch_of(int s, const std::vector<int64_t>& positions) const {
    std::vector<int64_t> rows;
    rows.reserve(positions.size());
    for (int64_t p : positions) rows.push_back(idx_[s][size_t(p)]);
    return {sets_[s].images(rows, pre_), sets_[s].labels(rows)};
  }

  // Class logits of preprocessed images; `txt` (contrastive / zero-shot): the prompt embeddings, computed
  // here when not given (in training, where the text tower may learn).
  Tensor logits(const Tensor& images, Tensor txt = Tensor()) {
    if (!contrastive_) return head_->forward(features_input() ? enc_->image_features(images) : enc_->encode_image(images));
    if (!txt.defined()) txt = enc_->encode_text(prompt_ids_, prompt_mask_);
    Tensor img = enc_->encode_image(images);
    if (zero_shot_ && exp_.classification.zero_shot_scale)
      return matmul(normalize(img, -1), normalize(txt, -1).t()) * *exp_.classification.zero_shot_scale;
    return enc_->logits(img, txt, zero_shot_);
  }

  Experiment exp_;
  std::shared_ptr<models::DualEncoder> enc_;
  Device device_;
  data::MedMnist sets_[3];           // train, val (empty when there is no validation split), test
  std::vector<int64_t> idx_[3];      // the samples used of each (indices into sets_[k])
  data::Preprocess pre_;
  std::vector<std::string> class_names_, prompts_;
  Tensor prompt_ids_, prompt_mask_;
  std::shared_ptr<nn::Linear> head_;
  int64_t majority_ = 0;
  bool zero_shot_ = false, contrastive_ = false;
};

}  // namespace mc::tasks
