// SPDX-License-Identifier: Apache-2.0
// Who owns a buffer when: unpublished Buffers, dropped Frames, BufferPins, closed handles.
#include "support.hpp"

#include <atomic>

using namespace bips;
using namespace bips::test;

BIPS_TEST(unpublished_buffer_goes_back) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1));
    Consumer cons(name);
    std::uint32_t idx;
    {
        Buffer b = prod.acquire(1s);
        idx = b.index();
        CHECK_EQ(prod.stats().free, 0u);
        CHECK(!prod.try_acquire().has_value());
    }
    CHECK_EQ(prod.stats().free, 1u);
    CHECK(!cons.try_receive().has_value()); // nothing was published
    auto b = prod.try_acquire();
    REQUIRE(b.has_value());
    CHECK_EQ(b->index(), idx);

    // Move-assignment gives the overwritten buffer back, move-construction transfers it.
    Buffer moved = std::move(*b);
    CHECK(!*b);
    CHECK(moved);
    moved = Buffer();
    CHECK(!moved);
    CHECK_EQ(prod.stats().free, 1u);
    CHECK(prod.try_acquire().has_value());
}

BIPS_TEST(unpublished_buffer_wakes_a_blocked_acquire) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1));
    std::optional<Buffer> held = prod.acquire(1s);
    std::thread dropper([&] {
        std::this_thread::sleep_for(80ms);
        held.reset();
    });
    auto t0 = std::chrono::steady_clock::now();
    Buffer b = prod.acquire(10s);
    double waited = seconds_since(t0);
    dropper.join();
    CHECK(b);
    CHECK(waited >= 0.07);
    CHECK(waited < 1.0 * SLOWDOWN);
}

BIPS_TEST(dropped_frame_releases) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1));
    Consumer cons(name);
    publish_pattern(prod, 0);
    {
        Frame f = cons.receive(1s);
        CHECK_EQ(cons.stats().held, 1u);
        CHECK(!prod.try_acquire().has_value());
    }
    CHECK_EQ(cons.stats().held, 0u);
    CHECK(prod.try_acquire().has_value());

    // release() is idempotent and empties the frame; moving transfers ownership.
    publish_pattern(prod, 1);
    Frame f = cons.receive(1s);
    Frame g = std::move(f);
    CHECK(!f);
    CHECK(g);
    CHECK_EQ(g.seq(), 1u);
    f.release(); // on a moved-from frame: nothing
    CHECK(!prod.try_acquire().has_value());
    g.release();
    CHECK(!g);
    CHECK(g.data() == nullptr);
    g.release();
    CHECK_EQ(prod.stats().free, 1u);

    // Move-assigning over a held frame releases the old one.
    publish_pattern(prod, 2);
    Frame a = cons.receive(1s);
    a = Frame();
    CHECK_EQ(prod.stats().free, 1u);
}

BIPS_TEST(frame_released_from_another_thread) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    publish_pattern(prod, 0);
    Frame f = cons.receive(1s);
    std::thread t([fr = std::move(f)]() mutable {
        CHECK(has_pattern(fr.data(), fr.nbytes(), 0));
        fr.release();
    });
    t.join();
    CHECK_EQ(prod.stats().free, 2u);
    CHECK_EQ(cons.stats().held, 0u);
}

BIPS_TEST(pin_keeps_published_buffer_from_reuse) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1, 256));
    Consumer cons(name);

    Buffer b = prod.acquire(1s);
    fill_pattern(b.data(), b.nbytes(), 77);
    const std::byte *data = b.data();
    BufferPin pin = b.pin();
    prod.publish(std::move(b));
    Frame f = cons.receive(1s);
    f.release();
    // Published and released by every consumer, but pinned: not reusable.
    CHECK(!prod.try_acquire().has_value());
    CHECK_THROWS_AS(prod.acquire(30ms), Timeout);
    CHECK_EQ(prod.stats().free, 0u);
    CHECK(has_pattern(data, 256, 77)); // untouched

    BufferPin moved = std::move(pin);
    pin.reset(); // moved-from: no effect
    CHECK(!prod.try_acquire().has_value());
    moved.reset();
    CHECK_EQ(prod.stats().free, 1u);
    CHECK(prod.try_acquire().has_value());
}

