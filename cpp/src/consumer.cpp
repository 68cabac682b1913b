// SPDX-License-Identifier: Apache-2.0
#include "consumer_attach.hpp"
#include "interrupt.hpp"
#include "segment.hpp"
#include "signaler.hpp"

#include "cuda/device_memory.hpp"
#include "cuda/stream_task.hpp"

#include <bips/consumer.hpp>
#include <bips/errors.hpp>
#include <bips/pool.hpp>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace bips {
namespace detail {

namespace {
constexpr std::int64_t LIVENESS_INTERVAL_NS = 100'000'000;
constexpr Duration POLL_PAUSE = std::chrono::milliseconds(5);
} // namespace

/// One consumer slot in one segment. Frames keep it alive, so a Consumer can be closed (or
/// follow a new producer) while frames from this attachment are still in use.
class Attachment : public std::enable_shared_from_this<Attachment> {
public:
    Attachment(std::shared_ptr<Segment> seg, std::uint32_t slot, bool latest)
        : m_seg(std::move(seg)), m_slot(slot), m_latest(latest), m_instance(m_seg->instance_id()) {}

    static std::shared_ptr<Attachment> attach(std::shared_ptr<Segment> seg, bool latest) {
        const std::uint32_t slot = claim_slot(*seg, latest);
        return std::make_shared<Attachment>(std::move(seg), slot, latest);
    }

    ~Attachment() { release_slot(*m_seg, m_slot); }

    /// No new frames for this slot; queued ones go back, held ones stay until released.
    void stop_receiving() noexcept {
        if (m_seg->inherited())
            return;
        m_stopped.store(true, std::memory_order_seq_cst);
        ControlHeader *h = m_seg->ctl();
        const std::uint64_t qb = queued_bit(m_slot);
        h->active.fetch_and(~qb, std::memory_order_seq_cst);
        h->sleepers.fetch_and(~qb, std::memory_order_seq_cst);
        for (std::uint32_t i = 0; i < m_seg->params().capacity; ++i)
            m_seg->state(i).fetch_and(~qb, std::memory_order_seq_cst);
        m_seg->wake_producer();
    }

    bool try_take(Frame &out) {
        m_seg->check_not_inherited();
        if (m_seg->lost())
            return false; // producer_gone() says so; nothing here is worth reading
        const std::uint32_t cap = m_seg->params().capacity;
        const std::uint64_t qb = queued_bit(m_slot);
        if (!m_latest) {
            // Fast path: the buffer after the last one usually carries the next seq (the
            // producer hands buffers out in turn), else the ring says which; check, then take.
            // A right guess spares the ring's cache line, which the producer writes per frame.
            const std::uint64_t next = m_next.load(std::memory_order_relaxed);
            auto carries_next = [&](std::uint32_t i) {
                return i < cap && (m_seg->state(i).load(std::memory_order_acquire) & qb) &&
                       m_seg->desc(i)->seq.load(std::memory_order_relaxed) == next;
            };
            std::uint32_t i = m_guess.load(std::memory_order_relaxed);
            if (!carries_next(i))
                i = m_seg->ring(next)->load(std::memory_order_relaxed);
            if (carries_next(i) && take(i)) {
                if (m_seg->desc(i)->seq.load(std::memory_order_acquire) == next) {
                    fill(out, i);
                    return !lost_frame(out);
                }
                put_back(i);
            }
        }
        for (int round = 0; round < 1000; ++round) {
            std::uint32_t best = cap;
            std::uint64_t best_seq = 0;
            bool bogus = false;
            const bool found = scan(best, best_seq, &bogus);
            if (bogus)
                purge_bogus();
            if (!found)
                return false;
            if (!m_latest) {
                // One scan is not a snapshot: a frame published just before `best_seq` may sit in
                // a buffer we looked at too early. Having seen best_seq, a second scan cannot
                // miss it (the producer published it first), so scan until two scans agree.
                // Bounded: a writer that keeps flipping bits must not trap us here.
                std::uint32_t again = cap;
                std::uint64_t again_seq = 0;
                bool agreed = false;
                for (int k = 0; k < 64 && scan(again, again_seq); ++k) {
                    if (again == best && again_seq == best_seq) {
                        agreed = true;
                        break;
                    }
                    best = again;
                    best_seq = again_seq;
                }
                if (!agreed)
                    continue; // taken back meanwhile, or the state keeps changing
            }
            if (!take(best))
                continue; // taken back by a drop_oldest producer meanwhile
            if (m_seg->desc(best)->seq.load(std::memory_order_acquire) != best_seq) {
                put_back(best); // reused and republished between our scan and our claim
                continue;
            }
            if (m_latest)
                skip_older_than(best, best_seq);
            fill(out, best);
            return !lost_frame(out);
        }
        return false;
    }

