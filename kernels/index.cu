// kernels/index.cu — index_select / index_add (embedding lookup and its gradient), gather / scatter_add
// (mc/cpu/index.hpp is the reference).
//
// Indices follow the CPU: i64, negative values count from the end (v + size), anything outside
// [-size, size) is an error. The kernels never touch memory through a bad index: index_select and gather
// write 0 for it, index_add and scatter_add skip it, and the first bad index is recorded in a small
// page-locked host block the device writes to. The host looks at that block right after each launch and
// at the start of every index op: with synchronous launches (MC_CUDA_SYNC=1) the launch check has already
// waited for the kernel, so the error is raised by the op that caused it; otherwise it is raised as soon as
// it is seen, possibly by a later index op (the message says so). The check costs a read of host memory,
// no synchronisation.
//
// index_add and scatter_add use atomic adds, so the order in which repeated indices accumulate is not
// fixed: f32 results can differ from the CPU's in the last bits, bf16/f16 ones (rounded after every add,
// as on the CPU) by a unit in the last place. u8 index_add goes through an i32 copy (no byte atomics).
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

constexpr int kThreads = 256;

// ---- bad-index reporting ----
enum IndexOp : int { kIndexSelect = 0, kIndexAdd = 1, kGather = 2, kScatterAdd = 3 };
const char* const kOpNames[] = {"index_select", "index_add", "gather", "scatter_add"};

struct IndexError {
  int claimed;  // set by the first thread that finds a bad index
  int ready;    // set once value/size/op are written
  int op;
  int pad;
  long long value;
  long long size;
};

// The mapped host block (nullptr when mapped memory is unavailable: then bad indices are only skipped).
IndexError* error_block() {
  static IndexError* block = [] {
    void* p = nullptr;
    if (cudaHostAlloc(&p, sizeof(IndexError), cudaHostAllocMapped) != cudaSuccess) {
      cudaGetLastError();  // clear the error; reporting is best-effort
      return static_cast<IndexError*>(nullptr);
    }
    auto* e = static_cast<IndexError*>(p);
    e->claimed = e->ready = e->op = e->pad = 0;
    e->value = e->size = 0;
    return e;
  }();
  return block;
}

IndexError* device_error_block() {
  IndexError* h = error_block();
  if (!h) return nullptr;
  void* d = nullptr;
  MC_CUDA_CHECK(cudaHostGetDevicePointer(&d, h, 0), "index");
  return static_cast<IndexError*>(d);
}

// Raises the recorded bad index, if any. `op` is the op now running; `after_launch` says whether the
// error can be attributed to it.
void check_index_error(const char* op, bool after_launch) {
  IndexError* e = error_block();
  if (!e) return;
  volatile IndexError* v = e;
  if (!v->ready) return;
  const long long value = v->value, size = v->size;
  const int which = v->op;
  v->ready = 0;
  v->claimed = 0;
  const char* name = which >= 0 && which < 4 ? kOpNames[which] : "index";
  if (after_launch)
    fail(name, ": index ", value, " is out of range for a dimension of size ", size);
  fail(name, ": index ", value, " is out of range for a dimension of size ", size,
       " (found on the device after the launch; reported by a later ", op, ")");
}

__device__ __forceinline__ void report_bad_index(IndexError* e, int op, int64_t v, int64_t size) {
  if (e == nullptr) return;
  if (atomicCAS_system(&e->claimed, 0, 1) == 0) {
    e->op = op;
    e->value = v;
    e->size = size;
    __threadfence_system();
    atomicExch_system(&e->ready, 1);
  }
}

// The index wrapped into [0, size), or -1 (reported) when out of range.
__device__ __forceinline__ int64_t wrap_index(int64_t v, int64_t size, IndexError* err, int op) {
  const int64_t w = v < 0 ? v + size : v;
  if (w < 0 || w >= size) {
    report_bad_index(err, op, v, size);
    return -1;
  }
  return w;
}

