// SPDX-License-Identifier: Apache-2.0
// Python values to bips ones and back: dtypes, shapes, timeouts, owners, policies, and the
// argument parser of the fast-call methods.
#include "common.hpp"

#include <chrono>
#include <cstring>

namespace bipspy {

bips::DType to_dtype(py::handle obj) {
    if (py::isinstance<py::str>(obj))
        return bips::DType::from_name(obj.cast<std::string>());
    py::dtype dt = py::dtype::from_args(py::reinterpret_borrow<py::object>(obj));
    const char kind = dt.kind();
    const auto bits = static_cast<std::uint8_t>(dt.itemsize() * 8);
    bips::DType out;
    if (kind == 'u')
        out = {bips::DType::UInt, bits};
    else if (kind == 'i')
        out = {bips::DType::Int, bits};
    else if (kind == 'f')
        out = {bips::DType::Float, bits};
    else if (kind == 'b')
        out = {bips::DType::Bool, 8};
    else
        throw bips::InvalidArgument("unsupported dtype " + py::str(obj).cast<std::string>());
    if (!out.valid() || dt.byteorder() == '>')
        throw bips::InvalidArgument("unsupported dtype " + py::str(obj).cast<std::string>() +
                                    " (native byte order, 8 to 64 bits)");
    return out;
}

const py::dtype &numpy_dtype(bips::DType t) {
    // One cached numpy dtype object per supported type (index: code x bits).
    static py::dtype *cache[7][9] = {};
    py::dtype *&slot = cache[t.code % 7][(t.bits / 8) % 9];
    if (!slot)
        slot = new py::dtype(t.name()); // leaked on purpose: lives as long as the interpreter
    return *slot;
}

const char *struct_format(bips::DType t) {
    switch (t.code) {
    case bips::DType::UInt:
        return t.bits == 8 ? "B" : t.bits == 16 ? "H" : t.bits == 32 ? "I" : "Q";
    case bips::DType::Int:
        return t.bits == 8 ? "b" : t.bits == 16 ? "h" : t.bits == 32 ? "i" : "q";
    case bips::DType::Float:
        return t.bits == 16 ? "e" : t.bits == 32 ? "f" : "d";
    default:
        return "?";
    }
}

namespace {

py::object as_index(PyObject *o, const char *name) {
    PyObject *i = PyNumber_Index(o);
    if (!i)
        throw py::type_error(std::string(name) + " must be an int, not " + Py_TYPE(o)->tp_name);
    return py::reinterpret_steal<py::object>(i);
}

} // namespace

std::int64_t int64_arg(PyObject *o, const char *name) {
    const py::object i = as_index(o, name);
    const long long v = PyLong_AsLongLong(i.ptr());
    if (v == -1 && PyErr_Occurred())
        throw py::error_already_set(); // OverflowError
    return v;
}

std::size_t size_arg(PyObject *o, const char *name) {
    const py::object i = as_index(o, name);
    const std::size_t v = PyLong_AsSize_t(i.ptr());
    if (v == static_cast<std::size_t>(-1) && PyErr_Occurred())
        throw py::error_already_set(); // OverflowError: negative or too large
    return v;
}

bips::Shape to_shape(py::handle obj) {
    bips::Shape s;
    if (PyIndex_Check(obj.ptr())) { // one int (numpy's too): a flat shape
        s.push_back(int64_arg(obj.ptr(), "shape"));
        return s;
    }
    for (auto item : obj)
        s.push_back(int64_arg(item.ptr(), "shape"));
    return s;
}

py::tuple shape_tuple(const std::int64_t *dims, std::size_t ndim) {
    py::tuple t(ndim);
    for (std::size_t i = 0; i < ndim; ++i)
        t[i] = py::int_(dims[i]);
    return t;
}

bips::Duration seconds(double s) {
    if (!(s >= 0))
        throw bips::InvalidArgument("timeout must be >= 0 seconds or None");
    if (s > 1e9)
        s = 1e9;
    return std::chrono::duration_cast<bips::Duration>(std::chrono::duration<double>(s));
}

std::optional<double> timeout_arg(PyObject *o) {
    if (!o || o == Py_None)
        return std::nullopt;
    const double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        throw py::error_already_set();
    seconds(v); // refuse a bad timeout even when no wait is needed
    return v;
}

std::int64_t owner_option(py::handle owner) {
    if (owner.is_none())
        return bips::OWNER_SELF;
    if (py::isinstance<py::str>(owner)) {
        if (owner.cast<std::string>() == "any")
            return bips::ANY_OWNER;
    } else if (py::isinstance<py::int_>(owner) && !py::isinstance<py::bool_>(owner)) {
        int overflow = 0;
        const long long uid = PyLong_AsLongLongAndOverflow(owner.ptr(), &overflow);
        if (!overflow && uid >= 0 && uid <= 0xfffffffeLL)
            return uid;
    }
    throw bips::InvalidArgument("owner must be None (this user or root), \"any\" or a uid >= 0");
}

std::size_t unsigned_arg(PyObject *o, const char *name, std::size_t max, std::size_t fallback) {
    if (!o)
        return fallback;
    if (!PyLong_Check(o) || PyBool_Check(o))
        throw py::type_error(std::string(name) + " must be an int");
    const unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred())
        throw py::error_already_set(); // OverflowError: negative or too large
    if (v > max)
        throw bips::InvalidArgument(std::string(name) + " is too large");
    return static_cast<std::size_t>(v);
}

