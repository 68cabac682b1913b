# SPDX-License-Identifier: Apache-2.0
"""The ``bips`` command line, run as ``python -m bips`` against real pools whose producer and
consumers are other processes: list, info, top, tap, snapshot, clean, bench, and its errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import bips

# Imported before a test forks a child that runs the CLI as a user who may not be able to read
# this Python installation.
import bips.cli
import numpy as np
import pytest
from conftest import unique_name
from helpers import child, kill_and_reap, pool_path, read_message, reap, spawn_python, wait_until
from test_permissions import run_as_other_user

CLI_TIMEOUT = 30.0

# A producer that waits for `consumers` consumers, publishes `frames` frames (frame i filled
# with i), says so, then either stays alive until killed ("hold") or closes ("close").
PRODUCER = r"""
name, consumers, frames, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with bips.Producer(name, capacity=8, shape=(6, 10, 3), dtype="uint8", policy="block") as p:
    emit(ready=True)
    deadline = time.monotonic() + 20
    while p.stats.consumers < consumers and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(frames):
        b = p.acquire(timeout=10)
        b.numpy()[:] = i
        p.publish(b)
        time.sleep(0.002)
    emit(published=frames)
    if end == "hold":
        time.sleep(120)
"""

# A consumer that receives `frames` frames, says so, then stays attached until killed.
CONSUMER = r"""
name, frames = sys.argv[1], int(sys.argv[2])
with bips.Consumer(name, timeout=10) as c:
    emit(attached=True)
    for _ in range(frames):
        c.receive(timeout=10).release()
    emit(received=frames)
    time.sleep(120)
"""


def run_cli(*args: str, timeout: float = CLI_TIMEOUT, env: dict | None = None) -> Any:
    """``python -m bips ARGS`` with no stdin; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "bips", *args],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def spawn_cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bips", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def assert_one_line_error(r: Any, *words: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bips: error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def live_pool() -> Iterator[str]:
    """A pool with a live producer that published 20 frames and two live consumers that
    received all of them (all in other processes); shared by the read-only commands."""
    name = unique_name("cli")
    procs = []
    try:
        prod = spawn_python(PRODUCER, name, 2, 20, "hold")
        procs.append(prod)
        assert read_message(prod, timeout=15)["ready"]
        for _ in range(2):
            procs.append(spawn_python(CONSUMER, name, 20))
            assert read_message(procs[-1], timeout=15)["attached"]
        assert read_message(prod, timeout=15)["published"] == 20
        for c in procs[1:]:
            assert read_message(c, timeout=15)["received"] == 20
        yield name
    finally:
        for p in reversed(procs):
            p.terminate()  # SIGTERM: no finally blocks run, so the last one out may leave it
        for p in procs:
            reap(p, 5.0)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        try:
            bips.remove_stale_pool(name)
        except bips.Error:
            pass


# ---- list / info / top ----------------------------------------------------------------------


def test_list_text_and_json(live_pool: str) -> None:
    r = run_cli("list")
    assert r.returncode == 0, r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.split()[:1] == [live_pool]]
    cols = line.split()
    assert cols[1] == "alive" and cols[2] == "2"  # producer, consumers
    assert "20" in cols  # published
    assert pwd.getpwuid(os.getuid()).pw_name in cols and "0600" in cols

    r = run_cli("list", "--json")
    assert r.returncode == 0, r.stderr
    pools = json.loads(r.stdout)
    assert isinstance(pools, list)
    (p,) = [p for p in pools if p["name"] == live_pool]
    assert p["error"] is None and p["producer_alive"] is True
    assert p["consumers"] == 2 and p["published"] == 20 and p["dropped"] == 0
    assert p["shape"] == [6, 10, 3] and p["dtype"] == "uint8" and p["capacity"] == 8
    assert p["policy"] == "block" and p["mode"] == 0o600 and p["owner"] == os.getuid()
    assert p["last_publish_ns"] > 0 and p["sampled_ns"] >= p["last_publish_ns"]
    assert len(p["slots"]) == 2
    for s in p["slots"]:
        assert s["alive"] and s["received"] == 20 and s["last_seq"] == 19 and s["lag"] == 0
        assert s["attached_ns"] > 0 and s["last_receive_ns"] >= s["attached_ns"]
    # Every field of bips.PoolInfo / SlotInfo is there.
    info = bips.pool_info(live_pool)
    public = {k for k in dir(info) if not k.startswith("_")}
    assert public <= set(p), public - set(p)
    assert {k for k in dir(info.slots[0]) if not k.startswith("_")} <= set(p["slots"][0])


