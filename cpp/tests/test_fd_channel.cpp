// SPDX-License-Identifier: Apache-2.0
// The descriptor channel (fd_channel.hpp): who may have a pool's descriptors, that they arrive
// intact and shared, and that neither end trusts the other: strangers, stale and squatted names,
// garbage replies, clients and servers that never answer. Tests that need a second user run it
// as nobody in a child when we are root; as anyone else they use a uid that is not ours.
#include "support.hpp"

#include "fd_channel.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <memory>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <system_error>
#include <thread>
#include <unistd.h>

using namespace bips;
using namespace bips::test;
using bips::detail::fd_policy_allows;
using bips::detail::FdPolicy;
using bips::detail::FdReply;
using bips::detail::FdServer;
using bips::detail::fetch_fds;
using bips::posix::File;

namespace {

constexpr uid_t NOBODY = 65534;

std::string fd_path(const std::string &name) { return shm_path(name) + "@fd"; }

std::size_t count_entries(const char *dir) {
    std::size_t n = 0;
    std::unique_ptr<DIR, int (*)(DIR *)> d(::opendir(dir), ::closedir);
    if (!d)
        return 0;
    while (dirent *e = ::readdir(d.get()))
        if (e->d_name[0] != '.')
            ++n;
    return n;
}

std::size_t count_fds() { return count_entries("/proc/self/fd"); }
std::size_t count_threads() { return count_entries("/proc/self/task"); }

/// The temporary names a server of process `pid` binds under, still in /dev/shm.
std::size_t temp_names_of(pid_t pid) {
    const std::string prefix = ".bips-fd." + std::to_string(pid) + ".";
    std::size_t n = 0;
    std::unique_ptr<DIR, int (*)(DIR *)> d(::opendir("/dev/shm"), ::closedir);
    if (!d)
        return 0;
    while (dirent *e = ::readdir(d.get()))
        if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0)
            ++n;
    return n;
}

/// Fails the test if the scope leaves a descriptor, a thread or a temporary name behind.
class LeakCheck {
public:
    LeakCheck() {
        // ThreadSanitizer starts a thread of its own with the process's second thread.
        std::thread([] {}).join();
        // ...and a joined thread leaves /proc a moment after join() returns.
        wait_until(
            [&] {
                m_threads = count_threads();
                std::this_thread::sleep_for(2ms);
                return count_threads() == m_threads;
            },
            200ms);
        m_fds = count_fds();
    }
    LeakCheck(const LeakCheck &) = delete;
    LeakCheck &operator=(const LeakCheck &) = delete;
    ~LeakCheck() {
        CHECK_EQ(count_fds(), m_fds);
        CHECK(wait_until([&] { return count_threads() == m_threads; }, 1000ms));
        CHECK_EQ(temp_names_of(::getpid()), 0u);
    }

private:
    std::size_t m_fds = 0;
    std::size_t m_threads = 0;
};

File memfd_with(const std::string &content) {
    File f(::memfd_create("bips-fd-test", MFD_CLOEXEC));
    REQUIRE(f);
    REQUIRE(::ftruncate(f.get(), 4096) == 0);
    REQUIRE_EQ(::pwrite(f.get(), content.data(), content.size(), 0),
               static_cast<ssize_t>(content.size()));
    return f;
}

std::string read_text(int fd, std::size_t n) {
    std::string s(n, '\0');
    const ssize_t r = ::pread(fd, s.data(), n, 0);
    return r < 0 ? std::string() : s.substr(0, static_cast<std::size_t>(r));
}

File dup_of(const File &f) {
    File d(::fcntl(f.get(), F_DUPFD_CLOEXEC, 0));
    REQUIRE(d);
    return d;
}

std::vector<File> fds_of(const File &a) {
    std::vector<File> v;
    v.push_back(dup_of(a));
    return v;
}

