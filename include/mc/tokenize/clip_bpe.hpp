// mc/tokenize/clip_bpe.hpp — CLIP's byte-level BPE tokenizer, id-for-id equal to open_clip's.
//
//   auto tok = mc::tokenize::ClipTokenizer::from_gz("bpe_simple_vocab_16e6.txt.gz");
//   // or from memory: ClipTokenizer::from_merges_text(inflated_text) / from_gz_bytes(data, size)
//   std::vector<int64_t> ids = tok.encode("A chest X-ray");        // no start/end tokens
//   mc::Tensor batch = tok.tokenize({"a chest x-ray", "an mri"});  // i64 [2, 77]: SOT ids EOT 0 0 ...
//   std::string text = tok.decode(ids);                            // "a chest x - ray "
//
// encode(text) follows open_clip's SimpleTokenizer (clean="lower") step by step:
//   1. ftfy.fix_text(text)      — the subset in `clean::fix_text` below (see there for what is not done);
//   2. html.unescape, twice     — `clean::html_unescape` (Python's html module semantics);
//   3. strip, collapse runs of whitespace to one space (str.split / str.isspace), str.lower();
//   4. split with  <sot>|<eot>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+  (IGNORECASE);
//   5. each piece's UTF-8 bytes -> GPT-2 byte characters, '</w>' on the last one, BPE merges by rank.
// The vocabulary: 256 byte characters, the same with '</w>', one token per merge, then start / end of text
// (49406 / 49407 for the CLIP file). In the split pattern the special tokens are spelled as open_clip 3
// spells them ("<start_of_text>", "<end_of_text>"; OpenAI's original code used "<|startoftext|>"); the
// vocab.json factory uses the names found in that file ("<|startoftext|>" ...). Text equal to a special
// name yields its id, as in open_clip.
//
// Invalid UTF-8 in the input is read as U+FFFD per maximal ill-formed subsequence (Python never sees such
// text; it would fail earlier). The tokenizer is movable, not copyable. Its BPE cache (word -> ids) is per
// instance and guarded by a mutex, so one tokenizer may be shared by threads; the cache is cleared when
// it reaches kCacheLimit words.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/io/file.hpp"
#include "mc/io/inflate.hpp"
#include "mc/tokenize/unicode.hpp"

