# SPDX-License-Identifier: Apache-2.0
"""The four ways gpu_bench.py hands a frame to a consumer that wants a CUDA tensor (the roles
that run them are in gpu_roles.py):

- ``bips``: a GPU pool. The producer writes the frame on its stream and calls
  ``publish(buf, stream=s)``; the consumer's ``torch.from_dlpack(frame)`` *is* the pool buffer;
  ``frame.release(stream=...)`` gives it back after the consumer's GPU work. No copy anywhere.
- ``host``: today's way (examples/pytorch_consumer): a host pool; the consumer copies the frame
  into pinned memory (one host copy), uploads it (one host-to-device copy per consumer) into a
  device tensor allocated once, and waits for the upload before it reuses the pinned buffer.
- ``torchmp``: torch.multiprocessing's CUDA tensor sharing: a ring of CUDA tensors; every frame
  the producer pickles the slot's tensor to each consumer (torch's reductions: an IPC memory
  handle, a refcount, an interprocess event recorded on the producer's stream that the consumer's
  stream waits on). Consumers keep the last tensor of each slot, so torch's cache keeps each IPC
  mapping open (its best case). Credits go back once the consumer's GPU work is done.
- ``cupy``: CuPy's legacy IPC: cudaMalloc'ed slots, ``ipcGetMemHandle`` once per slot, opened
  once by each consumer; per frame the producer synchronizes its stream and sends the slot index
  down a pipe; credits come back the same way.

Every frame: the producer writes a marker byte (``seq & 0xFF``) into element 0 on the GPU (on the
host for ``host``), then hands the frame off. Producer and consumers also talk through a pipe of
their own (``Peer``, ``Mailbox``): the baselines' handles, slots and credits, and for everyone the
latency cases' pacing (a consumer says DONE once it has measured a frame).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing.connection as mpc
import pickle
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from gpu_crew import Ctl
from harness import CAPACITY, SIZES, Size

IMPLS = ("bips", "host", "torchmp", "cupy")
GPU_SIZES = {
    "64B": SIZES["64B"],
    "1920x1080x3": Size("1920x1080x3", (1080, 1920, 3), 1080 * 1920 * 3),
    "3840x2160x3": SIZES["3840x2160x3"],
}
# Host copies and host-to-device bytes per frame and consumer, by construction (the marker write
# and the latency cases' one-byte read-back are the measurement's own and not counted).
HOST_COPIES = {"bips": 0, "host": 1, "torchmp": 0, "cupy": 0}

HEADER = struct.Struct("<qqqq")  # case id, seq (or a code below), slot, t_pub_ns
END, SETUP, CREDIT, BYE, DONE = -1, -2, -3, -4, -5
META = struct.Struct("<q")  # bips frames carry t_pub_ns in their metadata
WAIT_S = 10.0  # no single wait for a frame, a buffer or a credit takes longer


def h2d_bytes(impl: str, size: Size) -> int:
    return size.nbytes if impl == "host" else 0


class Dev:
    """torch on cuda:0, or on the CPU in a dry run (which checks the choreography only)."""

    def __init__(self, dry_run: bool) -> None:
        import torch

        self.torch = torch
        self.dry = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda:0")

    def stream(self) -> Any:
        return None if self.dry else self.torch.cuda.Stream()

    def on(self, stream: Any) -> Any:
        return contextlib.nullcontext() if stream is None else self.torch.cuda.stream(stream)

    def current(self) -> Any:
        return None if self.dry else self.torch.cuda.current_stream()

    def sync(self, stream: Any = None) -> None:
        if not self.dry:
            (stream or self.torch.cuda.current_stream()).synchronize()

    def bytes(self, n: int, pinned: bool = False, host: bool = False) -> Any:
        pin = pinned and not self.dry
        device = "cpu" if host else self.device
        return self.torch.empty(n, dtype=self.torch.uint8, device=device, pin_memory=pin)

    def reset_peak(self) -> None:
        if not self.dry:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        return 0 if self.dry else int(self.torch.cuda.max_memory_allocated())


Message = tuple[int, int, int, memoryview]  # seq (or a code), slot, t_pub_ns, payload


class Peer:
    """One end of a producer-consumer pipe: framed messages (HEADER + optional pickled payload)
    of one case. Messages of other cases (an aborted one) are dropped unread, never unpickled;
    those of this case that arrived before we looked (the peer was set up first) are kept."""

    def __init__(self, conn: Any, ctl: Ctl) -> None:
        self.conn, self.ctl = conn, ctl
        self.pending: collections.deque[Message] = collections.deque()
        self.take_all()

    def take_all(self) -> None:
        while self.conn.poll(0):
            data = memoryview(self.conn.recv_bytes())
            case_id, seq, slot, t_pub = HEADER.unpack_from(data)
            if case_id == self.ctl.case_id:
                self.pending.append((seq, slot, t_pub, data[HEADER.size :]))

    def send(self, seq: int, slot: int = 0, t_pub: int = 0, payload: bytes = b"") -> None:
        self.conn.send_bytes(HEADER.pack(self.ctl.case_id, seq, slot, t_pub) + payload)

    def recv(self, timeout: float = WAIT_S) -> Message:
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.conn.poll(0.05):
                self.take_all()
                continue
            self.ctl.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message from the peer within {timeout} s")
        return self.pending.popleft()


class Mailbox:
    """The producer's side of its consumers' pipes: credits per slot, frames done, goodbyes."""

    def __init__(self, conns: list[Any], ctl: Ctl) -> None:
        self.ctl = ctl
        self.peers = [Peer(c, ctl) for c in conns]
        self.owed = [0] * CAPACITY  # credits still out, per ring slot
        self.done = 0  # DONE messages so far
        self.byes = 0

    def send_all(self, seq: int, slot: int = 0, t_pub: int = 0, payload: bytes = b"") -> None:
        for peer in self.peers:
            peer.send(seq, slot, t_pub, payload)

    def wait(self, until: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            for peer in self.peers:
                peer.take_all()
                while peer.pending:
                    seq, slot, _, _ = peer.pending.popleft()
                    if seq == CREDIT:
                        self.owed[slot] -= 1
                    elif seq == DONE:
                        self.done += 1
                    elif seq == BYE:
                        self.byes += 1
            if until():
                return
            if not mpc.wait([p.conn for p in self.peers], 0.05):
                self.ctl.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {WAIT_S} s for {what}")


def dumps(obj: Any) -> bytes:
    """Pickles with multiprocessing's pickler, which carries torch's reductions (a CUDA tensor
    becomes an IPC handle, not a copy)."""
    from multiprocessing.reduction import ForkingPickler

    return bytes(ForkingPickler.dumps(obj))


@dataclass
class Got:
    """A frame a consumer holds: its sequence number, the producer's stamp, when the consumer
    had a usable CUDA tensor, the tensor, and what to give back."""

    seq: int
    t_pub: int
    t_tensor: int
    tensor: Any
    frame: Any = None
    slot: int = 0


# --- producers -------------------------------------------------------------------------------


class BipsProducer:
    """A bips pool, on the GPU (``impl`` bips) or on the host (``impl`` host)."""

    def __init__(self, ctl: Ctl, mail: Mailbox, name: str, size: Size, dev: Dev, gpu: bool):
        import bips

        self.ctl, self.dev, self.gpu = ctl, dev, gpu
        kwargs: dict[str, Any] = {"capacity": CAPACITY, "policy": "block", "meta_size": 16}
        if gpu and not dev.dry:
            kwargs["device"] = "cuda:0"
        self.prod = bips.Producer(name, **kwargs, **size.bips_kwargs())
        self.timeout = bips.Timeout
        self.stream = dev.stream() if gpu else None

    def after_ready(self) -> None:
        pass

    def _acquire(self) -> Any:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                return self.prod.acquire(timeout=0.1)
            except self.timeout:
                self.ctl.check()
                if time.monotonic() > deadline:
                    raise

    def publish(self, seq: int) -> None:
        buf = self._acquire()
        meta = META.pack(time.monotonic_ns())
        if not self.gpu:
            buf.numpy().reshape(-1)[0] = seq & 0xFF
            self.prod.publish(buf, meta=meta)
            return
        with self.dev.on(self.stream):
            self.dev.torch.from_dlpack(buf).view(-1)[:1].fill_(seq & 0xFF)
        if self.dev.dry:
            self.prod.publish(buf, meta=meta)
        else:
            self.prod.publish(buf, meta=meta, stream=self.stream)

    def finish(self) -> None:
        self.dev.sync(self.stream)
        self.prod.close()  # consumers drain what is queued, then get ProducerGone

    def close(self) -> None:
        self.prod.close()


class RingProducer:
    """The base of the two baselines that keep a ring of CAPACITY device buffers and hand slots
    out by message: a slot is reused once every consumer sent its credit back."""

    def __init__(self, ctl: Ctl, mail: Mailbox, size: Size, dev: Dev) -> None:
        self.ctl, self.mail, self.dev, self.size = ctl, mail, dev, size

    def publish(self, seq: int) -> None:
        slot = seq % CAPACITY
        self.mail.wait(lambda: self.mail.owed[slot] == 0, f"the credits of slot {slot}")
        self._hand_off(seq, slot, time.monotonic_ns())
        self.mail.owed[slot] = len(self.mail.peers)

    def _hand_off(self, seq: int, slot: int, t_pub: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """End of stream; returns once every consumer let go of the ring (BYE)."""
        self.mail.send_all(END)
        self.mail.wait(lambda: self.mail.byes == len(self.mail.peers), "the consumers' BYE")

    def close(self) -> None:
        pass


class TorchMpProducer(RingProducer):
    def __init__(self, ctl: Ctl, mail: Mailbox, name: str, size: Size, dev: Dev) -> None:
        super().__init__(ctl, mail, size, dev)
        import torch.multiprocessing  # noqa: F401 - torch's reductions for the pickler

        self.ring = [dev.bytes(size.nbytes) for _ in range(CAPACITY)]
        self.stream = dev.stream()

    def after_ready(self) -> None:
        # Each slot once, so that consumers open every IPC handle before the window.
        for slot, t in enumerate(self.ring):
            for peer in self.mail.peers:
                peer.send(SETUP, slot, 0, dumps(t))

    def _hand_off(self, seq: int, slot: int, t_pub: int) -> None:
        with self.dev.on(self.stream):
            self.ring[slot][:1].fill_(seq & 0xFF)
            for peer in self.mail.peers:  # torch records its IPC event on the current stream
                peer.send(seq, slot, t_pub, dumps(self.ring[slot]))

    def close(self) -> None:
        self.ring = []
        if not self.dev.dry:
            self.dev.torch.cuda.ipc_collect()


class CupyProducer(RingProducer):
    def __init__(self, ctl: Ctl, mail: Mailbox, name: str, size: Size, dev: Dev) -> None:
        super().__init__(ctl, mail, size, dev)
        import cupy

        self.cupy = cupy
        rt = cupy.cuda.runtime
        self.ptrs: list[int] = []
        for _ in range(CAPACITY):
            self.ptrs.append(rt.malloc(max(size.nbytes, 512)))  # cudaMalloc, not CuPy's pool
        self.arrays = [_cupy_bytes(cupy, p, size.nbytes, self) for p in self.ptrs]
        self.handles = [bytes(rt.ipcGetMemHandle(p)) for p in self.ptrs]
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def after_ready(self) -> None:
        self.mail.send_all(SETUP, 0, 0, pickle.dumps(self.handles))

    def _hand_off(self, seq: int, slot: int, t_pub: int) -> None:
        with self.stream:
            self.arrays[slot][:1].fill(seq & 0xFF)
        self.stream.synchronize()  # no ordering across processes otherwise
        self.mail.send_all(seq, slot, t_pub)

    def close(self) -> None:
        self.arrays = []
        for p in self.ptrs:
            self.cupy.cuda.runtime.free(p)
        self.ptrs = []


def _cupy_bytes(cupy: Any, ptr: int, n: int, owner: Any) -> Any:
    mem = cupy.cuda.UnownedMemory(ptr, n, owner)
    return cupy.ndarray((n,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(mem, 0))


# --- consumers -------------------------------------------------------------------------------


class BipsConsumer:
    def __init__(self, ctl: Ctl, peer: Peer, name: str, size: Size, dev: Dev, gpu: bool) -> None:
        import bips

        self.ctl, self.dev, self.gpu = ctl, dev, gpu
        self.errors = (bips.Timeout, bips.ProducerGone)
        self.cons = bips.Consumer(name, timeout=WAIT_S)
        self.acc = dev.bytes(8)
        if not gpu:  # host: pinned staging and a device tensor, both made once
            self.staging = dev.bytes(size.nbytes, pinned=True, host=True)
            self.upload = dev.bytes(size.nbytes)

    def next(self) -> Got | None:
        timeout, gone = self.errors
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                frame = self.cons.receive(timeout=0.1)
                break
            except timeout:
                self.ctl.check()
                if time.monotonic() > deadline:
                    raise
            except gone:
                return None
        (t_pub,) = META.unpack_from(frame.meta)
        torch = self.dev.torch
        if self.gpu:
            t = torch.from_dlpack(frame).view(-1)  # the pool buffer itself
            return Got(frame.seq, t_pub, time.monotonic_ns(), t, frame)
        self.staging.copy_(torch.from_dlpack(frame).view(-1))  # the host copy
        seq = frame.seq
        frame.release()
        self.upload.copy_(self.staging, non_blocking=True)
        return Got(seq, t_pub, time.monotonic_ns(), self.upload)

    def use(self, got: Got) -> None:
        self.acc.copy_(got.tensor[:8])

    def done(self, got: Got, synced: bool) -> None:
        got.tensor = None
        if not self.gpu:
            if not synced:
                self.dev.sync()  # the next frame overwrites the pinned buffer
        elif self.dev.dry:
            got.frame.release()
        else:
            got.frame.release(stream=self.dev.current())  # after the read, without waiting

    def close(self) -> None:
        self.cons.close()


class RingConsumer:
    def __init__(self, ctl: Ctl, peer: Peer, size: Size, dev: Dev) -> None:
        self.ctl, self.peer, self.dev = ctl, peer, dev
        self.acc = dev.bytes(8)

    def use(self, got: Got) -> None:
        self.acc.copy_(got.tensor[:8])

    def done(self, got: Got, synced: bool) -> None:
        if not synced:
            self.dev.sync()  # a credit means "overwrite it": our read must be over
        got.tensor = None
        self.peer.send(CREDIT, got.slot)

    def close(self) -> None:
        self.peer.send(BYE)


class TorchMpConsumer(RingConsumer):
    def __init__(self, ctl: Ctl, peer: Peer, name: str, size: Size, dev: Dev) -> None:
        super().__init__(ctl, peer, size, dev)
        import torch.multiprocessing  # noqa: F401 - torch's reductions for the pickler

        self.keep: list[Any] = [None] * CAPACITY
        for _ in range(CAPACITY):
            seq, slot, _, payload = self.peer.recv(60.0)
            if seq != SETUP:
                raise RuntimeError(f"expected the ring's tensors first, got message {seq}")
            self.keep[slot] = pickle.loads(payload)

    def next(self) -> Got | None:
        seq, slot, t_pub, payload = self.peer.recv()
        if seq == END:
            return None
        t = pickle.loads(payload)  # a cached mapping; the stream waits on the producer's event
        self.keep[slot] = t
        return Got(seq, t_pub, time.monotonic_ns(), t, slot=slot)

    def close(self) -> None:
        self.keep = []
        super().close()


class CupyConsumer(RingConsumer):
    def __init__(self, ctl: Ctl, peer: Peer, name: str, size: Size, dev: Dev) -> None:
        super().__init__(ctl, peer, size, dev)
        import cupy

        self.cupy = cupy
        seq, _, _, payload = self.peer.recv(60.0)
        if seq != SETUP:
            raise RuntimeError(f"expected the IPC handles first, got message {seq}")
        rt = cupy.cuda.runtime
        self.ptrs: list[int] = []
        for handle in pickle.loads(payload):
            self.ptrs.append(rt.ipcOpenMemHandle(handle))
        self.arrays = [_cupy_bytes(cupy, p, size.nbytes, self) for p in self.ptrs]
        self.cacc = cupy.zeros(8, dtype=cupy.uint8)

    def next(self) -> Got | None:
        seq, slot, t_pub, _ = self.peer.recv()
        if seq == END:
            return None
        return Got(seq, t_pub, time.monotonic_ns(), self.arrays[slot], slot=slot)

    def use(self, got: Got) -> None:
        self.cacc[...] = got.tensor[:8]

    def done(self, got: Got, synced: bool) -> None:
        if not synced:
            self.cupy.cuda.get_current_stream().synchronize()
        got.tensor = None
        self.peer.send(CREDIT, got.slot)

    def close(self) -> None:
        self.arrays = []
        for p in self.ptrs:
            self.cupy.cuda.runtime.ipcCloseMemHandle(p)
        self.ptrs = []
        super().close()


def make_producer(impl: str, ctl: Ctl, mail: Mailbox, name: str, size: Size, dev: Dev) -> Any:
    if impl in ("bips", "host"):
        return BipsProducer(ctl, mail, name, size, dev, gpu=impl == "bips")
    if impl == "torchmp":
        return TorchMpProducer(ctl, mail, name, size, dev)
    if impl == "cupy":
        return CupyProducer(ctl, mail, name, size, dev)
    raise ValueError(impl)


def make_consumer(impl: str, ctl: Ctl, peer: Peer, name: str, size: Size, dev: Dev) -> Any:
    if impl in ("bips", "host"):
        return BipsConsumer(ctl, peer, name, size, dev, gpu=impl == "bips")
    if impl == "torchmp":
        return TorchMpConsumer(ctl, peer, name, size, dev)
    if impl == "cupy":
        return CupyConsumer(ctl, peer, name, size, dev)
    raise ValueError(impl)
