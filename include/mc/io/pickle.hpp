// mc/io/pickle.hpp — a safe Python pickle reader for PyTorch checkpoints.
//
// unpickle() runs the pickle opcodes of protocols 0-5 as a data-only virtual machine: it builds Values
// (none, bool, int, float, str, bytes, list, tuple, dict, set, tensor, storage, global, object) and never
// executes anything. A GLOBAL / STACK_GLOBAL is resolved only against a fixed allow-list of inert names —
// collections.OrderedDict, torch's tensor/parameter rebuild functions, torch.*Storage types, torch dtype
// objects, torch.Size, torch.device, argparse.Namespace, builtins set/frozenset/slice, _codecs.encode (for
// protocol-2 bytes), numpy scalar/dtype/ndarray reconstruction and torch.jit._pickle's list helpers; with
// Options::allow_torchscript also the `__torch__.*` classes of TorchScript archives, which become inert
// objects whose BUILD state is kept. Any other global throws mc::Error ("pickle: global 'os.system' is not
// allowed"). Calls of allowed globals (REDUCE, NEWOBJ) are interpreted here, by name, as data constructors:
// _rebuild_tensor_v2(storage, offset, size, stride, ...) makes a Tensor value over a Storage value that
// the caller's persistent_load hook returned; the caller later materialises it (see torch_load.hpp).
//
// OmegaConf configs (Hydra training scripts such as CXR-CLIP's save `"config": cfg` beside the weights) are
// read too. What their pickles hold, checked on files written by omegaconf 2.1, 2.3 and 2.4, protocols 0-5:
//  * `omegaconf.dictconfig.DictConfig`, `omegaconf.listconfig.ListConfig`, `omegaconf.base.Metadata`,
//    `omegaconf.base.ContainerMetadata` and the value nodes `omegaconf.nodes.AnyNode` (StringNode,
//    IntegerNode, FloatNode, BooleanNode, ... in structured configs), created by NEWOBJ (protocol >= 2) or
//    `copyreg._reconstructor(cls, object, None)` (protocols 0-1; allowed for these classes and for
//    argparse.Namespace only), then BUILD with an attribute dict. Any class name
//    `omegaconf[.module].ClassName` becomes an inert object that keeps that dict as its state (config_value
//    / config_get below read it); calling such a class with REDUCE is an error.
//  * type objects held as data (a node's ref_type / object_type / key_type / element_type): `typing.Any`
//    (and the bare typing.List / Dict / Tuple / Optional / Union), `builtins.dict`, `list`, `tuple`, `str`,
//    `int`, `float`, `bool`, `bytes`, `object` (protocols < 3 write int and str as `__builtin__.long` and
//    `__builtin__.unicode`; these names are mapped back as Python does). They are opaque Global values: no
//    REDUCE or NEWOBJ may call them.
//  * `collections.defaultdict(dict)` (a container's resolver cache): the one call OmegaConf's pickles make;
//    it is read as an empty dict whose items follow, and only None or an allowed type may be its factory.
// Globals of user code stay refused — e.g. the dataclass of a structured config (`__main__.MyConfig`) or the
// enum class of an EnumNode — as does everything else (os.system, builtins.eval, builtins.getattr, ...).
//
// Values live in a Heap (an arena): containers hold raw pointers to other values of the same heap, so
// shared references and even cycles built through the memo are represented faithfully, and freeing the
// heap never recurses. Every read is bounds-checked; the number of values and memo entries is limited
// against hostile input; errors name the source (`what`) and the byte offset of the failing opcode.
#pragma once
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/io/npy.hpp"

namespace mc::io::pickle {

enum class Kind : uint8_t {
  None, Bool, Int, BigInt, Float, String, Bytes, List, Tuple, Dict, Set, Tensor, Storage, Global, Object
};

inline const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::BigInt: return "int (big)";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return "dict";
    case Kind::Set: return "set";
    case Kind::Tensor: return "tensor";
    case Kind::Storage: return "storage";
    case Kind::Global: return "global";
    case Kind::Object: return "object";
  }
  return "?";
}

// What an allow-listed global stands for.
enum class GlobalRole : uint8_t {
  OrderedDict, RebuildTensor, RebuildTensorV2, RebuildParameter, RebuildParameterWithState, RebuildFromTypeV2,
  TensorType, Size, Device, DTypeObject, StorageType, Namespace, Set, FrozenSet, Slice, CodecsEncode,
  NumpyScalar, NumpyDType, NumpyReconstruct, NumpyNdarray, JitIdentity, TorchScriptClass,
  TypeRef,              // a type object held as data (typing.Any, builtins.dict, ...): never called
  DefaultDict,          // collections.defaultdict: an empty dict
  CopyregReconstructor, // copyreg._reconstructor(cls, object, None): protocols 0-1 instantiation
  OmegaConfClass        // omegaconf.*: an inert object whose BUILD state is kept
};

struct Value;

// A storage named by a persistent id: ('storage', <torch.XStorage>, key, location, numel[, view_metadata]).
struct StorageInfo {
  std::string key;               // the archive's storage key
  std::string type_name;         // e.g. "torch.FloatStorage"
  bool supported = false;        // maps to an mc dtype
  DType dtype = DType::U8;       // valid when supported
  size_t element_size = 0;       // 0 when unknown
  int64_t numel = 0;             // elements
  std::string location;          // "cpu", "cuda:0", ...
  Value* base = nullptr;         // legacy storage views: the storage this one is a slice of
  int64_t base_offset = 0;       // ... starting at this element
  std::shared_ptr<Storage> data; // set by the loader (of the base storage for a view)
};

// A tensor built by a rebuild function: a view over a Storage value.
struct TensorInfo {
  Value* storage = nullptr;  // Kind::Storage
  int64_t offset = 0;        // elements, relative to the storage value
  Shape shape, strides;
  bool requires_grad = false;
  bool is_parameter = false;
  Tensor tensor;             // set by the loader
  std::string error;         // why `tensor` could not be made (unsupported dtype), if so
};

struct Value {
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;                                    // Int; Global: its GlobalRole
  double f = 0;
  std::string s;                                    // String (UTF-8), Bytes, BigInt (two's complement,
                                                    // little endian), Global ("module.name"), Object (class)
  std::vector<Value*> items;                        // List, Tuple, Set; Object: constructor arguments
  std::vector<std::pair<Value*, Value*>> entries;   // Dict, in insertion order
  Value* state = nullptr;                           // Object, Dict: the BUILD state
  std::unique_ptr<std::unordered_map<std::string, size_t>> index;  // Dict: hashed key -> entry
  std::unique_ptr<TensorInfo> tensor_info;          // Tensor
  std::unique_ptr<StorageInfo> storage_info;        // Storage

