"""Units without processes: the live view's latency window and the peers' payment log."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from devnet.view import Window, quantile
from peer.gateway import CERTIFIED, FAILED, SETTLED, Payment, PaymentEvent
from peer.logs import PaymentLog
from peer.settlement import CertApplied
from peer.wire import SIDE_CREDIT, SIDE_DEBIT

NET = bytes(32)


def test_one_payment_stays_in_the_window_until_it_is_older_than_the_span() -> None:
    window = Window(span=60.0)
    window.add(0.0, 0.0, {})
    window.add(1.0, 1.0, {0.01: 0.0, 0.02: 1.0, float("inf"): 1.0})  # one payment certified in ≤20 ms
    assert window.rate(3.0, span=5.0) == 1.0 / 5.0 and window.rate(7.0, span=5.0) == 0.0
    for t in range(2, 60):
        window.add(float(t), 0.0, {0.01: 0.0, 0.02: 0.0, float("inf"): 0.0})  # quiet refreshes after it
        assert window.latency() == (1, 0.02, 0.02)
    window.add(62.0, 0.0, {})
    assert window.latency() == (0, None, None)


def test_quantile_is_the_bucket_holding_it() -> None:
    buckets = {0.01: 90.0, 0.05: 99.0, 0.1: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == 0.01 and quantile(buckets, 0.99) == 0.05 and quantile({}, 0.5) is None


def _records(logger: logging.Logger) -> list[logging.LogRecord]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.handlers[:] = [Keep()]
    logger.propagate = False
    return records


def test_the_payment_log_traces_each_payment_and_sums_them_up() -> None:
    sender, recipient, owner = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    order = Order.create(sender, NET, recipient.public, 1250, 7, "")
    payment = Payment(order, order.id, (owner.public,), (owner.public,), created=100.0)
    node = SimpleNamespace(settlement=SimpleNamespace(gateway=SimpleNamespace(
        lookup=lambda oid: payment if oid == order.id else None)))
    clock = [100.0]
    logger = logging.getLogger("test.payments")
    logger.setLevel(logging.DEBUG)
    records = _records(logger)
    log = PaymentLog(node, every=10.0, now=lambda: clock[0], logger=logger)
    clock[0] = 100.025
    log.on_event(PaymentEvent(order.id, CERTIFIED))
    cert = Certificate(order, (Vote.create(owner, NET, order),))
    log.on_event(CertApplied(cert, SIDE_DEBIT | SIDE_CREDIT))
    clock[0] = 100.05
    log.on_event(PaymentEvent(order.id, SETTLED))
    log.on_event(object())  # anything else is ignored
    debug = [r for r in records if r.levelno == logging.DEBUG]
    assert [r.getMessage() for r in debug] == ["payment certified", "payment applied", "payment settled"]
    assert all(r.fields["payment"] == order.id.hex() for r in debug)
    assert debug[0].fields["ms_since_received"] == 25.0 and debug[0].fields["amount"] == 1250
    assert debug[1].fields["sides"] == "debit+credit"
    assert not [r for r in records if r.levelno == logging.INFO]  # no summary before 10 s
    clock[0] = 111.0
    log.on_event(PaymentEvent(b"\x01" * 32, FAILED, code="timeout"))
    summary = [r for r in records if r.levelno == logging.INFO]
    assert len(summary) == 1 and summary[0].fields == {
        "certified": 1, "settled": 1, "failed:timeout": 1, "applied_debit": 1, "applied_credit": 1}
    # At info, the life of each payment is not logged, only the summaries.
    logger.setLevel(logging.INFO)
    records.clear()
    log.on_event(PaymentEvent(order.id, CERTIFIED))
    assert records == []
