# SPDX-License-Identifier: Apache-2.0
"""GPU frames across processes: bips GPU pools against three baselines, in one run.

    python benchmarks/gpu_bench.py --quick --json out.json   # ~2 min on one GPU
    python benchmarks/gpu_bench.py                           # full: longer windows, 3 rounds
    python benchmarks/gpu_bench.py --only latency --sizes 1920x1080x3 --impls bips,host

A producer process hands frames to 1 or 4 consumer processes that each want a CUDA tensor of
every frame (gpu_impls.py says how each implementation does it):

- bips     a GPU pool: publish(buf, stream=s) / torch.from_dlpack(frame) / release(stream=...)
- host     a host bips pool + pinned staging + upload, as examples/pytorch_consumer does today
- torchmp  torch.multiprocessing CUDA tensor sharing (IPC handles and IPC events)
- cupy     CuPy IPC memory handles, opened once; the slot index down a pipe

Two measurements per frame size (64 B, 1920x1080x3 and 3840x2160x3 uint8) and consumer count:

- latency: one frame at a time (the next once every consumer is done and 200 us later). The
  producer stamps CLOCK_MONOTONIC once it has a free buffer, writes a marker byte on the GPU and
  hands the frame off. Each consumer stamps when it holds a usable CUDA tensor ("tensor", the
  hand-off as the CPU sees it; for torchmp the GPU may still wait for the producer's event) and
  again once it has read the marker back to the host ("read": the data has really arrived,
  comparable across implementations; the headline numbers). p50/p99/p99.9 in microseconds.
- rate: frames as fast as the consumers take them; each consumer queues an 8-byte GPU read of
  every frame and gives it back (bips: release(stream=...), no waiting; the baselines must wait
  for the read before they return the slot). Frames/s, CPU time per frame, out-of-sequence.

Host copies and host-to-device bytes per frame are given by construction (bips, torchmp, cupy:
none; host: one copy into pinned memory and one upload per consumer); the consumers' peak torch
allocations are in the JSON. Numbers are printed, never asserted. A case that fails is reported
as failed and the run goes on. ``--dry-run`` runs the choreography on host memory and CPU
tensors (no GPU needed; the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import report
from bips.benchkit import merge_rounds, summarize_handoff
from gpu_crew import Crew
from gpu_impls import GPU_SIZES, HOST_COPIES, IMPLS, h2d_bytes
from harness import (
    CaseError,
    latency_summary,
    leftovers,
    machine_info,
    remove_leftovers,
    unique_name,
)

GROUPS = ("latency", "rate")
SIZE_ORDER = ("1920x1080x3", "3840x2160x3", "64B")  # the headline size first
IMPL_NAMES = {"bips": "bips GPU pool", "host": "host pool+pinned", "torchmp": "torch.mp CUDA",
              "cupy": "CuPy IPC"}  # fmt: skip
BASELINES = ("host", "torchmp", "cupy")


class Settings:
    def __init__(self, quick: bool, args: argparse.Namespace) -> None:
        self.mode = "quick" if quick else "full"
        self.warmup = 0.15 if quick else 0.3
        self.rate_s = args.seconds or (0.4 if quick else 1.5)
        self.latency_s = args.seconds or (0.5 if quick else 2.0)
        self.interval_s = (args.interval_us if args.interval_us is not None else 200.0) * 1e-6
        self.rounds = args.rounds or (1 if quick else 3)
        self.budget_s = args.max_seconds or (150.0 if quick else 1500.0)

    def window(self, group: str) -> float:
        return self.latency_s if group == "latency" else self.rate_s

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "warmup_s": self.warmup, "rate_window_s": self.rate_s,
                "latency_window_s": self.latency_s, "latency_interval_us": self.interval_s * 1e6,
                "rounds": self.rounds, "budget_s": self.budget_s, "capacity": 8,
                "policy": "block"}  # fmt: skip


# ---- cases ----------------------------------------------------------------------------------


class Case:
    def __init__(self, group: str, impl: str, size: str, consumers: int, rnd: int) -> None:
        self.group, self.impl, self.size, self.consumers, self.round = (
            group,
            impl,
            size,
            consumers,
            rnd,
        )
        self.label = f"{group} {impl} 1->{consumers} {size}"

    def meta(self) -> dict[str, Any]:
        # group "handoff" for rates: the name bips.benchkit.merge_rounds knows
        return {"group": "latency" if self.group == "latency" else "handoff", "impl": self.impl,
                "size": self.size, "consumers": self.consumers, "round": self.round,
                "host_copies_per_frame": HOST_COPIES[self.impl],
                "h2d_bytes_per_frame": h2d_bytes(self.impl, GPU_SIZES[self.size])}  # fmt: skip


def plan(args: argparse.Namespace, st: Settings) -> list[Case]:
    cases = []
    sizes = [s for s in SIZE_ORDER if s in args.sizes]
    for size in sizes:
        for group in [g for g in GROUPS if g in args.only]:
            for consumers in args.consumers:
                for r in range(st.rounds):
                    k = r % len(args.impls)
                    for impl in args.impls[k:] + args.impls[:k]:
                        cases.append(Case(group, impl, size, consumers, r))
    return cases


def run_case(crew: Crew, case: Case, case_id: int, st: Settings, dry_run: bool) -> dict[str, Any]:
    name = unique_name(f"gpu{case_id}")
    common = {"impl": case.impl, "name": name, "size": case.size, "mode": case.group,
              "dry_run": dry_run}  # fmt: skip
    roles = [("producer", {**common, "consumers": case.consumers, "interval_s": st.interval_s})]
    roles += [("consumer", common)] * case.consumers
    try:
        results = crew.run(case_id, roles, st.warmup, st.window(case.group))
    finally:
        remove_leftovers_of(name)
    prod, cons = results[0], results[1:]
    if case.group == "rate":
        out = summarize_handoff(prod, cons)
    else:
        out = _latency(prod, cons)
    out["cons_alloc_peak_bytes"] = max(c["cons_alloc_peak_bytes"] for c in cons)
    return out


def _latency(prod: dict[str, Any], cons: list[dict[str, Any]]) -> dict[str, Any]:
    read = [x for c in cons for x in c["read_ns"]]
    tensor = [x for c in cons for x in c["tensor_ns"]]
    out = latency_summary(read)
    t = latency_summary(tensor)
    out.update({f"tensor_{k}": t[k] for k in ("p50_us", "p99_us", "p999_us")})
    out["wrong_markers"] = sum(c["wrong"] for c in cons)
    out["producer_cpu_us_per_frame"] = prod["cpu_s"] * 1e6 / max(prod["cpu_frames"], 1)
    frames = max(sum(c["cpu_frames"] for c in cons), 1)
    out["consumer_cpu_us_per_frame"] = sum(c["cpu_s"] for c in cons) * 1e6 / frames
    return out


def remove_leftovers_of(name: str) -> None:
    for entry in leftovers():
        if name in entry:
            try:
                os.unlink(os.path.join("/dev/shm", entry))
            except OSError:
                pass


# ---- report ---------------------------------------------------------------------------------


def _ok(r: dict[str, Any]) -> bool:
    return "error" not in r


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


RATIO_METRICS = (
    ("latency", "p50_us", "lower"),
    ("latency", "p99_us", "lower"),
    ("latency", "tensor_p50_us", "lower"),
    ("handoff", "total_fps", "higher"),
    ("handoff", "min_fps", "higher"),
)


def _by_round(records: list[dict[str, Any]], want: dict[str, Any], field: str) -> dict[int, float]:
    """``field`` of the records matching ``want``, by round."""
    return {
        r["round"]: float(r[field])
        for r in records
        if _ok(r) and all(r[k] == v for k, v in want.items())
    }


def ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """bips / baseline per metric, each round against the same round, median over rounds."""
    out = []
    keys = {(r["size"], r["consumers"]) for r in records}
    for size, consumers in sorted(keys, key=lambda k: (SIZE_ORDER.index(k[0]), k[1])):
        for base in BASELINES:
            for group, field, better in RATIO_METRICS:
                want = {"group": group, "size": size, "consumers": consumers}
                mine = _by_round(records, {**want, "impl": "bips"}, field)
                theirs = _by_round(records, {**want, "impl": base}, field)
                vals = [mine[k] / theirs[k] for k in mine if theirs.get(k)]
                if vals:
                    out.append({
                        "size": size, "consumers": consumers, "baseline": base,
                        "metric": f"{group} {field}", "ratio": statistics.median(vals),
                        "better": better, "rounds": len(vals),
                    })  # fmt: skip
    return out


def _copies(r: dict[str, Any]) -> str:
    return f"{r['host_copies_per_frame']} / {r['h2d_bytes_per_frame']:,}"


LATENCY_HEADS = ["size", "cons", "impl", "read p50", "p99", "p99.9", "tensor p50", "p99", "n",
                 "wrong", "host copies / H2D bytes per frame"]  # fmt: skip
RATE_HEADS = ["size", "cons", "impl", "total fps", "min fps", "prod cpu us/f", "cons cpu us/f",
              "out-of-seq", "host copies / H2D bytes per frame"]  # fmt: skip


def _latency_row(r: dict[str, Any]) -> list[str]:
    return [
        _f(r["p50_us"]), _f(r["p99_us"]), _f(r["p999_us"]), _f(r["tensor_p50_us"]),
        _f(r["tensor_p99_us"]), str(r["n"]), str(r["wrong_markers"]), _copies(r),
    ]  # fmt: skip


def _rate_row(r: dict[str, Any]) -> list[str]:
    return [
        _f(r["total_fps"], 0), _f(r["min_fps"], 0), _f(r["producer_cpu_us_per_frame"]),
        _f(r["consumer_cpu_us_per_frame"]), str(r["out_of_sequence"]), _copies(r),
    ]  # fmt: skip


def _table(records: list[dict[str, Any]], heads: list[str], row: Any) -> str:
    rows = []
    for r in records:
        head = [r["size"], str(r["consumers"]), IMPL_NAMES[r["impl"]]]
        if _ok(r):
            rows.append(head + row(r))
        else:
            rows.append(head + ["FAILED"] + ["-"] * (len(heads) - 4))
    return report.table(heads, rows, left=3)


def render(
    machine: dict[str, Any],
    config: dict[str, Any],
    merged: list[dict[str, Any]],
    rats: list[dict[str, Any]],
) -> str:
    lines = ["# bips GPU benchmark", ""]
    lines.append("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    lines.append("config: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    if machine.get("dry_run"):
        lines.append("DRY RUN: host memory and CPU tensors; these numbers say nothing about GPUs")
    lat = [r for r in merged if r["group"] == "latency"]
    if lat:
        lines += ["", "## hand-off latency, us", ""]
        lines.append("read: publish -> the consumer read the frame's marker back to the host; "
                     "tensor: -> it held a usable CUDA tensor")  # fmt: skip
        lines += ["", _table(lat, LATENCY_HEADS, _latency_row)]
    rate = [r for r in merged if r["group"] == "handoff"]
    if rate:
        lines += ["", "## hand-off rate, frames/s (min: the slowest consumer)", ""]
        lines.append(_table(rate, RATE_HEADS, _rate_row))
    if rats:
        lines += ["", "## bips / baseline (latency: below 1 is better for bips; rate: above 1)", ""]
        rows = [
            [r["size"], str(r["consumers"]), IMPL_NAMES[r["baseline"]], r["metric"],
             f"{r['ratio']:.2f}x"]
            for r in rats
        ]  # fmt: skip
        lines.append(report.table(["size", "cons", "vs", "metric", "bips/baseline"], rows, left=4))
    failed = [r for r in merged if not _ok(r)]
    if failed:
        lines += ["", "## failed cases", ""]
        for r in failed:
            last = r["error"].strip().splitlines()
            where = f"{r['group']} {r['impl']} 1->{r['consumers']} {r['size']}"
            lines.append(f"- {where}: {last[-1] if last else '?'}")
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------


def _csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {','.join(choices)}")
        return items

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="short windows, one round (~2 min)")
    p.add_argument("--json", metavar="PATH", help="also write every result to PATH")
    p.add_argument("--only", type=_csv(GROUPS), default=list(GROUPS), help="latency,rate")
    p.add_argument("--sizes", type=_csv(tuple(GPU_SIZES)), default=list(GPU_SIZES),
                   help=f"any of {','.join(GPU_SIZES)}")  # fmt: skip
    p.add_argument("--impls", type=_csv(IMPLS), default=list(IMPLS), help=",".join(IMPLS))
    p.add_argument("--consumers", type=lambda t: [int(x) for x in t.split(",")], default=[1, 4],
                   help="consumer counts, each 1-4 (default 1,4)")  # fmt: skip
    p.add_argument("--rounds", type=int, help="times each case runs (default: 1 quick, 3 full)")
    p.add_argument("--seconds", type=float, help="window length of every case")
    p.add_argument("--interval-us", type=float, help="latency: pause between frames (200)")
    p.add_argument("--max-seconds", type=float,
                   help="time budget: cases that would start later are reported as not run "
                   "(default 150 quick, 1500 full)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="host memory and CPU tensors: checks the script without a GPU")  # fmt: skip
    args = p.parse_args(argv)
    if not args.consumers or any(not 1 <= c <= 4 for c in args.consumers):
        p.error("--consumers: counts from 1 to 4")
    return args


def preflight(args: argparse.Namespace) -> dict[str, str]:
    """Implementations that cannot run here, with the reason (their cases fail at once)."""
    why: dict[str, str] = {}
    if importlib.util.find_spec("cupy") is None:
        why["cupy"] = "CuPy is not installed"
    if not args.dry_run:
        import bips

        available = getattr(bips, "cuda_available", None)
        if available is None:
            why["bips"] = "this bips has no GPU pools (no bips.cuda_available)"
        elif not available():
            why["bips"] = "bips.cuda_available() is False"
    return why


def _nvidia_smi() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    st = Settings(args.quick, args)
    t_start = time.monotonic()
    machine = machine_info()
    machine["nvidia_smi"] = _nvidia_smi()
    machine["dry_run"] = args.dry_run
    cannot = preflight(args)
    for impl, reason in cannot.items():
        if impl in args.impls:
            print(f"{impl}: {reason}; its cases are reported as failed", file=sys.stderr)
    cases = plan(args, st)
    crew = Crew(max(args.consumers), args.dry_run)
    records: list[dict[str, Any]] = []
    interrupted = False
    crew_error: str | None = None
    try:
        for k, case in enumerate(cases, 1):
            rec = case.meta()
            print(f"[{k:2}/{len(cases)}] {case.label} ...", end="", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                if case.impl in cannot:
                    raise CaseError(cannot[case.impl])
                left = st.budget_s - (t0 - t_start)
                if left < st.warmup + st.window(case.group) + 2.0:
                    raise CaseError(f"not run: the time budget ({st.budget_s:.0f} s) is spent")
                if not crew.alive:
                    crew.shutdown()
                    if crew_error is not None:  # the crew failed to start twice: do not retry
                        raise CaseError(crew_error)
                    try:
                        machine.update(crew.start())
                    except CaseError as e:
                        crew.shutdown()
                        crew_error = f"the worker processes did not start: {e}"
                        raise CaseError(crew_error) from None
                rec.update(run_case(crew, case, k, st, args.dry_run))
                print(f" {time.monotonic() - t0:.1f} s", file=sys.stderr)
            except CaseError as e:
                rec["error"] = str(e)
                last = str(e).strip().splitlines()
                print(f" FAILED: {last[-1] if last else '?'}", file=sys.stderr)
            records.append(rec)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: reporting what was measured so far", file=sys.stderr)
    finally:
        crew.shutdown()
        removed = remove_leftovers()
        if removed:
            print(f"removed leftovers: {removed}", file=sys.stderr)
    machine["elapsed_s"] = round(time.monotonic() - t_start, 1)
    merged = merge_rounds(records)
    rats = ratios(records)
    print(render(machine, st.config(), merged, rats))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "config": st.config(), "results": merged,
                       "rounds": records, "ratios": rats, "interrupted": interrupted}, f,
                      indent=2)  # fmt: skip
        print(f"results written to {args.json}")
    if interrupted:
        return 130
    return 1 if any(not _ok(r) for r in records) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
