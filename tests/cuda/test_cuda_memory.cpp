// CUDA memory primitives against the CPU: host <-> device transfers, copies between every pair of dtypes,
// strided copies (transposed, narrowed, expanded, permuted sources and destinations), fill, empty tensors,
// cross-device copy_ with conversion, pinned host memory, the allocator's statistics, and tensors with more
// than 2^31 elements (64-bit indexing).
#include "cuda_test.hpp"

using namespace mct;

namespace {

const DType kAll[] = {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8, DType::Bool};

// Values every conversion src -> dst handles without undefined behaviour: non-negative (float -> u8 of a
// negative value is undefined in C++) unless dst is signed or floating; a few exact zeros (bool).
Tensor conversion_source(DType src, DType dst, const Shape& shape) {
  const bool nonneg = dst == DType::U8 || src == DType::U8;
  Tensor v = rand_h(shape, DType::F32, nonneg ? 0.0 : -120.0, 120.0);
  Tensor zero_mask = bools_h(shape, 0.1);
  v = where(zero_mask, zeros({}), v);
  if (src == DType::Bool) return detail::cast(v, DType::Bool);
  if (!is_floating(src)) return detail::cast(floor(v), src);
  return detail::cast(v, src);
}

}  // namespace

TEST_CASE("host <-> device round trips keep every byte", "[memory]") {
  for (DType dt : kAll) {
    for (const Shape& s : {Shape{}, Shape{1}, Shape{7}, Shape{129, 3}, Shape{1000, 1001}, Shape{3, 0, 5}}) {
      Tensor h = conversion_source(dt, dt, s);
      Tensor d = h.to(gpu());
      CHECK(d.device() == gpu());
      CHECK(d.is_contiguous());
      compare(label("round trip", s, dt), h, d.to(host()), 0);
    }
  }
}

TEST_CASE("dtype conversions on the device equal the CPU's", "[memory]") {
  const Shape s{257, 129};
  for (DType src : kAll)
    for (DType dst : kAll) {
      Tensor h = conversion_source(src, dst, s);
      Tensor ref = detail::cast(h, dst);
      Tensor got = h.to(gpu()).to(dst);
      compare(std::string("convert ") + dtype_name(src) + " -> " + dtype_name(dst), ref, got, 0);
    }
}

TEST_CASE("float conversions round like the CPU, special values included", "[memory]") {
  // Ties for bf16 (1 + 2^-8 rounds to even 1.0, 1 + 3*2^-8 up), f16 ties, subnormals, +-0, +-inf, NaN, overflow.
  std::vector<float> v{1.00390625f, 1.01171875f, -1.00390625f, 1.00048828125f, 1.00146484375f, 0.0f, -0.0f,
                       1e-40f, -1e-40f, 1e-30f, 6e-8f, 3e-8f, 65504.0f, 65520.0f, 70000.0f, -70000.0f, 3.0e38f,
                       INFINITY, -INFINITY, NAN, -NAN, 0.1f, 1.0f / 3.0f, 123456.789f, -2.5f, 2.5f};
  Tensor h = from_vector(v, {int64_t(v.size())});
  for (DType dst : {DType::BF16, DType::F16, DType::F64, DType::Bool}) {
    compare(std::string("special f32 -> ") + dtype_name(dst), detail::cast(h, dst), h.to(gpu()).to(dst), 0);
    if (dst != DType::Bool) {
      Tensor back = detail::cast(detail::cast(h, dst), DType::F32);
      compare(std::string("special ") + dtype_name(dst) + " -> f32", back,
              detail::cast(h, dst).to(gpu()).to(DType::F32), 0);
    }
  }
  // bf16 <-> f16 goes through f32 on both devices.
  Tensor b = detail::cast(rand_h({1000}, DType::F32, -300, 300), DType::BF16);
  compare("bf16 -> f16", detail::cast(b, DType::F16), b.to(gpu()).to(DType::F16), 0);
  compare("f16 -> bf16", detail::cast(detail::cast(b, DType::F16), DType::BF16),
          detail::cast(b, DType::F16).to(gpu()).to(DType::BF16), 0);
}

