"""Black-box tests of the peer's HTTP API (docs/api.md) and binary client protocol, against real
`peer run` processes on 127.0.0.1.

One module-scoped devnet of 4 peers (N = 4, W = 3, fsync off) serves most tests; every test that
moves money uses its own demo wallet as the sender and fresh keys as recipients, so the tests do
not depend on each other's sequence numbers or balances. A second, smaller devnet (3 peers, N = 2,
W = 2) started with tight limits through MESHPAY_* environment overrides covers what the first
cannot show: 421 (with N = 4 of 4 peers every peer owns every account), 429, 503 and shutdown.

Every error is checked for its HTTP status *and* its stable JSON code (plus the documented extra
fields), because clients branch on the code, not on the message text.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from crypto import keystore
from crypto.address import encode_address
from crypto.keys import SigningKey
from crypto.messages import Certificate, Order, Vote
from crypto.schema import decode_any
from devnet import layout, processes
from devnet.layout import Devnet, PeerEntry
from gossip.client import CONNECTION_FAILURES, ClientConnection, open_client
from peer import genesis as genesis_file
from peer.client_wire import STATUS_NAMES, WAIT_NONE, WAIT_SETTLED, PaymentStatus, Submit
from peer.genesis import Genesis
from peer.metrics import LATENCY_BUCKETS
from peer.ring import Ring
from tests.devnet_support import wait_for
from tests.wallet_support import gone

pytestmark = pytest.mark.slow

N, W = 4, 3
MAX_BODY = 64 * 1024  # api.max_body_bytes in the devnet's peer.toml (the default)
MAX_WAIT = 60.0  # api.max_wait_seconds
HTTP_TIMEOUT = 15.0  # generous: bounds every request so a hung peer fails the test, not the run


# ---- devnets ----------------------------------------------------------------------------------------
@dataclass
class Net:
    devnet: Devnet
    genesis: Genesis
    ring: Ring
    keys: dict[str, SigningKey]  # demo wallet name -> key

    @property
    def nid(self) -> bytes:
        return self.genesis.network_id

    @property
    def peers(self) -> list[PeerEntry]:
        return self.devnet.peers

    def key(self, name: str) -> SigningKey:
        return self.keys[name]


def _stop_all(devnet: Devnet) -> None:
    """SIGTERM every peer at once (SIGCONT first: a test may have frozen one), SIGKILL stragglers,
    reap them all. Parallel, so tearing down costs one grace period, not one per peer."""
    pids = [e.pid for e in devnet.peers if e.pid is not None]
    for pid in pids:
        for signum in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
    deadline = time.monotonic() + 10.0
    for pid in pids:
        if not gone(pid, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            gone(pid, 5.0)
    for entry in devnet.peers:
        entry.pid = None
    devnet.save()


@contextlib.contextmanager
def _running(root: Path, *, peers: int, replication: int, quorum: int, wallets: int,
             env: dict[str, str] | None = None) -> Iterator[Net]:
    devnet = layout.create(root, peers=peers, wallets=wallets, replication=replication, quorum=quorum,
                           fsync=False)
    password = devnet.password()
    keys = {w.name: keystore.load(Path(w.key_file), password) for w in devnet.wallets}
    genesis = genesis_file.load(devnet.genesis_path)
    saved = dict(os.environ)
    try:
        # start_peer hands os.environ to the child: that is how MESHPAY_* overrides reach it.
        os.environ.update(env or {})
        try:
            for entry in devnet.peers:
                processes.start_peer(devnet, entry)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        processes.wait_converged(devnet, timeout=40)
        yield Net(devnet, genesis, Ring(genesis.committee, genesis.replication, genesis.vnodes), keys)
    finally:
        _stop_all(devnet)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    # A short shutdown grace: parked (never-certifying) payments would otherwise hold every peer's
    # exit for the default 5 s at teardown.
    with _running(tmp_path_factory.mktemp("api") / "net", peers=4, replication=N, quorum=W, wallets=16,
                  env={"MESHPAY_TUNING__SHUTDOWN_GRACE": "0.5"}) as n:
        yield n


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        yield client


# ---- helpers ----------------------------------------------------------------------------------------
def fresh_account() -> bytes:
    """A new, valid, unfunded account key (a payment's recipient starts at 0: easy to check)."""
    return SigningKey.generate().public


def addr(key: bytes | SigningKey) -> str:
    return encode_address(key.public if isinstance(key, SigningKey) else key)


def err(resp: httpx.Response, status: int, code: str, *extra: str) -> dict[str, Any]:
    """Assert the error envelope `{"error": {"code", "message", ...}}` with this status and code."""
    assert resp.status_code == status, f"expected {status} {code}, got {resp.status_code}: {resp.text}"
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    for name in extra:
        assert name in error, f"{code} error lacks {name!r}: {error}"
    return error


def submit(client: httpx.Client, peer: PeerEntry, order: Order | str, wait: str = "none",
           timeout: float = 10.0) -> httpx.Response:
    hexed = order if isinstance(order, str) else order.encode().hex()
    return client.post(f"{peer.api}/v1/payments", json={"order": hexed, "wait": wait, "timeout": timeout})


def account(client: httpx.Client, peer: PeerEntry, key: bytes | SigningKey) -> dict[str, Any]:
    resp = client.get(f"{peer.api}/v1/accounts/{addr(key)}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def views(client: httpx.Client, net: Net, key: bytes | SigningKey) -> list[dict[str, Any]]:
    return [account(client, p, key) for p in net.peers]


def next_seq(client: httpx.Client, net: Net, key: SigningKey) -> int:
    # The highest view: an owner that has not applied the latest debit yet reports one less.
    return max(v["next_seq"] for v in views(client, net, key))


def settled_everywhere(client: httpx.Client, net: Net, key: bytes | SigningKey, seq: int) -> list[dict[str, Any]]:
    """Every owner has applied the sender's debits up to `seq - 1`; returns their views."""
    def check() -> list[dict[str, Any]] | None:
        vs = views(client, net, key)
        return vs if all(v["next_seq"] == seq and v["pending"] is None for v in vs) else None
    return wait_for(check, 10.0, f"every owner at next_seq {seq}")


def check_certificate(net: Net, cert_json: dict[str, Any], order: Order) -> Certificate:
    """The certificate proves this order: W+ distinct owners of the sender, valid vote signatures."""
    cert = Certificate.decode(bytes.fromhex(cert_json["cbor"]))
    assert cert.order == order and cert.order.id == order.id
    voters = [v.voter for v in cert.votes]
    assert len(set(voters)) == len(voters) >= W
    owners = set(net.ring.owners(order.sender))
    assert set(voters) <= owners, "a vote from a peer that does not own the sender"
    for vote in cert.votes:
        assert vote.order_id == order.id and vote.signature_valid(net.nid, order.sig)
    assert cert_json["votes"] == [{"voter": v.voter.hex(), "sig": v.sig.hex()} for v in cert.votes]
    return cert


def pay(client: httpx.Client, net: Net, peer: PeerEntry, key: SigningKey, recipient: bytes, amount: int,
        seq: int, memo: str = "", wait: str = "settled") -> Order:
    order = Order.create(key, net.nid, recipient, amount, seq, memo)
    resp = submit(client, peer, order, wait)
    assert resp.status_code == 200 and resp.json()["status"] == wait, resp.text
    return order


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)] (the parser raises if the text is not valid exposition)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def sample(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The value of one labelled sample, 0 when absent (a counter is absent before its first inc)."""
    for got, value in samples.get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return 0.0


def raw_http(port: int, head: bytes, chunks: Sequence[bytes] = (), timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request over a bare socket (to send what httpx will not: a lying Content-Length, a
    chunked body cut short); returns status, headers and body of the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, f"connection closed before a response: {data!r}"
            data += more
        header_blob, body = data.split(b"\r\n\r\n", 1)
        lines = header_blob.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                break
            body += more
        return status, headers, body[:length]


# ---- node ---------------------------------------------------------------------------------------------
def test_status_reports_the_documented_fields(net: Net, http: httpx.Client) -> None:
    for peer in net.peers:
        doc = http.get(f"{peer.api}/v1/status").json()
        assert doc["peer_id"] == peer.peer_id
        assert doc["network_id"] == net.devnet.network_id and doc["network"] == net.genesis.name
        assert doc["accepting"] is True and doc["committee_member"] is True
        assert (doc["replication"], doc["quorum"], doc["committee_size"]) == (N, W, 4)
        assert doc["ring_share"] == 1.0  # N = committee: every peer owns every account
        assert doc["members"] == {"alive": 4, "suspect": 0, "dead": 0, "left": 0}
        assert doc["peer_port"] == peer.port
        assert set(doc["queues"]) >= {"group_commit", "gateway_in_flight", "inbound", "waiting_requests"}
        assert all(isinstance(v, int) and v >= 0 for v in doc["queues"].values())
        assert {"votes", "refusals", "certs_applied"} <= set(doc["counters"])


def test_peers_lists_every_member_alive_with_its_api(net: Net, http: httpx.Client) -> None:
    expected = {p.peer_id: p for p in net.peers}
    for peer in net.peers:
        rows = http.get(f"{peer.api}/v1/peers").json()["peers"]
        assert {r["peer_id"] for r in rows} == set(expected)
        for row in rows:
            entry = expected[row["peer_id"]]
            assert row["state"] == "alive" and row["committee"] is True
            assert (row["host"], row["port"], row["api"]) == ("127.0.0.1", entry.port, entry.api)
            assert isinstance(row["incarnation"], int)
        assert [r["peer_id"] for r in rows if r["self"]] == [peer.peer_id]


def test_genesis_is_the_file(net: Net, http: httpx.Client) -> None:
    on_disk = json.loads(net.devnet.genesis_path.read_text())
    for peer in net.peers:
        doc = http.get(f"{peer.api}/v1/genesis").json()
        assert doc == on_disk
        assert doc["network_id"] == net.devnet.network_id
        assert genesis_file.from_json(doc).network_id == net.nid  # it hashes to what it claims


def test_account_on_an_owner(net: Net, http: httpx.Client) -> None:
    key = net.key("demo14")  # no test spends from it: its balance is still the genesis allocation
    for peer in net.peers:
        doc = account(http, peer, key)
        assert doc["address"] == addr(key) and doc["peer_id"] == peer.peer_id
        assert doc["balance"] == layout.DEMO_BALANCE and doc["decimals"] == net.genesis.decimals
        assert (doc["next_seq"], doc["credits"], doc["history_length"], doc["pending"]) == (0, 0, 0, None)
        assert [o["peer_id"] for o in doc["owners"]] == [p.hex() for p in net.ring.owners(key.public)]
        by_id = {p.peer_id: p for p in net.peers}
        assert all(o["api"] == by_id[o["peer_id"]].api and o["state"] == "alive" for o in doc["owners"])
    # An account nobody paid yet is still served by its owners: zero, not an error.
    empty = account(http, net.peers[0], fresh_account())
    assert (empty["balance"], empty["next_seq"], empty["history_length"], empty["pending"]) == (0, 0, 0, None)


# ---- payments -----------------------------------------------------------------------------------------
def test_wait_none_answers_202_pending_then_settles(net: Net, http: httpx.Client) -> None:
    key, gateway = net.key("demo0"), net.peers[0]
    order = Order.create(key, net.nid, fresh_account(), 125, next_seq(http, net, key), "coffee")
    resp = submit(http, gateway, order, "none")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["payment_id"] == order.id.hex() and body["status"] == "pending"
    seen: list[str] = []

    def settled() -> dict[str, Any] | None:
        doc = http.get(f"{gateway.api}/v1/payments/{order.id.hex()}").json()
        seen.append(doc["status"])
        return doc if doc["status"] == "settled" else None

    doc = wait_for(settled, 10.0, "the payment to settle")
    assert set(seen) <= {"pending", "certified", "settled"}, seen
    assert doc["order"] == {"payment_id": order.id.hex(), "from": addr(key), "to": addr(order.recipient),
                            "amount": 125, "seq": order.seq, "memo": "coffee", "network": net.nid.hex()}
    check_certificate(net, doc["certificate"], order)


def test_wait_certified_returns_a_certificate_from_the_senders_owners(net: Net, http: httpx.Client) -> None:
    key = net.key("demo0")
    order = Order.create(key, net.nid, fresh_account(), 7, next_seq(http, net, key))
    resp = submit(http, net.peers[1], order, "certified")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["payment_id"] == order.id.hex() and body["status"] in ("certified", "settled")
    check_certificate(net, body["certificate"], order)


def test_wait_settled_elsewhere_and_resubmission_moves_money_once(net: Net, http: httpx.Client) -> None:
    key, recipient = net.key("demo2"), fresh_account()
    seq = next_seq(http, net, key)
    start = account(http, net.peers[0], key)
    order = Order.create(key, net.nid, recipient, 4321, seq, "rent")
    resp = submit(http, net.peers[0], order, "settled")
    assert resp.status_code == 200 and resp.json()["status"] == "settled", resp.text
    assert resp.json()["payment_id"] == order.id.hex()
    check_certificate(net, resp.json()["certificate"], order)

    # Away from the gateway, `settled` is computed by asking the owners of both sides.
    def settled_at_peer2() -> dict[str, Any] | None:
        doc = http.get(f"{net.peers[2].api}/v1/payments/{order.id.hex()}").json()
        return doc if doc["status"] == "settled" else None

    doc = wait_for(settled_at_peer2, 10.0, "a non-gateway peer to report settled")
    assert doc["applied"]["debit"] >= W and doc["applied"]["credit"] >= W
    assert doc["payment_id"] == order.id.hex()
    check_certificate(net, doc["certificate"], order)

    # The same signed order again, at the same gateway and at two others: the same payment.
    for peer in (net.peers[0], net.peers[1], net.peers[3]):
        again = submit(http, peer, order, "settled")
        assert again.status_code == 200, again.text
        assert again.json()["payment_id"] == order.id.hex() and again.json()["status"] == "settled"
    for view in settled_everywhere(http, net, key, seq + 1):
        assert view["balance"] == start["balance"] - 4321
        assert view["history_length"] == start["history_length"] + 1
    wait_for(lambda: all((v["balance"], v["credits"], v["history_length"]) == (4321, 1, 1)
                         for v in views(http, net, recipient)), 10.0, "every owner to credit the recipient once")


def test_history_pages_walk_every_entry_once_newest_first(net: Net, http: httpx.Client) -> None:
    key, recipient, gateway = net.key("demo1"), fresh_account(), net.peers[0]
    seq = next_seq(http, net, key)
    orders = [pay(http, net, gateway, key, recipient, 10 + i, seq + i, f"p{i}") for i in range(5)]
    settled_everywhere(http, net, key, seq + 5)
    wait_for(lambda: account(http, gateway, recipient)["history_length"] == 5, 10.0, "the five credits")
    for who, direction, other in ((key.public, "out", recipient), (recipient, "in", key.public)):
        total = account(http, gateway, who)["history_length"]
        assert total >= 5
        entries: list[dict[str, Any]] = []
        before: int | None = None
        for _ in range(total):  # bounded: a page loop that never ends fails here
            params = {"limit": "2", **({"before": str(before)} if before is not None else {})}
            page = http.get(f"{gateway.api}/v1/accounts/{addr(who)}/history", params=params)
            assert page.status_code == 200, page.text
            doc = page.json()
            assert len(doc["entries"]) <= 2 and doc["address"] == addr(who)
            entries += doc["entries"]
            before = doc["next_before"]
            if before is None:
                break
        assert before is None, "paging did not end"
        assert [e["index"] for e in entries] == list(range(total - 1, -1, -1))
        newest = entries[:5]
        assert [e["payment_id"] for e in newest] == [o.id.hex() for o in reversed(orders)]
        for e, o in zip(newest, reversed(orders), strict=True):
            assert (e["direction"], e["amount"], e["seq"], e["memo"]) == (direction, o.amount, o.seq, o.memo)
            assert e["counterparty"] == addr(other)
        whole = http.get(f"{gateway.api}/v1/accounts/{addr(who)}/history", params={"limit": "500"}).json()
        assert whole["entries"] == entries and whole["next_before"] is None
    empty = http.get(f"{gateway.api}/v1/accounts/{addr(key)}/history", params={"before": "0"}).json()
    assert empty["entries"] == [] and empty["next_before"] is None


def test_metrics_parse_and_count_a_settled_payment(net: Net, http: httpx.Client) -> None:
    gateway, key = net.peers[3], net.key("demo8")
    before = metric_samples(http.get(f"{gateway.api}/metrics").text)
    pay(http, net, gateway, key, fresh_account(), 99, next_seq(http, net, key))
    http.post(f"{gateway.api}/v1/payments", content=b"not json")  # one 400, counted by route and code
    resp = http.get(f"{gateway.api}/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    after = metric_samples(resp.text)
    assert sample(after, "meshpay_payments_total", outcome="settled") >= \
        sample(before, "meshpay_payments_total", outcome="settled") + 1
    buckets = {labels["le"]: v for labels, v in after["meshpay_payment_latency_seconds_bucket"]
               if labels["status"] == "settled"}
    assert set(buckets) == {*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"}
    assert buckets["+Inf"] >= 1 and buckets["+Inf"] == sample(after, "meshpay_payment_latency_seconds_count",
                                                               status="settled")
    values = [buckets[str(float(b))] for b in LATENCY_BUCKETS] + [buckets["+Inf"]]
    assert values == sorted(values), "histogram buckets must be cumulative"
    assert sample(after, "meshpay_members", state="alive") == N - 1  # self excluded
    assert sample(after, "meshpay_transport_bytes_total", direction="in") > 0
    assert sample(after, "meshpay_transport_bytes_total", direction="out") > 0
    assert sample(after, "meshpay_http_requests_total", route="submit", code="400") >= 1
    # Where the writer's time goes (the tail at half load follows the write-ahead log's sync).
    spent = {w: sample(after, "meshpay_group_commit_seconds_total", what=w) for w in ("round_trip", "write", "sync")}
    assert spent["round_trip"] >= spent["write"] >= spent["sync"] >= 0 and spent["write"] > 0, spent
    assert spent["round_trip"] > sample(before, "meshpay_group_commit_seconds_total", what="round_trip")


# ---- 400 -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parked(net: Net) -> Order:
    """A valid order that can never certify (seq far ahead of a wallet nobody spends from): if a
    validation bug let it through, it would sit pending instead of moving money."""
    return Order.create(net.key("demo15"), net.nid, fresh_account(), 1, 7)


def _non_canonical_variants(order: Order) -> dict[str, bytes]:
    raw = order.encode()
    # [1, 1, network(32), ...]: array(9), uint 1, uint 1, bytes(32) header, ...
    assert raw[:4] == b"\x89\x01\x01\x58" and raw[4] == 32
    at = 3 + 3 * 34  # after three 32-byte strings with their 2-byte headers: amount, then seq
    assert raw[at:at + 2] == bytes((order.amount, order.seq)) and order.amount < 24 and order.seq < 24
    return {
        "amount as a 2-byte integer": raw[:at] + b"\x18" + raw[at:],
        "seq as a 3-byte integer": raw[:at + 1] + b"\x19\x00" + raw[at + 1:],
        "kind as a 2-byte integer": b"\x89\x18\x01" + raw[2:],
        "network id with a 2-byte length": raw[:3] + b"\x59\x00\x20" + raw[5:],
        "indefinite-length array": b"\x9f" + raw[1:] + b"\xff",
        "trailing byte": raw + b"\x00",
        "extra element": b"\x8a" + raw[1:] + b"\x00",
    }


@pytest.mark.parametrize(("name", "body", "code"), [
    ("not json", b"{order: nope", "malformed_json"),
    ("invalid utf-8", b"{\"order\": \"\xff\xfe\"}", "malformed_json"),
    ("a list", b"[]", "malformed_json"),
    ("a string", b"\"order\"", "malformed_json"),
    ("null", b"null", "malformed_json"),
    ("deeply nested", b"[" * 30_000 + b"]" * 30_000, "malformed_json"),
    ("empty body", b"", "malformed_json"),
    ("no order", b"{\"wait\": \"none\"}", "malformed_order"),
    ("order is a number", b"{\"order\": 5}", "malformed_order"),
    ("order is not hex", b"{\"order\": \"zz\"}", "malformed_order"),
    ("order is odd-length hex", b"{\"order\": \"abc\"}", "malformed_order"),
    ("order is empty", b"{\"order\": \"\"}", "malformed_order"),
    ("order is garbage hex", b"{\"order\": \"deadbeef\"}", "malformed_order"),
])
def test_bad_bodies_are_400(net: Net, http: httpx.Client, name: str, body: bytes, code: str) -> None:
    resp = http.post(f"{net.peers[0].api}/v1/payments", content=body, headers={"content-type": "application/json"})
    err(resp, 400, code)


def test_non_canonical_and_foreign_cbor_orders_are_400(net: Net, http: httpx.Client, parked: Order) -> None:
    variants = _non_canonical_variants(parked)
    vote = Vote.create(net.key("demo15"), net.nid, parked)
    variants["a vote, not an order"] = vote.encode()
    variants["a certificate, not an order"] = Certificate(parked, (vote,)).encode()
    for name, raw in variants.items():
        resp = submit(http, net.peers[0], raw.hex(), "none")
        assert resp.status_code == 400, f"{name}: {resp.status_code} {resp.text}"
        err(resp, 400, "malformed_order")
    # The canonical form of the same order is accepted (so the refusals above are about encoding).
    ok = submit(http, net.peers[0], parked, "none")
    assert ok.status_code == 202 and ok.json()["payment_id"] == parked.id.hex(), ok.text


@pytest.mark.parametrize("wait", ["pending", "finalized", "", "Settled", None, 1, ["settled"], {"a": 1}])
def test_bad_wait_is_400(net: Net, http: httpx.Client, parked: Order, wait: Any) -> None:
    resp = http.post(f"{net.peers[1].api}/v1/payments", json={"order": parked.encode().hex(), "wait": wait})
    err(resp, 400, "bad_wait")


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.5, MAX_WAIT + 0.001, 1e9, True, False, "5", None, [5]])
def test_bad_timeout_is_400(net: Net, http: httpx.Client, parked: Order, timeout: Any) -> None:
    resp = http.post(f"{net.peers[1].api}/v1/payments",
                     json={"order": parked.encode().hex(), "wait": "certified", "timeout": timeout})
    err(resp, 400, "bad_timeout")


def test_non_finite_timeout_is_400(net: Net, http: httpx.Client, parked: Order) -> None:
    # Python's json accepts NaN/Infinity; neither is a number of seconds in (0, max].
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"order": "%s", "wait": "certified", "timeout": %s}' % (parked.encode().hex().encode(), literal)
        err(http.post(f"{net.peers[1].api}/v1/payments", content=body), 400, "bad_timeout")


def test_malformed_addresses_are_400(net: Net, http: httpx.Client) -> None:
    good = addr(net.key("demo0"))
    typo = good[:20] + ("q" if good[20] != "q" else "p") + good[21:]
    weak = encode_address(b"\x01" + bytes(31))  # the identity point: a checksum-valid, unusable key
    for text in ("nope", "mp1", good[:-1], good + "q", typo, "bc1" + good[3:], weak):
        for path in (f"/v1/accounts/{text}", f"/v1/accounts/{text}/history"):
            err(http.get(f"{net.peers[0].api}{path}"), 400, "bad_address")


@pytest.mark.parametrize("pid", ["xyz", "ab" * 31, "ab" * 33, "g" * 64, "0x" + "ab" * 31])
def test_bad_payment_ids_are_400(net: Net, http: httpx.Client, pid: str) -> None:
    err(http.get(f"{net.peers[0].api}/v1/payments/{pid}"), 400, "bad_payment_id")


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=-3", "limit=ten", "limit=", "limit=1.5",
                                   "before=x", "before=1.0", "before=", "limit=2&before=b"])
def test_bad_history_queries_are_400(net: Net, http: httpx.Client, query: str) -> None:
    resp = http.get(f"{net.peers[0].api}/v1/accounts/{addr(net.key('demo0'))}/history?{query}")
    err(resp, 400, "bad_query")


def test_history_before_beyond_u64_is_400(net: Net, http: httpx.Client) -> None:
    resp = http.get(f"{net.peers[0].api}/v1/accounts/{addr(net.key('demo0'))}/history",
                    params={"before": str(2**64 + 1)})
    err(resp, 400, "bad_query")


# ---- 404 / 405 / 413 -----------------------------------------------------------------------------------------
def test_unknown_route_and_payment_are_404(net: Net, http: httpx.Client) -> None:
    api = net.peers[0].api
    for path in ("/v2/status", "/v1/statuses", "/v1/accounts", "/v1/payments/ab/cd",
                 "/v1/status/", "/v1/audit/accounts/"):  # no redirect that echoes Host: JSON 404
        err(http.get(api + path, headers={"host": "evil.example"}), 404, "not_found")
    err(http.get(f"{api}/v1/payments/{'ab' * 32}"), 404, "unknown_payment")


def test_the_root_is_an_index_of_every_route(net: Net, http: httpx.Client) -> None:
    doc = http.get(net.peers[0].api + "/").json()
    paths = {r["path"]: r["methods"] for r in doc["routes"]}
    assert paths["/v1/payments"] == ["POST"] and paths["/v1/status"] == ["GET"]
    assert {"/v1/peers", "/v1/accounts/{address}/history", "/v1/epoch", "/metrics"} <= set(paths)
    # Every route it names answers something other than 404 not_found (it exists).
    for path, methods in paths.items():
        if "{" not in path and methods == ["GET"]:
            resp = http.get(net.peers[0].api + path)
            assert resp.status_code != 404 or resp.json()["error"]["code"] != "not_found", path


def test_wrong_method_is_405(net: Net, http: httpx.Client) -> None:
    api = net.peers[0].api
    for method, path in (("GET", "/v1/payments"), ("PUT", "/v1/payments"), ("POST", "/v1/status"),
                         ("DELETE", f"/v1/accounts/{addr(net.key('demo0'))}"), ("POST", "/metrics"),
                         ("PATCH", f"/v1/payments/{'ab' * 32}")):
        err(http.request(method, api + path), 405, "method_not_allowed")


def test_body_at_the_limit_is_read_and_one_byte_more_is_413(net: Net, http: httpx.Client, parked: Order) -> None:
    api = net.peers[0].api
    doc = {"order": parked.encode().hex(), "wait": "bogus", "pad": ""}
    doc["pad"] = "x" * (MAX_BODY - len(json.dumps(doc).encode()))
    exact = json.dumps(doc).encode()
    assert len(exact) == MAX_BODY
    err(http.post(f"{api}/v1/payments", content=exact), 400, "bad_wait")  # read and parsed: at the limit
    # A declared Content-Length over the limit is refused before the body is sent at all.
    port = net.peers[0].api_port
    for declared in (MAX_BODY + 1, 10**9):
        head = (f"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {declared}\r\nConnection: close\r\n\r\n").encode()
        status, _, body = raw_http(port, head)
        assert status == 413, body
        assert json.loads(body)["error"]["code"] == "body_too_large"


def test_chunked_body_that_grows_too_large_is_413(net: Net, http: httpx.Client) -> None:
    port = net.peers[1].api_port
    head = (b"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    piece = b" " * 16_384  # whitespace: valid JSON padding, so only the size can be refused
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (MAX_BODY // len(piece) + 1)  # just over, never ends
    status, _, body = raw_http(port, head, chunks)
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "body_too_large"
    # And through httpx's own chunked encoding (a generator body has no Content-Length).
    resp = http.post(f"{net.peers[1].api}/v1/payments", content=iter([piece] * 5))
    err(resp, 413, "body_too_large")
    assert http.get(f"{net.peers[1].api}/v1/status").status_code == 200  # the peer is unharmed


# ---- 409 / 422 -----------------------------------------------------------------------------------------------
def test_second_order_for_a_used_seq_is_422_seq_too_low_with_the_certificate(net: Net, http: httpx.Client) -> None:
    key = net.key("demo3")
    seq = next_seq(http, net, key)
    first = Order.create(key, net.nid, fresh_account(), 50, seq)
    resp = submit(http, net.peers[0], first, "certified")
    assert resp.status_code == 200, resp.text
    # Wait until every owner applied it: an owner still holding only the lock would say `conflict`.
    settled_everywhere(http, net, key, seq + 1)
    second = Order.create(key, net.nid, fresh_account(), 60, seq)
    error = err(submit(http, net.peers[1], second, "certified"), 422, "seq_too_low", "evidence")
    evidence = Certificate.decode(bytes.fromhex(error["evidence"]))
    assert evidence.order == first
    check_certificate(net, {"cbor": error["evidence"],
                            "votes": [{"voter": v.voter.hex(), "sig": v.sig.hex()} for v in evidence.votes]}, first)


def test_seq_locked_to_another_order_is_409_conflict(net: Net, http: httpx.Client) -> None:
    """Freeze two owners (SIGSTOP) so the first order locks the seq at the other two without
    reaching W = 3 votes; a second order for that seq then meets two `conflict` refusals."""
    key = net.key("demo4")
    seq = next_seq(http, net, key)
    first = Order.create(key, net.nid, fresh_account(), 70, seq)
    second = Order.create(key, net.nid, fresh_account(), 80, seq)
    frozen = [net.peers[2].pid, net.peers[3].pid]
    assert all(frozen)
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        resp = submit(http, net.peers[0], first, "none")
        assert resp.status_code == 202, resp.text

        def locked() -> bool:
            return all((account(http, p, key)["pending"] or {}).get("payment_id") == first.id.hex()
                       for p in net.peers[:2])

        wait_for(locked, 5.0, "both live owners to lock the first order")
        assert account(http, net.peers[0], key)["pending"] == {"seq": seq, "payment_id": first.id.hex()}
        error = err(submit(http, net.peers[1], second, "certified", timeout=5), 409, "conflict", "evidence")
        assert Order.decode(bytes.fromhex(error["evidence"])) == first
        failed = http.get(f"{net.peers[1].api}/v1/payments/{second.id.hex()}").json()
        assert (failed["status"], failed["code"]) == ("failed", "conflict")
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    processes.wait_converged(net.devnet, timeout=30)


async def test_concurrent_conflicting_orders_move_money_at_most_once(net: Net, http: httpx.Client) -> None:
    key = net.key("demo5")
    seq = next_seq(http, net, key)
    before = account(http, net.peers[0], key)["balance"]
    r1, r2 = fresh_account(), fresh_account()
    orders = {"a": Order.create(key, net.nid, r1, 100, seq), "b": Order.create(key, net.nid, r2, 200, seq)}
    gateways = {"a": net.peers[0], "b": net.peers[2]}
    results: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        async def go(name: str) -> None:
            results[name] = await client.post(f"{gateways[name].api}/v1/payments", json={
                "order": orders[name].encode().hex(), "wait": "certified", "timeout": 10})

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(go, "a")
                nursery.start_soon(go, "b")
    certified = []
    for name, resp in results.items():
        other = orders["b" if name == "a" else "a"]
        if resp.status_code == 200:
            check_certificate(net, resp.json()["certificate"], orders[name])
            certified.append(name)
        elif resp.status_code == 409:
            error = err(resp, 409, "conflict", "evidence")
            assert Order.decode(bytes.fromhex(error["evidence"])) == other  # the order holding the lock
        else:
            error = err(resp, 422, "seq_too_low", "evidence")
            assert Certificate.decode(bytes.fromhex(error["evidence"])).order == other
            certified.append("b" if name == "a" else "a")  # the other one is proven certified
    assert len(set(certified)) <= 1, f"both conflicting orders certified: {results}"
    if certified:
        winner = orders[certified[0]]
        expected = {r1: 100 if winner is orders["a"] else 0, r2: 200 if winner is orders["b"] else 0}
        for view in settled_everywhere(http, net, key, seq + 1):
            assert view["balance"] == before - winner.amount
    else:  # split locks: the equivocating sender's seq is stuck, and nobody was paid
        expected = {r1: 0, r2: 0}
        assert all(v["balance"] == before and v["next_seq"] == seq for v in views(http, net, key))
    for recipient, amount in expected.items():
        wait_for(lambda r=recipient, a=amount: {v["balance"] for v in views(http, net, r)} == {a}, 10.0,
                 "every owner to agree on the recipient's balance")


def test_refused_orders_are_422(net: Net, http: httpx.Client) -> None:
    key, gateway = net.key("demo6"), net.peers[1]
    seq = next_seq(http, net, key)
    balance = account(http, gateway, key)["balance"]
    poor = Order.create(key, net.nid, fresh_account(), balance + 1, seq)
    err(submit(http, gateway, poor, "certified"), 422, "insufficient_funds")
    failed = http.get(f"{gateway.api}/v1/payments/{poor.id.hex()}").json()
    assert (failed["status"], failed["code"]) == ("failed", "insufficient_funds")

    good = Order.create(key, net.nid, fresh_account(), 5, seq)
    forged = Order(good.network, good.sender, good.recipient, good.amount, good.seq, good.memo,
                   bytes([good.sig[0] ^ 1]) + good.sig[1:])
    err(submit(http, gateway, forged, "certified"), 422, "bad_signature")
    # A byte flipped in the signed fields, keeping the old signature, is the same refusal.
    altered = Order(good.network, good.sender, good.recipient, good.amount + 1, good.seq, good.memo, good.sig)
    err(submit(http, gateway, altered, "none"), 422, "bad_signature")

    elsewhere = Order.create(key, bytes(32), fresh_account(), 5, seq)
    err(submit(http, gateway, elsewhere, "certified"), 422, "wrong_network")
    err(submit(http, gateway, Order.create(key, net.nid, key.public, 5, seq), "certified"), 422, "self_transfer")
    weak = Order.create(key, net.nid, b"\x01" + bytes(31), 5, seq)  # money sent there would be lost
    err(submit(http, gateway, weak, "certified"), 422, "bad_address")

    # None of the refusals locked or spent anything: the seq is still free for a good order.
    for view in views(http, net, key):
        assert (view["balance"], view["next_seq"], view["pending"]) == (balance, seq, None)
    assert submit(http, gateway, good, "certified").status_code == 200


def test_wait_that_ends_first_is_504_with_payment_id_and_status(net: Net, http: httpx.Client) -> None:
    key = net.key("demo7")
    ahead = Order.create(key, net.nid, fresh_account(), 3, next_seq(http, net, key) + 3)  # owners wait for the gap
    error = err(submit(http, net.peers[2], ahead, "certified", timeout=1), 504, "timeout", "payment_id", "status")
    assert error["payment_id"] == ahead.id.hex() and error["status"] == "pending"
    doc = http.get(f"{net.peers[2].api}/v1/payments/{ahead.id.hex()}").json()
    assert doc["status"] == "pending" and doc["certificate"] is None


# ---- binary client protocol -----------------------------------------------------------------------------------
async def _statuses(conn: ClientConnection, reqs: set[int], timeout: float) -> dict[int, list[PaymentStatus]]:
    """Read replies until every req reached a final status (settled, failed, rejected)."""
    got: dict[int, list[PaymentStatus]] = defaultdict(list)
    with trio.fail_after(timeout):
        while not all(got[r] and STATUS_NAMES[got[r][-1].status] in ("settled", "failed", "rejected")
                      for r in reqs):
            msg = decode_any(await conn.receive())
            assert type(msg) is PaymentStatus, msg
            assert msg.req in reqs, f"reply for a req never sent: {msg.req}"
            got[msg.req].append(msg)
    return got


async def test_binary_pipelined_submits_report_pending_certified_settled(net: Net, http: httpx.Client) -> None:
    peer = net.peers[1]
    senders = [net.key(f"demo{i}") for i in (9, 10, 11)]
    orders = {100 + i: Order.create(k, net.nid, fresh_account(), 20 + i, next_seq(http, net, k))
              for i, k in enumerate(senders)}
    good = next(iter(orders.values()))
    forged = Order(good.network, good.sender, good.recipient, 1, good.seq, "", good.sig)
    async with await open_client("127.0.0.1", peer.port, net.nid) as conn:
        assert conn.peer_id.hex() == peer.peer_id
        messages = [Submit(req, o, WAIT_SETTLED).encode() for req, o in orders.items()]
        messages.append(Submit(7, forged, WAIT_SETTLED).encode())
        await conn.send_many(messages)  # all in one frame: pipelined
        got = await _statuses(conn, {*orders, 7}, 15)
    for req, order in orders.items():
        names = [STATUS_NAMES[m.status] for m in got[req]]
        assert names == ["pending", "certified", "settled"], (req, names, [m.detail for m in got[req]])
        assert all(m.order_id == order.id for m in got[req])
        assert Certificate.decode(got[req][1].cert).order == order  # the certified reply carries it
    assert [(STATUS_NAMES[m.status], m.code) for m in got[7]] == [("rejected", "bad_signature")]
    for order in orders.values():  # and the money really moved
        wait_for(lambda o=order: {v["balance"] for v in views(http, net, o.recipient)} == {o.amount}, 10.0,
                 "every owner to credit the recipient")


async def test_binary_malformed_message_closes_only_that_session(net: Net, http: httpx.Client) -> None:
    peer = net.peers[2]
    key = net.key("demo12")
    seq = next_seq(http, net, key)
    async with await open_client("127.0.0.1", peer.port, net.nid) as good:
        for junk in (b"\x00garbage", b"\xff", PaymentStatus(1, bytes(32), 0, "", "", b"").encode()):
            async with await open_client("127.0.0.1", peer.port, net.nid) as bad:
                await bad.send(junk)
                with trio.fail_after(5), pytest.raises((trio.EndOfChannel, *CONNECTION_FAILURES)):
                    await bad.receive()  # the peer hangs up without a reply
        # The session opened before the junk still works, and so does a new one.
        order = Order.create(key, net.nid, fresh_account(), 11, seq)
        await good.send(Submit(1, order, WAIT_SETTLED).encode())
        got = await _statuses(good, {1}, 15)
        assert [STATUS_NAMES[m.status] for m in got[1]] == ["pending", "certified", "settled"]
    async with await open_client("127.0.0.1", peer.port, net.nid) as again:
        # A resubmission with wait none: one reply, already settled, same payment.
        await again.send(Submit(2, order, WAIT_NONE).encode())
        got = await _statuses(again, {2}, 10)
        assert [(STATUS_NAMES[m.status], m.order_id) for m in got[2]] == [("settled", order.id)]
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        assert (await client.get(f"{peer.api}/v1/status")).json()["accepting"] is True


# ---- a second devnet with tight limits: 421, 429, 503 ---------------------------------------------------------
DEADLINE = 4.0  # tuning.payment_deadline of the limited devnet: a pending payment fails after this
LIMITED_ENV = {  # applied to every peer of the small devnet
    "MESHPAY_TUNING__PAYMENT_DEADLINE": str(DEADLINE),
    "MESHPAY_API__MAX_WAITING": "1",      # a second request waiting on a payment is refused (429)
    "MESHPAY_TUNING__MAX_IN_FLIGHT": "1",  # a second payment in flight at a gateway is refused (503)
    "MESHPAY_TUNING__SHUTDOWN_GRACE": "3",  # a short window in which a stopping peer says shutting_down
}


@pytest.fixture(scope="class")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """Class-scoped: its peers stop as soon as the class is done, not at the end of the module."""
    with _running(tmp_path_factory.mktemp("api-limited") / "net", peers=3, replication=2, quorum=2,
                  wallets=2, env=LIMITED_ENV) as n:
        yield n


@pytest.fixture(scope="class")
def deadline_failure(small: Net, http: httpx.Client) -> tuple[Order, httpx.Response]:
    """A wait that outlives the gateway's payment deadline: the payment fails with `timeout`."""
    gateway = small.peers[1]
    wait_for(lambda: http.get(f"{gateway.api}/v1/status").json()["queues"]["gateway_in_flight"] == 0, 10.0,
             "the gateway to have room (max_in_flight = 1)")
    ahead = Order.create(small.key("demo1"), small.nid, fresh_account(), 1, 50)  # never certifies
    return ahead, submit(http, gateway, ahead, "certified", timeout=DEADLINE + 10)


@dataclass
class Shutdown:
    parked: Order
    waiter: httpx.Response  # the request that was waiting on `parked` when SIGTERM arrived
    refusal: httpx.Response  # a new payment submitted during the shutdown grace
    status_while_stopping: dict[str, Any]
    exited: bool


@pytest.fixture(scope="class")
def shutdown(small: Net, http: httpx.Client) -> Shutdown:
    """SIGTERM a peer while a request waits on a payment that cannot certify: the shutdown grace
    (which waits for pending payments) keeps the API up long enough to watch it refuse, then the
    pending payment is aborted. Stops peer2 of the small devnet for good: its tests run last."""
    peer = small.peers[2]
    assert peer.pid is not None
    parked = Order.create(small.key("demo0"), small.nid, fresh_account(), 2, 9)  # seq ahead
    waiter: dict[str, httpx.Response] = {}

    def wait_on_parked() -> None:
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:
            waiter["resp"] = submit(client, peer, parked, "certified", timeout=30)

    thread = threading.Thread(target=wait_on_parked, daemon=True)
    thread.start()
    wait_for(lambda: http.get(f"{peer.api}/v1/status").json()["queues"]["waiting_requests"] == 1, 5.0,
             "the request to wait on the parked payment")
    os.kill(peer.pid, signal.SIGTERM)
    # (Until the signal lands this gateway says `overloaded`: the parked payment fills it.)
    status = wait_for(lambda: (d := http.get(f"{peer.api}/v1/status").json())["accepting"] is False and d,
                      2.0, "the stopping peer to stop accepting", interval=0.02)
    order = Order.create(small.key("demo1"), small.nid, fresh_account(), 1, 1)
    refusal = submit(http, peer, order, "none")
    thread.join(HTTP_TIMEOUT)
    exited = gone(peer.pid, 15.0)
    peer.pid = None if exited else peer.pid
    assert "resp" in waiter, "the waiting request got no answer"
    return Shutdown(parked, waiter["resp"], refusal, status, exited)


class TestLimitedDevnet:
    """3 peers, N = 2, W = 2: each peer owns about 2/3 of the accounts, so 421 can happen."""

    def test_non_owner_answers_421_with_the_owners(self, small: Net, http: httpx.Client) -> None:
        by_id = {p.peer_id: p for p in small.peers}
        for peer in small.peers:
            status = http.get(f"{peer.api}/v1/status").json()
            assert (status["replication"], status["quorum"]) == (2, 2)
            assert 0.5 < status["ring_share"] < 0.85  # about 2/3, certainly not all
            # An account this peer does not own, found with the genesis ring.
            account_key = next(k for k in iter(fresh_account, None)
                               if bytes.fromhex(peer.peer_id) not in small.ring.owners(k))
            owners = [o.hex() for o in small.ring.owners(account_key)]
            for path in (f"/v1/accounts/{addr(account_key)}", f"/v1/accounts/{addr(account_key)}/history"):
                error = err(http.get(peer.api + path), 421, "not_owner", "owners")
                assert [o["peer_id"] for o in error["owners"]] == owners
                assert all(o["api"] == by_id[o["peer_id"]].api and o["state"] == "alive" for o in error["owners"])
            # ...and the owners it names do answer for it.
            for owner in owners:
                assert account(http, by_id[owner], account_key)["owners"] == error["owners"]

    async def test_waiting_limit_429_and_gateway_capacity_503(self, small: Net) -> None:
        """max_waiting = 1, max_in_flight = 1 at the gateway. A wait on a payment the owners keep
        turning away (a sequence number ahead) gives its slot up to a newcomer, answered with its
        status so far (an attacker's orders from fresh keys held every slot until their deadline);
        a wait on a payment nobody refuses keeps its slot, and the newcomer gets 429."""
        gateway = small.peers[0]
        k0, k1 = small.key("demo0"), small.key("demo1")
        parked = Order.create(k0, small.nid, fresh_account(), 1, 5)  # seq ahead: pending until its deadline
        fresh = Order.create(k1, small.nid, fresh_account(), 1, 0)
        first: dict[str, httpx.Response] = {}
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            async def status() -> dict[str, Any]:
                return (await client.get(f"{gateway.api}/v1/status")).json()

            async def park(order: Order, name: str) -> None:
                first[name] = await client.post(f"{gateway.api}/v1/payments", json={
                    "order": order.encode().hex(), "wait": "settled", "timeout": DEADLINE / 2})

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(park, parked, "parked")
                    while (await status())["queues"]["waiting_requests"] < 1:
                        await trio.sleep(0.02)
                    assert (await status())["queues"]["gateway_in_flight"] == 1
                    await trio.sleep(0.3)  # the owners have answered `seq_ahead` by now

                    started = time.monotonic()
                    resp = await client.post(f"{gateway.api}/v1/payments", json={
                        "order": fresh.encode().hex(), "wait": "none"})
                    assert time.monotonic() - started < 1.0, "503 must not wait for capacity"
                    error = err(resp, 503, "overloaded")
                    assert resp.headers["retry-after"].isdigit()
                    assert error.get("payment_id", fresh.id.hex()) == fresh.id.hex()

                    # The binary protocol refuses the same way, without closing the session.
                    async with await open_client("127.0.0.1", gateway.port, small.nid) as conn:
                        await conn.send(Submit(9, fresh, WAIT_SETTLED).encode())
                        got = await _statuses(conn, {9}, 5)
                        assert [(STATUS_NAMES[m.status], m.code) for m in got[9]] == [("rejected", "overloaded")]

                    started = time.monotonic()
                    resp = await client.post(f"{gateway.api}/v1/payments", json={
                        "order": fresh.encode().hex(), "wait": "certified", "timeout": 30})
                    assert time.monotonic() - started < 1.0
                    # The stalled wait made room (then the full gateway refused the newcomer, 503).
                    err(resp, 503, "overloaded")
                # The released request was answered at once with where its payment stood.
                released = first["parked"]
                assert released.status_code == 202 and released.json()["status"] == "pending", released.text
                assert released.json()["payment_id"] == parked.id.hex()

            # Now a wait on a payment nobody refuses: its sender's other owners are frozen.
            wait_for_room = trio.current_time() + DEADLINE + 10
            while (await status())["queues"]["gateway_in_flight"] > 0:  # the parked one fails
                assert trio.current_time() < wait_for_room
                await trio.sleep(0.2)
            frozen = [p for p in small.peers if p is not gateway and bytes.fromhex(p.peer_id)
                      in small.ring.owners(k1.public)]
            assert frozen
            try:
                for p in frozen:
                    os.kill(p.pid, signal.SIGSTOP)
                with trio.fail_after(20):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(park, fresh, "fresh")
                        while (await status())["queues"]["waiting_requests"] < 1:
                            await trio.sleep(0.02)
                        await trio.sleep(0.3)
                        later = Order.create(k0, small.nid, fresh_account(), 1, 0)
                        started = time.monotonic()
                        resp = await client.post(f"{gateway.api}/v1/payments", json={
                            "order": later.encode().hex(), "wait": "certified", "timeout": 30})
                        assert time.monotonic() - started < 1.0, "429 must not wait for the busy slot"
                        err(resp, 429, "too_many_waiting")
                        assert resp.headers["retry-after"].isdigit()
                        for p in frozen:
                            os.kill(p.pid, signal.SIGCONT)
            finally:
                for p in frozen:
                    os.kill(p.pid, signal.SIGCONT)
            assert first["fresh"].status_code == 200 and first["fresh"].json()["status"] == "settled"
            # The 429 was given before the gateway saw the order: no payment was started.
            err(await client.get(f"{gateway.api}/v1/payments/{later.id.hex()}"), 404, "unknown_payment")
            assert (await status())["queues"]["waiting_requests"] == 0  # the slot was given back
            # Another gateway is not affected by this one's limits.
            ok = await client.post(f"{small.peers[1].api}/v1/payments", json={
                "order": fresh.encode().hex(), "wait": "certified", "timeout": 10})
            assert ok.status_code == 200 and ok.json()["payment_id"] == fresh.id.hex(), ok.text

    def test_payment_failing_on_its_deadline_is_504_timeout(self, small: Net, http: httpx.Client,
                                                            deadline_failure: tuple[Order, httpx.Response]) -> None:
        order, resp = deadline_failure
        error = err(resp, 504, "timeout", "payment_id")
        assert error["payment_id"] == order.id.hex()
        doc = http.get(f"{small.peers[1].api}/v1/payments/{order.id.hex()}").json()
        assert (doc["status"], doc["code"]) == ("failed", "timeout")

    def test_payment_failing_on_its_deadline_reports_its_status(self, deadline_failure: tuple[Order, httpx.Response]) -> None:
        error = err(deadline_failure[1], 504, "timeout", "payment_id")
        assert error.get("status") == "failed", error

    def test_stopping_peer_refuses_new_payments_with_503(self, shutdown: Shutdown) -> None:
        err(shutdown.refusal, 503, "shutting_down")
        assert shutdown.refusal.headers["retry-after"].isdigit()
        assert shutdown.status_while_stopping["accepting"] is False  # reads still work meanwhile
        assert shutdown.exited, "the peer did not exit after its grace period"
        # The request that was waiting is answered (not cut off) and told why, with its payment id.
        error = shutdown.waiter.json()["error"]
        assert (error["code"], error["payment_id"]) == ("shutting_down", shutdown.parked.id.hex())

    def test_waiting_request_cut_by_shutdown_is_503(self, shutdown: Shutdown) -> None:
        err(shutdown.waiter, 503, "shutting_down")
        assert shutdown.waiter.headers["retry-after"].isdigit()
