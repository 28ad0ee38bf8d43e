// mc/cpu/elementwise.hpp — copy, fill, unary, binary and where on the CPU.
#pragma once
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "mc/core/backend.hpp"
#include "mc/core/math.hpp"
#include "mc/cpu/loops.hpp"

namespace mc::cpu {

template <class T>
inline T* ptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

// Converts between element types the way PyTorch does (float -> int truncates, nonzero -> true).
template <class To, class From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, bool>) {
    return static_cast<acc_t<From>>(v) != acc_t<From>(0);
  } else if constexpr (std::is_same_v<To, bf16> || std::is_same_v<To, f16>) {
    return To(float(static_cast<acc_t<From>>(v)));
  } else {
    return static_cast<To>(static_cast<acc_t<From>>(v));
  }
}

// Runs out[i] = f(in[i]) over two strided tensors of one shape.
template <class TO, class TI, class F>
void map1(const Tensor& out, const Tensor& in, F f) {
  TO* o = ptr<TO>(out);
  const TI* x = ptr<const TI>(in);
  for_each_row<2>(out.shape(), {&out.strides(), &in.strides()},
                  [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
                    TO* op = o + off[0];
                    const TI* xp = x + off[1];
                    if (st[0] == 1 && st[1] == 1) {
                      for (int64_t i = 0; i < n; ++i) op[i] = f(xp[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) op[i * st[0]] = f(xp[i * st[1]]);
                    }
                  });
}

template <class TO, class TA, class TB, class F>
void map2(const Tensor& out, const Tensor& a, const Tensor& b, F f) {
  TO* o = ptr<TO>(out);
  const TA* x = ptr<const TA>(a);
  const TB* y = ptr<const TB>(b);
  for_each_row<3>(out.shape(), {&out.strides(), &a.strides(), &b.strides()},
                  [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
                    TO* op = o + off[0];
                    const TA* xp = x + off[1];
                    const TB* yp = y + off[2];
                    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
                      for (int64_t i = 0; i < n; ++i) op[i] = f(xp[i], yp[i]);
                    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
                      const TB yv = yp[0];
                      for (int64_t i = 0; i < n; ++i) op[i] = f(xp[i], yv);
                    } else {
                      for (int64_t i = 0; i < n; ++i) op[i * st[0]] = f(xp[i * st[1]], yp[i * st[2]]);
                    }
                  });
}

inline void copy(const Tensor& dst, const Tensor& src) {
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    size_t n = size_t(dst.numel()) * dst.element_size();
    if (n) std::memmove(dst.raw_data(), src.raw_data(), n);
    return;
  }
  MC_DISPATCH(dst.dtype(), TO, MC_DISPATCH(src.dtype(), TI, map1<TO, TI>(dst, src, [](TI v) { return convert<TO>(v); })));
}

inline void fill(const Tensor& dst, double value) {
  MC_DISPATCH(dst.dtype(), T, {
    const T v = convert<T>(value);
    T* o = ptr<T>(dst);
    for_each_row<1>(dst.shape(), {&dst.strides()},
                    [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
                      for (int64_t i = 0; i < n; ++i) o[off[0] + i * st[0]] = v;
                    });
  });
}

// Applies f, computing in C (acc type), to a tensor of element type T.
template <class T, class F>
void unary_float(const Tensor& out, const Tensor& x, F f) {
  using C = acc_t<T>;
  map1<T, T>(out, x, [&](T v) { return T(f(C(v))); });
}

// Integer versions of the ops that make sense on integers; false when `op` has none for T.
template <class T>
bool unary_integral(UnaryOp op, const Tensor& out, const Tensor& x, double a, double b) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    switch (op) {
      case UnaryOp::Neg: map1<T, T>(out, x, [](T v) { return T(-v); }); return true;
      case UnaryOp::Abs: map1<T, T>(out, x, [](T v) { return T(v < 0 ? -v : v); }); return true;
      case UnaryOp::Sign: map1<T, T>(out, x, [](T v) { return T((v > 0) - (v < 0)); }); return true;
      case UnaryOp::Clamp:
        map1<T, T>(out, x, [a, b](T v) { return T(std::min(std::max(double(v), a), b)); });
        return true;
      default: return false;
    }
  }
  return false;
}

