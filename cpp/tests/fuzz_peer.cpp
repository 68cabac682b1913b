// SPDX-License-Identifier: Apache-2.0
// A hostile peer against live traffic (issue 8): a producer and two consumers run while another
// process scribbles over, truncates and re-extends every file of the pool it can open for
// writing. Nothing may die by a signal or hang, and once the hostile process is gone a fresh
// producer and consumer on the same name must work normally.
//
// Only the public API and POSIX: the attacks know nothing of the byte layout. The files of pool
// NAME are found with the globs /dev/shm/bips.NAME and /dev/shm/bips.NAME@*, so a pool split into
// several files (say a producer-only pool file and a shared control file) is covered as well.
//
//   bips_fuzz_peer drive SECONDS [SEED]         the whole test; exit 1 (seed printed) on failure
//   bips_fuzz_peer producer NAME SECONDS [--policy block|drop_oldest]
//   bips_fuzz_peer consumer NAME SECONDS
//   bips_fuzz_peer hostile NAME SECONDS SEED
//   bips_fuzz_peer send NAME N                   the final check: N frames, every byte checked
//   bips_fuzz_peer receive NAME N
//
// SEED defaults to $BIPS_FUZZ_SEED, else today's date (YYYYMMDD): a new seed every day, the same
// one on every rerun that day. BIPS_FUZZ_NO_TRUNCATE=1 leaves out the truncations (to tell what
// the writes alone do).
#include <bips/bips.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <glob.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The pool every role uses: small, so that the hostile process covers all of it many times.
constexpr std::uint32_t CAPACITY = 4;
constexpr std::int64_t HEIGHT = 64, WIDTH = 64, CHANNELS = 3;
constexpr std::size_t FRAME_BYTES = HEIGHT * WIDTH * CHANNELS;
constexpr std::size_t META_SIZE = 256;

// A child still running this long after its SECONDS has hung; this long after, it is killed.
constexpr auto OVERRUN_AFTER = 5s;
constexpr auto KILL_AFTER = 15s;
// The final check's own bound: "N frames go through within a few seconds".
constexpr auto CHECK_BUDGET = 5s;

bips::PoolOptions pool_options(bips::Policy policy) {
    bips::PoolOptions o;
    o.capacity = CAPACITY;
    o.shape = {HEIGHT, WIDTH, CHANNELS};
    o.dtype = bips::UINT8;
    o.meta_size = META_SIZE;
    o.policy = policy;
    return o;
}

std::string shm_path(const std::string &name) { return "/dev/shm/bips." + name; }

/// Every file of pool `name`: the pool file and any companion (NAME@ctl...).
std::vector<std::string> pool_files(const std::string &name) {
    std::vector<std::string> out;
    for (const std::string &pattern : {shm_path(name), shm_path(name) + "@*"}) {
        glob_t g{};
        if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
            for (std::size_t i = 0; i < g.gl_pathc; ++i)
                out.emplace_back(g.gl_pathv[i]);
        }
        ::globfree(&g);
    }
    return out;
}

void remove_pool(const std::string &name) {
    try {
        bips::remove_stale_pool(name);
    } catch (const std::exception &) {
        // A file the hostile process left unreadable: unlinked below.
    }
    for (const std::string &path : pool_files(name))
        ::unlink(path.c_str());
}

/// Errors are expected under attack; the first few are printed, the rest only counted.
class Log {
public:
    explicit Log(const char *role) : m_role(role) {}
    void error(const char *doing, const std::exception &e) {
        ++m_errors;
        if (m_errors <= 5)
            std::fprintf(stderr, "%s[%d]: %s: %s\n", m_role, ::getpid(), doing, e.what());
        else if (m_errors == 6)
            std::fprintf(stderr, "%s[%d]: (further errors only counted)\n", m_role, ::getpid());
    }
    unsigned long errors() const { return m_errors; }

private:
    const char *m_role;
    unsigned long m_errors = 0;
};

