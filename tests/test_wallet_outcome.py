"""wallet.outcome: what became of an order, from its sender's owners' answers (pure, no network).
N = 4 owners, W = 3, f + 1 = 2 (the devnet's parameters)."""

from __future__ import annotations

from wallet.outcome import FINAL, REPLACEABLE, REPLACED, UNKNOWN, Facts, OwnerFacts, decide, frozen

A, B = "a" * 64, "b" * 64


def facts(*answers: OwnerFacts, **kw: object) -> Facts:
    return Facts(A, 5, 4, 3, 2, answers, **kw)  # type: ignore[arg-type]


def test_verified_certificate_is_final_whatever_else() -> None:
    assert decide(facts(verified=True)).kind == FINAL


def test_owners_applied_it_is_final_even_when_the_gateway_said_failed() -> None:
    res = decide(facts(OwnerFacts(6, applied=A), OwnerFacts(6, applied=A), OwnerFacts(5), OwnerFacts(5)))
    assert (res.kind, res.applied_by) == (FINAL, 2)


def test_one_owner_claiming_it_applied_is_not_enough() -> None:
    # one (possibly lying) owner past the seq: not paid, and its seq is not proven used either
    res = decide(facts(OwnerFacts(6, applied=A), OwnerFacts(5, lock=A), OwnerFacts(5, lock=A), OwnerFacts(5, lock=A)))
    assert res.kind == UNKNOWN


def test_another_order_applied_by_f_plus_1_replaces_it() -> None:
    res = decide(facts(OwnerFacts(6, applied=B), OwnerFacts(6, applied=B), OwnerFacts(6), OwnerFacts(5)))
    assert res.kind == REPLACED
    assert decide(facts(verified_other=B)).kind == REPLACED


def test_seq_used_but_nobody_says_by_whom_is_unknown_not_dropped() -> None:
    # main dropped the order here ("its seq was used by another payment") and paid twice later
    res = decide(facts(OwnerFacts(6), OwnerFacts(6), OwnerFacts(6), OwnerFacts(6)))
    assert res.kind == UNKNOWN


def test_in_flight_or_too_many_locks_is_unknown() -> None:
    assert decide(facts(OwnerFacts(5), OwnerFacts(5), OwnerFacts(5), OwnerFacts(5), in_flight=True)).kind == UNKNOWN
    # two locks on it and two silent owners: it may still be certified
    assert decide(facts(OwnerFacts(5, lock=A), OwnerFacts(5, lock=A))).kind == UNKNOWN


def test_refused_everywhere_is_replaceable_at_the_same_seq() -> None:
    assert decide(facts(OwnerFacts(5), OwnerFacts(5), OwnerFacts(5), OwnerFacts(5))).kind == REPLACEABLE
    assert decide(facts(OwnerFacts(5, lock=A), OwnerFacts(5), OwnerFacts(5), OwnerFacts(5))).kind == REPLACEABLE


def test_frozen_only_when_no_order_can_reach_the_quorum() -> None:
    split = (OwnerFacts(5, lock=A), OwnerFacts(5, lock=A), OwnerFacts(5, lock=B), OwnerFacts(5, lock=B))
    stuck = frozen(5, split, 4, 3)
    assert stuck is not None and stuck.locks == {A: 2, B: 2} and "quorum of 3" in stuck.reason
    # a silent owner could still give A its third vote
    assert frozen(5, (OwnerFacts(5, lock=A), OwnerFacts(5, lock=A), OwnerFacts(5, lock=B)), 4, 3) is None
    # one order only: not frozen, just pending
    assert frozen(5, (OwnerFacts(5, lock=A),) * 4, 4, 3) is None
    # an owner past the seq applied a certificate: not frozen
    assert frozen(5, (*split[:3], OwnerFacts(6)), 4, 3) is None
