// SPDX-License-Identifier: Apache-2.0
#include "fd_channel.hpp"

#include "fork_guard.hpp"

#include "interrupt.hpp"
#include "posix/clock.hpp"
#include "posix/error.hpp"

#include <bips/errors.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <mutex>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <system_error>
#include <unistd.h>

namespace bips::detail {

namespace {

constexpr int BACKLOG = 64;
// Clients served per wake-up before the stop event is looked at again.
constexpr int ACCEPT_BURST = 64;
// How long the thread rests after a failure that would otherwise make poll() return at once
// (out of descriptors or memory): the pending client stays queued and is served after it.
constexpr int PAUSE_MS = 10;
// A client's supplementary groups are at most NGROUPS_MAX (65536).
constexpr std::size_t MAX_GROUPS = 65536;

std::string octal_mode(mode_t mode) {
    char s[8];
    std::snprintf(s, sizeof s, "0%03o", static_cast<unsigned>(mode & 07777));
    return s;
}

sockaddr_un unix_address(const std::string &path, socklen_t *len, const char *what) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(a.sun_path) || path.find('\0') != std::string::npos)
        throw InvalidArgument(std::string(what) + ": socket path '" + path + "' must be 1 to " +
                              std::to_string(sizeof(a.sun_path) - 1) +
                              " bytes without NUL (sockaddr_un)");
    std::memcpy(a.sun_path, path.data(), path.size());
    *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return a;
}

/// A name for binding next to `path` that no pool has (pool names never start with '.').
std::string temporary_name(const std::string &path) {
    std::uint64_t r = 0;
    if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof r))
        r = static_cast<std::uint64_t>(posix::monotonic_ns()) * 0x9E3779B97F4A7C15ull;
    char tail[64];
    std::snprintf(tail, sizeof tail, ".bips-fd.%ld.%016llx", static_cast<long>(::getpid()),
                  static_cast<unsigned long long>(r));
    const auto slash = path.rfind('/');
    return (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + tail;
}

/// Removes a name we bound unless it was handed on (renamed over the real path).
class TempName {
public:
    explicit TempName(std::string path) : m_path(std::move(path)) {}
    TempName(const TempName &) = delete;
    TempName &operator=(const TempName &) = delete;
    ~TempName() {
        if (!m_path.empty())
            ::unlink(m_path.c_str());
    }
    const std::string &path() const noexcept { return m_path; }
    void release() noexcept { m_path.clear(); }

private:
    std::string m_path;
};

/// The peer's supplementary groups; empty where the kernel cannot say (SO_PEERGROUPS is Linux
/// 4.13+). Then only the primary group counts, which can only refuse someone a supplementary
/// membership would have admitted, never admit anyone.
std::vector<gid_t> peer_groups(int fd) {
    std::vector<gid_t> groups;
#ifdef SO_PEERGROUPS
    groups.resize(32);
    for (int attempt = 0; attempt < 4; ++attempt) {
        auto len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
            groups.resize(len / sizeof(gid_t));
            return groups;
        }
        // ERANGE: the kernel wrote the length it needs (the peer's groups are fixed).
        if (errno != ERANGE || len / sizeof(gid_t) <= groups.size() ||
            len / sizeof(gid_t) > MAX_GROUPS)
            break;
        groups.resize(len / sizeof(gid_t));
    }
    groups.clear();
#else
    (void)fd;
#endif
    return groups;
}

/// Only printable ASCII of a peer's text reaches our messages (no terminal escapes).
std::string printable(const char *s, std::size_t max) {
    std::string out;
    for (std::size_t i = 0; i < max && s[i] != '\0'; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
    }
    return out;
}

[[noreturn]] void malformed(const std::string &path, const std::string &why) {
    throw CorruptPool("the descriptor server at " + path + " sent a malformed reply: " + why);
}

std::string ms_text(Duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

} // namespace

bool fd_policy_allows(const FdPolicy &policy, uid_t uid, gid_t primary,
                      const std::vector<gid_t> &groups, std::string *why) {
    if (uid == 0 || uid == policy.owner)
        return true;
    const bool member = primary == policy.group ||
                        std::find(groups.begin(), groups.end(), policy.group) != groups.end();
    // As for files, one class decides: a member gets the group bits even where the other bits
    // would admit anyone (0606 keeps the group out), as the control file would keep it out.
    const mode_t need = member ? 0060 : 0006;
    if ((policy.mode & need) == need)
        return true;
    if (why) {
        const std::string who = "uid " + std::to_string(uid);
        const std::string mode = "mode " + octal_mode(policy.mode & 0777);
        if (member)
            *why = who + " is in its group (gid " + std::to_string(policy.group) + "), and " +
                   mode + " gives the group no read-write access (owner uid " +
                   std::to_string(policy.owner) + ")";
        else
            *why = who + " is neither its owner (uid " + std::to_string(policy.owner) +
                   ") nor in its group (gid " + std::to_string(policy.group) + "), and " + mode +
                   " gives others no read-write access";
    }
    return false;
}