// The byte every pixel of frame `seq` holds in the final check.
int fill_value(std::uint64_t seq) { return static_cast<int>((seq * 7 + 1) % 251); }

volatile std::uint64_t g_sink; // keeps the consumers' reads from being optimised away

// --- producer, consumer ---------------------------------------------------------------------

int run_producer(const std::string &name, double seconds, bips::Policy policy) {
    Log log("producer");
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    const bips::PoolOptions options = pool_options(policy);
    std::optional<bips::Producer> prod;
    unsigned long published = 0, created = 0;
    unsigned timeouts = 0;
    while (Clock::now() < deadline) {
        try {
            if (!prod) {
                prod.emplace(name, options);
                ++created;
                timeouts = 0;
            }
            bips::Buffer buf = prod->acquire(200ms);
            // The README's pattern, taken at its word.
            std::memset(buf.data(), static_cast<int>(published % 251), buf.nbytes());
            char meta[64];
            const int len = std::snprintf(meta, sizeof meta, "frame %lu", published);
            prod->publish(std::move(buf), -1, meta, static_cast<std::size_t>(len));
            ++published;
            timeouts = 0;
            std::this_thread::sleep_for(1ms); // leave the two cores to the others as well
        } catch (const bips::Timeout &e) {
            // Consumers come and go; a pool where nothing frees up for a second is wedged.
            if (++timeouts >= 5) {
                log.error("acquire (re-creating the pool)", e);
                prod.reset();
            }
        } catch (const bips::Error &e) {
            log.error(prod ? "publishing (re-creating the pool)" : "creating the pool", e);
            prod.reset();
            std::this_thread::sleep_for(20ms);
        } catch (const std::system_error &e) {
            log.error(prod ? "publishing (re-creating the pool)" : "creating the pool", e);
            prod.reset();
            std::this_thread::sleep_for(20ms);
        }
    }
    prod.reset();
    std::fprintf(stderr, "producer[%d]: %lu frames published, pool created %lu times, %lu errors\n",
                 ::getpid(), published, created, log.errors());
    return 0;
}

int run_consumer(const std::string &name, double seconds) {
    Log log("consumer");
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    bips::ConsumerOptions options;
    options.wait = 500ms;
    options.reconnect = true;
    std::optional<bips::Consumer> cons;
    unsigned long received = 0, attached = 0;
    while (Clock::now() < deadline) {
        try {
            if (!cons) {
                cons.emplace(name, options);
                ++attached;
            }
            std::optional<bips::Frame> frame = cons->try_receive_for(200ms);
            if (!frame)
                continue;
            // Every byte of the pixels and of the metadata, as an application would read them.
            std::uint64_t sum = frame->seq() + frame->shape().size() + frame->dtype().bits;
            const std::byte *data = frame->data();
            for (std::size_t i = 0, n = frame->nbytes(); i < n; ++i)
                sum += std::to_integer<unsigned>(data[i]);
            const std::byte *meta = frame->meta_data();
            for (std::size_t i = 0, n = frame->meta_size(); i < n; ++i)
                sum += std::to_integer<unsigned>(meta[i]);
            g_sink = g_sink + sum;
            ++received;
        } catch (const bips::Error &e) {
            log.error(cons ? "receiving (re-attaching)" : "attaching", e);
            cons.reset();
            std::this_thread::sleep_for(10ms);
        } catch (const std::system_error &e) {
            log.error(cons ? "receiving (re-attaching)" : "attaching", e);
            cons.reset();
            std::this_thread::sleep_for(10ms);
        }
    }
    cons.reset();
    std::fprintf(stderr, "consumer[%d]: %lu frames received, attached %lu times, %lu errors\n",
                 ::getpid(), received, attached, log.errors());
    return 0;
}

// --- hostile --------------------------------------------------------------------------------

