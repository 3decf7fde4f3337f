"""Settlement, unit by unit and sans-IO: the owner's vote decision, order bounds, certificate checks,
the ledger's apply rules and the gateway state machine. Every refusal and check is asserted by its
exact typed outcome (a `Refuse` code, an error class, a batch's contents), against a real `Ledger`
over a real RocksDB `Store` in `tmp_path` and a `Ring` built from a small genesis committee.

Nothing here opens a socket or runs an event loop: the cores take messages and time and return
effects, which is what makes these checks exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crypto import codec, errors
from crypto.errors import DecodeError
from crypto.keys import SigningKey
from crypto.messages import MAX_AMOUNT, MAX_MEMO_BYTES, Certificate, Order, Vote
from gossip.effects import Notify, Outbox, Penalize, Persist, Publish, Send
from peer.certify import (
    BadVoteSignature,
    CertificateChecker,
    DuplicateVoter,
    TooFewVotes,
    TooManyVotes,
    VoteForOtherOrder,
    VoterNotOwner,
    WrongNetworkCertificate,
)
from peer.committee import Committee
from peer.gateway import CERTIFIED, FAILED, PENDING, SETTLED, Gateway, GatewayConfig, PaymentEvent
from peer.genesis import Allocation, Genesis
from peer.ledger import Ledger
from peer.ring import Ring
from peer.settlement import Settlement
from peer.voting import Decision, decide
from peer.wire import SIDE_CREDIT, SIDE_DEBIT, CertDelivery, Refusal, Refuse, VoteReply, VoteRequest
from store import layout
from store.db import Batch, Store
from wallet.verify import VerificationError, verify_certificate

BALANCE = 1_000
# Building a message with bad fields locally is refused too; the error class for that is being split
# from DecodeError (local misuse vs. the remote's fault), so accept whichever this tree has.
BUILD_ERRORS: tuple[type[Exception], ...] = tuple(
    e for e in (DecodeError, getattr(errors, "MessageError", None)) if e is not None)
COMMITTEE_SIZE = 6  # larger than N = 4, so some committee members do not own a given account
REPLICATION, QUORUM = 4, 3


def _key(label: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"settlement-units/" + label.encode()).digest())


# ---- the small network every test shares --------------------------------------------------------


@dataclass
class World:
    """A genesis with a 6-peer committee, and accounts sorted by whether peer `me` owns them."""

    committee: list[SigningKey]
    genesis: Genesis
    ring: Ring
    me: SigningKey
    outsider: SigningKey  # a key outside the committee
    keys: dict[bytes, SigningKey] = field(default_factory=dict)  # account id -> its key
    mine: list[SigningKey] = field(default_factory=list)  # accounts `me` owns
    foreign: list[SigningKey] = field(default_factory=list)  # accounts `me` does not own
    unfunded_mine: SigningKey | None = None  # owned by `me`, no genesis allocation

    @property
    def network_id(self) -> bytes:
        return self.genesis.network_id

    def peer(self, peer_id: bytes) -> SigningKey:
        return next(k for k in self.committee if k.public == peer_id)

    def vote(self, voter: bytes, order: Order) -> Vote:
        return Vote.create(self.peer(voter), self.network_id, order)

    def cert(self, order: Order, voters: tuple[bytes, ...] | None = None) -> Certificate:
        """A valid certificate: votes from the first W owners of the sender (or from `voters`)."""
        chosen = voters if voters is not None else self.ring.owners(order.sender)[:QUORUM]
        return Certificate(order, tuple(self.vote(v, order) for v in chosen))

    def order(self, sender: SigningKey, recipient: SigningKey, amount: int = 10, seq: int = 0,
              memo: str = "", network: bytes | None = None) -> Order:
        return Order.create(sender, network or self.network_id, recipient.public, amount, seq, memo)

    def both_mine(self) -> tuple[SigningKey, SigningKey]:
        return self.mine[0], self.mine[1]


def _build_world() -> World:
    committee = [_key(f"peer{i}") for i in range(COMMITTEE_SIZE)]
    me = committee[0]
    ring = Ring(tuple(k.public for k in committee), REPLICATION, 64)
    mine: list[SigningKey] = []
    foreign: list[SigningKey] = []
    i = 0
    while len(mine) < 7 or len(foreign) < 6:  # 6 funded accounts of mine, plus one unfunded
        k = _key(f"account{i}")
        i += 1
        (mine if ring.owns(me.public, k.public) else foreign).append(k)
    unfunded = mine.pop()
    funded = mine[:6] + foreign[:6]
    params: dict[str, object] = dict(
        name="units", committee=tuple(k.public for k in committee), replication=REPLICATION,
        quorum=QUORUM, vnodes=64, allocations=tuple(Allocation(k.public, BALANCE) for k in funded),
        nonce=b"\x01" * 16)
    # Keywords, not positions: the genesis schema is still growing (a `decimals` field is being added).
    if "decimals" in {f.name for f in dataclasses.fields(Genesis)}:
        params["decimals"] = 2
    genesis = Genesis(**params).validate()  # type: ignore[arg-type]
    world = World(committee, genesis, ring, me, _key("outsider"), mine=mine[:6], foreign=foreign[:6],
                  unfunded_mine=unfunded)
    world.keys = {k.public: k for k in [*funded, unfunded]}
    return world


WORLD = _build_world()


@pytest.fixture
def world() -> World:
    return WORLD


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.create(tmp_path / "db", WORLD.network_id)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    """`me`'s ledger with its genesis balances already durable."""
    led = Ledger(store, WORLD.ring, WORLD.me.public)
    batch = led.genesis_batch(WORLD.genesis)
    assert batch is not None
    store.write(batch, sync=False)
    return led


def reload(ledger: Ledger) -> Ledger:
    """A fresh ledger over the same store: what a restarted peer sees (memory lost, disk kept)."""
    fresh = Ledger(ledger.store, ledger.ring, ledger.me)
    fresh.load()
    return fresh


def durable_apply(ledger: Ledger, cert: Certificate) -> tuple[Batch, object]:
    """Apply and write the batch, as the settlement service does once the group commit is done."""
    batch = Batch()
    result = ledger.apply(cert, batch)
    ledger.store.write(batch, sync=False)
    return batch, result


