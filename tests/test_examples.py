# SPDX-License-Identifier: Apache-2.0
"""The examples do what their READMEs say: the GStreamer capture application, built with CMake
against the installed package, publishes every frame of a pipeline (shape, pixels, timestamps,
metadata per the video convention) to a Python consumer; the PyTorch consumer turns frames of
two synthetic cameras into tensors that are the shared memory, batches and classifies them."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import bips
import numpy as np
import pytest
from conftest import unique_name
from helpers import cmake_generator, first_line, require_cmake_project, stop
from helpers import run as run_checked

REPO = Path(__file__).resolve().parent.parent
CAPTURE_SRC = REPO / "examples" / "gstreamer_cpp"
PYTORCH_SRC = REPO / "examples" / "pytorch_consumer"
GST_MODULES = ["gstreamer-1.0", "gstreamer-app-1.0", "gstreamer-video-1.0"]


def meta_json(frame: bips.Frame) -> dict[str, Any]:
    """The frame's metadata as the video convention defines it: JSON, NUL-padded."""
    return json.loads(frame.meta.split(b"\0", 1)[0].decode())  # type: ignore[no-any-return]


# --- examples/gstreamer_cpp ------------------------------------------------------------------


@pytest.fixture(scope="module")
def capture_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bips-capture, built like a user would: CMake, find_package(bips) from this installation."""
    require_cmake_project(CAPTURE_SRC)
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is not installed")
    if subprocess.run(["pkg-config", "--exists", *GST_MODULES], check=False).returncode != 0:
        pytest.skip("GStreamer development files (libgstreamer-plugins-base1.0-dev) are missing")
    if not shutil.which("gst-launch-1.0"):
        pytest.skip("gst-launch-1.0 (gstreamer1.0-tools) is not installed")
    for element in ("videotestsrc", "audiotestsrc", "appsink"):
        probe = subprocess.run(
            ["gst-inspect-1.0", element], capture_output=True, timeout=120, check=False
        )
        if probe.returncode != 0:
            pytest.skip(f"GStreamer element {element} (gstreamer1.0-plugins-base) is missing")

    build = tmp_path_factory.mktemp("capture") / "build"
    configure = ["cmake", "-S", str(CAPTURE_SRC), "-B", str(build), *cmake_generator()]
    configure += [f"-Dbips_DIR={bips.get_cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"]
    run_checked(configure, timeout=180)
    run_checked(["cmake", "--build", str(build), "--parallel", "2"], timeout=300)
    app = build / "bips-capture"
    assert app.is_file()
    return app


def start_capture(app: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(app), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_capture_publishes_every_frame(capture_app: Path, pool_name: str) -> None:
    n = 50
    # Non-live, but appsink syncs to the clock: 30 frames per second, PTS 0, 1/30 s, ...
    pipeline = (
        f"videotestsrc num-buffers={n + 10} pattern=solid-color foreground-color=0xff112233 "
        "! video/x-raw,format=RGB,width=640,height=360,framerate=30/1 ! appsink name=sink"
    )
    # --wait-consumers: nothing is published before we attach, so no frame goes to nobody.
    proc = start_capture(
        capture_app,
        "--pool",
        pool_name,
        "--frames",
        str(n),
        "--wait-consumers",
        "1",
        "--pipeline",
        pipeline,
    )
    try:
        ready = first_line(proc)
        frames: list[tuple[int, int, int, dict[str, Any]]] = []
        with bips.Consumer(pool_name, timeout=30) as cons:
            assert cons.shape == (360, 640, 3)
            for _ in range(n):
                frame = cons.receive(timeout=10)
                received_ns = time.monotonic_ns()
                assert frame.shape == (360, 640, 3)
                assert frame.dtype == np.uint8
                arr = frame.numpy()
                # 0xff112233 is ARGB: every pixel is R=0x11, G=0x22, B=0x33.
                assert (arr == np.array([0x11, 0x22, 0x33], dtype=np.uint8)).all()
                del arr
                frames.append((frame.seq, frame.timestamp_ns, received_ns, meta_json(frame)))
                frame.release()
            with pytest.raises(bips.ProducerGone):
                cons.receive(timeout=10)
        rc, out, err = stop(proc)
    finally:
        if proc.poll() is None:
            stop(proc, timeout=0)
    assert rc == 0, f"bips-capture exited with {rc}\n{out}\n{err}"
    assert ready.startswith(f"pool '{pool_name}' ready: RGB 640x360, frames (360, 640, 3) uint8")
    assert f"published {n} frames" in out

    assert [seq for seq, _, _, _ in frames] == list(range(n))
    stamps = [ts for _, ts, _, _ in frames]
    # PTS + base time: consecutive frames are exactly one frame duration apart...
    assert all(33_333_333 <= b - a <= 33_333_334 for a, b in zip(stamps, stamps[1:])), stamps
    # ...and on CLOCK_MONOTONIC: each frame was captured shortly before we got it.
    for _, ts, received, _ in frames:
        assert 0 <= received - ts < 2_000_000_000, (ts, received)
    for i, (_, _, _, meta) in enumerate(frames):
        assert meta["format"] == "RGB"
        assert (meta["width"], meta["height"]) == (640, 360)
        assert meta["planes"] == [{"offset": 0, "stride": 1920}]
        assert meta["caps"].startswith("video/x-raw")
        for field in (
            "format=(string)RGB",
            "width=(int)640",
            "height=(int)360",
            "framerate=(fraction)30/1",
        ):
            assert field in meta["caps"], meta["caps"]
        assert meta["duration"] in (33_333_333, 33_333_334)
        assert abs(meta["pts"] - i * 1_000_000_000 // 30) <= 1


def i420_planes(
    data: np.ndarray[Any, Any], planes: list[dict[str, int]], width: int, height: int
) -> list[np.ndarray[Any, Any]]:
    """The visible pixels of the Y, U and V planes of an I420 frame, located by the frame's
    metadata (row padding is left out: GStreamer does not initialise it)."""
    sizes = [
        (height, width),
        ((height + 1) // 2, (width + 1) // 2),
        ((height + 1) // 2, (width + 1) // 2),
    ]
    out = []
    for plane, (rows, cols) in zip(planes, sizes):
        start, stride = plane["offset"], plane["stride"]
        out.append(data[start : start + rows * stride].reshape(rows, stride)[:, :cols])
    return out


def test_capture_planar_frames_are_flat_with_planes(
    capture_app: Path, pool_name: str, tmp_path: Path
) -> None:
    """I420 at an odd size (padded rows, three planes): flat uint8 frames of GStreamer's buffer
    size, whose planes, found through the metadata, hold exactly GStreamer's pixels."""
    from bips import video

    n, w, h = 3, 322, 242
    # The moving ball is deterministic per frame number (unlike smpte, whose corner is noise).
    src = (
        f"videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format=I420,width={w},height={h}"
    )
    reference = tmp_path / "frames.i420"
    run_checked(
        ["gst-launch-1.0", "-q", *f"{src} ! filesink location={reference}".split()], timeout=60
    )
    expected = np.fromfile(reference, dtype=np.uint8)
    size = expected.size // n
    assert size * n == expected.size

    proc = start_capture(
        capture_app,
        "--pool",
        pool_name,
        "--wait-consumers",
        "1",
        "--pipeline",
        f"{src} ! appsink name=sink sync=false",
    )
    try:
        ready = first_line(proc)
        with bips.Consumer(pool_name, timeout=30) as cons:
            for i in range(n):
                frame = cons.receive(timeout=10)
                assert frame.shape == (size,)
                assert frame.dtype == np.uint8
                meta = meta_json(frame)
                assert (meta["format"], meta["width"], meta["height"]) == ("I420", w, h)
                planes = meta["planes"]
                assert len(planes) == 3
                assert planes[0] == {"offset": 0, "stride": 324}  # rows padded to 4 bytes
                assert planes[1]["offset"] == 324 * h
                assert planes[2]["offset"] > planes[1]["offset"]
                assert planes[1]["stride"] == planes[2]["stride"] == 164
                assert "format=(string)I420" in meta["caps"]
                got = i420_planes(frame.numpy(), planes, w, h)
                want = i420_planes(expected[i * size : (i + 1) * size], planes, w, h)
                for name, a, b in zip("YUV", got, want):
                    assert np.array_equal(a, b), f"frame {i}: plane {name} differs"
                # the package's reader of the convention agrees
                for name, a, b in zip("YUV", video.planes(frame), want):
                    assert a.shape == b.shape and np.array_equal(a, b), name
                del got
                frame.release()
            with pytest.raises(bips.ProducerGone):  # end of stream: the pipeline's EOS
                cons.receive(timeout=10)
        rc, out, err = stop(proc)
    finally:
        if proc.poll() is None:
            stop(proc, timeout=0)
    assert rc == 0, f"bips-capture exited with {rc}\n{out}\n{err}"
    assert f"frames ({size},) uint8" in ready
    assert f"published {n} frames" in out


