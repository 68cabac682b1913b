/* SPDX-License-Identifier: Apache-2.0 */
/* The fake driver's virtual memory management: an allocation is a sealed memfd named after its
 * device's UUID; export and import dup it; a reservation is a PROT_NONE mapping; cuMemMap maps the
 * memfd there with no access, and cuMemSetAccess mprotects it. See fake_cuda.c for the semantics
 * and their deviations. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fake_cuda.h"

static CUmemGenericAllocationHandle g_next_handle = 0xA110C000ULL;

/* ---- memory tables (g_lock held) ------------------------------------------------------------ */

static struct allocation *allocation_find(CUmemGenericAllocationHandle handle) {
    for (struct allocation *a = g_allocations; a != NULL; a = a->next)
        if (a->handle == handle)
            return a;
    return NULL;
}

static struct mapping *mapping_at(uintptr_t p) {
    for (struct mapping *m = g_mappings; m != NULL; m = m->next)
        if (p >= m->base && p - m->base < m->size)
            return m;
    return NULL;
}

static struct reservation *reservation_containing(uintptr_t p, size_t n) {
    for (struct reservation *r = g_reservations; r != NULL; r = r->next)
        if (p >= r->base && p - r->base < r->size && n <= r->size - (p - r->base))
            return r;
    return NULL;
}

/* Whether device `dev` may touch [p, p+n): CUDA_ERROR_INVALID_VALUE where something is not mapped,
 * CUDA_ERROR_ILLEGAL_ADDRESS where a mapping lacks the `need` access flags (0: mapped suffices). */
CUresult device_range(uintptr_t p, size_t n, int dev, int need) {
    if (n == 0)
        return CUDA_SUCCESS;
    if (p + n < p)
        return CUDA_ERROR_INVALID_VALUE;
    for (uintptr_t end = p + n; p < end;) {
        struct mapping *m = mapping_at(p);
        if (m == NULL)
            return CUDA_ERROR_INVALID_VALUE;
        if ((m->access[dev] & need) != need)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        p = m->base + m->size;
    }
    return CUDA_SUCCESS;
}

/* Whether [p, p+n) is exactly a run of whole mappings (what cuMemUnmap and cuMemSetAccess take). */
static bool whole_mappings(uintptr_t p, size_t n) {
    if (n == 0 || p + n < p)
        return false;
    for (uintptr_t end = p + n; p < end;) {
        struct mapping *m = mapping_at(p);
        if (m == NULL || m->base != p || m->size > end - p)
            return false;
        p += m->size;
    }
    return true;
}

/* Whether the whole mappings of [p, p+n) all hold memory of device `dev`. */
static bool on_device(uintptr_t p, size_t n, int dev) {
    for (uintptr_t end = p + n; p < end;) {
        struct mapping *m = mapping_at(p);
        if (m->device != dev)
            return false;
        p += m->size;
    }
    return true;
}

