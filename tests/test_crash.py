# SPDX-License-Identifier: Apache-2.0
"""Crash safety: SIGKILL any party at any moment; the survivors lose neither buffers nor time.

Children are fork()ed from this process, which has bips imported but no pool open at fork
time, so spawning costs milliseconds. They report through int64 cells in anonymous shared
memory (``Board``) and JSON lines on their stdout (a pipe). Every child has hard limits
(SIGALRM after ``CHILD_ALARM_S``, SIGKILL when this process dies) and the ``spawn`` fixture
kills and reaps whatever is left, also when a test fails.

bips promises (and these tests measure) that a death is noticed within about a second: the
producer sweeps dead consumers every 100 ms while it waits in acquire(), consumers check the
producer lock every 100 ms while they wait in receive().
"""

from __future__ import annotations

import collections
import ctypes
import json
import mmap
import os
import random
import select
import signal
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import bips
import numpy as np
import pytest
from helpers import check, fill, pool_path

DETECT_S = 1.0  # how soon a death must be noticed (the documented bound)
CHILD_ALARM_S = 60  # no child outlives this, whatever happens to the test
FRAME = (16,)  # tiny frames: the time goes into acquire/publish/receive/release, not memcpy

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1

# Detection times measured by this module, printed by each test (run pytest -s to see them).
MEASURED: dict[str, list[float]] = collections.defaultdict(list)


def _measured(what: str, seconds: float) -> None:
    MEASURED[what].append(seconds)


def _summary(what: str) -> str:
    xs = MEASURED[what]
    return (
        f"{what}: n={len(xs)} min={min(xs) * 1e3:.1f} ms "
        f"median={statistics.median(xs) * 1e3:.1f} ms max={max(xs) * 1e3:.1f} ms"
    )


# --- private process helpers -----------------------------------------------------------------


class Board:
    """int64 cells in anonymous shared memory that fork()ed children inherit. Each cell has a
    single writer; aligned 8-byte stores are atomic on every platform bips supports."""

    def __init__(self, cells: int = 256) -> None:
        self._mm = mmap.mmap(-1, cells * 8)
        self.cells = np.frombuffer(self._mm, dtype=np.int64)

    def __getitem__(self, i: int) -> int:
        return int(self.cells[i])

    def __setitem__(self, i: int, value: int) -> None:
        self.cells[i] = value

    def add(self, i: int, n: int = 1) -> None:
        self.cells[i] += n

    def clear(self) -> None:
        self.cells[:] = 0


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """Polls `predicate` every 0.5 ms; returns the seconds it took, fails the test on timeout."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.0005)
    return time.monotonic() - t0


def report(obj: Any) -> None:
    """In a child: one JSON line on stdout (a pipe to the test)."""
    os.write(1, (json.dumps(obj) + "\n").encode())


class Child:
    """A fork()ed child. Killed only while unreaped, so its pid cannot belong to anybody else."""

    def __init__(self, pid: int, fd: int, label: str) -> None:
        self.pid = pid
        self.label = label
        self.status: int | None = None
        self._fd: int | None = fd
        self._buf = b""

    def poll(self) -> bool:
        """True once the child has exited (and is reaped)."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is not None

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float = 10.0) -> int:
        """Waits for the exit and returns the exit code (negative: killed by that signal). A child
        still running after `timeout` is killed and the test fails."""
        deadline = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > deadline:
                self.kill()
                _, self.status = os.waitpid(self.pid, 0)
                raise AssertionError(f"{self.label} did not exit within {timeout} s")
            time.sleep(0.0005)
        assert self.status is not None
        return os.waitstatus_to_exitcode(self.status)

    def read_json(self, timeout: float = 10.0) -> Any:
        """The next JSON line the child wrote with report()."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            assert self._fd is not None
            if left <= 0:
                raise AssertionError(f"{self.label} reported nothing within {timeout} s")
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    code = self.wait(5.0)
                    raise AssertionError(f"{self.label} exited ({code}) without reporting")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _child_main(target: Callable[..., None], args: Any, wfd: int, parent: int) -> None:
    code = 70
    try:
        os.dup2(wfd, 1)
        os.close(wfd)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.alarm(CHILD_ALARM_S)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the test died before prctl took effect
            return
        random.seed()
        target(*args)
        code = 0
    except BaseException:  # noqa: BLE001 - nothing may unwind into the copy of pytest
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001, S110 - stderr may be gone; exit regardless
            pass
    finally:
        os._exit(code)


class Spawner:
    """fork()s children running a Python function; kills and reaps all of them at the end."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def __call__(self, target: Callable[..., None], *args: Any, label: str = "child") -> Child:
        rfd, wfd = os.pipe()
        parent = os.getpid()
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork() with threads around
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            os.close(rfd)
            _child_main(target, args, wfd, parent)
        os.close(wfd)
        c = Child(pid, rfd, label)
        self.children.append(c)
        return c

    def forget_reaped(self) -> None:
        for c in self.children:
            if c.status is not None:
                c.close()
        self.children = [c for c in self.children if c.status is None]

    def reap_all(self) -> None:
        for c in self.children:
            c.kill()
        for c in self.children:
            if c.status is None:
                _, c.status = os.waitpid(c.pid, 0)
            c.close()
        self.children = []


