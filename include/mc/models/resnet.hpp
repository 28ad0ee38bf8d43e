// mc/models/resnet.hpp — the two ResNet image towers of the study, with their reference state_dict names.
//
//   ResNet          torchvision's ResNet v1.5 (CXR-CLIP's image encoder: ResNet-50 with the fc removed).
//                   conv1 7x7/2, bn1, ReLU, max pool 3x3/2, layer1..layer4 of BasicBlock (18/34) or
//                   Bottleneck (50/101/152) with the stride on the 3x3 conv, global average pool, [fc].
//                   Blocks: `layerK.i.{conv1,bn1,conv2,bn2[,conv3,bn3]}`, shortcut `layerK.0.downsample.{0,1}`
//                   (1x1 strided conv, BN) where the shape changes.
//   ModifiedResNet  CLIP's ModifiedResNet (open_clip / PMC-CLIP's image encoder, RN50: layers [3, 4, 6, 3]).
//                   Stem conv1 3x3/2 (width/2), conv2 3x3 (width/2), conv3 3x3 (width), each + BN + ReLU, then
//                   avg pool 2. Bottleneck convs all have stride 1; a stride-s block average-pools by s before
//                   conv3, and its shortcut is avg pool s, `downsample.0` 1x1 conv, `downsample.1` BN (the pool
//                   is the reference's unnamed "-1" entry, no parameters). `attnpool` (AttentionPool2d): the
//                   h*w feature tokens with their mean prepended, + `positional_embedding` [S^2 + 1, C]
//                   (S = image_size / 32), multi-head attention of the mean token over all tokens with
//                   `q_proj`, `k_proj`, `v_proj` (C -> C, with bias), heads of C / heads dims each scaled by
//                   1/sqrt(head dim), output `c_proj` (C -> output_dim).
//
// Batch norm follows the module mode (train(): batch statistics and running-stat updates; eval(): running
// statistics). Parameters are initialised as the references do (torchvision: kaiming-normal fan-out convs,
// BN 1/0; open_clip: torch defaults, attnpool weights N(0, C^-1/2), zeroed bn3 weights in the blocks), so a
// model can be trained from scratch; a checkpoint's state dict loads with load_state_dict() unchanged
// (BatchNorm's num_batches_tracked is not kept: drop it when converting).
#pragma once
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "mc/nn/layers.hpp"
#include "mc/ops/attention.hpp"
#include "mc/ops/conv.hpp"
#include "mc/ops/elementwise.hpp"
#include "mc/ops/linalg.hpp"
#include "mc/ops/norm.hpp"
#include "mc/ops/reduce.hpp"
#include "mc/ops/shape.hpp"

