# SPDX-License-Identifier: Apache-2.0
"""Builds and runs the C++ benchmark (benchmarks/cpp/bench_handoff.cpp): hand-off rate, and
one-way latency with a paced producer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness import CaseError, Size, Timing

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE / "cpp"
BUILD_DIR = SOURCE_DIR / "build"
EXE = BUILD_DIR / "bench_handoff"


_build_error: str | None = None
_built = False


def build() -> Path:
    """Configures (once) and builds bench_handoff in Release mode; returns its path. Raises
    CaseError with the tail of the build log on failure. Builds once per run."""
    global _build_error, _built
    if _build_error is not None:
        raise CaseError(_build_error)
    if not _built:
        try:
            _build()
        except CaseError as e:
            _build_error = str(e)
            raise
        _built = True
    return EXE


def _build() -> None:
    if shutil.which("cmake") is None:
        raise CaseError("cmake not found")
    steps = []
    if not (BUILD_DIR / "CMakeCache.txt").exists():
        steps.append(
            ["cmake", "-S", str(SOURCE_DIR), "-B", str(BUILD_DIR), "-DCMAKE_BUILD_TYPE=Release"]
        )
    steps.append(
        [
            "cmake",
            "--build",
            str(BUILD_DIR),
            "--target",
            "bench_handoff",
            "-j",
            str(os.cpu_count() or 2),
        ]
    )
    for cmd in steps:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            tail = "\n".join((p.stdout + p.stderr).splitlines()[-25:])
            raise CaseError(f"{' '.join(cmd)} failed:\n{tail}")


def command(
    name: str,
    size: Size,
    consumers: int,
    timing: Timing,
    fill: bool,
    spin_us: int = 0,
    interval_us: int = 0,
) -> list[str]:
    cmd = [str(EXE), "--name", name, "--consumers", str(consumers),
           "--warmup", str(timing.warmup), "--seconds", str(timing.duration),
           "--spin-us", str(spin_us), "--interval-us", str(interval_us)]  # fmt: skip
    if size.shape:
        cmd += ["--shape", ",".join(str(d) for d in size.shape)]
    else:
        cmd += ["--bytes", str(size.nbytes)]
    if fill:
        cmd.append("--fill")
    return cmd


def time_limit(timing: Timing) -> float:
    return timing.warmup + timing.duration + timing.setup_timeout + timing.drain_timeout


def parse(stdout: str, returncode: int = 0, stderr: str = "") -> dict[str, Any]:
    """bench_handoff's JSON (producer, consumer_results); CaseError if anything failed."""
    try:
        out: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise CaseError(
            f"bench_handoff exited {returncode}: {stdout[-500:]}{stderr[-1500:]}"
        ) from None
    errors = [r["error"] for r in [out["producer"], *out["consumer_results"]] if not r["ok"]]
    if returncode != 0 or errors:
        raise CaseError(f"bench_handoff exited {returncode}: {errors} {stderr[-1500:]}")
    return out


def run_handoff(
    name: str,
    size: Size,
    consumers: int,
    timing: Timing,
    fill: bool = False,
    spin_us: int = 0,
    interval_us: int = 0,
) -> dict[str, Any]:
    """Runs one C++ case; returns bench_handoff's JSON (producer, consumer_results). With
    `interval_us` the producer is paced and the consumers report latency percentiles."""
    cmd = command(name, size, consumers, timing, fill, spin_us, interval_us)
    limit = time_limit(timing)
    try:
        # run() kills the benchmark on any exception (Ctrl-C included); its consumers die with it
        # (PR_SET_PDEATHSIG).
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise CaseError(f"bench_handoff did not finish within {limit:.0f} s") from None
    return parse(p.stdout, p.returncode, p.stderr)
