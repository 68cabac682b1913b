// SPDX-License-Identifier: Apache-2.0
#include "pool_files.hpp"

#include "layout.hpp"

#include <bips/errors.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace bips::detail {

std::string pool_path(const std::string &name) { return "/dev/shm/bips." + name; }

void corrupt(const std::string &name, const std::string &why) {
    throw CorruptPool("pool '" + name + "' (" + pool_path(name) +
                      ") is not a valid bips pool: " + why);
}

std::string uid_text(uid_t uid) { return "uid " + std::to_string(uid); }

void squatted(const std::string &name, const std::string &path, const struct stat &st) {
    throw std::system_error(EPERM, std::generic_category(),
                            "pool '" + name + "': " + path + " belongs to " + uid_text(st.st_uid) +
                                ", and /dev/shm lets only its owner remove it; as that user or "
                                "root run `bips clean " +
                                name + "` (or rm " + path + "), or pick another pool name");
}

bool same_file(const struct stat &a, const struct stat &b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

bool name_refers_to(const std::string &shm, const struct stat &st) {
    posix::File again = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT, EACCES);
    return again && same_file(posix::fstat_file(again.get(), shm), st);
}

void unlink_if_same(const std::string &shm, const struct stat &st) noexcept {
    try {
        if (name_refers_to(shm, st))
            ::shm_unlink(shm.c_str());
    } catch (...) {
    }
}

bool read_exact(int fd, void *out, std::size_t n, off_t off) {
    auto r = posix::retry_eintr([&] { return ::pread(fd, out, n, off); });
    return r == static_cast<ssize_t>(n);
}

FileKind classify(int fd, const struct stat &st, const char (&magic)[8]) {
    if (!S_ISREG(st.st_mode))
        return FileKind::foreign;
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0)
        return FileKind::empty;
    char head[sizeof(PoolHeader)] = {};
    std::size_t n = std::min(size, sizeof(head));
    if (!read_exact(fd, head, n, 0))
        return FileKind::foreign;
    if (n >= sizeof(magic) && std::memcmp(head, magic, sizeof(magic)) == 0)
        return FileKind::bips;
    for (std::size_t i = 0; i < n; ++i)
        if (head[i] != 0)
            return FileKind::foreign;
    return FileKind::zeroed;
}

bool NameGuard::wait(int tries) {
    for (int i = 0; !m_held && i < tries; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        m_held = posix::flock_try_exclusive(m_fd);
    }
    return m_held;
}

} // namespace bips::detail
