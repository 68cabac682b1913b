// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <bips/device.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace bips {

/// Longest accepted pool name; names use [A-Za-z0-9_.-] and do not start with '.'.
constexpr std::size_t MAX_NAME_LENGTH = 64;
/// Most dimensions a frame's shape may have.
constexpr std::size_t MAX_DIMS = 8;
/// Most consumers one pool can serve (one bit each in the buffer state words).
constexpr std::uint32_t MAX_CONSUMERS = 32;
/// Most buffers one pool can hold.
constexpr std::uint32_t MAX_CAPACITY = 1024;
/// Version of the shared-memory layout this build reads and writes. Peers of another layout
/// version refuse each other's pools with IncompatiblePool.
constexpr std::uint32_t LAYOUT_VERSION = 4;

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::nanoseconds;

/// What the producer does when no buffer is free.
enum class Policy : std::uint32_t {
    block = 0,       ///< lossless: acquire() waits for the slowest consumer
    drop_oldest = 1, ///< live: take back the oldest published buffer no consumer is holding
};

/// Element type, with DLPack's type codes so that DLPack export is a plain copy.
struct DType {
    enum Code : std::uint8_t { Int = 0, UInt = 1, Float = 2, Bool = 6 };
    std::uint8_t code = UInt;
    std::uint8_t bits = 8;

    constexpr std::size_t itemsize() const noexcept { return bits / 8u; }
    friend constexpr bool operator==(DType a, DType b) noexcept {
        return a.code == b.code && a.bits == b.bits;
    }
    friend constexpr bool operator!=(DType a, DType b) noexcept { return !(a == b); }
    /// numpy-style name ("uint8", "float32"...); "invalid" for an unsupported pair.
    std::string name() const;
    /// Parses a numpy-style name; throws InvalidArgument for anything else.
    static DType from_name(const std::string &name);
    /// True for the pairs bips supports: int/uint 8-64, float 16-64, bool 8.
    constexpr bool valid() const noexcept {
        switch (code) {
        case Int:
        case UInt:
            return bits == 8 || bits == 16 || bits == 32 || bits == 64;
        case Float:
            return bits == 16 || bits == 32 || bits == 64;
        case Bool:
            return bits == 8;
        default:
            return false;
        }
    }
};

/// Bytes of a C-contiguous frame of `ndim` dimensions `dims` and element type `dtype`, if every
/// dimension is >= 0 and the frame fits in `limit` bytes. Strides are checked too: the product
/// of the non-zero dimensions must fit, so a zero dimension cannot hide huge ones that would
/// overflow a stride. nullopt otherwise (never overflows).
inline std::optional<std::size_t> frame_bytes(const std::int64_t *dims, std::size_t ndim,
                                              DType dtype, std::size_t limit) noexcept {
    if (!dtype.valid() || ndim > MAX_DIMS || dtype.itemsize() > limit)
        return std::nullopt;
    std::size_t nonzero = dtype.itemsize(); // bounds every stride
    bool empty = false;
    for (std::size_t k = 0; k < ndim; ++k) {
        const std::int64_t d = dims[k];
        if (d < 0)
            return std::nullopt;
        if (d == 0) {
            empty = true;
            continue;
        }
        // No division: this runs for every frame received.
        if (__builtin_mul_overflow(nonzero, static_cast<std::size_t>(d), &nonzero) ||
            nonzero > limit)
            return std::nullopt;
    }
    return empty ? 0 : nonzero;
}

inline constexpr DType UINT8{DType::UInt, 8};
inline constexpr DType UINT16{DType::UInt, 16};
inline constexpr DType FLOAT32{DType::Float, 32};

/// Shape of a frame, row-major, up to MAX_DIMS dimensions.
using Shape = std::vector<std::int64_t>;

/// Everything a producer fixes when it creates a pool.
struct PoolOptions {
    std::uint32_t capacity = 8;    ///< number of buffers
    std::size_t buffer_size = 0;   ///< bytes per buffer; 0 = derived from shape and dtype
    Shape shape;                   ///< default frame shape (consumers get shaped arrays)
    DType dtype = UINT8;           ///< default element type
    std::size_t meta_size = 0;     ///< bytes of user metadata per frame
    Policy policy = Policy::block; ///< overflow policy
    mode_t mode = 0600;            ///< permissions of the segment (0660/0666 for other users)
    std::uint32_t max_consumers = 8;
    /// acquire() spins briefly before sleeping on a full pool while recent waits were short
    /// (a few microseconds at most; never on a machine with one CPU). ProducerStats::spins and
    /// ::sleeps show what it did.
    bool adaptive_spin = true;
    /// Where the buffers live: Device::cpu (shared memory), or a CUDA device, whose pools
    /// consumers of other processes map on the same GPU (see docs/gpu.md).
    Device device;
};

