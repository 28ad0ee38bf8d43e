// mc/data/transforms.hpp — image preprocessing that reproduces PIL + torchvision exactly.
//
// resize() follows Pillow's Image.resize for 8-bit grey and RGB images:
//  * Nearest: Pillow's affine nearest-neighbour scaling (source x = trunc((x + 0.5) * in/out), the
//    position accumulated step by step in double precision as Pillow does).
//  * Box, Bilinear, Hamming, Bicubic (a = -0.5), Lanczos (a = 3): separable convolution. Per output
//    sample the source window is centred at (x + 0.5) * scale, the kernel is stretched by the downscale
//    factor when shrinking (antialiasing), weights are normalised to sum 1 and turned into 22-bit fixed
//    point integers; each pass accumulates with a rounding offset and clips to 0..255, and the result of
//    the first pass is stored as 8-bit samples. A pass whose size does not change is skipped.
//    Pass order (PassOrder): Pillow 13 runs the vertical pass first when the height shrinks by more than
//    twice as many pixels as the width does (PassOrder::Pillow13, the default); earlier Pillow versions
//    always run the horizontal pass first (PassOrder::HorizontalFirst). The horizontal-first pass only
//    processes the source rows the vertical pass reads. The two orders differ by a level here and there,
//    and only for such resizes (in the CLIP pipeline: images more than twice as tall as wide).
//  The result is bit-identical to Pillow (tests/test_image.cpp checks this for every filter, up- and
//  downscaling). The double-precision weights are computed without fused multiply-add, as on x86-64
//  Pillow builds.
//
// resize_shorter / center_crop / to_tensor_normalized are torchvision's Resize(int), CenterCrop(int) and
// ToTensor + Normalize, and Preprocess chains them for the CLIP-family models:
//   clip(), biomedclip(), pmc_clip(): bicubic, OpenAI mean/std;   cxr_clip(): bilinear, ImageNet mean/std.
// Preprocess converts the input to RGB first (PIL's convert("RGB"): grey replicated, alpha dropped). For
// grey and RGB sources this gives the same pixels as converting after resizing; for sources with alpha,
// a PIL pipeline that resizes before converting would premultiply the alpha while resizing.
#pragma once
#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/parallel.hpp"
#include "mc/core/tensor.hpp"
#include "mc/io/image.hpp"

