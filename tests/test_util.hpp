// tests/test_util.hpp — small helpers shared by the test files.
#pragma once
#include <catch2/catch.hpp>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include <cstdint>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/io/inflate.hpp"

namespace mc_test {

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The message of the mc::Error that f throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const mc::Error& e) {
    return e.what();
  }
  return "";
}

// A fresh directory under /tmp, removed with everything in it at the end of the scope.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& prefix = "mc_test") {
    std::string tmpl = "/tmp/" + prefix + "_XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
  void write(const std::string& name, const std::string& bytes) const {
    std::filesystem::create_directories(std::filesystem::path(file(name)).parent_path());
    std::ofstream f(file(name), std::ios::binary);
    f.write(bytes.data(), std::streamsize(bytes.size()));
  }
};

// Little-endian integers, a .npy file (format 1.0) and a zip archive with stored (uncompressed) entries,
// for tests that write MedMNIST-style .npz files.
inline void put16(std::string& s, uint32_t v) {
  s += char(v & 0xFF);
  s += char((v >> 8) & 0xFF);
}
inline void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}

inline std::string npy(const std::string& descr, const std::vector<int64_t>& shape, const std::string& data) {
  std::string sh = "(";
  for (size_t i = 0; i < shape.size(); ++i) sh += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  sh += ")";
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + sh + ", }";
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  put16(out, uint32_t(h.size()));
  return out + h + data;
}

// A zip archive with stored entries (a .npz when the entries are .npy).
inline std::string zip_stored(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    const uint32_t crc = mc::io::crc32(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    const uint32_t offset = uint32_t(out.size());
    for (std::string* s : {&out, &central}) {
      const bool c = s == &central;
      put32(*s, c ? 0x02014b50 : 0x04034b50);
      if (c) put16(*s, 20);
      put16(*s, 20);
      put16(*s, 0);
      put16(*s, 0);
      put16(*s, 0);
      put16(*s, 0);
      put32(*s, crc);
      put32(*s, uint32_t(data.size()));
      put32(*s, uint32_t(data.size()));
      put16(*s, uint32_t(name.size()));
      put16(*s, 0);
      if (c) {
        put16(*s, 0);
        put16(*s, 0);
        put16(*s, 0);
        put32(*s, 0);
        put32(*s, offset);
      }
      *s += name;
      if (!c) out += data;
    }
  }
  const uint32_t cd_offset = uint32_t(out.size());
  out += central;
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, uint32_t(entries.size()));
  put16(out, uint32_t(entries.size()));
  put32(out, uint32_t(central.size()));
  put32(out, cd_offset);
  put16(out, 0);
  return out;
}

}  // namespace mc_test
