"""The epoch routes of the HTTP API: the committee chain, proposals, approvals and handoff progress.

- `GET /v1/epoch`: the current epoch, its committee and ring parameters, the pending proposals with
  their approvals, this peer's handoff into the current epoch, and its epoch history.
- `GET /v1/epochs?from=N&limit=L`: the epoch certificates from epoch N on (each as canonical CBOR in
  hex plus a readable copy), paged; a wallet or a joining peer follows them from the genesis.
- `POST /v1/epoch/proposals` `{add: [peer id], remove: [peer id], note}` and `POST /v1/epoch/approvals`
  `{change_id}`: operator actions. They need `Authorization: Bearer <api.admin_token>` (403
  `admin_disabled` when the peer has no token, 401 `unauthorized` for a missing or wrong one) and
  answer 409 `epoch_refused` when the protocol refuses (docs/protocol.md section 11).

The routes read the node's epoch service (`node.epochs`) and handoff (`node.settlement.handoff`);
they never change ownership themselves. `/metrics` gains the epoch gauges (`EpochCollector`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from peer.api import Api, ApiError
from peer.epoch_chain import MAX_NOTE_BYTES, EpochCertificate, EpochError, approvals_needed
from peer.genesis import MAX_COMMITTEE
from peer.node import Node

MAX_PAGE = 16  # epoch certificates per /v1/epochs page (each is at most ~20 kB of CBOR)
MAX_HISTORY = 256  # epochs listed in GET /v1/epoch's history (the newest)
HANDOFF_STATES = ("idle", "in_progress", "complete")


def epoch_cert_json(cert: EpochCertificate) -> dict[str, Any]:
    """An epoch certificate as readable JSON, with its canonical CBOR (the only part that is evidence)."""
    change = cert.change
    return {"epoch": change.epoch, "change_id": change.id.hex(), "prev": change.prev.hex(),
            "members": [m.hex() for m in change.members], "replication": change.replication,
            "quorum": change.quorum, "vnodes": change.vnodes, "proposer": change.proposer.hex(),
            "created": change.created, "note": change.note,
            "approvals": [a.signer.hex() for a in cert.approvals], "cbor": cert.encode().hex()}


def mount(api: Api, admin_token: str) -> None:
    """Add the epoch routes to `api` and the epoch gauges to its metrics."""
    routes = EpochRoutes(api, admin_token)
    api.app.router.routes.extend(routes.routes())
    if api.metrics is not None:
        api.metrics.registry.register(EpochCollector(api.node))


def authorize(request: Request, token: bytes) -> None:
    """Raise 403 when the operator set no token, 401 unless the request carries the right one."""
    if not token:
        raise ApiError(403, "admin_disabled", "this peer's operator has not set api.admin_token; "
                       "operator actions over HTTP are off")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
        raise ApiError(401, "unauthorized", "send the admin token as `Authorization: Bearer <token>`")


def _peer_ids(doc: dict[str, Any], key: str) -> list[bytes]:
    value = doc.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_COMMITTEE:
        raise ApiError(400, "bad_peer_id", f"`{key}` must be a list of at most {MAX_COMMITTEE} peer ids")
    ids = []
    for item in value:
        raw = _hex32(item) if isinstance(item, str) else None
        if raw is None:
            raise ApiError(400, "bad_peer_id", f"`{key}` holds {str(item)[:70]!r}, not a peer id "
                           "(64 hex characters)")
        ids.append(raw)
    return ids


def _hex32(text: str) -> bytes | None:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


class EpochRoutes:
    def __init__(self, api: Api, admin_token: str) -> None:
        self.api = api
        self.node: Node = api.node
        self._token = admin_token.encode()

    def routes(self) -> list[Route]:
        wrap = self.api._wrap
        return [Route("/v1/epoch", wrap("epoch", self.epoch)),
                Route("/v1/epochs", wrap("epochs", self.epochs)),
                Route("/v1/epoch/proposals", wrap("epoch_propose", self.propose), methods=["POST"]),
                Route("/v1/epoch/approvals", wrap("epoch_approve", self.approve), methods=["POST"])]

    # ---- reads ---------------------------------------------------------------------------------------
    async def epoch(self, request: Request) -> Response:
        epochs = self.node.epochs
        chain = epochs.chain
        committee = chain.current
        head = chain.certificates[-1].change if chain.certificates else None
        history = epochs.history()
        return JSONResponse({
            "peer_id": self.node.id.hex(), "network_id": chain.network.hex(), "epoch": chain.epoch,
            "change_id": head.id.hex() if head else None, "started": head.created if head else None,
            "committee": [m.hex() for m in committee.members],
            "committee_member": self.node.id in committee,
            "ring": {"replication": committee.replication, "quorum": committee.quorum,
                     "vnodes": committee.vnodes, "faults_tolerated": committee.faults_tolerated,
                     "approvals_needed": approvals_needed(len(committee.members))},
            "proposals": self._proposals(),
            "handoff": self.node.settlement.handoff.status(),
            "history": history[-MAX_HISTORY:],
        })

    async def epochs(self, request: Request) -> Response:
        try:
            first = int(request.query_params.get("from", "1"))
            limit = int(request.query_params.get("limit", str(MAX_PAGE)))
        except ValueError as exc:
            raise ApiError(400, "bad_query", "from and limit must be integers") from exc
        if not 1 <= first <= 2**63 - 1 or not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, "bad_query", f"from must be an epoch >= 1 and limit in [1, {MAX_PAGE}]")
        chain = self.node.epochs.chain
        page = chain.certificates[first - 1:first - 1 + limit]
        more = first - 1 + limit < len(chain.certificates)
        return JSONResponse({"network_id": chain.network.hex(), "epoch": chain.epoch, "from": first,
                             "certificates": [epoch_cert_json(c) for c in page],
                             "next_from": first + limit if more else None})

    # ---- operator actions ----------------------------------------------------------------------------
    async def propose(self, request: Request) -> Response:
        authorize(request, self._token)
        doc = await self.api._json_body(request)
        add, remove = _peer_ids(doc, "add"), _peer_ids(doc, "remove")
        note = doc.get("note", "")
        if not isinstance(note, str) or len(note.encode()) > MAX_NOTE_BYTES:
            raise ApiError(400, "bad_note", f"`note` must be text of at most {MAX_NOTE_BYTES} bytes")
        if not add and not remove:
            raise ApiError(400, "empty_proposal", "name at least one peer to `add` or `remove`")
        try:
            change = self.node.epochs.propose(add, remove, note)
        except EpochError as exc:
            raise ApiError(409, "epoch_refused", str(exc)) from exc
        return JSONResponse(self._proposal(change.id), status_code=201)

    async def approve(self, request: Request) -> Response:
        authorize(request, self._token)
        doc = await self.api._json_body(request)
        change_id = doc.get("change_id")
        raw = _hex32(change_id) if isinstance(change_id, str) else None
        if raw is None:
            raise ApiError(400, "bad_change_id", "`change_id` must be a proposal's id (64 hex characters)")
        try:
            self.node.epochs.approve(raw)
        except EpochError as exc:
            raise ApiError(409, "epoch_refused", str(exc)) from exc
        return JSONResponse(self._proposal(raw))

    def _proposals(self) -> list[dict[str, Any]]:
        """The pending proposals, each named by its `change_id`."""
        return [{"change_id": row["id"], **{k: v for k, v in row.items() if k != "id"}}
                for row in self.node.epochs.proposals()]

    def _proposal(self, change_id: bytes) -> dict[str, Any]:
        """The proposal as `GET /v1/epoch` lists it (or, once certified, the epoch it started)."""
        for row in self._proposals():
            if row["change_id"] == change_id.hex():
                return {**row, "certified": False}
        for cert in reversed(self.node.epochs.chain.certificates):
            if cert.change.id == change_id:
                return {**epoch_cert_json(cert), "certified": True}
        return {"change_id": change_id.hex(), "certified": False}


class EpochCollector(Collector):
    """Epoch and handoff gauges, read from the live node at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        epoch = GaugeMetricFamily("meshpay_epoch", "The epoch this peer is in")
        epoch.add_metric([], node.epochs.chain.epoch)
        yield epoch
        committee = GaugeMetricFamily("meshpay_committee_size", "Members of the current committee")
        committee.add_metric([], len(node.epochs.chain.current.members))
        yield committee
        proposals = GaugeMetricFamily("meshpay_epoch_proposals", "Pending epoch-change proposals")
        proposals.add_metric([], len(node.epochs.proposals()))
        yield proposals
        status = node.settlement.handoff.status()
        state = GaugeMetricFamily("meshpay_handoff_state", "1 for the state this peer's handoff is in",
                                  labels=["state"])
        for name in HANDOFF_STATES:
            state.add_metric([name], 1 if status["state"] == name else 0)
        yield state
        streams = GaugeMetricFamily("meshpay_handoff_streams", "Streams of the handoff into the current "
                                    "epoch (one per old committee member)", labels=["state"])
        done = sum(1 for s in status["streams"].values() if s["done"])
        streams.add_metric(["done"], done)
        streams.add_metric(["open"], len(status["streams"]) - done)
        yield streams
        accounts = GaugeMetricFamily("meshpay_handoff_accounts", "Accounts of the handoff into the "
                                     "current epoch, by state", labels=["state"])
        for label, key in (("ready", "accounts_ready"), ("pending", "accounts_pending"),
                           ("moved_in", "accounts_moved_in")):
            accounts.add_metric([label], status[key])
        yield accounts
        frozen = GaugeMetricFamily("meshpay_frozen_accounts", "Owned accounts frozen at their next sequence "
                                   "(two or more orders may have been certified there)")
        frozen.add_metric([], status["frozen"])
        yield frozen
        received = CounterMetricFamily("meshpay_handoff_received", "What the handoff into the current "
                                       "epoch received", labels=["what"])
        received.add_metric(["bytes"], status["bytes_received"])
        received.add_metric(["certificates"], status["certs_received"])
        yield received
