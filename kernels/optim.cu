// kernels/optim.cu — fused optimizer updates (Adam / AdamW / Adamax, SGD with momentum and Nesterov).
//
// The per-element arithmetic is mc/cpu/optim.hpp's, in the same order and in the same compute type (f32 for
// f32 / bf16 / f16 parameters, f64 for f64), with every operation rounded on its own (no fused
// multiply-add contraction): the update is ill-conditioned where the gradient is near zero (m / sqrt(v) is
// then a ratio of tiny numbers), so one rounding less would move such elements by up to lr. The results
// equal the CPU's bit for bit when the CPU code is compiled without contraction (GCC below -O2, or
// -ffp-contract=off); a CPU build at -O2+ with FMA (-march=x86-64-v3) contracts and differs there. Parameters and gradients share a dtype; the state (m, v or
// the momentum buffer) has the parameter's dtype, as the CPU backend requires, or f32 under bf16 / f16
// parameters (a CUDA-only extension).
//
// Multi-tensor launches: one launch updates up to kMaxTensors tensors. The tensors are cut into chunks of
// kChunk elements; CUDA block b handles chunk b of the concatenation, finding its tensor in a table of
// pointers and chunk offsets passed by value (__grid_constant__, read in place from parameter memory).
// The single-tensor primitives are the multi-tensor path with one tensor.
#include <cmath>
#include <vector>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {

namespace {

constexpr int kMaxTensors = 48;      // ~2.3 KB of kernel parameters, below the classic 4 KB limit
constexpr int64_t kChunk = 16384;    // elements per CUDA block
constexpr int kThreads = 256;
constexpr int64_t kMaxChunksPerLaunch = int64_t(1) << 30;  // gridDim.x limit is 2^31 - 1

template <class C, class T>
__device__ __forceinline__ C ld(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return C(v);
}
template <class T, class C>
__device__ __forceinline__ T st(C v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return T(v);
}

// Individually rounded operations (never contracted into FMAs).
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }

template <class C>
__device__ __forceinline__ C abs_c(C v) {
  if constexpr (std::is_same_v<C, float>) return fabsf(v);
  else return fabs(v);
}
template <class C>
__device__ __forceinline__ C sqrt_c(C v) {
  if constexpr (std::is_same_v<C, float>) return sqrtf(v);
  else return sqrt(v);
}

// Tensor index of chunk `chunk` in a table whose first_chunk[] is increasing (at most kMaxTensors entries;
// all threads of a block read the same entries).
__device__ __forceinline__ int find_tensor(const int64_t* first_chunk, int count, int64_t chunk) {
  int t = 0;
  while (t + 1 < count && first_chunk[t + 1] <= chunk) ++t;
  return t;
}

// ---------------------------------------------------------------------------------------------- Adam ----

struct AdamTable {
  void* p[kMaxTensors];
  const void* g[kMaxTensors];
  void* m[kMaxTensors];
  void* v[kMaxTensors];
  int64_t n[kMaxTensors];
  int64_t first_chunk[kMaxTensors + 1];
  int count;
};

// Hyper-parameters in f64, converted to the compute type in the kernel exactly as the CPU converts them.
struct AdamArgs {
  double lr, beta1, beta2, eps, wd;
  double bc1;       // 1 - beta1^step
  double bc2_sqrt;  // sqrt(1 - beta2^step)
  AdamKind kind;
};

