# SPDX-License-Identifier: Apache-2.0
"""A buffer goes back to the producer only after the consumer's GPU work on it has finished:
``frame.release(stream=s)``, and the views' lifetime rule (a tensor made by
``torch.from_dlpack(frame)`` on stream s holds the buffer until s is done with it).

The consumer (another process) queues a long kernel on s, then a read of the frame, and gives
the frame back at once; the producer meanwhile overwrites every buffer it can acquire. The
read must still see the frame's own value, and the producer must get that buffer only after
the kernel, not when release() was called.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("torch")

from conftest import unique_name
from gpu_util import DRY_RUN, GPU, Children

pytestmark = GPU

VALUE, POISON = 123_456, -7
KERNEL_MS = 300.0  # the consumer's kernel before it reads the frame


@pytest.fixture
def kids() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["release_stream", "views"])
def test_producer_never_overwrites_a_frame_a_kernel_still_reads(kids: Children, mode: str) -> None:
    name = unique_name("gpu")
    prod = kids.start("overwriter", name=name, capacity=4, shape=[1 << 20], value=VALUE,
                      poison=POISON)  # fmt: skip
    reader = kids.start("hold_reader", name=name, sleep_ms=KERNEL_MS, mode=mode, value=VALUE)
    prod.expect("ready")
    reader.expect("attached")
    first = prod.expect("published")
    released = reader.expect("released")
    prod.send("go")  # from now on the producer overwrites whatever it can acquire
    result = reader.expect("result")
    prod.send("stop")
    hammer = prod.expect("result")
    reader.finish()
    prod.finish()

    index = released["index"]
    assert index == first["index"] and released["seq"] == 0
    assert result["wrong"] == 0, (
        f"the consumer's read after its kernel saw {result['wrong']} overwritten elements "
        f"(min {result['min']}, max {result['max']}): the buffer went back before the kernel ended"
    )
    assert released["release_ms"] < KERNEL_MS / 4, "release(stream=...) waited for the GPU"
    assert hammer["overwrites"] > 0
    back = hammer["first_at"].get(str(index))
    assert back is not None, f"buffer {index} never came back to the producer"
    if not DRY_RUN:
        kernel_ns = result["t_done"] - released["t_release"]
        assert kernel_ns > 0.2 * KERNEL_MS * 1e6, "the consumer's kernel was too short to tell"
        # The producer got the buffer once the kernel was (nearly) done, not at release().
        assert back - released["t_release"] >= 0.5 * kernel_ns, (
            f"buffer {index} was back {(back - released['t_release']) / 1e6:.1f} ms after "
            f"release(), the kernel took {kernel_ns / 1e6:.1f} ms"
        )
