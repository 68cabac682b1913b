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
class Attachment;
struct NotThere;
} // namespace detail

/// A received, read-only frame. Move-only; destroying it (or release()) gives it back.
class Frame {
public:
    Frame() noexcept = default;
    Frame(Frame &&other) noexcept;
    Frame &operator=(Frame &&other) noexcept;
    Frame(const Frame &) = delete;
    Frame &operator=(const Frame &) = delete;
    ~Frame();

    explicit operator bool() const noexcept { return m_att != nullptr; }
    /// The frame's data: host memory, or, from a GPU pool, a device address (see device()).
    const std::byte *data() const noexcept { return m_data; }
    /// Where data() lives: Device::cpu, or the CUDA device of this process that holds the pool.
    Device device() const noexcept;
    std::size_t nbytes() const noexcept { return m_nbytes; }
    std::uint64_t seq() const noexcept { return m_seq; }
    /// CLOCK_MONOTONIC nanoseconds given by the producer (default: when it published).
    std::int64_t timestamp_ns() const noexcept { return m_timestamp_ns; }
    std::size_t ndim() const noexcept { return m_ndim; }
    const std::int64_t *dims() const noexcept { return m_dims; }
    Shape shape() const { return Shape(m_dims, m_dims + m_ndim); }
    DType dtype() const noexcept { return m_dtype; }
    const std::byte *meta_data() const noexcept;
    std::size_t meta_size() const noexcept { return m_meta_len; }
    std::string meta() const;
    std::uint32_t index() const noexcept { return m_index; }
    /// True while the producer has not reused this frame's buffer. Read (or copy) the data,
    /// then check: true means what was read is the frame as published. False once released, or
    /// when a peer that may write the control file made the producer take the buffer back early
    /// (see docs/security.md). Never blocks.
    bool intact() const noexcept;
    /// Gives the buffer back now (idempotent). Pointers from data()/meta_data() become invalid.
    /// A device frame goes back once the GPU work queued so far on its stream (set_stream(),
    /// by default the legacy default stream) has finished, without waiting for it here.
    void release() noexcept;
    /// Device frames: the stream this frame is read on, which release() (and the destructor)
    /// wait for. STREAM_NONE: give it back at once (the caller waited). Host frames ignore it.
    void set_stream(CudaStream stream) noexcept { m_stream = stream; }
    CudaStream stream() const noexcept { return m_stream; }
    /// set_stream(stream), then release().
    void release(CudaStream stream) noexcept {
        m_stream = stream;
        release();
    }
    /// True when the memory itself refuses writes from this process: host frames always (a
    /// read-only mapping); device frames where the driver could map the pool read-only.
    bool read_only_mapping() const noexcept;
    /// Copies the frame's nbytes() to host memory `dst` (a device frame through CUDA, waiting
    /// for the copy). Throws InvalidArgument once released, DeviceError if the copy fails.
    void copy_to(void *dst) const;

private:
    friend class detail::Attachment;
    // A validated snapshot of the descriptor, taken when the frame was received.
    std::shared_ptr<detail::Attachment> m_att;
    std::uint32_t m_index = 0;
    const std::byte *m_data = nullptr;
    std::uint64_t m_seq = 0;
    std::int64_t m_timestamp_ns = 0;
    std::size_t m_nbytes = 0;
    std::uint32_t m_ndim = 0;
    std::uint32_t m_meta_len = 0;
    DType m_dtype;
    std::int64_t m_dims[MAX_DIMS] = {};
    CudaStream m_stream = nullptr;
};

/// Attaches to a pool and receives every frame published after it attached, in order.
/// Thread-safe; frames may be released from any thread.
class Consumer {
public:
    /// Attaches to pool `name`, waiting up to options.wait for it (and for a live producer).
    /// Throws PoolNotFound, Timeout, IncompatiblePool, CorruptPool, TooManyConsumers,
    /// ProducerGone (pool exists but its producer is gone and wait is 0), std::system_error,
    /// Interrupted (see set_interrupt_check).
    Consumer(const std::string &name, const ConsumerOptions &options = {});
    /// One attempt to attach to pool `name`, never waiting (options.wait is ignored): nullopt
    /// when there is nothing to attach to yet (no such pool, a pool still being created or
    /// left half-made by a dead creator, or a pool whose producer is gone). Throws for real
    /// errors: InvalidArgument (bad name), IncompatiblePool, CorruptPool, TooManyConsumers,
    /// std::system_error (EPERM: a pool of another owner, see ConsumerOptions::owner).
    static std::optional<Consumer> try_open(const std::string &name,
                                            const ConsumerOptions &options = {});
    Consumer(Consumer &&) noexcept;
    Consumer &operator=(Consumer &&) noexcept;
    Consumer(const Consumer &) = delete;
    Consumer &operator=(const Consumer &) = delete;
    ~Consumer();

    /// The next frame, waiting up to `timeout`. Throws Timeout, or ProducerGone once the
    /// producer is gone and nothing is queued (unless reconnect is on); Interrupted (see
    /// set_interrupt_check) while it waits.
    Frame receive(Duration timeout);
    /// The next frame if one is queued, else nullopt. Throws ProducerGone as receive().
    std::optional<Frame> try_receive();
    /// As receive() but nullopt on timeout (still throws Interrupted).
    std::optional<Frame> try_receive_for(Duration timeout);
    /// Waits up to `timeout` until receive() would return at once (a frame is queued, or the
    /// stream has ended so that it would throw ProducerGone; with reconnect, a new producer is
    /// followed meanwhile) and returns true; false on timeout. Receives nothing: for event
    /// loops that wait on one thread and take on another (see also Notifier). Throws
    /// InvalidArgument once closed, Interrupted as receive().
    bool wait(Duration timeout);

    /// Detaches: queued frames go back at once; frames still held go back when released.
    void close() noexcept;
    bool closed() const noexcept;
    ConsumerStats stats() const;
    const std::string &name() const noexcept;
    /// Pool parameters of the current attachment.
    std::uint32_t capacity() const;
    std::size_t buffer_size() const;
    Policy policy() const;
    Shape shape() const;
    DType dtype() const;
    /// Where the current pool's frames live (a CUDA device of this process for GPU pools).
    Device device() const;

private:
    struct State;
    explicit Consumer(std::unique_ptr<State> state) noexcept;
    // One attempt (try_open), saying in `why` what was missing.
    static std::unique_ptr<State> attempt(const std::string &name, const ConsumerOptions &options,
                                          detail::NotThere &why);
    const State &checked() const;
    std::unique_ptr<State> m_state;
};

} // namespace bips