  bool is(Kind k) const { return kind == k; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_tensor() const { return kind == Kind::Tensor; }
  bool is_sequence() const { return kind == Kind::List || kind == Kind::Tuple; }

  int64_t as_int(const std::string& what = "pickle") const {
    if (kind == Kind::Int) return i;
    if (kind == Kind::Bool) return b;
    if (kind == Kind::BigInt) fail(what, ": integer does not fit in 64 bits");
    fail(what, ": expected an int, got ", kind_name(kind));
  }
  double as_float(const std::string& what = "pickle") const {
    if (kind == Kind::Float) return f;
    if (kind == Kind::Int) return double(i);
    if (kind == Kind::Bool) return b;
    fail(what, ": expected a float, got ", kind_name(kind));
  }
  bool as_bool(const std::string& what = "pickle") const {
    MC_CHECK(kind == Kind::Bool, what, ": expected a bool, got ", kind_name(kind));
    return b;
  }
  const std::string& as_string(const std::string& what = "pickle") const {
    MC_CHECK(kind == Kind::String, what, ": expected a str, got ", kind_name(kind));
    return s;
  }
  // The materialised tensor; throws when its dtype is not supported by mc or it was never loaded.
  const Tensor& tensor(const std::string& what = "pickle") const {
    MC_CHECK(kind == Kind::Tensor, what, ": expected a tensor, got ", kind_name(kind));
    MC_CHECK(tensor_info->error.empty(), what, ": ", tensor_info->error);
    MC_CHECK(tensor_info->tensor.defined(), what, ": tensor data was not loaded");
    return tensor_info->tensor;
  }
  // Dict lookup by string key; nullptr when absent or not a dict.
  const Value* get(std::string_view key) const;
  size_t size() const { return kind == Kind::Dict ? entries.size() : items.size(); }
};

// The arena that owns all values of one or more unpickled streams.
class Heap {
 public:
  explicit Heap(size_t max_values = size_t(1) << 23) : max_values_(max_values) {}
  Heap(const Heap&) = delete;
  Heap& operator=(const Heap&) = delete;

  Value* make(Kind k) {
    MC_CHECK(values_.size() < max_values_, "pickle: more than ", max_values_, " values (hostile or corrupt input?)");
    values_.emplace_back();
    Value* v = &values_.back();
    v->kind = k;
    if (k == Kind::Dict) v->index = std::make_unique<std::unordered_map<std::string, size_t>>();
    if (k == Kind::Tensor) v->tensor_info = std::make_unique<TensorInfo>();
    if (k == Kind::Storage) v->storage_info = std::make_unique<StorageInfo>();
    return v;
  }
  Value* make_string(Kind k, std::string s) {
    Value* v = make(k);
    v->s = std::move(s);
    return v;
  }
  Value* make_int(int64_t x) {
    Value* v = make(Kind::Int);
    v->i = x;
    return v;
  }
  std::deque<Value>& values() { return values_; }
  const std::deque<Value>& values() const { return values_; }

