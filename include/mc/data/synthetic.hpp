// mc/data/synthetic.hpp — two procedurally generated image-caption domains for the study in miniature.
//
// Everything here is computed from a seed: no files, no downloads, the same numbers on every machine.
//
//   "general" (Domain::General): 32x32 RGB pictures of ONE coloured shape on a noisy background of random
//     colour. Attributes: shape {circle, square, triangle, cross}, colour {red, green, blue, yellow},
//     position {left, right, top, bottom}, size {small, large} (128 combinations). Captions:
//     "a large red circle on the left", "on the left, a large red circle", "a red circle, large, on the
//     left", ... and partial ones ("a red circle").
//   "medical-like" (Domain::Medical): 32x32 greyscale "chest scans": a body outline, two dark lung fields
//     with rib texture, vessel dots (distractors), a mediastinum and heart, brightness / contrast / position
//     jitter and pixel noise. Attributes: finding {none, nodule (a small sharp round density), opacity (a
//     larger diffuse patch), effusion (the base of one lung filled, always "lower")}, zone {upper, lower},
//     side {left, right} (image left = "left"; the radiological mirror convention is not used), size {small,
//     large}, heart {normal, enlarged}. Captions read like short reports: "a small nodule in the upper left
//     lung", "large effusion of the right lower zone, enlarged heart", "no finding", "the lungs are clear",
//     and partial ones ("an opacity", "a nodule in the left lung").
//   Both domains share the words small / large / left / right (and "a", "the", "in", ...): what a model
//   learns about size and position on shapes partly carries over to scans, which is what makes fine-tuning
//   a "general" model on the medical tasks worthwhile, while only a model pre-trained on scans knows the
//   medical vocabulary zero-shot.
//
// Data (see make_study):
//   PairSet            image-caption pairs of one domain, for contrastive pre-training (captions drawn from
//                      all caption styles, partial ones included) with their canonical key.
//   ClassificationSet  medical: the finding, 4 classes {normal, nodule, opacity, effusion}, stratified
//                      (equal class counts, shuffled), train / val / test, with class names and zero-shot
//                      prompts (one per class, and an ensemble per class).
//   RetrievalSet       medical: images with their canonical report (one caption each), train / val / test;
//                      retrieval pool = the split's captions. Many scans share a report ("no finding"), so
//                      an image counts a hit when any caption with its key is retrieved (the study's rule,
//                      tasks::gt_from_keys(keys, keys)).
//   VqaSet             medical: questions per image, CLOSED (yes / no: "is there a nodule?", "is the heart
//                      enlarged?") and OPEN ("where is the abnormality?" -> "upper left", "what is the main
//                      finding?" -> "nodule"), image-disjoint train / val / test, the answer vocabulary
//                      (AnswerVocab of train + val).
// Every split holds the 8-bit images (io::Image, 32x32, grey or RGB) and `pixels`, the same images as a
// normalised f32 tensor [N, 3, 32, 32] (OpenAI mean / std, what the tiny model cards use).
//
// vocab_text() is a BERT vocab.txt covering every word the generators write ([PAD] [UNK] [CLS] [SEP]
// [MASK], punctuation, the words, then single letters / digits and their "##" forms so that any other
// lower-case ASCII text still tokenises without [UNK]).
//
// Determinism: sample i of a set is drawn from SeededRng(seed, stream = purpose << 32 | i), so a set does
// not depend on the sizes of the others, and the same seed gives the same images and captions bit for bit.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/core/tensor.hpp"
#include "mc/data/common.hpp"
#include "mc/data/transforms.hpp"
#include "mc/data/vqa.hpp"
#include "mc/io/image.hpp"
#include "mc/ops/factory.hpp"

namespace mc::data::synthetic {

inline constexpr int kImageSize = 32;

enum class Domain { General, Medical };

inline const char* domain_name(Domain d) { return d == Domain::General ? "general" : "medical"; }

// ---- attribute names ----
inline const std::array<const char*, 4> kShapes = {"circle", "square", "triangle", "cross"};
inline const std::array<const char*, 4> kColors = {"red", "green", "blue", "yellow"};
inline const std::array<const char*, 4> kPositions = {"left", "right", "top", "bottom"};
inline const std::array<const char*, 2> kSizes = {"small", "large"};
// Medical findings; index 0 is "no finding". These are also the classification classes.
inline const std::array<const char*, 4> kFindings = {"normal", "nodule", "opacity", "effusion"};
inline const std::array<const char*, 2> kZones = {"upper", "lower"};
inline const std::array<const char*, 2> kSides = {"left", "right"};

// What one picture shows.
struct Scene {
  Domain domain = Domain::General;
  int size = 0;                            // both: 0 small, 1 large (medical: of the finding)
  int shape = 0, color = 0, position = 0;  // general
  int finding = 0;                         // medical: 0 none, 1 nodule, 2 opacity, 3 effusion
  int zone = 0, side = 0;                  // medical: 0 upper / 1 lower, 0 left / 1 right (effusion: always lower)
  bool enlarged_heart = false;

