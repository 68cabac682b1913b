// SPDX-License-Identifier: Apache-2.0
#pragma once

// The video convention (bips/video.hpp) in GStreamer terms, for bipssink and bipssrc: layouts
// from a GstVideoInfo, checks of untrusted planes, reading the metadata back, and caps for
// frames published without it.

#include <bips/types.hpp>
#include <bips/video.hpp>

#include <gst/video/video.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bips::gst {

/// Per-frame metadata area the sink creates its pools with.
using bips::video::META_SIZE;

/// The raw video formats both elements accept, as a caps string for the pad templates. Packed
/// 8-bit RGB-like formats, GRAY8 and GRAY16_LE are published shaped; the others as flat bytes
/// whose planes the metadata locates.
#define BIPS_GST_FORMATS                                                                           \
    "{ RGB, BGR, RGBA, BGRA, ARGB, ABGR, RGBx, BGRx, xRGB, xBGR, GRAY8, GRAY16_LE, I420, YV12, "   \
    "NV12, NV21, Y42B, Y444, YUY2, UYVY }"
#define BIPS_GST_CAPS GST_VIDEO_CAPS_MAKE(BIPS_GST_FORMATS)

using bips::video::FrameLayout;
using bips::video::Plane;

/// The planes of `info`'s default (GStreamer standard) layout.
std::vector<Plane> default_planes(const GstVideoInfo &info);

/// The layout of a frame of `info` whose planes are `planes` in a buffer of `size` bytes, by the
/// convention's rule (bips::video::describe()).
FrameLayout describe(const GstVideoInfo &info, const std::vector<Plane> &planes, std::size_t size);

/// Checks that `planes` are plausible for `info` and lie within `size` bytes; on failure returns
/// false and says why in `error`. Values come from shared memory, so nothing is trusted.
bool check_planes(const GstVideoInfo &info, const std::vector<Plane> &planes, std::size_t size,
                  std::string &error);

/// What copy_frame() did.
enum class CopyResult { Copied, BadInput, Failed };

/// Copies the frame in `src` (laid out as its GstVideoMeta says, else as `info`'s standard
/// layout) into `dst` in `info`'s standard layout, plane by plane. BadInput: `src` is no such
/// frame (too small); Failed: `dst` could not be written.
CopyResult copy_frame(const GstVideoInfo &info, GstBuffer *src, GstBuffer *dst);

/// bips::video::meta_prefix() for `caps` and `info`.
std::string meta_prefix(const GstCaps *caps, const GstVideoInfo &info,
                        const std::vector<Plane> &planes);

/// bips::video::finish_meta() with GStreamer times (null when invalid).
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

} // namespace bips::gst
