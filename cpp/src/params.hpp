// SPDX-License-Identifier: Apache-2.0
// Params: a pool's parameters, as a producer asks for them (checked options) or as an opener
// finds them (a validated header). Never re-read from shared memory once made.
#pragma once

#include "layout.hpp"

#include <bips/types.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <sys/types.h>

namespace bips::detail {

/// Validated, process-local copy of the pool parameters. Never re-read from shared memory.
struct Params {
    std::uint32_t capacity = 0;
    std::uint32_t max_consumers = 0;
    std::size_t buffer_size = 0;
    std::size_t meta_size = 0;
    Policy policy = Policy::block;
    mode_t mode = 0;
    std::uint32_t ndim = 0;
    std::int64_t shape[MAX_DIMS] = {};
    DType dtype;
    Layout layout;
    /// GPU pools: the producer's device (kind and ordinal), the GPU's UUID, the allocation.
    Device device;
    unsigned char device_uuid[16] = {};
    std::size_t device_stride = 0;
    std::size_t device_size = 0;
};

/// Checks creation options and turns them into Params; throws InvalidArgument.
Params make_params(const PoolOptions &options);

/// Validates the initialised header `h` of pool `name` against the size of the file it came
/// from and returns its Params; throws CorruptPool or IncompatiblePool.
Params validate_header(const std::string &name, const PoolHeader &h, std::size_t file_size);

} // namespace bips::detail
