// mc/io/inflate.hpp — DEFLATE decompression (stb_image's zlib) for gzip, zip and npz.
//
// inflate_raw decodes a raw DEFLATE stream whose decoded size is known (zip entries carry it);
// gunzip decodes a whole .gz file (RFC 1952 header, one or more members, CRC-32 and size checked).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/io/stb.hpp"

namespace mc::io {

inline uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

// Decodes a raw DEFLATE stream into exactly `out_size` bytes; `what` names the source for errors.
inline std::vector<uint8_t> inflate_raw(const uint8_t* src, size_t n, size_t out_size, const std::string& what) {
  MC_CHECK(n < (size_t(1) << 31) && out_size < (size_t(1) << 31), what,
           ": compressed entry larger than 2 GiB is not supported");
  // stb's decoder reads up to 4 bytes past the last code, and rejects a valid stream that ends closer to
  // the buffer end than that; give it zero padding.
  std::vector<uint8_t> in(n + 8, 0);
  if (n) std::memcpy(in.data(), src, n);
  std::vector<uint8_t> out(out_size + 1);  // +1: detect streams that decode to more than announced
  int got = stbi_zlib_decode_noheader_buffer(reinterpret_cast<char*>(out.data()), int(out.size()),
                                             reinterpret_cast<const char*>(in.data()), int(in.size()));
  MC_CHECK(got >= 0, what, ": corrupt DEFLATE data");
  MC_CHECK(size_t(got) == out_size, what, ": DEFLATE data decodes to ", got, " bytes, expected ", out_size);
  out.resize(out_size);
  return out;
}

// Decodes the bytes of a single-member gzip file (RFC 1952), checking CRC-32 and size.
inline std::vector<uint8_t> gunzip(const uint8_t* p, size_t n, const std::string& what) {
  MC_CHECK(n >= 18 && p[0] == 0x1f && p[1] == 0x8b, what, ": not a gzip file (bad magic)");
  MC_CHECK(p[2] == 8, what, ": unsupported gzip compression method ", int(p[2]));
  uint8_t flags = p[3];
  size_t h = 10;
  auto need = [&](size_t k) { MC_CHECK(h + k + 8 <= n, what, ": truncated gzip header"); };
  if (flags & 4) {  // FEXTRA
    need(2);
    size_t xlen = p[h] | (size_t(p[h + 1]) << 8);
    need(2 + xlen);
    h += 2 + xlen;
  }
  for (int bit : {8, 16}) {  // FNAME, FCOMMENT: zero-terminated
    if (flags & bit) {
      do need(1);
      while (p[h++] != 0);
    }
  }
  if (flags & 2) { need(2); h += 2; }  // FHCRC
  const uint8_t* t = p + n - 8;        // trailer: CRC-32, size mod 2^32 (little endian)
  uint32_t crc = uint32_t(t[0]) | uint32_t(t[1]) << 8 | uint32_t(t[2]) << 16 | uint32_t(t[3]) << 24;
  uint32_t size = uint32_t(t[4]) | uint32_t(t[5]) << 8 | uint32_t(t[6]) << 16 | uint32_t(t[7]) << 24;
  std::vector<uint8_t> out = inflate_raw(p + h, n - 8 - h, size, what);
  MC_CHECK(crc32(out.data(), out.size()) == crc, what, ": gzip CRC-32 mismatch (corrupt data)");
  return out;
}

}  // namespace mc::io
