"""Foundation micro-benchmark: signatures, codec, synced writes and group commit.

    python -m tests.bench.foundation [--quick]

Prints medians over repeated runs in this one process. Later benchmarks derive the
signature-cost bound of a payment from the sign/verify figures measured in their own run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import trio

from crypto.keys import VERIFIERS, Purpose, SigningKey, digest, signing_bytes
from crypto.messages import Certificate, Order, Vote, _body
from devnet.sigcost import median_us
from store import Batch, GroupCommitWriter, Store
from tests.bench.common import measure_signature_cost


def _row(name: str, value: float, unit: str = "us") -> None:
    print(f"  {name:<44} {value:>12.2f} {unit}")


def _signed_order_sized() -> tuple[bytes, bytes, bytes]:
    """(public key, signed bytes, signature) for an order-sized message: what a verify measures."""
    key = SigningKey.generate()
    network, body = os.urandom(32), os.urandom(150)
    return key.public, signing_bytes(Purpose.ORDER, network, body), key.sign(Purpose.ORDER, network, body)


def verify_backends(repeats: int) -> dict[str, float]:
    """CPU time per Ed25519 verification of an order-sized message, by backend, in this run."""
    public, signed, signature = _signed_order_sized()
    return {name: median_us(lambda fn=fn: fn(public, signed, signature), n=2000, repeats=repeats)
            for name, fn in VERIFIERS.items()}


def verify_after_idle(gaps_ms: tuple[float, ...] = (0.0, 2.0, 10.0), n: int = 300) -> dict[float, float]:
    """Median CPU time of one verification that follows a sleep of each gap. A process that sleeps
    between messages (a peer below full load) wakes on a cold core: the same check costs more,
    which is why CPU per payment rises as the offered rate falls."""
    public, signed, signature = _signed_order_sized()
    verify = VERIFIERS["libsodium"]
    out: dict[float, float] = {}
    for gap in gaps_ms:
        times = []
        for _ in range(n):
            if gap:
                time.sleep(gap / 1000)
            start = time.thread_time_ns()
            verify(public, signed, signature)
            times.append((time.thread_time_ns() - start) / 1000)
        out[gap] = statistics.median(times)
    return out


def bench_verify_backends(repeats: int) -> None:
    times = verify_backends(repeats)
    base = times["cryptography"]
    for name, us in times.items():
        _row(f"verify with {name} ({base / us:.2f}x cryptography)", us)


def bench_codec(repeats: int) -> None:
    net = os.urandom(32)
    keys = [SigningKey.generate() for _ in range(3)]
    order = Order.create(keys[0], net, os.urandom(32), 12_345, 7, "rent")
    cert = Certificate(order, tuple(Vote.create(k, net, order) for k in keys))
    ob, cb = order.encode(), cert.encode()
    print(f"codec (order {len(ob)} B, certificate with 3 votes {len(cb)} B)")
    _row("encode order", median_us(order.encode, n=5000, repeats=repeats))
    _row("decode order (strict, validated)", median_us(lambda: Order.decode(ob), n=5000, repeats=repeats))
    _row("order id (encode body + SHA-256; memoised after)",
         median_us(lambda: digest(Purpose.ORDER, net, _body(order)), n=5000, repeats=repeats))
    _row("encode certificate", median_us(cert.encode, n=3000, repeats=repeats))
    _row("decode certificate (strict, validated)", median_us(lambda: Certificate.decode(cb), n=3000, repeats=repeats))


def _batch(i: int) -> Batch:
    b = Batch()
    for j in range(4):
        b.put(b"T" + i.to_bytes(8, "big") + bytes([j]), os.urandom(100))
    return b


def bench_store(repeats: int, concurrencies: list[int], writes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="meshpay-bench-") as tmp:
        store = Store.create(os.path.join(tmp, "db"), os.urandom(32))
        counter = iter(range(10**9))
        synced = median_us(lambda: store.write(_batch(next(counter)), sync=True), n=50, repeats=repeats)
        unsynced = median_us(lambda: store.write(_batch(next(counter)), sync=False), n=500, repeats=repeats)
        print("storage (one batch = 4 keys of ~100 B)")
        _row("synced write (fsync), direct", synced)
        _row("unsynced write, direct", unsynced)
        print("group commit: durable (synced) writes from C concurrent writers")
        print(f"  {'C':>5} {'per durable write':>18} {'vs one synced write':>20} {'batches/group':>14}")
        for conc in concurrencies:
            samples, groups = [], []
            for _ in range(repeats):
                per_write, mean_group = trio.run(_group_commit_run, store, conc, writes, counter)
                samples.append(per_write)
                groups.append(mean_group)
            med = statistics.median(samples)
            print(f"  {conc:>5} {med:>15.2f} us {med / synced:>19.1%} {statistics.median(groups):>14.1f}")
        store.close()


async def _group_commit_run(store: Store, conc: int, writes: int, counter,
                            writer: GroupCommitWriter | None = None) -> tuple[float, float]:
    writer = writer or GroupCommitWriter(store, sync=True, in_thread=True)
    per_task = max(1, writes // conc)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)

        async def worker() -> None:
            for _ in range(per_task):
                await writer.commit(_batch(next(counter)))

        start = time.perf_counter()
        async with trio.open_nursery() as workers:
            for _ in range(conc):
                workers.start_soon(worker)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / (per_task * conc) * 1e6, writer.mean_group


class _SyncedWriteWriter(GroupCommitWriter):
    """The obvious way, for comparison: one synced write in the worker thread."""

    def _write(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        self.store.write_ops(ops, sync=True)


async def _loop_run(store: Store, writer: GroupCommitWriter, writes: int, counter) -> tuple[float, float]:
    """Per durable write (us), and how often another task got to run meanwhile (yields per ms)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        start = time.perf_counter()
        per_write, _ = await _group_commit_run(store, 64, writes, counter, writer)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return per_write, ticks / (elapsed * 1e3)


def bench_loop_freedom(repeats: int, writes: int) -> None:
    print("the event loop during group commit (C=64): another task's turns per ms (more = freer loop)")
    print(f"  {'how the disk is waited for':<44} {'per durable write':>18} {'turns/ms':>9}")
    with tempfile.TemporaryDirectory(prefix="meshpay-bench-") as tmp:
        store = Store.create(os.path.join(tmp, "db"), os.urandom(32))
        counter = iter(range(10**9))
        cases = [("WAL sync in a worker thread (default)", lambda: GroupCommitWriter(store, in_thread=True)),
                 ("synced write in a worker thread (holds GIL)", lambda: _SyncedWriteWriter(store, in_thread=True)),
                 ("WAL sync in the event loop (devnet)", lambda: GroupCommitWriter(store, in_thread=False))]
        for label, make in cases:
            runs = [trio.run(_loop_run, store, make(), writes, counter) for _ in range(repeats)]
            print(f"  {label:<44} {statistics.median(r[0] for r in runs):>15.2f} us "
                  f"{statistics.median(r[1] for r in runs):>9.1f}")
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(f"meshpay foundation micro-benchmark: medians of {repeats} runs, pid {os.getpid()}")
    cost = measure_signature_cost(repeats)
    print("Ed25519, order-sized body, CPU time (sign: cryptography; verify: libsodium)")
    _row("sign", cost.sign_us)
    _row("verify (as meshpay does it)", cost.verify_us)
    bench_verify_backends(repeats)
    bench_codec(repeats)
    bench_store(repeats, [1, 8, 64, 256], writes=400 if args.quick else 1024)
    bench_loop_freedom(repeats, writes=400 if args.quick else 1024)


if __name__ == "__main__":
    main()
