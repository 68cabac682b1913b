// SPDX-License-Identifier: Apache-2.0
#include "posix/futex.hpp"

#include <cerrno>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace bips::posix {

int futex_wait(std::atomic<std::uint32_t> *word, std::uint32_t expected,
               Duration timeout) noexcept {
    auto ns = timeout.count();
    if (ns <= 0)
        return ETIMEDOUT;
    struct timespec ts{};
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(word), FUTEX_WAIT, expected,
                       &ts, nullptr, 0);
    if (r == 0)
        return 0;
    int err = errno;
    return err == EAGAIN ? 0 : err;
}

void futex_wake(std::atomic<std::uint32_t> *word, int count) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(word), FUTEX_WAKE, count, nullptr,
              nullptr, 0);
}

} // namespace bips::posix
