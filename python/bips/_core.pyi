# Kept by hand: tests/test_stubs.py checks it against the compiled module (mypy.stubtest).
"""
bips compiled core: shared-memory frame pools (use the `bips` package).
"""
from __future__ import annotations
import numpy as _numpy
import typing
import typing_extensions
__all__: list[str] = ['Buffer', 'Consumer', 'ConsumerStats', 'CorruptPool', 'DeviceError', 'DeviceUnavailable', 'Error', 'Frame', 'IncompatiblePool', 'InvalidArgument', 'LAYOUT_VERSION', 'MAX_CAPACITY', 'MAX_CONSUMERS', 'MAX_DIMS', 'PoolBusy', 'PoolInfo', 'PoolNotFound', 'Producer', 'ProducerGone', 'ProducerStats', 'SlotInfo', 'Timeout', 'TooManyConsumers', 'cuda_available', 'cuda_unavailable_reason', 'list_pools', 'pool_info', 'reclaim_dead_consumers', 'remove_stale_pool', 'validate_name', 'video_formats']
class Error(Exception):
    """
    Base class of every bips error.
    """
class Timeout(Error, TimeoutError):
    """
    A blocking call ran out of time.
    """
class PoolNotFound(Error, FileNotFoundError):
    """
    No pool of that name exists.
    """
class IncompatiblePool(Error):
    """
    The pool was made by another layout version of bips.
    """
class CorruptPool(Error):
    """
    The segment under that name is not a valid bips pool.
    """
class ProducerGone(Error):
    """
    The producer closed or died and nothing is left to receive.
    """
class PoolBusy(Error):
    """
    A live producer already owns the pool.
    """
class TooManyConsumers(Error):
    """
    Every consumer slot of the pool is taken.
    """
class DeviceUnavailable(Error):
    """
    GPU pools cannot be used here: no CUDA driver or device, or not the pool's GPU.
    """
class DeviceError(Error):
    """
    A CUDA driver call failed.
    """
class InvalidArgument(Error, ValueError):
    """
    A bad argument or a closed handle.
    """
class ProducerStats:
    """
    Producer counters (a snapshot).
    """
    def __repr__(self) -> str:
        ...
    def _asdict(self) -> dict[str, int]:
        ...
    @property
    def acquire_wait_ns(self) -> int:
        ...
    @property
    def spins(self) -> int:
        ...
    @property
    def sleeps(self) -> int:
        ...
    @property
    def acquire_waits(self) -> int:
        ...
    @property
    def capacity(self) -> int:
        ...
    @property
    def consumers(self) -> int:
        ...
    @property
    def dropped(self) -> int:
        ...
    @property
    def free(self) -> int:
        ...
    @property
    def in_flight(self) -> int:
        ...
    @property
    def published(self) -> int:
        ...
class ConsumerStats:
    """
    Consumer counters (a snapshot).
    """
    def __repr__(self) -> str:
        ...
    def _asdict(self) -> dict[str, int]:
        ...
    @property
    def dropped(self) -> int:
        ...
    @property
    def held(self) -> int:
        ...
    @property
    def queued(self) -> int:
        ...
    @property
    def received(self) -> int:
        ...
    @property
    def reconnects(self) -> int:
        ...
    @property
    def spins(self) -> int:
        ...
    @property
    def sleeps(self) -> int:
        ...
    @property
    def skipped(self) -> int:
        ...
    @property
    def slot(self) -> int:
        ...
class SlotInfo:
    """
    One consumer slot of a pool.
    """
    def __repr__(self) -> str:
        ...
    @property
    def alive(self) -> bool:
        ...
    @property
    def attached_ns(self) -> int:
        """
        CLOCK_MONOTONIC ns when the consumer attached.
        """
    @property
    def dropped(self) -> int:
        ...
    @property
    def held(self) -> int:
        ...
    @property
    def last_receive_ns(self) -> int:
        """
        CLOCK_MONOTONIC ns of the last receive; 0 if never.
        """
    @property
    def last_seq(self) -> int:
        """
        seq of the last frame received; -1 if none yet.
        """
    @property
    def latest(self) -> bool:
        ...
    @property
    def pid(self) -> int:
        ...
    @property
    def queued(self) -> int:
        ...
    @property
    def received(self) -> int:
        ...
    @property
    def skipped(self) -> int:
        ...
    @property
    def slot(self) -> int:
        ...
