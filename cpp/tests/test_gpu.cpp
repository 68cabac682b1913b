// SPDX-License-Identifier: Apache-2.0
// GPU pools in C++ against the fake CUDA driver (tests/fake_cuda): allocation, the descriptor
// handed over the pool's socket, stream-ordered publish and release, and the teardown of every
// mapping. Each test runs in a process of its own (ctest), so it picks the driver it loads.
#include "support.hpp"

#include "cuda/device_memory.hpp"
#include "fd_channel.hpp"
#include "layout.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <dlfcn.h>
#include <filesystem>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace bips;
using namespace bips::test;

namespace {

// The fake's test entry points, from the very instance bips loads (same path, same handle).
struct Fake {
    int (*stream_create)(void **);
    int (*stream_destroy)(void *);
    int (*enqueue_fill)(void *, unsigned long long, int, std::size_t, unsigned);
    int (*enqueue_sleep)(void *, unsigned);
    unsigned long long (*stats)(const char *);
    int (*launch_host_func)(void *, void (*)(void *), void *);
    int (*ctx_retain)(void **, int);
    int (*ctx_push)(void *);
    int (*ctx_pop)(void **);
    int (*ctx_release)(int);
};

Fake use_fake_driver() {
    ::setenv("BIPS_LIBCUDA", BIPS_FAKE_CUDA_PATH, 1);
    void *lib = ::dlopen(BIPS_FAKE_CUDA_PATH, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(lib != nullptr);
    Fake f{};
    f.stream_create = reinterpret_cast<int (*)(void **)>(::dlsym(lib, "fake_cuda_stream_create"));
    f.stream_destroy = reinterpret_cast<int (*)(void *)>(::dlsym(lib, "fake_cuda_stream_destroy"));
    f.enqueue_fill =
        reinterpret_cast<int (*)(void *, unsigned long long, int, std::size_t, unsigned)>(
            ::dlsym(lib, "fake_cuda_enqueue_fill"));
    f.enqueue_sleep =
        reinterpret_cast<int (*)(void *, unsigned)>(::dlsym(lib, "fake_cuda_enqueue_sleep"));
    f.stats =
        reinterpret_cast<unsigned long long (*)(const char *)>(::dlsym(lib, "fake_cuda_stats"));
    // The driver API as an application calls it, for host functions of the test's own.
    f.launch_host_func = reinterpret_cast<int (*)(void *, void (*)(void *), void *)>(
        ::dlsym(lib, "cuLaunchHostFunc"));
    f.ctx_retain =
        reinterpret_cast<int (*)(void **, int)>(::dlsym(lib, "cuDevicePrimaryCtxRetain"));
    f.ctx_push = reinterpret_cast<int (*)(void *)>(::dlsym(lib, "cuCtxPushCurrent_v2"));
    f.ctx_pop = reinterpret_cast<int (*)(void **)>(::dlsym(lib, "cuCtxPopCurrent_v2"));
    f.ctx_release = reinterpret_cast<int (*)(int)>(::dlsym(lib, "cuDevicePrimaryCtxRelease_v2"));
    REQUIRE(f.stream_create && f.stream_destroy && f.enqueue_fill && f.enqueue_sleep && f.stats &&
            f.launch_host_func && f.ctx_retain && f.ctx_push && f.ctx_pop && f.ctx_release);
    return f;
}

/// Queues the application's host function `fn(arg)` on `stream` (device 0's primary context).
void launch_host_func(const Fake &fake, void *stream, void (*fn)(void *), void *arg) {
    void *ctx = nullptr;
    REQUIRE(fake.ctx_retain(&ctx, 0) == 0);
    REQUIRE(fake.ctx_push(ctx) == 0);
    REQUIRE(fake.launch_host_func(stream, fn, arg) == 0);
    REQUIRE(fake.ctx_pop(&ctx) == 0);
    REQUIRE(fake.ctx_release(0) == 0);
}

PoolOptions gpu_options(std::uint32_t capacity, Shape shape) {
    PoolOptions o;
    o.capacity = capacity;
    o.shape = std::move(shape);
    o.device = Device{Device::cuda, 0};
    return o;
}

unsigned long long addr(const void *p) { return reinterpret_cast<unsigned long long>(p); }

std::size_t open_fds() {
    return static_cast<std::size_t>(
        std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                      std::filesystem::directory_iterator{}));
}

/// True once this process has `n` descriptors open again (sanitizer runtimes open some for a
/// moment on threads of their own).
bool fds_back_to(std::size_t n) {
    return wait_until([&] { return open_fds() == n; }, std::chrono::milliseconds(2000));
}

} // namespace

