# SPDX-License-Identifier: Apache-2.0
"""A synthetic camera: publishes a moving test pattern into a bips pool, so that the PyTorch
example runs with no camera and no GStreamer.

    python producer.py --pool cam0                         # 640x360 RGB at 30 fps, until Ctrl-C
    python producer.py --pool cam1 --size 720x1280 --fps 60 --frames 300
    python producer.py --pool cam2 --device cuda           # a GPU pool, frames drawn on the GPU

Frames are (height, width, 3) uint8 RGB with metadata in the bips video convention (a JSON
object with the caps, format, width, height, planes, pts and duration), like the frames of the
C++ capture example and of the bipssink GStreamer element.

With ``--device cuda`` the pool is a GPU pool (``bips.Producer(..., device="cuda:0")``) and each
frame is drawn into it by torch kernels on a CUDA stream of the producer's; ``publish(buf,
stream=...)`` hands the frame over once that stream has finished drawing it, without waiting on
the CPU. Consumers get the frames as CUDA tensors (``torch.from_dlpack(frame)``), with no copy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import bips
import numpy as np

META_SIZE = 4096  # the video convention's metadata size


def parse_size(text: str) -> tuple[int, int]:
    """``"360x640"`` -> ``(360, 640)`` (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, not {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return h, w


def background(height: int, width: int, camera: int) -> np.ndarray[Any, Any]:
    """A colour gradient, tinted per camera so that streams are told apart at a glance."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = x
    img[..., 1] = y
    img[..., 2] = (camera * 67) % 256
    return img


def square(height: int, width: int, index: int) -> tuple[int, int, int]:
    """Where frame ``index``'s white square is: (x, y, side), moving left to right."""
    side = max(1, min(height, width) // 4)
    return (index * 4) % max(1, width - side), (height - side) // 2, side


def draw(out: np.ndarray[Any, Any], base: np.ndarray[Any, Any], index: int) -> None:
    """Frame ``index``: the background with a white square moving left to right."""
    np.copyto(out, base)
    h, w = base.shape[:2]
    x, y, side = square(h, w, index)
    out[y : y + side, x : x + side] = 255


class GpuPainter:
    """Draws frames into the buffers of a GPU pool with torch, on a CUDA stream of its own."""

    def __init__(self, base: np.ndarray[Any, Any]) -> None:
        try:
            import torch
        except ImportError:
            raise RuntimeError("--device cuda needs torch (pip install torch)") from None
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda, but torch sees no CUDA device")
        self.torch = torch
        self.base = torch.from_numpy(base).to("cuda:0")  # uploaded once
        self.stream = torch.cuda.Stream()

    def draw_and_publish(
        self, prod: bips.Producer, buf: bips.Buffer, index: int, meta: bytes
    ) -> None:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            out = torch.from_dlpack(buf)  # a cuda:0 tensor that is the pool buffer
            out.copy_(self.base)
            x, y, side = square(out.shape[0], out.shape[1], index)
            out[y : y + side, x : x + side] = 255
            del out
            # Published once the kernels queued on this stream so far have run; the CPU goes on.
            prod.publish(buf, meta=meta, stream=torch.cuda.current_stream())

    def finish(self) -> None:
        self.stream.synchronize()  # every frame queued is published before the pool closes


def frame_meta(height: int, width: int, fps: float, index: int) -> bytes:
    duration = int(1e9 / fps) if fps > 0 else None
    caps = f"video/x-raw, format=(string)RGB, width=(int){width}, height=(int){height}"
    if fps > 0:
        caps += f", framerate=(fraction){round(fps * 1000)}/1000"
    meta = {
        "caps": caps,
        "format": "RGB",
        "width": width,
        "height": height,
        "planes": [{"offset": 0, "stride": width * 3}],
        "pts": index * duration if duration else None,
        "duration": duration,
    }
    return json.dumps(meta).encode()


def produce(
    pool: str,
    size: tuple[int, int] = (360, 640),
    fps: float = 30.0,
    frames: int = 0,
    camera: int = 0,
    policy: str = "drop_oldest",
    capacity: int = 8,
    wait_consumers: int = 0,
    wait: float = 30.0,
    exit_with_parent: bool = False,
    device: str = "cpu",
) -> int:
    """Publishes ``frames`` frames (0: until interrupted) at ``fps`` (0: as fast as the pool
    allows) into pool ``pool``; returns the number published. With ``wait_consumers``, publishes
    nothing until that many consumers are attached (bips delivers only frames published after a
    consumer attached). ``device`` "cuda": a GPU pool, frames drawn on the GPU."""
    h, w = size
    parent = os.getppid()
    base = background(h, w, camera)
    painter = GpuPainter(base) if device == "cuda" else None
    options: dict[str, Any] = {"device": "cuda:0"} if painter else {}
    with bips.Producer(
        pool,
        capacity=capacity,
        shape=(h, w, 3),
        dtype="uint8",
        policy=policy,
        meta_size=META_SIZE,
        **options,
    ) as prod:
        where = ", on cuda:0" if painter else ""
        print(f"camera {pool!r}: {w}x{h} RGB at {fps:g} fps, policy {policy}{where}", flush=True)
        deadline = time.monotonic() + wait
        while prod.stats.consumers < wait_consumers:
            if time.monotonic() > deadline:
                raise bips.Timeout(f"fewer than {wait_consumers} consumers within {wait} s")
            time.sleep(0.005)

        published = 0
        next_t = time.monotonic()
        while frames == 0 or published < frames:
            if exit_with_parent and os.getppid() != parent:
                break  # the --demo consumer that started us is gone
            buf = prod.acquire(timeout=None if policy == "block" else 5.0)
            # The default timestamp (publish time, CLOCK_MONOTONIC) stands in for capture time.
            meta = frame_meta(h, w, fps, published)
            if painter:
                painter.draw_and_publish(prod, buf, published, meta)
            else:
                draw(buf.numpy(), base, published)
                prod.publish(buf, meta=meta)
            published += 1
            if fps > 0:
                next_t += 1.0 / fps
                pause = next_t - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    next_t = time.monotonic()  # running late: do not try to catch up in a burst
        if painter:
            painter.finish()
    return published


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # leave the `with` of the producer: consumers see end of stream


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", default="cam0", help="pool name (default cam0)")
    p.add_argument("--size", type=parse_size, default=(360, 640), help="HEIGHTxWIDTH (360x640)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate; 0 = as fast as possible")
    p.add_argument("--frames", type=int, default=0, help="frames to publish; 0 = until Ctrl-C")
    p.add_argument("--camera", type=int, default=0, help="camera number (tints the pattern)")
    p.add_argument(
        "--policy",
        choices=("block", "drop_oldest"),
        default="drop_oldest",
        help="drop_oldest (default): never wait for a slow consumer, like a camera",
    )
    p.add_argument("--capacity", type=int, default=8)
    p.add_argument(
        "--wait-consumers",
        type=int,
        default=0,
        metavar="N",
        help="publish nothing until N consumers are attached",
    )
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for consumers")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (default): a host pool; cuda: a GPU pool, frames drawn on the GPU (torch)",
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one exits",
    )
    args = p.parse_args(argv)

    signal.signal(signal.SIGTERM, _stop)
    try:
        n = produce(
            args.pool,
            args.size,
            args.fps,
            args.frames,
            args.camera,
            args.policy,
            args.capacity,
            args.wait_consumers,
            args.wait,
            args.exit_with_parent,
            args.device,
        )
    except KeyboardInterrupt:
        return 0
    except (bips.Error, RuntimeError) as e:
        print(f"producer {args.pool}: {e}", file=sys.stderr)
        return 1
    print(f"camera {args.pool!r}: published {n} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
