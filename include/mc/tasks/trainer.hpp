// mc/tasks/trainer.hpp — the training loop shared by the study's tasks.
//
//   Task& task = ...;                            // classification / retrieval / vqa (mc/tasks/task.hpp)
//   StrategyPlan plan = apply_strategy(model, exp, used_parameters(task, model));
//   FitOptions o;  o.dir = "runs/x";  o.resume = true;
//   FitResult r = fit(task, model, plan, exp.train, exp.seed, o);
//
// Per epoch: the training samples in the loader's seeded order for that epoch (data::DataLoader, shuffle on,
// the last batch shorter), for each batch forward + loss, backward, optional global-norm clipping
// (train.grad_clip), the optimizer step, and the schedule's step (per batch: constant, or cosine to
// min_lr_ratio, either after warmup_steps of linear warm-up). Then, when the task has a validation split,
// its loss and metrics; early stopping keeps the weights of the lowest validation loss (an improvement is
// a loss below best - min_delta) and stops after `patience` epochs without one (0: never); at the end the
// best weights are restored (restore_best). Without a validation split the last weights are kept.
//
// Files in FitOptions::dir, each written atomically after every epoch:
//   log.jsonl               one JSON object per epoch: epoch, train_loss, val_loss, val (metrics), lr (per
//                           group), seconds, samples_per_second, best (bool)
//   checkpoint.safetensors  the trainable state: "state.<name>" for every trainable parameter and every
//                           persistent buffer (batch-norm statistics), "best.<name>" the same at the best
//                           epoch so far, "optim.<...>" the optimizer state; metadata: mc.format
//                           "mc.train_checkpoint.v1", mc.epoch (epochs completed), mc.step (scheduler
//                           step), mc.rng (seed and offset of mc's default generator, which draws dropout
//                           masks), mc.best_epoch, mc.best_val_loss, mc.bad_epochs, mc.finished,
//                           mc.stopped_early, mc.history (the log), mc.config (the experiment, checked on
//                           resume), mc.seconds
// Resume (FitOptions::resume) loads the checkpoint into a model built the same way (same experiment:
// mc.config must match except output, progress, device and num_workers), restores the optimizer,
// schedule, random generator, early-stopping state and log, and continues with the next epoch; the data
// order of an epoch
// depends only on (seed, epoch), so an interrupted and resumed run ends with the same weights as an
// uninterrupted one. Without a checkpoint, resume starts from scratch. A finished checkpoint returns at
// once (with the best weights restored).
//
// Progress (FitOptions::progress): "bar" redraws one line (epoch, batches, loss, samples/s, ETA) while an
// epoch runs; "plain" writes one line per epoch (losses, a few validation metrics, lr, time, samples/s,
// ETA of the run); "auto" is bar when the stream is a terminal, plain otherwise; "off" writes nothing.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mc/autograd/engine.hpp"
#include "mc/data/loader.hpp"
#include "mc/io/safetensors.hpp"
#include "mc/optim/optimizer.hpp"
#include "mc/optim/schedule.hpp"
#include "mc/tasks/strategy.hpp"
#include "mc/tasks/task.hpp"

