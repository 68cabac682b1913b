// SPDX-License-Identifier: Apache-2.0
#pragma once

// Time for the elements: CLOCK_MONOTONIC (the clock of bips frame timestamps) and how a
// GStreamer clock relates to it.

#include <gst/gst.h>

#include <cstdint>

namespace bips::gst {

/// CLOCK_MONOTONIC now, in nanoseconds.
std::int64_t monotonic_now_ns();

/// How far `clock` is ahead of CLOCK_MONOTONIC, in nanoseconds: a time T on CLOCK_MONOTONIC is
/// T + offset on `clock`. 0 for GStreamer's default clock (the system clock in monotonic mode),
/// which is CLOCK_MONOTONIC itself; any other clock is read against it now.
std::int64_t clock_offset_ns(GstClock *clock);

} // namespace bips::gst
