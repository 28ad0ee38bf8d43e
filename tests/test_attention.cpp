// Tests for scaled_dot_product_attention (mc/ops/attention.hpp) and the CPU kernels (mc/cpu/attention.hpp):
// forward / lse / gradients against PyTorch values (tools/ref_attention.py), against a plain-loop double
// reference on model-sized shapes, strided and half-precision inputs, gradcheck, and argument errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "mc/cpu/attention.hpp"  // kernel internals (tuning knobs, direct kernel calls)
#include "mc/mc.hpp"

namespace {

using namespace mc;
const double INF = std::numeric_limits<double>::infinity();

// Element i (row-major) is amp * sin(a * i + b), as in tools/ref_attention.py.
Tensor fill(const Shape& shape, double a, double b, double amp = 1.0, DType dt = DType::F32) {
  std::vector<float> v(size_t(numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(amp * std::sin(a * double(i) + b));
  Tensor t = from_vector(v, shape);
  return dt == DType::F32 ? t : t.to(dt);
}

Tensor bool_mask(const std::vector<std::vector<int>>& rows) {
  std::vector<bool> v;
  for (const auto& r : rows)
    for (int x : r) v.push_back(x != 0);
  return from_vector(v, {int64_t(rows.size()), int64_t(rows[0].size())});
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

void check_near(const std::vector<double>& got, const std::vector<double>& want, double tol,
                const std::string& what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::isinf(want[i]) ? got[i] == want[i] : std::fabs(got[i] - want[i]) <= tol;
    if (!ok && bad++ < 5) UNSCOPED_INFO(what << "[" << i << "] = " << got[i] << ", expected " << want[i]);
  }
  CHECK(bad == 0);
}

// Plain-loop double-precision attention (and its gradients when g is given); rows that see no key give 0.
struct Ref {
  std::vector<double> out, lse, gq, gk, gv;
};

Ref reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p, const Tensor& g = {}) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2), D = q.size(3);
  const std::vector<double> Q = values(q), K = values(k), V = values(v);
  std::vector<double> G = g.defined() ? values(g) : std::vector<double>();
  std::vector<uint8_t> M = p.key_padding_mask.defined() ? p.key_padding_mask.to_vector<uint8_t>()
                                                        : std::vector<uint8_t>(size_t(B * Lk), 0);
  Ref r;
  r.out.assign(size_t(B * H * Lq * D), 0.0);
  r.lse.assign(size_t(B * H * Lq), -INF);
  if (g.defined()) {
    r.gq.assign(Q.size(), 0.0);
    r.gk.assign(K.size(), 0.0);
    r.gv.assign(V.size(), 0.0);
  }
  const double scale = double(p.scale);
  std::vector<double> s(static_cast<size_t>(Lk)), dp(static_cast<size_t>(Lk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const size_t qo = size_t((b * H + h) * Lq * D), ko = size_t((b * H + h) * Lk * D);
      for (int64_t i = 0; i < Lq; ++i) {
        double m = -INF;
        for (int64_t j = 0; j < Lk; ++j) {
          const bool seen = !M[size_t(b * Lk + j)] && (!p.causal || j <= i + Lk - Lq);
          double dot = 0;
          for (int64_t c = 0; c < D; ++c) dot += Q[qo + size_t(i * D + c)] * K[ko + size_t(j * D + c)];
          s[size_t(j)] = seen ? scale * dot : -INF;
          m = std::max(m, s[size_t(j)]);
        }
        if (m == -INF) continue;
        double sum = 0;
        for (int64_t j = 0; j < Lk; ++j) sum += std::exp(s[size_t(j)] - m);
        r.lse[size_t((b * H + h) * Lq + i)] = m + std::log(sum);
        for (int64_t j = 0; j < Lk; ++j) s[size_t(j)] = std::exp(s[size_t(j)] - m) / sum;  // p
        for (int64_t j = 0; j < Lk; ++j)
          for (int64_t c = 0; c < D; ++c) r.out[qo + size_t(i * D + c)] += s[size_t(j)] * V[ko + size_t(j * D + c)];
        if (!g.defined()) continue;
        double di = 0;
        for (int64_t j = 0; j < Lk; ++j) {
          double t = 0;
          for (int64_t c = 0; c < D; ++c) t += G[qo + size_t(i * D + c)] * V[ko + size_t(j * D + c)];
          dp[size_t(j)] = t;
          di += s[size_t(j)] * t;
        }
        for (int64_t j = 0; j < Lk; ++j) {
          const double ds = s[size_t(j)] * (dp[size_t(j)] - di);
          for (int64_t c = 0; c < D; ++c) {
            r.gv[ko + size_t(j * D + c)] += s[size_t(j)] * G[qo + size_t(i * D + c)];
            r.gq[qo + size_t(i * D + c)] += scale * ds * K[ko + size_t(j * D + c)];
            r.gk[ko + size_t(j * D + c)] += scale * ds * Q[qo + size_t(i * D + c)];
          }
        }
      }
    }
  return r;
}

// The lse the op saves is not exposed; the backend primitive gives it directly.
Tensor kernel_lse(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p) {
  Tensor out = Tensor::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.dtype());
  Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, DType::F32);
  backend(q.device()).attention(out, lse, q, k, v, p);
  return lse;
}

