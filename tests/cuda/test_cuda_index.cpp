// CUDA indexing against the CPU: index_select on every dim (repeated and negative indices, i32 indices),
// its gradient index_add (repeated indices accumulate), gather / scatter_add on every dim with repeated
// targets, embedding (padding_idx rows get no gradient, bf16 tables), and the joins built on strided
// copies (cat, stack, split, chunk).
#include "cuda_test.hpp"

using namespace mct;

namespace {

// Accumulating kernels (index_add, scatter_add, and the backward of index_select / gather / embedding) may
// sum repeated targets in another order; in bf16 every addition rounds, so a target hit many times with
// cancelling values can differ by several ulps of its largest partial sum (measured on an H200: up to 2.6%
// of the gradient's rms), so bf16 gets 5e-2 there.
Opts acc(DType dt, bool with_grad = true) {
  Opts o = with_grad && is_floating(dt) ? grads() : Opts{};
  if (dt == DType::BF16) {
    o.rtol = 5e-2;
    o.grad_rtol = 5e-2;
  }
  return o;
}

}  // namespace

TEST_CASE("index_select and its gradient (index_add)", "[index]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F64, DType::I64, DType::Bool}) {
    Tensor x = is_floating(dt) ? randn_h({7, 129, 33}, dt) : randint_h({7, 129, 33}, 0, 2, dt);
    for (int d = 0; d < 3; ++d) {
      const int64_t n = x.size(d);
      std::vector<int64_t> iv;
      for (int64_t i = 0; i < 2 * n + 3; ++i) iv.push_back((i * 7 + 3) % n);  // repeats
      iv.push_back(-1);                                                    // negative: the last row
      iv.push_back(-n);
      Tensor idx = from_vector(iv, {int64_t(iv.size())});
      check_same(label("index_select", x.shape(), dt, "dim " + std::to_string(d)), {x, idx},
                 one([d](const std::vector<Tensor>& in) { return index_select(in[0], d, in[1]); }), acc(dt));
      check_same(label("index_select i32 index, strided x", x.shape(), dt, "dim " + std::to_string(d)),
                 {x, detail::cast(idx, DType::I32)}, one([d](const std::vector<Tensor>& in) {
                   return index_select(in[0].transpose(0, 2), 2 - d, in[1]);
                 }));
    }
  }
  // Many repeats of few rows: heavy accumulation in the backward (atomics on the device).
  Tensor w = randn_h({10, 768});
  Tensor idx = randint_h({5000}, 0, 10);
  check_same("index_select 5000 picks of 10 rows", {w, idx},
             one([](const std::vector<Tensor>& in) { return index_select(in[0], 0, in[1]); }), grads(1e-5, 1e-5));
}

TEST_CASE("embedding", "[index]") {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t pad : {-1, 0, 3}) {
      Tensor w = randn_h({1000, 129}, dt);
      Tensor ids = randint_h({4, 77}, 0, 1000);
      std::vector<int64_t> v = ids.to_vector<int64_t>();
      v[5] = v[6] = v[100] = 3;  // padding_idx 3 appears, and repeats
      v[7] = v[8] = 0;
      ids = from_vector(v, {4, 77});
      check_same(label("embedding", {4, 77}, dt, "padding_idx " + std::to_string(pad)), {w, ids},
                 one([pad](const std::vector<Tensor>& in) { return embedding(in[1], in[0], pad); }), acc(dt));
    }
  }
  // BERT-sized vocabulary, ids given as i32.
  Tensor w = randn_h({30522, 768}), ids = randint_h({8, 128}, 0, 30522, DType::I32);
  check_same("embedding 30522x768", {w, ids},
             one([](const std::vector<Tensor>& in) { return embedding(in[1], in[0], 0); }), grads());
}

TEST_CASE("gather and scatter_add", "[index]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F64, DType::I64}) {
    const Shape xs{9, 33, 17};
    Tensor x = is_floating(dt) ? randn_h(xs, dt) : randint_h(xs, -50, 50, dt);
    for (int d = 0; d < 3; ++d) {
      Shape is{7, 31, 15};
      is[size_t(d)] = 2 * xs[size_t(d)] + 5;  // along dim: repeated targets
      Tensor idx = randint_h(is, 0, xs[size_t(d)]);
      check_same(label("gather", xs, dt, "dim " + std::to_string(d)), {x, idx},
                 one([d](const std::vector<Tensor>& in) { return gather(in[0], d, in[1]); }), acc(dt));
      if (!is_floating(dt)) continue;  // the CPU's scatter_add is defined for floating dtypes only
      Tensor src = randn_h(is, dt);
      Opts o = acc(dt);
      o.grad_inputs = {0, 2};
      check_same(label("scatter_add", xs, dt, "dim " + std::to_string(d)), {x, idx, src},
                 one([d](const std::vector<Tensor>& in) { return scatter_add(in[0], d, in[1], in[2]); }), o);
    }
  }
  // gather along the class dim, as cross_entropy does; strided source.
  Tensor logits = randn_h({256, 1000}), tgt = randint_h({256, 1}, 0, 1000);
  check_same("gather [256,1000] dim 1", {logits, tgt},
             one([](const std::vector<Tensor>& in) { return gather(in[0], 1, in[1]); }), grads());
  Tensor lt = randn_h({1000, 256});
  check_same("gather from a transposed view", {lt, tgt},
             one([](const std::vector<Tensor>& in) { return gather(in[0].t(), 1, in[1]); }), grads());
}

TEST_CASE("cat, stack, split and chunk", "[index]") {
  for (DType dt : {DType::F32, DType::BF16, DType::I64}) {
    Tensor a = is_floating(dt) ? randn_h({7, 129}, dt) : randint_h({7, 129}, 0, 9, dt);
    Tensor b = is_floating(dt) ? randn_h({3, 129}, dt) : randint_h({3, 129}, 0, 9, dt);
    Tensor c = is_floating(dt) ? randn_h({129, 5}, dt) : randint_h({129, 5}, 0, 9, dt);
    check_same(std::string("cat/stack ") + dtype_name(dt), {a, b, c},
               [](const std::vector<Tensor>& in) {
                 return std::vector<Tensor>{cat({in[0], in[1]}, 0), cat({in[0].t(), in[2], in[1].t()}, 1),
                                            stack({in[0], in[0] + in[0]}, 1), cat({in[2].narrow(1, 1, 3)}, 0)};
               },
               is_floating(dt) ? grads() : Opts{});
  }
  Tensor x = randn_h({10, 1000});
  check_same("split and chunk", {x},
             [](const std::vector<Tensor>& in) {
               std::vector<Tensor> r;
               for (const Tensor& p : split(in[0], 333, 1)) r.push_back(exp(p));
               for (const Tensor& p : chunk(in[0], 3, 0)) r.push_back(p.contiguous() * 2.0);
               return r;
             },
             grads());
  // mixed dtypes promote: cat(bf16, f32) -> f32
  check_same("cat promotes dtypes", {randn_h({2, 5}, DType::BF16), randn_h({3, 5})},
             one([](const std::vector<Tensor>& in) { return cat({in[0], in[1]}, 0); }), grads());
}