template <class T>
bool binary_integral(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    auto run = [&](auto f) { map2<T, T, T>(out, a, b, f); };
    switch (op) {
      case BinaryOp::Add: run([](T x, T y) { return T(x + y); }); return true;
      case BinaryOp::Sub: run([](T x, T y) { return T(x - y); }); return true;
      case BinaryOp::Mul: run([](T x, T y) { return T(x * y); }); return true;
      case BinaryOp::Maximum: run([](T x, T y) { return x > y ? x : y; }); return true;
      case BinaryOp::Minimum: run([](T x, T y) { return x < y ? x : y; }); return true;
      default: return false;  // integer division is left undefined rather than silently truncating
    }
  }
  return false;
}

inline void unary(UnaryOp op, const Tensor& out, const Tensor& x, double a, double b) {
  const DType dt = x.dtype();
  if (op == UnaryOp::LogicalNot) {
    MC_DISPATCH(dt, T, map1<bool, T>(out, x, [](T v) { return !convert<bool>(v); }));
    return;
  }
  if (!is_floating(dt)) {
    bool done = false;
    MC_DISPATCH(dt, T, done = unary_integral<T>(op, out, x, a, b));
    MC_CHECK(done, "unary op ", int(op), ": not defined for dtype ", dtype_name(dt));
    return;
  }
  MC_DISPATCH_FLOAT(dt, "unary", T, {
    using C = acc_t<T>;
    const C ca = C(a), cb = C(b);
    switch (op) {
      case UnaryOp::Neg: unary_float<T>(out, x, [](C v) { return -v; }); break;
      case UnaryOp::Exp: unary_float<T>(out, x, [](C v) { return std::exp(v); }); break;
      case UnaryOp::Log: unary_float<T>(out, x, [](C v) { return std::log(v); }); break;
      case UnaryOp::Log1p: unary_float<T>(out, x, [](C v) { return std::log1p(v); }); break;
      case UnaryOp::Sqrt: unary_float<T>(out, x, [](C v) { return std::sqrt(v); }); break;
      case UnaryOp::Rsqrt: unary_float<T>(out, x, [](C v) { return C(1) / std::sqrt(v); }); break;
      case UnaryOp::Abs: unary_float<T>(out, x, [](C v) { return std::fabs(v); }); break;
      case UnaryOp::Sign: unary_float<T>(out, x, [](C v) { return C((v > 0) - (v < 0)); }); break;
      case UnaryOp::Tanh: unary_float<T>(out, x, [](C v) { return std::tanh(v); }); break;
      case UnaryOp::Sigmoid: unary_float<T>(out, x, [](C v) { return math::sigmoid(v); }); break;
      case UnaryOp::Relu: unary_float<T>(out, x, [](C v) { return v > C(0) ? v : (v == v ? C(0) : v); }); break;
      case UnaryOp::GeluErf: unary_float<T>(out, x, [](C v) { return math::gelu_erf(v); }); break;
      case UnaryOp::GeluTanh: unary_float<T>(out, x, [](C v) { return math::gelu_tanh(v); }); break;
      case UnaryOp::QuickGelu: unary_float<T>(out, x, [](C v) { return math::quick_gelu(v); }); break;
      case UnaryOp::Sin: unary_float<T>(out, x, [](C v) { return std::sin(v); }); break;
      case UnaryOp::Cos: unary_float<T>(out, x, [](C v) { return std::cos(v); }); break;
      case UnaryOp::Reciprocal: unary_float<T>(out, x, [](C v) { return C(1) / v; }); break;
      case UnaryOp::Floor: unary_float<T>(out, x, [](C v) { return std::floor(v); }); break;
      case UnaryOp::Clamp:
        unary_float<T>(out, x, [ca, cb](C v) { return v != v ? v : (v < ca ? ca : (v > cb ? cb : v)); });
        break;
      case UnaryOp::PowScalar:
        if (a == 2) unary_float<T>(out, x, [](C v) { return v * v; });
        else if (a == 0.5) unary_float<T>(out, x, [](C v) { return std::sqrt(v); });
        else unary_float<T>(out, x, [ca](C v) { return std::pow(v, ca); });
        break;
      case UnaryOp::LogicalNot: break;  // handled above
    }
  });
}

