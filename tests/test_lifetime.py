# SPDX-License-Identifier: Apache-2.0
"""Lifetime regression tests: a view made from a frame or buffer pins that buffer. Keep a view,
drop (or release) its owner, gc.collect(), publish many more frames with distinct content: the
view is unchanged and its buffer is never handed out again until the view dies."""

from __future__ import annotations

import gc
from typing import Any, Callable

import bips
import numpy as np
import pytest
from helpers import check, fill

CAPACITY = 4
SIZE = 256


def np_view(obj: Any) -> Any:
    return obj.numpy()


def np_slice(obj: Any) -> Any:
    return obj.numpy()[8:64:2]  # a derived array keeps its base alive


def asarray_view(obj: Any) -> Any:
    return np.asarray(obj)


def memoryview_view(obj: Any) -> Any:
    return memoryview(obj)


def memoryview_cast(obj: Any) -> Any:
    return memoryview(obj).cast("B")[16:]  # a derived memoryview keeps the export alive


def frombuffer_view(obj: Any) -> Any:
    return np.frombuffer(memoryview(obj), dtype=np.uint8)  # the temporary memoryview dies


def dlpack_view(obj: Any) -> Any:
    return np.from_dlpack(obj)


def torch_view(obj: Any) -> Any:
    torch = pytest.importorskip("torch")
    return torch.from_dlpack(obj)


VIEWS: dict[str, Callable[[Any], Any]] = {
    "numpy": np_view,
    "numpy-slice": np_slice,
    "asarray": asarray_view,
    "memoryview": memoryview_view,
    "memoryview-cast": memoryview_cast,
    "frombuffer": frombuffer_view,
    "dlpack": dlpack_view,
    "torch": torch_view,
}


def snapshot(view: Any) -> bytes:
    """The bytes a view shows (without keeping another view alive)."""
    if hasattr(view, "numpy") and not isinstance(view, np.ndarray):  # torch tensor
        return bytes(view.numpy().tobytes())
    return bytes(np.asarray(view).tobytes()) if not isinstance(view, memoryview) else view.tobytes()


def publish_seq(prod: bips.Producer, seq: int, avoid: int) -> None:
    buf = prod.acquire(timeout=2.0)
    assert buf.index != avoid, f"buffer {avoid} reused while a view of it is alive"
    fill(buf.numpy(), seq)
    prod.publish(buf)


def churn(
    prod: bips.Producer, cons: bips.Consumer, policy: str, first_seq: int, count: int, avoid: int
) -> int:
    """Publishes `count` frames with distinct contents; under block the consumer drains them
    (checking each one), under drop_oldest it receives nothing and the producer drops."""
    seq = first_seq
    for _ in range(count):
        publish_seq(prod, seq, avoid)
        if policy == "block":
            with cons.receive(timeout=2.0) as f:
                assert f.seq == seq and f.index != avoid and check(f.numpy(), seq)
        seq += 1
    return seq


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
@pytest.mark.parametrize("how", ["del", "release"])
@pytest.mark.parametrize("kind", list(VIEWS))
def test_consumer_view_outlives_frame(pool_name: str, kind: str, how: str, policy: str) -> None:
    with bips.Producer(pool_name, capacity=CAPACITY, buffer_size=SIZE, policy=policy) as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            fill(buf.numpy(), 0)
            prod.publish(buf)
            del buf
            frame = cons.receive(timeout=1.0)
            assert frame.seq == 0
            kept = frame.index
            view = VIEWS[kind](frame)
            before = snapshot(view)
            if how == "release":
                frame.release()
                assert frame.released
                with pytest.raises(bips.InvalidArgument):
                    frame.numpy()  # the frame object is done; only the view lives on
            del frame
            gc.collect()
            assert prod.stats.free == CAPACITY - 1

            last = churn(prod, cons, policy, 1, 5 * CAPACITY, kept)
            gc.collect()
            assert snapshot(view) == before
            if policy == "block":
                assert prod.stats.free == CAPACITY - 1
            else:
                assert prod.stats.free == 0 and prod.stats.dropped > 0
                assert cons.stats.dropped > 0

            del view
            gc.collect()
            if policy == "block":
                assert prod.stats.free == CAPACITY
                bufs = [prod.acquire(timeout=1.0) for _ in range(CAPACITY)]
                assert kept in {b.index for b in bufs}  # the buffer is back in the pool
                for b in bufs:
                    b.discard()
            else:
                assert prod.stats.free == 1
                publish_seq(prod, last, -1)  # may reuse the freed buffer now
                # The queue holds the newest frames, intact and in order.
                seqs = []
                while (f := cons.try_receive()) is not None:
                    assert check(f.numpy(), f.seq)
                    seqs.append(f.seq)
                    f.release()
                assert seqs == list(range(last - CAPACITY + 1, last + 1))


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
@pytest.mark.parametrize("kind", ["numpy", "numpy-slice", "memoryview", "dlpack", "torch"])
def test_producer_view_outlives_publish(pool_name: str, kind: str, policy: str) -> None:
    with bips.Producer(pool_name, capacity=CAPACITY, buffer_size=SIZE, policy=policy) as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            fill(buf.numpy(), 0)
            kept = buf.index
            view = VIEWS[kind](buf)
            before = snapshot(view)
            prod.publish(buf)
            del buf
            gc.collect()
            with cons.receive(timeout=1.0) as f:  # the consumer gets it and lets go
                assert f.seq == 0 and check(f.numpy(), 0)
            gc.collect()
            assert prod.stats.free == CAPACITY - 1  # still pinned by the producer's view

            churn(prod, cons, policy, 1, 5 * CAPACITY, kept)
            gc.collect()
            assert snapshot(view) == before

            del view
            gc.collect()
            if policy == "block":
                assert prod.stats.free == CAPACITY
            else:
                assert prod.stats.free == 1
                while (f := cons.try_receive()) is not None:
                    assert check(f.numpy(), f.seq)
                    f.release()
                assert prod.stats.free == CAPACITY


