// SPDX-License-Identifier: Apache-2.0
#include "segment.hpp"

#include <bips/errors.hpp>
#include <bips/pool.hpp>

#include <chrono>
#include <climits>
#include <cstddef>
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
    for (auto d : o.shape)
        if (d < 0)
            throw InvalidArgument("shape dimensions must be >= 0");
    const auto fits = frame_bytes(o.shape.data(), o.shape.size(), o.dtype, MAX_BUFFER_SIZE);
    if (!fits)
        throw InvalidArgument("shape is too large");
    const std::size_t need = *fits;
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

std::string uid_text(uid_t uid) { return "uid " + std::to_string(uid); }

// Another user's file under our name: in sticky /dev/shm only its owner (or root) may remove it.
[[noreturn]] void squatted(const std::string &name, const std::string &path, const struct stat &st) {
    throw std::system_error(EPERM, std::generic_category(),
                            "pool '" + name + "': " + path + " belongs to " + uid_text(st.st_uid) +
                                ", and /dev/shm lets only its owner remove it; as that user or "
                                "root run `bips clean " + name + "` (or rm " + path +
                                "), or pick another pool name");
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
    if (!frame_bytes(h.shape, h.ndim, dt, h.buffer_size))
        corrupt(name, "default shape does not fit the buffers");
    std::size_t page = h.page_size;
    if (page < 4096 || page > (std::size_t{1} << 30) || (page & (page - 1)) != 0 ||
        page % posix::page_size() != 0)
        throw IncompatiblePool("pool '" + name + "' uses page size " + std::to_string(page) +
                               ", not usable with this system's " +
                               std::to_string(posix::page_size()));
    Layout l = compute_layout(h.capacity, h.max_consumers, h.buffer_size, h.meta_size, page);
    if (h.control_size != l.control_size || h.desc_offset != l.desc_offset ||
        h.slot_offset != l.slot_offset || h.ctl_size != l.ctl_size || h.meta_offset != l.meta_offset ||
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

// Unlinks `shm` if it still names the file `st` describes. Best effort.
void unlink_if_same(const std::string &shm, const struct stat &st) noexcept {
    try {
        if (name_refers_to(shm, st))
            ::shm_unlink(shm.c_str());
    } catch (...) {
    }
}

// Reads bytes of a file without mapping it.
bool read_exact(int fd, void *out, std::size_t n, off_t off) {
    auto r = posix::retry_eintr([&] { return ::pread(fd, out, n, off); });
    return r == static_cast<ssize_t>(n);
}

enum class FileKind { empty, zeroed, bips, foreign };

// What a file under a pool name is, from its first bytes. `zeroed` (sized, header still all
// zero) is what a creator killed before writing the header leaves behind.
FileKind classify(int fd, const struct stat &st, const char (&magic)[8]) {
    if (!S_ISREG(st.st_mode))
        return FileKind::foreign;
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0)
        return FileKind::empty;
    char head[sizeof(PoolHeader)] = {};
    std::size_t n = std::min(size, sizeof(head));
    if (!read_exact(fd, head, n, 0))
        return FileKind::foreign;
    if (n >= sizeof(magic) && std::memcmp(head, magic, sizeof(magic)) == 0)
        return FileKind::bips;
    for (std::size_t i = 0; i < n; ++i)
        if (head[i] != 0)
            return FileKind::foreign;
    return FileKind::zeroed;
}

// Removing a name is "check that it refers to the file we looked at, then unlink", which is
// only safe while nobody else removes or replaces it: every party that removes a pool's names
// (cleaners, a producer taking over a dead pool, a producer replacing a dead control file)
// holds flock(LOCK_EX) on the file it is about to remove meanwhile. flock needs only read
// access, and is independent of the OFD locks that say who is alive.
class NameGuard {
public:
    explicit NameGuard(int fd) : m_fd(fd), m_held(posix::flock_try_exclusive(fd)) {}
    NameGuard(const NameGuard &) = delete;
    NameGuard &operator=(const NameGuard &) = delete;
    ~NameGuard() {
        if (m_held)
            posix::flock_unlock(m_fd);
    }
    /// Waits up to `tries` x 2 ms for it (a cleaner holds it for microseconds).
    bool wait(int tries) {
        for (int i = 0; !m_held && i < tries; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            m_held = posix::flock_try_exclusive(m_fd);
        }
        return m_held;
    }
    explicit operator bool() const noexcept { return m_held; }

private:
    int m_fd;
    bool m_held;
};

// Unlinks pool `name` (both files) if its pool file `fd` is a bips file, or the remains of
// one, that no process uses. True if removed.
bool unlink_if_unused(int fd, const std::string &name) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    bool removed = false;
    try {
        NameGuard guard(fd);
        if (!guard || posix::ofd_is_locked(fd, LOCK_PRODUCER))
            return false; // another cleaner is at work, or a producer lives (or is creating it)
        struct stat st = posix::fstat_file(fd, shm);
        bool anyone = classify(fd, st, MAGIC) == FileKind::foreign;
        // Consumers hold their slot locks on the control file.
        posix::File ctl = posix::shm_open_file(ctl_shm, O_RDONLY, 0, ENOENT, EACCES);
        struct stat ctl_st{};
        if (ctl) {
            ctl_st = posix::fstat_file(ctl.get(), ctl_shm);
            for (std::uint32_t s = 0; s < MAX_CONSUMERS && !anyone; ++s)
                anyone = posix::ofd_is_locked(ctl.get(), LOCK_SLOT_BASE + static_cast<off_t>(s));
        }
        if (!anyone && name_refers_to(shm, st)) {
            // The control file first, while the pool file still holds the name: no producer
            // can make a new control file before the pool name is free, and freeing it (a
            // takeover) needs the guard we hold.
            if (ctl && ctl_st.st_uid == st.st_uid)
                unlink_if_same(ctl_shm, ctl_st);
            removed = ::shm_unlink(shm.c_str()) == 0;
        }
    } catch (...) {
    }
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
    if (m_ctl_file)
        ForkGuard::get().remove(m_ctl_file.get());
}