    /// Sets this slot's bits again if a peer cleared them (we hold the slot lock, so the slot is
    /// ours): without them the producer would stop queueing frames for us.
    void reassert() noexcept {
        if (m_stopped.load(std::memory_order_relaxed) || m_seg->inherited())
            return;
        ControlHeader *c = m_seg->ctl();
        const std::uint64_t qb = queued_bit(m_slot);
        if (!(c->attached.load(std::memory_order_relaxed) & qb))
            c->attached.fetch_or(qb, std::memory_order_seq_cst);
        if (!(c->active.load(std::memory_order_relaxed) & qb) &&
            !m_stopped.load(std::memory_order_seq_cst))
            c->active.fetch_or(qb, std::memory_order_seq_cst);
    }

    /// A cheap hint for spinning: the buffer expected next is queued for this slot.
    bool next_looks_queued() const noexcept {
        const std::uint32_t i = m_guess.load(std::memory_order_relaxed);
        return i < m_seg->params().capacity &&
               (m_seg->state(i).load(std::memory_order_relaxed) & queued_bit(m_slot));
    }

    /// True if a frame is queued for this slot (nothing is taken).
    bool any_queued() const noexcept {
        std::uint32_t best = 0;
        std::uint64_t best_seq = 0;
        return scan(best, best_seq);
    }

    void release(std::uint32_t index) noexcept {
        if (m_seg->inherited())
            return; // a frame the parent holds: the parent releases it
        std::uint64_t prev =
            m_seg->state(index).fetch_and(~held_bit(m_slot), std::memory_order_seq_cst);
        std::uint64_t now = prev & ~held_bit(m_slot);
        bool freed = m_seg->params().policy == Policy::block ? now == 0 : held_mask(now) == 0;
        if (freed)
            m_seg->buffer_freed();
    }

    // Once seen gone, gone for good (the lock is only looked at every 100 ms).
    bool producer_gone(bool check_lock) {
        if (m_gone.load(std::memory_order_relaxed))
            return true;
        if (m_seg->lost() || m_seg->header()->closed.load(std::memory_order_acquire) != 0 ||
            (check_lock && !m_seg->producer_alive())) {
            m_gone.store(true, std::memory_order_relaxed);
            return true;
        }
        return false;
    }

    void counts(std::uint32_t &queued, std::uint32_t &held) const noexcept {
        queued = held = 0;
        for (std::uint32_t i = 0; i < m_seg->params().capacity; ++i) {
            std::uint64_t st = m_seg->state(i).load(std::memory_order_relaxed);
            queued += (st & queued_bit(m_slot)) != 0;
            held += (st & held_bit(m_slot)) != 0;
        }
    }

    /// Announces that a thread is about to sleep in receive() (sets the slot's sleepers bit).
    void sleeping() noexcept {
        m_sleeping.fetch_add(1, std::memory_order_seq_cst);
        m_seg->ctl()->sleepers.fetch_or(queued_bit(m_slot), std::memory_order_seq_cst);
    }
    /// The thread woke up. The bit goes only with the last sleeper of this process, so that a
    /// thread waking late cannot hide a sibling that still sleeps from the producer.
    void awake() noexcept {
        if (m_sleeping.fetch_sub(1, std::memory_order_seq_cst) != 1)
            return;
        // The producer clears the bit when it wakes us: then a load spares taking the line
        // back from it.
        auto &sleepers = m_seg->ctl()->sleepers;
        if (sleepers.load(std::memory_order_seq_cst) & queued_bit(m_slot))
            sleepers.fetch_and(~queued_bit(m_slot), std::memory_order_seq_cst);
    }

