// mc/ops/elementwise.hpp — unary and binary elementwise ops with broadcasting, type promotion and autograd.
#pragma once
#include <cmath>
#include <limits>

#include "mc/ops/view.hpp"

namespace mc {
namespace detail {

// PyTorch-like promotion for two tensor operands: floating beats integer, wider float wins,
// bf16 with f16 gives f32; among integers the wider wins; bool is the weakest.
inline DType promote(DType a, DType b) {
  if (a == b) return a;
  auto rank_f = [](DType t) { return t == DType::F64 ? 3 : t == DType::F32 ? 2 : 1; };
  if (is_floating(a) && is_floating(b)) {
    if (rank_f(a) != rank_f(b)) return rank_f(a) > rank_f(b) ? a : b;
    return DType::F32;  // bf16 vs f16
  }
  if (is_floating(a)) return a;
  if (is_floating(b)) return b;
  auto rank_i = [](DType t) { return t == DType::I64 ? 4 : t == DType::I32 ? 3 : t == DType::U8 ? 2 : 1; };
  return rank_i(a) > rank_i(b) ? a : b;
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* what) {
  MC_CHECK(a.device() == b.device(), what, ": tensors on different devices (", a.device().str(), ", ",
           b.device().str(), ")");
}

inline Tensor unary(UnaryOp op, const Tensor& x, double a = 0, double b = 0) {
  Tensor out = Tensor::empty(x.shape(), op == UnaryOp::LogicalNot ? DType::Bool : x.dtype(), x.device());
  backend(x.device()).unary(op, out, x, a, b);
  return out;
}

inline bool is_comparison(BinaryOp op) { return op >= BinaryOp::Eq && op <= BinaryOp::LogicalOr; }

// Broadcasts, promotes and runs a binary primitive; no autograd.
inline Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, const char* what) {
  check_same_device(a, b, what);
  const DType dt = promote(a.dtype(), b.dtype());
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), what);
  Tensor out = Tensor::empty(shape, is_comparison(op) ? DType::Bool : dt, a.device());
  backend(a.device()).binary(op, out, expand(cast(a, dt), shape), expand(cast(b, dt), shape));
  return out;
}

// A 0-d tensor holding a scalar operand for t: t's dtype, or f32 when t is integral and v is not.
inline Tensor scalar_for(const Tensor& t, double v) {
  DType dt = t.dtype();
  if (!is_floating(dt) && (v != std::floor(v) || !std::isfinite(v))) dt = DType::F32;
  if (dt == DType::Bool) dt = DType::I64;
  return scalar_tensor(v, dt, t.device());
}

}  // namespace detail

inline Tensor sum(const Tensor& x, const Shape& dims, bool keepdim = false);

inline Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const size_t lead = size_t(g.dim()) - shape.size();
  Shape dims;
  for (size_t i = 0; i < size_t(g.dim()); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(int64_t(i));
  Tensor r = dims.empty() ? g : sum(g, dims, true);
  return r.reshape(shape);
}

// ---- unary ----
#define MC_UNARY_SIMPLE(name, OP, grad_expr)                                                          \
  inline Tensor name(const Tensor& x) {                                                              \
    Tensor y = detail::unary(UnaryOp::OP, x);                                                         \
    return record(y, #name, {x}, [x_ = x.detach(), y_ = y.detach()](const Tensor& g, const Needs&) { \
      (void)x_; (void)y_;                                                                             \
      return std::vector<Tensor>{grad_expr};                                                          \
    });                                                                                               \
  }

inline Tensor operator+(const Tensor& a, const Tensor& b);
inline Tensor operator-(const Tensor& a, const Tensor& b);
inline Tensor operator*(const Tensor& a, const Tensor& b);
inline Tensor operator/(const Tensor& a, const Tensor& b);
inline Tensor operator-(const Tensor& a);
inline Tensor operator*(const Tensor& a, double b);
inline Tensor operator*(double a, const Tensor& b);
inline Tensor operator+(const Tensor& a, double b);
inline Tensor operator-(const Tensor& a, double b);
inline Tensor operator-(double a, const Tensor& b);
inline Tensor operator/(const Tensor& a, double b);
inline Tensor operator==(const Tensor& a, double b);

