# SPDX-License-Identifier: Apache-2.0
"""Delivery between real processes: broadcast in order, drop_oldest with a stalled consumer,
attach/detach mid-stream, end of stream, reconnect to a new producer, latest=True.

Frames are 64 bytes: the first 8 hold the seq (little-endian uint64), the rest a pattern
derived from it, so every consumer checks the content of every frame it gets."""

from __future__ import annotations

import random
import signal
import time

import bips
import pytest
from helpers import child, read_message, reap, spawn_python, wait_until

FRAME = 64
PATTERNS = [bytes(((s * 31 + i) & 0xFF) for i in range(8, FRAME)) for s in range(256)]


def payload(seq: int) -> bytes:
    return seq.to_bytes(8, "little") + PATTERNS[seq & 255]


def publish(prod: bips.Producer, seq: int, timeout: float = 10.0) -> None:
    buf = prod.acquire(timeout=timeout)
    memoryview(buf)[:] = payload(seq)
    prod.publish(buf)


# A consumer that checks every frame's content against its seq, and how the seqs arrived.
# argv: name, max_frames (0 = until end of stream), latest (0/1).
# Reports first/last (in arrival order), count, distinct, lo/hi (min/max seq), bad (first seq
# with wrong content), gaps (arrivals that were not prev + 1), disorder (arrivals <= prev) and
# a few samples [prev, seq, buffer index] of such arrivals.
CONSUMER = r"""
name, max_frames, latest = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
pats = [bytes(((s * 31 + i) & 0xFF) for i in range(8, 64)) for s in range(256)]
before = bips.pool_info(name).published
cons = bips.Consumer(name, timeout=10.0, latest=latest)
after = bips.pool_info(name).published
emit(ready=True, before=before, after=after, slot=cons.stats.slot)
first = None; prev = None; count = 0; bad = None; gaps = 0; disorder = 0; gone = False
seen = bytearray(1 << 21); dups = 0; lo = hi = None; samples = []
receive = cons.receive
try:
    while max_frames == 0 or count < max_frames:
        f = receive(timeout=20.0)
        s = f.seq
        data = bytes(memoryview(f))
        f.release()
        if count == 0:
            first = lo = hi = s
        elif s != prev + 1:
            gaps += 1
            if s <= prev:
                disorder += 1
            if len(samples) < 6:
                samples.append([prev, s, f.index])
        if data != s.to_bytes(8, "little") + pats[s & 255] and bad is None:
            bad = s
        if seen[s]:
            dups += 1
        seen[s] = 1
        if s > hi: hi = s
        if s < lo: lo = s
        prev = s; count += 1
except bips.ProducerGone:
    gone = True
emit(first=first, last=prev if count else None, count=count, distinct=count - dups, lo=lo,
     hi=hi, bad=bad, gaps=gaps, disorder=disorder, samples=samples, gone=gone,
     stats=cons.stats._asdict())
cons.close()
"""

def assert_in_order(reports: list) -> None:
    """Every frame arrived exactly once with the right content (asserted by the caller) and in
    publish order."""
    samples = [r["samples"] for r in reports if r["disorder"]]
    assert not samples, f"frames arrived out of order; arrivals [prev, seq, index]: {samples}"


# Attaches, says so, and never receives; killed by the test.
STALLED = r"""
cons = bips.Consumer(sys.argv[1], timeout=10.0)
emit(ready=True, slot=cons.stats.slot)
time.sleep(120)
"""


def start_consumers(prod: bips.Producer, count: int, *args: object) -> list:
    procs = [spawn_python(CONSUMER, prod.name, *args) for _ in range(count)]
    try:
        for p in procs:
            assert read_message(p, 30.0)["ready"]
        assert wait_until(lambda: prod.stats.consumers == count, 10.0)
    except BaseException:
        for p in procs:
            reap(p, 0)
        raise
    return procs


