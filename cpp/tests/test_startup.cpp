// SPDX-License-Identifier: Apache-2.0
// Start-up races (issue 8): a producer creates a pool while consumers and an inspector open the
// same fresh name at the same instant, hundreds of rounds, with busy processes loading the CPUs
// so that any party can be preempted anywhere. A consumer given a wait must attach and receive
// the round's frame; one that does not wait may only hear "no pool" or "being created"; and
// pool_info / list_pools may only say "no pool" or "being created", never "corrupt".
//
// The parties (producer, waiting consumer, eager consumer, inspector) run as threads, or as
// forked processes that live through all the rounds. A spin barrier in anonymous shared memory
// releases them together each round.
#include "support.hpp"

#include <atomic>
#include <cstdlib>
#include <new>
#include <optional>
#include <stdexcept>
#include <sys/mman.h>

using namespace bips;
using namespace bips::test;

namespace {

constexpr std::uint32_t ROUNDS = 300 / SLOWDOWN; // TSan runs several times slower
constexpr std::uint32_t MAX_FAILED_ROUNDS = 20;  // enough to say how often; then stop
constexpr auto WAIT = 5000ms * SLOWDOWN;         // every wait of a party
constexpr unsigned BUSY_LOOPS = 2;

enum Party : unsigned { PRODUCER, CONSUMER, EAGER, INSPECTOR, PARTIES };
const char *const PARTY_NAMES[PARTIES] = {"producer", "consumer", "eager consumer", "inspector"};

/// What the parties of a round share. Lock-free atomics only: it lives in anonymous shared
/// memory, so forked children share it too.
struct Board {
    std::atomic<std::uint32_t> arrived{0};
    std::atomic<std::uint32_t> generation{0};
    std::atomic<std::uint32_t> last_failed{0}; ///< round + 1 of the last round with a failure
    std::atomic<std::uint32_t> failed_rounds{0};
    std::atomic<std::uint32_t> done[PARTIES] = {}; ///< round + 1 once the party finished it
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// A Board in MAP_SHARED anonymous memory, unmapped at the end.
class SharedBoard {
public:
    SharedBoard() {
        void *p = ::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                         -1, 0);
        if (p == MAP_FAILED)
            throw std::system_error(errno, std::generic_category(), "mmap(board)");
        m_board = new (p) Board();
    }
    ~SharedBoard() { ::munmap(m_board, sizeof(Board)); }
    SharedBoard(const SharedBoard &) = delete;
    SharedBoard &operator=(const SharedBoard &) = delete;
    Board &operator*() const noexcept { return *m_board; }

private:
    Board *m_board = nullptr;
};

/// Releases all PARTIES at once: the last to arrive opens the next generation, the others spin
/// (yielding) until it does. False if the others did not come within WAIT.
bool barrier(Board &b) {
    const std::uint32_t gen = b.generation.load(std::memory_order_acquire);
    if (b.arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == PARTIES) {
        b.arrived.store(0, std::memory_order_relaxed);
        b.generation.fetch_add(1, std::memory_order_release);
        return true;
    }
    const auto deadline = std::chrono::steady_clock::now() + WAIT;
    for (unsigned n = 1; b.generation.load(std::memory_order_acquire) == gen; ++n) {
        std::this_thread::yield();
        if (n % 1024 == 0 && std::chrono::steady_clock::now() > deadline)
            return false;
    }
    return true;
}

[[noreturn]] void round_error(std::uint32_t r, const std::string &what) {
    throw std::runtime_error("round " + std::to_string(r) + ": " + what);
}

bool finished(const Board &b, Party p, std::uint32_t r) {
    return b.done[p].load(std::memory_order_acquire) == r + 1;
}

void produce(Board &b, const std::string &name, std::uint32_t r) {
    Producer prod(name, small_pool(2, 64));
    // Every consumer attached, but for those that gave up (they report it; a consumer
    // finishes this round only by failing, or after the frame below).
    auto ready = [&] {
        return prod.stats().consumers + finished(b, CONSUMER, r) + finished(b, EAGER, r) == 2;
    };
    if (!wait_until(ready, WAIT))
        round_error(r, "the consumers did not attach");
    if (prod.stats().consumers > 0)
        publish_pattern(prod, r);
}

void receive_round(Consumer &cons, std::uint32_t r) {
    Frame f = cons.receive(WAIT);
    if (!has_pattern(f.data(), f.nbytes(), r))
        round_error(r, "frame " + std::to_string(f.seq()) + " is not this round's");
}

void consume(const std::string &name, std::uint32_t r) {
    ConsumerOptions co;
    co.wait = WAIT;
    Consumer cons(name, co);
    receive_round(cons, r);
}

// Opens without waiting, in a tight loop: it lands in every instant of the producer's
// creation, not only every few milliseconds like a waiting consumer.
void consume_eagerly(const std::string &name, std::uint32_t r) {
    const auto deadline = std::chrono::steady_clock::now() + WAIT;
    std::optional<Consumer> cons;
    while (!cons) {
        try {
            cons.emplace(name); // wait 0: one attempt (a pool being created: up to 1 s)
        } catch (const PoolNotFound &) {
        } catch (const Timeout &) {
        }
        if (!cons && std::chrono::steady_clock::now() > deadline)
            round_error(r, "no pool to attach to");
    }
    receive_round(*cons, r);
}

/// The documented answers for a pool that is not there yet or is being created.
bool not_there_yet(const Error &e) {
    if (dynamic_cast<const PoolNotFound *>(&e))
        return true;
    if (dynamic_cast<const CorruptPool *>(&e) || dynamic_cast<const IncompatiblePool *>(&e))
        return false;
    return std::string(e.what()).find("being created") != std::string::npos;
}

void inspect(const Board &b, const std::string &name, std::uint32_t r) {
    const auto deadline = std::chrono::steady_clock::now() + WAIT;
    for (unsigned n = 0;; ++n) {
        try {
            if (pool_info(name).producer_alive)
                return;
        } catch (const Error &e) {
            if (!not_there_yet(e))
                throw;
        }
        if (n % 4 == 0)
            for (const PoolInfo &p : list_pools())
                if (p.name == name && !p.error.empty() && p.error != "being created")
                    round_error(r, "list_pools() says '" + p.error + "'");
        if (finished(b, PRODUCER, r))
            return; // came and went between two looks
        if (std::chrono::steady_clock::now() > deadline)
            round_error(r, "pool " + name + " not complete within the wait");
    }
}

void play(Board &b, Party party, const std::string &name, std::uint32_t r) {
    switch (party) {
    case PRODUCER:
        return produce(b, name, r);
    case CONSUMER:
        return consume(name, r);
    case EAGER:
        return consume_eagerly(name, r);
    case INSPECTOR:
        return inspect(b, name, r);
    case PARTIES:
        break;
    }
}

/// One party through all the rounds: pool "<base>-<round>". Failures are recorded with fail()
/// (in a child too, where they become its exit status).
void run_rounds(Board &b, Party party, const std::string &base) {
    for (std::uint32_t r = 0; r < ROUNDS; ++r) {
        if (!barrier(b)) {
            fail(__FILE__, __LINE__,
                 std::string(PARTY_NAMES[party]) + ": the other parties stopped coming");
            return;
        }
        if (b.failed_rounds.load(std::memory_order_acquire) >= MAX_FAILED_ROUNDS)
            return; // stable here: every party of the last round has finished it
        try {
            play(b, party, base + "-" + std::to_string(r), r);
        } catch (const std::exception &e) {
            fail(__FILE__, __LINE__,
                 "round " + std::to_string(r) + ", " + PARTY_NAMES[party] + ": " +
                     type_name(typeid(e)) + ": " + e.what());
            if (b.last_failed.exchange(r + 1, std::memory_order_acq_rel) != r + 1)
                b.failed_rounds.fetch_add(1, std::memory_order_acq_rel);
        }
        b.done[party].store(r + 1, std::memory_order_release);
    }
}

/// Processes spinning until killed (at the end of the scope), to load every CPU.
std::vector<Child> busy_loops() {
    std::vector<Child> loops;
    for (unsigned i = 0; i < BUSY_LOOPS; ++i)
        loops.push_back(Child::fork(
            [] {
                volatile std::uint64_t n = 0;
                for (;;)
                    n = n + 1;
                return 0;
            },
            120));
    return loops;
}

void report(const Board &b) {
    const std::uint32_t failed = b.failed_rounds.load();
    if (failed >= MAX_FAILED_ROUNDS)
        fail(__FILE__, __LINE__,
             std::to_string(failed) + " rounds failed (then the test stopped), with " +
                 std::to_string(BUSY_LOOPS) + " busy loops");
    else if (failed != 0)
        fail(__FILE__, __LINE__,
             std::to_string(failed) + " of " + std::to_string(ROUNDS) + " rounds failed, with " +
                 std::to_string(BUSY_LOOPS) + " busy loops");
}

} // namespace

BIPS_TEST(startup_race_threads) {
    const std::vector<Child> loops = busy_loops();
    SharedBoard board;
    const std::string base = unique_name();
    std::vector<std::thread> threads;
    for (unsigned p = 0; p < PARTIES; ++p)
        threads.emplace_back([&, p] { run_rounds(*board, static_cast<Party>(p), base); });
    for (auto &t : threads)
        t.join();
    report(*board);
}

BIPS_TEST(startup_race_processes) {
    const std::vector<Child> loops = busy_loops();
    SharedBoard board;
    const std::string base = unique_name();
    std::vector<Child> parties;
    for (unsigned p = 0; p < PARTIES; ++p)
        parties.push_back(Child::fork(
            [&, p] {
                run_rounds(*board, static_cast<Party>(p), base);
                return 0;
            },
            60 * SLOWDOWN));
    for (unsigned p = 0; p < PARTIES; ++p) {
        const int rc = parties[p].wait(60s * SLOWDOWN);
        if (rc != 0)
            fail(__FILE__, __LINE__,
                 std::string(PARTY_NAMES[p]) + " process exited with " + std::to_string(rc));
    }
    report(*board);
}