 private:
  std::deque<Value> values_;
  size_t max_values_;
};

namespace detail {

// A canonical string for a hashable key (Python equality: True == 1 == 1.0). Returns false for
// unhashable keys (list, dict, set).
inline bool hash_key(const Value* k, std::string& out, int depth = 0) {
  if (depth > 32 || out.size() > (size_t(1) << 16)) return false;  // also bounds shared-tuple blow-up
  switch (k->kind) {
    case Kind::None: out += 'N'; return true;
    case Kind::Bool: out += k->b ? "i1;" : "i0;"; return true;
    case Kind::Int: out += 'i'; out += std::to_string(k->i); out += ';'; return true;
    case Kind::BigInt: out += 'I'; out += std::to_string(k->s.size()); out += ':'; out += k->s; return true;
    case Kind::Float: {
      double f = k->f;
      if (std::isfinite(f) && f == std::floor(f) && std::fabs(f) < 9.2e18) {
        out += 'i';
        out += std::to_string(int64_t(f));
        out += ';';
      } else {
        uint64_t bits;
        std::memcpy(&bits, &f, 8);
        out += 'f';
        out += std::to_string(bits);
        out += ';';
      }
      return true;
    }
    case Kind::String: out += 's'; out += std::to_string(k->s.size()); out += ':'; out += k->s; return true;
    case Kind::Bytes: out += 'b'; out += std::to_string(k->s.size()); out += ':'; out += k->s; return true;
    case Kind::Global: out += 'g'; out += std::to_string(k->s.size()); out += ':'; out += k->s; return true;
    case Kind::Tuple:
      out += "t(";
      for (const Value* x : k->items)
        if (!hash_key(x, out, depth + 1)) return false;
      out += ')';
      return true;
    case Kind::Tensor: case Kind::Storage: case Kind::Object: {
      out += 'p';
      out += std::to_string(reinterpret_cast<uintptr_t>(k));
      out += ';';
      return true;
    }
    case Kind::List: case Kind::Dict: case Kind::Set: return false;
  }
  return false;
}

inline std::string string_key(std::string_view key) {
  std::string out = "s";
  out += std::to_string(key.size());
  out += ':';
  out += key;
  return out;
}

}  // namespace detail

inline const Value* Value::get(std::string_view key) const {
  if (kind != Kind::Dict || !index) return nullptr;
  auto it = index->find(detail::string_key(key));
  return it == index->end() ? nullptr : entries[it->second].second;
}

// d[k] = v with Python dict semantics (an existing key keeps its position and gets the new value).
inline void dict_set(Value* d, Value* k, Value* v, const std::string& what) {
  MC_CHECK(d->kind == Kind::Dict, what, ": cannot set an item on a ", kind_name(d->kind));
  std::string h;
  MC_CHECK(detail::hash_key(k, h), what, ": unhashable dict key of type ", kind_name(k->kind));
  auto [it, inserted] = d->index->emplace(std::move(h), d->entries.size());
  if (inserted) d->entries.emplace_back(k, v);
  else d->entries[it->second].second = v;
}

// A short human-readable rendering of a value, for error messages and debugging (depth- and size-limited).
inline void repr(const Value* v, std::string& out, int depth = 0) {
  if (out.size() > 400) { out += "..."; return; }
  if (depth > 6) { out += "..."; return; }
  switch (v->kind) {
    case Kind::None: out += "None"; return;
    case Kind::Bool: out += v->b ? "True" : "False"; return;
    case Kind::Int: out += std::to_string(v->i); return;
    case Kind::BigInt: out += "<big int>"; return;
    case Kind::Float: out += std::to_string(v->f); return;
    case Kind::String: out += '\''; out += v->s.substr(0, 80); out += '\''; return;
    case Kind::Bytes: out += "<bytes of length " + std::to_string(v->s.size()) + ">"; return;
    case Kind::List: case Kind::Tuple: case Kind::Set: {
      out += v->kind == Kind::List ? '[' : v->kind == Kind::Tuple ? '(' : '{';
      for (size_t k = 0; k < v->items.size() && k < 16; ++k) {
        if (k) out += ", ";
        repr(v->items[k], out, depth + 1);
      }
      if (v->items.size() > 16) out += ", ...";
      out += v->kind == Kind::List ? ']' : v->kind == Kind::Tuple ? ')' : '}';
      return;
    }
    case Kind::Dict: {
      out += '{';
      for (size_t k = 0; k < v->entries.size() && k < 16; ++k) {
        if (k) out += ", ";
        repr(v->entries[k].first, out, depth + 1);
        out += ": ";
        repr(v->entries[k].second, out, depth + 1);
      }
      if (v->entries.size() > 16) out += ", ...";
      out += '}';
      return;
    }
    case Kind::Tensor: {
      const TensorInfo& t = *v->tensor_info;
      out += "tensor(";
      out += t.storage ? t.storage->storage_info->type_name : "?";
      out += ", " + shape_str(t.shape) + ")";
      return;
    }
    case Kind::Storage: out += "storage(" + v->storage_info->type_name + ", key '" + v->storage_info->key + "')"; return;
    case Kind::Global: out += "<global " + v->s + ">"; return;
    case Kind::Object: out += "<" + v->s + " object>"; return;
  }
}
inline std::string repr(const Value* v) {
  std::string s;
  repr(v, s);
  return s;
}

// torch storage type name (without "torch.") -> element size and mc dtype, if any.
struct StorageTypeDesc {
  size_t element_size;  // 0: unknown
  bool supported;
  DType dtype;
  const char* torch_dtype;
};
inline StorageTypeDesc storage_type_desc(std::string_view name) {
  struct Row { const char* name; StorageTypeDesc d; };
  static const Row rows[] = {
      {"FloatStorage", {4, true, DType::F32, "float32"}},        {"DoubleStorage", {8, true, DType::F64, "float64"}},
      {"HalfStorage", {2, true, DType::F16, "float16"}},         {"BFloat16Storage", {2, true, DType::BF16, "bfloat16"}},
      {"LongStorage", {8, true, DType::I64, "int64"}},           {"IntStorage", {4, true, DType::I32, "int32"}},
      {"ByteStorage", {1, true, DType::U8, "uint8"}},            {"BoolStorage", {1, true, DType::Bool, "bool"}},
      {"CharStorage", {1, false, DType::U8, "int8"}},            {"ShortStorage", {2, false, DType::U8, "int16"}},
      {"ComplexFloatStorage", {8, false, DType::U8, "complex64"}},
      {"ComplexDoubleStorage", {16, false, DType::U8, "complex128"}},
      {"QInt8Storage", {1, false, DType::U8, "qint8"}},          {"QUInt8Storage", {1, false, DType::U8, "quint8"}},
      {"QInt32Storage", {4, false, DType::U8, "qint32"}},        {"QUInt4x2Storage", {1, false, DType::U8, "quint4x2"}},
      {"QUInt2x4Storage", {1, false, DType::U8, "quint2x4"}},
  };
  for (const Row& r : rows)
    if (name == r.name) return r.d;
  return {0, false, DType::U8, nullptr};
}

struct Options {
  // Accept `__torch__.*` classes (TorchScript archives) as inert objects.
  bool allow_torchscript = false;
  // Resolves a persistent id (BINPERSID / PERSID); without it, persistent ids are an error.
  std::function<Value*(Heap&, Value* pid)> persistent_load;
  size_t max_memo = size_t(1) << 22;
};

namespace detail {

inline bool is_identifier_path(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  return true;
}

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// The allow-list. Returns the role of `module.name`, or fails naming it.
inline GlobalRole resolve_global(std::string module, std::string name, const Options& opt, std::string& full,
                                 const std::string& what) {
  // Protocol 0-2 pickles use Python 2 names (fix_imports); map them back as Python's unpickler does.
  if (module == "__builtin__") module = "builtins";
  if (module == "copy_reg") module = "copyreg";
  if (module == "builtins" && name == "long") name = "int";
  if (module == "builtins" && (name == "unicode" || name == "basestring")) name = "str";
  full = module + "." + name;
  static const std::pair<const char*, GlobalRole> exact[] = {
      {"collections.OrderedDict", GlobalRole::OrderedDict},
      {"torch._utils._rebuild_tensor", GlobalRole::RebuildTensor},
      {"torch._utils._rebuild_tensor_v2", GlobalRole::RebuildTensorV2},
      {"torch._utils._rebuild_parameter", GlobalRole::RebuildParameter},
      {"torch._utils._rebuild_parameter_with_state", GlobalRole::RebuildParameterWithState},
      {"torch._tensor._rebuild_from_type_v2", GlobalRole::RebuildFromTypeV2},
      {"torch.Tensor", GlobalRole::TensorType},
      {"torch.nn.parameter.Parameter", GlobalRole::TensorType},
      {"torch.Size", GlobalRole::Size},
      {"torch.device", GlobalRole::Device},
      {"argparse.Namespace", GlobalRole::Namespace},
      {"builtins.set", GlobalRole::Set},
      {"builtins.frozenset", GlobalRole::FrozenSet},
      {"builtins.slice", GlobalRole::Slice},
      {"_codecs.encode", GlobalRole::CodecsEncode},
      {"numpy.core.multiarray.scalar", GlobalRole::NumpyScalar},
      {"numpy._core.multiarray.scalar", GlobalRole::NumpyScalar},
      {"numpy.dtype", GlobalRole::NumpyDType},
      {"numpy.core.multiarray._reconstruct", GlobalRole::NumpyReconstruct},
      {"numpy._core.multiarray._reconstruct", GlobalRole::NumpyReconstruct},
      {"numpy.ndarray", GlobalRole::NumpyNdarray},
      {"torch.jit._pickle.restore_type_tag", GlobalRole::JitIdentity},
      {"torch.jit._pickle.build_intlist", GlobalRole::JitIdentity},
      {"torch.jit._pickle.build_doublelist", GlobalRole::JitIdentity},
      {"torch.jit._pickle.build_boollist", GlobalRole::JitIdentity},
      {"torch.jit._pickle.build_tensorlist", GlobalRole::JitIdentity},
      {"collections.defaultdict", GlobalRole::DefaultDict},
      {"copyreg._reconstructor", GlobalRole::CopyregReconstructor},
      {"builtins.dict", GlobalRole::TypeRef},
      {"builtins.list", GlobalRole::TypeRef},
      {"builtins.tuple", GlobalRole::TypeRef},
      {"builtins.str", GlobalRole::TypeRef},
      {"builtins.int", GlobalRole::TypeRef},
      {"builtins.float", GlobalRole::TypeRef},
      {"builtins.bool", GlobalRole::TypeRef},
      {"builtins.bytes", GlobalRole::TypeRef},
      {"builtins.object", GlobalRole::TypeRef},
      {"typing.Any", GlobalRole::TypeRef},
      {"typing.List", GlobalRole::TypeRef},
      {"typing.Dict", GlobalRole::TypeRef},
      {"typing.Tuple", GlobalRole::TypeRef},
      {"typing.Optional", GlobalRole::TypeRef},
      {"typing.Union", GlobalRole::TypeRef},
  };
  for (const auto& [n, role] : exact)
    if (full == n) return role;
  static const char* dtypes[] = {
      "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long", "int32", "int",
      "int16", "short", "int8", "uint8", "bool", "complex64", "cfloat", "complex128", "cdouble", "complex32",
      "chalf", "uint16", "uint32", "uint64", "qint8", "quint8", "qint32", "float8_e4m3fn", "float8_e5m2"};
  if (module == "torch")
    for (const char* d : dtypes)
      if (name == d) return GlobalRole::DTypeObject;
  if (module == "torch" || module == "torch.cuda") {  // storage types; old files name CUDA ones torch.cuda.X
    if (name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0 && is_identifier_path(name) &&
        name.find('.') == std::string::npos)
      return GlobalRole::StorageType;
  }
  if (opt.allow_torchscript && (module == "__torch__" || starts_with(module, "__torch__.")) &&
      is_identifier_path(full))
    return GlobalRole::TorchScriptClass;
  // OmegaConf classes: `omegaconf[.module].ClassName` (a class name, not a function or a dotted path).
  if ((module == "omegaconf" || starts_with(module, "omegaconf.")) && is_identifier_path(module) &&
      is_identifier_path(name) && name.find('.') == std::string::npos && std::isupper(static_cast<unsigned char>(name[0])))
    return GlobalRole::OmegaConfClass;
  fail(what, ": pickle: global '", full, "' is not allowed (only plain data and tensors are read)");
}

// Appends code point cp as UTF-8.
inline void put_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  }
}

// Decodes UTF-8 into code points; false on malformed input.
inline bool utf8_to_latin1(const std::string& s, std::string& out) {
  for (size_t k = 0; k < s.size();) {
    uint8_t c = uint8_t(s[k]);
    if (c < 0x80) {
      out += char(c);
      ++k;
    } else if ((c & 0xe0) == 0xc0 && k + 1 < s.size() && (uint8_t(s[k + 1]) & 0xc0) == 0x80) {
      uint32_t cp = (uint32_t(c & 0x1f) << 6) | (uint8_t(s[k + 1]) & 0x3f);
      if (cp > 0xff || cp < 0x80) return false;
      out += char(cp);
      k += 2;
    } else {
      return false;
    }
  }
  return true;
}

