// mc/io/zip.hpp — a read-only ZIP reader over a memory-mapped file (torch.save archives, TorchScript
// archives, .npz).
//
// ZipReader::open maps the file, finds the end-of-central-directory record (and the zip64 locator/record
// when present), reads every central-directory entry (with zip64 extra fields) and checks that each entry's
// bytes lie inside the file. entry_bytes(name) validates the entry's local header and returns its data:
// for a stored entry a view into the mapping (zero-copy; ZipBytes::owner keeps the mapping alive), for a
// deflated entry a freshly inflated buffer whose CRC-32 is checked. Stored entries' CRC-32 is checked only
// on request (it costs a pass over the data). Every offset and size read from the file is bounds-checked;
// corrupt or truncated archives throw mc::Error naming the file and entry.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/io/file.hpp"
#include "mc/io/inflate.hpp"

namespace mc::io {

// The bytes of one entry. `owner` keeps them alive (the file mapping or the inflated buffer).
struct ZipBytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const void> owner;
  std::string_view view() const { return {reinterpret_cast<const char*>(data), size}; }
};

struct ZipEntry {
  std::string name;
  uint16_t method = 0;        // 0 stored, 8 deflated
  uint16_t flags = 0;         // general-purpose bit flags
  uint32_t crc = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;          // uncompressed
  uint64_t header_offset = 0; // of the local file header
};

namespace zip_detail {
inline uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t rd32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t rd64(const uint8_t* p) { return uint64_t(rd32(p)) | uint64_t(rd32(p + 4)) << 32; }
constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kEocd64Sig = 0x06064b50, kEocd64LocSig = 0x07064b50;
}  // namespace zip_detail

class ZipReader {
 public:
  static ZipReader open(const std::string& path) { return ZipReader(MappedFile::open(path)); }

  explicit ZipReader(std::shared_ptr<MappedFile> file) : file_(std::move(file)) { parse(); }