bool same_inode(int a, int b) {
    struct stat sa{}, sb{};
    return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

FdPolicy mine(mode_t mode = 0600) { return FdPolicy{::geteuid(), ::getegid(), mode}; }

bool am_root() { return ::geteuid() == 0; }

/// In a child: drops every privilege and becomes nobody (only root can).
void become_nobody() {
    REQUIRE(::setgroups(0, nullptr) == 0);
    REQUIRE(::setgid(NOBODY) == 0);
    REQUIRE(::setuid(NOBODY) == 0);
    REQUIRE(::geteuid() == NOBODY);
}

/// The errno of a std::system_error `f` throws (0: it threw nothing), and its message.
template <class F> int system_error_of(F f, std::string *message = nullptr) {
    try {
        f();
    } catch (const std::system_error &e) {
        if (message)
            *message = e.what();
        return e.code().value();
    }
    return 0;
}

bool contains(const std::string &s, const std::string &part) {
    return s.find(part) != std::string::npos;
}

int bound_socket(const std::string &path) {
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    REQUIRE(s >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof(a.sun_path));
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    if (::bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        ::close(s);
        fail(__FILE__, __LINE__, "bind(" + path + "): " + std::strerror(errno));
        throw Abort{};
    }
    return s;
}

/// A test-made server at `path` that answers one client with whatever it is told to, as a
/// broken or hostile server would.
class RawServer {
public:
    explicit RawServer(std::string path, bool listening = true) : m_path(std::move(path)) {
        m_fd = bound_socket(m_path);
        if (listening)
            REQUIRE(::listen(m_fd, 8) == 0);
    }
    RawServer(const RawServer &) = delete;
    RawServer &operator=(const RawServer &) = delete;
    ~RawServer() {
        if (m_thread.joinable())
            m_thread.join();
        if (m_held >= 0)
            ::close(m_held);
        ::close(m_fd);
        ::unlink(m_path.c_str());
    }

    /// Accepts one client (within 5 s) and sends it `bytes` with `fds` attached, then closes it,
    /// or, with `hold`, keeps it open without a word until destroyed. With `send` false it
    /// closes the client without sending anything.
    void answer_once(std::vector<unsigned char> bytes, std::vector<int> fds, bool hold = false,
                     bool send = true) {
        m_thread = std::thread([this, bytes = std::move(bytes), fds = std::move(fds), hold, send] {
            pollfd p{m_fd, POLLIN, 0};
            if (::poll(&p, 1, 5000) != 1)
                return;
            int c = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0)
                return;
            if (send) {
                iovec iov{const_cast<unsigned char *>(bytes.data()), bytes.size()};
                msghdr msg{};
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                std::vector<std::uint64_t> control((CMSG_SPACE(fds.size() * sizeof(int)) + 7) / 8,
                                                   0);
                if (!fds.empty()) {
                    msg.msg_control = control.data();
                    msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
                    cmsghdr *cm = CMSG_FIRSTHDR(&msg);
                    cm->cmsg_level = SOL_SOCKET;
                    cm->cmsg_type = SCM_RIGHTS;
                    cm->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
                    std::memcpy(CMSG_DATA(cm), fds.data(), fds.size() * sizeof(int));
                }
                if (::sendmsg(c, &msg, MSG_NOSIGNAL) < 0)
                    fail(__FILE__, __LINE__, std::string("sendmsg: ") + std::strerror(errno));
            }
            if (hold)
                m_held = c;
            else
                ::close(c);
        });
    }

private:
    std::string m_path;
    int m_fd = -1;
    int m_held = -1;
    std::thread m_thread;
};

FdReply good_reply(std::uint64_t instance, std::uint32_t nfds) {
    FdReply r;
    std::memset(&r, 0, sizeof r);
    std::memcpy(r.magic, bips::detail::FD_REPLY_MAGIC, sizeof r.magic);
    r.version = bips::detail::FD_REPLY_VERSION;
    r.status = bips::detail::FD_REPLY_OK;
    r.instance_id = instance;
    r.nfds = nfds;
    return r;
}

std::vector<unsigned char> bytes_of(const FdReply &r) {
    const auto *p = reinterpret_cast<const unsigned char *>(&r);
    return std::vector<unsigned char>(p, p + sizeof r);
}