template <class T, class S>
__global__ void __launch_bounds__(kThreads) adam_kernel(const __grid_constant__ AdamTable tab, const AdamArgs a) {
  using C = acc_of<T>;
  const int64_t chunk = blockIdx.x;
  const int t = find_tensor(tab.first_chunk, tab.count, chunk);
  const int64_t begin = (chunk - tab.first_chunk[t]) * kChunk;
  const int64_t end = begin + kChunk < tab.n[t] ? begin + kChunk : tab.n[t];
  T* __restrict__ w = static_cast<T*>(tab.p[t]);
  const T* __restrict__ g = static_cast<const T*>(tab.g[t]);
  S* __restrict__ mm = static_cast<S*>(tab.m[t]);
  S* __restrict__ vv = static_cast<S*>(tab.v[t]);
  const C b1 = C(a.beta1), b2 = C(a.beta2), eps = C(a.eps), wd = C(a.wd), lr = C(a.lr);
  const C bc1 = C(a.bc1), bc2_sqrt = C(a.bc2_sqrt);
  const C decay = sub(C(1), mul(lr, wd)), one_b1 = sub(C(1), b1), one_b2 = sub(C(1), b2), step = div(lr, bc1);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    C wi = ld<C>(w[i]), gi = ld<C>(g[i]);
    if (a.kind == AdamKind::AdamW) wi = mul(wi, decay);  // wi *= 1 - lr * wd
    else gi = add(gi, mul(wd, wi));                       // gi += wd * wi
    const C mi = add(mul(b1, ld<C>(mm[i])), mul(one_b1, gi));
    mm[i] = st<S>(mi);
    if (a.kind == AdamKind::Adamax) {
      const C x = mul(b2, ld<C>(vv[i])), y = add(abs_c(gi), eps);
      const C ui = x < y ? y : x;  // std::max(x, y): x unless x < y (NaN handling included)
      vv[i] = st<S>(ui);
      wi = sub(wi, div(mul(step, mi), ui));  // wi -= (lr / bc1) * mi / ui
    } else {
      const C vi = add(mul(b2, ld<C>(vv[i])), mul(mul(one_b2, gi), gi));
      vv[i] = st<S>(vi);
      wi = sub(wi, div(mul(step, mi), add(div(sqrt_c(vi), bc2_sqrt), eps)));  // (sqrt(v) / bc2_sqrt + eps)
    }
    w[i] = st<T>(wi);
  }
}

struct AdamItem {
  const Tensor *p, *g, *m, *v;
};

template <class T, class S>
void launch_adam(const std::vector<AdamItem>& items, const AdamArgs& args) {
  AdamTable tab{};
  int64_t chunks = 0;
  auto flush = [&] {
    if (tab.count == 0) return;
    tab.first_chunk[tab.count] = chunks;
    adam_kernel<T, S><<<unsigned(chunks), kThreads, 0, stream()>>>(tab, args);
    MC_CUDA_LAUNCHED("adam_step");
    tab = AdamTable{};
    chunks = 0;
  };
  for (const AdamItem& it : items) {
    const int64_t n = it.p->numel();
    if (n == 0) continue;
    const int64_t c = (n + kChunk - 1) / kChunk;
    MC_CHECK(c <= kMaxChunksPerLaunch, "adam_step: tensor of ", n, " elements is too large for one launch");
    if (tab.count == kMaxTensors || chunks + c > kMaxChunksPerLaunch) flush();
    const int k = tab.count++;
    tab.p[k] = it.p->raw_data();
    tab.g[k] = it.g->raw_data();
    tab.m[k] = it.m->raw_data();
    tab.v[k] = it.v->raw_data();
    tab.n[k] = n;
    tab.first_chunk[k] = chunks;
    chunks += c;
  }
  flush();
}

// ----------------------------------------------------------------------------------------------- SGD ----

struct SgdTable {
  void* p[kMaxTensors];
  const void* g[kMaxTensors];
  void* buf[kMaxTensors];  // null: no momentum
  int64_t n[kMaxTensors];
  int64_t first_chunk[kMaxTensors + 1];
  int count;
};

struct SgdArgs {
  double lr, momentum, dampening, wd;
  bool nesterov, first_step;
};

