# SPDX-License-Identifier: Apache-2.0
"""Signals and timeouts: Ctrl-C interrupts blocking calls promptly; other signal handlers run
while blocked without ending the wait; timeouts are honoured within a small slack."""

from __future__ import annotations

import signal
import time

import bips
import pytest
from helpers import child, read_message, reap, wait_until

SLACK = 0.25  # generous: the machine is shared and may be loaded

# Blocks in receive(timeout=None) (mode "receive") or acquire(timeout=None) with a full block
# pool (mode "acquire"), and reports how the call ended.
BLOCKED = r"""
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
name, mode = sys.argv[1], sys.argv[2]
usr1 = []
def on_usr1(signum, frame):
    usr1.append(time.monotonic())
    emit(usr1=len(usr1))
signal.signal(signal.SIGUSR1, on_usr1)
if mode == "receive":
    cons = bips.Consumer(name, timeout=10.0)
    call = lambda: cons.receive(timeout=None)
else:
    prod = bips.Producer(name, capacity=1, buffer_size=8)
    cons = bips.Consumer(name)
    prod.publish(prod.acquire(timeout=1.0))  # the only buffer is now queued, never received
    call = lambda: prod.acquire(timeout=None)
emit(ready=True)
t0 = time.monotonic()
try:
    got = call()
    emit(result="returned", seq=getattr(got, "seq", None), waited=time.monotonic() - t0,
         usr1=len(usr1))
except KeyboardInterrupt:
    emit(result="KeyboardInterrupt", waited=time.monotonic() - t0)
except BaseException as e:
    emit(result=type(e).__name__, waited=time.monotonic() - t0)
cons.close()
if mode == "acquire":
    prod.close()
"""


@pytest.mark.parametrize("mode", ["receive", "acquire"])
def test_ctrl_c_interrupts_blocking_call(pool_name: str, mode: str) -> None:
    prod = bips.Producer(pool_name, capacity=2, buffer_size=8) if mode == "receive" else None
    try:
        with child(BLOCKED, pool_name, mode) as proc:
            assert read_message(proc, 30.0) == {"ready": True}
            time.sleep(0.3)  # well inside the blocking call
            assert proc.poll() is None
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            msg = read_message(proc, 5.0)
            latency = time.monotonic() - t0
            assert msg["result"] == "KeyboardInterrupt", msg
            assert msg["waited"] >= 0.25  # it really was blocked, not interrupted before
            assert latency < 1.0, f"KeyboardInterrupt took {latency:.3f} s"
            rc, out, err = reap(proc, 10.0)
            assert rc == 0, (out, err)
            print(f"{mode}: KeyboardInterrupt {latency * 1000:.0f} ms after SIGINT")
    finally:
        if prod is not None:
            prod.close()


def test_other_signals_do_not_end_blocking_receive(pool_name: str) -> None:
    """A Python signal handler runs promptly while receive(timeout=None) waits; the wait goes on
    and returns the frame published afterwards."""
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        with child(BLOCKED, pool_name, "receive") as proc:
            assert read_message(proc, 30.0) == {"ready": True}
            assert wait_until(lambda: prod.stats.consumers == 1, 10.0)
            time.sleep(0.2)
            for i in range(1, 4):
                t0 = time.monotonic()
                proc.send_signal(signal.SIGUSR1)
                assert read_message(proc, 5.0) == {"usr1": i}
                assert time.monotonic() - t0 < 1.0
            buf = prod.acquire(timeout=1.0)
            prod.publish(buf)
            msg = read_message(proc, 10.0)
            assert msg["result"] == "returned" and msg["seq"] == 0 and msg["usr1"] == 3, msg
            assert reap(proc, 10.0)[0] == 0


def test_other_signals_do_not_end_blocking_acquire(pool_name: str) -> None:
    with child(BLOCKED, pool_name, "acquire") as proc:
        assert read_message(proc, 30.0) == {"ready": True}
        time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        assert read_message(proc, 5.0) == {"usr1": 1}
        time.sleep(0.2)
        assert proc.poll() is None  # still waiting
        proc.send_signal(signal.SIGINT)
        assert read_message(proc, 5.0)["result"] == "KeyboardInterrupt"
        assert reap(proc, 10.0)[0] == 0


