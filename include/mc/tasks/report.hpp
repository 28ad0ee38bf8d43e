// mc/tasks/report.hpp — the study's result tables (the layouts of the paper's Tables 1-6), SVG plots and
// the sweep grid of `mc sweep`.
//
// Records. One result per run (model, strategy, task, data set, training fraction, metrics):
//   {"name": "breastmnist_clip_lora", "model": "CLIP", "strategy": "zeroshot" | "partial" | "full" | "lora",
//    "task": "classification" | "retrieval" | "vqa", "dataset": "breastmnist", "percentage": 1.0,
//    "metrics": {"auc": 0.81, "accuracy": 0.84, "f1": 0.889},     fractions in [0, 1]; null = missing
//    "history": [{"epoch": 1, "train_loss": .., "val_loss": ..}],  optional: the loss curve
//    "roc": {"fpr": [...], "tpr": [...], "auc": 0.93}}             optional: the ROC curve
// "metrics" may also hold the splits ({"test": {...}, "val": {...}}): the test split is read. Metric names:
// classification auc / accuracy / f1; retrieval (image -> text) r@1 / r@5 / r@10 (i2t_r@k and recall@k are
// read as well); vqa accuracy / f1. Without "roc", a classification run's folder (ResultRecord::dir) may
// give the ROC curve through its predictions.csv (label, prob_0 .. prob_{C-1}).
//
// Tables, as the paper lays them out (values in percent, one decimal, "—" for a missing value):
//   1 zero-shot classification   rows: models;  columns: data sets x (AUC, Acc., F1);    bold: best per column
//   2 zero-shot retrieval        rows: models;  columns: data sets x (R@1, R@5, R@10);  bold: best per column
//   3 fine-tuned classification  rows: data sets x (AUC, Acc., F1); columns: models x (Part, Full, LoRA);
//                                bold best and underlined second best per row
//   4 fine-tuned retrieval       the same with R@1, R@5, R@10
//   5 VQA                        the same with Acc., F1
//   6 training fraction          rows: models x strategies; columns: data sets x fractions (5%, 10%, ...);
//                                accuracy; bold: best per column. Data sets and strategies: those with a
//                                run below 100%.
// Models keep the order in which they first appear in the records; the study's data sets come in the
// paper's order with its names, other data sets follow under their own names. Several records for one cell:
// the last wins. Markdown puts the first header row in the Markdown header and the others in the body, as
// the paper's tables read; CSV holds the same grid without marks.
//
// Plots: line_plot_svg (loss curves: train solid, validation dashed) and roc_plot_svg (with the chance
// diagonal) write standalone SVG 1.1 — one <g class="series"> per curve, non-finite points break a line.
//
// Sweeps (`mc sweep SWEEP.json`): SweepConfig::parse reads the grid strictly, expand_sweep gives one `mc run`
// experiment per cell, run_sweep runs the cells through a caller-given runner (a cell whose results.json
// exists is read back instead of run again) and write_report writes the tables and plots. Schema at
// SweepConfig.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/io/file.hpp"
#include "mc/tasks/metrics.hpp"

namespace mc::tasks {

using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------------

struct ResultRecord {
  std::string name, model, strategy, task, dataset;
  double percentage = 1.0;                // fraction of the training set
  std::map<std::string, double> metrics;  // fractions; NaN = missing
  ojson extra = ojson::object();          // the whole record (history, roc, ...)
  std::string dir;                        // run folder ("" = none)

  // The metric `key` (or its other spellings, see the top of the file); NaN when absent.
  double metric(const std::string& key) const {
    std::vector<std::string> keys = {key};
    if (key.rfind("r@", 0) == 0) keys = {key, "i2t_" + key, "recall@" + key.substr(2), "i2t_recall@" + key.substr(2)};
    for (const std::string& k : keys) {
      auto it = metrics.find(k);
      if (it != metrics.end()) return it->second;
    }
    return std::numeric_limits<double>::quiet_NaN();
  }
};

namespace report_detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline const std::vector<std::string> kStrategies = {"zeroshot", "partial", "full", "lora"};
inline const std::vector<std::string> kTasks = {"classification", "retrieval", "vqa"};

inline bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// The study's data sets in the paper's order: id, long name, short name (Tables 3 and 6).
struct KnownDataset {
  const char *id, *name, *short_name;
};
inline const std::vector<KnownDataset>& known_datasets() {
  static const std::vector<KnownDataset> v = {{"breastmnist", "BreastMNIST", "Breast"},
                                              {"pneumoniamnist", "PneumoniaMNIST", "Pneu."},
                                              {"organamnist", "OrganAMNIST", "OrganA"},
                                              {"organcmnist", "OrganCMNIST", "OrganC"},
                                              {"roco-radiology", "Radiology", "Radiology"},
                                              {"roco-non-radiology", "Non-radiology", "Non-radiology"},
                                              {"roco-mixed", "Mixed", "Mixed"},
                                              {"vqa-rad", "VQA-RAD", "VQA-RAD"},
                                              {"slake", "SLAKE", "SLAKE"}};
  return v;
}

inline std::string dataset_label(const std::string& d, bool short_name) {
  for (const auto& k : known_datasets())
    if (d == k.id) return short_name ? k.short_name : k.name;
  return d;
}

inline std::string strategy_label(const std::string& s) {
  return s == "partial" ? "Part" : s == "full" ? "Full" : s == "lora" ? "LoRA" : "Zero-shot";
}

inline std::string percent_label(double p) {
  char b[32];
  std::snprintf(b, sizeof b, "%g%%", std::round(p * 1000) / 10);
  return b;
}

inline double number_or_nan(const ojson& v) { return v.is_number() ? v.get<double>() : kNaN; }

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MC_CHECK(f, path, ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace report_detail

// One record from its JSON object; `what` names it in errors.
inline ResultRecord parse_result(const ojson& j, const std::string& what = "result") {
  using namespace report_detail;
  MC_CHECK(j.is_object(), what, ": a result must be a JSON object, got ", j.type_name());
  ResultRecord r;
  auto str = [&](const char* key, bool required) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      MC_CHECK(!required, what, ": missing \"", key, "\"");
      return std::string();
    }
    MC_CHECK(it->is_string(), what, ": \"", key, "\" must be a string");
    return it->get<std::string>();
  };
  r.name = str("name", false);
  r.model = str("model", true);
  r.strategy = str("strategy", true);
  if (r.strategy == "zero-shot") r.strategy = "zeroshot";
  MC_CHECK(contains(kStrategies, r.strategy), what, ": unknown strategy \"", r.strategy,
           "\" (expected zeroshot, partial, full or lora)");
  r.task = str("task", true);
  MC_CHECK(contains(kTasks, r.task), what, ": unknown task \"", r.task,
           "\" (expected classification, retrieval or vqa)");
  r.dataset = str("dataset", true);
  if (auto it = j.find("percentage"); it != j.end()) {
    MC_CHECK(it->is_number() && it->get<double>() > 0 && it->get<double>() <= 1, what,
             ": \"percentage\" must be a fraction in (0, 1]");
    r.percentage = it->get<double>();
  }
  auto m = j.find("metrics");
  MC_CHECK(m != j.end() && m->is_object(), what, ": missing \"metrics\" object");
  const ojson& mm = m->contains("test") && (*m)["test"].is_object() ? (*m)["test"] : *m;
  for (auto it = mm.begin(); it != mm.end(); ++it)
    if (it->is_number() || it->is_null()) r.metrics[it.key()] = number_or_nan(*it);
  r.extra = j;
  return r;
}

