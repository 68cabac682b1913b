# SPDX-License-Identifier: Apache-2.0
"""Small utilities for cross-process tests.

API (everything else in this file is private)::

    proc = spawn_python(code, *args, env=None, python=None, stdin=False)
                                                 # python (default sys.executable) -c PRELUDE + code,
                                                 # args in sys.argv[1:]; stdin=True: proc.stdin is
                                                 # a pipe (else /dev/null)
    msg = read_message(proc, timeout=5.0)        # next JSON line the child emit()ted -> dict
                                                 # (ChildError if the child exits or times out first)
    rc, out, err = reap(proc, timeout=5.0)       # wait up to timeout, then SIGKILL; always waits
    rc = kill_and_reap(proc, sig=SIGKILL)        # send a signal now, then reap
    with child(code, *args) as proc: ...         # spawn_python + reap on exit, even on failure
    wait_until(predicate, timeout=5.0) -> bool   # polls every 10 ms; False on timeout
    fill(arr, seq) / check(arr, seq) -> bool     # content derived from seq, for frame payloads
    pool_path(name) -> "/dev/shm/bips.NAME"
    run(cmd, timeout, env=None)                  # subprocess.run; fails the test with the output
    find_compiler() -> "c++" | None              # $CXX, c++, g++ or clang++
    require_compiler("clang++") -> path          # skips unless that compiler is installed
    cmake_generator() -> ["-G", "Ninja"] | []    # Ninja when installed
    require_cmake_project(src)                   # skips unless cmake, a C++ compiler and src exist

Children run with ``bips``, ``numpy as np``, ``json``, ``os``, ``sys``, ``time`` and ``signal``
already imported, plus ``emit(**fields)`` which prints one JSON line to stdout and flushes,
``fill``/``check`` (same as above), and they die with SIGKILL when the test process dies
(``PR_SET_PDEATHSIG``), so a crashed test never leaves orphans holding pools open. (That
signal follows the *thread* that spawned the child: spawn from the main thread, or from a
thread that outlives the child.)
Children report results with ``emit(...)``; the parent reads them with ``read_message``.
stdout is reserved for those lines; stderr is captured and shown by ``ChildError`` / ``reap``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

__all__ = [
    "PRELUDE",
    "ChildError",
    "check",
    "child",
    "cmake_generator",
    "fill",
    "find_compiler",
    "kill_and_reap",
    "pool_path",
    "read_message",
    "reap",
    "require_cmake_project",
    "require_compiler",
    "run",
    "spawn_python",
    "wait_until",
]

SHM_DIR = "/dev/shm"


def pool_path(name: str) -> str:
    """The file behind pool ``name``."""
    return os.path.join(SHM_DIR, "bips." + name)


def fill(arr: np.ndarray[Any, Any], seq: int) -> None:
    """Writes a payload derived from ``seq`` into a writable byte-addressable array: the first 8
    bytes hold ``seq`` as little-endian uint64, the rest ``(seq * 31 + i) & 0xFF``."""
    flat = arr.reshape(-1).view(np.uint8)
    n = flat.size
    head = np.frombuffer(int(seq).to_bytes(8, "little"), dtype=np.uint8)
    k = min(8, n)
    flat[:k] = head[:k]
    if n > 8:
        flat[8:] = ((seq * 31 + np.arange(8, n, dtype=np.uint64)) & 0xFF).astype(np.uint8)


def check(arr: np.ndarray[Any, Any], seq: int) -> bool:
    """True if ``arr`` holds exactly what ``fill(arr, seq)`` wrote."""
    want = np.empty(arr.nbytes, dtype=np.uint8)
    fill(want, seq)
    return bool(np.array_equal(np.ascontiguousarray(arr).reshape(-1).view(np.uint8), want))


PRELUDE = r"""
import ctypes, json, os, signal, sys, time
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
import numpy as np
import bips

def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()

def fill(arr, seq):
    flat = arr.reshape(-1).view(np.uint8)
    n = flat.size
    head = np.frombuffer(int(seq).to_bytes(8, "little"), dtype=np.uint8)
    k = min(8, n)
    flat[:k] = head[:k]
    if n > 8:
        flat[8:] = ((seq * 31 + np.arange(8, n, dtype=np.uint64)) & 0xFF).astype(np.uint8)

def check(arr, seq):
    want = np.empty(arr.nbytes, dtype=np.uint8)
    fill(want, seq)
    return bool(np.array_equal(np.ascontiguousarray(arr).reshape(-1).view(np.uint8), want))
