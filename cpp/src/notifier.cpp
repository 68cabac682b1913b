// SPDX-License-Identifier: Apache-2.0
// The event-loop hook: a thread that waits with Consumer::wait and makes an eventfd readable.
// An event loop cannot wait on a futex in the segment, so this thread does (it receives
// nothing); armed once per wait and disarmed on cancel, so a cancelled wait never signals.
#include "interrupt.hpp"

#include <bips/consumer.hpp>
#include <bips/errors.hpp>
#include <bips/notifier.hpp>

#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <sys/eventfd.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace bips {

namespace {
// Bounds how long a disarmed (cancelled) wait, or close(), keeps the thread busy.
constexpr Duration SLICE = std::chrono::milliseconds(100);
} // namespace

struct Notifier::State {
    Consumer &consumer;
    int fd = -1;
    std::mutex mutex;
    std::condition_variable cv;
    bool armed = false;
    bool stop = false;
    std::thread thread;

    explicit State(Consumer &c) : consumer(c) {}

    void drain() noexcept {
        std::uint64_t v;
        while (::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
        }
    }

    void run() noexcept {
        detail::ignore_interrupts_on_this_thread();
        std::unique_lock<std::mutex> lock(mutex);
        for (;;) {
            cv.wait(lock, [this] { return stop || armed; });
            if (stop)
                return;
            lock.unlock();
            bool ready;
            try {
                ready = consumer.wait(SLICE);
            } catch (...) {
                ready = true; // closed or broken: try_receive() on the loop reports it
            }
            lock.lock();
            if (ready && armed) {
                armed = false;
                const std::uint64_t one = 1;
                [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
            }
            // Ready but disarmed meanwhile: wait for the next arm() without spinning on it.
        }
    }
};

Notifier::Notifier(Consumer &consumer) : m_state(std::make_unique<State>(consumer)) {
    m_state->fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (m_state->fd < 0)
        throw std::system_error(errno, std::generic_category(), "eventfd");
    try {
        m_state->thread = std::thread([s = m_state.get()] { s->run(); });
    } catch (...) {
        ::close(m_state->fd);
        throw;
    }
}

Notifier::Notifier(Notifier &&) noexcept = default;

Notifier &Notifier::operator=(Notifier &&other) noexcept {
    if (this != &other) {
        close();
        m_state = std::move(other.m_state);
    }
    return *this;
}

Notifier::~Notifier() { close(); }

int Notifier::fd() const noexcept {
    if (!m_state)
        return -1;
    std::lock_guard<std::mutex> lock(m_state->mutex);
    return m_state->stop ? -1 : m_state->fd;
}

void Notifier::arm() {
    if (!m_state)
        throw InvalidArgument("notifier was moved from");
    std::lock_guard<std::mutex> lock(m_state->mutex);
    if (m_state->stop)
        throw InvalidArgument("notifier is closed");
    m_state->armed = true;
    m_state->cv.notify_one();
}

void Notifier::disarm() noexcept {
    if (!m_state)
        return;
    std::lock_guard<std::mutex> lock(m_state->mutex);
    m_state->armed = false;
    // Under the lock the thread cannot be signalling: what is there now is all there will be.
    if (!m_state->stop)
        m_state->drain();
}

void Notifier::clear() noexcept {
    if (!m_state)
        return;
    std::lock_guard<std::mutex> lock(m_state->mutex);
    if (!m_state->stop)
        m_state->drain();
}

void Notifier::close() noexcept {
    if (!m_state)
        return;
    {
        std::lock_guard<std::mutex> lock(m_state->mutex);
        if (m_state->stop)
            return;
        m_state->stop = true;
        m_state->armed = false;
        m_state->cv.notify_one();
    }
    if (m_state->thread.joinable())
        m_state->thread.join();
    ::close(m_state->fd);
}

} // namespace bips
