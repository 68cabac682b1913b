// SPDX-License-Identifier: Apache-2.0
// bips.Producer, a plain CPython type: acquire() and publish() run once per frame, so they are
// fast-call methods with no generic dispatch in between.
#include "common.hpp"

#include <memory>

namespace bipspy {
namespace {

struct ProducerObject {
    PyObject_HEAD
    bips::Producer *producer; // nullptr until __init__ succeeded
    PyObject *weakrefs;       // weakref support, as the pybind11 classes had
};

PyTypeObject ProducerType = {PyVarObject_HEAD_INIT(nullptr, 0)};

bips::Producer &producer_of(PyObject *self) {
    bips::Producer *p = reinterpret_cast<ProducerObject *>(self)->producer;
    if (!p)
        throw bips::InvalidArgument("Producer.__init__ was not called");
    return *p;
}

PyObject *producer_new(PyTypeObject *type, PyObject *, PyObject *) {
    PyObject *self = type->tp_alloc(type, 0);
    if (self)
        reinterpret_cast<ProducerObject *>(self)->producer = nullptr;
    return self;
}

int producer_init(PyObject *self, PyObject *args, PyObject *kwargs) {
    static const char *kwlist[] = {"name",          "capacity",      "shape",  "dtype",
                                   "buffer_size",   "policy",        "mode",   "meta_size",
                                   "max_consumers", "adaptive_spin", "device", nullptr};
    const char *name = nullptr;
    PyObject *capacity = nullptr, *shape = Py_None, *dtype = nullptr, *buffer_size = nullptr,
             *mode = nullptr, *meta_size = nullptr, *max_consumers = nullptr, *device = nullptr;
    const char *policy = "block";
    int adaptive_spin = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|$OOOOsOOOpO:Producer",
                                     const_cast<char **>(kwlist), &name, &capacity, &shape, &dtype,
                                     &buffer_size, &policy, &mode, &meta_size, &max_consumers,
                                     &adaptive_spin, &device))
        return -1;
    auto *obj = reinterpret_cast<ProducerObject *>(self);
    try {
        // Never replaced: another thread may wait in acquire() without the GIL.
        if (obj->producer)
            throw bips::InvalidArgument("Producer.__init__ was already called");
        bips::PoolOptions o;
        o.capacity = unsigned_arg(capacity, "capacity", UINT32_MAX, o.capacity);
        if (shape != Py_None)
            o.shape = to_shape(shape);
        o.dtype = dtype ? to_dtype(dtype) : bips::UINT8;
        o.buffer_size = unsigned_arg(buffer_size, "buffer_size", SIZE_MAX, 0);
        o.policy = to_policy(policy);
        o.mode = static_cast<mode_t>(unsigned_arg(mode, "mode", 07777, 0600));
        o.meta_size = unsigned_arg(meta_size, "meta_size", SIZE_MAX, 0);
        o.max_consumers = unsigned_arg(max_consumers, "max_consumers", UINT32_MAX, o.max_consumers);
        o.adaptive_spin = adaptive_spin != 0;
        if (device && device != Py_None) // "cuda:0", or a torch.device (its str() is that)
            o.device = bips::Device::parse(py::str(device).cast<std::string>());
        std::unique_ptr<bips::Producer> p;
        {
            py::gil_scoped_release nogil;
            p = std::make_unique<bips::Producer>(name, o);
        }
        if (obj->producer) // another thread's __init__ won while this one created its pool
            throw bips::InvalidArgument("Producer.__init__ was already called");
        obj->producer = p.release();
        return 0;
    } catch (...) {
        set_python_error();
    }
    return -1;
}

void producer_dealloc(PyObject *self) {
    auto *obj = reinterpret_cast<ProducerObject *>(self);
    if (obj->weakrefs)
        PyObject_ClearWeakRefs(self);
    delete obj->producer; // closes
    obj->producer = nullptr;
    Py_TYPE(self)->tp_free(self);
}

