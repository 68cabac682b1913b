# SPDX-License-Identifier: Apache-2.0
"""Start-up races (issue 8): a producer creates a pool while consumers and inspectors open the
same name at the same instant, hundreds of rounds, with two busy-loop processes keeping the CPUs
loaded so that any party can be preempted anywhere.

Whatever the interleaving, a consumer given a timeout waits for the pool and receives its frame
(also one that reconnects to a producer restarting under the same name), and ``pool_info`` /
``list_pools`` see a pool being created as missing or "being created", never as corrupt.

A round has *parties* (producer, consumer, inspector...), each an object whose ``run(i, stop)``
raises on any failure. They run as threads of this process, or inside long-lived worker
processes (this module imported by ``python -c``: one process per party, not per round) that
start round ``i`` when the test writes ``g`` to their stdin and print one JSON line per round.
The producer waits for a consumer to attach (then publishes one frame), or until ``stop()``
says the other parties of the round are done. A fresh pool name per round, except for the
reconnecting consumer, which follows one name across producers. Any exception in any round
fails the test with the round number and the traceback.

BIPS_RACE_ROUNDS (default 300) sets the rounds per test, e.g. to hunt a rare failure.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import os
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import bips
import pytest
from helpers import check, fill, kill_and_reap, read_message, reap, spawn_python

ROUNDS = int(os.environ.get("BIPS_RACE_ROUNDS", "300"))
WAIT = 5.0  # every wait of a party: the consumer's timeout, the producer's wait for it
MAX_FAILED_ROUNDS = 20  # enough to say how often; then stop, so that a broken build ends soon
BUSY_LOOPS = 2
FRAME = (64,)

Stop = Callable[[], bool]


class Party(Protocol):
    def run(self, i: int, stop: Stop) -> None: ...
    def close(self) -> None: ...


def not_there_yet(e: BaseException) -> bool:
    """The documented answers of ``pool_info`` for a pool that does not exist yet or is still
    being created: ``PoolNotFound``, or a ``bips.Error`` saying "being created"."""
    if isinstance(e, bips.PoolNotFound):
        return True
    corrupt = isinstance(e, (bips.CorruptPool, bips.IncompatiblePool))
    return isinstance(e, bips.Error) and not corrupt and "being created" in str(e)


# --- parties ----------------------------------------------------------------------------------


class Producer:
    """Creates pool ``name(i)``, waits for a consumer (or ``stop()``), publishes frame ``i``,
    closes."""

    def __init__(self, name: Callable[[int], str]) -> None:
        self.name = name

    def run(self, i: int, stop: Stop) -> None:
        with bips.Producer(self.name(i), capacity=2, shape=FRAME) as prod:
            deadline = time.monotonic() + WAIT
            while prod.stats.consumers == 0:
                if stop():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"round {i}: no consumer attached within {WAIT} s")
                time.sleep(0.0005)
            buf = prod.acquire(timeout=WAIT)
            fill(buf.numpy(), i)
            prod.publish(buf)

    def close(self) -> None:
        pass


def _receive_round(cons: bips.Consumer, i: int) -> None:
    frame = cons.receive(timeout=WAIT)
    ok, seq = check(frame.numpy(), i), frame.seq
    frame.release()
    assert ok, f"round {i}: frame {seq} does not hold round {i}'s payload"


class Consumer:
    """``bips.Consumer(name(i), timeout=WAIT)``: must wait for the pool and get frame ``i``."""

    def __init__(self, name: Callable[[int], str]) -> None:
        self.name = name

    def run(self, i: int, stop: Stop) -> None:
        with bips.Consumer(self.name(i), timeout=WAIT) as cons:
            _receive_round(cons, i)

    def close(self) -> None:
        pass


class EagerConsumer:
    """Opens with ``timeout=0`` in a tight loop until attached: it lands in every instant of the
    producer's creation, not only every 5 ms like a waiting consumer. Only "no pool" and "still
    being created" may answer."""

    def __init__(self, name: Callable[[int], str]) -> None:
        self.name = name

    def run(self, i: int, stop: Stop) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                cons = bips.Consumer(self.name(i))
                break
            except (bips.PoolNotFound, bips.Timeout):
                if time.monotonic() > deadline:
                    raise
        with cons:
            _receive_round(cons, i)

    def close(self) -> None:
        pass


