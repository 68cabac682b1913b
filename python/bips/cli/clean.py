# SPDX-License-Identifier: Apache-2.0
"""``bips clean``: remove the pools whose processes are all dead."""

from __future__ import annotations

import argparse
from typing import Any

import bips
from bips.cli.errors import os_message
from bips.cli.options import pool_arg


def add_parser(sub: Any) -> None:
    p = sub.add_parser("clean", help="remove pools whose processes are all dead")
    p.add_argument("names", nargs="*", type=pool_arg, metavar="NAME", help="only these pools")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pools = bips.list_pools()
    if args.names:
        for n in args.names:
            bips.validate_name(n)
            if not any(p.name == n for p in pools):
                print(f"{n}: no such pool")
        pools = [p for p in pools if p.name in args.names]
    verb = "would remove" if args.dry_run else "removed"
    acted = 0
    for p in pools:
        if p.error is None and (p.producer_alive or any(s.alive for s in p.slots)):
            who = [f"producer {p.producer_pid}"] if p.producer_alive else []
            who += [f"consumer {s.pid}" for s in p.slots if s.alive]
            print(f"{p.name}: in use ({', '.join(who)}), left alone")
            continue
        if p.error == "being created":
            print(f"{p.name}: being created, left alone")
            continue
        if args.dry_run:
            if p.error is None:
                print(f"{p.name}: {verb} (nothing alive uses it)")
                acted += 1
            else:
                print(f"{p.name}: unreadable ({p.error}); removed only if it is a bips pool "
                      "nobody uses")  # fmt: skip
            continue
        try:
            removed = bips.remove_stale_pool(p.name)
        except bips.CorruptPool:
            print(f"{p.name}: not a bips pool, left alone")
            continue
        except OSError as e:
            print(f"{p.name}: cannot remove: {os_message(e)}")
            continue
        if removed:
            print(f"{p.name}: {verb}")
            acted += 1
        else:
            print(f"{p.name}: in use or already gone, left alone")
    total = "would be removed" if args.dry_run else "removed"
    print(f"{acted} pool{'s' if acted != 1 else ''} {total}")
    return 0
