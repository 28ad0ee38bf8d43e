// CUDA reductions and row-wise normalisations against the CPU: sum / mean / amax / amin / prod over many
// dim sets (contiguous, strided and broadcast inputs, integers), argmax / argmin (ties, NaN), NaN
// propagation, var / std / logsumexp, softmax and log_softmax forward and backward (any dim, masked -inf
// entries), cross_entropy (class and probability targets, label smoothing, ignore_index) and L2 normalize.
#include "cuda_test.hpp"

using namespace mct;

namespace {

const std::vector<Shape> kDimSets = {{}, {0}, {1}, {2}, {3}, {0, 2}, {1, 3}, {0, 1, 2}, {1, 2, 3}, {0, 3}, {-1}};

std::string dims_str(const Shape& d) { return d.empty() ? "all" : shape_str(d); }

}  // namespace

TEST_CASE("sum / mean / amax / amin over dim sets", "[reduce]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F64, DType::F16}) {
    Tensor x = randn_h({6, 7, 129, 5}, dt, 0.5, 1.0);
    for (const Shape& d : kDimSets) {
      for (bool keep : {false, true}) {
        check_same(label("reductions", x.shape(), dt, dims_str(d) + (keep ? " keepdim" : "")), {x},
                   [&](const std::vector<Tensor>& in) {
                     return std::vector<Tensor>{sum(in[0], d, keep), mean(in[0], d, keep), amax(in[0], d, keep),
                                                amin(in[0], d, keep)};
                   },
                   grads());
      }
    }
  }
}

TEST_CASE("reductions of large, strided and broadcast inputs", "[reduce]") {
  struct C {
    std::string name;
    Shape shape;
    Shape dims;
    std::function<Tensor(const Tensor&)> view;
  };
  auto id = [](const Tensor& t) { return t; };
  const std::vector<C> cases = {
      {"rows", {1000, 1031}, {1}, id},
      {"columns", {1000, 1031}, {0}, id},
      {"long rows", {3, 1000003}, {1}, id},
      {"everything", {4194305}, {}, id},
      {"one element", {1}, {0}, id},
      {"ones in the shape", {1, 129, 1, 7}, {1, 2}, id},
      {"transposed rows", {1031, 257}, {1}, [](const Tensor& t) { return t.t(); }},
      {"transposed columns", {1031, 257}, {0}, [](const Tensor& t) { return t.t(); }},
      {"permuted 3-d", {33, 65, 17}, {0, 2}, [](const Tensor& t) { return t.permute({2, 0, 1}); }},
      {"narrowed", {100, 300}, {1}, [](const Tensor& t) { return t.narrow(1, 7, 250).narrow(0, 1, 97); }},
      {"expanded (stride 0)", {1, 129}, {0}, [](const Tensor& t) { return t.expand({1000, 129}); }},
      {"expanded inner", {129, 1}, {1}, [](const Tensor& t) { return t.expand({129, 1000}); }},
  };
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const C& c : cases) {
      Tensor x = randn_h(c.shape, dt, 0.5, 1.0);
      check_same(label("reductions " + c.name, c.shape, dt, dims_str(c.dims)), {x},
                 [&](const std::vector<Tensor>& in) {
                   Tensor v = c.view(in[0]);
                   return std::vector<Tensor>{sum(v, c.dims), mean(v, c.dims), amax(v, c.dims), amin(v, c.dims)};
                 },
                 grads());
    }
  }
}

TEST_CASE("prod and integer reductions", "[reduce]") {
  Tensor x = rand_h({6, 7, 129}, DType::F32, 0.95, 1.05);
  for (const Shape& d : {Shape{}, Shape{0}, Shape{2}, Shape{0, 1}}) {
    check_same("prod " + dims_str(d), {x}, one([&](const std::vector<Tensor>& in) {
                 std::vector<int> dd;
                 for (int64_t k : (d.empty() ? Shape{0, 1, 2} : d)) dd.push_back(int(k));
                 return detail::reduce(ReduceOp::Prod, in[0], dd, in[0].dtype());
               }));
  }
  for (DType dt : {DType::I32, DType::I64, DType::U8, DType::Bool}) {
    Tensor xi = randint_h({33, 129, 5}, 0, dt == DType::Bool ? 2 : 100, dt);
    for (const Shape& d : {Shape{}, Shape{1}, Shape{0, 2}}) {
      check_same(std::string("integer reductions ") + dtype_name(dt) + " " + dims_str(d), {xi},
                 [&](const std::vector<Tensor>& in) {
                   std::vector<Tensor> r{sum(in[0], d)};
                   if (dt != DType::Bool) {
                     r.push_back(amax(in[0], d));
                     r.push_back(amin(in[0], d));
                   }
                   return r;
                 });
    }
  }
}

