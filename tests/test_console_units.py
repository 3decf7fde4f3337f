"""The console's pure parts: health verdicts, metrics arithmetic, frozen accounts, the supply check,
certificate verification, the peer's ring layout, and the contract parsers on bad answers."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import httpx
import pytest

from console import model
from console.certs import Checker
from console.control import _STEPS, DEVNET_ACTIONS, DEVNET_ACTIONS_BY_STATE
from console.peerapi import ContractError, PeerApi, PeerDown, PeerRefused, parse_metrics
from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from peer.api_explore import ring_layout
from peer.genesis import Allocation, Genesis
from peer.ring import Ring


# ---- health ------------------------------------------------------------------------------------------
def obs(key: str, reachable: bool | None, views: dict[str, str] | None) -> model.Observation:
    return model.Observation(key, key, reachable, views)


def test_health_marks_an_unreachable_peer_down_and_shows_each_view() -> None:
    alive = {"a": "alive", "b": "alive", "c": "alive"}
    health = model.health([obs("a", True, alive), obs("b", True, alive), obs("c", False, None)])
    rows = {r.key: r for r in health.rows}
    assert health.observers == ["a", "b"]
    assert rows["c"].verdict == "down" and rows["c"].views == "aa"
    assert rows["c"].disagree  # the console cannot reach it, yet both peers see it alive
    assert rows["a"].verdict == "alive" and rows["a"].views == "-a" and not rows["a"].disagree
    assert health.rows[0].key == "c"  # worst first


def test_health_flags_peers_whose_views_disagree() -> None:
    health = model.health([
        obs("a", True, {"a": "alive", "b": "alive", "c": "dead"}),
        obs("b", True, {"a": "alive", "b": "alive", "c": "alive"}),
        obs("c", True, {"a": "alive", "b": "alive", "c": "alive"}),
    ])
    c = next(r for r in health.rows if r.key == "c")
    assert c.verdict == "suspect" and c.disagree and c.counts["dead"] == 1 and c.counts["alive"] == 1
    assert c.views == "da-"


def test_health_judges_a_peer_without_address_by_the_majority() -> None:
    views = {"a": "alive", "x": "dead"}
    health = model.health([obs("a", True, views), obs("b", True, {**views, "b": "alive"}),
                           obs("x", None, None)])
    x = next(r for r in health.rows if r.key == "x")
    assert x.verdict == "dead" and "no API address" in x.why


# ---- metrics ---------------------------------------------------------------------------------------------
def test_quantile_interpolates_inside_the_bucket_and_is_none_without_data() -> None:
    buckets = {0.01: 0.0, 0.02: 50.0, 0.05: 100.0, math.inf: 100.0}
    assert model.quantile(0.5, buckets) == pytest.approx(0.02)
    assert model.quantile(0.75, buckets) == pytest.approx(0.035)
    assert model.quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    assert model.quantile(0.99, {0.1: 0.0, math.inf: 10.0}) == 0.1  # all beyond the last bound


def sample(certified: float, settled: float, failed: float, buckets: dict[float, float], bytes_in: float,
           http: dict[str, float] | None = None) -> model.Sample:
    return model.Sample({"certified": certified, "settled": settled, "failed_timeout": failed},
                        {"certified": buckets}, {"group_commit": 1.0}, bytes_in, 0.0, http or {})


def test_rates_are_counter_differences_and_survive_a_restart() -> None:
    first = sample(100, 90, 0, {0.01: 10, math.inf: 100}, 1000, {"200": 10, "503": 0})
    last = sample(300, 280, 4, {0.01: 110, math.inf: 300}, 3000, {"200": 20, "503": 6})
    r = model.rates(2.0, first, last)
    assert r.payments == {"certified": 100.0, "settled": 95.0, "failed": 2.0}
    assert r.failures == {"failed_timeout": 2.0}
    assert r.bytes_in == 1000.0 and r.overload == 3.0 and r.http == 8.0
    assert r.latency["certified"][0.01] == 100 and r.percentile("certified", 0.5) == pytest.approx(0.01)
    restarted = model.rates(1.0, last, sample(5, 5, 0, {0.01: 5, math.inf: 5}, 10))
    assert restarted.payments["certified"] == 5.0  # a smaller counter means the peer restarted
    assert restarted.latency["certified"][0.01] == 5


def test_traffic_sums_peers_over_a_time_grid() -> None:
    series = {p: [(t, sample(10.0 * t, 10.0 * t, 0, {0.01: 10.0 * t, math.inf: 10.0 * t}, 0)) for t in range(0, 61)]
              for p in ("p1", "p2")}
    out = model.traffic(series, now=60.0, minutes=1.0, step=2.0, smooth=6.0)
    assert len(out["t"]) == 30 and out["t"][-1] == 60.0
    assert out["settled"][-1] == pytest.approx(20.0)  # 10/s at each of two peers
    assert out["group_commit"][-1] == 2.0
    assert out["certified_p50"][-1] == pytest.approx(5.0)  # ms, inside the (0, 10 ms] bucket
    json.dumps(out, allow_nan=False)  # the stream refuses NaN: none may appear


def test_metrics_parser_names_missing_families() -> None:
    with pytest.raises(ContractError, match="meshpay_queue_depth"):
        parse_metrics("http://p", "# TYPE meshpay_payments counter\n")


# ---- accounts -------------------------------------------------------------------------------------------
def owner(peer: str, next_seq: int | None, lock: str | None = None) -> model.OwnerState:
    return model.OwnerState(peer, 10 if next_seq is not None else None, next_seq, 0,
                            (next_seq, lock) if lock and next_seq is not None else None)


def test_an_account_is_frozen_only_when_no_order_can_reach_the_quorum() -> None:
    # N = 4, W = 3: two owners locked to order x, two to y: neither can ever get 3 votes
    assert model.frozen_at([owner("a", 5, "x"), owner("b", 5, "x"), owner("c", 5, "y"), owner("d", 5, "y")], 3) == 5
    # a free owner could still vote for x: x can reach 3
    assert model.frozen_at([owner("a", 5, "x"), owner("b", 5, "x"), owner("c", 5, "y"), owner("d", 5)], 3) is None
    # a silent owner might be free: not provably frozen
    assert model.frozen_at([owner("a", 5, "x"), owner("b", 5, "x"), owner("c", 5, "y"), owner("d", None)], 3) is None
    # one order holding locks is a payment in flight, not a frozen account
    assert model.frozen_at([owner("a", 5, "x"), owner("b", 5, "x"), owner("c", 5), owner("d", 5)], 3) is None


def test_supply_counts_each_account_once_by_majority_and_lists_disagreements() -> None:
    a, b = bytes([1]) * 32, bytes([2]) * 32
    p1, p2, p3 = bytes([11]) * 32, bytes([12]) * 32, bytes([13]) * 32
    owners = {a: (p1, p2, p3), b: (p1, p2, p3)}
    states = {p1.hex(): {a.hex(): (70, 1, 0, "x"), b.hex(): (30, 0, 1, "y")},
              p2.hex(): {a.hex(): (70, 1, 0, "x"), b.hex(): (30, 0, 1, "y")},
              p3.hex(): {a.hex(): (100, 0, 0, "z"), b.hex(): (30, 0, 1, "y")}}
    check = model.supply(states, owners.__getitem__, 100, [a.hex(), b.hex()])
    assert check.balanced and check.total == 100 and check.disagreeing == [a.hex()]


# ---- certificates ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net() -> tuple[Genesis, list[SigningKey], Certificate]:
    keys = [SigningKey.generate() for _ in range(4)]
    sender, recipient = SigningKey.generate(), SigningKey.generate()
    genesis = Genesis("unit", tuple(k.public for k in keys), 4, 3, 16, 2, (Allocation(sender.public, 1000),),
                      b"\x01" * 16).validate()
    order = Order.create(sender, genesis.network_id, recipient.public, 250, 0, "rent")
    votes = tuple(Vote.create(k, genesis.network_id, order) for k in keys[:3])
    return genesis, keys, Certificate(order, votes)


def test_a_genuine_certificate_verifies_in_the_console(net) -> None:
    genesis, _, cert = net
    verdict = Checker(genesis).check_hex(cert.encode().hex())
    assert verdict.valid and verdict.payment_id == cert.order.id.hex() and verdict.amount == 250
    assert all(v.owner and v.for_order and v.signature for v in verdict.votes) and len(verdict.votes) == 3
    receipt = json.dumps({"meshpay_receipt": 1, "payment_id": cert.id.hex(), "certificate": cert.encode().hex()})
    assert Checker(genesis).check_text(receipt).valid


def test_tampered_certificates_are_invalid_and_say_why(net) -> None:
    genesis, _keys, cert = net
    checker = Checker(genesis)
    assert checker.check(cert).valid  # cached as verified: tampering must still be caught
    bad_vote = dataclasses.replace(cert.votes[1], sig=bytes(64))
    verdict = checker.check(Certificate(cert.order, (cert.votes[0], bad_vote, cert.votes[2])))
    assert not verdict.valid and "invalid signature" in verdict.reason
    assert [v.signature for v in verdict.votes] == [True, False, True]
    bad_order = dataclasses.replace(cert.order, sig=bytes(64))
    verdict = checker.check(Certificate(bad_order, cert.votes))
    assert not verdict.valid and "sender signature" in verdict.reason and verdict.order_signature is False
    too_few = checker.check(Certificate(cert.order, cert.votes[:2]))
    assert not too_few.valid and "votes" in too_few.reason
    flipped = bytearray(cert.encode())
    flipped[-5] ^= 0xFF
    assert not checker.check_hex(bytes(flipped).hex()).valid
    assert not checker.check_text("not hex at all").valid


# ---- the peer's ring layout ------------------------------------------------------------------------------
def test_ring_layout_shares_match_ownership_and_slices_name_first_owners() -> None:
    committee = [SigningKey.generate().public for _ in range(6)]
    ring = Ring(committee, 3, 32)
    layout = ring_layout(ring, slices=256)
    assert sum(layout["shares"]) == pytest.approx(3.0)  # every account has 3 owners
    counts: Counter[bytes] = Counter()
    accounts = [SigningKey.generate().public for _ in range(3000)]
    for account in accounts:
        counts.update(ring.owners(account))
    for i, pid in enumerate(committee):
        assert layout["shares"][i] == pytest.approx(counts[pid] / len(accounts), abs=0.05)
    assert len(layout["slices"]) == 256 and set(layout["slices"]) <= set(range(6))


# ---- contract parsing on bad answers -----------------------------------------------------------------------
async def test_the_client_reports_changed_or_missing_answers_precisely() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/status":
            return httpx.Response(200, json={"peer_id": "ab", "network_id": 5})
        if request.url.path == "/v1/peers":
            return httpx.Response(503, json={"error": {"code": "overloaded", "message": "busy"}})
        raise httpx.ConnectError("refused")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        api = PeerApi(http, "http://peer")
        with pytest.raises(ContractError, match="network_id"):
            await api.status()
        with pytest.raises(PeerRefused) as refused:
            await api.members()
        assert refused.value.status == 503 and refused.value.code == "overloaded"
        with pytest.raises(PeerDown):
            await api.metrics()


# ---- controls ---------------------------------------------------------------------------------------------
def test_every_peer_action_is_a_devnet_command_and_fits_the_process_state() -> None:
    assert set(_STEPS) == set(DEVNET_ACTIONS)
    offered = {a for actions in DEVNET_ACTIONS_BY_STATE.values() for a in actions}
    assert offered == set(DEVNET_ACTIONS)
    assert "start" not in DEVNET_ACTIONS_BY_STATE["running"] and DEVNET_ACTIONS_BY_STATE["stopped"] == ("start",)
    # stopping or killing a paused peer resumes it first, or SIGTERM would wait for ever
    assert _STEPS["stop"][0] == ["kill", "--signal", "CONT"]


# ---- the admin API (peer/api_admin.py) -------------------------------------------------------------------
def admin_client(token: str) -> httpx.AsyncClient:
    from types import SimpleNamespace

    from starlette.applications import Starlette

    from peer import api_admin
    from peer.api import Api

    # the parts of the peer's Api the admin routes use; `_wrap` is the real one (errors as JSON)
    api = SimpleNamespace(node=SimpleNamespace(id=bytes(range(32))), accepting=True, paused=False, metrics=None)
    api._wrap = lambda name, handler: Api._wrap(api, name, handler)
    app = Starlette(routes=api_admin.Admin(api, token).routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://peer")


async def test_the_admin_api_is_off_without_a_token_and_needs_the_right_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from peer import api_admin

    stops: list[int] = []
    monkeypatch.setattr(api_admin, "_stop_self", lambda: stops.append(1))  # instead of SIGTERM to this test
    async with admin_client("") as off:
        for method, path in (("GET", "/v1/admin"), ("POST", "/v1/admin/stop")):
            answer = await off.request(method, path, headers={"authorization": "Bearer anything-at-all-really"})
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "admin_disabled"
    async with admin_client("a-token-of-enough-length") as on:
        for headers in ({}, {"authorization": "Bearer wrong-token-of-enough-length"},
                        {"authorization": "a-token-of-enough-length"}):
            answer = await on.post("/v1/admin/stop", headers=headers)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
        assert stops == []
        good = {"authorization": "Bearer a-token-of-enough-length"}
        assert (await on.get("/v1/admin", headers=good)).json()["actions"] == ["stop", "restart", "pause", "resume"]
        answer = await on.post("/v1/admin/stop", headers=good)
        assert answer.status_code == 202 and answer.json()["stopping"] is True and stops == [1]
        assert (await on.post("/v1/admin/pause", headers=good)).json()["paused"] is True
        assert (await on.post("/v1/admin/resume", headers=good)).json()["paused"] is False
        assert not api_admin.restart_requested()
        answer = await on.post("/v1/admin/restart", headers=good)
        assert answer.status_code == 202 and api_admin.restart_requested() and stops == [1, 1]
        monkeypatch.setattr(api_admin, "_restart", False)


def test_an_admin_token_must_be_long_enough() -> None:
    from peer.config import ApiSettings

    assert ApiSettings().admin_token == ""
    assert ApiSettings(admin_token="x" * 16).admin_token == "x" * 16
    for bad in ("short", "has a space in it here", "tab\tinside-the-token-here"):
        with pytest.raises(ValueError, match="admin_token"):
            ApiSettings(admin_token=bad)


# ---- the command ------------------------------------------------------------------------------------------
def test_the_console_command_says_what_is_wrong_with_a_documented_status(tmp_path) -> None:
    import socket

    from typer.testing import CliRunner

    from console.cli import EXIT_PORT, EXIT_SOURCE, EXIT_USAGE, app

    def status(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args))
        return getattr(result.exception, "code", result.exit_code), str(result.exception)

    assert status() == (EXIT_USAGE, "give --devnet DIR or at least one --peer URL")
    code, message = status("--devnet", str(tmp_path))
    assert code == EXIT_SOURCE and "no devnet" in message
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, message = status("--peer", "http://127.0.0.1:9", "--port", str(busy.getsockname()[1]))
    assert code == EXIT_PORT and "in use" in message


def test_the_recent_feed_pages_by_cursor_and_says_where_its_memory_starts(net) -> None:
    from types import SimpleNamespace

    from peer.api_explore import Explorer
    from peer.settlement import CertApplied

    _genesis, _keys, cert = net
    explorer = Explorer(SimpleNamespace(node=SimpleNamespace()), keep=5)
    for _ in range(8):
        explorer.on_event(CertApplied(cert, 3))
    assert [c for c, *_ in explorer._recent] == [4, 5, 6, 7, 8]  # the oldest three are forgotten
    assert [c for c, *_ in explorer._newer(0, 3)] == [4, 5, 6]
    assert [c for c, *_ in explorer._newer(6, 10)] == [7, 8]
    assert explorer._newer(8, 10) == []
    item = explorer._item(*explorer._recent[-1])
    assert item["payment_id"] == cert.id.hex() and item["event"] == "applied" and item["sides"] == 3
    assert item["from"].startswith("mp1") and item["amount"] == 250


# ---- what strangers can do to the console (an attacker's review, 2 December 2026) -------------------
async def test_tokens_go_only_to_the_peers_the_operator_named() -> None:
    """An observer chooses the API address it advertises, and the console used to poll every address
    a peer listed, sending it the admin and audit tokens: a stranger's proxy logged both. Found peers
    are still watched, but without tokens; one advertising an address httpx cannot even parse (an
    IPv6 host without brackets) used to end the console, and is now skipped."""
    from console.collector import Collector, _usable_url
    from console.sources import PeerRef, UrlSource

    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url.host), request.headers.get("authorization")))
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        collector = Collector(UrlSource(["http://named:8000"]), http, admin_token="a" * 32,
                              audit_headers={"Authorization": "Bearer " + "b" * 32})
        collector._add(PeerRef("http://named:8000", "named"))
        collector._add(PeerRef("http://found:9000", "found"), named=False)
        named, found = collector.api("http://named:8000"), collector.api("http://found:9000")
        assert named.admin_token and named.audit_headers
        assert found.admin_token is None and not found.audit_headers
        assert collector.api("http://never-heard-of:1").admin_token is None
        for url in ("http://named:8000", "http://found:9000"):
            with pytest.raises(PeerRefused):
                await collector.api(url).admin_info()
        assert ("named", "Bearer " + "a" * 32) in seen and ("found", None) in seen
        state = collector.peers["http://found:9000"]
        await collector._check_admin(found, state)
        assert state.admin.startswith("off (found")
    assert not _usable_url("http://::1:18911") and _usable_url("http://[::1]:18911")
    with pytest.raises(PeerDown):
        await PeerApi(httpx.AsyncClient(), "http://::1:18911").status()


async def test_the_console_answers_only_to_its_own_names() -> None:
    """DNS rebinding: a page whose name is re-pointed at 127.0.0.1 is same-origin with the console and
    can send `X-Console: 1`, but its requests carry its own name in Host, and are refused."""
    from console.app import HostCheck, allowed_hosts, host_name

    async def ok(scope: dict, receive: object, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = HostCheck(ok, allowed_hosts("127.0.0.1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        for host, status in (("127.0.0.1:8700", 200), ("localhost:8700", 200), ("[::1]:8700", 200),
                             ("rebind.attacker.test:8700", 421), ("127.0.0.1.attacker.test", 421), ("", 421)):
            response = await client.post("http://console/api/control/peer", headers={"host": host})
            assert response.status_code == status, (host, response.status_code)
    assert host_name("[::1]:8700") == "[::1]" and host_name("Example.COM:1") == "example.com"
    assert allowed_hosts("0.0.0.0") is None and "10.0.0.5" in allowed_hosts("10.0.0.5")
