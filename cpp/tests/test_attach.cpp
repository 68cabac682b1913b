// SPDX-License-Identifier: Apache-2.0
// Consumer::try_open: one attempt that says "not there yet" with nullopt and throws for the
// rest, and the Consumer constructor's wait built on it.
#include "support.hpp"

#include <thread>
#include <unistd.h>

using namespace bips;
using namespace bips::test;

namespace {

// A pool whose producer was SIGKILLed (no cleanup); `keep` attaches a consumer first, which
// keeps the dead pool's files alive.
Child dead_producer(const std::string &name, std::optional<Consumer> *keep) {
    Pipe ready;
    Child child = Child::fork([&]() -> int {
        Producer prod(name, small_pool(2));
        if (keep && !wait_until([&] { return prod.stats().consumers == 1; }, 5000ms))
            return 3;
        ready.signal();
        ::pause(); // until SIGKILL (or the alarm)
        return 4;
    });
    if (keep) {
        ConsumerOptions co;
        co.wait = 5s;
        keep->emplace(name, co);
    }
    REQUIRE_EQ(ready.wait(5000ms), '!');
    child.kill();
    return child;
}

} // namespace

BIPS_TEST(try_open_attaches_to_a_live_pool) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    std::optional<Consumer> c = Consumer::try_open(name);
    REQUIRE(c.has_value());
    CHECK_EQ(prod.stats().consumers, 1u);
    publish_pattern(prod, 3);
    Frame f = c->receive(1s);
    CHECK(has_pattern(f.data(), f.nbytes(), 3));
    CHECK_EQ(c->name(), name);
}

BIPS_TEST(try_open_is_nullopt_while_there_is_nothing_to_attach_to) {
    const std::string name = unique_name();
    // No pool at all; options.wait does not make it wait.
    ConsumerOptions co;
    co.wait = std::chrono::hours(1);
    const auto start = std::chrono::steady_clock::now();
    CHECK(!Consumer::try_open(name, co).has_value());
    CHECK(seconds_since(start) < 10.0); // not the hour of co.wait

    // A pool left half-made (sized, header never written) by a creator that died.
    {
        ScopedUnlink cleanup(name);
        write_shm_file(name, std::vector<unsigned char>(4096, 0));
        CHECK(!Consumer::try_open(name).has_value());
        CHECK_THROWS_AS(Consumer(name), PoolNotFound); // what the waiting constructor says
    }

    // A pool whose producer died, kept by another consumer...
    {
        std::optional<Consumer> keep;
        Child child = dead_producer(name, &keep);
        CHECK(!Consumer::try_open(name).has_value());
        CHECK(shm_exists(name)); // still in use by `keep`
        CHECK_THROWS_AS(Consumer(name), ProducerGone);
    }
    // ...and one nobody uses: the attempt also removes it.
    Child child = dead_producer(name, nullptr);
    CHECK(shm_exists(name));
    CHECK(!Consumer::try_open(name).has_value());
    CHECK(!shm_exists(name));

    // And once a producer is there, the next attempt attaches.
    Producer prod(name, small_pool(2));
    CHECK(Consumer::try_open(name).has_value());
}

BIPS_TEST(try_open_throws_for_real_errors) {
    CHECK_THROWS_AS(Consumer::try_open(""), InvalidArgument);
    CHECK_THROWS_AS(Consumer::try_open("a/b"), InvalidArgument);

    const std::string name = unique_name();
    {
        ScopedUnlink cleanup(name);
        write_shm_file(name, std::vector<unsigned char>(8192, 0xab));
        CHECK_THROWS_AS(Consumer::try_open(name), CorruptPool);
    }

    PoolOptions o = small_pool(2);
    o.max_consumers = 1;
    Producer prod(name, o);
    std::optional<Consumer> first = Consumer::try_open(name);
    REQUIRE(first.has_value());
    CHECK_THROWS_AS(Consumer::try_open(name), TooManyConsumers);
}

BIPS_TEST(constructor_waits_for_a_pool_with_try_open) {
    const std::string name = unique_name();
    std::thread later([&] {
        std::this_thread::sleep_for(100ms);
        Producer prod(name, small_pool(2));
        wait_until([&] { return prod.stats().consumers == 1; }, 5000ms);
        publish_pattern(prod, 1);
        wait_until([&] { return prod.stats().consumers == 0; }, 5000ms);
    });
    {
        ConsumerOptions co;
        co.wait = 5s;
        Consumer c(name, co);
        Frame f = c.receive(5s);
        CHECK(has_pattern(f.data(), f.nbytes(), 1));
    }
    later.join();

    // Without a pool: the waiting constructor times out, the eager one says there is none.
    ConsumerOptions co;
    co.wait = 20ms;
    CHECK_THROWS_AS(Consumer(name, co), Timeout);
    CHECK_THROWS_AS(Consumer(name), PoolNotFound);
}
