# SPDX-License-Identifier: Apache-2.0
"""What the GPU tests share: when to skip, and ``Children``, which starts the processes of
``gpu_children`` and always reaps them.

The tests here need a CUDA GPU, torch built with CUDA and a bips with GPU pools; anywhere else
they are skipped (CI has no GPU). ``tests/gpu/run_on_device.sh`` runs them on a GPU machine.
``BIPS_GPU_DRY_RUN=1`` runs the ones that do not depend on CUDA itself on host pools and CPU
tensors instead: a check of the tests' own choreography (processes, messages, deadlines) on a
machine without a GPU. It proves nothing about GPU pools.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import bips
import pytest
from helpers import PRELUDE, ChildError, read_message, reap

HERE = Path(__file__).resolve().parent
DRY_RUN = os.environ.get("BIPS_GPU_DRY_RUN") == "1"
STARTUP_S = 120.0  # a child's first message: Python, torch and a CUDA context, maybe a cold disk
STEP_S = 60.0  # any later message

_CHILD = f"sys.path.insert(0, {str(HERE)!r})\nimport gpu_children\nsys.exit(gpu_children.main(sys.argv[1:]))\n"


def skip_reason() -> str | None:
    """Why the GPU tests cannot run here, or None."""
    if DRY_RUN:
        return None
    available = getattr(bips, "cuda_available", None)
    if available is None:
        return "this bips has no GPU pools (no bips.cuda_available)"
    if not available():
        return "bips.cuda_available() is False: no CUDA driver (libcuda.so.1) here"
    import torch

    with warnings.catch_warnings():  # torch may warn about the driver; that is no error here
        warnings.simplefilter("ignore")
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA device"
    return None


SKIP = skip_reason()
# Every GPU test module: pytestmark = GPU
GPU = [pytest.mark.gpu, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


def needs_real_gpu() -> None:
    """Skips a test that checks CUDA itself (pointers, CuPy, the driver's view) in a dry run."""
    if DRY_RUN:
        pytest.skip("checks CUDA itself: not in a dry run")


class Child:
    """One process running a role of gpu_children."""

    def __init__(self, role: str, proc: subprocess.Popen[bytes]) -> None:
        self.role = role
        self.proc = proc
        self.messages: list[dict[str, Any]] = []
        self._started = False

    def expect(self, event: str, timeout: float | None = None) -> dict[str, Any]:
        """The next message ``event`` (earlier messages of other kinds are kept in
        ``messages``); fails the test with the child's traceback if it reports an error, exits
        or says nothing in time."""
        if timeout is None:
            timeout = STEP_S if self._started else STARTUP_S
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = read_message(self.proc, max(0.0, deadline - time.monotonic()))
            except ChildError as e:
                self.kill()
                _, _, err = reap(self.proc, 5.0)
                pytest.fail(f"{self.role} (pid {self.proc.pid}) waiting for {event!r}: {e}\n"
                            f"--- stderr\n{err[-6000:]}")  # fmt: skip
            self._started = True
            self.messages.append(msg)
            if msg.get("event") == "error":
                self.kill()
                pytest.fail(f"{self.role} (pid {self.proc.pid}) failed:\n{msg['traceback']}")
            if msg.get("event") == event:
                return msg

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def finish(self, timeout: float = 30.0) -> int:
        """Waits for the child to exit by itself (SIGKILL after ``timeout``); fails the test if
        it exits non-zero. Returns the exit code."""
        rc, _, err = reap(self.proc, timeout)
        if rc != 0:
            pytest.fail(f"{self.role} (pid {self.proc.pid}) exited with {rc}\n--- stderr\n"
                        f"{err[-6000:]}")  # fmt: skip
        return rc


class Children:
    """Starts role processes for one test; ``close()`` (in a ``finally``) kills and reaps
    whatever is left, also when the test failed."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    def start(
        self, role: str, *, env: dict[str, str] | None = None, unset: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Child:  # fmt: skip
        """``role`` with ``kwargs`` (JSON) in a new process; ``env`` overrides variables of this
        process's environment, ``unset`` removes some."""
        full_env = dict(os.environ)
        for name in unset:
            full_env.pop(name, None)
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + "\n" + _CHILD, role, json.dumps(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        proc._bips_buf = b""  # type: ignore[attr-defined]  # helpers.read_message's buffer
        child = Child(role, proc)
        self.started.append(child)
        return child

    def close(self) -> None:
        for c in self.started:
            c.kill()
        for c in self.started:
            reap(c.proc, 10.0)
            for f in (c.proc.stdin, c.proc.stdout, c.proc.stderr):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
