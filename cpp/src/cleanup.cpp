// SPDX-License-Identifier: Apache-2.0
// Removing a pool's names: a producer's own on close, and those of pools nobody uses any more
// (a consumer leaving a dead pool, `bips clean`).
#include "layout.hpp"
#include "pool_files.hpp"
#include "segment.hpp"

#include <bips/errors.hpp>

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bips::detail {

void unlink_fd_socket(const std::string &name, uid_t owner) noexcept {
    try {
        const std::string path = fd_socket_path_for(name);
        struct stat st{};
        if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == owner)
            (void)::unlink(path.c_str());
    } catch (...) {
    }
}

namespace {

// Unlinks pool `name` (both files) if its pool file `fd` is a bips file, or the remains of
// one, that no process uses. True if removed.
bool unlink_if_unused(int fd, const std::string &name) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    bool removed = false;
    try {
        NameGuard guard(fd);
        // Another cleaner holds it for microseconds: wait for it, then judge for ourselves.
        // (Giving up at once lost the pool when its last two consumers left together: each saw
        // the other's slot, or the other's guard, and neither removed it.)
        if (!guard.wait(50) || posix::ofd_is_locked(fd, LOCK_PRODUCER))
            return false; // held for long (a stuck cleaner), or a producer lives (or creates it)
        struct stat st = posix::fstat_file(fd, shm);
        bool anyone = classify(fd, st, MAGIC) == FileKind::foreign;
        // Consumers hold their slot locks on the control file.
        posix::File ctl = posix::shm_open_file(ctl_shm, O_RDONLY, 0, ENOENT, EACCES);
        struct stat ctl_st{};
        if (ctl) {
            ctl_st = posix::fstat_file(ctl.get(), ctl_shm);
            for (std::uint32_t s = 0; s < MAX_CONSUMERS && !anyone; ++s)
                anyone = posix::ofd_is_locked(ctl.get(), LOCK_SLOT_BASE + static_cast<off_t>(s));
        }
        if (!anyone && name_refers_to(shm, st)) {
            // The control file first, while the pool file still holds the name: no producer
            // can make a new control file before the pool name is free, and freeing it (a
            // takeover) needs the guard we hold.
            unlink_fd_socket(name, st.st_uid);
            if (ctl && ctl_st.st_uid == st.st_uid)
                unlink_if_same(ctl_shm, ctl_st);
            removed = ::shm_unlink(shm.c_str()) == 0;
        }
    } catch (...) {
    }
    return removed;
}

} // namespace

bool Segment::name_refers_to_me() const { return name_refers_to(m_shm_name, m_stat); }

void Segment::unlink_if_mine() const noexcept {
    // The control file first: a pool file without one reads as closing (or abandoned), while a
    // control file without its pool file would look like the remains of a crash.
    unlink_if_same(m_ctl_shm_name, m_ctl_stat);
    unlink_if_same(m_shm_name, m_stat);
}

bool Segment::unlink_if_abandoned() const noexcept {
    try {
        return !inherited() && unlink_if_unused(fd(), m_name);
    } catch (...) {
        return false;
    }
}

bool remove_if_unused(const std::string &name) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    posix::File f = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT);
    if (!f) {
        // A control file left without its pool file (removed by hand, or a crash).
        posix::File c = posix::shm_open_file(ctl_shm, O_RDONLY, 0, ENOENT);
        if (!c)
            return false;
        struct stat cst = posix::fstat_file(c.get(), ctl_shm);
        if (!S_ISREG(cst.st_mode) || classify(c.get(), cst, CTL_MAGIC) != FileKind::bips)
            throw CorruptPool("/dev/shm" + ctl_shm + " is not a bips control file; left alone");
        NameGuard guard(c.get());
        if (!guard)
            return false;
        for (std::uint32_t s = 0; s < MAX_CONSUMERS; ++s)
            if (posix::ofd_is_locked(c.get(), LOCK_SLOT_BASE + static_cast<off_t>(s)))
                return false;
        // A producer names its pool file before it makes a control file: if the pool name is
        // still free now, this control file is nobody's.
        if (posix::shm_open_file(shm, O_RDONLY, 0, ENOENT, EACCES) || errno == EACCES)
            return false;
        return name_refers_to(ctl_shm, cst) && ::shm_unlink(ctl_shm.c_str()) == 0;
    }
    if (classify(f.get(), posix::fstat_file(f.get(), shm), MAGIC) == FileKind::foreign)
        throw CorruptPool(pool_path(name) + " is not a bips pool; left alone");
    return unlink_if_unused(f.get(), name);
}

} // namespace bips::detail