// A JSON array of records or a single record.
inline std::vector<ResultRecord> parse_results(const ojson& j, const std::string& what = "results") {
  std::vector<ResultRecord> out;
  if (!j.is_array()) return {parse_result(j, what)};
  for (size_t i = 0; i < j.size(); ++i) out.push_back(parse_result(j[i], what + "[" + std::to_string(i) + "]"));
  return out;
}

// Writes `text` to `path` atomically (a reader never sees half a file); creates the parent folder.
inline void write_text_file(const std::string& path, const std::string& text) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  io::write_file_atomic(path, [&](std::FILE* f) { io::write_bytes(f, text.data(), text.size(), path); });
}

// ---------------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------------

struct Table {
  std::string title;                             // the caption
  size_t label_cols = 1;                         // leading label columns of every row
  std::vector<std::vector<std::string>> header;  // header rows, label_cols + value columns each
  std::vector<std::vector<std::string>> labels;  // body rows: their label_cols labels
  std::vector<std::vector<double>> values;       // body rows: the values (fractions; NaN = missing)
  std::vector<std::vector<int>> marks;           // 0, 1 best (bold), 2 second best (underlined)

  size_t cols() const { return header.empty() ? 0 : header[0].size() - label_cols; }
  bool has_values() const {
    for (const auto& r : values)
      for (double v : r)
        if (std::isfinite(v)) return true;
    return false;
  }
  // The formatted value of body row r, value column c: "84.0" for 0.84, "" when missing.
  std::string text(size_t r, size_t c) const {
    const double v = values[r][c];
    if (!std::isfinite(v)) return "";
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", std::round(v * 1000) / 10);
    return std::string(b) == "-0.0" ? "0.0" : b;
  }
};

