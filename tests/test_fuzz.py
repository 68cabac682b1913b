# SPDX-License-Identifier: Apache-2.0
"""A hostile peer against live traffic (issue 8), across languages: a C++ producer (fuzz_peer.cpp,
built with find_package(bips) against this installation) and two Python consumers run while a
Python process scribbles over, truncates and re-extends every file of the pool it can open for
writing. No process may die by a signal or hang, and once the hostile process is gone a fresh
Python producer and consumer on the same name must deliver 50 frames intact.

The attacks know nothing of the byte layout: the files are found with the globs
/dev/shm/bips.NAME and /dev/shm/bips.NAME@*. The seed is $BIPS_FUZZ_SEED, else today's date
(YYYYMMDD); every failure message names it. BIPS_FUZZ_NO_TRUNCATE=1 leaves out the truncations
(to tell what the writes alone do). The C++ twin of this test is `bips_fuzz_peer drive`
under ctest, which also runs under the sanitizers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import time
from pathlib import Path

import bips
import pytest
from helpers import cmake_generator, require_cmake_project, run, spawn_python, wait_until

REPO = Path(__file__).resolve().parent.parent
PEER_SRC = REPO / "cpp" / "tests" / "fuzz_peer.cpp"

SECONDS = 8.0  # of attacks
FRAMES = 50  # through the fresh pool at the end
CHECK_BUDGET = 5.0  # seconds for those frames
OVERRUN = 5.0  # a child still running this long after its end has hung, and is killed
SEED = int(os.environ.get("BIPS_FUZZ_SEED") or time.strftime("%Y%m%d"))
FAULTHANDLER = {"PYTHONFAULTHANDLER": "1"}  # a Python child killed by a signal says where

# argv: name, seconds. Reads every frame whole (pixels and metadata) and checks nothing but that
# it survives; errors are expected under attack, and answered by attaching again.
CONSUMER = r"""
name, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + seconds
cons = None
received = attached = 0
errors = {}
sink = 0
while time.monotonic() < deadline:
    try:
        if cons is None:
            cons = bips.Consumer(name, timeout=0.5, reconnect=True)
            attached += 1
        try:
            frame = cons.receive(timeout=0.2)
        except bips.Timeout:
            continue
        sink += int(np.asarray(frame).sum()) + len(frame.meta) + frame.seq + len(frame.shape)
        del frame
        received += 1
    except (bips.Error, OSError) as e:
        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        if cons is not None:
            cons.close()
            cons = None
        time.sleep(0.01)
if cons is not None:
    cons.close()
emit(received=received, attached=attached, errors=errors)
"""

# argv: name, seconds, seed. Bursts of writes into a read-write mapping of one of the pool's
# files, or a truncation and re-extension, with short pauses (and now and then a longer calm) so
# that legitimate traffic runs between attacks.
HOSTILE = r"""
import ctypes, glob, mmap, random, struct
name, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])

# An ordinary process: as root (CI containers) it would otherwise open even files whose mode says
# read-only. Without capabilities, root is held to the mode bits.
class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
no_caps = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: nothing, in both words
if ctypes.CDLL(None, use_errno=True).capset(ctypes.byref(CapHeader(0x20080522, 0)), no_caps):
    print("hostile: capset:", os.strerror(ctypes.get_errno()), file=sys.stderr)
rng = random.Random(seed)
PAGE = mmap.PAGESIZE
U64 = (1 << 64) - 1
# Values that break counts, sizes, offsets, indices and bit masks when trusted.
FIXED = [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 63, 64, 65, 255, 256, 1023, 1024, 1025,
         U64, U64 - 1, 2**63 - 1, 2**63, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1,
         2**40, 2**62, 0x5555555555555555, 0xFFFFFFFF00000000]
ops = dict.fromkeys(["random-bytes", "value64", "value32", "bit", "page", "sweep", "truncate"], 0)
hit, sizes, sweep_at = {}, {}, {}
not_writable = 0
truncate = os.environ.get("BIPS_FUZZ_NO_TRUNCATE", "0") in ("", "0")

def pool_files():
    base = glob.escape("/dev/shm/bips." + name)
    return glob.glob(base) + glob.glob(base + "@*")