BIPS_TEST(pin_blocks_drop_oldest_reclaim) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2, 64, Policy::drop_oldest));
    Consumer stalled(name);
    Buffer b = prod.acquire(1s);
    fill_pattern(b.data(), b.nbytes(), 5);
    const std::byte *pinned_data = b.data();
    BufferPin pin = b.pin();
    prod.publish(std::move(b));
    // Only the other buffer may be taken back, however often we publish.
    for (std::uint64_t i = 0; i < 10; ++i) {
        auto nb = prod.try_acquire();
        REQUIRE(nb.has_value());
        CHECK(nb->data() != pinned_data);
        fill_pattern(nb->data(), nb->nbytes(), 100 + i);
        prod.publish(std::move(*nb));
    }
    CHECK(has_pattern(pinned_data, 64, 5));
    pin.reset();
    // Unpinned, the oldest (seq 0) is the one to go next.
    auto nb = prod.try_acquire();
    REQUIRE(nb.has_value());
    CHECK(nb->data() == pinned_data);
}

BIPS_TEST(pin_outlives_its_producer) {
    const std::string name = unique_name();
    BufferPin pin;
    {
        Producer prod(name, small_pool(1));
        Buffer b = prod.acquire(1s);
        pin = b.pin();
        prod.publish(std::move(b));
    }
    CHECK(!shm_exists(name));
    pin.reset(); // the core it points to is still alive: no use-after-free (ASan)
    Buffer empty;
    CHECK_THROWS_AS(empty.pin(), InvalidArgument);
}

BIPS_TEST(buffer_outlives_its_producer) {
    const std::string name = unique_name();
    std::optional<Buffer> b;
    {
        Producer prod(name, small_pool(1));
        b = prod.acquire(1s);
    }
    CHECK(!shm_exists(name));
    std::memset(b->data(), 1, b->capacity()); // still mapped
    b.reset();
}

BIPS_TEST(consumer_close_keeps_held_frames_valid) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(4));
    Consumer cons(name);
    for (std::uint64_t i = 0; i < 3; ++i)
        publish_pattern(prod, i);
    Frame f = cons.receive(1s);
    cons.close();
    CHECK(cons.closed());
    CHECK_THROWS_AS(cons.try_receive(), InvalidArgument);
    CHECK_THROWS_AS(cons.receive(1ms), InvalidArgument);
    CHECK_EQ(prod.stats().consumers, 0u);
    // Queued frames went back at once; the held one only when released.
    CHECK_EQ(prod.stats().free, 3u);
    CHECK(has_pattern(f.data(), f.nbytes(), 0));
    f.release();
    CHECK_EQ(prod.stats().free, 4u);
    // New frames are not queued for the closed consumer.
    publish_pattern(prod, 3);
    CHECK_EQ(prod.stats().free, 4u);
}

BIPS_TEST(frame_outlives_consumer_and_producer) {
    const std::string name = unique_name();
    Frame f;
    {
        Producer prod(name, small_pool(2));
        Consumer cons(name);
        publish_pattern(prod, 11);
        f = cons.receive(1s);
    }
    // Both handles are gone; the mapping lives on with the frame and the name is gone.
    CHECK(!shm_exists(name));
    CHECK(has_pattern(f.data(), f.nbytes(), 11));
    f.release();
}

BIPS_TEST(close_wakes_blocked_acquire_and_refuses_publish) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    Buffer early = prod.acquire(1s);
    publish_pattern(prod, 0); // the other buffer, now queued: the pool is full
    std::atomic<bool> threw_invalid{false};
    std::atomic<double> waited{0};
    std::thread blocked([&] {
        auto t0 = std::chrono::steady_clock::now();
        try {
            prod.acquire(10s);
        } catch (const InvalidArgument &) {
            threw_invalid = true;
        } catch (const std::exception &e) {
            fail(__FILE__, __LINE__, std::string("acquire threw ") + e.what());
        }
        waited = seconds_since(t0);
    });
    std::this_thread::sleep_for(80ms);
    prod.close();
    blocked.join();
    CHECK(threw_invalid.load());
    CHECK(waited.load() < 1.0 * SLOWDOWN);
    // A buffer acquired before close() cannot be published after it (and is given back).
    CHECK_THROWS_AS(prod.publish(std::move(early)), InvalidArgument);
    CHECK(!early);
    // What was published before close() is still delivered.
    Frame f = cons.receive(1s);
    CHECK(has_pattern(f.data(), f.nbytes(), 0));
    CHECK_THROWS_AS(cons.receive(1s), ProducerGone);
}
