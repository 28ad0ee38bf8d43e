// Result tables in the paper's layouts, CSV / Markdown, SVG plots and the sweep grid.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "mc/tasks/experiment.hpp"
#include "mc/tasks/report.hpp"

using namespace mc;
using namespace mc::tasks;
using mc::tasks::ojson;

namespace {

ResultRecord rec(const std::string& model, const std::string& strategy, const std::string& task,
                 const std::string& dataset, std::map<std::string, double> metrics, double pct = 1.0) {
  ResultRecord r;
  r.model = model;
  r.strategy = strategy;
  r.task = task;
  r.dataset = dataset;
  r.metrics = std::move(metrics);
  r.percentage = pct;
  return r;
}

// Checks that every tag is closed in order (a small XML well-formedness check for the SVG writer's output).
bool well_formed(const std::string& s, std::string& why) {
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = s.find('<', i)) != std::string::npos) {
    const size_t e = s.find('>', i);
    if (e == std::string::npos) return why = "unterminated tag", false;
    const std::string tag = s.substr(i + 1, e - i - 1);
    i = e + 1;
    if (tag.empty()) return why = "empty tag", false;
    if (tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return why = "unexpected </" + name + ">", false;
      stack.pop_back();
      continue;
    }
    if (tag.back() == '/') continue;
    stack.push_back(tag.substr(0, tag.find_first_of(" \n")));
  }
  // Text between tags must not hold a raw '&' that starts no entity.
  for (size_t a = s.find('&'); a != std::string::npos; a = s.find('&', a + 1)) {
    const std::string ent = s.substr(a, 6);
    if (ent.rfind("&amp;", 0) && ent.rfind("&lt;", 0) && ent.rfind("&gt;", 0) && ent.rfind("&quot;", 0))
      return why = "raw &", false;
  }
  if (!stack.empty()) return why = "unclosed <" + stack.back() + ">", false;
  return true;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
  return n;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) : path(std::filesystem::temp_directory_path() / name) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("report: records are read strictly", "[report]") {
  ojson j = ojson::parse(R"({"model": "CLIP", "strategy": "zero-shot", "task": "classification",
    "dataset": "breastmnist", "metrics": {"test": {"auc": 0.5, "f1": null, "confusion": [1, 2]}, "val": {"auc": 0.9}}})");
  ResultRecord r = parse_result(j);
  CHECK(r.strategy == "zeroshot");
  CHECK(r.percentage == 1.0);
  CHECK(r.metric("auc") == 0.5);      // the test split, not val
  CHECK(std::isnan(r.metric("f1")));  // null
  CHECK(std::isnan(r.metric("accuracy")));
  CHECK(r.metrics.count("confusion") == 0);

  ojson alias = ojson::parse(R"({"model": "m", "strategy": "lora", "task": "retrieval", "dataset": "roco-radiology",
                                 "metrics": {"i2t_r@1": 0.25, "recall@5": 0.5}})");
  CHECK(parse_result(alias).metric("r@1") == 0.25);
  CHECK(parse_result(alias).metric("r@5") == 0.5);

  ojson bad = j;
  bad["strategy"] = "linear-probe";
  CHECK_THROWS_WITH(parse_result(bad, "x.json"), Catch::Contains("x.json") && Catch::Contains("linear-probe"));
  bad = j;
  bad.erase("task");
  CHECK_THROWS_WITH(parse_result(bad), Catch::Contains("\"task\""));
  bad = j;
  bad["percentage"] = 5;
  CHECK_THROWS_WITH(parse_result(bad), Catch::Contains("percentage"));
  CHECK(parse_results(ojson::array({j, j})).size() == 2);
}

