// SPDX-License-Identifier: Apache-2.0
#include "interrupt.hpp"

#include <bips/errors.hpp>

#include <atomic>

namespace bips {

namespace {
std::atomic<InterruptCheck> g_check{nullptr};
thread_local bool t_ignored = false;
} // namespace

InterruptCheck set_interrupt_check(InterruptCheck check) noexcept {
    return g_check.exchange(check, std::memory_order_acq_rel);
}

InterruptCheck interrupt_check() noexcept { return g_check.load(std::memory_order_acquire); }

namespace detail {

InterruptCheck active_interrupt_check() noexcept {
    return t_ignored ? nullptr : g_check.load(std::memory_order_acquire);
}

void check_interrupt(const char *call, const std::string &pool) {
    const InterruptCheck check = active_interrupt_check();
    if (check && check())
        throw Interrupted(std::string(call) + " on pool '" + pool + "' was interrupted");
}

void ignore_interrupts_on_this_thread() noexcept { t_ignored = true; }

} // namespace detail
} // namespace bips