namespace report_detail {

// Marks the best (and, with `second`, second best) printed values among `cells` (row, column pairs).
inline void mark(Table& t, const std::vector<std::pair<size_t, size_t>>& cells, bool second) {
  std::set<long long, std::greater<>> keys;
  for (auto [r, c] : cells)
    if (std::isfinite(t.values[r][c])) keys.insert(std::llround(t.values[r][c] * 1000));
  if (keys.size() < 2) return;  // nothing to compare
  const long long best = *keys.begin(), next = *std::next(keys.begin());
  for (auto [r, c] : cells) {
    if (!std::isfinite(t.values[r][c])) continue;
    const long long k = std::llround(t.values[r][c] * 1000);
    if (k == best)
      t.marks[r][c] = 1;
    else if (second && k == next)
      t.marks[r][c] = 2;
  }
}

inline void add_row(Table& t, std::vector<std::string> labels, std::vector<double> values) {
  t.marks.emplace_back(values.size(), 0);
  t.labels.push_back(std::move(labels));
  t.values.push_back(std::move(values));
}

template <class F>
std::vector<std::string> distinct(const std::vector<const ResultRecord*>& recs, F&& field) {
  std::vector<std::string> out;
  for (const ResultRecord* r : recs)
    if (!contains(out, field(*r))) out.push_back(field(*r));
  return out;
}

// Data sets of `recs`: the study's in the paper's order, then the others in order of appearance.
inline std::vector<std::string> datasets_of(const std::vector<const ResultRecord*>& recs) {
  std::vector<std::string> seen = distinct(recs, [](const ResultRecord&r) { return r.dataset; }), out;
  for (const auto& k : known_datasets())
    if (contains(seen, k.id)) out.push_back(k.id);
  for (const auto& d : seen)
    if (!contains(out, d)) out.push_back(d);
  return out;
}

inline std::vector<const ResultRecord*> select(const std::vector<ResultRecord>& recs,
                                               const std::function<bool(const ResultRecord&)>& keep) {
  std::vector<const ResultRecord*> out;
  for (const ResultRecord& r : recs)
    if (keep(r)) out.push_back(&r);
  return out;
}

// The last record matching (model, strategy, dataset, percentage).
inline const ResultRecord* find(const std::vector<const ResultRecord*>& recs, const std::string& model,
                                const std::string& strategy, const std::string& dataset, double pct = 1.0) {
  const ResultRecord* hit = nullptr;
  for (const ResultRecord* r : recs)
    if (r->model == model && r->strategy == strategy && r->dataset == dataset && std::fabs(r->percentage - pct) < 1e-9)
      hit = r;
  return hit;
}

using MetricList = std::vector<std::pair<std::string, std::string>>;  // key, label

inline MetricList task_metrics(const std::string& task) {
  if (task == "classification") return {{"auc", "AUC"}, {"accuracy", "Acc."}, {"f1", "F1"}};
  if (task == "retrieval") return {{"r@1", "R@1"}, {"r@5", "R@5"}, {"r@10", "R@10"}};
  return {{"accuracy", "Acc."}, {"f1", "F1"}};
}

inline bool full_data(const ResultRecord& r) { return std::fabs(r.percentage - 1.0) < 1e-9; }

// The fine-tuning strategies of `recs`, in the order partial, full, lora.
inline std::vector<std::string> strategies_of(const std::vector<const ResultRecord*>& recs) {
  std::vector<std::string> out;
  for (const char* s : {"partial", "full", "lora"})
    for (const ResultRecord* r : recs)
      if (r->strategy == s && !contains(out, s)) out.push_back(s);
  return out;
}

// Marks the best value of every column (Tables 1, 2 and 6).
inline void mark_columns(Table& t) {
  for (size_t c = 0; c < t.cols(); ++c) {
    std::vector<std::pair<size_t, size_t>> cells;
    for (size_t r = 0; r < t.values.size(); ++r) cells.emplace_back(r, c);
    mark(t, cells, false);
  }
}

// Tables 1-2: rows = models, columns = data sets x metrics, best per column.
inline Table zeroshot_table(const std::vector<ResultRecord>& all, const std::string& task, const std::string& title,
                            const std::string& dataset_suffix) {
  auto recs =
      select(all, [&](const ResultRecord& r) { return r.task == task && r.strategy == "zeroshot" && full_data(r); });
  const MetricList ms = task_metrics(task);
  const auto datasets = datasets_of(recs);
  const auto models = distinct(recs, [](const ResultRecord& r) { return r.model; });
  Table t;
  t.title = title;
  t.header.resize(2, {""});
  for (const auto& d : datasets)
    for (size_t k = 0; k < ms.size(); ++k) {
      t.header[0].push_back(k == 0 ? dataset_label(d, false) + dataset_suffix : "");
      t.header[1].push_back(ms[k].second);
    }
  for (const auto& m : models) {
    std::vector<double> v;
    for (const auto& d : datasets) {
      const ResultRecord* r = find(recs, m, "zeroshot", d);
      for (const auto& mk : ms) v.push_back(r ? r->metric(mk.first) : kNaN);
    }
    add_row(t, {m}, v);
  }
  mark_columns(t);
  return t;
}

// Tables 3-5: rows = data sets x metrics, columns = models x strategies, best and second best per row.
inline Table finetuned_table(const std::vector<ResultRecord>& all, const std::string& task, const std::string& title,
                             const std::string& corner) {
  auto recs =
      select(all, [&](const ResultRecord& r) { return r.task == task && r.strategy != "zeroshot" && full_data(r); });
  const MetricList ms = task_metrics(task);
  const auto models = distinct(recs, [](const ResultRecord& r) { return r.model; });
  const std::vector<std::string> strategies = strategies_of(recs);
  Table t;
  t.title = title;
  t.label_cols = 2;
  t.header = {{corner, ""}, {"", ""}};
  for (const auto& m : models)
    for (size_t k = 0; k < strategies.size(); ++k) {
      t.header[0].push_back(k == 0 ? m : "");
      t.header[1].push_back(strategy_label(strategies[k]));
    }
  for (const auto& d : datasets_of(recs))
    for (size_t k = 0; k < ms.size(); ++k) {
      std::vector<double> v;
      for (const auto& m : models)
        for (const auto& s : strategies) {
          const ResultRecord* r = find(recs, m, s, d);
          v.push_back(r ? r->metric(ms[k].first) : kNaN);
        }
      add_row(t, {k == 0 ? dataset_label(d, true) : "", ms[k].second}, v);
      std::vector<std::pair<size_t, size_t>> cells;
      for (size_t c = 0; c < v.size(); ++c) cells.emplace_back(t.values.size() - 1, c);
      mark(t, cells, true);
    }
  return t;
}

}  // namespace report_detail

inline Table table1_zeroshot_classification(const std::vector<ResultRecord>& recs) {
  return report_detail::zeroshot_table(recs, "classification", "Table 1: Zero-shot classification performance.", "");
}
inline Table table2_zeroshot_retrieval(const std::vector<ResultRecord>& recs) {
  return report_detail::zeroshot_table(recs, "retrieval", "Table 2: Zero-shot image-to-text retrieval performance.",
                                       " [%]");
}
inline Table table3_finetuned_classification(const std::vector<ResultRecord>& recs) {
  return report_detail::finetuned_table(
      recs, "classification", "Table 3: Classification performance for partial, full and LoRA fine-tuning.", "");
}
inline Table table4_finetuned_retrieval(const std::vector<ResultRecord>& recs) {
  return report_detail::finetuned_table(
      recs, "retrieval", "Table 4: Image-to-text retrieval performance for partial, full and LoRA fine-tuning.", "");
}
inline Table table5_vqa(const std::vector<ResultRecord>& recs) {
  return report_detail::finetuned_table(recs, "vqa", "Table 5: Visual-question answering performance.", "");
}

// Table 6: accuracy of the fine-tuned classifiers by fraction of the training set.
inline Table table6_data_fraction(const std::vector<ResultRecord>& all) {
  using namespace report_detail;
  auto fine = select(all, [](const ResultRecord& r) { return r.task == "classification" && r.strategy != "zeroshot"; });
  std::vector<const ResultRecord*> recs, fractions;  // data sets / strategies with runs below 100 %
  for (const ResultRecord* r : fine)
    if (!full_data(*r)) fractions.push_back(r);
  const auto datasets = datasets_of(fractions);
  const std::vector<std::string> strategies = strategies_of(fractions);
  for (const ResultRecord* r : fine)
    if (contains(datasets, r->dataset) && contains(strategies, r->strategy)) recs.push_back(r);
  const auto models = distinct(recs, [](const ResultRecord& r) { return r.model; });
  Table t;
  t.title = "Table 6: Fine-tuning accuracy under varying proportions of the training set.";
  t.label_cols = 2;
  t.header = {{"", ""}, {"Size", "ft."}};
  std::vector<std::pair<std::string, double>> columns;
  for (const auto& d : datasets) {
    std::set<double> pcts;
    for (const ResultRecord* r : recs)
      if (r->dataset == d) pcts.insert(std::round(r->percentage * 1e6) / 1e6);
    bool first = true;
    for (double p : pcts) {
      t.header[0].push_back(first ? dataset_label(d, true) : "");
      t.header[1].push_back(percent_label(p));
      columns.emplace_back(d, p);
      first = false;
    }
  }
  for (const auto& m : models)
    for (size_t k = 0; k < strategies.size(); ++k) {
      std::vector<double> v;
      for (const auto& [d, p] : columns) {
        const ResultRecord* r = find(recs, m, strategies[k], d, p);
        v.push_back(r ? r->metric("accuracy") : kNaN);
      }
      add_row(t, {k == 0 ? m : "", strategies[k] == "lora" ? "LoRA" : strategies[k]}, v);
    }
  mark_columns(t);
  return t;
}

