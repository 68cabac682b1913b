# SPDX-License-Identifier: Apache-2.0
"""GPU pools without a GPU: the whole path (allocation exported as a file descriptor, handed over
the pool's socket, imported and mapped by consumers in other processes, stream-ordered publish
and release) runs against the fake CUDA driver (tests/fake_cuda), whose "device memory" is host
memory that the test can read with ctypes. The same scenarios on a real GPU are in tests/gpu.

Every scenario runs in child processes with BIPS_LIBCUDA set: the driver is loaded once per
process, and the test process itself must stay free to test the no-driver path."""

from __future__ import annotations

import os
import signal
from typing import Any

import bips
import pytest
from helpers import kill_and_reap, pool_path, read_message, reap, spawn_python, wait_until

# Children get these on top of helpers.PRELUDE: the fake driver's test entry points, and a
# frame's bytes read through its "device" pointer (host memory under the fake).
FAKE = r"""
import ctypes
fake = ctypes.CDLL(os.environ["BIPS_LIBCUDA"])
fake.fake_cuda_stream_create.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
fake.fake_cuda_enqueue_fill.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong, ctypes.c_int,
                                        ctypes.c_size_t, ctypes.c_uint]
fake.fake_cuda_enqueue_sleep.argtypes = [ctypes.c_void_p, ctypes.c_uint]
fake.fake_cuda_stats.argtypes = [ctypes.c_char_p]
fake.fake_cuda_stats.restype = ctypes.c_ulonglong

def new_stream():
    s = ctypes.c_void_p()
    assert fake.fake_cuda_stream_create(ctypes.byref(s)) == 0
    return s.value

def ptr(x):
    return x.__cuda_array_interface__["data"][0]

def read(x, n=None):
    return ctypes.string_at(ptr(x), x.nbytes if n is None else n)

def fill_now(buf, value):
    ctypes.memset(ptr(buf), value, buf.nbytes)
"""


