// SPDX-License-Identifier: Apache-2.0
#include "views.hpp"

#include "dlpack.hpp"

#include <algorithm>

namespace bipspy {
namespace {

void c_strides(const ViewSpec &v, std::int64_t unit, std::int64_t *out) {
    std::int64_t s = unit;
    for (std::size_t i = v.ndim; i-- > 0;) {
        out[i] = s;
        s *= v.dims[i];
    }
}

// The DLPack deleter may run on any thread, with or without the GIL (torch frees tensors
// where it likes): it takes the GIL to drop the keeper, unless the interpreter is gone.
struct DLContext {
    PyObject *keeper;
    std::int64_t shape[bips::MAX_DIMS];
    std::int64_t strides[bips::MAX_DIMS];
    bips::dlpack::ManagedTensor legacy;
    bips::dlpack::ManagedTensorVersioned versioned;
};

void drop_context(void *p) noexcept {
    auto *ctx = static_cast<DLContext *>(p);
    if (Py_IsInitialized()) {
        PyGILState_STATE g = PyGILState_Ensure();
        Py_DECREF(ctx->keeper);
        PyGILState_Release(g);
    }
    delete ctx;
}

void fill_dl_tensor(DLContext *ctx, const ViewSpec &v, bips::dlpack::Tensor &t) {
    std::copy(v.dims, v.dims + v.ndim, ctx->shape);
    c_strides(v, 1, ctx->strides);
    t.data = v.data;
    t.device = v.device.is_cuda() ? bips::dlpack::Device{bips::dlpack::DEVICE_CUDA, v.device.index}
                                  : bips::dlpack::Device{bips::dlpack::DEVICE_CPU, 0};
    t.ndim = static_cast<std::int32_t>(v.ndim);
    t.dtype = {v.dtype.code, v.dtype.bits, 1};
    t.shape = ctx->shape;
    t.strides = ctx->strides;
    t.byte_offset = 0;
}

// Only an unconsumed capsule still owns the tensor: consumers rename it.
void versioned_capsule_gone(PyObject *cap) {
    if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
        auto *p = static_cast<bips::dlpack::ManagedTensorVersioned *>(
            PyCapsule_GetPointer(cap, "dltensor_versioned"));
        if (p && p->deleter)
            p->deleter(p);
    }
}

void legacy_capsule_gone(PyObject *cap) {
    if (PyCapsule_IsValid(cap, "dltensor")) {
        auto *p = static_cast<bips::dlpack::ManagedTensor *>(PyCapsule_GetPointer(cap, "dltensor"));
        if (p && p->deleter)
            p->deleter(p);
    }
}

std::pair<std::int64_t, std::int64_t> int_pair(PyObject *o, const char *what) {
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 2)
        throw py::type_error(std::string(what) + " must be a tuple of two ints");
    return {int64_arg(PyTuple_GET_ITEM(o, 0), what), int64_arg(PyTuple_GET_ITEM(o, 1), what)};
}

// A flag's truth value; its own exception if it has none.
bool truth(PyObject *o) {
    const int t = PyObject_IsTrue(o);
    if (t < 0)
        throw py::error_already_set();
    return t != 0;
}

} // namespace

void refuse_device(const ViewSpec &v, const char *what) {
    if (v.device.is_cuda())
        throw py::buffer_error(std::string(what) + ": the data lives on " + v.device.str() +
                               ", not in host memory; use torch.from_dlpack / cupy.from_dlpack "
                               "(zero copy) or frame.to_host() (a copy)");
}

PyObject *make_numpy(const ViewSpec &v) {
    refuse_device(v, "numpy()");
    auto &api = py::detail::npy_api::get();
    Py_intptr_t shape[bips::MAX_DIMS];
    for (std::size_t i = 0; i < v.ndim; ++i)
        shape[i] = static_cast<Py_intptr_t>(v.dims[i]);
    const int flags = v.readonly ? 0 : py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    PyObject *descr = numpy_dtype(v.dtype).inc_ref().ptr(); // NewFromDescr steals it
    // No strides: numpy computes C-contiguous ones itself.
    PyObject *arr = api.PyArray_NewFromDescr_(api.PyArray_Type_, descr, static_cast<int>(v.ndim),
                                              shape, nullptr, v.data, flags, nullptr);
    if (!arr)
        return nullptr;
    Py_INCREF(v.keeper);
    if (api.PyArray_SetBaseObject_(arr, v.keeper) != 0) { // steals the keeper, even on failure
        Py_DECREF(arr);
        return nullptr;
    }
    return arr;
}

