// SPDX-License-Identifier: Apache-2.0
// bipssink: publishes raw video into a bips pool.
//
// The pool is created when caps are known (buffers of the caps' frame size, meta_size 4096).
// Upstream is offered a GstBufferPool whose buffers *are* bips buffers, so a frame rendered from
// it is published without a copy; any other buffer is copied plane by plane into a bips buffer.
// With device=cuda:N the pool lives on that GPU: upstream cannot write there, so no pool is
// proposed, and each frame is uploaded once into a pool buffer, however many consumers read it.
// A caps change that needs larger buffers replaces the pool (consumers of the old one get end of
// stream, or follow with reconnect=True); smaller frames reuse it. EOS and stop close the pool:
// consumers drain what is queued, then get end of stream.

#include "bipssink.hpp"

#include "bufferpool.hpp"
#include "clock.hpp"
#include "videometa.hpp"

#include <bips/bips.hpp>

#include <gst/video/video.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

GST_DEBUG_CATEGORY_STATIC(bips_sink_debug);
#define GST_CAT_DEFAULT bips_sink_debug

using bips::gst::Acquired;
using bips::gst::FrameLayout;
using bips::gst::Plane;
using bips::gst::ProducerLink;
using bips::gst::SinkSlot;

namespace {

enum {
    PROP_0,
    PROP_POOL,
    PROP_CAPACITY,
    PROP_POLICY,
    PROP_MODE,
    PROP_MAX_CONSUMERS,
    PROP_ACQUIRE_TIMEOUT,
    PROP_WAIT_FOR_CONSUMERS,
    PROP_PUBLISHED,
    PROP_COPIES,
    PROP_ZERO_COPY,
    PROP_DEVICE,
    PROP_UPLOADS,
    PROP_UPLOAD_BYTES,
};

constexpr guint DEFAULT_CAPACITY = 8;
constexpr gint DEFAULT_POLICY = 0; // block
constexpr guint DEFAULT_MODE = 0600;
constexpr guint DEFAULT_MAX_CONSUMERS = 8;

struct Settings {
    std::string pool;
    guint capacity = DEFAULT_CAPACITY;
    gint policy = DEFAULT_POLICY;
    guint mode = DEFAULT_MODE;
    guint max_consumers = DEFAULT_MAX_CONSUMERS;
    guint64 acquire_timeout = 0;
    guint wait_for_consumers = 0;
    std::string device = "cpu";
};

// The stream frames are uploaded on: CUDA's per-thread default stream of the streaming thread.
// Unlike the legacy default stream it does not wait for (or hold up) the work other elements of
// the process queue on their own blocking streams, and it needs no stream of our own to create.
const bips::CudaStream UPLOAD_STREAM = bips::STREAM_PER_THREAD;

struct SinkState {
    std::mutex settings_mutex;
    Settings settings;
    std::shared_ptr<ProducerLink> link;
    std::atomic<bool> unlocked{false}; // unlock() called: a blocking render step must yield
    std::atomic<guint64> published{0}, copies{0}, zero_copy{0}, uploads{0}, upload_bytes{0};

    // Streaming-thread state: set_caps, propose_allocation, render and event are serialized
    // there, and start/stop run while that thread is out of the element.
    GstCaps *caps = nullptr;
    GstVideoInfo info;
    bool have_info = false;
    FrameLayout layout;             // the standard layout of `info`, which the copy path writes
    std::string prefix;             // metadata prefix for `layout`
    bips::Device device;            // the `device` setting, parsed at start
    std::vector<std::byte> staging; // GPU pools: a frame repacked into `layout` before its upload
    std::weak_ptr<bips::Producer> waited_for; // producer whose wait-for-consumers is done

    ~SinkState() { gst_caps_replace(&caps, nullptr); }
};

} // namespace

struct _GstBipsSink {
    GstBaseSink parent;
    SinkState *st;
};

G_DEFINE_TYPE(GstBipsSink, gst_bips_sink, GST_TYPE_BASE_SINK)

GType gst_bips_sink_policy_get_type(void) {
    static GType type = 0;
    if (g_once_init_enter(&type)) {
        static const GEnumValue values[] = {
            {0, "Lossless: wait for a buffer that every consumer released", "block"},
            {1, "Live: take back the oldest queued frame that no consumer holds", "drop-oldest"},
            // The spelling of the Python and C++ APIs: pipelines may use either.
            {1, "The same as drop-oldest", "drop_oldest"},
            {0, nullptr, nullptr},
        };
        g_once_init_leave(&type, g_enum_register_static("GstBipsSinkPolicy", values));
    }
    return type;
}

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(BIPS_GST_CAPS));

static Settings settings_of(GstBipsSink *self) {
    std::lock_guard<std::mutex> lock(self->st->settings_mutex);
    return self->st->settings;
}

