# SPDX-License-Identifier: Apache-2.0
"""Damaged or foreign files under /dev/shm/bips.NAME: bips reports them (CorruptPool,
IncompatiblePool, a clear message naming the pool), never crashes and never hangs. Every open
runs in a child process, so a crash shows as a signal in its return code, not as a dead test
run. Producer(NAME) refuses to replace a file that is not a bips pool, but replaces a stale bips
pool whose producer died."""

from __future__ import annotations

import os
import random
import signal
import stat
import struct
from collections.abc import Iterator
from typing import Any

import bips
import pytest
from helpers import child, pool_path, read_message, reap

# Byte offsets in PoolHeader (cpp/src/layout.hpp).
OFF_LAYOUT_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_FILE_SIZE = 16
OFF_DATA_OFFSET = 64
OFF_BUFFER_SIZE = 72
OFF_BUFFER_STRIDE = 80
OFF_CAPACITY = 96
OFF_MAX_CONSUMERS = 100
OFF_POLICY = 104
OFF_NDIM = 112

# Tries every way of opening the pool and reports how each ended:
# [what, "OK" or exception class name, message, errno, path still exists].
# argv: name, then the steps to run, from: list info cons wait prod.
PROBE = r"""
name = sys.argv[1]
path = "/dev/shm/bips." + name
steps = {
    "list": lambda: [[p.name, p.error] for p in bips.list_pools() if p.name == name],
    "info": lambda: repr(bips.pool_info(name)),
    "cons": lambda: bips.Consumer(name),
    "wait": lambda: bips.Consumer(name, timeout=0.3),
    "prod": lambda: bips.Producer(name, capacity=2, buffer_size=64),
}
for what in sys.argv[2:]:
    emit(trying=what)
    t0 = time.monotonic()
    try:
        r = steps[what]()
        if hasattr(r, "close"):
            r.close()
            r = repr(r)
        res = [what, "OK", r, None]
    except Exception as e:
        res = [what, type(e).__name__, str(e), getattr(e, "errno", None)]
    emit(result=res + [os.path.lexists(path)], elapsed=time.monotonic() - t0)
"""


def probe(name: str, *steps: str, timeout: float = 10.0) -> dict:
    """Runs PROBE in a child: {step: (outcome, message, errno, exists_after)}. Fails if the child
    dies by a signal or does not answer within `timeout` seconds (a hang)."""
    results: dict = {}
    with child(PROBE, name, *steps) as proc:
        for step in steps:
            msg = read_message(proc, 30.0)
            assert msg == {"trying": step}, msg
            try:
                msg = read_message(proc, timeout)
            except AssertionError:
                rc, _, err = reap(proc, 0)
                raise AssertionError(
                    f"{step} on {pool_path(name)} hung or crashed (rc={rc}): {err[-2000:]}"
                ) from None
            what, outcome, message, errno, exists = msg["result"]
            assert msg["elapsed"] < timeout
            results[what] = (outcome, message, errno, exists)
        rc, _out, err = reap(proc, 10.0)
        assert rc == 0, f"probe exited with {rc} ({signal.Signals(-rc).name if rc < 0 else ''})"
    return results


@pytest.fixture
def path(pool_name: str) -> Iterator[str]:
    """The pool's file path; whatever the test leaves there is removed afterwards."""
    p = pool_path(pool_name)
    yield p
    try:
        os.unlink(p + "@ctl")
    except FileNotFoundError:
        pass
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        os.rmdir(p)
    else:
        os.unlink(p)


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def valid_images(name: str, **kw: Any) -> tuple[bytes, bytes]:
    """The bytes of a freshly created, valid pool (its producer then closed): the pool file and
    the control file."""
    kw.setdefault("capacity", 2)
    if "shape" not in kw:
        kw.setdefault("buffer_size", 64)
    with bips.Producer(name, **kw), open(pool_path(name), "rb") as f:
        with open(pool_path(name) + "@ctl", "rb") as c:
            return f.read(), c.read()


def valid_image(name: str, **kw: Any) -> bytes:
    """The pool file of a freshly created, valid pool (its producer then closed)."""
    return valid_images(name, **kw)[0]


def patched(image: bytes, offset: int, fmt: str, value: Any) -> bytes:
    b = bytearray(image)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def assert_reported(results: dict, name: str, error: str) -> None:
    """Every step that opens the pool raised `error` with a message naming the pool, and
    list_pools lists the entry with .error set."""
    for step in ("info", "cons", "wait"):
        if step in results:
            outcome, message, _, _ = results[step]
            assert outcome == error, (step, results[step])
            assert name in message, (step, message)
    if "list" in results:
        outcome, entries, _, _ = results["list"]
        assert outcome == "OK" and len(entries) == 1 and entries[0][1], results["list"]
        assert name in entries[0][1] or "version" in entries[0][1]