def test_broadcast_block_three_processes(pool_name: str) -> None:
    """Each of 3 consumer processes gets all 100,000 frames, in order, with the right content."""
    n = 100_000
    with bips.Producer(pool_name, capacity=8, buffer_size=FRAME) as prod:
        procs = start_consumers(prod, 3, 0, 0)
        try:
            t0 = time.monotonic()
            for seq in range(n):
                publish(prod, seq)
                if time.monotonic() - t0 > 45.0:
                    pytest.fail(f"only {seq} of {n} frames published in 45 s")
            prod.close()
            elapsed = time.monotonic() - t0
            reports = []
            for p in procs:
                r = read_message(p, 30.0)
                assert r["bad"] is None, r
                # Every frame exactly once.
                assert (r["count"], r["distinct"], r["lo"], r["hi"], r["gone"]) == (
                    n,
                    n,
                    0,
                    n - 1,
                    True,
                ), r
                assert r["stats"]["received"] == n and r["stats"]["dropped"] == 0
                assert reap(p, 10.0)[0] == 0
                reports.append(r)
            print(f"broadcast: {n / elapsed:,.0f} frames/s to 3 processes")
            assert_in_order(reports)
            for r in reports:  # ... and in order
                assert (r["first"], r["last"], r["gaps"]) == (0, n - 1, 0), r
        finally:
            for p in procs:
                reap(p, 0)


def producer_rate(prod: bips.Producer, n: int, first_seq: int) -> float:
    t0 = time.monotonic()
    for seq in range(first_seq, first_seq + n):
        publish(prod, seq, timeout=2.0)  # a producer blocked by the stalled consumer times out
    return n / (time.monotonic() - t0)


def test_drop_oldest_is_not_blocked_by_stalled_consumer(pool_name: str) -> None:
    n = 20_000
    with bips.Producer(pool_name, capacity=8, buffer_size=FRAME, policy="drop_oldest") as prod:
        alone = producer_rate(prod, n, 0)
        with child(STALLED, pool_name) as stalled:
            assert read_message(stalled, 30.0)["ready"]
            assert wait_until(lambda: prod.stats.consumers == 1, 10.0)
            t0 = time.monotonic()
            with_stalled = producer_rate(prod, n, n)
            assert time.monotonic() - t0 < 30.0
            assert prod.stats.published == 2 * n
            assert prod.stats.dropped >= n - 8
            slot = [s for s in bips.pool_info(pool_name).slots if s.alive]
            assert len(slot) == 1 and slot[0].received == 0
            assert slot[0].dropped == prod.stats.dropped and slot[0].queued == 8
            stalled.kill()
        print(
            f"drop_oldest: {alone:,.0f} frames/s alone, {with_stalled:,.0f} with a stalled consumer"
        )


def test_block_is_blocked_by_stalled_consumer(pool_name: str) -> None:
    """The contrast: under block, the slowest consumer holds the producer back."""
    with bips.Producer(pool_name, capacity=4, buffer_size=FRAME) as prod:
        with child(STALLED, pool_name) as stalled:
            assert read_message(stalled, 30.0)["ready"]
            assert wait_until(lambda: prod.stats.consumers == 1, 10.0)
            for seq in range(4):
                publish(prod, seq, timeout=2.0)
            t0 = time.monotonic()
            with pytest.raises(bips.Timeout):
                prod.acquire(timeout=0.3)
            assert 0.25 < time.monotonic() - t0 < 3.0
            assert prod.stats.dropped == 0
            stalled.kill()
            stalled.wait(10.0)
            buf = prod.acquire(timeout=10.0)  # the dead consumer's frames come back
            buf.discard()


