// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "segment.hpp"
#include "signaler.hpp"

#include <bips/producer.hpp>

#include <atomic>
#include <memory>
#include <mutex>

namespace bips::detail {

/// State shared by a Producer, its Buffers and their pins. Every method is thread-safe.
class ProducerCore : public std::enable_shared_from_this<ProducerCore> {
public:
    ProducerCore(const std::string &name, const PoolOptions &options);
    ~ProducerCore();

    std::optional<Buffer> acquire(Clock::time_point deadline, bool wait);
    /// Publishes now (host pools), or once the work queued on `stream` has finished (GPU pools).
    void publish(Buffer &buf, std::int64_t timestamp_ns, const void *meta, std::size_t meta_len,
                 CudaStream stream);
    void close() noexcept;
    bool closed() const noexcept { return m_closed.load(std::memory_order_acquire); }
    ProducerStats stats() const;

    void give_back(std::uint32_t index) noexcept;
    void pin(std::uint32_t index) noexcept {
        m_pins[index].fetch_add(1, std::memory_order_acq_rel);
    }
    void unpin(std::uint32_t index) noexcept;
    bool owns(std::uint32_t index) const noexcept {
        return m_owned[index].load(std::memory_order_acquire) != 0;
    }

    /// The format of acquired buffer `index`, kept in this process: the descriptor in the pool
    /// file is only ever written from it, never read back.
    struct Format {
        std::uint32_t ndim = 0;
        const std::int64_t *dims = nullptr; // the pool's default shape, or `shape` below
        std::int64_t shape[MAX_DIMS] = {};  // a shape set for this frame
        DType dtype;
        std::size_t nbytes = 0;
    };
    Format &format(std::uint32_t index) noexcept { return m_format[index]; }
    const Format &format(std::uint32_t index) const noexcept { return m_format[index]; }

    Segment &segment() noexcept { return *m_seg; }
    const Segment &segment() const noexcept { return *m_seg; }
    const Params &params() const noexcept { return m_seg->params(); }

private:
    // publish's two halves: checks and the descriptor (in the caller, errors to the caller),
    // then visibility (maybe later, in a CUDA host function: no CUDA calls, no allocations).
    // prepare returns the time it read (the default timestamp).
    std::int64_t prepare(Buffer &buf, std::int64_t timestamp_ns, const void *meta,
                         std::size_t meta_len);
    void commit(Buffer &buf, std::int64_t now_ns);
    bool claim_free(std::uint32_t &index) noexcept;
    bool reclaim_oldest(std::uint32_t &index) noexcept;
    void maybe_sweep(std::int64_t now_ns, bool force, bool may_wait);
    void note_publish(std::int64_t now_ns, std::uint64_t published) noexcept;
    Buffer make_buffer(std::uint32_t index);
    std::int32_t wake_batch() const noexcept;

    std::shared_ptr<Segment> m_seg;
    SpinTuner m_spin; // how long acquire() spins before it sleeps
    std::unique_ptr<std::atomic<std::uint8_t>[]> m_owned; // acquired by this producer
    std::unique_ptr<std::atomic<std::uint32_t>[]> m_pins; // outside references (see BufferPin)
    std::size_t m_default_nbytes = 0;                     // of the pool's default format
    std::unique_ptr<Format[]> m_format;                   // owned by whoever acquired the buffer
    std::unique_ptr<std::atomic<std::uint64_t>[]> m_seq;  // seq each buffer was last published with
    std::atomic<std::uint64_t> m_next_seq{0};
    std::atomic<std::uint64_t> m_published{0};
    std::atomic<std::uint64_t> m_dropped{0};
    std::atomic<std::uint64_t> m_acquire_waits{0};
    std::atomic<std::uint64_t> m_acquire_wait_ns{0};
    std::int64_t m_rate_start_ns = 0;       // under m_publish_mutex
    std::uint64_t m_rate_start_count = 0;   // under m_publish_mutex
    bool m_round_robin = true;              // else lowest free buffer first (see claim_free())
    std::atomic<std::uint32_t> m_cursor{0}; // where round-robin claim_free() starts looking
    std::atomic<std::int64_t> m_last_sweep_ns{0};
    std::atomic<bool> m_closed{false};
    std::atomic<std::uint32_t> m_pending_publishes{0}; // GPU pools: waiting for their stream
    std::mutex m_publish_mutex; // seq order == visibility order across publishing threads
};

} // namespace bips::detail