def test_capture_live_late_consumer_gets_fresh_frames(capture_app: Path, pool_name: str) -> None:
    """A live source captures on while bips-capture waits for its first consumer; what it captured
    before anyone could receive it is dropped, so a consumer that attaches late gets fresh frames
    from the start, not a backlog as old as the wait."""
    wait_s = 2.0
    proc = start_capture(
        capture_app, "--pool", pool_name, "--wait-consumers", "1", "--policy", "block"
    )
    try:
        first_line(proc)
        time.sleep(wait_s)  # the camera runs meanwhile; nobody is attached
        ages_ms: list[float] = []
        with bips.Consumer(pool_name, timeout=30) as cons:
            for _ in range(10):
                frame = cons.receive(timeout=10)
                ages_ms.append((time.monotonic_ns() - frame.timestamp_ns) / 1e6)
                frame.release()
            proc.send_signal(signal.SIGTERM)
        rc, out, err = stop(proc)
    finally:
        if proc.poll() is None:
            stop(proc, timeout=0)
    assert rc == 0, f"bips-capture exited with {rc}\n{out}\n{err}"
    # Capture to receipt: a frame or two at 30 fps when fresh; a backlog would start at wait_s.
    assert all(0 <= age < 1000 for age in ages_ms), ages_ms


def test_capture_stops_cleanly_on_sigterm(capture_app: Path, pool_name: str) -> None:
    """The default live pipeline runs until a signal; the pool is then closed, so a consumer
    sees the end of the stream, and the process exits 0."""
    proc = start_capture(capture_app, "--pool", pool_name, "--wait-consumers", "1")
    try:
        first_line(proc)
        with bips.Consumer(pool_name, timeout=30) as cons:
            seqs = [cons.receive(timeout=10).seq for _ in range(5)]
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(bips.ProducerGone):
                while True:  # what was queued, then the end of the stream
                    seqs.append(cons.receive(timeout=10).seq)
        rc, out, err = stop(proc)
    finally:
        if proc.poll() is None:
            stop(proc, timeout=0)
    assert rc == 0, f"bips-capture exited with {rc}\n{out}\n{err}"
    assert "stopped by a signal" in out
    assert seqs == list(range(len(seqs)))


