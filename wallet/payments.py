"""Sending, idempotently, and finding out what became of a payment.

The rules (the "why" is docs/protocol.md, section 8: owners lock `(sender, seq)` to the first
order they vote for, so two different orders signed for one seq can split the owners' locks and
freeze the account; a wallet must never do that):

1. The signed order is saved in the account's local state *before* it is submitted. A send whose
   recipient, amount and memo equal the pending order's re-submits those exact bytes (same payment
   id) — after a timeout, a crash or a lost answer — and needs no password.
2. A send for something else first resolves the pending order from what the sender's owners
   report (`wallet.outcome.decide`; a gateway's word is never evidence) and says what became of it:
   - paid (a certificate that verifies, or f+1 owners applied it at its seq): recorded;
   - replaced (another order was applied at its seq): dropped, it can never be paid;
   - never certified and safe to replace (its seq unused, not in flight, few locks): the new order
     takes the *same* seq, so at most one of the two is ever paid;
   - anything else: refused with `ConflictingPending` ("outcome not known"), naming its payment id.
     A new seq is never signed while an earlier order may still complete.
3. The sequence number is `max(local next_seq, the network's)`, where the network's is the highest
   value that `f + 1` owners report (f = faults the genesis tolerates), so one lying owner cannot
   push it ahead of the truth. That recovers a lost state file or payments made from another device.
4. A lock held at that seq by an order this wallet did not sign (another device's payment in flight)
   blocks the send with `ConflictingPending` unless it can no longer be certified.
5. A payment is reported certified only after its certificate verifies against the genesis
   committee (`wallet.verify`), or f+1 of the sender's owners say they applied it. When the gateway
   answers anything else (an invalid certificate, a refusal, a conflict, no answer at all), the
   sender's owners are asked before the user is told anything, and the pending order is kept
   until its outcome is known.
6. `timeout` bounds the whole send, reads included (`PeerClient.deadline`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crypto.address import decode_address, encode_address
from crypto.errors import MeshpayError
from crypto.keys import SigningKey
from crypto.messages import Certificate, Order
from peer.genesis import Genesis
from peer.ring import Ring
from wallet.amounts import format_amount
from wallet.chain import WalletChain
from wallet.client import (
    MAX_SERVER_WAIT,
    AccountReading,
    ClientError,
    Conflict,
    OutOfTime,
    PeerClient,
    PeerUnreachable,
    Refused,
    Timeout,
)
from wallet.home import AccountState, PendingOrder, WalletHome
from wallet.outcome import FINAL as PAID
from wallet.outcome import (
    REPLACEABLE,
    REPLACED,
    Facts,
    Frozen,
    OwnerFacts,
    Resolution,
    decide,
    frozen,
)
from wallet.verify import (
    UnverifiedPayment,
    VerificationError,
    checker_for,
    decode_certificate,
    verify_certificate,
)

FINAL = ("certified", "settled")
POLL = 0.3  # seconds between two looks at the owners while an order's outcome settles
RESERVE = 3.0  # seconds of a send's timeout kept back to ask the owners after the gateway's answer


class InsufficientFunds(MeshpayError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class ConflictingPending(MeshpayError):
    """A payment in flight (`payment_id`) holds the account's next sequence number."""

    def __init__(self, payment_id: str, message: str) -> None:
        self.payment_id = payment_id
        super().__init__(message)


class AccountFrozen(ConflictingPending):
    """Owners are locked to different orders at the account's next seq: no order can be certified."""


class NoOwnerAnswered(PeerUnreachable):
    pass


class _SeqUsed(Exception):
    """The owners proved the order's seq is taken by another certificate (internal retry signal)."""


@dataclass
class Outcome:
    order: Order
    status: str  # pending | certified | settled
    cert: Certificate | None  # None when pending, or when final by f+1 owners' word (applied_by)
    resubmitted: bool
    notes: list[str] = field(default_factory=list)
    applied_by: int = 0
    earlier: dict[str, Any] | None = None  # what became of the earlier pending order, if there was one


@dataclass
class Found:
    """What the network says about a payment: the best status seen and a *verified* certificate."""

    status: str  # settled | certified | pending | failed | unknown
    cert: Certificate | None
    doc: dict[str, Any] | None
    source: str | None
    problems: list[str] = field(default_factory=list)


_RANK = {"unknown": 0, "failed": 1, "pending": 2, "certified": 3, "settled": 4}


