// mc/models/bert.hpp — BERT encoder (BertConfig, BertOutput, BertModel), the text tower of BiomedCLIP
// (PubMedBERT), PMC-CLIP (PubMedBERT) and CXR-CLIP (BioClinicalBERT).
//
// The architecture of Hugging Face transformers' BertModel (post-norm encoder):
//
//   embeddings  x = LayerNorm(word[ids] + token_type[types] + position[0..L-1]); dropout
//   layer i     a = LayerNorm(dropout(attention.output.dense(self_attention(x))) + x)
//               x = LayerNorm(dropout(output.dense(act(intermediate.dense(a)))) + a)
//   pooler      tanh(pooler.dense(x[:, 0]))                                  (optional)
//
// Parameters carry HF's state_dict names (embeddings.word_embeddings.weight,
// encoder.layer.{i}.attention.self.query.weight, ..., pooler.dense.bias), so an HF checkpoint loads with
// load_state_dict and no mapping table. HF's non-persistent buffers embeddings.position_ids and
// embeddings.token_type_ids are not kept (position ids are always 0..L-1, missing token types are 0);
// drop them from a checkpoint that stores them. Fresh weights follow HF's initialisation: normal(0, 0.02)
// for Linear and Embedding weights, zero biases, zero padding row, LayerNorm ones / zeros.
//
// Attention is one fused scaled_dot_product_attention per layer over all heads: q, k, v come from one
// Linear each and are split into heads by views. attention_mask (1 = real token) becomes the op's key
// padding mask. Differences from HF, both outside the study's use:
//  * training: hidden dropout (after the embeddings LayerNorm and after both output denses) is applied,
//    but the dropout on attention probabilities (attention_dropout) is skipped: the fused attention op
//    does not expose the probabilities. attention_dropout is kept in the config for completeness.
//  * a sequence whose mask is all zeros gets zero attention outputs instead of HF's uniform attention.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "mc/nn/init.hpp"
#include "mc/nn/layers.hpp"
#include "mc/nn/module.hpp"
#include "mc/ops/attention.hpp"
#include "mc/ops/elementwise.hpp"
#include "mc/ops/reduce.hpp"

namespace mc::models {

struct BertConfig {
  int64_t vocab_size = 30522, hidden_size = 768, layers = 12, heads = 12, intermediate_size = 3072,
          max_position_embeddings = 512, type_vocab_size = 2, pad_token_id = 0;  // pad_token_id < 0: none
  double ln_eps = 1e-12, hidden_dropout = 0.1, attention_dropout = 0.1;  // attention_dropout: see above
  bool pooler = true;          // BertPooler (dense + tanh on [CLS]) present
  std::string act = "gelu";    // "gelu" (erf) | "gelu_tanh" (HF gelu_new / gelu_pytorch_tanh) | "relu"
};

struct BertOutput {
  Tensor last_hidden_state;            // [B, L, hidden]
  Tensor pooler_output;                // [B, hidden]; undefined without pooler
  std::vector<Tensor> hidden_states;   // when requested: embeddings output, then each layer's output
};

namespace bert_detail {

constexpr double kInitStd = 0.02;  // HF BertConfig.initializer_range

inline void check_config(const BertConfig& c) {
  MC_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.layers >= 0 && c.heads > 0 && c.intermediate_size > 0 &&
               c.max_position_embeddings > 0 && c.type_vocab_size > 0,
           "BertModel: config sizes must be positive (vocab_size ", c.vocab_size, ", hidden_size ", c.hidden_size,
           ", layers ", c.layers, ", heads ", c.heads, ", intermediate_size ", c.intermediate_size,
           ", max_position_embeddings ", c.max_position_embeddings, ", type_vocab_size ", c.type_vocab_size, ")");
  MC_CHECK(c.hidden_size % c.heads == 0, "BertModel: hidden_size ", c.hidden_size, " is not a multiple of heads ",
           c.heads);
  MC_CHECK(c.pad_token_id < c.vocab_size, "BertModel: pad_token_id ", c.pad_token_id, " >= vocab_size ",
           c.vocab_size);
  MC_CHECK(c.ln_eps >= 0, "BertModel: ln_eps must be non-negative, got ", c.ln_eps);
  MC_CHECK(c.hidden_dropout >= 0 && c.hidden_dropout < 1 && c.attention_dropout >= 0 && c.attention_dropout < 1,
           "BertModel: dropout probabilities must be in [0, 1), got hidden_dropout ", c.hidden_dropout,
           ", attention_dropout ", c.attention_dropout);
  MC_CHECK(c.act == "gelu" || c.act == "gelu_tanh" || c.act == "relu", "BertModel: unknown act '", c.act,
           "' (expected gelu, gelu_tanh or relu)");
}

// A Linear with HF's initialisation.
inline std::shared_ptr<nn::Linear> linear(int64_t in, int64_t out) {
  auto l = std::make_shared<nn::Linear>(in, out);
  NoGradGuard ng;
  nn::init::normal_(l->weight, 0, kInitStd);
  nn::init::zeros_(l->bias);
  return l;
}

inline std::shared_ptr<nn::Embedding> embedding(int64_t num, int64_t dim, int64_t padding_idx = -1) {
  auto e = std::make_shared<nn::Embedding>(num, dim, padding_idx);
  NoGradGuard ng;
  nn::init::normal_(e->weight, 0, kInitStd);
  if (padding_idx >= 0) {
    Tensor row = e->weight.narrow(0, padding_idx, 1);
    fill_(row, 0);
  }
  return e;
}

// Checks that every value of the integer tensor t lies in [0, n).
inline void check_range(const Tensor& t, int64_t n, const char* what, const char* limit) {
  if (t.numel() == 0) return;
  NoGradGuard ng;
  const int64_t lo = amin(t).item<int64_t>(), hi = amax(t).item<int64_t>();
  MC_CHECK(lo >= 0 && hi < n, "BertModel: ", what, " must lie in [0, ", limit, " = ", n, "), got values in [", lo,
           ", ", hi, "]");
}

}  // namespace bert_detail

