// mc/ops/conv.hpp — 2-d convolution and pooling (NCHW) with autograd: conv2d, max_pool2d,
// avg_pool2d, adaptive_avg_pool2d.
//
// Shapes and output sizes follow torch.nn.functional: inputs are [N, C, H, W] (or unbatched
// [C, H, W]); weights are [O, C/groups, kh, kw]. For pooling, stride 0 means "stride = kernel"
// (torch's stride=None), and ceil_mode drops a last window that would start past the input and its
// left padding. Gradients flow to the input, weight and bias of conv2d and to the input of the pools.
#pragma once
#include <utility>

#include "mc/ops/reduce.hpp"

namespace mc {
namespace detail {

// t itself when contiguous, else a contiguous copy; no autograd.
inline Tensor contiguous_raw(const Tensor& t) { return t.is_contiguous() ? t.detach() : contiguous_copy(t); }

// Output length of a pooling window sweep (torch's pooling_output_shape).
inline int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t pad, int64_t d, bool ceil_mode) {
  const int64_t num = in + 2 * pad - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;  // floor division
  if (ceil_mode && (out - 1) * s >= in + pad) --out;
  return out;
}

inline void check_float_input(const Tensor& x, const char* what) {
  MC_CHECK(is_floating(x.dtype()), what, ": expects a floating tensor, got ", dtype_name(x.dtype()));
}

// Checks a pooling configuration on input x [N, C, H, W] and returns the output shape.
inline Shape pool_output_shape(const Tensor& x, const Pool2dParams& p, const char* what) {
  for (int i = 0; i < 2; ++i) {
    MC_CHECK(p.kernel[i] > 0 && p.stride[i] > 0 && p.dilation[i] > 0 && p.padding[i] >= 0, what,
             ": kernel, stride and dilation must be positive and padding non-negative, got kernel (", p.kernel[0],
             ", ", p.kernel[1], "), stride (", p.stride[0], ", ", p.stride[1], "), padding (", p.padding[0], ", ",
             p.padding[1], "), dilation (", p.dilation[0], ", ", p.dilation[1], ")");
    MC_CHECK(p.padding[i] <= p.kernel[i] / 2, what, ": padding ", p.padding[i],
             " must be at most half of the kernel size ", p.kernel[i]);
  }
  const int64_t oh = pool_out_size(x.size(2), p.kernel[0], p.stride[0], p.padding[0], p.dilation[0], p.ceil_mode);
  const int64_t ow = pool_out_size(x.size(3), p.kernel[1], p.stride[1], p.padding[1], p.dilation[1], p.ceil_mode);
  MC_CHECK(oh > 0 && ow > 0, what, ": input ", shape_str(x.shape()), " is too small for kernel (", p.kernel[0], ", ",
           p.kernel[1], ") with padding (", p.padding[0], ", ", p.padding[1], "): output would be ", oh, "x", ow);
  return {x.size(0), x.size(1), oh, ow};
}

inline Pool2dParams make_pool_params(int64_t kernel, int64_t stride, int64_t padding, int64_t dilation,
                                     bool ceil_mode, bool count_include_pad) {
  Pool2dParams p;
  if (stride == 0) stride = kernel;
  for (int i = 0; i < 2; ++i) {
    p.kernel[i] = kernel;
    p.stride[i] = stride;
    p.padding[i] = padding;
    p.dilation[i] = dilation;
  }
  p.ceil_mode = ceil_mode;
  p.count_include_pad = count_include_pad;
  return p;
}

}  // namespace detail