def test_attach_and_detach_mid_stream(pool_name: str) -> None:
    """Consumers join at random points, take a random number of frames and leave (close, or exit
    without closing). Each gets a contiguous in-order run starting at its attach point; one
    consumer that stays gets everything; a block producer never stalls on those that left."""
    rng = random.Random(1234)
    joiners = 5
    starts = sorted(rng.sample(range(200, 4000), joiners))
    takes = [rng.randrange(200, 2000) for _ in range(joiners)]
    leaving = r"""
name, take, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
before = bips.pool_info(name).published
cons = bips.Consumer(name, timeout=10.0)
after = bips.pool_info(name).published
seqs = []
for _ in range(take):
    with cons.receive(timeout=20.0) as f:
        seqs.append(f.seq)
        if bytes(memoryview(f))[:8] != f.seq.to_bytes(8, "little"):
            emit(error="bad content", seq=f.seq)
disorder = [[a, b] for a, b in zip(seqs, seqs[1:]) if b <= a][:6]
emit(before=before, after=after, first=min(seqs), last=max(seqs), distinct=len(set(seqs)),
     in_order=seqs == sorted(seqs), disorder=len(disorder), samples=disorder)
if mode == "exit":
    os._exit(0)  # no close(): the producer reclaims the slot when it sweeps
cons.close()
"""
    with bips.Producer(pool_name, capacity=8, buffer_size=FRAME) as prod:
        steady = start_consumers(prod, 1, 0, 0)[0]
        procs: list = []
        try:
            seq = 0
            t0 = time.monotonic()
            while True:
                if len(procs) < joiners and seq == starts[len(procs)]:
                    i = len(procs)
                    procs.append(
                        spawn_python(leaving, pool_name, takes[i], "exit" if i % 2 else "close")
                    )
                publish(prod, seq, timeout=5.0)
                seq += 1
                if (
                    seq % 100 == 0
                    and len(procs) == joiners
                    and all(p.poll() is not None for p in procs)
                ):
                    break
                assert time.monotonic() - t0 < 40.0, "joiners did not finish"
                if seq % 500 == 0:
                    time.sleep(0.01)  # let the joiners start while the stream runs
            total = seq
            prod.close()
            reports = []
            for i, p in enumerate(procs):
                r = read_message(p, 10.0)
                assert "error" not in r, r
                # A contiguous run of seqs, each once, starting where it attached.
                assert r["distinct"] == takes[i] and r["last"] == r["first"] + takes[i] - 1, r
                assert r["before"] <= r["first"] <= r["after"], r
                assert reap(p, 10.0)[0] == 0
                reports.append(r)
            r = read_message(steady, 30.0)
            assert (r["count"], r["distinct"], r["lo"], r["hi"], r["bad"], r["gone"]) == (
                total,
                total,
                0,
                total - 1,
                None,
                True,
            ), r
            assert reap(steady, 10.0)[0] == 0
            assert_in_order(reports + [r])
            assert all(x["in_order"] for x in reports), reports
            assert r["gaps"] == 0, r
        finally:
            for p in [steady, *procs]:
                reap(p, 0)


# A producer in another process: argv name, count, tag, then what to do at the end:
# "close" (end of stream), "exit" (return without close), "kill" (wait to be SIGKILLed).
PRODUCER = r"""
name, count, tag, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
prod = bips.Producer(name, capacity=32, buffer_size=64, meta_size=16)
emit(up=True)
deadline = time.monotonic() + 20
while prod.stats.consumers == 0 and time.monotonic() < deadline:
    time.sleep(0.005)
for seq in range(count):
    buf = prod.acquire(timeout=10.0)
    buf.numpy()[:8] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)
    buf.numpy()[8:] = tag
    prod.publish(buf, meta=b"%d:%d" % (tag, seq))
emit(published=count)
if end == "close":
    prod.close()
elif end == "kill":
    time.sleep(120)
"""


def test_end_of_stream_from_producer_process(pool_name: str) -> None:
    """A producer process publishes 20 frames and closes before the consumer reads any: the
    consumer gets all 20, in order, then ProducerGone."""
    with child(PRODUCER, pool_name, 20, 7, "close") as proc:
        assert read_message(proc, 30.0) == {"up": True}
        with bips.Consumer(pool_name, timeout=10.0) as cons:
            assert read_message(proc, 30.0) == {"published": 20}
            assert reap(proc, 10.0)[0] == 0
            got = []
            for f in cons:
                assert f.numpy()[8] == 7
                got.append((f.seq, int.from_bytes(bytes(f.numpy()[:8]), "little"), f.meta))
                f.release()
            assert got == [(i, i, b"7:%d" % i) for i in range(20)]
            with pytest.raises(bips.ProducerGone):
                cons.receive(timeout=1.0)


def test_end_of_stream_to_consumer_process(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=32, buffer_size=FRAME) as prod:
        procs = start_consumers(prod, 2, 0, 0)
        try:
            for seq in range(25):
                publish(prod, seq)
            prod.close()
            for p in procs:
                r = read_message(p, 30.0)
                assert (r["first"], r["last"], r["count"], r["gone"], r["bad"], r["gaps"]) == (
                    0,
                    24,
                    25,
                    True,
                    None,
                    0,
                ), r
                assert reap(p, 10.0)[0] == 0
        finally:
            for p in procs:
                reap(p, 0)


