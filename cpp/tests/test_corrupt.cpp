// SPDX-License-Identifier: Apache-2.0
// Pools forged by hand into /dev/shm (open() + write(), no bips code): garbage, truncated
// files, other layout versions, inconsistent offsets, garbage descriptors, stray ownership bits.
// Consumers must refuse them with CorruptPool / IncompatiblePool (never crash, never hang);
// producers must not replace a file that is not a bips pool.
#include "support.hpp"

#include "layout.hpp"

#include <cstddef>
#include <fcntl.h>
#include <random>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace bips;
using namespace bips::test;
using bips::detail::ControlHeader;
using bips::detail::FrameDesc;
using bips::detail::PoolHeader;
using bips::detail::SlotDesc;

namespace {

#define HDR(field) offsetof(PoolHeader, field)
#define CTL(field) offsetof(ControlHeader, field)

std::size_t system_page() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

/// A pool file image and its control file's, written field by field at the layout's offsets
/// (memcpy: no alignment or object-lifetime assumptions about the bytes).
struct Image {
    std::vector<unsigned char> bytes;
    std::vector<unsigned char> ctl;
    detail::Layout layout;

    template <class T> void set(std::size_t off, T v) {
        REQUIRE(off + sizeof(T) <= bytes.size());
        std::memcpy(bytes.data() + off, &v, sizeof(T));
    }
    template <class T> void set_ctl(std::size_t off, T v) {
        REQUIRE(off + sizeof(T) <= ctl.size());
        std::memcpy(ctl.data() + off, &v, sizeof(T));
    }
    std::size_t desc(std::uint32_t i) const { return layout.desc_offset + i * sizeof(FrameDesc); }
    std::size_t state(std::uint32_t i) const { return layout.state_offset + i * 64; }
};

/// Writes both files of a forged pool.
void write_pool(const std::string &name, const Image &img) {
    write_shm_file(name, img.bytes);
    int fd = ::open(ctl_path(name).c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, img.ctl.data(), img.ctl.size()) == static_cast<ssize_t>(img.ctl.size()));
    ::close(fd);
}

bool ctl_exists(const std::string &name) {
    struct stat st{};
    return ::stat(ctl_path(name).c_str(), &st) == 0;
}

struct ImageSpec {
    std::uint32_t capacity = 3;
    std::uint32_t max_consumers = 4;
    std::size_t buffer_size = 300;
    std::size_t meta_size = 16;
    Shape shape{10, 10, 3};
    DType dtype = UINT8;
};

