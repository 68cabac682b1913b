# SPDX-License-Identifier: Apache-2.0
"""The fake CUDA driver (tests/fake_cuda), tested on its own through ctypes, so that the GPU-pool
tests can trust it: devices and UUIDs, contexts, allocations shared with another process, access
that is denied until granted, streams (FIFO order, host functions, legacy default stream
ordering), the error codes of misuse, and no leaks."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from fake_cuda import driver as fc

GRAN = fc.GRANULARITY
TESTS = pathlib.Path(__file__).resolve().parent

# Children load the library themselves; argv[1] is its path, the rest the test's arguments.
CHILD_PRELUDE = f"""
import ctypes, json, os, sys
sys.path.insert(0, {str(TESTS)!r})
from fake_cuda import driver as fc
cu = fc.load(sys.argv[1])
args = sys.argv[2:]
def emit(**fields):
    print(json.dumps(fields), flush=True)
"""


def run_child(
    lib: pathlib.Path,
    code: str,
    *args: object,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Runs code in a fresh Python with the fake driver loaded; FAKE_CUDA_* of this process are not
    passed on, only those in env."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_CUDA_")}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), str(lib), *map(str, args)],
        check=False,
        env=child_env,
        pass_fds=pass_fds,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def child_result(lib: pathlib.Path, code: str, *args: object, **kw: Any) -> dict[str, Any]:
    """run_child, which must succeed; returns the JSON of its last emit()."""
    r = run_child(lib, code, *args, **kw)
    assert r.returncode == 0, f"child failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    lines = r.stdout.strip().splitlines()
    assert lines, f"child printed nothing:\n{r.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def in_thread(
    fn: Callable[[], Any],
    timeout: float = 10.0,
    cu: ctypes.CDLL | None = None,
    ctx: ctypes.c_void_p | None = None,
) -> Any:
    """fn() on a new thread, with ctx current there if given (else none); its result, or its
    exception raised here. Fails if it does not return within timeout (a hung driver call)."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            if cu is not None and ctx is not None:
                fc.check(cu.cuCtxPushCurrent_v2(ctx))
            out["value"] = fn()
            if cu is not None and ctx is not None:
                fc.check(cu.cuCtxPopCurrent_v2(None))
        except BaseException as e:  # noqa: BLE001 - raised again by the caller
            out["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} did not return within {timeout} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


# ---- in-process fixtures ---------------------------------------------------------------------

LEAK_COUNTERS = ("live_allocations", "live_reservations", "maps", "live_streams")


@pytest.fixture(scope="module")
def cu(fake_cuda: pathlib.Path) -> ctypes.CDLL:
    """The fake driver loaded into the test process and initialised (FAKE_CUDA_* of the
    environment apply; the tests that set them run in children)."""
    lib = fc.load(str(fake_cuda))
    fc.check(lib.cuInit(0), "cuInit")
    return lib


@pytest.fixture
def ctx(cu: ctypes.CDLL) -> Iterator[ctypes.c_void_p]:
    """Device 0's primary context, current on the test's thread; afterwards no test may leave
    allocations, reservations, mappings, streams or queued work behind."""
    before = {k: fc.stat(cu, k) for k in LEAK_COUNTERS}
    context = fc.open_context(cu, 0)
    yield context
    assert wait_for(lambda: fc.stat(cu, "ops_pending") == 0), "work still queued"
    popped = fc.CUcontext()
    fc.check(cu.cuCtxPopCurrent_v2(ctypes.byref(popped)))
    assert popped.value == context.value
    fc.check(cu.cuDevicePrimaryCtxRelease_v2(0))
    after = {k: fc.stat(cu, k) for k in LEAK_COUNTERS}
    assert after == before, "the test leaked driver objects"


@contextlib.contextmanager
def device_memory(
    cu: ctypes.CDLL, size: int = GRAN, flags: int = fc.ACCESS_READWRITE
) -> Iterator[tuple[int, int]]:
    """(handle, address) of a new allocation mapped with the given access; all undone after."""
    handle = fc.create(cu, size)
    try:
        ptr = fc.map_handle(cu, handle, size, flags)
        try:
            yield handle, ptr
        finally:
            fc.unmap(cu, ptr, size)
    finally:
        fc.check(cu.cuMemRelease(handle), "cuMemRelease")


def new_stream(cu: ctypes.CDLL, flags: int = 0) -> int:
    s = fc.CUstream()
    fc.check(cu.cuStreamCreate(ctypes.byref(s), flags), "cuStreamCreate")
    assert s.value
    return int(s.value)


def finish(cu: ctypes.CDLL, stream: int | None, timeout: float = 10.0) -> None:
    """Waits (with a deadline) until the stream's queued work is done."""
    assert wait_for(lambda: cu.cuStreamQuery(stream) != fc.NOT_READY, timeout), "stream stuck"
    fc.check(cu.cuStreamQuery(stream), "cuStreamQuery")


class HostFuncs:
    """Host functions for cuLaunchHostFunc that record (tag, thread, extra) in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []
        self._keep: list[Any] = []  # ctypes callbacks must outlive their call

    def make(self, tag: str, probe: Callable[[], Any] = lambda: None) -> Any:
        def fn(_: int | None) -> None:
            self.calls.append((tag, threading.get_ident(), probe()))

        cb = fc.HOST_FN(fn)
        self._keep.append(cb)
        return cb

    def tags(self) -> list[str]:
        return [c[0] for c in self.calls]


# ---- the library itself ----------------------------------------------------------------------


def test_exports_the_driver_entry_points_and_nothing_else(fake_cuda: pathlib.Path) -> None:
    lib = fc.load(str(fake_cuda))  # declares every prototype: each name resolves
    # Old-ABI names must be missing, so that bips cannot bind to them by mistake against the fake
    # (the real cuMemcpyDtoH, for one, takes a 32-bit device pointer).
    for old in ("cuMemcpyDtoH", "cuCtxPushCurrent", "cuStreamDestroy", "cuMemsetD8"):
        assert not hasattr(lib, old), old
    r = subprocess.run(
        ["nm", "-D", "--defined-only", str(fake_cuda)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if r.returncode == 0:
        exported = {line.split()[-1] for line in r.stdout.splitlines() if " T " in line}
        assert exported == set(fc.EXPORTED)


def test_struct_layouts_match_cuda_h() -> None:
    assert ctypes.sizeof(fc.CUmemAllocationProp) == 32
    assert fc.CUmemAllocationProp.location.offset == 8
    assert fc.CUmemAllocationProp.win32HandleMetaData.offset == 16
    assert fc.CUmemAllocationProp.allocFlags.offset == 24
    assert ctypes.sizeof(fc.CUmemAccessDesc) == 12
    assert ctypes.sizeof(fc.CUuuid) == 16


def test_devices(cu: ctypes.CDLL) -> None:
    n = ctypes.c_int()
    fc.check(cu.cuDeviceGetCount(ctypes.byref(n)))
    assert n.value >= 1
    dev = fc.CUdevice()
    fc.check(cu.cuDeviceGet(ctypes.byref(dev), 0))
    assert dev.value == 0
    assert cu.cuDeviceGet(ctypes.byref(dev), n.value) == fc.INVALID_DEVICE
    assert cu.cuDeviceGet(None, 0) == fc.INVALID_VALUE
    u1, u2 = fc.CUuuid(), fc.CUuuid()
    fc.check(cu.cuDeviceGetUuid(ctypes.byref(u1), 0))
    fc.check(cu.cuDeviceGetUuid_v2(ctypes.byref(u2), 0))
    assert u1.bytes == u2.bytes and len(bytes(u1)) == 16 and any(bytes(u1))
    assert cu.cuDeviceGetUuid(ctypes.byref(u1), -1) == fc.INVALID_DEVICE
    value = ctypes.c_int(-1)
    for attr in (fc.ATTR_VMM_SUPPORTED, fc.ATTR_POSIX_FD_SUPPORTED):
        fc.check(cu.cuDeviceGetAttribute(ctypes.byref(value), attr, 0))
        assert value.value == 1
    fc.check(cu.cuDeviceGetAttribute(ctypes.byref(value), 104, 0))  # win32 handles: no
    assert value.value == 0
    assert cu.cuDeviceGetAttribute(ctypes.byref(value), 0, 0) == fc.INVALID_VALUE
    assert cu.cuDeviceGetAttribute(ctypes.byref(value), 102, 99) == fc.INVALID_DEVICE
    name = ctypes.create_string_buffer(64)
    fc.check(cu.cuDeviceGetName(name, 64, 0))
    assert b"fake" in name.value
    fc.check(cu.cuDeviceGetName(name, 5, 0))
    assert len(name.value) == 4  # truncated and terminated
    assert cu.cuDeviceGetName(name, 0, 0) == fc.INVALID_VALUE
    version = ctypes.c_int()
    fc.check(cu.cuDriverGetVersion(ctypes.byref(version)))
    assert version.value == 12040


def test_error_names(cu: ctypes.CDLL) -> None:
    s = ctypes.c_char_p()
    fc.check(cu.cuGetErrorName(fc.INVALID_CONTEXT, ctypes.byref(s)))
    assert s.value == b"CUDA_ERROR_INVALID_CONTEXT"
    fc.check(cu.cuGetErrorString(fc.NOT_READY, ctypes.byref(s)))
    assert s.value == b"device not ready"
    assert cu.cuGetErrorName(12345, ctypes.byref(s)) == fc.INVALID_VALUE
    assert s.value is None


def test_before_init_and_init_failures(fake_cuda: pathlib.Path) -> None:
    code = """
    n = ctypes.c_int()
    before = cu.cuDeviceGetCount(ctypes.byref(n))
    version = ctypes.c_int()
    v = cu.cuDriverGetVersion(ctypes.byref(version))  # needs no cuInit
    bad_flags = cu.cuInit(1)
    init = [cu.cuInit(0), cu.cuInit(0)]  # a failure is sticky, as in the driver
    after = cu.cuDeviceGetCount(ctypes.byref(n))
    emit(before=before, version=(v, version.value), bad_flags=bad_flags, init=init, after=after,
         count=n.value)
    """
    r = child_result(fake_cuda, code)
    assert r == {
        "before": fc.NOT_INITIALIZED,
        "version": [0, 12040],
        "bad_flags": fc.INVALID_VALUE,
        "init": [0, 0],
        "after": 0,
        "count": 1,
    }
    r = child_result(fake_cuda, code, env={"FAKE_CUDA_FAIL_INIT": "999"})
    assert r["init"] == [999, 999] and r["after"] == fc.NOT_INITIALIZED
    r = child_result(fake_cuda, code, env={"FAKE_CUDA_DEVICES": "0"})
    assert r["init"] == [fc.NO_DEVICE, fc.NO_DEVICE] and r["after"] == fc.NOT_INITIALIZED


def test_several_devices_have_distinct_uuids_from_the_seed(fake_cuda: pathlib.Path) -> None:
    code = """
    fc.check(cu.cuInit(0))
    n = ctypes.c_int()
    fc.check(cu.cuDeviceGetCount(ctypes.byref(n)))
    uuids = []
    for i in range(n.value):
        u = fc.CUuuid()
        fc.check(cu.cuDeviceGetUuid_v2(ctypes.byref(u), i))
        uuids.append(bytes(u).hex())
    emit(uuids=uuids)
    """
    three = child_result(fake_cuda, code, env={"FAKE_CUDA_DEVICES": "3"})["uuids"]
    assert len(three) == 3 and len(set(three)) == 3
    again = child_result(fake_cuda, code, env={"FAKE_CUDA_DEVICES": "3"})["uuids"]
    assert again == three  # stable: a consumer process sees the producer's GPUs
    other = child_result(
        fake_cuda, code, env={"FAKE_CUDA_DEVICES": "3", "FAKE_CUDA_UUID_SEED": "elsewhere"}
    )["uuids"]
    assert not set(other) & set(three)  # "other" GPUs


# ---- contexts --------------------------------------------------------------------------------


def test_context_stack_is_per_thread(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    def fresh_thread() -> None:
        cur = fc.CUcontext(1234)
        fc.check(cu.cuCtxGetCurrent(ctypes.byref(cur)))
        assert cur.value is None  # the test thread's context is not this thread's
        s, p = fc.CUstream(), fc.CUdeviceptr()
        assert cu.cuStreamCreate(ctypes.byref(s), 0) == fc.INVALID_CONTEXT
        assert cu.cuMemAddressReserve(ctypes.byref(p), GRAN, 0, 0, 0) == fc.INVALID_CONTEXT
        assert cu.cuStreamQuery(None) == fc.INVALID_CONTEXT
        assert cu.cuCtxSynchronize() == fc.INVALID_CONTEXT
        assert cu.cuCtxPopCurrent_v2(None) == fc.INVALID_CONTEXT  # empty stack
        assert cu.cuCtxPushCurrent_v2(None) == fc.INVALID_VALUE
        assert cu.cuCtxPushCurrent_v2(ctypes.c_void_p(0x1000)) == fc.INVALID_CONTEXT
        fc.check(cu.cuCtxPushCurrent_v2(ctx))
        fc.check(cu.cuCtxGetCurrent(ctypes.byref(cur)))
        assert cur.value == ctx.value
        fc.check(cu.cuStreamQuery(None))
        popped = fc.CUcontext()
        fc.check(cu.cuCtxPopCurrent_v2(ctypes.byref(popped)))
        assert popped.value == ctx.value
        fc.check(cu.cuCtxSetCurrent(ctx))  # on an empty stack: pushes
        fc.check(cu.cuCtxGetCurrent(ctypes.byref(cur)))
        assert cur.value == ctx.value
        fc.check(cu.cuCtxSetCurrent(None))  # pops
        fc.check(cu.cuCtxGetCurrent(ctypes.byref(cur)))
        assert cur.value is None
        fc.check(cu.cuCtxSetCurrent(None))  # nothing to pop: fine

    in_thread(fresh_thread)
    cur = fc.CUcontext()
    fc.check(cu.cuCtxGetCurrent(ctypes.byref(cur)))
    assert cur.value == ctx.value


def test_primary_context_retain_and_release(fake_cuda: pathlib.Path) -> None:
    r = child_result(
        fake_cuda,
        """
        ctx = fc.open_context(cu, 0)
        again = fc.CUcontext()
        fc.check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(again), 0))
        same = again.value == ctx.value
        refs = fc.stat(cu, "primary_ctx_refs")
        fc.check(cu.cuDevicePrimaryCtxRelease_v2(0))
        fc.check(cu.cuDevicePrimaryCtxRelease_v2(0))  # inactive now, still current
        s = fc.CUstream()
        emit(same=same, refs=refs, after=fc.stat(cu, "primary_ctx_refs"),
             create=cu.cuStreamCreate(ctypes.byref(s), 0),
             over_release=cu.cuDevicePrimaryCtxRelease_v2(0),
             bad_device=cu.cuDevicePrimaryCtxRelease_v2(7))
        """,
    )
    assert r == {
        "same": True,
        "refs": 2,
        "after": 0,
        "create": fc.CONTEXT_IS_DESTROYED,
        "over_release": fc.INVALID_CONTEXT,
        "bad_device": fc.INVALID_DEVICE,
    }


# ---- memory ----------------------------------------------------------------------------------


def test_allocate_map_copy_and_set(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    g = ctypes.c_size_t()
    prop = fc.alloc_prop(0)
    fc.check(cu.cuMemGetAllocationGranularity(ctypes.byref(g), ctypes.byref(prop), 0))
    assert g.value == GRAN
    fc.check(cu.cuMemGetAllocationGranularity(ctypes.byref(g), ctypes.byref(prop), 1))
    assert g.value == GRAN
    base = {k: fc.stat(cu, k) for k in ("live_allocations", "maps", "live_reservations")}
    with device_memory(cu, 2 * GRAN) as (_, ptr):
        assert ptr % GRAN == 0
        assert fc.stat(cu, "live_allocations") == base["live_allocations"] + 1
        assert fc.stat(cu, "maps") == base["maps"] + 1
        assert fc.stat(cu, "live_reservations") == base["live_reservations"] + 1
        ctypes.memset(ptr, 0, 2 * GRAN)  # the fake's device memory is host memory
        src = ctypes.create_string_buffer(b"hello, device", 13)
        fc.check(cu.cuMemcpyHtoD_v2(ptr + 100, src, 13))
        src.raw = b"X" * 13  # the synchronous copy staged the source: this changes nothing
        fc.check(cu.cuMemsetD8_v2(ptr + GRAN, 7, 5))  # ordered after the copy (legacy stream)
        out = ctypes.create_string_buffer(13)
        fc.check(cu.cuMemcpyDtoH_v2(out, ptr + 100, 13))  # waits for the copy before it
        assert out.raw == b"hello, device"
        fc.check(cu.cuMemcpyDtoH_v2(out, ptr + GRAN - 1, 7))  # across nothing special
        assert out.raw[:7] == b"\0" + b"\7" * 5 + b"\0"
        assert ctypes.string_at(ptr + 100, 13) == b"hello, device"
        fc.check(cu.cuMemcpyHtoD_v2(ptr, src, 0))  # nothing to do
        fc.check(cu.cuCtxSynchronize())


def test_release_while_mapped_keeps_the_memory(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    live = fc.stat(cu, "live_allocations")
    handle = fc.create(cu)
    ptr = fc.map_handle(cu, handle, GRAN, fc.ACCESS_READWRITE)
    fc.check(cu.cuMemRelease(handle))  # the mapping holds its own reference, as in the driver
    assert fc.stat(cu, "live_allocations") == live
    assert cu.cuMemRelease(handle) == fc.INVALID_VALUE  # the handle is gone
    ctypes.memset(ptr, 0x5A, GRAN)
    assert ctypes.string_at(ptr + GRAN - 1, 1) == b"\x5a"
    fc.unmap(cu, ptr, GRAN)


def test_async_copies_use_the_host_buffer_when_the_stream_gets_there(
    cu: ctypes.CDLL, ctx: ctypes.c_void_p
) -> None:
    """The *Async copies read host memory when they run (as for pinned memory), so the caller must
    keep it alive and unchanged until the stream has done them."""
    s = new_stream(cu)
    with device_memory(cu) as (_, ptr):
        src = ctypes.create_string_buffer(b"AAAA", 4)
        dst = ctypes.create_string_buffer(4)
        fc.check(cu.fake_cuda_enqueue_sleep(s, 100_000))
        fc.check(cu.cuMemcpyHtoDAsync_v2(ptr, src, 4, s))
        fc.check(cu.cuMemcpyDtoHAsync_v2(dst, ptr, 4, s))
        src.raw = b"BBBB"
        assert dst.raw == b"\0\0\0\0"
        finish(cu, s)
        assert dst.raw == b"BBBB"
        fc.check(cu.cuMemsetD8Async(ptr, 0x33, 4, s))
        fc.check(cu.cuStreamSynchronize(s))
        assert ctypes.string_at(ptr, 4) == b"3333"
    fc.check(cu.cuStreamDestroy_v2(s))


def test_memory_misuse_error_codes(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    h, p, g = fc.CUhandle(), fc.CUdeviceptr(), ctypes.c_size_t()
    prop = fc.alloc_prop(0)
    ref = ctypes.byref
    assert cu.cuMemGetAllocationGranularity(ref(g), None, 0) == fc.INVALID_VALUE
    assert cu.cuMemGetAllocationGranularity(ref(g), ref(prop), 2) == fc.INVALID_VALUE
    assert cu.cuMemGetAllocationGranularity(ref(g), ref(fc.alloc_prop(9)), 0) == fc.INVALID_DEVICE
    # cuMemCreate
    assert cu.cuMemCreate(ref(h), GRAN // 2, ref(prop), 0) == fc.INVALID_VALUE
    assert cu.cuMemCreate(ref(h), GRAN + 4096, ref(prop), 0) == fc.INVALID_VALUE
    assert cu.cuMemCreate(ref(h), 0, ref(prop), 0) == fc.INVALID_VALUE
    assert cu.cuMemCreate(ref(h), GRAN, None, 0) == fc.INVALID_VALUE
    assert cu.cuMemCreate(None, GRAN, ref(prop), 0) == fc.INVALID_VALUE
    assert cu.cuMemCreate(ref(h), GRAN, ref(prop), 1) == fc.INVALID_VALUE
    assert cu.cuMemCreate(ref(h), GRAN, ref(fc.alloc_prop(5)), 0) == fc.INVALID_DEVICE
    win32 = fc.alloc_prop(0, fc.HANDLE_TYPE_WIN32)
    assert cu.cuMemCreate(ref(h), GRAN, ref(win32), 0) == fc.NOT_SUPPORTED
    unpinned = fc.alloc_prop(0)
    unpinned.type = 0
    assert cu.cuMemCreate(ref(h), GRAN, ref(unpinned), 0) == fc.INVALID_VALUE
    assert cu.cuMemRelease(0xDEAD) == fc.INVALID_VALUE
    # Export needs the handle type requested at creation.
    fd = ctypes.c_int(-1)
    private = fc.alloc_prop(0, 0)
    fc.check(cu.cuMemCreate(ref(h), GRAN, ref(private), 0))
    assert cu.cuMemExportToShareableHandle(ref(fd), h, fc.HANDLE_TYPE_POSIX_FD, 0) == 1
    fc.check(cu.cuMemRelease(h))
    with device_memory(cu, 2 * GRAN) as (handle, ptr):
        assert cu.cuMemExportToShareableHandle(ref(fd), handle, fc.HANDLE_TYPE_WIN32, 0) == 801
        assert cu.cuMemExportToShareableHandle(ref(fd), handle, 1, 1) == fc.INVALID_VALUE
        assert cu.cuMemExportToShareableHandle(None, handle, 1, 0) == fc.INVALID_VALUE
        assert fd.value == -1
        # Mapping
        assert cu.cuMemMap(ptr, 2 * GRAN, 0, handle, 0) == fc.INVALID_VALUE  # already mapped
        assert cu.cuMemAddressFree(ptr, 2 * GRAN) == fc.INVALID_VALUE  # still mapped
        assert cu.cuMemUnmap(ptr, GRAN) == fc.INVALID_VALUE  # part of a mapping
        assert cu.cuMemUnmap(ptr + GRAN, GRAN) == fc.INVALID_VALUE
        desc = fc.access(0, 2)
        assert cu.cuMemSetAccess(ptr, 2 * GRAN, ref(desc), 1) == fc.INVALID_VALUE
        desc = fc.access(3, fc.ACCESS_READWRITE)
        assert cu.cuMemSetAccess(ptr, 2 * GRAN, ref(desc), 1) == fc.INVALID_DEVICE
        desc = fc.access(0, fc.ACCESS_READWRITE)
        assert cu.cuMemSetAccess(ptr, 2 * GRAN, ref(desc), 0) == fc.INVALID_VALUE
        assert cu.cuMemSetAccess(ptr, GRAN, ref(desc), 1) == fc.INVALID_VALUE  # part
        desc.location.type = 2  # host
        assert cu.cuMemSetAccess(ptr, 2 * GRAN, ref(desc), 1) == fc.INVALID_VALUE
        # Copies to or from what is not device memory
        host = ctypes.create_string_buffer(16)
        assert cu.cuMemcpyDtoH_v2(host, ctypes.addressof(host), 16) == fc.INVALID_VALUE
        assert cu.cuMemcpyHtoD_v2(ptr + 2 * GRAN - 8, host, 16) == fc.INVALID_VALUE  # overruns
        assert cu.cuMemcpyHtoD_v2(ptr, None, 16) == fc.INVALID_VALUE
        assert cu.cuMemsetD8_v2(ctypes.addressof(host), 0, 16) == fc.INVALID_VALUE
        assert cu.fake_cuda_enqueue_fill(None, ctypes.addressof(host), 0, 16, 0) == 1
    # Reservations
    assert cu.cuMemAddressReserve(ref(p), GRAN + 1, 0, 0, 0) == fc.INVALID_VALUE
    assert cu.cuMemAddressReserve(ref(p), GRAN, 3 * GRAN, 0, 0) == fc.INVALID_VALUE
    assert cu.cuMemAddressReserve(ref(p), GRAN, 0, 0, 1) == fc.INVALID_VALUE
    assert cu.cuMemAddressReserve(None, GRAN, 0, 0, 0) == fc.INVALID_VALUE
    fc.check(cu.cuMemAddressReserve(ref(p), GRAN, 4 * GRAN, 0, 0))
    assert p.value % (4 * GRAN) == 0
    handle = fc.create(cu, 2 * GRAN)
    assert cu.cuMemMap(p, 2 * GRAN, 0, handle, 0) == fc.INVALID_VALUE  # outside the reservation
    assert cu.cuMemMap(p, GRAN, GRAN, handle, 0) == fc.INVALID_VALUE  # offset must be 0
    assert cu.cuMemMap(p.value + 4096, GRAN, 0, handle, 0) == fc.INVALID_VALUE
    assert cu.cuMemMap(p, GRAN, 0, handle, 1) == fc.INVALID_VALUE
    assert cu.cuMemMap(p, GRAN, 0, 0xDEAD, 0) == fc.INVALID_VALUE
    fc.check(cu.cuMemMap(p, GRAN, 0, handle, 0))  # a prefix of the allocation is fine
    fc.check(cu.cuMemUnmap(p, GRAN))
    assert cu.cuMemUnmap(p, GRAN) == fc.INVALID_VALUE  # not mapped
    assert cu.cuMemAddressFree(p, 2 * GRAN) == fc.INVALID_VALUE  # wrong size
    fc.check(cu.cuMemAddressFree(p, GRAN))
    fc.check(cu.cuMemRelease(handle))
    # Imports of what the fake did not export
    r, w = os.pipe()
    other = os.memfd_create("not-cuda")
    os.ftruncate(other, GRAN)
    try:
        for bad in (r, other, -1, 9999):
            assert cu.cuMemImportFromShareableHandle(ref(h), bad, 1) == fc.INVALID_VALUE, bad
        assert cu.cuMemImportFromShareableHandle(ref(h), other, fc.HANDLE_TYPE_WIN32) == 801
    finally:
        for f in (r, w, other):
            os.close(f)


def test_export_import_and_map_twice_in_one_process(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    with device_memory(cu) as (handle, ptr):
        fd = ctypes.c_int(-1)
        fc.check(cu.cuMemExportToShareableHandle(ctypes.byref(fd), handle, 1, 0))
        try:
            assert fd.value >= 0
            fd2 = ctypes.c_int(-1)
            fc.check(cu.cuMemExportToShareableHandle(ctypes.byref(fd2), handle, 1, 0))
            assert fd2.value != fd.value  # a new fd each time, the caller's to close
            os.close(fd2.value)
            imported = fc.CUhandle()
            fc.check(cu.cuMemImportFromShareableHandle(ctypes.byref(imported), fd.value, 1))
        finally:
            os.close(fd.value)  # the importer keeps its own reference
        view = fc.map_handle(cu, imported.value, GRAN, fc.ACCESS_READ)
        ctypes.memset(ptr, 0x42, 16)
        assert ctypes.string_at(view, 16) == b"\x42" * 16
        fc.unmap(cu, view, GRAN)
        fc.check(cu.cuMemRelease(imported))


CHILD_IMPORT = """
fd, size = int(args[0]), int(args[1])
fc.open_context(cu, 0)
h = fc.CUhandle()
rc = cu.cuMemImportFromShareableHandle(ctypes.byref(h), fd, fc.HANDLE_TYPE_POSIX_FD)
if rc != 0:
    emit(import_rc=rc)
    sys.exit(0)
