// mc/io/torch_load.hpp — reading PyTorch checkpoints without Python.
//
// load_torch(path) recognises three formats:
//  * the zip format of torch.save (PyTorch >= 1.6): <archive>/data.pkl is the pickled object, each tensor
//    storage is the entry <archive>/data/<key>; <archive>/byteorder, when present, must say "little";
//  * TorchScript archives (torch.jit.save): the same layout, with the module hierarchy pickled as objects of
//    `__torch__.*` classes (kept as inert objects with their attribute dicts), tensor constants in
//    constants.pkl (storages under <archive>/constants/), and the classes' source in <archive>/code/, from
//    which only the `__parameters__` / `__buffers__` lists are read;
//  * the legacy format (torch.save before 1.6, or _use_new_zipfile_serialization=False): a magic-number
//    pickle, a protocol-version pickle (1001), a sys_info pickle, the main pickle (storages as persistent
//    ids), the list of storage keys, then per key an 8-byte little-endian element count and the raw data.
// Pickles are read by the safe VM of pickle.hpp: only allow-listed globals, nothing is executed. Training
// checkpoints may carry their run's OmegaConf config (Hydra: {"model", "optimizer", "config": cfg, ...}); it
// loads as inert objects that pickle::config_get reads by dotted key.
//
// Tensors honour storage offsets, sizes and strides; all views of one storage share one mc::Storage. CUDA
// storage locations load to the CPU. Uncompressed, suitably aligned storages alias the file mapping
// (zero-copy); the mapping is private copy-on-write, so writes never reach the file. Storage types
// mc has no dtype for (int8, int16, complex, quantized) do not fail the load; such tensors carry an error
// that is thrown when they are used (Value::tensor(), find_state_dict).
//
// find_state_dict(file) returns the (name, tensor) pairs of the model's state dict, in file order: the
// top-level dict when it holds only tensors, else the first such dict found under "state_dict",
// "model_state_dict", "model", "module", "net", ... (searched a few levels deep); for TorchScript archives
// the parameters and buffers of the module tree with dotted names, in the order
// torch.jit.load(path).state_dict() gives them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/io/file.hpp"
#include "mc/io/pickle.hpp"
#include "mc/io/zip.hpp"

