// mc/io/image.hpp — decoding JPEG, PNG and BMP files into 8-bit images, the way PIL sees them.
//
// An Image holds 8-bit samples in row-major HWC order with 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)
// channels. decode_image keeps the file's own channel count; to_rgb then does what PIL's convert("RGB")
// does: grey is replicated into R, G and B and alpha is dropped (not composited onto any background).
//
// Decoding is done by stb_image. What differs from PIL (which decodes JPEG with libjpeg-turbo):
//  * JPEG: stb's IDCT, chroma upsampling and YCbCr->RGB arithmetic are not libjpeg's, so a few pixels of
//    a decoded JPEG can differ from PIL's by a level or two. Resampling to 224x224 averages most of it
//    away. EXIF orientation is ignored, as PIL's Image.open does.
//  * 16-bit PNG: PIL opens 16-bit grey as mode "I;16" and its convert to "L"/"RGB" clips values above
//    255 to 255 (it does not rescale); 16-bit grey+alpha, RGB and RGBA are reduced to 8 bits by taking the
//    high byte. Both rules are reproduced here, so a 16-bit PNG decodes to the same 8-bit values as in PIL.
//  * Integrity: a JPEG must reach its end-of-image marker and an uncompressed BMP must hold all its pixel
//    data (PIL refuses such truncated files; stb would silently fill in the missing part); a truncated or
//    corrupt PNG fails in stb's decoder. Any failure throws mc::Error naming the file and the reason.
//  * Not compared with PIL: CMYK JPEGs (both convert to RGB, with different arithmetic), BMPs with RLE
//    compression. Images over PIL's decompression-bomb error limit (kMaxImagePixels) are refused.
// Other formats (GIF, TGA, PSD, HDR, ...) are rejected.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/io/file.hpp"
#include "mc/io/stb.hpp"

namespace mc::io {

struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels bytes, HWC

  bool empty() const { return width == 0 || height == 0; }
  size_t row_bytes() const { return size_t(width) * size_t(channels); }
  const uint8_t* row(int y) const { return pixels.data() + size_t(y) * row_bytes(); }
  uint8_t* row(int y) { return pixels.data() + size_t(y) * row_bytes(); }
  uint8_t at(int y, int x, int c) const {
    return pixels[(size_t(y) * size_t(width) + size_t(x)) * channels + c];
  }

  // A zero-filled image; checks that the sizes are sane.
  static Image zeros(int width, int height, int channels) {
    MC_CHECK(width > 0 && height > 0, "Image: invalid size ", width, "x", height);
    MC_CHECK(channels >= 1 && channels <= 4, "Image: invalid channel count ", channels);
    MC_CHECK(int64_t(width) * height * channels < (int64_t(1) << 40), "Image: ", width, "x", height,
             " is too large");
    Image im;
    im.width = width;
    im.height = height;
    im.channels = channels;
    im.pixels.assign(size_t(width) * size_t(height) * size_t(channels), 0);
    return im;
  }
};

// Throws unless `img` is a well-formed image (sizes positive, pixel buffer of the right length).
inline void check_image(const Image& img, const char* op) {
  MC_CHECK(img.width > 0 && img.height > 0, op, ": empty image (", img.width, "x", img.height, ")");
  MC_CHECK(img.channels >= 1 && img.channels <= 4, op, ": invalid channel count ", img.channels);
  MC_CHECK(img.pixels.size() == size_t(img.width) * size_t(img.height) * size_t(img.channels), op,
           ": pixel buffer holds ", img.pixels.size(), " bytes, expected ", img.width, "x", img.height, "x",
           img.channels);
}

// The largest image decode_image accepts, in pixels (PIL's DecompressionBombError threshold).
inline constexpr int64_t kMaxImagePixels = 2 * int64_t(89478485);

namespace detail {

enum class ImageFormat { Unknown, Jpeg, Png, Bmp };

inline ImageFormat sniff_format(const uint8_t* p, size_t n) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return ImageFormat::Jpeg;
  if (n >= 8 && std::memcmp(p, png_sig, 8) == 0) return ImageFormat::Png;
  if (n >= 2 && p[0] == 'B' && p[1] == 'M') return ImageFormat::Bmp;
  return ImageFormat::Unknown;
}

