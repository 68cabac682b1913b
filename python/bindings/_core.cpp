// SPDX-License-Identifier: Apache-2.0
// Python glue for the bips C++ core: argument conversion, GIL handling, and the three ways
// memory leaves bips (numpy arrays, the buffer protocol, DLPack). Semantics live in C++.
#include "dlpack.hpp"

#include <bips/bips.hpp>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <sys/eventfd.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace py = pybind11;

void bind_video(py::module_ &m); // video.cpp
using namespace std::chrono_literals;

namespace {

// ---- exceptions -----------------------------------------------------------------------------

struct Exceptions {
    PyObject *error, *timeout, *not_found, *incompatible, *corrupt, *gone, *busy, *too_many,
        *invalid;
} EXC;

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

void translate_exception(std::exception_ptr p);

void register_exceptions(py::module_ &m) {
    EXC.error = new_exception(m, "Error", PyExc_Exception, "Base class of every bips error.");
    PyObject *b;
    b = tuple_of({EXC.error, PyExc_TimeoutError});
    EXC.timeout = new_exception(m, "Timeout", b, "A blocking call ran out of time.");
    b = tuple_of({EXC.error, PyExc_FileNotFoundError});
    EXC.not_found = new_exception(m, "PoolNotFound", b, "No pool of that name exists.");
    EXC.incompatible = new_exception(m, "IncompatiblePool", EXC.error,
                                     "The pool was made by another layout version of bips.");
    EXC.corrupt = new_exception(m, "CorruptPool", EXC.error,
                                "The segment under that name is not a valid bips pool.");
    EXC.gone = new_exception(m, "ProducerGone", EXC.error,
                             "The producer closed or died and nothing is left to receive.");
    EXC.busy = new_exception(m, "PoolBusy", EXC.error, "A live producer already owns the pool.");
    EXC.too_many = new_exception(m, "TooManyConsumers", EXC.error,
                                 "Every consumer slot of the pool is taken.");
    b = tuple_of({EXC.error, PyExc_ValueError});
    EXC.invalid = new_exception(m, "InvalidArgument", b, "A bad argument or a closed handle.");

    py::register_exception_translator(translate_exception);
}

void translate_current_exception() {
    try {
        translate_exception(std::current_exception());
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception");
    }
}

// bips and OS errors to their Python classes; anything else is rethrown for pybind11's own
// translators.
void translate_exception(std::exception_ptr p) {
        try {
            if (p)
                std::rethrow_exception(p);
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
        } catch (const bips::Error &e) {
            PyErr_SetString(EXC.error, e.what());
        } catch (const std::system_error &e) {
            // OSError(errno, msg) picks the subclass: FileNotFoundError, PermissionError...
            set_os_error(PyExc_OSError, e.code().value(), e.what());
        }
}

// ---- dtypes ---------------------------------------------------------------------------------

bips::DType to_dtype(const py::handle &obj) {
    if (py::isinstance<py::str>(obj))
        return bips::DType::from_name(obj.cast<std::string>());
    py::dtype dt = py::dtype::from_args(py::reinterpret_borrow<py::object>(obj));
    char kind = dt.kind();
    auto bits = static_cast<std::uint8_t>(dt.itemsize() * 8);
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
    if (!out.valid() || (dt.byteorder() == '>'))
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

bips::Shape to_shape(const py::handle &obj) {
    bips::Shape s;
    if (py::isinstance<py::int_>(obj)) {
        s.push_back(obj.cast<std::int64_t>());
        return s;
    }
    for (auto item : obj)
        s.push_back(item.cast<std::int64_t>());
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

// Consumer(owner=...): None (this user or root), "any", or a uid.
std::int64_t owner_option(const py::object &owner) {
    if (owner.is_none())
        return bips::OWNER_SELF;
    if (py::isinstance<py::str>(owner)) {
        if (owner.cast<std::string>() == "any")
            return bips::ANY_OWNER;
    } else if (py::isinstance<py::int_>(owner) && !py::isinstance<py::bool_>(owner)) {
        const auto uid = owner.cast<long long>();
        if (uid >= 0 && uid <= 0xfffffffeLL)
            return uid;
    }
    throw bips::InvalidArgument("owner must be None (this user or root), \"any\" or a uid >= 0");
}

// Runs a timed C++ wait with the GIL released, in slices short enough for Ctrl-C.
template <class T, class F>
std::optional<T> wait_sliced(std::optional<double> timeout, F &&attempt) {
    constexpr auto SLICE = std::chrono::milliseconds(50);
    const bool forever = !timeout.has_value();
    const auto deadline = forever ? bips::Clock::time_point::max()
                                  : bips::Clock::now() + seconds(*timeout);
    for (;;) {
        auto now = bips::Clock::now();
        bips::Duration slice = SLICE;
        if (!forever)
            slice = std::min<bips::Duration>(SLICE, std::max<bips::Duration>(deadline - now, 0ns));
        std::optional<T> r;
        {
            py::gil_scoped_release nogil;
            r = attempt(slice);
        }
        if (r)
            return r;
        if (PyErr_CheckSignals() != 0)
            throw py::error_already_set();
        if (!forever && bips::Clock::now() >= deadline)
            return std::nullopt;
    }
}

// ---- views: numpy, buffer protocol, DLPack --------------------------------------------------

// What one exported view needs: memory, format, and an owner that keeps the buffer alive.
struct ViewSpec {
    std::shared_ptr<void> owner;
    void *data = nullptr;
    bips::DType dtype;
    std::size_t ndim = 0;
    std::int64_t dims[bips::MAX_DIMS] = {};
    bool readonly = true;
};

void c_strides(const ViewSpec &v, std::int64_t *out, std::int64_t unit) {
    std::int64_t s = unit;
    for (std::size_t i = v.ndim; i-- > 0;) {
        out[i] = s;
        s *= v.dims[i];
    }
}

// Builds the array through numpy's C API with the shape on the stack: this runs once per frame.
py::object make_numpy(const ViewSpec &v) {
    auto &api = py::detail::npy_api::get();
    auto *keep = new std::shared_ptr<void>(v.owner);
    py::capsule base(keep, [](void *p) { delete static_cast<std::shared_ptr<void> *>(p); });
    Py_intptr_t shape[bips::MAX_DIMS], strides[bips::MAX_DIMS];
    std::int64_t st[bips::MAX_DIMS];
    c_strides(v, st, static_cast<std::int64_t>(v.dtype.itemsize()));
    for (std::size_t i = 0; i < v.ndim; ++i) {
        shape[i] = static_cast<Py_intptr_t>(v.dims[i]);
        strides[i] = static_cast<Py_intptr_t>(st[i]);
    }
    int flags = v.readonly ? 0 : py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    PyObject *descr = numpy_dtype(v.dtype).inc_ref().ptr(); // NewFromDescr steals it
    auto arr = py::reinterpret_steal<py::object>(api.PyArray_NewFromDescr_(
        api.PyArray_Type_, descr, static_cast<int>(v.ndim), shape, strides, v.data, flags, nullptr));
    if (!arr)
        throw py::error_already_set();
    if (api.PyArray_SetBaseObject_(arr.ptr(), base.release().ptr()) != 0)
        throw py::error_already_set();
    return arr;
}

struct BufferExport {
    std::shared_ptr<void> owner;
    Py_ssize_t shape[bips::MAX_DIMS];
    Py_ssize_t strides[bips::MAX_DIMS];
};

int fill_py_buffer(PyObject *exporter, const ViewSpec &v, Py_buffer *view, int flags) {
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && v.readonly) {
        PyErr_SetString(PyExc_BufferError, "frames are read-only");
        return -1;
    }
    auto *ex = new BufferExport{v.owner, {}, {}};
    std::int64_t st[bips::MAX_DIMS];
    c_strides(v, st, static_cast<std::int64_t>(v.dtype.itemsize()));
    Py_ssize_t len = static_cast<Py_ssize_t>(v.dtype.itemsize());
    for (std::size_t i = 0; i < v.ndim; ++i) {
        ex->shape[i] = static_cast<Py_ssize_t>(v.dims[i]);
        ex->strides[i] = static_cast<Py_ssize_t>(st[i]);
        len *= ex->shape[i];
    }
    view->buf = v.data;
    view->obj = exporter;
    Py_INCREF(exporter);
    view->len = len;
    view->readonly = v.readonly ? 1 : 0;
    view->itemsize = static_cast<Py_ssize_t>(v.dtype.itemsize());
    view->format = (flags & PyBUF_FORMAT) ? const_cast<char *>(struct_format(v.dtype)) : nullptr;
    view->ndim = static_cast<int>(v.ndim);
    view->shape = (flags & PyBUF_ND) == PyBUF_ND ? ex->shape : nullptr;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? ex->strides : nullptr;
    view->suboffsets = nullptr;
    view->internal = ex;
    return 0;
}

void release_py_buffer(PyObject *, Py_buffer *view) {
    delete static_cast<BufferExport *>(view->internal);
    view->internal = nullptr;
}

// Installs the buffer protocol on a bound class whose C++ type has `ViewSpec view_spec()`.
template <class T> void enable_buffer_protocol(py::class_<T> &cls) {
    auto *heap = reinterpret_cast<PyHeapTypeObject *>(cls.ptr());
    heap->as_buffer.bf_getbuffer = [](PyObject *obj, Py_buffer *view, int flags) -> int {
        try {
            ViewSpec v = py::handle(obj).cast<T &>().export_spec();
            return fill_py_buffer(obj, v, view, flags);
        } catch (py::error_already_set &e) {
            e.restore();
        } catch (const std::exception &e) {
            PyErr_SetString(PyExc_BufferError, e.what());
        }
        return -1;
    };
    heap->as_buffer.bf_releasebuffer = release_py_buffer;
    heap->ht_type.tp_as_buffer = &heap->as_buffer;
}

struct DLContext {
    std::shared_ptr<void> owner;
    std::int64_t shape[bips::MAX_DIMS];
    std::int64_t strides[bips::MAX_DIMS];
    bips::dlpack::ManagedTensor legacy;
    bips::dlpack::ManagedTensorVersioned versioned;
};

void fill_dl_tensor(DLContext *ctx, const ViewSpec &v, bips::dlpack::Tensor &t) {
    for (std::size_t i = 0; i < v.ndim; ++i)
        ctx->shape[i] = v.dims[i];
    c_strides(v, ctx->strides, 1);
    t.data = v.data;
    t.device = {bips::dlpack::DEVICE_CPU, 0};
    t.ndim = static_cast<std::int32_t>(v.ndim);
    t.dtype = {v.dtype.code, v.dtype.bits, 1};
    t.shape = ctx->shape;
    t.strides = ctx->strides;
    t.byte_offset = 0;
}

py::capsule make_dlpack(const ViewSpec &v, const py::object &stream, const py::object &max_version,
                        const py::object &dl_device, const py::object &copy) {
    if (!copy.is_none() && copy.cast<bool>())
        throw py::buffer_error("bips exports shared memory without copying; copy=True is not supported");
    if (!dl_device.is_none()) {
        auto dev = dl_device.cast<std::pair<int, int>>();
        if (dev.first != bips::dlpack::DEVICE_CPU)
            throw py::buffer_error("bips frames live in CPU memory");
    }
    if (!stream.is_none() && !(py::isinstance<py::int_>(stream) && stream.cast<long>() == -1))
        throw py::buffer_error("stream must be None for CPU tensors");
    bool versioned = false;
    bips::dlpack::Version version = bips::dlpack::VERSION;
    if (!max_version.is_none()) {
        auto mv = max_version.cast<std::pair<int, int>>();
        versioned = mv.first >= 1;
        if (mv.first == 1 && static_cast<std::uint32_t>(mv.second) < version.minor)
            version.minor = static_cast<std::uint32_t>(std::max(mv.second, 0));
    }
    if (!versioned && v.readonly)
        // The legacy struct cannot say read-only; an importer would write into a PROT_READ
        // mapping and crash. numpy and torch ask for the versioned one.
        throw py::buffer_error("frames are read-only: ask for DLPack >= 1.0 (max_version=(1, 0)), "
                               "which carries the read-only flag");
    auto *ctx = new DLContext{};
    ctx->owner = v.owner;
    if (versioned) {
        auto &mt = ctx->versioned;
        mt.version = version;
        mt.manager_ctx = ctx;
        mt.deleter = [](bips::dlpack::ManagedTensorVersioned *self) {
            delete static_cast<DLContext *>(self->manager_ctx);
        };
        mt.flags = v.readonly ? bips::dlpack::FLAG_READ_ONLY : 0;
        fill_dl_tensor(ctx, v, mt.dl_tensor);
        return py::capsule(&mt, "dltensor_versioned", [](PyObject *cap) {
            // Only an unconsumed capsule still owns the tensor (consumers rename it).
            if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
                auto *p = static_cast<bips::dlpack::ManagedTensorVersioned *>(
                    PyCapsule_GetPointer(cap, "dltensor_versioned"));
                if (p && p->deleter)
                    p->deleter(p);
            }
        });
    }
    auto &mt = ctx->legacy;
    mt.manager_ctx = ctx;
    mt.deleter = [](bips::dlpack::ManagedTensor *self) {
        delete static_cast<DLContext *>(self->manager_ctx);
    };
    fill_dl_tensor(ctx, v, mt.dl_tensor);
    return py::capsule(&mt, "dltensor", [](PyObject *cap) {
        if (PyCapsule_IsValid(cap, "dltensor")) {
            auto *p = static_cast<bips::dlpack::ManagedTensor *>(PyCapsule_GetPointer(cap, "dltensor"));
            if (p && p->deleter)
                p->deleter(p);
        }
    });
}

// ---- Frame ----------------------------------------------------------------------------------

class PyFrame {
public:
    explicit PyFrame(bips::Frame &&f)
        : m_frame(std::make_shared<bips::Frame>(std::move(f))), m_seq(m_frame->seq()),
          m_timestamp_ns(m_frame->timestamp_ns()), m_nbytes(m_frame->nbytes()),
          m_dtype(m_frame->dtype()), m_ndim(m_frame->ndim()), m_index(m_frame->index()) {
        std::copy(m_frame->dims(), m_frame->dims() + m_ndim, m_dims);
    }