class Network:
    """Reads and payment look-ups on the genesis network, through one chosen peer."""

    def __init__(self, genesis: Genesis, client: PeerClient, chain: WalletChain | None = None) -> None:
        self.genesis = genesis
        self.client = client
        self.network_id = genesis.network_id
        # The current committee's owners, and certificates of any epoch (wallet/chain.py)
        self.ring = chain.current.ring if chain else Ring(genesis.committee, genesis.replication, genesis.vnodes)
        self.checker = chain.checker() if chain else checker_for(genesis)
        # f + 1 owners agreeing include an honest one (f: Byzantine owners the genesis tolerates)
        self.trusted = max(1, genesis.faults_tolerated + 1)
        self.spare = genesis.replication - genesis.quorum  # owners an order can lack and still certify

    def owners(self, account: bytes) -> tuple[bytes, ...]:
        return self.ring.owners(account)

    def read(self, account: bytes, seq: int | None = None) -> AccountReading:
        """The owners' signed views of `account` (with `seq`: also the debit each applied there)."""
        reading = self.client.read_account(encode_address(account), self.owners(account), self.genesis.quorum,
                                           self.network_id, seq=seq)
        if not reading.answered:
            raise NoOwnerAnswered(self.client.url, "no owner of account "
                                  f"{encode_address(account)} answered ({'; '.join(reading.errors.values())})",
                                  self.client.suggestion())
        return reading

    def facts(self, order: Order, reading: AccountReading) -> tuple[OwnerFacts, ...]:
        """Each answering owner's next_seq, lock, and (past the order's seq) the payment it applied
        there, as the owner signed it (a reading taken with `seq=order.seq`; others name none)."""
        return tuple(OwnerFacts(bare.next_seq, bare.lock, view.applied if view.next_seq > order.seq else None)
                     for view, bare in zip(reading.answered, self.facts_at(reading), strict=True))

    @staticmethod
    def facts_at(reading: AccountReading) -> tuple[OwnerFacts, ...]:
        """Each answering owner's next_seq and the payment it holds a lock for there."""
        return tuple(OwnerFacts(v.next_seq, v.pending[1] if v.pending is not None and v.pending[0] == v.next_seq
                                else None) for v in reading.answered)

    def frozen(self, reading: AccountReading, seq: int) -> Frozen | None:
        return frozen(seq, self.facts_at(reading), len(reading.owners), self.genesis.quorum)

    def outcome(self, order: Order, reading: AccountReading, also: list[str] | None = None) -> tuple[Resolution, Found]:
        """What became of `order`, from a verified certificate or its sender's owners (`decide`)."""
        pid = order.id.hex()
        found = self.find(pid, also, order.sender)
        if reading.seq != order.seq and any(v.next_seq > order.seq for v in reading.answered):
            # Its seq is used somewhere: ask again, with the owners signing what they applied there.
            reading = self.read(order.sender, seq=order.seq)
        answers = self.facts(order, reading)
        other = self._other_certificate(order, answers, reading)
        facts = Facts(pid, order.seq, len(reading.owners), self.genesis.quorum, self.trusted, answers,
                      verified=found.cert is not None, verified_other=other, in_flight=found.status == "pending")
        return decide(facts), found

    def _other_certificate(self, order: Order, answers: tuple[OwnerFacts, ...], reading: AccountReading) -> str | None:
        """The id of a verified certificate of another order at the same (sender, seq), if an owner names one."""
        named = {a.applied for a in answers if a.applied not in (None, order.id.hex())}
        for pid in sorted(p for p in named if p is not None):
            for view in reading.answered:
                try:
                    doc = self.client.payment(pid, view.url)
                except ClientError:
                    continue
                cert = self.certificate(doc, pid, view.url, []) if doc is not None else None
                if cert is not None and (cert.order.sender, cert.order.seq) == (order.sender, order.seq):
                    return pid
        return None

    def owner_urls(self, account: bytes) -> list[str]:
        return [self.client.peer_urls[p] for p in self.owners(account) if p in self.client.peer_urls]

    def find(self, payment_id: str, also: list[str] | None = None, account: bytes | None = None) -> Found:
        """Ask `also`, the chosen peer and the owners of `account` until one proves the payment final
        with a certificate that verifies; otherwise the most advanced status any of them reports."""
        urls: list[str] = []
        for url in [*(also or []), self.client.url, *(self.owner_urls(account) if account else [])]:
            if url not in urls:
                urls.append(url)
        best = Found("unknown", None, None, None)
        for url in urls:
            try:
                doc = self.client.payment(payment_id, url)
            except ClientError as exc:
                best.problems.append(str(exc))
                continue
            if doc is None:
                continue
            status = str(doc.get("status"))
            cert = self.certificate(doc, payment_id, url, best.problems)
            if cert is not None:
                final = status if status in FINAL else "certified"
                return Found(final, cert, doc, url, best.problems)
            if status not in _RANK or status in FINAL:
                status = "unknown"  # a claim of finality without a valid certificate is no evidence
            if best.doc is None or _RANK[status] > _RANK[best.status]:
                best = Found(status, None, doc, url, best.problems)
        return best

    def certificate(self, doc: dict[str, Any], payment_id: str, url: str, problems: list[str]) -> Certificate | None:
        """The certificate in a payment answer if it verifies against the genesis, else None (noted)."""
        body = doc.get("certificate")
        if not isinstance(body, dict) or not isinstance(body.get("cbor"), str):
            return None
        try:
            cert = decode_certificate(bytes.fromhex(body["cbor"]))
            if cert.id.hex() != payment_id:
                raise VerificationError("it is the certificate of another payment")
            verify_certificate(cert, self.genesis, self.checker)
        except (ValueError, VerificationError) as exc:
            problems.append(f"{url} offered an invalid certificate: {exc}")
            return None
        return cert


