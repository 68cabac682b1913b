// SPDX-License-Identifier: Apache-2.0
// bipssrc: pushes the frames of a bips pool into a pipeline.
//
// Each output buffer wraps the frame's shared memory, read-only, without copying; the frame is
// released when the last GstBuffer (or sub-buffer) using it is freed, so downstream holding
// buffers holds pool buffers (under policy block that paces the producer). Caps come from the
// frame metadata's "caps" field (or, without video metadata, from the frame's shape and dtype)
// and are renegotiated when they change. A frame is copied (and given back at once) only when
// its rows are laid out differently from GStreamer's standard layout and downstream cannot take
// a GstVideoMeta, or when downstream already holds max-held frames. A GPU pool's frames are
// device memory, which GStreamer elements cannot read: each is downloaded into a buffer of its
// own (a copy) and given back at once.

#include "bipssrc.hpp"

#include "allocator.hpp"
#include "clock.hpp"
#include "videometa.hpp"

#include <bips/bips.hpp>

#include <gst/video/video.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

GST_DEBUG_CATEGORY_STATIC(bips_src_debug);
#define GST_CAT_DEFAULT bips_src_debug

using bips::gst::monotonic_now_ns;
using bips::gst::Plane;

namespace {

enum {
    PROP_0,
    PROP_POOL,
    PROP_TIMEOUT,
    PROP_RECONNECT,
    PROP_LATEST,
    PROP_IS_LIVE,
    PROP_TIMESTAMP_MODE,
    PROP_MAX_HELD,
    PROP_OWNER,
    PROP_RECEIVED,
    PROP_COPIES,
};

enum TimestampMode : gint { TS_AUTO = 0, TS_PTS = 1, TS_CAPTURE = 2 };

constexpr guint64 DEFAULT_TIMEOUT = 5 * GST_SECOND;
// One wait lasts at most this long, so that unlock() (flush, state change) is honoured quickly.
constexpr auto SLICE = std::chrono::milliseconds(20);
// How often create() looks for a pool that is not there yet.
constexpr auto ATTACH_POLL = std::chrono::milliseconds(5);
// The largest capture-to-now delay taken into the reported latency.
constexpr std::int64_t MAX_LATENCY_NS = 10 * static_cast<std::int64_t>(GST_SECOND);

// Frame timestamps come from shared memory, written by any producer: arithmetic on them
// saturates instead of overflowing.
std::int64_t sat_add(std::int64_t a, std::int64_t b) {
    std::int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

std::int64_t sat_sub(std::int64_t a, std::int64_t b) {
    std::int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b < 0 ? INT64_MAX : INT64_MIN;
    return r;
}

struct Settings {
    std::string pool;
    guint64 timeout = DEFAULT_TIMEOUT;
    bool reconnect = false;
    bool latest = false;
    bool is_live = true;
    gint timestamp_mode = TS_AUTO;
    gint max_held = -1; // -1: half the pool's capacity; 0: no limit
    gint64 owner = bips::OWNER_SELF;
};

// What an output buffer's memory owns: the frame, released with the memory. `held` counts the
// frames downstream holds (shared, since buffers may outlive the element).
class FrameOwner final : public bips::gst::MemoryOwner {
public:
    FrameOwner(bips::Frame f, std::shared_ptr<std::atomic<int>> held)
        : frame(std::move(f)), m_held(std::move(held)) {
        m_held->fetch_add(1, std::memory_order_relaxed);
    }
    ~FrameOwner() override { m_held->fetch_sub(1, std::memory_order_relaxed); }
    FrameOwner(const FrameOwner &) = delete;
    FrameOwner &operator=(const FrameOwner &) = delete;
    bips::Frame frame;

private:
    std::shared_ptr<std::atomic<int>> m_held;
};

struct SrcState {
    std::mutex settings_mutex;
    Settings settings;
    std::atomic<bool> unlocked{false};
    std::atomic<guint64> received{0}, copies{0};
    std::shared_ptr<std::atomic<int>> held = std::make_shared<std::atomic<int>>(0);
    std::atomic<guint64> latency{0}; // reported min latency (live, capture timestamps)

    // Streaming-thread state (start/stop run while that thread is out of the element); `caps` is
    // also read by caps queries from other threads, under the object lock.
    std::optional<bips::Consumer> consumer;
    std::int64_t attach_deadline_ns = 0;
    std::string caps_key; // what `caps` were made from: the metadata's caps, or shape and dtype
    GstCaps *caps = nullptr;
    GstVideoInfo info;
    std::vector<Plane> shape_planes; // layout of frames whose caps came from their shape
    bool caps_from_shape = false;
    bool video_meta_ok = false; // downstream accepts GstVideoMeta (non-standard strides)
    bool have_seq = false;
    guint64 last_seq = 0;
    bool have_first = false;
    std::int64_t first_ts = 0;

    ~SrcState() { gst_caps_replace(&caps, nullptr); }
};

} // namespace

struct _GstBipsSrc {
    GstPushSrc parent;
    SrcState *st;
};

G_DEFINE_TYPE(GstBipsSrc, gst_bips_src, GST_TYPE_PUSH_SRC)

GType gst_bips_src_timestamp_mode_get_type(void) {
    static GType type = 0;
    if (g_once_init_enter(&type)) {
        static const GEnumValue values[] = {
            {TS_AUTO, "capture when is-live, else pts", "auto"},
            {TS_PTS, "The producer's PTS from the frame metadata (exact restoration)", "pts"},
            {TS_CAPTURE, "The frame's capture time as running time of this pipeline", "capture"},
            {0, nullptr, nullptr},
        };
        g_once_init_leave(&type, g_enum_register_static("GstBipsSrcTimestampMode", values));
    }
    return type;
}

static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(BIPS_GST_CAPS));

