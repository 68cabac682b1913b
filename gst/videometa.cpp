// SPDX-License-Identifier: Apache-2.0
#include "videometa.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

namespace bips::gst {

namespace {

// ---- a small JSON reader ------------------------------------------------------------------
// Metadata comes from shared memory that any process with access may have written: the reader
// bounds its depth and every index, and reports malformed input instead of guessing.

struct JsonValue {
    enum Kind { Null, Bool, Int, Float, String, Array, Object } kind = Null;
    bool boolean = false;
    std::int64_t integer = 0;
    double real = 0;
    std::string text;
    std::vector<JsonValue> items;
    std::vector<std::pair<std::string, JsonValue>> members;

    const JsonValue *get(const char *key) const {
        for (const auto &m : members)
            if (m.first == key)
                return &m.second;
        return nullptr;
    }
};

constexpr int MAX_DEPTH = 32;

class JsonReader {
public:
    JsonReader(const char *begin, const char *end) : m_p(begin), m_end(end) {}

    bool document(JsonValue &out) {
        if (!value(out, 0))
            return false;
        skip_space();
        return m_p == m_end;
    }

private:
    void skip_space() {
        while (m_p < m_end && (*m_p == ' ' || *m_p == '\t' || *m_p == '\n' || *m_p == '\r'))
            ++m_p;
    }

    bool literal(const char *word) {
        const std::size_t n = std::strlen(word);
        if (static_cast<std::size_t>(m_end - m_p) < n || std::memcmp(m_p, word, n) != 0)
            return false;
        m_p += n;
        return true;
    }

    bool value(JsonValue &out, int depth) {
        if (depth > MAX_DEPTH)
            return false;
        skip_space();
        if (m_p >= m_end)
            return false;
        switch (*m_p) {
        case '{':
            return object(out, depth);
        case '[':
            return array(out, depth);
        case '"':
            out.kind = JsonValue::String;
            return string(out.text);
        case 't':
            out.kind = JsonValue::Bool;
            out.boolean = true;
            return literal("true");
        case 'f':
            out.kind = JsonValue::Bool;
            out.boolean = false;
            return literal("false");
        case 'n':
            out.kind = JsonValue::Null;
            return literal("null");
        default:
            return number(out);
        }
    }

    bool object(JsonValue &out, int depth) {
        out.kind = JsonValue::Object;
        ++m_p; // '{'
        skip_space();
        if (m_p < m_end && *m_p == '}') {
            ++m_p;
            return true;
        }
        for (;;) {
            skip_space();
            std::string key;
            if (m_p >= m_end || *m_p != '"' || !string(key))
                return false;
            skip_space();
            if (m_p >= m_end || *m_p != ':')
                return false;
            ++m_p;
            JsonValue v;
            if (!value(v, depth + 1))
                return false;
            out.members.emplace_back(std::move(key), std::move(v));
            const Next next = after_element('}');
            if (next != Next::More)
                return next == Next::Closed;
        }
    }

    bool array(JsonValue &out, int depth) {
        out.kind = JsonValue::Array;
        ++m_p; // '['
        skip_space();
        if (m_p < m_end && *m_p == ']') {
            ++m_p;
            return true;
        }
        for (;;) {
            JsonValue v;
            if (!value(v, depth + 1))
                return false;
            out.items.push_back(std::move(v));
            const Next next = after_element(']');
            if (next != Next::More)
                return next == Next::Closed;
        }
    }

    enum class Next { More, Closed, Bad };

    // After a member or an item: ',' (another follows), `close` (the container ends) or an error.
    Next after_element(char close) {
        skip_space();
        if (m_p >= m_end)
            return Next::Bad;
        if (*m_p == ',' || *m_p == close) {
            const bool more = *m_p == ',';
            ++m_p;
            return more ? Next::More : Next::Closed;
        }
        return Next::Bad;
    }

    bool hex4(std::uint32_t &cp) {
        if (m_end - m_p < 4)
            return false;
        cp = 0;
        for (int i = 0; i < 4; ++i) {
            const char c = *m_p++;
            cp <<= 4;
            if (c >= '0' && c <= '9')
                cp |= static_cast<std::uint32_t>(c - '0');
            else if (c >= 'a' && c <= 'f')
                cp |= static_cast<std::uint32_t>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                cp |= static_cast<std::uint32_t>(c - 'A' + 10);
            else
                return false;
        }
        return true;
    }

