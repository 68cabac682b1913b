// SPDX-License-Identifier: Apache-2.0
#pragma once

namespace bips {

/// Asked by blocking calls between their sleeps: true means "give up now" (e.g. a Ctrl-C is
/// pending). Called from whichever thread is blocked; it must be cheap and must not throw.
using InterruptCheck = bool (*)() noexcept;

/// Installs `check` for the whole process (nullptr removes it) and returns the previous one.
/// While one is set, every blocking wait of the core (Producer::acquire / try_acquire_for,
/// Consumer::receive / try_receive_for / wait, the Consumer constructor's wait) sleeps in slices
/// of at most 50 ms, calls `check` between them, and throws Interrupted when it returns true. A
/// call that does not have to sleep (a free buffer, a queued frame) never calls it, and without
/// a check nothing changes. A Notifier's waiting thread never calls it.
InterruptCheck set_interrupt_check(InterruptCheck check) noexcept;

/// The check installed now, or nullptr.
InterruptCheck interrupt_check() noexcept;

} // namespace bips
