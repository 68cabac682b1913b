// SPDX-License-Identifier: Apache-2.0
// Processes that die (SIGKILL, no cleanup at all) and the limits on who may attach.
#include "support.hpp"

#include <csignal>

using namespace bips;
using namespace bips::test;

BIPS_TEST(producer_crash_gives_producer_gone) {
    const std::string name = unique_name();
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        Producer prod(name, small_pool(4, 1024));
        if (!wait_until([&] { return prod.stats().consumers == 1; }, 5000ms))
            return 3;
        publish_pattern(prod, 0);
        publish_pattern(prod, 1);
        ready.signal();
        ::pause(); // until SIGKILL (or the alarm)
        return 4;
    });
    ConsumerOptions co;
    co.wait = 5s;
    Consumer cons(name, co);
    REQUIRE_EQ(ready.wait(5000ms), '!');
    child.kill();
    auto killed = std::chrono::steady_clock::now();

    // Frames published before the crash are still delivered, then ProducerGone within 1 s.
    Frame f0 = cons.receive(1s);
    Frame f1 = cons.receive(1s);
    CHECK_EQ(f0.seq(), 0u);
    CHECK_EQ(f1.seq(), 1u);
    CHECK(has_pattern(f1.data(), f1.nbytes(), 1));
    CHECK_THROWS_AS(cons.receive(10s), ProducerGone);
    CHECK(seconds_since(killed) < 1.0 * SLOWDOWN);

    // The dead producer's pool is still there; a new producer replaces it...
    CHECK(shm_exists(name));
    CHECK_THROWS_AS(Consumer(name), ProducerGone);
    Producer next(name, small_pool(2, 64));
    CHECK_EQ(next.stats().consumers, 0u); // a fresh pool, not the old one
    Consumer fresh(name);
    publish_pattern(next, 5);
    Frame g = fresh.receive(1s);
    CHECK_EQ(g.seq(), 0u);
    CHECK_EQ(g.nbytes(), 64u);
    CHECK(has_pattern(g.data(), g.nbytes(), 5));
    // ...while the old consumer, still holding old frames, stays on the dead pool.
    CHECK(has_pattern(f0.data(), f0.nbytes(), 0));
    CHECK_THROWS_AS(cons.receive(1s), ProducerGone);
}

BIPS_TEST(producer_gone_after_crash_is_final) {
    // Once receive() has said ProducerGone for a crashed producer, every later call says so too
    // (as after a clean close): the dead producer cannot come back to this segment.
    const std::string name = unique_name();
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        Producer prod(name, small_pool(2));
        if (!wait_until([&] { return prod.stats().consumers == 1; }, 5000ms))
            return 3;
        ready.signal();
        ::pause();
        return 4;
    });
    ConsumerOptions co;
    co.wait = 5s;
    Consumer cons(name, co);
    REQUIRE_EQ(ready.wait(5000ms), '!');
    child.kill();
    CHECK_THROWS_AS(cons.receive(5s), ProducerGone);
    CHECK_THROWS_AS(cons.try_receive(), ProducerGone);
    CHECK_THROWS_AS(cons.try_receive_for(0ms), ProducerGone);
}

BIPS_TEST(producer_crash_wakes_a_waiting_consumer) {
    const std::string name = unique_name();
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        Producer prod(name, small_pool(2));
        ready.signal();
        ::pause();
        return 4;
    });
    REQUIRE_EQ(ready.wait(5000ms), '!');
    Consumer cons(name);
    std::thread killer([&] {
        std::this_thread::sleep_for(100ms);
        child.kill();
    });
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(cons.receive(10s), ProducerGone);
    double waited = seconds_since(t0);
    killer.join();
    CHECK(waited >= 0.09);
    CHECK(waited < (0.1 + 1.0) * SLOWDOWN);
    cons.close(); // the last user of a dead pool removes it
    CHECK(!shm_exists(name));
}

BIPS_TEST(dead_producer_pool_replaced_without_consumers) {
    const std::string name = unique_name();
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        Producer prod(name, small_pool(2));
        publish_pattern(prod, 0);
        ready.signal();
        ::pause();
        return 4;
    });
    REQUIRE_EQ(ready.wait(5000ms), '!');
    // Live producer: a second one is refused.
    CHECK_THROWS_AS(Producer(name, small_pool(2)), PoolBusy);
    CHECK(!remove_stale_pool(name));
    child.kill();
    CHECK(shm_exists(name)); // SIGKILL left it behind
    auto info = pool_info(name);
    CHECK(!info.producer_alive);
    CHECK_EQ(info.published, 1u);
    Producer next(name, small_pool(3));
    CHECK_EQ(next.capacity(), 3u);
    CHECK_EQ(pool_info(name).published, 0u);
}