@pytest.mark.parametrize("end", ["close", "exit", "kill"])
def test_reconnect_to_new_producer(pool_name: str, end: str) -> None:
    """Producer A publishes, then closes / exits / is killed; producer B takes over the name;
    a Consumer(reconnect=True) gets A's frames then B's without being recreated."""
    a = spawn_python(PRODUCER, pool_name, 5, 1, end)
    b = None
    try:
        assert read_message(a, 30.0) == {"up": True}
        with bips.Consumer(pool_name, timeout=10.0, reconnect=True) as cons:
            got = []
            for _ in range(5):
                with cons.receive(timeout=10.0) as f:
                    got.append(f.meta)
            assert read_message(a, 10.0) == {"published": 5}
            if end == "kill":
                a.send_signal(signal.SIGKILL)
            assert reap(a, 10.0)[0] == (-signal.SIGKILL if end == "kill" else 0)
            b = spawn_python(PRODUCER, pool_name, 5, 2, "close")
            assert read_message(b, 30.0) == {"up": True}
            for _ in range(5):
                with cons.receive(timeout=10.0) as f:
                    got.append(f.meta)
                    assert f.numpy()[8] == 2
            assert got == [b"1:%d" % i for i in range(5)] + [b"2:%d" % i for i in range(5)]
            assert cons.stats.reconnects == 1
            assert cons.stats.received == 10
            assert read_message(b, 10.0) == {"published": 5}
            assert reap(b, 10.0)[0] == 0
    finally:
        reap(a, 0)
        if b is not None:
            reap(b, 0)


def test_latest_in_another_process(pool_name: str) -> None:
    code = r"""
name = sys.argv[1]
with bips.Consumer(name, timeout=10.0, latest=True) as cons:
    emit(ready=True)
    deadline = time.monotonic() + 20
    while bips.pool_info(name).published < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    with cons.receive(timeout=10.0) as f:
        emit(seq=f.seq, head=int.from_bytes(bytes(memoryview(f))[:8], "little"),
             stats=cons.stats._asdict())
    with cons.receive(timeout=10.0) as f:
        emit(seq=f.seq, stats=cons.stats._asdict())
    try:
        cons.receive(timeout=10.0)
    except bips.ProducerGone:
        emit(gone=True)
"""
    with bips.Producer(pool_name, capacity=8, buffer_size=FRAME) as prod:
        with child(code, pool_name) as proc:
            assert read_message(proc, 30.0) == {"ready": True}
            assert wait_until(lambda: prod.stats.consumers == 1, 10.0)
            for seq in range(5):
                publish(prod, seq)
            r = read_message(proc, 30.0)
            assert r["seq"] == 4 and r["head"] == 4
            assert r["stats"]["skipped"] == 4 and r["stats"]["received"] == 1
            assert wait_until(lambda: prod.stats.free == 8, 5.0)  # skipped frames came back
            publish(prod, 5)
            r = read_message(proc, 30.0)
            assert r["seq"] == 5 and r["stats"]["skipped"] == 4
            prod.close()
            assert read_message(proc, 30.0) == {"gone": True}
            assert reap(proc, 10.0)[0] == 0


def test_latest_consumer_under_load(pool_name: str) -> None:
    """A latest=True consumer process sees strictly increasing seqs with intact content, ends
    on the last frame, and received + skipped accounts for every frame."""
    n = 5000
    with bips.Producer(pool_name, capacity=8, buffer_size=FRAME) as prod:
        proc = start_consumers(prod, 1, 0, 1)[0]
        try:
            for seq in range(n):
                publish(prod, seq)
            prod.close()
            r = read_message(proc, 30.0)
            assert r["bad"] is None and r["gone"], r
            assert r["last"] == r["hi"] == n - 1 and r["disorder"] == 0, r
            s = r["stats"]
            assert s["received"] == r["count"] and s["received"] + s["skipped"] == n, r
            assert s["dropped"] == 0
            assert reap(proc, 10.0)[0] == 0
        finally:
            reap(proc, 0)