TEST_CASE("strided copies on the device", "[memory]") {
  for (DType dt : {DType::F32, DType::BF16, DType::I64, DType::Bool, DType::F64}) {
    Tensor base = conversion_source(dt, dt, {6, 129, 35});
    auto views = std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>>{
        {"transpose(0,2)", [](const Tensor& t) { return t.transpose(0, 2); }},
        {"permute(1,2,0)", [](const Tensor& t) { return t.permute({1, 2, 0}); }},
        {"narrow(1,5,100)", [](const Tensor& t) { return t.narrow(1, 5, 100); }},
        {"narrow(2,1,33).transpose(1,2)", [](const Tensor& t) { return t.narrow(2, 1, 33).transpose(1, 2); }},
        {"select(1,7)", [](const Tensor& t) { return t.select(1, 7); }},
        {"expand", [](const Tensor& t) { return t.narrow(0, 0, 1).expand({4, 129, 35}); }},
        {"expand inner", [](const Tensor& t) { return t.narrow(2, 3, 1).expand({6, 129, 9}); }},
        {"every other row", [](const Tensor& t) { return t.reshape({6 * 129, 35}).narrow(0, 0, 6 * 128).reshape({6 * 64, 2, 35}).select(1, 1); }},
    };
    for (auto& [name, view] : views) {
      check_same(std::string("contiguous() of ") + name + " " + dtype_name(dt), {base},
                 one([&](const std::vector<Tensor>& in) { return view(in[0]).contiguous(); }), exact());
      // Strided view -> host directly (to() copies on the device first).
      Tensor d = base.to(gpu());
      compare(std::string("to(cpu) of ") + name + " " + dtype_name(dt), view(base).contiguous(), view(d).to(host()), 0);
    }
  }
}

TEST_CASE("copies into strided destinations, with conversion", "[memory]") {
  for (DType src : {DType::F32, DType::BF16, DType::I32}) {
    for (DType dst : {DType::F32, DType::F16, DType::I64}) {
      Tensor s = conversion_source(src, dst, {35, 64});
      check_same(std::string("copy_ into transposed view ") + dtype_name(src) + " -> " + dtype_name(dst), {s},
                 one([dst](const std::vector<Tensor>& in) {
                   Tensor out = zeros({64, 35}, dst, in[0].device());
                   Tensor v = out.t();
                   NoGradGuard ng;
                   copy_(v, in[0]);
                   return out;
                 }),
                 exact());
      check_same(std::string("copy_ into narrowed rows, broadcast source ") + dtype_name(src) + " -> " + dtype_name(dst),
                 {s.narrow(0, 0, 1).contiguous()}, one([dst](const std::vector<Tensor>& in) {
                   Tensor out = full({40, 70}, 3, dst, in[0].device());
                   Tensor v = out.narrow(0, 2, 35).narrow(1, 3, 64);
                   NoGradGuard ng;
                   copy_(v, in[0]);  // [1, 64] broadcast over 35 rows
                   return out;
                 }),
                 exact());
    }
  }
}

TEST_CASE("copy_ across devices, strided and converting, both directions", "[memory]") {
  Tensor src_h = rand_h({33, 65}, DType::F32, -5, 5);
  // host -> device, strided device destination, f32 -> bf16
  {
    Tensor dst = zeros({65, 33}, DType::BF16, gpu());
    Tensor v = dst.t();
    NoGradGuard ng;
    copy_(v, src_h);
    compare("copy_ host f32 -> device bf16 transposed view", detail::cast(src_h, DType::BF16), v.to(host()), 0);
    compare("copy_ host -> device: untouched layout", detail::cast(src_h, DType::BF16).t().contiguous(), dst, 0);
  }
  // device -> host, strided host destination, f32 -> f64
  {
    Tensor d = src_h.to(gpu());
    Tensor dst = zeros({65, 33}, DType::F64);
    Tensor v = dst.t();
    NoGradGuard ng;
    copy_(v, d);
    compare("copy_ device f32 -> host f64 transposed view", detail::cast(src_h, DType::F64), v, 0);
  }
  // device -> host from a strided device source
  {
    Tensor d = src_h.to(gpu());
    Tensor dst = zeros({65, 33});
    NoGradGuard ng;
    copy_(dst, d.t());
    compare("copy_ device transposed view -> host", src_h.t().contiguous(), dst, 0);
  }
}

TEST_CASE("fill on the device", "[memory]") {
  for (DType dt : kAll) {
    for (double v : {0.0, 1.0, -2.5, 7.0, 1e30, double(NAN)}) {
      if (!is_floating(dt) && (v != std::floor(v) || std::fabs(v) > 100 || std::isnan(v))) continue;
      if (dt == DType::U8 && v < 0) continue;
      poison({7000 * int64_t(dtype_size(dt))});
      Tensor h = full({1000, 7}, v, dt);
      Tensor d = full({1000, 7}, v, dt, gpu());
      compare(label("fill", {1000, 7}, dt, std::to_string(v)), h, d, 0);
    }
    // strided fill
    Tensor h = zeros({64, 65}, dt), d = zeros({64, 65}, dt, gpu());
    Tensor hv = h.t().narrow(0, 3, 50), dv = d.t().narrow(0, 3, 50);
    fill_(hv, 1);
    fill_(dv, 1);
    compare(label("strided fill", {64, 65}, dt), h, d, 0);
  }
}

