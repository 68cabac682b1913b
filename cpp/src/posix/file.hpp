// SPDX-License-Identifier: Apache-2.0
// An owned file descriptor, and opening and inspecting the shm files bips uses.
#pragma once

#include "posix/error.hpp"

#include <string>
#include <sys/stat.h>
#include <sys/types.h>

namespace bips::posix {

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

} // namespace bips::posix
