// Tokenizers against their Python references (fixtures from tools/gen_tokenizer_fixtures.py):
// CLIP BPE vs open_clip on every ROCO caption and a list of tricky strings, WordPiece vs transformers'
// BertTokenizer on the ROCO / VQA-RAD / SLAKE texts and tricky strings, tensor layouts, error cases.
#include <catch2/catch.hpp>

#include "test_util.hpp"
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/io/file.hpp"
#include "mc/io/inflate.hpp"
#include "mc/tokenize/clip_bpe.hpp"
#include "mc/tokenize/wordpiece.hpp"

namespace {

using mc_test::error_of;

namespace fs = std::filesystem;
using mc::tokenize::ClipTokenizer;
using mc::tokenize::WordPieceTokenizer;
using Json = nlohmann::json;

const std::string kFixtures = std::string(MC_SOURCE_DIR) + "/tests/fixtures/tokenize/";
const std::string kData = std::string(MC_SOURCE_DIR) + "/../shared/data/";
const std::string kClipVocab = kData + "tokenizers/clip/bpe_simple_vocab_16e6.txt.gz";

uint64_t fnv1a64(const std::vector<int64_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t id : ids)
    for (int b = 0; b < 8; ++b) {
      h ^= uint64_t(id) >> (8 * b) & 0xFF;
      h *= 0x100000001b3ull;
    }
  return h;
}

// The shared data folder is required (CMake disables this test file when it is absent).
void require_data() {
  REQUIRE(fs::exists(kData + "roco"));
  REQUIRE(fs::exists(kClipVocab));
}

const ClipTokenizer& clip() {
  static const ClipTokenizer tok = ClipTokenizer::from_gz(kClipVocab);
  return tok;
}

const WordPieceTokenizer& wordpiece(bool lower) {
  static const WordPieceTokenizer uncased = WordPieceTokenizer::from_vocab(kFixtures + "vocab.txt");
  static const WordPieceTokenizer cased = [] {
    WordPieceTokenizer::Options opt;
    opt.do_lower_case = false;
    return WordPieceTokenizer::from_vocab(kFixtures + "vocab.txt", opt);
  }();
  return lower ? uncased : cased;
}

std::string gunzip_file(const std::string& path) {
  auto raw = mc::io::read_file(path);
  auto out = mc::io::gunzip(raw.data(), raw.size(), path);
  return std::string(out.begin(), out.end());
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') out.push_back(line);
  return out;
}

std::vector<Json> jsonl(const std::string& path) {
  std::vector<Json> out;
  std::ifstream in(path);
  REQUIRE(in.good());
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(Json::parse(line));
  return out;
}

// Little-endian column reader of the .bin.gz fixtures.
struct Columns {
  std::string bytes;
  size_t pos = 0;
  template <class T>
  std::vector<T> take(size_t n) {
    REQUIRE(pos + n * sizeof(T) <= bytes.size());
    std::vector<T> v(n);
    for (size_t i = 0; i < n; ++i) {
      uint64_t x = 0;
      for (size_t b = 0; b < sizeof(T); ++b) x |= uint64_t(uint8_t(bytes[pos + i * sizeof(T) + b])) << (8 * b);
      v[i] = T(x);
    }
    pos += n * sizeof(T);
    return v;
  }
  uint32_t header() {
    REQUIRE(bytes.substr(0, 4) == "MCTK");
    pos = 4;
    REQUIRE(take<uint32_t>(1)[0] == 1);
    return take<uint32_t>(1)[0];
  }
};

// (ID, caption) of every ROCO caption, files in sorted path order, as the fixture generator reads them.
std::vector<std::pair<std::string, std::string>> roco_captions() {
  std::vector<std::string> files;
  for (const auto& split : fs::directory_iterator(kData + "roco"))
    if (split.is_directory())
      for (const auto& sub : fs::directory_iterator(split.path()))
        if (fs::exists(sub.path() / "captions.txt")) files.push_back((sub.path() / "captions.txt").string());
  std::sort(files.begin(), files.end());
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : files) {
    auto raw = mc::io::read_file(f);
    std::string text(raw.begin(), raw.end());
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      if (line.empty()) continue;
      size_t tab = line.find('\t');
      if (tab == std::string::npos) FAIL(f << ": line without a tab: " << line);
      out.emplace_back(line.substr(0, tab), line.substr(tab + 1));
    }
  }
  return out;
}

