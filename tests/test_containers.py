# SPDX-License-Identifier: Apache-2.0
"""Pools shared with processes in other PID and IPC namespaces, as between containers.

Each namespaced party runs ``unshare --pid --ipc --mount --fork python -c ...``: it is pid 1 in
its own PID namespace and has its own System V IPC, yet sees the host's /dev/shm (a mount
namespace starts as a copy of its parent's mounts, so it is the same tmpfs). bips must not rely
on pids: liveness comes from OFD locks on the segment, which the kernel drops when the holder
dies, whatever namespace it lived in.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import bips
import pytest
from helpers import PRELUDE, check, fill, pool_path

pytestmark = pytest.mark.root

UNSHARE = ["unshare", "--pid", "--ipc", "--mount", "--fork", "--kill-child"]
DETECT_S = 1.0  # how soon a death must be noticed (the documented bound)
SHAPE = (64,)


@functools.cache
def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create PID/IPC/mount namespaces with unshare"
    if shutil.which("unshare") is None:
        return "the unshare tool (util-linux) is not installed"
    try:
        r = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{' '.join(UNSHARE)} true` did not run: {e}"
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        return f"`{' '.join(UNSHARE)} true` failed (rc {r.returncode}): {err}"
    return None


@pytest.fixture(autouse=True)
def _namespaces_available() -> None:
    why = _why_no_namespaces()
    if why:
        pytest.skip(why)


# Both scripts run after helpers.PRELUDE (bips, numpy as np, emit, fill, check) and obey
# one command per stdin line.
CONSUMER = r"""
name = sys.argv[1]
cons = bips.Consumer(name, timeout=10.0)
emit(event="attached", pid=os.getpid(), host_pid=int(os.readlink("/proc/self")),
     slot=cons.stats.slot)
held = []
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "recv":  # recv N KEEP: receive N frames, keep the last KEEP of them held
        n, keep = int(arg[0]), int(arg[1])
        seqs, ok = [], True
        for _ in range(n):
            f = cons.receive(timeout=5.0)
            ok = ok and check(f.numpy(), f.seq)
            seqs.append(f.seq)
            held.append(f)
            while len(held) > keep:
                held.pop(0).release()
        emit(event="received", seqs=seqs, ok=ok, held=len(held))
    elif cmd == "close":
        for f in held:
            f.release()
        held.clear()
        cons.close()
        emit(event="closed")
        break
"""

PRODUCER = r"""
name, cap = sys.argv[1], int(sys.argv[2])
prod = bips.Producer(name, capacity=cap, shape=(64,), policy="block")
emit(event="ready", pid=os.getpid(), host_pid=int(os.readlink("/proc/self")))
seq = 0
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "pub":  # pub N: publish N more frames
        for _ in range(int(arg[0])):
            buf = prod.acquire(timeout=5.0)
            fill(buf.numpy(), seq)
            prod.publish(buf)
            seq += 1
        emit(event="published", seq=seq)
    elif cmd == "close":
        prod.close()
        emit(event="closed")
        break
