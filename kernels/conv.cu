// kernels/conv.cu — 2-d convolution (forward, backward-input, backward-weight) on cuDNN.
//
// NCHW tensors, weights [O, C/groups, kh, kw], cross-correlation as torch. cuDNN's legacy convolution API:
// one handle (created on first use, bound to stream() on every call), descriptors per call, and per
// problem (direction, dtype, math mode, batch, sizes, stride, padding, dilation, groups) a cached list of
// candidate algorithms from cudnnGet*Algorithm_v7, best first. The first call of a problem runs the
// candidates in order until one is accepted and remembers it. Math: f32 runs on FMA kernels only
// (CUDNN_DEFAULT_MATH would allow TF32 on this hardware) unless cuda::tf32() is on; bf16/f16 use tensor
// cores with f32 accumulation; f64 computes in f64 where cuDNN has a kernel for it. Workspaces come from
// the caching allocator. Non-contiguous inputs are copied; non-contiguous outputs go through a temporary.
// Batches whose tensors exceed 2^31 - 1 elements are split into chunks of images (backward-weight
// accumulates over the chunks). The bias is added by a small kernel.
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <map>
#include <mutex>
#include <sstream>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

constexpr int64_t kIntMax = 2147483647;

enum class Dir : int { Forward, BackwardData, BackwardFilter };

// Sizes of one convolution (x [N, C, H, W], w [O, C/G, kh, kw], y [N, O, OH, OW]).
struct Geom {
  int64_t N, C, H, W, O, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, G;
  int64_t chw() const { return C * H * W; }
  int64_t ohw() const { return O * OH * OW; }
};

std::string describe(const Geom& g, DType dt) {
  std::ostringstream s;
  s << "input [" << g.N << ", " << g.C << ", " << g.H << ", " << g.W << "], weight [" << g.O << ", " << g.C / g.G
    << ", " << g.kh << ", " << g.kw << "], output [" << g.N << ", " << g.O << ", " << g.OH << ", " << g.OW
    << "], stride (" << g.sh << ", " << g.sw << "), padding (" << g.ph << ", " << g.pw << "), dilation (" << g.dh
    << ", " << g.dw << "), groups " << g.G << ", " << dtype_name(dt);
  return s.str();
}

[[noreturn]] void cudnn_fail(cudnnStatus_t st, const char* what, const char* call, const Geom& g, DType dt) {
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  fail(what, ": ", call, " failed: ", cudnnGetErrorString(st), detail[0] ? " (" : "", detail,
       detail[0] ? ")" : "", " for ", describe(g, dt));
}

#define MC_CUDNN_CALL(call, what, g, dt)                                   \
  do {                                                                     \
    cudnnStatus_t mc_st_ = (call);                                         \
    if (mc_st_ != CUDNN_STATUS_SUCCESS) cudnn_fail(mc_st_, what, #call, g, dt); \
  } while (0)

// x [N, C, H, W], w [O, C/G, kh, kw], y [N, O, OH, OW]: the CPU's checks, the same messages.
Geom make_geom(const char* what, const Tensor& x, const Tensor& w, const Tensor& y, const Conv2dParams& p) {
  MC_CHECK(x.dim() == 4 && w.dim() == 4 && y.dim() == 4, what, ": expects 4-d input, weight and output, got ",
           shape_str(x.shape()), ", ", shape_str(w.shape()), ", ", shape_str(y.shape()));
  Geom g{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), y.size(2), y.size(3), w.size(2), w.size(3),
         p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], p.groups};
  MC_CHECK(g.G > 0 && g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0 && g.ph >= 0 && g.pw >= 0, what,
           ": invalid groups/stride/dilation/padding");
  MC_CHECK(g.C % g.G == 0 && g.O % g.G == 0 && w.size(1) == g.C / g.G, what, ": input ", shape_str(x.shape()),
           " and weight ", shape_str(w.shape()), " do not match for groups = ", g.G);
  const int64_t oh = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  const int64_t ow = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  MC_CHECK(y.size(0) == g.N && y.size(1) == g.O && y.size(2) == oh && y.size(3) == ow, what, ": output ",
           shape_str(y.shape()), " does not match input ", shape_str(x.shape()), " and weight ", shape_str(w.shape()));
  for (int64_t v : {g.C, g.H, g.W, g.O, g.OH, g.OW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.G})
    MC_CHECK(v <= kIntMax, what, ": sizes exceed cuDNN's 32-bit limits for ", shape_str(x.shape()));
  MC_CHECK(g.O * (g.C / g.G) * g.kh * g.kw <= kIntMax, what, ": weight ", shape_str(w.shape()),
           " exceeds 2^31 - 1 elements");
  return g;
}

