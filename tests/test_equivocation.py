"""The equivocation book of one owner (peer/equivocation.py), over a real ledger and store: what
counts as evidence, what does not, how long it is shown, and its bounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto.keys import SigningKey
from crypto.messages import Order
from peer import equivocation
from peer.equivocation import ConflictSeen, EquivocationBook
from peer.ledger import Ledger
from peer.ring import Ring
from store.db import Store
from store.layout import AccountState

NETWORK = bytes(range(32))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    me = SigningKey.generate().public
    store = Store.create(tmp_path / "db", NETWORK)
    try:
        yield Ledger(store, Ring((me,), 1, 16), me)
    finally:
        store.close()


def _pair(sender: SigningKey, seq: int = 0) -> tuple[Order, Order]:
    a = Order.create(sender, NETWORK, SigningKey.generate().public, 10, seq)
    b = Order.create(sender, NETWORK, SigningKey.generate().public, 20, seq)
    return a, b


def _forged(order: Order) -> Order:
    return Order(order.network, order.sender, order.recipient, order.amount + 1, order.seq, order.memo, bytes(64))


def test_two_sender_signed_orders_for_one_seq_are_evidence(ledger: Ledger) -> None:
    book = EquivocationBook(ledger)
    sender = SigningKey.generate()
    a, b = _pair(sender)
    book.on_event(ConflictSeen(b, a.encode()))  # the runtime delivers it as a notification
    evidence = book.current(sender.public)
    assert evidence is not None and evidence.seq == 0 and evidence.ids == (a.id, b.id)
    assert evidence.orders == (a.encode(), b.encode())
    assert book.equivocating() == 1 and book.counters["evidence"] == 1
    # A third order for the same seq adds nothing; the pair already proves it.
    c = Order.create(sender, NETWORK, SigningKey.generate().public, 30, 0)
    assert not book.record(c, a.encode())
    assert book.current(sender.public).ids == (a.id, b.id)


def test_what_is_not_evidence(ledger: Ledger) -> None:
    book = EquivocationBook(ledger)
    sender = SigningKey.generate()
    a, b = _pair(sender)
    assert not book.record(a, a.encode())  # the same order again
    assert not book.record(_forged(b), a.encode())  # a relay's forgery
    other_seq = Order.create(sender, NETWORK, SigningKey.generate().public, 5, 1)
    assert not book.record(other_seq, a.encode())  # not the locked sequence
    assert not book.record(b, b"\x00garbage")  # a lock that does not decode
    assert book.current(sender.public) is None and book.equivocating() == 0
    assert book.counters == {"evidence": 0, "forged": 1}


def test_forgeries_stop_costing_signature_checks(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    book = EquivocationBook(ledger)
    a, b = _pair(SigningKey.generate())
    checks = 0
    real = Order.signature_valid

    def counting(self: Order) -> bool:
        nonlocal checks
        checks += 1
        return real(self)

    monkeypatch.setattr(Order, "signature_valid", counting)
    for i in range(20):
        forged = Order(b.network, b.sender, b.recipient, b.amount + i, b.seq, b.memo, bytes(64))
        assert not book.record(forged, a.encode())
    assert checks == equivocation.MAX_TRIES


def test_evidence_is_shown_only_while_the_account_is_at_that_seq(ledger: Ledger) -> None:
    book = EquivocationBook(ledger)
    sender = SigningKey.generate()
    a, b = _pair(sender)
    ledger.accounts[sender.public] = AccountState(balance=100, next_seq=0)
    assert book.record(b, a.encode())
    assert book.current(sender.public) is not None
    ledger.accounts[sender.public].next_seq = 1  # a certificate used seq 0
    assert book.current(sender.public) is None and book.equivocating() == 0


def test_the_book_is_bounded(ledger: Ledger) -> None:
    book = EquivocationBook(ledger, max_accounts=3)
    senders = [SigningKey.generate() for _ in range(5)]
    for sender in senders:
        a, b = _pair(sender)
        assert book.record(b, a.encode())
    assert [book.current(s.public) is not None for s in senders] == [False, False, True, True, True]