struct Grads {
  std::vector<double> out, gq, gk, gv;
};

// Forward + backward through the op with upstream gradient g; gradients read back as double.
Grads run_op(const Tensor& q0, const Tensor& k0, const Tensor& v0, const AttentionParams& p, const Tensor& g) {
  Tensor q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(), v = v0.detach().requires_grad_();
  Tensor out = scaled_dot_product_attention(q, k, v, p);
  out.backward(g.to(out.dtype()));
  return {values(out), values(q.grad()), values(k.grad()), values(v.grad())};
}

// Compares forward and gradients of the op with the loop reference (evaluated on the same rounded inputs).
void check_against_reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p,
                             double tol, const std::string& what) {
  Tensor g = fill(Shape{q.size(0), q.size(1), q.size(2), v.size(3)}, 0.37, 0.2);
  Grads got = run_op(q, k, v, p, g);
  Ref want = reference(q, k, v, p, g.to(q.dtype()));
  check_near(got.out, want.out, tol, what + " out");
  check_near(got.gq, want.gq, tol, what + " gq");
  check_near(got.gk, want.gk, tol, what + " gk");
  check_near(got.gv, want.gv, tol, what + " gv");
  if (q.dtype() == DType::F32 || q.dtype() == DType::F64)
    check_near(values(kernel_lse(q, k, v, p)), want.lse, tol, what + " lse");
}

// Restores the kernel tuning knobs on scope exit.
struct TuningGuard {
  cpu::AttentionTuning saved = cpu::attention_tuning();
  TuningGuard(int64_t rows, int64_t groups) {
    cpu::attention_tuning().block_rows = rows;
    cpu::attention_tuning().groups = groups;
  }
  ~TuningGuard() { cpu::attention_tuning() = saved; }
};

