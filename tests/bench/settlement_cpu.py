"""CPU per settled payment, deterministic: the bank network under MockClock, no faults, no epoch
change in progress. Compare two trees by running this file from each (PYTHONPATH=<tree>).

    python -m tests.bench.settlement_cpu [--payments 1000]

Simulated time never runs out, so a loaded machine changes the CPU figure (caches, frequency) but
never makes the run fail; run it a few times and alternate between trees.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import trio
from trio.testing import MockClock

from crypto.messages import Order
from tests.sim.bank import BankNetwork
from tests.sim.network import LinkProfile

ACCOUNTS = 100


async def _run(payments: int) -> float:
    bank = BankNetwork(seed=7, peers=5, accounts=ACCOUNTS, profile=LinkProfile(latency=(0.001, 0.002)))
    rng = random.Random(7)
    publics = [k.public for k in bank.keys]
    per = math.ceil(payments / ACCOUNTS)
    orders = [[Order.create(k, bank.network_id, publics[(i + 1 + rng.randrange(len(publics) - 1)) % len(publics)],
                            1 + rng.randrange(50), seq, "bench") for seq in range(per)]
              for i, k in enumerate(bank.keys)]
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            await trio.sleep(5)
            nodes = [p.node for p in bank.members]
            cpu = time.process_time()

            async def account(i: int) -> None:
                node = nodes[i % len(nodes)]
                for order in orders[i]:
                    node.submit(order)
                    event = await node.wait(order.id, "settled", 60)
                    if event is None or event.status != "settled":
                        raise RuntimeError(f"payment not settled: {event}")

            async with trio.open_nursery() as load:
                for i in range(ACCOUNTS):
                    load.start_soon(account, i)
            used = time.process_time() - cpu
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    return used / (per * ACCOUNTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1000)
    args = parser.parse_args()
    per = trio.run(_run, args.payments, clock=MockClock(autojump_threshold=0))
    print(f"{per * 1e3:.3f} ms CPU per settled payment ({args.payments} payments, 5 peers, MockClock)")


if __name__ == "__main__":
    main()
