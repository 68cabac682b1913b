// SPDX-License-Identifier: Apache-2.0
// What a producer does when no buffer is free: block (lossless) or drop_oldest (live).
#include "support.hpp"

using namespace bips;
using namespace bips::test;

BIPS_TEST(block_policy_times_out_when_consumers_hold_everything) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    publish_pattern(prod, 0);
    publish_pattern(prod, 1);
    ProducerStats ps = prod.stats();
    CHECK_EQ(ps.free, 0u);
    CHECK_EQ(ps.in_flight, 2u);
    CHECK_EQ(cons.stats().queued, 2u);

    CHECK(!prod.try_acquire().has_value());
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(prod.acquire(100ms), Timeout);
    double waited = seconds_since(t0);
    CHECK(waited >= 0.095);
    CHECK(waited < 1.0 * SLOWDOWN);
    t0 = std::chrono::steady_clock::now();
    CHECK(!prod.try_acquire_for(30ms).has_value());
    CHECK(seconds_since(t0) >= 0.028);

    // Received but held: still not free. Released: free.
    Frame f0 = cons.receive(1s);
    CHECK(!prod.try_acquire().has_value());
    CHECK_EQ(cons.stats().held, 1u);
    CHECK_EQ(cons.stats().queued, 1u);
    f0.release();
    auto b = prod.try_acquire();
    REQUIRE(b.has_value());
    CHECK(!prod.try_acquire().has_value());
    // Nothing was lost: the queued frame is still there, in order.
    Frame f1 = cons.receive(1s);
    CHECK_EQ(f1.seq(), 1u);
    CHECK(has_pattern(f1.data(), f1.nbytes(), 1));
    CHECK_EQ(cons.stats().dropped, 0u);
    CHECK_EQ(prod.stats().dropped, 0u);
}

BIPS_TEST(block_policy_wakes_acquire_on_release) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1));
    Consumer cons(name);
    publish_pattern(prod, 0);
    std::thread reader([&] {
        std::this_thread::sleep_for(80ms);
        Frame f = cons.receive(1s); // released at the end of this scope
    });
    auto t0 = std::chrono::steady_clock::now();
    Buffer b = prod.acquire(10s);
    double waited = seconds_since(t0);
    reader.join();
    CHECK(b);
    CHECK(waited >= 0.07);
    CHECK(waited < 1.0 * SLOWDOWN);
}

BIPS_TEST(block_policy_without_consumers_never_blocks) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    for (std::uint64_t i = 0; i < 20; ++i) {
        auto b = prod.try_acquire();
        REQUIRE(b.has_value());
        prod.publish(std::move(*b));
    }
    CHECK_EQ(prod.stats().published, 20u);
    CHECK_EQ(prod.stats().free, 2u);
}

BIPS_TEST(drop_oldest_never_blocks_with_stalled_consumer) {
    const std::string name = unique_name();
    constexpr std::uint64_t N = 100;
    constexpr std::uint32_t CAP = 4;
    Producer prod(name, small_pool(CAP, 512, Policy::drop_oldest));
    Consumer stalled(name);
    for (std::uint64_t i = 0; i < N; ++i) {
        auto b = prod.try_acquire(); // never waits
        REQUIRE(b.has_value());
        fill_pattern(b->data(), b->nbytes(), i);
        prod.publish(std::move(*b));
    }
    ProducerStats ps = prod.stats();
    CHECK_EQ(ps.published, N);
    CHECK_EQ(ps.dropped, N - CAP);
    ConsumerStats cs = stalled.stats();
    CHECK_EQ(cs.dropped, N - CAP);
    CHECK_EQ(cs.queued, CAP);
    CHECK_EQ(cs.received, 0u);

    // What is left are the newest frames, delivered oldest first.
    for (std::uint64_t i = N - CAP; i < N; ++i) {
        Frame f = stalled.receive(1s);
        CHECK_EQ(f.seq(), i);
        CHECK(has_pattern(f.data(), f.nbytes(), i));
    }
    CHECK(!stalled.try_receive().has_value());
    CHECK_EQ(stalled.stats().received, CAP);
}