// ---- atomics per element type ----
template <class T> __device__ __forceinline__ void atomic_add(T* p, T v) { atomicAdd(p, v); }
template <> __device__ __forceinline__ void atomic_add<int64_t>(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// ---- index_select / index_add on [outer, size, inner] (x / out) and [outer, n, inner] (out / src) ----
struct SelectArgs {
  int64_t outer, size, n, inner;
  const int64_t* idx;
  int64_t idx_stride;
  IndexError* err;
};

// A block per row of `inner` elements (outer * n rows): the row's index is read once.
template <class T, bool kAdd>
__global__ void __launch_bounds__(kThreads) rows_kernel(T* dst, const T* src, SelectArgs a) {
  const int64_t row = blockIdx.x;  // = oi * n + i
  const int64_t oi = row / a.n, i = row - oi * a.n;
  const int64_t k = wrap_index(a.idx[i * a.idx_stride], a.size, a.err, kAdd ? kIndexAdd : kIndexSelect);
  if constexpr (kAdd) {
    // dst = out [outer, size, inner], src = [outer, n, inner]
    if (k < 0) return;
    T* d = dst + (oi * a.size + k) * a.inner;
    const T* s = src + row * a.inner;
    for (int64_t j = threadIdx.x; j < a.inner; j += blockDim.x) atomic_add(d + j, s[j]);
  } else {
    // dst = out [outer, n, inner], src = x [outer, size, inner]
    T* d = dst + row * a.inner;
    if (k < 0) {
      for (int64_t j = threadIdx.x; j < a.inner; j += blockDim.x) d[j] = T(0);
      return;
    }
    const T* s = src + (oi * a.size + k) * a.inner;
    constexpr int V = int(16 / sizeof(T));
    struct alignas(16) P { T v[V]; };
    if (a.inner % V == 0 && reinterpret_cast<uintptr_t>(d) % 16 == 0 && reinterpret_cast<uintptr_t>(s) % 16 == 0) {
      for (int64_t j = threadIdx.x; j < a.inner / V; j += blockDim.x)
        reinterpret_cast<P*>(d)[j] = reinterpret_cast<const P*>(s)[j];
    } else {
      for (int64_t j = threadIdx.x; j < a.inner; j += blockDim.x) d[j] = s[j];
    }
  }
}

// A thread per element, for short rows (inner small, e.g. selecting along the last dim).
template <class T, bool kAdd>
__global__ void __launch_bounds__(kThreads) elems_kernel(T* dst, const T* src, SelectArgs a, int64_t total) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t row = e / a.inner, j = e - row * a.inner;
    const int64_t oi = row / a.n, i = row - oi * a.n;
    const int64_t k = wrap_index(a.idx[i * a.idx_stride], a.size, a.err, kAdd ? kIndexAdd : kIndexSelect);
    if constexpr (kAdd) {
      if (k >= 0) atomic_add(dst + (oi * a.size + k) * a.inner + j, src[e]);
    } else {
      dst[e] = k >= 0 ? src[(oi * a.size + k) * a.inner + j] : T(0);
    }
  }
}

template <class T, bool kAdd>
void launch_select(T* dst, const T* src, const SelectArgs& a, const char* op) {
  const int64_t rows = a.outer * a.n;
  if (rows == 0 || a.inner == 0) return;
  if (a.inner >= 64 && rows < (int64_t(1) << 31)) {
    int threads = 32;
    const int64_t work = kAdd ? a.inner : (a.inner + 3) / 4;
    while (threads < kThreads && threads < work) threads *= 2;
    rows_kernel<T, kAdd><<<unsigned(rows), threads, 0, stream()>>>(dst, src, a);
  } else {
    const int64_t total = rows * a.inner;
    elems_kernel<T, kAdd><<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(dst, src, a, total);
  }
  MC_CUDA_LAUNCHED(op);
}

SelectArgs select_args(const Tensor& big, int dim, const Tensor& idx, const Tensor& small) {
  SelectArgs a{};
  a.outer = 1;
  for (int d = 0; d < dim; ++d) a.outer *= big.size(d);
  a.size = big.size(dim);
  a.inner = 1;
  for (int d = dim + 1; d < big.dim(); ++d) a.inner *= big.size(d);
  a.n = small.size(dim);
  a.idx = dptr<const int64_t>(idx);
  a.idx_stride = idx.dim() ? idx.stride(0) : 1;
  a.err = device_error_block();
  return a;
}

