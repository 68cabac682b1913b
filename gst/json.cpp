// SPDX-License-Identifier: Apache-2.0
#include "json.hpp"

#include <glib.h>

#include <cstring>

namespace bips::gst {

namespace {

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
            const std::uint64_t limit =
                negative ? (std::uint64_t{1} << 63) : (std::uint64_t{1} << 63) - 1;
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

} // namespace

bool parse_json(const char *begin, const char *end, JsonValue &out) {
    out = JsonValue{};
    return JsonReader(begin, end).document(out);
}

} // namespace bips::gst