@pytest.mark.parametrize(
    ("args", "rc", "message"),
    [
        (["--pipeline", "videotestsrc ! fakesink"], 1, "appsink named 'sink'"),
        (
            ["--pipeline", "videotestsrc ! nosuchelement42 ! appsink name=sink"],
            1,
            'no element "nosuchelement42"',
        ),
        (["--pipeline", "audiotestsrc num-buffers=1 ! appsink name=sink"], 1, "not raw video"),
        (
            ["--pipeline", "videotestsrc num-buffers=0 ! appsink name=sink"],
            1,
            "ended before producing a frame",
        ),
        (["--policy", "sometimes"], 2, "--policy"),
        (["--frames"], 2, "needs a value"),
    ],
)
def test_capture_reports_bad_input(
    capture_app: Path, pool_name: str, args: list[str], rc: int, message: str
) -> None:
    proc = start_capture(capture_app, "--pool", pool_name, *args)
    got_rc, out, err = stop(proc, timeout=30)
    assert got_rc == rc, f"{out}\n{err}"
    assert message in err


def test_capture_help(capture_app: Path) -> None:
    rc, out, err = stop(start_capture(capture_app, "--help"))
    assert rc == 0, err
    for option in (
        "--pool",
        "--capacity",
        "--policy",
        "--frames",
        "--pipeline",
        "--mode",
        "--wait-consumers",
    ):
        assert option in out