inline Tensor sign(const Tensor& x);
inline Tensor exp(const Tensor& x);
inline Tensor sqrt(const Tensor& x);
inline Tensor cos(const Tensor& x);
inline Tensor sin(const Tensor& x);
inline Tensor square(const Tensor& x);

inline Tensor binary_grad(BinaryOp op, const Tensor& g, const Tensor& v) {
  return detail::binary(op, g, v, "activation backward");
}

MC_UNARY_SIMPLE(exp, Exp, g * y_)
MC_UNARY_SIMPLE(log, Log, g / x_)
MC_UNARY_SIMPLE(log1p, Log1p, g / (x_ + 1.0))
MC_UNARY_SIMPLE(sqrt, Sqrt, g / (y_ * 2.0))
MC_UNARY_SIMPLE(rsqrt, Rsqrt, g * y_ * y_ * y_ * -0.5)
MC_UNARY_SIMPLE(abs, Abs, g * sign(x_))
MC_UNARY_SIMPLE(tanh, Tanh, binary_grad(BinaryOp::TanhBackward, g, y_))
MC_UNARY_SIMPLE(sigmoid, Sigmoid, binary_grad(BinaryOp::SigmoidBackward, g, y_))
MC_UNARY_SIMPLE(relu, Relu, binary_grad(BinaryOp::ReluBackward, g, x_))
MC_UNARY_SIMPLE(quick_gelu, QuickGelu, binary_grad(BinaryOp::QuickGeluBackward, g, x_))
MC_UNARY_SIMPLE(sin, Sin, g * cos(x_))
MC_UNARY_SIMPLE(cos, Cos, -(g * sin(x_)))
MC_UNARY_SIMPLE(reciprocal, Reciprocal, -(g * y_ * y_))
#undef MC_UNARY_SIMPLE

inline Tensor neg(const Tensor& x) {
  return record(detail::unary(UnaryOp::Neg, x), "neg", {x},
                [](const Tensor& g, const Needs&) { return std::vector<Tensor>{neg(g)}; });
}
inline Tensor sign(const Tensor& x) { return detail::unary(UnaryOp::Sign, x); }
inline Tensor floor(const Tensor& x) { return detail::unary(UnaryOp::Floor, x); }
inline Tensor logical_not(const Tensor& x) { return detail::unary(UnaryOp::LogicalNot, x); }

// GELU, exact (erf) or tanh approximation.
inline Tensor gelu(const Tensor& x, bool tanh_approx = false) {
  Tensor y = detail::unary(tanh_approx ? UnaryOp::GeluTanh : UnaryOp::GeluErf, x);
  return record(y, "gelu", {x}, [x_ = x.detach(), tanh_approx](const Tensor& g, const Needs&) {
    return std::vector<Tensor>{
        binary_grad(tanh_approx ? BinaryOp::GeluTanhBackward : BinaryOp::GeluErfBackward, g, x_)};
  });
}

// x ** p for a scalar exponent.
inline Tensor pow(const Tensor& x, double p) {
  Tensor y = detail::unary(UnaryOp::PowScalar, x, p);
  return record(y, "pow", {x}, [x_ = x.detach(), p](const Tensor& g, const Needs&) {
    return std::vector<Tensor>{p == 2 ? g * x_ * 2.0 : g * pow(x_, p - 1) * p};
  });
}
inline Tensor square(const Tensor& x) { return pow(x, 2); }

// Limits may be +-infinity to leave a side open. The gradient passes where lo <= x <= hi.
inline Tensor clamp(const Tensor& x, double lo = -std::numeric_limits<double>::infinity(),
                    double hi = std::numeric_limits<double>::infinity()) {
  MC_CHECK(!(lo > hi), "clamp: min ", lo, " > max ", hi);
  Tensor y = detail::unary(UnaryOp::Clamp, x, lo, hi);
  return record(y, "clamp", {x}, [x_ = x.detach(), lo, hi](const Tensor& g, const Needs&) {
    Tensor inside = detail::binary(BinaryOp::LogicalAnd, detail::binary(BinaryOp::Ge, x_, detail::scalar_for(x_, lo), "clamp"),
                                   detail::binary(BinaryOp::Le, x_, detail::scalar_for(x_, hi), "clamp"), "clamp");
    return std::vector<Tensor>{g * detail::cast(inside, g.dtype())};
  });
}