static Settings settings_of(GstBipsSrc *self) {
    std::lock_guard<std::mutex> lock(self->st->settings_mutex);
    return self->st->settings;
}

static void post_stats(GstBipsSrc *self) {
    const Settings s = settings_of(self);
    GstStructure *st = gst_structure_new("bipssrc-stats", "pool", G_TYPE_STRING, s.pool.c_str(),
                                         "received", G_TYPE_UINT64, self->st->received.load(),
                                         "copies", G_TYPE_UINT64, self->st->copies.load(), nullptr);
    gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), st));
}

static GstPadProbeReturn eos_probe(GstPad *, GstPadProbeInfo *info, gpointer user_data) {
    if (GST_EVENT_TYPE(GST_PAD_PROBE_INFO_EVENT(info)) == GST_EVENT_EOS)
        post_stats(GST_BIPS_SRC(user_data));
    return GST_PAD_PROBE_OK;
}

// One attempt to attach (Consumer::try_open, which never waits). Returns true when attached;
// false when the pool (or its producer) is not there yet. Other failures throw.
static bool try_attach(GstBipsSrc *self, const Settings &s) {
    bips::ConsumerOptions opt;
    opt.latest = s.latest;
    opt.reconnect = s.reconnect;
    opt.owner = s.owner;
    std::optional<bips::Consumer> consumer = bips::Consumer::try_open(s.pool, opt);
    if (!consumer)
        return false;
    self->st->consumer = std::move(consumer);
    GST_INFO_OBJECT(self, "attached to pool '%s'", s.pool.c_str());
    return true;
}

static void attach_error(GstBipsSrc *self, const Settings &s, const std::exception &e) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Cannot attach to pool '%s'.", s.pool.c_str()),
                      ("%s", e.what()));
}

// Waits (polling, so unlock() interrupts it) until the pool appears or `timeout` has passed.
static GstFlowReturn attach(GstBipsSrc *self) {
    SrcState *st = self->st;
    const Settings s = settings_of(self);
    for (;;) {
        if (st->unlocked.load(std::memory_order_acquire))
            return GST_FLOW_FLUSHING;
        const std::int64_t left = st->attach_deadline_ns - monotonic_now_ns();
        try {
            if (try_attach(self, s))
                return GST_FLOW_OK;
        } catch (const std::exception &e) {
            attach_error(self, s, e);
            return GST_FLOW_ERROR;
        }
        if (left <= 0) {
            GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND,
                              ("Pool '%s' did not appear within %.3f s.", s.pool.c_str(),
                               static_cast<double>(s.timeout) / 1e9),
                              ("no producer created it (raise the 'timeout' property to wait "
                               "longer)"));
            return GST_FLOW_ERROR;
        }
        std::this_thread::sleep_for(std::min<bips::Duration>(bips::Duration(left), ATTACH_POLL));
    }
}

