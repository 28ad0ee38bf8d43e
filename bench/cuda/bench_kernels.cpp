// bench_kernels — mc's CUDA kernels at the sizes of the study's models, against the card's peak.
//
// Usage: bench_kernels [--list] [--iters N] [NAME...]
//   NAME selects a case by its name, a prefix of names, or a group (elementwise, softmax, layernorm, adamw,
//   attention, gemm, conv, batchnorm); no NAME runs everything. One case alone suits a profiler:
//   ncu --set full ./bench_kernels layernorm_fwd_b32_bf16
// Each case first checks the primitive against the CPU on a small input, then times the big case (CUDA
// events over warm-up + N iterations) and prints one RESULT line (bench/cuda/bench_common.hpp): memory-bound
// cases in GB/s and % of DRAM bandwidth (minimal traffic: each input read once, each output written once),
// compute-bound ones in TFLOP/s and % of the dtype's dense peak (f32 cases: % of the CUDA-core f32 peak).
#include <cstring>
#include <map>
#include <memory>

#include "bench_common.hpp"
#include "mc/models/clip_text.hpp"
#include "mc/models/vit.hpp"

using namespace bench;

namespace {

Peaks P;
int g_iters = 0;  // 0: choose per case

struct Case {
  std::string name, group;
  std::function<void(const std::string&)> run;  // gets its own name
};

double iters_and_time(const std::function<void()>& f) {
  const int n = g_iters > 0 ? g_iters : iters_for(f);
  return time_ms(f, 3, n);
}

void report_bw(const std::string& name, const std::function<void()>& f, double bytes, const std::string& chk) {
  const double ms = iters_and_time(f), gbs = bytes / ms / 1e6;
  print_result(name, ms, gbs, "GB/s", 100.0 * gbs / P.dram_gbs, chk);
}

void report_flops(const std::string& name, const std::function<void()>& f, double flops, double peak_tflops,
                  const std::string& chk) {
  const double ms = iters_and_time(f), tf = flops / ms / 1e9;
  print_result(name, ms, tf, "TFLOP/s", 100.0 * tf / peak_tflops, chk);
}

double tol_for(DType dt) { return dt == DType::BF16 ? 2e-2 : 1e-4; }
const char* dn(DType dt) { return dtype_name(dt); }
Backend& B() { return backend(Device::cuda()); }

// ---- elementwise ----
void elementwise_cases(std::vector<Case>& cs) {
  for (DType dt : {DType::F32, DType::BF16}) {
    const int64_t n = int64_t(1) << 26;  // 64M elements
    cs.push_back({std::string("add_") + dn(dt) + "_64M", "elementwise", [dt, n](const std::string& name) {
                    std::string chk = check({randn_h({1000, 129}, dt), randn_h({129}, dt)},
                                            [](auto& in) { return std::vector<Tensor>{add(in[0], in[1])}; }, tol_for(dt));
                    Tensor a = randn_d({n}, dt), b = randn_d({n}, dt), o = Tensor::empty({n}, dt, Device::cuda());
                    report_bw(name, [&] { B().binary(BinaryOp::Add, o, a, b); }, 3.0 * n * dtype_size(dt), chk);
                  }});
    cs.push_back({std::string("gelu_") + dn(dt) + "_64M", "elementwise", [dt, n](const std::string& name) {
                    std::string chk = check({randn_h({1000, 129}, dt)},
                                            [](auto& in) { return std::vector<Tensor>{gelu(in[0])}; }, tol_for(dt));
                    Tensor a = randn_d({n}, dt), o = Tensor::empty({n}, dt, Device::cuda());
                    report_bw(name, [&] { B().unary(UnaryOp::GeluErf, o, a, 0, 0); }, 2.0 * n * dtype_size(dt), chk);
                  }});
    cs.push_back({std::string("gelu_bwd_") + dn(dt) + "_64M", "elementwise", [dt, n](const std::string& name) {
                    std::string chk = check({randn_h({1000, 129}, dt), randn_h({1000, 129}, dt)}, [](auto& in) {
                      return std::vector<Tensor>{binary_grad(BinaryOp::GeluErfBackward, in[0], in[1])};
                    }, tol_for(dt));
                    Tensor g = randn_d({n}, dt), x = randn_d({n}, dt), o = Tensor::empty({n}, dt, Device::cuda());
                    report_bw(name, [&] { B().binary(BinaryOp::GeluErfBackward, o, g, x); }, 3.0 * n * dtype_size(dt), chk);
                  }});
  }
}

// ---- softmax ----
void softmax_cases(std::vector<Case>& cs) {
  struct S {
    const char* tag;
    int64_t rows, cols;
  };
  for (S s : {S{"vit_b16", 256 * 12 * 197, 197}, S{"4096", 4096, 4096}}) {
    for (DType dt : {DType::F32, DType::BF16}) {
      cs.push_back({std::string("softmax_fwd_") + s.tag + "_" + dn(dt), "softmax", [s, dt](const std::string& name) {
                      std::string chk = check({randn_h({129, s.cols}, dt, 3)},
                                              [](auto& in) { return std::vector<Tensor>{softmax(in[0], -1)}; }, tol_for(dt));
                      Tensor x = randn_d({s.rows, s.cols}, dt), y = Tensor::empty({s.rows, s.cols}, dt, Device::cuda());
                      report_bw(name, [&] { B().softmax(y, x, false); }, 2.0 * s.rows * s.cols * dtype_size(dt), chk);
                    }});
      cs.push_back({std::string("softmax_bwd_") + s.tag + "_" + dn(dt), "softmax", [s, dt](const std::string& name) {
                      Tensor xh = randn_h({129, s.cols}, DType::F32, 3);
                      std::string chk = check({xh.to(dt), randn_h({129, s.cols}, dt)}, [](auto& in) {
                        Tensor y = softmax(in[0], -1), gx = empty_like(y);
                        backend(y.device()).softmax_backward(gx, in[1], y, false);
                        return std::vector<Tensor>{gx};
                      }, tol_for(dt));
                      Tensor y = randn_d({s.rows, s.cols}, dt), gy = randn_d({s.rows, s.cols}, dt);
                      Tensor gx = Tensor::empty({s.rows, s.cols}, dt, Device::cuda());
                      report_bw(name, [&] { B().softmax_backward(gx, gy, y, false); }, 3.0 * s.rows * s.cols * dtype_size(dt),
                                chk);
                    }});
    }
  }
}

// ---- layer norm ----
void layernorm_cases(std::vector<Case>& cs) {
  struct S {
    const char* tag;
    int64_t rows, cols;
  };
  for (S s : {S{"b32", 256 * 50, 768}, S{"b16", 256 * 197, 768}}) {
    for (DType dt : {DType::F32, DType::BF16}) {
      const int64_t n = s.rows * s.cols;
      cs.push_back({std::string("layernorm_fwd_") + s.tag + "_" + dn(dt), "layernorm", [s, dt, n](const std::string& name) {
                      std::string chk = check({randn_h({129, s.cols}, dt), randn_h({s.cols}, dt), randn_h({s.cols}, dt)},
                                              [&](auto& in) {
                                                return std::vector<Tensor>{layer_norm(in[0], {s.cols}, in[1], in[2])};
                                              },
                                              tol_for(dt));
                      Device d = Device::cuda();
                      Tensor x = randn_d({s.rows, s.cols}, dt), w = randn_d({s.cols}, dt), b = randn_d({s.cols}, dt);
                      Tensor y = Tensor::empty({s.rows, s.cols}, dt, d);
                      Tensor mean = Tensor::empty({s.rows}, DType::F32, d), rstd = Tensor::empty({s.rows}, DType::F32, d);
                      report_bw(name, [&] { B().layer_norm(y, mean, rstd, x, w, b, 1e-5); }, 2.0 * n * dtype_size(dt), chk);
                    }});
      cs.push_back({std::string("layernorm_bwd_") + s.tag + "_" + dn(dt), "layernorm", [s, dt, n](const std::string& name) {
                      Tensor xh = randn_h({129, s.cols}, dt), wh = randn_h({s.cols}, dt), bh = randn_h({s.cols}, dt);
                      std::string chk = check({xh, wh, bh}, [&](auto& in) {
                        Tensor x = in[0].detach(), w = in[1].detach(), b = in[2].detach();
                        x.requires_grad_(true);
                        w.requires_grad_(true);
                        b.requires_grad_(true);
                        Tensor y = layer_norm(x, {s.cols}, w, b);
                        Generator g(3);
                        y.backward(randn(y.shape(), &g, DType::F32, y.device()).to(y.dtype()));
                        return std::vector<Tensor>{x.grad(), w.grad(), b.grad()};
                      }, dt == DType::BF16 ? 3e-2 : 1e-4);
                      Device d = Device::cuda();
                      Tensor x = randn_d({s.rows, s.cols}, dt), w = randn_d({s.cols}, dt), b = randn_d({s.cols}, dt);
                      Tensor y = Tensor::empty({s.rows, s.cols}, dt, d);
                      Tensor mean = Tensor::empty({s.rows}, DType::F32, d), rstd = Tensor::empty({s.rows}, DType::F32, d);
                      B().layer_norm(y, mean, rstd, x, w, b, 1e-5);
                      Tensor gy = randn_d({s.rows, s.cols}, dt), gx = empty_like(x), gw = empty_like(w), gb = empty_like(b);
                      report_bw(name, [&] { B().layer_norm_backward(gx, gw, gb, gy, x, w, mean, rstd); },
                                3.0 * n * dtype_size(dt), chk);
                    }});
    }
  }
}

// ---- AdamW over CLIP ViT-B/32's parameters (image + text towers, 151M) ----
void adamw_cases(std::vector<Case>& cs) {
  cs.push_back({"adamw_clip_b32_151M_f32", "adamw", [](const std::string& name) {
                  // Check: 3 steps on a few odd-sized tensors.
                  std::string chk = check({randn_h({1031}), randn_h({129, 3}), randn_h({1031}, DType::F32, 1, 7)},
                                          [](auto& in) {
                                            Tensor p = detail::contiguous_copy(in[0]), q = detail::contiguous_copy(in[1]);
                                            p.requires_grad_(true);
                                            q.requires_grad_(true);
                                            optim::ParamGroup g;
                                            g.params = {p, q};
                                            g.lr = 1e-2;
                                            g.weight_decay = 0.1;
                                            optim::AdamW opt({g});
                                            for (int s = 0; s < 3; ++s) {
                                              p.set_grad(detail::contiguous_copy(in[2]) * double(s + 1));
                                              q.set_grad(detail::contiguous_copy(in[1]) * -0.5);
                                              opt.step();
                                            }
                                            return std::vector<Tensor>{p.detach(), q.detach()};
                                          },
                                          1e-5);
                  // Parameter shapes of open_clip's ViT-B-32 (both towers), made on the device.
                  std::vector<Shape> shapes;
                  {
                    models::VisionTransformer v(models::ViTConfig{});
                    models::ClipTextTransformer t(models::ClipTextConfig{});
                    for (auto& [n, p] : v.named_parameters()) shapes.push_back(p.shape());
                    for (auto& [n, p] : t.named_parameters()) shapes.push_back(p.shape());
                  }
                  std::vector<Tensor> params;
                  int64_t total = 0;
                  uint64_t seed = 10;
                  for (const Shape& s : shapes) {
                    Tensor p = randn_d(s, DType::F32, 0.02, seed++);
                    p.requires_grad_(true);
                    p.set_grad(randn_d(s, DType::F32, 1e-3, seed++));
                    params.push_back(p);
                    total += p.numel();
                  }
                  optim::ParamGroup g;
                  g.params = params;
                  g.lr = 1e-5;
                  g.weight_decay = 0.2;
                  optim::AdamW opt({g});
                  std::printf("# adamw: %zu tensors, %.1fM parameters\n", params.size(), double(total) / 1e6);
                  report_bw(name, [&] { opt.step(); }, 7.0 * 4.0 * double(total), chk);
                }});
}

// ---- attention ----
struct AttShape {
  const char* tag;
  int64_t B, H, L, D;
  bool causal, mask;
};

void attention_cases(std::vector<Case>& cs) {
  const AttShape shapes[] = {{"vit_b32", 256, 12, 50, 64, false, false},
                             {"vit_b16", 128, 12, 197, 64, false, false},
                             {"bert_mask", 64, 12, 256, 64, false, true},
                             {"clip_text_causal", 256, 8, 77, 64, true, false}};
  for (const AttShape& a : shapes) {
    for (DType dt : {DType::BF16, DType::F32}) {
      for (bool bwd : {false, true}) {
        const std::string name = std::string("attention_") + (bwd ? "fwdbwd_" : "fwd_") + a.tag + "_" + dn(dt);
        cs.push_back({name, "attention", [a, dt, bwd](const std::string& nm) {
                        auto mask_of = [&](int64_t B, int64_t L, Device d) {
                          if (!a.mask) return Tensor();
                          std::vector<bool> m(size_t(B * L));
                          for (int64_t b = 0; b < B; ++b) {
                            const int64_t len = L - (b * 53) % (L / 2);  // padded to L, lengths L/2..L
                            for (int64_t j = 0; j < L; ++j) m[size_t(b * L + j)] = j >= len;
                          }
                          return from_vector(m, {B, L}, d);
                        };
                        // Check on 2 sequences of the same length / head dim / masks, packed q, k, v views.
                        Tensor qkv_h = randn_h({2, a.L, 3, 2, a.D}, dt);
                        std::string chk = check({qkv_h}, [&](auto& in) {
                          Tensor x = in[0].detach();
                          x.requires_grad_(bwd);
                          Tensor q = x.select(2, 0).permute({0, 2, 1, 3}), k = x.select(2, 1).permute({0, 2, 1, 3});
                          Tensor v = x.select(2, 2).permute({0, 2, 1, 3});
                          Tensor o = scaled_dot_product_attention(q, k, v,
                                                                  attention_params(a.D, a.causal, mask_of(2, a.L, x.device())));
                          if (!bwd) return std::vector<Tensor>{o};
                          Generator g(5);
                          o.backward(randn(o.shape(), &g, DType::F32, o.device()).to(o.dtype()));
                          return std::vector<Tensor>{o.detach(), x.grad()};
                        }, dt == DType::BF16 ? 3e-2 : 1e-4);
                        Device d = Device::cuda();
                        Tensor qkv = randn_d({a.B, a.L, 3, a.H, a.D}, dt);
                        Tensor q = qkv.select(2, 0).permute({0, 2, 1, 3}), k = qkv.select(2, 1).permute({0, 2, 1, 3});
                        Tensor v = qkv.select(2, 2).permute({0, 2, 1, 3});
                        AttentionParams p = attention_params(a.D, a.causal, mask_of(a.B, a.L, d));
                        Tensor o = Tensor::empty({a.B, a.H, a.L, a.D}, dt, d), lse = Tensor::empty({a.B, a.H, a.L}, DType::F32, d);
                        Tensor go = randn_d({a.B, a.H, a.L, a.D}, dt);
                        Tensor gq = Tensor::empty(q.shape(), dt, d), gk = empty_like(gq), gv = empty_like(gq);
                        const double fwd_flops = 4.0 * a.B * a.H * a.L * a.L * a.D * (a.causal ? 0.5 : 1.0);
                        report_flops(nm, [&] {
                          B().attention(o, lse, q, k, v, p);
                          if (bwd) B().attention_backward(gq, gk, gv, go, q, k, v, o, lse, p);
                        }, fwd_flops * (bwd ? 3.5 : 1.0), dt == DType::BF16 ? P.bf16_tflops : P.f32_tflops, chk);
                      }});
      }
    }
  }
}

// ---- GEMM ----
struct GemmShape {
  const char* tag;
  int64_t M, N, K;
  bool ta, tb;  // A stored [K, M] (transposed view), B stored [N, K] (a linear layer's weight)
};

void gemm_cases(std::vector<Case>& cs) {
  const int64_t T = 256 * 50;  // ViT-B/32 tokens per batch of 256
  const GemmShape shapes[] = {{"4096", 4096, 4096, 4096, false, false},
                              {"vit_qkv", T, 2304, 768, false, true},
                              {"vit_fc1", T, 3072, 768, false, true},
                              {"vit_fc2", T, 768, 3072, false, true},
                              {"vit_fc1_dgrad", T, 768, 3072, false, false},
                              {"vit_fc1_wgrad", 3072, 768, T, true, false}};
  enum Mode { F32, TF32, BF16 };
  for (const GemmShape& s : shapes) {
    for (Mode m : {BF16, TF32, F32}) {
      const DType dt = m == BF16 ? DType::BF16 : DType::F32;
      const char* mtag = m == BF16 ? "bf16" : m == TF32 ? "tf32" : "f32";
      cs.push_back({std::string("gemm_") + s.tag + "_" + mtag, "gemm", [s, m, dt](const std::string& name) {
                      cuda::set_tf32(m == TF32);
                      auto operands = [&](int64_t M, int64_t N, int64_t K, bool dev) {
                        auto mk = [&](Shape sh, uint64_t seed) {
                          return dev ? randn_d(sh, dt, 1.0, seed) : randn_h(sh, dt, 1.0, seed);
                        };
                        Tensor a = s.ta ? mk({K, M}, 1).t() : mk({M, K}, 1);
                        Tensor b = s.tb ? mk({N, K}, 2).t() : mk({K, N}, 2);
                        return std::make_pair(a, b);
                      };
                      auto [ah, bh] = operands(129, 65, 257, false);
                      std::string chk = check({ah.contiguous(), bh.contiguous()}, [&](auto& in) {
                        Tensor a = s.ta ? in[0].t().contiguous().t() : in[0];
                        Tensor b = s.tb ? in[1].t().contiguous().t() : in[1];
                        return std::vector<Tensor>{matmul(a, b)};
                      }, m == BF16 ? 2e-2 : m == TF32 ? 5e-3 : 1e-5);
                      auto [a, b] = operands(s.M, s.N, s.K, true);
                      Tensor o = Tensor::empty({1, s.M, s.N}, dt, Device::cuda());
                      // [1, M, K] / [1, K, N] views with the operands' own strides (transposed ones stay so).
                      Tensor a3 = detail::as_strided(a, {1, s.M, s.K}, {s.M * s.K, a.stride(0), a.stride(1)}, a.offset());
                      Tensor b3 = detail::as_strided(b, {1, s.K, s.N}, {s.K * s.N, b.stride(0), b.stride(1)}, b.offset());
                      const double peak = m == BF16 ? P.bf16_tflops : m == TF32 ? P.tf32_tflops : P.f32_tflops;
                      report_flops(name, [&] { B().matmul(o, a3, b3); }, 2.0 * s.M * s.N * s.K, peak, chk);
                      cuda::set_tf32(false);
                    }});
    }
  }
}

// ---- convolution (ResNet-50 layers at batch 128) ----
struct ConvShape {
  const char* tag;
  int64_t C, H, O, k, stride, pad;
};

void conv_cases(std::vector<Case>& cs) {
  const int64_t N = 128;
  const ConvShape shapes[] = {{"r50_conv1_7x7s2", 3, 224, 64, 7, 2, 3},   {"r50_l1_3x3", 64, 56, 64, 3, 1, 1},
                              {"r50_l1_1x1_expand", 64, 56, 256, 1, 1, 0}, {"r50_l2_3x3s2", 128, 56, 128, 3, 2, 1},
                              {"r50_l3_3x3", 256, 14, 256, 3, 1, 1},       {"r50_l3_1x1_reduce", 1024, 14, 256, 1, 1, 0},
                              {"r50_l4_3x3", 512, 7, 512, 3, 1, 1}};
  enum Mode { F32, TF32, BF16 };
  enum Pass { Fwd, BwdData, BwdWeight };
  for (const ConvShape& s : shapes) {
    for (Mode m : {BF16, TF32, F32}) {
      for (Pass pass : {Fwd, BwdData, BwdWeight}) {
        const bool full = std::strcmp(s.tag, "r50_l1_3x3") == 0 || std::strcmp(s.tag, "r50_l3_3x3") == 0;
        if (pass != Fwd && (!full || m == F32)) continue;  // backward passes for two representative layers
        const DType dt = m == BF16 ? DType::BF16 : DType::F32;
        const char* mtag = m == BF16 ? "bf16" : m == TF32 ? "tf32" : "f32";
        const char* ptag = pass == Fwd ? "fwd" : pass == BwdData ? "dgrad" : "wgrad";
        cs.push_back({std::string("conv_") + ptag + "_" + s.tag + "_" + mtag, "conv", [s, m, dt, pass, N](const std::string& name) {
                        cuda::set_tf32(m == TF32);
                        Conv2dParams p;
                        p.stride[0] = p.stride[1] = s.stride;
                        p.padding[0] = p.padding[1] = s.pad;
                        const int64_t OH = (s.H + 2 * s.pad - s.k) / s.stride + 1;
                        const double wstd = 1.0 / std::sqrt(double(s.C * s.k * s.k));
                        std::string chk = check({randn_h({1, s.C, s.H, s.H}, dt), randn_h({s.O, s.C, s.k, s.k}, dt, wstd),
                                                 randn_h({1, s.O, OH, OH}, dt)},
                                                [&](auto& in) {
                                                  Backend& be = backend(in[0].device());
                                                  Tensor y = Tensor::empty({1, s.O, OH, OH}, dt, in[0].device());
                                                  be.conv2d(y, in[0], in[1], Tensor(), p);
                                                  Tensor gx = empty_like(in[0]), gw = empty_like(in[1]);
                                                  be.conv2d_backward_input(gx, in[2], in[1], p);
                                                  be.conv2d_backward_weight(gw, in[2], in[0], p);
                                                  return std::vector<Tensor>{y, gx, gw};
                                                },
                                                m == BF16 ? 3e-2 : m == TF32 ? 5e-3 : 1e-4);
                        Device d = Device::cuda();
                        Tensor x = randn_d({N, s.C, s.H, s.H}, dt), w = randn_d({s.O, s.C, s.k, s.k}, dt, wstd);
                        Tensor y = Tensor::empty({N, s.O, OH, OH}, dt, d), gy = randn_d({N, s.O, OH, OH}, dt);
                        Tensor gx = empty_like(x), gw = empty_like(w);
                        const double flops = 2.0 * N * s.O * OH * OH * s.C * s.k * s.k;
                        const double peak = m == BF16 ? P.bf16_tflops : m == TF32 ? P.tf32_tflops : P.f32_tflops;
                        report_flops(name, [&] {
                          if (pass == Fwd) B().conv2d(y, x, w, Tensor(), p);
                          else if (pass == BwdData) B().conv2d_backward_input(gx, gy, w, p);
                          else B().conv2d_backward_weight(gw, gy, x, p);
                        }, flops, peak, chk);
                        cuda::set_tf32(false);
                      }});
      }
    }
  }
}

// ---- batch norm (ResNet-50 layer1 activations, training) ----
void batchnorm_cases(std::vector<Case>& cs) {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool bwd : {false, true}) {
      cs.push_back({std::string("batchnorm_") + (bwd ? "bwd" : "fwd") + "_r50_l1_" + dn(dt), "batchnorm",
                    [dt, bwd](const std::string& name) {
                      Tensor xh = randn_h({4, 16, 9, 9}, dt), wh = randn_h({16}), bh = randn_h({16});
                      std::string chk = check({xh, wh, bh}, [&](auto& in) {
                        Tensor x = in[0].detach(), w = in[1].detach(), b = in[2].detach();
                        x.requires_grad_(true);
                        w.requires_grad_(true);
                        Tensor rm = zeros({16}, DType::F32, x.device()), rv = ones({16}, DType::F32, x.device());
                        Tensor y = batch_norm(x, rm, rv, w, b, true);
                        Generator g(9);
                        y.backward(randn(y.shape(), &g, DType::F32, y.device()).to(y.dtype()));
                        return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), rm, rv};
                      }, dt == DType::BF16 ? 3e-2 : 1e-4);
                      const int64_t N = 128, C = 256, H = 56, n = N * C * H * H;
                      Device d = Device::cuda();
                      Tensor x = randn_d({N, C, H, H}, dt), y = empty_like(x), gy = randn_d({N, C, H, H}, dt);
                      Tensor w = randn_d({C}), b = randn_d({C}), rm = zeros({C}, DType::F32, d), rv = ones({C}, DType::F32, d);
                      Tensor sm = Tensor::empty({C}, DType::F32, d), sr = Tensor::empty({C}, DType::F32, d);
                      Tensor gx = empty_like(x), gw = empty_like(w), gb = empty_like(b);
                      B().batch_norm(y, sm, sr, x, w, b, rm, rv, true, 0.1, 1e-5);
                      if (!bwd)
                        report_bw(name, [&] { B().batch_norm(y, sm, sr, x, w, b, rm, rv, true, 0.1, 1e-5); },
                                  2.0 * n * dtype_size(dt), chk);
                      else
                        report_bw(name, [&] { B().batch_norm_backward(gx, gw, gb, gy, x, w, sm, sr, true); },
                                  3.0 * n * dtype_size(dt), chk);
                    }});
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> want;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--list") == 0) list = true;
    else if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) g_iters = std::atoi(argv[++i]);
    else want.emplace_back(argv[i]);
  }
  std::vector<Case> cases;
  elementwise_cases(cases);
  softmax_cases(cases);
  layernorm_cases(cases);
  adamw_cases(cases);
  attention_cases(cases);
  gemm_cases(cases);
  conv_cases(cases);
  batchnorm_cases(cases);
  if (list) {
    for (const Case& c : cases) std::printf("%-12s %s\n", c.group.c_str(), c.name.c_str());
    return 0;
  }
  if (!cuda::available()) {
    std::printf("SKIPPED: no CUDA device (%s)\n", cuda::device_name(0));
    return 77;
  }
  P = peaks();
  cuda::set_tf32(false);
  std::printf("# %s\n# peaks: DRAM %.0f GB/s, bf16 %.0f TFLOP/s, tf32 %.0f TFLOP/s, f32 %.1f TFLOP/s\n",
              cuda::device_name(0), P.dram_gbs, P.bf16_tflops, P.tf32_tflops, P.f32_tflops);
  int failed = 0, run = 0;
  for (const Case& c : cases) {
    if (!selected(want, c.name, c.group)) continue;
    ++run;
    cuda::empty_cache();
    cuda::reset_peak_memory();
    try {
      c.run(c.name);
    } catch (const std::exception& e) {
      std::printf("# error in %s: %s\n", c.name.c_str(), e.what());
      print_result(c.name, NAN, NAN, "-", NAN, "ERROR");
      ++failed;
      cuda::set_tf32(false);
    }
  }
  if (run == 0) std::fprintf(stderr, "bench_kernels: no case matches; see --list\n");
  return failed ? 1 : 0;
}
