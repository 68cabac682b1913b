// SPDX-License-Identifier: Apache-2.0
// Handing a pool's descriptors (a GPU pool's allocation) from its producer to the processes the
// pool's permissions admit, over a Unix socket beside the pool's files (/dev/shm/bips.NAME@fd):
// the rule of who may have them, the server thread, the client, and the one message between them.
//
// Both ends distrust each other. The server asks the kernel who connected (SO_PEERCRED,
// SO_PEERGROUPS) and answers everyone it refuses with the reason; the client asks the kernel who
// listens before it reads a byte, and accepts only a reply that names the pool instance it
// expects and carries exactly the descriptors it expects.
#pragma once

#include "posix/file.hpp"

#include <bips/types.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace bips::detail {

/// Who may receive the descriptors: the pool's owner, group and mode, read as the kernel reads
/// the pool's control file, which every consumer opens read-write: root and the owner always;
/// else a member of the group (primary or supplementary) by the group bits alone, and anyone
/// else by the other bits alone; a class needs both r and w (0060, 0006), because the
/// descriptors give write access to the pixels (a GPU allocation imports read-write).
struct FdPolicy {
    uid_t owner;
    gid_t group;
    mode_t mode;
};

/// Whether a process with effective `uid`, `primary` gid and supplementary `groups` may receive
/// the descriptors. When not, and `why` is given, says why in one line that names the uid, the
/// owner, the group and the mode.
bool fd_policy_allows(const FdPolicy &policy, uid_t uid, gid_t primary,
                      const std::vector<gid_t> &groups, std::string *why);

/// The most descriptors one reply carries (the kernel's SCM_MAX_FD).
inline constexpr std::size_t FD_CHANNEL_MAX_FDS = 253;
inline constexpr char FD_REPLY_MAGIC[8] = {'B', 'I', 'P', 'S', 'F', 'D', '0', '1'};
inline constexpr std::uint32_t FD_REPLY_VERSION = 1;
inline constexpr std::uint32_t FD_REPLY_OK = 0;
inline constexpr std::uint32_t FD_REPLY_REFUSED = 1;

/// The one message the server sends each client, in host byte order (both ends share a kernel).
/// With FD_REPLY_OK it carries `nfds` descriptors (SCM_RIGHTS); with FD_REPLY_REFUSED none,
/// instance_id 0, and `reason` (NUL-terminated) says why. No implicit padding: every byte sent is
/// one we wrote.
struct FdReply {
    char magic[8];
    std::uint32_t version;
    std::uint32_t status;
    std::uint64_t instance_id;
    std::uint32_t nfds;
    std::uint32_t reserved; ///< 0
    char reason[200];
};
static_assert(sizeof(FdReply) == 232, "FdReply is a wire format");

/// Serves `fds` and `instance_id` to every client `policy` admits (and a refusal with its reason
/// to every other), from a thread, on a SOCK_SEQPACKET Unix socket at `path`. The caller owns
/// the name (holds the pool's producer lock): whatever lies at `path` is replaced.
///
/// The socket appears at `path` already listening and with its final mode (policy.mode plus the
/// owner's rw): it is bound under a temporary name beside it (`.bips-fd.<pid>.<random>`, never a
/// pool name), chmod-ed, and renamed over `path`.
/// Throws InvalidArgument for a path that does not fit a sockaddr_un or a number of descriptors
/// outside 1..FD_CHANNEL_MAX_FDS; std::system_error EPERM when `path` belongs to another user
/// (sticky /dev/shm lets only its owner replace it); std::system_error for any other OS failure.
/// Nothing is left behind when it throws.
class FdServer {
public:
    FdServer(const std::string &path, const FdPolicy &policy, std::uint64_t instance_id,
             std::vector<posix::File> fds);
    FdServer(const FdServer &) = delete;
    FdServer &operator=(const FdServer &) = delete;
    /// Stops and joins the thread, then removes `path` if it still names our socket. In a child
    /// made by fork() it only closes its descriptors: the thread, the socket's name and the stop
    /// event belong to the parent.
    ~FdServer();

    const std::string &path() const noexcept { return m_path; }
    /// Clients that were sent the descriptors.
    std::uint64_t served() const noexcept { return m_served.load(std::memory_order_relaxed); }
    /// Clients the policy refused (each was sent the reason).
    std::uint64_t refused() const noexcept { return m_refused.load(std::memory_order_relaxed); }
    /// Clients that got no reply: their credentials could not be read, or they were gone (or
    /// their socket full) by the time the reply went out.
    std::uint64_t dropped() const noexcept { return m_dropped.load(std::memory_order_relaxed); }

private:
    void run() noexcept;
    void accept_pending() noexcept;
    void serve(int client) noexcept;
    void rest() const noexcept; // a short wait that the stop event cuts short

    std::string m_path;
    FdPolicy m_policy;
    std::uint64_t m_instance_id;
    std::vector<posix::File> m_fds;
    std::vector<std::uint64_t> m_control; // the SCM_RIGHTS message, built once
    posix::File m_listen;
    posix::File m_stop; // eventfd: readable once the destructor wants the thread to end
    dev_t m_dev = 0;    // the socket's inode at `path`, so we remove only our own
    ino_t m_ino = 0;
    pid_t m_pid;
    std::atomic<std::uint64_t> m_served{0};
    std::atomic<std::uint64_t> m_refused{0};
    std::atomic<std::uint64_t> m_dropped{0};
    std::thread m_thread;
};

/// Fetches the descriptors from the server at `path`. Checks, before reading anything, that
/// the listening process runs as `server_uid` (or root), then waits for the reply until
/// `timeout` and checks that it names `instance_id` and carries exactly `expect_fds` descriptors
/// (1..FD_CHANNEL_MAX_FDS), which are returned close-on-exec.
/// Returns std::nullopt when nobody serves there: no socket (ENOENT), nobody listening
/// (ECONNREFUSED: the producer died), or the server closed without a reply (it is shutting down).
/// Throws std::system_error EPERM when the server refused us (the message gives its reason) or
/// runs as another uid; std::system_error EACCES when the socket's mode keeps us out; CorruptPool
/// for a malformed reply; Timeout when no reply came in time; Interrupted when the process's
/// interrupt check fired; InvalidArgument for a path that does not fit a sockaddr_un. Every
/// descriptor received is closed on every error.
std::optional<std::vector<posix::File>> fetch_fds(const std::string &path, uid_t server_uid,
                                                  std::uint64_t instance_id, std::size_t expect_fds,
                                                  Duration timeout);

} // namespace bips::detail