int fill_py_buffer(const ViewSpec &v, Py_buffer *view, int flags, Py_ssize_t *shape,
                   Py_ssize_t *strides) {
    if (v.device.is_cuda()) {
        PyErr_SetString(PyExc_BufferError, ("the data lives on " + v.device.str() +
                                            "; the buffer protocol is for host memory (use DLPack)")
                                               .c_str());
        view->obj = nullptr;
        return -1;
    }
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && v.readonly) {
        PyErr_SetString(PyExc_BufferError, "frames are read-only");
        view->obj = nullptr;
        return -1;
    }
    std::int64_t st[bips::MAX_DIMS];
    c_strides(v, static_cast<std::int64_t>(v.dtype.itemsize()), st);
    auto len = static_cast<Py_ssize_t>(v.dtype.itemsize());
    for (std::size_t i = 0; i < v.ndim; ++i) {
        shape[i] = static_cast<Py_ssize_t>(v.dims[i]);
        strides[i] = static_cast<Py_ssize_t>(st[i]);
        len *= shape[i];
    }
    view->buf = v.data;
    Py_INCREF(v.keeper);
    view->obj = v.keeper;
    view->len = len;
    view->readonly = v.readonly ? 1 : 0;
    view->itemsize = static_cast<Py_ssize_t>(v.dtype.itemsize());
    view->format = (flags & PyBUF_FORMAT) ? const_cast<char *>(struct_format(v.dtype)) : nullptr;
    // Without PyBUF_ND there is no shape, and then ndim must be 1 (see PyBuffer_FillInfo):
    // consumers such as PyMemoryView_FromBuffer read ndim entries of a shape otherwise.
    const bool nd = (flags & PyBUF_ND) == PyBUF_ND;
    view->ndim = nd ? static_cast<int>(v.ndim) : 1;
    view->shape = nd ? shape : nullptr;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? strides : nullptr;
    view->suboffsets = nullptr;
    view->internal = nullptr;
    return 0;
}

