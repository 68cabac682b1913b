# SPDX-License-Identifier: Apache-2.0
"""GPU pools deliver what host pools deliver: every frame, complete, in order, to every consumer
(each in a process of its own), and ``latest=True`` the newest complete one.

The producer writes each frame with slow kernels on its stream right before
``publish(buf, stream=s)`` and never waits for them; the consumers check every element of every
frame on the GPU. A frame made visible before the producer's stream finished would show half
old (the previous frame of that buffer) and half new.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("torch")

from conftest import unique_name
from gpu_util import DRY_RUN, GPU, Children

pytestmark = GPU


@pytest.fixture
def kids() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.close()


@pytest.mark.parametrize(
    ("consumers", "shape", "dtype", "frames"),
    [
        pytest.param(1, (2160, 3840, 3), "uint8", 24, id="4K-rgb-1-consumer"),
        pytest.param(4, (1024, 1024), "int32", 40, id="4MB-int32-4-consumers"),
    ],
)
def test_every_consumer_gets_every_frame_complete_and_in_order(
    kids: Children, consumers: int, shape: tuple[int, ...], dtype: str, frames: int
) -> None:
    name = unique_name("gpu")
    write_ms = 4.0  # per half frame: each frame keeps the producer's stream busy ~8 ms
    prod = kids.start("producer", name=name, capacity=4, shape=shape, dtype=dtype,
                      frames=frames, consumers=consumers, write_ms=write_ms)  # fmt: skip
    # Consumers of different speeds, so that the queue is sometimes empty, sometimes full.
    cons = [kids.start("consumer", name=name, dtype=dtype, hold_ms=i % 3) for i in range(consumers)]
    prod.expect("ready")
    for c in cons:
        c.expect("attached")
    published = prod.expect("published")
    prod.expect("closed")
    prod.finish()
    for i, c in enumerate(cons):
        done = c.expect("done")
        c.finish()
        assert done["bad_frames"] == 0, f"consumer {i} saw incomplete frames: {done['bad']}"
        assert done["seqs"] == list(range(frames)), f"consumer {i}"
        assert done["dropped"] == 0 and done["skipped"] == 0
        if not DRY_RUN:
            assert done["devices"] == ["cuda:0"], done["devices"]
            assert done["zero_copy"], "a consumer's tensor was not the pool buffer"
    assert published["zero_copy"], "the producer's tensor was not the pool buffer"
    if not DRY_RUN:
        # publish(buf, stream=s) orders the hand-off after s's work without waiting for it.
        assert published["publish_ms_p50"] < write_ms / 2, published


def test_latest_gives_the_newest_complete_frame(kids: Children) -> None:
    name = unique_name("gpu")
    frames, dtype = 30, "int32"
    # ~3 ms of GPU work per frame; the consumer takes 15 ms per frame, so frames queue up.
    prod = kids.start("producer", name=name, capacity=4, shape=(512, 512), dtype=dtype,
                      frames=frames, consumers=1, write_ms=1.5)  # fmt: skip
    cons = kids.start("consumer", name=name, dtype=dtype, latest=True, hold_ms=15)
    prod.expect("ready")
    cons.expect("attached")
    prod.expect("published")
    prod.expect("closed")
    prod.finish()
    done = cons.expect("done")
    cons.finish()
    seqs = done["seqs"]
    assert done["bad_frames"] == 0, done["bad"]
    assert seqs == sorted(set(seqs)), f"not strictly increasing: {seqs}"
    assert seqs[-1] == frames - 1, f"the newest frame never came: {seqs}"
    assert len(seqs) < frames and done["skipped"] > 0, f"nothing was skipped: {seqs}"
    assert done["received"] + done["skipped"] == frames, done
