// SPDX-License-Identifier: Apache-2.0
#include "videometa.hpp"

#include "json.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

namespace bips::gst {

namespace {

std::optional<std::uint64_t> non_negative(const JsonValue *v) {
    if (v && v->kind == JsonValue::Int && v->integer >= 0)
        return static_cast<std::uint64_t>(v->integer);
    return std::nullopt;
}

} // namespace

std::vector<Plane> default_planes(const GstVideoInfo &info) {
    std::vector<Plane> planes(GST_VIDEO_INFO_N_PLANES(&info));
    for (std::size_t p = 0; p < planes.size(); ++p) {
        planes[p].offset = GST_VIDEO_INFO_PLANE_OFFSET(&info, p);
        planes[p].stride = static_cast<std::size_t>(GST_VIDEO_INFO_PLANE_STRIDE(&info, p));
    }
    return planes;
}

FrameLayout describe(const GstVideoInfo &info, const std::vector<Plane> &planes, std::size_t size) {
    return bips::video::describe(gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)),
                                 GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info), planes,
                                 size);
}

bool check_planes(const GstVideoInfo &info, const std::vector<Plane> &planes, std::size_t size,
                  std::string &error) {
    const GstVideoFormatInfo *finfo = info.finfo;
    if (!finfo || GST_VIDEO_FORMAT_INFO_IS_TILED(finfo) ||
        GST_VIDEO_FORMAT_INFO_HAS_PALETTE(finfo)) {
        error = "unsupported video format";
        return false;
    }
    const guint n = GST_VIDEO_INFO_N_PLANES(&info);
    if (planes.size() != n) {
        error = "the metadata lists " + std::to_string(planes.size()) + " planes; format " +
                gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)) + " has " +
                std::to_string(n);
        return false;
    }
    const gint width = GST_VIDEO_INFO_WIDTH(&info);
    const gint height = GST_VIDEO_INFO_HEIGHT(&info);
    for (guint p = 0; p < n; ++p) {
        // The bytes one row of this plane needs and its number of rows, over the components it
        // holds (YUY2 needs whole pixel pairs, so the chroma components decide its row length).
        std::size_t row = 0, rows = 0;
        for (guint c = 0; c < GST_VIDEO_FORMAT_INFO_N_COMPONENTS(finfo); ++c) {
            if (GST_VIDEO_FORMAT_INFO_PLANE(finfo, c) != p)
                continue;
            const auto cols =
                static_cast<std::size_t>(GST_VIDEO_FORMAT_INFO_SCALE_WIDTH(finfo, c, width));
            const auto pstride = static_cast<std::size_t>(GST_VIDEO_FORMAT_INFO_PSTRIDE(finfo, c));
            row = std::max(row, cols * pstride);
            rows = std::max(rows, static_cast<std::size_t>(
                                      GST_VIDEO_FORMAT_INFO_SCALE_HEIGHT(finfo, c, height)));
        }
        const Plane &pl = planes[p];
        std::size_t span = 0, end = 0;
        if (pl.stride < row || rows == 0 || __builtin_mul_overflow(pl.stride, rows - 1, &span) ||
            __builtin_add_overflow(span, row, &span) ||
            __builtin_add_overflow(span, pl.offset, &end) || end > size) {
            error = "plane " + std::to_string(p) + " (offset " + std::to_string(pl.offset) +
                    ", stride " + std::to_string(pl.stride) + ") does not fit a " +
                    std::to_string(width) + "x" + std::to_string(height) + " " +
                    gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)) + " frame of " +
                    std::to_string(size) + " bytes";
            return false;
        }
    }
    return true;
}

CopyResult copy_frame(const GstVideoInfo &info, GstBuffer *src, GstBuffer *dst) {
    GstVideoFrame in, out;
    if (!gst_video_frame_map(&in, &info, src, GST_MAP_READ))
        return CopyResult::BadInput;
    bool copied = false;
    if (gst_video_frame_map(&out, &info, dst, GST_MAP_WRITE)) {
        copied = gst_video_frame_copy(&out, &in);
        gst_video_frame_unmap(&out);
    }
    gst_video_frame_unmap(&in);
    return copied ? CopyResult::Copied : CopyResult::Failed;
}