    ViewSpec view_spec() const {
        const bips::Frame &f = live();
        ViewSpec v;
        v.owner = m_frame;
        v.data = const_cast<std::byte *>(f.data());
        v.dtype = m_dtype;
        v.ndim = m_ndim;
        std::copy(m_dims, m_dims + m_ndim, v.dims);
        v.readonly = true;
        return v;
    }

    ViewSpec export_spec() const { return view_spec(); }

    py::object numpy() {
        if (!m_array)
            m_array = make_numpy(view_spec());
        return m_array;
    }

    py::bytes meta() const {
        const bips::Frame &f = live();
        return py::bytes(reinterpret_cast<const char *>(f.meta_data()), f.meta_size());
    }

    // Drops this object's claim. The buffer goes back when the last view (array, memoryview,
    // tensor) made from the frame is gone too.
    void release() {
        m_array = py::object();
        m_frame.reset();
    }

    bool released() const { return !m_frame; }
    bool intact() const { return m_frame && m_frame->intact(); }
    std::uint64_t seq() const { return m_seq; }
    std::int64_t timestamp_ns() const { return m_timestamp_ns; }
    std::size_t nbytes() const { return m_nbytes; }
    std::uint32_t index() const { return m_index; }
    py::tuple shape() const { return shape_tuple(m_dims, m_ndim); }
    py::dtype dtype() const { return numpy_dtype(m_dtype); }

