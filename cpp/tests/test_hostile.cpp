// SPDX-License-Identifier: Apache-2.0
// Live pools under attack by a peer that writes what it can open for writing (raw mmap, no bips
// code): the producer never trusts a value it reads back, stray ownership bits never wedge a
// pool, hostile statistics never overflow, and the owner check refuses strangers' pools.
#include "support.hpp"

#include "layout.hpp"

#include <atomic>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace bips;
using namespace bips::test;
using bips::detail::ControlHeader;
using bips::detail::FrameDesc;
using bips::detail::PoolHeader;

namespace {

/// A read-write mapping of one of a pool's files, as a hostile peer of the same uid makes it
/// (the pool file has no write bit: such a peer chmods it first).
class Scribbler : public MappedFile {
public:
    explicit Scribbler(const std::string &path) : MappedFile(writable(path)) {}

private:
    static const std::string &writable(const std::string &path) {
        REQUIRE(::chmod(path.c_str(), 0600) == 0);
        return path;
    }
};

/// A producer of pool `name` in a child process, up and publishing nothing; kill() it to leave
/// a dead pool behind.
Child producer_in_child(const std::string &name) {
    Pipe up;
    Child c = Child::fork([&] {
        Producer p(name, small_pool(2, 64));
        up.signal();
        ::pause();
        return 0;
    });
    REQUIRE(up.wait(5000ms) == '!');
    return c;
}

detail::Layout layout_of(const PoolOptions &o, std::size_t buffer_size) {
    return detail::compute_layout(o.capacity, o.max_consumers, buffer_size, o.meta_size,
                                  static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
}

} // namespace

// Issue 8, item 2: the descriptor of an acquired buffer is rewritten by a peer; the producer's
// nbytes/shape/dtype come from its own memory, so memset(data, v, nbytes) stays in the buffer,
// and what consumers receive is what the producer set.
BIPS_TEST(producer_never_reads_its_format_back) {
    const std::string name = unique_name();
    PoolOptions o;
    o.capacity = 2;
    o.shape = {4, 8, 3};
    o.dtype = UINT8;
    Producer prod(name, o);
    Consumer cons(name);
    const auto l = layout_of(o, prod.buffer_size());
    Scribbler pool(shm_path(name));
    for (int round = 0; round < 4; ++round) {
        Buffer buf = prod.acquire(1s);
        const std::size_t d = l.desc_offset + buf.index() * sizeof(FrameDesc);
        pool.set<std::uint64_t>(d + offsetof(FrameDesc, nbytes), std::uint64_t{1} << 40);
        pool.set<std::uint32_t>(d + offsetof(FrameDesc, ndim), 8);
        for (int k = 0; k < 8; ++k)
            pool.set<std::int64_t>(d + offsetof(FrameDesc, shape) + 8 * k, std::int64_t{1} << 40);
        pool.set<std::uint8_t>(d + offsetof(FrameDesc, dtype_code), 2);
        pool.set<std::uint8_t>(d + offsetof(FrameDesc, dtype_bits), 64);
        CHECK_EQ(buf.nbytes(), 96u);
        CHECK_EQ(buf.shape(), (Shape{4, 8, 3}));
        CHECK(buf.dtype() == UINT8);
        std::memset(buf.data(), 0x11 * (round + 1), buf.nbytes());
        if (round % 2) {
            buf.set_format({96}, UINT8);
            pool.set<std::uint64_t>(d + offsetof(FrameDesc, nbytes), 1);
            CHECK_EQ(buf.nbytes(), 96u);
            CHECK_EQ(buf.shape(), (Shape{96}));
        }
        prod.publish(std::move(buf));
        Frame f = cons.receive(1s);
        CHECK_EQ(f.nbytes(), 96u);
        CHECK_EQ(f.shape(), round % 2 ? Shape{96} : (Shape{4, 8, 3}));
        CHECK(f.dtype() == UINT8);
        CHECK_EQ(f.data()[95], static_cast<std::byte>(0x11 * (round + 1)));
    }
}

// Issue 8, item 4: bits for slots that do not exist, or that nobody holds, in the shared masks
// and ownership words are reclaimed: neither policy ever times out on them, with or without a
// consumer.
BIPS_TEST(stray_bits_never_wedge_a_pool) {
    for (Policy policy : {Policy::block, Policy::drop_oldest}) {
        for (bool with_consumer : {false, true}) {
            const std::string name = unique_name();
            PoolOptions o = small_pool(3, 64, policy);
            o.max_consumers = 4;
            Producer prod(name, o);
            std::optional<Consumer> cons;
            if (with_consumer)
                cons.emplace(name);
            const auto l = layout_of(o, prod.buffer_size());
            Scribbler ctl(ctl_path(name));
            const std::uint64_t stray_slots =
                detail::queued_bit(31) | detail::queued_bit(3) | detail::queued_bit(2);
            for (int round = 0; round < 30; ++round) {
                if (round % 5 == 0) {
                    // A dying or buggy writer: bits past max_consumers, for unattached slots,
                    // and in the unused high halves of the masks.
                    ctl.set<std::uint64_t>(offsetof(ControlHeader, active),
                                           ctl.get<std::uint64_t>(offsetof(ControlHeader, active)) |
                                               stray_slots | (std::uint64_t{1} << 40));
                    ctl.set<std::uint64_t>(
                        offsetof(ControlHeader, attached),
                        ctl.get<std::uint64_t>(offsetof(ControlHeader, attached)) | stray_slots);
                    for (std::uint32_t i = 0; i < o.capacity; ++i) {
                        const std::size_t s = l.state_offset + i * sizeof(detail::StateWord);
                        ctl.set<std::uint64_t>(s, ctl.get<std::uint64_t>(s) | detail::held_bit(31) |
                                                      detail::queued_bit(3) | detail::held_bit(2));
                    }
                }
                Buffer b = prod.acquire(2s); // Timeout would fail the test
                fill_pattern(b.data(), b.nbytes(), static_cast<std::uint64_t>(round));
                prod.publish(std::move(b));
                if (cons) {
                    Frame f = cons->receive(2s);
                    CHECK(has_pattern(f.data(), f.nbytes(), static_cast<std::uint64_t>(round)));
                }
            }
            CHECK_EQ(prod.stats().consumers, with_consumer ? 1u : 0u);
        }
    }
}

// Issue 8, item 6: statistics a peer can write never take part in arithmetic that overflows
// (UBSan checks this under the sanitizer build), and a zero dimension cannot hide huge ones.
BIPS_TEST(hostile_statistics_and_shapes_stay_defined) {
    const std::string name = unique_name();
    PoolOptions o = small_pool(2, 64);
    Producer prod(name, o);
    Consumer cons(name);
    const auto l = layout_of(o, prod.buffer_size());
    Scribbler pool(shm_path(name));
    for (std::int64_t v : {INT64_MIN, INT64_MAX, std::int64_t{-1}, std::int64_t{1}}) {
        pool.set<std::int64_t>(offsetof(PoolHeader, last_publish_ns), v);
        pool.set<std::uint64_t>(offsetof(PoolHeader, rate_mfps), static_cast<std::uint64_t>(v));
        PoolInfo info = pool_info(name);
        CHECK(info.fps >= 0.0);
        for (int k = 0; k < 3; ++k) {
            publish_pattern(prod, static_cast<std::uint64_t>(k)); // the rate window is ours
            Frame f = cons.receive(1s);
            CHECK(has_pattern(f.data(), f.nbytes(), static_cast<std::uint64_t>(k)));
        }
    }
    // A descriptor whose shape has a zero then two 2^62 dimensions: not viewable, so the frame
    // is handed out as flat bytes, never with strides that overflow.
    Buffer b = prod.acquire(1s);
    const std::uint32_t idx = b.index();
    fill_pattern(b.data(), b.nbytes(), 7);
    prod.publish(std::move(b));
    Frame f = cons.receive(1s);
    CHECK_EQ(f.index(), idx);
    CHECK_EQ(f.nbytes(), 64u);
    std::int64_t dims[3] = {0, std::int64_t{1} << 62, std::int64_t{1} << 62};
    CHECK(!frame_bytes(dims, 3, UINT8, std::size_t{1} << 40).has_value());
    std::int64_t fine[3] = {0, 4, 4};
    CHECK_EQ(frame_bytes(fine, 3, UINT8, 64).value_or(1), 0u);
    (void)l;
}

// Issue 8, item 5: consumers accept only pools of their own uid or root unless told otherwise.
BIPS_TEST(consumers_check_the_pool_owner) {
    const std::string name = unique_name();
    Producer prod(name, small_pool(2));
    const auto me = static_cast<std::int64_t>(::geteuid());
    ConsumerOptions o;
    {
        Consumer c(name, o);
    } // OWNER_SELF: our own pool
    o.owner = me;
    {
        Consumer c(name, o);
    }
    o.owner = ANY_OWNER;
    {
        Consumer c(name, o);
    }
    o.owner = me + 4242; // a uid that does not own it
    bool refused = false;
    try {
        Consumer c(name, o);
    } catch (const std::system_error &e) {
        refused = e.code().value() == EPERM &&
                  std::string(e.what()).find("owner=" + std::to_string(me)) != std::string::npos;
    }
    CHECK(refused);
    CHECK_EQ(prod.stats().consumers, 0u);
}

// Issue 8, item 3: a peer truncates either file of a live pool. Nobody dies of SIGBUS: the
// producer and the consumer report CorruptPool, the inspectors an error, a reconnecting consumer
// follows the next producer, and a new producer on the name works normally.
BIPS_TEST(truncated_pool_files_kill_nobody) {
    for (const char *which : {"pool", "ctl", "both"}) {
        const std::string name = unique_name();
        std::optional<Producer> prod(std::in_place, name, small_pool(3, 4096));
        Consumer cons(name);
        ConsumerOptions ro;
        ro.reconnect = true;
        Consumer follower(name, ro);
        publish_pattern(*prod, 1);
        Frame held = cons.receive(1s);
        CHECK(has_pattern(held.data(), held.nbytes(), 1));
        (void)follower.receive(1s);
        const std::string w = which;
        if (w != "ctl")
            REQUIRE(::truncate(shm_path(name).c_str(), 0) == 0);
        if (w != "pool")
            REQUIRE(::truncate(ctl_path(name).c_str(), 0) == 0);
        // The held view stays readable (zero pages now); nobody is killed touching it.
        unsigned sum = 0;
        for (std::size_t k = 0; k < held.nbytes(); ++k)
            sum += static_cast<unsigned>(held.data()[k]);
        (void)sum;
        held.release();
        // The producer notices at its next call at the latest after touching the pool.
        bool producer_refused = false;
        for (int k = 0; k < 5 && !producer_refused; ++k) {
            try {
                Buffer b = prod->acquire(200ms);
                std::memset(b.data(), 7, b.nbytes());
                prod->publish(std::move(b));
            } catch (const CorruptPool &) {
                producer_refused = true;
            } catch (const Timeout &) {
            }
        }
        CHECK(producer_refused);
        bool consumer_refused = false;
        for (int k = 0; k < 5 && !consumer_refused; ++k) {
            try {
                (void)cons.try_receive_for(100ms);
            } catch (const CorruptPool &) {
                consumer_refused = true;
            }
        }
        CHECK(consumer_refused);
        try {
            (void)pool_info(name); // pread: an error or a description, never a signal
        } catch (const Error &) {
        }
        for (const auto &p : list_pools())
            (void)p;
        prod.reset(); // unlinks what is still under the name
        // A new producer on the same name works, and the reconnecting consumer finds it.
        Producer fresh(name, small_pool(3, 4096));
        // The follower reconnects while it waits for a frame.
        CHECK(wait_until(
            [&] {
                (void)follower.try_receive_for(10ms);
                return fresh.stats().consumers >= 1;
            },
            5000ms));
        for (std::uint64_t k = 10; k < 20; ++k) {
            publish_pattern(fresh, k);
            auto f = follower.try_receive_for(2s);
            if (!f)
                fail(__FILE__, __LINE__, std::string(which) + ": the follower got nothing");
            REQUIRE(f.has_value());
            CHECK(has_pattern(f->data(), f->nbytes(), k));
        }
        CHECK(follower.stats().reconnects >= 1u);
    }
}

// A peer that may write the control file clears the held bit of a frame another consumer still
// reads: the producer may then reuse the buffer. It cannot be prevented from outside the
// producer's uid, but the consumer can tell: intact() turns false before the producer writes.
BIPS_TEST(frames_taken_back_by_a_peer_are_not_intact) {
    const std::string name = unique_name();
    PoolOptions o = small_pool(1, 64);
    Producer prod(name, o);
    Consumer cons(name);
    const auto l = layout_of(o, prod.buffer_size());
    publish_pattern(prod, 1);
    Frame f = cons.receive(1s);
    CHECK(f.intact());
    CHECK(!prod.try_acquire().has_value()); // held: the only buffer is not free
    Scribbler ctl(ctl_path(name));
    ctl.set<std::uint64_t>(l.state_offset + f.index() * sizeof(detail::StateWord), 0);
    auto b = prod.try_acquire();
    REQUIRE(b.has_value());
    CHECK(!f.intact()); // marked before a single byte is written
    std::memset(b->data(), 0xee, b->nbytes());
    prod.publish(std::move(*b));
    CHECK(!f.intact());
    Frame g = cons.receive(1s);
    CHECK(g.intact());
    g.release();
    CHECK(!g.intact());
}

// A peer queues a buffer the producer is still writing, or a frame we already received, for
// our slot: neither is delivered (review of issue 8: torn frames that looked intact, replays).
BIPS_TEST(frames_queued_by_a_peer_are_never_delivered) {
    for (bool latest : {false, true}) {
        const std::string name = unique_name();
        PoolOptions o = small_pool(2, 64);
        Producer prod(name, o);
        ConsumerOptions co;
        co.latest = latest;
        Consumer cons(name, co);
        const auto l = layout_of(o, prod.buffer_size());
        Scribbler ctl(ctl_path(name));
        const std::uint32_t slot = cons.stats().slot;
        auto state_of = [&](std::uint32_t i) {
            return l.state_offset + i * sizeof(detail::StateWord);
        };
        // A frame the producer is writing.
        Buffer b = prod.acquire(1s);
        const std::uint32_t writing = b.index();
        ctl.set<std::uint64_t>(state_of(writing), detail::queued_bit(slot));
        CHECK(!cons.try_receive().has_value());
        CHECK(!cons.wait(50ms));
        fill_pattern(b.data(), b.nbytes(), 5);
        prod.publish(std::move(b));
        Frame f = cons.receive(1s);
        CHECK_EQ(f.seq(), 0u);
        CHECK(has_pattern(f.data(), f.nbytes(), 5));
        CHECK(f.intact());
        const std::uint32_t first = f.index();
        f.release();
        // The same frame again: a replay.
        ctl.set<std::uint64_t>(state_of(first), detail::queued_bit(slot));
        CHECK(!cons.try_receive().has_value());
        publish_pattern(prod, 6);
        Frame g = cons.receive(1s);
        CHECK_EQ(g.seq(), 1u);
        CHECK(has_pattern(g.data(), g.nbytes(), 6));
        g.release();
        // Nothing is left held or queued for us, and the producer still has every buffer.
        CHECK_EQ(cons.stats().held, 0u);
        for (int k = 0; k < 4; ++k) {
            publish_pattern(prod, 10 + static_cast<std::uint64_t>(k));
            Frame h = cons.receive(1s);
            CHECK(has_pattern(h.data(), h.nbytes(), 10 + static_cast<std::uint64_t>(k)));
        }
    }
}

// Read locks (which anyone who can read the pool file may take) never make a dead producer look
// alive, and a grown control file does not lock consumers out.
BIPS_TEST(read_locks_and_grown_files_fool_nobody) {
    const std::string name = unique_name();
    Child producer = producer_in_child(name);
    ConsumerOptions ro;
    ro.reconnect = true;
    Consumer follower(name, ro);
    int fd = ::open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    producer.kill();
    struct flock fl{};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = detail::LOCK_PRODUCER;
    fl.l_len = 1;
    REQUIRE(::fcntl(fd, F_OFD_SETLK, &fl) == 0); // a stranger's read lock on the dead pool
    CHECK(!pool_info(name).producer_alive);
    ConsumerOptions plain;
    CHECK_THROWS_AS(Consumer(name, plain), ProducerGone);
    Producer fresh(name, small_pool(2, 64));
    ::close(fd);
    CHECK(wait_until(
        [&] {
            (void)follower.try_receive_for(10ms);
            return fresh.stats().consumers >= 1;
        },
        5000ms));
    publish_pattern(fresh, 3);
    auto f = follower.try_receive_for(2s);
    REQUIRE(f.has_value());
    CHECK(has_pattern(f->data(), f->nbytes(), 3));
    f->release();
    // A control file grown by a peer: new consumers still attach.
    REQUIRE(::truncate(ctl_path(name).c_str(), 1 << 20) == 0);
    Consumer late(name);
    publish_pattern(fresh, 4);
    Frame g = late.receive(1s);
    CHECK(has_pattern(g.data(), g.nbytes(), 4));
}

// Cleaners and producers taking over a dead pool race on its name: at most one producer ever
// holds it, and the one that does is reachable (review of issue 8: a cleaner removed the new
// pool's names).
BIPS_TEST(cleaners_and_takeovers_never_share_a_name) {
    for (int round = 0; round < 300; ++round) {
        const std::string name = unique_name();
        producer_in_child(name).kill();
        std::atomic<bool> go{false};
        std::vector<std::optional<Producer>> producers(2);
        std::vector<std::thread> threads;
        for (int k = 0; k < 2; ++k)
            threads.emplace_back([&, k] {
                while (!go.load())
                    std::this_thread::yield();
                try {
                    producers[k].emplace(name, small_pool(2, 64));
                } catch (const PoolBusy &) {
                } catch (const Error &) {
                }
            });
        for (int k = 0; k < 2; ++k)
            threads.emplace_back([&] {
                while (!go.load())
                    std::this_thread::yield();
                for (int i = 0; i < 20; ++i) {
                    try {
                        (void)remove_stale_pool(name);
                    } catch (const Error &) {
                    }
                }
            });
        go.store(true);
        for (auto &t : threads)
            t.join();
        const int live = (producers[0] ? 1 : 0) + (producers[1] ? 1 : 0);
        CHECK_EQ(live, 1);
        for (auto &p : producers) {
            if (!p)
                continue;
            Consumer c(name);
            publish_pattern(*p, static_cast<std::uint64_t>(round));
            Frame f = c.receive(1s);
            CHECK(has_pattern(f.data(), f.nbytes(), static_cast<std::uint64_t>(round)));
        }
    }
}