BIPS_TEST(gpu_device_names) {
    CHECK(Device::parse("cpu") == Device{});
    CHECK(Device::parse("cuda") == (Device{Device::cuda, 0}));
    CHECK(Device::parse("cuda:3") == (Device{Device::cuda, 3}));
    CHECK_EQ(Device::parse("cuda:12").str(), std::string("cuda:12"));
    for (const char *bad : {"", "gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:99999", "CPU"})
        CHECK_THROWS_AS(Device::parse(bad), InvalidArgument);
}

BIPS_TEST(gpu_without_a_driver_creates_nothing) {
    ::setenv("BIPS_LIBCUDA", "/nonexistent/libcuda.so.1", 1);
    CHECK(!cuda_available());
    CHECK(cuda_unavailable_reason().find("cannot load the CUDA driver") != std::string::npos);
    CHECK(device_unavailable_reason(Device{Device::cuda, 0}).find("cannot load the CUDA driver") !=
          std::string::npos);
    CHECK(device_unavailable_reason(Device{}).empty());
    const std::string name = unique_name();
    CHECK_THROWS_AS(Producer(name, gpu_options(2, {16})), DeviceUnavailable);
    CHECK(!shm_exists(name));
    // Host pools do not care.
    PoolOptions o;
    o.shape = {16};
    Producer p(name, o);
    CHECK(p.device() == Device{});
}

BIPS_TEST(gpu_round_trip_ordered_by_streams) {
    Fake fake = use_fake_driver();
    REQUIRE(cuda_available());
    const std::string name = unique_name();
    {
        Producer prod(name, gpu_options(2, {64, 64}));
        CHECK(prod.device() == (Device{Device::cuda, 0}));
        CHECK(::access(("/dev/shm/bips." + name + "@fd").c_str(), F_OK) == 0);
        Consumer cons(name);
        CHECK(cons.device() == (Device{Device::cuda, 0}));
        const PoolInfo info = pool_info(name);
        CHECK_EQ(info.device, std::string("cuda"));
        CHECK_EQ(info.device_uuid.rfind("GPU-", 0), 0u);

        void *stream = nullptr;
        REQUIRE(fake.stream_create(&stream) == 0);
        for (int seq = 0; seq < 4; ++seq) {
            Buffer b = prod.acquire(2s);
            CHECK(b.device() == (Device{Device::cuda, 0}));
            CHECK_EQ(addr(b.data()) % 4096, 0u);
            // A slow "kernel" writes the frame; the frame must become visible only after it.
            REQUIRE(fake.enqueue_fill(stream, addr(b.data()), seq + 1, b.nbytes(), 20000) == 0);
            prod.publish(std::move(b), -1, nullptr, 0, stream);
            CHECK(fake.stats("ops_pending") > 0); // publish did not wait for the kernel
            Frame f = cons.receive(5s * SLOWDOWN);
            CHECK_EQ(f.seq(), static_cast<std::uint64_t>(seq));
            CHECK(f.device() == (Device{Device::cuda, 0}));
            CHECK(f.read_only_mapping());
            std::vector<unsigned char> host(f.nbytes());
            f.copy_to(host.data());
            bool whole = true;
            for (unsigned char c : host)
                whole = whole && c == seq + 1;
            CHECK(whole);
            // The consumer's "kernel" reads the frame for 200 ms: the buffer stays held.
            REQUIRE(fake.enqueue_sleep(stream, 200000) == 0);
            f.release(stream);
            CHECK(!f);
        }
        // Host bytes in through copy_from, out through copy_to.
        Buffer b = prod.acquire(5s * SLOWDOWN);
        std::vector<unsigned char> src(b.nbytes(), 0x5a);
        b.copy_from(src.data(), src.size(), stream);
        CHECK_THROWS_AS(b.copy_from(src.data(), b.capacity() + 1), InvalidArgument);
        prod.publish(std::move(b), -1, nullptr, 0, stream);
        Frame f = cons.receive(5s * SLOWDOWN);
        std::vector<unsigned char> out(f.nbytes());
        f.copy_to(out.data());
        CHECK(out == src);
        f.release(STREAM_NONE);
        REQUIRE(fake.stream_destroy(stream) == 0);
    }
    // Every mapping goes, including those dropped by host functions (on bips' own thread).
    CHECK(wait_until([&] { return fake.stats("live_allocations") == 0; }, 5000ms));
    CHECK_EQ(fake.stats("maps"), 0u);
    CHECK_EQ(fake.stats("host_func_violations"), 0u);
    CHECK(!shm_exists(name));
    CHECK(::access(("/dev/shm/bips." + name + "@fd").c_str(), F_OK) != 0);
}

