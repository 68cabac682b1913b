// SPDX-License-Identifier: Apache-2.0
// Data and metadata from a producer to its consumers: in one process, across fork(), to many
// consumers, with latest=true, through the end of the stream and a reconnect.
#include "support.hpp"

using namespace bips;
using namespace bips::test;

BIPS_TEST(round_trip_data_and_metadata) {
    const std::string name = unique_name();
    PoolOptions o;
    o.capacity = 4;
    o.shape = {4, 8, 3};
    o.dtype = UINT8;
    o.meta_size = 32;
    Producer prod(name, o);
    Consumer cons(name);

    // Frame 0: default format, explicit timestamp, metadata.
    {
        Buffer b = prod.acquire(1s);
        REQUIRE(b);
        CHECK_EQ(b.nbytes(), 96u);
        CHECK_EQ(b.shape(), (Shape{4, 8, 3}));
        CHECK(b.dtype() == UINT8);
        CHECK_EQ(b.meta_capacity(), 32u);
        fill_pattern(b.data(), b.nbytes(), 0);
        const std::string meta = "frame-zero";
        prod.publish(std::move(b), 123456789, meta.data(), meta.size());
        CHECK(!b); // publish consumed it
    }
    // Frame 1: another shape and dtype that fit the buffer, default timestamp, no metadata.
    std::int64_t before_publish = 0;
    {
        Buffer b = prod.acquire(1s);
        b.set_format(Shape{2, 3}, FLOAT32);
        CHECK_EQ(b.nbytes(), 24u);
        CHECK_EQ(b.shape(), (Shape{2, 3}));
        CHECK(b.dtype() == FLOAT32);
        auto *f = reinterpret_cast<float *>(b.data());
        for (int k = 0; k < 6; ++k)
            f[k] = 0.5f * static_cast<float>(k);
        struct timespec ts{};
        ::clock_gettime(CLOCK_MONOTONIC, &ts);
        before_publish = std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
        prod.publish(std::move(b));
    }
    // Frame 2: a variable-size payload and metadata written in place, exactly meta_size long.
    {
        Buffer b = prod.acquire(1s);
        b.set_nbytes(7);
        CHECK_EQ(b.nbytes(), 7u);
        CHECK_EQ(b.shape(), (Shape{7})); // a variable-size payload is a flat byte frame
        CHECK(b.dtype() == UINT8);
        std::memcpy(b.data(), "payload", 7);
        std::byte *meta = b.meta();
        std::memset(meta, 'm', 32);
        prod.publish(std::move(b), 5, meta, 32); // metadata already in place: may alias the area
    }
    CHECK_EQ(prod.stats().published, 3u);

    Frame f0 = cons.receive(1s);
    REQUIRE(f0);
    CHECK_EQ(f0.seq(), 0u);
    CHECK_EQ(f0.timestamp_ns(), 123456789);
    CHECK_EQ(f0.shape(), (Shape{4, 8, 3}));
    CHECK_EQ(f0.ndim(), 3u);
    CHECK(f0.dtype() == UINT8);
    CHECK_EQ(f0.nbytes(), 96u);
    CHECK_EQ(f0.meta(), std::string("frame-zero"));
    CHECK_EQ(f0.meta_size(), 10u);
    CHECK(has_pattern(f0.data(), f0.nbytes(), 0));

    Frame f1 = cons.receive(1s);
    CHECK_EQ(f1.seq(), 1u);
    CHECK(f1.timestamp_ns() >= before_publish);
    CHECK(f1.timestamp_ns() - before_publish < 5'000'000'000LL);
    CHECK_EQ(f1.shape(), (Shape{2, 3}));
    CHECK(f1.dtype() == FLOAT32);
    CHECK_EQ(f1.nbytes(), 24u);
    CHECK_EQ(f1.meta(), std::string());
    const auto *fl = reinterpret_cast<const float *>(f1.data());
    for (int k = 0; k < 6; ++k)
        CHECK_EQ(fl[k], 0.5f * static_cast<float>(k));

    Frame f2 = cons.receive(1s);
    CHECK_EQ(f2.seq(), 2u);
    CHECK_EQ(f2.timestamp_ns(), 5);
    CHECK_EQ(f2.nbytes(), 7u);
    CHECK_EQ(f2.shape(), (Shape{7}));
    CHECK(f2.dtype() == UINT8);
    CHECK_EQ(std::string(reinterpret_cast<const char *>(f2.data()), 7), std::string("payload"));
    CHECK_EQ(f2.meta(), std::string(32, 'm'));

    CHECK(!cons.try_receive().has_value());
    ConsumerStats cs = cons.stats();
    CHECK_EQ(cs.received, 3u);
    CHECK_EQ(cs.held, 3u);
    CHECK_EQ(cs.queued, 0u);
    CHECK_EQ(cs.dropped, 0u);
}

BIPS_TEST(metadata_and_format_errors) {
    const std::string name = unique_name();
    PoolOptions o = small_pool(2, 64);
    o.meta_size = 8;
    Producer prod(name, o);
    Consumer cons(name);

    Buffer b = prod.acquire(1s);
    CHECK_THROWS_AS(b.set_format(Shape{65}, UINT8), InvalidArgument);
    CHECK_THROWS_AS(b.set_format(Shape{9, 2}, (DType{DType::UInt, 32})), InvalidArgument);
    CHECK_THROWS_AS(b.set_format(Shape{-1}, UINT8), InvalidArgument);
    CHECK_THROWS_AS(b.set_format(Shape(MAX_DIMS + 1, 1), UINT8), InvalidArgument);
    CHECK_THROWS_AS(b.set_format(Shape{1}, (DType{DType::Float, 8})), InvalidArgument);
    CHECK_THROWS_AS(b.set_format(Shape{INT64_MAX, 4}, UINT8), InvalidArgument);
    CHECK_THROWS_AS(b.set_nbytes(65), InvalidArgument);
    // A failed set_format leaves the format as it was.
    CHECK_EQ(b.shape(), (Shape{64}));
    CHECK_EQ(b.nbytes(), 64u);
    b.set_format(Shape{16}, (DType{DType::UInt, 32})); // exactly fits
    CHECK_EQ(b.nbytes(), 64u);
    b.set_format(Shape{0, 5}, UINT8); // empty frames are fine
    CHECK_EQ(b.nbytes(), 0u);

    // Metadata longer than meta_size: InvalidArgument, and the buffer goes back to the pool.
    const char meta[9] = "12345678";
    CHECK_THROWS_AS(prod.publish(std::move(b), -1, meta, 9), InvalidArgument);
    CHECK(!b);
    CHECK_EQ(prod.stats().free, 2u);
    CHECK_EQ(prod.stats().published, 0u);
    CHECK(!cons.try_receive().has_value());

    // Empty buffers cannot be published.
    Buffer empty;
    CHECK_THROWS_AS(prod.publish(std::move(empty)), InvalidArgument);

    // A buffer of another producer is refused (and given back to its own pool).
    const std::string other_name = unique_name();
    Producer other(other_name, small_pool(1, 64));
    Buffer foreign = other.acquire(1s);
    CHECK_THROWS_AS(prod.publish(std::move(foreign)), InvalidArgument);
    CHECK_EQ(other.stats().free, 1u);
    CHECK_EQ(prod.stats().published, 0u);

    // Exactly meta_size bytes is fine.
    Buffer ok = prod.acquire(1s);
    prod.publish(std::move(ok), -1, meta, 8);
    Frame f = cons.receive(1s);
    CHECK_EQ(f.meta(), std::string("12345678"));
}

BIPS_TEST(frames_published_before_attach_are_not_received) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(4));
    publish_pattern(prod, 100);
    publish_pattern(prod, 101);
    CHECK_EQ(prod.stats().free, 4u); // nobody to queue them for: free at once
    Consumer cons(name);
    CHECK(!cons.try_receive().has_value());
    publish_pattern(prod, 102);
    Frame f = cons.receive(1s);
    CHECK_EQ(f.seq(), 2u);
    CHECK(has_pattern(f.data(), f.nbytes(), 102));
}

