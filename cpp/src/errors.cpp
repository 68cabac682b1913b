// SPDX-License-Identifier: Apache-2.0
// Small value helpers shared by every part: dtype names and pool-name validation.
#include <bips/errors.hpp>
#include <bips/pool.hpp>
#include <bips/types.hpp>

namespace bips {

std::string DType::name() const {
    if (!valid())
        return "invalid";
    switch (code) {
    case Int:
        return "int" + std::to_string(bits);
    case UInt:
        return "uint" + std::to_string(bits);
    case Float:
        return "float" + std::to_string(bits);
    default:
        return "bool";
    }
}

DType DType::from_name(const std::string &name) {
    static const struct {
        const char *name;
        DType dtype;
    } table[] = {
        {"uint8", {UInt, 8}},    {"uint16", {UInt, 16}},  {"uint32", {UInt, 32}},
        {"uint64", {UInt, 64}},  {"int8", {Int, 8}},      {"int16", {Int, 16}},
        {"int32", {Int, 32}},    {"int64", {Int, 64}},    {"float16", {Float, 16}},
        {"float32", {Float, 32}}, {"float64", {Float, 64}}, {"bool", {Bool, 8}},
    };
    for (const auto &e : table)
        if (name == e.name)
            return e.dtype;
    throw InvalidArgument("unsupported dtype '" + name +
                          "' (use uint8-64, int8-64, float16/32/64 or bool)");
}

void validate_name(const std::string &name) {
    if (name.empty() || name.size() > MAX_NAME_LENGTH)
        throw InvalidArgument("invalid pool name '" + name + "': must be 1 to " +
                              std::to_string(MAX_NAME_LENGTH) + " characters");
    if (name[0] == '.')
        throw InvalidArgument("invalid pool name '" + name + "': must not start with '.'");
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        if (!ok)
            throw InvalidArgument("invalid pool name '" + name +
                                  "': use only letters, digits, '_', '-' and '.'");
    }
}

} // namespace bips
