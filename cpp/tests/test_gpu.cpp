// SPDX-License-Identifier: Apache-2.0
// GPU pools in C++ against the fake CUDA driver (tests/fake_cuda): allocation, the descriptor
// handed over the pool's socket, stream-ordered publish and release, and the teardown of every
// mapping. Each test runs in a process of its own (ctest), so it picks the driver it loads.
#include "support.hpp"

#include <algorithm>
#include <cstdlib>
#include <dlfcn.h>
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
    REQUIRE(f.stream_create && f.stream_destroy && f.enqueue_fill && f.enqueue_sleep && f.stats);
    return f;
}

PoolOptions gpu_options(std::uint32_t capacity, Shape shape) {
    PoolOptions o;
    o.capacity = capacity;
    o.shape = std::move(shape);
    o.device = Device{Device::cuda, 0};
    return o;
}

unsigned long long addr(const void *p) { return reinterpret_cast<unsigned long long>(p); }

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
