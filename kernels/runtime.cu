// kernels/runtime.cu — the CUDA runtime layer: error reporting, lazy device initialisation, the stream,
// the caching device allocator, pinned host memory, strided views, and the memory primitives copy / fill.
//
// Nothing here touches the driver until a CUDA tensor (or the stream, or pinned memory) is first needed, so
// a CUDA build runs CPU-only programs on machines without a GPU; available() only counts devices.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common.cuh"
#include "kernels.cuh"
// Host-side strided copy and dtype conversion: the reference semantics. (Its integer kernels compare
// unsigned values with zero, which nvcc's front end would warn about.)
#pragma nv_diag_suppress 186
#include "mc/cpu/elementwise.hpp"
#pragma nv_diag_default 186

namespace mc::cuda {

// ============================================================================================ errors ====

namespace {

bool env_flag(const char* name) {
  const char* s = std::getenv(name);
  return s && *s && std::strcmp(s, "0") != 0;
}
std::atomic<bool>& sync_launches_flag() {
  static std::atomic<bool> f{env_flag("MC_CUDA_SYNC")};
  return f;
}
std::atomic<bool>& tf32_flag() {
  static std::atomic<bool> f{env_flag("MC_TF32")};
  return f;
}

const char* base_name(const char* path) {
  const char* s = std::strrchr(path, '/');
  return s ? s + 1 : path;
}

}  // namespace

void raise(cudaError_t e, const char* op, const char* call, const char* file, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so that the next call is not blamed for it
  fail("cuda: ", op, ": ", cudaGetErrorString(e), " (", call, " at ", base_name(file), ":", line, ")");
}

void check_launch(const char* op, const char* file, int line) {
  if (sync_launches_flag().load(std::memory_order_relaxed)) {
    cudaError_t e = cudaStreamSynchronize(stream());
    if (e != cudaSuccess) raise(e, op, "kernel execution (synchronous launch check)", file, line);
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) raise(e, op, "kernel launch", file, line);
}

void set_sync_launches(bool on) { sync_launches_flag().store(on); }
void set_tf32(bool on) { tf32_flag().store(on); }
bool tf32() { return tf32_flag().load(std::memory_order_relaxed); }

// ============================================================================ device discovery, init ====

namespace {

// Device count, probed once without creating a context.
struct Probe {
  int count = 0;
  std::string why;  // empty when a device is there
};
const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      r.why = std::string("no usable CUDA driver or device: ") + cudaGetErrorString(e);
      (void)cudaGetLastError();
    } else if (n <= 0) {
      r.why = "no CUDA device";
    } else {
      r.count = n;
    }
    return r;
  }();
  return p;
}

// The state created on first use: device 0 current, one non-blocking stream, the device properties.
// Never destroyed (kernels may be queued by static objects' destructors).
struct DeviceState {
  std::mutex m;
  std::atomic<bool> ready{false};
  cudaStream_t stream = nullptr;
  cudaDeviceProp props{};
};
DeviceState& state() {
  static DeviceState* s = new DeviceState;
  return *s;
}

void init() {
  DeviceState& s = state();
  if (s.ready.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lk(s.m);
  if (s.ready.load(std::memory_order_relaxed)) return;
  MC_CHECK(available(), "cuda: cannot use the GPU (", probe().why, ")");
  MC_CUDA_CHECK(cudaSetDevice(0), "init");
  MC_CUDA_CHECK(cudaGetDeviceProperties(&s.props, 0), "init");
  MC_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "init");
  s.ready.store(true, std::memory_order_release);
}

bool initialized() { return state().ready.load(std::memory_order_acquire); }

}  // namespace

bool available() { return probe().count > 0; }
int device_count() { return probe().count; }

cudaStream_t stream() {
  init();
  return state().stream;
}

const cudaDeviceProp& props() {
  init();
  return state().props;
}

