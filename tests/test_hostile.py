# SPDX-License-Identifier: Apache-2.0
"""A peer that writes into what it can open (issue 8): the producer's views never take a size
back from the segment, stray ownership bits never wedge a pool, a consumer can tell a frame taken
back by a peer, and a truncated pool kills no Python process."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator

import bips
import pytest
from helpers import pool_path

# cpp/src/layout.hpp: offsets in the pool file's PoolHeader and FrameDesc, and the control
# file's ControlHeader; the header tells the rest.
OFF_DESC_OFFSET = 40
DESC_SIZE = 128
DESC_NBYTES, DESC_NDIM, DESC_DTYPE_CODE, DESC_DTYPE_BITS, DESC_SHAPE = 16, 28, 32, 33, 40
CTL_ACTIVE = 64
CTL_STATE_OFFSET = 256  # align_up(sizeof(ControlHeader), 64)
STATE_SIZE = 64


def mapped(path: str) -> Iterator[mmap.mmap]:
    """A read-write mapping of one of a pool's files, as a peer of the same user makes it (the
    pool file has no write bit: such a peer chmods it first)."""
    os.chmod(path, 0o600)
    fd = os.open(path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    try:
        yield m
    finally:
        m.close()


def test_buffer_views_never_read_their_format_back(pool_name: str) -> None:
    """Issue 8, item 2: huge nbytes and shapes written into the descriptor of an acquired buffer
    change neither the producer's view nor what consumers receive."""
    with bips.Producer(pool_name, capacity=2, shape=(4, 8, 3), dtype="uint8") as prod:
        with bips.Consumer(pool_name) as cons:
            for m in mapped(pool_path(pool_name)):
                desc_offset = struct.unpack_from("<Q", m, OFF_DESC_OFFSET)[0]
                buf = prod.acquire(timeout=1.0)
                d = desc_offset + buf.index * DESC_SIZE
                struct.pack_into("<Q", m, d + DESC_NBYTES, 1 << 40)
                struct.pack_into("<I", m, d + DESC_NDIM, 8)
                struct.pack_into("<8q", m, d + DESC_SHAPE, *([1 << 40] * 8))
                struct.pack_into("<BB", m, d + DESC_DTYPE_CODE, 2, 64)
                assert buf.nbytes == 96
                a = buf.numpy()
                assert a.shape == (4, 8, 3) and a.dtype == "uint8"
                a[:] = 9
                prod.publish(buf)
                with cons.receive(timeout=1.0) as f:
                    assert f.shape == (4, 8, 3) and f.nbytes == 96
                    assert int(f.numpy().sum()) == 9 * 96


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
def test_stray_bits_never_wedge_a_pool(pool_name: str, policy: str) -> None:
    """Issue 8, item 4: bits for slots that do not exist or that nobody holds, written into the
    active mask and the ownership words, are reclaimed; the producer never times out, with no
    consumer at all."""
    with bips.Producer(pool_name, capacity=2, buffer_size=8, max_consumers=4, policy=policy) as prod:
        for m in mapped(pool_path(pool_name) + "@ctl"):
            for frame in range(20):
                if frame % 5 == 0:
                    active = struct.unpack_from("<Q", m, CTL_ACTIVE)[0]
                    struct.pack_into("<Q", m, CTL_ACTIVE, active | 1 << 31 | 1 << 3 | 1 << 40)
                    for i in range(2):
                        off = CTL_STATE_OFFSET + i * STATE_SIZE
                        word = struct.unpack_from("<Q", m, off)[0]
                        struct.pack_into("<Q", m, off, word | 1 << 63 | 1 << 3 | 1 << 34)
                buf = prod.acquire(timeout=2.0)  # a Timeout fails the test
                buf.numpy()[:] = frame
                prod.publish(buf)
            assert prod.stats.consumers == 0


def test_frame_taken_back_by_a_peer_is_not_intact(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=1, buffer_size=8) as prod:
        with bips.Consumer(pool_name) as cons:
            buf = prod.acquire(timeout=1.0)
            buf.numpy()[:] = 1
            prod.publish(buf)
            f = cons.receive(timeout=1.0)
            view = f.numpy()
            assert f.intact
            for m in mapped(pool_path(pool_name) + "@ctl"):
                struct.pack_into("<Q", m, CTL_STATE_OFFSET + f.index * STATE_SIZE, 0)
            again = prod.try_acquire()
            assert again is not None
            assert not f.intact
            again.numpy()[:] = 2
            prod.publish(again)
            assert not f.intact and int(view[0]) == 2  # what a peer made possible, detected
            f.release()
            with cons.receive(timeout=1.0) as g:
                assert g.intact
            assert not g.intact  # released


def test_truncated_pool_kills_no_python_process(pool_name: str) -> None:
    """Issue 8, item 3: both files cut to nothing under a live producer, a consumer and their
    numpy views: the views read zeros, the next calls raise CorruptPool, nobody dies."""
    prod = bips.Producer(pool_name, capacity=2, shape=(16,), dtype="uint8")
    cons = bips.Consumer(pool_name)
    buf = prod.acquire(timeout=1.0)
    writable = buf.numpy()
    writable[:] = 3
    prod.publish(buf)
    frame = cons.receive(timeout=1.0)
    view = frame.numpy()
    os.truncate(pool_path(pool_name), 0)
    os.truncate(pool_path(pool_name) + "@ctl", 0)
    assert int(view.sum()) == 0  # zero pages now, not a SIGBUS
    writable[:] = 5  # a private page: reaches nobody
    assert not frame.intact
    with pytest.raises(bips.CorruptPool, match="truncated"):
        for _ in range(5):
            b = prod.acquire(timeout=0.2)
            b.numpy()[:] = 1
            prod.publish(b)
    frame.release()
    with pytest.raises(bips.CorruptPool, match="truncated"):
        cons.receive(timeout=1.0)
    info = [p for p in bips.list_pools() if p.name == pool_name]
    assert info and info[0].error, info  # pread: an error entry, never a signal
    cons.close()
    prod.close()
    # A new producer on the name works.
    with bips.Producer(pool_name, capacity=2, shape=(16,), dtype="uint8") as fresh:
        with bips.Consumer(pool_name) as c2:
            b = fresh.acquire(timeout=1.0)
            b.numpy()[:] = 7
            fresh.publish(b)
            with c2.receive(timeout=1.0) as f2:
                assert int(f2.numpy().sum()) == 7 * 16