@pytest.fixture
def gpu_env(fake_cuda: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BIPS_LIBCUDA"] = fake_cuda
    return env


def spawn(code: str, *args: Any, env: dict[str, str]) -> Any:
    return spawn_python(FAKE + code, *args, env=env)


PRODUCER = r"""
name, count, shape, capacity = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3]), int(sys.argv[4])
with bips.Producer(name, capacity=capacity, shape=shape, dtype="uint8", device="cuda:0") as p:
    emit(ready=True, device=p.device)
    wait_for = time.monotonic() + 10
    while p.stats.consumers < int(os.environ.get("CONSUMERS", "1")) and time.monotonic() < wait_for:
        time.sleep(0.005)
    stream = new_stream()
    for seq in range(count):
        buf = p.acquire(timeout=10)
        assert buf.device == "cuda:0"
        # A slow "kernel" writes the frame; publish is ordered after it on the same stream.
        fake.fake_cuda_enqueue_fill(stream, ptr(buf), seq % 251, buf.nbytes, int(os.environ.get("FILL_US", "0")))
        p.publish(buf, stream=stream)
        # publish() returned while the kernel still runs (and the publish waits behind it).
        emit(published=seq, kernel_running=fake.fake_cuda_stats(b"ops_pending") > 0)
    deadline = time.monotonic() + 10
    while p.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.005)
    emit(done=True, in_flight=p.stats.in_flight)
"""

CONSUMER = r"""
name, count = sys.argv[1], int(sys.argv[2])
with bips.Consumer(name, timeout=10, latest=os.environ.get("LATEST") == "1") as c:
    emit(attached=True, device=c.device)
    got = []
    while len(got) < count:
        try:
            f = c.receive(timeout=10)
        except bips.ProducerGone:
            break
        data = read(f)
        ok = data == bytes([f.seq % 251]) * f.nbytes
        cai = f.__cuda_array_interface__
        got.append(dict(seq=f.seq, ok=ok, device=f.device, readonly=cai["data"][1],
                        index=f.index, ptr=cai["data"][0], dl=f.__dlpack_device__(),
                        host_ok=bytes(f.to_host().reshape(-1)) == data))
        f.release()
    emit(frames=got)
"""


def test_gpu_pool_frames_cross_processes_complete_and_in_order(pool_name: str, gpu_env):
    env = dict(gpu_env, FILL_US="20000")  # each frame takes a 20 ms "kernel" to write
    prod = spawn(PRODUCER, pool_name, 6, "(64, 48, 3)", 3, env=env)
    try:
        assert read_message(prod, timeout=10)["device"] == "cuda:0"
        cons = spawn(CONSUMER, pool_name, 6, env=env)
        try:
            assert read_message(cons, timeout=10)["device"] == "cuda:0"
            running = [read_message(prod, timeout=10)["kernel_running"] for _ in range(6)]
            frames = read_message(cons, timeout=20)["frames"]
        finally:
            reap(cons, timeout=10)
        done = read_message(prod, timeout=15)
    finally:
        rc, _, err = reap(prod, timeout=10)
    assert rc == 0, err
    assert [f["seq"] for f in frames] == list(range(6))
    # Never a partial frame: publish waited for the writing kernel, not the consumer.
    assert all(f["ok"] and f["host_ok"] for f in frames), frames
    assert all(f["device"] == "cuda:0" and f["dl"] == [2, 0] for f in frames)
    assert all(f["readonly"] for f in frames)
    # publish() returns before the 20 ms kernel has finished: it never blocks the CPU.
    assert all(running), running
    assert done["in_flight"] == 0


def test_gpu_pool_zero_copy_pointers_are_stable_per_buffer(pool_name: str, gpu_env):
    prod = spawn(PRODUCER, pool_name, 8, "(1000,)", 2, env=gpu_env)
    try:
        read_message(prod, timeout=10)
        cons = spawn(CONSUMER, pool_name, 8, env=gpu_env)
        try:
            read_message(cons, timeout=10)
            frames = read_message(cons, timeout=20)["frames"]
        finally:
            reap(cons, timeout=10)
    finally:
        reap(prod, timeout=15)
    by_index: dict[int, set[int]] = {}
    for f in frames:
        by_index.setdefault(f["index"], set()).add(f["ptr"])
    # One mapping of the pool's allocation: each buffer always at the same address, 4096 apart.
    assert all(len(p) == 1 for p in by_index.values()), by_index
    ptrs = sorted(next(iter(p)) for p in by_index.values())
    assert len(ptrs) == 2 and ptrs[1] - ptrs[0] == 4096


def test_gpu_pool_several_consumers_and_latest(pool_name: str, gpu_env):
    env = dict(gpu_env, CONSUMERS="4")
    prod = spawn(PRODUCER, pool_name, 20, "(32, 32)", 8, env=env)
    conss = []
    try:
        read_message(prod, timeout=10)
        for i in range(4):
            conss.append(spawn(CONSUMER, pool_name, 20, env=dict(env, LATEST="1" if i == 3 else "0")))
        results = []
        for c in conss:
            read_message(c, timeout=10)
        for c in conss:
            results.append(read_message(c, timeout=30)["frames"])
    finally:
        for c in conss:
            reap(c, timeout=10)
        rc, _, err = reap(prod, timeout=20)
    assert rc == 0, err
    for r in results[:3]:
        assert [f["seq"] for f in r] == list(range(20))
        assert all(f["ok"] for f in r)
    latest = [f["seq"] for f in results[3]]
    assert latest and latest == sorted(latest) and latest[-1] == 19
    assert all(f["ok"] for f in results[3])


def test_release_waits_for_the_consumers_stream(pool_name: str, gpu_env):
    """A buffer goes back only after the consumer's kernel that reads it has finished."""
    code = r"""
name = sys.argv[1]
with bips.Producer(name, capacity=1, shape=(4096,), device="cuda:0") as p:
    with bips.Consumer(name, timeout=5) as c:
        buf = p.acquire(timeout=5)
        fill_now(buf, 7)
        p.publish(buf, stream=-1)
        f = c.receive(timeout=5)
        s = new_stream()
        fake.fake_cuda_enqueue_sleep(s, 1000000)   # a 1 s kernel reading the frame
        t0 = time.monotonic()
        f.release(stream=s)
        early = p.try_acquire()
        free_early = early is not None
        got = p.acquire(timeout=5)
        emit(free_early=free_early, waited=time.monotonic() - t0)
        got.discard()
"""
    proc = spawn(code, pool_name, env=gpu_env)
    msg = read_message(proc, timeout=15)
    rc, _, err = reap(proc, timeout=10)
    assert rc == 0, err
    assert not msg["free_early"]
    assert msg["waited"] > 0.5, msg


def test_dlpack_stream_orders_release_of_dropped_views(pool_name: str, gpu_env):
    """The stream an importer gives __dlpack__ is the one the frame's release waits for."""
    code = r"""
name = sys.argv[1]
with bips.Producer(name, capacity=1, shape=(16,), device="cuda:0") as p:
    with bips.Consumer(name, timeout=5) as c:
        buf = p.acquire(timeout=5)
        fill_now(buf, 1)
        p.publish(buf, stream=-1)
        f = c.receive(timeout=5)
        s = new_stream()
        cap = f.__dlpack__(stream=s, max_version=(1, 0))
        fake.fake_cuda_enqueue_sleep(s, 1000000)
        t0 = time.monotonic()
        del cap, f                                # the capsule's deleter and the frame: released
        early = p.try_acquire()
        got = p.acquire(timeout=5)
        emit(free_early=early is not None, waited=time.monotonic() - t0)
        got.discard()
"""
    proc = spawn(code, pool_name, env=gpu_env)
    msg = read_message(proc, timeout=15)
    rc, _, err = reap(proc, timeout=10)
    assert rc == 0, err
    assert not msg["free_early"]
    assert msg["waited"] > 0.5, msg


def test_dlpack_stream_minus_one_does_not_release_before_the_gpu_is_done(pool_name: str, gpu_env):
    """DLPack's stream=-1 asks the exporter not to synchronise the import; it says nothing of
    when the importer's kernels are done with the data. Dropping the views then must not give
    the buffer back at once: the release still waits (on the legacy default stream, which waits
    for the blocking stream the importer's kernel runs on)."""
    code = r"""
name = sys.argv[1]
with bips.Producer(name, capacity=1, shape=(16,), device="cuda:0") as p:
    with bips.Consumer(name, timeout=5) as c:
        buf = p.acquire(timeout=5)
        fill_now(buf, 1)
        p.publish(buf, stream=-1)
        f = c.receive(timeout=5)
        s = new_stream()
        cap = f.__dlpack__(stream=-1, max_version=(1, 0))
        fake.fake_cuda_enqueue_sleep(s, 1000000)      # the importer's kernel reads the frame
        t0 = time.monotonic()
        del cap, f
        time.sleep(0.2)
        free_early = p.try_acquire() is not None
        got = p.acquire(timeout=5)
        emit(free_early=free_early, waited=time.monotonic() - t0)
        got.discard()
"""
    proc = spawn(code, pool_name, env=gpu_env)
    msg = read_message(proc, timeout=15)
    rc, _, err = reap(proc, timeout=10)
    assert rc == 0, err
    assert not msg["free_early"]
    assert msg["waited"] > 0.5, msg


def test_release_from_another_thread_waits_for_to_host(pool_name: str, gpu_env):
    """to_host() copies without the GIL; a release() from another thread meanwhile must neither
    free the frame under it nor give the buffer back to be rewritten before the copy is done."""
    code = r"""
import threading
name = sys.argv[1]
with bips.Producer(name, capacity=1, shape=(4096,), device="cuda:0") as p:
    with bips.Consumer(name, timeout=5) as c:
        b = p.acquire(timeout=5)
        fill_now(b, 1)
        p.publish(b, stream=-1)
        del b
        f = c.receive(timeout=5)
        s = new_stream()
        fake.fake_cuda_enqueue_sleep(s, 500000)       # the copy waits behind this kernel
        out = {}
        t = threading.Thread(target=lambda: out.update(host=f.to_host()))
        t.start()
        time.sleep(0.1)                               # to_host() waits for its copy
        f.release(stream=-1)
        b = p.acquire(timeout=5)
        fill_now(b, 2)                                # the producer writes the next frame
        t.join()
        emit(copied=sorted(set(out["host"].tolist())))
        b.discard()
"""
    proc = spawn(code, pool_name, env=gpu_env)
    msg = read_message(proc, timeout=15)
    rc, _, err = reap(proc, timeout=10)
    assert rc == 0, err
    assert msg["copied"] == [1]


def test_stream_objects_that_release_the_frame_meanwhile(pool_name: str, gpu_env):
    """A stream argument runs Python code (__cuda_stream__): one that releases the frame while
    bips reads the argument must not leave bips working on a freed frame. A capsule made then
    is a view like any other: it keeps the buffer until it is gone."""
    code = r"""
name = sys.argv[1]
with bips.Producer(name, capacity=1, shape=(16,), device="cuda:0") as p:
    with bips.Consumer(name, timeout=5) as c:
        def frame():
            b = p.acquire(timeout=5)
            p.publish(b, stream=-1)
            return c.receive(timeout=5)

        class Releasing:
            def __init__(self, f):
                self.f = f
            def __cuda_stream__(self):
                self.f.release(stream=-1)
                self.f = None
                # Takes the memory the frame's keeper had, if it was freed (same size class).
                self.bystander = bytes(255)
                return (0, 0x4242424242424242)

        f = frame()
        cap = f.__dlpack__(stream=Releasing(f), max_version=(1, 0))
        del f
        time.sleep(0.2)
        held_by_capsule = p.try_acquire() is None
        del cap
        f = frame()                                   # the capsule gave it back
        releasing = Releasing(f)
        f.release(stream=releasing)
        del f
        frame().release(stream=-1)
        emit(held_by_capsule=held_by_capsule, bystander_intact=releasing.bystander == bytes(255))
"""
    proc = spawn(code, pool_name, env=gpu_env)
    msg = read_message(proc, timeout=15)
    rc, _, err = reap(proc, timeout=10)
    assert rc == 0, err
    assert msg == {"held_by_capsule": True, "bystander_intact": True}


def test_sigkill_consumer_holding_device_frames_returns_buffers(pool_name: str, gpu_env):
    holder = r"""
name = sys.argv[1]
c = bips.Consumer(name, timeout=10)
held = [c.receive(timeout=10) for _ in range(3)]
emit(held=[f.seq for f in held])
time.sleep(60)
"""
    code = r"""
name = sys.argv[1]
with bips.Producer(name, capacity=3, shape=(256,), device="cuda:0") as p:
    emit(ready=True)
    deadline = time.monotonic() + 10
    while p.stats.consumers < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(3):
        b = p.acquire(timeout=5)
        fill_now(b, i)
        p.publish(b)
    sys.stdin.readline()
    t0 = time.monotonic()
    bufs = [p.acquire(timeout=10) for _ in range(3)]   # the dead consumer's bits are swept
    emit(recovered=len(bufs), after=time.monotonic() - t0)
"""
    prod = spawn_python(FAKE + code, pool_name, env=gpu_env, stdin=True)
    try:
        read_message(prod, timeout=10)
        cons = spawn(holder, pool_name, env=gpu_env)
        assert read_message(cons, timeout=10)["held"] == [0, 1, 2]
        kill_and_reap(cons, signal.SIGKILL)
        prod.stdin.write(b"go\n")
        prod.stdin.flush()
        msg = read_message(prod, timeout=15)
    finally:
        rc, _, err = reap(prod, timeout=10)
    assert rc == 0, err
    assert msg["recovered"] == 3


def test_sigkill_producer_gives_producer_gone_and_cleans_up(pool_name: str, gpu_env):
    code = r"""
name = sys.argv[1]
p = bips.Producer(name, capacity=2, shape=(64,), device="cuda:0")
emit(ready=True)
deadline = time.monotonic() + 10
while p.stats.consumers < 1 and time.monotonic() < deadline:
    time.sleep(0.005)
b = p.acquire(timeout=5)
fill_now(b, 5)
p.publish(b)
time.sleep(60)
"""
    prod = spawn(code, pool_name, env=gpu_env)
    read_message(prod, timeout=10)
    assert os.path.exists(pool_path(pool_name) + "@fd")
    cons_code = r"""
name = sys.argv[1]
with bips.Consumer(name, timeout=5) as c:
    f = c.receive(timeout=5)
    emit(first=read(f) == bytes([5]) * 64)
    f.release()
    sys.stdin.readline()
    t0 = time.monotonic()
    try:
        c.receive(timeout=10)
        emit(gone=False)
    except bips.ProducerGone:
        emit(gone=True, after=time.monotonic() - t0)
"""
    cons = spawn_python(FAKE + cons_code, pool_name, env=gpu_env, stdin=True)
    try:
        assert read_message(cons, timeout=10)["first"]
        kill_and_reap(prod, signal.SIGKILL)
        cons.stdin.write(b"go\n")
        cons.stdin.flush()
        msg = read_message(cons, timeout=15)
    finally:
        rc, _, err = reap(cons, timeout=10)
    assert rc == 0, err
    assert msg["gone"]
    # The last user of a dead pool removes it, its descriptor socket too.
    assert wait_until(lambda: not os.path.exists(pool_path(pool_name) + "@fd"), timeout=5)
    assert not os.path.exists(pool_path(pool_name))


def test_consumer_on_a_machine_without_the_pools_gpu(pool_name: str, gpu_env):
    prod = spawn(PRODUCER, pool_name, 1, "(8,)", 1, env=gpu_env)
    try:
        read_message(prod, timeout=10)
        info = bips.pool_info(pool_name)  # inspecting needs no driver
        assert info.device == "cuda" and info.device_uuid.startswith("GPU-")
        assert info.device_ordinal == 0
        other = dict(gpu_env, FAKE_CUDA_UUID_SEED="12345")
        code = r"""
try:
    bips.Consumer(sys.argv[1], timeout=5)
    emit(error=None)
except bips.DeviceUnavailable as e:
    emit(error=str(e))
"""
        c = spawn(code, pool_name, env=other)
        msg = read_message(c, timeout=10)
        reap(c, timeout=5)
        assert msg["error"] and info.device_uuid in msg["error"], msg
        nodriver = dict(os.environ, BIPS_LIBCUDA="/nonexistent/libcuda.so.1")
        c = spawn_python(code, pool_name, env=nodriver)
        msg = read_message(c, timeout=10)
        reap(c, timeout=5)
        assert msg["error"] and "cannot load the CUDA driver" in msg["error"], msg
    finally:
        kill_and_reap(prod)
        bips.remove_stale_pool(pool_name)  # what a killed producer left, its socket too


def test_driver_without_readonly_mappings_still_exports_read_only_views(
    pool_name: str, gpu_env
):
    env = dict(gpu_env, FAKE_CUDA_NO_READONLY="1")
    prod = spawn(PRODUCER, pool_name, 3, "(128,)", 2, env=env)
    try:
        read_message(prod, timeout=10)
        cons = spawn(CONSUMER, pool_name, 3, env=env)
        try:
            read_message(cons, timeout=10)
            frames = read_message(cons, timeout=20)["frames"]
        finally:
            reap(cons, timeout=10)
    finally:
        reap(prod, timeout=15)
    assert [f["seq"] for f in frames] == [0, 1, 2]
    assert all(f["ok"] and f["readonly"] for f in frames)


def test_legacy_dlpack_only_where_the_mapping_is_read_only(pool_name: str, gpu_env):
    code = r"""
name = sys.argv[1]
with bips.Producer(name, capacity=1, shape=(16,), device="cuda:0") as p:
    with bips.Consumer(name, timeout=5) as c:
        b = p.acquire(timeout=5)
        assert b.__dlpack_device__() == (2, 0)
        legacy_buf = b.__dlpack__() is not None          # writable memory: fine
        try:
            b.numpy()
            numpy_refused = False
        except BufferError:
            numpy_refused = True
        try:
            memoryview(b)
            mv_refused = False
        except BufferError:
            mv_refused = True
        p.publish(b, stream=-1)
        f = c.receive(timeout=5)
        try:
            f.__dlpack__()
            legacy = "ok"
        except BufferError as e:
            legacy = str(e)
        try:
            f.__dlpack__(dl_device=(1, 0), max_version=(1, 0))
            cross = "copied"
        except BufferError as e:
            cross = str(e)
        emit(legacy_buf=legacy_buf, numpy_refused=numpy_refused, mv_refused=mv_refused,
             legacy=legacy, cross=cross)
"""
    for readonly in (True, False):
        env = dict(gpu_env) if readonly else dict(gpu_env, FAKE_CUDA_NO_READONLY="1")
        proc = spawn(code, pool_name, env=env)
        msg = read_message(proc, timeout=15)
        rc, _, err = reap(proc, timeout=10)
        assert rc == 0, err
        assert msg["legacy_buf"] and msg["numpy_refused"] and msg["mv_refused"]
        assert "never copies" in msg["cross"]
        if readonly:
            assert msg["legacy"] == "ok"
        else:
            assert "read-only" in msg["legacy"]


def test_close_waits_for_a_frame_still_on_its_stream(pool_name: str, gpu_env):
    """publish(stream=...) then close(): the frame comes before the end of the stream."""
    code = r"""
name = sys.argv[1]
p = bips.Producer(name, capacity=1, shape=(64,), device="cuda:0")
c = bips.Consumer(name, timeout=5)
s = new_stream()
b = p.acquire(timeout=5)
fake.fake_cuda_enqueue_fill(s, ptr(b), 9, 64, 300000)
p.publish(b, stream=s)
p.close()
try:
    f = c.receive(timeout=2)
    got, ok = f.seq, read(f) == bytes([9]) * 64
    f.release()
except bips.ProducerGone:
    got, ok = None, False
try:
    c.receive(timeout=2)
    ended = False
except bips.ProducerGone:
    ended = True
emit(got=got, ok=ok, ended=ended)
c.close()
"""
    proc = spawn(code, pool_name, env=gpu_env)
    msg = read_message(proc, timeout=15)
    rc, _, err = reap(proc, timeout=10)
    assert rc == 0, err
    assert msg["got"] == 0 and msg["ok"] and msg["ended"], msg


def test_no_driver_leaves_nothing_behind(pool_name: str):
    code = r"""
try:
    bips.Producer(sys.argv[1], shape=(4,), device="cuda:0")
    emit(error=None)
except bips.DeviceUnavailable as e:
    emit(error=str(e), available=bips.cuda_available(), reason=bips.cuda_unavailable_reason())
h = bips.Producer(sys.argv[1] + "h", shape=(4,))   # host pools are untouched
b = h.acquire(timeout=1)
h.publish(b)
h.close()
emit(host_ok=True)
"""
    env = dict(os.environ, BIPS_LIBCUDA="/nonexistent/libcuda.so.1")
    proc = spawn_python(code, pool_name, env=env)
    msg = read_message(proc, timeout=10)
    assert read_message(proc, timeout=10)["host_ok"]
    rc, _, err = reap(proc, timeout=10)
    assert rc == 0, err
    assert "cannot load the CUDA driver" in msg["error"]
    assert msg["available"] is False and msg["reason"] == msg["error"]
    assert not os.path.exists(pool_path(pool_name))


def test_driver_that_does_not_initialise(pool_name: str, fake_cuda: str):
    code = r"""
emit(available=bips.cuda_available(), reason=bips.cuda_unavailable_reason())
"""
    env = dict(os.environ, BIPS_LIBCUDA=fake_cuda, FAKE_CUDA_FAIL_INIT="100")
    proc = spawn_python(code, env=env)
    msg = read_message(proc, timeout=10)
    reap(proc, timeout=5)
    assert msg["available"] is False
    assert "cuInit" in msg["reason"] and "CUDA_ERROR_NO_DEVICE" in msg["reason"]


def test_stream_arguments_are_checked(pool_name: str):
    class ProtoStream:
        def __cuda_stream__(self) -> tuple[int, int]:
            return (0, 1)

    class TorchLike:
        cuda_stream = 2

    class CupyLike:
        ptr = 0

    with bips.Producer(pool_name, capacity=2, shape=(4,)) as p:
        assert p.device == "cpu"
        for s in (None, 1, 2, -1, ProtoStream(), TorchLike(), CupyLike()):
            b = p.acquire(timeout=1)
            assert b.device == "cpu"
            p.publish(b, stream=s)  # host pools check the argument and ignore it
        b = p.acquire(timeout=1)
        with pytest.raises(TypeError):
            p.publish(b, stream="default")
        with pytest.raises(bips.InvalidArgument):
            p.publish(b, stream=-5)
        assert not b.published  # a refused publish leaves the buffer acquired
        with pytest.raises(AttributeError):
            b.__cuda_array_interface__  # noqa: B018
        b.discard()
    with pytest.raises(bips.InvalidArgument, match="cuda:N"):
        bips.Producer(pool_name, shape=(4,), device="gpu0")
    with pytest.raises(bips.InvalidArgument):
        bips.Producer(pool_name, shape=(4,), device="cuda:-1")


def test_host_frames_say_cpu(pool_name: str):
    with bips.Producer(pool_name, capacity=2, shape=(3,)) as p, bips.Consumer(pool_name) as c:
        b = p.acquire(timeout=1)
        b.numpy()[:] = [1, 2, 3]
        p.publish(b)
        f = c.receive(timeout=1)
        assert f.device == "cpu" and c.device == "cpu"
        assert f.__dlpack_device__() == (1, 0)
        host = f.to_host()
        assert host.tolist() == [1, 2, 3]
        assert host.ctypes.data != f.numpy().ctypes.data  # to_host() is the explicit copy
        with pytest.raises(AttributeError):
            f.__cuda_array_interface__  # noqa: B018
        f.release(stream=None)
        assert f.released
        assert bips.pool_info(pool_name).device == "cpu"
        assert bips.pool_info(pool_name).device_uuid == ""
