# SPDX-License-Identifier: Apache-2.0
"""The iceoryx2 baseline: zero-copy publish-subscribe from iceoryx2's own Python bindings
(``pip install iceoryx2``), driven by the same harness as bips and the other baselines.

Four services per case, all made by the producer (the first worker; consumers open them once
it is ready):

* ``NAME/data``: publish-subscribe of ``Slice[c_uint8]`` (the frame's bytes) with a user header
  (seq, timestamp_ns); each subscriber buffers up to CAPACITY samples.
* ``NAME/wake``: an event service; the producer notifies it after every send, each consumer's
  listener sleeps on it while its subscriber is empty.
* ``NAME/credit``: publish-subscribe of one int64 back to the producer: the seq of each sample
  a consumer released. The producer reuses slot ``seq % CAPACITY`` once every consumer gave it
  back: the blocking, lossless backpressure of bips' ``policy="block"`` with at most CAPACITY
  frames in flight. (iceoryx2's own ``RetryUntilDelivered`` busy-retries instead of sleeping;
  it is set too, so that no sample could ever be dropped.)
* ``NAME/credit-wake``: the event service the producer sleeps on while it waits for credit.

Why credits travel as samples and not as event ids: events are wake-ups, not counters. A first
version counted credits by event id (one id per consumer and slot, so that no id could be
pending twice) and the producer stalled within seconds in most 640x360x3 runs: the consumer had
notified every credit, the producer's listener never delivered the last 8, not even to
try_wait(). The ipc event of iceoryx2 0.10 is a unix datagram socket (the listener sleeps in
__skb_wait_for_more_packets) and such a socket holds net.unix.max_dgram_qlen datagrams (10 on
the machine measured), which is the likely place they were dropped. Wake-ups need no count:
every wait re-checks its subscriber first; a wait that times out although a sample had
arrived fails the case (LOST_WAKEUP) instead of hiding a 5 s stall in a rate.

Per frame the consumer does what every other implementation does: receive, a numpy view of
the payload, read one element, release (``Sample.delete()``), then hands the credit back.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any

from harness import CAPACITY, CpuMeter, Size, WorkerControl, run_window

END_SEQ = -1
# Every wait has a deadline: a dead peer ends the case with an error, never a hang.
WAIT_S = 5.0
# A wait that timed out although a sample had arrived: the notification was lost. The case
# fails rather than report a rate or latency with a 5 s stall inside.
LOST_WAKEUP = "iceoryx2 lost a notification: a wait timed out although a sample had arrived"


class Header(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_int64), ("timestamp_ns", ctypes.c_int64)]


def available() -> str | None:
    """None if iceoryx2 can be imported, else why not."""
    try:
        import iceoryx2  # noqa: F401
    except ImportError as e:
        return f"iceoryx2 is not installed (pip install iceoryx2): {e}"
    return None


class IoxResources:
    """Parent side of one case: only names. The producer worker creates the services, so that
    the parent never holds an iceoryx2 node across a fork."""

    def __init__(self, ctx: Any, name: str, size: Size, consumers: int) -> None:
        self.name = name
        self.consumers = consumers

    def producer_kwargs(self) -> dict[str, Any]:
        return {"name": self.name, "consumers": self.consumers}

    def consumer_kwargs(self, c: int) -> dict[str, Any]:
        return {"name": self.name, "consumers": self.consumers}

    def cleanup(self) -> None:
        pass  # the services go away with the last node that uses them


class _Services:
    """One process's node and the four services of a case."""

    def __init__(self, name: str, consumers: int, create: bool) -> None:
        import iceoryx2 as iox

        iox.set_log_level(iox.LogLevel.Error)
        self.iox = iox
        # Our own SIGTERM handler ends a worker (and runs its finally blocks): iceoryx2 keeps out.
        self.node = (
            iox.NodeBuilder.new()
            .signal_handling_mode(iox.SignalHandlingMode.Disabled)
            .create(iox.ServiceType.Ipc)
        )
        data = (
            self.node.service_builder(iox.ServiceName.new(f"{name}/data"))
            .publish_subscribe(iox.Slice[ctypes.c_uint8])
            .user_header(Header)
            .max_publishers(1)
            .max_subscribers(consumers)
            .subscriber_max_buffer_size(CAPACITY)
            .history_size(0)
            .enable_safe_overflow(False)
        )
        wake = (
            self.node.service_builder(iox.ServiceName.new(f"{name}/wake"))
            .event()
            .max_notifiers(1)
            .max_listeners(consumers)
        )
        credit = (
            self.node.service_builder(iox.ServiceName.new(f"{name}/credit"))
            .publish_subscribe(ctypes.c_int64)
            .max_publishers(consumers)
            .max_subscribers(1)
            .subscriber_max_buffer_size(CAPACITY)
            .history_size(0)
            .enable_safe_overflow(False)
        )
        credit_wake = (
            self.node.service_builder(iox.ServiceName.new(f"{name}/credit-wake"))
            .event()
            .max_notifiers(consumers)
            .max_listeners(1)
        )
        builders = (data, wake, credit, credit_wake)
        self.data, self.wake, self.credit, self.credit_wake = (
            b.create() if create else b.open() for b in builders
        )
        self.timeout = iox.Duration.from_secs_f64(WAIT_S)


