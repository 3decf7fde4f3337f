"""The HTTP JSON client API of a peer (Starlette on hypercorn's trio worker).

Errors are JSON `{"error": {"code": ..., "message": ...}}` with a stable code and a fitting status:
400 malformed input, 403/404 audit refused or off, 404 unknown, 408 body too slow, 409 conflict,
413 body too large, 421 not an owner of that account (the body lists the owners), 422 refused by
the ledger, 429 too many waiting requests, 500 a bug (logged in one line), 503 overloaded or
shutting down, 504 a wait that timed out (with the payment id to check later). No request gets a
non-JSON answer. The reference is docs/api.md.
"""

from __future__ import annotations

import hmac
import logging
from collections import OrderedDict
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crypto.account_view import CHALLENGE_SIZE, AccountView
from crypto.address import ADDRESS_LENGTH, decode_address, encode_address
from crypto.errors import AddressError, DecodeError
from crypto.messages import Certificate, Order
from gossip.wire import STATE_NAMES
from peer import genesis as genesis_file
from peer.api_json import BadJson, loads
from peer.certify import CertificateError
from peer.gateway import CERTIFIED, FAILED, SETTLED, GatewayFull
from peer.metrics import CONTENT_TYPE, Metrics
from peer.node import RANK, Node
from peer.settlement import OrderRejected
from peer.wire import Refuse
from store import layout

log = logging.getLogger("meshpay.api")

VERSION = "0.1.0"
MAX_LOOKUPS = 32  # status queries asking other peers at once (each asks up to a committee)
MAX_MESSAGE = 300  # characters of an error message (bad input is quoted, never echoed in full)
_FAILURE_STATUS = {Refuse.CONFLICT.slug: 409, "timeout": 504, "shutting_down": 503}
_WAITS = ("none", CERTIFIED, SETTLED)


class ApiError(Exception):
    def __init__(self, http_status: int, code: str, message: str, **extra: Any) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…"
        super().__init__(message)
        self.http_status, self.code, self.message, self.extra = http_status, code, message, extra

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.http_status in (429, 503) else None
        return JSONResponse({"error": {"code": self.code, "message": self.message, **self.extra}},
                            status_code=self.http_status, headers=headers)


class _NoAnswer(Response):
    """For a client that hung up: there is nobody to answer."""

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


def order_json(order: Order) -> dict[str, Any]:
    return {"payment_id": order.id.hex(), "from": encode_address(order.sender),
            "to": encode_address(order.recipient), "amount": order.amount, "seq": order.seq,
            "memo": order.memo, "network": order.network.hex()}


def cert_json(cert: Certificate) -> dict[str, Any]:
    return {"cbor": cert.encode().hex(), "votes": [{"voter": v.voter.hex(), "sig": v.sig.hex()} for v in cert.votes]}


