// SPDX-License-Identifier: Apache-2.0
// bips-capture: runs any GStreamer pipeline that ends in `appsink name=sink` and publishes every
// frame into a bips pool, so that Python (or C++) consumers get each frame as shared memory.
//
// Frames follow the bips video convention: packed formats without row padding are published as
// images ((height, width, channels); gray as (height, width)), everything else as a flat uint8
// frame whose metadata says where each plane is. The metadata of every frame is a JSON object
// with the negotiated caps, format, width, height, planes, pts and duration, and the frame's
// timestamp is its capture time on CLOCK_MONOTONIC. See README.md.
#include <bips/bips.hpp>

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

namespace {

using namespace std::chrono_literals;

constexpr const char *DEFAULT_PIPELINE =
    "videotestsrc is-live=true ! video/x-raw,format=RGB,width=640,height=360,framerate=30/1 ! "
    "appsink name=sink";
// Metadata bytes per frame, fixed by the video convention so every producer and reader agrees.
constexpr std::size_t META_SIZE = bips::video::META_SIZE;
// Every wait is cut into slices this long so that Ctrl-C and bus errors are noticed quickly.
constexpr auto SLICE = 100ms;

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

struct Options {
    std::string pool = "cam0";
    std::uint32_t capacity = 8;
    bips::Policy policy = bips::Policy::block;
    long frames = 0; // 0: until end of stream or a signal
    std::string pipeline = DEFAULT_PIPELINE;
    mode_t mode = 0600;
    unsigned wait_consumers = 0;
    double wait_timeout_s = 30;
};

void print_usage(std::FILE *out, const char *argv0) {
    std::fprintf(
        out,
        "usage: %s [options]\n"
        "Runs a GStreamer pipeline ending in 'appsink name=sink' and publishes every frame into\n"
        "a bips pool (frame metadata: JSON with the caps, format, size, planes, pts).\n\n"
        "  --pool NAME            pool name (default cam0)\n"
        "  --capacity N           buffers in the pool (default 8)\n"
        "  --policy P             block (lossless) or drop_oldest (live; default block)\n"
        "  --frames N             stop after N frames; 0 = until end of stream (default 0)\n"
        "  --pipeline \"...\"       the capture pipeline (default:\n"
        "                         %s)\n"
        "  --mode MODE            permissions of the pool, octal (default 0600; 0666: any user)\n"
        "  --wait-consumers N     publish nothing until N consumers are attached (default 0)\n"
        "  --wait-timeout S       give up waiting for consumers after S seconds (default 30)\n"
        "  --help                 this text\n\n"
        "A camera: --pipeline \"v4l2src device=/dev/video0 ! videoconvert ! "
        "video/x-raw,format=RGB ! appsink name=sink\"\n",
        argv0, DEFAULT_PIPELINE);
}

long parse_long(const std::string &flag, const std::string &value, long min, int base = 10) {
    char *end = nullptr;
    errno = 0;
    const long v = std::strtol(value.c_str(), &end, base);
    if (value.empty() || *end != '\0' || errno != 0 || v < min)
        throw std::invalid_argument(flag + ": bad value '" + value + "'");
    return v;
}

// Returns nullopt after printing the usage (--help); throws std::invalid_argument on bad input.
std::optional<Options> parse_args(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string flag = argv[i];
        std::string value;
        bool has_value = false;
        if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = flag.substr(eq + 1);
            flag.resize(eq);
            has_value = true;
        }
        if (flag == "--help" || flag == "-h") {
            print_usage(stdout, argv[0]);
            return std::nullopt;
        }
        if (!has_value) {
            if (i + 1 >= argc)
                throw std::invalid_argument(flag + " needs a value (see --help)");
            value = argv[++i];
        }
        if (flag == "--pool") {
            bips::validate_name(value);
            o.pool = value;
        } else if (flag == "--capacity") {
            o.capacity = static_cast<std::uint32_t>(parse_long(flag, value, 1));
        } else if (flag == "--policy") {
            if (value == "block")
                o.policy = bips::Policy::block;
            else if (value == "drop_oldest" || value == "drop-oldest")
                o.policy = bips::Policy::drop_oldest;
            else
                throw std::invalid_argument("--policy: block or drop_oldest, not '" + value + "'");
        } else if (flag == "--frames") {
            o.frames = parse_long(flag, value, 0);
        } else if (flag == "--pipeline") {
            o.pipeline = value;
        } else if (flag == "--mode") {
            o.mode = static_cast<mode_t>(parse_long(flag, value, 0, 8));
        } else if (flag == "--wait-consumers") {
            o.wait_consumers = static_cast<unsigned>(parse_long(flag, value, 0));
        } else if (flag == "--wait-timeout") {
            o.wait_timeout_s = static_cast<double>(parse_long(flag, value, 0));
        } else {
            throw std::invalid_argument("unknown option " + flag + " (see --help)");
        }
    }
    return o;
}

