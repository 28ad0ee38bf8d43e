// mc/core/dtype.hpp — element types.
//
// DType names the element type of a tensor. Floating types: F32 (the working type), F64 (CPU only; used by
// gradcheck), BF16 and F16 (storage types: CPU kernels load them to f32, compute, and round back with
// round-to-nearest-even). Integer types: I32, I64, U8, and Bool (one byte, 0 or 1).
// MC_DISPATCH(dtype, T, body) instantiates `body` with `using T = <C++ type>` for the runtime dtype.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "mc/core/error.hpp"

namespace mc {

enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U8, Bool };

// bfloat16: the upper half of an IEEE f32.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float f) : bits(from_float(f)) {}  // NOLINT: implicit like a numeric type
  operator float() const {                // NOLINT
    uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static uint16_t from_float(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
    return uint16_t(u >> 16);
  }
};

// IEEE binary16.
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  f16(float f) : bits(from_float(f)) {}  // NOLINT
  operator float() const { return to_float(bits); }  // NOLINT
  static float to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0x1f) {
      u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
      u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
      u = sign | uint32_t(112 - e) << 23 | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static uint16_t from_float(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);   // NaN
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow (rounds to inf) or inf
    if (a < 0x38800000u) {                                  // result is subnormal or zero
      if (a < 0x33000000u) return uint16_t(sign);           // below half the smallest subnormal
      uint32_t man = (a & 0x7fffffu) | 0x800000u;
      int shift = 126 - int(a >> 23);  // 14..24
      uint32_t half = 1u << (shift - 1), rest = man & ((1u << shift) - 1);
      uint32_t r = man >> shift;
      if (rest > half || (rest == half && (r & 1u))) ++r;
      return uint16_t(sign | r);
    }
    uint32_t r = ((a - 0x38000000u) >> 13);          // rebias exponent 127 -> 15
    uint32_t rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
};

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::U8: case DType::Bool: return 1;
  }
  return 0;
}

inline bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
    case DType::Bool: return "bool";
  }
  return "?";
}

inline DType dtype_from_name(std::string_view s) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8, DType::Bool})
    if (s == dtype_name(t)) return t;
  fail("unknown dtype '", s, "' (expected f32, f64, bf16, f16, i32, i64, u8 or bool)");
}

inline std::ostream& operator<<(std::ostream& o, DType t) { return o << dtype_name(t); }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::F16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };

// The type kernels compute in: f32 for the half types, the type itself otherwise.
template <class T> struct compute_type { using type = T; };
template <> struct compute_type<bf16> { using type = float; };
template <> struct compute_type<f16> { using type = float; };
template <class T> using acc_t = typename compute_type<T>::type;

}  // namespace mc

#define MC_DISPATCH_CASE(ENUM, CTYPE, T, ...) \
  case ::mc::DType::ENUM: { using T = CTYPE; __VA_ARGS__; break; }

// All dtypes.
#define MC_DISPATCH(dt, T, ...)                                                        \
  switch (dt) {                                                                        \
    MC_DISPATCH_CASE(F32, float, T, __VA_ARGS__)                                       \
    MC_DISPATCH_CASE(F64, double, T, __VA_ARGS__)                                      \
    MC_DISPATCH_CASE(BF16, ::mc::bf16, T, __VA_ARGS__)                                 \
    MC_DISPATCH_CASE(F16, ::mc::f16, T, __VA_ARGS__)                                   \
    MC_DISPATCH_CASE(I32, int32_t, T, __VA_ARGS__)                                     \
    MC_DISPATCH_CASE(I64, int64_t, T, __VA_ARGS__)                                     \
    MC_DISPATCH_CASE(U8, uint8_t, T, __VA_ARGS__)                                      \
    MC_DISPATCH_CASE(Bool, bool, T, __VA_ARGS__)                                       \
  }

// Floating dtypes only; `what` names the op for the error.
#define MC_DISPATCH_FLOAT(dt, what, T, ...)                                            \
  switch (dt) {                                                                        \
    MC_DISPATCH_CASE(F32, float, T, __VA_ARGS__)                                       \
    MC_DISPATCH_CASE(F64, double, T, __VA_ARGS__)                                      \
    MC_DISPATCH_CASE(BF16, ::mc::bf16, T, __VA_ARGS__)                                 \
    MC_DISPATCH_CASE(F16, ::mc::f16, T, __VA_ARGS__)                                   \
    default: ::mc::fail(what, ": expected a floating dtype, got ", ::mc::dtype_name(dt)); \
  }
