// SPDX-License-Identifier: Apache-2.0
#include <bips/device.hpp>
#include <bips/errors.hpp>

#include <cctype>

namespace bips {

Device Device::parse(const std::string &text) {
    if (text == "cpu")
        return Device{};
    if (text == "cuda")
        return Device{cuda, 0};
    const std::string prefix = "cuda:";
    if (text.size() > prefix.size() && text.size() <= prefix.size() + 4 &&
        text.compare(0, prefix.size(), prefix) == 0) {
        int index = 0;
        for (std::size_t i = prefix.size(); i < text.size(); ++i) {
            if (!std::isdigit(static_cast<unsigned char>(text[i])))
                index = -1;
            if (index >= 0)
                index = index * 10 + (text[i] - '0');
        }
        if (index >= 0)
            return Device{cuda, index};
    }
    throw InvalidArgument("device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + text + "\"");
}

std::string Device::str() const {
    return kind == cuda ? "cuda:" + std::to_string(index) : std::string("cpu");
}

} // namespace bips
