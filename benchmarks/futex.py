# SPDX-License-Identifier: Apache-2.0
"""Counts the shared-futex syscalls (FUTEX_WAIT / FUTEX_WAKE, the ones bips uses across
processes) each process of a command makes.

With ``perf`` (kernel tracepoint ``syscalls:sys_enter_futex``, filtered in the kernel to the
non-private WAIT and WAKE operations) the cost is well under a microsecond per call, so the
traced run behaves like an untraced one. Without perf, ``strace -f`` is used; it stops the
process at every syscall, which slows waits and wakes down and so changes what it measures.
Process-private futexes (the GIL, mutexes, condition variables) are not counted either way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from typing import Any

from harness import CaseError

WAIT, WAKE = "wait", "wake"
_PERF_OPS = {0: WAIT, 1: WAKE}  # FUTEX_WAIT, FUTEX_WAKE without FUTEX_PRIVATE_FLAG
_STRACE_OPS = {"FUTEX_WAIT": WAIT, "FUTEX_WAKE": WAKE}
_STRACE_LINE = re.compile(r"^(\d+)\s+futex\(0x[0-9a-f]+,\s*(FUTEX_\w+)")
_PERF_LINE = re.compile(r"^\s*(\d+)\s.*\bop:\s*(0x[0-9a-f]+)")

_tool: str | None = None


def tool() -> str:
    """'perf' if its futex tracepoint works here, else 'strace'; CaseError if neither does."""
    global _tool
    if _tool is None:
        _tool = _probe()
    if not _tool:
        raise CaseError("neither perf (with syscall tracepoints) nor strace is available")
    return _tool


def _probe() -> str:
    if shutil.which("perf"):
        with tempfile.TemporaryDirectory(prefix="bips-bench-") as tmp:
            p = subprocess.run(
                ["perf", "record", "-q", "-e", "syscalls:sys_enter_futex", "-c", "1", "-o",
                 os.path.join(tmp, "probe.data"), "--", "true"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if p.returncode == 0:
                return "perf"
    return "strace" if shutil.which("strace") else ""


def run_counted(cmd: list[str], timeout: float) -> tuple[str, Counter[tuple[int, str]]]:
    """Runs `cmd` and returns (its stdout, calls per (pid, 'wait'|'wake'))."""
    how = tool()
    with tempfile.TemporaryDirectory(prefix="bips-bench-") as tmp:
        out = os.path.join(tmp, "futex.out")
        if how == "perf":
            prefix = ["perf", "record", "-q", "-m", "1024", "-e", "syscalls:sys_enter_futex",
                      "--filter", "op == 0 || op == 1", "-c", "1", "-o", out, "--"]  # fmt: skip
        else:
            prefix = ["strace", "-f", "-qq", "-e", "trace=futex", "-o", out]
        try:
            p = subprocess.run(
                prefix + cmd, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise CaseError(f"traced run did not finish within {timeout:.0f} s") from None
        if p.returncode != 0:
            raise CaseError(f"traced run exited {p.returncode}: {p.stderr[-1500:]}")
        calls: Counter[tuple[int, str]] = Counter()
        if how == "perf":
            script = subprocess.run(
                ["perf", "script", "-i", out, "-F", "pid,trace"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            for line in script.stdout.splitlines():
                m = _PERF_LINE.match(line)
                if m and int(m.group(2), 16) in _PERF_OPS:
                    calls[(int(m.group(1)), _PERF_OPS[int(m.group(2), 16)])] += 1
        else:
            with open(out) as f:
                for line in f:
                    m = _STRACE_LINE.match(line)
                    if m and m.group(2) in _STRACE_OPS:
                        calls[(int(m.group(1)), _STRACE_OPS[m.group(2)])] += 1
    return p.stdout, calls


def per_frame(calls: Counter[tuple[int, str]], record: dict[str, Any]) -> dict[str, Any]:
    """Futex calls per frame of the producer and of the (first) consumer of a 1->1 hand-off
    record (see bench.summarize_handoff), over the whole run including warm-up and drain."""
    (p_pid, c_pid), (p_total, c_total) = record["pids"][:2], record["totals"][:2]
    return {
        "tool": tool(),
        "frames": p_total,
        "fps": record["producer_fps"],
        "producer_wake_per_frame": calls[(p_pid, WAKE)] / max(p_total, 1),
        "producer_wait_per_frame": calls[(p_pid, WAIT)] / max(p_total, 1),
        "consumer_wake_per_frame": calls[(c_pid, WAKE)] / max(c_total, 1),
        "consumer_wait_per_frame": calls[(c_pid, WAIT)] / max(c_total, 1),
    }
