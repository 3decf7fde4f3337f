"""The console's client for one peer's public HTTP API, and the contract it relies on.

Every answer is parsed into a small frozen record, and every field the console reads is checked
for presence and type on the way in: a peer whose API changed shape raises `ContractError`
naming the route and the field, instead of a page that silently shows nothing. The contract tests
(tests/test_console_devnet.py) run these parsers against real peers, so an API change that breaks
the console fails a test.

Errors: `PeerDown` (no answer: refused, timed out, not HTTP), `PeerRefused` (a JSON error answer,
with its stable `code`), `ContractError` (an answer of the wrong shape). All are `PeerError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from console.model import Sample
from crypto.errors import MeshpayError
from peer import genesis as genesis_file
from peer.genesis import Genesis

TIMEOUT = httpx.Timeout(3.0, connect=2.0)
# /metrics families the console reads (Traffic page, overload alerts)
METRIC_FAMILIES = ("meshpay_payments", "meshpay_payment_latency_seconds", "meshpay_queue_depth",
                   "meshpay_transport_bytes", "meshpay_http_requests")


class PeerError(MeshpayError):
    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class PeerDown(PeerError):
    """The peer did not answer (or not over HTTP)."""


class PeerRefused(PeerError):
    def __init__(self, url: str, path: str, status: int, code: str, message: str, extra: dict[str, Any]) -> None:
        super().__init__(url, f"{path} answered {status} {code}: {message}")
        self.path, self.status, self.code, self.extra = path, status, code, extra


class ContractError(PeerError):
    """The answer does not have the shape the console reads."""

    def __init__(self, url: str, path: str, what: str) -> None:
        super().__init__(url, f"{path}: {what} (the peer API changed under the console?)")
        self.path = path


class _Doc:
    """Typed access to one JSON object of an answer; every failure names the route and field."""

    def __init__(self, url: str, path: str, doc: Any, where: str = "") -> None:
        if not isinstance(doc, dict):
            raise ContractError(url, path, f"{where or 'the answer'} is not a JSON object")
        self.url, self.path, self.doc, self.where = url, path, doc, where

    def _fail(self, key: str, what: str) -> ContractError:
        return ContractError(self.url, self.path, f"`{self.where}{key}` {what}")

    def get(self, key: str, kind: type | tuple[type, ...], *, null: bool = False) -> Any:
        if key not in self.doc:
            raise self._fail(key, "is missing")
        value = self.doc[key]
        if value is None and null:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self._fail(key, f"is a boolean, expected {'/'.join(k.__name__ for k in kinds)}")
        if not isinstance(value, kinds):
            raise self._fail(key, f"is {type(value).__name__}, expected {'/'.join(k.__name__ for k in kinds)}")
        return value

    def str(self, key: str, *, null: bool = False) -> Any:
        return self.get(key, str, null=null)

    def int(self, key: str, *, null: bool = False) -> Any:
        return self.get(key, int, null=null)

    def num(self, key: str, *, null: bool = False) -> Any:
        value = self.get(key, (int, float), null=null)
        return None if value is None else float(value)

    def bool(self, key: str) -> bool:
        return self.get(key, bool)

    def obj(self, key: str, *, null: bool = False) -> _Doc | None:
        value = self.get(key, dict, null=null)
        return None if value is None else _Doc(self.url, self.path, value, f"{self.where}{key}.")

    def list(self, key: str) -> list[Any]:
        return self.get(key, list)

    def items(self, key: str) -> list[_Doc]:
        return [_Doc(self.url, self.path, item, f"{self.where}{key}[{i}].") for i, item in enumerate(self.list(key))]

    def ints(self, key: str) -> dict[str, int]:
        table = self.get(key, dict)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in table.values()):
            raise self._fail(key, "holds a value that is not an integer")
        return dict(table)


# ---- records -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Status:
    peer_id: str
    network_id: str
    network: str
    version: str
    uptime: float
    accepting: bool
    committee_member: bool
    committee_size: int
    replication: int
    quorum: int
    ring_share: float
    members: dict[str, int]
    incarnation: int
    peer_port: int
    owned_accounts: int
    queues: dict[str, int]
    counters: dict[str, int]
    epoch: Any  # the peer's epoch (None from a peer that does not report one: console/epochs.py)

    @property
    def busy(self) -> bool:
        return any(self.queues.get(q) for q in ("gateway_in_flight", "group_commit", "inbound"))


@dataclass(frozen=True)
class Member:
    peer_id: str
    state: str
    is_self: bool
    host: str | None
    port: int | None
    api: str | None
    incarnation: int
    committee: bool


@dataclass(frozen=True)
class OwnerRef:
    peer_id: str
    api: str | None
    state: str


@dataclass(frozen=True)
class AccountView:
    address: str
    peer_id: str
    balance: int
    next_seq: int
    credits: int
    history_length: int
    pending: tuple[int, str] | None
    decimals: int
    owners: list[OwnerRef]


@dataclass(frozen=True)
class HistoryEntry:
    index: int
    payment_id: str
    direction: str
    amount: int | None
    seq: int | None
    memo: str | None
    counterparty: str | None


@dataclass(frozen=True)
class History:
    entries: list[HistoryEntry]
    next_before: int | None


@dataclass(frozen=True)
class OrderDoc:
    payment_id: str
    sender: str
    recipient: str
    amount: int
    seq: int
    memo: str


@dataclass(frozen=True)
class PaymentDoc:
    payment_id: str
    status: str
    order: OrderDoc
    cert_cbor: str | None
    applied: dict[str, int] | None
    code: str | None


@dataclass(frozen=True)
class RecentItem:
    cursor: int
    payment_id: str
    event: str  # certified (at its gateway) | applied (at an owner)
    sides: int
    sender: str
    recipient: str
    amount: int
    seq: int
    at: float


@dataclass(frozen=True)
class Recent:
    peer_id: str
    cursor: int
    oldest: int
    items: list[RecentItem]


@dataclass(frozen=True)
class GatewayTrace:
    status: str
    code: str | None
    submitted_at: float
    certified_after: float | None
    settled_after: float | None
    votes: list[tuple[str, float | None]]  # (voter, seconds after submission)
    refusals: list[tuple[str, str, str]]  # (owner, code, detail)
    acks_debit: list[str]
    acks_credit: list[str]


@dataclass(frozen=True)
class Trace:
    """One payment as one peer saw it (GET /v1/explore/payments/{id})."""

    peer_id: str
    known: bool
    order: OrderDoc | None
    cert_cbor: str | None
    owns_sender: bool
    owns_recipient: bool
    applied_debit: bool
    applied_credit: bool
    gateway: GatewayTrace | None


@dataclass(frozen=True)
class RingDoc:
    committee: list[str]
    shares: list[float]
    slices: list[int]
    replication: int


@dataclass(frozen=True)
class AuditPage:
    rows: dict[str, tuple[int, int, int, str]]  # account hex -> (balance, next_seq, credits, digest)
    next_after: str | None


@dataclass(frozen=True)
class AdminInfo:
    peer_id: str
    actions: list[str]
    pid: int


# ---- parsing -------------------------------------------------------------------------------------------
def _order(d: _Doc) -> OrderDoc:
    return OrderDoc(d.str("payment_id"), d.str("from"), d.str("to"), d.int("amount"), d.int("seq"), d.str("memo"))


def _cert(d: _Doc) -> str | None:
    cert = d.obj("certificate", null=True)
    return None if cert is None else cert.str("cbor")


class PeerApi:
    """One peer's API over a shared `httpx.AsyncClient` (async: the console runs on trio)."""

    def __init__(self, http: httpx.AsyncClient, url: str, *, admin_token: str | None = None,
                 audit_headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self.audit_headers = audit_headers or {}

    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       headers: dict[str, str] | None = None, timeout: httpx.Timeout | None = None) -> httpx.Response:
        try:
            return await self.http.request(method, self.url + path, params=params, headers=headers,
                                           timeout=timeout or TIMEOUT)
        except httpx.TimeoutException as exc:
            raise PeerDown(self.url, f"no answer to {path} in time") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: a peer advertised a broken address
            raise PeerDown(self.url, f"{path}: {exc or type(exc).__name__}") from exc

    def _refusal(self, path: str, response: httpx.Response) -> PeerError:
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            if response.status_code == 404:
                return PeerRefused(self.url, path, 404, "not_found", "no such route", {})
            return ContractError(self.url, path, f"HTTP {response.status_code} without a JSON error code")
        extra = {k: v for k, v in error.items() if k not in ("code", "message")}
        return PeerRefused(self.url, path, response.status_code, error["code"], str(error.get("message", "")), extra)

    async def _json(self, path: str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                    method: str = "GET", ok: tuple[int, ...] = (200,)) -> _Doc:
        response = await self._request(method, path, params=params, headers=headers)
        if response.status_code not in ok:
            raise self._refusal(path, response)
        try:
            doc = response.json()
        except ValueError as exc:
            raise ContractError(self.url, path, "the answer is not JSON") from exc
        return _Doc(self.url, path, doc)

    # ---- node ------------------------------------------------------------------------------------------
    async def status(self) -> Status:
        d = await self._json("/v1/status")
        return Status(d.str("peer_id"), d.str("network_id"), d.str("network"), d.str("version"),
                      d.num("uptime_seconds"), d.bool("accepting"), d.bool("committee_member"),
                      d.int("committee_size"), d.int("replication"), d.int("quorum"), d.num("ring_share"),
                      d.ints("members"), d.int("incarnation"), d.int("peer_port"), d.int("owned_accounts"),
                      d.ints("queues"), d.ints("counters"), d.doc.get("epoch"))

    async def members(self) -> list[Member]:
        d = await self._json("/v1/peers")
        return [Member(m.str("peer_id"), m.str("state"), m.bool("self"), m.str("host", null=True),
                       m.int("port", null=True), m.str("api", null=True), m.int("incarnation"), m.bool("committee"))
                for m in d.items("peers")]

    async def genesis(self) -> Genesis:
        d = await self._json("/v1/genesis")
        try:
            return genesis_file.from_json(d.doc)
        except genesis_file.GenesisError as exc:
            raise ContractError(self.url, "/v1/genesis", f"not a valid genesis: {exc}") from exc

    async def metrics(self) -> Sample:
        response = await self._request("GET", "/metrics")
        if response.status_code != 200:
            raise self._refusal("/metrics", response)
        return parse_metrics(self.url, response.text)

    # ---- accounts ----------------------------------------------------------------------------------------
    async def account(self, address: str) -> AccountView:
        """One owner's view; a non-owner raises `PeerRefused` code `not_owner` (see `owners_of`)."""
        d = await self._json(f"/v1/accounts/{address}")
        pending = d.obj("pending", null=True)
        return AccountView(d.str("address"), d.str("peer_id"), d.int("balance"), d.int("next_seq"), d.int("credits"),
                           d.int("history_length"),
                           None if pending is None else (pending.int("seq"), pending.str("payment_id")),
                           d.int("decimals"), [_owner(o) for o in d.items("owners")])

    async def history(self, address: str, *, limit: int = 25, before: int | None = None) -> History:
        params = {"limit": str(limit), **({"before": str(before)} if before is not None else {})}
        d = await self._json(f"/v1/accounts/{address}/history", params=params)
        entries = [HistoryEntry(e.int("index"), e.str("payment_id"), e.str("direction"),
                                e.doc.get("amount"), e.doc.get("seq"), e.doc.get("memo"), e.doc.get("counterparty"))
                   for e in d.items("entries")]
        return History(entries, d.int("next_before", null=True))

    # ---- payments -----------------------------------------------------------------------------------------
    async def payment(self, payment_id: str) -> PaymentDoc | None:
        path = f"/v1/payments/{payment_id}"
        response = await self._request("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refusal(path, response)
        d = _Doc(self.url, path, _safe_json(self.url, path, response))
        applied = d.obj("applied", null=True) if "applied" in d.doc else None
        return PaymentDoc(d.str("payment_id"), d.str("status"), _order(d.obj("order")), _cert(d),
                          None if applied is None else {"debit": applied.int("debit"), "credit": applied.int("credit")},
                          d.doc.get("code"))

    # ---- explorer (peer/api_explore.py) -------------------------------------------------------------------
    async def recent(self, after: int, limit: int = 500) -> Recent:
        d = await self._json("/v1/explore/recent", params={"after": str(after), "limit": str(limit)})
        items = [RecentItem(i.int("cursor"), i.str("payment_id"), i.str("event"), i.int("sides"), i.str("from"),
                            i.str("to"), i.int("amount"), i.int("seq"), i.num("at")) for i in d.items("items")]
        return Recent(d.str("peer_id"), d.int("cursor"), d.int("oldest"), items)

    async def trace(self, payment_id: str) -> Trace:
        d = await self._json(f"/v1/explore/payments/{payment_id}")
        owner, applied = d.obj("owner"), d.obj("applied")
        assert owner is not None and applied is not None
        gw = d.obj("gateway", null=True)
        gateway = None
        if gw is not None:
            acks = gw.obj("acks")
            assert acks is not None
            gateway = GatewayTrace(
                gw.str("status"), gw.str("code", null=True), gw.num("submitted_at"),
                gw.num("certified_after", null=True), gw.num("settled_after", null=True),
                [(v.str("voter"), v.num("after", null=True)) for v in gw.items("votes")],
                [(r.str("owner"), r.str("code"), r.str("detail")) for r in gw.items("refusals")],
                [str(p) for p in acks.list("debit")], [str(p) for p in acks.list("credit")])
        order = d.obj("order", null=True)
        return Trace(d.str("peer_id"), d.bool("known"), None if order is None else _order(order), _cert(d),
                     owner.bool("sender"), owner.bool("recipient"), applied.bool("debit"), applied.bool("credit"),
                     gateway)

    async def debit(self, address: str, seq: int) -> str | None:
        """The payment id that used `seq` of `address` (at one of its owners); None if none did."""
        path = f"/v1/explore/debits/{address}/{seq}"
        response = await self._request("GET", path)
        if response.status_code == 200:
            return _Doc(self.url, path, _safe_json(self.url, path, response)).str("payment_id")
        error = self._refusal(path, response)
        if isinstance(error, PeerRefused) and error.code == "unknown_debit":
            return None
        raise error

    async def ring(self) -> RingDoc:
        d = await self._json("/v1/explore/ring")
        shares = [float(x) for x in d.list("shares")]
        slices = d.list("slices")
        committee = [str(x) for x in d.list("committee")]
        if len(shares) != len(committee) or not all(isinstance(s, int) and 0 <= s < len(committee) for s in slices):
            raise ContractError(self.url, "/v1/explore/ring", "shares/slices do not index the committee")
        return RingDoc(committee, shares, slices, d.int("replication"))

    # ---- audit (GET /v1/audit/accounts) --------------------------------------------------------------------
    async def audit_accounts(self, after: str | None = None, limit: int = 5000) -> AuditPage:
        params = {"limit": str(limit), **({"after": after} if after else {})}
        d = await self._json("/v1/audit/accounts", params=params, headers=self.audit_headers)
        rows = {r.str("account"): (r.int("balance"), r.int("next_seq"), r.int("credits"), r.str("credit_digest"))
                for r in d.items("accounts")}
        return AuditPage(rows, d.str("next_after", null=True))

    # ---- admin (peer/api_admin.py) ----------------------------------------------------------------------------
    def _admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}

    async def admin_info(self) -> AdminInfo:
        d = await self._json("/v1/admin", headers=self._admin_headers())
        return AdminInfo(d.str("peer_id"), [str(a) for a in d.list("actions")], d.int("pid"))

    async def admin(self, action: str) -> None:
        """POST /v1/admin/{stop|restart|pause|resume}."""
        await self._json(f"/v1/admin/{action}", method="POST", headers=self._admin_headers(), ok=(200, 202))


