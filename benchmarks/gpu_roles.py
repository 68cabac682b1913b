# SPDX-License-Identifier: Apache-2.0
"""What the worker processes of gpu_crew run: ``warm_up()`` once, then per case the producer
role or a consumer role of one implementation (gpu_impls.py) in one of two modes.

- rate: the producer hands frames off as fast as the consumers take them; each consumer takes a
  frame, queues an 8-byte GPU read of it, gives it back (run_window counts what falls in the
  window, as bips.benchkit does for host pools).
- latency: one frame at a time. The producer waits until every consumer said DONE for the
  previous frame, sleeps ``interval_s`` (the consumers go back to waiting), stamps the time once
  it has a free buffer, writes the marker and hands the frame off. A consumer notes when it
  holds a usable CUDA tensor, reads the marker back to the host (the data is really there),
  notes the time, checks the marker, gives the frame back, then says DONE. The same pacing for
  every implementation, outside what is measured.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from gpu_crew import Ctl
from gpu_impls import DONE, GPU_SIZES, Dev, Mailbox, Peer, make_consumer, make_producer
from harness import CpuMeter, run_window


def warm_up(dry_run: bool) -> dict[str, Any]:
    """Runs once in every worker before any case: imports, the CUDA context, versions."""
    import bips
    import torch
    import torch.multiprocessing  # registers torch's reductions (CUDA IPC) for the pickler

    info: dict[str, Any] = {
        "bips": bips.__version__,
        "bips_cuda_available": bool(getattr(bips, "cuda_available", lambda: False)()),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
    }
    if not dry_run:
        torch.zeros(1, device="cuda:0")
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    try:
        import cupy

        info["cupy"] = cupy.__version__
        if not dry_run:
            cupy.zeros(1)
    except ImportError:
        info["cupy"] = None
    return info


def read_marker(tensor: Any) -> int:
    """Element 0 on the host: waits until the frame's data is really there and readable."""
    return int(tensor[0])


def producer_role(
    ctl: Ctl, conns: list[Any], impl: str, name: str, size: str, consumers: int, mode: str,
    interval_s: float, dry_run: bool,
) -> dict[str, Any]:  # fmt: skip
    dev = Dev(dry_run)
    mail = Mailbox(conns[:consumers], ctl)
    side = make_producer(impl, ctl, mail, name, GPU_SIZES[size], dev)
    try:
        ctl.ready()
        side.after_ready()
        start, end = ctl.wait_go()
        if mode == "rate":
            seq = -1

            def step() -> int:
                nonlocal seq
                seq += 1
                side.publish(seq)
                return seq

            result = run_window(step, start, end, drain=False)
        else:
            meter = CpuMeter(start, end)
            n = 0
            while (t := time.monotonic_ns()) < end:
                meter.frame(t)
                want = n * consumers
                mail.wait(lambda want=want: mail.done >= want, "the consumers' DONE")
                time.sleep(interval_s)
                side.publish(n)
                n += 1
            result = {"published": n, **meter.result()}
        side.finish()
        return result
    finally:
        side.close()


def consumer_role(
    ctl: Ctl, conn: Any, impl: str, name: str, size: str, mode: str, dry_run: bool
) -> dict[str, Any]:
    dev = Dev(dry_run)
    peer = Peer(conn, ctl)
    side = make_consumer(impl, ctl, peer, name, GPU_SIZES[size], dev)
    try:
        dev.reset_peak()
        ctl.ready()
        start, end = ctl.wait_go()
        if mode == "rate":

            def step() -> int | None:
                got = side.next()
                if got is None:
                    return None
                side.use(got)
                side.done(got, synced=False)
                return got.seq

            result = run_window(step, start, end, drain=True)
        else:
            meter = CpuMeter(start, end)
            tensor_ns: list[int] = []
            read_ns: list[int] = []
            wrong = 0
            while (got := side.next()) is not None:
                value = read_marker(got.tensor)
                t_read = time.monotonic_ns()
                wrong += value != got.seq & 0xFF
                if meter.frame(got.t_tensor):
                    tensor_ns.append(got.t_tensor - got.t_pub)
                    read_ns.append(t_read - got.t_pub)
                side.done(got, synced=True)
                peer.send(DONE)
            result = {"tensor_ns": tensor_ns, "read_ns": read_ns, "wrong": wrong, **meter.result()}
        result["cons_alloc_peak_bytes"] = dev.peak()
        return result
    finally:
        side.close()


ROLES: dict[str, Callable[..., dict[str, Any]]] = {
    "producer": producer_role,
    "consumer": consumer_role,
}
