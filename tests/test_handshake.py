"""The sans-IO handshake: two state machines joined by lists, no sockets."""

from __future__ import annotations

import os

import pytest

from crypto.errors import RemoteProtocolError
from crypto.keys import Purpose, SigningKey
from crypto.messages import PROTOCOL_VERSION, ROLE_CLIENT, ROLE_PEER, Auth, Hello
from gossip.channel import Opener, Sealer
from gossip.handshake import (
    BadHandshakeSignature,
    Handshake,
    HandshakeError,
    HandshakeRefused,
    MalformedHandshake,
    NetworkMismatch,
    PeerBanned,
    RejectCode,
    RoleRefused,
    SelfConnection,
    State,
    VersionMismatch,
    WrongPeer,
    auth_body,
    reject_payload,
    transcript_hash,
)
from gossip.wire import HandshakeReject

NET = bytes(range(32))


def machines(**kw: object) -> tuple[Handshake, Handshake]:
    i_kw = {k[2:]: v for k, v in kw.items() if k.startswith("i_")}
    r_kw = {k[2:]: v for k, v in kw.items() if k.startswith("r_")}
    i_key = i_kw.pop("identity", None) or SigningKey.generate()
    r_key = r_kw.pop("identity", None) or SigningKey.generate()
    i_net = i_kw.pop("network", NET)
    r_net = r_kw.pop("network", NET)
    return (Handshake(i_key, i_net, initiator=True, **i_kw),  # type: ignore[arg-type]
            Handshake(r_key, r_net, initiator=False, **r_kw))  # type: ignore[arg-type]


def converse(i: Handshake, r: Handshake) -> None:
    """Run the whole conversation in wire order: both Hellos cross, then the Auths."""
    to_r, to_i = [i.start()], [r.start()]
    while to_r or to_i:
        if to_i:
            to_r += i.receive(to_i.pop(0))
        if to_r:
            to_i += r.receive(to_r.pop(0))


def decode_reject(exc: HandshakeError) -> HandshakeReject:
    assert exc.reject is not None
    return HandshakeReject.decode(exc.reject)


def test_success_both_sides_agree_on_identities_and_keys() -> None:
    i, r = machines()
    converse(i, r)
    assert i.done and r.done
    assert i.result.peer_id == r.identity.public
    assert r.result.peer_id == i.identity.public
    assert i.result.role == r.result.role == ROLE_PEER
    assert i.result.transcript == r.result.transcript
    assert i.result.send_key == r.result.recv_key
    assert i.result.recv_key == r.result.send_key
    assert i.result.send_key != i.result.recv_key
    frame = Sealer(i.result.send_key).seal([b"hello", b"world"])
    assert Opener(r.result.recv_key).open(frame) == [b"hello", b"world"]


def test_every_session_has_fresh_keys() -> None:
    ik, rk = SigningKey.generate(), SigningKey.generate()
    keys = set()
    for _ in range(3):
        i, r = machines(i_identity=ik, r_identity=rk)
        converse(i, r)
        keys.add(i.result.send_key)
    assert len(keys) == 3


def test_responder_sends_auth_only_after_verifying_initiator() -> None:
    i, r = machines()
    i_hello, r_hello = i.start(), r.start()
    assert r.receive(i_hello) == []  # nothing until the initiator proved itself
    (i_auth,) = i.receive(r_hello)
    (r_auth,) = r.receive(i_auth)
    assert r.done and not i.done
    assert i.receive(r_auth) == []
    assert i.done


def test_client_role_accepted_only_when_allowed() -> None:
    i, r = machines(i_role=ROLE_CLIENT, r_accept_roles=frozenset({ROLE_PEER, ROLE_CLIENT}))
    converse(i, r)
    assert r.result.role == ROLE_CLIENT

    i, r = machines(i_role=ROLE_CLIENT)
    i_hello = i.start()
    r.start()
    with pytest.raises(RoleRefused) as info:
        r.receive(i_hello)
    assert decode_reject(info.value).code == RejectCode.ROLE
    assert r.state is State.FAILED


def test_initiator_refuses_a_responder_that_is_not_a_peer() -> None:
    i, r = machines(r_role=ROLE_CLIENT)
    i.start()
    with pytest.raises(RoleRefused):
        i.receive(r.start())


