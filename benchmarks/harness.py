# SPDX-License-Identifier: Apache-2.0
"""Process plumbing shared by every benchmark here. The plumbing itself (worker processes run
in lock step, the window counting loop, names and cleanup, sizes, statistics) lives in the
installed package as ``bips.benchkit``, which ``bips bench`` runs; the baselines and the suite
in this folder reuse it through this module, so both measure the same way. See the docstring
of ``bips.benchkit.runner`` for how one case runs."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from bips import benchkit as _bench
from bips.benchkit import (
    BIG,
    CAPACITY,
    SIZES,
    CaseError,
    CpuMeter,
    Runner,
    Size,
    Timing,
    Worker,
    WorkerControl,
    latency_summary,
    leftovers,
    remove_leftovers,
    run_window,
    unique_name,
)

__all__ = [
    "BIG",
    "CAPACITY",
    "SIZES",
    "CaseError",
    "CpuMeter",
    "Runner",
    "Size",
    "Timing",
    "Worker",
    "WorkerControl",
    "latency_summary",
    "leftovers",
    "machine_info",
    "remove_leftovers",
    "run_window",
    "unique_name",
]


def machine_info() -> dict[str, Any]:
    """bips.benchkit.machine_info() plus the versions of the baselines' libraries."""
    info = _bench.machine_info()
    try:
        import posix_ipc

        info["posix_ipc"] = posix_ipc.VERSION
    except ImportError:
        info["posix_ipc"] = None
    try:
        info["iceoryx2"] = metadata.version("iceoryx2")
    except metadata.PackageNotFoundError:
        info["iceoryx2"] = None
    return info
