"""The epoch manager (docs/protocol.md 11.1, 11.2) on real stores through a synchronous router
(tests/epoch_rig.py): proposals and approvals by broadcast with validate-before-relay, one approval
per member and epoch written before it leaves, approval only after the member's own handoff,
certificates assembled at more than two thirds, sealing, chain persistence and sync; and the
gateway's epoch rules (votes grouped by epoch, re-targeting, `handoff_pending` waits)."""

from __future__ import annotations

import dataclasses

import pytest

from crypto.messages import Certificate, Order, Vote
from gossip.broadcast import Verdict
from gossip.effects import Outbox, Persist, Publish
from peer.certify import CertificateChecker
from peer.epoch_chain import EpochApproval, EpochChange, EpochError
from peer.epochs import EpochChanged
from peer.gateway import CERTIFIED, FAILED, PENDING, Gateway, GatewayConfig
from peer.handoff import HandoffComplete
from peer.wire import (
    EpochApprove,
    EpochPropose,
    HandoffChunk,
    Refusal,
    Refuse,
    VoteReply,
    VoteRequest,
)
from store import layout
from tests.epoch_rig import Rig, key

NEW = 5


def members(rig: Rig) -> list[int]:
    return [rig.index[m] for m in rig.peer(0).settlement.chain.current.members]


def test_a_change_needs_more_than_two_thirds_and_every_peer_seals_it(rig: Rig) -> None:
    proposer = rig.peer(0)
    change = proposer.epochs.propose([rig.keys[NEW].public], [], note="grow")
    rig.pump()
    listed = rig.peer(3).epochs.proposals()
    assert [p["id"] for p in listed] == [change.id.hex()]
    assert listed[0]["added"] == [rig.keys[NEW].public.hex()] and listed[0]["needed"] == 4
    assert listed[0]["approvals"] == [rig.keys[0].public.hex()]
    for i in (1, 2):
        rig.peer(i).epochs.approve(change.id)
        rig.pump()
    assert all(rig.peer(i).settlement.chain.epoch == 0 for i in range(6))  # 3 of 5 is not enough
    rig.peer(3).epochs.approve(change.id)
    rig.pump()
    assert all(rig.peer(i).settlement.chain.epoch == 1 for i in range(6))
    assert all(rig.peer(i).settlement.epoch == 1 for i in range(6))
    changed = [e for _, e in rig.events if type(e) is EpochChanged]
    assert len(changed) == 6 and changed[0].committee == tuple(sorted([*rig.genesis.committee, rig.keys[NEW].public]))
    # The chain is stored: a restarted peer is still in epoch 1, with the same certificate.
    rig.crash(2)
    again = rig.restart(2)
    assert again.settlement.chain.epoch == 1 and again.settlement.epoch == 1
    assert again.epochs.certificates(0)[0].change.id == change.id
    history = again.epochs.history()
    assert [h["epoch"] for h in history] == [0, 1] and history[0]["started"] is None
    assert history[1]["started"]["wall"] >= 1_700_000_000


def test_an_approval_is_durable_before_it_leaves_and_one_per_epoch(rig: Rig) -> None:
    a = rig.peer(0).epochs.propose([rig.keys[NEW].public], [])
    effects = rig.peer(0).epochs.out.drain()
    persist = [e for e in effects if type(e) is Persist]
    # The approval is in the batch, and the broadcast is the batch's follow-up: it leaves once durable.
    assert len(persist) == 1 and [type(t) for t in persist[0].then] == [Publish]
    assert any(k == layout.epoch_key(layout.APPROVAL, 1) for k, _ in persist[0].batch.ops)
    rig._perform(rig.keys[0].public, effects)
    rig.pump()
    b = rig.peer(1).epochs.propose([], [rig.keys[4].public])  # a rival change for epoch 1
    rig.pump()
    rig.peer(2).epochs.approve(a.id)
    rig.pump()
    with pytest.raises(EpochError, match="already approved"):
        rig.peer(2).epochs.approve(b.id)
    # The approval survives a restart: still one change per epoch.
    rig.crash(2)
    rig.restart(2)
    rig.peer(2).epochs._proposals = rig.peer(3).epochs._proposals  # it learns the proposals again
    with pytest.raises(EpochError, match="already approved"):
        rig.peer(2).epochs.approve(b.id)
    assert rig.peer(2).epochs.approve(a.id).change_id == a.id  # the same one again is fine


