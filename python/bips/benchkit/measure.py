# SPDX-License-Identifier: Apache-2.0
"""The counting loop every hand-off worker runs, the CPU and context-switch readings, and the
summaries (percentiles, rates, CPU per frame) a case's results are turned into."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from bips.benchkit.runner import CaseError


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


class CpuMeter:
    """CPU time and sleeps of this process over the frames of a paced (latency) loop that fall
    inside the window [start_ns, end_ns): from the first such frame to the first one after it
    (or to result()). The per-frame cost of a latency case, which run_window() gives for the
    hand-off cases."""

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.start = start_ns
        self.end = end_ns
        self.frames = 0
        self._r0: tuple[int, int, float] | None = None
        self._r1: tuple[int, int, float] | None = None

    def frame(self, t_ns: int) -> bool:
        """Called once per frame with a clock reading; True if the frame is inside the window."""
        if t_ns < self.start:
            return False
        if t_ns >= self.end:
            if self._r1 is None and self._r0 is not None:
                self._r1 = rusage_now()
            return False
        if self._r0 is None:
            self._r0 = rusage_now()
        self.frames += 1
        return True

    def result(self) -> dict[str, Any]:
        """``cpu_frames``, ``cpu_s``, ``vcsw``, ``ivcsw`` over the window's frames."""
        if self._r0 is None:
            return {"cpu_frames": 0, "cpu_s": 0.0, "vcsw": 0, "ivcsw": 0}
        r0, r1 = self._r0, self._r1 or rusage_now()
        return {
            "cpu_frames": self.frames,
            "cpu_s": r1[2] - r0[2],
            "vcsw": r1[0] - r0[0],
            "ivcsw": r1[1] - r0[1],
        }


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


def summarize_latency(producer: dict[str, Any], consumer: dict[str, Any]) -> dict[str, Any]:
    """One latency record from the producer's and the consumer's results (``wake_ns``/
    ``ready_ns`` samples, and CpuMeter readings of both): publish -> numpy read percentiles, the
    wake-up p50, CPU time and sleeps per frame on each side."""
    out = latency_summary(consumer["ready_ns"])
    out["wake_p50_us"] = latency_summary(consumer["wake_ns"])["p50_us"]
    for side, r in (("producer", producer), ("consumer", consumer)):
        frames = max(r["cpu_frames"], 1)
        out[f"{side}_cpu_us_per_frame"] = r["cpu_s"] * 1e6 / frames
        out[f"{side}_sleeps_per_frame"] = r["vcsw"] / frames
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


# What a case is judged by when its rounds are merged: the median of this metric picks the
# round that stands for the case.
KEY_METRIC = {
    "latency": "p50_us",
    "cpplat": "p50_us",
    "handoff": "total_fps",
    "fill": "total_fps",
    "cpp": "total_fps",
}
# Fields that say which case a record belongs to (everything else is measured).
CASE_FIELDS = ("group", "impl", "wait", "size", "consumers", "fill", "lang", "spin_us", "pin")


def case_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """Which case `record` measured, whatever round it came from."""
    return tuple(record.get(k) for k in CASE_FIELDS)


def merge_rounds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per case out of records that may hold several rounds of it (``round`` set):
    the round with the median key metric (the lower middle one for an even count), plus
    ``rounds`` (how many succeeded), ``spread`` ([min, max] of the key metric over them) and
    ``failed_rounds``. A case whose every round failed keeps its first error. Order: first
    appearance."""
    cases: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        cases.setdefault(case_key(r), []).append(r)
    out = []
    for group in cases.values():
        ok = [r for r in group if "error" not in r]
        if not ok:
            out.append(group[0])
            continue
        metric = KEY_METRIC.get(ok[0]["group"])
        if metric is None or metric not in ok[0]:
            chosen = dict(ok[0])
        else:
            ranked = sorted(ok, key=lambda r: float(r[metric]))
            chosen = dict(ranked[(len(ranked) - 1) // 2])
            chosen["spread"] = [float(ranked[0][metric]), float(ranked[-1][metric])]
        chosen["rounds"] = len(ok)
        chosen["failed_rounds"] = len(group) - len(ok)
        chosen.pop("round", None)
        out.append(chosen)
    return out
