// Tests of the checkpoint and array readers: zip.hpp, npy.hpp, pickle.hpp, torch_load.hpp.
//
// Fixtures (tests/fixtures/checkpoints, written by tools/gen_checkpoint_fixtures.py, and the OmegaConf-config
// checkpoints by tools/gen_omegaconf_fixture.py) come with JSON files of the values torch.load / numpy give;
// the real ResNet CIFAR-10 checkpoints and the MedMNIST BreastMNIST npz are read from the shared data folder
// next to the repository (CMake disables this file when it is absent).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/io/npy.hpp"
#include "mc/io/pickle.hpp"
#include "mc/io/torch_load.hpp"
#include "mc/io/zip.hpp"

namespace {

using nlohmann::json;
using mc::io::pickle::Kind;
using mc::io::pickle::Value;
namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/tests/fixtures/checkpoints/" + name; }
std::string shared_data(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/../shared/data/" + name; }

json read_json(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  return json::parse(f);
}

std::vector<uint8_t> read_bytes(const std::string& path) { return mc::io::read_file(path); }

// A byte string from a literal that may hold NUL bytes.
template <size_t N>
std::string bin(const char (&s)[N]) {
  return std::string(s, N - 1);
}

// A scratch folder for mutated copies of fixtures, removed at exit.
struct TempDir {
  fs::path dir;
  TempDir() {
    dir = fs::temp_directory_path() / ("mc_test_io_checkpoint_" + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  // Writes a new file (never truncates an old one: that can force a flush to disk) and returns its path.
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    static int counter = 0;
    std::string p = (dir / (std::to_string(counter++) + "_" + name)).string();
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }
};
const TempDir& temp() {
  static TempDir t;
  return t;
}

// Element at C-order flat index `flat` of any tensor (any strides), as a double.
double element(const mc::Tensor& t, int64_t flat) {
  int64_t off = t.offset();
  for (int d = t.dim() - 1; d >= 0; --d) {
    int64_t i = flat % t.size(d);
    flat /= t.size(d);
    off += i * t.stride(d);
  }
  const char* base = static_cast<const char*>(t.storage()->data());
  double v = 0;
  MC_DISPATCH(t.dtype(), T, {
    T x;
    std::memcpy(&x, base + off * int64_t(sizeof(T)), sizeof(T));
    v = double(static_cast<mc::acc_t<T>>(x));
  });
  return v;
}

bool close(double a, double b, double rel = 1e-9) { return std::fabs(a - b) <= rel * (1.0 + std::fabs(b)); }

// Checks a tensor against a record {name, dtype, shape, [strides, offset], values | sum, sumsq, samples}.
void check_record(const mc::Tensor& t, const json& rec) {
  INFO("tensor " << rec["name"].get<std::string>());
  REQUIRE(t.defined());
  CHECK(std::string(mc::dtype_name(t.dtype())) == rec["dtype"].get<std::string>());
  REQUIRE(t.shape() == rec["shape"].get<mc::Shape>());
  if (rec.contains("strides")) CHECK(t.strides() == rec["strides"].get<mc::Shape>());
  if (rec.contains("offset")) CHECK(t.offset() == rec["offset"].get<int64_t>());
  // Every element the view reaches lies inside its storage.
  if (t.numel() > 0) {
    int64_t last = t.offset();
    for (int d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    REQUIRE(size_t(last + 1) * t.element_size() <= t.storage()->nbytes());
  }
  if (rec.contains("values")) {
    const json& vals = rec["values"];
    REQUIRE(int64_t(vals.size()) == t.numel());
    for (int64_t k = 0; k < t.numel(); ++k) {
      INFO("element " << k);
      CHECK(element(t, k) == vals[size_t(k)].get<double>());
    }
  }
  if (rec.contains("sum")) {
    double sum = 0, sumsq = 0;
    for (int64_t k = 0; k < t.numel(); ++k) {
      double x = element(t, k);
      sum += x;
      sumsq += x * x;
    }
    CHECK(close(sum, rec["sum"].get<double>(), 1e-9));
    if (rec.contains("sumsq")) CHECK(close(sumsq, rec["sumsq"].get<double>(), 1e-9));
  }
  if (rec.contains("samples"))
    for (const json& s : rec["samples"]) CHECK(element(t, s[0].get<int64_t>()) == s[1].get<double>());
}

// Follows a JSON path (str: dict key; int: dict int key or sequence index) from `v`.
const Value* at(const Value* v, const json& path) {
  for (const json& p : path) {
    REQUIRE(v);
    if (p.is_string()) {
      v = v->get(p.get<std::string>());
    } else if (v->kind == Kind::Dict) {
      const Value* found = nullptr;
      for (const auto& [k, x] : v->entries)
        if (k->kind == Kind::Int && k->i == p.get<int64_t>()) found = x;
      v = found;
    } else {
      REQUIRE(v->is_sequence());
      REQUIRE(p.get<size_t>() < v->items.size());
      v = v->items[p.get<size_t>()];
    }
  }
  REQUIRE(v);
  return v;
}

void check_value(const Value* root, const json& spec) {
  INFO("value at " << spec["path"].dump());
  const Value* v = at(root, spec["path"]);
  if (spec.contains("int")) CHECK(v->as_int() == spec["int"].get<int64_t>());
  if (spec.contains("float")) CHECK(v->as_float() == spec["float"].get<double>());
  if (spec.contains("str")) CHECK(v->as_string() == spec["str"].get<std::string>());
  if (spec.contains("bool")) CHECK(v->as_bool() == spec["bool"].get<bool>());
  if (spec.contains("none")) CHECK(v->is_none());
  if (spec.contains("len")) CHECK(v->size() == spec["len"].get<size_t>());
  if (spec.contains("bytes")) {
    REQUIRE(v->kind == Kind::Bytes);
    std::vector<int> got;
    for (char c : v->s) got.push_back(uint8_t(c));
    CHECK(got == spec["bytes"].get<std::vector<int>>());
  }
}

// Loads a torch fixture and checks it against its JSON.
void check_torch_fixture(const std::string& json_name) {
  INFO("fixture " << json_name);
  json exp = read_json(fixture(json_name));
  mc::io::TorchFile f = mc::io::load_torch(fixture(exp["file"].get<std::string>()));
  CHECK(mc::io::torch_format_name(f.format) == exp["format"].get<std::string>());
  auto sd = mc::io::find_state_dict(f);
  const json& recs = exp["state_dict"];
  REQUIRE(sd.size() == recs.size());
  for (size_t k = 0; k < sd.size(); ++k) {
    CHECK(sd[k].first == recs[k]["name"].get<std::string>());
    check_record(sd[k].second, recs[k]);
  }
  if (exp.contains("shared")) {
    for (const json& group : exp["shared"]) {
      const Value* first = f.root->get(group[0].get<std::string>());
      REQUIRE(first);
      for (const json& name : group) {
        const Value* v = f.root->get(name.get<std::string>());
        REQUIRE(v);
        CHECK(v->tensor().storage() == first->tensor().storage());  // one storage, several views
      }
    }
  }
  if (exp.contains("values"))
    for (const json& spec : exp["values"]) check_value(f.root, spec);
  if (exp.contains("tensors_at"))
    for (const json& spec : exp["tensors_at"]) check_record(at(f.root, spec["path"])->tensor(), spec);
}

// Loading `path` either succeeds or throws mc::Error; anything else fails the test.
template <class Load>
void load_or_error(Load&& load) {
  try {
    load();
  } catch (const mc::Error&) {
  }
}

}  // namespace

TEST_CASE("torch zip-format state dict matches torch.load", "[io][torch]") {
  check_torch_fixture("sd_zip.json");
  // Stored, aligned storages alias the file mapping (zero-copy) and keep it alive.
  auto sd = mc::io::find_state_dict(mc::io::load_torch(fixture("sd_zip.pt")));
  mc::io::TorchFile f = mc::io::load_torch(fixture("sd_zip.pt"));
  for (const auto& [name, t] : mc::io::find_state_dict(f)) {
    auto p = static_cast<const uint8_t*>(t.storage()->data());
    CHECK(p >= f.file->data());
    CHECK(p + t.storage()->nbytes() <= f.file->data() + f.file->size());
  }
  CHECK(element(sd.at(0).second, 0) == element(mc::io::find_state_dict(f).at(0).second, 0));
}

TEST_CASE("torch legacy-format state dict matches torch.load", "[io][torch]") {
  check_torch_fixture("sd_legacy.json");
  check_torch_fixture("legacy_views.json");  // storage views (view_metadata) of old files
}

TEST_CASE("nested training checkpoints: state dict, config and optimizer values", "[io][torch]") {
  check_torch_fixture("nested_zip.json");
  check_torch_fixture("nested_legacy.json");
  mc::io::TorchFile f = mc::io::load_torch(fixture("nested_zip.pt"));
  const Value* config = f.root->get("config");
  REQUIRE(config);
  // Opaque / converted metadata values.
  const Value* ns = config->get("ns");
  REQUIRE(ns->kind == Kind::Object);
  CHECK(ns->s == "argparse.Namespace");
  REQUIRE(ns->state);
  CHECK(ns->state->get("embed_dim")->as_int() == 8);
  CHECK(config->get("dtype")->kind == Kind::Global);
  CHECK(config->get("dtype")->s == "torch.float16");
  CHECK(config->get("device")->kind == Kind::Object);
  CHECK(config->get("big")->kind == Kind::BigInt);
  CHECK_THROWS_AS(config->get("big")->as_int(), mc::Error);
  CHECK(config->get("tags")->kind == Kind::Set);
  // Tensors carry their requires_grad / parameter flags.
  CHECK_FALSE(f.root->get("model")->get("fc.weight")->tensor_info->requires_grad);
}

TEST_CASE("every dtype, shared-storage views, 0-d and empty tensors", "[io][torch]") {
  check_torch_fixture("dtypes_zip.json");
  check_torch_fixture("dtypes_legacy.json");
  check_torch_fixture("dtypes_proto4_zip.json");
}

TEST_CASE("TorchScript archives give torch.jit.load(...).state_dict()", "[io][torchscript]") {
  check_torch_fixture("clip_script.json");
  check_torch_fixture("clip_trace.json");
  mc::io::TorchFile f = mc::io::load_torch(fixture("clip_script.pt"));
  CHECK(f.format == mc::io::TorchFormat::TorchScript);
  REQUIRE(f.root->kind == Kind::Object);
  CHECK(f.root->s == "__torch__.TinyClip");
  // The plain tensor attribute is kept in the object but is not part of the state dict.
  REQUIRE(f.root->state);
  CHECK(f.root->state->get("plain_attr")->is_tensor());
  for (const auto& [name, t] : mc::io::find_state_dict(f)) CHECK(name != "plain_attr");
  CHECK(f.classes.at("__torch__.TinyClip").is_module);
  CHECK(f.constants != nullptr);
  mc::io::TorchFile tr = mc::io::load_torch(fixture("clip_trace.pt"));
  REQUIRE(tr.constants);
  CHECK(tr.constants->kind == Kind::Tuple);
}

TEST_CASE("unsupported storage dtypes load but fail clearly when used", "[io][torch]") {
  for (const char* name : {"unsupported_zip.pt", "unsupported_legacy.pt"}) {
    INFO(name);
    mc::io::TorchFile f = mc::io::load_torch(fixture(name));
    CHECK(f.root->get("ok")->tensor().numel() == 2);
    CHECK_THROWS_WITH(f.root->get("i8")->tensor(), Catch::Contains("int8"));
    CHECK_THROWS_WITH(f.root->get("i16")->tensor(), Catch::Contains("int16"));
    CHECK_THROWS_AS(mc::io::find_state_dict(f), mc::Error);
  }
}

TEST_CASE("real ResNet-20 CIFAR-10 checkpoint (legacy format)", "[io][torch][real]") {
  json exp = read_json(fixture("resnet20_expected.json"));
  const std::string path = shared_data(exp["file"].get<std::string>());
  REQUIRE(fs::exists(path));  // shared data is required (CMake disables this file without it)
  mc::io::TorchFile f = mc::io::load_torch(path);
  CHECK(f.format == mc::io::TorchFormat::Legacy);
  CHECK(close(f.root->get("best_prec1")->as_float(), exp["best_prec1"].get<double>(), 0));
  REQUIRE(f.root->size() == exp["top_level_keys"].size());
  auto sd = mc::io::find_state_dict(f);
  const json& recs = exp["state_dict"];
  REQUIRE(sd.size() == recs.size());
  for (size_t k = 0; k < sd.size(); ++k) {
    CHECK(sd[k].first == recs[k]["name"].get<std::string>());
    check_record(sd[k].second, recs[k]);
  }
  for (const auto& [name, info] : exp["others"].items()) {
    INFO(name);
    mc::io::TorchFile g = mc::io::load_torch(shared_data("checkpoints/resnet_cifar10_akamaster/" + name));
    auto gsd = mc::io::find_state_dict(g);
    CHECK(gsd.size() == info["tensors"].get<size_t>());
    CHECK(gsd.at(0).first == info["first"].get<std::string>());
  }
}

TEST_CASE("npz archives (stored and deflated) match numpy", "[io][npy]") {
  for (const char* name : {"np_savez.json", "np_savez_compressed.json"}) {
    INFO(name);
    json exp = read_json(fixture(name));
    const std::string path = fixture(exp["file"].get<std::string>());
    // The two archives really use the two methods.
    mc::io::ZipReader zip = mc::io::ZipReader::open(path);
    for (const auto& e : zip.entries()) CHECK(e.method == exp["zip_methods"][0].get<int>());
    auto arrays = mc::io::load_npz(path);
    REQUIRE(arrays.size() == exp["arrays"].size());
    for (size_t k = 0; k < arrays.size(); ++k) {
      const json& rec = exp["arrays"][k];
      CHECK(arrays[k].first == rec["name"].get<std::string>());
      check_record(arrays[k].second, rec);
      if (rec["fortran_order"].get<bool>()) CHECK_FALSE(arrays[k].second.is_contiguous());
    }
    auto m = mc::io::load_npz_map(path);
    CHECK(m.size() == arrays.size());
    CHECK(m.count("fortran") == 1);
  }
}

TEST_CASE(".npy format versions and unsupported dtypes", "[io][npy]") {
  json exp = read_json(fixture("npy_versions.json"));
  check_record(mc::io::load_npy(fixture("v2.npy")), exp["arrays"][0]);
  check_record(mc::io::load_npy(fixture("v3.npy")), exp["arrays"][1]);
  CHECK_THROWS_WITH(mc::io::load_npy(fixture("bad_bigendian.npy")), Catch::Contains("big-endian"));
  CHECK_THROWS_WITH(mc::io::load_npy(fixture("bad_object.npy")), Catch::Contains("object"));
  CHECK_THROWS_WITH(mc::io::load_npy(fixture("bad_int16.npy")), Catch::Contains("<i2"));
  // Truncated data and a corrupt header.
  auto bytes = read_bytes(fixture("v2.npy"));
  bytes.pop_back();
  CHECK_THROWS_AS(mc::io::parse_npy(bytes.data(), bytes.size(), nullptr, "cut"), mc::Error);
  bytes = read_bytes(fixture("v2.npy"));
  bytes[0] = 'X';
  CHECK_THROWS_AS(mc::io::parse_npy(bytes.data(), bytes.size(), nullptr, "magic"), mc::Error);
}

TEST_CASE("MedMNIST BreastMNIST npz", "[io][npy][real]") {
  json exp = read_json(fixture("breastmnist_expected.json"));
  const std::string path = shared_data(exp["file"].get<std::string>());
  REQUIRE(fs::exists(path));  // shared data is required (CMake disables this file without it)
  auto arrays = mc::io::load_npz(path);
  REQUIRE(arrays.size() == exp["arrays"].size());
  for (size_t k = 0; k < arrays.size(); ++k) {
    CHECK(arrays[k].first == exp["arrays"][k]["name"].get<std::string>());
    check_record(arrays[k].second, exp["arrays"][k]);
  }
  CHECK(arrays[0].first == "train_images");
  CHECK(arrays[0].second.shape() == mc::Shape{546, 28, 28});
  CHECK(arrays[0].second.dtype() == mc::DType::U8);
}

TEST_CASE("pickle protocols 0-5 decode to the same values", "[io][pickle]") {
  for (int proto = 0; proto <= 5; ++proto) {
    INFO("protocol " << proto);
    auto bytes = read_bytes(fixture("proto" + std::to_string(proto) + ".pkl"));
    mc::io::pickle::Heap heap;
    const Value* v = mc::io::pickle::unpickle(heap, bytes.data(), bytes.size(), {}, "proto");
    REQUIRE(v->is_dict());
    CHECK(v->get("int")->as_int() == 7);
    CHECK(v->get("neg")->as_int() == -300000);
    CHECK(v->get("i64min")->as_int() == INT64_MIN);
    // 2**100 and -2**70 as two's complement little-endian bytes
    std::string big(13, '\0');
    big[12] = 0x10;
    CHECK(v->get("big")->kind == Kind::BigInt);
    CHECK(v->get("big")->s == big);
    std::string negbig(9, '\0');
    negbig[8] = char(0xc0);
    CHECK(v->get("negbig")->s == negbig);
    CHECK(v->get("float")->as_float() == 1.25);
    CHECK(v->get("str")->as_string() == "h\xc3\xa9llo \xe2\x9c\x93\nline");
    CHECK(v->get("empty_str")->as_string().empty());
    CHECK(v->get("bytes")->s == std::string("\x00\x01\xff", 3));
    const Value* list = v->get("list");
    REQUIRE(list->kind == Kind::List);
    REQUIRE(list->items.size() == 3);
    CHECK(list->items[1]->items[1]->as_int() == 3);
    CHECK(list->items[2]->kind == Kind::Tuple);
    const Value* tup = v->get("tuple");
    REQUIRE(tup->kind == Kind::Tuple);
    REQUIRE(tup->items.size() == 5);
    CHECK(tup->items[1]->as_string() == "a");
    CHECK(tup->items[2]->is_none());
    CHECK(tup->items[3]->as_bool());
    CHECK_FALSE(tup->items[4]->as_bool());
    const Value* ik = v->get("intkeys");
    REQUIRE(ik->entries.size() == 2);
    CHECK(ik->entries[1].first->as_int() == -2);
    CHECK(ik->entries[1].second->as_string() == "minus two");
    CHECK(v->get("set")->kind == Kind::Set);
    CHECK(v->get("set")->items.at(0)->as_int() == 5);
    CHECK(v->get("frozenset")->items.at(0)->as_int() == 6);
    const Value* sh = v->get("shared");
    CHECK(sh->items.at(0) == sh->items.at(1));  // the memo keeps shared references shared
    const Value* od = v->get("od");
    REQUIRE(od->entries.size() == 2);
    CHECK(od->entries[0].first->as_string() == "b");
    CHECK(od->get("a")->as_int() == 2);
    const Value* tk = v->get("tuple_key");
    REQUIRE(tk->entries.size() == 1);
    CHECK(tk->entries[0].first->kind == Kind::Tuple);
  }
}

TEST_CASE("pickle VM semantics and hostile streams", "[io][pickle]") {
  using mc::io::pickle::unpickle;
  auto run = [](const std::string& s, const mc::io::pickle::Options& opt = {}) {
    mc::io::pickle::Heap heap(1 << 16);
    return unpickle(heap, reinterpret_cast<const uint8_t*>(s.data()), s.size(), opt, "test")->kind;
  };
  auto run_throws = [&](const std::string& s, const char* needle) {
    INFO("stream " << s.size() << " bytes, expecting: " << needle);
    CHECK_THROWS_WITH(run(s), Catch::Contains(needle));
  };
  // Dict semantics: a repeated key keeps its first position, takes the last value.
  {
    std::string s = bin("\x80\x02}(X\x01\x00\x00\x00" "aK\x01X\x01\x00\x00\x00" "bK\x02X\x01\x00\x00\x00" "aK\x03u.");
    mc::io::pickle::Heap heap;
    const Value* v = unpickle(heap, reinterpret_cast<const uint8_t*>(s.data()), s.size(), {}, "t");
    REQUIRE(v->entries.size() == 2);
    CHECK(v->entries[0].first->s == "a");
    CHECK(v->get("a")->as_int() == 3);
  }
  run_throws(bin("\x80\x02\x63os\nsystem\n)R."), "global 'os.system' is not allowed");
  run_throws("\x80\x02\x63__builtin__\neval\n)R.", "global 'builtins.eval' is not allowed");
  run_throws("\x80\x02\x63subprocess\nPopen\n.", "global 'subprocess.Popen' is not allowed");
  run_throws("\x80\x02\x63__torch__\nM\n.", "global '__torch__.M' is not allowed");  // only in TorchScript archives
  run_throws("\x80\x02\x63torch\nload\n.", "global 'torch.load' is not allowed");
  run_throws("\x80\x02\x63torch._utils\n_rebuild_device_tensor_from_numpy\n.", "is not allowed");
  run_throws(bin("\x80\x02(X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93."), "global 'os.system' is not allowed");
  run_throws("\x80\x02K\x01", "truncated");                     // no STOP
  run_throws(bin("\x80\x02X\xff\x00\x00\x00" "ab."), "truncated");       // string length past the end
  run_throws("\x80\x02h\x05.", "memo key 5");                   // BINGET of an unknown key
  run_throws("\x80\x02" "a.", "stack underflow");                  // APPEND on an empty stack
  run_throws("\x80\x02K\x01K\x02" "a.", "APPEND to a int");        // APPEND to a non-list
  run_throws("\x80\x02]K\x01s.", "stack underflow");            // SETITEM without enough items
  run_throws("\x80\x02]]K\x01s.", "cannot set an item on a list");
  run_throws("\x80\x02}]K\x01s.", "unhashable");                // list as a dict key
  run_throws("\x80\x02" "e.", "no MARK");                          // APPENDS without MARK
  run_throws("\x80\x02\xff.", "unknown opcode");
  run_throws("\x80\x09.", "unsupported pickle protocol");
  run_throws("\x80\x02\x63\x63ollections\nOrderedDict\nK\x01R.", "REDUCE arguments must be a tuple");
  run_throws("\x80\x02K\x01)R.", "REDUCE calls a int");
  run_throws("\x80\x02\x63torch\nFloatStorage\n)R.", "cannot be called");
  run_throws(bin("\x80\x02X\x01\x00\x00\x00xQ."), "no persistent loader");
  run_throws("\x80\x02\x63os\nsystem\n.", "os.system");
  run_throws("(i__main__\nX\n.", "INST");
  // A rebuild call whose view runs past its storage.
  {
    mc::io::pickle::Options opt;
    opt.persistent_load = [](mc::io::pickle::Heap& h, Value*) {
      Value* s = h.make(Kind::Storage);
      s->storage_info->numel = 4;
      s->storage_info->key = "0";
      return s;
    };
    std::string ok = bin("\x80\x02\x63torch._utils\n_rebuild_tensor\n(N\x51K\x00K\x02K\x02\x86K\x02K\x01\x86tR.");
    CHECK(run(ok, opt) == Kind::Tensor);
    std::string bad = bin("\x80\x02\x63torch._utils\n_rebuild_tensor\n(N\x51K\x01K\x02K\x02\x86K\x02K\x01\x86tR.");
    CHECK_THROWS_WITH(run(bad, opt), Catch::Contains("exceeds its storage"));
    std::string huge = bin("\x80\x02\x63torch._utils\n_rebuild_tensor\n(N\x51K\x00J\xff\xff\xff\x7fJ\xff\xff\xff\x7f"
                           "J\xff\xff\xff\x7fJ\xff\xff\xff\x7f\x87K\x00K\x00K\x00\x87tR.");
    CHECK_THROWS_AS(run(huge, opt), mc::Error);
  }
  // Too many values for the heap's limit (a flood of DUP + EMPTY_LIST).
  {
    std::string flood = "\x80\x02";
    for (int k = 0; k < 70000; ++k) flood += "]";
    flood += ".";
    CHECK_THROWS_WITH(run(flood), Catch::Contains("more than"));
  }
  // Deep nesting and cycles are representable and freeing them does not recurse.
  {
    std::string deep = "\x80\x02";
    for (int k = 0; k < 20000; ++k) deep += bin("]q\x00");
    for (int k = 0; k < 19999; ++k) deep += "a";
    deep += ".";
    mc::io::pickle::Heap heap;
    const Value* v = unpickle(heap, reinterpret_cast<const uint8_t*>(deep.data()), deep.size(), {}, "deep");
    CHECK(v->kind == Kind::List);
    std::string cyc = bin("\x80\x02]q\x00h\x00" "a.");  // l = []; l.append(l)
    const Value* c = unpickle(heap, reinterpret_cast<const uint8_t*>(cyc.data()), cyc.size(), {}, "cycle");
    REQUIRE(c->items.size() == 1);
    CHECK(c->items[0] == c);
    CHECK_FALSE(mc::io::pickle::repr(c).empty());  // bounded even on a cycle
  }
}

TEST_CASE("hostile checkpoint files are refused by global name", "[io][pickle][torch]") {
  auto pkl = read_bytes(fixture("hostile_global.pkl"));
  mc::io::pickle::Heap heap;
  REQUIRE_THROWS_AS(mc::io::pickle::unpickle(heap, pkl.data(), pkl.size(), {}, "hostile"), mc::Error);
  CHECK_THROWS_WITH(mc::io::pickle::unpickle(heap, pkl.data(), pkl.size(), {}, "hostile"),
                    Catch::Contains("pickle: global 'os.system' is not allowed"));
  auto pkl4 = read_bytes(fixture("hostile_stack_global.pkl"));
  CHECK_THROWS_WITH(mc::io::pickle::unpickle(heap, pkl4.data(), pkl4.size(), {}, "hostile"),
                    Catch::Contains("pickle: global 'builtins.eval' is not allowed"));
  REQUIRE_THROWS_AS(mc::io::load_torch(fixture("hostile_zip.pt")), mc::Error);
  CHECK_THROWS_WITH(mc::io::load_torch(fixture("hostile_zip.pt")), Catch::Contains("global 'subprocess.Popen' is not allowed"));
  REQUIRE_THROWS_AS(mc::io::load_torch(fixture("hostile_legacy.pt")), mc::Error);
  CHECK_THROWS_WITH(mc::io::load_torch(fixture("hostile_legacy.pt")), Catch::Contains("global 'os.system' is not allowed"));
}

TEST_CASE("OmegaConf training checkpoints (CXR-CLIP style) load with their config as data", "[io][torch][omegaconf]") {
  using mc::io::pickle::config_get;
  using mc::io::pickle::config_value;
  for (const char* name : {"omegaconf_zip.json", "omegaconf_proto4_zip.json", "omegaconf_proto1_legacy.json"}) {
    INFO("fixture " << name);
    check_torch_fixture(name);  // state dict under "model", epoch, optimizer and scheduler values
    json exp = read_json(fixture(name));
    mc::io::TorchFile f = mc::io::load_torch(fixture(exp["file"].get<std::string>()));
    const Value* cfg = f.root->get("config");
    REQUIRE(cfg);
    REQUIRE(cfg->kind == Kind::Object);
    CHECK(cfg->s == exp["config_class"].get<std::string>());
    CHECK(mc::io::pickle::is_omegaconf(cfg));
    // Every leaf of the config by dotted key, raw as stored (a missing "???" and an interpolation stay strings).
    for (const json& e : exp["config"]) {
      const std::string key = e["key"].get<std::string>();
      INFO("config key '" << key << "'");
      const Value* v = config_get(cfg, key);
      REQUIRE(v);
      CHECK_FALSE(mc::io::pickle::is_omegaconf(v));
      if (e.contains("len")) {
        REQUIRE((v->kind == Kind::Dict || v->kind == Kind::List));
        CHECK(v->size() == e["len"].get<size_t>());
      }
      if (e.contains("int")) CHECK(v->as_int() == e["int"].get<int64_t>());
      if (e.contains("float")) CHECK(v->as_float() == e["float"].get<double>());
      if (e.contains("bool")) CHECK(v->as_bool() == e["bool"].get<bool>());
      if (e.contains("str")) CHECK(v->as_string() == e["str"].get<std::string>());
      if (e.contains("none")) CHECK(v->is_none());
    }
    CHECK(config_get(cfg, "model.nope") == nullptr);
    CHECK(config_get(cfg, "model.name.deeper") == nullptr);
    CHECK(config_get(cfg, "data_train.mimic_cxr.loss_weights.2") == nullptr);
    CHECK(config_get(cfg, "data_train.mimic_cxr.loss_weights.-1") == nullptr);
    CHECK(config_get(nullptr, "model") == nullptr);
    // The metadata keeps its type references as opaque globals; protocol < 3 names are mapped to Python 3's.
    const Value* meta = cfg->state->get("_metadata");
    REQUIRE(meta);
    CHECK(meta->s == "omegaconf.base.ContainerMetadata");
    REQUIRE(meta->state);
    CHECK(meta->state->get("object_type")->kind == Kind::Global);
    CHECK(meta->state->get("object_type")->s == "builtins.dict");
    CHECK(meta->state->get("ref_type")->s == "typing.Any");
    CHECK(meta->state->get("flags")->get("struct")->as_bool());
    CHECK(meta->state->get("resolver_cache")->kind == Kind::Dict);  // collections.defaultdict(dict)
    const Value* lw = config_value(config_value(config_value(cfg)->get("data_train"))->get("mimic_cxr"))->get("loss_weights");
    REQUIRE(lw);
    CHECK(lw->s == "omegaconf.listconfig.ListConfig");
    CHECK(lw->state->get("_metadata")->state->get("key_type")->s == "builtins.int");
    CHECK(lw->state->get("_parent")->kind == Kind::Object);  // the back reference to the parent container
    // Each global the generator saw in this pickle resolves.
    for (const json& g : exp["globals"]) {
      std::string full = g.get<std::string>();
      size_t dot = full.rfind('.');
      std::string s = "\x80\x02" "c" + full.substr(0, dot) + "\n" + full.substr(dot + 1) + "\n.";
      mc::io::pickle::Heap heap;
      INFO("global " << full);
      CHECK(mc::io::pickle::unpickle(heap, reinterpret_cast<const uint8_t*>(s.data()), s.size(), {}, "g")->kind ==
            Kind::Global);
    }
  }
}

TEST_CASE("OmegaConf globals are inert: no calls, hostile globals inside configs refused", "[io][pickle][omegaconf]") {
  using mc::io::pickle::unpickle;
  auto load = [](mc::io::pickle::Heap& heap, const std::string& s) {
    return unpickle(heap, reinterpret_cast<const uint8_t*>(s.data()), s.size(), {}, "test");
  };
  auto run_throws = [&](const std::string& s, const char* needle) {
    INFO("stream " << s.size() << " bytes, expecting: " << needle);
    mc::io::pickle::Heap heap(1 << 16);
    CHECK_THROWS_WITH(load(heap, s), Catch::Contains(needle));
  };
  // A checkpoint whose DictConfig holds an object that unpickles by calling os.system.
  REQUIRE_THROWS_AS(mc::io::load_torch(fixture("hostile_omegaconf.pt")), mc::Error);
  CHECK_THROWS_WITH(mc::io::load_torch(fixture("hostile_omegaconf.pt")),
                    Catch::Contains("global 'posix.system' is not allowed"));
  // A hostile global in a DictConfig's BUILD state.
  run_throws(bin("\x80\x02" "comegaconf.dictconfig\nDictConfig\n)\x81}X\x08\x00\x00\x00_content" "cos\nsystem\nsb."),
             "global 'os.system' is not allowed");
  // Classes and type objects are never called.
  run_throws("\x80\x02" "comegaconf.dictconfig\nDictConfig\n)R.", "'omegaconf.dictconfig.DictConfig' cannot be called");
  run_throws("\x80\x02" "c__builtin__\ndict\n)R.", "'builtins.dict' cannot be called");
  run_throws("\x80\x02" "ctyping\nAny\n)R.", "'typing.Any' cannot be called");
  run_throws("\x80\x02" "c__builtin__\nlong\n)\x81.", "'builtins.int' is not a class that can be instantiated");
  run_throws("\x80\x02" "c__builtin__\nobject\n)\x81.", "is not a class that can be instantiated");
  // Only the names OmegaConf's pickles use; functions and dotted names stay refused.
  run_throws("\x80\x02" "comegaconf._utils\nget_yaml_loader\n.", "global 'omegaconf._utils.get_yaml_loader' is not allowed");
  run_throws(bin("\x80\x04\x8c\x0fomegaconf.nodes\x8c\x0f" "AnyNode.__new__\x93."), "is not allowed");
  run_throws("\x80\x02" "c__builtin__\ngetattr\n.", "global 'builtins.getattr' is not allowed");
  run_throws("\x80\x02" "c__builtin__\ntype\n.", "global 'builtins.type' is not allowed");
  run_throws("\x80\x02" "comegaconfx\nDictConfig\n.", "is not allowed");
  // defaultdict: the factory must be None or a type; copyreg._reconstructor only makes allowed classes.
  run_throws(bin("\x80\x02" "ccollections\ndefaultdict\nX\x01\x00\x00\x00" "a\x85R."), "default factory");
  run_throws("\x80\x02" "ccollections\ndefaultdict\n" "cos\nsystem\n\x85R.", "global 'os.system' is not allowed");
  run_throws("ccopy_reg\n_reconstructor\n(ccollections\nOrderedDict\nc__builtin__\nobject\nNtR.", "cannot be instantiated here");
  run_throws("ccopy_reg\n_reconstructor\n(comegaconf.nodes\nAnyNode\nc__builtin__\ndict\nNtR.", "only (cls, object, None)");
  run_throws("ccopy_reg\n_reconstructor\n(comegaconf.nodes\nAnyNode\nc__builtin__\nobject\nI1\ntR.", "only (cls, object, None)");
  // What OmegaConf does produce.
  {
    mc::io::pickle::Heap heap;
    const Value* d = load(heap, bin("\x80\x02" "ccollections\ndefaultdict\n" "c__builtin__\ndict\n\x85R" "X\x01\x00\x00\x00" "kK\x07s."));
    REQUIRE(d->kind == Kind::Dict);
    CHECK(d->get("k")->as_int() == 7);
    const Value* t = load(heap, "\x80\x02" "c__builtin__\nunicode\n.");
    CHECK(t->kind == Kind::Global);
    CHECK(t->s == "builtins.str");
    const Value* n = load(heap, bin("ccopy_reg\n_reconstructor\n(comegaconf.nodes\nAnyNode\nc__builtin__\nobject\nNtR"
                                    "(dV_val\nI5\nsb."));
    REQUIRE(n->kind == Kind::Object);
    CHECK(n->s == "omegaconf.nodes.AnyNode");
    CHECK(mc::io::pickle::config_value(n)->as_int() == 5);
    CHECK(mc::io::pickle::config_get(n, "") == mc::io::pickle::config_value(n));
  }
}

TEST_CASE("corrupt and truncated checkpoints throw mc::Error", "[io][torch][zip]") {
  const TempDir& tmp = temp();
  auto zip = read_bytes(fixture("sd_zip.pt"));
  // Truncated zip archives, several cut points (the central directory is at the end).
  for (size_t cut : {size_t(0), size_t(3), size_t(30), zip.size() / 4, zip.size() / 2, zip.size() - 100,
                     zip.size() - 23, zip.size() - 1}) {
    INFO("cut at " << cut);
    std::vector<uint8_t> b(zip.begin(), zip.begin() + long(cut));
    REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("cut.pt", b)), mc::Error);
  }
  // Corrupted central directory: its offset, an entry signature, an entry's local header offset.
  size_t eocd = zip.size() - 22;
  REQUIRE(mc::io::zip_detail::rd32(zip.data() + eocd) == mc::io::zip_detail::kEocdSig);
  uint32_t cd_off = mc::io::zip_detail::rd32(zip.data() + eocd + 16);
  {
    auto b = zip;
    b[eocd + 16] ^= 0x40;  // central directory offset (32-bit field)
    REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("cd1.pt", b)), mc::Error);
  }
  if (mc::io::zip_detail::rd32(zip.data() + eocd - 20) == mc::io::zip_detail::kEocd64LocSig) {
    // torch writes zip64 records: corrupt the zip64 central directory offset, then the locator.
    size_t rec = size_t(mc::io::zip_detail::rd64(zip.data() + eocd - 20 + 8));
    for (size_t pos : {rec + 48, rec + 49, eocd - 20 + 8}) {
      INFO("zip64 byte " << pos);
      auto b = zip;
      b[pos] ^= 0x08;
      REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("cd64.pt", b)), mc::Error);
    }
  }
  {
    auto b = zip;
    b[cd_off] = 'X';  // first central directory signature
    REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("cd2.pt", b)), mc::Error);
  }
  {
    auto b = zip;
    b[cd_off + 44] = 0x7f;  // first entry's local header offset, high byte
    REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("cd3.pt", b)), mc::Error);
  }
  {
    auto b = zip;
    b[eocd + 10] = 0xff;  // entry count larger than the directory
    REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("cd4.pt", b)), mc::Error);
  }
  // Wrong magic number of a legacy file; truncated legacy files.
  auto legacy = read_bytes(fixture("sd_legacy.pt"));
  {
    auto b = legacy;
    b[5] ^= 0x01;  // inside the LONG1 magic
    REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("magic.pt", b)), mc::Error);
    CHECK_THROWS_WITH(mc::io::load_torch(tmp.write("magic.pt", b)), Catch::Contains("magic"));
  }
  for (size_t cut : {size_t(1), size_t(10), size_t(20), size_t(100), legacy.size() / 2, legacy.size() - 9,
                     legacy.size() - 1}) {
    INFO("cut at " << cut);
    std::vector<uint8_t> b(legacy.begin(), legacy.begin() + long(cut));
    REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("cut_legacy.pt", b)), mc::Error);
  }
  REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("empty.pt", {})), mc::Error);
  REQUIRE_THROWS_AS(mc::io::load_torch(tmp.write("text.pt", {'h', 'e', 'l', 'l', 'o'})), mc::Error);
  REQUIRE_THROWS_AS(mc::io::load_torch(fixture("does_not_exist.pt")), mc::Error);
}