/// What a producer of this build would have written: a valid, ready, closed-by-nobody pool.
Image valid_image(const ImageSpec &s = {}, const std::string &name = "forged") {
    Image img;
    const std::size_t page = system_page();
    img.layout =
        detail::compute_layout(s.capacity, s.max_consumers, s.buffer_size, s.meta_size, page);
    const auto &l = img.layout;
    img.bytes.assign(l.file_size, 0);
    std::memcpy(img.bytes.data() + HDR(magic), detail::MAGIC, sizeof(detail::MAGIC));
    img.set<std::uint32_t>(HDR(layout_version), detail::LAYOUT_VERSION);
    img.set<std::uint32_t>(HDR(header_size), sizeof(PoolHeader));
    img.set<std::uint64_t>(HDR(file_size), l.file_size);
    img.set<std::uint64_t>(HDR(page_size), page);
    img.set<std::uint64_t>(HDR(control_size), l.control_size);
    img.set<std::uint64_t>(HDR(desc_offset), l.desc_offset);
    img.set<std::uint64_t>(HDR(slot_offset), l.slot_offset);
    img.set<std::uint64_t>(HDR(ctl_size), l.ctl_size);
    img.set<std::uint64_t>(HDR(meta_offset), l.meta_offset);
    img.set<std::uint64_t>(HDR(data_offset), l.data_offset);
    img.set<std::uint64_t>(HDR(buffer_size), s.buffer_size);
    img.set<std::uint64_t>(HDR(buffer_stride), l.buffer_stride);
    img.set<std::uint32_t>(HDR(meta_size), static_cast<std::uint32_t>(s.meta_size));
    img.set<std::uint32_t>(HDR(meta_stride), static_cast<std::uint32_t>(l.meta_stride));
    img.set<std::uint32_t>(HDR(capacity), s.capacity);
    img.set<std::uint32_t>(HDR(max_consumers), s.max_consumers);
    img.set<std::uint32_t>(HDR(policy), 0);
    img.set<std::uint32_t>(HDR(mode), 0600);
    img.set<std::uint32_t>(HDR(ndim), static_cast<std::uint32_t>(s.shape.size()));
    img.set<std::uint8_t>(HDR(dtype_code), s.dtype.code);
    img.set<std::uint8_t>(HDR(dtype_bits), s.dtype.bits);
    for (std::size_t k = 0; k < s.shape.size(); ++k)
        img.set<std::int64_t>(HDR(shape) + 8 * k, s.shape[k]);
    img.set<std::uint64_t>(HDR(instance_id), 0x1234567890abcdefULL);
    img.set<std::int64_t>(HDR(created_ns), 1);
    img.set<std::int32_t>(HDR(producer_pid), 1);
    std::memcpy(img.bytes.data() + HDR(name), name.data(),
                std::min<std::size_t>(name.size(), MAX_NAME_LENGTH));
    for (std::uint32_t i = 0; i < s.capacity; ++i) {
        img.set<std::uint32_t>(img.desc(i) + offsetof(FrameDesc, ndim),
                               static_cast<std::uint32_t>(s.shape.size()));
        img.set<std::uint8_t>(img.desc(i) + offsetof(FrameDesc, dtype_code), s.dtype.code);
        img.set<std::uint8_t>(img.desc(i) + offsetof(FrameDesc, dtype_bits), s.dtype.bits);
        for (std::size_t k = 0; k < s.shape.size(); ++k)
            img.set<std::int64_t>(img.desc(i) + offsetof(FrameDesc, shape) + 8 * k, s.shape[k]);
    }
    img.set<std::uint32_t>(HDR(ready), 1);
    img.ctl.assign(l.ctl_size, 0);
    std::memcpy(img.ctl.data() + CTL(magic), detail::CTL_MAGIC, sizeof(detail::CTL_MAGIC));
    img.set_ctl<std::uint32_t>(CTL(layout_version), detail::LAYOUT_VERSION);
    img.set_ctl<std::uint32_t>(CTL(header_size), sizeof(ControlHeader));
    img.set_ctl<std::uint64_t>(CTL(instance_id), 0x1234567890abcdefULL);
    img.set_ctl<std::uint64_t>(CTL(ctl_size), l.ctl_size);
    return img;
}

/// Holds the producer lock (byte 0, OFD) of a forged pool, so that it looks alive, and maps
/// its files.
class FakeProducer {
public:
    explicit FakeProducer(const std::string &name) : m_pool(shm_path(name)) {
        struct flock fl{};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = detail::LOCK_PRODUCER;
        fl.l_len = 1;
        REQUIRE(::fcntl(m_pool.fd(), F_OFD_SETLK, &fl) == 0);
        if (ctl_exists(name))
            m_ctl.emplace(ctl_path(name));
    }
    /// The live pool file (the consumer sees writes at once).
    unsigned char *map() const { return m_pool.data(); }
    template <class T> void set(std::size_t off, T v) { m_pool.set(off, v); }
    /// The live control file.
    unsigned char *ctl() const { return m_ctl ? m_ctl->data() : nullptr; }
    template <class T> void set_ctl(std::size_t off, T v) {
        REQUIRE(m_ctl.has_value());
        m_ctl->set(off, v);
    }

private:
    MappedFile m_pool;
    std::optional<MappedFile> m_ctl;
};

enum class Verdict { corrupt, incompatible, other };

const char *verdict_name(Verdict v) {
    return v == Verdict::corrupt        ? "CorruptPool"
           : v == Verdict::incompatible ? "IncompatiblePool"
                                        : "other";
}

