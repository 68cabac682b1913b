// SPDX-License-Identifier: Apache-2.0
#pragma once

// A small JSON reader for frame metadata. Metadata comes from shared memory that any process
// with access may have written: the reader bounds its depth and every index, and reports
// malformed input instead of guessing.

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace bips::gst {

/// One parsed JSON value. Integers that fit an int64 stay exact (nanosecond timestamps exceed a
/// double's 53 bits); other numbers are doubles.
struct JsonValue {
    enum Kind { Null, Bool, Int, Float, String, Array, Object } kind = Null;
    bool boolean = false;
    std::int64_t integer = 0;
    double real = 0;
    std::string text;
    std::vector<JsonValue> items;
    std::vector<std::pair<std::string, JsonValue>> members;

    /// The member `key` of an object; nullptr if absent (or not an object).
    const JsonValue *get(const char *key) const {
        for (const auto &m : members)
            if (m.first == key)
                return &m.second;
        return nullptr;
    }
};

/// Parses the whole of [begin, end) as one JSON value into `out`; false if it is not valid JSON
/// (or nests deeper than 32 levels).
bool parse_json(const char *begin, const char *end, JsonValue &out);

} // namespace bips::gst
