// Autograd: the engine's behaviour, and a finite-difference gradcheck (f64) of every differentiable op of
// the core ops layer, including broadcast and non-contiguous inputs.
#include <catch2/catch.hpp>

#include "mc/mc.hpp"

using namespace mc;
using Inputs = std::vector<Tensor>;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, double lo = -1, double hi = 1) {
  Generator g(seed);
  Tensor t = rand(s, &g, DType::F64);
  return t * (hi - lo) + lo;
}

void require_gradcheck(const std::function<Tensor(const Inputs&)>& f, const Inputs& in, GradcheckOptions o = {}) {
  GradcheckResult r = gradcheck(f, in, o);
  INFO(r.message);
  REQUIRE(r.ok);
}

}  // namespace

TEST_CASE("gradients accumulate, graphs are freed, no_grad stops recording", "[autograd]") {
  Tensor x = tensor({1, 2, 3}).requires_grad_();
  Tensor y = sum(x * x);
  y.backward(Tensor(), true);
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 4, 6});
  y.backward();  // the retained graph can be used once more; gradients add up
  CHECK(x.grad().to_vector<float>() == std::vector<float>{4, 8, 12});
  CHECK_THROWS_AS(y.backward(), Error);  // freed now
  {
    NoGradGuard ng;
    Tensor z = x * 2.0;
    CHECK(!z.requires_grad());
  }
  CHECK(!(x.detach() * 2.0).requires_grad());
  CHECK_THROWS_AS(sum(x.detach()).backward(), Error);
  CHECK_THROWS_AS((x * 2.0).backward(), Error);  // non-scalar output needs an explicit gradient
  CHECK_THROWS_AS(arange(3).requires_grad_(), Error);
}

TEST_CASE("a tensor used twice receives the sum of both paths; leaf grads own their memory", "[autograd]") {
  Tensor x = tensor({0.5f, -1.0f}).requires_grad_();
  Tensor w = tensor({2.0f, 3.0f}).requires_grad_();
  Tensor y = sum(x * w + x);  // dy/dx = w + 1, dy/dw = x
  y.backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{3, 4});
  CHECK(w.grad().to_vector<float>() == std::vector<float>{0.5f, -1.0f});
  Tensor a = tensor({1, 1}).requires_grad_(), b = tensor({1, 1}).requires_grad_();
  sum(a + b).backward();
  CHECK(a.grad().storage() != b.grad().storage());
  Tensor ga = a.grad();
  mul_(ga, 10.0);
  CHECK(b.grad().to_vector<float>() == std::vector<float>{1, 1});
  // only inputs that require grad receive one
  Tensor c = tensor({1, 2});
  sum(c * w).backward();
  CHECK(!c.grad().defined());
}

TEST_CASE("gradcheck: unary ops", "[autograd]") {
  Tensor x = rnd({3, 4}, 1);
  Tensor pos = rnd({3, 4}, 2, 0.5, 2.0);
  using F = Tensor (*)(const Tensor&);
  for (F f : {static_cast<F>(&exp), static_cast<F>(&tanh), static_cast<F>(&sigmoid), static_cast<F>(&sin),
              static_cast<F>(&cos), static_cast<F>(&neg), static_cast<F>(&quick_gelu), static_cast<F>(&square),
              static_cast<F>(&abs), static_cast<F>(&relu)})
    require_gradcheck([f](const Inputs& in) { return f(in[0]); }, {x});
  for (F f : {static_cast<F>(&log), static_cast<F>(&log1p), static_cast<F>(&sqrt), static_cast<F>(&rsqrt),
              static_cast<F>(&reciprocal)})
    require_gradcheck([f](const Inputs& in) { return f(in[0]); }, {pos});
  require_gradcheck([](const Inputs& in) { return gelu(in[0]); }, {x});
  require_gradcheck([](const Inputs& in) { return gelu(in[0], true); }, {x});
  require_gradcheck([](const Inputs& in) { return pow(in[0], 3.5); }, {pos});
  require_gradcheck([](const Inputs& in) { return clamp(in[0], -0.5, 0.4); }, {x});
  require_gradcheck([](const Inputs& in) { return exp(in[0].t()); }, {x});  // non-contiguous
}

