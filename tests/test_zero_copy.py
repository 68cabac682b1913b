# SPDX-License-Identifier: Apache-2.0
"""Zero copy, proven from /proc/self/maps: every view of a frame (numpy, memoryview, DLPack,
torch) points into the process's mapping of /dev/shm/bips.NAME, exactly at the frame's buffer;
consumer views are read-only (flags and page protection); producer views are the same memory."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import struct
import sys
from typing import Any, NamedTuple

import bips
import numpy as np
import pytest
from helpers import child, pool_path, read_message, reap, wait_until

HEADER = struct.Struct("<8sIIQQQQQQQQQQ")  # PoolHeader up to buffer_stride (cpp/src/layout.hpp)


class Header(NamedTuple):
    magic: bytes
    layout_version: int
    header_size: int
    file_size: int
    page_size: int
    control_size: int
    desc_offset: int
    slot_offset: int
    meta_offset: int
    data_offset: int
    buffer_size: int
    buffer_stride: int


def read_header(name: str) -> Header:
    with open(pool_path(name), "rb") as f:
        fields = HEADER.unpack(f.read(HEADER.size))
    h = Header(*fields[:12])
    assert h.magic == b"BIPSPOOL"
    return h


class Mapping(NamedTuple):
    start: int
    end: int
    perms: str
    offset: int
    path: str


def mappings_of(name: str, pid: str = "self") -> list[Mapping]:
    """The mappings of the pool's file in a process, from /proc/PID/maps."""
    path = pool_path(name)
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) < 6:
                continue
            file = parts[5].rstrip("\n")
            file = file.removesuffix(" (deleted)")
            if file != path:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append(Mapping(lo, hi, parts[1], int(parts[2], 16), file))
    return out


def locate(name: str, addr: int, nbytes: int) -> tuple[Mapping, int]:
    """The mapping of the pool holding [addr, addr + nbytes) and the file offset of addr."""
    for m in mappings_of(name):
        if m.start <= addr and addr + nbytes <= m.end:
            return m, m.offset + (addr - m.start)
    raise AssertionError(
        f"address {addr:#x} (+{nbytes}) is not inside any mapping of {pool_path(name)}: "
        f"{mappings_of(name)}"
    )


def assert_in_frame_buffer(name: str, addr: int, nbytes: int, index: int, perms: str) -> None:
    h = read_header(name)
    m, off = locate(name, addr, nbytes)
    assert off == h.data_offset + index * h.buffer_stride, (off, h, index)
    assert m.perms.startswith(perms), m


def address_of_memoryview(mv: memoryview) -> int:
    arr = np.frombuffer(mv, dtype=np.uint8)  # shares memory with the memoryview
    return int(arr.__array_interface__["data"][0])


def fill_pool(prod: bips.Producer, n: int, value_of: Any = lambda i: i) -> None:
    for i in range(n):
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[...] = value_of(i)
        prod.publish(buf)


def test_header_matches_pool(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=3, buffer_size=5000, meta_size=10) as prod:
        h = read_header(pool_name)
        assert h.layout_version == bips.LAYOUT_VERSION
        assert h.file_size == os.stat(pool_path(pool_name)).st_size
        assert h.buffer_size == prod.buffer_size == 5000
        assert h.buffer_stride >= h.buffer_size and h.buffer_stride % h.page_size == 0
        assert h.data_offset % h.page_size == 0
        assert h.data_offset + 3 * h.buffer_stride == h.file_size
        assert h.page_size == os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
