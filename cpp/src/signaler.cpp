// SPDX-License-Identifier: Apache-2.0
#include "signaler.hpp"

#include <sched.h>
#include <unistd.h>

namespace bips::detail {

bool spare_core() noexcept {
    static const bool spare = [] {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof set, &set) == 0)
            return CPU_COUNT(&set) > 1;
        return sysconf(_SC_NPROCESSORS_ONLN) > 1;
    }();
    return spare;
}

} // namespace bips::detail
