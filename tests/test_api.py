# SPDX-License-Identifier: Apache-2.0
"""Single-process behaviour of the Python API: arguments, errors, round trips, stats, repr."""

from __future__ import annotations

import gc
import os
import threading
import time

import bips
import numpy as np
import pytest
from helpers import check, child, fill, pool_path, read_message, reap


def publish(prod: bips.Producer, value: int, **kw: object) -> None:
    buf = prod.acquire(timeout=1.0)
    buf.numpy()[...] = value
    prod.publish(buf, **kw)


# --- construction errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "1 to 64"),
        ("a/b", "letters"),
        (".x", "start with"),
        ("x" * 65, "1 to 64"),
        ("a b", "letters"),
        ("caf\u00e9", "letters"),
    ],
)
def test_bad_names_are_refused(name: str, why: str) -> None:
    for make in (
        lambda: bips.Producer(name, capacity=2, buffer_size=8),
        lambda: bips.Consumer(name),
        lambda: bips.pool_info(name),
    ):
        with pytest.raises(bips.InvalidArgument, match=why) as ei:
            make()
        assert isinstance(ei.value, ValueError)
    with pytest.raises(bips.InvalidArgument):
        bips.validate_name(name)


def test_longest_name_is_accepted() -> None:
    name = (f"L{os.getpid()}-" + "x" * 64)[:64]
    bips.validate_name(name)
    with bips.Producer(name, capacity=1, buffer_size=8) as prod:
        assert prod.name == name
        assert os.path.exists(pool_path(name))
    assert not os.path.exists(pool_path(name))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"capacity": 0, "buffer_size": 8}, "capacity"),
        ({"capacity": bips.MAX_CAPACITY + 1, "buffer_size": 8}, "capacity"),
        ({"shape": (10, 10), "buffer_size": 50}, "buffer_size"),
        ({"shape": (10, 10), "dtype": "uint16", "buffer_size": 199}, "buffer_size"),
        ({"shape": (2,), "dtype": "foo"}, "dtype"),
        ({"shape": (2,), "dtype": "object"}, "dtype"),
        ({"shape": (2,), "dtype": "complex64"}, "dtype"),
        ({"buffer_size": 8, "policy": "fifo"}, "policy"),
        ({}, "shape or a buffer_size"),
        ({"buffer_size": 8, "max_consumers": 0}, "consumers"),
        ({"buffer_size": 8, "max_consumers": bips.MAX_CONSUMERS + 1}, "consumers"),
        ({"shape": (1,) * (bips.MAX_DIMS + 1)}, "dim"),
    ],
)
def test_bad_producer_arguments(pool_name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(bips.InvalidArgument, match=match):
        bips.Producer(pool_name, **kwargs)
    assert not os.path.exists(pool_path(pool_name))


def test_negative_shape_is_refused(pool_name: str) -> None:
    with pytest.raises((bips.InvalidArgument, OverflowError, TypeError)):
        bips.Producer(pool_name, capacity=2, shape=(-1, 4))
    assert not os.path.exists(pool_path(pool_name))


@pytest.mark.parametrize(
    "dtype",
    [
        "uint8",
        "int16",
        "uint32",
        "int64",
        "float16",
        "float32",
        "float64",
        "bool",
        np.float32,
        np.dtype("uint16"),
    ],
)
def test_dtypes_round_trip(pool_name: str, dtype: object) -> None:
    want = np.dtype(dtype)  # type: ignore[call-overload]
    with (
        bips.Producer(pool_name, capacity=2, shape=(3, 5), dtype=dtype) as prod,
        bips.Consumer(pool_name) as cons,
    ):
        assert prod.dtype == want and cons.dtype == want
        assert prod.shape == (3, 5) == cons.shape
        assert prod.buffer_size == 15 * want.itemsize
        src = (np.arange(15).reshape(3, 5) % 2).astype(want)
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[...] = src
        prod.publish(buf)
        with cons.receive(timeout=1.0) as frame:
            assert frame.dtype == want and frame.shape == (3, 5)
            assert np.array_equal(frame.numpy(), src)


# --- round trips ---------------------------------------------------------------------------


def test_pixels_round_trip(pool_name: str) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(5)]
    with bips.Producer(pool_name, capacity=8, shape=(36, 64, 3), dtype="uint8") as prod:
        with bips.Consumer(pool_name) as cons:
            for img in images:
                buf = prod.acquire(timeout=1.0)
                assert buf.numpy().shape == (36, 64, 3) and buf.numpy().flags.writeable
                buf.numpy()[:] = img
                prod.publish(buf)
            for i, img in enumerate(images):
                frame = cons.receive(timeout=1.0)
                assert frame.seq == i
                assert frame.shape == (36, 64, 3) and frame.dtype == np.uint8
                assert frame.nbytes == img.nbytes
                assert np.array_equal(frame.numpy(), img)
                assert np.array_equal(np.asarray(frame), img)
                assert bytes(memoryview(frame)) == img.tobytes()
                frame.release()
                assert frame.released


