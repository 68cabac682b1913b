// SPDX-License-Identifier: Apache-2.0
#include "params.hpp"

#include "pool_files.hpp"
#include "posix/mapping.hpp"

#include <bips/errors.hpp>

#include <cstring>

namespace bips::detail {

Params make_params(const PoolOptions &o) {
    Params p;
    if (o.capacity < 1 || o.capacity > MAX_CAPACITY)
        throw InvalidArgument("capacity must be 1 to " + std::to_string(MAX_CAPACITY) + ", got " +
                              std::to_string(o.capacity));
    if (o.max_consumers < 1 || o.max_consumers > MAX_CONSUMERS)
        throw InvalidArgument("max_consumers must be 1 to " + std::to_string(MAX_CONSUMERS) +
                              ", got " + std::to_string(o.max_consumers));
    if (!o.dtype.valid())
        throw InvalidArgument("invalid dtype");
    if (o.shape.size() > MAX_DIMS)
        throw InvalidArgument("shape has " + std::to_string(o.shape.size()) +
                              " dimensions; at most " + std::to_string(MAX_DIMS));
    if (o.meta_size > MAX_META_SIZE)
        throw InvalidArgument("meta_size must be at most " + std::to_string(MAX_META_SIZE));
    if (o.policy != Policy::block && o.policy != Policy::drop_oldest)
        throw InvalidArgument("unknown policy");
    if ((o.mode & ~mode_t{0777}) != 0 || (o.mode & 0600) != 0600)
        throw InvalidArgument(
            "mode must be a permission mode that includes 0600 (e.g. 0600, 0660, 0666)");
    if (o.device.kind != Device::cpu && o.device.kind != Device::cuda)
        throw InvalidArgument("unknown device kind");
    if (o.device.index < 0 || (o.device.kind == Device::cpu && o.device.index != 0))
        throw InvalidArgument("invalid device " + o.device.str());
    for (auto d : o.shape)
        if (d < 0)
            throw InvalidArgument("shape dimensions must be >= 0");
    const auto fits = frame_bytes(o.shape.data(), o.shape.size(), o.dtype, MAX_BUFFER_SIZE);
    if (!fits)
        throw InvalidArgument("shape is too large");
    const std::size_t need = *fits;
    std::size_t size = o.buffer_size;
    if (size == 0) {
        if (o.shape.empty())
            throw InvalidArgument("give a shape or a buffer_size");
        size = need;
    } else if (!o.shape.empty() && need > size) {
        throw InvalidArgument("shape and dtype need " + std::to_string(need) +
                              " bytes but buffer_size is " + std::to_string(size));
    }
    if (size == 0 || size > MAX_BUFFER_SIZE)
        throw InvalidArgument("buffer_size must be 1 byte to 1 TiB");
    p.capacity = o.capacity;
    p.max_consumers = o.max_consumers;
    p.buffer_size = size;
    p.meta_size = o.meta_size;
    p.policy = o.policy;
    p.mode = o.mode;
    p.dtype = o.dtype;
    p.ndim = static_cast<std::uint32_t>(o.shape.size());
    for (std::size_t i = 0; i < o.shape.size(); ++i)
        p.shape[i] = o.shape[i];
    p.device = o.device;
    if (p.device.is_cuda())
        p.device_stride = align_up(p.buffer_size, DEVICE_ALIGN);
    p.layout = compute_layout(p.capacity, p.max_consumers, p.buffer_size, p.meta_size,
                              posix::page_size(), !p.device.is_cuda());
    return p;
}

Params validate_header(const std::string &name, const PoolHeader &h, std::size_t file_size) {
    Params p;
    if (h.header_size != sizeof(PoolHeader))
        throw IncompatiblePool("pool '" + name + "' has a header of " +
                               std::to_string(h.header_size) + " bytes, this bips expects " +
                               std::to_string(sizeof(PoolHeader)));
    if (h.capacity < 1 || h.capacity > MAX_CAPACITY)
        corrupt(name, "capacity " + std::to_string(h.capacity) + " out of range");
    if (h.max_consumers < 1 || h.max_consumers > MAX_CONSUMERS)
        corrupt(name, "max_consumers out of range");
    if (h.buffer_size < 1 || h.buffer_size > MAX_BUFFER_SIZE)
        corrupt(name, "buffer_size out of range");
    if (h.meta_size > MAX_META_SIZE)
        corrupt(name, "meta_size out of range");
    if (h.policy > 1)
        corrupt(name, "unknown policy");
    if (h.ndim > MAX_DIMS)
        corrupt(name, "ndim out of range");
    DType dt{h.dtype_code, h.dtype_bits};
    if (!dt.valid())
        corrupt(name, "invalid dtype");
    if (!frame_bytes(h.shape, h.ndim, dt, h.buffer_size))
        corrupt(name, "default shape does not fit the buffers");
    std::size_t page = h.page_size;
    if (page < 4096 || page > (std::size_t{1} << 30) || (page & (page - 1)) != 0 ||
        page % posix::page_size() != 0)
        throw IncompatiblePool("pool '" + name + "' uses page size " + std::to_string(page) +
                               ", not usable with this system's " +
                               std::to_string(posix::page_size()));
    if (h.device_kind != Device::cpu && h.device_kind != Device::cuda)
        throw IncompatiblePool("pool '" + name + "' lives on a device of kind " +
                               std::to_string(h.device_kind) + ", which this bips does not know");
    const bool cuda = h.device_kind == Device::cuda;
    if (cuda && (h.device_stride != align_up(h.buffer_size, DEVICE_ALIGN) ||
                 h.device_size < h.device_stride * h.capacity || h.device_ordinal < 0))
        corrupt(name, "its GPU allocation does not match its parameters");
    Layout l = compute_layout(h.capacity, h.max_consumers, h.buffer_size, h.meta_size, page, !cuda);
    if (h.control_size != l.control_size || h.desc_offset != l.desc_offset ||
        h.slot_offset != l.slot_offset || h.ctl_size != l.ctl_size ||
        h.meta_offset != l.meta_offset || h.meta_stride != l.meta_stride ||
        h.data_offset != l.data_offset || h.buffer_stride != l.buffer_stride ||
        h.file_size != l.file_size)
        corrupt(name, "section offsets do not match its parameters");
    if (file_size != l.file_size)
        corrupt(name, "file is " + std::to_string(file_size) + " bytes, its header says " +
                          std::to_string(l.file_size) + " (truncated?)");
    p.capacity = h.capacity;
    p.max_consumers = h.max_consumers;
    p.buffer_size = h.buffer_size;
    p.meta_size = h.meta_size;
    p.policy = static_cast<Policy>(h.policy);
    p.mode = h.mode & 0777;
    p.ndim = h.ndim;
    for (std::uint32_t i = 0; i < h.ndim; ++i)
        p.shape[i] = h.shape[i];
    p.dtype = dt;
    p.layout = l;
    if (cuda) {
        p.device = Device{Device::cuda, h.device_ordinal};
        std::memcpy(p.device_uuid, h.device_uuid, sizeof(p.device_uuid));
        p.device_stride = h.device_stride;
        p.device_size = h.device_size;
    }
    return p;
}

} // namespace bips::detail