  bool abnormal() const { return domain == Domain::Medical && finding != 0; }
};

// ---- random numbers ----
namespace detail {

inline double uniform(SeededRng& r, double lo, double hi) { return lo + (hi - lo) * r.uniform(); }
inline int pick(SeededRng& r, int n) { return int(r.below(uint64_t(n))); }
inline double gauss(SeededRng& r) {
  const double u1 = 1.0 - r.uniform(), u2 = r.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
inline bool starts_with_vowel(const std::string& w) {
  return !w.empty() && (w[0] == 'a' || w[0] == 'e' || w[0] == 'i' || w[0] == 'o' || w[0] == 'u');
}
// "a" or "an" before `w`.
inline std::string a(const std::string& w) { return (starts_with_vowel(w) ? "an " : "a ") + w; }

inline float clamp255(double v) { return float(std::min(255.0, std::max(0.0, v))); }
inline double smoothstep01(double x) { return x <= 0 ? 0 : x >= 1 ? 1 : x * x * (3 - 2 * x); }

}  // namespace detail

// A random scene of `d`; for Medical, `finding` >= 0 forces the finding.
inline Scene random_scene(Domain d, SeededRng& rng, int finding = -1) {
  Scene s;
  s.domain = d;
  if (d == Domain::General) {
    s.shape = detail::pick(rng, 4);
    s.color = detail::pick(rng, 4);
    s.position = detail::pick(rng, 4);
    s.size = detail::pick(rng, 2);
    return s;
  }
  s.finding = finding >= 0 ? finding : detail::pick(rng, 4);
  MC_CHECK(s.finding >= 0 && s.finding < 4, "synthetic: finding ", s.finding, " out of range [0, 4)");
  s.size = detail::pick(rng, 2);
  s.zone = detail::pick(rng, 2);
  s.side = detail::pick(rng, 2);
  if (s.finding == 3) s.zone = 1;  // effusions collect at the lung base
  s.enlarged_heart = rng.uniform() < 0.25;
  if (s.finding == 0) s.size = s.zone = s.side = 0;  // nothing to describe
  return s;
}

// ---- rendering ----
namespace detail {

// General: one shape, 4x4 supersampled coverage, on a noisy background.
inline io::Image render_general(const Scene& s, SeededRng& rng) {
  const int S = kImageSize;
  static const double base[4][3] = {{215, 40, 40}, {40, 190, 60}, {45, 80, 225}, {225, 210, 40}};
  double bg[3], fg[3];
  for (int c = 0; c < 3; ++c) bg[c] = uniform(rng, 25, 125);
  for (int c = 0; c < 3; ++c) fg[c] = base[s.color][c] + uniform(rng, -25, 25);
  const double gx = uniform(rng, -20, 20), gy = uniform(rng, -20, 20);  // background gradient
  static const double pos[4][2] = {{8, 16}, {24, 16}, {16, 8}, {16, 24}};
  const double r = s.size == 0 ? uniform(rng, 3.2, 4.4) : uniform(rng, 6.2, 7.4);
  const double slack = std::max(0.0, 8.0 - r) * 0.5 + 1.0;
  const double cx = pos[s.position][0] + uniform(rng, -slack, slack);
  const double cy = pos[s.position][1] + uniform(rng, -slack, slack);
  const double noise = uniform(rng, 4, 12);
  auto inside = [&](double x, double y) {
    const double dx = x - cx, dy = y - cy;
    switch (s.shape) {
      case 0: return dx * dx + dy * dy <= r * r;
      case 1: return std::abs(dx) <= 0.86 * r && std::abs(dy) <= 0.86 * r;
      case 2: {  // upward triangle, base at cy + 0.8 r, apex at cy - r
        const double t = (dy + r) / (1.8 * r);
        return t >= 0 && t <= 1 && std::abs(dx) <= t * r;
      }
      default: {
        const double w = 0.32 * r;
        return (std::abs(dx) <= w && std::abs(dy) <= r) || (std::abs(dy) <= w && std::abs(dx) <= r);
      }
    }
  };
  io::Image img = io::Image::zeros(S, S, 3);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      int hit = 0;
      for (int sy = 0; sy < 4; ++sy)
        for (int sx = 0; sx < 4; ++sx) hit += inside(x + (sx + 0.5) / 4, y + (sy + 0.5) / 4);
      const double cov = hit / 16.0;
      const double g = (gx * (x - 16) + gy * (y - 16)) / 16.0;
      for (int c = 0; c < 3; ++c) {
        const double v = (1 - cov) * (bg[c] + g) + cov * fg[c] + noise * gauss(rng);
        img.pixels[(size_t(y) * S + size_t(x)) * 3 + size_t(c)] = uint8_t(std::lround(clamp255(v)));
      }
    }
  return img;
}

// 1 inside the ellipse (cx, cy, ax, ay), 0 outside, a soft edge about `edge` pixels wide.
inline double soft_ellipse(double x, double y, double cx, double cy, double ax, double ay, double edge) {
  const double dx = (x - cx) / ax, dy = (y - cy) / ay;
  const double d = std::sqrt(dx * dx + dy * dy);
  return smoothstep01((1 - d) * std::min(ax, ay) / edge + 0.5);
}

// Medical: a greyscale chest-like scan with at most one finding.
inline io::Image render_medical(const Scene& s, SeededRng& rng) {
  const int S = kImageSize;
  const double dx = uniform(rng, -1.5, 1.5), dy = uniform(rng, -1.5, 1.5), sc = uniform(rng, 0.92, 1.06);
  const double contrast = uniform(rng, 0.8, 1.15), bright = uniform(rng, -18, 18), noise = uniform(rng, 4, 9);
  const double rib_phase = uniform(rng, 0, 6.283), rib_period = uniform(rng, 4.0, 5.0);
  const double heart_w = s.enlarged_heart ? uniform(rng, 6.8, 7.8) : uniform(rng, 4.2, 5.2);
  // Lung fields: side 0 (image left) and 1.
  const double lung_cx[2] = {16 + dx - 6.3 * sc, 16 + dx + 6.3 * sc};
  const double lung_cy = 15.5 + dy, lung_ax = 4.7 * sc, lung_ay = 10.2 * sc;
  const double lung_bottom = lung_cy + lung_ay;

  std::vector<double> v(size_t(S) * S), lung(size_t(S) * S);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const double px = x + 0.5, py = y + 0.5;
      const double body = soft_ellipse(px, py, 16 + dx, 17 + dy, 14.8 * sc, 15.8 * sc, 1.2);
      double l = 0;
      for (int k = 0; k < 2; ++k) l = std::max(l, soft_ellipse(px, py, lung_cx[k], lung_cy, lung_ax, lung_ay, 1.0));
      const double medi = soft_ellipse(px, py, 16 + dx, 10 + dy, 1.9 * sc, 8 * sc, 0.8);
      const double heart = soft_ellipse(px, py, 16.8 + dx, 22 + dy, heart_w * sc, 5.4 * sc, 1.0);
      const double rib =
          std::pow(std::max(0.0, std::sin(6.283 * (py + 0.3 * std::abs(px - 16 - dx)) / rib_period + rib_phase)), 3);
      double val = 14 + body * 92;  // air -> soft tissue
      val += l * (-52 + 14 * rib);  // dark lung with rib shadows
      val = std::max(val, 14 + std::max(medi, heart) * 122 * body);
      v[size_t(y) * S + size_t(x)] = val;
      lung[size_t(y) * S + size_t(x)] = l * (1 - std::max(medi, heart));
    }
  // Vessel markings: faint small dots in the lungs (distractors for nodules).
  const int n_dots = 3 + pick(rng, 5);
  for (int k = 0; k < n_dots; ++k) {
    const int sd = pick(rng, 2);
    const double cx = lung_cx[sd] + uniform(rng, -0.7, 0.7) * lung_ax, cy = lung_cy + uniform(rng, -0.8, 0.8) * lung_ay;
    const double amp = uniform(rng, 10, 24), rr = uniform(rng, 0.6, 1.0);
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        const double d2 = (x + 0.5 - cx) * (x + 0.5 - cx) + (y + 0.5 - cy) * (y + 0.5 - cy);
        v[size_t(y) * S + size_t(x)] += amp * std::exp(-d2 / (2 * rr * rr)) * lung[size_t(y) * S + size_t(x)];
      }
  }
  // The finding, placed in its zone of its lung (lateral part, away from the heart).
  if (s.finding != 0) {
    const double lcx = lung_cx[s.side];
    const double lateral = s.side == 0 ? -1 : 1;
    if (s.finding == 1 || s.finding == 2) {
      const double fy =
          s.zone == 0 ? lung_cy - uniform(rng, 0.25, 0.6) * lung_ay : lung_cy + uniform(rng, 0.2, 0.5) * lung_ay;
      const double fx = lcx + lateral * uniform(rng, -0.25, 0.35) * lung_ax;
      if (s.finding == 1) {  // nodule: a sharp disc
        const double rr = s.size == 0 ? uniform(rng, 1.3, 1.8) : uniform(rng, 2.3, 2.9);
        const double amp = uniform(rng, 55, 85);
        for (int y = 0; y < S; ++y)
          for (int x = 0; x < S; ++x) {
            const double d = std::hypot(x + 0.5 - fx, y + 0.5 - fy);
            v[size_t(y) * S + size_t(x)] += amp * smoothstep01((rr - d) / 0.8 + 0.5);
          }
      } else {  // opacity: a diffuse, irregular patch (three overlapping blobs)
        const double sg = s.size == 0 ? uniform(rng, 1.7, 2.2) : uniform(rng, 2.7, 3.4);
        const double amp = uniform(rng, 32, 50);
        for (int b = 0; b < 3; ++b) {
          const double bx = fx + uniform(rng, -1.2, 1.2), by = fy + uniform(rng, -1.5, 1.5);
          const double bs = sg * uniform(rng, 0.8, 1.15);
          for (int y = 0; y < S; ++y)
            for (int x = 0; x < S; ++x) {
              const double d2 = (x + 0.5 - bx) * (x + 0.5 - bx) + (y + 0.5 - by) * (y + 0.5 - by);
              v[size_t(y) * S + size_t(x)] +=
                  amp / 1.8 * std::exp(-d2 / (2 * bs * bs)) * std::min(1.0, lung[size_t(y) * S + size_t(x)] + 0.3);
            }
        }
      }
    } else {  // effusion: the lung base filled up to a meniscus rising laterally
      const double h = s.size == 0 ? uniform(rng, 3.0, 4.5) : uniform(rng, 6.0, 8.5);
      const double level = uniform(rng, 62, 82);
      for (int y = 0; y < S; ++y)
        for (int x = 0; x < S; ++x) {
          const double px = x + 0.5, py = y + 0.5;
          if (std::abs(px - lcx) > lung_ax + 1.5) continue;
          const double lat = std::clamp(lateral * (px - lcx) / lung_ax, -1.0, 1.0);
          const double surface = lung_bottom - h - 1.6 * (lat + 1) * 0.5;
          const double fill = smoothstep01((py - surface) / 1.2 + 0.5);
          const size_t i = size_t(y) * S + size_t(x);
          v[i] += fill * lung[i] * level;
        }
    }
  }
  io::Image img = io::Image::zeros(S, S, 1);
  for (size_t i = 0; i < v.size(); ++i)
    img.pixels[i] = uint8_t(std::lround(clamp255((v[i] - 90) * contrast + 90 + bright + noise * gauss(rng))));
  return img;
}

}  // namespace detail

