// SPDX-License-Identifier: Apache-2.0
// How the POSIX wrappers report failures: std::system_error with errno and the call, and
// EINTR retried in one place.
#pragma once

#include <cerrno>
#include <string>

namespace bips::posix {

[[noreturn]] void throw_errno(int err, const std::string &what);
[[noreturn]] inline void throw_errno(const std::string &what) { throw_errno(errno, what); }

/// Calls f() again while it fails with EINTR.
template <class F> auto retry_eintr(F f) {
    decltype(f()) r;
    do {
        r = f();
    } while (r == -1 && errno == EINTR);
    return r;
}

} // namespace bips::posix