// ---- PyTorch reference values (tools/ref_attention.py) ----
const std::vector<double> plain_out = {0.199532531, 0.403243003, 0.496309268, -0.233810902, -0.281149317, -0.251344353, 0.482450053, 0.363753653, 0.145248345, 0.188596647, 0.389655182, 0.483797816, 0.347344289, 0.228084555, 0.0462416347, -0.168809861, -0.145094501, -0.0815672653, 0.0175286161, -0.189217796, -0.344045516, 0.315642829, 0.218636204, 0.0616388859, 0.0556540894, -0.0366516667, -0.11890069, -0.290882949, -0.143248936, 0.043690569, -0.342077504, -0.412213986, -0.369244756, 0.108260616, 0.0281945822, -0.0596076125, -0.0148141134, -0.154634972, -0.252026199, 0.272092205, 0.441954261, 0.490550313, -0.353712407, -0.130194903, 0.129046223, 0.00914606111, -0.144703951, -0.258849264};
const std::vector<double> plain_lse = {2.03230804, 1.69462319, 2.04153074, 2.0155261, 1.88999249, 1.73682518, 1.97257177, 1.85594112, 1.74917243, 1.88416016, 1.97188888, 1.73026202, 1.70277655, 2.01869653, 2.0387814, 1.70170884};
const std::vector<double> causal_pad_out = {0.891207337, 0.998247981, 0.831383467, 0.638367212, 0.399751027, 0.0514487826, 0.358013661, -0.0136238785, -0.381523246, 0.510800982, 0.515023674, 0.37793113, 0.923387945, 0.990763783, 0.786287963, 0.855811052, 0.851885205, 0.614214033, -0.365744074, -0.545022423, -0.574754294, 0.408793854, 0.101244635, -0.234084681, 0, 0, 0, 0.293573827, -0.229960144, -0.690396309, -0.782035864, -0.863037056, -0.707233045, -0.25791919, -0.479646158, -0.569764986, 0, 0, 0, 0.219350368, -0.303964615, -0.74387598, -0.115847723, -0.483638276, -0.718725314, -0.702973069, -0.62390102, -0.373639373};
const std::vector<double> causal_pad_lse = {1.12058578, 0.187843568, 1.41100077, 1.45578856, -0.0265239283, 1.09893953, 1.34371837, 1.33424296, -INF, 0.53703621, 0.839243689, 1.31137999, -INF, 0.940548484, 0.346844429, 1.38624614};
const std::vector<double> causal_pad_gq = {0, 0, 0, 0.0564594724, 0.666746166, 0.209505203, -0.111867494, 0.046423763, 0.13038591, 0.244612856, -0.208747622, -0.327882171, 0, 0, 0, 0.183691822, 0.205864002, -0.101572793, -0.0975107259, 0.0237362739, 0.106979116, -0.213088815, -0.434138624, 0.0399111654, 0, 0, 0, 0, 0, 0, 0.0126609554, -0.0146740012, -0.0185144064, 0.0969233617, -0.36353252, -0.241936286, 0, 0, 0, 0, 0, 0, -0.014627015, -0.136198883, -0.0397026386, -0.476476564, -0.41983009, 0.309006596};
const std::vector<double> causal_pad_gk = {0.111017434, -0.423625232, -0.753539887, -0.338510808, 0.0754866919, 0.453003267, 0.227493375, 0.34813854, 0.300536621, 0, 0, 0, 0.416193544, 0.052248107, -0.336947594, -0.394829195, -0.179325044, 0.122842633, -0.0213643495, 0.127076937, 0.21410496, 0, 0, 0, 0, 0, 0, 0.218963248, 0.152117123, 0.0117564018, -0.371024813, -0.25061878, -0.00909463724, 0.152061566, 0.0985016575, -0.00266176455, 0, 0, 0, -0.0619235149, 0.0029059369, 0.0663310267, -0.271948245, -0.453512265, -0.415904629, 0.33387176, 0.450606329, 0.349573603};
const std::vector<double> causal_pad_gv = {1.06913631, 1.01003219, 0.866578054, 1.0124743, 0.779323282, 0.481089215, 0.0404293081, -0.0373091854, -0.111931904, 0, 0, 0, -1.58434668, -1.48219556, -1.25626296, 0.0792095564, 0.323050527, 0.539912785, -0.169867184, 0.0209582852, 0.210033478, 0, 0, 0, 0, 0, 0, 0.402584189, 0.0693585694, -0.269659286, -0.27759524, -0.586805648, -0.847010548, -0.0682617983, -0.0827249342, -0.0902795199, 0, 0, 0, -0.21725809, 0.24092925, 0.678995995, 0.735652686, 0.856693646, 0.906190146, 0.187993132, 0.202062552, 0.199257262};
const std::vector<double> causal_short_out = {0.540989398, 0.542386374, 0.394960176, -0.451986205, -0.520952551, -0.44697689, 0.482450053, 0.363753653, 0.145248345, -0.53557882, -0.657849334, -0.599615255, 0.350210916, 0.252503973, 0.0855134997, -0.168809861, -0.145094501, -0.0815672653};
const std::vector<double> causal_short_lse = {1.45347254, 1.52189968, 2.04153074, 1.35048999, 1.83805272, 1.73682518};

// The inputs of tools/ref_attention.py.
struct Inputs {
  Tensor q, k, v;
};
Inputs torch_inputs(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, DType dt) {
  return {fill({B, H, Lq, D}, 0.71, 0.3, 1.5, dt), fill({B, H, Lk, D}, 1.37, -0.4, 1.0, dt),
          fill({B, H, Lk, D}, 0.53, 1.1, 1.0, dt)};
}

}  // namespace

