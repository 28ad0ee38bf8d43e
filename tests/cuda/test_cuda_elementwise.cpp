// CUDA elementwise primitives against the CPU: every unary and binary op (comparisons and logic included),
// the fused activation backwards (through autograd), where, type promotion, broadcasting and strided
// operands, special values (NaN, infinities, signed zeros, subnormals), dropout masks and the random fills
// (the counter-based stream must equal the CPU's).
#include "cuda_test.hpp"

using namespace mct;

namespace {

struct Unary {
  std::string name;
  std::function<Tensor(const Tensor&)> f;
  double lo, hi;  // input range
  bool diff;      // has a gradient
};

std::vector<Unary> unary_ops() {
  const double inf = INFINITY;
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, -3, 3, true},
      {"exp", [](const Tensor& x) { return exp(x); }, -10, 10, true},
      {"log", [](const Tensor& x) { return log(x); }, 0.01, 10, true},
      {"log1p", [](const Tensor& x) { return log1p(x); }, -0.9, 10, true},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.01, 10, true},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, 0.05, 10, true},
      {"abs", [](const Tensor& x) { return abs(x); }, -3, 3, true},
      {"sign", [](const Tensor& x) { return sign(x); }, -3, 3, false},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -5, 5, true},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -10, 10, true},
      {"relu", [](const Tensor& x) { return relu(x); }, -3, 3, true},
      {"gelu", [](const Tensor& x) { return gelu(x); }, -6, 6, true},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, -6, 6, true},
      {"quick_gelu", [](const Tensor& x) { return quick_gelu(x); }, -8, 8, true},
      {"sin", [](const Tensor& x) { return sin(x); }, -10, 10, true},
      {"cos", [](const Tensor& x) { return cos(x); }, -10, 10, true},
      {"reciprocal", [](const Tensor& x) { return reciprocal(x); }, 0.1, 5, true},
      {"floor", [](const Tensor& x) { return floor(x); }, -5, 5, false},
      {"logical_not", [](const Tensor& x) { return logical_not(floor(x)); }, -1.5, 1.5, false},
      {"clamp(-0.5,0.7)", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, -2, 2, true},
      {"clamp(-inf,0.3)", [inf](const Tensor& x) { return clamp(x, -inf, 0.3); }, -2, 2, true},
      {"clamp(-0.2,inf)", [inf](const Tensor& x) { return clamp(x, -0.2, inf); }, -2, 2, true},
      {"pow 2", [](const Tensor& x) { return pow(x, 2.0); }, -3, 3, true},
      {"pow 0.5", [](const Tensor& x) { return pow(x, 0.5); }, 0.01, 4, true},
      {"pow 3", [](const Tensor& x) { return pow(x, 3.0); }, -3, 3, true},
      {"pow -1.5", [](const Tensor& x) { return pow(x, -1.5); }, 0.2, 4, true},
      {"pow 1/3", [](const Tensor& x) { return pow(x, 1.0 / 3.0); }, 0.01, 4, true},
  };
}

const DType kFloats[] = {DType::F32, DType::BF16, DType::F16, DType::F64};

}  // namespace

TEST_CASE("unary ops and their gradients", "[elementwise]") {
  for (const Unary& u : unary_ops()) {
    for (DType dt : kFloats) {
      for (const Shape& s : {Shape{1}, Shape{7}, Shape{129, 33}, Shape{1000003}}) {
        if (s[0] == 1000003 && (dt == DType::F16 || dt == DType::F64)) continue;  // big sizes: f32 / bf16 only
        Tensor x = rand_h(s, dt, u.lo, u.hi);
        check_same(label(u.name, s, dt), {x}, one([&](const std::vector<Tensor>& in) { return u.f(in[0]); }),
                   u.diff ? grads() : Opts{});
      }
      // Strided operand: a transposed and narrowed view.
      Tensor x = rand_h({40, 129}, dt, u.lo, u.hi);
      check_same(label(u.name, {129, 33}, dt, "strided"), {x},
                 one([&](const std::vector<Tensor>& in) { return u.f(in[0].narrow(0, 3, 33).t()); }),
                 u.diff ? grads() : Opts{});
    }
  }
}