/// Writes `bytes` as pool `name`, attaches a Consumer (waiting up to 1 s) and checks that it is
/// refused at once with `want`; pool_info() must refuse it too and list_pools() report it.
void expect_refused(const std::vector<unsigned char> &bytes, Verdict want, const char *what) {
    const std::string name = unique_name();
    write_shm_file(name, bytes);
    ScopedUnlink cleanup(name);
    auto classify = [&](const std::function<void()> &f) -> std::string {
        try {
            f();
            return "no exception";
        } catch (const CorruptPool &) {
            return verdict_name(Verdict::corrupt);
        } catch (const IncompatiblePool &) {
            return verdict_name(Verdict::incompatible);
        } catch (const std::exception &e) {
            return type_name(typeid(e)) + ": " + e.what();
        }
    };
    ConsumerOptions co;
    co.wait = 1s;
    auto t0 = std::chrono::steady_clock::now();
    std::string got = classify([&] { Consumer c(name, co); });
    if (got != verdict_name(want))
        fail(__FILE__, __LINE__,
             std::string(what) + ": Consumer threw " + got + ", expected " + verdict_name(want));
    if (seconds_since(t0) > 0.5 * SLOWDOWN)
        fail(__FILE__, __LINE__,
             std::string(what) + ": Consumer took " + std::to_string(seconds_since(t0)) +
                 " s to refuse");
    got = classify([&] { pool_info(name); });
    if (got != verdict_name(want))
        fail(__FILE__, __LINE__,
             std::string(what) + ": pool_info threw " + got + ", expected " + verdict_name(want));
    bool listed = false;
    for (const auto &p : list_pools())
        if (p.name == name)
            listed = !p.error.empty();
    if (!listed)
        fail(__FILE__, __LINE__, std::string(what) + ": list_pools() does not report the error");
    // Nothing in bips removes a file it cannot trust.
    CHECK(shm_exists(name));
}

std::vector<unsigned char> random_bytes(std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<unsigned char> v(n);
    for (auto &b : v)
        b = static_cast<unsigned char>(rng());
    return v;
}

} // namespace

BIPS_TEST(forged_valid_image_is_accepted) {
    // The control experiment: without it, the refusals below could come from a broken forgery.
    const std::string name = unique_name();
    Image img = valid_image();
    write_pool(name, img);
    ScopedUnlink cleanup(name);
    PoolInfo info = pool_info(name);
    CHECK_EQ(info.capacity, 3u);
    CHECK_EQ(info.buffer_size, 300u);
    CHECK_EQ(info.meta_size, 16u);
    CHECK_EQ(info.max_consumers, 4u);
    CHECK_EQ(info.shape, (Shape{10, 10, 3}));
    CHECK(!info.producer_alive);

    // Holding the lock ourselves makes it live: a consumer attaches and receives what we forge.
    std::optional<FakeProducer> fake(std::in_place, name);
    Consumer cons(name);
    CHECK(!cons.try_receive().has_value());
    CHECK_EQ(cons.shape(), (Shape{10, 10, 3}));
    const std::uint32_t slot = cons.stats().slot;
    const std::size_t d1 = img.desc(1);
    fake->set<std::int64_t>(d1 + offsetof(FrameDesc, timestamp_ns), 777);
    fake->set<std::uint64_t>(d1 + offsetof(FrameDesc, nbytes), 300);
    fake->set<std::uint32_t>(d1 + offsetof(FrameDesc, meta_len), 3);
    std::memcpy(fake->map() + img.layout.meta_offset + img.layout.meta_stride, "abc", 3);
    std::memset(fake->map() + img.layout.data_offset + img.layout.buffer_stride, 0x5a, 300);
    fake->set<std::uint64_t>(d1 + offsetof(FrameDesc, seq), 41);
    fake->set_ctl<std::uint64_t>(img.state(1), detail::queued_bit(slot));
    Frame f = cons.receive(1s);
    CHECK_EQ(f.seq(), 41u);
    CHECK_EQ(f.index(), 1u);
    CHECK_EQ(f.timestamp_ns(), 777);
    CHECK_EQ(f.meta(), std::string("abc"));
    CHECK_EQ(f.shape(), (Shape{10, 10, 3}));
    CHECK_EQ(f.data()[299], std::byte{0x5a});
    f.release();
    std::uint64_t state = 0;
    std::memcpy(&state, fake->ctl() + img.state(1), sizeof(state));
    CHECK_EQ(state, 0u); // released: back to the (fake) producer
    cons.close();

    // Without anyone holding the producer lock it is a valid but dead pool: refused, and as
    // nobody uses it any more, removed.
    fake.reset();
    CHECK_THROWS_AS(Consumer(name), ProducerGone);
    CHECK(!shm_exists(name));
    CHECK(!ctl_exists(name));
}