class Machine {
 public:
  Machine(Heap& heap, const uint8_t* data, size_t size, size_t pos, const Options& opt, const std::string& what)
      : heap_(heap), d_(data), n_(size), pos_(pos), opt_(opt), what_(what) {}

  Value* run() {
    for (;;) {
      op_pos_ = pos_;
      uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          uint8_t v = u8();
          check(v <= 5, "unsupported pickle protocol ", int(v));
          break;
        }
        case 0x95: {  // FRAME: a length prefix for the following opcodes; transparent here
          uint64_t len = u64();
          check(len <= n_ - pos_, "frame of ", len, " bytes runs past the end of the data");
          break;
        }
        case '.': {  // STOP
          Value* r = pop();
          return r;
        }
        // ---- marks and stack manipulation
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '0':                                          // POP
          if (stack_.size() > floor()) stack_.pop_back();
          else pop_mark();
          break;
        case '1': pop_mark(); break;                       // POP_MARK
        case '2': push(top()); break;                      // DUP
        // ---- constants
        case 'N': push(heap_.make(Kind::None)); break;
        case 0x88: push(make_bool(true)); break;   // NEWTRUE
        case 0x89: push(make_bool(false)); break;  // NEWFALSE
        case 'K': push(heap_.make_int(u8())); break;                            // BININT1
        case 'M': push(heap_.make_int(u16())); break;                           // BININT2
        case 'J': push(heap_.make_int(int32_t(u32()))); break;                  // BININT
        case 0x8a: { size_t k = u8(); push(make_long(bytes(k), k)); break; }    // LONG1
        case 0x8b: {                                                            // LONG4
          int32_t k = int32_t(u32());
          check(k >= 0, "negative LONG4 length");
          push(make_long(bytes(size_t(k)), size_t(k)));
          break;
        }
        case 'I': {  // INT (text); "00" / "01" are False / True
          std::string line = read_line();
          if (line == "00" || line == "01") push(make_bool(line == "01"));
          else push(decimal_long(line));
          break;
        }
        case 'L': {  // LONG (text)
          std::string line = read_line();
          if (!line.empty() && line.back() == 'L') line.pop_back();
          push(decimal_long(line));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          const uint8_t* p = bytes(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = bits << 8 | p[k];
          Value* v = heap_.make(Kind::Float);
          std::memcpy(&v->f, &bits, 8);
          push(v);
          break;
        }
        case 'F': {  // FLOAT (text)
          std::string line = read_line();
          Value* v = heap_.make(Kind::Float);
          auto r = std::from_chars(line.data(), line.data() + line.size(), v->f);
          check(r.ec == std::errc() && r.ptr == line.data() + line.size(), "malformed FLOAT '", line, "'");
          push(v);
          break;
        }
        // ---- strings and bytes
        case 'X': { size_t k = u32(); push_str(Kind::String, k); break; }             // BINUNICODE
        case 0x8c: { size_t k = u8(); push_str(Kind::String, k); break; }            // SHORT_BINUNICODE
        case 0x8d: { push_str(Kind::String, size_len(u64())); break; }               // BINUNICODE8
        case 'T': { int32_t k = int32_t(u32()); check(k >= 0, "negative BINSTRING length");
                    push_str(Kind::String, size_t(k)); break; }                      // BINSTRING
        case 'U': { size_t k = u8(); push_str(Kind::String, k); break; }             // SHORT_BINSTRING
        case 'B': { size_t k = u32(); push_str(Kind::Bytes, k); break; }             // BINBYTES
        case 'C': { size_t k = u8(); push_str(Kind::Bytes, k); break; }              // SHORT_BINBYTES
        case 0x8e: { push_str(Kind::Bytes, size_len(u64())); break; }               // BINBYTES8
        case 0x96: { push_str(Kind::Bytes, size_len(u64())); break; }               // BYTEARRAY8
        case 'S': push(heap_.make_string(Kind::String, unquote(read_line()))); break;  // STRING (text, quoted)
        case 'V': push(heap_.make_string(Kind::String, raw_unicode_escape(read_line()))); break;  // UNICODE
        // ---- containers
        case ']': push(heap_.make(Kind::List)); break;   // EMPTY_LIST
        case ')': push(heap_.make(Kind::Tuple)); break;  // EMPTY_TUPLE
        case '}': push(heap_.make(Kind::Dict)); break;   // EMPTY_DICT
        case 0x8f: push(heap_.make(Kind::Set)); break;   // EMPTY_SET
        case 'l': { Value* v = heap_.make(Kind::List); v->items = pop_mark(); push(v); break; }   // LIST
        case 't': { Value* v = heap_.make(Kind::Tuple); v->items = pop_mark(); push(v); break; }  // TUPLE
        case 0x91: { Value* v = heap_.make(Kind::Set); v->items = pop_mark(); push(v); break; }   // FROZENSET
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          size_t k = size_t(op - 0x84);
          check(stack_.size() >= floor() + k, "stack underflow");
          Value* v = heap_.make(Kind::Tuple);
          v->items.assign(stack_.end() - long(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(v);
          break;
        }
        case 'd': {  // DICT
          std::vector<Value*> kv = pop_mark();
          check(kv.size() % 2 == 0, "DICT with an odd number of items");
          Value* v = heap_.make(Kind::Dict);
          for (size_t k = 0; k < kv.size(); k += 2) dict_set(v, kv[k], kv[k + 1], where());
          push(v);
          break;
        }
        case 'a': {  // APPEND
          Value* x = pop();
          Value* l = top();
          check(l->kind == Kind::List, "APPEND to a ", kind_name(l->kind));
          l->items.push_back(x);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Value*> xs = pop_mark();
          Value* l = top();
          check(l->kind == Kind::List, "APPENDS to a ", kind_name(l->kind));
          l->items.insert(l->items.end(), xs.begin(), xs.end());
          break;
        }
        case 0x90: {  // ADDITEMS
          std::vector<Value*> xs = pop_mark();
          Value* s = top();
          check(s->kind == Kind::Set, "ADDITEMS to a ", kind_name(s->kind));
          s->items.insert(s->items.end(), xs.begin(), xs.end());
          break;
        }
        case 's': {  // SETITEM
          Value* v = pop();
          Value* k = pop();
          dict_set(top(), k, v, where());
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Value*> kv = pop_mark();
          check(kv.size() % 2 == 0, "SETITEMS with an odd number of items");
          Value* dct = top();
          for (size_t k = 0; k < kv.size(); k += 2) dict_set(dct, kv[k], kv[k + 1], where());
          break;
        }
        // ---- memo
        case 'p': memo_put(uint64_t(parse_int(read_line()))); break;  // PUT
        case 'q': memo_put(u8()); break;                              // BINPUT
        case 'r': memo_put(u32()); break;                             // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;                     // MEMOIZE
        case 'g': push(memo_get(uint64_t(parse_int(read_line())))); break;  // GET
        case 'h': push(memo_get(u8())); break;                              // BINGET
        case 'j': push(memo_get(u32())); break;                             // LONG_BINGET
        // ---- globals and object construction
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = read_line();
          std::string name = read_line();
          push(make_global(std::move(module), name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Value* name = pop();
          Value* module = pop();
          check(name->kind == Kind::String && module->kind == Kind::String, "STACK_GLOBAL needs two strings");
          push(make_global(module->s, name->s));
          break;
        }
        case 'R': {  // REDUCE
          Value* args = pop();
          Value* fn = pop();
          push(call(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          Value* args = pop();
          Value* cls = pop();
          push(new_object(cls, args));
          break;
        }
        case 0x92: {  // NEWOBJ_EX
          Value* kwargs = pop();
          Value* args = pop();
          Value* cls = pop();
          check(kwargs->kind == Kind::Dict && kwargs->entries.empty(), "NEWOBJ_EX with keyword arguments");
          push(new_object(cls, args));
          break;
        }
        case 'b': {  // BUILD
          Value* st = pop();
          build(top(), st);
          break;
        }
        case 'Q': {  // BINPERSID
          Value* pid = pop();
          push(persistent(pid));
          break;
        }
        case 'P': push(persistent(heap_.make_string(Kind::String, read_line()))); break;  // PERSID
        case 'i': case 'o':
          bad("INST/OBJ opcodes (protocol 0/1 class instantiation) are not supported");
        case 0x82: case 0x83: case 0x84:
          bad("EXT opcodes (the copyreg extension registry) are not supported");
        case 0x97: case 0x98:
          bad("out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported");
        default:
          bad("unknown opcode 0x", hex(op));
      }
    }
  }

  size_t pos() const { return pos_; }

 private:
  // ---- errors and reading
  std::string where() const { return what_ + " (pickle offset " + std::to_string(op_pos_) + ")"; }
  template <class... Parts>
  [[noreturn]] void bad(Parts&&... parts) const {
    fail(where(), ": ", std::forward<Parts>(parts)...);
  }
  template <class... Parts>
  void check(bool cond, Parts&&... parts) const {
    if (!cond) [[unlikely]] bad(std::forward<Parts>(parts)...);
  }
  static std::string hex(uint8_t b) {
    const char* h = "0123456789abcdef";
    return {h[b >> 4], h[b & 15]};
  }
  const uint8_t* bytes(size_t k) {
    check(k <= n_ - pos_, "truncated pickle (needs ", k, " more bytes at offset ", pos_, ", ", n_ - pos_,
          " left)");
    const uint8_t* p = d_ + pos_;
    pos_ += k;
    return p;
  }
  uint8_t u8() { return *bytes(1); }
  uint16_t u16() { const uint8_t* p = bytes(2); return uint16_t(p[0] | p[1] << 8); }
  uint32_t u32() {
    const uint8_t* p = bytes(4);
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  }
  uint64_t u64() { uint64_t lo = u32(); return lo | uint64_t(u32()) << 32; }
  size_t size_len(uint64_t k) {
    check(k <= n_ - pos_, "truncated pickle (a length of ", k, " bytes at offset ", pos_, ", ", n_ - pos_, " left)");
    return size_t(k);
  }
  std::string read_line() {
    const uint8_t* start = d_ + pos_;
    const void* nl = std::memchr(start, '\n', n_ - pos_);
    check(nl != nullptr, "truncated pickle (unterminated text argument)");
    size_t len = size_t(static_cast<const uint8_t*>(nl) - start);
    pos_ += len + 1;
    return std::string(reinterpret_cast<const char*>(start), len);
  }
  // A decimal integer of any size (the text INT / LONG opcodes).
  Value* decimal_long(const std::string& s) {
    size_t k = 0;
    bool neg = false;
    if (k < s.size() && (s[k] == '-' || s[k] == '+')) neg = s[k++] == '-';
    check(k < s.size() && s.size() - k <= 4096, "malformed integer '", s.substr(0, 40), "'");
    std::vector<uint8_t> mag{0};  // little-endian magnitude
    for (; k < s.size(); ++k) {
      check(s[k] >= '0' && s[k] <= '9', "malformed integer '", s.substr(0, 40), "'");
      unsigned carry = unsigned(s[k] - '0');
      for (uint8_t& b : mag) {
        unsigned v = unsigned(b) * 10 + carry;
        b = uint8_t(v & 0xff);
        carry = v >> 8;
      }
      if (carry) mag.push_back(uint8_t(carry));
    }
    mag.push_back(0);  // room for the sign bit
    if (neg) {         // two's complement
      unsigned carry = 1;
      for (uint8_t& b : mag) {
        unsigned v = unsigned(uint8_t(~b)) + carry;
        b = uint8_t(v & 0xff);
        carry = v >> 8;
      }
    }
    return make_long(mag.data(), mag.size());
  }
  int64_t parse_int(const std::string& s) {
    int64_t v = 0;
    const char* b = s.data();
    const char* e = b + s.size();
    if (b != e && *b == '+') ++b;
    auto r = std::from_chars(b, e, v);
    check(r.ec == std::errc() && r.ptr == e && b != e, "malformed or out-of-range integer '", s.substr(0, 40), "'");
    return v;
  }
  // Python-quoted string of the STRING opcode: 'abc' or "abc" with backslash escapes.
  std::string unquote(const std::string& s) {
    check(s.size() >= 2 && (s[0] == '\'' || s[0] == '"') && s.back() == s[0], "malformed STRING argument");
    std::string out;
    for (size_t k = 1; k + 1 < s.size(); ++k) {
      char c = s[k];
      if (c != '\\') { out += c; continue; }
      check(k + 2 < s.size(), "malformed escape in STRING argument");
      char e = s[++k];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
          int v = e - '0';
          for (int m = 0; m < 2 && k + 2 < s.size() && s[k + 1] >= '0' && s[k + 1] <= '7'; ++m) v = v * 8 + (s[++k] - '0');
          out += char(v & 0xff);
          break;
        }
        case 'x': {
          check(k + 3 < s.size(), "malformed \\x escape in STRING argument");
          int v = 0;
          for (int m = 0; m < 2; ++m) {
            char h = s[++k];
            int dgt = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            check(dgt >= 0, "malformed \\x escape in STRING argument");
            v = v * 16 + dgt;
          }
          out += char(v);
          break;
        }
        default: out += e; break;  // \\ \' \" and unknown escapes keep the character
      }
    }
    return out;
  }
  // UNICODE opcode: raw-unicode-escape (\uXXXX, \UXXXXXXXX; other bytes are Latin-1 code points).
  std::string raw_unicode_escape(const std::string& s) {
    std::string out;
    for (size_t k = 0; k < s.size(); ++k) {
      uint8_t c = uint8_t(s[k]);
      if (c == '\\' && k + 1 < s.size() && (s[k + 1] == 'u' || s[k + 1] == 'U')) {
        size_t digits = s[k + 1] == 'u' ? 4 : 8;
        check(k + 1 + digits < s.size(), "malformed \\u escape in UNICODE argument");
        uint32_t cp = 0;
        for (size_t m = 0; m < digits; ++m) {
          char h = s[k + 2 + m];
          int dgt = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
          check(dgt >= 0, "malformed \\u escape in UNICODE argument");
          cp = cp * 16 + uint32_t(dgt);
        }
        check(cp <= 0x10ffff, "code point out of range in UNICODE argument");
        put_utf8(out, cp);
        k += 1 + digits;
      } else {
        put_utf8(out, c);
      }
    }
    return out;
  }

  // ---- stack
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Value* v) { stack_.push_back(v); }
  Value* pop() {
    check(stack_.size() > floor(), "stack underflow (corrupt pickle)");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    check(stack_.size() > floor(), "stack underflow (corrupt pickle)");
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    check(!marks_.empty(), "no MARK on the stack (corrupt pickle)");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + long(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  void memo_put(uint64_t idx) {
    Value* v = top();
    auto it = memo_.find(idx);
    if (it != memo_.end()) {
      it->second = v;
      return;
    }
    check(memo_.size() < opt_.max_memo, "more than ", opt_.max_memo, " memo entries");
    memo_.emplace(idx, v);
  }
  Value* memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    check(it != memo_.end(), "memo key ", idx, " was never stored (corrupt pickle)");
    return it->second;
  }

  // ---- value constructors
  Value* make_bool(bool b) {
    Value* v = heap_.make(Kind::Bool);
    v->b = b;
    return v;
  }
  void push_str(Kind k, size_t len) {
    const uint8_t* p = bytes(len);
    push(heap_.make_string(k, std::string(reinterpret_cast<const char*>(p), len)));
  }
  // Two's complement little-endian integer of k bytes.
  Value* make_long(const uint8_t* p, size_t k) {
    if (k == 0) return heap_.make_int(0);
    bool neg = p[k - 1] & 0x80;
    // drop redundant sign bytes
    while (k > 1 && ((p[k - 1] == 0x00 && !(p[k - 2] & 0x80)) || (p[k - 1] == 0xff && (p[k - 2] & 0x80)))) --k;
    if (k <= 8) {
      uint64_t u = neg ? ~uint64_t(0) : 0;
      for (size_t m = 0; m < k; ++m) {
        u &= ~(uint64_t(0xff) << (8 * m));
        u |= uint64_t(p[m]) << (8 * m);
      }
      return heap_.make_int(int64_t(u));
    }
    return heap_.make_string(Kind::BigInt, std::string(reinterpret_cast<const char*>(p), k));
  }
  Value* make_global(std::string module, const std::string& name) {
    std::string full;
    GlobalRole role = resolve_global(std::move(module), name, opt_, full, where());
    Value* v = heap_.make_string(Kind::Global, std::move(full));
    v->i = int64_t(role);
    return v;
  }
  Value* persistent(Value* pid) {
    check(bool(opt_.persistent_load), "persistent id ", repr(pid), " but no persistent loader");
    Value* v = opt_.persistent_load(heap_, pid);
    check(v != nullptr, "persistent id ", repr(pid), " could not be resolved");
    return v;
  }

  static GlobalRole role_of(const Value* g) { return GlobalRole(g->i); }
  // Globals that stand for a type (a defaultdict's factory may be one of these).
  static bool is_type_like(GlobalRole r) {
    return r == GlobalRole::TypeRef || r == GlobalRole::Set || r == GlobalRole::FrozenSet ||
           r == GlobalRole::OrderedDict || r == GlobalRole::DefaultDict;
  }

  const Value* arg(const Value* args, size_t k, const char* fn) {
    check(k < args->items.size(), fn, ": missing argument ", k);
    return args->items[k];
  }
  int64_t int_arg(const Value* v, const char* fn, const char* what) {
    check(v->kind == Kind::Int, fn, ": ", what, " must be an int, got ", kind_name(v->kind));
    return v->i;
  }
  Shape int_tuple(const Value* v, const char* fn, const char* what) {
    check(v->kind == Kind::Tuple || v->kind == Kind::List, fn, ": ", what, " must be a tuple, got ", kind_name(v->kind));
    check(v->items.size() <= 64, fn, ": ", what, " has more than 64 dimensions");
    Shape s;
    for (const Value* x : v->items) {
      int64_t k = int_arg(x, fn, what);
      check(k >= 0, fn, ": ", what, " holds a negative value ", k);
      s.push_back(k);
    }
    return s;
  }

  // _rebuild_tensor(storage, offset, size, stride): a checked view over a storage value.
  Value* make_tensor(Value* args, const char* fn) {
    Value* storage = args->items.empty() ? nullptr : args->items[0];
    check(storage && storage->kind == Kind::Storage, fn, ": first argument must be a storage, got ",
          storage ? kind_name(storage->kind) : "nothing");
    int64_t offset = int_arg(arg(args, 1, fn), fn, "storage offset");
    Shape shape = int_tuple(arg(args, 2, fn), fn, "size");
    Shape strides = int_tuple(arg(args, 3, fn), fn, "stride");
    check(offset >= 0, fn, ": negative storage offset ", offset);
    check(shape.size() == strides.size(), fn, ": size ", shape_str(shape), " and stride ", shape_str(strides),
          " differ in length");
    const int64_t numel = storage->storage_info->numel;
    // The largest element index the view touches must lie inside the storage.
    bool empty = false;
    for (int64_t d : shape) empty |= d == 0;
    if (empty) {
      check(offset <= numel, fn, ": storage offset ", offset, " exceeds the storage of ", numel, " elements");
    } else {
      // All quantities are non-negative; every step is checked before it could overflow.
      uint64_t last = uint64_t(offset), count = 1;
      bool fits = last < uint64_t(numel);
      for (size_t k = 0; k < shape.size() && fits; ++k) {
        uint64_t span = uint64_t(shape[k] - 1), stride = uint64_t(strides[k]);
        fits = stride == 0 || span <= (uint64_t(numel) - 1 - last) / stride;
        if (fits) last += span * stride;
        check(count <= (uint64_t(1) << 62) / uint64_t(shape[k]), fn, ": size ", shape_str(shape),
              " has too many elements");
        count *= uint64_t(shape[k]);
      }
      check(fits, fn, ": view (offset ", offset, ", size ", shape_str(shape), ", stride ",
            shape_str(strides), ") exceeds its storage '", storage->storage_info->key, "' of ", numel, " elements");
    }
    Value* t = heap_.make(Kind::Tensor);
    TensorInfo& ti = *t->tensor_info;
    ti.storage = storage;
    ti.offset = offset;
    ti.shape = std::move(shape);
    ti.strides = std::move(strides);
    return t;
  }

  Value* object(const std::string& cls, Value* args) {
    Value* o = heap_.make_string(Kind::Object, cls);
    if (args) o->items = args->items;
    return o;
  }

  // REDUCE: the allow-listed callables, interpreted as data constructors.
  Value* call(Value* fn, Value* args, int depth = 0) {
    check(fn->kind == Kind::Global, "REDUCE calls a ", kind_name(fn->kind), ", not an allowed global");
    check(args->kind == Kind::Tuple, "REDUCE arguments must be a tuple, got ", kind_name(args->kind));
    const char* name = fn->s.c_str();
    const size_t nargs = args->items.size();
    switch (role_of(fn)) {
      case GlobalRole::OrderedDict: {
        Value* d = heap_.make(Kind::Dict);
        if (nargs == 1) {  // OrderedDict([(k, v), ...])
          Value* pairs = args->items[0];
          check(pairs->kind == Kind::List || pairs->kind == Kind::Tuple, name, ": argument must be a list of pairs");
          for (Value* p : pairs->items) {
            check((p->kind == Kind::List || p->kind == Kind::Tuple) && p->items.size() == 2, name,
                  ": argument must be a list of pairs");
            dict_set(d, p->items[0], p->items[1], where());
          }
        } else {
          check(nargs == 0, name, ": expected at most 1 argument, got ", nargs);
        }
        return d;
      }
      case GlobalRole::RebuildTensor:
        check(nargs == 4, name, ": expected 4 arguments, got ", nargs);
        return make_tensor(args, name);
      case GlobalRole::RebuildTensorV2: {
        check(nargs == 6 || nargs == 7, name, ": expected 6 or 7 arguments, got ", nargs);
        Value* t = make_tensor(args, name);
        const Value* rg = args->items[4];
        check(rg->kind == Kind::Bool, name, ": requires_grad must be a bool");
        t->tensor_info->requires_grad = rg->b;
        return t;
      }
      case GlobalRole::RebuildParameter:
      case GlobalRole::RebuildParameterWithState: {
        size_t want = role_of(fn) == GlobalRole::RebuildParameter ? 3 : 4;
        check(nargs == want, name, ": expected ", want, " arguments, got ", nargs);
        Value* t = args->items[0];
        check(t->kind == Kind::Tensor, name, ": first argument must be a tensor, got ", kind_name(t->kind));
        check(args->items[1]->kind == Kind::Bool, name, ": requires_grad must be a bool");
        t->tensor_info->requires_grad = args->items[1]->b;
        t->tensor_info->is_parameter = true;
        return t;
      }
      case GlobalRole::RebuildFromTypeV2: {  // (func, new_type, args, state)
        check(nargs == 4, name, ": expected 4 arguments, got ", nargs);
        Value* f = args->items[0];
        Value* type = args->items[1];
        check(depth == 0 && f->kind == Kind::Global && role_of(f) != GlobalRole::RebuildFromTypeV2, name,
              ": first argument must be an allowed rebuild function");
        check(type->kind == Kind::Global && role_of(type) == GlobalRole::TensorType, name,
              ": tensor subclass ", repr(type), " is not supported");
        Value* t = call(f, args->items[2], depth + 1);
        check(t->kind == Kind::Tensor, name, ": rebuild function did not produce a tensor");
        return t;
      }
      case GlobalRole::Size: {
        check(nargs <= 1, name, ": expected at most 1 argument, got ", nargs);
        Value* t = heap_.make(Kind::Tuple);
        if (nargs == 1) {
          check(args->items[0]->is_sequence(), name, ": argument must be a tuple or list");
          for (Value* x : args->items[0]->items) {
            check(x->kind == Kind::Int, name, ": sizes must be ints");
            t->items.push_back(x);
          }
        }
        return t;
      }
      case GlobalRole::Set:
      case GlobalRole::FrozenSet: {
        check(nargs <= 1, name, ": expected at most 1 argument, got ", nargs);
        Value* s = heap_.make(Kind::Set);
        if (nargs == 1) {
          Value* src = args->items[0];
          check(src->kind == Kind::List || src->kind == Kind::Tuple || src->kind == Kind::Set, name,
                ": argument must be a list, tuple or set");
          s->items = src->items;
        }
        return s;
      }
      case GlobalRole::CodecsEncode: {  // _codecs.encode(str, encoding): how protocol 2 writes bytes
        check(nargs == 2 && args->items[0]->kind == Kind::String && args->items[1]->kind == Kind::String, name,
              ": expected (str, encoding)");
        const std::string& enc = args->items[1]->s;
        Value* b = heap_.make(Kind::Bytes);
        if (enc == "latin1" || enc == "latin-1" || enc == "iso-8859-1") {
          check(utf8_to_latin1(args->items[0]->s, b->s), name, ": string is not encodable as latin-1");
        } else {
          check(enc == "utf-8" || enc == "utf8", name, ": unsupported encoding '", enc, "'");
          b->s = args->items[0]->s;
        }
        return b;
      }
      case GlobalRole::NumpyScalar: {
        check(nargs == 1 || nargs == 2, name, ": expected 1 or 2 arguments, got ", nargs);
        if (nargs == 2) {
          Value* dt = args->items[0];
          Value* data = args->items[1];
          if (Value* v = numpy_scalar(dt, data)) return v;
        }
        return object("numpy.scalar", args);
      }
      case GlobalRole::NumpyDType:
        return object("numpy.dtype", args);
      case GlobalRole::NumpyReconstruct:
        return object("numpy.ndarray", args);
      case GlobalRole::JitIdentity:
        check(nargs >= 1, name, ": expected an argument");
        return args->items[0];
      case GlobalRole::Device:
      case GlobalRole::Slice:
      case GlobalRole::Namespace:
      case GlobalRole::TorchScriptClass:
        return object(fn->s, args);
      case GlobalRole::DefaultDict: {  // defaultdict(factory): the items follow; the factory is never called
        check(nargs <= 1, name, ": expected at most 1 argument, got ", nargs);
        if (nargs == 1) {
          const Value* f = args->items[0];
          check(f->kind == Kind::None || (f->kind == Kind::Global && is_type_like(role_of(f))), name,
                ": default factory must be None or an allowed type, got ", repr(f));
        }
        return heap_.make(Kind::Dict);
      }
      case GlobalRole::CopyregReconstructor: {  // _reconstructor(cls, object, None) is object.__new__(cls)
        check(nargs == 3, name, ": expected 3 arguments, got ", nargs);
        const Value* cls = args->items[0];
        const Value* base = args->items[1];
        check(cls->kind == Kind::Global &&
                  (role_of(cls) == GlobalRole::OmegaConfClass || role_of(cls) == GlobalRole::Namespace),
              name, ": class ", repr(cls), " cannot be instantiated here");
        check(base->kind == Kind::Global && base->s == "builtins.object" && args->items[2]->is_none(), name,
              ": only (cls, object, None) is supported, got ", repr(args));
        return object(cls->s, nullptr);
      }
      case GlobalRole::TensorType:
      case GlobalRole::DTypeObject:
      case GlobalRole::StorageType:
      case GlobalRole::NumpyNdarray:
      case GlobalRole::TypeRef:
      case GlobalRole::OmegaConfClass:
        break;
    }
    bad("global '", fn->s, "' cannot be called");
  }

  // NEWOBJ: cls.__new__(cls, *args).
  Value* new_object(Value* cls, Value* args) {
    check(cls->kind == Kind::Global, "NEWOBJ on a ", kind_name(cls->kind), ", not an allowed class");
    check(args->kind == Kind::Tuple, "NEWOBJ arguments must be a tuple");
    switch (role_of(cls)) {
      case GlobalRole::OrderedDict: case GlobalRole::DefaultDict: return heap_.make(Kind::Dict);
      case GlobalRole::Set: case GlobalRole::FrozenSet: return heap_.make(Kind::Set);
      case GlobalRole::Size: return call(cls, args);
      case GlobalRole::Namespace: case GlobalRole::TorchScriptClass: case GlobalRole::Device:
      case GlobalRole::Slice: case GlobalRole::NumpyDType: case GlobalRole::OmegaConfClass:
        return object(cls->s, args);
      case GlobalRole::NumpyNdarray: return object("numpy.ndarray", args);
      default: bad("NEWOBJ: '", cls->s, "' is not a class that can be instantiated here");
    }
  }

  // BUILD: sets the state of an object (kept as data), or an OrderedDict's instance attributes.
  void build(Value* inst, Value* st) {
    switch (inst->kind) {
      case Kind::Object:
        if (inst->state && inst->state->kind == Kind::Dict && st->kind == Kind::Dict) {
          for (auto& [k, v] : st->entries) dict_set(inst->state, k, v, where());
        } else {
          inst->state = st;
        }
        if (inst->s == "numpy.ndarray") ndarray_to_tensor(inst);
        return;
      case Kind::Dict:
      case Kind::Tensor:
        inst->state = st;
        return;
      default: bad("BUILD on a ", kind_name(inst->kind));
    }
  }

  // "<f8" style descriptor of a numpy.dtype object value, or "" when it is not one.
  static std::string numpy_descr(const Value* dt) {
    if (dt->kind != Kind::Object || dt->s != "numpy.dtype" || dt->items.empty() || dt->items[0]->kind != Kind::String)
      return "";
    std::string code = dt->items[0]->s;
    char endian = '|';
    if (dt->state && dt->state->kind == Kind::Tuple && dt->state->items.size() > 1 &&
        dt->state->items[1]->kind == Kind::String && dt->state->items[1]->s.size() == 1)
      endian = dt->state->items[1]->s[0];
    if (endian == '=') endian = '<';  // native: mc reads little-endian hosts only
    if (code.size() == 2 && code[1] == '1') endian = '|';
    return endian + code;
  }

  // numpy scalar(dtype, bytes) -> a float / int / bool value when the dtype is a plain little-endian number.
  Value* numpy_scalar(const Value* dt, const Value* data) {
    std::string descr = numpy_descr(dt);
    if (descr.empty() || data->kind != Kind::Bytes) return nullptr;
    const std::string& b = data->s;
    auto is = [&](const char* d, size_t sz) { return descr == d && b.size() == sz; };
    if (is("<f8", 8)) { Value* v = heap_.make(Kind::Float); std::memcpy(&v->f, b.data(), 8); return v; }
    if (is("<f4", 4)) { float x; std::memcpy(&x, b.data(), 4); Value* v = heap_.make(Kind::Float); v->f = x; return v; }
    if (is("<f2", 2)) { uint16_t h; std::memcpy(&h, b.data(), 2); Value* v = heap_.make(Kind::Float); v->f = f16::to_float(h); return v; }
    if (is("<i8", 8)) { int64_t x; std::memcpy(&x, b.data(), 8); return heap_.make_int(x); }
    if (is("<i4", 4)) { int32_t x; std::memcpy(&x, b.data(), 4); return heap_.make_int(x); }
    if (is("<i2", 2)) { int16_t x; std::memcpy(&x, b.data(), 2); return heap_.make_int(x); }
    if (is("|i1", 1)) { return heap_.make_int(int8_t(b[0])); }
    if (is("|u1", 1)) { return heap_.make_int(uint8_t(b[0])); }
    if (is("<u2", 2)) { uint16_t x; std::memcpy(&x, b.data(), 2); return heap_.make_int(x); }
    if (is("<u4", 4)) { uint32_t x; std::memcpy(&x, b.data(), 4); return heap_.make_int(x); }
    if (is("|b1", 1) && uint8_t(b[0]) <= 1) return make_bool(b[0] != 0);
    return nullptr;
  }

  // A numpy.ndarray whose BUILD state is (version, shape, dtype, is_fortran, raw bytes) becomes a tensor
  // (an owned copy) when its dtype is supported; otherwise it stays an opaque object.
  void ndarray_to_tensor(Value* inst) {
    const Value* st = inst->state;
    if (!st || st->kind != Kind::Tuple || st->items.size() != 5) return;
    const Value* shape_v = st->items[1];
    const Value* data = st->items[4];
    if (!shape_v->is_sequence() || data->kind != Kind::Bytes || st->items[3]->kind != Kind::Bool) return;
    std::string descr = numpy_descr(st->items[2]);
    if (descr.empty()) return;
    Shape shape;
    for (const Value* x : shape_v->items) {
      if (x->kind != Kind::Int || x->i < 0) return;
      shape.push_back(x->i);
    }
    // Reuse the .npy reader: synthesise a header.
    std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (st->items[3]->b ? "True" : "False") +
                         ", 'shape': (";
    for (int64_t d : shape) header += std::to_string(d) + ",";
    header += "), }";
    if (header.size() > 60000) return;
    std::string img = std::string("\x93NUMPY\x01\x00", 8);
    img += char(header.size() & 0xff);
    img += char(header.size() >> 8);
    img += header;
    img += data->s;
    Tensor t;
    try {
      t = parse_npy(reinterpret_cast<const uint8_t*>(img.data()), img.size(), nullptr, where() + ": numpy array");
    } catch (const Error&) {
      return;  // unsupported dtype or inconsistent size: keep the opaque object
    }
    // Turn the object into a tensor value over its own storage.
    Value* sv = heap_.make(Kind::Storage);
    StorageInfo& si = *sv->storage_info;
    si.key = "numpy";
    si.type_name = "numpy.ndarray";
    si.supported = true;
    si.dtype = t.dtype();
    si.element_size = dtype_size(t.dtype());
    si.numel = t.numel();
    si.location = "cpu";
    si.data = t.storage();
    inst->kind = Kind::Tensor;
    inst->tensor_info = std::make_unique<TensorInfo>();
    inst->tensor_info->storage = sv;
    inst->tensor_info->shape = t.shape();
    inst->tensor_info->strides = t.strides();
    inst->tensor_info->tensor = t;
  }

  Heap& heap_;
  const uint8_t* d_;
  size_t n_, pos_, op_pos_ = 0;
  const Options& opt_;
  const std::string& what_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
};

}  // namespace detail

