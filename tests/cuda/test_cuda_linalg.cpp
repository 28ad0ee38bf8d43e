// CUDA matmul against the CPU: odd sizes, vectors, batched and broadcast batch dims, transposed / narrowed /
// expanded operands (every stride pattern the ops layer passes down), linear layers with bias, gradients,
// bf16 / f16, TF32 mode, and f64.
#include "cuda_test.hpp"

using namespace mct;

namespace {

struct Mm {
  std::string name;
  Shape a, b;
  std::function<Tensor(const Tensor&, const Tensor&)> f;
};

std::vector<Mm> matmul_cases() {
  auto mm = [](const Tensor& a, const Tensor& b) { return matmul(a, b); };
  return {
      {"1x1x1", {1, 1}, {1, 1}, mm},
      {"7x129 @ 129x33", {7, 129}, {129, 33}, mm},
      {"129x7 @ 7x1000", {129, 7}, {7, 1000}, mm},
      {"1031x515 @ 515x1029", {1031, 515}, {515, 1029}, mm},
      {"vector @ matrix", {129}, {129, 65}, mm},
      {"matrix @ vector", {65, 129}, {129}, mm},
      {"vector @ vector", {1000}, {1000}, mm},
      {"A^T @ B", {129, 65}, {129, 33}, [](const Tensor& a, const Tensor& b) { return matmul(a.t(), b); }},
      {"A @ B^T (linear)", {65, 129}, {33, 129}, [](const Tensor& a, const Tensor& b) { return matmul(a, b.t()); }},
      {"A^T @ B^T", {129, 65}, {33, 129}, [](const Tensor& a, const Tensor& b) { return matmul(a.t(), b.t()); }},
      {"narrowed (lda > K)", {65, 200}, {150, 33},
       [](const Tensor& a, const Tensor& b) { return matmul(a.narrow(1, 10, 129), b.narrow(0, 1, 129)); }},
      {"batched 3-d", {5, 65, 129}, {5, 129, 33}, mm},
      {"batched 4-d, transposed b", {2, 3, 50, 64}, {2, 3, 50, 64},
       [](const Tensor& a, const Tensor& b) { return matmul(a, b.transpose(-1, -2)); }},
      {"broadcast batch [2,3,M,K] @ [3,K,N]", {2, 3, 17, 33}, {3, 33, 9}, mm},
      {"broadcast batch [B,M,K] @ [K,N]", {7, 65, 129}, {129, 31}, mm},
      {"broadcast batch [M,K] @ [B,K,N]", {65, 129}, {7, 129, 31}, mm},
      {"expanded batch (stride 0)", {1, 65, 33}, {6, 33, 17},
       [](const Tensor& a, const Tensor& b) { return matmul(a.expand({6, 65, 33}), b); }},
      {"permuted batch (heads split)", {4, 50, 3, 64}, {4, 50, 3, 64},
       [](const Tensor& a, const Tensor& b) {
         return matmul(a.permute({0, 2, 1, 3}), b.permute({0, 2, 3, 1}));  // [4,3,50,64] @ [4,3,64,50]
       }},
      {"batch of column vectors", {9, 129, 1}, {9, 1, 77}, mm},
      {"K = 0", {5, 0}, {0, 7}, mm},
  };
}

}  // namespace

TEST_CASE("matmul shapes, strides and batches, with gradients", "[matmul]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const Mm& c : matmul_cases()) {
      if (c.name == "K = 0" && dt != DType::F32) continue;
      Tensor a = randn_h(c.a, dt), b = randn_h(c.b, dt);
      check_same(label("matmul " + c.name, c.a, dt), {a, b},
                 one([&](const std::vector<Tensor>& in) { return c.f(in[0], in[1]); }), grads());
    }
  }
}

TEST_CASE("linear layers", "[matmul]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Shape& xs : {Shape{7, 129}, Shape{4, 50, 768}, Shape{1, 1, 33}, Shape{257, 1000}}) {
      const int64_t in = xs.back(), out = in == 768 ? 3072 : 65;
      Tensor x = randn_h(xs, dt), w = randn_h({out, in}, dt, 0, 0.05), b = randn_h({out}, dt);
      check_same(label("linear", xs, dt, "out " + std::to_string(out)), {x, w, b},
                 one([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }), grads());
      check_same(label("linear no bias", xs, dt), {x, w},
                 one([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }), grads());
    }
    // Input from a strided view (the attention output permuted back, then reshaped).
    Tensor o = randn_h({2, 12, 50, 64}, dt), w = randn_h({768, 768}, dt, 0, 0.03);
    check_same(label("linear on permuted heads", {2, 50, 768}, dt), {o, w}, one([](const std::vector<Tensor>& in) {
                 return linear(in[0].permute({0, 2, 1, 3}).reshape({2, 50, 768}), in[1]);
               }),
               grads());
  }
}

TEST_CASE("matmul with TF32 tensor cores", "[matmul][tf32]") {
  Tf32Scope on(true);
  REQUIRE(cuda::tf32());
  Opts tf32 = grads(kTf32Rtol, kTf32Rtol);
  tf32.floor = kTf32Floor;
  for (const Mm& c : matmul_cases()) {
    if (c.name == "K = 0") continue;
    Tensor a = randn_h(c.a), b = randn_h(c.b);
    check_same(label("matmul tf32 " + c.name, c.a, DType::F32), {a, b},
               one([&](const std::vector<Tensor>& in) { return c.f(in[0], in[1]); }), tf32);
  }
}

TEST_CASE("f32 matmul stays f32 when TF32 is off", "[matmul]") {
  // With K = 4096 TF32 rounding would give errors ~1e-3 relative: this catches tensor-core TF32 used by default.
  Tf32Scope off(false);
  Tensor a = randn_h({256, 4096}), b = randn_h({4096, 256});
  check_same("matmul 256x4096x256 f32 (no TF32)", {a, b},
             one([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }), tol(1e-5, 2.0));
}

TEST_CASE("matmul in f64", "[matmul][f64]") {
  for (const Mm& c : matmul_cases()) {
    Tensor a = randn_h(c.a, DType::F64), b = randn_h(c.b, DType::F64);
    check_same(label("matmul " + c.name, c.a, DType::F64), {a, b},
               one([&](const std::vector<Tensor>& in) { return c.f(in[0], in[1]); }), grads());
  }
}