// The frame's capture time on CLOCK_MONOTONIC: its running time plus the base time is its time
// on the pipeline clock, mapped to CLOCK_MONOTONIC (see clock_offset_ns()). -1 (publish time)
// when the buffer has no usable timestamp or the element no clock.
static std::int64_t capture_time_ns(GstBipsSink *self, GstBuffer *buffer) {
    const GstClockTime pts = GST_BUFFER_PTS(buffer);
    if (!GST_CLOCK_TIME_IS_VALID(pts))
        return -1;
    GstBaseSink *bs = GST_BASE_SINK(self);
    const GstClockTime running = gst_segment_to_running_time(&bs->segment, GST_FORMAT_TIME, pts);
    if (!GST_CLOCK_TIME_IS_VALID(running))
        return -1;
    GstClock *clock = gst_element_get_clock(GST_ELEMENT(self));
    if (!clock)
        return -1;
    const GstClockTime on_clock = running + gst_element_get_base_time(GST_ELEMENT(self));
    const std::int64_t ts = static_cast<std::int64_t>(on_clock) - bips::gst::clock_offset_ns(clock);
    gst_object_unref(clock);
    return ts >= 0 ? ts : -1;
}

static void post_stats(GstBipsSink *self) {
    const Settings s = settings_of(self);
    GstStructure *st = gst_structure_new(
        "bipssink-stats", "pool", G_TYPE_STRING, s.pool.c_str(), "device", G_TYPE_STRING,
        self->st->device.str().c_str(), "published", G_TYPE_UINT64, self->st->published.load(),
        "copies", G_TYPE_UINT64, self->st->copies.load(), "zero-copy", G_TYPE_UINT64,
        self->st->zero_copy.load(), "uploads", G_TYPE_UINT64, self->st->uploads.load(),
        "upload-bytes", G_TYPE_UINT64, self->st->upload_bytes.load(), nullptr);
    gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), st));
}

// Makes sure a producer with buffers of at least `size` bytes exists, creating (or replacing)
// it with `layout` as the pool's default format. Posts an error and returns false on failure.
static bool ensure_producer(GstBipsSink *self, std::size_t size, const FrameLayout &layout) {
    SinkState *st = self->st;
    auto current = st->link->current();
    if (current && !current->closed() && current->buffer_size() >= size)
        return true;
    const Settings s = settings_of(self);
    if (current && !current->closed())
        GST_INFO_OBJECT(self, "frames of %zu bytes do not fit pool '%s' (%zu): replacing it", size,
                        s.pool.c_str(), current->buffer_size());
    // The old producer must be gone before a new one can take the name.
    st->link->close();
    bips::PoolOptions opt;
    opt.capacity = s.capacity;
    opt.buffer_size = size;
    opt.shape = layout.shape;
    opt.dtype = layout.dtype;
    opt.meta_size = bips::gst::META_SIZE;
    opt.policy = s.policy == 1 ? bips::Policy::drop_oldest : bips::Policy::block;
    opt.mode = static_cast<mode_t>(s.mode);
    opt.max_consumers = s.max_consumers;
    opt.device = st->device;
    const std::string where = st->device.str();
    try {
        st->link->replace(std::make_shared<bips::Producer>(s.pool, opt));
        GST_INFO_OBJECT(self, "created pool '%s' on %s: %u buffers of %zu bytes", s.pool.c_str(),
                        where.c_str(), s.capacity, size);
        return true;
    } catch (const bips::PoolBusy &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, BUSY,
                          ("Pool '%s' is in use by another producer.", s.pool.c_str()),
                          ("%s", e.what()));
    } catch (const bips::InvalidArgument &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                          ("Cannot create pool '%s' with these settings.", s.pool.c_str()),
                          ("%s", e.what()));
    } catch (const bips::DeviceUnavailable &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                          ("Cannot create pool '%s' on %s.", s.pool.c_str(), where.c_str()),
                          ("%s", e.what()));
    } catch (const bips::DeviceError &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, FAILED,
                          ("Cannot create pool '%s' on %s.", s.pool.c_str(), where.c_str()),
                          ("%s", e.what()));
    } catch (const std::system_error &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_WRITE, ("Cannot create pool '%s'.", s.pool.c_str()),
                          ("%s", e.what()));
    } catch (const std::exception &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, FAILED, ("Cannot create pool '%s'.", s.pool.c_str()),
                          ("%s", e.what()));
    }
    return false;
}

// unlock() interrupted a blocking step of render(): wait as GstBaseSink wants it, until PLAYING
// again (GST_FLOW_OK: retry the step) or a flush or stop (GST_FLOW_FLUSHING).
static GstFlowReturn yield_to_state_change(GstBipsSink *self) {
    GST_DEBUG_OBJECT(self, "unlocked while blocked; waiting for PLAYING or a flush");
    return gst_base_sink_wait_preroll(GST_BASE_SINK(self));
}

