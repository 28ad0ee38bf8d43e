// Tensor core: dtypes, storage, views, broadcasting, casts, random numbers, printing.
#include <catch2/catch.hpp>

#include <atomic>
#include <sstream>

#include "mc/mc.hpp"

using namespace mc;


TEST_CASE("bf16 and f16 conversions round to nearest even", "[tensor]") {
  CHECK(bf16(1.0f).bits == 0x3f80);
  CHECK(float(bf16(3.140625f)) == 3.140625f);
  CHECK(bf16(1.00390625f).bits == 0x3f80);        // exactly half way, even stays
  CHECK(bf16(1.01171875f).bits == 0x3f82);        // half way, rounds to even upwards
  CHECK(std::isnan(float(bf16(NAN))));
  CHECK(f16(1.0f).bits == 0x3c00);
  CHECK(f16(65504.0f).bits == 0x7bff);            // largest finite
  CHECK(f16(65520.0f).bits == 0x7c00);            // rounds to inf
  CHECK(f16(-2.0f).bits == 0xc000);
  CHECK(f16(5.960464477539063e-08f).bits == 0x0001);  // smallest subnormal
  CHECK(float(f16(uint16_t(0))) == 0.0f);
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite half survives a round trip through float
    f16 v;
    v.bits = uint16_t(h);
    REQUIRE(f16(float(v)).bits == h);
  }
}

TEST_CASE("dtype names and sizes", "[tensor]") {
  CHECK(dtype_size(DType::BF16) == 2);
  CHECK(dtype_size(DType::I64) == 8);
  CHECK(dtype_from_name("f16") == DType::F16);
  CHECK_THROWS_AS(dtype_from_name("f8"), Error);
}

TEST_CASE("factories and element access", "[tensor]") {
  Tensor a = arange(6, DType::F32).reshape({2, 3});
  CHECK(a.shape() == Shape{2, 3});
  CHECK(a.strides() == Shape{3, 1});
  CHECK(a.to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(full({2}, 7.5).to_vector<double>() == std::vector<double>{7.5, 7.5});
  CHECK(zeros({0, 3}).numel() == 0);
  CHECK(scalar_tensor(3).item<float>() == 3.0f);
  CHECK_THROWS_AS(from_vector(std::vector<float>{1, 2, 3}, {2, 2}), Error);
  CHECK_THROWS_AS(a.item<float>(), Error);
  CHECK_THROWS_AS(a.data<double>(), Error);
  CHECK_THROWS_AS(Tensor().shape(), Error);
  CHECK_THROWS_AS(empty({2, -1}), Error);
}

TEST_CASE("views share storage and follow torch's rules", "[tensor]") {
  Tensor a = arange(24, DType::F32).reshape({2, 3, 4});
  Tensor p = a.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(!p.is_contiguous());
  CHECK(p.storage() == a.storage());
  Tensor n = a.narrow(2, 1, 2);
  CHECK(n.shape() == Shape{2, 3, 2});
  CHECK(n.offset() == 1);
  CHECK(n.to_vector<float>() == std::vector<float>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22});
  CHECK(a.select(1, -1).to_vector<float>() == std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23});
  CHECK(a.transpose(0, 2).contiguous().to_vector<float>()[1] == 12.0f);
  // view of a non-contiguous tensor where the strides allow it, and the refusal where they do not
  Tensor t = a.transpose(1, 2);  // [2, 4, 3]
  CHECK(a.transpose(0, 1).view({3, 2, 2, 2}).strides() == Shape{4, 12, 2, 1});  // split a dim of a transposed tensor
  CHECK_THROWS_AS(t.view({2, 12}), Error);                                       // merge non-adjacent strides
  CHECK_THROWS_AS(t.view({8, 3}), Error);
  CHECK(t.reshape({8, 3}).to_vector<float>() == t.contiguous().to_vector<float>());
  CHECK(a.reshape({-1, 4}).shape() == Shape{6, 4});
  CHECK_THROWS_AS(a.reshape({5, -1}), Error);
  CHECK_THROWS_AS(a.reshape({-1, -1}), Error);
  CHECK(a.unsqueeze(0).shape() == Shape{1, 2, 3, 4});
  CHECK(a.unsqueeze(-1).shape() == Shape{2, 3, 4, 1});
  CHECK(a.unsqueeze(0).squeeze().shape() == a.shape());
  CHECK(a.flatten(1).shape() == Shape{2, 12});
  CHECK_THROWS_AS(a.permute({0, 0, 1}), Error);
  CHECK_THROWS_AS(a.narrow(1, 2, 2), Error);
  CHECK_THROWS_AS(a.transpose(0, 3), Error);
}

TEST_CASE("expand and broadcasting", "[tensor]") {
  Tensor r = arange(3, DType::F32);
  Tensor e = r.expand({2, 3});
  CHECK(e.strides() == Shape{0, 1});
  CHECK(e.to_vector<float>() == std::vector<float>{0, 1, 2, 0, 1, 2});
  CHECK(broadcast_shapes({8, 1, 6, 1}, {7, 1, 5}, "t") == Shape{8, 7, 6, 5});
  CHECK_THROWS_AS(broadcast_shapes({2, 3}, {3, 2}, "t"), Error);
  Tensor c = arange(2, DType::F32).reshape({2, 1});
  CHECK((c + r).to_vector<float>() == std::vector<float>{0, 1, 2, 1, 2, 3});
  CHECK_THROWS_AS(r.expand({2, 4}), Error);
}