inline void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  const DType dt = a.dtype();
  MC_CHECK(b.dtype() == dt, "binary: operand dtypes differ (", dtype_name(dt), ", ", dtype_name(b.dtype()), ")");
  const bool compare = op >= BinaryOp::Eq && op <= BinaryOp::LogicalOr;
  if (compare) {
    MC_DISPATCH(dt, T, {
      using C = acc_t<T>;
      auto run = [&](auto f) { map2<bool, T, T>(out, a, b, [f](T x, T y) { return f(C(x), C(y)); }); };
      switch (op) {
        case BinaryOp::Eq: run([](C x, C y) { return x == y; }); break;
        case BinaryOp::Ne: run([](C x, C y) { return x != y; }); break;
        case BinaryOp::Lt: run([](C x, C y) { return x < y; }); break;
        case BinaryOp::Le: run([](C x, C y) { return x <= y; }); break;
        case BinaryOp::Gt: run([](C x, C y) { return x > y; }); break;
        case BinaryOp::Ge: run([](C x, C y) { return x >= y; }); break;
        case BinaryOp::LogicalAnd: run([](C x, C y) { return x != C(0) && y != C(0); }); break;
        case BinaryOp::LogicalOr: run([](C x, C y) { return x != C(0) || y != C(0); }); break;
        default: break;
      }
    });
    return;
  }
  if (!is_floating(dt)) {
    bool done = false;
    MC_DISPATCH(dt, T, done = binary_integral<T>(op, out, a, b));
    MC_CHECK(done, "binary op ", int(op), ": not defined for dtype ", dtype_name(dt));
    return;
  }
  MC_DISPATCH_FLOAT(dt, "binary", T, {
    using C = acc_t<T>;
    auto run = [&](auto f) { map2<T, T, T>(out, a, b, [f](T x, T y) { return T(f(C(x), C(y))); }); };
    switch (op) {
      case BinaryOp::Add: run([](C x, C y) { return x + y; }); break;
      case BinaryOp::Sub: run([](C x, C y) { return x - y; }); break;
      case BinaryOp::Mul: run([](C x, C y) { return x * y; }); break;
      case BinaryOp::Div: run([](C x, C y) { return x / y; }); break;
      case BinaryOp::Pow: run([](C x, C y) { return std::pow(x, y); }); break;
      case BinaryOp::Maximum: run([](C x, C y) { return (x != x || x > y) ? x : y; }); break;
      case BinaryOp::Minimum: run([](C x, C y) { return (x != x || x < y) ? x : y; }); break;
      case BinaryOp::ReluBackward: run([](C g, C x) { return x > C(0) ? g : C(0); }); break;
      case BinaryOp::GeluErfBackward: run([](C g, C x) { return g * math::gelu_erf_grad(x); }); break;
      case BinaryOp::GeluTanhBackward: run([](C g, C x) { return g * math::gelu_tanh_grad(x); }); break;
      case BinaryOp::QuickGeluBackward: run([](C g, C x) { return g * math::quick_gelu_grad(x); }); break;
      case BinaryOp::SigmoidBackward: run([](C g, C y) { return g * y * (C(1) - y); }); break;
      case BinaryOp::TanhBackward: run([](C g, C y) { return g * (C(1) - y * y); }); break;
      default: break;
    }
  });
}

inline void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  MC_CHECK(cond.dtype() == DType::Bool, "where: condition must be bool, got ", dtype_name(cond.dtype()));
  MC_DISPATCH(out.dtype(), T, {
    T* o = ptr<T>(out);
    const bool* c = ptr<const bool>(cond);
    const T* x = ptr<const T>(a);
    const T* y = ptr<const T>(b);
    for_each_row<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()},
                    [&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& st) {
                      for (int64_t i = 0; i < n; ++i)
                        o[off[0] + i * st[0]] = c[off[1] + i * st[1]] ? x[off[2] + i * st[2]] : y[off[3] + i * st[3]];
                    });
  });
}

}  // namespace mc::cpu
