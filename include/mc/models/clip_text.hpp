// mc/models/clip_text.hpp — ClipTextTransformer: the causal text tower of OpenAI CLIP (open_clip's CLIP
// text side), with its state_dict names:
//
//   token_embedding.weight [V, W], positional_embedding [ctx, W],
//   transformer.resblocks.{i}.{ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc,
//   mlp.c_proj}, ln_final, text_projection [W, output_dim]
//
// CLIP checkpoints keep these at their top level (next to visual.*), so a dual encoder registers this module
// as an inline child (empty name). Forward: x = token_embedding(ids) + positional_embedding[:L]; the blocks
// with a causal mask; ln_final; the feature is the state at the EOT token (argmax of the ids: EOT has the
// largest id) times text_projection.
#pragma once
#include "mc/models/vit.hpp"

namespace mc::models {

struct ClipTextConfig {
  int64_t vocab_size = 49408, context_length = 77, width = 512, layers = 12, heads = 8, output_dim = 512;
  double ln_eps = 1e-5;
  std::string act = "quick_gelu";
};

class ClipTextTransformer : public nn::Module {
 public:
  Tensor positional_embedding, text_projection;  // [ctx, W], [W, output_dim]
  std::shared_ptr<ClipTransformer> transformer;
  std::shared_ptr<nn::Embedding> token_embedding;
  std::shared_ptr<nn::LayerNorm> ln_final;

  explicit ClipTextTransformer(const ClipTextConfig& c) : cfg_(c) {
    const char* who = "ClipTextTransformer";
    MC_CHECK(c.vocab_size > 0 && c.context_length > 0, who, ": vocab_size (", c.vocab_size,
             ") and context_length (", c.context_length, ") must be positive");
    MC_CHECK(c.width > 0 && c.heads > 0 && c.width % c.heads == 0, who, ": width ", c.width,
             " must be a positive multiple of heads ", c.heads);
    MC_CHECK(c.layers >= 0 && c.output_dim > 0, who, ": layers must be non-negative and output_dim positive, got ",
             c.layers, " and ", c.output_dim);
    BlockConfig bc;
    bc.width = c.width;
    bc.heads = c.heads;
    bc.ln_eps = c.ln_eps;
    bc.act = parse_activation(c.act, who);
    bc.naming = BlockNaming::OpenAI;
    // The order of open_clip's CLIP.state_dict(): its parameters, then transformer, token_embedding, ln_final.
    positional_embedding = register_parameter("positional_embedding", empty({c.context_length, c.width}));
    nn::init::normal_(positional_embedding, 0, 0.01);
    text_projection = register_parameter("text_projection", empty({c.width, c.output_dim}));
    nn::init::normal_(text_projection, 0, 1.0 / std::sqrt(double(c.width)));
    transformer = register_module("transformer", std::make_shared<ClipTransformer>(bc, c.layers));
    token_embedding = register_module("token_embedding", std::make_shared<nn::Embedding>(c.vocab_size, c.width));
    nn::init::normal_(token_embedding->weight, 0, 0.02);
    ln_final = register_module("ln_final", std::make_shared<nn::LayerNorm>(c.width, c.ln_eps));
  }

  const ClipTextConfig& config() const { return cfg_; }

  // ids: integer [B, L], 1 <= L <= context_length, values in [0, vocab_size). Token states [B, L, W] after the
  // blocks (causal mask), before ln_final when final_norm is false, after it when true.
  Tensor forward_tokens(const Tensor& ids, bool final_norm = true) {
    Tensor x = encode(ids);
    return final_norm ? ln_final->forward(x) : x;
  }

  // ln_final(x)[arange(B), argmax(ids, -1)] @ text_projection -> [B, output_dim].
  Tensor forward(const Tensor& ids) {
    Tensor x = encode(ids);
    const int64_t B = x.size(0), L = x.size(1);
    // Row b * L + argmax(ids[b]) of the flattened states; ln_final is per token, so only those rows.
    Tensor eot = argmax(ids, -1).to(DType::I64);
    Tensor rows = add(mul(arange(B, DType::I64, ids.device()), scalar_tensor(double(L), DType::I64, ids.device())), eot);
    Tensor pooled = index_select(x.reshape({B * L, cfg_.width}), 0, rows);
    return matmul(ln_final->forward(pooled), text_projection);
  }

 private:
  // Embeddings + positions, then the causal blocks: [B, L, W] before ln_final.
  Tensor encode(const Tensor& ids) {
    const char* who = "ClipTextTransformer";
    MC_CHECK(ids.defined() && ids.dim() == 2, who, ": ids must be [B, L], got ",
             ids.defined() ? shape_str(ids.shape()) : "undefined");
    MC_CHECK(ids.dtype() == DType::I64 || ids.dtype() == DType::I32, who, ": ids must be i64 or i32, got ",
             dtype_name(ids.dtype()));
    const int64_t B = ids.size(0), L = ids.size(1);
    MC_CHECK(B > 0 && L > 0, who, ": ids ", shape_str(ids.shape()), " are empty");
    MC_CHECK(L <= cfg_.context_length, who, ": ids have ", L, " tokens, more than the context length ",
             cfg_.context_length);
    const int64_t lo = amin(ids).to(DType::I64).item<int64_t>(), hi = amax(ids).to(DType::I64).item<int64_t>();
    MC_CHECK(lo >= 0 && hi < cfg_.vocab_size, who, ": token ids must lie in [0, ", cfg_.vocab_size, "), got ",
             lo < 0 ? lo : hi);
    Tensor x = add(token_embedding->forward(ids), positional_embedding.narrow(0, 0, L));
    return transformer->forward(x, /*causal=*/true);
  }

  ClipTextConfig cfg_;
};

}  // namespace mc::models
