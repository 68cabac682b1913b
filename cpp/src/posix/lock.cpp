// SPDX-License-Identifier: Apache-2.0
#include "posix/lock.hpp"

#include "posix/error.hpp"

#include <fcntl.h>
#include <sys/file.h>

namespace bips::posix {

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

void flock_unlock(int fd) noexcept {
    retry_eintr([&] { return ::flock(fd, LOCK_UN); });
}

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

} // namespace bips::posix
