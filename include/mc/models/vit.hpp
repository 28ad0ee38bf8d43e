// mc/models/vit.hpp — the pre-norm transformer block (ResidualBlock, with its SelfAttention and Mlp) and the
// Vision Transformer image tower, in the two layouts the study's checkpoints use:
//
//   "openai" (OpenAI CLIP / open_clip VisionTransformer; the ViT-B/32 image tower):
//     conv1 (no bias), class_embedding [W], positional_embedding [1+N, W], ln_pre,
//     transformer.resblocks.{i}.{ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc,
//     mlp.c_proj}, ln_post, proj [W, output_dim] (a matrix applied as x @ proj)
//   "timm" (timm VisionTransformer; BiomedCLIP's `visual.trunk`, whose head lives outside it):
//     patch_embed.proj (with bias), cls_token [1, 1, W], pos_embed [1, 1+N, W],
//     blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm; no pre-norm
//
// Both run  x = patches(pixels) ++ class token + positions  [-> ln_pre],  then per block
//   x = x + out_proj(attention(ln_1(x)));  x = x + c_proj(act(c_fc(ln_2(x))))
// and end with the final LayerNorm; the pooled output is the class token (token 0), projected by `proj` in
// the openai layout. Attention uses one packed QKV projection whose q, k, v are strided [B, H, L, D] views
// fed to the fused scaled_dot_product_attention (no per-head loops).
//
// For adapters (LoRA, mc/nn/lora.hpp), every projection a block applies is a UnaryModule reached through a
// public pointer (SelfAttention::in_proj / out_proj, Mlp::fc1 / fc2) and is nn::Adaptable. The openai packed
// projection is a PackedInProjection, registered inline so its tensors keep the names attn.in_proj_weight /
// attn.in_proj_bias; as an adapted layer it is named "<attn path>.in_proj" (its adapter's tensors:
// attn.in_proj_lora_A / attn.in_proj_lora_B). Both packed projections (it and timm's attn.qkv) declare
// packed_outputs = 3, so an adapter may cover only some of q, k, v.
#pragma once
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "mc/nn/layers.hpp"
#include "mc/ops/attention.hpp"
#include "mc/ops/linalg.hpp"
#include "mc/ops/shape.hpp"

namespace mc::models {

// ---- activation of the MLP ----

enum class Activation { QuickGelu, Gelu, GeluTanh };

// "quick_gelu" (x * sigmoid(1.702 x), OpenAI CLIP), "gelu" (exact, erf), "gelu_tanh" (tanh approximation).
inline Activation parse_activation(const std::string& name, const char* who) {
  if (name == "quick_gelu") return Activation::QuickGelu;
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_tanh") return Activation::GeluTanh;
  fail(who, ": unknown activation '", name, "' (expected quick_gelu, gelu or gelu_tanh)");
}

inline Tensor activate(const Tensor& x, Activation a) {
  switch (a) {
    case Activation::QuickGelu: return quick_gelu(x);
    case Activation::Gelu: return gelu(x, false);
    case Activation::GeluTanh: return gelu(x, true);
  }
  fail("activate: invalid activation");
}

// ---- the block ----

// Which state_dict names a block uses: open_clip/OpenAI ResidualAttentionBlock or timm Block.
enum class BlockNaming { OpenAI, Timm };

struct BlockConfig {
  int64_t width = 768, heads = 12;
  double mlp_ratio = 4.0, ln_eps = 1e-5;
  Activation act = Activation::QuickGelu;
  BlockNaming naming = BlockNaming::OpenAI;
};

// The packed q/k/v projection of torch.nn.MultiheadAttention: parameters in_proj_weight [3W, W] and
// in_proj_bias [3W] (q, k, v stacked in that order). Registered as an inline child of its attention module.
class PackedInProjection : public nn::UnaryModule, public nn::Adaptable {
 public:
  Tensor in_proj_weight, in_proj_bias;
  explicit PackedInProjection(int64_t width) {
    in_proj_weight = register_parameter("in_proj_weight", empty({3 * width, width}));
    nn::init::xavier_uniform_(in_proj_weight);
    in_proj_bias = register_parameter("in_proj_bias", zeros({3 * width}));
    adapter_name = "in_proj";
    packed_outputs = 3;
  }
  Tensor forward(const Tensor& x) override { return adapted(x, linear(x, in_proj_weight, in_proj_bias)); }
  Tensor& adaptable_weight() override { return in_proj_weight; }
};

// Multi-head self-attention over x [B, L, W]: in_proj (W -> 3W, packed q, k, v), fused attention per head,
// out_proj (W -> W). OpenAI names: in_proj_weight / in_proj_bias (inline) and out_proj; timm: qkv and proj.
class SelfAttention : public nn::Module {
 public:
  int64_t width, heads, head_dim;
  std::shared_ptr<nn::UnaryModule> in_proj, out_proj;

