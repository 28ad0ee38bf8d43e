// mc/models/convert.hpp — PyTorch checkpoint -> self-contained mc model file (.safetensors).
//
//   Converted c = convert_checkpoint("ViT-B-32.pt", ModelCard::load("weights/clip-vit-b32.json"),
//                                    "bpe_simple_vocab_16e6.txt.gz");
//   save_converted(c, "clip-vit-b32.safetensors");        // atomic: temp file + rename
//   auto model = model_from_tensors(c.tensors, c.metadata); // or load_model(path) later
//
// With a card: the checkpoint is read by load_torch (zip, TorchScript or legacy pickle), its state dict
// taken from the card's checkpoint.state_dict entry or found by find_state_dict, each key stripped of the
// card's strip_prefix ("module."), keys matching a checkpoint.drop glob removed, and then EVERY remaining
// tensor is checked against the DualEncoder the card describes: names, shapes and floating dtypes. Any
// missing, unexpected or mismatched key is an mc::Error listing them all. The output holds the weights (in
// the model's state_dict order, floating tensors cast to the requested dtype: f32 or bf16 — OpenAI's fp16
// TorchScript weights become f32), the tokenizer vocabulary as the u8 tensor "tokenizer.vocab" (the CLIP
// merges text, gzip inflated, or vocab.txt, byte for byte), and metadata:
//   mc.format "mc.dual_encoder.v1", mc.card (the card JSON), mc.source (source file name and format),
//   mc.tokenizer (vocabulary file name), mc.dtype.
// Without a card (raw conversion): the state dict with "module." stripped and every tensor kept as it is
// (floating tensors cast to the requested dtype), metadata mc.format "mc.raw.v1" and mc.source.
#pragma once
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "mc/io/inflate.hpp"
#include "mc/io/safetensors.hpp"
#include "mc/io/torch_load.hpp"
#include "mc/models/dual_encoder.hpp"

namespace mc::models {

struct Converted {
  nn::NamedTensors tensors;                      // in file order
  std::map<std::string, std::string> metadata;   // the safetensors __metadata__
  std::vector<std::string> dropped;              // checkpoint keys removed per checkpoint.drop
  std::string summary;                           // one line for the CLI
};

namespace convert_detail {

inline std::string base_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

inline nn::NamedTensors strip(nn::NamedTensors sd, const std::vector<std::string>& prefixes, const std::string& what) {
  std::set<std::string> seen;
  for (auto& [name, t] : sd) {
    for (const std::string& p : prefixes)
      if (!p.empty() && name.compare(0, p.size(), p) == 0) {
        name = name.substr(p.size());
        break;
      }
    MC_CHECK(!name.empty(), what, ": a key becomes empty after stripping prefixes");
    MC_CHECK(seen.insert(name).second, what, ": two tensors are named '", name, "' after stripping prefixes");
  }
  return sd;
}

inline Tensor cast_for_output(const Tensor& t, DType dtype) {
  if (!is_floating(t.dtype()) || t.dtype() == dtype) return t;
  return t.to(dtype);
}

inline void check_dtype(DType dtype) {
  MC_CHECK(dtype == DType::F32 || dtype == DType::BF16, "convert: output dtype must be f32 or bf16, got ",
           dtype_name(dtype));
}

inline Tensor bytes_tensor(const std::string& s) {
  Tensor t = Tensor::empty({int64_t(s.size())}, DType::U8);
  if (!s.empty()) std::memcpy(t.raw_data(), s.data(), s.size());
  return t;
}

}  // namespace convert_detail

// The state dict of a checkpoint file: the card's entry when it names one, else find_state_dict's.
inline nn::NamedTensors read_state_dict(const std::string& path, const std::optional<std::string>& entry = {},
                                        std::string* format = nullptr) {
  io::TorchFile f = io::load_torch(path);
  if (format) *format = io::torch_format_name(f.format);
  if (entry && f.format != io::TorchFormat::TorchScript) {
    MC_CHECK(f.root && f.root->kind == io::pickle::Kind::Dict, path, ": expected a dict at the top level (the card says "
             "the state dict is under '", *entry, "'), got a ", io::pickle::kind_name(f.root->kind));
    const io::pickle::Value* sd = f.root->get(*entry);
    MC_CHECK(sd, path, ": the checkpoint has no '", *entry, "' entry (named by the card's checkpoint.state_dict)");
    return io::tensor_dict_items(sd, path + ": [\"" + *entry + "\"]");
  }
  return io::find_state_dict(f);
}

// The vocabulary text of a tokenizer file for the card: a CLIP merges file (.txt or .txt.gz; stored
// inflated) or a BERT vocab.txt. The tokenizer is built once to check it.
inline std::string read_vocab(const std::string& path, const ModelCard& card) {
  MC_CHECK(!path.empty(), "convert: card '", card.name, "' needs a tokenizer vocabulary (--tokenizer: ",
           card.tokenizer.type == "clip_bpe" ? "the BPE merges file, e.g. bpe_simple_vocab_16e6.txt.gz" : "vocab.txt",
           ")");
  MC_CHECK(std::filesystem::is_regular_file(path), path, ": tokenizer vocabulary file not found");
  std::vector<uint8_t> raw = io::read_file(path);
  std::string text(raw.begin(), raw.end());
  if (card.tokenizer.type == "clip_bpe" && dual_detail::is_gzip(text)) {
    std::vector<uint8_t> in = io::gunzip(raw.data(), raw.size(), path);
    text.assign(in.begin(), in.end());
  }
  TextTokenizer::from_vocab(card, text, path);
  return text;
}

// Converts a state dict for `card` (see the top of this file). `vocab` is the vocabulary text.
inline Converted convert_state_dict(nn::NamedTensors sd, const ModelCard& card, const std::string& vocab,
                                    DType dtype = DType::F32, const std::string& what = "checkpoint") {
  convert_detail::check_dtype(dtype);
  card.validate(what + ": card");
  sd = convert_detail::strip(std::move(sd), card.checkpoint.strip_prefix, what);
  Converted c;
  nn::NamedTensors kept;
  for (auto& [name, t] : sd) {
    bool drop = false;
    for (const std::string& g : card.checkpoint.drop) drop = drop || nn::glob_match(g, name);
    if (drop) c.dropped.push_back(name);
    else kept.emplace_back(name, t);
  }
  TextTokenizer::from_vocab(card, vocab, what + ": tokenizer vocabulary");

  DualEncoder model(card);
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : kept) given[n] = &t;
  nn::LoadReport r;
  std::vector<std::string> bad_dtype;
  std::set<std::string> known;
  for (const auto& [n, t] : model.state_dict()) {
    known.insert(n);
    auto it = given.find(n);
    if (it == given.end()) {
      r.missing.push_back(n);
    } else if (it->second->shape() != t.shape()) {
      r.mismatched.push_back(n + ": checkpoint " + shape_str(it->second->shape()) + " vs card " + shape_str(t.shape()));
    } else if (!is_floating(it->second->dtype())) {
      bad_dtype.push_back(n + " (" + dtype_name(it->second->dtype()) + ")");
    }
  }
  for (const auto& [n, t] : kept)
    if (!known.count(n)) r.unexpected.push_back(n);
  if (!r.ok() || !bad_dtype.empty()) {
    std::string msg = r.str();
    if (!bad_dtype.empty()) {
      msg += "non-floating tensors (" + std::to_string(bad_dtype.size()) + "):";
      for (const auto& s : bad_dtype) msg += " " + s;
    }
    fail(what, ": the checkpoint does not match card '", card.name, "' (", kept.size(), " tensors after stripping ",
         "prefixes and dropping ", c.dropped.size(), " per checkpoint.drop): ", msg);
  }
  for (const auto& [n, t] : model.state_dict()) c.tensors.emplace_back(n, convert_detail::cast_for_output(*given[n], dtype));
  c.tensors.emplace_back(kVocabTensor, convert_detail::bytes_tensor(vocab));
  c.metadata[kFormatKey] = kModelFormat;
  c.metadata[kCardKey] = card.to_json().dump();
  c.metadata["mc.dtype"] = dtype_name(dtype);
  c.summary = "card '" + card.name + "': " + std::to_string(c.tensors.size() - 1) + " tensors (" +
              std::to_string(model.num_parameters()) + " parameters), " + std::to_string(c.dropped.size()) +
              " dropped, vocabulary " + std::to_string(vocab.size()) + " bytes, " + dtype_name(dtype);
  return c;
}

