"""The console's web app (Starlette on hypercorn's trio worker): pages, live streams, actions.

Pages are server-rendered (Jinja2) with their first data embedded; a small script per page renders
that data and then each update from `/events/{topic}` (server-sent events: the latest picture, at
most about once a second). `/api/{topic}` answers the same JSON once, for scripts and tests.

Actions (`POST /api/control/...`) take JSON and need the header `X-Console: 1`, which a page of
another origin cannot send without the console's consent (it gives none), so a web page elsewhere
cannot make the browser stop a peer. `--read-only` turns every action off.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from console import epochs, lookup, views
from console.certs import Checker
from console.collector import Collector, each
from console.control import (
    ADMIN_ACTIONS,
    DEVNET_ACTIONS_BY_STATE,
    ActionResult,
    DevnetControl,
    LoadRun,
    admin_action,
)
from crypto.address import decode_address
from crypto.errors import AddressError
from wallet.amounts import format_amount

HERE = Path(__file__).parent
TOPICS = ("network", "traffic", "feed", "alerts", "accounts", "account", "payment", "controls")
# topics whose payload asks peers (not only the collector's picture): refreshed at most this often
_SLOW = {"accounts": 2.0, "account": 2.0, "payment": 1.5, "traffic": 2.0}
MAX_FORM = 128 * 1024


def to_json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, (set, frozenset, deque)):
            return list(obj)
        raise TypeError(f"cannot encode {type(obj).__name__}")

    return json.dumps(value, default=default, allow_nan=False, separators=(",", ":"))


def html_json(value: Any) -> str:
    """JSON that is safe inside a <script> element (no `</script>`, no HTML entities)."""
    return to_json(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Console:
    """The state behind the pages: the collector, the controls, the log of actions taken."""

    def __init__(self, collector: Collector, *, control: DevnetControl | None = None, read_only: bool = False,
                 title: str = "meshpay console") -> None:
        self.collector = collector
        self.control = control
        self.load = LoadRun(control) if control is not None else None
        self.read_only = read_only
        self.title = title
        self.actions: deque[dict[str, Any]] = deque(maxlen=30)
        self.nursery: trio.Nursery | None = None  # for background work an action starts (a load run)
        self._checker: Checker | None = None
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters["amount"] = format_amount

    @property
    def checker(self) -> Checker | None:
        genesis = self.collector.genesis
        if genesis is None:
            return None
        if self._checker is None or self._checker.genesis is not genesis:
            chain = self.collector.chain
            self._checker = Checker(genesis, chain.committee if chain is not None else None)
        return self._checker

    # ---- payloads ------------------------------------------------------------------------------------
    async def payload(self, topic: str, params: dict[str, str]) -> dict[str, Any]:
        c = self.collector
        if topic == "network":
            body = views.network(c)
        elif topic == "traffic":
            body = views.traffic(c, params.get("peer") or None)
        elif topic == "feed":
            body = views.feed(c, _int(params.get("page"), 0), params.get("q", ""))
        elif topic == "alerts":
            body = views.alerts_payload(c)
        elif topic == "accounts":
            body = await self.accounts(_int(params.get("page"), 0), params.get("q", ""))
        elif topic == "account":
            body = await self.account(params.get("address", ""), params.get("before"))
        elif topic == "payment":
            body = await self.payment(params.get("id", ""))
        elif topic == "controls":
            body = self.controls()
        else:
            raise KeyError(topic)
        alerts = views.alerts(c)
        body["_nav"] = {"alerts": sum(1 for a in alerts if a.severity != "info"),
                        "critical": sum(1 for a in alerts if a.severity == "critical"),
                        "network": c.genesis.name if c.genesis else None, "at": time.time()}
        return body

    async def accounts(self, page: int, query: str) -> dict[str, Any]:
        c = self.collector
        names = views.wallet_names(c)
        known = views.known_accounts(c)
        q = query.strip().lower()
        if q:
            known = [a for a in known if q in a.lower() or q in names.get(a, "").lower()]
        start = max(0, page) * views.PAGE_SIZE
        chosen = known[start:start + views.PAGE_SIZE]
        rows: dict[str, dict[str, Any]] = {}

        async def read(address: str) -> None:
            summary = await lookup.account(c, address, limit=1)
            agreed = summary.agreed
            rows[address] = {"address": address, "name": names.get(address), "agree": summary.agree,
                             "frozen_seq": summary.frozen_seq, "balance": agreed.balance if agreed else None,
                             "next_seq": agreed.next_seq if agreed else None,
                             "answered": sum(1 for o in summary.owners if o[2] is not None),
                             "owners": len(summary.owners)}

        await each(chosen, read)
        return {"rows": [rows[a] for a in chosen], "total": len(known), "page": page, "page_size": views.PAGE_SIZE,
                "decimals": c.genesis.decimals if c.genesis else 0}

    async def account(self, address: str, before: str | None) -> dict[str, Any]:
        c = self.collector
        try:
            decode_address(address)
        except AddressError as exc:
            return {"address": address, "error": str(exc)}
        page = await lookup.account(c, address, before=_int(before, None))
        agreed = page.agreed
        key = (agreed.balance, agreed.next_seq, agreed.credits) if agreed else None
        owners = [{"peer_id": pid, "name": name, "error": error or None,
                   "differs": view is not None and (view.balance, view.next_seq, view.credits) != key,
                   **({"balance": view.balance, "next_seq": view.next_seq, "credits": view.credits,
                       "history_length": view.history_length,
                       "pending": list(view.pending) if view.pending else None} if view else {})}
                  for pid, name, view, error in page.owners]
        history = None
        if page.history is not None:
            history = {"entries": [dataclasses.asdict(e) for e in page.history.entries],
                       "next_before": page.history.next_before, "from": page.history_from}
        return {"address": address, "name": views.wallet_names(c).get(address), "owners": owners, "agree": page.agree,
                "frozen_seq": page.frozen_seq, "balance": agreed.balance if agreed else None,
                "next_seq": agreed.next_seq if agreed else None, "history": history, "before": _int(before, None),
                "decimals": c.genesis.decimals if c.genesis else 0, "problems": page.problems,
                "quorum": c.genesis.quorum if c.genesis else None}

    async def payment(self, payment_id: str) -> dict[str, Any]:
        view = await lookup.payment(self.collector, self.checker, payment_id)
        body = dataclasses.asdict(view)
        body["verdict"] = dataclasses.asdict(view.verdict) if view.verdict else None
        g = self.collector.genesis
        body["quorum"] = g.quorum if g else None
        body["decimals"] = g.decimals if g else 0
        body["names"] = views.wallet_names(self.collector)
        return body

    def controls(self) -> dict[str, Any]:
        c = self.collector
        peers = []
        for s in sorted(c.peers.values(), key=lambda s: s.ref.name):
            if s.ref.process is not None and self.control is not None:
                actions, how = list(DEVNET_ACTIONS_BY_STATE[s.ref.process]), "devnet"
            elif s.admin == "enabled":
                actions, how = list(ADMIN_ACTIONS), "admin API"
            else:
                actions, how = [], ("admin API off: no --admin-token given" if s.admin in (None, "off")
                                    else f"admin API {s.admin}")
            peers.append({"url": s.url, "name": s.ref.name, "process": s.ref.process, "up": s.up,
                          "how": how, "actions": [] if self.read_only else actions})
        wallets = []
        if self.control is not None:
            wallets = [{"name": w.name, "address": w.address} for w in self.control.devnet().wallets]
        now = time.time()
        settled = [views.model.peer_rates(list(s.samples), now, 10.0) for s in c.peers.values()]
        return {"mode": c.source.kind, "read_only": self.read_only, "peers": peers, "wallets": wallets,
                "load": self.load.as_dict() if self.load else None,
                "rate_now": sum(r.payments.get("settled", 0.0) for r in settled if r is not None),
                "epochs": epochs.network_epoch(s.status for s in c.reachable() if s.status),
                "committee": [s.ref.name for s in c.reachable()
                              if s.status is not None and s.status.committee_member],
                "committee_controls": self.control is not None and not self.read_only,
                "log": list(self.actions)[::-1], "decimals": c.genesis.decimals if c.genesis else 0}

    # ---- actions ---------------------------------------------------------------------------------------
    def _record(self, what: str, result: ActionResult) -> ActionResult:
        self.actions.append({"at": time.time(), "action": what, "ok": result.ok, "message": result.message,
                             "command": result.command})
        self.collector.changes.bump()
        return result

    async def peer_action(self, url: str, action: str) -> ActionResult:
        state = self.collector.peers.get(url)
        if state is None:
            return ActionResult(False, f"no peer at {url}")
        name = state.ref.name
        if state.ref.process is not None and self.control is not None:
            result = await self.control.peer_action(name, action)
        elif action in ADMIN_ACTIONS and state.admin == "enabled":
            result = await admin_action(self.collector.api(url), name, action)
        else:
            result = ActionResult(False, f"{action} is not available for {name}: the console controls devnet "
                                  "peers through their processes and other peers through their admin API "
                                  "(with --admin-token)")
        return self._record(f"{action} {name}", result)

    async def load_action(self, doc: dict[str, Any]) -> ActionResult:
        if self.load is None or self.nursery is None:
            return ActionResult(False, "load runs need a devnet (start the console with --devnet DIR)")
        if doc.get("action") == "stop":
            return self._record("stop load", await self.load.stop())
        rate, duration = _num(doc.get("rate")), _num(doc.get("duration"))
        if rate is None or duration is None:
            return ActionResult(False, "rate and duration must be numbers")
        return self._record(f"load {rate:g}/s", await self.load.start(self.nursery, rate, duration))

    async def committee_action(self, doc: dict[str, Any]) -> ActionResult:
        if self.control is None:
            return ActionResult(False, "committee changes from the console need a devnet (start with --devnet DIR); "
                                "on other networks each operator runs `peer epoch propose` / `approve`")
        action, name = doc.get("action"), doc.get("peer")
        if action not in ("add", "remove") or (action == "remove" and not isinstance(name, str)):
            return ActionResult(False, "action must be add, or remove with a peer name")
        what = "add a peer" if action == "add" else f"remove {name}"
        return self._record(what, await self.control.committee(action, name if action == "remove" else None))

    async def send_action(self, doc: dict[str, Any]) -> ActionResult:
        if self.control is None:
            return ActionResult(False, "payments between demo wallets need a devnet (start with --devnet DIR)")
        fields = [doc.get(k) for k in ("from", "to", "amount", "gateway")]
        if not all(isinstance(f, str) and f for f in fields):
            return ActionResult(False, "from, to, amount and gateway are required")
        memo = doc.get("memo") if isinstance(doc.get("memo"), str) else ""
        result = await self.control.send(*fields, memo=memo)  # type: ignore[arg-type]
        return self._record(f"send {doc['amount']} {doc['from']} → {doc['to']}", result)


def _int(text: str | None, default: Any) -> Any:
    try:
        return int(text) if text not in (None, "") else default  # type: ignore[arg-type]
    except ValueError:
        return default


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def host_name(header: str) -> str:
    """The host of a Host header, without its port ("[::1]:8700" -> "[::1]")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[:header.find("]") + 1] if "]" in header else header
    return header.split(":", 1)[0]


