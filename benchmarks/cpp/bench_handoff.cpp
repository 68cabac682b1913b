// SPDX-License-Identifier: Apache-2.0
// Cross-process hand-off rate of bips with C++ on both sides: this process is the producer and
// forks N consumer processes. Same protocol as the Python benchmarks (benchmarks/harness.py):
// everybody gets ready, the producer announces a CLOCK_MONOTONIC window [start, end), each
// process counts the frames it handled inside it. Prints one JSON object on stdout.
// With --interval-us the producer is paced instead (a pause between acquire and publish, as in
// the Python latency cases) and each consumer also reports the one-way latency, publish()'s
// stamp to its read of one byte, as percentiles over the frames of the window.
//
//   bench_handoff --name NAME [--bytes 64 | --shape 2160,3840,3] [--consumers N] [--warmup S]
//                 [--seconds S] [--fill] [--spin-us N] [--interval-us N]
#include <bips/bips.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace {

constexpr std::uint32_t CAPACITY = 8;
constexpr auto RECEIVE_TIMEOUT = std::chrono::seconds(5);

struct Options {
    std::string name;
    std::size_t bytes = 64;
    bips::Shape shape; // empty: a flat buffer of `bytes`
    int consumers = 1;
    double warmup = 0.3;
    double seconds = 1.5;
    bool fill = false;
    long spin_us = 0;     // consumer busy-polls this long before sleeping (ConsumerOptions::spin)
    long interval_us = 0; // > 0: latency mode, the producer pauses this long before each publish
};

// What each process reports; fixed-size so that a child can write it down a pipe in one go.
struct Result {
    std::int32_t ok = 0;
    std::int32_t pid = 0;
    std::uint64_t frames = 0;         // inside the window
    std::uint64_t total = 0;          // whole run, warm-up and drain included
    std::int64_t window_ns = 0;       // measured span of the window
    std::int64_t vcsw = 0, ivcsw = 0; // context switches inside the window
    double cpu_s = 0;                 // CPU time (user + system) inside the window
    std::uint64_t gaps = 0;           // sequence numbers that did not follow the previous one
    // Latency mode, consumers: one-way latency of the window's frames, in microseconds.
    std::uint64_t lat_n = 0;
    double p50_us = 0, p99_us = 0, p999_us = 0, mean_us = 0, max_us = 0;
    char error[160] = {};
};

std::int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct Usage {
    long vcsw, ivcsw;
    double cpu_s; // user + system
};