BIPS_TEST(remove_stale_pool_after_producer_crash) {
    const std::string name = unique_name();
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        Producer prod(name, small_pool(2));
        ready.signal();
        ::pause();
        return 4;
    });
    REQUIRE_EQ(ready.wait(5000ms), '!');
    child.kill();
    REQUIRE(shm_exists(name));
    CHECK(remove_stale_pool(name));
    CHECK(!shm_exists(name));
    CHECK(!remove_stale_pool(name)); // nothing left to remove
}

BIPS_TEST(consumer_crash_returns_its_buffers) {
    const std::string name = unique_name();
    constexpr std::uint32_t CAP = 4;
    Producer prod(name, small_pool(CAP, 1024));
    Consumer survivor(name);
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        ConsumerOptions co;
        co.wait = 2s;
        Consumer cons(name, co);
        ready.signal('a');
        // Hold two frames and leave the other two queued, then die without releasing anything.
        Frame f0 = cons.receive(5s);
        Frame f1 = cons.receive(5s);
        ready.signal('h');
        ::pause();
        return 4;
    });
    REQUIRE_EQ(ready.wait(5000ms), 'a');
    for (std::uint64_t i = 0; i < CAP; ++i)
        publish_pattern(prod, i);
    REQUIRE_EQ(ready.wait(5000ms), 'h');
    // The survivor takes and releases everything; the child's share still pins every buffer.
    for (std::uint64_t i = 0; i < CAP; ++i)
        CHECK_EQ(survivor.receive(1s).seq(), i);
    CHECK_EQ(prod.stats().free, 0u);
    CHECK(!prod.try_acquire().has_value());
    CHECK_EQ(prod.stats().consumers, 2u);

    child.kill();
    auto killed = std::chrono::steady_clock::now();
    std::vector<Buffer> got;
    for (std::uint32_t k = 0; k < CAP; ++k) {
        auto b = prod.try_acquire_for(1s * SLOWDOWN);
        if (!b)
            break;
        got.push_back(std::move(*b));
    }
    double took = seconds_since(killed);
    CHECK_EQ(got.size(), CAP);
    CHECK(took < 1.0 * SLOWDOWN);
    CHECK_EQ(prod.stats().consumers, 1u);
    got.clear();
    CHECK_EQ(prod.stats().free, CAP);

    // The survivor is unaffected.
    publish_pattern(prod, 100);
    Frame f = survivor.receive(1s);
    CHECK_EQ(f.seq(), CAP);
    CHECK(has_pattern(f.data(), f.nbytes(), 100));
}

BIPS_TEST(reclaim_dead_consumers_by_hand) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        ConsumerOptions co;
        co.wait = 2s;
        Consumer cons(name, co);
        ready.signal('a');
        Frame f = cons.receive(5s);
        ready.signal('h');
        ::pause();
        return 4;
    });
    REQUIRE_EQ(ready.wait(5000ms), 'a');
    publish_pattern(prod, 0);
    publish_pattern(prod, 1);
    REQUIRE_EQ(ready.wait(5000ms), 'h');
    CHECK_EQ(reclaim_dead_consumers(name), 0u); // alive: nothing to reclaim
    CHECK_EQ(prod.stats().free, 0u);
    child.kill();
    CHECK_EQ(reclaim_dead_consumers(name), 1u);
    CHECK_EQ(prod.stats().free, 2u);
    CHECK_EQ(prod.stats().consumers, 0u);
    CHECK_EQ(reclaim_dead_consumers(name), 0u); // idempotent
    CHECK_THROWS_AS(reclaim_dead_consumers(unique_name()), PoolNotFound);
}

BIPS_TEST(dead_consumer_slot_is_reused) {
    const std::string name = unique_name();
    PoolOptions o = small_pool(2);
    o.max_consumers = 1;
    Producer prod(name, o);
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        ConsumerOptions co;
        co.wait = 2s;
        Consumer cons(name, co);
        ready.signal();
        ::pause();
        return 4;
    });
    REQUIRE_EQ(ready.wait(5000ms), '!');
    CHECK_THROWS_AS(Consumer(name), TooManyConsumers);
    child.kill();
    // Attaching sweeps dead slots first, so the only slot is free again at once.
    Consumer cons(name);
    CHECK_EQ(cons.stats().slot, 0u);
    publish_pattern(prod, 3);
    CHECK(has_pattern(cons.receive(1s).data(), 64, 3));
}

