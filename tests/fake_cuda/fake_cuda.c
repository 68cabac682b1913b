/* SPDX-License-Identifier: Apache-2.0 */
/* A fake libcuda.so.1 for tests: the CUDA driver entry points bips uses, on host memory, so that
 * the GPU-pool path (allocate, export, import in another process, map, stream-ordered publish and
 * release) runs where there is no GPU. bips loads it with BIPS_LIBCUDA=/path/libbips_fake_cuda.so.
 *
 * The model: a "device pointer" is a host address (tests read it with ctypes); an allocation is a
 * sealed memfd; export and import are dup; a reservation is a PROT_NONE mapping; cuMemMap maps the
 * memfd MAP_SHARED|MAP_FIXED with PROT_NONE and cuMemSetAccess mprotects it, so memory is
 * inaccessible until access is granted, as on a GPU; a stream is a FIFO run by one worker thread.
 *
 * Where the real driver reports misuse, this one reports it with the same code. Where the real
 * driver's behaviour is unspecified or unknown here, this one picks the stricter reading, so that
 * code correct against the fake is correct against the driver:
 *  - every memory and stream call needs a current context (CUDA_ERROR_INVALID_CONTEXT), even
 *    those the real driver may serve without one (cuMemGetAllocationGranularity, cuMemCreate);
 *  - a host function that calls any CUDA entry point gets CUDA_ERROR_NOT_PERMITTED (the real
 *    driver forbids it and may return that code) and the call is counted and logged to stderr;
 *  - cuMemcpyHtoD copies the source into a staging buffer and returns before the device copy is
 *    done (the pageable-memory rule); the *Async copies read and write host memory when the stream
 *    runs them (the pinned-memory rule), so callers must keep their buffers alive until then;
 *    cuMemsetD8 returns before the memset is done;
 *  - device work that touches memory it cannot access (unmapped, or without the access flag for
 *    its device) poisons its context with the sticky CUDA_ERROR_ILLEGAL_ADDRESS, as a GPU fault
 *    does: every later call with that context current returns it, and its queued work is skipped;
 *  - cuMemAddressFree of a range that still has mappings, cuMemUnmap/cuMemSetAccess of a range
 *    that is not exactly a run of whole mappings, and cuMemMap over a mapped range fail with
 *    CUDA_ERROR_INVALID_VALUE; cuMemMap needs offset 0, a granularity-aligned address and size;
 *  - no peer access: cuMemSetAccess for a device other than the allocation's is
 *    CUDA_ERROR_INVALID_DEVICE; importing an allocation whose device (by UUID) this process does
 *    not see is CUDA_ERROR_INVALID_DEVICE too;
 *  - after fork() in a process that had initialised the driver, every call in the child returns
 *    CUDA_ERROR_NOT_INITIALIZED (the driver is not fork-safe either).
 * Default streams: handles 0, CU_STREAM_LEGACY (1) and CU_STREAM_PER_THREAD (2) all name the legacy
 * default stream of the current context (one FIFO per context). It has the legacy semantics: an
 * operation queued on it starts only after everything queued before it on the context's blocking
 * streams has finished, and an operation queued on a blocking stream starts only after everything
 * queued before it on the legacy stream has finished; CU_STREAM_NON_BLOCKING streams are exempt.
 * cuStreamQuery and cuStreamSynchronize on the legacy stream look at its own queue only.
 * cuStreamDestroy returns at once; the stream's queued work still runs (as in the driver).
 * The library must not be dlclose()d while streams exist (their threads run its code).
 *
 * Environment, read by cuInit: FAKE_CUDA_DEVICES=N (default 1, at most 16), FAKE_CUDA_UUID_SEED
 * (device UUIDs derive from it and the ordinal), FAKE_CUDA_FAIL_INIT=<code> (cuInit returns it),
 * FAKE_CUDA_NO_READONLY=1 (CU_MEM_ACCESS_FLAGS_PROT_READ is CUDA_ERROR_NOT_SUPPORTED),
 * FAKE_CUDA_MEMORY_BYTES (per-device capacity for cuMemCreate, default 64 GiB).
 * Test entry points: fake_cuda_stream_create/_destroy, fake_cuda_enqueue_fill/_sleep
 * (fake_cuda_stream.c), fake_cuda_stats (below).
 *
 * Files: fake_cuda.h (types, tables), fake_cuda.c (init, errors, devices, contexts, counters),
 * fake_cuda_stream.c (streams, host functions, copies), fake_cuda_memory.c (allocations, export and
 * import, reservations, mappings, access). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_cuda.h"

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_changed = PTHREAD_COND_INITIALIZER;
int g_init = INIT_NONE;
int g_device_count;
struct device g_devices[FAKE_MAX_DEVICES];
bool g_no_readonly;
size_t g_memory_bytes = (size_t)64 << 30;
struct CUstream_st *g_streams;
struct allocation *g_allocations;
struct reservation *g_reservations;
struct mapping *g_mappings;
struct fake_stats g_stats;
_Thread_local bool t_in_host_func;

static CUresult g_init_error = CUDA_ERROR_NOT_INITIALIZED;
static unsigned long long g_host_func_violations; /* atomic: counted outside the lock */
static _Thread_local struct CUctx_st *t_ctx_stack[FAKE_CTX_STACK];
static _Thread_local int t_ctx_depth;