ALL = ("list", "info", "cons", "wait", "prod")


# --- not a bips file at all ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"hello world\n",
        b"x",
        b"BIPSPOO",  # a prefix of the magic
        b"\xff" * 70000,
        b"PK\x03\x04" + bytes(5000),
    ],
    ids=["text", "1-byte", "magic-prefix", "ones-70k", "zip"],
)
def test_foreign_file(pool_name: str, path: str, data: bytes) -> None:
    write(path, data)
    r = probe(pool_name, *ALL)
    assert_reported(r, pool_name, "CorruptPool")
    outcome, message, _, exists = r["prod"]
    assert outcome == "CorruptPool" and exists, r["prod"]  # refuses to replace it
    assert "not a bips pool" in message
    with open(path, "rb") as f:
        assert f.read() == data  # untouched


@pytest.mark.parametrize("size", [4096, 12288])
def test_zero_filled_file_is_an_abandoned_creation(pool_name: str, path: str, size: int) -> None:
    """A sized file whose header is all zeros, no lock held: what a producer killed between
    sizing the segment and writing its header leaves. Not corrupt, never completed: consumers
    say so, and the next producer (or remove_stale_pool) replaces it."""
    write(path, bytes(size))
    r = probe(pool_name, "list", "info", "cons")
    assert r["cons"][0] == "PoolNotFound" and "never completed" in r["cons"][1], r["cons"]
    assert r["info"][0] == "CorruptPool" and "never completed" in r["info"][1], r["info"]
    outcome, entries, _, _ = r["list"]
    assert outcome == "OK" and len(entries) == 1 and "incomplete" in entries[0][1], r["list"]
    assert bips.remove_stale_pool(pool_name)
    assert not os.path.exists(path)
    write(path, bytes(size))
    with bips.Producer(pool_name, capacity=2, buffer_size=64) as prod:
        assert prod.stats.free == 2


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes(pool_name: str, path: str, seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([16, 639, 640, 4096, 12288, 65536])
    data = bytes(rng.getrandbits(8) for _ in range(size))
    assert not data.startswith(b"BIPSPOOL")
    write(path, data)
    r = probe(pool_name, *ALL)
    assert_reported(r, pool_name, "CorruptPool")
    assert r["prod"][0] == "CorruptPool" and r["prod"][3]


@pytest.mark.parametrize("size", [8, 100, 4096, 65536])
def test_magic_then_random_bytes(pool_name: str, path: str, size: int) -> None:
    """A bips magic followed by garbage: reported as corrupt or incompatible, never trusted."""
    rng = random.Random(size)
    write(path, b"BIPSPOOL" + bytes(rng.getrandbits(8) for _ in range(size - 8)))
    r = probe(pool_name, "list", "info", "cons", "wait")
    for step in ("info", "cons", "wait"):
        assert r[step][0] in ("CorruptPool", "IncompatiblePool"), (step, r[step])
        assert pool_name in r[step][1]
    assert r["list"][0] == "OK" and r["list"][1][0][1]


def test_empty_file(pool_name: str, path: str) -> None:
    """An empty file is what a creator that died before sizing the segment leaves behind."""
    write(path, b"")
    r = probe(pool_name, *ALL)
    assert r["info"][0] in ("CorruptPool", "PoolNotFound") and pool_name in r["info"][1]
    assert r["cons"][0] in ("CorruptPool", "PoolNotFound") and pool_name in r["cons"][1]
    assert r["list"][1][0][1]  # listed, with an error
    assert r["prod"][0] == "OK"  # a new producer replaces it


def test_directory(pool_name: str, path: str) -> None:
    os.mkdir(path)
    r = probe(pool_name, *ALL)
    for step in ("info", "cons", "wait", "prod"):
        assert r[step][0] in ("CorruptPool", "OSError", "IsADirectoryError"), (step, r[step])
    assert os.path.isdir(path)


def test_symlink_is_not_followed(pool_name: str, path: str, tmp_path: Any) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"do not touch")
    os.symlink(target, path)
    r = probe(pool_name, *ALL)
    for step in ("info", "cons", "wait", "prod"):
        assert r[step][0] != "OK", (step, r[step])
    assert target.read_bytes() == b"do not touch"
    assert os.path.islink(path)


