# SPDX-License-Identifier: Apache-2.0
"""bips benchmark suite: cross-process latency and hand-off rate, bips against three baselines.

    python benchmarks/bench.py                  # full run (~1.5-2 min)
    python benchmarks/bench.py --quick          # ~30 s, noisier
    python benchmarks/bench.py --only latency,cpp --sizes 64B --json out.json

See benchmarks/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# numpy's BLAS thread pool has no work here, but its threads could still compete for the two
# cores; the workers inherit this.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import baselines
import cpp_bench
import futex
import iceoryx2_baseline
import report
from bips import benchkit as bipsbench
from bips.benchkit import (
    BIG,
    FULL,
    PINS,
    QUICK,
    SIZES,
    SPIN_S,
    Case,
    CaseError,
    Runner,
    Settings,
    Timing,
    Worker,
    leftovers,
    merge_rounds,
    summarize_handoff,
    unique_name,
)
from harness import machine_info

GROUPS = ("latency", "handoff", "fill", "cpp", "futex")
IMPLS = ("bips", "pipe", "sem", "iox")


# ---- cases ----------------------------------------------------------------------------------


def latency_case(runner: Runner, st: Settings, impl: str, size_label: str, wait: str) -> Case:
    if impl == "bips":
        return bipsbench.latency_case(runner, st, size_label, wait)
    size = SIZES[size_label]

    def setup(name: str) -> tuple[list[Worker], Callable[[], None]]:
        cls, prod, cons, _, _ = baselines.IMPLS[impl]
        res = cls(runner.ctx, name, size, 1)
        kwargs = {"size": size, "interval_s": st.interval_s, **res.producer_kwargs()}
        workers = [Worker(prod, kwargs, "producer")]
        workers.append(Worker(cons, {"size": size, **res.consumer_kwargs(0)}, "consumer"))
        return workers, res.cleanup

    return bipsbench.latency_case(runner, st, size_label, wait, impl, setup)


def handoff_case(
    runner: Runner,
    st: Settings,
    impl: str,
    size_label: str,
    consumers: int,
    fill: bool,
    pin: str = "none",
) -> Case:
    if impl == "bips":
        return bipsbench.handoff_case(runner, st, size_label, consumers, fill, pin=pin)
    size = SIZES[size_label]

    def setup(name: str) -> tuple[list[Worker], Callable[[], None]]:
        cls, _, _, prod, cons = baselines.IMPLS[impl]
        res = cls(runner.ctx, name, size, consumers)
        workers = [Worker(prod, {"size": size, "fill": fill, **res.producer_kwargs()}, "producer")]
        workers += [
            Worker(cons, {"size": size, **res.consumer_kwargs(c)}, "consumer")
            for c in range(consumers)
        ]
        return workers, res.cleanup

    return bipsbench.handoff_case(runner, st, size_label, consumers, fill, impl, setup, pin)


def numpy_fill_case(runner: Runner, st: Settings) -> Case:
    size = SIZES[BIG]

    def run() -> dict[str, Any]:
        (r,) = runner.run(
            [Worker(baselines.numpy_fill, {"size": size}, "numpy-fill")], st.handoff()
        )
        return {
            "fps": r["fps"],
            "total_fps": r["fps"],
            "frames": r["frames"],
            "seconds": r["seconds"],
        }

    return Case(
        "fill",
        f"fill numpy-reference {BIG}",
        run,
        {"impl": "numpy", "size": BIG, "consumers": 0, "fill": True},
    )


# The C++ consumer also runs with a bounded busy-poll (ConsumerOptions::spin): at ~0.3 us of
# work per frame a depth-8 queue drains faster than a futex wake-up, so without it both sides
# take turns sleeping and the wake-up latency, not bips, sets the rate.
CPP_SPIN_US = 50


def cpp_case(st: Settings, size_label: str, consumers: int, fill: bool, spin_us: int = 0) -> Case:
    size = SIZES[size_label]

    def run() -> dict[str, Any]:
        cpp_bench.build()
        out = cpp_bench.run_handoff(
            unique_name("cpp"), size, consumers, st.handoff(), fill, spin_us
        )
        return summarize_handoff(out["producer"], out["consumer_results"])

    spin = f" spin {spin_us}us" if spin_us else ""
    return Case(
        "cpp",
        f"cpp bips 1->{consumers} {size_label}{' fill' if fill else ''}{spin}",
        run,
        {
            "impl": "bips",
            "size": size_label,
            "consumers": consumers,
            "fill": fill,
            "lang": "cpp",
            "spin_us": spin_us,
        },
    )


def cpp_latency_case(st: Settings, size_label: str, wait: str) -> Case:
    """One-way latency C++ -> C++, 1 consumer, producer paced like the Python latency cases;
    `wait` "spin" gives the consumer the busy-poll budget of the Python spin case."""
    size = SIZES[size_label]
    spin_us = int(SPIN_S * 1e6) if wait == "spin" else 0

    def run() -> dict[str, Any]:
        cpp_bench.build()
        out = cpp_bench.run_handoff(
            unique_name("cpplat"), size, 1, st.latency(), spin_us=spin_us,
            interval_us=max(int(st.interval_s * 1e6), 1),
        )  # fmt: skip
        prod, (cons,) = out["producer"], out["consumer_results"]
        rec = {k: cons[k] for k in ("p50_us", "p99_us", "p999_us", "mean_us", "max_us")}
        rec["n"] = cons["lat_n"]
        for side, r in (("producer", prod), ("consumer", cons)):
            frames = max(r["frames"], 1)
            rec[f"{side}_cpu_us_per_frame"] = r["cpu_s"] * 1e6 / frames
            rec[f"{side}_sleeps_per_frame"] = r["vcsw"] / frames
        return rec

    return Case(
        "cpplat",
        f"cpp latency bips {wait} {size_label}",
        run,
        {"impl": "bips", "size": size_label, "consumers": 1, "lang": "cpp", "wait": wait,
         "spin_us": spin_us},
    )  # fmt: skip


def futex_case(st: Settings, lang: str) -> Case:
    timing = Timing(warmup=0.1, duration=min(st.duration, 0.5))

    def run_cpp() -> dict[str, Any]:
        cpp_bench.build()
        cmd = cpp_bench.command(unique_name("futex"), SIZES["64B"], 1, timing, False)
        stdout, calls = futex.run_counted(cmd, cpp_bench.time_limit(timing))
        out = cpp_bench.parse(stdout)
        return futex.per_frame(calls, summarize_handoff(out["producer"], out["consumer_results"]))

    def run_python() -> dict[str, Any]:
        # This very script, for the one case, under the tracer.
        with tempfile.TemporaryDirectory(prefix="bips-bench-") as tmp:
            out = os.path.join(tmp, "futex.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--only", "handoff",
                   "--impls", "bips", "--sizes", "64B", "--consumers", "1",
                   "--seconds", str(timing.duration), "--rounds", "1", "--pin", "none",
                   "--json", out]  # fmt: skip
            _, calls = futex.run_counted(cmd, 60.0)
            with open(out) as f:
                (record,) = json.load(f)["results"]
        if "error" in record:
            raise CaseError(record["error"])
        return futex.per_frame(calls, record)

    return Case(
        "futex",
        f"futex {lang} bips 1->1 64B",
        run_cpp if lang == "cpp" else run_python,
        {"impl": "bips", "size": "64B", "consumers": 1, "lang": lang},
    )


def _rotated(items: list[str], k: int) -> list[str]:
    k %= max(len(items), 1)
    return items[k:] + items[:k]


def _in_round(case: Case, r: int, rounds: int) -> Case:
    case.meta["round"] = r
    if rounds > 1:
        case.label += f" (round {r + 1}/{rounds})"
    return case


def plan(args: argparse.Namespace, runner: Runner, st: Settings) -> list[Case]:
    """Every case, in rounds: a round runs each implementation of one size (and consumer
    count) once, in an order rotated from round to round, so that a slow spell of the machine
    falls on every implementation alike and none always runs first or last."""
    only = set(args.only)
    sizes = [s for s in SIZES if s in args.sizes]
    impls = [i for i in IMPLS if i in args.impls]
    n = args.rounds
    cases: list[Case] = []
    if "latency" in only:
        for size in sizes:
            for r in range(n):
                for impl in _rotated(impls, r):
                    cases.append(_in_round(latency_case(runner, st, impl, size, "block"), r, n))
                    if impl == "bips":
                        case = latency_case(runner, st, impl, size, "spin")
                        cases.append(_in_round(case, r, n))
    if "handoff" in only:
        for pin in args.pin:
            for size in sizes:
                for consumers in args.consumers:
                    for r in range(n):
                        for impl in _rotated(impls, r):
                            case = handoff_case(runner, st, impl, size, consumers, False, pin)
                            cases.append(_in_round(case, r, n))
    if "fill" in only and BIG in sizes:
        pin = "split" if "split" in args.pin else args.pin[0]
        for r in range(n):
            cases.append(_in_round(numpy_fill_case(runner, st), r, n))
            for impl in _rotated(impls, r):
                case = handoff_case(runner, st, impl, BIG, 1, True, pin)
                cases.append(_in_round(case, r, n))
    if "cpp" in only and "bips" in impls:
        for r in range(n):
            for size in sizes:
                for consumers in args.consumers:
                    cases.append(_in_round(cpp_case(st, size, consumers, False), r, n))
                    case = cpp_case(st, size, consumers, False, CPP_SPIN_US)
                    cases.append(_in_round(case, r, n))
                for wait in ("block", "spin"):
                    cases.append(_in_round(cpp_latency_case(st, size, wait), r, n))
            if BIG in sizes:
                cases.append(_in_round(cpp_case(st, BIG, 1, True), r, n))
    if "futex" in only and "bips" in impls:
        cases.append(futex_case(st, "python"))
        cases.append(futex_case(st, "cpp"))
    return cases


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
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="short windows (~30 s in all)")
    p.add_argument("--json", metavar="PATH", help="also write every result to PATH")
    p.add_argument(
        "--only",
        type=_csv(GROUPS),
        default=list(GROUPS),
        help=f"comma-separated groups to run: {','.join(GROUPS)} (default: all)",
    )
    p.add_argument(
        "--sizes",
        type=_csv(tuple(SIZES)),
        default=list(SIZES),
        help=f"comma-separated frame sizes: {','.join(SIZES)} (default: all)",
    )
    p.add_argument(
        "--impls",
        type=_csv(IMPLS),
        default=list(IMPLS),
        help=f"comma-separated implementations: {','.join(IMPLS)} (default: all)",
    )
    p.add_argument(
        "--consumers",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[1, 4],
        help="consumer counts for the hand-off cases (default 1,4)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        help="times each case runs, alternating implementations; the report shows the median "
        "(default 3)",
    )
    p.add_argument("--seconds", type=float, help="override the hand-off window (s)")
    p.add_argument("--interval-us", type=float, help="latency producer pause (default 300 us)")
    p.add_argument(
        "--pin",
        type=_csv(PINS),
        default=["same", "split"],
        help="CPU placements of the Python hand-off cases, each a row of its own: same (every "
        "process on one CPU), split (the producer on one, the consumers on the others), none "
        "(the scheduler's choice; it varies from run to run) (default: same,split)",
    )
    p.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        default="fork",
        help="multiprocessing start method for the Python workers (default fork)",
    )
    return p.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _print_start(total: int) -> Callable[[int, Case], None]:
    def show(k: int, case: Case) -> None:
        print(f"[{k:2}/{total}] {case.label} ...", end="", file=sys.stderr, flush=True)

    return show


def _print_done(k: int, case: Case, rec: dict[str, Any], seconds: float) -> None:
    if "error" in rec:
        print(f" FAILED: {rec['error'].splitlines()[0]}", file=sys.stderr)
    else:
        print(f" {seconds:.1f} s", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP take the same way out as Ctrl-C: stop the workers, remove what they made.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    st = QUICK if args.quick else FULL
    if args.seconds:
        st = Settings(
            st.warmup, args.seconds, max(args.seconds, st.latency_duration), st.interval_s
        )
    if args.interval_us:
        st = Settings(st.warmup, st.duration, st.latency_duration, args.interval_us * 1e-6)
    if "sem" in args.impls:
        try:
            import posix_ipc  # noqa: F401
        except ImportError:
            print(
                "posix_ipc is not installed (pip install posix_ipc): skipping the 'sem' baseline",
                file=sys.stderr,
            )
            args.impls = [i for i in args.impls if i != "sem"]
    if "iox" in args.impls:
        why = iceoryx2_baseline.available()
        if why:
            print(f"{why}: skipping the 'iox' baseline", file=sys.stderr)
            args.impls = [i for i in args.impls if i != "iox"]

    if args.rounds is None:
        args.rounds = 3
    if args.rounds < 1:
        print("--rounds wants a whole number >= 1", file=sys.stderr)
        return 2
    machine = machine_info()
    config = bipsbench.config(st, "quick" if args.quick else "full", args.start_method)
    config["rounds"] = args.rounds
    config["pins"] = args.pin
    runner = Runner(args.start_method)
    cases = plan(args, runner, st)
    records: list[dict[str, Any]] = []
    interrupted = False
    t_start = time.monotonic()
    try:
        if any(c.group in ("cpp", "futex") for c in cases):
            print(
                "building benchmarks/cpp (CMake, Release) ...", end="", file=sys.stderr, flush=True
            )
            try:
                cpp_bench.build()
                print(" done", file=sys.stderr)
            except CaseError as e:
                print(
                    f" FAILED (the C++ cases will fail): {str(e).splitlines()[0]}", file=sys.stderr
                )
        bipsbench.run_cases(cases, records, _print_start(len(cases)), _print_done)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: reporting what was measured so far", file=sys.stderr)
    finally:
        removed = runner.shutdown()
        if removed:
            print(f"removed leftovers: {removed}", file=sys.stderr)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["elapsed_s"] = round(time.monotonic() - t_start, 1)

    merged = merge_rounds(records)
    print(report.render(machine, config, merged, records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine,
                    "config": config,
                    "results": merged,
                    "rounds": records,
                    "ratios": report.ratios(records),
                    "interrupted": interrupted,
                },
                f,
                indent=2,
            )
        print(f"results written to {args.json}")
    still = leftovers()
    if still:
        print(f"warning: still in /dev/shm: {still}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
