// Forward values of the ops owned by the core ops layer: elementwise, reductions, matmul, joining and
// indexing, softmax, dropout, losses. Expected values are hand-computed or were produced by PyTorch.
#include <catch2/catch.hpp>

#include <cmath>

#include "mc/mc.hpp"

using namespace mc;

namespace {

void check_close(const Tensor& t, const std::vector<double>& expect, double tol = 1e-6) {
  std::vector<double> v = t.to_vector<double>();
  REQUIRE(v.size() == expect.size());
  for (size_t i = 0; i < v.size(); ++i) {
    INFO("element " << i);
    CHECK(v[i] == Approx(expect[i]).epsilon(tol).margin(tol));
  }
}

Tensor vec(std::vector<float> v) {
  const int64_t n = int64_t(v.size());
  return from_vector(v, {n});
}

}  // namespace

TEST_CASE("unary ops match libm", "[ops]") {
  std::vector<float> xs{-2.5f, -1.0f, -0.25f, 0.0f, 0.5f, 1.0f, 3.0f};
  Tensor x = vec(xs);
  auto expect = [&](auto f) {
    std::vector<double> r;
    for (float v : xs) r.push_back(f(double(v)));
    return r;
  };
  check_close(exp(x), expect([](double v) { return std::exp(v); }));
  check_close(tanh(x), expect([](double v) { return std::tanh(v); }));
  check_close(sigmoid(x), expect([](double v) { return 1 / (1 + std::exp(-v)); }));
  check_close(relu(x), expect([](double v) { return v > 0 ? v : 0; }));
  check_close(abs(x), expect([](double v) { return std::fabs(v); }));
  check_close(neg(x), expect([](double v) { return -v; }));
  check_close(sin(x), expect([](double v) { return std::sin(v); }));
  check_close(clamp(x, -1, 0.5), expect([](double v) { return std::min(std::max(v, -1.0), 0.5); }));
  check_close(pow(x, 3), expect([](double v) { return v * v * v; }));
  Tensor p = vec({0.25f, 1.0f, 4.0f});
  check_close(sqrt(p), {0.5, 1, 2});
  check_close(rsqrt(p), {2, 1, 0.5});
  check_close(log(p), {std::log(0.25), 0, std::log(4.0)});
  check_close(log1p(p), {std::log1p(0.25), std::log1p(1.0), std::log1p(4.0)});
  check_close(reciprocal(p), {4, 1, 0.25});
  CHECK(std::isnan(log(vec({-1.0f})).item<float>()));
}

TEST_CASE("GELU variants match PyTorch", "[ops]") {
  Tensor x = vec({-3.0f, -1.0f, -0.5f, 0.0f, 0.3f, 1.0f, 2.5f});
  check_close(gelu(x), {-0.004050225019454956, -0.15865525603294373, -0.1542687714099884, 0.0, 0.1853734403848648,
                        0.8413447141647339, 2.48447585105896});
  check_close(gelu(x, true), {-0.0036374330520629883, -0.15880799293518066, -0.1542859971523285, 0.0,
                              0.18537093698978424, 0.8411920070648193, 2.4849157333374023});
  check_close(quick_gelu(x), {-0.018071310594677925, -0.15420423448085785, -0.14961156249046326, 0.0,
                              0.18748414516448975, 0.845795750617981, 2.4650139808654785});
}