@pytest.fixture
def spawn(pool_name: str) -> Any:
    s = Spawner()
    try:
        yield s
    finally:
        s.reap_all()
        # A test that failed half-way may have killed a producer; do not let its segment fail
        # the leak check too (a test that passes has removed everything itself).
        try:
            bips.remove_stale_pool(pool_name)
        except bips.Error:
            pass


def _publish(prod: bips.Producer, seq: int, timeout: float = 5.0) -> None:
    buf = prod.acquire(timeout=timeout)
    fill(buf.numpy(), seq)
    prod.publish(buf)


def _frame_ok(frame: bips.Frame) -> bool:
    return check(frame.numpy(), frame.seq)


def _slot_of(name: str, pid: int) -> Any:
    for s in bips.pool_info(name).slots:
        if s.pid == pid:
            return s
    return None


def _sleep_forever() -> None:
    while True:
        time.sleep(1.0)


# --- a killed consumer gives its buffers back ------------------------------------------------

# Board cells of the single-victim tests.
_HOLDING, _BLOCKING, _KILL_T, _STOP, _GO, _DRAIN = 0, 1, 2, 3, 4, 5


def _hold_frames(name: str, n: int, board: Board) -> None:
    """Attaches, receives and keeps `n` frames, then waits to be killed (the rest stay queued)."""
    cons = bips.Consumer(name, timeout=10.0)
    held = [cons.receive(timeout=10.0) for _ in range(n)]
    assert all(_frame_ok(f) for f in held)
    board[_HOLDING] = 1
    _sleep_forever()


@pytest.mark.parametrize("held, queued", [(3, 5), (8, 0), (0, 8)], ids=["mixed", "held", "queued"])
def test_killed_consumer_returns_held_and_queued_buffers_under_block(
    pool_name: str, spawn: Spawner, held: int, queued: int
) -> None:
    cap = held + queued
    board = Board()
    victim = spawn(_hold_frames, pool_name, held, board, label="victim")  # no pool open here yet
    with bips.Producer(pool_name, capacity=cap, shape=FRAME, policy="block") as prod:
        wait_for(lambda: prod.stats.consumers == 1, 10.0, "the victim to attach")
        with bips.Consumer(pool_name) as survivor:
            for i in range(cap):
                _publish(prod, i)
                with survivor.receive(timeout=5.0) as f:
                    assert f.seq == i and _frame_ok(f)
            wait_for(lambda: board[_HOLDING], 10.0, "the victim to hold its frames")
            slot = _slot_of(pool_name, victim.pid)
            assert slot is not None and slot.alive
            assert (slot.held, slot.queued) == (held, queued)
            assert prod.stats.free == 0
            with pytest.raises(bips.Timeout):
                prod.acquire(timeout=0.2)  # blocked: the victim still owns every buffer

            t0 = time.monotonic()
            victim.kill()
            buf = prod.acquire(timeout=5.0)
            back = time.monotonic() - t0
            # Every buffer came back at once, not one by one.
            assert prod.stats.free == cap - 1
            fill(buf.numpy(), cap)
            prod.publish(buf)
            with survivor.receive(timeout=5.0) as f:
                assert f.seq == cap and _frame_ok(f)
            # It keeps going, and the survivor misses nothing.
            for i in range(cap + 1, 4 * cap):
                _publish(prod, i, timeout=1.0)
                with survivor.receive(timeout=1.0) as f:
                    assert f.seq == i and _frame_ok(f)
            st = prod.stats
            assert (st.free, st.in_flight, st.consumers) == (cap, 0, 1)
            info = bips.pool_info(pool_name)
            assert [(s.alive, s.held, s.queued) for s in info.slots] == [(True, 0, 0)]
    assert victim.wait() == -signal.SIGKILL
    _measured("consumer SIGKILL -> blocked producer resumes (block)", back)
    print(_summary("consumer SIGKILL -> blocked producer resumes (block)"))
    assert back < DETECT_S