TEST_CASE("zip reader: entries, stored views, CRC checks", "[io][zip]") {
  const TempDir& tmp = temp();
  mc::io::ZipReader z = mc::io::ZipReader::open(fixture("sd_zip.pt"));
  const mc::io::ZipEntry& e = z.entry("sd_zip/data.pkl");
  CHECK(e.method == 0);
  mc::io::ZipBytes b = z.entry_bytes(e, true);
  CHECK(b.size == e.size);
  CHECK(b.data >= z.file()->data());  // a view into the mapping
  CHECK(b.data + b.size <= z.file()->data() + z.file()->size());
  CHECK_THROWS_AS(z.entry("nope"), mc::Error);
  // Flip a byte of the stored pickle: the CRC check catches it when asked.
  auto bytes = read_bytes(fixture("sd_zip.pt"));
  size_t off = size_t(b.data - z.file()->data());
  bytes[off + 5] ^= 0x20;
  mc::io::ZipReader z2 = mc::io::ZipReader::open(tmp.write("flip.zip", bytes));
  CHECK_NOTHROW(z2.entry_bytes("sd_zip/data.pkl"));
  CHECK_THROWS_WITH(z2.entry_bytes("sd_zip/data.pkl", true), Catch::Contains("CRC"));
  // Deflated entries: a flipped byte fails the decoder or the CRC.
  mc::io::ZipReader zc = mc::io::ZipReader::open(fixture("np_savez_compressed.npz"));
  const mc::io::ZipEntry& ce = zc.entries().at(0);
  REQUIRE(ce.method == 8);
  auto cbytes = read_bytes(fixture("np_savez_compressed.npz"));
  size_t data_off = size_t(ce.header_offset + 30 + ce.name.size() +
                           mc::io::zip_detail::rd16(cbytes.data() + ce.header_offset + 28));
  cbytes[data_off + ce.compressed_size / 2] ^= 0x10;
  mc::io::ZipReader zc2 = mc::io::ZipReader::open(tmp.write("flip.npz", cbytes));
  CHECK_THROWS_AS(zc2.entry_bytes(ce.name), mc::Error);
}