    std::string repr() const {
        std::string s = "<bips.Frame seq=" + std::to_string(m_seq) + " shape=(";
        for (std::size_t i = 0; i < m_ndim; ++i)
            s += std::to_string(m_dims[i]) + (m_ndim == 1 || i + 1 < m_ndim ? "," : "");
        s += ") dtype=" + m_dtype.name() + (released() ? " released>" : ">");
        return s;
    }

private:
    const bips::Frame &live() const {
        if (!m_frame)
            throw bips::InvalidArgument("frame was released");
        return *m_frame;
    }

    std::shared_ptr<bips::Frame> m_frame;
    py::object m_array;
    std::uint64_t m_seq;
    std::int64_t m_timestamp_ns;
    std::size_t m_nbytes;
    bips::DType m_dtype;
    std::size_t m_ndim;
    std::uint32_t m_index;
    std::int64_t m_dims[bips::MAX_DIMS] = {};
};

// ---- Buffer ---------------------------------------------------------------------------------

// The C++ buffer plus the pin that keeps it from reuse while Python views exist.
struct BufferLease {
    bips::Buffer buffer;
    bips::BufferPin pin;
    std::byte *data = nullptr;
};

class PyBuffer {
public:
    explicit PyBuffer(bips::Buffer &&b) : m_lease(std::make_shared<BufferLease>()) {
        m_lease->data = b.data();
        m_lease->buffer = std::move(b);
    }

    bips::Buffer &live() const {
        if (!m_lease || !m_lease->buffer)
            throw bips::InvalidArgument("buffer was already published or discarded");
        return m_lease->buffer;
    }

    ViewSpec view_spec() const {
        bips::Buffer &b = live();
        ViewSpec v;
        v.owner = m_lease;
        v.data = b.data();
        v.dtype = b.dtype();
        v.ndim = b.ndim(); // at most MAX_DIMS
        std::copy(b.dims(), b.dims() + v.ndim, v.dims);
        // The format lies in shared memory that consumers can write: a view must still fit.
        bool fits = v.dtype.valid() && v.ndim > 0;
        std::size_t need = v.dtype.itemsize();
        for (std::size_t i = 0; i < v.ndim && fits; ++i) {
            const std::int64_t d = v.dims[i];
            fits = d >= 0 && (d == 0 || need <= b.capacity() / static_cast<std::size_t>(d));
            need *= fits ? static_cast<std::size_t>(d) : 1;
        }
        if (!fits || need > b.capacity()) {
            // no (usable) shape: a flat byte view of the whole buffer
            v.ndim = 1;
            v.dims[0] = static_cast<std::int64_t>(b.capacity());
            v.dtype = bips::UINT8;
        }
        v.readonly = false;
        return v;
    }

    // Every exported view pins the buffer: it cannot be reused while the view lives.
    ViewSpec export_spec() {
        pin_once();
        return view_spec();
    }

    py::object numpy() {
        pin_once();
        if (!m_array)
            m_array = make_numpy(view_spec());
        return m_array;
    }

    void pin_once() {
        bips::Buffer &b = live();
        if (!m_pinned) {
            m_lease->pin = b.pin();
            m_pinned = true;
        }
    }

    void set_format(const py::object &shape, const py::object &dtype) {
        bips::Buffer &b = live();
        bips::DType dt = dtype.is_none() ? b.dtype() : to_dtype(dtype);
        b.set_format(to_shape(shape), dt);
        m_array = py::object(); // the cached array had the old format
    }

    void set_nbytes(std::size_t n) {
        live().set_nbytes(n);
        m_array = py::object(); // the cached array had the old format
    }

    // Hands the C++ buffer to `publish`; views (if any) keep it pinned until they die.
    bips::Buffer take() {
        bips::Buffer b = std::move(live());
        m_array = py::object();
        m_lease.reset();
        return b;
    }

    void discard() {
        if (m_lease) {
            m_lease->buffer = bips::Buffer();
            m_array = py::object();
            m_lease.reset();
        }
    }

