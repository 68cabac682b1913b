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
"""

from __future__ import annotations

from bips._core import (
    MAX_CAPACITY,
    MAX_CONSUMERS,
    MAX_DIMS,
    Buffer,
    Consumer,
    ConsumerStats,
    CorruptPool,
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
    list_pools,
    pool_info,
    reclaim_dead_consumers,
    remove_stale_pool,
    validate_name,
)

__all__ = [
    "MAX_CAPACITY",
    "MAX_CONSUMERS",
    "MAX_DIMS",
    "Buffer",
    "Consumer",
    "ConsumerStats",
    "CorruptPool",
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
