// SPDX-License-Identifier: Apache-2.0
// Who is alive (the OFD locks of the producer and of each consumer slot), the control lock, and
// reclaiming the slots of consumers that died.
#include "segment.hpp"

#include <chrono>
#include <thread>

namespace bips::detail {

bool Segment::producer_alive() const { return posix::ofd_is_locked(fd(), LOCK_PRODUCER); }

bool Segment::slot_alive(std::uint32_t s) const {
    return posix::ofd_is_locked(ctl_fd(), LOCK_SLOT_BASE + static_cast<off_t>(s));
}

bool Segment::lock_control(Duration timeout) const {
    auto deadline = Clock::now() + timeout;
    auto pause = std::chrono::microseconds(20);
    for (;;) {
        if (posix::ofd_try_lock(ctl_fd(), LOCK_CONTROL))
            return true;
        if (Clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(pause);
        if (pause < std::chrono::milliseconds(2))
            pause *= 2;
    }
}

void Segment::unlock_control() const noexcept { posix::ofd_unlock(ctl_fd(), LOCK_CONTROL); }

void Segment::clear_slot(std::uint32_t s) noexcept {
    if (inherited())
        return;
    ControlHeader *c = ctl();
    const std::uint64_t bit = queued_bit(s);
    c->active.fetch_and(~bit, std::memory_order_seq_cst);
    c->sleepers.fetch_and(~bit, std::memory_order_seq_cst);
    const std::uint64_t both = queued_bit(s) | held_bit(s);
    for (std::uint32_t i = 0; i < m_params.capacity; ++i)
        state(i).fetch_and(~both, std::memory_order_seq_cst);
    // Last: a process killed before this point leaves the slot attached, and the next sweep
    // finishes the job.
    c->attached.fetch_and(~bit, std::memory_order_seq_cst);
    wake_producer();
}

unsigned Segment::sweep_dead_locked(std::uint32_t skip) {
    ControlHeader *c = ctl();
    // Every slot that has a bit anywhere, valid or not: bits without a live lock holder are
    // reclaimed whoever wrote them.
    const std::uint64_t masks = c->attached.load(std::memory_order_seq_cst) |
                                c->active.load(std::memory_order_seq_cst) |
                                c->sleepers.load(std::memory_order_seq_cst);
    std::uint32_t used = queued_mask(masks);
    for (std::uint32_t i = 0; i < m_params.capacity; ++i) {
        const std::uint64_t st = state(i).load(std::memory_order_relaxed);
        used |= queued_mask(st) | held_mask(st);
    }
    unsigned n = 0;
    for (std::uint32_t s = 0; s < MAX_CONSUMERS; ++s) {
        if (s == skip || !(used & (1u << s)))
            continue;
        if (s < m_params.max_consumers && slot_alive(s))
            continue;
        clear_slot(s);
        ++n;
    }
    if (held_mask(masks) != 0) { // the masks only use their low half
        c->attached.fetch_and(0xffffffffull, std::memory_order_seq_cst);
        c->active.fetch_and(0xffffffffull, std::memory_order_seq_cst);
        c->sleepers.fetch_and(0xffffffffull, std::memory_order_seq_cst);
    }
    return n;
}

unsigned Segment::sweep_dead(Duration timeout, std::uint32_t skip) {
    if (!lock_control(timeout))
        return 0;
    unsigned n = 0;
    try {
        n = sweep_dead_locked(skip);
    } catch (...) {
        unlock_control();
        throw;
    }
    unlock_control();
    return n;
}

} // namespace bips::detail