namespace mc::models {

namespace resnet_detail {

// Checks an image batch [B, 3, H, W] of a floating dtype.
inline void check_image_batch(const Tensor& x, const char* what) {
  MC_CHECK(x.defined(), what, ": input is undefined");
  MC_CHECK(x.dim() == 4, what, ": input must be an image batch [B, 3, H, W], got ", shape_str(x.shape()));
  MC_CHECK(x.size(1) == 3, what, ": input must have 3 (RGB) channels, got ", x.size(1), " in ",
           shape_str(x.shape()));
  MC_CHECK(is_floating(x.dtype()), what, ": input must be floating, got ", dtype_name(x.dtype()));
}

inline void check_layers(const std::vector<int64_t>& layers, const char* what) {
  MC_CHECK(layers.size() == 4, what, ": layers must list 4 block counts, got ", layers.size());
  for (int64_t n : layers) MC_CHECK(n >= 1, what, ": every layer needs at least one block, got ", n);
}

inline std::shared_ptr<nn::Conv2d> conv_nobias(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1,
                                               int64_t padding = 0) {
  return std::make_shared<nn::Conv2d>(in, out, kernel, stride, padding, 1, 1, /*with_bias=*/false);
}

// The shortcut's "0" 1x1 conv (stride `stride`) and "1" BN.
inline std::shared_ptr<nn::Sequential> projection(int64_t in, int64_t out, int64_t stride, double eps) {
  auto seq = std::make_shared<nn::Sequential>();
  seq->push_back(conv_nobias(in, out, 1, stride));
  seq->push_back(std::make_shared<nn::BatchNorm2d>(out, eps));
  return seq;
}

// torchvision's conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
inline void kaiming_normal_fan_out_(Tensor& w) {
  nn::init::normal_(w, 0, std::sqrt(2.0 / double(nn::init::fans(w).second)));
}

}  // namespace resnet_detail

// ---------------------------------------------------------------------------------------------------------
// torchvision ResNet
// ---------------------------------------------------------------------------------------------------------

struct ResNetConfig {
  std::string block = "bottleneck";  // "basic" (ResNet-18/34) | "bottleneck" (50/101/152)
  std::vector<int64_t> layers{3, 4, 6, 3};
  int64_t width = 64;       // stem channels and layer1 planes; layer k has width * 2^(k-1) planes
  int64_t num_classes = 0;  // 0: no fc (CXR-CLIP removes it)
  double bn_eps = 1e-5;
  static ResNetConfig depth(int depth);  // 18, 34, 50, 101, 152 with torchvision's layer counts
};

inline ResNetConfig ResNetConfig::depth(int depth) {
  ResNetConfig c;
  switch (depth) {
    case 18: c.layers = {2, 2, 2, 2}; break;
    case 34: c.layers = {3, 4, 6, 3}; break;
    case 50: c.layers = {3, 4, 6, 3}; break;
    case 101: c.layers = {3, 4, 23, 3}; break;
    case 152: c.layers = {3, 8, 36, 3}; break;
    default: fail("ResNetConfig::depth: unknown depth ", depth, " (expected 18, 34, 50, 101 or 152)");
  }
  c.block = depth < 50 ? "basic" : "bottleneck";
  return c;
}

// torchvision BasicBlock: conv3x3(stride), BN, ReLU, conv3x3, BN, + shortcut, ReLU.
class ResNetBasicBlock : public nn::UnaryModule {
 public:
  static constexpr int64_t expansion = 1;
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2;
  std::shared_ptr<nn::Sequential> downsample;  // null when the shape is kept

  ResNetBasicBlock(int64_t inplanes, int64_t planes, int64_t stride, double eps) {
    conv1 = register_module("conv1", resnet_detail::conv_nobias(inplanes, planes, 3, stride, 1));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(planes, eps));
    conv2 = register_module("conv2", resnet_detail::conv_nobias(planes, planes, 3, 1, 1));
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(planes, eps));
    if (stride != 1 || inplanes != planes * expansion)
      downsample = register_module("downsample", resnet_detail::projection(inplanes, planes * expansion, stride, eps));
  }
  Tensor forward(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    out = bn2->forward(conv2->forward(out));
    return relu(add(out, downsample ? downsample->forward(x) : x));
  }
};

// torchvision Bottleneck (v1.5): conv1x1, BN, ReLU, conv3x3(stride), BN, ReLU, conv1x1 (x4), BN, + shortcut, ReLU.
class ResNetBottleneck : public nn::UnaryModule {
 public:
  static constexpr int64_t expansion = 4;
  std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2, bn3;
  std::shared_ptr<nn::Sequential> downsample;  // null when the shape is kept

  ResNetBottleneck(int64_t inplanes, int64_t planes, int64_t stride, double eps) {
    conv1 = register_module("conv1", resnet_detail::conv_nobias(inplanes, planes, 1));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(planes, eps));
    conv2 = register_module("conv2", resnet_detail::conv_nobias(planes, planes, 3, stride, 1));
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(planes, eps));
    conv3 = register_module("conv3", resnet_detail::conv_nobias(planes, planes * expansion, 1));
    bn3 = register_module("bn3", std::make_shared<nn::BatchNorm2d>(planes * expansion, eps));
    if (stride != 1 || inplanes != planes * expansion)
      downsample = register_module("downsample", resnet_detail::projection(inplanes, planes * expansion, stride, eps));
  }
  Tensor forward(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    out = relu(bn2->forward(conv2->forward(out)));
    out = bn3->forward(conv3->forward(out));
    return relu(add(out, downsample ? downsample->forward(x) : x));
  }
};

class ResNet : public nn::Module {
 public:
  ResNetConfig config;
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::shared_ptr<nn::Sequential> layer1, layer2, layer3, layer4;
  std::shared_ptr<nn::Linear> fc;  // null when num_classes == 0