PyObject *make_dlpack(const ViewSpec &v, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames) {
    // Held before the arguments run Python code (__bool__, __index__) that could release the
    // frame or publish the buffer: the keeper, and so the memory, must outlive that.
    auto keeper = py::reinterpret_borrow<py::object>(v.keeper);
    static const char *const names[] = {"stream", "max_version", "dl_device", "copy"};
    PyObject *a[4];
    parse_args("__dlpack__", args, nargs, kwnames, names, a, 0);
    PyObject *stream = a[0], *max_version = a[1], *dl_device = a[2], *copy = a[3];
    if (copy && copy != Py_None && truth(copy))
        throw py::buffer_error(
            "bips exports shared memory without copying; copy=True is not supported");
    const bips::dlpack::Device here =
        v.device.is_cuda() ? bips::dlpack::Device{bips::dlpack::DEVICE_CUDA, v.device.index}
                           : bips::dlpack::Device{bips::dlpack::DEVICE_CPU, 0};
    if (dl_device && dl_device != Py_None) {
        const auto want = int_pair(dl_device, "dl_device");
        if (want.first != here.device_type || (v.device.is_cuda() && want.second != here.device_id))
            throw py::buffer_error("the data lives on " + v.device.str() +
                                   " and bips never copies it to another device");
    }
    if (!v.device.is_cuda()) {
        if (stream && stream != Py_None &&
            !(PyLong_Check(stream) && PyLong_AsLong(stream) == -1 && !PyErr_Occurred()))
            throw py::buffer_error("stream must be None for CPU tensors");
    } else if (v.frame) {
        // The data is complete already (a GPU frame is published only after the producer's
        // work); the importer's stream is the one the frame's release must wait for. -1 only
        // asks us not to synchronise the import and names no stream: the release waits as it
        // would have, never giving the buffer back under the importer's kernels.
        const bips::CudaStream s = dlpack_stream(stream);
        if (s != bips::STREAM_NONE)
            v.frame->set_stream(s);
    } else if (stream && stream != Py_None) {
        dlpack_stream(stream); // a producer's own buffer: nothing to order, but check it
    }
    bool versioned = false;
    bips::dlpack::Version version = bips::dlpack::VERSION;
    if (max_version && max_version != Py_None) {
        const auto mv = int_pair(max_version, "max_version");
        versioned = mv.first >= 1;
        const std::int64_t minor = std::max<std::int64_t>(mv.second, 0);
        if (mv.first == 1 && minor < version.minor)
            version.minor = static_cast<std::uint32_t>(minor);
    }
    // The legacy struct cannot say read-only; an importer would write into a PROT_READ
    // mapping and crash. numpy and torch ask for the versioned one. On a GPU the driver's
    // read-only mapping makes such a write fail in the writer's own kernel, so older
    // frameworks that only know the legacy struct may have it there.
    if (!versioned && v.readonly && !(v.device.is_cuda() && v.mapping_read_only))
        throw py::buffer_error("frames are read-only: ask for DLPack >= 1.0 (max_version=(1, 0)), "
                               "which carries the read-only flag");
    auto *ctx = new DLContext{};
    ctx->keeper = keeper.release().ptr();
    PyObject *cap;
    if (versioned) {
        auto &mt = ctx->versioned;
        mt.version = version;
        mt.manager_ctx = ctx;
        mt.deleter = [](bips::dlpack::ManagedTensorVersioned *self) {
            drop_context(self->manager_ctx);
        };
        mt.flags = v.readonly ? bips::dlpack::FLAG_READ_ONLY : 0;
        fill_dl_tensor(ctx, v, mt.dl_tensor);
        cap = PyCapsule_New(&mt, "dltensor_versioned", versioned_capsule_gone);
    } else {
        auto &mt = ctx->legacy;
        mt.manager_ctx = ctx;
        mt.deleter = [](bips::dlpack::ManagedTensor *self) { drop_context(self->manager_ctx); };
        fill_dl_tensor(ctx, v, mt.dl_tensor);
        cap = PyCapsule_New(&mt, "dltensor", legacy_capsule_gone);
    }
    if (!cap)
        drop_context(ctx);
    return cap;
}

PyObject *array_protocol(PyObject *array, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    auto a = py::reinterpret_steal<py::object>(array);
    static const char *const names[] = {"dtype", "copy"};
    PyObject *p[2];
    parse_args("__array__", args, nargs, kwnames, names, p);
    const bool want_copy = p[1] && p[1] != Py_None && truth(p[1]);
    const bool no_copy = p[1] && p[1] != Py_None && !want_copy; // numpy 2: copy=False never copies
    if (p[0] && p[0] != Py_None) {
        py::object out = a.attr("astype")(py::handle(p[0]), py::arg("copy") = want_copy);
        if (no_copy && !out.is(a))
            throw py::value_error("Unable to avoid copy while creating an array as requested: "
                                  "the frame's dtype differs from the one asked for");
        return out.release().ptr();
    }
    if (want_copy)
        return a.attr("copy")().release().ptr();
    return a.release().ptr();
}

PyObject *dlpack_device(bips::Device d) {
    return d.is_cuda() ? Py_BuildValue("(ii)", bips::dlpack::DEVICE_CUDA, d.index)
                       : Py_BuildValue("(ii)", bips::dlpack::DEVICE_CPU, 0);
}

PyObject *cuda_array_interface(const ViewSpec &v) {
    if (!v.device.is_cuda()) {
        PyErr_SetString(PyExc_AttributeError,
                        "__cuda_array_interface__: the data lives in host memory");
        return nullptr;
    }
    py::dict d;
    d["shape"] = shape_tuple(v.dims, v.ndim);
    d["typestr"] = numpy_dtype(v.dtype).attr("str");
    d["data"] =
        py::make_tuple(py::int_(reinterpret_cast<std::uintptr_t>(v.data)), py::bool_(v.readonly));
    d["strides"] = py::none(); // C-contiguous
    d["version"] = 3;
    // No stream: the data is complete when it is handed out, nothing to wait for.
    d["stream"] = py::none();
    return d.release().ptr();
}

PyObject *device_text(bips::Device d) { return PyUnicode_FromString(d.str().c_str()); }

} // namespace bipspy
