"""The settlement service: one peer's owner, gateway and sync roles over the ledger (sans-IO).

It takes settlement messages and time, and returns effects: messages, durable writes with the
messages that must wait for them, broadcasts, and payment events. The runtime drives it exactly
like the gossip cores, in the daemon and in simulation alike.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crypto.errors import DecodeError
from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from crypto.schema import Message
from gossip.broadcast import Delivered, Verdict
from gossip.effects import Notify, Outbox, Penalize, Persist, Seen, Send
from peer.certify import CertificateChecker, CertificateError
from peer.committee import Committee
from peer.gateway import Gateway, GatewayConfig, Payment
from peer.genesis import Genesis
from peer.ledger import Ledger
from peer.sync import Sync, SyncConfig
from peer.voting import decide
from peer.wire import (
    AEAccounts,
    AEDigest,
    Applied,
    CertBatch,
    CertDelivery,
    CertFetch,
    CertRange,
    CreditsReply,
    CreditsRequest,
    Refusal,
    Refuse,
    StatusQuery,
    StatusReply,
    VoteReply,
    VoteRequest,
)
from store.db import Batch, Store

MESSAGE_TYPES = (VoteRequest, VoteReply, Refusal, CertDelivery, Applied, CertRange, CertBatch, CertFetch,
                 AEDigest, AEAccounts, CreditsRequest, CreditsReply, StatusQuery, StatusReply)


@dataclass(frozen=True, slots=True)
class CertApplied:
    """Notification: this peer durably-queued the application of a certificate's sides."""

    cert: Certificate
    sides: int


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """Notification: an owner told us which sides of a payment it has applied."""

    src: bytes
    order_id: bytes
    sides: int