// The picture of `s`; the jitter and noise come from `rng`.
inline io::Image render(const Scene& s, SeededRng& rng) {
  return s.domain == Domain::General ? detail::render_general(s, rng) : detail::render_medical(s, rng);
}

// ---- captions ----

// Caption styles: 0-3 full descriptions (0 is the canonical one), 4-6 partial ones.
inline constexpr int kCaptionStyles = 7;
inline constexpr int kFullCaptionStyles = 4;

inline std::string position_phrase(int p) {
  static const char* ph[4] = {"on the left", "on the right", "at the top", "at the bottom"};
  return ph[p];
}

// Caption `style` (0 <= style < kCaptionStyles) of scene s.
inline std::string caption(const Scene& s, int style) {
  MC_CHECK(style >= 0 && style < kCaptionStyles, "synthetic::caption: style ", style, " out of range [0, ",
           kCaptionStyles, ")");
  using detail::a;
  if (s.domain == Domain::General) {
    const std::string sz = kSizes[size_t(s.size)], col = kColors[size_t(s.color)], sh = kShapes[size_t(s.shape)];
    const std::string pos = position_phrase(s.position);
    switch (style) {
      case 0: return a(sz) + " " + col + " " + sh + " " + pos;
      case 1: return pos + ", " + a(sz) + " " + col + " " + sh;
      case 2: return a(col) + " " + sh + ", " + sz + ", " + pos;
      case 3: return "picture of " + a(sz) + " " + col + " " + sh + " " + pos;
      case 4: return a(col) + " " + sh;
      case 5: return a(sz) + " " + sh + " " + pos;
      default: return a(sh);
    }
  }
  if (s.finding == 0) {
    if (s.enlarged_heart) {
      static const char* t[kCaptionStyles] = {"an enlarged heart, the lungs are clear",
                                              "enlarged heart, no lung finding",
                                              "the heart is enlarged, the lungs are clear",
                                              "an enlarged heart and clear lungs",
                                              "normal lungs",
                                              "clear lungs",
                                              "no finding"};
      return t[style];
    }
    static const char* t[kCaptionStyles] = {"no finding",          "normal chest scan", "the lungs are clear",
                                            "no abnormality seen", "normal lungs",      "clear lungs",
                                            "no finding"};
    return t[style];
  }
  const std::string sz = kSizes[size_t(s.size)], f = kFindings[size_t(s.finding)];
  const std::string z = kZones[size_t(s.zone)], d = kSides[size_t(s.side)];
  const bool h = s.enlarged_heart;
  switch (style) {
    case 0: return a(sz) + " " + f + " in the " + z + " " + d + " lung" + (h ? " and an enlarged heart" : "");
    case 1: return sz + " " + f + " of the " + d + " " + z + " zone" + (h ? ", enlarged heart" : "");
    case 2:
      return "chest scan showing " + a(sz) + " " + f + " in the " + d + " lung, " + z + " zone" +
             (h ? ", the heart is enlarged" : "");
    case 3:
      return "there is " + a(sz) + " " + f + " in the " + z + " " + d + " lung" + (h ? ". the heart is enlarged" : "");
    case 4: return a(f) + " in the " + d + " lung";
    case 5: return a(sz) + " " + f;
    default: return a(f);
  }
}

