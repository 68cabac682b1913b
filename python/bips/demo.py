# SPDX-License-Identifier: Apache-2.0
"""``bips demo``: one producer and several consumers, each in its own process, on a moving test
pattern. Prints per-consumer frame rate and latency, and shows that every consumer's numpy array
is the shared memory itself (its address lies inside the consumer's mapping of the pool)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from typing import Any

import numpy as np

import bips

HEIGHT, WIDTH = 360, 640


def _pattern(seq: int) -> np.ndarray:
    """Colour bars that scroll one column per frame, plus the frame number in the first pixel."""
    bars = np.array(
        [
            [255, 255, 255],
            [255, 255, 0],
            [0, 255, 255],
            [0, 255, 0],
            [255, 0, 255],
            [255, 0, 0],
            [0, 0, 255],
            [0, 0, 0],
        ],
        dtype=np.uint8,
    )
    cols = (np.arange(WIDTH) + seq) * len(bars) // WIDTH % len(bars)
    return np.broadcast_to(bars[cols], (HEIGHT, WIDTH, 3))


def mapping_of(address: int) -> str | None:
    """The file mapped at `address` in this process, from /proc/self/maps (None if anonymous)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return fields[5].strip() if len(fields) == 6 else None
    return None


def _consumer(name: str, index: int, results: Any) -> None:
    latencies: list[int] = []
    checked = ok = 0
    where: str | None = None
    address = 0
    start = None
    with bips.Consumer(name, timeout=10.0) as cons:
        results.put(("ready", index))
        for frame in cons:
            now = time.monotonic_ns()
            start = start or now
            latencies.append(now - frame.timestamp_ns)
            pixels = frame.numpy()
            if where is None:  # the zero-copy proof: which file backs this array?
                address = pixels.__array_interface__["data"][0]
                where = mapping_of(address)
            if frame.seq % 16 == 0:  # spot-check content without slowing the loop
                checked += 1
                ok += bool(np.array_equal(pixels[::37, ::53], _pattern(frame.seq)[::37, ::53]))
            frame.release()
    elapsed = (time.monotonic_ns() - start) / 1e9 if start else 0.0
    lat = np.array(latencies or [0]) / 1000.0
    results.put(
        (
            "done",
            index,
            {
                "frames": len(latencies),
                "fps": len(latencies) / elapsed if elapsed > 0 else 0.0,
                "p50_us": float(np.percentile(lat, 50)),
                "p99_us": float(np.percentile(lat, 99)),
                "address": address,
                "mapping": where,
                "pattern_ok": ok == checked,
                "pid": os.getpid(),
            },
        )
    )


def run_demo(frames: int = 300, consumers: int = 3, fps: float = 0.0) -> int:
    name = f"demo-{os.getpid()}"
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    print(
        f"bips {bips.__version__} demo: pool '{name}', {HEIGHT}x{WIDTH}x3 uint8, capacity 8, "
        f"{frames} frames, {consumers} consumer processes"
    )
    with bips.Producer(name, capacity=8, shape=(HEIGHT, WIDTH, 3), dtype="uint8") as prod:
        procs = [
            ctx.Process(target=_consumer, args=(name, i, results), daemon=True)
            for i in range(consumers)
        ]
        for p in procs:
            p.start()
        try:
            deadline = time.monotonic() + 30
            while prod.stats.consumers < consumers:
                if time.monotonic() > deadline:
                    print("consumers did not attach within 30 s")
                    return 1
                time.sleep(0.01)
            t0 = time.monotonic()
            for seq in range(frames):
                buf = prod.acquire(timeout=5.0)
                buf.numpy()[:] = _pattern(seq)  # the producer writes straight into shared memory
                prod.publish(buf)
                if fps > 0:
                    time.sleep(max(0.0, t0 + (seq + 1) / fps - time.monotonic()))
            produced_s = time.monotonic() - t0
            stats = prod.stats
        finally:
            prod.close()
            done: dict[int, dict[str, Any]] = {}
            deadline = time.monotonic() + 30
            while len(done) < consumers and time.monotonic() < deadline:
                try:
                    msg = results.get(timeout=1.0)
                except queue.Empty:
                    continue
                if msg[0] == "done":
                    done[msg[1]] = msg[2]
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
    print(
        f"producer: {stats.published} frames published in {produced_s:.2f} s "
        f"({stats.published / produced_s:,.0f} frames/s), {stats.dropped} dropped"
    )
    print(
        f"{'consumer':>8} {'pid':>7} {'frames':>7} {'fps':>9} {'p50 µs':>8} {'p99 µs':>8} "
        f"{'pattern':>7}  array address -> backing file"
    )
    failures = 0
    for i in range(consumers):
        r = done.get(i)
        if r is None:
            print(f"{i:>8} did not report")
            failures += 1
            continue
        zero_copy = r["mapping"] == f"/dev/shm/bips.{name}"
        failures += (not zero_copy) + (not r["pattern_ok"]) + (r["frames"] != frames)
        print(
            f"{i:>8} {r['pid']:>7} {r['frames']:>7} {r['fps']:>9,.0f} {r['p50_us']:>8.1f} "
            f"{r['p99_us']:>8.1f} {'ok' if r['pattern_ok'] else 'BAD':>7}  "
            f"{r['address']:#x} -> {r['mapping']} ({'zero copy' if zero_copy else 'NOT shared'})"
        )
    print(
        "every consumer read the producer's pixels in place: the arrays are the shared memory"
        if failures == 0
        else f"{failures} problem(s) found"
    )
    return 0 if failures == 0 else 1