namespace mc::io {

enum class TorchFormat { Zip, TorchScript, Legacy };

inline const char* torch_format_name(TorchFormat f) {
  switch (f) {
    case TorchFormat::Zip: return "zip";
    case TorchFormat::TorchScript: return "torchscript";
    case TorchFormat::Legacy: return "legacy";
  }
  return "?";
}

// What the archive's code says about one TorchScript class.
struct TorchScriptClass {
  bool is_module = false;                // declared as a subclass of Module
  std::vector<std::string> parameters;   // __parameters__
  std::vector<std::string> buffers;      // __buffers__
};

struct TorchFile {
  std::string path;
  TorchFormat format = TorchFormat::Zip;
  std::shared_ptr<pickle::Heap> heap;          // owns every value below
  const pickle::Value* root = nullptr;         // the unpickled object (data.pkl / the legacy main pickle)
  const pickle::Value* constants = nullptr;    // TorchScript: constants.pkl (a tuple), when present
  const pickle::Value* sys_info = nullptr;     // legacy: the sys_info dict
  std::map<std::string, TorchScriptClass> classes;  // TorchScript: qualified class name -> declaration
  std::string archive_name;                    // zip formats: the top-level folder of the archive
  std::shared_ptr<MappedFile> file;            // the (copy-on-write) mapping that aligned storages alias
};

namespace torch_detail {

// Builds the Storage value of a persistent id ('storage', <torch.XStorage>, key, location, numel[, view]).
struct PidFields {
  std::string type_name, key, location;
  pickle::StorageTypeDesc desc;
  int64_t numel = 0;
  const pickle::Value* view = nullptr;  // legacy view_metadata, or nullptr
};

inline PidFields parse_pid(const pickle::Value* pid, const std::string& what) {
  using pickle::Kind;
  MC_CHECK(pid->kind == Kind::Tuple && pid->items.size() >= 5 && pid->items[0]->kind == Kind::String &&
               pid->items[0]->s == "storage",
           what, ": unsupported persistent id ", pickle::repr(pid), " (expected a ('storage', ...) tuple)");
  MC_CHECK(pid->items.size() <= 6, what, ": persistent id ", pickle::repr(pid), " has too many fields");
  const pickle::Value* type = pid->items[1];
  MC_CHECK(type->kind == Kind::Global && pickle::GlobalRole(type->i) == pickle::GlobalRole::StorageType, what,
           ": persistent id names ", pickle::repr(type), ", not a torch storage type");
  PidFields f;
  f.type_name = type->s;
  std::string bare = f.type_name.substr(f.type_name.rfind('.') + 1);
  f.desc = pickle::storage_type_desc(bare);
  MC_CHECK(pid->items[2]->kind == Kind::String, what, ": storage key must be a str, got ", pickle::repr(pid->items[2]));
  f.key = pid->items[2]->s;
  MC_CHECK(pid->items[3]->kind == Kind::String, what, ": storage location must be a str");
  f.location = pid->items[3]->s;
  MC_CHECK(pid->items[4]->kind == Kind::Int && pid->items[4]->i >= 0, what, ": storage '", f.key,
           "': size must be a non-negative int");
  f.numel = pid->items[4]->i;
  if (pid->items.size() == 6 && !pid->items[5]->is_none()) f.view = pid->items[5];
  return f;
}

inline std::string unsupported_reason(const pickle::StorageInfo& si) {
  const pickle::StorageTypeDesc d = pickle::storage_type_desc(si.type_name.substr(si.type_name.rfind('.') + 1));
  return "storage type " + si.type_name + (d.torch_dtype ? std::string(" (") + d.torch_dtype + ")" : "") +
         " is not supported by mc (supported: float32, float64, float16, bfloat16, int64, int32, uint8, bool)";
}

inline void check_bool_bytes(const uint8_t* p, size_t n, const std::string& what) {
  for (size_t k = 0; k < n; ++k) MC_CHECK(p[k] <= 1, what, ": bool storage holds a byte other than 0 or 1");
}

// An mc::Storage over bytes owned elsewhere: aliased when aligned for the element type, else copied.
inline std::shared_ptr<Storage> storage_over(const uint8_t* p, size_t nbytes, size_t align,
                                             std::shared_ptr<const void> owner) {
  if (align == 0 || reinterpret_cast<uintptr_t>(p) % align == 0)
    return std::make_shared<Storage>(const_cast<uint8_t*>(p), nbytes, Device::cpu(), std::move(owner));
  auto s = std::make_shared<Storage>(nbytes, Device::cpu());
  if (nbytes) std::memcpy(s->data(), p, nbytes);
  return s;
}

// Turns every unmaterialised Tensor value of the heap into an mc::Tensor (or records why it cannot be).
inline void materialize(pickle::Heap& heap, const std::string& what) {
  for (pickle::Value& v : heap.values()) {
    if (v.kind != pickle::Kind::Tensor) continue;
    pickle::TensorInfo& ti = *v.tensor_info;
    if (ti.tensor.defined() || !ti.error.empty()) continue;
    const pickle::Value* sv = ti.storage;
    const pickle::StorageInfo& si = *sv->storage_info;
    if (!si.supported) {
      ti.error = unsupported_reason(si);
      continue;
    }
    const pickle::StorageInfo& root = si.base ? *si.base->storage_info : si;
    MC_CHECK(root.data, what, ": storage '", root.key, "' has no data");
    int64_t offset = ti.offset + si.base_offset;
    ti.tensor = Tensor::view_of(root.data, si.dtype, ti.shape, ti.strides, offset);
  }
}

// Parses `__parameters__` / `__buffers__` of the classes in one TorchScript code file.
inline void parse_code(const std::string& module, std::string_view src, std::map<std::string, TorchScriptClass>& out) {
  TorchScriptClass* cur = nullptr;
  auto names_in = [&](size_t pos) {
    std::vector<std::string> names;
    size_t open = src.find('[', pos);
    size_t close = open == std::string_view::npos ? open : src.find(']', open);
    if (close == std::string_view::npos) return names;
    std::string_view list = src.substr(open + 1, close - open - 1);
    for (size_t k = 0; k < list.size();) {
      size_t q = list.find('"', k);
      if (q == std::string_view::npos) break;
      size_t e = list.find('"', q + 1);
      if (e == std::string_view::npos) break;
      names.emplace_back(list.substr(q + 1, e - q - 1));
      k = e + 1;
    }
    return names;
  };
  size_t pos = 0;
  while (pos < src.size()) {
    size_t eol = src.find('\n', pos);
    if (eol == std::string_view::npos) eol = src.size();
    std::string_view line = src.substr(pos, eol - pos);
    if (line.substr(0, 6) == "class ") {
      size_t paren = line.find('(');
      size_t colon = line.find(':');
      size_t end = std::min(paren, colon);
      if (end != std::string_view::npos && end > 6) {
        std::string name = module + "." + std::string(line.substr(6, end - 6));
        cur = &out[name];
        if (paren != std::string_view::npos) {
          size_t close = line.find(')', paren);
          std::string_view base = line.substr(paren + 1, close == std::string_view::npos ? 0 : close - paren - 1);
          cur->is_module = base == "Module";
        }
      } else {
        cur = nullptr;
      }
    } else if (cur && line.substr(0, 2) == "  " && line.size() > 2 && line[2] != ' ') {
      std::string_view body = line.substr(2);
      if (body.substr(0, 14) == "__parameters__") cur->parameters = names_in(pos + 2);
      else if (body.substr(0, 11) == "__buffers__") cur->buffers = names_in(pos + 2);
    } else if (!line.empty() && line[0] != ' ' && line[0] != '#') {
      cur = nullptr;  // any other top-level statement ends the class body
    }
    pos = eol + 1;
  }
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline TorchFile load_zip(const std::string& path, std::shared_ptr<MappedFile> file) {
  ZipReader zip(file);
  TorchFile tf;
  tf.path = path;
  tf.file = std::move(file);
  tf.heap = std::make_shared<pickle::Heap>();
  // The archive's top-level folder is the one holding data.pkl.
  std::string prefix;
  bool found = false;
  for (const ZipEntry& e : zip.entries()) {
    size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      prefix = e.name.substr(0, slash + 1);
      found = true;
      break;
    }
  }
  if (!found) {
    for (const ZipEntry& e : zip.entries()) {
      MC_CHECK(!ends_with(e.name, "model.json"), path,
               ": TorchScript archive of the old model.json format (PyTorch < 1.4) is not supported");
    }
    fail(path, ": zip archive has no <archive>/data.pkl entry (not a PyTorch checkpoint)");
  }
  tf.archive_name = prefix.substr(0, prefix.size() - 1);
  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    ZipBytes b = zip.entry_bytes(*bo);
    std::string order(b.view());
    MC_CHECK(order == "little", path, ": checkpoint was written on a '", order,
             "'-endian machine; only little-endian checkpoints are supported");
  }
  bool torchscript = zip.contains(prefix + "constants.pkl");
  for (const ZipEntry& e : zip.entries())
    if (e.name.compare(0, prefix.size() + 5, prefix + "code/") == 0) torchscript = true;
  tf.format = torchscript ? TorchFormat::TorchScript : TorchFormat::Zip;

