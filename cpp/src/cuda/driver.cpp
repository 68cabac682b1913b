// SPDX-License-Identifier: Apache-2.0
#include "cuda/driver.hpp"

#include <bips/device.hpp>
#include <bips/errors.hpp>

#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <map>
#include <memory>
#include <mutex>

namespace bips::detail::cuda {

namespace {

struct Loaded {
    Driver driver{};
    std::string error; // why it is unusable; empty when it is usable
};

template <class F> bool resolve(void *lib, const char *symbol, F &out, std::string &error) {
    void *p = ::dlsym(lib, symbol);
    if (!p) {
        error = std::string("the CUDA driver has no ") + symbol + " (driver too old?)";
        return false;
    }
    out = reinterpret_cast<F>(p);
    return true;
}

Loaded load() {
    Loaded l;
    const char *path = std::getenv("BIPS_LIBCUDA");
    const std::string lib_name = path && *path ? path : "libcuda.so.1";
    // RTLD_LOCAL: its symbols stay out of everyone else's way; the handle is never closed,
    // since CUDA does not support being unloaded.
    void *lib = ::dlopen(lib_name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = ::dlerror();
        l.error = "cannot load the CUDA driver " + lib_name + ": " + (why ? why : "unknown error") +
                  " (GPU pools need an NVIDIA driver; host pools work without one)";
        return l;
    }
    Driver &d = l.driver;
    std::string &e = l.error;
    const bool ok =
        resolve(lib, "cuInit", d.cuInit, e) &&
        resolve(lib, "cuDriverGetVersion", d.cuDriverGetVersion, e) &&
        resolve(lib, "cuGetErrorName", d.cuGetErrorName, e) &&
        resolve(lib, "cuGetErrorString", d.cuGetErrorString, e) &&
        resolve(lib, "cuDeviceGetCount", d.cuDeviceGetCount, e) &&
        resolve(lib, "cuDeviceGet", d.cuDeviceGet, e) &&
        resolve(lib, "cuDeviceGetUuid", d.cuDeviceGetUuid, e) &&
        resolve(lib, "cuDeviceGetAttribute", d.cuDeviceGetAttribute, e) &&
        resolve(lib, "cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain, e) &&
        resolve(lib, "cuDevicePrimaryCtxRelease_v2", d.cuDevicePrimaryCtxRelease, e) &&
        resolve(lib, "cuCtxPushCurrent_v2", d.cuCtxPushCurrent, e) &&
        resolve(lib, "cuCtxPopCurrent_v2", d.cuCtxPopCurrent, e) &&
        resolve(lib, "cuMemGetAllocationGranularity", d.cuMemGetAllocationGranularity, e) &&
        resolve(lib, "cuMemCreate", d.cuMemCreate, e) &&
        resolve(lib, "cuMemRelease", d.cuMemRelease, e) &&
        resolve(lib, "cuMemExportToShareableHandle", d.cuMemExportToShareableHandle, e) &&
        resolve(lib, "cuMemImportFromShareableHandle", d.cuMemImportFromShareableHandle, e) &&
        resolve(lib, "cuMemAddressReserve", d.cuMemAddressReserve, e) &&
        resolve(lib, "cuMemAddressFree", d.cuMemAddressFree, e) &&
        resolve(lib, "cuMemMap", d.cuMemMap, e) && resolve(lib, "cuMemUnmap", d.cuMemUnmap, e) &&
        resolve(lib, "cuMemSetAccess", d.cuMemSetAccess, e) &&
        resolve(lib, "cuMemsetD8_v2", d.cuMemsetD8, e) &&
        resolve(lib, "cuMemcpyDtoH_v2", d.cuMemcpyDtoH, e) &&
        resolve(lib, "cuMemcpyHtoDAsync_v2", d.cuMemcpyHtoDAsync, e) &&
        resolve(lib, "cuStreamQuery", d.cuStreamQuery, e) &&
        resolve(lib, "cuStreamSynchronize", d.cuStreamSynchronize, e) &&
        resolve(lib, "cuCtxSynchronize", d.cuCtxSynchronize, e) &&
        resolve(lib, "cuLaunchHostFunc", d.cuLaunchHostFunc, e);
    if (!ok)
        return l;
    const CUresult r = d.cuInit(0);
    if (r != CUDA_SUCCESS) {
        const char *name = nullptr;
        if (d.cuGetErrorName(r, &name) != CUDA_SUCCESS)
            name = nullptr;
        e = "the CUDA driver did not initialise: cuInit returned " +
            (name ? std::string(name) : std::to_string(r)) +
            (r == CUDA_ERROR_NO_DEVICE ? " (no CUDA device visible to this process)" : "");
    }
    return l;
}

// The state below is never destroyed: bips' reaper thread, which nothing joins, tears pools down
// with it while the process may be exiting.
const Loaded &loaded() {
    static const Loaded *l = new Loaded(load());
    return *l;
}

struct PrimaryContexts {
    std::mutex mutex;
    std::map<int, CUcontext> retained; // once per device, for the life of the process
};

CUcontext primary_context(int ordinal) {
    static auto *p = new PrimaryContexts();
    const Driver &d = driver();
    std::lock_guard<std::mutex> lock(p->mutex);
    auto it = p->retained.find(ordinal);
    if (it != p->retained.end())
        return it->second;
    CUdevice dev = 0;
    check(d.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
    CUcontext ctx = nullptr;
    check(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
    p->retained.emplace(ordinal, ctx);
    return ctx;
}

} // namespace

const Driver &driver() {
    const Loaded &l = loaded();
    if (!l.error.empty())
        throw DeviceUnavailable(l.error);
    return l.driver;
}

std::string error_text(CUresult r, const char *call) {
    const Loaded &l = loaded();
    const char *name = nullptr, *text = nullptr;
    if (l.error.empty()) {
        if (l.driver.cuGetErrorName(r, &name) != CUDA_SUCCESS)
            name = nullptr;
        if (l.driver.cuGetErrorString(r, &text) != CUDA_SUCCESS)
            text = nullptr;
    }
    std::string s = std::string(call) + ": " + (name ? name : "CUDA error " + std::to_string(r));
    if (text)
        s += std::string(" (") + text + ")";
    return s;
}

void check(CUresult r, const char *call) {
    if (r != CUDA_SUCCESS)
        throw DeviceError(error_text(r, call));
}

std::string uuid_text(const unsigned char (&b)[16]) {
    char s[64];
    std::snprintf(s, sizeof(s),
                  "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                  b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                  b[14], b[15]);
    return s;
}

DeviceRef device_at(int ordinal) {
    const Driver &d = driver();
    int count = 0;
    check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (ordinal < 0 || ordinal >= count)
        throw DeviceUnavailable("no CUDA device cuda:" + std::to_string(ordinal) +
                                " in this process (it sees " + std::to_string(count) +
                                " device(s); check CUDA_VISIBLE_DEVICES)");
    DeviceRef ref;
    ref.ordinal = ordinal;
    check(d.cuDeviceGet(&ref.device, ordinal), "cuDeviceGet");
    check(d.cuDeviceGetUuid(&ref.uuid, ref.device), "cuDeviceGetUuid");
    int vmm = 0, fd = 0;
    check(d.cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                                 ref.device),
          "cuDeviceGetAttribute");
    check(d.cuDeviceGetAttribute(
              &fd, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, ref.device),
          "cuDeviceGetAttribute");
    if (!vmm || !fd)
        throw DeviceUnavailable("CUDA device cuda:" + std::to_string(ordinal) +
                                " cannot share memory as POSIX file descriptors (" +
                                (vmm ? "no POSIX handle support" : "no virtual memory management") +
                                "); GPU pools need it");
    return ref;
}

DeviceRef device_with_uuid(const CUuuid &uuid, const std::string &pool) {
    const Driver &d = driver();
    int count = 0;
    check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
    for (int i = 0; i < count; ++i) {
        CUdevice dev = 0;
        CUuuid u{};
        if (d.cuDeviceGet(&dev, i) != CUDA_SUCCESS || d.cuDeviceGetUuid(&u, dev) != CUDA_SUCCESS)
            continue;
        if (std::equal(std::begin(u.bytes), std::end(u.bytes), std::begin(uuid.bytes)))
            return device_at(i);
    }
    throw DeviceUnavailable(
        "pool '" + pool + "' lives on " + uuid_text(uuid.bytes) +
        ", which this process does not see (it sees " + std::to_string(count) +
        " CUDA device(s); check CUDA_VISIBLE_DEVICES and the container's GPUs)");
}

ScopedContext::ScopedContext(int ordinal) {
    CUcontext ctx = primary_context(ordinal);
    check(driver().cuCtxPushCurrent(ctx), "cuCtxPushCurrent");
    m_pushed = true;
}

ScopedContext::~ScopedContext() {
    if (m_pushed) {
        CUcontext popped = nullptr;
        (void)driver().cuCtxPopCurrent(&popped);
    }
}

} // namespace bips::detail::cuda

namespace bips {

bool cuda_available() noexcept {
    try {
        return cuda_unavailable_reason().empty();
    } catch (...) {
        return false;
    }
}

std::string cuda_unavailable_reason() {
    try {
        const auto &d = detail::cuda::driver();
        int count = 0;
        detail::cuda::check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
        if (count < 1)
            return "no CUDA device visible to this process";
        detail::cuda::device_at(0);
        return "";
    } catch (const std::exception &e) {
        return e.what();
    }
}

std::string device_unavailable_reason(Device device) {
    if (!device.is_cuda())
        return "";
    try {
        detail::cuda::device_at(device.index);
        return "";
    } catch (const std::exception &e) {
        return e.what();
    }
}

} // namespace bips