void check_select(const char* op, const Tensor& big, int dim, const Tensor& idx, const Tensor& small) {
  MC_CHECK(idx.dtype() == DType::I64 && idx.dim() <= 1, op, ": indices must be a 0-d or 1-d i64 tensor");
  MC_CHECK(dim >= 0 && dim < big.dim() && big.dim() == small.dim(), op, ": bad dim ", dim, " for ",
           shape_str(big.shape()));
  MC_CHECK(small.size(dim) == idx.numel(), op, ": ", idx.numel(), " indices for a dim of size ", small.size(dim));
  for (int d = 0; d < big.dim(); ++d)
    MC_CHECK(d == dim || big.size(d) == small.size(d), op, ": shapes ", shape_str(big.shape()), " and ",
             shape_str(small.shape()), " differ outside dim ", dim);
  MC_CHECK(big.dtype() == small.dtype(), op, ": dtypes differ (", dtype_name(big.dtype()), ", ",
           dtype_name(small.dtype()), ")");
}

// ---- gather / scatter_add: a thread per index element, three operands walked in lock-step ----

struct Layout3 {  // 0: out / target view, 1: idx, 2: x / src
  int ndim;
  FastDiv size[kMaxDims];
  int64_t stride[3][kMaxDims];
};

struct GatherArgs {
  Layout3 L;
  uint32_t n;
  const int64_t* idx;
  int64_t size, dim_stride;  // the indexed dim of x (gather) / out (scatter_add)
  IndexError* err;
};

template <class T, bool kScatter>
__global__ void __launch_bounds__(kThreads) gather_kernel(T* a0, const T* a2, GatherArgs a) {
  const uint32_t e0 = blockIdx.x * blockDim.x + threadIdx.x;
  if (e0 >= a.n) return;
  uint32_t e = e0;
  int64_t off[3] = {0, 0, 0};
  for (int d = a.L.ndim - 1; d >= 0; --d) {
    const uint32_t q = a.L.size[d].div(e), i = e - q * a.L.size[d].d;
    e = q;
#pragma unroll
    for (int k = 0; k < 3; ++k) off[k] += int64_t(i) * a.L.stride[k][d];
  }
  const int64_t k = wrap_index(a.idx[off[1]], a.size, a.err, kScatter ? kScatterAdd : kGather);
  if constexpr (kScatter) {
    if (k >= 0) atomic_add(a0 + off[0] + k * a.dim_stride, a2[off[2]]);
  } else {
    a0[off[0]] = k >= 0 ? a2[off[2] + k * a.dim_stride] : T(0);
  }
}

// t viewed with idx's shape and stride 0 along `dim` (as the CPU's along_dim_view).
Tensor along_dim_view(const Tensor& t, int dim, const Shape& shape) {
  Shape st = t.strides();
  st[size_t(dim)] = 0;
  return Tensor::view_of(t.storage(), t.dtype(), shape, st, t.offset());
}

GatherArgs gather_args(const char* op, const Tensor& t0, const Tensor& idx, const Tensor& t2) {
  const int64_t n = idx.numel();
  MC_CHECK(n < (int64_t(1) << 32), op, ": more than 2^32 indices are not supported");
  GatherArgs a{};
  Tensor ts[3] = {t0, idx, t2};
  Strided s[3];
  strided_many(ts, 3, s);
  a.L.ndim = s[0].ndim;
  for (int d = 0; d < s[0].ndim; ++d) {
    a.L.size[d] = FastDiv(uint32_t(s[0].size[d]));
    for (int k = 0; k < 3; ++k) a.L.stride[k][d] = s[k].stride[d];
  }
  a.n = uint32_t(n);
  a.idx = dptr<const int64_t>(idx);
  a.err = device_error_block();
  return a;
}

void check_gather(const char* op, const Tensor& big, int dim, const Tensor& idx, const Tensor& other) {
  MC_CHECK(idx.dtype() == DType::I64, op, ": indices must be i64, got ", dtype_name(idx.dtype()));
  MC_CHECK(dim >= 0 && dim < big.dim() && idx.dim() == big.dim() && other.dim() == big.dim(), op,
           ": ranks or dim do not match");
  for (int d = 0; d < big.dim(); ++d)
    MC_CHECK((d == dim || idx.size(d) <= big.size(d)) && idx.size(d) <= other.size(d), op, ": index shape ",
             shape_str(idx.shape()), " does not fit ", shape_str(big.shape()), " / ", shape_str(other.shape()));
}

