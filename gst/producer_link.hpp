// SPDX-License-Identifier: Apache-2.0
#pragma once

// The producer of one bipssink, shared with the buffer pools it hands upstream, and the
// interruptible acquire both use.

#include "allocator.hpp"

#include <bips/producer.hpp>

#include <gst/gst.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

namespace bips::gst {

/// What a pool buffer's memory owns: one bips buffer acquired from `producer`, and after it was
/// published, the pin that keeps the producer from reusing it while the GstBuffer lives.
class SinkSlot final : public MemoryOwner {
public:
    std::shared_ptr<bips::Producer> producer;
    bips::Buffer buffer; // empty once published
    bips::BufferPin pin;
};

/// A bips buffer acquired for a GstBuffer, with the producer it came from.
struct Acquired {
    std::shared_ptr<bips::Producer> producer;
    bips::Buffer buffer;
};

/// The current producer of a bipssink, shared with the pools it proposed upstream (which may
/// outlive a producer: the sink replaces it when a caps change needs larger buffers).
class ProducerLink {
public:
    explicit ProducerLink(GstElement *element);
    ~ProducerLink();
    ProducerLink(const ProducerLink &) = delete;
    ProducerLink &operator=(const ProducerLink &) = delete;

    std::shared_ptr<bips::Producer> current() const;
    /// Makes `producer` current; the previous one is closed (its consumers get end of stream).
    void replace(std::shared_ptr<bips::Producer> producer);
    /// Closes and forgets the current producer.
    void close();

    /// How long a blocked acquire() waits in total before it posts an error; 0 = no limit.
    void set_acquire_timeout(std::uint64_t ns) {
        m_timeout_ns.store(ns, std::memory_order_relaxed);
    }

    /// A free buffer of at least `size` bytes from the current producer. With `wait`, waits in
    /// short slices until one frees, returning GST_FLOW_FLUSHING as soon as the element's sink
    /// pad is flushing (a flush, or a state change below PAUSED, which deactivates the pad),
    /// `pool` (if given) is flushing, `*cancel` (if given) is set or the producer is closed, and
    /// GST_FLOW_ERROR (with an error message posted on the element) once the acquire-timeout
    /// passes. Without `wait`, GST_FLOW_EOS when no buffer is free (the GstBufferPool convention
    /// for DONTWAIT).
    GstFlowReturn acquire(std::size_t size, bool wait, GstBufferPool *pool,
                          const std::atomic<bool> *cancel, Acquired &out);

private:
    mutable std::mutex m_mutex;
    std::shared_ptr<bips::Producer> m_producer;
    std::atomic<std::uint64_t> m_timeout_ns{0};
    GWeakRef m_element;
};

} // namespace bips::gst
