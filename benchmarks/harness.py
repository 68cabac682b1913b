# SPDX-License-Identifier: Apache-2.0
"""Process plumbing shared by every benchmark: run a set of worker processes in lock step,
name and clean up the shared-memory objects they use, summarise samples, describe the machine.

One measurement ("case") runs like this::

    parent                      workers
    ------                      -------
    start the producer  ----->  create the pool/ring, ctl.ready()
    start the consumers ----->  attach, ctl.ready()
    wait for every ready
    window = [now+warmup, +duration]
    go  --------------------->  ctl.wait_go() -> (start_ns, end_ns); run; count what falls in
                                the window; return a dict
    collect every dict  <-----
    reap workers, remove leftovers

Windows are CLOCK_MONOTONIC nanoseconds (time.monotonic_ns()), one clock for every process on
the machine, so each worker decides on its own which of its frames fall inside the window.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import platform
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

SHM_DIR = "/dev/shm"
# Every object this run creates has this token in its name, so cleanup never touches anyone
# else's segments (tests and other benchmark runs may be going on at the same time).
TOKEN = f"bbench{os.getpid()}"
CAPACITY = 8

_counter = 0


def unique_name(tag: str) -> str:
    """A name for one case's pool/ring/semaphores, valid for bips, SharedMemory and sem_open."""
    global _counter
    _counter += 1
    return f"{TOKEN}-{_counter}-{tag}"