/// A client socket connected to `path` that never reads.
int connected_client(const std::string &path) {
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    REQUIRE(s >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::connect(s, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    return s;
}

} // namespace

BIPS_TEST(fd_channel_policy_follows_file_permissions) {
    std::string why;
    const uid_t owner = 1000, stranger = 1001;
    const gid_t group = 100, other_group = 5;
    // Owner and root, whatever the mode.
    for (mode_t mode : {0600, 0660, 0666, 0606}) {
        CHECK(fd_policy_allows({owner, group, mode}, owner, other_group, {}, &why));
        CHECK(fd_policy_allows({owner, group, mode}, 0, other_group, {}, &why));
    }
    // 0600: nobody else, member or not.
    CHECK(!fd_policy_allows({owner, group, 0600}, stranger, group, {}, &why));
    CHECK(contains(why, "uid 1001") && contains(why, "in its group (gid 100)") &&
          contains(why, "mode 0600"));
    why.clear();
    CHECK(!fd_policy_allows({owner, group, 0600}, stranger, other_group, {}, &why));
    CHECK(contains(why, "uid 1001") && contains(why, "neither its owner (uid 1000)") &&
          contains(why, "mode 0600"));
    // 0660: members by the primary or a supplementary group; others not.
    CHECK(fd_policy_allows({owner, group, 0660}, stranger, group, {}, &why));
    CHECK(fd_policy_allows({owner, group, 0660}, stranger, other_group, {7, group, 9}, &why));
    CHECK(!fd_policy_allows({owner, group, 0660}, stranger, other_group, {7, 9}, &why));
    // Read or write alone is not enough: the descriptors give write access to the pixels.
    CHECK(!fd_policy_allows({owner, group, 0640}, stranger, group, {}, &why));
    CHECK(!fd_policy_allows({owner, group, 0620}, stranger, group, {}, &why));
    CHECK(!fd_policy_allows({owner, group, 0664}, stranger, other_group, {}, &why));
    CHECK(!fd_policy_allows({owner, group, 0662}, stranger, other_group, {}, &why));
    // 0666: anyone.
    CHECK(fd_policy_allows({owner, group, 0666}, stranger, other_group, {}, &why));
    CHECK(fd_policy_allows({owner, group, 0666}, stranger, group, {}, &why));
    // One class decides, as for files: 0606 keeps the group out and lets the others in.
    CHECK(!fd_policy_allows({owner, group, 0606}, stranger, group, {}, &why));
    CHECK(!fd_policy_allows({owner, group, 0606}, stranger, other_group, {group}, &why));
    CHECK(fd_policy_allows({owner, group, 0606}, stranger, other_group, {}, &why));
    // Bits outside the permissions (setuid, sticky, a file type) change nothing.
    CHECK(!fd_policy_allows({owner, group, 04600 | S_IFREG}, stranger, other_group, {}, &why));
    // `why` is optional.
    CHECK(!fd_policy_allows({owner, group, 0600}, stranger, other_group, {}, nullptr));
}

BIPS_TEST(fd_channel_round_trip_shares_the_files) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    File a = memfd_with("first file"), b = memfd_with("second file");
    std::vector<File> fds;
    fds.push_back(dup_of(a));
    fds.push_back(dup_of(b));
    auto server = std::make_unique<FdServer>(path, mine(0640), 77, std::move(fds));
    CHECK_EQ(server->path(), path);
    // The name is our socket, with the pool's mode (the owner keeps rw).
    struct stat st{};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK_EQ(st.st_mode & 07777, 0640u);
    CHECK_EQ(st.st_uid, ::geteuid());

    for (int round = 1; round <= 2; ++round) {
        auto got = fetch_fds(path, ::geteuid(), 77, 2, 2s * SLOWDOWN);
        REQUIRE(got.has_value());
        REQUIRE_EQ(got->size(), 2u);
        CHECK(same_inode((*got)[0].get(), a.get()));
        CHECK(same_inode((*got)[1].get(), b.get()));
        CHECK_EQ(read_text((*got)[0].get(), 10), std::string("first file"));
        CHECK_EQ(read_text((*got)[1].get(), 11), std::string("second file"));
        for (const auto &f : *got)
            CHECK_EQ(::fcntl(f.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        // A mapping of the received descriptor is the same memory as the original.
        void *m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, (*got)[1].get(), 0);
        REQUIRE(m != MAP_FAILED);
        const std::string news = "written through the original " + std::to_string(round);
        REQUIRE_EQ(::pwrite(b.get(), news.data(), news.size(), 100),
                   static_cast<ssize_t>(news.size()));
        CHECK_EQ(std::string(static_cast<char *>(m) + 100, news.size()), news);
        std::memcpy(static_cast<char *>(m) + 200, "back", 4);
        char back[4] = {};
        CHECK_EQ(::pread(b.get(), back, 4, 200), 4);
        CHECK_EQ(std::string(back, 4), std::string("back"));
        ::munmap(m, 4096);
        // Counted once sendmsg() returns, which may be after we received.
        CHECK(wait_until([&] { return server->served() == static_cast<std::uint64_t>(round); },
                         1000ms));
    }
    CHECK_EQ(server->refused(), 0u);
    // Stopping wakes the thread at once: no polling loop to wait out.
    const auto start = std::chrono::steady_clock::now();
    server.reset();
    CHECK(seconds_since(start) < 0.5 * SLOWDOWN);
    CHECK(::access(path.c_str(), F_OK) != 0); // its own socket is gone
}

BIPS_TEST(fd_channel_serves_a_child_process) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    File a = memfd_with("from the parent");
    FdServer server(path, mine(), 5, fds_of(a));
    Child child = Child::fork([&] {
        auto got = fetch_fds(path, ::geteuid(), 5, 1, 2s * SLOWDOWN);
        REQUIRE(got.has_value());
        REQUIRE_EQ(got->size(), 1u);
        CHECK_EQ(read_text((*got)[0].get(), 15), std::string("from the parent"));
        void *m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, (*got)[0].get(), 0);
        REQUIRE(m != MAP_FAILED);
        std::memcpy(m, "from the child!", 15);
        ::munmap(m, 4096);
        return 0;
    });
    CHECK_EQ(child.wait(5000ms * SLOWDOWN), 0);
    CHECK_EQ(read_text(a.get(), 15), std::string("from the child!"));
    CHECK(wait_until([&] { return server.served() == 1; }, 1000ms));
}