// The canonical caption (style 0): equal keys mean the same content.
inline std::string caption_key(const Scene& s) { return caption(s, 0); }

// A caption style for pre-training: a full description 3 times in 4, else a partial one.
inline int random_caption_style(SeededRng& rng) {
  return rng.uniform() < 0.75 ? detail::pick(rng, kFullCaptionStyles)
                              : kFullCaptionStyles + detail::pick(rng, kCaptionStyles - kFullCaptionStyles);
}

// ---- VQA questions ----

struct QuestionAnswer {
  std::string question, answer;
  AnswerType type = AnswerType::Closed;
  std::string kind;  // which template: "presence", "normal", "side", "heart", "size", "finding", "where", ...
};

// Every question the generator can ask about s (closed ones first). Answers are lower-case.
inline std::vector<QuestionAnswer> all_questions(const Scene& s, SeededRng& rng) {
  MC_CHECK(s.domain == Domain::Medical, "synthetic::all_questions: VQA is defined on the medical domain");
  std::vector<QuestionAnswer> q;
  auto yn = [](bool b) { return std::string(b ? "yes" : "no"); };
  const std::string f = kFindings[size_t(s.finding)];
  // presence: half the time about the actual finding (when there is one)
  const int asked = s.finding != 0 && rng.uniform() < 0.5 ? s.finding : 1 + detail::pick(rng, 3);
  q.push_back({"is there " + detail::a(kFindings[size_t(asked)]) + "?", yn(asked == s.finding), AnswerType::Closed,
               "presence"});
  q.push_back({"is this scan normal?", yn(s.finding == 0), AnswerType::Closed, "normal"});
  const int side = detail::pick(rng, 2);
  q.push_back({std::string("is there an abnormality in the ") + kSides[size_t(side)] + " lung?",
               yn(s.finding != 0 && s.side == side), AnswerType::Closed, "side"});
  q.push_back({"is the heart enlarged?", yn(s.enlarged_heart), AnswerType::Closed, "heart"});
  if (s.finding != 0) q.push_back({"is the lesion large?", yn(s.size == 1), AnswerType::Closed, "size"});
  q.push_back({"what is the main finding?", s.finding == 0 ? "none" : f, AnswerType::Open, "finding"});
  q.push_back({"what is the heart size?", s.enlarged_heart ? "enlarged" : "normal", AnswerType::Open, "heart"});
  if (s.finding != 0) {
    q.push_back({"where is the abnormality?", std::string(kZones[size_t(s.zone)]) + " " + kSides[size_t(s.side)],
                 AnswerType::Open, "where"});
    q.push_back({"which lung is affected?", kSides[size_t(s.side)], AnswerType::Open, "side"});
    q.push_back({"what is the size of the lesion?", kSizes[size_t(s.size)], AnswerType::Open, "size"});
  }
  return q;
}

