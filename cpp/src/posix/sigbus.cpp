// SPDX-License-Identifier: Apache-2.0
#include "posix/sigbus.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <mutex>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

namespace bips::posix {

std::atomic<std::uint32_t> g_sigbus_losses{0};

namespace {

// A slot's state word: the phase in the low two bits, above them how many handlers are reading
// the slot right now ("pins"). Registration and unregistration are ordinary code; the handler
// only ever pins an ACTIVE slot, reads it and unpins it, so it needs neither locks nor malloc.
// Unregistration flips ACTIVE to RETIRING (pins kept) and waits for the pins to drain before the
// slot may be reused and the caller may munmap(): a handler that matched a range is thus never
// left holding an address that has meanwhile been unmapped and perhaps mapped again for
// something else (which its MAP_FIXED would clobber).
constexpr std::uint32_t FREE = 0;
constexpr std::uint32_t FILLING = 1;
constexpr std::uint32_t ACTIVE = 2;
constexpr std::uint32_t RETIRING = 3;
constexpr std::uint32_t PHASE = 3;
constexpr std::uint32_t PIN = 4;

struct Slot {
    std::atomic<std::uint32_t> state{FREE};
    // Written only while FILLING, read by the handler only while it holds a pin on an ACTIVE
    // slot. Atomics all the same, so that no reader can ever see a torn value.
    std::atomic<std::uintptr_t> start{0};
    std::atomic<std::size_t> length{0};
    std::atomic<int> prot{0};
    std::atomic<bool> lost{false};
};

static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
                  std::atomic<std::uintptr_t>::is_always_lock_free &&
                  std::atomic<std::size_t>::is_always_lock_free &&
                  std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free,
              "the SIGBUS handler may only use lock-free atomics");

// Constant-initialised: a Mapping made during another file's static initialisation finds the
// table ready.
Slot g_slots[SIGBUS_GUARD_SLOTS];
// One past the highest slot ever claimed, so the handler scans only what was used.
std::atomic<std::size_t> g_high{0};

// SIGBUS's action from before ours. Written once, before our handler is installed; g_have_previous
// publishes it to handlers running on other threads.
struct sigaction g_previous{};
std::atomic<bool> g_have_previous{false};
// The previous action had SA_RESETHAND and was called once: from then on it is SIG_DFL.
std::atomic<bool> g_previous_spent{false};
std::once_flag g_install_once;

bool pin(Slot &s) noexcept {
    std::uint32_t w = s.state.load(std::memory_order_relaxed);
    while ((w & PHASE) == ACTIVE) {
        if (s.state.compare_exchange_weak(w, w + PIN, std::memory_order_acquire,
                                          std::memory_order_relaxed))
            return true;
    }
    return false;
}

void unpin(Slot &s) noexcept { s.state.fetch_sub(PIN, std::memory_order_release); }

// The raw system call, not libc's mmap(): sanitizers intercept mmap() to update their own books,
// which is not safe from a signal that may have interrupted their runtime. The addresses stay
// the same, so their books stay right.
void *map_zero_pages(std::uintptr_t start, std::size_t length, int prot) noexcept {
    const int flags = MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS;
#if defined(SYS_mmap2) // 32-bit ABIs, where SYS_mmap (if any) takes its arguments in a struct
    long r = ::syscall(SYS_mmap2, start, length, prot, flags, -1, 0L);
    return r == -1 ? MAP_FAILED : reinterpret_cast<void *>(r);
#elif defined(SYS_mmap)
    long r = ::syscall(SYS_mmap, start, length, prot, flags, -1, 0L);
    return r == -1 ? MAP_FAILED : reinterpret_cast<void *>(r);
#else
    return ::mmap(reinterpret_cast<void *>(start), length, prot, flags, -1, 0);
#endif
}

// Async-signal-safe. True if `addr` lies in a guarded range, which now holds zero pages.
bool replace_lost_range(std::uintptr_t addr) noexcept {
    const std::size_t n = g_high.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
        Slot &s = g_slots[i];
        if (!pin(s))
            continue;
        const std::uintptr_t start = s.start.load(std::memory_order_relaxed);
        const std::size_t length = s.length.load(std::memory_order_relaxed);
        const bool hit = addr - start < length; // one compare: below start wraps around
        bool replaced = false;
        if (hit) {
            // The whole range at once: later touches of other pages then find zero pages instead
            // of each faulting again. Another thread faulting on the same range may replace it a
            // second time; that only drops what was written to the first zero pages.
            replaced =
                map_zero_pages(start, length, s.prot.load(std::memory_order_relaxed)) != MAP_FAILED;
            if (replaced) {
                s.lost.store(true, std::memory_order_release);
                g_sigbus_losses.fetch_add(1, std::memory_order_release);
            }
        }
        unpin(s);
        if (hit)
            return replaced; // a failed mmap (out of map count) is fatal as before: chain
    }
    return false;
}

void restore_default() noexcept {
    struct sigaction dfl{};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(SIGBUS, &dfl, nullptr);
}

// Runs the previous handler with the signal mask the kernel would have given it: the mask at the
// fault, plus its sa_mask, plus SIGBUS unless it asked for SA_NODEFER (faulthandler and the
// sanitizers do, and re-raise or nest on that basis), not our everything-blocked mask.
void call_previous(const struct sigaction &prev, int sig, siginfo_t *info, void *ctx) noexcept {
    if (ctx != nullptr) {
        sigset_t mask = static_cast<const ucontext_t *>(ctx)->uc_sigmask;
        for (int s = 1; s < NSIG; ++s)
            if (sigismember(&prev.sa_mask, s) == 1)
                sigaddset(&mask, s);
        if (!(prev.sa_flags & SA_NODEFER))
            sigaddset(&mask, sig);
        ::pthread_sigmask(SIG_SETMASK, &mask, nullptr);
    }
    if (prev.sa_flags & SA_SIGINFO)
        prev.sa_sigaction(sig, info, ctx);
    else
        prev.sa_handler(sig);
    // Returning restores the mask of the interrupted code from ctx.
}