BIPS_TEST(gpu_release_waits_for_the_consumers_kernel) {
    Fake fake = use_fake_driver();
    const std::string name = unique_name();
    Producer prod(name, gpu_options(1, {4096}));
    Consumer cons(name);
    prod.publish(prod.acquire(2s), -1, nullptr, 0, STREAM_NONE);
    Frame f = cons.receive(2s);
    void *stream = nullptr;
    REQUIRE(fake.stream_create(&stream) == 0);
    REQUIRE(fake.enqueue_sleep(stream, 500000) == 0); // a kernel still reading the frame
    const auto t0 = std::chrono::steady_clock::now();
    f.set_stream(stream);
    f = Frame(); // the destructor releases, after the kernel
    CHECK(!prod.try_acquire());
    auto b = prod.try_acquire_for(5s * SLOWDOWN);
    CHECK(b.has_value());
    CHECK(seconds_since(t0) > 0.4);
    REQUIRE(fake.stream_destroy(stream) == 0);
}

// close() after publishing on a busy stream: the frame is delivered once the kernel ends (within
// close's 2 s), then end of stream; a kernel that outlasts that loses its frame, not the buffer.
void close_with_a_kernel_running(unsigned kernel_us, bool delivered) {
    Fake fake = use_fake_driver();
    const std::string name = unique_name();
    std::optional<Consumer> cons;
    {
        Producer prod(name, gpu_options(1, {64}));
        cons.emplace(name);
        void *stream = nullptr;
        REQUIRE(fake.stream_create(&stream) == 0);
        Buffer b = prod.acquire(2s);
        REQUIRE(fake.enqueue_fill(stream, addr(b.data()), 9, 64, kernel_us) == 0);
        prod.publish(std::move(b), -1, nullptr, 0, stream);
        prod.close();
        REQUIRE(fake.stream_destroy(stream) == 0); // its queued work still runs
    }
    if (delivered) {
        Frame f = cons->receive(2s * SLOWDOWN);
        unsigned char host[64] = {};
        f.copy_to(host);
        CHECK(host[0] == 9 && host[63] == 9);
    }
    CHECK_THROWS_AS(cons->receive(2s * SLOWDOWN), ProducerGone);
    cons.reset();
    CHECK(wait_until([&] { return fake.stats("live_allocations") == 0; }, 5000ms * SLOWDOWN));
}

BIPS_TEST(gpu_close_waits_for_frames_still_on_their_stream) {
    close_with_a_kernel_running(300000, true);
}

BIPS_TEST(gpu_close_gives_up_on_a_kernel_that_outlasts_it) {
    close_with_a_kernel_running(2500000, false);
}

BIPS_TEST(gpu_bad_stream_is_an_error_and_keeps_the_buffer) {
    use_fake_driver();
    const std::string name = unique_name();
    Producer prod(name, gpu_options(1, {64}));
    Buffer b = prod.acquire(2s);
    int not_a_stream = 0;
    CHECK_THROWS_AS(prod.publish(std::move(b), -1, nullptr, 0, &not_a_stream), DeviceError);
    // The refused buffer went back to the pool.
    CHECK(prod.try_acquire_for(1s).has_value());
}

