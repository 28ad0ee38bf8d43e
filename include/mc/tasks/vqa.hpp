// mc/tasks/vqa.hpp — medical VQA (VQA-RAD, SLAKE) with a bilinear attention network (mc/tasks/ban.hpp) on
// the dual encoder's features.
//
//   image features v   vqa.image_input "embedding": the pooled, projected image embedding as ONE token
//                      [B, 1, embed_dim] (the paper); "features": the pooled tower output before the
//                      projection [B, 1, width] (CXR-CLIP's 2048-d, the paper's choice for it); "tokens": the
//                      ViT patch tokens / the ResNet grid [B, N, width] (an option the paper lacks).
//   question q         the text tower's token states [B, L, text width] (CLIP: the transformer output
//                      before ln_final; BERT: last_hidden_state). vqa.question_mask true: the padding is
//                      masked in the BERT tower and in BAN, and each batch is cut to its longest question;
//                      false: every position is seen, unmasked, as the paper's code does.
//   head               BanHead(v_dim, q_dim = hidden = text width, glimpses, k, dropouts, n_answers); logits
//                      over the answer vocabulary, cross-entropy.
// Answer vocabulary (data::AnswerVocab): the distinct lowercased answers of the training and validation
// samples used, plus "unknown"; test answers outside it count as "unknown" (so they are always wrong
// unless the model predicts "unknown").
//
// Metrics (fractions): accuracy, f1 (weighted), acc_open / acc_closed, f1_open / f1_closed (NaN when the
// split has no question of that type), count / count_open / count_closed, majority_accuracy_closed (the
// accuracy on this split's closed questions of always answering the most frequent closed answer of the
// training split: the baseline to beat), unknown_answers (this split's answers outside the vocabulary).
// predictions.csv: index, qid, image, answer_type, answer, prediction, correct, question.
#pragma once
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mc/data/vqa.hpp"
#include "mc/ops/nn.hpp"
#include "mc/tasks/ban.hpp"
#include "mc/tasks/experiment.hpp"
#include "mc/tasks/metrics.hpp"
#include "mc/tasks/task.hpp"

namespace mc::tasks {

class VqaTask : public Task {
 public:
  struct Batch {
    Tensor images, ids, mask, answers;
  };

  // `e` must be resolved; the encoder is on `device`. The BAN head is created here (default generator).
  VqaTask(const Experiment& e, std::shared_ptr<models::DualEncoder> enc, Device device)
      : exp_(e), enc_(std::move(enc)), device_(device),
        images_(task_util::preprocess_for(enc_->card(), e.data.image_size), e.data.cache_images) {
    const DataConfig& d = e.data;
    MC_CHECK(enc_->has_tokenizer(), e.source, ": the model has no tokenizer vocabulary, needed for the questions");
    const std::string splits[3] = {d.train_split, d.val_split, d.test_split};
    const int64_t max[3] = {d.max_train, d.max_val, d.max_test};
    for (int s = 0; s < 3; ++s) {
      if (splits[s].empty()) continue;
      if (d.dataset == "vqa-rad") {
        data::VqaRadOptions o;
        o.images_dir = d.images_dir;
        o.val_fraction = d.val_fraction;
        o.seed = e.seed;
        o.images = task_util::image_check(d.skip_missing);
        sets_[s] = data::VqaDataset::vqa_rad(d.path, splits[s], o);
      } else {
        data::SlakeOptions o;
        o.images_dir = d.images_dir;
        o.language = d.language;
        o.images = task_util::image_check(d.skip_missing);
        sets_[s] = data::VqaDataset::slake(d.path, splits[s], o);
      }
      idx_[s] = task_util::pick(sets_[s].size(), max[s], e.seed, uint64_t(301 + s));
      std::vector<std::string> questions;
      for (int64_t i : idx_[s]) questions.push_back(sets_[s].item(i).question);
      if (!questions.empty()) tokens_[s] = enc_->tokenize(questions);
    }
    std::vector<std::string> answers;
    std::map<std::string, int64_t> closed_counts;
    for (int s = 0; s < 2; ++s)
      for (int64_t i : idx_[s]) answers.push_back(sets_[s].item(i).answer);
    vocab_ = data::AnswerVocab::from_answers(answers);
    for (int64_t i : idx_[0]) {
      const data::VqaItem& it = sets_[0].item(i);
      if (it.answer_type == data::AnswerType::Closed) ++closed_counts[it.answer];
    }
    int64_t most = 0;
    for (const auto& [a, n] : closed_counts)
      if (n > most) most = n, majority_closed_ = a;

    BanConfig c;
    const models::ModelCard& card = enc_->card();
    c.hidden = c.q_dim = card.text.arch == "clip" ? card.text.clip.width : card.text.bert.hidden_size;
    {
      NoGradGuard ng;
      enc_->eval();
      Tensor probe = zeros({1, 3, int64_t(e.data.image_size), int64_t(e.data.image_size)}, DType::F32, device_);
      c.v_dim = image_features(probe).size(2);
    }
    c.n_answers = vocab_.size();
    c.glimpses = e.vqa.glimpses;
    c.k = e.vqa.k;
    c.dropout_fc = e.vqa.dropout_fc;
    c.dropout_att = e.vqa.dropout_att;
    c.dropout_q = e.vqa.dropout_q;
    c.dropout_cls = e.vqa.dropout_cls;
    head_ = std::make_shared<BanHead>(c);
    head_->to(device_);
  }

  std::shared_ptr<nn::Module> head() const override { return head_; }
  const data::AnswerVocab& vocab() const { return vocab_; }

  int64_t size(const std::string& split) const override { return int64_t(idx_[task_util::split_slot(split, "vqa")].size()); }