template <class T, class S>
__global__ void __launch_bounds__(kThreads) sgd_kernel(const __grid_constant__ SgdTable tab, const SgdArgs a) {
  using C = acc_of<T>;
  const int64_t chunk = blockIdx.x;
  const int t = find_tensor(tab.first_chunk, tab.count, chunk);
  const int64_t begin = (chunk - tab.first_chunk[t]) * kChunk;
  const int64_t end = begin + kChunk < tab.n[t] ? begin + kChunk : tab.n[t];
  T* __restrict__ w = static_cast<T*>(tab.p[t]);
  const T* __restrict__ g = static_cast<const T*>(tab.g[t]);
  S* __restrict__ bb = static_cast<S*>(tab.buf[t]);
  const C lr = C(a.lr), mom = C(a.momentum), damp = C(a.dampening), wd = C(a.wd);
  const C one_damp = sub(C(1), damp);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const C wi = ld<C>(w[i]);
    C gi = add(ld<C>(g[i]), mul(wd, wi));
    if (bb) {
      const C b = a.first_step ? gi : add(mul(mom, ld<C>(bb[i])), mul(one_damp, gi));
      bb[i] = st<S>(b);
      gi = a.nesterov ? add(gi, mul(mom, b)) : b;
    }
    w[i] = st<T>(sub(wi, mul(lr, gi)));
  }
}

struct SgdItem {
  const Tensor *p, *g, *b;
};

template <class T, class S>
void launch_sgd(const std::vector<SgdItem>& items, const SgdArgs& args) {
  SgdTable tab{};
  int64_t chunks = 0;
  auto flush = [&] {
    if (tab.count == 0) return;
    tab.first_chunk[tab.count] = chunks;
    sgd_kernel<T, S><<<unsigned(chunks), kThreads, 0, stream()>>>(tab, args);
    MC_CUDA_LAUNCHED("sgd_step");
    tab = SgdTable{};
    chunks = 0;
  };
  for (const SgdItem& it : items) {
    const int64_t n = it.p->numel();
    if (n == 0) continue;
    const int64_t c = (n + kChunk - 1) / kChunk;
    MC_CHECK(c <= kMaxChunksPerLaunch, "sgd_step: tensor of ", n, " elements is too large for one launch");
    if (tab.count == kMaxTensors || chunks + c > kMaxChunksPerLaunch) flush();
    const int k = tab.count++;
    tab.p[k] = it.p->raw_data();
    tab.g[k] = it.g->raw_data();
    tab.buf[k] = it.b->defined() ? it.b->raw_data() : nullptr;
    tab.n[k] = n;
    tab.first_chunk[k] = chunks;
    chunks += c;
  }
  flush();
}

// ------------------------------------------------------------------------------------------ checks ----

void check_tensor(const char* op, const Tensor& t, const char* what, const Tensor& param) {
  MC_CHECK(t.device().is_cuda(), op, ": ", what, " is on ", t.device().str(), ", expected the GPU");
  MC_CHECK(t.is_contiguous(), op, ": tensors must be contiguous (", what, " is not)");
  MC_CHECK(t.numel() == param.numel(), op, ": ", what, " has ", t.numel(), " elements, the parameter ", param.numel());
}

// The state dtype allowed with parameter dtype pd: the same, or f32 under a half type.
bool state_dtype_ok(DType pd, DType sd) {
  return sd == pd || (sd == DType::F32 && (pd == DType::BF16 || pd == DType::F16));
}