std::string ids_str(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id);
  }
  return s;
}

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> v;
  std::istringstream in(s);
  for (int64_t x; in >> x;) v.push_back(x);
  return v;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("mc_test_tokenize_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::string p = (path / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
};

// A gzip file holding `data` in stored (uncompressed) DEFLATE blocks.
std::string make_gzip(const std::string& data) {
  std::string out = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, 0, '\xff'};
  size_t pos = 0;
  do {
    size_t n = std::min<size_t>(65535, data.size() - pos);
    bool last = pos + n == data.size();
    out.push_back(char(last ? 1 : 0));
    out.push_back(char(n & 0xFF));
    out.push_back(char(n >> 8));
    out.push_back(char(~n & 0xFF));
    out.push_back(char((~n >> 8) & 0xFF));
    out.append(data, pos, n);
    pos += n;
  } while (pos < data.size());
  uint32_t crc = mc::io::crc32(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  uint32_t size = uint32_t(data.size());
  for (uint32_t v : {crc, size})
    for (int b = 0; b < 4; ++b) out.push_back(char((v >> (8 * b)) & 0xFF));
  return out;
}

// The 256 byte tokens of CLIP's vocabulary in vocabulary order (GPT-2's bytes_to_unicode).
std::vector<std::string> clip_byte_tokens() {
  std::vector<int> order;
  for (int b = '!'; b <= '~'; ++b) order.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) order.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) order.push_back(b);
  std::vector<char32_t> cp(256);
  std::vector<bool> seen(256);
  for (int b : order) cp[size_t(b)] = char32_t(b), seen[size_t(b)] = true;
  int k = 0;
  for (int b = 0; b < 256; ++b)
    if (!seen[size_t(b)]) order.push_back(b), cp[size_t(b)] = char32_t(256 + k++);
  std::vector<std::string> out;
  for (int b : order) out.push_back(mc::tokenize::uni::encode_utf8(std::u32string(1, cp[size_t(b)])));
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// CLIP
// ---------------------------------------------------------------------------------------------------

TEST_CASE("clip: ids equal open_clip on every ROCO caption", "[tokenize][clip]") {
  require_data();
  auto caps = roco_captions();
  Columns c{gunzip_file(kFixtures + "clip_roco.bin.gz")};
  uint32_t n = c.header();
  REQUIRE(n == caps.size());
  auto deltas = c.take<uint32_t>(n);
  auto counts = c.take<uint16_t>(n);
  auto hashes = c.take<uint64_t>(n);

  std::map<std::string, std::string> known;  // ID -> reason
  {
    std::ifstream in(kFixtures + "clip_known_diff.tsv");
    REQUIRE(in.good());
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#') continue;
      size_t tab = line.find('\t');
      known[line.substr(0, tab)] = tab == std::string::npos ? "" : line.substr(tab + 1);
    }
  }
  std::map<std::string, std::vector<int64_t>> full;
  for (const auto& line : lines_of(gunzip_file(kFixtures + "clip_roco_ids.tsv.gz"))) {
    size_t tab = line.find('\t');
    full[line.substr(0, tab)] = parse_ids(line.substr(tab + 1));
  }
  REQUIRE(full.size() >= 100);

  std::set<std::string> differ;
  uint32_t id_num = 0;
  size_t checked_full = 0;
  for (uint32_t i = 0; i < n; ++i) {
    id_num += deltas[i];
    char want_id[16];
    std::snprintf(want_id, sizeof want_id, "ROCO_%05u", id_num);
    if (caps[i].first != want_id) FAIL("caption " << i << " is " << caps[i].first << ", the fixture has " << want_id);
    std::vector<int64_t> ids = clip().encode(caps[i].second);
    bool same = ids.size() == counts[i] && fnv1a64(ids) == hashes[i];
    if (auto it = full.find(caps[i].first); it != full.end()) {
      ++checked_full;
      if (same) CHECK(ids == it->second);
    }
    if (!same) {
      differ.insert(caps[i].first);
      if (!known.count(caps[i].first))
        FAIL_CHECK(caps[i].first << " differs from open_clip: " << caps[i].second << "\n  mc: " << ids_str(ids));
    }
  }
  CHECK(checked_full == full.size());
  std::set<std::string> known_ids;
  for (const auto& kv : known) known_ids.insert(kv.first);
  CHECK(differ == known_ids);
}

