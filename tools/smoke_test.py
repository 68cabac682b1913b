# SPDX-License-Identifier: Apache-2.0
"""A quick check of an installed bips (a freshly built wheel): a producer in this process and a
consumer in a child process hand over frames through shared memory; the child checks every
frame's sequence number, shape, metadata and pixels, and sees the end of the stream.

    python tools/smoke_test.py [--gst-plugin] [FRAMES]

With ``--gst-plugin`` it also requires the GStreamer plugin in the package and loads it, which
resolves every library it links against (the host's GStreamer; never a copy in the wheel).
Exits 0 and prints a summary on success; anything else is a failure. Needs only bips and numpy,
runs on Python 3.9+, and cleans up its pool whatever happens.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
import uuid

import bips

SHAPE = (48, 64, 3)

CONSUMER = r"""
import sys
import numpy as np
import bips

name, n = sys.argv[1], int(sys.argv[2])
got = 0
with bips.Consumer(name, timeout=10.0) as cons:
    print("attached", flush=True)
    for frame in cons:
        a = frame.numpy()
        assert frame.seq == got, (frame.seq, got)
        assert a.shape == (48, 64, 3) and a.dtype == np.uint8, (a.shape, a.dtype)
        assert not a.flags.writeable
        assert frame.meta == b"frame %d" % got, frame.meta
        assert (a == (got * 7) % 256).all(), f"frame {got}: wrong pixels"
        del a
        frame.release()
        got += 1
assert got == n, f"received {got} of {n} frames"
print("received", got, flush=True)
"""


def check_gst_plugin() -> str:
    path = os.path.join(bips.get_gst_plugin_path(), "libgstbips.so")
    if not os.path.isfile(path):
        raise RuntimeError(f"the GStreamer plugin is not in the package: {path} is missing")
    lib = ctypes.CDLL(path)  # RTLD_NOW: fails if a library or symbol it needs is missing
    if not hasattr(lib, "gst_plugin_bips_get_desc"):  # what GStreamer looks up in plugin "bips"
        raise RuntimeError(f"{path} is not the bips GStreamer plugin")
    return path


def main(argv: list[str]) -> int:
    args = argv[1:]
    gst = "--gst-plugin" in args
    args = [a for a in args if a != "--gst-plugin"]
    n = int(args[0]) if args else 50
    name = f"smoke{os.getpid()}-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, name, str(n)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with bips.Producer(name, capacity=4, shape=SHAPE, dtype="uint8", meta_size=32) as prod:
            # Frames published before the consumer attached would not reach it.
            deadline = time.monotonic() + 20.0
            while prod.stats.consumers == 0:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("the consumer process did not attach")
                time.sleep(0.005)
            for i in range(n):
                buf = prod.acquire(timeout=10.0)
                buf.numpy()[...] = (i * 7) % 256
                prod.publish(buf, meta=b"frame %d" % i)
        out, _ = child.communicate(timeout=30.0)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    if child.returncode != 0 or f"received {n}" not in out:
        print(f"smoke test FAILED: consumer exited {child.returncode}: {out!r}", file=sys.stderr)
        return 1
    where = os.path.dirname(bips.__file__)
    print(f"bips {bips.__version__} ({where}): {n} frames {SHAPE} handed over between processes")
    if gst:
        try:
            print(f"GStreamer plugin loads: {check_gst_plugin()}")
        except (OSError, RuntimeError) as e:
            print(f"smoke test FAILED: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