// Someone else may shrink a file while it is mapped here: that SIGBUS must not end the attack.
sigjmp_buf g_bus_jump;
volatile sig_atomic_t g_bus_armed = 0;

void on_sigbus(int sig) {
    if (g_bus_armed) {
        g_bus_armed = 0;
        siglongjmp(g_bus_jump, 1);
    }
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

enum Op { RANDOM_BYTES, VALUE64, VALUE32, BIT, PAGE, SWEEP, TRUNCATE, N_OPS };
const char *const OP_NAMES[N_OPS] = {"random-bytes", "value64", "value32", "bit",
                                     "page",         "sweep",   "truncate"};

class Hostile {
public:
    explicit Hostile(std::uint64_t seed)
        : m_rng(seed), m_page(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))) {
        const char *no = std::getenv("BIPS_FUZZ_NO_TRUNCATE");
        m_truncate = !(no && *no && std::strcmp(no, "0") != 0);
    }

    /// One burst against one file: a truncation, or a few dozen writes into its mapping.
    void burst(const std::string &path) {
        const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            ++m_not_writable[path]; // read-only to us (or gone): the design says skip it
            return;
        }
        struct stat st{};
        if (::fstat(fd, &st) != 0 || st.st_size < 8) {
            ::close(fd);
            return;
        }
        const auto size = static_cast<std::size_t>(st.st_size);
        File &file = m_files[path];
        file.size = size;
        file.hit.resize(std::max(file.hit.size(), (size + m_page - 1) / m_page));
        if (m_truncate && below(8) == 0) {
            truncate(fd, size, file);
        } else {
            void *map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (map != MAP_FAILED) {
                auto *p = static_cast<unsigned char *>(map);
                if (sigsetjmp(g_bus_jump, 1) == 0) {
                    g_bus_armed = 1;
                    sweep(p, size, file);
                    for (unsigned n = 1 + below(24); n > 0; --n)
                        attack(p, size, file);
                    g_bus_armed = 0;
                } else {
                    ++m_sigbus;
                }
                ::munmap(map, size);
            }
        }
        ::close(fd);
    }

    std::uint64_t below(std::uint64_t n) { return m_rng() % n; }

    void report() const {
        std::string ops;
        for (int i = 0; i < N_OPS; ++i)
            ops += std::string(i ? ", " : "") + OP_NAMES[i] + " " + std::to_string(m_ops[i]);
        std::fprintf(stderr, "hostile[%d]: %s; %lu SIGBUS survived\n", ::getpid(), ops.c_str(),
                     m_sigbus);
        for (const auto &[path, f] : m_files) {
            const auto hit = std::count(f.hit.begin(), f.hit.end(), true);
            std::fprintf(stderr, "hostile[%d]: %s (%zu bytes): %ld of %zu pages written\n",
                         ::getpid(), path.c_str(), f.size, static_cast<long>(hit), f.hit.size());
        }
        for (const auto &[path, n] : m_not_writable)
            std::fprintf(stderr, "hostile[%d]: %s could not be opened for writing %lu times\n",
                         ::getpid(), path.c_str(), n);
    }

