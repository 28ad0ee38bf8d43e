// mc/ops/print.hpp — printing small tensors for debugging: std::cout << t.
#pragma once
#include <iomanip>
#include <ostream>

#include "mc/ops/view.hpp"

namespace mc {

inline std::ostream& operator<<(std::ostream& o, const Tensor& t) {
  if (!t.defined()) return o << "tensor(undefined)";
  const bool fl = is_floating(t.dtype());
  std::vector<double> v = t.to_vector<double>();
  const Shape& s = t.shape();
  const int64_t limit = 6;  // per dim, elided in the middle beyond this
  std::function<void(size_t, int64_t)> rec = [&](size_t d, int64_t base) {
    if (d == s.size()) {
      if (fl) o << std::fixed << std::setprecision(4) << v[size_t(base)];
      else o << int64_t(v[size_t(base)]);
      return;
    }
    int64_t stride = 1;
    for (size_t k = d + 1; k < s.size(); ++k) stride *= s[k];
    o << '[';
    const std::string sep = d + 1 == s.size() ? ", " : ",\n" + std::string(d + 8, ' ');
    for (int64_t i = 0; i < s[d]; ++i) {
      if (i > 0) o << sep;
      if (s[d] > limit && i == limit / 2) {
        o << "..." << sep;
        i = s[d] - limit / 2;
      }
      rec(d + 1, base + i * stride);
    }
    o << ']';
  };
  o << "tensor(";
  rec(0, 0);
  o << std::defaultfloat << ", shape=" << shape_str(s) << ", dtype=" << dtype_name(t.dtype());
  if (!t.device().is_cpu()) o << ", device=" << t.device().str();
  if (t.requires_grad()) o << ", requires_grad";
  return o << ')';
}

}  // namespace mc
