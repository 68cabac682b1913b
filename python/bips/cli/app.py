# SPDX-License-Identifier: Apache-2.0
"""The ``bips`` command: its parser (the SDK directory flags, then one subcommand per command
module) and main(), which turns every error into one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import bips
from bips.cli import bench, clean, demo, info, list_cmd, snapshot, tap, top
from bips.cli.errors import CliError, error_message

DESCRIPTION = (
    "bips: look at the shared-memory frame pools on this host, tap them, and measure them."
)

# In the order `bips --help` lists them.
COMMANDS = (list_cmd, info, top, tap, snapshot, clean, bench, demo)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bips", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"bips {bips.__version__}")
    p.add_argument("--cmake-dir", action="store_true", help="print the CMake package directory")
    p.add_argument("--include-dir", action="store_true", help="print the C++ include directory")
    p.add_argument("--pkgconfig-dir", action="store_true", help="print the pkg-config directory")
    p.add_argument(
        "--gst-plugin-path",
        action="store_true",
        help="print the directory of the GStreamer plugin (for GST_PLUGIN_PATH)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
        parser().print_help()
        return 0
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`bips tap cam0 | head`): no traceback, and no second error
        # when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (CliError, bips.Error, OSError, ValueError) as e:
        print(f"bips: error: {error_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:
        if os.environ.get("BIPS_DEBUG"):
            raise
        print(
            f"bips: error: {type(e).__name__}: {e} (set BIPS_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
