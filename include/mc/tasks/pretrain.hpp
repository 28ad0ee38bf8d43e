// mc/tasks/pretrain.hpp — tiny dual encoders and contrastive (CLIP) pre-training by mc, for the study in
// miniature on the procedural domains of mc/data/synthetic.hpp.
//
//   namespace syn = mc::data::synthetic;
//   syn::PairSet pairs = syn::make_pairs(syn::Domain::Medical, 4096);
//   auto model = mc::tasks::make_tiny_model("mini-medical");             // random init, vocabulary attached
//   mc::tasks::PretrainConfig cfg;                                        // epochs, batch, lr, wd, warmup, seed
//   auto r = mc::tasks::pretrain_clip(*model, pairs, cfg, [](const mc::tasks::PretrainProgress& p) { ... });
//   mc::tasks::save_model(*model, "mini-medical.safetensors");            // load_model(path) gives it back
//   auto z = mc::tasks::zero_shot_classify(*model, cls.test.pixels, cls.prompt_sets);   // [N] predictions
//
// The tiny model (tiny_card): an OpenAI-layout ViT (32x32 input, 8x8 patches, width 64, 2 layers, 4 heads,
// QuickGELU, output 64) and a small BERT text tower (hidden 64, 2 layers, 4 heads, intermediate 256, no
// dropout, [CLS] pooling, linear projection to 64) with a WordPiece vocabulary generated from the domains'
// words (synthetic::vocab_text()), context length 24; logit scale exp(logit_scale), learnt, used for
// zero-shot too. The "general" and the "medical" model share this architecture, so the only difference
// between them is the data they were pre-trained on — the study's question.
//
// pretrain_clip: symmetric InfoNCE, (CE(logits, targets) + CE(logits^T, targets^T)) / 2 with logits =
// exp(logit_scale) * cos(image, text), over mini-batches of shuffled pairs. Pairs in a batch with the same
// content (equal synthetic keys, e.g. every "no finding" scan) are all positives of one another: the target
// row of pair i is uniform over { j : key_j == key_i } (with distinct keys this is CLIP's one-hot target).
// AdamW (betas 0.9 / 0.98, eps 1e-6; no weight decay on biases, norms, embeddings and the logit scale),
// linear warmup then cosine decay per step, logit scale clamped to ln(100) as CLIP does. Captions are
// tokenised once; each batch is cut to its longest caption (padding beyond it changes nothing in BERT with
// its attention mask). Runs on the CPU with the process thread pool (MC_NUM_THREADS).
#pragma once
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mc/autograd/engine.hpp"
#include "mc/core/random.hpp"
#include "mc/data/common.hpp"
#include "mc/data/synthetic.hpp"
#include "mc/models/convert.hpp"
#include "mc/models/dual_encoder.hpp"
#include "mc/ops/nn.hpp"
#include "mc/optim/optimizer.hpp"
#include "mc/optim/schedule.hpp"
#include "mc/tasks/metrics.hpp"

