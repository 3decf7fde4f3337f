"""What peers say about payments and accounts, with real `peer run` processes on 127.0.0.1.

One devnet of 5 committee members (N = 4, W = 3) of which 4 run; the fifth member's key is the
test's own, used to play a Byzantine gateway on the peer port. The running peers listen on the
wildcard address and advertise 127.0.0.1, so they also show that distinct listen and advertise
addresses work.

- A gateway that owns neither side of a payment says `settled`, is restarted, and must still say
  `settled` (it asks the owners), never 404 `unknown_payment`.
- A sender whose two orders for one sequence are locked by different owners (2 + 2) is frozen: the
  owners' account views show their locks, an owner asked to vote for the other order keeps both as
  evidence (forged orders are not evidence), /metrics counts it, and `devnet check` reports it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from crypto import keystore
from crypto.address import encode_address
from crypto.keys import SigningKey
from crypto.messages import Order
from devnet.layout import PeerEntry
from gossip.transport import TcpTransport
from peer.wire import VoteRequest
from tests.hardening_support import Net, running, start, stop, wait_converged, wait_for
from tests.wallet_support import REPO

pytestmark = pytest.mark.slow

N, W = 4, 3
HTTP_TIMEOUT = 15.0
WILDCARD = {"MESHPAY_NETWORK__LISTEN_HOST": "0.0.0.0", "MESHPAY_NETWORK__ADVERTISE_HOST": "127.0.0.1",
            "MESHPAY_TUNING__SHUTDOWN_GRACE": "0.5"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with running(tmp_path_factory.mktemp("answers") / "net", peers=5, replication=N, quorum=W, wallets=16,
                 env=WILDCARD, skip=frozenset({"peer4"})) as n:
        yield n


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        yield client


def running_peers(net: Net) -> list[PeerEntry]:
    return [p for p in net.peers if p.pid is not None]


def by_id(net: Net, peer_id: bytes) -> PeerEntry:
    return next(p for p in net.peers if p.peer_id == peer_id.hex())


def owners(net: Net, account: bytes) -> list[PeerEntry]:
    return [by_id(net, o) for o in net.ring.owners(account)]


def next_seq(http: httpx.Client, net: Net, account: bytes) -> int:
    return max(http.get(f"{p.api}/v1/accounts/{encode_address(account)}").json()["next_seq"]
               for p in owners(net, account) if p.pid is not None)


def pay(http: httpx.Client, gateway: PeerEntry, order: Order, wait: str = "settled") -> dict[str, Any]:
    resp = http.post(f"{gateway.api}/v1/payments", json={"order": order.encode().hex(), "wait": wait,
                                                         "timeout": 20})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _records_carry_the_advertised_address(net: Net, http: httpx.Client) -> None:
    for peer in running_peers(net):
        rows = http.get(f"{peer.api}/v1/peers").json()["peers"]
        alive = [r for r in rows if r["state"] == "alive"]
        assert len(alive) == len(running_peers(net)), rows
        assert {r["host"] for r in alive} == {"127.0.0.1"}, rows


# ---- item 6: answers that regress after a restart ------------------------------------------------
def test_a_restarted_non_owner_gateway_still_says_settled(net: Net, http: httpx.Client) -> None:
    # The peers listen on the wildcard and advertise 127.0.0.1: their records carry the latter.
    _records_carry_the_advertised_address(net, http)
    # Two demo wallets whose owners both leave out the same running peer: that peer is the gateway.
    running_names = {p.name for p in running_peers(net)}
    pick = None
    for a_name, a_key in net.keys.items():
        for b_name, b_key in net.keys.items():
            if a_name == b_name:
                continue
            outside = ({p.name for p in net.peers} - {p.name for p in owners(net, a_key.public)}
                       - {p.name for p in owners(net, b_key.public)})
            if outside & running_names:
                pick = a_key, b_key, next(p for p in net.peers if p.name in outside & running_names)
                break
        if pick:
            break
    assert pick is not None, "no two demo wallets share a running non-owner (16 wallets: vanishingly rare)"
    sender, recipient, gateway = pick
    order = Order.create(sender, net.nid, recipient.public, 123, next_seq(http, net, sender.public))
    assert pay(http, gateway, order)["status"] == "settled"
    url = f"{gateway.api}/v1/payments/{order.id.hex()}"
    assert http.get(url).json()["status"] == "settled"
    stop(net, gateway)
    start(net, gateway)
    wait_converged(net)
    answers = [http.get(url) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20, answers[-1].text
    assert {a.json()["status"] for a in answers} == {"settled"}, answers[-1].text
    body = answers[-1].json()
    assert body["certificate"] is not None and body["order"]["payment_id"] == order.id.hex()
    assert body["applied"]["debit"] >= W and body["applied"]["credit"] >= W
    # A payment nobody has: every live committee member was asked and said so; naming the sender
    # makes the answer name its owners.
    unknown = SigningKey.generate()
    missing = Order.create(unknown, net.nid, recipient.public, 1, 0)
    resp = http.get(f"{gateway.api}/v1/payments/{missing.id.hex()}")
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert error["code"] == "unknown_payment"
    assert set(error["asked"]) == {p.peer_id for p in running_peers(net) if p is not gateway}
    resp = http.get(f"{gateway.api}/v1/payments/{missing.id.hex()}", params={"from": encode_address(unknown.public)})
    error = resp.json()["error"]
    assert resp.status_code == 404 and error["code"] == "unknown_payment"
    assert {o["peer_id"] for o in error["owners"]} == {o.hex() for o in net.ring.owners(unknown.public)}


# ---- item 7: frozen accounts ----------------------------------------------------------------------
async def _vote_requests(net: Net, sends: list[tuple[PeerEntry, Order]]) -> None:
    """Play a Byzantine gateway with the key of the committee member that does not run: send each
    owner the vote request chosen for it."""
    entry = next(p for p in net.peers if p.pid is None)
    key = keystore.load(net.devnet.peer_dir(entry.name) / "peer.key", net.devnet.password())
    transport = TcpTransport(key, net.nid)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.serve)
        for peer, order in sends:
            with trio.fail_after(10):
                peer_id = await transport.dial("127.0.0.1", peer.port)
            assert transport.send(peer_id, VoteRequest(order).encode())
        with trio.fail_after(10):
            while any(transport.queued(bytes.fromhex(p.peer_id)) for p, _ in sends):
                await trio.sleep(0.05)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()


def _frozen_sender(http: httpx.Client, net: Net) -> SigningKey:
    """A fresh, funded account whose four owners all run."""
    absent = {bytes.fromhex(p.peer_id) for p in net.peers if p.pid is None}
    for _ in range(200):
        key = SigningKey.generate()
        if not absent & set(net.ring.owners(key.public)):
            break
    funder = next(iter(net.keys.values()))
    order = Order.create(funder, net.nid, key.public, 1000, next_seq(http, net, funder.public))
    pay(http, running_peers(net)[0], order)
    return key


def _view(http: httpx.Client, peer: PeerEntry, account: bytes) -> dict[str, Any]:
    resp = http.get(f"{peer.api}/v1/accounts/{encode_address(account)}")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_split_lock_is_shown_counted_and_reported_by_the_auditor(net: Net, http: httpx.Client) -> None:
    sender = _frozen_sender(http, net)
    o1, o2, o3, o4 = owners(net, sender.public)
    a = Order.create(sender, net.nid, SigningKey.generate().public, 10, 0)
    b = Order.create(sender, net.nid, SigningKey.generate().public, 20, 0)
    await _vote_requests(net, [(o1, a), (o2, a), (o3, b), (o4, b)])
    wait_for(lambda: all((_view(http, p, sender.public)["lock"] or {}).get("payment_id") == o.id.hex()
                         for p, o in ((o1, a), (o2, a), (o3, b), (o4, b))), 10, "the four locks")
    lock = _view(http, o1, sender.public)["lock"]
    assert lock["seq"] == 0 and Order.decode(bytes.fromhex(lock["order"])) == a
    # Asked to vote for the other order, o1 refuses and keeps the pair; o2 gets a forgery of it.
    forged = Order(b.network, b.sender, b.recipient, b.amount, b.seq, b.memo, bytes(64))
    await _vote_requests(net, [(o1, b), (o2, forged)])
    evidence = wait_for(lambda: _view(http, o1, sender.public)["equivocation"], 10, "evidence at o1")
    assert evidence["seq"] == 0 and evidence["payment_ids"] == [a.id.hex(), b.id.hex()]
    pair = [Order.decode(bytes.fromhex(x)) for x in evidence["orders"]]
    assert pair == [a, b] and all(o.signature_valid() for o in pair)
    assert _view(http, o2, sender.public)["equivocation"] is None  # a forgery proves nothing
    metrics = http.get(f"{o1.api}/metrics").text
    assert "meshpay_accounts_equivocating 1.0" in metrics, metrics
    assert 'meshpay_equivocation_evidence_total{what="forged"} 1.0' in http.get(f"{o2.api}/metrics").text
    # The auditor sees the split and says so (the network itself is consistent: still OK).
    proc = subprocess.run([sys.executable, "-m", "devnet", "check", "--dir", str(net.devnet.root), "--json",
                           "--quiet-timeout", "5"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    frozen = [f for f in report["frozen"] if f["account"] == sender.public.hex()]
    assert len(frozen) == 1, report
    assert frozen[0]["seq"] == 0 and frozen[0]["locks"] == {a.id.hex(): sorted([o1.name, o2.name]),
                                                            b.id.hex(): sorted([o3.name, o4.name])}
    assert frozen[0]["evidence_at"] == [o1.name]
    assert any("frozen at seq 0" in note for note in report["notes"]), report["notes"]