  SelfAttention(int64_t width_, int64_t heads_, BlockNaming naming) : width(width_), heads(heads_) {
    MC_CHECK(width > 0 && heads > 0 && width % heads == 0, "SelfAttention: width ", width,
             " must be a positive multiple of the number of heads ", heads);
    head_dim = width / heads;
    if (naming == BlockNaming::OpenAI) {
      in_proj = register_module("", std::make_shared<PackedInProjection>(width));
      auto out = std::make_shared<nn::Linear>(width, width);
      nn::init::zeros_(out->bias);  // torch.nn.MultiheadAttention's init
      out_proj = register_module("out_proj", out);
    } else {
      auto qkv = std::make_shared<nn::Linear>(width, 3 * width);
      qkv->packed_outputs = 3;  // q, k, v stacked (see the header comment on adapters)
      in_proj = register_module("qkv", qkv);
      out_proj = register_module("proj", std::make_shared<nn::Linear>(width, width));
    }
  }

  // causal: query i sees keys j <= i. key_padding_mask: optional bool [B, L], true = key ignored.
  Tensor forward(const Tensor& x, bool causal = false, const Tensor& key_padding_mask = {}) {
    MC_CHECK(x.dim() == 3 && x.size(2) == width, "SelfAttention: input must be [B, L, ", width, "], got ",
             shape_str(x.shape()));
    const int64_t B = x.size(0), L = x.size(1);
    // [B, L, 3W] -> [B, L, 3, H, D] -> three [B, H, L, D] views (unit stride on D, no copies).
    Tensor qkv = in_proj->forward(x).reshape({B, L, 3, heads, head_dim});
    Tensor q = qkv.select(2, 0).permute({0, 2, 1, 3});
    Tensor k = qkv.select(2, 1).permute({0, 2, 1, 3});
    Tensor v = qkv.select(2, 2).permute({0, 2, 1, 3});
    Tensor o = scaled_dot_product_attention(q, k, v, attention_params(head_dim, causal, key_padding_mask));
    // [B, H, L, D] -> [B, L, H*D]: the one copy, into the layout the output projection reads.
    return out_proj->forward(o.permute({0, 2, 1, 3}).reshape({B, L, width}));
  }
};

// fc1 (W -> hidden), activation, fc2 (hidden -> W). OpenAI names: c_fc, c_proj; timm: fc1, fc2.
class Mlp : public nn::Module {
 public:
  Activation act;
  std::shared_ptr<nn::UnaryModule> fc1, fc2;
  Mlp(int64_t width, int64_t hidden, Activation act_, BlockNaming naming) : act(act_) {
    const bool openai = naming == BlockNaming::OpenAI;
    fc1 = register_module(openai ? "c_fc" : "fc1", std::make_shared<nn::Linear>(width, hidden));
    fc2 = register_module(openai ? "c_proj" : "fc2", std::make_shared<nn::Linear>(hidden, width));
  }
  Tensor forward(const Tensor& x) { return fc2->forward(activate(fc1->forward(x), act)); }
};

// x = x + attn(norm1(x)); x = x + mlp(norm2(x)). OpenAI names: ln_1, attn, ln_2, mlp; timm: norm1, attn, norm2, mlp.
class ResidualBlock : public nn::Module {
 public:
  BlockConfig config;
  std::shared_ptr<nn::LayerNorm> norm1, norm2;
  std::shared_ptr<SelfAttention> attn;
  std::shared_ptr<Mlp> mlp;

  explicit ResidualBlock(const BlockConfig& c) : config(c) {
    MC_CHECK(c.mlp_ratio > 0, "ResidualBlock: mlp_ratio must be positive, got ", c.mlp_ratio);
    const bool openai = c.naming == BlockNaming::OpenAI;
    const auto hidden = int64_t(double(c.width) * c.mlp_ratio);  // int(width * mlp_ratio), as both references
    norm1 = register_module(openai ? "ln_1" : "norm1", std::make_shared<nn::LayerNorm>(c.width, c.ln_eps));
    attn = register_module("attn", std::make_shared<SelfAttention>(c.width, c.heads, c.naming));
    norm2 = register_module(openai ? "ln_2" : "norm2", std::make_shared<nn::LayerNorm>(c.width, c.ln_eps));
    mlp = register_module("mlp", std::make_shared<Mlp>(c.width, hidden, c.act, c.naming));
  }