void check_dtypes(const char* what, std::initializer_list<const Tensor*> ts) {
  const DType dt = (*ts.begin())->dtype();
  for (const Tensor* t : ts)
    MC_CHECK(!t->defined() || t->dtype() == dt, what, ": dtypes differ (", dtype_name(dt), ", ",
             dtype_name(t->dtype()), ")");
  MC_CHECK(dt == DType::F32 || dt == DType::F64 || dt == DType::BF16 || dt == DType::F16, what,
           ": expected a floating dtype, got ", dtype_name(dt));
}

cudnnDataType_t cudnn_type(DType dt) {
  switch (dt) {
    case DType::F32: return CUDNN_DATA_FLOAT;
    case DType::F64: return CUDNN_DATA_DOUBLE;
    case DType::BF16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_HALF;
  }
}

// ---- descriptors (RAII) ----

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() {
    if (cudnnCreateTensorDescriptor(&d) != CUDNN_STATUS_SUCCESS) fail("conv2d: cudnnCreateTensorDescriptor failed");
  }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() {
    if (cudnnCreateFilterDescriptor(&d) != CUDNN_STATUS_SUCCESS) fail("conv2d: cudnnCreateFilterDescriptor failed");
  }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() {
    if (cudnnCreateConvolutionDescriptor(&d) != CUDNN_STATUS_SUCCESS)
      fail("conv2d: cudnnCreateConvolutionDescriptor failed");
  }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// The descriptors of a chunk of nb images.
struct Descs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
};

// The math type a problem starts from (the descriptor's, before a candidate sets its own).
cudnnMathType_t base_math(DType dt) {
  if (dt == DType::F32) return tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  if (dt == DType::BF16 || dt == DType::F16) return CUDNN_TENSOR_OP_MATH;
  return CUDNN_DEFAULT_MATH;
}

void set_descs(Descs& d, const Geom& g, int64_t nb, DType dt, const char* what) {
  const cudnnDataType_t t = cudnn_type(dt);
  MC_CUDNN_CALL(cudnnSetTensor4dDescriptor(d.x.d, CUDNN_TENSOR_NCHW, t, int(nb), int(g.C), int(g.H), int(g.W)), what,
                g, dt);
  MC_CUDNN_CALL(cudnnSetTensor4dDescriptor(d.y.d, CUDNN_TENSOR_NCHW, t, int(nb), int(g.O), int(g.OH), int(g.OW)),
                what, g, dt);
  MC_CUDNN_CALL(
      cudnnSetFilter4dDescriptor(d.w.d, t, CUDNN_TENSOR_NCHW, int(g.O), int(g.C / g.G), int(g.kh), int(g.kw)), what,
      g, dt);
  MC_CUDNN_CALL(cudnnSetConvolution2dDescriptor(d.conv.d, int(g.ph), int(g.pw), int(g.sh), int(g.sw), int(g.dh),
                                                int(g.dw), CUDNN_CROSS_CORRELATION,
                                                dt == DType::F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT),
                what, g, dt);
  MC_CUDNN_CALL(cudnnSetConvolutionGroupCount(d.conv.d, int(g.G)), what, g, dt);
  MC_CUDNN_CALL(cudnnSetConvolutionMathType(d.conv.d, base_math(dt)), what, g, dt);
}

// ---- handle, algorithm cache ----

struct Choice {
  int algo;
  cudnnMathType_t math;
  size_t workspace;
};
struct AlgoEntry {
  std::vector<Choice> candidates;  // best first
  int chosen = -1;                 // the candidate that ran, once one has
};
using AlgoKey = std::array<int64_t, 19>;

struct CudnnState {
  std::mutex mu;  // the handle and the cache serve one call at a time
  cudnnHandle_t handle = nullptr;
  std::map<AlgoKey, AlgoEntry> algos;
};

