// mc — the command-line tool.
//
//   mc demo [--seed S] [--out DIR] [--quick]
//                                     the study in miniature (mc/tasks/demo.hpp): two tiny CLIPs pre-trained
//                                     on generated general / medical-like data, zero-shot and fine-tuned;
//                                     prints the paper's tables (offline, CPU, a few minutes; --quick: a
//                                     smaller, rougher run), writes them and plots to DIR (runs/demo)
//   mc inspect FILE                   list the tensors (name, dtype, shape) of a .safetensors file (with its
//                                     metadata and model card) or of a PyTorch checkpoint's state dict
//   mc convert SRC [--card CARD.json --tokenizer VOCAB] -o OUT.safetensors [--dtype f32|bf16]
//                                     PyTorch checkpoint -> mc model file (with a card: checked against the
//                                     architecture, card + vocabulary stored inside); without: raw tensors
//   mc embed --model M.safetensors [--images DIR|LIST.txt|FILE.npz [--key K]] [--texts FILE]
//            [--pixels FILE.npz] [--tokens FILE.npz] -o E.safetensors [--batch N] [--device cpu]
//                                     image / text embeddings (projected, not normalised)
//   mc run EXP.json [--resume] [--device cpu|cuda]
//                                     one experiment of the study (mc/tasks/experiment.hpp): writes
//                                     results.json and predictions.csv to its output folder
//   mc sweep SWEEP.json               a grid of experiments (mc/tasks/report.hpp): runs every cell like
//                                     mc run, then writes Tables 1-6 (Markdown, CSV) and SVG plots
//   mc version
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/io/npy.hpp"
#include "mc/io/safetensors.hpp"
#include "mc/io/torch_load.hpp"
#include "mc/mc.hpp"
#include "mc/models/models.hpp"
#include "mc/tasks/demo.hpp"
#include "mc/tasks/report.hpp"
#include "mc/tasks/run.hpp"

namespace {

using namespace mc;

// mc demo [--seed S] [--out DIR] [--quick]
int demo(int argc, char** argv) {
  tasks::DemoOptions o;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) o.seed = std::stoull(argv[++i]);
    else if (a == "--out" && i + 1 < argc) o.out = argv[++i];
    else if (a == "--quick") o.scale = 0.25;
    else fail("mc demo: unknown option '", a, "' (mc demo [--seed S] [--out DIR] [--quick])");
  }
  tasks::run_demo(o, std::cout);
  return 0;
}

bool is_safetensors(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".safetensors";
}

int inspect(const std::string& path) {
  if (!is_safetensors(path)) {  // a PyTorch checkpoint: its state dict
    io::TorchFile tf = io::load_torch(path);
    auto sd = io::find_state_dict(tf);
    std::cout << path << ": PyTorch checkpoint (" << io::torch_format_name(tf.format) << ")\n";
    int64_t total = 0;
    for (const auto& [n, t] : sd) {
      std::cout << n << "  " << dtype_name(t.dtype()) << "  " << shape_str(t.shape()) << "\n";
      total += t.numel();
    }
    std::cout << sd.size() << " tensors, " << total << " elements\n";
    return 0;
  }
  auto f = io::SafetensorsFile::open(path);
  for (auto& [k, v] : f.metadata()) {
    if (k == models::kCardKey) continue;
    std::cout << "metadata " << k << " = " << (v.size() > 200 ? v.substr(0, 200) + "..." : v) << "\n";
  }
  int64_t total = 0;
  for (const std::string& n : f.names()) {
    auto info = f.info(n);
    std::cout << n << "  " << (info.supported ? dtype_name(info.dtype) : info.dtype_str.c_str()) << "  "
              << shape_str(info.shape);
    if (n == models::kVocabTensor) std::cout << "  (tokenizer vocabulary, " << info.nbytes() << " bytes)";
    std::cout << "\n";
    if (n != models::kVocabTensor) total += numel(info.shape);
  }
  std::cout << f.names().size() << " tensors, " << total << " elements\n";
  auto it = f.metadata().find(models::kCardKey);
  if (it != f.metadata().end()) {
    models::ModelCard card = models::ModelCard::parse(it->second, path + ": " + models::kCardKey);
    std::cout << "model card:\n" << card.dump(2) << "\n";
  }
  return 0;
}

