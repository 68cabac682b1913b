// SPDX-License-Identifier: Apache-2.0
#include "posix/file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace bips::posix {

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

} // namespace bips::posix
