// SPDX-License-Identifier: Apache-2.0
// bips.Buffer: a buffer acquired from a Producer, a plain CPython type (once per frame). Views
// hold a pin object (BufferPin), so the producer never reuses a buffer a view still points at,
// even after publish().
#include "views.hpp"

#include <new>

namespace bipspy {
namespace {

struct PinObject {
    PyObject_HEAD
    bips::BufferPin pin;
};

struct BufferObject {
    PyObject_HEAD
    bips::Buffer buffer; // empty once published or discarded
    PinObject *pin;      // made by the first view
    PyObject *array;     // numpy() result, cached until the format changes
    PyObject *weakrefs;  // weakref support, as the pybind11 classes had
};

// Shape and strides of one buffer-protocol view: the buffer's format may change between views.
struct Export {
    Py_ssize_t shape[bips::MAX_DIMS];
    Py_ssize_t strides[bips::MAX_DIMS];
};

PyTypeObject PinType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject BufferType = {PyVarObject_HEAD_INIT(nullptr, 0)};

BufferObject *as_buffer(PyObject *self) { return reinterpret_cast<BufferObject *>(self); }

bips::Buffer &live(PyObject *self) {
    bips::Buffer &b = as_buffer(self)->buffer;
    if (!b)
        throw bips::InvalidArgument("buffer was already published or discarded");
    return b;
}

void pin_dealloc(PyObject *self) {
    reinterpret_cast<PinObject *>(self)->pin.~BufferPin();
    PyObject_Free(self);
}

void pin_releasebuffer(PyObject *, Py_buffer *view) {
    delete static_cast<Export *>(view->internal);
}

// The view's format: the buffer's own, or flat bytes of the whole buffer if it does not fit.
ViewSpec spec(PyObject *self) {
    BufferObject *o = as_buffer(self);
    bips::Buffer &b = live(self);
    if (!o->pin) {
        auto *p = static_cast<PinObject *>(PyObject_Malloc(sizeof(PinObject)));
        if (!p)
            throw std::bad_alloc();
        PyObject_Init(reinterpret_cast<PyObject *>(p), &PinType);
        new (&p->pin) bips::BufferPin(b.pin());
        o->pin = p;
    }
    ViewSpec v;
    v.keeper = reinterpret_cast<PyObject *>(o->pin);
    v.data = b.data();
    v.dtype = b.dtype();
    v.ndim = b.ndim();
    v.readonly = false;
    v.device = b.device();
    const bool shaped = v.ndim > 0 && v.ndim <= bips::MAX_DIMS &&
                        bips::frame_bytes(b.dims(), v.ndim, v.dtype, b.capacity());
    if (shaped) {
        std::copy(b.dims(), b.dims() + v.ndim, v.dims);
    } else { // no usable shape: flat bytes of the whole buffer
        v.ndim = 1;
        v.dims[0] = static_cast<std::int64_t>(b.capacity());
        v.dtype = bips::UINT8;
    }
    return v;
}

void forget_views(BufferObject *o) {
    Py_CLEAR(o->array);
    PyObject *p = reinterpret_cast<PyObject *>(o->pin);
    o->pin = nullptr;
    Py_XDECREF(p); // views made so far keep their own reference
}

void buffer_dealloc(PyObject *self) {
    BufferObject *o = as_buffer(self);
    if (o->weakrefs)
        PyObject_ClearWeakRefs(self);
    forget_views(o);
    o->buffer.~Buffer(); // unpublished: back to the pool
    PyObject_Free(self);
}

PyObject *buffer_numpy(PyObject *self, PyObject *) {
    return guarded([&]() -> PyObject * {
        BufferObject *o = as_buffer(self);
        if (!o->array) {
            const ViewSpec v = spec(self);
            o->array = make_numpy(v);
            if (!o->array)
                return nullptr;
        }
        Py_INCREF(o->array);
        return o->array;
    });
}

PyObject *buffer_discard(PyObject *self, PyObject *) {
    BufferObject *o = as_buffer(self);
    forget_views(o);
    o->buffer = bips::Buffer();
    Py_RETURN_NONE;
}

PyObject *buffer_enter(PyObject *self, PyObject *) {
    Py_INCREF(self);
    return self;
}

PyObject *buffer_exit(PyObject *self, PyObject *const *, Py_ssize_t) {
    return buffer_discard(self, nullptr);
}

PyObject *buffer_set_format(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"shape", "dtype"};
        PyObject *a[2];
        parse_args("set_format", args, nargs, kw, names, a);
        if (!a[0])
            throw py::type_error("set_format() missing required argument 'shape'");
        bips::Buffer &b = live(self);
        const bips::DType dt = !a[1] || a[1] == Py_None ? b.dtype() : to_dtype(a[1]);
        b.set_format(to_shape(a[0]), dt);
        Py_CLEAR(as_buffer(self)->array); // it had the old format
        Py_RETURN_NONE;
    });
}