static gboolean gst_bips_src_start(GstBaseSrc *bsrc) {
    auto *self = GST_BIPS_SRC(bsrc);
    SrcState *st = self->st;
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
    st->received = 0;
    st->copies = 0;
    st->have_seq = false;
    st->have_first = false;
    st->latency = 0;
    st->attach_deadline_ns = monotonic_now_ns() + static_cast<std::int64_t>(
                                                      std::min<guint64>(s.timeout, G_MAXINT64 / 2));
    // Attach now if the pool is there: frames published from now on are ours, even before the
    // streaming thread runs. Otherwise create() waits for it, interruptibly.
    try {
        if (!try_attach(self, s) && s.timeout == 0) {
            GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND,
                              ("Pool '%s' does not exist.", s.pool.c_str()),
                              ("no live producer has created it, and timeout is 0"));
            return FALSE;
        }
    } catch (const std::exception &e) {
        attach_error(self, s, e);
        return FALSE;
    }
    return TRUE;
}

static gboolean gst_bips_src_stop(GstBaseSrc *bsrc) {
    auto *self = GST_BIPS_SRC(bsrc);
    SrcState *st = self->st;
    st->consumer.reset(); // frames still in GstBuffers stay valid until those are freed
    GST_OBJECT_LOCK(self);
    gst_caps_replace(&st->caps, nullptr);
    GST_OBJECT_UNLOCK(self);
    st->caps_key.clear();
    return TRUE;
}

static GstCaps *gst_bips_src_get_caps(GstBaseSrc *bsrc, GstCaps *filter) {
    auto *self = GST_BIPS_SRC(bsrc);
    GST_OBJECT_LOCK(self);
    GstCaps *caps = self->st->caps ? gst_caps_ref(self->st->caps) : nullptr;
    GST_OBJECT_UNLOCK(self);
    if (!caps)
        caps = gst_pad_get_pad_template_caps(GST_BASE_SRC_PAD(bsrc));
    if (filter) {
        GstCaps *both = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref(caps);
        caps = both;
    }
    return caps;
}

static gboolean gst_bips_src_negotiate(GstBaseSrc *bsrc) {
    auto *self = GST_BIPS_SRC(bsrc);
    GST_OBJECT_LOCK(self);
    GstCaps *caps = self->st->caps ? gst_caps_ref(self->st->caps) : nullptr;
    GST_OBJECT_UNLOCK(self);
    if (!caps)
        return TRUE; // caps come with the first frame; create() negotiates then
    const gboolean ok = gst_base_src_set_caps(bsrc, caps);
    gst_caps_unref(caps);
    return ok;
}

static gboolean gst_bips_src_decide_allocation(GstBaseSrc *bsrc, GstQuery *query) {
    auto *self = GST_BIPS_SRC(bsrc);
    self->st->video_meta_ok =
        gst_query_find_allocation_meta(query, GST_VIDEO_META_API_TYPE, nullptr);
    // Our buffers wrap shared memory; a pool proposed downstream would only be allocated for
    // nothing.
    while (gst_query_get_n_allocation_pools(query) > 0)
        gst_query_remove_nth_allocation_pool(query, 0);
    return TRUE;
}

static std::string shape_key(const bips::Frame &frame) {
    std::string key = "shape:";
    for (std::size_t i = 0; i < frame.ndim(); ++i)
        key += std::to_string(frame.dims()[i]) + ",";
    return key + frame.dtype().name();
}

