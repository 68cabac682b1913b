// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <bips/types.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace bips {

namespace detail {
class ProducerCore;
}

class Producer;

/// Keeps the producer from reusing one buffer while something outside bips (a Python array, a
/// GStreamer buffer) still points at it, even after it was published. Move-only.
class BufferPin {
public:
    BufferPin() noexcept = default;
    BufferPin(BufferPin &&other) noexcept;
    BufferPin &operator=(BufferPin &&other) noexcept;
    BufferPin(const BufferPin &) = delete;
    BufferPin &operator=(const BufferPin &) = delete;
    ~BufferPin();
    /// Drops the pin now (idempotent).
    void reset() noexcept;

private:
    friend class Buffer;
    std::shared_ptr<detail::ProducerCore> m_core;
    std::uint32_t m_index = 0;
};

/// A writable buffer acquired from a Producer. Move-only; dropped unpublished, it goes back to
/// the pool. Shape, dtype and nbytes start at the pool's defaults.
class Buffer {
public:
    Buffer() noexcept = default;
    Buffer(Buffer &&other) noexcept;
    Buffer &operator=(Buffer &&other) noexcept;
    Buffer(const Buffer &) = delete;
    Buffer &operator=(const Buffer &) = delete;
    ~Buffer();

    /// False for a moved-from or default-constructed buffer.
    explicit operator bool() const noexcept { return m_core != nullptr; }
    /// Start of the data area: page-aligned host memory, or, in a GPU pool, a device address
    /// (4096-aligned) for kernels and cudaMemcpy, never for the CPU.
    std::byte *data() const noexcept { return m_data; }
    /// Where data() lives: the pool's device.
    Device device() const noexcept;
    /// Copies `n` host bytes into the buffer: memcpy in a host pool; in a GPU pool an
    /// asynchronous copy on `stream` (publish on the same stream; `src` must live until the copy
    /// has run), or with STREAM_NONE a copy that is done when this returns. Throws
    /// InvalidArgument if `n` exceeds capacity(), DeviceError if the copy cannot be queued.
    void copy_from(const void *src, std::size_t n, CudaStream stream = nullptr);
    /// Bytes the buffer can hold (the pool's buffer_size).
    std::size_t capacity() const noexcept;
    /// Index of the buffer in the pool.
    std::uint32_t index() const noexcept { return m_index; }

    std::size_t ndim() const noexcept;
    const std::int64_t *dims() const noexcept;
    Shape shape() const;
    DType dtype() const noexcept;
    /// Bytes that will be published (shape x itemsize unless set_nbytes() said otherwise).
    std::size_t nbytes() const noexcept;

    /// Sets this frame's shape and dtype; throws InvalidArgument if it does not fit the buffer.
    void set_format(const Shape &shape, DType dtype);
    void set_format(const std::int64_t *dims, std::size_t ndim, DType dtype);
    /// Makes this a variable-size payload: a flat uint8 frame of `nbytes` bytes. Throws
    /// InvalidArgument if it exceeds capacity().
    void set_nbytes(std::size_t nbytes);

    /// The per-frame user metadata area (meta_capacity() bytes, fixed at pool creation).
    std::byte *meta() const noexcept;
    std::size_t meta_capacity() const noexcept;

    /// Pins the buffer (see BufferPin); throws InvalidArgument on an empty Buffer.
    BufferPin pin() const;

private:
    friend class Producer;
    friend class detail::ProducerCore;
    void give_back() noexcept;

    std::shared_ptr<detail::ProducerCore> m_core;
    std::uint32_t m_index = 0;
    std::byte *m_data = nullptr;
};

/// Creates a pool and publishes buffers into it. One live producer per pool name: a second one
/// gets PoolBusy; a new producer replaces the pool of one that died or closed. Thread-safe.
class Producer {
public:
    /// Creates pool `name`. Throws InvalidArgument (bad name/options), PoolBusy (live producer),
    /// CorruptPool (a foreign file holds the name), std::system_error (shm_open, ftruncate...).
    Producer(const std::string &name, const PoolOptions &options);
    Producer(Producer &&) noexcept;
    Producer &operator=(Producer &&) noexcept;
    Producer(const Producer &) = delete;
    Producer &operator=(const Producer &) = delete;
    /// Closes (see close()).
    ~Producer();

    /// A free buffer, waiting up to `timeout`; throws Timeout, or Interrupted (see
    /// set_interrupt_check).
    Buffer acquire(Duration timeout);
    /// A free buffer, or nullopt at once. Never blocks.
    std::optional<Buffer> try_acquire();
    /// A free buffer, or nullopt after `timeout`. Throws Interrupted as acquire().
    std::optional<Buffer> try_acquire_for(Duration timeout);

    /// Publishes `buffer` to every attached consumer. timestamp_ns < 0 means CLOCK_MONOTONIC now.
    /// meta is copied into the frame's metadata area; throws InvalidArgument if it is too long or
    /// the buffer belongs to another producer.
    ///
    /// GPU pools: the frame becomes visible once the GPU work queued on `stream` so far (the
    /// kernels that wrote it) has finished; the call never waits for it. nullptr is the legacy
    /// default stream, STREAM_NONE means the caller already waited. Throws DeviceError if
    /// `stream` cannot be used. Host pools ignore `stream`.
    void publish(Buffer &&buffer, std::int64_t timestamp_ns = -1, const void *meta = nullptr,
                 std::size_t meta_len = 0, CudaStream stream = nullptr);

    /// Marks end of stream: consumers drain what is queued, then get ProducerGone. GPU pools:
    /// first waits (up to 2 s) for frames published on a stream whose work is still running;
    /// those still waiting then are given back unpublished. The name is
    /// unlinked so a new producer can start at once; mapped memory lives on while used. Idempotent.
    void close() noexcept;
    bool closed() const noexcept;

    ProducerStats stats() const;
    const std::string &name() const noexcept;
    std::uint32_t capacity() const noexcept;
    std::size_t buffer_size() const noexcept;
    std::size_t meta_size() const noexcept;
    Policy policy() const noexcept;
    std::uint32_t max_consumers() const noexcept;
    Shape shape() const;
    DType dtype() const noexcept;
    /// Where the pool's buffers live.
    Device device() const noexcept;

private:
    std::shared_ptr<detail::ProducerCore> m_core;
};

} // namespace bips
