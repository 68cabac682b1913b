# SPDX-License-Identifier: Apache-2.0
"""``bips tap NAME``: attach as a consumer and print a line per frame (or per second)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import bips
from bips.cli.errors import CliError
from bips.cli.options import count, owner_option, pool_arg, positive


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tap", help="attach as a consumer and print a line per frame")
    p.add_argument("name", type=pool_arg)
    p.add_argument("--count", type=count, help="stop after this many frames")
    p.add_argument("--every-second", action="store_true", help="a line per second, not per frame")
    p.add_argument("--latest", action="store_true", help="attach with latest=True")
    p.add_argument(
        "--timeout",
        type=positive,
        default=5.0,
        help="seconds to wait for the pool, and for each frame (default 5)",
    )
    owner_option(p)
    p.set_defaults(func=run)


class _TapStats:
    """Frames, latency and losses, for the per-second lines and the summary."""

    def __init__(self) -> None:
        self.frames = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.lat_sum = 0.0
        self.lat_max = 0.0
        self.t0 = time.monotonic()

    def add(self, seq: int, latency_ms: float) -> None:
        self.frames += 1
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
        self.lat_sum += latency_ms
        self.lat_max = max(self.lat_max, latency_ms)

    def line(self, cons: bips.Consumer, dropped0: int, skipped0: int) -> str:
        st = cons.stats
        secs = max(time.monotonic() - self.t0, 1e-9)
        mean = self.lat_sum / self.frames if self.frames else 0.0
        return (
            f"frames={self.frames} fps={self.frames / secs:.1f} latency_ms_mean={mean:.3f} "
            f"latency_ms_max={self.lat_max:.3f} dropped={st.dropped - dropped0} "
            f"skipped={st.skipped - skipped0}"
        )


def run(args: argparse.Namespace) -> int:
    timeout = args.timeout
    try:
        cons = bips.Consumer(args.name, timeout=timeout, latest=args.latest, owner=args.owner)
    except bips.Timeout:
        raise CliError(f"no pool named '{args.name}' appeared within {timeout:g} s") from None
    with cons:
        base = cons.stats
        total = _TapStats()
        second = _TapStats()
        ended = False
        last_frame = time.monotonic()
        while args.count is None or total.frames < args.count:
            wait = timeout - (time.monotonic() - last_frame)
            if args.every_second:
                wait = min(wait, max(second.t0 + 1.0 - time.monotonic(), 0.0))
            try:
                frame = cons.receive(max(wait, 0.0))
            except bips.ProducerGone:
                ended = True
                break
            except bips.Timeout:
                frame = None
            now = time.monotonic()
            if frame is not None:
                last_frame = now
                latency_ms = (time.monotonic_ns() - frame.timestamp_ns) / 1e6
                seq, shape, dtype = frame.seq, frame.shape, frame.dtype
                frame.release()
                total.add(seq, latency_ms)
                second.add(seq, latency_ms)
                if not args.every_second:
                    dims = "x".join(map(str, shape))
                    print(f"seq={seq} shape={dims} dtype={dtype} latency_ms={latency_ms:.3f}",
                          flush=True)  # fmt: skip
            if args.every_second and now >= second.t0 + 1.0:
                print(second.line(cons, base.dropped, base.skipped), flush=True)
                base = cons.stats
                second = _TapStats()
            if frame is None and now - last_frame >= timeout:
                raise CliError(f"no frame from '{args.name}' within {timeout:g} s")
        first = "-" if total.first_seq is None else total.first_seq
        last = "-" if total.last_seq is None else total.last_seq
        end = "end of stream" if ended else "done"
        print(f"{end}: {total.line(cons, 0, 0)} seq={first}..{last}", file=sys.stderr)
    return 0