TEST_CASE("report: Table 1 cells, layout and best per column", "[report]") {
  std::vector<ResultRecord> recs = {
      rec("CLIP", "zeroshot", "classification", "pneumoniamnist", {{"auc", 0.5}, {"accuracy", 0.625}, {"f1", 0.769}}),
      rec("CLIP", "zeroshot", "classification", "breastmnist", {{"auc", 0.5}, {"accuracy", 0.269}, {"f1", 0.0}}),
      rec("Biomed-CLIP", "zeroshot", "classification", "breastmnist",
          {{"auc", 0.67}, {"accuracy", 0.545}, {"f1", 0.564}}),
      rec("CLIP", "partial", "classification", "breastmnist", {{"auc", 0.99}}),  // not zero-shot: not in Table 1
  };
  Table t = table1_zeroshot_classification(recs);
  REQUIRE(t.header.size() == 2);
  // Data sets in the paper's order (BreastMNIST before PneumoniaMNIST) whatever the record order.
  CHECK(t.header[0] == std::vector<std::string>{"", "BreastMNIST", "", "", "PneumoniaMNIST", "", ""});
  CHECK(t.header[1] == std::vector<std::string>{"", "AUC", "Acc.", "F1", "AUC", "Acc.", "F1"});
  REQUIRE(t.values.size() == 2);
  CHECK(t.labels[0][0] == "CLIP");
  CHECK(t.labels[1][0] == "Biomed-CLIP");
  CHECK(t.text(0, 0) == "50.0");
  CHECK(t.text(0, 1) == "26.9");
  CHECK(t.text(1, 0) == "67.0");
  CHECK(t.text(1, 3) == "");  // Biomed-CLIP has no PneumoniaMNIST record
  CHECK(t.marks[1][0] == 1);
  CHECK(t.marks[0][0] == 0);
  CHECK(t.marks[0][3] == 0);  // a single value in the column: nothing to compare

  const std::string md = to_markdown(t);
  CHECK(md.rfind("| | BreastMNIST | | | PneumoniaMNIST | | |\n|---|---|---|---|---|---|---|\n| | AUC | Acc. | F1 | AUC "
                 "| Acc. | F1 |\n",
                 0) == 0);
  CHECK(md.find("| CLIP | 50.0 | 26.9 | 0.0 | 50.0 | 62.5 | 76.9 |\n") != std::string::npos);
  CHECK(md.find("| Biomed-CLIP | **67.0** | **54.5** | **56.4** | \xE2\x80\x94 | \xE2\x80\x94 | \xE2\x80\x94 |\n") !=
        std::string::npos);
  CHECK(md.find("\nTable 1: ") != std::string::npos);

  CHECK(to_csv(t) ==
        ",BreastMNIST,,,PneumoniaMNIST,,\n"
        ",AUC,Acc.,F1,AUC,Acc.,F1\n"
        "CLIP,50.0,26.9,0.0,50.0,62.5,76.9\n"
        "Biomed-CLIP,67.0,54.5,56.4,,,\n");
}

