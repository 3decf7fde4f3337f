"""Settlement, epoch and handoff messages between peers (kinds 40-69)."""

from __future__ import annotations

import enum
from typing import Annotated

from crypto.messages import Certificate, Hash, Key, Order, Vote
from crypto.schema import U63_MAX, Bool, Bytes, ListOf, Message, Nested, Text, UInt, message
from peer.epoch_chain import EpochApproval, EpochCertificate, EpochChange

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
    HANDOFF_PENDING = 12  # a new owner still taking the account over from the previous epoch's owners
    FROZEN = 13  # the sequence holds several orders that may have been certified (docs/protocol.md 11.5)

    @property
    def retryable(self) -> bool:
        """The same order may succeed later (the owner is catching up, busy, taking the account
        over, or in another epoch than the gateway: an honest owner never says `not_owner` to a
        gateway of its own epoch)."""
        return self in (Refuse.SEQ_AHEAD, Refuse.OVERLOADED, Refuse.HANDOFF_PENDING, Refuse.NOT_OWNER)

    @property
    def slug(self) -> str:
        return self.name.lower()


SIDE_DEBIT = 1
SIDE_CREDIT = 2


def payload_kind(payload: bytes) -> int | None:
    """The kind of an encoded message, read from its first bytes without decoding it (None if the
    bytes do not start like a message). Broadcast payloads of different kinds are routed by it."""
    if len(payload) < 3:
        return None
    head = payload[0]
    if 0x82 <= head <= 0x97:  # an array of 2..23 items
        i = 1
    elif head == 0x98:  # an array of 24..255 items
        i = 2
    else:
        return None
    first = payload[i]
    if first < 0x18:
        return first
    if first == 0x18 and len(payload) > i + 1:
        return payload[i + 1]
    return None


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


# ---- epochs (docs/protocol.md 11.1) -------------------------------------------------------------

MAX_SYNC_CERTS = 4  # epoch certificates per EpochSyncReply (a 1024-member one is ~180 KB)


@message(55, max_size=48_000)
class EpochPropose(Message):
    """Broadcast: a committee member proposes the committee of `change.epoch`, with its approval."""

    change: Annotated[EpochChange, Nested(EpochChange)]
    approval: Annotated[EpochApproval, Nested(EpochApproval)]


@message(56, max_size=512)
class EpochApprove(Message):
    """Broadcast: a committee member's approval of a proposed change for `epoch`."""

    epoch: Annotated[int, UInt(1, U63_MAX)]
    approval: Annotated[EpochApproval, Nested(EpochApproval)]


@message(57, max_size=320_000)
class EpochAnnounce(Message):
    """Broadcast: the certificate that starts `cert.epoch`."""

    cert: Annotated[EpochCertificate, Nested(EpochCertificate)]


@message(58, max_size=64)
class EpochSyncRequest(Message):
    """Send me the epoch certificates after `after` (my epoch). Also the "not yet" answer of a peer
    asked about an epoch it has not reached: it tells the asker where it is."""

    after: Annotated[int, UInt(0, U63_MAX)]


@message(59, max_size=1 << 20)
class EpochSyncReply(Message):
    """Epoch certificates in ascending order, starting right after the requester's epoch."""

    certs: Annotated[tuple[EpochCertificate, ...], ListOf(Nested(EpochCertificate), MAX_SYNC_CERTS, min_len=1)]


# ---- handoff (docs/protocol.md 11.4, 11.5) ------------------------------------------------------

CURSOR_SIZE = 40  # account(32) + history index(8); empty = the start of the stream
MAX_CHUNK_REPORTS = 64
MAX_CHUNK_CERTS = 64
MAX_HOLDS = 8  # orders in one report; an owner holding more reports itself as not ready
MAX_REPORT_ACCOUNTS = 256
MAX_EXCLUDE = 64


@message(63, max_size=8 * 512 + 256)
class AccountReport(Message):
    """An old owner's state of one account, for the handoff into `epoch` (sent only once sealed).

    `holds` are the orders it holds at `next_seq` (its lock there and the hold set it inherited).
    `ready` is False when the reporter is itself still taking the account over (or holds more than
    `MAX_HOLDS` orders): such a report is not counted.
    """

    epoch: Annotated[int, UInt(1, U63_MAX)]
    account: Key
    next_seq: Annotated[int, UInt(0, U63_MAX)]
    credits: Annotated[int, UInt(0, U63_MAX)]
    credit_digest: Hash
    holds: Annotated[tuple[Order, ...], ListOf(Nested(Order), MAX_HOLDS)]
    ready: Annotated[bool, Bool()]


@message(60, max_size=CURSOR_SIZE + MAX_EXCLUDE * 34 + 64)
class HandoffPull(Message):
    """New owner to an old owner: the next chunk of your stream for me into `epoch`, after `after`.

    `exclude` names old owners the puller treats as unreachable (they are not asked to send
    histories); `budget` bounds the chunk in bytes."""

    epoch: Annotated[int, UInt(1, U63_MAX)]
    after: Annotated[bytes, Bytes(max_size=CURSOR_SIZE)]
    exclude: Annotated[tuple[bytes, ...], ListOf(Bytes(size=32), MAX_EXCLUDE)]
    budget: Annotated[int, UInt(1, 1 << 20)]


@message(61, max_size=MAX_REPORT_ACCOUNTS * 34 + 64)
class HandoffAccounts(Message):
    """Send me your reports on these accounts for the handoff into `epoch` (answered with one
    `AccountReport` each, for the accounts the receiver owned in `epoch - 1`)."""

    epoch: Annotated[int, UInt(1, U63_MAX)]
    accounts: Annotated[tuple[bytes, ...], ListOf(Bytes(size=32), MAX_REPORT_ACCOUNTS, min_len=1)]


@message(62, max_size=(1 << 20) - 1024)
class HandoffChunk(Message):
    """Old owner to new owner: reports and history certificates of the next accounts of a stream.

    `next_after` is the cursor to pull from next (account and history index); `done` ends the
    stream."""

    epoch: Annotated[int, UInt(1, U63_MAX)]
    reports: Annotated[tuple[AccountReport, ...], ListOf(Nested(AccountReport), MAX_CHUNK_REPORTS)]
    certs: Annotated[tuple[Certificate, ...], ListOf(Nested(Certificate), MAX_CHUNK_CERTS)]
    next_after: Annotated[bytes, Bytes(max_size=CURSOR_SIZE)]
    done: Annotated[bool, Bool()]
