// Data sets (MedMNIST, VQA-RAD, SLAKE, ROCO) and the DataLoader.
//
// Reads the real files of the shared data folder next to the repository (../shared/data); CMake disables
// this test file when that folder is absent. The counts below were measured on those files with numpy /
// Python's json module (class counts per split, QA counts, answer types, distinct answers).
#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/data/datasets.hpp"
#include "mc/data/loader.hpp"
#include "mc/io/file.hpp"
#include "mc/io/inflate.hpp"

namespace {

using mc_test::contains;
using mc_test::error_of;
using mc_test::npy;
using mc_test::put16;
using mc_test::put32;
using mc_test::zip_stored;

struct TempDir : mc_test::TempDir {
  TempDir() : mc_test::TempDir("mc_test_data") {}
};

namespace fs = std::filesystem;
using namespace mc::data;

const std::string kShared = std::string(MC_SOURCE_DIR) + "/../shared/data/";
const std::string kBreast = kShared + "medmnist/breastmnist.npz";
const std::string kPneumonia = kShared + "medmnist/pneumoniamnist_balanced_subset/pneumoniamnist.npz";
const std::string kRad = kShared + "vqa_rad";
const std::string kSlake = kShared + "slake";
const std::string kRoco = kShared + "roco";



// A .npy (version 1.0) of raw little-endian data.

// A .npz with stored (uncompressed) entries.
std::string npz(const std::vector<std::pair<std::string, std::string>>& arrays) {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [name, data] : arrays) entries.emplace_back(name + ".npy", data);
  return zip_stored(entries);
}

std::string bytes_of(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::string i64_bytes(const std::vector<int64_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int64_t));
}

bool same_tensor(const mc::Tensor& a, const mc::Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), size_t(a.numel()) * a.element_size()) == 0;
}

}  // namespace

TEST_CASE("shared data folder is present", "[data]") {
  REQUIRE(dir_exists(kShared));
  REQUIRE(file_exists(kBreast));
  REQUIRE(file_exists(kRad + "/trainset.json"));
  REQUIRE(file_exists(kSlake + "/train.json"));
  REQUIRE(file_exists(kRoco + "/test/radiology/captions.txt"));
}

TEST_CASE("MedMNIST: BreastMNIST splits, labels and class names", "[data]") {
  // numpy: np.bincount(f[s + '_labels'].ravel()) for s in train / val / test.
  struct Want {
    const char* split;
    int64_t n, c0, c1;
  };
  for (const Want& w : {Want{"train", 546, 147, 399}, Want{"val", 78, 21, 57}, Want{"test", 156, 42, 114}}) {
    MedMnist ds = MedMnist::open(kBreast, w.split);
    CHECK(ds.size() == w.n);
    CHECK(ds.class_counts() == std::vector<int64_t>{w.c0, w.c1});
    CHECK(ds.height() == 28);
    CHECK(ds.width() == 28);
    CHECK(ds.channels() == 1);
  }
  MedMnist tr = MedMnist::open(kBreast, "train");
  CHECK(tr.flag() == "breastmnist");
  CHECK(tr.task() == "binary-class");
  CHECK(tr.num_classes() == 2);
  CHECK(tr.class_names() == std::vector<std::string>{"malignant", "normal, benign"});
  // numpy: train_images[0].sum() == 79609, train_images[0][14, 10:18].
  mc::io::Image img = tr.image(0);
  REQUIRE(img.width == 28);
  REQUIRE(img.channels == 1);
  int64_t sum = 0;
  for (uint8_t p : img.pixels) sum += p;
  CHECK(sum == 79609);
  const uint8_t row14[8] = {198, 202, 180, 169, 167, 155, 147, 143};
  for (int x = 0; x < 8; ++x) CHECK(int(img.at(14, 10 + x, 0)) == int(row14[x]));
  MedMnistSample s = tr.get(5);
  CHECK(s.label == tr.label(5));
  CHECK(s.row == 5);

  // The balanced PneumoniaMNIST subset: the flag comes from the file name.
  MedMnist pn = MedMnist::open(kPneumonia, "train");
  CHECK(pn.flag() == "pneumoniamnist");
  CHECK(pn.class_names() == std::vector<std::string>{"normal", "pneumonia"});
  CHECK(pn.class_counts() == std::vector<int64_t>{1214, 1214});
  CHECK(MedMnist::open(kPneumonia, "test").class_counts() == std::vector<int64_t>{234, 234});

  // INFO facts for the paper's other subsets.
  CHECK(medmnist_info("organamnist").num_classes() == 11);
  CHECK(medmnist_info("OrganCMNIST").labels[10] == "spleen");
  CHECK(medmnist_info("chestmnist").multi_label());
  CHECK(medmnist_flag_from_path("/x/organamnist_224.npz") == "organamnist");
}