const char* device_name(int device) {
  static std::mutex* m = new std::mutex;
  static auto* names = new std::map<int, std::string>;  // node addresses are stable: c_str() stays valid
  std::lock_guard<std::mutex> lk(*m);
  auto it = names->find(device);
  if (it != names->end()) return it->second.c_str();
  std::string s;
  if (!available()) {
    s = probe().why;
  } else if (device < 0 || device >= device_count()) {
    s = "cuda:" + std::to_string(device) + ": no such device (" + std::to_string(device_count()) + " present)";
  } else {
    cudaDeviceProp p{};
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      s = std::string("cuda:") + std::to_string(device) + ": " + cudaGetErrorString(e);
    } else {
      char buf[96];
      std::snprintf(buf, sizeof buf, " (sm_%d%d, %d SMs, %.1f GiB", p.major, p.minor, p.multiProcessorCount,
                    double(p.totalGlobalMem) / double(1ull << 30));
      s = std::string(p.name) + buf;
      // Peak bandwidth = 2 (double data rate) * memory clock * bus width; the clock is an attribute
      // (no longer a cudaDeviceProp field in recent toolkits) and may be unavailable.
      int clock_khz = 0, bus_bits = 0;
      if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
          cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess &&
          clock_khz > 0 && bus_bits > 0) {
        const double tbps = 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0 / 1e12;
        std::snprintf(buf, sizeof buf, ", %.1f TB/s peak", tbps);
        s += buf;
      } else {
        (void)cudaGetLastError();
      }
      s += ")";
    }
  }
  return names->emplace(device, std::move(s)).first->second.c_str();
}

void synchronize(int device) {
  MC_CHECK(device == 0, "cuda: synchronize: mc's CUDA backend drives one GPU (cuda:0), got cuda:", device);
  if (!initialized()) return;  // nothing was ever queued
  MC_CUDA_CHECK(cudaStreamSynchronize(stream()), "synchronize");
}

// ====================================================================== the caching device allocator ====

namespace {

// Blocks are rounded to size classes and kept on a free list per class when released; the next request of
// the same class takes one back without calling cudaMalloc (a training step allocates the same shapes
// every step). Reuse is safe without events because all work runs on one in-order stream: a kernel that
// uses the new owner of a block is queued after every kernel that used its previous owner.
// Release never calls into CUDA, so tensors destroyed after the driver has shut down (static objects at
// exit) are harmless; cached memory goes back to the driver only in empty_cache() or when cudaMalloc fails.
class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    const size_t cls = size_class(nbytes);
    std::lock_guard<std::mutex> lk(m_);
    void* p = nullptr;
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      cached_ -= int64_t(cls);
    } else {
      p = fresh_locked(cls, nbytes);
    }
    current_ += int64_t(nbytes);
    peak_ = std::max(peak_, current_);
    ++count_;
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    const size_t cls = size_class(nbytes);
    std::lock_guard<std::mutex> lk(m_);
    current_ -= int64_t(nbytes);
    free_[cls].push_back(p);
    cached_ += int64_t(cls);
  }
  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lk(m_);
    return {current_, peak_, count_, cached_};
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lk(m_);
    peak_ = current_;
  }
  void empty_cache() override {
    std::lock_guard<std::mutex> lk(m_);
    release_cached_locked();
  }

  // Sizes: multiples of 512 B below 1 MiB; above, 1/8 of the size's power of two (at most 12.5% waste),
  // capped at 2 MiB steps for large blocks.
  static size_t size_class(size_t n) {
    n = std::max<size_t>(n, 1);
    constexpr size_t kSmall = size_t(1) << 20;
    if (n < kSmall) return (n + 511) / 512 * 512;
    const size_t step = std::min(std::bit_floor(n) / 8, size_t(2) << 20);
    return (n + step - 1) / step * step;
  }

 private:
  void* fresh_locked(size_t cls, size_t nbytes) {
    init();
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, cls);
    if (e == cudaErrorMemoryAllocation) {  // give the cache back to the driver and try once more
      (void)cudaGetLastError();
      release_cached_locked();
      e = cudaMalloc(&p, cls);
    }
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
      fail("cuda allocator: out of memory allocating ", nbytes, " bytes (", mib(int64_t(nbytes)), " MiB); in use ",
           mib(current_), " MiB, peak ", mib(peak_), " MiB, cached ", mib(cached_), " MiB, reserved by mc ",
           mib(reserved_), " MiB; device free ", mib(int64_t(free_b)), " of ", mib(int64_t(total_b)), " MiB");
    }
    if (e != cudaSuccess) raise(e, "allocate", "cudaMalloc", __FILE__, __LINE__);
    reserved_ += int64_t(cls);
    return p;
  }
  void release_cached_locked() {
    if (cached_ == 0) return;
    // Kernels queued before a block was released may still use it: wait for them first.
    MC_CUDA_CHECK(cudaStreamSynchronize(stream()), "empty_cache");
    for (auto& [cls, list] : free_) {
      for (void* q : list) {
        MC_CUDA_CHECK(cudaFree(q), "empty_cache");
        reserved_ -= int64_t(cls);
      }
    }
    free_.clear();
    cached_ = 0;
  }
  static double mib(int64_t b) { return double(int64_t(double(b) / double(1 << 20) * 10 + 0.5)) / 10; }

  mutable std::mutex m_;
  std::map<size_t, std::vector<void*>> free_;
  int64_t current_ = 0, peak_ = 0, count_ = 0, cached_ = 0, reserved_ = 0;
};

}  // namespace

