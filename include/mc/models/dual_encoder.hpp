// mc/models/dual_encoder.hpp — an image-text dual encoder (CLIP and its medical relatives) built from a
// ModelCard, with the checkpoint's own state-dict names.
//
//   auto model = mc::models::load_model("clip-vit-b32.safetensors");   // card + weights + vocabulary, eval mode
//   auto tok = model->tokenize({"a chest x-ray", "an mri"});           // {input_ids, attention_mask}
//   Tensor img = model->encode_image(pixels);                           // [B, D], projected, not normalised
//   Tensor txt = model->encode_text(tok.input_ids, tok.attention_mask); // [M, D]
//   Tensor logits = model->logits(img, txt);                            // scale * cos, [B, M]
//
// The towers are registered at the card's prefixes: "visual.trunk" becomes a container module "visual"
// holding the ViT as "trunk", so state_dict() names equal the checkpoint's and weights load unchanged. A
// text tower with prefix "" (CLIP) is an inline child: its tensors sit at the top level. Projections sit at
// their card names (a "matrix" is a parameter, "linear" an nn::Linear, "mlp" a Sequential with the linears
// at ".0" and ".2"), and the logit scale is the scalar parameter the card names.
//
// What each call computes, per card:
//   encode_image   tower output (openai ViT: ln_post(cls) @ proj; timm ViT: norm(x)[:, 0]; ModifiedResNet:
//                  attention pool; ResNet: global average pool), then the vision projection.
//   image_features the same before the vision projection (CXR-CLIP's 2048-d classification input).
//   encode_text    CLIP: ln_final at the end-of-text token @ text_projection. BERT: last_hidden_state pooled
//                  per text.pool (cls: position 0; last_token: at attention_mask.sum - 1; pooler_output), then
//                  the text projection. With use_attention_mask, BERT gets the given mask, or ids != pad
//                  when none is given (open_clip's HF encoder); without it, BERT sees every position.
//   image_tokens   [B, N, W]: the ViT's patch tokens after the final norm (class token left out), or the
//                  ResNet's last feature map flattened row-major ([B, h*w, C]).
//   text_tokens    [B, L, W]: CLIP's transformer output before ln_final; BERT's last_hidden_state (with the
//                  mask when one is given — the paper's VQA code passes none).
//   logit_scale    the card's "train" rule: exp(p) or p (differentiable), or a fixed constant.
//   zero_shot_scale the card's "zero_shot" rule, as a number.
#pragma once
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mc/io/inflate.hpp"
#include "mc/io/safetensors.hpp"
#include "mc/models/card.hpp"
#include "mc/nn/layers.hpp"
#include "mc/ops/nn.hpp"
#include "mc/tokenize/clip_bpe.hpp"
#include "mc/tokenize/wordpiece.hpp"