    Segment &segment() const noexcept { return *m_seg; }
    std::uint32_t slot() const noexcept { return m_slot; }
    std::uint64_t instance() const noexcept { return m_instance; }

private:
    // The queued frame with the lowest seq (highest with latest=true); false if none.
    // A queued frame can only carry a seq the producer published after our last one: anything
    // else (a buffer the producer is writing, an old frame queued again) was queued by a peer
    // scribbling on the control file, and is never delivered.
    bool plausible(std::uint64_t seq) const noexcept {
        return seq != WRITING_SEQ && seq >= m_next.load(std::memory_order_relaxed);
    }

    // The queued frame with the lowest seq (highest with latest=true); false if none. Sets
    // *bogus when it saw a queued buffer that fails plausible().
    bool scan(std::uint32_t &best, std::uint64_t &best_seq, bool *bogus = nullptr) const noexcept {
        const std::uint32_t cap = m_seg->params().capacity;
        const std::uint64_t qb = queued_bit(m_slot);
        best = cap;
        for (std::uint32_t i = 0; i < cap; ++i) {
            if (!(m_seg->state(i).load(std::memory_order_acquire) & qb))
                continue;
            std::uint64_t s = m_seg->desc(i)->seq.load(std::memory_order_relaxed);
            if (!plausible(s)) {
                if (bogus)
                    *bogus = true;
                continue;
            }
            if (best == cap || (m_latest ? s > best_seq : s < best_seq)) {
                best = i;
                best_seq = s;
            }
        }
        return best != cap;
    }

    // Drops our queued bit from buffers whose seq is not plausible. Taken first, then checked
    // again while we hold it: the producer may have republished the buffer meanwhile.
    void purge_bogus() noexcept {
        const std::uint64_t qb = queued_bit(m_slot);
        for (std::uint32_t i = 0; i < m_seg->params().capacity; ++i) {
            if (!(m_seg->state(i).load(std::memory_order_acquire) & qb) ||
                plausible(m_seg->desc(i)->seq.load(std::memory_order_relaxed)) || !take(i))
                continue;
            if (plausible(m_seg->desc(i)->seq.load(std::memory_order_acquire)))
                put_back(i);
            else
                release(i);
        }
    }

    bool take(std::uint32_t i) noexcept {
        auto &state = m_seg->state(i);
        const std::uint64_t qb = queued_bit(m_slot), hb = held_bit(m_slot);
        std::uint64_t st = state.load(std::memory_order_relaxed);
        while (st & qb)
            if (state.compare_exchange_weak(st, (st & ~qb) | hb, std::memory_order_seq_cst))
                return true;
        return false;
    }

    void put_back(std::uint32_t i) noexcept {
        auto &state = m_seg->state(i);
        const std::uint64_t qb = queued_bit(m_slot), hb = held_bit(m_slot);
        std::uint64_t st = state.load(std::memory_order_relaxed);
        while (!state.compare_exchange_weak(st, (st & ~hb) | qb, std::memory_order_seq_cst)) {
        }
        // Racing stop_receiving(): it either swept after our CAS or we see it stopped here.
        if (m_stopped.load(std::memory_order_seq_cst) &&
            (state.fetch_and(~qb, std::memory_order_seq_cst) & ~qb) == 0)
            m_seg->buffer_freed();
    }

    // A frame read while a peer truncated the files holds zero pages, not what was published.
    bool lost_frame(Frame &out) noexcept {
        if (!m_seg->lost())
            return false;
        out.release();
        return true;
    }

    // latest=true: give back every queued frame older than the one we keep.
    void skip_older_than(std::uint32_t keep, std::uint64_t keep_seq) noexcept {
        const std::uint64_t qb = queued_bit(m_slot);
        for (std::uint32_t i = 0; i < m_seg->params().capacity; ++i) {
            if (i == keep || !(m_seg->state(i).load(std::memory_order_acquire) & qb))
                continue;
            if (!take(i))
                continue;
            // Held now, so seq is stable: newer arrivals stay queued.
            if (m_seg->desc(i)->seq.load(std::memory_order_acquire) < keep_seq) {
                release(i);
                m_seg->slot(m_slot)->skipped.fetch_add(1, std::memory_order_relaxed);
            } else {
                put_back(i);
            }
        }
    }

