// Errors on the CUDA device: an op mixing CPU and CUDA tensors throws mc::Error, as does an op the CPU
// backend rejects for a dtype, a second GPU index, an out-of-range index, and an index tensor left on the
// CPU. The index cases come last, the wrong-device one at the very end: a kernel that read a host pointer
// could end the CUDA context, and this file is its own ctest entry so no other test depends on it.
#include "cuda_test.hpp"

using namespace mct;

TEST_CASE("ops mixing CPU and CUDA tensors throw mc::Error", "[errors]") {
  Tensor a = randn_h({4, 8}), b = randn_h({4, 8}).to(gpu());
  CHECK_THROWS_AS(add(a, b), Error);
  CHECK_THROWS_AS(mul(b, a), Error);
  CHECK_THROWS_AS(maximum(a, b), Error);
  CHECK_THROWS_AS(lt(b, a), Error);
  CHECK_THROWS_AS(where(a > 0.0, a, b), Error);
  CHECK_THROWS_AS(where(b > 0.0, a, a), Error);
  CHECK_THROWS_AS(matmul(a, b.t()), Error);
  CHECK_THROWS_AS(linear(b, randn_h({3, 8})), Error);
  CHECK_THROWS_AS(cat({a, b}), Error);
  CHECK_THROWS_AS(layer_norm(b, {8}, ones({8}), zeros({8})), Error);
  CHECK_THROWS_AS(batch_norm(b, zeros({8}), ones({8}), {}, {}, true), Error);
  Tensor x = randn_h({2, 3, 8, 8}).to(gpu());
  CHECK_THROWS_AS(conv2d(x, randn_h({4, 3, 3, 3})), Error);
  CHECK_THROWS_AS(conv2d(x, randn_h({4, 3, 3, 3}).to(gpu()), randn_h({4})), Error);
  Tensor q = randn_h({1, 2, 5, 8}).to(gpu());
  CHECK_THROWS_AS(scaled_dot_product_attention(q, q, randn_h({1, 2, 5, 8}), attention_params(8)), Error);
  CHECK_THROWS_AS(scaled_dot_product_attention(q, q, q, attention_params(8, false, bools_h({1, 5}))), Error);
  CHECK_THROWS_AS(index_select(b, 0, arange(2)), Error);
}

TEST_CASE("ops the CPU rejects for a dtype are rejected on CUDA too", "[errors]") {
  Tensor i = randint_h({16}, 1, 9).to(gpu());
  CHECK_THROWS_AS(div(i, i), Error);      // integer division is left undefined
  CHECK_THROWS_AS(exp(i), Error);         // no integer exp
  CHECK_THROWS_AS(pow(i, i), Error);
  Tensor e = Tensor::empty({3, 0}, DType::F32, gpu());
  CHECK_THROWS_AS(amax(e, {1}), Error);   // max of an empty set
}

TEST_CASE("only cuda:0 is driven", "[errors]") {
  CHECK_THROWS_AS(backend(Device::cuda(1)), Error);
}

TEST_CASE("CUDA errors keep the device usable", "[errors]") {
  // After every error above the stream must still work.
  Tensor a = randn_h({1000});
  compare("exp after errors", exp(a), exp(a.to(gpu())));
}

TEST_CASE("out-of-range indices throw mc::Error on CUDA as on the CPU", "[errors][index]") {
  // The kernels record a bad index in mapped host memory; with synchronous launches the op that caused it
  // raises the error (otherwise a later index op may).
  cuda::set_sync_launches(true);
  Tensor w = randn_h({10, 4});
  Tensor bad = from_vector(std::vector<int64_t>{1, 10, 2}, {3});
  CHECK_THROWS_AS(index_select(w, 0, bad), Error);
  CHECK_THROWS_AS(index_select(w.to(gpu()), 0, bad.to(gpu())), Error);
  Tensor neg = from_vector(std::vector<int64_t>{-11}, {1});
  CHECK_THROWS_AS(index_select(w.to(gpu()), 0, neg.to(gpu())), Error);
  CHECK_THROWS_AS(embedding(bad.to(gpu()), w.to(gpu())), Error);
  CHECK_THROWS_AS(gather(w.to(gpu()), 0, from_vector(std::vector<int64_t>{0, 0, 0, 12}, {1, 4}).to(gpu())), Error);
  cuda::synchronize();
  cuda::set_sync_launches(false);
  Tensor a = randn_h({1000});
  compare("exp after index errors", exp(a), exp(a.to(gpu())));
  compare("index_select after index errors", index_select(w, 0, arange(3)),
          index_select(w.to(gpu()), 0, arange(3, DType::I64, gpu())), 0);
}

TEST_CASE("index tensors on the wrong device throw mc::Error", "[errors][index]") {
  Tensor w = randn_h({10, 4}).to(gpu());
  CHECK_THROWS_AS(embedding(randint_h({5}, 0, 10), w), Error);
  CHECK_THROWS_AS(gather(w, 1, randint_h({10, 2}, 0, 4)), Error);
  CHECK_THROWS_AS(scatter_add(w, 1, randint_h({10, 2}, 0, 4), randn_h({10, 2}).to(gpu())), Error);
  Tensor a = randn_h({1000});
  compare("exp after index device errors", exp(a), exp(a.to(gpu())));
}