PyObject *producer_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"timeout"};
        PyObject *a[1];
        parse_args("acquire", args, nargs, kw, names, a);
        return new_buffer(acquire(producer_of(self), timeout_arg(a[0])));
    });
}

PyObject *producer_try_acquire(PyObject *self, PyObject *) {
    return guarded([&] {
        if (auto b = producer_of(self).try_acquire())
            return new_buffer(std::move(*b));
        Py_RETURN_NONE;
    });
}

PyObject *producer_publish(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"buffer", "timestamp_ns", "meta", "stream"};
        PyObject *a[4];
        parse_args("publish", args, nargs, kw, names, a, 3);
        if (!a[0])
            throw py::type_error("publish() needs a bips.Buffer from acquire()");
        bips::Producer &p = producer_of(self);
        std::int64_t ts = -1;
        if (a[1] && a[1] != Py_None) {
            const long long v = PyLong_AsLongLong(a[1]);
            if (v == -1 && PyErr_Occurred())
                throw py::error_already_set();
            ts = v;
        }
        Py_buffer meta{};
        bool have_meta = false;
        if (a[2] && a[2] != Py_None) {
            if (PyUnicode_Check(a[2]))
                throw bips::InvalidArgument("meta must be bytes-like (encode str first)");
            if (PyObject_GetBuffer(a[2], &meta, PyBUF_SIMPLE) != 0)
                throw py::error_already_set();
            have_meta = true;
        }
        struct Release {
            Py_buffer *b;
            bool on;
            ~Release() {
                if (on)
                    PyBuffer_Release(b);
            }
        } release{&meta, have_meta};
        // Checked before the buffer is taken: a refused publish leaves it acquired.
        const bips::CudaStream stream = dlpack_stream(a[3]);
        const auto len = static_cast<std::size_t>(meta.len);
        if (have_meta && len > p.meta_size())
            throw bips::InvalidArgument("meta is " + std::to_string(len) +
                                        " bytes; the pool allows " + std::to_string(p.meta_size()) +
                                        " (meta_size)");
        p.publish(take_buffer(a[0]), ts, have_meta ? meta.buf : nullptr, have_meta ? len : 0,
                  stream);
        Py_RETURN_NONE;
    });
}

PyObject *producer_close(PyObject *self, PyObject *) {
    return guarded([&] {
        producer_of(self).close();
        Py_RETURN_NONE;
    });
}

PyObject *producer_enter(PyObject *self, PyObject *) {
    Py_INCREF(self);
    return self;
}

PyObject *producer_exit(PyObject *self, PyObject *const *, Py_ssize_t) {
    return producer_close(self, nullptr);
}

template <class F> PyObject *get(PyObject *self, F &&f) {
    return guarded([&] { return py::cast(f(producer_of(self))).release().ptr(); });
}

PyObject *get_closed(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return p.closed(); });
}
PyObject *get_stats(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return p.stats(); });
}
PyObject *get_name(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return p.name(); });
}
PyObject *get_capacity(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return p.capacity(); });
}
PyObject *get_buffer_size(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return p.buffer_size(); });
}
PyObject *get_meta_size(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return p.meta_size(); });
}
PyObject *get_max_consumers(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return p.max_consumers(); });
}
PyObject *get_policy(PyObject *s, void *) {
    return get(s, [](bips::Producer &p) { return policy_name(p.policy()); });
}
PyObject *get_shape(PyObject *s, void *) {
    return guarded([&] {
        const bips::Shape sh = producer_of(s).shape();
        return shape_tuple(sh.data(), sh.size()).release().ptr();
    });
}
PyObject *get_dtype(PyObject *s, void *) {
    return guarded([&] { return numpy_dtype(producer_of(s).dtype()).inc_ref().ptr(); });
}
PyObject *get_device(PyObject *s, void *) {
    return guarded([&] { return device_text(producer_of(s).device()); });
}