TEST_CASE("empty and zero-size tensors on the device", "[memory]") {
  Tensor e = Tensor::empty({0}, DType::F32, gpu());
  CHECK(e.numel() == 0);
  CHECK(e.to(host()).numel() == 0);
  Tensor z = zeros({3, 0, 4}, DType::F32, gpu());
  CHECK(z.to(host()).shape() == Shape{3, 0, 4});
  check_same("ops on zero-size tensors", {randn_h({3, 0, 4}), randn_h({3, 0, 4})}, [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{add(in[0], in[1]), exp(in[0]), sum(in[0], {1}), sum(in[0], {1}, true),
                               in[0].transpose(0, 2).contiguous()};
  });
}

TEST_CASE("device tensors: device(), dtype, allocator statistics", "[memory]") {
  cuda::synchronize();
  const AllocatorStats before = cuda::memory_stats();
  {
    Tensor t = Tensor::empty({1 << 20}, DType::F32, gpu());
    const AllocatorStats during = cuda::memory_stats();
    CHECK(during.current_bytes >= before.current_bytes + (4 << 20));
    CHECK(during.peak_bytes >= during.current_bytes);
    CHECK(during.allocations > before.allocations);
  }
  cuda::synchronize();
  CHECK(cuda::memory_stats().current_bytes == before.current_bytes);
  cuda::reset_peak_memory();
  CHECK(cuda::memory_stats().peak_bytes == cuda::memory_stats().current_bytes);
  cuda::empty_cache();
  CHECK(cuda::memory_stats().cached_bytes == 0);
  CHECK(cuda::device_count() >= 1);
}

TEST_CASE("pinned host tensors", "[memory]") {
  Tensor p = cuda::pinned_empty({1000, 33}, DType::F32);
  CHECK(p.device() == host());
  Tensor src = randn_h({1000, 33});
  {
    NoGradGuard ng;
    copy_(p, src);
  }
  Tensor d = p.to(gpu());
  compare("pinned -> device", src, d, 0);
  Tensor back = cuda::pinned_empty({1000, 33}, DType::F32);
  {
    NoGradGuard ng;
    copy_(back, exp(d));
  }
  compare("device -> pinned", exp(src), back);
  // Uploads from pinned memory are asynchronous: after synchronize() the buffer may be refilled.
  Tensor first = p.to(gpu());
  cuda::synchronize();
  {
    NoGradGuard ng;
    fill_(p, 5);
  }
  compare("pinned buffer refilled after upload + synchronize", src, first, 0);
  compare("pinned buffer refilled: second upload", full({1000, 33}, 5), p.to(gpu()), 0);
}

TEST_CASE("poisoned memory: outputs are fully written", "[memory]") {
  // The harness poisons before every CUDA run; here the check is explicit for the simplest ops.
  for (int64_t n : {1, 7, 129, 4097, 1000003}) {
    Tensor h = randn_h({n});
    poison({n * 4, n * 2, n});
    Tensor d = h.to(gpu());
    compare("upload into poisoned memory n=" + std::to_string(n), h, d, 0);
    poison({n * 4, n * 2, n});
    compare("exp into poisoned memory n=" + std::to_string(n), exp(h), exp(d));
    poison({n * 4, n * 2, n});
    compare("cast into poisoned memory n=" + std::to_string(n), detail::cast(h, DType::BF16), d.to(DType::BF16), 0);
  }
}

TEST_CASE("more than 2^31 elements: 64-bit indexing", "[memory][large]") {
  const int64_t n = (int64_t(1) << 31) + 4133;  // 2 GiB of u8 + a tail
  Tensor d = Tensor::empty({n}, DType::U8, gpu());
  fill_(d, 7);
  Tensor tail = d.narrow(0, n - 4133, 4133).to(host());
  compare("fill beyond 2^31: tail", full({4133}, 7, DType::U8), tail, 0);
  {
    NoGradGuard ng;
    Tensor part = d.narrow(0, n - 100, 100);
    copy_(part, full({100}, 9, DType::U8));
  }
  Tensor c = detail::contiguous_copy(d);
  compare("copy beyond 2^31: tail", cat({full({33}, 7, DType::U8), full({100}, 9, DType::U8)}),
          c.narrow(0, n - 133, 133), 0);
  d = Tensor();
  c = Tensor();
  // bf16 add over 2^31 + tail elements (4 GiB per tensor).
  Tensor a = full({n}, 1.5, DType::BF16, gpu());
  Tensor s = add(a, a);
  compare("add beyond 2^31: tail", full({64}, 3.0, DType::BF16), s.narrow(0, n - 64, 64), 0);
  Tensor r = sum(s.narrow(0, n - 1000, 1000).to(DType::F32));
  compare("add beyond 2^31: sum of tail", full({}, 3000.0), r);
  cuda::empty_cache();
}
