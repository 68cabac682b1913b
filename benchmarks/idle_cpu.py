# SPDX-License-Identifier: Apache-2.0
"""What waiting costs with adaptive spinning on (the default): the CPU a consumer of a 30 fps
stream uses, and the CPU a producer uses while it is blocked on a full pool (a consumer that
takes 33 ms per frame). Both should sleep, not spin: well under 2% of a core.

    python benchmarks/idle_cpu.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import time

import bips

FPS = 30


def consumer_of_slow_stream(seconds: float) -> None:
    name = f"idle-{os.getpid()}"
    with bips.Producer(name, capacity=8, shape=(360, 640, 3), dtype="uint8") as prod:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with bips.Consumer(name, timeout=5.0) as cons:
                    t0, w0, n = time.process_time(), time.monotonic(), 0
                    for frame in cons:
                        frame.numpy().item(0)
                        frame.release()
                        n += 1
                    cpu, wall = time.process_time() - t0, time.monotonic() - w0
                    s = cons.stats
                    print(
                        f"consumer of a {FPS} fps stream: {n} frames in {wall:.1f} s, CPU "
                        f"{cpu * 1e3:.1f} ms = {100 * cpu / wall:.2f}% of a core "
                        f"(waits: {s.spins} spun, {s.sleeps} slept)"
                    )
                    code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 5.0
        while prod.stats.consumers == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(int(seconds * FPS)):
            prod.publish(prod.acquire(timeout=1.0))
            time.sleep(1 / FPS)
    os.waitpid(pid, 0)


def producer_blocked_on_full_pool(seconds: float) -> None:
    name = f"blocked-{os.getpid()}"
    with bips.Producer(name, capacity=8, shape=(64,), dtype="uint8") as prod:
        pid = os.fork()
        if pid == 0:
            try:
                with bips.Consumer(name, timeout=5.0) as cons:
                    for frame in cons:
                        time.sleep(1 / FPS)
                        frame.release()
            finally:
                os._exit(0)
        deadline = time.monotonic() + 5.0
        while prod.stats.consumers == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0, w0 = time.process_time(), time.monotonic()
        while time.monotonic() - w0 < seconds:
            prod.publish(prod.acquire(timeout=2.0))
        cpu, wall = time.process_time() - t0, time.monotonic() - w0
        s = prod.stats
        print(
            f"producer blocked on a full pool: {s.published} frames in {wall:.1f} s, CPU "
            f"{100 * cpu / wall:.2f}% of a core (waits: {s.spins} spun, {s.sleeps} slept)"
        )
    os.waitpid(pid, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    consumer_of_slow_stream(args.seconds)
    producer_blocked_on_full_pool(args.seconds)


if __name__ == "__main__":
    main()