TEST_CASE("MedMNIST: errors", "[data]") {
  CHECK(contains(error_of([] { MedMnist::open(kBreast, "validation"); }), "unknown MedMNIST split 'validation'"));
  CHECK(contains(error_of([] { MedMnist::open(kShared + "medmnist/nothere.npz", "train", {"breastmnist"}); }),
                 "nothere.npz"));
  MedMnistOptions chest;
  chest.flag = "chestmnist";
  CHECK(contains(error_of([&] { MedMnist::open(kBreast, "train", chest); }), "multi-label"));
  MedMnistOptions unknown;
  unknown.flag = "foomnist";
  CHECK(contains(error_of([&] { MedMnist::open(kBreast, "train", unknown); }), "'foomnist' is not one of"));
  MedMnistOptions pct;
  pct.percentage = 10;  // meant as 10 %, but the option is a fraction
  CHECK(contains(error_of([&] { MedMnist::open(kBreast, "train", pct); }), "fraction in (0, 1]"));
  CHECK(contains(error_of([] { MedMnist::open(kBreast, "train").image(546); }), "out of range"));
}

TEST_CASE("MedMNIST: synthetic RGB, int64 labels, multi-label and bad labels", "[data]") {
  TempDir dir;
  std::vector<uint8_t> rgb(2 * 3 * 4 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 7);
  const std::string images = npy("|u1", {2, 3, 4, 3}, bytes_of(rgb));
  dir.write("dermamnist.npz", npz({{"test_images", images}, {"test_labels", npy("<i8", {2, 1}, i64_bytes({6, 2}))}}));
  MedMnist ds = MedMnist::open(dir.file("dermamnist.npz"), "test");
  CHECK(ds.size() == 2);
  CHECK(ds.channels() == 3);
  CHECK(ds.num_classes() == 7);
  CHECK(ds.label(0) == 6);
  mc::io::Image im = ds.image(1);
  REQUIRE(im.channels == 3);
  CHECK(im.height == 3);
  CHECK(im.width == 4);
  CHECK(int(im.at(2, 3, 2)) == int(rgb[36 + (2 * 4 + 3) * 3 + 2]));
  mc::Tensor t = ds.images({0, 1}, Preprocess::clip(8));
  CHECK(t.shape() == mc::Shape{2, 3, 8, 8});
  CHECK(contains(error_of([&] { MedMnist::open(dir.file("dermamnist.npz"), "train"); }), "no array 'train_images'"));

  dir.write("bloodmnist.npz", npz({{"val_images", images}, {"val_labels", npy("|u1", {2, 3}, std::string(6, '\1'))}}));
  CHECK(contains(error_of([&] { MedMnist::open(dir.file("bloodmnist.npz"), "val"); }), "multi-label"));
  dir.write("octmnist.npz", npz({{"val_images", images}, {"val_labels", npy("|u1", {2, 1}, std::string("\1\4"))}}));
  CHECK(contains(error_of([&] { MedMnist::open(dir.file("octmnist.npz"), "val"); }), "label 4 of sample 1"));
  dir.write("pathmnist.npz", npz({{"val_images", images}, {"val_labels", npy("|u1", {3, 1}, std::string(3, '\1'))}}));
  CHECK(contains(error_of([&] { MedMnist::open(dir.file("pathmnist.npz"), "val"); }), "3 labels for 2 images"));
  dir.write("retinamnist.npz", "not a zip");
  CHECK(contains(error_of([&] { MedMnist::open(dir.file("retinamnist.npz"), "val"); }), "retinamnist.npz"));
}

