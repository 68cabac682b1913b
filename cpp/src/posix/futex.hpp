// SPDX-License-Identifier: Apache-2.0
// Process-shared futex wait and wake on a 32-bit word in shared memory.
#pragma once

#include <bips/types.hpp>

#include <atomic>
#include <cstdint>

namespace bips::posix {

/// Sleeps while *word == expected, at most `timeout` (which must be > 0). Returns 0 when woken or
/// the value differed, ETIMEDOUT or EINTR. Process-shared (no FUTEX_PRIVATE_FLAG).
int futex_wait(std::atomic<std::uint32_t> *word, std::uint32_t expected, Duration timeout) noexcept;
/// Wakes up to `count` waiters on `word`.
void futex_wake(std::atomic<std::uint32_t> *word, int count) noexcept;

} // namespace bips::posix
