// SPDX-License-Identifier: Apache-2.0
// Creating and opening pools: names, options, the parameters both ends see, dtypes.
#include "support.hpp"

#include <sys/stat.h>

using namespace bips;
using namespace bips::test;

BIPS_TEST(validate_name_accepts_and_rejects) {
    validate_name("a");
    validate_name("cam0");
    validate_name("A-z_0.9");
    validate_name(std::string(MAX_NAME_LENGTH, 'x'));
    const std::string bad[] = {"",
                               ".hidden",
                               "a/b",
                               "a b",
                               "a\nb",
                               "caf\xc3\xa9",
                               "a:b",
                               "..",
                               "a\\b",
                               "*",
                               std::string(MAX_NAME_LENGTH + 1, 'x'),
                               std::string("a\0b", 3)};
    for (const auto &n : bad)
        CHECK_THROWS_AS(validate_name(n), InvalidArgument);
}

BIPS_TEST(bad_names_rejected_by_producer_and_consumer) {
    for (const std::string n : {"", ".x", "a/b", "../etc"}) {
        CHECK_THROWS_AS(Producer(n, small_pool(2)), InvalidArgument);
        CHECK_THROWS_AS(Consumer(n), InvalidArgument);
        CHECK_THROWS_AS(pool_info(n), InvalidArgument);
    }
}

BIPS_TEST(bad_options_rejected) {
    const std::string name = unique_name();
    const std::pair<const char *, std::function<void(PoolOptions &)>> cases[] = {
        {"capacity 0", [](PoolOptions &o) { o.capacity = 0; }},
        {"capacity too big", [](PoolOptions &o) { o.capacity = MAX_CAPACITY + 1; }},
        {"max_consumers 0", [](PoolOptions &o) { o.max_consumers = 0; }},
        {"max_consumers too big", [](PoolOptions &o) { o.max_consumers = MAX_CONSUMERS + 1; }},
        {"float8", [](PoolOptions &o) { o.dtype = DType{DType::Float, 8}; }},
        {"unknown dtype code", [](PoolOptions &o) { o.dtype = DType{7, 8}; }},
        {"9 dimensions", [](PoolOptions &o) { o.shape = Shape(MAX_DIMS + 1, 1); }},
        {"negative dimension", [](PoolOptions &o) { o.shape = {4, -1}; }},
        {"neither shape nor buffer_size", [](PoolOptions &o) { o.shape = {}; }},
        {"zero-size shape", [](PoolOptions &o) { o.shape = {0}; }},
        {"shape too big for buffer_size",
         [](PoolOptions &o) {
             o.shape = {100, 100, 3};
             o.buffer_size = 29999;
         }},
        {"float32 shape too big for buffer_size",
         [](PoolOptions &o) {
             o.shape = {1000};
             o.dtype = FLOAT32;
             o.buffer_size = 3999;
         }},
        {"overflowing shape", [](PoolOptions &o) { o.shape = {INT64_MAX, INT64_MAX}; }},
        {"buffer_size over 1 TiB",
         [](PoolOptions &o) {
             o.shape = {};
             o.buffer_size = (std::size_t{1} << 40) + 1;
         }},
        {"meta_size over 1 MiB", [](PoolOptions &o) { o.meta_size = (std::size_t{1} << 20) + 1; }},
        {"policy 7", [](PoolOptions &o) { o.policy = static_cast<Policy>(7); }},
        {"mode without owner write", [](PoolOptions &o) { o.mode = 0400; }},
        {"sticky mode", [](PoolOptions &o) { o.mode = 01600; }},
    };
    for (const auto &[what, mutate] : cases) {
        PoolOptions o = small_pool(4);
        mutate(o);
        bool threw = false;
        try {
            Producer p(name, o);
        } catch (const InvalidArgument &) {
            threw = true;
        }
        if (!threw)
            fail(__FILE__, __LINE__, std::string("no InvalidArgument for ") + what);
        CHECK(!shm_exists(name)); // nothing half-created is left behind
    }
    // The same name works with sane options afterwards.
    Producer ok(name, small_pool(4));
    CHECK(shm_exists(name));
}

