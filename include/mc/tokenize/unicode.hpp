// mc/tokenize/unicode.hpp — the Unicode algorithms of the tokenizers, over the generated data tables of
// unicode_tables.hpp (hand-written; tools/gen_unicode_tables.py writes only the tables):
//   props / has / ccc          per-code-point property bits and canonical combining class;
//   decode_utf8 / append_utf8 / encode_utf8
//                              UTF-8, ill-formed input read as U+FFFD the way Python's
//                              bytes.decode("utf-8", errors="replace") does;
//   lower_simple / to_lower    Python's str.lower(), with U+0130 and the Final_Sigma rule;
//   nfd / nfc / normalization_trivial
//                              canonical decomposition and composition (unicodedata.normalize).
#pragma once
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <unordered_map>

#include "mc/tokenize/unicode_tables.hpp"

namespace mc::tokenize::uni {

// ---------------------------------------------------------------------------------------------------
// Lookups
// ---------------------------------------------------------------------------------------------------

inline uint32_t props(char32_t c) {
  uint32_t key = (uint32_t(c) << kPropBits) | ((1u << kPropBits) - 1);
  const uint32_t* it = std::upper_bound(std::begin(kPropRuns), std::end(kPropRuns), key);
  return it == std::begin(kPropRuns) ? 0 : (it[-1] & ((1u << kPropBits) - 1));
}

inline bool has(char32_t c, uint32_t bits) { return (props(c) & bits) != 0; }

inline int ccc(char32_t c) {
  if (c < 0x300) return 0;
  uint32_t key = (uint32_t(c) << 8) | 0xFF;
  const uint32_t* it = std::upper_bound(std::begin(kCccRuns), std::end(kCccRuns), key);
  return it == std::begin(kCccRuns) ? 0 : int(it[-1] & 0xFF);
}

// ---------------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------------

// Decodes UTF-8; every maximal ill-formed subsequence becomes one U+FFFD (as Python's
// bytes.decode("utf-8", errors="replace") does). Returns false when something was replaced.
inline bool decode_utf8(std::string_view s, std::u32string& out) {
  bool ok = true;
  size_t i = 0, n = s.size();
  out.reserve(out.size() + n);
  while (i < n) {
    uint8_t b = uint8_t(s[i]);
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int len = 0;
    uint32_t cp = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2, cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, cp = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, cp = b & 0x07;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    if (len == 0) {
      out.push_back(0xFFFD);
      ok = false;
      ++i;
      continue;
    }
    size_t j = i + 1;
    int k = 1;
    for (; k < len && j < n; ++k, ++j) {
      uint8_t c = uint8_t(s[j]);
      if (c < lo || c > hi) break;
      cp = (cp << 6) | (c & 0x3F);
      lo = 0x80, hi = 0xBF;
    }
    if (k == len) {
      out.push_back(char32_t(cp));
    } else {
      out.push_back(0xFFFD);
      ok = false;
    }
    i = j;
  }
  return ok;
}

inline std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  decode_utf8(s, out);
  return out;
}

