"""The settlement service: one peer's owner, gateway and sync roles over the ledger (sans-IO).

It takes settlement messages and time, and returns effects: messages, durable writes with the
messages that must wait for them, broadcasts, and payment events. The runtime drives it exactly
like the gossip cores, in the daemon and in simulation alike.

Epochs: ownership is that of the current epoch of the `chain` (shared with the epoch manager,
peer/epochs.py, which calls `enter_epoch` when it accepts a certificate). Certificates of any known
epoch are checked against their own epoch's committee; one of an epoch not known yet is parked and
retried once the chain has caught up. A certificate delivered to a peer that owned one of its
sides in an earlier epoch, but no longer does, is forwarded to the current owners of that side
(docs/protocol.md 11.6). The handoff (peer/handoff.py) shares this service's outbox.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from crypto.errors import DecodeError
from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from crypto.schema import Message
from gossip.broadcast import Delivered, Verdict
from gossip.effects import Notify, Outbox, Penalize, Persist, Send
from gossip.limits import TokenBucket
from peer.certify import CertificateChecker, CertificateError, UnknownEpoch
from peer.committee import Committee
from peer.epoch_chain import Chain
from peer.equivocation import ConflictSeen
from peer.gateway import Gateway, GatewayConfig, Payment
from peer.genesis import Genesis
from peer.handoff import Handoff, HandoffConfig
from peer.ledger import Ledger
from peer.sync import Sync, SyncConfig
from peer.voting import decide
from peer.wire import (
    AccountReport,
    AEAccounts,
    AEDigest,
    Applied,
    CertBatch,
    CertDelivery,
    CertFetch,
    CertRange,
    CreditsReply,
    CreditsRequest,
    HandoffAccounts,
    HandoffChunk,
    HandoffPull,
    Refusal,
    Refuse,
    StatusQuery,
    StatusReply,
    VoteReply,
    VoteRequest,
    payload_kind,
)
from store.db import Batch, Store

MESSAGE_TYPES = (VoteRequest, VoteReply, Refusal, CertDelivery, Applied, CertRange, CertBatch, CertFetch,
                 AEDigest, AEAccounts, CreditsRequest, CreditsReply, StatusQuery, StatusReply,
                 HandoffPull, HandoffAccounts, HandoffChunk, AccountReport)
PARKED = 1024  # certificates of epochs not known yet, kept until the chain catches up
FORWARDED = 50_000  # certificates already forwarded to their current owners (once each)
# Requests that make this peer read its store and answer at length: only committee members (of this
# epoch or the one before) may send them, each at most this many per second (with this burst).
SYNC_REQUESTS = (CertRange, CertFetch, CreditsRequest, AEDigest, AEAccounts)
SYNC_RATE, SYNC_BURST = 100.0, 1000.0


@dataclass(frozen=True, slots=True)
class CertApplied:
    """Notification: this peer durably-queued the application of a certificate's sides."""

    cert: Certificate
    sides: int