// ---- vocabulary ----

// A BERT vocab.txt (one token per line) covering the generators' words; see the top of this file.
inline std::string vocab_text() {
  std::set<std::string> words;
  auto add_text = [&](const std::string& t) {
    std::string w;
    for (char c : t) {
      if (c >= 'a' && c <= 'z') {
        w += c;
        continue;
      }
      if (!w.empty()) words.insert(w);
      w.clear();
    }
    if (!w.empty()) words.insert(w);
  };
  Scene g;
  g.domain = Domain::General;
  for (g.shape = 0; g.shape < 4; ++g.shape)
    for (g.color = 0; g.color < 4; ++g.color)
      for (g.position = 0; g.position < 4; ++g.position)
        for (g.size = 0; g.size < 2; ++g.size)
          for (int st = 0; st < kCaptionStyles; ++st) add_text(caption(g, st));
  Scene m;
  m.domain = Domain::Medical;
  SeededRng rng(0, 0);
  for (m.finding = 0; m.finding < 4; ++m.finding)
    for (m.size = 0; m.size < 2; ++m.size)
      for (m.zone = 0; m.zone < 2; ++m.zone)
        for (m.side = 0; m.side < 2; ++m.side)
          for (int h = 0; h < 2; ++h) {
            m.enlarged_heart = h == 1;
            for (int st = 0; st < kCaptionStyles; ++st) add_text(caption(m, st));
            for (int rep = 0; rep < 8; ++rep)
              for (const QuestionAnswer& qa : all_questions(m, rng)) {
                add_text(qa.question);
                add_text(qa.answer);
              }
          }
  for (const char* w : {"a",   "an", "the",   "is",   "there", "of",    "in",      "on",   "at",    "and",
                        "yes", "no", "chest", "scan", "image", "photo", "picture", "lung", "lungs", "heart"})
    words.insert(w);
  std::string out = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  for (const char* p : {"!", "\"", "'", "(", ")", ",", "-", ".", "/", ":", ";", "?"}) out += std::string(p) + "\n";
  std::set<std::string> singles;
  for (char c = 'a'; c <= 'z'; ++c) singles.insert(std::string(1, c));
  for (char c = '0'; c <= '9'; ++c) singles.insert(std::string(1, c));
  for (const std::string& w : words)
    if (!singles.count(w)) out += w + "\n";
  for (const std::string& c : singles) out += c + "\n";
  for (const std::string& c : singles) out += "##" + c + "\n";
  return out;
}

