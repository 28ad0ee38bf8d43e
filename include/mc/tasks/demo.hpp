// mc/tasks/demo.hpp — `mc demo`: the study of the paper in miniature, offline, on the CPU, in a few minutes.
//
// Two tiny dual encoders of the same architecture (mc/tasks/pretrain.hpp) are contrastively pre-trained by
// mc, one on the "general" procedural domain (coloured shapes with captions), one on the "medical-like"
// domain (chest-like scans with short reports; mc/data/synthetic.hpp). Both are then evaluated as the paper
// evaluates CLIP and its medical variants, on three downstream tasks of the medical-like domain:
//   classification  the finding of a scan (normal, nodule, opacity, effusion): zero-shot from class prompts
//                   (softmax over the scaled cosine similarities), and a linear head on the image embedding
//                   trained with cross-entropy;
//   retrieval       scan -> report (image-to-text recall@1/5/10 over the test pool; a scan scores a hit on
//                   any report with its content): zero-shot, and fine-tuned with the symmetric InfoNCE loss;
//   VQA             closed (yes / no) and open questions, answered by the BAN head (mc/tasks/ban.hpp) over
//                   the pooled image embedding and the question's token states.
// Fine-tuning uses the study's strategies (mc/tasks/strategy.hpp: partial, full, LoRA) and training loop
// (mc/tasks/trainer.hpp: cosine schedule, early stopping on the validation loss with the best weights
// restored); Table 6's question (how much downstream data does each model need?) is asked with 5-50 % of
// the classification training set. The tables come out in the paper's layouts (mc/tasks/report.hpp), with
// CSV files and SVG plots (loss curves, ROC curves) in DemoOptions::out.
//
// It is a miniature: 32x32 images, models of ~0.23 M parameters, a few hundred training samples, one seed.
// Its numbers say how these tiny models behave on these generated domains, not how CLIP, BiomedCLIP,
// PMC-CLIP or CXR-CLIP behave on MedMNIST, ROCO or VQA-RAD.
#pragma once
#include <algorithm>
#include <any>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "mc/data/synthetic.hpp"
#include "mc/tasks/ban.hpp"
#include "mc/tasks/metrics.hpp"
#include "mc/tasks/pretrain.hpp"
#include "mc/tasks/report.hpp"
#include "mc/tasks/strategy.hpp"
#include "mc/tasks/trainer.hpp"