    bool done() const { return !m_lease || !m_lease->buffer; }
    const std::shared_ptr<BufferLease> &lease() const { return m_lease; }

private:
    std::shared_ptr<BufferLease> m_lease;
    py::object m_array;
    bool m_pinned = false;
};

// ---- stats as plain Python-visible structs --------------------------------------------------

template <class T> std::string stats_repr(const char *name, const py::object &self) {
    std::string s = std::string("<bips.") + name;
    for (auto item : self.attr("_asdict")().cast<py::dict>())
        s += " " + item.first.cast<std::string>() + "=" + py::repr(item.second).cast<std::string>();
    return s + ">";
}

std::string policy_name(bips::Policy p) { return p == bips::Policy::block ? "block" : "drop_oldest"; }

bips::Policy to_policy(const std::string &s) {
    if (s == "block")
        return bips::Policy::block;
    if (s == "drop_oldest")
        return bips::Policy::drop_oldest;
    throw bips::InvalidArgument("policy must be 'block' or 'drop_oldest', got '" + s + "'");
}

std::string octal(unsigned mode) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "0o%o", mode);
    return buf;
}

// ---- asyncio support -----------------------------------------------------------------------
// An event loop cannot wait on a futex in the segment, so a thread of this object waits
// (Consumer::wait, which receives nothing, with no GIL) and makes an eventfd readable; the loop
// watches the eventfd with add_reader and takes the frame itself with try_receive(). Armed once
// per wait, disarmed on cancel: a cancelled wait never receives anything.
class AsyncWaiter {
public:
    explicit AsyncWaiter(bips::Consumer &consumer) : m_consumer(consumer) {
        m_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (m_fd < 0)
            throw std::system_error(errno, std::generic_category(), "eventfd");
        m_thread = std::thread([this] { run(); });
    }
    AsyncWaiter(const AsyncWaiter &) = delete;
    AsyncWaiter &operator=(const AsyncWaiter &) = delete;
    ~AsyncWaiter() { close(); }

    int fileno() const noexcept { return m_fd; }

    /// Start waiting for a frame (or the end of the stream, or close()).
    void arm() {
        std::lock_guard<std::mutex> lock(m_mutex);
        if (m_stop)
            throw bips::InvalidArgument("async waiter is closed");
        m_armed = true;
        m_cv.notify_one();
    }
    /// Stop waiting; the thread goes idle within one wait slice.
    void disarm() noexcept {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_armed = false;
    }
    /// Consumes the eventfd's readiness.
    void clear() noexcept {
        std::uint64_t v;
        while (::read(m_fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
        }
    }
    void close() noexcept {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            if (m_stop)
                return;
            m_stop = true;
            m_cv.notify_one();
        }
        if (m_thread.joinable())
            m_thread.join();
        ::close(m_fd);
    }

private:
    void run() noexcept {
        std::unique_lock<std::mutex> lock(m_mutex);
        for (;;) {
            m_cv.wait(lock, [this] { return m_stop || m_armed; });
            if (m_stop)
                return;
            lock.unlock();
            bool ready;
            try {
                ready = m_consumer.wait(SLICE);
            } catch (...) {
                ready = true; // closed: let try_receive() on the loop report it
            }
            lock.lock();
            if (ready && m_armed) {
                m_armed = false;
                const std::uint64_t one = 1;
                [[maybe_unused]] ssize_t n = ::write(m_fd, &one, sizeof one);
            } else if (ready) {
                // Disarmed meanwhile: wait for the next arm() without spinning on a queued frame.
                continue;
            }
        }
    }

    // Bounds how long a disarmed (cancelled) wait keeps the thread busy.
    static constexpr bips::Duration SLICE = std::chrono::milliseconds(100);

    bips::Consumer &m_consumer;
    int m_fd = -1;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_armed = false;
    bool m_stop = false;
    std::thread m_thread;
};

// ---- the hot calls -------------------------------------------------------------------------
// acquire/publish/receive and the per-frame Frame members run once per frame on each side, so
// they are bound as plain CPython fast-call methods (install_fast_paths below) instead of
// through pybind11's generic dispatcher, which costs several times the work they do.

// Takes at once when it can (GIL held, no syscall), else waits in GIL-free slices; Timeout
// with `what()` as message when the time is up.
template <class T, class Now, class For, class What>
T now_or_wait(std::optional<double> timeout, Now &&now, For &&wait_for, What &&what) {
    if (timeout)
        seconds(*timeout); // refuse a bad timeout even when no wait is needed
    if (auto x = now())
        return std::move(*x);
    auto x = wait_sliced<T>(timeout, wait_for);
    if (!x)
        throw bips::Timeout(what());
    return std::move(*x);
}

PyBuffer do_acquire(bips::Producer &p, std::optional<double> timeout) {
    return PyBuffer(now_or_wait<bips::Buffer>(
        timeout, [&] { return p.try_acquire(); },
        [&](bips::Duration slice) { return p.try_acquire_for(slice); },
        [&] { return "no free buffer in pool '" + p.name() + "' within the timeout"; }));
}

void do_publish(bips::Producer &p, PyBuffer &buf, std::optional<std::int64_t> timestamp_ns,
                py::handle meta) {
    std::string_view m;
    py::buffer_info info;
    if (meta && !meta.is_none()) {
        if (py::isinstance<py::str>(meta))
            throw bips::InvalidArgument("meta must be bytes-like (encode str first)");
        info = py::reinterpret_borrow<py::buffer>(meta).request();
        m = std::string_view(static_cast<const char *>(info.ptr),
                             static_cast<std::size_t>(info.size * info.itemsize));
    }
    if (m.size() > p.meta_size())
        throw bips::InvalidArgument("meta is " + std::to_string(m.size()) + " bytes; the pool allows " +
                                    std::to_string(p.meta_size()) + " (meta_size)");
    p.publish(buf.take(), timestamp_ns.value_or(-1), m.data(), m.size());
}

PyFrame do_receive(bips::Consumer &c, std::optional<double> timeout) {
    return PyFrame(now_or_wait<bips::Frame>(
        timeout, [&] { return c.try_receive(); },
        [&](bips::Duration slice) { return c.try_receive_for(slice); },
        [&] { return "no frame from pool '" + c.name() + "' within the timeout"; }));
}

// The C++ object behind a pybind11 instance, without the generic caster's type search.
template <class T> T &self_of(PyObject *self) {
    auto *inst = reinterpret_cast<py::detail::instance *>(self);
    if (inst->simple_layout) {
        if (!inst->simple_holder_constructed)
            throw bips::InvalidArgument("object was not initialised");
        return *static_cast<T *>(inst->simple_value_holder[0]);
    }
    return py::handle(self).cast<T &>();
}