  std::any make_batch(const std::vector<int64_t>& idx) const override { return batch_of(0, idx); }

  Tensor loss(const std::any& batch) override {
    const Batch& b = std::any_cast<const Batch&>(batch);
    return cross_entropy(logits(b), b.answers.to(device_));
  }

  Evaluation evaluate(const std::string& split, bool with_predictions) override {
    NoGradGuard ng;
    const int s = task_util::split_slot(split, "vqa");
    Evaluation ev;
    ev.count = size(split);
    if (ev.count == 0) return ev;
    std::vector<int64_t> pred, gt;
    double loss_sum = 0;
    for (const auto& chunk : task_util::chunks(task_util::iota(ev.count), exp_.train.eval_batch_size)) {
      Batch b = batch_of(s, chunk);
      Tensor lg = logits(b).to(DType::F32);
      loss_sum += cross_entropy(lg, b.answers.to(device_)).to(Device::cpu()).item<double>() * double(chunk.size());
      const std::vector<int64_t> p = argmax(lg, 1).to(Device::cpu()).to_vector<int64_t>();
      pred.insert(pred.end(), p.begin(), p.end());
      const std::vector<int64_t> g = b.answers.to_vector<int64_t>();
      gt.insert(gt.end(), g.begin(), g.end());
    }
    ev.loss = loss_sum / double(ev.count);
    std::vector<AnswerType> types;
    int64_t closed = 0, closed_hits = 0, unknown = 0;
    for (int64_t i : idx_[s]) {
      const data::VqaItem& it = sets_[s].item(i);
      const bool is_closed = it.answer_type == data::AnswerType::Closed;
      types.push_back(is_closed ? AnswerType::closed : AnswerType::open);
      closed += is_closed;
      closed_hits += is_closed && it.answer == majority_closed_;
      unknown += !vocab_.contains(it.answer);
    }
    const VqaMetrics vm = vqa_metrics(pred, gt, types);
    ojson& m = ev.metrics;
    m["accuracy"] = vm.accuracy;
    m["f1"] = vm.f1;
    m["acc_open"] = vm.accuracy_open;
    m["acc_closed"] = vm.accuracy_closed;
    m["f1_open"] = vm.f1_open;
    m["f1_closed"] = vm.f1_closed;
    m["count"] = vm.count;
    m["count_open"] = vm.count_open;
    m["count_closed"] = vm.count_closed;
    m["majority_accuracy_closed"] = closed > 0 ? double(closed_hits) / double(closed) : std::nan("");
    m["unknown_answers"] = unknown;
    if (with_predictions) {
      ev.header = {"index", "qid", "image", "answer_type", "answer", "prediction", "correct", "question"};
      for (int64_t i = 0; i < ev.count; ++i) {
        const data::VqaItem& it = sets_[s].item(idx_[s][size_t(i)]);
        ev.rows.push_back({std::to_string(i), std::to_string(it.qid), it.image_name,
                           data::answer_type_name(it.answer_type), it.answer, vocab_.answer(pred[size_t(i)]),
                           pred[size_t(i)] == gt[size_t(i)] ? "1" : "0", it.question});
      }
    }
    return ev;
  }

  ojson describe() const override {
    ojson j;
    j["dataset"] = exp_.data.dataset;
    j["train"] = size("train");
    j["val"] = size("val");
    j["test"] = size("test");
    j["answers"] = vocab_.size();
    int64_t skipped = 0;
    for (const data::VqaDataset& ds : sets_) skipped += ds.skipped();
    j["skipped_missing_images"] = skipped;
    j["image_input"] = exp_.vqa.image_input;
    j["image_size"] = exp_.data.image_size;
    return j;
  }

 private:
  Batch batch_of(int s, const std::vector<int64_t>& positions) const {
    std::vector<int64_t> items;
    std::vector<std::string> paths;
    for (int64_t p : positions) {
      items.push_back(idx_[s][size_t(p)]);
      paths.push_back(sets_[s].item(items.back()).image_path);
    }
    models::TokenBatch t{task_util::take_rows(tokens_[s].input_ids, positions),
                         task_util::take_rows(tokens_[s].attention_mask, positions)};
    if (exp_.vqa.question_mask) t = task_util::trim_padding(t);
    return {images_.batch(paths), t.input_ids, t.attention_mask, sets_[s].answer_labels(items, vocab_)};
  }

  // v [B, Nv, v_dim] as vqa.image_input says.
  Tensor image_features(const Tensor& pixels) {
    const std::string& in = exp_.vqa.image_input;
    if (in == "tokens") return enc_->image_tokens(pixels);
    return (in == "features" ? enc_->image_features(pixels) : enc_->encode_image(pixels)).unsqueeze(1);
  }

  Tensor logits(const Batch& b) {
    Tensor v = image_features(b.images.to(device_));
    const Tensor ids = b.ids.to(device_);
    if (!exp_.vqa.question_mask) return head_->forward(v, enc_->text_tokens(ids));
    const Tensor mask = b.mask.to(device_);
    return head_->forward(v, enc_->text_tokens(ids, mask), mask);
  }

  Experiment exp_;
  std::shared_ptr<models::DualEncoder> enc_;
  Device device_;
  task_util::ImageCache images_;
  data::VqaDataset sets_[3];        // train, val, test (val empty without a validation split)
  std::vector<int64_t> idx_[3];     // the samples used of each
  models::TokenBatch tokens_[3];    // their questions, tokenised, in idx_ order
  data::AnswerVocab vocab_;
  std::string majority_closed_;
  std::shared_ptr<BanHead> head_;
};

}  // namespace mc::tasks
