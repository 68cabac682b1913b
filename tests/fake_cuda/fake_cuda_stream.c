/* SPDX-License-Identifier: Apache-2.0 */
/* The fake driver's streams: each a FIFO of operations run in order by one worker thread; the
 * legacy default stream's implicit ordering against blocking streams; host functions; copies and
 * memsets; the slow test kernels. See fake_cuda.c for the semantics and their deviations. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_cuda.h"

static uint64_t g_next_stream_id = 1;

/* ---- the engine (g_lock held) -------------------------------------------------------------- */

static struct CUstream_st *stream_by_id(uint64_t id) {
    for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static bool ticket_done(uint64_t id, uint64_t ticket) {
    struct CUstream_st *s = stream_by_id(id);
    return s == NULL || s->completed >= ticket;
}

static bool deps_done(const struct dep *deps, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (!ticket_done(deps[i].stream, deps[i].ticket))
            return false;
    return true;
}

static void sleep_us(unsigned us) {
    struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static CUresult fault(struct CUctx_st *ctx) {
    ctx->sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
    g_stats.illegal_addresses++;
    return CUDA_ERROR_ILLEGAL_ADDRESS;
}

/* Runs one op; g_lock held, dropped while a host function runs or a kernel sleeps. Memory is
 * touched with the lock held, so that no mapping can change under the copy. */
static CUresult run_op(struct CUstream_st *s, struct op *op) {
    struct CUctx_st *ctx = s->ctx;
    int dev = ctx->device;
    if (ctx->sticky != CUDA_SUCCESS)
        return ctx->sticky;
    switch (op->kind) {
    case OP_HOST_FUNC:
        unlock();
        t_in_host_func = true;
        op->fn(op->user);
        t_in_host_func = false;
        lock();
        g_stats.host_funcs++;
        return CUDA_SUCCESS;
    case OP_SLEEP:
        unlock();
        sleep_us(op->delay_us);
        lock();
        return CUDA_SUCCESS;
    case OP_COPY:
        if ((op->src_device &&
             device_range((uintptr_t)op->src, op->n, dev, CU_MEM_ACCESS_FLAGS_PROT_READ)) ||
            (op->dst_device &&
             device_range((uintptr_t)op->dst, op->n, dev, CU_MEM_ACCESS_FLAGS_PROT_READWRITE)))
            return fault(ctx);
        memcpy(op->dst, op->src, op->n);
        return CUDA_SUCCESS;
    case OP_MEMSET:
    case OP_FILL: {
        /* A fill is a slow kernel: it writes in chunks with its delay spread between them, so a
         * reader that looks before the stream says done sees a partial frame. */
        bool slow = op->kind == OP_FILL && op->delay_us > 0;
        size_t chunks = slow ? FAKE_FILL_CHUNKS : 1;
        if (chunks > op->n)
            chunks = op->n > 0 ? op->n : 1;
        size_t step = op->n / chunks + (op->n % chunks != 0);
        for (size_t i = 0; i < chunks; ++i) {
            if (slow) {
                unlock();
                sleep_us(op->delay_us / (unsigned)chunks);
                lock();
                if (ctx->sticky != CUDA_SUCCESS)
                    return ctx->sticky;
            }
            size_t off = i * step < op->n ? i * step : op->n;
            size_t len = op->n - off < step ? op->n - off : step;
            if (device_range((uintptr_t)op->dst + off, len, dev,
                             CU_MEM_ACCESS_FLAGS_PROT_READWRITE) != CUDA_SUCCESS)
                return fault(ctx);
            memset(op->dst + off, op->byte, len);
        }
        return CUDA_SUCCESS;
    }
    }
    return CUDA_ERROR_UNKNOWN;
}

static void op_free(struct op *op) {
    free(op->owned);
    free(op->deps);
    free(op);
}

static void *stream_worker(void *arg) {
    struct CUstream_st *s = arg;
    sigset_t all;
    sigfillset(&all); /* signals belong to the application's threads */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_setname_np(pthread_self(), s->legacy ? "fake_cuda_null" : "fake_cuda_strm");
    lock();
    for (;;) {
        while (s->head == NULL && !s->destroyed)
            wait_changed();
        if (s->head == NULL)
            break;
        struct op *op = s->head;
        while (!deps_done(op->deps, op->ndeps))
            wait_changed();
        CUresult r = run_op(s, op);
        if (op->result != NULL)
            *op->result = r;
        s->head = op->next;
        if (s->head == NULL)
            s->tail = NULL;
        s->completed++;
        op_free(op);
        changed();
    }
    for (struct CUstream_st **p = &g_streams; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    unlock();
    free(s);
    return NULL;
}

static CUresult stream_new(struct CUctx_st *ctx, unsigned flags, bool legacy,
                           struct CUstream_st **out) {
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->id = g_next_stream_id++;
    s->ctx = ctx;
    s->flags = flags;
    s->legacy = legacy;
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&thread, &attr, stream_worker, s); /* it waits for g_lock */
    pthread_attr_destroy(&attr);
    if (err != 0) {
        free(s);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    s->next = g_streams;
    g_streams = s;
    *out = s;
    return CUDA_SUCCESS;
}

void stream_destroy_locked(struct CUstream_st *s) {
    s->destroyed = true;
    if (s->holds_ctx_ref) {
        s->holds_ctx_ref = false;
        ctx_release_locked(s->ctx);
    }
    changed();
}

static bool is_default_stream(CUstream h) {
    return h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD;
}

static CUresult legacy_stream(struct CUctx_st *ctx, struct CUstream_st **out) {
    if (ctx->legacy == NULL) {
        CUresult r = stream_new(ctx, 0, true, &ctx->legacy);
        if (r != CUDA_SUCCESS)
            return r;
    }
    *out = ctx->legacy;
    return CUDA_SUCCESS;
}

static struct CUstream_st *stream_find(CUstream h) {
    for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
        if (s == h && !s->destroyed && !s->legacy)
            return s;
    return NULL;
}

/* The stream a call names; `launch`: work is queued on it, which needs it to belong to `ctx`. */
static CUresult stream_resolve(CUstream h, struct CUctx_st *ctx, bool launch,
                               struct CUstream_st **out) {
    if (is_default_stream(h))
        return legacy_stream(ctx, out);
    struct CUstream_st *s = stream_find(h);
    if (s == NULL || (launch && s->ctx != ctx))
        return CUDA_ERROR_INVALID_HANDLE;
    *out = s;
    return CUDA_SUCCESS;
}

static bool blocking_busy(const struct CUstream_st *t, const struct CUstream_st *legacy) {
    return t != legacy && t->ctx == legacy->ctx && !t->legacy &&
           !(t->flags & CU_STREAM_NON_BLOCKING) && t->enqueued > t->completed;
}

/* Queues op on s, with the legacy stream's implicit ordering; takes op (freed on failure). */
static CUresult enqueue(struct CUstream_st *s, struct op *op) {
    size_t n = 0;
    struct CUstream_st *legacy = s->ctx->legacy;
    if (s->legacy) {
        for (struct CUstream_st *t = g_streams; t != NULL; t = t->next)
            n += blocking_busy(t, s);
    } else if (!(s->flags & CU_STREAM_NON_BLOCKING) && legacy != NULL &&
               legacy->enqueued > legacy->completed) {
        n = 1;
    }
    if (n > 0) {
        op->deps = calloc(n, sizeof *op->deps);
        if (op->deps == NULL) {
            op_free(op);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (s->legacy) {
            for (struct CUstream_st *t = g_streams; t != NULL; t = t->next)
                if (blocking_busy(t, s))
                    op->deps[op->ndeps++] = (struct dep){t->id, t->enqueued};
        } else {
            op->deps[op->ndeps++] = (struct dep){legacy->id, legacy->enqueued};
        }
    }
    op->next = NULL;
    if (s->tail != NULL)
        s->tail->next = op;
    else
        s->head = op;
    s->tail = op;
    s->enqueued++;
    changed();
    return CUDA_SUCCESS;
}

static struct op *op_new(enum op_kind kind) {
    struct op *op = calloc(1, sizeof *op);
    if (op != NULL)
        op->kind = kind;
    return op;
}

/* Queues op on s and, if `wait`, waits for it and returns its outcome; takes op. */
static CUresult submit(struct CUstream_st *s, struct op *op, bool wait) {
    CUresult result = CUDA_SUCCESS;
    if (wait)
        op->result = &result;
    CUresult r = enqueue(s, op);
    if (r != CUDA_SUCCESS || !wait)
        return r;
    uint64_t id = s->id, ticket = s->enqueued;
    while (!ticket_done(id, ticket))
        wait_changed();
    return result;
}

/* ---- streams: API --------------------------------------------------------------------------- */

FAKE_API CUresult cuStreamCreate(CUstream *phStream, unsigned int flags) {
    ENTER();
    if (phStream == NULL || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx;
    struct CUstream_st *s;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = stream_new(ctx, flags, false, &s);
    if (r == CUDA_SUCCESS)
        *phStream = s;
    unlock();
    return r;
}

FAKE_API CUresult cuStreamDestroy_v2(CUstream h) {
    ENTER();
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS) {
        struct CUstream_st *s = is_default_stream(h) ? NULL : stream_find(h);
        if (s == NULL)
            r = CUDA_ERROR_INVALID_HANDLE;
        else
            stream_destroy_locked(s);
    }
    unlock();
    return r;
}

FAKE_API CUresult cuStreamQuery(CUstream h) {
    ENTER();
    struct CUctx_st *ctx;
    struct CUstream_st *s;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = stream_resolve(h, ctx, false, &s);
    if (r == CUDA_SUCCESS)
        r = s->ctx->sticky != CUDA_SUCCESS ? s->ctx->sticky
            : s->completed != s->enqueued  ? CUDA_ERROR_NOT_READY
                                           : CUDA_SUCCESS;
    unlock();
    return r;
}

FAKE_API CUresult cuStreamSynchronize(CUstream h) {
    ENTER();
    struct CUctx_st *ctx;
    struct CUstream_st *s;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = stream_resolve(h, ctx, false, &s);
    if (r == CUDA_SUCCESS) {
        struct CUctx_st *owner = s->ctx;
        uint64_t id = s->id, ticket = s->enqueued;
        while (!ticket_done(id, ticket))
            wait_changed();
        r = owner->sticky;
    }
    unlock();
    return r;
}

FAKE_API CUresult cuCtxSynchronize(void) {
    ENTER();
    struct CUctx_st *ctx;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r != CUDA_SUCCESS)
        goto out;
    /* What was queued before the call, on every stream of the context, default and destroyed
     * (still draining) ones included. */
    size_t n = 0, k = 0;
    for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
        n += s->ctx == ctx;
    struct dep *deps = calloc(n > 0 ? n : 1, sizeof *deps);
    if (deps == NULL) {
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    for (struct CUstream_st *s = g_streams; s != NULL; s = s->next)
        if (s->ctx == ctx)
            deps[k++] = (struct dep){s->id, s->enqueued};
    while (!deps_done(deps, k))
        wait_changed();
    free(deps);
    r = ctx->sticky;
out:
    unlock();
    return r;
}

FAKE_API CUresult cuLaunchHostFunc(CUstream h, CUhostFn fn, void *userData) {
    ENTER();
    if (fn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx;
    struct CUstream_st *s;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = stream_resolve(h, ctx, true, &s);
    if (r == CUDA_SUCCESS) {
        struct op *op = op_new(OP_HOST_FUNC);
        if (op == NULL) {
            r = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            op->fn = fn;
            op->user = userData;
            r = submit(s, op, false);
        }
    }
    unlock();
    return r;
}

/* ---- copies and memsets --------------------------------------------------------------------- */

/* One copy or memset on stream h (a default handle: the current context's legacy stream). */
static CUresult memory_op(CUstream h, enum op_kind kind, void *dst, bool dst_device,
                          const void *src, bool src_device, bool stage, int byte, size_t n,
                          bool wait) {
    struct CUctx_st *ctx;
    struct CUstream_st *s;
    lock();
    CUresult r = need_ctx(&ctx);
    if (r == CUDA_SUCCESS)
        r = stream_resolve(h, ctx, true, &s);
    if (r != CUDA_SUCCESS || n == 0)
        goto out;
    if ((!dst_device && dst == NULL) || (kind == OP_COPY && !src_device && src == NULL) ||
        (dst_device && device_range((uintptr_t)dst, n, ctx->device, 0) != CUDA_SUCCESS) ||
        (src_device && device_range((uintptr_t)src, n, ctx->device, 0) != CUDA_SUCCESS)) {
        r = CUDA_ERROR_INVALID_VALUE;
        goto out;
    }
    struct op *op = op_new(kind);
    if (op == NULL) {
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    op->dst = dst;
    op->src = src;
    op->dst_device = dst_device;
    op->src_device = src_device;
    op->byte = byte;
    op->n = n;
    if (stage) {
        op->owned = malloc(n);
        if (op->owned == NULL) {
            op_free(op);
            r = CUDA_ERROR_OUT_OF_MEMORY;
            goto out;
        }
        memcpy(op->owned, src, n);
        op->src = op->owned;
    }
    r = submit(s, op, wait);
out:
    unlock();
    return r;
}

FAKE_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    ENTER();
    return memory_op(NULL, OP_COPY, (void *)(uintptr_t)dst, true, src, false, true, 0, n, false);
}

FAKE_API CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    ENTER();
    return memory_op(NULL, OP_COPY, dst, false, (const void *)(uintptr_t)src, true, false, 0, n,
                     true);
}

FAKE_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream h) {
    ENTER();
    return memory_op(h, OP_COPY, (void *)(uintptr_t)dst, true, src, false, false, 0, n, false);
}

FAKE_API CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream h) {
    ENTER();
    return memory_op(h, OP_COPY, dst, false, (const void *)(uintptr_t)src, true, false, 0, n,
                     false);
}

FAKE_API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char uc, size_t n) {
    ENTER();
    return memory_op(NULL, OP_MEMSET, (void *)(uintptr_t)dst, true, NULL, false, false, uc, n,
                     false);
}

FAKE_API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char uc, size_t n, CUstream h) {
    ENTER();
    return memory_op(h, OP_MEMSET, (void *)(uintptr_t)dst, true, NULL, false, false, uc, n, false);
}

