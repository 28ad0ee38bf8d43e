// kernels/pool.cu — max / average / adaptive-average 2-d pooling (NCHW) and their backward (the pooling
// part of mc/cpu/conv.hpp is the reference: same windows, same visiting order, same divisors).
//
// Forward kernels run a thread per output element. max_pool2d records the flat index h*W + w of the chosen
// input within its (n, c) plane; as on the CPU (and torch) the first strict maximum wins, a NaN beats
// everything and the last NaN wins. The average-pool backward passes are gathers (a thread per input
// element visits the outputs whose window covers it, in the CPU's order, and stores once), so they are
// deterministic and match the CPU's rounding. max_pool2d_backward has only the indices, not the window
// geometry, so it scatters with atomic adds (f32 for the halves, then one rounding): where windows overlap,
// f32 sums may differ from the CPU's in the last bit. Indices outside the plane are skipped (the CPU
// raises an error; they cannot come from max_pool2d).
// bf16/f16 compute in f32, f64 in f64. Inputs are made contiguous, non-contiguous outputs are written
// through a contiguous temporary.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

constexpr int kThreads = 256;

template <class T> struct comp { using type = float; };
template <> struct comp<double> { using type = double; };
template <class T> using comp_t = typename comp<T>::type;

template <class T> __device__ __forceinline__ comp_t<T> ld(T v) { return comp_t<T>(v); }
template <> __device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float ld(__half v) { return __half2float(v); }
template <class T> __device__ __forceinline__ T st(comp_t<T> v) { return T(v); }
template <> __device__ __forceinline__ __nv_bfloat16 st(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half st(float v) { return __float2half_rn(v); }

struct Geo {
  int64_t planes, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool count_include_pad;
};

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

#define MC_POOL_LOOP(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <class T>
__global__ void __launch_bounds__(kThreads) max_pool_kernel(T* y, int64_t* ind, const T* x, Geo g, int64_t total) {
  using C = comp_t<T>;
  MC_POOL_LOOP(e, total) {
    const int64_t ow = e % g.OW, t = e / g.OW, oh = t % g.OH, pl = t / g.OH;
    const T* xs = x + pl * g.H * g.W;
    const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    const int64_t ih0 = h0 >= 0 ? h0 : h0 + ceil_div(-h0, g.dh) * g.dh;  // first row inside the input
    const int64_t iw0 = w0 >= 0 ? w0 : w0 + ceil_div(-w0, g.dw) * g.dw;
    const int64_t ih1 = imin(h0 + (g.kh - 1) * g.dh + 1, g.H), iw1 = imin(w0 + (g.kw - 1) * g.dw + 1, g.W);
    C best = -std::numeric_limits<C>::infinity();
    int64_t bi = imin(ih0, g.H - 1) * g.W + imin(iw0, g.W - 1), nan_at = -1;
    for (int64_t ih = ih0; ih < ih1; ih += g.dh) {
      const T* row = xs + ih * g.W;
      for (int64_t iw = iw0; iw < iw1; iw += g.dw) {
        const C v = ld(row[iw]);
        if (v > best) {
          best = v;
          bi = ih * g.W + iw;
        }
        if (v != v) nan_at = ih * g.W + iw;
      }
    }
    if (nan_at >= 0) {
      best = ld(xs[nan_at]);
      bi = nan_at;
    }
    y[e] = st<T>(best);
    ind[e] = bi;
  }
}

// acc (planes * H * W, compute type, zeroed) += gy at the recorded indices.
template <class T, class A>
__global__ void __launch_bounds__(kThreads) max_pool_bwd_kernel(A* acc, const T* gy, const int64_t* ind, int64_t hw,
                                                                int64_t ohw, int64_t total) {
  MC_POOL_LOOP(e, total) {
    const int64_t k = ind[e];
    if (k < 0 || k >= hw) continue;
    atomicAdd(acc + (e / ohw) * hw + k, A(ld(gy[e])));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) store_kernel(T* dst, const float* src, int64_t n) {
  MC_POOL_LOOP(i, n) dst[i] = st<T>(src[i]);
}

// The CPU's avg_window: rows [h0, h1) and columns [w0, w1) clipped to the input, and the divisor.
struct Window {
  int64_t h0, h1, w0, w1, div;
};
__device__ __forceinline__ Window avg_window(int64_t oh, int64_t ow, const Geo& g) {
  int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  int64_t h1 = imin(h0 + g.kh, g.H + g.ph), w1 = imin(w0 + g.kw, g.W + g.pw);
  const int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = imax(h0, 0);
  w0 = imax(w0, 0);
  h1 = imin(h1, g.H);
  w1 = imin(w1, g.W);
  const int64_t inside = imax(0, h1 - h0) * imax(0, w1 - w0);
  return {h0, h1, w0, w1, g.count_include_pad ? padded : inside};
}

template <class T>
__global__ void __launch_bounds__(kThreads) avg_pool_kernel(T* y, const T* x, Geo g, int64_t total) {
  using C = comp_t<T>;
  MC_POOL_LOOP(e, total) {
    const int64_t ow = e % g.OW, t = e / g.OW, oh = t % g.OH, pl = t / g.OH;
    const T* xs = x + pl * g.H * g.W;
    const Window a = avg_window(oh, ow, g);
    C s = 0;
    for (int64_t ih = a.h0; ih < a.h1; ++ih)
      for (int64_t iw = a.w0; iw < a.w1; ++iw) s += ld(xs[ih * g.W + iw]);
    y[e] = st<T>(a.div > 0 ? s / C(a.div) : C(0));
  }
}

// A thread per input element; visits the outputs whose window holds it, in the CPU's (oh, ow) order.
template <class T>
__global__ void __launch_bounds__(kThreads) avg_pool_bwd_kernel(T* gx, const T* gy, Geo g, int64_t total) {
  using C = comp_t<T>;
  MC_POOL_LOOP(e, total) {
    const int64_t iw = e % g.W, t = e / g.W, ih = t % g.H, pl = t / g.H;
    const T* gs = gy + pl * g.OH * g.OW;
    const int64_t oh0 = imax(0, floor_div(ih + g.ph - g.kh, g.sh) + 1), oh1 = imin(g.OH - 1, floor_div(ih + g.ph, g.sh));
    const int64_t ow0 = imax(0, floor_div(iw + g.pw - g.kw, g.sw) + 1), ow1 = imin(g.OW - 1, floor_div(iw + g.pw, g.sw));
    C acc = 0;
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const Window a = avg_window(oh, ow, g);
        if (a.div <= 0 || ih < a.h0 || ih >= a.h1 || iw < a.w0 || iw >= a.w1) continue;
        acc += ld(gs[oh * g.OW + ow]) / C(a.div);
      }
    gx[e] = st<T>(acc);
  }
}

// Bin i of n over a length-L axis: [floor(i*L/n), ceil((i+1)*L/n)).
__device__ __forceinline__ void adaptive_bin(int64_t i, int64_t L, int64_t n, int64_t& lo, int64_t& hi) {
  lo = (i * L) / n;
  hi = ((i + 1) * L + n - 1) / n;
}

template <class T>
__global__ void __launch_bounds__(kThreads) adaptive_kernel(T* y, const T* x, Geo g, int64_t total) {
  using C = comp_t<T>;
  MC_POOL_LOOP(e, total) {
    const int64_t ow = e % g.OW, t = e / g.OW, oh = t % g.OH, pl = t / g.OH;
    const T* xs = x + pl * g.H * g.W;
    int64_t h0, h1, w0, w1;
    adaptive_bin(oh, g.H, g.OH, h0, h1);
    adaptive_bin(ow, g.W, g.OW, w0, w1);
    C s = 0;
    for (int64_t ih = h0; ih < h1; ++ih)
      for (int64_t iw = w0; iw < w1; ++iw) s += ld(xs[ih * g.W + iw]);
    y[e] = st<T>(s / C((h1 - h0) * (w1 - w0)));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) adaptive_bwd_kernel(T* gx, const T* gy, Geo g, int64_t total) {
  using C = comp_t<T>;
  MC_POOL_LOOP(e, total) {
    const int64_t iw = e % g.W, t = e / g.W, ih = t % g.H, pl = t / g.H;
    const T* gs = gy + pl * g.OH * g.OW;
    // Bins holding ih: oh in [floor(ih*OH/H), ceil((ih+1)*OH/H)); each candidate is checked exactly.
    const int64_t oh0 = (ih * g.OH) / g.H, oh1 = imin(g.OH, ((ih + 1) * g.OH + g.H - 1) / g.H);
    const int64_t ow0 = (iw * g.OW) / g.W, ow1 = imin(g.OW, ((iw + 1) * g.OW + g.W - 1) / g.W);
    C acc = 0;
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      int64_t h0, h1;
      adaptive_bin(oh, g.H, g.OH, h0, h1);
      if (ih < h0 || ih >= h1) continue;
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        int64_t w0, w1;
        adaptive_bin(ow, g.W, g.OW, w0, w1);
        if (iw < w0 || iw >= w1) continue;
        acc += ld(gs[oh * g.OW + ow]) / C((h1 - h0) * (w1 - w0));
      }
    }
    gx[e] = st<T>(acc);
  }
}