BIPS_TEST(broadcast_to_many_consumers_in_order) {
    const std::string name = unique_name();
    constexpr int N_CONS = 5;
    constexpr std::uint64_t N_FRAMES = 40;
    PoolOptions o = small_pool(4, 256);
    o.meta_size = 16;
    Producer prod(name, o);
    std::vector<Consumer> cons;
    for (int c = 0; c < N_CONS; ++c)
        cons.emplace_back(name);
    CHECK_EQ(prod.stats().consumers, static_cast<std::uint32_t>(N_CONS));

    // Publish in bursts of 3 (< capacity), then every consumer takes them all.
    std::vector<std::uint64_t> next(N_CONS, 0);
    for (std::uint64_t i = 0; i < N_FRAMES;) {
        for (int k = 0; k < 3 && i < N_FRAMES; ++k, ++i) {
            Buffer b = prod.acquire(1s);
            fill_pattern(b.data(), b.nbytes(), i);
            std::string meta = "m" + std::to_string(i);
            prod.publish(std::move(b), static_cast<std::int64_t>(1000 + i), meta.data(),
                         meta.size());
        }
        for (int c = 0; c < N_CONS; ++c) {
            while (auto f = cons[c].try_receive()) {
                CHECK_EQ(f->seq(), next[c]);
                CHECK_EQ(f->timestamp_ns(), static_cast<std::int64_t>(1000 + next[c]));
                CHECK_EQ(f->meta(), "m" + std::to_string(next[c]));
                CHECK(has_pattern(f->data(), f->nbytes(), next[c]));
                ++next[c];
            }
        }
        CHECK_EQ(prod.stats().free, 4u); // every frame released by every consumer
    }
    for (int c = 0; c < N_CONS; ++c) {
        CHECK_EQ(next[c], N_FRAMES);
        CHECK_EQ(cons[c].stats().received, N_FRAMES);
        CHECK_EQ(cons[c].stats().slot, static_cast<std::uint32_t>(c));
    }
}