  explicit ResNet(const ResNetConfig& c) : config(c) {
    MC_CHECK(c.block == "basic" || c.block == "bottleneck", "ResNet: block must be \"basic\" or \"bottleneck\", got \"",
             c.block, "\"");
    resnet_detail::check_layers(c.layers, "ResNet");
    MC_CHECK(c.width > 0, "ResNet: width must be positive, got ", c.width);
    MC_CHECK(c.num_classes >= 0, "ResNet: num_classes must be >= 0, got ", c.num_classes);
    MC_CHECK(c.bn_eps >= 0, "ResNet: bn_eps must be non-negative, got ", c.bn_eps);
    const bool basic = c.block == "basic";
    expansion_ = basic ? ResNetBasicBlock::expansion : ResNetBottleneck::expansion;

    conv1 = register_module("conv1", resnet_detail::conv_nobias(3, c.width, 7, 2, 3));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(c.width, c.bn_eps));
    int64_t inplanes = c.width;
    std::shared_ptr<nn::Sequential>* layers[4] = {&layer1, &layer2, &layer3, &layer4};
    for (int k = 0; k < 4; ++k) {
      const int64_t planes = c.width << k, stride = k == 0 ? 1 : 2;
      auto seq = std::make_shared<nn::Sequential>();
      for (int64_t i = 0; i < c.layers[size_t(k)]; ++i) {
        const int64_t s = i == 0 ? stride : 1;
        if (basic) seq->push_back(std::make_shared<ResNetBasicBlock>(inplanes, planes, s, c.bn_eps));
        else seq->push_back(std::make_shared<ResNetBottleneck>(inplanes, planes, s, c.bn_eps));
        inplanes = planes * expansion_;
      }
      *layers[k] = register_module("layer" + std::to_string(k + 1), seq);
    }
    if (c.num_classes > 0) fc = register_module("fc", std::make_shared<nn::Linear>(inplanes, c.num_classes));

    for (auto& [name, t] : named_parameters())
      if (t.dim() == 4) resnet_detail::kaiming_normal_fan_out_(t);  // every conv weight (BN starts at 1 / 0)
  }

  // [B, 3, H, W] -> [B, out_channels(), H/32, W/32] (rounded up at each stride-2 step).
  Tensor forward_features(const Tensor& x) {
    resnet_detail::check_image_batch(x, "ResNet");
    Tensor h = relu(bn1->forward(conv1->forward(x)));
    h = max_pool2d(h, 3, 2, 1);
    h = layer1->forward(h);
    h = layer2->forward(h);
    h = layer3->forward(h);
    return layer4->forward(h);
  }

  // Global average pool -> [B, out_channels()], then fc -> [B, num_classes] when there is one.
  Tensor forward(const Tensor& x) {
    Tensor pooled = mean(forward_features(x), {2, 3});
    return fc ? fc->forward(pooled) : pooled;
  }
  Tensor operator()(const Tensor& x) { return forward(x); }

  int64_t out_channels() const { return config.width * 8 * expansion_; }

 private:
  int64_t expansion_ = 4;
};

// ---------------------------------------------------------------------------------------------------------
// CLIP's ModifiedResNet
// ---------------------------------------------------------------------------------------------------------

struct ModifiedResNetConfig {
  std::vector<int64_t> layers{3, 4, 6, 3};
  int64_t width = 64;
  int64_t heads = 32;
  int64_t output_dim = 1024;
  int64_t image_size = 224;
  double bn_eps = 1e-5;
};

// CLIP's anti-aliased Bottleneck: every conv stride 1, avg pool(stride) before conv3 and in the shortcut.
class ModifiedBottleneck : public nn::UnaryModule {
 public:
  static constexpr int64_t expansion = 4;
  int64_t stride;
  std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2, bn3;
  std::shared_ptr<nn::Sequential> downsample;  // "0" conv1x1, "1" BN (after the unnamed pool); may be null

