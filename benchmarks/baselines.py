# SPDX-License-Identifier: Apache-2.0
"""What bips is compared with, built the way a careful Python programmer would without it
(and, in iceoryx2_baseline.py, iceoryx2's zero-copy publish-subscribe).

The two home-made ones keep CAPACITY slots in one multiprocessing.shared_memory segment. A slot is a 64-byte
header (int64 seq, int64 timestamp_ns) followed by the payload; consumers read the payload
through numpy views made once at start (cheaper than bips, which makes a view per frame).

* ``pipe``: shared-memory ring + pipes. The producer writes slot i and sends i (4 bytes) down
  one pipe per consumer; each consumer reads the slot and sends i back as a credit on one shared
  pipe. Slot i is reused once every consumer gave it back. Raw os.read/os.write on the pipes'
  descriptors: one syscall per message, no pickling.
* ``sem``: shared-memory ring + named POSIX semaphores (posix_ipc). One (empty, full) counting
  pair per consumer: the producer takes `empty` of every consumer, writes, posts every `full`.

Resources are created by the parent (``PipeRing.create`` / ``SemRing.create``) and attached by
name in the workers; the parent's ``cleanup`` removes them after the case.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, Callable

from harness import CAPACITY, CpuMeter, Size, WorkerControl, run_window
from iceoryx2_baseline import (
    IoxResources,
    iox_handoff_consumer,
    iox_handoff_producer,
    iox_latency_consumer,
    iox_latency_producer,
)

HEADER = 64
HDR = struct.Struct("qq")  # seq, timestamp_ns
IDX = struct.Struct("I")
END_SEQ = -1
END_INDEX = 0xFFFFFFFF


def slot_stride(nbytes: int) -> int:
    align = 4096 if nbytes >= 4096 else 64
    return (HEADER + nbytes + align - 1) // align * align


class Ring:
    """CAPACITY slots in one SharedMemory segment, with one numpy view per slot's payload."""

    def __init__(self, name: str, size: Size, create: bool = False) -> None:
        from multiprocessing import shared_memory

        import numpy as np

        self.size = size
        self.stride = slot_stride(size.nbytes)
        self.shm = shared_memory.SharedMemory(
            name=name, create=create, size=CAPACITY * self.stride if create else 0
        )
        buf = self.shm.buf
        assert buf is not None
        self.buf: memoryview = buf
        self.offsets = [i * self.stride for i in range(CAPACITY)]
        self.views = [
            np.ndarray(size.array_shape(), np.uint8, buffer=self.buf, offset=off + HEADER)
            for off in self.offsets
        ]

    def prefault(self) -> None:
        for v in self.views:
            v[...] = 0

    def close(self) -> None:
        # numpy views export the mapping: drop them first or SharedMemory.close() refuses.
        self.views = []
        del self.buf
        self.shm.close()


# ---- pipe ring ------------------------------------------------------------------------------


class PipeRing:
    """Parent-side resources of one pipe-ring case."""

    def __init__(self, ctx: Any, name: str, size: Size, consumers: int) -> None:
        self.name = name
        self.ring = Ring(name, size, create=True)
        self.index = [ctx.Pipe(duplex=False) for _ in range(consumers)]  # (reader, writer)
        self.credit = ctx.Pipe(duplex=False)

    def producer_kwargs(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index_w": [w for _, w in self.index],
            "credit_r": self.credit[0],
        }

    def consumer_kwargs(self, c: int) -> dict[str, Any]:
        return {"name": self.name, "index_r": self.index[c][0], "credit_w": self.credit[1]}

    def cleanup(self) -> None:
        for r, w in self.index + [self.credit]:
            r.close()
            w.close()
        self.ring.close()
        self.ring.shm.unlink()


