"""Attacks on a peer's HTTP API, tried against real `peer run` processes over real sockets.

- Slow bodies and slow headers: many connections that send a request's start and then stall. The
  peer runs with a small file-descriptor limit (what the attack exhausts); it must keep answering
  `/v1/status`, keep its peer port accepting, answer connections over its cap with a quick 503,
  time out the stalled ones, and log no traceback when the attackers hang up mid-body.
- The default suite runs a scaled-down attack (a 512-descriptor peer, 600 connections); `--soak`
  runs the issue's size (a 1,024-descriptor peer, 1,100 connections, default limits).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from crypto.keys import SigningKey
from crypto.messages import Order
from gossip.client import open_client
from tests.hardening_support import Net, open_fds, running, status

pytestmark = pytest.mark.slow

SLOW_HEAD = (b"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n{\"order\": \"")


async def _open_slow_bodies(port: int, count: int, budget: float) -> tuple[list[trio.SocketStream], int]:
    """Open up to `count` connections that each send a request's headers and the start of its body,
    then stall. Returns the streams and how many connects failed outright (a peer out of
    descriptors stops accepting; every further connect then waits for its timeout, so the attack
    stops when `budget` seconds are spent). A connection the peer closes at once still counts as
    opened: that is the peer defending itself, and `_fates` tells it apart."""
    streams: list[trio.SocketStream] = []
    failed = 0
    deadline = trio.current_time() + budget
    for _ in range(count):
        if trio.current_time() >= deadline:
            failed += count - len(streams) - failed
            break
        try:
            with trio.fail_after(2.0):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
        except (OSError, trio.TooSlowError):
            failed += 1
            continue
        streams.append(stream)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(SLOW_HEAD)  # may fail: the peer closed it at once
    return streams, failed


async def _fates(streams: list[trio.SocketStream], within: float) -> dict[str, int]:
    """What became of each connection after `within` s: "held" (open, no answer), "closed"
    (EOF or reset with no answer), or the status code of the answer it got."""
    fates: dict[str, int] = {}

    async def read(stream: trio.SocketStream) -> None:
        data = b""
        fate = "held"
        with trio.move_on_after(within):
            try:
                while b"\r\n" not in data:
                    more = await stream.receive_some(4096)
                    if not more:
                        break
                    data += more
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            fate = "closed"
        if data.startswith(b"HTTP/1.1 "):
            fate = data.split()[1].decode()
        fates[fate] = fates.get(fate, 0) + 1

    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(read, stream)
    return fates


async def _response(stream: trio.SocketStream) -> tuple[int, dict[str, Any]]:
    """Read one HTTP response with a JSON body (Content-Length framed) off a raw stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = await stream.receive_some(4096)
        assert more, f"closed before a response: {data!r}"
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        more = await stream.receive_some(4096)
        assert more, f"closed mid-body: {data!r}"
        body += more
    assert headers["content-type"] == "application/json", headers
    return int(lines[0].split()[1]), json.loads(body)


async def _status_latency(api: str, timeout: float) -> float:
    async with httpx.AsyncClient(timeout=timeout) as client:
        began = time.monotonic()
        response = await client.get(f"{api}/v1/status")
        took = time.monotonic() - began
    assert response.status_code == 200, response.text
    return took


async def _slow_body_attack(net: Net, count: int, cap: int) -> None:
    entry = net.peers[0]
    pid = entry.pid
    assert pid is not None and net.nofile is not None
    log_before = len(net.log(entry))
    fds_before = open_fds(pid)
    began = time.monotonic()
    streams, failed = await _open_slow_bodies(entry.api_port, count, budget=60.0)
    opened = time.monotonic() - began
    try:
        fds_during = open_fds(pid)
        latencies = sorted([await _status_latency(entry.api, timeout=10.0) for _ in range(5)])
        with trio.fail_after(10):
            async with await open_client("127.0.0.1", entry.port, net.nid) as session:
                assert session.peer_id.hex() == entry.peer_id
        fates = await _fates(streams, within=2.0)
        print(f"\nslow-body attack: {count} connections in {opened:.1f} s ({failed} could not connect); "
              f"peer fds {fds_before} -> {fds_during} (limit {net.nofile}); /v1/status during the attack: "
              f"median {latencies[2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; fates: {fates}")
        assert fds_during < net.nofile - 64, "the attack took the peer near its descriptor limit"
        assert fates.get("held", 0) <= cap, fates
    finally:
        for stream in streams:
            await stream.aclose()
    # Hanging up mid-body is ordinary: nothing is logged as an error, the peer answers on.
    await trio.sleep(1.0)
    await _status_latency(entry.api, timeout=10.0)
    log = net.log(entry)[log_before:]
    assert "Traceback" not in log and "Error in ASGI" not in log, log[-3000:]