namespace mc::models {

// Metadata keys of a converted model file.
inline constexpr const char* kCardKey = "mc.card";
inline constexpr const char* kFormatKey = "mc.format";
inline constexpr const char* kModelFormat = "mc.dual_encoder.v1";
inline constexpr const char* kRawFormat = "mc.raw.v1";
// The tokenizer vocabulary travels as this u8 tensor: the CLIP merges text (gzip inflated) or vocab.txt.
inline constexpr const char* kVocabTensor = "tokenizer.vocab";

struct TokenBatch {
  Tensor input_ids;       // i64 [N, L]
  Tensor attention_mask;  // i64 [N, L]: 1 for real tokens (CLIP: up to and including end-of-text)
};

namespace dual_detail {

inline bool is_gzip(std::string_view b) { return b.size() >= 2 && uint8_t(b[0]) == 0x1f && uint8_t(b[1]) == 0x8b; }

}  // namespace dual_detail

// The card's tokenizer over a vocabulary held in memory (a model file's tokenizer.vocab).
class TextTokenizer {
 public:
  // vocab: clip_bpe — the merges text, plain or gzip; wordpiece — vocab.txt.
  static TextTokenizer from_vocab(const ModelCard& card, std::string_view vocab, const std::string& what = "tokenizer") {
    TextTokenizer t;
    t.spec_ = card.tokenizer;
    MC_CHECK(!vocab.empty(), what, ": the tokenizer vocabulary is empty");
    if (card.tokenizer.type == "clip_bpe") {
      std::vector<uint8_t> inflated;
      if (dual_detail::is_gzip(vocab)) {
        inflated = io::gunzip(reinterpret_cast<const uint8_t*>(vocab.data()), vocab.size(), what);
        vocab = std::string_view(reinterpret_cast<const char*>(inflated.data()), inflated.size());
      }
      // open_clip's SimpleTokenizer: the first vocab_size - 514 merges give the vocabulary (bytes,
      // bytes + "</w>", merges, start / end of text).
      const int64_t vs = card.text.arch == "clip" ? card.text.clip.vocab_size : 49408;
      MC_CHECK(vs >= 514, what, ": a CLIP vocabulary needs at least 514 tokens, the card says ", vs);
      t.clip_ = std::make_shared<tokenize::ClipTokenizer>(
          tokenize::ClipTokenizer::from_merges_text(vocab, what, vs - 514, "<start_of_text>", "<end_of_text>"));
    } else {
      tokenize::WordPieceTokenizer::Options opt;
      opt.do_lower_case = card.tokenizer.lowercase;
      t.wp_ = std::make_shared<tokenize::WordPieceTokenizer>(tokenize::WordPieceTokenizer::from_vocab_text(vocab, opt, what));
      if (card.text.arch == "bert")
        MC_CHECK(t.wp_->vocab_size() <= card.text.bert.vocab_size, what, ": vocab.txt has ", t.wp_->vocab_size(),
                 " tokens, more than the model's vocab_size ", card.text.bert.vocab_size);
    }
    return t;
  }

  int64_t vocab_size() const { return clip_ ? clip_->vocab_size() : wp_->vocab_size(); }
  int64_t context_length() const { return spec_.context_length; }

  // Token ids and mask of each text, padded to the card's context length.
  TokenBatch operator()(const std::vector<std::string>& texts) const {
    const int64_t L = spec_.context_length, n = int64_t(texts.size());
    if (wp_) {
      auto b = wp_->tokenize(texts, L);
      return {b.input_ids, b.attention_mask};
    }
    Tensor ids = clip_->tokenize(texts, L);
    Tensor mask = Tensor::empty({n, L}, DType::I64);
    const int64_t* p = ids.data<int64_t>();
    int64_t* m = mask.data<int64_t>();
    for (int64_t r = 0; r < n; ++r) {
      bool on = true;
      for (int64_t k = 0; k < L; ++k) {
        m[r * L + k] = on ? 1 : 0;
        if (k > 0 && p[r * L + k] == clip_->eot_id()) on = false;
      }
    }
    return {ids, mask};
  }

 private:
  TokenizerSpec spec_;
  std::shared_ptr<tokenize::ClipTokenizer> clip_;
  std::shared_ptr<tokenize::WordPieceTokenizer> wp_;
};

// Tokenizes `texts` as the card says, with the vocabulary text `vocab` (see TextTokenizer::from_vocab).
inline TokenBatch tokenize(const ModelCard& card, std::string_view vocab, const std::vector<std::string>& texts) {
  return TextTokenizer::from_vocab(card, vocab)(texts);
}

class DualEncoder : public nn::Module {
 public:
  // The towers (one of each pair is set, per the card).
  std::shared_ptr<VisionTransformer> vit;
  std::shared_ptr<ModifiedResNet> modified_resnet;
  std::shared_ptr<ResNet> resnet;
  std::shared_ptr<ClipTextTransformer> clip_text;
  std::shared_ptr<BertModel> bert;
  // Projections (null / undefined when the card has none of that kind).
  std::shared_ptr<nn::Linear> vision_projection;     // "linear"
  std::shared_ptr<nn::UnaryModule> text_projection;  // "linear" (nn::Linear) or "mlp" (nn::Sequential)
  Tensor text_projection_matrix;                     // "matrix" [width, embed_dim]
  Tensor logit_scale_param;                          // [] (undefined when the card names none)