// Convolution of x [N, C, H, W] with w [O, C/groups, kh, kw] plus bias [O] (optional): y [N, O, OH, OW]
// with OH = (H + 2*padding - dilation*(kh - 1) - 1) / stride + 1 (and likewise OW).
inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), Conv2dParams p = {}) {
  MC_CHECK(x.dim() == 3 || x.dim() == 4, "conv2d: input must be [N, C, H, W] or [C, H, W], got ",
           shape_str(x.shape()));
  if (x.dim() == 3) return conv2d(x.unsqueeze(0), w, bias, p).squeeze(0);
  MC_CHECK(w.dim() == 4, "conv2d: weight must be [O, C/groups, kh, kw], got ", shape_str(w.shape()));
  detail::check_same_device(x, w, "conv2d");
  if (bias.defined()) detail::check_same_device(x, bias, "conv2d");
  detail::check_float_input(x, "conv2d");
  MC_CHECK(w.dtype() == x.dtype() && (!bias.defined() || bias.dtype() == x.dtype()), "conv2d: dtypes differ (input ",
           dtype_name(x.dtype()), ", weight ", dtype_name(w.dtype()), bias.defined() ? ", bias " : "",
           bias.defined() ? dtype_name(bias.dtype()) : "", ")");
  for (int i = 0; i < 2; ++i)
    MC_CHECK(p.stride[i] > 0 && p.dilation[i] > 0 && p.padding[i] >= 0, "conv2d: stride and dilation must be "
             "positive and padding non-negative, got stride (", p.stride[0], ", ", p.stride[1], "), padding (",
             p.padding[0], ", ", p.padding[1], "), dilation (", p.dilation[0], ", ", p.dilation[1], ")");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3), G = p.groups;
  MC_CHECK(G > 0, "conv2d: groups must be positive, got ", G);
  MC_CHECK(C % G == 0 && O % G == 0, "conv2d: groups = ", G, " must divide the input channels (", C,
           ") and the output channels (", O, ")");
  MC_CHECK(w.size(1) * G == C, "conv2d: weight ", shape_str(w.shape()), " expects ", w.size(1) * G,
           " input channels (groups = ", G, "), but the input ", shape_str(x.shape()), " has ", C);
  MC_CHECK(kh > 0 && kw > 0, "conv2d: empty kernel in weight ", shape_str(w.shape()));
  MC_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == O), "conv2d: bias ",
           shape_str(bias.defined() ? bias.shape() : Shape{}), " must be [", O, "]");
  const int64_t ekh = p.dilation[0] * (kh - 1) + 1, ekw = p.dilation[1] * (kw - 1) + 1;
  MC_CHECK(H + 2 * p.padding[0] >= ekh && W + 2 * p.padding[1] >= ekw, "conv2d: kernel ", ekh, "x", ekw,
           " (dilated) is larger than the padded input ", H + 2 * p.padding[0], "x", W + 2 * p.padding[1],
           " (input ", shape_str(x.shape()), ")");
  const int64_t OH = (H + 2 * p.padding[0] - ekh) / p.stride[0] + 1;
  const int64_t OW = (W + 2 * p.padding[1] - ekw) / p.stride[1] + 1;

  Tensor xc = detail::contiguous_raw(x), wc = detail::contiguous_raw(w);
  Tensor bc = bias.defined() ? detail::contiguous_raw(bias) : Tensor();
  Tensor out = Tensor::empty({N, O, OH, OW}, x.dtype(), x.device());
  backend(x.device()).conv2d(out, xc, wc, bc, p);

  std::vector<Tensor> inputs{x, w};
  if (bias.defined()) inputs.push_back(bias);
  return record(out, "conv2d", std::move(inputs), [xc, wc, p](const Tensor& g, const Needs& n) {
    Tensor gc = detail::contiguous_raw(g);
    Backend& be = backend(g.device());
    std::vector<Tensor> r(n.size());
    if (n[0]) {
      r[0] = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
      be.conv2d_backward_input(r[0], gc, wc, p);
    }
    if (n[1]) {
      r[1] = Tensor::empty(wc.shape(), wc.dtype(), wc.device());
      be.conv2d_backward_weight(r[1], gc, xc, p);
    }
    if (n.size() > 2 && n[2])
      r[2] = detail::reshape(detail::reduce(ReduceOp::Sum, gc, {0, 2, 3}, gc.dtype()), {gc.size(1)});
    return r;
  });
}

inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t stride, int64_t padding,
                     int64_t dilation = 1, int64_t groups = 1) {
  Conv2dParams p;
  for (int i = 0; i < 2; ++i) {
    p.stride[i] = stride;
    p.padding[i] = padding;
    p.dilation[i] = dilation;
  }
  p.groups = groups;
  return conv2d(x, w, bias, p);
}

