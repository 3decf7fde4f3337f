"""What became of a signed order, decided from what the sender's owners report (no I/O here).

A gateway's word about a payment is never evidence: it can deliver a certificate that does not
verify, drop its answer, or say `failed` for a payment that settled. What decides is the sender's
owners: the order they applied at the order's sequence number (by id), their locks at it, and any
certificate that verifies. `decide` is one pure function over those facts, cheapest rules first,
like `peer.voting`: the caller gathers the facts and acts on the `Resolution`.

Why replacing an order at the *same* sequence number is always safe for money: owners certify at
most one order per (sender, seq) (two quorums of W among N owners share an honest one), so of two
orders signed for one seq at most one is ever paid. What a new order must never do is take the
*next* seq while the earlier one may still complete: that is how a payment gets made twice. And a
replacement must still be able to reach W votes, or the locks split and the account freezes.

Outcomes:
- `final`: a certificate of the order verifies, or f+1 owners (so at least one honest owner) say they
  applied it at its seq: it is paid.
- `replaced`: a verified certificate of another order at that seq, or f+1 owners applied another
  order there: this order can never be paid.
- `replaceable`: not paid, its seq is not used, no peer says it is still in flight, and a new order at
  the same seq can still gather W votes (locks on any order at that seq + silent owners <= N - W):
  exactly one of the two can ever be paid.
- `unknown`: anything else (in flight, too many locks or silent owners, or its seq used by an order
  the owners do not name): a new order is not signed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

FINAL, REPLACED, REPLACEABLE, UNKNOWN = "final", "replaced", "replaceable", "unknown"


@dataclass(frozen=True, slots=True)
class OwnerFacts:
    """One owner's answer about the sender, seen from the order's seq `s`."""

    next_seq: int
    lock: str | None = None  # payment id it holds a lock for at its next_seq (== s matters)
    applied: str | None = None  # payment id it applied at s (from its history), when next_seq > s


@dataclass(frozen=True, slots=True)
class Facts:
    order_id: str
    seq: int
    owners: int  # N
    quorum: int  # W
    trusted: int  # f + 1 owners include an honest one
    answers: tuple[OwnerFacts, ...]  # one per owner that answered
    verified: bool = False  # a certificate of this order verified
    verified_other: str | None = None  # id of a verified certificate of another order at (sender, seq)
    in_flight: bool = False  # a peer reports it `pending` (a gateway still gathering votes)


@dataclass(frozen=True, slots=True)
class Resolution:
    kind: str
    reason: str
    applied_by: int = 0
    locks: int = 0  # owners locked to this order at its seq


def decide(f: Facts) -> Resolution:
    if f.verified:
        return Resolution(FINAL, "its certificate verifies against the genesis committee")
    if f.verified_other is not None:
        return Resolution(REPLACED, f"a verified certificate of payment {f.verified_other} used its sequence "
                                    f"number {f.seq}")
    applied = Counter(a.applied for a in f.answers if a.next_seq > f.seq and a.applied is not None)
    mine = applied.pop(f.order_id, 0)
    if mine >= f.trusted:
        return Resolution(FINAL, f"{mine} of {f.owners} owners of the sender applied it", applied_by=mine)
    if applied:
        other, count = applied.most_common(1)[0]
        if count >= f.trusted:
            return Resolution(REPLACED, f"{count} of {f.owners} owners applied payment {other} at its sequence "
                                        f"number {f.seq}")
    used = sum(1 for a in f.answers if a.next_seq > f.seq)
    locks = Counter(a.lock for a in f.answers if a.next_seq == f.seq and a.lock is not None)
    mine_locked = locks.get(f.order_id, 0)
    if used >= f.trusted:
        return Resolution(UNKNOWN, f"{used} owners have used its sequence number {f.seq}, but fewer than "
                                   f"{f.trusted} of them name the payment they applied there", mine, mine_locked)
    if f.in_flight:
        return Resolution(UNKNOWN, "a gateway reports it still pending (gathering votes)", mine, mine_locked)
    silent = f.owners - len(f.answers)
    held = sum(locks.values()) + silent
    if held > f.owners - f.quorum:
        return Resolution(UNKNOWN, f"{mine_locked} of {f.owners} owners are locked to it, {held - mine_locked - silent} "
                                   f"to other payments and {silent} did not answer: it may still be certified, "
                                   "and a different payment now could freeze the account", mine, mine_locked)
    return Resolution(REPLACEABLE, f"it is not certified and holds {mine_locked} of {f.owners} owners' locks, so a "
                                   f"new payment at the same sequence number {f.seq} can still be certified; at "
                                   "most one of the two can ever be paid", mine, mine_locked)


@dataclass(frozen=True, slots=True)
class Frozen:
    seq: int
    locks: dict[str, int]  # payment id -> owners locked to it at seq
    reason: str


def frozen(next_seq: int, answers: tuple[OwnerFacts, ...], owners: int, quorum: int) -> Frozen | None:
    """Whether the account is frozen at `next_seq`: owners locked to different orders there, so that
    no order (one of those, or a new one) can reach W votes even if every silent owner joined it.
    None when some order still can (or an owner is past `next_seq`: a certificate exists)."""
    if any(a.next_seq > next_seq for a in answers):
        return None
    locks = Counter(a.lock for a in answers if a.next_seq == next_seq and a.lock is not None)
    if len(locks) < 2:
        return None
    free = owners - sum(locks.values())  # unlocked or silent owners could still vote for any order
    best = max(locks.values()) + free
    if best >= quorum:
        return None
    split = ", ".join(f"{pid[:16]}… at {n}" for pid, n in locks.most_common())
    return Frozen(next_seq, dict(locks), f"owners hold locks on {len(locks)} different payments at sequence "
                                         f"number {next_seq} ({split} of {owners} owners), so no payment can "
                                         f"reach the quorum of {quorum} votes (two orders were signed for one "
                                         "sequence number and sent at once)")
