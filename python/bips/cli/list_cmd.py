# SPDX-License-Identifier: Apache-2.0
"""``bips list``: every pool on this host, a row each (``list`` is a builtin: hence the name)."""

from __future__ import annotations

import argparse
from typing import Any

import bips
from bips.cli import format as fmt


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list the pools on this host", epilog=fmt.JSON_SCHEMA,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON (schema below)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pools = bips.list_pools()
    now = fmt.now_ns()
    if args.json:
        fmt.print_json([fmt.pool_dict(p, now) for p in pools])
        return 0
    if not pools:
        print("no bips pools")
        return 0
    rows = []
    unreadable = []
    for p in pools:
        if p.error is not None:
            unreadable.append(p)
            continue
        rows.append(
            [
                p.name,
                fmt.producer_state(p),
                str(p.consumers),
                f"{p.capacity} x {fmt.size(p.buffer_size)}",
                str(p.published),
                fmt.rate(p.fps),
                str(p.dropped),
                p.policy,
                fmt.mode(p.mode),
                fmt.owner_name(p.owner),
            ]
        )
    headers = ["NAME", "PRODUCER", "CONSUMERS", "BUFFERS", "PUBLISHED", "FPS", "DROPPED"]
    headers += ["POLICY", "MODE", "OWNER"]
    if rows:
        print(fmt.table(headers, rows, "llrrrrrlrl"))
    for p in unreadable:
        print(f"{p.name}: unreadable: {p.error}")
    return 0
