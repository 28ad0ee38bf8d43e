// mc/ops/view.hpp — views (reshape, permute, narrow, expand, ...), copies and casts, with autograd.
//
// Views share storage with their input. The raw_* helpers in mc::detail build views without recording
// autograd; the ops layer uses them internally.
#pragma once
#include <algorithm>
#include <numeric>

#include "mc/autograd/node.hpp"
#include "mc/ops/factory.hpp"

namespace mc {
namespace detail {

inline Tensor as_strided(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  return Tensor::view_of(t.storage(), t.dtype(), shape, strides, offset);
}

// Broadcast view of t to `shape` (stride 0 on stretched dims).
inline Tensor expand(const Tensor& t, const Shape& shape, const char* what = "expand") {
  MC_CHECK(shape.size() >= size_t(t.dim()), what, ": cannot expand ", shape_str(t.shape()), " to ", shape_str(shape));
  const size_t lead = shape.size() - size_t(t.dim());
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) continue;
    int64_t d = t.shape()[i - lead];
    MC_CHECK(d == shape[i] || d == 1, what, ": cannot expand ", shape_str(t.shape()), " to ", shape_str(shape));
    st[i] = d == 1 && shape[i] != 1 ? 0 : t.strides()[i - lead];
  }
  return as_strided(t, shape, st, t.offset());
}

inline Tensor narrow(const Tensor& t, int dim, int64_t start, int64_t length) {
  Shape sh = t.shape();
  sh[size_t(dim)] = length;
  return as_strided(t, sh, t.strides(), t.offset() + start * t.strides()[size_t(dim)]);
}

inline Tensor permute(const Tensor& t, const std::vector<int>& dims) {
  Shape sh(dims.size()), st(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    sh[i] = t.shape()[size_t(dims[i])];
    st[i] = t.strides()[size_t(dims[i])];
  }
  return as_strided(t, sh, st, t.offset());
}

// Strides for viewing t with `shape` without copying, if possible (torch's view rule).
inline bool view_strides(const Tensor& t, const Shape& shape, Shape& out) {
  out.assign(shape.size(), 0);
  if (t.numel() == 0) {
    out = contiguous_strides(shape);
    return true;
  }
  if (t.is_contiguous()) {
    out = contiguous_strides(shape);
    return true;
  }
  // General case: match chunks of old dims that are contiguous among themselves.
  const Shape& os = t.shape();
  const Shape& ost = t.strides();
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t chunk_base_stride = ost.empty() ? 1 : ost.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[size_t(d)];
    if (d == 0 || (os[size_t(d - 1)] != 1 && ost[size_t(d - 1)] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[size_t(view_d)] == 1)) {
        out[size_t(view_d)] = view_numel * chunk_base_stride;
        view_numel *= shape[size_t(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = ost[size_t(d - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

// Resolves one -1 in a requested shape.
inline Shape infer_shape(Shape shape, int64_t n, const char* what) {
  int64_t known = 1, neg = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MC_CHECK(neg < 0, what, ": only one dimension can be -1");
      neg = int64_t(i);
    } else {
      MC_CHECK(shape[i] >= 0, what, ": invalid dimension ", shape[i]);
      known *= shape[i];
    }
  }
  if (neg >= 0) {
    MC_CHECK(known > 0 && n % known == 0, what, ": shape ", shape_str(shape), " is invalid for ", n, " elements");
    shape[size_t(neg)] = n / known;
  }
  MC_CHECK(numel(shape) == n, what, ": shape ", shape_str(shape), " is invalid for input of ", n, " elements");
  return shape;
}

inline Tensor contiguous_copy(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  backend(t.device()).copy(out, t);
  return out;
}

inline Tensor cast(const Tensor& t, DType dt) {
  if (t.dtype() == dt) return t;
  Tensor out = Tensor::empty(t.shape(), dt, t.device());
  backend(t.device()).copy(out, t);
  return out;
}

inline Tensor reshape(const Tensor& t, const Shape& shape) {
  Shape st;
  if (view_strides(t, shape, st)) return as_strided(t, shape, st, t.offset());
  Tensor c = contiguous_copy(t);
  return as_strided(c, shape, contiguous_strides(shape), 0);
}

}  // namespace detail

using autograd::Needs;
using autograd::record;

inline Tensor Tensor::detach() const {
  if (!defined()) return Tensor();
  return detail::as_strided(*this, shape(), strides(), offset());
}

// Gradient of a broadcast: sums g over the dims that were stretched to reach g's shape.
inline Tensor sum_to(const Tensor& g, const Shape& shape);

inline Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = detail::infer_shape(shape, numel(), "reshape");
  if (s == this->shape()) return *this;
  Shape in = this->shape();
  return record(detail::reshape(*this, s), "reshape", {*this},
                [in](const Tensor& g, const Needs&) { return std::vector<Tensor>{g.reshape(in)}; });
}

inline Tensor Tensor::view(const Shape& shape) const {
  Shape s = detail::infer_shape(shape, numel(), "view");
  Shape st;
  MC_CHECK(detail::view_strides(*this, s, st), "view: shape ", shape_str(s), " is not compatible with the strides of a ",
           shape_str(this->shape()), " tensor; use reshape");
  return reshape(s);
}

inline Tensor Tensor::permute(const Shape& dims) const {
  MC_CHECK(int(dims.size()) == dim(), "permute: ", dims.size(), " dims given for a ", dim(), "-d tensor");
  std::vector<int> d(dims.size()), inv(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    d[i] = wrap_dim(dims[i], dims.size(), "permute");
    MC_CHECK(!seen[size_t(d[i])], "permute: repeated dim ", dims[i]);
    seen[size_t(d[i])] = true;
    inv[size_t(d[i])] = int(i);
  }
  return record(detail::permute(*this, d), "permute", {*this}, [inv](const Tensor& g, const Needs&) {
    return std::vector<Tensor>{detail::permute(g, inv)};
  });
}

inline Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  Shape p(static_cast<size_t>(dim()));
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[size_t(wrap_dim(d0, p.size(), "transpose"))], p[size_t(wrap_dim(d1, p.size(), "transpose"))]);
  return permute(p);
}