static GstFlowReturn wait_for_consumers(GstBipsSink *self,
                                        const std::shared_ptr<bips::Producer> &producer) {
    SinkState *st = self->st;
    const guint wanted = settings_of(self).wait_for_consumers;
    if (wanted == 0 || st->waited_for.lock() == producer)
        return GST_FLOW_OK;
    GST_INFO_OBJECT(self, "waiting for %u consumer(s) of pool '%s'", wanted,
                    producer->name().c_str());
    while (producer->stats().consumers < wanted) {
        if (st->unlocked.load(std::memory_order_acquire)) {
            const GstFlowReturn ret = yield_to_state_change(self);
            if (ret != GST_FLOW_OK)
                return ret;
            continue;
        }
        g_usleep(2000);
    }
    st->waited_for = producer;
    return GST_FLOW_OK;
}

// `stream`: GPU pools, the stream that wrote the buffer (the frame is visible once it finished).
static bool publish(GstBipsSink *self, const std::shared_ptr<bips::Producer> &producer,
                    bips::Buffer &&buffer, const FrameLayout &layout, const std::string &prefix,
                    GstBuffer *gstbuf, bips::CudaStream stream = nullptr) {
    const std::string meta =
        bips::gst::finish_meta(prefix, GST_BUFFER_PTS(gstbuf), GST_BUFFER_DURATION(gstbuf));
    try {
        buffer.set_format(layout.shape, layout.dtype);
        producer->publish(std::move(buffer), capture_time_ns(self, gstbuf), meta.data(),
                          meta.size(), stream);
    } catch (const std::exception &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, WRITE,
                          ("Could not publish a frame to pool '%s'.", producer->name().c_str()),
                          ("%s", e.what()));
        return false;
    }
    self->st->published.fetch_add(1, std::memory_order_relaxed);
    return true;
}

static GstFlowReturn render_zero_copy(GstBipsSink *self,
                                      const std::shared_ptr<bips::Producer> &producer,
                                      GstBuffer *buffer, SinkSlot *slot) {
    SinkState *st = self->st;
    GstMemory *mem = gst_buffer_peek_memory(buffer, 0);
    const FrameLayout *layout = &st->layout;
    const std::string *prefix = &st->prefix;
    FrameLayout own_layout;
    std::string own_prefix;
    // Upstream wrote through the buffer's video meta; describe what it says if it is not the
    // standard layout (the pool proposes the standard one, so this is rare).
    if (GstVideoMeta *vm = gst_buffer_get_video_meta(buffer)) {
        std::vector<Plane> planes(vm->n_planes);
        for (guint p = 0; p < vm->n_planes; ++p)
            planes[p] = Plane{vm->offset[p], static_cast<std::size_t>(vm->stride[p])};
        if (planes != st->layout.planes) {
            std::string error;
            if (!bips::gst::check_planes(st->info, planes, mem->size, error)) {
                GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Invalid video buffer layout."),
                                  ("%s", error.c_str()));
                return GST_FLOW_ERROR;
            }
            own_layout = bips::gst::describe(st->info, planes, mem->size);
            own_prefix = bips::gst::meta_prefix(st->caps, st->info, planes);
            layout = &own_layout;
            prefix = &own_prefix;
        }
    }
    if (mem->size < layout->nbytes) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Buffer too small for the caps."),
                          ("%zu bytes, the frame needs %zu", mem->size, layout->nbytes));
        return GST_FLOW_ERROR;
    }
    // The pin keeps the producer from reusing the buffer while this GstBuffer (or anything that
    // shares its memory) still points at it; it goes with the memory.
    slot->pin = slot->buffer.pin();
    if (!publish(self, producer, std::move(slot->buffer), *layout, *prefix, buffer))
        return GST_FLOW_ERROR;
    // Consumers read it now: whoever else holds this GstBuffer (a tee's other branch) gets a
    // copy if it wants to write, never the published pixels.
    GST_MINI_OBJECT_FLAG_SET(mem, GST_MEMORY_FLAG_READONLY);
    st->zero_copy.fetch_add(1, std::memory_order_relaxed);
    return GST_FLOW_OK;
}

// A pool buffer for render() to fill, waiting as long as the pipeline lets it.
static GstFlowReturn acquire_for_render(GstBipsSink *self, Acquired &acquired) {
    SinkState *st = self->st;
    for (;;) {
        const GstFlowReturn ret = st->link->acquire(GST_VIDEO_INFO_SIZE(&st->info), true, nullptr,
                                                    &st->unlocked, acquired);
        if (ret == GST_FLOW_OK)
            return ret;
        if (ret != GST_FLOW_FLUSHING || !st->unlocked.load(std::memory_order_acquire))
            return ret;
        const GstFlowReturn resumed = yield_to_state_change(self);
        if (resumed != GST_FLOW_OK)
            return resumed;
    }
}

