// SPDX-License-Identifier: Apache-2.0
// bips.Consumer, a plain CPython type that Python subclasses (bips.Consumer adds asyncio):
// receive() runs once per frame, so it is a fast-call method. Also the event-loop waiter, the
// core's Notifier.
#include "common.hpp"

#include <bips/notifier.hpp>

#include <memory>
#include <new>

namespace bipspy {
namespace {

struct ConsumerObject {
    PyObject_HEAD
    // Empty until __init__ succeeded, then never replaced (a thread may wait in it without
    // the GIL). Shared with the _AsyncWaiter, whose thread may still use it after this dies.
    std::shared_ptr<bips::Consumer> consumer;
    PyObject *weakrefs; // weakref support, as the pybind11 classes had
};

PyTypeObject ConsumerType = {PyVarObject_HEAD_INIT(nullptr, 0)};

bips::Consumer &of(PyObject *self) { return consumer_of(self); }

PyObject *consumer_new(PyTypeObject *type, PyObject *, PyObject *) {
    PyObject *self = type->tp_alloc(type, 0);
    if (self)
        new (&reinterpret_cast<ConsumerObject *>(self)->consumer) std::shared_ptr<bips::Consumer>();
    return self;
}

int consumer_init(PyObject *self, PyObject *args, PyObject *kwargs) {
    static const char *kwlist[] = {"name", "latest", "timeout",       "reconnect",
                                   "spin", "owner",  "adaptive_spin", nullptr};
    const char *name = nullptr;
    int latest = 0, reconnect = 0, adaptive_spin = 1;
    PyObject *timeout = nullptr, *owner = Py_None;
    double spin = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|$pOpdOp:Consumer",
                                     const_cast<char **>(kwlist), &name, &latest, &timeout,
                                     &reconnect, &spin, &owner, &adaptive_spin))
        return -1;
    auto *obj = reinterpret_cast<ConsumerObject *>(self);
    try {
        if (obj->consumer)
            throw bips::InvalidArgument("Consumer.__init__ was already called");
        bips::ConsumerOptions o;
        o.latest = latest != 0;
        o.reconnect = reconnect != 0;
        o.spin = seconds(spin);
        o.owner = owner_option(owner);
        o.adaptive_spin = adaptive_spin != 0;
        // timeout=0 (the default): attach now or fail; None: wait forever.
        std::optional<double> t = timeout ? timeout_arg(timeout) : std::optional<double>(0.0);
        std::unique_ptr<bips::Consumer> c = open_consumer(name, o, t);
        if (obj->consumer) // another thread's __init__ won while this one waited
            throw bips::InvalidArgument("Consumer.__init__ was already called");
        obj->consumer = std::move(c);
        return 0;
    } catch (...) {
        set_python_error();
    }
    return -1;
}

void consumer_dealloc(PyObject *self) {
    auto *obj = reinterpret_cast<ConsumerObject *>(self);
    if (obj->weakrefs)
        PyObject_ClearWeakRefs(self);
    obj->consumer.~shared_ptr(); // detaches unless a waiter still shares it; frames stay valid
    Py_TYPE(self)->tp_free(self);
}

PyObject *consumer_receive(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"timeout"};
        PyObject *a[1];
        parse_args("receive", args, nargs, kw, names, a);
        return new_frame(receive(of(self), timeout_arg(a[0])));
    });
}

PyObject *consumer_try_receive(PyObject *self, PyObject *) {
    return guarded([&] {
        if (auto f = of(self).try_receive())
            return new_frame(std::move(*f));
        Py_RETURN_NONE;
    });
}

PyObject *consumer_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"timeout"};
        PyObject *a[1];
        parse_args("wait", args, nargs, kw, names, a);
        return PyBool_FromLong(wait_ready(of(self), timeout_arg(a[0])));
    });
}

PyObject *consumer_iternext(PyObject *self) {
    try {
        return new_frame(receive(of(self), std::nullopt));
    } catch (const bips::ProducerGone &) {
        return nullptr; // end of iteration, no exception set
    } catch (...) {
        set_python_error();
    }
    return nullptr;
}

