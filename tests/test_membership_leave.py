"""A graceful departure sticks (sans-IO, no sockets, no clock).

The members re-gossip a departure at once, so its echo reaches the departing peer while it is
still flushing its queues. A peer that took that echo for a claim against itself would refute
it with a higher incarnation, the members would take it for alive again and then, once it is
gone, for dead: every graceful stop would read as a crash (seen in CI under load).
"""

from __future__ import annotations

import math
import random

from crypto.keys import SigningKey
from gossip.effects import Send
from gossip.membership import Membership
from gossip.wire import ALIVE, LEFT, Gossip, Update

NETWORK = bytes(range(32))
KEYS = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
COMMITTEE = frozenset(k.public for k in KEYS)


def _mesh(seed: int) -> list[Membership]:
    peers = [Membership(k, NETWORK, "127.0.0.1", 9100 + i, committee=COMMITTEE, rng=random.Random(seed + i))
             for i, k in enumerate(KEYS)]
    records = tuple(Update(ALIVE, p.id, 0, p.id, p.record.encode()) for p in peers)
    for p in peers:
        p.handle(peers[(peers.index(p) + 1) % len(peers)].id, Gossip(records), 0.0)
        p.start(0.0)
        p.out.drain()
    return peers


def _run(peers: list[Membership], until: float, now: float, gone: set[bytes]) -> float:
    """Deliver every message at once (no loss) for the live peers, ticking in 50 ms steps."""
    by_id = {p.id: p for p in peers}
    while now < until:
        now += 0.05
        pending = []
        for p in peers:
            if p.id not in gone:
                p.tick(now)
                pending.extend((p.id, e) for e in p.out.drain() if type(e) is Send)
        while pending:
            src, effect = pending.pop(0)
            dst = by_id.get(effect.dst)
            if dst is None or dst.id in gone:
                continue
            dst.handle(src, effect.msg, now)
            pending.extend((dst.id, e) for e in dst.out.drain() if type(e) is Send)
    return now


def test_the_echo_of_a_departure_does_not_undo_it() -> None:
    for seed in range(20):
        peers = _mesh(seed)
        leaver = peers[-1]
        now = _run(peers, 3.0, 0.0, set())
        assert all(p.state_of(leaver.id) == ALIVE for p in peers[:-1])
        incarnation = leaver.incarnation
        leaver.leave(now)
        # The leaver still reads and answers for a while (it flushes its queues before exiting).
        now = _run(peers, now + 1.0, now, set())
        assert leaver.incarnation == incarnation and leaver.counters["refutations"] == 0, seed
        assert leaver.next_deadline() == math.inf  # no more probes or gossip from a peer that left
        now = _run(peers, now + 30.0, now, {leaver.id})
        assert [p.state_of(leaver.id) for p in peers[:-1]] == [LEFT] * 3, seed
        assert all(p.counters["deaths"] == 0 for p in peers[:-1]), seed