// ---- data sets ----

// Where each set's samples come from: SeededRng(seed, purpose << 32 | i).
enum class Purpose : uint64_t {
  PretrainGeneral = 1,
  PretrainMedical = 2,
  ClsTrain = 3,
  ClsVal = 4,
  ClsTest = 5,
  RetTrain = 6,
  RetVal = 7,
  RetTest = 8,
  VqaTrain = 9,
  VqaVal = 10,
  VqaTest = 11,
};

inline uint64_t stream_of(Purpose p, int64_t i) { return (uint64_t(p) << 32) | uint64_t(i); }

// The normalised [N, 3, 32, 32] f32 tensor of `images` (OpenAI mean / std; grey counts as RGB).
inline Tensor to_pixels(const std::vector<io::Image>& images) {
  const int64_t n = int64_t(images.size());
  Tensor t = Tensor::empty({n, 3, kImageSize, kImageSize}, DType::F32);
  float* base = t.data<float>();
  const size_t per = size_t(3) * kImageSize * kImageSize;
  for (int64_t i = 0; i < n; ++i) {
    const io::Image& im = images[size_t(i)];
    MC_CHECK(im.width == kImageSize && im.height == kImageSize, "synthetic::to_pixels: image ", i, " is ", im.width,
             "x", im.height, ", expected ", kImageSize, "x", kImageSize);
    to_tensor_normalized(im, kOpenAIMean, kOpenAIStd, base + size_t(i) * per);
  }
  return t;
}

// Image-caption pairs of one domain.
struct PairSet {
  Domain domain = Domain::General;
  std::vector<Scene> scenes;
  std::vector<io::Image> images;      // 32x32, RGB (general) or grey (medical)
  std::vector<std::string> captions;  // as written (any style)
  std::vector<std::string> keys;      // canonical captions (equal = same content)
  Tensor pixels;                      // [N, 3, 32, 32] f32, normalised

  int64_t size() const { return int64_t(images.size()); }
};