BIPS_TEST(gpu_frame_dropped_in_a_host_function_frees_its_mapping_elsewhere) {
    // A user's host function that drops the last reference to a frame (and so to its pool's
    // mapping, the Consumer being gone) must not leave the teardown, which calls CUDA, to the
    // host function, where every CUDA call fails: the mapping would stay for good.
    Fake fake = use_fake_driver();
    const std::string name = unique_name();
    {
        Producer prod(name, gpu_options(1, {64}));
        auto *frame = new Frame();
        {
            Consumer cons(name);
            prod.publish(prod.acquire(2s), -1, nullptr, 0, STREAM_NONE);
            *frame = cons.receive(2s * SLOWDOWN);
        }
        CHECK_EQ(fake.stats("maps"), 2u); // the producer's and the frame's pool's
        void *stream = nullptr;
        REQUIRE(fake.stream_create(&stream) == 0);
        REQUIRE(fake.enqueue_sleep(stream, 50000) == 0);
        launch_host_func(fake, stream, [](void *f) { delete static_cast<Frame *>(f); }, frame);
        // The buffer comes back, and the consumer's mapping goes (on a thread that may call CUDA).
        CHECK(prod.try_acquire_for(5s * SLOWDOWN).has_value());
        CHECK(wait_until([&] { return fake.stats("maps") == 1; }, 5000ms));
        REQUIRE(fake.stream_destroy(stream) == 0);
    }
    CHECK(wait_until([&] { return fake.stats("live_allocations") == 0; }, 5000ms));
    CHECK_EQ(fake.stats("maps"), 0u);
}

BIPS_TEST(gpu_dead_producers_socket_goes_with_the_pool_it_served) {
    // A GPU producer dies; a host producer takes the name over. Nobody serves the old socket any
    // more: it must go with the pool it belonged to, not lie in /dev/shm for good.
    const std::string name = unique_name();
    const std::string socket = shm_path(name) + "@fd";
    Pipe ready;
    Child gpu = Child::fork([&] {
        use_fake_driver();
        Producer prod(name, gpu_options(1, {64}));
        ready.signal();
        ::pause();
        return 0;
    });
    REQUIRE(ready.wait(5s * SLOWDOWN) == '!');
    REQUIRE(::access(socket.c_str(), F_OK) == 0);
    gpu.kill(); // SIGKILL: no destructor removes anything
    {
        PoolOptions o;
        o.shape = {64};
        Producer host(name, o);
        host.close();
    }
    CHECK(!shm_exists(name));
    CHECK(::access(socket.c_str(), F_OK) != 0);
    ::unlink(socket.c_str());
}

BIPS_TEST(gpu_threads_publish_and_release_on_their_streams_at_once) {
    // Threads load the driver, retain the context, publish and release on streams of their own,
    // all at once (for TSan); then everything is torn down with host functions still queued.
    Fake fake = use_fake_driver();
    const std::string name = unique_name();
    constexpr int THREADS = 4, FRAMES = 40;
    {
        std::optional<Producer> prod;
        std::optional<Consumer> cons;
        std::thread opener([&] { prod.emplace(name, gpu_options(8, {256})); });
        CHECK(cuda_available()); // races the opener's first use of the driver
        opener.join();
        cons.emplace(name);
        std::atomic<int> received{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < THREADS; ++t) {
            threads.emplace_back([&, t] {
                void *stream = nullptr;
                REQUIRE(fake.stream_create(&stream) == 0);
                for (int i = 0; i < FRAMES; ++i) {
                    Buffer b = prod->acquire(5s * SLOWDOWN);
                    REQUIRE(fake.enqueue_fill(stream, addr(b.data()), t + 1, b.nbytes(), 100) == 0);
                    prod->publish(std::move(b), -1, nullptr, 0, stream);
                }
                REQUIRE(fake.stream_destroy(stream) == 0);
            });
            threads.emplace_back([&] {
                void *stream = nullptr;
                REQUIRE(fake.stream_create(&stream) == 0);
                while (received.load() < THREADS * FRAMES) {
                    auto f = cons->try_receive_for(100ms);
                    if (!f)
                        continue;
                    received.fetch_add(1);
                    REQUIRE(fake.enqueue_sleep(stream, 100) == 0);
                    if (received.load() % 3 == 0)
                        f->set_stream(stream); // else the legacy default stream
                }
                REQUIRE(fake.stream_destroy(stream) == 0);
            });
        }
        for (auto &t : threads)
            t.join();
        CHECK_EQ(received.load(), THREADS * FRAMES);
        CHECK_EQ(prod->stats().published, static_cast<std::uint64_t>(THREADS * FRAMES));
    }
    CHECK(wait_until([&] { return fake.stats("live_allocations") == 0; }, 5000ms * SLOWDOWN));
    CHECK_EQ(fake.stats("maps"), 0u);
    CHECK_EQ(fake.stats("host_func_violations"), 0u);
}