class BertEmbeddings : public nn::Module {
 public:
  std::shared_ptr<nn::Embedding> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<nn::LayerNorm> LayerNorm;
  double dropout_p;

  explicit BertEmbeddings(const BertConfig& c) : dropout_p(c.hidden_dropout) {
    word_embeddings = register_module(
        "word_embeddings", bert_detail::embedding(c.vocab_size, c.hidden_size, c.pad_token_id >= 0 ? c.pad_token_id : -1));
    position_embeddings =
        register_module("position_embeddings", bert_detail::embedding(c.max_position_embeddings, c.hidden_size));
    token_type_embeddings =
        register_module("token_type_embeddings", bert_detail::embedding(c.type_vocab_size, c.hidden_size));
    LayerNorm = register_module("LayerNorm", std::make_shared<nn::LayerNorm>(c.hidden_size, c.ln_eps));
  }

  // input_ids [B, L]; token_type_ids [B, L] or undefined (all 0). Inputs are checked by BertModel.
  Tensor forward(const Tensor& input_ids, const Tensor& token_type_ids) {
    const int64_t L = input_ids.size(1);
    Tensor types = token_type_ids.defined() ? token_type_embeddings->forward(token_type_ids)
                                            : token_type_embeddings->weight.narrow(0, 0, 1);  // row 0, broadcast
    Tensor x = word_embeddings->forward(input_ids) + types;
    x = x + position_embeddings->weight.narrow(0, 0, L);
    return dropout(LayerNorm->forward(x), dropout_p, is_training());
  }
};

// Multi-head self-attention: the q/k/v projections and the fused attention, heads split by views.
class BertSelfAttention : public nn::Module {
 public:
  std::shared_ptr<nn::Linear> query, key, value;
  int64_t heads, head_dim;

  explicit BertSelfAttention(const BertConfig& c) : heads(c.heads), head_dim(c.hidden_size / c.heads) {
    query = register_module("query", bert_detail::linear(c.hidden_size, c.hidden_size));
    key = register_module("key", bert_detail::linear(c.hidden_size, c.hidden_size));
    value = register_module("value", bert_detail::linear(c.hidden_size, c.hidden_size));
  }

