// mc — the command-line tool.
//
//   mc demo [--epochs N] [--seed S]   train a small CNN on procedurally generated images (offline, CPU)
//   mc inspect FILE.safetensors       list the tensors (name, dtype, shape) and the metadata of a file
//   mc version
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "mc/io/safetensors.hpp"
#include "mc/mc.hpp"

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

int inspect(const std::string& path) {
  auto f = io::SafetensorsFile::open(path);
  for (auto& [k, v] : f.metadata()) std::cout << "metadata " << k << " = " << (v.size() > 200 ? v.substr(0, 200) + "..." : v) << "\n";
  int64_t total = 0;
  for (const std::string& n : f.names()) {
    auto info = f.info(n);
    std::cout << n << "  " << dtype_name(info.dtype) << "  " << shape_str(info.shape) << "\n";
    total += numel(info.shape);
  }
  std::cout << f.names().size() << " tensors, " << total << " elements\n";
  return 0;
}

int usage() {
  std::cerr << "usage: mc demo [--epochs N] [--seed S] | mc inspect FILE.safetensors | mc version\n";
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
    if (cmd == "version") {
      std::cout << "mc 0.1.0\n";
      return 0;
    }
    return usage();
  } catch (const std::exception& e) {
    std::cerr << "mc: error: " << e.what() << "\n";
    return 1;
  }
}