// One split of a labelled image set (classification) or of captioned images (retrieval).
struct ImageSplit {
  std::vector<Scene> scenes;
  std::vector<io::Image> images;
  Tensor pixels;                      // [N, 3, 32, 32] f32, normalised
  std::vector<int64_t> labels;        // classification: the finding (0..3)
  std::vector<std::string> captions;  // retrieval: the canonical report of each image (= its key)

  int64_t size() const { return int64_t(images.size()); }
  // labels as an i64 tensor [N]
  Tensor label_tensor() const { return from_vector(labels, {int64_t(labels.size())}); }
};

struct ClassificationSet {
  std::vector<std::string> class_names;               // {"normal", "nodule", "opacity", "effusion"}
  std::vector<std::string> prompts;                   // one zero-shot prompt per class: "no finding", "a nodule", ...
  std::vector<std::vector<std::string>> prompt_sets;  // a prompt ensemble per class (mean of normalised embeddings)
  ImageSplit train, val, test;
  int64_t num_classes() const { return int64_t(class_names.size()); }
};

struct RetrievalSet {
  ImageSplit train, val, test;  // captions[i] describes images[i]; the pool is the split's captions
};

struct VqaQuestion {
  int64_t image = 0;  // index into the split's images
  std::string question, answer;
  AnswerType answer_type = AnswerType::Closed;
  std::string kind;
};

struct VqaSplit {
  std::vector<Scene> scenes;
  std::vector<io::Image> images;
  Tensor pixels;                   // [N_images, 3, 32, 32]
  std::vector<VqaQuestion> items;  // grouped by image

  int64_t size() const { return int64_t(items.size()); }
  int64_t count(AnswerType t) const {
    return std::count_if(items.begin(), items.end(), [&](const VqaQuestion& q) { return q.answer_type == t; });
  }
  // Answer indices [N] (i64) of every question under `vocab` (unknown answers map to its last entry).
  Tensor answer_labels(const AnswerVocab& vocab) const {
    std::vector<int64_t> v;
    for (const VqaQuestion& q : items) v.push_back(vocab.index(q.answer));
    return from_vector(v, {int64_t(v.size())});
  }
  // image index of every question [N] (i64), e.g. for index_select(pixels, 0, ...)
  Tensor image_index() const {
    std::vector<int64_t> v;
    for (const VqaQuestion& q : items) v.push_back(q.image);
    return from_vector(v, {int64_t(v.size())});
  }
};

struct VqaSet {
  VqaSplit train, val, test;
  AnswerVocab answers;  // the answers of train + val, sorted, then "unknown"
};

struct SyntheticOptions {
  uint64_t seed = kDefaultSeed;
  int64_t pretrain_pairs = 4096;  // per domain
  int64_t cls_train = 400, cls_val = 100, cls_test = 400;
  int64_t ret_train = 400, ret_val = 100, ret_test = 200;
  int64_t vqa_train_images = 300, vqa_val_images = 75, vqa_test_images = 150;
  int vqa_questions_per_image = 4;  // distinct templates per image
};

// n image-caption pairs of domain d.
inline PairSet make_pairs(Domain d, int64_t n, uint64_t seed = kDefaultSeed) {
  MC_CHECK(n >= 0, "synthetic::make_pairs: negative size ", n);
  PairSet p;
  p.domain = d;
  const Purpose purpose = d == Domain::General ? Purpose::PretrainGeneral : Purpose::PretrainMedical;
  for (int64_t i = 0; i < n; ++i) {
    SeededRng rng(seed, stream_of(purpose, i));
    Scene s = random_scene(d, rng);
    p.images.push_back(render(s, rng));
    p.captions.push_back(caption(s, random_caption_style(rng)));
    p.keys.push_back(caption_key(s));
    p.scenes.push_back(s);
  }
  p.pixels = to_pixels(p.images);
  return p;
}

namespace detail {

// n medical images with findings cycling 0..3, in a seeded shuffled order (equal class counts up to n % 4).
inline ImageSplit medical_split(int64_t n, uint64_t seed, Purpose purpose) {
  MC_CHECK(n >= 0, "synthetic: negative split size ", n);
  ImageSplit sp;
  const std::vector<int64_t> order = permutation(n, seed, uint64_t(purpose) << 32 | 0xffffffffu);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = order[size_t(k)];
    SeededRng rng(seed, stream_of(purpose, i));
    Scene s = random_scene(Domain::Medical, rng, int(i % 4));
    sp.images.push_back(render(s, rng));
    sp.labels.push_back(s.finding);
    sp.captions.push_back(caption_key(s));
    sp.scenes.push_back(s);
  }
  sp.pixels = to_pixels(sp.images);
  return sp;
}