PyObject *buffer_array(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    PyObject *a = buffer_numpy(self, nullptr);
    if (!a)
        return nullptr;
    return guarded([&] { return array_protocol(a, args, nargs, kw); });
}

PyObject *buffer_dlpack(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] { return make_dlpack(spec(self), args, nargs, kw); });
}

PyObject *buffer_dlpack_device(PyObject *self, PyObject *) {
    return guarded([&] { return dlpack_device(live(self).device()); });
}

PyObject *get_cuda_array_interface(PyObject *self, void *) {
    return guarded([&] { return cuda_array_interface(spec(self)); });
}

PyObject *get_device(PyObject *self, void *) {
    return guarded([&] { return device_text(live(self).device()); });
}

int buffer_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    try {
        const ViewSpec v = spec(self);
        auto *ex = new Export;
        if (fill_py_buffer(v, view, flags, ex->shape, ex->strides) != 0) {
            delete ex;
            return -1;
        }
        view->internal = ex; // freed by the pin type's bf_releasebuffer
        return 0;
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_BufferError, e.what());
    }
    view->obj = nullptr;
    return -1;
}

PyObject *get_nbytes(PyObject *self, void *) {
    return guarded([&] { return PyLong_FromSize_t(live(self).nbytes()); });
}
int set_nbytes(PyObject *self, PyObject *value, void *) {
    try {
        if (!value)
            throw py::type_error("nbytes cannot be deleted");
        const std::size_t n = size_arg(value, "nbytes");
        live(self).set_nbytes(n);
        Py_CLEAR(as_buffer(self)->array); // it had the old format
        return 0;
    } catch (...) {
        set_python_error();
    }
    return -1;
}
PyObject *get_shape(PyObject *self, void *) {
    return guarded([&] {
        bips::Buffer &b = live(self);
        return shape_tuple(b.dims(), b.ndim()).release().ptr();
    });
}
PyObject *get_dtype(PyObject *self, void *) {
    return guarded([&] { return numpy_dtype(live(self).dtype()).inc_ref().ptr(); });
}
PyObject *get_capacity(PyObject *self, void *) {
    return guarded([&] { return PyLong_FromSize_t(live(self).capacity()); });
}
PyObject *get_index(PyObject *self, void *) {
    return guarded([&] { return PyLong_FromUnsignedLong(live(self).index()); });
}
PyObject *get_published(PyObject *self, void *) {
    return PyBool_FromLong(!as_buffer(self)->buffer);
}

PyObject *buffer_repr(PyObject *self) {
    const bips::Buffer &b = as_buffer(self)->buffer;
    if (!b)
        return PyUnicode_FromString("<bips.Buffer (published or discarded)>");
    const std::string s = "<bips.Buffer index=" + std::to_string(b.index()) +
                          " nbytes=" + std::to_string(b.nbytes()) + ">";
    return PyUnicode_FromString(s.c_str());
}

PyObject *buffer_new_refused(PyTypeObject *, PyObject *, PyObject *) {
    PyErr_SetString(PyExc_TypeError, "bips.Buffer objects come from Producer.acquire()");
    return nullptr;
}

template <class F> PyCFunction fastcall(F f) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

