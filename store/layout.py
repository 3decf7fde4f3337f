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