TEST_CASE("MedMNIST: stratified percentage subsets", "[data]") {
  MedMnist tr = MedMnist::open(kBreast, "train");  // 147 / 399
  struct Want {
    double p;
    int64_t c0, c1;
  };
  // k_c = clamp(floor(n_c * p + 0.5), 1, n_c)
  for (const Want& w : {Want{0.01, 1, 4}, Want{0.1, 15, 40}, Want{0.25, 37, 100}, Want{0.5, 74, 200}, Want{1.0, 147, 399}}) {
    MedMnistOptions o;
    o.percentage = w.p;
    MedMnist sub = MedMnist::open(kBreast, "train", o);
    CHECK(sub.class_counts() == std::vector<int64_t>{w.c0, w.c1});
    CHECK(sub.size() == w.c0 + w.c1);
    // rows are distinct, ascending, and keep their labels
    for (int64_t i = 0; i + 1 < sub.size(); ++i) CHECK(sub.rows()[size_t(i)] < sub.rows()[size_t(i + 1)]);
    for (int64_t i = 0; i < sub.size(); i += 7) CHECK(sub.label(i) == tr.label(sub.rows()[size_t(i)]));
  }
  // a class with very few samples keeps at least one
  CHECK(tr.subset(0.001).class_counts() == std::vector<int64_t>{1, 1});

  MedMnist a = tr.subset(0.1), b = tr.subset(0.1, kDefaultSeed), c = tr.subset(0.1, 1234);
  CHECK(a.rows() == b.rows());
  CHECK(a.rows() != c.rows());
  CHECK(c.class_counts() == a.class_counts());
  // a subset of a subset is a subset of the file's rows
  MedMnist aa = a.subset(0.5);
  std::set<int64_t> rows(a.rows().begin(), a.rows().end());
  for (int64_t r : aa.rows()) CHECK(rows.count(r) == 1);

  // the paper's unstratified rule: floor(N * p) uniformly drawn samples
  MedMnist u = tr.subset(0.1, kDefaultSeed, /*stratified=*/false);
  CHECK(u.size() == 54);
  CHECK(u.rows() == tr.subset(0.1, kDefaultSeed, false).rows());

  MedMnist pn = MedMnist::open(kPneumonia, "train");
  CHECK(pn.subset(0.1).class_counts() == std::vector<int64_t>{121, 121});
}

TEST_CASE("MedMNIST: preprocessing to the model's input", "[data]") {
  MedMnist tr = MedMnist::open(kBreast, "train");
  const Preprocess pre = Preprocess::clip();
  MedMnistBatch b = tr.batch({3, 0, 7}, pre);
  REQUIRE(b.images.shape() == mc::Shape{3, 3, 224, 224});
  REQUIRE(b.labels.shape() == mc::Shape{3});
  CHECK(b.labels.data<int64_t>()[0] == tr.label(3));
  CHECK(b.labels.data<int64_t>()[2] == tr.label(7));
  // image 0 of the batch is sample 3 upsampled 28 -> 224, grey replicated into R, G and B
  mc::Tensor one = pre(mc::io::to_rgb(tr.image(3)));
  CHECK(std::memcmp(one.raw_data(), b.images.raw_data(), size_t(3 * 224 * 224) * 4) == 0);
  const float* p = b.images.data<float>();
  const size_t plane = 224 * 224;
  // equal grey channels normalise with different mean/std, so R != G in general; check the 8-bit value agrees
  const float r = p[1000] * pre.std[0] + pre.mean[0], g = p[plane + 1000] * pre.std[1] + pre.mean[1];
  CHECK(std::abs(r - g) < 1e-5f);
}

