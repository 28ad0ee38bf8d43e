// mc — the command-line tool.
//
//   mc demo [--epochs N] [--seed S]   train a small CNN on procedurally generated images (offline, CPU)
//   mc inspect FILE                   list the tensors (name, dtype, shape) of a .safetensors file (with its
//                                     metadata and model card) or of a PyTorch checkpoint's state dict
//   mc convert SRC [--card CARD.json --tokenizer VOCAB] -o OUT.safetensors [--dtype f32|bf16]
//                                     PyTorch checkpoint -> mc model file (with a card: checked against the
//                                     architecture, card + vocabulary stored inside); without: raw tensors
//   mc embed --model M.safetensors [--images DIR|LIST.txt|FILE.npz [--key K]] [--texts FILE]
//            [--pixels FILE.npz] [--tokens FILE.npz] -o E.safetensors [--batch N] [--device cpu]
//                                     image / text embeddings (projected, not normalised)
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

namespace {

using namespace mc;

// Images of 16x16 with one of four patterns (horizontal bar, vertical bar, diagonal, ring) at a random
// position, plus noise. Labels are the pattern index.
std::pair<Tensor, Tensor> make_shapes(int64_t n, uint64_t seed) {
  const int64_t S = 16;
  Generator g(seed);
  std::vector<float> noise = randn({n, S, S}, &g).to_vector<float>();
  std::vector<float> pos = rand({n, 2}, &g).to_vector<float>();
  std::vector<float> img(size_t(n * S * S));
  std::vector<int64_t> label(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i % 4, cy = 4 + int64_t(pos[size_t(2 * i)] * 8), cx = 4 + int64_t(pos[size_t(2 * i + 1)] * 8);
    label[size_t(i)] = c;
    for (int64_t y = 0; y < S; ++y)
      for (int64_t x = 0; x < S; ++x) {
        const int64_t dy = y - cy, dx = x - cx;
        bool on = false;
        if (c == 0) on = std::abs(dy) <= 1 && std::abs(dx) <= 4;
        if (c == 1) on = std::abs(dx) <= 1 && std::abs(dy) <= 4;
        if (c == 2) on = std::abs(dx - dy) <= 1 && std::abs(dx) <= 4;
        if (c == 3) on = std::abs(dx * dx + dy * dy - 9) <= 3;
        img[size_t((i * S + y) * S + x)] = (on ? 1.0f : 0.0f) + 0.3f * noise[size_t((i * S + y) * S + x)];
      }
  }
  return {from_vector(img, {n, 1, S, S}), from_vector(label, {n})};
}

struct SmallCNN : nn::Module {
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2;
  std::shared_ptr<nn::Linear> fc;
  SmallCNN() {
    conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(1, 16, 3, 1, 1, 1, 1, false));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(16));
    conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(16, 32, 3, 1, 1, 1, 1, false));
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(32));
    fc = register_module("fc", std::make_shared<nn::Linear>(32, 4));
  }
  Tensor forward(const Tensor& x) {
    Tensor h = max_pool2d(relu((*bn1)(conv1->forward(x))), 2);
    h = max_pool2d(relu((*bn2)(conv2->forward(h))), 2);
    return fc->forward(adaptive_avg_pool2d(h, 1, 1).flatten(1));
  }
};

int demo(int epochs, uint64_t seed) {
  manual_seed(seed);
  std::cout << "mc demo: a small CNN learns four procedurally generated shapes (16x16 images), on the CPU.\n"
               "This exercises the engine (conv, batch norm, pooling, autograd, AdamW, cosine schedule); the full\n"
               "study of the paper runs through the models and tasks of mc.\n\n";
  auto [xtr, ytr] = make_shapes(2048, seed);
  auto [xte, yte] = make_shapes(512, seed + 1);
  SmallCNN net;
  std::cout << "parameters: " << net.num_parameters() << "\n";
  optim::ParamGroup pg;
  pg.lr = 3e-3;
  pg.weight_decay = 1e-4;
  optim::AdamW opt({optim::group_of(net, pg)});
  const int64_t batch = 64, steps_per_epoch = xtr.size(0) / batch;
  optim::Scheduler sched(opt, optim::warmup_cosine(epochs * steps_per_epoch, steps_per_epoch / 2));
  Generator shuffle(seed + 2);
  auto t0 = std::chrono::steady_clock::now();
  for (int e = 0; e < epochs; ++e) {
    net.train();
    std::vector<float> order = rand({xtr.size(0)}, &shuffle).to_vector<float>();
    std::vector<int64_t> perm(order.size());
    std::iota(perm.begin(), perm.end(), 0);
    std::sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return order[size_t(a)] < order[size_t(b)]; });
    Tensor p = from_vector(perm, {int64_t(perm.size())});
    double total = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      Tensor idx = p.narrow(0, s * batch, batch);
      Tensor loss = cross_entropy(net.forward(index_select(xtr, 0, idx)), index_select(ytr, 0, idx));
      opt.zero_grad();
      loss.backward();
      optim::clip_grad_norm_(net.parameters(), 1.0);
      opt.step();
      sched.step();
      total += loss.item<double>();
    }
    net.eval();
    NoGradGuard ng;
    const double acc = mean(eq(argmax(net.forward(xte), 1), yte).to(DType::F32)).item<double>();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("epoch %2d  train loss %.4f  test accuracy %.3f  (%.1f s, %.0f images/s)\n", e + 1,
                total / double(steps_per_epoch), acc, secs, double((e + 1) * steps_per_epoch * batch) / secs);
  }
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

int usage() {
  std::cerr << "usage:\n"
               "  mc demo [--epochs N] [--seed S]\n"
               "  mc inspect FILE (.safetensors or a PyTorch checkpoint)\n"
               "  mc convert SRC [--card CARD.json --tokenizer VOCAB] -o OUT.safetensors [--dtype f32|bf16]\n"
               "  mc embed --model M.safetensors [--images DIR|LIST.txt|FILE.npz [--key K]] [--texts FILE]\n"
               "           [--pixels FILE.npz] [--tokens FILE.npz] -o E.safetensors [--batch N] [--device cpu]\n"
               "  mc version\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2) return usage();
    const std::string cmd = argv[1];
    if (cmd == "demo") {
      int epochs = 6;
      uint64_t seed = 8464;
      for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--epochs" && i + 1 < argc) epochs = std::stoi(argv[++i]);
        else if (a == "--seed" && i + 1 < argc) seed = std::stoull(argv[++i]);
        else return usage();
      }
      return demo(epochs, seed);
    }
    if (cmd == "inspect" && argc == 3) return inspect(argv[2]);
    if (cmd == "convert") return convert(argc, argv);
    if (cmd == "embed") return embed(argc, argv);
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
