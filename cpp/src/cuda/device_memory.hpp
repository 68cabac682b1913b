// SPDX-License-Identifier: Apache-2.0
// A GPU pool's buffers: one CUDA virtual-memory allocation that the producer creates and
// exports as a POSIX file descriptor, and each consumer imports and maps on its own device.
#pragma once

#include "cuda/driver.hpp"
#include "posix/file.hpp"

#include <bips/device.hpp>

#include <cstddef>
#include <memory>

namespace bips::detail::cuda {

/// Bytes an allocation of at least `bytes` takes on device `ordinal` (its granularity).
std::size_t allocation_size(int ordinal, std::size_t bytes);

/// One mapped allocation. Move-only in spirit: owned through unique_ptr by its Segment.
class DeviceMemory {
public:
    /// Producer: allocates `bytes` (rounded up to the granularity) on device `ordinal`, maps
    /// it read-write and zeroes it. Throws DeviceUnavailable or DeviceError.
    static std::unique_ptr<DeviceMemory> create(int ordinal, std::size_t bytes);
    /// Consumer: imports allocation `fd`, which must be `size` bytes, on device `dev` (found by
    /// the pool's GPU UUID), and maps it read-only where the driver allows (else read-write).
    /// Throws DeviceError when the descriptor is not such an allocation.
    static std::unique_ptr<DeviceMemory> import(const DeviceRef &dev, const posix::File &fd,
                                                std::size_t size);
    DeviceMemory(const DeviceMemory &) = delete;
    DeviceMemory &operator=(const DeviceMemory &) = delete;
    ~DeviceMemory();

    std::byte *base() const noexcept { return reinterpret_cast<std::byte *>(m_ptr); }
    std::size_t size() const noexcept { return m_size; }
    int ordinal() const noexcept { return m_dev.ordinal; }
    const CUuuid &uuid() const noexcept { return m_dev.uuid; }
    bool read_only() const noexcept { return m_read_only; }
    /// A new descriptor of the allocation, for a consumer (producer side).
    posix::File export_fd() const;

private:
    DeviceMemory() = default;
    void map(bool writable);
    DeviceRef m_dev;
    CUmemGenericAllocationHandle m_handle = 0;
    bool m_have_handle = false;
    CUdeviceptr m_ptr = 0;
    std::size_t m_size = 0;
    bool m_reserved = false, m_mapped = false, m_read_only = false;
};

/// Copies `n` bytes from device memory to host memory and waits for it (device `ordinal`).
void copy_to_host(int ordinal, void *dst, const void *device_src, std::size_t n);
/// Copies `n` bytes from host memory to device memory in order on `stream`; with STREAM_NONE,
/// on the legacy default stream, waiting for it.
void copy_to_device(int ordinal, void *device_dst, const void *src, std::size_t n,
                    CudaStream stream);

} // namespace bips::detail::cuda