// Sets caps for `frame` if they differ from the current ones, and renegotiates.
static GstFlowReturn update_caps(GstBipsSrc *self, const bips::Frame &frame,
                                 const bips::gst::ParsedMeta &meta) {
    SrcState *st = self->st;
    std::string key = meta.caps ? "caps:" + *meta.caps : shape_key(frame);
    if (key == st->caps_key)
        return GST_FLOW_OK;
    std::string error;
    std::vector<Plane> shape_planes;
    GstCaps *caps = nullptr;
    if (meta.caps) {
        caps = gst_caps_from_string(meta.caps->c_str());
        if (!caps || gst_caps_get_size(caps) != 1 || !gst_caps_is_fixed(caps))
            error = "the metadata's caps are not fixed caps: '" + *meta.caps + "'";
    } else {
        caps = bips::gst::caps_from_shape(frame.shape(), frame.dtype(), shape_planes, error);
    }
    GstVideoInfo info;
    if (error.empty()) {
        GstCaps *templ = gst_static_pad_template_get_caps(&src_template);
        if (!gst_caps_is_subset(caps, templ) || !gst_video_info_from_caps(&info, caps)) {
            gchar *str = gst_caps_to_string(caps);
            error = std::string("caps not supported by bipssrc: ") + str;
            g_free(str);
        }
        gst_caps_unref(templ);
    }
    if (!error.empty()) {
        if (caps)
            gst_caps_unref(caps);
        GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                          ("Frame %" G_GUINT64_FORMAT " of pool '%s' is not usable video.",
                           frame.seq(), settings_of(self).pool.c_str()),
                          ("%s", error.c_str()));
        return GST_FLOW_ERROR;
    }
    GST_INFO_OBJECT(self, "caps from frame %" G_GUINT64_FORMAT ": %" GST_PTR_FORMAT, frame.seq(),
                    caps);
    GST_OBJECT_LOCK(self);
    gst_caps_take(&st->caps, caps);
    GST_OBJECT_UNLOCK(self);
    st->caps_key = std::move(key);
    st->info = info;
    // A live producer pushes a frame about one frame after its capture time: start there (and
    // grow when frames arrive later, see make_buffer()).
    if (GST_VIDEO_INFO_FPS_N(&info) > 0 && GST_VIDEO_INFO_FPS_D(&info) > 0) {
        const guint64 frame = gst_util_uint64_scale_int(GST_SECOND, GST_VIDEO_INFO_FPS_D(&info),
                                                        GST_VIDEO_INFO_FPS_N(&info));
        if (frame > st->latency.load())
            st->latency = frame;
    }
    st->shape_planes = std::move(shape_planes);
    st->caps_from_shape = !meta.caps;
    if (!gst_base_src_negotiate(GST_BASE_SRC(self))) {
        st->caps_key.clear(); // try again with the next frame
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, (nullptr),
                          ("downstream refused %" GST_PTR_FORMAT, st->caps));
        return GST_FLOW_NOT_NEGOTIATED;
    }
    return GST_FLOW_OK;
}

static GstClockTime frame_pts(GstBipsSrc *self, const bips::Frame &frame,
                              const bips::gst::ParsedMeta &meta, const Settings &s) {
    SrcState *st = self->st;
    const std::int64_t ts = frame.timestamp_ns();
    if (!st->have_first) {
        st->have_first = true;
        st->first_ts = ts;
    }
    const auto relative =
        static_cast<GstClockTime>(std::max<std::int64_t>(sat_sub(ts, st->first_ts), 0));
    gint mode = s.timestamp_mode;
    if (mode == TS_AUTO)
        mode = s.is_live ? TS_CAPTURE : TS_PTS;
    if (mode == TS_PTS)
        return meta.pts ? static_cast<GstClockTime>(*meta.pts) : relative;
    // Capture time as running time here: both pipelines normally run on the monotonic system
    // clock, so timestamp_ns - base_time is when the frame was captured, on our clock.
    GstClock *clock = gst_element_get_clock(GST_ELEMENT(self));
    if (!clock)
        return relative;
    const std::int64_t on_clock = sat_add(ts, bips::gst::clock_offset_ns(clock));
    gst_object_unref(clock);
    const auto base = static_cast<std::int64_t>(gst_element_get_base_time(GST_ELEMENT(self)));
    return static_cast<GstClockTime>(std::max<std::int64_t>(sat_sub(on_clock, base), 0));
}

// A GPU pool's frame in system memory: its bytes downloaded into a buffer of its own (CUDA waits
// for the copy), and the frame given back. nullptr, with an error posted, if the copy failed.
static GstBuffer *download(GstBipsSrc *self, bips::Frame &frame, const Settings &s) {
    GstBuffer *host = gst_buffer_new_allocate(nullptr, frame.nbytes(), nullptr);
    GstMapInfo map;
    std::string error = "cannot map the output buffer";
    if (host && gst_buffer_map(host, &map, GST_MAP_WRITE)) {
        try {
            frame.copy_to(map.data);
            error.clear();
        } catch (const std::exception &e) {
            error = e.what();
        }
        gst_buffer_unmap(host, &map);
    }
    // copy_to() waited for its copy: nothing on the GPU reads the frame any more.
    frame.release(bips::STREAM_NONE);
    if (error.empty())
        return host;
    if (host)
        gst_buffer_unref(host);
    GST_ELEMENT_ERROR(self, RESOURCE, READ,
                      ("Could not download a frame from pool '%s'.", s.pool.c_str()),
                      ("%s", error.c_str()));
    return nullptr;
}

