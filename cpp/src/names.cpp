// SPDX-License-Identifier: Apache-2.0
// Pool names: which are valid, and what a pool's two files are called in /dev/shm.
#include "segment.hpp"

#include <bips/errors.hpp>
#include <bips/pool.hpp>

namespace bips {

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

namespace detail {

std::string shm_name_for(const std::string &name) {
    validate_name(name);
    return "/bips." + name;
}

std::string ctl_shm_name_for(const std::string &name) { return shm_name_for(name) + CTL_SUFFIX; }
std::string fd_socket_path_for(const std::string &name) {
    return "/dev/shm" + shm_name_for(name) + FD_SUFFIX;
}

} // namespace detail
} // namespace bips