inline uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Walks the JPEG marker structure (segments, then entropy-coded data up to the next marker) and checks
// that it reaches the end-of-image marker before the data runs out. Bytes after EOI are allowed.
inline void check_jpeg_complete(const uint8_t* p, size_t n, const std::string& what) {
  size_t pos = 2;  // after SOI
  for (;;) {
    while (pos < n && p[pos] != 0xFF) ++pos;  // stray bytes before a marker (libjpeg skips them too)
    while (pos < n && p[pos] == 0xFF) ++pos;  // fill bytes
    MC_CHECK(pos < n, what, ": truncated JPEG (no end-of-image marker)");
    uint8_t m = p[pos++];
    if (m == 0xD9) return;                                             // EOI
    if (m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) continue;  // markers without a length
    MC_CHECK(pos + 2 <= n, what, ": truncated JPEG (segment header cut off)");
    size_t len = size_t(p[pos]) << 8 | p[pos + 1];
    MC_CHECK(len >= 2, what, ": corrupt JPEG (segment length ", len, ")");
    MC_CHECK(pos + len <= n, what, ": truncated JPEG (segment cut off)");
    pos += len;
    if (m == 0xDA) {  // start of scan: skip the entropy-coded data
      while (pos < n) {
        if (p[pos] != 0xFF) {
          ++pos;
          continue;
        }
        MC_CHECK(pos + 1 < n, what, ": truncated JPEG (scan data cut off)");
        uint8_t b = p[pos + 1];
        if (b == 0x00 || (b >= 0xD0 && b <= 0xD7))
          pos += 2;  // stuffed byte or restart marker
        else if (b == 0xFF)
          pos += 1;  // fill byte
        else
          break;  // a real marker
      }
    }
  }
}

// For BMPs stored without compression, checks the file holds all the pixel data.
inline void check_bmp_complete(const uint8_t* p, size_t n, const std::string& what) {
  MC_CHECK(n >= 26, what, ": truncated BMP header");
  uint32_t off = le32(p + 10);
  uint32_t hdr = le32(p + 14);
  if (hdr < 40) return;  // OS/2 core header: leave it to the decoder
  MC_CHECK(n >= 14 + size_t(hdr) && n >= 34, what, ": truncated BMP header");
  int64_t w = int32_t(le32(p + 18));
  int64_t h = int32_t(le32(p + 22));
  int64_t bpp = p[28] | (p[29] << 8);
  uint32_t compression = le32(p + 30);
  if (compression != 0 && compression != 3 && compression != 6) return;  // RLE etc.: not checked here
  if (w <= 0 || h == 0 || bpp <= 0 || bpp > 32) return;                  // the decoder reports these
  // Rows are padded to 4 bytes; like PIL, the padding after the last row may be missing.
  const int64_t row = ((w * bpp + 31) / 32) * 4;
  const int64_t need = int64_t(off) + row * ((h < 0 ? -h : h) - 1) + (w * bpp + 7) / 8;
  MC_CHECK(int64_t(n) >= need, what, ": truncated BMP (", n, " bytes, pixel data needs ", need, ")");
}

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

}  // namespace detail

