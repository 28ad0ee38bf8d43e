// mc/tasks/run.hpp — one experiment of the study, end to end: what `mc run EXP.json` does.
//
//   mc::tasks::Experiment e = mc::tasks::Experiment::load("examples/breastmnist-clip-partial.json");
//   mc::tasks::RunOptions o;  o.resume = true;                // mc run --resume
//   mc::tasks::RunResult r = mc::tasks::run_experiment(e, o);
//   double auc = r.results["metrics"]["auc"];
//
// Steps: load the model ("model": a converted file, or a card with random weights seeded by "seed"),
// resolve the family's defaults (mc/tasks/experiment.hpp), seed mc's default generator with "seed", build
// the task (data, head), apply the strategy (printing the count of trainable parameters), train
// (mc/tasks/trainer.hpp; zero-shot skips this), evaluate the test split, and write into the output folder,
// atomically:
//   results.json     one JSON object: name, model (card name), model_path, family, task, dataset (the
//                    study's name: breastmnist, roco-radiology, roco-non-radiology, roco-mixed, vqa-rad,
//                    slake, ...), percentage, strategy, device, metrics (test split; fractions, NaN as
//                    null), test_loss, best_val_loss and val_metrics (at the best epoch, when there is a
//                    validation split),
//                    trainable_parameters, total_parameters, plan (groups, parameters per part, LoRA),
//                    data (split sizes, ...), timing (train_seconds, test_seconds, total_seconds,
//                    samples_per_second, epochs, steps, best_epoch, stopped_early, resumed_from), history (the
//                    per-epoch log), roc (binary classification), config (every setting, defaults filled in)
//   predictions.csv  one row per test sample (columns per task: probabilities / ranks / answers)
// next to the trainer's log.jsonl and checkpoint.safetensors. The experiment's "progress" setting drives
// the messages on RunOptions::out.
#pragma once
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "mc/models/convert.hpp"
#include "mc/tasks/classification.hpp"
#include "mc/tasks/experiment.hpp"
#include "mc/tasks/retrieval.hpp"
#include "mc/tasks/strategy.hpp"
#include "mc/tasks/trainer.hpp"
#include "mc/tasks/vqa.hpp"
#if defined(MC_WITH_CUDA)
#include "mc/cuda/runtime.hpp"
#endif

namespace mc::tasks {

struct RunOptions {
  bool resume = false;            // continue from the output folder's checkpoint (mc run --resume)
  std::string device;             // overrides the experiment's "device" when not empty (mc run --device)
  std::ostream* out = &std::cerr; // messages and progress (null: none)
  int64_t stop_after = 0;         // > 0: stop after this many epochs of this call, as if interrupted
};

struct RunResult {
  bool finished = false;  // false when stopped by stop_after (no results written)
  std::string dir;        // the output folder
  ojson results;          // what results.json holds
  StrategyPlan plan;
  FitResult fit;
};

// The device of a run; an error when this build or machine cannot run it.
inline Device run_device(const std::string& name, const std::string& what) {
  const Device d = Device::parse(name);
  if (d.is_cpu()) return d;
#if defined(MC_WITH_CUDA)
  MC_CHECK(cuda::available(), what, ": device ", d.str(), ": ", cuda::device_name(d.index));
#else
  MC_CHECK(backend_slot(d.type) != nullptr, what, ": device ", d.str(),
           ": this build of mc has no CUDA backend (use cpu)");
#endif
  return d;
}

// The model of an experiment: a converted file, or a card with random weights (seeded with e.seed) and the
// vocabulary file e.vocab when given.
inline std::shared_ptr<models::DualEncoder> load_experiment_model(const Experiment& e) {
  if (!experiment_detail::is_card_path(e.model)) return models::load_model(e.model);
  const models::ModelCard card = models::ModelCard::load(e.model);
  manual_seed(e.seed);
  auto model = std::make_shared<models::DualEncoder>(card);
  if (!e.vocab.empty()) model->set_vocab(models::read_vocab(e.vocab, card));
  model->eval();
  return model;
}

// The task an experiment names, on `device`.
inline std::unique_ptr<Task> make_task(const Experiment& e, std::shared_ptr<models::DualEncoder> enc, Device device) {
  if (e.task == "classification") return std::make_unique<ClassificationTask>(e, std::move(enc), device);
  if (e.task == "retrieval") return std::make_unique<RetrievalTask>(e, std::move(enc), device);
  return std::make_unique<VqaTask>(e, std::move(enc), device);
}

// The study's name of an experiment's data set (the names of the paper's tables).
inline std::string study_dataset_name(const Experiment& e) {
  const DataConfig& d = e.data;
  if (d.dataset == "medmnist") return d.flag.empty() ? data::medmnist_flag_from_path(d.path) : data::ascii_lower(d.flag);
  if (d.dataset == "roco") return d.data_type == "all" ? "roco-mixed" : "roco-" + d.data_type;
  return d.dataset;
}

namespace run_detail {

inline std::string csv(const Evaluation& ev) {
  std::string text;
  auto line = [&](const std::vector<std::string>& fields) {
    for (size_t i = 0; i < fields.size(); ++i) {
      if (i) text += ',';
      text += task_util::csv_field(fields[i]);
    }
    text += "\n";
  };
  line(ev.header);
  for (const auto& r : ev.rows) line(r);
  return text;
}

inline void say(std::ostream* out, const std::string& s) {
  if (out) *out << s << "\n" << std::flush;
}

// "auc 0.8123  accuracy 0.7949 ..." for the numeric metrics.
inline std::string metric_line(const ojson& m) {
  std::string s;
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!it.value().is_number_float()) continue;
    char b[96];
    std::snprintf(b, sizeof b, "%s%s %.4f", s.empty() ? "" : "  ", it.key().c_str(), it.value().get<double>());
    s += b;
  }
  return s;
}

}  // namespace run_detail

