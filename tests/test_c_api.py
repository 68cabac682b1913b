# SPDX-License-Identifier: Apache-2.0
"""The C API (bips.h) from other languages, built like a user would against this installation:
examples/c_producer (plain C99, CMake find_package) feeds a Python consumer, and
examples/csharp_consumer (C#, P/Invoke over libbips_c.so, Mono) receives frames from a Python
producer and publishes frames to a Python consumer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import bips
import numpy as np
import pytest
from helpers import cmake_generator, first_line, require_cmake_project, run, stop

REPO = Path(__file__).resolve().parent.parent
C_PRODUCER_SRC = REPO / "examples" / "c_producer"
CSHARP_SRC = REPO / "examples" / "csharp_consumer"
FRAME_NS = 33_333_333  # the C producer stamps 30 frames per second


def build(src: Path, build_dir: Path) -> None:
    """Configures and builds the CMake project ``src`` against this installation of bips."""
    configure = ["cmake", "-S", str(src), "-B", str(build_dir), *cmake_generator()]
    configure += [f"-Dbips_DIR={bips.get_cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"]
    configure += ["-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"]
    run(configure, timeout=180)
    run(["cmake", "--build", str(build_dir), "--parallel", "2"], timeout=300)


def start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )




# --- examples/c_producer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def c_producer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_cmake_project(C_PRODUCER_SRC)
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler (cc, gcc or clang) found")
    build_dir = tmp_path_factory.mktemp("c_producer") / "build"
    build(C_PRODUCER_SRC, build_dir)
    # main.c was compiled as C99, by the C compiler, with the installed bips.h.
    commands = json.loads((build_dir / "compile_commands.json").read_text(encoding="utf-8"))
    (main,) = [c for c in commands if c["file"].endswith("main.c")]
    assert "-std=c99" in main["command"], main["command"]
    assert (
        str(Path(bips.get_include())) in main["command"]
        or str(Path(bips.get_include()).resolve()) in main["command"]
    )
    app = build_dir / "c_producer"
    assert app.is_file()
    return app


def test_c_producer_feeds_a_python_consumer(c_producer: Path, pool_name: str) -> None:
    n, h, w = 12, 24, 32
    started_ns = time.monotonic_ns()
    proc = start([str(c_producer), pool_name, str(n), str(h), str(w), "20"])
    try:
        ready = first_line(proc)
        stamps = []
        with bips.Consumer(pool_name, timeout=10) as cons:
            assert cons.shape == (h, w, 3)
            y, x, c = np.indices((h, w, 3))
            for i in range(n):
                frame = cons.receive(timeout=10)
                received_ns = time.monotonic_ns()
                assert frame.seq == i
                assert frame.shape == (h, w, 3)
                assert np.dtype(frame.dtype) == np.uint8
                assert frame.meta == f"frame {i}".encode()
                arr = frame.numpy()
                assert np.array_equal(arr, ((i + y + x + c) % 256).astype(np.uint8)), f"frame {i}"
                del arr
                assert frame.intact
                stamps.append(frame.timestamp_ns)
                assert started_ns <= stamps[0] <= received_ns
                frame.release()
            with pytest.raises(bips.ProducerGone):
                cons.receive(timeout=10)
        rc, out, err = stop(proc, timeout=20.0)
    finally:
        if proc.poll() is None:
            stop(proc, timeout=0)
    assert rc == 0, f"c_producer exited with {rc}\n{out}\n{err}"
    assert ready == f"bips {bips.__version__}: pool '{pool_name}' ready\n"
    assert f"published {n} frames" in out
    # Stamped by the C program: START + i/30 s, exactly.
    assert [t - stamps[0] for t in stamps] == [i * FRAME_NS for i in range(n)]


def test_c_producer_reports_errors_with_the_library_message(
    c_producer: Path, pool_name: str
) -> None:
    with bips.Producer(pool_name, capacity=2, shape=(4,)):
        rc, out, err = stop(start([str(c_producer), pool_name, "1"]))
    assert rc == 1, out
    assert "error: bips_producer_create: BIPS_ERR_POOL_BUSY:" in err
    assert pool_name in err


# --- examples/csharp_consumer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def csharp_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """csharp_consumer.exe and libbips_c.so beside it."""
    require_cmake_project(CSHARP_SRC)
    for tool, package in (("mcs", "mono-mcs"), ("mono", "mono-runtime")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (Debian: apt install {package})")
    build_dir = tmp_path_factory.mktemp("csharp") / "build"
    build(CSHARP_SRC, build_dir)
    lib = build_dir / "libbips_c.so"
    exe = build_dir / "csharp_consumer.exe"
    assert lib.is_file() and exe.is_file()
    # The shared library exports the C API and nothing else.
    if shutil.which("nm"):
        symbols = run(["nm", "-D", "--defined-only", str(lib)], timeout=60).stdout.split()
        exported = {s for s in symbols if re.fullmatch(r"[A-Za-z_]\w*", s) and len(s) > 1}
        assert "bips_consumer_receive" in exported
        assert not [s for s in exported if not s.startswith("bips_")], sorted(exported)[:20]
    return exe


def mono(exe: Path, *args: str) -> subprocess.Popen[str]:
    return start(["mono", "--debug", str(exe), *args])


def expected(seq: int, nbytes: int) -> np.ndarray:
    """What the C# program checks and writes: byte k of frame seq is (seq + k) % 251."""
    return ((seq + np.arange(nbytes)) % 251).astype(np.uint8)


