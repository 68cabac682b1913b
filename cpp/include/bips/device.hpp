// SPDX-License-Identifier: Apache-2.0
// Where a pool's buffers live, and the few CUDA services host code needs around device frames.
// No CUDA header is needed: the driver (libcuda.so.1) is loaded at run time, the first time a
// GPU pool is made or opened, so host-only users never need CUDA at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace bips {

/// Where a pool's buffers live. `cuda` is DLPack's kDLCUDA code; `cpu` is 0 (DLPack's kDLCPU is 1).
struct Device {
    enum Kind : std::uint32_t { cpu = 0, cuda = 2 };
    Kind kind = cpu;
    /// CUDA device ordinal in this process (as CUDA_VISIBLE_DEVICES numbers them); 0 for cpu.
    int index = 0;

    /// "cpu", "cuda" (device 0) or "cuda:N"; throws InvalidArgument for anything else.
    static Device parse(const std::string &text);
    /// "cpu" or "cuda:N".
    std::string str() const;
    bool is_cuda() const noexcept { return kind == cuda; }
    friend bool operator==(Device a, Device b) noexcept {
        return a.kind == b.kind && a.index == b.index;
    }
    friend bool operator!=(Device a, Device b) noexcept { return !(a == b); }
};

/// A CUDA stream (CUstream / cudaStream_t). nullptr is the legacy default stream, as in CUDA.
using CudaStream = void *;
/// CUDA's legacy and per-thread default streams, as handles (CU_STREAM_LEGACY/_PER_THREAD).
inline CudaStream const STREAM_LEGACY = reinterpret_cast<CudaStream>(std::uintptr_t{1});
inline CudaStream const STREAM_PER_THREAD = reinterpret_cast<CudaStream>(std::uintptr_t{2});
/// "No synchronisation" (DLPack's stream -1): the caller has made sure the GPU is done.
inline CudaStream const STREAM_NONE = reinterpret_cast<CudaStream>(~std::uintptr_t{0});

/// Waits until the work queued so far on `stream` (a stream of `device`'s primary context, or
/// of the context current on this thread; nullptr: its legacy default stream) has finished:
/// for example before host memory given to Buffer::copy_from() is reused, since the copy reads
/// it when the stream gets there. Returns at once for Device::cpu and STREAM_NONE. Throws
/// DeviceUnavailable (no driver, no such device) or DeviceError (the stream failed).
void stream_synchronize(Device device, CudaStream stream);

/// True if GPU pools can be used here: the CUDA driver loads, initialises and has a device
/// that can export memory as POSIX file descriptors. Never throws.
bool cuda_available() noexcept;
/// Why cuda_available() is false ("" when it is true).
std::string cuda_unavailable_reason();
/// Why a GPU pool cannot be made on `device` in this process: no driver, no such device (as
/// this process numbers them), or one that cannot share memory as file descriptors. "" when it
/// can, and always for Device::cpu. Lets a program refuse a setting before it builds anything.
std::string device_unavailable_reason(Device device);

} // namespace bips