// Max pooling; returns the output and the i64 indices (h*W + w within each (n, c) plane, as torch).
inline std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, const Pool2dParams& p) {
  MC_CHECK(x.dim() == 3 || x.dim() == 4, "max_pool2d: input must be [N, C, H, W] or [C, H, W], got ",
           shape_str(x.shape()));
  if (x.dim() == 3) {
    auto [y, i] = max_pool2d_with_indices(x.unsqueeze(0), p);
    return {y.squeeze(0), detail::reshape(i, {i.size(1), i.size(2), i.size(3)})};
  }
  detail::check_float_input(x, "max_pool2d");
  const Shape os = detail::pool_output_shape(x, p, "max_pool2d");
  Tensor xc = detail::contiguous_raw(x);
  Tensor out = Tensor::empty(os, x.dtype(), x.device());
  Tensor idx = Tensor::empty(os, DType::I64, x.device());
  backend(x.device()).max_pool2d(out, idx, xc, p);
  out = record(out, "max_pool2d", {x}, [idx, xs = x.shape(), dt = x.dtype()](const Tensor& g, const Needs&) {
    Tensor gx = Tensor::empty(xs, dt, g.device());
    backend(g.device()).max_pool2d_backward(gx, detail::contiguous_raw(g), idx);
    return std::vector<Tensor>{gx};
  });
  return {out, idx};
}

inline Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) { return max_pool2d_with_indices(x, p).first; }

// Square max pooling; stride 0 means stride = kernel.
inline Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0, int64_t padding = 0,
                         int64_t dilation = 1, bool ceil_mode = false) {
  return max_pool2d(x, detail::make_pool_params(kernel, stride, padding, dilation, ceil_mode, true));
}

// Average pooling (dilation must be 1). count_include_pad divides by the window size clipped to the
// padded input; otherwise by the number of input elements in the window.
inline Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p) {
  MC_CHECK(x.dim() == 3 || x.dim() == 4, "avg_pool2d: input must be [N, C, H, W] or [C, H, W], got ",
           shape_str(x.shape()));
  if (x.dim() == 3) return avg_pool2d(x.unsqueeze(0), p).squeeze(0);
  detail::check_float_input(x, "avg_pool2d");
  MC_CHECK(p.dilation[0] == 1 && p.dilation[1] == 1, "avg_pool2d: dilation must be 1, got (", p.dilation[0], ", ",
           p.dilation[1], ")");
  const Shape os = detail::pool_output_shape(x, p, "avg_pool2d");
  Tensor xc = detail::contiguous_raw(x);
  Tensor out = Tensor::empty(os, x.dtype(), x.device());
  backend(x.device()).avg_pool2d(out, xc, p);
  return record(out, "avg_pool2d", {x}, [p, xs = x.shape(), dt = x.dtype()](const Tensor& g, const Needs&) {
    Tensor gx = Tensor::empty(xs, dt, g.device());
    backend(g.device()).avg_pool2d_backward(gx, detail::contiguous_raw(g), p);
    return std::vector<Tensor>{gx};
  });
}

// Square average pooling; stride 0 means stride = kernel.
inline Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0, int64_t padding = 0,
                         bool ceil_mode = false, bool count_include_pad = true) {
  return avg_pool2d(x, detail::make_pool_params(kernel, stride, padding, 1, ceil_mode, count_include_pad));
}

// Averages over bins [floor(i*H/out_h), ceil((i+1)*H/out_h)) x [floor(j*W/out_w), ceil((j+1)*W/out_w)).
inline Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  MC_CHECK(x.dim() == 3 || x.dim() == 4, "adaptive_avg_pool2d: input must be [N, C, H, W] or [C, H, W], got ",
           shape_str(x.shape()));
  if (x.dim() == 3) return adaptive_avg_pool2d(x.unsqueeze(0), out_h, out_w).squeeze(0);
  detail::check_float_input(x, "adaptive_avg_pool2d");
  MC_CHECK(out_h > 0 && out_w > 0, "adaptive_avg_pool2d: output size must be positive, got ", out_h, "x", out_w);
  MC_CHECK(x.size(2) > 0 && x.size(3) > 0, "adaptive_avg_pool2d: empty input plane in ", shape_str(x.shape()));
  Tensor xc = detail::contiguous_raw(x);
  Tensor out = Tensor::empty({x.size(0), x.size(1), out_h, out_w}, x.dtype(), x.device());
  backend(x.device()).adaptive_avg_pool2d(out, xc);
  return record(out, "adaptive_avg_pool2d", {x}, [xs = x.shape(), dt = x.dtype()](const Tensor& g, const Needs&) {
    Tensor gx = Tensor::empty(xs, dt, g.device());
    backend(g.device()).adaptive_avg_pool2d_backward(gx, detail::contiguous_raw(g));
    return std::vector<Tensor>{gx};
  });
}

inline Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_size) { return adaptive_avg_pool2d(x, out_size, out_size); }

}  // namespace mc