namespace mc::tasks {

struct FitOptions {
  std::string dir;               // output folder ("" = write no files)
  bool resume = false;
  int64_t stop_after = 0;        // > 0: return after this many epochs of this call (as if interrupted)
  std::string config;            // the experiment JSON, stored in the checkpoint and compared on resume
  std::ostream* out = nullptr;   // progress (null: none)
  std::string progress = "auto"; // auto | bar | plain | off
};

struct FitResult {
  int64_t epochs_completed = 0;  // in total, including epochs before a resume
  int64_t resumed_from = 0;      // epochs completed when this call started
  int64_t best_epoch = 0;        // 1-based; 0 = no validation
  double best_val_loss = std::numeric_limits<double>::quiet_NaN();
  bool stopped_early = false, finished = false;
  int64_t steps = 0;             // optimizer steps in total
  double seconds = 0;            // training time in total (all calls)
  double samples_per_second = 0; // of this call's training epochs
  ojson history = ojson::array();
};

inline constexpr const char* kCheckpointFormat = "mc.train_checkpoint.v1";

namespace trainer_detail {

inline std::string num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}
inline double parse_num(const std::map<std::string, std::string>& m, const std::string& k, const std::string& file) {
  auto it = m.find(k);
  MC_CHECK(it != m.end(), file, ": checkpoint metadata '", k, "' is missing");
  try {
    return std::stod(it->second);
  } catch (...) {
    fail(file, ": checkpoint metadata '", k, "' is not a number ('", it->second, "')");
  }
}
inline std::string clock(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  char b[32];
  if (t >= 3600) std::snprintf(b, sizeof b, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  else std::snprintf(b, sizeof b, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return b;
}

// The experiment JSON without the keys that may change between an interrupted run and its resume.
inline ojson comparable_config(const std::string& text) {
  if (text.empty()) return ojson();
  ojson j = ojson::parse(text);
  if (j.is_object()) {
    j.erase("output");
    j.erase("progress");
    j.erase("device");
    if (j.contains("train") && j["train"].is_object()) j["train"].erase("num_workers");
  }
  return j;
}

// The first key path where a and b differ ("" = equal).
inline std::string first_difference(const ojson& a, const ojson& b, const std::string& path = "") {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string p = path.empty() ? it.key() : path + "." + it.key();
      if (!b.contains(it.key())) return p;
      std::string d = first_difference(it.value(), b[it.key()], p);
      if (!d.empty()) return d;
    }
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key())) return path.empty() ? it.key() : path + "." + it.key();
    return "";
  }
  return a == b ? "" : (path.empty() ? "(top level)" : path);
}

inline void write_text_atomic(const std::string& path, const std::string& text) {
  io::write_file_atomic(path, [&](std::FILE* f) { io::write_bytes(f, text.data(), text.size(), path); });
}

// Named handles of the trainable state: trainable parameters and persistent buffers.
inline nn::NamedTensors trainable_state(const nn::Module& m) {
  nn::NamedTensors out;
  for (const auto& [n, t] : m.named_parameters())
    if (t.requires_grad()) out.emplace_back(n, t);
  for (const auto& [n, t] : m.named_buffers("", true)) out.emplace_back(n, t);
  return out;
}

inline nn::NamedTensors clone_all(const nn::NamedTensors& v) {
  NoGradGuard ng;
  nn::NamedTensors out;
  for (const auto& [n, t] : v) out.emplace_back(n, t.detach().clone());
  return out;
}

inline void copy_into(const nn::NamedTensors& dst, const nn::NamedTensors& src, const std::string& what) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : src) given[n] = &t;
  MC_CHECK(given.size() == dst.size(), what, ": holds ", given.size(), " tensors of the trainable state, the model has ",
           dst.size(), " (a different strategy or model?)");
  NoGradGuard ng;
  for (const auto& [n, t] : dst) {
    auto it = given.find(n);
    MC_CHECK(it != given.end(), what, ": tensor '", n, "' of the trainable state is missing");
    MC_CHECK(it->second->shape() == t.shape(), what, ": '", n, "' has shape ", shape_str(it->second->shape()),
             ", the model's is ", shape_str(t.shape()));
    Tensor d = t;
    copy_(d, it->second->to(t.device()));
  }
}

inline std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& kind, std::vector<optim::ParamGroup> groups) {
  if (kind == "adam") return std::make_unique<optim::Adam>(std::move(groups));
  if (kind == "adamw") return std::make_unique<optim::AdamW>(std::move(groups));
  if (kind == "adamax") return std::make_unique<optim::Adamax>(std::move(groups));
  if (kind == "sgd") return std::make_unique<optim::SGD>(std::move(groups));
  fail("optimizer: unknown kind '", kind, "'");
}