/* ---- entry, init, fork ---------------------------------------------------------------------- */

/* Every entry point starts here: the driver forbids CUDA calls from host functions. */
static CUresult host_func_guard(const char *fn) {
    if (!t_in_host_func)
        return CUDA_SUCCESS;
    __atomic_fetch_add(&g_host_func_violations, 1, __ATOMIC_RELAXED);
    fprintf(stderr, "fake_cuda: %s called from a host function: CUDA_ERROR_NOT_PERMITTED\n", fn);
    return CUDA_ERROR_NOT_PERMITTED;
}

CUresult enter(const char *fn) {
    CUresult r = host_func_guard(fn);
    if (r != CUDA_SUCCESS)
        return r;
    return __atomic_load_n(&g_init, __ATOMIC_ACQUIRE) == INIT_OK ? CUDA_SUCCESS
                                                                 : CUDA_ERROR_NOT_INITIALIZED;
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static long env_long(const char *name, long fallback) {
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return fallback;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 0);
    return (errno != 0 || *end != '\0') ? fallback : x;
}

static void init_from_env(void) {
    long fail = env_long("FAKE_CUDA_FAIL_INIT", 0);
    if (fail != 0) {
        g_init_error = (CUresult)fail;
        __atomic_store_n(&g_init, INIT_FAILED, __ATOMIC_RELEASE);
        return;
    }
    long n = env_long("FAKE_CUDA_DEVICES", 1);
    if (n <= 0) {
        g_init_error = CUDA_ERROR_NO_DEVICE;
        __atomic_store_n(&g_init, INIT_FAILED, __ATOMIC_RELEASE);
        return;
    }
    g_device_count = n > FAKE_MAX_DEVICES ? FAKE_MAX_DEVICES : (int)n;
    const char *seed = getenv("FAKE_CUDA_UUID_SEED");
    if (seed == NULL)
        seed = "bips-fake-cuda";
    uint64_t h = 0xCBF29CE484222325ULL; /* FNV-1a */
    for (const char *c = seed; *c; ++c)
        h = (h ^ (unsigned char)*c) * 0x100000001B3ULL;
    for (int i = 0; i < g_device_count; ++i) {
        uint64_t state = h + (uint64_t)i * 0x632BE59BD9B4E019ULL;
        uint64_t a = splitmix64(&state), b = splitmix64(&state);
        memcpy(g_devices[i].uuid.bytes, &a, 8);
        memcpy(g_devices[i].uuid.bytes + 8, &b, 8);
        g_devices[i].ctx.device = i;
    }
    const char *ro = getenv("FAKE_CUDA_NO_READONLY");
    g_no_readonly = ro != NULL && strcmp(ro, "1") == 0;
    long mem = env_long("FAKE_CUDA_MEMORY_BYTES", 0);
    if (mem > 0)
        g_memory_bytes = (size_t)mem;
    __atomic_store_n(&g_init, INIT_OK, __ATOMIC_RELEASE);
}

static void atfork_prepare(void) { lock(); }
static void atfork_parent(void) { unlock(); }
static void atfork_child(void) {
    /* The stream threads do not exist in the child: like the real driver, refuse to go on. */
    if (g_init == INIT_OK) {
        g_init = INIT_FORKED;
        g_init_error = CUDA_ERROR_NOT_INITIALIZED;
    }
    pthread_cond_init(&g_changed, NULL);
    unlock();
}

