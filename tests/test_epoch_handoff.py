"""The state handoff (docs/protocol.md 11.3-11.5) step by step, on real stores through a synchronous
router (tests/epoch_rig.py): streams that only carry moved accounts, bounded chunks, resumption
after a crash of either side, answers only once sealed, report substantiation, and Byzantine
reporters lying about next_seq, held orders and credits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from crypto.keys import SigningKey
from crypto.messages import Order, Vote
from peer.epoch_chain import EpochCertificate
from peer.handoff import DONE, Handoff, HandoffConfig, make_cursor, parse_cursor, stream_past
from peer.wire import (
    AccountReport,
    CertDelivery,
    CertRange,
    CreditsRequest,
    EpochSyncRequest,
    HandoffChunk,
    HandoffPull,
    Refusal,
    Refuse,
    VoteRequest,
)
from store import layout
from store.db import Batch
from store.layout import StreamRecord
from tests.epoch_rig import Rig

NEW = 5  # the spare that joins in epoch 1


def busy(rig: Rig, payments: int = 30) -> None:
    """Payments among all accounts (several debits and credits each), applied by their owners."""
    n = len(rig.account_keys)
    for i in range(payments):
        rig.pay(i % n, (i * 7 + 3) % n, 5 + i)


def moved_to(rig: Rig, peer: int, cert: EpochCertificate | None = None) -> list[bytes]:
    """Accounts that move to `peer` at epoch 1 (from the certificate, before it is entered)."""
    me = rig.keys[peer].public
    new = cert.change.committee() if cert is not None else rig.peer(0).settlement.chain.committee(1)
    return [k.public for k in rig.account_keys
            if me in new.owners(k.public) and me not in rig.owners(k.public, 0)]


def continuing_owner(rig: Rig, account: bytes) -> int:
    both = set(rig.owners(account, 0)) & set(rig.owners(account, 1))
    return rig.index[sorted(both)[0]]


def test_cursor_encoding_and_progress() -> None:
    a, b = bytes([1]) * 32, bytes([2]) * 32
    assert parse_cursor(b"") is None
    assert parse_cursor(make_cursor(a)) == (a, DONE)
    assert parse_cursor(make_cursor(a, 7)) == (a, 7)
    assert make_cursor(a, 7) < make_cursor(a) < make_cursor(b, 0)  # progress is byte order
    assert stream_past(make_cursor(a, 3), False, a) and stream_past(make_cursor(b), False, a)
    assert not stream_past(make_cursor(a), False, b) and not stream_past(b"", False, a)
    assert stream_past(b"", True, b)


def test_a_new_owner_takes_over_exactly_the_accounts_that_moved(rig: Rig) -> None:
    busy(rig)
    cert = rig.change(add=[NEW])
    moved = moved_to(rig, NEW, cert)
    assert moved, "the ring gave the new peer nothing"
    # Before any chunk is in, the new owner refuses to vote on a moved account (retryable).
    rig.drop = lambda src, dst, msg: type(msg) is HandoffChunk
    rig.enter(cert)
    new = rig.peer(NEW)
    rig.advance(0.5)
    account = moved[0]
    sender = next(k for k in rig.account_keys if k.public == account)
    order = Order.create(sender, rig.network_id, rig.account_keys[0].public if sender is not rig.account_keys[0]
                         else rig.account_keys[1].public, 1, rig.seqs.get(account, 0))
    new.settlement.handle(rig.keys[0].public, VoteRequest(order), rig.now)
    refusals = [e.msg for e in new.settlement.out.drain() if type(getattr(e, "msg", None)) is Refusal]
    assert refusals and refusals[0].code == Refuse.HANDOFF_PENDING and Refuse.HANDOFF_PENDING.retryable
    rig.drop = lambda src, dst, msg: False
    rig.advance(3)
    status = new.handoff.status()
    assert status["state"] == "complete" and status["accounts_pending"] == 0
    assert all(s["done"] for s in status["streams"].values())
    # Its state of every moved account equals a continuing owner's; nothing else moved to it.
    for a in moved:
        assert rig.state(NEW, a) == rig.state(continuing_owner(rig, a), a), a.hex()[:8]
    stray = [k.public for k in rig.account_keys if k.public not in moved
             and rig.peer(NEW).settlement.ledger.peek(k.public) is not None
             and rig.keys[NEW].public not in rig.owners(k.public, 1)]
    assert stray == []
    # Every certificate in a moved account's history is readable from the new owner.
    for a in moved:
        source = rig.peer(continuing_owner(rig, a)).store
        for _, entry in source.history(a, limit=1000):
            assert new.settlement.ledger.cert_bytes(entry.order_id) is not None
    # Only the accounts whose owner set changed were streamed, each reported once per old owner.
    reports = [r for s in rig.sent if type(s.msg) is HandoffChunk and s.dst == new.id for r in s.msg.reports]
    assert {r.account for r in reports} <= set(moved)
    assert status["accounts_moved_in"] == len({r.account for r in reports})


def test_chunks_are_bounded_and_a_restarted_new_owner_resumes_from_its_cursor(tmp_path: Path) -> None:
    rig = Rig(tmp_path, handoff_config=HandoffConfig(chunk_bytes=1500))
    try:
        busy(rig, 40)
        rig.enter(rig.change(add=[NEW]))
        new_id = rig.keys[NEW].public
        chunks = lambda: [s for s in rig.sent if type(s.msg) is HandoffChunk and s.dst == new_id]  # noqa: E731
        # Let a few chunks in, then crash the new owner.
        rig.drop = lambda src, dst, msg: dst == new_id and type(msg) is HandoffChunk and len(chunks()) > 4
        rig.pump()
        received = chunks()[:4]
        assert received and all(c.size <= 1500 + 1024 for c in received), [c.size for c in received]
        stored = dict(rig.peer(NEW).store.streams(1))
        assert any(rec.cursor for rec in stored.values()), "no cursor was written with the chunks"
        rig.crash(NEW)
        rig.drop = lambda src, dst, msg: False
        before = len(rig.sent)
        node = rig.restart(NEW)
        pulls = [s.msg for s in rig.sent[before:] if type(s.msg) is HandoffPull and s.src == new_id]
        resumed = {p.after for p in pulls}
        assert {rec.cursor for rec in stored.values() if rec.cursor and not rec.done} <= resumed
        rig.advance(5)
        assert node.handoff.status()["state"] == "complete"
        for a in moved_to(rig, NEW):
            assert rig.state(NEW, a) == rig.state(continuing_owner(rig, a), a)
    finally:
        rig.close()


def test_an_old_owner_crash_costs_nothing_and_it_serves_only_once_sealed(rig: Rig) -> None:
    busy(rig)
    cert = rig.change(add=[NEW])
    late = 2
    late_id = rig.keys[late].public
    # It hears of epoch 1 from nobody for now.
    rig.drop = lambda src, dst, msg: dst == late_id and type(msg).__name__ in ("EpochSyncReply", "EpochAnnounce")
    rig.enter(cert, peers=[i for i in range(6) if i != late])
    new = rig.peer(NEW)
    # Not sealed yet: the old owner answers "not yet" (where it is), never with reports.
    rig.advance(1)
    answers = [s.msg for s in rig.sent if s.src == late_id and s.dst == new.id]
    assert answers and all(type(m) is EpochSyncRequest and m.after == 0 for m in answers)
    # It crashes; its replacement process (same store, no memory) serves the stream from scratch.
    rig.crash(late)
    rig.drop = lambda src, dst, msg: False
    rig.restart(late)
    rig.advance(5)  # the new owner's pulls make it ask for the chain, then it serves
    assert rig.peer(late).settlement.chain.epoch == 1
    assert new.handoff.status()["state"] == "complete"
    assert new.handoff.status()["streams"][late_id.hex()]["done"]


class Overclaiming(Handoff):
    """Reports a next_seq three higher than it has, for every account."""

    def report(self, epoch: int, account: bytes) -> AccountReport:
        honest = super().report(epoch, account)
        return dataclasses.replace(honest, next_seq=honest.next_seq + 3) if honest.ready else honest


class ForgedHolds(Handoff):
    """Reports holding an order the account never signed."""

    def report(self, epoch: int, account: bytes) -> AccountReport:
        honest = super().report(epoch, account)
        forged = Order(self.network_id, account, bytes(32), 1, honest.next_seq, "forged", bytes(64))
        return dataclasses.replace(honest, holds=(forged,))


class MadeUpCredits(Handoff):
    def report(self, epoch: int, account: bytes) -> AccountReport:
        honest = super().report(epoch, account)
        return dataclasses.replace(honest, credits=honest.credits + 2, credit_digest=bytes([9]) * 32)


def liar_rig(tmp_path: Path, cls: type[Handoff]) -> tuple[Rig, int, bytes]:
    """A rig where one genesis peer lies in its reports; an account that moves to the new peer
    and had that liar among its old owners."""
    probe = Rig(tmp_path / "probe")
    cert = probe.change(add=[NEW])
    probe.enter(cert)
    for liar in range(5):
        for k in probe.account_keys:
            old, new = probe.owners(k.public, 0), probe.owners(k.public, 1)
            if probe.keys[NEW].public in new and probe.keys[NEW].public not in old \
                    and probe.keys[liar].public in old:
                probe.close()
                rig = Rig(tmp_path / "rig", handoff_config=HandoffConfig(claim_timeout=2.0, credit_timeout=2.0),
                          handoff_classes={liar: cls})
                return rig, liar, k.public
    raise AssertionError("no account moves with a given old owner")


def test_a_next_seq_nobody_can_back_is_dropped_and_penalised(tmp_path: Path) -> None:
    rig, liar, account = liar_rig(tmp_path, Overclaiming)
    try:
        busy(rig)
        rig.enter(rig.change(add=[NEW]))
        new = rig.peer(NEW)
        liar_id = rig.keys[liar].public
        rig.advance(1)
        # It is asked to back its claim with certificates, and cannot.
        asked = [s.msg for s in rig.sent if type(s.msg) is CertRange and s.dst == liar_id and s.msg.account == account]
        assert asked
        assert new.handoff.pending(account)
        rig.advance(4)
        assert not new.handoff.pending(account)
        assert any(who == liar_id and "could not back" in why for _, who, why in rig.penalties)
        assert rig.state(NEW, account) == rig.state(continuing_owner(rig, account), account)
    finally:
        rig.close()


def test_a_forged_held_order_is_refused_and_its_reporter_not_counted(tmp_path: Path) -> None:
    rig, liar, account = liar_rig(tmp_path, ForgedHolds)
    try:
        busy(rig)
        rig.enter(rig.change(add=[NEW]))
        rig.advance(3)
        new = rig.peer(NEW)
        liar_id = rig.keys[liar].public
        assert any(who == liar_id and "did not sign" in why for _, who, why in rig.penalties)
        assert not new.handoff.pending(account)
        state = new.settlement.ledger.peek(account)
        seq = 0 if state is None else state.next_seq
        assert (account, seq) not in new.settlement.ledger.holds  # nothing held: the forgery did not count
    finally:
        rig.close()


def test_made_up_credits_are_compared_and_an_unanswered_comparison_is_given_up(tmp_path: Path) -> None:
    rig, liar, account = liar_rig(tmp_path, MadeUpCredits)
    try:
        busy(rig)
        liar_id = rig.keys[liar].public
        # The liar does not even answer the comparison: the new owner waits, then gives up.
        rig.drop = lambda src, dst, msg: src == liar_id and type(msg).__name__ == "CreditsReply"
        rig.enter(rig.change(add=[NEW]))
        rig.advance(0.75)
        asked = [s for s in rig.sent if type(s.msg) is CreditsRequest and s.dst == liar_id and s.msg.account == account]
        assert asked and rig.peer(NEW).handoff.pending(account)
        rig.advance(3)
        assert not rig.peer(NEW).handoff.pending(account)
        assert rig.state(NEW, account) == rig.state(continuing_owner(rig, account), account)
    finally:
        rig.close()


def test_made_up_credits_answered_with_nothing_new_end_the_comparison_at_once(tmp_path: Path) -> None:
    rig, _, account = liar_rig(tmp_path, MadeUpCredits)
    try:
        busy(rig)
        rig.enter(rig.change(add=[NEW]))
        rig.advance(0.5)  # well inside the credit timeout
        assert not rig.peer(NEW).handoff.pending(account)
        assert rig.state(NEW, account) == rig.state(continuing_owner(rig, account), account)
    finally:
        rig.close()


def _lock(rig: Rig, peer: int, order: Order, epoch: int = 0) -> None:
    """Make `peer` hold a durable lock on `order` as if it had voted for it in `epoch`."""
    vote = Vote.create(rig.keys[peer], rig.network_id, order, epoch)
    batch = Batch()
    rig.peer(peer).settlement.ledger.lock(order.sender, order.seq, order, vote.encode(), batch)
    rig.write(peer, batch)


def test_a_lone_holder_among_four_reports_locks_nothing_but_two_holders_do(rig: Rig) -> None:
    cert = rig.change(add=[NEW])
    moved = moved_to(rig, NEW, cert)
    account = next(k for k in rig.account_keys if k.public == moved[0])
    old = rig.owners(account.public, 0)
    to = rig.account_keys[0].public if account is not rig.account_keys[0] else rig.account_keys[1].public
    x = Order.create(account, rig.network_id, to, 3, 0, "x")
    y = Order.create(account, rig.network_id, to, 4, 0, "y")
    _lock(rig, rig.index[old[0]], x)  # one holder of x: it cannot have been certified
    _lock(rig, rig.index[old[1]], y)
    _lock(rig, rig.index[old[2]], y)  # two holders of y: it may have been
    rig.enter(cert)
    rig.advance(3)
    ledger = rig.peer(NEW).settlement.ledger
    assert not rig.peer(NEW).handoff.pending(account.public)
    assert [Order.decode(raw).id for raw in ledger.holds[(account.public, 0)]] == [y.id]
    # It votes for y only, naming epoch 1.
    for order, expect in ((x, Refuse.CONFLICT), (y, None)):
        rig.peer(NEW).settlement.handle(rig.keys[0].public, VoteRequest(order), rig.now)
        effects = rig.peer(NEW).settlement.out.drain()
        sent = [t.msg for e in effects for t in (getattr(e, "then", ()) or (e,)) if hasattr(t, "msg")]
        if expect is None:
            votes = [m.vote for m in sent if type(m).__name__ == "VoteReply"]
            assert votes and votes[0].epoch == 1 and votes[0].order_id == y.id
        else:
            assert [m.code for m in sent if type(m) is Refusal] == [expect]
        rig._perform(rig.keys[NEW].public, effects)


def test_streams_resume_from_stored_cursor_records(rig: Rig) -> None:
    """The stored stream record is exactly what the next pull starts from."""
    busy(rig)
    rig.enter(rig.change(add=[NEW]))
    rig.advance(3)
    for peer, record in rig.peer(NEW).store.streams(1):
        assert record.done and isinstance(record, StreamRecord)
        sent = [s.msg for s in rig.sent if type(s.msg) is HandoffPull and s.dst == peer]
        assert sent and sent[0].after == b""
    assert list(rig.peer(NEW).store.reports(1)) == []  # a complete handoff's reports are deleted
    assert list(rig.peer(NEW).store.ready_accounts(1)) == []
    assert dict(rig.peer(NEW).store.handoffs())[1].complete


def test_hold_table_round_trips() -> None:
    orders = (b"\x01" * 40, b"\x02" * 41)
    assert layout.decode_holds(layout.encode_holds(orders)) == orders


def test_an_account_known_only_by_its_hold_set_is_still_reported(rig: Rig) -> None:
    """An old owner may hold a hold set (inherited in an earlier handoff) for an account it has no
    other state for. Its report must still travel to the next new owners, or they would count it
    as holding nothing and could free a sequence an order may have been certified at (Lemma 2)."""
    cert = rig.change(add=[NEW])
    new_committee = cert.change.committee()
    me_new = rig.keys[NEW].public
    # A never-funded account that moves to NEW.
    while True:
        sender = SigningKey.generate()
        old = rig.owners(sender.public, 0)
        if me_new in new_committee.owners(sender.public) and me_new not in old:
            break
    holder = rig.index[old[0]]
    order = Order.create(sender, rig.network_id, rig.account_keys[0].public, 1, 0, "held")
    batch = Batch()
    ledger = rig.peer(holder).settlement.ledger
    ledger.set_holds(sender.public, 0, (order.encode(),), batch)
    rig.write(holder, batch)
    assert ledger.peek(sender.public) is None  # no state at all, only the hold set
    rig.enter(cert)
    handoff = rig.peer(holder).handoff
    chunk = handoff._build_chunk(1, rig.peer(holder).settlement.chain.committee(0), new_committee, me_new,
                                 None, set(), 1 << 20)
    reports = [r for r in chunk.reports if r.account == sender.public]
    assert reports and [o.id for o in reports[0].holds] == [order.id]


def test_a_late_certificate_is_forwarded_for_the_side_a_peer_no_longer_owns(rig: Rig) -> None:
    """11.6: a gateway still in the old epoch delivers to the old owners. A peer that owned the
    sender then but now owns only the recipient applies its side and forwards the certificate to
    the sender's current owners."""
    cert = rig.change(add=[NEW])
    new = cert.change.committee()
    n = len(rig.account_keys)
    found = None
    for s in range(n):
        for r in range(n):
            if s == r:
                continue
            a, b = rig.account_keys[s].public, rig.account_keys[r].public
            for peer in set(rig.owners(a, 0)) - set(new.owners(a)):
                if peer in new.owners(b):
                    found = (s, r, rig.index[peer])
                    break
            if found:
                break
        if found:
            break
    assert found, "no peer lost a sender and kept a recipient in this ring"
    s, r, p = found
    late = rig.pay(s, r, 1, deliver=False)  # certified in epoch 0, not yet delivered
    rig.enter(cert)
    rig.advance(3)
    node = rig.peer(p).settlement
    node.handle(rig.keys[0].public, CertDelivery(late), rig.now)
    sent = [e for e in node.out.drain()]
    forwarded = {getattr(e, "dst", None) for e in sent if type(getattr(e, "msg", None)) is CertDelivery}
    sender_owners = set(new.owners(rig.account_keys[s].public)) - {rig.keys[p].public}
    assert sender_owners and sender_owners <= forwarded
