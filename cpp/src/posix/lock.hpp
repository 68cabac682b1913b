// SPDX-License-Identifier: Apache-2.0
// The file locks that say who is alive (OFD byte locks, dropped by the kernel when the holder
// dies) and who may remove a name (flock).
#pragma once

#include <sys/types.h>

namespace bips::posix {

/// Non-blocking OFD write lock on one byte; true if taken, false if another open file
/// description holds it. OFD locks are dropped by the kernel when the holder dies, work across
/// PID namespaces and do not depend on pids.
bool ofd_try_lock(int fd, off_t byte);
void ofd_unlock(int fd, off_t byte) noexcept;
/// flock(LOCK_EX | LOCK_NB): needs only a read-only descriptor, and is independent of the OFD
/// locks. True if taken, false if another open file description holds it.
bool flock_try_exclusive(int fd);
void flock_unlock(int fd) noexcept;
/// True if another open file description holds a write lock on `byte` (read locks, which any
/// reader may take, are not reported).
bool ofd_is_locked(int fd, off_t byte);

} // namespace bips::posix