  Tensor forward(const Tensor& x, bool causal = false, const Tensor& key_padding_mask = {}) {
    Tensor h = add(x, attn->forward(norm1->forward(x), causal, key_padding_mask));
    return add(h, mlp->forward(norm2->forward(h)));
  }
};

// Blocks registered as children "0", "1", ... (open_clip's `resblocks`, timm's `blocks`), run in order.
class BlockStack : public nn::Module {
 public:
  std::vector<std::shared_ptr<ResidualBlock>> blocks;
  BlockStack(const BlockConfig& c, int64_t layers) {
    MC_CHECK(layers >= 0, "BlockStack: layers must be non-negative, got ", layers);
    for (int64_t i = 0; i < layers; ++i)
      blocks.push_back(register_module(std::to_string(i), std::make_shared<ResidualBlock>(c)));
  }
  size_t size() const { return blocks.size(); }
  ResidualBlock& operator[](size_t i) { return *blocks.at(i); }
  Tensor forward(const Tensor& x, bool causal = false, const Tensor& key_padding_mask = {}) {
    Tensor h = x;
    for (auto& b : blocks) h = b->forward(h, causal, key_padding_mask);
    return h;
  }
};

// open_clip's Transformer: one child `resblocks`.
class ClipTransformer : public nn::Module {
 public:
  std::shared_ptr<BlockStack> resblocks;
  ClipTransformer(const BlockConfig& c, int64_t layers) {
    resblocks = register_module("resblocks", std::make_shared<BlockStack>(c, layers));
  }
  Tensor forward(const Tensor& x, bool causal = false, const Tensor& key_padding_mask = {}) {
    return resblocks->forward(x, causal, key_padding_mask);
  }
};

// ---- the Vision Transformer ----

struct ViTConfig {
  std::string variant = "openai";  // "openai" | "timm" (see the header comment for the names)
  int64_t image_size = 224, patch_size = 32, width = 768, layers = 12, heads = 12;
  double mlp_ratio = 4.0, ln_eps = 1e-5;
  std::string act = "quick_gelu";  // "quick_gelu" | "gelu" (erf) | "gelu_tanh"
  int64_t output_dim = 512;        // openai only: `proj` [width, output_dim]; 0 = no proj. Must be 0 for timm.
};

class VisionTransformer : public nn::Module {
 public:
  // openai: conv1, class_embedding [W], positional_embedding [1+N, W], ln_pre, transformer, ln_post, proj.
  // timm: patch_embed.proj, cls_token [1, 1, W], pos_embed [1, 1+N, W], blocks, norm.
  // class_embedding / positional_embedding hold whichever of the two the variant has.
  Tensor class_embedding, positional_embedding, proj;
  std::shared_ptr<nn::Conv2d> patch_conv;
  std::shared_ptr<nn::LayerNorm> ln_pre, final_norm;  // ln_pre: openai only; final_norm: ln_post or norm
  std::shared_ptr<BlockStack> blocks;                  // transformer.resblocks or blocks