  explicit DualEncoder(ModelCard card) : card_(std::move(card)) {
    card_.validate("DualEncoder");
    const VisionSpec& v = card_.vision;
    const int64_t D = card_.embed_dim;
    int64_t vision_width = 0;
    if (v.arch == "vit") {
      vit = place(v.prefix, std::make_shared<VisionTransformer>(v.vit));
      vision_width = v.vit.width;
    } else if (v.arch == "modified_resnet") {
      modified_resnet = place(v.prefix, std::make_shared<ModifiedResNet>(v.modified_resnet));
    } else {
      ResNetConfig rc = v.resnet;
      rc.num_classes = 0;
      resnet = place(v.prefix, std::make_shared<ResNet>(rc));
      vision_width = resnet->out_channels();
    }
    if (v.projection.type == "linear")
      vision_projection = place(v.projection.name, std::make_shared<nn::Linear>(vision_width, D, v.projection.bias));

    const TextSpec& t = card_.text;
    const ProjectionSpec& tp = t.projection;
    int64_t text_width = 0;
    if (t.arch == "clip") {
      clip_text = place(t.prefix, std::make_shared<ClipTextTransformer>(t.clip));
    } else {
      bert = place(t.prefix, std::make_shared<BertModel>(t.bert));
      text_width = t.bert.hidden_size;
    }
    if (tp.type == "matrix") {
      Tensor w = empty({text_width, D});
      nn::init::normal_(w, 0, 1.0 / std::sqrt(double(text_width)));
      text_projection_matrix = place_parameter(tp.name, w);
    } else if (tp.type == "linear") {
      text_projection = place(tp.name, std::make_shared<nn::Linear>(text_width, D, tp.bias));
    } else if (tp.type == "mlp") {
      std::shared_ptr<nn::UnaryModule> act;
      if (tp.act == "gelu") act = nn::GELU(false);
      else if (tp.act == "gelu_tanh") act = nn::GELU(true);
      else if (tp.act == "quick_gelu") act = nn::QuickGELU();
      else act = nn::ReLU();
      text_projection = place(tp.name, std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::UnaryModule>>{
                                           std::make_shared<nn::Linear>(text_width, tp.hidden, tp.bias), act,
                                           std::make_shared<nn::Linear>(tp.hidden, D, tp.bias)}));
    }
    if (card_.logit_scale.name)
      logit_scale_param = place_parameter(*card_.logit_scale.name, scalar_tensor(std::log(1.0 / 0.07)));
  }

  const ModelCard& card() const { return card_; }

  // ---- image side ----
  Tensor image_features(const Tensor& pixels) {
    if (vit) return vit->forward(pixels);
    if (modified_resnet) return modified_resnet->forward(pixels);
    return resnet->forward(pixels);
  }
  Tensor encode_image(const Tensor& pixels) {
    Tensor f = image_features(pixels);
    return vision_projection ? vision_projection->forward(f) : f;
  }
  Tensor image_tokens(const Tensor& pixels) {
    if (vit) {
      Tensor t = vit->forward_tokens(pixels);
      return t.narrow(1, 1, t.size(1) - 1);
    }
    Tensor f = modified_resnet ? modified_resnet->forward_features(pixels) : resnet->forward_features(pixels);
    return f.flatten(2).transpose(1, 2);
  }