namespace mc::tasks {

struct DemoOptions {
  uint64_t seed = data::kDefaultSeed;
  std::string out = "runs/demo";  // folder of the tables (CSV, Markdown) and plots; "" = write nothing
  double scale = 1.0;             // data sizes and training steps are multiplied by this (< 1: a quicker run)
};

struct DemoResult {
  std::vector<ResultRecord> records;
  double seconds = 0;
};

namespace demo_detail {

namespace syn = data::synthetic;

inline Tensor rows(const Tensor& t, const std::vector<int64_t>& idx) { return pretrain_detail::rows(t, idx); }

// Multi-positive contrastive targets [B, B]: row i uniform over the items with the same content as i.
inline Tensor content_targets(const std::vector<std::string>& keys) {
  const int64_t B = int64_t(keys.size());
  std::vector<float> t(size_t(B * B), 0.0f);
  for (int64_t i = 0; i < B; ++i) {
    int64_t n = 0;
    for (int64_t j = 0; j < B; ++j) n += keys[size_t(j)] == keys[size_t(i)];
    for (int64_t j = 0; j < B; ++j)
      if (keys[size_t(j)] == keys[size_t(i)]) t[size_t(i * B + j)] = 1.0f / float(n);
  }
  return from_vector(t, {B, B});
}

inline Tensor symmetric_infonce(const Tensor& logits, const Tensor& target) {
  return (cross_entropy(logits, target) + cross_entropy(logits.t(), target)) * 0.5;
}

// ---- classification: a linear head on the image embedding ----
class ClassificationTask : public Task {
 public:
  ClassificationTask(TaskModel& m, const syn::ClassificationSet& d, std::vector<int64_t> train_rows)
      : m_(m), d_(d), train_(std::move(train_rows)) {
    head_ = std::dynamic_pointer_cast<nn::Linear>(m.head);
    MC_CHECK(head_, "demo classification: the head must be a Linear");
  }
  int64_t size(const std::string& s) const override {
    return s == "train" ? int64_t(train_.size()) : s == "val" ? d_.val.size() : d_.test.size();
  }
  ojson describe() const override { return {{"train", size("train")}, {"val", size("val")}, {"test", size("test")}}; }
  std::any make_batch(const std::vector<int64_t>& idx) const override {
    std::vector<int64_t> r, y;
    for (int64_t i : idx) r.push_back(train_[size_t(i)]), y.push_back(d_.train.labels[size_t(train_[size_t(i)])]);
    return std::make_pair(rows(d_.train.pixels, r), from_vector(y, {int64_t(y.size())}));
  }
  Tensor loss(const std::any& b) override {
    const auto& [x, y] = std::any_cast<const std::pair<Tensor, Tensor>&>(b);
    return cross_entropy(head_->forward(m_.encoder->encode_image(x)), y);
  }
  Evaluation evaluate(const std::string& s, bool) override {
    const syn::ImageSplit& sp = s == "val" ? d_.val : d_.test;
    NoGradGuard ng;
    Tensor logits = head_->forward(embed_images(*m_.encoder, sp.pixels, 128));
    return score(logits, sp.labels);
  }
  // Metrics of class logits [N, C]: auc (one-vs-rest macro), accuracy, f1 (weighted); loss = mean CE.
  static Evaluation score(const Tensor& logits, const std::vector<int64_t>& labels) {
    Evaluation e;
    Tensor y = from_vector(labels, {int64_t(labels.size())});
    e.loss = cross_entropy(logits, y).item<double>();
    e.count = int64_t(labels.size());
    const ClassificationMetrics m = classification_metrics(Matrix::from_tensor(softmax(logits, -1)), labels);
    e.metrics = {{"auc", m.auc}, {"accuracy", m.accuracy}, {"f1", m.f1}};
    return e;
  }

 private:
  TaskModel& m_;
  const syn::ClassificationSet& d_;
  std::vector<int64_t> train_;
  std::shared_ptr<nn::Linear> head_;
};

// ---- retrieval: symmetric InfoNCE between scans and their reports ----
class RetrievalTask : public Task {
 public:
  RetrievalTask(TaskModel& m, const syn::RetrievalSet& d)
      : m_(m), d_(d), tokens_(m.encoder->tokenize(d.train.captions)) {}
  ojson describe() const override { return {{"train", size("train")}, {"val", size("val")}, {"test", size("test")}}; }
  int64_t size(const std::string& s) const override { return split(s).size(); }
  std::any make_batch(const std::vector<int64_t>& idx) const override {
    std::vector<std::string> keys;
    for (int64_t i : idx) keys.push_back(d_.train.captions[size_t(i)]);
    models::TokenBatch tb = pretrain_detail::trim({rows(tokens_.input_ids, idx), rows(tokens_.attention_mask, idx)});
    return Batch{rows(d_.train.pixels, idx), tb.input_ids, tb.attention_mask, content_targets(keys)};
  }
  Tensor loss(const std::any& b) override {
    const Batch& x = std::any_cast<const Batch&>(b);
    models::DualEncoder& enc = *m_.encoder;
    return symmetric_infonce(enc.logits(enc.encode_image(x.pixels), enc.encode_text(x.ids, x.mask)), x.target);
  }
  Evaluation evaluate(const std::string& s, bool) override {
    const syn::ImageSplit& sp = split(s);
    NoGradGuard ng;
    models::DualEncoder& enc = *m_.encoder;
    Tensor img = embed_images(enc, sp.pixels, 128), txt = embed_texts(enc, sp.captions, 128);
    Evaluation e;
    e.count = sp.size();
    e.loss = symmetric_infonce(enc.logits(img, txt), content_targets(sp.captions)).item<double>();
    Tensor sim = matmul(normalize(img, -1), normalize(txt, -1).t());
    const RetrievalMetrics r =
        recall_at_k(Matrix::from_tensor(sim), gt_from_keys(sp.captions, sp.captions), {1, 5, 10});
    e.metrics = {{"r@1", r.recall[0]}, {"r@5", r.recall[1]}, {"r@10", r.recall[2]}};
    return e;
  }