def _drop_oldest_producer(name: str, cap: int, board: Board) -> None:
    """Publishes `cap` frames that the victim keeps, blocks in acquire(), reports how soon after
    the kill it got a buffer."""
    prod = bips.Producer(name, capacity=cap, shape=FRAME, policy="drop_oldest")
    wait_for(lambda: prod.stats.consumers == 1, 10.0, "the victim to attach")
    for i in range(cap):
        _publish(prod, i)
    wait_for(lambda: board[_HOLDING], 10.0, "the victim to hold every frame")
    r: dict[str, Any] = {"free_before": prod.stats.free}
    try:
        prod.acquire(timeout=0.2).discard()
        r["blocked"] = False
    except bips.Timeout:
        r["blocked"] = True
    board[_BLOCKING] = 1
    buf = prod.acquire(timeout=10.0)
    r["resumed_s"] = (time.monotonic_ns() - board[_KILL_T]) / 1e9
    r["free_after"] = prod.stats.free
    fill(buf.numpy(), cap)
    prod.publish(buf)
    for i in range(cap + 1, 4 * cap):
        _publish(prod, i, timeout=1.0)
    st = prod.stats
    r.update(free_idle=st.free, consumers=st.consumers, published=st.published)
    report(r)
    wait_for(lambda: board[_STOP], 10.0, "the test to finish")
    prod.close()


def test_killed_consumer_holding_everything_unblocks_drop_oldest(
    pool_name: str, spawn: Spawner
) -> None:
    cap = 4
    board = Board()
    victim = spawn(_hold_frames, pool_name, cap, board, label="victim")
    producer = spawn(_drop_oldest_producer, pool_name, cap, board, label="producer")
    wait_for(lambda: board[_BLOCKING], 10.0, "the producer to block")
    time.sleep(0.05)  # let it fall asleep in acquire()
    board[_KILL_T] = time.monotonic_ns()
    victim.kill()
    r = producer.read_json(10.0)
    board[_STOP] = 1
    assert producer.wait() == 0
    assert victim.wait() == -signal.SIGKILL
    assert r["free_before"] == 0 and r["blocked"], r  # drop_oldest never takes a held frame
    assert r["free_after"] == cap - 1, r
    assert (r["free_idle"], r["consumers"], r["published"]) == (cap, 0, 4 * cap), r
    _measured("consumer SIGKILL -> blocked producer resumes (drop_oldest)", r["resumed_s"])
    print(_summary("consumer SIGKILL -> blocked producer resumes (drop_oldest)"))
    assert 0 < r["resumed_s"] < DETECT_S


# --- a killed producer is noticed; a new one takes the name over -----------------------------

# Board cells: per party, +0 ready/attached, +1 frames so far, +2 time spent creating the pool
# (ns), +3 when it was ready (monotonic ns).
_P1, _P2, _A, _B, _C = 10, 20, 30, 40, 50


def _gen_fill(arr: Any, gen: int, seq: int) -> None:
    fill(arr, seq)
    arr[-1] = gen  # which producer wrote it (fill only depends on seq)