BIPS_TEST(fd_channel_wrong_instance_is_corrupt) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    File a = memfd_with("x");
    FdServer server(path, mine(), 1234, fds_of(a));
    // The descriptor it sent is closed again: LeakCheck counts.
    CHECK_THROWS_AS(fetch_fds(path, ::geteuid(), 1235, 1, 2s * SLOWDOWN), CorruptPool);
    // The wrong number of descriptors expected is as bad.
    CHECK_THROWS_AS(fetch_fds(path, ::geteuid(), 1234, 2, 2s * SLOWDOWN), CorruptPool);
    CHECK(fetch_fds(path, ::geteuid(), 1234, 1, 2s * SLOWDOWN).has_value());
}

BIPS_TEST(fd_channel_server_of_another_uid_is_refused) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    if (!am_root()) {
        File a = memfd_with("x");
        FdServer server(path, mine(), 9, fds_of(a));
        std::string msg;
        CHECK_EQ(system_error_of([&] { fetch_fds(path, ::geteuid() + 1, 9, 1, 2s); }, &msg), EPERM);
        CHECK(contains(msg, "served by uid " + std::to_string(::geteuid())));
        // The server did send (it admits us); the client never took the descriptors.
        return;
    }
    // Root is trusted as a server, so the stranger's server is nobody, in a child.
    Pipe ready, done;
    Child child = Child::fork([&] {
        become_nobody();
        File a = memfd_with("nobody's");
        FdServer server(path, FdPolicy{NOBODY, NOBODY, 0600}, 9, fds_of(a));
        ready.signal();
        done.wait(10000ms * SLOWDOWN);
        return 0;
    });
    REQUIRE_EQ(ready.wait(5000ms * SLOWDOWN), '!');
    std::string msg;
    CHECK_EQ(system_error_of([&] { fetch_fds(path, 4242, 9, 1, 2s); }, &msg), EPERM);
    CHECK(contains(msg, "served by uid 65534"));
    // The right uid: root may use anyone's pool.
    auto got = fetch_fds(path, NOBODY, 9, 1, 2s * SLOWDOWN);
    REQUIRE(got.has_value());
    CHECK_EQ(read_text((*got)[0].get(), 8), std::string("nobody's"));
    got.reset();
    done.signal();
    CHECK_EQ(child.wait(5000ms * SLOWDOWN), 0);
    CHECK(::access(path.c_str(), F_OK) != 0);
}