Geo geometry(const char* what, const Tensor& x, const Tensor& y) {
  MC_CHECK(x.dim() == 4 && y.dim() == 4 && x.size(0) == y.size(0) && x.size(1) == y.size(1), what,
           ": expects 4-d input and output with equal N and C, got ", shape_str(x.shape()), " and ",
           shape_str(y.shape()));
  MC_CHECK(x.dtype() == y.dtype(), what, ": dtypes differ (", dtype_name(x.dtype()), ", ", dtype_name(y.dtype()), ")");
  Geo g{};
  g.planes = x.size(0) * x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.OH = y.size(2);
  g.OW = y.size(3);
  return g;
}

void set_params(Geo& g, const Pool2dParams& p) {
  g.kh = p.kernel[0];
  g.kw = p.kernel[1];
  g.sh = p.stride[0];
  g.sw = p.stride[1];
  g.ph = p.padding[0];
  g.pw = p.padding[1];
  g.dh = p.dilation[0];
  g.dw = p.dilation[1];
  g.count_include_pad = p.count_include_pad;
}

void check_avg_params(const char* what, const Pool2dParams& p) {
  MC_CHECK(p.kernel[0] > 0 && p.kernel[1] > 0 && p.stride[0] > 0 && p.stride[1] > 0 && p.padding[0] >= 0 &&
               p.padding[1] >= 0,
           what, ": invalid kernel/stride/padding");
}