def test_info_text_and_json(live_pool: str) -> None:
    r = run_cli("info", live_pool)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for want in ("6x10x3 uint8", "policy", "block", "0600", "published", "acquire waits"):
        assert want in out, (want, out)
    pids = {s.pid for s in bips.pool_info(live_pool).slots}
    rows = [
        ln.split() for ln in out.splitlines() if ln.split()[:2] in (["0", "alive"], ["1", "alive"])
    ]
    assert len(rows) == 2, out
    # SLOT STATE PID ATTACHED(2 words) RECEIVED DROPPED SKIPPED QUEUED HELD LAG ...
    assert {int(r[2]) for r in rows} == pids
    for row in rows:
        assert row[5:11] == ["20", "0", "0", "0", "0", "0"], row

    r = run_cli("info", "--json", pool_path(live_pool))  # the file's path works too
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["name"] == live_pool and p["published"] == 20 and p["producer_pid"] > 0
    assert sorted(s["pid"] for s in p["slots"]) == sorted(pids)


def test_top_iterations_without_a_tty(live_pool: str) -> None:
    r = run_cli("top", "--iterations", "2", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("bips top") == 2
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] == [live_pool]]
    assert len(lines) == 2 and all(ln[1] == "alive" for ln in lines)
    slots = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("slot ")]
    assert len(slots) >= 4  # two consumers, two refreshes (other pools may show too)


@pytest.mark.parametrize("how", ["q", "ctrl-c"])
def test_top_live_view_in_a_terminal_quits_on_q_and_ctrl_c(live_pool: str, how: str) -> None:
    """On a terminal (a pty here) top redraws in place until q or Ctrl-C, then exits 0 with the
    terminal's mode restored."""
    import pty
    import termios

    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bips", "top", "--interval", "0.2"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        env=dict(os.environ, COLUMNS="200", LINES="50", TERM="xterm"),
    )  # fmt: skip
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + 20
        while live_pool.encode() not in screen or screen.count(b"bips top") < 2:
            assert time.monotonic() < deadline, screen[-2000:]
            if select.select([master], [], [], 0.5)[0]:
                screen += os.read(master, 65536)
        if how == "q":
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, screen[-2000:]
        assert termios.tcgetattr(master)[3] == before[3]  # lflag: echo and canonical mode back
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"Traceback" not in screen


# ---- tap ------------------------------------------------------------------------------------


def test_tap_count_prints_a_line_per_frame(pool_name: str) -> None:
    with child(PRODUCER, pool_name, 1, 8, "close", timeout=15) as prod:
        assert read_message(prod, timeout=15)["ready"]
        tap = spawn_cli("tap", pool_name, "--count", "5", "--timeout", "20")
        rc, out, err = reap(tap, CLI_TIMEOUT)
        assert rc == 0, err
        lines = out.splitlines()
        assert len(lines) == 5, out
        seqs = []
        for ln in lines:
            f = dict(kv.split("=", 1) for kv in ln.split())
            assert f["shape"] == "6x10x3" and f["dtype"] == "uint8"
            assert 0 <= float(f["latency_ms"]) < 10_000
            seqs.append(int(f["seq"]))
        assert seqs == list(range(5))
        assert "frames=5" in err


def test_tap_ends_with_a_summary_at_end_of_stream(pool_name: str) -> None:
    with child(PRODUCER, pool_name, 1, 3, "close", timeout=15) as prod:
        assert read_message(prod, timeout=15)["ready"]
        tap = spawn_cli("tap", pool_name, "--every-second", "--timeout", "20")
        rc, _, err = reap(tap, CLI_TIMEOUT)
        assert rc == 0, err
        assert "end of stream" in err and "frames=3" in err and "seq=0..2" in err, err