FdServer::FdServer(const std::string &path, const FdPolicy &policy, std::uint64_t instance_id,
                   std::vector<posix::File> fds)
    : m_path(path), m_policy(policy), m_instance_id(instance_id), m_fds(std::move(fds)),
      m_pid(::getpid()) {
    const std::string what = "FdServer(" + path + ")";
    socklen_t addr_len = 0;
    (void)unix_address(path, &addr_len, what.c_str());
    if (path.back() == '/')
        throw InvalidArgument(what + ": the socket path names a directory");
    if (m_fds.empty() || m_fds.size() > FD_CHANNEL_MAX_FDS)
        throw InvalidArgument(what + ": " + std::to_string(m_fds.size()) +
                              " descriptors; one reply carries 1 to " +
                              std::to_string(FD_CHANNEL_MAX_FDS));
    for (const auto &f : m_fds) {
        if (!f)
            throw InvalidArgument(what + ": an empty descriptor");
        // A program we exec must not inherit the pool's memory.
        if (::fcntl(f.get(), F_SETFD, FD_CLOEXEC) != 0)
            posix::throw_errno(what + ": fcntl(F_SETFD)");
    }

    // The SCM_RIGHTS message, once: serving a client then costs no allocation.
    const std::size_t n = m_fds.size();
    m_control.assign(
        (CMSG_SPACE(n * sizeof(int)) + sizeof(std::uint64_t) - 1) / sizeof(std::uint64_t), 0);
    {
        msghdr msg{};
        msg.msg_control = m_control.data();
        msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
        cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        for (std::size_t i = 0; i < n; ++i) {
            const int fd = m_fds[i].get();
            std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
        }
    }

    m_stop = posix::File(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!m_stop)
        posix::throw_errno(what + ": eventfd");
    m_listen = posix::File(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!m_listen)
        posix::throw_errno(what + ": socket(AF_UNIX, SOCK_SEQPACKET)");
    // A child made by fork() must not keep it open: after the parent dies, clients would
    // connect to a socket nobody accepts on and wait their whole timeout instead of being told
    // at once (ECONNREFUSED) that the producer is gone.
    guard_across_fork(m_listen.get());
    try {
        // Bound under a name nobody else knows and not yet listening, the socket cannot be
        // connected to while its mode is still the umask's: it is only reachable at `path`
        // once it has its final mode and listens, and rename() makes that one step.
        std::unique_ptr<TempName> temp;
        for (int attempt = 0; !temp; ++attempt) {
            std::string name = temporary_name(path);
            socklen_t len = 0;
            const sockaddr_un a = unix_address(name, &len, what.c_str());
            if (::bind(m_listen.get(), reinterpret_cast<const sockaddr *>(&a), len) == 0) {
                temp = std::make_unique<TempName>(std::move(name));
            } else if (errno != EADDRINUSE || attempt >= 8) {
                // EADDRINUSE: something (a squatter guessing names) already lies there.
                posix::throw_errno(what + ": bind(" + name + ")");
            }
        }
        // Connecting needs write permission on the socket file: the owner keeps rw.
        const mode_t mode = (m_policy.mode & 0777) | 0600;
        // By name: fchmod() on a socket changes the socket, not the file. In sticky /dev/shm
        // nobody but us (and root) can have replaced our temporary name meanwhile.
        if (::chmod(temp->path().c_str(), mode) != 0)
            posix::throw_errno(what + ": chmod(" + temp->path() + ", " + octal_mode(mode) + ")");
        struct stat st{};
        if (::lstat(temp->path().c_str(), &st) != 0)
            posix::throw_errno(what + ": lstat(" + temp->path() + ")");
        if (st.st_gid != m_policy.group) {
            // The file's group bits should mean the pool's group. Best effort: where we may not
            // (not a member of it), the file's mode lets another group connect; the server's
            // own check, which decides who gets the descriptors, refuses them.
            [[maybe_unused]] int r =
                ::lchown(temp->path().c_str(), static_cast<uid_t>(-1), m_policy.group);
        }
        m_dev = st.st_dev;
        m_ino = st.st_ino;
        if (::listen(m_listen.get(), BACKLOG) != 0)
            posix::throw_errno(what + ": listen");
        if (::rename(temp->path().c_str(), path.c_str()) != 0) {
            const int err = errno;
            struct stat other{};
            if ((err == EPERM || err == EACCES) && ::lstat(path.c_str(), &other) == 0 &&
                other.st_uid != ::geteuid())
                throw std::system_error(
                    EPERM, std::generic_category(),
                    what + ": " + path + " belongs to uid " + std::to_string(other.st_uid) +
                        ", and only its owner (or root) may replace it in a sticky directory "
                        "such as /dev/shm; as that user or root remove it, or pick another pool "
                        "name");
            posix::throw_errno(err, what + ": rename(" + temp->path() + ", " + path + ")");
        }
        temp->release();
        try {
            m_thread = std::thread([this] { run(); });
        } catch (...) {
            struct stat now{};
            if (::lstat(path.c_str(), &now) == 0 && now.st_dev == m_dev && now.st_ino == m_ino)
                ::unlink(path.c_str());
            throw;
        }
    } catch (...) {
        unguard_across_fork(m_listen.get());
        throw;
    }
}