    static void append_utf8(std::string &out, std::uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    bool string(std::string &out) {
        ++m_p; // '"'
        while (m_p < m_end) {
            const char c = *m_p++;
            if (c == '"')
                return true;
            if (static_cast<unsigned char>(c) < 0x20)
                return false;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (m_p >= m_end)
                return false;
            const char e = *m_p++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                out += e;
                break;
            case 'b':
                out += '\b';
                break;
            case 'f':
                out += '\f';
                break;
            case 'n':
                out += '\n';
                break;
            case 'r':
                out += '\r';
                break;
            case 't':
                out += '\t';
                break;
            case 'u': {
                std::uint32_t cp = 0;
                if (!hex4(cp))
                    return false;
                if (cp >= 0xD800 && cp < 0xDC00) { // a surrogate pair makes one code point
                    std::uint32_t low = 0;
                    if (m_end - m_p < 6 || m_p[0] != '\\' || m_p[1] != 'u')
                        return false;
                    m_p += 2;
                    if (!hex4(low) || low < 0xDC00 || low > 0xDFFF)
                        return false;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return false;
                }
                append_utf8(out, cp);
                break;
            }
            default:
                return false;
            }
        }
        return false;
    }

    bool number(JsonValue &out) {
        const char *start = m_p;
        if (m_p < m_end && *m_p == '-')
            ++m_p;
        if (m_p >= m_end || *m_p < '0' || *m_p > '9')
            return false;
        if (*m_p == '0')
            ++m_p;
        else
            while (m_p < m_end && *m_p >= '0' && *m_p <= '9')
                ++m_p;
        bool integral = true;
        if (m_p < m_end && *m_p == '.') {
            integral = false;
            ++m_p;
            if (m_p >= m_end || *m_p < '0' || *m_p > '9')
                return false;
            while (m_p < m_end && *m_p >= '0' && *m_p <= '9')
                ++m_p;
        }
        if (m_p < m_end && (*m_p == 'e' || *m_p == 'E')) {
            integral = false;
            ++m_p;
            if (m_p < m_end && (*m_p == '+' || *m_p == '-'))
                ++m_p;
            if (m_p >= m_end || *m_p < '0' || *m_p > '9')
                return false;
            while (m_p < m_end && *m_p >= '0' && *m_p <= '9')
                ++m_p;
        }
        const std::string text(start, m_p);
        if (integral) {
            // Exact for the full int64 range (nanosecond timestamps exceed a double's 53 bits).
            const bool negative = text[0] == '-';
            std::uint64_t magnitude = 0;
            bool overflow = false;
            for (std::size_t i = negative ? 1 : 0; i < text.size() && !overflow; ++i)
                overflow = __builtin_mul_overflow(magnitude, 10u, &magnitude) ||
                           __builtin_add_overflow(magnitude, static_cast<unsigned>(text[i] - '0'),
                                                  &magnitude);
            const std::uint64_t limit = negative ? (std::uint64_t{1} << 63)
                                                 : (std::uint64_t{1} << 63) - 1;
            if (!overflow && magnitude <= limit) {
                out.kind = JsonValue::Int;
                out.integer = negative ? static_cast<std::int64_t>(0 - magnitude)
                                       : static_cast<std::int64_t>(magnitude);
                return true;
            }
        }
        out.kind = JsonValue::Float;
        out.real = g_ascii_strtod(text.c_str(), nullptr); // locale-independent
        return true;
    }