HTTP_ENV = {"MESHPAY_API__BODY_TIMEOUT": "30", "MESHPAY_API__IDLE_TIMEOUT": "30"}


async def test_slow_bodies_leave_the_api_and_the_peer_port_answering(tmp_path: Path) -> None:
    # Scaled down from the 1,024 descriptors and 1,100 connections (see the soak test).
    env = {**HTTP_ENV, "MESHPAY_API__MAX_CONNECTIONS": "200"}
    with running(tmp_path / "net", peers=1, replication=1, quorum=1, wallets=1, env=env, nofile=512) as net:
        await _slow_body_attack(net, count=600, cap=200)


@pytest.mark.soak
async def test_slow_bodies_at_full_size(tmp_path: Path) -> None:
    with running(tmp_path / "net", peers=1, replication=1, quorum=1, wallets=1, env=HTTP_ENV,
                 nofile=1024) as net:
        await _slow_body_attack(net, count=1100, cap=256)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """One peer with 3 API connections, 2 s header and body timeouts, and no audit token."""
    env = {"MESHPAY_API__MAX_CONNECTIONS": "3", "MESHPAY_API__BODY_TIMEOUT": "2", "MESHPAY_API__IDLE_TIMEOUT": "2",
           "MESHPAY_API__AUDIT_TOKEN": "", "MESHPAY_TUNING__SHUTDOWN_GRACE": "0.5"}
    with running(tmp_path_factory.mktemp("tight") / "net", peers=1, replication=1, quorum=1, wallets=1,
                 env=env) as net:
        yield net


