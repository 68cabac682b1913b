// SPDX-License-Identifier: Apache-2.0
// Looking at pools from outside: pool_info(), list_pools(), remove_stale_pool().
#include "support.hpp"

#include <ctime>
#include <thread>
#include <unistd.h>

using namespace bips;
using namespace bips::test;

namespace {
std::int64_t posix_monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
} // namespace

BIPS_TEST(pool_info_describes_a_live_pool) {
    const std::string name = unique_name();
    PoolOptions o;
    o.capacity = 3;
    o.shape = {2, 5};
    o.dtype = UINT16;
    o.meta_size = 8;
    o.policy = Policy::drop_oldest;
    o.max_consumers = 4;
    Producer prod(name, o);
    ConsumerOptions co;
    co.latest = true;
    Consumer a(name), b(name, co);
    publish_pattern(prod, 0);
    publish_pattern(prod, 1);
    Frame held = a.receive(1s);

    PoolInfo info = pool_info(name);
    CHECK_EQ(info.name, name);
    CHECK(info.producer_alive);
    CHECK(!info.closed);
    CHECK_EQ(info.layout_version, bips::LAYOUT_VERSION);
    CHECK_EQ(info.capacity, 3u);
    CHECK_EQ(info.buffer_size, 20u);
    CHECK_EQ(info.meta_size, 8u);
    CHECK(info.policy == Policy::drop_oldest);
    CHECK_EQ(info.mode, 0600u);
    CHECK_EQ(info.owner, ::getuid());
    CHECK_EQ(info.max_consumers, 4u);
    CHECK_EQ(info.consumers, 2u);
    CHECK_EQ(info.published, 2u);
    CHECK_EQ(info.free, 1u);
    CHECK_EQ(info.shape, (Shape{2, 5}));
    CHECK(info.dtype == UINT16);
    CHECK_EQ(info.producer_pid, ::getpid());
    CHECK(info.created_ns > 0);
    CHECK(info.file_size >= 3 * 4096u);
    CHECK(info.error.empty());
    REQUIRE_EQ(info.slots.size(), 2u);
    CHECK_EQ(info.slots[0].slot, 0u);
    CHECK(info.slots[0].alive);
    CHECK_EQ(info.slots[0].pid, ::getpid());
    CHECK(!info.slots[0].latest);
    CHECK_EQ(info.slots[0].received, 1u);
    CHECK_EQ(info.slots[0].held, 1u);
    CHECK_EQ(info.slots[0].queued, 1u);
    CHECK(info.slots[1].latest);
    CHECK_EQ(info.slots[1].received, 0u);
    CHECK_EQ(info.slots[1].queued, 2u);

    // Statistics kept in the segment for outside readers.
    const std::int64_t t_now = posix_monotonic_ns();
    CHECK(info.last_publish_ns > 0 && info.last_publish_ns <= t_now);
    CHECK(info.slots[0].attached_ns > 0 &&
          static_cast<std::int64_t>(info.slots[0].attached_ns) <= t_now);
    CHECK_EQ(info.slots[0].last_seq, 0);
    CHECK(info.slots[0].last_receive_ns >= static_cast<std::int64_t>(info.slots[0].attached_ns));
    CHECK_EQ(info.slots[1].last_seq, -1);
    CHECK_EQ(info.slots[1].last_receive_ns, 0);
    CHECK_EQ(info.acquire_waits, 0u);

    prod.close();
    // Closed: the name is gone, pool_info can no longer find it.
    CHECK_THROWS_AS(pool_info(name), PoolNotFound);
}

BIPS_TEST(pool_info_measures_rate_and_acquire_waits) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    CHECK_EQ(pool_info(name).fps, 0.0);
    // About 200 frames/s for a little over one rate window.
    auto start = std::chrono::steady_clock::now();
    while (seconds_since(start) < 1.3) {
        publish_pattern(prod, 0);
        cons.receive(1s).release();
        std::this_thread::sleep_for(5ms);
    }
    PoolInfo info = pool_info(name);
    CHECK(info.fps > 50.0 && info.fps < 250.0);
    REQUIRE_EQ(info.slots.size(), 1u);
    CHECK_EQ(info.slots[0].last_seq, static_cast<std::int64_t>(info.published) - 1);

    // Both buffers queued and unreceived: the next acquire waits, and is counted with its time.
    publish_pattern(prod, 1);
    publish_pattern(prod, 2);
    CHECK(!prod.try_acquire_for(30ms));
    info = pool_info(name);
    CHECK_EQ(info.acquire_waits, 1u);
    CHECK(info.acquire_wait_ns >= 25'000'000u);
    CHECK_EQ(prod.stats().acquire_waits, 1u);
}

BIPS_TEST(wait_takes_nothing) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    CHECK(!cons.wait(20ms));
    publish_pattern(prod, 7);
    CHECK(cons.wait(1s));
    CHECK(cons.wait(0ms)); // still queued: wait() received nothing
    CHECK_EQ(cons.stats().received, 0u);
    Frame f = cons.receive(0ms);
    CHECK(has_pattern(f.data(), f.nbytes(), 7));
    f.release();
    // From another thread: wakes up when a frame is published.
    std::thread t([&] {
        std::this_thread::sleep_for(30ms);
        publish_pattern(prod, 8);
    });
    auto start = std::chrono::steady_clock::now();
    CHECK(cons.wait(5s));
    CHECK(seconds_since(start) < 2.0);
    t.join();
    // End of stream: wait() returns true so that receive() can report it.
    prod.close();
    CHECK(cons.receive(0ms));
    CHECK(cons.wait(1s));
    CHECK_THROWS_AS(cons.receive(0ms), ProducerGone);
    cons.close();
    CHECK_THROWS_AS(cons.wait(0ms), InvalidArgument);
}

BIPS_TEST(list_pools_lists_ours) {
    const std::string n1 = unique_name(), n2 = unique_name();
    Producer p1(n1, small_pool(2)), p2(n2, small_pool(5));
    bool seen1 = false, seen2 = false;
    for (const PoolInfo &p : list_pools()) {
        if (p.name == n1) {
            seen1 = true;
            CHECK_EQ(p.capacity, 2u);
            CHECK(p.producer_alive);
        } else if (p.name == n2) {
            seen2 = true;
            CHECK_EQ(p.capacity, 5u);
        }
    }
    CHECK(seen1);
    CHECK(seen2);
    p1.close();
    for (const PoolInfo &p : list_pools())
        CHECK(p.name != n1);
}

BIPS_TEST(pool_info_errors) {
    CHECK_THROWS_AS(pool_info(unique_name()), PoolNotFound);
    CHECK_THROWS_AS(pool_info("bad/name"), InvalidArgument);
    CHECK_THROWS_AS(reclaim_dead_consumers("bad/name"), InvalidArgument);
    CHECK(!remove_stale_pool(unique_name()));
}

BIPS_TEST(remove_stale_pool_never_removes_live_pools) {
    const std::string name = unique_name();
    {
        Producer prod(name, small_pool(2));
        CHECK(!remove_stale_pool(name));
        CHECK(shm_exists(name));
    }
    // A foreign file under a pool name is never removed either.
    write_shm_file(name, {'n', 'o', 't', ' ', 'b', 'i', 'p', 's'});
    ScopedUnlink cleanup(name);
    CHECK_THROWS_AS(remove_stale_pool(name), CorruptPool);
    CHECK(shm_exists(name));
}
