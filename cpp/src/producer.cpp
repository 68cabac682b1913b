// SPDX-License-Identifier: Apache-2.0
#include "interrupt.hpp"
#include "producer_core.hpp"

#include "cuda/device_memory.hpp"
#include "cuda/stream_task.hpp"
#include "signaler.hpp"

#include <bips/errors.hpp>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <thread>

namespace bips {
namespace detail {

namespace {
// How long close() waits for frames still queued behind GPU work (see publish()).
constexpr Duration CLOSE_DRAIN = std::chrono::seconds(2);
// How often a producer looks for dead consumers.
constexpr std::int64_t SWEEP_INTERVAL_NS = 100'000'000;
// Pools up to this size (all buffers together) fit in a last-level cache with room to spare and
// hand out their buffers round-robin, the order consumers guess the next frame's buffer from.
// Larger ones hand out the lowest free buffer first: round-robin would write every buffer in
// turn, each cold in cache by the time it comes back (8 x 6 MB at 1080p); lowest-first only
// uses as many buffers as are in flight, and the one it hands out was written a frame or two ago.
constexpr std::uint64_t ROUND_ROBIN_MAX_BYTES = 8u << 20;
} // namespace

ProducerCore::ProducerCore(const std::string &name, const PoolOptions &options)
    : m_seg(Segment::create(name, options)), m_spin(options.adaptive_spin) {
    auto cap = m_seg->params().capacity;
    m_owned.reset(new std::atomic<std::uint8_t>[cap]);
    m_pins.reset(new std::atomic<std::uint32_t>[cap]);
    m_format.reset(new Format[cap]);
    m_seq.reset(new std::atomic<std::uint64_t>[cap]);
    for (std::uint32_t i = 0; i < cap; ++i) {
        m_owned[i].store(0, std::memory_order_relaxed);
        m_pins[i].store(0, std::memory_order_relaxed);
        m_seq[i].store(0, std::memory_order_relaxed);
    }
    m_last_sweep_ns.store(posix::coarse_ns(), std::memory_order_relaxed);
    const Params &p = params();
    m_default_nbytes =
        p.ndim ? frame_bytes(p.shape, p.ndim, p.dtype, p.buffer_size).value_or(0) : p.buffer_size;
    m_round_robin = static_cast<std::uint64_t>(cap) * p.buffer_size <= ROUND_ROBIN_MAX_BYTES;
}

ProducerCore::~ProducerCore() { close(); }

bool ProducerCore::claim_free(std::uint32_t &index) noexcept {
    const auto cap = params().capacity;
    // Round-robin starts after the last buffer taken: in steady state the oldest one comes back
    // first, so the first look usually hits and we touch one contended cache line, not all.
    // Lowest-first keeps as few buffers in use as are in flight (see m_round_robin).
    const std::uint32_t start = m_round_robin ? m_cursor.load(std::memory_order_relaxed) : 0;
    for (std::uint32_t k = 0, i = start; k < cap; ++k, i = i + 1 == cap ? 0 : i + 1) {
        if (m_owned[i].load(std::memory_order_relaxed) != 0 ||
            m_pins[i].load(std::memory_order_relaxed) != 0 ||
            m_seg->state(i).load(std::memory_order_seq_cst) != 0)
            continue;
        if (m_owned[i].exchange(1, std::memory_order_acq_rel) != 0)
            continue;
        // Re-check under our claim: a pin cannot appear on an unowned buffer, the state can
        // only have gone to 0 in between.
        if (m_pins[i].load(std::memory_order_acquire) == 0 &&
            m_seg->state(i).load(std::memory_order_acquire) == 0) {
            index = i;
            if (m_round_robin)
                m_cursor.store(i + 1 == cap ? 0 : i + 1, std::memory_order_relaxed);
            return true;
        }
        m_owned[i].store(0, std::memory_order_release);
    }
    return false;
}

bool ProducerCore::reclaim_oldest(std::uint32_t &index) noexcept {
    const auto cap = params().capacity;
    const std::uint64_t valid = m_seg->valid_slots(); // a stray held bit holds nothing back
    for (int attempt = 0; attempt < 4; ++attempt) {
        std::uint32_t best = cap;
        std::uint64_t best_seq = UINT64_MAX;
        for (std::uint32_t i = 0; i < cap; ++i) {
            if (m_owned[i].load(std::memory_order_relaxed) != 0 ||
                m_pins[i].load(std::memory_order_relaxed) != 0)
                continue;
            std::uint64_t st = m_seg->state(i).load(std::memory_order_acquire);
            if (held_mask(st & valid) != 0)
                continue;
            std::uint64_t s = m_seq[i].load(std::memory_order_relaxed);
            if (s < best_seq) {
                best_seq = s;
                best = i;
            }
        }
        if (best == cap)
            return false;
        if (m_owned[best].exchange(1, std::memory_order_acq_rel) != 0)
            continue;
        auto &state = m_seg->state(best);
        std::uint64_t st = state.load(std::memory_order_acquire);
        while (held_mask(st & valid) == 0 && m_pins[best].load(std::memory_order_acquire) == 0) {
            if (state.compare_exchange_weak(st, 0, std::memory_order_seq_cst)) {
                std::uint32_t q = queued_mask(st);
                if (q != 0) {
                    for (std::uint32_t s = 0; s < params().max_consumers; ++s)
                        if (q & (1u << s))
                            m_seg->slot(s)->dropped.fetch_add(1, std::memory_order_relaxed);
                    const auto dropped = m_dropped.fetch_add(1, std::memory_order_relaxed) + 1;
                    m_seg->header()->dropped.store(dropped, std::memory_order_relaxed);
                }
                index = best;
                return true;
            }
        }
        m_owned[best].store(0, std::memory_order_release);
    }
    return false;
}

void ProducerCore::maybe_sweep(std::int64_t now_ns, bool force, bool may_wait) {
    std::int64_t last = m_last_sweep_ns.load(std::memory_order_relaxed);
    if (!force && now_ns - last < SWEEP_INTERVAL_NS)
        return;
    if (!m_last_sweep_ns.compare_exchange_strong(last, now_ns, std::memory_order_relaxed))
        return; // another thread is sweeping
    // A peer may have zeroed or scribbled the headers (truncate + re-extend): new consumers
    // must still be able to attach.
    m_seg->restore_headers();
    // try_acquire() never blocks: one attempt at the control lock, the next sweep is 100 ms away.
    m_seg->sweep_dead(may_wait ? std::chrono::milliseconds(5) : Duration{0});
}

std::int32_t ProducerCore::wake_batch() const noexcept {
    const auto cap = params().capacity;
    std::int32_t coming = 0;
    for (std::uint32_t i = 0; i < cap; ++i) {
        std::uint64_t st = m_seg->state(i).load(std::memory_order_relaxed);
        coming += st != 0 && held_mask(st) == 0;
    }
    return std::max<std::int32_t>(
        1, std::min<std::int32_t>(coming, static_cast<std::int32_t>(cap / 2)));
}

Buffer ProducerCore::make_buffer(std::uint32_t index) {
    if (m_seg->lost()) {
        // The SIGBUS guard ran while we claimed: report it rather than hand out zero pages.
        m_owned[index].store(0, std::memory_order_release);
        m_seg->check_not_lost();
    }
    const Params &p = params();
    // Before anything is written into the buffer: a consumer that still reads it (its bits
    // cleared by a peer) sees Frame::intact() turn false.
    m_seg->desc(index)->seq.store(WRITING_SEQ, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    // Every acquisition starts from the pool's default format (validated at creation).
    Format &f = m_format[index];
    f.ndim = p.ndim;
    f.dims = p.shape;
    f.dtype = p.dtype;
    f.nbytes = m_default_nbytes;
    Buffer b;
    b.m_core = shared_from_this();
    b.m_index = index;
    b.m_data = m_seg->data(index);
    return b;
}

std::optional<Buffer> ProducerCore::acquire(Clock::time_point deadline, bool wait) {
    m_seg->check_not_inherited();
    if (closed())
        throw InvalidArgument("producer of pool '" + m_seg->name() + "' is closed");
    m_seg->check_not_lost();
    ControlHeader *c = m_seg->ctl();
    const bool drop = params().policy == Policy::drop_oldest;
    std::uint32_t idx = 0;
    // The sweep's 100 ms interval needs no precise clock: the coarse one costs no time counter.
    maybe_sweep(posix::coarse_ns(), false, wait);
    auto claim = [&] { return claim_free(idx) || (drop && reclaim_oldest(idx)); };
    if (claim())
        return make_buffer(idx);
    if (!wait)
        return std::nullopt;
    const std::int64_t start_ns = posix::monotonic_ns();
    // Counted once per call that had to wait, whatever its outcome.
    struct WaitStats {
        ProducerCore *core;
        std::int64_t start_ns;
        ~WaitStats() {
            PoolHeader *h = core->m_seg->header();
            h->acquire_waits.store(core->m_acquire_waits.fetch_add(1, std::memory_order_relaxed) +
                                       1,
                                   std::memory_order_relaxed);
            const auto ns = static_cast<std::uint64_t>(
                std::max<std::int64_t>(0, posix::monotonic_ns() - start_ns));
            h->acquire_wait_ns.store(
                core->m_acquire_wait_ns.fetch_add(ns, std::memory_order_relaxed) + ns,
                std::memory_order_relaxed);
        }
    } wait_stats{this, start_ns};
    if (const std::int64_t spin_ns = m_spin.budget_ns(); spin_ns > 0 && Clock::now() < deadline) {
        // Watch the buffer that usually comes back first (the oldest one handed out).
        auto hint = [&] {
            const std::uint32_t i = m_cursor.load(std::memory_order_relaxed);
            return m_seg->state(i).load(std::memory_order_relaxed) == 0;
        };
        const auto left =
            std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - Clock::now());
        if (spin_until(start_ns + std::min<std::int64_t>(spin_ns, left.count()), hint, claim)) {
            m_spin.spun(posix::monotonic_ns() - start_ns);
            return make_buffer(idx);
        }
        if (spin_ns <= left.count())
            m_spin.missed();
    }
    bool slept = false;
    for (;;) {
        if (slept && claim()) {
            m_spin.slept(posix::monotonic_ns() - start_ns);
            return make_buffer(idx);
        }
        maybe_sweep(posix::coarse_ns(), false, true);
        auto now = Clock::now();
        if (now >= deadline)
            return std::nullopt;
        m_seg->check_not_lost();
        std::uint32_t seen = c->free_futex.load(std::memory_order_seq_cst);
        // Ask to be woken after several frees when several buffers are on their way back (only
        // queued, not held): consumers then wake us once per batch, not once per frame. The
        // slice bound below keeps this from ever stalling us for long.
        c->free_credit.store(wake_batch(), std::memory_order_seq_cst);
        c->producer_sleeping.fetch_add(1, std::memory_order_seq_cst);
        if (claim_free(idx) || (drop && reclaim_oldest(idx))) {
            c->producer_sleeping.fetch_sub(1, std::memory_order_seq_cst);
            return make_buffer(idx);
        }
        auto slice = interruptible(std::min<Duration>(deadline - now, MAX_SLEEP));
        posix::futex_wait(&c->free_futex, seen, slice);
        slept = true;
        c->producer_sleeping.fetch_sub(1, std::memory_order_seq_cst);
        if (closed())
            throw InvalidArgument("producer of pool '" + m_seg->name() + "' is closed");
        check_interrupt("Producer::acquire", m_seg->name());
    }
}

void ProducerCore::publish(Buffer &buf, std::int64_t timestamp_ns, const void *meta,
                           std::size_t meta_len, CudaStream stream) {
    const std::int64_t now_ns = prepare(buf, timestamp_ns, meta, meta_len);
    if (!params().device.is_cuda()) {
        commit(buf, now_ns);
        return;
    }
    // A GPU pool: the frame becomes visible once the work queued on `stream` (the producer's
    // kernels writing it) has finished, without blocking this thread. The buffer stays ours
    // meanwhile; close() waits a while for such frames, and gives back what is still waiting.
    struct Pending {
        std::shared_ptr<ProducerCore> core;
        Buffer buf;
    };
    auto pending = std::make_shared<Pending>(Pending{shared_from_this(), std::move(buf)});
    Pending *raw = pending.get();
    m_pending_publishes.fetch_add(1, std::memory_order_acq_rel);
    try {
        cuda::run_after(stream, params().device.index,
                        cuda::StreamTask{[raw]() noexcept {
                                             ProducerCore &core = *raw->core;
                                             try {
                                                 if (!core.closed())
                                                     core.commit(raw->buf, posix::monotonic_ns());
                                             } catch (...) {
                                                 // Lost meanwhile: the buffer goes back.
                                             }
                                             core.m_pending_publishes.fetch_sub(
                                                 1, std::memory_order_acq_rel);
                                         },
                                         std::move(pending)});
    } catch (...) {
        m_pending_publishes.fetch_sub(1, std::memory_order_acq_rel);
        throw;
    }
}

std::int64_t ProducerCore::prepare(Buffer &buf, std::int64_t timestamp_ns, const void *meta,
                                   std::size_t meta_len) {
    if (!buf)
        throw InvalidArgument(
            "publish() needs an acquired buffer (this one is empty or already published)");
    if (buf.m_core.get() != this)
        throw InvalidArgument("this buffer belongs to another producer");
    m_seg->check_not_inherited();
    if (closed())
        throw InvalidArgument("producer of pool '" + m_seg->name() + "' is closed");
    const Params &p = params();
    if (meta_len > p.meta_size)
        throw InvalidArgument("meta is " + std::to_string(meta_len) + " bytes; the pool allows " +
                              std::to_string(p.meta_size) + " (meta_size)");
    m_seg->check_not_lost();
    const std::uint32_t idx = buf.m_index;
    FrameDesc *d = m_seg->desc(idx);
    if (meta_len)
        std::memmove(m_seg->meta(idx), meta, meta_len); // meta may point into the area itself
    // The descriptor is written from this process's own copy of the format.
    const Format &f = m_format[idx];
    d->meta_len = static_cast<std::uint32_t>(meta_len);
    d->ndim = f.ndim;
    d->dtype_code = f.dtype.code;
    d->dtype_bits = f.dtype.bits;
    for (std::uint32_t k = 0; k < f.ndim; ++k) // consumers read ndim dimensions, no more
        d->shape[k] = f.dims[k];
    d->nbytes = f.nbytes;
    const std::int64_t now_ns = posix::monotonic_ns();
    d->timestamp_ns = timestamp_ns >= 0 ? timestamp_ns : now_ns;
    return now_ns;
}

void ProducerCore::commit(Buffer &buf, std::int64_t now_ns) {
    m_seg->check_not_lost();
    const std::uint32_t idx = buf.m_index;
    FrameDesc *d = m_seg->desc(idx);
    // Threads publishing at once must make frames visible in seq order: consumers rely on it.
    std::lock_guard<std::mutex> order(m_publish_mutex);
    const std::uint64_t seq = m_next_seq.fetch_add(1, std::memory_order_relaxed);
    d->seq.store(seq, std::memory_order_relaxed);
    m_seq[idx].store(seq, std::memory_order_relaxed);
    m_seg->ring(seq)->store(idx, std::memory_order_relaxed);
    // Counted before we look who is attached: a consumer that reads `published` after it
    // attached then gets every frame from that count on (the frame being published either
    // counted already, or reaches it). Under the publish mutex: no locked increment needed.
    const std::uint64_t published = m_published.load(std::memory_order_relaxed) + 1;
    m_published.store(published, std::memory_order_relaxed);
    m_seg->header()->published.store(published, std::memory_order_seq_cst);

    ControlHeader *c = m_seg->ctl();
    // Only slots that can exist: a stray bit from a crashed or hostile writer must not make a
    // buffer wait for a consumer that is not there.
    const std::uint64_t valid = queued_mask(m_seg->valid_slots());
    const std::uint64_t mask = queued_mask(c->active.load(std::memory_order_seq_cst)) & valid;
    std::uint64_t delivered = mask;
    auto &state = m_seg->state(idx);
    if (mask != 0) {
        state.store(mask, std::memory_order_seq_cst);
        // A consumer that detached between the two loads may already have swept this buffer;
        // clear its bit ourselves so it is not left queued for nobody.
        const std::uint64_t gone = mask & ~queued_mask(c->active.load(std::memory_order_seq_cst));
        if (gone != 0)
            delivered = state.fetch_and(~gone, std::memory_order_seq_cst) & ~gone;
    }
    // Wake only slots that announced they sleep: a full queue costs no syscall. The waker
    // clears their bits, so a sleeper gets one wake-up however many frames come before it runs.
    // First thing after the frame is visible: the bookkeeping below can wait, a sleeper cannot.
    const std::uint64_t asleep = c->sleepers.load(std::memory_order_seq_cst) & mask;
    if (asleep != 0 && (c->sleepers.fetch_and(~asleep, std::memory_order_seq_cst) & asleep) != 0)
        m_seg->wake_consumers();
    buf.m_core.reset();
    buf.m_data = nullptr;
    m_owned[idx].store(0, std::memory_order_release);
    if (delivered == 0)
        m_seg->wake_producer(); // free again at once: another thread may wait in acquire()
    note_publish(now_ns, published);
}

// Keeps what `bips list`/`top` show: last publish time and the rate over the last full second.
// Called under the publish mutex, so one thread at a time updates the window.
// The window lives in this process; the segment only receives the result.
void ProducerCore::note_publish(std::int64_t now_ns, std::uint64_t published) noexcept {
    PoolHeader *h = m_seg->header();
    h->last_publish_ns.store(now_ns, std::memory_order_relaxed);
    const std::int64_t start = m_rate_start_ns;
    if (start != 0 && now_ns - start < 1'000'000'000)
        return;
    const std::uint64_t before = m_rate_start_count;
    m_rate_start_count = published;
    m_rate_start_ns = now_ns;
    if (start != 0 && now_ns > start)
        h->rate_mfps.store((published - before) * 1'000'000'000'000ull /
                               static_cast<std::uint64_t>(now_ns - start),
                           std::memory_order_relaxed);
}

void ProducerCore::give_back(std::uint32_t index) noexcept {
    m_owned[index].store(0, std::memory_order_seq_cst);
    if (!m_seg->inherited())
        m_seg->wake_producer();
}

void ProducerCore::unpin(std::uint32_t index) noexcept {
    if (m_pins[index].fetch_sub(1, std::memory_order_seq_cst) == 1)
        m_seg->wake_producer();
}

void ProducerCore::close() noexcept {
    if (m_seg->inherited()) {
        m_closed.store(true, std::memory_order_release);
        return; // the parent's producer: closing it is the parent's business
    }
    // GPU pools: frames published on a stream whose work is still running become visible when
    // it ends. End of stream comes after them, as after every frame published before close():
    // wait for them, for a bounded time (a wedged GPU must not wedge close()).
    const auto drain_until = Clock::now() + CLOSE_DRAIN;
    while (m_pending_publishes.load(std::memory_order_acquire) != 0 && Clock::now() < drain_until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (m_closed.exchange(true, std::memory_order_acq_rel))
        return;
    m_seg->header()->closed.store(1, std::memory_order_seq_cst);
    m_seg->stop_serving(); // a GPU pool's memory: no new consumers
    m_seg->wake_consumers();
    ControlHeader *c = m_seg->ctl();
    c->free_futex.fetch_add(1, std::memory_order_seq_cst); // wake our own threads in acquire()
    posix::futex_wake(&c->free_futex, INT_MAX);
    m_seg->unlink_if_mine();
    posix::ofd_unlock(m_seg->fd(), LOCK_PRODUCER);
}

ProducerStats ProducerCore::stats() const {
    ProducerStats s;
    s.published = m_published.load(std::memory_order_relaxed);
    s.dropped = m_dropped.load(std::memory_order_relaxed);
    s.capacity = params().capacity;
    std::uint32_t free = 0;
    for (std::uint32_t i = 0; i < s.capacity; ++i)
        free += !owns(i) && m_pins[i].load(std::memory_order_relaxed) == 0 &&
                m_seg->state(i).load(std::memory_order_acquire) == 0;
    s.free = free;
    s.in_flight = s.capacity - free;
    std::uint64_t active =
        m_seg->ctl()->active.load(std::memory_order_acquire) & m_seg->valid_slots();
    s.consumers = static_cast<std::uint32_t>(__builtin_popcountll(queued_mask(active)));
    s.acquire_waits = m_acquire_waits.load(std::memory_order_relaxed);
    s.acquire_wait_ns = m_acquire_wait_ns.load(std::memory_order_relaxed);
    s.spins = m_spin.spins();
    s.sleeps = m_spin.sleeps();
    return s;
}

} // namespace detail

BufferPin::BufferPin(BufferPin &&o) noexcept : m_core(std::move(o.m_core)), m_index(o.m_index) {}

BufferPin &BufferPin::operator=(BufferPin &&o) noexcept {
    if (this != &o) {
        reset();
        m_core = std::move(o.m_core);
        m_index = o.m_index;
    }
    return *this;
}

BufferPin::~BufferPin() { reset(); }

void BufferPin::reset() noexcept {
    if (m_core) {
        m_core->unpin(m_index);
        m_core.reset();
    }
}

Buffer::Buffer(Buffer &&o) noexcept
    : m_core(std::move(o.m_core)), m_index(o.m_index), m_data(o.m_data) {
    o.m_data = nullptr;
}

Buffer &Buffer::operator=(Buffer &&o) noexcept {
    if (this != &o) {
        give_back();
        m_core = std::move(o.m_core);
        m_index = o.m_index;
        m_data = o.m_data;
        o.m_data = nullptr;
    }
    return *this;
}

Buffer::~Buffer() { give_back(); }

void Buffer::give_back() noexcept {
    if (m_core) {
        m_core->give_back(m_index);
        m_core.reset();
        m_data = nullptr;
    }
}

std::size_t Buffer::capacity() const noexcept { return m_core ? m_core->params().buffer_size : 0; }

Device Buffer::device() const noexcept { return m_core ? m_core->params().device : Device{}; }

void Buffer::copy_from(const void *src, std::size_t n, CudaStream stream) {
    if (!m_core)
        throw InvalidArgument("copy_from() on an empty buffer");
    if (n > capacity())
        throw InvalidArgument("copy_from(): " + std::to_string(n) + " bytes do not fit the " +
                              std::to_string(capacity()) + "-byte buffer");
    const Device dev = device();
    if (dev.is_cuda())
        detail::cuda::copy_to_device(dev.index, m_data, src, n, stream);
    else if (n)
        std::memcpy(m_data, src, n);
}

// The format lives in the producer's own memory: nothing a consumer writes can change it.
std::size_t Buffer::ndim() const noexcept { return m_core ? m_core->format(m_index).ndim : 0; }

const std::int64_t *Buffer::dims() const noexcept {
    return m_core ? m_core->format(m_index).dims : nullptr;
}

Shape Buffer::shape() const { return Shape(dims(), dims() + ndim()); }

DType Buffer::dtype() const noexcept { return m_core ? m_core->format(m_index).dtype : DType{}; }

std::size_t Buffer::nbytes() const noexcept { return m_core ? m_core->format(m_index).nbytes : 0; }

void Buffer::set_format(const Shape &shape, DType dtype) {
    set_format(shape.data(), shape.size(), dtype);
}

void Buffer::set_format(const std::int64_t *dims, std::size_t ndim, DType dtype) {
    if (!m_core)
        throw InvalidArgument("buffer is empty or already published");
    if (!dtype.valid())
        throw InvalidArgument("invalid dtype");
    if (ndim > MAX_DIMS)
        throw InvalidArgument("shape has " + std::to_string(ndim) + " dimensions; at most " +
                              std::to_string(MAX_DIMS));
    const std::size_t cap = capacity();
    for (std::size_t k = 0; k < ndim; ++k)
        if (dims[k] < 0)
            throw InvalidArgument("shape dimensions must be >= 0");
    const auto n = frame_bytes(dims, ndim, dtype, cap);
    if (!n)
        throw InvalidArgument("a frame of that shape and dtype needs more than the " +
                              std::to_string(cap) + " bytes of a buffer");
    auto &f = m_core->format(m_index);
    f.ndim = static_cast<std::uint32_t>(ndim);
    std::copy(dims, dims + ndim, f.shape);
    f.dims = f.shape;
    f.dtype = dtype;
    f.nbytes = ndim ? *n : cap;
}

void Buffer::set_nbytes(std::size_t nbytes) {
    if (!m_core)
        throw InvalidArgument("buffer is empty or already published");
    if (nbytes > capacity())
        throw InvalidArgument("nbytes " + std::to_string(nbytes) + " exceeds the buffer size " +
                              std::to_string(capacity()));
    auto &f = m_core->format(m_index);
    f.nbytes = nbytes;
    f.ndim = 1; // a variable-size payload is a flat byte frame
    f.shape[0] = static_cast<std::int64_t>(nbytes);
    f.dims = f.shape;
    f.dtype = UINT8;
}

std::byte *Buffer::meta() const noexcept {
    return m_core ? m_core->segment().meta(m_index) : nullptr;
}

std::size_t Buffer::meta_capacity() const noexcept {
    return m_core ? m_core->params().meta_size : 0;
}

BufferPin Buffer::pin() const {
    if (!m_core)
        throw InvalidArgument("buffer is empty or already published");
    m_core->pin(m_index);
    BufferPin p;
    p.m_core = m_core;
    p.m_index = m_index;
    return p;
}

Producer::Producer(const std::string &name, const PoolOptions &options)
    : m_core(std::make_shared<detail::ProducerCore>(name, options)) {}
Producer::Producer(Producer &&) noexcept = default;
Producer &Producer::operator=(Producer &&o) noexcept {
    if (this != &o) {
        close();
        m_core = std::move(o.m_core);
    }
    return *this;
}
Producer::~Producer() { close(); }

static detail::ProducerCore &core_of(const std::shared_ptr<detail::ProducerCore> &c) {
    if (!c)
        throw InvalidArgument("producer was moved from");
    return *c;
}

Buffer Producer::acquire(Duration timeout) {
    auto b = core_of(m_core).acquire(Clock::now() + timeout, true);
    if (!b)
        throw Timeout("no free buffer in pool '" + name() + "' within the timeout");
    return std::move(*b);
}

std::optional<Buffer> Producer::try_acquire() {
    return core_of(m_core).acquire(Clock::time_point{}, false); // no deadline: never waits
}

std::optional<Buffer> Producer::try_acquire_for(Duration timeout) {
    return core_of(m_core).acquire(Clock::now() + timeout, true);
}

void Producer::publish(Buffer &&buffer, std::int64_t timestamp_ns, const void *meta,
                       std::size_t meta_len, CudaStream stream) {
    Buffer b = std::move(buffer);
    core_of(m_core).publish(b, timestamp_ns, meta, meta_len, stream);
}

Device Producer::device() const noexcept { return m_core ? m_core->params().device : Device{}; }

void Producer::close() noexcept {
    if (m_core)
        m_core->close();
}

bool Producer::closed() const noexcept { return !m_core || m_core->closed(); }
ProducerStats Producer::stats() const { return core_of(m_core).stats(); }
// Accessors of a moved-from producer answer as for an empty pool rather than crash.
static const detail::Params &params_of(const std::shared_ptr<detail::ProducerCore> &c) noexcept {
    static const detail::Params none;
    return c ? c->params() : none;
}
const std::string &Producer::name() const noexcept {
    static const std::string none;
    return m_core ? m_core->segment().name() : none;
}
std::uint32_t Producer::capacity() const noexcept { return params_of(m_core).capacity; }
std::size_t Producer::buffer_size() const noexcept { return params_of(m_core).buffer_size; }
std::size_t Producer::meta_size() const noexcept { return params_of(m_core).meta_size; }
Policy Producer::policy() const noexcept { return params_of(m_core).policy; }
std::uint32_t Producer::max_consumers() const noexcept { return params_of(m_core).max_consumers; }
Shape Producer::shape() const {
    const auto &p = params_of(m_core);
    return Shape(p.shape, p.shape + p.ndim);
}
DType Producer::dtype() const noexcept { return params_of(m_core).dtype; }

} // namespace bips
