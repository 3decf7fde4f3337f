"""Which orders may have been certified at an account's frontier, from the old owners' reports
(docs/protocol.md 11.5): the hold-set rule, as one pure function.

Given reports from a set S of sealed old owners of an account (|S| >= W), with the reporting
epoch's N and W and f = 2W - N - 1, at the frontier s (the new owner's next_seq, at least every
reporter's):

    an order X may have been certified at (account, s) only if at least
    T(S) = |S| + W - N - f = |S| - W + 1 reporters hold X at s.

A certificate of X needs W votes; at most f of them from Byzantine owners (which may report
anything) and at most N - |S| from owners outside S. So at least W - f - (N - |S|) = T(S) of them
come from honest reporters in S, whose sealed reports show X held (they can no longer vote in the
reporting epoch, and their locks and holds are never dropped for an order that may be certified).
An order held by fewer reporters can never be certified in the reporting epoch, or earlier.

The hold set H = {X : holders(X) >= T(S)}: empty, the sequence is free; one order, the new owner
locks it (votes only for it); two or more, the sequence is frozen. Any S with |S| >= W gives a valid
H, and a larger S gives a subset of a smaller one's H, so recomputing as more reports arrive can
only release orders. With the defaults (N = 4, W = 3): from 3 reporters, every held order counts
(T = 1); from 4, an order counts when at least 2 hold it, so a 1/1/1/1 split of an equivocating
sender's orders is released and a 2/2 split stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crypto.messages import Order


@dataclass(frozen=True, slots=True)
class Held:
    """What one counted reporter says about the account: its next_seq and the orders it holds at
    that sequence (validated by the caller: signed by the account, for that sequence)."""

    reporter: bytes
    next_seq: int
    holds: tuple[Order, ...] = ()


@dataclass(frozen=True, slots=True)
class HoldDecision:
    seq: int
    counted: int  # |S|
    threshold: int  # T(S) = |S| - W + 1
    orders: tuple[Order, ...]  # H, by order id
    holders: tuple[tuple[bytes, int], ...]  # (order id, reporters holding it) for every held order

    @property
    def free(self) -> bool:
        return not self.orders

    @property
    def frozen(self) -> bool:
        return len(self.orders) >= 2

    def explain(self) -> str:
        counts = ", ".join(f"{oid.hex()[:8]}:{n}" for oid, n in self.holders) or "none"
        return (f"seq {self.seq}: {self.counted} reports, an order counts with {self.threshold} holders; "
                f"held {counts}")


class HoldRuleError(ValueError):
    """The reports do not meet the rule's preconditions (a bug in the caller)."""


def threshold(counted: int, replication: int, quorum: int) -> int:
    """T(S) = |S| + W - N - f with f = 2W - N - 1, i.e. |S| - W + 1."""
    faults = 2 * quorum - replication - 1
    return counted + quorum - replication - faults


def hold_set(seq: int, reports: Sequence[Held], replication: int, quorum: int) -> HoldDecision:
    """The hold set at (account, `seq`) from the counted `reports` (docs/protocol.md 11.5)."""
    reporters = [r.reporter for r in reports]
    if len(set(reporters)) != len(reporters):
        raise HoldRuleError("a reporter is counted twice")
    if len(reports) < quorum:
        raise HoldRuleError(f"{len(reports)} reports; the rule needs at least W = {quorum}")
    if len(reports) > replication:
        raise HoldRuleError(f"{len(reports)} reports from an account with {replication} owners")
    ahead = [r for r in reports if r.next_seq > seq]
    if ahead:
        raise HoldRuleError(f"a reporter is at seq {ahead[0].next_seq}, past the frontier {seq}: "
                            f"catch up first")
    need = threshold(len(reports), replication, quorum)
    count: dict[bytes, int] = {}
    orders: dict[bytes, Order] = {}
    for report in reports:
        if report.next_seq != seq:
            continue  # behind the frontier: it holds nothing at s
        for oid in {o.id for o in report.holds}:
            count[oid] = count.get(oid, 0) + 1
        for order in report.holds:
            orders.setdefault(order.id, order)
    held = tuple(orders[oid] for oid in sorted(count) if count[oid] >= need)
    return HoldDecision(seq, len(reports), need, held, tuple(sorted(count.items())))
