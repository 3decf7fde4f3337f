"""Epoch changes and the chain of committees: only >2/3 of the current committee can move ownership."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from peer.certify import CertificateChecker, UnknownEpoch, VoterNotOwner
from peer.epoch_chain import (
    Chain,
    EpochApproval,
    EpochCertificate,
    EpochChange,
    EpochError,
    approvals_needed,
)
from peer.genesis import Genesis


def key(label: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"epoch-chain/" + label.encode()).digest())


PEERS = [key(f"peer{i}") for i in range(8)]
BY_ID = {k.public: k for k in PEERS}
GENESIS = Genesis("epochs", tuple(k.public for k in PEERS[:5]), 4, 3, 64, 2, (), bytes(16)).validate()
NET = GENESIS.network_id


def change(chain: Chain, members: list[bytes], **kw: object) -> EpochChange:
    fields = dict(network=NET, epoch=chain.epoch + 1, prev=chain.head_id(), members=tuple(sorted(members)),
                  replication=4, quorum=3, vnodes=64, proposer=chain.current.members[0], created=0, note="")
    fields.update(kw)
    return EpochChange(**fields)  # type: ignore[arg-type]


def approve(ch: EpochChange, signers: list[bytes]) -> EpochCertificate:
    return EpochCertificate(ch, tuple(EpochApproval.create(BY_ID[s], NET, ch.id) for s in signers))


def test_approvals_needed_is_more_than_two_thirds() -> None:
    assert [approvals_needed(n) for n in (1, 2, 3, 4, 5, 6, 7, 9)] == [1, 2, 3, 3, 4, 5, 5, 7]


def test_chain_follows_valid_certificates_and_checks_votes_of_any_epoch() -> None:
    chain = Chain.from_genesis(GENESIS)
    grow = change(chain, [k.public for k in PEERS[:6]])
    committee = chain.extend(approve(grow, list(GENESIS.committee[:4])))
    assert chain.epoch == 1 and committee.members == tuple(sorted(k.public for k in PEERS[:6]))
    shrink = change(chain, [k.public for k in PEERS[1:6]])
    chain.extend(approve(shrink, list(committee.members[:5])))
    assert chain.epoch == 2 and PEERS[0].public not in chain.current

    # A certificate is checked against the committee of its votes' epoch, whichever that is.
    checker = CertificateChecker(NET, chain.committee)
    sender, recipient = key("alice"), key("bob")
    order = Order.create(sender, NET, recipient.public, 5, 0)
    for epoch in (0, 1, 2):
        owners = chain.committee(epoch).owners(sender.public)
        cert = Certificate(order, tuple(Vote.create(BY_ID[o], NET, order, epoch) for o in owners[:3]))
        checker.check(cert)
    # Votes of epoch 2's owners that claim epoch 0 fail unless those peers owned it then too.
    e2_owners = chain.committee(2).owners(sender.public)
    e0_owners = chain.committee(0).owners(sender.public)
    if set(e2_owners[:3]) - set(e0_owners):
        bad = Certificate(order, tuple(Vote.create(BY_ID[o], NET, order, 0) for o in e2_owners[:3]))
        with pytest.raises(VoterNotOwner):
            checker.check(bad)
    future = Certificate(order, tuple(Vote.create(BY_ID[o], NET, order, 3) for o in e2_owners[:3]))
    with pytest.raises(UnknownEpoch):
        checker.check(future)


@pytest.mark.parametrize("case", ["too_few", "outsider", "duplicate", "bad_sig", "other_change"])
def test_certificates_without_two_thirds_of_the_committee_are_refused(case: str) -> None:
    chain = Chain.from_genesis(GENESIS)
    ch = change(chain, [k.public for k in PEERS[:6]])
    members = list(GENESIS.committee)
    if case == "too_few":
        cert = approve(ch, members[:3])  # 3 of 5 is not more than 2/3
    elif case == "outsider":
        cert = approve(ch, [*members[:3], PEERS[6].public])  # the added peer cannot vote itself in
    elif case == "duplicate":
        one = EpochApproval.create(BY_ID[members[0]], NET, ch.id)
        cert = EpochCertificate(ch, (one, one, *approve(ch, members[1:3]).approvals))
    elif case == "bad_sig":
        good = approve(ch, members[:4])
        cert = dataclasses.replace(good, approvals=(*good.approvals[:3],
                                                    dataclasses.replace(good.approvals[3], sig=bytes(64))))
    else:
        other = change(chain, [k.public for k in PEERS[:7]])
        cert = EpochCertificate(ch, approve(other, members[:4]).approvals)
    with pytest.raises(EpochError):
        chain.extend(cert)
    assert chain.epoch == 0


@pytest.mark.parametrize("field,value", [
    ("network", hashlib.sha256(b"other network").digest()),
    ("epoch", 2),
    ("prev", bytes(32)),
    ("replication", 3),
    ("quorum", 4),
    ("vnodes", 65),
])
def test_changes_that_do_not_extend_this_chain_are_refused(field: str, value: object) -> None:
    chain = Chain.from_genesis(GENESIS)
    ch = change(chain, [k.public for k in PEERS[:6]], **{field: value})
    with pytest.raises(EpochError):
        chain.extend(approve(ch, list(GENESIS.committee)))


def test_member_lists_must_be_sorted_distinct_usable_and_large_enough() -> None:
    chain = Chain.from_genesis(GENESIS)
    ids = [k.public for k in PEERS[:6]]
    for members in (list(reversed(sorted(ids))), [*sorted(ids), sorted(ids)[-1]], sorted(ids)[:3],
                    sorted([*ids[:4], bytes(32)])):
        ch = dataclasses.replace(change(chain, ids), members=tuple(members))
        with pytest.raises(EpochError):
            chain.extend(approve(ch, list(GENESIS.committee)))


def test_a_second_certificate_for_an_epoch_never_replaces_the_first() -> None:
    chain = Chain.from_genesis(GENESIS)
    first = approve(change(chain, [k.public for k in PEERS[:6]]), list(GENESIS.committee[:4]))
    chain.extend(first)
    rival = approve(dataclasses.replace(first.change, members=tuple(sorted(k.public for k in PEERS[:7]))),
                    list(GENESIS.committee[1:5]))
    with pytest.raises(EpochError):
        chain.extend_all([rival])
    chain.extend_all([first])  # the same certificate again is fine
    assert chain.epoch == 1 and chain.certificates == [first]
    assert EpochCertificate.decode(first.encode()) == first
