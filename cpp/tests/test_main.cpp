// SPDX-License-Identifier: Apache-2.0
// The test runner and the shared helpers of support.hpp.
//
//   bips_tests                 runs every test
//   bips_tests NAME...         runs the named tests
//   bips_tests --list          prints the test names
//   bips_tests --expect N      fails unless exactly N tests are compiled in (CMake passes the
//                              number it found in the sources, so no test silently escapes ctest)
#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <poll.h>
#include <set>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bips::test {

namespace {
std::atomic<int> g_failures{0};
std::mutex g_print_mutex;
pid_t g_root_pid = ::getpid(); // the test process; forked children inherit the value
std::atomic<unsigned> g_counter{0};

std::set<std::string> our_shm_entries() {
    std::set<std::string> out;
    const std::string prefix = "bips." + name_prefix();
    std::unique_ptr<DIR, int (*)(DIR *)> dir(::opendir("/dev/shm"), ::closedir);
    if (!dir)
        return out;
    while (dirent *e = ::readdir(dir.get()))
        if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0)
            out.insert(e->d_name);
    return out;
}
} // namespace

std::vector<TestCase> &registry() {
    static std::vector<TestCase> tests;
    return tests;
}

void fail(const char *file, int line, const std::string &what) {
    g_failures.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(g_print_mutex);
    const char *base = std::strrchr(file, '/');
    std::fprintf(stderr, "%s:%d: FAILED%s: %s\n", base ? base + 1 : file, line,
                 ::getpid() == g_root_pid ? "" : " (in child)", what.c_str());
    std::fflush(stderr);
}

int failures() { return g_failures.load(std::memory_order_relaxed); }

std::string type_name(const std::type_info &type) {
    int status = 0;
    std::unique_ptr<char, void (*)(void *)> s(
        abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
    return status == 0 && s ? std::string(s.get()) : std::string(type.name());
}

std::string name_prefix() { return "bt" + std::to_string(g_root_pid) + "-"; }

std::string unique_name() {
    std::string n = name_prefix();
    if (::getpid() != g_root_pid)
        n += "c" + std::to_string(::getpid()) + "-";
    return n + std::to_string(g_counter.fetch_add(1));
}

std::string shm_path(const std::string &name) { return "/dev/shm/bips." + name; }

std::string ctl_path(const std::string &name) { return shm_path(name) + "@ctl"; }

bool shm_exists(const std::string &name) {
    struct stat st{};
    return ::stat(shm_path(name).c_str(), &st) == 0;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool wait_until(const std::function<bool()> &pred, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (pred())
            return true;
        if (std::chrono::steady_clock::now() >= deadline)
            return pred();
        std::this_thread::sleep_for(1ms);
    }
}

Child Child::fork(const std::function<int()> &body, unsigned alarm_s) {
    std::fflush(nullptr); // or the child would flush the parent's buffered output again
    pid_t pid = ::fork();
    if (pid < 0) {
        fail(__FILE__, __LINE__, std::string("fork: ") + std::strerror(errno));
        throw Abort{};
    }
    if (pid == 0) {
        ::alarm(alarm_s); // hard stop: SIGALRM kills a child that hangs
        int before = failures();
        int rc = 0;
        try {
            rc = body();
        } catch (const Abort &) {
            rc = 98;
        } catch (const std::exception &e) {
            fail(__FILE__, __LINE__, "child threw " + type_name(typeid(e)) + ": " + e.what());
            rc = 99;
        } catch (...) {
            rc = 99;
        }
        int n = failures() - before;
        if (rc == 0 && n > 0)
            rc = 100 + std::min(n, 27);
        std::fflush(nullptr);
        ::_exit(rc); // no atexit handlers, no destructors of the parent's objects
    }
    Child c;
    c.m_pid = pid;
    return c;
}

Child::Child(Child &&other) noexcept : m_pid(other.m_pid) { other.m_pid = -1; }

Child &Child::operator=(Child &&other) noexcept {
    if (this != &other) {
        kill();
        m_pid = other.m_pid;
        other.m_pid = -1;
    }
    return *this;
}

Child::~Child() { kill(); }

int Child::wait(std::chrono::milliseconds timeout) {
    if (m_pid <= 0)
        return -1;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(m_pid, &status, WNOHANG);
        if (r == m_pid) {
            m_pid = -1;
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
            return -1;
        }
        if (r < 0 && errno != EINTR) {
            m_pid = -1;
            return -1;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            fail(__FILE__, __LINE__,
                 "child " + std::to_string(m_pid) + " ran past its timeout; killed");
            kill();
            return -1;
        }
        std::this_thread::sleep_for(1ms);
    }
}

