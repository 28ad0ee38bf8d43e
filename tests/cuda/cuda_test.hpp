// tests/cuda/cuda_test.hpp — what the CUDA tests share: the CPU-vs-CUDA harness, tolerances, input makers
// and the poisoning of the caching allocator.
//
// Every test runs one body on both devices: inputs are generated on the CPU, the body runs through the
// public ops API once on CPU tensors and once on CUDA copies of them, and the results (and, on request,
// the gradients of the inputs for a fixed random upstream gradient) are compared. The CPU backend is the
// reference. Tolerances: |cuda - cpu| <= rtol * (|cpu| + floor * rms(cpu)) per element, where the rms term
// is a small absolute floor for values near 0; rtol 1e-5 for f32, 1e-2 for bf16, 2e-3 for f16, 1e-12 for
// f64 and exact equality for integers and bools. NaN must meet NaN and an infinity the same infinity.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "mc/cuda/runtime.hpp"
#include "mc/mc.hpp"

namespace mct {

using namespace mc;

inline Device gpu() { return Device::cuda(0); }
inline Device host() { return Device::cpu(); }

// ---- tolerances ----
inline double rtol_for(DType dt) {
  switch (dt) {
    case DType::F32: return 1e-5;
    case DType::F64: return 1e-12;
    case DType::BF16: return 1e-2;
    case DType::F16: return 2e-3;
    default: return 0;  // integers and bools: exact
  }
}
// TF32 tensor-core math rounds the operands to 10 mantissa bits: each product is off by ~4e-4 (std), so a
// dot product of random terms is off by ~4e-4 of the output's rms. Elementwise checks use 2e-3 with a floor
// of 2 rms (about 10 standard deviations); an f32 GEMM that silently used TF32 fails the 1e-5 f32 checks.
constexpr double kTf32Rtol = 2e-3;
constexpr double kTf32Floor = 2.0;

// The worst (error / allowed error) seen per comparison label; main() prints the closest calls at exit so
// that one GPU run shows how much headroom each tolerance has.
inline std::map<std::string, double>& margins() {
  static std::map<std::string, double> m;
  return m;
}

inline std::string index_str(const Shape& shape, int64_t flat) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  std::ostringstream o;
  o << '[';
  for (size_t d = 0; d < idx.size(); ++d) o << (d ? "," : "") << idx[d];
  o << ']';
  return o.str();
}

// Compares `got` (any device) with the CPU reference `ref`; one Catch check per tensor. rtol < 0: the
// dtype's default. floor: multiple of rms(ref) added to |ref| in the allowed error.
inline bool compare(const std::string& what, const Tensor& ref, const Tensor& got, double rtol = -1,
                    double floor = 1.0) {
  INFO(what);
  if (!ref.defined() || !got.defined()) {
    CHECK(ref.defined() == got.defined());
    return ref.defined() == got.defined();
  }
  REQUIRE(shape_str(got.shape()) == shape_str(ref.shape()));
  CHECK(dtype_name(got.dtype()) == std::string(dtype_name(ref.dtype())));
  if (rtol < 0) rtol = rtol_for(ref.dtype());
  const std::vector<double> r = ref.to_vector<double>(), g = got.to_vector<double>();
  double ss = 0;
  int64_t nfin = 0;
  for (double v : r)
    if (std::isfinite(v)) {
      ss += v * v;
      ++nfin;
    }
  const double rms = nfin ? std::sqrt(ss / double(nfin)) : 0.0;
  int64_t bad = 0;
  double worst = 0, max_abs = 0;
  std::ostringstream first;
  for (size_t i = 0; i < r.size(); ++i) {
    const double a = r[i], b = g[i];
    bool ok;
    double ratio = 0;
    if (std::isnan(a) || std::isnan(b)) {
      ok = std::isnan(a) && std::isnan(b);
    } else if (std::isinf(a) || std::isinf(b)) {
      ok = a == b;
    } else {
      const double err = std::fabs(a - b), allowed = rtol * (std::fabs(a) + floor * rms);
      max_abs = std::max(max_abs, err);
      ok = err <= allowed;
      ratio = allowed > 0 ? err / allowed : (err > 0 ? 1e30 : 0);
    }
    if (ok) worst = std::max(worst, ratio);
    if (!ok && bad++ < 6)
      first << "\n  at " << index_str(ref.shape(), int64_t(i)) << ": cpu " << a << ", cuda " << b;
  }
  double& m = margins()[what];
  m = std::max(m, bad ? 1e30 : worst);
  if (bad) {
    FAIL_CHECK(what << ": " << bad << " of " << r.size() << " elements differ (rtol " << rtol << ", rms " << rms
                    << ", max abs err " << max_abs << ")" << first.str());
    return false;
  }
  SUCCEED();
  return true;
}