namespace mc::tokenize {

// ---------------------------------------------------------------------------------------------------
// Text clean-up: Python's html.unescape and the parts of ftfy.fix_text that apply to real text
// ---------------------------------------------------------------------------------------------------
namespace clean {

namespace detail {

struct Entity {
  std::u32string value;
  bool ftfy_upper = false;  // ftfy also decodes the ALL-CAPS spelling of this name ...
  std::u32string upper;     // ... as this value
};

inline std::u32string parse_hex_list(std::string_view s) {
  std::u32string out;
  uint32_t v = 0;
  bool any = false;
  for (char c : s) {
    if (c == ',') {
      out.push_back(char32_t(v));
      v = 0, any = false;
      continue;
    }
    v = v * 16 + uint32_t(c <= '9' ? c - '0' : c - 'a' + 10);
    any = true;
  }
  if (any) out.push_back(char32_t(v));
  return out;
}

// name (with its ';' when it has one) -> entity, from uni::kHtmlEntities.
inline const std::unordered_map<std::string, Entity>& html5_entities() {
  static const std::unordered_map<std::string, Entity> table = [] {
    std::unordered_map<std::string, Entity> t;
    std::string_view all(uni::kHtmlEntities);
    size_t pos = 0;
    while (pos < all.size()) {
      size_t end = all.find(' ', pos);
      if (end == std::string_view::npos) end = all.size();
      std::string_view item = all.substr(pos, end - pos);
      size_t eq = item.find('=');
      size_t bang = item.find('!');
      Entity e;
      e.value = parse_hex_list(item.substr(eq + 1, (bang == std::string_view::npos ? item.size() : bang) - eq - 1));
      if (bang != std::string_view::npos) {
        e.ftfy_upper = true;
        e.upper = bang + 1 < item.size() ? parse_hex_list(item.substr(bang + 1)) : e.value;
      }
      t.emplace(std::string(item.substr(0, eq)), std::move(e));
      pos = end + 1;
    }
    return t;
  }();
  return table;
}

// ftfy's HTML_ENTITIES: "&name;" for every html5 name ending in ';', plus the ALL-CAPS spellings.
inline const std::unordered_map<std::string, std::u32string>& ftfy_entities() {
  static const std::unordered_map<std::string, std::u32string> table = [] {
    std::unordered_map<std::string, std::u32string> t;
    for (const auto& [name, e] : html5_entities()) {
      if (name.empty() || name.back() != ';') continue;
      t.emplace("&" + name, e.value);
      if (e.ftfy_upper) {
        std::string up = "&" + name;
        for (char& c : up)
          if (c >= 'a' && c <= 'z') c = char(c - 32);
        t.emplace(up, e.upper);
      }
    }
    return t;
  }();
  return table;
}

inline bool ascii_name(std::u32string_view s, std::string& out) {
  out.clear();
  for (char32_t c : s) {
    if (c >= 0x80) return false;
    out.push_back(char(c));
  }
  return true;
}

inline bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
inline bool is_ascii_hex(char32_t c) { return is_ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
inline bool is_ascii_alnum(char32_t c) {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// The text a numeric character reference decodes to (html module rules).
inline void append_numeric_ref(std::u32string& out, std::u32string_view digits, int base) {
  uint64_t num = 0;
  for (char32_t c : digits) {
    uint32_t d = is_ascii_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
    num = num * uint64_t(base) + d;
    if (num > 0x10FFFF) num = 0x110000;  // saturate: anything above the range decodes to U+FFFD
  }
  for (const auto& r : uni::kHtmlNumericRemap)
    if (r[0] == num) {
      out.push_back(char32_t(r[1]));
      return;
    }
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out.push_back(0xFFFD);
    return;
  }
  for (const auto& r : uni::kHtmlNumericDropped)
    if (num >= r[0] && num <= r[1]) return;
  out.push_back(char32_t(num));
}

}  // namespace detail

// Python's html.unescape: numeric references (&#65; &#x41;, ';' optional) and the HTML5 named references,
// including the legacy names that may omit ';' and the longest-prefix rule for unknown names.
inline std::u32string html_unescape(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  const auto& ents = detail::html5_entities();
  std::u32string out;
  out.reserve(s.size());
  std::string name;
  size_t i = 0, n = s.size();
  while (i < n) {
    char32_t c = s[i];
    if (c != U'&' || i + 1 >= n) {
      out.push_back(c);
      ++i;
      continue;
    }
    size_t j = i + 1;
    if (s[j] == U'#') {
      // &#[0-9]+;?  |  &#[xX][0-9a-fA-F]+;?
      size_t k = j + 1;
      while (k < n && detail::is_ascii_digit(s[k])) ++k;
      if (k > j + 1) {
        detail::append_numeric_ref(out, s.substr(j + 1, k - j - 1), 10);
        i = (k < n && s[k] == U';') ? k + 1 : k;
        continue;
      }
      if (j + 1 < n && (s[j + 1] == U'x' || s[j + 1] == U'X')) {
        k = j + 2;
        while (k < n && detail::is_ascii_hex(s[k])) ++k;
        if (k > j + 2) {
          detail::append_numeric_ref(out, s.substr(j + 2, k - j - 2), 16);
          i = (k < n && s[k] == U';') ? k + 1 : k;
          continue;
        }
      }
      out.push_back(c);  // no reference here
      ++i;
      continue;
    }
    // [^\t\n\f <&#;]{1,32};?
    size_t k = j;
    while (k < n && k - j < 32) {
      char32_t d = s[k];
      if (d == U'\t' || d == U'\n' || d == U'\f' || d == U' ' || d == U'<' || d == U'&' || d == U'#' || d == U';')
        break;
      ++k;
    }
    if (k == j) {
      out.push_back(c);
      ++i;
      continue;
    }
    if (k < n && s[k] == U';') ++k;
    std::u32string_view ref = s.substr(j, k - j);
    if (detail::ascii_name(ref, name)) {
      if (auto it = ents.find(name); it != ents.end()) {
        out += it->second.value;
        i = k;
        continue;
      }
    }
    bool done = false;
    for (size_t x = ref.size() - 1; x >= 2 && x < ref.size(); --x) {  // longest known prefix (>= 2 chars)
      if (!detail::ascii_name(ref.substr(0, x), name)) continue;
      if (auto it = ents.find(name); it != ents.end()) {
        out += it->second.value;
        out += ref.substr(x);
        done = true;
        break;
      }
    }
    if (!done) {
      out.push_back(U'&');
      out += ref;
    }
    i = k;
  }
  return out;
}

// ftfy.fixes.unescape_html: only "&#?[0-9A-Za-z]{1,24};" references; html5 names with ';', their
// ALL-CAPS spellings for a safe subset, and numeric references that html.unescape decodes completely.
inline std::u32string ftfy_unescape_html(std::u32string_view s) {
  const auto& ents = detail::ftfy_entities();
  std::u32string out;
  out.reserve(s.size());
  std::string key;
  size_t i = 0, n = s.size();
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < n && s[j] == U'#') ++j;
    size_t k = j;
    while (k < n && detail::is_ascii_alnum(s[k])) ++k;
    if (k == j || k - j > 24 || k >= n || s[k] != U';') {
      out.push_back(s[i++]);
      continue;
    }
    std::u32string_view ref = s.substr(i, k + 1 - i);
    detail::ascii_name(ref, key);
    if (auto it = ents.find(key); it != ents.end()) {
      out += it->second;
    } else if (ref.size() > 1 && ref[1] == U'#') {
      std::u32string un = html_unescape(ref);
      out += un.find(U';') == std::u32string::npos ? std::u32string_view(un) : ref;
    } else {
      out += ref;
    }
    i = k + 1;
  }
  return out;
}

namespace detail {

inline bool latin_ligature(char32_t c, const char32_t*& letters) {
  // ftfy.chardata.LIGATURES: Latin ligatures and legacy digraphs -> their letters.
  static constexpr struct {
    char32_t from;
    char32_t to[4];
  } kLig[] = {
      {0x132, U"IJ"},      {0x133, U"ij"},  {0x149, U"\u02bcn"}, {0x1C4, U"D\u017d"}, {0x1C5, U"D\u017e"},
      {0x1C6, U"d\u017e"}, {0x1C7, U"LJ"},  {0x1C8, U"Lj"},      {0x1C9, U"lj"},      {0x1CA, U"NJ"},
      {0x1CB, U"Nj"},      {0x1CC, U"nj"},  {0x1F1, U"DZ"},      {0x1F2, U"Dz"},      {0x1F3, U"dz"},
      {0xFB00, U"ff"},     {0xFB01, U"fi"}, {0xFB02, U"fl"},     {0xFB03, U"ffi"},    {0xFB04, U"ffl"},
      {0xFB05, U"\u017ft"}, {0xFB06, U"st"},
  };
  for (const auto& l : kLig)
    if (l.from == c) {
      letters = l.to;
      return true;
    }
  return false;
}

inline bool width_map(char32_t c, std::u32string& out) {
  if (c != 0x3000 && (c < 0xFF01 || c > 0xFFEF)) return false;
  for (const auto& r : uni::kWidthRuns)
    if (c >= r.lo && c <= r.hi) {
      out.push_back(char32_t(r.target + (c - r.lo)));
      if (r.second) out.push_back(char32_t(r.second));
      return true;
    }
  return false;
}

inline bool ftfy_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// One pass of ftfy's character fixers, in ftfy's order.
inline std::u32string fix_pass(std::u32string_view in, bool unescape) {
  std::u32string s = unescape ? ftfy_unescape_html(in) : std::u32string(in);
  // (fix_encoding: mojibake detection is not replicated; see fix_text.)
  std::u32string t;
  t.reserve(s.size());
  // fix_c1_controls: U+0080..U+009F -> their windows-1252 characters ("sloppy": undefined bytes stay).
  // fix_latin_ligatures, fix_character_width, uncurl_quotes: single-character maps, applied in turn.
  for (char32_t c : s) {
    if (c >= 0x80 && c <= 0x9F) {
      for (const auto& r : uni::kHtmlNumericRemap)  // the same windows-1252 table as html's
        if (r[0] == c) c = char32_t(r[1]);
    }
    const char32_t* lig = nullptr;
    if (c >= 0x132 && latin_ligature(c, lig)) {
      for (; *lig; ++lig) t.push_back(*lig);
      continue;
    }
    t.push_back(c);
  }
  s.clear();
  for (char32_t c : t)
    if (!width_map(c, s)) s.push_back(c);
  for (char32_t& c : s) {
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    else if (c >= 0x201C && c <= 0x201F) c = U'"';
  }
  // fix_line_breaks: \r\n, \r, U+2028, U+2029, U+0085 -> \n.
  t.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    char32_t c = s[i];
    if (c == U'\r') {
      t.push_back(U'\n');
      if (i + 1 < s.size() && s[i + 1] == U'\n') ++i;
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      t.push_back(U'\n');
    } else {
      t.push_back(c);
    }
  }
  // fix_surrogates: nothing to do, decoded UTF-8 holds no surrogates.
  // remove_terminal_escapes: ESC '[' (\d|;)* [A-Za-z]   (\d: any Unicode decimal digit).
  s.clear();
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == 0x1B && i + 1 < t.size() && t[i + 1] == U'[') {
      size_t k = i + 2;
      while (k < t.size() && (t[k] == U';' || uni::has(t[k], uni::kCatNd))) ++k;
      if (k < t.size() && t[k] < 0x80 && ((t[k] | 0x20) >= 'a' && (t[k] | 0x20) <= 'z')) {
        i = k;
        continue;
      }
    }
    s.push_back(t[i]);
  }
  // remove_control_chars.
  t.clear();
  for (char32_t c : s)
    if (!ftfy_control(c)) t.push_back(c);
  // normalization="NFC".
  if (!uni::normalization_trivial(t)) return uni::nfc(t);
  return t;
}

}  // namespace detail