  explicit VisionTransformer(const ViTConfig& c) : cfg_(c) {
    const char* who = "VisionTransformer";
    MC_CHECK(c.variant == "openai" || c.variant == "timm", who, ": unknown variant '", c.variant,
             "' (expected openai or timm)");
    MC_CHECK(c.image_size > 0 && c.patch_size > 0 && c.image_size % c.patch_size == 0, who, ": image size ",
             c.image_size, " must be a positive multiple of the patch size ", c.patch_size);
    MC_CHECK(c.width > 0 && c.heads > 0 && c.width % c.heads == 0, who, ": width ", c.width,
             " must be a positive multiple of heads ", c.heads);
    MC_CHECK(c.layers >= 0, who, ": layers must be non-negative, got ", c.layers);
    MC_CHECK(c.output_dim >= 0, who, ": output_dim must be non-negative, got ", c.output_dim);
    MC_CHECK(c.variant == "openai" || c.output_dim == 0, who,
             ": output_dim must be 0 for the timm variant (its head is separate), got ", c.output_dim);
    openai_ = c.variant == "openai";
    BlockConfig bc;
    bc.width = c.width;
    bc.heads = c.heads;
    bc.mlp_ratio = c.mlp_ratio;
    bc.ln_eps = c.ln_eps;
    bc.act = parse_activation(c.act, who);
    bc.naming = openai_ ? BlockNaming::OpenAI : BlockNaming::Timm;
    const int64_t grid = c.image_size / c.patch_size, tokens = 1 + grid * grid, W = c.width;
    const double scale = 1.0 / std::sqrt(double(W));

    // Parameters first, then children: the order torch's state_dict lists them in.
    if (openai_) {
      class_embedding = register_parameter("class_embedding", empty({W}));
      nn::init::normal_(class_embedding, 0, scale);
      positional_embedding = register_parameter("positional_embedding", empty({tokens, W}));
      nn::init::normal_(positional_embedding, 0, scale);
      if (c.output_dim > 0) {
        proj = register_parameter("proj", empty({W, c.output_dim}));
        nn::init::normal_(proj, 0, scale);
      }
      patch_conv = register_module("conv1", std::make_shared<nn::Conv2d>(3, W, c.patch_size, c.patch_size, 0, 1, 1,
                                                                         /*with_bias=*/false));
      ln_pre = register_module("ln_pre", std::make_shared<nn::LayerNorm>(W, c.ln_eps));
      auto tr = register_module("transformer", std::make_shared<ClipTransformer>(bc, c.layers));
      blocks = tr->resblocks;
      final_norm = register_module("ln_post", std::make_shared<nn::LayerNorm>(W, c.ln_eps));
    } else {
      class_embedding = register_parameter("cls_token", empty({1, 1, W}));
      nn::init::normal_(class_embedding, 0, 1e-6);
      positional_embedding = register_parameter("pos_embed", empty({1, tokens, W}));
      nn::init::trunc_normal_(positional_embedding, 0, 0.02);
      auto pe = register_module("patch_embed", std::make_shared<nn::Module>());
      patch_conv = pe->register_module("proj", std::make_shared<nn::Conv2d>(3, W, c.patch_size, c.patch_size));
      blocks = register_module("blocks", std::make_shared<BlockStack>(bc, c.layers));
      final_norm = register_module("norm", std::make_shared<nn::LayerNorm>(W, c.ln_eps));
    }
  }

  const ViTConfig& config() const { return cfg_; }
  int64_t num_tokens() const { return 1 + num_patches(); }
  int64_t num_patches() const {
    const int64_t g = cfg_.image_size / cfg_.patch_size;
    return g * g;
  }

  // Token states after the last block and the final norm: [B, 1 + N, W] (token 0 is the class token).
  Tensor forward_tokens(const Tensor& pixels) { return final_norm->forward(encode(pixels)); }

  // openai: ln_post(x[:, 0]) @ proj -> [B, output_dim] ([B, W] without proj); timm: norm(x)[:, 0] -> [B, W].
  Tensor forward(const Tensor& pixels) {
    // The final norm is per token, so only the class token is normalised.
    Tensor pooled = final_norm->forward(encode(pixels).select(1, 0));
    return proj.defined() ? matmul(pooled, proj) : pooled;
  }

 private:
  // Patch embedding, class token, positions (and ln_pre), then the blocks: [B, 1 + N, W] before the final norm.
  Tensor encode(const Tensor& pixels) {
    const char* who = "VisionTransformer";
    MC_CHECK(pixels.defined() && pixels.dim() == 4 && pixels.size(1) == 3, who,
             ": pixels must be [B, 3, H, W], got ", pixels.defined() ? shape_str(pixels.shape()) : "undefined");
    MC_CHECK(is_floating(pixels.dtype()), who, ": pixels must be floating, got ", dtype_name(pixels.dtype()));
    MC_CHECK(pixels.size(2) == cfg_.image_size && pixels.size(3) == cfg_.image_size, who, ": pixels ",
             shape_str(pixels.shape()), " do not match the model's image size ", cfg_.image_size, "x",
             cfg_.image_size, " (positional embeddings are fixed; interpolation is not supported)");
    const int64_t B = pixels.size(0), W = cfg_.width, N = num_patches();
    // [B, W, g, g] -> [B, N, W] (a permuted view; cat writes it into place).
    Tensor patches = patch_conv->forward(pixels).reshape({B, W, N}).permute({0, 2, 1});
    Tensor cls = class_embedding.reshape({1, 1, W}).expand({B, 1, W});
    Tensor x = add(cat({cls, patches}, 1), positional_embedding.reshape({1, N + 1, W}));
    if (ln_pre) x = ln_pre->forward(x);
    return blocks->forward(x);
  }

  ViTConfig cfg_;
  bool openai_ = true;
};

}  // namespace mc::models
