// SPDX-License-Identifier: Apache-2.0
// What the parties do through a mapped segment: the wake-ups on its futex words, the producer's
// restoration of its headers, losses to a peer's truncation, and counting free buffers.
#include "segment.hpp"
#include "pool_files.hpp"

#include <bips/errors.hpp>

#include <cstddef>
#include <cstring>

namespace bips::detail {

void Segment::throw_lost() const {
    throw CorruptPool("pool '" + m_name + "': another process truncated its files (" +
                      pool_path(m_name) +
                      "); nothing written or read since reached anyone. "
                      "Close this handle; a new producer re-creates the pool");
}

bool Segment::restore_headers() noexcept {
    if (!m_header_image || inherited() || lost())
        return false;
    bool restored = false;
    auto *h = reinterpret_cast<unsigned char *>(header());
    if (std::memcmp(h, m_header_image.get(), offsetof(PoolHeader, ready)) != 0) {
        std::memcpy(h, m_header_image.get(), offsetof(PoolHeader, ready));
        restored = true;
    }
    if (header()->ready.load(std::memory_order_relaxed) != 1) {
        header()->ready.store(1, std::memory_order_release);
        restored = true;
    }
    auto *c = reinterpret_cast<unsigned char *>(ctl());
    if (std::memcmp(c, m_ctl_header_image.get(), offsetof(ControlHeader, active)) != 0) {
        std::memcpy(c, m_ctl_header_image.get(), offsetof(ControlHeader, active));
        restored = true;
    }
    return restored;
}

std::uint32_t Segment::count_free() const noexcept {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < m_params.capacity; ++i)
        n += state(i).load(std::memory_order_acquire) == 0;
    return n;
}

} // namespace bips::detail