TEST_CASE("VQA-RAD: counts, answer types and normalisation", "[data]") {
  VqaDataset trainval = VqaDataset::vqa_rad(kRad, "trainval");
  VqaDataset test = VqaDataset::vqa_rad(kRad, "test");
  CHECK(trainval.size() == 3064);
  CHECK(test.size() == 451);
  CHECK(trainval.skipped() == 0);  // every referenced image is there
  // answer_type: 1821 "CLOSED" + 2 "CLOSED " -> 1823; 1241 OPEN
  CHECK(trainval.count(AnswerType::Closed) == 1823);
  CHECK(trainval.count(AnswerType::Open) == 1241);
  CHECK(test.count(AnswerType::Closed) == 272);
  CHECK(test.count(AnswerType::Open) == 179);
  CHECK(trainval.image_names().size() == 314);
  CHECK(test.image_names().size() == 203);
  // this release's test images all occur in trainset.json
  std::vector<std::string> tv = trainval.image_names(), te = test.image_names(), both;
  std::set_intersection(tv.begin(), tv.end(), te.begin(), te.end(), std::back_inserter(both));
  CHECK(both.size() == 203);

  const VqaItem& first = trainval[0];
  CHECK(first.qid == 1);
  CHECK(first.image_name == "synpic54610.jpg");
  CHECK(first.answer_raw == "Yes");
  CHECK(first.answer == "yes");
  CHECK(first.answer_type == AnswerType::Closed);
  CHECK(first.question == "Are regions of the brain infarcted?");
  int numbers = 0, stripped = 0;
  for (const VqaItem& it : trainval.items()) {
    if (it.answer == "4" && it.answer_raw == "4") ++numbers;  // JSON integer 4
    if (it.answer_raw == " superficial to the patient's skin") {
      CHECK(it.answer == "superficial to the patient's skin");
      ++stripped;
    }
    if (it.qid == 3371) CHECK(it.answer_type == AnswerType::Closed);  // "CLOSED " in the file
  }
  CHECK(numbers >= 2);
  CHECK(stripped == 2);
}

TEST_CASE("VQA-RAD: image-based train/validation split and answer vocabulary", "[data]") {
  VqaDataset train = VqaDataset::vqa_rad(kRad, "train");
  VqaDataset val = VqaDataset::vqa_rad(kRad, "val");
  // 314 images: floor(314 * 51 / 252 + 0.5) = 64 validation images
  CHECK(val.image_names().size() == 64);
  CHECK(train.image_names().size() == 250);
  CHECK(train.size() + val.size() == 3064);
  CHECK(train.size() == 2435);  // measured for seed 8464
  CHECK(val.size() == 629);
  std::vector<std::string> a = train.image_names(), b = val.image_names(), both;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
  CHECK(both.empty());
  CHECK(train.count(AnswerType::Closed) + val.count(AnswerType::Closed) == 1823);
  // deterministic; the seed changes it; fraction 0 keeps everything in train
  CHECK(VqaDataset::vqa_rad(kRad, "val").image_names() == b);
  VqaRadOptions other;
  other.seed = 1;
  CHECK(VqaDataset::vqa_rad(kRad, "val", other).image_names() != b);
  VqaRadOptions none;
  none.val_fraction = 0;
  CHECK(VqaDataset::vqa_rad(kRad, "val", none).size() == 0);
  CHECK(VqaDataset::vqa_rad(kRad, "train", none).size() == 3064);
  CHECK(vqa_image_split_validation({"c", "a", "b", "a"}, 0.5, 8464).size() == 2);

  // train + validation answers (476 distinct after lower-casing and trimming) + "unknown"
  AnswerVocab vocab = AnswerVocab::build({&train, &val});
  CHECK(vocab.size() == 477);
  CHECK(vocab.answers().back() == "unknown");
  CHECK(vocab.unknown_index() == 476);
  CHECK(std::is_sorted(vocab.answers().begin(), vocab.answers().end() - 1));
  CHECK(vocab.answer(vocab.index("yes")) == "yes");
  CHECK(vocab.index("no such answer") == vocab.unknown_index());
  VqaDataset test = VqaDataset::vqa_rad(kRad, "test");
  int64_t unknown = 0;
  for (int64_t i : vocab.encode(test)) unknown += i == vocab.unknown_index();
  CHECK(unknown == 47);
  mc::Tensor labels = test.answer_labels({0, 1}, vocab);
  CHECK(labels.data<int64_t>()[0] == vocab.index(test[0].answer));

  // a decoded, preprocessed batch
  VqaBatch batch = test.batch({0, 5}, Preprocess::clip(), vocab);
  CHECK(batch.images.shape() == mc::Shape{2, 3, 224, 224});
  CHECK(batch.questions[1] == test[5].question);
  CHECK(batch.answer_types[0] == test[0].answer_type);
}

