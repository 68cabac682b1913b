// SPDX-License-Identifier: Apache-2.0
#include "cuda/device_memory.hpp"

#include <bips/errors.hpp>

#include <unistd.h>

namespace bips::detail::cuda {

namespace {

CUmemAllocationProp allocation_prop(int ordinal) {
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = ordinal;
    return prop;
}

} // namespace

std::size_t allocation_size(int ordinal, std::size_t bytes) {
    const Driver &d = driver();
    ScopedContext ctx(ordinal);
    const CUmemAllocationProp prop = allocation_prop(ordinal);
    std::size_t gran = 0;
    check(d.cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
          "cuMemGetAllocationGranularity");
    if (gran == 0 || (gran & (gran - 1)) != 0)
        throw DeviceError("cuMemGetAllocationGranularity: unusable granularity " +
                          std::to_string(gran));
    if (bytes > ~std::size_t{0} - gran)
        throw InvalidArgument("GPU pool too large");
    return (bytes + gran - 1) / gran * gran;
}

std::unique_ptr<DeviceMemory> DeviceMemory::create(int ordinal, std::size_t bytes) {
    std::unique_ptr<DeviceMemory> m(new DeviceMemory());
    m->m_dev = device_at(ordinal);
    ScopedContext ctx(ordinal);
    const Driver &d = driver();
    m->m_size = allocation_size(ordinal, bytes);
    const CUmemAllocationProp prop = allocation_prop(ordinal);
    check(d.cuMemCreate(&m->m_handle, m->m_size, &prop, 0), "cuMemCreate");
    m->m_have_handle = true;
    m->map(true);
    // Consumers must never see what the memory held before (another process's data).
    check(d.cuMemsetD8(m->m_ptr, 0, m->m_size), "cuMemsetD8");
    check(d.cuCtxSynchronize(), "cuCtxSynchronize");
    return m;
}

std::unique_ptr<DeviceMemory> DeviceMemory::import(const DeviceRef &dev, const posix::File &fd,
                                                   std::size_t size) {
    std::unique_ptr<DeviceMemory> m(new DeviceMemory());
    m->m_dev = dev;
    ScopedContext ctx(m->m_dev.ordinal);
    const Driver &d = driver();
    m->m_size = size;
    check(d.cuMemImportFromShareableHandle(
              &m->m_handle, reinterpret_cast<void *>(static_cast<std::intptr_t>(fd.get())),
              CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
          "cuMemImportFromShareableHandle");
    m->m_have_handle = true;
    m->map(false);
    return m;
}

void DeviceMemory::map(bool writable) {
    const Driver &d = driver();
    check(d.cuMemAddressReserve(&m_ptr, m_size, 0, 0, 0), "cuMemAddressReserve");
    m_reserved = true;
    // Mapping more than the allocation holds fails here: a size is never taken on trust.
    check(d.cuMemMap(m_ptr, m_size, 0, m_handle, 0), "cuMemMap");
    m_mapped = true;
    CUmemAccessDesc access{};
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = m_dev.ordinal;
    if (!writable) {
        // Consumers only read; drivers that cannot map read-only get read-write (the pool's
        // other readers are then protected by the views' read-only flags only).
        access.flags = CU_MEM_ACCESS_FLAGS_PROT_READ;
        if (d.cuMemSetAccess(m_ptr, m_size, &access, 1) == CUDA_SUCCESS) {
            m_read_only = true;
            return;
        }
    }
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    check(d.cuMemSetAccess(m_ptr, m_size, &access, 1), "cuMemSetAccess");
}

posix::File DeviceMemory::export_fd() const {
    ScopedContext ctx(m_dev.ordinal);
    int fd = -1;
    check(driver().cuMemExportToShareableHandle(&fd, m_handle,
                                                CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
          "cuMemExportToShareableHandle");
    return posix::File(fd);
}

DeviceMemory::~DeviceMemory() {
    try {
        const Driver &d = driver();
        ScopedContext ctx(m_dev.ordinal);
        // Work still queued on the memory (a kernel of the user's) finishes first.
        (void)d.cuCtxSynchronize();
        if (m_mapped)
            (void)d.cuMemUnmap(m_ptr, m_size);
        if (m_reserved)
            (void)d.cuMemAddressFree(m_ptr, m_size);
        if (m_have_handle)
            (void)d.cuMemRelease(m_handle);
    } catch (...) {
        // The driver is gone (process exit): the process's memory goes with it.
    }
}

} // namespace bips::detail::cuda

namespace bips::detail::cuda {

void copy_to_host(int ordinal, void *dst, const void *device_src, std::size_t n) {
    ScopedContext ctx(ordinal);
    check(driver().cuMemcpyDtoH(dst, reinterpret_cast<CUdeviceptr>(device_src), n), "cuMemcpyDtoH");
}

void copy_to_device(int ordinal, void *device_dst, const void *src, std::size_t n,
                    CudaStream stream) {
    ScopedContext ctx(ordinal);
    // No stream to order a publish after: the copy is done (and done with `src`) on return, as
    // publish(STREAM_NONE) takes the buffer to be.
    const bool wait = stream == STREAM_NONE;
    if (wait)
        stream = nullptr;
    const Driver &d = driver();
    check(d.cuMemcpyHtoDAsync(reinterpret_cast<CUdeviceptr>(device_dst), src, n,
                              static_cast<CUstream>(stream)),
          "cuMemcpyHtoDAsync");
    if (wait)
        check(d.cuStreamSynchronize(nullptr), "cuStreamSynchronize");
}

} // namespace bips::detail::cuda