 private:
  struct Batch {
    Tensor pixels, ids, mask, target;
  };
  const syn::ImageSplit& split(const std::string& s) const {
    return s == "train" ? d_.train : s == "val" ? d_.val : d_.test;
  }
  TaskModel& m_;
  const syn::RetrievalSet& d_;
  models::TokenBatch tokens_;
};

// ---- VQA: the BAN head over the pooled image embedding and the question's token states ----
class VqaTask : public Task {
 public:
  VqaTask(TaskModel& m, const syn::VqaSet& d) : m_(m), d_(d) {
    ban_ = std::dynamic_pointer_cast<BanHead>(m.head);
    MC_CHECK(ban_, "demo vqa: the head must be a BanHead");
    for (const syn::VqaSplit* s : {&d.train, &d.val, &d.test}) {
      Encoded e;
      std::vector<std::string> q;
      std::vector<int64_t> img, ans;
      for (const syn::VqaQuestion& it : s->items) {
        q.push_back(it.question);
        img.push_back(it.image);
        ans.push_back(d.answers.index(it.answer));
        e.types.push_back(it.answer_type == data::AnswerType::Closed ? AnswerType::closed : AnswerType::open);
      }
      e.tokens = m.encoder->tokenize(q);
      e.image = from_vector(img, {int64_t(img.size())});
      e.answers = ans;
      enc_.push_back(std::move(e));
    }
  }
  int64_t size(const std::string& s) const override { return split(s).size(); }
  std::any make_batch(const std::vector<int64_t>& idx) const override { return batch(0, idx); }
  ojson describe() const override { return {{"train", size("train")}, {"val", size("val")}, {"test", size("test")}}; }
  Tensor loss(const std::any& b) override {
    const Batch& x = std::any_cast<const Batch&>(b);
    return cross_entropy(forward(x), x.answers);
  }
  Evaluation evaluate(const std::string& s, bool) override {
    const int k = s == "train" ? 0 : s == "val" ? 1 : 2;
    NoGradGuard ng;
    std::vector<Tensor> parts;
    const int64_t n = split(s).size();
    for (int64_t b = 0; b < n; b += 128) {
      std::vector<int64_t> idx;
      for (int64_t i = b; i < std::min(n, b + 128); ++i) idx.push_back(i);
      parts.push_back(forward(batch(k, idx)));
    }
    Tensor logits = cat(parts, 0);
    const Encoded& e = enc_[size_t(k)];
    Evaluation ev;
    ev.count = n;
    ev.loss = cross_entropy(logits, from_vector(e.answers, {n})).item<double>();
    const VqaMetrics m = vqa_metrics(argmax_rows(Matrix::from_tensor(logits)), e.answers, e.types);
    ev.metrics = {
        {"accuracy", m.accuracy}, {"f1", m.f1}, {"acc_closed", m.accuracy_closed}, {"acc_open", m.accuracy_open}};
    return ev;
  }