TEST_CASE("unary ops on special values", "[elementwise]") {
  std::vector<float> v{0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 1e38f, -1e38f, 1.0f, -1.0f, 0.5f,
                       -0.5f, 88.0f, -88.0f, 100.0f, -100.0f, 2.0f, 1e-20f};
  Tensor x = from_vector(v, {int64_t(v.size())});
  for (const Unary& u : unary_ops()) {
    check_same(u.name + " special values f32", {x}, one([&](const std::vector<Tensor>& in) { return u.f(in[0]); }));
    check_same(u.name + " special values bf16", {detail::cast(x, DType::BF16)},
               one([&](const std::vector<Tensor>& in) { return u.f(in[0]); }));
  }
}

TEST_CASE("integer unary ops", "[elementwise]") {
  for (DType dt : {DType::I32, DType::I64}) {
    Tensor x = randint_h({1000, 7}, -50, 50, dt);
    check_same(std::string("integer unary ") + dtype_name(dt), {x}, [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{neg(in[0]), abs(in[0]), sign(in[0]), clamp(in[0], -10, 20), logical_not(in[0])};
    });
  }
  Tensor b = bools_h({513});
  check_same("logical_not bool", {b}, one([](const std::vector<Tensor>& in) { return logical_not(in[0]); }));
}

namespace {

struct Binary {
  std::string name;
  std::function<Tensor(const Tensor&, const Tensor&)> f;
  double alo, ahi, blo, bhi;
  bool diff;
};

std::vector<Binary> binary_ops() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, -3, 3, -3, 3, true},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, -3, 3, -3, 3, true},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, -3, 3, -3, 3, true},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, -3, 3, 0.5, 3, true},
      {"pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); }, 0.1, 3, -2, 2, true},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }, -3, 3, -3, 3, true},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }, -3, 3, -3, 3, true},
  };
}

// Operand pairs: equal shapes, broadcasting both ways, a 0-d scalar, a big odd size, strided views.
struct Pair {
  std::string name;
  Shape a, b;
  std::function<Tensor(const Tensor&)> va, vb;  // views applied on the device (identity when null)
};

std::vector<Pair> pairs() {
  auto id = std::function<Tensor(const Tensor&)>();
  return {
      {"same", {7, 129}, {7, 129}, id, id},
      {"row x col", {129, 1}, {1, 33}, id, id},
      {"bcast leading", {5, 1, 33}, {33}, id, id},
      {"scalar rhs", {1000}, {}, id, id},
      {"scalar lhs", {}, {77}, id, id},
      {"big odd", {1000003}, {1000003}, id, id},
      {"transposed", {33, 129}, {129, 33}, [](const Tensor& t) { return t.t(); }, id},
      {"narrow+expand", {10, 40}, {1, 33},
       [](const Tensor& t) { return t.narrow(1, 2, 33); }, [](const Tensor& t) { return t.expand({10, 33}); }},
  };
}

Tensor apply(const std::function<Tensor(const Tensor&)>& v, const Tensor& t) { return v ? v(t) : t; }

// Small integers as floats: ties for maximum / minimum and the comparisons.
Tensor ties_h(const Shape& s, DType dt) { return detail::cast(floor(rand_h(s, DType::F32, -3, 3)), dt); }

}  // namespace

TEST_CASE("binary ops, broadcasting and strided operands, with gradients", "[elementwise]") {
  for (const Binary& op : binary_ops()) {
    for (DType dt : kFloats) {
      for (const Pair& p : pairs()) {
        if (p.name == "big odd" && (dt == DType::F16 || dt == DType::F64)) continue;
        const bool ties = op.name == "maximum" || op.name == "minimum";
        Tensor a = ties ? ties_h(p.a, dt) : rand_h(p.a, dt, op.alo, op.ahi);
        Tensor b = ties ? ties_h(p.b, dt) : rand_h(p.b, dt, op.blo, op.bhi);
        check_same(op.name + " " + p.name + " " + dtype_name(dt), {a, b},
                   one([&](const std::vector<Tensor>& in) { return op.f(apply(p.va, in[0]), apply(p.vb, in[1])); }),
                   op.diff ? grads() : Opts{});
      }
    }
  }
}

