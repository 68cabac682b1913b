# SPDX-License-Identifier: Apache-2.0
"""``bips demo``: a producer and three consumers on a test pattern (the demo is bips.demo)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="a producer and three consumers on a test pattern")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--consumers", type=int, default=3)
    p.add_argument("--fps", type=float, default=0.0, help="0 = as fast as possible")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bips.demo import run_demo

    return run_demo(frames=args.frames, consumers=args.consumers, fps=args.fps)
