"""Measure what a link between two namespaces really does: one-way delay, loss and reordering.

Every namespace shares the machine's clock, so a one-way delay can be measured directly: a UDP
socket in the sending namespace stamps each datagram with CLOCK_MONOTONIC, a socket in the
receiving namespace subtracts that stamp from its own reading on arrival. (A ping would measure a
round trip, mixing both directions' faults.) Used to check that `devnet slow` gives the delay it
was asked for (tests/test_faults_netns.py, tests/bench/linkfaults.py).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from devnet import netns

PROBE = struct.Struct("!IQ")  # sequence number, send time in ns


@dataclass(frozen=True)
class LinkReport:
    sent: int
    received: int  # distinct datagrams
    duplicates: int  # extra copies received
    delays_ms: list[float]  # first copies, in arrival order
    reordered: int  # datagrams that arrived after a later-sent one

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0

    def percentile(self, q: float) -> float:
        if not self.delays_ms:
            return float("nan")
        ordered = sorted(self.delays_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]

    def as_dict(self) -> dict:
        return {"sent": self.sent, "received": self.received, "loss": round(self.loss, 4),
                "duplicates": self.duplicates, "reordered": self.reordered, "p1_ms": self.percentile(1), "p50_ms": self.percentile(50),
                "p99_ms": self.percentile(99), "max_ms": self.percentile(100)}


@contextlib.contextmanager
def _realtime() -> Iterator[None]:
    """The lowest real-time priority while measuring, when allowed: on a loaded machine an
    ordinary process woken by an arriving datagram may wait tens of milliseconds for a CPU, and
    that wait would be counted as the link's delay."""
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, before[0], before[1])


def measure(src_ns: str, dst_ns: str, dst_host: str, *, count: int = 500, interval: float = 0.002,
            port: int = 47999, linger: float = 1.0) -> LinkReport:
    """Send `count` stamped datagrams from `src_ns` to `dst_host:port` in `dst_ns`."""
    with _realtime():
        return _measure(src_ns, dst_ns, dst_host, count, interval, port, linger)


def _measure(src_ns: str, dst_ns: str, dst_host: str, count: int, interval: float, port: int,
             linger: float) -> LinkReport:
    rx = netns.socket_in(dst_ns, socket.AF_INET, socket.SOCK_DGRAM)
    tx = netns.socket_in(src_ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind((dst_host, port))
        rx.setblocking(False)
        delays: list[float] = []
        seen: set[int] = set()
        highest = -1
        reordered = duplicates = 0

        def drain(wait: float) -> None:
            nonlocal highest, reordered, duplicates
            ready, _, _ = select.select([rx], [], [], wait)
            while ready:
                try:
                    data = rx.recv(64)
                except BlockingIOError:
                    return
                seq, stamp = PROBE.unpack(data[:PROBE.size])
                if seq in seen:
                    duplicates += 1
                    continue
                seen.add(seq)
                delays.append((time.monotonic_ns() - stamp) / 1e6)
                if seq < highest:
                    reordered += 1
                highest = max(highest, seq)

        next_send = time.monotonic()
        for seq in range(count):
            tx.sendto(PROBE.pack(seq, time.monotonic_ns()), (dst_host, port))
            next_send += interval
            while (left := next_send - time.monotonic()) > 0:
                drain(left)
        end = time.monotonic() + linger
        while (left := end - time.monotonic()) > 0 and len(delays) < count:
            drain(left)
        return LinkReport(count, len(delays), duplicates, delays, reordered)
    finally:
        rx.close()
        tx.close()