// `other` restricted to idx's shape (src of scatter_add may be larger than idx).
Tensor narrow_to(const Tensor& t, const Shape& shape) {
  return Tensor::view_of(t.storage(), t.dtype(), shape, t.strides(), t.offset());
}

}  // namespace

void index_select(const Tensor& out, const Tensor& x_in, int dim, const Tensor& idx_in) {
  check_index_error("index_select", false);
  check_select("index_select", x_in, dim, idx_in, out);
  const Tensor x = x_in.is_contiguous() ? x_in : contiguous(x_in);
  const Tensor idx = idx_in;
  const Tensor o = out.is_contiguous() ? out : Tensor::empty(out.shape(), out.dtype(), out.device());
  const SelectArgs a = select_args(x, dim, idx, o);
  MC_CUDA_DISPATCH(x.dtype(), T, launch_select<T, false>(dptr<T>(o), dptr<const T>(x), a, "index_select"));
  check_index_error("index_select", true);
  if (!o.is_same(out)) copy(out, o);
}

void index_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src_in) {
  check_index_error("index_add", false);
  check_select("index_add", out, dim, idx, src_in);
  const DType dt = out.dtype();
  MC_CHECK(dt != DType::Bool, "index_add: not defined for dtype bool");
  if (dt == DType::U8) {  // no byte atomics: accumulate in i32, store back with wrap-around
    Tensor o32 = Tensor::empty(out.shape(), DType::I32, out.device());
    Tensor s32 = Tensor::empty(src_in.shape(), DType::I32, src_in.device());
    copy(o32, out);
    copy(s32, src_in);
    index_add(o32, dim, idx, s32);
    copy(out, o32);
    return;
  }
  const Tensor src = src_in.is_contiguous() ? src_in : contiguous(src_in);
  const Tensor o = out.is_contiguous() ? out : contiguous(out);
  const SelectArgs a = select_args(o, dim, idx, src);
  MC_CUDA_DISPATCH(dt, T, {
    if constexpr (!std::is_same_v<T, uint8_t> && !std::is_same_v<T, bool>)
      launch_select<T, true>(dptr<T>(o), dptr<const T>(src), a, "index_add");
  });
  check_index_error("index_add", true);
  if (!o.is_same(out)) copy(out, o);
}

void gather(const Tensor& out, const Tensor& x, int dim, const Tensor& idx) {
  check_index_error("gather", false);
  check_gather("gather", x, dim, idx, out);
  MC_CHECK(out.shape() == idx.shape() && out.dtype() == x.dtype(), "gather: output must have the index's shape and "
           "the input's dtype");
  if (idx.numel() == 0) return;
  const Tensor xv = along_dim_view(x, dim, idx.shape());
  GatherArgs a = gather_args("gather", out, idx, xv);
  a.size = x.size(dim);
  a.dim_stride = x.stride(dim);
  MC_CUDA_DISPATCH(x.dtype(), T, {
    gather_kernel<T, false><<<blocks_for(int64_t(a.n), kThreads, int64_t(1) << 31), kThreads, 0, stream()>>>(
        dptr<T>(out), dptr<const T>(xv), a);
  });
  MC_CUDA_LAUNCHED("gather");
  check_index_error("gather", true);
}

void scatter_add(const Tensor& out, int dim, const Tensor& idx, const Tensor& src) {
  check_index_error("scatter_add", false);
  check_gather("scatter_add", out, dim, idx, src);
  MC_CHECK(src.dtype() == out.dtype(), "scatter_add: src dtype ", dtype_name(src.dtype()), " differs from ",
           dtype_name(out.dtype()));
  if (idx.numel() == 0) return;
  const Tensor ov = along_dim_view(out, dim, idx.shape());
  const Tensor sv = narrow_to(src, idx.shape());
  GatherArgs a = gather_args("scatter_add", ov, idx, sv);
  a.size = out.size(dim);
  a.dim_stride = out.stride(dim);
  MC_CUDA_DISPATCH_FLOAT(out.dtype(), "scatter_add", T, {
    gather_kernel<T, true><<<blocks_for(int64_t(a.n), kThreads, int64_t(1) << 31), kThreads, 0, stream()>>>(
        dptr<T>(ov), dptr<const T>(sv), a);
  });
  MC_CUDA_LAUNCHED("scatter_add");
  check_index_error("scatter_add", true);
}

}  // namespace mc::cuda
