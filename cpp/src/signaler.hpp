// SPDX-License-Identifier: Apache-2.0
// How the two sides wait for each other: spin briefly when that has been paying, then sleep on
// a futex word of the control file; and how the other side wakes them.
//
// Waking a sleeper costs a system call on each side and two context switches, several
// microseconds of CPU in all: more than a whole hand-off costs when both sides keep up. So a
// waiter first spins for a while, as adaptive mutexes do, but only as long as recent waits say
// the wait will be short: a consumer of a 30 fps stream stops spinning after its first wait, a
// hand-off at full speed spins for a few microseconds and never sleeps. Spinning needs a second
// core for the other side to run on, so it is off on a machine (or an affinity mask) with one.
#pragma once

#include "posix/clock.hpp"

#include <bips/types.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BIPS_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define BIPS_CPU_RELAX() asm volatile("yield" ::: "memory")
#else
#define BIPS_CPU_RELAX() ((void)0)
#endif

namespace bips::detail {

/// Longest a waiter spins before it sleeps. A wait longer than this is not worth a core. Long
/// enough to ride out the hiccups of a virtual machine (a vCPU descheduled, a timer interrupt):
/// with 20 us, one such wait in ~40 made a side sleep, and the other followed it to sleep.
inline constexpr std::int64_t MAX_SPIN_NS = 50'000;
/// Shortest spin once spinning pays: a sleep and its wake-up cost about this much CPU anyway,
/// and a budget cut to the last wait's length would miss on the first hiccup (an interrupt, a
/// burst of cache misses).
inline constexpr std::int64_t MIN_SPIN_NS = 5'000;
/// Longest single futex sleep: liveness checks and Ctrl-C need the waiter back regularly.
inline constexpr Duration MAX_SLEEP = std::chrono::milliseconds(100);

/// True when the machine has more than one CPU online (read once). Not this process's affinity
/// mask: a process pinned to one CPU may well hand frames to one pinned to another.
bool spare_core() noexcept;

/// Learns how long one waiter (a consumer's receive, a producer's acquire) should spin: about
/// twice its recent short waits, between MIN_SPIN_NS and MAX_SPIN_NS. Waits that outlast that bring
/// it down, so a slow stream costs no CPU. A spin that fails (the other side did not run meanwhile:
/// it shares our CPU, or is busy) cuts the budget to a quarter and puts spinning on probation: the
/// next 1, 2, 4... 64 short sleeps (doubling per failure, reset by a spin that works) do not raise
/// it. So where spinning cannot pay, it is tried about once per 64 waits. Thread-safe (relaxed
/// atomics: a lost update only shifts the estimate).
class SpinTuner {
public:
    /// `enabled` false (or a single CPU): never spins.
    explicit SpinTuner(bool enabled) noexcept : m_enabled(enabled && spare_core()) {}

    /// Nanoseconds to spin before sleeping now; 0: sleep at once.
    std::int64_t budget_ns() const noexcept {
        return m_enabled ? m_budget.load(std::memory_order_relaxed) : 0;
    }
    /// A wait that spun and saw its condition after `waited_ns`.
    void spun(std::int64_t waited_ns) noexcept {
        m_spins.fetch_add(1, std::memory_order_relaxed);
        m_backoff.store(1, std::memory_order_relaxed);
        raise(waited_ns);
    }
    /// A spin of the whole budget that did not see its condition (a sleep follows).
    void missed() noexcept {
        m_budget.store(m_budget.load(std::memory_order_relaxed) / 4, std::memory_order_relaxed);
        const std::uint32_t b = m_backoff.load(std::memory_order_relaxed);
        m_probation.store(b, std::memory_order_relaxed);
        m_backoff.store(std::min<std::uint32_t>(2 * b, MAX_BACKOFF), std::memory_order_relaxed);
    }
    /// A wait that had to sleep and was over after `waited_ns` in all.
    void slept(std::int64_t waited_ns) noexcept {
        m_sleeps.fetch_add(1, std::memory_order_relaxed);
        if (!m_enabled)
            return;
        if (waited_ns >= MAX_SPIN_NS) { // spinning would not have covered it
            m_budget.store(m_budget.load(std::memory_order_relaxed) / 2, std::memory_order_relaxed);
            return;
        }
        const std::uint32_t p = m_probation.load(std::memory_order_relaxed);
        if (p > 0)
            m_probation.store(p - 1, std::memory_order_relaxed);
        else
            raise(waited_ns);
    }
    std::uint64_t spins() const noexcept { return m_spins.load(std::memory_order_relaxed); }
    std::uint64_t sleeps() const noexcept { return m_sleeps.load(std::memory_order_relaxed); }
    bool enabled() const noexcept { return m_enabled; }

private:
    static constexpr std::uint32_t MAX_BACKOFF = 64;

    void raise(std::int64_t waited_ns) noexcept {
        const std::int64_t want = std::clamp<std::int64_t>(2 * waited_ns, MIN_SPIN_NS, MAX_SPIN_NS);
        if (want > m_budget.load(std::memory_order_relaxed))
            m_budget.store(want, std::memory_order_relaxed);
    }

    bool m_enabled;
    std::atomic<std::int64_t> m_budget{MAX_SPIN_NS / 2};
    std::atomic<std::uint32_t> m_probation{0}; // short sleeps still to see before raising
    std::atomic<std::uint32_t> m_backoff{1};   // probation after the next failed spin
    std::atomic<std::uint64_t> m_spins{0};
    std::atomic<std::uint64_t> m_sleeps{0};
};

/// Spins until `ready()` (checked every `every` rounds, and `hint()` every round: one cheap
/// look at the cache line that changes first) or `end_ns` on the monotonic clock.
template <class Hint, class Ready>
bool spin_until(std::int64_t end_ns, Hint &&hint, Ready &&ready, unsigned every = 16) {
    for (unsigned round = 1;; ++round) {
        // A pause is ~100+ cycles on recent x86: a few per look keep the reaction time well
        // under a microsecond.
        for (int i = 0; i < 4; ++i)
            BIPS_CPU_RELAX();
        if ((hint() || round % every == 0) && ready())
            return true;
        if (round % 8 == 0 && posix::monotonic_ns() >= end_ns)
            return false;
    }
}

} // namespace bips::detail