BIPS_TEST(garbage_segments_are_refused) {
    expect_refused(random_bytes(8192, 1), Verdict::corrupt, "8 KiB of random bytes");
    expect_refused(random_bytes(10, 2), Verdict::corrupt, "10 random bytes");
    std::vector<unsigned char> text(5000, 'x');
    expect_refused(text, Verdict::corrupt, "a text file");
    std::vector<unsigned char> magic_only(detail::MAGIC, detail::MAGIC + 8);
    magic_only.resize(12, 0);
    expect_refused(magic_only, Verdict::corrupt, "magic and 4 bytes");
    std::vector<unsigned char> ones(1 << 16, 0xff);
    expect_refused(ones, Verdict::corrupt, "64 KiB of 0xff");
    std::vector<unsigned char> almost_zero(1 << 16, 0);
    almost_zero[100] = 1; // not the all-zero header a killed creator leaves
    expect_refused(almost_zero, Verdict::corrupt, "zeros but one byte");
}

BIPS_TEST(truncated_segments_are_refused) {
    Image img = valid_image();
    for (std::size_t keep :
         {std::size_t{100}, sizeof(PoolHeader) - 1, sizeof(PoolHeader), sizeof(PoolHeader) + 100,
          img.layout.control_size, img.layout.data_offset, img.bytes.size() - 1}) {
        std::vector<unsigned char> cut(img.bytes.begin(),
                                       img.bytes.begin() + static_cast<std::ptrdiff_t>(keep));
        expect_refused(cut, Verdict::corrupt, ("truncated to " + std::to_string(keep)).c_str());
    }
    std::vector<unsigned char> longer = img.bytes;
    longer.resize(longer.size() + system_page(), 0);
    expect_refused(longer, Verdict::corrupt, "one page too long");
}

BIPS_TEST(other_layout_versions_are_incompatible) {
    for (std::uint32_t v :
         {0u, detail::LAYOUT_VERSION - 1, detail::LAYOUT_VERSION + 1, 0xffffffffu}) {
        Image img = valid_image();
        img.set<std::uint32_t>(HDR(layout_version), v);
        expect_refused(img.bytes, Verdict::incompatible,
                       ("layout_version " + std::to_string(v)).c_str());
    }
    Image img = valid_image();
    img.set<std::uint32_t>(HDR(header_size), sizeof(PoolHeader) + 64);
    expect_refused(img.bytes, Verdict::incompatible, "header_size");
    for (std::uint64_t page : {std::uint64_t{0}, std::uint64_t{1000}, std::uint64_t{4097}}) {
        Image im = valid_image();
        im.set<std::uint64_t>(HDR(page_size), page);
        expect_refused(im.bytes, Verdict::incompatible,
                       ("page_size " + std::to_string(page)).c_str());
    }
}