private:
    struct File {
        std::size_t size = 0;
        std::size_t sweep_page = 0;
        std::vector<bool> hit; // pages written at least once
    };

    // Values that break counts, sizes, offsets, indices and bit masks when trusted.
    std::uint64_t target_value(std::uint64_t current, std::size_t size) {
        static const std::uint64_t fixed[] = {0,
                                              1,
                                              2,
                                              3,
                                              4,
                                              5,
                                              7,
                                              8,
                                              9,
                                              31,
                                              32,
                                              33,
                                              63,
                                              64,
                                              65,
                                              255,
                                              256,
                                              1023,
                                              1024,
                                              1025,
                                              ~std::uint64_t{0},
                                              ~std::uint64_t{0} - 1,
                                              0x7fffffffffffffffULL,
                                              0x8000000000000000ULL,
                                              0x7fffffffULL,
                                              0x80000000ULL,
                                              0xffffffffULL,
                                              std::uint64_t{1} << 32,
                                              (std::uint64_t{1} << 32) + 1,
                                              std::uint64_t{1} << 40,
                                              std::uint64_t{1} << 62,
                                              0x5555555555555555ULL,
                                              0xffffffff00000000ULL};
        constexpr std::uint64_t n_fixed = sizeof fixed / sizeof fixed[0];
        switch (below(4)) {
        case 0: { // near a size the segment itself has
            const std::uint64_t sizes[] = {size, size / 2, m_page, FRAME_BYTES, META_SIZE};
            return sizes[below(5)] + below(3) - 1;
        }
        case 1: // the value that is there, nudged: a counter or index off by one, doubled
            return below(3) == 0 ? current * 2 : current + below(3) - 1;
        default:
            return fixed[below(n_fixed)];
        }
    }

    // Offsets favour the start of the file, where headers and descriptors live in any design.
    std::size_t offset(std::size_t size, std::size_t len, std::size_t align) {
        const std::size_t limit = size - len;
        std::size_t off;
        switch (below(10)) {
        case 0:
        case 1:
        case 2:
        case 3:
            off = below(std::min(m_page, limit + 1));
            break;
        case 4:
        case 5:
            off = below(std::min(16 * m_page, limit + 1));
            break;
        default:
            off = below(limit + 1);
        }
        return std::min(off / align * align, limit / align * align);
    }

    void mark(File &f, std::size_t off, std::size_t len) {
        const std::size_t last = std::min((off + len - 1) / m_page, f.hit.size() - 1);
        for (std::size_t pg = off / m_page; pg <= last; ++pg)
            f.hit[pg] = true;
    }

    void store64(unsigned char *p, std::size_t size, std::size_t off, File &f) {
        auto *word = reinterpret_cast<std::uint64_t *>(p + off);
        const std::uint64_t v = target_value(__atomic_load_n(word, __ATOMIC_RELAXED), size);
        __atomic_store_n(word, v, __ATOMIC_RELAXED);
        mark(f, off, 8);
    }

    // Every burst also writes one page in turn, so every page of every file is hit regularly.
    void sweep(unsigned char *p, std::size_t size, File &f) {
        const std::size_t pages = (size + m_page - 1) / m_page;
        const std::size_t pg = f.sweep_page++ % pages;
        const std::size_t begin = pg * m_page;
        const std::size_t room = std::min(m_page, size - begin);
        if (room < 8)
            return;
        store64(p, size, begin + below(room / 8) * 8, f);
        ++m_ops[SWEEP];
    }

    void attack(unsigned char *p, std::size_t size, File &f) {
        const std::uint64_t r = below(100);
        if (r < 25) { // random bytes at a random offset
            const std::size_t len = std::min<std::size_t>(1 + below(16), size);
            const std::size_t off = offset(size, len, 1);
            for (std::size_t i = 0; i < len; ++i)
                p[off + i] = static_cast<unsigned char>(m_rng());
            mark(f, off, len);
            ++m_ops[RANDOM_BYTES];
        } else if (r < 55) { // a targeted 64-bit value at an aligned offset
            store64(p, size, offset(size, 8, 8), f);
            ++m_ops[VALUE64];
        } else if (r < 70) { // a targeted 32-bit value
            const std::size_t off = offset(size, 4, 4);
            auto *word = reinterpret_cast<std::uint32_t *>(p + off);
            const auto v = static_cast<std::uint32_t>(
                target_value(__atomic_load_n(word, __ATOMIC_RELAXED), size));
            __atomic_store_n(word, v, __ATOMIC_RELAXED);
            mark(f, off, 4);
            ++m_ops[VALUE32];
        } else if (r < 95) { // one bit of a 64-bit word flipped, set or cleared
            const std::size_t off = offset(size, 8, 8);
            auto *word = reinterpret_cast<std::uint64_t *>(p + off);
            const std::uint64_t bit = std::uint64_t{1} << below(64);
            switch (below(3)) {
            case 0:
                __atomic_fetch_xor(word, bit, __ATOMIC_RELAXED);
                break;
            case 1:
                __atomic_fetch_or(word, bit, __ATOMIC_RELAXED);
                break;
            default:
                __atomic_fetch_and(word, ~bit, __ATOMIC_RELAXED);
                break;
            }
            mark(f, off, 8);
            ++m_ops[BIT];
        } else { // a whole page of garbage; the first page one time in eight
            const std::size_t pages = (size + m_page - 1) / m_page;
            const std::size_t pg = below(8) == 0 ? 0 : below(pages);
            const std::size_t begin = pg * m_page;
            const std::size_t len = std::min(m_page, size - begin);
            const std::uint64_t kind = below(3);
            for (std::size_t i = 0; i < len; ++i)
                p[begin + i] = kind == 0   ? static_cast<unsigned char>(m_rng())
                               : kind == 1 ? 0xff
                                           : 0x00;
            mark(f, begin, len);
            ++m_ops[PAGE];
        }
    }

    // Shrinks the file (to nothing, half, one page or anywhere), lets the others run into it
    // for a moment, then gives it its size back (zero-filled).
    void truncate(int fd, std::size_t size, File &f) {
        const std::size_t to[] = {0, size / 2, std::min(m_page, size), below(size)};
        const std::size_t target = to[below(4)];
        if (::ftruncate(fd, static_cast<off_t>(target)) != 0)
            return;
        std::this_thread::sleep_for(std::chrono::microseconds(below(5000)));
        if (::ftruncate(fd, static_cast<off_t>(size)) != 0)
            std::fprintf(stderr, "hostile: re-extending %zu bytes: %s\n", size,
                         std::strerror(errno));
        if (target < size)
            mark(f, target, size - target);
        ++m_ops[TRUNCATE];
    }

    std::mt19937_64 m_rng;
    std::size_t m_page;
    std::map<std::string, File> m_files;
    std::map<std::string, unsigned long> m_not_writable;
    unsigned long m_ops[N_OPS] = {};
    unsigned long m_sigbus = 0;
    bool m_truncate = true;
};