// The output buffer for `frame`: its shared memory wrapped read-only, or (for a non-standard
// layout that downstream cannot describe, or past max-held) a copy in the standard layout.
// `fresh`: the frame was published while we waited for it.
static GstFlowReturn make_buffer(GstBipsSrc *self, bips::Frame frame, bool fresh, GstBuffer **out) {
    SrcState *st = self->st;
    const Settings s = settings_of(self);
    bips::gst::ParsedMeta meta;
    bips::gst::parse_meta(reinterpret_cast<const char *>(frame.meta_data()), frame.meta_size(),
                          meta);
    GstFlowReturn ret = update_caps(self, frame, meta);
    if (ret != GST_FLOW_OK)
        return ret;

    std::vector<Plane> planes = meta.planes           ? *meta.planes
                                : st->caps_from_shape ? st->shape_planes
                                                      : bips::gst::default_planes(st->info);
    std::string error;
    if (!bips::gst::check_planes(st->info, planes, frame.nbytes(), error) ||
        std::any_of(planes.begin(), planes.end(),
                    [](const Plane &p) { return p.stride > static_cast<std::size_t>(G_MAXINT); })) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                          ("Frame %" G_GUINT64_FORMAT " of pool '%s' does not match its caps.",
                           frame.seq(), s.pool.c_str()),
                          ("%s", error.empty() ? "stride too large" : error.c_str()));
        return GST_FLOW_ERROR;
    }
    gsize offsets[GST_VIDEO_MAX_PLANES] = {};
    gint strides[GST_VIDEO_MAX_PLANES] = {};
    for (std::size_t p = 0; p < planes.size(); ++p) {
        offsets[p] = planes[p].offset;
        strides[p] = static_cast<gint>(planes[p].stride);
    }
    const GstVideoInfo &info = st->info;
    // A frame shorter than the caps' size (tail padding cut off) is no standard buffer either.
    const bool standard =
        planes == bips::gst::default_planes(info) && frame.nbytes() >= GST_VIDEO_INFO_SIZE(&info);
    // Elements that keep many buffers (queues, encoders with lookahead, filesink batching its
    // writes) would otherwise hold the producer's pool: past the limit, frames are copied and
    // given back at once.
    const gint limit = s.max_held >= 0
                           ? s.max_held
                           : std::max<gint>(1, static_cast<gint>(st->consumer->capacity() / 2));
    const bool crowded = limit > 0 && st->held->load(std::memory_order_relaxed) >= limit;
    const guint64 seq = frame.seq();
    const GstClockTime pts = frame_pts(self, frame, meta, s);
    if (fresh && s.is_live && (s.timestamp_mode == TS_CAPTURE || s.timestamp_mode == TS_AUTO)) {
        // Capture-time PTS are in the past when frames are published; a synchronised sink drops
        // frames later than the latency we report, so report at least what we see (with a
        // margin, and only ever growing, so that the pipeline re-configures rarely).
        const std::int64_t delay = sat_sub(monotonic_now_ns(), frame.timestamp_ns());
        // Past MAX_LATENCY_NS the timestamp is not a capture time on this clock (a stale frame,
        // another clock): reporting it would only make every synchronised sink wait as long.
        if (delay > 0 && delay <= MAX_LATENCY_NS &&
            static_cast<guint64>(delay) > st->latency.load()) {
            st->latency = static_cast<guint64>(delay) + static_cast<guint64>(delay) / 4;
            GST_INFO_OBJECT(self, "frames arrive %.3f ms after capture: latency now %.3f ms",
                            static_cast<double>(delay) / 1e6,
                            static_cast<double>(st->latency.load()) / 1e6);
            gst_element_post_message(GST_ELEMENT(self), gst_message_new_latency(GST_OBJECT(self)));
        }
    }

    const auto add_meta = [&](GstBuffer *b) {
        gst_buffer_add_video_meta_full(b, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_INFO_FORMAT(&info),
                                       GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info),
                                       GST_VIDEO_INFO_N_PLANES(&info), offsets, strides);
    };
    // A copy of the frame in `src` (laid out as its video meta says) in the standard layout.
    const auto standard_copy = [&](GstBuffer *src) -> GstBuffer * {
        GstBuffer *b = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
        if (bips::gst::copy_frame(info, src, b) == bips::gst::CopyResult::Copied)
            return b;
        gst_buffer_unref(b);
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Could not copy a frame."), (nullptr));
        return nullptr;
    };
    GstBuffer *buf = nullptr;
    if (frame.device().is_cuda()) {
        GstBuffer *host = download(self, frame, s);
        if (!host)
            return GST_FLOW_ERROR;
        add_meta(host);
        if (standard || st->video_meta_ok) {
            buf = host;
        } else {
            buf = standard_copy(host);
            gst_buffer_unref(host);
            if (!buf)
                return GST_FLOW_ERROR;
        }
        st->copies.fetch_add(1, std::memory_order_relaxed);
    } else if ((!standard && !st->video_meta_ok) || crowded) {
        GstBuffer *src = gst_buffer_new_wrapped_full(
            GST_MEMORY_FLAG_READONLY, const_cast<std::byte *>(frame.data()), frame.nbytes(), 0,
            frame.nbytes(), nullptr, nullptr);
        add_meta(src);
        buf = standard_copy(src);
        gst_buffer_unref(src);
        frame.release();
        if (!buf)
            return GST_FLOW_ERROR;
        st->copies.fetch_add(1, std::memory_order_relaxed);
    } else {
        auto *data = const_cast<std::byte *>(frame.data());
        const std::size_t nbytes = frame.nbytes();
        buf = gst_buffer_new();
        gst_buffer_append_memory(
            buf, bips::gst::wrap_memory(std::make_unique<FrameOwner>(std::move(frame), st->held),
                                        data, nbytes, nbytes, true));
        add_meta(buf);
    }
    GST_BUFFER_PTS(buf) = pts;
    GST_BUFFER_DURATION(buf) = meta.duration ? *meta.duration : GST_CLOCK_TIME_NONE;
    GST_BUFFER_OFFSET(buf) = seq;
    GST_BUFFER_OFFSET_END(buf) = seq + 1;
    // A gap in seq: the producer dropped frames for us (drop-oldest, latest) or restarted.
    if (st->have_seq && seq != st->last_seq + 1)
        GST_BUFFER_FLAG_SET(buf, GST_BUFFER_FLAG_DISCONT);
    st->have_seq = true;
    st->last_seq = seq;
    st->received.fetch_add(1, std::memory_order_relaxed);
    *out = buf;
    return GST_FLOW_OK;
}