BIPS_TEST(bad_header_fields_are_corrupt) {
    struct Case {
        const char *what;
        std::function<void(Image &)> mutate;
    };
    const Case cases[] = {
        {"capacity 0", [](Image &i) { i.set<std::uint32_t>(HDR(capacity), 0); }},
        {"capacity 5000", [](Image &i) { i.set<std::uint32_t>(HDR(capacity), 5000); }},
        {"max_consumers 0", [](Image &i) { i.set<std::uint32_t>(HDR(max_consumers), 0); }},
        {"max_consumers 33", [](Image &i) { i.set<std::uint32_t>(HDR(max_consumers), 33); }},
        {"buffer_size 0", [](Image &i) { i.set<std::uint64_t>(HDR(buffer_size), 0); }},
        {"buffer_size 2^62",
         [](Image &i) { i.set<std::uint64_t>(HDR(buffer_size), std::uint64_t{1} << 62); }},
        {"meta_size 2^31", [](Image &i) { i.set<std::uint32_t>(HDR(meta_size), 1u << 31); }},
        {"policy 9", [](Image &i) { i.set<std::uint32_t>(HDR(policy), 9); }},
        {"ndim 9", [](Image &i) { i.set<std::uint32_t>(HDR(ndim), 9); }},
        {"ndim 2^31", [](Image &i) { i.set<std::uint32_t>(HDR(ndim), 1u << 31); }},
        {"dtype float8",
         [](Image &i) {
             i.set<std::uint8_t>(HDR(dtype_bits), 8);
             i.set<std::uint8_t>(HDR(dtype_code), 2);
         }},
        {"dtype code 3", [](Image &i) { i.set<std::uint8_t>(HDR(dtype_code), 3); }},
        {"shape too big", [](Image &i) { i.set<std::int64_t>(HDR(shape), 11); }},
        {"shape negative", [](Image &i) { i.set<std::int64_t>(HDR(shape) + 8, -10); }},
        {"shape overflowing", [](Image &i) { i.set<std::int64_t>(HDR(shape), INT64_MAX); }},
        {"shape with a zero hiding huge dimensions",
         [](Image &i) {
             i.set<std::int64_t>(HDR(shape), 0);
             i.set<std::int64_t>(HDR(shape) + 8, std::int64_t{1} << 62);
             i.set<std::int64_t>(HDR(shape) + 16, std::int64_t{1} << 62);
         }},
        {"desc_offset",
         [](Image &i) { i.set<std::uint64_t>(HDR(desc_offset), i.layout.desc_offset + 64); }},
        {"slot_offset", [](Image &i) { i.set<std::uint64_t>(HDR(slot_offset), 0); }},
        {"ctl_size", [](Image &i) { i.set<std::uint64_t>(HDR(ctl_size), 1u << 30); }},
        {"control_size",
         [](Image &i) { i.set<std::uint64_t>(HDR(control_size), i.layout.control_size * 2); }},
        {"meta_offset", [](Image &i) { i.set<std::uint64_t>(HDR(meta_offset), 1u << 30); }},
        {"meta_stride", [](Image &i) { i.set<std::uint32_t>(HDR(meta_stride), 8); }},
        {"data_offset",
         [](Image &i) { i.set<std::uint64_t>(HDR(data_offset), i.layout.data_offset + 4096); }},
        {"data_offset past the end",
         [](Image &i) { i.set<std::uint64_t>(HDR(data_offset), ~std::uint64_t{0} - 4095); }},
        {"buffer_stride", [](Image &i) { i.set<std::uint64_t>(HDR(buffer_stride), 64); }},
        {"file_size field",
         [](Image &i) { i.set<std::uint64_t>(HDR(file_size), i.layout.file_size * 2); }},
        {"consistent header, capacity larger than the file",
         [](Image &i) {
             auto l = detail::compute_layout(100, 4, 300, 16, system_page());
             i.set<std::uint32_t>(HDR(capacity), 100);
             i.set<std::uint64_t>(HDR(slot_offset), l.slot_offset);
             i.set<std::uint64_t>(HDR(ctl_size), l.ctl_size);
             i.set<std::uint64_t>(HDR(control_size), l.control_size);
             i.set<std::uint64_t>(HDR(meta_offset), l.meta_offset);
             i.set<std::uint64_t>(HDR(data_offset), l.data_offset);
             i.set<std::uint64_t>(HDR(file_size), l.file_size);
         }},
    };
    for (const auto &c : cases) {
        Image img = valid_image();
        c.mutate(img);
        expect_refused(img.bytes, Verdict::corrupt, c.what);
    }
}

