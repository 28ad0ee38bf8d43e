// mc/data/roco.hpp — ROCO image-caption pairs (image-to-text retrieval).
//
// The ROCO release keeps, per split (train, validation, test) and subset (radiology, non-radiology), a folder
// <root>/<split>/<subset>/ with captions.txt: one line per image, "ROCO_xxxxx<TAB> caption text". Parsing:
//   * a UTF-8 byte-order mark at the start and a '\r' before each '\n' are ignored;
//   * a blank line is ignored; a non-blank line without a tab is an error naming the file and line;
//   * the ID is the text before the first tab, the caption the text after it, both with leading and
//     trailing whitespace removed (every caption of the release starts with a space after the tab);
//   * a line whose caption is empty is dropped and counted (empty_captions());
//   * an ID seen twice is an error naming both lines.
// (The test/radiology, validation/radiology and test/non-radiology files of the release have 8179, 8180 and
// 612 lines, none empty, no duplicate IDs.)
//
// Image files. The paper's code reads <subset dir>/images/<ID>.jpg (its captions.json keys images by ROCO
// ID), which is the default here. The release's own download script (scripts/fetch.py) instead names each
// image "<PMC id>_<file name>" after the line of dlinks.txt ("ID<TAB>wget ... .../PMC1234567.tar.gz ...<TAB>
// file name.jpg"); set RocoOptions::dlinks to that dlinks.txt to use those names. Missing images: see
// ImageCheck (mc/data/common.hpp).
//
// Thread safety: const member functions may be called concurrently.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/data/common.hpp"
#include "mc/data/transforms.hpp"
#include "mc/io/file.hpp"
#include "mc/io/image.hpp"

namespace mc::data {

struct RocoItem {
  std::string id;          // "ROCO_00001"
  std::string caption;     // trimmed
  std::string image_path;  // where the image is expected
  std::string subset;      // "radiology" / "non-radiology" (open_split), else the folder's name
};

struct RocoOptions {
  std::string images_dir;  // "" = <captions folder>/images
  std::string dlinks;      // "" = images named <ID>.jpg; else this dlinks.txt gives "<PMC id>_<file name>"
  ImageCheck images;
};

// A batch for retrieval: preprocessed images [B, 3, S, S] and their captions.
struct RocoBatch {
  Tensor images;
  std::vector<std::string> captions;
  std::vector<int64_t> indices;
};

namespace roco_detail {

// Calls fn(line_number (1-based), line) for each line, without '\n' / '\r\n' and a leading BOM.
template <class F>
void for_each_line(const std::string& path, F&& fn) {
  MC_CHECK(file_exists(path), path, ": file not found");
  auto f = io::MappedFile::open(path);
  const char* p = reinterpret_cast<const char*>(f->data());
  size_t n = f->size(), pos = 0;
  if (n >= 3 && uint8_t(p[0]) == 0xEF && uint8_t(p[1]) == 0xBB && uint8_t(p[2]) == 0xBF) pos = 3;
  int64_t line_no = 0;
  while (pos < n) {
    size_t e = pos;
    while (e < n && p[e] != '\n') ++e;
    size_t len = e - pos;
    if (len > 0 && p[pos + len - 1] == '\r') --len;
    fn(++line_no, std::string(p + pos, len));
    pos = e + 1;
  }
}

inline std::string file_name_of(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  size_t s = d.find_last_of('/');
  return s == std::string::npos ? d : d.substr(s + 1);
}

// ID -> "<PMC id>_<file name>" from a ROCO dlinks.txt.
inline std::unordered_map<std::string, std::string> read_dlinks(const std::string& path) {
  std::unordered_map<std::string, std::string> out;
  for_each_line(path, [&](int64_t ln, const std::string& line) {
    if (trim(line).empty()) return;
    const size_t t1 = line.find('\t');
    const size_t t2 = t1 == std::string::npos ? t1 : line.rfind('\t');
    MC_CHECK(t1 != std::string::npos && t2 > t1, path, ":", ln, ": expected ID<TAB>command<TAB>file name");
    const std::string id = trim(line.substr(0, t1));
    const std::string cmd = line.substr(t1 + 1, t2 - t1 - 1);
    const std::string file = trim(line.substr(t2 + 1));
    const size_t tgz = cmd.find(".tar.gz");
    MC_CHECK(tgz != std::string::npos && !file.empty(), path, ":", ln,
             ": cannot find the package (.tar.gz) or the file name");
    size_t b = cmd.find_last_of("/ ", tgz);
    b = b == std::string::npos ? 0 : b + 1;
    out[id] = cmd.substr(b, tgz - b) + "_" + file;
  });
  return out;
}

}  // namespace roco_detail

class RocoDataset {
 public:
  // The captions.txt in folder `dir` (one split and subset).
  static RocoDataset open(const std::string& dir, const RocoOptions& opt = {}) {
    RocoDataset ds;
    ds.append(dir, roco_detail::file_name_of(dir), opt);
    ds.check(opt.images);
    return ds;
  }