def test_who_may_propose_and_approve(rig: Rig) -> None:
    outsider = rig.peer(NEW)
    with pytest.raises(EpochError, match="not a member"):
        outsider.epochs.propose([key("x").public], [])
    with pytest.raises(EpochError, match="no pending proposal"):
        rig.peer(1).epochs.approve(bytes(32))
    with pytest.raises(EpochError, match="already in the committee"):
        rig.peer(0).epochs.propose([rig.keys[1].public], [])
    with pytest.raises(EpochError, match="nothing to change"):
        rig.peer(0).epochs.propose([], [])
    with pytest.raises(EpochError, match="not a usable"):
        rig.peer(0).epochs.propose([bytes(32)], [])
    with pytest.raises(EpochError):  # below N members
        rig.peer(0).epochs.propose([], [rig.keys[1].public, rig.keys[2].public])


def test_no_approval_before_the_members_own_handoff_is_complete(rig: Rig) -> None:
    rig.drop = lambda src, dst, msg: type(msg) is HandoffChunk and dst == rig.keys[NEW].public
    rig.enter(rig.change(add=[NEW]))
    rig.advance(1)
    new = rig.peer(NEW)
    assert new.handoff.status()["state"] == "in_progress"
    change = rig.peer(0).epochs.propose([], [rig.keys[4].public])
    rig.pump()
    with pytest.raises(EpochError, match="handoff into epoch 1 is not complete"):
        new.epochs.approve(change.id)
    rig.drop = lambda src, dst, msg: False
    rig.advance(4)
    assert any(type(e) is HandoffComplete and pid == new.id for pid, e in rig.events)
    assert new.epochs.approve(change.id).signer == new.id


def test_broadcasts_are_validated_before_relay(rig: Rig) -> None:
    node = rig.peer(1).epochs
    chain = node.chain
    outsider = key("outsider")

    def change(proposer: bytes, **kw: object) -> EpochChange:
        fields = dict(network=rig.network_id, epoch=1, prev=chain.head_id(),
                      members=tuple(sorted([*chain.current.members, rig.keys[NEW].public])),
                      replication=4, quorum=3, vnodes=64, proposer=proposer, created=0, note="")
        fields.update(kw)
        return EpochChange(**fields)  # type: ignore[arg-type]

    foreign = change(outsider.public)
    assert node.validate_broadcast(EpochPropose(foreign, EpochApproval.create(outsider, rig.network_id,
                                                                              foreign.id)).encode()) is Verdict.REJECT
    first = change(rig.keys[0].public)
    assert node.validate_broadcast(EpochPropose(first, EpochApproval.create(rig.keys[0], rig.network_id,
                                                                            first.id)).encode()) is Verdict.ACCEPT
    node._deliver(EpochPropose(first, EpochApproval.create(rig.keys[0], rig.network_id, first.id)), 0.0)
    second = change(rig.keys[0].public, note="again")  # the same proposer, another change
    assert node.validate_broadcast(EpochPropose(second, EpochApproval.create(rig.keys[0], rig.network_id,
                                                                             second.id)).encode()) is Verdict.IGNORE
    forged = EpochApproval(first.id, rig.keys[2].public, bytes(64))
    assert node.validate_broadcast(EpochApprove(1, forged).encode()) is Verdict.REJECT
    by_outsider = EpochApproval.create(outsider, rig.network_id, first.id)
    assert node.validate_broadcast(EpochApprove(1, by_outsider).encode()) is Verdict.REJECT
    assert node.validate_broadcast(EpochApprove(1, EpochApproval.create(rig.keys[2], rig.network_id,
                                                                        first.id)).encode()) is Verdict.ACCEPT
    bad_members = change(rig.keys[3].public, members=tuple(sorted(chain.current.members))[:3])
    assert node.validate_broadcast(EpochPropose(bad_members, EpochApproval.create(
        rig.keys[3], rig.network_id, bad_members.id)).encode()) is Verdict.REJECT
    assert node.validate_broadcast(b"\x83\x18\x37\x01\x00") is Verdict.REJECT


