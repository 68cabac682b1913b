// SPDX-License-Identifier: Apache-2.0
#pragma once

// The video convention shared by bipssink, bipssrc and bips.video: how a raw video frame lies in
// a bips buffer, what shape/dtype it is published with, and the JSON metadata that describes it.

#include <bips/types.hpp>

#include <gst/video/video.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bips::gst {

/// Per-frame metadata area the sink creates its pools with.
constexpr std::size_t META_SIZE = 4096;

/// The raw video formats both elements accept, as a caps string for the pad templates. Packed
/// 8-bit RGB-like formats, GRAY8 and GRAY16_LE are published shaped; the others as flat bytes
/// whose planes the metadata locates.
#define BIPS_GST_FORMATS                                                                          \
    "{ RGB, BGR, RGBA, BGRA, ARGB, ABGR, RGBx, BGRx, xRGB, xBGR, GRAY8, GRAY16_LE, I420, YV12, "  \
    "NV12, NV21, Y42B, Y444, YUY2, UYVY }"
#define BIPS_GST_CAPS GST_VIDEO_CAPS_MAKE(BIPS_GST_FORMATS)

/// Where one plane of a frame starts in the buffer, and its row pitch in bytes.
struct Plane {
    std::size_t offset = 0;
    std::size_t stride = 0;
    friend bool operator==(const Plane &a, const Plane &b) {
        return a.offset == b.offset && a.stride == b.stride;
    }
};

/// How one frame of a format lies in a buffer and what it is published as.
struct FrameLayout {
    std::vector<Plane> planes;
    std::size_t nbytes = 0; ///< bytes published (the whole frame, padding included)
    Shape shape;            ///< (h, w, c), (h, w) or (nbytes,)
    DType dtype = UINT8;
};

/// The planes of `info`'s default (GStreamer standard) layout.
std::vector<Plane> default_planes(const GstVideoInfo &info);

/// The layout of a frame of `info` whose planes are `planes` in a buffer of `size` bytes: packed
/// formats with unpadded rows get their image shape, everything else is a flat uint8 frame.
FrameLayout describe(const GstVideoInfo &info, const std::vector<Plane> &planes, std::size_t size);

/// Checks that `planes` are plausible for `info` and lie within `size` bytes; on failure returns
/// false and says why in `error`. Values come from shared memory, so nothing is trusted.
bool check_planes(const GstVideoInfo &info, const std::vector<Plane> &planes, std::size_t size,
                  std::string &error);

/// The part of a frame's JSON metadata that depends only on caps and layout: `{"caps": ...,
/// ..., "planes": [...]`, without the closing brace; finish_meta() completes it per frame.
std::string meta_prefix(const GstCaps *caps, const GstVideoInfo &info,
                        const std::vector<Plane> &planes);

/// `prefix` plus the frame's pts and duration (null when invalid) and the closing brace.
std::string finish_meta(const std::string &prefix, GstClockTime pts, GstClockTime duration);

/// What bipssrc needs from a frame's metadata; fields are empty when absent or malformed.
struct ParsedMeta {
    std::optional<std::string> caps;
    std::optional<std::vector<Plane>> planes;
    std::optional<std::uint64_t> pts;
    std::optional<std::uint64_t> duration;
};

/// Parses metadata bytes (a JSON object, ending at the first NUL). Returns false when they are
/// not a JSON object (a producer may put anything in its metadata); `out` is then empty.
bool parse_meta(const char *data, std::size_t size, ParsedMeta &out);

/// Caps for a frame published without video metadata, from its shape and dtype: (h, w, 3) uint8
/// -> RGB, (h, w, 4) uint8 -> RGBA, (h, w) or (h, w, 1) uint8 -> GRAY8, (h, w) uint16 ->
/// GRAY16_LE. Returns nullptr and sets `error` for anything else. `planes` gets the frame's
/// (unpadded) layout.
GstCaps *caps_from_shape(const Shape &shape, DType dtype, std::vector<Plane> &planes,
                         std::string &error);

/// `s` as a JSON string literal, quotes included.
std::string json_quote(const std::string &s);

} // namespace bips::gst