Allocator& allocator() {
  static CudaAllocator* a = new CudaAllocator();  // never destroyed, like the CPU allocator
  return *a;
}

AllocatorStats memory_stats(int device) {
  MC_CHECK(device == 0, "cuda: memory_stats: mc's CUDA backend drives one GPU (cuda:0), got cuda:", device);
  return allocator().stats();
}
void reset_peak_memory(int device) {
  MC_CHECK(device == 0, "cuda: reset_peak_memory: mc's CUDA backend drives one GPU (cuda:0), got cuda:", device);
  allocator().reset_peak();
}
void empty_cache(int device) {
  MC_CHECK(device == 0, "cuda: empty_cache: mc's CUDA backend drives one GPU (cuda:0), got cuda:", device);
  allocator().empty_cache();
}

// ============================================================================== pinned host memory ====

namespace {

// Page-locked blocks handed out by pinned_empty(), by start address: a host->device copy whose source lies
// in one of them may return before the transfer is done.
struct PinnedRegistry {
  std::mutex m;
  std::map<uintptr_t, size_t> blocks;
  bool contains(const void* p, size_t n) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> lk(m);
    auto it = blocks.upper_bound(a);
    if (it == blocks.begin()) return false;
    --it;
    return a >= it->first && a + n <= it->first + it->second;
  }
};
PinnedRegistry& pinned_registry() {
  static PinnedRegistry* r = new PinnedRegistry;
  return *r;
}

}  // namespace

Tensor pinned_empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) MC_CHECK(d >= 0, "cuda: pinned_empty: negative dimension in shape ", shape_str(shape));
  init();
  const size_t nbytes = size_t(mc::numel(shape)) * dtype_size(dtype);
  const size_t alloc = std::max<size_t>(nbytes, 1);
  void* p = nullptr;
  cudaError_t e = cudaHostAlloc(&p, alloc, cudaHostAllocDefault);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    fail("cuda: pinned_empty: cannot allocate ", nbytes, " bytes of page-locked host memory: ", cudaGetErrorString(e));
  }
  {
    PinnedRegistry& r = pinned_registry();
    std::lock_guard<std::mutex> lk(r.m);
    r.blocks[reinterpret_cast<uintptr_t>(p)] = alloc;
  }
  std::shared_ptr<void> owner(p, [](void* q) {
    {
      PinnedRegistry& r = pinned_registry();
      std::lock_guard<std::mutex> lk(r.m);
      r.blocks.erase(reinterpret_cast<uintptr_t>(q));
    }
    // A host->device copy from this block may still be queued: let it finish first. At process exit the
    // runtime may already be gone; the errors are then harmless and ignored.
    if (initialized() && cudaStreamSynchronize(state().stream) != cudaSuccess) (void)cudaGetLastError();
    if (cudaFreeHost(q) != cudaSuccess) (void)cudaGetLastError();
  });
  auto storage = std::make_shared<Storage>(p, nbytes, Device::cpu(), std::shared_ptr<const void>(owner));
  return Tensor::view_of(std::move(storage), dtype, shape, contiguous_strides(shape), 0);
}

