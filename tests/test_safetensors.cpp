// safetensors reading and writing: round trips of every dtype, files written by the Python `safetensors`
// package (tests/fixtures/safetensors/, from tools/gen_safetensors_fixtures.py), rejection of malformed
// files with an mc::Error that names the file, and a small fuzz loop (truncations and byte flips).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/cpu/backend.hpp"  // the CPU backend (referenced by core/backend.hpp, which safetensors.hpp includes)
#include "mc/io/file.hpp"
#include "mc/io/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using mc::DType;
using mc::Shape;
using mc::Tensor;
using mc::io::SafetensorsFile;
using Catch::Matchers::Contains;

const std::string kFixtures = std::string(MC_SOURCE_DIR) + "/tests/fixtures/safetensors/";

// A fresh directory under the system temp dir, removed with its contents at the end of the scope.
struct TempDir {
  fs::path dir;
  TempDir() {
    static int counter = 0;
    dir = fs::temp_directory_path() /
          ("mc-test-" + std::to_string(::getpid()) + "-safetensors-" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream o(path, std::ios::binary | std::ios::trunc);
  o.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(o.good());
}

// Rewrites `path` in place, then sets its size: much faster than truncate-and-write on some file
// systems, for the loops below. No mapping of `path` may be alive.
void rewrite_raw(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  if (!f) f = std::fopen(path.c_str(), "wb");
  REQUIRE(f);
  bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = std::fclose(f) == 0 && ok;
  REQUIRE(ok);
  fs::resize_file(path, bytes.size());
}

std::string read_raw(const std::string& path) {
  std::vector<uint8_t> v = mc::io::read_file(path);
  return std::string(v.begin(), v.end());
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  return s;
}

// A file with the given header text (padded with spaces to 8 bytes unless pad = false) and data bytes.
std::string st_file(std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return le64(header.size()) + header + data;
}

// Tensor of `dtype` and `shape` holding the given raw bytes.
Tensor from_bytes(DType dtype, const Shape& shape, const void* bytes) {
  Tensor t = Tensor::empty(shape, dtype);
  size_t n = size_t(t.numel()) * t.element_size();
  if (n) std::memcpy(t.raw_data(), bytes, n);
  return t;
}

template <class T>
Tensor from_vec(const std::vector<T>& v, const Shape& shape) {
  REQUIRE(size_t(mc::numel(shape)) == v.size());
  return from_bytes(mc::dtype_of<T>::value, shape, v.data());
}

// Row-major bytes of a host tensor of any strides.
std::string bytes_of(const Tensor& t) {
  REQUIRE(t.device().is_cpu());
  const size_t es = t.element_size();
  std::string out;
  const int64_t n = t.numel();
  std::vector<int64_t> idx(size_t(t.dim()), 0);
  for (int64_t k = 0; k < n; ++k) {
    int64_t off = 0;
    for (int d = 0; d < t.dim(); ++d) off += idx[size_t(d)] * t.strides()[size_t(d)];
    out.append(static_cast<const char*>(t.raw_data()) + off * int64_t(es), es);
    for (int d = t.dim() - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < t.shape()[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
  return out;
}

template <class T>
std::vector<T> values_of(const Tensor& t) {
  REQUIRE(t.dtype() == mc::dtype_of<T>::value);
  std::string b = bytes_of(t);
  std::vector<T> v(b.size() / sizeof(T));
  if (!b.empty()) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// Expects `f` to throw mc::Error with a message naming `path` and containing every `needles` string.
template <class F>
void expect_error(F&& f, const std::string& path, std::vector<std::string> needles = {}) {
  REQUIRE_THROWS_AS(f(), mc::Error);
  try {
    f();
  } catch (const mc::Error& e) {
    INFO("message: " << e.what());
    CHECK_THAT(e.what(), Contains(path));
    for (const std::string& s : needles) CHECK_THAT(e.what(), Contains(s));
  }
}

// Opens `bytes` written to `path`; expects an mc::Error naming the file and containing `needles`.
void expect_bad_file(const std::string& path, const std::string& bytes, std::vector<std::string> needles = {}) {
  rewrite_raw(path, bytes);
  expect_error([&] { SafetensorsFile::open(path); }, path, std::move(needles));
}

// Opens a file and reads every tensor; any failure must be an mc::Error. Returns whether it opened.
bool open_and_read_all(const std::string& path) {
  try {
    SafetensorsFile f = SafetensorsFile::open(path);
    for (const std::string& n : f.names()) {
      const mc::io::SafetensorsInfo& e = f.info(n);
      try {
        Tensor t = f.get(n);
        if (t.numel() > 0) {  // touch every byte
          std::string b = bytes_of(t);
          REQUIRE(b.size() == e.nbytes());
        }
      } catch (const mc::Error&) {
        REQUIRE_FALSE(e.supported);
      }
    }
    return true;
  } catch (const mc::Error&) {
    return false;
  }
}

std::vector<uint16_t> all_u16() {
  std::vector<uint16_t> v(65536);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint16_t(i);
  return v;
}

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, bit-exact", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("all.safetensors");

  std::vector<uint32_t> f32_bits = {0x00000000, 0x80000000, 0x3F800000, 0x7F800000, 0xFF800000, 0x7FC00000,
                                    0x7FA00001, 0xFFFFFFFF, 0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0x3EAAAAAB};
  std::vector<uint64_t> f64_bits = {0, 0x8000000000000000ull, 0x3FF0000000000000ull, 0x7FF0000000000000ull,
                                    0x7FF8000000000001ull, 0x0000000000000001ull};
  std::vector<uint16_t> u16 = all_u16();  // every bf16 and every f16 bit pattern, NaN payloads included
  std::vector<int32_t> i32 = {INT32_MIN, -1, 0, 1, INT32_MAX, 123456};
  std::vector<int64_t> i64 = {INT64_MIN, -1, 0, 1, INT64_MAX, 1234567890123456789};
  std::vector<uint8_t> u8(256);
  for (int i = 0; i < 256; ++i) u8[size_t(i)] = uint8_t(i);
  std::vector<uint8_t> bools = {1, 0, 0, 1, 1, 1, 0};

  std::vector<std::pair<std::string, Tensor>> ts = {
      {"f32", from_bytes(DType::F32, {3, 4}, f32_bits.data())},
      {"f64", from_bytes(DType::F64, {2, 1, 3}, f64_bits.data())},
      {"bf16", from_bytes(DType::BF16, {256, 256}, u16.data())},
      {"f16", from_bytes(DType::F16, {65536}, u16.data())},
      {"i32", from_vec(i32, {2, 3})},
      {"i64", from_vec(i64, {6})},
      {"u8", from_vec(u8, {16, 16})},
      {"bool", from_bytes(DType::Bool, {7}, bools.data())},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"unicode", "h\xC3\xA9llo \xE2\x9C\x93"},
                                                   {"empty", ""}};
  mc::io::save_safetensors(path, ts, meta);

  // The layout: header length a multiple of 8, header padded with spaces, offsets contiguous in order.
  std::string raw = read_raw(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(raw[8] == '{');
  CHECK(raw.find('}', 8) < 8 + n);
  for (size_t i = raw.rfind('}', 8 + n - 1) + 1; i < 8 + n; ++i) CHECK(raw[i] == ' ');

  SafetensorsFile f = SafetensorsFile::open(path);
  REQUIRE(f.names() == std::vector<std::string>{"f32", "f64", "bf16", "f16", "i32", "i64", "u8", "bool"});
  CHECK(f.metadata() == meta);
  CHECK(f.data_start() == 8 + n);
  uint64_t pos = 0;
  for (const auto& [name, t] : ts) {
    INFO(name);
    REQUIRE(f.has(name));
    const auto& e = f.info(name);
    CHECK(e.supported);
    CHECK(e.dtype == t.dtype());
    CHECK(e.shape == t.shape());
    CHECK(e.begin == pos);
    CHECK(e.nbytes() == uint64_t(t.numel()) * t.element_size());
    pos = e.end;
    Tensor g = f.get(name);
    CHECK(g.dtype() == t.dtype());
    CHECK(g.shape() == t.shape());
    CHECK(g.is_contiguous());
    CHECK(g.device().is_cpu());
    CHECK(bytes_of(g) == bytes_of(t));
    Tensor c = f.get(name, /*copy=*/true);
    CHECK(bytes_of(c) == bytes_of(t));
  }
  CHECK(pos + f.data_start() == raw.size());
  CHECK_FALSE(f.has("nope"));
  expect_error([&] { f.get("nope"); }, path, {"nope"});
  expect_error([&] { f.info("nope"); }, path, {"nope"});

  // The whole-file loader, views and copies, in order.
  for (bool copy : {false, true}) {
    auto all = mc::io::load_safetensors(path, copy);
    REQUIRE(all.size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      CHECK(all[i].first == ts[i].first);
      CHECK(bytes_of(all[i].second) == bytes_of(ts[i].second));
    }
  }
}

TEST_CASE("safetensors: 0-d, empty and non-contiguous tensors", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("shapes.safetensors");

  float scalar = -2.5f;
  std::vector<float> m(12);
  for (int i = 0; i < 12; ++i) m[size_t(i)] = float(i) * 0.5f - 1.0f;
  Tensor mat = from_vec(m, {3, 4});
  // Views built by hand (no ops needed): the transpose, a strided column, a stride-0 broadcast, an offset.
  Tensor tr = Tensor::view_of(mat.storage(), DType::F32, {4, 3}, {1, 4}, 0);
  Tensor col = Tensor::view_of(mat.storage(), DType::F32, {3}, {4}, 2);
  Tensor bc = Tensor::view_of(mat.storage(), DType::F32, {2, 3, 4}, {0, 4, 1}, 0);
  Tensor inner = Tensor::view_of(mat.storage(), DType::F32, {2, 2}, {4, 1}, 5);
  std::vector<int64_t> lv = {1, 2, 3, 4, 5, 6};
  Tensor lt = Tensor::view_of(from_vec(lv, {2, 3}).storage(), DType::I64, {3, 2}, {1, 3}, 0);
  uint16_t hb[6] = {0x3F80, 0x4000, 0x4040, 0x4080, 0x40A0, 0x40C0};
  Tensor halfv = Tensor::view_of(from_bytes(DType::BF16, {6}, hb).storage(), DType::BF16, {3}, {2}, 1);

  std::vector<std::pair<std::string, Tensor>> ts = {
      {"scalar", from_bytes(DType::F32, {}, &scalar)},
      {"empty", Tensor::empty({0}, DType::F32)},
      {"empty_3d", Tensor::empty({3, 0, 2}, DType::I64)},
      {"empty_bool", Tensor::empty({0, 5}, DType::Bool)},
      {"transposed", tr},
      {"column", col},
      {"broadcast", bc},
      {"inner", inner},
      {"i64_t", lt},
      {"bf16_strided", halfv},
      {"ones_dims", from_bytes(DType::F32, {1, 1, 1}, &scalar)},
  };
  mc::io::save_safetensors(path, ts);

  SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.metadata().empty());
  REQUIRE(f.size() == ts.size());
  for (const auto& [name, t] : ts) {
    INFO(name);
    Tensor g = f.get(name);
    CHECK(g.shape() == t.shape());
    CHECK(g.dtype() == t.dtype());
    CHECK(g.numel() == t.numel());
    CHECK(bytes_of(g) == bytes_of(t));
  }
  CHECK(f.get("scalar").dim() == 0);
  CHECK(values_of<float>(f.get("scalar")) == std::vector<float>{-2.5f});
  CHECK(values_of<float>(f.get("transposed")) ==
        std::vector<float>{-1, 1, 3, -0.5f, 1.5f, 3.5f, 0, 2, 4, 0.5f, 2.5f, 4.5f});
  CHECK(values_of<float>(f.get("column")) == std::vector<float>{0, 2, 4});
  CHECK(values_of<float>(f.get("inner")) == std::vector<float>{1.5f, 2, 3.5f, 4});
  CHECK(values_of<int64_t>(f.get("i64_t")) == std::vector<int64_t>{1, 4, 2, 5, 3, 6});
  CHECK(values_of<mc::bf16>(f.get("bf16_strided"))[2].bits == 0x40C0);
  CHECK(f.info("empty").nbytes() == 0);
  CHECK(f.info("empty_3d").shape == Shape{3, 0, 2});

  // Only empty tensors, and no tensors at all.
  mc::io::save_safetensors(path, {{"e", Tensor::empty({0}, DType::U8)}});
  CHECK(SafetensorsFile::open(path).get("e").numel() == 0);
  mc::io::save_safetensors(path, {}, {{"k", "v"}});
  SafetensorsFile none = SafetensorsFile::open(path);
  CHECK(none.names().empty());
  CHECK(none.metadata() == std::map<std::string, std::string>{{"k", "v"}});
  mc::io::save_safetensors(path, {});
  CHECK(SafetensorsFile::open(path).size() == 0);
}

TEST_CASE("safetensors: views alias the mapping and outlive the file object", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("views.safetensors");
  std::vector<float> v = {1, 2, 3, 4};
  mc::io::save_safetensors(path, {{"a", from_vec(v, {4})}, {"b", from_vec(v, {2, 2})}});

  Tensor view, copy;
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    view = f.get("a");
    copy = f.get("a", /*copy=*/true);
    Tensor again = f.get("a");
    CHECK(view.raw_data() == again.raw_data());  // zero-copy: both alias the same mapped bytes
    CHECK(copy.raw_data() != view.raw_data());
  }
  // The file object is gone and the path removed; the mapping lives on through the storage.
  fs::remove(path);
  CHECK(values_of<float>(view) == v);
  copy.data<float>()[0] = 42;  // a copy is writable
  CHECK(values_of<float>(copy) == std::vector<float>{42, 2, 3, 4});
  CHECK(values_of<float>(view) == v);
}

TEST_CASE("safetensors: writing into a view is private and leaves the file unchanged", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("cow.safetensors");
  std::vector<float> v = {1, 2, 3, 4};
  mc::io::save_safetensors(path, {{"a", from_vec(v, {4})}});
  Tensor view = SafetensorsFile::open(path).get("a");
  view.data<float>()[1] = -7;  // copy-on-write page
  CHECK(values_of<float>(view) == std::vector<float>{1, -7, 3, 4});
  CHECK(values_of<float>(SafetensorsFile::open(path).get("a")) == v);
}

TEST_CASE("safetensors: misaligned data and non-0/1 bool bytes are read through a copy", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("packed.safetensors");
  // A bf16 tensor of odd length before an f32 one leaves the f32 data 2 bytes off alignment.
  uint16_t h[3] = {0x3F80, 0x4000, 0x4040};
  std::vector<float> v = {1.5f, -2.25f};
  mc::io::save_safetensors(path, {{"h", from_bytes(DType::BF16, {3}, h)}, {"f", from_vec(v, {2})}});
  SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.info("f").begin == 6);
  Tensor g = f.get("f");
  CHECK(reinterpret_cast<uintptr_t>(g.raw_data()) % 4 == 0);
  CHECK(values_of<float>(g) == v);

  // BOOL bytes other than 0 and 1 are true (as torch reads them); mc's bools must be 0/1.
  const std::string bpath = tmp.file("bool.safetensors");
  write_raw(bpath, st_file(R"({"b":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}})",
                           std::string("\x00\x02\x01\xff", 4)));
  Tensor b = SafetensorsFile::open(bpath).get("b");
  CHECK(b.dtype() == DType::Bool);
  CHECK(bytes_of(b) == std::string("\x00\x01\x01\x01", 4));

  // An unpadded header (legal: padding is optional) makes the buffer start unaligned.
  const std::string upath = tmp.file("unpadded.safetensors");
  std::string hdr = R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})";
  double d = 3.0;
  std::string data(8, '\0');
  std::memcpy(data.data(), &d, 8);
  REQUIRE((8 + hdr.size()) % 8 != 0);
  write_raw(upath, st_file(hdr, data, /*pad=*/false));
  CHECK(values_of<double>(SafetensorsFile::open(upath).get("x")) == std::vector<double>{3.0});
}