TEST_CASE("clip: tricky strings, context rows and decode equal open_clip", "[tokenize][clip]") {
  require_data();
  for (const Json& rec : jsonl(kFixtures + "clip_tricky.jsonl")) {
    std::string text = rec["text"];
    std::vector<int64_t> want = rec["ids"];
    std::vector<int64_t> row = rec["row77"];
    std::vector<int64_t> ids = clip().encode(text);
    INFO("text: " << Json(text).dump());
    if (rec.contains("known_diff")) {
      CHECK(ids != want);  // documented gap (see the fixture's reason); update the fixture when closed
      continue;
    }
    CHECK(ids_str(ids) == ids_str(want));
    mc::Tensor t = clip().tokenize({text});
    REQUIRE(t.shape() == mc::Shape{1, 77});
    std::vector<int64_t> got(t.data<int64_t>(), t.data<int64_t>() + 77);
    CHECK(ids_str(got) == ids_str(row));
    CHECK(clip().decode(ids) == rec["decoded"].get<std::string>());
  }
}

TEST_CASE("clip: context tensor layout and truncation", "[tokenize][clip]") {
  require_data();
  const ClipTokenizer& tok = clip();
  CHECK(tok.sot_id() == 49406);
  CHECK(tok.eot_id() == 49407);
  CHECK(tok.vocab_size() == 49408);
  std::string longer;
  for (int i = 0; i < 200; ++i) longer += "lesion ";
  std::vector<std::string> texts = {"a chest x-ray", "", longer};
  mc::Tensor t = tok.tokenize(texts);
  REQUIRE(t.dtype() == mc::DType::I64);
  REQUIRE(t.shape() == mc::Shape{3, 77});
  const int64_t* p = t.data<int64_t>();
  std::vector<int64_t> a = tok.encode(texts[0]);
  CHECK(p[0] == 49406);
  for (size_t k = 0; k < a.size(); ++k) CHECK(p[1 + k] == a[k]);
  CHECK(p[1 + a.size()] == 49407);
  for (size_t k = a.size() + 2; k < 77; ++k) CHECK(p[k] == 0);
  CHECK(p[77] == 49406);  // empty text: SOT EOT 0 ...
  CHECK(p[78] == 49407);
  CHECK(p[79] == 0);
  std::vector<int64_t> l = tok.encode(longer);
  REQUIRE(l.size() > 100);
  for (int k = 1; k < 76; ++k) CHECK(p[154 + k] == l[size_t(k - 1)]);
  CHECK(p[154 + 76] == 49407);  // cut to 77, last forced to EOT
  mc::Tensor s = tok.tokenize({"a chest x-ray", "b"}, 3);
  REQUIRE(s.shape() == mc::Shape{2, 3});
  CHECK(s.data<int64_t>()[0] == 49406);
  CHECK(s.data<int64_t>()[1] == a[0]);
  CHECK(s.data<int64_t>()[2] == 49407);
  mc::Tensor one = tok.tokenize({"x"}, 1);
  CHECK(one.data<int64_t>()[0] == 49407);
  mc::Tensor none = tok.tokenize({});
  CHECK(none.shape() == mc::Shape{0, 77});
  CHECK_THROWS_AS(tok.tokenize({"x"}, 0), mc::Error);
  // Invalid UTF-8 reads as U+FFFD, one per maximal ill-formed subsequence.
  CHECK(tok.encode("a\xff" "b\xe2\x82") == tok.encode("a\xef\xbf\xbd" "b\xef\xbf\xbd"));
}

