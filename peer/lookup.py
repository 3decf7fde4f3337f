"""Asking other peers about a payment this peer does not know (sans-IO, one small service).

A gateway that owns neither side of a payment keeps it in memory only; after a restart it knew
nothing and answered 404 `unknown_payment` for a payment it had reported `settled` a minute before.
A client polling by id could conclude the payment never happened. So a peer asked about a payment it
has no record of asks the peers that may hold it (the sender's owners when the client names the
sender, else every live committee member) with `PaymentQuery`; each answers with a `PaymentReport`:
the sides it applied and the certificate if it stores one. Certificates prove themselves, so the
asking peer verifies one and answers from it; the applied sides reported by the owners of each side
say whether it is settled.

Message kinds 80-89 are this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from crypto.messages import Hash
from crypto.schema import Bytes, Message, UInt, message
from gossip.effects import Notify, Outbox
from peer.ledger import Ledger

MAX_CERT_BYTES = 16_384  # a certificate's own size limit (crypto/messages.py)


@message(80, max_size=128)
class PaymentQuery(Message):
    """Do you know this payment? (asked for a client by a peer that has no record of it)"""

    order_id: Hash


@message(81, max_size=MAX_CERT_BYTES + 128)
class PaymentReport(Message):
    """What the asked peer knows: the sides it applied (bit set) and the certificate if it has one."""

    order_id: Hash
    sides: Annotated[int, UInt(0, 3)]
    cert: Annotated[bytes, Bytes(max_size=MAX_CERT_BYTES)]  # empty: no certificate here


MESSAGE_TYPES = (PaymentQuery, PaymentReport)


@dataclass(frozen=True, slots=True)
class PaymentReported:
    """Notification: a peer answered a `PaymentQuery`."""

    src: bytes
    order_id: bytes
    sides: int
    cert: bytes


class Lookup:
    """Answers `PaymentQuery` from the ledger; turns `PaymentReport`s into notifications."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.out = Outbox()
        self.counters = {"queries_answered": 0, "reports": 0}

    def handle(self, src: bytes, msg: Message, now: float) -> None:
        kind = type(msg)
        if kind is PaymentQuery:
            self.counters["queries_answered"] += 1
            oid = msg.order_id
            raw = self.ledger.cert_bytes(oid) or b""
            self.out.send(src, PaymentReport(oid, self.ledger.applied(oid), raw))
        elif kind is PaymentReport:
            self.counters["reports"] += 1
            self.out.add(Notify(PaymentReported(src, msg.order_id, msg.sides, msg.cert)))
        else:
            raise TypeError(f"lookup does not handle {kind.__name__}")

    def ask(self, order_id: bytes, peers: tuple[bytes, ...]) -> None:
        for peer in peers:
            self.out.send(peer, PaymentQuery(order_id))

    def tick(self, now: float) -> None:
        return None

    def next_deadline(self) -> float:
        return float("inf")