static GstFlowReturn gst_bips_src_create(GstPushSrc *psrc, GstBuffer **out) {
    auto *self = GST_BIPS_SRC(psrc);
    SrcState *st = self->st;
    if (!st->consumer) {
        const GstFlowReturn ret = attach(self);
        if (ret != GST_FLOW_OK)
            return ret;
    }
    // A frame that was already queued says nothing of how late frames are published (it waited
    // for us); one that arrives while we wait does.
    bool waited = false;
    for (;;) {
        if (st->unlocked.load(std::memory_order_acquire))
            return GST_FLOW_FLUSHING;
        try {
            std::optional<bips::Frame> frame =
                waited ? st->consumer->try_receive_for(SLICE) : st->consumer->try_receive();
            if (frame) {
                GST_LOG_OBJECT(self, "frame %" G_GUINT64_FORMAT " (%zu bytes)", frame->seq(),
                               frame->nbytes());
                return make_buffer(self, std::move(*frame), waited, out);
            }
            waited = true;
        } catch (const bips::ProducerGone &) {
            GST_INFO_OBJECT(self, "the producer closed and everything was received: EOS");
            return GST_FLOW_EOS;
        } catch (const std::exception &e) {
            GST_ELEMENT_ERROR(self, RESOURCE, READ,
                              ("Cannot receive from pool '%s'.", settings_of(self).pool.c_str()),
                              ("%s", e.what()));
            return GST_FLOW_ERROR;
        }
    }
}

static gboolean gst_bips_src_query(GstBaseSrc *bsrc, GstQuery *query) {
    auto *self = GST_BIPS_SRC(bsrc);
    if (GST_QUERY_TYPE(query) != GST_QUERY_LATENCY)
        return GST_BASE_SRC_CLASS(gst_bips_src_parent_class)->query(bsrc, query);
    const bool live = gst_base_src_is_live(bsrc);
    // No upper bound: frames wait in the pool (under policy block the producer waits with them).
    gst_query_set_latency(query, live, live ? self->st->latency.load() : 0, GST_CLOCK_TIME_NONE);
    return TRUE;
}

static gboolean gst_bips_src_unlock(GstBaseSrc *bsrc) {
    GST_BIPS_SRC(bsrc)->st->unlocked.store(true, std::memory_order_release);
    return TRUE;
}