void translate_current_exception();

// Runs f, turning C++ exceptions into Python ones as pybind11 would.
template <class F> PyObject *guarded(F &&f) noexcept {
    try {
        return f();
    } catch (py::error_already_set &e) {
        e.restore();
    } catch (const py::builtin_exception &e) {
        e.set_error();
    } catch (...) {
        translate_current_exception();
    }
    return nullptr;
}

// Positional-or-keyword arguments `names` (all optional) of a METH_FASTCALL|METH_KEYWORDS call.
template <std::size_t N>
void parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                const char *const (&names)[N], PyObject *(&out)[N]) {
    for (auto &o : out)
        o = nullptr;
    if (nargs > static_cast<Py_ssize_t>(N))
        throw py::type_error(std::string(fname) + "() takes at most " + std::to_string(N) +
                             " arguments");
    for (Py_ssize_t i = 0; i < nargs; ++i)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; ++k) {
        const char *key = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        std::size_t j = 0;
        while (j < N && (!key || std::strcmp(key, names[j]) != 0))
            ++j;
        if (j == N)
            throw py::type_error(std::string(fname) + "() got an unexpected keyword argument '" +
                                 (key ? key : "?") + "'");
        if (out[j])
            throw py::type_error(std::string(fname) + "() got multiple values for '" + names[j] + "'");
        out[j] = args[nargs + k];
    }
}

std::optional<double> timeout_arg(PyObject *o) {
    if (!o || o == Py_None)
        return std::nullopt;
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        throw py::error_already_set();
    return v;
}

PyObject *fast_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"timeout"};
        PyObject *a[1];
        parse_args("acquire", args, nargs, kw, names, a);
        return py::cast(do_acquire(self_of<bips::Producer>(self), timeout_arg(a[0]))).release().ptr();
    });
}

PyObject *fast_publish(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"buffer", "timestamp_ns", "meta"};
        PyObject *a[3];
        parse_args("publish", args, nargs, kw, names, a);
        if (!a[0] || !py::isinstance<PyBuffer>(a[0]))
            throw py::type_error("publish() needs a bips.Buffer from acquire()");
        std::optional<std::int64_t> ts;
        if (a[1] && a[1] != Py_None) {
            long long v = PyLong_AsLongLong(a[1]);
            if (v == -1 && PyErr_Occurred())
                throw py::error_already_set();
            ts = v;
        }
        do_publish(self_of<bips::Producer>(self), self_of<PyBuffer>(a[0]), ts, a[2]);
        return py::none().release().ptr();
    });
}

PyObject *fast_receive(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    return guarded([&] {
        static const char *const names[] = {"timeout"};
        PyObject *a[1];
        parse_args("receive", args, nargs, kw, names, a);
        return py::cast(do_receive(self_of<bips::Consumer>(self), timeout_arg(a[0]))).release().ptr();
    });
}

PyObject *fast_frame_numpy(PyObject *self, PyObject *) {
    return guarded([&] { return self_of<PyFrame>(self).numpy().release().ptr(); });
}

PyObject *fast_frame_release(PyObject *self, PyObject *) {
    return guarded([&] {
        self_of<PyFrame>(self).release();
        return py::none().release().ptr();
    });
}

PyObject *fast_buffer_numpy(PyObject *self, PyObject *) {
    return guarded([&] { return self_of<PyBuffer>(self).numpy().release().ptr(); });
}

PyObject *get_seq(PyObject *self, void *) {
    return guarded([&] { return PyLong_FromUnsignedLongLong(self_of<PyFrame>(self).seq()); });
}

PyObject *get_timestamp_ns(PyObject *self, void *) {
    return guarded([&] { return PyLong_FromLongLong(self_of<PyFrame>(self).timestamp_ns()); });
}