def test_consumer_views_are_the_shared_buffer(pool_name: str, policy: str) -> None:
    shape = (48, 64, 3)
    with bips.Producer(pool_name, capacity=4, shape=shape, dtype="uint8", policy=policy) as prod:
        with bips.Consumer(pool_name) as cons:
            fill_pool(prod, 4, lambda i: i + 10)
            for i in range(4):
                frame = cons.receive(timeout=1.0)
                n = frame.nbytes
                arr = frame.numpy()
                a1 = int(arr.__array_interface__["data"][0])
                assert_in_frame_buffer(pool_name, a1, n, frame.index, "r-")
                a2 = int(np.asarray(frame).__array_interface__["data"][0])
                mv = memoryview(frame)
                a3 = address_of_memoryview(mv)
                dl = np.from_dlpack(frame)
                a4 = int(dl.__array_interface__["data"][0])
                assert a1 == a2 == a3 == a4
                assert mv.nbytes == n and dl.nbytes == n and arr.nbytes == n
                assert mv.shape == shape and dl.shape == shape
                assert np.all(dl == i + 10)
                del arr, mv, dl
                frame.release()


def test_views_of_different_frames_are_different_buffers(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=4, buffer_size=100) as prod:
        with bips.Consumer(pool_name) as cons:
            fill_pool(prod, 4)
            frames = [cons.receive(timeout=1.0) for _ in range(4)]
            assert sorted(f.index for f in frames) == [0, 1, 2, 3]
            for f in frames:
                addr = int(f.numpy().__array_interface__["data"][0])
                assert_in_frame_buffer(pool_name, addr, f.nbytes, f.index, "r-")
            for f in frames:
                f.release()


def test_views_of_typed_frames(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, shape=(16, 16), dtype="float32") as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            buf.set_format((8, 4), "float64")
            buf.numpy()[...] = np.arange(32.0).reshape(8, 4)
            prod.publish(buf)
            with cons.receive(timeout=1.0) as f:
                arr = f.numpy()
                assert arr.dtype == np.float64 and arr.shape == (8, 4)
                assert arr.flags.c_contiguous
                addr = int(arr.__array_interface__["data"][0])
                assert_in_frame_buffer(pool_name, addr, 256, f.index, "r-")
                mv = memoryview(f)
                assert mv.format == "d" and mv.shape == (8, 4) and mv.itemsize == 8
                assert address_of_memoryview(mv.cast("B")) == addr
                assert np.array_equal(np.from_dlpack(f), np.arange(32.0).reshape(8, 4))
                del arr, mv


def test_consumer_views_are_read_only(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=64) as prod:
        with bips.Consumer(pool_name) as cons:
            fill_pool(prod, 1, lambda i: 5)
            with cons.receive(timeout=1.0) as f:
                arr = f.numpy()
                assert not arr.flags.writeable
                with pytest.raises(ValueError):
                    arr[0] = 1
                with pytest.raises(ValueError):
                    arr.flags.writeable = True  # numpy refuses: the base is read-only
                assert not np.asarray(f).flags.writeable
                mv = memoryview(f)
                assert mv.readonly
                with pytest.raises(TypeError):
                    mv[0] = 1
                dl = np.from_dlpack(f)
                assert not dl.flags.writeable
                with pytest.raises(ValueError):
                    dl[0] = 1
                with pytest.raises(ValueError):
                    np.frombuffer(mv, dtype=np.uint8).flags.writeable = True
                assert np.all(arr == 5)
                del arr, mv, dl


def test_consumer_dlpack_capsule_flags_read_only(pool_name: str) -> None:
    """The versioned capsule of a frame carries DLPACK_FLAG_BITMASK_READ_ONLY; a buffer's not."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]

    def version_and_flags(cap: Any) -> tuple[tuple[int, int], int]:
        p = get(cap, b"dltensor_versioned")
        v = (ctypes.c_uint32 * 2).from_address(p)
        flags = ctypes.c_uint64.from_address(p + 24)  # after version and two pointers
        return (v[0], v[1]), flags.value

    with bips.Producer(pool_name, capacity=2, buffer_size=64) as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            cap = buf.__dlpack__(max_version=(1, 0))
            (major, _), flags = version_and_flags(cap)
            assert major == 1 and flags & 1 == 0
            del cap
            prod.publish(buf)
            with cons.receive(timeout=1.0) as f:
                cap = f.__dlpack__(max_version=(1, 0))
                (major, _), flags = version_and_flags(cap)
                assert major == 1 and flags & 1 == 1
                del cap
                assert f.__dlpack_device__() == (1, 0)
                with pytest.raises(BufferError):
                    f.__dlpack__(max_version=(1, 0), copy=True)
                with pytest.raises(BufferError):
                    f.__dlpack__(max_version=(1, 0), dl_device=(2, 0))
            gc.collect()


def test_legacy_dlpack_of_read_only_frame_is_refused(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=64) as prod:
        with bips.Consumer(pool_name) as cons:
            fill_pool(prod, 1)
            with cons.receive(timeout=1.0) as f, pytest.raises(BufferError):
                f.__dlpack__()


def test_consumer_mapping_is_write_protected(pool_name: str) -> None:
    """Writing to a frame's memory behind numpy's back (ctypes) kills the writer with SIGSEGV:
    the page protection, not just a flag, keeps consumers from corrupting frames."""
    code = """
import resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
name = sys.argv[1]
with bips.Consumer(name, timeout=10.0) as cons:
    f = cons.receive(timeout=10.0)
    addr = f.numpy().__array_interface__["data"][0]
    emit(value=int(f.numpy()[0]))
    import ctypes
    ctypes.memset(addr, 0xAB, 1)
    emit(wrote=True)
"""
    with bips.Producer(pool_name, capacity=2, buffer_size=64) as prod:
        with child(code, pool_name) as proc:
            assert wait_until(lambda: prod.stats.consumers == 1 or proc.poll() is not None, 20)
            fill_pool(prod, 1, lambda i: 7)
            assert read_message(proc, 20.0) == {"value": 7}
            rc, out, err = reap(proc, 10.0)
            assert rc == -signal.SIGSEGV, (rc, out, err)
            assert "wrote" not in out
        # The dead consumer's frame comes back, untouched.
        bufs = [prod.acquire(timeout=5.0) for _ in range(2)]
        assert sorted(b.index for b in bufs) == [0, 1]
        assert any(np.all(b.numpy() == 7) for b in bufs)
        for b in bufs:
            b.discard()


def test_producer_views_are_writable_shared_memory(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=3, buffer_size=4096) as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            arr = buf.numpy()
            assert arr.flags.writeable
            addr = int(arr.__array_interface__["data"][0])
            assert_in_frame_buffer(pool_name, addr, 4096, buf.index, "rw")
            mv = memoryview(buf)
            assert not mv.readonly and address_of_memoryview(mv) == addr
            dl = np.from_dlpack(buf)
            assert dl.flags.writeable
            assert int(dl.__array_interface__["data"][0]) == addr
            arr[:] = 1
            mv[1] = 2
            dl[2] = 3
            del mv, dl
            index = buf.index
            prod.publish(buf)
            with cons.receive(timeout=1.0) as f:
                assert f.index == index
                caddr = int(f.numpy().__array_interface__["data"][0])
                assert_in_frame_buffer(pool_name, caddr, 4096, index, "r-")
                assert f.numpy()[:4].tolist() == [1, 2, 3, 1]
            del arr


def test_consumer_in_another_process_sees_producer_writes(pool_name: str) -> None:
    """The child checks its own /proc/self/maps: its array is inside its read-only mapping of the
    pool's file at the buffer's offset, and holds what the parent wrote through numpy."""
    code = """
name = sys.argv[1]
path = "/dev/shm/bips." + name
with bips.Consumer(name, timeout=10.0) as cons:
    for _ in range(3):
        with cons.receive(timeout=10.0) as f:
            arr = f.numpy()
            addr = arr.__array_interface__["data"][0]
            where = None
            for line in open("/proc/self/maps"):
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip().split(" ")[0] == path:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    if lo <= addr and addr + f.nbytes <= hi:
                        where = [parts[1], int(parts[2], 16) + addr - lo]
            emit(seq=f.seq, index=f.index, where=where, sum=int(arr.sum(dtype=np.uint64)),
                 first=arr.reshape(-1)[:4].tolist(), writeable=bool(arr.flags.writeable))
