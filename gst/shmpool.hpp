// SPDX-License-Identifier: Apache-2.0
#pragma once

// GStreamer memory and buffer pools backed by bips buffers.
//
// - BipsMemory: a GstMemory over a piece of shared memory, kept alive by an owner object that is
//   destroyed with the memory (bipssink: an acquired bips::Buffer; bipssrc: a received
//   bips::Frame, so releasing the last GstBuffer releases the frame).
// - ProducerLink: the producer of one bipssink, shared with the buffer pools it hands upstream,
//   with the interruptible acquire both use.
// - GstBipsBufferPool: a GstBufferPool whose every buffer wraps one freshly acquired bips buffer.
//   It never recycles GstBuffers: a released GstBuffer is freed, and with it the bips buffer goes
//   back (unless it was published), so no bips buffer is ever handed out twice.

#include <bips/producer.hpp>

#include <gst/gst.h>
#include <gst/video/video.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

namespace bips::gst {

/// Keeps the memory behind a BipsMemory alive; destroyed when the memory is freed.
class MemoryOwner {
public:
    virtual ~MemoryOwner() = default;
};

/// What a pool buffer's memory owns: one bips buffer acquired from `producer`, and after it was
/// published, the pin that keeps the producer from reusing it while the GstBuffer lives.
class SinkSlot final : public MemoryOwner {
public:
    std::shared_ptr<bips::Producer> producer;
    bips::Buffer buffer; // empty once published
    bips::BufferPin pin;
};

/// A new memory over `size` bytes at `data` (of `maxsize` usable), owned by `owner`. Read-only
/// memory cannot be mapped for writing; GStreamer then copies it when someone wants to write.
GstMemory *wrap_memory(std::unique_ptr<MemoryOwner> owner, void *data, std::size_t maxsize,
                       std::size_t size, bool readonly);

/// The owner of `mem` if it is a whole BipsMemory (not a sub-memory) at offset 0, else nullptr.
MemoryOwner *memory_owner(GstMemory *mem);

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

G_BEGIN_DECLS

#define GST_TYPE_BIPS_BUFFER_POOL (gst_bips_buffer_pool_get_type())
G_DECLARE_FINAL_TYPE(GstBipsBufferPool, gst_bips_buffer_pool, GST, BIPS_BUFFER_POOL, GstBufferPool)

G_END_DECLS

/// A pool for upstream whose buffers are bips buffers of `link`'s producer.
GstBufferPool *gst_bips_buffer_pool_new(std::shared_ptr<bips::gst::ProducerLink> link);
