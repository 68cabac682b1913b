// SPDX-License-Identifier: Apache-2.0
// One pool, as this process sees it: its two files (layout.hpp) mapped, and what every party
// does with them. The class is implemented by job: segment_create.cpp (creation, with takeover
// of a dead producer's pool), segment_open.cpp (validation on open), sweep.cpp (who is alive,
// the control lock, dead consumer slots), cleanup.cpp (removing names), fork_guard.cpp (handles
// across fork()), segment.cpp (header restoration, losses); wake-ups live in signaler.cpp.
#pragma once

#include "layout.hpp"
#include "params.hpp"
#include "posix/clock.hpp"
#include "posix/file.hpp"
#include "posix/futex.hpp"
#include "posix/lock.hpp"
#include "posix/mapping.hpp"
#include "posix/sigbus.hpp"

#include <bips/types.hpp>

#include <memory>
#include <string>
#include <sys/stat.h>

namespace bips::detail {

class FdServer;
namespace cuda {
class DeviceMemory;
}

/// The pool file's shm name of pool `name` ("/bips.NAME"); throws InvalidArgument for a bad name.
std::string shm_name_for(const std::string &name);
/// The control file's shm name of pool `name`.
std::string ctl_shm_name_for(const std::string &name);
/// The path of a GPU pool's descriptor socket ("/dev/shm/bips.NAME@fd").
std::string fd_socket_path_for(const std::string &name);
/// Removes pool `name`'s descriptor socket if it is a socket of `owner`'s (a dead producer's: the
/// caller holds the name). Best effort.
void unlink_fd_socket(const std::string &name, uid_t owner) noexcept;

/// Removes pool `name` if it is a bips pool, or the remains of one, that no live process uses.
bool remove_if_unused(const std::string &name);

/// How a pool looks to someone opening it.
enum class OpenStatus {
    ok,           ///< mapped and validated
    not_found,    ///< no such name
    initializing, ///< a live producer is still creating it
    stale,        ///< exists, but nobody is creating it and it is not ready (creator died)
};

/// consumer: maps the pool file read-only and the control file read-write. inspect: maps
/// nothing; reads private copies of both heads with pread (a stranger may shrink the files).
enum class Access { consumer, inspect };

class Segment {
public:
    /// Creates pool `name` as its producer (holding the producer lock), replacing a pool whose
    /// producer is gone. See Producer's constructor for errors.
    static std::shared_ptr<Segment> create(const std::string &name, const PoolOptions &options);
    /// Opens and validates pool `name`. Returns nullptr with *status set when it is not usable
    /// yet (not_found, initializing, stale); throws CorruptPool / IncompatiblePool /
    /// std::system_error otherwise (EPERM when the pool's owner is not `owner`, see
    /// ConsumerOptions::owner).
    static std::shared_ptr<Segment> open(const std::string &name, Access access, OpenStatus *status,
                                         std::int64_t owner = ANY_OWNER);

    Segment(const Segment &) = delete;
    Segment &operator=(const Segment &) = delete;
    ~Segment();

    const std::string &name() const noexcept { return m_name; }
    const Params &params() const noexcept { return m_params; }
    int fd() const noexcept { return m_file.get(); }
    int ctl_fd() const noexcept { return m_ctl_file.get(); }
    const struct stat &file_stat() const noexcept { return m_stat; }
    std::uint64_t instance_id() const noexcept { return m_instance_id; }