TEST_CASE("attention: forward and lse match torch (Lq != Lk)", "[attention]") {
  for (DType dt : {DType::F32, DType::F64}) {
    const double tol = dt == DType::F32 ? 2e-6 : 1e-8;
    Inputs in = torch_inputs(2, 2, 4, 5, 3, dt);
    AttentionParams p = attention_params(3);
    Tensor out = scaled_dot_product_attention(in.q, in.k, in.v, p);
    CHECK(out.dtype() == dt);
    CHECK(out.shape() == Shape{2, 2, 4, 3});
    check_near(values(out), plain_out, tol, "plain out");
    check_near(values(kernel_lse(in.q, in.k, in.v, p)), plain_lse, 2e-6, "plain lse");  // lse is f32
  }
}

TEST_CASE("attention: causal + key padding (rows with no visible key) match torch, with gradients",
          "[attention]") {
  Tensor kpm = bool_mask({{0, 0, 0, 1}, {1, 0, 0, 0}});
  Tensor g = fill({2, 2, 4, 3}, 0.29, 0.7);
  for (DType dt : {DType::F32, DType::F64}) {
    const double tol = dt == DType::F32 ? 2e-6 : 1e-8;
    Inputs in = torch_inputs(2, 2, 4, 4, 3, dt);
    AttentionParams p = attention_params(3, true, kpm);
    Grads r = run_op(in.q, in.k, in.v, p, g);
    check_near(r.out, causal_pad_out, tol, "causal_pad out");
    check_near(values(kernel_lse(in.q, in.k, in.v, p)), causal_pad_lse, 2e-6, "causal_pad lse");
    check_near(r.gq, causal_pad_gq, tol, "causal_pad gq");
    check_near(r.gk, causal_pad_gk, tol, "causal_pad gk");
    check_near(r.gv, causal_pad_gv, tol, "causal_pad gv");
  }
}

TEST_CASE("attention: causal with Lq < Lk is aligned at the bottom right", "[attention]") {
  Inputs in = torch_inputs(1, 2, 3, 5, 3, DType::F32);
  AttentionParams p = attention_params(3, true);
  check_near(values(scaled_dot_product_attention(in.q, in.k, in.v, p)), causal_short_out, 2e-6, "causal_short out");
  check_near(values(kernel_lse(in.q, in.k, in.v, p)), causal_short_lse, 2e-6, "causal_short lse");
  // The last query row sees every key: it equals unmasked attention of that row.
  Tensor full = scaled_dot_product_attention(in.q, in.k, in.v, attention_params(3));
  check_near(values(full.narrow(2, 2, 1)), values(scaled_dot_product_attention(in.q, in.k, in.v, p).narrow(2, 2, 1)),
             1e-6, "last row");
}

TEST_CASE("attention: causal with Lq > Lk leaves the first rows empty (zeros)", "[attention]") {
  Tensor q = fill({1, 2, 6, 4}, 0.3, 0.1), k = fill({1, 2, 3, 4}, 0.9, 0.2), v = fill({1, 2, 3, 4}, 0.4, 0.5);
  AttentionParams p = attention_params(4, true);
  check_against_reference(q, k, v, p, 1e-5, "causal long");
  Tensor out = scaled_dot_product_attention(q, k, v, p);
  for (double x : values(out.narrow(2, 0, 3))) CHECK(x == 0.0);
  for (double x : values(kernel_lse(q, k, v, p).narrow(2, 0, 3))) CHECK(x == -INF);
}

TEST_CASE("attention: a fully padded batch element gives zeros and zero gradients", "[attention]") {
  Tensor q = fill({2, 3, 5, 4}, 0.3, 0.1), k = fill({2, 3, 6, 4}, 0.9, 0.2), v = fill({2, 3, 6, 4}, 0.4, 0.5);
  Tensor kpm = bool_mask({{0, 0, 1, 0, 0, 1}, {1, 1, 1, 1, 1, 1}});
  AttentionParams p = attention_params(4, false, kpm);
  check_against_reference(q, k, v, p, 1e-5, "padded");
  Tensor g = fill({2, 3, 5, 4}, 0.37, 0.2);
  Grads r = run_op(q, k, v, p, g);
  const size_t half_q = r.out.size() / 2, half_k = r.gk.size() / 2;
  for (size_t i = half_q; i < r.out.size(); ++i) CHECK(r.out[i] == 0.0);
  for (size_t i = half_q; i < r.gq.size(); ++i) CHECK(r.gq[i] == 0.0);
  for (size_t i = half_k; i < r.gk.size(); ++i) CHECK((r.gk[i] == 0.0 && r.gv[i] == 0.0));
  for (double x : values(kernel_lse(q, k, v, p).select(0, 1))) CHECK(x == -INF);
}

