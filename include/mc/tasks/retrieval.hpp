// mc/tasks/retrieval.hpp — image-text retrieval on ROCO: contrastive fine-tuning and recall@k.
//
// Loss (training and the validation / test loss): symmetric InfoNCE over a batch of B image-caption pairs,
//   logits = s * normalize(image embeddings) @ normalize(caption embeddings)^T   [B, B]
//   loss   = (CE(logits, arange B) + CE(logits^T, arange B)) / 2
// with s the card's training logit scale (CLIP, PMC-CLIP, CXR-CLIP: exp(logit_scale), learnt; BiomedCLIP: a
// fixed 85.2323). Evaluation batches are the eval_batch_size chunks of the split in data order. (The
// paper's CXR-CLIP code applies a softmax before the cross-entropy; that is not copied.)
//
// Metrics over the WHOLE split (every image against every caption of the split, the paper's protocol, and
// the reverse): r@k (image -> text, k in retrieval.ks: a hit when a caption string equal to the image's own
// caption is among the k most similar captions; ties by caption order), t2i_r@k (text -> image, a hit when
// an image whose caption equals the query is among the top k), mean_rank / median_rank and t2i_mean_rank /
// t2i_median_rank (1-based rank of the best correct item), count. Fractions, not percentages.
// predictions.csv: index, id, subset, rank (image -> text), top1 (the id of the best caption's sample),
// t2i_rank.
// Captions are tokenised once per split by the model's tokenizer (truncated to its context length); each
// batch is cut to its longest caption where padding does not change the embeddings.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "mc/data/roco.hpp"
#include "mc/ops/nn.hpp"
#include "mc/tasks/experiment.hpp"
#include "mc/tasks/metrics.hpp"
#include "mc/tasks/task.hpp"

namespace mc::tasks {

// Symmetric InfoNCE of matching rows of img [B, D] and txt [B, D] under the encoder's training scale.
inline Tensor symmetric_infonce(const models::DualEncoder& enc, const Tensor& img, const Tensor& txt) {
  Tensor logits = enc.logits(img, txt);
  Tensor target = arange(img.size(0), DType::I64, img.device());
  return (cross_entropy(logits, target) + cross_entropy(logits.t(), target)) * 0.5;
}

class RetrievalTask : public Task {
 public:
  struct Batch {
    Tensor images, ids, mask;
  };

  // `e` must be resolved; the encoder is on `device`. Zero-shot runs read the test split only.
  RetrievalTask(const Experiment& e, std::shared_ptr<models::DualEncoder> enc, Device device)
      : exp_(e), enc_(std::move(enc)), device_(device),
        images_(task_util::preprocess_for(enc_->card(), e.data.image_size), e.data.cache_images) {
    const DataConfig& d = e.data;
    MC_CHECK(enc_->has_tokenizer(), e.source, ": the model has no tokenizer vocabulary, needed for the captions");
    data::RocoOptions o;
    o.images_dir = d.images_dir;
    o.dlinks = d.dlinks;
    o.images = task_util::image_check(d.skip_missing);
    const bool zero_shot = e.strategy.name == "zeroshot";
    const std::string splits[3] = {zero_shot ? "" : d.train_split, zero_shot ? "" : d.val_split, d.test_split};
    const int64_t max[3] = {d.max_train, d.max_val, d.max_test};
    for (int s = 0; s < 3; ++s) {
      if (splits[s].empty()) continue;
      sets_[s] = data::RocoDataset::open_split(d.path, splits[s], d.data_type, o);
      idx_[s] = task_util::pick(sets_[s].size(), max[s], e.seed, uint64_t(201 + s));
      std::vector<std::string> captions;
      for (int64_t i : idx_[s]) captions.push_back(sets_[s].item(i).caption);
      if (!captions.empty()) tokens_[s] = enc_->tokenize(captions);
    }
  }

  int64_t size(const std::string& split) const override {
    return int64_t(idx_[task_util::split_slot(split, "retrieval")].size());
  }

  std::any make_batch(const std::vector<int64_t>& idx) const override { return batch_of(0, idx); }

  Tensor loss(const std::any& batch) override {
    const Batch& b = std::any_cast<const Batch&>(batch);
    return symmetric_infonce(*enc_, enc_->encode_image(b.images.to(device_)),
                             enc_->encode_text(b.ids.to(device_), b.mask.to(device_)));
  }