TEST_CASE("clip: vocab.json + merges.txt give the same tokenizer", "[tokenize][clip]") {
  require_data();
  // Build the Hugging Face files from the gzip vocabulary.
  std::string text = gunzip_file(kClipVocab);
  auto lines = [&] {
    std::vector<std::string> v;
    size_t pos = 0;
    while (pos <= text.size() && v.size() < size_t(ClipTokenizer::kMerges) + 1) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      v.push_back(text.substr(pos, end - pos));
      pos = end + 1;
    }
    return v;
  }();
  std::vector<std::string> vocab = clip_byte_tokens();
  for (int i = 0; i < 256; ++i) vocab.push_back(vocab[size_t(i)] + "</w>");
  std::string merges = "#version: 0.2\n";
  for (size_t i = 1; i < lines.size(); ++i) {
    merges += lines[i] + "\n";
    size_t sp = lines[i].find(' ');
    vocab.push_back(lines[i].substr(0, sp) + lines[i].substr(sp + 1));
  }
  vocab.push_back("<|startoftext|>");
  vocab.push_back("<|endoftext|>");
  Json j = Json::object();
  for (size_t i = 0; i < vocab.size(); ++i) j[vocab[i]] = i;
  TempDir dir;
  auto hf = ClipTokenizer::from_hf(dir.write("vocab.json", j.dump()), dir.write("merges.txt", merges));
  CHECK(hf.vocab_size() == 49408);
  auto caps = roco_captions();
  for (size_t i = 0; i < caps.size(); i += 37) CHECK(hf.encode(caps[i].second) == clip().encode(caps[i].second));
  CHECK(hf.encode("<|startoftext|>x") == std::vector<int64_t>{49406, 343});
  CHECK(clip().encode("<start_of_text>x") == std::vector<int64_t>{49406, 343});
  std::vector<int64_t> photo = {49406};
  for (int64_t id : hf.encode("a photo")) photo.push_back(id);
  photo.push_back(49407);
  CHECK(hf.decode(photo) == "<|startoftext|>a photo <|endoftext|>");
}

TEST_CASE("clip: in-memory factories give the same ids as the file factory", "[tokenize][clip]") {
  require_data();
  const std::string text = gunzip_file(kClipVocab);
  const std::vector<uint8_t> gz = mc::io::read_file(kClipVocab);
  ClipTokenizer mem = ClipTokenizer::from_merges_text(text, "bpe text");
  ClipTokenizer mem_gz = ClipTokenizer::from_gz_bytes(gz.data(), gz.size(), "bpe bytes");
  CHECK(mem.vocab_size() == clip().vocab_size());
  CHECK(mem_gz.vocab_size() == clip().vocab_size());
  CHECK(mem.sot_id() == clip().sot_id());
  CHECK(mem.eot_id() == clip().eot_id());
  auto caps = roco_captions();
  std::vector<std::string> batch;
  for (size_t i = 0; i < caps.size(); i += 41) {
    const std::string& t = caps[i].second;
    INFO(caps[i].first);
    std::vector<int64_t> want = clip().encode(t);
    CHECK(mem.encode(t) == want);
    CHECK(mem_gz.encode(t) == want);
    if (batch.size() < 16) batch.push_back(t);
  }
  mc::Tensor got = mem.tokenize(batch), want = clip().tokenize(batch);
  REQUIRE(got.numel() == want.numel());
  CHECK(std::equal(got.data<int64_t>(), got.data<int64_t>() + got.numel(), want.data<int64_t>()));
  // Fewer merges (a smaller model's vocabulary): the first n merges, then start / end of text.
  ClipTokenizer small = ClipTokenizer::from_merges_text(text, "bpe text", 300);
  CHECK(small.vocab_size() == 300 + 514);
  CHECK(small.sot_id() == 300 + 512);
  CHECK(small.decode(small.encode("a chest x-ray")) == "a chest x - ray ");
  // Errors name the source given.
  auto msg = error_of([&] { ClipTokenizer::from_merges_text("#version: 0.2\nh e\n", "my merges", 5); });
  CHECK(msg.find("my merges: has only 1 merges, expected 5") != std::string::npos);
  msg = error_of([&] { ClipTokenizer::from_merges_text("#version: 0.2\nh e\n", "my merges", -1); });
  CHECK(msg.find("my merges: the number of merges") != std::string::npos);
  msg = error_of([&] { ClipTokenizer::from_merges_text("#version: 0.2\nh \xff\n", "my merges", 1); });
  CHECK(msg.find("my merges: not valid UTF-8") != std::string::npos);
  msg = error_of([&] { ClipTokenizer::from_gz_bytes(reinterpret_cast<const uint8_t*>("abc"), 3, "my gz"); });
  CHECK(msg.find("my gz") != std::string::npos);
  CHECK(msg.find("not a gzip file") != std::string::npos);
}

TEST_CASE("clip: one tokenizer shared by threads", "[tokenize][clip]") {
  require_data();
  auto caps = roco_captions();
  ClipTokenizer tok = ClipTokenizer::from_gz(kClipVocab);  // fresh cache
  std::vector<std::vector<int64_t>> want;
  for (size_t i = 0; i < 400; ++i) want.push_back(clip().encode(caps[i].second));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < 400; ++i) {
        size_t k = (i * 7 + size_t(t) * 101) % 400;
        if (tok.encode(caps[k].second) != want[k]) ++bad[size_t(t)];
      }
    });
  for (auto& th : threads) th.join();
  CHECK(bad == std::vector<int>(4, 0));
}