PyObject *producer_repr(PyObject *self) {
    return guarded([&] {
        const bips::Producer &p = producer_of(self);
        const std::string s =
            "<bips.Producer '" + p.name() + "' capacity=" + std::to_string(p.capacity()) +
            " buffer_size=" + std::to_string(p.buffer_size()) +
            " policy=" + policy_name(p.policy()) + (p.closed() ? " closed>" : ">");
        return PyUnicode_FromString(s.c_str());
    });
}

template <class F> PyCFunction fastcall(F f) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

PyMethodDef producer_methods[] = {
    {"acquire", fastcall(producer_acquire), METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, timeout=None)\n--\n\nA free buffer; waits up to `timeout` seconds (None: "
     "forever). Raises Timeout."},
    {"try_acquire", producer_try_acquire, METH_NOARGS,
     "try_acquire($self, /)\n--\n\nA free buffer or None, without waiting."},
    {"publish", fastcall(producer_publish), METH_FASTCALL | METH_KEYWORDS,
     "publish($self, /, buffer, timestamp_ns=None, meta=None, *, stream=None)\n--\n\nPublishes "
     "`buffer` to every attached consumer. timestamp_ns defaults to CLOCK_MONOTONIC now; meta is "
     "bytes-like.\nGPU pools: the frame becomes visible once the work queued on `stream` (the "
     "stream the buffer was\nwritten on: an int handle, a torch or CuPy stream; None: the legacy "
     "default stream) has finished;\nthe call does not wait for it."},
    {"close", producer_close, METH_NOARGS, "close($self, /)\n--\n\nEnd of stream. Idempotent."},
    {"__enter__", producer_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
    {"__exit__", fastcall(producer_exit), METH_FASTCALL,
     "__exit__($self, /, *args)\n--\n\nclose()."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef producer_getset[] = {
    {"closed", get_closed, nullptr, "True after close().", nullptr},
    {"stats", get_stats, nullptr, "Producer counters (a snapshot).", nullptr},
    {"name", get_name, nullptr, "The pool's name.", nullptr},
    {"capacity", get_capacity, nullptr, "Number of buffers.", nullptr},
    {"buffer_size", get_buffer_size, nullptr, "Bytes per buffer.", nullptr},
    {"meta_size", get_meta_size, nullptr, "Bytes of metadata per frame.", nullptr},
    {"max_consumers", get_max_consumers, nullptr, "Consumer slots.", nullptr},
    {"policy", get_policy, nullptr, "'block' or 'drop_oldest'.", nullptr},
    {"shape", get_shape, nullptr, "Default frame shape.", nullptr},
    {"dtype", get_dtype, nullptr, "Default frame dtype.", nullptr},
    {"device", get_device, nullptr, "Where the buffers live: \"cpu\" or \"cuda:N\".", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

} // namespace

void register_producer(py::module_ &m) {
    ProducerType.tp_name = "bips._core.Producer";
    ProducerType.tp_basicsize = sizeof(ProducerObject);
    ProducerType.tp_weaklistoffset = offsetof(ProducerObject, weakrefs);
    ProducerType.tp_dealloc = producer_dealloc;
    ProducerType.tp_repr = producer_repr;
    ProducerType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE;
    ProducerType.tp_doc =
        "Producer(name, *, capacity=8, shape=None, dtype='uint8', buffer_size=0, policy='block', "
        "mode=0o600, meta_size=0, max_consumers=8, adaptive_spin=True, device='cpu')\n--\n\n"
        "Creates a pool and publishes frames into it. device='cuda:N' keeps the buffers on that "
        "GPU.";
    ProducerType.tp_methods = producer_methods;
    ProducerType.tp_getset = producer_getset;
    ProducerType.tp_new = producer_new;
    ProducerType.tp_init = producer_init;
    ProducerType.tp_alloc = PyType_GenericAlloc;
    ProducerType.tp_free = PyObject_Del;
    add_type(m, "Producer", &ProducerType);
}

} // namespace bipspy