std::string meta_prefix(const GstCaps *caps, const GstVideoInfo &info,
                        const std::vector<Plane> &planes) {
    gchar *caps_str = gst_caps_to_string(caps);
    std::string s =
        bips::video::meta_prefix(caps_str, gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)),
                                 GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info), planes);
    g_free(caps_str);
    return s;
}

std::string finish_meta(const std::string &prefix, GstClockTime pts, GstClockTime duration) {
    auto valid = [](GstClockTime t) {
        return GST_CLOCK_TIME_IS_VALID(t) ? std::optional<std::uint64_t>(t) : std::nullopt;
    };
    return bips::video::finish_meta(prefix, valid(pts), valid(duration));
}

bool parse_meta(const char *data, std::size_t size, ParsedMeta &out) {
    out = ParsedMeta{};
    if (!data)
        return false;
    size = strnlen(data, size);
    JsonValue root;
    if (size == 0 || !parse_json(data, data + size, root) || root.kind != JsonValue::Object)
        return false;
    if (const JsonValue *caps = root.get("caps"); caps && caps->kind == JsonValue::String)
        out.caps = caps->text;
    if (const JsonValue *planes = root.get("planes"); planes && planes->kind == JsonValue::Array) {
        std::vector<Plane> v;
        bool ok = planes->items.size() <= GST_VIDEO_MAX_PLANES;
        for (const auto &item : planes->items) {
            if (!ok || item.kind != JsonValue::Object) {
                ok = false;
                break;
            }
            const auto offset = non_negative(item.get("offset"));
            const auto stride = non_negative(item.get("stride"));
            if (!offset || !stride) {
                ok = false;
                break;
            }
            v.push_back(
                Plane{static_cast<std::size_t>(*offset), static_cast<std::size_t>(*stride)});
        }
        if (ok)
            out.planes = std::move(v);
    }
    out.pts = non_negative(root.get("pts"));
    out.duration = non_negative(root.get("duration"));
    return true;
}

GstCaps *caps_from_shape(const Shape &shape, DType dtype, std::vector<Plane> &planes,
                         std::string &error) {
    const char *format = nullptr;
    std::int64_t channels = 1;
    if (shape.size() == 3)
        channels = shape[2];
    if (dtype == UINT8 && shape.size() == 3 && channels == 3)
        format = "RGB";
    else if (dtype == UINT8 && shape.size() == 3 && channels == 4)
        format = "RGBA";
    else if (dtype == UINT8 && (shape.size() == 2 || (shape.size() == 3 && channels == 1)))
        format = "GRAY8";
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
    else if (dtype == UINT16 && (shape.size() == 2 || (shape.size() == 3 && channels == 1)))
        format = "GRAY16_LE";
#endif
    if (!format || shape[0] <= 0 || shape[1] <= 0 || shape[0] > G_MAXINT || shape[1] > G_MAXINT) {
        std::string dims;
        for (auto d : shape)
            dims += (dims.empty() ? "" : ", ") + std::to_string(d);
        error = "the frame has no video metadata and its shape (" + dims + ") " + dtype.name() +
                " is not an image bipssrc knows: use (h, w, 3) or (h, w, 4) uint8, (h, w) uint8 "
                "or uint16, or publish metadata with a \"caps\" field";
        return nullptr;
    }
    const auto h = static_cast<gint>(shape[0]);
    const auto w = static_cast<gint>(shape[1]);
    planes = {Plane{0, static_cast<std::size_t>(w) * static_cast<std::size_t>(channels) *
                           dtype.itemsize()}};
    return gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, format, "width", G_TYPE_INT,
                               w, "height", G_TYPE_INT, h, "framerate", GST_TYPE_FRACTION, 0, 1,
                               nullptr);
}

} // namespace bips::gst
