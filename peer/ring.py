"""Consistent hashing over the committee: who owns an account.

Each committee peer places `vnodes` points on a 64-bit ring (hash of its id and the point index).
`owners(account)` walks clockwise from the account's hash and takes the first `replication`
distinct peers. The committee is fixed by the genesis, so every honest peer computes the same
owners; gossip only says who is reachable, never who owns what.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import statistics
from collections import Counter
from functools import lru_cache

_POINT = b"meshpay/ring/point/1\x00"
_ACCOUNT = b"meshpay/ring/account/1\x00"


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


class Ring:
    def __init__(self, committee: tuple[bytes, ...] | list[bytes], replication: int, vnodes: int) -> None:
        if replication > len(set(committee)):
            raise ValueError("replication exceeds the committee size")
        self.committee = tuple(committee)
        self.replication = replication
        self.vnodes = vnodes
        points = sorted((_h64(_POINT + pid + i.to_bytes(4, "big")), pid)
                        for pid in self.committee for i in range(vnodes))
        self._hashes = [h for h, _ in points]
        self._peers = [pid for _, pid in points]
        self.owners = lru_cache(maxsize=262_144)(self._owners)

    def _owners(self, account: bytes) -> tuple[bytes, ...]:
        """The `replication` distinct peers owning `account`, in ring order."""
        start = bisect.bisect(self._hashes, _h64(_ACCOUNT + account))
        found: list[bytes] = []
        n = len(self._peers)
        for step in range(n):
            pid = self._peers[(start + step) % n]
            if pid not in found:
                found.append(pid)
                if len(found) == self.replication:
                    break
        return tuple(found)

    def points(self) -> list[tuple[int, bytes]]:
        """The virtual-node points `(64-bit position, peer)` in clockwise order."""
        return list(zip(self._hashes, self._peers, strict=True))

    def owns(self, peer_id: bytes, account: bytes) -> bool:
        return peer_id in self.owners(account)


def imbalance(committee_size: int, replication: int, vnodes: int, accounts: int = 20_000,
              seed: bytes = b"imbalance") -> tuple[float, float]:
    """(max/mean, stdev/mean) of accounts owned per peer, over random accounts and committee keys."""
    committee = [hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(committee_size)]
    ring = Ring(committee, replication, vnodes)
    counts: Counter[bytes] = Counter()
    rng = random.Random(seed)
    for _ in range(accounts):
        for pid in ring.owners(rng.randbytes(32)):
            counts[pid] += 1
    values = [counts[p] for p in committee]
    mean = statistics.mean(values)
    return max(values) / mean, statistics.pstdev(values) / mean
