// mc/tasks/ban.hpp — the VQA head of the study: a bilinear attention network (BAN, Kim et al., "Bilinear
// Attention Networks", NeurIPS 2018, as in ban-vqa) over a CLIP-like model's image and question features.
// Defines WeightNormLinear, FCNet, BCNet, BiAttention, SimpleClassifier, ModuleList, BanConfig, BanOutput
// and BanHead.
//
// Inputs: image features v [B, Nv, v_dim] (the study passes ONE pooled image embedding, Nv = 1; grids of
// tokens work too) and question token features q [B, Nq, hidden]. With h = hidden, G = glimpses:
//
//   v_att       BiAttention = BCNet(v_dim, h, h, h_out = G, k): v_ = Dropout(dropout_att)(v_net(v)) and
//               q_ = q_net(q), both [.., h*k]; low-rank bilinear logits
//                   L[b,g,i,j] = sum_c h_mat[g,c] * v_[b,i,c] * q_[b,j,c] + h_bias[g]
//               with a weight-normed h_mat (h_mat = h_mat_g * h_mat_v / ||h_mat_v||, one scalar g); rows of
//               v that are all zero get L = -inf (ban-vqa's v_mask, kept: see mask_empty_v); softmax over
//               the Nv*Nq cells of each glimpse gives the attention maps A [B, G, Nv, Nq].
//   per glimpse b_net.g = BCNet(v_dim, h, h, none, k = 1).forward_with_weights:
//                   e[b,c] = sum_ij v_g[b,i,c] A[b,g,i,j] q_g[b,j,c]      (v_g, q_g: its v_net, q_net)
//               then q <- q_prj.g(e) + q (broadcast over tokens), q_prj.g = FCNet([h, h], no activation,
//               dropout_q). Each glimpse's q_net reads the q updated by the glimpses before it.
//   classifier  SimpleClassifier on sum_j q[b,j]: weight-normed Linear(h, 2h) -> ReLU -> Dropout(dropout_cls)
//               -> weight-normed Linear(2h, n_answers); returns logits [B, n_answers].
//
// FCNet(dims, act, p) is, per pair of dims, [Dropout(p) if p > 0] -> weight-normed Linear -> [ReLU if act];
// so with p > 0 the Linear is main.1, else main.0 (ban-vqa's layout). v_net / q_net of every BCNet are
// FCNet([in, h*k], ReLU, dropout_fc).
//
// Dropout placements (all inverted dropout, active in training mode only), ban-vqa's defaults:
//   dropout_fc  = 0.2  input of every BCNet's v_net and q_net (attention and glimpses; ban-vqa dropout[0])
//   dropout_att = 0.5  the projected image features v_ of the attention logits (ban-vqa dropout[1]; the
//                      glimpse BCNets own this Dropout too but forward_with_weights never applies it)
//   dropout_q   = 0.2  input of every q_prj
//   dropout_cls = 0.5  between the classifier's two layers
//
// State dict names are ban-vqa's (torch weight_norm(dim=None) adds <name>_g, a 0-dim scalar, and <name>_v):
//   v_att.logits.{h_bias [1,G,1,1], h_mat_g [], h_mat_v [1,G,1,h*k]},
//   v_att.logits.{v_net,q_net}.main.1.{bias, weight_g, weight_v},
//   b_net.{g}.{v_net,q_net}.main.1.{...}, q_prj.{g}.main.1.{...}, classifier.main.{0,3}.{...}
// in PyTorch's order. The counter / c_prj modules of ban-vqa's bottom-up-feature model are not part of the
// study's head and are not included. Attention heads h_out > 32 (ban-vqa's h_net branch) are not offered.
//
// Masks. ban-vqa masks all-zero v rows with -inf before the softmax; mc keeps that (mask_empty_v = true),
// so a sample whose v rows are ALL zero (e.g. a zero pooled embedding with Nv = 1) gets NaN attention and
// NaN logits, as in the reference. mask_empty_v = false turns the masking off. The optional q_mask
// [B, Nq] (1 / true = real token) is an mc extension (the study passes none): padded tokens get -inf
// attention logits and are left out of the final sum over tokens, so a padded sample gives the same
// logits as the sample truncated to its real tokens. A q_mask row with no real token gives NaN.
#pragma once
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "mc/nn/init.hpp"
#include "mc/nn/layers.hpp"
#include "mc/nn/module.hpp"
#include "mc/ops/elementwise.hpp"
#include "mc/ops/linalg.hpp"
#include "mc/ops/nn.hpp"
#include "mc/ops/reduce.hpp"

