// SPDX-License-Identifier: Apache-2.0
// Notifier: an fd that turns readable when an armed wait finds a frame queued or the stream
// ended, and never while disarmed or closed.
#include "support.hpp"

#include <poll.h>
#include <thread>

using namespace bips;
using namespace bips::test;

namespace {

// True if `fd` turns readable within `timeout`.
bool readable(int fd, std::chrono::milliseconds timeout) {
    pollfd p{fd, POLLIN, 0};
    int r;
    do {
        r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (r < 0 && errno == EINTR);
    return r == 1 && (p.revents & POLLIN);
}

// How long a "never readable" check watches: several of the notifier's wait slices.
constexpr auto QUIET = 300ms;
constexpr auto SOON = 5000ms * SLOWDOWN;

} // namespace

BIPS_TEST(notifier_fd_readable_when_a_frame_is_queued) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(4));
    Consumer cons(name);
    Notifier n(cons);
    REQUIRE(n.fd() >= 0);
    CHECK(!readable(n.fd(), 0ms)); // not armed
    n.arm();
    CHECK(!readable(n.fd(), 0ms)); // armed, nothing queued yet
    publish_pattern(prod, 1);
    REQUIRE(readable(n.fd(), SOON));
    // Readiness stays until cleared, and the notifier took nothing.
    CHECK(readable(n.fd(), 0ms));
    n.clear();
    CHECK(!readable(n.fd(), 0ms));
    std::optional<Frame> f = cons.try_receive();
    REQUIRE(f.has_value());
    CHECK(has_pattern(f->data(), f->nbytes(), 1));

    // Armed while a frame is already queued: readable at once.
    publish_pattern(prod, 2);
    n.arm();
    CHECK(readable(n.fd(), SOON));
    n.clear();
    // Once per arm(): the queued frame does not make it readable again without one.
    CHECK(!readable(n.fd(), QUIET));
}

BIPS_TEST(notifier_fd_readable_when_the_stream_ends) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    Notifier n(cons);
    n.arm();
    prod.close();
    REQUIRE(readable(n.fd(), SOON));
    CHECK_THROWS_AS(cons.try_receive(), ProducerGone);
}

BIPS_TEST(notifier_fd_readable_when_the_consumer_closes) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    Notifier n(cons);
    n.arm();
    cons.close();
    REQUIRE(readable(n.fd(), SOON));
    CHECK_THROWS_AS(cons.try_receive(), InvalidArgument);
}

BIPS_TEST(notifier_disarmed_is_never_readable) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(4));
    Consumer cons(name);
    Notifier n(cons);
    n.arm();
    n.disarm(); // a cancelled wait
    publish_pattern(prod, 1);
    CHECK(!readable(n.fd(), QUIET));
    // Disarming after it turned readable takes the readiness back too.
    n.arm();
    REQUIRE(readable(n.fd(), SOON));
    n.disarm();
    CHECK(!readable(n.fd(), 0ms));
    // The frame is still there for whoever receives it.
    CHECK(cons.try_receive().has_value());
}

BIPS_TEST(notifier_close_while_waiting) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    Notifier n(cons);
    n.arm();
    std::this_thread::sleep_for(20ms); // let its thread go to sleep in Consumer::wait
    n.close();
    CHECK_EQ(n.fd(), -1);
    CHECK_THROWS_AS(n.arm(), InvalidArgument);
    n.disarm(); // harmless once closed
    n.clear();
    n.close(); // idempotent
    // The consumer is untouched.
    publish_pattern(prod, 7);
    Frame f = cons.receive(1s);
    CHECK(has_pattern(f.data(), f.nbytes(), 7));
}

BIPS_TEST(notifier_moves_and_ignores_the_interrupt_check) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    // A check that always says "interrupt" is for the threads that call in, not the notifier's.
    const InterruptCheck previous = set_interrupt_check([]() noexcept { return true; });
    Notifier a(cons);
    Notifier b(std::move(a));
    CHECK_EQ(a.fd(), -1);
    CHECK_THROWS_AS(a.arm(), InvalidArgument);
    b.arm();
    CHECK(!readable(b.fd(), QUIET));
    publish_pattern(prod, 1);
    CHECK(readable(b.fd(), SOON));
    set_interrupt_check(previous);
    CHECK(cons.try_receive().has_value());
}

BIPS_TEST(notifier_rearm_many_times) {
    // A loop's life: arm, readable, clear, receive, again; frames from another thread.
    const std::string name = unique_name();
    Producer prod(name, small_pool(4));
    Consumer cons(name);
    Notifier n(cons);
    constexpr int FRAMES = 200;
    std::thread producer([&] {
        for (int i = 0; i < FRAMES; ++i)
            publish_pattern(prod, static_cast<std::uint64_t>(i));
    });
    int got = 0;
    while (got < FRAMES) {
        n.arm();
        if (!readable(n.fd(), SOON))
            break;
        n.clear();
        while (auto f = cons.try_receive()) {
            CHECK(has_pattern(f->data(), f->nbytes(), static_cast<std::uint64_t>(got)));
            ++got;
        }
    }
    producer.join();
    CHECK_EQ(got, FRAMES);
}
