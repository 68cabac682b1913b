// SPDX-License-Identifier: Apache-2.0
// Creating a pool as its producer: both files made, sized, locked and filled before anyone can
// use them, replacing the pool of a producer that is gone.
#include "cuda/device_memory.hpp"
#include "fd_channel.hpp"
#include "params.hpp"
#include "pool_files.hpp"
#include "segment.hpp"

#include <bips/errors.hpp>

#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/mman.h>
#include <unistd.h>

namespace bips::detail {

namespace {

std::uint64_t random_id() {
    std::random_device rd;
    return (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(posix::monotonic_ns());
}

// Sizes a fresh file. A full /dev/shm is an error here, not a SIGBUS later.
void size_file(int fd, std::size_t size, const std::string &shm) {
    int err = posix::retry_eintr([&] {
        int r = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
        errno = r;
        return r == 0 ? 0 : -1;
    });
    if (err != 0 && errno != EOPNOTSUPP && errno != EINVAL)
        posix::throw_errno("posix_fallocate(" + shm + ", " + std::to_string(size) + " bytes)");
    if (err != 0 && ::ftruncate(fd, static_cast<off_t>(size)) != 0)
        posix::throw_errno("ftruncate(" + shm + ")");
}

struct stat stat_path(const std::string &shm) {
    struct stat st{};
    if (::stat(("/dev/shm" + shm).c_str(), &st) != 0)
        st.st_uid = static_cast<uid_t>(-1);
    return st;
}

bool may_remove(const struct stat &st) { return ::geteuid() == 0 || st.st_uid == ::geteuid(); }

// A fresh control file for a pool whose name (and producer lock) we hold: any file still under
// the control name belongs to a dead instance.
posix::File create_ctl(const std::string &name, const std::string &ctl_shm, mode_t mode) {
    for (int attempt = 0; attempt < 10; ++attempt) {
        posix::File c = posix::shm_open_file(ctl_shm, O_RDWR | O_CREAT | O_EXCL, mode, EEXIST);
        if (c) {
            if (::fchmod(c.get(), mode) != 0) // the umask must not narrow what was asked for
                posix::throw_errno("fchmod(" + ctl_shm + ")");
            return c;
        }
        posix::File old = posix::shm_open_file(ctl_shm, O_RDONLY, 0, ENOENT, EACCES);
        if (!old) {
            if (errno == EACCES)
                squatted(name, "/dev/shm" + ctl_shm, stat_path(ctl_shm));
            continue;
        }
        NameGuard guard(old.get());
        if (!guard.wait(50))
            continue;
        const struct stat st = posix::fstat_file(old.get(), ctl_shm);
        if (!may_remove(st))
            squatted(name, "/dev/shm" + ctl_shm, st);
        if (name_refers_to(ctl_shm, st) && ::shm_unlink(ctl_shm.c_str()) != 0 && errno == EPERM)
            squatted(name, "/dev/shm" + ctl_shm, st);
    }
    throw Error("could not create /dev/shm" + ctl_shm + ": the name kept changing under us");
}

// An unnamed file in /dev/shm (O_TMPFILE): it gets its name only once it is locked and sized,
// so no opener ever sees a pool file that nobody holds. Empty when the kernel or file system
// cannot do it (the caller then creates the name with O_EXCL).
posix::File unnamed_file(mode_t mode) {
    int fd = posix::retry_eintr(
        [&] { return ::open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, mode); });
    return posix::File{fd}; // -1 on failure: EOPNOTSUPP, EISDIR (no O_TMPFILE), EINVAL...
}

enum class LinkResult { linked, exists, unsupported };

// Gives the unnamed file `fd` the name `shm`, atomically, never replacing anything.
LinkResult link_name(int fd, const std::string &shm) {
    const std::string path = "/dev/shm" + shm;
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works for everyone where /proc is.
    if (::linkat(fd, "", AT_FDCWD, path.c_str(), AT_EMPTY_PATH) == 0)
        return LinkResult::linked;
    if (errno == EEXIST)
        return LinkResult::exists;
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0)
        return LinkResult::linked;
    if (errno == EEXIST)
        return LinkResult::exists;
    return LinkResult::unsupported;
}

} // namespace