BIPS_TEST(fd_channel_refusal_tells_why) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    File a = memfd_with("secret");
    if (!am_root()) {
        // Neither owner nor in the group.
        {
            FdServer server(path, FdPolicy{::geteuid() + 1, ::getegid() + 1, 0600}, 3, fds_of(a));
            std::string msg;
            CHECK_EQ(system_error_of([&] { fetch_fds(path, ::geteuid(), 3, 1, 2s); }, &msg), EPERM);
            CHECK(contains(msg, "refused"));
            CHECK(contains(msg, "uid " + std::to_string(::geteuid())));
            CHECK(contains(msg, "mode 0600"));
            CHECK_EQ(server.refused(), 1u);
            CHECK_EQ(server.served(), 0u);
        }
        // In the group, which the mode leaves out (the file lets us connect: 0606).
        FdServer server(path, FdPolicy{::geteuid() + 1, ::getegid(), 0606}, 3, fds_of(a));
        std::string msg;
        CHECK_EQ(system_error_of([&] { fetch_fds(path, ::geteuid(), 3, 1, 2s); }, &msg), EPERM);
        CHECK(contains(msg, "is in its group"));
        CHECK_EQ(server.refused(), 1u);
        return;
    }
    // Root is always admitted; the one refused is nobody, in a child.
    auto as_nobody = [&](int expect_errno, const std::string &expect_text) {
        Child child = Child::fork([&] {
            become_nobody();
            std::string msg;
            const int err = system_error_of(
                [&] {
                    auto got = fetch_fds(path, 0, 3, 1, 2s * SLOWDOWN);
                    REQUIRE(got.has_value());
                    CHECK_EQ(read_text((*got)[0].get(), 6), std::string("secret"));
                },
                &msg);
            CHECK_EQ(err, expect_errno);
            CHECK(contains(msg, expect_text));
            return 0;
        });
        CHECK_EQ(child.wait(5000ms * SLOWDOWN), 0);
    };
    {
        // The socket's mode lets nobody connect (0002), the policy wants rw: the server
        // refuses, with its reason.
        FdServer server(path, FdPolicy{4242, 4243, 0602}, 3, fds_of(a));
        as_nobody(EPERM, "uid 65534 is neither its owner (uid 4242) nor in its group (gid 4243)");
        CHECK_EQ(server.refused(), 1u);
        CHECK_EQ(server.served(), 0u);
        // Root is always admitted.
        CHECK(fetch_fds(path, 0, 3, 1, 2s * SLOWDOWN).has_value());
    }
    {
        // 0600: the socket's own mode keeps nobody out before the server hears of it.
        FdServer server(path, FdPolicy{4242, 4243, 0600}, 3, fds_of(a));
        as_nobody(EACCES, "keeps uid 65534 out");
        CHECK_EQ(server.refused(), 0u);
    }
    {
        // 0666: nobody is admitted.
        FdServer server(path, FdPolicy{4242, 4243, 0666}, 3, fds_of(a));
        as_nobody(0, "");
        CHECK(wait_until([&] { return server.served() == 1; }, 1000ms));
    }
}

BIPS_TEST(fd_channel_nobody_there_is_nullopt) {
    LeakCheck leaks;
    const std::string name = unique_name();
    const std::string path = fd_path(name);
    CHECK(!fetch_fds(path, ::geteuid(), 1, 1, 2s).has_value());
    // Something that is not a socket under the name: nobody serves there either.
    write_shm_file(name + "@fd", {1, 2, 3});
    CHECK(!fetch_fds(path, ::geteuid(), 1, 1, 2s).has_value());
    ::unlink(path.c_str());
}

BIPS_TEST(fd_channel_stale_socket_is_nullopt_and_replaced) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    File a = memfd_with("fresh");
    // A socket bound and closed, never listening.
    ::close(bound_socket(path));
    const auto start = std::chrono::steady_clock::now();
    CHECK(!fetch_fds(path, ::geteuid(), 1, 1, 5s).has_value());
    CHECK(seconds_since(start) < 1.0 * SLOWDOWN); // told at once, not after the timeout
    {
        // A new server takes the name over.
        FdServer server(path, mine(), 1, fds_of(a));
        CHECK(fetch_fds(path, ::geteuid(), 1, 1, 2s * SLOWDOWN).has_value());
    }
    // A server whose process was killed leaves its socket behind.
    Pipe ready;
    Child child = Child::fork([&] {
        FdServer server(path, mine(), 2, fds_of(a));
        ready.signal();
        ::pause();
        return 0;
    });
    REQUIRE_EQ(ready.wait(5000ms * SLOWDOWN), '!');
    child.kill();
    struct stat st{};
    CHECK(::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode));
    CHECK(!fetch_fds(path, ::geteuid(), 2, 1, 5s).has_value());
    FdServer server(path, mine(), 3, fds_of(a));
    auto got = fetch_fds(path, ::geteuid(), 3, 1, 2s * SLOWDOWN);
    REQUIRE(got.has_value());
    CHECK_EQ(read_text((*got)[0].get(), 5), std::string("fresh"));
}

