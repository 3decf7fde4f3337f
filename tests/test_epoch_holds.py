"""The hold-set rule (docs/protocol.md 11.5) and the readiness rule (11.4), as pure functions.

The threshold T(S) = |S| - W + 1: with N = 4, W = 3, every held order counts from 3 reporters, and an
order needs 2 holders among 4. So an equivocating sender's 1/1/1/1 split is released once all four
old owners report, a 2/2 split stays frozen, and 3 reporters never release a held order. The safety
property behind it is checked exhaustively for small committees: an order that may have been
certified (held by at least N - W + 1 honest owners, whatever the f Byzantine ones report) is in the
hold set of every S of at least W reporters.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest

from crypto.keys import SigningKey
from crypto.messages import Order
from peer.handoff import Claim, readiness
from peer.holds import Held, HoldRuleError, hold_set, threshold
from store.layout import AccountState

NET = hashlib.sha256(b"holds").digest()
SENDER = SigningKey.from_seed(hashlib.sha256(b"holds/sender").digest())
TO = SigningKey.from_seed(hashlib.sha256(b"holds/to").digest()).public
ORDERS = [Order.create(SENDER, NET, TO, 10 + i, 5, f"order {i}") for i in range(6)]
A, B, C, D = ORDERS[:4]
R = [bytes([i]) * 32 for i in range(8)]  # reporters


def held(*holds: tuple[Order, ...], seq: int = 5) -> list[Held]:
    return [Held(R[i], seq, h) for i, h in enumerate(holds)]


def test_threshold_is_reporters_minus_quorum_plus_one() -> None:
    assert [threshold(s, 4, 3) for s in (3, 4)] == [1, 2]
    assert [threshold(s, 7, 5) for s in (5, 6, 7)] == [1, 2, 3]  # f = 2
    assert [threshold(s, 3, 2) for s in (2, 3)] == [1, 2]  # f = 0


def test_one_one_one_one_split_is_released_by_all_four_reports() -> None:
    decision = hold_set(5, held((A,), (B,), (C,), (D,)), 4, 3)
    assert decision.free and not decision.frozen
    assert decision.threshold == 2 and decision.counted == 4


@pytest.mark.parametrize("three", list(itertools.combinations(range(4), 3)))
def test_three_reporters_never_release_a_held_order(three: tuple[int, ...]) -> None:
    holds = [(A,), (B,), (C,), (D,)]
    decision = hold_set(5, [Held(R[i], 5, holds[i]) for i in three], 4, 3)
    assert {o.id for o in decision.orders} == {holds[i][0].id for i in three}
    assert decision.frozen


def test_two_two_split_stays_frozen() -> None:
    decision = hold_set(5, held((A,), (A,), (B,), (B,)), 4, 3)
    assert decision.frozen and {o.id for o in decision.orders} == {A.id, B.id}
    assert "2 holders" in decision.explain()


def test_one_held_order_is_locked_and_nothing_held_is_free() -> None:
    assert [o.id for o in hold_set(5, held((A,), (A,), (), ()), 4, 3).orders] == [A.id]
    assert [o.id for o in hold_set(5, held((A,), (), ()), 4, 3).orders] == [A.id]  # T = 1
    assert hold_set(5, held((A,), (), (), ()), 4, 3).free  # one holder of four: never certified
    assert hold_set(5, held((), (), ()), 4, 3).free


def test_reporters_behind_the_frontier_hold_nothing_there() -> None:
    reports = [Held(R[0], 5, (A,)), Held(R[1], 3, (B,)), Held(R[2], 4, (C,)), Held(R[3], 5, (A,))]
    decision = hold_set(5, reports, 4, 3)
    assert [o.id for o in decision.orders] == [A.id]


def test_the_rule_refuses_what_it_cannot_decide() -> None:
    with pytest.raises(HoldRuleError):
        hold_set(5, held((A,), (A,)), 4, 3)  # fewer than W reports
    with pytest.raises(HoldRuleError):
        hold_set(5, [Held(R[0], 6, ()), Held(R[1], 5, ()), Held(R[2], 5, ())], 4, 3)  # one is ahead
    with pytest.raises(HoldRuleError):
        hold_set(5, [Held(R[0], 5, ()), Held(R[0], 5, ()), Held(R[2], 5, ())], 4, 3)  # counted twice


@pytest.mark.parametrize("n,w", [(4, 3), (5, 4), (3, 2), pytest.param(7, 5, marks=pytest.mark.soak)])
def test_a_possibly_certified_order_is_in_every_hold_set(n: int, w: int) -> None:
    """Exhaustive: owners 0..n-1, f = 2W-N-1 of them Byzantine (any reports), X certified, so at
    least N - W + 1 honest owners hold it. Any S of >= W reporters gives X in H, and a larger S never
    adds an order (H only shrinks as more reports arrive)."""
    f = 2 * w - n - 1
    x, y = A, B
    checked = 0
    for byzantine in itertools.combinations(range(n), f):
        honest = [i for i in range(n) if i not in byzantine]
        for blockers in itertools.combinations(honest, n - w + 1):
            for lies in itertools.product([(), (x,), (y,), (x, y)], repeat=f):
                reports = {}
                for i in range(n):
                    if i in byzantine:
                        reports[i] = lies[byzantine.index(i)]
                    else:
                        reports[i] = (x,) if i in blockers else (y,)
                for size in range(w, n + 1):
                    for s in itertools.combinations(range(n), size):
                        decision = hold_set(5, [Held(R[i], 5, reports[i]) for i in s], n, w)
                        assert x.id in {o.id for o in decision.orders}, (byzantine, blockers, lies, s)
                        checked += 1
                # Monotone: adding a report never adds an order to H.
                full = {o.id for o in hold_set(5, [Held(R[i], 5, reports[i]) for i in range(n)], n, w).orders}
                for s in itertools.combinations(range(n), w):
                    small = {o.id for o in hold_set(5, [Held(R[i], 5, reports[i]) for i in s], n, w).orders}
                    assert full <= small
    assert checked > 0


# ---- readiness ---------------------------------------------------------------------------------------

def own(next_seq: int = 0, credits: int = 0, digest: bytes = bytes(32)) -> AccountState:
    return AccountState(balance=100, next_seq=next_seq, credits=credits, credit_digest=digest)


def test_ready_needs_w_counted_reports() -> None:
    assert not readiness(own(), [Claim(R[0]), Claim(R[1])], 3).ready
    assert readiness(own(), [Claim(R[0]), Claim(R[1]), Claim(R[2])], 3).ready


def test_a_higher_next_seq_is_pulled_from_its_reporter_then_dropped_if_unbacked() -> None:
    claims = [Claim(R[0], 4), Claim(R[1], 2), Claim(R[2], 2), Claim(R[3], 2)]
    waiting = readiness(own(2), claims, 3)
    assert not waiting.ready and waiting.pull == ((R[0], 4),) and waiting.drop == ()
    # It backed its claim: our next_seq caught up.
    assert readiness(own(4), claims, 3).ready
    # It did not, in time: dropped (the caller penalises it), and three others still count.
    dropped = readiness(own(2), claims, 3, expired=[R[0]])
    assert dropped.ready and dropped.drop == (R[0],)
    # With only three reporters, dropping the liar leaves too few: wait for the fourth.
    short = readiness(own(2), claims[:3], 3, expired=[R[0]])
    assert not short.ready and short.drop == (R[0],)


def test_differing_credits_are_reconciled_or_given_up() -> None:
    digest = bytes([7]) * 32
    claims = [Claim(R[0], 0, 2, digest), Claim(R[1]), Claim(R[2])]
    waiting = readiness(own(), claims, 3)
    assert not waiting.ready and waiting.reconcile == (R[0],)
    assert readiness(own(0, 2, digest), claims, 3).ready  # the credits arrived
    assert readiness(own(), claims, 3, credits_settled=[R[0]]).ready  # reconciled, or given up
    # A reporter with no credits at all never makes us wait (it has nothing we could lack).
    assert readiness(own(0, 3, digest), [Claim(R[0]), Claim(R[1]), Claim(R[2])], 3).ready