void Segment::adopt(posix::File f, posix::File ctl) {
    ForkGuard::get().add(f.get());
    ForkGuard::get().add(ctl.get());
    m_fork_generation = ForkGuard::fork_generation.load(std::memory_order_relaxed);
    m_file = std::move(f);
    m_ctl_file = std::move(ctl);
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

void Segment::throw_lost() const {
    throw CorruptPool("pool '" + m_name + "': another process truncated its files (" +
                          pool_path(m_name) + "); nothing written or read since reached anyone. "
                          "Close this handle; a new producer re-creates the pool");
}

bool Segment::restore_headers() noexcept {
    if (!m_header_image || inherited() || lost())
        return false;
    bool restored = false;
    auto *h = reinterpret_cast<unsigned char *>(header());
    if (std::memcmp(h, m_header_image.get(), offsetof(PoolHeader, ready)) != 0) {
        std::memcpy(h, m_header_image.get(), offsetof(PoolHeader, ready));
        restored = true;
    }
    if (header()->ready.load(std::memory_order_relaxed) != 1) {
        header()->ready.store(1, std::memory_order_release);
        restored = true;
    }
    auto *c = reinterpret_cast<unsigned char *>(ctl());
    if (std::memcmp(c, m_ctl_header_image.get(), offsetof(ControlHeader, active)) != 0) {
        std::memcpy(c, m_ctl_header_image.get(), offsetof(ControlHeader, active));
        restored = true;
    }
    return restored;
}

std::string shm_name_for(const std::string &name) {
    validate_name(name);
    return "/bips." + name;
}

std::string ctl_shm_name_for(const std::string &name) { return shm_name_for(name) + CTL_SUFFIX; }

namespace {

// Sizes a fresh file. A full /dev/shm is an error here, not a SIGBUS later.
void size_file(int fd, std::size_t size, const std::string &shm) {
    int err = posix::retry_eintr([&] {
        int r = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
        errno = r;
        return r == 0 ? 0 : -1;
    });
    if (err != 0 && errno != EOPNOTSUPP && errno != EINVAL)
        posix::throw_errno("posix_fallocate(" + shm + ", " + std::to_string(size) + " bytes)");
    if (err != 0 && ::ftruncate(fd, static_cast<off_t>(size)) != 0)
        posix::throw_errno("ftruncate(" + shm + ")");
}

struct stat stat_path(const std::string &shm) {
    struct stat st{};
    if (::stat(("/dev/shm" + shm).c_str(), &st) != 0)
        st.st_uid = static_cast<uid_t>(-1);
    return st;
}

bool may_remove(const struct stat &st) { return ::geteuid() == 0 || st.st_uid == ::geteuid(); }

// A fresh control file for a pool whose name (and producer lock) we hold: any file still under
// the control name belongs to a dead instance.
posix::File create_ctl(const std::string &name, const std::string &ctl_shm, mode_t mode) {
    for (int attempt = 0; attempt < 10; ++attempt) {
        posix::File c = posix::shm_open_file(ctl_shm, O_RDWR | O_CREAT | O_EXCL, mode, EEXIST);
        if (c) {
            if (::fchmod(c.get(), mode) != 0) // the umask must not narrow what was asked for
                posix::throw_errno("fchmod(" + ctl_shm + ")");
            return c;
        }
        posix::File old = posix::shm_open_file(ctl_shm, O_RDONLY, 0, ENOENT, EACCES);
        if (!old) {
            if (errno == EACCES)
                squatted(name, "/dev/shm" + ctl_shm, stat_path(ctl_shm));
            continue;
        }
        NameGuard guard(old.get());
        if (!guard.wait(50))
            continue;
        const struct stat st = posix::fstat_file(old.get(), ctl_shm);
        if (!may_remove(st))
            squatted(name, "/dev/shm" + ctl_shm, st);
        if (name_refers_to(ctl_shm, st) && ::shm_unlink(ctl_shm.c_str()) != 0 && errno == EPERM)
            squatted(name, "/dev/shm" + ctl_shm, st);
    }
    throw Error("could not create /dev/shm" + ctl_shm + ": the name kept changing under us");
}

} // namespace

namespace {

// An unnamed file in /dev/shm (O_TMPFILE): it gets its name only once it is locked and sized,
// so no opener ever sees a pool file that nobody holds. Empty when the kernel or file system
// cannot do it (the caller then creates the name with O_EXCL).
posix::File unnamed_file(mode_t mode) {
    int fd = posix::retry_eintr(
        [&] { return ::open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, mode); });
    return posix::File{fd}; // -1 on failure: EOPNOTSUPP, EISDIR (no O_TMPFILE), EINVAL...
}

enum class LinkResult { linked, exists, unsupported };

// Gives the unnamed file `fd` the name `shm`, atomically, never replacing anything.
LinkResult link_name(int fd, const std::string &shm) {
    const std::string path = "/dev/shm" + shm;
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works for everyone where /proc is.
    if (::linkat(fd, "", AT_FDCWD, path.c_str(), AT_EMPTY_PATH) == 0)
        return LinkResult::linked;
    if (errno == EEXIST)
        return LinkResult::exists;
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0)
        return LinkResult::linked;
    if (errno == EEXIST)
        return LinkResult::exists;
    return LinkResult::unsupported;
}

} // namespace