BIPS_TEST(fd_channel_idle_clients_do_not_block_others) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    File a = memfd_with("shared");
    FdServer server(path, mine(), 8, fds_of(a));
    std::vector<int> idle;
    for (int i = 0; i < 20; ++i)
        idle.push_back(connected_client(path)); // never read their replies
    {
        int chatty = connected_client(path); // talks instead of listening
        const char junk[64] = "let me in";
        ::send(chatty, junk, sizeof junk, MSG_NOSIGNAL);
        ::close(connected_client(path)); // leaves at once
        ::close(chatty);
    }
    auto got = fetch_fds(path, ::geteuid(), 8, 1, 2s * SLOWDOWN);
    REQUIRE(got.has_value());
    CHECK_EQ(read_text((*got)[0].get(), 6), std::string("shared"));
    // Clients in parallel, while the idle ones still hold their replies.
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 10; ++i) {
                try {
                    auto g = fetch_fds(path, ::geteuid(), 8, 1, 2s * SLOWDOWN);
                    if (g && g->size() == 1 && same_inode((*g)[0].get(), a.get()))
                        ++ok;
                } catch (...) {
                }
            }
        });
    for (auto &t : threads)
        t.join();
    CHECK_EQ(ok.load(), 40);
    CHECK(wait_until([&] { return server.served() >= 41u + 20u; }, 1000ms));
    for (int s : idle)
        ::close(s);
}

BIPS_TEST(fd_channel_removes_only_its_own_socket) {
    LeakCheck leaks;
    const std::string name = unique_name();
    const std::string path = fd_path(name);
    File a = memfd_with("x");
    {
        FdServer server(path, mine(), 1, fds_of(a));
        // Someone replaces the name (a later producer of ours, root).
        const std::string other = shm_path(name) + "@other";
        ::close(bound_socket(other));
        REQUIRE(::rename(other.c_str(), path.c_str()) == 0);
    }
    struct stat st{};
    CHECK(::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)); // left alone
    ::unlink(path.c_str());
    {
        // A name already gone is no trouble either.
        FdServer server(path, mine(), 1, fds_of(a));
        REQUIRE(::unlink(path.c_str()) == 0);
    }
    CHECK(::access(path.c_str(), F_OK) != 0);
}

BIPS_TEST(fd_channel_rejects_what_does_not_fit) {
    LeakCheck leaks;
    File a = memfd_with("x");
    // sun_path holds 107 bytes and the NUL: 107 fits, 108 does not.
    const std::string base = fd_path(unique_name());
    const std::string fits = base + std::string(107 - base.size(), 'x');
    const std::string too_long = fits + "x";
    CHECK_THROWS_AS(FdServer(too_long, mine(), 1, fds_of(a)), InvalidArgument);
    CHECK_THROWS_AS(fetch_fds(too_long, ::geteuid(), 1, 1, 1s), InvalidArgument);
    {
        FdServer server(fits, mine(), 1, fds_of(a));
        CHECK(fetch_fds(fits, ::geteuid(), 1, 1, 2s * SLOWDOWN).has_value());
    }
    CHECK(::access(fits.c_str(), F_OK) != 0);
    CHECK_THROWS_AS(FdServer(base, mine(), 1, {}), InvalidArgument);
    CHECK_THROWS_AS(FdServer("", mine(), 1, fds_of(a)), InvalidArgument);
    CHECK_THROWS_AS(fetch_fds(base, ::geteuid(), 1, 0, 1s), InvalidArgument);
    CHECK_THROWS_AS(fetch_fds(base, ::geteuid(), 1, 254, 1s), InvalidArgument);
    CHECK(::access(base.c_str(), F_OK) != 0);
}