TEST_CASE("report: Tables 3-5 group models x strategies, best and second per row", "[report]") {
  std::vector<ResultRecord> recs;
  // Breast AUC: CLIP 78 / 50 / 81, Biomed 80 / 84 / 84 -> best 84 (twice), second 81.
  const double auc[2][3] = {{0.78, 0.50, 0.81}, {0.80, 0.84, 0.84}};
  const char* strat[3] = {"partial", "full", "lora"};
  for (int m = 0; m < 2; ++m)
    for (int s = 0; s < 3; ++s)
      recs.push_back(rec(m ? "Biomed-CLIP" : "CLIP", strat[s], "classification", "breastmnist",
                         {{"auc", auc[m][s]}, {"accuracy", 0.5 + 0.01 * (3 * m + s)}, {"f1", 0.5}}));
  recs.push_back(
      rec("CLIP", "lora", "classification", "breastmnist", {{"auc", 0.81}, {"accuracy", 0.9}}));     // last wins
  recs.push_back(rec("CLIP", "full", "classification", "breastmnist", {{"accuracy", 0.99}}, 0.05));  // Table 6 only
  Table t = table3_finetuned_classification(recs);
  REQUIRE(t.label_cols == 2);
  CHECK(t.header[0] == std::vector<std::string>{"", "", "CLIP", "", "", "Biomed-CLIP", "", ""});
  CHECK(t.header[1] == std::vector<std::string>{"", "", "Part", "Full", "LoRA", "Part", "Full", "LoRA"});
  REQUIRE(t.values.size() == 3);
  CHECK(t.labels[0] == std::vector<std::string>{"Breast", "AUC"});
  CHECK(t.labels[1] == std::vector<std::string>{"", "Acc."});
  CHECK(t.marks[0] == std::vector<int>{0, 0, 2, 0, 1, 1});
  CHECK(t.text(1, 2) == "90.0");  // the later CLIP / lora record
  CHECK(t.marks[1][2] == 1);
  CHECK(std::isnan(t.values[2][2]));                        // its f1 is missing
  CHECK(t.marks[2] == std::vector<int>{0, 0, 0, 0, 0, 0});  // all equal: one printed value, nothing marked
  const std::string md = to_markdown(t);
  CHECK(md.find("| Breast | AUC | 78.0 | 50.0 | <u>81.0</u> | 80.0 | **84.0** | **84.0** |") != std::string::npos);

  std::vector<ResultRecord> vqa = {rec("A", "partial", "vqa", "slake", {{"accuracy", 0.7}, {"f1", 0.6}}),
                                   rec("A", "lora", "vqa", "vqa-rad", {{"accuracy", 0.5}, {"f1", 0.4}})};
  Table t5 = table5_vqa(vqa);
  CHECK(t5.header[1] == std::vector<std::string>{"", "", "Part", "LoRA"});
  REQUIRE(t5.labels.size() == 4);
  CHECK(t5.labels[0][0] == "VQA-RAD");  // the paper's order
  CHECK(t5.labels[2][0] == "SLAKE");
  CHECK(t5.text(0, 1) == "50.0");
  CHECK(t5.text(0, 0) == "");
  CHECK_FALSE(table4_finetuned_retrieval(vqa).has_values());
}

TEST_CASE("report: Table 6 by training fraction", "[report]") {
  std::vector<ResultRecord> recs;
  const double pct[3] = {0.05, 0.25, 1.0};
  for (int m = 0; m < 2; ++m)
    for (const char* s : {"full", "lora"})
      for (int p = 0; p < 3; ++p)
        recs.push_back(rec(m ? "Biomed" : "CLIP", s, "classification", "organamnist",
                           {{"accuracy", 0.5 + 0.1 * p + 0.05 * m + (s[0] == 'l' ? 0.01 : 0)}}, pct[p]));
  recs.push_back(rec("CLIP", "full", "classification", "breastmnist", {{"accuracy", 0.9}}));  // no fractions: left out
  recs.push_back(rec("CLIP", "partial", "classification", "organamnist", {{"accuracy", 0.7}}));  // idem
  Table t = table6_data_fraction(recs);
  CHECK(t.header[0] == std::vector<std::string>{"", "", "OrganA", "", ""});
  CHECK(t.header[1] == std::vector<std::string>{"Size", "ft.", "5%", "25%", "100%"});
  REQUIRE(t.values.size() == 4);
  CHECK(t.labels[0] == std::vector<std::string>{"CLIP", "full"});
  CHECK(t.labels[1] == std::vector<std::string>{"", "LoRA"});
  CHECK(t.labels[2] == std::vector<std::string>{"Biomed", "full"});
  CHECK(t.text(3, 2) == "76.0");
  for (size_t c = 0; c < 3; ++c) CHECK(t.marks[3][c] == 1);  // Biomed LoRA best in every column
  CHECK(t.marks[0][0] == 0);
  CHECK(paper_tables(recs).size() == 2);  // Table 3 (full data) and Table 6
}