"""


class Namespaced:
    """`python -c PRELUDE + code` as pid 1 of fresh PID, IPC and mount namespaces."""

    def __init__(self, code: str, *args: Any) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*UNSHARE, sys.executable, "-c", PRELUDE + "\n" + code, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: killpg reaches unshare and python
        )
        self._buf = b""
        self.host_pid = 0  # the inner python's pid as seen from here (set by the first message)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 15.0) -> Any:
        """The next JSON line the inner python emit()ted."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"namespaced child sent nothing within {timeout} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    rc, err = self.finish(5.0)
                    raise AssertionError(f"namespaced child exited (rc {rc}):\n{err}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        msg = json.loads(line)
        if "host_pid" in msg:
            self.host_pid = msg["host_pid"]
        return msg

    def kill_inner(self) -> None:
        """SIGKILLs the inner python only (unshare then exits by itself)."""
        assert self.host_pid > 1 and self.proc.poll() is None
        os.kill(self.host_pid, signal.SIGKILL)

    def finish(self, timeout: float = 5.0) -> tuple[int, str]:
        """Waits up to `timeout`, then kills the whole process group; always reaps."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, err = self.proc.communicate()
        return self.proc.returncode, (err or b"").decode(errors="replace")[-4000:]


@pytest.fixture
def namespaced(pool_name: str) -> Iterator[Any]:
    """Starts Namespaced children; kills and reaps whatever is left at the end."""
    started: list[Namespaced] = []

    def start(code: str, *args: Any) -> Namespaced:
        n = Namespaced(code, *args)
        started.append(n)
        return n

    try:
        yield start
    finally:
        for n in started:
            if n.proc.poll() is None:
                try:
                    os.killpg(n.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            n.finish(5.0)
        try:
            bips.remove_stale_pool(pool_name)  # only after a failure can anything be left
        except bips.Error:
            pass


def _publish(prod: bips.Producer, seq: int, timeout: float = 5.0) -> None:
    buf = prod.acquire(timeout=timeout)
    fill(buf.numpy(), seq)
    prod.publish(buf)


def _attached(c: Namespaced) -> Any:
    m = c.read()
    assert m["event"] == "attached", m
    assert m["pid"] == 1, m  # init of its own PID namespace
    assert m["host_pid"] not in (1, os.getpid()), m
    return m


def test_consumer_in_pid_namespace_receives_frames(pool_name: str, namespaced: Any) -> None:
    cap = 4
    with bips.Producer(pool_name, capacity=cap, shape=SHAPE) as prod:
        c = namespaced(CONSUMER, pool_name)
        m = _attached(c)
        [slot] = bips.pool_info(pool_name).slots
        assert (slot.slot, slot.pid, slot.alive) == (m["slot"], 1, True)
        c.send("recv 12 0")
        for seq in range(12):  # three times the capacity: buffers must come back too
            _publish(prod, seq)
        r = c.read()
        assert r["seqs"] == list(range(12)) and r["ok"], r
        c.send("close")
        assert c.read()["event"] == "closed"
        rc, err = c.finish()
        assert rc == 0, err
        st = prod.stats
        assert (st.free, st.consumers, st.published) == (cap, 0, 12)


def test_sigkill_of_namespaced_consumer_returns_its_buffers(
    pool_name: str, namespaced: Any
) -> None:
    cap = 4
    with bips.Producer(pool_name, capacity=cap, shape=SHAPE, policy="block") as prod:
        c = namespaced(CONSUMER, pool_name)
        _attached(c)
        c.send("recv 2 2")  # holds two frames, leaves two queued
        for seq in range(cap):
            _publish(prod, seq)
        r = c.read()
        assert r["seqs"] == [0, 1] and r["ok"] and r["held"] == 2, r
        [slot] = bips.pool_info(pool_name).slots
        assert (slot.held, slot.queued) == (2, 2)
        assert prod.stats.free == 0
        with pytest.raises(bips.Timeout):
            prod.acquire(timeout=0.2)

        t0 = time.monotonic()
        c.kill_inner()
        buf = prod.acquire(timeout=5.0)
        back = time.monotonic() - t0
        assert prod.stats.free == cap - 1  # all of them, at once
        buf.discard()
        for seq in range(cap, 3 * cap):
            _publish(prod, seq, timeout=1.0)
        st = prod.stats
        assert (st.free, st.consumers) == (cap, 0)
        assert bips.pool_info(pool_name).slots == []
    rc, _ = c.finish()
    assert rc != 0
    print(f"\nnamespaced consumer SIGKILL -> producer resumes: {back * 1e3:.1f} ms")
    assert back < DETECT_S


def test_namespaced_producer_and_consumer_outside(pool_name: str, namespaced: Any) -> None:
    p = namespaced(PRODUCER, pool_name, 4)
    m = p.read()
    assert m["event"] == "ready" and m["pid"] == 1, m
    with bips.Consumer(pool_name, timeout=10.0) as cons:
        info = bips.pool_info(pool_name)
        assert info.producer_alive and info.producer_pid == 1 and info.consumers == 1
        p.send("pub 10")
        got = []
        for _ in range(10):
            with cons.receive(timeout=5.0) as f:
                assert check(f.numpy(), f.seq)
                got.append(f.seq)
        assert got == list(range(10))
        assert p.read() == {"event": "published", "seq": 10}
        p.send("pub 2")  # queued here when the producer dies: still delivered
        assert p.read()["seq"] == 12

        t0 = time.monotonic()
        p.kill_inner()
        for seq in (10, 11):
            with cons.receive(timeout=5.0) as f:
                assert f.seq == seq and check(f.numpy(), seq)
        with pytest.raises(bips.ProducerGone):
            cons.receive(timeout=5.0)
        gone = time.monotonic() - t0
        assert not bips.pool_info(pool_name).producer_alive
    # The last user of a dead pool removes it.
    assert not os.path.exists(pool_path(pool_name))
    rc, _ = p.finish()
    assert rc != 0
    print(f"\nnamespaced producer SIGKILL -> ProducerGone outside: {gone * 1e3:.1f} ms")
    assert gone < DETECT_S


def test_pid_1_in_two_namespaces_do_not_collide(pool_name: str, namespaced: Any) -> None:
    cap = 4
    with bips.Producer(pool_name, capacity=cap, shape=SHAPE, policy="block") as prod:
        a = namespaced(CONSUMER, pool_name)
        b = namespaced(CONSUMER, pool_name)
        ma, mb = _attached(a), _attached(b)
        assert ma["host_pid"] != mb["host_pid"] and ma["slot"] != mb["slot"]
        slots = {s.slot: s for s in bips.pool_info(pool_name).slots}
        assert sorted(slots) == sorted([ma["slot"], mb["slot"]])
        assert all(s.pid == 1 and s.alive for s in slots.values())  # same pid, both alive

        a.send("recv 4 0")
        b.send("recv 4 0")
        for seq in range(4):
            _publish(prod, seq)
        for c in (a, b):
            r = c.read()
            assert r["seqs"] == [0, 1, 2, 3] and r["ok"], r

        # b keeps two frames and leaves two queued: with a done, the producer is blocked on b.
        a.send("recv 4 0")
        b.send("recv 2 2")
        for seq in range(4, 8):
            _publish(prod, seq)
        assert a.read()["seqs"] == [4, 5, 6, 7]
        assert b.read()["seqs"] == [4, 5]
        with pytest.raises(bips.Timeout):
            prod.acquire(timeout=0.2)

        t0 = time.monotonic()
        b.kill_inner()
        buf = prod.acquire(timeout=5.0)
        back = time.monotonic() - t0
        assert prod.stats.free == cap - 1
        buf.discard()
        # The other pid 1 did not notice a thing: same slot, every frame, in order.
        a.send("recv 8 0")
        for seq in range(8, 16):
            _publish(prod, seq, timeout=1.0)
        r = a.read()
        assert r["seqs"] == list(range(8, 16)) and r["ok"], r
        [slot] = bips.pool_info(pool_name).slots
        assert (slot.slot, slot.pid, slot.alive, slot.received) == (ma["slot"], 1, True, 16)
        a.send("close")
        assert a.read()["event"] == "closed"
        assert a.finish()[0] == 0
        assert prod.stats.free == cap
    assert b.finish()[0] != 0
    print(f"\none of two pid-1 consumers SIGKILLed -> producer resumes: {back * 1e3:.1f} ms")
    assert back < DETECT_S