BIPS_TEST(fd_channel_malformed_replies_are_corrupt) {
    const std::string path = fd_path(unique_name());
    File a = memfd_with("a"), b = memfd_with("b"), c = memfd_with("c");
    const std::vector<int> one{a.get()}, two{a.get(), b.get()}, three{a.get(), b.get(), c.get()};
    enum class Want { ok, corrupt, refused, nothing };
    auto expect = [&](const char *what, std::vector<unsigned char> bytes, std::vector<int> fds,
                      Want want, std::size_t expect_fds = 1, bool send = true) {
        const std::size_t fds_before = count_fds();
        std::string msg;
        {
            RawServer server(path);
            server.answer_once(std::move(bytes), std::move(fds), false, send);
            try {
                auto got = fetch_fds(path, ::geteuid(), 42, expect_fds, 2s * SLOWDOWN);
                if (want == Want::ok && (!got || got->size() != expect_fds))
                    fail(__FILE__, __LINE__, std::string(what) + ": no descriptors");
                if (want != Want::ok && (want != Want::nothing || got.has_value()))
                    fail(__FILE__, __LINE__, std::string(what) + ": accepted");
            } catch (const CorruptPool &e) {
                msg = e.what();
                if (want != Want::corrupt)
                    fail(__FILE__, __LINE__, std::string(what) + ": CorruptPool " + msg);
            } catch (const std::system_error &e) {
                msg = e.what();
                if (want != Want::refused || e.code().value() != EPERM)
                    fail(__FILE__, __LINE__, std::string(what) + ": system_error " + msg);
            }
        }
        if (count_fds() != fds_before)
            fail(__FILE__, __LINE__, std::string(what) + ": descriptors leaked");
        return msg;
    };
    FdReply r = good_reply(42, 1);
    // The reply this server would have to send to be believed.
    expect("a good reply", bytes_of(r), one, Want::ok);
    {
        RawServer server(path);
        server.answer_once(bytes_of(r), one);
        auto got = fetch_fds(path, ::geteuid(), 42, 1, 2s * SLOWDOWN);
        CHECK(got.has_value() && got->size() == 1 && same_inode((*got)[0].get(), a.get()));
    }

    auto short_reply = bytes_of(r);
    short_reply.resize(10);
    CHECK(contains(expect("short", short_reply, one, Want::corrupt), "10 bytes"));
    auto long_reply = bytes_of(r);
    long_reply.resize(long_reply.size() + 8);
    expect("long", long_reply, one, Want::corrupt);
    expect("empty with a descriptor", {}, one, Want::corrupt);
    FdReply bad = r;
    bad.magic[0] = 'X';
    CHECK(contains(expect("magic", bytes_of(bad), one, Want::corrupt), "magic"));
    bad = r;
    bad.version = 2;
    expect("version", bytes_of(bad), one, Want::corrupt);
    bad = r;
    bad.reserved = 1;
    expect("reserved", bytes_of(bad), one, Want::corrupt);
    bad = r;
    bad.status = 7;
    expect("status", bytes_of(bad), one, Want::corrupt);
    bad = r;
    bad.instance_id = 43;
    CHECK(contains(expect("instance", bytes_of(bad), one, Want::corrupt), "instance 43"));
    expect("announced but missing", bytes_of(r), {}, Want::corrupt);
    bad = r;
    bad.nfds = 2;
    expect("announces two, expected one", bytes_of(bad), two, Want::corrupt);
    expect("carries two, announces one", bytes_of(r), two, Want::corrupt);
    CHECK(contains(expect("carries three", bytes_of(r), three, Want::corrupt), "truncated"));
    expect("carries one, expected two", bytes_of(good_reply(42, 2)), one, Want::corrupt, 2);
    bad = r;
    bad.status = bips::detail::FD_REPLY_REFUSED;
    bad.nfds = 0;
    expect("a refusal with descriptors", bytes_of(bad), one, Want::corrupt);
    // A refusal's reason reaches our message as printable text only, and no further than its
    // field even without a NUL.
    std::memset(bad.reason, 'z', sizeof bad.reason);
    std::memcpy(bad.reason, "go \x1b[31maway\n", 13);
    const std::string msg = expect("a refusal", bytes_of(bad), {}, Want::refused);
    CHECK(contains(msg, "go ?[31maway?zzz"));
    CHECK(!contains(msg, "\x1b"));
    CHECK(contains(msg, std::string(sizeof bad.reason - 13, 'z')));
    CHECK(!contains(msg, std::string(sizeof bad.reason - 12, 'z')));
    // A server that closes without a reply, or with an empty message (the same thing on a
    // SOCK_SEQPACKET socket): it is going away.
    expect("closed without a word", {}, {}, Want::nothing, 1, false);
    expect("an empty message", {}, {}, Want::nothing);
}