class _PipeProducer:
    def __init__(self, name: str, size: Size, index_w: list[Any], credit_r: Any) -> None:
        self.ring = Ring(name, size)
        self.wfds = [w.fileno() for w in index_w]
        self.rfd = credit_r.fileno()
        self.refs = [0] * CAPACITY
        self.recs = [IDX.pack(i) for i in range(CAPACITY)]

    def take(self, i: int) -> None:
        """Waits until every consumer gave slot i back."""
        refs = self.refs
        while refs[i]:
            for j in memoryview(os.read(self.rfd, 4096)).cast("I"):
                refs[j] -= 1

    def send(self, i: int) -> None:
        rec = self.recs[i]
        for fd in self.wfds:
            os.write(fd, rec)
        self.refs[i] = len(self.wfds)

    def finish(self) -> None:
        end = IDX.pack(END_INDEX)
        for fd in self.wfds:
            os.write(fd, end)
        self.ring.close()


def pipe_latency_producer(
    ctl: WorkerControl, name: str, size: Size, interval_s: float, index_w: list[Any], credit_r: Any
) -> dict[str, Any]:
    p = _PipeProducer(name, size, index_w, credit_r)
    ctl.ready()
    start, end = ctl.wait_go()
    meter = CpuMeter(start, end)
    mono = time.monotonic_ns
    buf, offs = p.ring.buf, p.ring.offsets
    n = 0
    while (t := mono()) < end:
        meter.frame(t)
        i = n % CAPACITY
        p.take(i)
        time.sleep(interval_s)
        HDR.pack_into(buf, offs[i], n, mono())
        p.send(i)
        n += 1
    p.finish()
    return {"published": n, **meter.result()}


def pipe_latency_consumer(
    ctl: WorkerControl, name: str, size: Size, index_r: Any, credit_w: Any
) -> dict[str, Any]:
    ring = Ring(name, size)
    rfd, wfd = index_r.fileno(), credit_w.fileno()
    ctl.ready()
    start, end = ctl.wait_go()
    meter = CpuMeter(start, end)
    mono = time.monotonic_ns
    buf, offs, views = ring.buf, ring.offsets, ring.views
    wake: list[int] = []
    ready: list[int] = []
    while True:
        rec = os.read(rfd, 4)
        t_wake = mono()
        (i,) = IDX.unpack(rec)
        if i == END_INDEX:
            break
        views[i].item(0)
        t_ready = mono()
        if meter.frame(t_wake):
            ts = HDR.unpack_from(buf, offs[i])[1]
            wake.append(t_wake - ts)
            ready.append(t_ready - ts)
        os.write(wfd, rec)
    ring.close()
    return {"wake_ns": wake, "ready_ns": ready, **meter.result()}


def pipe_handoff_producer(
    ctl: WorkerControl, name: str, size: Size, fill: bool, index_w: list[Any], credit_r: Any
) -> dict[str, Any]:
    p = _PipeProducer(name, size, index_w, credit_r)
    if fill:
        p.ring.prefault()
    ctl.ready()
    start, end = ctl.wait_go()
    buf, offs, views = p.ring.buf, p.ring.offsets, p.ring.views
    take, send, pack_into = p.take, p.send, HDR.pack_into
    seq = -1

    def step() -> int | None:
        nonlocal seq
        seq += 1
        i = seq % CAPACITY
        take(i)
        if fill:
            views[i][...] = seq & 0xFF
        pack_into(buf, offs[i], seq, 0)
        send(i)
        return seq

    try:
        return run_window(step, start, end, drain=False)
    finally:
        p.finish()


def pipe_handoff_consumer(
    ctl: WorkerControl, name: str, size: Size, index_r: Any, credit_w: Any
) -> dict[str, Any]:
    ring = Ring(name, size)
    rfd, wfd = index_r.fileno(), credit_w.fileno()
    ctl.ready()
    start, end = ctl.wait_go()
    buf, offs, views = ring.buf, ring.offsets, ring.views
    read, write, unpack, unpack_from = os.read, os.write, IDX.unpack, HDR.unpack_from

    def step() -> int | None:
        rec = read(rfd, 4)
        (i,) = unpack(rec)
        if i == END_INDEX:
            return None
        views[i].item(0)
        s: int = unpack_from(buf, offs[i])[0]
        write(wfd, rec)
        return s

    try:
        return run_window(step, start, end, drain=True)
    finally:
        ring.close()


