# SPDX-License-Identifier: Apache-2.0
"""What ``bips snapshot`` saves: the next frame of a pool, as an image array for Pillow.

What the frame is comes from its shape and dtype and, for video pools, from the metadata JSON
that bipssink and the capture examples write (``format``, ``planes``; read with bips.video):

* (h, w, 3) uint8: RGB, or BGR when the metadata says so;
* (h, w, 4) uint8: RGBA; BGRA/ARGB/ABGR are reordered, and the x of RGBx/BGRx/xRGB/xBGR
  (padding, not alpha) is dropped;
* (h, w) or (h, w, 1) uint8: greyscale; (h, w) uint16: 16-bit greyscale ("I;16");
* I420, NV12 and the other YUV formats of bips.video (flat frames with planes in the
  metadata): converted to RGB with the BT.601 limited-range matrix (the default colorimetry of
  SD video), chroma repeated up to full size.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import bips

# The planes of each YUV format bips.video knows, as (Y, U, V) out of its plane views: planar
# formats give one view per plane, semi-planar ones interleave U and V, packed 4:2:2 ones
# interleave everything (pairs of pixels share one U and one V).
_YUV: dict[str, Callable[[list[Any]], tuple[Any, Any, Any]]] = {
    "I420": lambda p: (p[0], p[1], p[2]),
    "Y42B": lambda p: (p[0], p[1], p[2]),
    "Y444": lambda p: (p[0], p[1], p[2]),
    "YV12": lambda p: (p[0], p[2], p[1]),
    "NV12": lambda p: (p[0], p[1][..., 0], p[1][..., 1]),
    "NV21": lambda p: (p[0], p[1][..., 1], p[1][..., 0]),
    "YUY2": lambda p: (p[0][..., 0], p[0][:, 0::2, 1], p[0][:, 1::2, 1]),
    "UYVY": lambda p: (p[0][..., 1], p[0][:, 0::2, 0], p[0][:, 1::2, 0]),
}


class SnapshotError(Exception):
    """The frame cannot be saved; the message says why."""


def _upsample(c: Any, h: int, w: int) -> Any:
    """A chroma plane repeated up to h x w (nearest neighbour)."""
    fy, fx = -(-h // c.shape[0]), -(-w // c.shape[1])
    return np.repeat(np.repeat(c, fy, axis=0), fx, axis=1)[:h, :w]


def yuv_to_rgb(y: Any, u: Any, v: Any) -> Any:
    """(h, w, 3) uint8 RGB from a full-size Y plane and (possibly subsampled) U and V planes,
    with the BT.601 limited-range matrix (Y in 16..235, chroma in 16..240)."""
    h, w = y.shape
    cb = _upsample(u, h, w).astype(np.float32) - 128.0
    cr = _upsample(v, h, w).astype(np.float32) - 128.0
    luma = (y.astype(np.float32) - 16.0) * 1.164383
    rgb = np.empty((h, w, 3), dtype=np.float32)
    rgb[..., 0] = luma + 1.596027 * cr
    rgb[..., 1] = luma - 0.391762 * cb - 0.812968 * cr
    rgb[..., 2] = luma + 2.017232 * cb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _reorder(arr: Any, fmt: str) -> Any:
    """RGB or RGBA out of a packed 3- or 4-channel order named like GStreamer's formats (RGB
    or RGBA when the format says nothing usable)."""
    order = fmt.upper()
    if len(order) != arr.shape[2] or set(order) - set("RGBAX") or not set("RGB") <= set(order):
        order = "RGB" if arr.shape[2] == 3 else "RGBA"
    want = "RGBA" if "A" in order else "RGB"
    idx = [order.index(c) for c in want]
    if idx == list(range(arr.shape[2])):
        return arr
    return arr[..., idx]


def to_image_array(frame: bips.Frame) -> Any:
    """The frame as an array Pillow saves as it is: (h, w) uint8 or uint16, (h, w, 3) or
    (h, w, 4) uint8. Raises SnapshotError for a frame it cannot render."""
    from bips import video

    try:
        meta = video.parse_meta(frame)
    except ValueError:
        meta = {}  # metadata of another kind: judge the frame by its shape alone
    fmt = str(meta.get("format") or "")
    # A GPU frame is copied to the host once (the one copy a PNG needs); host frames are views.
    host = frame if frame.device == "cpu" else frame.to_host()
    if fmt in video.FORMATS and "planes" in meta:
        try:
            planes = video.planes(host, meta)
        except ValueError as e:
            raise SnapshotError(f"bad video metadata: {e}") from None
        if fmt in _YUV:
            return yuv_to_rgb(*_YUV[fmt](planes))
        arr = planes[0]
    else:
        arr = host.numpy() if isinstance(host, bips.Frame) else host
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] in (3, 4):
        return _reorder(arr, fmt)
    if arr.ndim == 2 and arr.dtype == np.uint8:
        return arr
    if arr.ndim == 2 and arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        return arr.astype("<u2", copy=False)  # PNG "I;16" wants little-endian samples
    what = f"format {fmt}, " if fmt else ""
    raise SnapshotError(
        f"cannot render a frame of {what}shape {tuple(frame.shape)} dtype {frame.dtype} as an "
        "image: snapshot takes uint8 (h, w), (h, w, 3) or (h, w, 4), uint16 (h, w), and the "
        f"YUV formats {', '.join(_YUV)} described by their metadata"
    )


def snapshot(name: str, path: str, timeout: float, owner: int | str | None = None) -> None:
    """Receives the next frame of pool `name` and saves it to `path` (format from the
    extension). Raises SnapshotError, bips.Timeout, bips.ProducerGone, bips.Error."""
    try:
        from PIL import Image
    except ImportError:
        raise SnapshotError(
            "saving images needs Pillow: pip install 'bips[image]' (or pip install Pillow)"
        ) from None
    try:
        cons = bips.Consumer(name, timeout=timeout, owner=owner)
    except bips.Timeout:
        raise SnapshotError(f"no pool named '{name}' appeared within {timeout:g} s") from None
    with cons:
        try:
            frame = cons.receive(timeout)
        except bips.ProducerGone:
            raise SnapshotError(f"the producer of '{name}' ended the stream") from None
        with frame:
            # A copy: the frame goes back to the producer before the (slow) encoding.
            pixels = np.array(to_image_array(frame), order="C")
    try:
        Image.fromarray(pixels).save(path)
    except (ValueError, KeyError) as e:
        raise SnapshotError(f"cannot save {path}: {e}") from None
    except OSError as e:
        raise SnapshotError(f"cannot write {path}: {e.strerror or e}") from None