    const char *m_p;
    const char *m_end;
};

std::optional<std::uint64_t> non_negative(const JsonValue *v) {
    if (v && v->kind == JsonValue::Int && v->integer >= 0)
        return static_cast<std::uint64_t>(v->integer);
    return std::nullopt;
}

// Packed formats that are published with their image shape when rows have no padding.
struct ShapedFormat {
    GstVideoFormat format;
    std::int64_t channels; // 1: (h, w), else (h, w, channels)
    DType dtype;
};

constexpr ShapedFormat SHAPED[] = {
    {GST_VIDEO_FORMAT_RGB, 3, UINT8},   {GST_VIDEO_FORMAT_BGR, 3, UINT8},
    {GST_VIDEO_FORMAT_RGBA, 4, UINT8},  {GST_VIDEO_FORMAT_BGRA, 4, UINT8},
    {GST_VIDEO_FORMAT_ARGB, 4, UINT8},  {GST_VIDEO_FORMAT_ABGR, 4, UINT8},
    {GST_VIDEO_FORMAT_RGBx, 4, UINT8},  {GST_VIDEO_FORMAT_BGRx, 4, UINT8},
    {GST_VIDEO_FORMAT_xRGB, 4, UINT8},  {GST_VIDEO_FORMAT_xBGR, 4, UINT8},
    {GST_VIDEO_FORMAT_GRAY8, 1, UINT8},
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
    // bips dtypes are native-endian: little-endian samples are uint16 only on such hosts.
    {GST_VIDEO_FORMAT_GRAY16_LE, 1, UINT16},
#endif
};

} // namespace

std::string json_quote(const std::string &s) {
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
            g_snprintf(esc, sizeof esc, "\\u%04x", u);
            out += esc;
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

std::vector<Plane> default_planes(const GstVideoInfo &info) {
    std::vector<Plane> planes(GST_VIDEO_INFO_N_PLANES(&info));
    for (std::size_t p = 0; p < planes.size(); ++p) {
        planes[p].offset = GST_VIDEO_INFO_PLANE_OFFSET(&info, p);
        planes[p].stride = static_cast<std::size_t>(GST_VIDEO_INFO_PLANE_STRIDE(&info, p));
    }
    return planes;
}

FrameLayout describe(const GstVideoInfo &info, const std::vector<Plane> &planes, std::size_t size) {
    FrameLayout l;
    l.planes = planes;
    l.nbytes = size;
    l.shape = {static_cast<std::int64_t>(size)};
    l.dtype = UINT8;
    const std::int64_t w = GST_VIDEO_INFO_WIDTH(&info);
    const std::int64_t h = GST_VIDEO_INFO_HEIGHT(&info);
    for (const auto &f : SHAPED) {
        if (f.format != GST_VIDEO_INFO_FORMAT(&info))
            continue;
        const auto row = static_cast<std::size_t>(w * f.channels) * f.dtype.itemsize();
        if (planes.size() == 1 && planes[0].offset == 0 && planes[0].stride == row &&
            row * static_cast<std::size_t>(h) <= size) {
            l.nbytes = row * static_cast<std::size_t>(h);
            l.shape = f.channels == 1 ? Shape{h, w} : Shape{h, w, f.channels};
            l.dtype = f.dtype;
        }
        break;
    }
    return l;
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
        if (pl.stride < row || rows == 0 ||
            __builtin_mul_overflow(pl.stride, rows - 1, &span) ||
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

std::string meta_prefix(const GstCaps *caps, const GstVideoInfo &info,
                        const std::vector<Plane> &planes) {
    gchar *caps_str = gst_caps_to_string(caps);
    std::string s = "{\"caps\": " + json_quote(caps_str);
    g_free(caps_str);
    s += ", \"format\": ";
    s += json_quote(gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)));
    s += ", \"width\": " + std::to_string(GST_VIDEO_INFO_WIDTH(&info));
    s += ", \"height\": " + std::to_string(GST_VIDEO_INFO_HEIGHT(&info));
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

std::string finish_meta(const std::string &prefix, GstClockTime pts, GstClockTime duration) {
    std::string s = prefix;
    s += ", \"pts\": ";
    s += GST_CLOCK_TIME_IS_VALID(pts) ? std::to_string(pts) : "null";
    s += ", \"duration\": ";
    s += GST_CLOCK_TIME_IS_VALID(duration) ? std::to_string(duration) : "null";
    s += "}";
    return s;
}

bool parse_meta(const char *data, std::size_t size, ParsedMeta &out) {
    out = ParsedMeta{};
    if (!data)
        return false;
    size = strnlen(data, size);
    JsonValue root;
    if (size == 0 || !JsonReader(data, data + size).document(root) ||
        root.kind != JsonValue::Object)
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