class Api:
    def __init__(self, node: Node, *, metrics: Metrics | None = None, max_body: int = 64 * 1024,
                 max_waiting: int = 128, max_wait: float = 60.0, peer_port: int = 0,
                 body_timeout: float = 10.0, audit_token: str = "", lookup_timeout: float = 1.0,
                 admin_token: str = "") -> None:
        self.node = node
        self.metrics = metrics
        self.max_body = max_body
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.peer_port = peer_port
        self.body_timeout = body_timeout
        self.audit_token = audit_token
        self.lookup_timeout = lookup_timeout
        self.lookups = 0
        self._found: OrderedDict[bytes, Certificate] = OrderedDict()  # certificates found by lookups
        self.accepting = True
        self.paused = False  # the operator paused new payments (admin API); the client service reads it too
        # Requests waiting on a payment: key -> (payment id, the scope that ends its wait early)
        self._waiters: OrderedDict[int, tuple[bytes, trio.CancelScope]] = OrderedDict()
        self._waiter_seq = 0
        self.waits_released = 0  # waits ended early to make room (their payment was stalled)
        self.started = trio.current_time()
        self._share = (self.node.chain.epoch, self._ring_share())  # recomputed when the epoch changes
        self.app = Starlette(routes=[
            Route("/", self._wrap("index", self.index)),
            Route("/v1/status", self._wrap("status", self.status)),
            Route("/v1/peers", self._wrap("peers", self.peers)),
            Route("/v1/genesis", self._wrap("genesis", self.genesis)),
            Route("/v1/accounts/{address}", self._wrap("account", self.account)),
            Route("/v1/accounts/{address}/history", self._wrap("history", self.history)),
            Route("/v1/payments", self._wrap("submit", self.submit), methods=["POST"]),
            Route("/v1/payments/{payment_id}", self._wrap("payment", self.payment)),
            Route("/v1/audit/accounts", self._wrap("audit_accounts", self.audit_accounts)),
            Route("/v1/audit/certificates", self._wrap("audit_certificates", self.audit_certificates)),
            Route("/metrics", self._wrap("metrics", self.metrics_route)),
        ])
        # No redirects to the slashed or unslashed path: every answer is this API's JSON (a 307 with
        # no body whose Location echoed the client's Host header was the one exception).
        self.app.router.redirect_slashes = False
        from peer import api_admin, api_explore  # explorer and admin routes (docs/console.md)
        api_explore.mount(self)
        api_admin.mount(self, admin_token)
        self.app.add_exception_handler(404, self._not_found)
        self.app.add_exception_handler(405, self._not_allowed)
        self.app.add_exception_handler(Exception, self._internal)
        from peer import api_epoch  # epoch routes (docs/api.md "Epochs"); imports this module
        api_epoch.mount(self, admin_token)

    # ---- plumbing ----------------------------------------------------------------------------
    def _wrap(self, name: str, handler):
        async def endpoint(request: Request) -> Response:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = exc.response()
            except ClientDisconnect:
                response = _NoAnswer()  # an ordinary event, not an error: nothing to log
            except Exception as exc:
                response = await self._internal(request, exc)
            if self.metrics is not None:
                self.metrics.http.labels(name, str(response.status_code)).inc()
            return response

        return endpoint

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return ApiError(404, "not_found", f"no route {request.url.path}").response()

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return ApiError(405, "method_not_allowed", f"{request.method} is not allowed here").response()

    async def _internal(self, request: Request, exc: Exception) -> Response:
        # One line, no traceback: a failing request must not flood the log either.
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__,
                  str(exc)[:MAX_MESSAGE])
        return ApiError(500, "internal", "the peer failed to answer this request; it is logged").response()

    def _address(self, text: str) -> bytes:
        if len(text) > 2 * ADDRESS_LENGTH:
            raise ApiError(400, "bad_address", f"an address has {ADDRESS_LENGTH} characters; this one has "
                                               f"{len(text)}")
        try:
            return decode_address(text)
        except AddressError as exc:
            raise ApiError(400, "bad_address", str(exc)) from exc

    def _payment_id(self, text: str) -> bytes:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ApiError(400, "bad_payment_id", "a payment id is 64 hex characters")
        return raw

    async def _json_body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            raise ApiError(413, "body_too_large", f"request bodies are limited to {self.max_body} bytes")
        body = bytearray()
        with trio.move_on_after(self.body_timeout) as reading:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body:
                    raise ApiError(413, "body_too_large", f"request bodies are limited to {self.max_body} bytes")
        if reading.cancelled_caught:
            raise ApiError(408, "body_timeout", f"the request body did not arrive within {self.body_timeout:g} s")
        try:
            doc = loads(bytes(body))
        except BadJson as exc:
            raise ApiError(400, "malformed_json", str(exc)) from exc
        if not isinstance(doc, dict):
            raise ApiError(400, "malformed_json", "body must be a JSON object")
        return doc

    def _api_url(self, peer_id: bytes) -> str | None:
        if peer_id == self.node.id:
            record = self.node.membership.record
        else:
            membership = self.node.membership
            member = membership.members.get(peer_id) or membership.outsiders.get(peer_id)
            record = member.record if member is not None else None
        if record is None or not record.api_port:
            return None
        host = f"[{record.host}]" if ":" in record.host else record.host  # an IPv6 address
        return f"http://{host}:{record.api_port}"

    def _owners_json(self, account: bytes) -> list[dict[str, Any]]:
        return [{"peer_id": pid.hex(), "api": self._api_url(pid),
                 "state": STATE_NAMES.get(self.node.membership.state_of(pid) or 0, "unknown")
                 if self.node.membership.state_of(pid) is not None else "unknown"}
                for pid in self.node.settlement.ring.owners(account)]

    def _current_share(self) -> float:
        if self._share[0] != self.node.chain.epoch:
            self._share = (self.node.chain.epoch, self._ring_share())
        return self._share[1]

    def _ring_share(self) -> float:
        ring = self.node.settlement.ring
        samples = [i.to_bytes(4, "big") * 8 for i in range(2048)]
        return sum(1 for s in samples if self.node.id in ring.owners(s)) / len(samples)

    # ---- node ----------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        """What this API serves: every route with its methods (docs/api.md describes each)."""
        routes = []
        for route in self.app.router.routes:
            path = getattr(route, "path", None)
            if path and path != "/":
                methods = sorted(getattr(route, "methods", None) or {"GET"})
                routes.append({"path": path, "methods": [m for m in methods if m != "HEAD"]})
        return JSONResponse({"service": "meshpay peer API", "version": VERSION,
                             "network": self.node.genesis.name, "network_id": self.node.genesis.network_id.hex(),
                             "peer_id": self.node.id.hex(), "docs": "docs/api.md in the meshpay repository",
                             "routes": routes})

    async def status(self, request: Request) -> Response:
        node = self.node
        counts = dict.fromkeys(STATE_NAMES.values(), 0)
        for m in node.membership.members.values():
            counts[STATE_NAMES[m.state]] += 1
        counts["alive"] += 1  # ourselves
        return JSONResponse({
            "peer_id": node.id.hex(),
            "network_id": node.genesis.network_id.hex(),
            "network": node.genesis.name,
            "version": VERSION,
            "uptime_seconds": round(trio.current_time() - self.started, 3),
            "accepting": self.accepting and not self.paused,
            "committee_member": node.id in node.chain.current,
            "committee_size": len(node.chain.current.members),
            "epoch": node.chain.epoch,
            "replication": node.genesis.replication,
            "quorum": node.genesis.quorum,
            "ring_share": round(self._current_share(), 4),
            "members": counts,
            "incarnation": node.membership.incarnation,
            "peer_port": self.peer_port,
            "owned_accounts": len(node.settlement.ledger.accounts),
            "queues": {"group_commit": node.writer.pending,
                       "gateway_in_flight": len(node.settlement.gateway.active),
                       "inbound": node.links.inbound.statistics().current_buffer_used,
                       "waiting_requests": self.waiting},
            "counters": {**node.settlement.counters, **{f"gateway_{k}": v for k, v in node.settlement.gateway.outcomes.items()},
                         **{f"membership_{k}": v for k, v in node.membership.counters.items()},
                         **{f"broadcast_{k}": v for k, v in node.broadcast.counters.items()},
                         **{f"sync_{k}": v for k, v in node.settlement.sync.counters.items()},
                         "group_commit_batches": node.writer.stats.batches,
                         "group_commit_groups": node.writer.stats.groups},
        })

    async def peers(self, request: Request) -> Response:
        node = self.node
        rows = [{"peer_id": node.id.hex(), "state": "alive", "self": True, "host": node.membership.record.host,
                 "port": node.membership.record.port, "api": self._api_url(node.id),
                 "incarnation": node.membership.incarnation, "committee": node.id in node.chain.current}]
        for pid, m in sorted(node.membership.members.items()):
            rows.append({"peer_id": pid.hex(), "state": STATE_NAMES[m.state], "self": False,
                         "host": m.record.host if m.record else None, "port": m.record.port if m.record else None,
                         "api": self._api_url(pid), "incarnation": m.incarnation,
                         "committee": pid in node.chain.current})
        # Outsiders (observers, joining peers) this peer currently hears from: a bounded table
        # (membership.max_outsiders), shown so operators can see who is connected.
        for pid, m in sorted(node.membership.outsiders.items()):
            rows.append({"peer_id": pid.hex(), "state": STATE_NAMES[m.state], "self": False,
                         "host": m.record.host if m.record else None, "port": m.record.port if m.record else None,
                         "api": self._api_url(pid), "incarnation": m.incarnation, "committee": False,
                         "outsider": True})
        return JSONResponse({"peers": rows})

    async def genesis(self, request: Request) -> Response:
        return JSONResponse(genesis_file.to_json(self.node.genesis))

    async def metrics_route(self, request: Request) -> Response:
        if self.metrics is None:
            raise ApiError(404, "not_found", "metrics are disabled")
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # ---- accounts --------------------------------------------------------------------------------
    def _owned(self, account: bytes) -> None:
        if not self.node.settlement.ledger.owns(account):
            raise ApiError(421, "not_owner", "this peer does not own that account; ask one of its owners",
                           owners=self._owners_json(account))

    async def account(self, request: Request) -> Response:
        account = self._address(request.path_params["address"])
        self._owned(account)
        ledger = self.node.settlement.ledger
        state = ledger.peek(account)
        lock = ledger.pending_lock(account)
        pending = lock_json = locked = None
        if lock is not None:
            locked = Order.decode(lock.order)
            pending = {"seq": locked.seq, "payment_id": locked.id.hex()}
            lock_json = {**pending, "order": lock.order.hex()}
        evidence = self.node.equivocations.current(account)
        equivocation = None
        if evidence is not None:
            equivocation = {"seq": evidence.seq, "payment_ids": [i.hex() for i in evidence.ids],
                            "orders": [o.hex() for o in evidence.orders]}
        doc: dict[str, Any] = {
            "address": encode_address(account), "peer_id": self.node.id.hex(),
            "balance": state.balance if state else 0, "next_seq": state.next_seq if state else 0,
            "credits": state.credits if state else 0, "history_length": state.history if state else 0,
            "pending": pending, "lock": lock_json, "equivocation": equivocation,
            "decimals": self.node.genesis.decimals, "owners": self._owners_json(account),
        }
        challenge, seq = self._view_query(request)
        if challenge is not None:
            doc.update(self._attest(account, doc, locked, challenge, seq))
        return JSONResponse(doc)

    @staticmethod
    def _view_query(request: Request) -> tuple[bytes | None, int | None]:
        """`?challenge=` (32 bytes, hex) asks for a signed answer; `&seq=` adds the debit at seq."""
        raw, raw_seq = request.query_params.get("challenge"), request.query_params.get("seq")
        if raw is None:
            if raw_seq is not None:
                raise ApiError(400, "bad_query", "seq is only answered with a challenge")
            return None, None
        try:
            challenge = bytes.fromhex(raw)
            seq = None if raw_seq is None else int(raw_seq)
        except ValueError as exc:
            raise ApiError(400, "bad_query", "challenge must be hex and seq an integer") from exc
        if len(challenge) != CHALLENGE_SIZE:
            raise ApiError(400, "bad_query", f"challenge must be {CHALLENGE_SIZE} bytes")
        if seq is not None and not 0 <= seq <= 2**64 - 1:
            raise ApiError(400, "bad_query", "seq must be between 0 and 2^64-1")
        return challenge, seq

    def _attest(self, account: bytes, doc: dict[str, Any], locked: Order | None, challenge: bytes,
                seq: int | None) -> dict[str, Any]:
        """This owner's signature over what it answered (crypto/account_view.py); `locked` is the
        order of its lock at next_seq, if any."""
        ledger = self.node.settlement.ledger
        debit = ledger.debit_at(account, seq) if seq is not None and seq < doc["next_seq"] else None
        pending = None if locked is None else (locked.seq, locked.id)
        view = AccountView(self.node.id, account, doc["balance"], doc["next_seq"], doc["credits"],
                           doc["history_length"], pending, seq, debit, challenge)
        signature = view.sign(self.node.settlement.key, self.node.genesis.network_id)
        return {"applied_at": None if seq is None else {"seq": seq, "payment_id": None if debit is None else debit.hex()},
                "attestation": {"challenge": challenge.hex(), "signature": signature.hex()}}

    async def history(self, request: Request) -> Response:
        account = self._address(request.path_params["address"])
        self._owned(account)
        try:
            limit = int(request.query_params.get("limit", "50"))
            before = request.query_params.get("before")
            before_index = int(before) if before is not None else None
        except ValueError as exc:
            raise ApiError(400, "bad_query", "limit and before must be integers") from exc
        if not 1 <= limit <= 500:
            raise ApiError(400, "bad_query", "limit must be between 1 and 500")
        if before_index is not None and not 0 <= before_index <= 2**64 - 1:
            raise ApiError(400, "bad_query", "before must be a history index (0 to 2^64-1)")
        store = self.node.store
        entries = []
        rows = store.history(account, before=before_index, limit=limit)
        for index, entry in rows:
            raw = store.get_cert(entry.order_id)
            row: dict[str, Any] = {"index": index, "payment_id": entry.order_id.hex(),
                                   "direction": "out" if entry.direction == layout.DIRECTION_DEBIT else "in"}
            if raw is not None:
                order = Certificate.decode(raw).order
                row.update(amount=order.amount, seq=order.seq, memo=order.memo,
                           counterparty=encode_address(order.recipient if row["direction"] == "out" else order.sender))
            entries.append(row)
        next_before = rows[-1][0] if len(rows) == limit and rows[-1][0] > 0 else None
        return JSONResponse({"address": encode_address(account), "entries": entries, "next_before": next_before})

    # ---- audit (devnet check) ---------------------------------------------------------------------
    def _audit_allowed(self, request: Request) -> None:
        """The audit lists every owned account: only for holders of `api.audit_token`."""
        if not self.audit_token:
            raise ApiError(404, "audit_disabled", "the audit endpoints are off on this peer "
                                                  "(api.audit_token enables them)")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.audit_token.encode()):
            raise ApiError(403, "forbidden", "the audit endpoints need `Authorization: Bearer <api.audit_token>`")

    def _page(self, request: Request) -> tuple[bytes | None, int]:
        try:
            after = request.query_params.get("after")
            start = bytes.fromhex(after) if after else None
            limit = int(request.query_params.get("limit", "1000"))
        except ValueError as exc:
            raise ApiError(400, "bad_query", "after must be hex and limit an integer") from exc
        if not 1 <= limit <= 5000 or (start is not None and len(start) != 32):
            raise ApiError(400, "bad_query", "limit must be in [1, 5000] and after a 32-byte hex key")
        return start, limit

    async def audit_accounts(self, request: Request) -> Response:
        """Every account this peer holds as an owner, in key order, paged by `after`."""
        self._audit_allowed(request)
        start, limit = self._page(request)
        accounts = self.node.settlement.ledger.accounts
        keys = sorted(a for a in accounts if start is None or a > start)[:limit]
        rows = [{"account": a.hex(), "balance": accounts[a].balance, "next_seq": accounts[a].next_seq,
                 "credits": accounts[a].credits, "credit_digest": accounts[a].credit_digest.hex(),
                 **self._lock_row(a)} for a in keys]
        return JSONResponse({"peer_id": self.node.id.hex(), "accounts": rows,
                             "next_after": keys[-1].hex() if len(keys) == limit else None})

    def _lock_row(self, account: bytes) -> dict[str, Any]:
        """The lock at the account's next seq (payment id) and whether this owner saw equivocation."""
        lock = self.node.settlement.ledger.pending_lock(account)
        return {"lock": Order.decode(lock.order).id.hex() if lock is not None else None,
                "equivocation": self.node.equivocations.current(account) is not None}

    async def audit_certificates(self, request: Request) -> Response:
        """Every certificate this peer stores, with the sides it applied, paged by `after`."""
        self._audit_allowed(request)
        start, limit = self._page(request)
        store = self.node.store
        ledger = self.node.settlement.ledger
        rows = []
        first = layout.cert_key(start) + b"\x00" if start is not None else None
        last = None
        for key, raw in store.scan(layout.CERT, start=first, limit=limit):
            oid = key[1:]
            order = Certificate.decode(raw).order
            rows.append({"payment_id": oid.hex(), "from": order.sender.hex(), "to": order.recipient.hex(),
                         "seq": order.seq, "amount": order.amount, "applied": ledger.applied(oid)})
            last = oid
        return JSONResponse({"peer_id": self.node.id.hex(), "certificates": rows,
                             "next_after": last.hex() if last is not None and len(rows) == limit else None})

    # ---- payments ----------------------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        doc = await self._json_body(request)
        if not self.accepting:
            raise ApiError(503, "shutting_down", "this peer is shutting down; use another peer")
        if self.paused:
            raise ApiError(503, "paused", "this peer's operator paused new payments; use another peer")
        order_hex = doc.get("order")
        wait = doc.get("wait", "none")
        timeout = doc.get("timeout", 10.0)
        if not isinstance(order_hex, str):
            raise ApiError(400, "malformed_order", "`order` must be the signed order's canonical CBOR, in hex")
        if wait not in _WAITS:
            raise ApiError(400, "bad_wait", f"`wait` must be one of {', '.join(_WAITS)}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= self.max_wait:
            raise ApiError(400, "bad_timeout", f"`timeout` must be a number of seconds in (0, {self.max_wait}]")
        try:
            order = Order.decode(bytes.fromhex(order_hex))
        except ValueError as exc:
            raise ApiError(400, "malformed_order", f"order is not valid: {exc}") from exc
        except DecodeError as exc:
            raise ApiError(400, "malformed_order", f"order is not valid: {exc}") from exc
        if wait != "none" and self.waiting >= self.max_waiting and not self._release_stalled_wait():
            raise ApiError(429, "too_many_waiting", f"{self.waiting} requests are already waiting; retry shortly")
        try:
            payment = self.node.submit(order)
        except OrderRejected as exc:
            raise ApiError(422, exc.code.slug, exc.detail, payment_id=order.id.hex()) from exc
        except GatewayFull as exc:
            raise ApiError(503, "overloaded", str(exc), payment_id=order.id.hex()) from exc
        event = payment.event()
        if wait != "none" and RANK[event.status] < RANK[wait]:
            self._waiter_seq += 1
            key, scope = self._waiter_seq, trio.CancelScope()
            self._waiters[key] = (order.id, scope)
            reached = None
            try:
                with scope:
                    reached = await self.node.wait(order.id, wait, float(timeout))
            finally:
                self._waiters.pop(key, None)
            if scope.cancelled_caught:
                # Released to make room: answer with where the payment is now (it goes on).
                reached = self.node.current(order.id) or event
            if reached is None:
                raise ApiError(504, "timeout", f"payment not {wait} within {timeout:g} s; check it later",
                               payment_id=order.id.hex(), status=self.node.current(order.id).status
                               if self.node.current(order.id) else "pending")
            event = reached
        if event.status == FAILED:
            # conflict: another order holds the seq; timeout: no quorum in time (it may still
            # complete if resubmitted); shutting_down: the gateway stopped, use another peer.
            status = _FAILURE_STATUS.get(event.code or "", 422)
            extra: dict[str, Any] = {"payment_id": order.id.hex(), "status": event.status}
            if event.evidence:
                extra["evidence"] = event.evidence.hex()
            raise ApiError(status, event.code or "failed", event.detail or "payment failed", **extra)
        body = self._payment_json(order, event.status, event.cert, None)
        return JSONResponse(body, status_code=202 if event.status == "pending" else 200)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _release_stalled_wait(self) -> bool:
        """All wait slots are taken: end the oldest wait on a payment the owners keep turning away
        for now (a sequence number ahead of the account, a handoff...), answering it with its status
        so far. Orders that can never complete (a fresh key signing far ahead) cost nothing to make,
        and used to hold every slot until their deadline, so honest waits got 429. False when every
        waiting payment is making progress: then the newcomer gets 429 as before."""
        gateway = self.node.settlement.gateway
        for key, (oid, scope) in self._waiters.items():
            p = gateway.lookup(oid)
            if p is not None and p.status == "pending" and (p.retry or p.refused):
                scope.cancel()
                del self._waiters[key]
                self.waits_released += 1
                return True
        return False

    async def payment(self, request: Request) -> Response:
        oid = self._payment_id(request.path_params["payment_id"])
        sender = request.query_params.get("from")
        sender_key = self._address(sender) if sender is not None else None
        current = self.node.current(oid)
        status, cert, tracked = self.node.settlement.payment(oid)
        if cert is None and tracked is None and oid in self._found:
            status, cert = CERTIFIED, self._found[oid]  # found by an earlier lookup
        order = cert.order if cert is not None else (tracked.order if tracked is not None else None)
        if current is not None:
            status = current.status
            cert = current.cert or cert
        applied = None
        if order is None:
            # No record here (a gateway that owns neither side forgets on restart): ask the peers
            # that may hold it, so an answer never goes from `settled` back to `unknown`.
            cert = await self._look_up(oid, sender_key)
            order = cert.order
            status = CERTIFIED
        elif tracked is not None and tracked.status in (CERTIFIED, SETTLED):
            applied = {"debit": len(tracked.debit_acks), "credit": len(tracked.credit_acks)}
        if status == CERTIFIED and cert is not None and applied is None:
            applied = await self._applied(order)
        if status == CERTIFIED and applied is not None and min(applied.values()) >= self.node.genesis.quorum:
            status = SETTLED
        body = self._payment_json(order, status, cert, current)
        if applied is not None:
            body["applied"] = applied
        return JSONResponse(body)

    async def _applied(self, order: Order) -> dict[str, int]:
        """How many owners of each side say they applied the payment (asked now)."""
        ring = self.node.settlement.ring
        owners = tuple(set(ring.owners(order.sender)) | set(ring.owners(order.recipient)))
        answers = await self.node.applied_by(order.id, owners, timeout=0.5)
        return {"debit": sum(1 for p, s in answers.items() if s & layout.APPLIED_DEBIT and p in ring.owners(order.sender)),
                "credit": sum(1 for p, s in answers.items()
                              if s & layout.APPLIED_CREDIT and p in ring.owners(order.recipient))}

    async def _look_up(self, oid: bytes, sender: bytes | None) -> Certificate:
        """The certificate of a payment this peer has no record of, from the peers that may hold
        it; ApiError 404 if every peer asked says it knows nothing, 504 if some did not answer (or
        too many are down), 503 if too many lookups run already."""
        node = self.node
        # The sender's owners hold the debit's certificate; without the sender, any committee member
        # may own it. Only live ones are asked: a settled payment was applied by W of the sender's
        # owners, so while fewer than W of the candidates are down, one that is up holds it.
        candidates = node.settlement.ring.owners(sender) if sender is not None else node.genesis.committee
        alive = set(node.membership.alive()) | {node.id}
        peers = tuple(p for p in candidates if p in alive and p != node.id)
        down = [p.hex() for p in candidates if p not in alive]
        if self.lookups >= MAX_LOOKUPS:
            raise ApiError(503, "overloaded", "too many payment lookups are running; retry shortly")
        self.lookups += 1
        try:
            reports = await node.find_payment(oid, peers, self.lookup_timeout)
        finally:
            self.lookups -= 1
        for report in reports.values():
            if not report.cert:
                continue
            try:
                cert = Certificate.decode(report.cert)
                if cert.order.id != oid:
                    continue
                node.settlement.checker.check(cert)
            except (DecodeError, CertificateError):
                continue  # a peer served garbage: the other answers decide
            self._found[oid] = cert
            while len(self._found) > 10_000:
                self._found.popitem(last=False)
            return cert
        named: dict[str, Any] = {"asked": [p.hex() for p in sorted(peers)]}
        if sender is not None:
            named["owners"] = self._owners_json(sender)
        silent = [p.hex() for p in sorted(set(peers) - set(reports))]
        if silent or len(down) >= node.genesis.quorum:
            raise ApiError(504, "lookup_timeout", "this peer has no record of that payment and not enough of "
                                                  "the peers that may hold it answered; ask again later",
                           unanswered=silent, down=down, **named)
        raise ApiError(404, "unknown_payment", "neither this peer nor the peers it asked know that payment",
                       **named)

    def _payment_json(self, order: Order, status: str, cert: Certificate | None, event: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"payment_id": order.id.hex(), "status": status, "order": order_json(order)}
        body["certificate"] = cert_json(cert) if cert is not None else None
        if event is not None and event.status == FAILED:
            body["code"], body["detail"] = event.code, event.detail
        return body