  // ---- text side ----
  Tensor text_features(const Tensor& ids, const Tensor& attention_mask = {}) {
    check_ids(ids, attention_mask);
    if (clip_text) return clip_text->forward(ids);
    const TextSpec& t = card_.text;
    Tensor mask;
    if (t.use_attention_mask || t.pool == "last_token") mask = effective_mask(ids, attention_mask);
    BertOutput out = bert->forward(ids, t.use_attention_mask ? mask : Tensor());
    if (t.pool == "cls") return out.last_hidden_state.select(1, 0);
    if (t.pool == "pooler_output") return out.pooler_output;
    // last_token: the hidden state at attention_mask.sum - 1 of each row.
    const int64_t B = ids.size(0), L = ids.size(1);
    const std::vector<int64_t> m = mask.to_vector<int64_t>();
    std::vector<int64_t> rows(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      int64_t n = 0;
      for (int64_t k = 0; k < L; ++k) n += m[size_t(b * L + k)];
      MC_CHECK(n >= 1, "encode_text: row ", b, " of the attention mask has no token");
      rows[size_t(b)] = b * L + n - 1;
    }
    Tensor flat = out.last_hidden_state.reshape({B * L, out.last_hidden_state.size(2)});
    return index_select(flat, 0, from_vector(rows, {B}, flat.device()));
  }
  Tensor encode_text(const Tensor& ids, const Tensor& attention_mask = {}) {
    Tensor f = text_features(ids, attention_mask);
    if (text_projection_matrix.defined()) return matmul(f, text_projection_matrix);
    return text_projection ? text_projection->forward(f) : f;
  }
  Tensor text_tokens(const Tensor& ids, const Tensor& attention_mask = {}) {
    check_ids(ids, attention_mask);
    if (clip_text) return clip_text->forward_tokens(ids, /*final_norm=*/false);
    return bert->forward(ids, attention_mask.defined() ? attention_mask.to(DType::I64) : Tensor()).last_hidden_state;
  }

  // ---- similarity ----
  Tensor logit_scale() const { return apply_rule(card_.logit_scale.train); }
  double zero_shot_scale() const {
    NoGradGuard ng;
    return apply_rule(card_.logit_scale.zero_shot).to(Device::cpu()).item<double>();
  }
  // scale * normalize(img) @ normalize(txt)^T: [B, M].
  Tensor logits(const Tensor& image_embeds, const Tensor& text_embeds, bool zero_shot = false) const {
    MC_CHECK(image_embeds.dim() == 2 && text_embeds.dim() == 2 && image_embeds.size(1) == text_embeds.size(1),
             "DualEncoder::logits: expects [B, D] and [M, D] embeddings, got ", shape_str(image_embeds.shape()),
             " and ", shape_str(text_embeds.shape()));
    Tensor cos = matmul(normalize(image_embeds, -1), normalize(text_embeds, -1).t());
    if (zero_shot) return cos * zero_shot_scale();
    Tensor s = logit_scale();
    return mul(cos, s.to(cos.dtype()).to(cos.device()));
  }

  // ---- tokenizer (available when the model came from a converted file) ----
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const std::string& vocab() const { return vocab_; }
  void set_vocab(std::string vocab) {
    tokenizer_ = std::make_shared<TextTokenizer>(TextTokenizer::from_vocab(card_, vocab, card_.name + ": tokenizer.vocab"));
    vocab_ = std::move(vocab);
  }
  TokenBatch tokenize(const std::vector<std::string>& texts) const {
    MC_CHECK(tokenizer_, "DualEncoder::tokenize: model '", card_.name, "' has no tokenizer vocabulary");
    return (*tokenizer_)(texts);
  }

 private:
  struct Container : nn::Module {};

  // The module at a dotted path, creating empty containers for missing parts ("" is this module).
  nn::Module& container(const std::string& dotted) {
    nn::Module* m = this;
    size_t pos = 0;
    while (pos < dotted.size()) {
      size_t dot = dotted.find('.', pos);
      if (dot == std::string::npos) dot = dotted.size();
      const std::string part = dotted.substr(pos, dot - pos);
      MC_CHECK(!part.empty(), "DualEncoder: invalid module path '", dotted, "'");
      nn::Module* next = nullptr;
      for (const auto& [n, c] : m->named_children())
        if (n == part) next = c.get();
      if (!next) next = m->register_module(part, std::make_shared<Container>()).get();
      m = next;
      pos = dot + 1;
    }
    return *m;
  }
  static std::pair<std::string, std::string> split_last(const std::string& path) {
    size_t dot = path.rfind('.');
    if (dot == std::string::npos) return {"", path};
    return {path.substr(0, dot), path.substr(dot + 1)};
  }
  template <class M>
  std::shared_ptr<M> place(const std::string& path, std::shared_ptr<M> m) {
    if (path.empty()) return register_module("", m);
    auto [parent, last] = split_last(path);
    return container(parent).register_module(last, m);
  }
  Tensor place_parameter(const std::string& path, Tensor t) {
    auto [parent, last] = split_last(path);
    return container(parent).register_parameter(last, std::move(t));
  }

