# SPDX-License-Identifier: Apache-2.0
"""Turns the records bench.py collected into tables (absolute numbers) and bips/baseline
ratios. Pure formatting: no measuring here."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

from harness import BIG, SIZES

IMPL_NAMES = {
    "bips": "bips",
    "pipe": "shm+pipe",
    "sem": "shm+posix-sem",
    "iox": "iceoryx2",
    "numpy": "numpy",
}
BASELINES = ("pipe", "sem", "iox")
IMPLS = ("bips", *BASELINES)


def _find(records: list[dict[str, Any]], **want: Any) -> dict[str, Any] | None:
    for r in records:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def _v(r: dict[str, Any] | None, key: str) -> float | None:
    return None if r is None else float(r[key])


def _num(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _rx(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def table(headers: list[str], rows: Iterable[list[str]], left: int = 1) -> str:
    """Plain-text table; the first `left` columns are left-aligned, the rest right-aligned."""
    rows = [list(map(str, r)) for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [fmt(headers), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def _ok(r: dict[str, Any] | None) -> dict[str, Any] | None:
    return r if r is not None and "error" not in r else None


# ---- ratios ---------------------------------------------------------------------------------


def _paired(
    raw: list[dict[str, Any]], metric: str, bips: dict[str, Any], base: dict[str, Any]
) -> tuple[float, int] | None:
    """bips / baseline of `metric`, each round against the same round (so that a load that
    came and went during the run weighs on both sides alike), then the median over rounds;
    and how many rounds it had. None if no round measured both."""
    mine = {r.get("round"): r for r in raw if _ok(r) and _match(r, bips)}
    theirs = {r.get("round"): r for r in raw if _ok(r) and _match(r, base)}
    vals = [_ratio(float(mine[k][metric]), float(theirs[k][metric])) for k in mine if k in theirs]
    got = sorted(v for v in vals if v is not None)
    if not got:
        return None
    return statistics.median(got), len(got)


def _match(r: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(r.get(k) == v for k, v in want.items())


# (metric label, group, record filter, field, better)
RATIO_METRICS: list[tuple[str, dict[str, Any], str, str]] = [
    ("latency p50_us", {"group": "latency", "wait": "block"}, "p50_us", "lower"),
    ("latency p99_us", {"group": "latency", "wait": "block"}, "p99_us", "lower"),
    ("latency p999_us", {"group": "latency", "wait": "block"}, "p999_us", "lower"),
    (
        "latency producer_cpu",
        {"group": "latency", "wait": "block"},
        "producer_cpu_us_per_frame",
        "lower",
    ),
    (
        "latency consumer_cpu",
        {"group": "latency", "wait": "block"},
        "consumer_cpu_us_per_frame",
        "lower",
    ),
    ("handoff 1->1 total_fps", {"group": "handoff", "consumers": 1}, "total_fps", "higher"),
    ("handoff 1->4 total_fps", {"group": "handoff", "consumers": 4}, "total_fps", "higher"),
    ("handoff 1->4 min_fps", {"group": "handoff", "consumers": 4}, "min_fps", "higher"),
    (
        "handoff 1->1 producer_cpu",
        {"group": "handoff", "consumers": 1},
        "producer_cpu_us_per_frame",
        "lower",
    ),
    (
        "handoff 1->1 consumer_cpu",
        {"group": "handoff", "consumers": 1},
        "consumer_cpu_us_per_frame",
        "lower",
    ),
    ("fill handoff 1->1 fps", {"group": "fill", "consumers": 1}, "total_fps", "higher"),
]


def ratios(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """bips / baseline for every metric measured on both sides, from the records of every
    round (see _paired). Ratios < 1 favour bips where lower is better (latency, CPU), > 1 where
    higher is better (rates)."""
    out: list[dict[str, Any]] = []
    pins = sorted({r.get("pin", "none") for r in raw}, key=_pin_order)
    for size in SIZES:
        for base in BASELINES:
            for label, want, field, better in RATIO_METRICS:
                if want["group"] == "fill" and size != BIG:
                    continue
                for pin in pins if want["group"] in ("handoff", "fill") else [None]:
                    where = {} if pin is None else {"pin": pin}
                    got = _paired(
                        raw, field, {**want, **where, "size": size, "impl": "bips"},
                        {**want, **where, "size": size, "impl": base},
                    )  # fmt: skip
                    if got is not None:
                        out.append(
                            {
                                "metric": label,
                                "size": size,
                                "baseline": base,
                                "pin": pin,
                                "ratio": got[0],
                                "rounds": got[1],
                                "better": better,
                            }
                        )
    return out


PIN_NAMES = {
    "same": "1 CPU",
    "split": "own CPUs",
    "none": "any CPU",
}


def _pin_order(pin: str) -> int:
    return list(PIN_NAMES).index(pin) if pin in PIN_NAMES else len(PIN_NAMES)


# ---- rendering ------------------------------------------------------------------------------


def render(
    machine: dict[str, Any],
    config: dict[str, Any],
    records: list[dict[str, Any]],
    raw: list[dict[str, Any]] | None = None,
) -> str:
    """The report: `records` has one (median) record per case (merge_rounds), `raw` every
    round (for the paired ratios; default: `records`)."""
    parts = [_header(machine, config)]
    raw = records if raw is None else raw
    rr = ratios(raw)
    merged_sections = (_latency, _handoff, _fill, _cpp, _futex, _cpp_latency)
    for section, recs in [(s, records) for s in merged_sections] + [(_checks, raw), (_errors, raw)]:
        text = section(recs, rr)
        if text:
            parts.append(text)
    return "\n\n".join(parts)


def _header(m: dict[str, Any], c: dict[str, Any]) -> str:
    return "\n".join(
        [
            "bips benchmark",
            f"machine: {m['nproc']} CPUs ({m['affinity']} usable), {m['cpu']}; Linux {m['kernel']}",
            (
                f"software: Python {m['python']}, numpy {m['numpy']}, bips {m['bips']}, "
                f"posix_ipc {m['posix_ipc']}, iceoryx2 {m.get('iceoryx2')}"
            ),
            (
                f"load average: {m['loadavg_start']} at start, {m.get('loadavg_end')} at end; "
                f"{m.get('elapsed_s')} s"
            ),
            (
                f"mode: {c['mode']}; warm-up {c['warmup_s']} s, hand-off window {c['handoff_window_s']} s, "
                f"latency window {c['latency_window_s']} s at one frame per "
                f"{c['latency_interval_us']:.0f} us (+ sleep overshoot); capacity {c['capacity']}, "
                f"policy {c['policy']}; workers via multiprocessing '{c['start_method']}'"
            ),
            (
                f"rounds: {c.get('rounds', 1)}; each round runs every implementation of a case in "
                "turn (order rotated); tables show the median round, ratios the median of "
                "same-round ratios"
            ),
        ]
    )


def _spread(r: dict[str, Any] | None, digits: int = 0) -> str:
    """min-max of the key metric over the rounds, if there were several."""
    if r is None or "spread" not in r or r.get("rounds", 1) < 2:
        return "-"
    lo, hi = r["spread"]
    return f"{lo:,.{digits}f}-{hi:,.{digits}f}"


def _latency(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    rows = []
    for size in SIZES:
        waits = [("bips", "block"), ("bips", "spin")] + [(b, "block") for b in BASELINES]
        for impl, wait in waits:
            r = _ok(_find(records, group="latency", impl=impl, wait=wait, size=size))
            if r:
                rows.append(
                    [
                        size,
                        IMPL_NAMES[impl],
                        "spin 1ms" if wait == "spin" else wait,
                        str(r["n"]),
                        _num(r["p50_us"]),
                        _spread(r, 1),
                        _num(r["p99_us"]),
                        _num(r["p999_us"]),
                        _num(r["wake_p50_us"]),
                        _num(r.get("producer_cpu_us_per_frame")),
                        _num(r.get("consumer_cpu_us_per_frame")),
                    ]
                )
    if not rows:
        return ""
    headers = ["size", "impl", "wait", "n", "p50", "p50 rounds", "p99", "p99.9", "wake p50"]
    headers += ["cpu us/f prod", "cpu us/f cons"]
    text = [
        (
            "1. One-way latency, Python -> Python, 1 consumer, producer paced so each frame wakes "
            "a sleeping consumer (us)"
        ),
        (
            "   p50/p99/p99.9: from the producer's time.monotonic_ns() before publish to one element "
            "read through numpy; wake p50: to the return of receive(); p50 rounds: lowest-highest "
            "p50 of the rounds; cpu us/f: CPU time (user+sys) per frame in the producer (its "
            "sleep between frames included) / in the consumer"
        ),
        table(headers, rows, 3),
    ]
    rr = [r for r in rr if r["metric"].startswith("latency")]
    if rr:
        text.append("   bips (blocking) / baseline, lower is better for bips:")
        text.append(
            _ratio_table(
                rr,
                (
                    "latency p50_us",
                    "latency p99_us",
                    "latency p999_us",
                    "latency producer_cpu",
                    "latency consumer_cpu",
                ),
                ("p50", "p99", "p99.9", "cpu/f prod", "cpu/f cons"),
            )
        )
    return "\n".join(text)


def _ratio_table(
    rr: list[dict[str, Any]], metrics: tuple[str, ...], titles: tuple[str, ...]
) -> str:
    rows = []
    for size in SIZES:
        for base in BASELINES:
            got = {
                r["metric"]: r["ratio"] for r in rr if r["size"] == size and r["baseline"] == base
            }
            if got:
                rows.append([size, f"vs {IMPL_NAMES[base]}"] + [_rx(got.get(m)) for m in metrics])
    return table(["size", "baseline", *titles], rows, 2)


def _handoff(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    rows = []
    pins = sorted(
        {r.get("pin", "none") for r in records if r["group"] == "handoff"}, key=_pin_order
    )
    for pin in pins:
        for size in SIZES:
            for impl in IMPLS:
                want = {"group": "handoff", "impl": impl, "size": size, "pin": pin}
                one = _ok(_find(records, **want, consumers=1))
                four = _ok(_find(records, **want, consumers=4))
                if one or four:
                    rows.append([size, IMPL_NAMES[impl], PIN_NAMES.get(pin, pin)])
                    rows[-1] += _handoff_cells(one, four)
    if not rows:
        return ""
    text = [
        (
            "2. Hand-off rate, Python -> Python, capacity 8, policy block (frames/s; consumer: "
            "receive, numpy view, read one element, release)"
        ),
        (
            "   cpus: 1 CPU = every process pinned to one CPU (they take turns), own CPUs = the "
            "producer on one, the consumers on the other(s) (they run side by side); "
            "1->1 rounds: lowest-highest rate of the rounds; cpu us/f: CPU time (user+sys) per "
            "frame in the producer / in a consumer, 1->1; sleeps/f: times per frame the process "
            "blocked, 1->1"
        ),
        table(["size", "impl", "cpus", *HANDOFF_COLUMNS], rows, 3),
    ]
    for pin in pins:
        got = [r for r in rr if r["metric"].startswith("handoff") and r["pin"] == pin]
        if not got:
            continue
        text.append(
            f"   bips / baseline, {PIN_NAMES.get(pin, pin)}; rates: higher is better for bips, "
            "cpu/f: lower is better for bips:"
        )
        text.append(
            _ratio_table(
                got,
                (
                    "handoff 1->1 total_fps",
                    "handoff 1->4 total_fps",
                    "handoff 1->4 min_fps",
                    "handoff 1->1 producer_cpu",
                    "handoff 1->1 consumer_cpu",
                ),
                ("1->1", "1->4 total", "1->4 min/cons", "cpu/f prod", "cpu/f cons"),
            )
        )
    return "\n".join(text)


HANDOFF_COLUMNS = [
    "1->1",
    "1->1 rounds",
    "1->4 per cons",
    "1->4 total",
    "cpu us/f prod",
    "cpu us/f cons",
    "sleeps/f prod",
    "sleeps/f cons",
    "out-of-seq",
]


def _handoff_cells(one: dict[str, Any] | None, four: dict[str, Any] | None) -> list[str]:
    return [
        _rate(_v(one, "total_fps")),
        _spread(one),
        _rate(_v(four, "mean_fps")),
        _rate(_v(four, "total_fps")),
        _num(_v(one, "producer_cpu_us_per_frame"), 2),
        _num(_v(one, "consumer_cpu_us_per_frame"), 2),
        _num(_v(one, "producer_sleeps_per_frame"), 2),
        _num(_v(one, "consumer_sleeps_per_frame"), 2),
        str((one["out_of_sequence"] if one else 0) + (four["out_of_sequence"] if four else 0)),
    ]


def _fill(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    ref = _ok(_find(records, group="fill", impl="numpy"))
    rows = []
    if ref:
        rows.append(["numpy fill of 8 shared-memory slots, no IPC", _rate(ref["fps"]), "1.00x"])
    for impl in IMPLS:
        r = _ok(_find(records, group="fill", impl=impl))
        if r:
            rows.append(
                [
                    f"{IMPL_NAMES[impl]}: fill every byte, hand off 1->1",
                    _rate(r["total_fps"]),
                    _rx(_ratio(r["total_fps"], _v(ref, "fps"))),
                ]
            )
    cpp = _ok(_find(records, group="cpp", size=BIG, consumers=1, fill=True))
    if cpp:
        rows.append(["bips C++: memset every byte, hand off 1->1", _rate(cpp["total_fps"]), ""])
    if not rows:
        return ""
    return "\n".join(
        [
            f"3. Producer fills every pixel, {BIG} uint8 (frames/s; ratio to the plain numpy fill)",
            table(["what", "frames/s", "vs numpy"], rows, 1),
        ]
    )


def _cpp(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    rows = []
    for size, spin in [(size, spin) for size in SIZES for spin in (0, 50)]:
        one = _ok(_find(records, group="cpp", size=size, consumers=1, fill=False, spin_us=spin))
        four = _ok(_find(records, group="cpp", size=size, consumers=4, fill=False, spin_us=spin))
        if not (one or four):
            continue
        # The C++ processes run wherever the scheduler puts them: compare with the Python row of
        # the same placement, else with the one on separate CPUs.
        py = [r for r in records if r["group"] == "handoff" and r.get("impl") == "bips"]
        py = [r for r in py if r.get("pin") == "none"] or [r for r in py if r.get("pin") == "split"]
        py1 = _ok(_find(py, size=size, consumers=1))
        py4 = _ok(_find(py, size=size, consumers=4))
        rows.append(
            [size, f"spin {spin} us" if spin else "block"]
            + _handoff_cells(one, four)
            + [
                _rx(_ratio(_v(one, "total_fps"), _v(py1, "total_fps"))),
                _rx(_ratio(_v(four, "total_fps"), _v(py4, "total_fps"))),
            ]
        )
    if not rows:
        return ""
    return "\n".join(
        [
            (
                "4. Hand-off rate, bips C++ -> C++ (frames/s; consumer reads one byte; "
                "columns as in 2)"
            ),
            table(["size", "wait", *HANDOFF_COLUMNS, "1->1 vs Py", "1->4 vs Py"], rows, 2),
        ]
    )


def _cpp_latency(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    rows = []
    for size in SIZES:
        for wait in ("block", "spin"):
            r = _ok(_find(records, group="cpplat", wait=wait, size=size))
            if r:
                rows.append(
                    [
                        size,
                        wait if wait == "block" else f"spin {r.get('spin_us', 0)} us",
                        str(r["n"]),
                        _num(r["p50_us"]),
                        _spread(r, 1),
                        _num(r["p99_us"]),
                        _num(r["p999_us"]),
                        _num(r.get("producer_cpu_us_per_frame")),
                        _num(r.get("consumer_cpu_us_per_frame")),
                    ]
                )
    if not rows:
        return ""
    py = {
        (r["size"], r["wait"]): r
        for r in records
        if r.get("group") == "latency" and r.get("impl") == "bips" and "error" not in r
    }
    for row in rows:
        ref = py.get((row[0], "block" if row[1] == "block" else "spin"))
        row.append(_num(ref["p50_us"]) if ref else "-")
    headers = ["size", "wait", "n", "p50", "p50 rounds", "p99", "p99.9", "cpu us/f prod"]
    headers += ["cpu us/f cons", "Py p50"]
    return "\n".join(
        [
            (
                "6. One-way latency, bips C++ -> C++, 1 consumer, producer paced (us; stamp in "
                "publish() to the consumer's read of one byte)"
            ),
            "   Py p50: the same case between Python processes (table 1)",
            table(headers, rows, 2),
        ]
    )


def _futex(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    rows = []
    tools = set()
    for lang in ("python", "cpp"):
        r = _ok(_find(records, group="futex", lang=lang))
        if not r:
            continue
        tools.add(r["tool"])
        c_waits, p_waits = r["consumer_wait_per_frame"], r["producer_wait_per_frame"]
        rows.append([
            "Python" if lang == "python" else "C++",
            _rate(r["fps"]),
            _num(r["producer_wake_per_frame"], 3),
            _num(r["producer_wait_per_frame"], 3),
            _num(r["consumer_wake_per_frame"], 3),
            _num(r["consumer_wait_per_frame"], 3),
            _num(r["producer_wake_per_frame"] / c_waits if c_waits else None, 1),
            _num(r["consumer_wake_per_frame"] / p_waits if p_waits else None, 1),
        ])  # fmt: skip
    if not rows:
        return ""
    how = "perf tracepoint" if tools == {"perf"} else "strace -f (slows syscalls: over-counts)"
    return "\n".join([
        f"5. Shared-futex syscalls per frame, bips 1->1 64B hand-off, counted with {how}",
        "   ideal: a wake only for a sleeper, i.e. producer wakes ~= consumer waits and vice versa",
        table(["lang", "frames/s", "prod WAKE/f", "prod WAIT/f", "cons WAKE/f", "cons WAIT/f",
               "prod WAKE per cons WAIT", "cons WAKE per prod WAIT"], rows, 1),
    ])  # fmt: skip


def _checks(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    """Correctness flags: a lossless in-order queue never delivers out of sequence."""
    lines = []
    for impl in IMPLS:
        for lang in ("python", "cpp"):
            bad = [
                r for r in records
                if r.get("impl") == impl and r.get("lang") == lang and r.get("out_of_sequence")
            ]  # fmt: skip
            if bad:
                n = sum(r["out_of_sequence"] for r in bad)
                cases = ", ".join(f"{r['size']} 1->{r['consumers']}" for r in bad)
                lines.append(
                    f"  {IMPL_NAMES[impl]} ({'C++' if lang == 'cpp' else 'Python'}): {n} frames "
                    f"whose seq was not the previous one + 1 (lossless, in order: expected 0) "
                    f"in {cases}"
                )
    if not lines:
        return ""
    return "\n".join(["CHECKS", *lines])


def _errors(records: list[dict[str, Any]], rr: list[dict[str, Any]]) -> str:
    bad = [r for r in records if "error" in r]
    if not bad:
        return ""
    lines = ["FAILED cases:"]
    for r in bad:
        what = " ".join(
            str(r.get(k))
            for k in ("group", "impl", "wait", "size", "consumers")
            if r.get(k) is not None
        )
        lines.append(f"  {what}: {r['error'].splitlines()[0] if r['error'] else ''}")
        for line in r["error"].splitlines()[1:][-6:]:
            lines.append(f"      {line}")
    return "\n".join(lines)
