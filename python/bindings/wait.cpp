// SPDX-License-Identifier: Apache-2.0
// Every blocking call of the bindings. What is there already is taken with the GIL held and no
// system call; otherwise the core waits with the GIL released, with its own timeouts and
// messages, and asks the interrupt check below between its sleeps so that Ctrl-C works.
#include "common.hpp"

#include <bips/interrupt.hpp>

#include <atomic>
#include <pthread.h>

namespace bipspy {
namespace {

// Python runs signal handlers in the main thread only; in a child of fork(), in the thread
// that forked.
std::atomic<unsigned long> g_main_thread{0};

void forked_child() noexcept {
    g_main_thread.store(PyThread_get_thread_ident(), std::memory_order_relaxed);
}

// Runs in a thread blocked in the core, without the GIL: takes it to run pending signal
// handlers. Their exception (KeyboardInterrupt) stays set on this thread and surfaces when the
// core throws Interrupted (set_python_error leaves it in place). Other threads (daemon threads,
// GStreamer's) never take the GIL here: PyErr_CheckSignals would do nothing for them, and one
// that waits for the GIL when finalization begins is ended by pthread_exit, whose unwinding
// through these C++ frames can abort the process (std::terminate).
bool python_interrupted() noexcept {
    if (PyThread_get_thread_ident() != g_main_thread.load(std::memory_order_relaxed) ||
        !Py_IsInitialized())
        return false;
    PyGILState_STATE g = PyGILState_Ensure();
    const bool tripped = PyErr_CheckSignals() != 0;
    PyGILState_Release(g);
    return tripped;
}

bips::Duration timeout_or_forever(std::optional<double> timeout) {
    return timeout ? seconds(*timeout) : seconds(1e9);
}

} // namespace

void install_interrupt_check() {
    g_main_thread =
        py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    pthread_atfork(nullptr, nullptr, forked_child);
    bips::set_interrupt_check(python_interrupted);
}

bips::Buffer acquire(bips::Producer &p, std::optional<double> timeout) {
    if (auto b = p.try_acquire())
        return std::move(*b);
    const bips::Duration t = timeout_or_forever(timeout);
    py::gil_scoped_release nogil;
    return p.acquire(t);
}

bips::Frame receive(bips::Consumer &c, std::optional<double> timeout) {
    if (auto f = c.try_receive())
        return std::move(*f);
    const bips::Duration t = timeout_or_forever(timeout);
    py::gil_scoped_release nogil;
    return c.receive(t);
}

bool wait_ready(bips::Consumer &c, std::optional<double> timeout) {
    const bips::Duration t = timeout_or_forever(timeout);
    py::gil_scoped_release nogil;
    return c.wait(t);
}

std::unique_ptr<bips::Consumer> open_consumer(const std::string &name, bips::ConsumerOptions o,
                                              std::optional<double> timeout) {
    o.wait = timeout_or_forever(timeout);
    py::gil_scoped_release nogil;
    return std::make_unique<bips::Consumer>(name, o);
}

} // namespace bipspy
