"""Transport benchmark: throughput and one-way latency over loopback, in one process.

    python -m tests.bench.transport [--quick]

All transports share this process's single trio thread, so the numbers include both ends' work
(sealing and opening, framing, the event loop) on one core: a lower bound for separate processes.
Every phase is bounded in message count and in time.
"""

from __future__ import annotations

import argparse
import os
import struct
import time

import trio

from crypto.keys import SigningKey
from gossip.transport import TcpTransport
from tests.bench.common import percentile

MESSAGE_SIZE = 200
STAMP = struct.Struct(">Q")
PAD = os.urandom(MESSAGE_SIZE - STAMP.size)


def _message() -> bytes:
    return STAMP.pack(time.perf_counter_ns()) + PAD


async def _start(nursery: trio.Nursery, network: bytes, count: int) -> list[TcpTransport]:
    keys = [SigningKey.generate() for _ in range(count)]
    committee = frozenset(k.public for k in keys)  # peers of one committee: no outsider budgets
    transports = [TcpTransport(k, network, committee=committee) for k in keys]
    for t in transports:
        await nursery.start(t.serve)
    return transports


async def _collect(receivers: list[TcpTransport], expected: int, latencies: list[float],
                   deadline: float) -> int:
    """Receive until `expected` messages arrived in total or the deadline passed."""
    got = 0
    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def drain(t: TcpTransport) -> None:
                nonlocal got
                while True:
                    _, msg = await t.inbound.receive()
                    latencies.append((time.perf_counter_ns() - STAMP.unpack_from(msg)[0]) / 1e6)
                    got += 1
                    if got >= expected:
                        done.set()

            for t in receivers:
                nursery.start_soon(drain, t)
            await done.wait()
            nursery.cancel_scope.cancel()
    return got


async def throughput(network: bytes, count: int, limit_s: float) -> None:
    async with trio.open_nursery() as nursery:
        a, b = await _start(nursery, network, 2)
        await a.dial("127.0.0.1", b.port)
        latencies: list[float] = []
        deadline = trio.current_time() + limit_s

        async def produce() -> None:
            sent = 0
            with trio.move_on_at(deadline):
                while sent < count:
                    if a.send(b.peer_id, _message()):
                        sent += 1
                        if sent % 256 == 0:
                            await trio.lowlevel.checkpoint()
                    else:
                        await trio.sleep(0.0005)  # queue full: let the writer catch up

        start = time.perf_counter()
        nursery.start_soon(produce)
        got = await _collect([b], count, latencies, deadline)
        elapsed = time.perf_counter() - start
        print(f"throughput, 1 -> 1, as fast as possible ({got} of {count} messages in {elapsed:.2f} s)")
        print(f"  {got / elapsed:>12,.0f} messages/s   {got * MESSAGE_SIZE / elapsed / 1e6:8.1f} MB/s"
              f"   frames {a.stats.frames_out:,}  ({a.stats.messages_out / max(1, a.stats.frames_out):.1f} messages/frame)")
        nursery.cancel_scope.cancel()


async def paced(network: bytes, receivers: int, rate: int, seconds: float) -> None:
    """`rate` broadcasts per second, each sent to every receiver; latency percentiles."""
    async with trio.open_nursery() as nursery:
        sender, *targets = await _start(nursery, network, 1 + receivers)
        for t in targets:
            await sender.dial("127.0.0.1", t.port)
        total = int(rate * seconds)
        latencies: list[float] = []
        tick = 0.001
        per_tick = max(1, rate // 1000)
        drops = 0

        async def produce() -> None:
            nonlocal drops
            next_at = trio.current_time()
            sent = 0
            while sent < total:
                for _ in range(min(per_tick, total - sent)):
                    msg = _message()
                    for t in targets:
                        drops += not sender.send(t.peer_id, msg)
                    sent += 1
                next_at += tick * per_tick * 1000 / rate
                await trio.sleep_until(next_at)

        deadline = trio.current_time() + seconds + 10
        start = time.perf_counter()
        nursery.start_soon(produce)
        got = await _collect(targets, total * receivers, latencies, deadline)
        elapsed = time.perf_counter() - start
        print(f"paced, 1 -> {receivers}, {rate:,} broadcasts/s ({rate * receivers:,} messages/s) for {seconds:.0f} s:"
              f" {got:,} of {total * receivers:,} delivered in {elapsed:.2f} s, {drops} dropped")
        print(f"  one-way latency ms   p50 {percentile(latencies, 50):7.3f}   p90 {percentile(latencies, 90):7.3f}"
              f"   p99 {percentile(latencies, 99):7.3f}   max {max(latencies, default=float('nan')):7.3f}")
        nursery.cancel_scope.cancel()


async def run(quick: bool) -> None:
    network = os.urandom(32)
    await throughput(network, 50_000 if quick else 200_000, 30.0)
    seconds = 2.0 if quick else 5.0
    await paced(network, 1, 1_000, seconds)
    await paced(network, 1, 10_000, seconds)
    await paced(network, 5, 1_000, seconds)
    await paced(network, 5, 2_000, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    args = parser.parse_args()
    print(f"meshpay transport benchmark: {MESSAGE_SIZE}-byte messages over 127.0.0.1, one process, pid {os.getpid()}")
    trio.run(run, args.quick)


if __name__ == "__main__":
    main()