std::shared_ptr<Segment> Segment::create(const std::string &name, const PoolOptions &options) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    Params p = make_params(options);
    // Nobody writes the pool file but the producer, through the descriptor it creates it with:
    // no write bit at all, so that not even a careless process of the same user opens it for
    // writing (only root, or one that chmods it first, could).
    const mode_t pool_mode = p.mode & ~mode_t{0222};
    const auto &l = p.layout;
    // A GPU pool's allocation first: without a usable GPU nothing is created in /dev/shm.
    std::unique_ptr<cuda::DeviceMemory> device;
    if (p.device.is_cuda()) {
        device =
            cuda::DeviceMemory::create(p.device.index, std::size_t{p.capacity} * p.device_stride);
        std::memcpy(p.device_uuid, device->uuid().bytes, sizeof(p.device_uuid));
        p.device_size = device->size();
    }
    std::shared_ptr<Segment> seg(new Segment());
    seg->m_name = name;
    seg->m_shm_name = shm;
    seg->m_ctl_shm_name = ctl_shm;
    seg->m_params = p; // desc(), slot(), data() use the layout from here on

    // Sizes, maps and fills the pool file, which we hold locked; `ready` stays 0.
    auto prepare = [&](int fd) {
        if (::fchmod(fd, pool_mode) != 0) // the umask must not narrow what was asked for
            posix::throw_errno("fchmod(" + shm + ")");
        size_file(fd, l.file_size, shm);
        seg->m_head = posix::Mapping(fd, l.control_size, 0, PROT_READ | PROT_WRITE, shm);
        if (l.file_size > l.control_size) // a GPU pool without metadata has nothing more
            seg->m_payload =
                posix::Mapping(fd, l.file_size - l.control_size, static_cast<off_t>(l.control_size),
                               PROT_READ | PROT_WRITE, shm);
        if (!p.device.is_cuda()) {
            seg->m_data_base = seg->m_payload.data() + (l.data_offset - l.control_size);
            seg->m_data_stride = l.buffer_stride;
        }
        PoolHeader *h = seg->header();
        std::memcpy(h->magic, MAGIC, sizeof(MAGIC));
        h->layout_version = LAYOUT_VERSION;
        h->header_size = sizeof(PoolHeader);
        h->file_size = l.file_size;
        h->page_size = l.page_size;
        h->control_size = l.control_size;
        h->desc_offset = l.desc_offset;
        h->slot_offset = l.slot_offset;
        h->ctl_size = l.ctl_size;
        h->meta_offset = l.meta_offset;
        h->data_offset = l.data_offset;
        h->buffer_size = p.buffer_size;
        h->buffer_stride = l.buffer_stride;
        h->meta_size = static_cast<std::uint32_t>(p.meta_size);
        h->meta_stride = static_cast<std::uint32_t>(l.meta_stride);
        h->capacity = p.capacity;
        h->max_consumers = p.max_consumers;
        h->policy = static_cast<std::uint32_t>(p.policy);
        h->mode = static_cast<std::uint32_t>(p.mode);
        h->ndim = p.ndim;
        h->dtype_code = p.dtype.code;
        h->dtype_bits = p.dtype.bits;
        for (std::uint32_t i = 0; i < p.ndim; ++i)
            h->shape[i] = p.shape[i];
        seg->m_instance_id = random_id();
        h->instance_id = seg->m_instance_id;
        h->created_ns = posix::realtime_ns();
        h->producer_pid = static_cast<std::int32_t>(::getpid());
        std::strncpy(h->name, name.c_str(), sizeof(h->name) - 1);
        h->device_kind = p.device.kind;
        h->device_ordinal = p.device.index;
        std::memcpy(h->device_uuid, p.device_uuid, sizeof(h->device_uuid));
        h->device_stride = p.device_stride;
        h->device_size = p.device_size;
    };

    // Owner-writable until it is named and reopened under its name (below).
    posix::File f = unnamed_file(0600);
    if (f && (::fchmod(f.get(), 0600) != 0 || !posix::ofd_try_lock(f.get(), LOCK_PRODUCER)))
        f.close(); // odd file system: take the O_EXCL way
    bool named = false, linked = false;
    for (int attempt = 0; attempt < 100 && !named; ++attempt) {
        if (f) {
            const LinkResult r = link_name(f.get(), shm);
            if (r == LinkResult::linked) {
                named = linked = true;
                break;
            }
            if (r == LinkResult::unsupported) {
                f.close(); // no /proc, say: fall back to creating the name with O_EXCL
                continue;
            }
        } else {
            posix::File c = posix::shm_open_file(shm, O_RDWR | O_CREAT | O_EXCL, pool_mode, EEXIST);
            if (c) {
                // Lock before sizing: anyone who opens it meanwhile sees a live creator. (An
                // opener can still find it empty and unlocked for an instant; O_TMPFILE above
                // avoids that wherever it works.)
                if (!posix::ofd_try_lock(c.get(), LOCK_PRODUCER))
                    continue; // someone judged it stale and will unlink it; start again
                // Between our O_EXCL create and our lock another producer may have taken the
                // empty file for a dead one and replaced it. Holding the lock, the name can no
                // longer change under us, so one check settles it.
                if (!name_refers_to(shm, posix::fstat_file(c.get(), shm)))
                    continue;
                f = std::move(c);
                named = true;
                break;
            }
        }

        // The name exists. Replace it only if its producer is gone and it is a bips pool.
        posix::File old = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT, EACCES);
        if (!old) {
            if (errno == EACCES)
                squatted(name, pool_path(name), stat_path(shm));
            continue;
        }
        struct stat st = posix::fstat_file(old.get(), shm);
        if (posix::ofd_is_locked(old.get(), LOCK_PRODUCER))
            throw PoolBusy("pool '" + name + "' already has a live producer" +
                           (may_remove(st) ? std::string() : " (" + uid_text(st.st_uid) + ")"));
        // A cleaner holds the guard for microseconds; whoever holds it for longer blocks us.
        NameGuard guard(old.get());
        if (!guard.wait(50))
            throw PoolBusy("pool '" + name + "': another process holds its dead pool file (" +
                           pool_path(name) + ") locked; try again, or remove the file");
        if (posix::ofd_is_locked(old.get(), LOCK_PRODUCER))
            throw PoolBusy("pool '" + name + "' already has a live producer");
        if (!may_remove(st))
            squatted(name, pool_path(name), st);
        if (classify(old.get(), st, MAGIC) == FileKind::foreign)
            throw CorruptPool(pool_path(name) +
                              " exists and is not a bips pool; remove it by hand if it is yours");
        if (name_refers_to(shm, st) && ::shm_unlink(shm.c_str()) != 0 && errno == EPERM)
            squatted(name, pool_path(name), st);
        // Closing `old` drops its lock; loop to take the name.
    }
    if (!named)
        throw Error("could not create pool '" + name + "': the name kept changing under us");

    // The name is ours (and locked): any control file under the control name is a dead
    // instance's. Until `ready`, openers see a pool being created.
    struct stat st = posix::fstat_file(f.get(), shm);
    // So is a descriptor socket under the socket name: a GPU pool's server replaces it; a host
    // pool has none, and nothing else would ever remove it.
    if (!device)
        unlink_fd_socket(name, st.st_uid);
    try {
        if (linked) {
            // Mappings of the unnamed descriptor would show as "/dev/shm/#ino (deleted)" in
            // /proc/PID/maps and lsof: map through the name. `f` keeps the lock.
            posix::File by_name = posix::shm_open_file(shm, O_RDWR, 0);
            if (!same_file(posix::fstat_file(by_name.get(), shm), st))
                throw Error("could not create pool '" + name + "': the name changed under us");
            prepare(by_name.get());
        } else {
            prepare(f.get());
        }
    } catch (...) {
        unlink_if_same(shm, st);
        throw;
    }
    posix::File c;
    try {
        c = create_ctl(name, ctl_shm, p.mode);
        size_file(c.get(), l.ctl_size, ctl_shm);
        seg->m_ctl = posix::Mapping(c.get(), l.ctl_size, 0, PROT_READ | PROT_WRITE, ctl_shm);
        if (device) {
            // Served before `ready`: a consumer that sees the pool can fetch its memory.
            std::vector<posix::File> fds;
            fds.push_back(device->export_fd());
            seg->m_fd_server = std::make_unique<FdServer>(fd_socket_path_for(name),
                                                          FdPolicy{st.st_uid, st.st_gid, p.mode},
                                                          seg->m_instance_id, std::move(fds));
            seg->m_data_base = device->base();
            seg->m_data_stride = p.device_stride;
            seg->m_device = std::move(device);
        }
    } catch (...) {
        seg->m_fd_server.reset();
        if (c)
            unlink_if_same(ctl_shm, posix::fstat_file(c.get(), ctl_shm));
        unlink_if_same(shm, st);
        throw;
    }
    PoolHeader *h = seg->header();
    ControlHeader *ch = seg->ctl();
    std::memcpy(ch->magic, CTL_MAGIC, sizeof(CTL_MAGIC));
    ch->layout_version = LAYOUT_VERSION;
    ch->header_size = sizeof(ControlHeader);
    ch->instance_id = seg->m_instance_id;
    ch->ctl_size = l.ctl_size;
    seg->m_header_image.reset(new unsigned char[offsetof(PoolHeader, ready)]);
    std::memcpy(seg->m_header_image.get(), h, offsetof(PoolHeader, ready));
    seg->m_ctl_header_image.reset(new unsigned char[offsetof(ControlHeader, active)]);
    std::memcpy(seg->m_ctl_header_image.get(), ch, offsetof(ControlHeader, active));
    // Last: an opener that reads ready == 1 finds both files complete.
    h->ready.store(1, std::memory_order_release);
    seg->m_stat = st;
    seg->m_ctl_stat = posix::fstat_file(c.get(), ctl_shm);
    seg->adopt(std::move(f), std::move(c));
    return seg;
}

} // namespace bips::detail