FdServer::~FdServer() {
    if (::getpid() == m_pid) {
        const std::uint64_t one = 1;
        // Cannot fail: the counter is far from overflowing and the descriptor is ours.
        [[maybe_unused]] ssize_t w = ::write(m_stop.get(), &one, sizeof one);
        m_thread.join();
        // Only our own socket: someone (root, a later producer of ours) may have replaced the
        // name. Between the check and the unlink only they could change it again: sticky
        // /dev/shm keeps everyone else from removing or renaming over our file.
        struct stat st{};
        if (::lstat(m_path.c_str(), &st) == 0 && st.st_dev == m_dev && st.st_ino == m_ino)
            ::unlink(m_path.c_str());
    } else {
        // A child made by fork(): the thread exists only in the parent, and the name and the
        // stop event are the parent's (the eventfd is shared: writing it would stop the
        // parent's server). The listening socket is /dev/null here already (guard_across_fork).
        m_thread.detach();
    }
    unguard_across_fork(m_listen.get());
}

void FdServer::rest() const noexcept {
    pollfd p{m_stop.get(), POLLIN, 0};
    ::poll(&p, 1, PAUSE_MS); // returns at once when the destructor asks us to stop
}

void FdServer::run() noexcept {
    // Signals sent to the process are for threads that want them (e.g. Python's main thread);
    // this one has nothing to do with them, and no system call of its own gets interrupted.
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    for (;;) {
        pollfd p[2] = {{m_stop.get(), POLLIN, 0}, {m_listen.get(), POLLIN, 0}};
        const int r = ::poll(p, 2, -1);
        if (r < 0) {
            if (errno != EINTR)
                rest(); // ENOMEM: try again shortly rather than stop serving
            continue;
        }
        if (p[0].revents != 0)
            return;
        if (p[1].revents & POLLIN)
            accept_pending();
        else if (p[1].revents != 0)
            rest(); // an error on the listening socket: never spin on it
    }
}

void FdServer::accept_pending() noexcept {
    for (int i = 0; i < ACCEPT_BURST; ++i) {
        const int c = ::accept4(m_listen.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c >= 0) {
            serve(c);
            ::close(c);
            continue;
        }
        switch (errno) {
        case EINTR:
        case ECONNABORTED: // the client left before we got to it
            continue;
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        default:
            // EMFILE, ENFILE, ENOBUFS, ENOMEM: the client stays queued; poll() would report it
            // again at once, so rest a moment first.
            rest();
            return;
        }
    }
}