std::shared_ptr<Segment> Segment::create(const std::string &name, const PoolOptions &options) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    Params p = make_params(options);
    // Nobody writes the pool file but the producer, through the descriptor it creates it with:
    // no write bit at all, so that not even a careless process of the same user opens it for
    // writing (only root, or one that chmods it first, could).
    const mode_t pool_mode = p.mode & ~mode_t{0222};
    const auto &l = p.layout;
    std::shared_ptr<Segment> seg(new Segment());
    seg->m_name = name;
    seg->m_shm_name = shm;
    seg->m_ctl_shm_name = ctl_shm;
    seg->m_params = p; // desc(), slot(), data() use the layout from here on

    // Sizes, maps and fills the pool file, which we hold locked; `ready` stays 0.
    auto prepare = [&](int fd) {
        if (::fchmod(fd, pool_mode) != 0) // the umask must not narrow what was asked for
            posix::throw_errno("fchmod(" + shm + ")");
        size_file(fd, l.file_size, shm);
        seg->m_head = posix::Mapping(fd, l.control_size, 0, PROT_READ | PROT_WRITE, shm);
        seg->m_payload = posix::Mapping(fd, l.file_size - l.control_size,
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
        h->ctl_size = l.ctl_size;
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
        seg->m_instance_id = random_id();
        h->instance_id = seg->m_instance_id;
        h->created_ns = posix::realtime_ns();
        h->producer_pid = static_cast<std::int32_t>(::getpid());
        std::strncpy(h->name, name.c_str(), sizeof(h->name) - 1);
    };

    // Owner-writable until it is named and reopened under its name (below).
    posix::File f = unnamed_file(0600);
    if (f && (::fchmod(f.get(), 0600) != 0 || !posix::ofd_try_lock(f.get(), LOCK_PRODUCER)))
        f.close(); // odd file system: take the O_EXCL way
    bool named = false, linked = false;
    for (int attempt = 0; attempt < 100 && !named; ++attempt) {
        if (f) {
            const LinkResult r = link_name(f.get(), shm);
            if (r == LinkResult::linked) {
                named = linked = true;
                break;
            }
            if (r == LinkResult::unsupported) {
                f.close(); // no /proc, say: fall back to creating the name with O_EXCL
                continue;
            }
        } else {
            posix::File c = posix::shm_open_file(shm, O_RDWR | O_CREAT | O_EXCL, pool_mode, EEXIST);
            if (c) {
                // Lock before sizing: anyone who opens it meanwhile sees a live creator. (An
                // opener can still find it empty and unlocked for an instant; O_TMPFILE above
                // avoids that wherever it works.)
                if (!posix::ofd_try_lock(c.get(), LOCK_PRODUCER))
                    continue; // someone judged it stale and will unlink it; start again
                // Between our O_EXCL create and our lock another producer may have taken the
                // empty file for a dead one and replaced it. Holding the lock, the name can no
                // longer change under us, so one check settles it.
                if (!name_refers_to(shm, posix::fstat_file(c.get(), shm)))
                    continue;
                f = std::move(c);
                named = true;
                break;
            }
        }

        // The name exists. Replace it only if its producer is gone and it is a bips pool.
        posix::File old = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT, EACCES);
        if (!old) {
            if (errno == EACCES)
                squatted(name, pool_path(name), stat_path(shm));
            continue;
        }
        struct stat st = posix::fstat_file(old.get(), shm);
        if (posix::ofd_is_locked(old.get(), LOCK_PRODUCER))
            throw PoolBusy("pool '" + name + "' already has a live producer" +
                           (may_remove(st) ? std::string() : " (" + uid_text(st.st_uid) + ")"));
        // A cleaner holds the guard for microseconds; whoever holds it for longer blocks us.
        NameGuard guard(old.get());
        if (!guard.wait(50))
            throw PoolBusy("pool '" + name + "': another process holds its dead pool file (" +
                           pool_path(name) + ") locked; try again, or remove the file");
        if (posix::ofd_is_locked(old.get(), LOCK_PRODUCER))
            throw PoolBusy("pool '" + name + "' already has a live producer");
        if (!may_remove(st))
            squatted(name, pool_path(name), st);
        if (classify(old.get(), st, MAGIC) == FileKind::foreign)
            throw CorruptPool(pool_path(name) +
                              " exists and is not a bips pool; remove it by hand if it is yours");
        if (name_refers_to(shm, st) && ::shm_unlink(shm.c_str()) != 0 && errno == EPERM)
            squatted(name, pool_path(name), st);
        // Closing `old` drops its lock; loop to take the name.
    }
    if (!named)
        throw Error("could not create pool '" + name + "': the name kept changing under us");

    // The name is ours (and locked): any control file under the control name is a dead
    // instance's. Until `ready`, openers see a pool being created.
    struct stat st = posix::fstat_file(f.get(), shm);
    try {
        if (linked) {
            // Mappings of the unnamed descriptor would show as "/dev/shm/#ino (deleted)" in
            // /proc/PID/maps and lsof: map through the name. `f` keeps the lock.
            posix::File by_name = posix::shm_open_file(shm, O_RDWR, 0);
            if (!same_file(posix::fstat_file(by_name.get(), shm), st))
                throw Error("could not create pool '" + name + "': the name changed under us");
            prepare(by_name.get());
        } else {
            prepare(f.get());
        }
    } catch (...) {
        unlink_if_same(shm, st);
        throw;
    }
    posix::File c;
    try {
        c = create_ctl(name, ctl_shm, p.mode);
        size_file(c.get(), l.ctl_size, ctl_shm);
        seg->m_ctl = posix::Mapping(c.get(), l.ctl_size, 0, PROT_READ | PROT_WRITE, ctl_shm);
    } catch (...) {
        if (c)
            unlink_if_same(ctl_shm, posix::fstat_file(c.get(), ctl_shm));
        unlink_if_same(shm, st);
        throw;
    }
    PoolHeader *h = seg->header();
    ControlHeader *ch = seg->ctl();
    std::memcpy(ch->magic, CTL_MAGIC, sizeof(CTL_MAGIC));
    ch->layout_version = LAYOUT_VERSION;
    ch->header_size = sizeof(ControlHeader);
    ch->instance_id = seg->m_instance_id;
    ch->ctl_size = l.ctl_size;
    seg->m_header_image.reset(new unsigned char[offsetof(PoolHeader, ready)]);
    std::memcpy(seg->m_header_image.get(), h, offsetof(PoolHeader, ready));
    seg->m_ctl_header_image.reset(new unsigned char[offsetof(ControlHeader, active)]);
    std::memcpy(seg->m_ctl_header_image.get(), ch, offsetof(ControlHeader, active));
    // Last: an opener that reads ready == 1 finds both files complete.
    h->ready.store(1, std::memory_order_release);
    seg->m_stat = st;
    seg->m_ctl_stat = posix::fstat_file(c.get(), ctl_shm);
    seg->adopt(std::move(f), std::move(c));
    return seg;
}

