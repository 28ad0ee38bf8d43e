// mc/data/vqa.hpp — VQA-RAD and SLAKE question-answer pairs, and the answer vocabulary.
//
// VQA-RAD (the MEVF / ban-vqa release): <root>/trainset.json (3064 QA) and <root>/testset.json (451 QA), each
// a JSON array of {qid, image_name, question, answer, answer_type, image_organ, question_type, phrase_type};
// images at <root>/images/<image_name>. Splits:
//   "trainval" all of trainset.json      "test" testset.json
//   "train" / "val": an IMAGE-BASED split of trainset.json (no image in both), as the paper reports:
//     the distinct image names are sorted (byte order), shuffled with SeededRng(seed, stream 0) (Fisher-Yates)
//     and the first n_val = floor(val_fraction * n_images + 0.5) of them (at least 1 and at most
//     n_images - 1 when val_fraction > 0) are the validation images; every QA pair goes with its image.
//     The default val_fraction = 51 / 252 is the paper's image ratio (201 train / 51 validation images,
//     1473 / 354 QA). The split depends only on the annotations, never on which image files exist.
//   Note: in this release the test set's 203 images all occur in trainset.json too, so the paper's fully
//   image-disjoint train/validation/test split (201 / 51 / 62 images) cannot be rebuilt from it; only
//   train and validation are disjoint here.
// SLAKE 1.0: <root>/{train,validate,test}.json, JSON arrays of {qid, img_name, question, answer, q_lang,
// answer_type, location, modality, content_type, ...}; only questions with q_lang == "en" are kept (the
// paper's rule; SlakeOptions::language, "" keeps all); images at <root>/imgs/<img_name>.
// Splits "train", "validate" (or "val"), "test".
//
// Normalisation, for both data sets:
//   answer: a JSON string has its leading and trailing whitespace removed and ASCII letters lower-cased
//     (inner whitespace, tabs included, is kept as given); a JSON number is written as its JSON text
//     (4 -> "4"); anything else is an error. answer_raw keeps the original text.
//   answer_type: trimmed and upper-cased, then must be CLOSED or OPEN (VQA-RAD's trainset has "CLOSED "
//     twice); anything else is an error naming the file and the qid.
//
// Image files (ImageCheck in mc/data/common.hpp): by default every referenced image must exist at load time,
// else mc::Error names the file; with skip_missing the QA pairs whose image is missing are dropped and
// counted (skipped(), skip_report().message()); with check = false only the annotations are loaded.
//
// Answer vocabulary (AnswerVocab): the distinct normalised answers of the given data sets (the paper: train +
// validation), sorted by byte order, followed by "unknown" as the last index (an answer "unknown" in the
// data is the same entry). Answers outside the vocabulary (test) map to "unknown". Sizes on the public files:
// VQA-RAD trainset.json 476 + 1; SLAKE English train + validate 223 + 1, or 493 + 1 when the answers of all
// languages are counted (load with language = "" for the vocabulary) — the size the paper reports, so its
// vocabulary evidently included the Chinese answers although its questions are English only.
//
// Thread safety: const member functions may be called concurrently.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
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

enum class AnswerType { Closed, Open };

inline const char* answer_type_name(AnswerType t) { return t == AnswerType::Closed ? "CLOSED" : "OPEN"; }

// The paper's VQA-RAD validation share of the training images: 51 of 201 + 51.
inline constexpr double kVqaRadPaperValFraction = 51.0 / 252.0;

struct VqaItem {
  int64_t qid = 0;
  std::string image_name;     // as in the JSON: "synpic54610.jpg", "xmlab102/source.jpg"
  std::string image_path;     // <images dir>/<image_name>
  std::string question;
  std::string answer;         // normalised (see the top of this file)
  std::string answer_raw;     // as given (a number as its JSON text)
  AnswerType answer_type = AnswerType::Open;
  std::string question_type;  // VQA-RAD question_type; SLAKE content_type
  std::string organ;          // VQA-RAD image_organ; SLAKE location
  std::string modality;       // SLAKE modality; "" for VQA-RAD
  std::string language;       // SLAKE q_lang; "en" for VQA-RAD
};

struct VqaRadOptions {
  std::string images_dir;                           // "" = <root>/images
  double val_fraction = kVqaRadPaperValFraction;    // share of trainset.json's images held out ("train"/"val")
  uint64_t seed = kDefaultSeed;                     // for the image split
  ImageCheck images;
};

struct SlakeOptions {
  std::string images_dir;        // "" = <root>/imgs
  std::string language = "en";   // keep questions with this q_lang; "" keeps all
  ImageCheck images;
};

