# SPDX-License-Identifier: Apache-2.0
"""examples/pytorch_consumer on a GPU: ``producer.py --device cuda`` draws frames into GPU pools
on the GPU, and ``consumer.py --device cuda`` gets them as cuda:0 tensors with no copy (it says
so, and counts 0 copies); from host pools it stages every frame (and counts them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from conftest import unique_name
from gpu_util import GPU, needs_real_gpu

pytestmark = GPU

CONSUMER = Path(__file__).resolve().parents[2] / "examples" / "pytorch_consumer" / "consumer.py"
FRAMES = 30


def _demo(pool_device: str) -> str:
    if not CONSUMER.is_file():
        pytest.skip(f"{CONSUMER} is not there (tests run outside a source checkout)")
    name = unique_name("gpucam")
    cmd = [sys.executable, str(CONSUMER), "--demo", "--pools", name, "--frames", str(FRAMES),
           "--size", "360x640", "--fps", "0", "--device", "cuda", "--demo-device", pool_device,
           "--report-every", "0"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"camera {name!r}: published {FRAMES} frames" in proc.stdout, proc.stdout
    assert f"{name}: {FRAMES} frames" in proc.stdout, proc.stdout
    return proc.stdout


def test_gpu_pool_frames_reach_the_model_with_no_copy() -> None:
    needs_real_gpu()
    out = _demo("cuda")
    assert "on cuda:0" in out  # producer.py made a GPU pool
    assert "device pool: frames arrive as cuda:0 tensors, 0 host copies" in out, out
    assert "copies 0" in out, out


def test_host_pool_frames_are_staged_and_counted() -> None:
    needs_real_gpu()
    out = _demo("cpu")
    assert "host pool: each frame is staged through pinned memory" in out, out
    assert f"copies {FRAMES}" in out, out