TEST_CASE("safetensors: a file written by the Python safetensors package", "[safetensors]") {
  const std::string path = kFixtures + "torch_dtypes.safetensors";
  SafetensorsFile f = SafetensorsFile::open(path);
  // The reference writer orders tensors by alignment, then name; names() keeps the header's order.
  CHECK(f.names() == std::vector<std::string>{"empty_i64", "i64", "f64", "empty", "f32", "model.layers.0.weight",
                                              "scalar", "transposed", "i32", "bf16", "f16", "u8", "bool"});
  CHECK(f.metadata() == std::map<std::string, std::string>{
                            {"format", "pt"}, {"note", "h\xC3\xA9llo \xE2\x9C\x93"}, {"empty", ""}});

  Tensor f32 = f.get("f32");
  CHECK(f32.shape() == Shape{3, 4});
  std::vector<uint32_t> f32_bits = {0x00000000, 0x80000000, 0x3F800000, 0xC0490FDB, 0x7F800000, 0xFF800000,
                                    0x7FC00000, 0x00000001, 0x7F7FFFFF, 0x00800000, 0x3EAAAAAB, 0xFFC00001};
  std::string fb = bytes_of(f32);
  REQUIRE(fb.size() == 48);
  CHECK(std::memcmp(fb.data(), f32_bits.data(), 48) == 0);

  Tensor f64 = f.get("f64");
  CHECK(f64.shape() == Shape{2, 3});
  std::vector<uint64_t> f64_bits = {0, 0x8000000000000000ull, 0x3FF0000000000000ull, 0x400921FB54442D18ull,
                                    0x7FF0000000000000ull, 1};
  CHECK(bytes_of(f64) == std::string(reinterpret_cast<const char*>(f64_bits.data()), 48));

  std::vector<uint16_t> bf16_bits = {0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x4049};
  Tensor bf = f.get("bf16");
  CHECK(bf.dtype() == DType::BF16);
  CHECK(bf.shape() == Shape{9});
  CHECK(bytes_of(bf) == std::string(reinterpret_cast<const char*>(bf16_bits.data()), 18));
  CHECK(float(values_of<mc::bf16>(bf)[8]) == 3.140625f);

  std::vector<uint16_t> f16_bits = {0x0000, 0x8000, 0x3C00, 0xBC00, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x7BFF};
  Tensor hf = f.get("f16");
  CHECK(hf.dtype() == DType::F16);
  CHECK(hf.shape() == Shape{3, 3});
  CHECK(bytes_of(hf) == std::string(reinterpret_cast<const char*>(f16_bits.data()), 18));
  CHECK(float(values_of<mc::f16>(hf)[8]) == 65504.0f);

  CHECK(values_of<int32_t>(f.get("i32")) == std::vector<int32_t>{INT32_MIN, -1, 0, 1, INT32_MAX});
  Tensor i64 = f.get("i64");
  CHECK(i64.shape() == Shape{3, 2});
  CHECK(values_of<int64_t>(i64) == std::vector<int64_t>{INT64_MIN, -1, 0, 1, INT64_MAX, 1234567890123});
  Tensor u8 = f.get("u8");
  CHECK(u8.shape() == Shape{2, 2, 4});
  std::vector<uint8_t> u8v;
  for (int i = 0; i < 256; i += 17) u8v.push_back(uint8_t(i));
  CHECK(values_of<uint8_t>(u8) == u8v);
  Tensor b = f.get("bool");
  CHECK(b.dtype() == DType::Bool);
  CHECK(bytes_of(b) == std::string("\x01\x00\x01\x01\x00", 5));

  Tensor s = f.get("scalar");
  CHECK(s.dim() == 0);
  CHECK(values_of<float>(s) == std::vector<float>{3.5f});
  CHECK(f.get("empty").shape() == Shape{0, 4});
  CHECK(f.get("empty_i64").shape() == Shape{2, 0});
  CHECK(f.get("empty_i64").dtype() == DType::I64);
  CHECK(values_of<float>(f.get("transposed")) == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(values_of<float>(f.get("model.layers.0.weight")) == std::vector<float>{-1, -0.75f, -0.5f, -0.25f, 0, 0.25f});

  // Re-saved by us, the values survive unchanged.
  TempDir tmp;
  const std::string out = tmp.file("resaved.safetensors");
  auto all = mc::io::load_safetensors(path);
  mc::io::save_safetensors(out, all, f.metadata());
  SafetensorsFile g = SafetensorsFile::open(out);
  CHECK(g.names() == f.names());
  CHECK(g.metadata() == f.metadata());
  for (const auto& [name, t] : all) CHECK(bytes_of(g.get(name)) == bytes_of(t));
}

TEST_CASE("safetensors: dtypes mc does not have open, and fail only when requested", "[safetensors]") {
  const std::string path = kFixtures + "torch_unsupported.safetensors";
  SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.size() == 5);
  CHECK(values_of<float>(f.get("ok")) == std::vector<float>{1, 2});
  const std::map<std::string, std::string> expect = {{"i16", "I16"}, {"u32", "U32"}, {"f8", "F8_E4M3"}, {"c64", "C64"}};
  for (const auto& [name, dt] : expect) {
    INFO(name);
    REQUIRE(f.has(name));
    CHECK_FALSE(f.info(name).supported);
    CHECK(f.info(name).dtype_str == dt);
    expect_error([&] { f.get(name); }, path, {"'" + name + "'", dt});
  }
  CHECK(f.info("i16").shape == Shape{3});
  CHECK(f.info("i16").nbytes() == 6);
  expect_error([&] { mc::io::load_safetensors(path); }, path);

  // Sub-byte dtypes: the element bits must add up to whole bytes.
  TempDir tmp;
  const std::string p = tmp.file("f4.safetensors");
  write_raw(p, st_file(R"({"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", "ab"));
  CHECK(SafetensorsFile::open(p).info("q").nbytes() == 2);
  expect_bad_file(p, st_file(R"({"q":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", "ab"),
                  {"'q'", "whole number"});
}

TEST_CASE("safetensors: malformed files are rejected with an error naming the file", "[safetensors]") {
  TempDir tmp;
  const std::string p = tmp.file("bad.safetensors");
  const std::string f4 = std::string("\x00\x00\x80\x3f", 4);  // 1.0f
  auto one = [](const std::string& name, const std::string& dtype, const std::string& shape,
                const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
  };
  const std::string good = st_file("{" + one("a", "F32", "[1]", "[0,4]") + "}", f4);
  write_raw(p, good);
  REQUIRE(SafetensorsFile::open(p).size() == 1);

  SECTION("missing and empty files") {
    expect_error([&] { SafetensorsFile::open(tmp.file("missing.safetensors")); }, tmp.file("missing.safetensors"));
    expect_error([&] { mc::io::load_safetensors(tmp.file("missing.safetensors")); }, tmp.file("missing.safetensors"));
    expect_bad_file(p, "", {"too short"});
    expect_error([&] { SafetensorsFile::open(tmp.dir.string()); }, tmp.dir.string());  // a directory
  }
  SECTION("truncated files") {
    expect_bad_file(p, good.substr(0, 5), {"too short"});                 // in the length field
    expect_bad_file(p, good.substr(0, 8), {"past the end"});             // just the length
    expect_bad_file(p, good.substr(0, 8 + 20), {"past the end"});        // in the header
    expect_bad_file(p, good.substr(0, good.size() - 1), {"'a'", "outside"});  // in the data
    expect_bad_file(p, good + "xyz", {"trailing"});                         // extra bytes
  }
  SECTION("header length") {
    expect_bad_file(p, le64(1000) + good.substr(8), {"1000", "past the end"});
    expect_bad_file(p, le64(uint64_t(1) << 40) + good.substr(8), {"exceeds"});
    expect_bad_file(p, le64(~uint64_t(0)) + good.substr(8), {"exceeds"});
    expect_bad_file(p, le64(100'000'001) + good.substr(8), {"exceeds"});
    expect_bad_file(p, le64(0) + good.substr(8), {"too small"});
    expect_bad_file(p, le64(1) + "{", {"too small"});
  }
  SECTION("not JSON, or not an object") {
    expect_bad_file(p, st_file("{\"a\": ", ""), {"not valid JSON"});
    expect_bad_file(p, st_file("{\"a\":{\"dtype\":\"F32\",}}", ""), {"not valid JSON"});
    expect_bad_file(p, st_file("{} /* comment */", ""), {"not valid JSON"});
    expect_bad_file(p, le64(8) + "{}" + std::string(6, '\0'), {"not valid JSON", "NUL"});  // NUL padding
    expect_bad_file(p, st_file("{}" + std::string(1, '\0') + "garbage", ""), {"not valid JSON", "NUL"});
    expect_bad_file(p, st_file(std::string("{\"a\0\":1}", 8), ""), {"not valid JSON"});
    expect_bad_file(p, st_file("{\"\xff\":1}", ""), {"not valid JSON"});                    // not UTF-8
    expect_bad_file(p, st_file("[1, 2, 3]", ""), {"array", "expected an object"});
    expect_bad_file(p, st_file("\"text\"", ""), {"string", "expected an object"});
    expect_bad_file(p, st_file("123", ""), {"expected an object"});
    expect_bad_file(p, st_file("null", ""), {"expected an object"});
    expect_bad_file(p, st_file("{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", ""), {"nested"});
    expect_bad_file(p, st_file(std::string(5000, '['), ""));
  }
  SECTION("entries") {
    expect_bad_file(p, st_file("{\"a\":5}", f4), {"'a'", "expected an object"});
    expect_bad_file(p, st_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", f4), {"'a'", "dtype"});
    expect_bad_file(p, st_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", f4), {"'a'", "shape"});
    expect_bad_file(p, st_file(R"({"a":{"dtype":"F32","shape":[1]}})", f4), {"'a'", "data_offsets"});
    expect_bad_file(p, st_file(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", f4), {"'a'", "dtype"});
  }
  SECTION("dtypes") {
    expect_bad_file(p, st_file("{" + one("a", "F33", "[1]", "[0,4]") + "}", f4), {"'a'", "unknown dtype", "F33"});
    expect_bad_file(p, st_file("{" + one("a", "f32", "[1]", "[0,4]") + "}", f4), {"'a'", "unknown dtype"});
    expect_bad_file(p, st_file("{" + one("a", "", "[1]", "[0,4]") + "}", f4), {"'a'", "unknown dtype"});
  }
  SECTION("shapes") {
    expect_bad_file(p, st_file("{" + one("a", "F32", "[-1]", "[0,4]") + "}", f4), {"'a'", "non-negative"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1.0]", "[0,4]") + "}", f4), {"'a'", "non-negative"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1e0]", "[0,4]") + "}", f4), {"'a'", "non-negative"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[\"1\"]", "[0,4]") + "}", f4), {"'a'", "non-negative"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[[1]]", "[0,4]") + "}", f4), {"'a'"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "1", "[0,4]") + "}", f4), {"'a'", "shape"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "null", "[0,4]") + "}", f4), {"'a'", "shape"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[4294967296,4294967296]", "[0,4]") + "}", f4),
                    {"'a'", "overflows"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[18446744073709551615]", "[0,4]") + "}", f4), {"'a'"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[18446744073709551616]", "[0,4]") + "}", f4), {"'a'"});
    expect_bad_file(p, st_file("{" + one("a", "F64", "[2305843009213693952]", "[0,4]") + "}", f4),
                    {"'a'", "overflows"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[-0]", "[0,0]") + "}", ""), {"'a'", "non-negative"});
    // numel 0, but the other dims are beyond what mc's strides can hold
    expect_bad_file(p, st_file("{" + one("a", "F32", "[0,4611686018427387904,4]", "[0,0]") + "," +
                               one("b", "F32", "[1]", "[0,4]") + "}", f4), {"'a'", "too large"});
  }
  SECTION("offsets") {
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0,8]") + "}", f4), {"'a'", "outside"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[4,8]") + "}", f4), {"'a'", "outside"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[0]", "[4,0]") + "}", f4), {"'a'", "end before"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0]") + "}", f4), {"'a'", "data_offsets"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0,4,8]") + "}", f4), {"'a'", "data_offsets"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[-1,3]") + "}", f4), {"'a'", "data_offsets"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0.0,4]") + "}", f4), {"'a'", "data_offsets"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "{}") + "}", f4), {"'a'", "data_offsets"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0,18446744073709551615]") + "}", f4), {"'a'", "outside"});
  }
  SECTION("byte count") {
    expect_bad_file(p, st_file("{" + one("a", "F32", "[3]", "[0,4]") + "}", f4), {"'a'", "needs 12 bytes"});
    expect_bad_file(p, st_file("{" + one("a", "F64", "[1]", "[0,4]") + "}", f4), {"'a'", "needs 8 bytes"});
    expect_bad_file(p, st_file("{" + one("a", "F16", "[]", "[0,4]") + "}", f4), {"'a'", "needs 2 bytes"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[0]", "[0,4]") + "}", f4), {"'a'", "needs 0 bytes"});
  }
  SECTION("overlaps, holes and uncovered bytes") {
    const std::string d12(12, 'x');
    expect_bad_file(p, st_file("{" + one("a", "F32", "[2]", "[0,8]") + "," + one("b", "F32", "[2]", "[4,12]") + "}",
                               d12),
                    {"'a'", "'b'", "overlaps"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0,4]") + "," + one("b", "F32", "[1]", "[0,4]") + "}", f4),
                    {"overlaps"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0,4]") + "," + one("b", "F32", "[1]", "[8,12]") + "}",
                               d12),
                    {"'b'", "hole"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[4,8]") + "}", std::string(8, 'x')), {"'a'", "hole"});
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0,4]") + "}", std::string(8, 'x')), {"trailing"});
    expect_bad_file(p, st_file("{}", f4), {"trailing"});
    // Empty tensors sit anywhere inside the tiling; the same order written backwards is fine.
    write_raw(p, st_file("{" + one("b", "F32", "[1]", "[4,8]") + "," + one("e", "F32", "[0]", "[4,4]") + "," +
                         one("a", "F32", "[1]", "[0,4]") + "}", f4 + f4));
    SafetensorsFile f = SafetensorsFile::open(p);
    CHECK(f.names() == std::vector<std::string>{"b", "e", "a"});
  }
  SECTION("duplicate keys") {
    expect_bad_file(p, st_file("{" + one("a", "F32", "[1]", "[0,4]") + "," + one("a", "F32", "[1]", "[0,4]") + "}", f4),
                    {"'a'", "twice"});
    expect_bad_file(p, st_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f4),
                    {"'dtype'", "twice"});
    expect_bad_file(p, st_file(R"({"__metadata__":{},"__metadata__":{},)" + one("a", "F32", "[1]", "[0,4]") + "}", f4),
                    {"twice"});
    expect_bad_file(p, st_file(R"({"__metadata__":{"k":"1","k":"2"},)" + one("a", "F32", "[1]", "[0,4]") + "}", f4),
                    {"'k'", "twice"});
  }
  SECTION("metadata") {
    const std::string a = one("a", "F32", "[1]", "[0,4]");
    expect_bad_file(p, st_file(R"({"__metadata__":[1],)" + a + "}", f4), {"__metadata__", "expected an object"});
    expect_bad_file(p, st_file(R"({"__metadata__":"x",)" + a + "}", f4), {"__metadata__", "expected an object"});
    expect_bad_file(p, st_file(R"({"__metadata__":{"k":1},)" + a + "}", f4), {"'k'", "expected a string"});
    expect_bad_file(p, st_file(R"({"__metadata__":{"k":null},)" + a + "}", f4), {"'k'", "expected a string"});
    // Accepted like the reference does: null metadata, unknown extra fields, leading whitespace.
    write_raw(p, st_file(R"( {"__metadata__":null,"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":[{}]}})",
                         f4));
    SafetensorsFile f = SafetensorsFile::open(p);
    CHECK(f.metadata().empty());
    CHECK(values_of<float>(f.get("a")) == std::vector<float>{1.0f});
  }
}

