# SPDX-License-Identifier: Apache-2.0
"""The ``bips`` command line: build-system paths, listing pools, and the demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import bips


def _cmd_list(args: argparse.Namespace) -> int:
    pools = bips.list_pools()
    if not pools:
        print("no bips pools")
        return 0
    for p in pools:
        if p.error:
            print(f"{p.name:20} error: {p.error}")
            continue
        state = "alive" if p.producer_alive else ("closed" if p.closed else "gone")
        print(
            f"{p.name:20} producer={state:6} consumers={p.consumers:<3} "
            f"{p.capacity}x{p.buffer_size}B policy={p.policy} published={p.published} "
            f"dropped={p.dropped} mode={p.mode:o}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bips.demo import run_demo

    return run_demo(frames=args.frames, consumers=args.consumers, fps=args.fps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bips", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bips {bips.__version__}")
    parser.add_argument(
        "--cmake-dir", action="store_true", help="print the CMake package directory"
    )
    parser.add_argument(
        "--include-dir", action="store_true", help="print the C++ include directory"
    )
    parser.add_argument(
        "--pkgconfig-dir", action="store_true", help="print the pkg-config directory"
    )
    parser.add_argument(
        "--gst-plugin-path",
        action="store_true",
        help="print the directory of the GStreamer plugin (for GST_PLUGIN_PATH)",
    )
    sub = parser.add_subparsers(dest="command")
    p_list = sub.add_parser("list", help="list the pools on this host")
    p_list.set_defaults(func=_cmd_list)
    p_demo = sub.add_parser("demo", help="a producer and three consumers on a test pattern")
    p_demo.add_argument("--frames", type=int, default=300)
    p_demo.add_argument("--consumers", type=int, default=3)
    p_demo.add_argument("--fps", type=float, default=0.0, help="0 = as fast as possible")
    p_demo.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)

    if args.cmake_dir:
        print(bips.get_cmake_dir())
        return 0
    if args.include_dir:
        print(bips.get_include())
        return 0
    if args.pkgconfig_dir:
        print(bips.get_pkgconfig_dir())
        return 0
    if args.gst_plugin_path:
        print(bips.get_gst_plugin_path())
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except bips.Error as e:
        print(f"bips: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
