// mc/io/safetensors.hpp — reading and writing the safetensors format.
//
// A safetensors file is: 8 bytes, little-endian u64 N; N bytes of JSON (padded with spaces), an object
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<value>", ...}}
// and then the data buffer. Offsets are relative to the start of the buffer; tensors are stored
// contiguously (row-major), little-endian.
//
// SafetensorsFile::open maps the file and validates the whole header eagerly (no tensor data is read):
//   - the file holds the 8-byte length; 2 <= N <= 100'000'000 and 8 + N <= file size;
//   - the header is valid JSON (UTF-8, no comments) and an object; no object in it has a duplicate key
//     (two tensors of one name, or one field given twice); nesting is at most 64 deep;
//   - "__metadata__", if present, is an object of string values (or null, meaning none);
//   - every other entry is an object with "dtype" (a string), "shape" (an array of non-negative integers)
//     and "data_offsets" (an array of two non-negative integers [begin, end], begin <= end); other fields
//     are ignored, as the reference implementation does;
//   - the dtype is one of the safetensors dtypes (BOOL U8 I8 I16 U16 I32 U32 I64 U64 F16 BF16 F32 F64 C64
//     F8_E4M3 F8_E5M2 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ F4 F6_E2M3 F6_E3M2); any other string is an error at
//     open, since the size of its elements is unknown;
//   - numel (the product of the dims) and numel * element bits are computed without overflow; the bits are
//     a whole number of bytes and end - begin equals that byte count. Also the product of the non-zero dims
//     must fit in int64 (mc's stride arithmetic needs it; the reference accepts e.g. [0, 2^62, 2^62]);
//   - like the reference implementation: sorted by (begin, end), the data regions tile the buffer exactly —
//     the first starts at 0, each starts where the previous ended (so no overlaps and no holes), and the
//     last ends at the end of the file (no trailing bytes).
// A file that passes is safe to index: every tensor's bytes lie inside the mapping.
//
// Access is lazy. names() lists the tensors in the order of the header; info(name) gives the dtype,
// shape and byte range without touching the data. get(name) returns a CPU tensor:
//   - by default a zero-copy view that aliases the mapping (the tensor's Storage keeps the mapping alive,
//     so it outlives the SafetensorsFile). The mapping is private copy-on-write: writing into such a
//     tensor copies the touched pages and never modifies the file;
//   - a copy when copy = true, or when the data is not aligned to its element size in the file (writers
//     that pack a bf16 tensor of odd length before an f32 one produce such files);
//   - BOOL data must be bytes 0 or 1 for mc; other bytes are read as true (as torch does), via a copy.
// Of the safetensors dtypes, mc supports F32 F64 BF16 F16 I32 I64 U8 BOOL. A file holding others (I16,
// F8_E4M3, ...) opens fine and lists them (info().supported is false); get() on such a tensor throws.
//
// save_safetensors writes tensors of any supported dtype, device and strides (copied to contiguous host
// bytes as needed), in the order given, with contiguous offsets and no padding between tensors. The
// header is padded with spaces to a multiple of 8 bytes. The file is written atomically (temporary file +
// rename): on any error the previous file at `path` is left untouched. Names must be non-empty, unique
// and not "__metadata__"; names and metadata must be valid UTF-8.
//
// load_safetensors(path, copy) returns every tensor, in header order: views of the mapping by default
// (see get), private copies when copy = true.
//
// Every error is an mc::Error whose message starts with the file path and names the tensor when there is
// one.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/cpu/backend.hpp"
#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/io/file.hpp"

