// mc/data/medmnist.hpp — MedMNIST v2 classification data from the official .npz files.
//
// A MedMNIST .npz (any release: 28, 64, 128 or 224 pixels; entries stored or deflated) holds, per split
// s in {train, val, test}, `<s>_images` (uint8, [N, H, W] grey or [N, H, W, 3] RGB) and `<s>_labels`
// ([N, 1] or [N] class indices; uint8 / int32 / int64). Only the two arrays of the requested split are read.
// Multi-label subsets (chestmnist: labels [N, 14]) are refused with an error saying so.
//
// Class names, task and channel count are the facts of the medmnist package's INFO (medmnist 3.0.2) for
// the twelve 2-D subsets; see medmnist_info(). The subset ("flag") is taken from MedMnistOptions::flag or
// else from the file name: "breastmnist.npz" and "breastmnist_224.npz" are both "breastmnist".
//
// Training-set fraction (the paper's --percentage, Table 6): MedMnistOptions::percentage is a FRACTION in
// (0, 1] (0.1 = 10 %), applied to whichever split is opened (the paper applies it to the training split).
//  * stratified (the default): for every class c with n_c > 0 samples in the split, keep
//      k_c = clamp(floor(n_c * percentage + 0.5), 1, n_c)
//    samples (rounded half up, and at least one sample of every class that is present). Class c's samples
//    are shuffled with SeededRng(seed, stream = c) and the first k_c are kept, so each class's choice is
//    independent of the others; the kept samples stay in file order. The total is therefore the sum of the
//    per-class roundings, not necessarily round(N * percentage).
//  * stratified = false reproduces the paper's rule in kind: k = floor(N * percentage) (at least 1)
//    samples drawn uniformly (SeededRng(seed, stream = 0) Fisher-Yates), kept in file order. (The paper
//    draws with Python's random.sample, so its exact subset is not reproduced.)
// Same seed -> same subset; a different seed -> (almost surely) a different one.
//
// Thread safety: all const member functions may be called concurrently (the arrays are immutable and
// shared between copies and subsets).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/parallel.hpp"
#include "mc/core/tensor.hpp"
#include "mc/data/common.hpp"
#include "mc/data/transforms.hpp"
#include "mc/io/image.hpp"
#include "mc/io/npy.hpp"
#include "mc/io/zip.hpp"

namespace mc::data {

// One subset's entry of medmnist.INFO.
struct MedMnistInfo {
  std::string flag;                 // "breastmnist"
  std::string python_class;         // "BreastMNIST"
  std::string task;                 // "binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression"
  int n_channels = 1;
  std::vector<std::string> labels;  // class names by index
  int64_t n_train = 0, n_val = 0, n_test = 0;  // the official split sizes

