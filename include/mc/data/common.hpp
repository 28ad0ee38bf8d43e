// mc/data/common.hpp — pieces shared by the data sets and the loader.
//
//  * SeededRng: a deterministic random stream (Philox4x32-10 keyed by the seed, one independent stream per
//    `stream` number). The same (seed, stream) gives the same numbers on every platform and compiler, which
//    std::shuffle / std::uniform_int_distribution do not guarantee. below(n) is unbiased (rejection).
//  * shuffle / permutation: Fisher-Yates driven by a SeededRng (from the last element down, j = below(i+1)).
//  * File helpers (join_path, file_exists), string normalisation (trim, ASCII lower/upper case).
//  * ImageCheck: what a data set does about the image files its annotations refer to, and SkipReport,
//    which counts what it dropped.
#pragma once
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/random.hpp"
#include "mc/io/image.hpp"

namespace mc::data {

// The seed the paper uses everywhere.
inline constexpr uint64_t kDefaultSeed = 8464;

// A counter-based random stream: u64 number k of stream s for seed S is built from Philox4x32-10 with key S,
// block k / 2 and offset s (two 64-bit numbers per block).
class SeededRng {
 public:
  explicit SeededRng(uint64_t seed = kDefaultSeed, uint64_t stream = 0) : seed_(seed), stream_(stream) {}

  uint64_t next_u64() {
    if (have_ == 0) {
      philox4x32(seed_, counter_++, stream_, words_);
      have_ = 2;
    }
    const int k = 2 - have_--;
    return uint64_t(words_[2 * k]) | uint64_t(words_[2 * k + 1]) << 32;
  }

  // Uniform in [0, n); n > 0. Rejects the values below 2^64 mod n so that every residue is equally likely.
  uint64_t below(uint64_t n) {
    MC_CHECK(n > 0, "SeededRng::below: n must be positive");
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next_u64();
      if (r >= threshold) return r % n;
    }
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t seed_, stream_, counter_ = 0;
  uint32_t words_[4] = {0, 0, 0, 0};
  int have_ = 0;
};

// Fisher-Yates: for i = n-1 down to 1, swap v[i] with v[below(i + 1)].
template <class T>
void shuffle(std::vector<T>& v, SeededRng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = size_t(rng.below(uint64_t(i)));
    std::swap(v[i - 1], v[j]);
  }
}

// A permutation of [0, n) for (seed, stream).
inline std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t stream = 0) {
  MC_CHECK(n >= 0, "permutation: negative size ", n);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  SeededRng rng(seed, stream);
  shuffle(p, rng);
  return p;
}

// Rounds x >= 0 to the nearest integer, halves up: int64(x + 0.5).
inline int64_t round_half_up(double x) { return int64_t(x + 0.5); }

// ---- files and strings ----

inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (!name.empty() && name.front() == '/') return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

inline bool dir_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The last path component without its extension: "/a/b/breastmnist_224.npz" -> "breastmnist_224".
inline std::string file_stem(const std::string& path) {
  size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  size_t dot = name.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Removes leading and trailing ASCII whitespace.
inline std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// ASCII case mapping; bytes >= 0x80 (UTF-8 sequences) are left as they are.
inline std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return s;
}
inline std::string ascii_upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
  return s;
}

// ---- image files referred to by annotations ----

// What a data set does at load time about the image file of each sample.
struct ImageCheck {
  // Look for every image file at load time (one stat per distinct file). false: annotations only; a
  // missing image then surfaces when the sample is decoded.
  bool check = true;
  // Also decode every distinct image once at load time, so that corrupt files are found up front (slow).
  bool verify = false;
  // A missing (or, with verify, corrupt) image: false -> mc::Error naming the file; true -> the samples
  // that use it are dropped and counted (see SkipReport).
  bool skip_missing = false;
};

// What a data set dropped at load time.
struct SkipReport {
  int64_t samples = 0;                // samples dropped
  int64_t total = 0;                  // samples before dropping
  std::vector<std::string> files;     // distinct image files that were missing or corrupt, in first-seen order
  std::vector<std::string> reasons;   // one reason per entry of `files`
  std::string source;                 // the annotation file(s)

  bool empty() const { return samples == 0; }

  // "<source>: skipped 12 of 3064 samples (3 image files missing or unreadable), first: <file>: <reason>"
  std::string message() const {
    std::ostringstream o;
    o << source << ": skipped " << samples << " of " << total << " samples";
    if (!files.empty()) {
      o << " (" << files.size() << " image file" << (files.size() == 1 ? "" : "s") << " missing or unreadable)";
      o << ", first: " << reasons.front();
    }
    return o.str();
  }
};

// Applies `policy` to the image file of each sample (paths[i] for sample i). Returns which samples to keep and
// fills `report`. Each distinct file is looked at once. Throws mc::Error naming the first missing (or
// corrupt, with verify) file unless policy.skip_missing.
inline std::vector<char> check_images(const std::vector<std::string>& paths, const ImageCheck& policy,
                                      const std::string& source, SkipReport& report) {
  report = SkipReport{};
  report.source = source;
  report.total = int64_t(paths.size());
  std::vector<char> keep(paths.size(), 1);
  if (!policy.check && !policy.verify) return keep;
  std::unordered_map<std::string, int> seen;  // path -> 1 good, 0 missing or corrupt
  auto lookup = [&](const std::string& p) -> int {
    auto it = seen.find(p);
    if (it != seen.end()) return it->second;
    std::string reason;
    if (!file_exists(p)) {
      reason = p + ": image file not found";
    } else if (policy.verify) {
      try {
        (void)io::decode_image(p);
      } catch (const std::exception& e) {
        reason = e.what();
      }
    }
    const int good = reason.empty() ? 1 : 0;
    if (!good) {
      MC_CHECK(policy.skip_missing, source, ": ", reason,
               " (set skip_missing to drop the samples that use it, or check = false to load annotations only)");
      report.files.push_back(p);
      report.reasons.push_back(reason);
    }
    seen.emplace(p, good);
    return good;
  };
  for (size_t i = 0; i < paths.size(); ++i) {
    if (!lookup(paths[i])) {
      keep[i] = 0;
      ++report.samples;
    }
  }
  return keep;
}

}  // namespace mc::data