// ftfy.fix_text with its default configuration, for text that is not mojibake.
//
// Replicated, in ftfy's order and repeated until nothing changes, per line as ftfy segments the text:
// unescape_html="auto" (ftfy's entity subset; off for the first line containing '<' and all after it),
// fix_c1_controls,
// fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks, remove_terminal_escapes,
// remove_control_chars, NFC.
// Not replicated: fix_encoding (ftfy's "badness" heuristic that detects mojibake such as "Ã©" or
// "â€™" and re-decodes it, with its restore_byte_a0 / replace_lossy_sequences / decode_inconsistent_utf8
// helpers). Text that ftfy would re-decode comes out here unchanged; in practice that is mojibake and
// C1 control characters next to Latin-1 letters or symbols. fix_surrogates has nothing to do.
inline std::u32string fix_text(std::u32string_view text) {
  constexpr size_t kMaxSegment = 1000000;  // ftfy's max_decode_length
  std::u32string out;
  out.reserve(text.size());
  bool unescape = true;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t brk = text.find(U'\n', pos);
    brk = brk == std::u32string_view::npos ? text.size() : brk + 1;
    if (brk - pos > kMaxSegment) brk = pos + kMaxSegment;
    std::u32string_view seg = text.substr(pos, brk - pos);
    if (seg.find(U'<') != std::u32string_view::npos) unescape = false;  // ftfy's "auto", sticky
    std::u32string cur(seg);
    for (;;) {
      std::u32string next = detail::fix_pass(cur, unescape);
      if (next == cur) break;
      cur = std::move(next);
    }
    out += cur;
    pos = brk;
  }
  return out;
}