  const std::string& path() const { return file_->path(); }
  const std::shared_ptr<MappedFile>& file() const { return file_; }
  // All entries in central-directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const ZipEntry* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  const ZipEntry& entry(const std::string& name) const {
    const ZipEntry* e = find(name);
    MC_CHECK(e, path(), ": zip archive has no entry '", name, "'");
    return *e;
  }

  // The entry's uncompressed bytes: a view into the mapping when stored, an inflated buffer when deflated
  // (its CRC-32 is always checked). check_crc_stored also checks the CRC-32 of a stored entry.
  ZipBytes entry_bytes(const std::string& name, bool check_crc_stored = false) const {
    return entry_bytes(entry(name), check_crc_stored);
  }
  ZipBytes entry_bytes(const ZipEntry& e, bool check_crc_stored = false) const {
    using namespace zip_detail;
    const std::string what = path() + ": zip entry '" + e.name + "'";
    MC_CHECK((e.flags & 1u) == 0, what, ": encrypted entries are not supported");
    MC_CHECK(e.method == 0 || e.method == 8, what, ": unsupported compression method ", e.method,
             " (only stored and deflated are supported)");
    const uint8_t* base = file_->data();
    const uint64_t fsize = file_->size();
    // Local header: fixed 30 bytes, then name and extra field (their lengths may differ from the
    // central directory's: writers pad the local extra field to align the data).
    MC_CHECK(e.header_offset <= fsize && fsize - e.header_offset >= 30, what,
             ": local header lies outside the file (truncated or corrupt archive)");
    const uint8_t* h = base + e.header_offset;
    MC_CHECK(rd32(h) == kLocalSig, what, ": bad local header signature (corrupt archive)");
    uint64_t name_len = rd16(h + 26), extra_len = rd16(h + 28);
    uint64_t data_off = e.header_offset + 30 + name_len + extra_len;
    MC_CHECK(data_off <= fsize, what, ": local header lies outside the file (truncated or corrupt archive)");
    MC_CHECK(name_len == e.name.size() && std::memcmp(h + 30, e.name.data(), name_len) == 0, what,
             ": local header names a different entry (corrupt archive)");
    MC_CHECK(e.compressed_size <= fsize - data_off, what, ": data (", e.compressed_size, " bytes at offset ",
             data_off, ") runs past the end of the file (", fsize, " bytes; truncated archive?)");
    const uint8_t* src = base + data_off;
    ZipBytes out;
    if (e.method == 0) {
      MC_CHECK(e.compressed_size == e.size, what, ": stored entry has compressed size ", e.compressed_size,
               " != size ", e.size, " (corrupt archive)");
      out.data = src;
      out.size = size_t(e.size);
      out.owner = file_;
      if (check_crc_stored)
        MC_CHECK(crc32(out.data, out.size) == e.crc, what, ": CRC-32 mismatch (corrupt data)");
      return out;
    }
    // DEFLATE expands at most ~1032:1; anything claiming more is corrupt (and would waste memory).
    MC_CHECK(e.size <= e.compressed_size * 1032 + 1024, what, ": claims ", e.size, " bytes from ",
             e.compressed_size, " compressed bytes (corrupt archive)");
    auto buf = std::make_shared<std::vector<uint8_t>>(inflate_raw(src, size_t(e.compressed_size), size_t(e.size), what));
    MC_CHECK(crc32(buf->data(), buf->size()) == e.crc, what, ": CRC-32 mismatch (corrupt data)");
    out.data = buf->data();
    out.size = buf->size();
    out.owner = buf;
    return out;
  }

 private:
  void parse() {
    using namespace zip_detail;
    const std::string& p = path();
    const uint8_t* d = file_->data();
    const uint64_t n = file_->size();
    MC_CHECK(n >= 22, p, ": not a zip archive (", n, " bytes, too short for an end-of-central-directory record)");
    // End-of-central-directory: 22 bytes + a comment of up to 65535 bytes at the end of the file.
    uint64_t eocd = UINT64_MAX;
    uint64_t lowest = n >= 22 + 65535 ? n - 22 - 65535 : 0;
    for (uint64_t i = n - 22 + 1; i-- > lowest;) {
      if (rd32(d + i) == kEocdSig && i + 22 + rd16(d + i + 20) <= n) {
        eocd = i;
        break;
      }
    }
    MC_CHECK(eocd != UINT64_MAX, p, ": not a zip archive or truncated (no end-of-central-directory record)");
    const uint8_t* e = d + eocd;
    uint64_t count = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    MC_CHECK(rd16(e + 4) == 0 && rd16(e + 6) == 0, p, ": multi-disk zip archives are not supported");
    uint64_t cd_end_limit = eocd;
    // zip64: a locator just before the EOCD points at the zip64 EOCD record.
    if (eocd >= 20 && rd32(d + eocd - 20) == kEocd64LocSig) {
      const uint8_t* loc = d + eocd - 20;
      uint64_t rec = rd64(loc + 8);
      MC_CHECK(rec <= eocd - 20 && eocd - 20 - rec >= 56, p, ": zip64 end-of-central-directory record lies outside the file (corrupt archive)");
      const uint8_t* r = d + rec;
      MC_CHECK(rd32(r) == kEocd64Sig, p, ": bad zip64 end-of-central-directory signature (corrupt archive)");
      // The 16/32-bit fields hold either the 0xff.. sentinel or the same value as the zip64 record.
      uint64_t count64 = rd64(r + 32), size64 = rd64(r + 40), off64 = rd64(r + 48);
      MC_CHECK((count == 0xffff || count == count64) && (cd_size == 0xffffffffu || cd_size == size64) &&
                   (cd_off == 0xffffffffu || cd_off == off64),
               p, ": end-of-central-directory record disagrees with its zip64 record (corrupt archive)");
      count = count64;
      cd_size = size64;
      cd_off = off64;
      cd_end_limit = rec;
    } else {
      MC_CHECK(count != 0xffff && cd_size != 0xffffffffu && cd_off != 0xffffffffu, p,
               ": zip64 archive without a zip64 end-of-central-directory locator (corrupt archive)");
    }
    MC_CHECK(cd_off <= cd_end_limit && cd_size <= cd_end_limit - cd_off, p, ": central directory (", cd_size,
             " bytes at offset ", cd_off, ") lies outside the file (truncated or corrupt archive)");
    MC_CHECK(count <= cd_size / 46, p, ": central directory claims ", count, " entries in ", cd_size,
             " bytes (corrupt archive)");
    entries_.reserve(size_t(count));
    uint64_t pos = cd_off, end = cd_off + cd_size;
    for (uint64_t k = 0; k < count; ++k) {
      MC_CHECK(end - pos >= 46, p, ": central directory entry ", k, " is truncated (corrupt archive)");
      const uint8_t* c = d + pos;
      MC_CHECK(rd32(c) == kCentralSig, p, ": bad central directory signature at entry ", k, " (corrupt archive)");
      ZipEntry z;
      z.flags = rd16(c + 8);
      z.method = rd16(c + 10);
      z.crc = rd32(c + 16);
      z.compressed_size = rd32(c + 20);
      z.size = rd32(c + 24);
      uint64_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
      uint32_t disk = rd16(c + 34);
      z.header_offset = rd32(c + 42);
      MC_CHECK(end - pos - 46 >= name_len + extra_len + comment_len, p, ": central directory entry ", k,
               " is truncated (corrupt archive)");
      z.name.assign(reinterpret_cast<const char*>(c + 46), size_t(name_len));
      // zip64 extended information: 8-byte values for the 32-bit fields that hold 0xffffffff, in order.
      const uint8_t* x = c + 46 + name_len;
      const uint8_t* xend = x + extra_len;
      while (xend - x >= 4) {
        uint16_t id = rd16(x), len = rd16(x + 2);
        MC_CHECK(uint64_t(xend - x - 4) >= len, p, ": entry '", z.name, "': extra field overruns its entry (corrupt archive)");
        if (id == 0x0001) {
          const uint8_t* f = x + 4;
          const uint8_t* fend = f + len;
          auto take = [&](uint64_t& v) {
            MC_CHECK(fend - f >= 8, p, ": entry '", z.name, "': zip64 extra field too short (corrupt archive)");
            v = rd64(f);
            f += 8;
          };
          if (z.size == 0xffffffffu) take(z.size);
          if (z.compressed_size == 0xffffffffu) take(z.compressed_size);
          if (z.header_offset == 0xffffffffu) take(z.header_offset);
          if (disk == 0xffff) {
            MC_CHECK(fend - f >= 4, p, ": entry '", z.name, "': zip64 extra field too short (corrupt archive)");
            disk = rd32(f);
          }
        }
        x += 4 + len;
      }
      MC_CHECK(disk == 0, p, ": entry '", z.name, "' is on another disk (multi-disk archives are not supported)");
      MC_CHECK(z.header_offset < cd_off && z.compressed_size <= cd_off - z.header_offset, p, ": entry '", z.name,
               "': data (", z.compressed_size, " bytes at offset ", z.header_offset,
               ") overlaps the central directory or lies outside the file (corrupt archive)");
      MC_CHECK(index_.emplace(z.name, entries_.size()).second, p, ": duplicate zip entry '", z.name, "'");
      entries_.push_back(std::move(z));
      pos += 46 + name_len + extra_len + comment_len;
    }
  }

  std::shared_ptr<MappedFile> file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// True when the bytes start like a zip archive (a local file header, or an empty archive's EOCD).
inline bool looks_like_zip(const uint8_t* p, size_t n) {
  return n >= 4 && p[0] == 'P' && p[1] == 'K' &&
         ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6));
}

}  // namespace mc::io
