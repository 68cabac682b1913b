// SPDX-License-Identifier: Apache-2.0
#pragma once

// The bips video convention, header-only and free of GStreamer: the raw video formats a frame
// may carry, how each plane's rows are sized, which frames are published with their image shape,
// and the JSON metadata that describes every frame. bipssink, bipssrc and bips-capture follow
// it; Python reads the same table through bips.video.
//
// Packed formats whose one plane has unpadded rows are published shaped: (h, w, channels), gray
// as (h, w). Everything else (planar formats, padded rows) is a flat uint8 frame, and the
// metadata's "planes" say where each plane starts and its row pitch. The metadata is a JSON
// object: {"caps": ..., "format": ..., "width": ..., "height": ..., "planes": [{"offset": ...,
// "stride": ...}, ...], "pts": ..., "duration": ...}, pts and duration in ns or null.

#include <bips/types.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bips::video {

/// Metadata bytes per frame (meta_size) of pools that carry video.
inline constexpr std::size_t META_SIZE = 4096;

/// One plane of a format: its rows and columns are the frame's height and width divided by
/// `row_div` and `col_div`, rounded up (as GStreamer does); each column holds `channels` samples
/// of `sample_bytes` bytes.
struct PlaneSpec {
    std::uint32_t row_div = 1;
    std::uint32_t col_div = 1;
    std::uint32_t channels = 1;
    std::uint32_t sample_bytes = 1;
};

/// A raw video format of the convention.
struct FormatSpec {
    const char *name;       ///< GStreamer's name of the format ("RGB", "I420", ...)
    std::uint32_t n_planes; ///< planes[0 .. n_planes)
    PlaneSpec planes[3];
    bool image;      ///< packed: published with its image shape when rows are unpadded
    bool big_endian; ///< samples wider than a byte are big-endian
};

/// Every format of the convention: those bipssink and bipssrc accept, and GRAY16_BE.
inline constexpr FormatSpec FORMATS[] = {
    {"RGB", 1, {{1, 1, 3, 1}}, true, false},
    {"BGR", 1, {{1, 1, 3, 1}}, true, false},
    {"RGBA", 1, {{1, 1, 4, 1}}, true, false},
    {"BGRA", 1, {{1, 1, 4, 1}}, true, false},
    {"ARGB", 1, {{1, 1, 4, 1}}, true, false},
    {"ABGR", 1, {{1, 1, 4, 1}}, true, false},
    {"RGBx", 1, {{1, 1, 4, 1}}, true, false},
    {"BGRx", 1, {{1, 1, 4, 1}}, true, false},
    {"xRGB", 1, {{1, 1, 4, 1}}, true, false},
    {"xBGR", 1, {{1, 1, 4, 1}}, true, false},
    {"GRAY8", 1, {{1, 1, 1, 1}}, true, false},
    {"GRAY16_LE", 1, {{1, 1, 1, 2}}, true, false},
    {"GRAY16_BE", 1, {{1, 1, 1, 2}}, false, true},
    {"I420", 3, {{1, 1, 1, 1}, {2, 2, 1, 1}, {2, 2, 1, 1}}, false, false},
    {"YV12", 3, {{1, 1, 1, 1}, {2, 2, 1, 1}, {2, 2, 1, 1}}, false, false},
    {"NV12", 2, {{1, 1, 1, 1}, {2, 2, 2, 1}}, false, false},
    {"NV21", 2, {{1, 1, 1, 1}, {2, 2, 2, 1}}, false, false},
    {"Y42B", 3, {{1, 1, 1, 1}, {1, 2, 1, 1}, {1, 2, 1, 1}}, false, false},
    {"Y444", 3, {{1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}}, false, false},
    // Packed 4:2:2: each pixel is (luma, one chroma sample); pairs of pixels share U and V.
    {"YUY2", 1, {{1, 1, 2, 1}}, false, false},
    {"UYVY", 1, {{1, 1, 2, 1}}, false, false},
};

