# SPDX-License-Identifier: Apache-2.0
"""Worker processes run in lock step for one measurement ("case"), and the names and cleanup of
what they create in /dev/shm.

One case runs like this::

    parent                      workers
    ------                      -------
    start the producer  ----->  create the pool, ctl.ready()
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
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

SHM_DIR = "/dev/shm"
# Every object a run creates has this token in its name, so cleanup never touches anyone else's
# segments (tests and other benchmark runs may be going on at the same time).
TOKEN = f"bbench{os.getpid()}"

_counter = 0


def unique_name(tag: str) -> str:
    """A name for one case's pool (or ring, or semaphores), valid for bips, SharedMemory and
    sem_open."""
    global _counter
    _counter += 1
    return f"{TOKEN}-{_counter}-{tag}"


def leftovers() -> list[str]:
    """Entries in /dev/shm created by this run."""
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


class WorkerControl:
    """What a worker function gets: signal readiness, wait for the start."""

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
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
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
    cpus: set[int] | None = None,
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
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


# Where the workers of a case run. "none": wherever the scheduler puts them. On a machine with
# few cores that choice decides the result: a producer and a consumer on one core take turns
# (a batch of frames each), on two cores they run side by side and pay for every cache line
# that crosses; the same case measured twice can land either way. So the suite pins them:
# "same": every worker on the first usable CPU; "split": the producer on the first, the
# consumers on the others.
PINS = ("none", "same", "split")


def placement(pin: str) -> Callable[[int], set[int]] | None:
    """The CPUs worker i (0: the producer) is pinned to, for `pin`; None: not pinned (also on
    a machine with a single usable CPU)."""
    if pin not in PINS:
        raise ValueError(f"pin must be one of {PINS}, not {pin!r}")
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "none" or len(cpus) < 2:
        return None
    if pin == "same":
        return lambda i: {cpus[0]}
    return lambda i: {cpus[0]} if i == 0 else set(cpus[1:])


class Runner:
    """Runs cases one after another with one multiprocessing context."""

    def __init__(self, start_method: str = "fork") -> None:
        self.ctx: Any = mp.get_context(start_method)
        self._live: list[Any] = []

    def run(
        self,
        workers: list[Worker],
        timing: Timing,
        cleanup: Callable[[], None] | None = None,
        pin: str = "none",
    ) -> list[dict[str, Any]]:
        """Runs one case; returns each worker's result dict, in the order given. Raises
        CaseError if a worker fails or the case does not finish in time. Always reaps every
        worker and calls `cleanup`, also on KeyboardInterrupt. `pin`: see PINS."""
        cpus = placement(pin)
        msgs = self.ctx.Queue()
        go = self.ctx.Event()
        window = self.ctx.Array("q", 2, lock=False)
        procs: list[Any] = []
        try:
            # The first worker (the producer) is set up before the others start, so that
            # consumers attach to a finished pool rather than race its creation.
            for i, w in enumerate(workers):
                p = self.ctx.Process(
                    target=_worker_entry,
                    name=f"bench-{w.role}-{i}",
                    args=(w.target, i, msgs, go, window, w.kwargs, cpus(i) if cpus else None),
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

    def shutdown(self) -> list[str]:
        """Stops any worker still alive (after an interrupt) and removes leftovers; returns
        the names it removed."""
        self._reap(list(self._live))
        return remove_leftovers()