  // x [B, L, hidden] -> [B, L, hidden] (heads concatenated, before attention.output.dense).
  Tensor forward(const Tensor& x, const AttentionParams& p) {
    const int64_t B = x.size(0), L = x.size(1);
    auto split = [&](const Tensor& t) { return t.view({B, L, heads, head_dim}).permute({0, 2, 1, 3}); };
    Tensor o = scaled_dot_product_attention(split(query->forward(x)), split(key->forward(x)),
                                            split(value->forward(x)), p);  // [B, heads, L, head_dim]
    return o.permute({0, 2, 1, 3}).reshape({B, L, heads * head_dim});
  }
};

// dense -> dropout -> LayerNorm(+ residual): HF's BertSelfOutput and BertOutput.
class BertResidualOutput : public nn::Module {
 public:
  std::shared_ptr<nn::Linear> dense;
  std::shared_ptr<nn::LayerNorm> LayerNorm;
  double dropout_p;

  BertResidualOutput(int64_t in, const BertConfig& c) : dropout_p(c.hidden_dropout) {
    dense = register_module("dense", bert_detail::linear(in, c.hidden_size));
    LayerNorm = register_module("LayerNorm", std::make_shared<nn::LayerNorm>(c.hidden_size, c.ln_eps));
  }
  Tensor forward(const Tensor& h, const Tensor& residual) {
    return LayerNorm->forward(dropout(dense->forward(h), dropout_p, is_training()) + residual);
  }
};

class BertAttention : public nn::Module {
 public:
  std::shared_ptr<BertSelfAttention> self;
  std::shared_ptr<BertResidualOutput> output;

  explicit BertAttention(const BertConfig& c) {
    self = register_module("self", std::make_shared<BertSelfAttention>(c));
    output = register_module("output", std::make_shared<BertResidualOutput>(c.hidden_size, c));
  }
  Tensor forward(const Tensor& x, const AttentionParams& p) { return output->forward(self->forward(x, p), x); }
};

class BertIntermediate : public nn::Module {
 public:
  std::shared_ptr<nn::Linear> dense;
  std::string act;

  explicit BertIntermediate(const BertConfig& c) : act(c.act) {
    dense = register_module("dense", bert_detail::linear(c.hidden_size, c.intermediate_size));
  }
  Tensor forward(const Tensor& x) {
    Tensor h = dense->forward(x);
    if (act == "relu") return relu(h);
    return gelu(h, act == "gelu_tanh");
  }
};

class BertLayer : public nn::Module {
 public:
  std::shared_ptr<BertAttention> attention;
  std::shared_ptr<BertIntermediate> intermediate;
  std::shared_ptr<BertResidualOutput> output;

  explicit BertLayer(const BertConfig& c) {
    attention = register_module("attention", std::make_shared<BertAttention>(c));
    intermediate = register_module("intermediate", std::make_shared<BertIntermediate>(c));
    output = register_module("output", std::make_shared<BertResidualOutput>(c.intermediate_size, c));
  }
  Tensor forward(const Tensor& x, const AttentionParams& p) {
    Tensor a = attention->forward(x, p);
    return output->forward(intermediate->forward(a), a);
  }
};

// HF's ModuleList: children "0", "1", ...
class BertLayerList : public nn::Module {
 public:
  std::vector<std::shared_ptr<BertLayer>> layers;
  explicit BertLayerList(const BertConfig& c) {
    for (int64_t i = 0; i < c.layers; ++i)
      layers.push_back(register_module(std::to_string(i), std::make_shared<BertLayer>(c)));
  }
};

class BertEncoder : public nn::Module {
 public:
  std::shared_ptr<BertLayerList> layer;
  explicit BertEncoder(const BertConfig& c) { layer = register_module("layer", std::make_shared<BertLayerList>(c)); }
  // Appends each layer's output to `hidden_states` when it is given.
  Tensor forward(Tensor x, const AttentionParams& p, std::vector<Tensor>* hidden_states = nullptr) {
    for (auto& l : layer->layers) {
      x = l->forward(x, p);
      if (hidden_states) hidden_states->push_back(x);
    }
    return x;
  }
};

class BertPooler : public nn::Module {
 public:
  std::shared_ptr<nn::Linear> dense;
  explicit BertPooler(const BertConfig& c) { dense = register_module("dense", bert_detail::linear(c.hidden_size, c.hidden_size)); }
  Tensor forward(const Tensor& x) { return tanh(dense->forward(x.select(1, 0))); }
};