std::string policy_name(bips::Policy p) {
    return p == bips::Policy::block ? "block" : "drop_oldest";
}

bips::Policy to_policy(const std::string &s) {
    if (s == "block")
        return bips::Policy::block;
    if (s == "drop_oldest")
        return bips::Policy::drop_oldest;
    throw bips::InvalidArgument("policy must be 'block' or 'drop_oldest', got '" + s + "'");
}

void parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                const char *const *names, std::size_t count, PyObject **out,
                std::size_t positional) {
    for (std::size_t i = 0; i < count; ++i)
        out[i] = nullptr;
    if (nargs > static_cast<Py_ssize_t>(positional))
        throw py::type_error(std::string(fname) + "() takes at most " + std::to_string(positional) +
                             " positional argument" + (positional == 1 ? "" : "s"));
    for (Py_ssize_t i = 0; i < nargs; ++i)
        out[i] = args[i];
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; ++k) {
        const char *key = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        if (!key)
            throw py::error_already_set();
        std::size_t j = 0;
        while (j < count && std::strcmp(key, names[j]) != 0)
            ++j;
        if (j == count)
            throw py::type_error(std::string(fname) + "() got an unexpected keyword argument '" +
                                 key + "'");
        if (out[j])
            throw py::type_error(std::string(fname) + "() got multiple values for argument '" +
                                 names[j] + "'");
        out[j] = args[nargs + k];
    }
}

} // namespace bipspy

namespace bipspy {

bips::CudaStream dlpack_stream(PyObject *o) {
    if (!o || o == Py_None)
        return nullptr;
    py::object handle;
    if (PyIndex_Check(o)) {
        handle = py::reinterpret_borrow<py::object>(o);
    } else if (PyObject_HasAttrString(o, "__cuda_stream__")) {
        // The CUDA stream protocol: (version, handle).
        py::object t = py::reinterpret_borrow<py::object>(o).attr("__cuda_stream__")();
        if (!PyTuple_Check(t.ptr()) || PyTuple_GET_SIZE(t.ptr()) != 2)
            throw py::type_error("__cuda_stream__() must return (version, handle)");
        handle = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(t.ptr(), 1));
    } else if (PyObject_HasAttrString(o, "cuda_stream")) { // torch.cuda.Stream
        handle = py::reinterpret_borrow<py::object>(o).attr("cuda_stream");
    } else if (PyObject_HasAttrString(o, "ptr")) { // cupy.cuda.Stream
        handle = py::reinterpret_borrow<py::object>(o).attr("ptr");
    } else {
        throw py::type_error(std::string("stream must be None, an int handle or a CUDA stream "
                                         "object (torch, CuPy, __cuda_stream__), not ") +
                             Py_TYPE(o)->tp_name);
    }
    const std::int64_t v = int64_arg(handle.ptr(), "stream");
    if (v == -1)
        return bips::STREAM_NONE;
    if (v < -1)
        throw bips::InvalidArgument("stream must be a CUDA stream handle, -1 or None");
    return reinterpret_cast<bips::CudaStream>(static_cast<std::uintptr_t>(v));
}

} // namespace bipspy