inline optim::Schedule make_schedule(const TrainConfig& t, int64_t total_steps) {
  const int64_t warm = std::min<int64_t>(t.warmup_steps, total_steps);
  if (t.schedule == "cosine") return optim::warmup_cosine(std::max<int64_t>(1, total_steps), warm, t.min_lr_ratio);
  return warm > 0 ? optim::linear_warmup(warm) : optim::constant_schedule();
}

inline bool is_terminal(const std::ostream* out) {
  if (out == &std::cerr || out == &std::clog) return ::isatty(STDERR_FILENO);
  if (out == &std::cout) return ::isatty(STDOUT_FILENO);
  return false;
}

// A few numeric metrics for a progress line ("auc 0.812  accuracy 0.774").
inline std::string metric_summary(const ojson& m, size_t max_items = 4) {
  std::ostringstream o;
  size_t n = 0;
  for (auto it = m.begin(); it != m.end() && n < max_items; ++it) {
    if (!it.value().is_number_float()) continue;
    char b[64];
    std::snprintf(b, sizeof b, "  %s %.4f", it.key().c_str(), it.value().get<double>());
    o << b;
    ++n;
  }
  return o.str();
}

class Progress {
 public:
  Progress(std::ostream* out, const std::string& mode) : out_(out) {
    if (!out_ || mode == "off") kind_ = Off;
    else if (mode == "bar" || (mode == "auto" && is_terminal(out_))) kind_ = Bar;
    else kind_ = Plain;
  }
  bool on() const { return kind_ != Off; }

  void line(const std::string& s) {
    if (!on()) return;
    clear();
    *out_ << s << "\n";
    out_->flush();
  }

  void start_epoch(int64_t epoch, int64_t epochs, int64_t batches) {
    epoch_ = epoch, epochs_ = epochs, batches_ = batches;
    t0_ = std::chrono::steady_clock::now();
    last_draw_ = t0_ - std::chrono::seconds(1);
  }

  void batch(int64_t done, double mean_loss, int64_t samples) {
    if (kind_ != Bar) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < batches_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const double el = std::chrono::duration<double>(now - t0_).count();
    const int width = 24;
    const int fill = batches_ > 0 ? int(double(width) * double(done) / double(batches_)) : width;
    std::string bar(size_t(fill), '#');
    bar.append(size_t(width - fill), '-');
    char b[256];
    std::snprintf(b, sizeof b, "\repoch %lld/%lld [%s] %lld/%lld  loss %.4f  %.0f samples/s  ETA %s", (long long)epoch_,
                  (long long)epochs_, bar.c_str(), (long long)done, (long long)batches_, mean_loss,
                  el > 0 ? double(samples) / el : 0.0,
                  clock(done > 0 ? el / double(done) * double(batches_ - done) : NAN).c_str());
    *out_ << b << "\033[K";
    out_->flush();
    drawn_ = true;
  }

 private:
  void clear() {
    if (drawn_) *out_ << "\r\033[K";
    drawn_ = false;
  }
  enum Kind { Off, Bar, Plain } kind_ = Off;
  std::ostream* out_ = nullptr;
  int64_t epoch_ = 0, epochs_ = 0, batches_ = 0;
  std::chrono::steady_clock::time_point t0_, last_draw_;
  bool drawn_ = false;
};

}  // namespace trainer_detail

// The names of the parameters the task's training loss reaches: one forward and backward pass on the
// first (up to) two training samples, in eval mode (no batch-norm update, no dropout draw), with every
// parameter temporarily trainable. Gradients are cleared and requires_grad restored afterwards.
inline std::set<std::string> used_parameters(Task& task, TaskModel& model) {
  const nn::NamedTensors params = model.named_parameters();
  std::vector<bool> was;
  for (const auto& [n, t] : params) {
    was.push_back(t.requires_grad());
    Tensor h = t;
    h.requires_grad_(true);
  }
  auto restore = [&] {
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor h = params[i].second;
      h.set_grad(Tensor());
      h.requires_grad_(was[i]);
    }
  };
  std::set<std::string> used;
  try {
    set_training_mode(model, false);
    const std::vector<int64_t> idx = task_util::iota(std::min<int64_t>(2, task.size("train")));
    MC_CHECK(!idx.empty(), "the training split is empty");
    Tensor loss = task.loss(task.make_batch(idx));
    loss.backward();
    for (const auto& [n, t] : params)
      if (t.grad().defined()) used.insert(n);
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return used;
}