void FdServer::serve(int client) noexcept {
    try {
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(client, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
            m_dropped.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        std::string why;
        const bool ok = fd_policy_allows(m_policy, cred.uid, cred.gid, peer_groups(client), &why);

        FdReply reply;
        std::memset(&reply, 0, sizeof reply);
        std::memcpy(reply.magic, FD_REPLY_MAGIC, sizeof reply.magic);
        reply.version = FD_REPLY_VERSION;
        reply.status = ok ? FD_REPLY_OK : FD_REPLY_REFUSED;
        // A stranger learns nothing of the pool but what its reason says (and ls -l shows).
        reply.instance_id = ok ? m_instance_id : 0;
        reply.nfds = ok ? static_cast<std::uint32_t>(m_fds.size()) : 0;
        if (!ok)
            std::memcpy(reply.reason, why.data(), std::min(why.size(), sizeof reply.reason - 1));

        iovec iov{&reply, sizeof reply};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (ok) {
            msg.msg_control = m_control.data();
            msg.msg_controllen = CMSG_SPACE(m_fds.size() * sizeof(int));
        }
        if (!ok)
            m_refused.fetch_add(1, std::memory_order_relaxed);
        // Never waits: a client that does not read, or left, costs its own reply and nothing
        // else (MSG_NOSIGNAL: one that left must not SIGPIPE the process).
        const ssize_t n = posix::retry_eintr(
            [&] { return ::sendmsg(client, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); });
        if (n != static_cast<ssize_t>(sizeof reply))
            m_dropped.fetch_add(1, std::memory_order_relaxed);
        else if (ok)
            m_served.fetch_add(1, std::memory_order_relaxed);
    } catch (...) {
        // bad_alloc from the groups or the reason: this client gets nothing, the rest go on.
        m_dropped.fetch_add(1, std::memory_order_relaxed);
    }
}

std::optional<std::vector<posix::File>> fetch_fds(const std::string &path, uid_t server_uid,
                                                  std::uint64_t instance_id, std::size_t expect_fds,
                                                  Duration timeout) {
    const std::string what = "fetch_fds(" + path + ")";
    socklen_t addr_len = 0;
    const sockaddr_un addr = unix_address(path, &addr_len, what.c_str());
    if (expect_fds == 0 || expect_fds > FD_CHANNEL_MAX_FDS)
        throw InvalidArgument(what + ": expecting " + std::to_string(expect_fds) +
                              " descriptors; one reply carries 1 to " +
                              std::to_string(FD_CHANNEL_MAX_FDS));
    const std::int64_t now0 = posix::monotonic_ns();
    const std::int64_t limit = std::max<std::int64_t>(timeout.count(), 0);
    const std::int64_t deadline = limit > std::numeric_limits<std::int64_t>::max() - now0
                                      ? std::numeric_limits<std::int64_t>::max()
                                      : now0 + limit;
    auto timed_out = [&] {
        throw Timeout(what + ": no reply from the descriptor server within " + ms_text(timeout));
    };

    posix::File sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!sock)
        posix::throw_errno(what + ": socket(AF_UNIX, SOCK_SEQPACKET)");

    // A Unix connect() completes at once unless the server's backlog is full; then it waits,
    // for at most SO_SNDTIMEO, and fails with EAGAIN.
    for (;;) {
        const std::int64_t left = std::max<std::int64_t>(deadline - posix::monotonic_ns(), 1000);
        const std::int64_t slice = interruptible(Duration(left)).count();
        timeval tv{};
        tv.tv_sec = static_cast<time_t>(slice / 1'000'000'000);
        tv.tv_usec = static_cast<suseconds_t>(slice % 1'000'000'000 / 1000);
        if (tv.tv_sec == 0 && tv.tv_usec == 0)
            tv.tv_usec = 1; // 0 would mean "wait forever"
        if (::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
            posix::throw_errno(what + ": setsockopt(SO_SNDTIMEO)");
        if (::connect(sock.get(), reinterpret_cast<const sockaddr *>(&addr), addr_len) == 0)
            break;
        const int err = errno;
        if (err == ENOENT || err == ECONNREFUSED)
            return std::nullopt;
        if (err == EISCONN) // an interrupted attempt got through after all
            break;
        if (err == EACCES)
            posix::throw_errno(err, what + ": connect: the socket's mode keeps uid " +
                                        std::to_string(::geteuid()) + " out");
        if (err != EINTR && err != EAGAIN)
            posix::throw_errno(err, what + ": connect");
        check_interrupt("fetch_fds", path);
        if (posix::monotonic_ns() >= deadline)
            timed_out();
    }

    // Who listens, as the kernel recorded it at listen(): before we read a byte, so that a
    // stranger who took the name cannot hand us anything.
    ucred cred{};
    socklen_t cred_len = sizeof cred;
    if (::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0)
        posix::throw_errno(what + ": getsockopt(SO_PEERCRED)");
    if (cred_len != sizeof cred || (cred.uid != server_uid && cred.uid != 0))
        throw std::system_error(EPERM, std::generic_category(),
                                what + ": the socket is served by uid " + std::to_string(cred.uid) +
                                    ", not by the pool's owner (uid " + std::to_string(server_uid) +
                                    "); another user's process answers under the pool's name");

    FdReply reply;
    alignas(cmsghdr) unsigned char control[CMSG_SPACE(FD_CHANNEL_MAX_FDS * sizeof(int))];
    std::vector<posix::File> fds;
    fds.reserve(expect_fds); // no allocation (that could throw) once descriptors are ours
    ssize_t n = 0;
    msghdr msg{};
    for (;;) {
        pollfd p{sock.get(), POLLIN, 0};
        const std::int64_t left = deadline - posix::monotonic_ns();
        const std::int64_t slice = std::max<std::int64_t>(interruptible(Duration(left)).count(), 0);
        // Rounded up: waking before the deadline would only spin.
        const std::int64_t slice_ms = slice / 1'000'000 + (slice % 1'000'000 != 0 ? 1 : 0);
        const auto ms =
            static_cast<int>(std::min<std::int64_t>(slice_ms, std::numeric_limits<int>::max()));
        const int r = ::poll(&p, 1, ms);
        if (r < 0 && errno != EINTR)
            posix::throw_errno(what + ": poll");
        if (r <= 0) {
            check_interrupt("fetch_fds", path);
            if (posix::monotonic_ns() >= deadline)
                timed_out();
            continue;
        }
        std::memset(&reply, 0, sizeof reply);
        iovec iov{&reply, sizeof reply};
        msg = msghdr{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        // Room for exactly the descriptors we expect (CMSG_LEN, not CMSG_SPACE, which rounds
        // up to room for one more): the kernel installs no more than that in our table and
        // drops the rest, reporting MSG_CTRUNC.
        msg.msg_controllen = CMSG_LEN(expect_fds * sizeof(int));
        n = posix::retry_eintr(
            [&] { return ::recvmsg(sock.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); });
        if (n >= 0)
            break;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            continue;
        if (errno == ECONNRESET) // the server closed before it got to us: it is shutting down
            return std::nullopt;
        posix::throw_errno(what + ": recvmsg");
    }

    // Take ownership of everything that came before judging any of it, so that every error
    // below closes it all.
    bool foreign_control = false;
    for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            foreign_control = true;
            continue;
        }
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
        }
    }
    if (n == 0 && fds.empty() && !foreign_control && !(msg.msg_flags & MSG_CTRUNC))
        return std::nullopt; // end of file: the server closed without a reply (shutting down)
    if (msg.msg_flags & MSG_CTRUNC)
        malformed(path, "more than the " + std::to_string(expect_fds) +
                            " descriptors expected (control data truncated)");
    if (foreign_control)
        malformed(path, "control data other than descriptors");
    if ((msg.msg_flags & MSG_TRUNC) || n != static_cast<ssize_t>(sizeof reply))
        malformed(path, (msg.msg_flags & MSG_TRUNC ? std::string("more than ")
                                                   : std::to_string(n) + " bytes, not ") +
                            std::to_string(sizeof reply) + " bytes");
    if (std::memcmp(reply.magic, FD_REPLY_MAGIC, sizeof reply.magic) != 0)
        malformed(path, "bad magic");
    if (reply.version != FD_REPLY_VERSION)
        malformed(path, "version " + std::to_string(reply.version) + ", expected " +
                            std::to_string(FD_REPLY_VERSION));
    if (reply.reserved != 0)
        malformed(path, "reserved field is not 0");
    if (reply.status == FD_REPLY_REFUSED) {
        if (reply.nfds != 0 || !fds.empty())
            malformed(path, "a refusal that carries descriptors");
        throw std::system_error(
            EPERM, std::generic_category(),
            what + ": the producer refused: " + printable(reply.reason, sizeof reply.reason));
    }
    if (reply.status != FD_REPLY_OK)
        malformed(path, "status " + std::to_string(reply.status));
    if (reply.instance_id != instance_id)
        malformed(path, "it serves pool instance " + std::to_string(reply.instance_id) + ", not " +
                            std::to_string(instance_id) +
                            " (a server of an earlier pool under the same name?)");
    if (reply.nfds != expect_fds)
        malformed(path, "it announces " + std::to_string(reply.nfds) + " descriptors, expected " +
                            std::to_string(expect_fds));
    if (fds.size() != expect_fds)
        malformed(path, "it carries " + std::to_string(fds.size()) + " descriptors, expected " +
                            std::to_string(expect_fds));
    return fds;
}

} // namespace bips::detail
