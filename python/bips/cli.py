# SPDX-License-Identifier: Apache-2.0
"""bips: look at the shared-memory frame pools on this host, tap them, and measure them.

  bips list [--json]                 every pool: producer, consumers, rates, drops, owner
  bips info NAME [--json]            one pool's settings and a row per consumer slot
  bips top [--interval S]            live view of every pool (q or Ctrl-C quits)
  bips tap NAME [--every-second]     attach as a consumer and print a line per frame
  bips snapshot NAME out.png         save the next frame as an image (needs Pillow)
  bips clean [--dry-run] [NAME ...]  remove pools whose processes are all dead
  bips bench [--quick] [--json]      hand-off rate and wake-up latency on this machine
  bips demo                          a producer and three consumers on a test pattern

Statistics are read from the shared segments without attaching and without locks: they work
for any pool you can read, whoever made it. Errors are one line on stderr and exit status 1.

The JSON of ``list --json`` and ``info --json`` is described in JSON_SCHEMA below (and by
``bips list --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import bips
from bips import _cli_format as fmt

SHM_PREFIX = "/dev/shm/bips."

JSON_SCHEMA = """\
JSON (list --json: a list of these objects; info --json: one). Every field of
bips.PoolInfo: name, error (null, or why the entry is unreadable; then only name and error
are set), producer_alive, closed, producer_pid, consumers, max_consumers, capacity, free,
buffer_size, meta_size, shape (list), dtype (numpy name), policy, mode (int), owner (uid),
created_ns (CLOCK_REALTIME), file_size, published, dropped, fps, last_publish_ns,
acquire_waits, acquire_wait_ns; plus owner_name, sampled_ns (CLOCK_MONOTONIC time of the
reading; every other *_ns time but created_ns is on that clock) and slots: a list of every
bips.SlotInfo field (slot, alive, pid, latest, attached_ns, received, dropped, skipped,
queued, held, last_seq, last_receive_ns) plus lag (published - 1 - last_seq; null before the
first frame).
"""


class CliError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def pool_arg(text: str) -> str:
    """A pool name; the file path /dev/shm/bips.NAME is accepted too."""
    return text.removeprefix(SHM_PREFIX)


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


# ---- list -----------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    pools = bips.list_pools()
    now = fmt.now_ns()
    if args.json:
        _print_json([fmt.pool_dict(p, now) for p in pools])
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


# ---- info -----------------------------------------------------------------------------------


def _cmd_info(args: argparse.Namespace) -> int:
    info = bips.pool_info(args.name)
    now = fmt.now_ns()
    if args.json:
        _print_json(fmt.pool_dict(info, now))
        return 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_ns / 1e9))
    created_ago = fmt.duration(time.time() - info.created_ns / 1e9)
    waited = fmt.duration(info.acquire_wait_ns / 1e9) if info.acquire_waits else "0 s"
    pid = f", pid {info.producer_pid}" if info.producer_pid else ""
    fields = [
        ("pool", f"{info.name} ({SHM_PREFIX}{info.name}, {fmt.size(info.file_size)})"),
        ("producer", f"{fmt.producer_state(info)}{pid}"),
        ("frames", fmt.shape(info)),
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


# ---- clean ----------------------------------------------------------------------------------


def _cmd_clean(args: argparse.Namespace) -> int:
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
            print(f"{p.name}: cannot remove: {_os_message(e)}")
            continue
        if removed:
            print(f"{p.name}: {verb}")
            acted += 1
        else:
            print(f"{p.name}: in use or already gone, left alone")
    total = "would be removed" if args.dry_run else "removed"
    print(f"{acted} pool{'s' if acted != 1 else ''} {total}")
    return 0


# ---- tap ------------------------------------------------------------------------------------


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


def _cmd_tap(args: argparse.Namespace) -> int:
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


# ---- the rest live in their own modules ------------------------------------------------------


def _cmd_top(args: argparse.Namespace) -> int:
    from bips._cli_top import run_top

    return run_top(interval=args.interval, iterations=args.iterations)


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from bips._cli_snapshot import SnapshotError, snapshot

    try:
        snapshot(args.name, args.output, timeout=args.timeout, owner=args.owner)
    except SnapshotError as e:
        raise CliError(str(e)) from None
    except bips.Timeout:
        raise CliError(f"no frame from '{args.name}' within {args.timeout:g} s") from None
    print(f"saved a frame of '{args.name}' to {args.output}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from bips._cli_bench import run_bench

    return run_bench(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from bips.demo import run_demo

    return run_demo(frames=args.frames, consumers=args.consumers, fps=args.fps)


# ---- arguments and errors -------------------------------------------------------------------


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return v


def _owner(text: str) -> int | str:
    if text == "any":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a uid or 'any', not {text}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a uid >= 0 or 'any', not {text}")
    return v


def _owner_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--owner",
        type=_owner,
        default=None,
        help="accept a pool of this uid ('any': of anyone); default: yours or root's",
    )


def _count(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return v


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bips", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("list", help="list the pools on this host", epilog=JSON_SCHEMA,
                       formatter_class=raw)  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON (schema below)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="one pool's settings, statistics and consumers",
                       epilog=JSON_SCHEMA, formatter_class=raw)  # fmt: skip
    p.add_argument("name", type=pool_arg)
    p.add_argument("--json", action="store_true", help="print JSON (schema below)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "top",
        help="live view of every pool's rates, lag and drops",
        description="A row per pool, then a row per consumer slot. FPS: from successive "
        "readings; LAG: frames published after the consumer's last one; Q/H: frames queued "
        "for / held by the consumer; DROP: frames the producer took back (drop_oldest); "
        "LAST: time since the last publish / receive. q or Ctrl-C quits.",
    )
    p.add_argument("--interval", type=_positive, default=1.0, help="seconds between refreshes")
    p.add_argument(
        "--iterations", type=_count, help="print this many refreshes, then exit (no live view)"
    )
    p.set_defaults(func=_cmd_top)

    p = sub.add_parser("tap", help="attach as a consumer and print a line per frame")
    p.add_argument("name", type=pool_arg)
    p.add_argument("--count", type=_count, help="stop after this many frames")
    p.add_argument("--every-second", action="store_true", help="a line per second, not per frame")
    p.add_argument("--latest", action="store_true", help="attach with latest=True")
    p.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        help="seconds to wait for the pool, and for each frame (default 5)",
    )
    _owner_option(p)
    p.set_defaults(func=_cmd_tap)

    p = sub.add_parser("snapshot", help="save the next frame as an image (PNG, ...)")
    p.add_argument("name", type=pool_arg)
    p.add_argument("output", help="image file; the format follows the extension")
    p.add_argument(
        "--timeout", type=_positive, default=5.0, help="seconds to wait for a frame (default 5)"
    )
    _owner_option(p)
    p.set_defaults(func=_cmd_snapshot)

    p = sub.add_parser("clean", help="remove pools whose processes are all dead")
    p.add_argument("names", nargs="*", type=pool_arg, metavar="NAME", help="only these pools")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=_cmd_clean)

    from bips._cli_bench import add_arguments

    p = sub.add_parser("bench", help="hand-off rate and wake-up latency between processes")
    add_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="a producer and three consumers on a test pattern")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--consumers", type=int, default=3)
    p.add_argument("--fps", type=float, default=0.0, help="0 = as fast as possible")
    p.set_defaults(func=_cmd_demo)
    return parser


def _os_message(e: OSError) -> str:
    # bips' own OSErrors carry their full message in strerror; plain ones get the file name.
    msg = e.strerror or str(e)
    if e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return msg


def _error_message(e: BaseException) -> str:
    if isinstance(e, PermissionError):
        return f"permission denied: {_os_message(e)}"
    if isinstance(e, OSError):
        return _os_message(e)
    return str(e) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        _parser().print_help()
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
        print(f"bips: error: {_error_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:
        if os.environ.get("BIPS_DEBUG"):
            raise
        print(
            f"bips: error: {type(e).__name__}: {e} (set BIPS_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
