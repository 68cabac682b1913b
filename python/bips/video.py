# SPDX-License-Identifier: Apache-2.0
"""Video frames published by ``bipssink`` (and any producer that follows its convention).

Each frame's ``meta`` is a UTF-8 JSON object (NUL-padded)::

    {"caps": "video/x-raw, format=(string)I420, ...", "format": "I420",
     "width": 320, "height": 240,
     "planes": [{"offset": 0, "stride": 320}, {"offset": 76800, "stride": 160}, ...],
     "pts": 33333333, "duration": 33333333}

Packed formats without row padding are published with their image shape, so ``frame.numpy()``
is the image; planar formats (I420, NV12...) and padded rows are published as flat bytes, and
:func:`planes` gives a zero-copy view of each plane::

    with bips.Consumer("cam0", timeout=5.0) as cons:
        for frame in cons:
            y, u, v = bips.video.planes(frame)      # I420: (h, w), (h/2, w/2), (h/2, w/2)
"""

from __future__ import annotations

import json
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from bips._core import Frame, video_formats

__all__ = ["FORMATS", "parse_meta", "planes"]


def _formats() -> dict[str, tuple[tuple[int, int, int, np.dtype[Any]], ...]]:
    """The convention's format table (bips/video.hpp), one rule for C++ and Python."""
    out: dict[str, tuple[tuple[int, int, int, np.dtype[Any]], ...]] = {}
    for name, plane_specs, _image, big_endian in video_formats():
        out[name] = tuple(
            (row_div, col_div, channels, np.dtype(f"{'>' if big_endian else '<'}u{size}"))
            for row_div, col_div, channels, size in plane_specs
        )
    return out


# Per format, one entry per plane: (row divisor, column divisor, channels, dtype). Rows and
# columns of a subsampled plane are rounded up, as GStreamer does.
FORMATS = _formats()
"""Formats :func:`planes` understands (the formats ``bipssink`` accepts, plus GRAY16_BE)."""

MetaSource = Union[Frame, bytes, bytearray, memoryview]


def parse_meta(frame_or_bytes: MetaSource) -> dict[str, Any]:
    """The JSON metadata of a frame (or of raw ``meta`` bytes), read up to the first NUL.

    Returns ``{}`` when there is no metadata; raises ``ValueError`` when the metadata is not a
    JSON object (a producer may put anything there)."""
    raw = frame_or_bytes.meta if isinstance(frame_or_bytes, Frame) else bytes(frame_or_bytes)
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    if not raw.strip():
        return {}
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"frame metadata is not JSON: {e}") from None
    if isinstance(meta, dict):
        return meta
    raise ValueError(f"frame metadata is a JSON {type(meta).__name__}, not an object")


def _list_field(meta: dict[str, Any], key: str) -> list[Any]:
    value = meta.get(key)
    if isinstance(value, list):
        return value
    raise ValueError(f"video metadata needs a list {key!r}, got {value!r}")


def _int_field(meta: object, key: str, plane: int | None = None) -> int:
    value = meta.get(key) if isinstance(meta, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    where = "video metadata" if plane is None else f"plane {plane} of the video metadata"
    raise ValueError(f"{where} needs a non-negative integer {key!r}, got {value!r}")


def planes(
    frame: Frame | bytes | bytearray | memoryview | npt.NDArray[Any],
    meta: dict[str, Any] | None = None,
) -> list[npt.NDArray[Any]]:
    """Zero-copy views of each plane of a video frame, as its metadata lays them out.

    I420/YV12 give Y, U, V (YV12: Y, V, U) of shapes (h, w), (ceil(h/2), ceil(w/2)) x 2; NV12/NV21
    give Y and the interleaved chroma plane (ceil(h/2), ceil(w/2), 2); packed formats give one
    (h, w, channels) view (GRAY: (h, w)) that skips row padding. ``frame`` may also be raw bytes
    or an array holding one frame in that layout (a file written by ``filesink``, say), with
    ``meta`` taken from a frame of the same stream. The views of a :class:`bips.Frame` are
    read-only and keep its buffer alive like ``frame.numpy()``.

    Raises ``ValueError`` for frames without video metadata, unknown formats, or planes that do
    not fit the frame."""
    if meta is None:
        if not isinstance(frame, Frame):
            raise ValueError("give the metadata (meta=...) for a frame that is not a bips.Frame")
        meta = parse_meta(frame)
    if "format" not in meta or "planes" not in meta:
        raise ValueError("the frame has no video metadata (no 'format' and 'planes')")
    fmt = str(meta["format"])
    layout = _list_field(meta, "planes")
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ValueError(f"unsupported video format {fmt!r}; known: {', '.join(FORMATS)}")
    width = _int_field(meta, "width")
    height = _int_field(meta, "height")
    if len(layout) != len(spec):
        raise ValueError(f"{fmt} has {len(spec)} planes; the metadata lists {len(layout)}")

    if isinstance(frame, Frame):
        flat = frame.numpy().reshape(-1).view(np.uint8)  # frames are C-contiguous: a view
    elif isinstance(frame, np.ndarray):
        flat = np.ascontiguousarray(frame).reshape(-1).view(np.uint8)
    else:
        flat = np.frombuffer(frame, dtype=np.uint8)
    views: list[npt.NDArray[Any]] = []
    for i, ((row_div, col_div, channels, dtype), entry) in enumerate(zip(spec, layout)):
        offset = _int_field(entry, "offset", i)
        stride = _int_field(entry, "stride", i)
        rows = -(-height // row_div)
        cols = -(-width // col_div)
        pixel = channels * dtype.itemsize
        row_bytes = cols * pixel
        if stride < row_bytes or offset + stride * (rows - 1) + row_bytes > flat.size:
            raise ValueError(
                f"plane {i} (offset {offset}, stride {stride}) of a {width}x{height} {fmt} "
                f"frame does not fit its {flat.size} bytes"
            )
        shape: tuple[int, ...] = (rows, cols) if channels == 1 else (rows, cols, channels)
        strides: tuple[int, ...] = (
            (stride, pixel) if channels == 1 else (stride, pixel, dtype.itemsize)
        )
        views.append(np.ndarray(shape, dtype=dtype, buffer=flat, offset=offset, strides=strides))
    return views