class OrderRejected(Exception):
    """A client's order refused before any owner saw it (bad signature, wrong network...)."""

    def __init__(self, code: Refuse, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Settlement:
    def __init__(
        self,
        key: SigningKey,
        genesis: Genesis,
        store: Store,
        *,
        alive: Callable[[], list[bytes]],
        rng: random.Random | None = None,
        gateway_config: GatewayConfig | None = None,
        sync_config: SyncConfig | None = None,
    ) -> None:
        self.key = key
        self.me = key.public
        self.genesis = genesis
        self.network_id = genesis.network_id
        self.quorum = genesis.quorum
        self.epoch = 0
        self.committee = Committee.from_genesis(genesis)
        self.ring = self.committee.ring
        self.store = store
        self.out = Outbox()
        self.rng = rng or random.Random()
        self.ledger = Ledger(store, self.ring, self.me)
        self.checker = CertificateChecker(self.network_id, self.committee_of,
                                          own_vote=self._own_vote, self_id=self.me)
        self._alive = alive
        self.gateway = Gateway(self.me, self.network_id, self.ring, self.quorum, self.checker, self.out,
                               gateway_config, alive=self._is_alive)
        self.sync = Sync(self.ledger, self.out, self.rng, alive, self._apply_pulled, sync_config)
        self._verified_orders: OrderedDict[bytes, None] = OrderedDict()
        self._decoded: OrderedDict[bytes, Certificate] = OrderedDict()  # broadcast payload -> cert
        self.counters = {"votes": 0, "refusals": 0, "certs_applied": 0, "certs_invalid": 0}
        self._now = 0.0  # time of the latest input; events arrive within a handle/tick call

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._now = now
        self.ledger.load()
        batch = self.ledger.genesis_batch(self.genesis)
        if batch is not None:
            self.out.add(Persist(batch))
        self.sync.start(now)
        # Waiting debits whose gap was not closed before the restart: ask again.
        for sender, waiting in self.ledger.waiting.items():
            state = self.ledger.account(sender)
            self.sync.need(sender, state.next_seq, min(waiting), now)

    def next_deadline(self) -> float:
        return min(self.gateway.next_deadline(), self.sync.next_deadline())

    def tick(self, now: float) -> None:
        self._now = now
        self.gateway.tick(now)
        self.sync.tick(now)

    # ---- messages --------------------------------------------------------------------------------
    def handle(self, src: bytes, msg: Message, now: float) -> None:
        self._now = now
        kind = type(msg)
        if kind is VoteRequest:
            self._on_vote_request(src, msg.order, now)
        elif kind is VoteReply:
            self.gateway.on_vote(src, msg.vote, now)
        elif kind is Refusal:
            self.gateway.on_refusal(src, msg, now)
        elif kind is CertDelivery:
            # The gateway also broadcasts it; having it now makes that Push a cheap duplicate.
            self.out.add(Seen(msg.cert.encode()))
            self._on_cert(msg.cert, src, now, ack=True)
        elif kind is Applied:
            self.gateway.on_applied(src, msg.order_id, msg.sides, now)
        elif kind is CertRange:
            self.sync.on_cert_range(src, msg)
        elif kind is CertBatch:
            self.sync.on_cert_batch(src, msg, now)
        elif kind is CertFetch:
            self.sync.on_cert_fetch(src, msg)
        elif kind is AEDigest:
            self.sync.on_digest(src, msg, now)
        elif kind is AEAccounts:
            self.sync.on_accounts(src, msg, now)
        elif kind is CreditsRequest:
            self.sync.on_credits_request(src, msg)
        elif kind is CreditsReply:
            self.sync.on_credits_reply(src, msg)
        elif kind is StatusQuery:
            self.out.send(src, StatusReply(msg.order_id, self.ledger.applied(msg.order_id)))
        elif kind is StatusReply:
            self.out.add(Notify(StatusAnswer(src, msg.order_id, msg.sides)))
        else:
            raise TypeError(f"settlement does not handle {kind.__name__}")

    def _on_vote_request(self, src: bytes, order: Order, now: float) -> None:
        batch = Batch()
        decision = decide(self.ledger, self.key, self.network_id, self.epoch, order, batch,
                          self._signature_ok)
        if decision.catch_up is not None:
            sender, have, upto = decision.catch_up
            self.sync.need(sender, have, upto, now)
        if decision.vote is not None:
            self.counters["votes"] += 1
            # Durable before it leaves: also for a repeated vote, whose lock may still be in flight.
            self.out.add(Persist(batch, (Send(src, VoteReply(decision.vote)),)))
            return
        assert decision.refuse is not None
        self.counters["refusals"] += 1
        if decision.refuse is Refuse.BAD_SIGNATURE:
            self.out.add(Penalize(src, 2, "relayed an order with a bad signature"))
        self.out.send(src, Refusal(order.id, int(decision.refuse), decision.detail[:200], decision.evidence))

    # ---- certificates ----------------------------------------------------------------------------
    def _on_cert(self, cert: Certificate, src: bytes | None, now: float, *, ack: bool) -> None:
        oid = cert.order.id
        mine = self._my_sides(cert.order)
        if mine and self.ledger.applied(oid) & mine == mine:
            if ack and src is not None:
                # Already applied; confirm once that write is surely durable.
                self.out.add(Persist(Batch(), (Send(src, Applied(oid, mine)),)))
            return
        try:
            self.checker.check(cert)
        except CertificateError:
            self.counters["certs_invalid"] += 1
            raise
        if not mine:
            return
        batch = Batch()
        result = self.ledger.apply(cert, batch)
        then: list[object] = []
        if ack and src is not None and result.sides:
            then.append(Send(src, Applied(oid, result.sides)))
        for applied in result.newly:
            self.counters["certs_applied"] += 1
            then.append(Notify(CertApplied(applied, self._my_sides(applied.order))))
        self.out.add(Persist(batch, tuple(then)))
        if result.gap is not None:
            sender, have, upto = result.gap
            self.sync.need(sender, have, upto, now, prefer=src)

    def _apply_pulled(self, cert: Certificate, src: bytes) -> None:
        try:
            self._on_cert(cert, src, self._now, ack=False)
        except CertificateError:
            self.out.add(Penalize(src, 10, "served an invalid certificate"))

    def _my_sides(self, order: Order) -> int:
        sides = 0
        if self.ledger.owns(order.sender):
            sides |= 1
        if self.ledger.owns(order.recipient):
            sides |= 2
        return sides

    def validate_broadcast(self, payload: bytes) -> Verdict:
        """Broadcast hook: relay only certificates that verify."""
        try:
            cert = Certificate.decode(payload)
        except DecodeError:
            return Verdict.REJECT
        try:
            self.checker.check(cert)
        except CertificateError:
            self.counters["certs_invalid"] += 1
            return Verdict.REJECT
        self._decoded[payload] = cert
        if len(self._decoded) > 1024:
            self._decoded.popitem(last=False)
        return Verdict.ACCEPT

    def on_event(self, event: object) -> None:
        """Runtime subscription: certificates that arrive by broadcast get applied."""
        if type(event) is Delivered:
            cert = self._decoded.pop(event.payload, None)
            if cert is None:
                try:
                    cert = Certificate.decode(event.payload)
                except DecodeError:
                    return
            try:
                self._on_cert(cert, event.src, self._now, ack=False)
            except CertificateError:
                return

    # ---- clients ---------------------------------------------------------------------------------
    def submit(self, order: Order, now: float) -> Payment:
        """Accept a client's order as its gateway. Raises `OrderRejected` for orders no owner would vote for."""
        self._now = now
        if order.network != self.network_id:
            raise OrderRejected(Refuse.WRONG_NETWORK, "order is signed for another network")
        if order.sender == order.recipient:
            raise OrderRejected(Refuse.SELF_TRANSFER, "sender and recipient are the same account")
        existing = self.gateway.lookup(order.id)
        if (existing is None or existing.status == "failed") and not self._signature_ok(order):
            raise OrderRejected(Refuse.BAD_SIGNATURE, "the order's signature does not verify")
        known = self.store.get_cert(order.id)
        cert = None
        if known is not None:
            try:
                cert = Certificate.decode(known)
            except DecodeError:
                cert = None
        return self.gateway.submit(order, now, known_cert=cert)

    def payment(self, order_id: bytes) -> tuple[str, Certificate | None, Payment | None]:
        """(status, certificate, tracking record) as this peer knows them."""
        p = self.gateway.lookup(order_id)
        if p is not None:
            return p.status, p.cert, p
        raw = self.store.get_cert(order_id)
        if raw is not None:
            return "certified", Certificate.decode(raw), None
        return "unknown", None, None

    def query_status(self, order_id: bytes, owners: tuple[bytes, ...]) -> None:
        for owner in owners:
            self.out.send(owner, StatusQuery(order_id))

    # ---- helpers ---------------------------------------------------------------------------------
    def _signature_ok(self, order: Order) -> bool:
        oid = order.id
        key = oid + order.sig
        if key in self._verified_orders:
            return True
        if not order.signature_valid():
            return False
        self._verified_orders[key] = None
        if len(self._verified_orders) > 100_000:
            self._verified_orders.popitem(last=False)
        return True

    def _is_alive(self, peer: bytes) -> bool:
        return peer == self.me or peer in self._alive()

    def committee_of(self, epoch: int) -> Committee | None:
        """The committee of `epoch`, if this peer knows it."""
        return self.committee if epoch == self.committee.epoch else None

    def _own_vote(self, order: Order, epoch: int) -> bytes | None:
        """The signature of the vote this peer stored for exactly this order in `epoch`, if any."""
        lock = self.ledger.locks.get((order.sender, order.seq))
        if lock is None:
            return None
        vote = Vote.decode(lock.vote)
        if vote.order_id != order.id or vote.epoch != epoch or Order.decode(lock.order).sig != order.sig:
            return None
        return vote.sig

