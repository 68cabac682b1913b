// SPDX-License-Identifier: Apache-2.0
// The clocks, in nanoseconds.
#pragma once

#include <cstdint>

namespace bips::posix {

/// CLOCK_MONOTONIC in nanoseconds.
std::int64_t monotonic_ns() noexcept;
/// CLOCK_MONOTONIC_COARSE in nanoseconds: the last timer tick (a few ms behind at most), read
/// without the time counter. For statistics and intervals that run once per frame.
std::int64_t coarse_ns() noexcept;
/// CLOCK_REALTIME in nanoseconds.
std::int64_t realtime_ns() noexcept;

} // namespace bips::posix
