# SPDX-License-Identifier: Apache-2.0
"""The processes of the GPU tests: producers and consumers of GPU pools, each in a process of its
own (``gpu_util.Children`` starts them with ``python -c``, never with fork, so every one has a
CUDA context of its own, as real users do).

A child runs one *role*, named with its JSON arguments on the command line, reports with
``emit(event, **fields)`` (one JSON line on stdout) and takes commands (``go``, ``stop``...) one
per line on stdin. An exception is reported as an ``error`` event with its traceback. Every wait
has a deadline, and a child dies with the test process (``PR_SET_PDEATHSIG``, set by the
prelude that ``helpers.PRELUDE`` puts before this module is imported).

Frames hold ``value(seq, dtype)`` in every element, so any consumer can check a whole frame
against its sequence number, on the GPU, in one comparison. Producers write them with *slow*
kernels (``torch.cuda._sleep`` before each half of the frame) right before
``publish(buf, stream=s)``: a consumer that saw a frame before the producer's stream finished
would see half of it old.

With ``BIPS_GPU_DRY_RUN=1`` every role runs on host pools and CPU tensors (no stream arguments,
sleeps on the CPU): a check of the choreography on a machine without a GPU; it proves nothing
about GPU pools.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import statistics
import sys
import time
import traceback
from typing import Any, Callable

import bips

DRY_RUN = os.environ.get("BIPS_GPU_DRY_RUN") == "1"
ATTACH_S = 120.0  # waits for a pool or a peer: another child may still be importing torch
FRAME_S = 30.0  # waits for one frame


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def value(seq: int, dtype: str) -> int:
    """What every element of frame ``seq`` holds: never 0 and different from the frames a few
    sequence numbers before or after it (a stale or half-written frame shows)."""
    return (seq % 200) + 17 if dtype == "uint8" else seq + 1000


def now_ns() -> int:
    return time.monotonic_ns()


class Commands:
    """Lines the test writes to our stdin, read with deadlines (select on the raw descriptor,
    so that two lines arriving together are not stuck in a buffer select cannot see)."""

    def __init__(self) -> None:
        self._buf = b""

    def poll(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([0], [], [], max(0.0, left))
            if not ready:
                return None
            chunk = os.read(0, 4096)
            if not chunk:
                raise SystemExit("stdin closed: the test is gone")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode().strip()

    def wait(self, want: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.poll(max(0.0, deadline - time.monotonic()))
            if got == want:
                return
            if got is None:
                raise TimeoutError(f"no {want!r} command from the test within {timeout} s")


class Gpu:
    """torch on cuda:0 (or, in a dry run, on the CPU) and the few stream helpers the roles use."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = "cpu" if DRY_RUN else "cuda:0"
        self.cycles_per_ms = 0.0
        if not DRY_RUN:
            torch.zeros(1, device=self.device)  # the CUDA context, now rather than mid-test
            self.cycles_per_ms = self._calibrate()

    def _calibrate(self) -> float:
        torch = self.torch
        torch.cuda._sleep(100_000)  # the clock ramps up under load; warm it first
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        cycles = 20_000_000
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return cycles / max(start.elapsed_time(end), 1e-3)

    def stream(self) -> Any:
        return None if DRY_RUN else self.torch.cuda.Stream()

    def on(self, stream: Any) -> Any:
        """``with gpu.on(s):`` makes ``s`` torch's current stream (nothing in a dry run)."""
        if stream is None:
            return contextlib.nullcontext()
        return self.torch.cuda.stream(stream)

    def sleep_ms(self, ms: float) -> None:
        """A kernel that keeps the current stream busy for about ``ms`` (the CPU sleeps, in a
        dry run)."""
        if ms <= 0:
            return
        if DRY_RUN:
            time.sleep(ms / 1e3)
        else:
            self.torch.cuda._sleep(max(1, int(ms * self.cycles_per_ms)))

    def sync(self, stream: Any = None) -> None:
        if DRY_RUN:
            return
        if stream is None:
            self.torch.cuda.synchronize()
        else:
            stream.synchronize()

    def producer(self, name: str, **kwargs: Any) -> Any:
        if not DRY_RUN:
            kwargs["device"] = self.device
        return bips.Producer(name, **kwargs)

    def publish(self, prod: Any, buf: Any, stream: Any) -> None:
        if DRY_RUN:
            prod.publish(buf)
        else:
            prod.publish(buf, stream=stream)

    def release(self, frame: Any, stream: Any) -> None:
        if DRY_RUN:
            frame.release()
        else:
            frame.release(stream=stream)

    def write_frame(self, buf: Any, seq: int, dtype: str, write_ms: float, stream: Any) -> None:
        """Fills ``buf`` with value(seq) on ``stream``: a slow kernel, half the frame, another
        slow kernel, the other half. Only enqueues (the CPU does not wait)."""
        v = value(seq, dtype)
        with self.on(stream):
            flat = self.torch.from_dlpack(buf).view(-1)
            half = flat.numel() // 2
            self.sleep_ms(write_ms)
            flat[:half].fill_(v)
            self.sleep_ms(write_ms)
            flat[half:].fill_(v)
            del flat

    def wrong_elements(self, tensor: Any, want: int) -> int:
        """How many elements differ from ``want``; compared on the current stream, then read
        back (which waits for that stream)."""
        return int((tensor != want).sum())