// Decodes a JPEG, PNG or BMP held in memory; `what` names the source in error messages.
inline Image decode_image(const uint8_t* data, size_t size, const std::string& what = "<memory>") {
  MC_CHECK(size > 0, what, ": empty image file");
  MC_CHECK(size < size_t(INT_MAX), what, ": image file larger than 2 GiB is not supported");
  auto fmt = detail::sniff_format(data, size);
  MC_CHECK(fmt != detail::ImageFormat::Unknown, what,
           ": not a JPEG, PNG or BMP file (unrecognised signature)");
  if (fmt == detail::ImageFormat::Jpeg) detail::check_jpeg_complete(data, size, what);
  if (fmt == detail::ImageFormat::Bmp) detail::check_bmp_complete(data, size, what);

  int w = 0, h = 0, comp = 0;
  const int n = int(size);
  MC_CHECK(stbi_info_from_memory(data, n, &w, &h, &comp), what, ": cannot read image header (",
           stbi_failure_reason(), ")");
  MC_CHECK(w > 0 && h > 0 && comp >= 1 && comp <= 4, what, ": invalid image header (", w, "x", h, "x", comp,
           ")");
  // PIL refuses images over twice its decompression-bomb limit (89478485 pixels); so does this.
  MC_CHECK(int64_t(w) * h <= kMaxImagePixels, what, ": image of ", w, "x", h, " pixels is too large (limit ",
           kMaxImagePixels, " pixels)");

  // A 16-bit grey PNG (colour type 0) is mode "I;16" in PIL, whose conversion to 8 bits clips.
  bool grey16 = false;
  if (fmt == detail::ImageFormat::Png && stbi_is_16_bit_from_memory(data, n)) {
    MC_CHECK(size >= 26, what, ": truncated PNG header");
    grey16 = data[25] == 0;  // IHDR colour type
  }

  // The channel count is always requested explicitly: with "whatever the file has" stb returns an extra
  // alpha channel for PNGs with a tRNS chunk while reporting the count without it.
  const int want = grey16 ? 1 : comp;  // a tRNS alpha of a grey or RGB PNG is dropped, as convert does
  int got = 0;
  Image img;
  if (grey16) {
    std::unique_ptr<stbi_us, detail::StbFree> px(stbi_load_16_from_memory(data, n, &w, &h, &got, want));
    MC_CHECK(px, what, ": cannot decode PNG (", stbi_failure_reason(), ")");
    img = Image::zeros(w, h, 1);
    for (size_t i = 0; i < img.pixels.size(); ++i) {
      stbi_us v = px.get()[i];
      img.pixels[i] = uint8_t(v > 255 ? 255 : v);
    }
    return img;
  }
  std::unique_ptr<stbi_uc, detail::StbFree> px(stbi_load_from_memory(data, n, &w, &h, &got, want));
  MC_CHECK(px, what, ": cannot decode image (", stbi_failure_reason(), ")");
  MC_CHECK(w > 0 && h > 0, what, ": decoder returned an invalid image");
  img = Image::zeros(w, h, want);
  std::memcpy(img.pixels.data(), px.get(), img.pixels.size());
  return img;
}

inline Image decode_image(const std::vector<uint8_t>& bytes, const std::string& what = "<memory>") {
  return decode_image(bytes.data(), bytes.size(), what);
}

// Decodes the image file at `path`.
inline Image decode_image(const std::string& path) {
  auto f = MappedFile::open(path);
  return decode_image(f->data(), f->size(), path);
}

// PIL's convert("RGB"): grey -> (g, g, g), grey+alpha -> (g, g, g), RGBA -> RGB; alpha is discarded.
inline Image to_rgb(const Image& img) {
  check_image(img, "to_rgb");
  if (img.channels == 3) return img;
  Image out = Image::zeros(img.width, img.height, 3);
  const size_t count = size_t(img.width) * size_t(img.height);
  const uint8_t* s = img.pixels.data();
  uint8_t* d = out.pixels.data();
  const size_t c = size_t(img.channels);
  for (size_t i = 0; i < count; ++i, s += c, d += 3) {
    if (c <= 2) {
      d[0] = d[1] = d[2] = s[0];
    } else {
      d[0] = s[0];
      d[1] = s[1];
      d[2] = s[2];
    }
  }
  return out;
}

inline Image to_rgb(Image&& img) {
  if (img.channels == 3) {
    check_image(img, "to_rgb");
    return std::move(img);
  }
  return to_rgb(static_cast<const Image&>(img));
}

// A one-channel image from `height` rows of `width` grey bytes (e.g. one MedMNIST array [H, W] uint8).
inline Image from_gray_u8(const uint8_t* data, int height, int width) {
  MC_CHECK(data != nullptr, "from_gray_u8: null data");
  Image img = Image::zeros(width, height, 1);
  std::memcpy(img.pixels.data(), data, img.pixels.size());
  return img;
}

}  // namespace mc::io
