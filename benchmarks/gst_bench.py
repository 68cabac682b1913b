# SPDX-License-Identifier: Apache-2.0
"""GStreamer transport benchmark: frames from a gst-launch pipeline to another process.

    python benchmarks/gst_bench.py                  # about a minute
    python benchmarks/gst_bench.py --quick          # fewer frames and repeats, noisier
    python benchmarks/gst_bench.py --json out.json  # also every run and the derived numbers

Three ways, in one run, for 640x360 and 1920x1080 RGB from a non-live ``videotestsrc``:

- ``floor``: ``videotestsrc ! fakesink`` in one process: what producing the frames costs;
- ``shm``:   ``videotestsrc ! shmsink`` -> ``shmsrc ! fakesink``, two gst-launch processes
  (GStreamer's own shared-memory transport, gst-plugins-bad);
- ``bips``:  ``videotestsrc ! bipssink`` -> a Python ``bips.Consumer`` that touches each frame
  through numpy and releases it.

Method: each case runs with N1 and N2 frames and reports the difference, so process start-up,
plugin loading, imports and teardown cancel out:

    frames/s       = (N2 - N1) / (wall(N2) - wall(N1))
    CPU per frame  = (cpu(N2) - cpu(N1)) / (N2 - N1)       user + system of every process

CPU time and context switches come from ``getrusage(RUSAGE_CHILDREN)`` around each run (every
process of a run is a child of this one and reaped before the second reading): the cost of a
frame whatever else runs on the machine, much steadier than frames/s on a busy machine.
*Transport* is the CPU per frame above the floor: what moving a frame to the other process
costs. Every repeat gives one N1/N2 pair; the table shows the median and the range over the
repeats (``--repeat``). Numbers are printed, never asserted.

Both transports are zero-copy on the producer side here: shmsink and bipssink both offer their
shared memory to videotestsrc, which draws straight into it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import bips

SIZES = {"640x360": (640, 360), "1920x1080": (1920, 1080)}
IMPLS = ("floor", "shm", "bips")
CAPACITY = 8  # buffers in the bips pool
RUN_TIMEOUT_S = 60.0

# Frame counts (N1, N2) per size: enough frames that N2 - N1 takes a good fraction of a second.
FULL = {"640x360": (1000, 5000), "1920x1080": (150, 750)}
QUICK = {"640x360": (500, 2000), "1920x1080": (60, 240)}

# The bips consumer: attaches as soon as the pool exists (bipssink holds the first frame until it
# has: wait-for-consumers=1), touches every frame through numpy (one element: like fakesink it
# does not read the pixels), releases it, and at the end of the stream prints how many it got.
CONSUMER = r"""
import sys, bips
name, timeout = sys.argv[1], float(sys.argv[2])
print("ready", flush=True)
n = 0
with bips.Consumer(name, timeout=timeout) as cons:
    for frame in cons:
        frame.numpy().flat[0]
        frame.release()
        n += 1
print(n, flush=True)
"""


class CaseError(RuntimeError):
    """A run failed: a process exited with an error or ran past its time limit."""


@dataclass
class Run:
    impl: str
    size: str
    frames: int
    rep: int
    wall_s: float
    cpu_s: float  # user + system of every process of the run
    switches: int  # context switches of every process of the run (voluntary + involuntary)
    received: int  # frames the consumer got (always all of them, or the run is an error)


def caps(size: str) -> str:
    w, h = SIZES[size]
    return f"video/x-raw,format=RGB,width={w},height={h},framerate=30/1"


def source(size: str, frames: int, pattern: str) -> str:
    return f"videotestsrc num-buffers={frames} pattern={pattern} ! {caps(size)}"


def gst_launch(
    description: str, env: dict[str, str] | None = None, *, messages: bool = False
) -> subprocess.Popen[str]:
    """``gst-launch-1.0 -q`` (or ``-m``: print the bus messages, which ``-q`` would hide)."""
    return subprocess.Popen(
        ["gst-launch-1.0", "-m" if messages else "-q", *description.split()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(procs: list[subprocess.Popen[str]], deadline: float) -> list[tuple[int, str, str]]:
    """Waits for every process; returns (returncode, stdout, stderr) of each. Past ``deadline``
    (time.monotonic()), or 1 s after one of them failed, the others are killed: a failed run
    costs a second, not the whole time limit."""
    failed_at = None
    why = ""
    killed: set[int] = set()
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
            failed_at = now
        if now > deadline or (failed_at is not None and now > failed_at + 1.0):
            why = "ran past the time limit" if now > deadline else "another process failed"
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    killed.add(p.pid)
            break
        time.sleep(0.002)
    results = []
    for p in procs:
        out, err = p.communicate()
        results.append((p.returncode, out, err + (f"\n(killed: {why})" if p.pid in killed else "")))
    return results


def check(*named: tuple[str, tuple[int, str, str]]) -> None:
    """Raises CaseError for the first process that failed by itself (one that was killed
    because another failed only comes after those)."""
    failures = [(n, r) for n, r in named if r[0] != 0]
    failures.sort(key=lambda f: "(killed:" in f[1][2])
    if failures:
        name, (rc, out, err) = failures[0]
        raise CaseError(f"{name} exited with {rc}: {(err or out).strip()[-600:]}")


def children_usage() -> tuple[float, int]:
    """CPU seconds and context switches of every reaped child so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw + r.ru_nivcsw


