// SPDX-License-Identifier: Apache-2.0
// bips.Frame: a received frame, a plain CPython type (this runs once per frame). The C++ frame
// lives in a small keeper object, the base of every view made from it; the Frame holds one
// reference too, so release() takes effect once the last view is gone as well.
#include "views.hpp"

#include <new>
#include <vector>

namespace bipspy {
namespace {

struct FrameKeeper {
    PyObject_HEAD
    bips::Frame frame;
    // Shape and strides in bytes for buffer-protocol views: the format never changes.
    Py_ssize_t shape[bips::MAX_DIMS];
    Py_ssize_t strides[bips::MAX_DIMS];
};

struct FrameObject {
    PyObject_HEAD
    FrameKeeper *keeper; // nullptr once released
    PyObject *array;     // numpy() result, cached
    PyObject *weakrefs;  // weakref support, as the pybind11 classes had
    // Copies, so that a released frame still says what it was.
    std::uint64_t seq;
    std::int64_t timestamp_ns;
    std::size_t nbytes;
    std::uint32_t index;
    std::uint32_t ndim;
    bips::DType dtype;
    std::int64_t dims[bips::MAX_DIMS];
    bips::Device device;
};

PyTypeObject KeeperType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject FrameType = {PyVarObject_HEAD_INIT(nullptr, 0)};

void keeper_dealloc(PyObject *self) {
    auto *k = reinterpret_cast<FrameKeeper *>(self);
    k->frame.~Frame(); // gives the buffer back
    PyObject_Free(self);
}

FrameObject *as_frame(PyObject *self) { return reinterpret_cast<FrameObject *>(self); }

const FrameKeeper &live(PyObject *self) {
    FrameKeeper *k = as_frame(self)->keeper;
    if (!k)
        throw bips::InvalidArgument("frame was released");
    return *k;
}

ViewSpec spec(PyObject *self) {
    const FrameKeeper &k = live(self);
    const FrameObject *f = as_frame(self);
    ViewSpec v;
    v.keeper = reinterpret_cast<PyObject *>(const_cast<FrameKeeper *>(&k));
    v.data = const_cast<std::byte *>(k.frame.data());
    v.dtype = f->dtype;
    v.ndim = f->ndim;
    std::copy(f->dims, f->dims + f->ndim, v.dims);
    v.readonly = true;
    v.device = f->device;
    v.mapping_read_only = k.frame.read_only_mapping();
    v.frame = const_cast<bips::Frame *>(&k.frame);
    return v;
}

void frame_dealloc(PyObject *self) {
    FrameObject *f = as_frame(self);
    if (f->weakrefs)
        PyObject_ClearWeakRefs(self);
    Py_XDECREF(f->array);
    Py_XDECREF(reinterpret_cast<PyObject *>(f->keeper));
    PyObject_Free(self);
}

PyObject *frame_numpy(PyObject *self, PyObject *) {
    return guarded([&]() -> PyObject * {
        FrameObject *f = as_frame(self);
        if (!f->array) {
            f->array = make_numpy(spec(self));
            if (!f->array)
                return nullptr;
        }
        Py_INCREF(f->array);
        return f->array;
    });
}

PyObject *frame_release(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    FrameObject *f = as_frame(self);
    if (nargs || kw) {
        static const char *const names[] = {"stream"};
        PyObject *a[1];
        try {
            parse_args("release", args, nargs, kw, names, a);
            if (a[0]) {
                // Read (and checked, for host frames too) before the keeper is looked at: a
                // stream object's __cuda_stream__ is Python code, which may release this frame.
                const bips::CudaStream stream = dlpack_stream(a[0]);
                if (f->keeper && f->device.is_cuda())
                    f->keeper->frame.set_stream(stream);
            }
        } catch (...) {
            set_python_error();
            return nullptr;
        }
    }
    Py_CLEAR(f->array);
    PyObject *k = reinterpret_cast<PyObject *>(f->keeper);
    f->keeper = nullptr;
    Py_XDECREF(k); // the buffer goes back now unless a view still holds the keeper
    Py_RETURN_NONE;
}

PyObject *frame_enter(PyObject *self, PyObject *) {
    Py_INCREF(self);
    return self;
}

PyObject *frame_exit(PyObject *self, PyObject *const *, Py_ssize_t) {
    return frame_release(self, nullptr, 0, nullptr);
}

PyObject *frame_to_host(PyObject *self, PyObject *) {
    return guarded([&] {
        const FrameKeeper &k = live(self);
        // Held while the GIL is released: a release() from another thread meanwhile must not
        // free the frame, nor give its buffer back, under the copy.
        const auto hold = py::reinterpret_borrow<py::object>(
            reinterpret_cast<PyObject *>(const_cast<FrameKeeper *>(&k)));
        const FrameObject *f = as_frame(self);
        std::vector<py::ssize_t> shape(f->dims, f->dims + f->ndim);
        py::array out(numpy_dtype(f->dtype), shape);
        if (static_cast<std::size_t>(out.nbytes()) < k.frame.nbytes())
            throw bips::Error("frame is larger than its shape says");
        {
            py::gil_scoped_release nogil; // a device copy waits for the GPU
            k.frame.copy_to(out.mutable_data());
        }
        return out.release().ptr();
    });
}

PyObject *frame_array(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    PyObject *a = frame_numpy(self, nullptr);
    if (!a)
        return nullptr;
    return guarded([&] { return array_protocol(a, args, nargs, kw); });
}

PyObject *frame_dlpack(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] { return make_dlpack(spec(self), args, nargs, kw); });
}

