// SPDX-License-Identifier: Apache-2.0
// The DLPack ABI (https://dmlc.github.io/dlpack/latest/), declared from the specification:
// only the structs bips exports, on the CPU and on CUDA devices.
#pragma once

#include <cstdint>

namespace bips::dlpack {

struct Device {
    std::int32_t device_type; // 1 = kDLCPU, 2 = kDLCUDA
    std::int32_t device_id;
};

struct DataType {
    std::uint8_t code; // 0 int, 1 uint, 2 float, 6 bool (the values bips::DType uses)
    std::uint8_t bits;
    std::uint16_t lanes;
};

struct Tensor {
    void *data;
    Device device;
    std::int32_t ndim;
    DataType dtype;
    std::int64_t *shape;
    std::int64_t *strides; // in elements
    std::uint64_t byte_offset;
};

struct ManagedTensor {
    Tensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(ManagedTensor *self);
};

struct Version {
    std::uint32_t major;
    std::uint32_t minor;
};

inline constexpr std::uint64_t FLAG_READ_ONLY = 1ull << 0;
inline constexpr std::int32_t DEVICE_CPU = 1;
inline constexpr std::int32_t DEVICE_CUDA = 2;
inline constexpr Version VERSION = {1, 1};

struct ManagedTensorVersioned {
    Version version;
    void *manager_ctx;
    void (*deleter)(ManagedTensorVersioned *self);
    std::uint64_t flags;
    Tensor dl_tensor;
};

} // namespace bips::dlpack
