# SPDX-License-Identifier: Apache-2.0
"""The bips producer and consumer processes of the latency and hand-off cases."""

from __future__ import annotations

import time
from typing import Any

from bips.benchkit.measure import CpuMeter, run_window
from bips.benchkit.params import CAPACITY, Size
from bips.benchkit.runner import Worker, WorkerControl


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
        start, end = ctl.wait_go()
        meter = CpuMeter(start, end)
        mono = time.monotonic_ns
        sleep = time.sleep
        n = 0
        while (t := mono()) < end:
            meter.frame(t)
            buf = prod.acquire(timeout=5.0)
            sleep(interval_s)
            prod.publish(buf)
            n += 1
        return {"published": n, **meter.result()}
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
        meter = CpuMeter(start, end)
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
            if meter.frame(t_wake):
                ts = f.timestamp_ns
                wake.append(t_wake - ts)
                ready.append(t_ready - ts)
            f.release()
        return {"wake_ns": wake, "ready_ns": ready, **meter.result()}
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
