// SPDX-License-Identifier: Apache-2.0
#include "producer_link.hpp"

#include "clock.hpp"

#include <bips/errors.hpp>

#include <gst/base/gstbasesink.h>

#include <chrono>
#include <exception>
#include <optional>
#include <utility>

GST_DEBUG_CATEGORY_STATIC(bips_link_debug);
#define GST_CAT_DEFAULT bips_link_debug

namespace {

void init_debug() {
    static const bool done = [] {
        GST_DEBUG_CATEGORY_INIT(bips_link_debug, "bipspool", 0, "bips buffer pool and memory");
        return true;
    }();
    (void)done;
}

// A blocked acquire waits this long at a time, so that it notices a flush, a state change or a
// replaced producer within it.
constexpr auto SLICE = std::chrono::milliseconds(20);
// How often a blocked acquire logs that it still waits.
constexpr std::int64_t WARN_EVERY_NS = 5'000'000'000;

// A strong reference to the link's element for one step (null once the element is gone).
class ElementRef {
public:
    explicit ElementRef(GWeakRef *ref) : m_element(GST_ELEMENT(g_weak_ref_get(ref))) {}
    ~ElementRef() {
        if (m_element)
            gst_object_unref(m_element);
    }
    ElementRef(const ElementRef &) = delete;
    ElementRef &operator=(const ElementRef &) = delete;
    GstElement *get() const { return m_element; }

private:
    GstElement *m_element;
};

// The sink pad is flushing from FLUSH_START to FLUSH_STOP and while it is deactivated (below
// PAUSED). Read at every slice of a wait rather than mirrored from unlock()/unlock_stop(): the
// base sink calls those two back to back during a flush, before the upstream thread blocked in
// our pool could see a flag between them.
bool sink_pad_flushing(GstElement *element) {
    if (!element || !GST_IS_BASE_SINK(element))
        return false;
    GstPad *pad = GST_BASE_SINK_PAD(element);
    GST_OBJECT_LOCK(pad);
    const bool flushing = GST_PAD_IS_FLUSHING(pad);
    GST_OBJECT_UNLOCK(pad);
    return flushing;
}

} // namespace

namespace bips::gst {

ProducerLink::ProducerLink(GstElement *element) {
    init_debug();
    g_weak_ref_init(&m_element, element);
}

ProducerLink::~ProducerLink() {
    close();
    g_weak_ref_clear(&m_element);
}

std::shared_ptr<bips::Producer> ProducerLink::current() const {
    std::lock_guard<std::mutex> lock(m_mutex);
    return m_producer;
}

void ProducerLink::replace(std::shared_ptr<bips::Producer> producer) {
    std::shared_ptr<bips::Producer> old;
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        old = std::exchange(m_producer, std::move(producer));
    }
    if (old)
        old->close(); // wakes anyone blocked in its acquire(); buffers still out stay valid
}

void ProducerLink::close() { replace(nullptr); }

GstFlowReturn ProducerLink::acquire(std::size_t size, bool wait, GstBufferPool *pool,
                                    const std::atomic<bool> *cancel, Acquired &out) {
    const std::uint64_t timeout_ns = m_timeout_ns.load(std::memory_order_relaxed);
    const std::int64_t start = monotonic_now_ns();
    std::int64_t warn_at = start + WARN_EVERY_NS;
    for (;;) {
        const ElementRef ref(&m_element);
        GstElement *element = ref.get();
        if (sink_pad_flushing(element) || (pool && GST_BUFFER_POOL_IS_FLUSHING(pool)) ||
            (cancel && cancel->load(std::memory_order_acquire)))
            return GST_FLOW_FLUSHING;
        std::shared_ptr<bips::Producer> producer = current();
        if (!producer || producer->closed())
            return GST_FLOW_FLUSHING; // stopped, or ended at EOS
        if (producer->buffer_size() < size) {
            // Cannot happen through the sink (it only ever grows its pool), but a pool must not
            // hand out memory smaller than it promised.
            if (element)
                GST_ELEMENT_ERROR(element, RESOURCE, FAILED, (nullptr),
                                  ("buffers of pool '%s' hold %zu bytes; %zu needed",
                                   producer->name().c_str(), producer->buffer_size(), size));
            return GST_FLOW_ERROR;
        }
        try {
            std::optional<bips::Buffer> buffer =
                wait ? producer->try_acquire_for(SLICE) : producer->try_acquire();
            if (buffer) {
                out.producer = std::move(producer);
                out.buffer = std::move(*buffer);
                return GST_FLOW_OK;
            }
        } catch (const std::exception &e) {
            if (producer->closed()) // replaced or closed while we waited: look again
                continue;
            if (element)
                GST_ELEMENT_ERROR(
                    element, RESOURCE, FAILED,
                    ("Could not acquire a buffer of pool '%s'.", producer->name().c_str()),
                    ("%s", e.what()));
            return GST_FLOW_ERROR;
        }
        if (!wait)
            return GST_FLOW_EOS;
        const std::int64_t now = monotonic_now_ns();
        if (timeout_ns != 0 && static_cast<std::uint64_t>(now - start) >= timeout_ns) {
            if (element)
                GST_ELEMENT_ERROR(
                    element, RESOURCE, BUSY,
                    ("No buffer of pool '%s' came free within acquire-timeout (%.3f s).",
                     producer->name().c_str(), static_cast<double>(timeout_ns) / 1e9),
                    ("consumers hold or have queued all %u buffers (policy block); raise "
                     "capacity or acquire-timeout, or use policy=drop-oldest",
                     producer->capacity()));
            return GST_FLOW_ERROR;
        }
        if (now >= warn_at) {
            GST_WARNING_OBJECT(element, "still waiting for a free buffer of pool '%s' after %.1f s",
                               producer->name().c_str(), static_cast<double>(now - start) / 1e9);
            warn_at += WARN_EVERY_NS;
        }
    }
}

} // namespace bips::gst