BIPS_TEST(gpu_process_exit_does_not_pull_the_driver_state_from_under_the_reaper) {
    // The reaper tears pools down on a thread nothing joins (here the consumer's, whose last
    // reference a release's host function kept), so the process may exit while it works: what
    // it uses (the primary contexts, the loaded driver) must not be destroyed at exit. TSan sees
    // the race whenever the teardown ran before exit, as it does here.
    const std::string name = unique_name();
    Child child = Child::fork([&] {
        use_fake_driver();
        Frame frame;
        {
            Producer prod(name, gpu_options(1, {64}));
            Consumer cons(name);
            prod.publish(prod.acquire(2s), -1, nullptr, 0, STREAM_NONE);
            frame = cons.receive(2s * SLOWDOWN);
        }
        frame.release(nullptr);             // the last reference: a host function, then the reaper
        std::this_thread::sleep_for(300ms); // the reaper unmaps meanwhile; nothing waits for it
        std::exit(0);                       // static destructors run
        return 0;
    });
    CHECK_EQ(child.wait(20s), 0);
}

BIPS_TEST(gpu_forged_device_fields_are_refused_and_leave_nothing_behind) {
    // A pool's owner can rewrite its header (its mode keeps only others out): a consumer takes no
    // GPU size, stride, kind or device on the header's word, and a refusal leaks nothing.
    Fake fake = use_fake_driver();
    using detail::PoolHeader;
    const std::string name = unique_name();
    Producer prod(name, gpu_options(2, {5000})); // device_stride 8192
    REQUIRE(::chmod(shm_path(name).c_str(), 0600) == 0);
    MappedFile file(shm_path(name));
    {
        Consumer warm(name);
    } // the driver's and the test's own one-time descriptors
    const std::size_t fds = open_fds();
    auto forged = [&](std::size_t off, auto value, auto check) {
        const auto saved = file.get<decltype(value)>(off);
        file.set(off, value);
        check();
        file.set(off, saved);
        CHECK_EQ(fake.stats("maps"), 1u); // the producer's only
        CHECK(fds_back_to(fds));
    };
    const auto size = file.get<std::uint64_t>(offsetof(PoolHeader, device_size));
    forged(offsetof(PoolHeader, device_size), size + (2u << 20),
           [&] { CHECK_THROWS_AS(Consumer(name), IncompatiblePool); });
    forged(offsetof(PoolHeader, device_size), std::uint64_t{0},
           [&] { CHECK_THROWS_AS(Consumer(name), CorruptPool); });
    forged(offsetof(PoolHeader, device_stride), std::uint64_t{4096},
           [&] { CHECK_THROWS_AS(Consumer(name), CorruptPool); });
    forged(offsetof(PoolHeader, device_stride), std::uint64_t{1} << 50,
           [&] { CHECK_THROWS_AS(Consumer(name), CorruptPool); });
    forged(offsetof(PoolHeader, device_kind), std::uint32_t{7},
           [&] { CHECK_THROWS_AS(Consumer(name), IncompatiblePool); });
    forged(offsetof(PoolHeader, device_kind), std::uint32_t{0}, // "host": no data area
           [&] { CHECK_THROWS_AS(Consumer(name), CorruptPool); });
    forged(offsetof(PoolHeader, device_ordinal), std::int32_t{-1},
           [&] { CHECK_THROWS_AS(Consumer(name), CorruptPool); });
    forged(offsetof(PoolHeader, device_uuid), std::uint64_t{0x0123456789abcdefull},
           [&] { CHECK_THROWS_AS(Consumer(name), DeviceUnavailable); });
    Consumer ok(name); // all restored
    CHECK(ok.device() == (Device{Device::cuda, 0}));
}

