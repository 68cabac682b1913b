# SPDX-License-Identifier: Apache-2.0
"""The typed facade: _core.pyi matches the compiled module, and python/bips passes mypy --strict
and ruff."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_stub_matches_compiled_module() -> None:
    pytest.importorskip("mypy")
    r = run(sys.executable, "-m", "mypy.stubtest", "bips._core",
            "--allowlist", "python/bindings/stubtest-allowlist.txt")
    assert r.returncode == 0, r.stdout + r.stderr


def test_facade_is_strictly_typed() -> None:
    pytest.importorskip("mypy")
    r = run(sys.executable, "-m", "mypy", "--strict", "python/bips")
    assert r.returncode == 0, r.stdout + r.stderr


def test_facade_lints_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    r = run(ruff, "check", "python/bips")
    assert r.returncode == 0, r.stdout + r.stderr