// Python's str.split() joined by single spaces (strips and collapses Unicode whitespace).
inline std::u32string collapse_whitespace(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  bool pending = false;
  for (char32_t c : s) {
    if (uni::has(c, uni::kPySpace)) {
      pending = !out.empty();
      continue;
    }
    if (pending) out.push_back(U' ');
    pending = false;
    out.push_back(c);
  }
  return out;
}

// open_clip's clean="lower": fix_text, html.unescape twice, strip, collapse whitespace, lower-case.
inline std::u32string clip_clean(std::u32string_view text) {
  std::u32string s = fix_text(text);
  s = html_unescape(html_unescape(s));
  return uni::to_lower(collapse_whitespace(s));
}

}  // namespace clean

// ---------------------------------------------------------------------------------------------------
// The tokenizer
// ---------------------------------------------------------------------------------------------------

class ClipTokenizer {
 public:
  static constexpr int64_t kMerges = 49152 - 256 - 2;  // 48,894 merges of the CLIP vocabulary
  static constexpr size_t kCacheLimit = 1 << 18;

  // open_clip's vocabulary text (bpe_simple_vocab_16e6.txt, inflated) held in memory: a header line, then
  // "a b" merges, of which the first n_merges are used (kMerges for CLIP's file; a smaller model's card may
  // ask for fewer). The vocabulary: 256 byte tokens, the same with "</w>", one token per merge, then the
  // start / end of text. `what` names the source in errors.
  static ClipTokenizer from_merges_text(std::string_view text, const std::string& what = "BPE merges",
                                        int64_t n_merges = kMerges, const std::string& sot_name = "<start_of_text>",
                                        const std::string& eot_name = "<end_of_text>") {
    MC_CHECK(n_merges >= 0, what, ": the number of merges to use must not be negative (got ", n_merges, ")");
    check_utf8(text, what);
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(size_t(std::min<int64_t>(n_merges, int64_t(text.size() / 2 + 1))));
    size_t pos = 0;
    int64_t line_no = 0;
    while (int64_t(merges.size()) < n_merges) {
      MC_CHECK(pos < text.size(), what, ": has only ", merges.size(), " merges, expected ", n_merges);
      size_t end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      std::string_view line = text.substr(pos, end - pos);
      pos = end + 1;
      if (line_no++ == 0) continue;  // header ("#version: 0.2")
      merges.push_back(split_merge(line, what, line_no));
    }
    ClipTokenizer t;
    std::vector<std::string> vocab;
    vocab.reserve(merges.size() + 514);
    for (int b = 0; b < 256; ++b) vocab.push_back(t.byte_char_[b]);
    for (int b = 0; b < 256; ++b) vocab.push_back(t.byte_char_[b] + "</w>");
    for (const auto& [a, b] : merges) vocab.push_back(a + b);
    vocab.push_back(sot_name);
    vocab.push_back(eot_name);
    std::unordered_map<std::string, int32_t> enc;
    enc.reserve(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) enc[vocab[i]] = int32_t(i);  // later duplicates win
    t.build(what, std::move(enc), merges, sot_name, eot_name);
    return t;
  }