namespace mc::tasks {

namespace ban_detail {

// g * v / ||v|| over all elements of v (torch weight_norm with dim=None; g is 0-dim).
inline Tensor weight_norm(const Tensor& g, const Tensor& v) {
  return v * (g / l2_norm(v.reshape({-1}), 0));
}

inline void check_prob(double p, const char* what) {
  MC_CHECK(p >= 0 && p < 1, "BanHead: ", what, " must be in [0, 1), got ", p);
}

}  // namespace ban_detail

// Linear whose weight is reparametrised as weight_g * weight_v / ||weight_v|| with ONE scalar weight_g
// (torch.nn.utils.weight_norm(nn.Linear(in, out), dim=None)). Parameters, in PyTorch's order: bias [out]
// (when present), weight_g [], weight_v [out, in]. Fresh weights: nn.Linear's initialisation for weight_v
// and bias, weight_g = ||weight_v|| (so the effective weight starts as weight_v).
class WeightNormLinear : public nn::UnaryModule {
 public:
  Tensor bias, weight_g, weight_v;
  WeightNormLinear(int64_t in, int64_t out, bool with_bias = true, Generator* gen = nullptr) {
    MC_CHECK(in > 0 && out > 0, "WeightNormLinear: sizes must be positive (", in, ", ", out, ")");
    Tensor v = empty({out, in});
    nn::init::kaiming_uniform_(v, std::sqrt(5.0), gen);
    if (with_bias) {
      bias = register_parameter("bias", empty({out}));
      const double bound = 1.0 / std::sqrt(double(in));
      nn::init::uniform_(bias, -bound, bound, gen);
    }
    Tensor g;
    {
      NoGradGuard ng;
      g = l2_norm(v.reshape({-1}), 0).contiguous();
    }
    weight_g = register_parameter("weight_g", g);
    weight_v = register_parameter("weight_v", v);
  }
  int64_t in_features() const { return weight_v.size(1); }
  int64_t out_features() const { return weight_v.size(0); }
  // The effective weight [out, in] (differentiable in weight_g and weight_v).
  Tensor weight() const { return ban_detail::weight_norm(weight_g, weight_v); }
  Tensor forward(const Tensor& x) override {
    MC_CHECK(x.dim() >= 1 && x.size(-1) == in_features(), "WeightNormLinear: input ", shape_str(x.shape()),
             " does not end in ", in_features());
    return linear(x, weight(), bias);
  }
};

// Children named "0", "1", ... (torch.nn.ModuleList); no forward.
template <class M>
class ModuleList : public nn::Module {
 public:
  void push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(items_.size()), m);
    items_.push_back(std::move(m));
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) { return *items_.at(i); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

// ban-vqa's FCNet: per consecutive pair of dims, [Dropout(p) if p > 0] -> WeightNormLinear -> [ReLU].
class FCNet : public nn::UnaryModule {
 public:
  std::shared_ptr<nn::Sequential> main;
  FCNet(const std::vector<int64_t>& dims, bool relu_act, double dropout, Generator* gen = nullptr) {
    MC_CHECK(dims.size() >= 2, "FCNet: needs at least two dims, got ", dims.size());
    MC_CHECK(dropout >= 0 && dropout < 1, "FCNet: dropout must be in [0, 1), got ", dropout);
    main = register_module("main", std::make_shared<nn::Sequential>());
    for (size_t i = 0; i + 1 < dims.size(); ++i) {
      if (dropout > 0) main->push_back(std::make_shared<nn::Dropout>(dropout));
      main->push_back(std::make_shared<WeightNormLinear>(dims[i], dims[i + 1], true, gen));
      if (relu_act) main->push_back(nn::ReLU());
    }
  }
  Tensor forward(const Tensor& x) override { return main->forward(x); }
};

// ban-vqa's BCNet: v_net / q_net = FCNet([dim, h_dim*k], ReLU, dropout_fc). With h_out > 0 (<= 32) it owns
// the low-rank bilinear attention weights h_bias [1, h_out, 1, 1] and the weight-normed h_mat
// (h_mat_g [], h_mat_v [1, h_out, 1, h_dim*k]); with h_out = 0 (ban-vqa's None) it only pools with given
// weights. Fresh weights: h_mat_v, h_bias ~ N(0, 1), h_mat_g = ||h_mat_v||.
class BCNet : public nn::Module {
 public:
  Tensor h_bias, h_mat_g, h_mat_v;  // undefined when h_out = 0
  std::shared_ptr<FCNet> v_net, q_net;
  int64_t h_dim, h_out, k;
  double dropout_att;

  BCNet(int64_t v_dim, int64_t q_dim, int64_t h_dim_, int64_t h_out_, int64_t k_, double dropout_fc,
        double dropout_att_, Generator* gen = nullptr)
      : h_dim(h_dim_), h_out(h_out_), k(k_), dropout_att(dropout_att_) {
    MC_CHECK(v_dim > 0 && q_dim > 0 && h_dim > 0 && k > 0, "BCNet: sizes must be positive (v_dim ", v_dim,
             ", q_dim ", q_dim, ", h_dim ", h_dim, ", k ", k, ")");
    MC_CHECK(h_out >= 0 && h_out <= 32, "BCNet: h_out must be in [0, 32] (0: no attention weights), got ", h_out);
    MC_CHECK(dropout_att >= 0 && dropout_att < 1, "BCNet: dropout must be in [0, 1), got ", dropout_att);
    if (h_out > 0) {
      h_bias = register_parameter("h_bias", empty({1, h_out, 1, 1}));
      nn::init::normal_(h_bias, 0, 1, gen);
      Tensor v = empty({1, h_out, 1, h_dim * k});
      nn::init::normal_(v, 0, 1, gen);
      Tensor g;
      {
        NoGradGuard ng;
        g = l2_norm(v.reshape({-1}), 0).contiguous();
      }
      h_mat_g = register_parameter("h_mat_g", g);
      h_mat_v = register_parameter("h_mat_v", v);
    }
    const std::vector<int64_t> v_dims{v_dim, h_dim * k}, q_dims{q_dim, h_dim * k};
    v_net = register_module("v_net", std::make_shared<FCNet>(v_dims, true, dropout_fc, gen));
    q_net = register_module("q_net", std::make_shared<FCNet>(q_dims, true, dropout_fc, gen));
  }

  // The effective h_mat [1, h_out, 1, h_dim*k].
  Tensor h_mat() const {
    MC_CHECK(h_out > 0, "BCNet.h_mat: this BCNet has no attention weights (h_out = 0)");
    return ban_detail::weight_norm(h_mat_g, h_mat_v);
  }

  // Bilinear attention logits [B, h_out, Nv, Nq] of v [B, Nv, v_dim] and q [B, Nq, q_dim]:
  // one batched product of (v_ * h_mat) [B, h_out*Nv, h_dim*k] with q_^T.
  Tensor forward(const Tensor& v, const Tensor& q) {
    MC_CHECK(h_out > 0, "BCNet.forward: this BCNet has no attention weights (h_out = 0)");
    check_pair(v, q, "BCNet.forward");
    const int64_t B = v.size(0), Nv = v.size(1), Nq = q.size(1), D = h_dim * k;
    Tensor v_ = dropout(v_net->forward(v), dropout_att, is_training());  // [B, Nv, D]
    Tensor q_ = q_net->forward(q);                                         // [B, Nq, D]
    Tensor hv = (v_.unsqueeze(1) * h_mat()).reshape({B, h_out * Nv, D});   // [B, G*Nv, D]
    Tensor logits = matmul(hv, q_.transpose(1, 2)).reshape({B, h_out, Nv, Nq});
    return logits + h_bias;
  }

  // e[b, c] = sum_ij v_[b,i,c] w[b,i,j] q_[b,j,c] with v_ = v_net(v), q_ = q_net(q), w [B, Nv, Nq]; for k > 1
  // sums groups of k consecutive channels (ban-vqa's AvgPool1d(k) * k). Returns [B, h_dim].
  Tensor forward_with_weights(const Tensor& v, const Tensor& q, const Tensor& w) {
    check_pair(v, q, "BCNet.forward_with_weights");
    const int64_t B = v.size(0);
    MC_CHECK(w.dim() == 3 && w.size(0) == B && w.size(1) == v.size(1) && w.size(2) == q.size(1),
             "BCNet.forward_with_weights: weights ", shape_str(w.shape()), " must be [B, Nv, Nq] = [", B, ", ",
             v.size(1), ", ", q.size(1), "]");
    Tensor v_ = v_net->forward(v);                           // [B, Nv, D]
    Tensor q_ = q_net->forward(q);                           // [B, Nq, D]
    Tensor wv = matmul(w.transpose(1, 2), v_);               // [B, Nq, D]: sum_i w[b,i,j] v_[b,i,c]
    Tensor e = sum(wv * q_, {1});                            // [B, D]
    if (k > 1) e = sum(e.reshape({B, h_dim, k}), {2});
    return e;
  }

 private:
  static void check_pair(const Tensor& v, const Tensor& q, const char* what) {
    MC_CHECK(v.dim() == 3 && q.dim() == 3 && v.size(0) == q.size(0), what, ": expects v [B, Nv, v_dim] and q [B, Nq, ",
             "q_dim] with one B, got ", shape_str(v.shape()), " and ", shape_str(q.shape()));
  }
};

// Attention maps and their (masked) logits, both [B, G, Nv, Nq].
struct BiAttentionOutput {
  Tensor attention, logits;
};

// ban-vqa's BiAttention: child "logits" is the BCNet(v_dim, q_dim, h, glimpses, k) with weight-normed h_mat.
class BiAttention : public nn::Module {
 public:
  std::shared_ptr<BCNet> logits;
  int64_t glimpses;
  bool mask_empty_v;
  BiAttention(int64_t v_dim, int64_t q_dim, int64_t h_dim, int64_t glimpses_, int64_t k, double dropout_fc,
              double dropout_att, bool mask_empty_v_ = true, Generator* gen = nullptr)
      : glimpses(glimpses_), mask_empty_v(mask_empty_v_) {
    MC_CHECK(glimpses >= 1 && glimpses <= 32, "BiAttention: glimpses must be in [1, 32], got ", glimpses);
    logits = register_module("logits", std::make_shared<BCNet>(v_dim, q_dim, h_dim, glimpses, k, dropout_fc,
                                                               dropout_att, gen));
  }

  // v [B, Nv, v_dim], q [B, Nq, q_dim], q_mask optional [B, Nq] (nonzero = real token).
  BiAttentionOutput forward(const Tensor& v, const Tensor& q, const Tensor& q_mask = {}) {
    const int64_t B = v.size(0), Nv = v.size(1), Nq = q.size(1);
    Tensor l = logits->forward(v, q);  // [B, G, Nv, Nq]
    Tensor ninf = full({}, -std::numeric_limits<double>::infinity(), l.dtype(), l.device());
    if (mask_empty_v) {
      Tensor empty_rows;
      {
        NoGradGuard ng;
        empty_rows = (sum(abs(v), {2}) == 0.0).reshape({B, 1, Nv, 1});
      }
      l = where(empty_rows, ninf, l);
    }
    if (q_mask.defined()) {
      MC_CHECK(q_mask.dim() == 2 && q_mask.size(0) == B && q_mask.size(1) == Nq,
               "BiAttention: q_mask must be [B, Nq] = [", B, ", ", Nq, "], got ", shape_str(q_mask.shape()));
      Tensor pad;
      {
        NoGradGuard ng;
        pad = (q_mask == 0.0).reshape({B, 1, 1, Nq});
      }
      l = where(pad, ninf, l);
    }
    Tensor p = softmax(l.reshape({B, glimpses, Nv * Nq}), -1).reshape({B, glimpses, Nv, Nq});
    return {p, l};
  }
};

// ban-vqa's SimpleClassifier: main.0 WeightNormLinear(in, hid) -> main.1 ReLU -> main.2 Dropout(p) ->
// main.3 WeightNormLinear(hid, out).
class SimpleClassifier : public nn::UnaryModule {
 public:
  std::shared_ptr<nn::Sequential> main;
  SimpleClassifier(int64_t in, int64_t hid, int64_t out, double dropout, Generator* gen = nullptr) {
    main = register_module("main", std::make_shared<nn::Sequential>());
    main->push_back(std::make_shared<WeightNormLinear>(in, hid, true, gen));
    main->push_back(nn::ReLU());
    main->push_back(std::make_shared<nn::Dropout>(dropout));
    main->push_back(std::make_shared<WeightNormLinear>(hid, out, true, gen));
  }
  Tensor forward(const Tensor& x) override { return main->forward(x); }
};

struct BanConfig {
  int64_t v_dim = 0;      // image feature size (CLIP 512, BiomedCLIP 512, PMC-CLIP 768, CXR-CLIP 2048)
  int64_t q_dim = 0;      // question token feature size; must equal hidden (q is updated residually)
  int64_t hidden = 0;     // h: 512 (CLIP) or 768 (the BERT text towers)
  int64_t glimpses = 4;   // G, in [1, 32]
  int64_t n_answers = 0;  // answer vocabulary size
  int64_t k = 3;          // rank multiplier of the attention's low-rank bilinear pooling
  double dropout_fc = 0.2;    // input of every BCNet's v_net / q_net
  double dropout_att = 0.5;   // projected image features of the attention logits
  double dropout_q = 0.2;     // input of every q_prj
  double dropout_cls = 0.5;   // inside the classifier
  bool mask_empty_v = true;   // -inf attention logits for all-zero v rows (ban-vqa's v_mask)
};

struct BanOutput {
  Tensor logits;             // [B, n_answers]
  Tensor attention;          // [B, G, Nv, Nq], softmax over Nv*Nq per glimpse
  Tensor attention_logits;   // [B, G, Nv, Nq], after masking (-inf where masked)
};

class BanHead : public nn::Module {
 public:
  BanConfig config;
  std::shared_ptr<BiAttention> v_att;
  std::shared_ptr<ModuleList<BCNet>> b_net;
  std::shared_ptr<ModuleList<FCNet>> q_prj;
  std::shared_ptr<SimpleClassifier> classifier;

  explicit BanHead(const BanConfig& c, Generator* gen = nullptr) : config(c) {
    MC_CHECK(c.v_dim > 0 && c.q_dim > 0 && c.hidden > 0 && c.n_answers > 0 && c.k > 0,
             "BanHead: config sizes must be positive (v_dim ", c.v_dim, ", q_dim ", c.q_dim, ", hidden ", c.hidden,
             ", n_answers ", c.n_answers, ", k ", c.k, ")");
    MC_CHECK(c.q_dim == c.hidden, "BanHead: q_dim (", c.q_dim, ") must equal hidden (", c.hidden,
             "): the glimpses add hidden-sized projections to the question tokens");
    MC_CHECK(c.glimpses >= 1 && c.glimpses <= 32, "BanHead: glimpses must be in [1, 32], got ", c.glimpses);
    ban_detail::check_prob(c.dropout_fc, "dropout_fc");
    ban_detail::check_prob(c.dropout_att, "dropout_att");
    ban_detail::check_prob(c.dropout_q, "dropout_q");
    ban_detail::check_prob(c.dropout_cls, "dropout_cls");
    v_att = register_module("v_att", std::make_shared<BiAttention>(c.v_dim, c.q_dim, c.hidden, c.glimpses, c.k,
                                                                   c.dropout_fc, c.dropout_att, c.mask_empty_v, gen));
    b_net = register_module("b_net", std::make_shared<ModuleList<BCNet>>());
    q_prj = register_module("q_prj", std::make_shared<ModuleList<FCNet>>());
    for (int64_t g = 0; g < c.glimpses; ++g)
      b_net->push_back(std::make_shared<BCNet>(c.v_dim, c.hidden, c.hidden, 0, 1, c.dropout_fc, c.dropout_att, gen));
    for (int64_t g = 0; g < c.glimpses; ++g)
      q_prj->push_back(std::make_shared<FCNet>(std::vector<int64_t>{c.hidden, c.hidden}, false, c.dropout_q, gen));
    classifier = register_module("classifier", std::make_shared<SimpleClassifier>(c.hidden, 2 * c.hidden, c.n_answers,
                                                                                  c.dropout_cls, gen));
  }

  // v [B, Nv, v_dim], q [B, Nq, q_dim] (one floating dtype), q_mask optional [B, Nq] (nonzero = real token).
  BanOutput forward_all(const Tensor& v, const Tensor& q, const Tensor& q_mask = {}) {
    check_inputs(v, q, q_mask);
    const int64_t B = q.size(0), Nq = q.size(1);
    BiAttentionOutput att = v_att->forward(v, q, q_mask);
    Tensor qe = q;
    for (int64_t g = 0; g < config.glimpses; ++g) {
      Tensor e = (*b_net)[size_t(g)].forward_with_weights(v, qe, att.attention.select(1, g));  // [B, h]
      qe = (*q_prj)[size_t(g)].forward(e.unsqueeze(1)) + qe;                                  // [B, Nq, h]
    }
    if (q_mask.defined()) {
      Tensor keep;
      {
        NoGradGuard ng;
        keep = mc::detail::cast(q_mask != 0.0, qe.dtype()).reshape({B, Nq, 1});
      }
      qe = qe * keep;
    }
    last_attention_ = att.attention.detach();
    return {classifier->forward(sum(qe, {1})), att.attention, att.logits};
  }

  // Answer logits [B, n_answers].
  Tensor forward(const Tensor& v, const Tensor& q, const Tensor& q_mask = {}) {
    return forward_all(v, q, q_mask).logits;
  }

  // The attention maps [B, G, Nv, Nq] of the latest forward (detached); undefined before the first.
  const Tensor& last_attention() const { return last_attention_; }

 private:
  void check_inputs(const Tensor& v, const Tensor& q, const Tensor& q_mask) const {
    MC_CHECK(v.defined() && q.defined(), "BanHead: v and q must be defined");
    MC_CHECK(v.dim() == 3 && v.size(2) == config.v_dim && v.size(1) > 0,
             "BanHead: v must be [B, Nv, v_dim] with v_dim ", config.v_dim, " and Nv > 0, got ", shape_str(v.shape()));
    MC_CHECK(q.dim() == 3 && q.size(2) == config.q_dim && q.size(1) > 0,
             "BanHead: q must be [B, Nq, q_dim] with q_dim ", config.q_dim, " and Nq > 0, got ", shape_str(q.shape()));
    MC_CHECK(v.size(0) == q.size(0), "BanHead: batch sizes of v ", shape_str(v.shape()), " and q ",
             shape_str(q.shape()), " differ");
    MC_CHECK(is_floating(v.dtype()) && v.dtype() == q.dtype(), "BanHead: v and q must share a floating dtype (",
             dtype_name(v.dtype()), ", ", dtype_name(q.dtype()), ")");
    const DType pdt = v_att->logits->h_bias.dtype();
    MC_CHECK(v.dtype() == pdt, "BanHead: inputs are ", dtype_name(v.dtype()), " but the parameters are ",
             dtype_name(pdt));
    MC_CHECK(!q_mask.defined() || (q_mask.dim() == 2 && q_mask.size(0) == q.size(0) && q_mask.size(1) == q.size(1)),
             "BanHead: q_mask must be [B, Nq] = [", q.size(0), ", ", q.size(1), "], got ",
             q_mask.defined() ? shape_str(q_mask.shape()) : std::string());
  }

  Tensor last_attention_;
};

}  // namespace mc::tasks