namespace mc::io {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// One tensor of a safetensors header.
struct SafetensorsInfo {
  std::string name;
  std::string dtype_str;   // as written in the file: "F32", "BF16", "I16", ...
  bool supported = false;  // whether mc has this dtype (then `dtype` is it)
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range, relative to the start of the data buffer
  uint64_t nbytes() const { return end - begin; }
};

namespace safetensors_detail {

constexpr uint64_t kMaxHeader = 100'000'000;  // as in the reference implementation
constexpr int kMaxDepth = 64;

struct DTypeDesc {
  const char* name;
  unsigned bits;
  bool supported;
  DType dtype;
};

inline const DTypeDesc* find_dtype(std::string_view s) {
  static const DTypeDesc table[] = {
      {"F32", 32, true, DType::F32},       {"F64", 64, true, DType::F64},
      {"BF16", 16, true, DType::BF16},     {"F16", 16, true, DType::F16},
      {"I32", 32, true, DType::I32},       {"I64", 64, true, DType::I64},
      {"U8", 8, true, DType::U8},          {"BOOL", 8, true, DType::Bool},
      {"I8", 8, false, DType::F32},        {"I16", 16, false, DType::F32},
      {"U16", 16, false, DType::F32},      {"U32", 32, false, DType::F32},
      {"U64", 64, false, DType::F32},      {"C64", 64, false, DType::F32},
      {"F8_E4M3", 8, false, DType::F32},   {"F8_E5M2", 8, false, DType::F32},
      {"F8_E8M0", 8, false, DType::F32},   {"F8_E4M3FNUZ", 8, false, DType::F32},
      {"F8_E5M2FNUZ", 8, false, DType::F32}, {"F4", 4, false, DType::F32},
      {"F6_E2M3", 6, false, DType::F32},   {"F6_E3M2", 6, false, DType::F32},
  };
  for (const DTypeDesc& d : table)
    if (s == d.name) return &d;
  return nullptr;
}

inline const char* dtype_str(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

using ojson = nlohmann::ordered_json;

// Parses the header text; rejects duplicate keys in any object (nlohmann would keep one silently) and
// nesting deeper than kMaxDepth.
inline ojson parse_header(const char* p, size_t n, const std::string& path) {
  struct Abort {};  // stops the parser from inside the callback
  std::vector<std::unordered_set<std::string>> keys;  // one set per open object
  std::string dup;
  bool too_deep = false;
  ojson::parser_callback_t cb = [&](int depth, ojson::parse_event_t ev, ojson& parsed) -> bool {
    if (depth > kMaxDepth) {
      too_deep = true;
      throw Abort{};
    }
    switch (ev) {
      case ojson::parse_event_t::object_start: keys.emplace_back(); break;
      case ojson::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case ojson::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.get_ref<const std::string&>()).second) {
          dup = parsed.get_ref<const std::string&>();
          throw Abort{};
        }
        break;
      default: break;
    }
    return true;
  };
  // nlohmann's lexer treats a NUL byte as the end of the input and would ignore what follows it; a NUL is
  // never valid in JSON text, so reject it first.
  if (const void* z = std::memchr(p, 0, n))
    fail(path, ": safetensors header is not valid JSON (NUL byte at offset ",
         static_cast<const char*>(z) - p, " of the header)");
  try {
    return ojson::parse(p, p + n, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": safetensors header is not valid JSON (", e.what(), ")");
  } catch (const Abort&) {
    if (too_deep) fail(path, ": safetensors header is nested more than ", kMaxDepth, " levels deep");
    fail(path, ": safetensors header has the key '", dup, "' twice in one object",
         " (duplicate tensor names or fields are not allowed)");
  }
}

// A JSON number that is a non-negative integer. Like the reference, "-0" (a float to serde_json) is not.
inline bool get_count(const ojson& j, uint64_t& v) {
  if (!j.is_number_unsigned()) return false;
  v = j.get<uint64_t>();
  return true;
}

inline bool mul_overflow(uint64_t a, uint64_t b, uint64_t& r) { return __builtin_mul_overflow(a, b, &r); }

}  // namespace safetensors_detail

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path) {
    SafetensorsFile f;
    f.path_ = path;
    f.file_ = MappedFile::open(path);
    f.parse();
    return f;
  }

  const std::string& path() const { return path_; }
  // Tensor names in header order.
  std::vector<std::string> names() const {
    std::vector<std::string> r;
    r.reserve(entries_.size());
    for (const SafetensorsInfo& e : entries_) r.push_back(e.name);
    return r;
  }
  size_t size() const { return entries_.size(); }
  const std::vector<SafetensorsInfo>& entries() const { return entries_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const SafetensorsInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    MC_CHECK(it != index_.end(), path_, ": no tensor named '", name, "' (the file has ", entries_.size(),
             " tensors)");
    return entries_[it->second];
  }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // File offset of the data buffer (8 + header length).
  uint64_t data_start() const { return data_start_; }

  // The tensor `name` on the CPU: a view of the (copy-on-write) mapping, or a private copy (see the top of
  // this file).
  Tensor get(const std::string& name, bool copy = false) const {
    const SafetensorsInfo& e = info(name);
    MC_CHECK(e.supported, path_, ": tensor '", name, "' has dtype ", e.dtype_str,
             ", which mc does not support (supported: F32 F64 BF16 F16 I32 I64 U8 BOOL)");
    const uint8_t* src = file_->data() + data_start_ + e.begin;
    const size_t nbytes = size_t(e.nbytes());
    const size_t es = dtype_size(e.dtype);
    bool fix_bool = false;
    if (e.dtype == DType::Bool)
      for (size_t i = 0; i < nbytes && !fix_bool; ++i) fix_bool = src[i] > 1;
    std::shared_ptr<Storage> storage;
    if (copy || fix_bool || reinterpret_cast<uintptr_t>(src) % es != 0) {
      storage = std::make_shared<Storage>(nbytes, Device::cpu());
      auto* dst = static_cast<uint8_t*>(storage->data());
      if (nbytes) std::memcpy(dst, src, nbytes);
      if (fix_bool)
        for (size_t i = 0; i < nbytes; ++i) dst[i] = dst[i] != 0;
    } else {
      storage = std::make_shared<Storage>(const_cast<uint8_t*>(src), nbytes, Device::cpu(),
                                          std::shared_ptr<const void>(file_));
    }
    return Tensor::view_of(std::move(storage), e.dtype, e.shape, contiguous_strides(e.shape), 0);
  }

 private:
  SafetensorsFile() = default;

  void parse() {
    namespace sd = safetensors_detail;
    const size_t fsize = file_->size();
    const uint8_t* base = file_->data();
    MC_CHECK(fsize >= 8, path_, ": not a safetensors file (", fsize,
             " bytes, too short for the 8-byte header length)");
    uint64_t n = 0;
    std::memcpy(&n, base, 8);
    MC_CHECK(n >= 2, path_, ": safetensors header length ", n, " is too small");
    MC_CHECK(n <= sd::kMaxHeader, path_, ": safetensors header length ", n, " exceeds the limit of ",
             sd::kMaxHeader, " bytes");
    MC_CHECK(n <= fsize - 8, path_, ": safetensors header length ", n, " runs past the end of the file (",
             fsize, " bytes; truncated file?)");
    data_start_ = 8 + n;
    const uint64_t buffer = fsize - data_start_;

    sd::ojson h = sd::parse_header(reinterpret_cast<const char*>(base + 8), size_t(n), path_);
    MC_CHECK(h.is_object(), path_, ": safetensors header is a JSON ", h.type_name(), ", expected an object");

    for (auto& [key, val] : h.items()) {
      if (key == "__metadata__") {
        if (val.is_null()) continue;
        MC_CHECK(val.is_object(), path_, ": __metadata__ is a JSON ", val.type_name(), ", expected an object");
        for (auto& [k, v] : val.items()) {
          MC_CHECK(v.is_string(), path_, ": __metadata__ entry '", k, "' is a JSON ", v.type_name(),
                   ", expected a string");
          metadata_[k] = v.template get<std::string>();
        }
        continue;
      }
      entries_.push_back(parse_entry(key, val, buffer));
    }

    // The data regions must tile [0, buffer) exactly (the reference implementation's rule).
    std::vector<size_t> order(entries_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const SafetensorsInfo &x = entries_[a], &y = entries_[b];
      return x.begin != y.begin ? x.begin < y.begin : (x.end != y.end ? x.end < y.end : a < b);
    });
    uint64_t pos = 0;
    const SafetensorsInfo* prev = nullptr;
    for (size_t i : order) {
      const SafetensorsInfo& e = entries_[i];
      if (e.begin < pos)
        fail(path_, ": tensor '", e.name, "' (bytes [", e.begin, ", ", e.end, ")) overlaps tensor '", prev->name,
             "' (bytes [", prev->begin, ", ", prev->end, "))");
      if (e.begin > pos)
        fail(path_, ": tensor '", e.name, "' starts at byte ", e.begin, " of the data buffer, leaving a hole of ",
             e.begin - pos, " bytes after ", prev ? "tensor '" + prev->name + "'" : std::string("the start"));
      pos = e.end;
      prev = &e;
    }
    MC_CHECK(pos == buffer, path_, ": the data buffer has ", buffer, " bytes but the tensors cover only ", pos,
             " (trailing bytes not described by the header)");

    index_.reserve(entries_.size());
    for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].name, i);
  }

  SafetensorsInfo parse_entry(const std::string& name, const safetensors_detail::ojson& val, uint64_t buffer) {
    namespace sd = safetensors_detail;
    auto bad = [&](auto&&... why) { fail(path_, ": tensor '", name, "': ", why...); };
    if (!val.is_object()) bad("entry is a JSON ", val.type_name(), ", expected an object");
    SafetensorsInfo e;
    e.name = name;

    auto dt = val.find("dtype");
    if (dt == val.end()) bad("missing \"dtype\"");
    if (!dt->is_string()) bad("\"dtype\" is a JSON ", dt->type_name(), ", expected a string");
    e.dtype_str = dt->get<std::string>();
    const sd::DTypeDesc* desc = sd::find_dtype(e.dtype_str);
    if (!desc) bad("unknown dtype \"", e.dtype_str, "\"");
    e.supported = desc->supported;
    e.dtype = desc->dtype;

    auto sh = val.find("shape");
    if (sh == val.end()) bad("missing \"shape\"");
    if (!sh->is_array()) bad("\"shape\" is a JSON ", sh->type_name(), ", expected an array");
    uint64_t numel = 1, nonzero = 1;
    for (const auto& d : *sh) {
      uint64_t v = 0;
      if (!sd::get_count(d, v)) bad("shape ", sh->dump(), " must hold non-negative integers (found ", d.dump(), ")");
      if (sd::mul_overflow(numel, v, numel)) bad("shape ", sh->dump(), ": element count overflows");
      if (v != 0 && sd::mul_overflow(nonzero, v, nonzero)) bad("shape ", sh->dump(), " is too large");
      e.shape.push_back(int64_t(v));  // v <= nonzero, checked below to fit in int64
    }
    if (nonzero > uint64_t(INT64_MAX)) bad("shape ", sh->dump(), " is too large");

    auto off = val.find("data_offsets");
    if (off == val.end()) bad("missing \"data_offsets\"");
    if (!off->is_array() || off->size() != 2 || !sd::get_count((*off)[0], e.begin) ||
        !sd::get_count((*off)[1], e.end))
      bad("\"data_offsets\" is ", off->dump(), ", expected [begin, end] with non-negative integers");
    if (e.begin > e.end) bad("data_offsets [", e.begin, ", ", e.end, "] end before they begin");
    if (e.end > buffer)
      bad("data_offsets [", e.begin, ", ", e.end, "] lie outside the data buffer of ", buffer,
          " bytes (truncated file?)");

    uint64_t bits = 0;
    if (sd::mul_overflow(numel, uint64_t(desc->bits), bits)) bad("byte size of shape ", sh->dump(), " overflows");
    if (bits % 8 != 0) bad(numel, " elements of ", e.dtype_str, " are not a whole number of bytes");
    if (bits / 8 != e.nbytes())
      bad("shape ", sh->dump(), " of ", e.dtype_str, " needs ", bits / 8, " bytes but data_offsets [", e.begin, ", ",
          e.end, "] hold ", e.nbytes());
    return e;
  }

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsInfo> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

