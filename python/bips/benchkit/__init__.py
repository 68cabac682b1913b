# SPDX-License-Identifier: Apache-2.0
"""The measuring kit behind ``bips bench`` and the suite in the source tree
(``benchmarks/bench.py``): a Python producer and N Python consumer processes on one pool, for
the hand-off rate (frames/s, CPU time and sleeps per frame) and the one-way wake-up latency
(publish -> the consumer has read one element, p50/p99), and the plumbing the suite's
baselines reuse so that every implementation is measured the same way.

runner: worker processes in lock step and their /dev/shm names (how one case runs);
measure: the counting loop and the summaries; params: sizes and window lengths; workers: the
bips processes; cases: cases, the bips-only plan and the loop that runs cases; machine: what
the numbers depend on.
"""

from bips.benchkit.cases import Case, Setup, handoff_case, latency_case, plan, run_cases
from bips.benchkit.machine import machine_info
from bips.benchkit.measure import (
    CpuMeter,
    case_key,
    latency_summary,
    merge_rounds,
    run_window,
    rusage_now,
    summarize_handoff,
    summarize_latency,
)
from bips.benchkit.params import (
    BIG,
    CAPACITY,
    FULL,
    QUICK,
    SIZES,
    SPIN_S,
    Settings,
    Size,
    config,
)
from bips.benchkit.runner import (
    PINS,
    CaseError,
    Runner,
    Timing,
    Worker,
    WorkerControl,
    leftovers,
    remove_leftovers,
    unique_name,
)

__all__ = [
    "BIG",
    "CAPACITY",
    "FULL",
    "PINS",
    "QUICK",
    "SIZES",
    "SPIN_S",
    "Case",
    "CaseError",
    "CpuMeter",
    "Runner",
    "Settings",
    "Setup",
    "Size",
    "Timing",
    "Worker",
    "WorkerControl",
    "case_key",
    "config",
    "handoff_case",
    "latency_case",
    "latency_summary",
    "leftovers",
    "machine_info",
    "merge_rounds",
    "plan",
    "remove_leftovers",
    "run_cases",
    "run_window",
    "rusage_now",
    "summarize_handoff",
    "summarize_latency",
    "unique_name",
]