TEST_CASE("report: CSV quoting and records in long form", "[report]") {
  std::vector<ResultRecord> recs = {
      rec("My \"odd\", model", "zeroshot", "retrieval", "roco-radiology", {{"r@1", 0.125}, {"r@5", std::nan("")}})};
  Table t = table2_zeroshot_retrieval(recs);
  CHECK(t.header[0][1] == "Radiology [%]");
  const std::string csv = to_csv(t);
  CHECK(csv.find("\"My \"\"odd\"\", model\",12.5,,\n") != std::string::npos);
  const std::string lf = records_csv(recs);
  CHECK(lf.rfind("name,model,strategy,task,dataset,percentage,metric,value\n", 0) == 0);
  CHECK(lf.find(",\"My \"\"odd\"\", model\",zeroshot,retrieval,roco-radiology,1,r@1,0.125\n") != std::string::npos);
  CHECK(lf.find(",r@5,\n") != std::string::npos);
  Table m;
  m.header = {{"a|b", "x"}};
  m.labels = {{"r"}};
  m.values = {{0.5}};
  m.marks = {{0}};
  CHECK(to_markdown(m).rfind("| a\\|b | x |\n|---|---|\n| r | 50.0 |\n", 0) == 0);
}

TEST_CASE("report: SVG line plots and ROC curves are well-formed", "[report]") {
  const double nan = std::nan("");
  std::vector<Series> s = {{"train <a&b>", {1, 2, 3, 4}, {2.0, 1.5, nan, 1.0}},
                           {"val", {1, 2, 3, 4}, {2.2, 1.9, 1.8, 1.7}, true},
                           {"empty", {}, {}}};
  PlotOptions o;
  o.title = "Loss \"x\"";
  o.x_label = "epoch";
  const std::string svg = line_plot_svg(o, s);
  std::string why;
  CHECK(well_formed(svg, why));
  CHECK(why == "");
  CHECK(svg.rfind("<?xml", 0) == 0);
  CHECK(count(svg, "<g class=\"series\"") == 3);
  CHECK(count(svg, "<polyline") == 3);  // the NaN splits the first series in two; the empty one has none
  CHECK(svg.find("train &lt;a&amp;b&gt;") != std::string::npos);
  CHECK(svg.find("nan") == std::string::npos);
  CHECK(svg.find("inf") == std::string::npos);
  CHECK(count(svg, "stroke-dasharray=\"6 4\"") == 2);  // the dashed series and its legend entry

  // A ROC from labels and scores, through mc's roc_curve.
  std::vector<double> scores = {0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.1};
  std::vector<int64_t> labels = {1, 1, 0, 1, 0, 0, 1, 0};
  RocCurve rc = roc_curve(scores, labels);
  const std::string roc = roc_plot_svg("ROC", {{"model A", rc.fpr, rc.tpr}, {"model B", {0, 1}, {0, 1}}});
  CHECK(well_formed(roc, why));
  CHECK(why == "");
  CHECK(count(roc, "<g class=\"series\"") == 2);
  CHECK(count(roc, "class=\"chance\"") == 1);
  // Unit axes: (0, 0) maps to the bottom-left corner of the frame and (1, 1) to the top-right.
  CHECK(roc.find("<rect x=\"64\" y=\"36\" width=\"466\" height=\"376\"") != std::string::npos);
  CHECK(roc.find("points=\"64,412 530,36\"") != std::string::npos);
  // The legend makes room for its longest label.
  const std::string wide = roc_plot_svg("ROC", {{std::string(60, 'x'), {0, 1}, {0, 1}}});
  CHECK(wide.find("width=\"1006\"") != std::string::npos);  // 64 + 466 + 56 + 7 * 60
}