void Child::kill() {
    if (m_pid <= 0)
        return;
    ::kill(m_pid, SIGKILL);
    int status = 0;
    while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
    }
    m_pid = -1;
}

Pipe::Pipe() {
    if (::pipe2(m_fd, O_CLOEXEC) != 0) {
        fail(__FILE__, __LINE__, std::string("pipe2: ") + std::strerror(errno));
        throw Abort{};
    }
}

Pipe::~Pipe() {
    ::close(m_fd[0]);
    ::close(m_fd[1]);
}

void Pipe::signal(char c) const {
    while (::write(m_fd[1], &c, 1) < 0 && errno == EINTR) {
    }
}

int Pipe::wait(std::chrono::milliseconds timeout) const {
    struct pollfd p{};
    p.fd = m_fd[0];
    p.events = POLLIN;
    int r;
    while ((r = ::poll(&p, 1, static_cast<int>(timeout.count()))) < 0 && errno == EINTR) {
    }
    if (r <= 0)
        return -1;
    unsigned char c = 0;
    ssize_t n;
    while ((n = ::read(m_fd[0], &c, 1)) < 0 && errno == EINTR) {
    }
    return n == 1 ? c : -1;
}

void write_shm_file(const std::string &name, const std::vector<unsigned char> &bytes) {
    int fd = ::open(shm_path(name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fail(__FILE__, __LINE__, "open(" + shm_path(name) + "): " + std::strerror(errno));
        throw Abort{};
    }
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fail(__FILE__, __LINE__, "write(" + shm_path(name) + "): " + std::strerror(errno));
            ::close(fd);
            throw Abort{};
        }
        done += static_cast<std::size_t>(n);
    }
    ::close(fd);
}

std::vector<unsigned char> read_shm_file(const std::string &name) {
    std::vector<unsigned char> out;
    int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return out;
    unsigned char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        out.insert(out.end(), buf, buf + n);
    }
    ::close(fd);
    return out;
}

MappedFile::MappedFile(const std::string &path) {
    m_fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(m_fd >= 0);
    struct stat st{};
    REQUIRE(::fstat(m_fd, &st) == 0);
    m_size = static_cast<std::size_t>(st.st_size);
    void *p = ::mmap(nullptr, m_size, PROT_READ | PROT_WRITE, MAP_SHARED, m_fd, 0);
    REQUIRE(p != MAP_FAILED);
    m_map = static_cast<unsigned char *>(p);
}

MappedFile::~MappedFile() {
    if (m_map)
        ::munmap(m_map, m_size);
    ::close(m_fd);
}

ScopedUnlink::~ScopedUnlink() {
    ::unlink(shm_path(m_name).c_str());
    ::unlink((shm_path(m_name) + "@ctl").c_str());
}

void fill_pattern(std::byte *data, std::size_t n, std::uint64_t seq) {
    for (std::size_t k = 0; k < n; ++k)
        data[k] = static_cast<std::byte>((seq * 7 + k) % 251);
    if (n >= sizeof(seq))
        std::memcpy(data, &seq, sizeof(seq));
}