def _gen_of(frame: bips.Frame) -> tuple[int, bool]:
    a = frame.numpy()
    gen = int(a[-1])
    body = np.array(a)
    body[-1] = 0
    want = np.empty_like(body)
    fill(want, frame.seq)
    want[-1] = 0
    return gen, bool(np.array_equal(body, want))


def _generation(name: str, gen: int, n_first: int, board: Board, base: int) -> None:
    """Producer number `gen`: 1 publishes `n_first` frames when told and waits for its SIGKILL;
    2 takes the name over right after that and streams until told to stop."""
    t0 = time.monotonic_ns()
    prod = bips.Producer(name, capacity=8, shape=FRAME, policy="block")
    board[base + 2] = time.monotonic_ns() - t0
    board[base + 3] = time.monotonic_ns()
    board[base] = 1
    if gen == 1:
        wait_for(lambda: board[_GO], 10.0, "the go signal")
        for seq in range(n_first):
            buf = prod.acquire(timeout=5.0)
            _gen_fill(buf.numpy(), gen, seq)
            prod.publish(buf)
        board[base + 1] = n_first
        _sleep_forever()
    seq = 0
    while not board[_STOP]:
        try:
            buf = prod.acquire(timeout=0.05)
        except bips.Timeout:
            continue
        _gen_fill(buf.numpy(), gen, seq)
        prod.publish(buf)
        seq += 1
        board[base + 1] = seq
    prod.close()


def _until_gone(name: str, board: Board, base: int, wait_cell: int | None) -> None:
    """Receives until ProducerGone; reports the frames and how long after the kill it came. With
    `wait_cell`, it only starts receiving once that cell is set (after the kill)."""
    cons = bips.Consumer(name, timeout=10.0)
    board[base] = 1
    if wait_cell is not None:
        wait_for(lambda: board[wait_cell], 10.0, "the drain signal")
    frames = []
    try:
        while True:
            with cons.receive(timeout=10.0) as f:
                frames.append([f.seq, *_gen_of(f)])
            board[base + 1] = len(frames)
    except bips.ProducerGone:
        gone_ns = time.monotonic_ns()
    report({"frames": frames, "gone_after_s": (gone_ns - board[_KILL_T]) / 1e9})
    cons.close()


def _follower(name: str, board: Board, base: int, want_gen2: int) -> None:
    """Consumer(reconnect=True): receives the first producer's frames, then the new producer's."""
    cons = bips.Consumer(name, timeout=10.0, reconnect=True)
    board[base] = 1
    frames: list[Any] = []
    deadline = time.monotonic() + 20.0
    while sum(1 for f in frames if f[1] == 2) < want_gen2 and time.monotonic() < deadline:
        try:
            with cons.receive(timeout=0.5) as f:
                frames.append([f.seq, *_gen_of(f)])
        except bips.Timeout:
            continue
        board[base + 1] = len(frames)
    st = cons.stats
    report({"frames": frames, "reconnects": st.reconnects, "received": st.received})
    cons.close()


