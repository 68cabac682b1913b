// SPDX-License-Identifier: Apache-2.0
// DType's names ("uint8", "float32"...), both ways.
#include <bips/errors.hpp>
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
        {"uint8", {UInt, 8}},     {"uint16", {UInt, 16}},   {"uint32", {UInt, 32}},
        {"uint64", {UInt, 64}},   {"int8", {Int, 8}},       {"int16", {Int, 16}},
        {"int32", {Int, 32}},     {"int64", {Int, 64}},     {"float16", {Float, 16}},
        {"float32", {Float, 32}}, {"float64", {Float, 64}}, {"bool", {Bool, 8}},
    };
    for (const auto &e : table)
        if (name == e.name)
            return e.dtype;
    throw InvalidArgument("unsupported dtype '" + name +
                          "' (use uint8-64, int8-64, float16/32/64 or bool)");
}

} // namespace bips
