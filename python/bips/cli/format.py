# SPDX-License-Identifier: Apache-2.0
"""What ``bips list``, ``bips info`` and ``bips top`` show of a pool: the JSON schema, and the
human units (bytes, ages, rates, owners) shared by the three."""

from __future__ import annotations

import json
import pwd
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import bips

JSON_SCHEMA = """\
JSON (list --json: a list of these objects; info --json: one). Every field of
bips.PoolInfo: name, error (null, or why the entry is unreadable; then only name and error
are set), producer_alive, closed, producer_pid, consumers, max_consumers, capacity, free,
buffer_size, meta_size, shape (list), dtype (numpy name), policy, mode (int), owner (uid),
created_ns (CLOCK_REALTIME), file_size, published, dropped, fps, last_publish_ns,
acquire_waits, acquire_wait_ns, device ("cpu" or "cuda"), device_uuid (GPU pools: the GPU's
UUID, else ""), device_ordinal (GPU pools: the producer's ordinal); plus owner_name, sampled_ns (CLOCK_MONOTONIC time of the
reading; every other *_ns time but created_ns is on that clock) and slots: a list of every
bips.SlotInfo field (slot, alive, pid, latest, attached_ns, received, dropped, skipped,
queued, held, last_seq, last_receive_ns) plus lag (published - 1 - last_seq; null before the
first frame).
"""

# Every PoolInfo / SlotInfo field, in the order the JSON lists them. The schema of
# ``bips list --json`` and ``bips info --json`` (JSON_SCHEMA above) is these fields plus the
# derived ones added by pool_dict()/slot_dict().
POOL_FIELDS = (
    "name",
    "error",
    "producer_alive",
    "closed",
    "producer_pid",
    "consumers",
    "max_consumers",
    "capacity",
    "free",
    "buffer_size",
    "meta_size",
    "shape",
    "dtype",
    "policy",
    "mode",
    "owner",
    "created_ns",
    "file_size",
    "published",
    "dropped",
    "fps",
    "last_publish_ns",
    "acquire_waits",
    "acquire_wait_ns",
    "device",
    "device_uuid",
    "device_ordinal",
)
SLOT_FIELDS = (
    "slot",
    "alive",
    "pid",
    "latest",
    "attached_ns",
    "received",
    "dropped",
    "skipped",
    "queued",
    "held",
    "last_seq",
    "last_receive_ns",
)


def owner_name(uid: int) -> str:
    """The user name of `uid`, or the number where the user database has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def lag(info: bips.PoolInfo, slot: bips.SlotInfo) -> int | None:
    """Frames published after the last one this consumer received; None before its first."""
    if slot.last_seq < 0:
        return None
    return max(0, info.published - 1 - slot.last_seq)


def slot_dict(info: bips.PoolInfo, slot: bips.SlotInfo) -> dict[str, Any]:
    d: dict[str, Any] = {k: getattr(slot, k) for k in SLOT_FIELDS}
    d["lag"] = lag(info, slot)
    return d


def pool_dict(info: bips.PoolInfo, sampled_ns: int) -> dict[str, Any]:
    """One pool as a JSON-ready dict: every PoolInfo field, ``owner_name``, ``sampled_ns`` (the
    CLOCK_MONOTONIC time of the reading, for the ``*_ns`` ages) and ``slots``."""
    if info.error is not None:
        # An unreadable entry: only its name and error mean anything.
        d: dict[str, Any] = {k: None for k in POOL_FIELDS}
        d.update(name=info.name, error=info.error, owner_name=None, sampled_ns=sampled_ns)
        d["slots"] = []
        return d
    d = {k: getattr(info, k) for k in POOL_FIELDS}
    d["shape"] = list(info.shape)
    d["dtype"] = str(info.dtype)
    d["owner_name"] = owner_name(info.owner)
    d["sampled_ns"] = sampled_ns
    d["slots"] = [slot_dict(info, s) for s in info.slots]
    return d


# ---- human units ----------------------------------------------------------------------------


def size(n: int) -> str:
    """Bytes in binary units: 64 B, 900 KiB, 23.7 MiB."""
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            if unit == "B":
                return f"{int(x)} B"
            return f"{x:.1f} {unit}" if x < 100 else f"{x:.0f} {unit}"
        x /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """A duration for people: 840 us, 12 ms, 3.4 s, 5 min 2 s, 3 h 12 min, 2 d 4 h."""
    s = max(seconds, 0.0)
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m} min {sec} s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def age(then_ns: int, now_ns: int) -> str:
    """How long ago a CLOCK_MONOTONIC time was; "never" for 0."""
    if then_ns <= 0:
        return "never"
    return duration((now_ns - then_ns) / 1e9) + " ago"


def rate(fps: float | None) -> str:
    if fps is None:
        return "-"
    return f"{fps:,.1f}" if fps < 100 else f"{fps:,.0f}"


def mode(m: int) -> str:
    return f"{m:04o}"


def shape(info: bips.PoolInfo) -> str:
    """Frame shape and dtype, and where the frames live when that is not host memory."""
    dims = "x".join(str(d) for d in info.shape) if info.shape else "flat"
    where = "" if info.device == "cpu" else f" on {info.device}"
    return f"{dims} {info.dtype}{where}"


def device(info: bips.PoolInfo) -> str:
    """"host memory", or the GPU by UUID (ordinals differ between processes)."""
    if info.device == "cpu":
        return "host memory (shared)"
    return f"{info.device} {info.device_uuid} (the producer's cuda:{info.device_ordinal})"


def producer_state(info: bips.PoolInfo) -> str:
    if info.producer_alive:
        return "alive"
    return "closed" if info.closed else "dead"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> str:
    """A plain-text table; `align` has an "l" or "r" per column."""
    cells = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def now_ns() -> int:
    return time.monotonic_ns()


def print_json(obj: Any) -> None:
    """`obj` on stdout as indented JSON."""
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