// ---- inputs (always generated on the CPU, so both devices see the same values) ----
inline uint64_t next_seed() {
  static uint64_t s = 1000;
  return ++s;
}
inline Tensor randn_h(const Shape& shape, DType dt = DType::F32, double mean = 0, double std = 1) {
  Generator g(next_seed());
  Tensor t = Tensor::empty(shape, DType::F32);
  normal_(t, mean, std, &g);
  return detail::cast(t, dt);
}
inline Tensor rand_h(const Shape& shape, DType dt = DType::F32, double lo = 0, double hi = 1) {
  Generator g(next_seed());
  Tensor t = Tensor::empty(shape, DType::F32);
  uniform_(t, lo, hi, &g);
  return detail::cast(t, dt);
}
// Integers uniform in [lo, hi).
inline Tensor randint_h(const Shape& shape, int64_t lo, int64_t hi, DType dt = DType::I64) {
  Generator g(next_seed());
  Tensor t = Tensor::empty(shape, DType::F64);
  uniform_(t, double(lo), double(hi), &g);
  std::vector<double> v = t.to_vector<double>();
  std::vector<int64_t> iv(v.size());
  for (size_t i = 0; i < v.size(); ++i) iv[i] = std::min<int64_t>(hi - 1, int64_t(std::floor(v[i])));
  return detail::cast(from_vector(iv, shape), dt);
}
inline Tensor bools_h(const Shape& shape, double p_true = 0.5) {
  return detail::cast(rand_h(shape) < p_true, DType::Bool);
}

// ---- poisoning ----
// Fills the caching allocator with NaN-patterned (0xFF bytes) free blocks of many sizes, so that an op's
// output that the kernel fails to write reads as NaN (floats) / -1 (ints) and the comparison catches it.
// The largest size is MC_CUDA_TEST_POISON_MB (default 16 MiB; smaller under compute-sanitizer).
inline void poison(const std::vector<int64_t>& exact_bytes = {}) {
  static const int64_t max_bytes = [] {
    const char* s = std::getenv("MC_CUDA_TEST_POISON_MB");
    return (s ? std::max<int64_t>(0, std::atoll(s)) : 16) << 20;
  }();
  if (max_bytes <= 0) return;
  std::vector<Tensor> hold;
  auto add = [&](int64_t n) {
    if (n <= 0) return;
    Tensor t = Tensor::empty({n}, DType::U8, gpu());
    backend(gpu()).fill(t, 255);
    hold.push_back(t);
  };
  for (int64_t n : exact_bytes) {
    add(n);
    add(n);
  }
  for (int64_t base = 256; base <= max_bytes; base *= 2)
    for (int j = 0; j < 8; j += 2) add(base + j * (base / 8));
  add(max_bytes * 4);
}  // everything in `hold` returns to the cache here, still holding 0xFF bytes

inline int64_t nbytes(const Tensor& t) { return t.defined() ? t.numel() * int64_t(t.element_size()) : 0; }

// ---- the harness ----
using Fn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

struct Opts {
  double rtol = -1;       // outputs; < 0: by dtype
  double grad_rtol = -1;  // gradients; < 0: by dtype
  double floor = 1.0;     // multiple of rms(ref) in the allowed error
  bool grad = false;      // backward with a fixed random upstream gradient; compare the inputs' gradients
  std::vector<int> grad_inputs;  // which inputs get gradients (default: every floating input)
};