  Tensor apply_rule(const ScaleRule& r) const {
    if (r.mode == "fixed") return scalar_tensor(r.value);
    MC_CHECK(logit_scale_param.defined(), "DualEncoder: card '", card_.name, "' has no logit_scale parameter");
    return r.mode == "exp" ? exp(logit_scale_param) : logit_scale_param;
  }

  void check_ids(const Tensor& ids, const Tensor& mask) const {
    MC_CHECK(ids.defined() && ids.dim() == 2 && ids.dtype() == DType::I64, "DualEncoder: token ids must be i64 [B, L], got ",
             ids.defined() ? shape_str(ids.shape()) + " " + dtype_name(ids.dtype()) : std::string("undefined"));
    MC_CHECK(!mask.defined() || mask.shape() == ids.shape(), "DualEncoder: attention_mask ", shape_str(mask.shape()),
             " must have the shape of the ids ", shape_str(ids.shape()));
  }
  // The given mask as i64, or ids != pad_token_id (all ones when the config has no padding id).
  Tensor effective_mask(const Tensor& ids, const Tensor& mask) const {
    if (mask.defined()) return mask.to(DType::I64);
    if (card_.text.bert.pad_token_id < 0) return ones(ids.shape(), DType::I64, ids.device());  // no padding id
    return (ids != double(card_.text.bert.pad_token_id)).to(DType::I64);
  }

  ModelCard card_;
  std::string vocab_;
  std::shared_ptr<TextTokenizer> tokenizer_;
};

// A model from converted tensors and metadata (as a converted file holds them): the card from
// metadata "mc.card", a strict load of every tensor but tokenizer.vocab, the vocabulary when present.
// The model is returned in eval mode (batch norm uses its running statistics).
inline std::shared_ptr<DualEncoder> model_from_tensors(const nn::NamedTensors& tensors,
                                                      const std::map<std::string, std::string>& metadata,
                                                      const std::string& what = "model") {
  auto it = metadata.find(kCardKey);
  MC_CHECK(it != metadata.end(), what, ": no '", kCardKey, "' metadata: not a model converted with `mc convert --card`");
  ModelCard card = ModelCard::parse(it->second, what + ": " + kCardKey);
  auto model = std::make_shared<DualEncoder>(card);
  nn::NamedTensors weights;
  std::string vocab;
  bool has_vocab = false;
  for (const auto& [name, t] : tensors) {
    if (name == kVocabTensor) {
      MC_CHECK(t.dtype() == DType::U8 && t.dim() == 1, what, ": ", kVocabTensor, " must be a u8 vector");
      Tensor c = t.to(Device::cpu()).contiguous();
      vocab.assign(reinterpret_cast<const char*>(c.raw_data()), size_t(c.numel()));
      has_vocab = true;
      continue;
    }
    weights.emplace_back(name, t);
  }
  try {
    model->load_state_dict(weights, /*strict=*/true);
  } catch (const Error& e) {
    fail(what, ": weights do not match card '", card.name, "': ", e.what());
  }
  if (has_vocab) model->set_vocab(std::move(vocab));
  model->eval();
  return model;
}

// Loads a model converted by `mc convert --card` (see model_from_tensors).
inline std::shared_ptr<DualEncoder> load_model(const std::string& path) {
  io::SafetensorsFile f = io::SafetensorsFile::open(path);
  nn::NamedTensors tensors;
  for (const auto& e : f.entries()) tensors.emplace_back(e.name, f.get(e.name));
  return model_from_tensors(tensors, f.metadata(), path);
}

}  // namespace mc::models