def test_a_peer_that_missed_the_change_syncs_the_chain(rig: Rig) -> None:
    late = rig.keys[4].public
    rig.drop = lambda src, dst, msg: (dst == late or src == late) and type(msg).__name__ in (
        "EpochAnnounce", "EpochPropose", "EpochApprove", "EpochSyncRequest", "EpochSyncReply", "HandoffPull")
    rig.enter(rig.change(add=[NEW]), peers=[0, 1, 2, 3, 5])
    rig.advance(2)
    assert rig.peer(4).settlement.chain.epoch == 0
    # From now on only the periodic comparison with a random peer can tell it.
    rig.drop = lambda src, dst, msg: (dst == late or src == late) and type(msg).__name__ == "HandoffPull"
    rig.advance(12)
    assert rig.peer(4).settlement.chain.epoch == 1
    assert any(type(s.msg).__name__ == "EpochSyncReply" and s.dst == late for s in rig.sent)


def test_a_pull_from_a_later_epoch_makes_the_old_owner_fetch_the_chain(rig: Rig) -> None:
    late = rig.keys[4].public
    rig.drop = lambda src, dst, msg: dst == late and type(msg).__name__ in ("EpochAnnounce", "EpochPropose",
                                                                            "EpochApprove")
    rig.enter(rig.change(add=[NEW]), peers=[0, 1, 2, 3, 5])
    rig.advance(3)
    assert rig.peer(4).settlement.chain.epoch == 1
    assert rig.peer(NEW).handoff.status()["state"] == "complete"


def test_after_sealing_votes_name_the_new_epoch_and_old_locks_still_bind(rig: Rig) -> None:
    sender = rig.account_keys[0]
    order = Order.create(sender, rig.network_id, rig.account_keys[1].public, 5, 0, "locked in epoch 0")
    other = Order.create(sender, rig.network_id, rig.account_keys[1].public, 6, 0, "conflict")
    cert = rig.change(add=[NEW])
    both = [o for o in rig.owners(sender.public, 0) if o in cert.change.committee().owners(sender.public)]
    owner = rig.nodes[both[0]].settlement

    def ask(o: Order) -> object:
        owner.handle(rig.keys[1].public, VoteRequest(o), rig.now)
        effects = owner.out.drain()
        rig._perform(owner.me, effects)
        for e in effects:
            for t in (e.then if type(e) is Persist else (e,)):
                if type(getattr(t, "msg", None)) in (VoteReply, Refusal):
                    return t.msg
        raise AssertionError("no answer")

    first = ask(order)
    assert type(first) is VoteReply and first.vote.epoch == 0
    rig.enter(cert)
    again = ask(order)
    assert type(again) is VoteReply and again.vote.epoch == 1  # the same order, a fresh vote
    refused = ask(other)
    assert type(refused) is Refusal and refused.code == Refuse.CONFLICT  # the epoch-0 lock binds
    lock = owner.ledger.locks[(sender.public, 0)]
    assert Vote.decode(lock.vote).epoch == 1  # rewritten with the new vote


def test_accepting_certificates_from_an_operator(rig: Rig) -> None:
    cert = rig.change(add=[NEW])
    assert rig.peer(1).epochs.accept(cert) is True
    rig.pump()
    assert rig.peer(1).epochs.accept(cert) is False  # already in its chain (and everyone's)
    assert all(rig.peer(i).settlement.chain.epoch == 1 for i in range(6))
    future = dataclasses.replace(cert, change=dataclasses.replace(cert.change, epoch=3))
    with pytest.raises(EpochError, match="needs the ones in between"):
        rig.peer(1).epochs.accept(future)
    rival = rig.change(remove=[4])
    rival = dataclasses.replace(rival, change=dataclasses.replace(rival.change, epoch=1, prev=rig.network_id))
    with pytest.raises(EpochError, match="different certificate"):
        rig.peer(1).epochs.accept(rival)
    unapproved = rig.change(remove=[4])
    with pytest.raises(EpochError):
        rig.peer(1).epochs.accept(dataclasses.replace(unapproved, approvals=unapproved.approvals[:2]))
    assert rig.peer(1).settlement.chain.epoch == 1


# ---- the gateway's epoch rules ----------------------------------------------------------------------

def _gateway(rig: Rig, config: GatewayConfig | None = None) -> tuple[Gateway, Outbox, list[bytes]]:
    chain = rig.peer(0).settlement.chain
    out = Outbox()
    synced: list[bytes] = []
    checker = CertificateChecker(rig.network_id, chain.committee)
    gw = Gateway(key("gateway").public, rig.network_id, chain.current.ring, 3, checker, out, config,
                 epoch=chain.epoch, committee_of=chain.committee, sync_epochs=synced.append)
    return gw, out, synced