/// The attacker is an ordinary process: as root (CI containers) it would otherwise open even
/// files whose mode says read-only, and no design can survive its own pixels being truncated
/// away under a producer's memset. Without capabilities, root is held to the mode bits.
void drop_capabilities() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capset, &header, data) != 0)
        std::fprintf(stderr, "hostile: capset: %s\n", std::strerror(errno));
}

int run_hostile(const std::string &name, double seconds, std::uint64_t seed) {
    drop_capabilities();
    struct sigaction sa{};
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, nullptr);

    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    Hostile hostile(seed);
    unsigned long bursts = 0;
    while (Clock::now() < deadline) {
        const std::vector<std::string> files = pool_files(name);
        if (files.empty()) {
            std::this_thread::sleep_for(2ms);
            continue;
        }
        hostile.burst(files[hostile.below(files.size())]);
        ++bursts;
        // Short pauses between bursts and a longer calm now and then, so legitimate traffic
        // gets to run between attacks (and into what they left behind).
        const auto pause = hostile.below(20) == 0 ? 30 + hostile.below(50) : 1 + hostile.below(8);
        std::this_thread::sleep_for(std::chrono::milliseconds(pause));
    }
    std::fprintf(stderr, "hostile[%d]: seed %llu, %lu bursts\n", ::getpid(),
                 static_cast<unsigned long long>(seed), bursts);
    hostile.report();
    return 0;
}

// --- the final check: a fresh producer and consumer ------------------------------------------

