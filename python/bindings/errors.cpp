// SPDX-License-Identifier: Apache-2.0
// bips errors as Python exceptions: one bips.Error hierarchy, and std::system_error as OSError
// so that FileNotFoundError and PermissionError arise naturally.
#include "common.hpp"

#include <cerrno>
#include <initializer_list>
#include <system_error>

namespace bipspy {
namespace {

struct Exceptions {
    PyObject *error, *timeout, *not_found, *incompatible, *corrupt, *gone, *busy, *too_many,
        *invalid, *device_unavailable, *device_error;
} EXC;

// The tuples of bases live as long as the module (made once).
PyObject *new_exception(py::module_ &m, const char *name, PyObject *bases, const char *doc) {
    std::string full = std::string("bips._core.") + name;
    PyObject *e = PyErr_NewExceptionWithDoc(full.c_str(), doc, bases, nullptr);
    if (!e)
        throw py::error_already_set();
    m.add_object(name, py::handle(e));
    return e;
}

PyObject *tuple_of(std::initializer_list<PyObject *> items) {
    PyObject *t = PyTuple_New(static_cast<Py_ssize_t>(items.size()));
    if (!t)
        throw py::error_already_set();
    Py_ssize_t i = 0;
    for (PyObject *o : items) {
        Py_INCREF(o);
        PyTuple_SET_ITEM(t, i++, o);
    }
    return t;
}

void set_os_error(PyObject *type, int err, const char *msg) {
    PyObject *exc = PyObject_CallFunction(type, "is", err, msg);
    if (exc) {
        PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(exc)), exc);
        Py_DECREF(exc);
    }
}

// bips and OS errors to their Python classes; anything else is rethrown for pybind11's own
// translators.
void translate(std::exception_ptr p) {
    try {
        if (p)
            std::rethrow_exception(p);
    } catch (const bips::Interrupted &) {
        // The interrupt check left the signal handler's exception (KeyboardInterrupt) set.
        if (!PyErr_Occurred())
            PyErr_SetNone(PyExc_KeyboardInterrupt);
    } catch (const bips::Timeout &e) {
        PyErr_SetString(EXC.timeout, e.what());
    } catch (const bips::PoolNotFound &e) {
        set_os_error(EXC.not_found, ENOENT, e.what());
    } catch (const bips::IncompatiblePool &e) {
        PyErr_SetString(EXC.incompatible, e.what());
    } catch (const bips::CorruptPool &e) {
        PyErr_SetString(EXC.corrupt, e.what());
    } catch (const bips::ProducerGone &e) {
        PyErr_SetString(EXC.gone, e.what());
    } catch (const bips::PoolBusy &e) {
        PyErr_SetString(EXC.busy, e.what());
    } catch (const bips::TooManyConsumers &e) {
        PyErr_SetString(EXC.too_many, e.what());
    } catch (const bips::InvalidArgument &e) {
        PyErr_SetString(EXC.invalid, e.what());
    } catch (const bips::DeviceUnavailable &e) {
        PyErr_SetString(EXC.device_unavailable, e.what());
    } catch (const bips::DeviceError &e) {
        PyErr_SetString(EXC.device_error, e.what());
    } catch (const bips::Error &e) {
        PyErr_SetString(EXC.error, e.what());
    } catch (const std::system_error &e) {
        set_os_error(PyExc_OSError, e.code().value(), e.what());
    }
}

} // namespace

void register_errors(py::module_ &m) {
    EXC.error = new_exception(m, "Error", PyExc_Exception, "Base class of every bips error.");
    EXC.timeout = new_exception(m, "Timeout", tuple_of({EXC.error, PyExc_TimeoutError}),
                                "A blocking call ran out of time.");
    EXC.not_found = new_exception(m, "PoolNotFound", tuple_of({EXC.error, PyExc_FileNotFoundError}),
                                  "No pool of that name exists.");
    EXC.incompatible = new_exception(m, "IncompatiblePool", EXC.error,
                                     "The pool was made by another layout version of bips.");
    EXC.corrupt = new_exception(m, "CorruptPool", EXC.error,
                                "The segment under that name is not a valid bips pool.");
    EXC.gone = new_exception(m, "ProducerGone", EXC.error,
                             "The producer closed or died and nothing is left to receive.");
    EXC.busy = new_exception(m, "PoolBusy", EXC.error, "A live producer already owns the pool.");
    EXC.too_many = new_exception(m, "TooManyConsumers", EXC.error,
                                 "Every consumer slot of the pool is taken.");
    EXC.invalid = new_exception(m, "InvalidArgument", tuple_of({EXC.error, PyExc_ValueError}),
                                "A bad argument or a closed handle.");
    EXC.device_unavailable = new_exception(
        m, "DeviceUnavailable", EXC.error,
        "GPU pools cannot be used here: no CUDA driver or device, or not the pool's GPU.");
    EXC.device_error = new_exception(m, "DeviceError", EXC.error, "A CUDA driver call failed.");
    py::register_exception_translator(translate);
}

void set_python_error() noexcept {
    try {
        throw; // the exception being handled by our caller
    } catch (py::error_already_set &e) {
        e.restore();
        return;
    } catch (const py::builtin_exception &e) {
        e.set_error();
        return;
    } catch (...) {
    }
    try {
        translate(std::current_exception());
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception");
    }
}

void add_type(py::module_ &m, const char *name, PyTypeObject *type) {
    if (PyType_Ready(type) != 0)
        throw py::error_already_set();
    Py_INCREF(type);
    m.add_object(name, py::handle(reinterpret_cast<PyObject *>(type)));
}

} // namespace bipspy