Usage usage() {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    auto secs = [](const timeval &tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
    return {r.ru_nvcsw, r.ru_nivcsw, secs(r.ru_utime) + secs(r.ru_stime)};
}

[[noreturn]] void fail(const std::string &what) {
    throw std::system_error(errno, std::generic_category(), what);
}

void write_all(int fd, const void *p, std::size_t n) {
    auto *c = static_cast<const char *>(p);
    while (n > 0) {
        ssize_t k = ::write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            fail("write");
        c += k;
        n -= static_cast<std::size_t>(k);
    }
}

// Reads exactly n bytes, waiting at most timeout_ms in total; false on timeout or EOF.
bool read_all(int fd, void *p, std::size_t n, int timeout_ms) {
    auto *c = static_cast<char *>(p);
    const std::int64_t deadline = now_ns() + std::int64_t{timeout_ms} * 1'000'000;
    while (n > 0) {
        pollfd pfd{fd, POLLIN, 0};
        int left = static_cast<int>((deadline - now_ns()) / 1'000'000);
        if (left <= 0)
            return false;
        int r = ::poll(&pfd, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail("poll");
        if (r == 0)
            return false;
        ssize_t k = ::read(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        c += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

// The loop every process runs: warm up until start, count until end, then (consumers) drain.
// `step` handles one frame and returns its sequence number, or nullopt at end of stream.
template <class Step>
Result run_window(Step &&step, std::int64_t start, std::int64_t end, bool drain, int stride) {
    Result r;
    std::optional<std::uint64_t> prev;
    auto one = [&]() -> bool {
        std::optional<std::uint64_t> s = step();
        if (!s)
            return false;
        if (prev && *s != *prev + 1)
            ++r.gaps;
        prev = s;
        ++r.total;
        return true;
    };
    // Clock reads every `stride` frames: cheap frames would otherwise pay ~10% for the clock.
    std::int64_t t = now_ns();
    while (t < start) {
        for (int i = 0; i < stride; ++i)
            if (!one())
                throw std::runtime_error("the stream ended before the measurement window");
        t = now_ns();
    }
    const std::int64_t t0 = t;
    const Usage c0 = usage();
    const std::uint64_t n0 = r.total;
    bool ended = false;
    while (t < end && !ended) {
        for (int i = 0; i < stride; ++i) {
            if (one())
                continue;
            // The producer stops once *its* clock passes `end`; a consumer that read the clock
            // just before that may only learn of it now.
            if (now_ns() < end)
                throw std::runtime_error("the stream ended inside the measurement window");
            ended = true;
            break;
        }
        t = ended ? end : now_ns();
    }
    const Usage c1 = usage();
    r.frames = r.total - n0;
    r.window_ns = t - t0;
    r.vcsw = c1.vcsw - c0.vcsw;
    r.ivcsw = c1.ivcsw - c0.ivcsw;
    r.cpu_s = c1.cpu_s - c0.cpu_s;
    if (drain && !ended)
        while (one()) {
        }
    r.ok = 1;
    r.pid = static_cast<std::int32_t>(::getpid());
    return r;
}

volatile std::uint8_t g_sink; // keeps the consumers' one-byte read from being optimised away

// CPU time and sleeps over the frames of a paced loop that fall inside [start, end): from the
// first such frame to the first one after it (or to finish()). Like benchkit.CpuMeter.
class CpuMeter {
public:
    CpuMeter(std::int64_t start, std::int64_t end) : m_start(start), m_end(end) {}

    /// True if a frame read at `t` is inside the window.
    bool frame(std::int64_t t) {
        if (t < m_start)
            return false;
        if (t >= m_end) {
            if (m_started && !m_stopped) {
                m_c1 = usage();
                m_stopped = true;
            }
            return false;
        }
        if (!m_started) {
            m_c0 = usage();
            m_started = true;
        }
        ++m_frames;
        return true;
    }

    void finish(Result &r) {
        if (!m_started)
            return;
        if (!m_stopped)
            m_c1 = usage();
        r.frames = m_frames;
        r.window_ns = m_end - m_start;
        r.vcsw = m_c1.vcsw - m_c0.vcsw;
        r.ivcsw = m_c1.ivcsw - m_c0.ivcsw;
        r.cpu_s = m_c1.cpu_s - m_c0.cpu_s;
    }

private:
    std::int64_t m_start, m_end;
    bool m_started = false, m_stopped = false;
    std::uint64_t m_frames = 0;
    Usage m_c0{}, m_c1{};
};

// Nearest-rank percentile of sorted samples (ns) in microseconds.
double percentile_us(const std::vector<std::int64_t> &sorted, double q) {
    const double rank = std::ceil(q / 100.0 * static_cast<double>(sorted.size()));
    std::size_t k = static_cast<std::size_t>(rank);
    k = std::min(std::max<std::size_t>(k, 1), sorted.size());
    return static_cast<double>(sorted[k - 1]) / 1e3;
}

Result latency_consumer(bips::Consumer &cons, std::int64_t start, std::int64_t end) {
    Result r;
    CpuMeter meter(start, end);
    std::vector<std::int64_t> lat;
    lat.reserve(1 << 16);
    for (;;) {
        std::optional<bips::Frame> f;
        try {
            f = cons.try_receive_for(RECEIVE_TIMEOUT);
        } catch (const bips::ProducerGone &) {
            break;
        }
        if (!f)
            throw std::runtime_error("no frame for 5 s");
        g_sink = static_cast<std::uint8_t>(f->data()[0]);
        const std::int64_t t = now_ns();
        if (meter.frame(t))
            lat.push_back(t - f->timestamp_ns());
        ++r.total;
    }
    meter.finish(r);
    if (lat.empty())
        throw std::runtime_error("no frame inside the measurement window");
    std::sort(lat.begin(), lat.end());
    double sum = 0;
    for (std::int64_t v : lat)
        sum += static_cast<double>(v);
    r.lat_n = lat.size();
    r.p50_us = percentile_us(lat, 50);
    r.p99_us = percentile_us(lat, 99);
    r.p999_us = percentile_us(lat, 99.9);
    r.mean_us = sum / static_cast<double>(lat.size()) / 1e3;
    r.max_us = static_cast<double>(lat.back()) / 1e3;
    r.ok = 1;
    r.pid = static_cast<std::int32_t>(::getpid());
    return r;
}

Result latency_producer(bips::Producer &prod, long interval_us, std::int64_t start,
                        std::int64_t end) {
    Result r;
    CpuMeter meter(start, end);
    const timespec pause{interval_us / 1'000'000, (interval_us % 1'000'000) * 1000};
    for (std::int64_t t; (t = now_ns()) < end;) {
        meter.frame(t);
        bips::Buffer b = prod.acquire(RECEIVE_TIMEOUT);
        ::nanosleep(&pause, nullptr); // lets the consumer fall asleep: every frame is a wake-up
        prod.publish(std::move(b));
        ++r.total;
    }
    meter.finish(r);
    r.ok = 1;
    r.pid = static_cast<std::int32_t>(::getpid());
    return r;
}

int consumer_main(const Options &o, int ready_w, int go_r, int result_w) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    Result r;
    try {
        bips::ConsumerOptions co;
        co.wait = std::chrono::seconds(10);
        co.spin = std::chrono::microseconds(o.spin_us);
        bips::Consumer cons(o.name, co);
        char one = 1;
        write_all(ready_w, &one, 1);
        std::int64_t window[2];
        if (!read_all(go_r, window, sizeof window, 60'000))
            throw std::runtime_error("the producer never said go");
        if (o.interval_us > 0) {
            r = latency_consumer(cons, window[0], window[1]);
            write_all(result_w, &r, sizeof r);
            return 0;
        }
        auto step = [&]() -> std::optional<std::uint64_t> {
            try {
                auto f = cons.try_receive_for(RECEIVE_TIMEOUT);
                if (!f)
                    throw std::runtime_error("no frame for 5 s");
                g_sink = static_cast<std::uint8_t>(f->data()[0]);
                return f->seq();
            } catch (const bips::ProducerGone &) {
                return std::nullopt;
            }
        };
        r = run_window(step, window[0], window[1], true, o.fill ? 1 : 16);
    } catch (const std::exception &e) {
        r.ok = 0;
        std::snprintf(r.error, sizeof r.error, "consumer: %s", e.what());
    }
    write_all(result_w, &r, sizeof r);
    return r.ok ? 0 : 1;
}

Result producer_main(const Options &o, int ready_r, const std::vector<int> &go_w) {
    bips::PoolOptions po;
    po.capacity = CAPACITY;
    po.policy = bips::Policy::block;
    if (o.shape.empty())
        po.buffer_size = o.bytes;
    else
        po.shape = o.shape;
    bips::Producer prod(o.name, po);
    if (o.fill) { // first-touch page faults belong to no window
        std::vector<bips::Buffer> all;
        for (std::uint32_t i = 0; i < CAPACITY; ++i) {
            all.push_back(prod.acquire(RECEIVE_TIMEOUT));
            std::memset(all.back().data(), 0, all.back().capacity());
        }
    }
    for (int i = 0; i < o.consumers; ++i) {
        char c;
        if (!read_all(ready_r, &c, 1, 20'000))
            throw std::runtime_error("a consumer did not get ready within 20 s");
    }
    std::int64_t window[2];
    window[0] = now_ns() + static_cast<std::int64_t>(o.warmup * 1e9);
    window[1] = window[0] + static_cast<std::int64_t>(o.seconds * 1e9);
    for (int fd : go_w)
        write_all(fd, window, sizeof window);
    if (o.interval_us > 0) {
        Result r = latency_producer(prod, o.interval_us, window[0], window[1]);
        prod.close();
        return r;
    }
    std::uint64_t seq = 0;
    auto step = [&]() -> std::optional<std::uint64_t> {
        bips::Buffer b = prod.acquire(RECEIVE_TIMEOUT);
        if (o.fill)
            std::memset(b.data(), static_cast<int>(seq & 0xFF), b.nbytes());
        prod.publish(std::move(b));
        return seq++;
    };
    Result r = run_window(step, window[0], window[1], false, o.fill ? 1 : 16);
    prod.close();
    return r;
}

// Error texts go into a JSON string: keep them printable and free of quotes and backslashes.
std::string json_safe(const char *s) {
    std::string out;
    for (; *s; ++s)
        out += (*s == '"' || *s == '\\' || static_cast<unsigned char>(*s) < 0x20) ? '\'' : *s;
    return out;
}

void print_result(const Result &r, bool last) {
    double secs = static_cast<double>(r.window_ns) / 1e9;
    std::printf("{\"ok\": %s, \"pid\": %d, \"frames\": %llu, \"total\": %llu, \"seconds\": %.6f, "
                "\"fps\": %.1f, \"vcsw\": %lld, \"ivcsw\": %lld, \"cpu_s\": %.6f, \"gaps\": %llu, "
                "\"lat_n\": %llu, \"p50_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, "
                "\"mean_us\": %.3f, \"max_us\": %.3f, \"error\": \"%s\"}%s",
                r.ok ? "true" : "false", r.pid, static_cast<unsigned long long>(r.frames),
                static_cast<unsigned long long>(r.total), secs,
                secs > 0 ? static_cast<double>(r.frames) / secs : 0.0,
                static_cast<long long>(r.vcsw), static_cast<long long>(r.ivcsw), r.cpu_s,
                static_cast<unsigned long long>(r.gaps), static_cast<unsigned long long>(r.lat_n),
                r.p50_us, r.p99_us, r.p999_us, r.mean_us, r.max_us, json_safe(r.error).c_str(),
                last ? "" : ", ");
}

Options parse(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                throw std::invalid_argument(a + " needs a value");
            return argv[++i];
        };
        if (a == "--name") {
            o.name = value();
        } else if (a == "--bytes") {
            o.bytes = std::stoull(value());
        } else if (a == "--shape") { // comma-separated, row-major: 2160,3840,3
            std::string v = value();
            o.shape.clear();
            o.bytes = 1;
            for (std::size_t pos = 0;;) {
                std::size_t comma = v.find(',', pos);
                o.shape.push_back(std::stoll(v.substr(pos, comma - pos)));
                o.bytes *= static_cast<std::size_t>(o.shape.back());
                if (comma == std::string::npos)
                    break;
                pos = comma + 1;
            }
        } else if (a == "--consumers") {
            o.consumers = std::stoi(value());
        } else if (a == "--warmup") {
            o.warmup = std::stod(value());
        } else if (a == "--seconds") {
            o.seconds = std::stod(value());
        } else if (a == "--spin-us") {
            o.spin_us = std::stol(value());
        } else if (a == "--interval-us") {
            o.interval_us = std::stol(value());
        } else if (a == "--fill") {
            o.fill = true;
        } else {
            throw std::invalid_argument("unknown argument " + a);
        }
    }
    if (o.name.empty())
        throw std::invalid_argument("--name is required");
    if (o.consumers < 1 || o.consumers > 32)
        throw std::invalid_argument("--consumers must be 1..32");
    if (o.interval_us < 0 || o.interval_us > 1'000'000)
        throw std::invalid_argument("--interval-us must be 0..1000000");
    return o;
}

} // namespace

int main(int argc, char **argv) {
    Options o;
    try {
        o = parse(argc, argv);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench_handoff: %s\n", e.what());
        return 2;
    }
    int ready[2], result[2];
    if (::pipe(ready) != 0 || ::pipe(result) != 0) {
        std::perror("pipe");
        return 1;
    }
    std::vector<int> go_w;
    std::vector<pid_t> kids;
    std::fflush(stdout);
    // Consumers are forked before the pool exists so that no child inherits the producer's
    // descriptor (and with it the lock that says the producer is alive).
    for (int c = 0; c < o.consumers; ++c) {
        int go[2];
        if (::pipe(go) != 0) {
            std::perror("pipe");
            return 1;
        }
        pid_t pid = ::fork();
        if (pid < 0) {
            std::perror("fork");
            return 1;
        }
        if (pid == 0) {
            ::close(ready[0]);
            ::close(result[0]);
            ::close(go[1]);
            for (int fd : go_w)
                ::close(fd);
            ::_exit(consumer_main(o, ready[1], go[0], result[1]));
        }
        ::close(go[0]);
        go_w.push_back(go[1]);
        kids.push_back(pid);
    }
    ::close(ready[1]);
    ::close(result[1]);

    Result prod;
    try {
        prod = producer_main(o, ready[0], go_w);
    } catch (const std::exception &e) {
        prod.ok = 0;
        std::snprintf(prod.error, sizeof prod.error, "producer: %s", e.what());
        for (pid_t k : kids)
            ::kill(k, SIGKILL);
    }
    std::vector<Result> cons(static_cast<std::size_t>(o.consumers));
    for (auto &r : cons)
        if (!read_all(result[0], &r, sizeof r, 30'000))
            std::snprintf(r.error, sizeof r.error, "consumer sent no result");
    for (pid_t k : kids) {
        int st = 0;
        ::waitpid(k, &st, 0);
    }
    bool ok = prod.ok != 0;
    std::printf(
        "{\"name\": \"%s\", \"consumers\": %d, \"bytes\": %zu, \"fill\": %s, \"producer\": ",
        o.name.c_str(), o.consumers, o.bytes, o.fill ? "true" : "false");
    print_result(prod, true);
    std::printf(", \"consumer_results\": [");
    for (std::size_t i = 0; i < cons.size(); ++i) {
        ok = ok && cons[i].ok != 0;
        print_result(cons[i], i + 1 == cons.size());
    }
    std::printf("]}\n");
    return ok ? 0 : 1;
}