// Runs launch<T, S>(subset) for each (parameter dtype, state dtype) pair present in `items`.
template <class Item, class Launch>
void by_dtypes(const char* op, const std::vector<Item>& items, DType (*state_of)(const Item&), Launch&& launch) {
  std::vector<bool> done(items.size(), false);
  for (size_t i = 0; i < items.size(); ++i) {
    if (done[i]) continue;
    const DType pd = items[i].p->dtype(), sd = state_of(items[i]);
    std::vector<Item> sub;
    for (size_t j = i; j < items.size(); ++j)
      if (!done[j] && items[j].p->dtype() == pd && state_of(items[j]) == sd) {
        sub.push_back(items[j]);
        done[j] = true;
      }
    if (sd == pd) {
      MC_CUDA_DISPATCH_FLOAT(pd, op, T, launch.template operator()<T, T>(sub));
    } else if (pd == DType::BF16) {
      launch.template operator()<__nv_bfloat16, float>(sub);
    } else {
      launch.template operator()<__half, float>(sub);
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------- entry ----

void adam_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& ms,
                     const std::vector<Tensor>& vs, const AdamParams& p) {
  MC_CHECK(grads.size() == params.size() && ms.size() == params.size() && vs.size() == params.size(),
           "adam_step: ", params.size(), " params but ", grads.size(), " grads, ", ms.size(), " / ", vs.size(),
           " state tensors");
  std::vector<AdamItem> items;
  items.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor &w = params[i], &g = grads[i], &m = ms[i], &v = vs[i];
    check_tensor("adam_step", w, "the parameter", w);
    check_tensor("adam_step", g, "the gradient", w);
    check_tensor("adam_step", m, "the first moment", w);
    check_tensor("adam_step", v, "the second moment", w);
    MC_CHECK(is_floating(w.dtype()), "adam_step: expected a floating parameter, got ", dtype_name(w.dtype()));
    MC_CHECK(g.dtype() == w.dtype(), "adam_step: gradient dtype ", dtype_name(g.dtype()), " differs from the parameter's ",
             dtype_name(w.dtype()));
    MC_CHECK(m.dtype() == v.dtype() && state_dtype_ok(w.dtype(), m.dtype()), "adam_step: state dtypes ",
             dtype_name(m.dtype()), " / ", dtype_name(v.dtype()), " do not fit a ", dtype_name(w.dtype()),
             " parameter (expected its dtype, or f32 under bf16 / f16)");
    items.push_back({&w, &g, &m, &v});
  }
  AdamArgs args{p.lr,
                p.beta1,
                p.beta2,
                p.eps,
                p.weight_decay,
                1 - std::pow(p.beta1, double(p.step)),
                std::sqrt(1 - std::pow(p.beta2, double(p.step))),
                p.kind};
  by_dtypes("adam_step", items, +[](const AdamItem& it) { return it.m->dtype(); },
            [&]<class T, class S>(const std::vector<AdamItem>& sub) { launch_adam<T, S>(sub, args); });
}

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamParams& p) {
  adam_step_multi({param}, {grad}, {m}, {v}, p);
}

void sgd_step_multi(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& bufs,
                    const SgdParams& p) {
  MC_CHECK(grads.size() == params.size() && bufs.size() == params.size(), "sgd_step: ", params.size(),
           " params but ", grads.size(), " grads, ", bufs.size(), " buffers");
  std::vector<SgdItem> items;
  items.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor &w = params[i], &g = grads[i], &b = bufs[i];
    check_tensor("sgd_step", w, "the parameter", w);
    check_tensor("sgd_step", g, "the gradient", w);
    MC_CHECK(is_floating(w.dtype()), "sgd_step: expected a floating parameter, got ", dtype_name(w.dtype()));
    MC_CHECK(g.dtype() == w.dtype(), "sgd_step: gradient dtype ", dtype_name(g.dtype()), " differs from the parameter's ",
             dtype_name(w.dtype()));
    if (b.defined()) {
      check_tensor("sgd_step", b, "the momentum buffer", w);
      MC_CHECK(state_dtype_ok(w.dtype(), b.dtype()), "sgd_step: momentum buffer dtype ", dtype_name(b.dtype()),
               " does not fit a ", dtype_name(w.dtype()), " parameter (expected its dtype, or f32 under bf16 / f16)");
    }
    items.push_back({&w, &g, &b});
  }
  const SgdArgs args{p.lr, p.momentum, p.dampening, p.weight_decay, p.nesterov, p.first_step};
  // Without a buffer the state dtype is irrelevant: group such tensors with their own dtype.
  by_dtypes("sgd_step", items, +[](const SgdItem& it) { return it.b->defined() ? it.b->dtype() : it.p->dtype(); },
            [&]<class T, class S>(const std::vector<SgdItem>& sub) { launch_sgd<T, S>(sub, args); });
}

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor& buf, const SgdParams& p) {
  sgd_step_multi({param}, {grad}, {buf}, p);
}

}  // namespace mc::cuda
