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