TEST_CASE("amax / amin gradients split between ties", "[reduce]") {
  Tensor x = detail::cast(floor(rand_h({65, 33}, DType::F32, 0, 4)), DType::F32);
  for (const Shape& d : {Shape{0}, Shape{1}, Shape{}}) {
    check_same("amax/amin ties " + dims_str(d), {x}, [&](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{amax(in[0], d), amin(in[0], d)};
    }, grads());
  }
}

TEST_CASE("argmax / argmin", "[reduce]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F64, DType::I32, DType::I64}) {
    Tensor x = is_floating(dt) ? randn_h({6, 7, 129, 5}, dt) : randint_h({6, 7, 129, 5}, -1000, 1000, dt);
    Tensor ties = is_floating(dt) ? detail::cast(floor(rand_h({6, 7, 129, 5}, DType::F32, 0, 3)), dt)
                                  : randint_h({6, 7, 129, 5}, 0, 3, dt);
    for (int d = 0; d < 4; ++d) {
      for (bool keep : {false, true}) {
        check_same(label("argmax/argmin", x.shape(), dt, "dim " + std::to_string(d)), {x, ties},
                   [&](const std::vector<Tensor>& in) {
                     return std::vector<Tensor>{argmax(in[0], d, keep), argmin(in[0], d, keep),
                                                argmax(in[1], d, keep), argmin(in[1], d, keep)};
                   });
      }
    }
  }
  Tensor big = randn_h({7, 100003});
  check_same("argmax long rows", {big}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{argmax(in[0], 1), argmin(in[0], 1), argmax(in[0].t(), 0), argmax(in[0], 0)};
  });
  Tensor s = randn_h({});
  check_same("argmax of a 0-d tensor", {s}, one([](const std::vector<Tensor>& in) { return argmax(in[0], 0); }));
}

TEST_CASE("NaN propagates through reductions; argmax points at the first NaN", "[reduce]") {
  Tensor base = randn_h({16, 300});
  std::vector<float> b = base.to_vector<float>();
  for (int r = 0; r < 16; r += 3) b[size_t(r * 300 + (r * 37) % 300)] = NAN;
  for (int r = 1; r < 16; r += 5) b[size_t(r * 300 + 299)] = NAN;
  Tensor x = from_vector(b, {16, 300});
  check_same("NaN rows", {x}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{sum(in[0], {1}), mean(in[0], {1}), amax(in[0], {1}), amin(in[0], {1}),
                               argmax(in[0], 1), argmin(in[0], 1), amax(in[0], {0}), argmax(in[0], 0)};
  });
  std::vector<float> inf{-INFINITY, -INFINITY, -INFINITY, INFINITY, 1.0f, -INFINITY};
  check_same("infinite entries", {from_vector(inf, {2, 3})}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{amax(in[0], {1}), amin(in[0], {1}), argmax(in[0], 1), argmin(in[0], 1),
                               sum(in[0], {1})};
  });
}

TEST_CASE("var, std and logsumexp", "[reduce]") {
  Tensor x = randn_h({33, 129, 7}, DType::F32, 1.0, 2.0);
  for (const Shape& d : {Shape{1}, Shape{0, 2}, Shape{}}) {
    check_same("var/std/logsumexp " + dims_str(d), {x}, [&](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{var(in[0], d), stddev(in[0], d, 0), logsumexp(in[0], d.empty() ? Shape{0, 1, 2} : d)};
    }, grads());
  }
  std::vector<float> m{-INFINITY, -INFINITY, -INFINITY, 1.0f, -INFINITY, 2.0f};
  check_same("logsumexp of -inf rows", {from_vector(m, {2, 3})},
             one([](const std::vector<Tensor>& in) { return logsumexp(in[0], {1}); }));
}