  // <root>/<split>/<data_type>; data_type "radiology", "non-radiology" or "all" (both, radiology first).
  static RocoDataset open_split(const std::string& root, const std::string& split, const std::string& data_type,
                                const RocoOptions& opt = {}) {
    MC_CHECK(split == "train" || split == "validation" || split == "test", root, ": unknown ROCO split '", split,
             "' (expected train, validation or test)");
    MC_CHECK(data_type == "radiology" || data_type == "non-radiology" || data_type == "all", root,
             ": unknown ROCO data type '", data_type, "' (expected radiology, non-radiology or all)");
    RocoDataset ds;
    for (const char* sub : {"radiology", "non-radiology"}) {
      if (data_type != "all" && data_type != sub) continue;
      ds.append(join_path(join_path(root, split), sub), sub, opt);
    }
    ds.check(opt.images);
    return ds;
  }

  int64_t size() const { return int64_t(items_.size()); }
  const std::vector<RocoItem>& items() const { return items_; }
  const RocoItem& item(int64_t i) const {
    MC_CHECK(i >= 0 && i < size(), source_, ": sample index ", i, " out of range [0, ", size(), ")");
    return items_[size_t(i)];
  }
  const RocoItem& operator[](int64_t i) const { return item(i); }
  // All captions in order (the retrieval candidates).
  std::vector<std::string> captions() const {
    std::vector<std::string> c;
    c.reserve(items_.size());
    for (const RocoItem& it : items_) c.push_back(it.caption);
    return c;
  }
  const std::string& source() const { return source_; }
  int64_t empty_captions() const { return empty_captions_; }   // lines dropped for an empty caption
  int64_t skipped() const { return skip_.samples; }             // dropped for a missing image
  const SkipReport& skip_report() const { return skip_; }

  io::Image image(int64_t i) const { return io::decode_image(item(i).image_path); }
  Tensor images(const std::vector<int64_t>& indices, const Preprocess& pre) const {
    std::vector<std::string> paths;
    for (int64_t i : indices) paths.push_back(item(i).image_path);
    return pre.batch_files(paths);
  }
  RocoBatch batch(const std::vector<int64_t>& indices, const Preprocess& pre) const {
    RocoBatch b;
    b.images = images(indices, pre);
    for (int64_t i : indices) b.captions.push_back(item(i).caption);
    b.indices = indices;
    return b;
  }

 private:
  void append(const std::string& dir, const std::string& subset, const RocoOptions& opt) {
    const std::string file = join_path(dir, "captions.txt");
    source_ += (source_.empty() ? "" : ", ") + file;
    const std::string images_dir = opt.images_dir.empty() ? join_path(dir, "images") : opt.images_dir;
    std::unordered_map<std::string, std::string> dl;
    if (!opt.dlinks.empty()) dl = roco_detail::read_dlinks(opt.dlinks);
    std::unordered_map<std::string, int64_t> first_line;
    roco_detail::for_each_line(file, [&](int64_t ln, const std::string& line) {
      if (trim(line).empty()) return;
      const size_t tab = line.find('\t');
      MC_CHECK(tab != std::string::npos, file, ":", ln, ": expected ID<TAB>caption, found no tab");
      RocoItem it;
      it.id = trim(line.substr(0, tab));
      MC_CHECK(!it.id.empty(), file, ":", ln, ": empty ID");
      auto [pos, fresh] = first_line.emplace(it.id, ln);
      MC_CHECK(fresh, file, ":", ln, ": duplicate ID '", it.id, "' (first on line ", pos->second, ")");
      it.caption = trim(line.substr(tab + 1));
      if (it.caption.empty()) {
        ++empty_captions_;
        return;
      }
      if (opt.dlinks.empty()) {
        it.image_path = join_path(images_dir, it.id + ".jpg");
      } else {
        auto d = dl.find(it.id);
        MC_CHECK(d != dl.end(), file, ":", ln, ": ID '", it.id, "' is not in ", opt.dlinks);
        it.image_path = join_path(images_dir, d->second);
      }
      it.subset = subset;
      items_.push_back(std::move(it));
    });
  }

  void check(const ImageCheck& policy) {
    std::vector<std::string> paths;
    for (const RocoItem& it : items_) paths.push_back(it.image_path);
    std::vector<char> keep = check_images(paths, policy, source_, skip_);
    if (skip_.samples == 0) return;
    std::vector<RocoItem> kept;
    for (size_t i = 0; i < items_.size(); ++i)
      if (keep[i]) kept.push_back(std::move(items_[i]));
    items_ = std::move(kept);
  }

  std::vector<RocoItem> items_;
  std::string source_;
  int64_t empty_captions_ = 0;
  SkipReport skip_;
};

}  // namespace mc::data