def test_csharp_consumer_receives_python_frames(csharp_app: Path, pool_name: str) -> None:
    n, shape = 8, (16, 20, 3)
    nbytes = int(np.prod(shape))
    published = []
    with bips.Producer(pool_name, capacity=4, shape=shape, dtype="uint8", meta_size=32) as prod:
        proc = mono(csharp_app, "consume", pool_name, str(n), "20")
        try:
            assert first_line(proc) == f"attached to '{pool_name}'\n"
            assert prod.stats.consumers == 1
            for i in range(n):
                buf = prod.acquire(timeout=10)
                buf.numpy().reshape(-1)[:] = expected(i, nbytes)
                ts = time.monotonic_ns()
                prod.publish(buf, timestamp_ns=ts, meta=f"frame {i}".encode())
                published.append(ts)
            prod.close()
            rc, out, err = stop(proc, timeout=20.0)
        finally:
            if proc.poll() is None:
                stop(proc, timeout=0)
    assert rc == 0, f"csharp_consumer.exe exited with {rc}\n{out}\n{err}"
    lines = out.splitlines()
    assert lines[:n] == [
        f"frame {i} {published[i]} {nbytes} 16x20x3 uint8 frame {i}" for i in range(n)
    ]
    assert lines[n:] == [f"end of stream; received {n} frames"]


def test_csharp_producer_feeds_a_python_consumer(csharp_app: Path, pool_name: str) -> None:
    n = 6
    proc = mono(csharp_app, "produce", pool_name, str(n), "20")
    try:
        assert first_line(proc) == f"pool '{pool_name}' ready\n"
        with bips.Consumer(pool_name, timeout=10) as cons:
            for i in range(n):
                frame = cons.receive(timeout=10)
                assert frame.seq == i
                assert frame.shape == (32, 48, 3)
                assert np.dtype(frame.dtype) == np.uint8
                assert frame.timestamp_ns == 1000 * (i + 1)
                assert frame.meta == f"frame {i}".encode()
                assert np.array_equal(frame.numpy().reshape(-1), expected(i, 32 * 48 * 3))
                frame.release()
            with pytest.raises(bips.ProducerGone):
                cons.receive(timeout=10)
        rc, out, err = stop(proc, timeout=20.0)
    finally:
        if proc.poll() is None:
            stop(proc, timeout=0)
    assert rc == 0, f"csharp_consumer.exe exited with {rc}\n{out}\n{err}"
    assert f"published {n} frames" in out


def test_csharp_sees_status_codes_and_messages(csharp_app: Path, pool_name: str) -> None:
    """A failure in the library reaches C# as a code and the library's message (no crash)."""
    rc, out, err = stop(mono(csharp_app, "consume", pool_name, "1", "0"))
    assert rc == 1, f"{out}\n{err}"
    assert f"error: open '{pool_name}': BIPS_ERR_POOL_NOT_FOUND: " in err
    assert pool_name in err.split("BIPS_ERR_POOL_NOT_FOUND: ", 1)[1]
