# SPDX-License-Identifier: Apache-2.0
"""Zero copy and the ways to look at device memory: the tensor a consumer gets *is* the pool
buffer (its pointer is the frame's ``__cuda_array_interface__`` pointer, the same for every
receive of one buffer, inside the mapping the consumer imported), likewise on the producer side;
``__cuda_array_interface__`` v3 (read-only for frames), ``__dlpack_device__`` and ``.device``,
DLPack's stream argument, ``cupy.from_dlpack``, ``frame.to_host()``, no buffer protocol on
device memory. A producer and a consumer in one process work too.

One producer and one consumer process record every check (``gpu_children.buffer_prober`` and
``frame_prober``); each test here asserts one of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")

from conftest import bips_entries, unique_name
from gpu_util import DRY_RUN, GPU, Children, needs_real_gpu

pytestmark = GPU

CAPACITY = 4
SHAPE = (1080, 1920, 3)
STRIDE_ALIGN = 4096  # gpu-design: buffer i at base + i * align_up(buffer_size, 4096)


@pytest.fixture(scope="module")
def probed() -> dict[str, Any]:
    needs_real_gpu()
    before = bips_entries()
    name = unique_name("gpu")
    kids = Children()
    try:
        prod = kids.start("buffer_prober", name=name, capacity=CAPACITY, shape=SHAPE)
        cons = kids.start("frame_prober", name=name, capacity=CAPACITY, shape=SHAPE)
        prod.expect("ready")
        cons.expect("attached")
        published = prod.expect("published")
        done = cons.expect("done")
        prod.send("close")
        prod.finish()
        cons.finish()
    finally:
        kids.close()
    deadline = time.monotonic() + 3.0
    while bips_entries() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    return {
        "producer": published["checks"],
        "consumer": done["checks"],
        "pointers": done["pointers"],
        "nbytes": done["nbytes"],
        "leaked": sorted(bips_entries() - before),
    }


def _passed(checks: dict[str, Any], name: str) -> None:
    got = checks[name]
    assert got.get("ok"), f"{name}: {got}"


def test_consumer_tensor_is_the_pool_buffer(probed: dict[str, Any]) -> None:
    _passed(probed["consumer"], "tensor")
    for p in probed["pointers"]:
        assert p["torch_ptr"] == p["ptr"], p
        assert p["wrong"] == 0, f"frame {p['seq']} was not what the producer wrote"


def test_producer_tensor_is_the_buffer(probed: dict[str, Any]) -> None:
    _passed(probed["producer"], "tensor")


def test_each_buffer_stays_at_one_address(probed: dict[str, Any]) -> None:
    by_index: dict[int, set[int]] = {}
    for p in probed["pointers"]:
        by_index.setdefault(p["index"], set()).add(p["ptr"])
    assert sorted(by_index) == list(range(CAPACITY)), "every buffer was received (twice)"
    assert all(len(ptrs) == 1 for ptrs in by_index.values()), by_index
    ptr = {i: next(iter(ptrs)) for i, ptrs in by_index.items()}
    nbytes = probed["nbytes"]
    stride = -(-nbytes // STRIDE_ALIGN) * STRIDE_ALIGN
    offsets = {i: ptr[i] - ptr[0] for i in ptr}
    assert offsets == {i: i * stride for i in ptr}, f"offsets from buffer 0: {offsets}"


def test_buffers_lie_in_the_imported_mapping(probed: dict[str, Any]) -> None:
    ranges = {tuple(p["range"]) for p in probed["pointers"] if p["range"] is not None}
    if not ranges:
        pytest.skip("cuda-python is not installed, or cuMemGetAddressRange said no")
    assert len(ranges) == 1, f"the frames lie in several allocations: {ranges}"
    ((base, size),) = ranges
    nbytes = probed["nbytes"]
    assert size >= CAPACITY * nbytes
    for p in probed["pointers"]:
        assert base <= p["ptr"] and p["ptr"] + nbytes <= base + size, (p, base, size)


def test_cuda_array_interface(probed: dict[str, Any]) -> None:
    _passed(probed["producer"], "interface")  # writable
    _passed(probed["consumer"], "interface")  # read-only


def test_device_strings(probed: dict[str, Any]) -> None:
    _passed(probed["producer"], "device")
    _passed(probed["consumer"], "device")


def test_to_host_copies_the_frame(probed: dict[str, Any]) -> None:
    _passed(probed["consumer"], "to_host")


def test_no_buffer_protocol_on_device_memory(probed: dict[str, Any]) -> None:
    _passed(probed["producer"], "no_buffer_protocol")
    _passed(probed["consumer"], "no_buffer_protocol")


def test_dlpack_stream_argument(probed: dict[str, Any]) -> None:
    _passed(probed["consumer"], "dlpack_streams")


def test_cupy_from_dlpack(probed: dict[str, Any]) -> None:
    got = probed["consumer"]["cupy"]
    if "skipped" in got:
        pytest.skip(got["skipped"])
    _passed(probed["consumer"], "cupy")


def test_views_leave_nothing_in_dev_shm(probed: dict[str, Any]) -> None:
    assert probed["leaked"] == []


@pytest.fixture
def kids() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.close()


def test_producer_and_consumer_in_one_process(kids: Children) -> None:
    solo = kids.start("solo", name=unique_name("gpu"), shape=[256, 256])
    done = solo.expect("done")
    solo.finish()
    assert [f["seq"] for f in done["frames"]] == [0, 1, 2]
    assert all(f["wrong"] == 0 for f in done["frames"]), done["frames"]
    assert DRY_RUN or all(f["zero_copy"] for f in done["frames"])