TEST_CASE("gradcheck: binary ops with broadcasting and strides", "[autograd]") {
  Tensor a = rnd({2, 3, 4}, 3), b = rnd({3, 1}, 4, 0.5, 1.5), c = rnd({4, 3}, 5);
  auto both = [&](auto op) {
    require_gradcheck([op](const Inputs& in) { return op(in[0], in[1]); }, {a, b});
    require_gradcheck([op](const Inputs& in) { return op(in[0], in[1].t()); }, {a, c});  // [2,3,4] with [3,4] transposed
  };
  both([](const Tensor& x, const Tensor& y) { return x + y; });
  both([](const Tensor& x, const Tensor& y) { return x - y; });
  both([](const Tensor& x, const Tensor& y) { return x * y; });
  require_gradcheck([](const Inputs& in) { return in[0] / in[1]; }, {a, b});
  require_gradcheck([](const Inputs& in) { return pow(in[1], in[0]); }, {a, b});
  require_gradcheck([](const Inputs& in) { return maximum(in[0], in[1].t()); }, {a, c});
  require_gradcheck([](const Inputs& in) { return minimum(in[0], in[1].t()); }, {a, c});
  require_gradcheck([](const Inputs& in) { return where(in[0] > 0.0, in[0], in[1]); }, {a, b});
  require_gradcheck([](const Inputs& in) { return in[0] * 3.0 - 1.0 / in[1]; }, {a, b});
}

TEST_CASE("gradcheck: views, casts and joins", "[autograd]") {
  Tensor a = rnd({2, 3, 4}, 6);
  require_gradcheck([](const Inputs& in) { return in[0].reshape({4, 6}) * 2.0; }, {a});
  require_gradcheck([](const Inputs& in) { return in[0].permute({2, 0, 1}).reshape({-1}); }, {a});
  require_gradcheck([](const Inputs& in) { return in[0].narrow(2, 1, 2) * in[0].narrow(2, 0, 2); }, {a});
  require_gradcheck([](const Inputs& in) { return in[0].select(1, 2); }, {a});
  require_gradcheck([](const Inputs& in) { return in[0].narrow(0, 0, 1).expand({5, 3, 4}); }, {a});
  require_gradcheck([](const Inputs& in) { return in[0].unsqueeze(1).squeeze(1).flatten(1); }, {a});
  require_gradcheck([](const Inputs& in) { return in[0].transpose(0, 2).contiguous().clone(); }, {a});
  require_gradcheck([](const Inputs& in) { return in[0].to(DType::F32).to(DType::F64); }, {a},
                    GradcheckOptions{1e-3, 1e-4, 1e-3});
  Tensor b = rnd({2, 5, 4}, 7);
  require_gradcheck([](const Inputs& in) { return cat({in[0], in[1].transpose(1, 1)}, 1); }, {a, b});
  require_gradcheck([](const Inputs& in) { return stack({in[0], in[0] * 2.0}, 3); }, {a});
  require_gradcheck([](const Inputs& in) {
    auto p = chunk(in[0], 2, 2);
    return p[0] * p[1];
  }, {a});
}

TEST_CASE("gradcheck: reductions", "[autograd]") {
  Tensor a = rnd({3, 4, 5}, 8);
  require_gradcheck([](const Inputs& in) { return sum(in[0], {1}); }, {a});
  require_gradcheck([](const Inputs& in) { return sum(in[0].permute({2, 0, 1}), {0, 2}, true); }, {a});
  require_gradcheck([](const Inputs& in) { return mean(in[0], {0, 2}); }, {a});
  require_gradcheck([](const Inputs& in) { return amax(in[0], {2}); }, {a});
  require_gradcheck([](const Inputs& in) { return amin(in[0].t(), {0}); }, {rnd({4, 3}, 9)});
  require_gradcheck([](const Inputs& in) { return var(in[0], {1}); }, {a});
  require_gradcheck([](const Inputs& in) { return stddev(in[0], {0, 1}, 0, true); }, {a});
  require_gradcheck([](const Inputs& in) { return logsumexp(in[0], {2}); }, {a});
  require_gradcheck([](const Inputs& in) { return sum(in[0]); }, {a});
}

