// SPDX-License-Identifier: Apache-2.0
// The shared-memory layout of a pool. Everything here is read by processes that may run another
// build of bips, so the layout is versioned and every field is validated before use.
//
//   [control: PoolHeader | BufferDesc x capacity | SlotDesc x max_consumers | u32 x capacity]
//                                                                              read-write for all
//   [meta: capacity x meta_stride]                                             read-only for consumers
//   [data: capacity x buffer_stride, page-aligned]                            read-only for consumers
//
// Ownership of buffer i lives in one 64-bit word, BufferDesc::state: bit s of the low half says
// "queued for consumer slot s", bit s of the high half "held by consumer slot s". The producer
// only ever writes a buffer whose state is 0, so a dead consumer is cleaned up by clearing its two
// bits everywhere, an idempotent operation that any process may repeat after a crash.
#pragma once

#include <bips/types.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bips::detail {

inline constexpr char MAGIC[8] = {'B', 'I', 'P', 'S', 'P', 'O', 'O', 'L'};
using bips::LAYOUT_VERSION;
inline constexpr std::size_t CACHE_LINE = 64;
inline constexpr std::size_t MAX_BUFFER_SIZE = std::size_t{1} << 40;
inline constexpr std::size_t MAX_META_SIZE = std::size_t{1} << 20;

// Byte offsets used as OFD locks (advisory, independent of the file's contents).
inline constexpr off_t LOCK_PRODUCER = 0;  // held by the live producer for its whole life
inline constexpr off_t LOCK_CONTROL = 1;   // serializes attach, detach and dead-slot cleanup
inline constexpr off_t LOCK_SLOT_BASE = 64; // slot s: held by the consumer attached to it

inline constexpr std::uint64_t queued_bit(std::uint32_t slot) { return std::uint64_t{1} << slot; }
inline constexpr std::uint64_t held_bit(std::uint32_t slot) { return std::uint64_t{1} << (slot + 32); }
inline constexpr std::uint32_t queued_mask(std::uint64_t state) { return static_cast<std::uint32_t>(state); }
inline constexpr std::uint32_t held_mask(std::uint64_t state) { return static_cast<std::uint32_t>(state >> 32); }

struct alignas(CACHE_LINE) BufferDesc {
    std::atomic<std::uint64_t> state;
    std::atomic<std::uint64_t> seq;
    // Written by the producer while it owns the buffer; read by consumers after they hold it.
    std::int64_t timestamp_ns;
    std::uint64_t nbytes;
    std::uint32_t meta_len;
    std::uint32_t ndim;
    std::uint8_t dtype_code;
    std::uint8_t dtype_bits;
    std::uint16_t reserved0;
    std::uint32_t reserved1;
    std::int64_t shape[MAX_DIMS];
};
static_assert(sizeof(BufferDesc) == 128);

struct alignas(CACHE_LINE) SlotDesc {
    std::atomic<std::uint64_t> received;
    std::atomic<std::uint64_t> dropped; // incremented by the producer when it takes a frame back
    std::atomic<std::uint64_t> skipped;
    std::atomic<std::int32_t> pid;      // informational only: never used for liveness
    std::atomic<std::uint32_t> latest;
    std::atomic<std::uint64_t> attached_ns;     // CLOCK_MONOTONIC
    std::atomic<std::uint64_t> last_seq_plus1;  // 0: nothing received yet
    std::atomic<std::int64_t> last_receive_ns;  // CLOCK_MONOTONIC, 0: never
};
static_assert(sizeof(SlotDesc) == 64);