namespace mc::data {

using io::Image;

enum class Filter { Nearest, Box, Bilinear, Hamming, Bicubic, Lanczos };

// Which separable pass runs first (see the top of this file).
enum class PassOrder {
  Pillow13,         // vertical first iff the height shrinks by more than twice the width's reduction
  HorizontalFirst,  // Pillow before 13.0
};

inline const char* filter_name(Filter f) {
  switch (f) {
    case Filter::Nearest:
      return "nearest";
    case Filter::Box:
      return "box";
    case Filter::Bilinear:
      return "bilinear";
    case Filter::Hamming:
      return "hamming";
    case Filter::Bicubic:
      return "bicubic";
    case Filter::Lanczos:
      return "lanczos";
  }
  return "?";
}

namespace detail {

constexpr int kPrecisionBits = 22;  // fixed-point fraction bits of the weights (32 - 8 - 2)
constexpr double kPi = 3.14159265358979323846;

// The weight computations below must not be contracted into fused multiply-adds, or a weight can land on
// the other side of a fixed-point rounding boundary from Pillow's.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#define MC_FP_CONTRACT_OFF _Pragma("clang fp contract(off)")
#else
#define MC_FP_CONTRACT_OFF
#endif

inline double filter_support(Filter f) {
  switch (f) {
    case Filter::Box:
      return 0.5;
    case Filter::Bilinear:
      return 1.0;
    case Filter::Hamming:
      return 1.0;
    case Filter::Bicubic:
      return 2.0;
    case Filter::Lanczos:
      return 3.0;
    case Filter::Nearest:
      break;
  }
  return 0.0;
}

inline double sinc(double x) {
  MC_FP_CONTRACT_OFF
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}

inline double filter_weight(Filter f, double x) {
  MC_FP_CONTRACT_OFF
  switch (f) {
    case Filter::Box:
      return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case Filter::Bilinear:
      if (x < 0.0) x = -x;
      return x < 1.0 ? 1.0 - x : 0.0;
    case Filter::Hamming: {
      if (x < 0.0) x = -x;
      if (x == 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x = x * kPi;
      // The window's constants are single-precision numbers widened to double.
      return std::sin(x) / x * (double(0.54f) + double(0.46f) * std::cos(x));
    }
    case Filter::Bicubic: {
      constexpr double a = -0.5;
      if (x < 0.0) x = -x;
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    }
    case Filter::Lanczos:
      return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0;
    case Filter::Nearest:
      break;
  }
  return 0.0;
}

// Fixed-point weights of one resampling axis: output sample i reads `count[i]` source samples from
// `first[i]` on, weighted by weights[i * ksize + j].
struct Weights {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

inline Weights compute_weights(int in_size, int out_size, Filter f) {
  MC_FP_CONTRACT_OFF
  const double in0 = 0.0, in1 = double(float(in_size));
  const double scale = (in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter_support(f) * filterscale;
  Weights w;
  w.ksize = int(std::ceil(support)) * 2 + 1;
  w.first.resize(size_t(out_size));
  w.count.resize(size_t(out_size));
  w.weights.assign(size_t(out_size) * size_t(w.ksize), 0);
  std::vector<double> k(size_t(w.ksize));
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    int lo = int(center - support + 0.5);  // truncation toward zero, then clamped
    if (lo < 0) lo = 0;
    int hi = int(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    MC_CHECK(n >= 0 && n <= w.ksize, "resize: internal error in the filter window");
    double total = 0.0;
    for (int x = 0; x < n; ++x) {
      double v = filter_weight(f, (double(x + lo) - center + 0.5) * ss);
      k[size_t(x)] = v;
      total += v;
    }
    int32_t* dst = &w.weights[size_t(xx) * size_t(w.ksize)];
    for (int x = 0; x < n; ++x) {
      double v = total != 0.0 ? k[size_t(x)] / total : k[size_t(x)];
      double scaled = v * double(1 << kPrecisionBits);
      dst[x] = v < 0 ? int32_t(-0.5 + scaled) : int32_t(0.5 + scaled);
    }
    w.first[size_t(xx)] = lo;
    w.count[size_t(xx)] = n;
  }
  return w;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#undef MC_FP_CONTRACT_OFF

inline uint8_t clip8(int32_t acc) {
  int32_t v = acc >> kPrecisionBits;
  return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over source rows [row0, row0 + out.height). Rows are split across the thread pool.
inline void resample_rows(const Image& in, int row0, const Weights& w, Image& out) {
  const int C = in.channels;
  const int32_t half = int32_t(1) << (kPrecisionBits - 1);
  const int64_t grain = std::max<int64_t>(1, 65536 / (int64_t(out.width) * C * w.ksize + 1));
  parallel_for(out.height, grain, [&](int64_t ybegin, int64_t yend) {
    for (int y = int(ybegin); y < int(yend); ++y) {
      const uint8_t* src = in.row(row0 + y);
      uint8_t* dst = out.row(y);
      for (int xx = 0; xx < out.width; ++xx) {
        const int32_t* k = &w.weights[size_t(xx) * size_t(w.ksize)];
        const uint8_t* s = src + size_t(w.first[size_t(xx)]) * size_t(C);
        const int n = w.count[size_t(xx)];
        if (C == 1) {
          int32_t acc = half;
          for (int i = 0; i < n; ++i) acc += int32_t(s[i]) * k[i];
          dst[xx] = clip8(acc);
        } else {
          int32_t a0 = half, a1 = half, a2 = half;
          for (int i = 0; i < n; ++i) {
            a0 += int32_t(s[3 * i]) * k[i];
            a1 += int32_t(s[3 * i + 1]) * k[i];
            a2 += int32_t(s[3 * i + 2]) * k[i];
          }
          dst[3 * xx] = clip8(a0);
          dst[3 * xx + 1] = clip8(a1);
          dst[3 * xx + 2] = clip8(a2);
        }
      }
    }
  });
}

// Vertical pass; w.first is relative to the first row of `in`.
inline void resample_cols(const Image& in, const Weights& w, int first_offset, Image& out) {
  const size_t rb = out.row_bytes();
  const int32_t half = int32_t(1) << (kPrecisionBits - 1);
  const int64_t grain = std::max<int64_t>(1, 65536 / (int64_t(rb) * w.ksize + 1));
  parallel_for(out.height, grain, [&](int64_t ybegin, int64_t yend) {
    std::vector<int32_t> acc(rb);
    for (int yy = int(ybegin); yy < int(yend); ++yy) {
      const int32_t* k = &w.weights[size_t(yy) * size_t(w.ksize)];
      const int lo = w.first[size_t(yy)] - first_offset;
      const int n = w.count[size_t(yy)];
      std::fill(acc.begin(), acc.end(), half);
      for (int i = 0; i < n; ++i) {
        const uint8_t* s = in.row(lo + i);
        const int32_t ki = k[i];
        for (size_t j = 0; j < rb; ++j) acc[j] += int32_t(s[j]) * ki;
      }
      uint8_t* dst = out.row(yy);
      for (size_t j = 0; j < rb; ++j) dst[j] = clip8(acc[j]);
    }
  });
}

inline Image resize_nearest(const Image& in, int out_w, int out_h) {
  Image out = Image::zeros(out_w, out_h, in.channels);
  const int C = in.channels;
  const double ax = double(float(in.width)) / out_w, ay = double(float(in.height)) / out_h;
  auto coord = [](double v) { return v < 0.0 ? -1 : int(v); };
  std::vector<int> xin(size_t(out_w), -1);
  double xo = 0.0 + ax * 0.5;
  for (int x = 0; x < out_w; ++x, xo += ax) {
    int xi = coord(xo);
    if (xi >= 0 && xi < in.width) xin[size_t(x)] = xi;
  }
  double yo = 0.0 + ay * 0.5;
  for (int y = 0; y < out_h; ++y, yo += ay) {
    int yi = coord(yo);
    if (yi < 0 || yi >= in.height) continue;  // stays zero, as Pillow fills
    const uint8_t* s = in.row(yi);
    uint8_t* d = out.row(y);
    for (int x = 0; x < out_w; ++x) {
      int xi = xin[size_t(x)];
      if (xi < 0) continue;
      for (int c = 0; c < C; ++c) d[x * C + c] = s[xi * C + c];
    }
  }
  return out;
}

// Python's round(d / 2) for an integer d >= 0 (halves go to the even neighbour).
inline int half_round_even(int d) {
  int k = d / 2;
  if ((d & 1) && (k & 1)) ++k;
  return k;
}

}  // namespace detail

// Pillow's Image.resize((out_w, out_h), filter) for a grey (1 channel) or RGB (3 channel) 8-bit image.
inline Image resize(const Image& img, int out_w, int out_h, Filter filter,
                    PassOrder order = PassOrder::Pillow13) {
  io::check_image(img, "resize");
  MC_CHECK(img.channels == 1 || img.channels == 3, "resize: expected a grey or RGB image, got ", img.channels,
           " channels (convert with to_rgb first; Pillow resizes images with alpha premultiplied)");
  MC_CHECK(out_w > 0 && out_h > 0, "resize: invalid output size ", out_w, "x", out_h);
  if (out_w == img.width && out_h == img.height) return img;
  if (filter == Filter::Nearest) return detail::resize_nearest(img, out_w, out_h);

  const bool need_h = out_w != img.width, need_v = out_h != img.height;
  const detail::Weights wh = detail::compute_weights(img.width, out_w, filter);
  const detail::Weights wv = detail::compute_weights(img.height, out_h, filter);
  const int64_t shrink_h = int64_t(img.height) - out_h, shrink_w = int64_t(img.width) - out_w;
  if (order == PassOrder::Pillow13 && shrink_h > 0 && shrink_h > 2 * shrink_w) {  // vertical pass first
    Image tmp = Image::zeros(img.width, out_h, img.channels);
    detail::resample_cols(img, wv, 0, tmp);
    if (!need_h) return tmp;
    Image out = Image::zeros(out_w, out_h, img.channels);
    detail::resample_rows(tmp, 0, wh, out);
    return out;
  }
  // Source rows the vertical pass reads; only these go through the horizontal pass.
  const int row0 = wv.first.front();
  const int row1 = wv.first.back() + wv.count.back();

  if (!need_v) {
    Image out = Image::zeros(out_w, img.height, img.channels);
    detail::resample_rows(img, 0, wh, out);
    return out;
  }
  Image out = Image::zeros(out_w, out_h, img.channels);
  if (need_h) {
    Image tmp = Image::zeros(out_w, row1 - row0, img.channels);
    detail::resample_rows(img, row0, wh, tmp);
    detail::resample_cols(tmp, wv, row0, out);
  } else {
    detail::resample_cols(img, wv, 0, out);
  }
  return out;
}

// torchvision's output size for Resize(size) (an int): the shorter side becomes `size`, the longer
// int(size * long / short); with max_size > 0 the longer side is then capped as torchvision does.
// Returns {width, height}.
inline std::array<int, 2> shorter_side_size(int width, int height, int size, int max_size = 0) {
  MC_CHECK(width > 0 && height > 0, "resize_shorter: empty image (", width, "x", height, ")");
  MC_CHECK(size > 0, "resize_shorter: invalid size ", size);
  const int64_t shorter = width <= height ? width : height, longer = width <= height ? height : width;
  int64_t new_short = size;
  int64_t new_long = int64_t(double(int64_t(size) * longer) / double(shorter));
  if (max_size > 0) {
    MC_CHECK(max_size > size, "resize_shorter: max_size ", max_size, " must be greater than size ", size);
    if (new_long > max_size) {
      new_short = int64_t(double(int64_t(max_size) * new_short) / double(new_long));
      new_long = max_size;
    }
  }
  MC_CHECK(new_long <= INT32_MAX && new_short > 0, "resize_shorter: output size out of range");
  return width <= height ? std::array<int, 2>{int(new_short), int(new_long)}
                         : std::array<int, 2>{int(new_long), int(new_short)};
}

// torchvision Resize(size) on a PIL image: shorter side to `size`, aspect ratio kept.
inline Image resize_shorter(const Image& img, int size, Filter filter, int max_size = 0,
                            PassOrder order = PassOrder::Pillow13) {
  io::check_image(img, "resize_shorter");
  auto [w, h] = shorter_side_size(img.width, img.height, size, max_size);
  if (w == img.width && h == img.height) return img;
  return resize(img, w, h, filter, order);
}

// torchvision CenterCrop((crop_h, crop_w)): top/left = round((H - crop_h) / 2) (halves to even); a side
// smaller than the crop is first zero-padded by floor(deficit / 2) before and the rest after.
inline Image center_crop(const Image& img, int crop_w, int crop_h) {
  io::check_image(img, "center_crop");
  MC_CHECK(crop_w > 0 && crop_h > 0, "center_crop: invalid crop size ", crop_w, "x", crop_h);
  const int ox =
      crop_w > img.width ? -((crop_w - img.width) / 2) : detail::half_round_even(img.width - crop_w);
  const int oy =
      crop_h > img.height ? -((crop_h - img.height) / 2) : detail::half_round_even(img.height - crop_h);
  if (ox == 0 && oy == 0 && crop_w == img.width && crop_h == img.height) return img;
  Image out = Image::zeros(crop_w, crop_h, img.channels);
  const int C = img.channels;
  const int x0 = std::max(0, -ox), x1 = std::min(crop_w, img.width - ox);  // output columns with a source
  for (int y = 0; y < crop_h; ++y) {
    const int sy = y + oy;
    if (sy < 0 || sy >= img.height || x1 <= x0) continue;
    std::memcpy(out.row(y) + size_t(x0) * C, img.row(sy) + size_t(x0 + ox) * C, size_t(x1 - x0) * C);
  }
  return out;
}

inline Image center_crop(const Image& img, int size) { return center_crop(img, size, size); }

// ToTensor + Normalize into `dst` (3 * H * W floats, CHW): (x / 255 - mean[c]) / std[c], each step rounded
// to float as torch does. A grey image counts as RGB with three equal channels.
inline void to_tensor_normalized(const Image& img, const std::array<float, 3>& mean,
                                 const std::array<float, 3>& stdev, float* dst) {
  io::check_image(img, "to_tensor_normalized");
  MC_CHECK(img.channels == 1 || img.channels == 3, "to_tensor_normalized: expected a grey or RGB image, got ",
           img.channels, " channels");
  for (int c = 0; c < 3; ++c)
    MC_CHECK(stdev[size_t(c)] != 0.0f, "to_tensor_normalized: std[", c, "] is zero");
  const size_t plane = size_t(img.width) * size_t(img.height);
  const size_t C = size_t(img.channels);
  for (size_t c = 0; c < 3; ++c) {
    const float m = mean[c], s = stdev[c];
    float lut[256];
    for (int v = 0; v < 256; ++v) {
      float x = float(v) / 255.0f;
      lut[v] = (x - m) / s;
    }
    const uint8_t* src = img.pixels.data() + (C == 3 ? c : 0);
    float* d = dst + c * plane;
    for (size_t i = 0; i < plane; ++i) d[i] = lut[src[i * C]];
  }
}

inline Tensor to_tensor_normalized(const Image& img, const std::array<float, 3>& mean,
                                   const std::array<float, 3>& stdev) {
  io::check_image(img, "to_tensor_normalized");
  Tensor t = Tensor::empty({3, img.height, img.width}, DType::F32);
  to_tensor_normalized(img, mean, stdev, t.data<float>());
  return t;
}

// Python floats narrowed to float32, as torch.tensor(mean, dtype=float32) does.
inline constexpr std::array<float, 3> kOpenAIMean = {float(0.48145466), float(0.4578275), float(0.40821073)};
inline constexpr std::array<float, 3> kOpenAIStd = {float(0.26862954), float(0.26130258), float(0.27577711)};
inline constexpr std::array<float, 3> kImageNetMean = {float(0.485), float(0.456), float(0.406)};
inline constexpr std::array<float, 3> kImageNetStd = {float(0.229), float(0.224), float(0.225)};

// Resize(size, filter) -> CenterCrop(size) -> convert("RGB") -> ToTensor -> Normalize(mean, std).
struct Preprocess {
  int size = 224;
  Filter filter = Filter::Bicubic;
  std::array<float, 3> mean = kOpenAIMean;
  std::array<float, 3> std = kOpenAIStd;
  PassOrder pass_order = PassOrder::Pillow13;  // the Pillow version the reference ran with

  static Preprocess clip(int size = 224) { return {size, Filter::Bicubic, kOpenAIMean, kOpenAIStd}; }
  static Preprocess biomedclip(int size = 224) { return {size, Filter::Bicubic, kOpenAIMean, kOpenAIStd}; }
  static Preprocess pmc_clip(int size = 224) { return {size, Filter::Bicubic, kOpenAIMean, kOpenAIStd}; }
  static Preprocess cxr_clip(int size = 224) { return {size, Filter::Bilinear, kImageNetMean, kImageNetStd}; }

  // The 8-bit size x size crop before ToTensor: grey stays one channel (equal to its RGB conversion),
  // anything else becomes RGB.
  Image pixels(const Image& img) const {
    io::check_image(img, "Preprocess");
    const bool keep = img.channels == 1 || img.channels == 3;
    Image resized = resize_shorter(keep ? img : io::to_rgb(img), size, filter, 0, pass_order);
    return center_crop(resized, size);
  }

  // Writes the normalised [3, size, size] tensor of `img` to dst.
  void into(const Image& img, float* dst) const { to_tensor_normalized(pixels(img), mean, std, dst); }

  Tensor operator()(const Image& img) const {
    Tensor t = Tensor::empty({3, size, size}, DType::F32);
    into(img, t.data<float>());
    return t;
  }

  Tensor operator()(const std::string& path) const { return (*this)(io::decode_image(path)); }

  // [N, 3, size, size], the images processed in parallel.
  Tensor batch(const std::vector<Image>& images) const {
    const int64_t n = int64_t(images.size());
    Tensor t = Tensor::empty({n, 3, size, size}, DType::F32);
    float* base = t.data<float>();
    const size_t per = size_t(3) * size_t(size) * size_t(size);
    parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) into(images[size_t(i)], base + size_t(i) * per);
    });
    return t;
  }

  // Decodes and processes the files at `paths` in parallel: [N, 3, size, size].
  Tensor batch_files(const std::vector<std::string>& paths) const {
    const int64_t n = int64_t(paths.size());
    Tensor t = Tensor::empty({n, 3, size, size}, DType::F32);
    float* base = t.data<float>();
    const size_t per = size_t(3) * size_t(size) * size_t(size);
    parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) into(io::decode_image(paths[size_t(i)]), base + size_t(i) * per);
    });
    return t;
  }
};

inline Tensor preprocess_batch(const std::vector<Image>& images, const Preprocess& p) {
  return p.batch(images);
}

}  // namespace mc::data
