# SPDX-License-Identifier: Apache-2.0
"""File modes of pool segments, and access from another user (uid 65534, when run as root)."""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import threading
import time
import warnings
from typing import Any, Callable

import bips
import pytest
from helpers import child, pool_path, read_message, reap

NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")


def mode_of(name: str) -> int:
    """The pool's mode, as its control file carries it; the pool file (written by the producer
    alone, through its own descriptor) has the same mode without any write bit."""
    mode = stat.S_IMODE(os.stat(pool_path(name) + "@ctl").st_mode)
    assert stat.S_IMODE(os.stat(pool_path(name)).st_mode) == mode & ~0o222
    return mode


def run_as_other_user(fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Runs fn() in a forked child as uid/gid 65534 and returns its JSON-able result, or
    {"exc": name, "msg": ..., "errno": ...} if it raised. The child always ends with os._exit;
    the parent always reaps it (killing it after `timeout` seconds)."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = {"ok": fn(), "uid": os.getuid()}
        except BaseException as e:
            result = {"exc": type(e).__name__, "msg": str(e), "errno": getattr(e, "errno", None)}
        try:
            os.write(w, json.dumps(result, default=repr).encode())
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise AssertionError(f"child running as uid {NOBODY} did not answer in {timeout} s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            time.sleep(0.1)
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    assert data, "the child wrote no result"
    return json.loads(data)


def test_default_mode_is_0600(pool_name: str) -> None:
    old = os.umask(0)
    try:
        with bips.Producer(pool_name, capacity=2, buffer_size=8):
            assert mode_of(pool_name) == 0o600
            st = os.stat(pool_path(pool_name))
            assert st.st_uid == os.geteuid()
            assert bips.pool_info(pool_name).mode & 0o777 == 0o600
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o777])
@pytest.mark.parametrize("mode", [0o666, 0o640, 0o600, 0o604])
def test_mode_is_exact_regardless_of_umask(pool_name: str, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        with bips.Producer(pool_name, capacity=2, buffer_size=8, mode=mode):
            assert mode_of(pool_name) == mode
            assert bips.pool_info(pool_name).mode & 0o777 == mode
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    "mode", [0o1666, 0o4600, 0o2660, 0o10600, 0o100, 0o200, 0o400, 0o000, 0o066, -1]
)
def test_bad_modes_are_refused(pool_name: str, mode: int) -> None:
    """Set-id and sticky bits, bits beyond 0o7777, and modes where the owner cannot read and
    write are refused."""
    with pytest.raises((bips.InvalidArgument, OverflowError, TypeError)):
        bips.Producer(pool_name, capacity=2, buffer_size=8, mode=mode)
    assert not os.path.exists(pool_path(pool_name))


@pytest.mark.parametrize("mode", [0o700, 0o777])
def test_execute_bits_are_kept_as_given(pool_name: str, mode: int) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8, mode=mode):
        assert mode_of(pool_name) == mode


def test_mode_of_a_replaced_stale_pool(pool_name: str) -> None:
    """A producer that takes over a stale pool gets the mode it asked for, not the old one."""
    code = r"""
prod = bips.Producer(sys.argv[1], capacity=2, buffer_size=8, mode=0o666)
emit(up=True)
time.sleep(60)
"""
    with child(code, pool_name) as proc:
        assert read_message(proc, 30.0) == {"up": True}
        assert mode_of(pool_name) == 0o666
        proc.kill()
        reap(proc, 10.0)
    with bips.Producer(pool_name, capacity=2, buffer_size=8):
        assert mode_of(pool_name) == 0o600


# --- another user ---------------------------------------------------------------------------


def consume_one(name: str) -> Callable[[], Any]:
    def fn() -> Any:
        with bips.Consumer(name, timeout=5.0) as cons, cons.receive(timeout=10.0) as f:
            return {"seq": f.seq, "data": f.numpy().tolist(), "meta": f.meta.decode()}

    return fn


@needs_root
def test_other_user_refused_under_0600(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8) as prod:
        r = run_as_other_user(lambda: repr(bips.Consumer(pool_name)))
        assert r.get("exc") == "PermissionError", r
        assert r["errno"] == 13 and pool_name in r["msg"]
        r = run_as_other_user(lambda: repr(bips.pool_info(pool_name)))
        assert r.get("exc") == "PermissionError", r
        # list_pools works and reports the entry it cannot read.
        r = run_as_other_user(
            lambda: [[p.name, p.error] for p in bips.list_pools() if p.name == pool_name]
        )
        assert "ok" in r, r
        assert len(r["ok"]) == 1 and r["ok"][0][1], r
        assert prod.stats.consumers == 0


@needs_root
def test_other_user_cannot_take_over_pool(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8):
        r = run_as_other_user(lambda: repr(bips.Producer(pool_name, capacity=2, buffer_size=8)))
        assert r.get("exc") in ("PermissionError", "PoolBusy"), r
    with bips.Producer(pool_name, capacity=2, buffer_size=8, mode=0o666):
        r = run_as_other_user(lambda: repr(bips.Producer(pool_name, capacity=2, buffer_size=8)))
        assert r.get("exc") == "PoolBusy", r
        r = run_as_other_user(lambda: bips.remove_stale_pool(pool_name))
        assert "exc" in r or r["ok"] in (False, None, 0), r
        assert os.path.exists(pool_path(pool_name))