static GstFlowReturn render_copy(GstBipsSink *self, GstBuffer *buffer) {
    SinkState *st = self->st;
    Acquired acquired;
    const GstFlowReturn acquired_ret = acquire_for_render(self, acquired);
    if (acquired_ret != GST_FLOW_OK)
        return acquired_ret;
    // Write the standard layout of the caps, plane by plane, whatever strides the input has.
    GstBuffer *dst = gst_buffer_new_wrapped_full(
        static_cast<GstMemoryFlags>(0), acquired.buffer.data(), acquired.buffer.capacity(), 0,
        GST_VIDEO_INFO_SIZE(&st->info), nullptr, nullptr);
    const bips::gst::CopyResult copied = bips::gst::copy_frame(st->info, buffer, dst);
    gst_buffer_unref(dst);
    if (copied == bips::gst::CopyResult::BadInput) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Buffer does not match the caps."),
                          ("a buffer of %zu bytes is no %dx%d %s frame",
                           gst_buffer_get_size(buffer), GST_VIDEO_INFO_WIDTH(&st->info),
                           GST_VIDEO_INFO_HEIGHT(&st->info), GST_VIDEO_INFO_NAME(&st->info)));
        return GST_FLOW_ERROR;
    }
    if (copied != bips::gst::CopyResult::Copied) {
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Could not copy a frame."), (nullptr));
        return GST_FLOW_ERROR;
    }
    if (!publish(self, acquired.producer, std::move(acquired.buffer), st->layout, st->prefix,
                 buffer))
        return GST_FLOW_ERROR;
    st->copies.fetch_add(1, std::memory_order_relaxed);
    return GST_FLOW_OK;
}

// True when `buffer` holds its frame in one piece of memory, in `layout`'s planes: its bytes can
// be uploaded as they are.
static bool in_layout(GstBuffer *buffer, const FrameLayout &layout, std::size_t size) {
    if (gst_buffer_n_memory(buffer) != 1 || gst_buffer_get_size(buffer) < size)
        return false;
    GstVideoMeta *vm = gst_buffer_get_video_meta(buffer);
    if (!vm)
        return true;
    std::vector<Plane> planes(vm->n_planes);
    for (guint p = 0; p < vm->n_planes; ++p)
        planes[p] = Plane{vm->offset[p], static_cast<std::size_t>(vm->stride[p])};
    return planes == layout.planes;
}

// GPU pools: one upload per frame, however many consumers read it. The frame's bytes go from
// the mapped GstBuffer straight into a pool buffer (repacked on the host first only when its
// planes are not the standard layout), then the buffer is published on the same stream, so
// consumers see it once the copy finished, and the stream is synchronised before the GstBuffer
// is unmapped. The wait is needed: from pinned memory (a CUDA-aware upstream) the copy reads
// the source when the stream gets there, after render() would have returned and the buffer been
// reused. It costs little: from pageable memory the copy call itself returns only once the
// bytes are staged, and either way the frame only becomes visible after the copy; in exchange,
// nothing is in flight when render() returns (stop, EOS and errors need no bookkeeping).
static GstFlowReturn render_upload(GstBipsSink *self, GstBuffer *buffer) {
    SinkState *st = self->st;
    const std::size_t size = GST_VIDEO_INFO_SIZE(&st->info);
    Acquired acquired;
    GstFlowReturn ret = acquire_for_render(self, acquired);
    if (ret != GST_FLOW_OK)
        return ret;
    GstBuffer *src = nullptr;
    if (in_layout(buffer, st->layout, size)) {
        src = gst_buffer_ref(buffer);
    } else {
        st->staging.resize(size);
        src = gst_buffer_new_wrapped_full(static_cast<GstMemoryFlags>(0), st->staging.data(), size,
                                          0, size, nullptr, nullptr);
        const bips::gst::CopyResult copied = bips::gst::copy_frame(st->info, buffer, src);
        if (copied != bips::gst::CopyResult::Copied) {
            gst_buffer_unref(src);
            GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Buffer does not match the caps."),
                              ("a buffer of %zu bytes is no %dx%d %s frame",
                               gst_buffer_get_size(buffer), GST_VIDEO_INFO_WIDTH(&st->info),
                               GST_VIDEO_INFO_HEIGHT(&st->info), GST_VIDEO_INFO_NAME(&st->info)));
            return GST_FLOW_ERROR;
        }
        st->copies.fetch_add(1, std::memory_order_relaxed);
    }
    GstMapInfo map;
    if (!gst_buffer_map(src, &map, GST_MAP_READ)) {
        gst_buffer_unref(src);
        GST_ELEMENT_ERROR(self, RESOURCE, READ, ("Could not read a frame."), (nullptr));
        return GST_FLOW_ERROR;
    }
    const std::shared_ptr<bips::Producer> producer = acquired.producer;
    const bips::Device device = producer->device();
    bool queued = false;
    try {
        acquired.buffer.copy_from(map.data, size, UPLOAD_STREAM);
        queued = true;
    } catch (const std::exception &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, WRITE,
                          ("Could not upload a frame to pool '%s' on %s.", producer->name().c_str(),
                           device.str().c_str()),
                          ("%s", e.what()));
        ret = GST_FLOW_ERROR;
    }
    if (queued && !publish(self, producer, std::move(acquired.buffer), st->layout, st->prefix,
                           buffer, UPLOAD_STREAM))
        ret = GST_FLOW_ERROR;
    if (queued) {
        // Even after a failed publish: the copy may still read `map`.
        try {
            bips::stream_synchronize(device, UPLOAD_STREAM);
        } catch (const std::exception &e) {
            if (ret == GST_FLOW_OK)
                GST_ELEMENT_ERROR(self, RESOURCE, WRITE,
                                  ("Could not upload a frame to pool '%s' on %s.",
                                   producer->name().c_str(), device.str().c_str()),
                                  ("%s", e.what()));
            ret = GST_FLOW_ERROR;
        }
    }
    gst_buffer_unmap(src, &map);
    gst_buffer_unref(src);
    if (ret == GST_FLOW_OK) {
        st->uploads.fetch_add(1, std::memory_order_relaxed);
        st->upload_bytes.fetch_add(size, std::memory_order_relaxed);
    }
    return ret;
}