# --- examples/pytorch_consumer ---------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """examples/pytorch_consumer/consumer.py, imported as a module."""
    pytest.importorskip("torch")
    path = PYTORCH_SRC / "consumer.py"
    if not path.is_file():
        pytest.skip(f"{path} is not there (tests run outside a source checkout)")
    spec = importlib.util.spec_from_file_location("bips_pytorch_consumer_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


def start_camera(name: str, camera: int, frames: int, size: str) -> subprocess.Popen[str]:
    """A synthetic camera (producer.py) that waits for one consumer and loses no frame."""
    cmd = [
        sys.executable,
        str(PYTORCH_SRC / "producer.py"),
        "--pool",
        name,
        "--size",
        size,
        "--fps",
        "0",
        "--frames",
        str(frames),
        "--camera",
        str(camera),
        "--policy",
        "block",
        "--wait-consumers",
        "1",
    ]
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_pytorch_consumer_two_cameras_zero_copy(example: ModuleType) -> None:
    import torch

    n, h, w = 100, 96, 128
    pools = [unique_name("cam"), unique_name("cam")]
    cameras = [start_camera(name, i, n, f"{h}x{w}") for i, name in enumerate(pools)]
    batches: list[list[tuple[str, bool, tuple[int, ...], torch.dtype]]] = []
    results: dict[str, list[tuple[int, tuple[int, ...], bool]]] = {p: [] for p in pools}
    tint = {p: (i * 67) % 256 for i, p in enumerate(pools)}  # producer.py's per-camera blue

    def on_frames(frames: list[bips.Frame], views: list[torch.Tensor]) -> None:
        rows = []
        for frame, t in zip(frames, views):
            address = np.asarray(frame).ctypes.data
            blue = int(t[0, 0, 2])  # which camera this frame came from
            stream = next(p for p, b in tint.items() if b == blue)
            rows.append((stream, t.data_ptr() == address, tuple(t.shape), t.dtype))
        batches.append(rows)

    def on_result(stream: str, frame: bips.Frame, logits: torch.Tensor) -> None:
        results[stream].append((frame.seq, tuple(logits.shape), bool(torch.isfinite(logits).all())))

    try:
        for cam in cameras:
            first_line(cam)
        stats = example.run(
            pools,
            frames=n,
            device="cpu",
            wait=30,
            report_every=0,
            threads=1,
            on_frames=on_frames,
            on_result=on_result,
            log=lambda line: None,
        )
        ends = [stop(p, timeout=20) for p in cameras]
    finally:
        for p in cameras:
            if p.poll() is None:
                stop(p, timeout=0)

    for name, (rc, out, err) in zip(pools, ends):
        assert rc == 0, f"camera {name} exited with {rc}\n{out}\n{err}"
        assert f"published {n} frames" in out
    for name in pools:
        assert stats[name]["frames"] == n
        assert stats[name]["fps"] > 0
        assert stats[name]["latency_ms_p50"] > 0
        assert stats[name]["dropped"] == 0
        # One result per frame, in order, of the model's output shape.
        assert [seq for seq, _, _ in results[name]] == list(range(n))
        assert all(shape == (10,) and finite for _, shape, finite in results[name])
    rows = [row for batch in batches for row in batch]
    assert len(rows) == 2 * n
    # Every tensor is the frame's shared memory, not a copy.
    assert all(same for _, same, _, _ in rows)
    assert all(shape == (h, w, 3) and dtype == torch.uint8 for _, _, shape, dtype in rows)
    # At most one frame per stream in a batch, and the streams do get batched together.
    assert all(len({s for s, *_ in batch}) == len(batch) for batch in batches)
    assert sum(len(batch) == 2 for batch in batches) >= n // 2


def test_pytorch_preprocess_matches_the_reference(example: ModuleType, pool_name: str) -> None:
    """The fused uint8 HWC -> normalized float NCHW step equals (x / 255 - mean) / std, and
    drops the fourth channel of RGBx frames."""
    import torch

    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (24, 40, 3), dtype=np.uint8),
        rng.integers(0, 256, (24, 40, 4), dtype=np.uint8),
    ]
    prod = bips.Producer(pool_name, capacity=4, shape=(24, 40, 4))
    with prod, bips.Consumer(pool_name) as cons:
        for img in images:
            buf = prod.acquire(timeout=1)
            buf.set_format(img.shape, "uint8")
            buf.numpy()[...] = img
            prod.publish(buf)
        frames = [cons.receive(timeout=1) for _ in images]
        views = [torch.from_dlpack(f) for f in frames]
        batch = example.Preprocess(torch.device("cpu"))(views)
        del views
        for f in frames:
            f.release()
    mean = np.array(example.MEAN, dtype=np.float32)
    std = np.array(example.STD, dtype=np.float32)
    want = np.stack([((img[..., :3] / 255.0 - mean) / std).transpose(2, 0, 1) for img in images])
    assert batch.shape == (2, 3, 24, 40)
    assert batch.dtype == torch.float32
    np.testing.assert_allclose(batch.numpy(), want, rtol=1e-5, atol=1e-5)