// Offsets that are consistent with each other only because the arithmetic wraps around 2^64:
// a page size of 2^54 makes capacity x buffer_stride overflow, so a "valid" header describes a
// file the size of its control area. A consumer must call it corrupt, not try to map it.
BIPS_TEST(overflowing_layout_is_refused) {
    const std::string name = unique_name();
    const std::uint64_t page = std::uint64_t{1} << 54;
    ImageSpec s;
    s.capacity = 1024;
    s.max_consumers = 1;
    s.buffer_size = 1;
    s.meta_size = 0;
    s.shape = {1};
    Image img = valid_image(s);
    const detail::Layout l =
        detail::compute_layout(s.capacity, s.max_consumers, s.buffer_size, s.meta_size, page);
    img.set<std::uint64_t>(HDR(page_size), page);
    img.set<std::uint64_t>(HDR(control_size), l.control_size);
    img.set<std::uint64_t>(HDR(meta_offset), l.meta_offset);
    img.set<std::uint32_t>(HDR(meta_stride), static_cast<std::uint32_t>(l.meta_stride));
    img.set<std::uint64_t>(HDR(data_offset), l.data_offset);
    img.set<std::uint64_t>(HDR(buffer_stride), l.buffer_stride);
    img.set<std::uint64_t>(HDR(file_size), l.file_size);
    // The header claims a (sparse) file of l.file_size bytes; make the file that long.
    std::vector<unsigned char> head(
        img.bytes.begin(), img.bytes.begin() + static_cast<std::ptrdiff_t>(sizeof(PoolHeader)));
    write_shm_file(name, head);
    ScopedUnlink cleanup(name);
    REQUIRE(::truncate(shm_path(name).c_str(), static_cast<off_t>(l.file_size)) == 0);
    std::string got;
    try {
        Consumer c(name);
        got = "no exception";
    } catch (const CorruptPool &) {
        got = "CorruptPool";
    } catch (const IncompatiblePool &) {
        got = "IncompatiblePool";
    } catch (const std::exception &e) {
        got = type_name(typeid(e)) + ": " + e.what();
    }
    if (got != "CorruptPool" && got != "IncompatiblePool")
        fail(__FILE__, __LINE__,
             "page_size 2^54 (file_size wraps to " + std::to_string(l.file_size) +
                 "): Consumer threw " + got);
}

BIPS_TEST(unfinished_segments) {
    // Size 0 and nobody creating it: a creator died before sizing it.
    {
        const std::string name = unique_name();
        write_shm_file(name, {});
        ScopedUnlink cleanup(name);
        CHECK_THROWS_AS(Consumer(name), PoolNotFound);
    }
    // Sized, header still all zero (a creator killed before writing it), nobody creating it.
    {
        const std::string name = unique_name();
        write_shm_file(name, std::vector<unsigned char>(valid_image().bytes.size(), 0));
        ScopedUnlink cleanup(name);
        CHECK_THROWS_AS(Consumer(name), PoolNotFound);
        CHECK(remove_stale_pool(name)); // the remains of a pool: removable
        CHECK(!shm_exists(name));
    }
    // Sized but never marked ready, nobody creating it.
    {
        const std::string name = unique_name();
        Image img = valid_image();
        img.set<std::uint32_t>(HDR(ready), 0);
        write_shm_file(name, img.bytes);
        ScopedUnlink cleanup(name);
        CHECK_THROWS_AS(Consumer(name), PoolNotFound);
    }
    // Not ready while someone holds the producer lock: being created. Waited for (about 1 s
    // even when the caller does not wait), then Timeout; never a hang.
    {
        const std::string name = unique_name();
        Image img = valid_image();
        img.set<std::uint32_t>(HDR(ready), 0);
        write_shm_file(name, img.bytes);
        ScopedUnlink cleanup(name);
        FakeProducer fake(name);
        auto t0 = std::chrono::steady_clock::now();
        CHECK_THROWS_AS(Consumer(name), Timeout);
        double waited = seconds_since(t0);
        CHECK(waited >= 0.5);
        CHECK(waited < 3.0 * SLOWDOWN);
    }
}

BIPS_TEST(producer_refuses_to_replace_foreign_files) {
    for (int k = 0; k < 3; ++k) {
        const std::string name = unique_name();
        std::vector<unsigned char> bytes = k == 0   ? random_bytes(4096, 7)
                                           : k == 1 ? std::vector<unsigned char>{'h', 'i', '\n'}
                                                    : std::vector<unsigned char>(100000, 0xff);
        write_shm_file(name, bytes);
        ScopedUnlink cleanup(name);
        CHECK_THROWS_AS(Producer(name, small_pool(2)), CorruptPool);
        CHECK(read_shm_file(name) == bytes); // untouched
    }
}

