// SPDX-License-Identifier: Apache-2.0
#include "segment.hpp"

#include <bips/errors.hpp>
#include <bips/pool.hpp>

#include <chrono>
#include <climits>
#include <mutex>
#include <pthread.h>
#include <set>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

namespace bips::detail {

namespace {

std::string pool_path(const std::string &name) { return "/dev/shm/bips." + name; }

// Checks creation options and turns them into Params; throws InvalidArgument.
Params make_params(const PoolOptions &o) {
    Params p;
    if (o.capacity < 1 || o.capacity > MAX_CAPACITY)
        throw InvalidArgument("capacity must be 1 to " + std::to_string(MAX_CAPACITY) + ", got " +
                              std::to_string(o.capacity));
    if (o.max_consumers < 1 || o.max_consumers > MAX_CONSUMERS)
        throw InvalidArgument("max_consumers must be 1 to " + std::to_string(MAX_CONSUMERS) +
                              ", got " + std::to_string(o.max_consumers));
    if (!o.dtype.valid())
        throw InvalidArgument("invalid dtype");
    if (o.shape.size() > MAX_DIMS)
        throw InvalidArgument("shape has " + std::to_string(o.shape.size()) +
                              " dimensions; at most " + std::to_string(MAX_DIMS));
    if (o.meta_size > MAX_META_SIZE)
        throw InvalidArgument("meta_size must be at most " + std::to_string(MAX_META_SIZE));
    if (o.policy != Policy::block && o.policy != Policy::drop_oldest)
        throw InvalidArgument("unknown policy");
    if ((o.mode & ~mode_t{0777}) != 0 || (o.mode & 0600) != 0600)
        throw InvalidArgument("mode must be a permission mode that includes 0600 (e.g. 0600, 0660, 0666)");
    std::size_t need = o.dtype.itemsize();
    for (auto d : o.shape) {
        if (d < 0)
            throw InvalidArgument("shape dimensions must be >= 0");
        if (d > 0 && need > MAX_BUFFER_SIZE / static_cast<std::size_t>(d))
            throw InvalidArgument("shape is too large");
        need *= static_cast<std::size_t>(d);
    }
    std::size_t size = o.buffer_size;
    if (size == 0) {
        if (o.shape.empty())
            throw InvalidArgument("give a shape or a buffer_size");
        size = need;
    } else if (!o.shape.empty() && need > size) {
        throw InvalidArgument("shape and dtype need " + std::to_string(need) +
                              " bytes but buffer_size is " + std::to_string(size));
    }
    if (size == 0 || size > MAX_BUFFER_SIZE)
        throw InvalidArgument("buffer_size must be 1 byte to 1 TiB");
    p.capacity = o.capacity;
    p.max_consumers = o.max_consumers;
    p.buffer_size = size;
    p.meta_size = o.meta_size;
    p.policy = o.policy;
    p.mode = o.mode;
    p.dtype = o.dtype;
    p.ndim = static_cast<std::uint32_t>(o.shape.size());
    for (std::size_t i = 0; i < o.shape.size(); ++i)
        p.shape[i] = o.shape[i];
    p.layout = compute_layout(p.capacity, p.max_consumers, p.buffer_size, p.meta_size,
                              posix::page_size());
    return p;
}

[[noreturn]] void corrupt(const std::string &name, const std::string &why) {
    throw CorruptPool("pool '" + name + "' (" + pool_path(name) + ") is not a valid bips pool: " +
                      why);
}

// Validates an initialised header against the file it came from and returns Params.
Params validate_header(const std::string &name, const PoolHeader &h, std::size_t file_size) {
    Params p;
    if (h.header_size != sizeof(PoolHeader))
        throw IncompatiblePool("pool '" + name + "' has a header of " +
                               std::to_string(h.header_size) + " bytes, this bips expects " +
                               std::to_string(sizeof(PoolHeader)));
    if (h.capacity < 1 || h.capacity > MAX_CAPACITY)
        corrupt(name, "capacity " + std::to_string(h.capacity) + " out of range");
    if (h.max_consumers < 1 || h.max_consumers > MAX_CONSUMERS)
        corrupt(name, "max_consumers out of range");
    if (h.buffer_size < 1 || h.buffer_size > MAX_BUFFER_SIZE)
        corrupt(name, "buffer_size out of range");
    if (h.meta_size > MAX_META_SIZE)
        corrupt(name, "meta_size out of range");
    if (h.policy > 1)
        corrupt(name, "unknown policy");
    if (h.ndim > MAX_DIMS)
        corrupt(name, "ndim out of range");
    DType dt{h.dtype_code, h.dtype_bits};
    if (!dt.valid())
        corrupt(name, "invalid dtype");
    std::size_t need = dt.itemsize();
    for (std::uint32_t i = 0; i < h.ndim; ++i) {
        if (h.shape[i] < 0 || (h.shape[i] > 0 && need > h.buffer_size / static_cast<std::size_t>(h.shape[i])))
            corrupt(name, "default shape does not fit the buffers");
        need *= static_cast<std::size_t>(h.shape[i]);
    }
    std::size_t page = h.page_size;
    if (page < 4096 || page > (std::size_t{1} << 30) || (page & (page - 1)) != 0 ||
        page % posix::page_size() != 0)
        throw IncompatiblePool("pool '" + name + "' uses page size " + std::to_string(page) +
                               ", not usable with this system's " +
                               std::to_string(posix::page_size()));
    Layout l = compute_layout(h.capacity, h.max_consumers, h.buffer_size, h.meta_size, page);
    if (h.control_size != l.control_size || h.desc_offset != l.desc_offset ||
        h.slot_offset != l.slot_offset || h.meta_offset != l.meta_offset ||
        h.meta_stride != l.meta_stride || h.data_offset != l.data_offset ||
        h.buffer_stride != l.buffer_stride || h.file_size != l.file_size)
        corrupt(name, "section offsets do not match its parameters");
    if (file_size != l.file_size)
        corrupt(name, "file is " + std::to_string(file_size) + " bytes, its header says " +
                          std::to_string(l.file_size) + " (truncated?)");
    p.capacity = h.capacity;
    p.max_consumers = h.max_consumers;
    p.buffer_size = h.buffer_size;
    p.meta_size = h.meta_size;
    p.policy = static_cast<Policy>(h.policy);
    p.mode = h.mode & 0777;
    p.ndim = h.ndim;
    for (std::uint32_t i = 0; i < h.ndim; ++i)
        p.shape[i] = h.shape[i];
    p.dtype = dt;
    p.layout = l;
    return p;
}

bool same_file(const struct stat &a, const struct stat &b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// True if the name `shm` refers to the file `st` describes right now.
bool name_refers_to(const std::string &shm, const struct stat &st) {
    posix::File again = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT, EACCES);
    return again && same_file(posix::fstat_file(again.get(), shm), st);
}

// Reads the first bytes of a file without mapping it.
bool read_exact(int fd, void *out, std::size_t n, off_t off) {
    auto r = posix::retry_eintr([&] { return ::pread(fd, out, n, off); });
    return r == static_cast<ssize_t>(n);
}

enum class FileKind { empty, zeroed, bips, foreign };

// What a file under a pool name is, from its first bytes. `zeroed` (sized, header still all
// zero) is what a creator killed before writing the header leaves behind.
FileKind classify(int fd, const struct stat &st) {
    if (!S_ISREG(st.st_mode))
        return FileKind::foreign;
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0)
        return FileKind::empty;
    char head[sizeof(PoolHeader)] = {};
    std::size_t n = std::min(size, sizeof(head));
    if (!read_exact(fd, head, n, 0))
        return FileKind::foreign;
    if (n >= sizeof(MAGIC) && std::memcmp(head, MAGIC, sizeof(MAGIC)) == 0)
        return FileKind::bips;
    for (std::size_t i = 0; i < n; ++i)
        if (head[i] != 0)
            return FileKind::foreign;
    return FileKind::zeroed;
}

// Unlinks `shm` if `fd` is a bips file (or the remains of one) that no process uses, holding
// its producer lock meanwhile so that no producer can start on it. True if removed.
bool unlink_if_unused(int fd, const std::string &shm) {
    bool removed = false;
    try {
        if (!posix::ofd_try_lock(fd, LOCK_PRODUCER))
            return false; // a producer lives (or another cleaner is at work)
    } catch (...) {
        return false;
    }
    try {
        struct stat st = posix::fstat_file(fd, shm);
        bool ours = classify(fd, st) != FileKind::foreign;
        bool anyone = false;
        for (std::uint32_t s = 0; ours && s < MAX_CONSUMERS && !anyone; ++s)
            anyone = posix::ofd_is_locked(fd, LOCK_SLOT_BASE + static_cast<off_t>(s));
        if (ours && !anyone) {
            if (name_refers_to(shm, st)) {
                ::shm_unlink(shm.c_str());
                removed = true;
            }
        }
    } catch (...) {
    }
    posix::ofd_unlock(fd, LOCK_PRODUCER);
    return removed;
}

std::uint64_t random_id() {
    std::random_device rd;
    return (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(posix::monotonic_ns());
}

// Every segment descriptor of this process. A child made by fork() must not keep our OFD
// locks alive (they belong to the open file description, which fork shares): in the child each
// one is replaced by /dev/null, so a parent that dies is seen dead even while its children run.
struct ForkGuard {
    static inline std::atomic<std::uint64_t> fork_generation{0};
    std::mutex mutex;
    std::set<int> fds;

    ForkGuard() { ::pthread_atfork(nullptr, nullptr, &ForkGuard::in_child); }
    static ForkGuard &get() {
        static ForkGuard *g = new ForkGuard(); // never destroyed: used from atfork handlers
        return *g;
    }
    static void in_child() {
        fork_generation.fetch_add(1, std::memory_order_relaxed);
        ForkGuard &g = get();
        // The fork happened in some thread; the mutex may be held by a thread that does not
        // exist in the child, so build a fresh one instead of locking it.
        new (&g.mutex) std::mutex();
        int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0)
            return;
        for (int fd : g.fds)
            ::dup3(null_fd, fd, O_CLOEXEC);
        ::close(null_fd);
    }
    void add(int fd) {
        std::lock_guard<std::mutex> lock(mutex);
        fds.insert(fd);
    }
    void remove(int fd) {
        std::lock_guard<std::mutex> lock(mutex);
        fds.erase(fd);
    }
};

} // namespace