class SignatureProbe:
    """The `signature_ok` callback, recording every order it was asked to verify."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, order: Order) -> bool:
        self.calls.append(order.id)
        return order.signature_valid()


def run_decide(ledger: Ledger, order: Order) -> tuple[Decision, Batch, SignatureProbe]:
    batch = Batch()
    probe = SignatureProbe()
    decision = decide(ledger, WORLD.me, WORLD.network_id, 0, order, batch, probe)
    return decision, batch, probe


def garbage_sig(order: Order) -> Order:
    return dataclasses.replace(order, sig=b"\xab" * 64)


def assert_refused(decision: Decision, code: Refuse, batch: Batch) -> None:
    assert decision.vote is None, f"expected refusal {code.name}, got a vote"
    assert decision.refuse is code, f"expected {code.name}, got {decision.refuse!r}: {decision.detail}"
    assert len(batch) == 0, "a refusal must not write anything (no lock)"


# ---- decide: the owner's vote -------------------------------------------------------------------


def test_world_has_the_accounts_the_tests_need(world: World) -> None:
    # Guards the fixture itself: every test below relies on these ownership facts.
    assert all(world.ring.owns(world.me.public, k.public) for k in world.mine)
    assert not any(world.ring.owns(world.me.public, k.public) for k in world.foreign)
    non_owner_members = [k for k in world.committee if not world.ring.owns(k.public, world.mine[0].public)]
    assert non_owner_members, "the committee must have a member that does not own mine[0]"


def test_valid_order_gets_a_vote_and_a_lock(ledger: Ledger, world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0], 10)
    decision, batch, probe = run_decide(ledger, order)
    assert decision.refuse is None and decision.vote is not None
    vote = decision.vote
    assert vote.voter == world.me.public and vote.order_id == order.id
    assert vote.signature_valid(world.network_id, order.sig)
    assert probe.calls == [order.id]  # the signature was checked exactly once
    assert batch.ops == [(layout.lock_key(order.sender, 0),
                          layout.Lock(order.encode(), vote.encode()).encode())]


def test_bad_signature_is_refused(ledger: Ledger, world: World) -> None:
    order = garbage_sig(world.order(world.mine[0], world.foreign[0]))
    decision, batch, probe = run_decide(ledger, order)
    assert_refused(decision, Refuse.BAD_SIGNATURE, batch)
    assert probe.calls == [order.id]
    assert (order.sender, 0) not in ledger.locks


def test_signature_from_another_key_is_refused(ledger: Ledger, world: World) -> None:
    # A well-formed signature by the wrong key: the sender field names mine[0], mine[1] signed.
    real = world.order(world.mine[1], world.foreign[0])
    forged = dataclasses.replace(real, sender=world.mine[0].public)
    decision, batch, _ = run_decide(ledger, forged)
    assert_refused(decision, Refuse.BAD_SIGNATURE, batch)


def test_wrong_network_is_refused_before_signature_work(ledger: Ledger, world: World) -> None:
    other = hashlib.sha256(b"another network").digest()
    order = garbage_sig(world.order(world.mine[0], world.foreign[0], network=other))
    decision, batch, probe = run_decide(ledger, order)
    assert_refused(decision, Refuse.WRONG_NETWORK, batch)
    assert probe.calls == [], "wrong-network orders must be refused before any signature check"


def test_non_owner_is_refused_before_signature_work(ledger: Ledger, world: World) -> None:
    order = garbage_sig(world.order(world.foreign[0], world.mine[0]))
    decision, batch, probe = run_decide(ledger, order)
    assert_refused(decision, Refuse.NOT_OWNER, batch)
    assert probe.calls == []


def test_self_transfer_is_refused(ledger: Ledger, world: World) -> None:
    order = world.order(world.mine[0], world.mine[0])
    decision, batch, probe = run_decide(ledger, order)
    assert_refused(decision, Refuse.SELF_TRANSFER, batch)
    assert probe.calls == []


def test_weak_recipient_key_is_refused(ledger: Ledger, world: World) -> None:
    # The identity point (a small-order key) can "sign" anything: money sent there is anyone's.
    order = Order.create(world.mine[0], world.network_id, bytes(32), 10, 0)
    decision, batch, _ = run_decide(ledger, order)
    assert_refused(decision, Refuse.BAD_ADDRESS, batch)


def test_off_curve_recipient_key_is_refused(ledger: Ledger, world: World) -> None:
    off_curve = (2).to_bytes(32, "little")  # y = 2 has no x on edwards25519
    order = Order.create(world.mine[0], world.network_id, off_curve, 10, 0)
    decision, batch, _ = run_decide(ledger, order)
    assert_refused(decision, Refuse.BAD_ADDRESS, batch)


def test_insufficient_funds_is_refused(ledger: Ledger, world: World) -> None:
    exact = world.order(world.mine[0], world.foreign[0], BALANCE)
    too_much = world.order(world.mine[1], world.foreign[0], BALANCE + 1)
    decision, batch, probe = run_decide(ledger, too_much)
    assert_refused(decision, Refuse.INSUFFICIENT_FUNDS, batch)
    assert probe.calls == [too_much.id]  # signature first: an unsigned order learns no balance
    decision, _, _ = run_decide(ledger, exact)
    assert decision.vote is not None, "spending exactly the balance is allowed"


def test_seq_ahead_is_refused_with_a_catch_up_request(ledger: Ledger, world: World) -> None:
    order = garbage_sig(world.order(world.mine[0], world.foreign[0], seq=5))
    decision, batch, probe = run_decide(ledger, order)
    assert_refused(decision, Refuse.SEQ_AHEAD, batch)
    assert decision.catch_up == (order.sender, 0, 5)
    assert probe.calls == []
    assert Refuse.SEQ_AHEAD.retryable


def test_seq_too_low_carries_the_certificate_and_same_order_is_already_final(
        ledger: Ledger, world: World) -> None:
    sender, recipient = world.mine[0], world.foreign[0]
    first = world.order(sender, recipient, 10, 0)
    cert = world.cert(first)
    durable_apply(ledger, cert)
    assert ledger.account(sender.public).next_seq == 1

    other = world.order(sender, recipient, 11, 0)
    decision, batch, probe = run_decide(ledger, other)
    assert_refused(decision, Refuse.SEQ_TOO_LOW, batch)
    assert decision.evidence == cert.encode()
    assert Certificate.decode(decision.evidence).order == first

    decision, batch, _ = run_decide(ledger, first)
    assert_refused(decision, Refuse.ALREADY_FINAL, batch)
    assert decision.evidence == cert.encode()
    assert probe.calls == []  # neither needed a signature check


def test_already_final_while_the_apply_batch_is_in_flight(ledger: Ledger, world: World) -> None:
    first = world.order(world.mine[0], world.foreign[0], 10, 0)
    cert = world.cert(first)
    ledger.apply(cert, Batch())  # applied in memory; the batch is still in the group-commit queue
    decision, _, _ = run_decide(ledger, first)
    assert decision.refuse is Refuse.ALREADY_FINAL
    assert decision.evidence == cert.encode()


def test_conflicting_order_is_refused_with_the_locked_order(ledger: Ledger, world: World) -> None:
    sender = world.mine[0]
    locked = world.order(sender, world.foreign[0], 10, 0)
    rival = world.order(sender, world.foreign[1], 10, 0)
    first, _, _ = run_decide(ledger, locked)
    assert first.vote is not None
    decision, batch, probe = run_decide(ledger, rival)
    assert_refused(decision, Refuse.CONFLICT, batch)
    assert decision.evidence == locked.encode()
    assert Order.decode(decision.evidence) == locked
    assert probe.calls == []


def test_lock_survives_a_restart(ledger: Ledger, world: World) -> None:
    # Only what the batch made durable counts after a crash: write it, drop memory, ask again.
    sender = world.mine[0]
    locked = world.order(sender, world.foreign[0], 10, 0)
    rival = world.order(sender, world.foreign[0], 12, 0)
    first, batch, _ = run_decide(ledger, locked)
    assert first.vote is not None
    ledger.store.write(batch, sync=True)
    restarted = reload(ledger)
    decision, rbatch, _ = run_decide(restarted, rival)
    assert_refused(decision, Refuse.CONFLICT, rbatch)
    assert decision.evidence == locked.encode()
    again, abatch, _ = run_decide(restarted, locked)
    assert again.vote == first.vote and len(abatch) == 0


def test_same_order_twice_gets_the_identical_vote_and_one_lock_write(ledger: Ledger, world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0], 10, 0)
    first, batch1, probe1 = run_decide(ledger, order)
    second, batch2, probe2 = run_decide(ledger, order)
    assert first.vote is not None and second.vote is not None
    assert second.vote == first.vote
    assert second.vote.sig == first.vote.sig
    assert [key for key, _ in batch1.ops] == [layout.lock_key(order.sender, 0)]
    assert len(batch2) == 0, "the repeated vote must not write a second lock"
    assert probe1.calls == [order.id] and probe2.calls == []


def test_vote_after_a_debit_uses_the_next_sequence(ledger: Ledger, world: World) -> None:
    sender = world.mine[0]
    cert = world.cert(world.order(sender, world.foreign[0], 100, 0))
    durable_apply(ledger, cert)
    assert (sender.public, 0) not in ledger.locks
    nxt = world.order(sender, world.foreign[0], BALANCE - 100, 1)
    decision, _, _ = run_decide(ledger, nxt)
    assert decision.vote is not None
    # The balance after the debit is what the check uses.
    too_much = world.order(world.mine[0], world.foreign[1], BALANCE - 99, 1)
    decision, _, _ = run_decide(reload(ledger), too_much)
    assert decision.refuse is Refuse.INSUFFICIENT_FUNDS


# ---- the owner's reply, as the settlement service emits it ------------------------------------------


def test_vote_leaves_only_after_its_lock_is_written_and_refusals_reach_the_wire(
        store: Store, world: World) -> None:
    # decide() above is the rule; this is the service around it: the vote is a follow-up of the
    # lock's Persist (sent only once the write is durable), and a refusal is a real wire message.
    service = Settlement(world.me, world.genesis, store, alive=lambda: [])
    service.start(0.0)
    for effect in service.out.drain():
        if isinstance(effect, Persist):
            store.write(effect.batch, sync=False)
    gw = world.committee[-1].public
    original = world.order(world.mine[0], world.foreign[0], 10, 0)
    rival = world.order(world.mine[0], world.foreign[1], 10, 0)

    service.handle(gw, VoteRequest(original), 1.0)
    effects = service.out.drain()
    assert not [e for e in effects if isinstance(e, Send)], "no vote may leave before its lock is durable"
    (persist,) = [e for e in effects if isinstance(e, Persist)]
    assert layout.lock_key(original.sender, 0) in [key for key, _ in persist.batch.ops]
    (reply,) = persist.then
    assert isinstance(reply, Send) and reply.dst == gw and isinstance(reply.msg, VoteReply)
    vote = reply.msg.vote
    store.write(persist.batch, sync=False)

    service.handle(gw, VoteRequest(rival), 1.1)
    sent = [e for e in service.out.drain() if isinstance(e, Send)]
    assert len(sent) == 1 and sent[0].dst == gw and isinstance(sent[0].msg, Refusal)
    refused = sent[0].msg
    assert (refused.order_id, refused.code, refused.evidence) == (rival.id, Refuse.CONFLICT, original.encode())
    assert Refusal.decode(refused.encode()) == refused  # it survives the trip over the wire

    service.handle(gw, VoteRequest(original), 1.2)
    (again,) = service.out.drain()
    # The repeated vote also waits behind the writer (its lock may still be in flight), writes nothing.
    assert isinstance(again, Persist) and len(again.batch) == 0
    assert [(e.dst, e.msg) for e in again.then] == [(gw, VoteReply(vote))]


def test_certificate_with_a_swapped_order_signature_is_refused_everywhere(
        store: Store, world: World) -> None:
    # Issue 10.1: a relay gathered real votes, replaced the order's signature (zeros, or another
    # valid-looking value) and delivered it. The votes bind the exact signature bytes, so every
    # checker refuses it, the owner applies nothing, and the wallet's offline check refuses it too.
    service = Settlement(world.me, world.genesis, store, alive=lambda: [])
    service.start(0.0)
    for effect in service.out.drain():
        if isinstance(effect, Persist):
            store.write(effect.batch, sync=False)
    order = world.order(world.foreign[0], world.mine[0], 25, 0)
    genuine = world.cert(order)
    for sig in (bytes(64), bytes([order.sig[0] ^ 1]) + order.sig[1:]):
        tampered = Certificate(dataclasses.replace(order, sig=sig), genuine.votes)
        assert tampered.id == genuine.id  # the payment id does not cover the signature...
        with pytest.raises(BadVoteSignature):  # ...but the votes do
            service.handle(world.committee[-1].public, CertDelivery(tampered), 1.0)
        assert not [e for e in service.out.drain() if isinstance(e, (Persist, Send))]
        assert service.ledger.applied(order.id) == 0
        assert service.ledger.account(world.mine[0].public).balance == BALANCE
        with pytest.raises(VerificationError):
            verify_certificate(tampered, world.genesis)
    # A checker that verified the genuine certificate does not let the tampered one ride its cache.
    service.checker.check(genuine)
    with pytest.raises(BadVoteSignature):
        service.checker.check(Certificate(dataclasses.replace(order, sig=bytes(64)), genuine.votes))


# ---- bounds: orders that cannot even exist ------------------------------------------------------


def _order_cbor(world: World, amount: object, memo: object, seq: object = 0) -> bytes:
    """An order's wire bytes built by hand, bypassing the constructor's validation."""
    sender, recipient = world.mine[0], world.foreign[0]
    return codec.encode([Order.KIND, Order.VERSION, world.network_id, sender.public, recipient.public,
                         amount, seq, memo, b"\x00" * 64])


def test_hand_built_order_bytes_decode_when_in_bounds(world: World) -> None:
    # The control for the refusals below: the same construction with legal values decodes.
    top = Order.decode(_order_cbor(world, MAX_AMOUNT, "m" * MAX_MEMO_BYTES))
    assert top.amount == MAX_AMOUNT and len(top.memo) == MAX_MEMO_BYTES
    assert Order.decode(_order_cbor(world, 1, "")).amount == 1


@pytest.mark.parametrize("amount", [0, -1, -(2**63), MAX_AMOUNT + 1, 2**64 - 1, 2**64])
def test_amount_out_of_bounds_cannot_be_decoded_or_built(world: World, amount: int) -> None:
    with pytest.raises(DecodeError):
        Order.decode(_order_cbor(world, amount, ""))
    with pytest.raises(BUILD_ERRORS):
        Order(world.network_id, world.mine[0].public, world.foreign[0].public, amount, 0, "", bytes(64))


@pytest.mark.parametrize("memo", ["m" * (MAX_MEMO_BYTES + 1), "é" * (MAX_MEMO_BYTES // 2 + 1)])
def test_memo_too_long_cannot_be_decoded_or_built(world: World, memo: str) -> None:
    assert len(memo.encode()) > MAX_MEMO_BYTES
    with pytest.raises(DecodeError):
        Order.decode(_order_cbor(world, 1, memo))
    with pytest.raises(BUILD_ERRORS):
        Order(world.network_id, world.mine[0].public, world.foreign[0].public, 1, 0, memo, bytes(64))


@pytest.mark.parametrize("amount", [True, "10", b"\x0a"])
def test_amount_of_the_wrong_type_cannot_be_decoded(world: World, amount: object) -> None:
    with pytest.raises(DecodeError):
        Order.decode(_order_cbor(world, amount, ""))


# ---- CertificateChecker --------------------------------------------------------------------------


def committee_of(world: World):
    return {0: Committee.from_genesis(world.genesis)}.get


def checker(world: World, **kwargs: object) -> CertificateChecker:
    return CertificateChecker(world.network_id, committee_of(world), **kwargs)  # type: ignore[arg-type]


def test_valid_certificate_passes(world: World) -> None:
    cert = world.cert(world.order(world.mine[0], world.foreign[0]))
    c = checker(world)
    c.check(cert)
    assert c.is_valid(cert)
    assert c.signature_checks == QUORUM
    # All N owners voting is also a valid certificate.
    full = world.cert(cert.order, world.ring.owners(cert.order.sender))
    c.check(full)


def test_too_few_votes(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    cert = world.cert(order, world.ring.owners(order.sender)[: QUORUM - 1])
    with pytest.raises(TooFewVotes):
        checker(world).check(cert)


def test_duplicate_voter(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    owners = world.ring.owners(order.sender)
    cert = world.cert(order, (owners[0], owners[1], owners[0]))
    c = checker(world)
    with pytest.raises(DuplicateVoter):
        c.check(cert)
    assert c.signature_checks == 0  # structural checks come before any signature


def test_vote_from_committee_member_that_is_not_an_owner(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    owners = world.ring.owners(order.sender)
    stranger = next(k.public for k in world.committee if k.public not in owners)
    cert = world.cert(order, (owners[0], owners[1], stranger))
    with pytest.raises(VoterNotOwner):
        checker(world).check(cert)


def test_vote_from_key_outside_the_committee(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    owners = world.ring.owners(order.sender)
    votes = (*(world.vote(o, order) for o in owners[:2]),
             Vote.create(world.outsider, world.network_id, order))
    with pytest.raises(VoterNotOwner):
        checker(world).check(Certificate(order, votes))


def test_vote_for_another_order(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0], 10)
    other = world.order(world.mine[0], world.foreign[0], 11)
    owners = world.ring.owners(order.sender)
    votes = (world.vote(owners[0], order), world.vote(owners[1], order), world.vote(owners[2], other))
    with pytest.raises(VoteForOtherOrder):
        checker(world).check(Certificate(order, votes))


def test_forged_vote_signature(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    cert = world.cert(order)
    bad = dataclasses.replace(cert.votes[1], sig=bytes(64))
    forged = Certificate(order, (cert.votes[0], bad, cert.votes[2]))
    with pytest.raises(BadVoteSignature):
        checker(world).check(forged)
    # A real signature of that owner, but on the vote for another network, is forged here too.
    other_net = hashlib.sha256(b"elsewhere").digest()
    replayed = Vote.create(world.peer(cert.votes[1].voter), other_net, order)
    with pytest.raises(BadVoteSignature):
        checker(world).check(Certificate(order, (cert.votes[0], replayed, cert.votes[2])))


def test_wrong_network_certificate(world: World) -> None:
    other_net = hashlib.sha256(b"elsewhere").digest()
    order = world.order(world.mine[0], world.foreign[0], network=other_net)
    votes = tuple(Vote.create(world.peer(o), other_net, order)
                  for o in world.ring.owners(order.sender)[:QUORUM])
    with pytest.raises(WrongNetworkCertificate):
        checker(world).check(Certificate(order, votes))


def test_more_votes_than_owners(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    owners = world.ring.owners(order.sender)
    stranger = next(k.public for k in world.committee if k.public not in owners)
    cert = world.cert(order, (*owners, stranger))
    assert len(cert.votes) == REPLICATION + 1
    with pytest.raises(TooManyVotes):
        checker(world).check(cert)


def test_results_are_cached(world: World) -> None:
    cert = world.cert(world.order(world.mine[0], world.foreign[0]))
    c = checker(world)
    c.check(cert)
    after_first = c.signature_checks
    assert after_first == QUORUM
    c.check(Certificate.decode(cert.encode()))  # an equal certificate decoded from the wire
    assert c.signature_checks == after_first


def test_failed_checks_are_not_cached(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    cert = world.cert(order)
    forged = Certificate(order, (cert.votes[0], cert.votes[1], dataclasses.replace(cert.votes[2], sig=bytes(64))))
    c = checker(world)
    for _ in range(2):
        with pytest.raises(BadVoteSignature):
            c.check(forged)


def test_own_vote_shortcut(world: World) -> None:
    order = world.order(world.mine[0], world.foreign[0])
    owners = world.ring.owners(order.sender)
    assert world.me.public in owners
    voters = (world.me.public, *(o for o in owners if o != world.me.public))[:QUORUM]
    cert = world.cert(order, voters)
    mine = next(v for v in cert.votes if v.voter == world.me.public)
    asked: list[tuple[bytes, int]] = []

    def own_vote(voted: Order, epoch: int) -> bytes | None:
        asked.append((voted.id, epoch))
        return mine.sig

    c = checker(world, own_vote=own_vote, self_id=world.me.public)
    c.check(cert)
    assert asked == [(order.id, 0)]
    assert c.signature_checks == QUORUM - 1, "our own stored vote must not be verified again"

    # A "vote" claiming to be ours that differs from what we stored is verified, and fails.
    fake_mine = dataclasses.replace(mine, sig=bytes(64))
    forged = Certificate(order, tuple(fake_mine if v is mine else v for v in cert.votes))
    c2 = checker(world, own_vote=own_vote, self_id=world.me.public)
    with pytest.raises(BadVoteSignature):
        c2.check(forged)


# ---- Ledger.apply --------------------------------------------------------------------------------


def test_credit_is_applied_once(ledger: Ledger, world: World) -> None:
    sender, recipient = world.foreign[0], world.mine[0]
    assert not ledger.owns(sender.public)
    cert = world.cert(world.order(sender, recipient, 25))
    _, result = durable_apply(ledger, cert)
    state = ledger.account(recipient.public)
    assert (state.balance, state.credits, state.history) == (BALANCE + 25, 1, 1)
    assert result.sides == layout.APPLIED_CREDIT and result.newly == [cert]
    assert ledger.store.get_applied(cert.id) == layout.APPLIED_CREDIT
    assert ledger.store.get_cert(cert.id) == cert.encode()

    again = Batch()
    result2 = ledger.apply(cert, again)
    assert len(again) == 0 and result2.newly == [] and result2.sides == layout.APPLIED_CREDIT
    assert ledger.account(recipient.public).balance == BALANCE + 25
    # And after a restart, deduplication still holds (the applied flag is durable).
    restarted = reload(ledger)
    again = Batch()
    restarted.apply(cert, again)
    assert len(again) == 0 and restarted.account(recipient.public).balance == BALANCE + 25


def test_debits_apply_in_sequence_order(ledger: Ledger, world: World) -> None:
    sender, recipient = world.mine[0], world.foreign[0]
    c0 = world.cert(world.order(sender, recipient, 100, 0))
    c1 = world.cert(world.order(sender, recipient, 200, 1))
    _, r0 = durable_apply(ledger, c0)
    assert r0.sides == layout.APPLIED_DEBIT and r0.gap is None
    durable_apply(ledger, c1)
    state = reload(ledger).account(sender.public)
    assert (state.balance, state.next_seq) == (BALANCE - 300, 2)
    assert ledger.debit_at(sender.public, 0) == c0.id and ledger.debit_at(sender.public, 1) == c1.id
    assert [e.order_id for _, e in ledger.store.history(sender.public)] == [c1.id, c0.id]


def test_certificate_ahead_waits_and_is_chained(ledger: Ledger, world: World) -> None:
    sender, recipient = world.mine[0], world.foreign[0]
    certs = [world.cert(world.order(sender, recipient, 10 * (s + 1), s)) for s in range(3)]

    batch, r2 = durable_apply(ledger, certs[2])
    assert r2.gap == (sender.public, 0, 2)
    assert r2.newly == [] and not r2.sides & layout.APPLIED_DEBIT
    assert any(key == layout.waiting_key(sender.public, 2) for key, _ in batch.ops)
    assert list(ledger.store.waiting()) == [(sender.public, 2, certs[2].id)]
    assert ledger.account(sender.public).next_seq == 0 and ledger.account(sender.public).balance == BALANCE

    # The waiting certificate survives a restart (it is on disk under W, with its certificate).
    ledger = reload(ledger)
    assert 2 in ledger.waiting.get(sender.public, {})
    _, r1 = durable_apply(ledger, certs[1])
    assert r1.gap == (sender.public, 0, 1)

    batch, r0 = durable_apply(ledger, certs[0])
    assert r0.newly == certs, "seq 0 applied, then the waiting 1 and 2 chained in order"
    assert r0.gap is None
    assert r0.sides & layout.APPLIED_DEBIT
    state = ledger.account(sender.public)
    assert (state.next_seq, state.balance) == (3, BALANCE - 60)
    assert list(ledger.store.waiting()) == []
    assert sender.public not in ledger.waiting
    assert all(ledger.store.get_applied(c.id) == layout.APPLIED_DEBIT for c in certs)
    assert {key for key, v in batch.ops if v is None} >= {layout.waiting_key(sender.public, s) for s in (1, 2)}


def test_chain_stops_at_the_next_gap(ledger: Ledger, world: World) -> None:
    sender, recipient = world.mine[0], world.foreign[0]
    certs = [world.cert(world.order(sender, recipient, 1, s)) for s in range(4)]
    durable_apply(ledger, certs[3])
    durable_apply(ledger, certs[1])
    _, r = durable_apply(ledger, certs[0])
    assert r.newly == [certs[0], certs[1]]
    assert r.gap == (sender.public, 2, 3), "still missing seq 2 before the waiting seq 3"


def test_one_apply_is_one_batch(ledger: Ledger, world: World) -> None:
    # Nothing reaches the store until the caller writes the batch; that one batch holds all of it.
    sender, recipient = world.mine[0], world.foreign[0]
    c1 = world.cert(world.order(sender, recipient, 5, 1))
    durable_apply(ledger, c1)  # waiting
    c0 = world.cert(world.order(sender, recipient, 7, 0))
    batch = Batch()
    ledger.apply(c0, batch)
    assert ledger.store.get_account(sender.public) == layout.AccountState(balance=BALANCE)
    assert ledger.store.get_debit(sender.public, 0) is None
    ledger.store.write(batch, sync=False)
    restarted = reload(ledger)
    assert restarted.accounts == ledger.accounts
    assert restarted.account(sender.public).next_seq == 2
    assert restarted.store.get_debit(sender.public, 1) == c1.id


def test_second_certificate_for_a_sequence_is_a_conflict(ledger: Ledger, world: World) -> None:
    sender, recipient = world.mine[0], world.foreign[0]
    applied = world.cert(world.order(sender, recipient, 10, 0))
    durable_apply(ledger, applied)
    before = ledger.account(sender.public).copy()
    # Only more Byzantine owners than W tolerates could sign this; the ledger must not move.
    rival = world.cert(world.order(sender, world.foreign[1], 20, 0))
    batch = Batch()
    result = ledger.apply(rival, batch)
    assert result.conflict == applied.id
    assert len(batch) == 0 and result.newly == []
    assert ledger.account(sender.public) == before
    assert ledger.conflicts == [(sender.public, 0, applied.id, rival.id)]
    assert ledger.store.get_cert(rival.id) is None


def test_peer_owning_both_sides_applies_both_in_one_batch(ledger: Ledger, world: World) -> None:
    sender, recipient = world.both_mine()
    cert = world.cert(world.order(sender, recipient, 40))
    batch = Batch()
    result = ledger.apply(cert, batch)
    assert result.sides == layout.APPLIED_DEBIT | layout.APPLIED_CREDIT
    written = {key for key, _ in batch.ops}
    assert {layout.account_key(sender.public), layout.account_key(recipient.public),
            layout.applied_key(cert.id), layout.cert_key(cert.id)} <= written
    ledger.store.write(batch, sync=False)
    restarted = reload(ledger)
    assert restarted.account(sender.public).balance == BALANCE - 40
    assert restarted.account(recipient.public).balance == BALANCE + 40
    assert restarted.applied(cert.id) == layout.APPLIED_DEBIT | layout.APPLIED_CREDIT


def test_debit_is_applied_even_if_balance_goes_negative(ledger: Ledger, world: World) -> None:
    # The unfunded account got a credit this owner missed; its debit is final all the same.
    poor = world.unfunded_mine
    assert poor is not None and ledger.peek(poor.public) is None
    cert = world.cert(world.order(poor, world.foreign[0], 50, 0))
    _, result = durable_apply(ledger, cert)
    assert result.sides & layout.APPLIED_DEBIT
    state = reload(ledger).account(poor.public)
    assert (state.balance, state.next_seq) == (-50, 1)


# ---- Gateway ---------------------------------------------------------------------------------------


@dataclass
class GatewayRig:
    gw: Gateway
    out: Outbox
    world: World

    def drain(self) -> list[object]:
        return self.out.drain()


def gateway(world: World, config: GatewayConfig | None = None) -> GatewayRig:
    # The gateway is a committee peer that owns neither side of the orders used below, so no vote
    # takes the own-vote path by accident.
    out = Outbox()
    me = world.committee[-1].public
    chk = CertificateChecker(world.network_id, committee_of(world), self_id=me)
    return GatewayRig(Gateway(me, world.network_id, world.ring, QUORUM, chk, out, config), out, world)


def gateway_order(world: World, amount: int = 10, seq: int = 0) -> Order:
    me = world.committee[-1].public
    pairs = [(s, r) for s in world.foreign + world.mine for r in world.foreign + world.mine
             if s is not r and not world.ring.owns(me, s.public)]
    sender, recipient = pairs[0]
    return world.order(sender, recipient, amount, seq)


def sends(effects: list[object], kind: type) -> list[Send]:
    return [e for e in effects if isinstance(e, Send) and isinstance(e.msg, kind)]


def test_gateway_asks_a_quorum_first_then_every_owner_after_the_hedge_delay(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    owners = world.ring.owners(order.sender)
    p = rig.gw.submit(order, 0.0)
    first = sends(rig.drain(), VoteRequest)
    assert len(first) == QUORUM and {s.dst for s in first} < set(owners)
    assert all(s.msg.order == order for s in first)
    hedge_at = rig.gw.next_deadline()
    assert 0 < hedge_at <= GatewayConfig().vote_timeout
    rig.gw.tick(hedge_at - 1e-3)
    assert rig.drain() == []  # nobody else is asked before the hedge delay
    rig.gw.tick(hedge_at)
    second = sends(rig.drain(), VoteRequest)
    # Every owner that has not voted is asked now, including the one left out at first.
    assert {s.dst for s in second} == set(owners)
    assert p.status == PENDING


def test_gateway_asks_the_remaining_owners_at_once_when_one_refuses(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    owners = world.ring.owners(order.sender)
    rig.gw.submit(order, 0.0)
    first = {s.dst for s in sends(rig.drain(), VoteRequest)}
    refuser = sorted(first)[0]
    rig.gw.on_refusal(refuser, Refusal(order.id, int(Refuse.SEQ_AHEAD), "behind", b""), 0.01)
    asked = {s.dst for s in sends(rig.drain(), VoteRequest)}
    assert set(owners) - first <= asked  # the owner left out at first is asked without waiting


def test_gateway_without_hedging_asks_every_owner_at_once(world: World) -> None:
    rig = gateway(world, GatewayConfig(hedge=False))
    order = gateway_order(world)
    rig.gw.submit(order, 0.0)
    asked = sends(rig.drain(), VoteRequest)
    assert sorted(s.dst for s in asked) == sorted(world.ring.owners(order.sender))


def test_quorum_of_votes_certifies_delivers_and_publishes(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    p = rig.gw.submit(order, 0.0)
    rig.drain()
    owners = world.ring.owners(order.sender)
    for voter in owners[: QUORUM - 1]:
        rig.gw.on_vote(voter, world.vote(voter, order), 0.1)
    assert p.status == PENDING and rig.drain() == []
    rig.gw.on_vote(owners[QUORUM - 1], world.vote(owners[QUORUM - 1], order), 0.2)
    assert p.status == CERTIFIED and p.cert is not None
    checker(world).check(p.cert)
    assert p.cert.order == order and len(p.cert.votes) == QUORUM
    effects = rig.drain()
    delivered = sends(effects, CertDelivery)
    targets = set(owners) | set(world.ring.owners(order.recipient))
    assert sorted(s.dst for s in delivered) == sorted(targets)
    assert all(s.msg.cert == p.cert for s in delivered)
    published = [e for e in effects if isinstance(e, Publish)]
    assert len(published) == 1 and published[0].payload == p.cert.encode()
    assert published[0].exclude >= targets | {rig.gw.me}
    notices = [e.event for e in effects if isinstance(e, Notify)]
    assert [(n.status, n.cert) for n in notices if isinstance(n, PaymentEvent)] == [(CERTIFIED, p.cert)]
    # A late fourth vote changes nothing.
    rig.gw.on_vote(owners[3], world.vote(owners[3], order), 0.3)
    assert p.cert is not None and len(p.cert.votes) == QUORUM and rig.drain() == []


def test_bad_votes_are_ignored_and_penalised(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    p = rig.gw.submit(order, 0.0)
    rig.drain()
    owners = world.ring.owners(order.sender)
    stranger = next(k.public for k in world.committee if k.public not in owners and k.public != rig.gw.me)
    # A committee member that does not own the sender.
    rig.gw.on_vote(stranger, world.vote(stranger, order), 0.1)
    # An owner relaying another owner's vote (src is not the voter).
    rig.gw.on_vote(owners[0], world.vote(owners[1], order), 0.1)
    # An owner's vote with a forged signature.
    rig.gw.on_vote(owners[2], dataclasses.replace(world.vote(owners[2], order), sig=bytes(64)), 0.1)
    effects = rig.drain()
    penalised = [e.peer_id for e in effects if isinstance(e, Penalize)]
    assert penalised == [stranger, owners[0], owners[2]]
    assert p.votes == {} and p.status == PENDING
    # Three genuine votes still certify afterwards: nothing was counted from the bad ones.
    for voter in owners[:QUORUM]:
        rig.gw.on_vote(voter, world.vote(voter, order), 0.2)
    assert p.status == CERTIFIED


def refusal(order: Order, code: Refuse, evidence: bytes = b"") -> Refusal:
    return Refusal(order.id, int(code), code.name.lower(), evidence)


def test_refusals_that_make_quorum_unreachable_fail_the_payment(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    p = rig.gw.submit(order, 0.0)
    rig.drain()
    owners = world.ring.owners(order.sender)
    rig.gw.on_refusal(owners[0], refusal(order, Refuse.INSUFFICIENT_FUNDS), 0.1)
    assert p.status == PENDING, "one refusal leaves 3 owners: a quorum is still possible"
    rig.gw.on_refusal(owners[1], refusal(order, Refuse.INSUFFICIENT_FUNDS), 0.1)
    assert p.status == FAILED and p.code == "insufficient_funds"
    events = [e.event for e in rig.drain() if isinstance(e, Notify)]
    assert [(e.status, e.code) for e in events] == [(FAILED, "insufficient_funds")]


def test_conflict_wins_over_other_refusals(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    rival = world.order(world.keys[order.sender], world.keys[order.recipient], order.amount + 1, 0)
    p = rig.gw.submit(order, 0.0)
    owners = world.ring.owners(order.sender)
    # Sent in this order, the most common code would tie; CONFLICT must still be the answer.
    rig.gw.on_refusal(owners[0], refusal(order, Refuse.INSUFFICIENT_FUNDS), 0.1)
    rig.gw.on_refusal(owners[1], refusal(order, Refuse.CONFLICT, rival.encode()), 0.1)
    assert p.status == FAILED and p.code == "conflict"
    assert p.evidence == rival.encode()


def test_retryable_refusals_do_not_fail_the_payment(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    p = rig.gw.submit(order, 0.0)
    owners = world.ring.owners(order.sender)
    for o in owners:
        rig.gw.on_refusal(o, refusal(order, Refuse.SEQ_AHEAD), 0.1)
    assert p.status == PENDING and p.refused == {}
    # A refusal from a non-owner does not count either.
    stranger = next(k.public for k in world.committee if k.public not in owners)
    rig.gw.on_refusal(stranger, refusal(order, Refuse.CONFLICT), 0.1)
    rig.gw.on_refusal(owners[0], refusal(order, Refuse.CONFLICT), 0.1)
    assert p.status == PENDING


def test_already_final_with_a_certificate_certifies_at_once(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    cert = world.cert(order)
    p = rig.gw.submit(order, 0.0)
    rig.drain()
    owner = world.ring.owners(order.sender)[3]
    rig.gw.on_refusal(owner, refusal(order, Refuse.ALREADY_FINAL, cert.encode()), 0.1)
    assert p.status == CERTIFIED and p.cert == cert
    assert sends(rig.drain(), CertDelivery)


def test_already_final_with_a_bad_certificate_is_penalised(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    owners = world.ring.owners(order.sender)
    forged = world.cert(order, owners[:2])  # too few votes
    p = rig.gw.submit(order, 0.0)
    rig.drain()
    rig.gw.on_refusal(owners[3], refusal(order, Refuse.ALREADY_FINAL, forged.encode()), 0.1)
    rig.gw.on_refusal(owners[2], refusal(order, Refuse.ALREADY_FINAL, b"not cbor"), 0.1)
    assert p.status == PENDING and p.cert is None
    assert [e.peer_id for e in rig.drain() if isinstance(e, Penalize)] == [owners[3], owners[2]]


def certify(rig: GatewayRig, order: Order, now: float = 0.0) -> None:
    rig.gw.submit(order, now)
    for voter in rig.world.ring.owners(order.sender)[:QUORUM]:
        rig.gw.on_vote(voter, rig.world.vote(voter, order), now)
    rig.drain()


def test_applied_acks_from_both_quorums_settle(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    certify(rig, order)
    p = rig.gw.lookup(order.id)
    assert p is not None and p.status == CERTIFIED
    from_owners = world.ring.owners(order.sender)
    to_owners = world.ring.owners(order.recipient)
    stranger = next((k.public for k in world.committee if k.public not in from_owners + to_owners), None)
    # A non-owner's ack, and an owner acking only the side it does not own, count for nothing.
    if stranger is not None:
        rig.gw.on_applied(stranger, order.id, SIDE_DEBIT | SIDE_CREDIT, 1.0)
    only_from = next((o for o in from_owners if o not in to_owners), None)
    if only_from is not None:
        rig.gw.on_applied(only_from, order.id, SIDE_CREDIT, 1.0)
    assert p.credit_acks == set() and p.debit_acks == set()
    for o in from_owners[:QUORUM]:
        rig.gw.on_applied(o, order.id, SIDE_DEBIT, 1.0)
    for o in to_owners[: QUORUM - 1]:
        rig.gw.on_applied(o, order.id, SIDE_CREDIT, 1.0)
    assert p.status == CERTIFIED, "one side has only W-1 acks"
    rig.gw.on_applied(to_owners[QUORUM - 1], order.id, SIDE_CREDIT, 2.0)
    assert p.status == SETTLED and p.settled_at == 2.0
    assert [e.event.status for e in rig.drain() if isinstance(e, Notify)] == [SETTLED]
    # Settled, but the owners that have not confirmed keep getting deliveries...
    assert order.id in rig.gw.active
    rig.gw.tick(rig.gw.next_deadline())
    resent = {s.dst for s in sends(rig.drain(), CertDelivery)}
    missing = (set(from_owners) - set(from_owners[:QUORUM])) | (set(to_owners) - set(to_owners[:QUORUM]))
    assert resent == missing
    # ...until every owner of both sides has it.
    for o in from_owners:
        rig.gw.on_applied(o, order.id, SIDE_DEBIT, 3.0)
    for o in to_owners:
        rig.gw.on_applied(o, order.id, SIDE_CREDIT, 3.0)
    assert rig.gw.lookup(order.id) is p and order.id not in rig.gw.active
    assert [e for e in rig.drain() if isinstance(e, Notify)] == [], "settled is announced once"


def test_deliveries_are_retried_to_owners_that_did_not_ack(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    certify(rig, order)
    p = rig.gw.lookup(order.id)
    assert p is not None
    acked = world.ring.owners(order.sender)[0]
    rig.gw.on_applied(acked, order.id, SIDE_DEBIT | SIDE_CREDIT, 0.5)
    rig.gw.tick(rig.gw.next_deadline())
    resent = {s.dst for s in sends(rig.drain(), CertDelivery)}
    targets = set(world.ring.owners(order.sender)) | set(world.ring.owners(order.recipient))
    # Only the owner that confirmed every side it owns is left out of the retry.
    assert resent == targets - {acked}


def test_silent_owners_are_re_asked_with_backoff_then_timeout(world: World) -> None:
    config = GatewayConfig(vote_timeout=1.0, backoff=2.0, deadline=20.0, hedge=False)
    rig = gateway(world, config)
    order = gateway_order(world)
    owners = world.ring.owners(order.sender)
    p = rig.gw.submit(order, 0.0)
    rig.drain()
    rig.gw.on_vote(owners[0], world.vote(owners[0], order), 0.1)
    rig.gw.on_refusal(owners[1], refusal(order, Refuse.INSUFFICIENT_FUNDS), 0.1)
    rig.drain()
    times: list[float] = []
    while p.status == PENDING:
        at = rig.gw.next_deadline()
        assert at <= config.deadline
        rig.gw.tick(at - 1e-6)
        assert rig.drain() == [], "nothing happens before the timer is due"
        rig.gw.tick(at)
        effects = rig.drain()
        times.append(at)
        if p.status == PENDING:
            # Only the two owners that neither voted nor refused are asked again.
            assert sorted(s.dst for s in sends(effects, VoteRequest)) == sorted(owners[2:])
    # Delays 1, 2, 4, then capped at deadline/4 = 5, and the last timer lands exactly on the deadline.
    assert times == [1.0, 3.0, 7.0, 12.0, 17.0, 20.0]
    assert p.status == FAILED and p.code == "timeout"
    assert rig.gw.lookup(order.id) is p and not rig.gw.active


def test_resubmitting_joins_a_pending_payment_and_restarts_a_failed_one(world: World) -> None:
    rig = gateway(world, GatewayConfig(deadline=4.0, hedge=False))
    order = gateway_order(world)
    p = rig.gw.submit(order, 0.0)
    first = sends(rig.drain(), VoteRequest)
    assert len(first) == REPLICATION
    again = rig.gw.submit(order, 0.5)
    assert again is p
    assert sends(rig.drain(), VoteRequest) == [], "joining must not send a second round of requests"
    rounds = 0
    while p.status == PENDING:
        rig.gw.tick(rig.gw.next_deadline())
        rounds += len(sends(rig.drain(), VoteRequest))
    assert p.status == FAILED
    assert rounds > 0
    restarted = rig.gw.submit(order, 10.0)
    assert restarted is not p and restarted.status == PENDING and restarted.created == 10.0
    assert len(sends(rig.drain(), VoteRequest)) == REPLICATION


def test_resubmitting_a_certified_payment_returns_it(world: World) -> None:
    rig = gateway(world)
    order = gateway_order(world)
    certify(rig, order)
    p = rig.gw.lookup(order.id)
    assert p is not None and p.status == CERTIFIED
    assert rig.gw.submit(order, 1.0) is p
    assert sends(rig.drain(), VoteRequest) == []