BIPS_TEST(gpu_another_user_attaches_as_the_pools_mode_allows) {
    // The allocation's descriptor goes to whoever the pool's mode admits, and to nobody else.
    if (::geteuid() != 0)
        return; // switching to another uid needs root
    for (const mode_t mode : {mode_t{0666}, mode_t{0606}, mode_t{0660}, mode_t{0600}}) {
        const std::string name = unique_name();
        Pipe ready, stop;
        // Each side in a child of its own: CUDA does not survive fork().
        Child producer = Child::fork([&] {
            use_fake_driver();
            PoolOptions o = gpu_options(1, {64});
            o.mode = mode;
            Producer prod(name, o);
            ready.signal();
            const std::vector<unsigned char> src(64, 42);
            while (stop.wait(20ms) != '!') {
                auto b = prod.try_acquire();
                if (!b)
                    continue;
                b->copy_from(src.data(), src.size(), STREAM_NONE);
                prod.publish(std::move(*b), -1, nullptr, 0, STREAM_NONE);
            }
            return 0;
        });
        REQUIRE(ready.wait(10s * SLOWDOWN) == '!');
        Child other = Child::fork([&] {
            REQUIRE(::setgroups(0, nullptr) == 0 && ::setgid(65534) == 0 && ::setuid(65534) == 0);
            use_fake_driver();
            try {
                Consumer cons(name);
                Frame f = cons.receive(5s * SLOWDOWN);
                std::vector<unsigned char> host(f.nbytes());
                f.copy_to(host.data());
                return host[0] == 42 ? 1 : 3;
            } catch (const std::system_error &e) {
                return e.code().value() == EACCES ? 2 : 4;
            }
        });
        CHECK_EQ(other.wait(20s * SLOWDOWN), (mode & 0006) ? 1 : 2);
        stop.signal();
        CHECK_EQ(producer.wait(10s * SLOWDOWN), 0);
    }
}

BIPS_TEST(gpu_copy_from_with_no_stream_is_done_when_it_returns) {
    // STREAM_NONE names no stream to publish behind: publish(STREAM_NONE) takes the frame as
    // complete, so copy_from(STREAM_NONE) must have written it, and be done with the caller's
    // bytes, when it returns.
    Fake fake = use_fake_driver();
    const std::string name = unique_name();
    Producer prod(name, gpu_options(1, {4096}));
    Consumer cons(name);
    void *stream = nullptr;
    REQUIRE(fake.stream_create(&stream) == 0);
    REQUIRE(fake.enqueue_sleep(stream, 300000) == 0); // default-stream work waits behind it
    Buffer b = prod.acquire(2s);
    {
        std::vector<unsigned char> src(b.nbytes(), 0x77);
        b.copy_from(src.data(), src.size(), STREAM_NONE);
    } // the caller's bytes are gone
    prod.publish(std::move(b), -1, nullptr, 0, STREAM_NONE);
    Frame f = cons.receive(2s * SLOWDOWN);
    // Under the fake, device memory is host memory: what a kernel in another process reads now.
    const auto *p = reinterpret_cast<const unsigned char *>(f.data());
    CHECK(std::all_of(p, p + f.nbytes(), [](unsigned char c) { return c == 0x77; }));
    REQUIRE(fake.stream_destroy(stream) == 0);
}

BIPS_TEST(gpu_served_allocation_smaller_than_the_pool_is_refused) {
    // Whoever serves the pool's socket (its owner) hands over an allocation too small for the
    // pool: the consumer maps the size it computed itself, which fails, and keeps nothing.
    Fake fake = use_fake_driver();
    const std::string name = unique_name();
    Producer prod(name, gpu_options(4, {1 << 20})); // 4 MiB
    const std::vector<unsigned char> header = read_shm_file(name);
    std::uint64_t instance = 0;
    std::memcpy(&instance, header.data() + offsetof(detail::PoolHeader, instance_id),
                sizeof instance);
    auto small = detail::cuda::DeviceMemory::create(0, 1); // one granule: 2 MiB
    std::vector<posix::File> fds;
    fds.push_back(small->export_fd());
    detail::FdServer liar(shm_path(name) + "@fd",
                          detail::FdPolicy{::geteuid(), ::getegid(), mode_t{0600}}, instance,
                          std::move(fds));
    const auto maps = fake.stats("maps"), allocations = fake.stats("live_allocations");
    const std::size_t fds_before = open_fds();
    CHECK_THROWS_AS(Consumer(name), DeviceError);
    CHECK_EQ(fake.stats("maps"), maps);
    CHECK_EQ(fake.stats("live_allocations"), allocations);
    CHECK(fds_back_to(fds_before));
}

