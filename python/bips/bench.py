# SPDX-License-Identifier: Apache-2.0
"""The bips benchmark: a Python producer and N Python consumer processes on one pool.

Measures the hand-off rate (frames/s received per consumer, CPU time per frame) at a few frame
sizes and the one-way wake-up latency (publish -> the consumer has read one element, p50/p99).
``bips bench`` runs it; ``benchmarks/bench.py`` in the source tree runs the same cases beside
two baselines and the C++ benchmark, with the plumbing defined here.

One measurement ("case") runs like this::

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
import platform
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
CAPACITY = 8
SPIN_S = 0.001  # busy-poll budget of the spin latency variant

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
        procs: list[Any] = []
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

    def shutdown(self) -> list[str]:
        """Stops any worker still alive (after an interrupt) and removes leftovers; returns
        the names it removed."""
        self._reap(list(self._live))
        return remove_leftovers()


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


def summarize_latency(consumer: dict[str, Any]) -> dict[str, Any]:
    """One latency record from the consumer's result (``wake_ns``/``ready_ns`` samples):
    publish -> numpy read percentiles, plus the wake-up p50."""
    out = latency_summary(consumer["ready_ns"])
    out["wake_p50_us"] = latency_summary(consumer["wake_ns"])["p50_us"]
    return out


def summarize_handoff(prod: dict[str, Any], cons: list[dict[str, Any]]) -> dict[str, Any]:
    """One hand-off record from the producer's and the consumers' run_window() results."""
    fps = [c["fps"] for c in cons]
    frames = max(sum(c["frames"] for c in cons), 1)
    return {
        "per_consumer_fps": fps,
        "mean_fps": sum(fps) / len(fps),
        "min_fps": min(fps),
        "total_fps": sum(fps),
        "producer_fps": prod["fps"],
        # CPU time (user + system) per frame in each process: the cost of a frame, much less
        # disturbed by other load than frames/s.
        "producer_cpu_us_per_frame": prod["cpu_s"] * 1e6 / max(prod["frames"], 1),
        "consumer_cpu_us_per_frame": sum(c["cpu_s"] for c in cons) * 1e6 / frames,
        # Sleeps (voluntary context switches) per frame: how often a process had to block.
        "producer_sleeps_per_frame": prod["vcsw"] / max(prod["frames"], 1),
        "consumer_sleeps_per_frame": sum(c["vcsw"] for c in cons) / frames,
        "preemptions_per_frame": (prod["ivcsw"] + sum(c["ivcsw"] for c in cons)) / frames,
        "out_of_sequence": sum(c["gaps"] for c in cons),
        "frames": [c["frames"] for c in cons],
        # For futex counting: which process was which, and how many frames each handled in all.
        "pids": [prod["pid"]] + [c["pid"] for c in cons],
        "totals": [prod["total"]] + [c["total"] for c in cons],
    }


# ---- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, CPU, kernel, Python, numpy, bips, load."""
    import numpy

    import bips

    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "bips": bips.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


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


# ---- bips workers (each runs in its own process) --------------------------------------------


def latency_producer(
    ctl: WorkerControl, name: str, size: Size, interval_s: float
) -> dict[str, Any]:
    """Publishes one frame every `interval_s` (plus the sleep's overshoot). bips stamps the frame
    with CLOCK_MONOTONIC inside publish() (its documented default), so the sample is publish ->
    wake-up. The pause lets the consumer finish and fall asleep, so every sample is a full
    sleep -> wake."""
    import bips

    prod = bips.Producer(name, capacity=CAPACITY, **size.bips_kwargs())
    try:
        ctl.ready()
        _, end = ctl.wait_go()
        mono = time.monotonic_ns
        sleep = time.sleep
        n = 0
        while mono() < end:
            buf = prod.acquire(timeout=5.0)
            sleep(interval_s)
            prod.publish(buf)
            n += 1
        return {"published": n}
    finally:
        prod.close()


