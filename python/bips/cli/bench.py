# SPDX-License-Identifier: Apache-2.0
"""``bips bench``: the cases of bips.benchkit with a progress bar and a results table (or JSON)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from bips.cli.errors import CliError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="hand-off rate and wake-up latency between processes")
    p.add_argument("--quick", action="store_true", help="short windows, 1 consumer (a few s)")
    p.add_argument("--json", action="store_true", help="print every number as JSON")
    p.add_argument(
        "--sizes",
        help="comma-separated frame sizes: 64B,640x360x3,3840x2160x3 (default: all)",
    )
    p.add_argument(
        "--consumers",
        help="comma-separated consumer counts for the hand-off cases (default 1,4; quick: 1)",
    )
    p.set_defaults(func=run)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _parse(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    from bips.benchkit import SIZES

    sizes = list(SIZES)
    if args.sizes:
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        bad = [s for s in sizes if s not in SIZES]
        if bad or not sizes:
            raise CliError(f"unknown size {bad}; choose from {','.join(SIZES)}")
    consumers = [1] if args.quick else [1, 4]
    if args.consumers:
        try:
            consumers = [int(c) for c in args.consumers.split(",") if c.strip()]
        except ValueError:
            consumers = []
        if not consumers or min(consumers) < 1:
            raise CliError(f"--consumers wants whole numbers >= 1, not {args.consumers!r}")
    return sizes, consumers


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bips import benchkit as bench

    sizes, consumers = _parse(args)
    st = bench.QUICK if args.quick else bench.FULL
    # The latency cases pace the producer, so their length does not depend on the size: one
    # size is enough for a quick look.
    latency_sizes = sizes[:1] if args.quick else sizes
    # Workers are forked: quick to start, and nothing here runs threads that a fork could
    # catch holding a lock (the progress bar is refreshed by hand, not by its thread).
    start_method = "fork"
    runner = bench.Runner(start_method)
    cases = bench.plan(runner, st, sizes, consumers, latency_sizes, spin=not args.quick)
    config = bench.config(st, "quick" if args.quick else "full", start_method)
    machine = bench.machine_info()
    err = Console(stderr=True)
    records: list[dict[str, Any]] = []
    interrupted = False
    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    t_start = time.monotonic()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        auto_refresh=False,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task("starting", total=len(cases))

    def on_start(k: int, case: bench.Case) -> None:
        progress.update(task, description=case.label)
        progress.refresh()
        if not err.is_terminal:
            print(f"[{k}/{len(cases)}] {case.label} ...", file=sys.stderr, flush=True)

    def on_done(k: int, case: bench.Case, rec: dict[str, Any], seconds: float) -> None:
        progress.advance(task)
        progress.refresh()
        if "error" in rec:
            first = rec["error"].splitlines()[0]
            progress.console.print(f"[red]{case.label}: FAILED[/red] {first}", markup=True)

    try:
        with progress:
            bench.run_cases(cases, records, on_start, on_done)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: reporting what was measured so far", file=sys.stderr)
    finally:
        runner.shutdown()
        for s, h in old.items():
            signal.signal(s, h)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["elapsed_s"] = round(time.monotonic() - t_start, 1)
    if args.json:
        out = {
            "machine": machine,
            "config": config,
            "results": records,
            "interrupted": interrupted,
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _render(Console(), machine, config, records)
    if interrupted:
        return 130
    return 1 if any("error" in r for r in records) else 0


def _render(
    console: Any, machine: dict[str, Any], config: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    from rich.box import SIMPLE
    from rich.table import Table

    console.print(
        f"bips {machine['bips']} on {machine['nproc']} CPUs ({machine['cpu']}), "
        f"Python {machine['python']}, load {machine['loadavg_start'][0]} -> "
        f"{machine['loadavg_end'][0]}; {config['mode']} run, {machine['elapsed_s']} s",
        highlight=False,
    )
    handoff = [r for r in records if r["group"] == "handoff" and "error" not in r]
    if handoff:
        t = Table(
            title="Hand-off, Python producer -> N Python consumer processes "
            f"(capacity {config['capacity']}, policy block)",
            title_justify="left",
            box=SIMPLE,
        )
        t.add_column("frame", no_wrap=True)
        for col in ("N", "frames/s each", "frames/s total"):
            t.add_column(col, justify="right")
        t.add_column("CPU us/frame producer", justify="right")
        t.add_column("CPU us/frame consumer", justify="right")
        t.add_column("out of seq", justify="right")
        for r in handoff:
            t.add_row(
                r["size"],
                str(r["consumers"]),
                f"{r['mean_fps']:,.0f}",
                f"{r['total_fps']:,.0f}",
                f"{r['producer_cpu_us_per_frame']:.2f}",
                f"{r['consumer_cpu_us_per_frame']:.2f}",
                str(r["out_of_sequence"]),
            )
        console.print(t)
    latency = [r for r in records if r["group"] == "latency" and "error" not in r]
    if latency:
        t = Table(
            title="Wake-up latency, publish -> consumer read one element (us)",
            title_justify="left",
            box=SIMPLE,
        )
        t.add_column("frame", no_wrap=True)
        t.add_column("wait", no_wrap=True)
        for col in ("samples", "p50", "p99", "p99.9", "wake p50"):
            t.add_column(col, justify="right")
        for r in latency:
            t.add_row(
                r["size"],
                "block" if r["wait"] == "block" else f"spin {config['spin_s'] * 1e3:g} ms",
                str(r["n"]),
                f"{r['p50_us']:,.1f}",
                f"{r['p99_us']:,.1f}",
                f"{r['p999_us']:,.1f}",
                f"{r['wake_p50_us']:,.1f}",
            )
        console.print(t)
    for r in records:
        if "error" in r:
            console.print(f"[red]failed[/red]: {r['group']} {r['size']}: {r['error']}")
