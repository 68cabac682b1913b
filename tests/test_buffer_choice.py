# SPDX-License-Identifier: Apache-2.0
"""Which free buffer a producer hands out: small pools go round-robin (the order consumers guess
the next frame's buffer from); pools larger than a last-level cache take the lowest free buffer,
so they use only as many buffers as are in flight and each is still warm when reused. Neither
ever hands out a buffer a consumer holds or has queued."""

from __future__ import annotations

import bips

BIG = 2 << 20  # 8 buffers of 2 MiB: past the 8 MiB up to which a pool goes round-robin


def publish_indices(prod: bips.Producer, n: int) -> list[int]:
    out = []
    for _ in range(n):
        buf = prod.acquire(timeout=5)
        out.append(buf.index)
        prod.publish(buf)
    return out


def test_small_pool_goes_round_robin(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=4, buffer_size=64) as prod:
        assert publish_indices(prod, 6) == [0, 1, 2, 3, 0, 1]


def test_large_pool_reuses_the_lowest_free_buffer(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=8, buffer_size=BIG) as prod:
        # Nobody receives: each buffer is free again once published, and the same one comes back.
        assert publish_indices(prod, 5) == [0] * 5
        with bips.Consumer(pool_name, timeout=5) as cons:
            assert publish_indices(prod, 3) == [0, 1, 2]  # queued for the consumer
            held = [cons.receive(timeout=5) for _ in range(3)]
            assert [f.index for f in held] == [0, 1, 2]
            held[1].release()
            assert publish_indices(prod, 2) == [1, 3]  # never 0 or 2: held
            held[0].release()
            held[2].release()
            got = [cons.receive(timeout=5) for _ in range(2)]
            assert [f.index for f in got] == [1, 3]
            for f in got:
                f.release()
            assert publish_indices(prod, 1) == [0]


def test_large_drop_oldest_pool_still_takes_back_the_oldest(pool_name: str) -> None:
    prod = bips.Producer(pool_name, capacity=4, buffer_size=4 * BIG, policy="drop_oldest")
    with prod, bips.Consumer(pool_name, timeout=5) as cons:
        # Four frames queued and none received: the next acquire drops the oldest (seq 0).
        assert publish_indices(prod, 4) == [0, 1, 2, 3]
        assert publish_indices(prod, 1) == [0]
        seqs = []
        for _ in range(4):
            frame = cons.receive(timeout=5)
            seqs.append(frame.seq)
            frame.release()
        assert seqs == [1, 2, 3, 4]
        assert cons.stats.dropped == 1
