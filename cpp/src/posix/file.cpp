// SPDX-License-Identifier: Apache-2.0
#include "posix/file.hpp"
#include "posix/sigbus.hpp"

#include <climits>
#include <ctime>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <system_error>
#include <unistd.h>

namespace bips::posix {

void throw_errno(int err, const std::string &what) {
    throw std::system_error(err, std::generic_category(), what);
}

File &File::operator=(File &&other) noexcept {
    if (this != &other) {
        close();
        m_fd = other.m_fd;
        other.m_fd = -1;
    }
    return *this;
}

void File::close() noexcept {
    if (m_fd >= 0) {
        // No EINTR retry: on Linux the descriptor is released even when close() is interrupted.
        ::close(m_fd);
        m_fd = -1;
    }
}

File shm_open_file(const std::string &shm_name, int flags, mode_t mode, int tolerated1,
                   int tolerated2) {
    // O_NONBLOCK: a FIFO planted under the name must not block us (no effect on regular files).
    int fd = retry_eintr(
        [&] { return ::shm_open(shm_name.c_str(), flags | O_CLOEXEC | O_NONBLOCK, mode); });
    if (fd < 0) {
        int err = errno;
        if (err != 0 && (err == tolerated1 || err == tolerated2)) {
            errno = err;
            return File{};
        }
        throw_errno(err, "shm_open(" + shm_name + ")");
    }
    return File{fd};
}

struct stat fstat_file(int fd, const std::string &what) {
    struct stat st{};
    if (::fstat(fd, &st) != 0)
        throw_errno("fstat(" + what + ")");
    return st;
}

static struct flock byte_lock(short type, off_t byte) {
    struct flock fl{};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_pid = 0; // required 0 for OFD locks
    return fl;
}

bool ofd_try_lock(int fd, off_t byte) {
    struct flock fl = byte_lock(F_WRLCK, byte);
    if (retry_eintr([&] { return ::fcntl(fd, F_OFD_SETLK, &fl); }) == 0)
        return true;
    if (errno == EAGAIN || errno == EACCES)
        return false;
    throw_errno("fcntl(F_OFD_SETLK)");
}

bool flock_try_exclusive(int fd) {
    if (retry_eintr([&] { return ::flock(fd, LOCK_EX | LOCK_NB); }) == 0)
        return true;
    if (errno == EWOULDBLOCK)
        return false;
    throw_errno("flock(LOCK_EX)");
}

void flock_unlock(int fd) noexcept { retry_eintr([&] { return ::flock(fd, LOCK_UN); }); }

void ofd_unlock(int fd, off_t byte) noexcept {
    struct flock fl = byte_lock(F_UNLCK, byte);
    retry_eintr([&] { return ::fcntl(fd, F_OFD_SETLK, &fl); });
}

bool ofd_is_locked(int fd, off_t byte) {
    // Asking about a read lock reports only write locks: a read lock, which anyone who can read
    // the file may take, never makes a byte look held.
    struct flock fl = byte_lock(F_RDLCK, byte);
    if (retry_eintr([&] { return ::fcntl(fd, F_OFD_GETLK, &fl); }) != 0)
        throw_errno("fcntl(F_OFD_GETLK)");
    return fl.l_type != F_UNLCK;
}

Mapping::Mapping(int fd, std::size_t length, off_t offset, int prot, const std::string &what)
    : m_length(length) {
    void *p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, offset);
    if (p == MAP_FAILED)
        throw_errno("mmap(" + what + ")");
    m_addr = static_cast<std::byte *>(p);
    m_guard = sigbus_guard(p, length, prot);
}

Mapping Mapping::anonymous(std::size_t length, const std::string &what) {
    Mapping m;
    void *p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        throw_errno("mmap(anonymous, " + what + ")");
    m.m_addr = static_cast<std::byte *>(p);
    m.m_length = length;
    return m;
}

Mapping Mapping::copy_of(int fd, std::size_t length, off_t offset, const std::string &what,
                         bool *complete) {
    Mapping m = anonymous(length, what);
    std::size_t done = 0;
    while (done < length) {
        auto r = retry_eintr([&] {
            return ::pread(fd, m.m_addr + done, length - done, offset + static_cast<off_t>(done));
        });
        if (r < 0)
            throw_errno("pread(" + what + ")");
        if (r == 0)
            break;
        done += static_cast<std::size_t>(r);
    }
    *complete = done == length;
    return m;
}

Mapping::Mapping(Mapping &&other) noexcept : m_addr(other.m_addr), m_length(other.m_length) {
    other.m_addr = nullptr;
    other.m_length = 0;
    m_guard = other.m_guard;
    other.m_guard = -1;
}

Mapping &Mapping::operator=(Mapping &&other) noexcept {
    if (this != &other) {
        sigbus_unguard(m_guard); // before munmap: see sigbus_unguard()
        if (m_addr)
            ::munmap(m_addr, m_length);
        m_addr = other.m_addr;
        m_length = other.m_length;
        m_guard = other.m_guard;
        other.m_addr = nullptr;
        other.m_length = 0;
        other.m_guard = -1;
    }
    return *this;
}

Mapping::~Mapping() {
    sigbus_unguard(m_guard); // before munmap: see sigbus_unguard()
    if (m_addr)
        ::munmap(m_addr, m_length);
}

bool Mapping::lost() const noexcept { return sigbus_lost(m_guard); }

int futex_wait(std::atomic<std::uint32_t> *word, std::uint32_t expected, Duration timeout) noexcept {
    auto ns = timeout.count();
    if (ns <= 0)
        return ETIMEDOUT;
    struct timespec ts{};
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(word), FUTEX_WAIT, expected, &ts,
                       nullptr, 0);
    if (r == 0)
        return 0;
    int err = errno;
    return err == EAGAIN ? 0 : err;
}

void futex_wake(std::atomic<std::uint32_t> *word, int count) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(word), FUTEX_WAKE, count, nullptr,
              nullptr, 0);
}

std::int64_t monotonic_ns() noexcept {
    struct timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::int64_t realtime_ns() noexcept {
    struct timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::size_t page_size() noexcept {
    static const std::size_t ps = [] {
        long v = ::sysconf(_SC_PAGESIZE);
        return v > 4096 ? static_cast<std::size_t>(v) : std::size_t{4096};
    }();
    return ps;
}

} // namespace bips::posix