// ---- argument parsing shared by the subcommands ----

struct Args {
  std::map<std::string, std::string> opts;
  std::vector<std::string> positional;
};

// Parses "--name value" pairs (names in `known`) and positional arguments; anything else is an error.
Args parse_args(int argc, char** argv, int first, const std::vector<std::string>& known, const char* cmd) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("-", 0) == 0 && s.size() > 1) {
      MC_CHECK(std::find(known.begin(), known.end(), s) != known.end(), "mc ", cmd, ": unknown option '", s, "'");
      MC_CHECK(i + 1 < argc, "mc ", cmd, ": option ", s, " needs a value");
      MC_CHECK(!a.opts.count(s), "mc ", cmd, ": option ", s, " given twice");
      a.opts[s] = argv[++i];
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

std::string opt(const Args& a, const std::string& k, const std::string& def = "") {
  auto it = a.opts.find(k);
  return it == a.opts.end() ? def : it->second;
}

DType parse_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "bf16") return DType::BF16;
  fail("--dtype: expected f32 or bf16, got '", s, "'");
}

int convert(int argc, char** argv) {
  Args a = parse_args(argc, argv, 2, {"--card", "--tokenizer", "-o", "--out", "--dtype"}, "convert");
  MC_CHECK(a.positional.size() == 1, "mc convert: expected one source checkpoint, got ", a.positional.size());
  std::string out = opt(a, "-o", opt(a, "--out"));
  MC_CHECK(!out.empty(), "mc convert: missing -o OUT.safetensors");
  const DType dtype = parse_dtype(opt(a, "--dtype", "f32"));
  const std::string src = a.positional[0];
  models::Converted c;
  if (a.opts.count("--card")) {
    models::ModelCard card = models::ModelCard::load(opt(a, "--card"));
    c = models::convert_checkpoint(src, card, opt(a, "--tokenizer"), dtype);
  } else {
    MC_CHECK(!a.opts.count("--tokenizer"), "mc convert: --tokenizer needs --card (a raw conversion stores no vocabulary)");
    c = models::convert_checkpoint_raw(src, dtype);
  }
  models::save_converted(c, out);
  std::cout << src << " -> " << out << ": " << c.summary << "\n";
  if (!c.dropped.empty()) {
    std::cout << "dropped per the card (" << c.dropped.size() << "):";
    for (size_t i = 0; i < c.dropped.size() && i < 12; ++i) std::cout << " " << c.dropped[i];
    std::cout << (c.dropped.size() > 12 ? " ...\n" : "\n");
  }
  return 0;
}

// ---- embed ----

bool has_image_extension(const std::filesystem::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".bmp";
}

std::vector<std::string> read_lines(const std::string& path) {
  auto bytes = io::read_file(path);
  std::vector<std::string> lines;
  std::string cur;
  for (uint8_t b : bytes) {
    if (b == '\n') {
      if (!cur.empty() && cur.back() == '\r') cur.pop_back();
      lines.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(char(b));
    }
  }
  if (!cur.empty()) lines.push_back(cur);
  return lines;
}

// The images to embed: names, and either file paths or 8-bit arrays from an npz.
struct ImageSource {
  std::vector<std::string> names, paths;
  Tensor array;  // u8 [N, H, W] or [N, H, W, C] (npz)
};