// ================================================================================ strided views ====

namespace {

void check_dims(int ndim, const char* what) {
  MC_CHECK(ndim <= kMaxDims, "cuda: ", what, ": the view has ", ndim,
           " non-mergeable dimensions; the CUDA kernels index at most ", kMaxDims);
}

}  // namespace

Strided strided(const Tensor& t) {
  Strided s;
  const Shape& sh = t.shape();
  const Shape& st = t.strides();
  if (t.numel() == 0) {  // kernels return early; a valid 1-d empty view keeps the struct well-formed
    s.ndim = 1;
    return s;
  }
  int64_t size[64], stride[64];
  int nd = 0;
  for (size_t d = 0; d < sh.size(); ++d) {
    if (sh[d] == 1) continue;
    if (nd > 0 && stride[nd - 1] == st[d] * sh[d]) {
      size[nd - 1] *= sh[d];
      stride[nd - 1] = st[d];
    } else {
      MC_CHECK(nd < 64, "cuda: strided: too many dimensions (", sh.size(), ")");
      size[nd] = sh[d];
      stride[nd] = st[d];
      ++nd;
    }
  }
  check_dims(nd, "strided");
  s.ndim = nd;
  for (int d = 0; d < nd; ++d) {
    s.size[d] = size[d];
    s.stride[d] = stride[d];
  }
  return s;
}

void strided_many(const Tensor* ts, int n, Strided* out) {
  MC_CHECK(n >= 1, "cuda: strided_many: no tensors");
  const Shape& sh = ts[0].shape();
  for (int k = 1; k < n; ++k)
    MC_CHECK(ts[k].shape() == sh, "cuda: strided_many: shapes differ (", shape_str(sh), " vs ",
             shape_str(ts[k].shape()), ")");
  for (int k = 0; k < n; ++k) out[k] = Strided();
  if (ts[0].numel() == 0) {
    for (int k = 0; k < n; ++k) out[k].ndim = 1;
    return;
  }
  int nd = 0;
  for (size_t d = 0; d < sh.size(); ++d) {
    if (sh[d] == 1) continue;
    bool merge = nd > 0;
    for (int k = 0; k < n && merge; ++k) merge = out[k].stride[nd - 1] == ts[k].strides()[d] * sh[d];
    if (merge) {
      for (int k = 0; k < n; ++k) {
        out[k].size[nd - 1] *= sh[d];
        out[k].stride[nd - 1] = ts[k].strides()[d];
      }
    } else {
      check_dims(nd + 1, "strided_many");
      for (int k = 0; k < n; ++k) {
        out[k].size[nd] = sh[d];
        out[k].stride[nd] = ts[k].strides()[d];
      }
      ++nd;
    }
  }
  for (int k = 0; k < n; ++k) out[k].ndim = nd;
}

// ========================================================================= dtype conversion (device) ====

