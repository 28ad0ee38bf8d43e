// mc/core/tensor.hpp — the Tensor handle.
//
// A Tensor is a cheap, shared handle (like torch.Tensor) to a TensorImpl: a view (shape, strides in
// elements, offset in elements, dtype) over a refcounted Storage on one Device, plus autograd state.
// Copying a Tensor copies the handle, not the data. Metadata accessors live here; the methods that compute
// (reshape, to, backward, ...) are defined by the ops and autograd layers, so include "mc/mc.hpp".
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "mc/core/dtype.hpp"
#include "mc/core/shape.hpp"
#include "mc/core/storage.hpp"

namespace mc {

namespace autograd {
struct Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;
  int64_t offset = 0;
  DType dtype = DType::F32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;             // accumulated gradient of a leaf
  std::shared_ptr<autograd::Node> grad_fn;      // the op that produced this tensor (non-leaf)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // A new contiguous tensor with uninitialised memory.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu()) {
    for (int64_t d : shape) MC_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::make_shared<Storage>(size_t(mc::numel(shape)) * dtype_size(dtype), device);
    impl->shape = shape;
    impl->strides = contiguous_strides(shape);
    impl->dtype = dtype;
    return Tensor(std::move(impl));
  }
  // A view over `storage` (no copy).
  static Tensor view_of(std::shared_ptr<Storage> storage, DType dtype, const Shape& shape, const Shape& strides,
                        int64_t offset) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::move(storage);
    impl->shape = shape;
    impl->strides = strides;
    impl->offset = offset;
    impl->dtype = dtype;
    return Tensor(std::move(impl));
  }

  bool defined() const { return bool(impl_); }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  const Shape& shape() const { return meta().shape; }
  const Shape& strides() const { return meta().strides; }
  int dim() const { return int(meta().shape.size()); }
  int64_t size(int64_t d) const { return meta().shape[wrap_dim(d, shape().size(), "size")]; }
  int64_t stride(int64_t d) const { return meta().strides[wrap_dim(d, shape().size(), "stride")]; }
  int64_t numel() const { return mc::numel(meta().shape); }
  int64_t offset() const { return meta().offset; }
  DType dtype() const { return meta().dtype; }
  size_t element_size() const { return dtype_size(dtype()); }
  Device device() const { return meta().storage->device(); }
  const std::shared_ptr<Storage>& storage() const { return meta().storage; }

  bool is_contiguous() const {
    const Shape& sh = shape();
    const Shape& st = strides();
    int64_t expect = 1;
    for (size_t i = sh.size(); i-- > 0;) {
      if (sh[i] == 1) continue;
      if (st[i] != expect) return false;
      expect *= sh[i];
    }
    return true;
  }

  // Address of the first element (any device).
  void* raw_data() const {
    return static_cast<char*>(meta().storage->data()) + meta().offset * int64_t(element_size());
  }
  // Typed host pointer to the first element; checks dtype and device.
  template <class T>
  T* data() const {
    MC_CHECK(dtype() == dtype_of<T>::value, "data<", dtype_name(dtype_of<T>::value), ">: tensor has dtype ",
             dtype_name(dtype()));
    MC_CHECK(device().is_cpu(), "data(): tensor is on ", device().str(), ", not the cpu");
    return static_cast<T*>(raw_data());
  }

  // ---- autograd state ----
  bool requires_grad() const { return meta().requires_grad; }
  Tensor& requires_grad_(bool on = true) {
    MC_CHECK(!on || is_floating(dtype()), "requires_grad_: only floating tensors can require grad (dtype ",
             dtype_name(dtype()), ")");
    MC_CHECK(!meta().grad_fn, "requires_grad_: only leaf tensors can change requires_grad");
    impl_->requires_grad = on;
    return *this;
  }
  bool is_leaf() const { return !meta().grad_fn; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return meta().grad_fn; }
  Tensor grad() const { return Tensor(meta().grad); }
  void set_grad(const Tensor& g) { meta().grad = g.impl_; }

  // Makes this handle (and every handle sharing it, e.g. a module's registered parameter) refer to
  // `other`'s data, shape and dtype, like torch's `param.data = other`. Autograd state is kept.
  void set_data(const Tensor& other) {
    TensorImpl& m = meta();
    const TensorImpl& o = other.meta();
    m.storage = o.storage;
    m.shape = o.shape;
    m.strides = o.strides;
    m.offset = o.offset;
    m.dtype = o.dtype;
  }

  // ---- defined by the ops / autograd layers ----
  Tensor detach() const;
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // 2-d transpose
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor select(int64_t dim, int64_t index) const;
  Tensor expand(const Shape& shape) const;
  Tensor squeeze() const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  template <class T> T item() const;
  template <class T> std::vector<T> to_vector() const;

 private:
  TensorImpl& meta() const {
    MC_CHECK(impl_, "use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace mc
