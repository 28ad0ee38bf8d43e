// CUDA fused attention against the CPU: forward (output and log-sum-exp) and backward (q, k, v gradients)
// for sequence lengths 50 / 77 / 197 / 256 (and 1, 7, 1000), head dims 64, 128 and odd ones, causal masks
// (aligned bottom-right when the lengths differ), key padding masks (including a fully padded sequence:
// zero output and zero gradients), cross-attention lengths, custom scales, the strided q / k / v views of a
// packed QKV projection, bf16 / f16 and f64.
#include "cuda_test.hpp"

using namespace mct;

namespace {

struct Att {
  int64_t B, H, Lq, Lk, D;
  bool causal, mask, packed;
};

std::string att_name(const Att& a) {
  std::ostringstream o;
  o << "attention B" << a.B << " H" << a.H << " Lq" << a.Lq << " Lk" << a.Lk << " D" << a.D
    << (a.causal ? " causal" : "") << (a.mask ? " key-padding" : "") << (a.packed ? " packed-qkv" : "");
  return o.str();
}

// Key padding: sequence b keeps its first len_b keys; the last sequence of a batch of 3+ is fully padded.
Tensor padding_mask(int64_t B, int64_t Lk) {
  std::vector<bool> m(size_t(B * Lk));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = (B >= 3 && b == B - 1) ? 0 : std::max<int64_t>(1, Lk - (b * 37 + 5) % Lk);
    for (int64_t j = 0; j < Lk; ++j) m[size_t(b * Lk + j)] = j >= len;
  }
  return from_vector(m, {B, Lk});
}

// Inputs: q, k, v (or one packed [B, L, 3, H, D] tensor when Lq == Lk and packed), then the mask.
std::vector<Tensor> att_inputs(const Att& a, DType dt) {
  std::vector<Tensor> in;
  if (a.packed) in.push_back(randn_h({a.B, a.Lq, 3, a.H, a.D}, dt));
  else in = {randn_h({a.B, a.H, a.Lq, a.D}, dt), randn_h({a.B, a.H, a.Lk, a.D}, dt), randn_h({a.B, a.H, a.Lk, a.D}, dt)};
  if (a.mask) in.push_back(padding_mask(a.B, a.Lk));
  return in;
}

Tensor run_att(const Att& a, const std::vector<Tensor>& in, float scale = 0) {
  Tensor q, k, v;
  size_t next;
  if (a.packed) {
    q = in[0].select(2, 0).permute({0, 2, 1, 3});
    k = in[0].select(2, 1).permute({0, 2, 1, 3});
    v = in[0].select(2, 2).permute({0, 2, 1, 3});
    next = 1;
  } else {
    q = in[0];
    k = in[1];
    v = in[2];
    next = 3;
  }
  AttentionParams p = attention_params(a.D, a.causal, a.mask ? in[next] : Tensor());
  if (scale > 0) p.scale = scale;
  return scaled_dot_product_attention(q, k, v, p);
}

Opts att_opts(DType dt) {
  // f32: the online softmax rescales in another order than the CPU; bf16 / f16: P is rounded to the input
  // dtype before the P.V product on tensor cores (as flash attention does), so the outputs differ by about
  // one rounding of P.
  switch (dt) {
    case DType::F32: return grads(2e-5, 5e-5);
    case DType::BF16: return grads(2e-2, 3e-2);
    case DType::F16: return grads(4e-3, 6e-3);
    default: return grads();
  }
}

}  // namespace

TEST_CASE("attention: ViT / CLIP / BERT lengths, masks, packed views", "[attention]") {
  std::vector<Att> cases;
  for (int64_t L : {50, 77, 197, 256})
    for (int64_t D : {64, 33})
      for (int f = 0; f < 4; ++f) cases.push_back({2, 3, L, L, D, (f & 1) != 0, (f & 2) != 0, f == 0});
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Att& a : cases) {
      check_same(att_name(a) + " " + dtype_name(dt), att_inputs(a, dt),
                 one([&](const std::vector<Tensor>& in) { return run_att(a, in); }), att_opts(dt));
    }
  }
}

