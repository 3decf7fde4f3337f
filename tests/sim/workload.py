"""A Jepsen-style bank workload for the settlement simulation, and the invariants it checks.

Clients send random transfers through random gateways and retry the very same signed order until it
is certified (switching gateway on each retry, as a wallet would after a timeout). A few accounts
deliberately sign two conflicting orders for one sequence number and race them through different
gateways. Every certificate a client accepts is checked by the client itself against the genesis,
as the wallet does. After the faults heal and the network goes quiet, `check` verifies:

- total supply is unchanged;
- no two certificates exist for one (sender, seq) anywhere;
- every certificate is applied by every live honest owner of both accounts;
- all honest replicas of every account are identical;
- every payment a client saw certified is present.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import trio

from crypto.messages import Certificate, Order
from peer.gateway import GatewayFull
from peer.node import Node
from peer.settlement import OrderRejected, Settlement
from store import layout
from tests.sim.bank import BankNetwork
from wallet.verify import checker_for


@dataclass
class Record:
    certified: dict[bytes, Certificate] = field(default_factory=dict)
    submissions: int = 0
    retries: int = 0
    conflicts_raced: int = 0
    conflicts_certified: int = 0
    anomalies: list[str] = field(default_factory=list)


class Workload:
    def __init__(self, bank: BankNetwork, seed: int, *, conflicting_accounts: int = 4) -> None:
        self.bank = bank
        self.rng = random.Random(f"{seed}/workload")
        self.record = Record()
        g = bank.genesis
        self.checker = checker_for(g)
        n = len(bank.keys)
        self.conflicting = set(range(n - conflicting_accounts, n))

    async def run(self, duration: float, *, rate: float = 0.5) -> None:
        stop = trio.current_time() + duration
        async with trio.open_nursery() as nursery:
            for i in range(len(self.bank.keys)):
                if i in self.conflicting:
                    nursery.start_soon(self._conflicting_client, i, stop)
                else:
                    nursery.start_soon(self._client, i, stop, rate)

    def _gateway(self) -> Node | None:
        live = [p for p in self.bank.members if p.up and p.node is not None]
        return self.rng.choice(live).node if live else None

    async def _client(self, index: int, stop: float, rate: float) -> None:
        key = self.bank.keys[index]
        others = [k.public for j, k in enumerate(self.bank.keys) if j != index]
        seq, spent = 0, 0
        await trio.sleep(self.rng.random() * 2)
        while trio.current_time() < stop:
            budget = self.bank.balance - spent  # a lower bound: incoming credits only add
            amount = self.rng.randint(1, max(1, budget // 50))
            order = Order.create(key, self.bank.network_id, self.rng.choice(others), amount, seq,
                                 f"c{index}s{seq}")
            if await self._until_certified(order, give_up=stop + 120):
                seq += 1
                spent += amount
            await trio.sleep(self.rng.expovariate(rate))

    async def _until_certified(self, order: Order, give_up: float) -> bool:
        """Submit the same signed order until it is certified (or the run is long over)."""
        first = True
        while trio.current_time() < give_up:
            node = self._gateway()
            if node is None:
                await trio.sleep(1)
                continue
            self.record.submissions += 1
            if not first:
                self.record.retries += 1
            first = False
            try:
                node.submit(order)
            except GatewayFull:
                await trio.sleep(0.5)
                continue
            except OrderRejected as exc:
                self.record.anomalies.append(f"honest order rejected: {exc.code.slug}")
                return False
            event = await node.wait(order.id, "certified", timeout=self.rng.uniform(2.0, 6.0))
            if event is None or event.status == "failed":
                if event is not None and event.code in ("conflict", "seq_too_low", "bad_signature"):
                    self.record.anomalies.append(f"honest order failed: {event.code} {event.detail}")
                    return False
                await trio.sleep(self.rng.uniform(0.2, 1.0))
                continue
            return self._accept(order, event.cert)
        return False

    def _accept(self, order: Order, cert: Certificate | None) -> bool:
        if cert is None or cert.order.id != order.id or not self.checker.is_valid(cert):
            self.record.anomalies.append("a gateway reported certified without a valid certificate")
            return False
        self.record.certified[order.id] = cert
        return True

    async def _conflicting_client(self, index: int, stop: float) -> None:
        """Sign two different orders for the same seq and race them through two gateways."""
        key = self.bank.keys[index]
        await trio.sleep(self.rng.uniform(1.0, max(1.5, (stop - trio.current_time()) / 2)))
        a = Order.create(key, self.bank.network_id, self.bank.keys[0].public, 10, 0, "left")
        b = Order.create(key, self.bank.network_id, self.bank.keys[1].public, 20, 0, "right")
        self.record.conflicts_raced += 1
        outcomes: list[Certificate] = []

        async def race(order: Order) -> None:
            node = self._gateway()
            if node is None:
                return
            try:
                node.submit(order)
            except (GatewayFull, OrderRejected):
                return
            event = await node.wait(order.id, "certified", timeout=10)
            if event is not None and event.cert is not None and self.checker.is_valid(event.cert):
                outcomes.append(event.cert)
                self.record.certified[order.id] = event.cert

        async with trio.open_nursery() as nursery:
            nursery.start_soon(race, a)
            nursery.start_soon(race, b)
        if len(outcomes) > 1:
            self.record.anomalies.append("both conflicting orders were certified")
        self.record.conflicts_certified += len(outcomes)


def honest_peers(bank: BankNetwork) -> list:
    return [p for p in bank.members if p.up and p.node is not None and p.settlement_class is Settlement]


def check(bank: BankNetwork, record: Record) -> list[str]:
    """Every invariant violation found (empty when all hold)."""
    problems = list(record.anomalies)
    peers = honest_peers(bank)
    ring = peers[0].node.settlement.ring
    # Every certificate any honest peer stored, and the (sender, seq) slots they use.
    certs: dict[bytes, Certificate] = {}
    for peer in peers:
        for key, raw in peer.store.scan(layout.CERT):
            certs.setdefault(key[1:], Certificate.decode(raw))
    for cert in record.certified.values():
        certs.setdefault(cert.order.id, cert)
    slots: dict[tuple[bytes, int], set[bytes]] = defaultdict(set)
    for oid, cert in certs.items():
        slots[(cert.order.sender, cert.order.seq)].add(oid)
    for (sender, seq), ids in slots.items():
        if len(ids) > 1:
            problems.append(f"{len(ids)} certificates for ({sender.hex()[:8]}, seq {seq})")
    # Every certificate applied by every live honest owner of both sides.
    by_id = {p.id: p for p in peers}
    for oid, cert in certs.items():
        for pid in ring.owners(cert.order.sender):
            peer = by_id.get(pid)
            if peer is not None and not peer.node.settlement.ledger.applied(oid) & layout.APPLIED_DEBIT:
                problems.append(f"owner {peer.index} has not applied the debit of {oid.hex()[:8]}")
        for pid in ring.owners(cert.order.recipient):
            peer = by_id.get(pid)
            if peer is not None and not peer.node.settlement.ledger.applied(oid) & layout.APPLIED_CREDIT:
                problems.append(f"owner {peer.index} has not applied the credit of {oid.hex()[:8]}")
    # Replicas agree; supply is conserved.
    accounts = {a.account for a in bank.genesis.allocations}
    for cert in certs.values():
        accounts.add(cert.order.recipient)
    total = 0
    for account in accounts:
        states = {}
        for pid in ring.owners(account):
            peer = by_id.get(pid)
            if peer is not None:
                state = peer.node.settlement.ledger.peek(account)
                states[peer.index] = None if state is None else (
                    state.balance, state.next_seq, state.credits, state.credit_digest, state.history)
        distinct = set(states.values())
        if len(distinct) > 1:
            problems.append(f"replicas of {account.hex()[:8]} disagree: {states}")
        agreed = next(iter(distinct)) if distinct else None
        if agreed is not None:
            if agreed[0] < 0:
                problems.append(f"account {account.hex()[:8]} ended negative: {agreed[0]}")
            total += agreed[0]
    if total != bank.genesis.total_supply:
        problems.append(f"total supply {total} != genesis {bank.genesis.total_supply}")
    # Every payment a client saw certified is present at the owners.
    for oid in record.certified:
        if oid not in certs or not any(p.store.get_cert(oid) for p in peers):
            problems.append(f"certified payment {oid.hex()[:8]} is missing")
    return problems