TEST_CASE("clip: missing or malformed vocabulary files", "[tokenize][clip][errors]") {
  TempDir dir;
  auto has = [](const std::string& msg, const std::string& part) {
    INFO(msg);
    CHECK(msg.find(part) != std::string::npos);
  };
  has(error_of([&] { ClipTokenizer::from_gz((dir.path / "nope.txt.gz").string()); }), "nope.txt.gz: cannot open");
  std::string notgz = dir.write("plain.txt.gz", "#version\na b\n");
  has(error_of([&] { ClipTokenizer::from_gz(notgz); }), "not a gzip file");
  std::string few = dir.write("few.txt.gz", make_gzip("#version: 0.2\nh e\nt h\n"));
  has(error_of([&] { ClipTokenizer::from_gz(few); }), "has only 2 merges");
  std::string bad = dir.write("bad.txt.gz", make_gzip("#version: 0.2\nh e\nt h e\n"));
  has(error_of([&] { ClipTokenizer::from_gz(bad); }), "line 3: bad merges line");
  std::string badutf = dir.write("badutf.txt.gz", make_gzip("#version: 0.2\nh \xff\n"));
  has(error_of([&] { ClipTokenizer::from_gz(badutf); }), "not valid UTF-8");

  std::string merges = dir.write("merges.txt", "#version: 0.2\nh e\n");
  has(error_of([&] { ClipTokenizer::from_hf(dir.write("v1.json", "[1, 2]"), merges); }),
      "must be a JSON object");
  has(error_of([&] { ClipTokenizer::from_hf(dir.write("v2.json", "{\"a\": "), merges); }), "not valid JSON");
  has(error_of([&] { ClipTokenizer::from_hf(dir.write("v3.json", "{\"a\": \"x\"}"), merges); }),
      "is not an integer");
  has(error_of([&] { ClipTokenizer::from_hf(dir.write("v4.json", "{\"a\": 0}"), merges); }),
      "is not in the vocabulary");
  has(error_of([&] { ClipTokenizer::from_hf(dir.write("v5.json", "{}"), dir.path / "none.txt"); }),
      "none.txt: cannot open");
  // A vocabulary that is complete except for the merged token "he".
  Json j = Json::object();
  for (const std::string& b : clip_byte_tokens()) j[b] = j.size(), j[b + "</w>"] = j.size();
  j["<|startoftext|>"] = j.size();
  j["<|endoftext|>"] = j.size();
  std::string vocab = dir.write("v6.json", j.dump());
  has(error_of([&] { ClipTokenizer::from_hf(vocab, merges); }), "merged token 'he' is not in the vocabulary");
  has(error_of([&] { ClipTokenizer::from_hf(vocab, dir.write("m2.txt", "#version: 0.2\nh e x\n")); }),
      "m2.txt: line 2: bad merges line");
  j["he"] = j.size();
  auto tiny = ClipTokenizer::from_hf(dir.write("v7.json", j.dump()), merges);
  CHECK(tiny.encode("hehe") == std::vector<int64_t>{j["he"], j["h"], j["e</w>"]});
  CHECK(tiny.decode({j["he"], j["h"], j["e</w>"]}) == "hehe ");
  has(error_of([&] { tiny.decode({100000}); }), "unknown token id 100000");
  has(error_of([&] { tiny.decode({-1}); }), "unknown token id -1");
}

// ---------------------------------------------------------------------------------------------------
// WordPiece
// ---------------------------------------------------------------------------------------------------

namespace {

// (key, text) of the WordPiece corpus, in the generator's order.
std::vector<std::pair<std::string, std::string>> wordpiece_corpus() {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [id, cap] : roco_captions()) out.emplace_back("roco/" + id, cap);
  auto load = [](const std::string& path) {
    auto raw = mc::io::read_file(path);
    return Json::parse(raw.begin(), raw.end());
  };
  Json vqa = load(kData + "vqa_rad/trainset.json");
  for (size_t i = 0; i < vqa.size(); ++i)
    out.emplace_back("vqa_rad/train/" + std::to_string(i), vqa[i]["question"].get<std::string>());
  for (const char* split : {"test", "train", "validate"}) {
    Json s = load(kData + "slake/" + split + ".json");
    for (size_t i = 0; i < s.size(); ++i)
      if (s[i].value("q_lang", "") == "en")
        out.emplace_back(std::string("slake/") + split + "/" + std::to_string(i), s[i]["question"].get<std::string>());
  }
  return out;
}

}  // namespace

