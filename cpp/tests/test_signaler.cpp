// SPDX-License-Identifier: Apache-2.0
// How waiters choose between spinning and sleeping (signaler.hpp), and that the stats say so.
#include "support.hpp"

#include "signaler.hpp"

using namespace bips;
using namespace bips::test;
using bips::detail::MAX_SPIN_NS;
using bips::detail::SpinTuner;

BIPS_TEST(spin_budget_follows_recent_waits) {
    SpinTuner t(true);
    if (!bips::detail::spare_core()) {
        CHECK_EQ(t.budget_ns(), 0); // one CPU: the other side could not run while we spin
        return;
    }
    CHECK(t.budget_ns() > 0 && t.budget_ns() <= MAX_SPIN_NS);
    // Waits longer than anything worth spinning for (a 30 fps stream) bring it to 0.
    for (int i = 0; i < 64 && t.budget_ns() > 0; ++i)
        t.slept(33'000'000);
    CHECK_EQ(t.budget_ns(), 0);
    CHECK_EQ(t.sleeps() > 0, true);
    CHECK_EQ(t.spins(), 0u);
    // One short wait is evidence enough: spin about twice as long next time.
    t.slept(3'000);
    CHECK(t.budget_ns() >= 6'000 && t.budget_ns() <= MAX_SPIN_NS);
    t.spun(1'000);
    CHECK_EQ(t.spins(), 1u);
    CHECK(t.budget_ns() > 0);
    // Never less than MIN_SPIN_NS once a wait was short, however short.
    SpinTuner u(true);
    for (int i = 0; i < 64 && u.budget_ns() > 0; ++i)
        u.slept(33'000'000);
    u.slept(100);
    CHECK_EQ(u.budget_ns(), bips::detail::MIN_SPIN_NS);
    // Never more than the cap, however the waits go.
    t.spun(MAX_SPIN_NS - 1);
    CHECK(t.budget_ns() <= MAX_SPIN_NS);
}

BIPS_TEST(failed_spins_put_spinning_on_probation) {
    if (!bips::detail::spare_core())
        return; // never spins: nothing to learn (spin_budget_follows_recent_waits checks that)
    SpinTuner t(true);
    for (int i = 0; i < 64 && t.budget_ns() > 0; ++i) // from a known budget: none
        t.slept(33'000'000);
    t.slept(5'000);
    const std::int64_t full = t.budget_ns();
    CHECK_EQ(full, 10'000);
    // The other side did not run while we spun (it shares our CPU): a quarter of the budget,
    // and the next short sleep does not count as evidence.
    t.missed();
    CHECK_EQ(t.budget_ns(), full / 4);
    t.slept(5'000);
    CHECK_EQ(t.budget_ns(), full / 4);
    t.slept(5'000);
    CHECK_EQ(t.budget_ns(), full);
    // Each failure in a row doubles the probation: 2 short sleeps now, then 4...
    t.missed();
    t.missed();
    const std::int64_t low = t.budget_ns();
    for (int i = 0; i < 4; ++i) {
        t.slept(5'000);
        CHECK_EQ(t.budget_ns(), low);
    }
    t.slept(5'000);
    CHECK_EQ(t.budget_ns(), full);
    // ...at most 64, however many failures.
    for (int i = 0; i < 20; ++i)
        t.missed();
    int sleeps = 0;
    while (t.budget_ns() < full && sleeps < 1000) {
        t.slept(5'000);
        ++sleeps;
    }
    CHECK_EQ(sleeps, 65);
    // A spin that works ends the probation at once.
    t.missed();
    t.spun(2'000);
    t.missed();
    t.slept(5'000);
    t.slept(5'000);
    CHECK_EQ(t.budget_ns(), full);
}

BIPS_TEST(spin_budget_off_stays_off) {
    SpinTuner t(false);
    CHECK_EQ(t.budget_ns(), 0);
    t.slept(1'000);
    t.spun(1'000);
    CHECK_EQ(t.budget_ns(), 0);
    CHECK_EQ(t.enabled(), false);
}

BIPS_TEST(consumer_without_adaptive_spin_only_sleeps) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(4));
    ConsumerOptions o;
    o.adaptive_spin = false;
    Consumer cons(name, o);
    std::thread t([&] {
        for (int i = 0; i < 3; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            prod.publish(prod.acquire(std::chrono::seconds(5)));
        }
    });
    for (int i = 0; i < 3; ++i)
        cons.receive(std::chrono::seconds(10)).release();
    t.join();
    const ConsumerStats s = cons.stats();
    CHECK_EQ(s.spins, 0u);
    CHECK(s.sleeps >= 1 && s.sleeps <= 3); // a receive that found its frame waited for nothing
}

BIPS_TEST(producer_counts_its_waits) {
    const std::string name = unique_name();
    PoolOptions po = small_pool(2);
    po.adaptive_spin = false;
    Producer prod(name, po);
    Consumer cons(name);
    prod.publish(prod.acquire(std::chrono::seconds(5)));
    prod.publish(prod.acquire(std::chrono::seconds(5)));
    CHECK_EQ(prod.stats().sleeps, 0u); // nothing had to wait yet
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        cons.receive(std::chrono::seconds(5)).release();
    });
    prod.publish(prod.acquire(std::chrono::seconds(10))); // full: waits for the consumer
    t.join();
    const ProducerStats s = prod.stats();
    CHECK_EQ(s.spins, 0u);
    CHECK_EQ(s.sleeps, 1u);
    CHECK_EQ(s.acquire_waits, 1u);
}
