# SPDX-License-Identifier: Apache-2.0
"""What asyncio costs per frame: ``async for`` against a blocking ``for`` on the same stream.

Two cases, each run with a producer in another process:
- throughput: the producer publishes as fast as it can (policy block, capacity 8), so frames are
  usually already queued and receive_async takes them on the loop's thread;
- paced: one frame every 2 ms, so every receive has to wait; the latency from publish
  (frame.timestamp_ns) to the consumer's hands shows the cost of the helper-thread hop.

    python benchmarks/aio_bench.py [--frames N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import bips

PRODUCER = r"""
import sys, time, bips
name, n, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with bips.Producer(name, capacity=8, shape=(360, 640, 3), dtype="uint8") as prod:
    print("ready", flush=True)
    while prod.stats.consumers == 0:
        time.sleep(0.001)
    next_t = time.monotonic()
    for _ in range(n):
        if period:
            next_t += period
            while time.monotonic() < next_t:
                pass
        prod.publish(prod.acquire(timeout=5))
"""


def run(mode: str, n: int, period: float) -> dict[str, float]:
    name = f"aiobench{os.getpid()}-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, name, str(n), str(period)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        lat: list[int] = []
        cons = bips.Consumer(name, timeout=5.0)
        start = time.perf_counter()
        cpu0 = time.process_time()
        if mode == "sync":
            for frame in cons:
                lat.append(time.monotonic_ns() - frame.timestamp_ns)
                frame.release()
        else:

            async def main() -> None:
                async for frame in cons:
                    lat.append(time.monotonic_ns() - frame.timestamp_ns)
                    frame.release()

            asyncio.run(main())
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        cons.close()
    finally:
        proc.wait(timeout=30)
    lat.sort()
    return {
        "frames": len(lat),
        "fps": len(lat) / wall,
        "cpu_us_per_frame": cpu / max(1, len(lat)) * 1e6,
        "latency_p50_us": statistics.median(lat) / 1e3,
        "latency_p99_us": lat[int(len(lat) * 0.99)] / 1e3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = {}
    for case, n, period in (("throughput", args.frames, 0.0), ("paced 2 ms", 1000, 0.002)):
        for mode in ("sync", "async"):
            results[f"{case} {mode}"] = run(mode, n, period)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'case':24} {'frames/s':>10} {'CPU us/frame':>13} {'p50 us':>8} {'p99 us':>8}")
    for k, r in results.items():
        print(
            f"{k:24} {r['fps']:10.0f} {r['cpu_us_per_frame']:13.1f} "
            f"{r['latency_p50_us']:8.1f} {r['latency_p99_us']:8.1f}"
        )
    for case in ("throughput", "paced 2 ms"):
        s, a = results[f"{case} sync"], results[f"{case} async"]
        print(
            f"{case}: async/sync CPU per frame {a['cpu_us_per_frame'] / s['cpu_us_per_frame']:.2f}x, "
            f"p50 latency +{a['latency_p50_us'] - s['latency_p50_us']:.1f} us"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