namespace {

// The CPU's conversions (mc/cpu/elementwise.hpp convert<To>(From)) on the device, bit for bit on x86-64:
// via the compute type (f32 for the half types), nonzero -> true, float -> int by truncation where
// out-of-range values and NaN give the x86 "integer indefinite" (INT_MIN) like cvttss2si, float -> u8
// through a 32-bit integer (what the host compiler emits), bf16 rounding to nearest even with the CPU's
// quiet-NaN bits.
template <class T> struct acc_d { using type = T; };
template <> struct acc_d<__nv_bfloat16> { using type = float; };
template <> struct acc_d<__half> { using type = float; };

template <class T>
__device__ __forceinline__ typename acc_d<T>::type load_acc(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return v;
}

__device__ __forceinline__ __nv_bfloat16 bf16_round(float f) {
  uint32_t u = __float_as_uint(f);
  uint16_t r;
  if ((u & 0x7fffffffu) > 0x7f800000u) r = uint16_t((u >> 16) | 0x40);  // quiet NaN, as the CPU
  else r = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  return __ushort_as_bfloat16(r);
}

template <class I, class F>
__device__ __forceinline__ I x86_truncate(F v) {
  constexpr F lo = F(-1) * F(uint64_t(1) << (sizeof(I) * 8 - 1));  // -2^(bits-1), exact
  if (!(v >= lo && v < -lo)) return I(uint64_t(1) << (sizeof(I) * 8 - 1));  // out of range or NaN
  return I(v);
}

template <class To, class From>
__device__ __forceinline__ To convert_d(From v) {
  using A = typename acc_d<From>::type;
  const A a = load_acc(v);
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    return a != A(0);
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    return bf16_round(float(a));
  } else if constexpr (std::is_same_v<To, __half>) {
    return __float2half_rn(float(a));
  } else if constexpr (std::is_floating_point_v<To>) {
    return To(a);
  } else if constexpr (std::is_floating_point_v<A>) {  // floating -> integer
    if constexpr (std::is_same_v<To, int64_t>) return x86_truncate<int64_t>(a);
    else return To(x86_truncate<int32_t>(a));  // i32 directly, u8 through a 32-bit integer
  } else {
    return To(a);  // integer -> integer: two's complement wrap
  }
}

// ---- copy kernels ----

template <class T>
struct alignas(sizeof(T) * 4) Vec4 {
  T v[4];
};

// Contiguous -> contiguous with conversion, 4 elements per thread with aligned vector loads/stores.
template <class TO, class TI>
__global__ void convert_vec4_kernel(TO* __restrict__ o, const TI* __restrict__ x, int64_t n) {
  const int64_t n4 = n / 4;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n4; j += step) {
    const Vec4<TI> a = reinterpret_cast<const Vec4<TI>*>(x)[j];
    Vec4<TO> b;
#pragma unroll
    for (int k = 0; k < 4; ++k) b.v[k] = convert_d<TO>(a.v[k]);
    reinterpret_cast<Vec4<TO>*>(o)[j] = b;
  }
  for (int64_t i = n4 * 4 + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    o[i] = convert_d<TO>(x[i]);
}

template <class TO, class TI>
__global__ void convert_kernel(TO* __restrict__ o, const TI* __restrict__ x, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) o[i] = convert_d<TO>(x[i]);
}

// Strided -> strided over one shape (so / sx from strided_many share sizes). I is the index type: 32-bit
// when the element count allows (cheaper divisions), else 64-bit.
template <class TO, class TI, class I>
__global__ void copy_strided_kernel(TO* o, const TI* x, const Strided so, const Strided sx, I n) {
  const I step = I(gridDim.x) * I(blockDim.x);
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < n; i += step) {
    I r = i;
    int64_t oo = 0, ox = 0;
    for (int d = so.ndim - 1; d >= 0; --d) {
      const I sz = I(so.size[d]);
      const I c = r % sz;
      r /= sz;
      oo += int64_t(c) * so.stride[d];
      ox += int64_t(c) * sx.stride[d];
    }
    o[oo] = convert_d<TO>(x[ox]);
  }
}

// ---- fill kernels: store an element-sized bit pattern (U of the element's size) ----

template <class U>
__global__ void fill_contig_kernel(U* o, U v, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) o[i] = v;
}

template <class U>
__global__ void fill_strided_kernel(U* o, U v, const Strided s, int64_t n) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) o[s.offset(i)] = v;
}