def test_fifo_never_hangs(pool_name: str, path: str) -> None:
    os.mkfifo(path)
    r = probe(pool_name, "cons", "list", "info", timeout=5.0)
    assert r["cons"][0] != "OK"
    assert r["info"][0] != "OK"


def test_fifo_consumer_and_producer(pool_name: str, path: str) -> None:
    """Consumer and Producer on a FIFO do not hang (list_pools/pool_info do: see above)."""
    os.mkfifo(path)
    r = probe(pool_name, "cons", "wait", "prod", timeout=5.0)
    assert r["cons"][0] != "OK" and r["wait"][0] != "OK"
    assert r["prod"][0] in ("OK", "CorruptPool", "OSError")


# --- a bips pool, damaged -----------------------------------------------------------------------


def test_stale_valid_pool(pool_name: str, path: str) -> None:
    """A valid pool whose producer is gone: consumers are told so; a producer replaces it."""
    image, ctl = valid_images(pool_name)
    write(path, image)
    write(path + "@ctl", ctl)
    r = probe(pool_name, "list", "info", "cons")
    assert r["list"][1] == [[pool_name, None]]
    assert r["info"][0] == "OK" and "gone" in r["info"][1]
    assert r["cons"][0] in ("ProducerGone", "PoolNotFound") and pool_name in r["cons"][1]
    write(path, valid_image(pool_name))
    assert probe(pool_name, "prod")["prod"][0] == "OK"


def test_layout_version_changed(pool_name: str, path: str) -> None:
    image = valid_image(pool_name)
    for version in (0, bips.LAYOUT_VERSION - 1, bips.LAYOUT_VERSION + 1, 0xFFFFFFFF):
        write(path, patched(image, OFF_LAYOUT_VERSION, "<I", version))
        r = probe(pool_name, "list", "info", "cons", "wait")
        assert_reported(r, pool_name, "IncompatiblePool")
        assert str(version) in r["cons"][1]
    # Its producer is dead: a new producer takes the name over.
    r = probe(pool_name, "prod")
    assert r["prod"][0] == "OK", r


@pytest.mark.parametrize("value", [0, 639, 641, 1 << 30])
def test_header_size_changed(pool_name: str, path: str, value: int) -> None:
    """Another header size means another layout: incompatible (or corrupt), never trusted."""
    write(path, patched(valid_image(pool_name), OFF_HEADER_SIZE, "<I", value))
    r = probe(pool_name, "list", "info", "cons")
    error = r["cons"][0]
    assert error in ("IncompatiblePool", "CorruptPool")
    assert_reported(r, pool_name, error)


@pytest.mark.parametrize(
    "offset, fmt, value",
    [
        (OFF_FILE_SIZE, "<Q", 1 << 62),
        (OFF_FILE_SIZE, "<Q", 0),
        (OFF_DATA_OFFSET, "<Q", 1 << 40),
        (OFF_DATA_OFFSET, "<Q", 8),
        (OFF_BUFFER_SIZE, "<Q", 1 << 50),
        (OFF_BUFFER_SIZE, "<Q", 0),
        (OFF_BUFFER_STRIDE, "<Q", 0),
        (OFF_BUFFER_STRIDE, "<Q", 3),
        (OFF_CAPACITY, "<I", 0),
        (OFF_CAPACITY, "<I", 1 << 30),
        (OFF_MAX_CONSUMERS, "<I", 0),
        (OFF_MAX_CONSUMERS, "<I", 1000),
        (OFF_POLICY, "<I", 77),
        (OFF_NDIM, "<I", 1000),
    ],
    ids=lambda v: str(v),
)
def test_header_field_out_of_range(
    pool_name: str, path: str, offset: int, fmt: str, value: int
) -> None:
    image = valid_image(pool_name, shape=(4, 4), dtype="float32")
    write(path, patched(image, offset, fmt, value))
    r = probe(pool_name, "list", "info", "cons")
    assert_reported(r, pool_name, "CorruptPool")


def test_random_header_damage_never_crashes(pool_name: str, path: str) -> None:
    """Random bytes written over random header fields of a stale pool: every open ends in an
    exception or succeeds, and no process dies by a signal."""
    image = valid_image(pool_name, shape=(8, 8), dtype="uint16", meta_size=16)
    rng = random.Random(99)
    for _ in range(12):
        b = bytearray(image)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(8, 640)  # keep the magic so it is parsed further
            b[at] = rng.getrandbits(8)
        write(path, bytes(b))
        r = probe(pool_name, "list", "info", "cons")
        for step in ("info", "cons"):
            assert r[step][0] in (
                "OK",
                "CorruptPool",
                "IncompatiblePool",
                "ProducerGone",
                "PoolNotFound",
            ), r[step]