// The paper's tables that have at least one value in `recs`, in order.
inline std::vector<Table> paper_tables(const std::vector<ResultRecord>& recs) {
  std::vector<Table> out;
  for (Table t :
       {table1_zeroshot_classification(recs), table2_zeroshot_retrieval(recs), table3_finetuned_classification(recs),
        table4_finetuned_retrieval(recs), table5_vqa(recs), table6_data_fraction(recs)})
    if (t.has_values()) out.push_back(std::move(t));
  return out;
}

// Markdown: the first header row as the Markdown header, the other header rows then the body; "**x**"
// best, "<u>x</u>" second best, "—" missing; then a blank line and the caption.
inline std::string to_markdown(const Table& t) {
  auto line = [](const std::vector<std::string>& cells) {
    std::string o = "|";
    for (const auto& c : cells) {
      o += " ";
      for (char ch : c) o += ch == '|' ? std::string("\\|") : std::string(1, ch);
      o += c.empty() ? "|" : " |";
    }
    return o + "\n";
  };
  if (t.header.empty()) return "";
  std::string o = line(t.header[0]) + "|";
  for (size_t c = 0; c < t.header[0].size(); ++c) o += "---|";
  o += "\n";
  for (size_t h = 1; h < t.header.size(); ++h) o += line(t.header[h]);
  for (size_t r = 0; r < t.values.size(); ++r) {
    std::vector<std::string> cells = t.labels[r];
    for (size_t c = 0; c < t.values[r].size(); ++c) {
      std::string s = t.text(r, c);
      if (s.empty())
        s = "\xE2\x80\x94";
      else if (t.marks[r][c] == 1)
        s = "**" + s + "**";
      else if (t.marks[r][c] == 2)
        s = "<u>" + s + "</u>";
      cells.push_back(s);
    }
    o += line(cells);
  }
  if (!t.title.empty()) o += "\n" + t.title + "\n";
  return o;
}

namespace report_detail {
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}
inline std::string csv_line(const std::vector<std::string>& cells) {
  std::string o;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i) o += ',';
    o += csv_field(cells[i]);
  }
  return o + "\n";
}
}  // namespace report_detail

// CSV (RFC 4180 quoting): the header rows, then the body; percent values, empty when missing; no marks.
inline std::string to_csv(const Table& t) {
  std::string o;
  for (const auto& h : t.header) o += report_detail::csv_line(h);
  for (size_t r = 0; r < t.values.size(); ++r) {
    std::vector<std::string> cells = t.labels[r];
    for (size_t c = 0; c < t.values[r].size(); ++c) cells.push_back(t.text(r, c));
    o += report_detail::csv_line(cells);
  }
  return o;
}

// Every record's metrics in long form: name,model,strategy,task,dataset,percentage,metric,value (fractions).
inline std::string records_csv(const std::vector<ResultRecord>& recs) {
  std::string o = "name,model,strategy,task,dataset,percentage,metric,value\n";
  for (const ResultRecord& r : recs)
    for (const auto& [k, v] : r.metrics) {
      char pv[32], vv[32] = "";
      std::snprintf(pv, sizeof pv, "%.6g", r.percentage);
      if (std::isfinite(v)) std::snprintf(vv, sizeof vv, "%.6g", v);
      o += report_detail::csv_line({r.name, r.model, r.strategy, r.task, r.dataset, pv, k, vv});
    }
  return o;
}

// ---------------------------------------------------------------------------------------------------
// SVG plots
// ---------------------------------------------------------------------------------------------------

struct Series {
  std::string label;
  std::vector<double> x, y;
  bool dashed = false;
  int color = -1;  // palette index; -1 = the series' position
};

struct PlotOptions {
  std::string title, x_label, y_label;
  int width = 720, height = 420;  // with a legend of labels up to 19 characters (wider: the image grows)
  bool unit_axes = false;         // both axes fixed to [0, 1] (ROC)
  bool diagonal = false;          // the chance line y = x
};

namespace svg_detail {

inline std::string esc(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '&')
      o += "&amp;";
    else if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '"')
      o += "&quot;";
    else if (c < 0x20 && c != '\t')
      o += ' ';
    else
      o += char(c);
  }
  return o;
}

inline std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  std::string s = b;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

inline const char* color(size_t i) {
  static const char* p[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return p[i % 10];
}

// Ticks at 1, 2 or 5 x 10^k covering [lo, hi] (the range is widened to whole ticks).
inline std::vector<double> ticks(double& lo, double& hi) {
  if (!(hi > lo)) {
    const double d = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw))), f = raw / mag;
  const double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> t;
  for (double v = lo; v <= hi + step * 1e-6; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

inline std::string tick_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

}  // namespace svg_detail