constexpr int kThreads = 256;

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// Device -> device copy (both tensors on the GPU, one shape), converting the dtype.
void device_copy(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const bool same = dst.dtype() == src.dtype();
  if (same && dst.raw_data() == src.raw_data() && dst.strides() == src.strides()) return;  // the same view
  const bool contig = dst.is_contiguous() && src.is_contiguous();
  if (contig && same) {
    MC_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), size_t(n) * dst.element_size(),
                                  cudaMemcpyDeviceToDevice, stream()),
                  "copy");
    return;
  }
  MC_CUDA_DISPATCH(dst.dtype(), TO, MC_CUDA_DISPATCH(src.dtype(), TI, {
    TO* o = dptr<TO>(dst);
    const TI* x = dptr<const TI>(src);
    if (contig) {
      if (aligned(o, 4 * sizeof(TO)) && aligned(x, 4 * sizeof(TI))) {
        convert_vec4_kernel<TO, TI><<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream()>>>(o, x, n);
      } else {
        convert_kernel<TO, TI><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(o, x, n);
      }
      MC_CUDA_LAUNCHED("copy");
    } else {
      const Tensor ts[2] = {dst, src};
      Strided s[2];
      strided_many(ts, 2, s);
      if (n < (int64_t(1) << 31)) {
        copy_strided_kernel<TO, TI, uint32_t>
            <<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(o, x, s[0], s[1], uint32_t(n));
      } else {
        copy_strided_kernel<TO, TI, int64_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(o, x, s[0], s[1], n);
      }
      MC_CUDA_LAUNCHED("copy");
    }
  }));
}

// ---- host <-> device byte transfers ----

// Host -> device from pageable memory through two page-locked staging buffers, so that the source may be
// reused as soon as this returns while the transfer overlaps the next chunk's memcpy. The wait before a
// buffer is refilled is on the event recorded after its previous transfer, not on the whole stream.
struct Staging {
  static constexpr size_t kChunk = size_t(4) << 20;
  std::mutex m;
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  bool pending[2] = {false, false};
  int next = 0;
};
Staging& staging() {
  static Staging* s = new Staging;  // never destroyed
  return *s;
}

void h2d_pageable(void* dst, const void* src, size_t nbytes) {
  Staging& s = staging();
  std::lock_guard<std::mutex> lk(s.m);
  if (!s.buf[0]) {
    for (int k = 0; k < 2; ++k) {
      MC_CUDA_CHECK(cudaHostAlloc(&s.buf[k], Staging::kChunk, cudaHostAllocDefault), "copy (staging buffer)");
      MC_CUDA_CHECK(cudaEventCreateWithFlags(&s.done[k], cudaEventDisableTiming), "copy (staging buffer)");
    }
  }
  for (size_t off = 0; off < nbytes; off += Staging::kChunk) {
    const size_t len = std::min(Staging::kChunk, nbytes - off);
    const int k = s.next;
    s.next ^= 1;
    if (s.pending[k]) MC_CUDA_CHECK(cudaEventSynchronize(s.done[k]), "copy (host to device)");
    std::memcpy(s.buf[k], static_cast<const char*>(src) + off, len);
    MC_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, s.buf[k], len, cudaMemcpyHostToDevice, stream()),
                  "copy (host to device)");
    MC_CUDA_CHECK(cudaEventRecord(s.done[k], stream()), "copy (host to device)");
    s.pending[k] = true;
  }
}

void h2d_bytes(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  if (pinned_registry().contains(src, nbytes)) {  // page-locked: truly asynchronous
    MC_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream()), "copy (host to device)");
  } else {
    h2d_pageable(dst, src, nbytes);
  }
}

// Device -> host; returns when the bytes are on the host.
void d2h_bytes(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  MC_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream()), "copy (device to host)");
  MC_CUDA_CHECK(cudaStreamSynchronize(stream()), "copy (device to host)");
}