namespace vqa_detail {

using json = nlohmann::json;

inline json parse_json_file(const std::string& path) {
  MC_CHECK(file_exists(path), path, ": annotation file not found");
  auto f = io::MappedFile::open(path);
  const char* p = reinterpret_cast<const char*>(f->data());
  try {
    return json::parse(p, p + f->size());
  } catch (const json::exception& e) {
    fail(path, ": malformed JSON (", e.what(), ")");
  }
}

// Reads one field of entry k of `file`.
struct Entry {
  const json& j;
  const std::string& file;
  size_t k;

  std::string where() const {
    std::string s = file + ": entry " + std::to_string(k);
    auto it = j.find("qid");
    if (it != j.end() && (it->is_number_integer() || it->is_string()))
      s += " (qid " + (it->is_string() ? it->get<std::string>() : it->dump()) + ")";
    return s;
  }
  const json& need(const char* key) const {
    auto it = j.find(key);
    MC_CHECK(it != j.end() && !it->is_null(), where(), ": missing key '", key, "'");
    return *it;
  }
  std::string str(const char* key) const {
    const json& v = need(key);
    MC_CHECK(v.is_string(), where(), ": '", key, "' is not a string (", v.type_name(), ")");
    return v.get<std::string>();
  }
  std::string opt_str(const char* key) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (it->is_string()) return it->get<std::string>();
    return it->dump();
  }
  int64_t integer(const char* key) const {
    const json& v = need(key);
    MC_CHECK(v.is_number_integer(), where(), ": '", key, "' is not an integer (", v.dump(), ")");
    return v.get<int64_t>();
  }
  // Fills answer and answer_raw.
  void answer(VqaItem& it) const {
    const json& v = need("answer");
    if (v.is_string()) {
      it.answer_raw = v.get<std::string>();
      it.answer = ascii_lower(trim(it.answer_raw));
    } else if (v.is_number()) {
      it.answer_raw = v.dump();
      it.answer = it.answer_raw;
    } else {
      fail(where(), ": 'answer' is neither a string nor a number (", v.type_name(), ")");
    }
  }
  AnswerType answer_type() const {
    const std::string raw = str("answer_type");
    const std::string t = ascii_upper(trim(raw));
    if (t == "CLOSED") return AnswerType::Closed;
    if (t == "OPEN") return AnswerType::Open;
    fail(where(), ": answer_type '", raw, "' is neither CLOSED nor OPEN");
  }
};

inline const json& as_array(const json& j, const std::string& file) {
  MC_CHECK(j.is_array(), file, ": expected a JSON array of question-answer objects, got ", j.type_name());
  return j;
}

inline std::vector<VqaItem> read_vqa_rad(const std::string& file, const std::string& images_dir) {
  const json j = parse_json_file(file);
  std::vector<VqaItem> out;
  out.reserve(as_array(j, file).size());
  for (size_t k = 0; k < j.size(); ++k) {
    MC_CHECK(j[k].is_object(), file, ": entry ", k, " is not an object");
    Entry e{j[k], file, k};
    VqaItem it;
    it.qid = e.integer("qid");
    it.image_name = e.str("image_name");
    MC_CHECK(!it.image_name.empty(), e.where(), ": empty image_name");
    it.image_path = join_path(images_dir, it.image_name);
    it.question = e.str("question");
    e.answer(it);
    it.answer_type = e.answer_type();
    it.question_type = e.opt_str("question_type");
    it.organ = e.opt_str("image_organ");
    it.language = "en";
    out.push_back(std::move(it));
  }
  return out;
}

inline std::vector<VqaItem> read_slake(const std::string& file, const std::string& images_dir,
                                       const std::string& language, int64_t& other_language) {
  const json j = parse_json_file(file);
  std::vector<VqaItem> out;
  other_language = 0;
  for (size_t k = 0; k < as_array(j, file).size(); ++k) {
    MC_CHECK(j[k].is_object(), file, ": entry ", k, " is not an object");
    Entry e{j[k], file, k};
    const std::string lang = e.str("q_lang");
    if (!language.empty() && lang != language) {
      ++other_language;
      continue;
    }
    VqaItem it;
    it.qid = e.integer("qid");
    it.image_name = e.str("img_name");
    MC_CHECK(!it.image_name.empty(), e.where(), ": empty img_name");
    it.image_path = join_path(images_dir, it.image_name);
    it.question = e.str("question");
    e.answer(it);
    it.answer_type = e.answer_type();
    it.question_type = e.opt_str("content_type");
    it.organ = e.opt_str("location");
    it.modality = e.opt_str("modality");
    it.language = lang;
    out.push_back(std::move(it));
  }
  return out;
}

}  // namespace vqa_detail