BIPS_TEST(second_producer_is_busy) {
    const std::string name = unique_name();
    Producer first(name, small_pool(2));
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(Producer(name, small_pool(2)), PoolBusy);
    CHECK(seconds_since(t0) < 2.0 * SLOWDOWN);
    // Also with other options, and from another process.
    CHECK_THROWS_AS(Producer(name, small_pool(8, 4096)), PoolBusy);
    Child child = Child::fork([&]() -> int {
        CHECK_THROWS_AS(Producer(name, small_pool(2)), PoolBusy);
        return 0;
    });
    CHECK_EQ(child.wait(10s), 0);
    // The first one is unharmed.
    Consumer cons(name);
    publish_pattern(first, 1);
    CHECK_EQ(cons.receive(1s).seq(), 0u);
    CHECK_EQ(first.capacity(), 2u);
}

BIPS_TEST(too_many_consumers) {
    const std::string name = unique_name();
    PoolOptions o = small_pool(2);
    o.max_consumers = 2;
    Producer prod(name, o);
    std::optional<Consumer> a(std::in_place, name);
    Consumer b(name);
    CHECK_THROWS_AS(Consumer(name), TooManyConsumers);
    Child child = Child::fork([&]() -> int {
        CHECK_THROWS_AS(Consumer(name), TooManyConsumers);
        return 0;
    });
    CHECK_EQ(child.wait(10s), 0);
    a.reset(); // frees its slot
    Consumer c(name);
    CHECK_EQ(prod.stats().consumers, 2u);
    publish_pattern(prod, 0);
    CHECK_EQ(b.receive(1s).seq(), 0u);
    CHECK_EQ(c.receive(1s).seq(), 0u);

    // The full 32-consumer pool.
    const std::string big = unique_name();
    PoolOptions ob = small_pool(2);
    ob.max_consumers = MAX_CONSUMERS;
    Producer pb(big, ob);
    std::vector<Consumer> many;
    for (std::uint32_t i = 0; i < MAX_CONSUMERS; ++i)
        many.emplace_back(big);
    CHECK_THROWS_AS(Consumer(big), TooManyConsumers);
    publish_pattern(pb, 9);
    for (auto &m : many) {
        Frame f = m.receive(1s);
        CHECK(has_pattern(f.data(), f.nbytes(), 9));
    }
    CHECK_EQ(pb.stats().consumers, MAX_CONSUMERS);
    CHECK_EQ(pb.stats().free, 2u);
}

BIPS_TEST(forked_child_destroying_inherited_handles_leaves_parent_alone) {
    // A child made by fork() has copies of the parent's Producer, Consumer and Frames. When it
    // destroys them (returning from the scope that owns them, or a Python child finalizing its
    // objects at exit) the parent's pool must not change: it was the parent's, not the child's.
    const std::string name = unique_name();
    std::optional<Producer> prod(std::in_place, name, small_pool(2, 256));
    std::optional<Consumer> cons(std::in_place, name);
    publish_pattern(*prod, 0);
    std::optional<Frame> held(cons->receive(1s));
    Child child = Child::fork([&]() -> int {
        held.reset();
        cons.reset();
        prod.reset();
        return 0;
    });
    CHECK_EQ(child.wait(10s), 0);

    // Nothing of the parent's pool changed:
    CHECK(shm_exists(name)); // not unlinked by the child's ~Producer,
    if (shm_exists(name))
        CHECK(!pool_info(name).closed);    // nor marked closed;
    CHECK_EQ(cons->stats().held, 1u);      // the parent still holds its frame,
    CHECK_EQ(prod->stats().consumers, 1u); // its consumer is still attached
    CHECK_EQ(prod->stats().free, 1u);      // (so only one buffer is free)
    publish_pattern(*prod, 1);
    auto f = cons->try_receive_for(1s);
    CHECK(f.has_value()); // and still receives new frames.
    if (f)
        CHECK_EQ(f->seq(), 1u);
    CHECK(has_pattern(held->data(), held->nbytes(), 0));
}
