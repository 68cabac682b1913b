# SPDX-License-Identifier: Apache-2.0
"""asyncio: receive_async and ``async for`` do not block the loop and cancel cleanly."""

from __future__ import annotations

import asyncio
import gc
import time

import numpy as np
import pytest

import bips
from helpers import check, child, fill, read_message

PRODUCER = r"""
name, n, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with bips.Producer(name, capacity=4, shape=(64,), dtype="uint8") as prod:
    emit(ready=True)
    deadline = time.monotonic() + 10
    while prod.stats.consumers == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    for seq in range(n):
        buf = prod.acquire(timeout=5)
        fill(buf.numpy(), seq)
        prod.publish(buf)
        time.sleep(period)
"""


def publish_one(prod: bips.Producer, seq: int) -> None:
    buf = prod.acquire(timeout=1.0)
    fill(buf.numpy(), seq)
    prod.publish(buf)


def test_consumer_is_the_async_capable_facade(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, shape=(8,)), bips.Consumer(pool_name) as cons:
        assert isinstance(cons, bips.Consumer)
        assert isinstance(cons, bips._core.Consumer)
        assert cons.__aiter__() is cons


def test_async_for_receives_every_frame_from_another_process(pool_name: str) -> None:
    n = 200

    async def main() -> list[int]:
        seqs: list[int] = []
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.create_task(ticker())
        with bips.Consumer(pool_name, timeout=5.0) as cons:
            async for frame in cons:
                assert check(frame.numpy(), frame.seq)
                seqs.append(frame.seq)
                frame.release()
        t.cancel()
        assert ticks > 20  # the loop kept running while we waited for frames
        return seqs

    with child(PRODUCER, pool_name, n, 0.002, timeout=10.0) as proc:
        assert read_message(proc)["ready"]
        seqs = asyncio.run(asyncio.wait_for(main(), 30))
    assert seqs == list(range(n))  # ends at end of stream, nothing missed or repeated


def test_receive_async_timeout(pool_name: str) -> None:
    async def main(cons: bips.Consumer) -> float:
        start = time.monotonic()
        with pytest.raises(bips.Timeout):
            await cons.receive_async(timeout=0.2)
        return time.monotonic() - start

    with bips.Producer(pool_name, capacity=2, shape=(8,)), bips.Consumer(pool_name) as cons:
        took = asyncio.run(main(cons))
    assert 0.15 <= took < 2.0


def test_cancelled_wait_receives_nothing(pool_name: str) -> None:
    async def main(prod: bips.Producer, cons: bips.Consumer) -> None:
        task = asyncio.create_task(cons.receive_async(timeout=10.0))
        await asyncio.sleep(0.05)  # the helper thread is now waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # A frame published right after the cancel, while the helper thread is still inside
        # its wait, must stay queued for the next receive.
        publish_one(prod, 0)
        await asyncio.sleep(0.3)
        assert cons.stats.received == 0
        assert cons.stats.queued == 1
        frame = await cons.receive_async(timeout=1.0)
        assert frame.seq == 0 and check(frame.numpy(), 0)
        frame.release()

    with bips.Producer(pool_name, capacity=2, shape=(64,)) as prod:
        with bips.Consumer(pool_name) as cons:
            asyncio.run(main(prod, cons))
            assert cons.stats.received == 1
            assert prod.stats.free == 2  # nothing held, nothing leaked


def test_cancel_with_wait_for_timeout_then_receive_sync(pool_name: str) -> None:
    async def main(cons: bips.Consumer) -> None:
        for _ in range(5):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(cons.receive_async(), 0.02)

    with bips.Producer(pool_name, capacity=2, shape=(64,)) as prod:
        with bips.Consumer(pool_name) as cons:
            asyncio.run(main(cons))
            publish_one(prod, 0)
            frame = cons.receive(timeout=1.0)
            assert frame.seq == 0
            frame.release()


def test_queued_frame_is_taken_without_a_thread(pool_name: str) -> None:
    async def main(cons: bips.Consumer) -> int:
        return (await cons.receive_async(timeout=0)).seq

    with bips.Producer(pool_name, capacity=2, shape=(64,)) as prod:
        with bips.Consumer(pool_name) as cons:
            publish_one(prod, 0)
            assert asyncio.run(main(cons)) == 0
            assert not hasattr(cons, "_waiter")  # no helper thread was needed