// The validation images of the paper-style image split (rule at the top of this file), sorted.
inline std::vector<std::string> vqa_image_split_validation(std::vector<std::string> image_names, double val_fraction,
                                                           uint64_t seed) {
  MC_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "VQA image split: val_fraction must be in [0, 1), got ",
           val_fraction);
  std::sort(image_names.begin(), image_names.end());
  image_names.erase(std::unique(image_names.begin(), image_names.end()), image_names.end());
  const int64_t n = int64_t(image_names.size());
  if (val_fraction == 0.0 || n == 0) return {};
  int64_t n_val = round_half_up(val_fraction * double(n));
  n_val = n >= 2 ? std::clamp<int64_t>(n_val, 1, n - 1) : 0;
  SeededRng rng(seed, 0);
  shuffle(image_names, rng);
  std::vector<std::string> val(image_names.begin(), image_names.begin() + n_val);
  std::sort(val.begin(), val.end());
  return val;
}

class AnswerVocab;

// A batch for VQA: preprocessed images [B, 3, S, S], answer labels [B] (i64, vocabulary indices), and the
// questions as text (tokenised by the model's tokenizer).
struct VqaBatch {
  Tensor images;
  Tensor answers;
  std::vector<std::string> questions;
  std::vector<AnswerType> answer_types;
  std::vector<int64_t> indices;
};

class VqaDataset {
 public:
  // VQA-RAD split "train", "val", "trainval" or "test" under `root`.
  static VqaDataset vqa_rad(const std::string& root, const std::string& split, const VqaRadOptions& opt = {}) {
    const std::string images_dir = opt.images_dir.empty() ? join_path(root, "images") : opt.images_dir;
    VqaDataset ds;
    ds.name_ = "VQA-RAD " + split;
    if (split == "test") {
      ds.source_ = join_path(root, "testset.json");
      ds.items_ = vqa_detail::read_vqa_rad(ds.source_, images_dir);
    } else if (split == "train" || split == "val" || split == "trainval") {
      ds.source_ = join_path(root, "trainset.json");
      std::vector<VqaItem> all = vqa_detail::read_vqa_rad(ds.source_, images_dir);
      if (split == "trainval") {
        ds.items_ = std::move(all);
      } else {
        std::vector<std::string> names;
        for (const VqaItem& it : all) names.push_back(it.image_name);
        const std::vector<std::string> val = vqa_image_split_validation(names, opt.val_fraction, opt.seed);
        const bool want_val = split == "val";
        for (VqaItem& it : all)
          if (std::binary_search(val.begin(), val.end(), it.image_name) == want_val) ds.items_.push_back(std::move(it));
      }
    } else {
      fail(join_path(root, "trainset.json"), ": unknown VQA-RAD split '", split,
           "' (expected train, val, trainval or test)");
    }
    ds.apply_image_check(opt.images);
    return ds;
  }

  // SLAKE split "train", "validate" (or "val") or "test" under `root`.
  static VqaDataset slake(const std::string& root, const std::string& split, const SlakeOptions& opt = {}) {
    std::string file;
    if (split == "train") file = "train.json";
    else if (split == "validate" || split == "val") file = "validate.json";
    else if (split == "test") file = "test.json";
    else fail(join_path(root, "train.json"), ": unknown SLAKE split '", split, "' (expected train, validate or test)");
    const std::string images_dir = opt.images_dir.empty() ? join_path(root, "imgs") : opt.images_dir;
    VqaDataset ds;
    ds.name_ = "SLAKE " + split;
    ds.source_ = join_path(root, file);
    ds.items_ = vqa_detail::read_slake(ds.source_, images_dir, opt.language, ds.other_language_);
    ds.apply_image_check(opt.images);
    return ds;
  }

  const std::string& name() const { return name_; }
  const std::string& source() const { return source_; }   // the annotation file
  int64_t size() const { return int64_t(items_.size()); }
  const std::vector<VqaItem>& items() const { return items_; }
  const VqaItem& item(int64_t i) const {
    MC_CHECK(i >= 0 && i < size(), source_, ": sample index ", i, " out of range [0, ", size(), ")");
    return items_[size_t(i)];
  }
  const VqaItem& operator[](int64_t i) const { return item(i); }

  // QA pairs dropped for a missing image (ImageCheck::skip_missing), and the details.
  int64_t skipped() const { return skip_.samples; }
  const SkipReport& skip_report() const { return skip_; }
  // SLAKE: questions left out for their language.
  int64_t other_language() const { return other_language_; }

  int64_t count(AnswerType t) const {
    return std::count_if(items_.begin(), items_.end(), [&](const VqaItem& it) { return it.answer_type == t; });
  }
  // Distinct image names, sorted.
  std::vector<std::string> image_names() const {
    std::vector<std::string> v;
    for (const VqaItem& it : items_) v.push_back(it.image_name);
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  }

