"""Read-only HTTP views for explorers and the web console, mounted next to the client API.

What one peer can say about the network from where it stands, in the API's JSON conventions:

- `GET /v1/explore/recent?after=C&limit=L`: certificates this peer certified (as a gateway) or
  applied (as an owner), oldest first, each with a cursor; pass the last cursor as `after` to get
  only newer ones. The peer keeps the latest `KEEP_RECENT`; `oldest` says where its memory starts, so
  a reader can tell that it missed some.
- `GET /v1/explore/payments/{id}`: one payment as this peer saw it: the certificate it stores,
  whether it owns either side and has applied it, and, where it was the gateway, the votes with the
  time each arrived, refusals and the owners that confirmed applying it.
- `GET /v1/explore/debits/{address}/{seq}`: the payment that used `seq` of an account (its owners
  only; others answer 421 with the owners, as the account routes do).
- `GET /v1/explore/ring`: the ring this peer uses: each committee peer's exact share of accounts and
  the first owner along the ring in `RING_SLICES` equal slices (for drawing).

Times are wall-clock seconds (Unix time) so that readers can put peers side by side; peers'
clocks are only as close as their hosts keep them.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crypto.address import encode_address
from crypto.messages import Certificate, Order
from peer.api import Api, ApiError, cert_json, order_json
from peer.gateway import CERTIFIED, PaymentEvent
from peer.ring import Ring
from peer.settlement import CertApplied
from peer.wire import SIDE_CREDIT, SIDE_DEBIT

KEEP_RECENT = 2000
MAX_PAGE = 1000
RING_SLICES = 1024


def ring_layout(ring: Ring, slices: int = RING_SLICES) -> dict[str, Any]:
    """Exact share of the account space each peer owns (any replica) and the first owner per slice.

    An account hashing to h is owned from the first point above h (see `Ring.owners`), so the arc
    from one point up to the next belongs to the owner walk that starts at the next point.
    """
    points = ring.points()
    space = 1 << 64
    index = {pid: i for i, pid in enumerate(ring.committee)}
    peers = [pid for _, pid in points]
    hashes = [h for h, _ in points]
    owned = [0] * len(ring.committee)
    n = len(points)
    for i in range(n):
        length = hashes[i] - (hashes[i - 1] if i else hashes[-1] - space)
        found: list[bytes] = []
        for step in range(n):
            pid = peers[(i + step) % n]
            if pid not in found:
                found.append(pid)
                if len(found) == ring.replication:
                    break
        for pid in found:
            owned[index[pid]] += length
    first = [index[peers[bisect.bisect(hashes, (2 * k + 1) * space // (2 * slices)) % n]] for k in range(slices)]
    return {"replication": ring.replication, "vnodes": ring.vnodes,
            "committee": [pid.hex() for pid in ring.committee],
            "shares": [round(o / space, 6) for o in owned], "slices": first}


def mount(api: Api) -> Explorer:
    """Add the explorer's routes to `api` and feed it the runtime's notifications."""
    explorer = Explorer(api)
    api.app.router.routes.extend(explorer.routes())
    api.node.runtime.subscribe(explorer.on_event)
    return explorer


class Explorer:
    """Remembers recent certificates from the runtime's notifications and serves the routes above."""

    def __init__(self, api: Api, keep: int = KEEP_RECENT) -> None:
        self.api = api
        self.node = api.node
        # (cursor, order, event, sides, wall time): rendered only when asked, so the per-payment cost
        # at a busy peer is one tuple
        self._recent: deque[tuple[int, Order, str, int, float]] = deque(maxlen=keep)
        self._cursor = 0
        self._ring: tuple[Ring, dict[str, Any]] | None = None

    def on_event(self, event: object) -> None:
        kind = type(event)
        if kind is PaymentEvent and event.status == CERTIFIED and event.cert is not None:
            self._remember(event.cert, "certified", 0)
        elif kind is CertApplied:
            self._remember(event.cert, "applied", event.sides)

    def _remember(self, cert: Certificate, what: str, sides: int) -> None:
        self._cursor += 1
        self._recent.append((self._cursor, cert.order, what, sides, time.time()))

    @staticmethod
    def _item(cursor: int, order: Order, what: str, sides: int, at: float) -> dict[str, Any]:
        return {"cursor": cursor, "payment_id": order.id.hex(), "event": what, "sides": sides,
                "from": encode_address(order.sender), "to": encode_address(order.recipient),
                "amount": order.amount, "seq": order.seq, "at": round(at, 3)}

    def routes(self) -> list[Route]:
        wrap = self.api._wrap
        return [
            Route("/v1/explore/recent", wrap("explore_recent", self.recent)),
            Route("/v1/explore/payments/{payment_id}", wrap("explore_payment", self.payment)),
            Route("/v1/explore/debits/{address}/{seq}", wrap("explore_debit", self.debit)),
            Route("/v1/explore/ring", wrap("explore_ring", self.ring)),
        ]

    # ---- routes ----------------------------------------------------------------------------------
    async def recent(self, request: Request) -> Response:
        try:
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", "200"))
        except ValueError as exc:
            raise ApiError(400, "bad_query", "after and limit must be integers") from exc
        if not 1 <= limit <= MAX_PAGE or after < 0:
            raise ApiError(400, "bad_query", f"limit must be in [1, {MAX_PAGE}] and after >= 0")
        items = [self._item(*entry) for entry in self._newer(after, limit)]
        oldest = self._recent[0][0] if self._recent else self._cursor + 1
        return JSONResponse({"peer_id": self.node.id.hex(), "cursor": items[-1]["cursor"] if items else max(after, 0),
                             "latest": self._cursor, "oldest": oldest, "items": items})

    def _newer(self, after: int, limit: int) -> list[tuple[int, Order, str, int, float]]:
        """Entries with a cursor above `after`, oldest first (cursors are consecutive: index, not scan)."""
        if not self._recent:
            return []
        start = max(0, after + 1 - self._recent[0][0])
        return [self._recent[i] for i in range(start, min(len(self._recent), start + limit))]

    async def payment(self, request: Request) -> Response:
        oid = self.api._payment_id(request.path_params["payment_id"])
        settlement = self.node.settlement
        _, cert, tracked = settlement.payment(oid)
        order = cert.order if cert is not None else (tracked.order if tracked is not None else None)
        applied = settlement.ledger.applied(oid)
        body: dict[str, Any] = {
            "peer_id": self.node.id.hex(), "payment_id": oid.hex(), "known": order is not None,
            "order": order_json(order) if order is not None else None,
            "certificate": cert_json(cert) if cert is not None else None,
            "owner": {"sender": order is not None and settlement.ledger.owns(order.sender),
                      "recipient": order is not None and settlement.ledger.owns(order.recipient)},
            "applied": {"debit": bool(applied & SIDE_DEBIT), "credit": bool(applied & SIDE_CREDIT)},
            "gateway": None,
        }
        if tracked is not None:
            offset = time.time() - trio.current_time()  # trio's clock to wall-clock seconds

            def after(t: float | None) -> float | None:
                return None if t is None else round(t - tracked.created, 4)

            body["gateway"] = {
                "status": tracked.status, "code": tracked.code, "detail": tracked.detail or None,
                "submitted_at": round(tracked.created + offset, 3),
                "certified_after": after(tracked.certified_at), "settled_after": after(tracked.settled_at),
                "votes": [{"voter": voter.hex(), "after": after(tracked.vote_at.get(voter))}
                          for voter in sorted(tracked.votes, key=lambda v: tracked.vote_at.get(v, 0.0))],
                "refusals": [{"owner": owner.hex(), "code": code.slug, "detail": detail}
                             for owner, (code, detail, _) in tracked.refused.items()],
                "acks": {"debit": sorted(p.hex() for p in tracked.debit_acks),
                         "credit": sorted(p.hex() for p in tracked.credit_acks)},
            }
        return JSONResponse(body)

    async def debit(self, request: Request) -> Response:
        account = self.api._address(request.path_params["address"])
        try:
            seq = int(request.path_params["seq"])
        except ValueError as exc:
            raise ApiError(400, "bad_query", "seq must be an integer") from exc
        if not 0 <= seq < 2**63:
            raise ApiError(400, "bad_query", "seq must be in [0, 2^63)")
        self.api._owned(account)
        oid = self.node.store.get_debit(account, seq)
        if oid is None:
            raise ApiError(404, "unknown_debit", f"no payment of this account has used seq {seq} here")
        return JSONResponse({"address": encode_address(account), "seq": seq, "payment_id": oid.hex()})

    async def ring(self, request: Request) -> Response:
        ring = self.node.settlement.ring
        if self._ring is None or self._ring[0] is not ring:
            self._ring = (ring, ring_layout(ring))
        return JSONResponse({"peer_id": self.node.id.hex(), **self._ring[1]})