namespace mc::tasks {

// ---- the tiny model ----

struct TinyModelOptions {
  int64_t embed_dim = 64;
  int64_t vision_width = 64, vision_layers = 2, vision_heads = 4, patch_size = 8;
  int64_t text_width = 64, text_layers = 2, text_heads = 4, text_intermediate = 256;
  int64_t context_length = 24;
};

// The card of a tiny dual encoder for the synthetic domains (see the top of this file).
inline models::ModelCard tiny_card(const std::string& name, int64_t vocab_size, const TinyModelOptions& o = {}) {
  models::ModelCard c;
  c.name = name;
  c.description = "tiny dual encoder for the procedural study in miniature: ViT 32px/8 width " +
                  std::to_string(o.vision_width) + " x" + std::to_string(o.vision_layers) + " + BERT width " +
                  std::to_string(o.text_width) + " x" + std::to_string(o.text_layers) + ", pre-trained by mc";
  c.embed_dim = o.embed_dim;
  c.vision.arch = "vit";
  c.vision.prefix = "visual";
  c.vision.vit.variant = "openai";
  c.vision.vit.image_size = data::synthetic::kImageSize;
  c.vision.vit.patch_size = o.patch_size;
  c.vision.vit.width = o.vision_width;
  c.vision.vit.layers = o.vision_layers;
  c.vision.vit.heads = o.vision_heads;
  c.vision.vit.act = "quick_gelu";
  c.vision.vit.output_dim = o.embed_dim;
  c.vision.projection.type = "none";
  c.text.arch = "bert";
  c.text.prefix = "text.transformer";
  models::BertConfig& b = c.text.bert;
  b.vocab_size = vocab_size;
  b.hidden_size = o.text_width;
  b.layers = o.text_layers;
  b.heads = o.text_heads;
  b.intermediate_size = o.text_intermediate;
  b.max_position_embeddings = std::max<int64_t>(32, o.context_length);
  b.type_vocab_size = 2;
  b.pad_token_id = 0;
  b.ln_eps = 1e-12;
  b.hidden_dropout = 0;
  b.attention_dropout = 0;
  b.pooler = false;
  b.act = "gelu";
  c.text.pool = "cls";
  c.text.use_attention_mask = true;
  c.text.projection.type = "linear";
  c.text.projection.name = "text.proj";
  c.text.projection.bias = false;
  c.logit_scale.name = "logit_scale";
  c.logit_scale.train.mode = "exp";
  c.logit_scale.zero_shot.mode = "exp";
  c.tokenizer.type = "wordpiece";
  c.tokenizer.context_length = o.context_length;
  c.tokenizer.lowercase = true;
  c.preprocess.size = data::synthetic::kImageSize;
  c.preprocess.interpolation = "bilinear";
  c.checkpoint.url = "";
  c.checkpoint.file = "";
  c.checkpoint.format = "zip";
  c.checkpoint.strip_prefix = {};
  c.checkpoint.notes = "random init, pre-trained by mc on procedurally generated pairs (mc/data/synthetic.hpp)";
  c.validate("tiny_card");
  return c;
}

// A fresh randomly initialised tiny dual encoder named `name` with the synthetic vocabulary attached
// (tokenize() works), in training mode. The initialisation is drawn from mc's default generator seeded
// with `seed` (the generator is left re-seeded).
inline std::shared_ptr<models::DualEncoder> make_tiny_model(const std::string& name, uint64_t seed = data::kDefaultSeed,
                                                            const TinyModelOptions& o = {}) {
  const std::string vocab = data::synthetic::vocab_text();
  int64_t n = 0;
  for (char ch : vocab) n += ch == '\n';
  manual_seed(seed);
  auto m = std::make_shared<models::DualEncoder>(tiny_card(name, n, o));
  m->set_vocab(vocab);
  m->train();
  return m;
}

// The model as a converted file's tensors and metadata (weights, tokenizer.vocab, mc.card, mc.format): what
// models::model_from_tensors / load_model read back.
inline models::Converted to_converted(const models::DualEncoder& model, const std::string& source = "mc pretrain") {
  MC_CHECK(model.has_tokenizer(), "to_converted: model '", model.card().name, "' has no tokenizer vocabulary");
  models::Converted c;
  for (const auto& [n, t] : model.state_dict()) c.tensors.emplace_back(n, t.to(Device::cpu()).contiguous());
  c.tensors.emplace_back(models::kVocabTensor, models::convert_detail::bytes_tensor(model.vocab()));
  c.metadata[models::kFormatKey] = models::kModelFormat;
  c.metadata[models::kCardKey] = model.card().to_json().dump();
  c.metadata["mc.dtype"] = "f32";
  c.metadata["mc.source"] = source;
  c.summary = "card '" + model.card().name + "': " + std::to_string(model.num_parameters()) + " parameters";
  return c;
}

// Writes the model as a self-contained .safetensors file (atomically); models::load_model(path) reads it.
inline void save_model(const models::DualEncoder& model, const std::string& path,
                       const std::string& source = "mc pretrain") {
  models::save_converted(to_converted(model, source), path);
}

// ---- embeddings and zero-shot evaluation (no gradients, eval mode restored afterwards) ----

namespace pretrain_detail {

struct EvalMode {
  nn::Module& m;
  bool was;
  explicit EvalMode(nn::Module& mod) : m(mod), was(mod.is_training()) { m.eval(); }
  ~EvalMode() { m.train(was); }
};

// Cuts token batches to their longest real row.
inline models::TokenBatch trim(const models::TokenBatch& b) {
  const int64_t L = b.attention_mask.size(1);
  Tensor lens = sum(b.attention_mask, {1});
  int64_t longest = std::max<int64_t>(1, amax(lens).item<int64_t>());
  if (longest >= L) return b;
  return {b.input_ids.narrow(1, 0, longest).contiguous(), b.attention_mask.narrow(1, 0, longest).contiguous()};
}

inline Tensor rows(const Tensor& t, const std::vector<int64_t>& idx) {
  return index_select(t, 0, from_vector(idx, {int64_t(idx.size())}, t.device()));
}

}  // namespace pretrain_detail

// Image embeddings [N, D] (projected, not normalised) of pixels [N, 3, H, W], in batches.
inline Tensor embed_images(models::DualEncoder& model, const Tensor& pixels, int64_t batch = 256) {
  NoGradGuard ng;
  pretrain_detail::EvalMode em(model);
  std::vector<Tensor> parts;
  const int64_t n = pixels.size(0);
  for (int64_t b = 0; b < n; b += batch)
    parts.push_back(model.encode_image(pixels.narrow(0, b, std::min(batch, n - b))));
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

// Text embeddings [M, D] (projected, not normalised), in batches.
inline Tensor embed_texts(models::DualEncoder& model, const std::vector<std::string>& texts, int64_t batch = 256) {
  NoGradGuard ng;
  pretrain_detail::EvalMode em(model);
  std::vector<Tensor> parts;
  const int64_t n = int64_t(texts.size());
  for (int64_t b = 0; b < n; b += batch) {
    std::vector<std::string> chunk(texts.begin() + b, texts.begin() + std::min(n, b + batch));
    models::TokenBatch tb = pretrain_detail::trim(model.tokenize(chunk));
    parts.push_back(model.encode_text(tb.input_ids, tb.attention_mask));
  }
  return parts.size() == 1 ? parts[0] : cat(parts, 0);
}

// Zero-shot class scores [N, C] (cosine similarities) of images against class prompt ensembles: each class
// is the normalised mean of its prompts' normalised embeddings (one prompt per class works too).
inline Tensor zero_shot_scores(models::DualEncoder& model, const Tensor& pixels,
                               const std::vector<std::vector<std::string>>& class_prompts) {
  MC_CHECK(!class_prompts.empty(), "zero_shot_scores: no classes");
  NoGradGuard ng;
  std::vector<Tensor> cls;
  for (const auto& prompts : class_prompts) {
    MC_CHECK(!prompts.empty(), "zero_shot_scores: a class has no prompt");
    cls.push_back(normalize(mean(normalize(embed_texts(model, prompts), -1), {0}), -1).reshape({1, -1}));
  }
  Tensor w = cat(cls, 0);
  return matmul(normalize(embed_images(model, pixels), -1), w.t());
}

// Zero-shot predictions (argmax class) and accuracy against labels.
struct ZeroShotResult {
  std::vector<int64_t> predictions;
  double accuracy = 0;
};

inline ZeroShotResult zero_shot_classify(models::DualEncoder& model, const Tensor& pixels,
                                         const std::vector<std::vector<std::string>>& class_prompts,
                                         const std::vector<int64_t>& labels) {
  Tensor s = zero_shot_scores(model, pixels, class_prompts);
  ZeroShotResult r;
  r.predictions = argmax_rows(Matrix::from_tensor(s));
  MC_CHECK(labels.size() == r.predictions.size(), "zero_shot_classify: ", labels.size(), " labels for ",
           r.predictions.size(), " images");
  int64_t ok = 0;
  for (size_t i = 0; i < labels.size(); ++i) ok += labels[i] == r.predictions[i];
  r.accuracy = labels.empty() ? 0 : double(ok) / double(labels.size());
  return r;
}

// ---- contrastive pre-training ----

struct PretrainConfig {
  int64_t epochs = 8;
  int64_t batch = 128;
  double lr = 2e-3;
  double weight_decay = 0.1;
  double warmup_fraction = 0.05;       // of all steps
  double min_lr_ratio = 0.02;          // cosine floor, as a fraction of lr
  double grad_clip = 1.0;              // global-norm clipping (0: off)
  bool group_same_content = true;      // equal keys are positives of each other (see the top of this file)
  uint64_t seed = data::kDefaultSeed;  // batch order
  double max_seconds = 0;              // stop early after this long (0: no limit); the schedule is not shortened
  int64_t log_every = 20;              // steps between progress calls (the last step always calls)
};

struct PretrainProgress {
  int64_t epoch = 0, step = 0, total_steps = 0;
  double loss = 0;  // mean loss over the steps since the last call
  double lr = 0, logit_scale = 0, seconds = 0;
};

struct PretrainResult {
  std::vector<double> epoch_loss;  // mean loss of each epoch run
  double first_loss = 0;           // loss of the first step
  double final_loss = 0;           // mean loss of the last epoch run
  int64_t steps = 0;
  double seconds = 0;
  double logit_scale = 0;      // exp(logit_scale) at the end
  bool stopped_early = false;  // max_seconds reached
};

// Contrastive pre-training of `model` on `pairs` (see the top of this file). The model is left in eval mode.
inline PretrainResult pretrain_clip(models::DualEncoder& model, const data::synthetic::PairSet& pairs,
                                    const PretrainConfig& cfg = {},
                                    const std::function<void(const PretrainProgress&)>& progress = {}) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const int64_t n = pairs.size();
  MC_CHECK(n >= 2, "pretrain_clip: need at least 2 pairs, got ", n);
  MC_CHECK(cfg.epochs > 0 && cfg.batch >= 2 && cfg.lr > 0 && cfg.weight_decay >= 0,
           "pretrain_clip: epochs, batch (>= 2), "
           "lr must be positive and weight_decay non-negative");
  MC_CHECK(cfg.warmup_fraction >= 0 && cfg.warmup_fraction < 1, "pretrain_clip: warmup_fraction must be in [0, 1)");
  MC_CHECK(model.has_tokenizer(), "pretrain_clip: model '", model.card().name, "' has no tokenizer vocabulary");
  MC_CHECK(model.logit_scale_param.defined() && model.card().logit_scale.train.mode == "exp",
           "pretrain_clip: the model needs a learnable logit scale used as exp(logit_scale)");
  MC_CHECK(pairs.pixels.defined() && pairs.pixels.size(0) == n && int64_t(pairs.captions.size()) == n &&
               int64_t(pairs.keys.size()) == n,
           "pretrain_clip: pixels, captions and keys must have one entry per pair");

  // Tokens once; content ids for the multi-positive targets.
  const models::TokenBatch tokens = model.tokenize(pairs.captions);
  std::vector<int64_t> content(static_cast<size_t>(n));
  {
    std::unordered_map<std::string, int64_t> ids;
    for (int64_t i = 0; i < n; ++i)
      content[size_t(i)] = ids.emplace(pairs.keys[size_t(i)], int64_t(ids.size())).first->second;
  }

  // Parameters: no weight decay on 0/1-d tensors (biases, norms, the logit scale) and embeddings.
  optim::ParamGroup decay, no_decay;
  for (const auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;
    const bool nd = p.dim() < 2 || name.find("embedding") != std::string::npos || name == "logit_scale";
    (nd ? no_decay : decay).params.push_back(p);
  }
  for (optim::ParamGroup* g : {&decay, &no_decay}) {
    g->lr = cfg.lr;
    g->beta1 = 0.9;
    g->beta2 = 0.98;
    g->eps = 1e-6;
  }
  decay.weight_decay = cfg.weight_decay;
  decay.name = "decay";
  no_decay.name = "no_decay";
  optim::AdamW opt({decay, no_decay});
  std::vector<Tensor> all = decay.params;
  all.insert(all.end(), no_decay.params.begin(), no_decay.params.end());

  const int64_t per_epoch = n / cfg.batch > 0 ? n / cfg.batch : 1;  // drop the last partial batch
  const int64_t total = per_epoch * cfg.epochs;
  optim::Scheduler sched(opt,
                         optim::warmup_cosine(total, int64_t(cfg.warmup_fraction * double(total)), cfg.min_lr_ratio));
  const double max_scale = std::log(100.0);

  model.train();
  PretrainResult res;
  double window = 0;
  int64_t window_n = 0, step = 0;
  for (int64_t epoch = 0; epoch < cfg.epochs && !res.stopped_early; ++epoch) {
    const std::vector<int64_t> order = data::permutation(n, cfg.seed, uint64_t(epoch));
    const int64_t B = std::min(cfg.batch, n);
    double epoch_sum = 0;
    int64_t epoch_n = 0;
    for (int64_t b = 0; b < per_epoch; ++b) {
      std::vector<int64_t> idx(order.begin() + b * B, order.begin() + (b + 1) * B);
      Tensor px = pretrain_detail::rows(pairs.pixels, idx);
      models::TokenBatch tb = pretrain_detail::trim(
          {pretrain_detail::rows(tokens.input_ids, idx), pretrain_detail::rows(tokens.attention_mask, idx)});
      // Targets: uniform over the batch entries with the same content.
      std::vector<float> tgt(size_t(B * B), 0.0f);
      auto same = [&](int64_t i, int64_t j) {
        return cfg.group_same_content ? content[size_t(idx[size_t(i)])] == content[size_t(idx[size_t(j)])] : i == j;
      };
      for (int64_t i = 0; i < B; ++i) {
        int64_t cnt = 0;
        for (int64_t j = 0; j < B; ++j) cnt += same(i, j);
        for (int64_t j = 0; j < B; ++j)
          if (same(i, j)) tgt[size_t(i * B + j)] = 1.0f / float(cnt);
      }
      Tensor target = from_vector(tgt, {B, B});

      Tensor img = model.encode_image(px);
      Tensor txt = model.encode_text(tb.input_ids, tb.attention_mask);
      Tensor logits = model.logits(img, txt);
      Tensor loss = (cross_entropy(logits, target) + cross_entropy(logits.t(), target)) * 0.5;
      opt.zero_grad();
      loss.backward();
      if (cfg.grad_clip > 0) optim::clip_grad_norm_(all, cfg.grad_clip);
      opt.step();
      sched.step();
      {
        NoGradGuard ng;
        if (model.logit_scale_param.item<double>() > max_scale) fill_(model.logit_scale_param, max_scale);
      }
      const double lv = loss.item<double>();
      if (step == 0) res.first_loss = lv;
      ++step;
      epoch_sum += lv;
      ++epoch_n;
      window += lv;
      ++window_n;
      const double secs = std::chrono::duration<double>(clock::now() - t0).count();
      const bool out_of_time = cfg.max_seconds > 0 && secs >= cfg.max_seconds;
      const bool last = step == total || out_of_time;
      if (progress && (last || (cfg.log_every > 0 && step % cfg.log_every == 0))) {
        PretrainProgress p;
        p.epoch = epoch;
        p.step = step;
        p.total_steps = total;
        p.loss = window / double(std::max<int64_t>(1, window_n));
        p.lr = opt.groups()[0].lr;
        p.logit_scale = std::exp(model.logit_scale_param.item<double>());
        p.seconds = secs;
        progress(p);
        window = 0;
        window_n = 0;
      }
      if (out_of_time) {
        res.stopped_early = step < total;
        break;
      }
    }
    res.epoch_loss.push_back(epoch_sum / double(std::max<int64_t>(1, epoch_n)));
  }
  model.eval();
  res.steps = step;
  res.final_loss = res.epoch_loss.empty() ? 0 : res.epoch_loss.back();
  res.logit_scale = std::exp(model.logit_scale_param.item<double>());
  res.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return res;
}

}  // namespace mc::tasks