TEST_CASE("safetensors: save checks its input and never leaves a half-written file", "[safetensors]") {
  TempDir tmp;
  const std::string p = tmp.file("out.safetensors");
  std::vector<float> v = {1, 2};
  Tensor t = from_vec(v, {2});
  mc::io::save_safetensors(p, {{"keep", t}});
  const std::string before = read_raw(p);

  expect_error([&] { mc::io::save_safetensors(p, {{"a", t}, {"a", t}}); }, p, {"'a'", "twice"});
  expect_error([&] { mc::io::save_safetensors(p, {{"", t}}); }, p, {"empty name"});
  expect_error([&] { mc::io::save_safetensors(p, {{"__metadata__", t}}); }, p, {"reserved"});
  expect_error([&] { mc::io::save_safetensors(p, {{"u", Tensor()}}); }, p, {"'u'", "undefined"});
  expect_error([&] { mc::io::save_safetensors(p, {{"bad\xff", t}}); }, p, {"UTF-8"});
  expect_error([&] { mc::io::save_safetensors(p, {{"a", t}}, {{"k", "\xc3"}}); }, p, {"UTF-8"});
  expect_error([&] { mc::io::save_safetensors(tmp.file("no/such/dir/x.safetensors"), {{"a", t}}); },
               tmp.file("no/such/dir/x.safetensors"));
  CHECK(read_raw(p) == before);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(tmp.dir)) files += e.is_regular_file();
  CHECK(files == 1);  // no temporaries left behind

  // Unusual but valid names survive.
  const std::string odd = "weird \"name\"\\ with\nnewline \xE2\x9C\x93";
  mc::io::save_safetensors(p, {{odd, t}, {" ", t}});
  SafetensorsFile f = SafetensorsFile::open(p);
  CHECK(f.names() == std::vector<std::string>{odd, " "});
  CHECK(values_of<float>(f.get(odd)) == v);

  // Overwriting a file that is mapped and viewed leaves the old views intact (the file is replaced, not
  // rewritten in place).
  Tensor view = f.get(" ");
  std::vector<float> w = {7, 8};
  mc::io::save_safetensors(p, {{" ", from_vec(w, {2})}});
  CHECK(values_of<float>(view) == v);
  CHECK(values_of<float>(SafetensorsFile::open(p).get(" ")) == w);
}

