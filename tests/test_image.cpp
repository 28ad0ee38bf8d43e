// Image decoding and preprocessing against Pillow + torchvision.
//
// The reference data in tests/fixtures/image/ comes from tools/gen_image_fixtures.py (see its docstring
// for the blob encoding). The VQA-RAD JPEGs and the BreastMNIST arrays are read from the shared data
// directory next to the repository; CMake disables this test file when it is absent.
// Set MC_IMAGE_TEST_VERBOSE=1 to print the measured differences.
#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/data/transforms.hpp"
#include "mc/io/file.hpp"
#include "mc/io/image.hpp"
#include "mc/io/inflate.hpp"

namespace {

using mc::data::Filter;
using mc::io::Image;

const std::string kFixtures = std::string(MC_SOURCE_DIR) + "/tests/fixtures/image/";
const std::string kShared = std::string(MC_SOURCE_DIR) + "/../shared/data/";

bool verbose() {
  const char* v = std::getenv("MC_IMAGE_TEST_VERBOSE");
  return v && *v && std::strcmp(v, "0") != 0;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

using Json = nlohmann::json;

const Json& index_json() {
  static const Json j = [] {
    auto bytes = mc::io::read_file(kFixtures + "index.json");
    return Json::parse(bytes.begin(), bytes.end());
  }();
  return j;
}

// Fixture blobs: gunzipped once; images undo the gradient prediction filter.
const std::vector<uint8_t>& blob(const std::string& name) {
  static std::map<std::string, std::vector<uint8_t>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  auto gz = mc::io::read_file(kFixtures + name);
  return cache[name] = mc::io::gunzip(gz.data(), gz.size(), name);
}

Image fixture_image(const Json& e) {
  const auto& data = blob(e.at("blob").get<std::string>());
  Image img = Image::zeros(e.at("width").get<int>(), e.at("height").get<int>(), e.at("channels").get<int>());
  const size_t off = size_t(e.at("offset").get<size_t>());
  REQUIRE(off + img.pixels.size() <= data.size());
  const int W = img.width, C = img.channels;
  auto px = [&](int y, int x, int c) -> int {
    return (y < 0 || x < 0) ? 0 : img.pixels[(size_t(y) * W + x) * C + c];
  };
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < C; ++c) {
        const size_t k = (size_t(y) * W + x) * C + c;
        int pred = px(y, x - 1, c) + px(y - 1, x, c) - px(y - 1, x - 1, c);
        img.pixels[k] = uint8_t((data[off + k] + pred) & 255);
      }
  return img;
}

// The synthetic test image of tools/gen_image_fixtures.py (synth_value).
int synth_value(int x, int y, int c, int w, int h) {
  const int band = (x * 4) / w;
  if (band == 0) return (((x >> 1) + (y >> 1) + c) & 1) ? 255 : 0;
  if (band == 1) return (x * 7 + y * 5 + c * 40) & 255;
  if (band == 2) {
    uint32_t v = (uint32_t(x) * 2654435761u) ^ (uint32_t(y) * 2246822519u) ^ (uint32_t(c) * 3266489917u);
    v ^= v >> 15;
    v *= 2246822519u;
    v ^= v >> 13;
    return int(v >> 24);
  }
  return ((y * 255) / std::max(h - 1, 1) + c * 30) % 256;
}

Image synth(int w, int h, int channels) {
  Image img = Image::zeros(w, h, channels);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c)
        img.pixels[(size_t(y) * w + x) * channels + c] = uint8_t(synth_value(x, y, c, w, h));
  return img;
}

Filter filter_named(const std::string& s) {
  for (Filter f :
       {Filter::Nearest, Filter::Box, Filter::Bilinear, Filter::Hamming, Filter::Bicubic, Filter::Lanczos})
    if (s == mc::data::filter_name(f)) return f;
  mc::fail("unknown filter ", s);
}

// Differences between `got` and `want`; a one-channel `want` stands for three equal channels.
struct Diff {
  int max = 0;
  double mean = 0;
  size_t count = 0;  // samples that differ
};