int run_send(const std::string &name, unsigned long n) {
    const auto deadline = Clock::now() + CHECK_BUDGET;
    try {
        std::optional<bips::Producer> prod;
        while (!prod) {
            try {
                prod.emplace(name, pool_options(bips::Policy::block));
            } catch (const bips::PoolBusy &) {
                if (Clock::now() >= deadline)
                    throw;
                std::this_thread::sleep_for(20ms);
            }
        }
        while (prod->stats().consumers == 0) {
            if (Clock::now() >= deadline) {
                std::fprintf(stderr, "send: no consumer attached\n");
                return 1;
            }
            std::this_thread::sleep_for(2ms);
        }
        for (unsigned long i = 0; i < n; ++i) {
            bips::Buffer buf = prod->acquire(std::chrono::duration_cast<bips::Duration>(
                std::max<Clock::duration>(deadline - Clock::now(), 1ms)));
            if (buf.nbytes() != FRAME_BYTES) {
                std::fprintf(stderr, "send: frame %lu: nbytes %zu, want %zu\n", i, buf.nbytes(),
                             FRAME_BYTES);
                return 1;
            }
            std::memset(buf.data(), fill_value(i), buf.nbytes());
            const std::string meta = "frame " + std::to_string(i);
            prod->publish(std::move(buf), -1, meta.data(), meta.size());
        }
        prod->close();
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "send: %s\n", e.what());
        return 1;
    }
}

int run_receive(const std::string &name, unsigned long n) {
    const auto deadline = Clock::now() + CHECK_BUDGET;
    auto left = [&] {
        return std::chrono::duration_cast<bips::Duration>(
            std::max<Clock::duration>(deadline - Clock::now(), 1ms));
    };
    try {
        // Until the fresh producer has replaced what is left under the name, attaching may fail.
        std::optional<bips::Consumer> cons;
        while (!cons) {
            try {
                bips::ConsumerOptions o;
                o.wait = std::min<bips::Duration>(left(), 1s);
                cons.emplace(name, o);
            } catch (const bips::Error &) {
                if (Clock::now() >= deadline)
                    throw;
                std::this_thread::sleep_for(20ms);
            }
        }
        for (unsigned long i = 0; i < n; ++i) {
            bips::Frame f = cons->receive(left());
            const std::string meta = f.meta();
            const std::string want_meta = "frame " + std::to_string(i);
            const bool shape_ok =
                f.shape() == bips::Shape{HEIGHT, WIDTH, CHANNELS} && f.dtype() == bips::UINT8;
            if (f.seq() != i || f.nbytes() != FRAME_BYTES || !shape_ok || meta != want_meta) {
                std::fprintf(stderr, "receive: frame %lu: seq %llu, %zu bytes, meta '%s'\n", i,
                             static_cast<unsigned long long>(f.seq()), f.nbytes(), meta.c_str());
                return 1;
            }
            const auto want = static_cast<std::byte>(fill_value(i));
            for (std::size_t b = 0; b < f.nbytes(); ++b) {
                if (f.data()[b] != want) {
                    std::fprintf(stderr, "receive: frame %lu: byte %zu is %u, want %u\n", i, b,
                                 std::to_integer<unsigned>(f.data()[b]),
                                 std::to_integer<unsigned>(want));
                    return 1;
                }
            }
        }
        try {
            cons->receive(left());
            std::fprintf(stderr, "receive: a frame after the last one\n");
            return 1;
        } catch (const bips::ProducerGone &) {
            // the end of the stream, as it should be
        }
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "receive: %s\n", e.what());
        return 1;
    }
}

// --- drive ----------------------------------------------------------------------------------

struct Child {
    std::string role;
    pid_t pid = -1;
    int status = 0;
    bool done = false;
    bool killed = false; // by us, at the hard deadline
    Clock::time_point ended;
};

std::string g_self; // this executable, for the children