def latency_consumer(ctl: WorkerControl, name: str, spin: float) -> dict[str, Any]:
    """For every frame: wake-up time and time until one element was read through numpy, both
    relative to the producer's stamp. Only frames received inside the window count."""
    import bips

    cons = bips.Consumer(name, timeout=10.0, spin=spin)
    try:
        ctl.ready()
        start, end = ctl.wait_go()
        mono = time.monotonic_ns
        receive = cons.receive
        wake: list[int] = []
        ready: list[int] = []
        while True:
            try:
                f = receive(5.0)
            except bips.ProducerGone:
                break
            t_wake = mono()
            f.numpy().item(0)
            t_ready = mono()
            if start <= t_wake < end:
                ts = f.timestamp_ns
                wake.append(t_wake - ts)
                ready.append(t_ready - ts)
            f.release()
        return {"wake_ns": wake, "ready_ns": ready}
    finally:
        cons.close()


def handoff_producer(ctl: WorkerControl, name: str, size: Size, fill: bool) -> dict[str, Any]:
    """acquire -> (fill every byte) -> publish, as fast as the consumers allow (policy block)."""
    import bips

    prod = bips.Producer(name, capacity=CAPACITY, policy="block", **size.bips_kwargs())
    try:
        if fill:
            _prefault(prod)
        ctl.ready()
        start, end = ctl.wait_go()
        acquire = prod.acquire
        publish = prod.publish
        seq = -1

        def step() -> int | None:
            nonlocal seq
            seq += 1
            buf = acquire(5.0)
            if fill:
                buf.numpy()[...] = seq & 0xFF
            publish(buf)
            return seq

        return run_window(step, start, end, drain=False)
    finally:
        prod.close()


def _prefault(prod: Any) -> None:
    # Touch every page of every buffer once, so the window does not measure first-touch faults.
    bufs = [prod.acquire(timeout=5.0) for _ in range(prod.capacity)]
    for b in bufs:
        b.numpy()[...] = 0
        b.discard()


def handoff_consumer(ctl: WorkerControl, name: str) -> dict[str, Any]:
    """receive -> numpy view -> read one element -> release, until the producer is gone."""
    import bips

    cons = bips.Consumer(name, timeout=10.0)
    try:
        ctl.ready()
        start, end = ctl.wait_go()
        receive = cons.receive
        gone = bips.ProducerGone

        def step() -> int | None:
            try:
                f = receive(5.0)
            except gone:
                return None
            f.numpy().item(0)
            s = f.seq
            f.release()
            return s

        return run_window(step, start, end, drain=True)
    finally:
        cons.close()


def latency_workers(name: str, size: Size, interval_s: float, spin: float) -> list[Worker]:
    """The producer and the consumer of one bips latency case."""
    return [
        Worker(
            latency_producer, {"name": name, "size": size, "interval_s": interval_s}, "producer"
        ),
        Worker(latency_consumer, {"name": name, "spin": spin}, "consumer"),
    ]


def handoff_workers(name: str, size: Size, consumers: int, fill: bool) -> list[Worker]:
    """The producer and `consumers` consumers of one bips hand-off case."""
    workers = [Worker(handoff_producer, {"name": name, "size": size, "fill": fill}, "producer")]
    workers += [Worker(handoff_consumer, {"name": name}, "consumer") for _ in range(consumers)]
    return workers


# ---- cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    warmup: float
    duration: float  # hand-off window per case
    latency_duration: float  # latency window per case
    interval_s: float  # latency producer's pause between frames

    def handoff(self) -> Timing:
        return Timing(self.warmup, self.duration)

    def latency(self) -> Timing:
        return Timing(self.warmup, self.latency_duration)


FULL = Settings(warmup=0.3, duration=1.5, latency_duration=2.0, interval_s=300e-6)
QUICK = Settings(warmup=0.1, duration=0.3, latency_duration=0.6, interval_s=300e-6)


def config(st: Settings, mode: str, start_method: str) -> dict[str, Any]:
    """The settings of a run, for its report and JSON."""
    return {
        "mode": mode,
        "warmup_s": st.warmup,
        "handoff_window_s": st.duration,
        "latency_window_s": st.latency_duration,
        "latency_interval_us": st.interval_s * 1e6,
        "capacity": CAPACITY,
        "policy": "block",
        "spin_s": SPIN_S,
        "start_method": start_method,
    }


