/* SPDX-License-Identifier: Apache-2.0 */
/* The C API of bips (C99): opaque handles over the C++ core, for C and for every language with a
 * C foreign-function interface (C# P/Invoke, Rust, Go, ctypes...). docs/c.md is the guide.
 *
 * Errors: every function that can fail returns a bips_status; BIPS_OK is 0. The failing call
 * leaves a message for bips_last_error_message() and, for BIPS_ERR_SYSTEM, the errno for
 * bips_last_errno(), both per thread. No C++ exception ever leaves a function of this header.
 * Accessors that cannot fail return a value directly (0 or NULL for a NULL handle).
 *
 * Lifetimes: each handle is freed by its own function (bips_producer_free, bips_consumer_free,
 * bips_buffer_discard or bips_producer_publish, bips_frame_release, bips_pool_list_free,
 * bips_notifier_free). A buffer or frame may outlive the producer or consumer it came from; a
 * notifier may not outlive its consumer. */
#ifndef BIPS_BIPS_H
#define BIPS_BIPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* Lets C++ callers (and the library's own tests) see that nothing throws. */
#define BIPS_NOEXCEPT noexcept
extern "C" {
#else
#define BIPS_NOEXCEPT
#endif

/* Limits of the core (bips::MAX_NAME_LENGTH, MAX_DIMS, MAX_CONSUMERS, MAX_CAPACITY). */
#define BIPS_MAX_NAME_LENGTH 64
#define BIPS_MAX_DIMS 8
#define BIPS_MAX_CONSUMERS 32
#define BIPS_MAX_CAPACITY 1024

/* A timeout (nanoseconds) that never runs out; any negative timeout means the same. */
#define BIPS_FOREVER (-1)
/* bips_producer_publish: stamp the frame with CLOCK_MONOTONIC now. */
#define BIPS_TIMESTAMP_NOW (-1)
/* bips_consumer_options.owner: pools of this process's uid or root (the default)... */
#define BIPS_OWNER_SELF (-1)
/* ...or pools of any owner. A uid (>= 0) accepts that user's pools only. */
#define BIPS_ANY_OWNER (-2)

/* The enumerated types below are plain int32_t, with their values in an enum: a C or foreign
 * caller may hand over any value, which C++ (where the library is written) could not hold in an
 * enum type without undefined behaviour. The size is also the same for every compiler. */

/// What a call returned: a bips_status_code. One code per bips::Error subclass of the C++ API,
/// plus the OS and the unexpected. Values are stable.
typedef int32_t bips_status;
enum bips_status_code {
    BIPS_OK = 0,
    /// A wait ran out of time; the try_* functions when nothing is available now.
    BIPS_ERR_TIMEOUT = 1,
    /// No pool of that name (and the caller did not wait, or waited in vain).
    BIPS_ERR_POOL_NOT_FOUND = 2,
    /// A pool of another layout version, or made with other parameters.
    BIPS_ERR_INCOMPATIBLE_POOL = 3,
    /// The file under the pool's name is not a valid pool, or was damaged while in use.
    BIPS_ERR_CORRUPT_POOL = 4,
    /// The producer closed or died and everything it published has been received.
    BIPS_ERR_PRODUCER_GONE = 5,
    /// A live producer already owns the name.
    BIPS_ERR_POOL_BUSY = 6,
    /// Every consumer slot of the pool is taken by a live consumer.
    BIPS_ERR_TOO_MANY_CONSUMERS = 7,
    /// A bad argument: NULL handle or pointer, invalid name, shape, dtype, a closed handle...
    BIPS_ERR_INVALID_ARGUMENT = 8,
    /// The OS refused (shm_open, mmap, a pool of another owner: EPERM...): bips_last_errno().
    BIPS_ERR_SYSTEM = 9,
    /// Out of memory.
    BIPS_ERR_NO_MEMORY = 10,
    /// A bips error of a kind this header does not name (a newer core).
    BIPS_ERR_OTHER = 11,
    /// Anything else the core raised: a bug; the message says what.
    BIPS_ERR_INTERNAL = 12
};

/// The enumerator's name ("BIPS_ERR_TIMEOUT"); "BIPS_ERR_UNKNOWN" for other values. Static.
const char *bips_status_name(bips_status status) BIPS_NOEXCEPT;
/// What the last failing call on this thread said; "" if none failed yet. Valid until the next
/// failing call on this thread. A successful call leaves it as it was (like errno).
const char *bips_last_error_message(void) BIPS_NOEXCEPT;
/// The errno of the last failing call on this thread if it was BIPS_ERR_SYSTEM, else 0. (errno
/// itself is also set to it when the call returns.)
int bips_last_errno(void) BIPS_NOEXCEPT;
/// The library's version, "MAJOR.MINOR.PATCH". Static.
const char *bips_version(void) BIPS_NOEXCEPT;

/// Element type of a frame: a bips_dtype_code, whose value is (DLPack type code << 8) | bits.
typedef int32_t bips_dtype;
enum bips_dtype_code {
    BIPS_DTYPE_INVALID = 0,
    BIPS_DTYPE_INT8 = 0x0008,
    BIPS_DTYPE_INT16 = 0x0010,
    BIPS_DTYPE_INT32 = 0x0020,
    BIPS_DTYPE_INT64 = 0x0040,
    BIPS_DTYPE_UINT8 = 0x0108,
    BIPS_DTYPE_UINT16 = 0x0110,
    BIPS_DTYPE_UINT32 = 0x0120,
    BIPS_DTYPE_UINT64 = 0x0140,
    BIPS_DTYPE_FLOAT16 = 0x0210,
    BIPS_DTYPE_FLOAT32 = 0x0220,
    BIPS_DTYPE_FLOAT64 = 0x0240,
    BIPS_DTYPE_BOOL = 0x0608
};

/// numpy's name of a dtype ("uint8", "float32"...); "invalid" for other values. Static.
const char *bips_dtype_name(bips_dtype dtype) BIPS_NOEXCEPT;

/// What the producer does when no buffer is free: a bips_policy_code.
typedef int32_t bips_policy;
enum bips_policy_code {
    BIPS_POLICY_BLOCK = 0,      ///< lossless: acquire waits for the slowest consumer
    BIPS_POLICY_DROP_OLDEST = 1 ///< live: take back the oldest frame no consumer is holding
};

/// Everything a producer fixes when it creates a pool. Start from bips_producer_options_init().
typedef struct bips_producer_options {
    uint32_t capacity;            ///< number of buffers (default 8)
    uint32_t max_consumers;       ///< default 8, at most BIPS_MAX_CONSUMERS
    size_t buffer_size;           ///< bytes per buffer; 0 (default): from shape and dtype
    size_t meta_size;             ///< bytes of user metadata per frame (default 0)
    uint32_t ndim;                ///< dimensions of the default frame shape (default 0)
    int64_t shape[BIPS_MAX_DIMS]; ///< the default frame shape, shape[0..ndim)
    bips_dtype dtype;             ///< default element type (default BIPS_DTYPE_UINT8)
    bips_policy policy;           ///< default BIPS_POLICY_BLOCK
    uint32_t mode;                ///< permissions of the pool files (default 0600)
    int adaptive_spin;            ///< non-zero (default): acquire spins briefly before sleeping
                                  ///< while recent waits were short (docs/concepts.md)
} bips_producer_options;

/// Per-consumer settings. Start from bips_consumer_options_init().
typedef struct bips_consumer_options {
    int64_t wait_ns;   ///< how long bips_consumer_open waits for the pool (default 0: not at all)
    int64_t spin_ns;   ///< busy-poll this long before sleeping in receive (default 0)
    int64_t owner;     ///< BIPS_OWNER_SELF (default), BIPS_ANY_OWNER or a uid
    int latest;        ///< non-zero: receive returns the newest queued frame, gives older ones back
    int reconnect;     ///< non-zero: follow a new producer instead of BIPS_ERR_PRODUCER_GONE
    int adaptive_spin; ///< non-zero (default): with spin_ns 0, receive spins briefly before
                       ///< sleeping while recent waits were short (docs/concepts.md)
} bips_consumer_options;

/// Fills `options` with the defaults. Does nothing for NULL.
void bips_producer_options_init(bips_producer_options *options) BIPS_NOEXCEPT;
/// Fills `options` with the defaults. Does nothing for NULL.
void bips_consumer_options_init(bips_consumer_options *options) BIPS_NOEXCEPT;

typedef struct bips_producer bips_producer;
typedef struct bips_buffer bips_buffer;

/// Producer-side counters; a snapshot.
typedef struct bips_producer_stats {
    uint64_t published; ///< frames published since the pool was created
    uint64_t dropped;   ///< queued frames taken back under BIPS_POLICY_DROP_OLDEST
    uint32_t capacity;
    uint32_t free;            ///< buffers neither acquired nor referenced by any consumer
    uint32_t in_flight;       ///< capacity - free
    uint32_t consumers;       ///< attached consumers
    uint64_t acquire_waits;   ///< acquires that found no free buffer and waited
    uint64_t acquire_wait_ns; ///< total time spent in those waits
    uint64_t spins;           ///< waits in acquire that ended while spinning (no sleep)
    uint64_t sleeps;          ///< waits in acquire that slept
} bips_producer_stats;

/// Creates pool `name` (options NULL: the defaults, which need a buffer_size or shape). On
/// failure *out is NULL: BIPS_ERR_INVALID_ARGUMENT (name, options), BIPS_ERR_POOL_BUSY (a live
/// producer has it), BIPS_ERR_CORRUPT_POOL (a foreign file holds the name), BIPS_ERR_SYSTEM.
bips_status bips_producer_create(const char *name, const bips_producer_options *options,
                                 bips_producer **out) BIPS_NOEXCEPT;
/// A free buffer, waiting up to `timeout_ns` (negative: forever). BIPS_ERR_TIMEOUT;
/// BIPS_ERR_INVALID_ARGUMENT once closed; BIPS_ERR_CORRUPT_POOL if the pool was damaged.
bips_status bips_producer_acquire(bips_producer *producer, int64_t timeout_ns,
                                  bips_buffer **out) BIPS_NOEXCEPT;
/// A free buffer now, never waiting: BIPS_ERR_TIMEOUT when none is free; as acquire otherwise.
bips_status bips_producer_try_acquire(bips_producer *producer, bips_buffer **out) BIPS_NOEXCEPT;
/// Publishes `buffer` to every attached consumer, stamped `timestamp_ns` (CLOCK_MONOTONIC
/// nanoseconds; BIPS_TIMESTAMP_NOW: now), with `meta_len` bytes of `meta` copied into the frame's
/// metadata (meta may point into bips_buffer_meta()). Always consumes `buffer`: on failure it
/// goes back to the pool unpublished. BIPS_ERR_INVALID_ARGUMENT (meta longer than meta_size, a
/// buffer of another producer, closed), BIPS_ERR_CORRUPT_POOL.
bips_status bips_producer_publish(bips_producer *producer, bips_buffer *buffer,
                                  int64_t timestamp_ns, const void *meta,
                                  size_t meta_len) BIPS_NOEXCEPT;
/// Fills `out` with the producer's counters. BIPS_ERR_INVALID_ARGUMENT for NULL.
bips_status bips_producer_get_stats(const bips_producer *producer,
                                    bips_producer_stats *out) BIPS_NOEXCEPT;
/// Ends the stream: consumers drain what is queued, then get BIPS_ERR_PRODUCER_GONE; the name is
/// free for a new producer at once. Idempotent. BIPS_ERR_INVALID_ARGUMENT for NULL.
bips_status bips_producer_close(bips_producer *producer) BIPS_NOEXCEPT;
/// Closes (if still open) and frees the handle. Does nothing for NULL.
void bips_producer_free(bips_producer *producer) BIPS_NOEXCEPT;

/// Start of the buffer's page-aligned data area (bips_buffer_capacity() bytes); NULL for NULL.
void *bips_buffer_data(const bips_buffer *buffer) BIPS_NOEXCEPT;
/// Bytes the buffer can hold (the pool's buffer_size).
size_t bips_buffer_capacity(const bips_buffer *buffer) BIPS_NOEXCEPT;
/// Bytes that will be published: shape x itemsize, unless bips_buffer_set_nbytes() said otherwise.
size_t bips_buffer_nbytes(const bips_buffer *buffer) BIPS_NOEXCEPT;
/// The frame's dimensions (starting as the pool's); bips_buffer_shape() has ndim entries, valid
/// until the buffer is published or discarded.
size_t bips_buffer_ndim(const bips_buffer *buffer) BIPS_NOEXCEPT;
const int64_t *bips_buffer_shape(const bips_buffer *buffer) BIPS_NOEXCEPT;
bips_dtype bips_buffer_dtype(const bips_buffer *buffer) BIPS_NOEXCEPT;
/// Sets this frame's shape and dtype. BIPS_ERR_INVALID_ARGUMENT if it does not fit the buffer,
/// ndim > BIPS_MAX_DIMS, a dimension is negative or the dtype is invalid.
bips_status bips_buffer_set_format(bips_buffer *buffer, const int64_t *shape, size_t ndim,
                                   bips_dtype dtype) BIPS_NOEXCEPT;
/// Makes this a variable-size payload: a flat uint8 frame of `nbytes` bytes.
/// BIPS_ERR_INVALID_ARGUMENT if it exceeds bips_buffer_capacity().
bips_status bips_buffer_set_nbytes(bips_buffer *buffer, size_t nbytes) BIPS_NOEXCEPT;
/// The frame's metadata area (bips_buffer_meta_capacity() bytes, the pool's meta_size).
void *bips_buffer_meta(const bips_buffer *buffer) BIPS_NOEXCEPT;
size_t bips_buffer_meta_capacity(const bips_buffer *buffer) BIPS_NOEXCEPT;
/// Gives the buffer back unpublished and frees the handle. Does nothing for NULL.
void bips_buffer_discard(bips_buffer *buffer) BIPS_NOEXCEPT;

typedef struct bips_consumer bips_consumer;
typedef struct bips_frame bips_frame;

/// Consumer-side counters; a snapshot.
typedef struct bips_consumer_stats {
    uint64_t received;   ///< frames returned by receive
    uint64_t dropped;    ///< frames the producer took back before this consumer got them
    uint64_t skipped;    ///< older frames given back by latest
    uint32_t queued;     ///< frames waiting for this consumer now
    uint32_t held;       ///< frames this consumer holds now
    uint32_t slot;       ///< consumer slot index in the pool
    uint64_t reconnects; ///< producers followed with reconnect
    uint64_t spins;      ///< waits in receive that ended while spinning (no sleep)
    uint64_t sleeps;     ///< waits in receive that slept
} bips_consumer_stats;

/// Attaches to pool `name`, waiting up to options->wait_ns for it and a live producer (options
/// NULL: the defaults). On failure *out is NULL: BIPS_ERR_POOL_NOT_FOUND, BIPS_ERR_TIMEOUT,
/// BIPS_ERR_INCOMPATIBLE_POOL, BIPS_ERR_CORRUPT_POOL, BIPS_ERR_TOO_MANY_CONSUMERS,
/// BIPS_ERR_PRODUCER_GONE (its producer is gone and wait_ns is 0), BIPS_ERR_SYSTEM (EPERM: a
/// pool of another owner), BIPS_ERR_INVALID_ARGUMENT.
bips_status bips_consumer_open(const char *name, const bips_consumer_options *options,
                               bips_consumer **out) BIPS_NOEXCEPT;
/// The next frame, waiting up to `timeout_ns` (negative: forever). BIPS_ERR_TIMEOUT;
/// BIPS_ERR_PRODUCER_GONE once the producer is gone and nothing is queued (unless reconnect);
/// BIPS_ERR_CORRUPT_POOL; BIPS_ERR_INVALID_ARGUMENT once closed.
bips_status bips_consumer_receive(bips_consumer *consumer, int64_t timeout_ns,
                                  bips_frame **out) BIPS_NOEXCEPT;
/// The next frame if one is queued, never waiting: BIPS_ERR_TIMEOUT when none is; as receive.
bips_status bips_consumer_try_receive(bips_consumer *consumer, bips_frame **out) BIPS_NOEXCEPT;
/// Waits up to `timeout_ns` (negative: forever) until receive would return at once (a frame is
/// queued, or the stream ended) and returns BIPS_OK; BIPS_ERR_TIMEOUT otherwise. Takes nothing:
/// for loops that wait on one thread and receive on another.
bips_status bips_consumer_wait(bips_consumer *consumer, int64_t timeout_ns) BIPS_NOEXCEPT;
/// Fills `out` with the consumer's counters. BIPS_ERR_INVALID_ARGUMENT for NULL.
bips_status bips_consumer_get_stats(const bips_consumer *consumer,
                                    bips_consumer_stats *out) BIPS_NOEXCEPT;
/// Detaches: queued frames go back at once, frames still held when released. Idempotent.
/// BIPS_ERR_INVALID_ARGUMENT for NULL.
bips_status bips_consumer_close(bips_consumer *consumer) BIPS_NOEXCEPT;
/// Closes (if still open) and frees the handle. Does nothing for NULL.
void bips_consumer_free(bips_consumer *consumer) BIPS_NOEXCEPT;

/// An event loop's view of a consumer (bips::Notifier): a file descriptor that turns readable
/// when the consumer has a frame queued or its stream ended. Poll it for reading; when readable,
/// call bips_notifier_clear, receive with bips_consumer_try_receive, and arm again.
typedef struct bips_notifier bips_notifier;
/// A notifier for `consumer`, which must outlive it; idle until armed. BIPS_ERR_INVALID_ARGUMENT
/// for NULL, BIPS_ERR_SYSTEM when the OS refuses the eventfd or the thread.
bips_status bips_notifier_new(bips_consumer *consumer, bips_notifier **out) BIPS_NOEXCEPT;
/// The descriptor to poll for reading, owned by the notifier; -1 for NULL.
int bips_notifier_fd(const bips_notifier *notifier) BIPS_NOEXCEPT;
/// Waits (again) until a frame is queued or the stream ended, then makes the fd readable once.
/// BIPS_ERR_INVALID_ARGUMENT for NULL.
bips_status bips_notifier_arm(bips_notifier *notifier) BIPS_NOEXCEPT;
/// Stops waiting: once it returns the fd is not readable until the next arm. Nothing for NULL.
void bips_notifier_disarm(bips_notifier *notifier) BIPS_NOEXCEPT;
/// Consumes the fd's readiness. Nothing for NULL.
void bips_notifier_clear(bips_notifier *notifier) BIPS_NOEXCEPT;
/// Stops its thread, closes the fd and frees the handle. Does nothing for NULL.
void bips_notifier_free(bips_notifier *notifier) BIPS_NOEXCEPT;

/// The frame's bytes (read-only shared memory), valid until bips_frame_release(); NULL for NULL.
const void *bips_frame_data(const bips_frame *frame) BIPS_NOEXCEPT;
size_t bips_frame_nbytes(const bips_frame *frame) BIPS_NOEXCEPT;
/// 0, 1, 2... in publish order per pool.
uint64_t bips_frame_seq(const bips_frame *frame) BIPS_NOEXCEPT;
/// CLOCK_MONOTONIC nanoseconds given by the producer (by default when it published).
int64_t bips_frame_timestamp_ns(const bips_frame *frame) BIPS_NOEXCEPT;
/// The frame's dimensions; bips_frame_shape() has ndim entries, valid until released.
size_t bips_frame_ndim(const bips_frame *frame) BIPS_NOEXCEPT;
const int64_t *bips_frame_shape(const bips_frame *frame) BIPS_NOEXCEPT;
bips_dtype bips_frame_dtype(const bips_frame *frame) BIPS_NOEXCEPT;
/// The metadata published with the frame (bips_frame_meta_size() bytes), valid until released.
const void *bips_frame_meta(const bips_frame *frame) BIPS_NOEXCEPT;
size_t bips_frame_meta_size(const bips_frame *frame) BIPS_NOEXCEPT;
/// 1 while the producer has not reused the frame's buffer: read (or copy) the data, then check;
/// 1 means what was read is the frame as published (see docs/security.md). 0 for NULL.
int bips_frame_intact(const bips_frame *frame) BIPS_NOEXCEPT;
/// Gives the buffer back and frees the handle. Does nothing for NULL.
void bips_frame_release(bips_frame *frame) BIPS_NOEXCEPT;

typedef struct bips_pool_list bips_pool_list;

/// A pool as seen from outside, read without attaching. Strings belong to the list.
typedef struct bips_pool_info {
    const char *name;
    const char *error; ///< "" for a readable pool; else why it could not be read
    int producer_alive;
    int closed;
    uint32_t layout_version;
    uint32_t capacity;
    size_t buffer_size;
    size_t meta_size;
    bips_policy policy;
    uint32_t mode;
    uint32_t owner; ///< uid
    uint32_t max_consumers;
    uint32_t consumers;
    uint32_t free;
    uint64_t published;
    uint64_t dropped;
    int64_t last_publish_ns; ///< CLOCK_MONOTONIC of the last publish; 0: never
    double fps;              ///< frames/s over the last full second
    uint64_t acquire_waits;
    uint64_t acquire_wait_ns;
    uint32_t ndim;
    int64_t shape[BIPS_MAX_DIMS];
    bips_dtype dtype;
    int32_t producer_pid;
    uint64_t created_ns; ///< CLOCK_REALTIME
    size_t file_size;
    size_t slot_count; ///< rows for bips_pool_list_get_slot()
} bips_pool_info;

/// One consumer slot of a pool.
typedef struct bips_slot_info {
    uint32_t slot;
    int alive;
    int32_t pid; ///< in the consumer's own PID namespace (informational only)
    int latest;
    uint64_t received;
    uint64_t dropped;
    uint64_t skipped;
    uint32_t queued;
    uint32_t held;
    uint64_t attached_ns;    ///< CLOCK_MONOTONIC when it attached
    int64_t last_seq;        ///< seq of the last frame received; -1: none yet
    int64_t last_receive_ns; ///< CLOCK_MONOTONIC of the last receive; 0: never
} bips_slot_info;

/// Every bips pool under /dev/shm; entries that cannot be read are listed with `error` set.
/// BIPS_ERR_SYSTEM if /dev/shm cannot be read.
bips_status bips_list_pools(bips_pool_list **out) BIPS_NOEXCEPT;
/// Pool `name`, with a row per consumer slot, as a list of one entry. BIPS_ERR_POOL_NOT_FOUND,
/// BIPS_ERR_CORRUPT_POOL, BIPS_ERR_INCOMPATIBLE_POOL, BIPS_ERR_SYSTEM, BIPS_ERR_INVALID_ARGUMENT.
bips_status bips_get_pool_info(const char *name, bips_pool_list **out) BIPS_NOEXCEPT;
/// Entries in the list; 0 for NULL.
size_t bips_pool_list_size(const bips_pool_list *list) BIPS_NOEXCEPT;
/// Fills `out` with entry `index`; its strings live as long as the list.
/// BIPS_ERR_INVALID_ARGUMENT for NULL or an index out of range.
bips_status bips_pool_list_get(const bips_pool_list *list, size_t index,
                               bips_pool_info *out) BIPS_NOEXCEPT;
/// Fills `out` with row `slot` (< slot_count) of entry `index`. BIPS_ERR_INVALID_ARGUMENT for
/// NULL or an index out of range.
bips_status bips_pool_list_get_slot(const bips_pool_list *list, size_t index, size_t slot,
                                    bips_slot_info *out) BIPS_NOEXCEPT;
/// Frees the list. Does nothing for NULL.
void bips_pool_list_free(bips_pool_list *list) BIPS_NOEXCEPT;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BIPS_BIPS_H */
