"""What an idle network costs, and that it does not grow with the accounts a peer holds.

    python -m tests.bench.idle [--accounts 1000 100000] [--seconds 120] [--round-accounts ...] [--json]

Five peers run in this process on simulated time (trio's MockClock: an idle minute passes in
moments, and only CPU is measured), over real RocksDB stores that hold `accounts` accounts already,
written before the peers start (as if a long history of payments had left them there); each peer
loads the accounts it owns at start-up, as a restarted daemon does. Then the network idles: SWIM
probes, anti-entropy rounds (every 2 s per peer) and pull-repair rounds go on as on a real devnet.
Reported per size: the one-time start-up cost, and CPU per peer per second of idle time (as a
percentage of one core), with the anti-entropy rounds run and the repair work they found.

A second table isolates one anti-entropy round between two co-owners holding the same accounts
(1k to 1M, `--round-accounts`): CPU per round when nothing changed, and when 20 accounts changed
on both sides since the last round. Its cost follows what changed, not what is held.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import trio
import trio.testing

from gossip.effects import Outbox, Send
from peer.ledger import Ledger
from peer.ring import Ring
from peer.sync import Sync
from peer.wire import AEDigest
from store.db import Batch, Store
from store.layout import AccountState
from tests.sim.bank import BankNetwork
from tests.sim.network import LinkProfile

PEERS = 5
WRITE_CHUNK = 20_000
NETWORK = bytes(range(32))


@dataclass
class IdleRow:
    accounts: int  # accounts in the network (each held by 4 of the 5 peers)
    held_per_peer: float
    startup_s: float  # CPU seconds to write the stores and start the peers (one time)
    idle_pct_per_peer: float  # CPU per peer while idle, % of one core
    ae_rounds: int
    ae_repairs: int  # credits found missing by anti-entropy (0: replicas agree)
    ae_entries_sent: int  # per-account entries anti-entropy had to exchange


def _fill(bank: BankNetwork, accounts: int, seed: int) -> None:
    """Write `accounts` random accounts into the store of each peer that owns them."""
    ring = Ring(bank.genesis.committee, bank.genesis.replication, bank.genesis.vnodes)
    rng = random.Random(seed)
    stores = {}
    for peer in bank.members:
        stores[peer.id] = Store.create(peer.path, bank.network_id)
    try:
        batches = {pid: Batch() for pid in stores}
        for i in range(accounts):
            account = rng.randbytes(32)
            state = AccountState(balance=100, next_seq=1 + i % 7, credits=1, credit_digest=rng.randbytes(32))
            for owner in ring.owners(account):
                batches[owner].put_account(account, state)
            if (i + 1) % WRITE_CHUNK == 0:
                for pid, batch in batches.items():
                    stores[pid].write(batch, sync=False)
                batches = {pid: Batch() for pid in stores}
        for pid, batch in batches.items():
            stores[pid].write(batch, sync=True)
    finally:
        for store in stores.values():
            store.close()


async def _measure(accounts: int, seconds: float, seed: int) -> IdleRow:
    bank = BankNetwork(seed=seed, peers=PEERS, accounts=4, profile=LinkProfile(latency=(0.0005, 0.002)))
    try:
        cpu0 = time.process_time()
        _fill(bank, accounts, seed)
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            converged = await bank.wait_for(
                lambda: all(len(p.node.membership.alive()) == PEERS - 1 for p in bank.members), timeout=60, step=0.5)
            if converged is None:
                raise RuntimeError("the peers did not converge")
            await trio.sleep(10)  # first anti-entropy rounds fold every loaded account into the digests
            startup = time.process_time() - cpu0
            syncs = [p.node.settlement.sync for p in bank.members]
            rounds0 = sum(s.counters["ae_rounds"] for s in syncs)
            repairs0 = sum(s.counters["ae_repairs"] for s in syncs)
            entries0 = sum(p.node.runtime.sent["AEAccounts"] for p in bank.members)
            held = sum(len(p.node.settlement.ledger.accounts) for p in bank.members) / PEERS
            cpu1 = time.process_time()
            await trio.sleep(seconds)
            cpu = time.process_time() - cpu1
            row = IdleRow(accounts, held, startup, cpu / seconds / PEERS * 100,
                          sum(s.counters["ae_rounds"] for s in syncs) - rounds0,
                          sum(s.counters["ae_repairs"] for s in syncs) - repairs0,
                          sum(p.node.runtime.sent["AEAccounts"] for p in bank.members) - entries0)
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    return row


def run(sizes: list[int], seconds: float, seed: int = 1) -> list[IdleRow]:
    return [trio.run(_measure, n, seconds, seed, clock=trio.testing.MockClock(autojump_threshold=0))
            for n in sizes]


@dataclass
class RoundRow:
    accounts: int  # accounts both co-owners hold
    setup_s: float  # CPU to fold them all into the digests once (start-up)
    quiet_round_us: float  # one round (digest out, digest compared) when nothing changed
    busy_round_us: float  # the same when 20 accounts changed on both sides since the last round


def ae_round(accounts: int, rounds: int = 200, seed: int = 1) -> RoundRow:
    """CPU of one anti-entropy round between two co-owners that hold `accounts` identical accounts."""
    rng = random.Random(seed)
    committee = [rng.randbytes(32) for _ in range(PEERS)]
    ring = Ring(committee, 4, 256)
    a_id, b_id = committee[0], committee[1]
    tmp = tempfile.mkdtemp(prefix="meshpay-ae-round-")
    stores = [Store.create(os.path.join(tmp, name), NETWORK) for name in ("a", "b")]
    gc.disable()  # millions of objects being built: the collector would rescan them again and again
    try:
        ledgers = [Ledger(stores[0], ring, a_id), Ledger(stores[1], ring, b_id)]
        shared = []
        while len(shared) < accounts:
            account = rng.randbytes(32)
            if ring.owns(a_id, account) and ring.owns(b_id, account):
                shared.append(account)
                digest = rng.randbytes(32)
                for ledger in ledgers:
                    ledger.accounts[account] = AccountState(100, 1, 1, digest)
                    ledger.changed.add(account)
        outs = [Outbox(), Outbox()]
        syncs = [Sync(ledgers[i], outs[i], random.Random(i), lambda: [a_id, b_id], lambda c, p: None)
                 for i in range(2)]
        now = 1000.0
        for sync in syncs:
            sync.start(now - 10.0)
        cpu = time.process_time()
        for sync in syncs:
            sync._buckets(a_id if sync is syncs[1] else b_id)  # the start-up fold of every account
        setup = time.process_time() - cpu
        gc.collect()
        gc.freeze()
        gc.enable()

        def one_round(changes: int) -> None:
            nonlocal now
            now += 2.0
            for account in rng.sample(shared, changes):
                for ledger in ledgers:
                    ledger.accounts[account].credits += 1
                    ledger.changed.add(account)
            syncs[0].tick(now)
            digest = next(e.msg for e in outs[0].drain() if isinstance(e, Send) and isinstance(e.msg, AEDigest))
            syncs[1].on_digest(a_id, digest, now)
            replies = outs[1].drain()
            if replies:
                raise AssertionError(f"identical replicas answered with {replies[:1]}")

        # The first round after start-up finishes the fold (hashing every bucket once): a one-time
        # cost that belongs with the start-up, not with the rounds that follow every 2 s.
        cpu = time.process_time()
        one_round(0)
        setup += time.process_time() - cpu
        times = []
        for changes in (0, 20):
            cpu = time.process_time()
            for _ in range(rounds):
                one_round(changes)
            times.append((time.process_time() - cpu) / rounds * 1e6)
        return RoundRow(accounts, setup, times[0], times[1])
    finally:
        gc.unfreeze()
        gc.enable()
        for store in stores:
            store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def print_rounds(rows: list[RoundRow]) -> None:
    print(f"  {'accounts':>9} {'start-up fold':>13} {'round, nothing changed':>22} {'round, 20 changed':>17}")
    for r in rows:
        print(f"  {r.accounts:>9,} {r.setup_s:>11.2f} s {r.quiet_round_us:>19.0f} us {r.busy_round_us:>14.0f} us")


def print_table(rows: list[IdleRow], seconds: float) -> None:
    print(f"  {'accounts':>9} {'held/peer':>9} {'start-up CPU':>12} {'idle CPU/peer':>13} {'AE rounds':>9} "
          f"{'repairs':>7} {'AE replies':>10}   ({seconds:.0f} simulated s idle)")
    for r in rows:
        print(f"  {r.accounts:>9,} {r.held_per_peer:>9,.0f} {r.startup_s:>10.1f} s {r.idle_pct_per_peer:>12.3f}% "
              f"{r.ae_rounds:>9} {r.ae_repairs:>7} {r.ae_entries_sent:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--seconds", type=float, default=120.0, help="simulated seconds of idle time")
    parser.add_argument("--round-accounts", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = [ae_round(n, seed=args.seed) for n in args.round_accounts]
    rows = run(args.accounts, args.seconds, args.seed)
    if args.json:
        print(json.dumps({"seconds": args.seconds, "rows": [asdict(r) for r in rows],
                          "rounds": [asdict(r) for r in rounds]}))
        return
    print(f"one anti-entropy round between two co-owners vs accounts they hold (pid {os.getpid()})")
    print_rounds(rounds)
    print(f"idle cost vs accounts held: {PEERS} peers, N=4, simulated time, real RocksDB")
    print_table(rows, args.seconds)


if __name__ == "__main__":
    main()
