// mc/cuda/runtime.hpp — the host-side API of the CUDA backend (no CUDA headers needed).
//
// The CUDA backend is the one compiled part of mc: its kernels (kernels/*.cu) build into the library
// mc_cuda, which the mc::mc target links when CMake finds a CUDA toolkit (MC_CUDA=AUTO|ON|OFF). Such a
// build defines MC_WITH_CUDA, and `backend(Device::cuda(i))` / `allocator(DeviceType::CUDA)` route here.
// Nothing touches the driver before the first CUDA tensor is made, so a CUDA build runs its CPU work on a
// machine without a GPU.
#pragma once
#include <cstdint>

#include "mc/core/backend.hpp"

namespace mc::cuda {

// True when the build has the CUDA backend and the machine has at least one usable GPU.
bool available();
int device_count();
// "NVIDIA H200 (sm_90, 139.8 GiB, 4.8 TB/s peak)" or a reason why there is no device.
const char* device_name(int device = 0);

// Waits for all work queued on the device's stream.
void synchronize(int device = 0);

// TF32 tensor-core math for f32 GEMMs and convolutions (off by default: f32 results stay within 1e-5 of
// the CPU). Also set by the environment variable MC_TF32=1.
void set_tf32(bool on);
bool tf32();

// Every launch is followed by a device synchronisation and an error check naming the op (slow; for
// debugging asynchronous faults). Also set by MC_CUDA_SYNC=1.
void set_sync_launches(bool on);

// Caching-allocator statistics of a device (see AllocatorStats) and cache release.
AllocatorStats memory_stats(int device = 0);
void reset_peak_memory(int device = 0);
void empty_cache(int device = 0);

// A CPU tensor in page-locked (pinned) host memory: host<->device copies from it are asynchronous and
// run at full PCIe/NVLink speed. Data loaders use it for their staging buffers.
Tensor pinned_empty(const Shape& shape, DType dtype);

// The backend and allocator that core/backend.hpp and core/storage.hpp route CUDA devices to.
Backend& backend(int device);
Allocator& allocator();

}  // namespace mc::cuda