ImageSource list_images(const std::string& spec, const std::string& key) {
  namespace fs = std::filesystem;
  ImageSource s;
  fs::path p(spec);
  if (fs::is_directory(p)) {
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_regular_file() && has_image_extension(e.path())) s.paths.push_back(e.path().string());
    std::sort(s.paths.begin(), s.paths.end());
    MC_CHECK(!s.paths.empty(), spec, ": no .png/.jpg/.jpeg/.bmp images in this folder");
    for (const auto& q : s.paths) s.names.push_back(fs::path(q).filename().string());
    return s;
  }
  MC_CHECK(fs::exists(p), spec, ": no such file or folder");
  if (p.extension() == ".npz") {
    auto arrays = io::load_npz_map(spec);
    std::string k = key;
    if (k.empty()) {
      std::vector<std::string> cands;
      for (const auto& [n, t] : arrays)
        if (t.dtype() == DType::U8 && (t.dim() == 3 || t.dim() == 4)) cands.push_back(n);
      std::string list;
      for (const auto& n : cands) list += (list.empty() ? "" : ", ") + n;
      MC_CHECK(!cands.empty(), spec, ": no uint8 image array [N, H, W] or [N, H, W, C]");
      MC_CHECK(cands.size() == 1, spec, ": several image arrays (", list, "); choose one with --key");
      k = cands[0];
    }
    auto it = arrays.find(k);
    MC_CHECK(it != arrays.end(), spec, ": no array '", k, "'");
    const Tensor& t = it->second;
    MC_CHECK(t.dtype() == DType::U8 && (t.dim() == 3 || (t.dim() == 4 && (t.size(3) == 1 || t.size(3) == 3))), spec,
             ": array '", k, "' must be uint8 [N, H, W] or [N, H, W, 1|3], got ", dtype_name(t.dtype()), " ",
             shape_str(t.shape()));
    s.array = t.contiguous();
    for (int64_t i = 0; i < t.size(0); ++i) s.names.push_back(k + "[" + std::to_string(i) + "]");
    return s;
  }
  // A list file: one image path per line, relative paths against the list's folder.
  const fs::path base = p.parent_path();
  for (const std::string& line : read_lines(spec)) {
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    fs::path q(line);
    s.paths.push_back((q.is_absolute() ? q : base / q).string());
    s.names.push_back(line);
  }
  MC_CHECK(!s.paths.empty(), spec, ": the list names no image");
  return s;
}

Tensor preprocess_range(const ImageSource& s, const data::Preprocess& pre, int64_t b, int64_t e) {
  if (!s.array.defined())
    return pre.batch_files(std::vector<std::string>(s.paths.begin() + b, s.paths.begin() + e));
  const int64_t H = s.array.size(1), W = s.array.size(2), C = s.array.dim() == 4 ? s.array.size(3) : 1;
  std::vector<io::Image> imgs;
  const uint8_t* base = s.array.data<uint8_t>();
  for (int64_t i = b; i < e; ++i) {
    io::Image img = io::Image::zeros(int(W), int(H), int(C));
    std::memcpy(img.pixels.data(), base + i * H * W * C, size_t(H * W * C));
    imgs.push_back(std::move(img));
  }
  return pre.batch(imgs);
}