// A SIGBUS that is not ours: do what would have happened without us.
void chain(int sig, siginfo_t *info, void *ctx) noexcept {
    // si_code > 0: raised by the kernel for a fault, which re-occurs when we return. Otherwise
    // someone sent it (kill, raise, faulthandler re-raising), and it happens only once.
    const bool fault = info == nullptr || info->si_code > 0;
    const struct sigaction *prev =
        g_have_previous.load(std::memory_order_acquire) ? &g_previous : nullptr;
    if (prev && (prev->sa_flags & SA_RESETHAND) &&
        g_previous_spent.exchange(true, std::memory_order_relaxed))
        prev = nullptr;
    if (prev && prev->sa_handler == SIG_IGN && !fault)
        return; // a sent SIGBUS that was ignored stays ignored
    if (prev && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
        call_previous(*prev, sig, info, ctx);
        return;
    }
    // SIG_DFL, or SIG_IGN for a fault (which the kernel never lets a process ignore): put the
    // default back and let the signal come again, so the process dies of SIGBUS, core and all,
    // as it would have without us. A fault comes again by itself when we return; a sent signal
    // is raised again and stays pending (SIGBUS is blocked in here) until we return.
    restore_default();
    if (!fault)
        ::raise(sig);
}

void on_sigbus(int sig, siginfo_t *info, void *ctx) {
    const int saved_errno = errno;
    // BUS_ADRERR is the kernel's code for a page past the end of the file under a mapping.
    if (info && info->si_code == BUS_ADRERR &&
        replace_lost_range(reinterpret_cast<std::uintptr_t>(info->si_addr))) {
        errno = saved_errno;
        return; // the faulting instruction runs again, on the zero page
    }
    errno = saved_errno;
    chain(sig, info, ctx);
    errno = saved_errno;
}

// A fork() while another thread was inside the handler leaves that thread's pins in the child,
// where no thread will ever drop them, and unguarding the slot there would wait forever. The
// child has one thread, so every pin it sees is stale.
void drop_pins_in_child() noexcept {
    for (Slot &s : g_slots)
        s.state.fetch_and(PHASE, std::memory_order_relaxed);
}

void install() noexcept {
    // Read the old action first and publish it, then install ours: handing both to a single
    // sigaction() would leave a moment in which our handler runs (on another thread) before the
    // kernel has copied the old action out to us.
    ::sigaction(SIGBUS, nullptr, &g_previous);
    g_have_previous.store(true, std::memory_order_release);
    ::pthread_atfork(nullptr, nullptr, drop_pins_in_child);

    struct sigaction sa{};
    sa.sa_sigaction = on_sigbus;
    // SA_SIGINFO for si_addr and si_code. SA_ONSTACK: run on the thread's alternate stack when
    // it has one (Python's faulthandler and the sanitizers set them up; Go requires it of every
    // handler in a process it shares). SA_RESTART: a SIGBUS sent with kill() must not make an
    // unrelated blocking call fail with EINTR (a fault interrupts an instruction, not a call).
    // No SA_NODEFER: SIGBUS stays blocked in the handler, so a fault inside it kills at once
    // instead of recursing. Every other signal is blocked too while it runs (it is short), so
    // that no other handler nests inside it.
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigfillset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, nullptr);
}

} // namespace

int sigbus_guard(void *addr, std::size_t length, int prot) noexcept {
    if (addr == nullptr || length == 0)
        return -1;
    std::call_once(g_install_once, install);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    length = (length + page - 1) / page * page;
    for (std::size_t i = 0; i < SIGBUS_GUARD_SLOTS; ++i) {
        Slot &s = g_slots[i];
        std::uint32_t expected = FREE;
        if (!s.state.compare_exchange_strong(expected, FILLING, std::memory_order_acquire,
                                             std::memory_order_relaxed))
            continue;
        s.start.store(reinterpret_cast<std::uintptr_t>(addr), std::memory_order_relaxed);
        s.length.store(length, std::memory_order_relaxed);
        s.prot.store(prot, std::memory_order_relaxed);
        s.lost.store(false, std::memory_order_relaxed);
        std::size_t high = g_high.load(std::memory_order_relaxed);
        while (high < i + 1 && !g_high.compare_exchange_weak(high, i + 1, std::memory_order_release,
                                                             std::memory_order_relaxed)) {
        }
        s.state.store(ACTIVE, std::memory_order_release);
        return static_cast<int>(i);
    }
    return -1;
}

void sigbus_unguard(int guard) noexcept {
    if (guard < 0 || static_cast<std::size_t>(guard) >= SIGBUS_GUARD_SLOTS)
        return;
    Slot &s = g_slots[guard];
    s.state.fetch_add(RETIRING - ACTIVE, std::memory_order_acq_rel);
    // A handler holds a pin for one scan step and at most one mmap() call.
    while (s.state.load(std::memory_order_acquire) != RETIRING)
        ::sched_yield();
    s.state.store(FREE, std::memory_order_release);
}

bool sigbus_lost(int guard) noexcept {
    if (guard < 0 || static_cast<std::size_t>(guard) >= SIGBUS_GUARD_SLOTS)
        return false;
    return g_slots[guard].lost.load(std::memory_order_acquire);
}

std::size_t sigbus_guards_in_use() noexcept {
    std::size_t n = 0;
    for (const Slot &s : g_slots)
        n += (s.state.load(std::memory_order_relaxed) & PHASE) != FREE;
    return n;
}

} // namespace bips::posix