def test_array_protocol_dtype_and_copy(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, shape=(4,), dtype="uint8") as prod:
        with bips.Consumer(pool_name) as cons:
            publish(prod, 3)
            with cons.receive(timeout=1.0) as frame:
                as_f = np.asarray(frame, dtype=np.float64)
                assert as_f.dtype == np.float64 and list(as_f) == [3.0] * 4
                copied = np.array(frame, copy=True)
                copied[0] = 9  # a copy is writable and independent
                assert frame.numpy()[0] == 3


def test_meta(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=4, buffer_size=16, meta_size=24) as prod:
        assert prod.meta_size == 24
        with bips.Consumer(pool_name) as cons:
            payloads = [b"", b"hello", bytes(range(24)), bytearray(b"\x00\xffx")]
            for m in payloads:
                publish(prod, 1, meta=m)
            for m in payloads:
                with cons.receive(timeout=1.0) as frame:
                    assert frame.meta == bytes(m)
                    assert isinstance(frame.meta, bytes)
            buf = prod.acquire(timeout=1.0)
            with pytest.raises(bips.InvalidArgument, match="meta"):
                prod.publish(buf, meta=b"x" * 25)
            assert not buf.published
            prod.publish(buf, meta=b"ok")  # the buffer is still ours after the refusal
            with cons.receive(timeout=1.0) as frame:
                assert frame.meta == b"ok"


def test_meta_refused_without_meta_size(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=16) as prod:
        buf = prod.acquire(timeout=1.0)
        with pytest.raises(bips.InvalidArgument):
            prod.publish(buf, meta=b"x")
        buf.discard()


def test_timestamp_default_and_explicit(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=4, buffer_size=8) as prod:
        with bips.Consumer(pool_name) as cons:
            before = time.monotonic_ns()
            publish(prod, 0)
            after = time.monotonic_ns()
            publish(prod, 0, timestamp_ns=123456789)
            publish(prod, 0, timestamp_ns=0)
            with cons.receive(timeout=1.0) as f:
                assert before <= f.timestamp_ns <= after
            with cons.receive(timeout=1.0) as f:
                assert f.timestamp_ns == 123456789
            with cons.receive(timeout=1.0) as f:
                assert f.timestamp_ns == 0


def test_set_format_per_frame(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=4, shape=(8, 8), dtype="float32") as prod:
        assert prod.buffer_size == 256
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            buf.set_format((4, 2, 4), "float64")
            assert buf.shape == (4, 2, 4) and buf.dtype == np.float64 and buf.nbytes == 256
            buf.numpy()[...] = np.arange(32).reshape(4, 2, 4)
            prod.publish(buf)

            buf = prod.acquire(timeout=1.0)
            buf.set_format((3,), "int16")
            assert buf.nbytes == 6
            buf.numpy()[:] = [-1, 2, -3]
            prod.publish(buf)

            buf = prod.acquire(timeout=1.0)  # the next buffer has the pool's default format
            assert buf.shape == (8, 8) and buf.dtype == np.float32
            prod.publish(buf)

            buf = prod.acquire(timeout=1.0)
            with pytest.raises(bips.InvalidArgument):
                buf.set_format((9, 8), "float32")
            with pytest.raises(bips.InvalidArgument):
                buf.set_format((8,), "complex128")
            assert buf.shape == (8, 8) and buf.dtype == np.float32  # unchanged by the refusals
            buf.discard()

            with cons.receive(timeout=1.0) as f:
                assert f.shape == (4, 2, 4) and f.dtype == np.float64 and f.nbytes == 256
                assert np.array_equal(f.numpy(), np.arange(32).reshape(4, 2, 4))
            with cons.receive(timeout=1.0) as f:
                assert f.shape == (3,) and f.dtype == np.int16 and f.nbytes == 6
                assert f.numpy().tolist() == [-1, 2, -3]
            with cons.receive(timeout=1.0) as f:
                assert f.shape == (8, 8) and f.dtype == np.float32


