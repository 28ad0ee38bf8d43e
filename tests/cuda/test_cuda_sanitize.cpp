// Every CUDA primitive once, on small odd shapes, compared with the CPU: a quick sweep that is also the
// subset run under compute-sanitizer (memcheck, racecheck, initcheck, synccheck) by bench/gpu.sh:
//   compute-sanitizer --tool memcheck mc_cuda_tests "[sanitize]"
#include "cuda_test.hpp"

using namespace mct;

TEST_CASE("sweep: memory and elementwise", "[sanitize]") {
  Tensor x = randn_h({37, 129}), y = randn_h({129});
  check_same("sweep copy/convert", {x}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{in[0].t().contiguous(), in[0].to(DType::BF16), in[0].to(DType::I64),
                               in[0].narrow(1, 3, 50).to(DType::F16), full({5, 3}, 2.5, DType::F32, in[0].device())};
  });
  check_same("sweep unary/binary/where", {x, y}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{gelu(in[0]), tanh(in[0]) * in[1], where(in[0] > 0.0, in[0], in[1]),
                               maximum(in[0], in[1]), lt(in[0], in[1]), clamp(in[0], -1, 1),
                               quick_gelu(in[0].t()), relu(in[0]) + sigmoid(in[0])};
  }, grads());
  Tensor big = randn_h({70001});
  check_same("sweep elementwise odd size", {big}, one([](const std::vector<Tensor>& in) {
               return exp(in[0]) * in[0] - 1.0;
             }), grads());
  Generator a(3), b(3);
  compare("sweep random uniform", rand({1001}, &a), rand({1001}, &b, DType::F32, gpu()), 0);
  compare("sweep random normal", randn({1001}, &a), randn({1001}, &b, DType::F32, gpu()), 2e-6);
}

TEST_CASE("sweep: reductions, softmax, matmul", "[sanitize]") {
  Tensor x = randn_h({5, 37, 129}, DType::F32, 0.5, 1);
  check_same("sweep reduce", {x}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{sum(in[0], {2}), mean(in[0], {0}), amax(in[0], {0, 2}), sum(in[0]),
                               argmax(in[0], 1), argmin(in[0], 2)};
  }, grads());
  check_same("sweep softmax", {x}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{softmax(in[0], -1), log_softmax(in[0], 1)};
  }, grads());
  Tensor a = randn_h({3, 37, 65}), b = randn_h({65, 33});
  check_same("sweep matmul", {a, b}, one([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }), grads());
  check_same("sweep matmul bf16", {detail::cast(a, DType::BF16), detail::cast(b, DType::BF16)},
             one([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }), grads());
}

TEST_CASE("sweep: normalisation", "[sanitize]") {
  Tensor x = randn_h({37, 200}), w = randn_h({200}, DType::F32, 1, 0.1), b = randn_h({200});
  check_same("sweep layer_norm", {x, w, b},
             one([](const std::vector<Tensor>& in) { return layer_norm(in[0], {200}, in[1], in[2]); }), grads());
  check_same("sweep layer_norm bf16", {detail::cast(x, DType::BF16), w, b},
             one([](const std::vector<Tensor>& in) { return layer_norm(in[0], {200}, in[1], in[2]); }), grads());
  Tensor xb = randn_h({4, 6, 9, 7}), wb = randn_h({6}, DType::F32, 1, 0.1), bb = randn_h({6});
  Opts o = grads();
  o.grad_inputs = {0, 1, 2};
  for (bool training : {true, false})
    check_same(std::string("sweep batch_norm ") + (training ? "train" : "eval"), {xb, wb, bb, zeros({6}), ones({6})},
               [training](const std::vector<Tensor>& in) {
                 Tensor y = batch_norm(in[0], in[3], in[4], in[1], in[2], training);
                 return std::vector<Tensor>{y, in[3], in[4]};
               },
               o);
}

