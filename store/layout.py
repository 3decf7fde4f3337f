"""The key layout of a peer's RocksDB and the records stored under it.

Every key starts with a one-byte prefix naming its table. Integers inside keys are 8-byte
big-endian so that RocksDB's byte order is numeric order and prefix scans page naturally.

| prefix | key                               | value                                        |
|--------|-----------------------------------|----------------------------------------------|
| `M`    | `M` name                          | metadata: `schema`, `network`, `incarnation` |
| `A`    | `A` account(32)                   | AccountState                                 |
| `C`    | `C` order_id(32)                  | certificate (canonical CBOR)                 |
| `S`    | `S` account(32) seq(8)            | order_id of the debit applied at that seq    |
| `W`    | `W` account(32) seq(8)            | order_id of a verified debit waiting for seq |
| `H`    | `H` account(32) index(8)          | HistoryEntry                                 |
| `L`    | `L` account(32) seq(8)            | Lock: the order this owner voted for         |
| `X`    | `X` order_id(32)                  | applied flags (1 debit, 2 credit)            |
| `P`    | `P` peer_id(32)                   | signed peer record                           |
| `E`    | `E` epoch(8)                      | the EpochCertificate that started the epoch  |
| `V`    | `V` epoch(8)                      | this peer's approval of a change for it      |
| `T`    | `T` epoch(8)                      | EpochRecord: when this peer entered it       |
| `O`    | `O` account(32) seq(8)            | hold set: orders that may be certified there |
| `D`    | `D` epoch(8)                      | HandoffRecord: a handoff into the epoch      |
| `R`    | `R` epoch(8) peer(32)             | StreamRecord: cursor of a handoff stream     |
| `U`    | `U` epoch(8) account(32) peer(32) | AccountReport received in a handoff          |
| `Y`    | `Y` epoch(8) account(32)          | the account is ready in that handoff         |

The handoff tables `U` and `Y` of an epoch are deleted when its handoff completes; `D` and `R`
stay as the record of what moved. A hold set of one order binds like a lock without a vote; of
two or more, the sequence is frozen (docs/protocol.md 11.5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from crypto import codec
from crypto.errors import DecodeError

META = b"M"
ACCOUNT = b"A"
CERT = b"C"
DEBIT = b"S"
WAITING = b"W"
HISTORY = b"H"
LOCK = b"L"
APPLIED = b"X"
PEER = b"P"
EPOCH = b"E"
APPROVAL = b"V"
EPOCH_RECORD = b"T"
HOLD = b"O"
HANDOFF = b"D"
STREAM = b"R"
REPORT = b"U"
READY = b"Y"

APPLIED_DEBIT = 1
APPLIED_CREDIT = 2

DIRECTION_DEBIT = 0
DIRECTION_CREDIT = 1

_U64 = struct.Struct(">Q")


def u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def meta_key(name: str) -> bytes:
    return META + name.encode()


def account_key(account: bytes) -> bytes:
    return ACCOUNT + account


def cert_key(order_id: bytes) -> bytes:
    return CERT + order_id


def debit_key(account: bytes, seq: int) -> bytes:
    return DEBIT + account + _U64.pack(seq)


def waiting_key(account: bytes, seq: int) -> bytes:
    return WAITING + account + _U64.pack(seq)


def history_key(account: bytes, index: int) -> bytes:
    return HISTORY + account + _U64.pack(index)


def lock_key(account: bytes, seq: int) -> bytes:
    return LOCK + account + _U64.pack(seq)


def applied_key(order_id: bytes) -> bytes:
    return APPLIED + order_id


def peer_key(peer_id: bytes) -> bytes:
    return PEER + peer_id


def epoch_key(prefix: bytes, epoch: int) -> bytes:
    """A key of one of the per-epoch tables (`E`, `V`, `T`, `D`)."""
    return prefix + _U64.pack(epoch)


def hold_key(account: bytes, seq: int) -> bytes:
    return HOLD + account + _U64.pack(seq)


def stream_key(epoch: int, peer: bytes) -> bytes:
    return STREAM + _U64.pack(epoch) + peer


def report_key(epoch: int, account: bytes, peer: bytes) -> bytes:
    return REPORT + _U64.pack(epoch) + account + peer


def ready_key(epoch: int, account: bytes) -> bytes:
    return READY + _U64.pack(epoch) + account


def _decode_list(data: bytes, n: int, what: str) -> list:
    value = codec.decode_value(data)
    if type(value) is not list or len(value) != n:
        raise DecodeError(f"stored {what} record is malformed")
    return value


@dataclass(slots=True)
class AccountState:
    """One account as its owner sees it.

    `balance` may dip below zero at an owner that applied a debit before a credit it missed (the
    certificate is final either way); anti-entropy brings the credit. `credit_digest` is the XOR
    of the order ids of all applied credits: with `credits` it summarises the credit set so two
    owners can compare cheaply.
    """

    balance: int = 0
    next_seq: int = 0
    credits: int = 0
    credit_digest: bytes = bytes(32)
    history: int = 0

    def encode(self) -> bytes:
        return codec.encode([self.balance, self.next_seq, self.credits, self.credit_digest, self.history])

    @classmethod
    def decode(cls, data: bytes) -> AccountState:
        b, s, c, d, h = _decode_list(data, 5, "account")
        return cls(b, s, c, d, h)

    def copy(self) -> AccountState:
        return AccountState(self.balance, self.next_seq, self.credits, self.credit_digest, self.history)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    order_id: bytes
    direction: int

    def encode(self) -> bytes:
        return codec.encode([self.order_id, self.direction])

    @classmethod
    def decode(cls, data: bytes) -> HistoryEntry:
        order_id, direction = _decode_list(data, 2, "history")
        return cls(order_id, direction)


@dataclass(frozen=True, slots=True)
class Lock:
    """The order an owner voted for at `(sender, seq)`, and the vote it signed (evidence)."""

    order: bytes
    vote: bytes

    def encode(self) -> bytes:
        return codec.encode([self.order, self.vote])

    @classmethod
    def decode(cls, data: bytes) -> Lock:
        order, vote = _decode_list(data, 2, "lock")
        return cls(order, vote)


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """When this peer entered an epoch (its own clocks: monotonic and wall seconds), and how many
    accounts moved to it in that epoch's handoff."""

    monotonic: float
    wall: float
    moved_in: int = 0

    def encode(self) -> bytes:
        # Times as integer milliseconds: the codec refuses floats.
        return codec.encode([round(self.monotonic * 1000), round(self.wall * 1000), self.moved_in])

    @classmethod
    def decode(cls, data: bytes) -> EpochRecord:
        mono, wall, moved = _decode_list(data, 3, "epoch")
        return cls(mono / 1000, wall / 1000, moved)


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """A handoff into an epoch: whether it is complete, and what it moved."""

    complete: bool = False
    moved_in: int = 0
    certs: int = 0
    bytes: int = 0

    def encode(self) -> bytes:
        return codec.encode([self.complete, self.moved_in, self.certs, self.bytes])

    @classmethod
    def decode(cls, data: bytes) -> HandoffRecord:
        complete, moved, certs, size = _decode_list(data, 4, "handoff")
        return cls(bool(complete), moved, certs, size)


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """Where a handoff stream stands: the cursor to pull from next, and whether it is done."""

    cursor: bytes = b""
    done: bool = False

    def encode(self) -> bytes:
        return codec.encode([self.cursor, self.done])

    @classmethod
    def decode(cls, data: bytes) -> StreamRecord:
        cursor, done = _decode_list(data, 2, "stream")
        return cls(cursor, bool(done))


def encode_holds(orders: tuple[bytes, ...]) -> bytes:
    return codec.encode(list(orders))


def decode_holds(data: bytes) -> tuple[bytes, ...]:
    value = codec.decode_value(data)
    if type(value) is not list or not value or any(type(v) is not bytes for v in value):
        raise DecodeError("stored hold set is malformed")
    return tuple(value)
