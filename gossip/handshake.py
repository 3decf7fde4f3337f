"""The signed mutual handshake (sans-IO): bytes in, bytes out, no sockets, no clock.

Rules of the conversation, all of them here:

1. Both sides send a `Hello` as their first frame (network id, protocol version, peer id, role, a
   fresh 32-byte nonce, an ephemeral X25519 key). The initiator sends first; the responder may send
   its own at once or, as the transport does, only after `screen_hello` passed the initiator's.
2. Each side checks the other's Hello (network, version, role, expected peer id). A mismatch is an
   error carrying a `HandshakeReject` payload to send before closing, so the other side learns why.
3. The initiator, having both Hellos, sends `Auth`: its Ed25519 signature over
   `side || sha256(initiator_hello || responder_hello)`. The transcript hash covers both nonces, so
   the signature is fresh; the side tag stops a signature from being reflected back as the other
   side's.
4. The responder verifies it, asks the caller's `admit` policy (bans, room), and only then sends its
   own `Auth`, so a refused initiator gets a clear `HandshakeReject` before any encrypted traffic.
   (Before any signature work, on the initiator's Hello, the responder also asks its `screen`
   policy: that is where a flood of handshakes from fresh keys is refused cheaply.)
   (The initiator asks its `admit` policy on the responder's Hello, for the same reason: the
   responder must not be done yet when the refusal arrives.)
5. The initiator verifies the responder's Auth. Both sides now derive the session keys:
   X25519 shared secret -> HKDF-SHA256(salt = transcript hash, info "meshpay/session/1") -> one
   32-byte key per direction.

A `HandshakeReject` is accepted at any point the machine waits for a message. Any move not in the
table is an error, never a silent no-op; the machine does not know about sockets or time (the
driver enforces the timeout and raises `HandshakeTimeout`).
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import DecodeError, RemoteProtocolError
from crypto.keys import Purpose, SigningKey, verify
from crypto.messages import PROTOCOL_VERSION, ROLE_CLIENT, ROLE_PEER, Auth, Hello
from crypto.schema import decode_any
from gossip.wire import HandshakeReject

MAX_HANDSHAKE_FRAME = 1024  # a Hello is < 256 bytes; nothing bigger is read before authentication
SESSION_INFO = b"meshpay/session/1"
_SIDE_INITIATOR = b"\x01initiator"
_SIDE_RESPONDER = b"\x02responder"
_ROLE_NAMES = {ROLE_PEER: "peer", ROLE_CLIENT: "client"}


class RejectCode(enum.IntEnum):
    """Why a handshake was refused; sent in `HandshakeReject.code`."""

    PROTOCOL = 1
    NETWORK = 2
    VERSION = 3
    WRONG_PEER = 4
    SIGNATURE = 5
    ROLE = 6
    BANNED = 7
    SELF = 8
    BUSY = 9


class HandshakeError(RemoteProtocolError):
    """The handshake failed. `reject` holds the HandshakeReject payload to send before closing
    (None when the other side needs no explanation, e.g. it refused us)."""

    code: ClassVar[RejectCode | None] = RejectCode.PROTOCOL
    reject: bytes | None = None

    def reject_reason(self) -> str:
        """The reason as the other side should read it."""
        return str(self)


class MalformedHandshake(HandshakeError):
    """Bytes that are not the handshake message expected at this point."""


class NetworkMismatch(HandshakeError):
    code = RejectCode.NETWORK
    penalty = 0  # a misconfigured node, not an attacker

    def __init__(self, ours: bytes, theirs: bytes) -> None:
        super().__init__(f"is on network {theirs.hex()[:8]}… not {ours.hex()[:8]}…")
        self.ours, self.theirs = ours, theirs

    def reject_reason(self) -> str:
        return f"wrong network: you are on {self.theirs.hex()[:8]}…, this node is on {self.ours.hex()[:8]}…"


class VersionMismatch(HandshakeError):
    code = RejectCode.VERSION
    penalty = 0


class WrongPeer(HandshakeError):
    """The dialer expected one peer id and met another (a stale address, usually)."""

    code = RejectCode.WRONG_PEER
    penalty = 0

    def __init__(self, expected: bytes, actual: bytes) -> None:
        super().__init__(f"is peer {actual.hex()[:12]}…, expected {expected.hex()[:12]}…")
        self.expected, self.actual = expected, actual

    def reject_reason(self) -> str:
        return f"wrong peer: expected {self.expected.hex()[:12]}…, you are {self.actual.hex()[:12]}…"


class SelfConnection(HandshakeError):
    """We reached our own listener (our address is in the seed list)."""

    code = RejectCode.SELF
    penalty = 0


class BadHandshakeSignature(HandshakeError):
    code = RejectCode.SIGNATURE


class RoleRefused(HandshakeError):
    code = RejectCode.ROLE
    penalty = 0


class PeerBanned(HandshakeError):
    """Raised by an `admit` policy: this (authenticated) peer is banned for now."""

    code = RejectCode.BANNED
    penalty = 0


class Busy(HandshakeError):
    """Raised by a `screen` or `admit` policy: no room for this kind of connection right now.

    `reason` names the limit (a key of the transport's refusal counters)."""

    code = RejectCode.BUSY
    penalty = 0

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class HandshakeRefused(HandshakeError):
    """The other side sent a HandshakeReject; `code` and `reason` are what it said."""

    code = None
    penalty = 0

    def __init__(self, code: int, reason: str) -> None:
        try:
            name = RejectCode(code).name.lower()
        except ValueError:
            name = f"code {code}"
        super().__init__(f"refused by the other side ({name}): {reason}")
        self.refusal_code, self.reason = code, reason


class HandshakeTimeout(HandshakeError):
    code = None
    penalty = 1


class HandshakeClosed(HandshakeError):
    """The connection ended before the handshake finished."""

    code = None
    penalty = 0


class State(enum.Enum):
    IDLE = "idle"
    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    peer_id: bytes  # proven: the other side signed our fresh nonce with it
    role: int
    initiator: bool
    transcript: bytes
    send_key: bytes
    recv_key: bytes


# Who may admit an authenticated remote: raises a HandshakeError (e.g. PeerBanned) to refuse.
# A `screen` has the same shape but sees only the unproven claim of the Hello, before any
# signature work: it may refuse cheaply (a rate limit), never grant anything.
Admit = Callable[[bytes, int], None]


def transcript_hash(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    # CBOR is self-delimiting, so the concatenation of two Hellos is unambiguous.
    return hashlib.sha256(initiator_hello + responder_hello).digest()


def auth_body(transcript: bytes, *, initiator: bool) -> bytes:
    """The bytes an Auth signature covers (under Purpose.HANDSHAKE and the network id)."""
    return (_SIDE_INITIATOR if initiator else _SIDE_RESPONDER) + transcript


def reject_payload(code: RejectCode, reason: str) -> bytes:
    """A HandshakeReject, with the reason cut to what the schema allows."""
    text = "".join(c for c in reason if c.isprintable())
    text = text.encode("utf-8")[:200].decode("utf-8", "ignore")
    return HandshakeReject(int(code), text).encode()


def derive_session_keys(shared: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    """(initiator->responder key, responder->initiator key)."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=transcript, info=SESSION_INFO).derive(shared)
    return okm[:32], okm[32:]


class Handshake:
    """One side of one handshake. Call `start()` once, then `receive()` each frame until `done`."""

    def __init__(
        self,
        identity: SigningKey,
        network_id: bytes,
        *,
        initiator: bool,
        role: int = ROLE_PEER,
        expect: bytes | None = None,
        accept_roles: frozenset[int] = frozenset({ROLE_PEER}),
        admit: Admit | None = None,
        screen: Admit | None = None,
        protocol: int = PROTOCOL_VERSION,
    ) -> None:
        self.identity = identity
        self.network_id = network_id
        self.initiator = initiator
        self.role = role
        self.expect = expect
        self.accept_roles = accept_roles
        self.admit = admit
        self.screen = screen
        self._screened = False
        self.protocol = protocol
        self.state = State.IDLE
        self._ephemeral: X25519PrivateKey | None = None
        self._own_hello = b""
        self._remote: Hello | None = None
        self._transcript = b""
        self._result: HandshakeResult | None = None

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    @property
    def result(self) -> HandshakeResult:
        if self._result is None:
            raise RuntimeError(f"handshake not finished (state {self.state.value})")
        return self._result

    def start(self) -> bytes:
        """Our Hello, to send as the first frame."""
        if self.state is not State.IDLE:
            raise RuntimeError(f"start() in state {self.state.value}")
        self._ephemeral = X25519PrivateKey.generate()
        hello = Hello(
            self.network_id, self.protocol, self.identity.public, self.role, os.urandom(32),
            self._ephemeral.public_key().public_bytes_raw(),
        )
        self._own_hello = hello.encode()
        self.state = State.AWAIT_HELLO
        return self._own_hello

    def screen_hello(self, payload: bytes) -> None:
        """Responder, before `start()`: run the `screen` policy on the initiator's (unverified)
        Hello, so that a refusal costs no key generation. Raises a HandshakeError carrying its
        reject, like `receive`; the Hello is then fed to `receive` as usual."""
        if self.initiator or self.state is not State.IDLE:
            raise RuntimeError("screen_hello() is for a responder that has not started")
        if self.screen is None:
            return
        try:
            msg = decode_any(payload, max_size=MAX_HANDSHAKE_FRAME)
        except DecodeError as exc:
            raise self._failed(MalformedHandshake(f"expected Hello: {exc}")) from exc
        if type(msg) is Hello:
            try:
                self.screen(msg.peer_id, msg.role)
            except HandshakeError as exc:
                self._failed(exc)
                raise
            self._screened = True

    def _failed(self, exc: HandshakeError) -> HandshakeError:
        self.state = State.FAILED
        if exc.code is not None and exc.reject is None:
            exc.reject = reject_payload(exc.code, exc.reject_reason())
        return exc

    def receive(self, payload: bytes) -> list[bytes]:
        """Feed one frame from the other side; returns the frames to send in reply."""
        handler = _TABLE.get(self.state)
        if handler is None:
            raise RuntimeError(f"receive() in state {self.state.value}")
        try:
            msg = self._parse(payload)
            if type(msg) is HandshakeReject:
                raise HandshakeRefused(msg.code, msg.reason)
            return handler(self, msg, payload)
        except HandshakeError as exc:
            self._failed(exc)
            raise

    def fail(self, code: RejectCode, reason: str) -> bytes:
        """Abandon the handshake for a reason of our own; returns the reject payload to send."""
        self.state = State.FAILED
        return reject_payload(code, reason)

    def _parse(self, payload: bytes) -> Hello | Auth | HandshakeReject:
        expected = Hello if self.state is State.AWAIT_HELLO else Auth
        try:
            msg = decode_any(payload, max_size=MAX_HANDSHAKE_FRAME)
        except DecodeError as exc:
            raise MalformedHandshake(f"expected {expected.__name__}: {exc}") from exc
        if type(msg) not in (expected, HandshakeReject):
            raise MalformedHandshake(f"expected {expected.__name__}, got {type(msg).__name__}")
        return msg  # type: ignore[return-value]

    def _on_hello(self, hello: Hello, raw: bytes) -> list[bytes]:
        if hello.network != self.network_id:
            raise NetworkMismatch(self.network_id, hello.network)
        if hello.protocol != self.protocol:
            raise VersionMismatch(f"speaks protocol {hello.protocol}, we speak {self.protocol}")
        allowed = frozenset({ROLE_PEER}) if self.initiator else self.accept_roles
        if hello.role not in allowed:
            raise RoleRefused(f"{_ROLE_NAMES.get(hello.role, hello.role)} connections are not accepted here")
        if hello.peer_id == self.identity.public:
            raise SelfConnection("connected to ourselves")
        if self.expect is not None and hello.peer_id != self.expect:
            raise WrongPeer(self.expect, hello.peer_id)
        if not self.initiator and self.screen is not None and not self._screened:
            self.screen(hello.peer_id, hello.role)
        if self.initiator and self.admit is not None:
            # The dialer decides before the responder considers the handshake done, so its refusal
            # reaches the responder as a HandshakeReject, not as a garbled first sealed frame.
            self.admit(hello.peer_id, hello.role)
        self._remote = hello
        first, second = (self._own_hello, raw) if self.initiator else (raw, self._own_hello)
        self._transcript = transcript_hash(first, second)
        self.state = State.AWAIT_AUTH
        return [self._auth()] if self.initiator else []

    def _on_auth(self, auth: Auth, _raw: bytes) -> list[bytes]:
        remote = self._remote
        assert remote is not None and self._ephemeral is not None
        body = auth_body(self._transcript, initiator=not self.initiator)
        if not verify(remote.peer_id, auth.sig, Purpose.HANDSHAKE, self.network_id, body):
            raise BadHandshakeSignature(
                f"handshake signature does not verify for {remote.peer_id.hex()[:12]}…"
            )
        if not self.initiator and self.admit is not None:
            self.admit(remote.peer_id, remote.role)
        try:
            shared = self._ephemeral.exchange(X25519PublicKey.from_public_bytes(remote.ephemeral))
        except ValueError as exc:  # a low-order point gives an all-zero secret
            raise MalformedHandshake(f"unusable ephemeral key: {exc}") from exc
        i2r, r2i = derive_session_keys(shared, self._transcript)
        self._result = HandshakeResult(
            peer_id=remote.peer_id, role=remote.role, initiator=self.initiator,
            transcript=self._transcript,
            send_key=i2r if self.initiator else r2i, recv_key=r2i if self.initiator else i2r,
        )
        self._ephemeral = None
        self.state = State.DONE
        return [] if self.initiator else [self._auth()]

    def _auth(self) -> bytes:
        body = auth_body(self._transcript, initiator=self.initiator)
        return Auth(self.identity.sign(Purpose.HANDSHAKE, self.network_id, body)).encode()


_TABLE: dict[State, Callable[[Handshake, Hello | Auth, bytes], list[bytes]]] = {
    State.AWAIT_HELLO: Handshake._on_hello,  # type: ignore[dict-item]
    State.AWAIT_AUTH: Handshake._on_auth,  # type: ignore[dict-item]
}
