# SPDX-License-Identifier: Apache-2.0
"""Every C and C++ file of the repository follows .clang-format."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DIRS = ("cpp", "python/bindings", "gst", "examples", "benchmarks", "tests")
SUFFIXES = {".c", ".h", ".cpp", ".hpp"}


def sources() -> list[pathlib.Path]:
    found = []
    for d in DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.suffix in SUFFIXES and p.is_file() and "build" not in p.relative_to(ROOT).parts:
                found.append(p)
    return found


def test_sources_are_found() -> None:
    names = {p.name for p in sources()}
    assert {"producer.cpp", "bips.h", "frame.cpp", "bipssink.cpp", "capture.cpp"} <= names


def test_cpp_follows_clang_format() -> None:
    tool = shutil.which("clang-format")
    if tool is None:
        pytest.skip("clang-format is not installed (pip install '.[test]' brings it)")
    files = [str(p) for p in sources()]
    r = subprocess.run(
        [tool, "--dry-run", "--Werror", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, "run clang-format -i on:\n" + r.stderr[-4000:]