  // Storages are cached per (directory, key): every view of one storage shares its mc::Storage.
  struct Loaded {
    std::shared_ptr<Storage> data;
    size_t nbytes;
  };
  std::unordered_map<std::string, Loaded> bytes_cache;             // entry name -> bytes
  std::unordered_map<std::string, pickle::Value*> storage_values;  // entry name + type -> storage value
  auto make_loader = [&](const std::string& dir, const std::string& fallback_dir, const std::string& pkl) {
    return [&, dir, fallback_dir, pkl](pickle::Heap& heap, pickle::Value* pid) -> pickle::Value* {
      const std::string what = path + ": " + pkl;
      PidFields f = parse_pid(pid, what);
      MC_CHECK(!f.view, what, ": storage '", f.key, "': storage views are not expected in the zip format");
      std::string entry = prefix + dir + f.key;
      if (!zip.contains(entry) && !fallback_dir.empty() && zip.contains(prefix + fallback_dir + f.key))
        entry = prefix + fallback_dir + f.key;
      std::string cache_key = entry + "\n" + f.type_name;
      if (auto it = storage_values.find(cache_key); it != storage_values.end()) {
        MC_CHECK(it->second->storage_info->numel == f.numel, what, ": storage '", f.key,
                 "' is described with two different sizes");
        return it->second;
      }
      MC_CHECK(zip.contains(entry), what, ": storage '", f.key, "' has no entry '", entry, "' in the archive");
      pickle::Value* sv = heap.make(pickle::Kind::Storage);
      pickle::StorageInfo& si = *sv->storage_info;
      si.key = f.key;
      si.type_name = f.type_name;
      si.supported = f.desc.supported;
      si.dtype = f.desc.dtype;
      si.element_size = f.desc.element_size;
      si.numel = f.numel;
      si.location = f.location;
      auto it = bytes_cache.find(entry);
      if (it == bytes_cache.end()) {
        ZipBytes b = zip.entry_bytes(entry);
        // Align for the widest element type (8 bytes) so that one storage can serve several dtypes.
        it = bytes_cache.emplace(entry, Loaded{storage_over(b.data, b.size, 8, b.owner), b.size}).first;
      }
      if (si.element_size) {
        MC_CHECK(uint64_t(f.numel) <= it->second.nbytes / si.element_size, what, ": storage '", f.key, "' of ",
                 f.numel, " ", f.type_name, " elements needs ", uint64_t(f.numel) * si.element_size,
                 " bytes but its entry '", entry, "' has ", it->second.nbytes, " (truncated or corrupt archive)");
      }
      if (si.supported && si.dtype == DType::Bool)
        check_bool_bytes(static_cast<const uint8_t*>(it->second.data->data()), size_t(f.numel), what + ": storage '" + f.key + "'");
      si.data = it->second.data;
      storage_values.emplace(cache_key, sv);
      return sv;
    };
  };