struct PoolHeader {
    // Immutable after creation; validated by every opener.
    char magic[8];
    std::uint32_t layout_version;
    std::uint32_t header_size;
    std::uint64_t file_size;
    std::uint64_t page_size;
    std::uint64_t control_size;
    std::uint64_t desc_offset;
    std::uint64_t slot_offset;
    std::uint64_t meta_offset;
    std::uint64_t data_offset;
    std::uint64_t buffer_size;
    std::uint64_t buffer_stride;
    std::uint32_t meta_size;
    std::uint32_t meta_stride;
    std::uint32_t capacity;
    std::uint32_t max_consumers;
    std::uint32_t policy;
    std::uint32_t mode;
    std::uint32_t ndim;
    std::uint8_t dtype_code;
    std::uint8_t dtype_bits;
    std::uint16_t reserved0;
    std::int64_t shape[MAX_DIMS];
    std::uint64_t instance_id;
    std::int64_t created_ns;
    std::int32_t producer_pid; // informational only
    std::uint32_t reserved1;
    char name[MAX_NAME_LENGTH + 8];

    // Mutable, shared.
    alignas(CACHE_LINE) std::atomic<std::uint32_t> ready;  // 1 once initialised
    std::atomic<std::uint32_t> closed;                     // 1 after a clean producer close
    alignas(CACHE_LINE) std::atomic<std::uint64_t> active; // slots that receive new frames
    std::atomic<std::uint64_t> attached;                   // slots in use (may still hold frames)
    std::atomic<std::uint64_t> sleepers;                   // slots asleep in receive()
    alignas(CACHE_LINE) std::atomic<std::uint32_t> publish_futex;
    alignas(CACHE_LINE) std::atomic<std::uint32_t> free_futex;
    std::atomic<std::uint32_t> producer_sleeping; // producer threads asleep in acquire()
    std::atomic<std::int32_t> free_credit;        // frees still wanted before waking them
    alignas(CACHE_LINE) std::atomic<std::uint64_t> published;
    std::atomic<std::uint64_t> dropped;
    // Statistics for outside readers (bips list/top); written by the producer, never waited on.
    std::atomic<std::int64_t> last_publish_ns;  // CLOCK_MONOTONIC, 0: never
    std::atomic<std::int64_t> rate_start_ns;    // start of the current one-second rate window
    std::atomic<std::uint64_t> rate_start_count; // `published` at that start
    std::atomic<std::uint64_t> rate_mfps;        // frames/s x 1000 over the last full window
    std::atomic<std::uint64_t> acquire_waits;    // acquires that found no free buffer and waited
    std::atomic<std::uint64_t> acquire_wait_ns;  // time spent in those waits
};

/// The sizes that decide where everything lies; derived, never read back from the segment.
struct Layout {
    std::size_t page_size = 0;
    std::size_t control_size = 0;
    std::size_t desc_offset = 0;
    std::size_t slot_offset = 0;
    std::size_t ring_offset = 0; // capacity x u32: buffer index of seq % capacity (a hint)
    std::size_t meta_offset = 0;
    std::size_t meta_stride = 0;
    std::size_t data_offset = 0;
    std::size_t buffer_stride = 0;
    std::size_t file_size = 0;
};

inline constexpr std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

inline Layout compute_layout(std::uint32_t capacity, std::uint32_t max_consumers,
                             std::size_t buffer_size, std::size_t meta_size, std::size_t page) {
    Layout l;
    l.page_size = page;
    l.desc_offset = align_up(sizeof(PoolHeader), CACHE_LINE);
    l.slot_offset = l.desc_offset + std::size_t{capacity} * sizeof(BufferDesc);
    l.ring_offset = l.slot_offset + std::size_t{max_consumers} * sizeof(SlotDesc);
    l.control_size = align_up(l.ring_offset + std::size_t{capacity} * sizeof(std::uint32_t), page);
    l.meta_offset = l.control_size;
    l.meta_stride = align_up(meta_size, CACHE_LINE);
    l.data_offset = align_up(l.meta_offset + std::size_t{capacity} * l.meta_stride, page);
    l.buffer_stride = align_up(buffer_size, page);
    l.file_size = l.data_offset + std::size_t{capacity} * l.buffer_stride;
    return l;
}

} // namespace bips::detail