static GstFlowReturn gst_bips_sink_render(GstBaseSink *bs, GstBuffer *buffer) {
    auto *self = GST_BIPS_SINK(bs);
    SinkState *st = self->st;
    if (!st->have_info) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, (nullptr), ("no caps before the first buffer"));
        return GST_FLOW_NOT_NEGOTIATED;
    }
    // After EOS closed the pool, a new stream (flushing seek) starts a new one.
    if (!ensure_producer(self, GST_VIDEO_INFO_SIZE(&st->info), st->layout))
        return GST_FLOW_ERROR;
    auto producer = st->link->current();
    if (!producer)
        return GST_FLOW_FLUSHING;
    const GstFlowReturn ret = wait_for_consumers(self, producer);
    if (ret != GST_FLOW_OK)
        return ret;
    if (producer->device().is_cuda())
        return render_upload(self, buffer);
    if (gst_buffer_n_memory(buffer) == 1) {
        auto *slot =
            dynamic_cast<SinkSlot *>(bips::gst::memory_owner(gst_buffer_peek_memory(buffer, 0)));
        // Ours, not yet published, and from this producer (not one replaced since).
        if (slot && slot->buffer && slot->producer == producer)
            return render_zero_copy(self, producer, buffer, slot);
    }
    return render_copy(self, buffer);
}

static gboolean gst_bips_sink_set_caps(GstBaseSink *bs, GstCaps *caps) {
    auto *self = GST_BIPS_SINK(bs);
    SinkState *st = self->st;
    GstVideoInfo info;
    if (!gst_video_info_from_caps(&info, caps)) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, (nullptr), ("invalid caps %" GST_PTR_FORMAT, caps));
        return FALSE;
    }
    const auto planes = bips::gst::default_planes(info);
    std::string prefix = bips::gst::meta_prefix(caps, info, planes);
    // Room for the per-frame fields and the closing brace.
    if (prefix.size() + 96 > bips::gst::META_SIZE) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, (nullptr),
                          ("caps too long for the %zu-byte frame metadata: %" GST_PTR_FORMAT,
                           bips::gst::META_SIZE, caps));
        return FALSE;
    }
    st->info = info;
    st->have_info = true;
    st->layout = bips::gst::describe(info, planes, GST_VIDEO_INFO_SIZE(&info));
    st->prefix = std::move(prefix);
    gst_caps_replace(&st->caps, caps);
    GST_DEBUG_OBJECT(self, "caps %" GST_PTR_FORMAT ": %zu-byte frames", caps,
                     GST_VIDEO_INFO_SIZE(&info));
    return ensure_producer(self, GST_VIDEO_INFO_SIZE(&info), st->layout);
}

static gboolean gst_bips_sink_propose_allocation(GstBaseSink *bs, GstQuery *query) {
    auto *self = GST_BIPS_SINK(bs);
    GstCaps *caps = nullptr;
    gboolean need_pool = FALSE;
    gst_query_parse_allocation(query, &caps, &need_pool);
    GstVideoInfo info;
    if (!caps || !gst_video_info_from_caps(&info, caps))
        return FALSE;
    gst_query_add_allocation_meta(query, GST_VIDEO_META_API_TYPE, nullptr);
    // A GPU pool's buffers are device memory, which upstream cannot write: it allocates its
    // own buffers, and render() uploads them.
    if (!need_pool || self->st->device.is_cuda())
        return TRUE;
    const auto planes = bips::gst::default_planes(info);
    if (!ensure_producer(self, GST_VIDEO_INFO_SIZE(&info),
                         bips::gst::describe(info, planes, GST_VIDEO_INFO_SIZE(&info))))
        return FALSE;
    auto producer = self->st->link->current();
    if (!producer)
        return TRUE;
    const auto size = static_cast<guint>(GST_VIDEO_INFO_SIZE(&info));
    GstBufferPool *pool = gst_bips_buffer_pool_new(self->st->link);
    GstStructure *config = gst_buffer_pool_get_config(pool);
    gst_buffer_pool_config_set_params(config, caps, size, 0, producer->capacity());
    gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
    if (gst_buffer_pool_set_config(pool, config))
        gst_query_add_allocation_pool(query, pool, size, 0, producer->capacity());
    else
        GST_WARNING_OBJECT(self, "could not configure the pool for %" GST_PTR_FORMAT, caps);
    gst_object_unref(pool);
    return TRUE;
}