Tensor dense(const Tensor& t) { return t.is_contiguous() ? t : contiguous(t); }
Tensor dense_target(const Tensor& t) {
  return t.is_contiguous() ? t : Tensor::empty(t.shape(), t.dtype(), t.device());
}
void store_back(const Tensor& dst, const Tensor& tmp) {
  if (!tmp.is_same(dst)) copy(dst, tmp);
}

unsigned grid_for(int64_t n) { return blocks_for(n, kThreads); }

// max_pool2d_backward for one dtype: f32 / f64 accumulate straight into (a contiguous) gx, the halves into
// an f32 buffer rounded once at the end.
template <class T>
void max_pool_backward_typed(const Tensor& gx, const Tensor& gy, const Tensor& ind, const Geo& g) {
  using C = comp_t<T>;
  const int64_t hw = g.H * g.W, ohw = g.OH * g.OW, total = gy.numel();
  if constexpr (std::is_same_v<C, T>) {
    const Tensor acc = dense_target(gx);
    MC_CUDA_CHECK(cudaMemsetAsync(acc.raw_data(), 0, size_t(acc.numel()) * sizeof(T), stream()),
                  "max_pool2d_backward");
    if (total > 0) {
      max_pool_bwd_kernel<T, T><<<grid_for(total), kThreads, 0, stream()>>>(dptr<T>(acc), dptr<const T>(gy),
                                                                            dptr<const int64_t>(ind), hw, ohw, total);
      MC_CUDA_LAUNCHED("max_pool2d_backward");
    }
    store_back(gx, acc);
  } else {
    Tensor acc = scratch(gx.numel() * int64_t(sizeof(float)));
    float* ap = static_cast<float*>(acc.raw_data());
    MC_CUDA_CHECK(cudaMemsetAsync(ap, 0, size_t(gx.numel()) * sizeof(float), stream()), "max_pool2d_backward");
    if (total > 0) {
      max_pool_bwd_kernel<T, float><<<grid_for(total), kThreads, 0, stream()>>>(ap, dptr<const T>(gy),
                                                                                dptr<const int64_t>(ind), hw, ohw, total);
      MC_CUDA_LAUNCHED("max_pool2d_backward");
    }
    const Tensor o = dense_target(gx);
    store_kernel<T><<<grid_for(gx.numel()), kThreads, 0, stream()>>>(dptr<T>(o), ap, gx.numel());
    MC_CUDA_LAUNCHED("max_pool2d_backward");
    store_back(gx, o);
  }
}

}  // namespace

