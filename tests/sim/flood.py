"""Fake identities and their signed peer records, for flooding membership in tests.

Every record is genuinely signed by its own fresh key (so it passes any signature check) and points
at 127.0.0.1:1, where nothing listens. `flood` pushes them at peers the two ways an outsider can:
each identity introduces itself with a `Sync` that also carries a batch of the others' records,
and relays more of them piggybacked on pings and in gossip.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

from crypto.keys import SigningKey
from crypto.messages import PeerRecord
from crypto.schema import Message
from gossip.wire import ALIVE, MAX_PIGGYBACK, MAX_SYNC_MEMBERS, Gossip, Ping, Sync, Update

CLOSED_PORT = 1


@functools.cache
def fake_identities(network_id: bytes, count: int, seed: int = 0) -> tuple[tuple[bytes, Update], ...]:
    """(peer id, its signed alive update) for `count` fresh keys (cached: signing takes a while)."""
    rng = random.Random(f"flood/{seed}")
    out = []
    for _ in range(count):
        key = SigningKey.from_seed(rng.randbytes(32))
        record = PeerRecord.create(key, network_id, "127.0.0.1", CLOSED_PORT, 0, 0)
        out.append((key.public, Update(ALIVE, key.public, 0, key.public, record.encode())))
    return tuple(out)


def flood_messages(identities: tuple[tuple[bytes, Update], ...], target: bytes,
                   per_sync: int = 20) -> list[tuple[bytes, Message]]:
    """(sender, message) pairs: each identity syncs its own record plus `per_sync` others', then
    pings `target` and gossips with piggybacked records of yet others."""
    updates = [u for _, u in identities]
    messages: list[tuple[bytes, Message]] = []
    for i, (peer_id, own) in enumerate(identities):
        others = [updates[(i + 1 + j) % len(updates)] for j in range(min(per_sync, MAX_SYNC_MEMBERS - 1))]
        messages.append((peer_id, Sync(True, False, (own, *others))))
        piggy = tuple(updates[(i + 7 + j) % len(updates)] for j in range(2 * MAX_PIGGYBACK))
        messages.append((peer_id, Ping(i, target, piggy[:MAX_PIGGYBACK])))
        messages.append((peer_id, Gossip(piggy)))
    return messages


def deliver(messages: list[tuple[bytes, Message]], send: Callable[[bytes, bytes], object]) -> int:
    """Encode and hand each message to `send(src, payload)`; returns the bytes sent."""
    total = 0
    for src, msg in messages:
        payload = msg.encode()
        total += len(payload)
        send(src, payload)
    return total
