# SPDX-License-Identifier: Apache-2.0
"""What a case is measured at: frame sizes, pool capacity, busy-poll budget, window lengths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bips.benchkit.runner import Timing

CAPACITY = 8
SPIN_S = 0.001  # busy-poll budget of the spin latency variant


@dataclass(frozen=True)
class Size:
    label: str
    shape: tuple[int, ...]  # () for a flat buffer of `nbytes`
    nbytes: int

    def bips_kwargs(self) -> dict[str, Any]:
        if self.shape:
            return {"shape": self.shape, "dtype": "uint8"}
        return {"buffer_size": self.nbytes}

    def array_shape(self) -> tuple[int, ...]:
        return self.shape if self.shape else (self.nbytes,)


SIZES = {
    "64B": Size("64B", (), 64),
    "640x360x3": Size("640x360x3", (360, 640, 3), 360 * 640 * 3),
    "3840x2160x3": Size("3840x2160x3", (2160, 3840, 3), 2160 * 3840 * 3),
}
BIG = "3840x2160x3"


@dataclass(frozen=True)
class Settings:
    warmup: float
    duration: float  # hand-off window per case
    latency_duration: float  # latency window per case
    interval_s: float  # latency producer's pause between frames

    def handoff(self) -> Timing:
        return Timing(self.warmup, self.duration)

    def latency(self) -> Timing:
        return Timing(self.warmup, self.latency_duration)


FULL = Settings(warmup=0.3, duration=1.5, latency_duration=2.0, interval_s=300e-6)
QUICK = Settings(warmup=0.1, duration=0.3, latency_duration=0.6, interval_s=300e-6)


def config(st: Settings, mode: str, start_method: str) -> dict[str, Any]:
    """The settings of a run, for its report and JSON."""
    return {
        "mode": mode,
        "warmup_s": st.warmup,
        "handoff_window_s": st.duration,
        "latency_window_s": st.latency_duration,
        "latency_interval_us": st.interval_s * 1e6,
        "capacity": CAPACITY,
        "policy": "block",
        "spin_s": SPIN_S,
        "start_method": start_method,
    }