TEST_CASE("wordpiece: ids equal BertTokenizer on the ROCO / VQA-RAD / SLAKE texts", "[tokenize][wordpiece]") {
  require_data();
  auto corpus = wordpiece_corpus();
  Columns c{gunzip_file(kFixtures + "wordpiece_texts.bin.gz")};
  uint32_t n = c.header();
  auto counts = c.take<uint16_t>(n);
  auto hashes = c.take<uint32_t>(n);
  std::map<std::string, std::vector<int64_t>> full;
  for (const auto& line : lines_of(gunzip_file(kFixtures + "wordpiece_ids.tsv.gz"))) {
    size_t tab = line.find('\t');
    full[line.substr(0, tab)] = parse_ids(line.substr(tab + 1));
  }
  std::set<std::string> seen;
  uint32_t k = 0;
  size_t mismatches = 0, checked_full = 0;
  for (const auto& [key, text] : corpus) {
    if (!seen.insert(text).second) continue;
    REQUIRE(k < n);
    std::vector<int64_t> ids = wordpiece(true).encode(text);
    bool same = ids.size() == counts[k] && uint32_t(fnv1a64(ids)) == hashes[k];
    if (!same) {
      ++mismatches;
      FAIL_CHECK(key << " differs from BertTokenizer: " << text << "\n  mc: " << ids_str(ids));
    }
    if (auto it = full.find(key); it != full.end()) {
      ++checked_full;
      CHECK(ids == it->second);
    }
    ++k;
  }
  CHECK(k == n);
  CHECK(mismatches == 0);
  CHECK(checked_full == full.size());
}

TEST_CASE("wordpiece: the in-memory factory gives the same ids as the file factory", "[tokenize][wordpiece]") {
  require_data();
  const std::vector<uint8_t> raw = mc::io::read_file(kFixtures + "vocab.txt");
  const std::string text(raw.begin(), raw.end());
  WordPieceTokenizer::Options cased;
  cased.do_lower_case = false;
  WordPieceTokenizer lower = WordPieceTokenizer::from_vocab_text(text);
  WordPieceTokenizer upper = WordPieceTokenizer::from_vocab_text(text, cased, "my vocab");
  CHECK(lower.vocab_size() == wordpiece(true).vocab_size());
  CHECK(lower.cls_id() == wordpiece(true).cls_id());
  CHECK_FALSE(upper.options().do_lower_case);
  auto corpus = wordpiece_corpus();
  std::vector<std::string> batch;
  for (size_t i = 0; i < corpus.size(); i += 29) {
    const std::string& t = corpus[i].second;
    INFO(corpus[i].first);
    CHECK(lower.encode(t) == wordpiece(true).encode(t));
    CHECK(upper.encode(t) == wordpiece(false).encode(t));
    if (batch.size() < 16) batch.push_back(t);
  }
  mc::Tensor got = lower.tokenize(batch, 64).input_ids, want = wordpiece(true).tokenize(batch, 64).input_ids;
  REQUIRE(got.numel() == want.numel());
  CHECK(std::equal(got.data<int64_t>(), got.data<int64_t>() + got.numel(), want.data<int64_t>()));
  auto msg = error_of([&] { WordPieceTokenizer::from_vocab_text("[PAD]\n[CLS]\n", {}, "my vocab"); });
  CHECK(msg.find("my vocab: vocab.txt has no [UNK] token") != std::string::npos);
  msg = error_of([&] { WordPieceTokenizer::from_vocab_text("[PAD]\n\xc3(\n", {}, "my vocab"); });
  CHECK(msg.find("my vocab: not valid UTF-8") != std::string::npos);
}