// Runs `f` on rows [b, e) of n in batches and stacks the [rows, D] results.
template <class F>
Tensor batched(int64_t n, int64_t batch, F&& f) {
  std::vector<Tensor> parts;
  for (int64_t b = 0; b < n; b += batch) parts.push_back(f(b, std::min(n, b + batch)).to(Device::cpu()));
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

Tensor npz_array(const std::map<std::string, Tensor>& z, const std::string& file, const std::string& key) {
  auto it = z.find(key);
  MC_CHECK(it != z.end(), file, ": no array '", key, "'");
  return it->second;
}

int embed(int argc, char** argv) {
  Args a = parse_args(argc, argv, 2,
                      {"--model", "--images", "--key", "--texts", "--pixels", "--tokens", "-o", "--out", "--batch", "--device"},
                      "embed");
  MC_CHECK(a.positional.empty(), "mc embed: unexpected argument '", a.positional.empty() ? "" : a.positional[0], "'");
  const std::string model_path = opt(a, "--model"), out = opt(a, "-o", opt(a, "--out"));
  MC_CHECK(!model_path.empty(), "mc embed: missing --model M.safetensors");
  MC_CHECK(!out.empty(), "mc embed: missing -o E.safetensors");
  const bool any_input = a.opts.count("--images") || a.opts.count("--texts") || a.opts.count("--pixels") || a.opts.count("--tokens");
  MC_CHECK(any_input, "mc embed: nothing to embed (give --images, --texts, --pixels or --tokens)");
  MC_CHECK(!(a.opts.count("--images") && a.opts.count("--pixels")), "mc embed: give --images or --pixels, not both");
  MC_CHECK(!(a.opts.count("--texts") && a.opts.count("--tokens")), "mc embed: give --texts or --tokens, not both");
  MC_CHECK(!a.opts.count("--key") || a.opts.count("--images"), "mc embed: --key selects the array of an --images npz");
  int64_t batch = 32;
  if (a.opts.count("--batch")) {
    const std::string b = opt(a, "--batch");
    MC_CHECK(!b.empty() && b.find_first_not_of("0123456789") == std::string::npos && b.size() < 9 && std::stoll(b) > 0,
             "mc embed: --batch must be a positive integer, got '", b, "'");
    batch = std::stoll(b);
  }
  const Device device = Device::parse(opt(a, "--device", "cpu"));
  MC_CHECK(device.is_cpu() || backend_slot(device.type) != nullptr, "mc embed: --device ", device.str(),
           ": this build of mc has no CUDA backend (use --device cpu)");

  auto model = models::load_model(model_path);
  model->to(device);
  const models::ModelCard& card = model->card();
  NoGradGuard ng;
  nn::NamedTensors outputs;
  std::map<std::string, std::string> meta{{"mc.model", card.name},
                                          {"mc.embeddings", "projected, not L2-normalised"}};
  nlohmann::json image_names = nlohmann::json::array(), text_lines = nlohmann::json::array();

  if (a.opts.count("--images")) {
    ImageSource src = list_images(opt(a, "--images"), opt(a, "--key"));
    const data::Preprocess pre = card.preprocess.make();
    const int64_t n = int64_t(src.names.size());
    outputs.emplace_back("image_embeds", batched(n, batch, [&](int64_t b, int64_t e) {
                           return model->encode_image(preprocess_range(src, pre, b, e).to(device));
                         }));
    for (const auto& s : src.names) image_names.push_back(s);
  } else if (a.opts.count("--pixels")) {
    const std::string file = opt(a, "--pixels");
    Tensor px = npz_array(io::load_npz_map(file), file, "pixels");
    MC_CHECK(px.dtype() == DType::F32 && px.dim() == 4, file, ": 'pixels' must be float32 [N, 3, H, W], got ",
             dtype_name(px.dtype()), " ", shape_str(px.shape()));
    outputs.emplace_back("image_embeds", batched(px.size(0), batch, [&](int64_t b, int64_t e) {
                           return model->encode_image(px.narrow(0, b, e - b).contiguous().to(device));
                         }));
    for (int64_t i = 0; i < px.size(0); ++i) image_names.push_back("pixels[" + std::to_string(i) + "]");
  }

  if (a.opts.count("--texts")) {
    const std::string file = opt(a, "--texts");
    std::vector<std::string> texts;
    auto lines = read_lines(file);
    for (size_t i = 0; i < lines.size(); ++i)
      if (lines[i].find_first_not_of(" \t") != std::string::npos) {
        texts.push_back(lines[i]);
        text_lines.push_back(int64_t(i + 1));
      }
    MC_CHECK(!texts.empty(), file, ": no text (one text per line)");
    outputs.emplace_back("text_embeds", batched(int64_t(texts.size()), batch, [&](int64_t b, int64_t e) {
                           models::TokenBatch tok =
                               model->tokenize(std::vector<std::string>(texts.begin() + b, texts.begin() + e));
                           return model->encode_text(tok.input_ids.to(device), tok.attention_mask.to(device));
                         }));
  } else if (a.opts.count("--tokens")) {
    const std::string file = opt(a, "--tokens");
    auto z = io::load_npz_map(file);
    Tensor ids = npz_array(z, file, "input_ids");
    Tensor mask = z.count("attention_mask") ? z.at("attention_mask") : Tensor();
    MC_CHECK(ids.dtype() == DType::I64 && ids.dim() == 2, file, ": 'input_ids' must be int64 [M, L]");
    outputs.emplace_back("text_embeds", batched(ids.size(0), batch, [&](int64_t b, int64_t e) {
                           Tensor m = mask.defined() ? mask.narrow(0, b, e - b).contiguous().to(device) : Tensor();
                           return model->encode_text(ids.narrow(0, b, e - b).contiguous().to(device), m);
                         }));
    for (int64_t i = 0; i < ids.size(0); ++i) text_lines.push_back(i + 1);
  }
  if (!image_names.empty()) meta["mc.images"] = image_names.dump();
  if (!text_lines.empty()) meta["mc.texts"] = text_lines.dump();
  io::save_safetensors(out, outputs, meta);
  for (const auto& [n, t] : outputs) std::cout << n << " " << shape_str(t.shape()) << "\n";
  std::cout << "wrote " << out << "\n";
  return 0;
}

// mc run EXP.json [--resume] [--device cpu|cuda]
int run(int argc, char** argv) {
  std::string path;
  tasks::RunOptions o;
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--resume") {
      o.resume = true;
    } else if (s == "--device") {
      MC_CHECK(i + 1 < argc, "mc run: option --device needs a value");
      o.device = argv[++i];
    } else {
      MC_CHECK(s.rfind("-", 0) != 0, "mc run: unknown option '", s, "'");
      MC_CHECK(path.empty(), "mc run: one experiment file at a time (got '", path, "' and '", s, "')");
      path = s;
    }
  }
  MC_CHECK(!path.empty(), "mc run: missing the experiment file (mc run EXP.json [--resume] [--device cpu|cuda])");
  tasks::run_experiment(tasks::Experiment::load(path), o);
  return 0;
}

