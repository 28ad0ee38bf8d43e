// CUDA layer_norm and batch_norm against the CPU: forward and backward (input, weight and bias gradients),
// odd and large row sizes, several normalised dims, without affine parameters, bf16 / f16 inputs with f32
// or same-dtype parameters, f64; batch norm in training (batch statistics, running-stat updates with the
// unbiased variance) and evaluation mode, 2-d and 4-d inputs.
#include "cuda_test.hpp"

using namespace mct;

TEST_CASE("layer_norm forward and backward", "[norm]") {
  struct C {
    Shape x, norm;
  };
  const std::vector<C> cases = {{{7, 1}, {1}},           {{3, 7}, {7}},          {{129, 768}, {768}},
                                {{4, 50, 768}, {768}},   {{2, 197, 1024}, {1024}}, {{1000, 33}, {33}},
                                {{5, 7, 33}, {7, 33}},   {{3, 100003}, {100003}}, {{2, 4097}, {4097}},
                                {{64, 512}, {512}},      {{17, 2560}, {2560}}};
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    for (const C& c : cases) {
      for (DType pdt : {dt, DType::F32}) {
        if (pdt == DType::F32 && (dt == DType::F32 || dt == DType::F64)) continue;
        Tensor x = randn_h(c.x, dt, 0.3, 2.0);
        Tensor w = randn_h(c.norm, pdt, 1.0, 0.2), b = randn_h(c.norm, pdt, 0, 0.2);
        const std::string tag = std::string("params ") + dtype_name(pdt);
        check_same(label("layer_norm", c.x, dt, tag), {x, w, b},
                   one([&](const std::vector<Tensor>& in) { return layer_norm(in[0], c.norm, in[1], in[2], 1e-5); }),
                   grads());
        if (pdt == dt)
          check_same(label("layer_norm no affine", c.x, dt), {x},
                     one([&](const std::vector<Tensor>& in) { return layer_norm(in[0], c.norm, {}, {}, 1e-6); }),
                     grads());
      }
    }
  }
}

TEST_CASE("layer_norm: weight only, strided input, constant rows", "[norm]") {
  Tensor x = randn_h({768, 129}), w = randn_h({129}, DType::F32, 1, 0.1);
  check_same("layer_norm weight only", {x, w},
             one([](const std::vector<Tensor>& in) { return layer_norm(in[0], {129}, in[1]); }), grads());
  check_same("layer_norm of a transposed view", {x},
             one([](const std::vector<Tensor>& in) { return layer_norm(in[0].t(), {768}); }), grads());
  // Constant rows: variance 0, rstd = 1/sqrt(eps).
  Tensor c = full({9, 64}, 2.5);
  check_same("layer_norm constant rows", {c},
             one([](const std::vector<Tensor>& in) { return layer_norm(in[0], {64}, {}, {}, 1e-5); }), grads());
  // Mean 100 x the spread: a one-pass E[x^2] - E[x]^2 variance in f32 loses ~1e-3 here, two passes do not.
  Tensor off = randn_h({33, 768}, DType::F32, 100.0, 1.0);
  check_same("layer_norm large offset", {off}, one([](const std::vector<Tensor>& in) { return layer_norm(in[0], {768}); }),
             grads(2e-4, 2e-4));
}

TEST_CASE("batch_norm training: outputs, gradients and running statistics", "[norm]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{8, 64, 28, 28}, Shape{128, 16}, Shape{1, 5, 1, 2},
                           Shape{3, 7, 129}, Shape{32, 256, 7, 7}}) {
      for (DType pdt : {dt, DType::F32}) {
        if (pdt == DType::F32 && dt != DType::BF16) continue;
        const int64_t C = s[1];
        Tensor x = randn_h(s, dt, 0.5, 2.0), w = randn_h({C}, pdt, 1, 0.2), b = randn_h({C}, pdt, 0, 0.2);
        Tensor rm = randn_h({C}, pdt, 0, 0.1), rv = rand_h({C}, pdt, 0.5, 1.5);
        Opts o = grads();
        o.grad_inputs = {0, 1, 2};
        check_same(label("batch_norm train", s, dt, std::string("params ") + dtype_name(pdt)), {x, w, b, rm, rv},
                   [](const std::vector<Tensor>& in) {
                     Tensor y = batch_norm(in[0], in[3], in[4], in[1], in[2], true, 0.1, 1e-5);
                     return std::vector<Tensor>{y, in[3], in[4]};  // the running stats after the update
                   },
                   o);
        Opts o2 = grads();
        o2.grad_inputs = {0};
        check_same(label("batch_norm train, no affine, no running stats", s, dt), {x},
                   one([](const std::vector<Tensor>& in) { return batch_norm(in[0], {}, {}, {}, {}, true, 0.1, 1e-3); }),
                   o2);
      }
    }
  }
}

TEST_CASE("batch_norm evaluation mode", "[norm]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{16, 64, 14, 14}, Shape{128, 16}}) {
      const int64_t C = s[1];
      Tensor x = randn_h(s, dt, 0.5, 2.0), w = randn_h({C}, DType::F32, 1, 0.2), b = randn_h({C}, DType::F32, 0, 0.2);
      Tensor rm = randn_h({C}, DType::F32, 0.4, 0.1), rv = rand_h({C}, DType::F32, 0.5, 4);
      if (dt == DType::F32) {
        Opts o = grads();
        o.grad_inputs = {0, 1, 2};
        check_same(label("batch_norm eval", s, dt), {x, w, b, rm, rv},
                   [](const std::vector<Tensor>& in) {
                     Tensor y = batch_norm(in[0], in[3], in[4], in[1], in[2], false, 0.1, 1e-5);
                     return std::vector<Tensor>{y, in[3], in[4]};  // running stats unchanged
                   },
                   o);
      } else {
        Opts o = grads();
        o.grad_inputs = {0, 1, 2};
        check_same(label("batch_norm eval", s, dt), {x, w, b, rm, rv},
                   one([](const std::vector<Tensor>& in) {
                     return batch_norm(in[0], in[3], in[4], in[1], in[2], false, 0.1, 1e-5);
                   }),
                   o);
      }
    }
  }
}

TEST_CASE("batch_norm: several training steps of running statistics", "[norm]") {
  Tensor rm = zeros({32}), rv = ones({32});
  std::vector<Tensor> xs;
  for (int i = 0; i < 4; ++i) xs.push_back(randn_h({16, 32, 9, 9}, DType::F32, 0.1 * i, 1 + 0.3 * i));
  std::vector<Tensor> inputs{rm, rv};
  inputs.insert(inputs.end(), xs.begin(), xs.end());
  check_same("batch_norm 4 steps, momentum 0.3", inputs, [](const std::vector<Tensor>& in) {
    for (int i = 0; i < 4; ++i) batch_norm(in[size_t(2 + i)], in[0], in[1], {}, {}, true, 0.3, 1e-5);
    return std::vector<Tensor>{in[0], in[1]};
  });
}

TEST_CASE("layer_norm and batch_norm in f16 and large channels", "[norm]") {
  Tensor x = randn_h({4, 512, 3, 3}, DType::F16), w = randn_h({512}, DType::F32, 1, 0.1), b = randn_h({512});
  Opts o = grads();
  o.grad_inputs = {0, 1, 2};
  check_same("batch_norm f16 input, f32 params", {x, w, b},
             one([](const std::vector<Tensor>& in) { return batch_norm(in[0], {}, {}, in[1], in[2], true); }), o);
}
