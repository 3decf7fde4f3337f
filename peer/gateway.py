"""The gateway role: take a client's signed order, gather a quorum of votes, certify, deliver.

Any peer is the gateway for the orders its clients hand it. The order first goes to a quorum of
the sender's owners (this peer first when it is one, then owners believed alive, spread by order id);
if their votes have not all come back within a hedge delay (about three times the recent time to
certify), or one of them refuses, it goes to the remaining owners too. Asking only W at first saves
the fourth owner a signature check, a signature and a synced write per payment; the hedge keeps a
slow or dead owner from delaying payments for long. A payment moves
`pending -> certified -> settled`, or `pending -> failed` when the owners refuse it (or stay
silent past the deadline). Every step is bounded: vote requests are re-sent to silent owners a few
times with backoff, deliveries are retried a few times, and the deadline ends the attempt. A client
that submits the same order again joins the payment in flight, or restarts a failed one: it can
only ever produce the same certificate, never a second payment (owners lock `(sender, seq)`).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from crypto.errors import DecodeError
from crypto.messages import Certificate, Order, Vote
from gossip.effects import Notify, Outbox, Penalize, Publish
from peer.certify import CertificateChecker, CertificateError
from peer.ring import Ring
from peer.wire import SIDE_CREDIT, SIDE_DEBIT, CertDelivery, Refusal, Refuse, VoteRequest

PENDING, CERTIFIED, SETTLED, FAILED = "pending", "certified", "settled", "failed"


@dataclass(frozen=True)
class GatewayConfig:
    vote_timeout: float = 1.0
    backoff: float = 1.6
    deadline: float = 20.0
    delivery_timeout: float = 1.0
    max_deliveries: int = 8
    keep_done: int = 20_000  # finished payments answered from memory; older ones from the store
    max_in_flight: int = 20_000
    hedge: bool = True
    hedge_min: float = 0.05
    hedge_max: float = 1.0
    hedge_factor: float = 3.0


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """Notification for clients waiting on a payment."""

    order_id: bytes
    status: str
    cert: Certificate | None = None
    code: str | None = None
    detail: str = ""
    evidence: bytes = b""


@dataclass(slots=True)
class Payment:
    order: Order
    order_id: bytes
    owners_from: tuple[bytes, ...]
    owners_to: tuple[bytes, ...]
    created: float
    status: str = PENDING
    votes: dict[bytes, Vote] = field(default_factory=dict)
    refused: dict[bytes, tuple[Refuse, str, bytes]] = field(default_factory=dict)
    retry: set[bytes] = field(default_factory=set)  # owners that said "try again later"
    cert: Certificate | None = None
    debit_acks: set[bytes] = field(default_factory=set)
    credit_acks: set[bytes] = field(default_factory=set)
    rounds: int = 0
    deliveries: int = 0
    timer: int = 0  # only the latest scheduled timer of a payment counts
    certified_at: float | None = None
    settled_at: float | None = None
    code: str | None = None
    detail: str = ""
    evidence: bytes = b""

    def event(self) -> PaymentEvent:
        return PaymentEvent(self.order_id, self.status, self.cert, self.code, self.detail, self.evidence)


class GatewayFull(Exception):
    """Too many payments in flight at this gateway: the client should back off (HTTP 503)."""


class Gateway:
    def __init__(self, me: bytes, network_id: bytes, ring: Ring, quorum: int, checker: CertificateChecker,
                 out: Outbox, config: GatewayConfig | None = None,
                 alive: Callable[[bytes], bool] | None = None) -> None:
        self.me = me
        self.alive = alive or (lambda peer: True)
        self._certify_ewma: float | None = None
        self.network_id = network_id
        self.ring = ring
        self.quorum = quorum
        self.checker = checker
        self.out = out
        self.config = config or GatewayConfig()
        self.epoch = 0  # the epoch whose votes this gateway gathers
        self.active: dict[bytes, Payment] = {}
        self.done: OrderedDict[bytes, Payment] = OrderedDict()
        self._timers: list[tuple[float, int, bytes]] = []  # (at, timer id, order id)
        self._timer_seq = 0
        self.outcomes: Counter[str] = Counter()

    # ---- client side --------------------------------------------------------------------------
    def lookup(self, order_id: bytes) -> Payment | None:
        return self.active.get(order_id) or self.done.get(order_id)

    def submit(self, order: Order, now: float, *, known_cert: Certificate | None = None) -> Payment:
        """Start (or join) the payment for a signature-checked order."""
        oid = order.id
        existing = self.active.get(oid)
        if existing is not None:
            return existing
        finished = self.done.get(oid)
        if finished is not None and finished.status != FAILED:
            return finished
        if len(self.active) >= self.config.max_in_flight:
            raise GatewayFull(f"{len(self.active)} payments in flight at this gateway")
        self.done.pop(oid, None)
        p = Payment(order, oid, self.ring.owners(order.sender), self.ring.owners(order.recipient), now)
        self.active[oid] = p
        if known_cert is not None:
            self._certify(p, known_cert, now)
            return p
        self._ask_votes(p, now)
        return p

    def abort_pending(self, code: str, detail: str, now: float) -> int:
        """Fail every payment still waiting for votes (shutdown); returns how many."""
        pending = [p for p in self.active.values() if p.status == PENDING]
        for p in pending:
            self._fail(p, code, detail, now)
        return len(pending)

    # ---- owner replies ------------------------------------------------------------------------
    def on_vote(self, src: bytes, vote: Vote, now: float) -> None:
        p = self.active.get(vote.order_id)
        if p is None or p.status != PENDING:
            return
        if vote.voter != src or src not in p.owners_from:
            self.out.add(Penalize(src, 5, "vote from a peer that is not an owner (or for someone else)"))
            return
        if src in p.votes:
            return
        if vote.epoch != self.epoch:
            return  # cast in another epoch: it cannot join this epoch's quorum
        if src != self.me and not vote.signature_valid(self.network_id, p.order.sig):
            self.out.add(Penalize(src, 10, "invalid vote signature"))
            return
        p.votes[src] = vote
        p.retry.discard(src)
        if len(p.votes) >= self.quorum:
            chosen = tuple(sorted(p.votes.values(), key=lambda v: v.voter)[: self.quorum])
            cert = Certificate(p.order, chosen)
            self.checker.remember(cert)  # every vote in it was verified as it arrived
            self._certify(p, cert, now)

    def on_refusal(self, src: bytes, refusal: Refusal, now: float) -> None:
        p = self.active.get(refusal.order_id)
        if p is None or p.status != PENDING or src not in p.owners_from:
            return
        try:
            code = Refuse(refusal.code)
        except ValueError:
            self.out.add(Penalize(src, 2, f"unknown refusal code {refusal.code}"))
            return
        if code is Refuse.ALREADY_FINAL and refusal.evidence:
            try:
                cert = Certificate.decode(refusal.evidence)
                self.checker.check(cert)
            except (DecodeError, CertificateError):
                self.out.add(Penalize(src, 10, "bad certificate offered as evidence"))
                return
            if cert.order.id == p.order_id:
                self._certify(p, cert, now)
            return
        if code.retryable:
            p.retry.add(src)
            if p.rounds == 1 and self.config.hedge:
                self._ask_votes(p, now)
            return
        p.refused[src] = (code, refusal.detail, refusal.evidence)
        p.retry.discard(src)
        if len(p.owners_from) - len(p.refused) < self.quorum:
            self._fail_from_refusals(p, now)
        elif p.rounds == 1 and self.config.hedge:
            self._ask_votes(p, now)  # the first quorum cannot be complete now: ask the others

    def on_applied(self, src: bytes, order_id: bytes, sides: int, now: float) -> None:
        p = self.active.get(order_id) or self.done.get(order_id)
        if p is None or p.status not in (CERTIFIED, SETTLED):
            return
        if sides & SIDE_DEBIT and src in p.owners_from:
            p.debit_acks.add(src)
        if sides & SIDE_CREDIT and src in p.owners_to:
            p.credit_acks.add(src)
        if p.status == CERTIFIED and len(p.debit_acks) >= self.quorum and len(p.credit_acks) >= self.quorum:
            p.status = SETTLED
            p.settled_at = now
            self.outcomes[SETTLED] += 1
            self.out.add(Notify(p.event()))
        if p.status == SETTLED and p.order_id in self.active and self._all_confirmed(p):
            self._finish(p)  # settled needs a quorum; we keep delivering until every owner has it

    # ---- timers -------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        return self._timers[0][0] if self._timers else float("inf")

    def tick(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, timer, oid = heapq.heappop(self._timers)
            p = self.active.get(oid)
            if p is None or p.timer != timer:
                continue
            if p.status == PENDING:
                if now >= p.created + self.config.deadline:
                    self._fail(p, "timeout", f"no quorum of votes within {self.config.deadline:.0f} s", now)
                else:
                    self._ask_votes(p, now)
            elif p.status in (CERTIFIED, SETTLED):
                self._deliver(p, now)

    # ---- steps ----------------------------------------------------------------------------------
    def _ask_votes(self, p: Payment, now: float) -> None:
        request = VoteRequest(p.order)
        if p.rounds == 0 and self.config.hedge:
            targets = self._first_quorum(p)
            delay = self._hedge_delay()
        else:
            targets = [o for o in p.owners_from if o not in p.votes and o not in p.refused]
            step = p.rounds - 1 if self.config.hedge else p.rounds  # the hedge round does not count
            delay = min(self.config.vote_timeout * self.config.backoff ** min(max(0, step), 16),
                        self.config.deadline / 4)
        for owner in targets:
            self.out.send(owner, request)
        p.rounds += 1
        p.retry.clear()
        self._schedule(min(now + delay, p.created + self.config.deadline), p)

    def _first_quorum(self, p: Payment) -> list[bytes]:
        """This peer if it owns the account, then live owners in an order spread by payment id."""
        def rank(owner: bytes) -> tuple[int, int, bytes]:
            return (owner != self.me, not self.alive(owner), hashlib.sha256(p.order_id + owner).digest())
        return sorted(p.owners_from, key=rank)[: self.quorum]

    def _hedge_delay(self) -> float:
        if self._certify_ewma is None:
            return self.config.vote_timeout
        return min(self.config.hedge_max, max(self.config.hedge_min, self.config.hedge_factor * self._certify_ewma))

    def _certify(self, p: Payment, cert: Certificate, now: float) -> None:
        p.status = CERTIFIED
        p.cert = cert
        p.certified_at = now
        took = now - p.created
        self._certify_ewma = took if self._certify_ewma is None else 0.9 * self._certify_ewma + 0.1 * took
        self.outcomes[CERTIFIED] += 1
        self.out.add(Notify(p.event()))
        targets = set(p.owners_from) | set(p.owners_to)
        self._deliver(p, now)
        # Everyone else learns it by gossip; the owners already have it straight from us.
        self.out.add(Publish(cert.encode(), frozenset(targets | {self.me})))

    def _deliver(self, p: Payment, now: float) -> None:
        """Send the certificate to owners that have not confirmed their side yet."""
        assert p.cert is not None
        if p.deliveries >= self.config.max_deliveries or self._all_confirmed(p):
            self._finish(p)  # anti-entropy completes what the retries did not
            return
        p.deliveries += 1
        delivery = CertDelivery(p.cert)
        for owner in set(p.owners_from) | set(p.owners_to):
            need_debit = owner in p.owners_from and owner not in p.debit_acks
            need_credit = owner in p.owners_to and owner not in p.credit_acks
            if need_debit or need_credit:
                self.out.send(owner, delivery)
        self._schedule(now + self.config.delivery_timeout * self.config.backoff ** min(p.deliveries - 1, 16), p)

    @staticmethod
    def _all_confirmed(p: Payment) -> bool:
        return set(p.owners_from) <= p.debit_acks and set(p.owners_to) <= p.credit_acks

    def _fail_from_refusals(self, p: Payment, now: float) -> None:
        codes = Counter(code for code, _, _ in p.refused.values())
        # A conflict is the most useful answer for the client (it carries the locked order).
        code = Refuse.CONFLICT if Refuse.CONFLICT in codes else codes.most_common(1)[0][0]
        detail, evidence = next((d, e) for c, d, e in p.refused.values() if c is code)
        self._fail(p, code.slug, detail, now, evidence)

    def _fail(self, p: Payment, code: str, detail: str, now: float, evidence: bytes = b"") -> None:
        p.status = FAILED
        p.code, p.detail, p.evidence = code, detail, evidence
        self.outcomes[f"failed:{code}"] += 1
        self.out.add(Notify(p.event()))
        self._finish(p)

    def _finish(self, p: Payment) -> None:
        self.active.pop(p.order_id, None)
        self.done[p.order_id] = p
        self.done.move_to_end(p.order_id)
        while len(self.done) > self.config.keep_done:
            self.done.popitem(last=False)

    def _schedule(self, at: float, p: Payment) -> None:
        self._timer_seq += 1
        p.timer = self._timer_seq
        heapq.heappush(self._timers, (at, self._timer_seq, p.order_id))
