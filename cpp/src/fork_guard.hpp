// SPDX-License-Identifier: Apache-2.0
// Descriptors a child made by fork() must not keep using: each one registered here is replaced
// by /dev/null in every child (so its number stays valid for a destructor), and each fork bumps
// a generation counter that tells handles made before it from those made after.
#pragma once

#include <cstdint>

namespace bips::detail {

/// Replace `fd` by /dev/null in every child made by fork() from now on (a pool file whose OFD
/// locks say "alive", a listening socket clients would wait on in vain).
void guard_across_fork(int fd);
/// Stops guarding `fd` (before it is closed).
void unguard_across_fork(int fd) noexcept;
/// How many fork()s separate this process from the first bips call (bumped in each child).
std::uint64_t fork_generation() noexcept;

} // namespace bips::detail