def value(current, size):
    k = rng.randrange(4)
    if k == 0:  # near a size the segment itself has
        return (rng.choice([size, size // 2, PAGE, 64 * 64 * 3, 256]) + rng.randrange(3) - 1) & U64
    if k == 1:  # the value that is there, nudged: a counter or index off by one, doubled
        return (current * 2 if rng.randrange(3) == 0 else current + rng.randrange(3) - 1) & U64
    return rng.choice(FIXED)

def offset(size, length, align):
    # Offsets favour the start of the file, where headers and descriptors live in any design.
    limit = size - length
    k = rng.randrange(10)
    if k < 4:
        off = rng.randrange(min(PAGE, limit + 1))
    elif k < 6:
        off = rng.randrange(min(16 * PAGE, limit + 1))
    else:
        off = rng.randrange(limit + 1)
    return min(off // align * align, limit // align * align)

def mark(path, off, length):
    hit[path].update(range(off // PAGE, (off + length - 1) // PAGE + 1))

def store(m, fmt, off, size, path):
    (current,) = struct.unpack_from(fmt, m, off)
    struct.pack_into(fmt, m, off, value(current, size) & (U64 if fmt == "<Q" else 0xFFFFFFFF))
    mark(path, off, struct.calcsize(fmt))

def attack(m, size, path):
    r = rng.randrange(100)
    if r < 25:
        n = min(1 + rng.randrange(16), size)
        off = offset(size, n, 1)
        m[off:off + n] = rng.randbytes(n)
        mark(path, off, n)
        ops["random-bytes"] += 1
    elif r < 55:
        store(m, "<Q", offset(size, 8, 8), size, path)
        ops["value64"] += 1
    elif r < 70:
        store(m, "<I", offset(size, 4, 4), size, path)
        ops["value32"] += 1
    elif r < 95:  # one bit of a 64-bit word flipped, set or cleared
        off = offset(size, 8, 8)
        (w,) = struct.unpack_from("<Q", m, off)
        bit = 1 << rng.randrange(64)
        k = rng.randrange(3)
        struct.pack_into("<Q", m, off, w ^ bit if k == 0 else w | bit if k == 1 else w & ~bit & U64)
        mark(path, off, 8)
        ops["bit"] += 1
    else:  # a whole page of garbage; the first page one time in eight
        pg = 0 if rng.randrange(8) == 0 else rng.randrange((size + PAGE - 1) // PAGE)
        begin = pg * PAGE
        n = min(PAGE, size - begin)
        k = rng.randrange(3)
        m[begin:begin + n] = rng.randbytes(n) if k == 0 else (b"\xff" if k == 1 else b"\0") * n
        mark(path, begin, n)
        ops["page"] += 1

def burst(path):
    global not_writable
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        not_writable += 1  # read-only to us, or gone: skipped
        return
    try:
        size = os.fstat(fd).st_size
        if size < 8:
            return
        hit.setdefault(path, set())
        sizes[path] = size
        if truncate and rng.randrange(8) == 0:
            # Shrink (to nothing, half, a page or anywhere), let the others run into it for a
            # moment, then give the file its size back, zero-filled.
            target = rng.choice([0, size // 2, min(PAGE, size), rng.randrange(size)])
            os.ftruncate(fd, target)
            time.sleep(rng.randrange(5000) / 1e6)
            os.ftruncate(fd, size)
            if target < size:
                mark(path, target, size - target)
            ops["truncate"] += 1
            return
        with mmap.mmap(fd, size) as m:  # MAP_SHARED, read-write
            # One page in turn every burst, so every page of every file is hit regularly.
            pages = (size + PAGE - 1) // PAGE
            pg = sweep_at.get(path, 0) % pages
            sweep_at[path] = pg + 1
            room = min(PAGE, size - pg * PAGE)
            if room >= 8:
                store(m, "<Q", pg * PAGE + rng.randrange(room // 8) * 8, size, path)
                ops["sweep"] += 1
            for _ in range(1 + rng.randrange(24)):
                attack(m, size, path)
    finally:
        os.close(fd)

deadline = time.monotonic() + seconds
bursts = 0
while time.monotonic() < deadline:
    files = pool_files()
    if not files:
        time.sleep(0.002)
        continue
    burst(rng.choice(files))
    bursts += 1
    pause = 30 + rng.randrange(50) if rng.randrange(20) == 0 else 1 + rng.randrange(8)
    time.sleep(pause / 1000)
pages = {p: [len(hit[p]), (sizes[p] + PAGE - 1) // PAGE] for p in hit}
emit(seed=seed, bursts=bursts, ops=ops, pages=pages, not_writable=not_writable)
"""

# argv: name, frames, budget. A fresh producer on the name: waits for one consumer, then
# publishes frame i with fill(pixels, i) and metadata "frame i", and closes.
SEND = r"""
name, n, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + budget
with bips.Producer(name, capacity=4, shape=(64, 64, 3), dtype="uint8", meta_size=256) as prod:
    while prod.stats.consumers == 0:
        if time.monotonic() > deadline:
            sys.exit("no consumer attached")
        time.sleep(0.002)
    for i in range(n):
        buf = prod.acquire(timeout=max(0.001, deadline - time.monotonic()))
        fill(buf.numpy(), i)
        prod.publish(buf, meta=f"frame {i}".encode())
emit(published=n)
"""

# argv: name, frames, budget. Attaches (retrying until the fresh producer has replaced what the
# attack left under the name), then checks every frame whole, and the end of the stream.
RECEIVE = r"""
name, n, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + budget
left = lambda: max(0.001, deadline - time.monotonic())
cons = None
while cons is None:
    try:
        cons = bips.Consumer(name, timeout=min(1.0, left()))
    except bips.Error:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.02)
with cons:
    for i in range(n):
        f = cons.receive(timeout=left())
        assert f.seq == i, f"frame {i} has seq {f.seq}"
        assert f.shape == (64, 64, 3) and f.dtype == np.uint8, (i, f.shape, f.dtype)
        assert f.meta == f"frame {i}".encode(), (i, f.meta)
        assert check(np.asarray(f), i), f"frame {i}: wrong pixels"
        del f
    try:
        cons.receive(timeout=left())
        sys.exit("a frame after the last one")
    except bips.ProducerGone:
        pass  # the end of the stream, as it should be
emit(received=n)
"""


@pytest.fixture(scope="module")
def fuzz_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bips_fuzz_peer, built like a user's project: CMake, find_package(bips) from this
    installation."""
    require_cmake_project(PEER_SRC.parent)
    if not PEER_SRC.is_file():
        pytest.skip(f"{PEER_SRC} is not there (tests run outside a source checkout)")
    root = tmp_path_factory.mktemp("fuzz_peer")
    (root / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18...3.31)\n"
        "project(bips_fuzz_peer LANGUAGES CXX)\n"
        "find_package(bips CONFIG REQUIRED)\n"
        f'add_executable(bips_fuzz_peer "{PEER_SRC.as_posix()}")\n'
        "target_link_libraries(bips_fuzz_peer PRIVATE bips::bips)\n",
        encoding="utf-8",
    )
    build = root / "build"
    configure = ["cmake", "-S", str(root), "-B", str(build), *cmake_generator()]
    configure += [f"-Dbips_DIR={bips.get_cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"]
    run(configure, timeout=120)
    run(["cmake", "--build", str(build), "--parallel", "2"], timeout=180)
    return build / "bips_fuzz_peer"


def pool_files(name: str) -> list[str]:
    base = glob.escape(f"/dev/shm/bips.{name}")
    return glob.glob(base) + glob.glob(base + "@*")


def remove_pool(name: str) -> None:
    with contextlib.suppress(bips.Error, OSError):
        bips.remove_stale_pool(name)
    for path in pool_files(name):  # what the attack left unreadable
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def traffic_flows(name: str) -> bool:
    try:
        info = bips.pool_info(name)
    except bips.Error:
        return False  # not created yet
    return info.consumers >= 2 and info.published > 0


def judge(procs: dict[str, subprocess.Popen[bytes]], deadline: float) -> list[str]:
    """Waits for every process until `deadline` (then kills it); one line per problem: killed
    by a signal, a non-zero exit, or a hang. Prints what each one said."""
    problems = []
    for role, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung = True
        said = (out + err).decode(errors="replace").strip()
        print(f"--- {role} (rc {proc.returncode})\n{said[-3000:]}")
        if hung:
            problems.append(f"{role} hung: killed {OVERRUN:.0f} s after its end")
        elif proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            problems.append(f"{role} was killed by {sig}")
        elif proc.returncode != 0:
            problems.append(f"{role} exited with {proc.returncode}: {said[-500:]}")
    return problems


def test_hostile_peer_cannot_crash_or_wedge_a_pool(fuzz_peer: Path, pool_name: str) -> None:
    policy = "drop_oldest" if SEED % 2 else "block"
    print(f"seed {SEED}, pool {pool_name}, {policy} policy, {SECONDS:.0f} s of attacks")
    procs: list[subprocess.Popen[bytes]] = []
    problems: list[str] = []
    try:
        chaos = {
            "C++ producer": subprocess.Popen(
                [str(fuzz_peer), "producer", pool_name, str(SECONDS), "--policy", policy],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            "Python consumer 1": spawn_python(CONSUMER, pool_name, SECONDS, env=FAULTHANDLER),
            "Python consumer 2": spawn_python(CONSUMER, pool_name, SECONDS, env=FAULTHANDLER),
        }
        procs += chaos.values()
        end = time.monotonic() + SECONDS
        # The attack starts once traffic flows (both consumers attached, a frame published), so
        # that it hits a pool in use; it ends with the others.
        wait_until(lambda: traffic_flows(pool_name), timeout=5.0)
        attack_s = max(1.0, end - time.monotonic())
        chaos["Python hostile"] = spawn_python(HOSTILE, pool_name, attack_s, SEED, env=FAULTHANDLER)
        procs.append(chaos["Python hostile"])
        problems += judge(chaos, end + OVERRUN)

        # The hostile process is gone: a new producer on the same name works normally.
        check = {
            "fresh Python producer": spawn_python(SEND, pool_name, FRAMES, CHECK_BUDGET),
            "fresh Python consumer": spawn_python(RECEIVE, pool_name, FRAMES, CHECK_BUDGET),
        }
        procs += check.values()
        problems += [
            "final check: " + p for p in judge(check, time.monotonic() + CHECK_BUDGET + OVERRUN)
        ]
    finally:
        for proc in procs:  # those judge() did not reach
            if proc.returncode is None:
                proc.kill()
                proc.communicate()
        remove_pool(pool_name)
    if problems:
        pytest.fail(
            f"hostile-peer fuzz failed with seed {SEED} (rerun: BIPS_FUZZ_SEED={SEED} pytest "
            "tests/test_fuzz.py):\n  " + "\n  ".join(problems),
            pytrace=False,
        )