// A standalone SVG line plot: axes with ticks, one <g class="series"> per series (a polyline per run of
// finite points), a legend. Non-finite points are left out and break the line.
inline std::string line_plot_svg(const PlotOptions& o, const std::vector<Series>& series) {
  using namespace svg_detail;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (!o.unit_axes) {
    x0 = y0 = std::numeric_limits<double>::infinity();
    x1 = y1 = -x0;
    for (const Series& s : series)
      for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
          x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
          y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
        }
    if (!std::isfinite(x0)) x0 = y0 = 0, x1 = y1 = 1;
  }
  const std::vector<double> xt = ticks(x0, x1), yt = ticks(y0, y1);
  size_t longest = 0;  // the legend sits on the right, as wide as its longest label (about 7 px a character)
  for (const Series& se : series) longest = std::max(longest, se.label.size());
  const double L = 64, R = 56 + 7.0 * double(longest), T = 36, B = 48;
  const double W = std::max(120, o.width - 254), H = o.height - T - B;  // the plot area
  const int width = int(std::ceil(L + W + R));
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * W; };
  auto py = [&](double y) { return T + H - (y - y0) / (y1 - y0) * H; };
  std::string s =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" +
      std::to_string(width) + "\" height=\"" + std::to_string(o.height) + "\" viewBox=\"0 0 " + std::to_string(width) +
      " " + std::to_string(o.height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(L + W / 2) + "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">" + esc(o.title) +
       "</text>\n";
  s += "<g class=\"axes\" stroke=\"#ccc\" stroke-width=\"1\">\n";
  for (double v : xt)
    s +=
        "<line x1=\"" + num(px(v)) + "\" y1=\"" + num(T) + "\" x2=\"" + num(px(v)) + "\" y2=\"" + num(T + H) + "\"/>\n";
  for (double v : yt)
    s +=
        "<line x1=\"" + num(L) + "\" y1=\"" + num(py(v)) + "\" x2=\"" + num(L + W) + "\" y2=\"" + num(py(v)) + "\"/>\n";
  s += "<rect x=\"" + num(L) + "\" y=\"" + num(T) + "\" width=\"" + num(W) + "\" height=\"" + num(H) +
       "\" fill=\"none\" stroke=\"#333\"/>\n</g>\n<g class=\"ticks\" fill=\"#333\">\n";
  for (double v : xt)
    s += "<text x=\"" + num(px(v)) + "\" y=\"" + num(T + H + 16) + "\" text-anchor=\"middle\">" + tick_text(v) +
         "</text>\n";
  for (double v : yt)
    s +=
        "<text x=\"" + num(L - 6) + "\" y=\"" + num(py(v) + 4) + "\" text-anchor=\"end\">" + tick_text(v) + "</text>\n";
  s += "<text x=\"" + num(L + W / 2) + "\" y=\"" + num(T + H + 36) + "\" text-anchor=\"middle\">" + esc(o.x_label) +
       "</text>\n";
  s += "<text transform=\"translate(16 " + num(T + H / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + esc(o.y_label) +
       "</text>\n</g>\n";
  if (o.diagonal)
    s += "<line class=\"chance\" x1=\"" + num(px(0)) + "\" y1=\"" + num(py(0)) + "\" x2=\"" + num(px(1)) + "\" y2=\"" +
         num(py(1)) + "\" stroke=\"#999\" stroke-dasharray=\"2 3\"/>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& se = series[k];
    const std::string col = color(se.color >= 0 ? size_t(se.color) : k);
    s += "<g class=\"series\" fill=\"none\" stroke=\"" + col + "\" stroke-width=\"1.8\"" +
         (se.dashed ? " stroke-dasharray=\"6 4\"" : "") + ">\n<title>" + esc(se.label) + "</title>\n";
    std::string pts;
    auto flush = [&] {
      if (!pts.empty()) s += "<polyline points=\"" + pts + "\"/>\n";
      pts.clear();
    };
    for (size_t i = 0; i < std::min(se.x.size(), se.y.size()); ++i) {
      if (!std::isfinite(se.x[i]) || !std::isfinite(se.y[i])) {
        flush();
        continue;
      }
      if (!pts.empty()) pts += ' ';
      pts += num(px(se.x[i]));
      pts += ',';
      pts += num(py(se.y[i]));
    }
    flush();
    s += "</g>\n";
  }
  s += "<g class=\"legend\">\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const double y = T + 8 + 18 * double(k), x = L + W + 14;
    s += "<line x1=\"" + num(x) + "\" y1=\"" + num(y) + "\" x2=\"" + num(x + 22) + "\" y2=\"" + num(y) +
         "\" stroke=\"" + color(series[k].color >= 0 ? size_t(series[k].color) : k) + "\" stroke-width=\"2\"" +
         (series[k].dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>\n";
    s += "<text x=\"" + num(x + 28) + "\" y=\"" + num(y + 4) + "\">" + esc(series[k].label) + "</text>\n";
  }
  return s + "</g>\n</svg>\n";
}

// ROC curves (x = false-positive rate, y = true-positive rate) with the chance diagonal.
inline std::string roc_plot_svg(const std::string& title, const std::vector<Series>& curves) {
  PlotOptions o;
  o.title = title;
  o.x_label = "false-positive rate";
  o.y_label = "true-positive rate";
  o.unit_axes = o.diagonal = true;
  o.height = 460;
  return line_plot_svg(o, curves);
}

// ---------------------------------------------------------------------------------------------------
// Curves of a run: loss history and ROC
// ---------------------------------------------------------------------------------------------------

struct LossCurve {
  std::vector<double> epoch, train, val;
};

// From the record's "history" (objects with epoch, train_loss, val_loss; what results.json holds).
inline LossCurve loss_curve(const ResultRecord& r) {
  using report_detail::number_or_nan;
  LossCurve c;
  if (!r.extra.contains("history") || !r.extra["history"].is_array()) return c;
  for (const ojson& e : r.extra["history"]) {
    if (!e.is_object() || !e.contains("epoch") || !e["epoch"].is_number()) continue;
    c.epoch.push_back(e["epoch"].get<double>());
    c.train.push_back(e.contains("train_loss") ? number_or_nan(e["train_loss"]) : report_detail::kNaN);
    c.val.push_back(e.contains("val_loss") ? number_or_nan(e["val_loss"]) : report_detail::kNaN);
  }
  return c;
}

namespace report_detail {
inline std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"')
        out.back() += '"', ++i;
      else if (c == '"')
        quoted = false;
      else
        out.back() += c;
    } else if (c == '"')
      quoted = true;
    else if (c == ',')
      out.emplace_back();
    else if (c != '\r')
      out.back() += c;
  }
  return out;
}
}  // namespace report_detail

