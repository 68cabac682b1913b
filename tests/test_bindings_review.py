# SPDX-License-Identifier: Apache-2.0
"""Regression tests from an adversarial review of the plain-CPython bindings: what a careless
user (or an attacker with only the Python API) can do to them must give a clean error, never a
crash, a use after free or an exception left set."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import bips
import numpy as np
import pytest
from helpers import child, read_message, reap

DEADLINE = 30.0  # hard limit for every child


def run_child(code: str, *args: Any) -> tuple[int, str]:
    with child(code, *args) as proc:
        rc, _out, err = reap(proc, timeout=DEADLINE)
    return rc, err


def test_consumer_init_twice_refused_while_another_thread_receives(pool_name: str) -> None:
    # __init__ again used to delete the C++ consumer under a receive() blocked in another
    # thread (heap use after free, seen with ASan); now the second __init__ is refused.
    with bips.Producer(pool_name, capacity=2, shape=(4,)) as prod:
        cons = bips.Consumer(pool_name)
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(_receive(cons, 2.0)))
        t.start()
        try:
            with pytest.raises(bips.InvalidArgument, match="already"):
                cons.__init__(pool_name)  # type: ignore[misc]
            with pytest.raises(bips.InvalidArgument, match="already"):
                bips._core.Consumer.__init__(cons, pool_name)
            buf = prod.acquire(timeout=1.0)
            prod.publish(buf)
        finally:
            t.join(timeout=10.0)
        assert not t.is_alive()
        assert isinstance(result[0], bips.Frame)
        result.clear()
        cons.close()


def _receive(cons: Any, timeout: float) -> Any:
    try:
        return cons.receive(timeout=timeout)
    except Exception as e:  # noqa: BLE001 (reported to the test thread)
        return e


def test_producer_init_twice_refused(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=1, shape=(4,)) as prod:
        held = prod.acquire(timeout=1.0)
        with pytest.raises(bips.InvalidArgument, match="already"):
            prod.__init__(pool_name + "b", capacity=1, shape=(4,))  # type: ignore[misc]
        assert prod.name == pool_name  # still the first pool
        prod.publish(held)


def test_async_waiter_outliving_its_consumer(pool_name: str) -> None:
    # The asyncio waiter's thread used the C++ consumer after the Python Consumer was freed:
    # a waiter kept elsewhere (here directly; in receive_async, the coroutine's local outlives
    # `self` when the Consumer was a temporary) crashed the process with SIGSEGV.
    code = """
import asyncio, gc
name = sys.argv[1]
p = bips.Producer(name, capacity=2, shape=(4,))
waiters = []
for i in range(5):
    c = bips.Consumer(name)
    w = bips._core._AsyncWaiter(c)
    w.arm()
    waiters.append(w)
    del c
    gc.collect()
    junk = [bytearray(256) for _ in range(1000)]
time.sleep(0.5)
for w in waiters:
    w.close()
del waiters

async def once():
    try:
        await bips.Consumer(name).receive_async(0.05)  # a temporary consumer
    except bips.Timeout:
        pass
    time.sleep(0.15)  # the waiter's thread finishes its last wait meanwhile

async def main():
    for i in range(5):
        await once()

