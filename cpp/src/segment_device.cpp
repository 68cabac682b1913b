// SPDX-License-Identifier: Apache-2.0
// A GPU pool's memory as a consumer gets it: the descriptor fetched from the producer's socket,
// imported on the GPU with the pool's UUID.
#include "cuda/device_memory.hpp"
#include "fd_channel.hpp"
#include "segment.hpp"

#include <bips/errors.hpp>

#include <cstring>

namespace bips::detail {

bool Segment::import_device(Duration timeout) {
    if (m_device)
        return true;
    const Params &p = m_params;
    cuda::CUuuid uuid{};
    std::memcpy(uuid.bytes, p.device_uuid, sizeof(uuid.bytes));
    // The GPU first: a process without it gets DeviceUnavailable, not a descriptor.
    const cuda::DeviceRef dev = cuda::device_with_uuid(uuid, m_name);
    // What the allocation must be, decided here: never the header's word for it.
    const std::size_t need = std::size_t{p.capacity} * p.device_stride;
    const std::size_t size = cuda::allocation_size(dev.ordinal, need);
    if (p.device_size != size)
        throw IncompatiblePool("pool '" + m_name + "': its GPU allocation is " +
                               std::to_string(p.device_size) + " bytes, this process expects " +
                               std::to_string(size));
    // Served by the pool file's owner only: anyone else could hand us memory of their own.
    std::optional<std::vector<posix::File>> fds;
    try {
        fds = fetch_fds(fd_socket_path_for(m_name), m_stat.st_uid, m_instance_id, 1, timeout);
    } catch (const CorruptPool &) {
        // A new producer replaced the pool meanwhile and serves its own instance: ours is gone.
        if (!name_refers_to_me())
            return false;
        throw;
    }
    if (!fds)
        return false;
    m_device = cuda::DeviceMemory::import(dev, fds->front(), size);
    m_data_base = m_device->base();
    m_data_stride = p.device_stride;
    return true;
}

void Segment::stop_serving() noexcept { m_fd_server.reset(); }

} // namespace bips::detail