/// The format called `name`; nullptr if the convention does not know it.
inline const FormatSpec *find_format(std::string_view name) noexcept {
    for (const FormatSpec &f : FORMATS)
        if (name == f.name)
            return &f;
    return nullptr;
}

/// Where one plane of a frame starts in the buffer, and its row pitch in bytes.
struct Plane {
    std::size_t offset = 0;
    std::size_t stride = 0;
    friend bool operator==(const Plane &a, const Plane &b) {
        return a.offset == b.offset && a.stride == b.stride;
    }
};

/// How one frame lies in a buffer and what it is published as.
struct FrameLayout {
    std::vector<Plane> planes;
    std::size_t nbytes = 0; ///< bytes published (the whole frame, padding included)
    Shape shape;            ///< (h, w, c), (h, w) or (nbytes,)
    DType dtype = UINT8;
    bool image = false; ///< shape is the image's, not (nbytes,)
};

/// The layout of a `width` x `height` frame of `format` whose planes are `planes` in a buffer of
/// `size` bytes: an image format whose one plane starts at 0 with unpadded rows gets its image
/// shape and dtype; everything else (an unknown format too) is a flat uint8 frame of `size`.
inline FrameLayout describe(std::string_view format, std::int64_t width, std::int64_t height,
                            std::vector<Plane> planes, std::size_t size) {
    FrameLayout l;
    l.planes = std::move(planes);
    l.nbytes = size;
    l.shape = {static_cast<std::int64_t>(size)};
    const FormatSpec *f = find_format(format);
    // bips dtypes are native-endian: wider samples are an image only in the host's byte order.
    constexpr bool host_big_endian = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__;
    if (!f || !f->image || width <= 0 || height <= 0 ||
        (f->planes[0].sample_bytes > 1 && f->big_endian != host_big_endian))
        return l;
    const PlaneSpec &p = f->planes[0];
    const auto row = static_cast<std::size_t>(width) * p.channels * p.sample_bytes;
    const auto rows = static_cast<std::size_t>(height);
    if (l.planes.size() == 1 && l.planes[0].offset == 0 && l.planes[0].stride == row &&
        row * rows <= size) {
        const auto channels = static_cast<std::int64_t>(p.channels);
        l.nbytes = row * rows;
        l.shape = channels == 1 ? Shape{height, width} : Shape{height, width, channels};
        l.dtype = p.sample_bytes == 2 ? UINT16 : UINT8;
        l.image = true;
    }
    return l;
}

/// `s` as a JSON string literal, quotes included.
inline std::string json_quote(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04x", u);
            out += esc;
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

/// The part of a frame's metadata that depends only on its caps and layout: `{"caps": ...,
/// "format": ..., "width": ..., "height": ..., "planes": [...]` without the closing brace;
/// finish_meta() completes it per frame.
inline std::string meta_prefix(std::string_view caps, std::string_view format, std::int64_t width,
                               std::int64_t height, const std::vector<Plane> &planes) {
    std::string s = "{\"caps\": " + json_quote(caps);
    s += ", \"format\": " + json_quote(format);
    s += ", \"width\": " + std::to_string(width);
    s += ", \"height\": " + std::to_string(height);
    s += ", \"planes\": [";
    for (std::size_t p = 0; p < planes.size(); ++p) {
        if (p)
            s += ", ";
        s += "{\"offset\": " + std::to_string(planes[p].offset) +
             ", \"stride\": " + std::to_string(planes[p].stride) + "}";
    }
    s += "]";
    return s;
}

/// `prefix` plus the frame's pts and duration in nanoseconds (null when absent) and the closing
/// brace.
inline std::string finish_meta(const std::string &prefix, std::optional<std::uint64_t> pts,
                               std::optional<std::uint64_t> duration) {
    std::string s = prefix;
    s += ", \"pts\": ";
    s += pts ? std::to_string(*pts) : "null";
    s += ", \"duration\": ";
    s += duration ? std::to_string(*duration) : "null";
    s += "}";
    return s;
}

} // namespace bips::video
