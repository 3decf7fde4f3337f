"""The auditor's checks on synthetic snapshots: each invariant violation is reported, and a
consistent snapshot passes (`devnet check` end to end is in tests/test_e2e_devnet.py)."""

from __future__ import annotations

import hashlib

from crypto.keys import SigningKey
from devnet.audit import CREDIT, DEBIT, Snapshot, _evaluate
from devnet.layout import PeerEntry
from peer.genesis import Allocation, Genesis
from peer.ring import Ring

PEERS = [SigningKey.from_seed(hashlib.sha256(b"peer%d" % i).digest()) for i in range(4)]
ALICE, BOB = (SigningKey.from_seed(hashlib.sha256(n).digest()).public for n in (b"alice", b"bob"))
GENESIS = Genesis("audit", tuple(k.public for k in PEERS), 4, 3, 16, 2,
                  (Allocation(ALICE, 1000), Allocation(BOB, 500)), bytes(16)).validate()
RING = Ring(GENESIS.committee, 4, 16)
RUNNING = [PeerEntry(f"peer{i}", k.public.hex(), 1000 + i, 2000 + i) for i, k in enumerate(PEERS)]
ZERO = "00" * 32


def consistent() -> Snapshot:
    """Alice paid Bob 100 at seq 0; every owner (all four) applied both sides."""
    accounts = {p.peer_id: {ALICE.hex(): (900, 1, 0, ZERO), BOB.hex(): (600, 0, 1, "ab" * 32)} for p in RUNNING}
    row = {"payment_id": "11" * 32, "from": ALICE.hex(), "to": BOB.hex(), "seq": 0, "amount": 100,
           "applied": DEBIT | CREDIT}
    certs = {p.peer_id: {row["payment_id"]: dict(row)} for p in RUNNING}
    return Snapshot(accounts, certs, busy=False)


def check(snap: Snapshot) -> list[str]:
    return _evaluate(snap, GENESIS, RING, RUNNING)[0]


def test_consistent_snapshot_passes() -> None:
    assert check(consistent()) == []


def test_disagreeing_replica_and_changed_supply_are_reported() -> None:
    snap = consistent()
    snap.accounts[RUNNING[2].peer_id][BOB.hex()] = (500, 0, 0, ZERO)  # missed the credit
    assert any("disagree" in v and "500" in v for v in check(snap))
    # Every owner agreeing on a balance that money never reached changes the supply.
    snap.accounts = {pid: {**acc, BOB.hex(): (700, 0, 1, "ab" * 32)} for pid, acc in snap.accounts.items()}
    assert any("total supply is 1600" in v for v in check(snap))


def test_two_certificates_for_one_slot_are_reported() -> None:
    snap = consistent()
    other = {"payment_id": "22" * 32, "from": ALICE.hex(), "to": BOB.hex(), "seq": 0, "amount": 5,
             "applied": DEBIT | CREDIT}
    snap.certs[RUNNING[1].peer_id][other["payment_id"]] = other
    assert any("2 certificates for" in v and "seq 0" in v for v in check(snap))


def test_unapplied_side_is_reported_by_owner() -> None:
    snap = consistent()
    snap.certs[RUNNING[3].peer_id]["11" * 32]["applied"] = DEBIT  # peer3 never credited Bob
    assert check(snap) == ["peer3 has not applied the credit of payment 1111111111111111"]