"""
    with bips.Producer(pool_name, capacity=3, shape=(32, 32), dtype="uint16") as prod:
        h = read_header(pool_name)
        with child(code, pool_name) as proc:
            assert wait_until(lambda: prod.stats.consumers == 1 or proc.poll() is not None, 20)
            sent = []
            for i in range(3):
                buf = prod.acquire(timeout=5.0)
                arr = buf.numpy()
                arr[...] = np.arange(1024, dtype=np.uint16).reshape(32, 32) * (i + 1)
                sent.append(
                    (buf.index, int(arr.sum(dtype=np.uint64)), arr.reshape(-1)[:4].tolist())
                )
                del arr
                prod.publish(buf)
            for i in range(3):
                msg = read_message(proc, 20.0)
                index, total, first = sent[i]
                assert msg["seq"] == i and msg["index"] == index
                assert msg["sum"] == total and msg["first"] == first
                assert msg["writeable"] is False
                assert msg["where"] is not None, "frame not inside the pool's mapping"
                perms, off = msg["where"]
                assert perms.startswith("r-")
                assert off == h.data_offset + index * h.buffer_stride
            assert reap(proc, 10.0)[0] == 0


# --- torch ---------------------------------------------------------------------------------


def test_torch_from_dlpack_shares_consumer_memory(pool_name: str) -> None:
    torch = pytest.importorskip("torch")
    with bips.Producer(pool_name, capacity=2, shape=(6, 5), dtype="float32") as prod:
        with bips.Consumer(pool_name) as cons:
            fill_pool(prod, 1, lambda i: 2.5)
            with cons.receive(timeout=1.0) as f:
                t = torch.from_dlpack(f)
                assert tuple(t.shape) == (6, 5) and t.dtype == torch.float32
                assert_in_frame_buffer(pool_name, t.data_ptr(), f.nbytes, f.index, "r-")
                assert t.data_ptr() == f.numpy().__array_interface__["data"][0]
                assert bool((t == 2.5).all())
                del t


def test_torch_from_dlpack_shares_producer_memory(pool_name: str) -> None:
    torch = pytest.importorskip("torch")
    with bips.Producer(pool_name, capacity=2, shape=(4,), dtype="int32") as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            t = torch.from_dlpack(buf)
            assert_in_frame_buffer(pool_name, t.data_ptr(), 16, buf.index, "rw")
            t[:] = torch.tensor([4, 3, 2, 1], dtype=torch.int32)
            del t
            prod.publish(buf)
            with cons.receive(timeout=1.0) as f:
                assert f.numpy().tolist() == [4, 3, 2, 1]


def test_torch_write_to_consumer_tensor_cannot_corrupt_frame(pool_name: str) -> None:
    """torch ignores the DLPack read-only flag (it hands out a writable tensor over the
    read-only mapping). Whatever it does, a write must not succeed silently: it has to raise or
    fault, and the frame must keep its contents."""
    pytest.importorskip("torch")
    code = """
import resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import torch
name = sys.argv[1]
with bips.Consumer(name, timeout=10.0) as cons:
    f = cons.receive(timeout=10.0)
    t = torch.from_dlpack(f)
    emit(ready=True, shares=t.data_ptr() == f.numpy().__array_interface__["data"][0])
    try:
        t[0] = 99
    except Exception as e:
        emit(error=type(e).__name__, value=int(f.numpy()[0]))
    else:
        emit(error=None, value=int(f.numpy()[0]))
"""
    with bips.Producer(pool_name, capacity=2, shape=(4,), dtype="int32") as prod:
        with child(code, pool_name, timeout=20.0) as proc:
            assert wait_until(lambda: prod.stats.consumers == 1 or proc.poll() is not None, 20)
            fill_pool(prod, 1, lambda i: 1)
            assert read_message(proc, 60.0) == {"ready": True, "shares": True}
            rc, out, err = reap(proc, 20.0)
            if rc == 0:  # the write raised: the frame is unchanged
                assert '"value": 1' in out and '"error": null' not in out, out
            else:
                assert rc == -signal.SIGSEGV, (rc, out, err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