static gboolean gst_bips_sink_event(GstBaseSink *bs, GstEvent *event) {
    auto *self = GST_BIPS_SINK(bs);
    if (GST_EVENT_TYPE(event) == GST_EVENT_EOS) {
        // Before the EOS message: an application that stops at EOS still sees the counters.
        post_stats(self);
        self->st->link->close();
    }
    if (GST_EVENT_TYPE(event) != GST_EVENT_FLUSH_STOP)
        return GST_BASE_SINK_CLASS(gst_bips_sink_parent_class)->event(bs, event);
    const gboolean ret = GST_BASE_SINK_CLASS(gst_bips_sink_parent_class)->event(bs, event);
    // A flushing seek after EOS (looping playback) starts a new stream. Upstream keeps the
    // buffer pool we proposed and acquires from it before anything reaches render(), so the
    // pool that EOS closed must be back now. The thread that sends FLUSH_STOP holds upstream's
    // stream lock, so the streaming thread is out of this element meanwhile.
    SinkState *st = self->st;
    const auto current = st->link->current();
    if (ret && st->have_info && (!current || current->closed()) &&
        !ensure_producer(self, GST_VIDEO_INFO_SIZE(&st->info), st->layout))
        return FALSE;
    return ret;
}

static gboolean gst_bips_sink_start(GstBaseSink *bs) {
    auto *self = GST_BIPS_SINK(bs);
    SinkState *st = self->st;
    const Settings s = settings_of(self);
    if (s.pool.empty()) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("No pool name given."),
                          ("set the 'pool' property"));
        return FALSE;
    }
    try {
        bips::validate_name(s.pool);
    } catch (const std::exception &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Invalid pool name '%s'.", s.pool.c_str()),
                          ("%s", e.what()));
        return FALSE;
    }
    // Fail at start, not at the first caps, when another producer owns the name.
    try {
        if (bips::pool_info(s.pool).producer_alive) {
            GST_ELEMENT_ERROR(self, RESOURCE, BUSY,
                              ("Pool '%s' is in use by another producer.", s.pool.c_str()),
                              (nullptr));
            return FALSE;
        }
    } catch (const std::exception &) {
        // No such pool, or unreadable: creating it reports anything that matters.
    }
    try {
        st->device = bips::Device::parse(s.device);
    } catch (const std::exception &e) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Invalid device '%s'.", s.device.c_str()),
                          ("%s", e.what()));
        return FALSE;
    }
    // No driver, no such device: say so now, not from the streaming thread at the first caps.
    if (const std::string why = bips::device_unavailable_reason(st->device); !why.empty()) {
        GST_ELEMENT_ERROR(
            self, RESOURCE, SETTINGS,
            ("Cannot create pool '%s' on %s.", s.pool.c_str(), st->device.str().c_str()),
            ("%s", why.c_str()));
        return FALSE;
    }
    st->link->set_acquire_timeout(s.acquire_timeout);
    st->published = 0;
    st->copies = 0;
    st->zero_copy = 0;
    st->uploads = 0;
    st->upload_bytes = 0;
    return TRUE;
}

static gboolean gst_bips_sink_stop(GstBaseSink *bs) {
    SinkState *st = GST_BIPS_SINK(bs)->st;
    st->link->close();
    st->have_info = false;
    gst_caps_replace(&st->caps, nullptr);
    st->waited_for.reset();
    return TRUE;
}

// Upstream blocked in our pool's acquire watches the sink pad's flushing flag itself
// (ProducerLink::acquire); these two only interrupt render().
static gboolean gst_bips_sink_unlock(GstBaseSink *bs) {
    GST_BIPS_SINK(bs)->st->unlocked.store(true, std::memory_order_release);
    return TRUE;
}

static gboolean gst_bips_sink_unlock_stop(GstBaseSink *bs) {
    GST_BIPS_SINK(bs)->st->unlocked.store(false, std::memory_order_release);
    return TRUE;
}

static void gst_bips_sink_set_property(GObject *object, guint prop_id, const GValue *value,
                                       GParamSpec *pspec) {
    auto *self = GST_BIPS_SINK(object);
    std::lock_guard<std::mutex> lock(self->st->settings_mutex);
    Settings &s = self->st->settings;
    switch (prop_id) {
    case PROP_POOL: {
        const gchar *name = g_value_get_string(value);
        s.pool = name ? name : "";
        break;
    }
    case PROP_CAPACITY:
        s.capacity = g_value_get_uint(value);
        break;
    case PROP_POLICY:
        s.policy = g_value_get_enum(value);
        break;
    case PROP_MODE:
        s.mode = g_value_get_uint(value);
        break;
    case PROP_MAX_CONSUMERS:
        s.max_consumers = g_value_get_uint(value);
        break;
    case PROP_ACQUIRE_TIMEOUT:
        s.acquire_timeout = g_value_get_uint64(value);
        self->st->link->set_acquire_timeout(s.acquire_timeout);
        break;
    case PROP_WAIT_FOR_CONSUMERS:
        s.wait_for_consumers = g_value_get_uint(value);
        break;
    case PROP_DEVICE: {
        const gchar *device = g_value_get_string(value);
        s.device = device ? device : "cpu";
        break;
    }
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
        break;
    }
}