CudnnState& state() {
  static CudnnState* s = new CudnnState();  // lives for the process (static tensors may outlive main)
  return *s;
}

cudnnHandle_t handle(CudnnState& st, const Geom& g, DType dt, const char* what) {
  if (!st.handle) MC_CUDNN_CALL(cudnnCreate(&st.handle), what, g, dt);
  MC_CUDNN_CALL(cudnnSetStream(st.handle, stream()), what, g, dt);
  return st.handle;
}

// The largest workspace an algorithm may ask for.
size_t workspace_limit() {
  return std::min<size_t>(size_t(4) << 30, props().totalGlobalMem / 8);
}

// Workspace bytes of `algo` for direction `dir` with the conv descriptor's current math type, or false.
bool workspace_of(cudnnHandle_t h, Dir dir, Descs& d, int algo, size_t& bytes) {
  cudnnStatus_t s;
  switch (dir) {
    case Dir::Forward:
      s = cudnnGetConvolutionForwardWorkspaceSize(h, d.x.d, d.w.d, d.conv.d, d.y.d, cudnnConvolutionFwdAlgo_t(algo),
                                                  &bytes);
      break;
    case Dir::BackwardData:
      s = cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w.d, d.y.d, d.conv.d, d.x.d,
                                                       cudnnConvolutionBwdDataAlgo_t(algo), &bytes);
      break;
    default:
      s = cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x.d, d.y.d, d.conv.d, d.w.d,
                                                         cudnnConvolutionBwdFilterAlgo_t(algo), &bytes);
      break;
  }
  return s == CUDNN_STATUS_SUCCESS;
}

// Candidates from cuDNN's heuristics (perf structs of the three directions share their layout of fields).
template <class Perf>
void add_candidates(cudnnHandle_t h, Dir dir, Descs& d, DType dt, const Perf* perf, int n, std::vector<Choice>& out) {
  const bool strict_f32 = dt == DType::F32 && !tf32();
  for (int i = 0; i < n; ++i) {
    const Perf& r = perf[i];
    if (r.status != CUDNN_STATUS_SUCCESS) continue;
    cudnnMathType_t math = r.mathType;
    if (strict_f32) {
      if (math == CUDNN_TENSOR_OP_MATH || math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
      math = CUDNN_FMA_MATH;  // never DEFAULT: on this hardware it permits TF32
    }
    if (cudnnSetConvolutionMathType(d.conv.d, math) != CUDNN_STATUS_SUCCESS) continue;
    size_t ws = 0;
    if (!workspace_of(h, dir, d, int(r.algo), ws)) continue;
    ws = std::max(ws, r.memory);
    if (ws > workspace_limit()) continue;
    bool seen = false;
    for (const Choice& c : out) seen = seen || (c.algo == int(r.algo) && c.math == math);
    if (!seen) out.push_back({int(r.algo), math, ws});
  }
  cudnnSetConvolutionMathType(d.conv.d, base_math(dt));
}

std::vector<Choice> find_candidates(cudnnHandle_t h, Dir dir, Descs& d, const Geom& g, DType dt, const char* what) {
  std::vector<Choice> out;
  int count = 0, got = 0;
  switch (dir) {
    case Dir::Forward: {
      MC_CUDNN_CALL(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count), what, g, dt);
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(size_t(std::max(count, 1)));
      MC_CUDNN_CALL(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.d, d.w.d, d.conv.d, d.y.d, int(perf.size()), &got,
                                                           perf.data()),
                    what, g, dt);
      add_candidates(h, dir, d, dt, perf.data(), got, out);
      break;
    }
    case Dir::BackwardData: {
      MC_CUDNN_CALL(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count), what, g, dt);
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(size_t(std::max(count, 1)));
      MC_CUDNN_CALL(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.d, d.y.d, d.conv.d, d.x.d, int(perf.size()),
                                                                &got, perf.data()),
                    what, g, dt);
      add_candidates(h, dir, d, dt, perf.data(), got, out);
      break;
    }
    case Dir::BackwardFilter: {
      MC_CUDNN_CALL(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count), what, g, dt);
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(size_t(std::max(count, 1)));
      MC_CUDNN_CALL(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.d, d.y.d, d.conv.d, d.w.d, int(perf.size()),
                                                                  &got, perf.data()),
                    what, g, dt);
      add_candidates(h, dir, d, dt, perf.data(), got, out);
      break;
    }
  }
  if (out.empty())
    fail(what, ": cuDNN offers no algorithm",
         dt == DType::F64 ? " in f64 (f64 convolutions are meant for CPU gradient checks)" : "", " for ",
         describe(g, dt));
  return out;
}