// ---- binary ----
inline Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = detail::binary(BinaryOp::Add, a, b, "add");
  return record(y, "add", {a, b}, [sa = a.shape(), sb = b.shape(), da = a.dtype(), db = b.dtype()](const Tensor& g, const Needs& n) {
    return std::vector<Tensor>{n[0] ? detail::cast(sum_to(g, sa), da) : Tensor(),
                               n[1] ? detail::cast(sum_to(g, sb), db) : Tensor()};
  });
}
inline Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = detail::binary(BinaryOp::Sub, a, b, "sub");
  return record(y, "sub", {a, b}, [sa = a.shape(), sb = b.shape(), da = a.dtype(), db = b.dtype()](const Tensor& g, const Needs& n) {
    return std::vector<Tensor>{n[0] ? detail::cast(sum_to(g, sa), da) : Tensor(),
                               n[1] ? detail::cast(sum_to(neg(g), sb), db) : Tensor()};
  });
}
inline Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = detail::binary(BinaryOp::Mul, a, b, "mul");
  return record(y, "mul", {a, b}, [a_ = a.detach(), b_ = b.detach()](const Tensor& g, const Needs& n) {
    return std::vector<Tensor>{n[0] ? detail::cast(sum_to(g * b_, a_.shape()), a_.dtype()) : Tensor(),
                               n[1] ? detail::cast(sum_to(g * a_, b_.shape()), b_.dtype()) : Tensor()};
  });
}
inline Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = detail::binary(BinaryOp::Div, a, b, "div");
  return record(y, "div", {a, b}, [a_ = a.detach(), b_ = b.detach()](const Tensor& g, const Needs& n) {
    Tensor gb = g / b_;
    return std::vector<Tensor>{n[0] ? detail::cast(sum_to(gb, a_.shape()), a_.dtype()) : Tensor(),
                               n[1] ? detail::cast(sum_to(-(gb * a_ / b_), b_.shape()), b_.dtype()) : Tensor()};
  });
}
// a ** b elementwise; d/db uses log(a), defined for a > 0.
inline Tensor pow(const Tensor& a, const Tensor& b) {
  Tensor y = detail::binary(BinaryOp::Pow, a, b, "pow");
  return record(y, "pow", {a, b}, [a_ = a.detach(), b_ = b.detach(), y_ = y.detach()](const Tensor& g, const Needs& n) {
    return std::vector<Tensor>{
        n[0] ? detail::cast(sum_to(g * b_ * detail::binary(BinaryOp::Pow, a_, b_ - 1.0, "pow"), a_.shape()), a_.dtype()) : Tensor(),
        n[1] ? detail::cast(sum_to(g * y_ * log(a_), b_.shape()), b_.dtype()) : Tensor()};
  });
}
// Elementwise max / min; the gradient goes to the larger (smaller) operand, split evenly on ties.
inline Tensor maximum_minimum(const Tensor& a, const Tensor& b, bool is_max) {
  Tensor y = detail::binary(is_max ? BinaryOp::Maximum : BinaryOp::Minimum, a, b, is_max ? "maximum" : "minimum");
  return record(y, is_max ? "maximum" : "minimum", {a, b}, [a_ = a.detach(), b_ = b.detach(), is_max](const Tensor& g, const Needs& n) {
    Tensor wa = detail::cast(detail::binary(is_max ? BinaryOp::Gt : BinaryOp::Lt, a_, b_, "maximum"), g.dtype());
    Tensor tie = detail::cast(detail::binary(BinaryOp::Eq, a_, b_, "maximum"), g.dtype()) * 0.5;
    Tensor ga = g * (wa + tie);
    return std::vector<Tensor>{n[0] ? detail::cast(sum_to(ga, a_.shape()), a_.dtype()) : Tensor(),
                               n[1] ? detail::cast(sum_to(g - ga, b_.shape()), b_.dtype()) : Tensor()};
  });
}
inline Tensor maximum(const Tensor& a, const Tensor& b) { return maximum_minimum(a, b, true); }
inline Tensor minimum(const Tensor& a, const Tensor& b) { return maximum_minimum(a, b, false); }