// Owning handles for the GStreamer objects we hold, so every exit path unrefs them.
struct ObjectUnref {
    void operator()(gpointer p) const noexcept { gst_object_unref(p); }
};
struct SampleUnref {
    void operator()(GstSample *s) const noexcept { gst_sample_unref(s); }
};
struct MessageUnref {
    void operator()(GstMessage *m) const noexcept { gst_message_unref(m); }
};
using ElementPtr = std::unique_ptr<GstElement, ObjectUnref>;
using BusPtr = std::unique_ptr<GstBus, ObjectUnref>;
using SamplePtr = std::unique_ptr<GstSample, SampleUnref>;
using MessagePtr = std::unique_ptr<GstMessage, MessageUnref>;

std::string take_gstring(gchar *s) {
    std::string out = s ? s : "";
    g_free(s);
    return out;
}

// Prints warnings and errors waiting on the bus; returns false if the pipeline failed. EOS is not
// handled here: appsink may still hold samples when EOS is posted, gst_app_sink_is_eos() says
// when the last one was pulled.
bool drain_bus(GstBus *bus) {
    const auto types = static_cast<GstMessageType>(GST_MESSAGE_ERROR | GST_MESSAGE_WARNING);
    while (MessagePtr msg{gst_bus_pop_filtered(bus, types)}) {
        GError *err = nullptr;
        gchar *debug = nullptr;
        const bool is_error = GST_MESSAGE_TYPE(msg.get()) == GST_MESSAGE_ERROR;
        if (is_error)
            gst_message_parse_error(msg.get(), &err, &debug);
        else
            gst_message_parse_warning(msg.get(), &err, &debug);
        std::fprintf(stderr, "%s from %s: %s\n%s%s", is_error ? "error" : "warning",
                     GST_OBJECT_NAME(GST_MESSAGE_SRC(msg.get())), err ? err->message : "?",
                     debug ? debug : "", debug ? "\n" : "");
        g_clear_error(&err);
        g_free(debug);
        if (is_error)
            return false;
    }
    return true;
}

// How one GstBuffer is laid out and published, by the bips video convention. A GstVideoMeta
// (v4l2src, hardware decoders) overrides the offsets and strides in the caps.
bips::video::FrameLayout describe(const GstVideoInfo &info, GstBuffer *buffer) {
    std::vector<bips::video::Plane> planes;
    const GstVideoMeta *vmeta = gst_buffer_get_video_meta(buffer);
    for (guint p = 0; p < GST_VIDEO_INFO_N_PLANES(&info); ++p) {
        const bool from_meta = vmeta && p < vmeta->n_planes;
        const gint stride = from_meta ? vmeta->stride[p] : GST_VIDEO_INFO_PLANE_STRIDE(&info, p);
        if (stride < 0)
            throw std::runtime_error("negative row stride: bottom-up frames are not supported");
        planes.push_back({from_meta ? vmeta->offset[p] : GST_VIDEO_INFO_PLANE_OFFSET(&info, p),
                          static_cast<std::size_t>(stride)});
    }
    return bips::video::describe(gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)),
                                 GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info),
                                 std::move(planes), gst_buffer_get_size(buffer));
}

std::optional<std::uint64_t> valid_time(GstClockTime t) {
    return GST_CLOCK_TIME_IS_VALID(t) ? std::optional<std::uint64_t>(t) : std::nullopt;
}