TEST_CASE("gradcheck: matmul and linear", "[autograd]") {
  Tensor a = rnd({3, 4}, 10), b = rnd({4, 5}, 11), v = rnd({4}, 12);
  require_gradcheck([](const Inputs& in) { return matmul(in[0], in[1]); }, {a, b});
  require_gradcheck([](const Inputs& in) { return matmul(in[1].t(), in[0].t()); }, {a, b});
  require_gradcheck([](const Inputs& in) { return matmul(in[0], in[1]); }, {a, v});
  require_gradcheck([](const Inputs& in) { return matmul(in[1], in[0].t()); }, {a, v});
  require_gradcheck([](const Inputs& in) { return matmul(in[0], in[0]); }, {v});
  Tensor batch = rnd({2, 3, 4}, 13);
  require_gradcheck([](const Inputs& in) { return matmul(in[0], in[1]); }, {batch, b});  // broadcast batch
  require_gradcheck([](const Inputs& in) { return bmm(in[0], in[0].transpose(1, 2)); }, {batch});
  Tensor w = rnd({5, 4}, 14), bias = rnd({5}, 15);
  require_gradcheck([](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {batch, w, bias});
  require_gradcheck([](const Inputs& in) { return linear(in[0].transpose(0, 1), in[1]); }, {batch, w});
}

TEST_CASE("gradcheck: indexing", "[autograd]") {
  Tensor w = rnd({5, 3}, 16);
  Tensor ids = from_vector(std::vector<int64_t>{4, 0, 4, 2}, {2, 2});
  require_gradcheck([ids](const Inputs& in) { return embedding(ids, in[0]); }, {w});
  require_gradcheck([ids](const Inputs& in) { return embedding(ids, in[0], 1); }, {w});
  // The padding row is read in the forward pass but, as in torch, receives no gradient.
  Tensor wp = w.to(DType::F32).requires_grad_();
  sum(embedding(ids, wp, 4)).backward();
  CHECK(wp.grad().select(0, 4).to_vector<float>() == std::vector<float>{0, 0, 0});
  CHECK(wp.grad().select(0, 0).to_vector<float>() == std::vector<float>{1, 1, 1});
  require_gradcheck([](const Inputs& in) { return index_select(in[0], 1, from_vector(std::vector<int64_t>{2, 2, 0}, {3})); }, {w});
  Tensor gi = from_vector(std::vector<int64_t>{0, 2, 1, 1, 0, 0, 2, 2, 1, 0}, {5, 2});
  require_gradcheck([gi](const Inputs& in) { return gather(in[0], 1, gi); }, {w});
  Tensor src = rnd({5, 2}, 17);
  require_gradcheck([gi](const Inputs& in) { return scatter_add(in[0], 1, gi, in[1]); }, {w, src});
}

TEST_CASE("gradcheck: softmax, dropout, norms and losses", "[autograd]") {
  Tensor x = rnd({4, 5}, 18, -2, 2);
  require_gradcheck([](const Inputs& in) { return softmax(in[0], 1); }, {x});
  require_gradcheck([](const Inputs& in) { return softmax(in[0], 0); }, {x});
  require_gradcheck([](const Inputs& in) { return log_softmax(in[0].t(), -1); }, {x});
  require_gradcheck([](const Inputs& in) {
    Generator g(99);  // the same mask on every evaluation
    return dropout(in[0], 0.4, true, &g);
  }, {x});
  require_gradcheck([](const Inputs& in) { return l2_norm(in[0], 1); }, {x});
  require_gradcheck([](const Inputs& in) { return normalize(in[0], 0); }, {x});
  Tensor t = from_vector(std::vector<int64_t>{0, 4, -100, 2}, {4});
  require_gradcheck([t](const Inputs& in) { return cross_entropy(in[0], t); }, {x});
  require_gradcheck([t](const Inputs& in) { return cross_entropy(in[0], t, Reduction::Sum, 0.2); }, {x});
  Tensor soft = softmax(rnd({4, 5}, 19), 1);
  require_gradcheck([](const Inputs& in) { return cross_entropy(in[0], in[1], Reduction::Mean, 0.1); }, {x, soft});
  Tensor y = rnd({4, 5}, 20, 0, 1), pw = rnd({5}, 21, 0.5, 3);
  require_gradcheck([](const Inputs& in) { return binary_cross_entropy_with_logits(in[0], in[1]); }, {x, y});
  require_gradcheck([](const Inputs& in) { return binary_cross_entropy_with_logits(in[0], in[1], Reduction::Sum, in[2]); },
                    {x, y, pw});
  require_gradcheck([](const Inputs& in) { return mse_loss(in[0], in[1]); }, {x, y});
}

TEST_CASE("gradcheck detects a wrong gradient", "[autograd]") {
  // A deliberately wrong backward (2x the true derivative) must fail the check.
  auto bad = [](const Inputs& in) {
    Tensor y = detail::unary(UnaryOp::Exp, in[0]);
    return autograd::record(y, "bad_exp", {in[0]}, [y_ = y.detach()](const Tensor& g, const Needs&) {
      return std::vector<Tensor>{g * y_ * 2.0};
    });
  };
  CHECK(!gradcheck(bad, {rnd({3}, 22)}).ok);
}