class Account(Network):
    """One account of this wallet: sending from it and keeping its local state."""

    def __init__(self, home: WalletHome, genesis: Genesis, client: PeerClient, address: str,
                 chain: WalletChain | None = None) -> None:
        super().__init__(genesis, client, chain)
        self.home = home
        self.address = address

    # ---- sending ---------------------------------------------------------------------------------------
    def send(self, recipient: bytes, amount: int, memo: str, *, wait: str, timeout: float,
             unlock: Callable[[], SigningKey], submit: bool = True) -> Outcome:
        """Pay `recipient`; with `submit=False`, only resolve the earlier order, sign (or reuse the
        identical pending order) and save it as pending: status `signed`, for submitting elsewhere."""
        ends = time.monotonic() + timeout
        earlier = self.client.deadline  # the caller's own, if it set one (the CLI counts from its start)
        self.client.deadline = min(earlier or ends, ends)  # bounds every read and wait below
        try:
            return self._send(recipient, amount, memo, wait, unlock, submit)
        finally:
            self.client.deadline = earlier

    def _send(self, recipient: bytes, amount: int, memo: str, wait: str, unlock: Callable[[], SigningKey],
              submit: bool) -> Outcome:
        sender = _public(self.address)
        notes: list[str] = []
        with self.home.account_lock(self.network_id, self.address):
            state = self.home.load_state(self.network_id, self.address)
            reading = self.read(sender)
            order: Order | None = None
            resubmitted = False
            earlier = None
            if state.pending is not None:
                pending = state.pending.decode()
                if (pending.recipient, pending.amount, pending.memo) == (recipient, amount, memo):
                    order, resubmitted = pending, True
                    notes.append(f"re-submitting pending payment {pending.id.hex()} (same recipient, amount "
                                 "and memo): the same signed order, not a new one")
                else:
                    earlier = self._resolve(state, pending, reading, notes)
            for attempt in range(2):
                if order is None:
                    order = self._sign(state, reading, recipient, amount, memo, unlock, notes)
                if not submit:
                    return Outcome(order, "signed", None, resubmitted, notes, earlier=earlier)
                try:
                    outcome = self._submit(state, order, wait, resubmitted, notes)
                except _SeqUsed:
                    if attempt:
                        raise ConflictingPending(order.id.hex(), "the owners keep reporting this account's "
                                                 "sequence number as used; try again shortly") from None
                    notes.append(f"sequence {order.seq} was already used by another payment; signing again")
                    reading = self.read(sender)
                    order, resubmitted = None, False
                    continue
                outcome.earlier = earlier
                return outcome
        raise AssertionError("unreachable")

    def _resolve(self, state: AccountState, pending: Order, reading: AccountReading,
                 notes: list[str]) -> dict[str, Any]:
        """Settle what became of the earlier pending order before anything new is signed."""
        pid = pending.id.hex()
        assert state.pending is not None
        res, found = self.outcome(pending, reading, [state.pending.gateway])
        what = f"earlier payment {pid} ({format_amount(pending.amount, self.genesis.decimals)} to " \
               f"{encode_address(pending.recipient)}, seq {pending.seq})"
        if res.kind == PAID:
            status = found.status if found.cert is not None else "certified"
            self._record(state, pending, found.cert)
            notes.append(f"{what} was {status}: {res.reason}; recorded it")
            return {"payment_id": pid, "outcome": status, "reason": res.reason}
        if res.kind == REPLACED:
            self._drop(state, pending, used=True)
            notes.append(f"{what} can never be paid: {res.reason}; dropped it")
            return {"payment_id": pid, "outcome": "replaced", "reason": res.reason}
        if res.kind == REPLACEABLE:
            self._drop(state, pending)
            notes.append(f"{what} was never certified: {res.reason}; replacing it")
            return {"payment_id": pid, "outcome": "never_certified", "reason": res.reason}
        raise ConflictingPending(pid, f"{what}: its outcome is not known yet ({res.reason}). Not signing a new "
                                 "payment while it may still complete. Repeat that same send to complete it, "
                                 f"or check it with `wallet show {pid}`")

    def _sign(self, state: AccountState, reading: AccountReading, recipient: bytes, amount: int, memo: str,
              unlock: Callable[[], SigningKey], notes: list[str]) -> Order:
        network_seq = reading.next_seq(self.trusted)
        seq = max(state.next_seq, network_seq or 0)
        if network_seq is not None and network_seq > state.next_seq:
            notes.append(f"recovered next sequence number {network_seq} from the owners (local state had "
                         f"{state.next_seq})")
        stuck = self.frozen(reading, seq)
        if stuck is not None:
            locked = max(stuck.locks, key=lambda p: stuck.locks[p])
            raise AccountFrozen(locked, f"account {self.address} is frozen at sequence number {seq}: {stuck.reason}")
        foreign = reading.locks_at(seq)
        if foreign and sum(foreign.values()) + reading.silent > self.spare:
            locked, count = foreign.most_common(1)[0]
            raise ConflictingPending(locked, f"payment {locked} holds this account's sequence number {seq} at "
                                     f"{count} of {len(reading.owners)} owners (signed elsewhere: another "
                                     f"device?); wait for it, or check it with `wallet show {locked}`")
        top = reading.max_balance()
        if top is not None and amount > top:
            decimals = self.genesis.decimals
            raise InsufficientFunds(f"insufficient funds: balance {format_amount(top, decimals)} is below "
                                    f"the amount {format_amount(amount, decimals)}")
        key = unlock()
        if encode_address(key.public) != self.address:
            raise MeshpayError("the keystore's key does not match its account address")
        order = Order.create(key, self.network_id, recipient, amount, seq, memo)
        state.next_seq = seq
        state.pending = PendingOrder.of(order, self.client.url)
        # Saved before it leaves this machine: any retry re-submits these exact bytes.
        self.home.save_state(self.network_id, state)
        return order

    def _submit(self, state: AccountState, order: Order, wait: str, resubmitted: bool, notes: list[str]) -> Outcome:
        """Submit through the chosen peer; whatever it answers short of a verified certificate, the
        sender's owners decide. The pending order is kept until its outcome is known."""
        gateway = self.client.url
        try:
            doc = self._submit_until(order, wait)
        except Conflict as exc:
            done, _ = self._confirm(state, order, notes, resubmitted, f"gateway {gateway} reported a conflict")
            if done is not None:
                return done
            locked = exc.locked_id or "(not proven by the peer)"
            raise ConflictingPending(exc.locked_id or order.id.hex(),
                                     f"payment {locked} holds sequence {order.seq} of this account, so payment "
                                     f"{order.id.hex()} cannot complete now") from exc
        except Refused as exc:
            done, res = self._confirm(state, order, notes, resubmitted, f"gateway {gateway} answered {exc.code}")
            if done is not None:
                return done
            if exc.code == "seq_too_low":
                if res is not None and res.kind == REPLACED:
                    self._drop(state, order, used=True)
                    raise _SeqUsed from exc
                raise ConflictingPending(order.id.hex(), f"gateway {gateway} says sequence {order.seq} is used, "
                                         "but the owners do not show by which payment; payment "
                                         f"{order.id.hex()} stays pending: check it with `wallet show "
                                         f"{order.id.hex()}`") from exc
            if exc.code == "insufficient_funds":
                raise InsufficientFunds(f"insufficient funds: the owners refused the payment ({exc.message})") from exc
            raise
        except (Timeout, PeerUnreachable) as exc:
            if exc.payment_id is None:
                raise  # nothing was handed over
            claim = f"gateway {gateway} gave no answer ({exc.reason})" if isinstance(exc, PeerUnreachable) \
                else f"gateway {gateway} did not report it final in time (status {exc.status})"
            done, _ = self._confirm(state, order, notes, resubmitted, claim)
            if done is not None:
                return done
            raise
        status = str(doc.get("status"))
        if status not in FINAL:
            return Outcome(order, "pending", None, resubmitted, notes)
        problems: list[str] = []
        cert = self.certificate(doc, order.id.hex(), gateway, problems)
        if cert is not None:
            self._record(state, order, cert)
            return Outcome(order, status, cert, resubmitted, notes)
        claim = f"gateway {gateway} reported it {status} without a certificate that verifies " \
                f"({'; '.join(problems) or 'none given'})"
        done, _ = self._confirm(state, order, notes, resubmitted, claim)
        if done is not None:
            return done
        raise UnverifiedPayment(order.id.hex(), f"{claim}, and its sender's owners have not applied it: not "
                                "counting it as certified; it stays pending (repeat the same send, or check "
                                f"it with `wallet show {order.id.hex()}`)")

    def _confirm(self, state: AccountState, order: Order, notes: list[str], resubmitted: bool,
                 claim: str) -> tuple[Outcome | None, Resolution | None]:
        """Ask the sender's owners what became of `order`, until they show it paid, show that nothing
        more will happen to it (no lock, nothing applied, not in flight), or time is up."""
        res: Resolution | None = None
        sender = order.sender
        while True:
            try:
                res, found = self.outcome(order, self.read(sender, seq=order.seq))
            except (ClientError, OutOfTime):
                return None, res  # out of time or no owner answered: the gateway's error stands
            if res.kind == PAID:
                status = found.status if found.cert is not None else "certified"
                self._record(state, order, found.cert)
                notes.append(f"{claim}, but the sender's owners show it paid ({res.reason}): it is {status}")
                return Outcome(order, status, found.cert, resubmitted, notes, applied_by=res.applied_by), res
            if res.kind == REPLACED or (res.locks == 0 and res.applied_by == 0 and res.kind == REPLACEABLE):
                return None, res  # settled the other way, or nothing is moving: no use waiting
            left = (self.client.deadline or time.monotonic()) - time.monotonic()
            if left < POLL + 0.2:
                return None, res
            time.sleep(POLL)

    def _submit_until(self, order: Order, wait: str) -> dict[str, Any]:
        while True:
            left = (self.client.deadline or time.monotonic()) - time.monotonic()
            keep = min(RESERVE, left / 4)  # time kept back to ask the owners after the gateway answers
            wanted = max(left - keep, 0.05)
            try:
                return self.client.submit(order, wait, wanted)
            except Timeout:
                # Ask again only when the peer's own wait was capped below what is left (60 s):
                # a gateway that says "timeout" early is not asked in a loop.
                if wanted <= MAX_SERVER_WAIT:
                    raise

    def _record(self, state: AccountState, order: Order, cert: Certificate | None) -> None:
        """The order is paid: keep its certificate (if one verified) and move past its seq."""
        if cert is not None:
            self.home.save_certificate(cert)
        state.next_seq = max(state.next_seq, order.seq + 1)
        if state.pending is not None and state.pending.payment_id == order.id.hex():
            state.pending = None
        self.home.save_state(self.network_id, state)

    def _drop(self, state: AccountState, order: Order, *, used: bool = False) -> None:
        if state.pending is not None and state.pending.payment_id == order.id.hex():
            state.pending = None
        if used:
            state.next_seq = max(state.next_seq, order.seq + 1)
        self.home.save_state(self.network_id, state)

    def record_paid(self, order: Order) -> None:
        """The owners showed `order` paid (no certificate in hand): move the local state past it."""
        with self.home.account_lock(self.network_id, self.address):
            self._record(self.home.load_state(self.network_id, self.address), order, None)

    def record_if_ours(self, cert: Certificate) -> bool:
        """After `show`/`receipt` found a verified certificate: settle the local pending order with it."""
        if encode_address(cert.order.sender) != self.address:
            return False
        with self.home.account_lock(self.network_id, self.address):
            state = self.home.load_state(self.network_id, self.address)
            self._record(state, cert.order, cert)
        return True


def _public(address: str) -> bytes:
    return decode_address(address)