  pickle::Options opt;
  opt.allow_torchscript = torchscript;
  {
    ZipBytes pkl = zip.entry_bytes(prefix + "data.pkl");
    opt.persistent_load = make_loader("data/", "", "data.pkl");
    tf.root = pickle::unpickle(*tf.heap, pkl.data, pkl.size, opt, path + ": data.pkl");
  }
  if (torchscript) {
    if (const ZipEntry* ce = zip.find(prefix + "constants.pkl")) {
      ZipBytes pkl = zip.entry_bytes(*ce);
      storage_values.clear();
      opt.persistent_load = make_loader("constants/", "data/", "constants.pkl");
      tf.constants = pickle::unpickle(*tf.heap, pkl.data, pkl.size, opt, path + ": constants.pkl");
    }
    const std::string code = prefix + "code/";
    for (const ZipEntry& e : zip.entries()) {
      if (e.name.compare(0, code.size(), code) != 0 || !ends_with(e.name, ".py")) continue;
      std::string module = e.name.substr(code.size(), e.name.size() - code.size() - 3);
      for (char& c : module)
        if (c == '/') c = '.';
      ZipBytes src = zip.entry_bytes(e);
      parse_code(module, src.view(), tf.classes);
    }
  }
  materialize(*tf.heap, path);
  return tf;
}

inline TorchFile load_legacy(const std::string& path, std::shared_ptr<MappedFile> file) {
  using pickle::Kind;
  const uint8_t* d = file->data();
  const size_t n = file->size();
  TorchFile tf;
  tf.path = path;
  tf.file = file;
  tf.format = TorchFormat::Legacy;
  tf.heap = std::make_shared<pickle::Heap>();
  pickle::Heap& heap = *tf.heap;
  MC_CHECK(!(n > 262 && std::memcmp(d + 257, "ustar", 5) == 0), path,
           ": tar-format PyTorch checkpoints (PyTorch < 0.1.10) are not supported");
  MC_CHECK(n >= 2, path, ": not a PyTorch checkpoint (", n, " bytes)");
  size_t pos = 0;
  pickle::Options plain;
  const pickle::Value* magic = nullptr;
  try {
    magic = pickle::unpickle(heap, d, n, pos, plain, path + ": magic number");
  } catch (const Error& e) {
    fail(path, ": not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file whose first "
               "pickle is the magic number: ", e.what(), ")");
  }
  static const char kMagic[] = "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";  // 0x1950a86a20f9469cfc6c
  MC_CHECK(magic->kind == Kind::BigInt && magic->s == std::string(kMagic, 10), path,
           ": not a PyTorch checkpoint (bad magic number)");
  const pickle::Value* proto = pickle::unpickle(heap, d, n, pos, plain, path + ": protocol version");
  MC_CHECK(proto->kind == Kind::Int && proto->i == 1001, path, ": unsupported legacy protocol version ",
           pickle::repr(proto), " (expected 1001)");
  tf.sys_info = pickle::unpickle(heap, d, n, pos, plain, path + ": sys_info");
  MC_CHECK(tf.sys_info->is_dict(), path, ": sys_info is not a dict");
  if (const pickle::Value* le = tf.sys_info->get("little_endian"))
    MC_CHECK(le->kind == Kind::Bool && le->b, path,
             ": checkpoint was written on a big-endian machine; only little-endian checkpoints are supported");

  // The main pickle: storages are declared by persistent ids; their data follows later.
  std::unordered_map<std::string, pickle::Value*> roots;  // key -> root storage value
  std::unordered_map<std::string, pickle::Value*> views;  // view key -> view storage value
  pickle::Options opt;
  opt.persistent_load = [&](pickle::Heap& h, pickle::Value* pid) -> pickle::Value* {
    const std::string what = path + ": main pickle";
    PidFields f = parse_pid(pid, what);
    MC_CHECK(f.desc.element_size != 0, what, ": unknown storage type ", f.type_name);
    pickle::Value*& root = roots[f.key];
    if (!root) {
      root = h.make(Kind::Storage);
      pickle::StorageInfo& si = *root->storage_info;
      si.key = f.key;
      si.type_name = f.type_name;
      si.supported = f.desc.supported;
      si.dtype = f.desc.dtype;
      si.element_size = f.desc.element_size;
      si.numel = f.numel;
      si.location = f.location;
    } else {
      MC_CHECK(root->storage_info->type_name == f.type_name && root->storage_info->numel == f.numel, what,
               ": storage '", f.key, "' is described twice with different types or sizes");
    }
    if (!f.view) return root;
    // view_metadata = (view_key, offset, size): a slice of the root storage.
    const pickle::Value* vm = f.view;
    MC_CHECK(vm->kind == Kind::Tuple && vm->items.size() == 3 && vm->items[0]->kind == Kind::String &&
                 vm->items[1]->kind == Kind::Int && vm->items[2]->kind == Kind::Int,
             what, ": storage '", f.key, "': malformed view metadata ", pickle::repr(vm));
    int64_t off = vm->items[1]->i, size = vm->items[2]->i;
    MC_CHECK(off >= 0 && size >= 0 && off <= f.numel && size <= f.numel - off, what, ": storage view '",
             vm->items[0]->s, "' (offset ", off, ", size ", size, ") exceeds storage '", f.key, "' of ", f.numel,
             " elements");
    pickle::Value*& view = views[vm->items[0]->s];
    if (!view) {
      view = h.make(Kind::Storage);
      pickle::StorageInfo& si = *view->storage_info;
      si = pickle::StorageInfo{vm->items[0]->s, f.type_name, f.desc.supported, f.desc.dtype, f.desc.element_size,
                               size, f.location, root, off, nullptr};
    }
    return view;
  };
  tf.root = pickle::unpickle(heap, d, n, pos, opt, path + ": main pickle");

  const pickle::Value* keys = pickle::unpickle(heap, d, n, pos, plain, path + ": storage key list");
  MC_CHECK(keys->kind == Kind::List || keys->kind == Kind::Tuple, path, ": storage key list is a ",
           pickle::kind_name(keys->kind), ", not a list");
  auto owner = std::shared_ptr<const void>(file);
  std::set<std::string> seen;
  for (const pickle::Value* k : keys->items) {
    MC_CHECK(k->kind == Kind::String, path, ": storage key list holds a ", pickle::kind_name(k->kind));
    auto it = roots.find(k->s);
    MC_CHECK(it != roots.end(), path, ": storage '", k->s, "' is listed but no tensor uses it");
    MC_CHECK(seen.insert(k->s).second, path, ": storage '", k->s, "' is listed twice");
    pickle::StorageInfo& si = *it->second->storage_info;
    MC_CHECK(n - pos >= 8, path, ": truncated file (storage '", k->s, "' header at offset ", pos, ")");
    uint64_t count = 0;
    for (int b = 7; b >= 0; --b) count = count << 8 | d[pos + size_t(b)];
    pos += 8;
    MC_CHECK(count == uint64_t(si.numel), path, ": storage '", k->s, "' holds ", count,
             " elements but the pickle declares ", si.numel, " (corrupt file)");
    MC_CHECK(count <= (n - pos) / si.element_size, path, ": truncated file (storage '", k->s, "' needs ",
             count * si.element_size, " bytes at offset ", pos, ", ", n - pos, " left)");
    size_t nbytes = size_t(count * si.element_size);
    if (si.supported && si.dtype == DType::Bool) check_bool_bytes(d + pos, nbytes, path + ": storage '" + k->s + "'");
    si.data = storage_over(d + pos, nbytes, si.element_size, owner);
    pos += nbytes;
  }
  for (const auto& [key, v] : roots)
    MC_CHECK(v->storage_info->data, path, ": storage '", key, "' is used but missing from the storage key list");
  materialize(heap, path);
  return tf;
}

inline bool is_tensor_dict(const pickle::Value* v) {
  if (!v || v->kind != pickle::Kind::Dict || v->entries.empty()) return false;
  for (const auto& [k, x] : v->entries)
    if (k->kind != pickle::Kind::String || x->kind != pickle::Kind::Tensor) return false;
  return true;
}

inline const pickle::Value* search_state_dict(const pickle::Value* v, int depth, std::string& where) {
  if (is_tensor_dict(v)) return v;
  if (depth >= 4 || !v || v->kind != pickle::Kind::Dict) return nullptr;
  static const char* keys[] = {"state_dict", "model_state_dict", "model", "module", "net", "network",
                               "model_state", "state", "weights", "params"};
  for (const char* k : keys) {
    if (const pickle::Value* x = v->get(k)) {
      std::string sub = where + "[\"" + k + "\"]";
      if (const pickle::Value* r = search_state_dict(x, depth + 1, sub)) {
        where = sub;
        return r;
      }
    }
  }
  return nullptr;
}

inline void flatten_module(const TorchFile& f, const pickle::Value* obj, const std::string& prefix, int depth,
                           size_t& budget, std::vector<std::pair<std::string, Tensor>>& out) {
  using pickle::Kind;
  MC_CHECK(depth <= 64, f.path, ": TorchScript module tree deeper than 64 levels at '", prefix, "'");
  MC_CHECK(budget-- > 0, f.path, ": TorchScript module tree is too large");
  auto cls = f.classes.find(obj->s);
  MC_CHECK(cls != f.classes.end(), f.path, ": TorchScript class '", obj->s, "' (module '", prefix,
           "') has no declaration in the archive's code");
  const pickle::Value* st = obj->state;
  MC_CHECK(st && st->kind == Kind::Dict, f.path, ": TorchScript module '", prefix, "' (", obj->s,
           ") has no attribute dict");
  auto emit = [&](const std::vector<std::string>& names) {
    std::set<std::string> wanted(names.begin(), names.end());
    for (const auto& [k, v] : st->entries) {
      if (k->kind != Kind::String || !wanted.count(k->s) || v->kind == Kind::None) continue;
      std::string name = prefix + k->s;
      MC_CHECK(v->kind == Kind::Tensor, f.path, ": TorchScript parameter/buffer '", name, "' is a ",
               pickle::kind_name(v->kind), ", not a tensor");
      out.emplace_back(name, v->tensor(f.path + ": '" + name + "'"));
    }
  };
  emit(cls->second.parameters);
  emit(cls->second.buffers);
  for (const auto& [k, v] : st->entries) {
    if (k->kind != Kind::String || v->kind != Kind::Object) continue;
    auto sub = f.classes.find(v->s);
    if (sub == f.classes.end() || !sub->second.is_module) continue;
    flatten_module(f, v, prefix + k->s + ".", depth + 1, budget, out);
  }
}

}  // namespace torch_detail