def test_tap_ctrl_c_exits_130_quietly(pool_name: str) -> None:
    with child(PRODUCER, pool_name, 1, 1, "hold", timeout=1) as prod:
        assert read_message(prod, timeout=15)["ready"]
        tap = spawn_cli("tap", pool_name, "--timeout", "20")
        try:
            assert read_message(prod, timeout=20)["published"] == 1
            assert wait_until(
                lambda: [s.received for s in bips.pool_info(pool_name).slots] == [1], 20
            )
            tap.send_signal(signal.SIGINT)
            rc, out, err = reap(tap, 10)
        finally:
            kill_and_reap(tap)
            kill_and_reap(prod, signal.SIGTERM)
        assert rc == 130, (rc, err)
        assert out.startswith("seq=0 ") and err == ""
    bips.remove_stale_pool(pool_name)


# ---- snapshot -------------------------------------------------------------------------------

# Publishes one frame of kind argv[2] once a consumer is attached, then waits for it to leave.
IMAGE_PRODUCER = r"""
name, kind, path = sys.argv[1], sys.argv[2], sys.argv[3]
h, w = 6, 10
rng = np.random.default_rng(7)
meta = b""
if kind in ("rgb", "bgr"):
    data = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    meta = json.dumps({"format": kind.upper(), "width": w, "height": h}).encode() if kind == "bgr" else b""
elif kind == "bgrx":
    data = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    meta = json.dumps({"format": "BGRx", "width": w, "height": h}).encode()
elif kind == "gray8":
    data = rng.integers(0, 256, (h, w), dtype=np.uint8)
elif kind == "gray16":
    data = rng.integers(0, 65536, (h, w), dtype=np.uint16)
elif kind in ("i420", "nv12"):
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u = rng.integers(16, 241, (h // 2, w // 2), dtype=np.uint8)
    v = rng.integers(16, 241, (h // 2, w // 2), dtype=np.uint8)
    np.save(path + ".yuv.npy", np.stack([u, v]))
    if kind == "i420":
        data = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
        planes = [{"offset": 0, "stride": w}, {"offset": h * w, "stride": w // 2},
                  {"offset": h * w + (h // 2) * (w // 2), "stride": w // 2}]
    else:
        data = np.concatenate([y.ravel(), np.stack([u, v], axis=-1).ravel()])
        planes = [{"offset": 0, "stride": w}, {"offset": h * w, "stride": w}]
    fmt = kind.upper()
    meta = json.dumps({"caps": f"video/x-raw, format=(string){fmt}, width=(int){w}, height=(int){h}",
                       "format": fmt, "width": w, "height": h, "planes": planes,
                       "pts": None, "duration": None}).encode()
elif kind == "float":
    data = np.zeros((h, w, 2), dtype=np.float32)
np.save(path, data)
with bips.Producer(name, capacity=2, shape=data.shape, dtype=data.dtype, meta_size=4096) as p:
    emit(ready=True)
    deadline = time.monotonic() + 20
    while p.stats.consumers < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    b = p.acquire(timeout=5)
    b.numpy()[...] = data
    p.publish(b, meta=meta)
    while p.stats.consumers > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def _bt601(y: Any, u: Any, v: Any) -> Any:
    """Expected RGB of limited-range BT.601 YUV, chroma repeated 2x2 (written independently
    of the CLI's conversion: one matrix product per pixel)."""
    h, w = y.shape
    full_u = u.repeat(2, 0).repeat(2, 1)[:h, :w]
    full_v = v.repeat(2, 0).repeat(2, 1)[:h, :w]
    yuv = np.stack([y - 16.0, full_u - 128.0, full_v - 128.0], axis=-1) * [
        255 / 219,
        255 / 224,
        255 / 224,
    ]
    kr, kb = 0.299, 0.114
    kg = 1 - kr - kb
    m = np.array(
        [
            [1, 0, 2 * (1 - kr)],
            [1, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg],
            [1, 2 * (1 - kb), 0],
        ]
    )
    return np.clip(np.rint(yuv @ m.T), 0, 255)


@pytest.mark.parametrize("kind", ["rgb", "bgr", "bgrx", "gray8", "gray16", "i420", "nv12"])
def test_snapshot_saves_the_frame(pool_name: str, kind: str, tmp_path: Any) -> None:
    from PIL import Image

    npy = str(tmp_path / "frame.npy")
    png = str(tmp_path / "out.png")
    with child(IMAGE_PRODUCER, pool_name, kind, npy, timeout=15) as prod:
        assert read_message(prod, timeout=15)["ready"]
        r = run_cli("snapshot", pool_name, png, "--timeout", "20")
        assert r.returncode == 0, r.stderr
    data = np.load(npy)
    with Image.open(png) as img:
        img.load()
        mode, pixels = img.mode, np.asarray(img)
    if kind == "rgb":
        assert mode == "RGB" and np.array_equal(pixels, data)
    elif kind == "bgr":
        assert mode == "RGB" and np.array_equal(pixels, data[..., ::-1])
    elif kind == "bgrx":
        assert mode == "RGB" and np.array_equal(pixels, data[..., [2, 1, 0]])
    elif kind == "gray8":
        assert mode == "L" and np.array_equal(pixels, data)
    elif kind == "gray16":
        assert mode.startswith("I;16") or mode == "I"
        assert np.array_equal(pixels.astype(np.int64), data.astype(np.int64))
    else:  # YUV: Y, U and V as the producer made them
        y = data[:60].reshape(6, 10).astype(np.float64)
        u, v = np.load(npy + ".yuv.npy").astype(np.float64)
        assert mode == "RGB" and pixels.shape == (6, 10, 3)
        assert np.abs(pixels.astype(np.int64) - _bt601(y, u, v)).max() <= 1


def test_snapshot_refuses_a_frame_it_cannot_render(pool_name: str, tmp_path: Any) -> None:
    png = str(tmp_path / "out.png")
    with child(IMAGE_PRODUCER, pool_name, "float", str(tmp_path / "f.npy"), timeout=15) as prod:
        assert read_message(prod, timeout=15)["ready"]
        r = run_cli("snapshot", pool_name, png, "--timeout", "20")
    assert_one_line_error(r, "cannot render", "float32")
    assert not os.path.exists(png)


def test_snapshot_without_pillow_says_what_to_install(tmp_path: Any) -> None:
    fake = tmp_path / "nopil" / "PIL"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('Pillow is hidden by this test')\n")
    path = os.pathsep.join([str(tmp_path / "nopil"), os.environ.get("PYTHONPATH", "")])
    r = run_cli("snapshot", unique_name(), str(tmp_path / "x.png"), env={"PYTHONPATH": path})
    assert_one_line_error(r, "pip install 'bips[image]'")


# ---- clean ----------------------------------------------------------------------------------


def test_clean_removes_only_dead_pools(tmp_path: Any) -> None:
    dead, live, junk = unique_name("dead"), unique_name("live"), unique_name("junk")
    with open(pool_path(junk), "wb") as f:
        f.write(b"not a bips pool, just a file with a bips-like name" * 4)
    procs = []
    try:
        # A pool whose producer and consumer are SIGKILLed: the file stays behind.
        procs.append(spawn_python(PRODUCER, dead, 1, 1, "hold"))
        assert read_message(procs[-1], timeout=15)["ready"]
        procs.append(spawn_python(CONSUMER, dead, 1))
        assert read_message(procs[-1], timeout=15)["attached"]
        assert read_message(procs[-1], timeout=15)["received"] == 1
        procs.append(spawn_python(PRODUCER, live, 0, 0, "hold"))
        assert read_message(procs[-1], timeout=15)["ready"]
        kill_and_reap(procs[0])
        kill_and_reap(procs[1])
        assert os.path.exists(pool_path(dead))

        r = run_cli("clean", "--dry-run", dead, live, junk)
        assert r.returncode == 0, r.stderr
        out = {ln.split(":")[0]: ln for ln in r.stdout.splitlines()}
        assert "would remove" in out[dead] and "in use" in out[live], r.stdout
        assert os.path.exists(pool_path(dead))

        r = run_cli("clean", dead, live, junk)
        assert r.returncode == 0, r.stderr
        out = {ln.split(":")[0]: ln for ln in r.stdout.splitlines()}
        assert "removed" in out[dead], r.stdout
        assert "in use" in out[live] and "left alone" in out[live], r.stdout
        assert "not a bips pool" in out[junk], r.stdout
        assert "1 pool removed" in r.stdout
        assert not os.path.exists(pool_path(dead))
        assert os.path.exists(pool_path(live)) and os.path.exists(pool_path(junk))
        assert bips.pool_info(live).producer_alive
    finally:
        for p in procs:
            kill_and_reap(p, signal.SIGTERM)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        os.unlink(pool_path(junk))
        for n in (dead, live):
            try:
                bips.remove_stale_pool(n)
            except bips.Error:
                pass


# ---- bench ----------------------------------------------------------------------------------


def test_bench_quick_json() -> None:
    proc = spawn_cli("bench", "--quick", "--json", "--sizes", "64B")
    rc, out, err = reap(proc, 90)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["config"]["mode"] == "quick" and doc["interrupted"] is False
    groups = {r["group"]: r for r in doc["results"]}
    assert set(groups) == {"handoff", "latency"}, doc["results"]
    ho, lat = groups["handoff"], groups["latency"]
    assert ho["size"] == "64B" and ho["consumers"] == 1
    assert ho["mean_fps"] > 0 and ho["producer_cpu_us_per_frame"] > 0
    assert ho["out_of_sequence"] == 0
    assert 0 < lat["p50_us"] <= lat["p99_us"] and lat["n"] > 0
    # Every pool the run made is gone.
    assert not [n for n in os.listdir("/dev/shm") if f"bbench{proc.pid}" in n]


def test_demo_consumers_read_the_producers_pixels_in_place() -> None:
    proc = run_cli("demo", "--frames", "40", "--consumers", "2", timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "producer: 40 frames published" in out and ", 0 dropped" in out, out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1"], out
    for r in rows:
        # consumer, pid, frames, fps, p50, p99, pattern, address -> /dev/shm/bips.demo-PID
        assert r[2] == "40" and r[6] == "ok", out
        assert r[9] == f"/dev/shm/bips.demo-{proc_pid(out)}" and "(zero copy)" in " ".join(r)
    assert "the arrays are the shared memory" in out


def proc_pid(demo_output: str) -> str:
    """The pid in the demo's pool name, from its first line ("... pool 'demo-PID', ...")."""
    first = demo_output.splitlines()[0]
    return first.split("pool 'demo-", 1)[1].split("'", 1)[0]


# ---- errors ---------------------------------------------------------------------------------


def test_errors_are_one_line_and_exit_1(tmp_path: Any) -> None:
    missing = unique_name("missing")
    assert_one_line_error(run_cli("info", missing), "no pool named", missing)
    assert_one_line_error(run_cli("info", "bad/name"), "invalid pool name")
    assert_one_line_error(run_cli("tap", missing, "--timeout", "0.3"), missing)
    assert_one_line_error(run_cli("bench", "--sizes", "huge"), "unknown size")
    junk = unique_name("junk")
    with open(pool_path(junk), "wb") as f:
        f.write(b"\x01" * 8192)
    try:
        assert_one_line_error(run_cli("info", junk), "not a valid bips pool")
        assert_one_line_error(
            run_cli("snapshot", junk, str(tmp_path / "x.png"), "--timeout", "0.3"), junk
        )
    finally:
        os.unlink(pool_path(junk))


def _cli_as_nobody(args: list[str]) -> tuple[int, str, str]:
    """bips.cli.main(args) in a forked child running as uid 65534 (root's Python interpreter
    may not be runnable by that user); returns (status, stdout, stderr)."""

    def run() -> dict[str, Any]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = bips.cli.main(args)
        return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}

    r = run_as_other_user(run)
    assert "ok" in r, r
    return r["ok"]["rc"], r["ok"]["out"], r["ok"]["err"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_permission_denied_is_one_line(pool_name: str) -> None:
    with bips.Producer(pool_name, capacity=2, buffer_size=8):  # mode 0600, owned by root
        rc, out, err = _cli_as_nobody(["info", pool_name])
        assert rc == 1 and "Traceback" not in err, (rc, err)
        assert err.startswith("bips: error: permission denied") and err.count("\n") == 1, err
        rc, out, err = _cli_as_nobody(["list"])
        assert rc == 0, err
        (line,) = [ln for ln in out.splitlines() if ln.startswith(pool_name + ":")]
        assert "unreadable" in line and "ermission denied" in line, line
