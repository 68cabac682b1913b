# SPDX-License-Identifier: Apache-2.0
"""bips: Buffer InterProcess Sharing.

Zero-copy frame pools in POSIX shared memory. A producer publishes buffers; every consumer
receives every frame as a read-only numpy array, memoryview or DLPack tensor that *is* the
shared memory::

    with bips.Producer("cam0", capacity=8, shape=(360, 640, 3), dtype="uint8") as prod:
        buf = prod.acquire(timeout=1.0)
        buf.numpy()[:] = pixels
        prod.publish(buf)

    with bips.Consumer("cam0", timeout=5.0) as cons:
        for frame in cons:
            use(frame.numpy())

With ``device="cuda:0"`` the buffers live on the GPU instead, and frames are CUDA tensors
(``torch.from_dlpack(frame)``) in every consumer, with no copy (see docs/gpu.md).
"""

from __future__ import annotations

import asyncio

from bips import _core
from bips._core import (
    LAYOUT_VERSION,
    MAX_CAPACITY,
    MAX_CONSUMERS,
    MAX_DIMS,
    Buffer,
    ConsumerStats,
    CorruptPool,
    DeviceError,
    DeviceUnavailable,
    Error,
    Frame,
    IncompatiblePool,
    InvalidArgument,
    PoolBusy,
    PoolInfo,
    PoolNotFound,
    Producer,
    ProducerGone,
    ProducerStats,
    SlotInfo,
    Timeout,
    TooManyConsumers,
    __version__,
    cuda_available,
    cuda_unavailable_reason,
    list_pools,
    pool_info,
    reclaim_dead_consumers,
    remove_stale_pool,
    validate_name,
)

__all__ = [
    "LAYOUT_VERSION",
    "MAX_CAPACITY",
    "MAX_CONSUMERS",
    "MAX_DIMS",
    "Buffer",
    "Consumer",
    "ConsumerStats",
    "CorruptPool",
    "DeviceError",
    "DeviceUnavailable",
    "Error",
    "Frame",
    "IncompatiblePool",
    "InvalidArgument",
    "PoolBusy",
    "PoolInfo",
    "PoolNotFound",
    "Producer",
    "ProducerGone",
    "ProducerStats",
    "SlotInfo",
    "Timeout",
    "TooManyConsumers",
    "__version__",
    "cuda_available",
    "cuda_unavailable_reason",
    "get_cmake_dir",
    "get_gst_plugin_path",
    "get_include",
    "get_pkgconfig_dir",
    "list_pools",
    "pool_info",
    "reclaim_dead_consumers",
    "remove_stale_pool",
    "validate_name",
]


class Consumer(_core.Consumer):
    """Attaches to a pool and receives every frame in order; also an async iterator.

    ``await consumer.receive_async(timeout)`` and ``async for frame in consumer`` wait without
    blocking the event loop: a frame already queued is taken at once; otherwise a helper thread
    (C++, no GIL) waits until one is queued and wakes the loop through an eventfd, and the loop
    takes it. Cancelling the wait takes nothing: the frame stays queued for the next receive.
    One task at a time may wait on a consumer.
    """

    __slots__ = ("_waiter", "_waiting")
    _waiter: _core._AsyncWaiter
    _waiting: bool

    async def receive_async(self, timeout: float | None = None) -> Frame:
        """The next frame, waiting up to ``timeout`` seconds (None: forever) without blocking
        the event loop. Raises Timeout, or ProducerGone at end of stream; cancel-safe."""
        frame = self.try_receive()
        if frame is not None:
            return frame
        if getattr(self, "_waiting", False):
            raise RuntimeError(f"another task is already waiting on consumer '{self.name}'")
        try:
            waiter = self._waiter
        except AttributeError:
            waiter = self._waiter = _core._AsyncWaiter(self)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + float(timeout)
        fd = waiter.fileno()
        self._waiting = True
        try:
            while True:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(fd, _wake, waiter, ready)
                timer = None if deadline is None else loop.call_at(deadline, _wake, None, ready)
                waiter.arm()
                try:
                    await ready
                finally:
                    waiter.disarm()
                    loop.remove_reader(fd)
                    if timer is not None:
                        timer.cancel()
                frame = self.try_receive()
                if frame is not None:
                    return frame
                if deadline is not None and loop.time() >= deadline:
                    raise Timeout(f"no frame from pool '{self.name}' within the timeout")
        finally:
            self._waiting = False

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.receive_async()
        except ProducerGone:
            raise StopAsyncIteration from None


def _wake(waiter: _core._AsyncWaiter | None, ready: asyncio.Future[None]) -> None:
    if waiter is not None:
        waiter.clear()
    if not ready.done():
        ready.set_result(None)


def _package_dir() -> str:
    # Where the compiled part was installed: headers, library and CMake files sit beside it
    # (also in editable installs, where this file lives in the source tree).
    import os

    from bips import _core

    return os.path.dirname(os.path.abspath(_core.__file__))


def get_include() -> str:
    """The directory holding ``bips/bips.hpp``, for C++ builds against this installation."""
    import os

    return os.path.join(_package_dir(), "include")


def get_cmake_dir() -> str:
    """The directory holding ``bipsConfig.cmake`` (pass as ``-Dbips_DIR=...``)."""
    import os

    return os.path.join(_package_dir(), "lib", "cmake", "bips")


def get_pkgconfig_dir() -> str:
    """The directory holding ``bips.pc`` (add to ``PKG_CONFIG_PATH``)."""
    import os

    return os.path.join(_package_dir(), "lib", "pkgconfig")


def get_gst_plugin_path() -> str:
    """The directory holding the ``bipssink``/``bipssrc`` GStreamer plugin (``libgstbips.so``).

    Add it to ``GST_PLUGIN_PATH``. The plugin is built only where GStreamer's development files
    were present when bips was built; the directory is returned either way.
    """
    import os

    return os.path.join(_package_dir(), "lib", "gstreamer-1.0")
