// SPDX-License-Identifier: Apache-2.0
// What the binding files share: error translation, argument conversion and the way blocking
// calls wait. Each concept's file (frame, buffer, producer, consumer, views, inspect) registers
// itself from module.cpp.
#pragma once

#include <bips/bips.hpp>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

namespace py = pybind11;

namespace bipspy {

// errors.cpp
void register_errors(py::module_ &m);
/// Sets the Python error for the C++ exception being handled (call inside a catch block).
void set_python_error() noexcept;

/// Runs f (returning a new reference, or nullptr with an error set) with C++ exceptions turned
/// into Python ones; for the plain CPython methods.
template <class F> PyObject *guarded(F &&f) noexcept {
    try {
        return f();
    } catch (...) {
        set_python_error();
    }
    return nullptr;
}

// convert.cpp
bips::DType to_dtype(py::handle obj);
const py::dtype &numpy_dtype(bips::DType t);
const char *struct_format(bips::DType t);
bips::Shape to_shape(py::handle obj);
py::tuple shape_tuple(const std::int64_t *dims, std::size_t ndim);
/// A timeout in seconds as a Duration; InvalidArgument for a negative or NaN one.
bips::Duration seconds(double s);
/// None → nullopt (wait forever), else seconds as a double (checked by seconds()).
std::optional<double> timeout_arg(PyObject *o);
std::int64_t owner_option(py::handle owner);
/// Any integer (an object with __index__, numpy's too) as int64 / size_t: TypeError naming
/// `name` for anything else, OverflowError when it does not fit (size_t: also a negative one).
std::int64_t int64_arg(PyObject *o, const char *name);
std::size_t size_arg(PyObject *o, const char *name);
/// An int argument in [0, max]; `fallback` when not given. TypeError, OverflowError.
std::size_t unsigned_arg(PyObject *o, const char *name, std::size_t max, std::size_t fallback);
std::string policy_name(bips::Policy p);
/// A CUDA stream argument: None (the legacy default stream), an int handle (DLPack's: 1 legacy
/// default, 2 per-thread default, -1 no synchronisation), or an object with __cuda_stream__()
/// (the CUDA stream protocol), .cuda_stream (torch) or .ptr (CuPy). TypeError otherwise.
bips::CudaStream dlpack_stream(PyObject *o);
/// "cpu" / "cuda:N" (views.cpp).
PyObject *device_text(bips::Device d);
bips::Policy to_policy(const std::string &s);

/// The arguments of a METH_FASTCALL | METH_KEYWORDS call, by position or keyword; `names`
/// after `positional` can only be given by keyword. Missing ones are nullptr.
void parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                const char *const *names, std::size_t count, PyObject **out,
                std::size_t positional);
template <std::size_t N>
void parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                const char *const (&names)[N], PyObject *(&out)[N], std::size_t positional = N) {
    parse_args(fname, args, nargs, kwnames, names, N, out, positional);
}

// wait.cpp: every blocking call, with the GIL released and Ctrl-C honoured. A frame or buffer
// that is there already is taken with the GIL held and no system call.
void install_interrupt_check();
bips::Buffer acquire(bips::Producer &p, std::optional<double> timeout);
bips::Frame receive(bips::Consumer &c, std::optional<double> timeout);
bool wait_ready(bips::Consumer &c, std::optional<double> timeout);
std::unique_ptr<bips::Consumer> open_consumer(const std::string &name, bips::ConsumerOptions o,
                                              std::optional<double> timeout);

// frame.cpp, buffer.cpp: the per-frame objects, plain CPython types.
void register_frame(py::module_ &m);
PyObject *new_frame(bips::Frame &&f);
void register_buffer(py::module_ &m);
PyObject *new_buffer(bips::Buffer &&b);
/// The C++ buffer of a bips.Buffer, moved out for publish(); TypeError for anything else.
bips::Buffer take_buffer(PyObject *obj);

// producer.cpp, consumer.cpp
void register_producer(py::module_ &m);
void register_consumer(py::module_ &m);
/// The C++ consumer of a bips.Consumer (or subclass); TypeError otherwise.
bips::Consumer &consumer_of(py::handle obj);

// inspect.cpp: stats, pool information and the pool tools.
void register_inspect(py::module_ &m);
// video.cpp: the video convention's format table (bips/video.hpp) for bips.video.
void register_video(py::module_ &m);

/// Adds a ready static type to the module.
void add_type(py::module_ &m, const char *name, PyTypeObject *type);

} // namespace bipspy