def test_pytorch_consumer_rejects_frames_it_cannot_batch(
    example: ModuleType, pool_name: str
) -> None:
    """A gray (2-D) frame is not an RGB image: a clear error, not a crash in the model."""
    with bips.Producer(pool_name, capacity=2, shape=(8, 8), dtype="uint8") as prod:

        def publish_once_attached() -> None:
            deadline = time.monotonic() + 10
            while prod.stats.consumers == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            prod.publish(prod.acquire(timeout=1))

        publisher = threading.Thread(target=publish_once_attached)
        publisher.start()
        try:
            with pytest.raises(ValueError, match=r"expected \(height, width, 3 or 4\) uint8"):
                example.run(
                    [pool_name],
                    frames=1,
                    device="cpu",
                    wait=5,
                    report_every=0,
                    log=lambda line: None,
                )
        finally:
            publisher.join(timeout=15)
        assert not publisher.is_alive()


def test_pytorch_consumer_demo_command_line() -> None:
    """``consumer.py --demo``: starts its own synthetic cameras, prints per-stream reports and a
    summary, and exits 0."""
    pytest.importorskip("torch")
    pools = [unique_name("demo"), unique_name("demo")]
    cmd = [
        sys.executable,
        str(PYTORCH_SRC / "consumer.py"),
        "--demo",
        "--pools",
        *pools,
        "--frames",
        "20",
        "--size",
        "48x64",
        "--fps",
        "60",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    for name in pools:
        assert f"camera {name!r}: published 20 frames" in proc.stdout
        assert f"{name}: 20 frames" in proc.stdout
    assert "2 stream(s) on cpu, latest=False" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_pytorch_consumer_on_cuda(example: ModuleType) -> None:
    """The pinned-staging CUDA path gives the same logits as the CPU path."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    n = 10
    logits: dict[str, list[torch.Tensor]] = {"cpu": [], "cuda": []}
    for device in logits:
        pools = [unique_name("cuda")]
        cam = start_camera(pools[0], 1, n, "72x128")
        try:
            first_line(cam)
            stats = example.run(
                pools,
                frames=n,
                device=device,
                wait=30,
                report_every=0,
                on_result=lambda s, f, out, d=device: logits[d].append(out.clone()),
                log=lambda line: None,
            )
            rc, _, err = stop(cam, timeout=20)
        finally:
            if cam.poll() is None:
                stop(cam, timeout=0)
        assert rc == 0, err
        assert stats[pools[0]]["frames"] == n
    assert len(logits["cpu"]) == len(logits["cuda"]) == n
    for a, b in zip(logits["cpu"], logits["cuda"]):
        # cuDNN may run the convolutions in TF32 (10-bit mantissa): close, not equal.
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