os.close(fd)  # the import holds its own reference
ro = fc.map_handle(cu, h.value, size, fc.ACCESS_READ)
seen = ctypes.string_at(ro, 8).hex(), ctypes.string_at(ro + size - 8, 8).hex()
rw = fc.map_handle(cu, h.value, size, fc.ACCESS_READWRITE)  # a second mapping, writable
ctypes.memmove(rw + 100, b"from the child", 14)
again = ctypes.string_at(ro + 100, 14)  # one memory under both mappings
fc.unmap(cu, ro, size)
fc.unmap(cu, rw, size)
fc.check(cu.cuMemRelease(h))
emit(import_rc=0, seen=seen, again=again.decode(), maps=fc.stat(cu, "maps"),
     allocations=fc.stat(cu, "live_allocations"))
"""


def test_another_process_imports_and_sees_the_same_memory(
    cu: ctypes.CDLL, ctx: ctypes.c_void_p, fake_cuda: pathlib.Path
) -> None:
    size = 2 * GRAN
    with device_memory(cu, size) as (handle, ptr):
        ctypes.memset(ptr, 0xAB, 8)
        ctypes.memset(ptr + size - 8, 0xCD, 8)
        fd = ctypes.c_int(-1)
        fc.check(cu.cuMemExportToShareableHandle(ctypes.byref(fd), handle, 1, 0))
        try:
            r = child_result(fake_cuda, CHILD_IMPORT, fd.value, size, pass_fds=(fd.value,))
            # A process whose GPUs have other UUIDs cannot import this GPU's memory.
            elsewhere = {"FAKE_CUDA_UUID_SEED": "elsewhere"}
            other = child_result(
                fake_cuda, CHILD_IMPORT, fd.value, size, pass_fds=(fd.value,), env=elsewhere
            )
        finally:
            os.close(fd.value)
        assert r == {
            "import_rc": 0,
            "seen": ["ab" * 8, "cd" * 8],
            "again": "from the child",
            "maps": 0,
            "allocations": 0,
        }
        assert ctypes.string_at(ptr + 100, 14) == b"from the child"
        assert other == {"import_rc": fc.INVALID_DEVICE}


ACCESS_SCENARIOS = {
    # name: (flags of the mapping, what the child then does, dies by SIGSEGV)
    "read_before_set_access": (fc.ACCESS_NONE, "ctypes.string_at(ptr, 1)", True),
    "write_read_only": (fc.ACCESS_READ, "ctypes.memset(ptr, 1, 1)", True),
    "read_after_unmap": (
        fc.ACCESS_READ,
        "fc.unmap(cu, ptr, fc.GRANULARITY); ctypes.string_at(ptr, 1)",
        True,
    ),
    "read_after_revoke": (
        fc.ACCESS_READWRITE,
        (
            "cu.cuMemSetAccess(ptr, fc.GRANULARITY, ctypes.byref(fc.access(0, 0)), 1); "
            "ctypes.string_at(ptr, 1)"
        ),
        True,
    ),
    "read_read_only": (fc.ACCESS_READ, "ctypes.string_at(ptr, 1)", False),
    "write_read_write": (fc.ACCESS_READWRITE, "ctypes.memset(ptr, 1, 1)", False),
}


@pytest.mark.parametrize("scenario", sorted(ACCESS_SCENARIOS))
def test_memory_is_inaccessible_until_access_is_granted(
    fake_cuda: pathlib.Path, scenario: str
) -> None:
    flags, action, dies = ACCESS_SCENARIOS[scenario]
    code = f"""
    fc.open_context(cu, 0)
    ptr = fc.map_handle(cu, fc.create(cu), fc.GRANULARITY, {flags})
    print("mapped", flush=True)
    {action}
    emit(survived=True)
    """
    r = run_child(fake_cuda, code)
    assert "mapped" in r.stdout, r.stderr
    if dies:
        assert r.returncode == -signal.SIGSEGV, (r.returncode, r.stdout, r.stderr)
    else:
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[-1]) == {"survived": True}


def test_read_only_access_can_be_refused(fake_cuda: pathlib.Path) -> None:
    code = """
    fc.open_context(cu, 0)
    h = fc.create(cu)
    ptr = fc.map_handle(cu, h, fc.GRANULARITY, fc.ACCESS_NONE)
    ro, rw = fc.access(0, fc.ACCESS_READ), fc.access(0, fc.ACCESS_READWRITE)
    emit(ro=cu.cuMemSetAccess(ptr, fc.GRANULARITY, ctypes.byref(ro), 1),
         rw=cu.cuMemSetAccess(ptr, fc.GRANULARITY, ctypes.byref(rw), 1))
    """
    assert child_result(fake_cuda, code) == {"ro": 0, "rw": 0}
    refused = child_result(fake_cuda, code, env={"FAKE_CUDA_NO_READONLY": "1"})
    assert refused == {"ro": fc.NOT_SUPPORTED, "rw": 0}


def test_memory_capacity(fake_cuda: pathlib.Path) -> None:
    r = child_result(
        fake_cuda,
        """
        fc.open_context(cu, 0)
        h, prop = fc.CUhandle(), fc.alloc_prop(0)
        first = cu.cuMemCreate(ctypes.byref(h), 2 * fc.GRANULARITY, ctypes.byref(prop), 0)
        second = cu.cuMemCreate(ctypes.byref(h), 2 * fc.GRANULARITY, ctypes.byref(prop), 0)
        emit(first=first, second=second, allocated=fc.stat(cu, "allocated_bytes"))
        """,
        env={"FAKE_CUDA_MEMORY_BYTES": str(3 * GRAN)},
    )
    assert r == {"first": 0, "second": fc.OUT_OF_MEMORY, "allocated": 2 * GRAN}


# ---- streams ---------------------------------------------------------------------------------


def test_stream_runs_work_in_order_on_one_worker_thread(
    cu: ctypes.CDLL, ctx: ctypes.c_void_p
) -> None:
    s = new_stream(cu)
    hf = HostFuncs()
    ran = fc.stat(cu, "host_funcs")
    with device_memory(cu) as (_, ptr):
        first = lambda: ctypes.string_at(ptr, 1)
        fc.check(cu.fake_cuda_enqueue_fill(s, ptr, 0x11, GRAN, 50_000))
        fc.check(cu.cuLaunchHostFunc(s, hf.make("after fill", first), None))
        fc.check(cu.cuMemsetD8Async(ptr, 0x22, 1, s))
        fc.check(cu.cuLaunchHostFunc(s, hf.make("after memset", first), None))
        fc.check(cu.fake_cuda_enqueue_sleep(s, 30_000))
        fc.check(cu.cuLaunchHostFunc(s, hf.make("after sleep"), None))
        assert hf.calls == []  # all asynchronous
        assert fc.stat(cu, "host_funcs_pending") >= 1
        finish(cu, s)
        assert hf.tags() == ["after fill", "after memset", "after sleep"]
        assert [c[2] for c in hf.calls[:2]] == [b"\x11", b"\x22"]
        threads = {c[1] for c in hf.calls}
        assert len(threads) == 1 and threading.get_ident() not in threads
    assert fc.stat(cu, "host_funcs") == ran + 3
    fc.check(cu.cuStreamDestroy_v2(s))


def test_query_is_not_ready_while_a_slow_fill_runs(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    s = new_stream(cu)
    with device_memory(cu) as (_, ptr):
        ctypes.memset(ptr, 0, GRAN)
        fc.check(cu.fake_cuda_enqueue_fill(s, ptr, 0xEE, GRAN, 400_000))
        assert cu.cuStreamQuery(s) == fc.NOT_READY
        # A reader that looks before the stream is done sees a partial frame.
        assert wait_for(lambda: ctypes.string_at(ptr, 1) == b"\xee")
        partial = ctypes.string_at(ptr + GRAN - 1, 1)
        assert cu.cuStreamQuery(s) == fc.NOT_READY
        assert partial == b"\0"
        finish(cu, s)
        assert ctypes.string_at(ptr + GRAN - 1, 1) == b"\xee"
        assert cu.cuStreamQuery(s) == fc.SUCCESS
    fc.check(cu.cuStreamDestroy_v2(s))


def test_stream_synchronize_waits(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    s = new_stream(cu)
    fc.check(cu.fake_cuda_enqueue_sleep(s, 200_000))
    start = time.monotonic()
    fc.check(in_thread(lambda: cu.cuStreamSynchronize(s), cu=cu, ctx=ctx))
    assert time.monotonic() - start >= 0.15
    assert cu.cuStreamQuery(s) == fc.SUCCESS
    fc.check(cu.fake_cuda_enqueue_sleep(s, 100_000))
    fc.check(cu.fake_cuda_enqueue_sleep(None, 100_000))
    start = time.monotonic()
    fc.check(in_thread(cu.cuCtxSynchronize, cu=cu, ctx=ctx))
    assert time.monotonic() - start >= 0.09
    assert cu.cuStreamQuery(s) == fc.SUCCESS and cu.cuStreamQuery(None) == fc.SUCCESS
    fc.check(cu.cuStreamDestroy_v2(s))


def test_legacy_default_stream_orders_against_blocking_streams(
    cu: ctypes.CDLL, ctx: ctypes.c_void_p
) -> None:
    blocking, non_blocking = new_stream(cu), new_stream(cu, fc.STREAM_NON_BLOCKING)
    idle_non_blocking = new_stream(cu, fc.STREAM_NON_BLOCKING)
    hf = HostFuncs()
    with device_memory(cu, 2 * GRAN) as (_, ptr):
        ctypes.memset(ptr, 0, 2 * GRAN)

        def last_bytes() -> tuple[bytes, bytes]:
            return ctypes.string_at(ptr + GRAN - 1, 1), ctypes.string_at(ptr + 2 * GRAN - 1, 1)

        fc.check(cu.fake_cuda_enqueue_fill(blocking, ptr, 0xAA, GRAN, 200_000))
        fc.check(cu.fake_cuda_enqueue_fill(non_blocking, ptr + GRAN, 0xBB, GRAN, 1_000_000))
        # The legacy stream waits for the blocking stream's fill, not for the non-blocking one;
        # all three default handles name it.
        for handle in (None, fc.STREAM_LEGACY, fc.STREAM_PER_THREAD):
            fc.check(cu.cuLaunchHostFunc(handle, hf.make(f"legacy {handle}", last_bytes), None))
        fc.check(cu.fake_cuda_enqueue_sleep(None, 200_000))
        fc.check(cu.cuLaunchHostFunc(None, hf.make("legacy after sleep"), None))
        # Work queued on a blocking stream after that waits for the legacy stream's work; on a
        # non-blocking stream it does not.
        fc.check(cu.cuLaunchHostFunc(blocking, hf.make("blocking"), None))
        fc.check(cu.cuLaunchHostFunc(idle_non_blocking, hf.make("non-blocking"), None))
        assert wait_for(lambda: len(hf.calls) == 6)
        for s in (None, blocking, non_blocking):
            finish(cu, s)
    tags = hf.tags()
    assert tags.index("non-blocking") < tags.index("legacy None")
    assert tags.index("legacy after sleep") < tags.index("blocking")
    legacy = [c for c in hf.calls if c[0].startswith("legacy ") and c[2] is not None]
    assert [c[0] for c in legacy] == ["legacy None", "legacy 1", "legacy 2"]
    assert all(c[2] == (b"\xaa", b"\0") for c in legacy), legacy
    assert len({c[1] for c in hf.calls if c[0].startswith("legacy")}) == 1  # one legacy stream
    for s in (blocking, non_blocking, idle_non_blocking):
        fc.check(cu.cuStreamDestroy_v2(s))


def test_host_functions_may_not_call_cuda(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    s = new_stream(cu)
    hf = HostFuncs()
    before = fc.stat(cu, "host_func_violations")
    fc.check(cu.cuLaunchHostFunc(s, hf.make("calls cuda", lambda: cu.cuStreamQuery(s)), None))
    finish(cu, s)
    assert hf.calls[0][2] == fc.NOT_PERMITTED
    assert fc.stat(cu, "host_func_violations") == before + 1
    fc.check(cu.cuStreamDestroy_v2(s))


def test_stream_misuse_error_codes(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    s = fc.CUstream()
    assert cu.cuStreamCreate(ctypes.byref(s), 2) == fc.INVALID_VALUE
    assert cu.cuStreamCreate(None, 0) == fc.INVALID_VALUE
    assert cu.cuStreamQuery(0x1234) == fc.INVALID_HANDLE
    assert cu.cuStreamSynchronize(0x1234) == fc.INVALID_HANDLE
    assert cu.cuStreamDestroy_v2(None) == fc.INVALID_HANDLE  # the default stream
    assert cu.cuLaunchHostFunc(None, fc.HOST_FN(), None) == fc.INVALID_VALUE
    assert cu.fake_cuda_enqueue_sleep(0x1234, 0) == fc.INVALID_HANDLE
    stream = new_stream(cu)
    fc.check(cu.cuStreamDestroy_v2(stream))
    assert cu.cuStreamQuery(stream) == fc.INVALID_HANDLE
    assert cu.cuStreamDestroy_v2(stream) == fc.INVALID_HANDLE
    assert cu.cuLaunchHostFunc(stream, HostFuncs().make("never"), None) == fc.INVALID_HANDLE


def test_destroyed_stream_still_runs_its_queued_work(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    s = new_stream(cu)
    hf = HostFuncs()
    live = fc.stat(cu, "live_streams")
    fc.check(cu.fake_cuda_enqueue_sleep(s, 100_000))
    fc.check(cu.cuLaunchHostFunc(s, hf.make("after destroy"), None))
    start = time.monotonic()
    fc.check(cu.cuStreamDestroy_v2(s))
    assert time.monotonic() - start < 0.05  # returns at once
    assert fc.stat(cu, "live_streams") == live - 1
    assert hf.calls == []
    assert wait_for(lambda: hf.tags() == ["after destroy"])
    fc.check(cu.cuCtxSynchronize())


def test_test_streams_need_no_current_context(cu: ctypes.CDLL, ctx: ctypes.c_void_p) -> None:
    refs = fc.stat(cu, "primary_ctx_refs")

    def without_context() -> int:
        s = ctypes.c_void_p()
        fc.check(cu.fake_cuda_stream_create(ctypes.byref(s)))
        assert fc.stat(cu, "primary_ctx_refs") == refs + 1  # the stream keeps its context
        fc.check(cu.fake_cuda_enqueue_sleep(s, 1000))
        fc.check(cu.fake_cuda_enqueue_sleep(None, 1000))  # device 0's legacy stream
        assert cu.cuStreamQuery(s) == fc.INVALID_CONTEXT  # the driver's calls still need one
        return int(s.value or 0)

    stream = in_thread(without_context)
    finish(cu, stream)  # usable from the context's own thread too
    fc.check(cu.fake_cuda_stream_destroy(stream))
    assert fc.stat(cu, "primary_ctx_refs") == refs


def test_illegal_access_by_device_work_poisons_the_context(fake_cuda: pathlib.Path) -> None:
    r = child_result(
        fake_cuda,
        """
        fc.open_context(cu, 0)
        s = fc.CUstream()
        fc.check(cu.cuStreamCreate(ctypes.byref(s), 0))
        ptr = fc.map_handle(cu, fc.create(cu), fc.GRANULARITY, fc.ACCESS_READ)
        fc.check(cu.fake_cuda_enqueue_sleep(s, 200_000))  # so that the launch below precedes the fault
        fc.check(cu.fake_cuda_enqueue_fill(s, ptr, 1, 16, 0))  # writes to read-only memory
        hit = []
        keep = fc.HOST_FN(lambda _: hit.append(1))
        fc.check(cu.cuLaunchHostFunc(s, keep, None))
        sync = cu.cuStreamSynchronize(s)
        p = fc.CUdeviceptr()
        emit(sync=sync, query=cu.cuStreamQuery(s), later=cu.cuMemAddressReserve(
                 ctypes.byref(p), fc.GRANULARITY, 0, 0, 0),
             faults=fc.stat(cu, "illegal_addresses"), host_func_ran=bool(hit),
             memory=ctypes.string_at(ptr, 1).hex())
        """,
    )
    assert r == {
        "sync": fc.ILLEGAL_ADDRESS,
        "query": fc.ILLEGAL_ADDRESS,
        "later": fc.ILLEGAL_ADDRESS,
        "faults": 1,
        "host_func_ran": False,
        "memory": "00",
    }


def test_fork_child_cannot_use_the_driver(fake_cuda: pathlib.Path) -> None:
    r = child_result(
        fake_cuda,
        """
        import warnings
        warnings.simplefilter("ignore")
        fc.open_context(cu, 0)
        pid = os.fork()
        if pid == 0:
            n = ctypes.c_int()
            os._exit(100 + min(cu.cuDeviceGetCount(ctypes.byref(n)), 50) + 10 * (cu.cuInit(0) == 3))
        _, status = os.waitpid(pid, 0)
        n = ctypes.c_int()
        emit(child=os.waitstatus_to_exitcode(status), parent=cu.cuDeviceGetCount(ctypes.byref(n)))
        """,
    )
    assert r == {"child": 100 + fc.NOT_INITIALIZED + 10, "parent": 0}