def _owner(d: _Doc) -> OwnerRef:
    return OwnerRef(d.str("peer_id"), d.str("api", null=True), d.str("state"))


def owners_of(error: PeerRefused) -> list[OwnerRef]:
    """The owners listed in a 421 `not_owner` answer."""
    rows = error.extra.get("owners")
    if error.code != "not_owner" or not isinstance(rows, list):
        raise ContractError(error.url, error.path, "a not_owner answer without an `owners` list")
    return [_owner(_Doc(error.url, error.path, row, f"error.owners[{i}].")) for i, row in enumerate(rows)]


def _safe_json(url: str, path: str, response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ContractError(url, path, "the answer is not JSON") from exc


def parse_metrics(url: str, text: str) -> Sample:
    """The families in `METRIC_FAMILIES` out of a Prometheus text scrape."""
    payments: dict[str, float] = {}
    latency: dict[str, dict[float, float]] = {}
    queues: dict[str, float] = {}
    traffic = {"in": 0.0, "out": 0.0}
    http: dict[str, float] = {}
    seen = set()
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ContractError(url, "/metrics", f"not Prometheus text: {exc}") from exc
    for family in families:
        seen.add(family.name)
        for s in family.samples:
            labels = s.labels
            if s.name == "meshpay_payments_total":
                payments[labels.get("outcome", "?")] = s.value
            elif s.name == "meshpay_payment_latency_seconds_bucket":
                latency.setdefault(labels.get("status", "?"), {})[float(labels["le"])] = s.value
            elif s.name == "meshpay_queue_depth":
                queues[labels.get("queue", "?")] = s.value
            elif s.name == "meshpay_transport_bytes_total" and labels.get("direction") in traffic:
                traffic[labels["direction"]] = s.value
            elif s.name == "meshpay_http_requests_total":
                code = labels.get("code", "?")
                http[code] = http.get(code, 0.0) + s.value
    missing = [f for f in METRIC_FAMILIES if f not in seen]
    if missing:
        raise ContractError(url, "/metrics", f"families {', '.join(missing)} are missing")
    return Sample(payments, latency, queues, traffic["in"], traffic["out"], http)
