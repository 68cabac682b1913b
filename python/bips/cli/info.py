# SPDX-License-Identifier: Apache-2.0
"""``bips info NAME``: one pool's settings and statistics, then a row per consumer slot."""

from __future__ import annotations

import argparse
import time
from typing import Any

import bips
from bips.cli import format as fmt
from bips.cli.options import SHM_PREFIX, pool_arg


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="one pool's settings, statistics and consumers",
                       epilog=fmt.JSON_SCHEMA,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("name", type=pool_arg)
    p.add_argument("--json", action="store_true", help="print JSON (schema below)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = bips.pool_info(args.name)
    now = fmt.now_ns()
    if args.json:
        fmt.print_json(fmt.pool_dict(info, now))
        return 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_ns / 1e9))
    created_ago = fmt.duration(time.time() - info.created_ns / 1e9)
    waited = fmt.duration(info.acquire_wait_ns / 1e9) if info.acquire_waits else "0 s"
    pid = f", pid {info.producer_pid}" if info.producer_pid else ""
    fields = [
        ("pool", f"{info.name} ({SHM_PREFIX}{info.name}, {fmt.size(info.file_size)})"),
        ("producer", f"{fmt.producer_state(info)}{pid}"),
        ("frames", fmt.shape(info)),
        ("device", fmt.device(info)),
        ("buffers", f"{info.capacity} x {fmt.size(info.buffer_size)}, {info.free} free"),
        ("meta size", fmt.size(info.meta_size)),
        ("policy", info.policy),
        ("mode", f"{fmt.mode(info.mode)}, owner {fmt.owner_name(info.owner)}"),
        ("created", f"{created} ({created_ago} ago)"),
        ("published", f"{info.published}, last {fmt.age(info.last_publish_ns, now)}"),
        ("frames/s", fmt.rate(info.fps)),
        ("dropped", str(info.dropped)),
        ("acquire waits", f"{info.acquire_waits} ({waited} waiting in all)"),
        ("consumers", f"{info.consumers} attached (at most {info.max_consumers})"),
    ]
    width = max(len(k) for k, _ in fields)
    for k, v in fields:
        print(f"{k:<{width}}  {v}")
    if info.slots:
        print()
        rows = []
        for s in info.slots:
            lag = fmt.lag(info, s)
            rows.append(
                [
                    str(s.slot),
                    "alive" if s.alive else "dead",
                    str(s.pid),
                    fmt.duration((now - s.attached_ns) / 1e9) if s.attached_ns else "-",
                    str(s.received),
                    str(s.dropped),
                    str(s.skipped),
                    str(s.queued),
                    str(s.held),
                    "-" if lag is None else str(lag),
                    fmt.age(s.last_receive_ns, now),
                    "latest" if s.latest else "all",
                ]
            )
        headers = ["SLOT", "STATE", "PID", "ATTACHED", "RECEIVED", "DROPPED", "SKIPPED"]
        headers += ["QUEUED", "HELD", "LAG", "LAST RECEIVE", "MODE"]
        print(fmt.table(headers, rows, "rlrrrrrrrrrl"))
    return 0
