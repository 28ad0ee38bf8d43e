// mc/ops/factory.hpp — creating tensors: empty/zeros/ones/full/arange, from host data, random.
#pragma once
#include <initializer_list>
#include <vector>

#include "mc/cpu/backend.hpp"  // the CPU backend is always available
#include "mc/core/random.hpp"

namespace mc {


inline Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu()) {
  return Tensor::empty(shape, dtype, device);
}
inline Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu()) {
  Tensor t = Tensor::empty(shape, dtype, device);
  backend(device).fill(t, value);
  return t;
}
inline Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu()) {
  return full(shape, 0.0, dtype, device);
}
inline Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu()) {
  return full(shape, 1.0, dtype, device);
}
inline Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }
inline Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
inline Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }
inline Tensor full_like(const Tensor& t, double v) { return full(t.shape(), v, t.dtype(), t.device()); }
// A 0-d tensor.
inline Tensor scalar_tensor(double v, DType dtype = DType::F32, Device device = Device::cpu()) {
  return full({}, v, dtype, device);
}

// A tensor holding a copy of host data (T's dtype), on `device`.
template <class T>
Tensor from_vector(const std::vector<T>& data, const Shape& shape, Device device = Device::cpu()) {
  MC_CHECK(int64_t(data.size()) == numel(shape), "from_vector: ", data.size(), " values for shape ",
           shape_str(shape));
  Tensor h = Tensor::empty(shape, dtype_of<T>::value);
  if constexpr (std::is_same_v<T, bool>) {
    for (size_t i = 0; i < data.size(); ++i) h.data<bool>()[i] = data[i];
  } else if (!data.empty()) {
    std::memcpy(h.raw_data(), data.data(), data.size() * sizeof(T));
  }
  if (device.is_cpu()) return h;
  Tensor d = Tensor::empty(shape, h.dtype(), device);
  backend(device).copy(d, h);
  return d;
}
// tensor({1, 2, 3}) -> f32 [3]; tensor({...}, {2, 2}) with a shape.
inline Tensor tensor(std::initializer_list<float> values, Shape shape = {}, DType dtype = DType::F32) {
  std::vector<float> v(values);
  if (shape.empty() && v.size() != 1) shape = {int64_t(v.size())};
  Tensor t = from_vector(v, shape);
  if (dtype == DType::F32) return t;
  Tensor r = Tensor::empty(t.shape(), dtype);
  backend(r.device()).copy(r, t);
  return r;
}

inline Tensor arange(int64_t begin, int64_t end, DType dtype = DType::I64, Device device = Device::cpu()) {
  MC_CHECK(end >= begin, "arange: end ", end, " < begin ", begin);
  std::vector<int64_t> v(size_t(end - begin));
  for (size_t i = 0; i < v.size(); ++i) v[i] = begin + int64_t(i);
  Tensor t = from_vector(v, {int64_t(v.size())});
  if (dtype != DType::I64) {
    Tensor r = Tensor::empty(t.shape(), dtype);
    backend(r.device()).copy(r, t);
    t = r;
  }
  if (device.is_cpu()) return t;
  Tensor d = Tensor::empty(t.shape(), dtype, device);
  backend(device).copy(d, t);
  return d;
}
inline Tensor arange(int64_t end, DType dtype = DType::I64, Device device = Device::cpu()) {
  return arange(0, end, dtype, device);
}

// In-place random fills (no autograd), drawing from `gen` (the default generator if null).
inline Tensor& uniform_(Tensor& t, double lo = 0, double hi = 1, Generator* gen = nullptr) {
  Generator& g = gen ? *gen : default_generator();
  backend(t.device()).random(t, RandomKind::Uniform, g.seed, g.next_draw(), lo, hi);
  return t;
}
inline Tensor& normal_(Tensor& t, double mean = 0, double std = 1, Generator* gen = nullptr) {
  Generator& g = gen ? *gen : default_generator();
  backend(t.device()).random(t, RandomKind::Normal, g.seed, g.next_draw(), mean, std);
  return t;
}
inline Tensor rand(const Shape& shape, Generator* gen = nullptr, DType dtype = DType::F32, Device device = Device::cpu()) {
  Tensor t = Tensor::empty(shape, dtype, device);
  return uniform_(t, 0, 1, gen);
}
inline Tensor randn(const Shape& shape, Generator* gen = nullptr, DType dtype = DType::F32, Device device = Device::cpu()) {
  Tensor t = Tensor::empty(shape, dtype, device);
  return normal_(t, 0, 1, gen);
}

}  // namespace mc
