// SPDX-License-Identifier: Apache-2.0
#include "shmpool.hpp"

#include <bips/errors.hpp>

#include <gst/base/gstbasesink.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <utility>

GST_DEBUG_CATEGORY_STATIC(bips_pool_debug);
#define GST_CAT_DEFAULT bips_pool_debug

namespace {

void init_debug() {
    static const bool done = [] {
        GST_DEBUG_CATEGORY_INIT(bips_pool_debug, "bipspool", 0, "bips buffer pool and memory");
        return true;
    }();
    (void)done;
}

// ---- BipsMemory and its allocator ----------------------------------------------------------

constexpr const char *BIPS_MEMORY_TYPE = "BipsMemory";

struct BipsMemory {
    GstMemory mem;
    bips::gst::MemoryOwner *owner; // null in sub-memories: their parent keeps the owner alive
    guint8 *data;                  // start of the whole area (maps add mem.offset)
};

// A blocked acquire waits this long at a time, so that it notices a flush, a state change or a
// replaced producer within it.
constexpr auto SLICE = std::chrono::milliseconds(20);
// How often a blocked acquire logs that it still waits.
constexpr std::int64_t WARN_EVERY_NS = 5'000'000'000;

std::int64_t monotonic_ns() { return g_get_monotonic_time() * 1000; }

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

G_BEGIN_DECLS
#define GST_TYPE_BIPS_ALLOCATOR (gst_bips_allocator_get_type())
G_DECLARE_FINAL_TYPE(GstBipsAllocator, gst_bips_allocator, GST, BIPS_ALLOCATOR, GstAllocator)
G_END_DECLS

struct _GstBipsAllocator {
    GstAllocator parent;
};

G_DEFINE_TYPE(GstBipsAllocator, gst_bips_allocator, GST_TYPE_ALLOCATOR)

static gpointer bips_mem_map(GstMemory *mem, gsize, GstMapFlags) {
    return reinterpret_cast<BipsMemory *>(mem)->data;
}

static void bips_mem_unmap(GstMemory *) {}

static GstMemory *bips_mem_share(GstMemory *mem, gssize offset, gssize size) {
    GstMemory *parent = mem->parent ? mem->parent : mem;
    if (size == -1)
        size = static_cast<gssize>(mem->size) - offset;
    auto *sub = g_new0(BipsMemory, 1);
    gst_memory_init(GST_MEMORY_CAST(sub),
                    static_cast<GstMemoryFlags>(GST_MINI_OBJECT_FLAGS(parent) |
                                                GST_MINI_OBJECT_FLAG_LOCK_READONLY),
                    mem->allocator, parent, mem->maxsize, mem->align,
                    mem->offset + static_cast<gsize>(offset), static_cast<gsize>(size));
    sub->data = reinterpret_cast<BipsMemory *>(mem)->data;
    sub->owner = nullptr;
    return GST_MEMORY_CAST(sub);
}

static void bips_mem_free(GstAllocator *, GstMemory *mem) {
    auto *m = reinterpret_cast<BipsMemory *>(mem);
    delete m->owner; // gives back the bips buffer / frame (or drops the pin)
    g_free(m);
}

static void gst_bips_allocator_class_init(GstBipsAllocatorClass *klass) {
    init_debug();
    auto *alloc_class = GST_ALLOCATOR_CLASS(klass);
    alloc_class->alloc = nullptr; // memories are only made by wrap_memory()
    alloc_class->free = bips_mem_free;
}

static void gst_bips_allocator_init(GstBipsAllocator *self) {
    auto *alloc = GST_ALLOCATOR_CAST(self);
    alloc->mem_type = BIPS_MEMORY_TYPE;
    alloc->mem_map = bips_mem_map;
    alloc->mem_unmap = bips_mem_unmap;
    alloc->mem_share = bips_mem_share;
    // mem_copy and mem_is_span keep GstAllocator's generic versions: a copy lands in ordinary
    // memory, which is what a writer of read-only frame memory needs.
    GST_OBJECT_FLAG_SET(self, GST_ALLOCATOR_FLAG_CUSTOM_ALLOC);
}

static GstAllocator *bips_allocator() {
    static GstAllocator *const allocator = [] {
        auto *a = GST_ALLOCATOR_CAST(g_object_new(GST_TYPE_BIPS_ALLOCATOR, nullptr));
        gst_object_ref_sink(a);
        // One per process, for the life of the process.
        GST_OBJECT_FLAG_SET(a, GST_OBJECT_FLAG_MAY_BE_LEAKED);
        return a;
    }();
    return allocator;
}

namespace bips::gst {

GstMemory *wrap_memory(std::unique_ptr<MemoryOwner> owner, void *data, std::size_t maxsize,
                       std::size_t size, bool readonly) {
    auto *m = g_new0(BipsMemory, 1);
    gst_memory_init(GST_MEMORY_CAST(m),
                    readonly ? GST_MEMORY_FLAG_READONLY : static_cast<GstMemoryFlags>(0),
                    bips_allocator(), nullptr, maxsize, 0, 0, size);
    m->data = static_cast<guint8 *>(data);
    m->owner = owner.release();
    return GST_MEMORY_CAST(m);
}

MemoryOwner *memory_owner(GstMemory *mem) {
    if (!mem || !gst_memory_is_type(mem, BIPS_MEMORY_TYPE) || mem->parent || mem->offset != 0)
        return nullptr;
    return reinterpret_cast<BipsMemory *>(mem)->owner;
}

// ---- ProducerLink --------------------------------------------------------------------------

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
    const std::int64_t start = monotonic_ns();
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
        const std::int64_t now = monotonic_ns();
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

// ---- GstBipsBufferPool ---------------------------------------------------------------------

namespace {
struct PoolState {
    std::shared_ptr<bips::gst::ProducerLink> link;
    std::mutex mutex; // set_config() vs acquire_buffer() on other threads
    GstVideoInfo info;
    bool have_info = false;
    bool video_meta = false;
    guint size = 0;
};
} // namespace

struct _GstBipsBufferPool {
    GstBufferPool parent;
    PoolState *state;
};

G_DEFINE_TYPE(GstBipsBufferPool, gst_bips_buffer_pool, GST_TYPE_BUFFER_POOL)

static const gchar **bips_pool_get_options(GstBufferPool *) {
    static const gchar *options[] = {GST_BUFFER_POOL_OPTION_VIDEO_META, nullptr};
    return options;
}

static gboolean bips_pool_set_config(GstBufferPool *bp, GstStructure *config) {
    PoolState *st = GST_BIPS_BUFFER_POOL(bp)->state;
    GstCaps *caps = nullptr;
    guint size = 0, min = 0, max = 0;
    if (!gst_buffer_pool_config_get_params(config, &caps, &size, &min, &max) || !caps) {
        GST_WARNING_OBJECT(bp, "config without caps");
        return FALSE;
    }
    GstVideoInfo info;
    if (!gst_video_info_from_caps(&info, caps)) {
        GST_WARNING_OBJECT(bp, "caps are not raw video: %" GST_PTR_FORMAT, caps);
        return FALSE;
    }
    if (size < info.size) {
        size = static_cast<guint>(info.size);
        gst_buffer_pool_config_set_params(config, caps, size, min, max);
    }
    auto producer = st->link->current();
    if (producer && producer->buffer_size() < size) {
        GST_WARNING_OBJECT(bp, "buffers of %u bytes asked; pool '%s' has %zu", size,
                           producer->name().c_str(), producer->buffer_size());
        return FALSE;
    }
    if (producer && min > producer->capacity()) {
        // An upstream that keeps `min` buffers (a decoder's reference frames) would wait forever
        // for more than the pool has. Say what fits (the GstBufferPool way: FALSE with the
        // config updated) so that upstream can accept it or use a pool of its own.
        GST_WARNING_OBJECT(bp, "%u buffers asked at least; pool '%s' has %u", min,
                           producer->name().c_str(), producer->capacity());
        gst_buffer_pool_config_set_params(config, caps, size, producer->capacity(),
                                          producer->capacity());
        return FALSE;
    }
    {
        std::lock_guard<std::mutex> lock(st->mutex);
        st->info = info;
        st->have_info = true;
        st->video_meta =
            gst_buffer_pool_config_has_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
        st->size = size;
    }
    return GST_BUFFER_POOL_CLASS(gst_bips_buffer_pool_parent_class)->set_config(bp, config);
}

static gboolean bips_pool_start(GstBufferPool *) {
    return TRUE; // nothing to preallocate: every acquire takes a bips buffer
}

static GstFlowReturn bips_pool_acquire_buffer(GstBufferPool *bp, GstBuffer **out,
                                              GstBufferPoolAcquireParams *params) {
    PoolState *st = GST_BIPS_BUFFER_POOL(bp)->state;
    GstVideoInfo info;
    bool have_info, video_meta;
    guint size;
    {
        std::lock_guard<std::mutex> lock(st->mutex);
        info = st->info;
        have_info = st->have_info;
        video_meta = st->video_meta;
        size = st->size;
    }
    if (!have_info)
        return GST_FLOW_NOT_NEGOTIATED;
    const bool wait = !(params && (params->flags & GST_BUFFER_POOL_ACQUIRE_FLAG_DONTWAIT));
    bips::gst::Acquired acquired;
    const GstFlowReturn ret = st->link->acquire(size, wait, bp, nullptr, acquired);
    if (ret != GST_FLOW_OK)
        return ret;
    void *data = acquired.buffer.data();
    const std::size_t capacity = acquired.buffer.capacity();
    auto slot = std::make_unique<bips::gst::SinkSlot>();
    slot->producer = std::move(acquired.producer);
    slot->buffer = std::move(acquired.buffer);
    GstBuffer *buf = gst_buffer_new();
    gst_buffer_append_memory(
        buf, bips::gst::wrap_memory(std::move(slot), data, capacity, size, false));
    if (video_meta)
        gst_buffer_add_video_meta_full(buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_INFO_FORMAT(&info),
                                       GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info),
                                       GST_VIDEO_INFO_N_PLANES(&info), info.offset, info.stride);
    *out = buf;
    return GST_FLOW_OK;
}

static void bips_pool_release_buffer(GstBufferPool *, GstBuffer *buffer) {
    // No recycling: freeing the GstBuffer frees its memory, which gives an unpublished bips
    // buffer back (a published one only drops its pin). The next acquire takes whatever bips
    // buffer is free then.
    gst_buffer_unref(buffer);
}

static void gst_bips_buffer_pool_finalize(GObject *object) {
    delete GST_BIPS_BUFFER_POOL(object)->state;
    G_OBJECT_CLASS(gst_bips_buffer_pool_parent_class)->finalize(object);
}

static void gst_bips_buffer_pool_class_init(GstBipsBufferPoolClass *klass) {
    init_debug();
    G_OBJECT_CLASS(klass)->finalize = gst_bips_buffer_pool_finalize;
    auto *pool_class = GST_BUFFER_POOL_CLASS(klass);
    pool_class->get_options = bips_pool_get_options;
    pool_class->set_config = bips_pool_set_config;
    pool_class->start = bips_pool_start;
    pool_class->acquire_buffer = bips_pool_acquire_buffer;
    pool_class->release_buffer = bips_pool_release_buffer;
}

static void gst_bips_buffer_pool_init(GstBipsBufferPool *self) { self->state = new PoolState(); }

GstBufferPool *gst_bips_buffer_pool_new(std::shared_ptr<bips::gst::ProducerLink> link) {
    auto *self = GST_BIPS_BUFFER_POOL(g_object_new(GST_TYPE_BIPS_BUFFER_POOL, nullptr));
    gst_object_ref_sink(self);
    self->state->link = std::move(link);
    return GST_BUFFER_POOL_CAST(self);
}