TEST_CASE("comparisons and logic", "[elementwise]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64, DType::I32, DType::I64, DType::U8}) {
    for (const Pair& p : pairs()) {
      Tensor a = is_floating(dt) ? ties_h(p.a, dt) : randint_h(p.a, 0, 4, dt);
      Tensor b = is_floating(dt) ? ties_h(p.b, dt) : randint_h(p.b, 0, 4, dt);
      check_same(std::string("comparisons ") + p.name + " " + dtype_name(dt), {a, b},
                 [&](const std::vector<Tensor>& in) {
                   Tensor x = apply(p.va, in[0]), y = apply(p.vb, in[1]);
                   return std::vector<Tensor>{eq(x, y), ne(x, y), lt(x, y), le(x, y), gt(x, y), ge(x, y),
                                              logical_and(x, y), logical_or(x, y)};
                 });
    }
  }
  Tensor a = bools_h({129, 1}), b = bools_h({1, 65});
  check_same("logic on bools", {a, b}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{logical_and(in[0], in[1]), logical_or(in[0], in[1]), eq(in[0], in[1]),
                               ne(in[0], in[1])};
  });
  std::vector<float> sv{NAN, 1.0f, INFINITY, -INFINITY, 0.0f, -0.0f, NAN};
  std::vector<float> tv{NAN, NAN, INFINITY, 1.0f, -0.0f, 0.0f, 2.0f};
  check_same("comparisons with NaN, inf, signed zero", {from_vector(sv, {7}), from_vector(tv, {7})},
             [](const std::vector<Tensor>& in) {
               return std::vector<Tensor>{eq(in[0], in[1]), ne(in[0], in[1]), lt(in[0], in[1]), ge(in[0], in[1]),
                                          logical_and(in[0], in[1]), maximum(in[0], in[1]), minimum(in[0], in[1])};
             });
}

TEST_CASE("integer binary ops and type promotion", "[elementwise]") {
  for (DType dt : {DType::I32, DType::I64, DType::U8}) {
    Tensor a = randint_h({129, 33}, 0, 100, dt), b = randint_h({33}, 0, 100, dt);
    check_same(std::string("integer binary ") + dtype_name(dt), {a, b}, [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{add(in[0], in[1]), sub(in[0], in[1]), mul(in[0], in[1]), maximum(in[0], in[1]),
                                 minimum(in[0], in[1])};
    });
  }
  // Promotion: the op casts on the device before the primitive runs.
  check_same("promotion i64 + f32, bf16 * f32, bf16 + f16, bool + i32",
             {randint_h({65}, -9, 9), randn_h({65}), randn_h({65}, DType::BF16), randn_h({65}, DType::F16),
              bools_h({65}), randint_h({65}, -9, 9, DType::I32)},
             [](const std::vector<Tensor>& in) {
               return std::vector<Tensor>{add(in[0], in[1]), mul(in[2], in[1]), add(in[2], in[3]), add(in[4], in[5]),
                                          in[0] * 2.5, in[2] / 3.0};
             });
}

TEST_CASE("where", "[elementwise]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F64, DType::I64, DType::Bool}) {
    Tensor c = bools_h({129, 1}), a = is_floating(dt) ? randn_h({1, 33}, dt) : randint_h({1, 33}, 0, 2, dt);
    Tensor b = is_floating(dt) ? randn_h({}, dt) : randint_h({}, 0, 2, dt);
    check_same(std::string("where broadcast ") + dtype_name(dt), {c, a, b},
               one([](const std::vector<Tensor>& in) { return where(in[0], in[1], in[2]); }),
               is_floating(dt) ? grads() : Opts{});
  }
  Tensor c = bools_h({1000003}), a = randn_h({1000003}), b = randn_h({1000003});
  check_same("where big", {c, a, b}, one([](const std::vector<Tensor>& in) { return where(in[0], in[1], in[2]); }),
             grads());
  Tensor c2 = bools_h({33, 129}), a2 = randn_h({129, 33}), b2 = randn_h({129, 40});
  check_same("where strided", {c2, a2, b2},
             one([](const std::vector<Tensor>& in) { return where(in[0].t(), in[1], in[2].narrow(1, 4, 33)); }),
             grads());
}