    /// The pool file's header. Consumers map it read-only: only the producer writes it.
    PoolHeader *header() const noexcept { return reinterpret_cast<PoolHeader *>(m_head.data()); }
    ControlHeader *ctl() const noexcept { return reinterpret_cast<ControlHeader *>(m_ctl.data()); }
    /// Buffer i's descriptor in the pool file (producer-written).
    FrameDesc *desc(std::uint32_t i) const noexcept {
        return reinterpret_cast<FrameDesc *>(m_head.data() + m_params.layout.desc_offset) + i;
    }
    /// Buffer i's ownership word in the control file (shared-writable).
    std::atomic<std::uint64_t> &state(std::uint32_t i) const noexcept {
        return (reinterpret_cast<StateWord *>(m_ctl.data() + m_params.layout.state_offset) + i)
            ->state;
    }
    SlotDesc *slot(std::uint32_t s) const noexcept {
        return reinterpret_cast<SlotDesc *>(m_ctl.data() + m_params.layout.slot_offset) + s;
    }
    /// Where the producer notes which buffer carries `seq`: a hint for consumers, always checked.
    std::atomic<std::uint32_t> *ring(std::uint64_t seq) const noexcept {
        return reinterpret_cast<std::atomic<std::uint32_t> *>(m_head.data() +
                                                              m_params.layout.ring_offset) +
               seq % m_params.capacity;
    }
    /// Buffer i's data: in the pool file's data area, or, for GPU pools, a device address.
    std::byte *data(std::uint32_t i) const noexcept {
        return m_data_base + std::size_t{i} * m_data_stride;
    }
    /// A GPU pool's mapped allocation (nullptr for host pools, and before import_device()).
    const cuda::DeviceMemory *device_memory() const noexcept { return m_device.get(); }
    /// Consumer of a GPU pool: fetches the allocation's descriptor from the producer (checking
    /// who serves it) and maps it on this process's GPU with the pool's UUID. False when nobody
    /// serves it (the producer is gone). Throws DeviceUnavailable, DeviceError, Timeout,
    /// CorruptPool, std::system_error (EPERM: refused, or served by a stranger).
    bool import_device(Duration timeout);
    /// Producer: stops handing the allocation to new consumers (on close).
    void stop_serving() noexcept;
    std::byte *meta(std::uint32_t i) const noexcept {
        return m_payload.data() + (m_params.layout.meta_offset - m_params.layout.control_size) +
               std::size_t{i} * m_params.layout.meta_stride;
    }
    /// True once another process shrank one of the files under our mappings: the SIGBUS guard
    /// put private zero pages there, and nothing written or read since reaches anyone.
    bool lost() const noexcept {
        return posix::sigbus_any_lost() && (m_head.lost() || m_payload.lost() || m_ctl.lost());
    }
    /// Throws CorruptPool when lost().
    void check_not_lost() const {
        if (lost())
            throw_lost();
    }
    /// Producer: writes back the immutable parts of both headers if something (a truncated and
    /// re-extended file, a scribbling peer) changed them, so that new consumers can attach
    /// again. Returns true if anything had to be restored.
    bool restore_headers() noexcept;
    /// The slots whose bits are valid in shared words (everything else is a stray).
    std::uint64_t valid_slots() const noexcept { return slots_mask(m_params.max_consumers); }

    /// True in a child made by fork() after this segment was opened: the handle belongs to the
    /// parent, so it must neither change shared state nor be used.
    bool inherited() const noexcept;
    /// Throws InvalidArgument when inherited().
    void check_not_inherited() const;

    bool producer_alive() const;
    bool slot_alive(std::uint32_t s) const;

    /// Takes the control lock (OFD, so a holder that dies releases it), polling until
    /// `timeout`; false if it could not.
    bool lock_control(Duration timeout) const;
    void unlock_control() const noexcept;

    /// Under the control lock: clears every slot that has bits anywhere in the control file but
    /// no live consumer holding its lock, including slots past max_consumers and bits a crashed
    /// or hostile writer left. Returns how many were cleared. `skip` is a slot this process
    /// itself holds (GETLK cannot see it).
    unsigned sweep_dead_locked(std::uint32_t skip = MAX_CONSUMERS);
    /// Takes the control lock for at most `timeout` and sweeps; 0 if the lock was busy.
    unsigned sweep_dead(Duration timeout, std::uint32_t skip = MAX_CONSUMERS);
    /// Clears slot s: no longer active nor asleep, its queued/held bits gone from every buffer.
    void clear_slot(std::uint32_t s) noexcept;
    /// Wakes producer threads sleeping in acquire(), if any.
    void wake_producer() const noexcept;
    /// A consumer made a buffer free: wakes a sleeping producer once it has the number of frees
    /// it asked for, so that a full queue costs one wake-up per several frames, not per frame.
    void buffer_freed() const noexcept;
    /// Wakes every consumer sleeping in receive().
    void wake_consumers() const noexcept;

    /// True if the pool's name still refers to this very segment (same inode).
    bool name_refers_to_me() const;
    /// Unlinks both names if they still refer to this segment's files. The caller must hold the
    /// producer lock, which is what makes the check and the unlink one step for every other party.
    void unlink_if_mine() const noexcept;
    /// For consumers: removes a pool that has no producer and no live consumer. Best effort.
    bool unlink_if_abandoned() const noexcept;

    std::uint32_t count_free() const noexcept;

private:
    Segment(); // defined where DeviceMemory and FdServer are complete
    void adopt(posix::File f, posix::File ctl);
    [[noreturn]] void throw_lost() const;
    std::string m_name;
    std::string m_shm_name;
    std::string m_ctl_shm_name;
    posix::File m_file;     // the pool file
    posix::File m_ctl_file; // the control file
    struct stat m_stat{};
    struct stat m_ctl_stat{};
    posix::Mapping m_head;    // pool file: header, descriptors, ring
    posix::Mapping m_payload; // pool file: meta and data
    posix::Mapping m_ctl;     // control file
    Params m_params;
    std::uint64_t m_instance_id = 0;
    // Producer: what it wrote into the immutable parts of the two headers.
    std::unique_ptr<unsigned char[]> m_header_image;
    std::unique_ptr<unsigned char[]> m_ctl_header_image;
    std::uint64_t m_fork_generation = 0;
    std::byte *m_data_base = nullptr; // buffer 0's data
    std::size_t m_data_stride = 0;
    std::unique_ptr<cuda::DeviceMemory> m_device; // GPU pools
    std::unique_ptr<FdServer> m_fd_server;        // GPU pools, producer side
};

} // namespace bips::detail