static gboolean gst_bips_src_unlock_stop(GstBaseSrc *bsrc) {
    GST_BIPS_SRC(bsrc)->st->unlocked.store(false, std::memory_order_release);
    return TRUE;
}

static void gst_bips_src_set_property(GObject *object, guint prop_id, const GValue *value,
                                      GParamSpec *pspec) {
    auto *self = GST_BIPS_SRC(object);
    std::lock_guard<std::mutex> lock(self->st->settings_mutex);
    Settings &s = self->st->settings;
    switch (prop_id) {
    case PROP_POOL: {
        const gchar *name = g_value_get_string(value);
        s.pool = name ? name : "";
        break;
    }
    case PROP_TIMEOUT:
        s.timeout = g_value_get_uint64(value);
        break;
    case PROP_RECONNECT:
        s.reconnect = g_value_get_boolean(value);
        break;
    case PROP_LATEST:
        s.latest = g_value_get_boolean(value);
        break;
    case PROP_IS_LIVE:
        s.is_live = g_value_get_boolean(value);
        gst_base_src_set_live(GST_BASE_SRC(self), s.is_live);
        break;
    case PROP_TIMESTAMP_MODE:
        s.timestamp_mode = g_value_get_enum(value);
        break;
    case PROP_MAX_HELD:
        s.max_held = g_value_get_int(value);
        break;
    case PROP_OWNER:
        s.owner = g_value_get_int64(value);
        break;
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
        break;
    }
}

static void gst_bips_src_get_property(GObject *object, guint prop_id, GValue *value,
                                      GParamSpec *pspec) {
    auto *self = GST_BIPS_SRC(object);
    SrcState *st = self->st;
    switch (prop_id) {
    case PROP_RECEIVED:
        g_value_set_uint64(value, st->received.load());
        return;
    case PROP_COPIES:
        g_value_set_uint64(value, st->copies.load());
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
    case PROP_TIMEOUT:
        g_value_set_uint64(value, s.timeout);
        break;
    case PROP_RECONNECT:
        g_value_set_boolean(value, s.reconnect);
        break;
    case PROP_LATEST:
        g_value_set_boolean(value, s.latest);
        break;
    case PROP_IS_LIVE:
        g_value_set_boolean(value, s.is_live);
        break;
    case PROP_TIMESTAMP_MODE:
        g_value_set_enum(value, s.timestamp_mode);
        break;
    case PROP_MAX_HELD:
        g_value_set_int(value, s.max_held);
        break;
    case PROP_OWNER:
        g_value_set_int64(value, s.owner);
        break;
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
        break;
    }
}

static void gst_bips_src_finalize(GObject *object) {
    delete GST_BIPS_SRC(object)->st;
    G_OBJECT_CLASS(gst_bips_src_parent_class)->finalize(object);
}