# ---- semaphore ring -------------------------------------------------------------------------


def _sem_names(name: str, consumers: int) -> tuple[list[str], list[str]]:
    return (
        [f"/{name}-e{c}" for c in range(consumers)],
        [f"/{name}-f{c}" for c in range(consumers)],
    )


class SemRing:
    """Parent-side resources of one semaphore-ring case."""

    def __init__(self, ctx: Any, name: str, size: Size, consumers: int) -> None:
        import posix_ipc

        self.name = name
        self.ring = Ring(name, size, create=True)
        self.empty_names, self.full_names = _sem_names(name, consumers)
        self.sems = []
        for n in self.empty_names:
            self.sems.append(posix_ipc.Semaphore(n, posix_ipc.O_CREX, initial_value=CAPACITY))
        for n in self.full_names:
            self.sems.append(posix_ipc.Semaphore(n, posix_ipc.O_CREX, initial_value=0))

    def producer_kwargs(self) -> dict[str, Any]:
        return {"name": self.name, "empty": self.empty_names, "full": self.full_names}

    def consumer_kwargs(self, c: int) -> dict[str, Any]:
        return {"name": self.name, "empty": self.empty_names[c], "full": self.full_names[c]}

    def cleanup(self) -> None:
        for s in self.sems:
            s.unlink()
            s.close()
        self.ring.close()
        self.ring.shm.unlink()


def _open_sems(names: list[str]) -> list[Any]:
    import posix_ipc

    return [posix_ipc.Semaphore(n) for n in names]


def _sem_finish(ring: Ring, seq: int, empties: list[Any], fulls: list[Any]) -> None:
    i = seq % CAPACITY
    for e in empties:
        e.acquire()
    HDR.pack_into(ring.buf, ring.offsets[i], END_SEQ, 0)
    for f in fulls:
        f.release()
    for s in empties + fulls:
        s.close()
    ring.close()


def sem_latency_producer(
    ctl: WorkerControl, name: str, size: Size, interval_s: float, empty: list[str], full: list[str]
) -> dict[str, Any]:
    ring = Ring(name, size)
    empties, fulls = _open_sems(empty), _open_sems(full)
    ctl.ready()
    start, end = ctl.wait_go()
    meter = CpuMeter(start, end)
    mono = time.monotonic_ns
    buf, offs = ring.buf, ring.offsets
    n = 0
    while (t := mono()) < end:
        meter.frame(t)
        i = n % CAPACITY
        for e in empties:
            e.acquire()
        time.sleep(interval_s)
        HDR.pack_into(buf, offs[i], n, mono())
        for f in fulls:
            f.release()
        n += 1
    _sem_finish(ring, n, empties, fulls)
    return {"published": n, **meter.result()}


def sem_latency_consumer(
    ctl: WorkerControl, name: str, size: Size, empty: str, full: str
) -> dict[str, Any]:
    ring = Ring(name, size)
    (e, f) = _open_sems([empty, full])
    ctl.ready()
    start, end = ctl.wait_go()
    meter = CpuMeter(start, end)
    mono = time.monotonic_ns
    buf, offs, views = ring.buf, ring.offsets, ring.views
    wake: list[int] = []
    ready: list[int] = []
    k = 0
    while True:
        f.acquire()
        t_wake = mono()
        i = k % CAPACITY
        k += 1
        seq, ts = HDR.unpack_from(buf, offs[i])
        if seq == END_SEQ:
            break
        views[i].item(0)
        t_ready = mono()
        if meter.frame(t_wake):
            wake.append(t_wake - ts)
            ready.append(t_ready - ts)
        e.release()
    e.close()
    f.close()
    ring.close()
    return {"wake_ns": wake, "ready_ns": ready, **meter.result()}