inline VqaSplit vqa_split(int64_t n_images, int per_image, uint64_t seed, Purpose purpose) {
  MC_CHECK(per_image > 0, "synthetic: vqa_questions_per_image must be positive");
  ImageSplit base = medical_split(n_images, seed, purpose);
  VqaSplit sp;
  sp.scenes = base.scenes;
  sp.images = std::move(base.images);
  sp.pixels = base.pixels;
  for (int64_t i = 0; i < int64_t(sp.scenes.size()); ++i) {
    SeededRng rng(seed, stream_of(purpose, i) ^ (uint64_t(1) << 63));
    std::vector<QuestionAnswer> all = all_questions(sp.scenes[size_t(i)], rng);
    // Alternate closed and open questions, each drawn without replacement.
    std::vector<QuestionAnswer> closed, open;
    for (auto& q : all) (q.type == AnswerType::Closed ? closed : open).push_back(q);
    shuffle(closed, rng);
    shuffle(open, rng);
    size_t ic = 0, io = 0;
    for (int k = 0; k < per_image && (ic < closed.size() || io < open.size()); ++k) {
      const bool take_closed = (k % 2 == 0 && ic < closed.size()) || io >= open.size();
      const QuestionAnswer& q = take_closed ? closed[ic++] : open[io++];
      sp.items.push_back({i, q.question, q.answer, q.type, q.kind});
    }
  }
  return sp;
}

}  // namespace detail

inline ClassificationSet make_classification(const SyntheticOptions& o = {}) {
  ClassificationSet c;
  for (const char* f : kFindings) c.class_names.push_back(f);
  c.prompts = {"no finding", "a nodule", "an opacity", "an effusion"};
  c.prompt_sets.resize(4);
  c.prompt_sets[0] = {"no finding",          "normal chest scan", "the lungs are clear",
                      "no abnormality seen", "normal lungs",      "clear lungs"};
  for (int f = 1; f < 4; ++f) {
    Scene s;
    s.domain = Domain::Medical;
    s.finding = f;
    for (int side = 0; side < 2; ++side) {
      s.side = side;
      c.prompt_sets[size_t(f)].push_back(caption(s, 4));  // "a nodule in the left lung"
    }
    for (int size = 0; size < 2; ++size) {
      s.size = size;
      c.prompt_sets[size_t(f)].push_back(caption(s, 5));  // "a small nodule"
    }
    c.prompt_sets[size_t(f)].push_back(caption(s, 6));  // "a nodule"
  }
  c.train = detail::medical_split(o.cls_train, o.seed, Purpose::ClsTrain);
  c.val = detail::medical_split(o.cls_val, o.seed, Purpose::ClsVal);
  c.test = detail::medical_split(o.cls_test, o.seed, Purpose::ClsTest);
  return c;
}

inline RetrievalSet make_retrieval(const SyntheticOptions& o = {}) {
  RetrievalSet r;
  r.train = detail::medical_split(o.ret_train, o.seed, Purpose::RetTrain);
  r.val = detail::medical_split(o.ret_val, o.seed, Purpose::RetVal);
  r.test = detail::medical_split(o.ret_test, o.seed, Purpose::RetTest);
  return r;
}

inline VqaSet make_vqa(const SyntheticOptions& o = {}) {
  VqaSet v;
  v.train = detail::vqa_split(o.vqa_train_images, o.vqa_questions_per_image, o.seed, Purpose::VqaTrain);
  v.val = detail::vqa_split(o.vqa_val_images, o.vqa_questions_per_image, o.seed, Purpose::VqaVal);
  v.test = detail::vqa_split(o.vqa_test_images, o.vqa_questions_per_image, o.seed, Purpose::VqaTest);
  std::vector<std::string> a;
  for (const VqaSplit* s : {&v.train, &v.val})
    for (const VqaQuestion& q : s->items) a.push_back(q.answer);
  v.answers = AnswerVocab::from_answers(std::move(a));
  return v;
}

// Everything the miniature study needs.
struct Study {
  PairSet general_pairs, medical_pairs;  // pre-training
  ClassificationSet classification;      // downstream, medical
  RetrievalSet retrieval;
  VqaSet vqa;
};

inline Study make_study(const SyntheticOptions& o = {}) {
  Study s;
  s.general_pairs = make_pairs(Domain::General, o.pretrain_pairs, o.seed);
  s.medical_pairs = make_pairs(Domain::Medical, o.pretrain_pairs, o.seed);
  s.classification = make_classification(o);
  s.retrieval = make_retrieval(o);
  s.vqa = make_vqa(o);
  return s;
}

}  // namespace mc::data::synthetic