def test_discarded_buffer_view_pins_it(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=SIZE) as prod:
        buf = prod.acquire(timeout=1.0)
        arr = buf.numpy()
        kept = buf.index
        buf.discard()
        del buf
        gc.collect()
        assert prod.stats.free == 1
        for _ in range(5):
            b = prod.acquire(timeout=1.0)
            assert b.index != kept
            b.discard()
        del arr
        gc.collect()
        assert prod.stats.free == 2


def test_many_views_one_frame(pool_name: str) -> None:
    """The buffer comes back only when the last of several views dies."""
    with bips.Producer(pool_name, capacity=2, buffer_size=SIZE) as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            fill(buf.numpy(), 5)
            prod.publish(buf)
            frame = cons.receive(timeout=1.0)
            views = [frame.numpy(), memoryview(frame), np.from_dlpack(frame), np.asarray(frame)]
            frame.release()
            del frame
            gc.collect()
            while views:
                assert prod.stats.free == 1
                assert check(np.asarray(views[-1]), 5)
                views.pop(0)
                gc.collect()
            assert prod.stats.free == 2


def test_views_outlive_consumer_and_producer_objects(pool_name: str) -> None:
    prod = bips.Producer(pool_name, capacity=2, buffer_size=SIZE)
    cons = bips.Consumer(pool_name)
    buf = prod.acquire(timeout=1.0)
    fill(buf.numpy(), 3)
    pview = buf.numpy()
    prod.publish(buf)
    frame = cons.receive(timeout=1.0)
    cview = frame.numpy()
    del buf, frame, cons
    gc.collect()
    prod.close()
    del prod
    gc.collect()
    assert check(cview, 3) and check(pview, 3)  # both mappings outlive their handles
    pview[0] = 1  # the producer's view is still writable memory
    assert cview[0] == 1  # ... the same memory


def test_consumer_close_keeps_held_frames_returns_queued(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=6, buffer_size=SIZE) as prod:
        cons = bips.Consumer(pool_name)
        for seq in range(6):
            publish_seq(prod, seq, -1)
        f0 = cons.receive(timeout=1.0)
        f1 = cons.receive(timeout=1.0)
        arr1 = f1.numpy()
        assert prod.stats.free == 0
        cons.close()
        assert prod.stats.free == 4  # the four queued frames went back
        assert prod.stats.consumers == 0
        assert check(f0.numpy(), 0) and check(arr1, 1)
        assert not f0.released
        # Reuse every free buffer many times: the held ones are untouched.
        held = {f0.index, f1.index}
        for seq in range(100, 120):
            publish_seq(prod, seq, -1)
            assert prod.stats.free == 4
        for b in [prod.acquire(timeout=1.0) for _ in range(4)]:
            assert b.index not in held
            b.discard()
        assert check(f0.numpy(), 0) and check(arr1, 1) and f1.seq == 1
        f0.release()
        assert prod.stats.free == 5
        f1.release()
        assert prod.stats.free == 5  # arr1 still pins its buffer
        del arr1
        gc.collect()
        assert prod.stats.free == 6


def test_producer_close_keeps_held_frames_readable(pool_name: str) -> None:
    prod = bips.Producer(pool_name, capacity=4, shape=(8, 8), dtype="float64", meta_size=8)
    cons = bips.Consumer(pool_name)
    for seq in range(3):
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[...] = seq + 0.5
        prod.publish(buf, meta=bytes([seq]) * 8, timestamp_ns=seq)
    f0 = cons.receive(timeout=1.0)
    view = np.from_dlpack(f0)
    prod.close()
    gc.collect()
    assert f0.seq == 0 and f0.meta == b"\x00" * 8 and f0.timestamp_ns == 0
    assert np.all(f0.numpy() == 0.5) and np.all(view == 0.5)
    rest = []
    for f in cons:  # queued frames are still delivered, then the stream ends
        rest.append((f.seq, float(f.numpy()[0, 0]), f.meta))
    assert rest == [(1, 1.5, b"\x01" * 8), (2, 2.5, b"\x02" * 8)]
    assert np.all(f0.numpy() == 0.5) and np.all(view == 0.5)
    f0.release()
    assert np.all(view == 0.5)
    cons.close()
    assert np.all(view == 0.5)
    del view, f0
    gc.collect()


def test_release_inside_with_keeps_view(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=SIZE, policy="drop_oldest") as prod:
        with bips.Consumer(pool_name) as cons:
            publish_seq(prod, 7, -1)
            with cons.receive(timeout=1.0) as frame:
                arr = frame.numpy()
                kept = frame.index
            assert frame.released
            for seq in range(8, 30):
                publish_seq(prod, seq, kept)
            assert check(arr, 7)
            del arr
            gc.collect()
            assert prod.stats.free == 1  # one free, the other holds the newest queued frame