def test_many_consumers_wait_concurrently() -> None:
    # More consumers than a default executor has threads: each has its own waiter, so none
    # queues behind another.
    from conftest import unique_name

    names = [unique_name() for _ in range(12)]
    prods = [bips.Producer(n, capacity=2, shape=(64,)) for n in names]
    conss = [bips.Consumer(n) for n in names]
    try:

        async def main() -> list[int]:
            tasks = [asyncio.create_task(c.receive_async(timeout=5.0)) for c in conss]
            await asyncio.sleep(0.1)
            start = time.monotonic()
            for p in reversed(prods):
                publish_one(p, 0)
            frames = await asyncio.gather(*tasks)
            assert time.monotonic() - start < 2.0
            seqs = [f.seq for f in frames]
            for f in frames:
                f.release()
            return seqs

        assert asyncio.run(main()) == [0] * len(names)
    finally:
        for c in conss:
            c.close()
        for p in prods:
            p.close()


def test_end_of_stream_and_close(pool_name: str) -> None:
    async def main(prod: bips.Producer, cons: bips.Consumer) -> None:
        task = asyncio.create_task(cons.receive_async(timeout=5.0))
        await asyncio.sleep(0.05)
        publish_one(prod, 0)
        prod.close()
        assert (await task).seq == 0
        with pytest.raises(bips.ProducerGone):
            await cons.receive_async(timeout=5.0)

    with bips.Producer(pool_name, capacity=2, shape=(64,)) as prod:
        with bips.Consumer(pool_name) as cons:
            asyncio.run(main(prod, cons))


def test_waiter_thread_ends_with_the_consumer(pool_name: str) -> None:
    import os

    async def main(cons: bips.Consumer) -> None:
        with pytest.raises(bips.Timeout):
            await cons.receive_async(timeout=0.05)

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    with bips.Producer(pool_name, capacity=2, shape=(64,)):
        before = threads()
        cons = bips.Consumer(pool_name)
        asyncio.run(main(cons))
        assert threads() == before + 1  # the consumer's one helper thread
        asyncio.run(main(cons))
        assert threads() == before + 1  # reused, not one per wait
        cons.close()
        del cons
        gc.collect()
        assert threads() == before


def test_one_waiting_task_per_consumer(pool_name: str) -> None:
    async def main(prod: bips.Producer, cons: bips.Consumer) -> None:
        first = asyncio.create_task(cons.receive_async(timeout=5.0))
        await asyncio.sleep(0.02)
        with pytest.raises(RuntimeError, match="already waiting"):
            await cons.receive_async(timeout=1.0)
        publish_one(prod, 0)
        assert (await first).seq == 0

    with bips.Producer(pool_name, capacity=2, shape=(64,)) as prod:
        with bips.Consumer(pool_name) as cons:
            asyncio.run(main(prod, cons))


def test_close_during_wait_raises(pool_name: str) -> None:
    async def main(cons: bips.Consumer) -> None:
        task = asyncio.create_task(cons.receive_async(timeout=5.0))
        await asyncio.sleep(0.05)
        cons.close()
        with pytest.raises(bips.InvalidArgument, match="closed"):
            await asyncio.wait_for(task, 2.0)

    with bips.Producer(pool_name, capacity=2, shape=(64,)):
        cons = bips.Consumer(pool_name)
        asyncio.run(main(cons))


def test_frames_from_receive_async_are_zero_copy(pool_name: str) -> None:
    from test_zero_copy import assert_in_frame_buffer

    async def main(cons: bips.Consumer) -> bips.Frame:
        return await cons.receive_async(timeout=2.0)

    with bips.Producer(pool_name, capacity=2, shape=(64,)) as prod:
        with bips.Consumer(pool_name) as cons:
            publish_one(prod, 5)
            frame = asyncio.run(main(cons))
            a = np.asarray(frame)
            assert check(a, 5)
            assert_in_frame_buffer(pool_name, a.ctypes.data, a.nbytes, frame.index, "r")
            del a
            frame.release()