class ReconnectingConsumer:
    """One ``Consumer(name, timeout=WAIT, reconnect=True)`` for all rounds: each round's producer
    is a new pool under the same name, created while this consumer polls for it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cons: bips.Consumer | None = None
        self.received = 0

    def run(self, i: int, stop: Stop) -> None:
        if self.cons is None:
            self.cons = bips.Consumer(self.name, timeout=WAIT, reconnect=True)
        _receive_round(self.cons, i)
        self.received += 1

    def close(self) -> None:
        if self.cons is not None:
            reconnects = self.cons.stats.reconnects
            self.cons.close()
            assert reconnects == self.received - 1, (reconnects, self.received)


class Inspector:
    """Polls ``pool_info(name(i))`` in a tight loop, with a ``list_pools()`` every few tries,
    until the pool is complete. Nothing but "no pool" and "being created" may answer."""

    LIST_EVERY = 4

    def __init__(self, name: Callable[[int], str]) -> None:
        self.name = name

    def run(self, i: int, stop: Stop) -> None:
        name = self.name(i)
        deadline = time.monotonic() + WAIT
        for n in itertools.count():
            try:
                if bips.pool_info(name).producer_alive:
                    break
            except Exception as e:
                if not not_there_yet(e):
                    raise
            if n % self.LIST_EVERY == 0:
                for p in bips.list_pools():
                    if p.name == name and p.error not in (None, "", "being created"):
                        raise AssertionError(f"round {i}: list_pools() says {p.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"round {i}: pool {name} not complete within {WAIT} s")

    def close(self) -> None:
        pass


def _fresh(base: str) -> Callable[[int], str]:
    return lambda i: f"{base}-{i}"


def make_party(role: str, base: str) -> Party:
    """A party by name; every party but the reconnecting consumer uses a fresh name per round."""
    if role == "producer":
        return Producer(_fresh(base))
    if role == "producer-same-name":
        return Producer(lambda i: base)
    if role == "consumer":
        return Consumer(_fresh(base))
    if role == "eager-consumer":
        return EagerConsumer(_fresh(base))
    if role == "reconnecting-consumer":
        return ReconnectingConsumer(base)
    if role == "inspector":
        return Inspector(_fresh(base))
    raise ValueError(role)


# --- running rounds ---------------------------------------------------------------------------


def _failed(failures: list[str], rounds: int) -> str:
    bad = {f.split(",")[0] for f in failures if f.startswith("round ")}
    head = f"{len(bad)} of {rounds} rounds failed ({BUSY_LOOPS} busy loops)"
    return head + "\n\n" + "\n".join(failures[:6])


def _round_in_threads(parties: dict[str, Party], i: int) -> dict[str, str]:
    """Round ``i`` with one thread per party, released by a barrier; the tracebacks by role."""
    barrier = threading.Barrier(len(parties), timeout=2 * WAIT)
    others_done = threading.Event()
    pending = [len(parties) - 1]
    lock = threading.Lock()
    errors: dict[str, str] = {}

    def body(role: str, party: Party) -> None:
        try:
            barrier.wait()
            party.run(i, others_done.is_set)
        except BaseException:  # noqa: BLE001 - reported with the round
            errors[role] = traceback.format_exc()
        finally:
            if not role.startswith("producer"):
                with lock:
                    pending[0] -= 1
                    if pending[0] == 0:
                        others_done.set()

    threads = [
        threading.Thread(target=body, args=rp, name=f"{rp[0]}-{i}", daemon=True)
        for rp in parties.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=4 * WAIT)
        if t.is_alive():
            pytest.fail(f"round {i}: thread {t.name} still runs after {4 * WAIT} s")
    return errors


def run_in_threads(roles: list[str], base: str) -> tuple[list[str], int]:
    """Runs the rounds in threads of this process. Returns the failures, each
    "round I, ROLE:\nTRACEBACK", and the number of rounds run."""
    parties = {role: make_party(role, base) for role in roles}
    failures: list[str] = []
    failed_rounds = rounds = 0
    for i in range(ROUNDS):
        rounds += 1
        errors = _round_in_threads(parties, i)
        failures += [f"round {i}, {role}:\n{tb}" for role, tb in errors.items()]
        failed_rounds += bool(errors)
        if failed_rounds >= MAX_FAILED_ROUNDS:
            break
    for role, party in parties.items():
        try:
            party.close()
        except Exception:  # noqa: BLE001
            failures.append(f"closing {role}:\n{traceback.format_exc()}")
    return failures, rounds


# A worker process: imports this module and serves one party, a round per "g" on stdin.
WORKER = "sys.path.insert(0, sys.argv[1]); import test_startup_race; test_startup_race.serve()"


def _emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def serve() -> None:
    """The body of a worker process (argv: tests dir, role, base name). Round ``i`` starts at the
    ``i``-th ``g`` on stdin; any other byte there is the test saying "the others are done"
    (``stop()``), stale ones are skipped. EOF ends it: the party is closed and one last line
    says so."""
    faulthandler.enable()  # a crash shows where, in the stderr that ChildError reports
    role, base = sys.argv[2], sys.argv[3]
    party = make_party(role, base)

    def stop() -> bool:
        return bool(select.select([0], [], [], 0)[0])

    for i in itertools.count():
        cmd = os.read(0, 1)
        while cmd == b"x":
            cmd = os.read(0, 1)
        if cmd != b"g":
            break
        try:
            party.run(i, stop)
            _emit(round=i)
        except BaseException:  # noqa: BLE001 - reported with the round
            _emit(round=i, error=traceback.format_exc())
    try:
        party.close()
        _emit(closed=True)
    except BaseException:  # noqa: BLE001
        _emit(closed=True, error=traceback.format_exc())


def run_in_processes(roles: list[str], base: str) -> tuple[list[str], int]:
    """Runs the rounds with one worker process per party, like ``run_in_threads``."""
    tests_dir = str(Path(__file__).resolve().parent)
    workers = {role: spawn_python(WORKER, tests_dir, role, base, stdin=True) for role in roles}
    producer = next(w for r, w in workers.items() if r.startswith("producer"))
    others = [(r, w) for r, w in workers.items() if w is not producer]
    failures: list[str] = []
    failed_rounds = rounds = 0

    def send(w: object, byte: bytes) -> None:
        w.stdin.write(byte)  # type: ignore[attr-defined]
        w.stdin.flush()  # type: ignore[attr-defined]

    try:
        for i in range(ROUNDS):
            rounds += 1
            order = list(workers.values())
            for w in order if i % 2 else reversed(order):  # neither side always first
                send(w, b"g")
            results = {}
            for role, w in others:
                results[role] = read_message(w, timeout=4 * WAIT)
            send(producer, b"x")
            results["producer"] = read_message(producer, timeout=4 * WAIT)
            errors = {r: m["error"] for r, m in results.items() if "error" in m}
            assert all(m.get("round") == i for m in results.values()), results
            failures += [f"round {i}, {role}:\n{tb}" for role, tb in errors.items()]
            failed_rounds += bool(errors)
            if failed_rounds >= MAX_FAILED_ROUNDS:
                break
        for w in workers.values():  # EOF: close the party and exit
            w.stdin.close()  # type: ignore[union-attr]
            w.stdin = None  # communicate() in reap() must not flush it
        for role, w in workers.items():
            msg = read_message(w, timeout=4 * WAIT)
            if "error" in msg:
                failures.append(f"closing {role}:\n{msg['error']}")
    finally:
        for w in workers.values():
            rc, _, err = reap(w, timeout=10)
            for f in (w.stdout, w.stderr):
                if f is not None:
                    f.close()
            if rc != 0:
                failures.append(f"worker exited with {rc}:\n{err}")
    return failures, rounds


# --- tests ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def busy_cpus() -> Iterator[None]:
    """Busy-loop processes on every test of this module, killed at the end."""
    loops = [spawn_python("while 1: pass") for _ in range(BUSY_LOOPS)]
    try:
        yield
    finally:
        for p in loops:
            kill_and_reap(p)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()


SCENARIOS = {
    "consumer": ["producer", "consumer"],
    "eager-consumer": ["producer", "eager-consumer"],
    "reconnect": ["producer-same-name", "reconnecting-consumer"],
    "inspectors": ["producer", "inspector"],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_processes_start_at_the_same_instant(scenario: str, pool_name: str) -> None:
    failures, rounds = run_in_processes(SCENARIOS[scenario], pool_name)
    assert not failures, _failed(failures, rounds)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_threads_start_at_the_same_instant(scenario: str, pool_name: str) -> None:
    failures, rounds = run_in_threads(SCENARIOS[scenario], pool_name)
    assert not failures, _failed(failures, rounds)