PyObject *frame_dlpack_device(PyObject *self, PyObject *) {
    return dlpack_device(as_frame(self)->device);
}

PyObject *get_cuda_array_interface(PyObject *self, void *) {
    return guarded([&] { return cuda_array_interface(spec(self)); });
}

PyObject *get_device(PyObject *self, void *) { return device_text(as_frame(self)->device); }

int frame_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    try {
        const ViewSpec v = spec(self);
        auto *k = reinterpret_cast<FrameKeeper *>(v.keeper);
        return fill_py_buffer(v, view, flags, k->shape, k->strides);
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_BufferError, e.what());
    }
    view->obj = nullptr;
    return -1;
}

PyObject *get_seq(PyObject *self, void *) {
    return PyLong_FromUnsignedLongLong(as_frame(self)->seq);
}
PyObject *get_timestamp_ns(PyObject *self, void *) {
    return PyLong_FromLongLong(as_frame(self)->timestamp_ns);
}
PyObject *get_nbytes(PyObject *self, void *) { return PyLong_FromSize_t(as_frame(self)->nbytes); }
PyObject *get_index(PyObject *self, void *) {
    return PyLong_FromUnsignedLong(as_frame(self)->index);
}
PyObject *get_released(PyObject *self, void *) {
    return PyBool_FromLong(as_frame(self)->keeper == nullptr);
}
PyObject *get_intact(PyObject *self, void *) {
    FrameKeeper *k = as_frame(self)->keeper;
    return PyBool_FromLong(k && k->frame.intact());
}
PyObject *get_shape(PyObject *self, void *) {
    return guarded(
        [&] { return shape_tuple(as_frame(self)->dims, as_frame(self)->ndim).release().ptr(); });
}
PyObject *get_dtype(PyObject *self, void *) {
    return guarded([&] { return numpy_dtype(as_frame(self)->dtype).inc_ref().ptr(); });
}
PyObject *get_meta(PyObject *self, void *) {
    return guarded([&] {
        const bips::Frame &f = live(self).frame;
        return PyBytes_FromStringAndSize(reinterpret_cast<const char *>(f.meta_data()),
                                         static_cast<Py_ssize_t>(f.meta_size()));
    });
}

PyObject *frame_repr(PyObject *self) {
    const FrameObject *f = as_frame(self);
    std::string s = "<bips.Frame seq=" + std::to_string(f->seq) + " shape=(";
    for (std::size_t i = 0; i < f->ndim; ++i)
        s += std::to_string(f->dims[i]) + (f->ndim == 1 || i + 1 < f->ndim ? "," : "");
    s += ") dtype=" + f->dtype.name() + (f->keeper ? ">" : " released>");
    return PyUnicode_FromString(s.c_str());
}

PyObject *frame_new_refused(PyTypeObject *, PyObject *, PyObject *) {
    PyErr_SetString(PyExc_TypeError, "bips.Frame objects come from Consumer.receive()");
    return nullptr;
}

template <class F> PyCFunction fastcall(F f) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

