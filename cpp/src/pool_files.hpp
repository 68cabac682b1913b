// SPDX-License-Identifier: Apache-2.0
// What lies under a pool's names in /dev/shm, seen without mapping it: whether a name still
// refers to a file we looked at, what kind of file it is, the guard every remover of a name
// holds, and the errors that name a pool's files.
#pragma once

#include "posix/file.hpp"
#include "posix/lock.hpp"

#include <cstddef>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>

namespace bips::detail {

/// "/dev/shm/bips.NAME", for messages.
std::string pool_path(const std::string &name);
/// "uid N", for messages.
std::string uid_text(uid_t uid);
/// Throws CorruptPool: pool `name` is not a valid bips pool because of `why`.
[[noreturn]] void corrupt(const std::string &name, const std::string &why);
/// Throws EPERM for another user's file `path` under our name: in sticky /dev/shm only its
/// owner (or root) may remove it.
[[noreturn]] void squatted(const std::string &name, const std::string &path, const struct stat &st);

bool same_file(const struct stat &a, const struct stat &b);
/// True if the name `shm` refers to the file `st` describes right now.
bool name_refers_to(const std::string &shm, const struct stat &st);
/// Unlinks `shm` if it still names the file `st` describes. Best effort.
void unlink_if_same(const std::string &shm, const struct stat &st) noexcept;

/// Reads exactly `n` bytes of a file at `off` without mapping it; false if it is shorter.
bool read_exact(int fd, void *out, std::size_t n, off_t off);

enum class FileKind { empty, zeroed, bips, foreign };
/// What a file under a pool name is, from its first bytes. `zeroed` (sized, header still all
/// zero) is what a creator killed before writing the header leaves behind.
FileKind classify(int fd, const struct stat &st, const char (&magic)[8]);

/// Removing a name is "check that it refers to the file we looked at, then unlink", which is
/// only safe while nobody else removes or replaces it: every party that removes a pool's names
/// (cleaners, a producer taking over a dead pool, a producer replacing a dead control file)
/// holds flock(LOCK_EX) on the file it is about to remove meanwhile. flock needs only read
/// access, and is independent of the OFD locks that say who is alive.
class NameGuard {
public:
    explicit NameGuard(int fd) : m_fd(fd), m_held(posix::flock_try_exclusive(fd)) {}
    NameGuard(const NameGuard &) = delete;
    NameGuard &operator=(const NameGuard &) = delete;
    ~NameGuard() {
        if (m_held)
            posix::flock_unlock(m_fd);
    }
    /// Waits up to `tries` x 2 ms for it (a cleaner holds it for microseconds).
    bool wait(int tries);
    explicit operator bool() const noexcept { return m_held; }

private:
    int m_fd;
    bool m_held;
};

} // namespace bips::detail