BIPS_TEST(drop_oldest_never_touches_held_frames) {
    const std::string name = unique_name();
    constexpr std::uint32_t CAP = 4;
    Producer prod(name, small_pool(CAP, 512, Policy::drop_oldest));
    Consumer cons(name);
    publish_pattern(prod, 0);
    publish_pattern(prod, 1);
    Frame h0 = cons.receive(1s);
    Frame h1 = cons.receive(1s);
    // Two buffers held: the producer cycles through the other two and never writes the held ones.
    std::uint64_t last_seq = 1;
    for (std::uint64_t i = 2; i < 50; ++i) {
        auto b = prod.try_acquire();
        REQUIRE(b.has_value());
        CHECK(b->index() != h0.index());
        CHECK(b->index() != h1.index());
        fill_pattern(b->data(), b->nbytes(), i);
        prod.publish(std::move(*b));
        if (i % 7 == 0) { // take one now and then: always newer than the last one taken
            Frame f = cons.receive(1s);
            CHECK(f.seq() > last_seq);
            CHECK(has_pattern(f.data(), f.nbytes(), f.seq()));
            last_seq = f.seq();
        }
    }
    CHECK(has_pattern(h0.data(), h0.nbytes(), 0));
    CHECK(has_pattern(h1.data(), h1.nbytes(), 1));

    // With every buffer held, even drop_oldest has nothing to give.
    std::vector<Frame> all;
    all.push_back(std::move(h0));
    all.push_back(std::move(h1));
    while (auto f = cons.try_receive())
        all.push_back(std::move(*f));
    while (all.size() < CAP) {
        publish_pattern(prod, 1000 + all.size());
        all.push_back(cons.receive(1s));
    }
    CHECK(!prod.try_acquire().has_value());
    CHECK_THROWS_AS(prod.acquire(30ms), Timeout);
    all.pop_back();
    CHECK(prod.try_acquire().has_value());
}

BIPS_TEST(drop_oldest_counts_drops_per_consumer) {
    const std::string name = unique_name();
    constexpr std::uint32_t CAP = 3;
    Producer prod(name, small_pool(CAP, 64, Policy::drop_oldest));
    Consumer fast(name), slow(name);
    std::uint64_t fast_next = 0;
    for (std::uint64_t i = 0; i < 30; ++i) {
        publish_pattern(prod, i);
        Frame f = fast.receive(1s); // keeps up, so it loses nothing
        CHECK_EQ(f.seq(), fast_next++);
    }
    CHECK_EQ(fast.stats().dropped, 0u);
    CHECK_EQ(fast.stats().received, 30u);
    CHECK_EQ(slow.stats().dropped, 30u - CAP);
    CHECK_EQ(slow.stats().queued, CAP);
    CHECK_EQ(prod.stats().dropped, 30u - CAP);
    std::uint64_t prev = 0;
    for (std::uint32_t k = 0; k < CAP; ++k) {
        Frame f = slow.receive(1s);
        if (k > 0)
            CHECK(f.seq() > prev);
        prev = f.seq();
    }
    CHECK_EQ(prev, 29u);
}

BIPS_TEST(drop_oldest_with_latest_consumer) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(3, 64, Policy::drop_oldest));
    ConsumerOptions co;
    co.latest = true;
    Consumer cons(name, co);
    std::uint64_t last = 0;
    for (std::uint64_t i = 0; i < 40; ++i) {
        publish_pattern(prod, i);
        if (i % 5 == 4) {
            Frame f = cons.receive(1s);
            CHECK_EQ(f.seq(), i); // always the newest
            CHECK(has_pattern(f.data(), f.nbytes(), i));
            last = f.seq();
        }
    }
    CHECK_EQ(last, 39u);
    ConsumerStats s = cons.stats();
    CHECK_EQ(s.received, 8u);
    CHECK_EQ(s.received + s.skipped + s.dropped, 40u);
}
