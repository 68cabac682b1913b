# SPDX-License-Identifier: Apache-2.0
"""Consumers map GPU pools read-only where the driver allows it: a kernel of a consumer that
writes into a frame faults (in that process only), and the pool goes on working for everyone
else. Where the driver maps consumer memory read-write, the test says so and skips.

Last in the directory on purpose: the faulting process's CUDA context is lost, by design."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("torch")

from conftest import unique_name
from gpu_util import GPU, Children, needs_real_gpu

pytestmark = GPU


@pytest.fixture
def kids() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.close()


def test_a_consumer_cannot_write_into_a_frame(kids: Children) -> None:
    needs_real_gpu()
    name = unique_name("gpu")
    tick = kids.start("ticker", name=name, capacity=4, shape=[256, 256], dtype="int32",
                      every_ms=20)  # fmt: skip
    tick.expect("ready")
    scribbler = kids.start("scribbler", name=name)
    scribbler.expect("attached")
    wrote = scribbler.expect("write")
    scribbler.finish()
    # Whatever happened there, a new consumer gets complete frames.
    after = kids.start("consumer", name=name, dtype="int32", frames=3)
    done = after.expect("done")
    after.finish()
    tick.send("stop")
    tick.expect("stopped")
    tick.finish()
    assert done["bad_frames"] == 0, done["bad"]
    assert len(done["seqs"]) == 3
    if not wrote["refused"]:
        pytest.skip("the driver mapped the consumer's view read-write (no PROT_READ mappings)")
    print(f"\nthe write faulted: {wrote['error']}")