static void gst_bips_sink_get_property(GObject *object, guint prop_id, GValue *value,
                                       GParamSpec *pspec) {
    auto *self = GST_BIPS_SINK(object);
    SinkState *st = self->st;
    switch (prop_id) {
    case PROP_PUBLISHED:
        g_value_set_uint64(value, st->published.load());
        return;
    case PROP_COPIES:
        g_value_set_uint64(value, st->copies.load());
        return;
    case PROP_ZERO_COPY:
        g_value_set_uint64(value, st->zero_copy.load());
        return;
    case PROP_UPLOADS:
        g_value_set_uint64(value, st->uploads.load());
        return;
    case PROP_UPLOAD_BYTES:
        g_value_set_uint64(value, st->upload_bytes.load());
        return;
    default:
        break;
    }
    std::lock_guard<std::mutex> lock(st->settings_mutex);
    const Settings &s = st->settings;
    switch (prop_id) {
    case PROP_POOL:
        g_value_set_string(value, s.pool.empty() ? nullptr : s.pool.c_str());
        break;
    case PROP_CAPACITY:
        g_value_set_uint(value, s.capacity);
        break;
    case PROP_POLICY:
        g_value_set_enum(value, s.policy);
        break;
    case PROP_MODE:
        g_value_set_uint(value, s.mode);
        break;
    case PROP_MAX_CONSUMERS:
        g_value_set_uint(value, s.max_consumers);
        break;
    case PROP_ACQUIRE_TIMEOUT:
        g_value_set_uint64(value, s.acquire_timeout);
        break;
    case PROP_WAIT_FOR_CONSUMERS:
        g_value_set_uint(value, s.wait_for_consumers);
        break;
    case PROP_DEVICE:
        g_value_set_string(value, s.device.c_str());
        break;
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
        break;
    }
}

static void gst_bips_sink_finalize(GObject *object) {
    delete GST_BIPS_SINK(object)->st;
    G_OBJECT_CLASS(gst_bips_sink_parent_class)->finalize(object);
}

