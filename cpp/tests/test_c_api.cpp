// SPDX-License-Identifier: Apache-2.0
// The C API (bips.h): round trips from C++ and from C99, every error path returning its code with
// a message (NULL arguments, bad options, closed handles, hostile pool files, the OS refusing),
// no exception crossing the boundary, and handles outliving their producer or consumer.
#include "c_api_c99.h"
#include "support.hpp"

#include "layout.hpp"

#include <bips/bips.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <poll.h>
#include <thread>
#include <unistd.h>

using namespace bips;
using namespace bips::test;

namespace {

struct Free {
    void operator()(bips_producer *p) const noexcept { bips_producer_free(p); }
    void operator()(bips_consumer *c) const noexcept { bips_consumer_free(c); }
    void operator()(bips_buffer *b) const noexcept { bips_buffer_discard(b); }
    void operator()(bips_frame *f) const noexcept { bips_frame_release(f); }
    void operator()(bips_pool_list *l) const noexcept { bips_pool_list_free(l); }
    void operator()(bips_notifier *n) const noexcept { bips_notifier_free(n); }
};
/// Handles freed by the test even when a REQUIRE ends it early (ASan checks for leaks).
template <class T> using Owned = std::unique_ptr<T, Free>;

constexpr std::int64_t MS = 1'000'000;
constexpr std::int64_t SECOND = 1'000'000'000;

std::string last_message() { return bips_last_error_message(); }

/// Checks that `got` is `want` and, for a failure, that the thread's message is not empty and
/// contains `words` (when given).
bool check_status(const char *file, int line, const char *expr, bips_status got, bips_status want,
                  const char *words = nullptr) {
    if (got != want) {
        fail(file, line,
             std::string(expr) + " returned " + bips_status_name(got) + ", expected " +
                 bips_status_name(want) + " (message: " + last_message() + ")");
        return false;
    }
    if (want != BIPS_OK) {
        if (last_message().empty()) {
            fail(file, line, std::string(expr) + ": no message for " + bips_status_name(got));
            return false;
        }
        if (words && last_message().find(words) == std::string::npos) {
            fail(file, line,
                 std::string(expr) + ": message '" + last_message() + "' lacks '" + words + "'");
            return false;
        }
    }
    return true;
}

#define CHECK_OK(call) check_status(__FILE__, __LINE__, #call, (call), BIPS_OK)
#define REQUIRE_OK(call)                                                                           \
    do {                                                                                           \
        if (!check_status(__FILE__, __LINE__, #call, (call), BIPS_OK))                             \
            throw Abort{};                                                                         \
    } while (0)
#define CHECK_FAILS(call, want, ...)                                                               \
    check_status(__FILE__, __LINE__, #call, (call), (want), ##__VA_ARGS__)

bips_producer_options options(std::uint32_t capacity, std::size_t bytes = 64,
                              std::size_t meta_size = 0) {
    bips_producer_options o;
    bips_producer_options_init(&o);
    o.capacity = capacity;
    o.ndim = 1;
    o.shape[0] = static_cast<std::int64_t>(bytes);
    o.meta_size = meta_size;
    return o;
}

Owned<bips_producer> make_producer(const std::string &name, const bips_producer_options &o) {
    bips_producer *p = nullptr;
    REQUIRE_OK(bips_producer_create(name.c_str(), &o, &p));
    REQUIRE(p != nullptr);
    return Owned<bips_producer>(p);
}

Owned<bips_consumer> make_consumer(const std::string &name,
                                   const bips_consumer_options *o = nullptr) {
    bips_consumer *c = nullptr;
    REQUIRE_OK(bips_consumer_open(name.c_str(), o, &c));
    REQUIRE(c != nullptr);
    return Owned<bips_consumer>(c);
}

Owned<bips_buffer> acquire(bips_producer *p, std::int64_t timeout_ns = SECOND) {
    bips_buffer *b = nullptr;
    REQUIRE_OK(bips_producer_acquire(p, timeout_ns, &b));
    return Owned<bips_buffer>(b);
}

Owned<bips_frame> receive(bips_consumer *c, std::int64_t timeout_ns = SECOND) {
    bips_frame *f = nullptr;
    REQUIRE_OK(bips_consumer_receive(c, timeout_ns, &f));
    return Owned<bips_frame>(f);
}

/// Acquires, fills with the pattern of `tag` and publishes one buffer.
void publish_tag(bips_producer *p, std::uint64_t tag,
                 std::int64_t timestamp_ns = BIPS_TIMESTAMP_NOW) {
    Owned<bips_buffer> b = acquire(p);
    fill_pattern(static_cast<std::byte *>(bips_buffer_data(b.get())), bips_buffer_nbytes(b.get()),
                 tag);
    REQUIRE_OK(bips_producer_publish(p, b.release(), timestamp_ns, nullptr, 0));
}

std::int64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * SECOND + ts.tv_nsec;
}

} // namespace

BIPS_TEST(c_api_round_trip) {
    const std::string name = unique_name();
    bips_producer_options o;
    bips_producer_options_init(&o);
    o.capacity = 4;
    o.ndim = 3;
    o.shape[0] = 4;
    o.shape[1] = 8;
    o.shape[2] = 3;
    o.meta_size = 32;
    auto prod = make_producer(name, o);
    auto cons = make_consumer(name);

    // Frame 0: the pool's format, an explicit timestamp, metadata.
    {
        auto b = acquire(prod.get());
        CHECK_EQ(bips_buffer_nbytes(b.get()), 96u);
        CHECK_EQ(bips_buffer_capacity(b.get()), 96u);
        REQUIRE_EQ(bips_buffer_ndim(b.get()), 3u);
        CHECK_EQ(bips_buffer_shape(b.get())[2], 3);
        CHECK_EQ(bips_buffer_dtype(b.get()), BIPS_DTYPE_UINT8);
        CHECK_EQ(bips_buffer_meta_capacity(b.get()), 32u);
        fill_pattern(static_cast<std::byte *>(bips_buffer_data(b.get())), 96, 0);
        const std::string meta = "frame-zero";
        CHECK_OK(
            bips_producer_publish(prod.get(), b.release(), 123456789, meta.data(), meta.size()));
    }
    // Frame 1: another shape and dtype that fit, stamped now, no metadata.
    const std::int64_t before = monotonic_ns();
    {
        auto b = acquire(prod.get());
        const std::int64_t shape[2] = {2, 3};
        CHECK_OK(bips_buffer_set_format(b.get(), shape, 2, BIPS_DTYPE_FLOAT32));
        CHECK_EQ(bips_buffer_nbytes(b.get()), 24u);
        CHECK_EQ(bips_buffer_dtype(b.get()), BIPS_DTYPE_FLOAT32);
        auto *f = static_cast<float *>(bips_buffer_data(b.get()));
        for (int k = 0; k < 6; ++k)
            f[k] = 0.5f * static_cast<float>(k);
        CHECK_OK(bips_producer_publish(prod.get(), b.release(), BIPS_TIMESTAMP_NOW, nullptr, 0));
    }
    // Frame 2: a variable-size payload, metadata written in place and published from there.
    {
        bips_buffer *raw = nullptr;
        REQUIRE_OK(bips_producer_try_acquire(prod.get(), &raw));
        Owned<bips_buffer> b(raw);
        CHECK_OK(bips_buffer_set_nbytes(b.get(), 7));
        CHECK_EQ(bips_buffer_nbytes(b.get()), 7u);
        CHECK_EQ(bips_buffer_ndim(b.get()), 1u);
        std::memcpy(bips_buffer_data(b.get()), "payload", 7);
        void *meta = bips_buffer_meta(b.get());
        std::memset(meta, 'm', 32);
        CHECK_OK(bips_producer_publish(prod.get(), b.release(), 5, meta, 32));
    }
    bips_producer_stats ps;
    CHECK_OK(bips_producer_get_stats(prod.get(), &ps));
    CHECK_EQ(ps.published, 3u);
    CHECK_EQ(ps.capacity, 4u);
    CHECK_EQ(ps.consumers, 1u);
    CHECK_EQ(ps.in_flight, 3u);
    CHECK_EQ(ps.free, 1u);

    CHECK_OK(bips_consumer_wait(cons.get(), 0));
    {
        auto f = receive(cons.get());
        CHECK_EQ(bips_frame_seq(f.get()), 0u);
        CHECK_EQ(bips_frame_timestamp_ns(f.get()), 123456789);
        REQUIRE_EQ(bips_frame_ndim(f.get()), 3u);
        const std::int64_t *shape = bips_frame_shape(f.get());
        CHECK_EQ((Shape{shape[0], shape[1], shape[2]}), (Shape{4, 8, 3}));
        CHECK_EQ(bips_frame_dtype(f.get()), BIPS_DTYPE_UINT8);
        CHECK_EQ(bips_frame_nbytes(f.get()), 96u);
        CHECK_EQ(std::string(static_cast<const char *>(bips_frame_meta(f.get())),
                             bips_frame_meta_size(f.get())),
                 std::string("frame-zero"));
        CHECK(has_pattern(static_cast<const std::byte *>(bips_frame_data(f.get())), 96, 0));
        CHECK_EQ(bips_frame_intact(f.get()), 1);
    }
    {
        auto f = receive(cons.get());
        CHECK_EQ(bips_frame_seq(f.get()), 1u);
        CHECK(bips_frame_timestamp_ns(f.get()) >= before);
        CHECK(bips_frame_timestamp_ns(f.get()) - before < 5 * SECOND);
        CHECK_EQ(bips_frame_dtype(f.get()), BIPS_DTYPE_FLOAT32);
        CHECK_EQ(bips_frame_nbytes(f.get()), 24u);
        CHECK_EQ(bips_frame_meta_size(f.get()), 0u);
        const auto *px = static_cast<const float *>(bips_frame_data(f.get()));
        CHECK_EQ(px[5], 2.5f);
    }
    {
        bips_frame *raw = nullptr;
        REQUIRE_OK(bips_consumer_try_receive(cons.get(), &raw));
        Owned<bips_frame> f(raw);
        CHECK_EQ(bips_frame_seq(f.get()), 2u);
        CHECK_EQ(bips_frame_timestamp_ns(f.get()), 5);
        CHECK_EQ(std::string(static_cast<const char *>(bips_frame_data(f.get())), 7),
                 std::string("payload"));
        CHECK_EQ(std::string(static_cast<const char *>(bips_frame_meta(f.get())), 32),
                 std::string(32, 'm'));
        // Released frames give their buffer back: 3 free of 4 while this one is still held.
        CHECK_OK(bips_producer_get_stats(prod.get(), &ps));
        CHECK_EQ(ps.free, 3u);
    }
    bips_consumer_stats cs;
    CHECK_OK(bips_consumer_get_stats(cons.get(), &cs));
    CHECK_EQ(cs.received, 3u);
    CHECK_EQ(cs.queued, 0u);
    CHECK_EQ(cs.held, 0u);

    // Nothing queued: the try and timed variants say so with BIPS_ERR_TIMEOUT.
    bips_frame *none = reinterpret_cast<bips_frame *>(&cs); // must be overwritten with NULL
    CHECK_FAILS(bips_consumer_try_receive(cons.get(), &none), BIPS_ERR_TIMEOUT);
    CHECK(none == nullptr);
    CHECK_FAILS(bips_consumer_receive(cons.get(), 10 * MS, &none), BIPS_ERR_TIMEOUT);
    CHECK_FAILS(bips_consumer_wait(cons.get(), 10 * MS), BIPS_ERR_TIMEOUT);

    // End of stream.
    CHECK_OK(bips_producer_close(prod.get()));
    CHECK_OK(bips_producer_close(prod.get())); // idempotent
    CHECK_FAILS(bips_consumer_receive(cons.get(), SECOND, &none), BIPS_ERR_PRODUCER_GONE);
    CHECK(none == nullptr);
}

BIPS_TEST(c_api_round_trip_in_c99) {
    char why[512];
    if (!bips_c99_round_trip(unique_name().c_str(), why, sizeof why))
        fail(__FILE__, __LINE__, why);
}

BIPS_TEST(c_api_waits_forever_until_published) {
    const std::string name = unique_name();
    auto prod = make_producer(name, options(2));
    auto cons = make_consumer(name);
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        publish_tag(prod.get(), 9);
    });
    bips_frame *f = nullptr;
    const bips_status s = bips_consumer_receive(cons.get(), BIPS_FOREVER, &f);
    t.join();
    Owned<bips_frame> frame(f);
    REQUIRE(check_status(__FILE__, __LINE__, "receive(BIPS_FOREVER)", s, BIPS_OK));
    CHECK(has_pattern(static_cast<const std::byte *>(bips_frame_data(f)), bips_frame_nbytes(f), 9));
    // Any negative timeout is forever too (here the frame is already there).
    std::thread t2([&] { publish_tag(prod.get(), 10); });
    t2.join();
    CHECK_OK(bips_consumer_wait(cons.get(), -12345));
}