class HostCheck:
    """Answer only requests addressed to a name the console serves under (DNS rebinding: a web page
    whose own name an attacker re-points at 127.0.0.1 is same-origin with the console, so its script
    could send `X-Console: 1`; its requests still carry that name in Host). `allowed` None: any."""

    def __init__(self, app: Any, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.allowed is not None:
            header = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if host_name(header) not in self.allowed:
                response = _refuse(421, "wrong_host", "this console answers only to the names it serves under "
                                                      "(loopback, or the --host it was given)")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def allowed_hosts(bind_host: str) -> frozenset[str] | None:
    """Loopback names and the address the console was bound to; None (any) for a wildcard bind."""
    bind = bind_host.strip().lower()
    if bind in ("0.0.0.0", "::", "[::]", ""):
        return None
    bind = f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind
    return LOOPBACK_NAMES | {bind}


def build_app(console: Console, *, hosts: frozenset[str] | None = LOOPBACK_NAMES) -> Any:
    templates = console.templates

    def page(name: str, topic: str | None):
        async def handler(request: Request) -> Response:
            console.collector.viewed()
            params = {**request.query_params, **request.path_params}
            initial = await console.payload(topic, params) if topic else {}
            return templates.TemplateResponse(request, f"{name}.html", {
                "console": console, "page": name, "topic": topic, "params": params, "initial_json": html_json(initial)})
        return handler

    async def events(request: Request) -> Response:
        topic = request.path_params["topic"]
        if topic not in TOPICS:
            return JSONResponse({"error": {"code": "not_found", "message": f"no topic {topic}"}}, status_code=404)
        params = dict(request.query_params)
        collector = console.collector

        async def stream() -> AsyncIterator[str]:
            collector.viewers += 1
            seen = -1
            try:
                while True:
                    seen = await collector.changes.wait_newer(seen, 10.0)
                    body = await console.payload(topic, params)
                    yield f"data: {to_json(body)}\n\n"
                    await trio.sleep(_SLOW.get(topic, 0.8))
            finally:
                collector.viewers -= 1
                collector.viewed()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def snapshot(request: Request) -> Response:
        topic = request.path_params["topic"]
        if topic not in TOPICS:
            return JSONResponse({"error": {"code": "not_found", "message": f"no topic {topic}"}}, status_code=404)
        console.collector.viewed()
        return Response(to_json(await console.payload(topic, dict(request.query_params))),
                        media_type="application/json")

    async def action(request: Request) -> Response:
        if console.read_only:
            return _refuse(403, "read_only", "this console was started with --read-only")
        if request.headers.get("x-console") != "1":
            return _refuse(403, "missing_header", "actions need the header `X-Console: 1`")
        body = await request.body()
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            return _refuse(400, "bad_request", "send a JSON object")
        kind = request.path_params["kind"]
        if kind == "peer":
            url, what = doc.get("peer"), doc.get("action")
            if not isinstance(url, str) or not isinstance(what, str):
                return _refuse(400, "bad_request", "`peer` (its API URL) and `action` are required")
            result = await console.peer_action(url, what)
        elif kind == "load":
            result = await console.load_action(doc)
        elif kind == "send":
            result = await console.send_action(doc)
        elif kind == "committee":
            result = await console.committee_action(doc)
        else:
            return _refuse(404, "not_found", f"no action {kind}")
        return JSONResponse(dataclasses.asdict(result), status_code=200 if result.ok else 422)

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        target, message = await lookup.resolve(console.collector, query)
        if target is not None:
            return RedirectResponse(target, status_code=303)
        return templates.TemplateResponse(request, "search.html", {
            "console": console, "page": "search", "query": query, "message": message, "initial_json": "{}"})

    async def verify(request: Request) -> Response:
        text, verdict = request.query_params.get("cert", ""), None
        if request.method == "POST":
            body = await request.body()
            if len(body) > MAX_FORM:
                return _refuse(413, "too_large", "the form is too large")
            text = parse_qs(body.decode(errors="replace")).get("certificate", [""])[0]
        if text.strip():
            checker = console.checker
            verdict = checker.check_text(text) if checker else None
        return templates.TemplateResponse(request, "verify.html", {
            "console": console, "page": "verify", "text": text, "verdict": verdict,
            "names": {pid.hex(): console.collector.name_of(pid.hex()) for pid in
                      (console.collector.genesis.committee if console.collector.genesis else ())},
            "initial_json": "{}"})

    routes = [
        Route("/", lambda request: RedirectResponse("/network", status_code=307)),
        Route("/network", page("network", "network")),
        Route("/traffic", page("traffic", "traffic")),
        Route("/payments", page("payments", "feed")),
        Route("/payments/{id}", page("payment", "payment")),
        Route("/accounts", page("accounts", "accounts")),
        Route("/accounts/{address}", page("account", "account")),
        Route("/alerts", page("alerts", "alerts")),
        Route("/controls", page("controls", "controls")),
        Route("/search", search),
        Route("/verify", verify, methods=["GET", "POST"]),
        Route("/events/{topic}", events),
        Route("/api/control/{kind}", action, methods=["POST"]),
        Route("/api/{topic}", snapshot),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return HostCheck(Starlette(routes=routes), hosts)


def _refuse(status: int, code: str, message: str) -> Response:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}, "message": message},
                        status_code=status)