// Trains `model` on `task` with the groups of `plan` (see the top of this file).
inline FitResult fit(Task& task, TaskModel& model, const StrategyPlan& plan, const TrainConfig& cfg, uint64_t seed,
                     const FitOptions& opt) {
  namespace td = trainer_detail;
  using clock = std::chrono::steady_clock;
  MC_CHECK(!plan.groups.empty(), "fit: nothing to train (strategy '", plan.name, "')");
  const int64_t n_train = task.size("train");
  MC_CHECK(n_train > 0, "fit: the training split is empty");
  const bool has_val = task.size("val") > 0;

  auto optimizer = td::make_optimizer(cfg.optimizer, plan.groups);
  std::vector<Tensor> trainable;
  for (const auto& g : plan.groups) trainable.insert(trainable.end(), g.params.begin(), g.params.end());

  data::LoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.shuffle = true;
  lo.seed = seed;
  lo.num_workers = int(cfg.num_workers);
  const Task& ctask = task;
  auto loader = data::make_loader(n_train, [&ctask](const std::vector<int64_t>& idx) { return ctask.make_batch(idx); }, lo);
  const int64_t per_epoch = loader.num_batches();
  optim::Scheduler sched(*optimizer, td::make_schedule(cfg, cfg.epochs * per_epoch));

  FitResult res;
  nn::NamedTensors state = td::trainable_state(model);
  nn::NamedTensors best;
  int64_t bad = 0;
  double best_loss = std::numeric_limits<double>::infinity();
  const std::string ckpt = opt.dir.empty() ? "" : data::join_path(opt.dir, "checkpoint.safetensors");
  const std::string log_path = opt.dir.empty() ? "" : data::join_path(opt.dir, "log.jsonl");
  td::Progress progress(opt.out, opt.progress);

  auto rewrite_log = [&]() {
    if (log_path.empty()) return;
    std::string text;
    for (const auto& h : res.history) text += h.dump() + "\n";
    td::write_text_atomic(log_path, text);
  };

  if (opt.resume && !ckpt.empty() && data::file_exists(ckpt)) {
    io::SafetensorsFile f = io::SafetensorsFile::open(ckpt);
    const auto& meta = f.metadata();
    auto fmt = meta.find("mc.format");
    MC_CHECK(fmt != meta.end() && fmt->second == kCheckpointFormat, ckpt, ": not a training checkpoint of mc");
    auto conf = meta.find("mc.config");
    MC_CHECK(conf != meta.end(), ckpt, ": checkpoint metadata 'mc.config' is missing");
    const std::string diff = td::first_difference(td::comparable_config(conf->second), td::comparable_config(opt.config));
    MC_CHECK(diff.empty(), ckpt, ": cannot resume: the experiment differs from the interrupted run's at '", diff,
             "' (start a fresh run without --resume, or use another output folder)");
    nn::NamedTensors st, bst, opt_sd;
    for (const std::string& n : f.names()) {
      if (n.rfind("state.", 0) == 0) st.emplace_back(n.substr(6), f.get(n, true));
      else if (n.rfind("best.", 0) == 0) bst.emplace_back(n.substr(5), f.get(n, true));
      else if (n.rfind("optim.", 0) == 0) opt_sd.emplace_back(n.substr(6), f.get(n, true));
      else fail(ckpt, ": unexpected tensor '", n, "' in the checkpoint");
    }
    td::copy_into(state, st, ckpt);
    if (!bst.empty()) {
      best = td::clone_all(state);
      td::copy_into(best, bst, ckpt + " (best weights)");
    }
    try {
      optimizer->load_state_dict(opt_sd);
    } catch (const Error& e) {
      fail(ckpt, ": optimizer state: ", e.what());
    }
    res.epochs_completed = int64_t(td::parse_num(meta, "mc.epoch", ckpt));
    sched.set_t(int64_t(td::parse_num(meta, "mc.step", ckpt)));
    res.steps = sched.t();
    res.best_epoch = int64_t(td::parse_num(meta, "mc.best_epoch", ckpt));
    best_loss = td::parse_num(meta, "mc.best_val_loss", ckpt);
    res.best_val_loss = res.best_epoch > 0 ? best_loss : std::numeric_limits<double>::quiet_NaN();
    bad = int64_t(td::parse_num(meta, "mc.bad_epochs", ckpt));
    res.seconds = td::parse_num(meta, "mc.seconds", ckpt);
    res.finished = td::parse_num(meta, "mc.finished", ckpt) != 0;
    res.stopped_early = td::parse_num(meta, "mc.stopped_early", ckpt) != 0;
    auto rng = meta.find("mc.rng");
    MC_CHECK(rng != meta.end(), ckpt, ": checkpoint metadata 'mc.rng' is missing");
    const ojson r = ojson::parse(rng->second);
    default_generator().seed = r.at("seed").get<uint64_t>();
    default_generator().offset = r.at("offset").get<uint64_t>();
    auto hist = meta.find("mc.history");
    res.history = hist == meta.end() ? ojson::array() : ojson::parse(hist->second);
    MC_CHECK(res.epochs_completed >= 0 && res.epochs_completed <= cfg.epochs, ckpt, ": checkpoint at epoch ",
             res.epochs_completed, " but the experiment has ", cfg.epochs, " epochs");
    res.resumed_from = res.epochs_completed;
    rewrite_log();
    progress.line("resumed from " + ckpt + " after epoch " + std::to_string(res.epochs_completed));
  } else if (!log_path.empty()) {
    rewrite_log();  // a fresh run starts a fresh log
  }

  auto save_checkpoint = [&]() {
    if (ckpt.empty()) return;
    nn::NamedTensors out;
    for (const auto& [n, t] : state) out.emplace_back("state." + n, t);
    for (const auto& [n, t] : best) out.emplace_back("best." + n, t);
    for (const auto& [n, t] : optimizer->state_dict()) out.emplace_back("optim." + n, t);
    std::map<std::string, std::string> meta{
        {"mc.format", kCheckpointFormat},
        {"mc.epoch", std::to_string(res.epochs_completed)},
        {"mc.step", std::to_string(sched.t())},
        {"mc.rng", ojson{{"seed", default_generator().seed}, {"offset", default_generator().offset}}.dump()},
        {"mc.best_epoch", std::to_string(res.best_epoch)},
        {"mc.best_val_loss", td::num(best_loss)},
        {"mc.bad_epochs", std::to_string(bad)},
        {"mc.finished", res.finished ? "1" : "0"},
        {"mc.stopped_early", res.stopped_early ? "1" : "0"},
        {"mc.history", res.history.dump()},
        {"mc.config", opt.config},
        {"mc.seconds", td::num(res.seconds)}};
    io::save_safetensors(ckpt, out, meta);
  };

  int64_t samples_this_call = 0;
  double seconds_this_call = 0;
  int64_t epochs_this_call = 0;
  while (!res.finished) {
    const int64_t e = res.epochs_completed;  // 0-based epoch to run
    const auto t0 = clock::now();
    set_training_mode(model, true);
    loader.start_epoch(e);
    progress.start_epoch(e + 1, cfg.epochs, per_epoch);
    double loss_sum = 0;
    int64_t seen = 0, done = 0;
    while (auto batch = loader.next()) {
      Tensor loss = task.loss(*batch);
      const double lv = loss.detach().to(Device::cpu()).item<double>();
      MC_CHECK(std::isfinite(lv), "fit: the training loss is ", lv, " at epoch ", e + 1, ", batch ", done + 1,
               " (lower the learning rate or enable grad_clip)");
      optimizer->zero_grad();
      loss.backward();
      if (cfg.grad_clip > 0) optim::clip_grad_norm_(trainable, cfg.grad_clip);
      optimizer->step();
      sched.step();
      ++res.steps;
      // The per-sample mean over the epoch: every batch's mean loss weighted by its size.
      const int64_t nb = std::min<int64_t>(cfg.batch_size, n_train - done * cfg.batch_size);
      loss_sum += lv * double(nb);
      seen += nb;
      ++done;
      progress.batch(done, loss_sum / double(seen), seen);
    }
    const double train_seconds = std::chrono::duration<double>(clock::now() - t0).count();
    samples_this_call += seen;
    seconds_this_call += train_seconds;

    ojson h;
    h["epoch"] = e + 1;
    h["train_loss"] = loss_sum / double(std::max<int64_t>(1, seen));
    bool improved = false;
    if (has_val) {
      set_training_mode(model, false);
      Evaluation ev = task.evaluate("val", false);
      h["val_loss"] = ev.loss;
      h["val"] = ev.metrics;
      if (ev.loss < best_loss - cfg.min_delta) {
        best_loss = ev.loss;
        res.best_epoch = e + 1;
        res.best_val_loss = ev.loss;
        best = td::clone_all(state);
        bad = 0;
        improved = true;
      } else {
        ++bad;
      }
    }
    ojson lrs = ojson::array();
    for (const auto& g : optimizer->groups()) lrs.push_back(g.lr);
    h["lr"] = lrs;
    const double epoch_seconds = std::chrono::duration<double>(clock::now() - t0).count();
    h["seconds"] = epoch_seconds;
    h["samples_per_second"] = train_seconds > 0 ? double(seen) / train_seconds : 0.0;
    h["best"] = improved;
    res.history.push_back(h);
    res.epochs_completed = e + 1;
    res.seconds += epoch_seconds;
    ++epochs_this_call;
    if (has_val && cfg.patience > 0 && bad >= cfg.patience) res.stopped_early = true;
    res.finished = res.stopped_early || res.epochs_completed >= cfg.epochs;
    save_checkpoint();
    if (!log_path.empty()) {
      std::ofstream f(log_path, std::ios::app);
      f << h.dump() << "\n";
      MC_CHECK(f.good(), log_path, ": cannot append to the log");
    }
    if (progress.on()) {
      char b[160];
      std::snprintf(b, sizeof b, "epoch %lld/%lld  train loss %.4f", (long long)(e + 1), (long long)cfg.epochs,
                    h["train_loss"].get<double>());
      std::string s = b;
      if (has_val) {
        std::snprintf(b, sizeof b, "  val loss %.4f%s", h["val_loss"].get<double>(), improved ? " *" : "");
        s += b + td::metric_summary(h["val"]);
      }
      const double remaining = res.finished ? 0.0 : res.seconds / double(res.epochs_completed) * double(cfg.epochs - res.epochs_completed);
      std::snprintf(b, sizeof b, "  lr %.3g  %.1f s  %.0f samples/s  ETA %s", optimizer->groups().front().lr,
                    epoch_seconds, h["samples_per_second"].get<double>(), td::clock(remaining).c_str());
      progress.line(s + b);
      if (res.stopped_early)
        progress.line("early stopping: no improvement of the validation loss for " + std::to_string(bad) +
                      " epochs (best: epoch " + std::to_string(res.best_epoch) + ")");
    }
    if (!res.finished && opt.stop_after > 0 && epochs_this_call >= opt.stop_after) break;
  }
  res.samples_per_second = seconds_this_call > 0 ? double(samples_this_call) / seconds_this_call : 0.0;
  if (res.finished && cfg.restore_best && !best.empty()) td::copy_into(state, best, "best weights");
  return res;
}

}  // namespace mc::tasks