TEST_CASE("attention: strided views of a packed QKV projection", "[attention]") {
  // [B, L, 3, H, D] as a linear layer's output would be reshaped; q/k/v are permuted selects.
  const int64_t B = 2, L = 7, H = 3, D = 5;
  Tensor packed = fill({B, L, 3, H, D}, 0.61, 0.25, 1.2);
  Tensor q = packed.select(2, 0).permute({0, 2, 1, 3});
  Tensor k = packed.select(2, 1).permute({0, 2, 1, 3});
  Tensor v = packed.select(2, 2).permute({0, 2, 1, 3});
  REQUIRE_FALSE(q.is_contiguous());
  Tensor kpm = bool_mask({{0, 0, 0, 0, 0, 1, 1}, {0, 0, 0, 0, 0, 0, 0}});
  for (bool causal : {false, true}) {
    AttentionParams p = attention_params(D, causal, kpm);
    check_against_reference(q, k, v, p, 1e-5, causal ? "packed causal" : "packed");
    check_near(values(scaled_dot_product_attention(q, k, v, p)),
               values(scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(), p)), 1e-6,
               "packed vs contiguous");
  }
  // Non-unit stride on the head dim, a strided (non-contiguous) mask, a broadcast k / v over heads.
  Tensor qt = fill({B, H, D, L}, 0.2, 0.3).transpose(2, 3);
  Tensor kb = fill({B, 1, L, D}, 0.5, 0.6).expand({B, H, L, D});
  Tensor vb = fill({B, 1, L, D}, 0.8, 0.9).expand({B, H, L, D});
  Tensor mt = bool_mask({{0, 1}, {0, 0}, {1, 0}, {0, 0}, {0, 0}, {0, 1}, {0, 0}}).t();
  check_against_reference(qt, kb, vb, attention_params(D, true, mt), 1e-5, "strided");
}

TEST_CASE("attention: model shapes against a loop reference (forward and backward)", "[attention]") {
  struct Case {
    const char* name;
    int64_t B, H, Lq, Lk, D;
    bool causal, pad;
  };
  const Case cases[] = {
      {"ViT-B/32", 2, 12, 50, 50, 64, false, false},
      {"CLIP text", 1, 8, 77, 77, 64, true, false},
      {"BERT padded", 2, 1, 256, 256, 64, false, true},
      {"attention pool (Lq=1)", 2, 32, 1, 50, 64, false, false},
      {"attention pool (D=256)", 1, 8, 50, 50, 256, false, false},
  };
  for (const Case& c : cases) {
    Tensor q = fill({c.B, c.H, c.Lq, c.D}, 0.113, 0.3, 2.0), k = fill({c.B, c.H, c.Lk, c.D}, 0.271, 0.1, 2.0);
    Tensor v = fill({c.B, c.H, c.Lk, c.D}, 0.0917, 0.7);
    Tensor kpm;
    if (c.pad) {
      std::vector<bool> m(size_t(c.B * c.Lk));
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = 0; j < c.Lk; ++j) m[size_t(b * c.Lk + j)] = j >= c.Lk - 40 * (b + 1);
      kpm = from_vector(m, {c.B, c.Lk});
    }
    check_against_reference(q, k, v, attention_params(c.D, c.causal, kpm), 2e-5, c.name);
  }
}

TEST_CASE("attention: query blocks and grouped backward (forced tuning)", "[attention]") {
  Tensor q = fill({1, 2, 11, 6}, 0.3, 0.1, 1.5), k = fill({1, 2, 9, 6}, 0.9, 0.2), v = fill({1, 2, 9, 6}, 0.4, 0.5);
  Tensor kpm = bool_mask({{0, 1, 0, 0, 0, 0, 0, 0, 1}});
  for (int64_t rows : {1, 3, 4})
    for (int64_t groups : {1, 2, 5}) {
      TuningGuard tg(rows, groups);
      for (bool causal : {false, true}) {
        const std::string what = "rows " + std::to_string(rows) + " groups " + std::to_string(groups) +
                                 (causal ? " causal" : "");
        check_against_reference(q, k, v, attention_params(6, causal, kpm), 1e-5, what);
        check_against_reference(q.narrow(2, 0, 5), k, v, attention_params(6, causal), 1e-5, what + " short");
      }
    }
}

