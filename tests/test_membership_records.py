"""Peer records in the membership core (sans-IO): only a peer can say where it is.

A forged record (signed by someone else, or not matching its update) is dropped and its relay
penalised, while honest updates keep flowing; a record moves a peer only with a higher incarnation;
an unsigned suspicion cannot push a peer's incarnation past its own signed one.
"""

from __future__ import annotations

import random

from crypto.keys import SigningKey
from crypto.messages import PeerRecord
from gossip.effects import Learn, Penalize
from gossip.membership import Membership
from gossip.wire import ALIVE, SUSPECT, Gossip, Update

NET = bytes(range(32))


def key(i: int) -> SigningKey:
    return SigningKey.from_seed(bytes([i]) * 32)


COMMITTEE = frozenset(key(i).public for i in range(8))


def member(i: int = 0) -> Membership:
    m = Membership(key(i), NET, "127.0.0.1", 7000 + i, committee=COMMITTEE, rng=random.Random(i))
    m.start(0.0)
    m.out.drain()
    return m


def alive(k: SigningKey, port: int, incarnation: int = 0, signer: SigningKey | None = None) -> Update:
    record = PeerRecord.create(signer or k, NET, "127.0.0.1", port, 0, incarnation)
    if signer is not None:  # a record for k's id, signed by someone else
        record = PeerRecord(k.public, record.host, record.port, record.api_port, record.incarnation,
                            record.roles, record.sig)
    return Update(ALIVE, k.public, incarnation, k.public, record.encode())


def test_forged_record_is_dropped_and_its_relay_penalised() -> None:
    m = member()
    relay, victim, honest = key(1), key(2), key(3)
    m.handle(relay.public, Gossip((alive(victim, 9999, signer=relay), alive(honest, 7003))), 1.0)
    effects = m.out.drain()
    assert victim.public not in m.members, "a record signed by someone else was accepted"
    assert m.counters["forged_records"] == 1
    assert any(isinstance(e, Penalize) and e.peer_id == relay.public and e.penalty >= 10 for e in effects)
    # The honest update in the same message was still applied.
    assert m.members[honest.public].state == ALIVE
    assert [e.record.port for e in effects if isinstance(e, Learn)] == [7003]


def test_record_that_does_not_match_its_update_is_dropped() -> None:
    m = member()
    relay, a, b = key(1), key(2), key(3)
    record_of_b = PeerRecord.create(b, NET, "127.0.0.1", 7003, 0, 0).encode()
    m.handle(relay.public, Gossip((Update(ALIVE, a.public, 0, a.public, record_of_b),)), 1.0)
    assert a.public not in m.members and m.counters["forged_records"] == 1


def test_address_moves_only_with_a_higher_incarnation() -> None:
    m = member()
    relay, peer = key(1), key(2)
    m.handle(relay.public, Gossip((alive(peer, 7002, 1),)), 1.0)
    m.handle(relay.public, Gossip((alive(peer, 8002, 1),)), 2.0)  # same incarnation, new address: stale
    assert m.members[peer.public].record.port == 7002
    m.handle(relay.public, Gossip((alive(peer, 8002, 2),)), 3.0)
    assert m.members[peer.public].record.port == 8002


def test_unsigned_suspicion_cannot_outrun_the_signed_incarnation() -> None:
    m = member()
    relay, peer = key(1), key(2)
    m.handle(relay.public, Gossip((alive(peer, 7002, 3),)), 1.0)
    # A claim far above the peer's own incarnation would leave it unable to refute: ignored.
    m.handle(relay.public, Gossip((Update(SUSPECT, peer.public, 2**62, relay.public, b""),)), 2.0)
    assert m.members[peer.public].state == ALIVE and m.members[peer.public].incarnation == 3
    # A suspicion at its real incarnation is taken.
    m.handle(relay.public, Gossip((Update(SUSPECT, peer.public, 3, relay.public, b""),)), 3.0)
    assert m.members[peer.public].state == SUSPECT


def test_suspicion_of_ourselves_is_refuted_with_a_new_signed_record() -> None:
    m = member()
    relay = key(1)
    before = m.incarnation
    m.handle(relay.public, Gossip((Update(SUSPECT, m.id, before, relay.public, b""),)), 1.0)
    assert m.incarnation == before + 1
    assert m.record.incarnation == before + 1 and m.record.signature_valid(NET)