BIPS_TEST(producer_and_consumer_see_pool_parameters) {
    const std::string name = unique_name();
    PoolOptions o;
    o.capacity = 5;
    o.shape = {3, 4, 2};
    o.dtype = UINT16;
    o.meta_size = 40;
    o.policy = Policy::drop_oldest;
    o.max_consumers = 3;
    o.mode = 0660;
    Producer prod(name, o);
    CHECK_EQ(prod.name(), name);
    CHECK_EQ(prod.capacity(), 5u);
    CHECK_EQ(prod.buffer_size(), 3u * 4 * 2 * 2);
    CHECK_EQ(prod.meta_size(), 40u);
    CHECK(prod.policy() == Policy::drop_oldest);
    CHECK_EQ(prod.max_consumers(), 3u);
    CHECK_EQ(prod.shape(), (Shape{3, 4, 2}));
    CHECK(prod.dtype() == UINT16);
    CHECK(!prod.closed());

    struct stat st{};
    REQUIRE(::stat(shm_path(name).c_str(), &st) == 0);
    // Not narrowed by the umask; the pool file is written by the producer alone.
    CHECK_EQ(st.st_mode & 0777, 0440u);
    REQUIRE(::stat((shm_path(name) + "@ctl").c_str(), &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0660u);

    ProducerStats ps = prod.stats();
    CHECK_EQ(ps.capacity, 5u);
    CHECK_EQ(ps.free, 5u);
    CHECK_EQ(ps.in_flight, 0u);
    CHECK_EQ(ps.consumers, 0u);
    CHECK_EQ(ps.published, 0u);

    Consumer cons(name);
    CHECK_EQ(cons.name(), name);
    CHECK_EQ(cons.capacity(), 5u);
    CHECK_EQ(cons.buffer_size(), 48u);
    CHECK(cons.policy() == Policy::drop_oldest);
    CHECK_EQ(cons.shape(), (Shape{3, 4, 2}));
    CHECK(cons.dtype() == UINT16);
    CHECK_EQ(prod.stats().consumers, 1u);

    // An explicit buffer_size larger than the shape needs is kept as given.
    const std::string name2 = unique_name();
    PoolOptions o2 = small_pool(2, 10);
    o2.buffer_size = 5000;
    Producer prod2(name2, o2);
    CHECK_EQ(prod2.buffer_size(), 5000u);
    Buffer b = prod2.acquire(1s);
    CHECK_EQ(b.capacity(), 5000u);
    CHECK_EQ(b.nbytes(), 10u); // nbytes follows the default shape
    CHECK_EQ(b.shape(), (Shape{10}));

    // A shapeless pool: frames are raw bytes of the whole buffer.
    const std::string name3 = unique_name();
    PoolOptions o3;
    o3.capacity = 1;
    o3.buffer_size = 100;
    Producer prod3(name3, o3);
    CHECK_EQ(prod3.shape(), Shape{});
    Buffer b3 = prod3.acquire(1s);
    CHECK_EQ(b3.nbytes(), 100u);
    CHECK_EQ(b3.ndim(), 0u);
}

BIPS_TEST(buffers_are_page_aligned_and_writable) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(3, 5000));
    std::vector<Buffer> bufs;
    for (int i = 0; i < 3; ++i) {
        bufs.push_back(prod.acquire(1s));
        auto addr = reinterpret_cast<std::uintptr_t>(bufs.back().data());
        CHECK_EQ(addr % 4096, 0u);
        std::memset(bufs.back().data(), 0xab, bufs.back().capacity());
    }
    // Distinct buffers do not overlap.
    CHECK(bufs[0].index() != bufs[1].index());
    CHECK(bufs[1].data() >= bufs[0].data() + 5000 || bufs[0].data() >= bufs[1].data() + 5000);
}

BIPS_TEST(close_unlinks_and_disables) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    CHECK(shm_exists(name));
    prod.close();
    CHECK(prod.closed());
    CHECK(!shm_exists(name));
    prod.close(); // idempotent
    CHECK_THROWS_AS(prod.acquire(10ms), InvalidArgument);
    CHECK_THROWS_AS(prod.try_acquire(), InvalidArgument);
    // The name is free again at once.
    Producer again(name, small_pool(2));
    CHECK(shm_exists(name));
}

BIPS_TEST(consumer_without_pool) {
    const std::string name = unique_name();
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(Consumer(name), PoolNotFound);
    CHECK(seconds_since(t0) < 0.5);

    ConsumerOptions co;
    co.wait = 150ms;
    t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(Consumer(name, co), Timeout);
    double waited = seconds_since(t0);
    CHECK(waited >= 0.14);
    CHECK(waited < 2.0);
    CHECK(!shm_exists(name));
}

BIPS_TEST(consumer_waits_for_pool) {
    const std::string name = unique_name();
    std::optional<Producer> prod;
    std::thread late([&] {
        std::this_thread::sleep_for(100ms);
        prod.emplace(name, small_pool(2));
    });
    ConsumerOptions co;
    co.wait = 5s;
    auto t0 = std::chrono::steady_clock::now();
    Consumer cons(name, co);
    CHECK(seconds_since(t0) >= 0.09);
    late.join();
    REQUIRE(prod.has_value());
    CHECK_EQ(prod->stats().consumers, 1u);
}

BIPS_TEST(dtype_names_round_trip) {
    for (const char *n : {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                          "float16", "float32", "float64", "bool"}) {
        DType d = DType::from_name(n);
        CHECK(d.valid());
        CHECK_EQ(d.name(), std::string(n));
    }
    CHECK_EQ(DType::from_name("float32").itemsize(), 4u);
    CHECK_EQ(DType::from_name("bool").itemsize(), 1u);
    CHECK_THROWS_AS(DType::from_name("complex64"), InvalidArgument);
    CHECK_THROWS_AS(DType::from_name(""), InvalidArgument);
    CHECK_EQ((DType{DType::Float, 8}).name(), std::string("invalid"));
    CHECK(!(DType{DType::Bool, 16}).valid());
}

BIPS_TEST(moved_from_handles_throw) {
    const std::string name = unique_name();
    Producer a(name, small_pool(2));
    Producer b(std::move(a));
    CHECK(a.closed());
    CHECK_THROWS_AS(a.acquire(1ms), InvalidArgument);
    CHECK_THROWS_AS(a.stats(), InvalidArgument);
    CHECK_EQ(b.name(), name);
    Consumer c(name);
    Consumer d(std::move(c));
    CHECK(c.closed());
    CHECK_THROWS_AS(c.try_receive(), InvalidArgument);
    CHECK_THROWS_AS(c.stats(), InvalidArgument);
    CHECK(!d.closed());
    publish_pattern(b, 1);
    auto f = d.try_receive();
    REQUIRE(f.has_value());
    CHECK_EQ(f->seq(), 0u);
}
