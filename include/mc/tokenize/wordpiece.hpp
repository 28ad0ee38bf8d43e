// mc/tokenize/wordpiece.hpp — BERT's WordPiece tokenizer (Hugging Face BertTokenizer, slow Python version).
//
//   auto tok = mc::tokenize::WordPieceTokenizer::from_vocab("vocab.txt");          // uncased
//   // or from memory: WordPieceTokenizer::from_vocab_text(vocab_txt_contents, options)
//   std::vector<int64_t> ids = tok.encode("Is there a pneumothorax?");             // no [CLS] / [SEP]
//   auto batch = tok.tokenize({"a chest x-ray", "an mri"}, 256);                   // [CLS] ... [SEP] [PAD]..
//   // batch.input_ids, batch.attention_mask: i64 [2, 256]
//
// encode(text) follows transformers' Python BertTokenizer (BertTokenizerLegacy in transformers 5; the
// Rust-backed "fast" one differs on unusual text, e.g. it does not apply NFC):
//   1. the text is cut at literal special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]); each becomes its id;
//   2. basic tokenization of every other piece: drop U+0000, U+FFFD and control characters (category C*
//      except \t \n \r), turn whitespace (\t \n \r, Zs) into spaces, put spaces around CJK ideographs, NFC,
//      split on whitespace (str.split); per word: lower-case (str.lower) and strip accents (NFD, drop Mn)
//      when do_lower_case (strip_accents can force or disable the latter), then split off every
//      punctuation character (Unicode P* and the ASCII symbols 33-47, 58-64, 91-96, 123-126);
//   3. WordPiece: greedy longest-match-first with "##" continuations; a word longer than 100 characters or
//      with an unmatchable rest becomes [UNK].
// tokenize() adds [CLS] / [SEP], truncates to context_length keeping [SEP] last, and pads with [PAD]
// (attention_mask 0 there) to context_length, or to the longest row when pad_to_max is false.
//
// vocab.txt: one token per line, the line number is the id (a repeated token keeps its last line, as the
// Python loader does); \n, \r\n and \r end lines. [UNK], [CLS], [SEP], [PAD] must be present; [MASK] is
// recognised in text only when present.
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/io/file.hpp"
#include "mc/tokenize/unicode.hpp"

namespace mc::tokenize {

struct WordPieceOptions {
  bool do_lower_case = true;
  bool tokenize_chinese_chars = true;
  std::optional<bool> strip_accents;  // unset: strip exactly when lower-casing (BERT's default)
  int max_input_chars_per_word = 100;
};

class WordPieceTokenizer {
 public:
  using Options = WordPieceOptions;

  struct Batch {
    Tensor input_ids;       // i64 [N, L]
    Tensor attention_mask;  // i64 [N, L]: 1 for tokens, 0 for padding
  };

  // vocab.txt read from `path`.
  static WordPieceTokenizer from_vocab(const std::string& path, Options opt = {}) {
    auto raw = io::read_file(path);
    std::string_view text(reinterpret_cast<const char*>(raw.data()), raw.size());
    return from_vocab_text(text, opt, path);
  }

