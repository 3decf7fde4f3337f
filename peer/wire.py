"""Settlement messages between peers (kinds 40-69)."""

from __future__ import annotations

import enum
from typing import Annotated

from crypto.messages import Certificate, Hash, Key, Order, Vote
from crypto.schema import U63_MAX, Bytes, ListOf, Message, Nested, Text, UInt, message

MAX_BATCH_CERTS = 64
MAX_IDS = 512
AE_BUCKETS = 64


class Refuse(enum.IntEnum):
    """Why an owner will not vote for an order. Stable numbers: they go on the wire and into the API."""

    BAD_SIGNATURE = 1
    WRONG_NETWORK = 2
    NOT_OWNER = 3
    SEQ_TOO_LOW = 4
    SEQ_AHEAD = 5
    INSUFFICIENT_FUNDS = 6
    SELF_TRANSFER = 7
    CONFLICT = 8
    ALREADY_FINAL = 9
    OVERLOADED = 10
    BAD_ADDRESS = 11

    @property
    def retryable(self) -> bool:
        """The same order may succeed later (the owner is catching up or busy)."""
        return self in (Refuse.SEQ_AHEAD, Refuse.OVERLOADED)

    @property
    def slug(self) -> str:
        return self.name.lower()


SIDE_DEBIT = 1
SIDE_CREDIT = 2


@message(40, max_size=1024)
class VoteRequest(Message):
    """Gateway to owner: please lock `(order.sender, order.seq)` to this order and vote."""

    order: Annotated[Order, Nested(Order)]


@message(41, max_size=512)
class VoteReply(Message):
    vote: Annotated[Vote, Nested(Vote)]


@message(42, max_size=20_000)
class Refusal(Message):
    """Owner to gateway: no vote, and why. `evidence` is the locked order (conflict) or the
    certificate that already used this sequence number (too low / already final)."""

    order_id: Hash
    code: Annotated[int, UInt(1, 255)]
    detail: Annotated[str, Text(200)]
    evidence: Annotated[bytes, Bytes(max_size=16_384)]


@message(43, max_size=17_000)
class CertDelivery(Message):
    """Gateway to an owner of either side: apply this certificate and tell me when it is durable."""

    cert: Annotated[Certificate, Nested(Certificate)]


@message(44, max_size=128)
class Applied(Message):
    """Owner to gateway: the certificate's sides I own are durably applied (bit flags)."""

    order_id: Hash
    sides: Annotated[int, UInt(1, 3)]


@message(45, max_size=128)
class CertRange(Message):
    """Catch-up: send me the certificates that debited `account` at seqs [start, start+count)."""

    account: Key
    start: Annotated[int, UInt(0, U63_MAX)]
    count: Annotated[int, UInt(1, MAX_BATCH_CERTS)]


@message(46, max_size=1 << 20)
class CertBatch(Message):
    certs: Annotated[tuple[Certificate, ...], ListOf(Nested(Certificate), MAX_BATCH_CERTS)]


@message(47, max_size=MAX_IDS * 34 + 64)
class CertFetch(Message):
    """Send me these certificates (by order id)."""

    ids: Annotated[tuple[bytes, ...], ListOf(Bytes(size=32), MAX_IDS)]


@message(48, max_size=AE_BUCKETS * 10 + 64)
class AEDigest(Message):
    """Anti-entropy: per bucket, a digest of the accounts sender and receiver both own."""

    buckets: Annotated[tuple[bytes, ...], ListOf(Bytes(size=8), AE_BUCKETS, min_len=AE_BUCKETS)]


@message(49, max_size=128)
class AEEntry(Message):
    account: Key
    next_seq: Annotated[int, UInt(0, U63_MAX)]
    credits: Annotated[int, UInt(0, U63_MAX)]
    credit_digest: Hash


@message(50, max_size=1 << 20)
class AEAccounts(Message):
    """Anti-entropy reply: the sender's state of the shared accounts in the buckets that differ."""

    entries: Annotated[tuple[AEEntry, ...], ListOf(Nested(AEEntry), 8192)]


@message(51, max_size=128)
class CreditsRequest(Message):
    """Which credits have you applied to `account`? (page through with `after`)"""

    account: Key
    after: Annotated[int, UInt(0, U63_MAX)]


@message(52, max_size=MAX_IDS * 34 + 128)
class CreditsReply(Message):
    account: Key
    ids: Annotated[tuple[bytes, ...], ListOf(Bytes(size=32), MAX_IDS)]
    next_after: Annotated[int, UInt(0, U63_MAX)]  # 0 = no more


@message(53, max_size=128)
class StatusQuery(Message):
    """Have you applied this payment? (for `settled` status at peers other than the gateway)"""

    order_id: Hash


@message(54, max_size=128)
class StatusReply(Message):
    order_id: Hash
    sides: Annotated[int, UInt(0, 3)]
