// mc/io/npy.hpp — NumPy .npy arrays and .npz archives.
//
// parse_npy reads one .npy image (format versions 1.0, 2.0 and 3.0): the header's Python dict literal
// {'descr': ..., 'fortran_order': ..., 'shape': (...)} and the raw data after it. Supported dtypes are the
// little-endian '<f4' '<f8' '<f2' '<i4' '<i8' and the one-byte '|u1' '|b1'; anything else (big-endian,
// object, structured, other integer widths) throws mc::Error naming the array and the dtype. Arrays in C
// order become contiguous tensors; fortran_order arrays become the equivalent strided view (same values,
// column-major strides). When the data is suitably aligned the tensor aliases the source bytes (the file
// mapping or the inflated zip entry, kept alive by the tensor's storage); otherwise it is copied.
//
// load_npz reads a .npz (a zip of .npy, stored or deflated) into (name, tensor) pairs in archive order,
// names without their ".npy" suffix.
#pragma once
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/io/file.hpp"
#include "mc/io/zip.hpp"

namespace mc::io {

namespace npy_detail {

// A minimal reader for the header's dict literal: string keys; values that are strings, True/False or
// tuples of non-negative integers.
struct HeaderParser {
  std::string_view s;
  size_t i = 0;
  const std::string& what;

  [[noreturn]] void bad(const char* why) const {
    fail(what, ": malformed .npy header (", why, ") in \"", std::string(s), "\"");
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  bool peek(char c) {
    ws();
    return i < s.size() && s[i] == c;
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) bad("expected a string");
    char q = s[i++];
    std::string out;
    while (i < s.size() && s[i] != q) {
      if (s[i] == '\\') bad("escapes in strings are not supported");
      out += s[i++];
    }
    if (i >= s.size()) bad("unterminated string");
    ++i;
    return out;
  }
  bool boolean() {
    ws();
    if (s.substr(i, 4) == "True") { i += 4; return true; }
    if (s.substr(i, 5) == "False") { i += 5; return false; }
    bad("expected True or False");
  }
  Shape tuple() {
    if (!eat('(')) bad("expected a shape tuple");
    Shape shape;
    while (!eat(')')) {
      ws();
      if (i >= s.size() || s[i] < '0' || s[i] > '9') bad("expected a non-negative integer in the shape");
      int64_t v = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        if (v > (INT64_MAX - 9) / 10) bad("dimension too large");
        v = v * 10 + (s[i++] - '0');
      }
      if (i < s.size() && s[i] == 'L') ++i;  // Python 2 long literal
      shape.push_back(v);
      if (shape.size() > 64) bad("too many dimensions");
      if (!eat(',') && !peek(')')) bad("expected ',' or ')' in the shape");
    }
    return shape;
  }
};

struct NpyDType {
  DType dtype;
  size_t size;
};

inline NpyDType parse_descr(const std::string& d, const std::string& what) {
  static const std::pair<const char*, NpyDType> table[] = {
      {"<f4", {DType::F32, 4}}, {"<f8", {DType::F64, 8}}, {"<f2", {DType::F16, 2}}, {"<i4", {DType::I32, 4}},
      {"<i8", {DType::I64, 8}}, {"|u1", {DType::U8, 1}},  {"<u1", {DType::U8, 1}},  {"|b1", {DType::Bool, 1}},
      {"<b1", {DType::Bool, 1}}};
  for (const auto& [name, t] : table)
    if (d == name) return t;
  if (!d.empty() && d[0] == '>' && d.size() > 2 && d.substr(2) != "1")
    fail(what, ": big-endian dtype '", d, "' is not supported");
  if (d.find('O') != std::string::npos) fail(what, ": object arrays (dtype '", d, "') are not supported");
  fail(what, ": unsupported dtype '", d, "' (supported: <f4 <f8 <f2 <i4 <i8 |u1 |b1)");
}

}  // namespace npy_detail

