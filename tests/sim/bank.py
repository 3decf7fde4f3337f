"""A settlement network in simulation: real Nodes (with real RocksDB stores) on SimLinks.

Used by the bank-workload tests and the settlement benchmark. Crashing a peer drops its memory
(the Node object) but keeps its store directory; restarting builds a new Node on the same store.

Epochs: `spares` peers beyond the genesis committee run from the start as non-members (they can be
gateways) and can be added to the committee by `change_epoch`, which proposes on one member's
peer and approves on the others', exactly as operators do with `peer epoch propose/approve`.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from trio.testing import MockClock

from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from gossip.broadcast import BroadcastConfig
from gossip.effects import Persist, Send
from gossip.membership import MembershipConfig
from peer.committee import Committee
from peer.epoch_chain import EpochChange, EpochError
from peer.gateway import GatewayConfig, PaymentEvent
from peer.genesis import DEFAULT_VNODES, Allocation, Genesis
from peer.handoff import HandoffConfig
from peer.node import Node, NodeConfig
from peer.settlement import Settlement
from peer.sync import SyncConfig
from peer.wire import VoteReply, VoteRequest
from store.db import Store
from tests.sim.network import LinkProfile, SimNetwork, wait_for

HOST = "sim"
CLIENT = bytes(31) + b"\x01"  # where a client acting as its own gateway "receives" (nobody: dropped)


def derive(seed: int, label: str, index: int) -> SigningKey:
    return SigningKey.from_seed(random.Random(f"{seed}/{label}/{index}").randbytes(32))


@dataclass
class Peer:
    index: int
    key: SigningKey
    path: Path
    node: Node | None = None
    store: Store | None = None
    scope: trio.CancelScope | None = None
    up: bool = False
    boots: int = 0
    settlement_class: type[Settlement] = Settlement

    @property
    def id(self) -> bytes:
        return self.key.public


@dataclass
class BankNetwork:
    seed: int
    peers: int = 8
    spares: int = 0  # peers outside the genesis committee (candidates for epoch changes)
    accounts: int = 60
    replication: int = 4
    quorum: int = 3
    balance: int = 1_000_000
    profile: LinkProfile = field(default_factory=LinkProfile)
    byzantine: dict[int, type[Settlement]] = field(default_factory=dict)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    sync: SyncConfig = field(default_factory=lambda: SyncConfig(ae_interval=2.0))
    handoff: HandoffConfig = field(default_factory=HandoffConfig)
    fsync: bool = False
    writer_thread: bool = False
    flush_delay: float = 0.002
    root: Path | None = None

    def __post_init__(self) -> None:
        self.net = SimNetwork(self.seed, self.profile)
        self._own_root = self.root is None
        self.root = Path(tempfile.mkdtemp(prefix="meshpay-sim-")) if self.root is None else self.root
        self.keys = [derive(self.seed, "account", i) for i in range(self.accounts)]
        self.members = [
            Peer(i, derive(self.seed, "peer", i), self.root / f"peer{i}",
                 settlement_class=self.byzantine.get(i, Settlement))
            for i in range(self.peers + self.spares)
        ]
        self.genesis = Genesis(
            f"sim-{self.seed}", tuple(p.id for p in self.members[:self.peers]), self.replication, self.quorum,
            DEFAULT_VNODES, 2,
            tuple(Allocation(k.public, self.balance) for k in self.keys),
            random.Random(f"{self.seed}/nonce").randbytes(16),
        ).validate()
        self.network_id = self.genesis.network_id
        self.formed: dict[bytes, Certificate] = {}  # every certificate any gateway ever formed
        self._nursery: trio.Nursery | None = None
        trio._core._run._r.seed(self.seed)

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await nursery.start(self.net.run)
        for peer in self.members:
            await self.boot(peer)

    async def boot(self, peer: Peer) -> None:
        assert self._nursery is not None
        if peer.path.exists():
            peer.store = Store.open(peer.path, self.network_id)
        else:
            peer.store = Store.create(peer.path, self.network_id)
        links = self.net.attach(peer.id, HOST, peer.index + 1)
        config = NodeConfig(
            host=HOST, port=peer.index + 1, seeds=[(HOST, 1)] if peer.index else [(HOST, 2)],
            membership=self.membership, broadcast=BroadcastConfig(), gateway=self.gateway, sync=self.sync,
            handoff=self.handoff, fsync=self.fsync, writer_thread=self.writer_thread, flush_delay=self.flush_delay,
        )
        rng = random.Random(f"{self.seed}/peer/{peer.index}/{peer.boots}")
        peer.node = Node(peer.key, self.genesis, peer.store, links, config, rng=rng,
                         settlement_class=peer.settlement_class, wall=lambda: 1_700_000_000 + trio.current_time())
        peer.node.runtime.subscribe(self._observe)
        peer.boots += 1
        peer.up = True
        await self._nursery.start(self._run, peer)

    def _observe(self, event: object) -> None:
        if type(event) is PaymentEvent and event.cert is not None:
            self.formed.setdefault(event.cert.order.id, event.cert)

    async def _run(self, peer: Peer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            peer.scope = scope
            assert peer.node is not None
            await peer.node.run(task_status=task_status)

    def crash(self, peer: Peer) -> None:
        """Lose the peer's memory and in-flight writes; keep what reached its store."""
        assert peer.scope is not None and peer.store is not None
        peer.scope.cancel()
        peer.up = False
        self.net.detach(peer.id)
        peer.store.close()
        peer.store = None
        peer.node = None

    async def restart(self, peer: Peer) -> None:
        await trio.sleep(0)  # let the cancelled node unwind before its store is reopened
        await self.boot(peer)

    def close(self) -> None:
        for peer in self.members:
            if peer.store is not None:
                peer.store.close()
                peer.store = None
        if self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- helpers ------------------------------------------------------------------------------
    def live(self) -> list[Peer]:
        return [p for p in self.members if p.up]

    def committee(self) -> Committee:
        """The committee of the latest epoch any live peer has reached."""
        nodes = [p.node for p in self.members if p.up and p.node is not None]
        return max((n.chain.current for n in nodes), key=lambda c: c.epoch)

    def owners(self, account: bytes) -> list[Peer]:
        ids = set(self.committee().owners(account))
        return [p for p in self.members if p.id in ids]

    def by_id(self, peer_id: bytes) -> Peer:
        return next(p for p in self.members if p.id == peer_id)

    async def change_epoch(self, add: list[Peer], remove: list[Peer], *, timeout: float = 120.0,
                           proposer: Peer | None = None) -> EpochChange:
        """Propose the change on one live member's peer and approve it on the others' (retrying a
        member whose handoff is not complete yet), until the new epoch starts somewhere."""
        committee = self.committee()
        members = [self.by_id(m) for m in committee.members]
        if proposer is None:
            proposer = next(p for p in members if p.up and p.node is not None
                            and p.node.settlement.handoff.complete_through(committee.epoch))
        start = trio.current_time()
        while True:
            try:
                assert proposer.node is not None
                change = proposer.node.epochs.propose([p.id for p in add], [p.id for p in remove],
                                                      note=f"sim {committee.epoch + 1}")
                break
            except EpochError:
                if trio.current_time() - start > timeout:
                    raise
                await trio.sleep(0.5)
        approved = {proposer.id}
        while self.committee().epoch <= committee.epoch:
            if trio.current_time() - start > timeout:
                raise AssertionError(f"epoch {committee.epoch + 1} did not start within {timeout} s "
                                     f"({len(approved)} approvals)")
            for peer in members:
                if peer.id in approved or not peer.up or peer.node is None:
                    continue
                try:
                    peer.node.epochs.approve(change.id)
                    approved.add(peer.id)
                except EpochError:
                    continue  # the proposal has not reached it yet, or its handoff is running
            await trio.sleep(0.5)
        return change

    def vote_directly(self, peer: Peer, order: Order) -> Vote | None:
        """Ask owner `peer` for its vote on `order` as a gateway would (the real vote path; the lock
        is written before the vote is released) and return the vote instead of sending it: a
        client acting as its own gateway."""
        assert peer.node is not None
        settlement = peer.node.settlement
        settlement.handle(CLIENT, VoteRequest(order), trio.current_time())
        effects = settlement.out.drain()
        vote = None
        for effect in effects:
            for then in effect.then if type(effect) is Persist else (effect,):
                if type(then) is Send and type(then.msg) is VoteReply:
                    vote = then.msg.vote
        peer.node.runtime.perform(effects)
        return vote

    def at_epoch(self, epoch: int) -> bool:
        return all(p.node.chain.epoch >= epoch for p in self.members if p.up and p.node is not None)

    def handoffs_complete(self) -> bool:
        committee = self.committee()
        return all(p.node.settlement.handoff.complete_through(committee.epoch)
                   for p in self.members if p.up and p.node is not None and p.id in committee)

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float, step: float = 0.5) -> float | None:
        """Simulated seconds until `predicate()` holds, or None if it did not within `timeout`."""
        return await wait_for(predicate, timeout=timeout, step=step)


def run_on_bank(body: Callable[[BankNetwork], Awaitable[None]], *, settle: float = 3.0, **bank: object) -> None:
    """Run `body(bank)` on a started BankNetwork(**bank) under MockClock, `settle` simulated seconds
    after start (membership converged); then stop it and remove its stores."""
    async def main() -> None:
        network = BankNetwork(**bank)  # type: ignore[arg-type]
        try:
            async with trio.open_nursery() as nursery:
                await network.start(nursery)
                await trio.sleep(settle)
                await body(network)
                nursery.cancel_scope.cancel()
        finally:
            network.close()
    trio.run(main, clock=MockClock(autojump_threshold=0))