BIPS_TEST(fd_channel_silent_server_times_out) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    const auto timeout = 300ms;
    for (int accepting = 0; accepting < 2; ++accepting) {
        RawServer server(path);
        if (accepting)
            server.answer_once({}, {}, true, false); // accepts, then holds the client silently
        const auto start = std::chrono::steady_clock::now();
        CHECK_THROWS_AS(fetch_fds(path, ::geteuid(), 1, 1, timeout), Timeout);
        const double took = seconds_since(start);
        CHECK(took >= 0.29);
        CHECK(took < 0.3 + 0.5 * SLOWDOWN);
    }
    // The process's interrupt check ends the wait long before the timeout.
    RawServer server(path);
    auto previous = set_interrupt_check([]() noexcept { return true; });
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(fetch_fds(path, ::geteuid(), 1, 1, 10s), Interrupted);
    set_interrupt_check(previous);
    CHECK(seconds_since(start) < 1.0 * SLOWDOWN);
}

BIPS_TEST(fd_channel_another_users_name_is_eperm) {
    if (!am_root()) {
        std::fprintf(stderr, "  (needs root, to own a file as another user: not run)\n");
        return;
    }
    // Root's file under the name; nobody may not replace it in sticky /dev/shm.
    const std::string name = unique_name();
    const std::string path = fd_path(name);
    write_shm_file(name + "@fd", {1});
    Child child = Child::fork([&] {
        become_nobody();
        File a = memfd_with("x");
        std::string msg;
        const int err = system_error_of([&] { FdServer server(path, mine(), 1, fds_of(a)); }, &msg);
        CHECK_EQ(err, EPERM);
        CHECK(contains(msg, "belongs to uid 0"));
        CHECK_EQ(temp_names_of(::getpid()), 0u); // its temporary name is gone
        return 0;
    });
    const pid_t pid = child.pid();
    CHECK_EQ(child.wait(5000ms * SLOWDOWN), 0);
    CHECK_EQ(temp_names_of(pid), 0u);
    CHECK_EQ(read_shm_file(name + "@fd"), std::vector<unsigned char>{1});
    ::unlink(path.c_str());
}

BIPS_TEST(fd_channel_forked_children_leave_the_server_alone) {
    LeakCheck leaks;
    const std::string path = fd_path(unique_name());
    File a = memfd_with("parent");
    {
        // A child that drops its copy neither stops the parent's thread nor removes its name.
        auto server = std::make_unique<FdServer>(path, mine(), 4, fds_of(a));
        Child child = Child::fork([&] {
            server.reset();
            return 0;
        });
        CHECK_EQ(child.wait(5000ms * SLOWDOWN), 0);
        CHECK(::access(path.c_str(), F_OK) == 0);
        auto got = fetch_fds(path, ::geteuid(), 4, 1, 2s * SLOWDOWN);
        CHECK(got.has_value());
    }
    // A producer that dies while a child it forked lives on: the child does not keep the
    // listening socket, so clients learn at once that nobody serves.
    int hold[2];
    REQUIRE(::pipe2(hold, O_CLOEXEC) == 0);
    Pipe ready, grandchild_ready;
    Child producer = Child::fork([&] {
        FdServer server(path, mine(), 5, fds_of(a));
        if (::fork() == 0) {
            ::alarm(10);
            ::close(hold[1]);
            char c;
            grandchild_ready.signal();
            while (::read(hold[0], &c, 1) < 0 && errno == EINTR) {
            }
            ::_exit(0); // parent gone and its end closed
        }
        REQUIRE_EQ(grandchild_ready.wait(5000ms), '!');
        ready.signal();
        ::pause();
        return 0;
    });
    ::close(hold[0]);
    REQUIRE_EQ(ready.wait(5000ms * SLOWDOWN), '!');
    producer.kill();
    const auto start = std::chrono::steady_clock::now();
    CHECK(!fetch_fds(path, ::geteuid(), 5, 1, 3s).has_value());
    CHECK(seconds_since(start) < 1.0 * SLOWDOWN);
    ::close(hold[1]); // the grandchild exits
    ::unlink(path.c_str());
}
