// SPDX-License-Identifier: Apache-2.0
#pragma once

// GstMemory over bips shared memory: a BipsMemory wraps a piece of it and owns an object that
// keeps it alive until the memory is freed (bipssink: an acquired bips::Buffer; bipssrc: a
// received bips::Frame, so freeing the last GstBuffer releases the frame).

#include <gst/gst.h>

#include <cstddef>
#include <memory>

namespace bips::gst {

/// Keeps the memory behind a BipsMemory alive; destroyed when the memory is freed.
class MemoryOwner {
public:
    virtual ~MemoryOwner() = default;
};

/// A new memory over `size` bytes at `data` (of `maxsize` usable), owned by `owner`. Read-only
/// memory cannot be mapped for writing; GStreamer then copies it when someone wants to write.
GstMemory *wrap_memory(std::unique_ptr<MemoryOwner> owner, void *data, std::size_t maxsize,
                       std::size_t size, bool readonly);

/// The owner of `mem` if it is a whole BipsMemory (not a sub-memory) at offset 0, else nullptr.
MemoryOwner *memory_owner(GstMemory *mem);

} // namespace bips::gst