TEST_CASE("attention: odd lengths and head dims, cross attention, fully padded sequences", "[attention]") {
  const std::vector<Att> cases = {
      {1, 1, 1, 1, 64, false, false, false},   {2, 2, 7, 7, 64, true, false, false},
      {1, 2, 1000, 1000, 64, false, false, false}, {2, 3, 197, 197, 128, false, false, false},
      {2, 3, 77, 77, 128, true, true, false},  {2, 2, 50, 50, 8, false, false, false},
      {2, 2, 50, 50, 80, false, true, false},  {2, 2, 129, 129, 96, true, false, false},
      {2, 3, 50, 77, 64, false, false, false}, {2, 3, 50, 77, 64, true, false, false},  // bottom-right causal
      {2, 3, 77, 50, 64, true, false, false},  // queries that see no key: zero rows
      {3, 2, 65, 65, 64, false, true, false},  // the third sequence is fully padded
      {4, 2, 33, 300, 33, false, true, false}, {2, 12, 50, 50, 64, false, false, true},
  };
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const Att& a : cases) {
      Opts o = att_opts(dt);
      // One key: the softmax is identically 1, so dq and dk are zero in exact arithmetic and both devices
      // return rounding noise (~1e-8) of unrelated size; only dv is compared.
      if (a.Lk == 1 && !a.packed) o.grad_inputs = {2};
      check_same(att_name(a) + " " + dtype_name(dt), att_inputs(a, dt),
                 one([&](const std::vector<Tensor>& in) { return run_att(a, in); }), o);
    }
  }
  Att a{2, 3, 77, 77, 64, true, false, false};
  check_same(att_name(a) + " scale 0.3", att_inputs(a, DType::F32),
             one([&](const std::vector<Tensor>& in) { return run_att(a, in, 0.3f); }), att_opts(DType::F32));
}

TEST_CASE("attention: the log-sum-exp and the raw backward primitive", "[attention]") {
  for (bool causal : {false, true}) {
    const int64_t B = 2, H = 3, L = 197, D = 64;
    Tensor q = randn_h({B, H, L, D}), k = randn_h({B, H, L, D}), v = randn_h({B, H, L, D}), go = randn_h({B, H, L, D});
    Tensor mask = padding_mask(B, L);
    auto run = [&](Device dev) {
      AttentionParams p = attention_params(D, causal, mask.to(dev));
      Tensor qd = q.to(dev), kd = k.to(dev), vd = v.to(dev), god = go.to(dev);
      Tensor out = Tensor::empty({B, H, L, D}, DType::F32, dev), lse = Tensor::empty({B, H, L}, DType::F32, dev);
      if (dev.is_cuda()) poison({nbytes(out), nbytes(lse)});
      backend(dev).attention(out, lse, qd, kd, vd, p);
      Tensor gq = empty_like(qd), gk = empty_like(kd), gv = empty_like(vd);
      if (dev.is_cuda()) poison({nbytes(gq), nbytes(gk), nbytes(gv)});
      backend(dev).attention_backward(gq, gk, gv, god, qd, kd, vd, out, lse, p);
      return std::vector<Tensor>{out.to(host()), lse.to(host()), gq.to(host()), gk.to(host()), gv.to(host())};
    };
    auto c = run(host()), g = run(gpu());
    const char* names[] = {"out", "lse", "gq", "gk", "gv"};
    for (int i = 0; i < 5; ++i)
      compare(std::string("attention primitive ") + (causal ? "causal " : "") + names[i], c[size_t(i)], g[size_t(i)],
              i < 2 ? 2e-5 : 5e-5);
  }
}

TEST_CASE("attention in f64", "[attention][f64]") {
  const std::vector<Att> cases = {{2, 2, 77, 77, 64, true, true, false}, {2, 2, 50, 77, 33, false, false, false}};
  for (const Att& a : cases)
    check_same(att_name(a) + " f64", att_inputs(a, DType::F64),
               one([&](const std::vector<Tensor>& in) { return run_att(a, in); }), grads());
}