BIPS_TEST(buffer_is_free_only_after_every_consumer_released_it) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(1));
    Consumer a(name), b(name);
    publish_pattern(prod, 0);
    CHECK(!prod.try_acquire().has_value());
    Frame fa = a.receive(1s);
    CHECK(!prod.try_acquire().has_value()); // still queued for b
    Frame fb = b.receive(1s);
    fa.release();
    CHECK(!fa);
    CHECK(!prod.try_acquire().has_value()); // still held by b
    fb.release();
    CHECK(prod.try_acquire().has_value());
}

BIPS_TEST(round_trip_across_fork) {
    const std::string name = unique_name();
    constexpr std::uint64_t N = 50;
    PoolOptions o = small_pool(4, 10000);
    o.meta_size = 24;
    Producer prod(name, o);

    Child child = Child::fork([&]() -> int {
        ConsumerOptions co;
        co.wait = 2s;
        Consumer cons(name, co);
        for (std::uint64_t i = 0; i < N; ++i) {
            Frame f = cons.receive(5s);
            CHECK_EQ(f.seq(), i);
            CHECK_EQ(f.timestamp_ns(), static_cast<std::int64_t>(i * 1000));
            CHECK_EQ(f.meta(), "frame " + std::to_string(i));
            CHECK_EQ(f.nbytes(), 10000u);
            CHECK(has_pattern(f.data(), f.nbytes(), i * 3));
        }
        // End of stream after the last frame.
        CHECK_THROWS_AS(cons.receive(5s), ProducerGone);
        CHECK_EQ(cons.stats().received, N);
        return 0;
    });
    REQUIRE(wait_until([&] { return prod.stats().consumers == 1; }, 5000ms));
    for (std::uint64_t i = 0; i < N; ++i) {
        Buffer b = prod.acquire(5s);
        fill_pattern(b.data(), b.nbytes(), i * 3);
        std::string meta = "frame " + std::to_string(i);
        prod.publish(std::move(b), static_cast<std::int64_t>(i * 1000), meta.data(), meta.size());
    }
    prod.close();
    CHECK_EQ(child.wait(10s), 0);
}

BIPS_TEST(producer_in_child_consumer_in_parent) {
    const std::string name = unique_name();
    constexpr std::uint64_t N = 20;
    Pipe go;
    Child child = Child::fork([&]() -> int {
        Producer prod(name, small_pool(3, 4096));
        REQUIRE(wait_until([&] { return prod.stats().consumers == 1; }, 5000ms));
        for (std::uint64_t i = 0; i < N; ++i)
            publish_pattern(prod, i);
        prod.close();
        return 0;
    });
    ConsumerOptions co;
    co.wait = 5s;
    Consumer cons(name, co);
    for (std::uint64_t i = 0; i < N; ++i) {
        Frame f = cons.receive(5s);
        CHECK_EQ(f.seq(), i);
        CHECK(has_pattern(f.data(), f.nbytes(), i));
    }
    CHECK_THROWS_AS(cons.receive(5s), ProducerGone);
    CHECK_EQ(child.wait(10s), 0);
}

BIPS_TEST(latest_returns_newest_and_skips_older) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(6));
    ConsumerOptions co;
    co.latest = true;
    Consumer latest(name, co);
    Consumer all(name);
    for (std::uint64_t i = 0; i < 4; ++i)
        publish_pattern(prod, i);

    Frame f = latest.receive(1s);
    CHECK_EQ(f.seq(), 3u);
    CHECK(has_pattern(f.data(), f.nbytes(), 3));
    CHECK(!latest.try_receive().has_value());
    ConsumerStats s = latest.stats();
    CHECK_EQ(s.skipped, 3u);
    CHECK_EQ(s.received, 1u);
    CHECK_EQ(s.queued, 0u);
    CHECK_EQ(s.held, 1u);

    // The ordinary consumer still gets everything, in order.
    for (std::uint64_t i = 0; i < 4; ++i)
        CHECK_EQ(all.receive(1s).seq(), i);

    publish_pattern(prod, 4);
    publish_pattern(prod, 5);
    Frame g = latest.receive(1s);
    CHECK_EQ(g.seq(), 5u);
    CHECK_EQ(latest.stats().skipped, 4u);
    f.release();
    g.release();
    while (all.try_receive()) {
    }
    CHECK_EQ(prod.stats().free, 6u);
}