cudnnStatus_t execute(cudnnHandle_t h, Dir dir, Descs& d, const Choice& c, DType dt, const void* x, const void* w,
                      const void* y, void* dst, bool accumulate, void* ws) {
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const bool f64 = dt == DType::F64;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = accumulate ? alpha : f64 ? static_cast<const void*>(&zero_d) : &zero_f;
  cudnnStatus_t s = cudnnSetConvolutionMathType(d.conv.d, c.math);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  switch (dir) {
    case Dir::Forward:
      return cudnnConvolutionForward(h, alpha, d.x.d, x, d.w.d, w, d.conv.d, cudnnConvolutionFwdAlgo_t(c.algo), ws,
                                     c.workspace, beta, d.y.d, dst);
    case Dir::BackwardData:
      return cudnnConvolutionBackwardData(h, alpha, d.w.d, w, d.y.d, y, d.conv.d,
                                          cudnnConvolutionBwdDataAlgo_t(c.algo), ws, c.workspace, beta, d.x.d, dst);
    default:
      return cudnnConvolutionBackwardFilter(h, alpha, d.x.d, x, d.y.d, y, d.conv.d,
                                            cudnnConvolutionBwdFilterAlgo_t(c.algo), ws, c.workspace, beta, d.w.d,
                                            dst);
  }
}

// Runs one direction over the whole batch. x, w, y are contiguous device buffers in the roles of the
// forward (input, weight, output); `dst` is the one written: y (Forward), x (BackwardData), w (BackwardFilter).
void run(Dir dir, const Geom& g, DType dt, const void* x, const void* w, const void* y, void* dst, const char* what) {
  const int64_t es = int64_t(dtype_size(dt));
  const int64_t per_image = std::max<int64_t>(1, std::max(g.chw(), g.ohw()));
  MC_CHECK(per_image <= kIntMax, what, ": one image exceeds cuDNN's 2^31 - 1 element limit for ", describe(g, dt));
  const int64_t chunk = std::max<int64_t>(1, std::min(g.N, kIntMax / per_image));

  CudnnState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  cudnnHandle_t h = handle(st, g, dt, what);
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    Descs d;
    set_descs(d, g, nb, dt, what);
    const AlgoKey key{int64_t(dir), int64_t(dt), int64_t(base_math(dt)), nb, g.C, g.H, g.W, g.O, g.kh, g.kw,
                      g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.G, g.OH, g.OW};
    auto it = st.algos.find(key);
    if (it == st.algos.end()) it = st.algos.emplace(key, AlgoEntry{find_candidates(h, dir, d, g, dt, what), -1}).first;
    AlgoEntry& e = it->second;

    const char* xc = static_cast<const char*>(x) + (x ? n0 * g.chw() * es : 0);
    const char* yc = static_cast<const char*>(y) + (y ? n0 * g.ohw() * es : 0);
    char* dc = static_cast<char*>(dst);
    if (dir == Dir::Forward) dc += n0 * g.ohw() * es;
    if (dir == Dir::BackwardData) dc += n0 * g.chw() * es;
    const bool accumulate = dir == Dir::BackwardFilter && n0 > 0;

    cudnnStatus_t last = CUDNN_STATUS_SUCCESS;
    bool done = false;
    for (int i = std::max(e.chosen, 0); i < int(e.candidates.size()) && !done; ++i) {
      const Choice& c = e.candidates[size_t(i)];
      Tensor ws;
      if (c.workspace > 0) {
        if (e.chosen >= 0) {
          ws = scratch(int64_t(c.workspace));
        } else {
          try {
            ws = scratch(int64_t(c.workspace));
          } catch (const Error&) {
            continue;  // not enough memory for this one: try the next candidate
          }
        }
      }
      last = execute(h, dir, d, c, dt, xc, w, yc, dc, accumulate, ws.defined() ? ws.raw_data() : nullptr);
      if (last == CUDNN_STATUS_SUCCESS) {
        e.chosen = i;
        done = true;
      } else if (e.chosen >= 0) {
        break;  // the accepted algorithm failed: a real error
      }
    }
    if (!done) {
      const char* call = dir == Dir::Forward        ? "cudnnConvolutionForward"
                         : dir == Dir::BackwardData ? "cudnnConvolutionBackwardData"
                                                    : "cudnnConvolutionBackwardFilter";
      if (last == CUDNN_STATUS_SUCCESS)
        fail(what, ": ", call, ": no candidate algorithm could get its workspace for ", describe(g, dt));
      cudnn_fail(last, what, call, g, dt);
    }
  }
}