BIPS_TEST(non_regular_files_are_refused_without_blocking) {
    // A FIFO planted under a pool name: opening it must neither block nor be taken for a pool.
    const std::string name = unique_name();
    REQUIRE(::mkfifo(shm_path(name).c_str(), 0600) == 0);
    ScopedUnlink cleanup(name);
    auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(Consumer(name), CorruptPool);
    CHECK_THROWS_AS(Producer(name, small_pool(2)), CorruptPool);
    CHECK_THROWS_AS(pool_info(name), CorruptPool);
    CHECK_THROWS_AS(remove_stale_pool(name), CorruptPool);
    CHECK(shm_exists(name));
    CHECK(seconds_since(t0) < 1.0 * SLOWDOWN);
}

BIPS_TEST(producer_replaces_dead_or_unfinished_pools) {
    // An empty or zero-filled file (a creator killed before sizing it or before writing the
    // header), a dead pool of another layout version, a truncated pool and a dead valid pool:
    // all are bips leftovers, replaced.
    std::vector<std::vector<unsigned char>> leftovers;
    leftovers.emplace_back();
    leftovers.emplace_back(valid_image().bytes.size(), 0); // sized, header never written
    Image old = valid_image();
    old.set<std::uint32_t>(HDR(layout_version), 2);
    leftovers.push_back(old.bytes);
    Image cut = valid_image();
    cut.bytes.resize(5000);
    leftovers.push_back(cut.bytes);
    leftovers.push_back(valid_image().bytes);
    for (const auto &bytes : leftovers) {
        const std::string name = unique_name();
        write_shm_file(name, bytes);
        {
            Producer prod(name, small_pool(2, 128));
            Consumer cons(name);
            publish_pattern(prod, 1);
            Frame f = cons.receive(1s);
            CHECK_EQ(f.nbytes(), 128u);
            CHECK(has_pattern(f.data(), f.nbytes(), 1));
        }
        CHECK(!shm_exists(name));
    }
}

// Flips random bytes of a valid header: whatever the result, opening it must end in a bips::Error
// (or succeed, for fields that are not validated), never in a crash.
BIPS_TEST(fuzzed_headers_never_crash) {
    std::mt19937 rng(12345);
    const Image base = valid_image();
    const std::size_t header_end = HDR(ready); // the immutable part
    int refused = 0, accepted = 0;
    for (int iter = 0; iter < 150; ++iter) {
        Image img = base;
        int flips = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k)
            img.bytes[rng() % header_end] ^= static_cast<unsigned char>(1 + rng() % 255);
        const std::string name = unique_name();
        write_pool(name, img);
        ScopedUnlink cleanup(name);
        std::optional<FakeProducer> fake;
        if (iter % 2)
            fake.emplace(name); // live: a consumer that accepts the header also attaches
        try {
            Consumer c(name);
            auto f = c.try_receive();
            CHECK(!f.has_value());
            ++accepted;
        } catch (const CorruptPool &) {
            ++refused;
        } catch (const IncompatiblePool &) {
            ++refused;
        } catch (const ProducerGone &) {
            ++accepted; // valid header, no producer
        } catch (const PoolNotFound &) {
            ++refused; // no producer, and the control file is not this pool's (instance id)
        } catch (const std::exception &e) {
            fail(__FILE__, __LINE__,
                 "iteration " + std::to_string(iter) + ": " + type_name(typeid(e)) + ": " +
                     e.what());
        }
    }
    CHECK(refused > 50); // most flips hit validated fields
    CHECK(accepted > 0);
}