def sem_handoff_producer(
    ctl: WorkerControl, name: str, size: Size, fill: bool, empty: list[str], full: list[str]
) -> dict[str, Any]:
    ring = Ring(name, size)
    empties, fulls = _open_sems(empty), _open_sems(full)
    if fill:
        ring.prefault()
    ctl.ready()
    start, end = ctl.wait_go()
    buf, offs, views = ring.buf, ring.offsets, ring.views
    pack_into = HDR.pack_into
    seq = -1

    def step() -> int | None:
        nonlocal seq
        seq += 1
        i = seq % CAPACITY
        for e in empties:
            e.acquire()
        if fill:
            views[i][...] = seq & 0xFF
        pack_into(buf, offs[i], seq, 0)
        for f in fulls:
            f.release()
        return seq

    try:
        return run_window(step, start, end, drain=False)
    finally:
        _sem_finish(ring, seq + 1, empties, fulls)


def sem_handoff_consumer(
    ctl: WorkerControl, name: str, size: Size, empty: str, full: str
) -> dict[str, Any]:
    ring = Ring(name, size)
    (e, f) = _open_sems([empty, full])
    ctl.ready()
    start, end = ctl.wait_go()
    buf, offs, views = ring.buf, ring.offsets, ring.views
    acquire, release, unpack_from = f.acquire, e.release, HDR.unpack_from
    k = -1

    def step() -> int | None:
        nonlocal k
        acquire()
        k += 1
        i = k % CAPACITY
        s: int = unpack_from(buf, offs[i])[0]
        if s == END_SEQ:
            return None
        views[i].item(0)
        release()
        return s

    try:
        return run_window(step, start, end, drain=True)
    finally:
        e.close()
        f.close()
        ring.close()


# ---- reference: filling a private array -----------------------------------------------------


def numpy_fill(ctl: WorkerControl, size: Size) -> dict[str, Any]:
    """How fast this process fills the same kind of memory with numpy and no IPC at all:
    CAPACITY frame-sized slots of one shared-memory (tmpfs) segment, round robin, prefaulted,
    exactly the footprint and access pattern of the bips producer filling its pool."""
    from multiprocessing import shared_memory

    import numpy as np

    stride = slot_stride(size.nbytes)
    shm = shared_memory.SharedMemory(create=True, size=CAPACITY * stride)
    try:
        assert shm.buf is not None
        slots = [
            np.ndarray(size.array_shape(), np.uint8, buffer=shm.buf, offset=i * stride)
            for i in range(CAPACITY)
        ]
        for a in slots:
            a[...] = 0
        ctl.ready()
        start, end = ctl.wait_go()
        seq = -1

        def step() -> int | None:
            nonlocal seq
            seq += 1
            slots[seq % CAPACITY][...] = seq & 0xFF
            return seq

        return run_window(step, start, end, drain=False)
    finally:
        slots = []
        shm.close()
        shm.unlink()


# ---- how bench.py builds a case -------------------------------------------------------------

# name -> (resources class, latency producer/consumer, hand-off producer/consumer)
IMPLS: dict[
    str, tuple[type, Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]
] = {
    "pipe": (
        PipeRing,
        pipe_latency_producer,
        pipe_latency_consumer,
        pipe_handoff_producer,
        pipe_handoff_consumer,
    ),
    "sem": (
        SemRing,
        sem_latency_producer,
        sem_latency_consumer,
        sem_handoff_producer,
        sem_handoff_consumer,
    ),
    "iox": (
        IoxResources,
        iox_latency_producer,
        iox_latency_consumer,
        iox_handoff_producer,
        iox_handoff_consumer,
    ),
}