def test_network_mismatch_refused_by_both_sides_with_a_reason() -> None:
    other = os.urandom(32)
    i, r = machines(r_network=other)
    i_hello, r_hello = i.start(), r.start()
    with pytest.raises(NetworkMismatch) as at_i:
        i.receive(r_hello)
    with pytest.raises(NetworkMismatch) as at_r:
        r.receive(i_hello)
    assert at_i.value.theirs == other and at_i.value.ours == NET
    assert "is on network" in str(at_i.value)
    reject = decode_reject(at_r.value)
    assert reject.code == RejectCode.NETWORK
    assert other.hex()[:8] in reject.reason and NET.hex()[:8] in reject.reason
    # What the other side sees when the reject arrives instead of an Auth.
    i2, r2 = machines()
    i2.start()
    i2.receive(r2.start())
    with pytest.raises(HandshakeRefused) as refused:
        i2.receive(at_r.value.reject)
    assert refused.value.refusal_code == RejectCode.NETWORK
    assert refused.value.reason == reject.reason
    assert refused.value.reject is None  # no reply to a refusal


def test_version_mismatch() -> None:
    i, r = machines(r_protocol=PROTOCOL_VERSION + 1)
    i_hello, r_hello = i.start(), r.start()
    with pytest.raises(VersionMismatch):
        i.receive(r_hello)
    with pytest.raises(VersionMismatch) as info:
        r.receive(i_hello)
    assert decode_reject(info.value).code == RejectCode.VERSION


def test_wrong_peer_when_dialer_expected_someone_else() -> None:
    expected = SigningKey.generate().public
    i, r = machines(i_expect=expected)
    i.start()
    with pytest.raises(WrongPeer) as info:
        i.receive(r.start())
    assert info.value.expected == expected and info.value.actual == r.identity.public
    assert decode_reject(info.value).code == RejectCode.WRONG_PEER


def test_expected_peer_accepted() -> None:
    rk = SigningKey.generate()
    i, r = machines(i_expect=rk.public, r_identity=rk)
    converse(i, r)
    assert i.result.peer_id == rk.public


def test_claiming_another_identity_is_refused() -> None:
    """The attacker puts the victim's id in its Hello but can only sign with its own key."""
    victim, attacker = SigningKey.generate(), SigningKey.generate()
    _, r = machines()
    r_hello = r.start()
    forged = Hello(NET, PROTOCOL_VERSION, victim.public, ROLE_PEER, os.urandom(32), os.urandom(32)).encode()
    assert r.receive(forged) == []
    body = auth_body(transcript_hash(forged, r_hello), initiator=True)
    with pytest.raises(BadHandshakeSignature) as info:
        r.receive(Auth(attacker.sign(Purpose.HANDSHAKE, NET, body)).encode())
    assert decode_reject(info.value).code == RejectCode.SIGNATURE
    assert info.value.penalty == 10


def test_own_auth_reflected_back_is_refused() -> None:
    i, r = machines()
    i.start()
    (i_auth,) = i.receive(r.start())
    with pytest.raises(BadHandshakeSignature):
        i.receive(i_auth)


def test_signature_for_the_other_side_is_refused() -> None:
    """The side tag is signed: the responder's signature as 'initiator' does not pass as its Auth."""
    i, r = machines()
    i_hello, r_hello = i.start(), r.start()
    i.receive(r_hello)
    transcript = transcript_hash(i_hello, r_hello)
    wrong_side = auth_body(transcript, initiator=True)
    with pytest.raises(BadHandshakeSignature):
        i.receive(Auth(r.identity.sign(Purpose.HANDSHAKE, NET, wrong_side)).encode())


def test_signature_on_another_network_is_refused() -> None:
    i, r = machines()
    i_hello, r_hello = i.start(), r.start()
    i.receive(r_hello)
    transcript = transcript_hash(i_hello, r_hello)
    body = auth_body(transcript, initiator=False)
    with pytest.raises(BadHandshakeSignature):
        i.receive(Auth(r.identity.sign(Purpose.HANDSHAKE, os.urandom(32), body)).encode())


