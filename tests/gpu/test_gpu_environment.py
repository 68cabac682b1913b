# SPDX-License-Identifier: Apache-2.0
"""Where a consumer runs: with CUDA_VISIBLE_DEVICES unset, or naming the GPU by its UUID (bips
finds the device by the UUID in the pool header, not by its number), and in processes that
cannot reach the GPU (CUDA_VISIBLE_DEVICES="", or BIPS_LIBCUDA pointing at no driver): a
bips.DeviceUnavailable (or DeviceError) that says why, and host pools unharmed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")

from conftest import unique_name
from gpu_util import GPU, Child, Children, needs_real_gpu

pytestmark = GPU

VISIBLE = "CUDA_VISIBLE_DEVICES"


@pytest.fixture
def kids() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.close()


def _ticker(kids: Children, name: str) -> tuple[Child, dict[str, Any]]:
    tick = kids.start("ticker", name=name, capacity=4, shape=[256, 256], dtype="int32",
                      every_ms=20, unset=(VISIBLE,))  # fmt: skip
    return tick, tick.expect("ready")


def test_consumers_find_the_gpu_by_uuid(kids: Children) -> None:
    needs_real_gpu()
    name = unique_name("gpu")
    tick, ready = _ticker(kids, name)
    consumers = {
        "unset": kids.start("consumer", name=name, dtype="int32", frames=3, unset=(VISIBLE,))
    }
    if ready["uuid"]:
        consumers["uuid"] = kids.start("consumer", name=name, dtype="int32", frames=3,
                                       env={VISIBLE: ready["uuid"]})  # fmt: skip
    for label, c in consumers.items():
        c.expect("attached")
        done = c.expect("done")
        c.finish()
        assert len(done["seqs"]) == 3, label
        assert done["seqs"] == sorted(done["seqs"]), label
        assert done["bad_frames"] == 0, (label, done["bad"])
        assert done["devices"] == ["cuda:0"], (label, done["devices"])
        assert done["zero_copy"], label
    tick.send("stop")
    tick.expect("stopped")
    tick.finish()
    if not ready["uuid"]:
        pytest.skip("torch gave no device UUID: only the unset case ran")


def _unavailable(got: dict[str, Any]) -> bool:
    return bool(got["raised"]) and (got["device_unavailable"] or got["device_error"])


def test_a_process_without_the_gpu_gets_a_clear_error(kids: Children) -> None:
    needs_real_gpu()
    name = unique_name("gpu")
    tick, _ = _ticker(kids, name)
    hidden = kids.start("unavailable", name=name, host_name=unique_name("gpuhost"),
                        env={VISIBLE: ""})  # fmt: skip
    nolib = kids.start("unavailable", name=name, host_name=unique_name("gpuhost"),
                       env={"BIPS_LIBCUDA": "/nonexistent/libcuda.so.1"})  # fmt: skip
    no_gpu = hidden.expect("result")
    no_driver = nolib.expect("result")
    hidden.finish()
    nolib.finish()
    tick.send("stop")
    tick.expect("stopped")
    tick.finish()
    print(f"\nno visible GPU: open -> {no_gpu['open']}\n  create -> {no_gpu['create']}")
    print(f"no driver: open -> {no_driver['open']}\n  create -> {no_driver['create']}")

    assert no_driver["cuda_available"] is False
    assert no_driver["open"]["device_unavailable"], no_driver["open"]
    assert no_driver["create"]["device_unavailable"], no_driver["create"]
    assert no_driver["open"]["message"] and no_driver["create"]["message"]
    assert _unavailable(no_gpu["open"]), no_gpu["open"]
    assert _unavailable(no_gpu["create"]), no_gpu["create"]
    assert no_gpu["host_pool_ok"] and no_driver["host_pool_ok"]