TEST_CASE("attention: bf16 and f16 within 1e-2", "[attention]") {
  Tensor kpm = bool_mask({{0, 0, 0, 0, 0, 0, 1, 1, 1}, {0, 0, 0, 0, 0, 0, 0, 0, 0}});
  for (DType dt : {DType::BF16, DType::F16})
    for (bool causal : {false, true}) {
      Tensor q = fill({2, 3, 9, 16}, 0.3, 0.1, 1.0, dt), k = fill({2, 3, 9, 16}, 0.9, 0.2, 1.0, dt);
      Tensor v = fill({2, 3, 9, 16}, 0.4, 0.5, 1.0, dt);
      AttentionParams p = attention_params(16, causal, kpm);
      CHECK(scaled_dot_product_attention(q, k, v, p).dtype() == dt);
      check_against_reference(q, k, v, p, 1e-2, std::string(dtype_name(dt)) + (causal ? " causal" : ""));
      // Half-precision inputs that are strided views.
      Tensor packed = fill({2, 9, 3, 3, 16}, 0.61, 0.25, 1.0, dt);
      check_against_reference(packed.select(2, 0).permute({0, 2, 1, 3}), packed.select(2, 1).permute({0, 2, 1, 3}),
                              packed.select(2, 2).permute({0, 2, 1, 3}), p, 1e-2, "packed half");
    }
}

TEST_CASE("attention: gradcheck", "[attention][gradcheck]") {
  auto sdpa = [](AttentionParams p) {
    return [p](const std::vector<Tensor>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], p); };
  };
  auto ok = [](const autograd::GradcheckResult& r) {
    INFO(r.message);
    CHECK(r.ok);
  };
  auto qkv = [](int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D) {
    return std::vector<Tensor>{fill({B, H, Lq, D}, 0.71, 0.3, 1.5), fill({B, H, Lk, D}, 1.37, -0.4),
                               fill({B, H, Lk, D}, 0.53, 1.1)};
  };
  SECTION("plain") {
    ok(gradcheck(sdpa(attention_params(3)), qkv(2, 2, 5, 5, 3)));
    ok(gradcheck(sdpa(attention_params(5)), qkv(1, 3, 7, 4, 5)));
  }
  SECTION("causal") {
    ok(gradcheck(sdpa(attention_params(3, true)), qkv(2, 2, 5, 5, 3)));
    ok(gradcheck(sdpa(attention_params(3, true)), qkv(1, 2, 3, 6, 3)));
    ok(gradcheck(sdpa(attention_params(3, true)), qkv(1, 2, 5, 3, 3)));  // two rows see no key
  }
  SECTION("key padding, with a row that sees no key") {
    Tensor kpm = bool_mask({{0, 0, 1, 0, 1}, {1, 1, 1, 1, 1}});
    ok(gradcheck(sdpa(attention_params(3, false, kpm)), qkv(2, 2, 5, 5, 3)));
    Tensor kpm2 = bool_mask({{1, 0, 0, 0, 0}, {0, 0, 0, 1, 1}});
    ok(gradcheck(sdpa(attention_params(3, true, kpm2)), qkv(2, 2, 5, 5, 3)));
  }
  SECTION("packed QKV views and broadcast k / v") {
    std::vector<Tensor> packed{fill({2, 5, 3, 2, 3}, 0.61, 0.25, 1.2)};
    ok(gradcheck(
        [](const std::vector<Tensor>& in) {
          Tensor q = in[0].select(2, 0).permute({0, 2, 1, 3}), k = in[0].select(2, 1).permute({0, 2, 1, 3});
          Tensor v = in[0].select(2, 2).permute({0, 2, 1, 3});
          return scaled_dot_product_attention(q, k, v, attention_params(3, true));
        },
        packed));
    ok(gradcheck(
        [](const std::vector<Tensor>& in) {
          return scaled_dot_product_attention(in[0].transpose(2, 3), in[1].expand({2, 3, 4, 3}),
                                              in[2].expand({2, 3, 4, 3}), attention_params(3));
        },
        {fill({2, 3, 3, 5}, 0.3, 0.1), fill({2, 1, 4, 3}, 0.9, 0.2), fill({2, 1, 4, 3}, 0.4, 0.5)}));
  }
  SECTION("query blocks shared by several backward tasks") {
    TuningGuard tg(2, 3);
    Tensor kpm = bool_mask({{0, 0, 1, 0, 0, 0}});
    ok(gradcheck(sdpa(attention_params(3, true, kpm)), qkv(1, 1, 7, 6, 3)));
    ok(gradcheck(sdpa(attention_params(3)), qkv(1, 2, 5, 6, 3)));
  }
}