  ModifiedBottleneck(int64_t inplanes, int64_t planes, int64_t stride_, double eps) : stride(stride_) {
    conv1 = register_module("conv1", resnet_detail::conv_nobias(inplanes, planes, 1));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(planes, eps));
    conv2 = register_module("conv2", resnet_detail::conv_nobias(planes, planes, 3, 1, 1));
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(planes, eps));
    conv3 = register_module("conv3", resnet_detail::conv_nobias(planes, planes * expansion, 1));
    bn3 = register_module("bn3", std::make_shared<nn::BatchNorm2d>(planes * expansion, eps));
    if (stride > 1 || inplanes != planes * expansion)
      downsample = register_module("downsample", resnet_detail::projection(inplanes, planes * expansion, 1, eps));
  }
  Tensor forward(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    out = relu(bn2->forward(conv2->forward(out)));
    if (stride > 1) out = avg_pool2d(out, stride);
    out = bn3->forward(conv3->forward(out));
    Tensor identity = x;
    if (downsample) identity = downsample->forward(stride > 1 ? avg_pool2d(x, stride) : x);
    return relu(add(out, identity));
  }
};

// CLIP's attention pooling of a feature map [B, C, h, w] -> [B, output_dim] (the output of the mean token).
class AttentionPool2d : public nn::Module {
 public:
  int64_t num_heads;
  Tensor positional_embedding;  // [spacial_dim^2 + 1, C]
  std::shared_ptr<nn::Linear> k_proj, q_proj, v_proj, c_proj;

  AttentionPool2d(int64_t spacial_dim, int64_t embed_dim, int64_t heads, int64_t output_dim) : num_heads(heads) {
    MC_CHECK(spacial_dim > 0 && embed_dim > 0 && output_dim > 0,
             "AttentionPool2d: sizes must be positive (spacial_dim ", spacial_dim, ", embed_dim ", embed_dim,
             ", output_dim ", output_dim, ")");
    MC_CHECK(heads > 0 && embed_dim % heads == 0, "AttentionPool2d: heads (", heads,
             ") must be positive and divide embed_dim (", embed_dim, ")");
    positional_embedding =
        register_parameter("positional_embedding", empty({spacial_dim * spacial_dim + 1, embed_dim}));
    nn::init::normal_(positional_embedding, 0, 1.0 / std::sqrt(double(embed_dim)));
    k_proj = register_module("k_proj", std::make_shared<nn::Linear>(embed_dim, embed_dim));
    q_proj = register_module("q_proj", std::make_shared<nn::Linear>(embed_dim, embed_dim));
    v_proj = register_module("v_proj", std::make_shared<nn::Linear>(embed_dim, embed_dim));
    c_proj = register_module("c_proj", std::make_shared<nn::Linear>(embed_dim, output_dim));
    const double std_ = 1.0 / std::sqrt(double(embed_dim));
    for (auto* l : {&q_proj, &k_proj, &v_proj, &c_proj}) nn::init::normal_((*l)->weight, 0, std_);
  }

  Tensor forward(const Tensor& x) {
    const int64_t C = positional_embedding.size(1), L = positional_embedding.size(0);
    MC_CHECK(x.dim() == 4 && x.size(1) == C, "AttentionPool2d: input must be [B, ", C, ", h, w], got ",
             shape_str(x.shape()));
    const int64_t B = x.size(0), HW = x.size(2) * x.size(3), H = num_heads, D = C / H;
    MC_CHECK(HW + 1 == L, "AttentionPool2d: a ", x.size(2), "x", x.size(3), " feature map gives ", HW + 1,
             " tokens, but positional_embedding ", shape_str(positional_embedding.shape()), " has ", L);
    // tokens [B, 1 + HW, C]: the mean of the grid first, then the grid in row-major order, + positions.
    Tensor grid = x.flatten(2).transpose(1, 2);
    Tensor t = add(cat({mean(x, {2, 3}).unsqueeze(1), grid}, 1), positional_embedding);
    // Only the mean token's output is kept, so it is the only query (the others would be discarded).
    Tensor q = q_proj->forward(t.select(1, 0)).reshape({B, H, 1, D});
    Tensor k = k_proj->forward(t).reshape({B, L, H, D}).permute({0, 2, 1, 3});
    Tensor v = v_proj->forward(t).reshape({B, L, H, D}).permute({0, 2, 1, 3});
    Tensor o = scaled_dot_product_attention(q, k, v, attention_params(D));  // [B, H, 1, D]
    return c_proj->forward(o.reshape({B, C}));
  }
  Tensor operator()(const Tensor& x) { return forward(x); }
};

class ModifiedResNet : public nn::Module {
 public:
  ModifiedResNetConfig config;
  std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2, bn3;
  std::shared_ptr<nn::Sequential> layer1, layer2, layer3, layer4;
  std::shared_ptr<AttentionPool2d> attnpool;

