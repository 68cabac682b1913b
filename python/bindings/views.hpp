// SPDX-License-Identifier: Apache-2.0
// The three ways memory leaves bips: numpy arrays, the buffer protocol and DLPack. Every view
// holds a reference to a small "keeper" object that keeps the memory from reuse while it lives.
#pragma once

#include "common.hpp"

namespace bipspy {

/// What one exported view needs: memory, format, and the keeper (a borrowed reference; every
/// view takes its own).
struct ViewSpec {
    PyObject *keeper = nullptr;
    void *data = nullptr;
    bips::DType dtype;
    std::size_t ndim = 0;
    std::int64_t dims[bips::MAX_DIMS] = {};
    bool readonly = true;
    bips::Device device; ///< cpu, or the CUDA device data lives on
    /// The mapping itself refuses writes (a GPU frame the driver mapped read-only).
    bool mapping_read_only = false;
    /// A received frame's views: the frame whose release waits for the stream a DLPack
    /// importer names (nullptr for a producer's buffer).
    bips::Frame *frame = nullptr;
};

/// A numpy array over the memory whose base is the keeper (a new reference); BufferError for
/// device memory, which the CPU cannot read.
PyObject *make_numpy(const ViewSpec &v);

/// Fills `view` for the buffer protocol. `shape` and `strides` (MAX_DIMS each) must live as
/// long as the keeper: the view points at them. view->obj is the keeper.
int fill_py_buffer(const ViewSpec &v, Py_buffer *view, int flags, Py_ssize_t *shape,
                   Py_ssize_t *strides);

/// __dlpack__(stream=, max_version=, dl_device=, copy=) of a CPU or CUDA view.
PyObject *make_dlpack(const ViewSpec &v, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames);

/// __array__(dtype=None, copy=None) given the object's numpy() result (a new reference).
PyObject *array_protocol(PyObject *array, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames);

/// __dlpack_device__(): (kDLCPU, 0) or (kDLCUDA, ordinal).
PyObject *dlpack_device(bips::Device d);

/// __cuda_array_interface__ (version 3) of a CUDA view; AttributeError for a CPU one, so that
/// hasattr() is false for host memory as the protocol expects.
PyObject *cuda_array_interface(const ViewSpec &v);

} // namespace bipspy
