// SPDX-License-Identifier: Apache-2.0
// Opening a pool someone else created: its owner, its state (not there, being created, left
// half-made, ready) and its validation, all read before anything is mapped.
#include "params.hpp"
#include "pool_files.hpp"
#include "segment.hpp"

#include <bips/errors.hpp>

#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <system_error>
#include <unistd.h>

namespace bips::detail {

namespace {

void check_owner(const std::string &name, const struct stat &st, std::int64_t owner) {
    if (owner == ANY_OWNER)
        return;
    const uid_t me = ::geteuid();
    const bool ok = owner == OWNER_SELF ? st.st_uid == me || st.st_uid == 0
                                        : owner >= 0 && st.st_uid == static_cast<uid_t>(owner);
    if (!ok)
        throw std::system_error(
            EPERM, std::generic_category(),
            "pool '" + name + "' belongs to " + uid_text(st.st_uid) + ", not to " +
                (owner == OWNER_SELF ? "this user (" + uid_text(me) + ") or root"
                                     : uid_text(static_cast<uid_t>(owner))) +
                "; if you trust that user, accept it with owner=" + std::to_string(st.st_uid) +
                " (see docs/security.md)");
}

} // namespace

std::shared_ptr<Segment> Segment::open(const std::string &name, Access access, OpenStatus *status,
                                       std::int64_t owner) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    posix::File f = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT);
    if (!f) {
        *status = OpenStatus::not_found;
        return nullptr;
    }
    struct stat st = posix::fstat_file(f.get(), shm);
    if (!S_ISREG(st.st_mode))
        corrupt(name, "not a regular file");
    check_owner(name, st, owner);
    auto size = static_cast<std::size_t>(st.st_size);
    auto creator_alive = [&] { return posix::ofd_is_locked(f.get(), LOCK_PRODUCER); };
    // Not usable (yet): being created while its creator holds the lock; gone if the name no
    // longer refers to it (it was created, used and closed while we looked); else abandoned.
    auto unready = [&]() -> std::shared_ptr<Segment> {
        *status = creator_alive()            ? OpenStatus::initializing
                  : !name_refers_to(shm, st) ? OpenStatus::not_found
                                             : OpenStatus::stale;
        return nullptr;
    };
    if (size == 0)
        return unready();
    // Read with pread, never mapped before validation: the file may shrink at any time.
    alignas(PoolHeader) unsigned char copy[sizeof(PoolHeader)] = {};
    const auto *h = reinterpret_cast<const PoolHeader *>(copy);
    const bool whole = read_exact(f.get(), copy, sizeof(copy), 0);
    if (!whole || h->ready.load(std::memory_order_relaxed) != 1) {
        // A pool whose creator still holds the producer lock and has not set `ready` is being
        // created, whatever its bytes say.
        if (creator_alive() || !name_refers_to(shm, st))
            return unready();
        if (!whole) {
            if (size >= sizeof(MAGIC) && std::memcmp(copy, MAGIC, sizeof(MAGIC)) == 0)
                corrupt(name, "truncated to " + std::to_string(size) + " bytes");
            corrupt(name, "too small (" + std::to_string(size) + " bytes) and no bips magic");
        }
        if (std::memcmp(h->magic, MAGIC, sizeof(MAGIC)) != 0 &&
            classify(f.get(), st, MAGIC) != FileKind::zeroed)
            corrupt(name, "bad magic");
        if (std::memcmp(h->magic, MAGIC, sizeof(MAGIC)) == 0 && h->layout_version != LAYOUT_VERSION)
            throw IncompatiblePool("pool '" + name + "' has layout version " +
                                   std::to_string(h->layout_version) +
                                   "; this bips reads version " + std::to_string(LAYOUT_VERSION) +
                                   " (upgrade or restart the producer)");
        *status = OpenStatus::stale; // sized or half-written, and its creator died
        return nullptr;
    }
    // `ready` is set last: having seen it, read the header again for its final contents.
    if (!read_exact(f.get(), copy, sizeof(copy), 0))
        corrupt(name, "truncated while being opened");
    if (std::memcmp(h->magic, MAGIC, sizeof(MAGIC)) != 0)
        corrupt(name, "bad magic");
    if (h->layout_version != LAYOUT_VERSION)
        throw IncompatiblePool("pool '" + name + "' has layout version " +
                               std::to_string(h->layout_version) + "; this bips reads version " +
                               std::to_string(LAYOUT_VERSION) +
                               " (upgrade or restart the producer)");
    Params p = validate_header(name, *h, size);
    const std::uint64_t instance = h->instance_id;

    // The control file: it must be the one made with this pool file.
    posix::File c =
        posix::shm_open_file(ctl_shm, access == Access::inspect ? O_RDONLY : O_RDWR, 0, ENOENT);
    // A pool closing under us removes its two names one after the other: gone, not broken.
    auto going = [&] {
        return h->closed.load(std::memory_order_relaxed) != 0 || !name_refers_to(shm, st);
    };
    if (!c && going()) {
        *status = OpenStatus::not_found;
        return nullptr;
    }
    if (!c)
        return unready();
    struct stat cst = posix::fstat_file(c.get(), ctl_shm);
    if (!S_ISREG(cst.st_mode) || cst.st_uid != st.st_uid)
        corrupt(name, "its control file /dev/shm" + ctl_shm + " is not a regular file of " +
                          uid_text(st.st_uid) + ", the pool's owner");
    ControlHeader ch{};
    // Larger is harmless (only ctl_size bytes are mapped); smaller is a truncation.
    if (static_cast<std::size_t>(cst.st_size) < p.layout.ctl_size ||
        !read_exact(c.get(), &ch, sizeof(ch), 0) ||
        std::memcmp(ch.magic, CTL_MAGIC, sizeof(CTL_MAGIC)) != 0 ||
        ch.layout_version != LAYOUT_VERSION || ch.header_size != sizeof(ControlHeader) ||
        ch.instance_id != instance || ch.ctl_size != p.layout.ctl_size) {
        if (going()) {
            *status = OpenStatus::not_found;
            return nullptr;
        }
        if (!creator_alive())
            return unready(); // a newer pool's control file, or the remains of a dead one
        corrupt(name, "its control file /dev/shm" + ctl_shm + " does not belong to it");
    }

    std::shared_ptr<Segment> seg(new Segment());
    seg->m_name = name;
    seg->m_shm_name = shm;
    seg->m_ctl_shm_name = ctl_shm;
    seg->m_stat = st;
    seg->m_ctl_stat = cst;
    seg->m_instance_id = instance;
    const auto &l = p.layout;
    if (access == Access::inspect) {
        bool head_ok = false, ctl_ok = false;
        seg->m_head = posix::Mapping::copy_of(f.get(), l.control_size, 0, shm, &head_ok);
        seg->m_ctl = posix::Mapping::copy_of(c.get(), l.ctl_size, 0, ctl_shm, &ctl_ok);
        if (!head_ok || !ctl_ok)
            corrupt(name, "truncated while being read");
    } else {
        seg->m_head = posix::Mapping(f.get(), l.control_size, 0, PROT_READ, shm);
        if (l.file_size > l.control_size) // a GPU pool without metadata has nothing more
            seg->m_payload = posix::Mapping(f.get(), l.file_size - l.control_size,
                                            static_cast<off_t>(l.control_size), PROT_READ, shm);
        // GPU pools: import_device() sets it to the device allocation.
        if (!p.device.is_cuda()) {
            seg->m_data_base = seg->m_payload.data() + (l.data_offset - l.control_size);
            seg->m_data_stride = l.buffer_stride;
        }
        seg->m_ctl = posix::Mapping(c.get(), l.ctl_size, 0, PROT_READ | PROT_WRITE, ctl_shm);
    }
    seg->m_params = p;
    seg->adopt(std::move(f), std::move(c));
    *status = OpenStatus::ok;
    return seg;
}

} // namespace bips::detail