Child spawn(const std::string &role, std::vector<std::string> args) {
    args.insert(args.begin(), {g_self, role});
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0)
        throw std::system_error(errno, std::generic_category(), "fork");
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent)
            ::_exit(127);
        std::vector<char *> argv;
        for (std::string &a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(g_self.c_str(), argv.data());
        ::_exit(127);
    }
    Child c;
    c.role = role;
    c.pid = pid;
    return c;
}

/// Waits for every child; SIGKILLs those still there at `kill_at`.
void wait_all(std::vector<Child> &children, Clock::time_point kill_at) {
    for (;;) {
        bool running = false;
        for (Child &c : children) {
            if (c.done)
                continue;
            if (::waitpid(c.pid, &c.status, WNOHANG) == c.pid) {
                c.done = true;
                c.ended = Clock::now();
            } else if (Clock::now() >= kill_at) {
                ::kill(c.pid, SIGKILL);
                ::waitpid(c.pid, &c.status, 0);
                c.done = c.killed = true;
                c.ended = Clock::now();
            } else {
                running = true;
            }
        }
        if (!running)
            return;
        std::this_thread::sleep_for(10ms);
    }
}

/// What went wrong with the children, one line each (none: all exited 0 in time).
std::vector<std::string> judge(const std::vector<Child> &children, Clock::time_point overrun_at,
                               Clock::time_point start) {
    std::vector<std::string> out;
    for (const Child &c : children) {
        const double t = std::chrono::duration<double>(c.ended - start).count();
        char line[256];
        if (c.killed) {
            std::snprintf(line, sizeof line, "%s (pid %d) hung: killed after %.1f s",
                          c.role.c_str(), c.pid, t);
        } else if (WIFSIGNALED(c.status)) {
            std::snprintf(line, sizeof line, "%s (pid %d) was killed by signal %d (%s) at %.2f s",
                          c.role.c_str(), c.pid, WTERMSIG(c.status), strsignal(WTERMSIG(c.status)),
                          t);
        } else if (WEXITSTATUS(c.status) != 0) {
            std::snprintf(line, sizeof line, "%s (pid %d) exited with %d at %.1f s", c.role.c_str(),
                          c.pid, WEXITSTATUS(c.status), t);
        } else if (c.ended > overrun_at) {
            std::snprintf(line, sizeof line, "%s (pid %d) overran its deadline: exited at %.1f s",
                          c.role.c_str(), c.pid, t);
        } else {
            continue;
        }
        out.emplace_back(line);
    }
    return out;
}

std::uint64_t default_seed(const char **source) {
    if (const char *env = std::getenv("BIPS_FUZZ_SEED"); env && *env) {
        *source = "$BIPS_FUZZ_SEED";
        return std::strtoull(env, nullptr, 10);
    }
    *source = "today's date";
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&now, &tm);
    return static_cast<std::uint64_t>((tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 +
                                      tm.tm_mday);
}

