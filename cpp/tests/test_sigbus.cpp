// SPDX-License-Identifier: Apache-2.0
// A peer shrinking a pool file under our mappings (posix/sigbus.hpp): the process survives, the
// mapping reads zeros and says it was lost; SIGBUS anywhere else still does what it did before.
#include "support.hpp"

#include "posix/mapping.hpp"
#include "posix/sigbus.hpp"

#include <atomic>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace bips;
using namespace bips::test;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool SANITIZED = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool SANITIZED = true;
#else
constexpr bool SANITIZED = false;
#endif
#else
constexpr bool SANITIZED = false;
#endif

const std::size_t PAGE = posix::page_size();

/// /dev/shm/bips.NAME, `pages` pages of `fill`, open read-write; unlinked when it goes away.
class ShmFile {
public:
    ShmFile(std::size_t pages, unsigned char fill) : m_name(unique_name()), m_size(pages * PAGE) {
        m_fd = ::open(path().c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        REQUIRE(m_fd >= 0);
        std::vector<unsigned char> bytes(m_size, fill);
        REQUIRE_EQ(::pwrite(m_fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(m_size));
    }
    ShmFile(const ShmFile &) = delete;
    ShmFile &operator=(const ShmFile &) = delete;
    ~ShmFile() {
        ::close(m_fd);
        ::unlink(path().c_str());
    }
    int fd() const { return m_fd; }
    std::size_t size() const { return m_size; }
    std::string path() const { return shm_path(m_name); }
    /// ftruncate() through a descriptor of its own, as another party would.
    void truncate_to(std::size_t size) const {
        int fd = ::open(path().c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(fd >= 0);
        CHECK_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
        ::close(fd);
    }

private:
    std::string m_name;
    std::size_t m_size;
    int m_fd = -1;
};

unsigned peek(const std::byte *p) { return static_cast<unsigned>(*(const volatile std::byte *)p); }
void poke(std::byte *p, unsigned char v) { *(volatile std::byte *)p = std::byte{v}; }

/// Reads, writes and reads back the first and last byte of every page; true if every read
/// before the write gave `before`.
bool touch_every_page(const posix::Mapping &m, unsigned before, unsigned char write) {
    bool ok = true;
    for (std::size_t off = 0; off < m.size(); off += PAGE) {
        for (std::size_t at : {off, off + PAGE - 1}) {
            std::byte *p = m.data() + at;
            ok = ok && peek(p) == before;
            poke(p, write);
            ok = ok && peek(p) == write;
        }
    }
    return ok;
}

/// For children that are meant to die: no core file, no sanitizer report in the test log.
void quiet_death() {
    struct rlimit none{};
    ::setrlimit(RLIMIT_CORE, &none);
    int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0)
        ::dup2(null, STDERR_FILENO);
}

/// A file in /dev/shm that has no name any more (a child that dies leaves nothing behind).
int unnamed_shm_fd(std::size_t size) {
    std::string path = shm_path(unique_name());
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ::unlink(path.c_str());
    if (fd >= 0 && ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

/// Maps a file with plain mmap() (no guard), shrinks it and touches it: SIGBUS.
void unguarded_truncation_fault() {
    int fd = unnamed_shm_fd(4 * PAGE);
    if (fd < 0)
        ::_exit(90);
    void *p = ::mmap(nullptr, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED || ::ftruncate(fd, 0) != 0)
        ::_exit(91);
    poke(static_cast<std::byte *>(p) + PAGE, 1);
}

/// A guarded mapping, so that the handler is installed; kept for the child's lifetime.
std::optional<posix::Mapping> guarded_mapping() {
    int fd = unnamed_shm_fd(PAGE);
    if (fd < 0)
        ::_exit(92);
    std::optional<posix::Mapping> m;
    m.emplace(fd, PAGE, 0, PROT_READ | PROT_WRITE, "guard");
    ::close(fd);
    if (posix::sigbus_guards_in_use() == 0)
        ::_exit(93);
    return m;
}

} // namespace

BIPS_TEST(sigbus_truncated_mapping_reads_zero) {
    ShmFile f(16, 0xAB);
    const std::size_t in_use = posix::sigbus_guards_in_use();
    posix::Mapping rw(f.fd(), f.size(), 0, PROT_READ | PROT_WRITE, "rw");
    posix::Mapping ro(f.fd(), f.size(), 0, PROT_READ, "ro");
    CHECK_EQ(posix::sigbus_guards_in_use(), in_use + 2);
    CHECK_EQ(peek(rw.data()), 0xABu);
    CHECK(!rw.lost());

    f.truncate_to(0);
    CHECK(touch_every_page(rw, 0, 1));
    CHECK(rw.lost());
    // A read-only mapping of the same file is its own range: untouched so far, so not lost yet.
    CHECK(!ro.lost());
    bool zeros = true;
    for (std::size_t off = 0; off < ro.size(); off += PAGE)
        zeros = zeros && peek(ro.data() + off) == 0 && peek(ro.data() + off + PAGE - 1) == 0;
    CHECK(zeros);
    CHECK(ro.lost());
    struct stat st{};
    CHECK_EQ(::fstat(f.fd(), &st), 0);
    CHECK_EQ(st.st_size, 0); // what we wrote went to our private zero pages, not to the file
}

BIPS_TEST(sigbus_partial_truncation_loses_the_whole_range) {
    // Shrunk to 4 of 16 pages: the first fault past the end replaces the whole mapping, pages
    // still backed by the file included, so one lost() describes all of it.
    ShmFile f(16, 0xAB);
    posix::Mapping m(f.fd(), f.size(), 0, PROT_READ | PROT_WRITE, "m");
    f.truncate_to(4 * PAGE);
    CHECK_EQ(peek(m.data()), 0xABu);
    CHECK(!m.lost());
    CHECK_EQ(peek(m.data() + 8 * PAGE), 0u);
    CHECK(m.lost());
    CHECK_EQ(peek(m.data()), 0u);
    // A mapping at an offset (as the payload mapping is) is guarded the same way.
    posix::Mapping tail(f.fd(), 8 * PAGE, static_cast<off_t>(8 * PAGE), PROT_READ, "tail");
    CHECK_EQ(peek(tail.data() + PAGE), 0u);
    CHECK(tail.lost());
}

BIPS_TEST(sigbus_truncated_by_another_process) {
    ShmFile f(8, 0xAB);
    posix::Mapping m(f.fd(), f.size(), 0, PROT_READ | PROT_WRITE, "m");
    CHECK(touch_every_page(m, 0xAB, 0xCD)); // shared: the child sees these
    const std::string path = f.path();
    Child child = Child::fork([&]() -> int {
        int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return 2;
        unsigned char c = 0;
        if (::pread(fd, &c, 1, 0) != 1 || c != 0xCD)
            return 3;
        return ::ftruncate(fd, 0) == 0 ? 0 : 4;
    });
    REQUIRE_EQ(child.wait(5000ms), 0);
    CHECK(touch_every_page(m, 0, 1));
    CHECK(m.lost());
}

BIPS_TEST(sigbus_outside_guard_still_kills) {
    // Each case runs twice: in a child that never made a guarded mapping (what the process did
    // before bips had a SIGBUS handler) and in one that did. The outcome must be the same: death
    // by SIGBUS, or under a sanitizer whatever its own SIGBUS handler does.
    auto outcome = [](bool guard, void (*body)()) {
        Child c = Child::fork(
            [&]() -> int {
                quiet_death();
                std::optional<posix::Mapping> g;
                if (guard)
                    g = guarded_mapping();
                body();
                return 0; // survived: wrong
            },
            10);
        return c.wait(10000ms * SLOWDOWN);
    };
    void (*fault)() = unguarded_truncation_fault;
    void (*sent)() = [] { ::raise(SIGBUS); };
    for (auto body : {fault, sent}) {
        const int before = outcome(false, body);
        const int after = outcome(true, body);
        std::printf("%s: unguarded child ended with %d, guarded child with %d\n",
                    body == fault ? "fault" : "raise", before, after);
        CHECK_EQ(after, before);
        CHECK(after != 0 && after != -1);
        if (!SANITIZED)
            CHECK_EQ(after, 128 + SIGBUS);
    }
}

namespace {
void record_siginfo(int, siginfo_t *info, void *) { ::_exit(40 + (info->si_code > 0 ? 1 : 0)); }
void record_plain(int) { ::_exit(50); }
} // namespace

BIPS_TEST(sigbus_chains_to_the_previous_handler) {
    // As with Python's faulthandler or a sanitizer: a SIGBUS handler installed before the first
    // guarded mapping still gets every SIGBUS that is not a guarded range's, and only those.
    auto run = [](bool siginfo) {
        Child c = Child::fork([&]() -> int {
            struct sigaction sa{};
            if (siginfo) {
                sa.sa_sigaction = record_siginfo;
                sa.sa_flags = SA_SIGINFO;
            } else {
                sa.sa_handler = record_plain;
            }
            sigemptyset(&sa.sa_mask);
            if (::sigaction(SIGBUS, &sa, nullptr) != 0)
                return 2;
            {
                ShmFile f(2, 0xAB);
                posix::Mapping m(f.fd(), f.size(), 0, PROT_READ | PROT_WRITE, "m");
                f.truncate_to(0);
                if (peek(m.data() + PAGE) != 0 || !m.lost())
                    return 3; // the guarded fault must not reach the old handler
            }
            unguarded_truncation_fault(); // the handler stays installed with no range guarded
            return 4;
        });
        return c.wait(10000ms * SLOWDOWN);
    };
    CHECK_EQ(run(true), 41); // with its siginfo: a fault, from the kernel
    CHECK_EQ(run(false), 50);
}

BIPS_TEST(sigbus_threads_map_and_unmap_while_truncating) {
    // Guards come and go on several threads while a file keeps shrinking and growing under them.
    // Mappings of a file that nobody shrinks must never be touched by a neighbour's fault.
    ShmFile shrinking(8, 0xAB);
    ShmFile stable(4, 0x5A);
    const std::size_t in_use = posix::sigbus_guards_in_use();
    std::atomic<bool> stop{false};
    std::atomic<long> lost{0}, rounds{0}, damaged{0};
    std::thread truncator([&] {
        int fd = ::open(shrinking.path().c_str(), O_RDWR | O_CLOEXEC);
        while (!stop.load()) {
            (void)::ftruncate(fd, 0);
            std::this_thread::sleep_for(50us);
            (void)::ftruncate(fd, static_cast<off_t>(shrinking.size()));
            std::this_thread::sleep_for(50us);
        }
        ::close(fd);
    });
    std::vector<std::thread> workers;
    for (int t = 0; t < 4; ++t) {
        workers.emplace_back([&] {
            while (!stop.load()) {
                posix::Mapping a(shrinking.fd(), shrinking.size(), 0, PROT_READ | PROT_WRITE, "a");
                posix::Mapping b(stable.fd(), stable.size(), 0, PROT_READ, "b");
                for (std::size_t off = 0; off < a.size(); off += PAGE)
                    poke(a.data() + off, static_cast<unsigned char>(peek(a.data() + off) + 1));
                for (std::size_t off = 0; off < b.size(); off += PAGE)
                    if (peek(b.data() + off) != 0x5A)
                        damaged.fetch_add(1);
                if (a.lost())
                    lost.fetch_add(1);
                if (b.lost())
                    damaged.fetch_add(1);
                rounds.fetch_add(1);
            }
        });
    }
    auto start = std::chrono::steady_clock::now();
    wait_until([&] { return seconds_since(start) > 0.3 * SLOWDOWN && lost.load() > 10; },
               10000ms * SLOWDOWN);
    stop.store(true);
    for (auto &w : workers)
        w.join();
    truncator.join();
    CHECK(lost.load() > 10);
    CHECK_EQ(damaged.load(), 0);
    CHECK_EQ(posix::sigbus_guards_in_use(), in_use);
    std::printf("%ld mappings, %ld lost\n", rounds.load(), lost.load());
}

BIPS_TEST(sigbus_reextended_file_stays_lost) {
    ShmFile f(4, 0xAB);
    posix::Mapping m(f.fd(), f.size(), 0, PROT_READ | PROT_WRITE, "m");
    f.truncate_to(0);
    poke(m.data(), 0x77);
    CHECK(m.lost());
    // The file comes back at full size with new contents; the mapping stays our private copy.
    f.truncate_to(f.size());
    std::vector<unsigned char> cd(f.size(), 0xCD);
    REQUIRE_EQ(::pwrite(f.fd(), cd.data(), cd.size(), 0), static_cast<ssize_t>(f.size()));
    CHECK_EQ(peek(m.data()), 0x77u);
    CHECK_EQ(peek(m.data() + PAGE), 0u);
    poke(m.data() + 2 * PAGE, 0x11);
    CHECK(m.lost());
    unsigned char c = 0;
    CHECK_EQ(::pread(f.fd(), &c, 1, 2 * static_cast<off_t>(PAGE)), 1);
    CHECK_EQ(c, 0xCD);
    posix::Mapping fresh(f.fd(), f.size(), 0, PROT_READ, "fresh");
    CHECK_EQ(peek(fresh.data() + 2 * PAGE), 0xCDu);
    CHECK(!fresh.lost());
}

BIPS_TEST(sigbus_full_table_leaves_mappings_unguarded) {
    void *area = ::mmap(nullptr, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(area != MAP_FAILED);
    const std::size_t in_use = posix::sigbus_guards_in_use();
    std::vector<int> guards;
    for (int g; (g = posix::sigbus_guard(area, PAGE, PROT_NONE)) >= 0;)
        guards.push_back(g);
    CHECK_EQ(guards.size() + in_use, posix::SIGBUS_GUARD_SLOTS);
    {
        ShmFile f(1, 0xAB);
        posix::Mapping m(f.fd(), f.size(), 0, PROT_READ, "unguarded");
        CHECK_EQ(peek(m.data()), 0xABu); // works, merely unguarded
        CHECK(!m.lost());
    }
    for (int g : guards)
        posix::sigbus_unguard(g);
    CHECK_EQ(posix::sigbus_guards_in_use(), in_use);
    ::munmap(area, PAGE);
}

BIPS_TEST(sigbus_producer_survives_a_truncated_pool) {
    // Through the public API: the pool file shrinks to nothing under a live producer. Whatever
    // acquire() and publish() make of the zeroed control block, the process must live on.
    const std::string name = unique_name();
    Producer prod(name, small_pool(2, 3 * PAGE));
    {
        int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(fd >= 0);
        CHECK_EQ(::ftruncate(fd, 0), 0);
        ::close(fd);
    }
    std::string outcome = "published";
    try {
        Buffer b = prod.acquire(200ms);
        std::memset(b.data(), 1, b.capacity());
        prod.publish(std::move(b));
    } catch (const Error &e) {
        outcome = type_name(typeid(e)) + ": " + e.what();
    } catch (const std::system_error &e) {
        outcome = "std::system_error: " + std::string(e.what());
    }
    std::printf("after truncation: %s\n", outcome.c_str());
    prod.close();
}