def leftovers() -> list[str]:
    """Entries in /dev/shm created by this run (bips pools, SharedMemory rings, semaphores)."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if TOKEN in n)
    except FileNotFoundError:
        return []


def remove_leftovers() -> list[str]:
    """Unlinks everything this run left in /dev/shm; returns what it removed. Call only once no
    worker of this run is alive."""
    removed = []
    for n in leftovers():
        try:
            os.unlink(os.path.join(SHM_DIR, n))
            removed.append(n)
        except FileNotFoundError:
            pass
        except OSError as e:
            print(f"warning: could not remove /dev/shm/{n}: {e}", file=sys.stderr)
    return removed


# ---- sizes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    label: str
    shape: tuple[int, ...]  # () for a flat buffer of `nbytes`
    nbytes: int

    def bips_kwargs(self) -> dict[str, Any]:
        if self.shape:
            return {"shape": self.shape, "dtype": "uint8"}
        return {"buffer_size": self.nbytes}

    def array_shape(self) -> tuple[int, ...]:
        return self.shape if self.shape else (self.nbytes,)


SIZES = {
    "64B": Size("64B", (), 64),
    "640x360x3": Size("640x360x3", (360, 640, 3), 360 * 640 * 3),
    "3840x2160x3": Size("3840x2160x3", (2160, 3840, 3), 2160 * 3840 * 3),
}
BIG = "3840x2160x3"


# ---- worker side ----------------------------------------------------------------------------


class WorkerControl:
    """What a worker function gets: signal readiness, wait for the start, report progress."""

    def __init__(self, index: int, msgs: Any, go: Any, window: Any) -> None:
        self.index = index
        self._msgs = msgs
        self._go = go
        self._window = window

    def ready(self) -> None:
        self._msgs.put(("ready", self.index, None))

    def wait_go(self, timeout: float = 60.0) -> tuple[int, int]:
        if not self._go.wait(timeout):
            raise TimeoutError("the parent never said go")
        return int(self._window[0]), int(self._window[1])


def _die_with_parent() -> None:
    # A worker must not outlive a parent that was SIGKILLed: it could hold a pool open forever.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # runs the worker's finally blocks (producer.close() ...)


def _worker_entry(
    target: Callable[..., dict[str, Any]],
    index: int,
    msgs: Any,
    go: Any,
    window: Any,
    kwargs: dict[str, Any],
) -> None:
    # Ctrl-C reaches the whole process group; only the parent reacts, then stops us with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _die_with_parent()
    # bips imports numpy lazily, on the first Frame.numpy(): 100+ ms that must not fall into a
    # measurement window (with 'spawn', or any parent that has not imported numpy yet).
    import numpy  # noqa: F401

    try:
        result = target(WorkerControl(index, msgs, go, window), **kwargs)
        msgs.put(("result", index, result))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        msgs.put(("error", index, traceback.format_exc()))


# ---- parent side ----------------------------------------------------------------------------


class CaseError(RuntimeError):
    """One measurement failed; the suite records it and goes on."""


@dataclass
class Worker:
    target: Callable[..., dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)
    role: str = "worker"  # shows in process names and error messages


@dataclass
class Timing:
    warmup: float
    duration: float
    setup_timeout: float = 20.0
    drain_timeout: float = 20.0


class Runner:
    """Runs cases one after another with one multiprocessing context."""

    def __init__(self, start_method: str = "fork") -> None:
        self.ctx: Any = mp.get_context(start_method)
        self._live: list[Any] = []

    def run(
        self, workers: list[Worker], timing: Timing, cleanup: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """Runs one case; returns each worker's result dict, in the order given. Raises
        CaseError if a worker fails or the case does not finish in time. Always reaps every
        worker and calls `cleanup`, also on KeyboardInterrupt."""
        msgs = self.ctx.Queue()
        go = self.ctx.Event()
        window = self.ctx.Array("q", 2, lock=False)
        procs = []
        try:
            # The first worker (the producer) is set up before the others start, so that
            # consumers attach to a finished pool rather than race its creation.
            for i, w in enumerate(workers):
                p = self.ctx.Process(
                    target=_worker_entry,
                    name=f"bench-{w.role}-{i}",
                    args=(w.target, i, msgs, go, window, w.kwargs),
                    daemon=True,
                )
                p.start()
                procs.append(p)
                self._live.append(p)
                if i == 0:
                    self._collect(msgs, procs, "ready", timing.setup_timeout)
            self._collect(msgs, procs, "ready", timing.setup_timeout, skip=1)
            start = time.monotonic_ns() + int(timing.warmup * 1e9)
            window[0] = start
            window[1] = start + int(timing.duration * 1e9)
            go.set()
            results = self._collect(
                msgs, procs, "result", timing.warmup + timing.duration + timing.drain_timeout
            )
            for p in procs:
                p.join(5.0)
            return results
        finally:
            self._reap(procs)
            msgs.close()
            msgs.join_thread()
            if cleanup is not None:
                cleanup()

    def _collect(
        self, msgs: Any, procs: list[Any], kind: str, timeout: float, skip: int = 0
    ) -> list[Any]:
        """Waits for message `kind` from procs[skip:]; returns their payloads in order."""
        deadline = time.monotonic() + timeout
        got: dict[int, Any] = {i: None for i in range(skip)}
        while len(got) < len(procs):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [procs[i].name for i in range(len(procs)) if i not in got]
                raise CaseError(f"timed out waiting for '{kind}' from {missing}")
            try:
                what, idx, payload = msgs.get(timeout=min(left, 0.2))
            except queue.Empty:
                for i, p in enumerate(procs):
                    # While getting ready nobody may exit; later, nobody without a result.
                    if p.exitcode is not None and (kind == "ready" or i not in got):
                        # A message may still be in flight from a worker that just exited.
                        try:
                            what, idx, payload = msgs.get(timeout=0.5)
                        except queue.Empty:
                            raise CaseError(
                                f"{p.name} exited early with code {p.exitcode} "
                                f"(waiting for '{kind}')"
                            ) from None
                        break
                else:
                    continue
            if what == "error":
                raise CaseError(f"{procs[idx].name} failed:\n{payload}")
            if what == kind:
                got[idx] = payload
        return [got[i] for i in range(skip, len(procs))]

    def _reap(self, procs: list[Any]) -> None:
        for p in procs:
            p.join(timeout=0 if p.exitcode is None else 1.0)
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.terminate()  # SIGTERM: the worker's finally blocks close its pool
        for p in alive:
            p.join(2.0)
        for p in alive:
            if p.is_alive():
                p.kill()
                p.join(2.0)
        for p in procs:
            if p in self._live:
                self._live.remove(p)

    def shutdown(self) -> None:
        """Stops any worker still alive (after an interrupt) and removes leftovers."""
        self._reap(list(self._live))
        remove_leftovers()


# ---- statistics -----------------------------------------------------------------------------


def latency_summary(samples_ns: Any) -> dict[str, Any]:
    """p50/p99/p99.9/mean/max in microseconds of one-way latency samples in nanoseconds."""
    import numpy as np

    a = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    if a.size == 0:
        raise CaseError("no latency samples in the measurement window")
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {
        "n": int(a.size),
        "p50_us": float(p50),
        "p99_us": float(p99),
        "p999_us": float(p999),
        "mean_us": float(a.mean()),
        "min_us": float(a.min()),
        "max_us": float(a.max()),
    }


def rusage_now() -> tuple[int, int, float]:
    """(voluntary, involuntary) context switches and CPU seconds (user + system) of this process
    so far. A voluntary switch is a sleep: here, a futex/semaphore/pipe wait that had to block.
    CPU time per frame is the cost of a frame, and is much less disturbed by other load on the
    machine than frames/s."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw, r.ru_nivcsw, r.ru_utime + r.ru_stime