def test_nbytes_setter(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=100) as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            with pytest.raises(bips.InvalidArgument):
                buf.nbytes = 101
            buf.nbytes = 10
            assert buf.nbytes == 10
            buf.numpy()[:] = 7
            prod.publish(buf)
            with cons.receive(timeout=1.0) as f:
                assert f.nbytes == 10
                assert f.numpy().shape == (10,) and f.numpy().tolist() == [7] * 10
                assert len(bytes(memoryview(f))) == 10


def test_nbytes_and_shape_stay_consistent(pool_name: str) -> None:
    """Setting nbytes on a shaped buffer makes it a flat byte frame, so what the consumer gets
    is self-consistent: the array never claims more or fewer bytes than the frame has."""
    with bips.Producer(pool_name, capacity=2, shape=(5, 5), dtype="float32") as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            buf.nbytes = 10
            assert buf.shape == (10,) and buf.dtype == np.uint8
            assert buf.numpy().nbytes == 10
            prod.publish(buf)
            with cons.receive(timeout=1.0) as f:
                assert f.nbytes == 10 and f.shape == (10,) and f.dtype == np.uint8
                assert f.numpy().nbytes == f.nbytes
                assert memoryview(f).nbytes == f.nbytes
                assert int(np.prod(f.shape)) * f.dtype.itemsize == f.nbytes


def test_buffer_size_only_pool_is_flat_uint8(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=1000) as prod:
        assert prod.buffer_size == 1000 and prod.dtype == np.uint8
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            arr = buf.numpy()
            assert arr.shape == (1000,) and arr.dtype == np.uint8
            fill(arr, 77)
            prod.publish(buf)
            with cons.receive(timeout=1.0) as f:
                assert f.numpy().shape == (1000,) and f.numpy().dtype == np.uint8
                assert f.nbytes == 1000
                assert check(f.numpy(), 77)


def test_shape_with_larger_buffer_size(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, shape=(2, 3), dtype="uint16", buffer_size=4096) as p:
        assert p.buffer_size == 4096 and p.shape == (2, 3)
        buf = p.acquire(timeout=1.0)
        assert buf.numpy().shape == (2, 3) and buf.nbytes == 12
        buf.set_format((2048,), "uint16")  # the whole buffer is usable
        buf.discard()


# --- handles -------------------------------------------------------------------------------


