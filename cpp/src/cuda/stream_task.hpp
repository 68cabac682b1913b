// SPDX-License-Identifier: Apache-2.0
// Doing something once the GPU work queued on a stream has finished, without blocking the
// caller: how a GPU pool's publish and release are ordered after the user's kernels.
#pragma once

#include <bips/device.hpp>

#include <functional>
#include <memory>

namespace bips::detail::cuda {

/// Something to run after a stream's work. `run` does the shared-memory part (publish, release)
/// and must not call CUDA (it may run inside a CUDA host function); it must not throw.
/// `keep` holds what the task needs alive; it is dropped afterwards on a bips thread, never in
/// the host function, because dropping the last reference to a pool unmaps device memory.
struct StreamTask {
    std::function<void()> run;
    std::shared_ptr<void> keep;
};

/// Runs `task` once the work queued on `stream` (a stream of device `ordinal`'s primary
/// context, or of a context current on this thread) up to now has finished:
/// - at once if the stream is idle, or `stream` is STREAM_NONE;
/// - else from a host function queued on `stream` (cuLaunchHostFunc), so the caller never
///   blocks. On the legacy default stream (nullptr, STREAM_LEGACY), which waits for every
///   blocking stream of its context, always through a host function.
/// Throws DeviceError if the stream cannot be used (the task has not run then, and will not).
void run_after(CudaStream stream, int ordinal, StreamTask task);

/// As run_after, for paths that cannot fail (a frame's release): if the host function cannot be
/// queued, waits for the stream (or the whole context), then runs the task. `keep` goes to the
/// bips thread then too: the caller may be a host function of the application's. Never throws.
void run_after_noexcept(CudaStream stream, int ordinal, StreamTask task) noexcept;

/// Host functions queued by this process that have not finished yet (tests, statistics).
std::uint64_t pending_tasks() noexcept;

} // namespace bips::detail::cuda