# ---- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import numpy

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import bips

        info["bips"] = bips.__version__
    except Exception as e:  # noqa: BLE001 - reported, not fatal here
        info["bips"] = f"unavailable ({e})"
    try:
        import posix_ipc

        info["posix_ipc"] = posix_ipc.VERSION
    except ImportError:
        info["posix_ipc"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---- the measurement loop shared by every hand-off worker ----------------------------------


def run_window(
    step: Callable[[], int | None], start_ns: int, end_ns: int, drain: bool
) -> dict[str, Any]:
    """Calls `step()` (one frame; returns its sequence number, or None at end of stream) through
    a warm-up until `start_ns`, counts frames until `end_ns`, then, if `drain`, goes on until the
    stream ends. Every implementation runs this same loop, so its per-frame cost (one call and
    one clock read, well under 0.2 us) is the same for all of them."""
    mono = time.monotonic_ns
    prev = None
    gaps = 0
    warm = 0
    t = mono()
    while t < start_ns:
        s = step()
        if s is None:
            raise RuntimeError("the stream ended before the measurement window")
        if prev is not None and s != prev + 1:
            gaps += 1
        prev = s
        warm += 1
        t = mono()
    t0 = t
    cs0 = rusage_now()
    n = 0
    ended = False
    while t < end_ns:
        s = step()
        if s is None:
            # The producer stops once *its* clock passes end_ns; a consumer that read the clock
            # just before that may only learn of it now.
            t = mono()
            if t < end_ns:
                raise RuntimeError("the stream ended inside the measurement window")
            t, ended = end_ns, True
            break
        if prev is not None and s != prev + 1:
            gaps += 1
        prev = s
        n += 1
        t = mono()
    t1 = t
    cs1 = rusage_now()
    drained = 0
    while drain and not ended:
        s = step()
        if s is None:
            break
        if prev is not None and s != prev + 1:
            gaps += 1
        prev = s
        drained += 1
    seconds = (t1 - t0) / 1e9
    return {
        "pid": os.getpid(),
        "total": warm + n + drained,  # every frame, warm-up and drain included
        "frames": n,
        "seconds": seconds,
        "fps": n / seconds if seconds > 0 else 0.0,
        "vcsw": cs1[0] - cs0[0],
        "ivcsw": cs1[1] - cs0[1],
        "cpu_s": cs1[2] - cs0[2],
        "gaps": gaps,
    }