// numpy (__array__) and DLPack entry points, the same for frames and buffers. numpy() itself,
// release() and the per-frame attributes are fast-call methods (install_fast_paths).
template <class T> void def_views(py::class_<T> &cls) {
    cls.def("__array__", [](T &self, const py::object &dtype, const py::object &copy) -> py::object {
           py::object a = self.numpy();
           if (!dtype.is_none())
               a = a.attr("astype")(dtype, py::arg("copy") = copy.is_none() ? py::bool_(false) : copy);
           else if (!copy.is_none() && copy.cast<bool>())
               a = a.attr("copy")();
           return a;
       }, py::arg("dtype") = py::none(), py::arg("copy") = py::none())
        .def("__dlpack__", [](T &self, const py::object &stream, const py::object &max_version,
                              const py::object &dl_device, const py::object &copy) {
            return make_dlpack(self.export_spec(), stream, max_version, dl_device, copy);
        }, py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
        .def("__dlpack_device__", [](const T &) { return py::make_tuple(bips::dlpack::DEVICE_CPU, 0); });
}

void set_attr(py::handle cls, const char *name, PyObject *descr) {
    if (!descr || PyObject_SetAttrString(cls.ptr(), name, descr) != 0)
        throw py::error_already_set();
    Py_DECREF(descr);
}

template <class P, class C, class F, class B>
void install_fast_paths(P &producer, C &consumer, F &frame, B &buffer) {
    auto type = [](py::handle h) { return reinterpret_cast<PyTypeObject *>(h.ptr()); };
    static PyMethodDef acquire = {
        "acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_acquire)),
        METH_FASTCALL | METH_KEYWORDS,
        "acquire($self, /, timeout=None)\n--\n\nA free buffer; waits up to `timeout` seconds "
        "(None: forever). Raises Timeout."};
    static PyMethodDef publish = {
        "publish", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_publish)),
        METH_FASTCALL | METH_KEYWORDS,
        "publish($self, /, buffer, timestamp_ns=None, meta=None)\n--\n\nPublishes `buffer` to "
        "every attached consumer. timestamp_ns defaults to CLOCK_MONOTONIC now; meta is bytes-like."};
    static PyMethodDef receive = {
        "receive", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_receive)),
        METH_FASTCALL | METH_KEYWORDS,
        "receive($self, /, timeout=None)\n--\n\nThe next frame; waits up to `timeout` seconds "
        "(None: forever). Raises Timeout, or ProducerGone once the producer is gone and nothing "
        "is queued."};
    static PyMethodDef frame_numpy = {"numpy", fast_frame_numpy, METH_NOARGS,
                                      "numpy($self, /)\n--\n\nA read-only numpy array of the "
                                      "frame (cached, zero copy)."};
    static PyMethodDef frame_release = {"release", fast_frame_release, METH_NOARGS,
                                        "release($self, /)\n--\n\nGives the frame back; deferred "
                                        "until every view made from it is gone. Idempotent."};
    static PyMethodDef buffer_numpy = {"numpy", fast_buffer_numpy, METH_NOARGS,
                                       "numpy($self, /)\n--\n\nA writable numpy array over the "
                                       "buffer (cached, zero copy)."};
    static PyGetSetDef seq = {"seq", get_seq, nullptr, "Sequence number (0, 1, 2... per pool).", nullptr};
    static PyGetSetDef ts = {"timestamp_ns", get_timestamp_ns, nullptr,
                             "CLOCK_MONOTONIC nanoseconds from the producer.", nullptr};
    set_attr(producer, "acquire", PyDescr_NewMethod(type(producer), &acquire));
    set_attr(producer, "publish", PyDescr_NewMethod(type(producer), &publish));
    set_attr(consumer, "receive", PyDescr_NewMethod(type(consumer), &receive));
    set_attr(frame, "numpy", PyDescr_NewMethod(type(frame), &frame_numpy));
    set_attr(frame, "release", PyDescr_NewMethod(type(frame), &frame_release));
    set_attr(buffer, "numpy", PyDescr_NewMethod(type(buffer), &buffer_numpy));
    set_attr(frame, "seq", PyDescr_NewGetSet(type(frame), &seq));
    set_attr(frame, "timestamp_ns", PyDescr_NewGetSet(type(frame), &ts));
}

} // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "bips compiled core: shared-memory frame pools (use the `bips` package).";
    py::detail::npy_api::get(); // import numpy now, not in the middle of the first frame
    m.attr("__version__") = BIPS_VERSION_STRING;
    m.attr("LAYOUT_VERSION") = bips::LAYOUT_VERSION;
    m.attr("MAX_CONSUMERS") = bips::MAX_CONSUMERS;
    m.attr("MAX_CAPACITY") = bips::MAX_CAPACITY;
    m.attr("MAX_DIMS") = bips::MAX_DIMS;
    register_exceptions(m);

    py::class_<bips::ProducerStats>(m, "ProducerStats", "Producer counters (a snapshot).")
        .def_readonly("published", &bips::ProducerStats::published)
        .def_readonly("dropped", &bips::ProducerStats::dropped)
        .def_readonly("capacity", &bips::ProducerStats::capacity)
        .def_readonly("free", &bips::ProducerStats::free)
        .def_readonly("in_flight", &bips::ProducerStats::in_flight)
        .def_readonly("consumers", &bips::ProducerStats::consumers)
        .def_readonly("acquire_waits", &bips::ProducerStats::acquire_waits)
        .def_readonly("acquire_wait_ns", &bips::ProducerStats::acquire_wait_ns)
        .def("_asdict", [](const bips::ProducerStats &s) {
            py::dict d;
            d["published"] = s.published;
            d["dropped"] = s.dropped;
            d["capacity"] = s.capacity;
            d["free"] = s.free;
            d["in_flight"] = s.in_flight;
            d["consumers"] = s.consumers;
            d["acquire_waits"] = s.acquire_waits;
            d["acquire_wait_ns"] = s.acquire_wait_ns;
            return d;
        })
        .def("__repr__", [](const py::object &self) { return stats_repr<bips::ProducerStats>("ProducerStats", self); });

    py::class_<bips::ConsumerStats>(m, "ConsumerStats", "Consumer counters (a snapshot).")
        .def_readonly("received", &bips::ConsumerStats::received)
        .def_readonly("dropped", &bips::ConsumerStats::dropped)
        .def_readonly("skipped", &bips::ConsumerStats::skipped)
        .def_readonly("queued", &bips::ConsumerStats::queued)
        .def_readonly("held", &bips::ConsumerStats::held)
        .def_readonly("slot", &bips::ConsumerStats::slot)
        .def_readonly("reconnects", &bips::ConsumerStats::reconnects)
        .def("_asdict", [](const bips::ConsumerStats &s) {
            py::dict d;
            d["received"] = s.received;
            d["dropped"] = s.dropped;
            d["skipped"] = s.skipped;
            d["queued"] = s.queued;
            d["held"] = s.held;
            d["slot"] = s.slot;
            d["reconnects"] = s.reconnects;
            return d;
        })
        .def("__repr__", [](const py::object &self) { return stats_repr<bips::ConsumerStats>("ConsumerStats", self); });

    py::class_<bips::SlotInfo>(m, "SlotInfo", "One consumer slot of a pool.")
        .def_readonly("slot", &bips::SlotInfo::slot)
        .def_readonly("alive", &bips::SlotInfo::alive)
        .def_readonly("pid", &bips::SlotInfo::pid)
        .def_readonly("latest", &bips::SlotInfo::latest)
        .def_readonly("received", &bips::SlotInfo::received)
        .def_readonly("dropped", &bips::SlotInfo::dropped)
        .def_readonly("skipped", &bips::SlotInfo::skipped)
        .def_readonly("queued", &bips::SlotInfo::queued)
        .def_readonly("held", &bips::SlotInfo::held)
        .def_readonly("attached_ns", &bips::SlotInfo::attached_ns, "CLOCK_MONOTONIC ns when the consumer attached.")
        .def_readonly("last_seq", &bips::SlotInfo::last_seq, "seq of the last frame received; -1 if none yet.")
        .def_readonly("last_receive_ns", &bips::SlotInfo::last_receive_ns,
                      "CLOCK_MONOTONIC ns of the last receive; 0 if never.")
        .def("__repr__", [](const bips::SlotInfo &s) {
            return "<bips.SlotInfo slot=" + std::to_string(s.slot) + (s.alive ? " alive" : " dead") +
                   " received=" + std::to_string(s.received) + " queued=" + std::to_string(s.queued) +
                   " held=" + std::to_string(s.held) + ">";
        });

    py::class_<bips::PoolInfo>(m, "PoolInfo", "A pool seen from outside (no attachment).")
        .def_readonly("name", &bips::PoolInfo::name)
        .def_readonly("producer_alive", &bips::PoolInfo::producer_alive)
        .def_readonly("closed", &bips::PoolInfo::closed)
        .def_readonly("capacity", &bips::PoolInfo::capacity)
        .def_readonly("buffer_size", &bips::PoolInfo::buffer_size)
        .def_readonly("meta_size", &bips::PoolInfo::meta_size)
        .def_property_readonly("policy", [](const bips::PoolInfo &i) { return policy_name(i.policy); })
        .def_readonly("mode", &bips::PoolInfo::mode)
        .def_readonly("owner", &bips::PoolInfo::owner)
        .def_readonly("max_consumers", &bips::PoolInfo::max_consumers)
        .def_readonly("consumers", &bips::PoolInfo::consumers)
        .def_readonly("free", &bips::PoolInfo::free)
        .def_readonly("published", &bips::PoolInfo::published)
        .def_readonly("dropped", &bips::PoolInfo::dropped)
        .def_readonly("last_publish_ns", &bips::PoolInfo::last_publish_ns,
                      "CLOCK_MONOTONIC ns of the last publish; 0 if never.")
        .def_readonly("fps", &bips::PoolInfo::fps, "Frames/s over the last full second; 0.0 when idle for over 2 s.")
        .def_readonly("acquire_waits", &bips::PoolInfo::acquire_waits,
                      "Producer acquire calls that found no free buffer and waited.")
        .def_readonly("acquire_wait_ns", &bips::PoolInfo::acquire_wait_ns, "Total ns spent in those waits.")
        .def_property_readonly("shape", [](const bips::PoolInfo &i) { return shape_tuple(i.shape.data(), i.shape.size()); })
        .def_property_readonly("dtype", [](const bips::PoolInfo &i) -> py::object {
            return i.error.empty() ? py::object(numpy_dtype(i.dtype)) : py::none();
        })
        .def_readonly("producer_pid", &bips::PoolInfo::producer_pid)
        .def_readonly("created_ns", &bips::PoolInfo::created_ns)
        .def_readonly("file_size", &bips::PoolInfo::file_size)
        .def_readonly("slots", &bips::PoolInfo::slots)
        .def_property_readonly("error", [](const bips::PoolInfo &i) -> py::object {
            return i.error.empty() ? py::object(py::none()) : py::object(py::str(i.error));
        })
        .def("__repr__", [](const bips::PoolInfo &i) {
            if (!i.error.empty())
                return "<bips.PoolInfo " + i.name + " error=" + i.error + ">";
            return "<bips.PoolInfo " + i.name + " producer=" + (i.producer_alive ? "alive" : "gone") +
                   " consumers=" + std::to_string(i.consumers) + " capacity=" + std::to_string(i.capacity) +
                   " buffer_size=" + std::to_string(i.buffer_size) + ">";
        });

    auto frame = py::class_<PyFrame>(m, "Frame", R"doc(A received, read-only frame that *is* shared memory.

numpy(), np.asarray(frame), memoryview(frame) and the DLPack protocol all point into the pool.
The buffer goes back to the producer when the frame is released *and* every view made from it
is gone (release() never invalidates a live view).)doc");
    def_views(frame);
    frame.def_property_readonly("released", &PyFrame::released)
        .def_property_readonly("nbytes", &PyFrame::nbytes)
        .def_property_readonly("shape", &PyFrame::shape)
        .def_property_readonly("dtype", &PyFrame::dtype)
        .def_property_readonly("meta", &PyFrame::meta)
        .def_property_readonly("index", &PyFrame::index)
        .def_property_readonly("intact", &PyFrame::intact,
                               "True while the producer has not reused this frame's buffer: read "
                               "or copy the data, then check (see docs/security.md).")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyFrame &f, const py::args &) { f.release(); })
        .def("__repr__", &PyFrame::repr);
    enable_buffer_protocol(frame);

    auto buffer = py::class_<PyBuffer>(m, "Buffer", R"doc(A writable buffer acquired from a Producer.

Fill it through numpy(), memoryview(buf) or DLPack, then Producer.publish(buf). Dropped without
publishing, it goes back to the pool. Views kept after publish() keep the buffer from being reused
until they die; do not write through them after publishing.)doc");
    def_views(buffer);
    buffer.def("set_format", &PyBuffer::set_format, py::arg("shape"), py::arg("dtype") = py::none(),
             "Sets this frame's shape and dtype; raises InvalidArgument if it does not fit.")
        .def_property("nbytes", [](const PyBuffer &b) { return b.live().nbytes(); },
                      [](PyBuffer &b, std::size_t n) { b.set_nbytes(n); },
                      "Bytes this frame carries; setting it makes a flat uint8 frame of that size.")
        .def_property_readonly("shape", [](const PyBuffer &b) {
            auto &x = b.live();
            return shape_tuple(x.dims(), x.ndim());
        })
        .def_property_readonly("dtype", [](const PyBuffer &b) { return numpy_dtype(b.live().dtype()); })
        .def_property_readonly("capacity", [](const PyBuffer &b) { return b.live().capacity(); })
        .def_property_readonly("index", [](const PyBuffer &b) { return b.live().index(); })
        .def_property_readonly("published", &PyBuffer::done)
        .def("discard", &PyBuffer::discard, "Gives the buffer back unpublished. Idempotent.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyBuffer &b, const py::args &) { b.discard(); })
        .def("__repr__", [](const PyBuffer &b) {
            if (b.done())
                return std::string("<bips.Buffer (published or discarded)>");
            return "<bips.Buffer index=" + std::to_string(b.live().index()) + " nbytes=" +
                   std::to_string(b.live().nbytes()) + ">";
        });
    enable_buffer_protocol(buffer);

    auto producer = py::class_<bips::Producer>(m, "Producer", "Creates a pool and publishes frames into it.");
    producer
        .def(py::init([](const std::string &name, std::uint32_t capacity, const py::object &shape,
                         const py::object &dtype, std::size_t buffer_size, const std::string &policy,
                         unsigned mode, std::size_t meta_size, std::uint32_t max_consumers) {
                 bips::PoolOptions o;
                 o.capacity = capacity;
                 if (!shape.is_none())
                     o.shape = to_shape(shape);
                 o.dtype = to_dtype(dtype);
                 o.buffer_size = buffer_size;
                 o.policy = to_policy(policy);
                 o.mode = static_cast<mode_t>(mode);
                 o.meta_size = meta_size;
                 o.max_consumers = max_consumers;
                 py::gil_scoped_release nogil;
                 return std::make_unique<bips::Producer>(name, o);
             }),
             py::arg("name"), py::kw_only(), py::arg("capacity") = 8, py::arg("shape") = py::none(),
             py::arg("dtype") = "uint8", py::arg("buffer_size") = 0, py::arg("policy") = "block",
             py::arg("mode") = 0600, py::arg("meta_size") = 0, py::arg("max_consumers") = 8)
        .def("try_acquire", [](bips::Producer &p) -> std::optional<PyBuffer> {
            if (auto b = p.try_acquire())
                return PyBuffer(std::move(*b));
            return std::nullopt;
        }, "A free buffer or None, without waiting.")
        .def("close", [](bips::Producer &p) { p.close(); }, "End of stream. Idempotent.")
        .def_property_readonly("closed", &bips::Producer::closed)
        .def_property_readonly("stats", &bips::Producer::stats)
        .def_property_readonly("name", &bips::Producer::name)
        .def_property_readonly("capacity", &bips::Producer::capacity)
        .def_property_readonly("buffer_size", &bips::Producer::buffer_size)
        .def_property_readonly("meta_size", &bips::Producer::meta_size)
        .def_property_readonly("max_consumers", &bips::Producer::max_consumers)
        .def_property_readonly("policy", [](const bips::Producer &p) { return policy_name(p.policy()); })
        .def_property_readonly("shape", [](const bips::Producer &p) {
            auto s = p.shape();
            return shape_tuple(s.data(), s.size());
        })
        .def_property_readonly("dtype", [](const bips::Producer &p) { return numpy_dtype(p.dtype()); })
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](bips::Producer &p, const py::args &) { p.close(); })
        .def("__repr__", [](const bips::Producer &p) {
            return "<bips.Producer '" + p.name() + "' capacity=" + std::to_string(p.capacity()) +
                   " buffer_size=" + std::to_string(p.buffer_size()) + " policy=" + policy_name(p.policy()) +
                   (p.closed() ? " closed>" : ">");
        });

    auto consumer = py::class_<bips::Consumer>(m, "Consumer", "Attaches to a pool and receives every frame in order.");
    consumer
        .def(py::init([](const std::string &name, bool latest, std::optional<double> timeout,
                         bool reconnect, double spin, const py::object &owner) {
                 bips::ConsumerOptions o;
                 o.latest = latest;
                 o.reconnect = reconnect;
                 o.spin = seconds(spin);
                 o.owner = owner_option(owner);
                 if (timeout && *timeout == 0) {
                     py::gil_scoped_release nogil;
                     return std::make_unique<bips::Consumer>(name, o);
                 }
                 // Wait for the pool in slices so Ctrl-C works.
                 bips::validate_name(name);
                 auto c = wait_sliced<std::unique_ptr<bips::Consumer>>(timeout, [&](bips::Duration slice) {
                     bips::ConsumerOptions oo = o;
                     oo.wait = slice;
                     try {
                         return std::optional<std::unique_ptr<bips::Consumer>>(
                             std::make_unique<bips::Consumer>(name, oo));
                     } catch (const bips::Timeout &) {
                     } catch (const bips::PoolNotFound &) {
                     } catch (const bips::ProducerGone &) {
                     }
                     return std::optional<std::unique_ptr<bips::Consumer>>();
                 });
                 if (!c)
                     throw bips::Timeout("pool '" + name + "' with a live producer did not appear within the timeout");
                 return std::move(*c);
             }),
             py::arg("name"), py::kw_only(), py::arg("latest") = false, py::arg("timeout") = 0.0,
             py::arg("reconnect") = false, py::arg("spin") = 0.0, py::arg("owner") = py::none())
        .def("try_receive", [](bips::Consumer &c) -> std::optional<PyFrame> {
            if (auto f = c.try_receive())
                return PyFrame(std::move(*f));
            return std::nullopt;
        }, "The next frame if one is queued, else None.")
        .def("wait", [](bips::Consumer &c, std::optional<double> timeout) {
            if (timeout)
                seconds(*timeout);
            return wait_sliced<bool>(timeout, [&](bips::Duration slice) -> std::optional<bool> {
                       if (c.wait(slice))
                           return true;
                       return std::nullopt;
                   }).has_value();
        }, py::arg("timeout") = py::none(),
             "Waits up to `timeout` seconds (None: forever) until receive() would return at once: a frame "
             "is queued or the stream has ended. True if so, False on timeout. Receives nothing.")
        .def("__iter__", [](py::object self) { return self; })
        .def("__next__", [](bips::Consumer &c) {
            try {
                return do_receive(c, std::nullopt);
            } catch (const bips::ProducerGone &) {
                throw py::stop_iteration();
            }
        })
        .def("close", [](bips::Consumer &c) { c.close(); },
             "Detaches; frames still held stay valid until released. Idempotent.")
        .def_property_readonly("closed", &bips::Consumer::closed)
        .def_property_readonly("stats", &bips::Consumer::stats)
        .def_property_readonly("name", &bips::Consumer::name)
        .def_property_readonly("capacity", &bips::Consumer::capacity)
        .def_property_readonly("buffer_size", &bips::Consumer::buffer_size)
        .def_property_readonly("policy", [](const bips::Consumer &c) { return policy_name(c.policy()); })
        .def_property_readonly("shape", [](const bips::Consumer &c) {
            auto s = c.shape();
            return shape_tuple(s.data(), s.size());
        })
        .def_property_readonly("dtype", [](const bips::Consumer &c) { return numpy_dtype(c.dtype()); })
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](bips::Consumer &c, const py::args &) { c.close(); })
        .def("__repr__", [](const bips::Consumer &c) {
            return "<bips.Consumer '" + c.name() + "'" + (c.closed() ? " closed>" : ">");
        });

    install_fast_paths(producer, consumer, frame, buffer);

    // The waiter's thread uses the consumer: the Python Consumer owns its waiter (a slot, freed
    // before the consumer itself), and no reference goes the other way, so no cycle keeps a
    // consumer attached after its last use.
    py::class_<AsyncWaiter>(m, "_AsyncWaiter", "asyncio support of Consumer (internal).")
        .def(py::init<bips::Consumer &>(), py::arg("consumer"))
        .def("fileno", &AsyncWaiter::fileno)
        .def("arm", &AsyncWaiter::arm)
        .def("disarm", &AsyncWaiter::disarm)
        .def("clear", &AsyncWaiter::clear)
        .def("close", &AsyncWaiter::close, py::call_guard<py::gil_scoped_release>());

    m.def("list_pools", &bips::list_pools, "Every bips pool under /dev/shm, read without attaching.");
    m.def("pool_info", &bips::pool_info, py::arg("name"), "One pool's details with a row per consumer slot.");
    m.def("reclaim_dead_consumers", &bips::reclaim_dead_consumers, py::arg("name"),
          "Gives back what dead consumers of pool `name` held; returns the slots reclaimed.");
    m.def("remove_stale_pool", &bips::remove_stale_pool, py::arg("name"),
          "Removes pool `name` if no producer and no consumer is alive; True if removed.");
    m.def("validate_name", &bips::validate_name, py::arg("name"), "Raises InvalidArgument for a bad pool name.");
    bind_video(m);
}