Diff compare(const Image& got, const Image& want) {
  REQUIRE(got.width == want.width);
  REQUIRE(got.height == want.height);
  REQUIRE((got.channels == want.channels || want.channels == 1));
  Diff d;
  const size_t n = size_t(got.width) * got.height;
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < got.channels; ++c) {
      int a = got.pixels[i * got.channels + c];
      int b = want.pixels[i * want.channels + (want.channels == 1 ? 0 : c)];
      int e = std::abs(a - b);
      d.max = std::max(d.max, e);
      d.count += e != 0;
      sum += e;
    }
  d.mean = sum / double(n * got.channels);
  return d;
}

// ---------------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), to compare decoded pixels with PIL's.
std::string sha256_hex(const uint8_t* data, size_t n) {
  static const uint32_t K[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  auto rotr = [](uint32_t x, int r) { return (x >> r) | (x << (32 - r)); };
  std::vector<uint8_t> msg(data, data + n);
  msg.push_back(0x80);
  while (msg.size() % 64 != 56) msg.push_back(0);
  const uint64_t bits = uint64_t(n) * 8;
  for (int i = 7; i >= 0; --i) msg.push_back(uint8_t(bits >> (8 * i)));
  for (size_t blk = 0; blk < msg.size(); blk += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(msg[blk + 4 * i]) << 24 | uint32_t(msg[blk + 4 * i + 1]) << 16 |
             uint32_t(msg[blk + 4 * i + 2]) << 8 | uint32_t(msg[blk + 4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  char out[65];
  for (int i = 0; i < 8; ++i) std::snprintf(out + 8 * i, 9, "%08x", h[i]);
  return std::string(out, 64);
}

// ---------------------------------------------------------------------------------------------------
// Minimal .npz reader: one uint8 C-order array from a zip archive (stored or deflated entries).
struct U8Array {
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

U8Array read_npz_u8(const std::string& path, const std::string& name) {
  auto f = mc::io::MappedFile::open(path);
  const uint8_t* p = f->data();
  const size_t n = f->size();
  auto u16 = [&](size_t o) {
    MC_CHECK(o + 2 <= n, path, ": truncated zip");
    return uint32_t(p[o]) | uint32_t(p[o + 1]) << 8;
  };
  auto u32 = [&](size_t o) {
    MC_CHECK(o + 4 <= n, path, ": truncated zip");
    return u16(o) | u16(o + 2) << 16;
  };
  size_t eocd = std::string::npos;
  for (size_t o = n >= 22 ? n - 22 : 0; o + 22 <= n; --o) {
    if (u32(o) == 0x06054b50) {
      eocd = o;
      break;
    }
    if (o == 0 || n - o > 65557) break;
  }
  MC_CHECK(eocd != std::string::npos, path, ": not a zip archive");
  const size_t entries = u16(eocd + 10);
  size_t cd = u32(eocd + 16);
  const std::string want = name + ".npy";
  for (size_t k = 0; k < entries; ++k) {
    MC_CHECK(u32(cd) == 0x02014b50, path, ": corrupt zip central directory");
    const uint32_t method = u16(cd + 10), csize = u32(cd + 20), usize = u32(cd + 24);
    const size_t nlen = u16(cd + 28), xlen = u16(cd + 30), clen = u16(cd + 32), local = u32(cd + 42);
    MC_CHECK(cd + 46 + nlen <= n, path, ": truncated zip");
    std::string entry(reinterpret_cast<const char*>(p + cd + 46), nlen);
    cd += 46 + nlen + xlen + clen;
    if (entry != want) continue;
    MC_CHECK(csize != 0xFFFFFFFFu && usize != 0xFFFFFFFFu, path, ": zip64 entries are not supported");
    MC_CHECK(u32(local) == 0x04034b50, path, ": corrupt zip local header");
    const size_t data = local + 30 + u16(local + 26) + u16(local + 28);
    MC_CHECK(data + csize <= n, path, ": truncated zip entry");
    MC_CHECK(method == 0 || method == 8, path, ": unsupported zip method ", method);
    // Deflated data is handed over with a few of the bytes that follow it (the central directory always
    // does): stb's inflater reads ahead and can reject a stream that ends exactly at the buffer's end.
    const size_t avail = std::min<size_t>(size_t(csize) + 8, n - data);
    std::vector<uint8_t> npy = method == 0 ? std::vector<uint8_t>(p + data, p + data + csize)
                                           : mc::io::inflate_raw(p + data, avail, usize, path + ":" + entry);
    MC_CHECK(npy.size() >= 10 && std::memcmp(npy.data(), "\x93NUMPY", 6) == 0, entry, ": not a .npy file");
    const size_t hlen =
        npy[6] == 1 ? (npy[8] | npy[9] << 8) : (npy[8] | npy[9] << 8 | npy[10] << 16 | npy[11] << 24);
    const size_t hstart = npy[6] == 1 ? 10 : 12;
    MC_CHECK(hstart + hlen <= npy.size(), entry, ": truncated header");
    std::string header(npy.begin() + long(hstart), npy.begin() + long(hstart + hlen));
    MC_CHECK(header.find("'|u1'") != std::string::npos, entry, ": dtype is not uint8: ", header);
    MC_CHECK(header.find("'fortran_order': False") != std::string::npos, entry, ": not C order");
    U8Array a;
    size_t s = header.find('(', header.find("'shape'"));
    const size_t e = header.find(')', s);
    MC_CHECK(s != std::string::npos && e != std::string::npos, entry, ": no shape");
    for (++s; s < e;) {
      while (s < e && (header[s] == ' ' || header[s] == ',')) ++s;
      if (s >= e) break;
      a.shape.push_back(std::strtoll(header.c_str() + s, nullptr, 10));
      while (s < e && header[s] != ',') ++s;
    }
    size_t count = 1;
    for (auto d : a.shape) count *= size_t(d);
    MC_CHECK(hstart + hlen + count == npy.size(), entry, ": size does not match the shape");
    a.data.assign(npy.begin() + long(hstart + hlen), npy.end());
    return a;
  }
  mc::fail(path, ": no array '", name, "'");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------

TEST_CASE("image: resize is bit-exact with Pillow on synthetic images", "[image]") {
  const Json& idx = index_json();
  std::map<std::string, Image> sources;
  for (const auto& [name, s] : idx.at("resample_sources").items())
    sources[name] = synth(s.at("width").get<int>(), s.at("height").get<int>(), s.at("channels").get<int>());
  std::map<std::string, Diff> worst;
  size_t cases = 0;
  for (const Json& e : idx.at("resample")) {
    const Image& src = sources.at(e.at("source").get<std::string>());
    Image want = fixture_image(e);
    const auto order = e.at("order").get<std::string>() == "horizontal_first"
                           ? mc::data::PassOrder::HorizontalFirst
                           : mc::data::PassOrder::Pillow13;
    Image got = mc::data::resize(src, want.width, want.height,
                                 filter_named(e.at("filter").get<std::string>()), order);
    Diff d = compare(got, want);
    INFO(e.at("source").get<std::string>()
         << " " << src.width << "x" << src.height << " -> " << want.width << "x" << want.height << " "
         << e.at("filter").get<std::string>() << " (" << e.at("order").get<std::string>() << "): max diff "
         << d.max << ", " << d.count << " samples differ");
    CHECK(d.max == 0);
    Diff& w = worst[e.at("filter").get<std::string>()];
    w.max = std::max(w.max, d.max);
    w.count += d.count;
    ++cases;
  }
  CHECK(cases == idx.at("resample").size());
  if (verbose())
    for (const auto& [f, d] : worst)
      std::printf("resample %-8s vs Pillow: max diff %d, %zu samples differ\n", f.c_str(), d.max, d.count);
}

TEST_CASE("image: resize edge cases", "[image]") {
  Image src = synth(17, 9, 3);
  // Same size: a copy, for every filter (Pillow returns a copy too).
  for (Filter f : {Filter::Nearest, Filter::Bilinear, Filter::Bicubic})
    CHECK(mc::data::resize(src, 17, 9, f).pixels == src.pixels);
  // A constant image stays constant under every filter and scale.
  Image flat = Image::zeros(13, 7, 1);
  std::fill(flat.pixels.begin(), flat.pixels.end(), uint8_t(173));
  for (Filter f :
       {Filter::Nearest, Filter::Box, Filter::Bilinear, Filter::Hamming, Filter::Bicubic, Filter::Lanczos})
    for (auto [w, h] : {std::pair{1, 1}, std::pair{5, 30}, std::pair{40, 3}}) {
      Image r = mc::data::resize(flat, w, h, f);
      for (uint8_t v : r.pixels) REQUIRE(v == 173);
    }
  CHECK_THROWS_AS(mc::data::resize(src, 0, 5, Filter::Bicubic), mc::Error);
  CHECK_THROWS_AS(mc::data::resize(Image::zeros(4, 4, 4), 2, 2, Filter::Bicubic), mc::Error);
  CHECK_THROWS_AS(mc::data::resize(Image{}, 2, 2, Filter::Bicubic), mc::Error);
  Image bad = src;
  bad.pixels.pop_back();
  CHECK_THROWS_AS(mc::data::resize(bad, 2, 2, Filter::Bilinear), mc::Error);
}

TEST_CASE("image: torchvision Resize sizes and CenterCrop offsets", "[image]") {
  const Json& idx = index_json();
  for (const Json& e : idx.at("resize_sizes")) {
    auto [w, h] = mc::data::shorter_side_size(e.at("width").get<int>(), e.at("height").get<int>(),
                                              e.at("size").get<int>());
    INFO(e.at("width").get<int>() << "x" << e.at("height").get<int>() << " size " << e.at("size").get<int>());
    CHECK(w == e.at("out_width").get<int>());
    CHECK(h == e.at("out_height").get<int>());
  }
  for (const Json& e : idx.at("center_crop")) {
    const int w = e.at("width").get<int>(), h = e.at("height").get<int>(), cw = e.at("crop_width").get<int>(),
              ch = e.at("crop_height").get<int>();
    // Pixels that encode their own position (x + 1, y + 1, 7), as in the generator.
    Image img = Image::zeros(w, h, 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        uint8_t* p = &img.pixels[(size_t(y) * w + x) * 3];
        p[0] = uint8_t(x + 1), p[1] = uint8_t(y + 1), p[2] = 7;
      }
    Image out = mc::data::center_crop(img, cw, ch);
    INFO(w << "x" << h << " crop " << cw << "x" << ch);
    REQUIRE(out.width == cw);
    REQUIRE(out.height == ch);
    int zeros = 0;
    for (int y = 0; y < ch; ++y)
      for (int x = 0; x < cw; ++x) {
        const uint8_t* p = &out.pixels[(size_t(y) * cw + x) * 3];
        if (p[2] == 0) {
          ++zeros;
          CHECK((p[0] == 0 && p[1] == 0));
          continue;
        }
        CHECK(((int(p[0]) - 1 - x - e.at("offset_x").get<int>()) & 255) ==
              0);  // coordinates are stored mod 256
        CHECK(((int(p[1]) - 1 - y - e.at("offset_y").get<int>()) & 255) == 0);
      }
    CHECK(zeros == e.at("zero_pixels").get<int>());
  }
}

TEST_CASE("image: Resize + CenterCrop pipeline is bit-exact with torchvision on synthetic images",
          "[image]") {
  for (const Json& e : index_json().at("pipeline")) {
    Image src = synth(e.at("source_width").get<int>(), e.at("source_height").get<int>(),
                      e.at("source_channels").get<int>());
    mc::data::Preprocess p;
    p.size = e.at("size").get<int>();
    p.filter = filter_named(e.at("filter").get<std::string>());
    Image got = p.pixels(src);
    Image want = fixture_image(e);
    Diff d = compare(got, want);
    INFO(src.width << "x" << src.height << "x" << src.channels << " " << e.at("filter").get<std::string>());
    CHECK(d.max == 0);
  }
}

TEST_CASE("image: decoding JPEG/PNG/BMP modes matches PIL's convert(\"RGB\")", "[image]") {
  int jpeg_max = 0;
  for (const Json& e : index_json().at("formats")) {
    const std::string file = e.at("file").get<std::string>(), mode = e.at("pil_mode").get<std::string>();
    INFO(file << " (PIL mode " << mode << ")");
    Image img = mc::io::decode_image(kFixtures + file);
    if (file.find(".png") !=
        std::string::npos) {  // decode_image keeps the PNG's channels (BMP palettes expand)
      if (mode == "L" || mode == "I;16") CHECK(img.channels == 1);
      if (mode == "LA" || file == "la16.png") CHECK(img.channels == 2);
      if (mode == "RGBA" && file != "la16.png") CHECK(img.channels == 4);
      if (mode == "RGB") CHECK(img.channels == 3);
    }
    Image rgb = mc::io::to_rgb(img);
    Diff d = compare(rgb, fixture_image(e));
    if (e.at("exact").get<bool>()) {
      CHECK(d.max == 0);
    } else {
      CHECK(d.max <= 3);  // stb vs libjpeg: IDCT / upsampling / colour conversion rounding
      jpeg_max = std::max(jpeg_max, d.max);
      if (verbose())
        std::printf("decode %-16s vs PIL: max diff %d, mean %.4f\n", file.c_str(), d.max, d.mean);
    }
  }
  // Also from memory, and to_rgb on hand-made images.
  auto bytes = mc::io::read_file(kFixtures + "rgba.png");
  Image a = mc::io::decode_image(bytes, "rgba.png");
  CHECK(a.channels == 4);
  Image ga = Image::zeros(2, 1, 2);
  ga.pixels = {10, 200, 250, 0};
  CHECK(mc::io::to_rgb(ga).pixels == std::vector<uint8_t>{10, 10, 10, 250, 250, 250});
  Image ra = Image::zeros(1, 1, 4);
  ra.pixels = {1, 2, 3, 0};
  CHECK(mc::io::to_rgb(ra).pixels == std::vector<uint8_t>{1, 2, 3});
  uint8_t g[6] = {0, 1, 2, 3, 4, 5};
  Image gi = mc::io::from_gray_u8(g, 2, 3);
  CHECK((gi.width == 3 && gi.height == 2 && gi.channels == 1 && gi.at(1, 2, 0) == 5));
}

TEST_CASE("image: VQA-RAD JPEG pipelines against PIL + torchvision", "[image]") {
  REQUIRE(exists(kShared + "vqa_rad/images"));  // shared data is required (CMake disables this file without it)
  for (const Json& e : index_json().at("vqa_rad")) {
    const std::string file = e.at("file").get<std::string>();
    INFO(file);
    Image img = mc::io::decode_image(kShared + "vqa_rad/images/" + file);
    REQUIRE(img.width == e.at("width").get<int>());
    REQUIRE(img.height == e.at("height").get<int>());
    Image rgb = mc::io::to_rgb(img);
    // Decoder alone: PIL's decoded pixels (hash and a sample grid).
    const bool same_decode =
        sha256_hex(rgb.pixels.data(), rgb.pixels.size()) == e.at("decoded_sha256").get<std::string>();
    int probe_max = 0;
    double probe_sum = 0;
    for (const Json& pr : e.at("probes")) {
      for (int c = 0; c < 3; ++c) {
        int diff =
            std::abs(int(rgb.at(pr[0].get<int>(), pr[1].get<int>(), c)) - pr[size_t(2 + c)].get<int>());
        probe_max = std::max(probe_max, diff);
        probe_sum += diff;
      }
    }
    CHECK(probe_max <= 8);
    // Decoder + resampler: the uint8 crop torchvision feeds to ToTensor.
    for (const auto& [fname, out] : e.at("outputs").items()) {
      mc::data::Preprocess p =
          fname == "bilinear" ? mc::data::Preprocess::cxr_clip() : mc::data::Preprocess::clip();
      Diff d = compare(p.pixels(img), fixture_image(out));
      INFO(fname << ": max " << d.max << " mean " << d.mean);
      CHECK(d.max <= 2);
      CHECK(d.mean <= 0.5);
      if (verbose())
        std::printf(
            "vqa_rad %-17s %4dx%-4d decode %s PIL (grid max %d, mean %.3f); %-8s pipeline max %d mean %.4f "
            "(%zu of %d samples differ)\n",
            file.c_str(), img.width, img.height, same_decode ? "==" : "!=", probe_max,
            probe_sum / (3.0 * double(e.at("probes").size())), fname.c_str(), d.max, d.mean, d.count,
            224 * 224 * 3);
    }
  }
}

TEST_CASE("image: MedMNIST 28x28 -> 224 pipelines are bit-exact with PIL + torchvision", "[image]") {
  const Json& m = index_json().at("medmnist");
  const std::string path = kShared + m.at("file").get<std::string>();
  REQUIRE(exists(path));
  U8Array arr = read_npz_u8(path, m.at("array").get<std::string>());
  REQUIRE(arr.shape.size() == 3);
  const int h = int(arr.shape[1]), w = int(arr.shape[2]);
  for (const Json& e : m.at("images")) {
    const int i = e.at("index").get<int>();
    REQUIRE(i < arr.shape[0]);
    Image img = mc::io::from_gray_u8(arr.data.data() + size_t(i) * h * w, h, w);
    for (const auto& [fname, out] : e.at("outputs").items()) {
      mc::data::Preprocess p =
          fname == "bilinear" ? mc::data::Preprocess::cxr_clip() : mc::data::Preprocess::clip();
      Diff d = compare(p.pixels(img), fixture_image(out));
      INFO("index " << i << " " << fname);
      CHECK(d.max == 0);
      if (verbose())
        std::printf("medmnist %3d %-8s max diff %d mean %.4f\n", i, fname.c_str(), d.max, d.mean);
    }
  }
}

TEST_CASE("image: ToTensor + Normalize and batches", "[image]") {
  Image rgb = synth(300, 200, 3);
  Image grey = synth(50, 61, 1);
  for (mc::data::Preprocess p : {mc::data::Preprocess::clip(), mc::data::Preprocess::cxr_clip()}) {
    mc::Tensor t = p(rgb);
    REQUIRE(t.shape() == mc::Shape{3, 224, 224});
    Image crop = p.pixels(rgb);
    const float* d = t.data<float>();
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 224 * 224; i += 97) {
        float x = float(crop.pixels[size_t(i) * 3 + c]) / 255.0f;
        REQUIRE(d[size_t(c) * 224 * 224 + i] == (x - p.mean[size_t(c)]) / p.std[size_t(c)]);
      }
    // Grey input: the same as its RGB conversion.
    mc::Tensor tg = p(grey), tg3 = p(mc::io::to_rgb(grey));
    CHECK(std::memcmp(tg.data<float>(), tg3.data<float>(), sizeof(float) * 3 * 224 * 224) == 0);
    mc::Tensor b = p.batch({rgb, grey, rgb});
    REQUIRE(b.shape() == mc::Shape{3, 3, 224, 224});
    const size_t per = 3 * 224 * 224;
    CHECK(std::memcmp(b.data<float>(), t.data<float>(), per * sizeof(float)) == 0);
    CHECK(std::memcmp(b.data<float>() + per, tg.data<float>(), per * sizeof(float)) == 0);
    CHECK(std::memcmp(b.data<float>() + 2 * per, t.data<float>(), per * sizeof(float)) == 0);
  }
  // Bit-exact with torchvision ToTensor + Normalize for every 8-bit value.
  {
    const Json& norm = index_json().at("normalize");
    auto gz = mc::io::read_file(kFixtures + norm.at("file").get<std::string>());
    auto raw = mc::io::gunzip(gz.data(), gz.size(), norm.at("file").get<std::string>());
    REQUIRE(raw.size() == norm.at("presets").size() * 3 * 256 * sizeof(float));
    Image ramp = Image::zeros(256, 1, 3);
    for (int v = 0; v < 256; ++v)
      ramp.pixels[size_t(v) * 3] = ramp.pixels[size_t(v) * 3 + 1] = ramp.pixels[size_t(v) * 3 + 2] =
          uint8_t(v);
    for (size_t k = 0; k < norm.at("presets").size(); ++k) {
      const std::string name = norm.at("presets")[k].get<std::string>();
      mc::data::Preprocess p =
          name == "imagenet" ? mc::data::Preprocess::cxr_clip() : mc::data::Preprocess::clip();
      mc::Tensor t = mc::data::to_tensor_normalized(ramp, p.mean, p.std);
      INFO(name);
      CHECK(std::memcmp(t.data<float>(), raw.data() + k * 3 * 256 * sizeof(float), 3 * 256 * sizeof(float)) ==
            0);
    }
  }
  // The published constants, narrowed to float.
  CHECK(mc::data::Preprocess::biomedclip().mean[0] == float(0.48145466));
  CHECK(mc::data::Preprocess::pmc_clip().std[2] == float(0.27577711));
  CHECK(mc::data::Preprocess::cxr_clip().mean[1] == float(0.456));
  CHECK(mc::data::Preprocess::cxr_clip().filter == Filter::Bilinear);
  CHECK(mc::data::Preprocess::clip().filter == Filter::Bicubic);
  CHECK_THROWS_AS(
      mc::data::to_tensor_normalized(Image::zeros(2, 2, 2), mc::data::kOpenAIMean, mc::data::kOpenAIStd),
      mc::Error);
}

TEST_CASE("image: unreadable, corrupt and truncated files throw mc::Error", "[image]") {
  auto throws = [](const std::vector<uint8_t>& bytes, const std::string& what) {
    INFO(what);
    CHECK_THROWS_AS(mc::io::decode_image(bytes, what), mc::Error);
  };
  CHECK_THROWS_AS(mc::io::decode_image(kFixtures + "no_such_file.jpg"), mc::Error);
  CHECK_THROWS_AS(mc::io::decode_image(std::string(MC_SOURCE_DIR) + "/tests"), mc::Error);  // a directory
  throws({}, "empty");
  std::mt19937 rng(1234);
  std::vector<uint8_t> noise(4096);
  for (auto& b : noise) b = uint8_t(rng());
  throws(noise, "random bytes");

  auto jpeg = mc::io::read_file(kFixtures + "rgb444.jpg");
  REQUIRE_NOTHROW(mc::io::decode_image(jpeg, "rgb444.jpg"));
  for (size_t cut : {size_t(2), size_t(3), size_t(40), jpeg.size() / 2, size_t(200), size_t(20), size_t(4)})
    throws(std::vector<uint8_t>(jpeg.begin(), jpeg.end() - long(std::min(cut, jpeg.size() - 3))),
           "JPEG without its last " + std::to_string(cut) + " bytes");
  std::vector<uint8_t> junk(jpeg.begin(), jpeg.begin() + 3);  // a JPEG signature, then noise
  junk.insert(junk.end(), noise.begin(), noise.end());
  throws(junk, "JPEG signature + random bytes");
  // Bytes after the end-of-image marker are fine (PIL accepts them too).
  std::vector<uint8_t> trailing = jpeg;
  trailing.insert(trailing.end(), {0, 1, 2, 3});
  CHECK_NOTHROW(mc::io::decode_image(trailing, "JPEG + trailing bytes"));

  for (const char* f : {"rgb.png", "grey16.png", "rgb24.bmp", "grey8.bmp", "progressive.jpg"}) {
    auto bytes = mc::io::read_file(kFixtures + f);
    REQUIRE_NOTHROW(mc::io::decode_image(bytes, f));
    throws(std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(bytes.size() / 2)),
           std::string(f) + " cut in half");
    throws(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 30), std::string(f) + " cut to 30 bytes");
  }
  // PIL accepts a PNG without its last CRC bytes and a BMP without the padding after its last row, and so
  // does decode_image; a missing pixel is an error.
  for (const char* f : {"rgb24.bmp", "grey8.bmp"}) {
    auto bytes = mc::io::read_file(kFixtures + f);
    CHECK_NOTHROW(mc::io::decode_image(std::vector<uint8_t>(bytes.begin(), bytes.end() - 1), f));
    throws(std::vector<uint8_t>(bytes.begin(), bytes.end() - 4),
           std::string(f) + " without its last 4 bytes");
  }
  for (const char* f : {"rgb.png", "grey16.png"}) {
    auto bytes = mc::io::read_file(kFixtures + f);
    CHECK_NOTHROW(mc::io::decode_image(std::vector<uint8_t>(bytes.begin(), bytes.end() - 1), f));
  }
  {
    auto bytes = mc::io::read_file(kFixtures + "progressive.jpg");
    throws(std::vector<uint8_t>(bytes.begin(), bytes.end() - 1), "progressive.jpg without its last byte");
  }
  // A PNG whose compressed image data is garbage.
  auto png = mc::io::read_file(kFixtures + "rgb.png");
  for (size_t i = 41; i + 16 < png.size(); ++i) png[i] = uint8_t(rng());
  throws(png, "PNG with corrupt IDAT");
  // The message names the source.
  try {
    mc::io::decode_image(noise, "some/file.png");
    FAIL("no exception");
  } catch (const mc::Error& e) {
    CHECK(std::string(e.what()).find("some/file.png") != std::string::npos);
  }
}