int run_drive(const std::string &secs, std::uint64_t seed, const char *seed_source) {
    const double seconds = std::atof(secs.c_str());
    const std::string name = "fz" + std::to_string(::getpid()) + "-" + std::to_string(seed);
    const char *policy = seed % 2 ? "drop_oldest" : "block";
    std::printf("fuzz: seed %llu (from %s), pool '%s', %s policy, %.0f s of attacks\n",
                static_cast<unsigned long long>(seed), seed_source, name.c_str(), policy, seconds);
    std::fflush(stdout);

    const auto start = Clock::now();
    const auto chaos_end =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    std::vector<Child> chaos;
    chaos.push_back(spawn("producer", {name, secs, "--policy", policy}));
    chaos.push_back(spawn("consumer", {name, secs}));
    chaos.push_back(spawn("consumer", {name, secs}));
    // The attack starts once traffic flows (both consumers attached, a frame published), so
    // that it hits a pool in use; it ends with the others.
    const auto warm_deadline = start + 5s;
    while (Clock::now() < warm_deadline) {
        try {
            const bips::PoolInfo info = bips::pool_info(name);
            if (info.consumers >= 2 && info.published > 0)
                break;
        } catch (const std::exception &) {
            // not created yet
        }
        std::this_thread::sleep_for(5ms);
    }
    const double attack_s =
        std::max(1.0, seconds - std::chrono::duration<double>(Clock::now() - start).count());
    std::printf("fuzz: attack starts at %.2f s, lasts %.1f s\n", seconds - attack_s, attack_s);
    std::fflush(stdout);
    chaos.push_back(spawn("hostile", {name, std::to_string(attack_s), std::to_string(seed)}));
    wait_all(chaos, chaos_end + KILL_AFTER);
    std::vector<std::string> failures = judge(chaos, chaos_end + OVERRUN_AFTER, start);

    // The hostile process is gone: a new producer on the same name must work normally.
    const auto check_start = Clock::now();
    std::vector<Child> check;
    const std::string frames = "50";
    check.push_back(spawn("send", {name, frames}));
    check.push_back(spawn("receive", {name, frames}));
    wait_all(check, check_start + CHECK_BUDGET + KILL_AFTER);
    for (std::string &f : judge(check, check_start + CHECK_BUDGET + 2s, start))
        failures.push_back("final check: " + f);
    remove_pool(name);

    const double took = std::chrono::duration<double>(Clock::now() - start).count();
    if (failures.empty()) {
        std::printf("fuzz: passed in %.1f s (seed %llu)\n", took,
                    static_cast<unsigned long long>(seed));
        return 0;
    }
    std::printf("fuzz: FAILED with seed %llu after %.1f s:\n",
                static_cast<unsigned long long>(seed), took);
    for (const std::string &f : failures)
        std::printf("  %s\n", f.c_str());
    std::printf("  rerun: BIPS_FUZZ_SEED=%llu %s drive %s\n", static_cast<unsigned long long>(seed),
                g_self.c_str(), secs.c_str());
    return 1;
}

int usage(const char *argv0) {
    std::fprintf(stderr,
                 "usage: %s drive SECONDS [SEED]\n"
                 "       %s producer NAME SECONDS [--policy block|drop_oldest]\n"
                 "       %s consumer NAME SECONDS\n"
                 "       %s hostile NAME SECONDS SEED\n"
                 "       %s send|receive NAME N\n",
                 argv0, argv0, argv0, argv0, argv0);
    return 2;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 3)
        return usage(argv[0]);
    char self[4096];
    const ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
    g_self = len > 0 ? std::string(self, static_cast<std::size_t>(len)) : std::string(argv[0]);
    const std::string role = argv[1];
    if (role == "drive") {
        const char *source = "the command line";
        const std::uint64_t seed =
            argc > 3 ? std::strtoull(argv[3], nullptr, 10) : default_seed(&source);
        return run_drive(argv[2], seed, source);
    }
    // A role dies with whoever started it, so a killed test run leaves no attacker behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const std::string name = argv[2];
    if (role == "producer" && argc >= 4) {
        bips::Policy policy = bips::Policy::block;
        if (argc >= 6 && std::string(argv[4]) == "--policy")
            policy = std::string(argv[5]) == "drop_oldest" ? bips::Policy::drop_oldest
                                                           : bips::Policy::block;
        return run_producer(name, std::atof(argv[3]), policy);
    }
    if (role == "consumer" && argc >= 4)
        return run_consumer(name, std::atof(argv[3]));
    if (role == "hostile" && argc >= 5)
        return run_hostile(name, std::atof(argv[3]), std::strtoull(argv[4], nullptr, 10));
    if (role == "send" && argc >= 4)
        return run_send(name, std::strtoul(argv[3], nullptr, 10));
    if (role == "receive" && argc >= 4)
        return run_receive(name, std::strtoul(argv[3], nullptr, 10));
    return usage(argv[0]);
}