// Unpickles one stream that starts at data[pos]; on return pos is just past its STOP opcode. `what` names
// the source for errors.
inline Value* unpickle(Heap& heap, const uint8_t* data, size_t size, size_t& pos, const Options& opt,
                       const std::string& what) {
  MC_CHECK(pos <= size, what, ": pickle starts past the end of the data");
  detail::Machine m(heap, data, size, pos, opt, what);
  Value* v = m.run();
  pos = m.pos();
  return v;
}

inline Value* unpickle(Heap& heap, const uint8_t* data, size_t size, const Options& opt, const std::string& what) {
  size_t pos = 0;
  return unpickle(heap, data, size, pos, opt, what);
}

// ---- configs saved beside the weights: plain dicts and lists, or OmegaConf containers

// True for an object of an OmegaConf class (DictConfig, ListConfig, a value node, metadata).
inline bool is_omegaconf(const Value* v) {
  return v && v->kind == Kind::Object && detail::starts_with(v->s, "omegaconf.");
}

// A config value as plain data. A DictConfig gives its content, a dict of key -> node; a ListConfig its list of
// nodes (either is None, or a "???" / "${...}" string, when the container is None, missing or an unresolved
// interpolation); a value node (AnyNode, StringNode, ...) gives its value. Anything else is returned as is.
inline const Value* config_value(const Value* v) {
  for (int k = 0; k < 4 && is_omegaconf(v) && v->state && v->state->kind == Kind::Dict; ++k) {
    const Value* inner = v->state->get("_content");
    if (!inner) inner = v->state->get("_val");
    if (!inner) break;
    v = inner;
  }
  return v;
}

