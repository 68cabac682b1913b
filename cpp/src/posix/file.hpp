// SPDX-License-Identifier: Apache-2.0
// Thin RAII wrappers over the POSIX calls bips needs: shm file descriptors, mappings, OFD locks
// and futexes. Every failure becomes std::system_error carrying errno and the call.
#pragma once

#include <bips/types.hpp>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>

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

/// An owned file descriptor. Move-only; the destructor closes it.
class File {
public:
    File() noexcept = default;
    explicit File(int fd) noexcept : m_fd(fd) {}
    File(File &&other) noexcept : m_fd(other.m_fd) { other.m_fd = -1; }
    File &operator=(File &&other) noexcept;
    File(const File &) = delete;
    File &operator=(const File &) = delete;
    ~File() { close(); }

    int get() const noexcept { return m_fd; }
    explicit operator bool() const noexcept { return m_fd >= 0; }
    void close() noexcept;

private:
    int m_fd = -1;
};

/// shm_open(); returns an empty File with errno set when it fails with one of `tolerated`
/// (e.g. ENOENT, EEXIST), throws std::system_error for anything else.
File shm_open_file(const std::string &shm_name, int flags, mode_t mode, int tolerated1 = 0,
                   int tolerated2 = 0);
struct stat fstat_file(int fd, const std::string &what);

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

/// An owned memory mapping. Move-only; the destructor unmaps it.
class Mapping {
public:
    Mapping() noexcept = default;
    Mapping(int fd, std::size_t length, off_t offset, int prot, const std::string &what);
    Mapping(Mapping &&other) noexcept;
    Mapping &operator=(Mapping &&other) noexcept;
    Mapping(const Mapping &) = delete;
    Mapping &operator=(const Mapping &) = delete;
    ~Mapping();

    /// Private zero-filled memory, not backed by any file.
    static Mapping anonymous(std::size_t length, const std::string &what);
    /// A private copy of `length` bytes of the file at `offset`, read with pread(): what a
    /// reader uses for a file that a stranger could shrink under a mapping. False in *complete
    /// when the file is shorter.
    static Mapping copy_of(int fd, std::size_t length, off_t offset, const std::string &what,
                           bool *complete);

    std::byte *data() const noexcept { return m_addr; }
    std::size_t size() const noexcept { return m_length; }
    /// The file under this mapping shrank; its contents were replaced by zero pages.
    bool lost() const noexcept;

private:
    std::byte *m_addr = nullptr;
    std::size_t m_length = 0;
    int m_guard = -1; // posix/sigbus.hpp: survives a peer's ftruncate()
};

/// Sleeps while *word == expected, at most `timeout` (which must be > 0). Returns 0 when woken or
/// the value differed, ETIMEDOUT or EINTR. Process-shared (no FUTEX_PRIVATE_FLAG).
int futex_wait(std::atomic<std::uint32_t> *word, std::uint32_t expected, Duration timeout) noexcept;
/// Wakes up to `count` waiters on `word`.
void futex_wake(std::atomic<std::uint32_t> *word, int count) noexcept;

/// CLOCK_MONOTONIC in nanoseconds.
std::int64_t monotonic_ns() noexcept;
/// CLOCK_REALTIME in nanoseconds.
std::int64_t realtime_ns() noexcept;
std::size_t page_size() noexcept;

} // namespace bips::posix
