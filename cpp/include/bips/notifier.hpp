// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>

namespace bips {

class Consumer;

/// A file descriptor that becomes readable when a Consumer has something to receive, for event
/// loops (poll, epoll, GLib, asyncio) that cannot wait on the pool's futex. A thread of the
/// notifier waits with Consumer::wait while armed; the loop then takes the frame itself with
/// try_receive(). Armed once per wait: after the fd turned readable, call clear() and arm()
/// again. The consumer must outlive the notifier. Thread-safe.
class Notifier {
public:
    /// Starts the waiting thread (idle until arm()). Throws std::system_error (eventfd,
    /// thread creation).
    explicit Notifier(Consumer &consumer);
    Notifier(Notifier &&) noexcept;
    Notifier &operator=(Notifier &&) noexcept;
    Notifier(const Notifier &) = delete;
    Notifier &operator=(const Notifier &) = delete;
    /// close()s.
    ~Notifier();

    /// The descriptor to poll for reading (an eventfd); -1 once closed. Owned by the notifier.
    int fd() const noexcept;
    /// Waits (again) until a frame is queued or the stream ended (receive() would return at
    /// once or throw, also when the consumer was closed), then makes fd() readable once.
    /// Throws InvalidArgument once closed.
    void arm();
    /// Stops waiting: once it returns, fd() is not readable (a pending readiness is cleared)
    /// and does not become readable until the next arm(). The thread goes idle within 100 ms.
    void disarm() noexcept;
    /// Consumes fd()'s readiness; the loop calls it before it arms again.
    void clear() noexcept;
    /// Stops the thread (within 100 ms) and closes fd(). Idempotent.
    void close() noexcept;

private:
    struct State;
    std::unique_ptr<State> m_state;
};

} // namespace bips