static void gst_bips_sink_class_init(GstBipsSinkClass *klass) {
    GST_DEBUG_CATEGORY_INIT(bips_sink_debug, "bipssink", 0, "bips shared-memory video sink");
    auto *gobject_class = G_OBJECT_CLASS(klass);
    auto *element_class = GST_ELEMENT_CLASS(klass);
    auto *sink_class = GST_BASE_SINK_CLASS(klass);

    gobject_class->set_property = gst_bips_sink_set_property;
    gobject_class->get_property = gst_bips_sink_get_property;
    gobject_class->finalize = gst_bips_sink_finalize;

    const auto rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                             GST_PARAM_MUTABLE_READY);
    const auto ro = static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_property(
        gobject_class, PROP_POOL,
        g_param_spec_string("pool", "Pool name",
                            "Name of the bips pool to create (required): 1-64 characters of "
                            "[A-Za-z0-9_.-], not starting with '.'; the segment is "
                            "/dev/shm/bips.NAME. Fails if a live producer owns the name",
                            nullptr, rw));
    g_object_class_install_property(
        gobject_class, PROP_CAPACITY,
        g_param_spec_uint("capacity", "Capacity",
                          "Number of buffers in the pool (frames queued or held by consumers, "
                          "plus those upstream is filling)",
                          1, bips::MAX_CAPACITY, DEFAULT_CAPACITY, rw));
    g_object_class_install_property(
        gobject_class, PROP_POLICY,
        g_param_spec_enum("policy", "Policy",
                          "What happens when no buffer is free: block waits until consumers "
                          "release one (lossless, the slowest consumer sets the pace); "
                          "drop-oldest takes back the oldest queued frame no consumer holds "
                          "(live video: a stalled consumer never stalls the pipeline)",
                          GST_TYPE_BIPS_SINK_POLICY, DEFAULT_POLICY, rw));
    g_object_class_install_property(
        gobject_class, PROP_MODE,
        g_param_spec_uint("mode", "Mode",
                          "Permission bits of the pool's segment (0600 = 384; 0660 or 0666 let "
                          "consumers running as other users attach)",
                          0, 0777, DEFAULT_MODE, rw));
    g_object_class_install_property(gobject_class, PROP_MAX_CONSUMERS,
                                    g_param_spec_uint("max-consumers", "Max consumers",
                                                      "Most consumers that can attach at once", 1,
                                                      bips::MAX_CONSUMERS, DEFAULT_MAX_CONSUMERS,
                                                      rw));
    g_object_class_install_property(
        gobject_class, PROP_ACQUIRE_TIMEOUT,
        g_param_spec_uint64("acquire-timeout", "Acquire timeout",
                            "Nanoseconds a frame may wait for a free buffer (policy block, or "
                            "drop-oldest with every buffer held) before the sink posts an error "
                            "and the pipeline stops; 0 = wait as long as it takes (a warning is "
                            "logged every 5 s). Buffers held by a consumer that died come back "
                            "within ~200 ms; a flush or state change always ends the wait",
                            0, G_MAXUINT64, 0, rw));
    g_object_class_install_property(
        gobject_class, PROP_WAIT_FOR_CONSUMERS,
        g_param_spec_uint("wait-for-consumers", "Wait for consumers",
                          "Hold the first frame of a pool until this many consumers are "
                          "attached (0 = publish at once; consumers only receive frames "
                          "published after they attached). The wait pauses with the pipeline "
                          "and ends on a flush or stop",
                          0, bips::MAX_CONSUMERS, 0, rw));
    g_object_class_install_property(
        gobject_class, PROP_PUBLISHED,
        g_param_spec_uint64("published", "Published", "Frames published since the element started",
                            0, G_MAXUINT64, 0, ro));
    g_object_class_install_property(
        gobject_class, PROP_COPIES,
        g_param_spec_uint64("copies", "Copies",
                            "Frames the CPU copied: into the pool because upstream did not write "
                            "into the pool's buffers, or, in a GPU pool, into the standard layout "
                            "before their upload (since the element started)",
                            0, G_MAXUINT64, 0, ro));
    g_object_class_install_property(
        gobject_class, PROP_ZERO_COPY,
        g_param_spec_uint64("zero-copy", "Zero copy",
                            "Frames published without a copy: upstream wrote them straight into "
                            "shared memory (since the element started)",
                            0, G_MAXUINT64, 0, ro));
    g_object_class_install_property(
        gobject_class, PROP_DEVICE,
        g_param_spec_string("device", "Device",
                            "Where the pool's buffers live: \"cpu\" (shared memory) or "
                            "\"cuda:N\" (memory of CUDA device N, which consumers import with no "
                            "copy). A GPU pool costs one host-to-device upload per frame, whatever "
                            "the number of consumers, and no zero copy from upstream (it cannot "
                            "write GPU memory)",
                            "cpu", rw));
    g_object_class_install_property(
        gobject_class, PROP_UPLOADS,
        g_param_spec_uint64("uploads", "Uploads",
                            "Frames uploaded to a GPU pool: one per frame, however many "
                            "consumers read it (since the element started)",
                            0, G_MAXUINT64, 0, ro));
    g_object_class_install_property(
        gobject_class, PROP_UPLOAD_BYTES,
        g_param_spec_uint64("upload-bytes", "Upload bytes",
                            "Bytes uploaded to a GPU pool (since the element started)", 0,
                            G_MAXUINT64, 0, ro));

    gst_element_class_set_static_metadata(
        element_class, "bips shared-memory sink", "Sink/Video",
        "Publishes raw video into a bips shared-memory pool that any number of processes "
        "(C++, Python/numpy/PyTorch, bipssrc) receive without copies. Upstream writes straight "
        "into shared memory through the proposed buffer pool. sync defaults to false: frames "
        "are published as they arrive. With device=cuda:N the pool lives on a GPU and each frame "
        "is uploaded once. Posts a 'bipssink-stats' element message (published, copies, "
        "zero-copy, uploads, upload-bytes) at EOS",
        "bips developers");
    gst_element_class_add_static_pad_template(element_class, &sink_template);

    sink_class->start = gst_bips_sink_start;
    sink_class->stop = gst_bips_sink_stop;
    sink_class->set_caps = gst_bips_sink_set_caps;
    sink_class->propose_allocation = gst_bips_sink_propose_allocation;
    sink_class->render = gst_bips_sink_render;
    sink_class->event = gst_bips_sink_event;
    sink_class->unlock = gst_bips_sink_unlock;
    sink_class->unlock_stop = gst_bips_sink_unlock_stop;

    gst_type_mark_as_plugin_api(GST_TYPE_BIPS_SINK_POLICY, static_cast<GstPluginAPIFlags>(0));
}

static void gst_bips_sink_init(GstBipsSink *self) {
    self->st = new SinkState();
    self->st->link = std::make_shared<ProducerLink>(GST_ELEMENT(self));
    // The last-sample would keep one published buffer pinned, out of the consumers' reach.
    gst_base_sink_set_last_sample_enabled(GST_BASE_SINK(self), FALSE);
    // Publish frames as they come: live sources pace themselves and consumers pace a lossless
    // pipeline; waiting for the clock would only add latency (sync=true plays a file in real
    // time).
    gst_base_sink_set_sync(GST_BASE_SINK(self), FALSE);
}
