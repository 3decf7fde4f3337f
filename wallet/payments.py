"""Sending, idempotently, and finding out what became of a payment.

The rules (the "why" is DESIGN.md's settlement section: owners lock `(sender, seq)` to the first
order they vote for, so two different orders signed for one seq can split the owners' locks and
freeze the account; a wallet must never do that):

1. The signed order is saved in the account's local state *before* it is submitted. A send whose
   recipient, amount and memo equal the pending order's re-submits those exact bytes (same payment
   id) — after a timeout, a crash or a lost answer — and needs no password.
2. A send for something else first resolves the pending order:
   - certified (a verified certificate from any peer that knows it): recorded, the seq advances;
   - its seq already used by another certificate (the owners' `next_seq` is past it): dropped;
   - failed at its gateway, and it holds locks at so few owners that a new order can still gather a
     quorum (`locks + silent owners <= N - W`): dropped;
   - anything else (still pending, or unknown to the network): refused with `ConflictingPending`,
     naming its payment id. Repeating the same send completes it.
3. The sequence number is `max(local next_seq, the network's)`, where the network's is the highest
   value that `f + 1` owners report (f = faults the genesis tolerates), so one lying owner cannot
   push it ahead of the truth. That recovers a lost state file or payments made from another device.
4. A lock held at that seq by an order this wallet did not sign (another device's payment in flight)
   blocks the send with `ConflictingPending` unless it can no longer be certified.
5. A payment is reported certified only after its certificate verifies against the genesis
   committee (`wallet.verify`); a peer's word alone never counts.
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
    AccountReading,
    ClientError,
    Conflict,
    PeerClient,
    PeerUnreachable,
    Refused,
    Timeout,
)
from wallet.home import AccountState, PendingOrder, WalletHome
from wallet.verify import (
    UnverifiedPayment,
    VerificationError,
    checker_for,
    decode_certificate,
    verify_certificate,
)

FINAL = ("certified", "settled")
# Refusals that prove the order can never be certified, so it holds no lock worth keeping.
_DEAD_CODES = ("bad_signature", "wrong_network", "self_transfer", "bad_address", "malformed_order")


class InsufficientFunds(MeshpayError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class ConflictingPending(MeshpayError):
    """A payment in flight (`payment_id`) holds the account's next sequence number."""

    def __init__(self, payment_id: str, message: str) -> None:
        self.payment_id = payment_id
        super().__init__(message)


class NoOwnerAnswered(PeerUnreachable):
    pass


class _SeqUsed(Exception):
    """The owners proved the order's seq is taken by another certificate (internal retry signal)."""


