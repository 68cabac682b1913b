# SPDX-License-Identifier: Apache-2.0
"""``bips top``: every pool and every consumer, refreshed, with rates from successive readings."""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bips
from bips.cli import format as fmt
from bips.cli.options import count, positive

# A reading of one counter: (CLOCK_MONOTONIC ns, value).
_Sample = tuple[int, int]


class Rates:
    """Frames/s of every pool and consumer between two successive readings. A pool is known by
    its name and creation time and a consumer also by its pid and attach time, so that a new
    producer or a new consumer in a reused slot starts afresh instead of showing a jump."""

    def __init__(self) -> None:
        self._prev: dict[tuple[Any, ...], _Sample] = {}

    def update(self, pools: list[bips.PoolInfo], now: int) -> dict[tuple[Any, ...], float]:
        cur: dict[tuple[Any, ...], _Sample] = {}
        for p in pools:
            if p.error is not None:
                continue
            cur[self.pool_key(p)] = (now, p.published)
            for s in p.slots:
                cur[self.slot_key(p, s)] = (now, s.received)
        out = {}
        for key, (t, v) in cur.items():
            before = self._prev.get(key)
            if before is not None and t > before[0] and v >= before[1]:
                out[key] = (v - before[1]) * 1e9 / (t - before[0])
        self._prev = cur
        return out

    @staticmethod
    def pool_key(p: bips.PoolInfo) -> tuple[Any, ...]:
        return (p.name, p.created_ns)

    @staticmethod
    def slot_key(p: bips.PoolInfo, s: bips.SlotInfo) -> tuple[Any, ...]:
        return (p.name, p.created_ns, s.slot, s.pid, s.attached_ns)


def _since(then_ns: int, now_ns: int) -> str:
    return "never" if then_ns <= 0 else fmt.duration((now_ns - then_ns) / 1e9)


def render(pools: list[bips.PoolInfo], rates: dict[tuple[Any, ...], float], now: int) -> Any:
    """A rich Table: a row per pool, an indented row per consumer slot under it. Laid out to
    fit 80 columns with a pool name of 20 characters; INFO wraps first when space runs out."""
    from rich.table import Table
    from rich.text import Text

    title = f"bips top  {time.strftime('%H:%M:%S')}  {len(pools)} pool(s)  (q quits)"
    t = Table(
        title=title, title_justify="left", box=None, header_style="bold", collapse_padding=True
    )
    t.add_column("POOL / CONSUMER", no_wrap=True)
    t.add_column("STATE", no_wrap=True)
    for name in ("PID", "FPS", "FRAMES", "LAG", "Q/H", "DROP", "LAST"):
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("INFO")
    for p in pools:
        if p.error is not None:
            t.add_row(Text(p.name, style="bold"), Text("error", style="red"), *[""] * 7,
                      Text(p.error, style="red"))  # fmt: skip
            continue
        state = fmt.producer_state(p)
        waits = f", {p.acquire_waits} acquire waits" if p.acquire_waits else ""
        t.add_row(
            Text(p.name, style="bold"),
            Text(state, style="green" if state == "alive" else "yellow"),
            str(p.producer_pid or "-"),
            fmt.rate(rates.get(Rates.pool_key(p), p.fps)),
            str(p.published),
            "",
            "",
            Text(str(p.dropped), style="red" if p.dropped else ""),
            _since(p.last_publish_ns, now),
            f"{fmt.shape(p)}, {p.policy}, {p.capacity - p.free}/{p.capacity} in use{waits}",
        )
        for s in p.slots:
            lag = fmt.lag(p, s)
            behind = lag is not None and lag >= max(p.capacity // 2, 1)
            info = "latest" if s.latest else ""
            if s.skipped:
                info += f"{', ' if info else ''}{s.skipped} skipped"
            t.add_row(
                f"  slot {s.slot}",
                Text("alive" if s.alive else "dead", style="" if s.alive else "red"),
                str(s.pid),
                fmt.rate(rates.get(Rates.slot_key(p, s))),
                str(s.received),
                Text("-" if lag is None else str(lag), style="yellow" if behind else ""),
                f"{s.queued}/{s.held}",
                Text(str(s.dropped), style="red" if s.dropped else ""),
                _since(s.last_receive_ns, now),
                info,
            )
    if not pools:
        t.add_row("(no pools)")
    return t


@contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still interrupts) when it
    is a terminal; yields its descriptor, or None when there is no terminal to read."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_quit(fd: int | None, seconds: float) -> bool:
    """Sleeps `seconds`, or less if 'q' is pressed; True if it was."""
    if fd is None:
        time.sleep(seconds)
        return False
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready and b"q" in os.read(fd, 64).lower():
            return True


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="live view of every pool's rates, lag and drops",
        description="A row per pool, then a row per consumer slot. FPS: from successive "
        "readings; LAG: frames published after the consumer's last one; Q/H: frames queued "
        "for / held by the consumer; DROP: frames the producer took back (drop_oldest); "
        "LAST: time since the last publish / receive. q or Ctrl-C quits.",
    )
    p.add_argument("--interval", type=positive, default=1.0, help="seconds between refreshes")
    p.add_argument(
        "--iterations", type=count, help="print this many refreshes, then exit (no live view)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_top(interval=args.interval, iterations=args.iterations)


def run_top(interval: float, iterations: int | None) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not console.is_terminal:
        # Piped or captured: print whole refreshes one after another, and wide enough that
        # pool names are never cut.
        console = Console(width=max(console.width, 200))
    rates = Rates()
    shown = 0

    def sample() -> Any:
        pools = bips.list_pools()
        now = fmt.now_ns()
        return render(pools, rates.update(pools, now), now)

    try:
        if not console.is_terminal:
            while True:
                console.print(sample())
                shown += 1
                if iterations is not None and shown >= iterations:
                    return 0
                time.sleep(interval)
        with _keys() as fd, Live(sample(), console=console, auto_refresh=False) as live:
            live.refresh()
            shown = 1
            while iterations is None or shown < iterations:
                if _wait_for_quit(fd, interval):
                    break
                live.update(sample(), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is how top is left: not an error
    return 0