TEST_CASE("report: ROC curves from a run folder's predictions, loss curves from the history", "[report]") {
  TempDir tmp("mc_test_report_curves");
  std::ofstream(tmp.path / "predictions.csv") << "index,row,label,prediction,prob_0,prob_1,prob_2\n"
                                                 "0,0,0,0,0.7,0.2,0.1\n1,1,1,1,0.1,0.8,0.1\n2,2,2,1,0.2,0.5,0.3\n"
                                                 "3,3,2,2,0.1,0.1,0.8\n";
  ResultRecord r = rec("m", "full", "classification", "organamnist", {{"auc", 0.9}});
  r.dir = tmp.path.string();
  r.extra["history"] = ojson::parse(R"([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2},
                                         {"epoch": 2, "train_loss": 0.5, "val_loss": null}, {"note": "no epoch"}])");
  RocCurve c = roc_of(r);
  REQUIRE(c.fpr.size() >= 2);
  CHECK(c.fpr.front() == 0);
  CHECK(c.tpr.back() == 1);
  // Micro-averaged one-vs-rest: 12 (sample, class) scores, 4 positives.
  std::vector<double> sc = {0.7, 0.2, 0.1, 0.1, 0.8, 0.1, 0.2, 0.5, 0.3, 0.1, 0.1, 0.8};
  std::vector<int64_t> y = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1};
  CHECK(c.fpr == roc_curve(sc, y).fpr);
  LossCurve l = loss_curve(r);
  CHECK(l.epoch == std::vector<double>{1, 2});
  CHECK(l.train == std::vector<double>{1.0, 0.5});
  CHECK(std::isnan(l.val[1]));
}