// ---- bias ----

template <class T>
__global__ void add_bias_kernel(T* out, const T* bias, int64_t total, int64_t plane, int64_t channels) {
  using C = acc_of<T>;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / plane) % channels;
    if constexpr (std::is_same_v<T, double>) {
      out[i] += bias[c];
    } else {
      out[i] = from_float<T>(to_float(out[i]) + to_float(bias[c]));
    }
  }
}

void add_bias(const Tensor& out, const Tensor& bias, const char* what) {
  const Tensor b = contiguous(bias);
  const int64_t total = out.numel(), plane = out.size(2) * out.size(3), channels = out.size(1);
  if (total == 0 || plane == 0) return;
  MC_CUDA_DISPATCH_FLOAT(out.dtype(), what, T, {
    add_bias_kernel<T><<<blocks_for(total, 256), 256, 0, stream()>>>(dptr<T>(out), dptr<const T>(b), total, plane,
                                                                     channels);
    MC_CUDA_LAUNCHED(what);
  });
}

Tensor target_for(const Tensor& t) {
  return t.is_contiguous() ? t : Tensor::empty(t.shape(), t.dtype(), Device::cuda(0));
}

void store_back(const Tensor& out, const Tensor& computed) {
  if (!computed.is_same(out)) copy(out, computed);
}

}  // namespace

void conv2d(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  const char* what = "conv2d";
  const Geom g = make_geom(what, x, w, out, p);
  check_dtypes(what, {&out, &x, &w, &bias});
  MC_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == g.O), "conv2d: bias ", shape_str(bias.shape()),
           " does not match ", g.O, " output channels");
  if (out.numel() == 0) return;
  const Tensor oc = target_for(out);
  if (x.numel() == 0) {  // no input channels: only the bias remains
    fill(oc, 0);
  } else {
    const Tensor xc = contiguous(x), wc = contiguous(w);
    run(Dir::Forward, g, out.dtype(), xc.raw_data(), wc.raw_data(), nullptr, oc.raw_data(), what);
  }
  if (bias.defined()) add_bias(oc, bias, what);
  store_back(out, oc);
}

void conv2d_backward_input(const Tensor& gx, const Tensor& gy, const Tensor& w, const Conv2dParams& p) {
  const char* what = "conv2d_backward_input";
  const Geom g = make_geom(what, gx, w, gy, p);
  check_dtypes(what, {&gx, &gy, &w});
  if (gx.numel() == 0) return;
  const Tensor gc = target_for(gx);
  if (gy.numel() == 0 || g.O == 0) {
    fill(gc, 0);
  } else {
    const Tensor gyc = contiguous(gy), wc = contiguous(w);
    run(Dir::BackwardData, g, gx.dtype(), nullptr, wc.raw_data(), gyc.raw_data(), gc.raw_data(), what);
  }
  store_back(gx, gc);
}

void conv2d_backward_weight(const Tensor& gw, const Tensor& gy, const Tensor& x, const Conv2dParams& p) {
  const char* what = "conv2d_backward_weight";
  const Geom g = make_geom(what, x, gw, gy, p);
  check_dtypes(what, {&gw, &gy, &x});
  if (gw.numel() == 0) return;
  const Tensor gc = target_for(gw);
  if (g.N == 0 || g.OH * g.OW == 0) {
    fill(gc, 0);
  } else {
    const Tensor gyc = contiguous(gy), xc = contiguous(x);
    run(Dir::BackwardFilter, g, gw.dtype(), xc.raw_data(), nullptr, gyc.raw_data(), gc.raw_data(), what);
  }
  store_back(gw, gc);
}

}  // namespace mc::cuda