PyMethodDef frame_methods[] = {
    {"numpy", frame_numpy, METH_NOARGS,
     "numpy($self, /)\n--\n\nA read-only numpy array of the frame (cached, zero copy)."},
    {"release", fastcall(frame_release), METH_FASTCALL | METH_KEYWORDS,
     "release($self, /, stream=None)\n--\n\nGives the frame back; deferred until every view made "
     "from it is gone. Idempotent.\nGPU frames go back once the work queued on `stream` (by "
     "default the stream given to __dlpack__,\nelse the legacy default stream) has finished; "
     "stream=-1: at once."},
    {"to_host", frame_to_host, METH_NOARGS,
     "to_host($self, /)\n--\n\nA numpy array with a copy of the frame (for GPU frames: a "
     "device-to-host copy)."},
    {"__enter__", frame_enter, METH_NOARGS, "__enter__($self, /)\n--\n\n"},
    {"__exit__", fastcall(frame_exit), METH_FASTCALL,
     "__exit__($self, /, *args)\n--\n\nrelease()."},
    {"__array__", fastcall(frame_array), METH_FASTCALL | METH_KEYWORDS,
     "__array__($self, /, dtype=None, copy=None)\n--\n\nThe numpy array (numpy's protocol)."},
    {"__dlpack__", fastcall(frame_dlpack), METH_FASTCALL | METH_KEYWORDS,
     "__dlpack__($self, /, *, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "A DLPack capsule over the frame (read-only flag set; versioned DLPack only)."},
    {"__dlpack_device__", frame_dlpack_device, METH_NOARGS,
     "__dlpack_device__($self, /)\n--\n\n(kDLCPU, 0), or (kDLCUDA, ordinal) for a GPU frame."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef frame_getset[] = {
    {"seq", get_seq, nullptr, "Sequence number (0, 1, 2... per pool).", nullptr},
    {"timestamp_ns", get_timestamp_ns, nullptr, "CLOCK_MONOTONIC nanoseconds from the producer.",
     nullptr},
    {"nbytes", get_nbytes, nullptr, "Bytes the frame carries.", nullptr},
    {"index", get_index, nullptr, "Index of the buffer in the pool.", nullptr},
    {"released", get_released, nullptr, "True once release() was called.", nullptr},
    {"intact", get_intact, nullptr,
     "True while the producer has not reused this frame's buffer: read or copy the data, then "
     "check (see docs/security.md).",
     nullptr},
    {"shape", get_shape, nullptr, "Shape of the frame.", nullptr},
    {"dtype", get_dtype, nullptr, "numpy dtype of the frame.", nullptr},
    {"meta", get_meta, nullptr, "The metadata published with the frame (bytes).", nullptr},
    {"device", get_device, nullptr, "Where the frame lives: \"cpu\" or \"cuda:N\".", nullptr},
    {"__cuda_array_interface__", get_cuda_array_interface, nullptr,
     "The CUDA Array Interface (v3, read-only) of a GPU frame; AttributeError for a host frame.\n"
     "A borrowed address, valid until release() (unlike DLPack views, which hold the buffer).",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyBufferProcs frame_buffer = {frame_getbuffer, nullptr};

} // namespace

PyObject *new_frame(bips::Frame &&f) {
    auto *k = static_cast<FrameKeeper *>(PyObject_Malloc(sizeof(FrameKeeper)));
    if (!k)
        return PyErr_NoMemory();
    PyObject_Init(reinterpret_cast<PyObject *>(k), &KeeperType);
    new (&k->frame) bips::Frame(std::move(f));
    auto *o = static_cast<FrameObject *>(PyObject_Malloc(sizeof(FrameObject)));
    if (!o) {
        Py_DECREF(reinterpret_cast<PyObject *>(k));
        return PyErr_NoMemory();
    }
    PyObject_Init(reinterpret_cast<PyObject *>(o), &FrameType);
    const bips::Frame &fr = k->frame;
    o->keeper = k;
    o->array = nullptr;
    o->weakrefs = nullptr;
    o->seq = fr.seq();
    o->timestamp_ns = fr.timestamp_ns();
    o->nbytes = fr.nbytes();
    o->index = fr.index();
    o->ndim = static_cast<std::uint32_t>(fr.ndim()); // at most MAX_DIMS
    o->dtype = fr.dtype();
    std::copy(fr.dims(), fr.dims() + o->ndim, o->dims);
    o->device = fr.device();
    return reinterpret_cast<PyObject *>(o);
}

void register_frame(py::module_ &m) {
    KeeperType.tp_name = "bips._core._FrameKeeper";
    KeeperType.tp_basicsize = sizeof(FrameKeeper);
    KeeperType.tp_dealloc = keeper_dealloc;
    KeeperType.tp_flags = Py_TPFLAGS_DEFAULT;
    KeeperType.tp_doc = "Keeps one received frame's buffer from reuse while a view of it lives.";
    if (PyType_Ready(&KeeperType) != 0)
        throw py::error_already_set();

    FrameType.tp_name = "bips._core.Frame";
    FrameType.tp_basicsize = sizeof(FrameObject);
    FrameType.tp_weaklistoffset = offsetof(FrameObject, weakrefs);
    FrameType.tp_dealloc = frame_dealloc;
    FrameType.tp_repr = frame_repr;
    FrameType.tp_as_buffer = &frame_buffer;
    FrameType.tp_flags = Py_TPFLAGS_DEFAULT;
    FrameType.tp_doc =
        "A received, read-only frame that *is* shared memory.\n\n"
        "numpy(), np.asarray(frame), memoryview(frame) and the DLPack protocol all point "
        "into the pool.\nThe buffer goes back to the producer when the frame is released "
        "*and* every view made from it\nis gone (release() never invalidates a live view).";
    FrameType.tp_methods = frame_methods;
    FrameType.tp_getset = frame_getset;
    FrameType.tp_new = frame_new_refused;
    add_type(m, "Frame", &FrameType);
}

} // namespace bipspy