@dataclass
class Case:
    group: str
    label: str
    run: Callable[[], dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)


# Makes the workers of one case for a pool (or ring) name: (workers, producer first; a cleanup
# to call after the case, or None).
Setup = Callable[[str], "tuple[list[Worker], Callable[[], None] | None]"]


def latency_case(
    runner: Runner,
    st: Settings,
    size_label: str,
    wait: str,
    impl: str = "bips",
    setup: Setup | None = None,
) -> Case:
    """One-way latency, Python -> Python, 1 consumer; `wait` is "block" or "spin" (busy-poll
    SPIN_S first). `setup` makes the workers of another implementation (default: bips)."""
    size = SIZES[size_label]

    def bips_setup(name: str) -> tuple[list[Worker], Callable[[], None] | None]:
        spin = SPIN_S if wait == "spin" else 0.0
        return latency_workers(name, size, st.interval_s, spin), None

    make = setup or bips_setup

    def run() -> dict[str, Any]:
        workers, cleanup = make(unique_name(f"lat-{impl}"))
        _, consumer = runner.run(workers, st.latency(), cleanup)
        return summarize_latency(consumer)

    return Case(
        "latency",
        f"latency {impl} {wait} {size_label}",
        run,
        {"impl": impl, "wait": wait, "size": size_label, "consumers": 1},
    )


def handoff_case(
    runner: Runner,
    st: Settings,
    size_label: str,
    consumers: int,
    fill: bool = False,
    impl: str = "bips",
    setup: Setup | None = None,
) -> Case:
    """Hand-off rate, a Python producer -> `consumers` Python consumers, the producer writing
    every byte if `fill`. `setup` makes the workers of another implementation (default: bips)."""
    size = SIZES[size_label]

    def bips_setup(name: str) -> tuple[list[Worker], Callable[[], None] | None]:
        return handoff_workers(name, size, consumers, fill), None

    make = setup or bips_setup

    def run() -> dict[str, Any]:
        workers, cleanup = make(unique_name(f"ho-{impl}"))
        results = runner.run(workers, st.handoff(), cleanup)
        return summarize_handoff(results[0], results[1:])

    group = "fill" if fill else "handoff"
    meta = {"impl": impl, "size": size_label, "consumers": consumers, "fill": fill}
    return Case(
        group, f"{group} {impl} 1->{consumers} {size_label}", run, {**meta, "lang": "python"}
    )


def plan(
    runner: Runner,
    st: Settings,
    sizes: list[str],
    consumers: list[int],
    latency_sizes: list[str],
    spin: bool = False,
) -> list[Case]:
    """The bips-only cases ``bips bench`` runs: a hand-off case per size and consumer count,
    then a latency case per latency size (blocking, and busy-poll if `spin`)."""
    cases = [handoff_case(runner, st, s, n) for s in sizes for n in consumers]
    for s in latency_sizes:
        cases.append(latency_case(runner, st, s, "block"))
        if spin:
            cases.append(latency_case(runner, st, s, "spin"))
    return cases


def run_cases(
    cases: list[Case],
    records: list[dict[str, Any]],
    on_start: Callable[[int, Case], None] | None = None,
    on_done: Callable[[int, Case, dict[str, Any], float], None] | None = None,
) -> None:
    """Runs `cases` in order and appends one record per case to `records`
    (``{"group": ..., **case.meta, **results}``); a failed case is recorded with an ``error``
    and the rest go on. Calls ``on_start(k, case)`` before and ``on_done(k, case, record,
    seconds)`` after each case (k counts from 1). KeyboardInterrupt propagates with `records`
    holding what was measured so far; the caller then calls ``Runner.shutdown()``."""
    for k, case in enumerate(cases, 1):
        if on_start is not None:
            on_start(k, case)
        t0 = time.monotonic()
        rec: dict[str, Any] = {"group": case.group, **case.meta}
        try:
            rec.update(case.run())
        except CaseError as e:
            rec["error"] = str(e)
        records.append(rec)
        if on_done is not None:
            on_done(k, case, rec, time.monotonic() - t0)