/* ---- test entry points ---------------------------------------------------------------------- */

/* The stream a test names: default handles mean the legacy stream of the current context, or of
 * device 0's primary context when none is current (a test thread rarely has one). */
static CUresult test_stream(void *h, struct CUstream_st **out) {
    if (!is_default_stream(h)) {
        struct CUstream_st *s = stream_find(h);
        if (s == NULL)
            return CUDA_ERROR_INVALID_HANDLE;
        *out = s;
    } else {
        struct CUctx_st *ctx = current_ctx() != NULL ? current_ctx() : &g_devices[0].ctx;
        if (ctx->refs == 0)
            return CUDA_ERROR_CONTEXT_IS_DESTROYED;
        CUresult r = legacy_stream(ctx, out);
        if (r != CUDA_SUCCESS)
            return r;
    }
    return (*out)->ctx->sticky;
}

/* A stream of the current context (device 0's primary context if none is current) that needs no
 * current context for later calls; it holds a retain of its context until it is destroyed (with
 * fake_cuda_stream_destroy or cuStreamDestroy_v2). Calls cuInit(0) itself. */
FAKE_API int fake_cuda_stream_create(void **stream) {
    CUresult r = cuInit(0);
    if (r != CUDA_SUCCESS)
        return r;
    if (stream == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s;
    lock();
    struct CUctx_st *ctx = current_ctx() != NULL ? current_ctx() : &g_devices[0].ctx;
    ctx->refs++;
    r = stream_new(ctx, 0, false, &s);
    if (r == CUDA_SUCCESS) {
        s->holds_ctx_ref = true;
        *stream = s;
    } else {
        ctx_release_locked(ctx);
    }
    unlock();
    return r;
}

/* cuStreamDestroy_v2 without the need for a current context. */
FAKE_API int fake_cuda_stream_destroy(void *stream) {
    ENTER();
    lock();
    struct CUstream_st *s = stream_find(stream);
    if (s != NULL)
        stream_destroy_locked(s);
    unlock();
    return s != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

/* A slow kernel that writes: `byte` into [ptr, ptr+n) in 8 chunks with delay_us spread between
 * them (one memset when delay_us is 0). Needs write access for the stream's device when it runs. */
FAKE_API int fake_cuda_enqueue_fill(void *stream, unsigned long long ptr, int byte, size_t n,
                                    unsigned delay_us) {
    ENTER();
    struct CUstream_st *s;
    lock();
    CUresult r = test_stream(stream, &s);
    if (r == CUDA_SUCCESS && device_range((uintptr_t)ptr, n, s->ctx->device, 0) != CUDA_SUCCESS)
        r = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS) {
        struct op *op = op_new(OP_FILL);
        if (op == NULL) {
            r = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            op->dst = (unsigned char *)(uintptr_t)ptr;
            op->dst_device = true;
            op->byte = byte;
            op->n = n;
            op->delay_us = delay_us;
            r = submit(s, op, false);
        }
    }
    unlock();
    return r;
}

/* A slow kernel that reads (or just takes time): the stream is busy for delay_us. */
FAKE_API int fake_cuda_enqueue_sleep(void *stream, unsigned delay_us) {
    ENTER();
    struct CUstream_st *s;
    lock();
    CUresult r = test_stream(stream, &s);
    if (r == CUDA_SUCCESS) {
        struct op *op = op_new(OP_SLEEP);
        if (op == NULL) {
            r = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            op->delay_us = delay_us;
            r = submit(s, op, false);
        }
    }
    unlock();
    return r;
}