def run_floor(size: str, frames: int, pattern: str, env: dict[str, str]) -> tuple[float, int]:
    start = time.monotonic()
    (res,) = finish(
        [gst_launch(f"{source(size, frames, pattern)} ! fakesink sync=false", env)],
        start + RUN_TIMEOUT_S,
    )
    check(("videotestsrc ! fakesink", res))
    return time.monotonic() - start, frames


def run_shm(size: str, frames: int, pattern: str, env: dict[str, str]) -> tuple[float, int]:
    w, h = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="gbench") as tmp:
        sock = Path(tmp) / "sock"
        # GStreamer's default area (64 MiB) or 16 frames: with an area of ~8 frames shmsink
        # deadlocked here once videotestsrc's buffer pool held the blocks it had allocated.
        shm_size = max(64 << 20, 16 * w * h * 3)
        start = time.monotonic()
        deadline = start + RUN_TIMEOUT_S
        # wait-for-connection: the sink sends nothing before shmsrc is connected, so no frame is
        # lost; shmsrc passes no EOS along, so it stops by counting (num-buffers).
        sink = gst_launch(
            f"{source(size, frames, pattern)} ! shmsink socket-path={sock} "
            f"wait-for-connection=true shm-size={shm_size} sync=false",
            env,
        )
        while not sock.exists():
            if sink.poll() is not None or time.monotonic() > deadline:
                check(("shmsink pipeline", finish([sink], deadline)[0]))
                raise CaseError("shmsink exited before creating its socket")
            time.sleep(0.002)
        src = gst_launch(
            f"shmsrc socket-path={sock} is-live=true num-buffers={frames} ! {caps(size)} "
            "! fakesink sync=false",
            env,
        )
        src_res, sink_res = finish([src, sink], deadline)
        wall = time.monotonic() - start
    # A killed shmsink leaves its area behind as /dev/shm/shmpipe.<pid>.<n>.
    for leftover in Path("/dev/shm").glob(f"shmpipe.*{sink.pid}.*"):
        if leftover.name.split(".")[1].strip() == str(sink.pid):
            leftover.unlink(missing_ok=True)
    # shmsink may report "Failed waiting on fd activity" when shmsrc disconnects right after
    # its last frame: the frames all arrived (shmsrc counted them), so that is not a failure.
    if src_res[0] == 0 and "fd activity" in sink_res[2]:
        sink_res = (0, sink_res[1], sink_res[2])
    check(("shmsrc pipeline", src_res), ("shmsink pipeline", sink_res))
    return wall, frames


def run_bips(size: str, frames: int, pattern: str, env: dict[str, str]) -> tuple[float, int]:
    name = f"gbench{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cons = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, name, str(RUN_TIMEOUT_S / 2)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cons.stdout is not None
        if cons.stdout.readline().strip() != "ready":  # imports done: it now waits for the pool
            check(("bips consumer", finish([cons], time.monotonic() + 10)[0]))
            raise CaseError("the bips consumer did not start")
        start = time.monotonic()
        sink = gst_launch(
            f"{source(size, frames, pattern)} ! bipssink pool={name} capacity={CAPACITY} "
            "policy=block wait-for-consumers=1 sync=false",
            env,
            messages=True,
        )
        sink_res, cons_res = finish([sink, cons], start + RUN_TIMEOUT_S)
        wall = time.monotonic() - start
    finally:
        if cons.poll() is None:
            cons.kill()
            cons.wait()
        if os.path.exists(f"/dev/shm/bips.{name}"):
            bips.remove_stale_pool(name)
    check(("bipssink pipeline", sink_res), ("bips consumer", cons_res))
    received = int(cons_res[1].split()[-1])
    if received != frames:
        raise CaseError(f"the consumer received {received} of {frames} frames")
    # The counters bipssink posts at EOS: this case measures the zero-copy path, or nothing.
    counters = dict(
        re.findall(r"([\w-]+)=\(guint64\)(\d+)", sink_res[1].split("bipssink-stats")[-1])
    )
    if counters.get("copies") != "0" or counters.get("zero-copy") != str(frames):
        raise CaseError(f"bipssink did not take the zero-copy path for every frame: {counters}")
    return wall, received


