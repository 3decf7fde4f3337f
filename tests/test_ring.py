"""The consistent-hash ring: owners are deterministic, distinct, and evenly spread."""

from __future__ import annotations

import hashlib

import pytest

from peer.genesis import DEFAULT_VNODES
from peer.ring import Ring, imbalance


def committee(n: int) -> list[bytes]:
    return [hashlib.sha256(b"peer" + bytes([i])).digest() for i in range(n)]


def test_owners_are_distinct_committee_members_and_stable() -> None:
    members = committee(7)
    ring = Ring(members, 4, DEFAULT_VNODES)
    again = Ring(list(reversed(members)), 4, DEFAULT_VNODES)  # committee order must not matter
    for i in range(500):
        account = hashlib.sha256(i.to_bytes(4, "big")).digest()
        owners = ring.owners(account)
        assert len(owners) == 4 and len(set(owners)) == 4
        assert set(owners) <= set(members)
        assert owners == again.owners(account)


def test_replication_larger_than_committee_is_refused() -> None:
    with pytest.raises(ValueError):
        Ring(committee(3), 4, DEFAULT_VNODES)


@pytest.mark.parametrize("size", [5, 20, 50])
def test_default_vnodes_keep_ownership_even(size: int) -> None:
    worst, spread = imbalance(size, 4, DEFAULT_VNODES, accounts=10_000)
    # max/mean accounts per peer; one vnode per peer gives 1.2-2.4 here
    assert worst < 1.15, f"{size} peers: max/mean {worst:.3f}"
    assert spread < 0.06


def test_one_vnode_is_measurably_worse() -> None:
    # The check above would pass vacuously if imbalance() could not tell rings apart.
    assert imbalance(20, 4, 1, accounts=10_000)[0] > imbalance(20, 4, DEFAULT_VNODES, accounts=10_000)[0] + 0.1