// mc sweep SWEEP.json [--device cpu|cuda]: every cell runs as `mc run` would (a finished cell is read back).
int sweep(int argc, char** argv) {
  std::string path, device;
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--device" && i + 1 < argc) device = argv[++i];
    else if (s.rfind("-", 0) == 0 || !path.empty())
      fail("mc sweep: unexpected argument '", s, "' (mc sweep SWEEP.json [--device cpu|cuda])");
    else path = s;
  }
  MC_CHECK(!path.empty(), "mc sweep: missing the sweep file (mc sweep SWEEP.json)");
  const tasks::SweepConfig config = tasks::SweepConfig::load(path);
  auto run_cell = [&](const tasks::SweepCell& cell) {
    tasks::RunOptions o;
    o.device = device;
    const std::string what = path + ": " + cell.name;
    return tasks::run_experiment(tasks::Experiment::from_json(cell.experiment, what, cell.base_dir), o).results;
  };
  tasks::SweepSummary sum = tasks::run_sweep(config, run_cell, &std::cerr);
  std::cout << sum.ran << " cells run, " << sum.reused << " read back, " << sum.failed.size()
            << " failed; tables and plots in " << sum.report_dir << "/ (tables.md)\n";
  for (const auto& [name, msg] : sum.failed) std::cerr << "failed: " << name << ": " << msg << "\n";
  return sum.failed.empty() ? 0 : 1;
}

int usage() {
  std::cerr << "usage:\n"
               "  mc demo [--seed S] [--out DIR] [--quick]\n"
               "  mc inspect FILE (.safetensors or a PyTorch checkpoint)\n"
               "  mc convert SRC [--card CARD.json --tokenizer VOCAB] -o OUT.safetensors [--dtype f32|bf16]\n"
               "  mc embed --model M.safetensors [--images DIR|LIST.txt|FILE.npz [--key K]] [--texts FILE]\n"
               "           [--pixels FILE.npz] [--tokens FILE.npz] -o E.safetensors [--batch N] [--device cpu]\n"
               "  mc run EXP.json [--resume] [--device cpu|cuda]\n"
               "  mc sweep SWEEP.json [--device cpu|cuda]\n"
               "  mc version\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2) return usage();
    const std::string cmd = argv[1];
    if (cmd == "demo") return demo(argc, argv);
    if (cmd == "inspect" && argc == 3) return inspect(argv[2]);
    if (cmd == "convert") return convert(argc, argv);
    if (cmd == "embed") return embed(argc, argv);
    if (cmd == "run") return run(argc, argv);
    if (cmd == "sweep") return sweep(argc, argv);
    if (cmd == "version") {
      std::cout << "mc 0.1.0\n";
      return 0;
    }
    return usage();
  } catch (const mc::Error& e) {
    std::cerr << "mc: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "mc: error: " << e.what() << "\n";
    return 1;
  }
}
