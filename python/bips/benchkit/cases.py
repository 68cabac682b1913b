# SPDX-License-Identifier: Apache-2.0
"""Cases: one measurement each (the workers of one implementation, a window, a summary), the
bips-only plan ``bips bench`` runs, and the loop that runs a list of them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bips.benchkit.measure import summarize_handoff, summarize_latency
from bips.benchkit.params import SIZES, SPIN_S, Settings
from bips.benchkit.runner import CaseError, Runner, Worker, unique_name
from bips.benchkit.workers import handoff_workers, latency_workers


@dataclass
class Case:
    group: str
    label: str
    run: Callable[[], dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)


# Makes the workers of one case for a pool (or ring) name: (workers, producer first; a cleanup
# to call after the case, or None).
Setup = Callable[[str], "tuple[list[Worker], Callable[[], None] | None]"]


def latency_case(
    runner: Runner,
    st: Settings,
    size_label: str,
    wait: str,
    impl: str = "bips",
    setup: Setup | None = None,
) -> Case:
    """One-way latency, Python -> Python, 1 consumer; `wait` is "block" or "spin" (busy-poll
    SPIN_S first). `setup` makes the workers of another implementation (default: bips)."""
    size = SIZES[size_label]

    def bips_setup(name: str) -> tuple[list[Worker], Callable[[], None] | None]:
        spin = SPIN_S if wait == "spin" else 0.0
        return latency_workers(name, size, st.interval_s, spin), None

    make = setup or bips_setup

    def run() -> dict[str, Any]:
        workers, cleanup = make(unique_name(f"lat-{impl}"))
        producer, consumer = runner.run(workers, st.latency(), cleanup)
        return summarize_latency(producer, consumer)

    return Case(
        "latency",
        f"latency {impl} {wait} {size_label}",
        run,
        {"impl": impl, "wait": wait, "size": size_label, "consumers": 1},
    )


def handoff_case(
    runner: Runner,
    st: Settings,
    size_label: str,
    consumers: int,
    fill: bool = False,
    impl: str = "bips",
    setup: Setup | None = None,
    pin: str = "none",
) -> Case:
    """Hand-off rate, a Python producer -> `consumers` Python consumers, the producer writing
    every byte if `fill`. `setup` makes the workers of another implementation (default: bips);
    `pin` places them (runner.PINS)."""
    size = SIZES[size_label]

    def bips_setup(name: str) -> tuple[list[Worker], Callable[[], None] | None]:
        return handoff_workers(name, size, consumers, fill), None

    make = setup or bips_setup

    def run() -> dict[str, Any]:
        workers, cleanup = make(unique_name(f"ho-{impl}"))
        results = runner.run(workers, st.handoff(), cleanup, pin)
        return summarize_handoff(results[0], results[1:])

    group = "fill" if fill else "handoff"
    meta = {"impl": impl, "size": size_label, "consumers": consumers, "fill": fill, "pin": pin}
    where = "" if pin == "none" else f" pin {pin}"
    return Case(
        group,
        f"{group} {impl} 1->{consumers} {size_label}{where}",
        run,
        {**meta, "lang": "python"},
    )


def plan(
    runner: Runner,
    st: Settings,
    sizes: list[str],
    consumers: list[int],
    latency_sizes: list[str],
    spin: bool = False,
) -> list[Case]:
    """The bips-only cases ``bips bench`` runs: a hand-off case per size and consumer count,
    then a latency case per latency size (blocking, and busy-poll if `spin`)."""
    cases = [handoff_case(runner, st, s, n) for s in sizes for n in consumers]
    for s in latency_sizes:
        cases.append(latency_case(runner, st, s, "block"))
        if spin:
            cases.append(latency_case(runner, st, s, "spin"))
    return cases


def run_cases(
    cases: list[Case],
    records: list[dict[str, Any]],
    on_start: Callable[[int, Case], None] | None = None,
    on_done: Callable[[int, Case, dict[str, Any], float], None] | None = None,
) -> None:
    """Runs `cases` in order and appends one record per case to `records`
    (``{"group": ..., **case.meta, **results}``); a failed case is recorded with an ``error``
    and the rest go on. Calls ``on_start(k, case)`` before and ``on_done(k, case, record,
    seconds)`` after each case (k counts from 1). KeyboardInterrupt propagates with `records`
    holding what was measured so far; the caller then calls ``Runner.shutdown()``."""
    for k, case in enumerate(cases, 1):
        if on_start is not None:
            on_start(k, case)
        t0 = time.monotonic()
        rec: dict[str, Any] = {"group": case.group, **case.meta}
        try:
            rec.update(case.run())
        except CaseError as e:
            rec["error"] = str(e)
        records.append(rec)
        if on_done is not None:
            on_done(k, case, rec, time.monotonic() - t0)