// The value at a dotted key ("model.image_encoder.name"; a numeric part may also name an int key or index a
// list) of a config made of plain dicts and lists and OmegaConf containers, unwrapped by config_value ("" gives
// the unwrapped root); nullptr when there is no such key.
inline const Value* config_get(const Value* root, std::string_view dotted) {
  const Value* v = root ? config_value(root) : nullptr;
  if (dotted.empty()) return v;
  size_t pos = 0;
  while (v) {
    const size_t dot = dotted.find('.', pos);
    const std::string_view part = dotted.substr(pos, dot == std::string_view::npos ? std::string_view::npos : dot - pos);
    int64_t idx = 0;
    auto r = std::from_chars(part.data(), part.data() + part.size(), idx);
    const bool numeric = !part.empty() && r.ec == std::errc() && r.ptr == part.data() + part.size();
    const Value* next = nullptr;
    if (v->kind == Kind::Dict) {
      next = v->get(part);
      if (!next && numeric && v->index) {
        auto it = v->index->find("i" + std::to_string(idx) + ";");  // detail::hash_key of an int
        if (it != v->index->end()) next = v->entries[it->second].second;
      }
    } else if (v->is_sequence() && numeric && idx >= 0 && uint64_t(idx) < v->items.size()) {
      next = v->items[size_t(idx)];
    }
    v = next ? config_value(next) : nullptr;
    if (dot == std::string_view::npos) break;
    pos = dot + 1;
  }
  return v;
}

}  // namespace mc::io::pickle