  // open_clip's gzip file held in memory (see from_merges_text).
  static ClipTokenizer from_gz_bytes(const uint8_t* data, size_t size, const std::string& what = "BPE merges (gzip)",
                                     const std::string& sot_name = "<start_of_text>",
                                     const std::string& eot_name = "<end_of_text>") {
    auto bytes = io::gunzip(data, size, what);
    std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return from_merges_text(text, what, kMerges, sot_name, eot_name);
  }

  // open_clip's file (bpe_simple_vocab_16e6.txt.gz): gzip text, a header line, then "a b" merges.
  static ClipTokenizer from_gz(const std::string& path, const std::string& sot_name = "<start_of_text>",
                               const std::string& eot_name = "<end_of_text>") {
    auto raw = io::read_file(path);
    return from_gz_bytes(raw.data(), raw.size(), path, sot_name, eot_name);
  }

  // Hugging Face files: vocab.json {token: id} and merges.txt ("#version" header line, then "a b").
  static ClipTokenizer from_hf(const std::string& vocab_json, const std::string& merges_txt,
                               const std::string& sot_name = "<|startoftext|>",
                               const std::string& eot_name = "<|endoftext|>") {
    auto raw = io::read_file(vocab_json);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(raw.begin(), raw.end());
    } catch (const std::exception& e) {
      fail(vocab_json, ": not valid JSON (", e.what(), ")");
    }
    MC_CHECK(j.is_object(), vocab_json, ": vocab.json must be a JSON object {token: id}");
    std::unordered_map<std::string, int32_t> enc;
    for (auto it = j.begin(); it != j.end(); ++it) {
      MC_CHECK(it.value().is_number_integer(), vocab_json, ": id of token '", it.key(), "' is not an integer");
      int64_t id = it.value().get<int64_t>();
      MC_CHECK(id >= 0 && id < (int64_t(1) << 30), vocab_json, ": id ", id, " of token '", it.key(),
               "' out of range");
      enc[it.key()] = int32_t(id);
    }
    auto mraw = io::read_file(merges_txt);
    std::string_view text(reinterpret_cast<const char*>(mraw.data()), mraw.size());
    check_utf8(text, merges_txt);
    std::vector<std::pair<std::string, std::string>> merges;
    size_t pos = 0;
    int64_t line_no = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      std::string_view line = text.substr(pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line_no == 1 && line.substr(0, 8) == "#version") continue;
      if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank (e.g. the last)
      merges.push_back(split_merge(line, merges_txt, line_no));
    }
    ClipTokenizer t;
    t.build(vocab_json, std::move(enc), merges, sot_name, eot_name);
    return t;
  }

  int64_t vocab_size() const { return int64_t(id_bytes_.size()); }
  int64_t sot_id() const { return sot_; }
  int64_t eot_id() const { return eot_; }

  // Token ids of `text` (UTF-8), without start / end of text.
  std::vector<int64_t> encode(std::string_view text) const {
    std::u32string s = clean::clip_clean(uni::decode_utf8(text));
    std::vector<int64_t> ids;
    std::string piece;
    std::vector<int32_t> word;
    size_t i = 0, n = s.size();
    while (i < n) {
      size_t len = match_at(s, i);
      if (len == 0) {  // whitespace: no alternative matches here
        ++i;
        continue;
      }
      piece.clear();
      for (size_t k = i; k < i + len; ++k) uni::append_utf8(piece, s[k]);
      i += len;
      bpe(piece, word);
      for (int32_t id : word) ids.push_back(id);
    }
    return ids;
  }

  // i64 [texts.size(), context_length]: SOT, the ids, EOT, then zeros. Too long: cut to context_length
  // and make the last token EOT (open_clip).
  Tensor tokenize(const std::vector<std::string>& texts, int64_t context_length = 77) const {
    MC_CHECK(context_length >= 1, "ClipTokenizer::tokenize: context_length must be >= 1, got ", context_length);
    Tensor out = Tensor::empty({int64_t(texts.size()), context_length}, DType::I64);
    int64_t* p = out.data<int64_t>();
    std::fill(p, p + int64_t(texts.size()) * context_length, int64_t(0));
    for (size_t r = 0; r < texts.size(); ++r) {
      std::vector<int64_t> ids = encode(texts[r]);
      int64_t* row = p + int64_t(r) * context_length;
      int64_t total = int64_t(ids.size()) + 2;
      int64_t len = std::min(total, context_length);
      row[0] = sot_;
      for (int64_t k = 1; k < len; ++k) row[k] = k - 1 < int64_t(ids.size()) ? ids[size_t(k - 1)] : eot_;
      row[len - 1] = eot_;
    }
    return out;
  }

  // open_clip's decode: token strings -> bytes -> UTF-8 (invalid bytes become U+FFFD), "</w>" -> " ".
  std::string decode(const std::vector<int64_t>& ids) const {
    std::string bytes;
    for (int64_t id : ids) {
      MC_CHECK(id >= 0 && id < vocab_size() && has_id_[size_t(id)], "ClipTokenizer::decode: unknown token id ", id);
      bytes += id_bytes_[size_t(id)];
    }
    std::string text = uni::encode_utf8(uni::decode_utf8(bytes));
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 4, "</w>") == 0) {
        out.push_back(' ');
        i += 4;
      } else {
        out.push_back(text[i++]);
      }
    }
    return out;
  }

 private:
  struct Cache {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };

  ClipTokenizer() : cache_(std::make_unique<Cache>()) {
    // GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the others to U+0100 + k.
    int k = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_cp_[b] = printable ? char32_t(b) : char32_t(256 + k++);
    }
    // Vocabulary order is the printable bytes first, then the others.
    int idx = 0;
    for (int pass = 0; pass < 2; ++pass)
      for (int b = 0; b < 256; ++b)
        if ((byte_cp_[b] < 256) == (pass == 0)) byte_order_[idx++] = b;
    for (int i = 0; i < 256; ++i) {
      int b = byte_order_[i];
      std::string s;
      uni::append_utf8(s, byte_cp_[b]);
      byte_char_[i] = s;
    }
  }

  static void check_utf8(std::string_view text, const std::string& path) {
    std::u32string tmp;
    MC_CHECK(uni::decode_utf8(text, tmp), path, ": not valid UTF-8");
  }

  static std::pair<std::string, std::string> split_merge(std::string_view line, const std::string& path,
                                                         int64_t line_no) {
    std::vector<std::string> parts;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
      if (j > i) parts.emplace_back(line.substr(i, j - i));
      i = j;
    }
    MC_CHECK(parts.size() == 2, path, ": line ", line_no, ": bad merges line '", std::string(line),
             "' (expected two symbols separated by a space)");
    return {std::move(parts[0]), std::move(parts[1])};
  }

  void build(const std::string& what, std::unordered_map<std::string, int32_t> enc,
             const std::vector<std::pair<std::string, std::string>>& merges, const std::string& sot_name,
             const std::string& eot_name) {
    auto lookup = [&](const std::string& tok, const char* role) {
      auto it = enc.find(tok);
      MC_CHECK(it != enc.end(), what, ": ", role, " '", tok, "' is not in the vocabulary");
      return it->second;
    };
    for (int i = 0; i < 256; ++i) {
      int b = byte_order_[i];
      byte_id_[b] = lookup(byte_char_[i], "byte token");
      byte_w_id_[b] = lookup(byte_char_[i] + "</w>", "byte token");
    }
    sot_ = lookup(sot_name, "start-of-text token");
    eot_ = lookup(eot_name, "end-of-text token");
    sot_name_ = uni::decode_utf8(sot_name);
    eot_name_ = uni::decode_utf8(eot_name);
    sot_str_ = sot_name;
    eot_str_ = eot_name;
    ranks_.reserve(merges.size() * 2);
    for (size_t r = 0; r < merges.size(); ++r) {
      const auto& [a, b] = merges[r];
      auto ia = enc.find(a), ib = enc.find(b);
      if (ia == enc.end() || ib == enc.end()) continue;  // can never be adjacent symbols: never applies
      int32_t merged = lookup(a + b, "merged token");
      ranks_[key(ia->second, ib->second)] = {int32_t(r), merged};  // later duplicates win
    }
    // Bytes of every token (for decode): each character of the token maps back to its byte.
    int32_t max_id = 0;
    for (const auto& [tok, id] : enc) max_id = std::max(max_id, id);
    id_bytes_.assign(size_t(max_id) + 1, std::string());
    has_id_.assign(size_t(max_id) + 1, false);
    std::unordered_map<char32_t, uint8_t> byte_of;
    for (int b = 0; b < 256; ++b) byte_of[byte_cp_[b]] = uint8_t(b);
    for (const auto& [tok, id] : enc) {
      MC_CHECK(!has_id_[size_t(id)], what, ": id ", id, " is used by two tokens");
      has_id_[size_t(id)] = true;
      std::string& out = id_bytes_[size_t(id)];
      for (char32_t c : uni::decode_utf8(tok)) {
        auto it = byte_of.find(c);
        if (it != byte_of.end()) {
          out.push_back(char(it->second));
        } else {
          uni::append_utf8(out, c);  // not a byte character (only in foreign vocabularies): keep as text
        }
      }
    }
  }

  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  // Does pattern character p (ASCII, from a special token or contraction) match text character c under
  // the regex module's IGNORECASE?
  static bool ci_eq(char32_t p, char32_t c) {
    if (p == c) return true;
    if (p >= 'a' && p <= 'z') {
      if (c == p - 32) return true;
      for (const auto& f : uni::kRegexAsciiFolds)
        if (f[0] == c && f[1] == p) return true;
    } else if (p >= 'A' && p <= 'Z') {
      return ci_eq(char32_t(p + 32), c);
    }
    return false;
  }

  static bool ci_prefix(const std::u32string& s, size_t i, std::u32string_view lit) {
    if (s.size() - i < lit.size()) return false;
    for (size_t k = 0; k < lit.size(); ++k)
      if (!ci_eq(lit[k], s[i + k])) return false;
    return true;
  }

  // Length of the split-pattern match starting at s[i] (0: no alternative matches, i.e. whitespace).
  size_t match_at(const std::u32string& s, size_t i) const {
    if (!sot_name_.empty() && ci_prefix(s, i, sot_name_)) return sot_name_.size();
    if (!eot_name_.empty() && ci_prefix(s, i, eot_name_)) return eot_name_.size();
    if (s[i] == U'\'') {
      static constexpr std::u32string_view kContractions[] = {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};
      for (auto c : kContractions)
        if (ci_prefix(s, i, c)) return c.size();
    }
    uint32_t p = uni::props(s[i]);
    size_t j = i + 1;
    if (p & uni::kReLetter) {
      while (j < s.size() && (uni::props(s[j]) & uni::kReLetter)) ++j;
      return j - i;
    }
    if (p & uni::kReNumber) return 1;
    if (p & uni::kReSpace) return 0;
    while (j < s.size() && !(uni::props(s[j]) & (uni::kReLetter | uni::kReNumber | uni::kReSpace))) ++j;
    return j - i;
  }

  // BPE of one pre-token (UTF-8 bytes) -> ids, through the cache.
  void bpe(const std::string& piece, std::vector<int32_t>& word) const {
    word.clear();
    if (piece == sot_str_) {  // open_clip seeds its cache with the special tokens
      word.push_back(sot_);
      return;
    }
    if (piece == eot_str_) {
      word.push_back(eot_);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(cache_->mu);
      auto it = cache_->map.find(piece);
      if (it != cache_->map.end()) {
        word = it->second;
        return;
      }
    }
    for (size_t k = 0; k < piece.size(); ++k) {
      uint8_t b = uint8_t(piece[k]);
      word.push_back(k + 1 == piece.size() ? byte_w_id_[b] : byte_id_[b]);
    }
    while (word.size() > 1) {
      int32_t best_rank = INT32_MAX, a = 0, b = 0, merged = 0;
      for (size_t k = 0; k + 1 < word.size(); ++k) {
        auto it = ranks_.find(key(word[k], word[k + 1]));
        if (it != ranks_.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          a = word[k], b = word[k + 1], merged = it->second.second;
        }
      }
      if (best_rank == INT32_MAX) break;
      size_t w = 0;
      for (size_t k = 0; k < word.size(); ++k) {
        if (k + 1 < word.size() && word[k] == a && word[k + 1] == b) {
          word[w++] = merged;
          ++k;
        } else {
          word[w++] = word[k];
        }
      }
      word.resize(w);
    }
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->map.size() >= kCacheLimit) cache_->map.clear();
    cache_->map.emplace(piece, word);
  }

  std::array<char32_t, 256> byte_cp_{};     // byte -> its character
  std::array<int, 256> byte_order_{};       // vocabulary position -> byte
  std::array<std::string, 256> byte_char_;  // vocabulary position -> UTF-8 of the byte's character
  std::array<int32_t, 256> byte_id_{}, byte_w_id_{};
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> ranks_;  // (a, b) -> (rank, merged id)
  std::vector<std::string> id_bytes_;
  std::vector<bool> has_id_;
  int32_t sot_ = 0, eot_ = 0;
  std::u32string sot_name_, eot_name_;
  std::string sot_str_, eot_str_;
  std::unique_ptr<Cache> cache_;
};

}  // namespace mc::tokenize