// Parses one .npy image of n bytes at p. `owner` keeps p alive; when non-null and the data is aligned the
// tensor aliases p, otherwise the data is copied. `what` names the source in errors.
inline Tensor parse_npy(const uint8_t* p, size_t n, std::shared_ptr<const void> owner, const std::string& what) {
  static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  MC_CHECK(n >= 10 && std::memcmp(p, magic, 6) == 0, what, ": not a .npy array (bad magic)");
  const int major = p[6];
  MC_CHECK(major >= 1 && major <= 3, what, ": unsupported .npy format version ", major, ".", int(p[7]));
  size_t hlen, hstart;
  if (major == 1) {
    hlen = size_t(p[8]) | size_t(p[9]) << 8;
    hstart = 10;
  } else {
    MC_CHECK(n >= 12, what, ": truncated .npy header");
    hlen = size_t(p[8]) | size_t(p[9]) << 8 | size_t(p[10]) << 16 | size_t(p[11]) << 24;
    hstart = 12;
  }
  MC_CHECK(hlen <= n - hstart, what, ": truncated .npy header (", hlen, " header bytes announced, ", n - hstart,
           " present)");
  npy_detail::HeaderParser hp{std::string_view(reinterpret_cast<const char*>(p + hstart), hlen), 0, what};
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  Shape shape;
  if (!hp.eat('{')) hp.bad("expected '{'");
  while (!hp.eat('}')) {
    std::string key = hp.str();
    if (!hp.eat(':')) hp.bad("expected ':'");
    if (key == "descr") {
      if (hp.peek('[')) fail(what, ": structured dtypes are not supported");
      descr = hp.str();
      have_descr = true;
    } else if (key == "fortran_order") {
      fortran = hp.boolean();
      have_order = true;
    } else if (key == "shape") {
      shape = hp.tuple();
      have_shape = true;
    } else {
      hp.bad("unknown key");
    }
    if (!hp.eat(',') && !hp.peek('}')) hp.bad("expected ',' or '}'");
  }
  MC_CHECK(have_descr && have_order && have_shape, what, ": .npy header lacks 'descr', 'fortran_order' or 'shape'");
  npy_detail::NpyDType dt = npy_detail::parse_descr(descr, what);

  uint64_t count = 1;
  for (int64_t d : shape) {
    MC_CHECK(d == 0 || count <= (uint64_t(1) << 62) / uint64_t(d), what, ": shape ", shape_str(shape), " is too large");
    count *= uint64_t(d);
  }
  MC_CHECK(count <= (uint64_t(1) << 62) / dt.size, what, ": shape ", shape_str(shape), " is too large");
  const size_t nbytes = size_t(count * dt.size);
  const size_t data_off = hstart + hlen;
  MC_CHECK(n - data_off == nbytes, what, ": data size ", n - data_off, " bytes does not match shape ",
           shape_str(shape), " of ", descr, " (", nbytes, " bytes)", n - data_off < nbytes ? "; truncated file?" : "");
  const uint8_t* src = p + data_off;
  if (dt.dtype == DType::Bool)
    for (size_t k = 0; k < nbytes; ++k) MC_CHECK(src[k] <= 1, what, ": bool array holds a byte other than 0 or 1");

  std::shared_ptr<Storage> storage;
  if (owner && reinterpret_cast<uintptr_t>(src) % dt.size == 0) {
    storage = std::make_shared<Storage>(const_cast<uint8_t*>(src), nbytes, Device::cpu(), std::move(owner));
  } else {
    storage = std::make_shared<Storage>(nbytes, Device::cpu());
    if (nbytes) std::memcpy(storage->data(), src, nbytes);
  }
  Shape strides;
  if (fortran) {
    strides.resize(shape.size());
    int64_t acc = 1;
    for (size_t k = 0; k < shape.size(); ++k) {
      strides[k] = acc;
      acc *= shape[k];
    }
  } else {
    strides = contiguous_strides(shape);
  }
  return Tensor::view_of(std::move(storage), dt.dtype, shape, strides, 0);
}

// Reads a .npy file. The tensor aliases the file mapping when the data is aligned.
inline Tensor load_npy(const std::string& path) {
  auto f = MappedFile::open(path);
  return parse_npy(f->data(), f->size(), f, path);
}

// Reads every array of a .npz archive, in archive order, names without ".npy".
inline std::vector<std::pair<std::string, Tensor>> load_npz(const std::string& path) {
  ZipReader zip = ZipReader::open(path);
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(zip.entries().size());
  for (const ZipEntry& e : zip.entries()) {
    if (!e.name.empty() && e.name.back() == '/') continue;  // a directory entry
    MC_CHECK(e.name.size() > 4 && e.name.compare(e.name.size() - 4, 4, ".npy") == 0, path, ": npz entry '", e.name,
             "' is not a .npy array");
    ZipBytes b = zip.entry_bytes(e, /*check_crc_stored=*/true);
    std::string name = e.name.substr(0, e.name.size() - 4);
    out.emplace_back(name, parse_npy(b.data, b.size, b.owner, path + ": array '" + name + "'"));
  }
  return out;
}

// load_npz as a map from name to tensor.
inline std::map<std::string, Tensor> load_npz_map(const std::string& path) {
  std::map<std::string, Tensor> m;
  for (auto& [name, t] : load_npz(path)) m.emplace(name, std::move(t));
  return m;
}

}  // namespace mc::io