Segment::~Segment() {
    if (m_file)
        ForkGuard::get().remove(m_file.get());
}

void Segment::adopt(posix::File f) {
    ForkGuard::get().add(f.get());
    m_fork_generation = ForkGuard::fork_generation.load(std::memory_order_relaxed);
    m_file = std::move(f);
}

bool Segment::inherited() const noexcept {
    return ForkGuard::fork_generation.load(std::memory_order_relaxed) != m_fork_generation;
}

void Segment::check_not_inherited() const {
    if (inherited())
        throw InvalidArgument("pool '" + m_name +
                              "': this handle was opened by the parent process before fork(); "
                              "open a new one in the child");
}

std::string shm_name_for(const std::string &name) {
    validate_name(name);
    return "/bips." + name;
}

std::shared_ptr<Segment> Segment::create(const std::string &name, const PoolOptions &options) {
    std::string shm = shm_name_for(name);
    Params p = make_params(options);
    for (int attempt = 0; attempt < 100; ++attempt) {
        posix::File f = posix::shm_open_file(shm, O_RDWR | O_CREAT | O_EXCL, p.mode, EEXIST);
        if (f) {
            // Lock before sizing: anyone who opens it meanwhile sees a live creator.
            if (!posix::ofd_try_lock(f.get(), LOCK_PRODUCER))
                continue; // someone judged it stale and will unlink it; start again
            {
                // Between our O_EXCL create and our lock another producer may have taken the
                // empty file for a dead one and replaced it. Holding the lock, the name can no
                // longer change under us, so one check settles it.
                if (!name_refers_to(shm, posix::fstat_file(f.get(), shm)))
                    continue;
            }
            std::shared_ptr<Segment> seg(new Segment());
            seg->m_name = name;
            seg->m_shm_name = shm;
            seg->m_params = p; // desc(), slot(), data() use the layout from here on
            if (::fchmod(f.get(), p.mode) != 0) // the umask must not narrow what was asked for
                posix::throw_errno("fchmod(" + shm + ")");
            const auto &l = p.layout;
            // Reserve the memory now: a full /dev/shm is an error here, not a SIGBUS later.
            int err = posix::retry_eintr([&] {
                int r = ::posix_fallocate(f.get(), 0, static_cast<off_t>(l.file_size));
                errno = r;
                return r == 0 ? 0 : -1;
            });
            if (err != 0 && errno != EOPNOTSUPP && errno != EINVAL) {
                int e = errno;
                ::shm_unlink(shm.c_str());
                posix::throw_errno(e, "posix_fallocate(" + shm + ", " + std::to_string(l.file_size) + " bytes)");
            }
            if (err != 0 && ::ftruncate(f.get(), static_cast<off_t>(l.file_size)) != 0) {
                int e = errno;
                ::shm_unlink(shm.c_str());
                posix::throw_errno(e, "ftruncate(" + shm + ")");
            }
            seg->m_control = posix::Mapping(f.get(), l.control_size, 0, PROT_READ | PROT_WRITE, shm);
            seg->m_payload = posix::Mapping(f.get(), l.file_size - l.control_size,
                                            static_cast<off_t>(l.control_size),
                                            PROT_READ | PROT_WRITE, shm);
            PoolHeader *h = seg->header();
            std::memcpy(h->magic, MAGIC, sizeof(MAGIC));
            h->layout_version = LAYOUT_VERSION;
            h->header_size = sizeof(PoolHeader);
            h->file_size = l.file_size;
            h->page_size = l.page_size;
            h->control_size = l.control_size;
            h->desc_offset = l.desc_offset;
            h->slot_offset = l.slot_offset;
            h->meta_offset = l.meta_offset;
            h->data_offset = l.data_offset;
            h->buffer_size = p.buffer_size;
            h->buffer_stride = l.buffer_stride;
            h->meta_size = static_cast<std::uint32_t>(p.meta_size);
            h->meta_stride = static_cast<std::uint32_t>(l.meta_stride);
            h->capacity = p.capacity;
            h->max_consumers = p.max_consumers;
            h->policy = static_cast<std::uint32_t>(p.policy);
            h->mode = static_cast<std::uint32_t>(p.mode);
            h->ndim = p.ndim;
            h->dtype_code = p.dtype.code;
            h->dtype_bits = p.dtype.bits;
            for (std::uint32_t i = 0; i < p.ndim; ++i)
                h->shape[i] = p.shape[i];
            h->instance_id = random_id();
            h->created_ns = posix::realtime_ns();
            h->producer_pid = static_cast<std::int32_t>(::getpid());
            std::strncpy(h->name, name.c_str(), sizeof(h->name) - 1);
            for (std::uint32_t i = 0; i < p.capacity; ++i) {
                BufferDesc *d = seg->desc(i);
                d->ndim = p.ndim;
                d->dtype_code = p.dtype.code;
                d->dtype_bits = p.dtype.bits;
                for (std::uint32_t k = 0; k < p.ndim; ++k)
                    d->shape[k] = p.shape[k];
            }
            h->ready.store(1, std::memory_order_release);
            seg->m_stat = posix::fstat_file(f.get(), shm);
            seg->adopt(std::move(f));
            return seg;
        }

        // The name exists. Replace it only if its producer is gone and it is a bips pool.
        posix::File old = posix::shm_open_file(shm, O_RDWR, 0, ENOENT);
        if (!old)
            continue;
        bool locked = false;
        // A consumer cleaning up an abandoned pool holds the producer lock for microseconds.
        for (int i = 0; i < 50 && !(locked = posix::ofd_try_lock(old.get(), LOCK_PRODUCER)); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        if (!locked)
            throw PoolBusy("pool '" + name + "' already has a live producer");
        struct stat st = posix::fstat_file(old.get(), shm);
        if (classify(old.get(), st) == FileKind::foreign)
            throw CorruptPool(pool_path(name) +
                              " exists and is not a bips pool; remove it by hand if it is yours");
        if (name_refers_to(shm, st))
            ::shm_unlink(shm.c_str());
        // Closing `old` drops its producer lock; loop to create a fresh segment.
    }
    throw Error("could not create pool '" + name + "': the name kept changing under us");
}

std::shared_ptr<Segment> Segment::open(const std::string &name, Access access, OpenStatus *status) {
    std::string shm = shm_name_for(name);
    int flags = access == Access::inspect ? O_RDONLY : O_RDWR;
    posix::File f = posix::shm_open_file(shm, flags, 0, ENOENT);
    if (!f) {
        *status = OpenStatus::not_found;
        return nullptr;
    }
    struct stat st = posix::fstat_file(f.get(), shm);
    if (!S_ISREG(st.st_mode))
        corrupt(name, "not a regular file");
    auto size = static_cast<std::size_t>(st.st_size);
    auto unready = [&]() -> std::shared_ptr<Segment> {
        *status = posix::ofd_is_locked(f.get(), LOCK_PRODUCER) ? OpenStatus::initializing
                                                               : OpenStatus::stale;
        return nullptr;
    };
    if (size == 0)
        return unready();
    if (size < sizeof(PoolHeader)) {
        char magic[sizeof(MAGIC)] = {};
        if (size >= sizeof(MAGIC) && read_exact(f.get(), magic, sizeof(magic), 0) &&
            std::memcmp(magic, MAGIC, sizeof(MAGIC)) == 0)
            corrupt(name, "truncated to " + std::to_string(size) + " bytes");
        corrupt(name, "too small (" + std::to_string(size) + " bytes) and no bips magic");
    }
    // Map just the header to validate it before trusting any size it gives.
    std::size_t head_len = align_up(sizeof(PoolHeader), posix::page_size());
    if (head_len > size)
        head_len = size;
    Params p;
    {
        posix::Mapping head(f.get(), head_len, 0, PROT_READ, shm);
        const auto *live = reinterpret_cast<const PoolHeader *>(head.data());
        // Validate a private copy: another process may write the file while we check it.
        alignas(PoolHeader) unsigned char copy[sizeof(PoolHeader)];
        const bool is_ready = live->ready.load(std::memory_order_acquire) == 1;
        std::memcpy(copy, head.data(), sizeof(PoolHeader));
        const auto *h = reinterpret_cast<const PoolHeader *>(copy);
        if (std::memcmp(h->magic, MAGIC, sizeof(MAGIC)) != 0) {
            if (classify(f.get(), st) == FileKind::zeroed)
                return unready(); // sized but not written yet: being created, or creator died
            corrupt(name, "bad magic");
        }
        if (h->layout_version != LAYOUT_VERSION)
            throw IncompatiblePool("pool '" + name + "' has layout version " +
                                   std::to_string(h->layout_version) + "; this bips reads version " +
                                   std::to_string(LAYOUT_VERSION) + " (upgrade or restart the producer)");
        // ready is an atomic in the header; read it through a const atomic view.
        if (!is_ready)
            return unready();
        p = validate_header(name, *h, size);
    }
    std::shared_ptr<Segment> seg(new Segment());
    seg->m_name = name;
    seg->m_shm_name = shm;
    seg->m_stat = st;
    int ctl_prot = access == Access::inspect ? PROT_READ : PROT_READ | PROT_WRITE;
    int data_prot = access == Access::producer ? PROT_READ | PROT_WRITE : PROT_READ;
    seg->m_control = posix::Mapping(f.get(), p.layout.control_size, 0, ctl_prot, shm);
    seg->m_payload = posix::Mapping(f.get(), p.layout.file_size - p.layout.control_size,
                                    static_cast<off_t>(p.layout.control_size), data_prot, shm);
    seg->m_params = p;
    seg->adopt(std::move(f));
    *status = OpenStatus::ok;
    return seg;
}

bool Segment::producer_alive() const { return posix::ofd_is_locked(fd(), LOCK_PRODUCER); }

bool Segment::slot_alive(std::uint32_t s) const {
    return posix::ofd_is_locked(fd(), LOCK_SLOT_BASE + static_cast<off_t>(s));
}

bool Segment::lock_control(Duration timeout) const {
    auto deadline = Clock::now() + timeout;
    auto pause = std::chrono::microseconds(20);
    for (;;) {
        if (posix::ofd_try_lock(fd(), LOCK_CONTROL))
            return true;
        if (Clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(pause);
        if (pause < std::chrono::milliseconds(2))
            pause *= 2;
    }
}

void Segment::unlock_control() const noexcept { posix::ofd_unlock(fd(), LOCK_CONTROL); }

void Segment::clear_slot(std::uint32_t s) noexcept {
    if (inherited())
        return;
    PoolHeader *h = header();
    const std::uint64_t bit = queued_bit(s);
    h->active.fetch_and(~bit, std::memory_order_seq_cst);
    h->sleepers.fetch_and(~bit, std::memory_order_seq_cst);
    const std::uint64_t both = queued_bit(s) | held_bit(s);
    for (std::uint32_t i = 0; i < m_params.capacity; ++i)
        desc(i)->state.fetch_and(~both, std::memory_order_seq_cst);
    // Last: a process killed before this point leaves the slot attached, and the next sweep
    // finishes the job.
    h->attached.fetch_and(~bit, std::memory_order_seq_cst);
    wake_producer();
}

unsigned Segment::sweep_dead_locked(std::uint32_t skip) {
    unsigned n = 0;
    std::uint64_t attached = header()->attached.load(std::memory_order_seq_cst);
    for (std::uint32_t s = 0; s < m_params.max_consumers; ++s) {
        if (s == skip || !(attached & queued_bit(s)))
            continue;
        if (!slot_alive(s)) {
            clear_slot(s);
            ++n;
        }
    }
    return n;
}

unsigned Segment::sweep_dead(Duration timeout, std::uint32_t skip) {
    if (!lock_control(timeout))
        return 0;
    unsigned n = 0;
    try {
        n = sweep_dead_locked(skip);
    } catch (...) {
        unlock_control();
        throw;
    }
    unlock_control();
    return n;
}

void Segment::wake_producer() const noexcept {
    PoolHeader *h = header();
    if (h->producer_sleeping.load(std::memory_order_seq_cst) != 0) {
        h->free_futex.fetch_add(1, std::memory_order_seq_cst);
        posix::futex_wake(&h->free_futex, INT_MAX);
    }
}

void Segment::buffer_freed() const noexcept {
    PoolHeader *h = header();
    // Only the free that uses up the credit wakes; later ones find it spent (<= 0).
    if (h->producer_sleeping.load(std::memory_order_seq_cst) != 0 &&
        h->free_credit.fetch_sub(1, std::memory_order_seq_cst) == 1) {
        h->free_futex.fetch_add(1, std::memory_order_seq_cst);
        posix::futex_wake(&h->free_futex, INT_MAX);
    }
}

void Segment::wake_consumers() const noexcept {
    PoolHeader *h = header();
    h->publish_futex.fetch_add(1, std::memory_order_seq_cst);
    posix::futex_wake(&h->publish_futex, INT_MAX);
}

bool Segment::name_refers_to_me() const {
    return name_refers_to(m_shm_name, m_stat);
}

void Segment::unlink_if_mine() const noexcept {
    try {
        if (name_refers_to_me())
            ::shm_unlink(m_shm_name.c_str());
    } catch (...) {
    }
}

bool Segment::unlink_if_abandoned() const noexcept {
    return !inherited() && unlink_if_unused(fd(), m_shm_name);
}

bool remove_if_unused(const std::string &name) {
    std::string shm = shm_name_for(name);
    posix::File f = posix::shm_open_file(shm, O_RDWR, 0, ENOENT);
    if (!f)
        return false;
    if (classify(f.get(), posix::fstat_file(f.get(), shm)) == FileKind::foreign)
        throw CorruptPool(pool_path(name) + " is not a bips pool; left alone");
    return unlink_if_unused(f.get(), shm);
}

std::uint32_t Segment::count_free() const noexcept {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < m_params.capacity; ++i)
        n += desc(i)->state.load(std::memory_order_acquire) == 0;
    return n;
}

} // namespace bips::detail