std::string frame_meta(const std::string &caps, const GstVideoInfo &info,
                       const bips::video::FrameLayout &l, GstBuffer *buffer) {
    return bips::video::finish_meta(
        bips::video::meta_prefix(caps, gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)),
                                 GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info),
                                 l.planes),
        valid_time(GST_BUFFER_PTS(buffer)), valid_time(GST_BUFFER_DURATION(buffer)));
}

std::string describe_shape(const bips::video::FrameLayout &l) {
    std::string s = "(";
    const bips::Shape &shape = l.shape;
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",) " : ") ") + l.dtype.name();
}

// The pipeline, stopped and released on every exit path.
class Pipeline {
public:
    explicit Pipeline(const std::string &description) {
        GError *err = nullptr;
        m_pipeline.reset(gst_parse_launch(description.c_str(), &err));
        if (err) {
            const std::string msg = err->message;
            g_clear_error(&err);
            throw std::runtime_error("cannot build the pipeline: " + msg);
        }
        if (!m_pipeline || !GST_IS_PIPELINE(m_pipeline.get()))
            throw std::runtime_error("the description is not a pipeline: " + description);
        m_sink.reset(gst_bin_get_by_name(GST_BIN(m_pipeline.get()), "sink"));
        if (!m_sink || !GST_IS_APP_SINK(m_sink.get()))
            throw std::runtime_error("the pipeline must end in an appsink named 'sink' "
                                     "(... ! appsink name=sink)");
        m_bus.reset(gst_element_get_bus(m_pipeline.get()));

        // Timestamps are PTS + base time on the pipeline clock; the system clock in monotonic
        // mode makes that CLOCK_MONOTONIC, the clock of bips frame timestamps, even when some
        // element (an audio device) would offer its own clock.
        GstClock *clock = gst_system_clock_obtain();
        g_object_set(clock, "clock-type", GST_CLOCK_TYPE_MONOTONIC, nullptr);
        gst_pipeline_use_clock(GST_PIPELINE(m_pipeline.get()), clock);
        gst_object_unref(clock);

        // appsink queues without limit by default; a bounded queue makes a full bips pool
        // (policy block) hold back the pipeline instead of growing memory. A limit given in the
        // pipeline description is kept.
        if (gst_app_sink_get_max_buffers(sink()) == 0)
            gst_app_sink_set_max_buffers(sink(), 4);
    }
    Pipeline(const Pipeline &) = delete;
    Pipeline &operator=(const Pipeline &) = delete;
    ~Pipeline() { gst_element_set_state(m_pipeline.get(), GST_STATE_NULL); }

    void play() {
        // Through PAUSED first: a live pipeline says so there, as it cannot preroll.
        const GstStateChangeReturn paused =
            gst_element_set_state(m_pipeline.get(), GST_STATE_PAUSED);
        m_live = paused == GST_STATE_CHANGE_NO_PREROLL;
        if (paused == GST_STATE_CHANGE_FAILURE ||
            gst_element_set_state(m_pipeline.get(), GST_STATE_PLAYING) ==
                GST_STATE_CHANGE_FAILURE) {
            drain_bus(bus()); // the reason, if an element posted one
            throw std::runtime_error("the pipeline failed to start");
        }
    }
    GstAppSink *sink() const { return GST_APP_SINK(m_sink.get()); }
    GstBus *bus() const { return m_bus.get(); }
    /// True if a source captures in real time (it does not wait for us); known once playing.
    bool live() const { return m_live; }
    GstClockTime base_time() const { return gst_element_get_base_time(m_pipeline.get()); }

private:
    ElementPtr m_pipeline;
    ElementPtr m_sink;
    BusPtr m_bus;
    bool m_live = false;
};

// The next sample, or null at end of stream or on a signal. Throws if the pipeline failed.
SamplePtr pull(Pipeline &pipeline) {
    const auto slice = static_cast<GstClockTime>(std::chrono::nanoseconds(SLICE).count());
    while (!g_stop) {
        if (!drain_bus(pipeline.bus()))
            throw std::runtime_error("the pipeline stopped with an error");
        if (SamplePtr s{gst_app_sink_try_pull_sample(pipeline.sink(), slice)})
            return s;
        if (gst_app_sink_is_eos(pipeline.sink()))
            return nullptr;
    }
    return nullptr;
}