static int prot_of(int access) {
    if (access == CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
        return PROT_READ | PROT_WRITE;
    return access == CU_MEM_ACCESS_FLAGS_PROT_READ ? PROT_READ : PROT_NONE;
}

/* ---- virtual memory management -------------------------------------------------------------- */

static CUresult check_prop(const CUmemAllocationProp *prop) {
    if (prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(prop->location.id))
        return CUDA_ERROR_INVALID_DEVICE;
    if (prop->allocFlags.compressionType != 0) /* GENERIC_COMPRESSION_SUPPORTED is 0 */
        return CUDA_ERROR_NOT_SUPPORTED;
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuMemGetAllocationGranularity(size_t *granularity,
                                                const CUmemAllocationProp *prop, int option) {
    ENTER();
    if (granularity == NULL || prop == NULL || (option != 0 && option != 1))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = check_prop(prop);
    if (r == CUDA_SUCCESS)
        *granularity = FAKE_GRANULARITY;
    unlock();
    return r;
}

static void uuid_hex(const CUuuid *uuid, char out[33]) {
    for (int i = 0; i < 16; ++i)
        snprintf(out + 2 * i, 3, "%02x", (unsigned char)uuid->bytes[i]);
}

static CUresult allocation_add(int fd, size_t size, int device, int handle_types, bool imported,
                               CUmemGenericAllocationHandle *handle) {
    struct allocation *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    a->handle = g_next_handle++;
    a->fd = fd;
    a->size = size;
    a->device = device;
    a->handle_types = handle_types;
    a->imported = imported;
    a->next = g_allocations;
    g_allocations = a;
    *handle = a->handle;
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                              const CUmemAllocationProp *prop, unsigned long long flags) {
    ENTER();
    if (handle == NULL || prop == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx;
    int fd = -1;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = check_prop(prop);
    if (r != CUDA_SUCCESS)
        goto out;
    if (size == 0 || size % FAKE_GRANULARITY != 0) {
        r = CUDA_ERROR_INVALID_VALUE;
        goto out;
    }
    if (prop->requestedHandleTypes & ~CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) {
        r = CUDA_ERROR_NOT_SUPPORTED;
        goto out;
    }
    struct device *dev = &g_devices[prop->location.id];
    if (size > g_memory_bytes - dev->allocated) {
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    /* The name carries the device's UUID, so an importer knows where the memory lives. Sealed:
     * a process that holds the fd cannot shrink the memory under another's mapping. */
    char name[64], hex[33];
    uuid_hex(&dev->uuid, hex);
    snprintf(name, sizeof name, FAKE_MEMFD_PREFIX "%s", hex);
    fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    r = allocation_add(fd, size, prop->location.id, prop->requestedHandleTypes, false, handle);
    if (r == CUDA_SUCCESS) {
        dev->allocated += size;
        fd = -1;
    }
out:
    if (fd >= 0)
        close(fd);
    unlock();
    return r;
}

FAKE_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    ENTER();
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS) {
        r = CUDA_ERROR_INVALID_VALUE;
        for (struct allocation **p = &g_allocations; *p != NULL; p = &(*p)->next) {
            struct allocation *a = *p;
            if (a->handle != handle)
                continue;
            /* Mappings keep the memory (their own reference), as in the driver. */
            *p = a->next;
            if (!a->imported)
                g_devices[a->device].allocated -= a->size;
            close(a->fd);
            free(a);
            r = CUDA_SUCCESS;
            break;
        }
    }
    unlock();
    return r;
}

FAKE_API CUresult cuMemExportToShareableHandle(void *shareableHandle,
                                               CUmemGenericAllocationHandle handle, int handleType,
                                               unsigned long long flags) {
    ENTER();
    if (shareableHandle == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (handleType & CU_MEM_HANDLE_TYPE_OTHERS)
        return CUDA_ERROR_NOT_SUPPORTED;
    if (handleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS) {
        struct allocation *a = allocation_find(handle);
        if (a == NULL || !(a->handle_types & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) {
            r = CUDA_ERROR_INVALID_VALUE;
        } else {
            int fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 0); /* the caller owns it */
            if (fd < 0)
                r = CUDA_ERROR_OPERATING_SYSTEM;
            else
                *(int *)shareableHandle = fd;
        }
    }
    unlock();
    return r;
}

/* The device (by UUID in the memfd's name) of an fd exported by this fake, or an error. */
static CUresult imported_device(int fd, int *device, size_t *size) {
    struct stat st;
    char link[64], target[256];
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len < 0)
        return CUDA_ERROR_INVALID_VALUE;
    target[len] = '\0';
    const char *prefix = "/memfd:" FAKE_MEMFD_PREFIX;
    if (strncmp(target, prefix, strlen(prefix)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (st.st_size <= 0 || (size_t)st.st_size % FAKE_GRANULARITY != 0)
        return CUDA_ERROR_INVALID_VALUE;
    const char *hex = target + strlen(prefix);
    for (int i = 0; i < g_device_count; ++i) {
        char mine[33];
        uuid_hex(&g_devices[i].uuid, mine);
        if (strncmp(hex, mine, 32) == 0) {
            *device = i;
            *size = (size_t)st.st_size;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_DEVICE; /* memory of a GPU this process does not see */
}

FAKE_API CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle,
                                                 void *osHandle, int shHandleType) {
    ENTER();
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (shHandleType & CU_MEM_HANDLE_TYPE_OTHERS)
        return CUDA_ERROR_NOT_SUPPORTED;
    if (shHandleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return CUDA_ERROR_INVALID_VALUE;
    int fd = (int)(intptr_t)osHandle, device = 0, own = -1;
    size_t size = 0;
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = imported_device(fd, &device, &size);
    if (r == CUDA_SUCCESS) {
        own = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* the caller keeps its fd */
        if (own < 0)
            r = CUDA_ERROR_OPERATING_SYSTEM;
    }
    if (r == CUDA_SUCCESS)
        r = allocation_add(own, size, device, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, true,
                           handle);
    if (r != CUDA_SUCCESS && own >= 0)
        close(own);
    unlock();
    return r;
}

FAKE_API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                      CUdeviceptr addr, unsigned long long flags) {
    ENTER();
    (void)addr; /* a hint; the driver may ignore it, and so does this */
    if (ptr == NULL || size == 0 || size % FAKE_GRANULARITY != 0 || flags != 0 ||
        (alignment & (alignment - 1)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    size_t align = alignment > FAKE_GRANULARITY ? alignment : FAKE_GRANULARITY;
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r != CUDA_SUCCESS)
        goto out;
    struct reservation *res = calloc(1, sizeof *res);
    void *raw = res == NULL || size > SIZE_MAX - align
                    ? MAP_FAILED
                    : mmap(NULL, size + align, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        free(res);
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    uintptr_t start = (uintptr_t)raw, base = (start + align - 1) & ~(uintptr_t)(align - 1);
    if (base > start)
        munmap(raw, base - start);
    if (start + align > base)
        munmap((void *)(base + size), start + align - base);
    res->base = base;
    res->size = size;
    res->next = g_reservations;
    g_reservations = res;
    *ptr = (CUdeviceptr)base;
out:
    unlock();
    return r;
}

FAKE_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
    ENTER();
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS) {
        r = CUDA_ERROR_INVALID_VALUE;
        for (struct reservation **p = &g_reservations; *p != NULL; p = &(*p)->next) {
            struct reservation *res = *p;
            if (res->base != (uintptr_t)ptr || res->size != size)
                continue;
            bool mapped = false;
            for (struct mapping *m = g_mappings; m != NULL; m = m->next)
                mapped |= m->base >= res->base && m->base - res->base < res->size;
            if (!mapped) { /* unmap first, as the driver requires */
                munmap((void *)res->base, res->size);
                *p = res->next;
                free(res);
                r = CUDA_SUCCESS;
            }
            break;
        }
    }
    unlock();
    return r;
}

FAKE_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                           CUmemGenericAllocationHandle handle, unsigned long long flags) {
    ENTER();
    if (size == 0 || size % FAKE_GRANULARITY != 0 || ptr % FAKE_GRANULARITY != 0 || offset != 0 ||
        flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r != CUDA_SUCCESS)
        goto out;
    struct allocation *a = allocation_find(handle);
    bool overlaps = false;
    for (struct mapping *m = g_mappings; m != NULL; m = m->next)
        overlaps |= m->base < ptr + size && ptr < m->base + m->size;
    if (a == NULL || size > a->size || overlaps || reservation_containing(ptr, size) == NULL) {
        r = CUDA_ERROR_INVALID_VALUE;
        goto out;
    }
    struct mapping *m = calloc(1, sizeof *m);
    /* No access until cuMemSetAccess, as on a GPU. */
    if (m == NULL || mmap((void *)(uintptr_t)ptr, size, PROT_NONE, MAP_SHARED | MAP_FIXED, a->fd,
                          0) == MAP_FAILED) {
        free(m);
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    m->base = ptr;
    m->size = size;
    m->device = a->device;
    m->next = g_mappings;
    g_mappings = m;
    g_stats.maps_total++;
out:
    unlock();
    return r;
}

FAKE_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    ENTER();
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS && !whole_mappings(ptr, size))
        r = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS) {
        for (struct mapping **p = &g_mappings; *p != NULL;) {
            struct mapping *m = *p;
            if (m->base >= ptr && m->base - ptr < size) {
                /* Back to a plain reservation; queued work that touches it will fault. */
                mmap((void *)m->base, m->size, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
                *p = m->next;
                free(m);
            } else {
                p = &m->next;
            }
        }
    }
    unlock();
    return r;
}

FAKE_API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                                 size_t count) {
    ENTER();
    if (desc == NULL || count == 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS && !whole_mappings(ptr, size))
        r = CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; r == CUDA_SUCCESS && i < count; ++i) {
        int f = desc[i].flags;
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
            (f != CU_MEM_ACCESS_FLAGS_PROT_NONE && f != CU_MEM_ACCESS_FLAGS_PROT_READ &&
             f != CU_MEM_ACCESS_FLAGS_PROT_READWRITE))
            r = CUDA_ERROR_INVALID_VALUE;
        else if (!valid_device(desc[i].location.id) ||
                 !on_device(ptr, size, desc[i].location.id)) /* no peer access here */
            r = CUDA_ERROR_INVALID_DEVICE;
        else if (f == CU_MEM_ACCESS_FLAGS_PROT_READ && g_no_readonly)
            r = CUDA_ERROR_NOT_SUPPORTED;
    }
    for (uintptr_t p = ptr; r == CUDA_SUCCESS && p < ptr + size;) {
        struct mapping *m = mapping_at(p);
        for (size_t i = 0; i < count; ++i)
            m->access[desc[i].location.id] = (unsigned char)desc[i].flags;
        int access = 0; /* the host sees the union of what the devices may do */
        for (int d = 0; d < g_device_count; ++d)
            access |= m->access[d];
        if (mprotect((void *)m->base, m->size, prot_of(access)) != 0)
            r = CUDA_ERROR_OUT_OF_MEMORY;
        p += m->size;
    }
    unlock();
    return r;
}