    // Copies and validates the descriptor: the segment is never trusted.
    void fill(Frame &out, std::uint32_t i) {
        const FrameDesc *d = m_seg->desc(i);
        const Params &p = m_seg->params();
        out.release();
        out.m_att = shared_from_this();
        out.m_index = i;
        out.m_data = m_seg->data(i);
        out.m_seq = d->seq.load(std::memory_order_relaxed);
        m_next.store(out.m_seq + 1, std::memory_order_relaxed);
        m_guess.store(i + 1 == p.capacity ? 0 : i + 1, std::memory_order_relaxed);
        out.m_timestamp_ns = d->timestamp_ns;
        out.m_nbytes = std::min<std::size_t>(d->nbytes, p.buffer_size);
        out.m_meta_len =
            static_cast<std::uint32_t>(std::min<std::size_t>(d->meta_len, p.meta_size));
        // One copy of the format, validated as a whole; never read again from the segment.
        DType dt{d->dtype_code, d->dtype_bits};
        const std::uint32_t nd = d->ndim;
        const bool ok = nd > 0 && nd <= MAX_DIMS;
        if (ok)
            for (std::uint32_t k = 0; k < nd; ++k)
                out.m_dims[k] = d->shape[k];
        if (ok && frame_bytes(out.m_dims, nd, dt, p.buffer_size)) {
            out.m_ndim = nd;
            out.m_dtype = dt;
        } else {
            out.m_ndim = 1;
            out.m_dims[0] = static_cast<std::int64_t>(out.m_nbytes);
            out.m_dtype = UINT8;
        }
        SlotDesc *sd = m_seg->slot(m_slot);
        sd->received.fetch_add(1, std::memory_order_relaxed);
        sd->last_seq_plus1.store(out.m_seq + 1, std::memory_order_relaxed);
        sd->last_receive_ns.store(posix::coarse_ns(), std::memory_order_relaxed);
    }

    std::shared_ptr<Segment> m_seg;
    std::uint32_t m_slot;
    bool m_latest;
    std::uint64_t m_instance;
    std::atomic<std::uint64_t> m_next{0};  // seq expected next (fast-path hint)
    std::atomic<std::uint32_t> m_guess{0}; // buffer expected to carry it (fast-path hint)
    std::atomic<bool> m_gone{false};
    std::atomic<bool> m_stopped{false};
    std::atomic<int> m_sleeping{0}; // threads of this process between announcing sleep and waking
};

} // namespace detail

Frame::Frame(Frame &&o) noexcept { *this = std::move(o); }

Frame &Frame::operator=(Frame &&o) noexcept {
    if (this != &o) {
        release();
        m_att = std::move(o.m_att);
        m_index = o.m_index;
        m_data = o.m_data;
        m_seq = o.m_seq;
        m_timestamp_ns = o.m_timestamp_ns;
        m_nbytes = o.m_nbytes;
        m_ndim = o.m_ndim;
        m_meta_len = o.m_meta_len;
        m_dtype = o.m_dtype;
        std::copy(o.m_dims, o.m_dims + MAX_DIMS, m_dims);
        m_stream = o.m_stream;
        o.m_data = nullptr;
    }
    return *this;
}

Frame::~Frame() { release(); }

void Frame::release() noexcept {
    if (!m_att)
        return;
    const detail::cuda::DeviceMemory *dev = m_att->segment().device_memory();
    if (!dev || m_att->segment().inherited()) {
        m_att->release(m_index);
    } else {
        // After the consumer's kernels: the producer must never overwrite what they still read.
        detail::Attachment *att = m_att.get();
        const std::uint32_t index = m_index;
        detail::cuda::run_after_noexcept(
            m_stream, dev->ordinal(),
            detail::cuda::StreamTask{[att, index]() noexcept { att->release(index); },
                                     std::move(m_att)});
    }
    m_att.reset();
    m_data = nullptr;
    m_stream = nullptr;
}

