# SPDX-License-Identifier: Apache-2.0
"""The GStreamer plugin (bipssink, bipssrc) and bips.video.

Pipelines run in ``gst-launch-1.0`` subprocesses with the plugin from this installation
(``GST_PLUGIN_PATH=bips.get_gst_plugin_path()``) and a private registry file. Frames are checked
against the same ``videotestsrc`` pattern rendered straight into a file: ``pattern=ball`` draws a
different, deterministic frame for each frame number. The GStreamer tests are skipped where
gst-launch-1.0 or the plugin is missing, except under CI, where that is an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bips
import bips.video
import numpy as np
import pytest
from helpers import check, child, fill, read_message, reap, wait_until

GST_LAUNCH = shutil.which("gst-launch-1.0")
GST_INSPECT = shutil.which("gst-inspect-1.0")
PLUGIN = os.path.join(bips.get_gst_plugin_path(), "libgstbips.so")
_MISSING = [
    what
    for what, present in (
        ("gst-launch-1.0", GST_LAUNCH),
        ("gst-inspect-1.0", GST_INSPECT),
        (PLUGIN, os.path.exists(PLUGIN)),
    )
    if not present
]
_WHY = (
    f"missing {', '.join(_MISSING)} (apt install gstreamer1.0-tools gstreamer1.0-plugins-base "
    "libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev, then reinstall bips)"
)
if _MISSING and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    pytest.fail(f"the GStreamer plugin tests must run in CI: {_WHY}", pytrace=False)
requires_gst = pytest.mark.skipif(bool(_MISSING), reason=_WHY)

FRAME_NS = 10**9 // 30  # a frame at videotestsrc's default 30/1 (rounded down)
# bipssink's upload counters in a host pool
NO_UPLOADS = {"uploads": 0, "upload-bytes": 0}


def pts_of(n: int) -> int:
    """videotestsrc's PTS of frame n at 30/1."""
    return n * 10**9 // 30


# ---- running gst-launch-1.0 -----------------------------------------------------------------