// Loads a PyTorch checkpoint (zip, TorchScript or legacy format) from `path`.
inline TorchFile load_torch(const std::string& path) {
  auto file = MappedFile::open(path);
  if (looks_like_zip(file->data(), file->size())) return torch_detail::load_zip(path, std::move(file));
  return torch_detail::load_legacy(path, std::move(file));
}

// Converts a dict of str -> tensor into (name, tensor) pairs in order; `what` names it in errors.
inline std::vector<std::pair<std::string, Tensor>> tensor_dict_items(const pickle::Value* dict, const std::string& what) {
  MC_CHECK(dict && dict->kind == pickle::Kind::Dict, what, ": expected a dict");
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(dict->entries.size());
  for (const auto& [k, v] : dict->entries) {
    MC_CHECK(k->kind == pickle::Kind::String, what, ": key ", pickle::repr(k), " is not a str");
    out.emplace_back(k->s, v->tensor(what + ": '" + k->s + "'"));
  }
  return out;
}

// The model's state dict inside a loaded checkpoint, in file order (see the header comment).
inline std::vector<std::pair<std::string, Tensor>> find_state_dict(const TorchFile& f) {
  using pickle::Kind;
  MC_CHECK(f.root, f.path, ": checkpoint was not loaded");
  if (f.format == TorchFormat::TorchScript && f.root->kind == Kind::Object) {
    std::vector<std::pair<std::string, Tensor>> out;
    size_t budget = size_t(1) << 20;
    torch_detail::flatten_module(f, f.root, "", 0, budget, out);
    return out;
  }
  std::string where = "checkpoint";
  const pickle::Value* sd = torch_detail::search_state_dict(f.root, 0, where);
  if (!sd) {
    std::string keys;
    if (f.root->kind == Kind::Dict) {
      for (size_t k = 0; k < f.root->entries.size() && k < 20; ++k) {
        keys += k ? ", " : "";
        keys += pickle::repr(f.root->entries[k].first);
      }
      fail(f.path, ": no state dict found (a dict of str -> tensor at the top level or under 'state_dict', "
                   "'model', 'model_state_dict', 'module', 'net', ...); top-level keys: [", keys, "]");
    }
    fail(f.path, ": no state dict found: the checkpoint holds a ", pickle::kind_name(f.root->kind),
         ", not a dict of tensors");
  }
  return tensor_dict_items(sd, f.path + ": " + where);
}

}  // namespace mc::io
