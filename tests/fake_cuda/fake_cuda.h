/* SPDX-License-Identifier: Apache-2.0 */
/* What the files of the fake CUDA driver share (fake_cuda.c describes the whole): cuda.h's types
 * with the real ABI, the driver's tables, the one lock that guards them, and the calls one file
 * makes into another. Internal: bips never includes this; it dlopen()s the library. */
#ifndef BIPS_FAKE_CUDA_H
#define BIPS_FAKE_CUDA_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Built with -fvisibility=hidden: only what is marked FAKE_API is exported. */
#define FAKE_API __attribute__((visibility("default")))

/* cuda.h's types with the same ABI, so that no CUDA headers are needed to build this. */
typedef enum cudaError_enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_DEINITIALIZED = 4,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_OPERATING_SYSTEM = 304,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_CONTEXT_IS_DESTROYED = 709,
    CUDA_ERROR_NOT_PERMITTED = 800,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_UNKNOWN = 999
} CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef void (*CUhostFn)(void *userData);
typedef struct CUuuid_st {
    char bytes[16];
} CUuuid;
typedef struct CUmemLocation_st {
    int type;
    int id;
} CUmemLocation;
typedef struct CUmemAllocationProp_st {
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
} CUmemAllocationProp;
typedef struct CUmemAccessDesc_st {
    CUmemLocation location;
    int flags;
} CUmemAccessDesc;

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(CUmemAllocationProp) == 32, "CUmemAllocationProp ABI");
_Static_assert(offsetof(CUmemAllocationProp, location) == 8, "CUmemAllocationProp ABI");
_Static_assert(offsetof(CUmemAllocationProp, allocFlags) == 24, "CUmemAllocationProp ABI");
_Static_assert(sizeof(CUmemAccessDesc) == 12, "CUmemAccessDesc ABI");
#endif
_Static_assert(sizeof(CUuuid) == 16, "CUuuid ABI");

#define CU_MEM_ALLOCATION_TYPE_PINNED 1
#define CU_MEM_LOCATION_TYPE_DEVICE 1
#define CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR 0x1
#define CU_MEM_HANDLE_TYPE_OTHERS 0xE /* WIN32, WIN32_KMT, FABRIC: not on this "platform" */
#define CU_MEM_ACCESS_FLAGS_PROT_NONE 0
#define CU_MEM_ACCESS_FLAGS_PROT_READ 1
#define CU_MEM_ACCESS_FLAGS_PROT_READWRITE 3
#define CU_STREAM_NON_BLOCKING 0x1
#define CU_STREAM_LEGACY ((CUstream)0x1)
#define CU_STREAM_PER_THREAD ((CUstream)0x2)
#define CU_DEVICE_ATTRIBUTE_LIMIT 136 /* attributes 1..135 answer, as in CUDA 12.x */

#define FAKE_DRIVER_VERSION 12040
#define FAKE_MAX_DEVICES 16
#define FAKE_CTX_STACK 64
#define FAKE_GRANULARITY ((size_t)2 << 20)
#define FAKE_MEMFD_PREFIX "fake_cuda:"
#define FAKE_FILL_CHUNKS 8

/* A primary context; one per device, never freed, so pointers to it stay valid. */
struct CUctx_st {
    int device;
    int refs;        /* primary-context retains; 0 = inactive (CUDA_ERROR_CONTEXT_IS_DESTROYED) */
    CUresult sticky; /* a fault of its device work poisons it, as a GPU fault does */
    struct CUstream_st *legacy; /* created on first use */
};

struct device {
    CUuuid uuid;
    struct CUctx_st ctx;
    size_t allocated;
};

enum op_kind { OP_HOST_FUNC, OP_COPY, OP_MEMSET, OP_FILL, OP_SLEEP };

struct dep {
    uint64_t stream; /* id; a stream that no longer exists has finished everything */
    uint64_t ticket; /* done when that stream's completed count reaches it */
};

struct op {
    struct op *next;
    enum op_kind kind;
    CUhostFn fn;
    void *user;
    unsigned char *dst;
    const unsigned char *src;
    size_t n;
    bool dst_device, src_device; /* device ranges are checked for access when the op runs */
    int byte;
    unsigned delay_us;
    void *owned;      /* a staging copy freed with the op */
    CUresult *result; /* where a synchronous caller waits for the outcome */
    size_t ndeps;
    struct dep *deps;
};

struct CUstream_st {
    struct CUstream_st *next;
    uint64_t id;
    struct CUctx_st *ctx;
    unsigned flags;
    bool legacy;
    bool destroyed; /* no longer a valid handle; its worker drains the queue, then frees it */
    bool holds_ctx_ref;
    uint64_t enqueued, completed;
    struct op *head, *tail; /* head stays queued while it runs */
};

struct allocation {
    struct allocation *next;
    CUmemGenericAllocationHandle handle;
    int fd;
    size_t size;
    int device;
    int handle_types;
    bool imported;
};

struct reservation {
    struct reservation *next;
    uintptr_t base;
    size_t size;
};

struct mapping {
    struct mapping *next;
    uintptr_t base;
    size_t size;
    int device;
    unsigned char access[FAKE_MAX_DEVICES];
};

enum init_state { INIT_NONE, INIT_OK, INIT_FAILED, INIT_FORKED };

/* One lock for every table; one condition variable, broadcast whenever a queue changes. */
extern pthread_mutex_t g_lock;
extern pthread_cond_t g_changed;
extern int g_init; /* enum init_state; atomic loads outside the lock */
extern int g_device_count;
extern struct device g_devices[FAKE_MAX_DEVICES];
extern bool g_no_readonly;
extern size_t g_memory_bytes;
extern struct CUstream_st *g_streams;
extern struct allocation *g_allocations;
extern struct reservation *g_reservations;
extern struct mapping *g_mappings;
extern struct fake_stats {
    unsigned long long host_funcs, illegal_addresses, maps_total;
} g_stats;
extern _Thread_local bool t_in_host_func;

static inline void lock(void) { pthread_mutex_lock(&g_lock); }
static inline void unlock(void) { pthread_mutex_unlock(&g_lock); }
static inline void changed(void) { pthread_cond_broadcast(&g_changed); }
static inline void wait_changed(void) { pthread_cond_wait(&g_changed, &g_lock); }
static inline bool valid_device(CUdevice dev) { return dev >= 0 && dev < g_device_count; }

/* fake_cuda.c */
FAKE_API CUresult cuInit(unsigned int flags);
CUresult enter(const char *fn); /* host-function guard, then CUDA_ERROR_NOT_INITIALIZED */
struct CUctx_st *current_ctx(void);
CUresult need_ctx(struct CUctx_st **out); /* the current, live, unpoisoned context; g_lock held */
void ctx_release_locked(struct CUctx_st *ctx);

/* fake_cuda_stream.c */
void stream_destroy_locked(struct CUstream_st *s);

/* fake_cuda_memory.c: whether device `dev` may touch [p, p+n); g_lock held */
CUresult device_range(uintptr_t p, size_t n, int dev, int need);

/* Every entry point starts with this (the test entry points too). */
#define ENTER()                                                                                    \
    do {                                                                                           \
        CUresult enter_r_ = enter(__func__);                                                       \
        if (enter_r_ != CUDA_SUCCESS)                                                              \
            return enter_r_;                                                                       \
    } while (0)

#endif
