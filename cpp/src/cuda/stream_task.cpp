// SPDX-License-Identifier: Apache-2.0
#include "cuda/stream_task.hpp"

#include "cuda/driver.hpp"

#include <bips/errors.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace bips::detail::cuda {

namespace {

std::atomic<std::uint64_t> g_pending{0};

// Drops what finished tasks kept alive, on a thread of its own: a host function may not call
// CUDA, and the last reference to a pool unmaps its device memory. Never destroyed (a static
// destructor at exit would race the driver's own teardown).
class Reaper {
public:
    void drop(std::unique_ptr<StreamTask> t) noexcept {
        try {
            std::lock_guard<std::mutex> lock(m_mutex);
            if (m_pid != ::getpid()) { // first use, or a child made by fork(): no thread yet
                m_pid = ::getpid();
                std::thread([this] { loop(); }).detach();
            }
            m_queue.push_back(std::move(t));
            m_cv.notify_one();
        } catch (...) {
            // No thread or no memory: keep it alive for good rather than unmap in a callback.
            (void)t.release();
        }
    }

private:
    void loop() {
        std::unique_lock<std::mutex> lock(m_mutex);
        for (;;) {
            m_cv.wait(lock, [&] { return !m_queue.empty(); });
            auto t = std::move(m_queue.front());
            m_queue.pop_front();
            lock.unlock();
            t.reset();
            lock.lock();
        }
    }
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<std::unique_ptr<StreamTask>> m_queue;
    pid_t m_pid = 0;
};

Reaper &reaper() {
    static Reaper *r = new Reaper();
    return *r;
}

void host_function(void *p) {
    std::unique_ptr<StreamTask> t(static_cast<StreamTask *>(p));
    t->run();
    g_pending.fetch_sub(1, std::memory_order_relaxed);
    reaper().drop(std::move(t));
}

bool is_legacy(CudaStream s) noexcept { return s == nullptr || s == STREAM_LEGACY; }

// Queues the host function; on failure the task is handed back in `task` and the error code
// returned.
CUresult launch(CudaStream stream, std::unique_ptr<StreamTask> &task) {
    const Driver &d = driver();
    if (!is_legacy(stream)) {
        const CUresult q = d.cuStreamQuery(static_cast<CUstream>(stream));
        if (q == CUDA_SUCCESS) {
            task->run();
            task.reset(); // not in a host function: dropping here is fine
            return CUDA_SUCCESS;
        }
        if (q != CUDA_ERROR_NOT_READY)
            return q;
    }
    g_pending.fetch_add(1, std::memory_order_relaxed);
    StreamTask *raw = task.release();
    const CUresult r = d.cuLaunchHostFunc(static_cast<CUstream>(stream), host_function, raw);
    if (r != CUDA_SUCCESS) {
        task.reset(raw);
        g_pending.fetch_sub(1, std::memory_order_relaxed);
    }
    return r;
}

} // namespace

void run_after(CudaStream stream, int ordinal, StreamTask task) {
    if (stream == STREAM_NONE) {
        task.run();
        return;
    }
    ScopedContext ctx(ordinal);
    auto t = std::make_unique<StreamTask>(std::move(task));
    const CUresult r = launch(stream, t);
    if (r != CUDA_SUCCESS)
        throw DeviceError(error_text(r, "cuLaunchHostFunc") +
                          " (is the stream one of this device's, and still alive?)");
}

void run_after_noexcept(CudaStream stream, int ordinal, StreamTask task) noexcept {
    std::unique_ptr<StreamTask> t;
    try {
        t = std::make_unique<StreamTask>(std::move(task));
        if (stream != STREAM_NONE) {
            ScopedContext ctx(ordinal);
            if (launch(stream, t) == CUDA_SUCCESS)
                return;
            // A stream we cannot queue on: wait for it, or for everything in the context.
            const Driver &d = driver();
            if (d.cuStreamSynchronize(static_cast<CUstream>(stream)) != CUDA_SUCCESS)
                (void)d.cuCtxSynchronize();
        }
    } catch (...) {
        // No driver or no context any more, or CUDA refused us because we run inside a host
        // function of the caller's: nothing to wait for that we could wait for here.
    }
    if (t) {
        t->run();
        // The caller may be a host function of its own (a frame dropped there), where the last
        // reference to a pool must not go: unmapping its memory calls CUDA.
        reaper().drop(std::move(t));
    }
}

std::uint64_t pending_tasks() noexcept { return g_pending.load(std::memory_order_relaxed); }

} // namespace bips::detail::cuda

namespace bips {

void stream_synchronize(Device device, CudaStream stream) {
    if (!device.is_cuda() || stream == STREAM_NONE)
        return;
    detail::cuda::ScopedContext ctx(device.index);
    detail::cuda::check(
        detail::cuda::driver().cuStreamSynchronize(static_cast<detail::cuda::CUstream>(stream)),
        "cuStreamSynchronize");
}

} // namespace bips