namespace safetensors_detail {

// The bytes of the host tensor t (any strides), gathered in row-major order.
inline std::vector<uint8_t> host_bytes_strided(const Tensor& t) {
  const size_t es = t.element_size();
  std::vector<uint8_t> out(size_t(t.numel()) * es);
  if (out.empty()) return out;
  const int nd = t.dim();
  const auto* base = static_cast<const uint8_t*>(t.raw_data());
  std::vector<int64_t> idx(size_t(nd), 0);
  const int64_t inner = nd ? t.shape()[size_t(nd - 1)] : 1;
  const int64_t istride = nd ? t.strides()[size_t(nd - 1)] : 1;
  uint8_t* dst = out.data();
  for (;;) {
    int64_t off = 0;
    for (int d = 0; d + 1 < nd; ++d) off += idx[size_t(d)] * t.strides()[size_t(d)];
    const uint8_t* src = base + off * int64_t(es);
    if (istride == 1) {
      std::memcpy(dst, src, size_t(inner) * es);
      dst += size_t(inner) * es;
    } else {
      for (int64_t i = 0; i < inner; ++i, dst += es) std::memcpy(dst, src + i * istride * int64_t(es), es);
    }
    int d = nd - 2;
    for (; d >= 0; --d) {
      if (++idx[size_t(d)] < t.shape()[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
    if (d < 0) break;
  }
  return out;
}

// A contiguous host tensor with the values of t (t itself when it already is one).
inline Tensor to_host_contiguous(const Tensor& t) {
  if (t.device().is_cpu()) return t;
  Backend* b = backend_slot(t.device().type);
  MC_CHECK(b, "no backend for device ", t.device().str());
  Tensor src = t;
  if (!t.is_contiguous()) {
    src = Tensor::empty(t.shape(), t.dtype(), t.device());
    b->copy(src, t);
  }
  Tensor h = Tensor::empty(t.shape(), t.dtype(), Device::cpu());
  b->copy(h, src);
  return h;
}

}  // namespace safetensors_detail

// Writes `tensors` (in this order) and `metadata` to `path` atomically. See the top of this file.
inline void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  namespace sd = safetensors_detail;
  sd::ojson h = sd::ojson::object();
  if (!metadata.empty()) {
    sd::ojson m = sd::ojson::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  std::unordered_set<std::string> seen;
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  uint64_t pos = 0;
  for (const auto& [name, t] : tensors) {
    MC_CHECK(!name.empty(), path, ": cannot save a tensor with an empty name");
    MC_CHECK(name != "__metadata__", path, ": '__metadata__' is reserved and cannot name a tensor");
    MC_CHECK(seen.insert(name).second, path, ": tensor name '", name, "' appears twice");
    MC_CHECK(t.defined(), path, ": tensor '", name, "' is undefined");
    Tensor c = sd::to_host_contiguous(t);
    const uint64_t nbytes = uint64_t(c.numel()) * c.element_size();
    sd::ojson shape = sd::ojson::array();
    for (int64_t d : c.shape()) shape.push_back(d);
    h[name] = {{"dtype", sd::dtype_str(c.dtype())}, {"shape", std::move(shape)}, {"data_offsets", {pos, pos + nbytes}}};
    pos += nbytes;
    host.push_back(std::move(c));
  }
  std::string text;
  try {
    text = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": cannot write the safetensors header (", e.what(), "; names and metadata must be UTF-8)");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t n = text.size();

  write_file_atomic(path, [&](std::FILE* f) {
    write_bytes(f, &n, 8, path);
    write_bytes(f, text.data(), text.size(), path);
    for (size_t i = 0; i < host.size(); ++i) {
      const Tensor& c = host[i];
      if (c.numel() == 0) continue;
      if (c.is_contiguous()) {
        write_bytes(f, c.raw_data(), size_t(c.numel()) * c.element_size(), path);
      } else {
        std::vector<uint8_t> bytes = sd::host_bytes_strided(c);
        write_bytes(f, bytes.data(), bytes.size(), path);
      }
    }
  });
}

// Every tensor of the file, in header order: views of the mapping, or copies when copy = true.
inline std::vector<std::pair<std::string, Tensor>> load_safetensors(const std::string& path, bool copy = false) {
  SafetensorsFile f = SafetensorsFile::open(path);
  std::vector<std::pair<std::string, Tensor>> r;
  r.reserve(f.size());
  for (const SafetensorsInfo& e : f.entries()) r.emplace_back(e.name, f.get(e.name, copy));
  return r;
}

}  // namespace mc::io