@needs_root
def test_other_user_receives_under_0666(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8, meta_size=8, mode=0o666) as prod:
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[:] = list(range(8))

        # The child attaches after this frame was published: it must not see it. So publish
        # from a thread once the child is attached.
        def publish_when_attached() -> None:
            deadline = time.monotonic() + 20.0
            while prod.stats.consumers == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            prod.publish(buf, meta=b"nobody")

        t = threading.Thread(target=publish_when_attached)
        t.start()
        try:
            r = run_as_other_user(consume_one(pool_name))
        finally:
            t.join(30.0)
        assert r.get("ok") == {"seq": 0, "data": list(range(8)), "meta": "nobody"}, r
        assert r["uid"] == NOBODY
        assert prod.stats.consumers == 0 and prod.stats.free == 2


@needs_root
def test_other_user_in_group_mode(pool_name: str) -> None:
    """0o660: uid 65534 is neither owner nor in the group (gid 0): refused."""
    with bips.Producer(pool_name, capacity=2, buffer_size=8, mode=0o660):
        r = run_as_other_user(lambda: repr(bips.Consumer(pool_name)))
        assert r.get("exc") == "PermissionError", r


@needs_root
def test_read_only_access_is_not_enough(pool_name: str) -> None:
    """0o644: others may read the file but a consumer must write its slot: a clear refusal,
    never a crash."""
    with bips.Producer(pool_name, capacity=2, buffer_size=8, mode=0o644) as prod:
        r = run_as_other_user(lambda: repr(bips.Consumer(pool_name)))
        assert r.get("exc") == "PermissionError", r
        r = run_as_other_user(lambda: bips.pool_info(pool_name).capacity)
        assert r.get("ok") == 2 or r.get("exc") == "PermissionError", r
        assert prod.stats.consumers == 0


# --- what another user can and cannot change (issue 8, item 5) -------------------------------


@needs_root
def test_other_user_cannot_alter_what_consumers_receive(pool_name: str) -> None:
    """0o666: another user may consume, and may write the control file, but cannot open the pool
    file (pixels, metadata, descriptors, `closed`) for writing, nor shrink it."""
    with bips.Producer(pool_name, capacity=2, buffer_size=8, meta_size=8, mode=0o666) as prod:
        path = pool_path(pool_name)

        def attack() -> Any:
            out = {}
            for what, fn in (
                ("open_pool_rw", lambda: os.close(os.open(path, os.O_RDWR))),
                ("truncate_pool", lambda: os.truncate(path, 0)),
                ("open_ctl_rw", lambda: os.close(os.open(path + "@ctl", os.O_RDWR))),
            ):
                try:
                    fn()
                    out[what] = "ok"
                except OSError as e:
                    out[what] = e.errno
            return out

        r = run_as_other_user(attack)
        assert r.get("ok") == {"open_pool_rw": 13, "truncate_pool": 13, "open_ctl_rw": "ok"}, r
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[:] = 5
        prod.publish(buf)  # nobody attached: the pool still works
        assert os.stat(path).st_size > 0


@needs_root
def test_name_squatted_by_another_user_is_explained(pool_name: str) -> None:
    """A file of another user under the name: the producer says who owns it and how to fix it,
    instead of "the name kept changing under us"."""
    path = pool_path(pool_name)
    for mode in (0o644, 0o600):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
        os.close(fd)
        os.chmod(path, mode)
        try:
            r = run_as_other_user(
                lambda: repr(bips.Producer(pool_name, capacity=2, buffer_size=8, mode=0o666))
            )
            assert r.get("exc") == "PermissionError", r
            assert r["errno"] == 1, r
            assert "uid 0" in r["msg"] and "bips clean" in r["msg"] and pool_name in r["msg"], r
        finally:
            os.unlink(path)


@needs_root
def test_consumers_accept_other_owners_only_when_told(pool_name: str) -> None:
    """A pool of uid 65534: refused by default (the owner is neither us nor root), accepted with
    owner=65534 or owner="any"."""
    code = r"""
import os
os.setgroups([]); os.setgid(65534); os.setuid(65534)
prod = bips.Producer(sys.argv[1], capacity=4, buffer_size=8, mode=0o666)
emit(up=True)
deadline = time.monotonic() + 30
seq = 0
while time.monotonic() < deadline and seq < 2000:
    buf = prod.try_acquire()
    if buf is None:
        time.sleep(0.01)
        continue
    buf.numpy()[:] = seq % 256
    prod.publish(buf)
    seq += 1
    time.sleep(0.01)
"""
    with child(code, pool_name) as proc:
        assert read_message(proc, 30.0) == {"up": True}
        with pytest.raises(PermissionError, match="owner=65534"):
            bips.Consumer(pool_name, timeout=2.0)
        for owner in (NOBODY, "any"):
            with bips.Consumer(pool_name, timeout=5.0, owner=owner) as cons:
                with cons.receive(timeout=5.0) as f:
                    assert f.numpy().shape == (8,)
        with pytest.raises(bips.InvalidArgument):
            bips.Consumer(pool_name, owner=-3)
        proc.kill()
        reap(proc, 10.0)
    bips.remove_stale_pool(pool_name)