def _die_with_parent() -> None:
    # gst-launch holds pools: it must not outlive a test process that crashed.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Launch:
    """A ``gst-launch-1.0 -m [-e] PIPELINE`` process. Its output goes to a file, so that it never
    blocks on a full pipe however long it runs."""

    def __init__(self, env: dict[str, str], desc: str, *, eos: bool = True) -> None:
        assert GST_LAUNCH is not None
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close())
        args = [GST_LAUNCH, "-m", *(["-e"] if eos else []), *shlex.split(desc)]
        self.desc = desc
        self._final = ""
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (tests spawn from one thread)
        )

    def output(self) -> str:
        if self._log.closed:
            return self._final
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"gst-launch did not finish within {timeout} s:\n{self.tail()}")

    def expect_success(self, timeout: float = 60.0) -> str:
        rc = self.wait(timeout)
        out = self.output()
        assert rc == 0, f"gst-launch {self.desc!r} exited with {rc}:\n{self.tail()}"
        assert "ERROR" not in out, self.tail()
        return out

    def tail(self, n: int = 6000) -> str:
        return self.output()[-n:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._final = self.output()
        self._log.close()


@contextlib.contextmanager
def launch(
    env: dict[str, str], desc: str, *, pools: tuple[str, ...] = (), eos: bool = True
) -> Iterator[Launch]:
    """Runs a pipeline for the duration of the block; it is always killed and reaped, and the
    named pools of a killed producer are cleaned up."""
    run = Launch(env, desc, eos=eos)
    try:
        yield run
    finally:
        killed = run.running()
        run.close()
        if killed:
            for name in pools:
                with contextlib.suppress(bips.Error, OSError):
                    wait_until(lambda n=name: bips.remove_stale_pool(n), timeout=3.0)


def run_pipeline(env: dict[str, str], desc: str, timeout: float = 60.0) -> str:
    with launch(env, desc) as run:
        return run.expect_success(timeout)


def stats(output: str, element: str) -> dict[str, int]:
    """The counters of the ``<element>-stats`` message (bipssink/bipssrc post it at EOS)."""
    found = re.findall(rf"{element}-stats, (.*)", output)
    assert found, f"no {element}-stats message in:\n{output[-4000:]}"
    return {k: int(v) for k, v in re.findall(r"([\w-]+)=\(guint64\)(\d+)", found[-1])}


@pytest.fixture(scope="module")
def gst_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for gst-launch: this installation's plugin and a private registry (built
    once here, so that no test's timeout includes the first scan of every plugin)."""
    assert GST_INSPECT is not None
    env = dict(os.environ)
    env["GST_PLUGIN_PATH"] = bips.get_gst_plugin_path()
    env["GST_REGISTRY"] = str(tmp_path_factory.mktemp("gst") / "registry.bin")
    env["GST_DEBUG_NO_COLOR"] = "1"
    env.pop("GST_PLUGIN_LOADING_WHITELIST", None)
    subprocess.run([GST_INSPECT, "bipssink"], env=env, capture_output=True, timeout=180, check=True)
    return env


def reference_frames(env: dict[str, str], src: str, n: int) -> Iterator[bytes]:
    """The n frames ``src`` (a source and caps) renders, read from gst-launch's stdout."""
    assert GST_LAUNCH is not None
    proc = subprocess.Popen(
        [GST_LAUNCH, "-q", *shlex.split(f"{src} ! fdsink fd=1")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (tests spawn from one thread)
    )
    try:
        assert proc.stdout is not None
        data = proc.stdout.read()
        rc = proc.wait(timeout=60)
        assert rc == 0, proc.stderr.read().decode() if proc.stderr else rc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    assert len(data) % n == 0, f"{len(data)} bytes is not {n} frames"
    size = len(data) // n
    for i in range(n):
        yield data[i * size : (i + 1) * size]


def visible(data: bytes | np.ndarray, meta: dict[str, Any]) -> list[np.ndarray]:
    """The pixels of a frame (padding left out), plane by plane."""
    return [p.copy() for p in bips.video.planes(data, meta)]


def planes_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# ---- bipssink -------------------------------------------------------------------------------


@requires_gst
def test_inspect_lists_the_properties(gst_env: dict[str, str]) -> None:
    assert GST_INSPECT is not None
    for element, props in (
        (
            "bipssink",
            [
                "pool", "capacity", "policy", "mode", "max-consumers", "acquire-timeout",
                "wait-for-consumers", "device", "published", "copies", "zero-copy",
                "uploads", "upload-bytes",
            ],
        ),
        (
            "bipssrc",
            ["pool", "timeout", "reconnect", "latest", "is-live", "timestamp-mode", "received"],
        ),
    ):  # fmt: skip
        proc = subprocess.run(
            [GST_INSPECT, element],
            env=gst_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        for prop in props:
            assert re.search(rf"^\s+{re.escape(prop)}\s+: \S", proc.stdout, re.MULTILINE), (
                element,
                prop,
            )
        assert "Apache 2.0" in proc.stdout


def test_elements_accept_the_formats_of_the_video_convention(gst_env: dict[str, str]) -> None:
    """The pad templates' formats (a caps string in the plugin) are the convention's table
    (<bips/video.hpp>, which bips.video reads) but GRAY16_BE, which only bips.video reads."""
    assert GST_INSPECT is not None
    expected = set(bips.video.FORMATS) - {"GRAY16_BE"}
    for element in ("bipssink", "bipssrc"):
        proc = subprocess.run(
            [GST_INSPECT, element],
            env=gst_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        found = re.search(r"^\s+format: \{([^}]*)\}", proc.stdout, re.MULTILINE)
        assert found, proc.stdout
        formats = {f.strip().removeprefix("(string)") for f in found.group(1).split(",")}
        assert formats == expected, (element, formats ^ expected)


@requires_gst
def test_sink_delivers_every_frame_in_order_zero_copy(
    gst_env: dict[str, str], pool_name: str
) -> None:
    n = 300
    src = "videotestsrc is-live=false pattern=ball num-buffers=300 ! "
    src += "video/x-raw,format=RGB,width=640,height=360"
    want = [hashlib.sha1(f).hexdigest() for f in reference_frames(gst_env, src, n)]
    got, seqs, stamps = [], [], []
    desc = f"{src} ! bipssink pool={pool_name} policy=block sync=false wait-for-consumers=1"
    with launch(gst_env, desc, pools=(pool_name,)) as run:
        # The sink holds its first frame until this consumer is attached: nothing is missed.
        with bips.Consumer(pool_name, timeout=30.0) as cons:
            for frame in cons:  # ends at end of stream
                a = frame.numpy()
                assert a.shape == (360, 640, 3) and a.dtype == np.uint8
                got.append(hashlib.sha1(a).hexdigest())
                seqs.append(frame.seq)
                stamps.append(frame.timestamp_ns)
                if frame.seq in (0, 1):
                    meta = bips.video.parse_meta(frame)
                    assert meta["caps"].startswith("video/x-raw, format=(string)RGB")
                    assert (meta["format"], meta["width"], meta["height"]) == ("RGB", 640, 360)
                    assert meta["planes"] == [{"offset": 0, "stride": 1920}]
                    assert meta["pts"] == pts_of(frame.seq)
                    assert meta["duration"] in (FRAME_NS, FRAME_NS + 1)
                    # Capture time on CLOCK_MONOTONIC (PTS + base time); the pipeline runs
                    # ahead of real time with sync=false, but not by more than the stream.
                    assert abs(frame.timestamp_ns - time.monotonic_ns()) < 15 * 10**9
                del a
                frame.release()
            with pytest.raises(bips.ProducerGone):
                cons.receive(timeout=1.0)
        out = run.expect_success()
    assert seqs == list(range(n))
    assert got == want
    assert set(np.diff(stamps)) <= {FRAME_NS, FRAME_NS + 1}  # PTS steps, on the monotonic clock
    assert stats(out, "bipssink") == {"published": n, "copies": 0, "zero-copy": n, **NO_UPLOADS}


@requires_gst
def test_sink_copies_buffers_that_are_not_its_own(gst_env: dict[str, str], pool_name: str) -> None:
    # identity drop-allocation=true hides the sink's pool from upstream: every frame is copied,
    # plane by plane, into the standard layout (321 RGB pixels: rows padded to 964 bytes).
    n = 20
    src = f"videotestsrc pattern=ball num-buffers={n} ! video/x-raw,format=RGB,width=321,height=241"
    want = list(reference_frames(gst_env, src, n))
    desc = (
        f"{src} ! identity drop-allocation=true ! "
        f"bipssink pool={pool_name} sync=false wait-for-consumers=1"
    )
    with launch(gst_env, desc, pools=(pool_name,)) as run:
        with bips.Consumer(pool_name, timeout=30.0) as cons:
            for frame in cons:
                meta = bips.video.parse_meta(frame)
                assert meta["planes"] == [{"offset": 0, "stride": 964}]
                # Padded rows: published flat, the planes view skips the padding.
                assert frame.shape == (964 * 241,) and frame.dtype == np.uint8
                (img,) = bips.video.planes(frame)
                assert img.shape == (241, 321, 3) and not img.flags.writeable
                assert np.shares_memory(img, frame.numpy())
                assert planes_equal([img], visible(want[frame.seq], meta)), frame.seq
                del img
                frame.release()
        out = run.expect_success()
    assert stats(out, "bipssink") == {"published": n, "copies": n, "zero-copy": 0, **NO_UPLOADS}


@requires_gst
def test_buffers_dropped_upstream_go_back_to_the_pool(
    gst_env: dict[str, str], pool_name: str
) -> None:
    # identity drops about half of the buffers it got from the sink's pool: each must give its
    # bips buffer back, or a pool of two would run dry and the pipeline hang.
    n = 200
    desc = (
        f"videotestsrc num-buffers={n} ! video/x-raw,format=GRAY8,width=64,height=48 ! "
        f"identity drop-probability=0.5 ! bipssink pool={pool_name} capacity=2 sync=false"
    )
    s = stats(run_pipeline(gst_env, desc, timeout=60.0), "bipssink")
    assert 0 < s["published"] < n
    assert s["zero-copy"] == s["published"] and s["copies"] == 0


@requires_gst
def test_killed_consumer_does_not_stop_the_pipeline(
    gst_env: dict[str, str], pool_name: str
) -> None:
    n = 200
    holder_code = """
cons = bips.Consumer(sys.argv[1], timeout=30.0)
emit(attached=True)
held = [cons.receive(timeout=30.0) for _ in range(3)]
emit(holding=[f.seq for f in held])
time.sleep(600)
"""
    desc = (
        f"videotestsrc num-buffers={n} ! video/x-raw,format=GRAY8,width=64,height=48 ! "
        f"bipssink pool={pool_name} capacity=4 policy=block sync=false wait-for-consumers=2"
    )
    seqs = []
    with (
        launch(gst_env, desc, pools=(pool_name,)) as run,
        child(holder_code, pool_name) as holder,
        bips.Consumer(pool_name, timeout=30.0) as cons,
    ):
        assert read_message(holder, 30.0) == {"attached": True}
        assert read_message(holder, 30.0) == {"holding": [0, 1, 2]}
        # Four buffers, three held and the rest queued to a consumer that stopped: the lossless
        # pipeline waits for it. Kill it: its buffers come back.
        assert wait_until(lambda: bips.pool_info(pool_name).free == 0, timeout=10.0)
        assert run.running()
        holder.kill()
        assert reap(holder)[0] == -signal.SIGKILL
        for frame in cons:  # iteration ends at end of stream
            seqs.append(frame.seq)
            frame.release()
        with pytest.raises(bips.ProducerGone):
            cons.receive(timeout=1.0)
        out = run.expect_success()
    assert seqs == list(range(n))
    assert stats(out, "bipssink")["published"] == n


@requires_gst
def test_drop_oldest_never_waits_for_a_stalled_consumer(
    gst_env: dict[str, str], pool_name: str
) -> None:
    n = 100
    desc = (
        f"videotestsrc num-buffers={n} ! video/x-raw,format=GRAY8,width=64,height=48 ! "
        # drop_oldest: the API's spelling, accepted beside the nick drop-oldest
        f"bipssink pool={pool_name} capacity=4 policy=drop_oldest sync=false wait-for-consumers=1"
    )
    with (
        launch(gst_env, desc, pools=(pool_name,)) as run,
        bips.Consumer(pool_name, timeout=30.0) as cons,
    ):
        out = run.expect_success()  # finishes although this consumer never receives
        seqs = [f.seq for f in cons]
        assert cons.stats.dropped == n - len(seqs)
    # What stayed queued for the stalled consumer: the newest frames (at most the pool), in order.
    assert 1 <= len(seqs) <= 4, seqs
    assert seqs == list(range(n - len(seqs), n))
    assert stats(out, "bipssink")["published"] == n


@requires_gst
def test_acquire_timeout_posts_an_error(gst_env: dict[str, str], pool_name: str) -> None:
    desc = (
        "videotestsrc num-buffers=100 ! video/x-raw,format=GRAY8,width=64,height=48 ! "
        f"bipssink pool={pool_name} capacity=2 sync=false wait-for-consumers=1 "
        "acquire-timeout=300000000"
    )
    with (
        launch(gst_env, desc, pools=(pool_name,)) as run,
        bips.Consumer(pool_name, timeout=30.0),  # attached, never receives
    ):
        rc = run.wait(30.0)
    assert rc != 0
    assert "came free within acquire-timeout (0.300 s)." in run.output(), run.tail()


@requires_gst
@pytest.mark.parametrize(
    "upstream",
    ["", "identity drop-allocation=true ! ", "videoconvert ! video/x-raw,format=RGB ! "],
    ids=["source-in-pool", "sink-in-render", "transform-in-pool"],
)
def test_interrupt_while_blocked_stops_at_once(
    gst_env: dict[str, str], pool_name: str, upstream: str
) -> None:
    # A lossless sink waiting for a consumer that never receives: upstream is blocked in the
    # sink's pool (zero copy) or the sink in its render (copy). Ctrl-C sets the pipeline to NULL,
    # which must unblock every case. A converting videoconvert is blocked in the pool with no
    # flushing flag of its own (a source's pool is set flushing by the source): only the sink
    # pad's deactivation can end its wait.
    desc = (
        "videotestsrc ! video/x-raw,format=GRAY8,width=64,height=48 ! "
        f"{upstream}bipssink pool={pool_name} capacity=2 sync=false wait-for-consumers=1"
    )
    with (
        launch(gst_env, desc, pools=(pool_name,), eos=False) as run,
        bips.Consumer(pool_name, timeout=30.0),
    ):
        assert wait_until(lambda: bips.pool_info(pool_name).free == 0, timeout=10.0)
        time.sleep(0.2)  # let upstream block on the full pool
        assert run.running()
        run.proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        run.wait(10.0)
        assert time.monotonic() - start < 5.0, run.tail()
    assert "Interrupt" in run.output()


@requires_gst
def test_sink_refuses_a_busy_pool_and_a_bad_name(gst_env: dict[str, str], pool_name: str) -> None:
    src = "videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8,width=16,height=16 ! "
    with (
        bips.Producer(pool_name, shape=(4,)),
        launch(gst_env, f"{src} bipssink pool={pool_name}") as run,
    ):
        assert run.wait(30.0) != 0
        assert f"Pool '{pool_name}' is in use by another producer." in run.output()
    with launch(gst_env, f"{src} bipssink pool=.hidden") as run:
        assert run.wait(30.0) != 0
        assert "Invalid pool name '.hidden'." in run.output()
    with launch(gst_env, f"{src} bipssink") as run:
        assert run.wait(30.0) != 0
        assert "No pool name given." in run.output()


# ---- bipssink -> bipssrc round trip ---------------------------------------------------------

FORMATS = {
    # the formats the brief lists, at sizes whose rows need padding where the format allows
    "RGB": (321, 241), "BGR": (321, 241), "RGBA": (321, 241), "BGRA": (321, 241),
    "BGRx": (321, 241), "RGBx": (321, 241), "GRAY8": (321, 241), "GRAY16_LE": (321, 241),
    "I420": (320, 240), "NV12": (320, 240),
    # and the rest of what the elements accept
    "ARGB": (321, 241), "ABGR": (321, 241), "xRGB": (321, 241), "xBGR": (321, 241),
    "YV12": (320, 240), "NV21": (320, 240), "Y42B": (322, 242), "Y444": (321, 241),
    "YUY2": (322, 242), "UYVY": (322, 242),
}  # fmt: skip


@requires_gst
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_through_bipssrc(
    gst_env: dict[str, str], pool_name: str, tmp_path: Path, fmt: str
) -> None:
    n = 3
    w, h = FORMATS[fmt]
    src = (
        f"videotestsrc pattern=ball num-buffers={n} ! video/x-raw,format={fmt},width={w},height={h}"
    )
    want = list(reference_frames(gst_env, src, n))
    out_file = tmp_path / "out.raw"
    # One process, two branches: bipssink publishes, bipssrc (and this test) receive. filesink
    # is async=false: it cannot preroll before bipssink, which only renders in PLAYING.
    desc = (
        f"{src} ! bipssink pool={pool_name} sync=false wait-for-consumers=2 "
        f"bipssrc pool={pool_name} timeout=30000000000 ! filesink async=false location={out_file}"
    )
    metas, seen = [], []
    with launch(gst_env, desc, pools=(pool_name,)) as run:
        with bips.Consumer(pool_name, timeout=30.0) as cons:
            for frame in cons:
                meta = bips.video.parse_meta(frame)
                assert (meta["format"], meta["width"], meta["height"]) == (fmt, w, h)
                assert frame.nbytes == len(want[0])
                metas.append(meta)
                seen.append(visible(frame, meta))
                frame.release()
        out = run.expect_success()
    assert len(seen) == n
    data = out_file.read_bytes()
    assert len(data) == n * len(want[0])
    size = len(want[0])
    for i in range(n):
        reference = visible(want[i], metas[i])
        assert planes_equal(seen[i], reference), f"{fmt} frame {i} as received in Python"
        assert planes_equal(visible(data[i * size : (i + 1) * size], metas[i]), reference), (
            f"{fmt} frame {i} through bipssrc"
        )
    assert stats(out, "bipssink") == {"published": n, "copies": 0, "zero-copy": n, **NO_UPLOADS}
    assert stats(out, "bipssrc") == {"received": n, "copies": 0}


# ---- bipssrc --------------------------------------------------------------------------------


def _publish(prod: bips.Producer, seqs: range) -> None:
    for s in seqs:
        buf = prod.acquire(timeout=10.0)
        fill(buf.numpy(), s)
        prod.publish(buf)


@requires_gst
@pytest.mark.parametrize("reconnect", [False, True])
def test_src_ends_or_follows_a_restarted_producer(
    gst_env: dict[str, str], pool_name: str, tmp_path: Path, reconnect: bool
) -> None:
    # Frames without metadata: caps from the shape, (48, 64, 3) uint8 -> RGB.
    shape, per_producer = (48, 64, 3), 5
    producers = 2 if reconnect else 1
    out_file = tmp_path / "out.raw"
    desc = f"bipssrc pool={pool_name} timeout=30000000000 reconnect={str(reconnect).lower()} "
    if reconnect:  # the stream never ends by itself: stop after the second producer's frames
        desc += f"num-buffers={producers * per_producer} "
    desc += f"! video/x-raw,format=RGB,width=64,height=48 ! filesink location={out_file}"
    with launch(gst_env, desc, pools=(pool_name,)) as run:
        for p in range(producers):
            with bips.Producer(pool_name, capacity=4, shape=shape, meta_size=4096) as prod:
                # bipssrc (re)attaches before anything is published: nothing is missed.
                assert wait_until(lambda: prod.stats.consumers == 1, timeout=30.0)
                _publish(prod, range(p * per_producer, (p + 1) * per_producer))
            # closed: bipssrc drains, then ends (or waits for the next producer)
        out = run.expect_success()
    data = out_file.read_bytes()
    frame_bytes = int(np.prod(shape))
    assert len(data) == producers * per_producer * frame_bytes
    for k in range(producers * per_producer):
        frame = np.frombuffer(data, np.uint8, frame_bytes, k * frame_bytes)
        assert check(frame, k), k
    # filesink keeps up to 64 KB of buffers to batch its writes: more 9 KB frames than half the
    # pool, so bipssrc copied some (max-held) rather than starve the producer.
    assert stats(out, "bipssrc")["received"] == producers * per_producer


@requires_gst
def test_src_copies_rows_downstream_cannot_stride(
    gst_env: dict[str, str], pool_name: str, tmp_path: Path
) -> None:
    # A (241, 321, 3) frame has 963-byte rows; GStreamer's standard RGB rows are 964 bytes.
    # filesink takes no GstVideoMeta, so bipssrc copies into the standard layout; videoconvert
    # reads the strides from the meta, so through it nothing is copied.
    h, w = 241, 321
    img = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
    std = {"format": "RGB", "width": w, "height": h, "planes": [{"offset": 0, "stride": 964}]}
    for i, (tail, copies) in enumerate(
        [
            ("filesink", 1),
            ("videoconvert ! video/x-raw,format=BGR ! filesink", 0),
        ]
    ):
        out_file = tmp_path / f"out{i}.raw"
        name = f"{pool_name}{i}"
        desc = f"bipssrc pool={name} timeout=30000000000 ! {tail} location={out_file}"
        with launch(gst_env, desc, pools=(name,)) as run:
            with bips.Producer(name, capacity=2, shape=(h, w, 3)) as prod:
                assert wait_until(lambda p=prod: p.stats.consumers == 1, timeout=30.0)
                buf = prod.acquire(timeout=5.0)
                buf.numpy()[:] = img
                prod.publish(buf)
            out = run.expect_success()
        (got,) = visible(out_file.read_bytes(), std)
        assert np.array_equal(got, img if copies else img[:, :, ::-1])
        assert stats(out, "bipssrc") == {"received": 1, "copies": copies}


@requires_gst
def test_src_reports_frames_it_cannot_describe(gst_env: dict[str, str], pool_name: str) -> None:
    desc = f"bipssrc pool={pool_name} timeout=30000000000 ! fakesink"
    with (
        launch(gst_env, desc) as run,
        bips.Producer(pool_name, capacity=2, shape=(8, 8, 5)) as prod,
    ):
        assert wait_until(lambda: prod.stats.consumers == 1, timeout=30.0)
        prod.publish(prod.acquire(timeout=5.0))
        assert run.wait(30.0) != 0
    assert "is not an image bipssrc knows" in run.output()


@requires_gst
def test_src_without_a_pool_fails_after_its_timeout(
    gst_env: dict[str, str], pool_name: str
) -> None:
    start = time.monotonic()
    with launch(gst_env, f"bipssrc pool={pool_name} timeout=300000000 ! fakesink") as run:
        assert run.wait(30.0) != 0
    assert time.monotonic() - start >= 0.3
    assert f"Pool '{pool_name}' did not appear within 0.300 s." in run.output()
    with launch(gst_env, f"bipssrc pool={pool_name} timeout=0 ! fakesink") as run:
        assert run.wait(30.0) != 0
    assert f"Pool '{pool_name}' does not exist." in run.output()


@requires_gst
def test_caps_change_renegotiates_src_and_regrows_the_sink_pool(
    gst_env: dict[str, str], pool_name: str
) -> None:
    # A producer switches from 16x8 to 32x16 GRAY8 mid-stream: bipssrc renegotiates, and
    # bipssink, whose buffers are now too small, replaces its pool (its consumers follow with
    # reconnect=True). The new pool again waits for a consumer before its first frame.
    upstream, downstream = pool_name + "a", pool_name + "b"
    consumer_code = """
got = []
with bips.Consumer(sys.argv[1], timeout=30.0, reconnect=True) as cons:
    for k in range(6):
        f = cons.receive(timeout=30.0)
        got.append([list(f.shape), check(f.numpy(), k), json.loads(f.meta.rstrip(b"\\0"))["width"]])
        f.release()
emit(got=got)
"""

    def meta(w: int, h: int, k: int) -> bytes:
        caps = f"video/x-raw, format=(string)GRAY8, width=(int){w}, height=(int){h}"
        doc = {"caps": caps + ", framerate=(fraction)0/1", "format": "GRAY8", "width": w,
               "height": h, "planes": [{"offset": 0, "stride": w}], "pts": pts_of(k),
               "duration": FRAME_NS}  # fmt: skip
        return json.dumps(doc).encode()

    desc = (
        f"bipssrc pool={upstream} timeout=30000000000 is-live=false ! "
        f"bipssink pool={downstream} sync=false wait-for-consumers=1"
    )
    with (
        launch(gst_env, desc, pools=(upstream, downstream)) as run,
        child(consumer_code, downstream, timeout=30.0) as consumer,
        bips.Producer(upstream, capacity=4, shape=(512,), meta_size=4096) as prod,
    ):
        assert wait_until(lambda: prod.stats.consumers == 1, timeout=30.0)
        for k in range(6):
            w, h = (16, 8) if k < 3 else (32, 16)
            buf = prod.acquire(timeout=30.0)
            buf.set_format((h, w), "uint8")
            fill(buf.numpy(), k)
            prod.publish(buf, meta=meta(w, h, k))
        prod.close()  # bipssrc drains, then EOS
        out = run.expect_success()
        result = read_message(consumer, 30.0)
    assert result == {"got": [[[8, 16], True, 16]] * 3 + [[[16, 32], True, 32]] * 3}
    assert stats(out, "bipssrc") == {"received": 6, "copies": 0}
    # bipssrc's buffers wrap its own pool's memory: bipssink copies them into its pool.
    assert stats(out, "bipssink") == {"published": 6, "copies": 6, "zero-copy": 0, **NO_UPLOADS}


LOOP_DRIVER = Path(__file__).with_name("gst_loop_after_eos.c")


@requires_gst
def test_flushing_seek_after_eos_starts_a_new_pool(
    gst_env: dict[str, str], pool_name: str, tmp_path: Path
) -> None:
    """Looping playback: EOS closes the pool, a flushing seek replays the stream. Upstream keeps
    the buffer pool the sink proposed and acquires from it at once, so the sink must have made a
    new pool by then (else the source stops silently); a consumer with reconnect=True follows."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "gstreamer-1.0"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    exe = tmp_path / "loop"
    subprocess.run([cc, "-O1", "-o", str(exe), str(LOOP_DRIVER), *flags], check=True, timeout=120)
    caps = "video/x-raw,format=GRAY8,width=64,height=48"
    with subprocess.Popen(
        [str(exe), pool_name, caps], env=gst_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdin is not None
            with bips.Consumer(pool_name, timeout=10.0, reconnect=True) as cons:
                after = 0
                while after < 3:  # frames of the first pool, then 3 of the replay's new pool
                    cons.receive(timeout=10.0).release()
                    after += cons.stats.reconnects >= 1
                # The driver prints its counters once the replay published 20 frames into the
                # new pool (drop_oldest: whether or not we receive); it keeps that pool alive
                # until told to stop.
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.poll() is not None else "no output"
                counters = dict(kv.split("=") for kv in line.split())
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()  # leaving the with block closes the pipes and reaps it
    assert proc.returncode == 0, err
    assert int(counters["published"]) >= int(counters["first"]) + 20, line
    assert counters["copies"] == "0" and counters["zero-copy"] == counters["published"], line


@requires_gst
def test_src_restores_the_producers_timestamps_when_not_live(
    gst_env: dict[str, str], pool_name: str
) -> None:
    n = 5
    desc = (
        f"videotestsrc num-buffers={n} ! video/x-raw,format=GRAY8,width=64,height=48 ! "
        f"bipssink pool={pool_name} sync=false wait-for-consumers=1 "
        f"bipssrc pool={pool_name} is-live=false timeout=30000000000 ! "
        "fakesink silent=false sync=false async=false"
    )
    with launch(gst_env, "-v " + desc, pools=(pool_name,)) as run:
        out = run.expect_success()
    chains = re.findall(r"pts: (\d+):(\d+):(\d+)\.(\d+), duration: \S+, offset: (\d+)", out)
    assert len(chains) == n, out[-4000:]
    pts = [
        ((int(h) * 60 + int(m)) * 60 + int(sec)) * 10**9 + int(ns) for h, m, sec, ns, _ in chains
    ]
    assert pts == [pts_of(k) for k in range(n)]
    assert [int(c[4]) for c in chains] == list(range(n))  # buffer offset = frame seq


# ---- GPU pools (the fake CUDA driver) -------------------------------------------------------
# bips loads the fake driver in gst-launch and in the consumers (children with BIPS_LIBCUDA);
# this process stays without one. A frame's "device" bytes are host memory under the fake,
# read through frame.__cuda_array_interface__ with ctypes.


@pytest.fixture
def gpu_gst_env(gst_env: dict[str, str], fake_cuda: Any) -> dict[str, str]:
    return dict(gst_env, BIPS_LIBCUDA=str(fake_cuda))


GPU_CONSUMER = r"""
import hashlib
import bips.video
with bips.Consumer(sys.argv[1], timeout=30.0) as cons:
    emit(attached=True)
    frames = []
    for f in cons:  # ends at end of stream
        if f.device == "cpu":
            data = bytes(f.numpy().reshape(-1))
            host_ok = True
        else:
            data = ctypes.string_at(f.__cuda_array_interface__["data"][0], f.nbytes)
            host_ok = bytes(f.to_host().reshape(-1)) == data
        meta = bips.video.parse_meta(f)
        frames.append(dict(seq=f.seq, sha=hashlib.sha1(data).hexdigest(), device=f.device,
                           host_ok=host_ok, shape=list(f.shape), planes=meta["planes"],
                           pts=meta["pts"]))
        f.release()
emit(frames=frames)
"""


@requires_gst
@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
def test_sink_uploads_each_frame_once_to_a_gpu_pool(
    gpu_gst_env: dict[str, str], pool_name: str, device: str
) -> None:
    """The same pipeline into a host pool and a GPU pool: two consumers of each get the frames
    videotestsrc renders (ball: a different frame each time, so a source reused before its upload
    finished would show), and the GPU sink uploads each frame once, not once per consumer."""
    n, w, h = 12, 320, 240
    src = f"videotestsrc pattern=ball num-buffers={n} ! video/x-raw,format=RGB,width={w},height={h}"
    want = [hashlib.sha1(f).hexdigest() for f in reference_frames(gpu_gst_env, src, n)]
    desc = f"{src} ! bipssink pool={pool_name} device={device} sync=false wait-for-consumers=2"
    with (
        launch(gpu_gst_env, desc, pools=(pool_name,)) as run,
        child(GPU_CONSUMER, pool_name, env=gpu_gst_env, timeout=30.0) as a,
        child(GPU_CONSUMER, pool_name, env=gpu_gst_env, timeout=30.0) as b,
    ):
        assert read_message(a, 30.0) == {"attached": True}
        assert read_message(b, 30.0) == {"attached": True}
        results = [read_message(a, 30.0)["frames"], read_message(b, 30.0)["frames"]]
        out = run.expect_success()
    for frames in results:
        assert [f["seq"] for f in frames] == list(range(n))
        assert [f["sha"] for f in frames] == want
        assert all(f["host_ok"] and f["device"] == device for f in frames)
        # The video metadata lives in host memory in a GPU pool too.
        assert all(f["shape"] == [h, w, 3] for f in frames)
        assert all(f["planes"] == [{"offset": 0, "stride": w * 3}] for f in frames)
        assert [f["pts"] for f in frames] == [pts_of(k) for k in range(n)]
    counters = stats(out, "bipssink")
    if device == "cpu":
        assert counters == {"published": n, "copies": 0, "zero-copy": n, **NO_UPLOADS}
    else:
        # No pool proposed upstream (it cannot write GPU memory): one upload per frame.
        assert counters == {
            "published": n, "copies": 0, "zero-copy": 0, "uploads": n,
            "upload-bytes": n * w * h * 3,
        }  # fmt: skip
        assert f"device=(string){device}" in out


@requires_gst
@pytest.mark.parametrize("fmt", ["RGB", "NV12"])
def test_src_downloads_the_frames_of_a_gpu_pool(
    gpu_gst_env: dict[str, str], pool_name: str, tmp_path: Path, fmt: str
) -> None:
    """bipssrc outputs system memory: from a GPU pool it downloads each frame (a copy), so a
    pipeline can record what GPU consumers see."""
    n = 3
    w, h = FORMATS[fmt]
    src = (
        f"videotestsrc pattern=ball num-buffers={n} ! video/x-raw,format={fmt},width={w},height={h}"
    )
    want = list(reference_frames(gpu_gst_env, src, n))
    out_file = tmp_path / "out.raw"
    desc = (
        f"{src} ! bipssink pool={pool_name} device=cuda:0 sync=false wait-for-consumers=1 "
        f"bipssrc pool={pool_name} timeout=30000000000 ! filesink async=false location={out_file}"
    )
    with launch(gpu_gst_env, desc, pools=(pool_name,)) as run:
        out = run.expect_success()
    assert out_file.read_bytes() == b"".join(want)
    assert stats(out, "bipssrc") == {"received": n, "copies": n}
    assert stats(out, "bipssink")["uploads"] == n


GPU_PRODUCER = r"""
name, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
img = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
with bips.Producer(name, capacity=2, shape=(h, w, 3), device="cuda:0") as prod:
    deadline = time.monotonic() + 30
    while prod.stats.consumers < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    buf = prod.acquire(timeout=5.0)
    ctypes.memmove(buf.__cuda_array_interface__["data"][0], img.ctypes.data, img.nbytes)
    # Written by the CPU (the fake's device memory is host memory): no stream to wait for. On
    # the default stream the publish would still be queued when close() drops it.
    prod.publish(buf, stream=-1)
emit(done=True)
"""


@requires_gst
def test_src_downloads_and_repacks_rows_downstream_cannot_stride(
    gpu_gst_env: dict[str, str], pool_name: str, tmp_path: Path
) -> None:
    # A (241, 321, 3) frame on the GPU has 963-byte rows: downloaded, then copied into
    # GStreamer's 964-byte rows for filesink, which takes no GstVideoMeta. One copied frame.
    h, w = 241, 321
    img = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
    std = {"format": "RGB", "width": w, "height": h, "planes": [{"offset": 0, "stride": 964}]}
    out_file = tmp_path / "out.raw"
    desc = f"bipssrc pool={pool_name} timeout=30000000000 ! filesink location={out_file}"
    with (
        launch(gpu_gst_env, desc, pools=(pool_name,)) as run,
        child(GPU_PRODUCER, pool_name, h, w, env=gpu_gst_env, timeout=30.0) as prod,
    ):
        assert read_message(prod, 30.0) == {"done": True}
        out = run.expect_success()
    (got,) = visible(out_file.read_bytes(), std)
    assert np.array_equal(got, img)
    assert stats(out, "bipssrc") == {"received": 1, "copies": 1}


@requires_gst
def test_sink_refuses_a_device_it_cannot_use(gpu_gst_env: dict[str, str], pool_name: str) -> None:
    src = "videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8,width=16,height=16 ! "
    cases = [
        # the fake driver has one device
        (gpu_gst_env, "cuda:7", [f"Cannot create pool '{pool_name}' on cuda:7.", "no CUDA device cuda:7"]),
        (gpu_gst_env, "bogus", ["Invalid device 'bogus'.", 'got "bogus"']),
        (
            dict(gpu_gst_env, BIPS_LIBCUDA="/nonexistent/libcuda.so.1"), "cuda:0",
            [f"Cannot create pool '{pool_name}' on cuda:0.", "cannot load the CUDA driver"],
        ),
    ]  # fmt: skip
    for env, device, messages in cases:
        with launch(env, f"{src} bipssink pool={pool_name} device={device}") as run:
            assert run.wait(30.0) != 0
        for message in messages:
            assert message in run.output(), run.tail()
        # Nothing left behind: no pool file, control file or descriptor socket.
        assert not [e for e in os.listdir("/dev/shm") if pool_name in e]


# ---- scale ----------------------------------------------------------------------------------


@requires_gst
@pytest.mark.slow
def test_four_consumers_at_full_rate_for_30_s(gst_env: dict[str, str], pool_name: str) -> None:
    consumer_code = """
cons = bips.Consumer(sys.argv[1], timeout=60.0)
emit(attached=True)
count, gaps, first, last, bad_shape = 0, 0, None, -1, 0
for frame in cons:
    if first is None:
        first = frame.seq
    elif frame.seq != last + 1:
        gaps += 1
    last = frame.seq
    count += 1
    bad_shape += frame.shape != (360, 640, 3)
    frame.release()
emit(count=count, first=first, last=last, gaps=gaps, bad_shape=bad_shape,
     dropped=cons.stats.dropped)
"""
    desc = (
        "videotestsrc is-live=false ! video/x-raw,format=RGB,width=640,height=360 ! "
        f"bipssink pool={pool_name} policy=block sync=false wait-for-consumers=4"
    )
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(launch(gst_env, desc, pools=(pool_name,)))
        kids = [
            stack.enter_context(child(consumer_code, pool_name, timeout=60.0)) for _ in range(4)
        ]
        for kid in kids:
            assert read_message(kid, 60.0) == {"attached": True}
        time.sleep(30.0)
        assert run.running(), run.tail()
        run.proc.send_signal(signal.SIGINT)  # gst-launch -e: EOS, then exit
        out = run.expect_success(timeout=60.0)
        results = [read_message(kid, 60.0) for kid in kids]
    published = stats(out, "bipssink")["published"]
    assert published > 100
    for r in results:
        assert r == {
            "count": published, "first": 0, "last": published - 1, "gaps": 0,
            "bad_shape": 0, "dropped": 0,
        }  # fmt: skip


# ---- bips.video without GStreamer ------------------------------------------------------------


def test_parse_meta_reads_up_to_the_first_nul() -> None:
    assert bips.video.parse_meta(b'{"format": "GRAY8"}\0\0garbage') == {"format": "GRAY8"}
    assert bips.video.parse_meta(bytearray(b"\0" * 16)) == {}
    assert bips.video.parse_meta(b"") == {}
    with pytest.raises(ValueError, match="not JSON"):
        bips.video.parse_meta(b"camera 0")
    with pytest.raises(ValueError, match="not an object"):
        bips.video.parse_meta(b"[1, 2]")


def _i420_meta(w: int, h: int) -> dict[str, Any]:
    cw, ch = (w + 1) // 2, (h + 1) // 2
    return {
        "format": "I420", "width": w, "height": h,
        "planes": [
            {"offset": 0, "stride": w},
            {"offset": w * h, "stride": cw},
            {"offset": w * h + cw * ch, "stride": cw},
        ],
    }  # fmt: skip


def test_planes_of_a_frame_are_zero_copy_views(pool_name: str) -> None:
    w, h = 6, 5  # odd height: chroma planes round up to 3 rows
    meta = _i420_meta(w, h)
    nbytes = w * h + 2 * 3 * 3
    with (
        bips.Producer(pool_name, shape=(nbytes,), meta_size=4096) as prod,
        bips.Consumer(pool_name) as cons,
    ):
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[:] = np.arange(nbytes, dtype=np.uint8)
        prod.publish(buf, meta=json.dumps(meta).encode() + b"\0" * 10)
        frame = cons.receive(timeout=1.0)
        y, u, v = bips.video.planes(frame)
        assert (y.shape, u.shape, v.shape) == ((5, 6), (3, 3), (3, 3))
        assert y[1, 0] == 6 and u[0, 0] == 30 and v[2, 2] == 47
        assert all(np.shares_memory(p, frame.numpy()) for p in (y, u, v))
        assert not any(p.flags.writeable for p in (y, u, v))
        frame.release()
        assert int(v.sum()) == sum(range(39, 48))  # the views keep the buffer alive


def test_planes_of_packed_and_semi_planar_layouts() -> None:
    rgb = np.arange(2 * 8, dtype=np.uint8)  # 2 rows of 2 RGB pixels, rows padded to 8 bytes
    meta = {"format": "RGB", "width": 2, "height": 2, "planes": [{"offset": 0, "stride": 8}]}
    (img,) = bips.video.planes(rgb.tobytes(), meta)
    assert img.shape == (2, 2, 3) and img[1, 1].tolist() == [11, 12, 13]
    nv12 = {
        "format": "NV12", "width": 4, "height": 2,
        "planes": [{"offset": 0, "stride": 4}, {"offset": 8, "stride": 4}],
    }  # fmt: skip
    y, uv = bips.video.planes(np.arange(12, dtype=np.uint8), nv12)
    assert y.shape == (2, 4) and uv.shape == (1, 2, 2) and uv[0, 1].tolist() == [10, 11]
    gray16 = {
        "format": "GRAY16_LE",
        "width": 2,
        "height": 1,
        "planes": [{"offset": 0, "stride": 4}],
    }
    (g,) = bips.video.planes(b"\x01\x02\x03\x04", gray16)
    assert g.dtype == np.dtype("<u2") and g.tolist() == [[0x0201, 0x0403]]


def test_planes_rejects_what_does_not_fit() -> None:
    meta = _i420_meta(4, 4)
    with pytest.raises(ValueError, match="does not fit"):
        bips.video.planes(bytes(16 + 4 + 3), meta)  # one byte short
    with pytest.raises(ValueError, match="unsupported video format"):
        bips.video.planes(bytes(64), {**meta, "format": "v210"})
    with pytest.raises(ValueError, match="has 3 planes"):
        bips.video.planes(bytes(64), {**meta, "planes": meta["planes"][:2]})
    with pytest.raises(ValueError, match="non-negative integer 'stride'"):
        bips.video.planes(bytes(64), {**meta, "planes": [{"offset": 0}] * 3})
    with pytest.raises(ValueError, match="no video metadata"):
        bips.video.planes(bytes(64), {})
    with pytest.raises(ValueError, match="give the metadata"):
        bips.video.planes(bytes(64))