def test_killed_producer_is_gone_after_the_queue_and_a_new_one_takes_over(
    pool_name: str, spawn: Spawner
) -> None:
    board = Board()
    n = 5
    live = spawn(_until_gone, pool_name, board, _A, None, label="receiving consumer")
    drain = spawn(_until_gone, pool_name, board, _B, _DRAIN, label="draining consumer")
    follow = spawn(_follower, pool_name, board, _C, 3, label="reconnecting consumer")
    first = spawn(_generation, pool_name, 1, n, board, _P1, label="first producer")
    wait_for(lambda: board[_P1] and board[_A] and board[_B] and board[_C], 10.0, "everyone")
    board[_GO] = 1
    wait_for(lambda: board[_A + 1] == n and board[_C + 1] == n, 10.0, "the first frames")
    info = bips.pool_info(pool_name)
    assert info.consumers == 3 and info.producer_alive
    board[_KILL_T] = time.monotonic_ns()
    first.kill()
    assert first.wait() == -signal.SIGKILL
    # The name is usable again at once: no PoolBusy, no waiting for consumers to leave.
    second = spawn(_generation, pool_name, 2, 0, board, _P2, label="second producer")
    board[_DRAIN] = 1
    ra = live.read_json(10.0)
    rb = drain.read_json(10.0)
    wait_for(lambda: board[_P2] or second.poll(), 10.0, "the second producer")
    taken_over_s = (board[_P2 + 3] - board[_KILL_T]) / 1e9
    rc = follow.read_json(20.0)
    board[_STOP] = 1
    assert second.wait() == 0
    for c in (live, drain, follow):
        assert c.wait() == 0, c.label
    bips.remove_stale_pool(pool_name)  # nothing should be left; harmless if so

    gen1 = [[seq, 1, True] for seq in range(n)]
    assert ra["frames"] == gen1  # everything, in order, intact
    assert rb["frames"] == gen1  # what was queued at the kill is still delivered
    for r in (ra, rb):
        _measured("producer SIGKILL -> ProducerGone in another process", r["gone_after_s"])
    print(_summary("producer SIGKILL -> ProducerGone in another process"))
    print(
        f"second producer: constructor took {board[_P2 + 2] / 1e6:.1f} ms, ready "
        f"{taken_over_s * 1e3:.1f} ms after the kill (fork included)"
    )
    assert 0 < ra["gone_after_s"] < DETECT_S
    assert 0 < rb["gone_after_s"] < DETECT_S
    assert 0 < taken_over_s < DETECT_S
    assert rc["frames"][:n] == gen1
    later = rc["frames"][n:]
    assert len(later) >= 3 and all(gen == 2 and ok for _, gen, ok in later), rc
    assert [s for s, _, _ in later] == list(range(later[0][0], later[0][0] + len(later)))
    assert rc["reconnects"] == 1 and rc["received"] == len(rc["frames"])


# --- the kill loop ---------------------------------------------------------------------------

# Board cells (besides _STOP): the producer's, then one block per consumer.
_L_P_READY, _L_P_PUB = 10, 11
_L_CONS = (16, 32)
_RDY, _RECV, _GONE, _BAD, _ORDER = 0, 1, 2, 3, 4


def _loop_producer(name: str, policy: str, cap: int, board: Board) -> None:
    prod = bips.Producer(name, capacity=cap, shape=FRAME, policy=policy)
    board[_L_P_READY] = 1
    seq = 0
    while not board[_STOP]:
        try:
            buf = prod.acquire(timeout=0.02)
        except bips.Timeout:
            continue
        fill(buf.numpy(), seq)
        prod.publish(buf)
        seq += 1
        board[_L_P_PUB] = seq
    prod.close()


def _loop_consumer(name: str, base: int, keep: int, block: bool, board: Board) -> None:
    cons = bips.Consumer(name, timeout=5.0)
    board[base + _RDY] = 1
    held: collections.deque[bips.Frame] = collections.deque()
    last = -1
    try:
        while not board[_STOP]:
            try:
                f = cons.receive(timeout=0.02)
            except bips.Timeout:
                continue
            if not _frame_ok(f):
                board.add(base + _BAD)
            if last >= 0 and (f.seq != last + 1 if block else f.seq <= last):
                board.add(base + _ORDER)
            last = f.seq
            board.add(base + _RECV)
            held.append(f)
            while len(held) > keep:
                held.popleft().release()
    except bips.ProducerGone:
        board[base + _GONE] = time.monotonic_ns()
        while not board[_STOP]:
            time.sleep(0.001)
    while held:
        held.popleft().release()
    cons.close()