static void gst_bips_src_class_init(GstBipsSrcClass *klass) {
    GST_DEBUG_CATEGORY_INIT(bips_src_debug, "bipssrc", 0, "bips shared-memory video source");
    auto *gobject_class = G_OBJECT_CLASS(klass);
    auto *element_class = GST_ELEMENT_CLASS(klass);
    auto *basesrc_class = GST_BASE_SRC_CLASS(klass);
    auto *pushsrc_class = GST_PUSH_SRC_CLASS(klass);

    gobject_class->set_property = gst_bips_src_set_property;
    gobject_class->get_property = gst_bips_src_get_property;
    gobject_class->finalize = gst_bips_src_finalize;

    const auto rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                             GST_PARAM_MUTABLE_READY);
    const auto ro = static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_property(
        gobject_class, PROP_POOL,
        g_param_spec_string("pool", "Pool name", "Name of the bips pool to receive from (required)",
                            nullptr, rw));
    g_object_class_install_property(
        gobject_class, PROP_TIMEOUT,
        g_param_spec_uint64("timeout", "Timeout",
                            "Nanoseconds to wait for the pool (and a live producer) to appear "
                            "when starting; 0 = fail at once if it is not there. The wait runs in "
                            "the streaming thread, so it never blocks a state change",
                            0, G_MAXUINT64, DEFAULT_TIMEOUT, rw));
    g_object_class_install_property(
        gobject_class, PROP_RECONNECT,
        g_param_spec_boolean("reconnect", "Reconnect",
                             "Follow a producer that restarts (or is replaced) instead of "
                             "ending the stream: without it, end of stream comes once the "
                             "producer closed or died and its frames were received",
                             FALSE, rw));
    g_object_class_install_property(
        gobject_class, PROP_LATEST,
        g_param_spec_boolean("latest", "Latest",
                             "Take the newest queued frame and give the older ones back (for a "
                             "display that must not lag); skipped frames mark a DISCONT",
                             FALSE, rw));
    g_object_class_install_property(
        gobject_class, PROP_IS_LIVE,
        g_param_spec_boolean("is-live", "Is live",
                             "Act as a live source (frames only flow in PLAYING, timestamps are "
                             "capture times); false replays the producer's PTS",
                             TRUE, rw));
    g_object_class_install_property(
        gobject_class, PROP_TIMESTAMP_MODE,
        g_param_spec_enum("timestamp-mode", "Timestamp mode",
                          "Where output PTS come from: pts = the producer's PTS from the frame "
                          "metadata (for exact replays; frames without one are timed from the "
                          "first frame); capture = the frame's CLOCK_MONOTONIC capture time minus "
                          "this pipeline's base time (what a live, synchronised pipeline needs); "
                          "auto = capture when is-live, else pts",
                          GST_TYPE_BIPS_SRC_TIMESTAMP_MODE, TS_AUTO, rw));
    g_object_class_install_property(
        gobject_class, PROP_MAX_HELD,
        g_param_spec_int("max-held", "Max held",
                         "Most frames downstream may hold in shared memory at once; past it, "
                         "frames are copied into ordinary memory and given back at once, so that "
                         "elements keeping many buffers (queues, encoders with lookahead, "
                         "filesink batching writes) cannot starve the producer of buffers. "
                         "-1 = half the pool's capacity, 0 = no limit",
                         -1, G_MAXINT, -1, rw));
    g_object_class_install_property(
        gobject_class, PROP_OWNER,
        g_param_spec_int64("owner", "Owner",
                           "Whose pools to accept: -1 = this user's or root's, -2 = anyone's, "
                           "or a uid (see docs/security.md)",
                           bips::ANY_OWNER, G_MAXUINT32, bips::OWNER_SELF, rw));
    g_object_class_install_property(gobject_class, PROP_RECEIVED,
                                    g_param_spec_uint64("received", "Received",
                                                        "Frames received since the element started",
                                                        0, G_MAXUINT64, 0, ro));
    g_object_class_install_property(
        gobject_class, PROP_COPIES,
        g_param_spec_uint64("copies", "Copies",
                            "Frames that had to be copied: downstream held max-held frames "
                            "already, or the frame's rows are laid out differently from "
                            "GStreamer's standard layout and downstream does not accept "
                            "GstVideoMeta, or the pool lives on a GPU (every frame is downloaded "
                            "to system memory); all others wrap the shared memory",
                            0, G_MAXUINT64, 0, ro));

    gst_element_class_set_static_metadata(
        element_class, "bips shared-memory source", "Source/Video",
        "Pushes the frames of a bips shared-memory pool, wrapping the shared memory without "
        "copies (a GPU pool's frames are downloaded to system memory). Posts a 'bipssrc-stats' "
        "element message (received, copies) at EOS",
        "bips developers");
    gst_element_class_add_static_pad_template(element_class, &src_template);

    basesrc_class->start = gst_bips_src_start;
    basesrc_class->stop = gst_bips_src_stop;
    basesrc_class->get_caps = gst_bips_src_get_caps;
    basesrc_class->negotiate = gst_bips_src_negotiate;
    basesrc_class->decide_allocation = gst_bips_src_decide_allocation;
    basesrc_class->query = gst_bips_src_query;
    basesrc_class->unlock = gst_bips_src_unlock;
    basesrc_class->unlock_stop = gst_bips_src_unlock_stop;
    pushsrc_class->create = gst_bips_src_create;

    gst_type_mark_as_plugin_api(GST_TYPE_BIPS_SRC_TIMESTAMP_MODE,
                                static_cast<GstPluginAPIFlags>(0));
}

static void gst_bips_src_init(GstBipsSrc *self) {
    self->st = new SrcState();
    gst_base_src_set_live(GST_BASE_SRC(self), TRUE);
    gst_base_src_set_format(GST_BASE_SRC(self), GST_FORMAT_TIME);
    gst_pad_add_probe(GST_BASE_SRC_PAD(self), GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, eos_probe, self,
                      nullptr);
}
