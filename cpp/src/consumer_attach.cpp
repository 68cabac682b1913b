// SPDX-License-Identifier: Apache-2.0
#include "consumer_attach.hpp"

#include "interrupt.hpp"

#include <bips/errors.hpp>

#include <algorithm>
#include <thread>
#include <unistd.h>

namespace bips::detail {

namespace {
// How often a waiting constructor looks for the pool again.
constexpr Duration POLL_PAUSE = std::chrono::milliseconds(5);
// How long a pool that is being created is waited for, even by a caller that does not wait.
constexpr Duration INIT_WAIT = std::chrono::seconds(1);
// How long a live producer may take to hand out a GPU pool's memory (it answers in microseconds;
// a stopped or wedged one gets Timeout rather than a hang).
constexpr Duration FD_FETCH_TIMEOUT = std::chrono::seconds(2);
} // namespace

std::shared_ptr<Segment> open_live(const std::string &name, std::int64_t owner,
                                   std::uint64_t skip_instance, NotThere &why) {
    why = NotThere{};
    auto seg = Segment::open(name, Access::consumer, &why.status, owner);
    if (!seg)
        return nullptr;
    if (seg->instance_id() == skip_instance ||
        seg->header()->closed.load(std::memory_order_acquire) != 0 || !seg->producer_alive()) {
        why.producer_gone = true;
        seg->unlink_if_abandoned(); // nothing stale piles up; a live user keeps it
        return nullptr;
    }
    // A GPU pool's memory comes from its producer; nobody answering means it just went.
    if (seg->params().device.is_cuda() && !seg->import_device(FD_FETCH_TIMEOUT)) {
        why.producer_gone = true;
        return nullptr;
    }
    return seg;
}

std::uint32_t claim_slot(Segment &s, bool latest) {
    if (!s.lock_control(std::chrono::seconds(2)))
        throw Error("pool '" + s.name() + "': its control lock stayed busy for 2 s");
    try {
        // Before we hold a slot lock of our own, so that GETLK sees every other holder.
        s.sweep_dead_locked();
        ControlHeader *h = s.ctl();
        std::uint64_t attached = h->attached.load(std::memory_order_seq_cst);
        for (std::uint32_t i = 0; i < s.params().max_consumers; ++i) {
            if (attached & queued_bit(i))
                continue;
            if (!posix::ofd_try_lock(s.ctl_fd(), LOCK_SLOT_BASE + static_cast<off_t>(i)))
                continue;
            s.clear_slot(i); // bits a racing publish may have left for a former owner
            SlotDesc *sd = s.slot(i);
            sd->received.store(0, std::memory_order_relaxed);
            sd->dropped.store(0, std::memory_order_relaxed);
            sd->skipped.store(0, std::memory_order_relaxed);
            sd->pid.store(static_cast<std::int32_t>(::getpid()), std::memory_order_relaxed);
            sd->latest.store(latest ? 1 : 0, std::memory_order_relaxed);
            sd->attached_ns.store(static_cast<std::uint64_t>(posix::coarse_ns()),
                                  std::memory_order_relaxed);
            sd->last_seq_plus1.store(0, std::memory_order_relaxed);
            sd->last_receive_ns.store(0, std::memory_order_relaxed);
            h->attached.fetch_or(queued_bit(i), std::memory_order_seq_cst);
            h->active.fetch_or(queued_bit(i), std::memory_order_seq_cst);
            s.unlock_control();
            return i;
        }
    } catch (...) {
        s.unlock_control();
        throw;
    }
    s.unlock_control();
    throw TooManyConsumers("pool '" + s.name() + "' already has its maximum of " +
                           std::to_string(s.params().max_consumers) + " consumers");
}

void release_slot(Segment &seg, std::uint32_t s) noexcept {
    if (seg.inherited())
        return; // the parent's slot: leave it to the parent
    // We still hold the slot lock, so nobody else touches this slot: no control lock needed.
    seg.clear_slot(s);
    posix::ofd_unlock(seg.ctl_fd(), LOCK_SLOT_BASE + static_cast<off_t>(s));
    try {
        if (seg.header()->closed.load(std::memory_order_acquire) != 0 || !seg.producer_alive())
            seg.unlink_if_abandoned();
    } catch (...) {
        // best effort: a stale pool is replaced by the next producer anyway
    }
}

PoolWait::PoolWait(const std::string &name, Duration wait)
    : m_name(name), m_waits(wait.count() > 0), m_deadline(Clock::now() + wait),
      m_init_deadline(std::max(m_deadline, Clock::now() + INIT_WAIT)) {}

void PoolWait::pause(const NotThere &why) {
    const bool initializing = why.status == OpenStatus::initializing;
    const auto deadline = initializing ? m_init_deadline : m_deadline;
    const auto now = Clock::now();
    if (now >= deadline) {
        if (why.producer_gone)
            throw ProducerGone("pool '" + m_name + "' has no live producer");
        if (why.status == OpenStatus::stale)
            throw PoolNotFound("pool '" + m_name +
                               "' was never completed (its creator died); "
                               "a new producer will replace it");
        if (initializing)
            throw Timeout("pool '" + m_name + "' is still being created");
        if (m_waits)
            throw Timeout("pool '" + m_name + "' did not appear within the timeout");
        throw PoolNotFound("no pool named '" + m_name + "' (/dev/shm/bips." + m_name + ")");
    }
    std::this_thread::sleep_for(std::min<Duration>(POLL_PAUSE, deadline - now));
    check_interrupt("Consumer()", m_name);
}

} // namespace bips::detail
