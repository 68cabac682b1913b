// SPDX-License-Identifier: Apache-2.0
// A consumer's attachment lifecycle, apart from receiving: finding a pool with a live producer,
// claiming and giving back a consumer slot, and waiting (with the right error) while a pool is
// not there yet.
#pragma once

#include "segment.hpp"

#include <bips/types.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace bips::detail {

/// Why one attempt to attach found nothing to attach to.
struct NotThere {
    OpenStatus status = OpenStatus::ok; ///< what Segment::open said
    bool producer_gone = false;         ///< a pool was there, but its producer is gone
};

/// One attempt to open pool `name` for a consumer: the segment if it has a live producer and is
/// not the instance `skip_instance`, else nullptr with *why set (a dead pool nobody uses is
/// removed on the way). Never waits; throws for real errors (see Segment::open).
std::shared_ptr<Segment> open_live(const std::string &name, std::int64_t owner,
                                   std::uint64_t skip_instance, NotThere &why);

/// Claims a free consumer slot of `seg` under its control lock (waiting at most 2 s for it,
/// which holders keep for microseconds) and initialises it. Throws TooManyConsumers.
std::uint32_t claim_slot(Segment &seg, bool latest);
/// Gives slot `s` back (we hold its lock, so nobody else touches it), and removes the pool if
/// its producer is gone and nobody else uses it. Nothing for a slot inherited through fork().
void release_slot(Segment &seg, std::uint32_t s) noexcept;

/// The waiting of a Consumer constructor: pause() between attempts until `wait` has passed (or
/// at least 1 s for a pool that is being created), then the error that says why.
class PoolWait {
public:
    PoolWait(const std::string &name, Duration wait);
    /// Sleeps a little before the next attempt; throws Interrupted (see set_interrupt_check),
    /// or, once the time is up, ProducerGone, PoolNotFound or Timeout as `why` says.
    void pause(const NotThere &why);

private:
    const std::string &m_name;
    bool m_waits;
    Clock::time_point m_deadline;
    Clock::time_point m_init_deadline;
};

} // namespace bips::detail
