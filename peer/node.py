"""A peer: membership, broadcast and settlement on one runtime, over one store.

This is the unit the daemon runs on TCP and the simulator runs on in-memory links; the only
differences are the `Links`, the clock, and whether writes are fsynced from a thread.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from crypto.errors import DecodeError
from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, PeerRecord
from gossip.broadcast import Broadcast, BroadcastConfig, Verdict
from gossip.links import Links
from gossip.membership import Membership, MembershipConfig
from gossip.runtime import Runtime
from peer.epochs import (
    BROADCAST_KINDS,
    EPOCH_MESSAGE_TYPES,
    EpochChanged,
    EpochConfig,
    EpochManager,
    load_chain,
)
from peer.equivocation import EquivocationBook
from peer.gateway import CERTIFIED, FAILED, SETTLED, GatewayConfig, Payment, PaymentEvent
from peer.genesis import Genesis
from peer.handoff import HandoffComplete, HandoffConfig
from peer.lookup import MESSAGE_TYPES as LOOKUP_TYPES
from peer.lookup import Lookup, PaymentReported
from peer.settlement import MESSAGE_TYPES, Settlement, StatusAnswer
from peer.sync import SyncConfig
from peer.wire import payload_kind
from store.db import Batch, Store
from store.group_commit import GroupCommitWriter

_RANK = {"pending": 0, CERTIFIED: 1, SETTLED: 2, FAILED: 3}
RANK = _RANK


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 0
    api_port: int = 0
    seeds: list[tuple[str, int]] = field(default_factory=list)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    broadcast: BroadcastConfig = field(default_factory=BroadcastConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    handoff: HandoffConfig = field(default_factory=HandoffConfig)
    epochs: EpochConfig = field(default_factory=EpochConfig)
    fsync: bool = True
    writer_thread: bool = True
    flush_delay: float = 0.0


class Node:
    def __init__(self, key: SigningKey, genesis: Genesis, store: Store, links: Links, config: NodeConfig,
                 *, rng: random.Random | None = None, settlement_class: type[Settlement] = Settlement,
                 wall: Callable[[], float] = time.time) -> None:
        self.key = key
        self.id = key.public
        self.genesis = genesis
        self.store = store
        self.links = links
        self.config = config
        rng = rng or random.Random()
        stored = store.get_meta("incarnation")
        incarnation = (stored + 1) if isinstance(stored, int) else 0
        seeds = [s for s in config.seeds if s != (config.host, config.port)]
        # The chain of epoch certificates this peer stored; ownership is that of its head epoch.
        self.chain = load_chain(genesis, store)
        # The committee membership keeps places for: the current one and, until `run` knows whether
        # this peer still takes accounts over from it, the previous one (`_follow_committee`).
        committee = set(self.chain.current.members)
        previous = self.chain.committee(self.chain.epoch - 1) if self.chain.epoch > 0 else None
        if previous is not None:
            committee.update(previous.members)
        committee = frozenset(committee)
        # Stored records are redialled after a restart. Only committee members' are kept (an
        # outsider's record is never stored; a database written before that rule may hold some:
        # they are deleted once the writer runs).
        self._stale_records = Batch()
        for peer_id, raw in store.peers():
            if peer_id not in committee:
                self._stale_records.delete_peer(peer_id)
                continue
            try:
                record = PeerRecord.decode(raw)
            except DecodeError:
                continue
            if peer_id != self.id and (record.host, record.port) not in seeds:
                seeds.append((record.host, record.port))
        self.membership = Membership(key, genesis.network_id, config.host, config.port, committee=committee,
                                     api_port=config.api_port, incarnation=incarnation,
                                     seeds=seeds, config=config.membership, rng=rng)
        self.settlement = settlement_class(key, genesis, store, alive=self.membership.alive, rng=rng,
                                           gateway_config=config.gateway, sync_config=config.sync,
                                           chain=self.chain, handoff_config=config.handoff)
        self.epochs = EpochManager(key, genesis, store, self.chain, self.settlement, alive=self.membership.alive,
                                   clock=trio.current_time, wall=wall, rng=rng, config=config.epochs)
        self.broadcast = Broadcast(genesis.network_id, self.membership.alive, self.id,
                                   observers=self.membership.outsider_ids, trusted=self.membership.is_committee,
                                   validate=self._validate_broadcast, config=config.broadcast, rng=rng)
        self.writer = GroupCommitWriter(store, sync=config.fsync, in_thread=config.writer_thread,
                                        flush_delay=config.flush_delay)
        self.runtime = Runtime(links, self.membership, self.broadcast, writer=self.writer, store=store)
        self.runtime.add_service(self.settlement, MESSAGE_TYPES)
        self.runtime.add_service(self.epochs, EPOCH_MESSAGE_TYPES)
        self.runtime.subscribe(self.settlement.on_event)
        self.runtime.subscribe(self.epochs.on_event)
        self.runtime.subscribe(self._on_event)
        self.lookup = Lookup(self.settlement.ledger)
        self.runtime.add_service(self.lookup, LOOKUP_TYPES)
        self.equivocations = EquivocationBook(self.settlement.ledger)
        self.runtime.subscribe(self.equivocations.on_event)
        self._reports: dict[bytes, tuple[dict[bytes, PaymentReported], set[bytes], trio.Event]] = {}
        self.epochs.drain = self._perform_cores
        self._latest: dict[bytes, PaymentEvent] = {}
        # order id -> callbacks (a dict as an ordered set: removing one is O(1) however many watch);
        # a callback returning True is done and removed
        self._watchers: dict[bytes, dict[Callable[[PaymentEvent], bool], None]] = defaultdict(dict)
        # order id -> the answer tables of every caller waiting on it (callers may overlap)
        self._status_answers: dict[bytes, list[dict[bytes, int]]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.writer.run)
            if len(self._stale_records):
                self.writer.submit(self._stale_records)
            now = trio.current_time()
            self.settlement.start(now)
            self.epochs.start(now)
            self._follow_committee()
            await nursery.start(self.runtime.run)
            task_status.started()

    # ---- epochs --------------------------------------------------------------------------------
    def _validate_broadcast(self, payload: bytes) -> Verdict:
        """Route a broadcast to the core that owns its kind: certificates, or epoch messages."""
        kind = payload_kind(payload)
        if kind == Certificate.KIND:
            return self.settlement.validate_broadcast(payload)
        if kind in BROADCAST_KINDS:
            return self.epochs.validate_broadcast(payload)
        return Verdict.REJECT

    def _perform_cores(self) -> None:
        """Perform what an API call into the epoch manager asked for (the seal goes first)."""
        self.runtime.perform(self.settlement.out.drain())
        self.runtime.perform(self.epochs.out.drain())

    def set_committee(self, ids: frozenset[bytes]) -> None:
        """The committee changed (an epoch change): membership, broadcast and the links follow."""
        self.membership.set_committee(ids)
        self.runtime.perform(self.membership.out.drain())

    def _follow_committee(self) -> None:
        """Membership keeps the current committee's places, and the previous one's while this peer
        still takes accounts over from it."""
        ids = set(self.chain.current.members)
        handoff = self.settlement.handoff
        for epoch in handoff.incomplete:
            previous = self.chain.committee(epoch - 1)
            if previous is not None:
                ids.update(previous.members)
        self.set_committee(frozenset(ids))

    # ---- clients -------------------------------------------------------------------------------
    def submit(self, order: Order) -> Payment:
        """Start or join a payment as its gateway (raises `OrderRejected`, `GatewayFull`)."""
        try:
            payment = self.settlement.submit(order, trio.current_time())
        finally:
            self.runtime.perform(self.settlement.out.drain())
        return payment

    def watch(self, order_id: bytes, callback: Callable[[PaymentEvent], bool]) -> None:
        """Call `callback(event)` on each status change of a payment until it returns True."""
        self._watchers[order_id][callback] = None

    def unwatch(self, order_id: bytes, callback: Callable[[PaymentEvent], bool]) -> None:
        callbacks = self._watchers.get(order_id)
        if callbacks is not None and callbacks.pop(callback, False) is None and not callbacks:
            del self._watchers[order_id]

    async def wait(self, order_id: bytes, status: str, timeout: float) -> PaymentEvent | None:
        """Wait until the payment reaches `status` (or fails); None on timeout."""
        event = self.current(order_id)
        if event is not None and _RANK[event.status] >= _RANK[status]:
            return event
        reached = trio.Event()
        found: list[PaymentEvent] = []

        def on_event(ev: PaymentEvent) -> bool:
            if _RANK[ev.status] >= _RANK[status]:
                found.append(ev)
                reached.set()
                return True
            return False

        self.watch(order_id, on_event)
        try:
            with trio.move_on_after(timeout):
                await reached.wait()
        finally:
            self.unwatch(order_id, on_event)
        return found[0] if found else None

    def current(self, order_id: bytes) -> PaymentEvent | None:
        """The latest status this peer knows as the payment's gateway."""
        p = self.settlement.gateway.lookup(order_id)
        if p is not None:
            return p.event()
        return self._latest.get(order_id)

    def _on_event(self, event: object) -> None:
        kind = type(event)
        if kind is PaymentEvent:
            self._latest[event.order_id] = event
            if len(self._latest) > 20_000:
                self._latest.pop(next(iter(self._latest)))
            callbacks = self._watchers.get(event.order_id)
            if callbacks:
                remaining = {cb: None for cb in list(callbacks) if not cb(event)}
                if remaining:
                    self._watchers[event.order_id] = remaining
                else:
                    self._watchers.pop(event.order_id, None)
        elif kind is StatusAnswer:
            for answers in self._status_answers.get(event.order_id, ()):
                answers[event.src] = event.sides
        elif kind is PaymentReported:
            waiting = self._reports.get(event.order_id)
            if waiting is not None and event.src in waiting[1]:
                waiting[0][event.src] = event
                if len(waiting[0]) == len(waiting[1]):
                    waiting[2].set()
        elif kind is EpochChanged:
            self._follow_committee()
        elif kind is HandoffComplete:
            self.epochs.on_handoff_complete(event)
            self._follow_committee()

    async def applied_by(self, order_id: bytes, owners: tuple[bytes, ...], timeout: float) -> dict[bytes, int]:
        """Ask owners which sides of a payment they applied (for `settled` away from the gateway)."""
        answers: dict[bytes, int] = {}
        tables = self._status_answers.setdefault(order_id, [])
        tables.append(answers)
        try:
            self.settlement.query_status(order_id, owners)
            self.runtime.perform(self.settlement.out.drain())
            with trio.move_on_after(timeout):
                while len(answers) < len(owners):
                    await trio.sleep(0.01)
        finally:
            # By identity: another caller's table may hold equal answers and must stay.
            tables[:] = [t for t in tables if t is not answers]
            if not tables:
                self._status_answers.pop(order_id, None)
        return answers

    async def find_payment(self, order_id: bytes, peers: tuple[bytes, ...], timeout: float) -> dict[bytes, PaymentReported]:
        """Ask `peers` what they know of a payment this peer has no record of (peer/lookup.py);
        the answers that came within `timeout`, by peer. One lookup per payment id at a time."""
        asked = {p for p in peers if p != self.id}
        running = self._reports.get(order_id)
        if running is not None:  # another client asks the same: share that lookup
            with trio.move_on_after(timeout):
                await running[2].wait()
            return dict(running[0])
        if not asked:
            return {}
        answers: dict[bytes, PaymentReported] = {}
        done = trio.Event()
        self._reports[order_id] = (answers, asked, done)
        try:
            self.lookup.ask(order_id, tuple(asked))
            self.runtime.perform(self.lookup.out.drain())
            with trio.move_on_after(timeout):
                await done.wait()
        finally:
            self._reports.pop(order_id, None)
        return answers


    def certificate(self, order_id: bytes) -> Certificate | None:
        return self.settlement.payment(order_id)[1]