TEST_CASE("binary ops broadcast and compare", "[ops]") {
  Tensor a = arange(6, DType::F32).reshape({2, 3});
  Tensor b = vec({1, 2, 4});
  check_close(a + b, {1, 3, 6, 4, 6, 9});
  check_close(a - b, {-1, -1, -2, 2, 2, 1});
  check_close(a * b, {0, 2, 8, 3, 8, 20});
  check_close(a / b, {0, 0.5, 0.5, 3, 2, 1.25});
  check_close(pow(b, a), {1, 2, 16, 1, 16, 1024});
  check_close(maximum(a, b), {1, 2, 4, 3, 4, 5});
  check_close(minimum(a, b), {0, 1, 2, 1, 2, 4});
  check_close(2.0 - a, {2, 1, 0, -1, -2, -3});
  check_close(1.0 / b, {1, 0.5, 0.25});
  CHECK((a > 2.0).to_vector<bool>() == std::vector<bool>{false, false, false, true, true, true});
  CHECK(eq(a, b).to_vector<bool>() == std::vector<bool>{false, false, false, false, false, false});
  CHECK(le(b, b).to_vector<bool>() == std::vector<bool>{true, true, true});
  check_close(where(a > 2.0, a, b * -1.0), {-1, -2, -4, 3, 4, 5});
  // non-contiguous operands and a NaN propagating through maximum like torch
  check_close(a.t() + a.t(), {0, 6, 2, 8, 4, 10});
  CHECK(std::isnan(maximum(vec({NAN}), vec({1})).item<float>()));
  // integer arithmetic stays integral; integer division is refused rather than silently truncated
  CHECK((arange(3) * arange(3)).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 4});
  CHECK_THROWS_AS(div(arange(3), arange(3)), Error);
  CHECK_THROWS_AS(a + vec({1, 2}), Error);
}

TEST_CASE("reductions over dims", "[ops]") {
  Tensor a = from_vector(std::vector<float>{1, 2, 3, -1, 0.5f, 4}, {2, 3});
  check_close(sum(a), {9.5});
  check_close(sum(a, {1}), {6, 3.5});
  check_close(sum(a, {0}, true), {0, 2.5, 7});
  CHECK(sum(a, {0}, true).shape() == Shape{1, 3});
  check_close(mean(a, {-1}), {2, 3.5 / 3});
  check_close(amax(a, {1}), {3, 4});
  check_close(amin(a), {-1});
  check_close(max(a, 0), {1, 2, 4});
  CHECK(argmax(a, 1).to_vector<int64_t>() == std::vector<int64_t>{2, 2});
  CHECK(argmin(a, 0, true).shape() == Shape{1, 3});
  CHECK(argmax(vec({1, 5, 5, 2}), 0).item<int64_t>() == 1);  // first maximum
  check_close(var(a, {1}), {1.0, 6.583333492279053});
  check_close(var(a), {3.241666555404663});
  check_close(var(a, {0}, 0), {1.0, 0.5625, 0.25});
  check_close(logsumexp(from_vector(std::vector<float>{1, 2, 3, -1, 0.5f, 4}, {2, 3}), {1}),
              {3.4076058864593506, 4.036269664764404});
  check_close(logsumexp(vec({-INFINITY, -INFINITY}), {0}), {-INFINITY});
  // a strided layout: reduce a transposed 3-d tensor over its middle and outer dims
  Tensor b = arange(24, DType::F32).reshape({2, 3, 4}).permute({2, 0, 1});  // [4, 2, 3]
  check_close(sum(b, {0, 2}), {66, 210});
  check_close(sum(b, {1}), {12, 20, 28, 14, 22, 30, 16, 24, 32, 18, 26, 34});  // 12 + 8k + 2i
  check_close(sum(arange(5), {0}), {10});
  CHECK(sum(arange(5)).dtype() == DType::I64);
  CHECK(sum(zeros({0, 3}), {0}).to_vector<float>() == std::vector<float>{0, 0, 0});
  CHECK_THROWS_AS(sum(a, {2}), Error);
  CHECK_THROWS_AS(sum(a, {1, 1}), Error);
  CHECK_THROWS_AS(mean(arange(3)), Error);
}

TEST_CASE("large reductions are accurate", "[ops]") {
  Tensor big = full({1000, 1000}, 0.1);
  CHECK(sum(big).item<float>() == Approx(100000).epsilon(1e-6));
  check_close(sum(big, {0}).narrow(0, 0, 2), {100, 100}, 1e-5);
  check_close(mean(big, {1}).narrow(0, 0, 2), {0.1, 0.1}, 1e-6);
}