// While it lives, appsink keeps only the newest sample and drops the rest instead of holding back
// the pipeline; the previous settings come back afterwards. For a live source: blocked, it would
// capture on and later push the backlog at full speed, frames nobody could receive in time.
class KeepNewestOnly {
public:
    explicit KeepNewestOnly(GstAppSink *sink)
        : m_sink(sink), m_max_buffers(gst_app_sink_get_max_buffers(sink)),
          m_drop(gst_app_sink_get_drop(sink)) {
        gst_app_sink_set_drop(m_sink, TRUE);
        gst_app_sink_set_max_buffers(m_sink, 1);
    }
    ~KeepNewestOnly() {
        gst_app_sink_set_max_buffers(m_sink, m_max_buffers);
        gst_app_sink_set_drop(m_sink, m_drop);
    }
    KeepNewestOnly(const KeepNewestOnly &) = delete;
    KeepNewestOnly &operator=(const KeepNewestOnly &) = delete;

private:
    GstAppSink *m_sink;
    guint m_max_buffers;
    gboolean m_drop;
};

// Waits until `n` consumers are attached; false on a timeout or a signal.
bool wait_for_consumers(const bips::Producer &producer, unsigned n, double timeout_s) {
    const auto deadline = bips::Clock::now() + std::chrono::duration<double>(timeout_s);
    while (producer.stats().consumers < n) {
        if (g_stop || bips::Clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

// A free buffer, or nullopt on a signal. Under policy block a consumer that holds every buffer
// stalls us here; say so once instead of hanging silently.
std::optional<bips::Buffer> acquire(bips::Producer &producer) {
    const auto start = bips::Clock::now();
    bool warned = false;
    while (!g_stop) {
        if (auto buffer = producer.try_acquire_for(SLICE))
            return buffer;
        if (!warned && bips::Clock::now() - start > 2s) {
            std::fprintf(stderr, "waiting for a free buffer: consumers hold all %u of them\n",
                         producer.capacity());
            warned = true;
        }
    }
    return std::nullopt;
}

int run(const Options &opt) {
    Pipeline pipeline(opt.pipeline);
    pipeline.play();

    std::optional<bips::Producer> producer;
    std::string caps_string;
    GstCaps *current_caps = nullptr; // borrowed from the sample that set it, compared by value
    SamplePtr caps_owner;
    GstVideoInfo info;
    long published = 0;
    bips::Clock::time_point first_publish{};

    while (opt.frames == 0 || published < opt.frames) {
        SamplePtr sample = pull(pipeline);
        if (!sample)
            break;
        GstBuffer *buffer = gst_sample_get_buffer(sample.get());
        GstCaps *caps = gst_sample_get_caps(sample.get());
        if (!buffer || !caps)
            continue;
        if (!current_caps || !gst_caps_is_equal(caps, current_caps)) {
            if (!gst_video_info_from_caps(&info, caps))
                throw std::runtime_error("not raw video caps: " +
                                         take_gstring(gst_caps_to_string(caps)));
            caps_string = take_gstring(gst_caps_to_string(caps));
            current_caps = caps;
            caps_owner.reset(gst_sample_ref(sample.get()));
        }
        const bips::video::FrameLayout layout = describe(info, buffer);

        if (!producer) {
            // The pool is made from the first frame: only then are the caps negotiated.
            bips::PoolOptions po;
            po.capacity = opt.capacity;
            po.policy = opt.policy;
            po.mode = opt.mode;
            po.meta_size = META_SIZE;
            po.buffer_size = std::max<std::size_t>(layout.nbytes, GST_VIDEO_INFO_SIZE(&info));
            if (layout.image) {
                po.shape = layout.shape;
                po.dtype = layout.dtype;
            }
            producer.emplace(opt.pool, po);
            std::printf("pool '%s' ready: %s %dx%d, frames %s, capacity %u, policy %s\n",
                        opt.pool.c_str(), gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)),
                        GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info),
                        describe_shape(layout).c_str(), opt.capacity,
                        opt.policy == bips::Policy::block ? "block" : "drop_oldest");
            std::fflush(stdout);
            if (opt.wait_consumers > 0) {
                std::printf("waiting for %u consumer(s)\n", opt.wait_consumers);
                std::fflush(stdout);
                // A non-live pipeline (a file) waits for us with every frame; a live one cannot,
                // so what it captures before a consumer is there is dropped, and the first frame
                // published is the newest, not one as old as the wait.
                const bool live = pipeline.live();
                std::optional<KeepNewestOnly> dropping;
                if (live)
                    dropping.emplace(pipeline.sink());
                if (!wait_for_consumers(*producer, opt.wait_consumers, opt.wait_timeout_s)) {
                    if (g_stop)
                        break;
                    std::fprintf(stderr, "error: fewer than %u consumers attached within %g s\n",
                                 opt.wait_consumers, opt.wait_timeout_s);
                    return 1;
                }
                if (live)
                    continue;
            }
        }
        if (layout.nbytes > producer->buffer_size())
            throw std::runtime_error("the caps changed to " + caps_string + ", whose frames need " +
                                     std::to_string(layout.nbytes) + " bytes, but the pool's " +
                                     "buffers hold " + std::to_string(producer->buffer_size()) +
                                     "; restart the capture");

        std::optional<bips::Buffer> out = acquire(*producer);
        if (!out)
            break;
        if (layout.image)
            out->set_format(layout.shape, layout.dtype);
        else
            out->set_nbytes(layout.nbytes);

        GstMapInfo map;
        if (!gst_buffer_map(buffer, &map, GST_MAP_READ))
            throw std::runtime_error("cannot map a GstBuffer for reading");
        // The one copy of this path: appsink hands out GStreamer's memory. The bipssink element
        // instead lets upstream elements write straight into the pool.
        std::memcpy(out->data(), map.data, std::min(layout.nbytes, map.size));
        gst_buffer_unmap(buffer, &map);

        // Capture time on the pipeline clock = running time of the PTS + the base time.
        std::int64_t timestamp_ns = -1; // no PTS: bips stamps the publish time
        const GstSegment *segment = gst_sample_get_segment(sample.get());
        if (GST_BUFFER_PTS_IS_VALID(buffer) && segment) {
            const GstClockTime running =
                gst_segment_to_running_time(segment, GST_FORMAT_TIME, GST_BUFFER_PTS(buffer));
            if (GST_CLOCK_TIME_IS_VALID(running))
                timestamp_ns = static_cast<std::int64_t>(running + pipeline.base_time());
        }
        const std::string meta = frame_meta(caps_string, info, layout, buffer);
        if (meta.size() > META_SIZE)
            throw std::runtime_error("frame metadata of " + std::to_string(meta.size()) +
                                     " bytes exceeds " + std::to_string(META_SIZE));
        producer->publish(std::move(*out), timestamp_ns, meta.data(), meta.size());
        if (published++ == 0)
            first_publish = bips::Clock::now();
    }

    if (!producer) {
        if (g_stop)
            return 0;
        std::fprintf(stderr, "error: the pipeline ended before producing a frame\n");
        return 1;
    }
    const bips::ProducerStats stats = producer->stats();
    producer->close(); // consumers drain what is queued, then see the end of the stream
    const std::chrono::duration<double> elapsed = bips::Clock::now() - first_publish;
    const double fps = published > 1 ? (published - 1) / elapsed.count() : 0.0;
    std::printf("published %ld frames in %.2f s (%.1f fps), %llu dropped%s\n", published,
                elapsed.count(), fps, static_cast<unsigned long long>(stats.dropped),
                g_stop ? ", stopped by a signal" : "");
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    gst_init(&argc, &argv);
    std::optional<Options> options;
    try {
        options = parse_args(argc, argv);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 2;
    }
    if (!options)
        return 0;

    // A first Ctrl-C (or SIGTERM) stops cleanly: the pool is closed, so consumers see the end
    // of the stream. SA_RESETHAND lets a second one kill at once.
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    try {
        return run(*options);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