  bool multi_label() const { return task.find("multi-label") != std::string::npos; }
  int num_classes() const { return int(labels.size()); }
};

// The 2-D subsets of medmnist 3.0.2's INFO.
inline const std::vector<MedMnistInfo>& medmnist_infos() {
  static const std::vector<MedMnistInfo> infos = {
      {"pathmnist", "PathMNIST", "multi-class", 3,
       {"adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"},
       89996, 10004, 7180},
      {"chestmnist", "ChestMNIST", "multi-label, binary-class", 1,
       {"atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
        "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"},
       78468, 11219, 22433},
      {"dermamnist", "DermaMNIST", "multi-class", 3,
       {"actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"},
       7007, 1003, 2005},
      {"octmnist", "OCTMNIST", "multi-class", 1,
       {"choroidal neovascularization", "diabetic macular edema", "drusen", "normal"},
       97477, 10832, 1000},
      {"pneumoniamnist", "PneumoniaMNIST", "binary-class", 1, {"normal", "pneumonia"}, 4708, 524, 624},
      {"retinamnist", "RetinaMNIST", "ordinal-regression", 3, {"0", "1", "2", "3", "4"}, 1080, 120, 400},
      {"breastmnist", "BreastMNIST", "binary-class", 1, {"malignant", "normal, benign"}, 546, 78, 156},
      {"bloodmnist", "BloodMNIST", "multi-class", 3,
       {"basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet"},
       11959, 1712, 3421},
      {"tissuemnist", "TissueMNIST", "multi-class", 1,
       {"Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb"},
       165466, 23640, 47280},
      {"organamnist", "OrganAMNIST", "multi-class", 1,
       {"bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
        "lung-right", "pancreas", "spleen"},
       34561, 6491, 17778},
      {"organcmnist", "OrganCMNIST", "multi-class", 1,
       {"bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
        "lung-right", "pancreas", "spleen"},
       12975, 2392, 8216},
      {"organsmnist", "OrganSMNIST", "multi-class", 1,
       {"bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
        "lung-right", "pancreas", "spleen"},
       13932, 2452, 8827},
  };
  return infos;
}

// The INFO entry of `flag` (case-insensitive); throws listing the known subsets.
inline const MedMnistInfo& medmnist_info(const std::string& flag) {
  const std::string f = ascii_lower(flag);
  for (const MedMnistInfo& i : medmnist_infos())
    if (i.flag == f) return i;
  std::string known;
  for (const MedMnistInfo& i : medmnist_infos()) known += (known.empty() ? "" : ", ") + i.flag;
  fail("MedMNIST: unknown subset '", flag, "' (known: ", known, ")");
}

// "breastmnist_224" -> "breastmnist": the file stem, lower-cased, without a trailing "_<digits>".
inline std::string medmnist_flag_from_path(const std::string& path) {
  std::string s = ascii_lower(file_stem(path));
  size_t u = s.find_last_of('_');
  if (u != std::string::npos && u + 1 < s.size() &&
      std::all_of(s.begin() + long(u) + 1, s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    s.resize(u);
  return s;
}

struct MedMnistOptions {
  std::string flag;                // the subset; "" = from the file name
  double percentage = 1.0;         // fraction of the split to keep, in (0, 1]
  uint64_t seed = kDefaultSeed;    // for the subsample
  bool stratified = true;          // per-class subsample (see the top of this file)
};

struct MedMnistSample {
  io::Image image;     // as stored: 1 channel (grey) or 3 (RGB), H x W
  int64_t label = 0;   // class index
  int64_t row = 0;     // index of the sample in the file's split
};

// A batch for training: images [B, 3, S, S] f32 (preprocessed), labels [B] i64.
struct MedMnistBatch {
  Tensor images;
  Tensor labels;
  std::vector<int64_t> indices;  // dataset indices of the batch's samples
};

class MedMnist {
 public:
  // Opens split "train", "val" or "test" of the .npz at `path`.
  static MedMnist open(const std::string& path, const std::string& split, const MedMnistOptions& opt = {}) {
    MC_CHECK(split == "train" || split == "val" || split == "test", path, ": unknown MedMNIST split '", split,
             "' (expected train, val or test)");
    const std::string flag = opt.flag.empty() ? medmnist_flag_from_path(path) : ascii_lower(opt.flag);
    const MedMnistInfo* info = nullptr;
    for (const MedMnistInfo& i : medmnist_infos())
      if (i.flag == flag) info = &i;
    if (!info) {
      std::string known;
      for (const MedMnistInfo& i : medmnist_infos()) known += (known.empty() ? "" : ", ") + i.flag;
      fail(path, ": cannot tell the MedMNIST subset: '", flag, "' is not one of ", known,
           " (name the file after its subset or set MedMnistOptions::flag)");
    }
    MC_CHECK(!info->multi_label(), path, ": ", info->flag, " is a multi-label data set (task '", info->task,
             "'); multi-label classification is not supported");

    io::ZipReader zip = io::ZipReader::open(path);
    auto read = [&](const std::string& name) {
      const io::ZipEntry* e = zip.find(name + ".npy");
      MC_CHECK(e != nullptr, path, ": no array '", name, "' in the archive (not a MedMNIST .npz?)");
      io::ZipBytes b = zip.entry_bytes(*e, /*check_crc_stored=*/true);
      return io::parse_npy(b.data, b.size, b.owner, path + ": array '" + name + "'");
    };
    auto arrays = std::make_shared<Arrays>();
    arrays->path = path;
    arrays->split = split;
    arrays->info = info;
    arrays->images = read(split + "_images");
    const Tensor labels = read(split + "_labels");

    const Tensor& im = arrays->images;
    const std::string iw = path + ": array '" + split + "_images'";
    MC_CHECK(im.dtype() == DType::U8, iw, ": expected uint8 images, got ", dtype_name(im.dtype()));
    MC_CHECK(im.dim() == 3 || (im.dim() == 4 && (im.size(3) == 3 || im.size(3) == 1)), iw,
             ": expected [N, H, W] or [N, H, W, 3], got ", shape_str(im.shape()));
    MC_CHECK(im.size(1) > 0 && im.size(2) > 0 && im.size(1) < (1 << 16) && im.size(2) < (1 << 16), iw,
             ": invalid image size ", shape_str(im.shape()));
    arrays->n = im.size(0);
    arrays->height = int(im.size(1));
    arrays->width = int(im.size(2));
    arrays->channels = im.dim() == 4 ? int(im.size(3)) : 1;

    const std::string lw = path + ": array '" + split + "_labels'";
    MC_CHECK(labels.dim() == 1 || labels.dim() == 2, lw, ": expected [N, 1] labels, got ", shape_str(labels.shape()));
    MC_CHECK(labels.size(0) == arrays->n, lw, ": ", labels.size(0), " labels for ", arrays->n, " images");
    MC_CHECK(labels.dim() == 1 || labels.size(1) == 1, lw, ": labels of shape ", shape_str(labels.shape()),
             " are multi-label; multi-label classification is not supported");
    const int K = info->num_classes();
    std::vector<int64_t> all(size_t(arrays->n));
    const int64_t st = labels.stride(0);
    for (int64_t i = 0; i < arrays->n; ++i) {
      int64_t v = 0;
      switch (labels.dtype()) {
        case DType::U8: v = static_cast<const uint8_t*>(labels.raw_data())[i * st]; break;
        case DType::I32: v = static_cast<const int32_t*>(labels.raw_data())[i * st]; break;
        case DType::I64: v = static_cast<const int64_t*>(labels.raw_data())[i * st]; break;
        default: fail(lw, ": expected integer labels (uint8, int32 or int64), got ", dtype_name(labels.dtype()));
      }
      MC_CHECK(v >= 0 && v < K, lw, ": label ", v, " of sample ", i, " is outside [0, ", K, ") for ", info->flag);
      all[size_t(i)] = v;
    }
    arrays->labels = std::move(all);

    MedMnist ds;
    ds.arrays_ = std::move(arrays);
    ds.rows_.resize(size_t(ds.arrays_->n));
    for (int64_t i = 0; i < ds.arrays_->n; ++i) ds.rows_[size_t(i)] = i;
    if (opt.percentage != 1.0) return ds.subset(opt.percentage, opt.seed, opt.stratified);
    return ds;
  }

  // A subsample of this data set (rules at the top of this file). percentage is a fraction in (0, 1].
  MedMnist subset(double percentage, uint64_t seed = kDefaultSeed, bool stratified = true) const {
    MC_CHECK(percentage > 0.0 && percentage <= 1.0, arrays_->path, ": percentage must be a fraction in (0, 1] (0.1 = 10 %), got ",
             percentage);
    MedMnist out = *this;
    const int64_t n = size();
    if (percentage == 1.0 || n == 0) return out;
    std::vector<int64_t> keep;  // positions into rows_
    if (stratified) {
      const int K = num_classes();
      std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(K));
      for (int64_t i = 0; i < n; ++i) by_class[size_t(label(i))].push_back(i);
      for (int c = 0; c < K; ++c) {
        std::vector<int64_t>& v = by_class[size_t(c)];
        if (v.empty()) continue;
        const int64_t nc = int64_t(v.size());
        const int64_t k = std::clamp<int64_t>(round_half_up(double(nc) * percentage), 1, nc);
        SeededRng rng(seed, uint64_t(c));
        shuffle(v, rng);
        keep.insert(keep.end(), v.begin(), v.begin() + k);
      }
    } else {
      const int64_t k = std::clamp<int64_t>(int64_t(double(n) * percentage), 1, n);
      std::vector<int64_t> p = permutation(n, seed, 0);
      keep.assign(p.begin(), p.begin() + k);
    }
    std::sort(keep.begin(), keep.end());
    out.rows_.clear();
    for (int64_t i : keep) out.rows_.push_back(rows_[size_t(i)]);
    return out;
  }

  int64_t size() const { return int64_t(rows_.size()); }
  const std::string& path() const { return arrays_->path; }
  const std::string& split() const { return arrays_->split; }
  const MedMnistInfo& info() const { return *arrays_->info; }
  const std::string& flag() const { return arrays_->info->flag; }
  const std::string& task() const { return arrays_->info->task; }
  int num_classes() const { return arrays_->info->num_classes(); }
  const std::vector<std::string>& class_names() const { return arrays_->info->labels; }
  int height() const { return arrays_->height; }
  int width() const { return arrays_->width; }
  int channels() const { return arrays_->channels; }
  // Indices of this data set's samples in the file's split (ascending).
  const std::vector<int64_t>& rows() const { return rows_; }

  int64_t label(int64_t i) const { return arrays_->labels[size_t(row_of(i))]; }
  std::vector<int64_t> labels() const {
    std::vector<int64_t> out(rows_.size());
    for (size_t i = 0; i < rows_.size(); ++i) out[i] = arrays_->labels[size_t(rows_[i])];
    return out;
  }
  // Samples per class.
  std::vector<int64_t> class_counts() const {
    std::vector<int64_t> c(size_t(num_classes()), 0);
    for (int64_t r : rows_) ++c[size_t(arrays_->labels[size_t(r)])];
    return c;
  }

  // The stored image of sample i (1 channel for grey, 3 for RGB).
  io::Image image(int64_t i) const {
    const int64_t r = row_of(i);
    const Tensor& im = arrays_->images;
    const Arrays& a = *arrays_;
    io::Image img = io::Image::zeros(a.width, a.height, a.channels == 3 ? 3 : 1);
    const uint8_t* base = static_cast<const uint8_t*>(im.raw_data()) + r * im.stride(0);
    const int64_t sy = im.stride(1), sx = im.stride(2), sc = im.dim() == 4 ? im.stride(3) : 0;
    const int C = img.channels;
    if (sx == C && (C == 1 || sc == 1) && sy == int64_t(a.width) * C) {
      std::memcpy(img.pixels.data(), base, img.pixels.size());
    } else {
      for (int y = 0; y < a.height; ++y)
        for (int x = 0; x < a.width; ++x)
          for (int c = 0; c < C; ++c) img.row(y)[x * C + c] = base[y * sy + x * sx + c * sc];
    }
    return img;
  }

  MedMnistSample get(int64_t i) const { return {image(i), label(i), row_of(i)}; }

  // Preprocessed images [B, 3, S, S] of the given samples (in parallel).
  Tensor images(const std::vector<int64_t>& indices, const Preprocess& pre) const {
    std::vector<io::Image> imgs(indices.size());
    for (size_t k = 0; k < indices.size(); ++k) imgs[k] = image(indices[k]);
    return pre.batch(imgs);
  }
  // Labels [B] (int64) of the given samples.
  Tensor labels(const std::vector<int64_t>& indices) const {
    Tensor t = Tensor::empty({int64_t(indices.size())}, DType::I64);
    int64_t* p = t.data<int64_t>();
    for (size_t k = 0; k < indices.size(); ++k) p[k] = label(indices[k]);
    return t;
  }
  MedMnistBatch batch(const std::vector<int64_t>& indices, const Preprocess& pre) const {
    return {images(indices, pre), labels(indices), indices};
  }

 private:
  struct Arrays {
    std::string path, split;
    const MedMnistInfo* info = nullptr;
    Tensor images;                 // u8 [N, H, W] or [N, H, W, C]
    std::vector<int64_t> labels;   // per row of the split
    int64_t n = 0;
    int height = 0, width = 0, channels = 1;
  };

  int64_t row_of(int64_t i) const {
    MC_CHECK(i >= 0 && i < size(), arrays_->path, " (", arrays_->split, "): sample index ", i, " out of range [0, ",
             size(), ")");
    return rows_[size_t(i)];
  }

  std::shared_ptr<const Arrays> arrays_;
  std::vector<int64_t> rows_;
};

}  // namespace mc::data