@dataclass
class Outcome:
    order: Order
    status: str  # pending | certified | settled
    cert: Certificate | None
    resubmitted: bool
    notes: list[str] = field(default_factory=list)


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

    def read(self, account: bytes) -> AccountReading:
        reading = self.client.read_account(encode_address(account), self.owners(account), self.genesis.quorum)
        if not reading.answered:
            raise NoOwnerAnswered(self.client.url, "no owner of account "
                                  f"{encode_address(account)} answered ({'; '.join(reading.errors.values())})",
                                  self.client.suggestion())
        return reading

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
             unlock: Callable[[], SigningKey]) -> Outcome:
        sender = _public(self.address)
        notes: list[str] = []
        with self.home.account_lock(self.network_id, self.address):
            state = self.home.load_state(self.network_id, self.address)
            reading = self.read(sender)
            order: Order | None = None
            resubmitted = False
            if state.pending is not None:
                pending = state.pending.decode()
                if (pending.recipient, pending.amount, pending.memo) == (recipient, amount, memo):
                    order, resubmitted = pending, True
                    notes.append(f"re-submitting pending payment {pending.id.hex()} (same recipient, amount "
                                 "and memo): the same signed order, not a new one")
                else:
                    self._resolve(state, pending, reading, notes)
            for attempt in range(2):
                if order is None:
                    order = self._sign(state, reading, recipient, amount, memo, unlock, notes)
                try:
                    return self._submit(state, order, wait, timeout, resubmitted, notes)
                except _SeqUsed:
                    if attempt:
                        raise ConflictingPending(order.id.hex(), "the owners keep reporting this account's "
                                                 "sequence number as used; try again shortly") from None
                    notes.append(f"sequence {order.seq} was already used by another payment; signing again")
                    reading = self.read(sender)
                    order, resubmitted = None, False
        raise AssertionError("unreachable")

    def _resolve(self, state: AccountState, pending: Order, reading: AccountReading, notes: list[str]) -> None:
        pid = pending.id.hex()
        assert state.pending is not None
        found = self.find(pid, [state.pending.gateway], pending.sender)
        if found.cert is not None:
            self._record(state, found.cert)
            notes.append(f"earlier payment {pid} was {found.status}; recorded it")
            return
        network_seq = reading.next_seq(self.trusted)
        if network_seq is not None and network_seq > pending.seq:
            state.pending, state.next_seq = None, max(state.next_seq, network_seq)
            self.home.save_state(self.network_id, state)
            notes.append(f"dropped earlier payment {pid}: its sequence number {pending.seq} was used by "
                         "another payment")
            return
        locks = reading.locks_at(pending.seq)[pid]
        if found.status == "failed" and locks + reading.silent <= self.spare:
            state.pending = None
            self.home.save_state(self.network_id, state)
            notes.append(f"dropped earlier payment {pid}: it failed ({(found.doc or {}).get('code')}) and "
                         f"holds too few locks ({locks}) to ever be certified")
            return
        where = f"still {found.status} at {found.source}" if found.status != "unknown" else "unknown to the peers asked"
        raise ConflictingPending(pid, f"earlier payment {pid} ({format_amount(pending.amount, self.genesis.decimals)} "
                                 f"to {encode_address(pending.recipient)}) is {where}, with {locks} of "
                                 f"{len(reading.owners)} owners locked to it; a different payment now could "
                                 "freeze the account. Repeat that same send to complete it, or check it with "
                                 f"`wallet show {pid}`")

    def _sign(self, state: AccountState, reading: AccountReading, recipient: bytes, amount: int, memo: str,
              unlock: Callable[[], SigningKey], notes: list[str]) -> Order:
        network_seq = reading.next_seq(self.trusted)
        seq = max(state.next_seq, network_seq or 0)
        if network_seq is not None and network_seq > state.next_seq:
            notes.append(f"recovered next sequence number {network_seq} from the owners (local state had "
                         f"{state.next_seq})")
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

    def _submit(self, state: AccountState, order: Order, wait: str, timeout: float, resubmitted: bool,
                notes: list[str]) -> Outcome:
        try:
            doc = self._submit_until(order, wait, timeout)
        except Conflict as exc:
            locked = exc.locked_id or "(not proven by the peer)"
            raise ConflictingPending(exc.locked_id or order.id.hex(),
                                     f"payment {locked} holds sequence {order.seq} of this account, so payment "
                                     f"{order.id.hex()} cannot complete now") from exc
        except Refused as exc:
            if exc.code == "insufficient_funds":
                self._drop(state, order)
                raise InsufficientFunds(f"insufficient funds: the owners refused the payment ({exc.message})") from exc
            if exc.code == "seq_too_low":
                self._drop(state, order, used=True)
                raise _SeqUsed from exc
            if exc.code in _DEAD_CODES:
                self._drop(state, order)
            raise
        status = str(doc.get("status"))
        if status not in FINAL:
            return Outcome(order, "pending", None, resubmitted, notes)
        problems: list[str] = []
        cert = self.certificate(doc, order.id.hex(), self.client.url, problems)
        if cert is None:
            raise UnverifiedPayment(order.id.hex(), f"peer {self.client.url} reported payment {order.id.hex()} {status} but "
                                    f"without a certificate that verifies ({'; '.join(problems) or 'none given'}); "
                                    "not counting it as certified")
        self._record(state, cert)
        return Outcome(order, status, cert, resubmitted, notes)

    def _submit_until(self, order: Order, wait: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.client.submit(order, wait, max(deadline - time.monotonic(), 0.05))
            except Timeout:
                if deadline - time.monotonic() < 1.0:
                    raise
                # the peer's own wait is capped (60 s): ask again, joining the same payment

    def _record(self, state: AccountState, cert: Certificate) -> None:
        self.home.save_certificate(cert)
        state.next_seq = max(state.next_seq, cert.order.seq + 1)
        if state.pending is not None and state.pending.payment_id == cert.id.hex():
            state.pending = None
        self.home.save_state(self.network_id, state)

    def _drop(self, state: AccountState, order: Order, *, used: bool = False) -> None:
        if state.pending is not None and state.pending.payment_id == order.id.hex():
            state.pending = None
        if used:
            state.next_seq = max(state.next_seq, order.seq + 1)
        self.home.save_state(self.network_id, state)

    def record_if_ours(self, cert: Certificate) -> bool:
        """After `show`/`receipt` found a verified certificate: settle the local pending order with it."""
        if encode_address(cert.order.sender) != self.address:
            return False
        with self.home.account_lock(self.network_id, self.address):
            state = self.home.load_state(self.network_id, self.address)
            self._record(state, cert)
        return True


def _public(address: str) -> bytes:
    return decode_address(address)