__attribute__((constructor)) static void fake_cuda_loaded(void) {
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

FAKE_API CUresult cuInit(unsigned int flags) {
    CUresult r = host_func_guard(__func__);
    if (r != CUDA_SUCCESS)
        return r;
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    lock();
    if (g_init == INIT_NONE)
        init_from_env();
    r = g_init == INIT_OK ? CUDA_SUCCESS : g_init_error;
    unlock();
    return r;
}

FAKE_API CUresult cuDriverGetVersion(int *version) {
    CUresult r = host_func_guard(__func__);
    if (r != CUDA_SUCCESS)
        return r;
    if (version == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *version = FAKE_DRIVER_VERSION;
    return CUDA_SUCCESS;
}

/* ---- errors --------------------------------------------------------------------------------- */

static const struct {
    CUresult code;
    const char *name, *text;
} ERRORS[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM",
     "OS call failed or operation not supported on this OS"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
     "an illegal memory access was encountered"},
    {CUDA_ERROR_CONTEXT_IS_DESTROYED, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static CUresult error_lookup(CUresult code, const char **out, bool name) {
    if (out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; ++i) {
        if (ERRORS[i].code == code) {
            *out = name ? ERRORS[i].name : ERRORS[i].text;
            return CUDA_SUCCESS;
        }
    }
    *out = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

FAKE_API CUresult cuGetErrorName(CUresult error, const char **name) {
    return error_lookup(error, name, true);
}

FAKE_API CUresult cuGetErrorString(CUresult error, const char **text) {
    return error_lookup(error, text, false);
}

/* ---- devices -------------------------------------------------------------------------------- */

FAKE_API CUresult cuDeviceGetCount(int *count) {
    ENTER();
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = g_device_count;
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    ENTER();
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(ordinal))
        return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev) {
    ENTER();
    if (uuid == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    *uuid = g_devices[dev].uuid;
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev) {
    ENTER();
    return cuDeviceGetUuid(uuid, dev);
}

FAKE_API CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    ENTER();
    if (name == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "bips fake CUDA device %d", dev);
    return CUDA_SUCCESS;
}

static int attribute_value(int attrib, CUdevice dev) {
    switch (attrib) {
    case 1: /* MAX_THREADS_PER_BLOCK */
    case 2: /* MAX_BLOCK_DIM_X */
    case 3: /* MAX_BLOCK_DIM_Y */
        return 1024;
    case 4: /* MAX_BLOCK_DIM_Z */
        return 64;
    case 5: /* MAX_GRID_DIM_X */
        return INT_MAX;
    case 6: /* MAX_GRID_DIM_Y */
    case 7: /* MAX_GRID_DIM_Z */
        return 65535;
    case 8: /* MAX_SHARED_MEMORY_PER_BLOCK */
        return 49152;
    case 9:  /* TOTAL_CONSTANT_MEMORY */
    case 12: /* MAX_REGISTERS_PER_BLOCK */
        return 65536;
    case 10: /* WARP_SIZE */
        return 32;
    case 13: /* CLOCK_RATE (kHz) */
        return 1000000;
    case 16: /* MULTIPROCESSOR_COUNT */
        return 1;
    case 15: /* GPU_OVERLAP */
    case 19: /* CAN_MAP_HOST_MEMORY */
    case 31: /* CONCURRENT_KERNELS */
    case 40: /* ASYNC_ENGINE_COUNT */
    case 41: /* UNIFIED_ADDRESSING */
        return 1;
    case 33: /* PCI_BUS_ID: distinct per device */
        return dev + 1;
    case 39: /* MAX_THREADS_PER_MULTIPROCESSOR */
        return 2048;
    case 75: /* COMPUTE_CAPABILITY_MAJOR */
        return 9;
    case 102: /* VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED */
    case 103: /* HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED */
        return 1;
    default: /* integrated, managed memory, win32 handles, compression, RDMA, ...: no */
        return 0;
    }
}

FAKE_API CUresult cuDeviceGetAttribute(int *pi, int attrib, CUdevice dev) {
    ENTER();
    if (pi == NULL || attrib < 1 || attrib >= CU_DEVICE_ATTRIBUTE_LIMIT)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    *pi = attribute_value(attrib, dev);
    return CUDA_SUCCESS;
}

/* ---- contexts ------------------------------------------------------------------------------- */

struct CUctx_st *current_ctx(void) { return t_ctx_depth > 0 ? t_ctx_stack[t_ctx_depth - 1] : NULL; }

static bool known_ctx(CUcontext ctx) {
    for (int i = 0; i < g_device_count; ++i)
        if (ctx == &g_devices[i].ctx)
            return true;
    return false;
}

/* The current context of a memory or stream call; g_lock held. */
CUresult need_ctx(struct CUctx_st **out) {
    struct CUctx_st *ctx = current_ctx();
    if (ctx == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (ctx->refs == 0)
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    if (ctx->sticky != CUDA_SUCCESS)
        return ctx->sticky;
    *out = ctx;
    return CUDA_SUCCESS;
}

void ctx_release_locked(struct CUctx_st *ctx) {
    if (--ctx->refs > 0)
        return;
    /* Destroying a context destroys its streams; their queued work still drains. */
    for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
        if (s->ctx == ctx && !s->legacy && !s->destroyed) {
            s->holds_ctx_ref = false; /* its retain was released already (by an extra release) */
            stream_destroy_locked(s);
        }
    ctx->sticky = CUDA_SUCCESS;
}

FAKE_API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    ENTER();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    lock();
    g_devices[dev].ctx.refs++;
    *pctx = &g_devices[dev].ctx;
    unlock();
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    ENTER();
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult r = CUDA_SUCCESS;
    lock();
    if (g_devices[dev].ctx.refs == 0)
        r = CUDA_ERROR_INVALID_CONTEXT;
    else
        ctx_release_locked(&g_devices[dev].ctx);
    unlock();
    return r;
}

FAKE_API CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
    ENTER();
    if (ctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!known_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_ctx_depth == FAKE_CTX_STACK)
        return CUDA_ERROR_OUT_OF_MEMORY;
    t_ctx_stack[t_ctx_depth++] = ctx;
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuCtxPopCurrent_v2(CUcontext *pctx) {
    ENTER();
    if (t_ctx_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUctx_st *ctx = t_ctx_stack[--t_ctx_depth];
    if (pctx != NULL)
        *pctx = ctx;
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuCtxGetCurrent(CUcontext *pctx) {
    ENTER();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = current_ctx();
    return CUDA_SUCCESS;
}

FAKE_API CUresult cuCtxSetCurrent(CUcontext ctx) {
    ENTER();
    if (ctx == NULL) { /* like a pop, or nothing on an empty stack */
        if (t_ctx_depth > 0)
            --t_ctx_depth;
        return CUDA_SUCCESS;
    }
    if (!known_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_ctx_depth == 0)
        t_ctx_depth = 1;
    t_ctx_stack[t_ctx_depth - 1] = ctx;
    return CUDA_SUCCESS;
}

/* ---- counters ------------------------------------------------------------------------------ */

/* Counters for leak and behaviour checks: "live_allocations" (handles not yet released),
 * "live_reservations", "maps" (live mappings), "maps_total", "live_streams" (created and not
 * destroyed, default streams excepted), "ops_pending" (queued or running, all streams),
 * "host_funcs" (host functions run so far), "host_funcs_pending", "host_func_violations" (CUDA
 * calls made from host functions), "illegal_addresses" (faults), "primary_ctx_refs" (all devices),
 * "allocated_bytes" (cuMemCreate'd, not released, all devices). Unknown names: ULLONG_MAX. */
FAKE_API unsigned long long fake_cuda_stats(const char *what) {
    unsigned long long n = 0;
    if (what == NULL)
        return ULLONG_MAX;
    if (strcmp(what, "host_func_violations") == 0)
        return __atomic_load_n(&g_host_func_violations, __ATOMIC_RELAXED);
    lock();
    if (strcmp(what, "live_allocations") == 0) {
        for (struct allocation *a = g_allocations; a != NULL; a = a->next)
            n++;
    } else if (strcmp(what, "live_reservations") == 0) {
        for (struct reservation *r = g_reservations; r != NULL; r = r->next)
            n++;
    } else if (strcmp(what, "maps") == 0) {
        for (struct mapping *m = g_mappings; m != NULL; m = m->next)
            n++;
    } else if (strcmp(what, "maps_total") == 0) {
        n = g_stats.maps_total;
    } else if (strcmp(what, "live_streams") == 0) {
        for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
            n += !s->legacy && !s->destroyed;
    } else if (strcmp(what, "ops_pending") == 0) {
        for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
            n += s->enqueued - s->completed;
    } else if (strcmp(what, "host_funcs") == 0) {
        n = g_stats.host_funcs;
    } else if (strcmp(what, "host_funcs_pending") == 0) {
        for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
            for (struct op *op = s->head; op != NULL; op = op->next)
                n += op->kind == OP_HOST_FUNC;
    } else if (strcmp(what, "illegal_addresses") == 0) {
        n = g_stats.illegal_addresses;
    } else if (strcmp(what, "primary_ctx_refs") == 0) {
        for (int i = 0; i < g_device_count; ++i)
            n += (unsigned long long)g_devices[i].ctx.refs;
    } else if (strcmp(what, "allocated_bytes") == 0) {
        for (int i = 0; i < g_device_count; ++i)
            n += g_devices[i].allocated;
    } else {
        n = ULLONG_MAX;
    }
    unlock();
    return n;
}