// Raw conversion: "module." stripped, every tensor kept.
inline Converted convert_raw(nn::NamedTensors sd, DType dtype = DType::F32, const std::string& what = "checkpoint") {
  convert_detail::check_dtype(dtype);
  sd = convert_detail::strip(std::move(sd), {"module."}, what);
  Converted c;
  int64_t n = 0;
  for (auto& [name, t] : sd) {
    c.tensors.emplace_back(name, convert_detail::cast_for_output(t, dtype));
    n += t.numel();
  }
  c.metadata[kFormatKey] = kRawFormat;
  c.metadata["mc.dtype"] = dtype_name(dtype);
  c.summary = "raw: " + std::to_string(c.tensors.size()) + " tensors, " + std::to_string(n) + " elements";
  return c;
}

// Reads a checkpoint file and converts it for `card` with the vocabulary file `tokenizer_path`.
inline Converted convert_checkpoint(const std::string& src, const ModelCard& card, const std::string& tokenizer_path,
                                    DType dtype = DType::F32) {
  std::string vocab = read_vocab(tokenizer_path, card);
  std::string format;
  nn::NamedTensors sd = read_state_dict(src, card.checkpoint.state_dict, &format);
  Converted c = convert_state_dict(std::move(sd), card, vocab, dtype, src);
  c.metadata["mc.source"] = convert_detail::base_name(src) + " (" + format + ")";
  c.metadata["mc.tokenizer"] = convert_detail::base_name(tokenizer_path);
  return c;
}

// Reads a checkpoint file and converts it raw.
inline Converted convert_checkpoint_raw(const std::string& src, DType dtype = DType::F32) {
  std::string format;
  Converted c = convert_raw(read_state_dict(src, {}, &format), dtype, src);
  c.metadata["mc.source"] = convert_detail::base_name(src) + " (" + format + ")";
  return c;
}

inline void save_converted(const Converted& c, const std::string& path) { io::save_safetensors(path, c.tensors, c.metadata); }

}  // namespace mc::models