class _Producer:
    def __init__(self, name: str, size: Size, consumers: int) -> None:
        s = _Services(name, consumers, create=True)
        iox = s.iox
        self.s = s
        self.nbytes = size.nbytes
        self.consumers = consumers
        self.pub = (
            s.data.publisher_builder()
            .initial_max_slice_len(size.nbytes)
            .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)
            .max_loaned_samples(1)
            .create()
        )
        self.notifier = s.wake.notifier_builder().create()
        self.credits = s.credit.subscriber_builder().buffer_size(CAPACITY).create()
        self.listener = s.credit_wake.listener_builder().create()
        self.refs = [0] * CAPACITY

    def connected(self) -> None:
        """Waits until every consumer is there: iceoryx2 delivers a sample only to the
        subscribers connected when it is sent."""
        deadline = time.monotonic() + WAIT_S
        while (
            self.s.data.dynamic_config.number_of_subscribers < self.consumers
            or self.s.credit.dynamic_config.number_of_publishers < self.consumers
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the iceoryx2 consumers never connected")
            time.sleep(0.001)
        self.pub.update_connections()

    def take(self, slot: int) -> None:
        """Waits until every consumer gave `slot` back."""
        refs, receive = self.refs, self.credits.receive
        deadline = 0.0
        while True:
            while (c := receive()) is not None:
                refs[c.payload().contents.value % CAPACITY] -= 1
                c.delete()
            if not refs[slot]:
                return
            now = time.monotonic()
            if not deadline:
                deadline = now + WAIT_S
            elif now > deadline:
                raise TimeoutError(f"no consumer released a sample within {WAIT_S:g} s")
            if not self.listener.timed_wait(self.s.timeout) and self.credits.has_samples():
                raise RuntimeError(LOST_WAKEUP)

    def loan(self) -> Any:
        return self.pub.loan_slice_uninit(self.nbytes)

    def send(self, sample: Any, slot: int) -> None:
        sample.assume_init().send()
        self.notifier.notify()
        self.refs[slot] = self.consumers

    def finish(self, seq: int) -> None:
        slot = seq % CAPACITY
        self.take(slot)
        sample = self.loan()
        Header.from_address(sample.user_header_ptr).seq = END_SEQ
        self.send(sample, slot)

    def close(self) -> None:
        for port in (self.listener, self.credits, self.notifier, self.pub):
            port.delete()


class _Consumer:
    def __init__(self, name: str, consumers: int) -> None:
        s = _Services(name, consumers, create=False)
        self.s = s
        self.sub = s.data.subscriber_builder().buffer_size(CAPACITY).create()
        self.listener = s.wake.listener_builder().create()
        self.credits = s.credit.publisher_builder().max_loaned_samples(1).create()
        self.notifier = s.credit_wake.notifier_builder().create()

    def receive(self) -> Any:
        """The next sample, sleeping on the wake listener while there is none."""
        receive, wait, timeout = self.sub.receive, self.listener.timed_wait, self.s.timeout
        deadline = 0.0
        while True:
            sample = receive()
            if sample is not None:
                return sample
            now = time.monotonic()
            if not deadline:
                deadline = now + WAIT_S
            elif now > deadline:
                raise TimeoutError(f"no sample within {WAIT_S:g} s")
            if not wait(timeout) and self.sub.has_samples():
                raise RuntimeError(LOST_WAKEUP)

    def give_back(self, seq: int) -> None:
        self.credits.send_copy(ctypes.c_int64(seq))
        self.notifier.notify()

    def close(self) -> None:
        for port in (self.notifier, self.credits, self.listener, self.sub):
            port.delete()


def _view(sample: Any) -> Any:
    import numpy as np

    return np.frombuffer(sample.payload().as_memory_view(), np.uint8)


def iox_latency_producer(
    ctl: WorkerControl, size: Size, interval_s: float, name: str, consumers: int
) -> dict[str, Any]:
    p = _Producer(name, size, consumers)
    try:
        ctl.ready()
        start, end = ctl.wait_go()
        p.connected()
        meter = CpuMeter(start, end)
        mono = time.monotonic_ns
        n = 0
        while (t := mono()) < end:
            meter.frame(t)
            slot = n % CAPACITY
            p.take(slot)
            sample = p.loan()
            time.sleep(interval_s)
            h = Header.from_address(sample.user_header_ptr)
            h.seq = n
            h.timestamp_ns = mono()
            p.send(sample, slot)
            n += 1
        p.finish(n)
        return {"published": n, **meter.result()}
    finally:
        p.close()


def iox_latency_consumer(
    ctl: WorkerControl, size: Size, name: str, consumers: int
) -> dict[str, Any]:
    c = _Consumer(name, consumers)
    try:
        ctl.ready()
        start, end = ctl.wait_go()
        meter = CpuMeter(start, end)
        mono = time.monotonic_ns
        wake: list[int] = []
        ready: list[int] = []
        while True:
            sample = c.receive()
            t_wake = mono()
            h = Header.from_address(sample.user_header_ptr)
            seq, ts = h.seq, h.timestamp_ns
            if seq == END_SEQ:
                sample.delete()
                break
            _view(sample).item(0)
            t_ready = mono()
            if meter.frame(t_wake):
                wake.append(t_wake - ts)
                ready.append(t_ready - ts)
            sample.delete()
            c.give_back(seq)
        return {"wake_ns": wake, "ready_ns": ready, **meter.result()}
    finally:
        c.close()


def iox_handoff_producer(
    ctl: WorkerControl, size: Size, fill: bool, name: str, consumers: int
) -> dict[str, Any]:
    import numpy as np

    p = _Producer(name, size, consumers)
    try:
        ctl.ready()
        start, end = ctl.wait_go()
        p.connected()
        take, loan, send = p.take, p.loan, p.send
        seq = -1

        def step() -> int | None:
            nonlocal seq
            seq += 1
            slot = seq % CAPACITY
            take(slot)
            sample = loan()
            if fill:
                np.frombuffer(sample.payload().as_memory_view(), np.uint8)[...] = seq & 0xFF
            Header.from_address(sample.user_header_ptr).seq = seq
            send(sample, slot)
            return seq

        try:
            return run_window(step, start, end, drain=False)
        finally:
            p.finish(seq + 1)
    finally:
        p.close()


def iox_handoff_consumer(
    ctl: WorkerControl, size: Size, name: str, consumers: int
) -> dict[str, Any]:
    c = _Consumer(name, consumers)
    try:
        ctl.ready()
        start, end = ctl.wait_go()
        receive, give_back = c.receive, c.give_back

        def step() -> int | None:
            sample = receive()
            seq: int = Header.from_address(sample.user_header_ptr).seq
            if seq == END_SEQ:
                sample.delete()
                return None
            _view(sample).item(0)
            sample.delete()
            give_back(seq)
            return seq

        return run_window(step, start, end, drain=True)
    finally:
        c.close()
