// SPDX-License-Identifier: Apache-2.0
// The process-wide interrupt check (bips/interrupt.hpp): blocking calls that sleep ask it
// between slices and throw Interrupted; calls that need not sleep never ask it; no check, no
// change.
#include "support.hpp"

#include <atomic>

using namespace bips;
using namespace bips::test;

namespace {

std::atomic<int> g_calls{0};
std::atomic<int> g_trip_at{0};

// Says "interrupt" from its g_trip_at-th call on.
bool trip_after_n() noexcept { return g_calls.fetch_add(1) + 1 >= g_trip_at.load(); }

// Installs trip_after_n for one scope, tripping at call `n` (0: never).
class ScopedCheck {
public:
    explicit ScopedCheck(int n) {
        g_calls = 0;
        g_trip_at = n > 0 ? n : INT32_MAX;
        m_previous = set_interrupt_check(&trip_after_n);
    }
    ScopedCheck(const ScopedCheck &) = delete;
    ScopedCheck &operator=(const ScopedCheck &) = delete;
    ~ScopedCheck() { set_interrupt_check(m_previous); }

private:
    InterruptCheck m_previous = nullptr;
};

// Long enough that only an interruption can end the call before the test's own timeout.
constexpr auto FOREVER = std::chrono::hours(1);

} // namespace

BIPS_TEST(interrupt_check_is_set_and_cleared) {
    CHECK(interrupt_check() == nullptr);
    {
        ScopedCheck check(0);
        CHECK(interrupt_check() == &trip_after_n);
    }
    CHECK(interrupt_check() == nullptr);
}

BIPS_TEST(interrupt_ends_a_blocking_receive) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    ScopedCheck check(3);
    CHECK_THROWS_AS(cons.receive(FOREVER), Interrupted);
    CHECK_EQ(g_calls.load(), 3);
    // try_receive_for and wait are interruptible too, and the consumer still works afterwards.
    g_calls = 0;
    CHECK_THROWS_AS(cons.try_receive_for(FOREVER), Interrupted);
    g_calls = 0;
    CHECK_THROWS_AS(cons.wait(FOREVER), Interrupted);
    publish_pattern(prod, 4);
    g_calls = 0;
    Frame f = cons.receive(FOREVER);
    CHECK(has_pattern(f.data(), f.nbytes(), 4));
    CHECK_EQ(g_calls.load(), 0); // a frame already there never asks
}

BIPS_TEST(interrupt_message_names_the_call_and_pool) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    ScopedCheck check(1);
    try {
        cons.receive(FOREVER);
        CHECK(!"receive returned");
    } catch (const Interrupted &e) {
        const std::string what = e.what();
        CHECK(what.find("Consumer::receive") != std::string::npos);
        CHECK(what.find(name) != std::string::npos);
    }
}

BIPS_TEST(interrupt_ends_a_blocking_acquire) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1));
    Buffer held = prod.acquire(1s);
    {
        ScopedCheck check(2);
        CHECK_THROWS_AS(prod.acquire(FOREVER), Interrupted);
        CHECK_EQ(g_calls.load(), 2);
        g_calls = 0;
        CHECK_THROWS_AS(prod.try_acquire_for(FOREVER), Interrupted);
    }
    // The producer is unharmed: the buffer comes back and is acquired without asking.
    held = Buffer();
    ScopedCheck check(1);
    Buffer again = prod.acquire(FOREVER);
    CHECK(bool(again));
    CHECK_EQ(g_calls.load(), 0);
}

BIPS_TEST(interrupt_ends_a_consumer_waiting_for_its_pool) {
    ScopedCheck check(4);
    ConsumerOptions co;
    co.wait = FOREVER;
    CHECK_THROWS_AS(Consumer(unique_name(), co), Interrupted);
    CHECK_EQ(g_calls.load(), 4);
}

BIPS_TEST(interrupt_check_that_never_trips_changes_nothing) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1));
    Consumer cons(name);
    {
        ScopedCheck check(0);
        CHECK_THROWS_AS(cons.receive(200ms), Timeout);
        CHECK(g_calls.load() >= 1); // asked between slices, and the timeout still the core's
    }
    // No check at all: the same timeouts and messages as ever.
    try {
        cons.receive(20ms);
        CHECK(!"receive returned");
    } catch (const Timeout &e) {
        CHECK_EQ(std::string(e.what()), "no frame from pool '" + name + "' within the timeout");
    }
    Buffer held = prod.acquire(1s);
    CHECK_THROWS_AS(prod.acquire(20ms), Timeout);
}