def _kill_round(
    name: str, rng: random.Random, board: Board, spawn: Spawner, ctx: str, tally: Any
) -> None:
    """One round of the kill loop (see test_kill_loop)."""
    path = pool_path(name)
    policy = rng.choice(["block", "drop_oldest"])
    cap = rng.choice([2, 3, 4, 6])
    tally["takeover"] += os.path.exists(path)
    board.clear()
    prod = spawn(_loop_producer, name, policy, cap, board, label=f"producer, {ctx}")
    wait_for(lambda: board[_L_P_READY] or prod.poll(), 5.0, f"the producer, {ctx}")
    assert board[_L_P_READY], f"{ctx}: the producer could not start (exit {prod.wait()})"
    block = policy == "block"
    cons = [
        spawn(_loop_consumer, name, b, rng.randint(0, 1), block, board, label=f"consumer, {ctx}")
        for b in _L_CONS
    ]
    wait_for(
        lambda: all(board[b + _RDY] or c.poll() for b, c in zip(_L_CONS, cons)),
        5.0,
        f"the consumers, {ctx}",
    )
    assert all(board[b + _RDY] for b in _L_CONS), f"{ctx}: a consumer could not attach"

    time.sleep(rng.uniform(0.0, 0.020))  # everyone at full speed
    procs = [prod, *cons]
    victim = rng.randrange(3)
    p0 = board[_L_P_PUB]
    r0 = [board[b + _RECV] for b in _L_CONS]
    kill_ns = time.monotonic_ns()
    procs[victim].kill()
    if victim == 0:
        tally["killed producer"] += 1
        wait_for(
            lambda: all(board[b + _GONE] for b in _L_CONS),
            5.0,
            f"ProducerGone in both consumers, {ctx}",
        )
        took = (max(board[b + _GONE] for b in _L_CONS) - kill_ns) / 1e9
        _measured("kill loop: producer SIGKILL -> ProducerGone", took)
    else:
        tally["killed consumer"] += 1
        s = 2 - victim  # the surviving consumer
        sb = _L_CONS[s]
        took = wait_for(
            lambda: board[_L_P_PUB] >= p0 + 2 * cap + 2 and board[sb + _RECV] >= r0[s] + cap + 1,
            5.0,
            f"the producer and the surviving consumer to go on, {ctx}",
        )
        _measured(f"kill loop: consumer SIGKILL -> producer and survivor go on ({policy})", took)
    assert took < DETECT_S, f"{ctx}: took {took:.3f} s"

    # Stop the others: each either cleanly or by SIGKILL.
    clean = [i != victim and rng.random() < 0.5 for i in range(3)]
    for i, p in enumerate(procs):
        if i != victim and not clean[i]:
            p.kill()
    board[_STOP] = 1
    for i, p in enumerate(procs):
        code = p.wait(5.0)
        assert code == (0 if clean[i] else -signal.SIGKILL), f"{p.label}: exit {code}"
    for b in _L_CONS:
        assert board[b + _BAD] == 0, f"{ctx}: a consumer saw a corrupted frame"
        assert board[b + _ORDER] == 0, f"{ctx}: a consumer saw frames out of order"
    spawn.forget_reaped()

    # No buffer lost: whatever is left, once its dead are reclaimed, is entirely free.
    if not os.path.exists(path):
        return
    # A dead pool goes away with its last user, if that user detaches cleanly.
    assert not (victim == 0 and clean[1] and clean[2]), f"{ctx}: the last consumer left it behind"
    try:
        bips.reclaim_dead_consumers(name)
        info = bips.pool_info(name)
    except bips.PoolNotFound:
        return
    assert not info.producer_alive, ctx
    assert info.free == info.capacity, f"{ctx}: {info.free}/{info.capacity} free, {info}"
    assert not any(s.alive or s.held or s.queued for s in info.slots), f"{ctx}: {info.slots}"