@pytest.mark.parametrize("keep", ["zero", "part-header", "header", "control", "data-1"])
def test_truncated_stale_pool(pool_name: str, path: str, keep: str) -> None:
    image = valid_image(pool_name, capacity=3, buffer_size=5000)
    data_offset = struct.unpack_from("<Q", image, OFF_DATA_OFFSET)[0]
    size = {
        "zero": 0,
        "part-header": 100,
        "header": 640,
        "control": 4096,
        "data-1": len(image) - 1,
    }[keep]
    write(path, image)
    os.truncate(path, size)
    assert data_offset < len(image)
    r = probe(pool_name, "list", "info", "cons", "prod")
    for step in ("info", "cons"):
        assert r[step][0] in ("CorruptPool", "PoolNotFound"), (step, r[step])
        assert pool_name in r[step][1]
    if size:
        assert r["cons"][0] == "CorruptPool"
        assert "truncated" in r["cons"][1] or "bytes" in r["cons"][1]
    assert r["prod"][0] == "OK"  # a stale bips pool is replaced


# A live producer that waits for SIGTERM, then closes cleanly.
LIVE = r"""
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
with bips.Producer(sys.argv[1], capacity=3, buffer_size=5000) as prod:
    emit(up=True)
    while True:
        time.sleep(0.05)
"""


def test_live_pool_truncated(pool_name: str, path: str) -> None:
    """A live pool cut down to its control and meta sections: a consumer is refused with
    CorruptPool (no SIGBUS), and a second producer cannot take the name."""
    with child(LIVE, pool_name) as live:
        assert read_message(live, 30.0) == {"up": True}
        with open(path, "rb") as f:
            header = f.read(640)
        data_offset = struct.unpack_from("<Q", header, OFF_DATA_OFFSET)[0]
        os.truncate(path, data_offset)
        r = probe(pool_name, "list", "info", "cons", "prod")
        assert r["cons"][0] == "CorruptPool" and pool_name in r["cons"][1], r["cons"]
        assert r["info"][0] == "CorruptPool", r["info"]
        assert r["prod"][0] in ("PoolBusy", "CorruptPool"), r["prod"]
        assert r["prod"][3]  # the live producer's file is still there
        live.send_signal(signal.SIGTERM)
        rc, _, err = reap(live, 10.0)
        assert rc == 0, err


def test_live_pool_with_other_layout_version(pool_name: str, path: str) -> None:
    """A live producer of another layout version: consumers get IncompatiblePool, and a new
    producer must not replace the pool under it."""
    with child(LIVE, pool_name) as live:
        assert read_message(live, 30.0) == {"up": True}
        fd = os.open(path, os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("<I", bips.LAYOUT_VERSION + 1), OFF_LAYOUT_VERSION)
            r = probe(pool_name, "list", "info", "cons", "prod")
            assert_reported(
                {k: r[k] for k in ("list", "info", "cons")}, pool_name, "IncompatiblePool"
            )
            assert r["prod"][0] in ("PoolBusy", "IncompatiblePool"), r["prod"]
            assert r["prod"][3]
            os.pwrite(fd, struct.pack("<I", bips.LAYOUT_VERSION), OFF_LAYOUT_VERSION)
        finally:
            os.close(fd)
        live.send_signal(signal.SIGTERM)
        rc, _, err = reap(live, 10.0)
        assert rc == 0, err


def test_killed_producer_pool_is_replaced(pool_name: str, path: str) -> None:
    with child(LIVE, pool_name) as live:
        assert read_message(live, 30.0) == {"up": True}
        with open(path, "rb") as f:
            old = f.read(640)
        live.kill()
        reap(live, 10.0)
    assert os.path.exists(path)
    r = probe(pool_name, "list", "info", "prod")
    assert r["list"][1] == [[pool_name, None]]
    assert "gone" in r["info"][1]
    assert r["prod"][0] == "OK"
    with bips.Producer(pool_name, capacity=5, buffer_size=100) as prod:
        with open(path, "rb") as f:
            assert f.read(640) != old
        assert prod.capacity == 5 and bips.pool_info(pool_name).producer_alive


def test_remove_stale_pool_leaves_foreign_files(pool_name: str, path: str) -> None:
    write(path, b"not mine")
    with pytest.raises(bips.Error):
        bips.remove_stale_pool(pool_name)
    assert os.path.exists(path)