TEST_CASE("VQA-RAD: malformed annotations, missing and corrupt images", "[data]") {
  TempDir dir;
  CHECK(contains(error_of([&] { VqaDataset::vqa_rad(dir.path, "test"); }), "testset.json: annotation file not found"));
  dir.write("testset.json", "[{\"qid\": 1, \"image_name\": \"a.jpg\"");
  CHECK(contains(error_of([&] { VqaDataset::vqa_rad(dir.path, "test"); }), "testset.json: malformed JSON"));
  dir.write("testset.json", R"([{"qid": 7, "image_name": "a.jpg", "question": "q?", "answer_type": "OPEN"}])");
  CHECK(contains(error_of([&] { VqaDataset::vqa_rad(dir.path, "test"); }), "entry 0 (qid 7): missing key 'answer'"));
  dir.write("testset.json", R"([{"qid": 7, "image_name": "a.jpg", "question": "q?", "answer": "x", "answer_type": "MAYBE"}])");
  CHECK(contains(error_of([&] { VqaDataset::vqa_rad(dir.path, "test"); }), "answer_type 'MAYBE' is neither"));
  dir.write("testset.json", R"({"qid": 7})");
  CHECK(contains(error_of([&] { VqaDataset::vqa_rad(dir.path, "test"); }), "expected a JSON array"));
  CHECK(contains(error_of([&] { VqaDataset::vqa_rad(dir.path, "dev"); }), "unknown VQA-RAD split 'dev'"));

  // good.jpg is a real image, bad.jpg a truncated copy, gone.jpg does not exist
  const std::vector<uint8_t> jpg = mc::io::read_file(kRad + "/images/synpic54610.jpg");
  dir.write("images/good.jpg", bytes_of(jpg));
  dir.write("images/bad.jpg", std::string(jpg.begin(), jpg.begin() + long(jpg.size() / 2)));
  dir.write("testset.json", R"([
    {"qid": 1, "image_name": "good.jpg", "question": "a?", "answer": " Yes ", "answer_type": "CLOSED"},
    {"qid": 2, "image_name": "bad.jpg", "question": "b?", "answer": 12, "answer_type": "open"},
    {"qid": 3, "image_name": "gone.jpg", "question": "c?", "answer": "No", "answer_type": "CLOSED"},
    {"qid": 4, "image_name": "gone.jpg", "question": "d?", "answer": "No", "answer_type": "CLOSED"}])");
  std::string e = error_of([&] { VqaDataset::vqa_rad(dir.path, "test"); });
  CHECK(contains(e, "images/gone.jpg: image file not found"));
  CHECK(contains(e, "skip_missing"));

  VqaRadOptions skip;
  skip.images.skip_missing = true;
  VqaDataset ds = VqaDataset::vqa_rad(dir.path, "test", skip);
  CHECK(ds.size() == 2);
  CHECK(ds.skipped() == 2);
  CHECK(ds.skip_report().files.size() == 1);
  CHECK(contains(ds.skip_report().message(), "skipped 2 of 4 samples"));
  CHECK(ds[0].answer == "yes");
  CHECK(ds[1].answer == "12");
  CHECK(ds[1].answer_type == AnswerType::Open);
  CHECK(ds.image(0).width > 0);
  CHECK(contains(error_of([&] { ds.image(1); }), "bad.jpg"));

  skip.images.verify = true;  // corrupt files are found at load time too
  VqaDataset verified = VqaDataset::vqa_rad(dir.path, "test", skip);
  CHECK(verified.size() == 1);
  CHECK(verified.skipped() == 3);
  CHECK(verified.skip_report().files.size() == 2);

  VqaRadOptions annotations_only;
  annotations_only.images.check = false;
  CHECK(VqaDataset::vqa_rad(dir.path, "test", annotations_only).size() == 4);

  // a worker's decoding error reaches the consumer with the file name, in batch order
  for (int workers : {0, 2}) {
    LoaderOptions o;
    o.num_workers = workers;
    auto loader = make_loader(ds.size(), [&](const std::vector<int64_t>& idx) { return ds.images(idx, Preprocess::clip(32)); }, o);
    CHECK(loader.next().has_value());
    CHECK(contains(error_of([&] { loader.next(); }), "bad.jpg"));
    CHECK(!loader.next().has_value());
  }
}