TEST_CASE("matmul follows torch.matmul semantics", "[ops]") {
  Tensor a = arange(6, DType::F32).reshape({2, 3});
  Tensor b = arange(12, DType::F32).reshape({3, 4});
  check_close(matmul(a, b), {20, 23, 26, 29, 56, 68, 80, 92});
  check_close(matmul(vec({1, 2, 3}), b), {32, 38, 44, 50});              // 1-d @ 2-d
  check_close(matmul(a, vec({1, 0, -1})), {-2, -2});                     // 2-d @ 1-d
  check_close(matmul(vec({1, 2, 3}), vec({4, 5, 6})), {32});             // dot
  Tensor batch = arange(24, DType::F32).reshape({2, 3, 4});
  Tensor r = matmul(a.unsqueeze(0), batch);                              // broadcast batch
  CHECK(r.shape() == Shape{2, 2, 4});
  check_close(r.select(0, 1), {56, 59, 62, 65, 200, 212, 224, 236});
  check_close(matmul(b.t(), a.t()), matmul(a, b).t().contiguous().to_vector<double>());  // transposed views
  check_close(linear(a, b.t().contiguous(), vec({1, 1, 1, 1})), {21, 24, 27, 30, 57, 69, 81, 93});
  Tensor h = matmul(a.to(DType::BF16), b.to(DType::BF16));
  CHECK(h.dtype() == DType::BF16);
  check_close(h, {20, 23, 26, 29, 56, 68, 80, 92}, 1e-2);
  check_close(matmul(zeros({2, 0}), zeros({0, 3})), {0, 0, 0, 0, 0, 0});
  CHECK_THROWS_AS(matmul(a, a), Error);
  CHECK_THROWS_AS(matmul(arange(3), arange(3)), Error);
  CHECK_THROWS_AS(linear(a, b), Error);
}

TEST_CASE("cat, stack, split, chunk", "[ops]") {
  Tensor a = arange(4, DType::F32).reshape({2, 2});
  Tensor b = full({2, 1}, 9);
  check_close(cat({a, b}, 1), {0, 1, 9, 2, 3, 9});
  check_close(cat({a, a}, 0), {0, 1, 2, 3, 0, 1, 2, 3});
  CHECK(stack({a, a}, 1).shape() == Shape{2, 2, 2});
  check_close(stack({a, a}, 1), {0, 1, 0, 1, 2, 3, 2, 3});
  auto parts = split(arange(7, DType::F32), 3);
  REQUIRE(parts.size() == 3);
  check_close(parts[2], {6});
  auto ch = chunk(arange(6, DType::F32).reshape({3, 2}), 2, 0);
  REQUIRE(ch.size() == 2);
  CHECK(ch[1].shape() == Shape{1, 2});
  auto sz = split(arange(5, DType::F32), std::vector<int64_t>{2, 3}, 0);
  check_close(sz[1], {2, 3, 4});
  CHECK_THROWS_AS(cat({a, zeros({3, 3})}, 1), Error);
  CHECK_THROWS_AS(stack({a, b}), Error);
  CHECK_THROWS_AS(split(arange(5), std::vector<int64_t>{2, 2}, 0), Error);
}

TEST_CASE("index_select, embedding, gather, scatter_add", "[ops]") {
  Tensor w = arange(12, DType::F32).reshape({4, 3});
  check_close(index_select(w, 0, from_vector(std::vector<int64_t>{3, 0, 3}, {3})), {9, 10, 11, 0, 1, 2, 9, 10, 11});
  check_close(index_select(w, 1, from_vector(std::vector<int64_t>{2}, {1})), {2, 5, 8, 11});
  Tensor ids = from_vector(std::vector<int64_t>{1, 2, 0, 1}, {2, 2});
  Tensor e = embedding(ids, w);
  CHECK(e.shape() == Shape{2, 2, 3});
  check_close(e.select(1, 0), {3, 4, 5, 0, 1, 2});
  Tensor x = from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  check_close(gather(x, 1, from_vector(std::vector<int64_t>{0, 0, 1, 0}, {2, 2})), {1, 1, 4, 3});
  check_close(scatter_add(zeros({2, 3}), 1, from_vector(std::vector<int64_t>{0, 0, 2, 1}, {2, 2}), x), {3, 0, 0, 0, 4, 3});
  CHECK_THROWS_AS(index_select(w, 0, from_vector(std::vector<int64_t>{4}, {1})), Error);
  CHECK_THROWS_AS(embedding(from_vector(std::vector<int64_t>{-5}, {1}), w), Error);
  CHECK_THROWS_AS(gather(x, 1, from_vector(std::vector<int64_t>{2, 0, 0, 0}, {2, 2})), Error);
  CHECK_THROWS_AS(index_select(w, 0, vec({1})), Error);
}