Device Frame::device() const noexcept {
    const detail::cuda::DeviceMemory *dev = m_att ? m_att->segment().device_memory() : nullptr;
    return dev ? Device{Device::cuda, dev->ordinal()} : Device{};
}

bool Frame::read_only_mapping() const noexcept {
    const detail::cuda::DeviceMemory *dev = m_att ? m_att->segment().device_memory() : nullptr;
    return !dev || dev->read_only();
}

void Frame::copy_to(void *dst) const {
    if (!m_att)
        throw InvalidArgument("copy_to() on a released frame");
    const detail::cuda::DeviceMemory *dev = m_att->segment().device_memory();
    if (dev)
        detail::cuda::copy_to_host(dev->ordinal(), dst, m_data, m_nbytes);
    else if (m_nbytes)
        std::memcpy(dst, m_data, m_nbytes);
}

bool Frame::intact() const noexcept {
    if (!m_att)
        return false;
    // Reads of the data come before the seq check (a seqlock reader); the producer marks the
    // descriptor before it writes into a buffer again (ProducerCore::make_buffer).
    std::atomic_thread_fence(std::memory_order_acquire);
    const detail::Segment &seg = m_att->segment();
    return !seg.lost() && seg.desc(m_index)->seq.load(std::memory_order_acquire) == m_seq;
}

const std::byte *Frame::meta_data() const noexcept {
    return m_att ? m_att->segment().meta(m_index) : nullptr;
}

std::string Frame::meta() const {
    const std::byte *p = meta_data();
    return p ? std::string(reinterpret_cast<const char *>(p), m_meta_len) : std::string();
}

struct Consumer::State {
    explicit State(const ConsumerOptions &o) : options(o), spin(o.adaptive_spin) {}
    std::string name;
    ConsumerOptions options;
    detail::SpinTuner spin; // how long receive() spins before it sleeps
    mutable std::mutex mutex;
    std::shared_ptr<detail::Attachment> att;
    std::atomic<bool> closed{false};
    std::atomic<std::int64_t> last_check_ns{0};
    std::uint64_t reconnects = 0;
    ConsumerStats past; // counters of earlier attachments (reconnect)

    std::optional<Frame> receive(Clock::time_point deadline, bool wait) {
        Frame f;
        if (!next(deadline, wait, &f))
            return std::nullopt;
        return f;
    }
    // Takes the next frame into *out, or with out == nullptr only waits until one is queued
    // or the stream ended. False when the deadline passed (or !wait and nothing is there).
    bool next(Clock::time_point deadline, bool wait, Frame *out);

    std::shared_ptr<detail::Attachment> current() const {
        std::lock_guard<std::mutex> lock(mutex);
        if (!att)
            throw InvalidArgument("consumer of pool '" + name + "' is closed");
        return att;
    }

    // One attempt to attach to a live pool; nullptr when there is none yet. `old_instance`
    // skips the segment we are leaving.
    std::shared_ptr<detail::Attachment> connect_once(std::uint64_t old_instance, bool &seen_dead,
                                                     detail::OpenStatus &status) {
        detail::NotThere why;
        auto seg = detail::open_live(name, options.owner, old_instance, why);
        seen_dead = why.producer_gone;
        status = why.status;
        return seg ? detail::Attachment::attach(std::move(seg), options.latest) : nullptr;
    }
};

std::unique_ptr<Consumer::State>
Consumer::attempt(const std::string &name, const ConsumerOptions &options, detail::NotThere &why) {
    validate_name(name);
    auto st = std::make_unique<State>(options);
    st->name = name;
    st->att = st->connect_once(0, why.producer_gone, why.status);
    if (!st->att)
        return nullptr;
    st->last_check_ns = posix::monotonic_ns();
    return st;
}

std::optional<Consumer> Consumer::try_open(const std::string &name,
                                           const ConsumerOptions &options) {
    detail::NotThere why;
    if (auto st = attempt(name, options, why))
        return Consumer(std::move(st));
    return std::nullopt;
}

Consumer::Consumer(std::unique_ptr<State> state) noexcept : m_state(std::move(state)) {}

