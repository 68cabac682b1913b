# SPDX-License-Identifier: Apache-2.0
"""Multi-camera PyTorch inference on bips pools, with no copy between shared memory and torch.

    python consumer.py --demo --pools cam0 cam1         # two synthetic cameras (producer.py)
    python consumer.py --pools cam0 cam1 --latest       # cameras from bips-capture or bipssink
    python consumer.py --demo --device cuda             # GPU pools: frames arrive on the GPU

Every step takes one frame from each stream and batches them (like DeepStream's multi-stream
batching):

    frame (shared memory, read-only)
      -> torch.from_dlpack(frame)        a uint8 HWC tensor that *is* the shared memory
      -> one fused op per frame          normalized float NCHW, written into the batch
      -> frames released                 the producer may reuse the buffers
      -> model                           under torch.inference_mode()

On CUDA, frames of a host pool are copied once into a pinned staging tensor, sent with
non_blocking=True, and converted on the GPU (a uint8 upload is 4x smaller than a float one).
Frames of a GPU pool (a producer that made its pool with ``device="cuda:0"``, like
``producer.py --device cuda``) are already device memory: ``torch.from_dlpack(frame)`` is a
cuda:0 tensor that *is* the pool buffer, read by the normalization on the current stream with no
copy at all, and ``frame.release(stream=...)`` gives it back once that stream is done with it.

Frames are read-only: their memory is mapped read-only in consumers, so writing into a tensor
made from a frame crashes the process. Make a copy (``t.clone()``) to modify pixels.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import bips
import numpy as np
import torch
from torch import nn

# ImageNet statistics: what pretrained torchvision backbones expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PRODUCER = Path(__file__).resolve().with_name("producer.py")

FramesHook = Callable[[Sequence[bips.Frame], Sequence[torch.Tensor]], None]
ResultHook = Callable[[str, bips.Frame, torch.Tensor], None]


class TinyNet(nn.Module):
    """A small CNN standing in for a real model: random weights, nothing downloaded.

    The 8x8/stride-8 "patchify" stem shrinks a 640x360 frame to 80x45 in one step, so the model
    costs a few milliseconds per frame on one CPU core at any input size.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
            pad = (kernel - 1) // 2 if stride == 2 else 0
            conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, 32, 8, 8),
            *block(32, 64, 3, 2),
            *block(64, 128, 3, 2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Preprocess:
    """uint8 HWC frames -> one normalized float32 NCHW batch on ``device``.

    ``(pixel / 255 - mean) / std`` is folded into ``pixel * scale + bias``, so one ``addcmul``
    per frame reads the frame once and writes the batch once: no uint8 copy, no intermediate
    float tensor. Frames already on ``device`` (a GPU pool, CUDA model; a host pool, CPU model)
    are read in place; host frames for a CUDA model are copied once into pinned memory and
    uploaded; GPU frames for a CPU model are copied to the CPU. ``copied`` says which frames of
    the last batch were copied.
    """

    def __init__(self, device: torch.device) -> None:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # compares with cuda:N
        self.device = device
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        self.scale = (1.0 / (255.0 * std)).to(device)
        self.bias = (-mean / std).to(device)
        self._staging: dict[tuple[int, ...], torch.Tensor] = {}
        self.copied: list[bool] = []

    def __call__(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        n = len(views)
        h, w = views[0].shape[:2]
        # [..., :3] drops the alpha/padding byte of RGBA/RGBx frames (a view, no copy).
        sources = [v[..., :3] for v in views]
        self.copied = [v.device != self.device for v in views]
        host = [i for i, v in enumerate(views) if v.device.type == "cpu" and self.copied[i]]
        if host:
            staging = self._staging.get((len(host), h, w))
            if staging is None:
                staging = torch.empty((len(host), h, w, 3), dtype=torch.uint8, pin_memory=True)
                self._staging[(len(host), h, w)] = staging
            for k, i in enumerate(host):
                staging[k].copy_(sources[i])  # the one host copy: shared memory -> pinned memory
            # Reusing one staging tensor is safe: every step waits for its results (.cpu())
            # before the next step writes here, so the previous upload has finished.
            uploaded = staging.to(self.device, non_blocking=True)
            for k, i in enumerate(host):
                sources[i] = uploaded[k]
        for i, v in enumerate(sources):
            if v.device != self.device:  # a GPU pool for a model elsewhere (the CPU, another GPU)
                sources[i] = v.to(self.device)
        batch = torch.empty((n, 3, h, w), dtype=torch.float32, device=self.device)
        for i, v in enumerate(sources):
            torch.addcmul(self.bias, v.permute(2, 0, 1), self.scale, out=batch[i])
        return batch


@dataclass
class StreamStats:
    """What one stream did: frames, when results came out, capture-to-result latencies."""

    frames: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    dropped: int = 0  # frames the producer took back before we received them (drop_oldest)
    skipped: int = 0  # older frames given back by latest=True
    ended: bool = False  # the producer closed its pool (end of stream)
    copies: int = 0  # frames copied before the model (host staging for CUDA, GPU -> CPU)

    def add(self, now_ns: int, timestamp_ns: int) -> None:
        if self.frames == 0:
            self.first_ns = now_ns
        self.frames += 1
        self.last_ns = now_ns
        self.latencies_ms.append((now_ns - timestamp_ns) / 1e6)

    def summary(self, since: int = 0) -> dict[str, Any]:
        """Frames per second and latency percentiles, over the frames from number ``since``."""
        lat = np.array(self.latencies_ms[since:]) if self.frames > since else np.zeros(1)
        span_s = (self.last_ns - self.first_ns) / 1e9
        return {
            "frames": self.frames,
            "fps": (self.frames - 1) / span_s if self.frames > 1 and span_s > 0 else 0.0,
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p99": float(np.percentile(lat, 99)),
            "latency_ms_max": float(lat.max()),
            "dropped": self.dropped,
            "skipped": self.skipped,
            "ended": self.ended,
            "copies": self.copies,
        }


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    return torch.device(name)


def frame_device(frame: bips.Frame) -> str:
    """Where a frame lives: "cpu" (a host pool) or "cuda:N" (a GPU pool)."""
    return str(getattr(frame, "device", "cpu"))


def describe_pool(name: str, device: str, model: torch.device) -> str:
    """How frames of a pool on ``device`` reach a model on ``model``."""
    if device != "cpu":
        if model.type == "cpu":
            return f"{name}: device pool on {device}: each frame is copied to the CPU model"
        return f"{name}: device pool: frames arrive as {device} tensors, 0 host copies"
    if model.type == "cpu":
        return f"{name}: host pool: the model reads the shared memory, 0 copies"
    return f"{name}: host pool: each frame is staged through pinned memory to {model} (1 host copy)"


class Stream:
    """One pool being read: its consumer and its statistics."""

    def __init__(self, name: str, consumer: bips.Consumer) -> None:
        self.name = name
        self.consumer = consumer
        self.stats = StreamStats()
        self.device: str | None = None  # where its frames live, once one came

    def close(self) -> None:
        if not self.consumer.closed:
            counters = self.consumer.stats
            self.stats.dropped, self.stats.skipped = counters.dropped, counters.skipped
            self.consumer.close()


def attach(pools: Sequence[str], latest: bool, wait: float) -> list[Stream]:
    """One consumer per pool; waits up to ``wait`` seconds in all for the pools to appear."""
    deadline = time.monotonic() + wait
    streams: list[Stream] = []
    try:
        for name in pools:
            left = max(0.0, deadline - time.monotonic())
            streams.append(Stream(name, bips.Consumer(name, timeout=left, latest=latest)))
    except BaseException:
        for s in streams:
            s.close()
        raise
    return streams


def next_frames(streams: list[Stream], timeout: float) -> list[tuple[Stream, bips.Frame]]:
    """One frame from every stream that has one within ``timeout`` seconds: a stalled camera
    delays a batch by at most that much, then the batch goes without it. Streams at their end
    of stream are closed and removed from ``streams``."""
    deadline = time.monotonic() + timeout
    got = []
    for s in list(streams):
        try:
            got.append((s, s.consumer.receive(timeout=max(0.0, deadline - time.monotonic()))))
        except bips.Timeout:
            pass
        except bips.ProducerGone:
            s.stats.ended = True
            s.close()
            streams.remove(s)
    return got


def check_frame(stream: Stream, frame: bips.Frame) -> None:
    if frame.dtype != np.uint8 or len(frame.shape) != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(
            f"stream {stream.name!r}: expected (height, width, 3 or 4) uint8 frames (RGB, "
            f"RGBx...), got {frame.shape} {frame.dtype}"
        )


def infer(
    model: nn.Module,
    preprocess: Preprocess,
    batch: list[tuple[Stream, bips.Frame]],
    on_frames: FramesHook | None = None,
    on_result: ResultHook | None = None,
) -> None:
    """One batch: zero-copy tensors -> normalized batch -> frames released -> model -> stats."""
    frames = [frame for _, frame in batch]
    # No copy: each tensor is the pool buffer (shared memory, or device memory of a GPU pool;
    # for those torch passes its current stream, which is where the normalization reads them).
    views = [torch.from_dlpack(frame) for frame in frames]
    x = preprocess(views)
    if on_frames is not None:
        on_frames(frames, views)
    # The batch no longer needs the frames: give the buffers back before the model runs. The
    # normalization of device frames may still be running: release(stream=...) (and dropping
    # the views, made on that same stream) returns them once the stream is past it.
    del views
    for frame in frames:
        if frame_device(frame) == "cpu":
            frame.release()
        else:
            frame.release(stream=torch.cuda.current_stream())
    logits = model(x).cpu()  # .cpu() also waits for the GPU: the results exist from here on
    now = time.monotonic_ns()
    for (stream, frame), row, copied in zip(batch, logits, preprocess.copied):
        stream.stats.add(now, frame.timestamp_ns)
        stream.stats.copies += copied
        if on_result is not None:
            on_result(stream.name, frame, row)


class Reporter:
    """Prints per-stream fps and latency every ``every`` seconds."""

    def __init__(self, streams: list[Stream], every: float, log: Callable[[str], None]):
        self.streams, self.every, self.log = list(streams), every, log
        self.start = self.last = time.monotonic()
        self.seen = {s.name: 0 for s in streams}

    def tick(self) -> None:
        now = time.monotonic()
        if self.every <= 0 or now - self.last < self.every:
            return
        parts = []
        for s in self.streams:
            n = s.stats.frames - self.seen[s.name]
            p50 = s.stats.summary(since=self.seen[s.name])["latency_ms_p50"] if n else 0.0
            parts.append(f"{s.name} {n / (now - self.last):5.1f} fps {p50:6.1f} ms")
            self.seen[s.name] = s.stats.frames
        self.log(f"[{now - self.start:6.1f} s] " + " | ".join(parts))
        self.last = now


def run(
    pools: Sequence[str],
    frames: int = 0,
    device: str = "auto",
    latest: bool = False,
    wait: float = 10.0,
    batch_timeout: float = 0.5,
    report_every: float = 1.0,
    threads: int = 0,
    on_frames: FramesHook | None = None,
    on_result: ResultHook | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Runs the model on pools ``pools`` until each delivered ``frames`` frames (0: until end of
    stream or Ctrl-C); returns per-stream statistics (see ``StreamStats.summary``).

    ``on_frames(frames, tensors)`` sees every batch's frames and their zero-copy tensors while
    the frames are still held; ``on_result(stream, frame, logits)`` gets each frame's output
    (the frame is released by then: read only its ``seq``, ``timestamp_ns`` and ``meta``).
    """
    dev = pick_device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TinyNet().to(dev).eval()
    preprocess = Preprocess(dev)
    streams = attach(pools, latest, wait)
    everyone = list(streams)
    reporter = Reporter(everyone, report_every, log)
    log(f"{len(pools)} stream(s) on {dev}, latest={latest}: {', '.join(pools)}")
    try:
        with torch.inference_mode():
            while streams:
                got = next_frames(streams, batch_timeout)
                # Streams of different sizes cannot share a batch: one batch per frame size.
                by_size: dict[tuple[int, ...], list[tuple[Stream, bips.Frame]]] = {}
                for stream, frame in got:
                    check_frame(stream, frame)
                    if stream.device is None:
                        stream.device = frame_device(frame)
                        log(describe_pool(stream.name, stream.device, dev))
                    by_size.setdefault(frame.shape[:2], []).append((stream, frame))
                del got
                while by_size:
                    infer(model, preprocess, by_size.popitem()[1], on_frames, on_result)
                for s in list(streams):
                    if frames and s.stats.frames >= frames:
                        s.close()
                        streams.remove(s)
                reporter.tick()
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        for s in streams:
            s.close()
    summary = {s.name: s.stats.summary() for s in everyone}
    for name, st in summary.items():
        log(
            f"{name}: {st['frames']} frames, {st['fps']:.1f} fps, capture-to-result latency "
            f"p50 {st['latency_ms_p50']:.1f} ms, p99 {st['latency_ms_p99']:.1f} ms, "
            f"max {st['latency_ms_max']:.1f} ms; dropped {st['dropped']}, "
            f"skipped {st['skipped']}, copies {st['copies']}"
            f"{', end of stream' if st['ended'] else ''}"
        )
    return summary


def demo_pool_device(choice: str, model_device: str) -> str:
    """Where the --demo cameras keep their frames: ``auto`` is the GPU when the model runs there
    and this bips can make GPU pools, else host memory."""
    if choice != "auto":
        return choice
    gpu_pools = getattr(bips, "cuda_available", None)
    if pick_device(model_device).type == "cuda" and gpu_pools is not None and gpu_pools():
        return "cuda"
    return "cpu"


def start_demo_producers(
    pools: Sequence[str], frames: int, size: str, fps: float, latest: bool, device: str = "cpu"
) -> list[subprocess.Popen[bytes]]:
    """One synthetic camera (producer.py) per pool, each in its own process; ``device`` "cuda"
    makes GPU pools, written on the GPU."""
    procs = []
    for i, name in enumerate(pools):
        cmd = [
            sys.executable,
            str(PRODUCER),
            "--pool",
            name,
            "--size",
            size,
            "--fps",
            str(fps),
            "--frames",
            str(frames),
            "--camera",
            str(i),
            "--wait-consumers",
            "1",
            "--exit-with-parent",
            # Without --latest, frames are processed in order, none lost (the cameras wait).
            "--policy",
            "drop_oldest" if latest else "block",
            "--device",
            device,
        ]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
    return procs


def stop_demo_producers(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """Gives the cameras ``grace`` seconds to finish by themselves, then stops them."""
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # the producer closes its pool and exits
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--pools",
        nargs="+",
        default=["cam0"],
        metavar="NAME",
        help="pools to read, one stream each (default: cam0)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=0,
        help="frames per stream, then exit; 0 = until end of stream or Ctrl-C",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs (auto: cuda when torch sees a GPU); frames of GPU pools "
        "arrive on the GPU with no copy, frames of host pools are staged through pinned memory",
    )
    p.add_argument(
        "--latest",
        action="store_true",
        help="live inference: always the newest frame, skipping older ones, so a "
        "slow model never stalls the capture",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for the pools to appear (default 10)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice); use fewer than the cores "
        "left after capture, or the threads wait for each other",
    )
    p.add_argument("--report-every", type=float, default=1.0, help="seconds between reports")
    p.add_argument(
        "--demo",
        action="store_true",
        help="start a synthetic camera (producer.py) for each pool first",
    )
    p.add_argument("--size", default="360x640", help="--demo frame size, HEIGHTxWIDTH")
    p.add_argument("--fps", type=float, default=30.0, help="--demo frame rate; 0 = flat out")
    p.add_argument(
        "--demo-device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="--demo pools in host memory (cpu) or on the GPU (cuda); auto: the GPU when the "
        "model runs there and bips has GPU pools",
    )
    args = p.parse_args(argv)

    procs = []
    if args.demo:
        try:
            pool_device = demo_pool_device(args.demo_device, args.device)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        procs = start_demo_producers(
            args.pools, args.frames, args.size, args.fps, args.latest, pool_device
        )
    try:
        run(
            args.pools,
            args.frames,
            args.device,
            args.latest,
            args.wait,
            report_every=args.report_every,
            threads=args.threads,
        )
    except (bips.Error, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        stop_demo_producers(procs, grace=2.0 if args.frames else 0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
