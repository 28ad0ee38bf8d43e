// Tests of the models layer's assembly: model cards, checkpoint conversion, the DualEncoder.
//
// Parity fixtures (tests/fixtures/models, written by tools/gen_model_fixtures.py): each of the four
// architectures, scaled down, with random weights, saved in its original checkpoint format, plus the
// reference embeddings computed by the reference implementation (open_clip, timm, transformers,
// torchvision). Each is converted in memory and must match within 1e-4 relative. (The conversion of a real
// pretrained checkpoint is in test_convert_real.cpp.)
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "mc/io/npy.hpp"
#include "mc/mc.hpp"
#include "mc/models/models.hpp"

namespace {

namespace fs = std::filesystem;
using mc::Tensor;
using mc::models::ModelCard;

std::string fixture(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/tests/fixtures/models/" + name; }
std::string weights(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/weights/" + name; }

struct TempDir {
  fs::path dir;
  TempDir() {
    dir = fs::temp_directory_path() / ("mc_test_models_" + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};
const TempDir& temp() {
  static TempDir t;
  return t;
}

// max |a - b| / max |b|, in double.
double rel_err(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.to(mc::DType::F64).contiguous().to_vector<double>();
  std::vector<double> y = b.to(mc::DType::F64).contiguous().to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::abs(x[i] - y[i]));
    den = std::max(den, std::abs(y[i]));
  }
  return den > 0 ? num / den : num;
}

std::vector<std::string> texts_of(const std::map<std::string, Tensor>& ref) {
  const Tensor& t = ref.at("texts");
  std::string all(reinterpret_cast<const char*>(t.raw_data()), size_t(t.numel()));
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t nl = all.find('\n', pos);
    out.push_back(all.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out;
}

std::string vocab_for(const std::string& short_name) { return fixture(short_name == "clip" ? "bpe.txt.gz" : "vocab.txt"); }

const char* checkpoint_of(const std::string& short_name) {
  if (short_name == "clip") return "clip.pt";
  if (short_name == "biomedclip") return "biomedclip.bin";
  if (short_name == "pmc") return "pmc.pt";
  return "cxr.tar";
}

std::shared_ptr<mc::models::DualEncoder> convert_fixture(const std::string& short_name, const ModelCard& card) {
  mc::models::Converted c =
      mc::models::convert_checkpoint(fixture(checkpoint_of(short_name)), card, vocab_for(short_name));
  return mc::models::model_from_tensors(c.tensors, c.metadata, short_name);
}

// Converts the fixture, then checks embeddings, tokens, the tokenizer and the logit scale against the reference.
void check_parity(const std::string& short_name) {
  INFO(short_name);
  ModelCard card = ModelCard::load(fixture(short_name + ".json"));
  auto model = convert_fixture(short_name, card);
  auto ref = mc::io::load_npz_map(fixture(short_name + ".npz"));
  mc::NoGradGuard ng;
  const Tensor& ids = ref.at("input_ids");
  const Tensor& mask = ref.at("attention_mask");
  double e_img = rel_err(model->encode_image(ref.at("pixels")), ref.at("image_embeds"));
  double e_txt = rel_err(model->encode_text(ids, mask), ref.at("text_embeds"));
  double e_itok = rel_err(model->image_tokens(ref.at("pixels")), ref.at("image_tokens"));
  double e_ttok = rel_err(model->text_tokens(ids, short_name == "clip" ? Tensor() : mask), ref.at("text_tokens"));
  WARN(short_name << ": max relative error image_embeds " << e_img << ", text_embeds " << e_txt << ", image_tokens "
                  << e_itok << ", text_tokens " << e_ttok);
  CHECK(e_img < 1e-4);
  CHECK(e_txt < 1e-4);
  CHECK(e_itok < 1e-4);
  CHECK(e_ttok < 1e-4);
  // The tokenizer rebuilt from the vocabulary stored in the converted file gives the reference ids.
  REQUIRE(model->has_tokenizer());
  mc::models::TokenBatch tok = model->tokenize(texts_of(ref));
  CHECK(tok.input_ids.to_vector<int64_t>() == ids.to_vector<int64_t>());
  CHECK(tok.attention_mask.to_vector<int64_t>() == mask.to_vector<int64_t>());
  CHECK(model->logit_scale_param.item<float>() == ref.at("logit_scale").item<float>());
}

nlohmann::ordered_json card_json(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  return nlohmann::ordered_json::parse(f);
}

// Parses a card after `edit` changed its JSON; returns the error message ("" when it parsed).
template <class F>
std::string card_error(F&& edit) {
  auto j = card_json(weights("pmc-clip.json"));
  edit(j);
  try {
    ModelCard::parse(j.dump(), "card");
  } catch (const mc::Error& e) {
    return e.what();
  }
  return "";
}

template <class F>
std::string convert_error(F&& fn) {
  try {
    fn();
  } catch (const mc::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("models: OpenAI CLIP (TorchScript, fp16) matches open_clip", "[models]") { check_parity("clip"); }
TEST_CASE("models: BiomedCLIP (timm ViT + HF BERT) matches open_clip", "[models]") { check_parity("biomedclip"); }
TEST_CASE("models: PMC-CLIP (ModifiedResNet + BERT, module. prefixes) matches the reference", "[models]") {
  check_parity("pmc");
}
TEST_CASE("models: CXR-CLIP (torchvision ResNet + BERT) matches the reference", "[models]") { check_parity("cxr"); }

TEST_CASE("models: PMC-CLIP with the quick-start pooler_output", "[models]") {
  ModelCard card = ModelCard::load(fixture("pmc.json"));
  card.text.pool = "pooler_output";
  card.text.bert.pooler = true;
  std::erase(card.checkpoint.drop, std::string("text_encoder.pooler.*"));
  auto model = convert_fixture("pmc", card);
  auto ref = mc::io::load_npz_map(fixture("pmc.npz"));
  mc::NoGradGuard ng;
  CHECK(rel_err(model->encode_text(ref.at("input_ids")), ref.at("text_embeds_pooler")) < 1e-4);
  // Without the card's change, the pooler's tensors are unexpected: the error names them.
  card.text.pool = "cls";
  card.text.bert.pooler = false;
  std::string err = convert_error([&] { convert_fixture("pmc", card); });
  CHECK(err.find("unexpected keys") != std::string::npos);
  CHECK(err.find("text_encoder.pooler.dense.weight") != std::string::npos);
}

TEST_CASE("models: logits are scale * cosine; scales follow the card", "[models]") {
  auto model = convert_fixture("cxr", ModelCard::load(fixture("cxr.json")));
  Tensor a = mc::from_vector(std::vector<float>{3, 4, 0, 1, 0, 0}, {2, 3});
  Tensor b = mc::from_vector(std::vector<float>{0, 2, 0, 1, 1, 0, 5, 0, 0}, {3, 3});
  const double s = std::exp(3.1);
  Tensor l = model->logits(a, b);
  std::vector<float> v = l.to_vector<float>();
  const std::vector<double> cos = {0.8, 0.7 * std::sqrt(2.0), 0.6, 0, 1 / std::sqrt(2.0), 1};
  REQUIRE(v.size() == 6);
  for (size_t i = 0; i < 6; ++i) CHECK(std::abs(v[i] - s * cos[i]) < 1e-4 * s);
  CHECK(l.requires_grad());  // exp(logit_scale) is differentiable
  CHECK(std::abs(model->zero_shot_scale() - s) < 1e-4 * s);
  CHECK(std::abs(model->logits(a, b, /*zero_shot=*/true).to_vector<float>()[0] - s * 0.8) < 1e-4 * s);

  auto pmc = convert_fixture("pmc", ModelCard::load(fixture("pmc.json")));
  CHECK(std::abs(pmc->zero_shot_scale() - 3.1) < 1e-6);  // the raw parameter, as the paper's code
  CHECK(std::abs(pmc->logit_scale().item<float>() - s) < 1e-4 * s);
  auto clip = convert_fixture("clip", ModelCard::load(fixture("clip.json")));
  CHECK(clip->zero_shot_scale() == 100.0);
  auto bio = convert_fixture("biomedclip", ModelCard::load(fixture("biomedclip.json")));
  CHECK(std::abs(bio->zero_shot_scale() - 85.2323) < 1e-4);
  CHECK(std::abs(bio->logit_scale().item<float>() - 85.2323) < 1e-4);
}

TEST_CASE("models: converted files round-trip through safetensors (f32 and bf16)", "[models]") {
  ModelCard card = ModelCard::load(fixture("biomedclip.json"));
  auto ref = mc::io::load_npz_map(fixture("biomedclip.npz"));
  for (mc::DType dt : {mc::DType::F32, mc::DType::BF16}) {
    INFO(mc::dtype_name(dt));
    auto c = mc::models::convert_checkpoint(fixture("biomedclip.bin"), card, fixture("vocab.txt"), dt);
    const std::string path = temp().path(std::string("bio_") + mc::dtype_name(dt) + ".safetensors");
    mc::models::save_converted(c, path);
    auto f = mc::io::SafetensorsFile::open(path);
    CHECK(f.info("visual.head.proj.weight").dtype == dt);
    CHECK(f.info(mc::models::kVocabTensor).dtype == mc::DType::U8);
    CHECK(f.metadata().at(mc::models::kFormatKey) == mc::models::kModelFormat);
    CHECK(f.metadata().at("mc.source") == "biomedclip.bin (zip)");
    CHECK(ModelCard::parse(f.metadata().at(mc::models::kCardKey)).dump() == card.dump());
    auto model = mc::models::load_model(path);
    mc::NoGradGuard ng;
    double e = rel_err(model->encode_image(ref.at("pixels")), ref.at("image_embeds"));
    CHECK(e < (dt == mc::DType::F32 ? 1e-4 : 3e-2));
  }
}

TEST_CASE("models: the four cards parse and round-trip", "[models][card]") {
  for (const char* name : {"clip-vit-b32.json", "biomedclip.json", "pmc-clip.json", "cxr-clip-r50.json"}) {
    INFO(name);
    ModelCard c = ModelCard::load(weights(name));
    ModelCard back = ModelCard::parse(c.dump());
    CHECK(back.dump() == c.dump());
  }
  ModelCard pmc = ModelCard::load(weights("pmc-clip.json"));
  CHECK(pmc.vision.modified_resnet.heads == 32);
  CHECK(pmc.logit_scale.zero_shot.mode == "raw");
  ModelCard clip = ModelCard::load(weights("clip-vit-b32.json"));
  CHECK(clip.logit_scale.zero_shot.mode == "fixed");
  CHECK(clip.logit_scale.zero_shot.value == 100.0);
  CHECK(clip.checkpoint.sha256.has_value());
  CHECK_FALSE(ModelCard::load(weights("cxr-clip-r50.json")).checkpoint.sha256.has_value());
  CHECK(ModelCard::load(weights("cxr-clip-r50.json")).preprocess.make().filter == mc::data::Filter::Bilinear);
}

TEST_CASE("models: card errors name the key", "[models][card]") {
  using J = nlohmann::ordered_json;
  CHECK(card_error([](J&) {}) == "");
  std::string e = card_error([](J& j) { j["colour"] = "red"; });
  CHECK(e.find("unknown key 'colour'") != std::string::npos);
  e = card_error([](J& j) { j["vision"]["config"]["widht"] = 64; });
  CHECK(e.find("unknown key 'vision.config.widht'") != std::string::npos);
  e = card_error([](J& j) { j["vision"]["arch"] = "vitt"; });
  CHECK(e.find("vision.arch: unknown value \"vitt\"") != std::string::npos);
  e = card_error([](J& j) { j["text"]["pool"] = "mean"; });
  CHECK(e.find("text.pool") != std::string::npos);
  e = card_error([](J& j) { j["logit_scale"]["zero_shot"] = "log"; });
  CHECK(e.find("logit_scale.zero_shot") != std::string::npos);
  e = card_error([](J& j) { j["embed_dim"] = "768"; });
  CHECK(e.find("embed_dim must be an integer") != std::string::npos);
  e = card_error([](J& j) { j["vision"]["config"]["output_dim"] = 512; });
  CHECK(e.find("vision.config.output_dim") != std::string::npos);
  e = card_error([](J& j) { j["text"].erase("pool"); });
  CHECK(e.find("missing key 'text.pool'") != std::string::npos);
  e = card_error([](J& j) { j["checkpoint"]["sha256"] = "abc"; });
  CHECK(e.find("checkpoint.sha256") != std::string::npos);
  e = card_error([](J& j) { j["tokenizer"]["type"] = "clip_bpe"; });
  CHECK(e.find("tokenizer.type") != std::string::npos);
  CHECK_THROWS_AS(ModelCard::parse("{not json"), mc::Error);
}

TEST_CASE("models: conversion errors list the keys", "[models][convert]") {
  ModelCard card = ModelCard::load(fixture("cxr.json"));
  const std::string vocab(std::istreambuf_iterator<char>(std::ifstream(fixture("vocab.txt")).rdbuf()), {});
  auto sd = mc::models::read_state_dict(fixture("cxr.tar"), card.checkpoint.state_dict);
  REQUIRE_NOTHROW(mc::models::convert_state_dict(sd, card, vocab));

  // A tensor of the wrong shape.
  auto wrong = sd;
  for (auto& [n, t] : wrong)
    if (n == "text_projection.projection.weight") t = mc::zeros({25, 32});
  std::string e = convert_error([&] { mc::models::convert_state_dict(wrong, card, vocab); });
  CHECK(e.find("shape mismatches (1): text_projection.projection.weight: checkpoint [25, 32] vs card [24, 32]") !=
        std::string::npos);
  // A missing tensor and an unexpected one.
  auto missing = sd;
  std::erase_if(missing, [](const auto& p) { return p.first == "image_encoder.resnet.layer2.1.bn2.running_var"; });
  missing.emplace_back("image_encoder.resnet.fc.weight", mc::zeros({10, 128}));
  e = convert_error([&] { mc::models::convert_state_dict(missing, card, vocab); });
  CHECK(e.find("missing keys (1): image_encoder.resnet.layer2.1.bn2.running_var") != std::string::npos);
  CHECK(e.find("unexpected keys (1): image_encoder.resnet.fc.weight") != std::string::npos);
  // An integer tensor where the model has a float one.
  auto ints = sd;
  for (auto& [n, t] : ints)
    if (n == "logit_scale") t = mc::zeros({}, mc::DType::I64);
  e = convert_error([&] { mc::models::convert_state_dict(ints, card, vocab); });
  CHECK(e.find("non-floating tensors (1): logit_scale (i64)") != std::string::npos);

  // A truncated checkpoint file.
  auto bytes = mc::io::read_file(fixture("cxr.tar"));
  const std::string cut = temp().path("cut.tar");
  {
    std::ofstream f(cut, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size() / 2));
  }
  CHECK_THROWS_AS(mc::models::convert_checkpoint(cut, card, fixture("vocab.txt")), mc::Error);
  // A missing or unusable vocabulary.
  e = convert_error([&] { mc::models::convert_checkpoint(fixture("cxr.tar"), card, temp().path("nope/vocab.txt")); });
  CHECK(e.find("nope/vocab.txt: tokenizer vocabulary file not found") != std::string::npos);
  e = convert_error([&] { mc::models::convert_checkpoint(fixture("cxr.tar"), card, ""); });
  CHECK(e.find("needs a tokenizer vocabulary") != std::string::npos);
  e = convert_error([&] { mc::models::convert_state_dict(sd, card, "just\nwords\n"); });
  CHECK(e.find("[UNK]") != std::string::npos);
  // A card naming an entry the checkpoint lacks.
  card.checkpoint.state_dict = "weights";
  e = convert_error([&] { mc::models::convert_checkpoint(fixture("cxr.tar"), card, fixture("vocab.txt")); });
  CHECK(e.find("has no 'weights' entry") != std::string::npos);
  // The output file is written atomically: a failing conversion leaves an existing file untouched.
  const std::string out = temp().path("keep.safetensors");
  mc::io::save_safetensors(out, {{"x", mc::ones({2})}});
  CHECK_THROWS(mc::models::save_converted(mc::models::convert_checkpoint(cut, card, fixture("vocab.txt")), out));
  CHECK(mc::io::SafetensorsFile::open(out).names() == std::vector<std::string>{"x"});
}