class PoolInfo:
    """
    A pool seen from outside (no attachment).
    """
    def __repr__(self) -> str:
        ...
    @property
    def acquire_wait_ns(self) -> int:
        """
        Total ns spent in those waits.
        """
    @property
    def acquire_waits(self) -> int:
        """
        Producer acquire calls that found no free buffer and waited.
        """
    @property
    def buffer_size(self) -> int:
        ...
    @property
    def capacity(self) -> int:
        ...
    @property
    def closed(self) -> bool:
        ...
    @property
    def consumers(self) -> int:
        ...
    @property
    def created_ns(self) -> int:
        ...
    @property
    def dropped(self) -> int:
        ...
    @property
    def dtype(self) -> typing.Any:
        ...
    @property
    def error(self) -> typing.Any:
        ...
    @property
    def file_size(self) -> int:
        ...
    @property
    def device(self) -> str:
        """
        "cpu" or "cuda".
        """
    @property
    def device_uuid(self) -> str:
        """
        GPU pools: the GPU's UUID ("GPU-..."), the same in every process.
        """
    @property
    def device_ordinal(self) -> int:
        """
        GPU pools: the producer's ordinal of the GPU.
        """
    @property
    def fps(self) -> float:
        """
        Frames/s over the last full second; 0.0 when idle for over 2 s.
        """
    @property
    def free(self) -> int:
        ...
    @property
    def last_publish_ns(self) -> int:
        """
        CLOCK_MONOTONIC ns of the last publish; 0 if never.
        """
    @property
    def max_consumers(self) -> int:
        ...
    @property
    def meta_size(self) -> int:
        ...
    @property
    def mode(self) -> int:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def owner(self) -> int:
        ...
    @property
    def policy(self) -> str:
        ...
    @property
    def producer_alive(self) -> bool:
        ...
    @property
    def producer_pid(self) -> int:
        ...
    @property
    def published(self) -> int:
        ...
    @property
    def shape(self) -> tuple[int, ...]:
        ...
    @property
    def slots(self) -> list[SlotInfo]:
        ...
@typing.final
class Frame:
    """
    A received, read-only frame that *is* shared memory.
    
    numpy(), np.asarray(frame), memoryview(frame) and the DLPack protocol all point into the pool.
    The buffer goes back to the producer when the frame is released *and* every view made from it
    is gone (release() never invalidates a live view).
    """
    def __array__(self, dtype: typing.Any = None, copy: typing.Any = None) -> typing.Any:
        ...
    def __dlpack__(self, *, stream: typing.Any = None, max_version: typing.Any = None, dl_device: typing.Any = None, copy: typing.Any = None) -> typing_extensions.CapsuleType:
        ...
    def __dlpack_device__(self) -> tuple[int, int]:
        ...
    def __enter__(self) -> typing_extensions.Self:
        ...
    def __exit__(self, *args: object) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def numpy(self) -> typing.Any:
        """
        A read-only numpy array of the frame (cached, zero copy).
        """
    def release(self, stream: typing.Any = None) -> None:
        """
        Gives the frame back; deferred until every view made from it is gone. Idempotent.
        GPU frames go back once the work queued on `stream` (by default the stream given to __dlpack__,
        else the legacy default stream) has finished; stream=-1: at once.
        """
    def to_host(self) -> typing.Any:
        """
        A numpy array with a copy of the frame (for GPU frames: a device-to-host copy).
        """
    @property
    def device(self) -> str:
        """
        Where the frame lives: "cpu" or "cuda:N".
        """
    @property
    def __cuda_array_interface__(self) -> dict[str, typing.Any]:
        """
        The CUDA Array Interface (v3, read-only) of a GPU frame; AttributeError for a host frame.
        A borrowed address, valid until release() (unlike DLPack views, which hold the buffer).
        """
    @property
    def dtype(self) -> _numpy.dtype[typing.Any]:
        ...
    @property
    def index(self) -> int:
        ...
    @property
    def meta(self) -> bytes:
        ...
    @property
    def intact(self) -> bool:
        """
        True while the producer has not reused this frame's buffer: read or copy the data, then check (see docs/security.md).
        """
    @property
    def nbytes(self) -> int:
        ...
    @property
    def released(self) -> bool:
        ...
    @property
    def seq(self) -> int:
        ...
    @property
    def timestamp_ns(self) -> int:
        ...
    @property
    def shape(self) -> tuple[int, ...]:
        ...