// Closing a consumer from another thread ends a receive that waits forever (the handle stays
// valid until freed, so this is the way to stop a receiving thread).
BIPS_TEST(c_api_close_wakes_a_waiting_receive) {
    const std::string name = unique_name();
    auto prod = make_producer(name, options(2));
    auto cons = make_consumer(name);
    bips_status got = BIPS_OK;
    bips_frame *f = nullptr;
    std::thread t([&] { got = bips_consumer_receive(cons.get(), BIPS_FOREVER, &f); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto start = std::chrono::steady_clock::now();
    CHECK_OK(bips_consumer_close(cons.get()));
    t.join();
    CHECK(seconds_since(start) < 2.0 * SLOWDOWN);
    CHECK_EQ(std::string(bips_status_name(got)), std::string("BIPS_ERR_INVALID_ARGUMENT"));
    CHECK(f == nullptr);
}

// Every function that takes a handle or an out pointer refuses NULL with a code and a message
// naming itself; accessors answer 0 or NULL; the free functions accept NULL.
BIPS_TEST(c_api_null_arguments) {
    const std::string name = unique_name();
    auto prod = make_producer(name, options(2));
    auto cons = make_consumer(name);
    bips_producer *p = nullptr;
    bips_consumer *c = nullptr;
    bips_buffer *b = nullptr;
    bips_frame *f = nullptr;
    bips_pool_list *l = nullptr;
    bips_producer_stats ps;
    bips_consumer_stats cs;
    bips_pool_info pi;
    bips_slot_info si;
    const auto invalid = BIPS_ERR_INVALID_ARGUMENT;

    CHECK_FAILS(bips_producer_create(nullptr, nullptr, &p), invalid, "bips_producer_create: name");
    CHECK_FAILS(bips_producer_create(name.c_str(), nullptr, nullptr), invalid, "out is NULL");
    CHECK_FAILS(bips_producer_acquire(nullptr, 0, &b), invalid, "bips_producer_acquire: producer");
    CHECK_FAILS(bips_producer_acquire(prod.get(), 0, nullptr), invalid, "out is NULL");
    CHECK_FAILS(bips_producer_try_acquire(nullptr, &b), invalid, "bips_producer_try_acquire");
    CHECK_FAILS(bips_producer_try_acquire(prod.get(), nullptr), invalid);
    CHECK_FAILS(bips_producer_publish(nullptr, nullptr, 0, nullptr, 0), invalid,
                "bips_producer_publish: producer");
    CHECK_FAILS(bips_producer_publish(prod.get(), nullptr, 0, nullptr, 0), invalid, "buffer");
    CHECK_FAILS(bips_producer_get_stats(nullptr, &ps), invalid, "bips_producer_get_stats");
    CHECK_FAILS(bips_producer_get_stats(prod.get(), nullptr), invalid);
    CHECK_FAILS(bips_producer_close(nullptr), invalid, "bips_producer_close");
    CHECK_FAILS(bips_buffer_set_format(nullptr, nullptr, 0, BIPS_DTYPE_UINT8), invalid,
                "bips_buffer_set_format");
    CHECK_FAILS(bips_buffer_set_nbytes(nullptr, 0), invalid, "bips_buffer_set_nbytes");
    CHECK_FAILS(bips_consumer_open(nullptr, nullptr, &c), invalid, "bips_consumer_open: name");
    CHECK_FAILS(bips_consumer_open(name.c_str(), nullptr, nullptr), invalid);
    CHECK_FAILS(bips_consumer_receive(nullptr, 0, &f), invalid, "bips_consumer_receive");
    CHECK_FAILS(bips_consumer_receive(cons.get(), 0, nullptr), invalid);
    CHECK_FAILS(bips_consumer_try_receive(nullptr, &f), invalid, "bips_consumer_try_receive");
    CHECK_FAILS(bips_consumer_try_receive(cons.get(), nullptr), invalid);
    CHECK_FAILS(bips_consumer_wait(nullptr, 0), invalid, "bips_consumer_wait");
    CHECK_FAILS(bips_consumer_get_stats(nullptr, &cs), invalid, "bips_consumer_get_stats");
    CHECK_FAILS(bips_consumer_get_stats(cons.get(), nullptr), invalid);
    CHECK_FAILS(bips_consumer_close(nullptr), invalid, "bips_consumer_close");
    CHECK_FAILS(bips_list_pools(nullptr), invalid, "bips_list_pools");
    CHECK_FAILS(bips_get_pool_info(nullptr, &l), invalid, "bips_get_pool_info: name");
    CHECK_FAILS(bips_get_pool_info(name.c_str(), nullptr), invalid);
    CHECK_FAILS(bips_pool_list_get(nullptr, 0, &pi), invalid, "bips_pool_list_get");
    CHECK_FAILS(bips_pool_list_get_slot(nullptr, 0, 0, &si), invalid, "bips_pool_list_get_slot");
    CHECK(p == nullptr && c == nullptr && b == nullptr && f == nullptr && l == nullptr);

    // A NULL pointer with a non-zero length.
    auto buf = acquire(prod.get());
    CHECK_FAILS(bips_buffer_set_format(buf.get(), nullptr, 2, BIPS_DTYPE_UINT8), invalid, "shape");
    CHECK_FAILS(bips_producer_publish(prod.get(), buf.release(), 0, nullptr, 3), invalid, "meta");
    CHECK_OK(bips_producer_get_stats(prod.get(), &ps));
    CHECK_EQ(ps.free, 2u); // the refused publish gave the buffer back

    CHECK(bips_buffer_data(nullptr) == nullptr);
    CHECK_EQ(bips_buffer_capacity(nullptr), 0u);
    CHECK_EQ(bips_buffer_nbytes(nullptr), 0u);
    CHECK_EQ(bips_buffer_ndim(nullptr), 0u);
    CHECK(bips_buffer_shape(nullptr) == nullptr);
    CHECK_EQ(bips_buffer_dtype(nullptr), BIPS_DTYPE_INVALID);
    CHECK(bips_buffer_meta(nullptr) == nullptr);
    CHECK_EQ(bips_buffer_meta_capacity(nullptr), 0u);
    CHECK(bips_frame_data(nullptr) == nullptr);
    CHECK_EQ(bips_frame_nbytes(nullptr), 0u);
    CHECK_EQ(bips_frame_seq(nullptr), 0u);
    CHECK_EQ(bips_frame_timestamp_ns(nullptr), 0);
    CHECK_EQ(bips_frame_ndim(nullptr), 0u);
    CHECK(bips_frame_shape(nullptr) == nullptr);
    CHECK_EQ(bips_frame_dtype(nullptr), BIPS_DTYPE_INVALID);
    CHECK(bips_frame_meta(nullptr) == nullptr);
    CHECK_EQ(bips_frame_meta_size(nullptr), 0u);
    CHECK_EQ(bips_frame_intact(nullptr), 0);
    CHECK_EQ(bips_pool_list_size(nullptr), 0u);
    bips_producer_options_init(nullptr);
    bips_consumer_options_init(nullptr);
    bips_producer_free(nullptr);
    bips_consumer_free(nullptr);
    bips_buffer_discard(nullptr);
    bips_frame_release(nullptr);
    bips_pool_list_free(nullptr);
}

BIPS_TEST(c_api_bad_options_and_formats) {
    const std::string name = unique_name();
    const auto invalid = BIPS_ERR_INVALID_ARGUMENT;
    bips_producer *p = nullptr;
    auto create = [&](const char *pool, const bips_producer_options &o) {
        const bips_status s = bips_producer_create(pool, &o, &p);
        bips_producer_free(p); // NULL unless it unexpectedly succeeded
        p = nullptr;
        return s;
    };
    CHECK_FAILS(create("", options(2)), invalid, "invalid pool name");
    CHECK_FAILS(create("../etc", options(2)), invalid, "invalid pool name");
    CHECK_FAILS(create(std::string(BIPS_MAX_NAME_LENGTH + 1, 'a').c_str(), options(2)), invalid);
    bips_producer_options o = options(0);
    CHECK_FAILS(create(name.c_str(), o), invalid);
    o = options(2);
    o.ndim = BIPS_MAX_DIMS + 1;
    CHECK_FAILS(create(name.c_str(), o), invalid, "ndim");
    o = options(2);
    o.dtype = static_cast<bips_dtype>(0x0109); // uint9
    CHECK_FAILS(create(name.c_str(), o), invalid, "dtype");
    o.dtype = static_cast<bips_dtype>(-1);
    CHECK_FAILS(create(name.c_str(), o), invalid, "dtype");
    o = options(2);
    o.policy = static_cast<bips_policy>(7);
    CHECK_FAILS(create(name.c_str(), o), invalid, "policy");
    o = options(2);
    o.mode = 0400;
    CHECK_FAILS(create(name.c_str(), o), invalid, "mode");
    o = options(2);
    o.max_consumers = BIPS_MAX_CONSUMERS + 1;
    CHECK_FAILS(create(name.c_str(), o), invalid);
    bips_producer_options_init(&o); // neither a shape nor a buffer size
    CHECK_FAILS(create(name.c_str(), o), invalid);
    CHECK(!shm_exists(name));

    auto prod = make_producer(name, options(2, 64, 8));
    bips_consumer_options co;
    bips_consumer_options_init(&co);
    co.spin_ns = -1;
    bips_consumer *c = nullptr;
    CHECK_FAILS(bips_consumer_open(name.c_str(), &co, &c), invalid, "spin_ns");
    CHECK(c == nullptr);

    auto b = acquire(prod.get());
    const std::int64_t big[2] = {9, 9};
    CHECK_FAILS(bips_buffer_set_format(b.get(), big, 2, BIPS_DTYPE_UINT8), invalid);
    const std::int64_t negative[1] = {-1};
    CHECK_FAILS(bips_buffer_set_format(b.get(), negative, 1, BIPS_DTYPE_UINT8), invalid);
    const std::int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_FAILS(bips_buffer_set_format(b.get(), nine, 9, BIPS_DTYPE_UINT8), invalid);
    const std::int64_t fine[1] = {4};
    CHECK_FAILS(bips_buffer_set_format(b.get(), fine, 1, BIPS_DTYPE_INVALID), invalid, "dtype");
    CHECK_FAILS(bips_buffer_set_nbytes(b.get(), 65), invalid, "exceeds");
    CHECK_EQ(bips_buffer_nbytes(b.get()), 64u); // unchanged by the refusals
    const char meta[9] = "12345678";
    CHECK_FAILS(bips_producer_publish(prod.get(), b.release(), 0, meta, 9), invalid, "meta");
    bips_producer_stats ps;
    CHECK_OK(bips_producer_get_stats(prod.get(), &ps));
    CHECK_EQ(ps.published, 0u);
    CHECK_EQ(ps.free, 2u); // the refused buffer went back

    // A buffer of another producer.
    const std::string other_name = unique_name();
    auto other = make_producer(other_name, options(2));
    auto foreign = acquire(other.get());
    CHECK_FAILS(bips_producer_publish(prod.get(), foreign.release(), 0, nullptr, 0), invalid,
                "another producer");
    CHECK_OK(bips_producer_get_stats(other.get(), &ps));
    CHECK_EQ(ps.free, 2u);

    // Pool lists: indexes out of range.
    bips_pool_list *l = nullptr;
    REQUIRE_OK(bips_get_pool_info(name.c_str(), &l));
    Owned<bips_pool_list> list(l);
    bips_pool_info info;
    bips_slot_info slot;
    CHECK_FAILS(bips_pool_list_get(l, 1, &info), invalid, "index out of range");
    CHECK_FAILS(bips_pool_list_get_slot(l, 1, 0, &slot), invalid, "index out of range");
    CHECK_FAILS(bips_pool_list_get_slot(l, 0, 99, &slot), invalid, "slot out of range");
}

// One code per error of the core, each with the core's message.
BIPS_TEST(c_api_error_codes) {
    const std::string name = unique_name();
    bips_producer *p = nullptr;
    bips_consumer *c = nullptr;
    bips_buffer *b = nullptr;
    bips_pool_list *l = nullptr;

    CHECK_FAILS(bips_consumer_open(name.c_str(), nullptr, &c), BIPS_ERR_POOL_NOT_FOUND,
                name.c_str());
    CHECK_FAILS(bips_get_pool_info(name.c_str(), &l), BIPS_ERR_POOL_NOT_FOUND);
    bips_consumer_options co;
    bips_consumer_options_init(&co);
    co.wait_ns = 20 * MS;
    const bips_status waited = bips_consumer_open(name.c_str(), &co, &c);
    CHECK(waited == BIPS_ERR_TIMEOUT || waited == BIPS_ERR_POOL_NOT_FOUND);
    CHECK(c == nullptr && l == nullptr);

    bips_producer_options o = options(1);
    o.max_consumers = 1;
    auto prod = make_producer(name, o);
    CHECK_FAILS(bips_producer_create(name.c_str(), &o, &p), BIPS_ERR_POOL_BUSY);
    CHECK(p == nullptr);
    auto cons = make_consumer(name);
    CHECK_FAILS(bips_consumer_open(name.c_str(), nullptr, &c), BIPS_ERR_TOO_MANY_CONSUMERS);
    CHECK(c == nullptr);

    // The only buffer is out: acquire times out, try_acquire says so at once.
    auto held = acquire(prod.get());
    const auto start = std::chrono::steady_clock::now();
    CHECK_FAILS(bips_producer_acquire(prod.get(), 20 * MS, &b), BIPS_ERR_TIMEOUT);
    CHECK(seconds_since(start) >= 0.015);
    CHECK_FAILS(bips_producer_try_acquire(prod.get(), &b), BIPS_ERR_TIMEOUT, "no free buffer");
    CHECK(b == nullptr);
    bips_buffer_discard(held.release());

    // The OS refuses: a pool of another owner is EPERM, kept in bips_last_errno() and errno.
    co.wait_ns = 0;
    co.owner = static_cast<std::int64_t>(::geteuid()) + 4242;
    errno = 0;
    CHECK_FAILS(bips_consumer_open(name.c_str(), &co, &c), BIPS_ERR_SYSTEM, "owner");
    CHECK_EQ(bips_last_errno(), EPERM);
    CHECK_EQ(errno, EPERM);
    // A failure of another kind resets the errno.
    CHECK_FAILS(bips_producer_try_acquire(prod.get(), nullptr), BIPS_ERR_INVALID_ARGUMENT);
    CHECK_EQ(bips_last_errno(), 0);

    // A success leaves the message of the last failure, like errno.
    const std::string before = last_message();
    bips_producer_stats ps;
    CHECK_OK(bips_producer_get_stats(prod.get(), &ps));
    CHECK_EQ(last_message(), before);

    // Closed handles: every call that would use them fails with a message, none crashes.
    CHECK_OK(bips_consumer_close(cons.get()));
    bips_frame *f = nullptr;
    CHECK_FAILS(bips_consumer_receive(cons.get(), 0, &f), BIPS_ERR_INVALID_ARGUMENT, "closed");
    CHECK_FAILS(bips_consumer_try_receive(cons.get(), &f), BIPS_ERR_INVALID_ARGUMENT, "closed");
    CHECK_FAILS(bips_consumer_wait(cons.get(), 0), BIPS_ERR_INVALID_ARGUMENT, "closed");
    CHECK_OK(bips_consumer_close(cons.get()));
    auto late = acquire(prod.get());
    CHECK_OK(bips_producer_close(prod.get()));
    CHECK_FAILS(bips_producer_acquire(prod.get(), 0, &b), BIPS_ERR_INVALID_ARGUMENT, "closed");
    CHECK_FAILS(bips_producer_try_acquire(prod.get(), &b), BIPS_ERR_INVALID_ARGUMENT, "closed");
    CHECK_FAILS(bips_producer_publish(prod.get(), late.release(), 0, nullptr, 0),
                BIPS_ERR_INVALID_ARGUMENT, "closed");
    CHECK(f == nullptr && b == nullptr);
}

BIPS_TEST(c_api_error_messages_are_per_thread) {
    const std::string missing = unique_name();
    bips_consumer *c = nullptr;
    CHECK_FAILS(bips_consumer_open(missing.c_str(), nullptr, &c), BIPS_ERR_POOL_NOT_FOUND);
    const std::string mine = last_message();
    std::string theirs;
    std::thread t([&] {
        CHECK_EQ(std::string(bips_last_error_message()), std::string()); // fresh thread: ""
        (void)bips_consumer_open("bad/name", nullptr, &c);
        theirs = bips_last_error_message();
    });
    t.join();
    CHECK(theirs.find("invalid pool name") != std::string::npos);
    CHECK_EQ(last_message(), mine);
}

BIPS_TEST(c_api_names) {
    CHECK_EQ(std::string(bips_version()), std::string(BIPS_VERSION));
    CHECK_EQ(std::string(bips_status_name(BIPS_OK)), std::string("BIPS_OK"));
    CHECK_EQ(std::string(bips_status_name(BIPS_ERR_CORRUPT_POOL)),
             std::string("BIPS_ERR_CORRUPT_POOL"));
    CHECK_EQ(std::string(bips_status_name(static_cast<bips_status>(99))),
             std::string("BIPS_ERR_UNKNOWN"));
    // Every dtype of the core, named as the core names it.
    for (std::uint8_t code : {DType::Int, DType::UInt, DType::Float, DType::Bool})
        for (std::uint8_t bits : {8, 16, 32, 64}) {
            const DType t{code, bits};
            const auto c = static_cast<bips_dtype>((code << 8) | bits);
            CHECK_EQ(std::string(bips_dtype_name(c)), t.name());
        }
    CHECK_EQ(std::string(bips_dtype_name(static_cast<bips_dtype>(12345))), std::string("invalid"));
}

// A pool file nobody can trust: every entry point that reads it reports an error code.
BIPS_TEST(c_api_hostile_pool_files) {
    const std::string name = unique_name();
    write_shm_file(name, std::vector<unsigned char>(8192, 0xab));
    ScopedUnlink cleanup(name);
    bips_consumer *c = nullptr;
    bips_producer *p = nullptr;
    bips_pool_list *l = nullptr;
    bips_consumer_options co;
    bips_consumer_options_init(&co);
    co.wait_ns = 200 * MS;
    CHECK_FAILS(bips_consumer_open(name.c_str(), &co, &c), BIPS_ERR_CORRUPT_POOL);
    const bips_producer_options o = options(2);
    CHECK_FAILS(bips_producer_create(name.c_str(), &o, &p), BIPS_ERR_CORRUPT_POOL);
    CHECK_FAILS(bips_get_pool_info(name.c_str(), &l), BIPS_ERR_CORRUPT_POOL);
    CHECK(c == nullptr && p == nullptr && l == nullptr);
    REQUIRE_OK(bips_list_pools(&l));
    Owned<bips_pool_list> list(l);
    bool listed = false;
    for (std::size_t i = 0; i < bips_pool_list_size(l); ++i) {
        bips_pool_info info;
        REQUIRE_OK(bips_pool_list_get(l, i, &info));
        if (info.name == name)
            listed = info.error[0] != '\0';
    }
    CHECK(listed);

    // Another layout version: incompatible, not corrupt.
    const std::string other = unique_name();
    std::vector<unsigned char> img(1 << 16, 0);
    std::memcpy(img.data() + offsetof(detail::PoolHeader, magic), detail::MAGIC,
                sizeof(detail::MAGIC));
    const std::uint32_t version = detail::LAYOUT_VERSION + 1;
    std::memcpy(img.data() + offsetof(detail::PoolHeader, layout_version), &version,
                sizeof version);
    write_shm_file(other, img);
    ScopedUnlink cleanup_other(other);
    CHECK_FAILS(bips_consumer_open(other.c_str(), &co, &c), BIPS_ERR_INCOMPATIBLE_POOL);
    CHECK(c == nullptr);
}

// A peer truncates a live pool: the producer and the consumer report BIPS_ERR_CORRUPT_POOL.
BIPS_TEST(c_api_truncated_pool) {
    const std::string name = unique_name();
    auto prod = make_producer(name, options(3, 4096));
    auto cons = make_consumer(name);
    publish_tag(prod.get(), 1);
    REQUIRE(::truncate(shm_path(name).c_str(), 0) == 0);
    bips_status producer_status = BIPS_OK;
    for (int k = 0; k < 5 && producer_status != BIPS_ERR_CORRUPT_POOL; ++k) {
        bips_buffer *b = nullptr;
        producer_status = bips_producer_acquire(prod.get(), 200 * MS, &b);
        if (producer_status == BIPS_OK) {
            std::memset(bips_buffer_data(b), 7, bips_buffer_nbytes(b));
            producer_status = bips_producer_publish(prod.get(), b, BIPS_TIMESTAMP_NOW, nullptr, 0);
        }
    }
    CHECK_EQ(bips_status_name(producer_status), std::string("BIPS_ERR_CORRUPT_POOL"));
    bips_status consumer_status = BIPS_OK;
    for (int k = 0; k < 5 && consumer_status != BIPS_ERR_CORRUPT_POOL; ++k) {
        bips_frame *f = nullptr;
        consumer_status = bips_consumer_receive(cons.get(), 100 * MS, &f);
        bips_frame_release(f);
    }
    CHECK_EQ(bips_status_name(consumer_status), std::string("BIPS_ERR_CORRUPT_POOL"));
}

// Buffers and frames outlive the handles they came from (ASan checks the memory).
BIPS_TEST(c_api_handles_outlive_their_source) {
    const std::string name = unique_name();
    auto prod = make_producer(name, options(3));
    auto cons = make_consumer(name);
    publish_tag(prod.get(), 3);
    auto frame = receive(cons.get());
    auto buffer = acquire(prod.get());
    cons.reset();
    prod.reset(); // closes; the frame's and the buffer's memory stay mapped
    CHECK(has_pattern(static_cast<const std::byte *>(bips_frame_data(frame.get())),
                      bips_frame_nbytes(frame.get()), 3));
    std::memset(bips_buffer_data(buffer.get()), 1, bips_buffer_capacity(buffer.get()));
    buffer.reset();
    frame.reset();
    CHECK(!shm_exists(name));
}

BIPS_TEST(c_api_pool_info_and_list) {
    const std::string name = unique_name();
    bips_producer_options o;
    bips_producer_options_init(&o);
    o.capacity = 3;
    o.ndim = 2;
    o.shape[0] = 2;
    o.shape[1] = 5;
    o.dtype = BIPS_DTYPE_UINT16;
    o.meta_size = 8;
    o.policy = BIPS_POLICY_DROP_OLDEST;
    o.max_consumers = 4;
    auto prod = make_producer(name, o);
    bips_consumer_options co;
    bips_consumer_options_init(&co);
    co.latest = 1;
    auto cons = make_consumer(name, &co);
    publish_tag(prod.get(), 0);
    auto held = receive(cons.get());

    bips_pool_list *l = nullptr;
    REQUIRE_OK(bips_get_pool_info(name.c_str(), &l));
    Owned<bips_pool_list> list(l);
    REQUIRE_EQ(bips_pool_list_size(l), 1u);
    bips_pool_info info;
    REQUIRE_OK(bips_pool_list_get(l, 0, &info));
    CHECK_EQ(std::string(info.name), name);
    CHECK_EQ(std::string(info.error), std::string());
    CHECK_EQ(info.producer_alive, 1);
    CHECK_EQ(info.closed, 0);
    CHECK_EQ(info.layout_version, LAYOUT_VERSION);
    CHECK_EQ(info.capacity, 3u);
    CHECK_EQ(info.buffer_size, 20u);
    CHECK_EQ(info.meta_size, 8u);
    CHECK_EQ(info.policy, BIPS_POLICY_DROP_OLDEST);
    CHECK_EQ(info.mode, 0600u);
    CHECK_EQ(info.owner, ::geteuid());
    CHECK_EQ(info.max_consumers, 4u);
    CHECK_EQ(info.consumers, 1u);
    CHECK_EQ(info.published, 1u);
    REQUIRE_EQ(info.ndim, 2u);
    CHECK_EQ(info.shape[1], 5);
    CHECK_EQ(info.dtype, BIPS_DTYPE_UINT16);
    CHECK_EQ(info.producer_pid, ::getpid());
    CHECK(info.created_ns > 0);
    CHECK(info.last_publish_ns > 0);
    CHECK(info.file_size >= 3 * 20u);
    REQUIRE_EQ(info.slot_count, 1u);
    bips_slot_info slot;
    REQUIRE_OK(bips_pool_list_get_slot(l, 0, 0, &slot));
    CHECK_EQ(slot.alive, 1);
    CHECK_EQ(slot.latest, 1);
    CHECK_EQ(slot.pid, ::getpid());
    CHECK_EQ(slot.received, 1u);
    CHECK_EQ(slot.held, 1u);
    CHECK_EQ(slot.last_seq, 0);
    CHECK(slot.attached_ns > 0);
    CHECK(slot.last_receive_ns > 0);

    bips_pool_list *all = nullptr;
    REQUIRE_OK(bips_list_pools(&all));
    Owned<bips_pool_list> all_list(all);
    bool found = false;
    for (std::size_t i = 0; i < bips_pool_list_size(all); ++i) {
        bips_pool_info e;
        REQUIRE_OK(bips_pool_list_get(all, i, &e));
        if (e.name == name)
            found = e.capacity == 3 && e.error[0] == '\0';
    }
    CHECK(found);
}

BIPS_TEST(c_api_notifier) {
    const std::string name = unique_name();
    bips_producer_options po;
    bips_producer_options_init(&po);
    po.capacity = 2;
    po.buffer_size = 64;
    bips_producer *p_raw = nullptr;
    REQUIRE_OK(bips_producer_create(name.c_str(), &po, &p_raw));
    Owned<bips_producer> p(p_raw);
    bips_consumer *c_raw = nullptr;
    REQUIRE_OK(bips_consumer_open(name.c_str(), nullptr, &c_raw));
    Owned<bips_consumer> c(c_raw);

    bips_notifier *n_raw = nullptr;
    CHECK_FAILS(bips_notifier_new(nullptr, &n_raw), BIPS_ERR_INVALID_ARGUMENT);
    CHECK(n_raw == nullptr);
    REQUIRE_OK(bips_notifier_new(c.get(), &n_raw));
    Owned<bips_notifier> n(n_raw);
    const int fd = bips_notifier_fd(n.get());
    REQUIRE(fd >= 0);
    CHECK_EQ(bips_notifier_fd(nullptr), -1);
    CHECK_FAILS(bips_notifier_arm(nullptr), BIPS_ERR_INVALID_ARGUMENT);
    bips_notifier_disarm(nullptr);
    bips_notifier_clear(nullptr);
    bips_notifier_free(nullptr);

    auto readable = [&](int timeout_ms) {
        pollfd pfd{fd, POLLIN, 0};
        return ::poll(&pfd, 1, timeout_ms) == 1 && (pfd.revents & POLLIN);
    };
    REQUIRE_OK(bips_notifier_arm(n.get()));
    CHECK(!readable(0));
    bips_buffer *b = nullptr;
    REQUIRE_OK(bips_producer_acquire(p.get(), SECOND, &b));
    REQUIRE_OK(bips_producer_publish(p.get(), b, BIPS_TIMESTAMP_NOW, nullptr, 0));
    REQUIRE(readable(5000 * SLOWDOWN));
    bips_notifier_clear(n.get());
    CHECK(!readable(0));
    bips_frame *f = nullptr;
    REQUIRE_OK(bips_consumer_try_receive(c.get(), &f));
    bips_frame_release(f);

    // Disarmed: the next frame does not make it readable.
    REQUIRE_OK(bips_notifier_arm(n.get()));
    bips_notifier_disarm(n.get());
    REQUIRE_OK(bips_producer_acquire(p.get(), SECOND, &b));
    REQUIRE_OK(bips_producer_publish(p.get(), b, BIPS_TIMESTAMP_NOW, nullptr, 0));
    CHECK(!readable(300));
}

// Nothing in bips.h can throw: a C++ exception crossing into C (or C#) would be undefined.
#define BIPS_NOTHROW(call) static_assert(noexcept(call), #call " may throw")
BIPS_TEST(c_api_never_throws) {
    bips_producer *p = nullptr;
    bips_consumer *c = nullptr;
    bips_buffer *b = nullptr;
    bips_frame *f = nullptr;
    bips_pool_list *l = nullptr;
    bips_notifier *n = nullptr;
    bips_producer_options po{};
    bips_consumer_options co{};
    bips_producer_stats ps{};
    bips_consumer_stats cs{};
    bips_pool_info pi{};
    bips_slot_info si{};
    BIPS_NOTHROW(bips_status_name(BIPS_OK));
    BIPS_NOTHROW(bips_last_error_message());
    BIPS_NOTHROW(bips_last_errno());
    BIPS_NOTHROW(bips_version());
    BIPS_NOTHROW(bips_dtype_name(BIPS_DTYPE_UINT8));
    BIPS_NOTHROW(bips_producer_options_init(&po));
    BIPS_NOTHROW(bips_consumer_options_init(&co));
    BIPS_NOTHROW(bips_producer_create("", &po, &p));
    BIPS_NOTHROW(bips_producer_acquire(p, 0, &b));
    BIPS_NOTHROW(bips_producer_try_acquire(p, &b));
    BIPS_NOTHROW(bips_producer_publish(p, b, 0, nullptr, 0));
    BIPS_NOTHROW(bips_producer_get_stats(p, &ps));
    BIPS_NOTHROW(bips_producer_close(p));
    BIPS_NOTHROW(bips_producer_free(p));
    BIPS_NOTHROW(bips_buffer_data(b));
    BIPS_NOTHROW(bips_buffer_capacity(b));
    BIPS_NOTHROW(bips_buffer_nbytes(b));
    BIPS_NOTHROW(bips_buffer_ndim(b));
    BIPS_NOTHROW(bips_buffer_shape(b));
    BIPS_NOTHROW(bips_buffer_dtype(b));
    BIPS_NOTHROW(bips_buffer_set_format(b, nullptr, 0, BIPS_DTYPE_UINT8));
    BIPS_NOTHROW(bips_buffer_set_nbytes(b, 0));
    BIPS_NOTHROW(bips_buffer_meta(b));
    BIPS_NOTHROW(bips_buffer_meta_capacity(b));
    BIPS_NOTHROW(bips_buffer_discard(b));
    BIPS_NOTHROW(bips_consumer_open("", &co, &c));
    BIPS_NOTHROW(bips_consumer_receive(c, 0, &f));
    BIPS_NOTHROW(bips_consumer_try_receive(c, &f));
    BIPS_NOTHROW(bips_consumer_wait(c, 0));
    BIPS_NOTHROW(bips_consumer_get_stats(c, &cs));
    BIPS_NOTHROW(bips_consumer_close(c));
    BIPS_NOTHROW(bips_consumer_free(c));
    BIPS_NOTHROW(bips_notifier_new(c, &n));
    BIPS_NOTHROW(bips_notifier_fd(n));
    BIPS_NOTHROW(bips_notifier_arm(n));
    BIPS_NOTHROW(bips_notifier_disarm(n));
    BIPS_NOTHROW(bips_notifier_clear(n));
    BIPS_NOTHROW(bips_notifier_free(n));
    BIPS_NOTHROW(bips_frame_data(f));
    BIPS_NOTHROW(bips_frame_nbytes(f));
    BIPS_NOTHROW(bips_frame_seq(f));
    BIPS_NOTHROW(bips_frame_timestamp_ns(f));
    BIPS_NOTHROW(bips_frame_ndim(f));
    BIPS_NOTHROW(bips_frame_shape(f));
    BIPS_NOTHROW(bips_frame_dtype(f));
    BIPS_NOTHROW(bips_frame_meta(f));
    BIPS_NOTHROW(bips_frame_meta_size(f));
    BIPS_NOTHROW(bips_frame_intact(f));
    BIPS_NOTHROW(bips_frame_release(f));
    BIPS_NOTHROW(bips_list_pools(&l));
    BIPS_NOTHROW(bips_get_pool_info("", &l));
    BIPS_NOTHROW(bips_pool_list_size(l));
    BIPS_NOTHROW(bips_pool_list_get(l, 0, &pi));
    BIPS_NOTHROW(bips_pool_list_get_slot(l, 0, 0, &si));
    BIPS_NOTHROW(bips_pool_list_free(l));
    // ...and since they are noexcept, an exception escaping one would std::terminate() the
    // tests above instead of letting them pass: every error path they take is covered.
    CHECK(true);
}

BIPS_TEST(c_api_adaptive_spin_option_and_wait_stats) {
    bips_producer_options po;
    bips_producer_options_init(&po);
    CHECK_EQ(po.adaptive_spin, 1);
    bips_consumer_options co;
    bips_consumer_options_init(&co);
    CHECK_EQ(co.adaptive_spin, 1);
    const std::string name = unique_name();
    bips_producer_options o = options(2);
    o.adaptive_spin = 0;
    auto p = make_producer(name, o);
    co.adaptive_spin = 0;
    auto c = make_consumer(name, &co);
    // The consumer waits for a frame published 20 ms later: with spinning off it sleeps.
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        publish_tag(p.get(), 1);
    });
    receive(c.get(), 10 * SECOND);
    t.join();
    bips_consumer_stats cs;
    REQUIRE_OK(bips_consumer_get_stats(c.get(), &cs));
    CHECK_EQ(cs.spins, 0u);
    CHECK(cs.sleeps <= 1); // 0 only if the thread published before receive looked
    bips_producer_stats ps;
    REQUIRE_OK(bips_producer_get_stats(p.get(), &ps));
    CHECK_EQ(ps.spins, 0u);
    CHECK_EQ(ps.sleeps, 0u); // nothing had to wait for a free buffer
}