  explicit ModifiedResNet(const ModifiedResNetConfig& c) : config(c) {
    resnet_detail::check_layers(c.layers, "ModifiedResNet");
    MC_CHECK(c.width > 0 && c.width % 2 == 0, "ModifiedResNet: width must be positive and even, got ", c.width);
    MC_CHECK(c.image_size >= 32, "ModifiedResNet: image_size must be at least 32 (the network downsamples by 32), got ",
             c.image_size);
    MC_CHECK(c.bn_eps >= 0, "ModifiedResNet: bn_eps must be non-negative, got ", c.bn_eps);
    const int64_t w = c.width;
    conv1 = register_module("conv1", resnet_detail::conv_nobias(3, w / 2, 3, 2, 1));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(w / 2, c.bn_eps));
    conv2 = register_module("conv2", resnet_detail::conv_nobias(w / 2, w / 2, 3, 1, 1));
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(w / 2, c.bn_eps));
    conv3 = register_module("conv3", resnet_detail::conv_nobias(w / 2, w, 3, 1, 1));
    bn3 = register_module("bn3", std::make_shared<nn::BatchNorm2d>(w, c.bn_eps));
    int64_t inplanes = w;
    std::shared_ptr<nn::Sequential>* layers[4] = {&layer1, &layer2, &layer3, &layer4};
    for (int k = 0; k < 4; ++k) {
      const int64_t planes = w << k;
      auto seq = std::make_shared<nn::Sequential>();
      for (int64_t i = 0; i < c.layers[size_t(k)]; ++i) {
        auto blk = std::make_shared<ModifiedBottleneck>(inplanes, planes, i == 0 && k > 0 ? 2 : 1, c.bn_eps);
        nn::init::zeros_(blk->bn3->weight);  // open_clip's init_parameters
        seq->push_back(blk);
        inplanes = planes * ModifiedBottleneck::expansion;
      }
      *layers[k] = register_module("layer" + std::to_string(k + 1), seq);
    }
    attnpool = register_module("attnpool", std::make_shared<AttentionPool2d>(c.image_size / 32, w * 32, c.heads,
                                                                             c.output_dim));
  }

  // [B, 3, H, W] -> [B, feature_channels(), H/32, W/32].
  Tensor forward_features(const Tensor& x) {
    resnet_detail::check_image_batch(x, "ModifiedResNet");
    const int64_t gh = grid_size(x.size(2)), gw = grid_size(x.size(3));
    MC_CHECK(gh >= 1 && gw >= 1, "ModifiedResNet: input ", shape_str(x.shape()),
             " is too small: the network downsamples by 32, so H and W must be at least 32");
    Tensor h = relu(bn1->forward(conv1->forward(x)));
    h = relu(bn2->forward(conv2->forward(h)));
    h = relu(bn3->forward(conv3->forward(h)));
    h = avg_pool2d(h, 2);
    h = layer1->forward(h);
    h = layer2->forward(h);
    h = layer3->forward(h);
    return layer4->forward(h);
  }

  // Attention pool -> [B, output_dim]. The feature grid must match the positional embedding: an
  // image_size x image_size input (or any H x W with (H/32)(W/32) = (image_size/32)^2).
  Tensor forward(const Tensor& x) {
    resnet_detail::check_image_batch(x, "ModifiedResNet");
    const int64_t gh = grid_size(x.size(2)), gw = grid_size(x.size(3));
    const int64_t need = attnpool->positional_embedding.size(0) - 1;
    MC_CHECK(gh >= 1 && gw >= 1 && gh * gw == need, "ModifiedResNet: input ", shape_str(x.shape()), " gives a ",
             gh, "x", gw, " feature grid, but attnpool.positional_embedding has ", need,
             " grid positions (built for ", config.image_size, "x", config.image_size, " images)");
    return attnpool->forward(forward_features(x));
  }
  Tensor operator()(const Tensor& x) { return forward(x); }

  int64_t feature_channels() const { return config.width * 32; }

  // Side of the layer4 feature grid for an input side n: conv1 (3x3/2, pad 1), avg pool 2, three stride-2 pools.
  static int64_t grid_size(int64_t n) {
    int64_t s = n >= 1 ? (n - 1) / 2 + 1 : 0;
    for (int i = 0; i < 4; ++i) s /= 2;
    return s;
  }
};

}  // namespace mc::models