inline Tensor Tensor::t() const {
  MC_CHECK(dim() == 2, "t(): expects a 2-d tensor, got ", dim(), "-d");
  return transpose(0, 1);
}

inline Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  const int d = wrap_dim(dim_, shape().size(), "narrow");
  const int64_t n = size(d);
  if (start < 0) start += n;
  MC_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ", start + length,
           ") out of bounds for dim ", d, " of size ", n);
  Shape in = shape();
  DType dt = dtype();
  Device dev = device();
  return record(detail::narrow(*this, d, start, length), "narrow", {*this},
                [in, d, start, length, dt, dev](const Tensor& g, const Needs&) {
                  Tensor gx = zeros(in, dt, dev);
                  backend(dev).copy(detail::narrow(gx, d, start, length), g);
                  return std::vector<Tensor>{gx};
                });
}

inline Tensor Tensor::select(int64_t dim_, int64_t index) const {
  const int d = wrap_dim(dim_, shape().size(), "select");
  if (index < 0) index += size(d);
  return narrow(d, index, 1).squeeze(d);
}

inline Tensor Tensor::expand(const Shape& shape_) const {
  Shape target = shape_;
  const size_t lead = target.size() - std::min(target.size(), size_t(dim()));
  for (size_t i = lead; i < target.size(); ++i)
    if (target[i] == -1) target[i] = shape()[i - lead];
  if (target == shape()) return *this;
  Shape in = shape();
  return record(detail::expand(*this, target), "expand", {*this},
                [in](const Tensor& g, const Needs&) { return std::vector<Tensor>{sum_to(g, in)}; });
}

inline Tensor Tensor::squeeze() const {
  Shape s;
  for (int64_t d : shape())
    if (d != 1) s.push_back(d);
  return reshape(s);
}

inline Tensor Tensor::squeeze(int64_t dim_) const {
  const int d = wrap_dim(dim_, shape().size(), "squeeze");
  if (size(d) != 1) return *this;
  Shape s = shape();
  s.erase(s.begin() + d);
  return reshape(s);
}

inline Tensor Tensor::unsqueeze(int64_t dim_) const {
  const int d = wrap_dim(dim_, shape().size() + 1, "unsqueeze");
  Shape s = shape();
  s.insert(s.begin() + d, 1);
  return reshape(s);
}

inline Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  const int s = wrap_dim(start, shape().size(), "flatten"), e = wrap_dim(end, shape().size(), "flatten");
  MC_CHECK(s <= e, "flatten: start dim ", start, " after end dim ", end);
  Shape r(shape().begin(), shape().begin() + s);
  int64_t m = 1;
  for (int i = s; i <= e; ++i) m *= shape()[size_t(i)];
  r.push_back(m);
  r.insert(r.end(), shape().begin() + e + 1, shape().end());
  return reshape(r);
}

inline Tensor Tensor::clone() const {
  return record(detail::contiguous_copy(*this), "clone", {*this},
                [](const Tensor& g, const Needs&) { return std::vector<Tensor>{g}; });
}

inline Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

inline Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  DType in = dtype();
  Tensor out = detail::cast(*this, dt);
  if (!is_floating(dt) || !is_floating(in)) return out;  // no gradient through integer casts
  return record(out, "to", {*this},
                [in](const Tensor& g, const Needs&) { return std::vector<Tensor>{detail::cast(g, in)}; });
}

inline Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Device in = device();
  Tensor out = Tensor::empty(shape(), dtype(), dev);
  // The non-CPU side's backend moves the bytes.
  backend(dev.is_cpu() ? in : dev).copy(out, contiguous());
  return record(out, "to_device", {*this},
                [in](const Tensor& g, const Needs&) { return std::vector<Tensor>{g.to(in)}; });
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor h = detach().to(Device::cpu());
  Tensor c = Tensor::empty(shape(), dtype_of<T>::value);
  backend(Device::cpu()).copy(c, h);
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}

template <class T>
T Tensor::item() const {
  MC_CHECK(numel() == 1, "item(): tensor has ", numel(), " elements, expected 1");
  return to_vector<T>()[0];
}

// In-place copy of src into dst (broadcasting src; converts dtype). Not recorded by autograd.
inline Tensor& copy_(Tensor& dst, const Tensor& src) {
  MC_CHECK(!(is_grad_enabled() && dst.requires_grad()), "copy_: in-place write to a tensor that requires grad "
           "(use NoGradGuard)");
  Tensor s = detail::expand(src, dst.shape(), "copy_");
  if (s.device() == dst.device()) backend(dst.device()).copy(dst, s);
  else backend(dst.device().is_cpu() ? s.device() : dst.device()).copy(dst, s.contiguous());
  return dst;
}

inline Tensor& fill_(Tensor& dst, double v) {
  MC_CHECK(!(is_grad_enabled() && dst.requires_grad()), "fill_: in-place write to a tensor that requires grad "
           "(use NoGradGuard)");
  backend(dst.device()).fill(dst, v);
  return dst;
}

}  // namespace mc