def test_sigterm_kills_blocked_consumer(pool_name: str) -> None:
    """A blocked call does not mask the default action of other signals."""
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        with child(BLOCKED, pool_name, "receive") as proc:
            assert read_message(proc, 30.0) == {"ready": True}
            time.sleep(0.2)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc, _, _ = reap(proc, 5.0)
            assert rc == -signal.SIGTERM and time.monotonic() - t0 < 1.0
        bips.reclaim_dead_consumers(pool_name)
        assert prod.stats.consumers == 0


@pytest.mark.parametrize("timeout", [0.0, 0.05, 0.2, 0.5])
def test_receive_timeout_is_honoured(pool_name: str, timeout: float) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8), bips.Consumer(pool_name) as cons:
        t0 = time.monotonic()
        with pytest.raises(bips.Timeout):
            cons.receive(timeout=timeout)
        elapsed = time.monotonic() - t0
        assert timeout - 0.005 <= elapsed < timeout + SLACK


@pytest.mark.parametrize("timeout", [0.0, 0.05, 0.2, 0.5])
def test_acquire_timeout_is_honoured(pool_name: str, timeout: float) -> None:
    with bips.Producer(pool_name, capacity=1, buffer_size=8) as prod, bips.Consumer(pool_name):
        prod.publish(prod.acquire(timeout=1.0))
        t0 = time.monotonic()
        with pytest.raises(bips.Timeout):
            prod.acquire(timeout=timeout)
        elapsed = time.monotonic() - t0
        assert timeout - 0.005 <= elapsed < timeout + SLACK


def test_consumer_open_timeout_is_honoured(pool_name: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(bips.Timeout):
        bips.Consumer(pool_name, timeout=0.3)
    assert 0.295 <= time.monotonic() - t0 < 0.3 + SLACK


@pytest.mark.parametrize("bad", [-1.0, -0.001, float("nan")])
def test_invalid_timeouts(pool_name: str, bad: float) -> None:
    with bips.Producer(pool_name, capacity=1, buffer_size=8) as prod:
        with bips.Consumer(pool_name) as cons:
            with pytest.raises(bips.InvalidArgument, match="timeout"):
                cons.receive(timeout=bad)  # nothing queued
            prod.publish(prod.acquire(timeout=1.0))
            with pytest.raises(bips.InvalidArgument, match="timeout"):
                prod.acquire(timeout=bad)  # no free buffer
        with pytest.raises(bips.InvalidArgument, match="timeout"):
            bips.Consumer(pool_name, timeout=bad)
    with pytest.raises(bips.InvalidArgument, match="timeout"):
        bips.Consumer(pool_name, timeout=bad)


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_invalid_timeouts_refused_when_ready(pool_name: str, bad: float) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        with bips.Consumer(pool_name) as cons:
            prod.publish(prod.acquire(timeout=1.0))
            refused = 0
            try:
                prod.acquire(timeout=bad).discard()
            except bips.InvalidArgument:
                refused += 1
            try:
                cons.receive(timeout=bad).release()
            except bips.InvalidArgument:
                refused += 1
            assert refused == 2


def test_receive_wakes_promptly_on_publish(pool_name: str) -> None:
    """A consumer blocked in receive in another process sees a frame soon after publish."""
    code = r"""
cons = bips.Consumer(sys.argv[1], timeout=10.0)
emit(ready=True)
for _ in range(5):
    f = cons.receive(timeout=10.0)
    emit(seq=f.seq, latency_ns=time.monotonic_ns() - f.timestamp_ns)
    f.release()
cons.close()
"""
    with bips.Producer(pool_name, capacity=4, buffer_size=8) as prod:
        with child(code, pool_name) as proc:
            assert read_message(proc, 30.0) == {"ready": True}
            assert wait_until(lambda: prod.stats.consumers == 1, 10.0)
            for i in range(5):
                time.sleep(0.1)  # the consumer is asleep in receive
                prod.publish(prod.acquire(timeout=1.0))
                msg = read_message(proc, 5.0)
                assert msg["seq"] == i
                assert msg["latency_ns"] < 0.5e9, msg  # generous: a wake-up, not a poll period
            assert reap(proc, 10.0)[0] == 0
