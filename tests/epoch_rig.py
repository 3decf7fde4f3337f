"""A few peers' settlement and epoch cores joined by a synchronous in-test router (no event loop,
no clock but `rig.now`), over real RocksDB stores, for exact tests of epoch changes and handoffs.

The router performs effects the way the runtime does: a `Persist` writes its batch, then performs
its follow-ups; a `Send` is encoded, decoded and handed to the destination's core; a `Publish` is
validated and delivered by every other live peer (a perfect broadcast). Tests can drop or rewrite
messages (`rig.drop`), take peers down (`rig.crash`) and bring them back on their stores
(`rig.restart`: memory is lost, the store is reopened), and move time (`rig.advance`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crypto.errors import RemoteProtocolError
from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from crypto.schema import Message, decode_any
from gossip.broadcast import Delivered, Verdict, message_id
from gossip.effects import Notify, Penalize, Persist, Publish, Send
from peer.epoch_chain import EpochApproval, EpochCertificate, EpochChange
from peer.epochs import EpochManager, load_chain
from peer.genesis import Allocation, Genesis
from peer.handoff import Handoff, HandoffConfig
from peer.settlement import Settlement
from peer.wire import CertDelivery
from store.db import Batch, Store

BALANCE = 1_000
REPLICATION, QUORUM, VNODES = 4, 3, 64


def key(label: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"epoch-rig/" + label.encode()).digest())


@dataclass
class Sent:
    src: bytes
    dst: bytes
    msg: Message
    size: int


@dataclass
class RigPeer:
    key: SigningKey
    path: Path
    store: Store
    settlement: Settlement
    epochs: EpochManager

    @property
    def id(self) -> bytes:
        return self.key.public

    @property
    def handoff(self) -> Handoff:
        return self.settlement.handoff


@dataclass
class Rig:
    root: Path
    peers: int = 5
    spares: int = 1
    accounts: int = 12
    handoff_config: HandoffConfig = field(default_factory=HandoffConfig)
    handoff_classes: dict[int, type[Handoff]] = field(default_factory=dict)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.keys = [key(f"peer{i}") for i in range(self.peers + self.spares)]
        self.index = {k.public: i for i, k in enumerate(self.keys)}
        self.account_keys = [key(f"account{i}") for i in range(self.accounts)]
        self.genesis = Genesis("epoch-rig", tuple(k.public for k in self.keys[:self.peers]), REPLICATION, QUORUM,
                               VNODES, 2, tuple(Allocation(k.public, BALANCE) for k in self.account_keys),
                               bytes(16)).validate()
        self.network_id = self.genesis.network_id
        self.nodes: dict[bytes, RigPeer] = {}
        self.down: set[bytes] = set()
        self.sent: list[Sent] = []
        self.penalties: list[tuple[bytes, bytes, str]] = []  # (who penalised, whom, why)
        self.events: list[tuple[bytes, object]] = []
        self.drop: Callable[[bytes, bytes, Message], bool] = lambda src, dst, msg: False
        self.seqs: dict[bytes, int] = {}
        for k in self.keys:
            path = self.root / k.public.hex()[:12]
            self.nodes[k.public] = self._build(k, path, Store.create(path, self.network_id))

    # ---- peers ----------------------------------------------------------------------------------
    def _build(self, k: SigningKey, path: Path, store: Store) -> RigPeer:
        chain = load_chain(self.genesis, store)
        cls = type("RigSettlement", (Settlement,), {"handoff_class": self.handoff_classes.get(self.index[k.public],
                                                                                               Handoff)})
        alive = (lambda me: lambda: [p for p in self.nodes if p != me and p not in self.down])(k.public)
        settlement = cls(k, self.genesis, store, alive=alive, chain=chain, handoff_config=self.handoff_config)
        epochs = EpochManager(k, self.genesis, store, chain, settlement, alive=alive, clock=lambda: self.now,
                              wall=lambda: 1_700_000_000.0 + self.now)
        peer = RigPeer(k, path, store, settlement, epochs)
        settlement.start(self.now)
        epochs.start(self.now)
        return peer

    def peer(self, i: int) -> RigPeer:
        return self.nodes[self.keys[i].public]

    def crash(self, i: int) -> None:
        """The peer stops: nothing it sends or is sent gets through; its memory is lost at restart."""
        self.down.add(self.keys[i].public)

    def restart(self, i: int) -> RigPeer:
        old = self.peer(i)
        old.store.close()
        node = self._build(old.key, old.path, Store.open(old.path, self.network_id))
        self.nodes[old.id] = node
        self.down.discard(old.id)
        self.pump()
        return node

    def close(self) -> None:
        for node in self.nodes.values():
            node.store.close()

    # ---- the router -------------------------------------------------------------------------------
    def pump(self, limit: int = 200_000) -> None:
        for _ in range(limit):
            busy = False
            for pid, node in list(self.nodes.items()):
                for core in (node.settlement, node.epochs):
                    effects = core.out.drain()
                    if effects:
                        busy = True
                        self._perform(pid, effects)
            if not busy:
                return
        raise AssertionError("the rig did not go quiet")

    def _perform(self, pid: bytes, effects: list[object]) -> None:
        queue = deque(effects)
        while queue:
            effect = queue.popleft()
            kind = type(effect)
            if pid in self.down:
                return
            if kind is Persist:
                self.nodes[pid].store.write(effect.batch, sync=False)
                queue.extend(effect.then)
            elif kind is Send:
                self._deliver(pid, effect.dst, effect.msg)
            elif kind is Penalize:
                self.penalties.append((pid, effect.peer_id, effect.reason))
            elif kind is Notify:
                self.events.append((pid, effect.event))
            elif kind is Publish:
                self._broadcast(pid, effect.payload)

    def _deliver(self, src: bytes, dst: bytes, msg: Message) -> None:
        raw = msg.encode()
        self.sent.append(Sent(src, dst, msg, len(raw)))
        if dst in self.down or dst not in self.nodes or self.drop(src, dst, msg):
            return
        node = self.nodes[dst]
        decoded = decode_any(raw)
        core = node.epochs if type(decoded).__name__.startswith("Epoch") else node.settlement
        try:
            core.handle(src, decoded, self.now)
        except RemoteProtocolError as exc:
            self.penalties.append((dst, src, str(exc)))

    def _broadcast(self, src: bytes, payload: bytes) -> None:
        msg = decode_any(payload)
        for pid, node in self.nodes.items():
            if pid == src or pid in self.down or self.drop(src, pid, msg):
                continue
            verdict = node.epochs.validate_broadcast(payload)
            if verdict is Verdict.ACCEPT:
                node.epochs.on_event(Delivered(message_id(self.network_id, payload), payload, 1, src))

    def advance(self, seconds: float, step: float = 0.25) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for pid, node in list(self.nodes.items()):
                if pid in self.down:
                    continue
                for core in (node.settlement, node.epochs):
                    if core.next_deadline() <= self.now:
                        core.tick(self.now)
            self.pump()

    # ---- epochs and payments ------------------------------------------------------------------
    def change(self, add: list[int] = (), remove: list[int] = ()) -> EpochCertificate:
        """An epoch certificate for the next epoch, approved by every current member."""
        chain = self.peer(0).settlement.chain
        current = chain.current
        members = (set(current.members) | {self.keys[i].public for i in add}) - {self.keys[i].public for i in remove}
        change = EpochChange(self.network_id, current.epoch + 1, chain.head_id(), tuple(sorted(members)),
                             REPLICATION, QUORUM, VNODES, current.members[0], 0, "rig")
        keys = {k.public: k for k in self.keys}
        return EpochCertificate(change, tuple(EpochApproval.create(keys[m], self.network_id, change.id)
                                              for m in current.members))

    def enter(self, cert: EpochCertificate, peers: list[int] | None = None) -> None:
        """Hand the certificate to these peers (default: every live one), as a delivered announce."""
        for i in range(len(self.keys)) if peers is None else peers:
            node = self.peer(i)
            if node.id not in self.down and node.settlement.chain.epoch == cert.epoch - 1:
                node.epochs.accept(cert)
        self.pump()

    def owners(self, account: bytes, epoch: int | None = None) -> tuple[bytes, ...]:
        chain = self.peer(0).settlement.chain
        committee = chain.current if epoch is None else chain.committee(epoch)
        assert committee is not None
        return committee.owners(account)

    def pay(self, sender: int, recipient: int, amount: int = 10, *, deliver: bool = True) -> Certificate:
        """A certificate for the sender's next payment, signed by W owners of the current epoch
        (their locks are not involved) and delivered to every current owner of both sides."""
        s, r = self.account_keys[sender], self.account_keys[recipient]
        seq = self.seqs.get(s.public, 0)
        self.seqs[s.public] = seq + 1
        order = Order.create(s, self.network_id, r.public, amount, seq, f"rig {sender}->{recipient} #{seq}")
        epoch = self.peer(0).settlement.chain.epoch
        keys = {k.public: k for k in self.keys}
        votes = tuple(Vote.create(keys[o], self.network_id, order, epoch)
                      for o in self.owners(s.public)[:QUORUM])
        cert = Certificate(order, votes)
        if deliver:
            gateway = self.keys[0].public
            for owner in sorted({*self.owners(s.public), *self.owners(r.public)}):
                self._deliver(gateway, owner, CertDelivery(cert))
            self.pump()
        return cert

    def state(self, i: int, account: bytes) -> tuple | None:
        s = self.peer(i).settlement.ledger.peek(account)
        return None if s is None else (s.balance, s.next_seq, s.credits, s.credit_digest)

    def write(self, i: int, batch: Batch) -> None:
        self.peer(i).store.write(batch, sync=False)