asyncio.run(main())
p.close()
emit(ok=True)
"""
    rc, err = run_child(code, pool_name)
    assert rc == 0, err


def test_array_protocol_with_failing_copy_flag(pool_name: str) -> None:
    # copy= whose truth value raises: the error used to stay set while numpy was called, and
    # came out as SystemError ("returned a result with an exception set").
    class Bad:
        def __bool__(self) -> bool:
            raise ZeroDivisionError("no truth value")

    with bips.Producer(pool_name, capacity=2, shape=(4,)) as prod, bips.Consumer(pool_name) as cons:
        buf = prod.acquire(timeout=1.0)
        with pytest.raises(ZeroDivisionError):
            buf.__array__(copy=Bad())
        with pytest.raises(ZeroDivisionError):
            buf.__dlpack__(copy=Bad())
        prod.publish(buf)
        with cons.receive(timeout=1.0) as frame:
            with pytest.raises(ZeroDivisionError):
                frame.__array__(copy=Bad())
            with pytest.raises(ZeroDivisionError):
                frame.__dlpack__(copy=Bad(), max_version=(1, 0))
            assert frame.__array__(copy=True).tolist() == [0, 0, 0, 0]


def test_bad_integer_arguments_give_clear_errors(pool_name: str) -> None:
    # These went through pybind11's cast and came out as RuntimeError("Unable to cast Python
    # instance of type <class 'int'> to C++ type '?'").
    with bips.Producer(pool_name, capacity=2, shape=(4,)) as prod:
        buf = prod.acquire(timeout=1.0)
        with pytest.raises(TypeError):
            buf.nbytes = "3"  # type: ignore[assignment]
        with pytest.raises(TypeError):
            buf.nbytes = 1.5  # type: ignore[assignment]
        with pytest.raises(OverflowError):
            buf.nbytes = -1
        with pytest.raises(TypeError):
            buf.set_format(("a", 2))
        with pytest.raises(OverflowError):
            buf.set_format((2**64,))
        with pytest.raises(TypeError):
            bips.Producer(pool_name + "x", shape=["a"])
        with pytest.raises(TypeError):
            buf.__dlpack__(max_version=("a", 0))
        with pytest.raises(OverflowError):
            buf.__dlpack__(max_version=(2**70, 0))
        with pytest.raises(bips.InvalidArgument):
            bips.Consumer(pool_name, owner=2**80)
        buf.nbytes = np.uint8(3)  # any integer type still works
        assert buf.nbytes == 3
        buf.set_format((np.int64(2), 2))
        assert buf.shape == (2, 2)
        buf.discard()


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


def _simple_view_ndim(obj: Any) -> tuple[int, int]:
    api = ctypes.pythonapi
    api.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    api.PyBuffer_Release.argtypes = [ctypes.POINTER(_PyBuffer)]
    view = _PyBuffer()
    assert api.PyObject_GetBuffer(obj, ctypes.byref(view), 0) == 0  # PyBUF_SIMPLE
    try:
        return view.ndim, view.len
    finally:
        api.PyBuffer_Release(ctypes.byref(view))


def test_simple_buffer_request_is_one_dimensional(pool_name: str) -> None:
    # A PyBUF_SIMPLE request gets no shape, so ndim must be 1 (as PyBuffer_FillInfo does);
    # ndim=2 with shape=NULL made PyMemoryView_FromBuffer read through a NULL shape (SIGSEGV).
    with (
        bips.Producer(pool_name, capacity=2, shape=(2, 3)) as prod,
        bips.Consumer(pool_name) as cons,
    ):
        buf = prod.acquire(timeout=1.0)
        assert _simple_view_ndim(buf) == (1, 6)
        prod.publish(buf)
        with cons.receive(timeout=1.0) as frame:
            assert _simple_view_ndim(frame) == (1, 6)
            assert memoryview(frame).shape == (2, 3)  # full requests keep the shape
    code = """
import ctypes
class PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]
api = ctypes.pythonapi
api.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(PyBuffer), ctypes.c_int]
api.PyMemoryView_FromBuffer.argtypes = [ctypes.POINTER(PyBuffer)]
api.PyMemoryView_FromBuffer.restype = ctypes.py_object
api.PyBuffer_Release.argtypes = [ctypes.POINTER(PyBuffer)]
name = sys.argv[1]
with bips.Producer(name, capacity=2, shape=(2, 3)) as p, bips.Consumer(name) as c:
    b = p.acquire(timeout=1.0)
    b.numpy()[:] = 5
    p.publish(b)
    with c.receive(timeout=1.0) as f:
        v = PyBuffer()
        assert api.PyObject_GetBuffer(f, ctypes.byref(v), 0) == 0
        m = api.PyMemoryView_FromBuffer(ctypes.byref(v))
        out = m.tolist()
        m.release()
        api.PyBuffer_Release(ctypes.byref(v))
emit(values=out)
"""
    rc, err = run_child(code, pool_name)
    assert rc == 0, err


def test_pybind11_classes_cannot_be_made_uninitialised() -> None:
    # pybind11 lets Type.__new__(Type) make an instance whose C++ value was never constructed:
    # _AsyncWaiter's methods then crashed (SIGSEGV) and the stats/info getters read
    # uninitialised memory (garbage numbers, "Could not allocate list object").
    code = """
import bips._core as core
results = {}
for name in ("ProducerStats", "ConsumerStats", "SlotInfo", "PoolInfo"):
    cls = getattr(core, name)
    for make in (lambda: cls.__new__(cls), lambda: cls()):
        try:
            make()
            results[name] = "made"
        except TypeError:
            pass