PyObject *consumer_iter(PyObject *self) {
    Py_INCREF(self);
    return self;
}

PyObject *consumer_close(PyObject *self, PyObject *) {
    return guarded([&] {
        of(self).close();
        Py_RETURN_NONE;
    });
}

PyObject *consumer_enter(PyObject *self, PyObject *) {
    Py_INCREF(self);
    return self;
}

PyObject *consumer_exit(PyObject *self, PyObject *const *, Py_ssize_t) {
    return consumer_close(self, nullptr);
}

template <class F> PyObject *get(PyObject *self, F &&f) {
    return guarded([&] { return py::cast(f(of(self))).release().ptr(); });
}

PyObject *get_closed(PyObject *s, void *) {
    return get(s, [](bips::Consumer &c) { return c.closed(); });
}
PyObject *get_stats(PyObject *s, void *) {
    return get(s, [](bips::Consumer &c) { return c.stats(); });
}
PyObject *get_name(PyObject *s, void *) {
    return get(s, [](bips::Consumer &c) { return c.name(); });
}
PyObject *get_capacity(PyObject *s, void *) {
    return get(s, [](bips::Consumer &c) { return c.capacity(); });
}
PyObject *get_buffer_size(PyObject *s, void *) {
    return get(s, [](bips::Consumer &c) { return c.buffer_size(); });
}
PyObject *get_policy(PyObject *s, void *) {
    return get(s, [](bips::Consumer &c) { return policy_name(c.policy()); });
}
PyObject *get_shape(PyObject *s, void *) {
    return guarded([&] {
        const bips::Shape sh = of(s).shape();
        return shape_tuple(sh.data(), sh.size()).release().ptr();
    });
}
PyObject *get_dtype(PyObject *s, void *) {
    return guarded([&] { return numpy_dtype(of(s).dtype()).inc_ref().ptr(); });
}
PyObject *get_device(PyObject *s, void *) {
    return guarded([&] { return device_text(of(s).device()); });
}

PyObject *consumer_repr(PyObject *self) {
    return guarded([&] {
        const bips::Consumer &c = of(self);
        const std::string s = "<bips.Consumer '" + c.name() + "'" + (c.closed() ? " closed>" : ">");
        return PyUnicode_FromString(s.c_str());
    });
}

template <class F> PyCFunction fastcall(F f) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

