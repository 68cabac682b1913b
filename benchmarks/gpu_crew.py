# SPDX-License-Identifier: Apache-2.0
"""Worker processes kept for a whole GPU benchmark run: one producer and up to four consumers,
started once (``spawn``: each imports torch and makes its CUDA context once, which takes
seconds) and given one case after another.

A case runs like ``bips.benchkit.runner`` runs one (producer set up first, then the consumers,
then a window on CLOCK_MONOTONIC that every worker counts in), over one duplex pipe per worker:

    parent                           worker i
    ("case", id, role, kwargs)  -->  role(ctl, peers, **kwargs) ... ctl.ready()
                                <--  ("ready", id, info)
    ("go", id, start_ns, end_ns) ->  ctl.wait_go(); run; count what falls in the window
                                <--  ("result", id, dict) or ("error", id, traceback)

The producer and each consumer also share a pipe of their own (``peers``), for the baselines
that pass frames or handles by message. Messages carry the case id; anything of an earlier case
is ignored. When a case fails, the parent raises an abort flag that every waiting role checks
every ~0.1 s, collects what the workers say, and if one does not answer (or died) stops the
whole crew; the next case starts a fresh one. Workers die with the parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import multiprocessing.connection as mpc
import signal
import time
import traceback
from typing import Any

from harness import CaseError

HELLO_S = 180.0  # a worker's start: Python, torch, a CUDA context, CuPy
GRACE_S = 5.0  # after an abort, how long workers get to say they stopped


class Aborted(Exception):
    """The parent gave up on this case (another worker failed)."""


class Ctl:
    """What a role gets: report readiness, wait for the window, notice an abort."""

    def __init__(self, index: int, case_id: int, conn: Any, abort: Any) -> None:
        self.index = index
        self.case_id = case_id
        self._conn = conn
        self._abort = abort

    def ready(self, **info: Any) -> None:
        self._conn.send(("ready", self.case_id, info))

    def aborted(self) -> bool:
        return bool(self._abort.value)

    def check(self) -> None:
        if self._abort.value:
            raise Aborted(f"case {self.case_id} was aborted")

    def wait_go(self, timeout: float = 120.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if not self._conn.poll(0.1):
                continue
            msg = self._conn.recv()
            if msg[1] != self.case_id:
                continue
            if msg[0] == "go":
                return int(msg[2]), int(msg[3])
            if msg[0] == "abort":
                raise Aborted(f"case {self.case_id} was aborted")
        raise TimeoutError("the parent never said go")


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(index: int, conn: Any, abort: Any, peers: Any, dry_run: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent()
    import gpu_roles

    try:
        info = gpu_roles.warm_up(dry_run)
        conn.send(("hello", 0, info))
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", 0, traceback.format_exc()))
        return
    while True:
        if not conn.poll(1.0):
            continue
        msg = conn.recv()
        if msg[0] == "quit":
            return
        if msg[0] != "case":
            continue  # a late go/abort of a case that is over
        _, case_id, role, kwargs = msg
        ctl = Ctl(index, case_id, conn, abort)
        try:
            result = gpu_roles.ROLES[role](ctl, peers, **kwargs)
            conn.send(("result", case_id, result))
        except BaseException:  # noqa: BLE001 - reported to the parent
            conn.send(("error", case_id, traceback.format_exc()))


class Crew:
    """The worker processes; ``run()`` one case on them. Always ``shutdown()`` at the end."""

    def __init__(self, consumers: int, dry_run: bool) -> None:
        self.ctx: Any = mp.get_context("spawn")  # CUDA does not survive fork()
        self.consumers = consumers
        self.dry_run = dry_run
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.abort: Any = None
        self.info: dict[str, Any] = {}
        self.broken = False

    @property
    def alive(self) -> bool:
        return bool(self.procs) and not self.broken

    def start(self) -> dict[str, Any]:
        """Starts the workers and waits for each to be ready (torch imported, CUDA context
        made); returns what the producer worker reported about the machine."""
        self.abort = self.ctx.Value("i", 0, lock=False)
        ends = [self.ctx.Pipe(duplex=True) for _ in range(self.consumers)]
        producer_peers = [a for a, _ in ends]
        for i in range(self.consumers + 1):
            parent_end, child_end = self.ctx.Pipe(duplex=True)
            peers = producer_peers if i == 0 else ends[i - 1][1]
            p = self.ctx.Process(
                target=_worker_main,
                name=f"gpu-bench-{'producer' if i == 0 else f'consumer{i}'}",
                args=(i, child_end, self.abort, peers, self.dry_run),
                daemon=True,
            )
            p.start()
            child_end.close()
            self.procs.append(p)
            self.conns.append(parent_end)
        for a, b in ends:  # the workers have their own copies
            a.close()
            b.close()
        self.broken = False
        hellos = self._collect(list(range(len(self.procs))), "hello", 0, HELLO_S, set())
        self.info = hellos[0]
        return self.info

    def run(
        self, case_id: int, roles: list[tuple[str, dict[str, Any]]], warmup: float,
        duration: float, setup_s: float = 60.0, drain_s: float = 30.0,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Runs one case: role 0 on the producer worker, role i on consumer worker i. Returns
        every role's result, in order; raises CaseError (and stops the crew if a worker does
        not answer)."""
        self.abort.value = 0
        who = list(range(len(roles)))
        started: list[int] = []
        finished: set[int] = set()  # sent their last word (a result or an error)
        try:
            self.conns[0].send(("case", case_id, *roles[0]))
            started.append(0)
            self._collect([0], "ready", case_id, setup_s, finished)
            for i in who[1:]:
                self.conns[i].send(("case", case_id, *roles[i]))
                started.append(i)
            self._collect(who[1:], "ready", case_id, setup_s, finished)
            start = time.monotonic_ns() + int(warmup * 1e9)
            end = start + int(duration * 1e9)
            for i in who:
                self.conns[i].send(("go", case_id, start, end))
            return self._collect(who, "result", case_id, warmup + duration + drain_s, finished)
        except CaseError:
            self._abort([i for i in started if i not in finished], case_id)
            raise

    def _abort(self, who: list[int], case_id: int) -> None:
        """Stops the roles still running in a failed case; marks the crew broken if one does
        not stop."""
        self.abort.value = 1
        for i in who:
            try:
                self.conns[i].send(("abort", case_id))
            except OSError:
                self.broken = True
        try:
            self._collect(who, None, case_id, GRACE_S, set())
        except CaseError:
            self.broken = True

    def _collect(
        self, who: list[int], kind: str | None, case_id: int, timeout: float, finished: set[int]
    ) -> list[Any]:
        """Waits for message ``kind`` of ``case_id`` from each worker in ``who`` and returns
        the payloads in order; adds to ``finished`` the workers that sent their last word.
        ``kind`` None (after an abort): waits for every last word, result or error. Raises
        CaseError at the first error message (``kind`` not None), a dead worker or the
        deadline."""
        got: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        by_conn = {self.conns[i]: i for i in who}
        while len(got) < len(who):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [self.procs[i].name for i in who if i not in got]
                self.broken = True
                raise CaseError(f"timed out waiting for {kind or 'an answer'} from {missing}")
            waiting = [c for c, i in by_conn.items() if i not in got]
            for conn in mpc.wait(waiting, min(left, 0.5)):
                i = by_conn[conn]
                try:
                    what, cid, payload = conn.recv()
                except (EOFError, OSError):
                    self.broken = True
                    self.procs[i].join(1.0)
                    raise CaseError(f"{self.procs[i].name} died (exit code "
                                    f"{self.procs[i].exitcode})") from None  # fmt: skip
                if cid != case_id:
                    continue  # a late word of an earlier case
                if what in ("result", "error"):
                    finished.add(i)
                if what == "error":
                    if kind is not None:
                        raise CaseError(f"{self.procs[i].name} failed:\n{payload}")
                    got[i] = None
                elif what == kind or (kind is None and what == "result"):
                    got[i] = payload
            for i in who:
                if i not in got and not self.procs[i].is_alive():
                    self.broken = True
                    raise CaseError(
                        f"{self.procs[i].name} died (exit code {self.procs[i].exitcode})"
                    )
        return [got[i] for i in who]

    def shutdown(self) -> None:
        """Asks the workers to quit, then terminates and kills what is left; always reaps."""
        for conn in self.conns:
            try:
                conn.send(("quit", 0, None))
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(3.0)
            if p.is_alive():
                p.kill()
                p.join(3.0)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        self.broken = True