// Runs `e` with an already loaded model (which it modifies: adapters, training). See the top of the file.
inline RunResult run_experiment(Experiment e, std::shared_ptr<models::DualEncoder> model, const RunOptions& o) {
  namespace rd = run_detail;
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  MC_CHECK(model, e.source, ": no model");
  resolve(e, model->card());
  if (!o.device.empty()) e.device = o.device;
  const Device device = run_device(e.device, e.source);
  e.device = device.str();
  std::ostream* out = e.progress == "off" ? nullptr : o.out;

  RunResult r;
  r.dir = e.output;
  std::filesystem::create_directories(r.dir);
  model->to(device);
  manual_seed(e.seed);
  rd::say(out, "mc run " + e.name + ": " + e.task + " on " + study_dataset_name(e) + ", model " +
                   model->card().name + " (" + e.family + "), strategy " + e.strategy.name + ", device " + e.device);
  std::unique_ptr<Task> task = make_task(e, model, device);
  const ojson data_info = task->describe();
  rd::say(out, "data: " + data_info.dump());
  TaskModel tm(model, task->head());
  const bool zero_shot = e.strategy.name == "zeroshot";
  r.plan = apply_strategy(tm, e, zero_shot ? std::set<std::string>() : used_parameters(*task, tm));
  rd::say(out, r.plan.summary());

  const std::string config = e.to_json().dump();
  if (!zero_shot) {
    FitOptions fo;
    fo.dir = r.dir;
    fo.resume = o.resume;
    fo.stop_after = o.stop_after;
    fo.config = config;
    fo.out = out;
    fo.progress = e.progress;
    r.fit = fit(*task, tm, r.plan, e.train, e.seed, fo);
    if (!r.fit.finished) return r;
  }

  const auto t_test = clock::now();
  set_training_mode(tm, false);
  Evaluation test = task->evaluate("test", true);
  const double test_seconds = std::chrono::duration<double>(clock::now() - t_test).count();

  ojson& j = r.results;
  j["name"] = e.name;
  j["model"] = model->card().name;
  j["model_path"] = e.model;
  j["family"] = e.family;
  j["task"] = e.task;
  j["dataset"] = study_dataset_name(e);
  j["percentage"] = e.data.dataset == "medmnist" ? e.data.percentage : 1.0;
  j["strategy"] = e.strategy.name;
  j["device"] = e.device;
  j["metrics"] = test.metrics;
  j["test_loss"] = test.loss;
  if (r.fit.best_epoch > 0) {
    j["best_val_loss"] = r.fit.best_val_loss;
    j["val_metrics"] = r.fit.history.at(size_t(r.fit.best_epoch - 1)).value("val", ojson());
  }
  j["trainable_parameters"] = r.plan.trainable;
  j["total_parameters"] = r.plan.total;
  j["plan"] = r.plan.to_json();
  j["data"] = data_info;
  j["timing"] = {{"train_seconds", r.fit.seconds},
                 {"test_seconds", test_seconds},
                 {"total_seconds", std::chrono::duration<double>(clock::now() - t_start).count()},
                 {"samples_per_second", r.fit.samples_per_second},
                 {"epochs", r.fit.epochs_completed},
                 {"steps", r.fit.steps},
                 {"best_epoch", r.fit.best_epoch},
                 {"stopped_early", r.fit.stopped_early},
                 {"resumed_from", r.fit.resumed_from}};
  j["history"] = r.fit.history;
  for (auto it = test.extra.begin(); it != test.extra.end(); ++it) j[it.key()] = it.value();
  j["config"] = ojson::parse(config);
  const std::string results_path = data::join_path(r.dir, "results.json");
  const std::string predictions_path = data::join_path(r.dir, "predictions.csv");
  trainer_detail::write_text_atomic(predictions_path, rd::csv(test));
  trainer_detail::write_text_atomic(results_path, j.dump(2) + "\n");
  r.finished = true;
  rd::say(out, "test (" + std::to_string(test.count) + " samples): " + rd::metric_line(test.metrics));
  rd::say(out, "wrote " + results_path + " and " + predictions_path);
  return r;
}

// Runs `e`, loading its model (see load_experiment_model).
inline RunResult run_experiment(const Experiment& e, const RunOptions& o) {
  return run_experiment(e, load_experiment_model(e), o);
}

}  // namespace mc::tasks
