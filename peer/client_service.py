"""Serving the binary client protocol (see peer/client_wire.py) for one peer."""

from __future__ import annotations

from collections.abc import Callable

import trio

from crypto.errors import DecodeError
from crypto.schema import decode_any
from gossip.client import ClientSession
from peer.client_wire import (
    STATUS_CODES,
    WAIT_CERTIFIED,
    WAIT_NONE,
    WAIT_SETTLED,
    PaymentStatus,
    Submit,
)
from peer.gateway import GatewayFull, PaymentEvent
from peer.node import RANK, Node
from peer.settlement import OrderRejected

_WAIT_STATUS = {WAIT_CERTIFIED: "certified", WAIT_SETTLED: "settled"}
# Payments one session may wait on at once (its reply queue holds 1,024 replies). One watch per
# payment per session: a resubmit of a payment already watched takes over that watch.
MAX_WATCHES = 1024


class ClientService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.accepting = True
        self.paused: Callable[[], bool] = lambda: False  # the admin API's pause (the daemon wires it)
        self.sessions = 0

    async def handle(self, session: ClientSession) -> None:
        self.sessions += 1
        watches: dict[bytes, Callable[[PaymentEvent], bool]] = {}
        try:
            while True:
                try:
                    payload = await session.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
                    return
                try:
                    msg = decode_any(payload)
                except DecodeError as exc:
                    session.note("client protocol error", "client %s:%d sent a malformed message: %s",
                                 *session.peer, exc)
                    return
                if type(msg) is not Submit:
                    session.note("client protocol error", "client %s:%d sent an unexpected message: %s",
                                 *session.peer, type(msg).__name__)
                    return
                self._submit(session, msg, watches)
        finally:
            self.sessions -= 1
            for order_id, callback in watches.items():
                self.node.unwatch(order_id, callback)

    def _submit(self, session: ClientSession, msg: Submit,
                watches: dict[bytes, Callable[[PaymentEvent], bool]]) -> None:
        order = msg.order
        oid = order.id
        if not self.accepting:
            session.send(PaymentStatus(msg.req, oid, STATUS_CODES["rejected"], "shutting_down",
                                       "this peer is shutting down", b"").encode())
            return
        if self.paused():
            session.send(PaymentStatus(msg.req, oid, STATUS_CODES["rejected"], "paused",
                                       "this peer's operator paused new payments", b"").encode())
            return
        if msg.wait != WAIT_NONE and oid not in watches and len(watches) >= MAX_WATCHES:
            # Refused before anything starts; the client may submit it again once some waits end.
            session.send(PaymentStatus(msg.req, oid, STATUS_CODES["rejected"], "too_many_waiting",
                                       f"this session already waits on {MAX_WATCHES} payments", b"").encode())
            return
        try:
            payment = self.node.submit(order)
        except OrderRejected as exc:
            session.send(PaymentStatus(msg.req, oid, STATUS_CODES["rejected"], exc.code.slug, exc.detail[:200],
                                       b"").encode())
            return
        except GatewayFull as exc:
            session.send(PaymentStatus(msg.req, oid, STATUS_CODES["rejected"], "overloaded", str(exc)[:200],
                                       b"").encode())
            return
        event = payment.event()
        self._send_status(session, msg.req, event)
        if msg.wait == WAIT_NONE:
            return
        target = _WAIT_STATUS[msg.wait]
        if RANK[event.status] >= RANK[target]:
            return
        previous = watches.pop(oid, None)
        if previous is not None:
            self.node.unwatch(oid, previous)
        req = msg.req

        def on_event(ev: PaymentEvent) -> bool:
            self._send_status(session, req, ev)
            done = RANK[ev.status] >= RANK[target]
            if done and watches.get(oid) is on_event:
                del watches[oid]
            return done

        self.node.watch(oid, on_event)
        watches[oid] = on_event

    @staticmethod
    def _send_status(session: ClientSession, req: int, event: PaymentEvent) -> None:
        cert = event.cert.encode() if event.cert is not None and event.status == "certified" else b""
        session.send(PaymentStatus(req, event.order_id, STATUS_CODES[event.status], event.code or "",
                                   event.detail[:200], cert).encode())