// A live pool whose descriptors hold garbage: frames are still confined to their buffers.
BIPS_TEST(garbage_descriptors_stay_in_bounds) {
    const std::string name = unique_name();
    ImageSpec s;
    s.capacity = 8;
    Image img = valid_image(s);
    write_pool(name, img);
    ScopedUnlink cleanup(name);
    FakeProducer fake(name);
    Consumer cons(name);
    const std::uint32_t slot = cons.stats().slot;
    std::mt19937_64 rng(99);
    std::size_t frames = 0;
    std::uint64_t next_seq = 0;
    for (int round = 0; round < 40; ++round) {
        for (std::uint32_t i = 0; i < s.capacity; ++i) {
            const std::size_t d = img.desc(i);
            // Random everything, but queued for our slot (and maybe held by others).
            for (std::size_t off = 8; off < sizeof(FrameDesc); off += 8)
                fake.set<std::uint64_t>(d + off, rng());
            // seq stays plausible (increasing), or consumers rightly refuse the frame.
            fake.set<std::uint64_t>(d + offsetof(FrameDesc, seq), next_seq++);
            if (round % 3 == 0) // sometimes plausible small values
                fake.set<std::uint32_t>(d + offsetof(FrameDesc, ndim),
                                        static_cast<std::uint32_t>(rng() % 10));
            if (round % 5 == 1) { // a zero dimension hiding huge ones (strides would overflow)
                fake.set<std::uint32_t>(d + offsetof(FrameDesc, ndim), 3);
                fake.set<std::int64_t>(d + offsetof(FrameDesc, shape), 0);
                fake.set<std::int64_t>(d + offsetof(FrameDesc, shape) + 8, std::int64_t{1} << 62);
                fake.set<std::int64_t>(d + offsetof(FrameDesc, shape) + 16, std::int64_t{1} << 62);
            }
            fake.set_ctl<std::uint64_t>(img.state(i),
                                        detail::queued_bit(slot) | (rng() & 0xffffff0000000000ULL));
        }
        while (auto f = cons.try_receive()) {
            ++frames;
            CHECK(f->index() < s.capacity);
            CHECK(f->nbytes() <= s.buffer_size);
            CHECK(f->meta_size() <= s.meta_size);
            CHECK(f->ndim() >= 1 && f->ndim() <= MAX_DIMS);
            CHECK(f->dtype().valid());
            std::size_t n = f->dtype().itemsize();
            for (std::size_t k = 0; k < f->ndim(); ++k) {
                CHECK(f->dims()[k] >= 0);
                n *= static_cast<std::size_t>(f->dims()[k]);
            }
            CHECK(n <= s.buffer_size);
            // Touch every byte the frame claims (a read outside the mapping would crash).
            unsigned sum = 0;
            for (std::size_t k = 0; k < std::max(n, f->nbytes()); ++k)
                sum += static_cast<unsigned>(f->data()[k]);
            std::string meta = f->meta();
            CHECK_EQ(meta.size(), f->meta_size());
            (void)sum;
        }
    }
    CHECK(frames >= 40u * s.capacity / 2);
}

// A control file left without its pool file (a producer killed between removing the two): listed
// with an error, removed by remove_stale_pool (`bips clean`); a foreign file there is left alone.
BIPS_TEST(orphan_control_files_are_listed_and_removable) {
    const std::string name = unique_name();
    ScopedUnlink cleanup(name);
    Image img = valid_image();
    int fd = ::open(ctl_path(name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, img.ctl.data(), img.ctl.size()) == static_cast<ssize_t>(img.ctl.size()));
    ::close(fd);
    bool listed = false;
    for (const auto &p : list_pools())
        listed |= p.name == name && !p.error.empty();
    CHECK(listed);
    CHECK_THROWS_AS(Consumer(name), PoolNotFound);
    CHECK(remove_stale_pool(name));
    CHECK(!ctl_exists(name));

    fd = ::open(ctl_path(name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "not bips", 8) == 8);
    ::close(fd);
    CHECK_THROWS_AS(remove_stale_pool(name), CorruptPool);
    CHECK(ctl_exists(name));
    // A producer takes the name over: the control file of a dead instance (or a stranger's
    // file of our own uid) under its control name is replaced.
    {
        Producer prod(name, small_pool(2));
        Consumer cons(name);
        publish_pattern(prod, 3);
        Frame f = cons.receive(1s);
        CHECK(has_pattern(f.data(), f.nbytes(), 3));
    }
    CHECK(!ctl_exists(name));
}