BIPS_TEST(end_of_stream_drains_then_producer_gone) {
    const std::string name = unique_name();
    std::optional<Producer> prod(std::in_place, name, small_pool(4));
    Consumer cons(name);
    for (std::uint64_t i = 0; i < 3; ++i)
        publish_pattern(*prod, i);
    Frame held = cons.receive(1s);
    prod->close();
    CHECK(!shm_exists(name)); // unlinked at close, though mapped by the consumer
    prod.reset();

    // Queued frames first...
    Frame f1 = cons.receive(1s);
    CHECK_EQ(f1.seq(), 1u);
    auto f2 = cons.try_receive();
    REQUIRE(f2.has_value());
    CHECK_EQ(f2->seq(), 2u);
    // ...then ProducerGone, from every receive variant, without waiting out the timeout.
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(cons.receive(5s), ProducerGone);
    CHECK_THROWS_AS(cons.try_receive(), ProducerGone);
    CHECK_THROWS_AS(cons.try_receive_for(5s), ProducerGone);
    CHECK(seconds_since(t0) < 1.0);
    // Frames still held stay readable after the producer is gone.
    CHECK(has_pattern(held.data(), held.nbytes(), 0));
    CHECK(has_pattern(f1.data(), f1.nbytes(), 1));

    // A consumer arriving after the end finds nothing.
    CHECK_THROWS_AS(Consumer(name), PoolNotFound);
    // A new producer may take the name while the old consumer still holds frames.
    Producer next(name, small_pool(2));
    publish_pattern(next, 9);
    CHECK_THROWS_AS(cons.receive(100ms), ProducerGone); // no reconnect: stays on the old pool
}

BIPS_TEST(end_of_stream_wakes_a_waiting_consumer) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    std::thread closer([&] {
        std::this_thread::sleep_for(100ms);
        prod.close();
    });
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(cons.receive(10s), ProducerGone);
    double waited = seconds_since(t0);
    closer.join();
    CHECK(waited >= 0.09);
    CHECK(waited < 1.0 * SLOWDOWN);
}

BIPS_TEST(receive_times_out) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(cons.receive(120ms), Timeout);
    double waited = seconds_since(t0);
    CHECK(waited >= 0.11);
    CHECK(waited < 1.0 * SLOWDOWN);
    t0 = std::chrono::steady_clock::now();
    CHECK(!cons.try_receive_for(50ms).has_value());
    CHECK(seconds_since(t0) >= 0.045);
    // Timeout is also a bips::Error (one hierarchy).
    CHECK_THROWS_AS(cons.receive(1ms), Error);
}

BIPS_TEST(receive_wakes_on_publish) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    Consumer cons(name);
    std::thread pub([&] {
        std::this_thread::sleep_for(80ms);
        publish_pattern(prod, 7);
    });
    auto t0 = std::chrono::steady_clock::now();
    Frame f = cons.receive(10s);
    double waited = seconds_since(t0);
    pub.join();
    CHECK_EQ(f.seq(), 0u);
    CHECK(waited >= 0.07);
    CHECK(waited < 1.0 * SLOWDOWN);
}

BIPS_TEST(reconnect_follows_a_new_producer) {
    const std::string name = unique_name();
    std::optional<Producer> prod(std::in_place, name, small_pool(2));
    ConsumerOptions co;
    co.reconnect = true;
    Consumer cons(name, co);
    publish_pattern(*prod, 0);
    CHECK_EQ(cons.receive(1s).seq(), 0u);
    prod->close();
    prod.reset();
    // Without a producer, a reconnecting consumer times out instead of raising ProducerGone.
    CHECK_THROWS_AS(cons.receive(50ms), Timeout);

    Producer second(name, small_pool(3, 128));
    std::thread pub([&] {
        if (!wait_until([&] { return second.stats().consumers == 1; }, 5000ms))
            fail(__FILE__, __LINE__, "consumer did not reconnect");
        publish_pattern(second, 42);
    });
    Frame f = cons.receive(5s);
    pub.join();
    CHECK_EQ(f.seq(), 0u); // a new pool starts again at 0
    CHECK_EQ(f.nbytes(), 128u);
    CHECK(has_pattern(f.data(), f.nbytes(), 42));
    CHECK_EQ(cons.capacity(), 3u);
    ConsumerStats s = cons.stats();
    CHECK_EQ(s.reconnects, 1u);
    CHECK_EQ(s.received, 2u);
}