TEST_CASE("sweep: convolution and pooling", "[sanitize]") {
  Tensor x = randn_h({2, 6, 13, 11}), w = randn_h({8, 3, 3, 3}, DType::F32, 0, 0.2), b = randn_h({8});
  Conv2dParams p;
  p.stride[0] = 2;
  p.padding[0] = p.padding[1] = 1;
  p.groups = 2;
  Opts o = grads();
  o.floor = 4;
  check_same("sweep conv2d", {x, w, b}, one([p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); }), o);
  check_same("sweep conv2d bf16", {detail::cast(x, DType::BF16), detail::cast(w, DType::BF16), detail::cast(b, DType::BF16)},
             one([p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); }), grads());
  check_same("sweep pools", {x}, [](const std::vector<Tensor>& in) {
    auto [m, idx] = max_pool2d_with_indices(in[0], detail::make_pool_params(3, 2, 1, 1, true, true));
    return std::vector<Tensor>{m, idx, avg_pool2d(in[0], 3, 2, 1, true, false), adaptive_avg_pool2d(in[0], 3, 4)};
  }, grads());
}

TEST_CASE("sweep: indexing", "[sanitize]") {
  Tensor w = randn_h({50, 33}), ids = randint_h({7, 9}, 0, 50);
  check_same("sweep embedding", {w, ids}, one([](const std::vector<Tensor>& in) { return embedding(in[1], in[0], 2); }),
             grads());
  Tensor x = randn_h({9, 17}), idx = randint_h({9, 40}, 0, 17), src = randn_h({9, 40});
  Opts o = grads();
  o.grad_inputs = {0, 2};
  check_same("sweep gather/scatter_add", {x, idx, src}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{gather(in[0], 1, in[1]), scatter_add(in[0], 1, in[1], in[2]),
                               index_select(in[0], 1, in[1].select(0, 0))};
  }, o);
}

TEST_CASE("sweep: attention", "[sanitize]") {
  for (int64_t D : {64, 33}) {
    for (bool causal : {false, true}) {
      Tensor qkv = randn_h({2, 50, 3, 3, D});
      std::vector<bool> mv(2 * 50, false);
      for (int j = 40; j < 50; ++j) mv[size_t(50 + j)] = true;
      Tensor mask = from_vector(mv, {2, 50});
      check_same("sweep attention D" + std::to_string(D) + (causal ? " causal" : ""), {qkv, mask},
                 one([D, causal](const std::vector<Tensor>& in) {
                   Tensor q = in[0].select(2, 0).permute({0, 2, 1, 3}), k = in[0].select(2, 1).permute({0, 2, 1, 3});
                   Tensor v = in[0].select(2, 2).permute({0, 2, 1, 3});
                   return scaled_dot_product_attention(q, k, v, attention_params(D, causal, in[1]));
                 }),
                 grads(2e-5, 5e-5));
    }
  }
  Tensor q = randn_h({1, 2, 77, 64}, DType::BF16), k = randn_h({1, 2, 77, 64}, DType::BF16), v = randn_h({1, 2, 77, 64}, DType::BF16);
  check_same("sweep attention bf16 causal", {q, k, v}, one([](const std::vector<Tensor>& in) {
               return scaled_dot_product_attention(in[0], in[1], in[2], attention_params(64, true));
             }),
             grads(2e-2, 3e-2));
}

TEST_CASE("sweep: optimizers", "[sanitize]") {
  for (int kind = 0; kind < 4; ++kind) {
    std::vector<Tensor> gs{randn_h({1031}), randn_h({1031}), randn_h({1031})};
    Tensor p0 = randn_h({1031});
    auto run = [&](Device dev) {
      Tensor p = detail::contiguous_copy(p0).to(dev);
      p.requires_grad_(true);
      optim::ParamGroup g;
      g.params = {p};
      g.lr = 1e-2;
      g.weight_decay = 0.01;
      g.momentum = 0.9;
      std::unique_ptr<optim::Optimizer> opt;
      if (kind == 0) opt.reset(new optim::Adam({g}));
      else if (kind == 1) opt.reset(new optim::AdamW({g}));
      else if (kind == 2) opt.reset(new optim::Adamax({g}));
      else opt.reset(new optim::SGD({g}));
      for (auto& gr : gs) {
        p.set_grad(gr.to(dev));
        opt->step();
      }
      return p.detach().to(host());
    };
    compare("sweep optimizer " + std::to_string(kind), run(host()), run(gpu()));
  }
}