namespace {

void check_owner(const std::string &name, const struct stat &st, std::int64_t owner) {
    if (owner == ANY_OWNER)
        return;
    const uid_t me = ::geteuid();
    const bool ok = owner == OWNER_SELF ? st.st_uid == me || st.st_uid == 0
                                        : owner >= 0 && st.st_uid == static_cast<uid_t>(owner);
    if (!ok)
        throw std::system_error(
            EPERM, std::generic_category(),
            "pool '" + name + "' belongs to " + uid_text(st.st_uid) + ", not to " +
                (owner == OWNER_SELF ? "this user (" + uid_text(me) + ") or root"
                                     : uid_text(static_cast<uid_t>(owner))) +
                "; if you trust that user, accept it with owner=" + std::to_string(st.st_uid) +
                " (see docs/security.md)");
}

} // namespace

std::shared_ptr<Segment> Segment::open(const std::string &name, Access access, OpenStatus *status,
                                       std::int64_t owner) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    posix::File f = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT);
    if (!f) {
        *status = OpenStatus::not_found;
        return nullptr;
    }
    struct stat st = posix::fstat_file(f.get(), shm);
    if (!S_ISREG(st.st_mode))
        corrupt(name, "not a regular file");
    check_owner(name, st, owner);
    auto size = static_cast<std::size_t>(st.st_size);
    auto creator_alive = [&] { return posix::ofd_is_locked(f.get(), LOCK_PRODUCER); };
    // Not usable (yet): being created while its creator holds the lock; gone if the name no
    // longer refers to it (it was created, used and closed while we looked); else abandoned.
    auto unready = [&]() -> std::shared_ptr<Segment> {
        *status = creator_alive()               ? OpenStatus::initializing
                  : !name_refers_to(shm, st)    ? OpenStatus::not_found
                                                : OpenStatus::stale;
        return nullptr;
    };
    if (size == 0)
        return unready();
    // Read with pread, never mapped before validation: the file may shrink at any time.
    alignas(PoolHeader) unsigned char copy[sizeof(PoolHeader)] = {};
    const auto *h = reinterpret_cast<const PoolHeader *>(copy);
    const bool whole = read_exact(f.get(), copy, sizeof(copy), 0);
    if (!whole || h->ready.load(std::memory_order_relaxed) != 1) {
        // A pool whose creator still holds the producer lock and has not set `ready` is being
        // created, whatever its bytes say.
        if (creator_alive() || !name_refers_to(shm, st))
            return unready();
        if (!whole) {
            if (size >= sizeof(MAGIC) && std::memcmp(copy, MAGIC, sizeof(MAGIC)) == 0)
                corrupt(name, "truncated to " + std::to_string(size) + " bytes");
            corrupt(name, "too small (" + std::to_string(size) + " bytes) and no bips magic");
        }
        if (std::memcmp(h->magic, MAGIC, sizeof(MAGIC)) != 0 &&
            classify(f.get(), st, MAGIC) != FileKind::zeroed)
            corrupt(name, "bad magic");
        if (std::memcmp(h->magic, MAGIC, sizeof(MAGIC)) == 0 && h->layout_version != LAYOUT_VERSION)
            throw IncompatiblePool("pool '" + name + "' has layout version " +
                                   std::to_string(h->layout_version) + "; this bips reads version " +
                                   std::to_string(LAYOUT_VERSION) +
                                   " (upgrade or restart the producer)");
        *status = OpenStatus::stale; // sized or half-written, and its creator died
        return nullptr;
    }
    // `ready` is set last: having seen it, read the header again for its final contents.
    if (!read_exact(f.get(), copy, sizeof(copy), 0))
        corrupt(name, "truncated while being opened");
    if (std::memcmp(h->magic, MAGIC, sizeof(MAGIC)) != 0)
        corrupt(name, "bad magic");
    if (h->layout_version != LAYOUT_VERSION)
        throw IncompatiblePool("pool '" + name + "' has layout version " +
                               std::to_string(h->layout_version) + "; this bips reads version " +
                               std::to_string(LAYOUT_VERSION) + " (upgrade or restart the producer)");
    Params p = validate_header(name, *h, size);
    const std::uint64_t instance = h->instance_id;

    // The control file: it must be the one made with this pool file.
    posix::File c = posix::shm_open_file(ctl_shm, access == Access::inspect ? O_RDONLY : O_RDWR, 0,
                                         ENOENT);
    // A pool closing under us removes its two names one after the other: gone, not broken.
    auto going = [&] {
        return h->closed.load(std::memory_order_relaxed) != 0 || !name_refers_to(shm, st);
    };
    if (!c && going()) {
        *status = OpenStatus::not_found;
        return nullptr;
    }
    if (!c)
        return unready();
    struct stat cst = posix::fstat_file(c.get(), ctl_shm);
    if (!S_ISREG(cst.st_mode) || cst.st_uid != st.st_uid)
        corrupt(name, "its control file /dev/shm" + ctl_shm + " is not a regular file of " +
                          uid_text(st.st_uid) + ", the pool's owner");
    ControlHeader ch{};
    // Larger is harmless (only ctl_size bytes are mapped); smaller is a truncation.
    if (static_cast<std::size_t>(cst.st_size) < p.layout.ctl_size ||
        !read_exact(c.get(), &ch, sizeof(ch), 0) ||
        std::memcmp(ch.magic, CTL_MAGIC, sizeof(CTL_MAGIC)) != 0 ||
        ch.layout_version != LAYOUT_VERSION || ch.header_size != sizeof(ControlHeader) ||
        ch.instance_id != instance || ch.ctl_size != p.layout.ctl_size) {
        if (going()) {
            *status = OpenStatus::not_found;
            return nullptr;
        }
        if (!creator_alive())
            return unready(); // a newer pool's control file, or the remains of a dead one
        corrupt(name, "its control file /dev/shm" + ctl_shm + " does not belong to it");
    }

    std::shared_ptr<Segment> seg(new Segment());
    seg->m_name = name;
    seg->m_shm_name = shm;
    seg->m_ctl_shm_name = ctl_shm;
    seg->m_stat = st;
    seg->m_ctl_stat = cst;
    seg->m_instance_id = instance;
    const auto &l = p.layout;
    if (access == Access::inspect) {
        bool head_ok = false, ctl_ok = false;
        seg->m_head = posix::Mapping::copy_of(f.get(), l.control_size, 0, shm, &head_ok);
        seg->m_ctl = posix::Mapping::copy_of(c.get(), l.ctl_size, 0, ctl_shm, &ctl_ok);
        if (!head_ok || !ctl_ok)
            corrupt(name, "truncated while being read");
    } else {
        seg->m_head = posix::Mapping(f.get(), l.control_size, 0, PROT_READ, shm);
        seg->m_payload = posix::Mapping(f.get(), l.file_size - l.control_size,
                                        static_cast<off_t>(l.control_size), PROT_READ, shm);
        seg->m_ctl = posix::Mapping(c.get(), l.ctl_size, 0, PROT_READ | PROT_WRITE, ctl_shm);
    }
    seg->m_params = p;
    seg->adopt(std::move(f), std::move(c));
    *status = OpenStatus::ok;
    return seg;
}