async def test_stalled_bodies_and_headers_time_out(tight: Net) -> None:
    entry = tight.peers[0]
    port = entry.api_port
    body = await trio.open_tcp_stream("127.0.0.1", port)
    await body.send_all(SLOW_HEAD)
    # Headers that trickle in a byte at a time never complete: the idle timeout counts from
    # the connection's start, not from the last byte.
    head = await trio.open_tcp_stream("127.0.0.1", port)
    began = time.monotonic()
    closed_after = None
    with trio.move_on_after(15):
        for byte in b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 100:
            try:
                await head.send_all(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                closed_after = time.monotonic() - began
                break
            await trio.sleep(0.25)
    assert closed_after is not None and closed_after < 8, "slow headers were never cut off"
    with trio.fail_after(10):
        code, doc = await _response(body)
    assert code == 408 and doc["error"]["code"] == "body_timeout", doc
    await body.aclose()
    await head.aclose()
    assert status(entry) is not None


# ---- every connection busy: 503 --------------------------------------------------------------------
async def test_a_newcomer_is_refused_503_only_when_every_connection_is_being_answered(tight: Net) -> None:
    net = tight
    entry = net.peers[0]
    key = next(iter(net.keys.values()))
    # An order ahead of the sender's sequence waits (retried) until its request times out:
    # three of them keep all three connections busy being answered.
    ahead = Order.create(key, net.nid, SigningKey.generate().public, 1, 5)
    body = json.dumps({"order": ahead.encode().hex(), "wait": "certified", "timeout": 3}).encode()
    busy = [await trio.open_tcp_stream("127.0.0.1", entry.api_port) for _ in range(3)]
    for stream in busy:
        await stream.send_all(b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await trio.sleep(1.0)
    began = time.monotonic()
    with trio.fail_after(5):
        newcomer = await trio.open_tcp_stream("127.0.0.1", entry.api_port)
        await newcomer.send_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        code, doc = await _response(newcomer)
    took = time.monotonic() - began
    assert code == 503 and doc["error"]["code"] == "too_many_connections", doc
    print(f"\n503 for a newcomer while 3 of 3 connections were busy, after {took * 1000:.0f} ms")
    for stream in busy:  # each busy one ends with its own answer: 504, the wait timed out
        with trio.fail_after(15):
            code, doc = await _response(stream)
        assert code == 504 and doc["error"]["code"] == "timeout", doc
        await stream.aclose()
    assert status(entry) is not None
    # The audit endpoints are off without a token.
    resp = httpx.get(f"{entry.api}/v1/audit/accounts", timeout=10)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "audit_disabled"


# ---- request bodies and echoes --------------------------------------------------------------------------
TOKEN = "test-audit-token-0123456789"


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """One peer whose API listens on every interface (allowed explicitly) with an audit token."""
    env = {"MESHPAY_API__HOST": "0.0.0.0", "MESHPAY_API__ALLOW_PUBLIC": "true", "MESHPAY_API__AUDIT_TOKEN": TOKEN}
    with running(tmp_path_factory.mktemp("public") / "net", peers=1, replication=1, quorum=1, wallets=1,
                 env=env) as net:
        yield net


HUGE = "9" * 5000
ROUTES = [("GET", "/v1/status"), ("GET", "/v1/peers"), ("GET", "/v1/genesis"), ("POST", "/v1/payments"),
          ("GET", "/v1/payments/" + "ab" * 32), ("GET", "/v1/audit/accounts"), ("GET", "/v1/audit/certificates"),
          ("PUT", "/v1/payments"), ("POST", "/v1/status"), ("GET", "/nowhere")]


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["content-type"] == "application/json", resp.headers
    error = resp.json()["error"]
    assert error["code"] == code, error
    return error


def test_public_api_start_is_warned_about(public: Net) -> None:
    assert "reachable from other machines" in public.log(public.peers[0])


@pytest.mark.parametrize("field", ["order", "wait", "timeout", "pad"])
def test_a_huge_integer_in_any_field_is_a_json_400(public: Net, field: str) -> None:
    doc = {"order": "00", "wait": "none", "timeout": 1, "pad": 0}
    text = json.dumps(doc).replace(f'"{field}": {json.dumps(doc[field])}', f'"{field}": {HUGE}')
    nested = json.dumps(doc).replace(f'"{field}": {json.dumps(doc[field])}', f'"{field}": [[{{"x": -{HUGE}}}]]')
    for body in (text, nested):
        assert HUGE in body
        error = _error(httpx.post(f"{public.peers[0].api}/v1/payments", content=body.encode(), timeout=10),
                       400, "malformed_json")
        assert "5000 digits" in error["message"] and len(error["message"]) < 300


def test_no_route_answers_anything_but_json_to_a_hostile_body(public: Net) -> None:
    api = public.peers[0].api
    hostile = (b'{"x": %s}' % HUGE.encode(), b"[" * 10_000, b'{"a": 1, "a": 2}', b"\xff\xfe")
    for method, path in ROUTES:
        for body in hostile if path == "/v1/payments" else hostile[:1]:
            resp = httpx.request(method, api + path, content=body, timeout=10,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status_code != 500, (method, path, resp.text[:300])
            assert resp.headers["content-type"] == "application/json", (method, path, resp.text[:300])


def test_duplicate_keys_are_refused(public: Net) -> None:
    body = b'{"order": "00", "wait": "none", "wait": "settled"}'
    error = _error(httpx.post(f"{public.peers[0].api}/v1/payments", content=body, timeout=10), 400,
                   "malformed_json")
    assert "appears twice" in error["message"]


def test_bad_input_is_quoted_short_never_echoed_in_full(public: Net) -> None:
    api = public.peers[0].api
    long = "mp1" + "q" * 8192
    for url, params in ((f"{api}/v1/accounts/{long}", None), (f"{api}/v1/accounts/{long}/history", None),
                        (f"{api}/v1/payments/{'ab' * 32}", {"from": long})):
        resp = httpx.get(url, params=params, timeout=10)
        error = _error(resp, 400, "bad_address")
        assert len(resp.content) < 600 and "q" * 100 not in error["message"], error
    # Just over the length check: quoted, still short.
    resp = httpx.get(f"{api}/v1/accounts/{'x' * 100}", timeout=10)
    assert len(_error(resp, 400, "bad_address")["message"]) <= 300


def test_audit_needs_the_token(public: Net) -> None:
    api = public.peers[0].api
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        for path in ("/v1/audit/accounts", "/v1/audit/certificates"):
            _error(httpx.get(api + path, headers=headers, timeout=10), 403, "forbidden")
    resp = httpx.get(f"{api}/v1/audit/accounts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    allocated = json.loads(public.devnet.genesis_path.read_text())["allocations"]
    # One peer owns every account: the listing is the genesis allocations, each with its balance.
    assert resp.status_code == 200, resp.text
    assert len(allocated) > 1 and len(resp.json()["accounts"]) == len(allocated), resp.text