TEST_CASE("softmax and log_softmax", "[ops]") {
  Tensor a = from_vector(std::vector<float>{1, 2, 3, -1, 0.5f, 4}, {2, 3});
  check_close(softmax(a, 1), {0.09003057330846786, 0.2447284758090973, 0.6652409434318542, 0.0064979433082044125,
                              0.02912176214158535, 0.9643803238868713});
  check_close(log_softmax(a, 0), {-0.12692804634571075, -0.2014133334159851, -1.31326162815094, -2.1269280910491943,
                                  -1.7014133930206299, -0.31326165795326233});
  Tensor big = vec({1000, 1000});  // no overflow
  check_close(softmax(big), {0.5, 0.5});
  check_close(softmax(a.to(DType::BF16), 1), softmax(a, 1).to_vector<double>(), 1e-2);
}

TEST_CASE("dropout keeps the expectation and is reproducible", "[ops]") {
  Tensor x = ones({10000});
  Generator g1(3), g2(3);
  Tensor y1 = dropout(x, 0.3, true, &g1), y2 = dropout(x, 0.3, true, &g2);
  CHECK(y1.to_vector<float>() == y2.to_vector<float>());
  CHECK(mean(y1).item<float>() == Approx(1.0).margin(0.03));
  const double kept = mean((y1 > 0.0).to(DType::F32)).item<double>();
  CHECK(kept == Approx(0.7).margin(0.02));
  CHECK(dropout(x, 0.3, false).is_same(x));
  CHECK_THROWS_AS(dropout(x, 1.5), Error);
}

TEST_CASE("losses match PyTorch", "[ops]") {
  Tensor logits = from_vector(std::vector<float>{2, -1, 0.5f, 0.1f, 0.2f, 0.3f, -1, 3, 0, 1.5f, 1.5f, -2}, {4, 3});
  Tensor t = from_vector(std::vector<int64_t>{0, 2, 1, -100}, {4});
  check_close(cross_entropy(logits, t), {0.4363793432712555});
  check_close(cross_entropy(logits, t, Reduction::Mean, 0.1), {0.5674904584884644});
  check_close(cross_entropy(logits, t, Reduction::Sum, 0.2), {2.0958046913146973});
  check_close(cross_entropy(logits, t, Reduction::None), {0.24131132662296295, 1.0019428730010986, 0.06588391214609146, 0});
  Tensor soft = from_vector(std::vector<float>{0.7f, 0.2f, 0.1f, 0, 0, 1, 0.5f, 0.5f, 0, 0.2f, 0.3f, 0.5f}, {4, 3});
  check_close(cross_entropy(logits, soft), {1.6293177604675293});
  check_close(cross_entropy(logits, soft, Reduction::Mean, 0.3), {1.6743178367614746});
  Tensor z = vec({-20, -1, 0, 0.5f, 30}), y = vec({0, 1, 0.5f, 1, 0});
  check_close(binary_cross_entropy_with_logits(z, y, Reduction::None),
              {0.0, 1.3132617473602295, 0.6931471824645996, 0.4740769863128662, 30.0}, 1e-5);
  check_close(binary_cross_entropy_with_logits(z, y, Reduction::Mean, scalar_tensor(3)), {7.349661827087402});
  check_close(normalize(from_vector(std::vector<float>{3, 4, 0, 0, 1, -1}, {3, 2}), 1),
              {0.6, 0.8, 0, 0, 0.7071067690849304, -0.7071067690849304});
  check_close(mse_loss(vec({1, 2, 3}), vec({1.5f, 2, 0})), {3.0833332538604736});
  CHECK_THROWS_AS(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 3, 1, 1}, {4})), Error);
  CHECK_THROWS_AS(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 1}, {2})), Error);
  CHECK_THROWS_AS(binary_cross_entropy_with_logits(z, vec({1})), Error);
}