def wait_consumers(prod: Any, n: int, timeout: float = ATTACH_S) -> None:
    deadline = time.monotonic() + timeout
    while prod.stats.consumers < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} consumers attached within {timeout} s")
        time.sleep(0.005)


def cuda_pointer(obj: Any) -> int:
    return int(obj.__cuda_array_interface__["data"][0])


# --- producers -------------------------------------------------------------------------------


def producer(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Publishes ``frames`` frames once ``consumers`` are attached, each written by slow kernels
    on a stream of its own right before ``publish(buf, stream=s)``; reports how long publish()
    took (it must not wait for the GPU) and closes the pool once its stream is done."""
    torch = gpu.torch
    prod = gpu.producer(
        a["name"], capacity=a["capacity"], shape=tuple(a["shape"]), dtype=a["dtype"],
        policy=a.get("policy", "block"),
    )  # fmt: skip
    try:
        emit("ready")
        wait_consumers(prod, a["consumers"])
        s = gpu.stream()
        publish_ms: list[float] = []
        zero_copy = True
        for seq in range(a["frames"]):
            buf = prod.acquire(timeout=FRAME_S)
            if not DRY_RUN:
                zero_copy &= torch.from_dlpack(buf).data_ptr() == cuda_pointer(buf)
            gpu.write_frame(buf, seq, a["dtype"], a["write_ms"], s)
            t0 = time.perf_counter()
            gpu.publish(prod, buf, s)
            publish_ms.append((time.perf_counter() - t0) * 1e3)
            del buf
            if a.get("pace_ms"):
                time.sleep(a["pace_ms"] / 1e3)
        gpu.sync(s)
        emit(
            "published",
            frames=a["frames"],
            publish_ms_p50=statistics.median(publish_ms),
            publish_ms_max=max(publish_ms),
            zero_copy=zero_copy,
        )
    finally:
        prod.close()
    emit("closed")


def ticker(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Publishes a frame every ``every_ms`` until the test says ``stop`` (consumers may come and
    go meanwhile)."""
    prod = gpu.producer(a["name"], capacity=a["capacity"], shape=tuple(a["shape"]), dtype=a["dtype"],
                        policy="drop_oldest")  # fmt: skip
    try:
        emit("ready", uuid=device_uuid(gpu))
        s = gpu.stream()
        seq = 0
        deadline = time.monotonic() + a.get("max_s", 240.0)
        while time.monotonic() < deadline:
            if cmd.poll(a["every_ms"] / 1e3) == "stop":
                break
            try:
                buf = prod.acquire(timeout=1.0)
            except bips.Timeout:
                continue  # every buffer held: consumers are slow, or one is being killed
            gpu.write_frame(buf, seq, a["dtype"], a.get("write_ms", 1.0), s)
            gpu.publish(prod, buf, s)
            del buf
            seq += 1
        gpu.sync(s)
        emit("stopped", published=seq)
    finally:
        prod.close()


def device_uuid(gpu: Gpu) -> str | None:
    """cuda:0's UUID in the form CUDA_VISIBLE_DEVICES takes ("GPU-..."), or None."""
    if DRY_RUN:
        return None
    try:
        uuid = str(gpu.torch.cuda.get_device_properties(0).uuid)
    except (AttributeError, RuntimeError):
        return None
    uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    return (
        uuid
        if re.fullmatch(r"GPU-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", uuid)
        else None
    )


def overwriter(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Publishes one frame of value ``a["value"]``; on ``go``, acquires every buffer it can get
    (policy drop_oldest: it takes back whatever no consumer holds) and overwrites each with
    ``a["poison"]``, until ``stop``. Reports when it first got each buffer index."""
    torch = gpu.torch
    prod = gpu.producer(a["name"], capacity=a["capacity"], shape=tuple(a["shape"]), dtype="int32",
                        policy="drop_oldest")  # fmt: skip
    try:
        emit("ready")
        wait_consumers(prod, 1)
        s = gpu.stream()
        buf = prod.acquire(timeout=FRAME_S)
        first = buf.index
        with gpu.on(s):
            torch.from_dlpack(buf).fill_(a["value"])
        gpu.publish(prod, buf, s)
        del buf
        gpu.sync(s)
        emit("published", index=first)
        cmd.wait("go", ATTACH_S)
        first_at: dict[int, int] = {}
        overwrites = 0
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and cmd.poll(0) != "stop":
            try:
                buf = prod.acquire(timeout=0.05)
            except bips.Timeout:
                continue
            first_at.setdefault(buf.index, now_ns())
            with gpu.on(s):
                torch.from_dlpack(buf).fill_(a["poison"])
            gpu.publish(prod, buf, s)
            del buf
            overwrites += 1
        gpu.sync(s)
        emit("result", overwrites=overwrites, first_at={str(k): v for k, v in first_at.items()})
    finally:
        prod.close()


def reclaimer(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Publishes ``capacity`` frames to two consumers; on ``reclaim`` (after the test killed
    one), acquires every buffer within ``reclaim_s`` and publishes them again as new frames;
    closes on ``close``."""
    cap, dtype = a["capacity"], "int32"
    prod = gpu.producer(a["name"], capacity=cap, shape=tuple(a["shape"]), dtype=dtype)
    try:
        emit("ready")
        wait_consumers(prod, 2)
        s = gpu.stream()
        for seq in range(cap):
            buf = prod.acquire(timeout=FRAME_S)
            gpu.write_frame(buf, seq, dtype, 1.0, s)
            gpu.publish(prod, buf, s)
            del buf
        gpu.sync(s)
        emit("published", frames=cap)
        cmd.wait("reclaim", ATTACH_S)
        t0 = time.monotonic()
        deadline = t0 + a["reclaim_s"]
        bufs = []
        while len(bufs) < cap and time.monotonic() < deadline:
            try:
                bufs.append(prod.acquire(timeout=min(0.5, max(0.0, deadline - time.monotonic()))))
            except bips.Timeout:
                pass
        seconds = time.monotonic() - t0
        indices = sorted(b.index for b in bufs)
        for i, buf in enumerate(bufs):  # the buffers work: new frames go through them
            gpu.write_frame(buf, cap + i, dtype, 0.0, s)
            gpu.publish(prod, buf, s)
        del bufs
        gpu.sync(s)
        emit("reclaimed", n=len(indices), seconds=seconds, indices=indices)
        cmd.wait("close", ATTACH_S)
    finally:
        prod.close()
    emit("closed")


def doomed(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Publishes frame 0; enqueues a long kernel and publishes frame 1 behind it (a publish still
    pending on the stream); then waits to be SIGKILLed."""
    dtype = "int32"
    prod = gpu.producer(a["name"], capacity=4, shape=tuple(a["shape"]), dtype=dtype)
    emit("ready")
    wait_consumers(prod, 1)
    s = gpu.stream()
    buf = prod.acquire(timeout=FRAME_S)
    gpu.write_frame(buf, 0, dtype, 1.0, s)
    gpu.publish(prod, buf, s)
    gpu.sync(s)
    buf = prod.acquire(timeout=FRAME_S)
    gpu.write_frame(buf, 1, dtype, a["pending_ms"], s)
    gpu.publish(prod, buf, s)
    del buf
    emit("published")
    time.sleep(600)  # the test kills us; no close(), no cleanup: that is the point


# --- consumers -------------------------------------------------------------------------------


def consumer(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Receives until end of stream (or ``frames`` frames) and checks every element of every
    frame against its sequence number, reading on a stream of its own; reports the sequence
    numbers, the frames that were wrong, and whether each tensor was the pool buffer."""
    torch = gpu.torch
    dtype = a["dtype"]
    cons = bips.Consumer(a["name"], timeout=ATTACH_S, latest=a.get("latest", False))
    try:
        emit("attached")
        s = gpu.stream()
        seqs: list[int] = []
        bad: list[dict[str, Any]] = []
        devices: set[str] = set()
        zero_copy = True
        want_frames = a.get("frames")
        while want_frames is None or len(seqs) < want_frames:
            try:
                frame = cons.receive(timeout=FRAME_S)
            except bips.ProducerGone:
                break
            seq = frame.seq
            devices.add(str(getattr(frame, "device", "cpu")))
            with gpu.on(s):
                t = torch.from_dlpack(frame)
                devices.add(str(t.device))
                if not DRY_RUN:
                    zero_copy &= t.data_ptr() == cuda_pointer(frame)
                wrong = gpu.wrong_elements(t, value(seq, dtype))
                if wrong:
                    bad.append(
                        {"seq": seq, "wrong": wrong, "min": int(t.min()), "max": int(t.max())}
                    )
                del t
            gpu.release(frame, s)
            del frame
            seqs.append(seq)
            if a.get("hold_ms"):
                time.sleep(a["hold_ms"] / 1e3)
        stats = cons.stats
        emit(
            "done",
            seqs=seqs,
            bad=bad[:10],
            bad_frames=len(bad),
            devices=sorted(devices),
            zero_copy=zero_copy,
            received=stats.received,
            skipped=stats.skipped,
            dropped=stats.dropped,
        )
    finally:
        cons.close()


def hold_reader(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Receives one frame, reads it on stream s *after* a long kernel (``sleep_ms``), gives the
    frame back at once (``release(stream=s)``, or with ``mode="views"`` a plain ``release()``
    while the tensor made on s is still alive, then drops the tensor), and reports whether the
    copy it read after the kernel still held the frame's value."""
    torch = gpu.torch
    cons = bips.Consumer(a["name"], timeout=ATTACH_S)
    try:
        emit("attached")
        frame = cons.receive(timeout=FRAME_S)
        index, seq = frame.index, frame.seq
        s = gpu.stream()
        with gpu.on(s):
            t = torch.from_dlpack(frame)
            gpu.sleep_ms(a["sleep_ms"])
            out = t.clone()  # reads the frame when the long kernel is done
        t_release = now_ns()
        if a["mode"] == "release_stream":
            gpu.release(frame, s)
            del t
        else:  # the views' lifetime rule: the tensor holds the buffer until s has finished
            frame.release()
            del t
        del frame
        release_ms = (now_ns() - t_release) / 1e6  # must not wait for the kernel
        emit("released", index=index, seq=seq, t_release=t_release, release_ms=release_ms)
        gpu.sync(s)
        t_done = now_ns()
        wrong = gpu.wrong_elements(out, a["value"])
        emit("result", wrong=wrong, min=int(out.min()), max=int(out.max()), t_done=t_done)
    finally:
        cons.close()


def victim(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Receives ``frames`` frames, makes a tensor of each on stream s, queues a long kernel and
    reads on s, releases half of them with release(stream=s) (still pending on the GPU) and
    holds the rest; then waits to be SIGKILLed."""
    torch = gpu.torch
    cons = bips.Consumer(a["name"], timeout=ATTACH_S)
    emit("attached")
    frames = [cons.receive(timeout=FRAME_S) for _ in range(a["frames"])]
    s = gpu.stream()
    with gpu.on(s):
        views = [torch.from_dlpack(f) for f in frames]
        gpu.sleep_ms(a["sleep_ms"])
        copies = [v.clone() for v in views]
    for f in frames[: len(frames) // 2]:
        gpu.release(f, s)
    emit("holding", indices=[f.index for f in frames], seqs=[f.seq for f in frames])
    time.sleep(600)  # the test kills us while the GPU still works on the frames
    del views, copies


def survivor(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Receives frame 0 and keeps a tensor of it; after the test killed the producer, receives
    until ProducerGone (noting when), then checks the kept tensor still holds frame 0."""
    torch = gpu.torch
    dtype = "int32"
    cons = bips.Consumer(a["name"], timeout=ATTACH_S)
    try:
        emit("attached")
        first = cons.receive(timeout=FRAME_S)
        kept = torch.from_dlpack(first)
        emit("got", seq=first.seq, wrong=gpu.wrong_elements(kept, value(first.seq, dtype)))
        later: list[dict[str, Any]] = []
        t_gone = None
        deadline = time.monotonic() + a["gone_s"]
        while time.monotonic() < deadline:
            try:
                frame = cons.receive(timeout=0.2)
            except bips.Timeout:
                continue
            except bips.ProducerGone:
                t_gone = now_ns()
                break
            t = torch.from_dlpack(frame)
            later.append(
                {"seq": frame.seq, "wrong": gpu.wrong_elements(t, value(frame.seq, dtype))}
            )
            del t
            frame.release()
        still_wrong = gpu.wrong_elements(kept, value(first.seq, dtype))
        del kept
        first.release()
        emit("done", t_gone=t_gone, later=later, kept_wrong_after_death=still_wrong)
    finally:
        cons.close()


def unavailable(gpu: Gpu | None, cmd: Commands, a: dict[str, Any]) -> None:
    """In a process where bips must not reach the GPU (CUDA_VISIBLE_DEVICES="" or BIPS_LIBCUDA
    pointing nowhere): what opening the GPU pool raises, what making one raises, and whether
    host pools still work. Never imports torch."""
    import numpy as np

    out: dict[str, Any] = {"cuda_available": bool(bips.cuda_available())}

    def attempt(what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            out[what] = {"raised": None}
        except Exception as e:  # noqa: BLE001 - the test judges it
            out[what] = {
                "raised": type(e).__name__,
                "message": str(e)[:500],
                "device_unavailable": isinstance(e, bips.DeviceUnavailable),
                "device_error": isinstance(e, getattr(bips, "DeviceError", ())),
                "bips_error": isinstance(e, bips.Error),
            }

    def open_pool() -> None:
        # The pool is there already (the test waited for its producer): no long wait.
        with bips.Consumer(a["name"], timeout=20.0) as cons:
            cons.receive(timeout=10.0).release()

    attempt("open", open_pool)
    attempt("create", lambda: bips.Producer(a["host_name"] + "g", capacity=2, shape=(16,),
                                            device="cuda:0").close())  # fmt: skip
    prod = bips.Producer(a["host_name"], capacity=2, shape=(16,), dtype="uint8")
    with prod, bips.Consumer(a["host_name"]) as cons:
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[:] = 7
        prod.publish(buf)
        frame = cons.receive(timeout=1.0)
        out["host_pool_ok"] = bool((np.asarray(frame) == 7).all())
        frame.release()
    emit("result", **out)


def scribbler(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """Receives a frame and tries to write into it from a kernel: consumers map GPU pools
    read-only where the driver allows, so the write should fault. Reports, then leaves at once
    (after a fault the CUDA context is unusable)."""
    torch = gpu.torch
    cons = bips.Consumer(a["name"], timeout=ATTACH_S)
    emit("attached")
    frame = cons.receive(timeout=FRAME_S)
    t = torch.from_dlpack(frame)
    try:
        t.fill_(0)
        gpu.sync()
        emit("write", refused=False, error=None)
    except RuntimeError as e:
        emit("write", refused=True, error=str(e)[:500])
    os._exit(0)


# --- checks in one process -------------------------------------------------------------------


class Checks:
    """Named checks, each recorded as passed/failed with details, none stopping the others."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            self.results[name] = fn()
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:800]}


def buffer_prober(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """The producer side of the views tests: checks what ``acquire()`` gives (device, DLPack,
    ``__cuda_array_interface__``, no buffer protocol), then publishes ``2 * capacity`` frames."""
    cap, shape, dtype = a["capacity"], tuple(a["shape"]), "uint8"
    prod = gpu.producer(a["name"], capacity=cap, shape=shape, dtype=dtype)
    try:
        emit("ready")
        wait_consumers(prod, 1)
        checks = Checks()
        buf = prod.acquire(timeout=FRAME_S)
        probe_buffer(gpu, checks, buf, shape)
        buf.discard()
        del buf
        s = gpu.stream()
        for seq in range(2 * cap):
            buf = prod.acquire(timeout=FRAME_S)
            gpu.write_frame(buf, seq, dtype, 0.5, s)
            gpu.publish(prod, buf, s)
            del buf
        gpu.sync(s)
        emit("published", checks=checks.results)
        cmd.wait("close", ATTACH_S)
    finally:
        prod.close()


def probe_buffer(gpu: Gpu, checks: Checks, buf: Any, shape: tuple[int, ...]) -> None:
    torch = gpu.torch

    def tensor() -> dict[str, Any]:
        t = torch.from_dlpack(buf)
        cai = buf.__cuda_array_interface__
        return {
            "ok": t.data_ptr() == cai["data"][0] and str(t.device) == "cuda:0",
            "torch_ptr": t.data_ptr(), "cai_ptr": cai["data"][0], "device": str(t.device),
            "shape": list(t.shape), "dtype": str(t.dtype),
        }  # fmt: skip

    def interface() -> dict[str, Any]:
        cai = buf.__cuda_array_interface__
        return {
            "ok": cai["version"] >= 3 and cai["data"][1] is False
            and tuple(cai["shape"]) == shape and cai["typestr"] == "|u1",
            "cai": {k: v for k, v in cai.items() if k != "stream"},
        }  # fmt: skip

    def device() -> dict[str, Any]:
        dl = tuple(buf.__dlpack_device__())
        return {"ok": buf.device == "cuda:0" and dl == (2, 0),
                "device": str(buf.device), "dlpack_device": list(dl)}  # fmt: skip

    def no_buffer_protocol() -> dict[str, Any]:
        try:
            memoryview(buf)
        except BufferError as e:
            return {"ok": True, "error": str(e)}
        return {"ok": False, "error": "memoryview(buffer) of device memory worked"}

    for name, fn in (("tensor", tensor), ("interface", interface), ("device", device),
                     ("no_buffer_protocol", no_buffer_protocol)):  # fmt: skip
        checks.run(name, fn)


def frame_prober(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """The consumer side of the views tests: receives ``2 * capacity`` frames (so every buffer
    index twice) and records where each one lives; checks the first frame through every
    interface (torch, CuPy, ``__cuda_array_interface__``, ``to_host()``, the device strings)."""
    torch = gpu.torch
    cap, shape, dtype = a["capacity"], tuple(a["shape"]), "uint8"
    nbytes = 1
    for n in shape:
        nbytes *= n
    cons = bips.Consumer(a["name"], timeout=ATTACH_S)
    try:
        emit("attached")
        checks = Checks()
        pointers: list[dict[str, Any]] = []
        for k in range(2 * cap):
            frame = cons.receive(timeout=FRAME_S)
            want = value(frame.seq, dtype)
            t = torch.from_dlpack(frame)
            ptr = cuda_pointer(frame)
            pointers.append({"index": frame.index, "seq": frame.seq, "ptr": ptr,
                             "torch_ptr": t.data_ptr(), "range": address_range(ptr),
                             "wrong": gpu.wrong_elements(t, want)})  # fmt: skip
            if k == 0:
                probe_frame(gpu, checks, frame, t, want, shape)
            del t
            frame.release()
            del frame
        emit("done", checks=checks.results, pointers=pointers, nbytes=nbytes)
    finally:
        cons.close()


def probe_frame(
    gpu: Gpu, checks: Checks, frame: Any, t: Any, want: int, shape: tuple[int, ...]
) -> None:
    torch = gpu.torch

    def tensor() -> dict[str, Any]:
        return {
            "ok": t.data_ptr() == cuda_pointer(frame) and str(t.device) == "cuda:0"
            and tuple(t.shape) == shape and t.dtype == torch.uint8,
            "torch_ptr": t.data_ptr(), "cai_ptr": cuda_pointer(frame), "device": str(t.device),
            "shape": list(t.shape), "dtype": str(t.dtype),
        }  # fmt: skip

    def interface() -> dict[str, Any]:
        cai = frame.__cuda_array_interface__
        return {
            "ok": cai["version"] >= 3 and cai["data"][1] is True
            and tuple(cai["shape"]) == shape and cai["typestr"] == "|u1",
            "cai": {k: v for k, v in cai.items() if k != "stream"},
        }  # fmt: skip

    def device() -> dict[str, Any]:
        dl = tuple(frame.__dlpack_device__())
        return {"ok": frame.device == "cuda:0" and dl == (2, 0),
                "device": str(frame.device), "dlpack_device": list(dl)}  # fmt: skip

    def to_host() -> dict[str, Any]:
        import numpy as np

        host = frame.to_host()
        return {
            "ok": isinstance(host, np.ndarray) and host.shape == shape and host.dtype == np.uint8
            and bool((host == want).all()),
            "type": type(host).__name__, "shape": list(getattr(host, "shape", ())),
        }  # fmt: skip

    def no_buffer_protocol() -> dict[str, Any]:
        try:
            memoryview(frame)
        except BufferError as e:
            return {"ok": True, "error": str(e)}
        return {"ok": False, "error": "memoryview(frame) of device memory worked"}

    def dlpack_streams() -> dict[str, Any]:
        # DLPack's stream argument: 1 legacy default, 2 per-thread default, -1 no
        # synchronisation, or a stream handle; each must give a capsule torch can use.
        got = {}
        side = torch.cuda.Stream()
        for label, stream in (("legacy", 1), ("per_thread", 2), ("none", -1),
                              ("handle", side.cuda_stream)):  # fmt: skip
            view = torch.from_dlpack(WithStream(frame, stream))
            got[label] = view.data_ptr() == cuda_pointer(frame)
            del view
        side.synchronize()
        return {"ok": all(got.values()), "same_pointer": got}

    def cupy_view() -> dict[str, Any]:
        try:
            import cupy
        except ImportError as e:
            return {"ok": True, "skipped": f"cupy is not installed: {e}"}
        arr = cupy.from_dlpack(frame)
        writeable = getattr(arr.flags, "writeable", None)  # CuPy arrays have no such flag yet
        wrong = int((arr != want).sum())
        return {
            "ok": int(arr.data.ptr) == cuda_pointer(frame) and tuple(arr.shape) == shape
            and wrong == 0 and writeable in (None, False),
            "ptr": int(arr.data.ptr), "shape": list(arr.shape), "wrong": wrong,
            "writeable": writeable,
        }  # fmt: skip

    for name, fn in (("tensor", tensor), ("interface", interface), ("device", device),
                     ("to_host", to_host), ("no_buffer_protocol", no_buffer_protocol),
                     ("dlpack_streams", dlpack_streams), ("cupy", cupy_view)):  # fmt: skip
        checks.run(name, fn)


class WithStream:
    """Hands ``obj`` to a DLPack consumer with a stream argument of our choosing (torch passes
    its current stream)."""

    def __init__(self, obj: Any, stream: int) -> None:
        self.obj, self.stream = obj, stream

    def __dlpack_device__(self) -> Any:
        return self.obj.__dlpack_device__()

    def __dlpack__(self, **kwargs: Any) -> Any:
        kwargs["stream"] = self.stream
        return self.obj.__dlpack__(**kwargs)


def address_range(ptr: int) -> list[int] | None:
    """[base, size] of the device allocation (here: the mapping) that holds ``ptr``, asked of
    the driver through cuda-python; None where that is not installed or says no."""
    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            from cuda import cuda as driver  # cuda-python < 12.6
        except ImportError:
            return None
    try:
        err, base, size = driver.cuMemGetAddressRange(driver.CUdeviceptr(ptr))
        if int(err) != 0:
            return None
        return [int(base), int(size)]
    except Exception:  # noqa: BLE001 - optional evidence only
        return None


def solo(gpu: Gpu, cmd: Commands, a: dict[str, Any]) -> None:
    """A producer and a consumer of one GPU pool in one process (as the docs' examples do)."""
    torch = gpu.torch
    dtype, frames = "int32", 3
    prod = gpu.producer(a["name"], capacity=2, shape=tuple(a["shape"]), dtype=dtype)
    try:
        with bips.Consumer(a["name"]) as cons:
            s = gpu.stream()
            got = []
            for seq in range(frames):
                buf = prod.acquire(timeout=FRAME_S)
                gpu.write_frame(buf, seq, dtype, 2.0, s)
                gpu.publish(prod, buf, s)
                del buf
                frame = cons.receive(timeout=FRAME_S)
                t = torch.from_dlpack(frame)
                got.append({
                    "seq": frame.seq,
                    "wrong": gpu.wrong_elements(t, value(frame.seq, dtype)),
                    "zero_copy": DRY_RUN or t.data_ptr() == cuda_pointer(frame),
                })  # fmt: skip
                del t
                frame.release()
        emit("done", frames=got)
    finally:
        prod.close()


ROLES: dict[str, Callable[[Any, Commands, dict[str, Any]], None]] = {
    "producer": producer,
    "ticker": ticker,
    "overwriter": overwriter,
    "reclaimer": reclaimer,
    "doomed": doomed,
    "consumer": consumer,
    "hold_reader": hold_reader,
    "victim": victim,
    "survivor": survivor,
    "unavailable": unavailable,
    "scribbler": scribbler,
    "buffer_prober": buffer_prober,
    "frame_prober": frame_prober,
    "solo": solo,
}
NO_TORCH = {"unavailable"}  # roles for processes that must not touch CUDA through torch


def main(argv: list[str]) -> int:
    role, args = argv[0], json.loads(argv[1])
    try:
        gpu = None if role in NO_TORCH else Gpu()
        ROLES[role](gpu, Commands(), args)
    except BaseException as e:  # everything goes back to the test
        if isinstance(e, SystemExit) and not e.code:
            raise
        emit("error", role=role, traceback=traceback.format_exc())
        return 1
    return 0