PyMethodDef consumer_methods[] = {
    {"receive", fastcall(consumer_receive), METH_FASTCALL | METH_KEYWORDS,
     "receive($self, /, timeout=None)\n--\n\nThe next frame; waits up to `timeout` seconds (None: "
     "forever). Raises Timeout, or ProducerGone once the producer is gone and nothing is queued."},
    {"try_receive", consumer_try_receive, METH_NOARGS,
     "try_receive($self, /)\n--\n\nThe next frame if one is queued, else None."},
    {"wait", fastcall(consumer_wait), METH_FASTCALL | METH_KEYWORDS,
     "wait($self, /, timeout=None)\n--\n\nWaits up to `timeout` seconds (None: forever) until "
     "receive() would return at once: a frame is queued or the stream has ended. True if so, "
     "False on timeout. Receives nothing."},
    {"close", consumer_close, METH_NOARGS,
     "close($self, /)\n--\n\nDetaches; frames still held stay valid until released. Idempotent."},
    {"__enter__", consumer_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
    {"__exit__", fastcall(consumer_exit), METH_FASTCALL,
     "__exit__($self, /, *args)\n--\n\nclose()."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef consumer_getset[] = {
    {"closed", get_closed, nullptr, "True after close().", nullptr},
    {"stats", get_stats, nullptr, "Consumer counters (a snapshot).", nullptr},
    {"name", get_name, nullptr, "The pool's name.", nullptr},
    {"capacity", get_capacity, nullptr, "Number of buffers in the pool.", nullptr},
    {"buffer_size", get_buffer_size, nullptr, "Bytes per buffer.", nullptr},
    {"policy", get_policy, nullptr, "'block' or 'drop_oldest'.", nullptr},
    {"shape", get_shape, nullptr, "The pool's default frame shape.", nullptr},
    {"dtype", get_dtype, nullptr, "The pool's default frame dtype.", nullptr},
    {"device", get_device, nullptr,
     "Where the pool's frames live: \"cpu\", or \"cuda:N\" (this process's ordinal of the pool's "
     "GPU).",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

} // namespace

namespace {

const std::shared_ptr<bips::Consumer> &shared_consumer(py::handle obj) {
    if (!PyObject_TypeCheck(obj.ptr(), &ConsumerType))
        throw py::type_error("expected a bips.Consumer");
    const auto &c = reinterpret_cast<ConsumerObject *>(obj.ptr())->consumer;
    if (!c)
        throw bips::InvalidArgument("Consumer.__init__ was not called");
    return c;
}

// The notifier's thread uses the consumer until close() joins it, which may be after the
// Python Consumer died (a coroutine's local outlives `self`): it shares the consumer.
struct AsyncWaiter {
    std::shared_ptr<bips::Consumer> consumer;
    bips::Notifier notifier; // declared after: closed before the consumer can go
    explicit AsyncWaiter(std::shared_ptr<bips::Consumer> c)
        : consumer(std::move(c)), notifier(*consumer) {}
};

// pybind11 would hand a method an unconstructed AsyncWaiter made by _AsyncWaiter.__new__.
AsyncWaiter &waiter_of(py::handle self) {
    if (!py::isinstance<AsyncWaiter>(self))
        throw py::type_error("expected a bips._core._AsyncWaiter");
    auto v_h = reinterpret_cast<py::detail::instance *>(self.ptr())->get_value_and_holder();
    if (!v_h.holder_constructed())
        throw bips::InvalidArgument("_AsyncWaiter.__init__ was not called");
    return *v_h.value_ptr<AsyncWaiter>();
}

} // namespace

bips::Consumer &consumer_of(py::handle obj) { return *shared_consumer(obj); }

void register_consumer(py::module_ &m) {
    ConsumerType.tp_name = "bips._core.Consumer";
    ConsumerType.tp_basicsize = sizeof(ConsumerObject);
    ConsumerType.tp_weaklistoffset = offsetof(ConsumerObject, weakrefs);
    ConsumerType.tp_dealloc = consumer_dealloc;
    ConsumerType.tp_repr = consumer_repr;
    ConsumerType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE;
    ConsumerType.tp_doc =
        "Consumer(name, *, latest=False, timeout=0.0, reconnect=False, spin=0.0, owner=None, "
        "adaptive_spin=True)\n--\n\nAttaches to a pool and receives every frame in order.";
    ConsumerType.tp_methods = consumer_methods;
    ConsumerType.tp_getset = consumer_getset;
    ConsumerType.tp_iter = consumer_iter;
    ConsumerType.tp_iternext = consumer_iternext;
    ConsumerType.tp_new = consumer_new;
    ConsumerType.tp_init = consumer_init;
    ConsumerType.tp_alloc = PyType_GenericAlloc;
    ConsumerType.tp_free = PyObject_Del;
    add_type(m, "Consumer", &ConsumerType);

    // The Python Consumer owns its waiter (a slot); the waiter shares only the C++ consumer,
    // not the Python object, so no cycle keeps a consumer attached after its last use.
    py::class_<AsyncWaiter>(m, "_AsyncWaiter", "asyncio support of Consumer (internal).")
        .def(py::init([](py::handle consumer) {
                 return std::make_unique<AsyncWaiter>(shared_consumer(consumer));
             }),
             py::arg("consumer"))
        .def("fileno", [](py::handle w) { return waiter_of(w).notifier.fd(); })
        .def("arm", [](py::handle w) { waiter_of(w).notifier.arm(); })
        .def("disarm", [](py::handle w) { waiter_of(w).notifier.disarm(); })
        .def("clear", [](py::handle w) { waiter_of(w).notifier.clear(); })
        .def("close", [](py::handle w) {
            bips::Notifier &n = waiter_of(w).notifier;
            py::gil_scoped_release nogil;
            n.close();
        });
}

} // namespace bipspy