@pytest.mark.slow
def test_kill_loop(pool_name: str, spawn: Spawner) -> None:
    """A producer and 2 consumers on one name, round after round (each round's producer takes
    over what the last one left): SIGKILL one of them at a random moment, check that the
    survivors go on within DETECT_S, stop or kill the rest, check that no buffer is lost."""
    rounds = int(os.environ.get("BIPS_KILL_ROUNDS", "200"))
    seed = int(os.environ.get("BIPS_KILL_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    board = Board()
    tally: collections.Counter[str] = collections.Counter()
    t_start = time.monotonic()
    for rnd in range(rounds):
        _kill_round(pool_name, rng, board, spawn, f"round {rnd} (BIPS_KILL_SEED={seed})", tally)
    bips.remove_stale_pool(pool_name)
    elapsed = time.monotonic() - t_start
    print(f"\nkill loop: {rounds} rounds in {elapsed:.1f} s, seed {seed}, {dict(tally)}")
    for what in sorted(MEASURED):
        if what.startswith("kill loop"):
            print(_summary(what))
    assert tally["killed producer"] and tally["killed consumer"] and tally["takeover"]


# --- crash during attach/detach churn ---------------------------------------------------------

# Board cells (besides _STOP).
_CH_READY, _CH_PUB, _CH_GAP, _CH_PAUSE, _CH_BAD, _CH_PAUSED = 20, 21, 22, 23, 24, 25
_W_RECV, _W_ORDER, _W_BAD, _W_READY = 30, 31, 32, 33


def _churn_producer(name: str, cap: int, board: Board) -> None:
    prod = bips.Producer(name, capacity=cap, shape=FRAME, policy="block")
    board[_CH_READY] = 1
    wait_for(lambda: board[_W_READY], 10.0, "the witness")  # it must see frame 0 on
    seq = 0
    last = time.monotonic_ns()
    while not board[_STOP]:
        if board[_CH_PAUSE]:
            board[_CH_PAUSED] = 1
            time.sleep(0.001)
            last = time.monotonic_ns()
            continue
        try:
            buf = prod.acquire(timeout=0.05)
        except bips.Timeout:
            continue
        now = time.monotonic_ns()
        board[_CH_GAP] = max(board[_CH_GAP], now - last)
        last = now
        fill(buf.numpy(), seq)
        prod.publish(buf)
        seq += 1
        board[_CH_PUB] = seq
    prod.close()


def _witness(name: str, board: Board) -> None:
    """Stays attached through the churn; under block it must see every frame, in order."""
    cons = bips.Consumer(name, timeout=10.0)
    board[_W_READY] = 1
    last = -1
    try:
        while True:
            try:
                f = cons.receive(timeout=0.05)
            except bips.Timeout:
                continue
            with f:
                if not _frame_ok(f):
                    board.add(_W_BAD)
                if last >= 0 and f.seq != last + 1:
                    board.add(_W_ORDER)
                last = f.seq
            board.add(_W_RECV)
    except bips.ProducerGone:
        pass
    cons.close()


def _churner(name: str, n: int, keep: int, finish: str, board: Board) -> None:
    cons = bips.Consumer(name, timeout=5.0)
    held: list[bips.Frame] = []
    for _ in range(n):
        f = cons.receive(timeout=5.0)
        if not _frame_ok(f):
            board[_CH_BAD] = 1
        held.append(f)
        while len(held) > keep:
            held.pop(0).release()
    if finish == "linger":  # holds its frames (queue filling up) until killed
        _sleep_forever()
    for f in held:
        f.release()
    held.clear()
    cons.close()


@pytest.mark.slow
def test_killed_consumers_during_attach_detach_churn_never_stall_the_producer(
    pool_name: str, spawn: Spawner
) -> None:
    seed = int(os.environ.get("BIPS_CHURN_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    duration = float(os.environ.get("BIPS_CHURN_SECONDS", "4"))
    cap = 4
    board = Board()
    producer = spawn(_churn_producer, pool_name, cap, board, label="producer")
    wait_for(lambda: board[_CH_READY], 10.0, "the producer")
    witness = spawn(_witness, pool_name, board, label="witness")
    wait_for(lambda: board[_W_READY], 10.0, "the witness")
    tally: collections.Counter[str] = collections.Counter()
    live: list[tuple[Child, float]] = []
    t_end = time.monotonic() + duration
    while time.monotonic() < t_end:
        for c, _ in live:
            if c.poll():
                code = c.wait()
                assert code in (0, -signal.SIGKILL), f"{c.label}: exit {code} (seed {seed})"
                tally["exited" if code == 0 else "killed"] += 1
        live = [(c, t) for c, t in live if c.status is None]
        spawn.forget_reaped()
        while len(live) < 3:
            plan = (rng.randint(0, 8), rng.randint(0, 2), rng.choice(["close", "linger"]))
            c = spawn(_churner, pool_name, *plan, board, label=f"churner {plan}")
            live.append((c, time.monotonic() + rng.uniform(0.0, 0.04)))
            tally["spawned"] += 1
        for c, kill_at in live:
            if time.monotonic() >= kill_at:
                c.kill()
        time.sleep(0.001)
    for c, _ in live:
        c.kill()
        c.wait()
    spawn.forget_reaped()
    gap = board[_CH_GAP] / 1e9

    # Idle: once the witness has drained, every buffer is free and only the witness is left.
    board[_CH_PAUSE] = 1
    wait_for(lambda: board[_CH_PAUSED], 5.0, "the producer to pause")
    published = board[_CH_PUB]
    wait_for(lambda: board[_W_RECV] >= published, 5.0, "the witness to drain")
    bips.reclaim_dead_consumers(pool_name)
    info = bips.pool_info(pool_name)
    board[_STOP] = 1
    assert producer.wait() == 0
    assert witness.wait() == 0

    print(
        f"\nchurn: {dict(tally)} in {duration} s, {published} frames, longest producer stall "
        f"{gap * 1e3:.0f} ms, seed {seed}"
    )
    _measured("churn: longest producer stall", gap)
    assert tally["spawned"] >= 20
    assert board[_CH_BAD] == 0 and board[_W_BAD] == 0, "a consumer saw a corrupted frame"
    assert board[_W_ORDER] == 0, "the witness missed frames under block"
    assert board[_W_RECV] == published
    assert gap < DETECT_S, f"the producer stalled for {gap:.3f} s (seed {seed})"
    assert info.producer_alive and info.free == cap, info
    assert [(s.alive, s.held, s.queued) for s in info.slots] == [(True, 0, 0)], info.slots


# --- a producer killed while it creates the pool ---------------------------------------------


def test_name_is_reusable_after_a_creator_died_before_writing_the_header(pool_name: str) -> None:
    # Exactly what Segment::create leaves when SIGKILLed after sizing the file and before
    # writing the magic: a full-size file of zeros, no lock held. Real kills get there too (the
    # next test but one hits it in a fair share of runs).
    path = pool_path(pool_name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 3 * 4096)
    finally:
        os.close(fd)
    try:
        with bips.Producer(pool_name, capacity=2, shape=FRAME) as prod:
            _publish(prod, 0)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def test_remove_stale_pool_removes_a_pool_whose_creator_died_mid_header(pool_name: str) -> None:
    # What a creator SIGKILLed after writing the magic and layout version but before `ready`
    # leaves: no producer lock, ready == 0 (Consumer says "never completed (its creator died)").
    path = pool_path(pool_name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"BIPSPOOL" + bips.LAYOUT_VERSION.to_bytes(4, "little") + bytes(4096 - 12))
    finally:
        os.close(fd)
    try:
        with pytest.raises(bips.PoolNotFound, match="never completed"):
            bips.Consumer(pool_name)
        assert bips.remove_stale_pool(pool_name)
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def _creator(name: str, shape: tuple[int, ...], board: Board) -> None:
    board[_GO] = 1
    bips.Producer(name, capacity=4, shape=shape)
    board[_HOLDING] = 1
    _sleep_forever()


def test_name_is_reusable_after_creators_are_killed_at_random_moments(
    pool_name: str, spawn: Spawner
) -> None:
    """A producer SIGKILLed anywhere in its constructor: the next producer gets the name."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    shape = (4, 1024, 1024)  # big enough that sizing the file takes a moment
    board = Board()
    t0 = time.monotonic()
    bips.Producer(pool_name, capacity=4, shape=shape).close()
    create_s = time.monotonic() - t0
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(25):
        board.clear()
        c = spawn(_creator, pool_name, shape, board, label="creator")
        wait_for(lambda: board[_GO], 5.0, "the creator")
        time.sleep(rng.uniform(0.0, 2.0 * create_s))
        c.kill()
        c.wait()
        spawn.forget_reaped()
        outcomes["completed" if board[_HOLDING] else "interrupted"] += 1
        try:
            with bips.Producer(pool_name, capacity=2, shape=FRAME) as prod:
                _publish(prod, 0)
        except bips.CorruptPool as e:
            os.unlink(pool_path(pool_name))
            pytest.fail(f"name blocked after {dict(outcomes)} (seed {seed}): {e}")
    print(f"\ncreator kills (seed {seed}): {dict(outcomes)}")
