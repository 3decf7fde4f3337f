"""An account its sender froze by equivocating is usable again after the next epoch change, exactly
when the old owners' reports prove nothing at that sequence can have been certified
(docs/protocol.md 11.5); a 2/2 split stays frozen and says so.

Deterministic simulation (real Nodes, real stores, MockClock). The sender signs four different
orders for one sequence and, acting as its own gateway, gets each of the account's four owners to
lock a different one (1/1/1/1): no order can reach W = 3 votes, so every later order at that
sequence is refused. Then an epoch change adds a peer:

- the account moves (a new owner takes it over): with all four reports every order is held once,
  below T = 4 - 3 + 1 = 2, so the new owner holds nothing and the continuing owners release their
  locks; a new order at that sequence is certified and applied everywhere;
- the account does not move: the continuing owners alone resolve it the same way;
- a 2/2 split (two owners lock A, two lock B): both orders may have been certified (a Byzantine
  owner could have voted for either), so the new owner freezes the sequence: it refuses with
  `frozen`, reports it in its handoff status, and the payment fails.
"""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from crypto.messages import Order
from peer.committee import Committee
from peer.wire import Refusal, Refuse, VoteRequest
from tests.sim.bank import CLIENT, BankNetwork

SEED = 11


def pick(bank: BankNetwork, moves: bool) -> int:
    """An account whose owner set changes (or not) when the spare joins."""
    current = bank.committee()
    coming = Committee(1, tuple(sorted([*current.members, bank.members[5].id])), 4, 3, current.vnodes)
    for i, key in enumerate(bank.keys[1:], start=1):
        changed = set(current.owners(key.public)) != set(coming.owners(key.public))
        if changed == moves:
            return i
    raise AssertionError("no such account")


async def scenario(split: str, moves: bool) -> dict:
    bank = BankNetwork(SEED, peers=5, spares=1, accounts=12)
    facts: dict = {}
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            await trio.sleep(3)
            index = pick(bank, moves)
            sender = bank.keys[index]
            to = bank.keys[0].public
            owners = bank.owners(sender.public)
            orders = [Order.create(sender, bank.network_id, to, 10 + i, 0, f"split {i}") for i in range(4)]
            locked = orders if split == "1/1/1/1" else [orders[0], orders[0], orders[1], orders[1]]
            for owner, order in zip(owners, locked, strict=True):
                assert bank.vote_directly(owner, order) is not None
            await trio.sleep(1)
            # Frozen in epoch 0: a new order at that sequence cannot be certified.
            fresh = Order.create(sender, bank.network_id, to, 5, 0, "after the change")
            gateway = bank.members[0].node
            gateway.submit(fresh)
            event = await gateway.wait(fresh.id, "certified", timeout=30)
            facts["before"] = None if event is None else event.status
            # The epoch change.
            await bank.change_epoch([bank.members[5]], [])
            await bank.wait_for(bank.handoffs_complete, timeout=60)
            await trio.sleep(5)  # resolution by the continuing owners
            new_owners = [p for p in bank.owners(sender.public) if p.id not in {o.id for o in owners}]
            facts["new_owners"] = len(new_owners)
            facts["frozen"] = sum(p.node.settlement.handoff.status()["frozen"] for p in new_owners)
            if new_owners:
                node = new_owners[0].node.settlement
                node.handle(CLIENT, VoteRequest(fresh), trio.current_time())
                refusals = [e.msg for e in node.out.drain() if type(getattr(e, "msg", None)) is Refusal]
                facts["new_owner_says"] = (Refuse(refusals[0].code).slug, refusals[0].detail) if refusals else None
            gateway = bank.members[5].node
            gateway.submit(fresh)
            event = await gateway.wait(fresh.id, "certified", timeout=60)
            facts["after"] = None if event is None else event.status
            if event is not None and event.status != "failed":
                settled = await gateway.wait(fresh.id, "settled", timeout=60)
                facts["settled"] = None if settled is None else settled.status

                def applied() -> bool:
                    return all(p.node.settlement.ledger.applied(fresh.id) & 1 for p in bank.owners(sender.public))
                facts["applied_everywhere"] = await bank.wait_for(applied, timeout=60) is not None
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    return facts


@pytest.mark.parametrize("moves", [True, False], ids=["account-moves", "account-stays"])
def test_a_one_one_one_one_split_is_usable_after_the_next_epoch_change(moves: bool) -> None:
    facts = trio.run(scenario, "1/1/1/1", moves, clock=MockClock(autojump_threshold=0))
    assert facts["before"] == "failed", facts
    assert (facts["new_owners"] > 0) == moves, facts
    assert facts["frozen"] == 0, facts
    assert facts["after"] == "certified" and facts["settled"] == "settled", facts
    assert facts["applied_everywhere"], facts


def test_a_two_two_split_stays_frozen_and_says_so() -> None:
    facts = trio.run(scenario, "2/2", True, clock=MockClock(autojump_threshold=0))
    assert facts["before"] == "failed", facts
    assert facts["new_owners"] > 0 and facts["frozen"] >= 1, facts
    code, detail = facts["new_owner_says"]
    assert code == "frozen" and "may have been certified" in detail, facts
    assert facts["after"] == "failed", facts