TEST_CASE("safetensors: fuzz (truncations and byte flips) gives a valid file or an mc::Error", "[safetensors]") {
  TempDir tmp;
  const std::string src = tmp.file("src.safetensors");
  uint16_t h[3] = {0x3F80, 0x4000, 0x4040};
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> b = {1, 0, 1};
  float s = 9;
  mc::io::save_safetensors(src,
                           {{"w", from_vec(v, {2, 3})}, {"h", from_bytes(DType::BF16, {3}, h)},
                            {"b", from_bytes(DType::Bool, {3}, b.data())}, {"s", from_bytes(DType::F32, {}, &s)},
                            {"e", Tensor::empty({0, 2}, DType::I64)}},
                           {{"k", "v"}});
  const std::string good = read_raw(src);
  REQUIRE(open_and_read_all(src));
  const std::string p = tmp.file("fuzz.safetensors");

  // Every strict prefix is invalid.
  for (size_t n = 0; n < good.size(); ++n) {
    rewrite_raw(p, good.substr(0, n));
    INFO("truncated to " << n << " bytes");
    CHECK_FALSE(open_and_read_all(p));
  }

  // Random byte changes in the length field and the header (and sometimes the data).
  uint64_t hlen = 0;
  std::memcpy(&hlen, good.data(), 8);
  std::mt19937 rng(1234);
  const char interesting[] = "{}[]\",:0123456789-.e \\\x00\xff";
  int opened = 0;
  for (int it = 0; it < 1500; ++it) {
    std::string m = good;
    int flips = 1 + int(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      size_t at = rng() % 8 == 0 ? rng() % m.size() : rng() % (8 + hlen);
      switch (rng() % 3) {
        case 0: m[at] = char(rng() & 0xff); break;
        case 1: m[at] = char(m[at] ^ (1 << (rng() % 8))); break;
        default: m[at] = interesting[rng() % (sizeof(interesting) - 1)]; break;
      }
    }
    rewrite_raw(p, m);
    INFO("iteration " << it);
    opened += open_and_read_all(p);
  }
  CHECK(opened > 0);  // some changes (in the data, or in values) leave a valid file
}
