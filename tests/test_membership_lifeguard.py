"""Lifeguard suspicion confirmations in the sans-IO membership core (no sockets, no clock).

Lifeguard shrinks a suspicion's timeout as *independent* members confirm it. In memberlist a
member whose own probe of an already-suspected peer fails counts as such a confirmation (and
re-gossips it): "this allows for multiple independent confirmations to flow even when a node
probes a node that's already suspect". Without it, once the first suspicion has spread by gossip
(faster than anybody's next probe), nobody's own failed probe would count and every suspicion would
run to its ceiling: detection would take ~suspicion_max_mult times longer than it needs to.
"""

from __future__ import annotations

from crypto.keys import SigningKey
from gossip.effects import Send
from gossip.membership import Membership, MembershipConfig
from gossip.wire import ALIVE, SUSPECT, Ack, Gossip, Ping, Update

NETWORK = bytes(range(32))
COMMITTEE = frozenset(SigningKey.from_seed(bytes([i]) * 32).public for i in range(5))


def _member(i: int) -> Membership:
    return Membership(SigningKey.from_seed(bytes([i]) * 32), NETWORK, "127.0.0.1", 9000 + i,
                      committee=COMMITTEE, config=MembershipConfig())


def test_own_failed_probe_confirms_an_existing_suspicion() -> None:
    me = _member(0)
    others = [_member(i) for i in range(1, 5)]
    friend, target = others[0], others[-1]
    now = 0.0
    me.handle(friend.id, Gossip(tuple(Update(ALIVE, o.id, 0, o.id, o.record.encode()) for o in others)), now)
    assert all(me.state_of(o.id) == ALIVE for o in others)
    me.start(now)
    me.out.drain()

    # `friend` suspected `target` first and we heard it by gossip.
    me.handle(friend.id, Gossip((Update(SUSPECT, target.id, 0, friend.id, b""),)), now)
    suspected = me.members[target.id]
    assert suspected.state == SUSPECT
    first_deadline = suspected.suspect_deadline

    # Now our own probes run: everybody answers except `target`.
    probed_target = False
    while now < first_deadline - 1.0 and not probed_target:
        now += 0.05
        me.tick(now)
        for effect in me.out.drain():
            if type(effect) is Send and type(effect.msg) is Ping:
                if effect.msg.target == target.id:
                    probed_target = True
                else:
                    me.handle(effect.dst, Ack(effect.msg.seq, ()), now)
    assert probed_target, "never probed the suspected member"
    failures = me.counters["probe_failures"]
    until = now + me.config.probe_interval * 2
    while now < until and me.counters["probe_failures"] == failures:
        now += 0.05
        me.tick(now)
        for effect in me.out.drain():
            if type(effect) is Send and type(effect.msg) is Ping and effect.msg.target != target.id:
                me.handle(effect.dst, Ack(effect.msg.seq, ()), now)
    assert me.counters["probe_failures"] > failures, "our probe of the suspected member did not fail"
    assert me.members[target.id].state == SUSPECT

    # Our own failed probe is independent evidence: it should count and shorten the timeout.
    assert me.id in me.members[target.id].confirmations
    assert me.members[target.id].suspect_deadline < first_deadline
