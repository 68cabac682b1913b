// SPDX-License-Identifier: Apache-2.0
// How blocking waits honour the process's interrupt check (bips/interrupt.hpp): the slice they
// may sleep, and the check between slices.
#pragma once

#include <bips/interrupt.hpp>
#include <bips/types.hpp>

#include <algorithm>
#include <chrono>
#include <string>

namespace bips::detail {

/// The longest sleep between two calls of the interrupt check.
constexpr Duration INTERRUPT_SLICE = std::chrono::milliseconds(50);

/// The check that applies to this thread: the process's, unless the thread opted out.
InterruptCheck active_interrupt_check() noexcept;

/// `slice`, cut to INTERRUPT_SLICE while a check applies to this thread.
inline Duration interruptible(Duration slice) noexcept {
    return active_interrupt_check() ? std::min(slice, INTERRUPT_SLICE) : slice;
}

/// Between two sleeps of a blocking wait: throws Interrupted ("<call> on pool '<pool>' was
/// interrupted") when the check applies and returns true.
void check_interrupt(const char *call, const std::string &pool);

/// From now on no check applies to the calling thread (a Notifier's waiting thread: nobody
/// could catch the Interrupted there, and the check belongs to the threads that call in).
void ignore_interrupts_on_this_thread() noexcept;

} // namespace bips::detail
