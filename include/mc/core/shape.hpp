// mc/core/shape.hpp — shapes, strides and PyTorch's broadcasting rule.
#pragma once
#include <cstdint>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "mc/core/error.hpp"

namespace mc {

using Shape = std::vector<int64_t>;

inline int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

inline std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

// Wraps a possibly negative dim into [0, ndim); `what` names the op for the error.
inline int wrap_dim(int64_t d, size_t ndim, const char* what) {
  int64_t n = int64_t(ndim);
  MC_CHECK(d >= -n && d < n && n > 0, what, ": dim ", d, " out of range for a ", n, "-d tensor");
  return int(d < 0 ? d + n : d);
}

// Result shape of broadcasting a with b (numpy / PyTorch rule: align right, 1 stretches).
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* what) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    MC_CHECK(da == db || da == 1 || db == 1, what, ": shapes ", shape_str(a), " and ", shape_str(b),
             " cannot be broadcast");
    r[i] = da == 1 ? db : da;
  }
  return r;
}

}  // namespace mc