def test_the_gateway_groups_votes_by_epoch_and_retargets_at_a_change(rig: Rig) -> None:
    sender = rig.account_keys[0]
    order = Order.create(sender, rig.network_id, rig.account_keys[1].public, 5, 0)
    gw, out, synced = _gateway(rig)
    p = gw.submit(order, 0.0)
    owners0 = p.owners_from
    keys = {k.public: k for k in rig.keys}
    # Two votes in epoch 0, then the gateway moves to epoch 1.
    for o in owners0[:2]:
        gw.on_vote(o, Vote.create(keys[o], rig.network_id, order, 0), 0.1)
    rig.enter(rig.change(add=[NEW]))
    committee = rig.peer(0).settlement.chain.current
    out.drain()
    gw.set_committee(committee, 0.2)
    asked = {e.dst for e in out.drain() if type(getattr(e, "msg", None)) is VoteRequest}
    assert p.owners_from == committee.owners(sender.public)
    assert asked == set(p.owners_from) - set(p.votes)  # every new owner that has not voted in epoch 1
    # Mixed epochs never make a certificate: one epoch-1 vote plus two epoch-0 votes is pending.
    new_voter = next(o for o in p.owners_from if o not in owners0 or o == p.owners_from[0])
    gw.on_vote(new_voter, Vote.create(keys[new_voter], rig.network_id, order, 1), 0.3)
    assert p.status == PENDING
    # The third vote of epoch 0 completes a certificate of epoch 0: as final as any.
    gw.on_vote(owners0[2], Vote.create(keys[owners0[2]], rig.network_id, order, 0), 0.4)
    assert p.status == CERTIFIED and {v.epoch for v in p.cert.votes} == {0}
    # A vote of an epoch the gateway does not know makes it ask for the chain.
    gw2, _, synced2 = _gateway(rig)
    order2 = Order.create(sender, rig.network_id, rig.account_keys[2].public, 5, 1)
    gw2.submit(order2, 0.0)
    gw2.on_vote(owners0[0], Vote.create(keys[owners0[0]], rig.network_id, order2, 7), 0.1)
    assert synced2 == [owners0[0]] and synced == []


def test_handoff_pending_waits_past_the_deadline_up_to_a_bound(rig: Rig) -> None:
    config = GatewayConfig(deadline=10.0, handoff_wait=30.0, hedge=False)
    gw, _, _ = _gateway(rig, config)
    sender = rig.account_keys[0]
    order = Order.create(sender, rig.network_id, rig.account_keys[1].public, 5, 0)
    p = gw.submit(order, 0.0)
    now = 0.0
    while now < 60:
        for o in p.owners_from:
            gw.on_refusal(o, Refusal(order.id, int(Refuse.HANDOFF_PENDING), "taking over", b""), now)
        now += 1.0
        gw.tick(now)
        if p.status != PENDING:
            break
    assert p.status == FAILED and p.code == "timeout"
    assert 10.0 < now <= 10.0 + 30.0 + 1.0  # waited past the deadline, but not for ever
    # Without handoffs, the same deadline ends it at 10 s.
    gw2, _, _ = _gateway(rig, config)
    p2 = gw2.submit(Order.create(sender, rig.network_id, rig.account_keys[2].public, 5, 0), 0.0)
    now = 0.0
    while p2.status == PENDING:
        now += 1.0
        gw2.tick(now)
    assert now <= 11.0


def test_not_owner_is_retried_and_compares_chains(rig: Rig) -> None:
    gw, _, synced = _gateway(rig, GatewayConfig(hedge=False))
    sender = rig.account_keys[0]
    order = Order.create(sender, rig.network_id, rig.account_keys[1].public, 5, 0)
    p = gw.submit(order, 0.0)
    for o in p.owners_from:
        gw.on_refusal(o, Refusal(order.id, int(Refuse.NOT_OWNER), "not mine in epoch 1", b""), 0.1)
    assert p.status == PENDING and set(synced) == set(p.owners_from)


def test_certificates_of_every_known_epoch_verify(rig: Rig) -> None:
    before = rig.pay(0, 1)
    rig.enter(rig.change(add=[NEW]))
    after = rig.pay(0, 1)
    checker = rig.peer(NEW).settlement.checker
    for cert in (before, after):
        checker.check(cert)
    assert {before.votes[0].epoch, after.votes[0].epoch} == {0, 1}
    assert isinstance(before, Certificate)