 private:
  struct Encoded {
    models::TokenBatch tokens;
    Tensor image;
    std::vector<int64_t> answers;
    std::vector<AnswerType> types;
  };
  struct Batch {
    Tensor pixels, ids, mask, answers;
  };
  const syn::VqaSplit& split(const std::string& s) const {
    return s == "train" ? d_.train : s == "val" ? d_.val : d_.test;
  }
  Batch batch(int k, const std::vector<int64_t>& idx) const {
    const Encoded& e = enc_[size_t(k)];
    const syn::VqaSplit& sp = k == 0 ? d_.train : k == 1 ? d_.val : d_.test;
    std::vector<int64_t> ans;
    for (int64_t i : idx) ans.push_back(e.answers[size_t(i)]);
    models::TokenBatch tb = pretrain_detail::trim({rows(e.tokens.input_ids, idx), rows(e.tokens.attention_mask, idx)});
    return {index_select(sp.pixels, 0, rows(e.image, idx)), tb.input_ids, tb.attention_mask,
            from_vector(ans, {int64_t(ans.size())})};
  }
  Tensor forward(const Batch& x) {
    models::DualEncoder& enc = *m_.encoder;
    Tensor v = enc.encode_image(x.pixels).unsqueeze(1);
    Tensor q = enc.text_tokens(x.ids, x.mask);
    return ban_->forward(v, q, x.mask);
  }
  TaskModel& m_;
  const syn::VqaSet& d_;
  std::shared_ptr<BanHead> ban_;
  std::vector<Encoded> enc_;
};

// A copy of a pre-trained tiny model (same card, same weights, vocabulary attached).
inline std::shared_ptr<models::DualEncoder> clone(const models::DualEncoder& src, uint64_t seed) {
  auto m = make_tiny_model(src.card().name, seed);
  m->load_state_dict(src.state_dict());
  m->eval();
  return m;
}

// The first round(p * n_c) training rows of every class c (the rows are in a seeded shuffled order).
inline std::vector<int64_t> stratified(const std::vector<int64_t>& labels, double p) {
  std::map<int64_t, std::vector<int64_t>> by;
  for (size_t i = 0; i < labels.size(); ++i) by[labels[i]].push_back(int64_t(i));
  std::vector<int64_t> out;
  for (const auto& [c, v] : by) {
    const size_t k = std::max<size_t>(1, size_t(std::llround(p * double(v.size()))));
    out.insert(out.end(), v.begin(), v.begin() + std::min(k, v.size()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// A fraction as the tables print it: 0.5625 -> "56.3 %".
inline std::string pct(double v) { return fmt("%.1f %%", std::round(v * 1000) / 10); }

// The demo's training settings, per task and strategy (small models learn fast: higher rates than the
// paper's, a cosine schedule, early stopping on the validation loss).
inline TrainConfig train_config(const std::string& task, const std::string& strategy, double scale) {
  TrainConfig t;
  t.optimizer = "adamw";
  t.schedule = "cosine";
  t.epochs = std::max<int64_t>(2, std::llround((task == "vqa" ? 12 : 16) * std::min(1.0, scale * 2)));
  t.batch_size = task == "vqa" ? 64 : 32;
  t.patience = 4;
  t.weight_decay = 1e-4;
  t.lr = task == "vqa" ? 2e-3 : strategy == "partial" ? 3e-3 : 1e-3;
  t.encoder_lr = 3e-4;
  t.encoder_weight_decay = 1e-3;
  t.head_lr = task == "vqa" ? 2e-3 : 1e-3;
  t.head_weight_decay = 0;
  t.grad_clip = 1.0;
  return t;
}

struct Pretrained {
  std::string name;  // table label
  std::shared_ptr<models::DualEncoder> pretrained;
};

}  // namespace demo_detail

// Runs the miniature study and prints its progress and tables to `out` (see the top of this file).
inline DemoResult run_demo(const DemoOptions& opt, std::ostream& out) {
  namespace dd = demo_detail;
  namespace syn = data::synthetic;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(clock::now() - t0).count(); };
  auto n = [&](int64_t v) { return std::max<int64_t>(8, std::llround(double(v) * opt.scale)); };

  out << "mc demo: the study of \"General or Medical CLIP, Which one Shall We Choose?\" IN MINIATURE.\n"
         "Two tiny dual encoders (ViT + BERT, ~0.23 M parameters each) are pre-trained by mc itself, one on\n"
         "generated \"general\" pictures (coloured shapes), one on generated \"medical-like\" chest scans with\n"
         "short reports; then both go through zero-shot, partial, full and LoRA fine-tuning on a medical-like\n"
         "classification, retrieval and VQA task, and the paper's tables are filled in. Everything is generated\n"
         "and computed offline on the CPU; the numbers are about these toy models, NOT the paper's results.\n\n";
  out.flush();

  syn::SyntheticOptions so;
  so.seed = opt.seed;
  so.pretrain_pairs = n(3072);
  so.cls_train = n(400), so.cls_val = n(200), so.cls_test = n(400);
  so.ret_train = n(400), so.ret_val = n(100), so.ret_test = n(200);
  so.vqa_train_images = n(200), so.vqa_val_images = n(60), so.vqa_test_images = n(120);
  const syn::PairSet general = syn::make_pairs(syn::Domain::General, so.pretrain_pairs, so.seed);
  const syn::PairSet medical = syn::make_pairs(syn::Domain::Medical, so.pretrain_pairs, so.seed);
  const syn::ClassificationSet cls = syn::make_classification(so);
  const syn::RetrievalSet ret = syn::make_retrieval(so);
  const syn::VqaSet vqa = syn::make_vqa(so);
  out << "data: " << so.pretrain_pairs << " image-caption pairs per domain for pre-training, e.g.\n"
      << "  general: \"" << general.captions[0] << "\", \"" << general.captions[1] << "\"\n"
      << "  medical: \"" << medical.captions[0] << "\", \"" << medical.captions[1] << "\"\n"
      << "downstream (medical-like): classification " << cls.train.size() << "/" << cls.val.size() << "/"
      << cls.test.size() << " scans (train/val/test, 4 findings), retrieval " << ret.train.size() << "/"
      << ret.val.size() << "/" << ret.test.size() << " scan-report pairs, VQA " << vqa.train.size() << "/"
      << vqa.val.size() << "/" << vqa.test.size() << " questions (" << vqa.answers.size() << " answers)  ["
      << dd::fmt("%.1f s", elapsed()) << "]\n\n";

  // ---- pre-training ----
  std::vector<dd::Pretrained> models = {{"mini-CLIP", nullptr}, {"mini-MedCLIP", nullptr}};
  std::vector<ResultRecord> recs;
  std::vector<Series> pre_curves;
  for (int k = 0; k < 2; ++k) {
    const syn::PairSet& pairs = k == 0 ? general : medical;
    auto m = make_tiny_model(k == 0 ? "mini-clip" : "mini-medclip", opt.seed);
    PretrainConfig pc;
    pc.seed = opt.seed;
    pc.epochs = std::max<int64_t>(2, std::llround(10 * std::min(1.0, opt.scale * 2)));
    pc.batch = 64;
    pc.lr = 3e-3;
    pc.log_every = 0;
    const PretrainResult r = pretrain_clip(*m, pairs, pc);
    out << "pre-training " << models[size_t(k)].name << " on the " << syn::domain_name(pairs.domain)
        << " domain: " << m->num_parameters() << " parameters, " << r.steps << " steps, contrastive loss "
        << dd::fmt("%.2f", r.first_loss) << " -> " << dd::fmt("%.2f", r.final_loss) << " (chance "
        << dd::fmt("%.2f", std::log(double(pc.batch))) << ")  [" << dd::fmt("%.1f s", r.seconds) << "]\n";
    out.flush();
    std::vector<double> ep;
    for (size_t e = 0; e < r.epoch_loss.size(); ++e) ep.push_back(double(e + 1));
    pre_curves.push_back(
        {models[size_t(k)].name + " (" + syn::domain_name(pairs.domain) + " pairs)", ep, r.epoch_loss});
    models[size_t(k)].pretrained = m;
  }
  out << "\n";

  auto record = [&](const std::string& model, const std::string& strategy, const std::string& task,
                    const std::string& dataset, const ojson& metrics, double pct) {
    ResultRecord r;
    r.model = model, r.strategy = strategy, r.task = task, r.dataset = dataset, r.percentage = pct;
    for (auto it = metrics.begin(); it != metrics.end(); ++it) r.metrics[it.key()] = report_detail::number_or_nan(*it);
    r.extra = ojson::object();
    recs.push_back(r);
    return &recs.back();
  };
  auto line = [&](const std::string& what, const std::string& model, const std::string& strategy,
                  const std::string& extra, double secs) {
    char b[200];
    std::snprintf(b, sizeof b, "  %-16s %-13s %-9s %s  [%.1f s]\n", what.c_str(), model.c_str(), strategy.c_str(),
                  extra.c_str(), secs);
    out << b;
    out.flush();
  };

  // Fine-tunes a copy of `m` with `strategy` on one task; returns the test evaluation and the history.
  auto finetune = [&](const dd::Pretrained& m, const std::string& task, const std::string& strategy, double pct,
                      FitResult* fit_out, Tensor* test_logits) -> Evaluation {
    auto enc = dd::clone(*m.pretrained, opt.seed);
    manual_seed(opt.seed);
    std::shared_ptr<nn::Module> head;
    if (task == "classification") head = std::make_shared<nn::Linear>(enc->card().embed_dim, cls.num_classes());
    if (task == "vqa") {
      BanConfig bc;
      bc.v_dim = enc->card().embed_dim;
      bc.q_dim = bc.hidden = enc->card().text.bert.hidden_size;
      bc.n_answers = vqa.answers.size();
      bc.glimpses = 2;
      bc.dropout_att = bc.dropout_cls = 0.2;
      head = std::make_shared<BanHead>(bc);
    }
    TaskModel tm(enc, head);
    std::unique_ptr<Task> t;
    if (task == "classification")
      t = std::make_unique<dd::ClassificationTask>(tm, cls, dd::stratified(cls.train.labels, pct));
    else if (task == "retrieval")
      t = std::make_unique<dd::RetrievalTask>(tm, ret);
    else
      t = std::make_unique<dd::VqaTask>(tm, vqa);
    Experiment e;
    e.name = "demo";
    e.source = "demo";
    e.task = task;
    e.strategy.name = strategy;
    e.train = dd::train_config(task, strategy, opt.scale);
    e.seed = opt.seed;
    const StrategyPlan plan = apply_strategy(tm, e, used_parameters(*t, tm));
    FitOptions fo;
    fo.progress = "off";
    *fit_out = fit(*t, tm, plan, e.train, opt.seed, fo);
    set_training_mode(tm, false);
    Evaluation ev = t->evaluate("test", false);
    if (test_logits && task == "classification") {
      NoGradGuard ng;
      *test_logits = std::dynamic_pointer_cast<nn::Linear>(head)->forward(embed_images(*enc, cls.test.pixels, 128));
    }
    ev.extra["trainable"] = plan.trainable;
    return ev;
  };
  auto roc_json = [&](const Tensor& logits) {
    // Micro-averaged one-vs-rest ROC of the 4-class probabilities.
    const Matrix p = Matrix::from_tensor(softmax(logits, -1));
    std::vector<double> s;
    std::vector<int64_t> y;
    for (int64_t i = 0; i < p.rows; ++i)
      for (int64_t c = 0; c < p.cols; ++c) s.push_back(p(i, c)), y.push_back(cls.test.labels[size_t(i)] == c);
    const RocCurve rc = roc_curve(s, y);
    return ojson{{"fpr", rc.fpr}, {"tpr", rc.tpr}};
  };
  auto summary = [&](const Evaluation& ev, const FitResult& f) {
    std::string s;
    for (auto it = ev.metrics.begin(); it != ev.metrics.end(); ++it)
      if (it->is_number()) s += it.key() + " " + dd::fmt("%.3f", it->get<double>()) + "  ";
    if (ev.extra.contains("trainable"))
      s += dd::fmt("(%.0f trainable, ", ev.extra["trainable"].get<double>()) + std::to_string(f.epochs_completed) +
           " epochs)";
    return s;
  };

  const std::string kCls = "chest-findings", kRet = "chest-reports", kVqa = "chest-vqa";
  const std::vector<std::string> strategies = {"partial", "full", "lora"};

  // ---- classification ----
  out << "classification (4 findings; chance accuracy 0.25):\n";
  for (const dd::Pretrained& m : models) {
    const auto s0 = clock::now();
    Tensor scores = zero_shot_scores(*m.pretrained, cls.test.pixels, cls.prompt_sets) * m.pretrained->zero_shot_scale();
    Evaluation ev = dd::ClassificationTask::score(scores, cls.test.labels);
    ResultRecord* r = record(m.name, "zeroshot", "classification", kCls, ev.metrics, 1.0);
    r->extra["roc"] = roc_json(scores);
    line("", m.name, "zeroshot", summary(ev, {}), std::chrono::duration<double>(clock::now() - s0).count());
    for (const std::string& s : strategies) {
      const auto s1 = clock::now();
      FitResult f;
      Tensor logits;
      Evaluation e2 = finetune(m, "classification", s, 1.0, &f, &logits);
      r = record(m.name, s, "classification", kCls, e2.metrics, 1.0);
      r->extra["history"] = f.history;
      r->extra["roc"] = roc_json(logits);
      line("", m.name, s, summary(e2, f), std::chrono::duration<double>(clock::now() - s1).count());
    }
  }
  // ---- retrieval ----
  double chance_r1 = 0;  // a random ranking's recall@1: the share of the pool with the query's content
  for (const std::string& k : ret.test.captions)
    chance_r1 += double(std::count(ret.test.captions.begin(), ret.test.captions.end(), k)) / double(ret.test.size());
  chance_r1 /= double(ret.test.size());
  out << "\nretrieval (scan -> report, " << ret.test.size() << " reports in the test pool; chance r@1 "
      << dd::fmt("%.3f", chance_r1) << "):\n";
  for (const dd::Pretrained& m : models) {
    const auto s0 = clock::now();
    {
      auto enc = dd::clone(*m.pretrained, opt.seed);
      TaskModel tm(enc, nullptr);
      dd::RetrievalTask t(tm, ret);
      Evaluation ev = t.evaluate("test", false);
      record(m.name, "zeroshot", "retrieval", kRet, ev.metrics, 1.0);
      line("", m.name, "zeroshot", summary(ev, {}), std::chrono::duration<double>(clock::now() - s0).count());
    }
    for (const std::string& s : strategies) {
      const auto s1 = clock::now();
      FitResult f;
      Evaluation ev = finetune(m, "retrieval", s, 1.0, &f, nullptr);
      record(m.name, s, "retrieval", kRet, ev.metrics, 1.0)->extra["history"] = f.history;
      line("", m.name, s, summary(ev, f), std::chrono::duration<double>(clock::now() - s1).count());
    }
  }
  // ---- VQA ----
  double vqa_majority = 0;  // the most frequent training answer of each question, on the test set
  {
    std::map<std::string, std::map<std::string, int>> freq;
    for (const auto& q : vqa.train.items) ++freq[q.question][q.answer];
    int64_t hit = 0;
    for (const auto& q : vqa.test.items) {
      const auto& f = freq[q.question];
      auto best =
          std::max_element(f.begin(), f.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
      hit += best != f.end() && best->first == q.answer;
    }
    vqa_majority = double(hit) / double(vqa.test.size());
    out << "\nVQA (BAN head; closed yes/no and open questions; answering each question with its most frequent\n"
           "training answer scores accuracy "
        << dd::fmt("%.3f", vqa_majority) << "):\n";
  }
  for (const dd::Pretrained& m : models)
    for (const std::string& s : strategies) {
      const auto s1 = clock::now();
      FitResult f;
      Evaluation ev = finetune(m, "vqa", s, 1.0, &f, nullptr);
      record(m.name, s, "vqa", kVqa, ev.metrics, 1.0)->extra["history"] = f.history;
      line("", m.name, s, summary(ev, f), std::chrono::duration<double>(clock::now() - s1).count());
    }
  // ---- Table 6: fractions of the classification training set ----
  out << "\nclassification with a fraction of the training set (full and LoRA):\n";
  for (double p : {0.05, 0.1, 0.25, 0.5})
    for (const dd::Pretrained& m : models)
      for (const std::string& s : {std::string("full"), std::string("lora")}) {
        const auto s1 = clock::now();
        FitResult f;
        Evaluation ev = finetune(m, "classification", s, p, &f, nullptr);
        record(m.name, s, "classification", kCls, ev.metrics, p)->extra["history"] = f.history;
        line(report_detail::percent_label(p), m.name, s, summary(ev, f),
             std::chrono::duration<double>(clock::now() - s1).count());
      }

  // ---- tables ----
  out << "\n================ the paper's tables, in miniature (values in %) ================\n\n";
  for (const Table& t : paper_tables(recs)) out << to_markdown(t) << "\n";

  // ---- what came out ----
  auto get = [&](const std::string& model, const std::string& strategy, const std::string& ds,
                 const std::string& metric, double pct = 1.0) {
    for (const ResultRecord& r : recs)
      if (r.model == model && r.strategy == strategy && r.dataset == ds && std::fabs(r.percentage - pct) < 1e-9)
        return r.metric(metric);
    return report_detail::kNaN;
  };
  auto best_ft = [&](const std::string& model, const std::string& ds, const std::string& metric) {
    double b = -1;
    for (const std::string& s : strategies) b = std::max(b, get(model, s, ds, metric));
    return b;
  };
  const std::string G = models[0].name, M = models[1].name;
  auto cmp = [](double a, double b) { return a > b + 1e-9 ? "above" : a < b - 1e-9 ? "below" : "equal to"; };
  out << "What this run shows (computed from the numbers above):\n"
      << "- zero-shot classification accuracy: " << G << " " << dd::pct(get(G, "zeroshot", kCls, "accuracy")) << ", "
      << M << " " << dd::pct(get(M, "zeroshot", kCls, "accuracy"))
      << " (chance 25 %): the model pre-trained on the medical-like domain is "
      << cmp(get(M, "zeroshot", kCls, "accuracy"), get(G, "zeroshot", kCls, "accuracy")) << " the general one"
      << (std::fabs(get(G, "zeroshot", kCls, "accuracy") - 0.25) < 0.05
              ? " (which never saw a scan nor the words of a report, and stays at chance).\n"
              : ".\n")
      << "- zero-shot retrieval R@1: " << G << " " << dd::pct(get(G, "zeroshot", kRet, "r@1")) << ", " << M << " "
      << dd::pct(get(M, "zeroshot", kRet, "r@1")) << ".\n"
      << "- fine-tuning (best of partial / full / LoRA) lifts classification accuracy to "
      << dd::pct(best_ft(G, kCls, "accuracy")) << " (" << G << ") and " << dd::pct(best_ft(M, kCls, "accuracy")) << " ("
      << M << "); retrieval R@1 to " << dd::pct(best_ft(G, kRet, "r@1")) << " and " << dd::pct(best_ft(M, kRet, "r@1"))
      << "; VQA accuracy is " << dd::pct(best_ft(G, kVqa, "accuracy")) << " and "
      << dd::pct(best_ft(M, kVqa, "accuracy"))
      << " (the most frequent answer to each question: " << dd::pct(vqa_majority) << ").\n"
      << "- with 10 % of the training scans, full fine-tuning reaches "
      << dd::pct(get(G, "full", kCls, "accuracy", 0.1)) << " (" << G << ") and "
      << dd::pct(get(M, "full", kCls, "accuracy", 0.1)) << " (" << M << "); with all of them "
      << dd::pct(get(G, "full", kCls, "accuracy")) << " and " << dd::pct(get(M, "full", kCls, "accuracy")) << ".\n";

  if (!opt.out.empty()) {
    std::vector<std::string> files =
        write_report(recs, opt.out, "mc demo: the study in miniature",
                     "Tiny models pre-trained by mc on generated data; not the paper's results.");
    PlotOptions po;
    po.title = "Contrastive pre-training";
    po.x_label = "epoch";
    po.y_label = "InfoNCE loss";
    write_text_file(opt.out + "/plots/pretraining.svg", line_plot_svg(po, pre_curves));
    out << "\ntables (Markdown + CSV) and plots (SVG: pre-training and fine-tuning losses, ROC curves) written to "
        << opt.out << "/ (" << files.size() + 1 << " files)\n";
  }
  DemoResult res;
  res.records = recs;
  res.seconds = elapsed();
  out << "\ndemo finished in " << dd::fmt("%.0f s", res.seconds) << ".\n\n"
      << "The real study runs the same code on the paper's models and data:\n"
      << "  1. download the checkpoints (weights/README.md: OpenAI CLIP ViT-B/32, BiomedCLIP, PMC-CLIP, CXR-CLIP)\n"
      << "     and the data (MedMNIST .npz files, ROCO, VQA-RAD, SLAKE);\n"
      << "  2. mc convert CHECKPOINT --card weights/clip-vit-b32.json --tokenizer VOCAB -o clip-vit-b32.safetensors\n"
      << "  3. mc run EXPERIMENT.json     one model x task x data set x strategy -> runs/<name>/results.json\n"
      << "  4. mc sweep SWEEP.json        the grid -> Tables 1-6 (Markdown, CSV) and SVG plots\n";
  return res;
}

}  // namespace mc::tasks