Consumer::Consumer(const std::string &name, const ConsumerOptions &options) {
    validate_name(name);
    detail::PoolWait waiting(name, options.wait);
    detail::NotThere why;
    while (!(m_state = attempt(name, options, why)))
        waiting.pause(why);
}

Consumer::Consumer(Consumer &&) noexcept = default;
Consumer &Consumer::operator=(Consumer &&o) noexcept {
    if (this != &o) {
        close();
        m_state = std::move(o.m_state);
    }
    return *this;
}
Consumer::~Consumer() { close(); }

void Consumer::close() noexcept {
    if (!m_state)
        return;
    std::shared_ptr<detail::Attachment> att;
    {
        std::lock_guard<std::mutex> lock(m_state->mutex);
        att = std::move(m_state->att);
        m_state->closed = true;
    }
    if (att) {
        att->stop_receiving();
        att->segment().wake_consumers(); // a thread of ours may sleep in receive(); others retry
    }
}

bool Consumer::closed() const noexcept { return !m_state || m_state->closed; }

Frame Consumer::receive(Duration timeout) {
    auto f = try_receive_for(timeout);
    if (!f)
        throw Timeout("no frame from pool '" + name() + "' within the timeout");
    return std::move(*f);
}

std::optional<Frame> Consumer::try_receive() {
    if (!m_state)
        throw InvalidArgument("consumer was moved from");
    return m_state->receive(Clock::time_point{}, false); // no deadline: never waits
}

std::optional<Frame> Consumer::try_receive_for(Duration timeout) {
    if (!m_state)
        throw InvalidArgument("consumer was moved from");
    return m_state->receive(Clock::now() + timeout, true);
}

bool Consumer::wait(Duration timeout) {
    if (!m_state)
        throw InvalidArgument("consumer was moved from");
    return m_state->next(Clock::now() + timeout, true, nullptr);
}

bool Consumer::State::next(Clock::time_point deadline, bool wait, Frame *out) {
    State &st = *this;
    auto att = st.current();
    auto got = [&] { return out ? att->try_take(*out) : att->any_queued(); };
    if (got())
        return true;
    const std::int64_t wait_start_ns = wait ? posix::monotonic_ns() : 0;
    // A fixed spin (ConsumerOptions::spin) buys latency at any CPU price; else spin as long as
    // recent waits say pays.
    const std::int64_t spin_ns =
        !wait ? 0
        : st.options.spin.count() > 0
            ? std::chrono::duration_cast<std::chrono::nanoseconds>(st.options.spin).count()
            : st.spin.budget_ns();
    if (spin_ns > 0) {
        const auto left = std::max<Duration>(deadline - Clock::now(), Duration{0});
        const std::int64_t left_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        // Mostly watch one cache line, the ownership word of the buffer that usually comes
        // next; every line we poll is one the producer must take back when it publishes.
        if (detail::spin_until(
                wait_start_ns + std::min(spin_ns, left_ns),
                [&] { return att->next_looks_queued(); }, got)) {
            st.spin.spun(posix::monotonic_ns() - wait_start_ns);
            return true;
        }
        if (st.options.spin.count() == 0 && spin_ns <= left_ns)
            st.spin.missed();
    }
    // Learns from how long a wait that sleeps lasts in all.
    struct Slept {
        detail::SpinTuner &spin;
        std::int64_t start_ns;
        bool done = false;
        ~Slept() {
            if (done)
                spin.slept(posix::monotonic_ns() - start_ns);
        }
    } slept{st.spin, wait_start_ns};
    for (;;) {
        std::int64_t now_ns = posix::monotonic_ns();
        bool check = now_ns - st.last_check_ns.load(std::memory_order_relaxed) >=
                     detail::LIVENESS_INTERVAL_NS;
        if (check) {
            st.last_check_ns.store(now_ns, std::memory_order_relaxed);
            att->reassert();
        }
        if (att->producer_gone(check)) {
            const bool lost = att->segment().lost(); // truncated: nothing left worth draining
            if (!lost && got())
                return true; // drain what was published before the end
            if (!st.options.reconnect) {
                att->segment().check_not_lost();
                if (!out)
                    return true; // receive() would end the stream at once
                throw ProducerGone("the producer of pool '" + st.name + "' is gone");
            }
            if (!wait)
                return false; // attaching may wait for the control lock: only when waiting
            bool seen_dead = false;
            detail::OpenStatus status;
            auto fresh = st.connect_once(att->instance(), seen_dead, status);
            if (fresh) {
                {
                    std::lock_guard<std::mutex> lock(st.mutex);
                    if (!st.att)
                        throw InvalidArgument("consumer of pool '" + st.name + "' is closed");
                    auto *sd = att->segment().slot(att->slot());
                    st.past.received += sd->received.load(std::memory_order_relaxed);
                    st.past.dropped += sd->dropped.load(std::memory_order_relaxed);
                    st.past.skipped += sd->skipped.load(std::memory_order_relaxed);
                    ++st.reconnects;
                    st.att = fresh;
                }
                att->stop_receiving();
                att = std::move(fresh);
                continue;
            }
            auto now = Clock::now();
            if (now >= deadline)
                return false;
            std::this_thread::sleep_for(std::min<Duration>(detail::POLL_PAUSE, deadline - now));
            detail::check_interrupt(out ? "Consumer::receive" : "Consumer::wait", st.name);
            continue;
        }
        auto now = Clock::now();
        if (!wait || now >= deadline)
            return false;
        detail::ControlHeader *c = att->segment().ctl();
        std::uint32_t seen = c->publish_futex.load(std::memory_order_seq_cst);
        att->sleeping();
        if (got()) {
            att->awake();
            return true;
        }
        if (att->segment().header()->closed.load(std::memory_order_seq_cst) == 0 && !st.closed)
            posix::futex_wait(
                &c->publish_futex, seen,
                detail::interruptible(std::min<Duration>(deadline - now, detail::MAX_SLEEP)));
        att->awake();
        slept.done = true;
        if (st.closed)
            throw InvalidArgument("consumer of pool '" + st.name + "' was closed");
        if (got())
            return true;
        detail::check_interrupt(out ? "Consumer::receive" : "Consumer::wait", st.name);
    }
}

