// SPDX-License-Identifier: Apache-2.0
// The C API (bips.h) over the public C++ API: each handle owns one C++ object, and every entry
// point turns exceptions into a bips_status and a per-thread message.
#include <bips/bips.h>
#include <bips/bips.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

struct bips_producer {
    bips::Producer producer;
};
struct bips_buffer {
    bips::Buffer buffer;
};
struct bips_consumer {
    bips::Consumer consumer;
};
struct bips_frame {
    bips::Frame frame;
};
struct bips_notifier {
    bips::Notifier notifier;
};
struct bips_pool_list {
    std::vector<bips::PoolInfo> pools;
};

namespace {

static_assert(BIPS_MAX_NAME_LENGTH == bips::MAX_NAME_LENGTH);
static_assert(BIPS_MAX_DIMS == bips::MAX_DIMS);
static_assert(BIPS_MAX_CONSUMERS == bips::MAX_CONSUMERS);
static_assert(BIPS_MAX_CAPACITY == bips::MAX_CAPACITY);
static_assert(BIPS_OWNER_SELF == bips::OWNER_SELF);
static_assert(BIPS_ANY_OWNER == bips::ANY_OWNER);
static_assert(BIPS_POLICY_BLOCK == static_cast<int>(bips::Policy::block));
static_assert(BIPS_POLICY_DROP_OLDEST == static_cast<int>(bips::Policy::drop_oldest));

// A fixed buffer: recording an error must not allocate (it also reports std::bad_alloc).
thread_local char t_message[1024];
thread_local int t_errno = 0;

bips_status fail(bips_status status, const char *message, int err = 0) noexcept {
    std::snprintf(t_message, sizeof t_message, "%s", message);
    t_errno = err;
    if (err != 0)
        errno = err;
    return status;
}

// For failures the C layer finds itself: the message names the function.
bips_status fail_in(bips_status status, const char *func, const char *what) noexcept {
    std::snprintf(t_message, sizeof t_message, "%s: %s", func, what);
    t_errno = 0;
    return status;
}

// Called inside a catch block: maps the exception in flight to its status.
bips_status translate() noexcept {
    try {
        throw;
    } catch (const bips::Timeout &e) {
        return fail(BIPS_ERR_TIMEOUT, e.what());
    } catch (const bips::PoolNotFound &e) {
        return fail(BIPS_ERR_POOL_NOT_FOUND, e.what());
    } catch (const bips::IncompatiblePool &e) {
        return fail(BIPS_ERR_INCOMPATIBLE_POOL, e.what());
    } catch (const bips::CorruptPool &e) {
        return fail(BIPS_ERR_CORRUPT_POOL, e.what());
    } catch (const bips::ProducerGone &e) {
        return fail(BIPS_ERR_PRODUCER_GONE, e.what());
    } catch (const bips::PoolBusy &e) {
        return fail(BIPS_ERR_POOL_BUSY, e.what());
    } catch (const bips::TooManyConsumers &e) {
        return fail(BIPS_ERR_TOO_MANY_CONSUMERS, e.what());
    } catch (const bips::InvalidArgument &e) {
        return fail(BIPS_ERR_INVALID_ARGUMENT, e.what());
    } catch (const bips::Error &e) {
        return fail(BIPS_ERR_OTHER, e.what());
    } catch (const std::system_error &e) {
        const auto &cat = e.code().category();
        const bool is_errno = cat == std::generic_category() || cat == std::system_category();
        return fail(BIPS_ERR_SYSTEM, e.what(), is_errno ? e.code().value() : 0);
    } catch (const std::bad_alloc &) {
        return fail(BIPS_ERR_NO_MEMORY, "out of memory", ENOMEM);
    } catch (const std::exception &e) {
        return fail(BIPS_ERR_INTERNAL, e.what());
    } catch (...) {
        return fail(BIPS_ERR_INTERNAL, "an exception that is not a std::exception");
    }
}

// Runs `body` (which returns a bips_status) with every exception turned into a status.
template <class F> bips_status guard(F &&body) noexcept {
    try {
        return body();
    } catch (...) {
        return translate();
    }
}

#define BIPS_NOT_NULL(arg)                                                                         \
    do {                                                                                           \
        if ((arg) == nullptr)                                                                      \
            return fail_in(BIPS_ERR_INVALID_ARGUMENT, __func__, #arg " is NULL");                  \
    } while (0)

// Clears an out-parameter first, so that it is NULL whenever the call fails.
#define BIPS_OUT(out)                                                                              \
    do {                                                                                           \
        BIPS_NOT_NULL(out);                                                                        \
        *(out) = nullptr;                                                                          \
    } while (0)

// Negative means forever; the core adds timeouts to now(), so forever is capped at 30 years.
bips::Duration timeout_of(std::int64_t ns) {
    constexpr std::int64_t FOREVER_NS = 30LL * 365 * 24 * 3600 * 1000000000LL;
    return bips::Duration(ns < 0 || ns > FOREVER_NS ? FOREVER_NS : ns);
}

bips::DType dtype_of(bips_dtype d) {
    const bips::DType t{static_cast<std::uint8_t>((d >> 8) & 0xff),
                        static_cast<std::uint8_t>(d & 0xff)};
    if (d < 0 || d > 0xffff || !t.valid())
        throw bips::InvalidArgument("invalid dtype " + std::to_string(d));
    return t;
}

bips_dtype dtype_to_c(bips::DType t) noexcept {
    return t.valid() ? (bips_dtype{t.code} << 8) | t.bits : bips_dtype{BIPS_DTYPE_INVALID};
}

bips::PoolOptions pool_options_of(const bips_producer_options &o) {
    if (o.ndim > BIPS_MAX_DIMS)
        throw bips::InvalidArgument("ndim is " + std::to_string(o.ndim) + "; at most " +
                                    std::to_string(BIPS_MAX_DIMS));
    bips::PoolOptions p;
    p.capacity = o.capacity;
    p.max_consumers = o.max_consumers;
    p.buffer_size = o.buffer_size;
    p.meta_size = o.meta_size;
    p.shape.assign(o.shape, o.shape + o.ndim);
    p.dtype = dtype_of(o.dtype);
    if (o.policy != BIPS_POLICY_BLOCK && o.policy != BIPS_POLICY_DROP_OLDEST)
        throw bips::InvalidArgument("unknown policy " + std::to_string(o.policy));
    p.policy = static_cast<bips::Policy>(o.policy);
    p.mode = static_cast<mode_t>(o.mode);
    p.adaptive_spin = o.adaptive_spin != 0;
    return p;
}

bips::ConsumerOptions consumer_options_of(const bips_consumer_options &o) {
    if (o.spin_ns < 0)
        throw bips::InvalidArgument("spin_ns must be >= 0");
    bips::ConsumerOptions c;
    c.wait = timeout_of(o.wait_ns);
    c.spin = bips::Duration(o.spin_ns);
    c.owner = o.owner;
    c.latest = o.latest != 0;
    c.reconnect = o.reconnect != 0;
    c.adaptive_spin = o.adaptive_spin != 0;
    return c;
}

template <class T> T *make(T value) { return new T{std::move(value)}; }

} // namespace

extern "C" {

const char *bips_status_name(bips_status status) noexcept {
    switch (status) {
    case BIPS_OK:
        return "BIPS_OK";
    case BIPS_ERR_TIMEOUT:
        return "BIPS_ERR_TIMEOUT";
    case BIPS_ERR_POOL_NOT_FOUND:
        return "BIPS_ERR_POOL_NOT_FOUND";
    case BIPS_ERR_INCOMPATIBLE_POOL:
        return "BIPS_ERR_INCOMPATIBLE_POOL";
    case BIPS_ERR_CORRUPT_POOL:
        return "BIPS_ERR_CORRUPT_POOL";
    case BIPS_ERR_PRODUCER_GONE:
        return "BIPS_ERR_PRODUCER_GONE";
    case BIPS_ERR_POOL_BUSY:
        return "BIPS_ERR_POOL_BUSY";
    case BIPS_ERR_TOO_MANY_CONSUMERS:
        return "BIPS_ERR_TOO_MANY_CONSUMERS";
    case BIPS_ERR_INVALID_ARGUMENT:
        return "BIPS_ERR_INVALID_ARGUMENT";
    case BIPS_ERR_SYSTEM:
        return "BIPS_ERR_SYSTEM";
    case BIPS_ERR_NO_MEMORY:
        return "BIPS_ERR_NO_MEMORY";
    case BIPS_ERR_OTHER:
        return "BIPS_ERR_OTHER";
    case BIPS_ERR_INTERNAL:
        return "BIPS_ERR_INTERNAL";
    }
    return "BIPS_ERR_UNKNOWN";
}

const char *bips_last_error_message(void) noexcept { return t_message; }

int bips_last_errno(void) noexcept { return t_errno; }

const char *bips_version(void) noexcept { return BIPS_VERSION; }

const char *bips_dtype_name(bips_dtype dtype) noexcept {
    switch (dtype) {
    case BIPS_DTYPE_INT8:
        return "int8";
    case BIPS_DTYPE_INT16:
        return "int16";
    case BIPS_DTYPE_INT32:
        return "int32";
    case BIPS_DTYPE_INT64:
        return "int64";
    case BIPS_DTYPE_UINT8:
        return "uint8";
    case BIPS_DTYPE_UINT16:
        return "uint16";
    case BIPS_DTYPE_UINT32:
        return "uint32";
    case BIPS_DTYPE_UINT64:
        return "uint64";
    case BIPS_DTYPE_FLOAT16:
        return "float16";
    case BIPS_DTYPE_FLOAT32:
        return "float32";
    case BIPS_DTYPE_FLOAT64:
        return "float64";
    case BIPS_DTYPE_BOOL:
        return "bool";
    case BIPS_DTYPE_INVALID:
        break;
    }
    return "invalid";
}

void bips_producer_options_init(bips_producer_options *options) noexcept {
    if (options == nullptr)
        return;
    const bips::PoolOptions d;
    *options = bips_producer_options{};
    options->capacity = d.capacity;
    options->max_consumers = d.max_consumers;
    options->buffer_size = d.buffer_size;
    options->meta_size = d.meta_size;
    options->ndim = 0;
    options->dtype = dtype_to_c(d.dtype);
    options->policy = static_cast<bips_policy>(d.policy);
    options->mode = static_cast<std::uint32_t>(d.mode);
    options->adaptive_spin = d.adaptive_spin ? 1 : 0;
}

void bips_consumer_options_init(bips_consumer_options *options) noexcept {
    if (options == nullptr)
        return;
    const bips::ConsumerOptions d;
    *options = bips_consumer_options{};
    options->wait_ns = d.wait.count();
    options->spin_ns = d.spin.count();
    options->owner = d.owner;
    options->latest = d.latest ? 1 : 0;
    options->reconnect = d.reconnect ? 1 : 0;
    options->adaptive_spin = d.adaptive_spin ? 1 : 0;
}

bips_status bips_producer_create(const char *name, const bips_producer_options *options,
                                 bips_producer **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(name);
    return guard([&]() -> bips_status {
        bips_producer_options o;
        bips_producer_options_init(&o);
        if (options != nullptr)
            o = *options;
        *out = make(bips_producer{bips::Producer(name, pool_options_of(o))});
        return BIPS_OK;
    });
}

bips_status bips_producer_acquire(bips_producer *producer, int64_t timeout_ns,
                                  bips_buffer **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(producer);
    return guard([&]() -> bips_status {
        *out = make(bips_buffer{producer->producer.acquire(timeout_of(timeout_ns))});
        return BIPS_OK;
    });
}

bips_status bips_producer_try_acquire(bips_producer *producer, bips_buffer **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(producer);
    return guard([&]() -> bips_status {
        auto b = producer->producer.try_acquire();
        if (!b)
            return fail(BIPS_ERR_TIMEOUT, "no free buffer");
        *out = make(bips_buffer{std::move(*b)});
        return BIPS_OK;
    });
}

bips_status bips_producer_publish(bips_producer *producer, bips_buffer *buffer,
                                  int64_t timestamp_ns, const void *meta,
                                  size_t meta_len) noexcept {
    // The handle is consumed whatever happens; an unpublished buffer goes back to the pool.
    struct Consume {
        bips_buffer *b;
        ~Consume() { delete b; }
    } consume{buffer};
    BIPS_NOT_NULL(producer);
    BIPS_NOT_NULL(buffer);
    if (meta == nullptr && meta_len != 0)
        return fail_in(BIPS_ERR_INVALID_ARGUMENT, __func__, "meta is NULL but meta_len is not 0");
    return guard([&]() -> bips_status {
        producer->producer.publish(std::move(buffer->buffer), timestamp_ns, meta, meta_len);
        return BIPS_OK;
    });
}

bips_status bips_producer_get_stats(const bips_producer *producer,
                                    bips_producer_stats *out) noexcept {
    BIPS_NOT_NULL(producer);
    BIPS_NOT_NULL(out);
    return guard([&]() -> bips_status {
        const bips::ProducerStats s = producer->producer.stats();
        *out = bips_producer_stats{};
        out->published = s.published;
        out->dropped = s.dropped;
        out->capacity = s.capacity;
        out->free = s.free;
        out->in_flight = s.in_flight;
        out->consumers = s.consumers;
        out->acquire_waits = s.acquire_waits;
        out->acquire_wait_ns = s.acquire_wait_ns;
        out->spins = s.spins;
        out->sleeps = s.sleeps;
        return BIPS_OK;
    });
}

bips_status bips_producer_close(bips_producer *producer) noexcept {
    BIPS_NOT_NULL(producer);
    producer->producer.close();
    return BIPS_OK;
}

void bips_producer_free(bips_producer *producer) noexcept { delete producer; }

void *bips_buffer_data(const bips_buffer *buffer) noexcept {
    return buffer ? buffer->buffer.data() : nullptr;
}

size_t bips_buffer_capacity(const bips_buffer *buffer) noexcept {
    return buffer ? buffer->buffer.capacity() : 0;
}

size_t bips_buffer_nbytes(const bips_buffer *buffer) noexcept {
    return buffer ? buffer->buffer.nbytes() : 0;
}

size_t bips_buffer_ndim(const bips_buffer *buffer) noexcept {
    return buffer ? buffer->buffer.ndim() : 0;
}

const int64_t *bips_buffer_shape(const bips_buffer *buffer) noexcept {
    return buffer ? buffer->buffer.dims() : nullptr;
}

bips_dtype bips_buffer_dtype(const bips_buffer *buffer) noexcept {
    return buffer ? dtype_to_c(buffer->buffer.dtype()) : BIPS_DTYPE_INVALID;
}

bips_status bips_buffer_set_format(bips_buffer *buffer, const int64_t *shape, size_t ndim,
                                   bips_dtype dtype) noexcept {
    BIPS_NOT_NULL(buffer);
    if (shape == nullptr && ndim != 0)
        return fail_in(BIPS_ERR_INVALID_ARGUMENT, __func__, "shape is NULL but ndim is not 0");
    return guard([&]() -> bips_status {
        buffer->buffer.set_format(shape, ndim, dtype_of(dtype));
        return BIPS_OK;
    });
}

bips_status bips_buffer_set_nbytes(bips_buffer *buffer, size_t nbytes) noexcept {
    BIPS_NOT_NULL(buffer);
    return guard([&]() -> bips_status {
        buffer->buffer.set_nbytes(nbytes);
        return BIPS_OK;
    });
}

void *bips_buffer_meta(const bips_buffer *buffer) noexcept {
    return buffer ? buffer->buffer.meta() : nullptr;
}

size_t bips_buffer_meta_capacity(const bips_buffer *buffer) noexcept {
    return buffer ? buffer->buffer.meta_capacity() : 0;
}

void bips_buffer_discard(bips_buffer *buffer) noexcept { delete buffer; }

bips_status bips_consumer_open(const char *name, const bips_consumer_options *options,
                               bips_consumer **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(name);
    return guard([&]() -> bips_status {
        bips_consumer_options o;
        bips_consumer_options_init(&o);
        if (options != nullptr)
            o = *options;
        *out = make(bips_consumer{bips::Consumer(name, consumer_options_of(o))});
        return BIPS_OK;
    });
}

bips_status bips_consumer_receive(bips_consumer *consumer, int64_t timeout_ns,
                                  bips_frame **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(consumer);
    return guard([&]() -> bips_status {
        *out = make(bips_frame{consumer->consumer.receive(timeout_of(timeout_ns))});
        return BIPS_OK;
    });
}

bips_status bips_consumer_try_receive(bips_consumer *consumer, bips_frame **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(consumer);
    return guard([&]() -> bips_status {
        auto f = consumer->consumer.try_receive();
        if (!f)
            return fail(BIPS_ERR_TIMEOUT, "no frame queued");
        *out = make(bips_frame{std::move(*f)});
        return BIPS_OK;
    });
}

bips_status bips_consumer_wait(bips_consumer *consumer, int64_t timeout_ns) noexcept {
    BIPS_NOT_NULL(consumer);
    return guard([&]() -> bips_status {
        if (!consumer->consumer.wait(timeout_of(timeout_ns)))
            return fail(BIPS_ERR_TIMEOUT, "no frame within the timeout");
        return BIPS_OK;
    });
}

bips_status bips_consumer_get_stats(const bips_consumer *consumer,
                                    bips_consumer_stats *out) noexcept {
    BIPS_NOT_NULL(consumer);
    BIPS_NOT_NULL(out);
    return guard([&]() -> bips_status {
        const bips::ConsumerStats s = consumer->consumer.stats();
        *out = bips_consumer_stats{};
        out->received = s.received;
        out->dropped = s.dropped;
        out->skipped = s.skipped;
        out->queued = s.queued;
        out->held = s.held;
        out->slot = s.slot;
        out->reconnects = s.reconnects;
        out->spins = s.spins;
        out->sleeps = s.sleeps;
        return BIPS_OK;
    });
}

bips_status bips_consumer_close(bips_consumer *consumer) noexcept {
    BIPS_NOT_NULL(consumer);
    consumer->consumer.close();
    return BIPS_OK;
}

void bips_consumer_free(bips_consumer *consumer) noexcept { delete consumer; }

bips_status bips_notifier_new(bips_consumer *consumer, bips_notifier **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(consumer);
    return guard([&]() -> bips_status {
        *out = new bips_notifier{bips::Notifier(consumer->consumer)};
        return BIPS_OK;
    });
}

int bips_notifier_fd(const bips_notifier *notifier) noexcept {
    return notifier ? notifier->notifier.fd() : -1;
}

bips_status bips_notifier_arm(bips_notifier *notifier) noexcept {
    BIPS_NOT_NULL(notifier);
    return guard([&]() -> bips_status {
        notifier->notifier.arm();
        return BIPS_OK;
    });
}

void bips_notifier_disarm(bips_notifier *notifier) noexcept {
    if (notifier)
        notifier->notifier.disarm();
}

void bips_notifier_clear(bips_notifier *notifier) noexcept {
    if (notifier)
        notifier->notifier.clear();
}

void bips_notifier_free(bips_notifier *notifier) noexcept { delete notifier; }

const void *bips_frame_data(const bips_frame *frame) noexcept {
    return frame ? frame->frame.data() : nullptr;
}

size_t bips_frame_nbytes(const bips_frame *frame) noexcept {
    return frame ? frame->frame.nbytes() : 0;
}

uint64_t bips_frame_seq(const bips_frame *frame) noexcept { return frame ? frame->frame.seq() : 0; }

int64_t bips_frame_timestamp_ns(const bips_frame *frame) noexcept {
    return frame ? frame->frame.timestamp_ns() : 0;
}

size_t bips_frame_ndim(const bips_frame *frame) noexcept { return frame ? frame->frame.ndim() : 0; }

const int64_t *bips_frame_shape(const bips_frame *frame) noexcept {
    return frame ? frame->frame.dims() : nullptr;
}

bips_dtype bips_frame_dtype(const bips_frame *frame) noexcept {
    return frame ? dtype_to_c(frame->frame.dtype()) : BIPS_DTYPE_INVALID;
}

const void *bips_frame_meta(const bips_frame *frame) noexcept {
    return frame ? frame->frame.meta_data() : nullptr;
}

size_t bips_frame_meta_size(const bips_frame *frame) noexcept {
    return frame ? frame->frame.meta_size() : 0;
}

int bips_frame_intact(const bips_frame *frame) noexcept {
    return frame && frame->frame.intact() ? 1 : 0;
}

void bips_frame_release(bips_frame *frame) noexcept { delete frame; }

bips_status bips_list_pools(bips_pool_list **out) noexcept {
    BIPS_OUT(out);
    return guard([&]() -> bips_status {
        *out = make(bips_pool_list{bips::list_pools()});
        return BIPS_OK;
    });
}

bips_status bips_get_pool_info(const char *name, bips_pool_list **out) noexcept {
    BIPS_OUT(out);
    BIPS_NOT_NULL(name);
    return guard([&]() -> bips_status {
        std::vector<bips::PoolInfo> one;
        one.push_back(bips::pool_info(name));
        *out = make(bips_pool_list{std::move(one)});
        return BIPS_OK;
    });
}

size_t bips_pool_list_size(const bips_pool_list *list) noexcept {
    return list ? list->pools.size() : 0;
}

bips_status bips_pool_list_get(const bips_pool_list *list, size_t index,
                               bips_pool_info *out) noexcept {
    BIPS_NOT_NULL(list);
    BIPS_NOT_NULL(out);
    if (index >= list->pools.size())
        return fail_in(BIPS_ERR_INVALID_ARGUMENT, __func__, "index out of range");
    const bips::PoolInfo &p = list->pools[index];
    *out = bips_pool_info{};
    out->name = p.name.c_str();
    out->error = p.error.c_str();
    out->producer_alive = p.producer_alive ? 1 : 0;
    out->closed = p.closed ? 1 : 0;
    out->layout_version = p.layout_version;
    out->capacity = p.capacity;
    out->buffer_size = p.buffer_size;
    out->meta_size = p.meta_size;
    out->policy = static_cast<bips_policy>(p.policy);
    out->mode = static_cast<std::uint32_t>(p.mode);
    out->owner = static_cast<std::uint32_t>(p.owner);
    out->max_consumers = p.max_consumers;
    out->consumers = p.consumers;
    out->free = p.free;
    out->published = p.published;
    out->dropped = p.dropped;
    out->last_publish_ns = p.last_publish_ns;
    out->fps = p.fps;
    out->acquire_waits = p.acquire_waits;
    out->acquire_wait_ns = p.acquire_wait_ns;
    // The core bounds a pool's shape by MAX_DIMS; the copy is bounded again all the same.
    const std::size_t ndim = p.shape.size() < BIPS_MAX_DIMS ? p.shape.size() : BIPS_MAX_DIMS;
    out->ndim = static_cast<std::uint32_t>(ndim);
    std::copy(p.shape.begin(), p.shape.begin() + static_cast<std::ptrdiff_t>(ndim), out->shape);
    out->dtype = dtype_to_c(p.dtype);
    out->producer_pid = p.producer_pid;
    out->created_ns = p.created_ns;
    out->file_size = p.file_size;
    out->slot_count = p.slots.size();
    return BIPS_OK;
}

bips_status bips_pool_list_get_slot(const bips_pool_list *list, size_t index, size_t slot,
                                    bips_slot_info *out) noexcept {
    BIPS_NOT_NULL(list);
    BIPS_NOT_NULL(out);
    if (index >= list->pools.size())
        return fail_in(BIPS_ERR_INVALID_ARGUMENT, __func__, "index out of range");
    const auto &slots = list->pools[index].slots;
    if (slot >= slots.size())
        return fail_in(BIPS_ERR_INVALID_ARGUMENT, __func__, "slot out of range");
    const bips::SlotInfo &s = slots[slot];
    *out = bips_slot_info{};
    out->slot = s.slot;
    out->alive = s.alive ? 1 : 0;
    out->pid = s.pid;
    out->latest = s.latest ? 1 : 0;
    out->received = s.received;
    out->dropped = s.dropped;
    out->skipped = s.skipped;
    out->queued = s.queued;
    out->held = s.held;
    out->attached_ns = s.attached_ns;
    out->last_seq = s.last_seq;
    out->last_receive_ns = s.last_receive_ns;
    return BIPS_OK;
}

void bips_pool_list_free(bips_pool_list *list) noexcept { delete list; }

} // extern "C"