inline void append_utf8(std::string& out, char32_t c) {
  uint32_t cp = uint32_t(c);
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

inline std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Case
// ---------------------------------------------------------------------------------------------------

inline char32_t lower_simple(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  const LowerRun* it = std::upper_bound(std::begin(kLowerRuns), std::end(kLowerRuns), uint32_t(c),
                                        [](uint32_t v, const LowerRun& r) { return v < r.lo; });
  if (it == std::begin(kLowerRuns)) return c;
  const LowerRun& r = it[-1];
  if (c > r.hi || (uint32_t(c) - r.lo) % uint32_t(r.stride) != 0) return c;
  return char32_t(int64_t(c) + r.delta);
}

// Python's str.lower(): full lower-case mapping, including U+0130 -> "i\u0307" and the Final_Sigma
// rule for U+03A3 (final sigma after a cased letter, skipping case-ignorables, when no cased letter
// follows).
inline std::u32string to_lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char32_t c = s[i];
    if (c == 0x130) {
      out.push_back(0x69);
      out.push_back(0x307);
    } else if (c == 0x3A3) {
      size_t j = i;
      uint32_t p = 0;
      while (j > 0 && ((p = props(s[j - 1])) & kCaseIgnorable)) --j;
      bool final_sigma = j > 0 && (p & kCased);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < s.size() && (props(s[k]) & kCaseIgnorable)) ++k;
        final_sigma = k == s.size() || !(props(s[k]) & kCased);
      }
      out.push_back(final_sigma ? 0x3C2 : 0x3C3);
    } else {
      out.push_back(lower_simple(c));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Normalization (canonical): NFD and NFC
// ---------------------------------------------------------------------------------------------------

namespace detail {
inline constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
inline constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                          kSCount = kLCount * kNCount;

inline const uint64_t* find_decomp(char32_t c) {
  uint64_t key = uint64_t(c) << 42;
  const uint64_t* it = std::lower_bound(std::begin(kDecomp), std::end(kDecomp), key,
                                        [](uint64_t e, uint64_t k) { return (e & ~(1ull << 63)) < k; });
  if (it != std::end(kDecomp) && ((*it >> 42) & 0x1FFFFF) == c) return it;
  return nullptr;
}

inline void decompose_into(char32_t c, std::u32string& out) {
  if (c < 0xC0) {
    out.push_back(c);
    return;
  }
  if (c >= kSBase && c < kSBase + kSCount) {
    uint32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const uint64_t* e = find_decomp(c);
  if (!e) {
    out.push_back(c);
    return;
  }
  decompose_into(char32_t((*e >> 21) & 0x1FFFFF), out);
  char32_t second = char32_t(*e & 0x1FFFFF);
  if (second) decompose_into(second, out);
}

// Stable sort of every run of non-starters by combining class.
inline void canonical_order(std::u32string& s) {
  size_t i = 0;
  while (i < s.size()) {
    if (ccc(s[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && ccc(s[j]) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(s.begin() + i, s.begin() + j, [](char32_t a, char32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }
}

inline const std::unordered_map<uint64_t, char32_t>& compositions() {
  static const std::unordered_map<uint64_t, char32_t> table = [] {
    std::unordered_map<uint64_t, char32_t> t;
    for (uint64_t e : kDecomp)
      if (e >> 63) t.emplace(((e >> 21) & 0x1FFFFF) << 21 | (e & 0x1FFFFF), char32_t((e >> 42) & 0x1FFFFF));
    return t;
  }();
  return table;
}

inline char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& t = compositions();
  auto it = t.find(uint64_t(a) << 21 | b);
  return it == t.end() ? 0 : it->second;
}
}  // namespace detail

// True when no code point can change under NFD/NFC (a fast path for plain text).
inline bool normalization_trivial(std::u32string_view s) {
  for (char32_t c : s)
    if (c >= 0xC0) return false;
  return true;
}

inline std::u32string nfd(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) detail::decompose_into(c, out);
  detail::canonical_order(out);
  return out;
}

inline std::u32string nfc(std::u32string_view s) {
  std::u32string d = nfd(s);
  if (d.empty()) return d;
  std::u32string out;
  out.reserve(d.size());
  size_t starter_pos = 0;
  int last_class = ccc(d[0]);
  if (last_class != 0) last_class = 256;  // no starter yet: nothing may compose
  out.push_back(d[0]);
  for (size_t i = 1; i < d.size(); ++i) {
    char32_t c = d[i];
    int cls = ccc(c);
    if (last_class < cls || last_class == 0) {
      char32_t comp = detail::compose_pair(out[starter_pos], c);
      if (comp != 0 && last_class != 256) {
        out[starter_pos] = comp;
        continue;
      }
    }
    if (cls == 0) starter_pos = out.size();
    last_class = cls;
    out.push_back(c);
  }
  return out;
}

}  // namespace mc::tokenize::uni