TEST_CASE("fuzz: truncated and bit-flipped fixtures only ever throw mc::Error", "[io][fuzz]") {
  const TempDir& tmp = temp();
  std::mt19937 rng(1234);
  for (const char* name : {"sd_zip.pt", "sd_legacy.pt", "dtypes_legacy.pt", "nested_zip.pt", "np_savez.npz",
                           "np_savez_compressed.npz", "clip_trace.pt", "omegaconf_zip.pt"}) {
    INFO(name);
    const bool npz = std::string(name).find(".npz") != std::string::npos;
    auto bytes = read_bytes(fixture(name));
    auto load = [&](const std::vector<uint8_t>& b) {
      std::string p = tmp.write(npz ? "fuzz.npz" : "fuzz.pt", b);
      load_or_error([&] {
        if (npz) {
          mc::io::load_npz(p);
        } else {
          mc::io::TorchFile f = mc::io::load_torch(p);
          load_or_error([&] { mc::io::find_state_dict(f); });
        }
      });
      std::remove(p.c_str());
    };
    for (int k = 0; k < 24; ++k) {
      size_t cut = size_t(rng() % bytes.size());
      load(std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(cut)));
    }
    for (int k = 0; k < 40; ++k) {
      auto b = bytes;
      int flips = 1 + int(rng() % 3);
      for (int m = 0; m < flips; ++m) b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8));
      load(b);
    }
  }
}