  // vocab.txt held in memory; `what` names it in errors.
  static WordPieceTokenizer from_vocab_text(std::string_view text, Options opt = {},
                                            const std::string& what = "vocab.txt") {
    std::u32string check;
    MC_CHECK(uni::decode_utf8(text, check), what, ": not valid UTF-8");
    WordPieceTokenizer t;
    t.opt_ = opt;
    size_t pos = 0;
    int32_t id = 0;
    while (pos < text.size()) {
      size_t end = text.find_first_of("\r\n", pos);
      if (end == std::string_view::npos) end = text.size();
      std::string tok(text.substr(pos, end - pos));
      t.vocab_[tok] = id;  // a repeated token keeps its last id
      t.tokens_.push_back(tok);
      t.max_token_bytes_ = std::max(t.max_token_bytes_, tok.size());
      ++id;
      if (end < text.size() && text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n') ++end;
      pos = end + 1;
    }
    auto need = [&](const char* name) {
      auto it = t.vocab_.find(name);
      MC_CHECK(it != t.vocab_.end(), what, ": vocab.txt has no ", name, " token");
      return it->second;
    };
    t.unk_ = need("[UNK]");
    t.cls_ = need("[CLS]");
    t.sep_ = need("[SEP]");
    t.pad_ = need("[PAD]");
    for (const char* name : {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"})
      if (t.vocab_.count(name)) t.specials_.emplace_back(name);
    MC_CHECK(opt.max_input_chars_per_word > 0, what, ": max_input_chars_per_word must be positive");
    return t;
  }

  int64_t vocab_size() const { return int64_t(tokens_.size()); }
  int64_t unk_id() const { return unk_; }
  int64_t cls_id() const { return cls_; }
  int64_t sep_id() const { return sep_; }
  int64_t pad_id() const { return pad_; }
  const Options& options() const { return opt_; }

  // The token string of an id (its vocab.txt line).
  const std::string& id_to_token(int64_t id) const {
    MC_CHECK(id >= 0 && id < vocab_size(), "WordPieceTokenizer: unknown token id ", id);
    return tokens_[size_t(id)];
  }

  // WordPiece tokens of `text` (UTF-8), without [CLS] / [SEP].
  std::vector<std::string> tokens(std::string_view text) const {
    std::vector<std::string> out;
    size_t start = 0;
    size_t i = 0;
    while (i < text.size()) {
      const std::string* special = nullptr;
      if (text[i] == '[')
        for (const auto& s : specials_)
          if (text.compare(i, s.size(), s) == 0) special = &s;
      if (!special) {
        ++i;
        continue;
      }
      if (i > start) tokenize_piece(text.substr(start, i - start), out);
      out.push_back(*special);
      i += special->size();
      start = i;
    }
    if (start < text.size()) tokenize_piece(text.substr(start), out);
    return out;
  }

  // Token ids of `text` (UTF-8), without [CLS] / [SEP].
  std::vector<int64_t> encode(std::string_view text) const {
    std::vector<int64_t> ids;
    for (const std::string& t : tokens(text)) {
      auto it = vocab_.find(t);
      ids.push_back(it == vocab_.end() ? unk_ : it->second);
    }
    return ids;
  }

  Batch tokenize(const std::vector<std::string>& texts, int64_t context_length, bool pad_to_max = true) const {
    MC_CHECK(context_length >= 2, "WordPieceTokenizer::tokenize: context_length must be >= 2 (room for [CLS] and "
             "[SEP]), got ", context_length);
    std::vector<std::vector<int64_t>> rows;
    rows.reserve(texts.size());
    int64_t longest = 0;
    for (const std::string& text : texts) {
      std::vector<int64_t> ids = encode(text);
      if (int64_t(ids.size()) > context_length - 2) ids.resize(size_t(context_length - 2));
      std::vector<int64_t> row;
      row.reserve(ids.size() + 2);
      row.push_back(cls_);
      row.insert(row.end(), ids.begin(), ids.end());
      row.push_back(sep_);
      longest = std::max(longest, int64_t(row.size()));
      rows.push_back(std::move(row));
    }
    int64_t len = pad_to_max ? context_length : longest;
    int64_t n = int64_t(texts.size());
    Batch b{Tensor::empty({n, len}, DType::I64), Tensor::empty({n, len}, DType::I64)};
    int64_t* ids = b.input_ids.data<int64_t>();
    int64_t* mask = b.attention_mask.data<int64_t>();
    for (int64_t r = 0; r < n; ++r) {
      const auto& row = rows[size_t(r)];
      for (int64_t k = 0; k < len; ++k) {
        bool real = k < int64_t(row.size());
        ids[r * len + k] = real ? row[size_t(k)] : pad_;
        mask[r * len + k] = real ? 1 : 0;
      }
    }
    return b;
  }

 private:
  WordPieceTokenizer() = default;

  static bool is_cjk(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
  }

  static bool is_punct(char32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
    return uni::has(c, uni::kCatP);
  }

  // Splits on Python whitespace (str.split), appending non-empty words.
  static void split_ws(std::u32string_view s, std::vector<std::u32string>& out) {
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && uni::has(s[i], uni::kPySpace)) ++i;
      size_t j = i;
      while (j < s.size() && !uni::has(s[j], uni::kPySpace)) ++j;
      if (j > i) out.emplace_back(s.substr(i, j - i));
      i = j;
    }
  }

  bool is_special(const std::u32string& w) const {
    for (const auto& s : specials_)
      if (w.size() == s.size() && std::equal(w.begin(), w.end(), s.begin())) return true;
    return false;
  }

  // BasicTokenizer + WordpieceTokenizer on a text without literal special tokens.
  void tokenize_piece(std::string_view text, std::vector<std::string>& out) const {
    std::u32string in = uni::decode_utf8(text);
    std::u32string s;
    s.reserve(in.size());
    for (char32_t c : in) {
      if (c == 0 || c == 0xFFFD) continue;
      uint32_t p = uni::props(c);
      bool ws = c == U' ' || c == U'\t' || c == U'\n' || c == U'\r' || (p & uni::kCatZs);
      if (!ws && (p & uni::kCatC)) continue;
      if (ws) {
        s.push_back(U' ');
      } else if (opt_.tokenize_chinese_chars && is_cjk(c)) {
        s.push_back(U' ');
        s.push_back(c);
        s.push_back(U' ');
      } else {
        s.push_back(c);
      }
    }
    if (!uni::normalization_trivial(s)) s = uni::nfc(s);
    std::vector<std::u32string> words;
    split_ws(s, words);
    bool strip = opt_.strip_accents.value_or(opt_.do_lower_case);
    std::vector<std::u32string> pieces;
    for (std::u32string& w : words) {
      if (is_special(w)) {
        pieces.push_back(w);
        continue;
      }
      if (opt_.do_lower_case) w = uni::to_lower(w);
      if (strip) {
        std::u32string d = uni::normalization_trivial(w) ? w : uni::nfd(w);
        w.clear();
        for (char32_t c : d)
          if (!uni::has(c, uni::kCatMn)) w.push_back(c);
      }
      // Punctuation characters become words of their own.
      std::u32string cur;
      for (char32_t c : w) {
        if (is_punct(c)) {
          if (!cur.empty()) split_ws(cur, pieces);
          cur.clear();
          pieces.emplace_back(1, c);
        } else {
          cur.push_back(c);
        }
      }
      if (!cur.empty()) split_ws(cur, pieces);
    }
    for (const std::u32string& p : pieces) wordpiece(p, out);
  }

  void wordpiece(const std::u32string& word, std::vector<std::string>& out) const {
    if (int64_t(word.size()) > opt_.max_input_chars_per_word) {
      out.push_back(tokens_[size_t(unk_)]);
      return;
    }
    std::string utf8;
    std::vector<size_t> off;  // byte offset of each character, plus the end
    for (char32_t c : word) {
      off.push_back(utf8.size());
      uni::append_utf8(utf8, c);
    }
    off.push_back(utf8.size());
    size_t first_out = out.size();
    size_t start = 0, n = word.size();
    std::string sub;
    while (start < n) {
      size_t end = n;
      bool found = false;
      while (end > start) {
        size_t bytes = off[end] - off[start] + (start > 0 ? 2 : 0);
        if (bytes <= max_token_bytes_) {
          sub.assign(start > 0 ? "##" : "");
          sub.append(utf8, off[start], off[end] - off[start]);
          if (vocab_.count(sub)) {
            found = true;
            break;
          }
        }
        --end;
      }
      if (!found) {
        out.resize(first_out);
        out.push_back(tokens_[size_t(unk_)]);
        return;
      }
      out.push_back(sub);
      start = end;
    }
  }

  Options opt_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_;
  std::vector<std::string> specials_;  // literal special tokens present in the vocabulary
  size_t max_token_bytes_ = 0;
  int32_t unk_ = 0, cls_ = 0, sep_ = 0, pad_ = 0;
};

}  // namespace mc::tokenize