// The ROC curve of a classification run: the record's "roc" {fpr, tpr}, or else from its folder's
// predictions.csv (label, prob_0 ..): binary = the curve of class 1; more classes = one-vs-rest, micro-
// averaged (every (sample, class) pair is one score). Empty when neither is there.
inline RocCurve roc_of(const ResultRecord& r) {
  RocCurve c;
  if (r.extra.contains("roc") && r.extra["roc"].is_object()) {
    const ojson& j = r.extra["roc"];
    for (const auto& v : j.value("fpr", ojson::array())) c.fpr.push_back(report_detail::number_or_nan(v));
    for (const auto& v : j.value("tpr", ojson::array())) c.tpr.push_back(report_detail::number_or_nan(v));
    return c;
  }
  const std::string path = r.dir + "/predictions.csv";
  if (r.dir.empty() || r.task != "classification" || !std::filesystem::is_regular_file(path)) return c;
  std::istringstream in(report_detail::read_text(path));
  std::string line;
  if (!std::getline(in, line)) return c;
  const auto head = report_detail::split_csv_line(line);
  int label = -1;
  std::vector<int> probs;
  for (size_t i = 0; i < head.size(); ++i) {
    if (head[i] == "label") label = int(i);
    if (head[i] == "prob_" + std::to_string(probs.size())) probs.push_back(int(i));
  }
  if (label < 0 || probs.size() < 2) return c;
  std::vector<double> scores;
  std::vector<int64_t> truth;
  while (std::getline(in, line)) {
    const auto f = report_detail::split_csv_line(line);
    if (f.size() < head.size()) continue;
    const int64_t y = std::stoll(f[size_t(label)]);
    if (probs.size() == 2) {
      scores.push_back(std::stod(f[size_t(probs[1])]));
      truth.push_back(y == 1);
    } else {
      for (size_t k = 0; k < probs.size(); ++k) {
        scores.push_back(std::stod(f[size_t(probs[k])]));
        truth.push_back(y == int64_t(k));
      }
    }
  }
  bool both = std::count(truth.begin(), truth.end(), 1) > 0 && std::count(truth.begin(), truth.end(), 0) > 0;
  return both ? roc_curve(scores, truth) : c;
}

// ---------------------------------------------------------------------------------------------------
// Report: tables + plots for a set of records
// ---------------------------------------------------------------------------------------------------

namespace report_detail {
inline std::string slug(const std::string& s) {
  std::string o;
  for (char c : s) {
    const char l = char(std::tolower(static_cast<unsigned char>(c)));
    if ((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '.')
      o += l;
    else if (!o.empty() && o.back() != '-')
      o += '-';
  }
  while (!o.empty() && o.back() == '-') o.pop_back();
  return o.empty() ? "x" : o;
}
inline std::string run_label(const ResultRecord& r) {
  std::string s = r.model + " " + strategy_label(r.strategy);
  if (!full_data(r)) s += " " + percent_label(r.percentage);
  return s;
}
}  // namespace report_detail

// Writes into `dir`: tables.md (every paper table with values, Markdown), tableN.csv, records.csv (long
// form), plots/loss_<dataset>.svg (the loss curves of the runs on the whole training set, per data set)
// and plots/roc_<dataset>.svg (ROC curves of those classification runs). Returns the paths written,
// relative to `dir`.
inline std::vector<std::string> write_report(const std::vector<ResultRecord>& recs, const std::string& dir,
                                             const std::string& title, const std::string& note = "") {
  using namespace report_detail;
  std::vector<std::string> files;
  auto write = [&](const std::string& rel, const std::string& text) {
    write_text_file((std::filesystem::path(dir) / rel).string(), text);
    files.push_back(rel);
  };
  std::string md = "# " + title + "\n\n" + (note.empty() ? "" : note + "\n\n");
  const Table all[] = {table1_zeroshot_classification(recs),
                       table2_zeroshot_retrieval(recs),
                       table3_finetuned_classification(recs),
                       table4_finetuned_retrieval(recs),
                       table5_vqa(recs),
                       table6_data_fraction(recs)};
  for (size_t i = 0; i < 6; ++i) {
    if (!all[i].has_values()) continue;
    md += to_markdown(all[i]) + "\n";
    write("table" + std::to_string(i + 1) + ".csv", to_csv(all[i]));
  }
  write("tables.md", md);
  write("records.csv", records_csv(recs));
  std::vector<const ResultRecord*> ptrs = select(recs, [](const ResultRecord&) { return true; });
  for (const std::string& d : datasets_of(ptrs)) {
    std::vector<Series> loss, roc;
    for (const ResultRecord& r : recs) {
      if (r.dataset != d || !full_data(r)) continue;  // runs on a fraction of the data: Table 6 only
      const LossCurve c = loss_curve(r);
      if (!c.epoch.empty()) {
        const int col = int(loss.size() / 2);
        loss.push_back({run_label(r) + " train", c.epoch, c.train, false, col});
        loss.push_back({run_label(r) + " val", c.epoch, c.val, true, col});
      }
      if (r.task != "classification") continue;
      const RocCurve rc = roc_of(r);
      if (rc.fpr.size() >= 2) {
        char auc[32] = "";
        const double a = r.metric("auc");
        if (std::isfinite(a)) std::snprintf(auc, sizeof auc, " (AUC %.3f)", a);
        roc.push_back({run_label(r) + auc, rc.fpr, rc.tpr});
      }
    }
    if (!loss.empty()) {
      PlotOptions o;
      o.title = "Loss: " + dataset_label(d, false);
      o.x_label = "epoch";
      o.y_label = "loss (solid: train, dashed: validation)";
      o.height = std::max(420, int(60 + 18 * loss.size()));
      write("plots/loss_" + slug(d) + ".svg", line_plot_svg(o, loss));
    }
    if (!roc.empty()) write("plots/roc_" + slug(d) + ".svg", roc_plot_svg("ROC: " + dataset_label(d, false), roc));
  }
  return files;
}

// ---------------------------------------------------------------------------------------------------
// Sweeps
// ---------------------------------------------------------------------------------------------------

// SWEEP.json, read strictly (an unknown key or a bad value is an mc::Error naming its path):
//   {
//     "name": "paper",                     title of the report (default: the file name without .json)
//     "output": "runs/paper",              folder of the cells and the report (default runs/<name>)
//     "models": [                          required; a string is a path (name = file name without extension)
//       {"name": "CLIP", "path": "weights/clip-vit-b32.safetensors", "experiment": {...}}, ...],
//     "strategies": ["zeroshot", "partial", "full", "lora"],            required
//     "datasets": [                        required
//       {"name": "breastmnist", "task": "classification",
//        "data": {"dataset": "medmnist", "path": "data/breastmnist_224.npz"}, "experiment": {...},
//        "strategies": ["zeroshot"]}, ...],       (optional: a subset of the grid's strategies)
//     "percentages": [0.05, 0.1, 1.0],     training fractions in (0, 1] (default [1])
//     "experiment": {...}                  keys every cell's experiment gets (train, seed, device, ...)
//   }
// Cells: data sets x models x strategies x percentages, in the order given, except zero-shot below 100%
// or on VQA, and fractions below 100% outside classification. A cell's experiment = "experiment", merged
// (JSON merge patch) with the model's and then the data set's "experiment"; then the grid sets "name"
// (<dataset>_<model>_<strategy>[_p<percent>]), "model" (the path), "task", "data" (with "percentage"
// below 100%), "strategy" and "output" (<output>/<name>), which the "experiment" objects may not set.
// Relative paths are taken relative to the sweep file's folder (the experiment's base_dir).
struct SweepModel {
  std::string name, path;
  ojson experiment = ojson::object();
};
struct SweepDataset {
  std::string name, task;
  ojson data = ojson::object(), experiment = ojson::object();
  std::vector<std::string> strategies;  // empty: the grid's
};

struct SweepConfig {
  std::string name = "sweep", output, base_dir;
  std::vector<SweepModel> models;
  std::vector<std::string> strategies;
  std::vector<SweepDataset> datasets;
  std::vector<double> percentages = {1.0};
  ojson experiment = ojson::object();