PyMethodDef buffer_methods[] = {
    {"numpy", buffer_numpy, METH_NOARGS,
     "numpy($self, /)\n--\n\nA writable numpy array over the buffer (cached, zero copy)."},
    {"set_format", fastcall(buffer_set_format), METH_FASTCALL | METH_KEYWORDS,
     "set_format($self, /, shape, dtype=None)\n--\n\nSets this frame's shape and dtype; raises "
     "InvalidArgument if it does not fit."},
    {"discard", buffer_discard, METH_NOARGS,
     "discard($self, /)\n--\n\nGives the buffer back unpublished. Idempotent."},
    {"__enter__", buffer_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
    {"__exit__", fastcall(buffer_exit), METH_FASTCALL,
     "__exit__($self, /, *args)\n--\n\ndiscard()."},
    {"__array__", fastcall(buffer_array), METH_FASTCALL | METH_KEYWORDS,
     "__array__($self, /, dtype=None, copy=None)\n--\n\nThe numpy array (numpy's protocol)."},
    {"__dlpack__", fastcall(buffer_dlpack), METH_FASTCALL | METH_KEYWORDS,
     "__dlpack__($self, /, *, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "A writable DLPack capsule over the buffer."},
    {"__dlpack_device__", buffer_dlpack_device, METH_NOARGS,
     "__dlpack_device__($self, /)\n--\n\n(kDLCPU, 0), or (kDLCUDA, ordinal) in a GPU pool."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef buffer_getset[] = {
    {"nbytes", get_nbytes, set_nbytes,
     "Bytes this frame carries; setting it makes a flat uint8 frame of that size.", nullptr},
    {"shape", get_shape, nullptr, "Shape of this frame.", nullptr},
    {"dtype", get_dtype, nullptr, "numpy dtype of this frame.", nullptr},
    {"capacity", get_capacity, nullptr, "Bytes the buffer can hold (the pool's buffer_size).",
     nullptr},
    {"index", get_index, nullptr, "Index of the buffer in the pool.", nullptr},
    {"published", get_published, nullptr, "True once published or discarded.", nullptr},
    {"device", get_device, nullptr, "Where the buffer lives: \"cpu\" or \"cuda:N\".", nullptr},
    {"__cuda_array_interface__", get_cuda_array_interface, nullptr,
     "The CUDA Array Interface (v3) of a GPU pool's buffer (writable); AttributeError in a "
     "host pool.\nA borrowed address, valid until publish() or discard().",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyBufferProcs buffer_procs = {buffer_getbuffer, nullptr};
PyBufferProcs pin_procs = {nullptr, pin_releasebuffer};

} // namespace

PyObject *new_buffer(bips::Buffer &&b) {
    auto *o = static_cast<BufferObject *>(PyObject_Malloc(sizeof(BufferObject)));
    if (!o)
        return PyErr_NoMemory();
    PyObject_Init(reinterpret_cast<PyObject *>(o), &BufferType);
    new (&o->buffer) bips::Buffer(std::move(b));
    o->pin = nullptr;
    o->array = nullptr;
    o->weakrefs = nullptr;
    return reinterpret_cast<PyObject *>(o);
}

bips::Buffer take_buffer(PyObject *obj) {
    if (Py_TYPE(obj) != &BufferType)
        throw py::type_error("publish() needs a bips.Buffer from acquire()");
    BufferObject *o = as_buffer(obj);
    bips::Buffer b = std::move(live(obj));
    forget_views(o);
    return b;
}

void register_buffer(py::module_ &m) {
    PinType.tp_name = "bips._core._BufferPin";
    PinType.tp_basicsize = sizeof(PinObject);
    PinType.tp_dealloc = pin_dealloc;
    PinType.tp_as_buffer = &pin_procs;
    PinType.tp_flags = Py_TPFLAGS_DEFAULT;
    PinType.tp_doc = "Keeps one buffer from reuse while a view of it lives.";
    if (PyType_Ready(&PinType) != 0)
        throw py::error_already_set();

    BufferType.tp_name = "bips._core.Buffer";
    BufferType.tp_basicsize = sizeof(BufferObject);
    BufferType.tp_weaklistoffset = offsetof(BufferObject, weakrefs);
    BufferType.tp_dealloc = buffer_dealloc;
    BufferType.tp_repr = buffer_repr;
    BufferType.tp_as_buffer = &buffer_procs;
    BufferType.tp_flags = Py_TPFLAGS_DEFAULT;
    BufferType.tp_doc =
        "A writable buffer acquired from a Producer.\n\n"
        "Fill it through numpy(), memoryview(buf) or DLPack, then Producer.publish(buf). "
        "Dropped without\npublishing, it goes back to the pool. Views kept after publish() "
        "keep the buffer from being reused\nuntil they die; do not write through them "
        "after publishing.";
    BufferType.tp_methods = buffer_methods;
    BufferType.tp_getset = buffer_getset;
    BufferType.tp_new = buffer_new_refused;
    add_type(m, "Buffer", &BufferType);
}

} // namespace bipspy