// cond ? a : b with broadcasting; the gradient follows the chosen branch.
inline Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  detail::check_same_device(cond, a, "where");
  detail::check_same_device(a, b, "where");
  const DType dt = detail::promote(a.dtype(), b.dtype());
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = Tensor::empty(shape, dt, a.device());
  backend(a.device()).where(out, detail::expand(detail::cast(cond, DType::Bool), shape),
                            detail::expand(detail::cast(a, dt), shape), detail::expand(detail::cast(b, dt), shape));
  return record(out, "where", {a, b}, [c = detail::cast(cond, DType::Bool), sa = a.shape(), sb = b.shape(), da = a.dtype(), db = b.dtype()](const Tensor& g, const Needs& n) {
    Tensor z = zeros({}, g.dtype(), g.device());
    return std::vector<Tensor>{n[0] ? detail::cast(sum_to(where(c, g, z), sa), da) : Tensor(),
                               n[1] ? detail::cast(sum_to(where(c, z, g), sb), db) : Tensor()};
  });
}

// ---- comparisons and logic (not differentiable) ----
inline Tensor eq(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::Eq, a, b, "eq"); }
inline Tensor ne(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::Ne, a, b, "ne"); }
inline Tensor lt(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::Lt, a, b, "lt"); }
inline Tensor le(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::Le, a, b, "le"); }
inline Tensor gt(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::Gt, a, b, "gt"); }
inline Tensor ge(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::Ge, a, b, "ge"); }
inline Tensor logical_and(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::LogicalAnd, a, b, "logical_and"); }
inline Tensor logical_or(const Tensor& a, const Tensor& b) { return detail::binary(BinaryOp::LogicalOr, a, b, "logical_or"); }

// ---- operators ----
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, detail::scalar_for(a, b)); }
inline Tensor operator+(double a, const Tensor& b) { return add(detail::scalar_for(b, a), b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, detail::scalar_for(a, b)); }
inline Tensor operator-(double a, const Tensor& b) { return sub(detail::scalar_for(b, a), b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, detail::scalar_for(a, b)); }
inline Tensor operator*(double a, const Tensor& b) { return mul(detail::scalar_for(b, a), b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, detail::scalar_for(a, b)); }
inline Tensor operator/(double a, const Tensor& b) { return div(detail::scalar_for(b, a), b); }
inline Tensor operator==(const Tensor& a, double b) { return eq(a, detail::scalar_for(a, b)); }
inline Tensor operator!=(const Tensor& a, double b) { return ne(a, detail::scalar_for(a, b)); }
inline Tensor operator<(const Tensor& a, double b) { return lt(a, detail::scalar_for(a, b)); }
inline Tensor operator<=(const Tensor& a, double b) { return le(a, detail::scalar_for(a, b)); }
inline Tensor operator>(const Tensor& a, double b) { return gt(a, detail::scalar_for(a, b)); }
inline Tensor operator>=(const Tensor& a, double b) { return ge(a, detail::scalar_for(a, b)); }
inline Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
inline Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
inline Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
inline Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }

// In-place accumulation without autograd (gradient buffers, running statistics).
inline Tensor& add_(Tensor& a, const Tensor& b, double alpha = 1.0) {
  MC_CHECK(!(is_grad_enabled() && a.requires_grad()), "add_: in-place write to a tensor that requires grad");
  Tensor rhs = alpha == 1.0 ? b : detail::binary(BinaryOp::Mul, b, detail::scalar_for(b, alpha), "add_");
  backend(a.device()).binary(BinaryOp::Add, a, a, detail::expand(detail::cast(rhs, a.dtype()), a.shape(), "add_"));
  return a;
}
inline Tensor& mul_(Tensor& a, double s) {
  MC_CHECK(!(is_grad_enabled() && a.requires_grad()), "mul_: in-place write to a tensor that requires grad");
  backend(a.device()).binary(BinaryOp::Mul, a, a, detail::expand(detail::scalar_for(a, s), a.shape()));
  return a;
}

}  // namespace mc
