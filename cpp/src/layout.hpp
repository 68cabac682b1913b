// SPDX-License-Identifier: Apache-2.0
// The shared-memory layout of a pool. Everything here is read by processes that may run another
// build of bips, so the layout is versioned and every field is validated before use.
//
// A pool is two files, split by who writes them:
//
//   /dev/shm/bips.NAME       the pool file, written only by the producer (mode without group/other
//                            write bits); consumers open and map it read-only:
//     [head: PoolHeader | FrameDesc x capacity | u32 x capacity (ring)]  page-aligned
//     [meta: capacity x meta_stride]
//     [data: capacity x buffer_stride, page-aligned]     host pools only
//   /dev/shm/bips.NAME@ctl   the control file, writable by every consumer (the pool's mode):
//     [ControlHeader | StateWord x capacity | SlotDesc x max_consumers]  page-aligned
//
//   /dev/shm/bips.NAME@fd    GPU pools only: the producer's Unix socket that hands consumers the
//                            descriptor of the pool's CUDA allocation (fd_channel.hpp), where
//                            buffer i lies at i x device_stride.
//
// So a consumer can delay or disturb delivery through the control file, but it cannot change
// what other consumers read: pixels, metadata, shapes, seq and timestamps. (Except a GPU pool's
// pixels: the allocation's descriptor imports read-write for whoever the mode admits.)
//
// Ownership of buffer i lives in one 64-bit word, StateWord::state: bit s of the low half says
// "queued for consumer slot s", bit s of the high half "held by consumer slot s". The producer
// only ever writes a buffer whose state is 0, so a dead consumer is cleaned up by clearing its two
// bits everywhere, an idempotent operation that any process may repeat after a crash.
#pragma once

#include <bips/types.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <sys/types.h>

namespace bips::detail {

inline constexpr char MAGIC[8] = {'B', 'I', 'P', 'S', 'P', 'O', 'O', 'L'};
inline constexpr char CTL_MAGIC[8] = {'B', 'I', 'P', 'S', 'C', 'T', 'R', 'L'};
inline constexpr char CTL_SUFFIX[] = "@ctl"; // '@' is not allowed in pool names
inline constexpr char FD_SUFFIX[] = "@fd";
using bips::LAYOUT_VERSION;
inline constexpr std::size_t CACHE_LINE = 64;
inline constexpr std::size_t MAX_BUFFER_SIZE = std::size_t{1} << 40;
inline constexpr std::size_t MAX_META_SIZE = std::size_t{1} << 20;
/// Alignment of buffers in a GPU pool's allocation (CUDA's own allocations align to 256).
inline constexpr std::size_t DEVICE_ALIGN = 4096;

// Byte offsets used as OFD locks (advisory, independent of the file's contents).
inline constexpr off_t LOCK_PRODUCER = 0;   // pool file: held by the live producer for its life
inline constexpr off_t LOCK_CONTROL = 1;    // control file: serializes attach and dead-slot cleanup
inline constexpr off_t LOCK_SLOT_BASE = 64; // control file, slot s: held by its consumer

inline constexpr std::uint64_t queued_bit(std::uint32_t slot) { return std::uint64_t{1} << slot; }
inline constexpr std::uint64_t held_bit(std::uint32_t slot) {
    return std::uint64_t{1} << (slot + 32);
}
inline constexpr std::uint32_t queued_mask(std::uint64_t state) {
    return static_cast<std::uint32_t>(state);
}
inline constexpr std::uint32_t held_mask(std::uint64_t state) {
    return static_cast<std::uint32_t>(state >> 32);
}
/// Both bits of every slot below max_consumers: anything else in a shared word is a stray.
inline constexpr std::uint64_t slots_mask(std::uint32_t max_consumers) {
    const std::uint64_t low =
        max_consumers >= 32 ? 0xffffffffull : (std::uint64_t{1} << max_consumers) - 1;
    return low | (low << 32);
}

/// FrameDesc::seq while the producer writes into the buffer (no frame has this seq).
inline constexpr std::uint64_t WRITING_SEQ = ~std::uint64_t{0};

/// Written by the producer while it owns the buffer; read by consumers after they hold it.
struct alignas(CACHE_LINE) FrameDesc {
    std::atomic<std::uint64_t> seq;
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
static_assert(sizeof(FrameDesc) == 128);

struct alignas(CACHE_LINE) StateWord {
    std::atomic<std::uint64_t> state;
};
static_assert(sizeof(StateWord) == 64);

struct alignas(CACHE_LINE) SlotDesc {
    std::atomic<std::uint64_t> received;
    std::atomic<std::uint64_t> dropped; // incremented by the producer when it takes a frame back
    std::atomic<std::uint64_t> skipped;
    std::atomic<std::int32_t> pid; // informational only: never used for liveness
    std::atomic<std::uint32_t> latest;
    std::atomic<std::uint64_t> attached_ns;    // CLOCK_MONOTONIC_COARSE
    std::atomic<std::uint64_t> last_seq_plus1; // 0: nothing received yet
    std::atomic<std::int64_t> last_receive_ns; // CLOCK_MONOTONIC_COARSE, 0: never
};
static_assert(sizeof(SlotDesc) == 64);

/// The head of the pool file.
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