TEST_CASE("wordpiece: tricky strings and batches equal BertTokenizer", "[tokenize][wordpiece]") {
  for (const Json& rec : jsonl(kFixtures + "wordpiece_tricky.jsonl")) {
    if (rec.contains("text")) {
      std::string text = rec["text"];
      bool lower = rec["lower"];
      std::vector<int64_t> want = rec["ids"];
      INFO("text: " << Json(text).dump() << " lower: " << lower);
      CHECK(ids_str(wordpiece(lower).encode(text)) == ids_str(want));
      continue;
    }
    std::vector<std::string> texts = rec["batch"];
    int64_t ctx = rec["context_length"];
    bool pad_to_max = rec["pad_to_max"];
    std::vector<std::vector<int64_t>> ids = rec["input_ids"], mask = rec["attention_mask"];
    INFO("batch of " << texts.size() << ", context " << ctx << ", pad_to_max " << pad_to_max);
    auto b = wordpiece(true).tokenize(texts, ctx, pad_to_max);
    REQUIRE(b.input_ids.dtype() == mc::DType::I64);
    REQUIRE(b.attention_mask.dtype() == mc::DType::I64);
    REQUIRE(b.input_ids.shape() == mc::Shape{int64_t(ids.size()), int64_t(ids[0].size())});
    REQUIRE(b.attention_mask.shape() == b.input_ids.shape());
    const int64_t* pi = b.input_ids.data<int64_t>();
    const int64_t* pm = b.attention_mask.data<int64_t>();
    int64_t len = b.input_ids.shape()[1];
    for (size_t r = 0; r < ids.size(); ++r) {
      CHECK(ids_str(std::vector<int64_t>(pi + int64_t(r) * len, pi + int64_t(r + 1) * len)) == ids_str(ids[r]));
      CHECK(ids_str(std::vector<int64_t>(pm + int64_t(r) * len, pm + int64_t(r + 1) * len)) == ids_str(mask[r]));
    }
  }
}

TEST_CASE("wordpiece: special ids and layout", "[tokenize][wordpiece]") {
  const WordPieceTokenizer& tok = wordpiece(true);
  CHECK(tok.pad_id() == 0);
  CHECK(tok.unk_id() == 1);
  CHECK(tok.cls_id() == 2);
  CHECK(tok.sep_id() == 3);
  CHECK(tok.id_to_token(3) == "[SEP]");
  auto b = tok.tokenize({"x"}, 4);
  const int64_t* p = b.input_ids.data<int64_t>();
  CHECK(p[0] == 2);
  CHECK(p[2] == 3);
  CHECK(p[3] == 0);
  CHECK(b.attention_mask.data<int64_t>()[3] == 0);
  CHECK(tok.encode("a\xff" "b") == tok.encode("ab"));  // U+FFFD is dropped like in BertTokenizer
  auto e = tok.tokenize({}, 8, false);
  CHECK(e.input_ids.shape() == mc::Shape{0, 0});
  CHECK_THROWS_AS(tok.tokenize({"x"}, 1), mc::Error);
  CHECK_THROWS_AS(tok.id_to_token(tok.vocab_size()), mc::Error);
}

TEST_CASE("wordpiece: missing or malformed vocab.txt", "[tokenize][wordpiece][errors]") {
  TempDir dir;
  auto has = [](const std::string& msg, const std::string& part) {
    INFO(msg);
    CHECK(msg.find(part) != std::string::npos);
  };
  has(error_of([&] { WordPieceTokenizer::from_vocab((dir.path / "none.txt").string()); }), "none.txt: cannot open");
  has(error_of([&] { WordPieceTokenizer::from_vocab(dir.write("a.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n")); }),
      "a.txt: vocab.txt has no [UNK] token");
  has(error_of([&] { WordPieceTokenizer::from_vocab(dir.write("b.txt", "[PAD]\n[UNK]\n[SEP]\n")); }),
      "has no [CLS] token");
  has(error_of([&] { WordPieceTokenizer::from_vocab(dir.write("c.txt", "")); }), "has no [UNK] token");
  has(error_of([&] { WordPieceTokenizer::from_vocab(dir.write("d.txt", "[PAD]\n[UNK]\n\xc3(\n")); }),
      "not valid UTF-8");
  // \r\n line ends and a missing final newline are fine.
  auto t = WordPieceTokenizer::from_vocab(dir.write("e.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhel\r\n##lo"));
  CHECK(t.encode("Hello there") == std::vector<int64_t>{4, 5, 1});
  CHECK(t.encode("[MASK]") == std::vector<int64_t>{1, 1, 1});  // no [MASK] in this vocabulary: plain text
}