"""


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Calls ``predicate()`` every ``interval`` seconds until it is true (returns True) or
    ``timeout`` seconds have passed (returns False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class ChildError(AssertionError):
    """A child did not report what the test expected (it exited, or timed out)."""


def spawn_python(
    code: str, *args: Any, env: dict | None = None, python: str | None = None, stdin: bool = False
) -> subprocess.Popen[bytes]:
    """Starts ``python -c PRELUDE + code`` (``sys.executable`` unless another interpreter, say a
    virtual environment's, is given) with ``args`` (converted with ``str``) in ``sys.argv[1:]``.
    stdout and stderr are pipes; read stdout with ``read_message`` and always finish with
    ``reap`` (or use ``child``). ``env`` is merged over ``os.environ``. stdin is /dev/null, or
    with ``stdin=True`` a pipe the test writes to (``proc.stdin``; flush after writing)."""
    full_env = dict(os.environ)
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        [python or sys.executable, "-c", PRELUDE + "\n" + code, *map(str, args)],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
    )
    proc._bips_buf = b""  # type: ignore[attr-defined]
    return proc


def _stderr_of(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None or proc.stderr is None:
        return "<still running>"
    try:
        return proc.stderr.read().decode(errors="replace")[-4000:]
    except (OSError, ValueError):
        return "<unavailable>"


def read_message(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> dict:
    """Returns the next JSON line the child printed with ``emit``. Raises ``ChildError`` if the
    child closes stdout (exits) or prints nothing within ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while True:
        buf: bytes = proc._bips_buf  # type: ignore[attr-defined]
        nl = buf.find(b"\n")
        if nl >= 0:
            proc._bips_buf = buf[nl + 1 :]  # type: ignore[attr-defined]
            line = buf[:nl].decode(errors="replace")
            try:
                return json.loads(line)  # type: ignore[no-any-return]
            except json.JSONDecodeError:
                raise ChildError(f"child printed a non-JSON line: {line!r}") from None
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChildError(f"child (pid {proc.pid}) sent no message within {timeout} s")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
            raise ChildError(
                f"child (pid {proc.pid}) exited (rc={proc.returncode}) before sending a message;"
                f" stderr:\n{_stderr_of(proc)}"
            )
        proc._bips_buf = buf + chunk  # type: ignore[attr-defined]


def reap(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> tuple[int, str, str]:
    """Waits up to ``timeout`` seconds for the child to exit, then SIGKILLs it and waits.
    Returns ``(returncode, rest_of_stdout, stderr)``; the return code is negative for a signal."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    rest = getattr(proc, "_bips_buf", b"") + (out or b"")
    proc._bips_buf = b""  # type: ignore[attr-defined]
    return proc.returncode, rest.decode(errors="replace"), (err or b"").decode(errors="replace")


@contextlib.contextmanager
def child(
    code: str,
    *args: Any,
    env: dict | None = None,
    timeout: float = 5.0,
    python: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``spawn_python`` as a context manager: on exit the child gets ``timeout`` seconds to
    finish, then is killed; it is always waited for."""
    proc = spawn_python(code, *args, env=env, python=python)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            reap(proc, timeout)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def kill_and_reap(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    """Sends ``sig`` and waits (up to 5 s, then SIGKILL). Returns the return code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    rc, _, _ = reap(proc, 5.0)
    return rc


def run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs cmd, failing the test with its output if it fails."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def find_compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx and shutil.which(cxx):
        return cxx
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return name
    return None


def require_compiler(name: str) -> str:
    """The path of the C++ compiler ``name`` (``g++``, ``clang++``); skips the test without it."""
    path = shutil.which(name)
    if path is None:
        package = "clang" if "clang" in name else "g++"
        pytest.skip(f"{name} is not installed (apt install {package}; .ci/run installs it)")
    return path


def cmake_generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def require_cmake_project(src: Any) -> None:
    """Skips the test unless cmake, a C++ compiler and the CMake project ``src`` are there."""
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    if find_compiler() is None:
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX) found")
    if not (src / "CMakeLists.txt").is_file():
        pytest.skip(f"{src} is not there (tests run outside a source checkout)")


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, str, str]:
    """Waits for a text-mode ``proc`` (SIGKILL after ``timeout`` s); returns (rc, stdout,
    stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def first_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The first line a text-mode ``proc`` prints. The examples print one once their pool
    exists: attaching after it is deterministic, with no pool half-made under the consumer."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"{proc.args} printed nothing within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        rc, out, err = stop(proc)
        pytest.fail(f"{proc.args} exited with {rc} before printing anything\n{out}\n{err}")
    return line