class BertModel : public nn::Module {  // children "embeddings", "encoder", optional "pooler"
 public:
  std::shared_ptr<BertEmbeddings> embeddings;
  std::shared_ptr<BertEncoder> encoder;
  std::shared_ptr<BertPooler> pooler;  // null without pooler

  explicit BertModel(const BertConfig& c) : config_(c) {
    bert_detail::check_config(c);
    embeddings = register_module("embeddings", std::make_shared<BertEmbeddings>(c));
    encoder = register_module("encoder", std::make_shared<BertEncoder>(c));
    if (c.pooler) pooler = register_module("pooler", std::make_shared<BertPooler>(c));
  }

  const BertConfig& config() const { return config_; }

  // input_ids i64 [B, L]; attention_mask i64/bool [B, L] with 1 = real token (undefined = all real);
  // token_type_ids i64 [B, L] (undefined = zeros). Position ids 0..L-1.
  BertOutput forward(const Tensor& input_ids, const Tensor& attention_mask = {}, const Tensor& token_type_ids = {},
                     bool output_hidden_states = false) {
    const BertConfig& c = config_;
    MC_CHECK(input_ids.defined(), "BertModel: input_ids is undefined");
    MC_CHECK(input_ids.dim() == 2, "BertModel: input_ids must be [B, L], got ", shape_str(input_ids.shape()));
    MC_CHECK(input_ids.dtype() == DType::I64 || input_ids.dtype() == DType::I32,
             "BertModel: input_ids must be i64 or i32, got ", dtype_name(input_ids.dtype()));
    const int64_t B = input_ids.size(0), L = input_ids.size(1);
    MC_CHECK(B > 0 && L > 0, "BertModel: input_ids ", shape_str(input_ids.shape()), " is empty");
    MC_CHECK(L <= c.max_position_embeddings, "BertModel: sequence length ", L, " exceeds max_position_embeddings ",
             c.max_position_embeddings);
    const Device dev = embeddings->word_embeddings->weight.device();
    MC_CHECK(input_ids.device() == dev, "BertModel: input_ids is on ", input_ids.device().str(),
             " but the model is on ", dev.str());
    bert_detail::check_range(input_ids, c.vocab_size, "input_ids", "vocab_size");
    if (token_type_ids.defined()) {
      MC_CHECK(token_type_ids.shape() == input_ids.shape(), "BertModel: token_type_ids ",
               shape_str(token_type_ids.shape()), " does not match input_ids ", shape_str(input_ids.shape()));
      MC_CHECK(token_type_ids.dtype() == DType::I64 || token_type_ids.dtype() == DType::I32,
               "BertModel: token_type_ids must be i64 or i32, got ", dtype_name(token_type_ids.dtype()));
      MC_CHECK(token_type_ids.device() == dev, "BertModel: token_type_ids is on ", token_type_ids.device().str(),
               " but the model is on ", dev.str());
      bert_detail::check_range(token_type_ids, c.type_vocab_size, "token_type_ids", "type_vocab_size");
    }
    Tensor padding;  // bool [B, L], true = padding
    if (attention_mask.defined()) {
      MC_CHECK(attention_mask.shape() == input_ids.shape(), "BertModel: attention_mask ",
               shape_str(attention_mask.shape()), " does not match input_ids ", shape_str(input_ids.shape()));
      MC_CHECK(attention_mask.device() == dev, "BertModel: attention_mask is on ", attention_mask.device().str(),
               " but the model is on ", dev.str());
      NoGradGuard ng;
      padding = attention_mask.dtype() == DType::Bool ? logical_not(attention_mask) : attention_mask == 0.0;
    }
    const AttentionParams p = attention_params(c.hidden_size / c.heads, false, padding);

    BertOutput out;
    Tensor x = embeddings->forward(input_ids, token_type_ids);
    if (output_hidden_states) out.hidden_states.push_back(x);
    out.last_hidden_state = encoder->forward(x, p, output_hidden_states ? &out.hidden_states : nullptr);
    if (pooler) out.pooler_output = pooler->forward(out.last_hidden_state);
    return out;
  }

 private:
  BertConfig config_;
};

}  // namespace mc::models