@typing.final
class Buffer:
    """
    A writable buffer acquired from a Producer.
    
    Fill it through numpy(), memoryview(buf) or DLPack, then Producer.publish(buf). Dropped without
    publishing, it goes back to the pool. Views kept after publish() keep the buffer from being reused
    until they die; do not write through them after publishing.
    """
    def __array__(self, dtype: typing.Any = None, copy: typing.Any = None) -> typing.Any:
        ...
    def __dlpack__(self, *, stream: typing.Any = None, max_version: typing.Any = None, dl_device: typing.Any = None, copy: typing.Any = None) -> typing_extensions.CapsuleType:
        ...
    def __dlpack_device__(self) -> tuple[int, int]:
        ...
    def __enter__(self) -> typing_extensions.Self:
        ...
    def __exit__(self, *args: object) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def discard(self) -> None:
        """
        Gives the buffer back unpublished. Idempotent.
        """
    def numpy(self) -> typing.Any:
        """
        A writable numpy array over the buffer (cached, zero copy).
        """
    def set_format(self, shape: typing.Any, dtype: typing.Any = None) -> None:
        """
        Sets this frame's shape and dtype; raises InvalidArgument if it does not fit.
        """
    @property
    def capacity(self) -> int:
        ...
    @property
    def dtype(self) -> _numpy.dtype[typing.Any]:
        ...
    @property
    def index(self) -> int:
        ...
    @property
    def nbytes(self) -> int:
        """
        Bytes this frame carries; setting it makes a flat uint8 frame of that size.
        """
    @nbytes.setter
    def nbytes(self, arg1: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def published(self) -> bool:
        ...
    @property
    def shape(self) -> tuple[int, ...]:
        ...
    @property
    def device(self) -> str:
        """
        Where the buffer lives: "cpu" or "cuda:N".
        """
    @property
    def __cuda_array_interface__(self) -> dict[str, typing.Any]:
        """
        The CUDA Array Interface (v3) of a GPU pool's buffer (writable); AttributeError in a host pool.
        A borrowed address, valid until publish() or discard().
        """
class Producer:
    """
    Creates a pool and publishes frames into it.
    """
    def __enter__(self) -> typing_extensions.Self:
        ...
    def __exit__(self, *args: object) -> None:
        ...
    def __init__(self, name: str, *, capacity: typing.SupportsInt | typing.SupportsIndex = 8, shape: typing.Any = None, dtype: typing.Any = 'uint8', buffer_size: typing.SupportsInt | typing.SupportsIndex = 0, policy: str = 'block', mode: typing.SupportsInt | typing.SupportsIndex = 384, meta_size: typing.SupportsInt | typing.SupportsIndex = 0, max_consumers: typing.SupportsInt | typing.SupportsIndex = 8, adaptive_spin: bool = True, device: typing.Any = 'cpu') -> None:
        ...
    def __repr__(self) -> str:
        ...
    def acquire(self, timeout: typing.SupportsFloat | None = None) -> Buffer:
        """
        A free buffer; waits up to `timeout` seconds (None: forever). Raises Timeout.
        """
    def close(self) -> None:
        """
        End of stream. Idempotent.
        """
    def publish(self, buffer: Buffer, timestamp_ns: typing.SupportsInt | None = None, meta: typing.Any = None, *, stream: typing.Any = None) -> None:
        """
        Publishes `buffer` to every attached consumer. timestamp_ns defaults to CLOCK_MONOTONIC now; meta is bytes-like.
        GPU pools: the frame becomes visible once the work queued on `stream` (the stream the buffer was
        written on: an int handle, a torch or CuPy stream; None: the legacy default stream) has finished;
        the call does not wait for it.
        """
    def try_acquire(self) -> Buffer | None:
        """
        A free buffer or None, without waiting.
        """
    @property
    def buffer_size(self) -> int:
        ...
    @property
    def capacity(self) -> int:
        ...
    @property
    def closed(self) -> bool:
        ...
    @property
    def device(self) -> str:
        """
        Where the buffers live: "cpu" or "cuda:N".
        """
    @property
    def dtype(self) -> _numpy.dtype[typing.Any]:
        ...
    @property
    def max_consumers(self) -> int:
        ...
    @property
    def meta_size(self) -> int:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def policy(self) -> str:
        ...
    @property
    def shape(self) -> tuple[int, ...]:
        ...
    @property
    def stats(self) -> ProducerStats:
        ...
class Consumer:
    """
    Attaches to a pool and receives every frame in order.
    """
    def __enter__(self) -> typing_extensions.Self:
        ...
    def __exit__(self, *args: object) -> None:
        ...
    def __init__(self, name: str, *, latest: bool = False, timeout: typing.SupportsFloat | typing.SupportsIndex | None = 0.0, reconnect: bool = False, spin: typing.SupportsFloat | typing.SupportsIndex = 0.0, owner: int | str | None = None, adaptive_spin: bool = True) -> None:
        ...
    def __iter__(self) -> typing.Any:
        ...
    def __next__(self) -> Frame:
        ...
    def __repr__(self) -> str:
        ...
    def close(self) -> None:
        """
        Detaches; frames still held stay valid until released. Idempotent.
        """
    def receive(self, timeout: typing.SupportsFloat | None = None) -> Frame:
        """
        The next frame; waits up to `timeout` seconds (None: forever). Raises Timeout, or ProducerGone once the producer is gone and nothing is queued.
        """
    def try_receive(self) -> Frame | None:
        """
        The next frame if one is queued, else None.
        """
    def wait(self, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> bool:
        """
        Waits up to `timeout` seconds (None: forever) until receive() would return at once: a frame is queued or the stream has ended. True if so, False on timeout. Receives nothing.
        """
    @property
    def buffer_size(self) -> int:
        ...
    @property
    def capacity(self) -> int:
        ...
    @property
    def closed(self) -> bool:
        ...
    @property
    def device(self) -> str:
        """
        Where the pool's frames live: "cpu", or "cuda:N" (this process's ordinal of the pool's GPU).
        """
    @property
    def dtype(self) -> _numpy.dtype[typing.Any]:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def policy(self) -> str:
        ...
    @property
    def shape(self) -> tuple[int, ...]:
        ...
    @property
    def stats(self) -> ConsumerStats:
        ...
class _AsyncWaiter:
    """
    asyncio support of Consumer (internal).
    """
    def __init__(self, consumer: Consumer) -> None:
        ...
    def arm(self) -> None:
        ...
    def clear(self) -> None:
        ...
    def close(self) -> None:
        ...
    def disarm(self) -> None:
        ...
    def fileno(self) -> int:
        ...
def cuda_available() -> bool:
    """
    True if GPU pools can be used here (the CUDA driver loads and has a device that shares memory as file descriptors).
    """
def cuda_unavailable_reason() -> str:
    """
    Why cuda_available() is False ("" when it is True).
    """
def list_pools() -> list[PoolInfo]:
    """
    Every bips pool under /dev/shm, read without attaching.
    """
def pool_info(name: str) -> PoolInfo:
    """
    One pool's details with a row per consumer slot.
    """
def reclaim_dead_consumers(name: str) -> int:
    """
    Gives back what dead consumers of pool `name` held; returns the slots reclaimed.
    """
def remove_stale_pool(name: str) -> bool:
    """
    Removes pool `name` if no producer and no consumer is alive; True if removed.
    """
def validate_name(name: str) -> None:
    """
    Raises InvalidArgument for a bad pool name.
    """
def video_formats() -> list[tuple[str, list[tuple[int, int, int, int]], bool, bool]]:
    """
    The video convention's formats: (name, planes, image, big_endian) each, a plane being (row divisor, column divisor, channels, bytes per sample).
    """
LAYOUT_VERSION: int = 4
MAX_CAPACITY: int = 1024
MAX_CONSUMERS: int = 32
MAX_DIMS: int = 8
__version__: str = '0.1.0'
