// SPDX-License-Identifier: Apache-2.0
// Survives a peer shrinking a shared file under our mappings (the libwayland-server wl_shm
// approach). Anyone who can open a pool for writing can ftruncate() it; touching the mapping past
// the new end then raises SIGBUS, which would kill this process. Guarded ranges are kept in a
// process-wide table that a SIGBUS handler reads: a fault inside one replaces the whole range with
// private zero pages, marks it lost and lets the faulting instruction run again. Faults anywhere
// else go to whatever handled SIGBUS before, so they still kill (and dump core) as they used to.
//
// Limits: the table holds SIGBUS_GUARD_SLOTS ranges; past that a mapping is simply not guarded
// (sigbus_guard() returns -1). A system call that reads a truncated range (write(2) from it, a
// futex on it) fails with EFAULT instead and does not mark it lost. A SIGBUS handler installed by
// someone else after ours, that does not chain to ours for faults it does not own, takes the
// guard away.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bips::posix {

/// How many ranges can be guarded at once in this process.
inline constexpr std::size_t SIGBUS_GUARD_SLOTS = 1024;

/// Guards [addr, addr + length) (length is rounded up to whole pages), which must be a mapping
/// made with protection `prot` that the caller owns. Installs the SIGBUS handler the first time.
/// Returns a handle for sigbus_unguard() and sigbus_lost(), or -1 if the table is full (the range
/// is then not guarded and a truncation kills the process as it would without bips).
int sigbus_guard(void *addr, std::size_t length, int prot) noexcept;

/// Stops guarding; call it before munmap(), so that the handler never replaces memory that is
/// already someone else's. Waits for a handler that is looking at this range right now to finish.
/// Does nothing for -1.
void sigbus_unguard(int guard) noexcept;

/// True once a SIGBUS in the guarded range replaced it by zero pages (false for -1).
bool sigbus_lost(int guard) noexcept;

/// How many guarded ranges this process has lost so far (written by the handler only).
extern std::atomic<std::uint32_t> g_sigbus_losses;
/// One load, for hot paths: false means no guarded range was ever lost, so sigbus_lost() would
/// say false for every one.
inline bool sigbus_any_lost() noexcept {
    return g_sigbus_losses.load(std::memory_order_acquire) != 0;
}

/// Ranges guarded right now (for tests and diagnostics).
std::size_t sigbus_guards_in_use() noexcept;

} // namespace bips::posix
