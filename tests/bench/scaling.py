"""CPU per payment as the network grows: the same load on 5, 10 and 20 peers in one process.

    python -m tests.bench.scaling [--peers 5 10 20] [--payments 600] [--concurrency 16]
                                  [--[no-]writer-thread] [--json]

Real Ed25519 signatures, real RocksDB stores (synced group commit; waiting for the disk in a
worker thread only when there are as many cores as peers, the rule `devnet up` applies), in-memory
links with no added latency. A payment involves its sender's and recipient's owners and its gateway,
never every peer, so its CPU summed over all peers should not grow with the network. Each size is
measured as: process CPU during the load (every peer runs in this process), and the same minus
what the idle network costs over the same time (membership probes, anti-entropy and repair rounds,
which grow with the number of peers but not with payments). Orders are signed before the clock
starts (a wallet's work, not the network's).

Both accounts' owners apply a payment. With 5 peers and N = 4 those are nearly the same four
peers; from 10 peers on they are mostly distinct (up to 2N), so the table also counts the peers
that applied each payment and the CPU per applying owner: that figure is the one a larger network
must keep flat.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass

import trio

from crypto.messages import Order
from devnet import sigcost
from devnet.layout import disk_thread_pays
from tests.sim.bank import BankNetwork
from tests.sim.network import LinkProfile

IDLE_SECONDS = 3.0


@dataclass
class ScalingRow:
    peers: int
    payments: int
    seconds: float
    payments_per_second: float
    cpu_us: float  # process CPU per payment (all peers)
    idle_cores: float  # CPU the idle network uses (all peers), in cores
    payment_cpu_us: float  # cpu_us minus the idle network's CPU over the same time
    messages: float  # peer-to-peer messages per payment (all kinds, including background)
    vote_checks: float  # vote signatures verified per payment
    owners_applying: float  # distinct peers that applied each payment (owners of either account)
    cpu_per_owner_us: float  # payment_cpu_us / owners_applying
    ratio: float = 1.0  # payment_cpu_us relative to the smallest network
    owner_ratio: float = 1.0  # cpu_per_owner_us relative to the smallest network


def _writer_thread(peers: int, choice: bool | None) -> bool:
    # `devnet up`'s rule; here every peer shares this one process.
    return disk_thread_pays(peers) if choice is None else choice


async def _measure(peers: int, payments: int, concurrency: int, seed: int,
                   writer_thread: bool | None = None) -> ScalingRow:
    bank = BankNetwork(seed=seed, peers=peers, accounts=concurrency, profile=LinkProfile(latency=(0.0, 0.0)),
                       fsync=True, writer_thread=_writer_thread(peers, writer_thread), flush_delay=0.0)
    per_account = math.ceil(payments / concurrency)
    rng = random.Random(seed)
    publics = [k.public for k in bank.keys]
    orders = [[Order.create(key, bank.network_id, publics[(i + 1 + rng.randrange(len(publics) - 1)) % len(publics)],
                            1 + rng.randrange(100), seq, "bench") for seq in range(per_account)]
              for i, key in enumerate(bank.keys)]
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            converged = await bank.wait_for(
                lambda: all(len(p.node.membership.alive()) == peers - 1 for p in bank.members), timeout=60, step=0.1)
            if converged is None:
                raise RuntimeError(f"{peers} peers did not converge within 60 s")
            nodes = [p.node for p in bank.members]
            await trio.sleep(1.0)  # let join-time gossip settle before measuring the idle cost
            idle_start = time.process_time()
            await trio.sleep(IDLE_SECONDS)
            idle_cores = (time.process_time() - idle_start) / IDLE_SECONDS
            received0 = sum(sum(n.runtime.received.values()) for n in nodes)
            checks0 = sum(n.settlement.checker.signature_checks for n in nodes)
            applied0 = sum(n.settlement.counters["certs_applied"] for n in nodes)
            start, cpu_start = time.perf_counter(), time.process_time()
            done = 0

            async def account(i: int) -> None:
                nonlocal done
                node = nodes[i % len(nodes)]
                for order in orders[i]:
                    if done >= payments:
                        return
                    node.submit(order)
                    event = await node.wait(order.id, "settled", 60)
                    if event is None or event.status != "settled":
                        raise RuntimeError(f"payment not settled: {event}")
                    done += 1

            async with trio.open_nursery() as load:
                for i in range(len(orders)):
                    load.start_soon(account, i)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            messages = sum(sum(n.runtime.received.values()) for n in nodes) - received0
            checks = sum(n.settlement.checker.signature_checks for n in nodes) - checks0
            applied = sum(n.settlement.counters["certs_applied"] for n in nodes) - applied0
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    payment_cpu_us = max(0.0, cpu - idle_cores * seconds) / done * 1e6
    return ScalingRow(peers, done, seconds, done / seconds, cpu / done * 1e6, idle_cores, payment_cpu_us,
                      messages / done, checks / done, applied / done, payment_cpu_us / (applied / done))


def run(sizes: list[int], payments: int, concurrency: int, seed: int = 1,
        writer_thread: bool | None = None) -> list[ScalingRow]:
    rows = [trio.run(_measure, n, payments, concurrency, seed, writer_thread) for n in sizes]
    for row in rows:
        row.ratio = row.payment_cpu_us / rows[0].payment_cpu_us
        row.owner_ratio = row.cpu_per_owner_us / rows[0].cpu_per_owner_us
    return rows


def print_table(rows: list[ScalingRow], cost: sigcost.SigCost) -> None:
    print(f"  {'peers':>5} {'pay/s':>6} {'CPU/payment':>12} {'idle cores':>10} {'minus idle':>11} "
          f"{'vs first':>8} {'msgs/pay':>8} {'vote checks':>11} {'owners':>6} {'per owner':>9} {'vs first':>8}")
    for r in rows:
        print(f"  {r.peers:>5} {r.payments_per_second:>6.0f} {r.cpu_us:>9,.0f} us {r.idle_cores:>10.3f} "
              f"{r.payment_cpu_us:>8,.0f} us {r.ratio:>7.2f}x {r.messages:>8.1f} {r.vote_checks:>11.1f} "
              f"{r.owners_applying:>6.2f} {r.cpu_per_owner_us:>6,.0f} us {r.owner_ratio:>7.2f}x")
    print(f"  (Ed25519 in this run: sign {cost.sign_us:.1f} us, verify {cost.verify_us:.1f} us CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--payments", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writer-thread", action=argparse.BooleanOptionalAction, default=None,
                        help="wait for the disk in a worker thread (default: as `devnet up` decides, only "
                             "when there are at least as many cores as peers)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    cost = sigcost.measure(repeats=5, n=1000)
    rows = run(args.peers, args.payments, args.concurrency, args.seed, args.writer_thread)
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "sign_us": cost.sign_us,
                          "verify_us": cost.verify_us}))
        return
    print(f"CPU per payment as the network grows: {args.payments} payments per size, {args.concurrency} "
          f"accounts busy at once, N=4, W=3, one process (pid {os.getpid()})")
    print_table(rows, cost)


if __name__ == "__main__":
    main()
