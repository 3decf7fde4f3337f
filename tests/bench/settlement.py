"""Settlement throughput in one process: real signatures, real RocksDB stores (synced group commit
in a worker thread), in-memory links with no added latency. Printed next to the signature-cost
bound measured in the same run.

    python -m tests.bench.settlement [--peers 5] [--payments 3000] [--accounts 200] [--no-fsync]

One process runs every peer, so the protocol work is serial on one core (Ed25519 verification
releases the GIL, but the peers' event loop is one thread): the bound is computed for 1 core.
Orders are signed before the clock starts (a wallet's work, not the network's).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time

import trio

from crypto.messages import Order
from devnet import sigcost
from peer.ring import Ring, imbalance
from tests.sim.bank import BankNetwork
from tests.sim.network import LinkProfile


async def _run(args: argparse.Namespace) -> dict:
    bank = BankNetwork(seed=args.seed, peers=args.peers, accounts=args.accounts, replication=args.replication,
                       quorum=args.quorum, profile=LinkProfile(latency=(0.0, 0.0)),
                       fsync=args.fsync, writer_thread=True, flush_delay=0.0)
    per_account = math.ceil(args.payments / args.accounts)
    rng = random.Random(args.seed)
    publics = [k.public for k in bank.keys]
    orders = [[Order.create(key, bank.network_id, publics[(i + 1 + rng.randrange(len(publics) - 1)) % len(publics)],
                            1 + rng.randrange(100), seq, "bench") for seq in range(per_account)]
              for i, key in enumerate(bank.keys)]
    latencies: list[float] = []
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            await bank.wait_for(lambda: all(len(p.node.membership.alive()) == args.peers - 1 for p in bank.members),
                                timeout=30, step=0.1)
            nodes = [p.node for p in bank.members]
            start = time.perf_counter()
            cpu_start = time.process_time()
            done = 0

            async def account(i: int) -> None:
                nonlocal done
                node = nodes[i % len(nodes)]
                for order in orders[i]:
                    if done >= args.payments:
                        return
                    t = time.perf_counter()
                    node.submit(order)
                    event = await node.wait(order.id, "settled", 30)
                    if event is None or event.status != "settled":
                        raise RuntimeError(f"payment not settled: {event}")
                    latencies.append(time.perf_counter() - t)
                    done += 1

            async with trio.open_nursery() as load:
                for i in range(len(orders)):
                    load.start_soon(account, i)
            seconds = time.perf_counter() - start
            cores_used = (time.process_time() - cpu_start) / seconds
            checks = sum(p.node.settlement.checker.signature_checks for p in bank.members)
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    ring = Ring(bank.genesis.committee, bank.genesis.replication, bank.genesis.vnodes)
    appliers = statistics.mean(len(set(ring.owners(o.sender)) | set(ring.owners(o.recipient)))
                               for row in orders for o in row)
    return {"payments": done, "seconds": seconds, "latencies": latencies, "appliers": appliers,
            "vote_checks": checks, "cores_used": cores_used}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--replication", type=int, default=4)
    parser.add_argument("--quorum", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--payments", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-fsync", dest="fsync", action="store_false")
    args = parser.parse_args()
    print(f"settlement benchmark: {args.peers} peers in one process, N={args.replication}, W={args.quorum}, "
          f"{args.accounts} accounts, {args.payments} payments, fsync={'on' if args.fsync else 'off'}")
    cost = sigcost.measure(repeats=7)
    result = trio.run(_run, args)
    bound = sigcost.bound(cost, replication=args.replication, quorum=args.quorum,
                          appliers=result["appliers"], cores=1)
    throughput = result["payments"] / result["seconds"]
    lat = sorted(result["latencies"])
    pct = {q: lat[min(len(lat) - 1, math.ceil(q / 100 * len(lat)) - 1)] * 1000 for q in (50, 95, 99)}
    print(f"  Ed25519 sign {cost.sign_us:.1f} us, verify {cost.verify_us:.1f} us (medians, this run)")
    print(f"  signature-cost bound: {bound.payments_per_second:.0f} payments/s on 1 core = {bound.formula}")
    print(f"  achieved: {throughput:.0f} settled payments/s ({result['payments']} in {result['seconds']:.2f} s)"
          f" = {throughput / bound.payments_per_second:.1%} of the bound")
    print(f"  latency to settled: p50 {pct[50]:.1f} ms, p95 {pct[95]:.1f} ms, p99 {pct[99]:.1f} ms "
          f"({args.accounts} accounts busy at once)")
    print(f"  process CPU during the load: {result['cores_used']:.2f} cores (so the 1-core bound applies)")
    print(f"  vote signatures actually verified: {result['vote_checks'] / max(1, result['payments']):.1f} per payment")
    print("ring ownership imbalance (max/mean accounts per peer, 20,000 random accounts, N=4):")
    for size in (5, 20, 50):
        cells = []
        for vnodes in (16, 64, 256):
            worst, spread = imbalance(size, min(4, size), vnodes)
            cells.append(f"vnodes {vnodes}: {worst:.3f} (cv {spread:.3f})")
        print(f"  {size:>3} peers  " + "   ".join(cells))
    print(f"pid {os.getpid()}")


if __name__ == "__main__":
    main()