  static SweepConfig parse(const ojson& j, const std::string& what = "sweep", const std::string& base_dir = "");
  static SweepConfig load(const std::string& path);
};

struct SweepCell {
  std::string name, model, strategy, task, dataset;  // model: the display name
  double percentage = 1.0;
  ojson experiment;      // a complete `mc run` experiment
  std::string dir;       // its output folder
  std::string base_dir;  // for relative paths in `experiment`
};

namespace report_detail {

// Strict object reader: every key read is known, finish() rejects the others.
class Strict {
 public:
  Strict(const ojson& j, std::string path, std::string what) : j_(j), path_(std::move(path)), what_(std::move(what)) {
    MC_CHECK(j.is_object(), what_, ": ", path_.empty() ? "the sweep" : "'" + path_ + "'", " must be a JSON object");
  }
  std::string at(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }
  const ojson* get(const std::string& k, bool required = false) {
    known_.insert(k);
    auto it = j_.find(k);
    MC_CHECK(it != j_.end() || !required, what_, ": missing key '", at(k), "'");
    return it == j_.end() ? nullptr : &*it;
  }
  std::string str(const std::string& k, bool required = false, const std::string& def = "") {
    const ojson* v = get(k, required);
    if (!v) return def;
    MC_CHECK(v->is_string() && !v->get<std::string>().empty(), what_, ": '", at(k), "' must be a non-empty string");
    return v->get<std::string>();
  }
  ojson object(const std::string& k, bool required = false) {
    const ojson* v = get(k, required);
    if (!v) return ojson::object();
    MC_CHECK(v->is_object(), what_, ": '", at(k), "' must be an object");
    return *v;
  }
  const ojson& array(const std::string& k) {
    const ojson* v = get(k, true);
    MC_CHECK(v->is_array() && !v->empty(), what_, ": '", at(k), "' must be a non-empty array");
    return *v;
  }
  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      MC_CHECK(known_.count(it.key()), what_, ": unknown key '", at(it.key()), "'");
  }

 private:
  const ojson& j_;
  std::string path_, what_;
  std::set<std::string> known_;
};

inline void check_not_reserved(const ojson& e, const std::string& path, const std::string& what) {
  for (const char* k : {"name", "model", "task", "data", "strategy", "output"})
    MC_CHECK(!e.contains(k), what, ": '", path, ".", k, "' is set by the sweep grid");
}

}  // namespace report_detail

inline SweepConfig SweepConfig::parse(const ojson& j, const std::string& what, const std::string& base_dir) {
  using namespace report_detail;
  SweepConfig c;
  c.base_dir = base_dir;
  Strict r(j, "", what);
  c.name = r.str("name", false, c.name);
  c.output = r.str("output", false, "");
  c.experiment = r.object("experiment");
  check_not_reserved(c.experiment, "experiment", what);
  const ojson& models = r.array("models");
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string at = "models[" + std::to_string(i) + "]";
    SweepModel m;
    if (models[i].is_string()) {
      m.path = models[i].get<std::string>();
      m.name = std::filesystem::path(m.path).stem().string();
    } else {
      Strict mr(models[i], at, what);
      m.path = mr.str("path", true);
      m.name = mr.str("name", false, std::filesystem::path(m.path).stem().string());
      m.experiment = mr.object("experiment");
      check_not_reserved(m.experiment, at + ".experiment", what);
      mr.finish();
    }
    for (const SweepModel& o : c.models) MC_CHECK(o.name != m.name, what, ": two models are named '", m.name, "'");
    c.models.push_back(std::move(m));
  }
  auto read_strategies = [&](const ojson& list, const std::string& at) {
    std::vector<std::string> out;
    for (size_t i = 0; i < list.size(); ++i) {
      const ojson& s = list[i];
      MC_CHECK(s.is_string() && contains(kStrategies, s.get<std::string>()), what, ": '", at, "[", i,
               "]' must be one of zeroshot, partial, full, lora, got ", s.dump());
      MC_CHECK(!contains(out, s.get<std::string>()), what, ": '", at, "' lists ", s.dump(), " twice");
      out.push_back(s.get<std::string>());
    }
    return out;
  };
  c.strategies = read_strategies(r.array("strategies"), "strategies");
  const ojson& datasets = r.array("datasets");
  for (size_t i = 0; i < datasets.size(); ++i) {
    const std::string at = "datasets[" + std::to_string(i) + "]";
    Strict dr(datasets[i], at, what);
    SweepDataset d;
    d.name = dr.str("name", true);
    d.task = dr.str("task", true);
    MC_CHECK(contains(kTasks, d.task), what, ": '", at, ".task' must be classification, retrieval or vqa, got \"",
             d.task, "\"");
    d.data = dr.object("data", true);
    MC_CHECK(!d.data.contains("percentage"), what, ": '", at, ".data.percentage' is set by the grid's \"percentages\"");
    d.experiment = dr.object("experiment");
    check_not_reserved(d.experiment, at + ".experiment", what);
    if (dr.get("strategies")) {
      d.strategies = read_strategies(dr.array("strategies"), at + ".strategies");
      for (const std::string& st : d.strategies)
        MC_CHECK(contains(c.strategies, st), what, ": '", at, ".strategies' lists \"", st,
                 "\", which is not in the grid's \"strategies\"");
    }
    dr.finish();
    for (const SweepDataset& o : c.datasets)
      MC_CHECK(o.name != d.name, what, ": two data sets are named '", d.name, "'");
    c.datasets.push_back(std::move(d));
  }
  if (const ojson* p = r.get("percentages")) {
    MC_CHECK(p->is_array() && !p->empty(), what, ": 'percentages' must be a non-empty array");
    c.percentages.clear();
    for (const ojson& v : *p) {
      MC_CHECK(v.is_number() && v.get<double>() > 0 && v.get<double>() <= 1, what,
               ": 'percentages' must hold fractions in (0, 1] (0.05 = 5 %), got ", v.dump());
      c.percentages.push_back(v.get<double>());
    }
  }
  r.finish();
  return c;
}