    std::uint64_t ctl_size;

    // Where the buffers live. device_kind 0 (Device::cpu): in this file's data area. 2
    // (Device::cuda): in one CUDA allocation of device_size bytes on the GPU device_uuid, buffer
    // i at i x device_stride; the file has no data area.
    std::uint32_t device_kind;
    std::int32_t device_ordinal; // the producer's ordinal (informational: ordinals differ)
    unsigned char device_uuid[16];
    std::uint64_t device_stride;
    std::uint64_t device_size;

    // Written by the producer after creation; read by everyone.
    alignas(CACHE_LINE) std::atomic<std::uint32_t> ready; // 1 once initialised
    std::atomic<std::uint32_t> closed;                    // 1 after a clean producer close
    alignas(CACHE_LINE) std::atomic<std::uint64_t> published;
    std::atomic<std::uint64_t> dropped;
    // Statistics for outside readers (bips list/top); never read back by the producer.
    std::atomic<std::int64_t> last_publish_ns;  // CLOCK_MONOTONIC, 0: never
    std::atomic<std::uint64_t> rate_mfps;       // frames/s x 1000 over the last full window
    std::atomic<std::uint64_t> acquire_waits;   // acquires that found no free buffer and waited
    std::atomic<std::uint64_t> acquire_wait_ns; // time spent in those waits
};

/// The head of the control file. Everything after the immutable part is shared-writable.
struct ControlHeader {
    char magic[8];
    std::uint32_t layout_version;
    std::uint32_t header_size;
    std::uint64_t instance_id; // the PoolHeader's: ties this file to one pool file
    std::uint64_t ctl_size;

    alignas(CACHE_LINE) std::atomic<std::uint64_t> active; // slots that receive new frames
    std::atomic<std::uint64_t> attached;                   // slots in use (may still hold frames)
    std::atomic<std::uint64_t> sleepers;                   // slots asleep in receive()
    alignas(CACHE_LINE) std::atomic<std::uint32_t> publish_futex;
    alignas(CACHE_LINE) std::atomic<std::uint32_t> free_futex;
    std::atomic<std::uint32_t> producer_sleeping; // producer threads asleep in acquire()
    std::atomic<std::int32_t> free_credit;        // frees still wanted before waking them
};

/// The sizes that decide where everything lies; derived, never read back from the segment.
struct Layout {
    std::size_t page_size = 0;
    std::size_t control_size = 0; // the pool file's head: header, descriptors, ring
    std::size_t desc_offset = 0;
    std::size_t ring_offset = 0; // capacity x u32: buffer index of seq % capacity (a hint)
    std::size_t meta_offset = 0;
    std::size_t meta_stride = 0;
    std::size_t data_offset = 0;
    std::size_t buffer_stride = 0;
    std::size_t file_size = 0;
    std::size_t state_offset = 0; // control file
    std::size_t slot_offset = 0;  // control file
    std::size_t ctl_size = 0;
};

inline constexpr std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

/// `host_data`: the buffers live in the pool file (host pools), else elsewhere (GPU pools).
inline Layout compute_layout(std::uint32_t capacity, std::uint32_t max_consumers,
                             std::size_t buffer_size, std::size_t meta_size, std::size_t page,
                             bool host_data = true) {
    Layout l;
    l.page_size = page;
    l.desc_offset = align_up(sizeof(PoolHeader), CACHE_LINE);
    l.ring_offset = l.desc_offset + std::size_t{capacity} * sizeof(FrameDesc);
    l.control_size = align_up(l.ring_offset + std::size_t{capacity} * sizeof(std::uint32_t), page);
    l.meta_offset = l.control_size;
    l.meta_stride = align_up(meta_size, CACHE_LINE);
    l.data_offset = align_up(l.meta_offset + std::size_t{capacity} * l.meta_stride, page);
    l.buffer_stride = host_data ? align_up(buffer_size, page) : 0;
    l.file_size = l.data_offset + std::size_t{capacity} * l.buffer_stride;
    l.state_offset = align_up(sizeof(ControlHeader), CACHE_LINE);
    l.slot_offset = l.state_offset + std::size_t{capacity} * sizeof(StateWord);
    l.ctl_size = align_up(l.slot_offset + std::size_t{max_consumers} * sizeof(SlotDesc), page);
    return l;
}

} // namespace bips::detail
