// mc/core/storage.hpp — refcounted memory blocks and the allocator interface.
//
// A Storage is one block of bytes on one device. Tensors are views (shape, strides, offset) over a shared
// Storage. Memory comes from the Allocator registered for the device type; a backend (CUDA) registers its
// own caching allocator. A Storage can also wrap memory it does not own (a memory-mapped file), kept alive
// by an opaque owner.
#pragma once
#include <algorithm>
#include <bit>
#include <map>
#include <mutex>
#include <vector>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include "mc/core/device.hpp"
#include "mc/core/error.hpp"

namespace mc {

struct AllocatorStats {
  int64_t current_bytes = 0;  // in use by tensors (requested sizes)
  int64_t peak_bytes = 0;     // maximum of current_bytes since start or reset_peak()
  int64_t allocations = 0;    // number of allocate() calls
  int64_t cached_bytes = 0;   // held for reuse, not in use
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  virtual void empty_cache() {}  // returns cached blocks to the system
};

// Host memory, 64-byte aligned. Blocks of 64 KiB and more are kept after release, by size class (sizes
// rounded up to 1/8 of their power of two), and handed out again: training allocates the same shapes every
// step, and fresh pages cost a page fault each. The cache holds at most MC_CPU_CACHE_MB megabytes
// (default 2048); 0 disables it.
class CpuAllocator final : public Allocator {
 public:
  CpuAllocator() {
    if (const char* s = std::getenv("MC_CPU_CACHE_MB")) limit_ = std::strtoull(s, nullptr, 10) << 20;
  }
  void* allocate(size_t nbytes) override {
    const size_t cls = size_class(nbytes);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lk(m_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached_ -= cls;
      }
      current_ += int64_t(nbytes);
      peak_ = std::max(peak_, current_);
      ++count_;
    }
    if (!p) p = std::aligned_alloc(64, cls);
    if (!p) {
      empty_cache();
      p = std::aligned_alloc(64, cls);
    }
    if (!p) {
      std::lock_guard<std::mutex> lk(m_);
      current_ -= int64_t(nbytes);
      fail("cpu allocator: out of memory allocating ", nbytes, " bytes");
    }
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    const size_t cls = size_class(nbytes);
    {
      std::lock_guard<std::mutex> lk(m_);
      current_ -= int64_t(nbytes);
      if (cls >= kCacheMin && cached_ + cls <= limit_) {
        free_[cls].push_back(p);
        cached_ += cls;
        return;
      }
    }
    std::free(p);
  }
  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lk(m_);
    return {current_, peak_, count_, int64_t(cached_)};
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lk(m_);
    peak_ = current_;
  }
  void empty_cache() override {
    std::lock_guard<std::mutex> lk(m_);
    for (auto& [cls, list] : free_)
      for (void* q : list) std::free(q);
    free_.clear();
    cached_ = 0;
  }

 private:
  static constexpr size_t kCacheMin = size_t(64) << 10;
  static size_t size_class(size_t n) {
    n = std::max<size_t>(n, 1);
    if (n < kCacheMin) return (n + 63) / 64 * 64;
    const size_t step = std::bit_floor(n) / 8;
    return (n + step - 1) / step * step;
  }
  mutable std::mutex m_;
  std::map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0, limit_ = size_t(2048) << 20;
  int64_t current_ = 0, peak_ = 0, count_ = 0;
};

inline Allocator*& allocator_slot(DeviceType t) {
  // Never destroyed: tensors held by static objects may be released after main returns.
  static Allocator* slots[2] = {new CpuAllocator(), nullptr};
  return slots[int(t)];
}

#if defined(MC_WITH_CUDA)
namespace cuda {
Allocator& allocator();  // mc/cuda/runtime.hpp: the caching device allocator
}
#endif

// The allocator for a device type; CUDA's is the CUDA backend's caching allocator when it is compiled in.
inline Allocator& allocator(DeviceType t) {
  Allocator* a = allocator_slot(t);
#if defined(MC_WITH_CUDA)
  if (!a && t == DeviceType::CUDA) return cuda::allocator();
#endif
  MC_CHECK(a, "no allocator for device type ", t == DeviceType::CUDA ? "cuda" : "cpu",
           " (was mc built with CUDA?)");
  return *a;
}

class Storage {
 public:
  // Allocates nbytes on `device`.
  Storage(size_t nbytes, Device device)
      : nbytes_(nbytes), device_(device), allocator_(&allocator(device.type)) {
    data_ = allocator_->allocate(nbytes);
  }
  // Wraps memory owned elsewhere; `owner` keeps it alive.
  Storage(void* data, size_t nbytes, Device device, std::shared_ptr<const void> owner)
      : data_(data), nbytes_(nbytes), device_(device), owner_(std::move(owner)) {}
  ~Storage() {
    if (allocator_) allocator_->deallocate(data_, nbytes_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace mc
