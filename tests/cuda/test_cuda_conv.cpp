// CUDA convolution and pooling against the CPU: conv2d forward and the input / weight / bias gradients for
// strides, padding, dilation, groups (depthwise included), asymmetric kernels, 1x1 and patch-embedding
// convolutions, bf16 / f16, TF32 and f64; max pooling (indices and ties), average pooling (padding counted or
// not, ceil mode) and adaptive average pooling, forward and backward.
#include "cuda_test.hpp"

using namespace mct;

namespace {

struct Conv {
  std::string name;
  Shape x, w;
  Conv2dParams p;
  bool bias;
};

Conv2dParams cp(int64_t s, int64_t pad, int64_t d = 1, int64_t g = 1) {
  Conv2dParams p;
  p.stride[0] = p.stride[1] = s;
  p.padding[0] = p.padding[1] = pad;
  p.dilation[0] = p.dilation[1] = d;
  p.groups = g;
  return p;
}

std::vector<Conv> conv_cases() {
  Conv2dParams asym;
  asym.stride[0] = 2;
  asym.stride[1] = 1;
  asym.padding[0] = 1;
  asym.padding[1] = 2;
  asym.dilation[0] = 1;
  asym.dilation[1] = 2;
  return {
      {"1x1", {2, 64, 14, 14}, {128, 64, 1, 1}, cp(1, 0), false},
      {"3x3 pad 1", {2, 16, 15, 17}, {32, 16, 3, 3}, cp(1, 1), true},
      {"3x3 stride 2", {3, 8, 33, 31}, {16, 8, 3, 3}, cp(2, 1), false},
      {"7x7 stride 2 pad 3 (stem)", {2, 3, 64, 64}, {16, 3, 7, 7}, cp(2, 3), false},
      {"dilation 2", {2, 8, 20, 20}, {8, 8, 3, 3}, cp(1, 2, 2), true},
      {"groups 4", {2, 16, 13, 13}, {32, 4, 3, 3}, cp(1, 1, 1, 4), true},
      {"depthwise", {2, 32, 14, 14}, {32, 1, 3, 3}, cp(1, 1, 1, 32), false},
      {"3x5 asymmetric", {2, 6, 17, 19}, {10, 6, 3, 5}, asym, true},
      {"1x1 stride 2 (downsample)", {2, 64, 28, 28}, {128, 64, 1, 1}, cp(2, 0), false},
      {"single channel 7x7", {1, 1, 7, 7}, {1, 1, 3, 3}, cp(1, 0), true},
      {"patch embedding 32/32", {2, 3, 224, 224}, {768, 3, 32, 32}, cp(32, 0), false},
      {"bottleneck 3x3 at 14x14", {4, 256, 14, 14}, {256, 256, 3, 3}, cp(1, 1), false},
      {"kernel larger than stride, no padding", {2, 4, 9, 9}, {6, 4, 4, 4}, cp(3, 0), true},
  };
}

Tensor run_conv(const Conv& c, const std::vector<Tensor>& in) {
  return conv2d(in[0], in[1], c.bias ? in[2] : Tensor(), c.p);
}

std::vector<Tensor> conv_inputs(const Conv& c, DType dt) {
  const double fan_in = double(c.w[1] * c.w[2] * c.w[3]);
  std::vector<Tensor> in{randn_h(c.x, dt), randn_h(c.w, dt, 0, 1 / std::sqrt(fan_in))};
  if (c.bias) in.push_back(randn_h({c.w[0]}, dt));
  return in;
}

}  // namespace

TEST_CASE("conv2d forward and backward", "[conv]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const Conv& c : conv_cases()) {
      // f32: cuDNN may pick FFT / Winograd algorithms, whose rounding differs from a direct sum; a floor of
      // 4 rms still fails TF32 (~4e-4 rms) by far.
      Opts o = grads();
      if (dt == DType::F32) o.floor = 4.0;
      check_same(label("conv2d " + c.name, c.x, dt), conv_inputs(c, dt),
                 one([&](const std::vector<Tensor>& in) { return run_conv(c, in); }), o);
    }
  }
}

TEST_CASE("conv2d: unbatched input and strided input view", "[conv]") {
  Tensor x = randn_h({8, 15, 15}), w = randn_h({4, 8, 3, 3}, DType::F32, 0, 0.1);
  Opts o = grads();
  o.floor = 4.0;
  check_same("conv2d unbatched [C,H,W]", {x, w},
             one([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], {}, cp(1, 1)); }), o);
  Tensor xt = randn_h({2, 17, 8, 17});
  check_same("conv2d of a permuted view", {xt, w}, one([](const std::vector<Tensor>& in) {
               return conv2d(in[0].permute({0, 2, 1, 3}), in[1], {}, cp(2, 1));
             }),
             o);
}