inline SweepConfig SweepConfig::load(const std::string& path) {
  MC_CHECK(std::filesystem::is_regular_file(path), path, ": sweep file not found");
  ojson j;
  try {
    j = ojson::parse(report_detail::read_text(path));
  } catch (const ojson::parse_error& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  SweepConfig c = parse(j, path, std::filesystem::path(path).parent_path().string());
  if (!j.contains("name")) c.name = std::filesystem::path(path).stem().string();
  return c;
}

// The grid's cells, in order (see SweepConfig).
inline std::vector<SweepCell> expand_sweep(const SweepConfig& c) {
  namespace fs = std::filesystem;
  using report_detail::contains;
  using report_detail::slug;
  std::string out = c.output.empty() ? "runs/" + slug(c.name)
                    : fs::path(c.output).is_absolute() || c.base_dir.empty()
                        ? c.output
                        : (fs::path(c.base_dir) / c.output).string();
  std::vector<SweepCell> cells;
  for (const SweepDataset& d : c.datasets)
    for (const SweepModel& m : c.models)
      for (const std::string& s : c.strategies)
        for (double p : c.percentages) {
          if (!d.strategies.empty() && !contains(d.strategies, s)) continue;
          const bool full = std::fabs(p - 1.0) < 1e-9;
          if (s == "zeroshot" && (!full || d.task == "vqa")) continue;
          if (!full && d.task != "classification") continue;
          SweepCell cell{"", m.name, s, d.task, d.name, p, c.experiment, "", c.base_dir};
          cell.name = slug(d.name) + "_" + slug(m.name) + "_" + s;
          if (!full) {
            const std::string pl = report_detail::percent_label(p);
            cell.name += "_p" + pl.substr(0, pl.size() - 1);
          }
          cell.dir = (fs::path(out) / cell.name).string();
          ojson& e = cell.experiment;
          e.merge_patch(m.experiment);
          e.merge_patch(d.experiment);
          e["name"] = cell.name;
          e["model"] = m.path;
          e["task"] = d.task;
          e["data"] = d.data;
          if (!full) e["data"]["percentage"] = p;
          e["strategy"] = s;
          e["output"] = fs::absolute(cell.dir).string();
          cells.push_back(std::move(cell));
        }
  return cells;
}

// Runs one cell and returns its result object (with "metrics"; optionally "history", "roc").
using CellRunner = std::function<ojson(const SweepCell&)>;

struct SweepSummary {
  std::vector<ResultRecord> records;                        // every cell with a result, in grid order
  int ran = 0, reused = 0;                                  // cells run now / read back from results.json
  std::vector<std::pair<std::string, std::string>> failed;  // cell name, error
  std::string report_dir;
};

// Runs the cells (a cell whose <dir>/results.json exists is read back instead), writes each result to
// <dir>/results.json when the runner did not, then the report (write_report) into the sweep's output
// folder. A failing cell is reported and the sweep goes on.
inline SweepSummary run_sweep(const SweepConfig& c, const CellRunner& run, std::ostream* log = nullptr) {
  namespace fs = std::filesystem;
  MC_CHECK(bool(run), "run_sweep: no cell runner");
  const std::vector<SweepCell> cells = expand_sweep(c);
  SweepSummary sum;
  for (size_t i = 0; i < cells.size(); ++i) {
    const SweepCell& cell = cells[i];
    const std::string results = (fs::path(cell.dir) / "results.json").string();
    if (sum.report_dir.empty()) sum.report_dir = fs::path(cell.dir).parent_path().string();
    try {
      ojson j;
      const bool done = fs::is_regular_file(results);
      if (log)
        *log << "[" << i + 1 << "/" << cells.size() << "] " << cell.name << (done ? " (done before)" : "") << "\n";
      if (done) {
        j = ojson::parse(report_detail::read_text(results));
        ++sum.reused;
      } else {
        fs::create_directories(cell.dir);
        j = run(cell);
        if (!fs::is_regular_file(results)) write_text_file(results, j.dump(2) + "\n");
        ++sum.ran;
      }
      MC_CHECK(j.is_object(), results, ": a result must be a JSON object");
      ojson id = j;  // the grid's identity fields win over what the run wrote
      id["name"] = cell.name;
      id["model"] = cell.model;
      id["strategy"] = cell.strategy;
      id["task"] = cell.task;
      id["dataset"] = cell.dataset;
      id["percentage"] = cell.percentage;
      ResultRecord r = parse_result(id, results);
      r.dir = cell.dir;
      sum.records.push_back(std::move(r));
    } catch (const std::exception& e) {
      sum.failed.emplace_back(cell.name, e.what());
      if (log) *log << "  failed: " << e.what() << "\n";
    }
  }
  if (sum.report_dir.empty()) return sum;
  std::string note = std::to_string(cells.size()) + " cells: " + std::to_string(sum.ran) + " run now, " +
                     std::to_string(sum.reused) + " read back, " + std::to_string(sum.failed.size()) + " failed.";
  for (const auto& [n, msg] : sum.failed) note += "\n- failed `" + n + "`: " + msg;
  write_report(sum.records, sum.report_dir, c.name, note);
  return sum;
}

}  // namespace mc::tasks