TEST_CASE("softmax and log_softmax, forward and backward", "[softmax]") {
  struct C {
    Shape shape;
    int64_t dim;
  };
  const std::vector<C> cases = {{{7}, 0},         {{1, 1}, 1},         {{129, 197}, -1},    {{4, 1000}, 1},
                                {{3, 5000}, 1},   {{2, 3, 4097}, -1},  {{7, 129, 5}, 1},    {{129, 33}, 0},
                                {{2, 12, 50, 50}, -1}, {{64, 32769}, 1}};
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    for (const C& c : cases) {
      Tensor x = randn_h(c.shape, dt, 0, 3);
      check_same(label("softmax", c.shape, dt, "dim " + std::to_string(c.dim)), {x},
                 [&](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{softmax(in[0], c.dim), log_softmax(in[0], c.dim)};
                 },
                 grads());
    }
  }
  // Large logits (stability), masked entries, an all -inf row (NaN like torch), strided input.
  Tensor big = randn_h({65, 197}, DType::F32, 1e4, 10);
  check_same("softmax large logits", {big}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{softmax(in[0], -1), log_softmax(in[0], -1)};
  }, grads());
  std::vector<float> mv = randn_h({4, 77}).to_vector<float>();
  for (int j = 40; j < 77; ++j) mv[size_t(77 + j)] = -INFINITY;  // row 1: causal-style mask
  for (int j = 0; j < 77; ++j) mv[size_t(2 * 77 + j)] = -INFINITY;  // row 2: fully masked
  check_same("softmax with -inf entries", {from_vector(mv, {4, 77})}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{softmax(in[0], -1), log_softmax(in[0], -1)};
  });
  Tensor xs = randn_h({200, 129});
  check_same("softmax of a strided view", {xs},
             [](const std::vector<Tensor>& in) {
               Tensor v = in[0].narrow(0, 3, 150).t();
               return std::vector<Tensor>{softmax(v, -1), log_softmax(v, 0)};
             },
             grads());
}

TEST_CASE("cross_entropy", "[softmax][loss]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Shape& s : {Shape{1, 7}, Shape{129, 1000}, Shape{256, 11}, Shape{7, 30522}}) {
      Tensor logits = randn_h(s, dt, 0, 2);
      std::vector<int64_t> t = randint_h({s[0]}, 0, s[1]).to_vector<int64_t>();
      if (s[0] > 4) t[3] = -100;  // ignored row
      Tensor target = from_vector(t, {s[0]});
      for (Reduction red : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
        for (double smooth : {0.0, 0.1}) {
          check_same(label("cross_entropy", s, dt, "red " + std::to_string(int(red)) + " smooth " + std::to_string(smooth)),
                     {logits, target},
                     one([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], red, smooth); }),
                     grads());
        }
      }
      Tensor probs = softmax(randn_h(s), -1);
      check_same(label("cross_entropy probabilities", s, dt), {logits, detail::cast(probs, dt)},
                 one([](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], Reduction::Mean, 0.05); }),
                 grads());
    }
  }
  // CLIP's symmetric contrastive loss on a similarity matrix.
  Tensor a = randn_h({128, 512}), b = randn_h({128, 512});
  check_same("contrastive loss", {a, b}, one([](const std::vector<Tensor>& in) {
               Tensor x = normalize(in[0], -1), y = normalize(in[1], -1);
               Tensor lg = matmul(x, y.t()) * 14.3;
               Tensor lab = arange(128, DType::I64, lg.device());
               return (cross_entropy(lg, lab) + cross_entropy(lg.t().contiguous(), lab)) / 2.0;
             }),
             grads());
}

TEST_CASE("l2_norm and normalize", "[reduce]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor x = randn_h({129, 768}, dt);
    std::vector<float> xv = detail::cast(x, DType::F32).to_vector<float>();
    for (int j = 0; j < 768; ++j) xv[size_t(5 * 768 + j)] = 0;  // a zero row: gradient 0, output 0
    Tensor xz = detail::cast(from_vector(xv, {129, 768}), dt);
    for (int64_t d : {-1, 0}) {
      check_same(label("normalize", {129, 768}, dt, "dim " + std::to_string(d)), {xz},
                 [&](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{normalize(in[0], d), l2_norm(in[0], d)};
                 },
                 grads());
    }
  }
}
