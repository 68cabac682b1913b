// SPDX-License-Identifier: Apache-2.0
#include "posix/error.hpp"

#include <system_error>

namespace bips::posix {

void throw_errno(int err, const std::string &what) {
    throw std::system_error(err, std::generic_category(), what);
}

} // namespace bips::posix