  // Decodes the image of sample i (mc::Error naming the file when it is missing or corrupt).
  io::Image image(int64_t i) const { return io::decode_image(item(i).image_path); }

  // Decoded and preprocessed images [B, 3, S, S] of the given samples (in parallel).
  Tensor images(const std::vector<int64_t>& indices, const Preprocess& pre) const {
    std::vector<std::string> paths;
    for (int64_t i : indices) paths.push_back(item(i).image_path);
    return pre.batch_files(paths);
  }

  inline Tensor answer_labels(const std::vector<int64_t>& indices, const AnswerVocab& vocab) const;
  inline VqaBatch batch(const std::vector<int64_t>& indices, const Preprocess& pre, const AnswerVocab& vocab) const;

 private:
  void apply_image_check(const ImageCheck& policy) {
    std::vector<std::string> paths;
    paths.reserve(items_.size());
    for (const VqaItem& it : items_) paths.push_back(it.image_path);
    std::vector<char> keep = check_images(paths, policy, source_, skip_);
    if (skip_.samples == 0) return;
    std::vector<VqaItem> kept;
    for (size_t i = 0; i < items_.size(); ++i)
      if (keep[i]) kept.push_back(std::move(items_[i]));
    items_ = std::move(kept);
  }

  std::string name_, source_;
  std::vector<VqaItem> items_;
  SkipReport skip_;
  int64_t other_language_ = 0;
};

class AnswerVocab {
 public:
  static constexpr const char* kUnknown = "unknown";

  // From already normalised answers (duplicates allowed).
  static AnswerVocab from_answers(std::vector<std::string> answers) {
    std::sort(answers.begin(), answers.end());
    answers.erase(std::unique(answers.begin(), answers.end()), answers.end());
    answers.erase(std::remove(answers.begin(), answers.end(), std::string(kUnknown)), answers.end());
    answers.push_back(kUnknown);
    AnswerVocab v;
    v.answers_ = std::move(answers);
    for (size_t i = 0; i < v.answers_.size(); ++i) v.index_.emplace(v.answers_[i], int64_t(i));
    return v;
  }
  // The answers of the given data sets (the paper: train and validation).
  static AnswerVocab build(std::initializer_list<const VqaDataset*> sets) {
    return build(std::vector<const VqaDataset*>(sets));
  }
  static AnswerVocab build(const std::vector<const VqaDataset*>& sets) {
    std::vector<std::string> a;
    for (const VqaDataset* s : sets) {
      MC_CHECK(s != nullptr, "AnswerVocab::build: null data set");
      for (const VqaItem& it : s->items()) a.push_back(it.answer);
    }
    return from_answers(std::move(a));
  }

  int64_t size() const { return int64_t(answers_.size()); }
  const std::vector<std::string>& answers() const { return answers_; }
  const std::string& answer(int64_t i) const {
    MC_CHECK(i >= 0 && i < size(), "AnswerVocab: index ", i, " out of range [0, ", size(), ")");
    return answers_[size_t(i)];
  }
  int64_t unknown_index() const { return size() - 1; }
  bool contains(const std::string& normalised) const { return index_.count(normalised) != 0; }
  // The index of a normalised answer; unknown_index() when it is not in the vocabulary.
  int64_t index(const std::string& normalised) const {
    auto it = index_.find(normalised);
    return it == index_.end() ? unknown_index() : it->second;
  }
  // Indices of every sample's answer.
  std::vector<int64_t> encode(const VqaDataset& ds) const {
    std::vector<int64_t> out;
    out.reserve(size_t(ds.size()));
    for (const VqaItem& it : ds.items()) out.push_back(index(it.answer));
    return out;
  }

 private:
  std::vector<std::string> answers_;
  std::unordered_map<std::string, int64_t> index_;
};

inline Tensor VqaDataset::answer_labels(const std::vector<int64_t>& indices, const AnswerVocab& vocab) const {
  Tensor t = Tensor::empty({int64_t(indices.size())}, DType::I64);
  int64_t* p = t.data<int64_t>();
  for (size_t k = 0; k < indices.size(); ++k) p[k] = vocab.index(item(indices[k]).answer);
  return t;
}

inline VqaBatch VqaDataset::batch(const std::vector<int64_t>& indices, const Preprocess& pre,
                                  const AnswerVocab& vocab) const {
  VqaBatch b;
  b.images = images(indices, pre);
  b.answers = answer_labels(indices, vocab);
  for (int64_t i : indices) {
    b.questions.push_back(item(i).question);
    b.answer_types.push_back(item(i).answer_type);
  }
  b.indices = indices;
  return b;
}

}  // namespace mc::data
