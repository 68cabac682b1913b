// SPDX-License-Identifier: Apache-2.0
#include "signaler.hpp"

#include "posix/futex.hpp"
#include "segment.hpp"

#include <climits>
#include <unistd.h>

namespace bips::detail {

bool spare_core() noexcept {
    static const bool spare = sysconf(_SC_NPROCESSORS_ONLN) > 1;
    return spare;
}

// The waker side. A sleeper announces itself (producer_sleeping, a sleepers bit) before it
// checks its condition one last time and sleeps on the futex word; a waker changes its state
// first, then bumps the word and wakes only if someone announced a sleep. So a wake-up is never
// lost, and a side that keeps up costs the other no system call.

void Segment::wake_producer() const noexcept {
    ControlHeader *c = ctl();
    if (c->producer_sleeping.load(std::memory_order_seq_cst) != 0) {
        c->free_futex.fetch_add(1, std::memory_order_seq_cst);
        posix::futex_wake(&c->free_futex, INT_MAX);
    }
}

void Segment::buffer_freed() const noexcept {
    ControlHeader *c = ctl();
    // Only the free that uses up the credit wakes; later ones find it spent (<= 0).
    if (c->producer_sleeping.load(std::memory_order_seq_cst) != 0 &&
        c->free_credit.fetch_sub(1, std::memory_order_seq_cst) == 1) {
        c->free_futex.fetch_add(1, std::memory_order_seq_cst);
        posix::futex_wake(&c->free_futex, INT_MAX);
    }
}

void Segment::wake_consumers() const noexcept {
    ControlHeader *c = ctl();
    c->publish_futex.fetch_add(1, std::memory_order_seq_cst);
    posix::futex_wake(&c->publish_futex, INT_MAX);
}

} // namespace bips::detail