TEST_CASE("attention: only the inputs that need gradients get them; no graph under NoGradGuard", "[attention]") {
  Tensor q = fill({1, 2, 4, 3}, 0.3, 0.1).requires_grad_(), k = fill({1, 2, 4, 3}, 0.9, 0.2);
  Tensor v = fill({1, 2, 4, 3}, 0.4, 0.5);
  sum(scaled_dot_product_attention(q, k, v, attention_params(3))).backward();
  CHECK(q.grad().defined());
  CHECK_FALSE(k.grad().defined());
  {
    NoGradGuard ng;
    CHECK_FALSE(scaled_dot_product_attention(q, k, v, attention_params(3)).requires_grad());
  }
}

TEST_CASE("attention: empty lengths", "[attention]") {
  Tensor q = fill({1, 2, 3, 4}, 0.3, 0.1).requires_grad_();
  Tensor k = Tensor::empty({1, 2, 0, 4}).requires_grad_(), v = Tensor::empty({1, 2, 0, 4}).requires_grad_();
  Tensor out = scaled_dot_product_attention(q, k, v, attention_params(4));
  for (double x : values(out)) CHECK(x == 0.0);
  sum(out).backward();
  for (double x : values(q.grad())) CHECK(x == 0.0);
  Tensor k2 = fill({1, 2, 3, 4}, 0.1, 0.2).requires_grad_(), v2 = fill({1, 2, 3, 4}, 0.3, 0.4).requires_grad_();
  Tensor e = scaled_dot_product_attention(Tensor::empty({1, 2, 0, 4}), k2, v2, attention_params(4));
  CHECK(e.shape() == Shape{1, 2, 0, 4});
  sum(e).backward();
  for (double x : values(k2.grad())) CHECK(x == 0.0);
  for (double x : values(v2.grad())) CHECK(x == 0.0);
}

TEST_CASE("attention: bad arguments throw mc::Error", "[attention]") {
  Tensor q = fill({2, 2, 4, 3}, 0.3, 0.1), k = fill({2, 2, 5, 3}, 0.9, 0.2), v = fill({2, 2, 5, 3}, 0.4, 0.5);
  AttentionParams p = attention_params(3);
  CHECK_NOTHROW(scaled_dot_product_attention(q, k, v, p));
  // rank != 4
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q.select(0, 0), k, v, p), mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k.reshape({4, 5, 3}), v, p), mc::Error);
  // head dim mismatch
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, fill({2, 2, 5, 4}, 0.9, 0.2), v, p), mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, fill({2, 2, 5, 2}, 0.9, 0.2), p), mc::Error);
  // batch / heads / key length mismatch
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, fill({1, 2, 5, 3}, 0.9, 0.2), v, p), mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, fill({2, 3, 5, 3}, 0.9, 0.2), v, p), mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, fill({2, 2, 6, 3}, 0.9, 0.2), p), mc::Error);
  // dtypes
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k.to(DType::F64), v, p), mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q.to(DType::I64), k.to(DType::I64), v.to(DType::I64), p),
                    mc::Error);
  // key padding mask: shape and dtype
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, attention_params(3, false, bool_mask({{0, 0, 0, 0}, {0, 0, 0, 0}}))),
                    mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, attention_params(3, false, bool_mask({{0, 0, 0, 0, 0}}))),
                    mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, attention_params(3, false, zeros({2, 5}))), mc::Error);
  REQUIRE_THROWS_AS(scaled_dot_product_attention(q, k, v, attention_params(3, false, zeros({2, 5}, DType::U8))),
                    mc::Error);
  REQUIRE_THROWS_AS(attention_params(0), mc::Error);
  // The kernel itself refuses inconsistent outputs.
  Tensor lse64 = Tensor::empty({2, 2, 4}, DType::F64), out = Tensor::empty({2, 2, 4, 3});
  REQUIRE_THROWS_AS(cpu::attention(out, lse64, q, k, v, p), mc::Error);
  REQUIRE_THROWS_AS(cpu::attention(Tensor::empty({2, 2, 5, 3}), Tensor::empty({2, 2, 4}), q, k, v, p), mc::Error);
}