inline Opts exact() {
  Opts o;
  o.rtol = 0;
  return o;
}
inline Opts tol(double rtol, double floor = 1.0) {
  Opts o;
  o.rtol = rtol;
  o.floor = floor;
  return o;
}
// With gradients (rtol < 0: by dtype).
inline Opts grads(double rtol = -1, double grad_rtol = -1) {
  Opts o;
  o.grad = true;
  o.rtol = rtol;
  o.grad_rtol = grad_rtol;
  return o;
}

struct Result {
  std::vector<Tensor> outs, grads;  // on the CPU
};

inline bool wants_grad(const Opts& o, const std::vector<Tensor>& in, size_t i) {
  if (!o.grad || !is_floating(in[i].dtype())) return false;
  if (o.grad_inputs.empty()) return true;
  return std::find(o.grad_inputs.begin(), o.grad_inputs.end(), int(i)) != o.grad_inputs.end();
}

// Runs f on `dev` with copies of the CPU `inputs`. The upstream gradients are drawn from fixed seeds, so
// both devices get the same ones.
inline Result run_on(Device dev, const std::vector<Tensor>& inputs, const Fn& f, const Opts& o,
                     const Result* ref = nullptr) {
  std::vector<Tensor> ins;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor t = detail::contiguous_copy(inputs[i]).to(dev);
    if (wants_grad(o, inputs, i)) t.requires_grad_(true);
    ins.push_back(t);
  }
  if (dev.is_cuda() && ref) {
    std::vector<int64_t> sizes;
    for (auto& t : ref->outs) sizes.push_back(nbytes(t));
    for (auto& t : ref->grads) sizes.push_back(nbytes(t));
    poison(sizes);
  }
  Result r;
  std::vector<Tensor> outs = f(ins);
  for (auto& t : outs) r.outs.push_back(t.defined() ? t.detach().to(host()) : Tensor());
  if (o.grad) {
    bool any = false;
    for (size_t k = 0; k < outs.size(); ++k) {
      if (!outs[k].defined() || !outs[k].requires_grad()) continue;
      Generator g(777 + k);
      Tensor w = Tensor::empty(outs[k].shape(), DType::F32);
      normal_(w, 0, 1, &g);
      outs[k].backward(detail::cast(w, outs[k].dtype()).to(dev), /*retain_graph=*/true);
      any = true;
    }
    REQUIRE(any);
    for (size_t i = 0; i < ins.size(); ++i)
      if (wants_grad(o, inputs, i)) r.grads.push_back(ins[i].grad().defined() ? ins[i].grad().to(host()) : Tensor());
  }
  return r;
}

// Runs f on both devices and compares every output (and gradient).
inline void check_same(const std::string& what, const std::vector<Tensor>& inputs, const Fn& f, const Opts& o = {}) {
  INFO(what);
  const Result c = run_on(host(), inputs, f, o);
  Result g;
  try {
    g = run_on(gpu(), inputs, f, o, &c);
  } catch (const std::exception& e) {
    FAIL_CHECK(what << ": CUDA run threw: " << e.what());
    return;
  }
  REQUIRE(g.outs.size() == c.outs.size());
  for (size_t k = 0; k < c.outs.size(); ++k)
    compare(what + " out" + std::to_string(k), c.outs[k], g.outs[k], o.rtol, o.floor);
  REQUIRE(g.grads.size() == c.grads.size());
  for (size_t k = 0; k < c.grads.size(); ++k) {
    const double rt = o.grad_rtol >= 0 ? o.grad_rtol : (o.rtol >= 0 ? o.rtol : -1);
    compare(what + " grad" + std::to_string(k), c.grads[k], g.grads[k], rt, o.floor);
  }
}

// A one-output body.
inline Fn one(std::function<Tensor(const std::vector<Tensor>&)> f) {
  return [f](const std::vector<Tensor>& in) { return std::vector<Tensor>{f(in)}; };
}

inline std::string label(const std::string& op, const Shape& s, DType dt, const std::string& extra = "") {
  return op + " " + shape_str(s) + " " + dtype_name(dt) + (extra.empty() ? "" : " " + extra);
}

// Sets TF32 for a scope.
struct Tf32Scope {
  bool prev;
  explicit Tf32Scope(bool on) : prev(cuda::tf32()) { cuda::set_tf32(on); }
  ~Tf32Scope() { cuda::set_tf32(prev); }
};

}  // namespace mct
