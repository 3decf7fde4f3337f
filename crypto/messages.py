"""The signed core messages: orders, votes, certificates, peer records and the handshake.

Protocol-specific messages (gossip, settlement, client) live beside their protocols and use the
same schema engine. Kind numbers are allocated in blocks: 1-19 here, 20-39 gossip, 40-69
settlement, 70-89 client protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from crypto import codec
from crypto.keys import (
    HASH_SIZE,
    NETWORK_ID_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    Purpose,
    SigningKey,
    digest,
    verify,
)
from crypto.schema import U16_MAX, U63_MAX, Bytes, ListOf, Message, Nested, Text, UInt, message

Key = Annotated[bytes, Bytes(size=PUBLIC_KEY_SIZE)]
Sig = Annotated[bytes, Bytes(size=SIGNATURE_SIZE)]
Hash = Annotated[bytes, Bytes(size=HASH_SIZE)]
NetworkId = Annotated[bytes, Bytes(size=NETWORK_ID_SIZE)]

MAX_AMOUNT = U63_MAX
MAX_MEMO_BYTES = 140
MAX_VOTES = 64
PROTOCOL_VERSION = 1


def _body(msg: Message, unsigned_fields: int = 1) -> bytes:
    """Canonical encoding of the message without its trailing signature field(s)."""
    return codec.encode(msg.to_plain()[: -unsigned_fields])


@message(1, max_size=512)
class Order(Message):
    """A payment the sender signs: move `amount` from `sender` to `recipient` as its `seq`-th order."""

    network: NetworkId
    sender: Key
    recipient: Key
    amount: Annotated[int, UInt(1, MAX_AMOUNT)]
    seq: Annotated[int, UInt(0, U63_MAX)]
    memo: Annotated[str, Text(MAX_MEMO_BYTES)]
    sig: Sig
    _id: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _body: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def body(self) -> bytes:
        body = self._body
        if body is None:
            body = _body(self)
            object.__setattr__(self, "_body", body)
        return body

    @property
    def id(self) -> bytes:
        """The payment id: hash of exactly the bytes the sender signed (computed once)."""
        oid = self._id
        if oid is None:
            oid = digest(Purpose.ORDER, self.network, self.body())
            object.__setattr__(self, "_id", oid)
        return oid

    def signature_valid(self) -> bool:
        return verify(self.sender, self.sig, Purpose.ORDER, self.network, self.body())

    @classmethod
    def create(
        cls, key: SigningKey, network: bytes, recipient: bytes, amount: int, seq: int, memo: str = ""
    ) -> Order:
        unsigned = cls(network, key.public, recipient, amount, seq, memo, bytes(SIGNATURE_SIZE))
        return cls(network, key.public, recipient, amount, seq, memo,
                   key.sign(Purpose.ORDER, network, unsigned.body()))


@message(2, max_size=256)
class Vote(Message):
    """An owner's signed statement that, in `epoch`, it locked `(sender, seq)` to this exact order.

    The signed bytes cover the order id, the epoch, the voter and the order's signature bytes (which
    are not carried in the vote: a vote is only ever checked together with its order). So a vote
    binds the very signature its owner verified, and a relay that swaps the order's signature in a
    certificate invalidates every vote in it.
    """

    order_id: Hash
    epoch: Annotated[int, UInt(0, U63_MAX)]
    voter: Key
    sig: Sig
    _signed: tuple[bytes, bytes] | None = dataclasses.field(default=None, init=False, repr=False,
                                                             compare=False)

    def signed_body(self, order_sig: bytes) -> bytes:
        memo = self._signed
        if memo is not None and memo[0] == order_sig:
            return memo[1]
        body = codec.encode([self.order_id, self.epoch, self.voter, order_sig])
        object.__setattr__(self, "_signed", (order_sig, body))
        return body

    def signature_valid(self, network: bytes, order_sig: bytes) -> bool:
        """Whether the vote is its voter's signature on this order id, epoch and order signature."""
        return verify(self.voter, self.sig, Purpose.VOTE, network, self.signed_body(order_sig))

    @classmethod
    def create(cls, key: SigningKey, network: bytes, order: Order, epoch: int = 0) -> Vote:
        unsigned = cls(order.id, epoch, key.public, bytes(SIGNATURE_SIZE))
        return cls(order.id, epoch, key.public,
                   key.sign(Purpose.VOTE, network, unsigned.signed_body(order.sig)))


@message(3, max_size=16384)
class Certificate(Message):
    """An order with votes from a quorum of its sender's owners: final once valid.

    Whether the votes are enough (W distinct owners of the sender in the votes' epoch, all on this
    order and its exact signature) depends on that epoch's committee and is checked by
    `peer.certify`, not here.
    """

    order: Annotated[Order, Nested(Order)]
    votes: Annotated[tuple[Vote, ...], ListOf(Nested(Vote), MAX_VOTES, min_len=1)]

    @property
    def id(self) -> bytes:
        return self.order.id


@message(4, max_size=512)
class PeerRecord(Message):
    """Where a peer can be reached, signed by that peer so nobody else can move it."""

    peer_id: Key
    host: Annotated[str, Text(253)]
    port: Annotated[int, UInt(1, U16_MAX)]
    api_port: Annotated[int, UInt(0, U16_MAX)]
    incarnation: Annotated[int, UInt(0, U63_MAX)]
    roles: Annotated[int, UInt(0, U16_MAX)]
    sig: Sig

    def body(self) -> bytes:
        return _body(self)

    def signature_valid(self, network: bytes) -> bool:
        return verify(self.peer_id, self.sig, Purpose.PEER_RECORD, network, self.body())

    @classmethod
    def create(
        cls, key: SigningKey, network: bytes, host: str, port: int, api_port: int,
        incarnation: int, roles: int = 0,
    ) -> PeerRecord:
        unsigned = cls(key.public, host, port, api_port, incarnation, roles, bytes(SIGNATURE_SIZE))
        return cls(key.public, host, port, api_port, incarnation, roles,
                   key.sign(Purpose.PEER_RECORD, network, unsigned.body()))


ROLE_PEER = 1
ROLE_CLIENT = 2


@message(5, max_size=256)
class Hello(Message):
    """First handshake message, sent by both sides: who I am, which network, a fresh nonce."""

    network: NetworkId
    protocol: Annotated[int, UInt(0, U16_MAX)]
    peer_id: Key
    role: Annotated[int, UInt(ROLE_PEER, ROLE_CLIENT)]
    nonce: Hash
    ephemeral: Key  # X25519 public key for the session keys


@message(6, max_size=128)
class Auth(Message):
    """Second handshake message: a signature over both Hellos (so over the other side's nonce)."""

    sig: Sig