def test_context_managers_close(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        assert not prod.closed
        with bips.Consumer(pool_name) as cons:
            assert not cons.closed
            publish(prod, 5)
            with cons.receive(timeout=1.0) as frame:
                assert not frame.released
            assert frame.released
            with prod.acquire(timeout=1.0) as buf:
                pass  # leaving the block unpublished gives the buffer back
            assert prod.stats.free == 2
            del buf
        assert cons.closed
        with pytest.raises(bips.Error):
            cons.receive(timeout=0.1)
    assert prod.closed
    assert not os.path.exists(pool_path(pool_name))
    prod.close()  # idempotent
    cons.close()
    with pytest.raises(bips.Error):
        prod.acquire(timeout=0.1)


def test_frame_after_release(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        with bips.Consumer(pool_name) as cons:
            publish(prod, 1)
            frame = cons.receive(timeout=1.0)
            seq = frame.seq
            frame.release()
            frame.release()  # idempotent
            assert frame.released and frame.seq == seq
            with pytest.raises(bips.InvalidArgument):
                frame.numpy()
            with pytest.raises((bips.InvalidArgument, BufferError)):
                memoryview(frame)


def test_buffer_after_publish_and_discard(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        buf = prod.acquire(timeout=1.0)
        prod.publish(buf)
        assert buf.published
        with pytest.raises(bips.Error):
            prod.publish(buf)  # twice
        buf2 = prod.acquire(timeout=1.0)
        buf2.discard()
        buf2.discard()  # idempotent
        with pytest.raises(bips.Error):
            prod.publish(buf2)
        assert prod.stats.published == 1


def test_buffer_of_another_producer_is_refused(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as a:
        with bips.Producer(pool_name + "b", capacity=2, buffer_size=8) as b:
            buf = b.acquire(timeout=1.0)
            with pytest.raises(bips.Error):
                a.publish(buf)
            buf.discard()
            assert a.stats.published == 0 and b.stats.published == 0


def test_iteration_ends_at_end_of_stream(pool_name: str) -> None:
    prod = bips.Producer(pool_name, capacity=8, buffer_size=8)
    with bips.Consumer(pool_name) as cons:
        for i in range(5):
            publish(prod, i)
        prod.close()
        seqs = []
        for frame in cons:
            seqs.append((frame.seq, int(frame.numpy()[0])))
            frame.release()
        assert seqs == [(i, i) for i in range(5)]
        with pytest.raises(bips.ProducerGone):
            cons.receive(timeout=0.1)
        with pytest.raises(bips.ProducerGone):
            cons.try_receive()


def test_try_acquire_and_try_receive(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        with bips.Consumer(pool_name) as cons:
            assert cons.try_receive() is None
            a = prod.try_acquire()
            b = prod.try_acquire()
            assert a is not None and b is not None and a.index != b.index
            assert prod.try_acquire() is None
            prod.publish(a)
            prod.publish(b)
            assert prod.try_acquire() is None  # both queued for the consumer (block)
            f = cons.try_receive()
            assert f is not None and f.seq == 0
            f.release()
            c = prod.try_acquire()
            assert c is not None
            c.discard()


# --- stats ---------------------------------------------------------------------------------


def test_stats_numbers(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=4, buffer_size=8) as prod:
        s = prod.stats
        assert (s.published, s.dropped, s.capacity, s.free, s.in_flight, s.consumers) == (
            0,
            0,
            4,
            4,
            0,
            0,
        )
        assert s._asdict() == {
            "published": 0,
            "dropped": 0,
            "capacity": 4,
            "free": 4,
            "in_flight": 0,
            "consumers": 0,
            "acquire_waits": 0,
            "acquire_wait_ns": 0,
            "spins": 0,
            "sleeps": 0,
        }
        publish(prod, 0)  # nobody attached: not queued anywhere
        assert prod.stats.published == 1 and prod.stats.free == 4
        c1 = bips.Consumer(pool_name)
        c2 = bips.Consumer(pool_name)
        assert prod.stats.consumers == 2
        assert {c1.stats.slot, c2.stats.slot} == {0, 1}
        for i in range(3):
            publish(prod, i)
        assert prod.stats._asdict() == {
            "published": 4,
            "dropped": 0,
            "capacity": 4,
            "free": 1,
            "in_flight": 3,
            "consumers": 2,
            "acquire_waits": 0,
            "acquire_wait_ns": 0,
            "spins": 0,
            "sleeps": 0,
        }
        f = c1.receive(timeout=1.0)
        s1 = c1.stats
        assert (s1.received, s1.dropped, s1.skipped, s1.queued, s1.held, s1.reconnects) == (
            1,
            0,
            0,
            2,
            1,
            0,
        )
        assert c2.stats.queued == 3 and c2.stats.held == 0
        assert set(c1.stats._asdict()) == {
            "received",
            "dropped",
            "skipped",
            "queued",
            "held",
            "slot",
            "reconnects",
            "spins",
            "sleeps",
        }
        f.release()
        assert c1.stats.held == 0
        c2.close()
        assert prod.stats.consumers == 1
        assert prod.stats.free == 2 and prod.stats.in_flight == 2  # c2's queue went back
        c1.close()
        assert prod.stats.free == 4 and prod.stats.in_flight == 0


def test_drop_oldest_counts_drops(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=3, buffer_size=8, policy="drop_oldest") as prod:
        assert prod.policy == "drop_oldest"
        with bips.Consumer(pool_name) as cons:
            assert cons.policy == "drop_oldest"
            for i in range(10):
                publish(prod, i)
            assert prod.stats.published == 10 and prod.stats.dropped == 7
            assert cons.stats.dropped == 7 and cons.stats.queued == 3
            seqs = [cons.receive(timeout=1.0).seq for _ in range(3)]
            assert seqs == [7, 8, 9]


def test_latest_skips_older_frames(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=8, buffer_size=8) as prod:
        with bips.Consumer(pool_name, latest=True) as cons:
            for i in range(5):
                publish(prod, i)
            with cons.receive(timeout=1.0) as f:
                assert f.seq == 4 and f.numpy()[0] == 4
            assert cons.stats.skipped == 4 and cons.stats.received == 1
            assert cons.stats.queued == 0
            assert prod.stats.free == 8  # the skipped frames went back
            publish(prod, 5)
            with cons.receive(timeout=1.0) as f:
                assert f.seq == 5


def test_list_pools_and_pool_info(pool_name: str) -> None:
    with bips.Producer(
        pool_name,
        capacity=3,
        shape=(2, 4),
        dtype="int32",
        meta_size=16,
        policy="drop_oldest",
        max_consumers=5,
        mode=0o640,
    ) as prod:
        with bips.Consumer(pool_name) as c0, bips.Consumer(pool_name, latest=True) as c1:
            publish(prod, 1)
            publish(prod, 2)
            f = c0.receive(timeout=1.0)
            mine = [p for p in bips.list_pools() if p.name == pool_name]
            assert len(mine) == 1
            info = bips.pool_info(pool_name)
            for i in (mine[0], info):
                assert i.error is None
                assert i.name == pool_name
                assert i.producer_alive and not i.closed
                assert i.capacity == 3 and i.buffer_size == 32 and i.meta_size == 16
                assert i.policy == "drop_oldest" and i.max_consumers == 5
                assert i.mode & 0o777 == 0o640 and i.owner == os.getuid()
                assert i.shape == (2, 4) and i.dtype == np.int32
                assert i.consumers == 2 and i.published == 2 and i.dropped == 0
                assert i.producer_pid == os.getpid()
                assert i.file_size == os.stat(pool_path(pool_name)).st_size
                assert abs(i.created_ns - time.time_ns()) < 600e9  # wall clock
            assert info.free == prod.stats.free
            slots = {s.slot: s for s in info.slots}
            assert set(slots) == {c0.stats.slot, c1.stats.slot}
            s0, s1 = slots[c0.stats.slot], slots[c1.stats.slot]
            assert s0.alive and s1.alive and s0.pid == s1.pid == os.getpid()
            assert not s0.latest and s1.latest
            assert (s0.received, s0.queued, s0.held) == (1, 1, 1)
            assert (s1.received, s1.queued, s1.held) == (0, 2, 0)
            assert "alive" in repr(s0)
            f.release()
    assert pool_name not in [p.name for p in bips.list_pools()]
    with pytest.raises(bips.PoolNotFound):
        bips.pool_info(pool_name)


def test_pool_info_after_close_of_consumers(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        bips.Consumer(pool_name).close()
        info = bips.pool_info(pool_name)
        assert info.consumers == 0 and info.slots == [] and info.free == 2
        assert prod.stats.consumers == 0


# --- errors --------------------------------------------------------------------------------


def test_second_live_producer_is_pool_busy(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        with pytest.raises(bips.PoolBusy, match=pool_name):
            bips.Producer(pool_name, capacity=2, buffer_size=8)
        with pytest.raises(bips.PoolBusy):  # even with another geometry
            bips.Producer(pool_name, capacity=4, buffer_size=64)
        publish(prod, 1)  # the first one is untouched
        assert prod.stats.published == 1
    with bips.Producer(pool_name, capacity=2, buffer_size=8):  # free again after close
        pass


def test_second_live_producer_from_another_process_is_pool_busy(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8):
        code = """
try:
    bips.Producer(sys.argv[1], capacity=2, buffer_size=8)
    emit(error=None)
except bips.Error as e:
    emit(error=type(e).__name__)
"""
        with child(code, pool_name) as proc:
            assert read_message(proc, 20.0) == {"error": "PoolBusy"}
            assert reap(proc, 10.0)[0] == 0


def test_too_many_consumers(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8, max_consumers=3) as prod:
        assert prod.max_consumers == 3
        conses = [bips.Consumer(pool_name) for _ in range(3)]
        with pytest.raises(bips.TooManyConsumers, match=pool_name):
            bips.Consumer(pool_name)
        conses.pop().close()
        conses.append(bips.Consumer(pool_name))  # a freed slot is reused
        for c in conses:
            c.close()


def test_timeout_is_timeout_error(pool_name: str) -> None:
    assert issubclass(bips.Timeout, TimeoutError) and issubclass(bips.Timeout, bips.Error)
    with bips.Producer(pool_name, capacity=1, buffer_size=8) as prod:
        with bips.Consumer(pool_name) as cons:
            with pytest.raises(TimeoutError, match=pool_name):
                cons.receive(timeout=0.05)
            publish(prod, 0)
            with pytest.raises(bips.Timeout):
                prod.acquire(timeout=0.05)  # the only buffer is queued (block)
            with pytest.raises(bips.Timeout):
                prod.acquire(timeout=0)


def test_pool_not_found_is_file_not_found(pool_name: str) -> None:
    assert issubclass(bips.PoolNotFound, FileNotFoundError)
    with pytest.raises(FileNotFoundError) as ei:
        bips.Consumer(pool_name)
    assert isinstance(ei.value, bips.PoolNotFound)
    assert ei.value.errno == 2
    assert pool_name in str(ei.value)
    with pytest.raises(bips.PoolNotFound):
        bips.Consumer(pool_name, timeout=0.0)


def test_error_hierarchy() -> None:
    for cls in (
        bips.Timeout,
        bips.PoolNotFound,
        bips.IncompatiblePool,
        bips.CorruptPool,
        bips.ProducerGone,
        bips.PoolBusy,
        bips.TooManyConsumers,
        bips.InvalidArgument,
    ):
        assert issubclass(cls, bips.Error), cls
    assert issubclass(bips.InvalidArgument, ValueError)
    assert issubclass(bips.Error, Exception)


def test_consumer_waits_for_pool_created_by_thread(pool_name: str) -> None:
    made = threading.Event()
    stop = threading.Event()
    errors: list = []

    def produce() -> None:
        try:
            time.sleep(0.3)
            with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
                made.set()
                while prod.stats.consumers == 0 and not stop.is_set():
                    time.sleep(0.01)
                publish(prod, 42)
                stop.wait(5.0)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=produce)
    t.start()
    try:
        t0 = time.monotonic()
        with bips.Consumer(pool_name, timeout=10.0) as cons:
            assert time.monotonic() - t0 >= 0.2
            assert made.is_set()
            with cons.receive(timeout=5.0) as f:
                assert f.numpy()[0] == 42
    finally:
        stop.set()
        t.join(10.0)
    assert not t.is_alive() and errors == []


def test_consumer_waits_for_pool_created_by_subprocess(pool_name: str) -> None:
    code = """
time.sleep(0.3)
with bips.Producer(sys.argv[1], capacity=2, buffer_size=8) as prod:
    while prod.stats.consumers == 0:
        time.sleep(0.01)
    buf = prod.acquire(timeout=5)
    buf.numpy()[:] = 9
    prod.publish(buf)
    while prod.stats.in_flight:
        time.sleep(0.01)
emit(done=True)
"""
    with child(code, pool_name) as proc:
        with bips.Consumer(pool_name, timeout=20.0) as cons:
            with cons.receive(timeout=10.0) as f:
                assert f.numpy().tolist() == [9] * 8
        assert read_message(proc, 10.0) == {"done": True}
        assert reap(proc, 10.0)[0] == 0


def test_consumer_timeout_expires(pool_name: str) -> None:
    """Waiting for a pool that never appears ends in Timeout (a TimeoutError) after the wait."""
    t0 = time.monotonic()
    with pytest.raises(bips.Timeout, match=pool_name):
        bips.Consumer(pool_name, timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 2.0


# --- repr ----------------------------------------------------------------------------------


def test_reprs(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=3, shape=(2, 3), dtype="float32") as prod:
        r = repr(prod)
        assert r.startswith("<bips.Producer") and pool_name in r and "capacity=3" in r
        assert "block" in r
        cons = bips.Consumer(pool_name)
        assert repr(cons).startswith("<bips.Consumer") and pool_name in repr(cons)
        buf = prod.acquire(timeout=1.0)
        assert repr(buf).startswith("<bips.Buffer") and "index=" in repr(buf)
        prod.publish(buf)
        frame = cons.receive(timeout=1.0)
        r = repr(frame)
        assert r.startswith("<bips.Frame") and "seq=0" in r and "float32" in r
        assert "(2,3)" in r.replace(" ", "")
        frame.release()
        repr(frame)  # still works after release
        assert repr(prod.stats).startswith("<bips.ProducerStats") and "published=1" in repr(
            prod.stats
        )
        assert repr(cons.stats).startswith("<bips.ConsumerStats") and "received=1" in repr(
            cons.stats
        )
        info = bips.pool_info(pool_name)
        assert repr(info).startswith("<bips.PoolInfo") and pool_name in repr(info)
        cons.close()
        assert "closed" in repr(cons)
    assert "closed" in repr(prod)


def test_gc_of_unreleased_handles(pool_name: str) -> None:
    """Dropping handles without close() gives everything back (no leak, no crash)."""
    prod = bips.Producer(pool_name, capacity=2, buffer_size=8)
    cons = bips.Consumer(pool_name)
    publish(prod, 1)
    frame = cons.receive(timeout=1.0)
    buf = prod.acquire(timeout=1.0)
    del cons, frame
    gc.collect()
    assert prod.stats.consumers == 0 and prod.stats.free == 1
    del buf
    gc.collect()
    assert prod.stats.free == 2
    del prod
    gc.collect()
    assert not os.path.exists(pool_path(pool_name))


def test_handles_inherited_across_fork_leave_the_parent_alone(pool_name: str) -> None:
    """A child made by fork() that drops (or tries to use) the parent's handles changes nothing
    in the parent's pool: the name stays, the parent's consumer keeps its frame and slot."""
    import warnings

    with bips.Producer(pool_name, capacity=4, buffer_size=64) as prod:
        with bips.Consumer(pool_name) as cons:
            prod.publish(prod.acquire(timeout=1.0))
            frame = cons.receive(timeout=1.0)
            held = frame.numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork in 3.12+
                pid = os.fork()
            if pid == 0:  # child: every use refused, every drop harmless
                code = 0
                try:
                    for call in (lambda: cons.receive(timeout=0.1), lambda: prod.acquire(timeout=0.1)):
                        try:
                            call()
                            code = 2
                        except bips.InvalidArgument:
                            pass
                    del frame, held
                    prod.close()
                    cons.close()
                except BaseException:
                    code = 3
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert os.path.exists(f"/dev/shm/bips.{pool_name}")
            assert cons.stats.held == 1 and held[0] == 0
            prod.publish(prod.acquire(timeout=1.0))
            assert cons.receive(timeout=1.0).seq == 1
            frame.release()


def test_handles_and_frames_support_weak_references(pool_name: str) -> None:
    import weakref

    prod = bips.Producer(pool_name, capacity=2, buffer_size=8)
    cons = bips.Consumer(pool_name)
    buf = prod.acquire(timeout=1.0)
    refs = [weakref.ref(prod), weakref.ref(cons), weakref.ref(buf)]
    prod.publish(buf)
    frame = cons.receive(timeout=1.0)
    refs.append(weakref.ref(frame))
    assert all(r() is not None for r in refs)
    frame.release()
    del buf, frame
    cons.close()
    prod.close()
    del prod, cons
    gc.collect()
    assert all(r() is None for r in refs)
