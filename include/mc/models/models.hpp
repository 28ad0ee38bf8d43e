// mc/models/models.hpp — the models layer in one include.
//
//   vit.hpp           VisionTransformer: OpenAI CLIP's and timm's ViT (ViTConfig)
//   clip_text.hpp     ClipTextTransformer: CLIP's causal text tower (ClipTextConfig)
//   bert.hpp          BertModel: Hugging Face BERT (BertConfig, BertOutput)
//   resnet.hpp        ResNet (torchvision) and ModifiedResNet (CLIP / PMC-CLIP)
//   card.hpp          ModelCard: a dual encoder described in JSON (weights/*.json)
//   dual_encoder.hpp  DualEncoder built from a card; TextTokenizer; load_model / model_from_tensors
//   convert.hpp       PyTorch checkpoint -> self-contained .safetensors model file (mc convert)
#pragma once
#include "mc/models/bert.hpp"
#include "mc/models/card.hpp"
#include "mc/models/clip_text.hpp"
#include "mc/models/convert.hpp"
#include "mc/models/dual_encoder.hpp"
#include "mc/models/resnet.hpp"
#include "mc/models/vit.hpp"
