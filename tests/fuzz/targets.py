"""Fuzz targets: every decoder of outside input, each with the one error type it documents.

A target takes bytes, runs one decoder on them, and swallows only that decoder's documented error;
anything else escapes and is a finding. Each target also names seed inputs (valid encodings) for
mutation. The short run (tests/fuzz/test_fuzz.py) and the long one (`make fuzz`,
tests/fuzz/run.py) use the same targets.

| target | decoder | documented error |
|---|---|---|
| message | `crypto.schema.decode_any`, every registered kind | `DecodeError` |
| frame | `gossip.framing.FrameDecoder` (fed in pieces), then `close` | `FrameError` |
| channel | `gossip.channel.unpack` and `Opener.open` | `ChannelError` |
| handshake | `gossip.handshake.Handshake.receive`: a Hello, or an Auth after a valid Hello | `HandshakeError` |
| genesis | `peer.genesis.parse` (what `genesis.load` reads a file with) | `GenesisError` |
| keystore | `crypto.keystore.info`, and `unseal` when the cost allows | `KeystoreError` |
| api_json | `peer.api_json.loads` (every HTTP request body) | `BadJson` |
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import crypto.messages  # noqa: F401  (registers the core kinds)
import gossip.wire  # noqa: F401
import peer.client_wire
import peer.lookup
import peer.wire  # noqa: F401
from crypto import keystore
from crypto.errors import DecodeError, KeystoreError
from crypto.keys import SigningKey
from crypto.messages import Certificate, Hello, Order, PeerRecord, Vote
from crypto.schema import decode_any, registered
from gossip import channel, framing
from gossip.handshake import Handshake, HandshakeError
from gossip.wire import HandshakeReject
from peer import api_json, genesis
from peer.genesis import DEFAULT_VNODES, Allocation, Genesis
from peer.lookup import PaymentQuery, PaymentReport
from peer.wire import CertDelivery, Refusal, VoteRequest
from tests.strategies import maximal_message, minimal_message

NETWORK = bytes(range(32))
SMALL_SCRYPT_N = 1 << 10  # unseal only keystores this cheap: the cost cap is the keystore's business


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


def _key(i: int) -> SigningKey:
    return SigningKey.from_seed(random.Random(f"fuzz/{i}").randbytes(32))


# ---- messages ---------------------------------------------------------------------------------------
def _order(seq: int = 0) -> Order:
    return Order.create(_key(1), NETWORK, _key(2).public, 1234, seq, "fuzz")


@cache
def _message_seeds() -> list[bytes]:
    order = _order()
    vote = Vote.create(_key(3), NETWORK, order)
    cert = Certificate(order, (vote, Vote.create(_key(4), NETWORK, order)))
    record = PeerRecord.create(_key(5), NETWORK, "127.0.0.1", 7000, 8000, 3, 1)
    msgs = [order, vote, cert, record, VoteRequest(order), CertDelivery(cert),
            Refusal(order.id, 8, "locked", order.encode()), PaymentQuery(order.id),
            PaymentReport(order.id, 3, cert.encode()), HandshakeReject(3, "wrong network")]
    # Every registered kind, at its smallest and (when not huge) at its largest.
    for cls in registered().values():
        msgs.append(minimal_message(cls))
        biggest = maximal_message(cls)
        if len(biggest.encode()) <= 4096:
            msgs.append(biggest)
    return [m.encode() for m in msgs]


def fuzz_message(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_any(data)


# ---- framing and channel -----------------------------------------------------------------------------
def fuzz_frame(data: bytes) -> None:
    decoder = framing.FrameDecoder(max_frame=4096)
    cut = data[0] if data else 0
    try:
        for piece in (data[1 : 1 + cut], data[1 + cut :]):
            decoder.feed(piece)
        decoder.close()
    except framing.FrameError:
        pass


def _frame_seeds() -> list[bytes]:
    return [b"\x05" + b"".join(framing.encode_frame(m) for m in _message_seeds()[:3]), b"\x00" + bytes(4)]


_CHANNEL_KEY = bytes(32)


def fuzz_channel(data: bytes) -> None:
    with contextlib.suppress(channel.ChannelError):
        channel.unpack(data)
    with contextlib.suppress(channel.ChannelError):
        channel.Opener(_CHANNEL_KEY).open(data)


def _channel_seeds() -> list[bytes]:
    batch = _message_seeds()[:4]
    return [channel.pack(batch), channel.Sealer(_CHANNEL_KEY).seal(batch)]


# ---- handshake ---------------------------------------------------------------------------------------
_RESPONDER, _INITIATOR = _key(10), _key(11)


def fuzz_handshake(data: bytes) -> None:
    """First byte even: the responder's first frame is `data[1:]` (a Hello, it expects); odd: a
    valid Hello first, then `data[1:]` (an Auth, it expects)."""
    responder = Handshake(_RESPONDER, NETWORK, initiator=False)
    responder.start()
    try:
        if data[:1] and data[0] & 1:
            initiator = Handshake(_INITIATOR, NETWORK, initiator=True)
            responder.receive(initiator.start())
        responder.receive(data[1:])
    except HandshakeError:
        pass


def _handshake_seeds() -> list[bytes]:
    initiator = Handshake(_INITIATOR, NETWORK, initiator=True)
    responder = Handshake(_RESPONDER, NETWORK, initiator=False)
    hello = initiator.start()
    responder_hello = responder.start()
    auth = initiator.receive(responder_hello)[0]
    return [b"\x00" + hello, b"\x01" + auth, b"\x00" + HandshakeReject(1, "no").encode(),
            b"\x00" + Hello(NETWORK, 1, _key(12).public, 1, bytes(32), bytes(32)).encode()]


# ---- files and bodies -------------------------------------------------------------------------------------
def fuzz_genesis(data: bytes) -> None:
    with contextlib.suppress(genesis.GenesisError):
        genesis.parse(data)


def _genesis_seeds() -> list[bytes]:
    g = Genesis("fuzz", tuple(_key(i).public for i in range(5)), 4, 3, DEFAULT_VNODES, 2,
                tuple(Allocation(_key(20 + i).public, 1000 + i) for i in range(3)), bytes(16)).validate()
    return [json.dumps(genesis.to_json(g), indent=2).encode(), json.dumps(genesis.to_json(g)).encode()]


def fuzz_keystore(data: bytes) -> None:
    try:
        info = keystore.info(data)
    except KeystoreError:
        return
    if json.loads(data)["kdf"]["n"] <= SMALL_SCRYPT_N:
        with contextlib.suppress(KeystoreError):
            keystore.unseal(data, "fuzz password")
    assert info.kind in keystore.KINDS


@cache
def _keystore_seeds() -> list[bytes]:
    return [keystore.seal(_key(30), "fuzz password", kind="account", name="fuzz", scrypt_n=SMALL_SCRYPT_N)]


def fuzz_api_json(data: bytes) -> None:
    with contextlib.suppress(api_json.BadJson):
        api_json.loads(data)


def _api_json_seeds() -> list[bytes]:
    order = _order().encode().hex()
    return [json.dumps({"order": order, "wait": "settled", "timeout": 10}).encode(),
            b'{"a": [1, -2.5e3, true, null, {"b": "\\u00e9"}], "c": 12345678901234567890}']


TARGETS = {t.name: t for t in (
    Target("message", fuzz_message, _message_seeds),
    Target("frame", fuzz_frame, _frame_seeds),
    Target("channel", fuzz_channel, _channel_seeds),
    Target("handshake", fuzz_handshake, _handshake_seeds),
    Target("genesis", fuzz_genesis, _genesis_seeds),
    Target("keystore", fuzz_keystore, _keystore_seeds),
    Target("api_json", fuzz_api_json, _api_json_seeds),
)}