BIPS_TEST(gpu_socket_name_squatted_by_another_user_fails_cleanly) {
    // Another user took the pool's socket name first: the producer cannot replace it (sticky
    // /dev/shm), says so with EPERM, and leaves no pool files and no GPU memory behind.
    if (::geteuid() != 0)
        return; // two other uids need root
    const std::string name = unique_name();
    const std::string socket = shm_path(name) + "@fd";
    Pipe bound, stop;
    Child squatter = Child::fork([&] {
        REQUIRE(::setgroups(0, nullptr) == 0 && ::setgid(65534) == 0 && ::setuid(65534) == 0);
        const int s = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, socket.c_str(), socket.size() + 1);
        REQUIRE(::bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
        REQUIRE(::listen(s, 1) == 0);
        bound.signal();
        stop.wait(20s * SLOWDOWN);
        ::unlink(socket.c_str());
        return 0;
    });
    REQUIRE(bound.wait(5s * SLOWDOWN) == '!');
    Child producer = Child::fork([&] {
        REQUIRE(::setgroups(0, nullptr) == 0 && ::setgid(1000) == 0 && ::setuid(1000) == 0);
        Fake fake = use_fake_driver();
        int err = 0;
        try {
            Producer prod(name, gpu_options(1, {64}));
        } catch (const std::system_error &e) {
            err = e.code().value();
        }
        CHECK_EQ(err, EPERM);
        CHECK(!shm_exists(name));
        CHECK(::access(ctl_path(name).c_str(), F_OK) != 0);
        CHECK_EQ(fake.stats("live_allocations"), 0u);
        return 0;
    });
    CHECK_EQ(producer.wait(20s * SLOWDOWN), 0);
    stop.signal();
    CHECK_EQ(squatter.wait(5s), 0);
}

BIPS_TEST(gpu_stream_synchronize_ends_the_copys_hold_on_its_source) {
    // The fake reads copy_from()'s source when the stream gets there (the pinned-memory rule):
    // after stream_synchronize() the caller may reuse it (what bipssink does with a GstBuffer).
    Fake fake = use_fake_driver();
    const std::string name = unique_name();
    Producer prod(name, gpu_options(1, {4096}));
    Consumer cons(name);
    void *stream = nullptr;
    REQUIRE(fake.stream_create(&stream) == 0);
    Buffer b = prod.acquire(2s);
    std::vector<unsigned char> src(b.nbytes(), 0x3c);
    REQUIRE(fake.enqueue_sleep(stream, 200000) == 0); // the copy waits behind a slow kernel
    b.copy_from(src.data(), src.size(), stream);
    prod.publish(std::move(b), -1, nullptr, 0, stream);
    CHECK(fake.stats("ops_pending") > 0);
    stream_synchronize(prod.device(), stream);
    CHECK_EQ(fake.stats("ops_pending"), 0u);
    std::fill(src.begin(), src.end(), 0); // reused: the frame must not see it
    Frame f = cons.receive(2s * SLOWDOWN);
    std::vector<unsigned char> out(f.nbytes());
    f.copy_to(out.data());
    CHECK(std::all_of(out.begin(), out.end(), [](unsigned char c) { return c == 0x3c; }));
    f.release(STREAM_NONE);
    // Host devices and STREAM_NONE: nothing to wait for; a foreign device: an error.
    stream_synchronize(Device{}, stream);
    stream_synchronize(prod.device(), STREAM_NONE);
    CHECK_THROWS_AS(stream_synchronize(Device{Device::cuda, 7}, nullptr), Error);
    // What a program can check before it builds anything on a device.
    CHECK(device_unavailable_reason(prod.device()).empty());
    CHECK(device_unavailable_reason(Device{Device::cuda, 7}).find("no CUDA device cuda:7") !=
          std::string::npos);
    REQUIRE(fake.stream_destroy(stream) == 0);
}