TEST_CASE("SLAKE: English questions, vocabulary, missing images", "[data]") {
  SlakeOptions ann;
  ann.images.check = false;  // the images are not part of the shared data
  VqaDataset train = VqaDataset::slake(kSlake, "train", ann);
  VqaDataset val = VqaDataset::slake(kSlake, "validate", ann);
  VqaDataset test = VqaDataset::slake(kSlake, "test", ann);
  CHECK(train.size() == 4919);
  CHECK(train.other_language() == 4916);
  CHECK(val.size() == 1053);
  CHECK(val.other_language() == 1046);
  CHECK(test.size() == 1061);
  CHECK(test.other_language() == 1033);
  CHECK(train.count(AnswerType::Closed) == 1943);
  CHECK(train.count(AnswerType::Open) == 2976);
  CHECK(test.count(AnswerType::Closed) == 416);
  CHECK(train.image_names().size() == 450);
  CHECK(train[0].image_name == "xmlab1/source.jpg");
  CHECK(contains(train[0].image_path, "slake/imgs/xmlab1/source.jpg"));
  CHECK(train[0].answer == "mri");
  CHECK(train[0].modality == "MRI");
  CHECK(VqaDataset::slake(kSlake, "val", ann).size() == 1053);
  SlakeOptions all = ann;
  all.language = "";
  CHECK(VqaDataset::slake(kSlake, "test", all).size() == 2094);

  AnswerVocab vocab = AnswerVocab::build({&train, &val});
  CHECK(vocab.size() == 224);  // 223 distinct English answers + "unknown"
  int64_t unknown = 0;
  for (int64_t i : vocab.encode(test)) unknown += i == vocab.unknown_index();
  CHECK(unknown == 2);
  // over the answers of both languages: the paper's 493 + 1
  SlakeOptions both = ann;
  both.language = "";
  VqaDataset train_all = VqaDataset::slake(kSlake, "train", both), val_all = VqaDataset::slake(kSlake, "validate", both);
  CHECK(AnswerVocab::build({&train_all, &val_all}).size() == 494);

  // the images are absent: an error naming the first one, or every QA pair skipped and counted
  CHECK(contains(error_of([] { VqaDataset::slake(kSlake, "test"); }), "imgs/xmlab102/source.jpg: image file not found"));
  SlakeOptions skip;
  skip.images.skip_missing = true;
  VqaDataset none = VqaDataset::slake(kSlake, "test", skip);
  CHECK(none.size() == 0);
  CHECK(none.skipped() == 1061);
  CHECK(none.skip_report().files.size() == 96);
  CHECK(contains(none.skip_report().message(), "test.json: skipped 1061 of 1061 samples (96 image files"));
  CHECK(contains(error_of([] { VqaDataset::slake(kSlake, "dev"); }), "unknown SLAKE split 'dev'"));
}

TEST_CASE("ROCO: captions", "[data]") {
  RocoOptions ann;
  ann.images.check = false;
  RocoDataset rad = RocoDataset::open_split(kRoco, "test", "radiology", ann);
  CHECK(rad.size() == 8179);
  CHECK(rad.empty_captions() == 0);
  CHECK(rad[0].id == "ROCO_00001");
  CHECK(rad[0].caption == "Axial MRI (coronal view).");  // the space after the tab is removed
  CHECK(contains(rad[0].image_path, "roco/test/radiology/images/ROCO_00001.jpg"));
  CHECK(rad[0].subset == "radiology");
  CHECK(rad.items().back().id == "ROCO_81798");
  CHECK(RocoDataset::open_split(kRoco, "validation", "radiology", ann).size() == 8180);
  RocoDataset non = RocoDataset::open(kRoco + "/test/non-radiology", ann);
  CHECK(non.size() == 612);
  CHECK(non[0].subset == "non-radiology");
  RocoDataset all = RocoDataset::open_split(kRoco, "test", "all", ann);
  CHECK(all.size() == 8179 + 612);
  CHECK(all.captions()[8179] == non[0].caption);
  for (const RocoItem& it : all.items()) {
    REQUIRE(!it.caption.empty());
    REQUIRE(!is_space(it.caption.front()));
    REQUIRE(!is_space(it.caption.back()));
  }
  CHECK(contains(error_of([] { RocoDataset::open_split(kRoco, "test", "radiology"); }),
                 "images/ROCO_00001.jpg: image file not found"));
  RocoOptions skip;
  skip.images.skip_missing = true;
  RocoDataset none = RocoDataset::open(kRoco + "/test/non-radiology", skip);
  CHECK(none.size() == 0);
  CHECK(none.skipped() == 612);
  CHECK(contains(error_of([] { RocoDataset::open_split(kRoco, "dev", "radiology"); }), "unknown ROCO split"));
}