void host_to_device(const Tensor& dst, const Tensor& src) {
  // The host side becomes contiguous in dst's dtype on the CPU (the reference conversion), then moves.
  Tensor h = src;
  if (src.dtype() != dst.dtype() || !src.is_contiguous()) {
    h = Tensor::empty(src.shape(), dst.dtype());
    cpu::copy(h, src);
  }
  const size_t nbytes = size_t(dst.numel()) * dst.element_size();
  if (dst.is_contiguous()) {
    h2d_bytes(dst.raw_data(), h.raw_data(), nbytes);
  } else {
    Tensor d = Tensor::empty(dst.shape(), dst.dtype(), dst.device());
    h2d_bytes(d.raw_data(), h.raw_data(), nbytes);
    device_copy(dst, d);
  }
}

void device_to_host(const Tensor& dst, const Tensor& src) {
  const Tensor d = src.is_contiguous() ? src : contiguous(src);
  const size_t nbytes = size_t(src.numel()) * src.element_size();
  if (dst.is_contiguous() && dst.dtype() == src.dtype()) {
    d2h_bytes(dst.raw_data(), d.raw_data(), nbytes);
    return;
  }
  Tensor h = Tensor::empty(src.shape(), src.dtype());
  d2h_bytes(h.raw_data(), d.raw_data(), nbytes);
  cpu::copy(dst, h);
}

}  // namespace

// ==================================================================================== copy / fill ====

void copy(const Tensor& dst, const Tensor& src) {
  MC_CHECK(dst.shape() == src.shape(), "copy: shapes differ (", shape_str(dst.shape()), " <- ",
           shape_str(src.shape()), ")");
  if (dst.numel() == 0) return;
  const bool dd = dst.device().is_cuda(), sd = src.device().is_cuda();
  MC_CHECK((!dd || dst.device().index == 0) && (!sd || src.device().index == 0),
           "copy: mc's CUDA backend drives one GPU (cuda:0); got ", dst.device().str(), " <- ", src.device().str());
  if (dd && sd) device_copy(dst, src);
  else if (dd) host_to_device(dst, src);
  else if (sd) device_to_host(dst, src);
  else cpu::copy(dst, src);
}

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  copy(out, t);
  return out;
}

void fill(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  MC_CHECK(dst.device().is_cuda(), "fill: expected a CUDA tensor, got one on ", dst.device().str());
  // The element's bits, converted on the host exactly as the CPU backend does.
  uint64_t bits = 0;
  const size_t es = dst.element_size();
  MC_DISPATCH(dst.dtype(), T, {
    const T v = cpu::convert<T>(value);
    std::memcpy(&bits, &v, sizeof(T));
  });
  bool bytes_equal = true;
  const unsigned char b0 = static_cast<unsigned char>(bits & 0xff);
  for (size_t k = 1; k < es; ++k) bytes_equal = bytes_equal && ((bits >> (8 * k)) & 0xff) == b0;
  void* p = dst.raw_data();
  if (dst.is_contiguous()) {
    if (bytes_equal) {
      MC_CUDA_CHECK(cudaMemsetAsync(p, b0, size_t(n) * es, stream()), "fill");
      return;
    }
    switch (es) {
      case 2: fill_contig_kernel<uint16_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
                  static_cast<uint16_t*>(p), uint16_t(bits), n); break;
      case 4: fill_contig_kernel<uint32_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
                  static_cast<uint32_t*>(p), uint32_t(bits), n); break;
      default: fill_contig_kernel<uint64_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
                  static_cast<uint64_t*>(p), uint64_t(bits), n); break;
    }
    MC_CUDA_LAUNCHED("fill");
    return;
  }
  const Strided s = strided(dst);
  switch (es) {
    case 1: fill_strided_kernel<uint8_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
                static_cast<uint8_t*>(p), uint8_t(bits), s, n); break;
    case 2: fill_strided_kernel<uint16_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
                static_cast<uint16_t*>(p), uint16_t(bits), s, n); break;
    case 4: fill_strided_kernel<uint32_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
                static_cast<uint32_t*>(p), uint32_t(bits), s, n); break;
    default: fill_strided_kernel<uint64_t><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
                static_cast<uint64_t*>(p), uint64_t(bits), s, n); break;
  }
  MC_CUDA_LAUNCHED("fill");
}

}  // namespace mc::cuda
