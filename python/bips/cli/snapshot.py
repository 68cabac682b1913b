# SPDX-License-Identifier: Apache-2.0
"""``bips snapshot NAME out.png``: the next frame of a pool, saved as an image with Pillow (the
conversion is in bips.cli.image)."""

from __future__ import annotations

import argparse
from typing import Any

import bips
from bips.cli.errors import CliError
from bips.cli.options import owner_option, pool_arg, positive


def add_parser(sub: Any) -> None:
    p = sub.add_parser("snapshot", help="save the next frame as an image (PNG, ...)")
    p.add_argument("name", type=pool_arg)
    p.add_argument("output", help="image file; the format follows the extension")
    p.add_argument(
        "--timeout", type=positive, default=5.0, help="seconds to wait for a frame (default 5)"
    )
    owner_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bips.cli.image import SnapshotError, snapshot

    try:
        snapshot(args.name, args.output, timeout=args.timeout, owner=args.owner)
    except SnapshotError as e:
        raise CliError(str(e)) from None
    except bips.Timeout:
        raise CliError(f"no frame from '{args.name}' within {args.timeout:g} s") from None
    print(f"saved a frame of '{args.name}' to {args.output}")
    return 0