void max_pool2d(const Tensor& out, const Tensor& indices, const Tensor& x_in, const Pool2dParams& p) {
  Geo g = geometry("max_pool2d", x_in, out);
  MC_CHECK(indices.shape() == out.shape() && indices.dtype() == DType::I64, "max_pool2d: indices must be i64 ",
           shape_str(out.shape()), ", got ", dtype_name(indices.dtype()), " ", shape_str(indices.shape()));
  if (out.numel() == 0) return;
  MC_CHECK(g.H * g.W > 0, "max_pool2d: empty input plane ", shape_str(x_in.shape()));
  set_params(g, p);
  MC_CHECK(g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0,
           "max_pool2d: invalid kernel/stride/dilation");
  const Tensor x = dense(x_in), o = dense_target(out), ind = dense_target(indices);
  const int64_t total = out.numel();
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), "max_pool2d", T, {
    max_pool_kernel<T><<<grid_for(total), kThreads, 0, stream()>>>(dptr<T>(o), dptr<int64_t>(ind), dptr<const T>(x),
                                                                  g, total);
  });
  MC_CUDA_LAUNCHED("max_pool2d");
  store_back(out, o);
  store_back(indices, ind);
}

void max_pool2d_backward(const Tensor& gx, const Tensor& gy_in, const Tensor& indices_in) {
  Geo g = geometry("max_pool2d_backward", gx, gy_in);
  MC_CHECK(indices_in.shape() == gy_in.shape() && indices_in.dtype() == DType::I64,
           "max_pool2d_backward: indices must be i64 with the shape of the output gradient ",
           shape_str(gy_in.shape()));
  if (gx.numel() == 0) return;
  const Tensor gy = dense(gy_in), ind = dense(indices_in);
  MC_CUDA_DISPATCH_FLOAT(gx.dtype(), "max_pool2d_backward", T, max_pool_backward_typed<T>(gx, gy, ind, g));
}

void avg_pool2d(const Tensor& out, const Tensor& x_in, const Pool2dParams& p) {
  Geo g = geometry("avg_pool2d", x_in, out);
  check_avg_params("avg_pool2d", p);
  if (out.numel() == 0) return;
  set_params(g, p);
  const Tensor x = dense(x_in), o = dense_target(out);
  const int64_t total = out.numel();
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", T, {
    avg_pool_kernel<T><<<grid_for(total), kThreads, 0, stream()>>>(dptr<T>(o), dptr<const T>(x), g, total);
  });
  MC_CUDA_LAUNCHED("avg_pool2d");
  store_back(out, o);
}

void avg_pool2d_backward(const Tensor& gx, const Tensor& gy_in, const Pool2dParams& p) {
  Geo g = geometry("avg_pool2d_backward", gx, gy_in);
  check_avg_params("avg_pool2d_backward", p);
  if (gx.numel() == 0) return;
  set_params(g, p);
  const Tensor gy = dense(gy_in), o = dense_target(gx);
  const int64_t total = gx.numel();
  MC_CUDA_DISPATCH_FLOAT(gx.dtype(), "avg_pool2d_backward", T, {
    avg_pool_bwd_kernel<T><<<grid_for(total), kThreads, 0, stream()>>>(dptr<T>(o), dptr<const T>(gy), g, total);
  });
  MC_CUDA_LAUNCHED("avg_pool2d_backward");
  store_back(gx, o);
}

void adaptive_avg_pool2d(const Tensor& out, const Tensor& x_in) {
  Geo g = geometry("adaptive_avg_pool2d", x_in, out);
  if (out.numel() == 0) return;
  MC_CHECK(g.H > 0 && g.W > 0, "adaptive_avg_pool2d: empty input plane ", shape_str(x_in.shape()));
  const Tensor x = dense(x_in), o = dense_target(out);
  const int64_t total = out.numel();
  MC_CUDA_DISPATCH_FLOAT(x.dtype(), "adaptive_avg_pool2d", T, {
    adaptive_kernel<T><<<grid_for(total), kThreads, 0, stream()>>>(dptr<T>(o), dptr<const T>(x), g, total);
  });
  MC_CUDA_LAUNCHED("adaptive_avg_pool2d");
  store_back(out, o);
}

void adaptive_avg_pool2d_backward(const Tensor& gx, const Tensor& gy_in) {
  Geo g = geometry("adaptive_avg_pool2d_backward", gx, gy_in);
  if (gx.numel() == 0) return;
  const Tensor gy = dense(gy_in), o = dense_target(gx);
  const int64_t total = gx.numel();
  if (g.OH == 0 || g.OW == 0) {
    fill(gx, 0);
    return;
  }
  MC_CUDA_DISPATCH_FLOAT(gx.dtype(), "adaptive_avg_pool2d_backward", T, {
    adaptive_bwd_kernel<T><<<grid_for(total), kThreads, 0, stream()>>>(dptr<T>(o), dptr<const T>(gy), g, total);
  });
  MC_CUDA_LAUNCHED("adaptive_avg_pool2d_backward");
  store_back(gx, o);
}

}  // namespace mc::cuda