TEST_CASE("ROCO: quirks of the caption format, dlinks names", "[data]") {
  TempDir dir;
  dir.write("a/captions.txt", "\xEF\xBB\xBFROCO_1\t First caption.\r\n\nROCO_2\t   \nROCO_3\tThird\twith tab \n");
  RocoOptions ann;
  ann.images.check = false;
  RocoDataset ds = RocoDataset::open(dir.file("a"), ann);
  REQUIRE(ds.size() == 2);
  CHECK(ds[0].id == "ROCO_1");
  CHECK(ds[0].caption == "First caption.");
  CHECK(ds[1].caption == "Third\twith tab");
  CHECK(ds.empty_captions() == 1);
  dir.write("b/captions.txt", "ROCO_1\tx\nROCO_1\ty\n");
  CHECK(contains(error_of([&] { RocoDataset::open(dir.file("b"), ann); }), "captions.txt:2: duplicate ID 'ROCO_1' (first on line 1)"));
  dir.write("c/captions.txt", "ROCO_1 no tab here\n");
  CHECK(contains(error_of([&] { RocoDataset::open(dir.file("c"), ann); }), "captions.txt:1: expected ID<TAB>caption"));
  CHECK(contains(error_of([&] { RocoDataset::open(dir.file("d"), ann); }), "d/captions.txt: file not found"));

  dir.write("dlinks.txt",
            "ROCO_1\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/cb/dd/PMC4327453.tar.gz -P /path/to/Dir\tf05.jpg\n"
            "ROCO_3\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/b5/0c/PMC4085828.tar.gz -P /path/to/Dir\tgf01.jpg\n");
  RocoOptions dl = ann;
  dl.dlinks = dir.file("dlinks.txt");
  RocoDataset named = RocoDataset::open(dir.file("a"), dl);
  CHECK(contains(named[0].image_path, "a/images/PMC4327453_f05.jpg"));
  CHECK(contains(named[1].image_path, "a/images/PMC4085828_gf01.jpg"));
}

TEST_CASE("DataLoader: order, coverage and independence of the worker count", "[data][loader]") {
  const int64_t n = 103;
  auto ids = [](const std::vector<int64_t>& idx) { return idx; };
  LoaderOptions o;
  o.batch_size = 10;
  o.shuffle = true;
  std::vector<std::vector<std::vector<int64_t>>> runs;  // [workers][batch]
  for (int workers : {0, 1, 3}) {
    o.num_workers = workers;
    auto loader = make_loader(n, ids, o);
    CHECK(loader.num_batches() == 11);
    std::vector<std::vector<int64_t>> all;
    for (int epoch = 0; epoch < 3; ++epoch) {
      std::vector<int> seen(size_t(n), 0);
      int batches = 0;
      while (auto b = loader.next()) {
        CHECK(b->size() == (batches < 10 ? 10u : 3u));
        for (int64_t i : *b) ++seen[size_t(i)];
        all.push_back(*b);
        ++batches;
      }
      CHECK(batches == 11);
      CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));  // each index once per epoch
    }
    runs.push_back(all);
  }
  CHECK(runs[0] == runs[1]);
  CHECK(runs[0] == runs[2]);
  // each epoch has its own order; the batches are what batches(epoch) says
  auto loader = make_loader(n, ids, o);
  CHECK(loader.batches(0) != loader.batches(1));
  CHECK(std::vector<std::vector<int64_t>>(runs[0].begin() + 11, runs[0].begin() + 22) == loader.batches(1));
  // another seed, another order; no shuffle is 0..n-1
  LoaderOptions o2 = o;
  o2.seed = 99;
  CHECK(epoch_batches(n, o2, 0) != loader.batches(0));
  LoaderOptions plain;
  plain.batch_size = 4;
  plain.drop_last = true;
  auto b0 = epoch_batches(10, plain, 5);
  CHECK(b0 == std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}});
  // start_epoch jumps (e.g. to resume)
  loader.start_epoch(2);
  CHECK(*loader.next() == loader.batches(2)[0]);
  CHECK(loader.epoch() == 2);
  // BatchInfo carries the epoch, batch number and a per-batch seed
  o.num_workers = 2;
  auto info_loader = make_loader(n, [](const std::vector<int64_t>&, const BatchInfo& info) { return info; }, o);
  for (int64_t k = 0; auto b = info_loader.next(); ++k) {
    CHECK(b->batch == k);
    CHECK(b->epoch == 0);
    CHECK(b->seed == batch_seed(o.seed, 0, k));
  }
  // an empty data set has no batches
  auto empty = make_loader(0, ids, o);
  CHECK(!empty.next().has_value());
}