bool Segment::producer_alive() const { return posix::ofd_is_locked(fd(), LOCK_PRODUCER); }

bool Segment::slot_alive(std::uint32_t s) const {
    return posix::ofd_is_locked(ctl_fd(), LOCK_SLOT_BASE + static_cast<off_t>(s));
}

bool Segment::lock_control(Duration timeout) const {
    auto deadline = Clock::now() + timeout;
    auto pause = std::chrono::microseconds(20);
    for (;;) {
        if (posix::ofd_try_lock(ctl_fd(), LOCK_CONTROL))
            return true;
        if (Clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(pause);
        if (pause < std::chrono::milliseconds(2))
            pause *= 2;
    }
}

void Segment::unlock_control() const noexcept { posix::ofd_unlock(ctl_fd(), LOCK_CONTROL); }

void Segment::clear_slot(std::uint32_t s) noexcept {
    if (inherited())
        return;
    ControlHeader *c = ctl();
    const std::uint64_t bit = queued_bit(s);
    c->active.fetch_and(~bit, std::memory_order_seq_cst);
    c->sleepers.fetch_and(~bit, std::memory_order_seq_cst);
    const std::uint64_t both = queued_bit(s) | held_bit(s);
    for (std::uint32_t i = 0; i < m_params.capacity; ++i)
        state(i).fetch_and(~both, std::memory_order_seq_cst);
    // Last: a process killed before this point leaves the slot attached, and the next sweep
    // finishes the job.
    c->attached.fetch_and(~bit, std::memory_order_seq_cst);
    wake_producer();
}

unsigned Segment::sweep_dead_locked(std::uint32_t skip) {
    ControlHeader *c = ctl();
    // Every slot that has a bit anywhere, valid or not: bits without a live lock holder are
    // reclaimed whoever wrote them.
    const std::uint64_t masks = c->attached.load(std::memory_order_seq_cst) |
                                c->active.load(std::memory_order_seq_cst) |
                                c->sleepers.load(std::memory_order_seq_cst);
    std::uint32_t used = queued_mask(masks);
    for (std::uint32_t i = 0; i < m_params.capacity; ++i) {
        const std::uint64_t st = state(i).load(std::memory_order_relaxed);
        used |= queued_mask(st) | held_mask(st);
    }
    unsigned n = 0;
    for (std::uint32_t s = 0; s < MAX_CONSUMERS; ++s) {
        if (s == skip || !(used & (1u << s)))
            continue;
        if (s < m_params.max_consumers && slot_alive(s))
            continue;
        clear_slot(s);
        ++n;
    }
    if (held_mask(masks) != 0) { // the masks only use their low half
        c->attached.fetch_and(0xffffffffull, std::memory_order_seq_cst);
        c->active.fetch_and(0xffffffffull, std::memory_order_seq_cst);
        c->sleepers.fetch_and(0xffffffffull, std::memory_order_seq_cst);
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
    ControlHeader *c = ctl();
    if (c->producer_sleeping.load(std::memory_order_seq_cst) != 0) {
        c->free_futex.fetch_add(1, std::memory_order_seq_cst);
        posix::futex_wake(&c->free_futex, INT_MAX);
    }
}

void Segment::buffer_freed() const noexcept {
    ControlHeader *c = ctl();
    // Only the free that uses up the credit wakes; later ones find it spent (<= 0).
    if (c->producer_sleeping.load(std::memory_order_seq_cst) != 0 &&
        c->free_credit.fetch_sub(1, std::memory_order_seq_cst) == 1) {
        c->free_futex.fetch_add(1, std::memory_order_seq_cst);
        posix::futex_wake(&c->free_futex, INT_MAX);
    }
}

void Segment::wake_consumers() const noexcept {
    ControlHeader *c = ctl();
    c->publish_futex.fetch_add(1, std::memory_order_seq_cst);
    posix::futex_wake(&c->publish_futex, INT_MAX);
}

bool Segment::name_refers_to_me() const { return name_refers_to(m_shm_name, m_stat); }

void Segment::unlink_if_mine() const noexcept {
    // The control file first: a pool file without one reads as closing (or abandoned), while a
    // control file without its pool file would look like the remains of a crash.
    unlink_if_same(m_ctl_shm_name, m_ctl_stat);
    unlink_if_same(m_shm_name, m_stat);
}

bool Segment::unlink_if_abandoned() const noexcept {
    try {
        return !inherited() && unlink_if_unused(fd(), m_name);
    } catch (...) {
        return false;
    }
}

bool remove_if_unused(const std::string &name) {
    const std::string shm = shm_name_for(name), ctl_shm = ctl_shm_name_for(name);
    posix::File f = posix::shm_open_file(shm, O_RDONLY, 0, ENOENT);
    if (!f) {
        // A control file left without its pool file (removed by hand, or a crash).
        posix::File c = posix::shm_open_file(ctl_shm, O_RDONLY, 0, ENOENT);
        if (!c)
            return false;
        struct stat cst = posix::fstat_file(c.get(), ctl_shm);
        if (!S_ISREG(cst.st_mode) || classify(c.get(), cst, CTL_MAGIC) != FileKind::bips)
            throw CorruptPool("/dev/shm" + ctl_shm + " is not a bips control file; left alone");
        NameGuard guard(c.get());
        if (!guard)
            return false;
        for (std::uint32_t s = 0; s < MAX_CONSUMERS; ++s)
            if (posix::ofd_is_locked(c.get(), LOCK_SLOT_BASE + static_cast<off_t>(s)))
                return false;
        // A producer names its pool file before it makes a control file: if the pool name is
        // still free now, this control file is nobody's.
        if (posix::shm_open_file(shm, O_RDONLY, 0, ENOENT, EACCES) || errno == EACCES)
            return false;
        return name_refers_to(ctl_shm, cst) && ::shm_unlink(ctl_shm.c_str()) == 0;
    }
    if (classify(f.get(), posix::fstat_file(f.get(), shm), MAGIC) == FileKind::foreign)
        throw CorruptPool(pool_path(name) + " is not a bips pool; left alone");
    return unlink_if_unused(f.get(), name);
}

std::uint32_t Segment::count_free() const noexcept {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < m_params.capacity; ++i)
        n += state(i).load(std::memory_order_acquire) == 0;
    return n;
}

} // namespace bips::detail