def _tamper(hello_bytes: bytes, field: str) -> bytes:
    hello = Hello.decode(hello_bytes)
    values = {f: getattr(hello, f) for f in ("network", "protocol", "peer_id", "role", "nonce", "ephemeral")}
    values[field] = os.urandom(32)
    return Hello(**values).encode()


@pytest.mark.parametrize("field", ["nonce", "ephemeral"])
@pytest.mark.parametrize("whose", ["initiator", "responder"])
def test_tampered_hello_refused(field: str, whose: str) -> None:
    """A man in the middle changing either Hello in transit breaks the transcript signature."""
    i, r = machines()
    i_hello, r_hello = i.start(), r.start()
    if whose == "initiator":
        i_hello = _tamper(i_hello, field)
    else:
        r_hello = _tamper(r_hello, field)
    assert r.receive(i_hello) == []
    (i_auth,) = i.receive(r_hello)
    with pytest.raises(BadHandshakeSignature):
        r.receive(i_auth)


@pytest.mark.parametrize("payload", [b"", b"\xff", b"garbage bytes", bytes(range(200)),
                                     Auth(bytes(64)).encode(), HandshakeReject(1, "x").encode()[:-1]],
                         ids=["empty", "ff", "text", "200-bytes", "auth-first", "truncated-reject"])
def test_malformed_first_frame(payload: bytes) -> None:
    i, _ = machines()
    i.start()
    with pytest.raises(MalformedHandshake) as info:
        i.receive(payload)
    assert decode_reject(info.value).code == RejectCode.PROTOCOL
    assert i.state is State.FAILED


def test_hello_where_auth_expected() -> None:
    i, r = machines()
    i.start()
    r_hello = r.start()
    i.receive(r_hello)
    with pytest.raises(MalformedHandshake):
        i.receive(r_hello)


def test_admit_policy_refuses_with_banned() -> None:
    def admit(peer_id: bytes, role: int) -> None:
        raise PeerBanned("banned here for misbehaviour")

    i, r = machines(r_admit=admit)
    i_hello, r_hello = i.start(), r.start()
    r.receive(i_hello)
    (i_auth,) = i.receive(r_hello)
    with pytest.raises(PeerBanned) as info:
        r.receive(i_auth)
    with pytest.raises(HandshakeRefused) as refused:
        i.receive(info.value.reject)
    assert refused.value.refusal_code == RejectCode.BANNED


def test_connecting_to_ourselves() -> None:
    key = SigningKey.generate()
    i, r = machines(i_identity=key, r_identity=key)
    i.start()
    with pytest.raises(SelfConnection):
        i.receive(r.start())


def test_moves_outside_the_table_are_errors() -> None:
    i, r = machines()
    with pytest.raises(RuntimeError):
        i.receive(b"anything")
    with pytest.raises(RuntimeError):
        _ = i.result
    converse(i, r)
    with pytest.raises(RuntimeError):
        i.receive(b"anything")
    with pytest.raises(RuntimeError):
        i.start()


def test_errors_are_typed_remote_errors() -> None:
    for cls in (NetworkMismatch, VersionMismatch, WrongPeer, BadHandshakeSignature, RoleRefused,
                HandshakeRefused, MalformedHandshake, PeerBanned, SelfConnection):
        assert issubclass(cls, HandshakeError)
        assert issubclass(cls, RemoteProtocolError)


def test_reject_reason_is_cut_to_the_schema_limit() -> None:
    reject = HandshakeReject.decode(reject_payload(RejectCode.PROTOCOL, "é\x00" * 500))
    assert len(reject.reason.encode()) <= 200
    assert "\x00" not in reject.reason


def test_initiator_admit_policy_refuses_before_the_responder_is_done() -> None:
    def admit(peer_id: bytes, role: int) -> None:
        raise PeerBanned("we banned you")

    i, r = machines(i_admit=admit)
    i_hello, r_hello = i.start(), r.start()
    r.receive(i_hello)
    with pytest.raises(PeerBanned) as info:
        i.receive(r_hello)
    assert r.state is State.AWAIT_AUTH  # so the reject reads as a reject, not a sealed frame
    with pytest.raises(HandshakeRefused) as refused:
        r.receive(info.value.reject)
    assert refused.value.refusal_code == RejectCode.BANNED