TEST_CASE("report: the sweep grid expands strictly", "[report]") {
  ojson j = ojson::parse(R"({
    "name": "mini", "output": "out",
    "models": ["weights/clip-vit-b32.safetensors", {"name": "Biomed", "path": "b.safetensors",
               "experiment": {"train": {"lr": 1e-5}}}],
    "strategies": ["zeroshot", "partial", "lora"],
    "datasets": [{"name": "organamnist", "task": "classification", "data": {"dataset": "medmnist", "path": "o.npz"}},
                 {"name": "vqa-rad", "task": "vqa", "data": {"dataset": "vqa-rad", "path": "vqa"},
                  "experiment": {"train": {"epochs": 3}}}],
    "percentages": [0.1, 1.0],
    "experiment": {"seed": 1, "train": {"epochs": 2, "batch_size": 8}, "progress": "off"}})");
  SweepConfig c = SweepConfig::parse(j, "S.json", "/base");
  std::vector<SweepCell> cells = expand_sweep(c);
  // organamnist: 2 models x (zeroshot at 100% + partial, lora at 10% and 100%) = 10; vqa-rad: 2 x 2 = 4.
  REQUIRE(cells.size() == 14);
  CHECK(cells[0].name == "organamnist_clip-vit-b32_zeroshot");
  CHECK(cells[0].model == "clip-vit-b32");
  CHECK(cells[1].name == "organamnist_clip-vit-b32_partial_p10");
  CHECK(cells[1].percentage == 0.1);
  CHECK(cells[1].experiment["data"]["percentage"] == 0.1);
  CHECK(cells[1].experiment["data"]["path"] == "o.npz");
  CHECK(cells[1].base_dir == "/base");
  CHECK(cells[2].name == "organamnist_clip-vit-b32_partial");
  CHECK_FALSE(cells[2].experiment["data"].contains("percentage"));
  CHECK(cells[1].experiment["strategy"] == "partial");
  CHECK(cells[1].experiment["output"] == "/base/out/organamnist_clip-vit-b32_partial_p10");
  CHECK(cells[1].dir == "/base/out/organamnist_clip-vit-b32_partial_p10");
  const SweepCell& b = cells[6];
  CHECK(b.name == "organamnist_biomed_partial_p10");
  CHECK(b.model == "Biomed");
  CHECK(b.experiment["train"]["lr"] == 1e-5);       // the model's experiment merged in
  CHECK(b.experiment["train"]["batch_size"] == 8);  // ... over the sweep's
  CHECK(b.experiment["seed"] == 1);
  CHECK(cells[10].name == "vqa-rad_clip-vit-b32_partial");
  CHECK(cells[10].task == "vqa");
  CHECK(cells[10].experiment["train"]["epochs"] == 3);  // the data set's experiment wins
  CHECK(cells[13].name == "vqa-rad_biomed_lora");
  // Every cell is an experiment `mc run` accepts, with the grid's settings.
  for (const SweepCell& cell : cells) {
    const Experiment e = Experiment::from_json(cell.experiment, cell.name, cell.base_dir);
    CHECK(e.name == cell.name);
    CHECK(e.strategy.name == cell.strategy);
    CHECK(e.task == cell.task);
    CHECK(e.data.percentage == cell.percentage);
    CHECK(e.output == cell.dir);
    CHECK(e.model == (cell.model == "Biomed" ? "/base/b.safetensors" : "/base/weights/clip-vit-b32.safetensors"));
  }
  // Experiments keep the keys in the order given (the file reads like the sweep).
  CHECK(cells[0].experiment.begin().key() == "seed");

  auto err = [&](const std::function<void(ojson&)>& edit, const std::string& want) {
    ojson k = j;
    edit(k);
    CHECK_THROWS_WITH(SweepConfig::parse(k, "S.json"), Catch::Contains("S.json") && Catch::Contains(want));
  };
  err([](ojson& k) { k["modles"] = 1; }, "unknown key 'modles'");
  err([](ojson& k) { k["datasets"][1]["taks"] = "vqa"; }, "unknown key 'datasets[1].taks'");
  err([](ojson& k) { k["models"][1]["experiment"]["strategy"] = "full"; },
      "'models[1].experiment.strategy' is set by the sweep grid");
  err([](ojson& k) { k["strategies"][0] = "zero-shot"; }, "'strategies[0]' must be one of");
  err([](ojson& k) { k["percentages"] = {0, 1}; }, "fractions in (0, 1]");
  err([](ojson& k) { k["datasets"][0]["task"] = "segmentation"; }, "datasets[0].task");
  err([](ojson& k) { k.erase("models"); }, "missing key 'models'");
  err([](ojson& k) { k["models"][1]["name"] = "clip-vit-b32"; }, "two models are named");
  err([](ojson& k) { k["datasets"][0]["strategies"] = {"full"}; },
      "'datasets[0].strategies' lists \"full\", which is not");
  err(
      [](ojson& k) {
        k["datasets"][0]["strategies"] = {"lora", "lora"};
      },
      "'datasets[0].strategies' lists \"lora\" twice");

  ojson only = j;  // a data set can keep to some of the grid's strategies
  only["datasets"][1]["strategies"] = {"lora"};
  std::vector<SweepCell> fewer = expand_sweep(SweepConfig::parse(only, "S.json", "/base"));
  REQUIRE(fewer.size() == 12);
  CHECK(fewer[10].name == "vqa-rad_clip-vit-b32_lora");
  CHECK(fewer[11].name == "vqa-rad_biomed_lora");
}