bool has_pattern(const std::byte *data, std::size_t n, std::uint64_t seq) {
    std::size_t k0 = 0;
    if (n >= sizeof(seq)) {
        std::uint64_t head = 0;
        std::memcpy(&head, data, sizeof(head));
        if (head != seq) {
            fail(__FILE__, __LINE__,
                 "payload of frame " + std::to_string(seq) + " starts with " +
                     std::to_string(head));
            return false;
        }
        k0 = sizeof(seq);
    }
    for (std::size_t k = k0; k < n; ++k) {
        auto want = static_cast<std::byte>((seq * 7 + k) % 251);
        if (data[k] != want) {
            fail(__FILE__, __LINE__,
                 "payload of frame " + std::to_string(seq) + ": byte " + std::to_string(k) +
                     " is " + show(data[k]) + ", expected " + show(want));
            return false;
        }
    }
    return true;
}

PoolOptions small_pool(std::uint32_t capacity, std::size_t bytes, Policy policy) {
    PoolOptions o;
    o.capacity = capacity;
    o.shape = {static_cast<std::int64_t>(bytes)};
    o.dtype = UINT8;
    o.policy = policy;
    return o;
}

void publish_pattern(Producer &producer, std::uint64_t tag) {
    Buffer b = producer.acquire(1s * SLOWDOWN);
    fill_pattern(b.data(), b.nbytes(), tag);
    producer.publish(std::move(b));
}

} // namespace bips::test

namespace {

using bips::test::TestCase;

bool run_one(const TestCase &t) {
    using namespace bips::test;
    const int before = failures();
    const auto leftovers_before = our_shm_entries();
    auto start = std::chrono::steady_clock::now();
    std::fprintf(stderr, "[ RUN  ] %s\n", t.name);
    try {
        t.fn();
    } catch (const Abort &) {
    } catch (const std::exception &e) {
        fail(t.file, t.line, "uncaught " + type_name(typeid(e)) + ": " + e.what());
    } catch (...) {
        fail(t.file, t.line, "uncaught non-exception");
    }
    // Every test must leave /dev/shm as it found it (children get a moment to exit).
    std::set<std::string> leaked;
    wait_until(
        [&] {
            leaked.clear();
            for (const auto &e : our_shm_entries())
                if (!leftovers_before.count(e))
                    leaked.insert(e);
            return leaked.empty();
        },
        std::chrono::milliseconds(2000));
    for (const auto &e : leaked) {
        fail(t.file, t.line, "left /dev/shm/" + e + " behind");
        ::unlink(("/dev/shm/" + e).c_str());
    }
    bool ok = failures() == before;
    std::fprintf(stderr, "[%s] %s (%.3f s)\n", ok ? "  OK  " : " FAIL ", t.name,
                 seconds_since(start));
    return ok;
}

} // namespace

int main(int argc, char **argv) {
    using bips::test::registry;
    std::signal(SIGPIPE, SIG_IGN);
    std::vector<std::string> args(argv + 1, argv + argc);
    auto &tests = registry();
    std::sort(tests.begin(), tests.end(),
              [](const TestCase &a, const TestCase &b) { return std::strcmp(a.name, b.name) < 0; });
    if (!args.empty() && args[0] == "--list") {
        for (const auto &t : tests)
            std::printf("%s\n", t.name);
        return 0;
    }
    if (args.size() == 2 && args[0] == "--expect") {
        auto want = std::strtoul(args[1].c_str(), nullptr, 10);
        if (want != tests.size()) {
            std::fprintf(stderr,
                         "%zu tests are compiled in but CMake registered %lu with ctest; keep "
                         "BIPS_TEST(name) at the start of a line\n",
                         tests.size(), want);
            return 1;
        }
        return 0;
    }
    std::vector<const TestCase *> selected;
    if (args.empty()) {
        for (const auto &t : tests)
            selected.push_back(&t);
    } else {
        for (const auto &a : args) {
            auto it = std::find_if(tests.begin(), tests.end(),
                                   [&](const TestCase &t) { return a == t.name; });
            if (it == tests.end()) {
                std::fprintf(stderr, "no test named '%s' (see --list)\n", a.c_str());
                return 2;
            }
            selected.push_back(&*it);
        }
    }
    std::size_t failed = 0;
    for (const auto *t : selected)
        failed += !run_one(*t);
    std::fprintf(stderr, "%zu of %zu tests passed\n", selected.size() - failed, selected.size());
    return failed ? 1 : 0;
}
