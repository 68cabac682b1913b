// SPDX-License-Identifier: Apache-2.0
#include "clock.hpp"

#include <time.h>

namespace bips::gst {

std::int64_t monotonic_now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t clock_offset_ns(GstClock *clock) {
    if (GST_IS_SYSTEM_CLOCK(clock)) {
        GstClockType type = GST_CLOCK_TYPE_REALTIME;
        g_object_get(clock, "clock-type", &type, nullptr);
        if (type == GST_CLOCK_TYPE_MONOTONIC)
            return 0;
    }
    return static_cast<std::int64_t>(gst_clock_get_time(clock)) - monotonic_now_ns();
}

} // namespace bips::gst