TEST_CASE("conv2d with TF32", "[conv][tf32]") {
  Tf32Scope on(true);
  Opts o = grads(kTf32Rtol, kTf32Rtol);
  o.floor = kTf32Floor;
  for (const Conv& c : conv_cases())
    check_same(label("conv2d tf32 " + c.name, c.x, DType::F32), conv_inputs(c, DType::F32),
               one([&](const std::vector<Tensor>& in) { return run_conv(c, in); }), o);
}

TEST_CASE("conv2d in f64", "[conv][f64]") {
  for (const Conv& c : conv_cases()) {
    if (c.name.rfind("patch", 0) == 0 || c.name.rfind("bottleneck", 0) == 0) continue;
    check_same(label("conv2d " + c.name, c.x, DType::F64), conv_inputs(c, DType::F64),
               one([&](const std::vector<Tensor>& in) { return run_conv(c, in); }), grads());
  }
}

namespace {

Pool2dParams pp(int64_t k, int64_t s, int64_t pad, int64_t d = 1, bool ceil = false, bool include_pad = true) {
  return detail::make_pool_params(k, s, pad, d, ceil, include_pad);
}

}  // namespace

TEST_CASE("max_pool2d forward, indices and backward", "[pool]") {
  struct C {
    std::string name;
    Shape x;
    Pool2dParams p;
  };
  const std::vector<C> cases = {
      {"3/2/1 (ResNet)", {2, 16, 33, 31}, pp(3, 2, 1)},  {"2/2/0", {2, 8, 16, 16}, pp(2, 2, 0)},
      {"3/2/0 ceil", {1, 4, 14, 15}, pp(3, 2, 0, 1, true)}, {"3/1/1", {2, 5, 9, 11}, pp(3, 1, 1)},
      {"dilation 2", {2, 3, 17, 17}, pp(3, 2, 1, 2)},    {"big", {8, 64, 112, 112}, pp(3, 2, 1)},
      {"1x1 plane", {3, 7, 1, 1}, pp(1, 1, 0)},
  };
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const C& c : cases) {
      Tensor x = randn_h(c.x, dt);
      check_same(label("max_pool2d " + c.name, c.x, dt), {x}, [&](const std::vector<Tensor>& in) {
        auto [y, idx] = max_pool2d_with_indices(in[0], c.p);
        return std::vector<Tensor>{y, idx};
      }, grads());
      // Ties: the index of the first maximum in the window, as the CPU.
      Tensor t = detail::cast(floor(rand_h(c.x, DType::F32, 0, 2)), dt);
      check_same(label("max_pool2d ties " + c.name, c.x, dt), {t}, [&](const std::vector<Tensor>& in) {
        auto [y, idx] = max_pool2d_with_indices(in[0], c.p);
        return std::vector<Tensor>{y, idx};
      }, grads());
    }
  }
}

TEST_CASE("avg_pool2d forward and backward", "[pool]") {
  struct C {
    std::string name;
    Shape x;
    Pool2dParams p;
  };
  const std::vector<C> cases = {
      {"2/2", {2, 8, 16, 16}, pp(2, 2, 0)},
      {"3/2/1 count pad", {2, 6, 15, 13}, pp(3, 2, 1, 1, false, true)},
      {"3/2/1 no pad count", {2, 6, 15, 13}, pp(3, 2, 1, 1, false, false)},
      {"3/2/1 ceil count pad", {1, 4, 14, 15}, pp(3, 2, 1, 1, true, true)},
      {"3/2/1 ceil no pad count", {1, 4, 14, 15}, pp(3, 2, 1, 1, true, false)},
      {"2/2 odd input (anti-aliasing pool)", {2, 64, 57, 57}, pp(2, 2, 0)},
      {"7/1 (global)", {4, 32, 7, 7}, pp(7, 1, 0)},
  };
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const C& c : cases) {
      Tensor x = randn_h(c.x, dt);
      check_same(label("avg_pool2d " + c.name, c.x, dt), {x},
                 one([&](const std::vector<Tensor>& in) { return avg_pool2d(in[0], c.p); }), grads());
    }
  }
}

TEST_CASE("adaptive_avg_pool2d forward and backward", "[pool]") {
  struct C {
    Shape x;
    int64_t oh, ow;
  };
  const std::vector<C> cases = {{{2, 16, 7, 7}, 1, 1},   {{2, 8, 10, 13}, 3, 5},  {{2, 8, 5, 5}, 7, 7},
                                {{2, 2048, 7, 7}, 1, 1}, {{1, 3, 224, 224}, 7, 7}, {{3, 4, 1, 9}, 1, 4}};
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    for (const C& c : cases) {
      Tensor x = randn_h(c.x, dt);
      check_same(label("adaptive_avg_pool2d", c.x, dt, std::to_string(c.oh) + "x" + std::to_string(c.ow)), {x},
                 one([&](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], c.oh, c.ow); }), grads());
    }
  }
}