TEST_CASE("chains of activations with autograd (composite backward)", "[elementwise]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor x = randn_h({257, 129}, dt), y = randn_h({129}, dt);
    check_same(std::string("mlp-like chain ") + dtype_name(dt), {x, y},
               one([](const std::vector<Tensor>& in) {
                 Tensor h = gelu(in[0] * in[1] + 0.5);
                 Tensor s = sigmoid(h) * tanh(in[0]) + quick_gelu(relu(in[0] - 0.2));
                 return exp(clamp(s, -3, 3)) / (abs(h) + 1.0);
               }),
               grads());
  }
}

TEST_CASE("dropout draws the CPU's mask", "[elementwise][random]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (double p : {0.1, 0.5, 0.9}) {
      Tensor x = randn_h({1000, 129}, dt);
      check_same(label("dropout", {1000, 129}, dt, "p=" + std::to_string(p)), {x},
                 one([p](const std::vector<Tensor>& in) {
                   Generator g(4242);
                   return dropout(in[0], p, true, &g);
                 }),
                 grads(0, 0));
    }
  }
}

TEST_CASE("random fills equal the CPU's Philox stream", "[random]") {
  for (int64_t n : {1, 3, 4, 5, 7, 129, 1000003}) {
    for (uint64_t draws : {0, 1, 37}) {
      auto make = [&](Device dev, RandomKind kind, DType dt, double a, double b) {
        Generator g(91 + uint64_t(n));
        for (uint64_t i = 0; i < draws; ++i) g.next_draw();
        Tensor t = Tensor::empty({n}, dt, dev);
        if (kind == RandomKind::Uniform) uniform_(t, a, b, &g);
        else normal_(t, a, b, &g);
        return t;
      };
      const std::string tag = " n=" + std::to_string(n) + " offset=" + std::to_string(draws);
      for (DType dt : {DType::F32, DType::BF16, DType::F64, DType::F16}) {
        if (n > 1000 && draws == 1 && dt != DType::F32) continue;
        poison({n * int64_t(dtype_size(dt))});
        compare(std::string("uniform(0,1) ") + dtype_name(dt) + tag, make(host(), RandomKind::Uniform, dt, 0, 1),
                make(gpu(), RandomKind::Uniform, dt, 0, 1), 0);
        compare(std::string("uniform(-2,3) ") + dtype_name(dt) + tag, make(host(), RandomKind::Uniform, dt, -2, 3),
                make(gpu(), RandomKind::Uniform, dt, -2, 3), 0);
        compare(std::string("normal(0.5,2) ") + dtype_name(dt) + tag, make(host(), RandomKind::Normal, dt, 0.5, 2),
                make(gpu(), RandomKind::Normal, dt, 0.5, 2), dt == DType::F32 || dt == DType::F64 ? 2e-6 : -1);
      }
    }
  }
  // Strided destinations: element i of the view in row-major order.
  for (RandomKind kind : {RandomKind::Uniform, RandomKind::Normal}) {
    auto make = [&](Device dev) {
      Generator g(5);
      Tensor base = zeros({70, 129}, DType::F32, dev);
      Tensor v = base.narrow(0, 3, 65).t();
      if (kind == RandomKind::Uniform) uniform_(v, -1, 1, &g);
      else normal_(v, 0, 1, &g);
      return base;
    };
    compare(kind == RandomKind::Uniform ? "uniform into a strided view" : "normal into a strided view", make(host()),
            make(gpu()), kind == RandomKind::Uniform ? 0.0 : 2e-6);
  }
  // Factories and init on the device.
  Generator g1(7), g2(7);
  compare("randn factory", randn({33, 65}, &g1), randn({33, 65}, &g2, DType::F32, gpu()), 2e-6);
  compare("rand factory", rand({33, 65}, &g1), rand({33, 65}, &g2, DType::F32, gpu()), 0);
}
