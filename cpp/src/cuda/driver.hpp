// SPDX-License-Identifier: Apache-2.0
// The CUDA driver API, loaded at run time: the few types and entry points bips uses, declared
// here with the driver's ABI so that no CUDA header or library is needed to build bips.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace bips::detail::cuda {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUstream = struct CUstream_st *;
using CUmemGenericAllocationHandle = unsigned long long;
using CUhostFn = void (*)(void *);

inline constexpr CUresult CUDA_SUCCESS = 0;
inline constexpr CUresult CUDA_ERROR_INVALID_VALUE = 1;
inline constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
inline constexpr CUresult CUDA_ERROR_NOT_READY = 600;
inline constexpr CUresult CUDA_ERROR_NOT_SUPPORTED = 801;

inline constexpr int CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102;
inline constexpr int CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 103;
inline constexpr int CU_MEM_ALLOCATION_TYPE_PINNED = 1;
inline constexpr int CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1;
inline constexpr int CU_MEM_LOCATION_TYPE_DEVICE = 1;
inline constexpr int CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1;
inline constexpr int CU_MEM_ACCESS_FLAGS_PROT_READ = 1;
inline constexpr int CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3;

struct CUuuid {
    unsigned char bytes[16];
};
struct CUmemLocation {
    int type;
    int id;
};
struct CUmemAllocationProp {
    int type;
    int requestedHandleTypes;
    CUmemLocation location;
    void *win32HandleMetaData;
    struct {
        unsigned char compressionType;
        unsigned char gpuDirectRDMACapable;
        unsigned short usage;
        unsigned char reserved[4];
    } allocFlags;
};
struct CUmemAccessDesc {
    CUmemLocation location;
    int flags;
};

/// The driver's entry points, resolved once.
struct Driver {
    CUresult (*cuInit)(unsigned);
    CUresult (*cuDriverGetVersion)(int *);
    CUresult (*cuGetErrorName)(CUresult, const char **);
    CUresult (*cuGetErrorString)(CUresult, const char **);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuDeviceGetUuid)(CUuuid *, CUdevice);
    CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
    CUresult (*cuCtxPushCurrent)(CUcontext);
    CUresult (*cuCtxPopCurrent)(CUcontext *);
    CUresult (*cuMemGetAllocationGranularity)(std::size_t *, const CUmemAllocationProp *, int);
    CUresult (*cuMemCreate)(CUmemGenericAllocationHandle *, std::size_t,
                            const CUmemAllocationProp *, unsigned long long);
    CUresult (*cuMemRelease)(CUmemGenericAllocationHandle);
    CUresult (*cuMemExportToShareableHandle)(void *, CUmemGenericAllocationHandle, int,
                                             unsigned long long);
    CUresult (*cuMemImportFromShareableHandle)(CUmemGenericAllocationHandle *, void *, int);
    CUresult (*cuMemAddressReserve)(CUdeviceptr *, std::size_t, std::size_t, CUdeviceptr,
                                    unsigned long long);
    CUresult (*cuMemAddressFree)(CUdeviceptr, std::size_t);
    CUresult (*cuMemMap)(CUdeviceptr, std::size_t, std::size_t, CUmemGenericAllocationHandle,
                         unsigned long long);
    CUresult (*cuMemUnmap)(CUdeviceptr, std::size_t);
    CUresult (*cuMemSetAccess)(CUdeviceptr, std::size_t, const CUmemAccessDesc *, std::size_t);
    CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, std::size_t);
    CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, std::size_t);
    CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void *, std::size_t, CUstream);
    CUresult (*cuStreamQuery)(CUstream);
    CUresult (*cuStreamSynchronize)(CUstream);
    CUresult (*cuCtxSynchronize)();
    CUresult (*cuLaunchHostFunc)(CUstream, CUhostFn, void *);
};

/// The loaded and initialised driver. Throws DeviceUnavailable (with the reason) when it cannot
/// be loaded (BIPS_LIBCUDA names another file to load instead of libcuda.so.1), lacks an entry
/// point, or cuInit fails. The answer is kept: loading is tried once per process.
const Driver &driver();

/// "cuMemMap: CUDA_ERROR_INVALID_VALUE (invalid argument)".
std::string error_text(CUresult r, const char *call);
/// Throws DeviceError for a failed call.
void check(CUresult r, const char *call);

/// A device of this process: its ordinal, handle and UUID; throws DeviceUnavailable for an
/// ordinal this process does not have, or a device that cannot share memory as descriptors.
struct DeviceRef {
    int ordinal = 0;
    CUdevice device = 0;
    CUuuid uuid{};
};
DeviceRef device_at(int ordinal);
/// The device of this process with `uuid`; throws DeviceUnavailable if none has it.
DeviceRef device_with_uuid(const CUuuid &uuid, const std::string &pool);
/// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi writes it.
std::string uuid_text(const unsigned char (&bytes)[16]);

/// Makes the primary context of `dev` current on this thread for the scope (retained for the
/// life of the process: releasing it could destroy the context under the user's own work).
class ScopedContext {
public:
    explicit ScopedContext(int ordinal);
    ScopedContext(const ScopedContext &) = delete;
    ScopedContext &operator=(const ScopedContext &) = delete;
    ~ScopedContext();

private:
    bool m_pushed = false;
};

} // namespace bips::detail::cuda
