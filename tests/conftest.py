# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: a unique pool name per test, and a check that no test leaks /dev/shm entries."""

from __future__ import annotations

import os
import pathlib
import re
import time
import uuid
from collections.abc import Iterator

import pytest

SHM_DIR = "/dev/shm"


# Names made by unique_name() in this session: "<letters><pid>-<hex>". Only those are checked, so
# that test sessions running side by side never judge (or delete) each other's pools.
_OURS = re.compile(rf"^bips\.[A-Za-z_]*{os.getpid()}-")


def bips_entries() -> set[str]:
    try:
        return {n for n in os.listdir(SHM_DIR) if _OURS.match(n)}
    except FileNotFoundError:
        return set()


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pool_name() -> str:
    """A pool name no other test (or test run) uses."""
    return unique_name()


@pytest.fixture(scope="session")
def fake_cuda(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Path of the fake CUDA driver (tests/fake_cuda), built once per session with the system's C
    compiler; bips loads it in place of libcuda.so.1 with BIPS_LIBCUDA=<path>. Skips without a
    compiler."""
    from fake_cuda.build import CompilerNotFound, build

    try:
        return build(tmp_path_factory.mktemp("fake_cuda"))
    except CompilerNotFound as e:
        pytest.skip(f"the fake CUDA driver cannot be built: {e}")


@pytest.fixture(autouse=True)
def no_leftover_segments() -> Iterator[None]:
    """Fails the test if it leaves new bips segments in /dev/shm (after a short grace period
    for child processes that are still exiting)."""
    before = bips_entries()
    yield
    deadline = time.monotonic() + 3.0
    leaked = bips_entries() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = bips_entries() - before
    if leaked:
        for n in leaked:  # do not let one failure cascade into every later test
            try:
                os.unlink(os.path.join(SHM_DIR, n))
            except OSError:
                pass
        pytest.fail(f"test left shared-memory segments behind: {sorted(leaked)}")