TEST_CASE("report: run_sweep runs, resumes and writes the report", "[report]") {
  TempDir tmp("mc_test_report_sweep");
  ojson j = ojson::parse(R"({"name": "tiny",
    "models": [{"name": "General", "path": "g.safetensors"}, {"name": "Medical", "path": "m.safetensors"}],
    "strategies": ["zeroshot", "full"],
    "datasets": [{"name": "breastmnist", "task": "classification", "data": {"dataset": "medmnist", "path": "b.npz"}}],
    "percentages": [0.5, 1.0], "output": "sweep"})");
  SweepConfig c = SweepConfig::parse(j, "S.json", tmp.path.string());
  int calls = 0;
  CellRunner runner = [&](const SweepCell& cell) {
    ++calls;
    MC_CHECK(!(cell.model == "General" && cell.strategy == "full" && cell.percentage < 1), "out of memory");
    const double base = cell.model == "Medical" ? 0.8 : 0.6;
    ojson r;
    r["metrics"] = {{"test", {{"auc", base + (cell.strategy == "full") * 0.1}, {"accuracy", base}, {"f1", base}}}};
    r["history"] = ojson::array({{{"epoch", 1}, {"train_loss", 1.0}, {"val_loss", 1.1}},
                                 {{"epoch", 2}, {"train_loss", 0.6}, {"val_loss", 0.9}}});
    r["roc"] = {{"fpr", {0.0, 0.2, 1.0}}, {"tpr", {0.0, 0.7, 1.0}}};
    return r;
  };
  SweepSummary s = run_sweep(c, runner);
  CHECK(calls == 6);
  CHECK(s.ran == 5);
  REQUIRE(s.failed.size() == 1);
  CHECK(s.failed[0].first == "breastmnist_general_full_p50");
  CHECK(s.failed[0].second.find("out of memory") != std::string::npos);
  const auto dir = tmp.path / "sweep";
  CHECK(s.report_dir == dir.string());
  CHECK(std::filesystem::is_regular_file(dir / "breastmnist_medical_full_p50" / "results.json"));
  const std::string md = slurp(dir / "tables.md");
  CHECK(md.find("Table 1: ") != std::string::npos);
  CHECK(md.find("Table 3: ") != std::string::npos);
  CHECK(md.find("Table 6: ") != std::string::npos);
  CHECK(md.find("| Medical | **80.0** | **80.0** | **80.0** |") != std::string::npos);
  CHECK(md.find("failed `breastmnist_general_full_p50`") != std::string::npos);
  CHECK(slurp(dir / "table6.csv") == ",,Breast,\nSize,ft.,50%,100%\nGeneral,full,,60.0\nMedical,full,80.0,80.0\n");
  const std::string loss = slurp(dir / "plots" / "loss_breastmnist.svg");
  CHECK(count(loss, "<g class=\"series\"") == 2 * 4);  // train + val per run on the whole training set
  const std::string roc = slurp(dir / "plots" / "roc_breastmnist.svg");
  CHECK(count(roc, "<g class=\"series\"") == 4);
  CHECK(roc.find("Medical Full (AUC 0.900)") != std::string::npos);

  // Again: the five finished cells are read back, only the failed one runs.
  calls = 0;
  SweepSummary again = run_sweep(c, runner);
  CHECK(calls == 1);
  CHECK(again.reused == 5);
  CHECK(again.records.size() == 5);
  CHECK(again.records[0].dir == (dir / "breastmnist_general_zeroshot").string());
}

TEST_CASE("report: the example sweeps expand into valid experiments", "[report]") {
  const std::string dir = std::string(MC_SOURCE_DIR) + "/examples/";
  const SweepConfig paper = SweepConfig::load(dir + "sweep-paper.json");
  const std::vector<SweepCell> cells = expand_sweep(paper);
  // 4 models: 4 classification sets x 4 strategies, 2 retrieval sets x 4 and ROCO mixed zero-shot only (as in
  // the paper's Tables 2 and 4), 2 VQA sets x 3 (no zero-shot).
  CHECK(cells.size() == 4 * (4 * 4 + 2 * 4 + 1 + 2 * 3));
  const SweepConfig fractions = SweepConfig::load(dir + "sweep-data-fraction.json");
  const std::vector<SweepCell> more = expand_sweep(fractions);
  CHECK(more.size() == 2 * 2 * 2 * 5);
  for (const std::vector<SweepCell>* list : {&cells, &more})
    for (const SweepCell& c : *list) {
      const Experiment e = Experiment::from_json(c.experiment, c.name, c.base_dir);
      CHECK(e.output == c.dir);
      CHECK(std::filesystem::path(e.model).is_absolute());
    }
}