  Evaluation evaluate(const std::string& split, bool with_predictions) override {
    NoGradGuard ng;
    const int s = task_util::split_slot(split, "retrieval");
    Evaluation ev;
    ev.count = size(split);
    if (ev.count == 0) return ev;
    std::vector<Tensor> img_parts, txt_parts;
    double loss_sum = 0;
    for (const auto& chunk : task_util::chunks(task_util::iota(ev.count), exp_.train.eval_batch_size)) {
      Batch b = batch_of(s, chunk);
      Tensor img = enc_->encode_image(b.images.to(device_)).to(DType::F32);
      Tensor txt = enc_->encode_text(b.ids.to(device_), b.mask.to(device_)).to(DType::F32);
      loss_sum += symmetric_infonce(*enc_, img, txt).to(Device::cpu()).item<double>() * double(chunk.size());
      img_parts.push_back(normalize(img, -1));
      txt_parts.push_back(normalize(txt, -1));
    }
    ev.loss = loss_sum / double(ev.count);
    const Tensor sim = matmul(cat(img_parts, 0), cat(txt_parts, 0).t()).to(Device::cpu()).contiguous();  // [N, N]

    std::vector<std::string> captions;
    for (int64_t i : idx_[s]) captions.push_back(sets_[s].item(i).caption);
    const GroundTruth gt = gt_from_keys(captions, captions);  // symmetric: equal caption strings
    const std::vector<int64_t>& ks = exp_.retrieval.ks;
    const RetrievalMetrics i2t = recall_at_k(sim, gt, ks), t2i = recall_at_k_t2i(sim, gt, ks);
    ojson& m = ev.metrics;
    for (size_t k = 0; k < ks.size(); ++k) m["r@" + std::to_string(ks[k])] = i2t.recall[k];
    for (size_t k = 0; k < ks.size(); ++k) m["t2i_r@" + std::to_string(ks[k])] = t2i.recall[k];
    m["mean_rank"] = i2t.mean_rank;
    m["median_rank"] = i2t.median_rank;
    m["t2i_mean_rank"] = t2i.mean_rank;
    m["t2i_median_rank"] = t2i.median_rank;
    m["count"] = ev.count;
    if (with_predictions) {
      ev.header = {"index", "id", "subset", "rank", "top1", "t2i_rank"};
      const float* p = sim.data<float>();
      for (int64_t i = 0; i < ev.count; ++i) {
        int64_t top = 0;
        for (int64_t j = 1; j < ev.count; ++j)
          if (p[i * ev.count + j] > p[i * ev.count + top]) top = j;
        const data::RocoItem& it = sets_[s].item(idx_[s][size_t(i)]);
        ev.rows.push_back({std::to_string(i), it.id, it.subset, std::to_string(i2t.ranks[size_t(i)]),
                           sets_[s].item(idx_[s][size_t(top)]).id, std::to_string(t2i.ranks[size_t(i)])});
      }
    }
    return ev;
  }

  ojson describe() const override {
    ojson j;
    j["data_type"] = exp_.data.data_type;
    j["train"] = size("train");
    j["val"] = size("val");
    j["test"] = size("test");
    int64_t skipped = 0, empty = 0;
    for (const data::RocoDataset& ds : sets_) skipped += ds.skipped(), empty += ds.empty_captions();
    j["skipped_missing_images"] = skipped;
    j["empty_captions"] = empty;
    j["image_size"] = exp_.data.image_size;
    return j;
  }

 private:
  Batch batch_of(int s, const std::vector<int64_t>& positions) const {
    std::vector<std::string> paths;
    for (int64_t p : positions) paths.push_back(sets_[s].item(idx_[s][size_t(p)]).image_path);
    models::TokenBatch t{task_util::take_rows(tokens_[s].input_ids, positions),
                         task_util::take_rows(tokens_[s].attention_mask, positions)};
    if (task_util::padding_is_inert(enc_->card())) t = task_util::trim_padding(t);
    return {images_.batch(paths), t.input_ids, t.attention_mask};
  }

  Experiment exp_;
  std::shared_ptr<models::DualEncoder> enc_;
  Device device_;
  task_util::ImageCache images_;
  data::RocoDataset sets_[3];       // train, val, test (empty when not read)
  std::vector<int64_t> idx_[3];     // the samples used of each
  models::TokenBatch tokens_[3];    // their captions, tokenised, in idx_ order
};

}  // namespace mc::tasks