TEST_CASE("DataLoader: real batches agree across worker counts", "[data][loader]") {
  MedMnist tr = MedMnist::open(kBreast, "train").subset(0.05);
  const Preprocess pre = Preprocess::clip(64);
  LoaderOptions o;
  o.batch_size = 8;
  o.shuffle = true;
  std::vector<MedMnistBatch> ref;
  for (int workers : {0, 2}) {
    o.num_workers = workers;
    auto loader = make_loader(tr.size(), [&](const std::vector<int64_t>& idx) { return tr.batch(idx, pre); }, o);
    size_t k = 0;
    while (auto b = loader.next()) {
      if (workers == 0) {
        ref.push_back(*b);
        continue;
      }
      REQUIRE(k < ref.size());
      CHECK(b->indices == ref[k].indices);
      CHECK(same_tensor(b->images, ref[k].images));
      CHECK(same_tensor(b->labels, ref[k].labels));
      ++k;
    }
    if (workers) CHECK(k == ref.size());
  }
  CHECK(ref.size() == 4);  // 27 samples (7 + 20), batches of 8
}

TEST_CASE("DataLoader: errors, bounded prefetch, stopping mid-epoch", "[data][loader]") {
  // batch 3 (indices 12..15) fails; the error comes out of the next() for batch 3, and the epoch goes on
  for (int workers : {0, 2}) {
    LoaderOptions o;
    o.batch_size = 4;
    o.num_workers = workers;
    auto loader = make_loader(24, [](const std::vector<int64_t>& idx) {
      for (int64_t i : idx) MC_CHECK(i != 13, "/data/img_13.png: corrupt image");
      return idx.front();
    }, o);
    CHECK(*loader.next() == 0);
    CHECK(*loader.next() == 4);
    CHECK(*loader.next() == 8);
    CHECK(error_of([&] { loader.next(); }) == "/data/img_13.png: corrupt image");
    CHECK(*loader.next() == 16);
    CHECK(*loader.next() == 20);
    CHECK(!loader.next().has_value());
  }

  // at most num_workers * prefetch batches are made ahead of the consumer
  {
    std::atomic<int> started{0};
    LoaderOptions o;
    o.num_workers = 2;
    o.prefetch = 1;
    auto loader = make_loader(50, [&](const std::vector<int64_t>& idx) {
      ++started;
      return idx[0];
    }, o);
    CHECK(*loader.next() == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    CHECK(started.load() <= 1 + 2);
    CHECK(*loader.next() == 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    CHECK(started.load() <= 2 + 2);
  }

  // destroying the loader mid-epoch stops and joins the workers promptly
  {
    std::atomic<int> started{0}, finished{0};
    const auto t0 = std::chrono::steady_clock::now();
    {
      LoaderOptions o;
      o.num_workers = 3;
      o.shuffle = true;
      auto loader = make_loader(1000, [&](const std::vector<int64_t>& idx) {
        ++started;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ++finished;
        return std::vector<int64_t>(idx);
      }, o);
      CHECK(loader.next().has_value());
      CHECK(loader.next().has_value());
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    CHECK(started.load() == finished.load());
    CHECK(started.load() <= 2 + 3 * 2);
    CHECK(ms < 1000);
  }

  // restarting an epoch mid-way, and moving a loader, are safe too
  {
    LoaderOptions o;
    o.num_workers = 2;
    o.batch_size = 3;
    auto loader = make_loader(30, [](const std::vector<int64_t>& idx) { return idx; }, o);
    CHECK(loader.next().has_value());
    loader.start_epoch(0);
    CHECK(*loader.next() == std::vector<int64_t>{0, 1, 2});
    auto moved = std::move(loader);
    CHECK(*moved.next() == std::vector<int64_t>{3, 4, 5});
  }

  CHECK(contains(error_of([] { make_loader(5, [](const std::vector<int64_t>& i) { return i; }, LoaderOptions{0}); }),
                 "batch_size must be positive"));
}
