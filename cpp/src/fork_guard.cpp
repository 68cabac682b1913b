// SPDX-License-Identifier: Apache-2.0
// Descriptors across fork() (fork_guard.hpp), and what a segment does with them: the child must
// not keep the parent's OFD locks alive, and must not use (or change shared state through) a
// handle it inherited.
#include "fork_guard.hpp"
#include "segment.hpp"

#include "cuda/device_memory.hpp"
#include "fd_channel.hpp"

#include <bips/errors.hpp>

#include <atomic>
#include <fcntl.h>
#include <mutex>
#include <new>
#include <pthread.h>
#include <set>
#include <unistd.h>

namespace bips::detail {

namespace {

// Every guarded descriptor of this process. A child made by fork() must not keep our OFD
// locks alive (they belong to the open file description, which fork shares), nor our listening
// sockets open: in the child each one is replaced by /dev/null, so a parent that dies is seen
// dead even while its children run.
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
    void remove(int fd) noexcept {
        std::lock_guard<std::mutex> lock(mutex);
        fds.erase(fd);
    }
};

} // namespace

void guard_across_fork(int fd) { ForkGuard::get().add(fd); }
void unguard_across_fork(int fd) noexcept { ForkGuard::get().remove(fd); }
std::uint64_t fork_generation() noexcept {
    return ForkGuard::fork_generation.load(std::memory_order_relaxed);
}

Segment::Segment() = default;

Segment::~Segment() {
    if (inherited())
        (void)m_device.release(); // the parent's mapping: CUDA must not be used after fork()
    m_fd_server.reset();          // before the allocation it serves
    m_device.reset();
    if (m_file)
        unguard_across_fork(m_file.get());
    if (m_ctl_file)
        unguard_across_fork(m_ctl_file.get());
}

void Segment::adopt(posix::File f, posix::File ctl) {
    guard_across_fork(f.get());
    guard_across_fork(ctl.get());
    m_fork_generation = fork_generation();
    m_file = std::move(f);
    m_ctl_file = std::move(ctl);
}

bool Segment::inherited() const noexcept { return fork_generation() != m_fork_generation; }

void Segment::check_not_inherited() const {
    if (inherited())
        throw InvalidArgument("pool '" + m_name +
                              "': this handle was opened by the parent process before fork(); "
                              "open a new one in the child");
}

} // namespace bips::detail