TEST_CASE("casts and type promotion", "[tensor]") {
  Tensor f = tensor({-1.7f, 0.0f, 2.5f});
  CHECK(f.to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{-1, 0, 2});  // truncation like torch
  CHECK(f.to(DType::Bool).to_vector<bool>() == std::vector<bool>{true, false, true});
  CHECK(f.to(DType::BF16).to(DType::F32).to_vector<float>() == std::vector<float>{-1.703125f, 0.0f, 2.5f});
  Tensor i = arange(3);
  CHECK((i + f).dtype() == DType::F32);
  CHECK((i * 2.0).dtype() == DType::I64);
  CHECK((i * 0.5).dtype() == DType::F32);
  CHECK((f.to(DType::BF16) + f.to(DType::F16)).dtype() == DType::F32);
  CHECK((f.to(DType::F64) + f).dtype() == DType::F64);
  CHECK((i > 0.5).dtype() == DType::Bool);
}

TEST_CASE("Philox matches the Random123 known-answer vectors", "[tensor]") {
  uint32_t w[4];
  philox4x32(0, 0, 0, w);
  CHECK(w[0] == 0x6627e8d5u);
  CHECK(w[1] == 0xe169c58du);
  CHECK(w[2] == 0xbc57ac4cu);
  CHECK(w[3] == 0x9b00dbd8u);
  philox4x32(~0ull, ~0ull, ~0ull, w);
  CHECK(w[0] == 0x408f276du);
  CHECK(w[3] == 0x6d5451fdu);
  philox4x32((uint64_t(0x299f31d0) << 32) | 0xa4093822u, (uint64_t(0x85a308d3) << 32) | 0x243f6a88u,
             (uint64_t(0x03707344) << 32) | 0x13198a2eu, w);
  CHECK(w[0] == 0xd16cfe09u);
  CHECK(w[1] == 0x94fdccebu);
  CHECK(w[2] == 0x5001e420u);
  CHECK(w[3] == 0x24126ea1u);
}

TEST_CASE("random draws are deterministic and well distributed", "[tensor]") {
  Generator g1(42), g2(42);
  Tensor a = rand({1000}, &g1), b = rand({1000}, &g2);
  CHECK(a.to_vector<float>() == b.to_vector<float>());
  Tensor c = rand({1000}, &g1);  // the next draw differs
  CHECK(a.to_vector<float>() != c.to_vector<float>());
  Generator g3(7);
  Tensor n = randn({20000}, &g3);
  CHECK(mean(n).item<float>() == Approx(0).margin(0.03));
  CHECK(stddev(n).item<float>() == Approx(1).margin(0.03));
  Tensor u = rand({20000}, &g3);
  CHECK(amin(u).item<float>() >= 0.0f);
  CHECK(amax(u).item<float>() < 1.0f);
  CHECK(mean(u).item<float>() == Approx(0.5).margin(0.01));
  // a non-contiguous destination receives the same numbers in logical order
  Generator g4(5), g5(5);
  Tensor t = empty({4, 3}).t();
  uniform_(t, 0, 1, &g4);
  CHECK(t.contiguous().to_vector<float>() == rand({3, 4}, &g5).to_vector<float>());
}

TEST_CASE("printing small tensors", "[tensor]") {
  std::ostringstream o;
  o << arange(4, DType::F32).reshape({2, 2});
  CHECK(o.str() == "tensor([[0.0000, 1.0000],\n        [2.0000, 3.0000]], shape=[2, 2], dtype=f32)");
  std::ostringstream o2;
  o2 << arange(20);
  CHECK(o2.str() == "tensor([0, 1, 2, ..., 17, 18, 19], shape=[20], dtype=i64)");
}

TEST_CASE("the CPU allocator tracks bytes and caches large blocks", "[tensor]") {
  Allocator& a = allocator(DeviceType::CPU);
  const int64_t before = a.stats().current_bytes;
  {
    Tensor t = empty({1024});
    CHECK(a.stats().current_bytes == before + 4096);
    CHECK(a.stats().peak_bytes >= before + 4096);
  }
  CHECK(a.stats().current_bytes == before);
  // Large blocks are cached on release and handed out again.
  void* first;
  {
    Tensor t = empty({1 << 18});
    first = t.raw_data();
  }
  const int64_t cached = a.stats().cached_bytes;
  CHECK(cached >= (int64_t(1) << 20));
  {
    Tensor t = empty({1 << 18});
    CHECK(t.raw_data() == first);
    CHECK(a.stats().cached_bytes == cached - (int64_t(1) << 20));
  }
  a.empty_cache();
  CHECK(a.stats().cached_bytes == 0);
}

TEST_CASE("thread pool runs every chunk and propagates errors", "[tensor]") {
  std::vector<int> hits(1000, 0);
  parallel_for(1000, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ++hits[size_t(i)];
  });
  CHECK(std::count(hits.begin(), hits.end(), 1) == 1000);
  CHECK_THROWS_AS(parallel_for(1000, 1, [&](int64_t b, int64_t) { MC_CHECK(b != 0, "chunk failed"); }), Error);
  // the pool still works afterwards
  std::atomic<int64_t> total{0};
  parallel_for(100, 1, [&](int64_t b, int64_t e) { total += e - b; });
  CHECK(total == 100);
}