ConsumerStats Consumer::stats() const {
    if (!m_state)
        throw InvalidArgument("consumer was moved from");
    ConsumerStats s;
    std::shared_ptr<detail::Attachment> att;
    {
        std::lock_guard<std::mutex> lock(m_state->mutex);
        s = m_state->past;
        s.reconnects = m_state->reconnects;
        att = m_state->att;
        s.spins = m_state->spin.spins();
        s.sleeps = m_state->spin.sleeps();
    }
    if (att) {
        auto *sd = att->segment().slot(att->slot());
        s.received += sd->received.load(std::memory_order_relaxed);
        s.dropped += sd->dropped.load(std::memory_order_relaxed);
        s.skipped += sd->skipped.load(std::memory_order_relaxed);
        att->counts(s.queued, s.held);
        s.slot = att->slot();
    }
    return s;
}

const std::string &Consumer::name() const noexcept {
    static const std::string none;
    return m_state ? m_state->name : none;
}
const Consumer::State &Consumer::checked() const {
    if (!m_state)
        throw InvalidArgument("consumer was moved from");
    return *m_state;
}

// The current attachment's parameters; InvalidArgument for a closed or moved-from consumer.
#define BIPS_PARAMS() checked().current()->segment().params()
std::uint32_t Consumer::capacity() const { return BIPS_PARAMS().capacity; }
std::size_t Consumer::buffer_size() const { return BIPS_PARAMS().buffer_size; }
Policy Consumer::policy() const { return BIPS_PARAMS().policy; }
Shape Consumer::shape() const {
    const auto &p = BIPS_PARAMS();
    return Shape(p.shape, p.shape + p.ndim);
}
DType Consumer::dtype() const { return BIPS_PARAMS().dtype; }
#undef BIPS_PARAMS
Device Consumer::device() const {
    const auto *dev = checked().current()->segment().device_memory();
    return dev ? Device{Device::cuda, dev->ordinal()} : Device{};
}

} // namespace bips