@dataclass(frozen=True, slots=True)
class PaymentTrace:
    """Notification, only while `Settlement.trace` is on (debug logging): this peer received an
    order as its gateway (`what` = "received"), or voted for it or refused it as an owner."""

    what: str  # received | voted | refused
    order: Order
    src: bytes | None = None  # who asked for the vote
    detail: str = ""


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
    handoff_class: ClassVar[type[Handoff]] = Handoff

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
        chain: Chain | None = None,
        handoff_config: HandoffConfig | None = None,
    ) -> None:
        self.key = key
        self.me = key.public
        self.genesis = genesis
        self.network_id = genesis.network_id
        self.chain = chain if chain is not None else Chain.from_genesis(genesis)
        self.committee: Committee = self.chain.current
        self.epoch = self.committee.epoch
        self.ring = self.committee.ring
        self.quorum = self.committee.quorum
        self.store = store
        self.out = Outbox()
        self.rng = rng or random.Random()
        self.ledger = Ledger(store, self.ring, self.me)
        self.checker = CertificateChecker(self.network_id, self.chain.committee,
                                          own_vote=self._own_vote, self_id=self.me)
        self._alive = alive
        # Set by the epoch manager: compare epoch chains with a peer (None: any live peer).
        self.sync_epochs: Callable[[bytes | None], None] = lambda peer: None
        self.gateway = Gateway(self.me, self.network_id, self.ring, self.quorum, self.checker, self.out,
                               gateway_config, alive=self._is_alive, epoch=self.epoch,
                               committee_of=self.chain.committee, sync_epochs=self._sync_epochs)
        self.sync = Sync(self.ledger, self.out, self.rng, alive, self._apply_pulled, sync_config,
                         credits_listed=self._credits_listed)
        self.handoff = self.handoff_class(
            self.me, self.network_id, self.ledger, store, self.chain, self.out, alive=alive,
            apply=self._apply_handoff_cert, need=self._need_from, signature_ok=self._signature_ok,
            later_epoch=self._sync_epochs, config=handoff_config)
        self._verified_orders: OrderedDict[bytes, None] = OrderedDict()
        self._decoded: OrderedDict[bytes, Certificate] = OrderedDict()  # broadcast payload -> cert
        self._parked: OrderedDict[bytes, tuple[Certificate, bytes | None]] = OrderedDict()
        self._forwarded: OrderedDict[bytes, None] = OrderedDict()
        self.trace = False  # PaymentTrace notifications for debug logs (off: no cost per payment)
        self.counters = {"votes": 0, "refusals": 0, "certs_applied": 0, "certs_invalid": 0,
                         "certs_forwarded": 0, "certs_parked": 0, "sync_refused": 0}
        self._sync_budget: dict[bytes, TokenBucket] = {}  # committee members only: bounded
        self._now = 0.0  # time of the latest input; events arrive within a handle/tick call

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._now = now
        self.ledger.load()
        batch = self.ledger.genesis_batch(self.genesis)
        if batch is not None:
            self.out.add(Persist(batch))
        self.sync.start(now)
        self.handoff.load(now)
        # Waiting debits whose gap was not closed before the restart: ask again.
        for sender, waiting in self.ledger.waiting.items():
            state = self.ledger.account(sender)
            self.sync.need(sender, state.next_seq, min(waiting), now)

    def next_deadline(self) -> float:
        if self.out.effects:
            return float("-inf")  # effects another core caused here (an epoch change): perform them now
        return min(self.gateway.next_deadline(), self.sync.next_deadline(), self.handoff.next_deadline())

    def tick(self, now: float) -> None:
        self._now = now
        self.gateway.tick(now)
        self.sync.tick(now)
        self.handoff.tick(now)

    # ---- epochs ----------------------------------------------------------------------------------
    def enter_epoch(self, batch: Batch, then: tuple[object, ...], now: float) -> None:
        """The chain was extended: seal and move to its head epoch (docs/protocol.md 11.2).

        `batch` holds the certificate (from the epoch manager); it is written before anything this
        step causes, and `then` follows once it is durable. From this call on, no vote names an
        earlier epoch.
        """
        self._now = now
        self.out.add(Persist(batch, then))
        new = self.chain.current
        self.committee, self.epoch, self.ring, self.quorum = new, new.epoch, new.ring, new.quorum
        self.ledger.set_ring(new.ring)
        self.sync.set_ring(new.ring)
        self.gateway.set_committee(new, now)
        for alloc in self.genesis.allocations:
            if self.ledger.owns(alloc.account):
                self.ledger.init_account(alloc.account, alloc.amount, batch)  # once per database
        self.handoff.begin(new.epoch, now, batch)
        parked = list(self._parked.values())
        self._parked.clear()
        for cert, src in parked:
            try:
                self._on_cert(cert, src, now, ack=False)
            except CertificateError:
                continue  # counted, or parked again, by _on_cert

    def _sync_epochs(self, peer: bytes | None) -> None:
        self.sync_epochs(peer)

    # ---- messages --------------------------------------------------------------------------------
    def handle(self, src: bytes, msg: Message, now: float) -> None:
        self._now = now
        kind = type(msg)
        if kind in SYNC_REQUESTS and not self._may_sync(src, now):
            return
        if kind is VoteRequest:
            self._on_vote_request(src, msg.order, now)
        elif kind is VoteReply:
            self.gateway.on_vote(src, msg.vote, now)
        elif kind is Refusal:
            self.gateway.on_refusal(src, msg, now)
        elif kind is CertDelivery:
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
        elif kind is HandoffChunk:
            self.handoff.on_chunk(src, msg, now)
        elif kind is HandoffPull:
            self.handoff.on_pull(src, msg, now)
        elif kind is AccountReport:
            self.handoff.on_report(src, msg, now)
        elif kind is HandoffAccounts:
            self.handoff.on_accounts(src, msg, now)
        else:
            raise TypeError(f"settlement does not handle {kind.__name__}")

    def _on_vote_request(self, src: bytes, order: Order, now: float) -> None:
        batch = Batch()
        handoff = self.handoff
        decision = decide(self.ledger, self.key, self.network_id, self.epoch, order, batch,
                          self._signature_ok, handoff.pending if handoff.incomplete else None)
        if decision.catch_up is not None:
            sender, have, upto = decision.catch_up
            self.sync.need(sender, have, upto, now)
        if self.trace:
            what = "voted" if decision.vote is not None else "refused"
            detail = "" if decision.refuse is None else f"{decision.refuse.name.lower()}: {decision.detail[:120]}"
            self.out.add(Notify(PaymentTrace(what, order, src, detail)))
        if decision.vote is not None:
            self.counters["votes"] += 1
            # Durable before it leaves: also for a repeated vote, whose lock may still be in flight.
            self.out.add(Persist(batch, (Send(src, VoteReply(decision.vote)),)))
            return
        assert decision.refuse is not None
        self.counters["refusals"] += 1
        if decision.refuse is Refuse.BAD_SIGNATURE:
            self.out.add(Penalize(src, 2, "relayed an order with a bad signature"))
        elif decision.refuse is Refuse.CONFLICT:
            self.out.add(Notify(ConflictSeen(order, decision.evidence)))  # possible equivocation
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
        self._check(cert, src)
        if ack and src is not None and self.epoch > 0:
            self._forward(cert, src)  # the sides this peer owned before but no longer does
        if not mine:
            return
        batch = Batch()
        then = self._apply_into(cert, src, batch, now, ack=ack)
        self.out.add(Persist(batch, tuple(then)))

    def _check(self, cert: Certificate, src: bytes | None) -> None:
        try:
            self.checker.check(cert)
        except UnknownEpoch:
            self._park(cert, src)
            raise
        except CertificateError:
            self.counters["certs_invalid"] += 1
            raise

    def _apply_into(self, cert: Certificate, src: bytes | None, batch: Batch, now: float, *,
                    ack: bool, gap_peer: bytes | None = None) -> list[object]:
        """Apply a checked certificate's sides this peer owns into `batch`; the follow-ups."""
        oid = cert.order.id
        result = self.ledger.apply(cert, batch)
        then: list[object] = []
        if ack and src is not None and result.sides:
            then.append(Send(src, Applied(oid, result.sides)))
        for applied in result.newly:
            self.counters["certs_applied"] += 1
            then.append(Notify(CertApplied(applied, self._my_sides(applied.order))))
        if result.gap is not None:
            sender, have, upto = result.gap
            self.sync.need(sender, have, upto, now, prefer=src, peer=gap_peer)
        if self.handoff.handoffs:
            self.handoff.touch(cert.order.sender)
            self.handoff.touch(cert.order.recipient)
        return then

    def _apply_pulled(self, cert: Certificate, src: bytes) -> None:
        try:
            self._on_cert(cert, src, self._now, ack=False)
        except UnknownEpoch:
            self._sync_epochs(src)
        except CertificateError:
            self.out.add(Penalize(src, 10, "served an invalid certificate"))

    def _apply_handoff_cert(self, cert: Certificate, src: bytes, batch: Batch) -> list[object]:
        """A history certificate from a handoff stream, applied into the stream's batch."""
        mine = self._my_sides(cert.order)
        if mine and self.ledger.applied(cert.order.id) & mine == mine:
            return []
        try:
            self._check(cert, src)
        except UnknownEpoch:
            self._sync_epochs(src)
            return []
        except CertificateError:
            self.out.add(Penalize(src, 10, "handoff stream carried an invalid certificate"))
            return []
        if not mine:
            return []
        return self._apply_into(cert, src, batch, self._now, ack=False, gap_peer=src)

    def _need_from(self, account: bytes, have: int, upto: int, now: float, peer: bytes) -> None:
        self.sync.need(account, have, upto, now, peer=peer)

    def _credits_listed(self, src: bytes, account: bytes, missing: tuple[bytes, ...], last: bool) -> None:
        self.handoff.on_credits_listed(src, account, missing, last)

    def _park(self, cert: Certificate, src: bytes | None) -> None:
        """A certificate whose votes name an epoch not known here yet: keep it, fetch the chain."""
        self.counters["certs_parked"] += 1
        self._parked[cert.order.id] = (cert, src)
        if len(self._parked) > PARKED:
            self._parked.popitem(last=False)
        self._sync_epochs(src)

    def _forward(self, cert: Certificate, src: bytes) -> None:
        """A gateway delivered a certificate to a former owner of one side or both: hand it to the
        current owners of the sides this peer owned and no longer does (once per certificate)."""
        oid = cert.order.id
        if oid in self._forwarded:
            return
        before = (self.chain.committee(self.epoch - 1), self.chain.committee(cert.votes[0].epoch))
        targets: set[bytes] = set()
        for account in (cert.order.sender, cert.order.recipient):
            now_owners = self.ring.owners(account)
            if self.me in now_owners:
                continue  # a side this peer still owns: it applies it itself
            if any(c is not None and c.epoch < self.epoch and self.me in c.owners(account) for c in before):
                targets.update(now_owners)
        targets.discard(self.me)
        if not targets:
            return
        self._forwarded[oid] = None
        if len(self._forwarded) > FORWARDED:
            self._forwarded.popitem(last=False)
        self.counters["certs_forwarded"] += 1
        delivery = CertDelivery(cert)
        for owner in sorted(targets):
            self.out.send(owner, delivery)
        self._sync_epochs(src)

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
            self._check(cert, None)
        except UnknownEpoch:
            return Verdict.IGNORE  # parked; valid or not, we cannot tell until the chain catches up
        except CertificateError:
            return Verdict.REJECT
        self._decoded[payload] = cert
        if len(self._decoded) > 1024:
            self._decoded.popitem(last=False)
        return Verdict.ACCEPT

    def on_event(self, event: object) -> None:
        """Runtime subscription: certificates that arrive by broadcast get applied."""
        if type(event) is Delivered and payload_kind(event.payload) == Certificate.KIND:
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
        if self.trace:
            self.out.add(Notify(PaymentTrace("received", order)))
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

    def _may_sync(self, src: bytes, now: float) -> bool:
        """Sync requests come from co-owners: committee members, never outsiders (an outsider's
        39-byte request made this peer read a whole account's history, and its digests left state
        behind per key), and each member within a budget (a Byzantine member's flood saturated a core)."""
        previous = self.chain.committee(self.epoch - 1) if self.epoch > 0 else None
        if src not in self.committee.members and (previous is None or src not in previous.members):
            self.counters["sync_refused"] += 1
            return False
        bucket = self._sync_budget.get(src)
        if bucket is None:
            bucket = self._sync_budget[src] = TokenBucket(SYNC_RATE, SYNC_BURST, now)
        if not bucket.take(now):
            self.counters["sync_refused"] += 1
            return False
        return True

    def _is_alive(self, peer: bytes) -> bool:
        return peer == self.me or peer in self._alive()

    def committee_of(self, epoch: int) -> Committee | None:
        """The committee of `epoch`, if this peer knows it."""
        return self.chain.committee(epoch)

    def _own_vote(self, order: Order, epoch: int) -> bytes | None:
        """The signature of the vote this peer stored for exactly this order in `epoch`, if any."""
        lock = self.ledger.locks.get((order.sender, order.seq))
        if lock is None:
            return None
        vote = Vote.decode(lock.vote)
        if vote.order_id != order.id or vote.epoch != epoch or Order.decode(lock.order).sig != order.sig:
            return None
        return vote.sig

