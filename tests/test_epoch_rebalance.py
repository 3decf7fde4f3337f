"""Rebalancing (docs/protocol.md 11.7): only placements whose owner changes move, close to the ideal.

For each change of committee size, over 10,000 random accounts with N = 4 and the default 256
virtual nodes per peer, it prints:

- placements moved: the share of (account, owner) pairs of the new epoch whose owner did not own
  that account before (what new owners must take over), against the ideal |changed peers| / |peers|
  (of the larger committee): the bound of 1.25x the ideal holds for this measure;
- accounts touched: the share of accounts whose owner set changed at all (at least one of their N
  owners is new). With N owners per account this is naturally several times the placement share
  (about 1 - (1 - k/n)^N), which is why the handoff moves placements, never whole accounts: each
  new owner pulls only its own placements, the continuing owners keep theirs.
"""

from __future__ import annotations

import hashlib
import random
from functools import cache

import pytest

from peer.genesis import DEFAULT_VNODES
from peer.ring import Ring

REPLICATION = 4
ACCOUNTS = 10_000
CASES = [(5, 6), (8, 7), (20, 25)]


def _peers(n: int) -> list[bytes]:
    return [hashlib.sha256(b"rebalance/peer/" + i.to_bytes(4, "big")).digest() for i in range(n)]


@cache
def measure(before: int, after: int) -> tuple[float, float, float]:
    """(placements moved, ideal, accounts touched) going from `before` to `after` peers."""
    pool = _peers(max(before, after))
    old = Ring(tuple(pool[:before]), REPLICATION, DEFAULT_VNODES)
    new = Ring(tuple(pool[:after]), REPLICATION, DEFAULT_VNODES)
    rng = random.Random(f"rebalance/{before}/{after}")
    moved = touched = 0
    for _ in range(ACCOUNTS):
        account = rng.randbytes(32)
        was, now = set(old.owners(account)), set(new.owners(account))
        gained = len(now - was)
        moved += gained
        touched += gained > 0
    ideal = abs(after - before) / max(before, after)
    return moved / (ACCOUNTS * REPLICATION), ideal, touched / ACCOUNTS


def test_rebalance_table() -> None:
    print()
    print(f"{'change':>9} {'placements moved':>17} {'ideal':>7} {'ratio':>6} {'accounts touched':>17}")
    for before, after in CASES:
        moved, ideal, touched = measure(before, after)
        print(f"{before:>3} -> {after:<3} {moved:>17.4f} {ideal:>7.4f} {moved / ideal:>6.3f} {touched:>17.4f}")


@pytest.mark.parametrize("before,after", CASES)
def test_placements_moved_are_within_a_quarter_of_the_ideal(before: int, after: int) -> None:
    moved, ideal, touched = measure(before, after)
    assert moved <= 1.25 * ideal, f"{before} -> {after}: {moved:.4f} moved vs ideal {ideal:.4f}"
    assert moved >= ideal / 1.25, f"{before} -> {after}: {moved:.4f} moved vs ideal {ideal:.4f}"
    # A placement moves only with its account's owner set, and an account's set changes by at
    # least one owner, at most by every owner.
    assert moved <= touched <= REPLICATION * moved + 1e-9
