// SPDX-License-Identifier: Apache-2.0
#include "bufferpool.hpp"

#include <gst/video/video.h>

#include <mutex>
#include <utility>

GST_DEBUG_CATEGORY_STATIC(bips_pool_debug);
#define GST_CAT_DEFAULT bips_pool_debug

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
    if (acquired.buffer.device().is_cuda()) {
        // Never proposed for a GPU pool (bipssink's propose_allocation): its buffers are device
        // memory, which no upstream element may map. A pool kept from before a restart on a GPU
        // says so instead of handing it out.
        GST_ERROR_OBJECT(bp, "pool '%s' lives on %s: its buffers are not host memory",
                         acquired.producer->name().c_str(), acquired.buffer.device().str().c_str());
        return GST_FLOW_ERROR;
    }
    void *data = acquired.buffer.data();
    const std::size_t capacity = acquired.buffer.capacity();
    auto slot = std::make_unique<bips::gst::SinkSlot>();
    slot->producer = std::move(acquired.producer);
    slot->buffer = std::move(acquired.buffer);
    GstBuffer *buf = gst_buffer_new();
    gst_buffer_append_memory(buf,
                             bips::gst::wrap_memory(std::move(slot), data, capacity, size, false));
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
    GST_DEBUG_CATEGORY_INIT(bips_pool_debug, "bipspool", 0, "bips buffer pool and memory");
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
