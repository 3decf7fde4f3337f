"""Gossip-layer messages: SWIM membership, epidemic broadcast, handshake refusals (kinds 20-39)."""

from __future__ import annotations

from typing import Annotated

from crypto.messages import Hash, Key
from crypto.schema import (
    U16_MAX,
    U32_MAX,
    U63_MAX,
    Bool,
    Bytes,
    ListOf,
    Message,
    Nested,
    Text,
    UInt,
    message,
)

ALIVE, SUSPECT, DEAD, LEFT = 0, 1, 2, 3
STATE_NAMES = {ALIVE: "alive", SUSPECT: "suspect", DEAD: "dead", LEFT: "left"}

MAX_PIGGYBACK = 32
MAX_SYNC_MEMBERS = 1600  # x ~620 B worst case: fits one 1 MiB frame
MAX_BROADCAST_PAYLOAD = 64 * 1024
MAX_DIGEST_IDS = 1024
SHORT_ID = 8
MAX_SKIP = 64


@message(26, max_size=1024)
class Update(Message):
    """A membership fact: `peer_id` is in `state` as of `incarnation`.

    `record` is the peer's own signed PeerRecord (canonical bytes) and is required for `alive`
    (only the peer itself can make it); suspicions and deaths are claims by others and may omit it.
    `origin` is unsigned and only ever speeds a suspicion up within its configured bounds.
    """

    state: Annotated[int, UInt(ALIVE, LEFT)]
    peer_id: Key
    incarnation: Annotated[int, UInt(0, U63_MAX)]
    origin: Key  # who first claimed it (Lifeguard counts independent suspicions)
    record: Annotated[bytes, Bytes(max_size=512)]


Updates = Annotated[tuple[Update, ...], ListOf(Nested(Update), MAX_PIGGYBACK)]
Seq = Annotated[int, UInt(0, U32_MAX)]


@message(20, max_size=64 * 1024)
class Ping(Message):
    seq: Seq
    target: Key
    updates: Updates


@message(21, max_size=64 * 1024)
class Ack(Message):
    seq: Seq
    updates: Updates


@message(22, max_size=64 * 1024)
class PingReq(Message):
    """Ask the receiver to probe `target` for us and tell us if it answered."""

    seq: Seq
    target: Key
    updates: Updates


@message(23, max_size=64)
class Nack(Message):
    """Lifeguard: the relay could not reach the target either (so our own link is probably fine)."""

    seq: Seq


@message(24, max_size=64 * 1024)
class Gossip(Message):
    updates: Annotated[tuple[Update, ...], ListOf(Nested(Update), 2 * MAX_PIGGYBACK)]


@message(25, max_size=(1 << 20) - 1024)
class Sync(Message):
    """Push-pull anti-entropy: the sender's whole member table (with records)."""

    join: Annotated[bool, Bool()]
    reply: Annotated[bool, Bool()]
    members: Annotated[tuple[Update, ...], ListOf(Nested(Update), MAX_SYNC_MEMBERS)]


@message(27, max_size=MAX_BROADCAST_PAYLOAD + 128 + MAX_SKIP * 10)
class Push(Message):
    """An epidemic broadcast: `id` is the hash of `payload`; `hops` counts relays (for stats).

    `skip` lists (8-byte id prefixes of) peers that already have it or were just sent it, so relays
    do not send it there again: in small networks this stops most duplicate traffic.
    """

    id: Hash
    hops: Annotated[int, UInt(0, 255)]
    skip: Annotated[tuple[bytes, ...], ListOf(Bytes(size=SHORT_ID), MAX_SKIP)]
    payload: Annotated[bytes, Bytes(max_size=MAX_BROADCAST_PAYLOAD)]


@message(28, max_size=16 * 1024)
class IHave(Message):
    """Pull repair: short ids of broadcasts the sender holds."""

    ids: Annotated[tuple[bytes, ...], ListOf(Bytes(size=SHORT_ID), MAX_DIGEST_IDS)]


@message(29, max_size=16 * 1024)
class IWant(Message):
    ids: Annotated[tuple[bytes, ...], ListOf(Bytes(size=SHORT_ID), MAX_DIGEST_IDS)]


@message(30, max_size=512)
class HandshakeReject(Message):
    """Sent in the clear before closing, so the other side learns why (wrong network, version...)."""

    code: Annotated[int, UInt(0, U16_MAX)]
    reason: Annotated[str, Text(200)]
