"""Structured, leveled logs: one line per event, each carrying the peer id.

`json` format writes one JSON object per line (for machines); `text` writes
`time level peer logger: message key=value...` (for people). Extra fields passed with
`log.info("...", extra={"fields": {...}})` are included either way.

Levels: `debug` shows every payment's life at this peer (`PaymentLog`: certified, settled or failed
at its gateway, with the time since the gateway received it; each side applied at an owner), so a
client's timeout can be traced by payment id; `info` shows a summary of them every 10 s besides
start-up, membership and connection events.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable

import trio

from crypto.address import encode_address
from peer.gateway import PaymentEvent
from peer.settlement import CertApplied, PaymentTrace
from peer.wire import SIDE_CREDIT, SIDE_DEBIT

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _PeerFilter(logging.Filter):
    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer

    def filter(self, record: logging.LogRecord) -> bool:
        record.peer = self.peer
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "peer": getattr(record, "peer", ""),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = " ".join(f"{k}={v}" for k, v in (getattr(record, "fields", {}) or {}).items())
        line = f"{stamp} {record.levelname.lower():<7} {getattr(record, 'peer', '')} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(peer: str, level: str = "info", fmt: str = "json", stream=None) -> None:
    """Route every `meshpay.*` logger to one handler on stderr (or `stream`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_PeerFilter(peer))
    root = logging.getLogger("meshpay")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    root.propagate = False


class PaymentLog:
    """A runtime subscriber (`node.runtime.subscribe(PaymentLog(node).on_event)`) that logs each
    payment's life at debug and, at most every `every` seconds, a summary at info."""

    def __init__(self, node, *, every: float = 10.0, now: Callable[[], float] = trio.current_time,
                 logger: logging.Logger | None = None) -> None:
        self.node = node
        self.every = every
        self.now = now
        self.log = logger or logging.getLogger("meshpay.payments")
        self.counts: Counter[str] = Counter()
        self.since: float | None = None
        # Received/voted lines cost a notification per vote: only when someone reads them.
        node.settlement.trace = self.log.isEnabledFor(logging.DEBUG)

    def on_event(self, event: object) -> None:
        kind = type(event)
        if kind is PaymentEvent:
            self._gateway(event)  # type: ignore[arg-type]
        elif kind is CertApplied:
            self._applied(event)  # type: ignore[arg-type]
        elif kind is PaymentTrace:
            self._trace(event)  # type: ignore[arg-type]
            return
        else:
            return
        self._maybe_summarise()

    def _gateway(self, event: PaymentEvent) -> None:
        key = event.status if event.code is None else f"{event.status}:{event.code}"
        self.counts[key] += 1
        if not self.log.isEnabledFor(logging.DEBUG):
            return
        fields: dict[str, object] = {"payment": event.order_id.hex(), "status": event.status}
        p = self.node.settlement.gateway.lookup(event.order_id)
        if p is not None:
            order = p.order
            fields.update({"from": encode_address(order.sender), "to": encode_address(order.recipient),
                           "amount": order.amount, "seq": order.seq, "votes": len(p.votes),
                           "ms_since_received": round((self.now() - p.created) * 1000, 1)})
        if event.code is not None:
            fields.update(code=event.code, detail=event.detail)
        self.log.debug(f"payment {event.status}", extra={"fields": fields})

    def _trace(self, event: PaymentTrace) -> None:
        order = event.order
        fields: dict[str, object] = {"payment": order.id.hex(), "from": encode_address(order.sender),
                                     "to": encode_address(order.recipient), "amount": order.amount, "seq": order.seq}
        if event.src is not None:
            fields["gateway"] = event.src.hex()[:16]
        if event.detail:
            fields["reason"] = event.detail
        self.log.debug(f"payment {event.what}", extra={"fields": fields})

    def _applied(self, event: CertApplied) -> None:
        sides = [name for bit, name in ((SIDE_DEBIT, "debit"), (SIDE_CREDIT, "credit")) if event.sides & bit]
        for side in sides:
            self.counts[f"applied_{side}"] += 1
        if self.log.isEnabledFor(logging.DEBUG):
            order = event.cert.order
            self.log.debug("payment applied", extra={"fields": {
                "payment": event.cert.id.hex(), "sides": "+".join(sides) or "none",
                "from": encode_address(order.sender), "to": encode_address(order.recipient),
                "amount": order.amount, "seq": order.seq}})

    def _maybe_summarise(self) -> None:
        now = self.now()
        if self.since is None:
            self.since = now
        if now - self.since < self.every:
            return
        if self.counts:
            summary = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            self.log.info(f"payments in the last {now - self.since:.0f} s: {summary}",
                          extra={"fields": dict(self.counts)})
        self.counts.clear()
        self.since = now