/// Per-consumer settings.
/// ConsumerOptions::owner: accept pools of this process's uid or root (the default).
inline constexpr std::int64_t OWNER_SELF = -1;
/// ConsumerOptions::owner: accept pools of any owner (the cross-user setups of the docs).
inline constexpr std::int64_t ANY_OWNER = -2;

struct ConsumerOptions {
    bool latest = false;    ///< receive() returns the newest queued frame, gives older ones back
    Duration wait{0};       ///< how long the constructor waits for the pool (0: fail at once)
    bool reconnect = false; ///< follow a new producer instead of raising ProducerGone
    Duration spin{0};       ///< busy-poll this long before sleeping in receive()
    /// With spin 0: receive() spins briefly before sleeping while recent waits were short (a
    /// few microseconds at most; never on a machine with one CPU). See ConsumerStats::spins.
    bool adaptive_spin = true;
    /// Whose pools to accept: OWNER_SELF (this process's uid or root), ANY_OWNER, or a uid.
    /// A pool of another owner is refused with std::system_error(EPERM).
    std::int64_t owner = OWNER_SELF;
};

/// Producer-side counters; a snapshot.
struct ProducerStats {
    std::uint64_t published = 0; ///< frames published since the pool was created
    std::uint64_t dropped = 0;   ///< queued frames taken back under drop_oldest
    std::uint32_t capacity = 0;
    std::uint32_t free = 0;            ///< buffers neither acquired nor referenced by any consumer
    std::uint32_t in_flight = 0;       ///< capacity - free
    std::uint32_t consumers = 0;       ///< attached consumers
    std::uint64_t acquire_waits = 0;   ///< acquires that found no free buffer and waited
    std::uint64_t acquire_wait_ns = 0; ///< total time spent in those waits
    std::uint64_t spins = 0;           ///< waits in acquire() that ended while spinning (no sleep)
    std::uint64_t sleeps = 0;          ///< waits in acquire() that slept
};

/// Consumer-side counters; a snapshot.
struct ConsumerStats {
    std::uint64_t received = 0; ///< frames returned by receive()
    std::uint64_t dropped = 0;  ///< frames the producer took back before this consumer got them
    std::uint64_t skipped = 0;  ///< older frames given back by latest=true
    std::uint32_t queued = 0;   ///< frames waiting for this consumer now
    std::uint32_t held = 0;     ///< frames this consumer holds now
    std::uint32_t slot = 0;     ///< consumer slot index in the pool
    std::uint64_t reconnects = 0;
    std::uint64_t spins = 0;  ///< waits in receive() that ended while spinning (no sleep)
    std::uint64_t sleeps = 0; ///< waits in receive() that slept
};

/// One consumer slot as seen from outside (list/info tools).
struct SlotInfo {
    std::uint32_t slot = 0;
    bool alive = false;
    std::int32_t pid = 0; ///< pid in the consumer's own namespace (informational only)
    bool latest = false;
    std::uint64_t received = 0, dropped = 0, skipped = 0;
    std::uint32_t queued = 0, held = 0;
    std::uint64_t attached_ns = 0; ///< CLOCK_MONOTONIC when the consumer attached (coarse: ~ms)
    std::int64_t last_seq = -1;    ///< seq of the last frame received; -1: none yet
    std::int64_t last_receive_ns =
        0; ///< CLOCK_MONOTONIC of the last receive (coarse: ~ms); 0: never
};

/// A pool as seen from outside, read without attaching.
struct PoolInfo {
    std::string name;
    bool producer_alive = false;
    bool closed = false;
    std::uint32_t layout_version = 0;
    std::uint32_t capacity = 0;
    std::size_t buffer_size = 0;
    std::size_t meta_size = 0;
    Policy policy = Policy::block;
    mode_t mode = 0;
    uid_t owner = 0;
    std::uint32_t max_consumers = 0;
    std::uint32_t consumers = 0;
    std::uint32_t free = 0;
    std::uint64_t published = 0;
    std::uint64_t dropped = 0;
    std::int64_t last_publish_ns = 0;  ///< CLOCK_MONOTONIC of the last publish; 0: never
    double fps = 0;                    ///< frames/s over the last full second; 0 when idle > 2 s
    std::uint64_t acquire_waits = 0;   ///< acquires that found no free buffer and waited
    std::uint64_t acquire_wait_ns = 0; ///< total time spent in those waits
    Shape shape;
    DType dtype;
    std::int32_t producer_pid = 0;
    std::uint64_t created_ns = 0; ///< CLOCK_REALTIME
    std::size_t file_size = 0;
    std::vector<SlotInfo> slots;
    std::string device = "cpu";      ///< "cpu" or "cuda"
    std::string device_uuid;         ///< GPU pools: the GPU's UUID ("GPU-..."), the same everywhere
    std::int32_t device_ordinal = 0; ///< GPU pools: the producer's device ordinal
    std::string error;               ///< non-empty when the entry is not a readable pool
};

} // namespace bips