RUNNERS: dict[str, Callable[[str, int, str, dict[str, str]], tuple[float, int]]] = {
    "floor": run_floor,
    "shm": run_shm,
    "bips": run_bips,
}


def measure(impl: str, size: str, frames: int, rep: int, pattern: str, env: dict[str, str]) -> Run:
    cpu0, sw0 = children_usage()
    wall, received = RUNNERS[impl](size, frames, pattern, env)
    cpu1, sw1 = children_usage()
    return Run(impl, size, frames, rep, wall, cpu1 - cpu0, sw1 - sw0, received)


def bipssink_available(env: dict[str, str]) -> str | None:
    """None if gst-inspect finds bipssink, else why not."""
    plugin = Path(bips.get_gst_plugin_path()) / "libgstbips.so"
    if not plugin.is_file():
        return f"{plugin} is not built (bips was built without GStreamer development files)"
    res = subprocess.run(
        ["gst-inspect-1.0", "bipssink"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if res.returncode != 0:
        return f"gst-inspect-1.0 cannot load bipssink: {res.stderr.strip()[-300:]}"
    return None


def derive(runs: list[Run]) -> list[dict[str, Any]]:
    """Per size and path: frames/s, CPU and context switches per frame from each repeat's N1/N2
    pair (median, and the range over the repeats), the transport CPU above the floor, and the
    bips/shm ratios of the medians."""
    rows: list[dict[str, Any]] = []
    for size in SIZES:
        by_impl: dict[str, dict[str, Any]] = {}
        for impl in IMPLS:
            mine = [r for r in runs if r.impl == impl and r.size == size]
            counts = sorted({r.frames for r in mine})
            if len(counts) != 2:
                continue
            n1, n2 = counts
            fps, cpu, switches = [], [], []
            for rep in sorted({r.rep for r in mine}):
                pair = {r.frames: r for r in mine if r.rep == rep}
                if len(pair) != 2:
                    continue
                a, b = pair[n1], pair[n2]
                if b.wall_s > a.wall_s:
                    fps.append((n2 - n1) / (b.wall_s - a.wall_s))
                cpu.append((b.cpu_s - a.cpu_s) / (n2 - n1) * 1e6)
                switches.append((b.switches - a.switches) / (n2 - n1))
            if not cpu:
                continue
            by_impl[impl] = {
                "size": size,
                "impl": impl,
                "frames": [n1, n2],
                "repeats": len(cpu),
                "fps": statistics.median(fps) if fps else None,
                "fps_range": [min(fps), max(fps)] if fps else None,
                "cpu_us_per_frame": statistics.median(cpu),
                "cpu_us_range": [min(cpu), max(cpu)],
                "switches_per_frame": statistics.median(switches),
            }
        floor = by_impl.get("floor")
        for row in by_impl.values():
            if floor is not None:
                row["transport_us_per_frame"] = row["cpu_us_per_frame"] - floor["cpu_us_per_frame"]
            rows.append(row)
        b, s = by_impl.get("bips"), by_impl.get("shm")
        if b and s:
            b["fps_vs_shm"] = b["fps"] / s["fps"] if b["fps"] and s["fps"] else None
            b["cpu_vs_shm"] = b["cpu_us_per_frame"] / s["cpu_us_per_frame"]
            # A transport within noise of zero (or below) makes the ratio meaningless.
            if (
                floor is not None
                and min(s["transport_us_per_frame"], b["transport_us_per_frame"]) > 0
            ):
                b["transport_vs_shm"] = b["transport_us_per_frame"] / s["transport_us_per_frame"]
    return rows


PATHS = {"floor": "floor (fakesink)", "shm": "shmsink->shmsrc", "bips": "bipssink->Python"}


def render(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    def num(v: float | None, fmt: str = "{:,.0f}") -> str:
        return "-" if v is None else fmt.format(v)

    def spread(v: float | None, rng: list[float] | None, fmt: str) -> str:
        if v is None or rng is None:
            return "-"
        return f"{num(v, fmt)} ({num(rng[0], fmt)}-{num(rng[1], fmt)})"

    head = ["size", "path", "frames/s", "CPU us/frame", "transport", "switches", "bips vs shm"]
    lines = [head]
    for r in rows:
        vs = ""
        if r["impl"] == "bips" and "cpu_vs_shm" in r:
            vs = (
                f"fps {num(r.get('fps_vs_shm'), '{:.2f}x')}, "
                f"CPU {num(r['cpu_vs_shm'], '{:.2f}x')}, "
                f"transport {num(r.get('transport_vs_shm'), '{:.2f}x')}"
            )
        transport = r.get("transport_us_per_frame")
        lines.append(
            [
                r["size"],
                PATHS[r["impl"]],
                spread(r["fps"], r["fps_range"], "{:,.0f}"),
                spread(r["cpu_us_per_frame"], r["cpu_us_range"], "{:,.0f}"),
                "" if r["impl"] == "floor" else num(transport, "{:,.0f}"),
                num(r["switches_per_frame"], "{:.2f}"),
                vs,
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    title = (
        f"bips {info['bips']} / {info['gstreamer']}, {info['cpus']} CPUs, load "
        f"{info['load_start']} -> {info['load_end']}, pattern={info['pattern']}; "
        f"median (range) of {info['repeat']} repeats"
    )
    out = [title, ""]
    for i, row in enumerate(lines):
        out.append(
            "  ".join(
                c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out += [
        "",
        "transport: CPU us per frame above the floor; switches: context switches per frame,",
        "all processes together (each is a sleep or a preemption).",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer frames, 2 repeats")
    p.add_argument("--repeat", type=int, default=None, help="runs per measurement (default 3)")
    p.add_argument("--sizes", default=",".join(SIZES), help="any of " + ",".join(SIZES))
    p.add_argument("--impls", default=",".join(IMPLS), help="any of " + ",".join(IMPLS))
    p.add_argument(
        "--pattern",
        default="black",
        help="videotestsrc pattern (default black: cheap to draw, so the transport "
        "is not hidden behind drawing)",
    )
    p.add_argument("--json", metavar="PATH", help="write every run and derived number")
    args = p.parse_args(argv)

    sizes = [s for s in args.sizes.split(",") if s]
    impls = [i for i in args.impls.split(",") if i]
    for s in sizes:
        if s not in SIZES:
            p.error(f"unknown size {s!r}")
    for i in impls:
        if i not in IMPLS:
            p.error(f"unknown impl {i!r}")
    if not shutil.which("gst-launch-1.0"):
        print("gst-launch-1.0 is not installed (gstreamer1.0-tools)", file=sys.stderr)
        return 1
    counts = QUICK if args.quick else FULL
    repeat = args.repeat or (2 if args.quick else 3)

    env = dict(os.environ)
    env["GST_PLUGIN_PATH"] = os.pathsep.join(
        x for x in (bips.get_gst_plugin_path(), os.environ.get("GST_PLUGIN_PATH")) if x
    )
    if "bips" in impls and (why := bipssink_available(env)):
        print(f"skipping bips: {why}", file=sys.stderr)
        impls.remove("bips")
    if "shm" in impls:
        probe = subprocess.run(
            ["gst-inspect-1.0", "shmsink"], env=env, capture_output=True, timeout=60, check=False
        )
        if probe.returncode != 0:
            print("skipping shm: shmsink not found (gstreamer1.0-plugins-bad)", file=sys.stderr)
            impls.remove("shm")

    version = subprocess.run(
        ["gst-launch-1.0", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    info: dict[str, Any] = {
        "bips": bips.__version__,
        "gstreamer": version.stdout.splitlines()[1] if version.returncode == 0 else "?",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_start": round(os.getloadavg()[0], 2),
        "pattern": args.pattern,
        "repeat": repeat,
        "frames": {s: counts[s] for s in sizes},
    }
    runs: list[Run] = []
    errors: list[str] = []
    try:
        # Repeats outermost: a burst of load from elsewhere spreads over all paths, not one.
        for rep in range(repeat):
            for size in sizes:
                for impl in impls:
                    for n in counts[size]:
                        try:
                            r = measure(impl, size, n, rep, args.pattern, env)
                        except CaseError as e:
                            errors.append(f"{impl} {size} N={n}: {e}")
                            print(f"error: {errors[-1]}", file=sys.stderr)
                            continue
                        runs.append(r)
                        print(
                            f"  [{rep + 1}/{repeat}] {impl:5} {size:9} N={n:5}: {r.wall_s:6.3f} s "
                            f"wall, {r.cpu_s:6.3f} s CPU, {r.switches} switches",
                            file=sys.stderr,
                        )
    except KeyboardInterrupt:
        print("interrupted: reporting what was measured", file=sys.stderr)
    info["load_end"] = round(os.getloadavg()[0], 2)
    rows = derive(runs)
    print(render(rows, info))
    if errors:
        print("\nerrors:\n  " + "\n  ".join(errors))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "machine": info,
                    "results": rows,
                    "runs": [asdict(r) for r in runs],
                    "errors": errors,
                },
                f,
                indent=2,
            )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