W = core._AsyncWaiter
w = W.__new__(W)
for method in ("fileno", "arm", "disarm", "clear", "close"):
    try:
        getattr(w, method)()
        results[method] = "ran"
    except bips.InvalidArgument:
        pass
try:
    W.fileno(5)
    results["foreign self"] = "ran"
except TypeError:
    pass
emit(results=results)
"""
    with child(code) as proc:
        msg = read_message(proc, timeout=DEADLINE)
        rc, _out, err = reap(proc, timeout=DEADLINE)
    assert rc == 0, err
    assert msg["results"] == {}


class _Capsule:
    """Hands numpy an already made DLPack capsule."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)


def test_dlpack_arguments_cannot_recycle_the_memory(pool_name: str) -> None:
    # __dlpack__'s arguments run Python code (copy's __bool__, max_version's __index__) after
    # the view's memory was chosen but before its keeper was referenced: releasing the frame
    # (or publishing the buffer) there freed the keeper, and the capsule pointed at a buffer
    # the producer then reused (use after free of the keeper; the view saw other frames).
    with (
        bips.Producer(pool_name, capacity=2, shape=(64,)) as prod,
        bips.Consumer(pool_name) as cons,
    ):

        def cycle(value: int) -> None:  # every buffer the producer may hand out, filled
            for _ in range(2):
                try:
                    b = prod.acquire(timeout=0.2)
                except bips.Timeout:
                    return  # the rest is pinned
                b.numpy()[:] = value
                prod.publish(b)
                cons.receive(timeout=1.0).release()

        buf = prod.acquire(timeout=1.0)
        buf.numpy()[:] = 1
        prod.publish(buf)
        frame = cons.receive(timeout=1.0)

        class ReleasesFrame:
            def __bool__(self) -> bool:
                frame.release()
                return False

        view = np.from_dlpack(_Capsule(frame.__dlpack__(max_version=(1, 0), copy=ReleasesFrame())))
        cycle(7)
        assert (view == 1).all()
        del view

        class PublishesBuffer:
            def __index__(self) -> int:
                prod.publish(buf)
                return 1

        buf = prod.acquire(timeout=1.0)
        buf.numpy()[:] = 2
        view = np.from_dlpack(_Capsule(buf.__dlpack__(max_version=(PublishesBuffer(), 0))))
        cons.receive(timeout=1.0).release()
        cycle(9)
        assert (view == 2).all()
        del view


def test_interrupt_check_in_a_child_forked_from_a_thread(pool_name: str) -> None:
    # Signal handlers run in the main thread only, and only it runs the interrupt check; in a
    # child of fork() that is the thread that forked. A handler's exception must end a
    # blocking receive() there (not the timeout).
    code = """
import threading
name = sys.argv[1]
p = bips.Producer(name, capacity=2, shape=(4,))
result = {}
def in_thread():
    pid = os.fork()
    if pid == 0:
        def handler(sig, frame):
            raise RuntimeError("from the handler")
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        code = 1
        try:
            bips.Consumer(name).receive(timeout=10.0)
        except RuntimeError:
            code = 0
        except bips.Timeout:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    result["child"] = os.waitstatus_to_exitcode(status)
t = threading.Thread(target=in_thread)
t.start()
t.join()
p.close()
emit(**result)
"""
    with child(code, pool_name) as proc:
        msg = read_message(proc, timeout=DEADLINE)
        rc, _out, err = reap(proc, timeout=DEADLINE)
    assert rc == 0, err
    assert msg["child"] == 0


def test_array_protocol_copy_false_never_copies(pool_name: str) -> None:
    # numpy 2's __array__(dtype, copy=False) must raise when a copy is needed; it returned a
    # converted copy silently (zero copy is a promise to whoever asks for copy=False).
    with bips.Producer(pool_name, capacity=2, shape=(4,)) as prod, bips.Consumer(pool_name) as cons:
        prod.publish(prod.acquire(timeout=1.0))
        with cons.receive(timeout=1.0) as frame:
            with pytest.raises(ValueError, match="copy"):
                frame.__array__(np.float32, copy=False)
            same = frame.__array__(np.uint8, copy=False)
            assert np.shares_memory(same, frame.numpy())
            assert not np.shares_memory(frame.__array__(np.uint8, copy=True), frame.numpy())
            assert frame.__array__(np.float32).dtype == np.float32
            del same
