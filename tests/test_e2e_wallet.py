"""End to end: four real `peer run` processes from one genesis on 127.0.0.1 (N = 4, W = 3), the
wallet as a real process (`python -m wallet`) and as a library, owners killed and restarted, the
gateway stopped in the middle of a burst of payments, and offline receipts."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crypto import keystore
from crypto.address import decode_address
from crypto.messages import Certificate
from devnet import layout, processes
from devnet.layout import Devnet
from peer import genesis as genesis_file
from tests.wallet_support import (
    account_views,
    kill,
    restart,
    running_devnet,
    spawn,
    stop,
    tamper_vote,
    wait_until,
    wallet_proc,
)
from wallet import cli
from wallet.client import ClientError, PeerClient
from wallet.home import WalletHome
from wallet.payments import Account, Outcome

pytestmark = pytest.mark.slow
BURST = 30


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    # demo0-3 for the CLI scenarios, demo4.. as the burst's 30 senders
    with running_devnet(tmp_path_factory.mktemp("e2e") / "net", wallets=4 + BURST) as devnet:
        yield devnet


def demo_env(net: Devnet, peer: int) -> dict[str, str]:
    return {"MESHPAY_WALLET_DIR": str(net.wallet_dir()), "MESHPAY_PEER": net.peers[peer].api,
            "MESHPAY_WALLET_PASSWORD_FILE": str(net.password_file)}


def replicas_agree(net: Devnet, address: str) -> bool:
    views = account_views(net, address)
    return len({(v["balance"], v["next_seq"], v["credits"]) for v in views}) == 1


def test_new_wallets_pay_each_other_and_receipts_verify_offline(net: Devnet, tmp_path: Path) -> None:
    home, pw = tmp_path / "mine", tmp_path / "pw"
    pw.write_text("a fine password\n")
    mine = {"MESHPAY_WALLET_DIR": str(home), "MESHPAY_WALLET_PASSWORD_FILE": str(pw), "MESHPAY_PEER": net.peers[0].api}
    alice = wallet_proc("new", "alice", "--json", env=mine).json()["address"]
    bob = wallet_proc("new", "bob", "--json", env=mine).json()["address"]
    funded = wallet_proc("send", "-a", "demo0", "--to", alice, "--amount", "100", "--wait", "settled", "--json",
                         env=demo_env(net, 0))
    assert funded.code == 0, funded
    assert funded.json()["status"] == "settled" and funded.json()["verified"]
    # The new wallet has no genesis yet: it pins the peer's, and says so.
    paid = wallet_proc("send", "-a", "alice", "--to", bob, "--amount", "12.50", "--memo", "dinner",
                       "--wait", "settled", "--json", env=mine)
    assert paid.code == 0, paid
    assert "pinned the genesis" in paid.err and (home / "genesis.json").exists()
    pid = paid.json()["payment_id"]
    # Balances through the CLI on a different peer than the one that was the gateway.
    on_peer3 = {**mine, "MESHPAY_PEER": net.peers[3].api}
    assert wait_until(lambda: replicas_agree(net, bob), 10)
    bob_balance = wallet_proc("balance", "-a", "bob", "--json", env=on_peer3).json()
    alice_balance = wallet_proc("balance", "-a", "alice", "--json", env=on_peer3).json()
    assert (bob_balance["balance_text"], bob_balance["consistent"]) == ("12.50", True)
    assert (alice_balance["balance_text"], alice_balance["next_seq"]) == ("87.50", 1)
    human = wallet_proc("balance", "-a", "alice", env=on_peer3)
    assert human.out.startswith("87.50 ")
    # Receipt from yet another peer, verified with no network at all (the peer is a closed port).
    receipt = tmp_path / "receipt.json"
    exported = wallet_proc("receipt", pid, "-o", receipt, env={**mine, "MESHPAY_PEER": net.peers[1].api})
    assert exported.code == 0, exported
    offline = {"MESHPAY_PEER": "http://127.0.0.1:9"}
    ok = wallet_proc("verify", receipt, "--genesis", net.genesis_path, "--json", env=offline)
    assert ok.code == 0, ok
    assert (ok.json()["payment_id"], ok.json()["amount_text"], ok.json()["memo"]) == (pid, "12.50", "dinner")
    # One byte of one vote signature altered: the receipt no longer proves anything.
    doc = json.loads(receipt.read_text())
    forged = tamper_vote(Certificate.decode(bytes.fromhex(doc["certificate"])), index=1, byte=33)
    bad = tmp_path / "forged.json"
    bad.write_text(json.dumps({**doc, "certificate": forged.encode().hex()}))
    refused = wallet_proc("verify", bad, "--genesis", net.genesis_path, env=offline)
    assert refused.code == cli.EXIT_INVALID, refused
    assert "invalid signature" in refused.err


def test_owner_killed_payments_still_settle_and_it_catches_up(net: Devnet) -> None:
    victim = net.peers[3]
    a, b = net.wallets[1].address, net.wallets[2].address
    kill(net, victim)
    try:
        for i, (frm, to) in enumerate([("demo1", b), ("demo2", a), ("demo1", b), ("demo1", b)]):
            sent = wallet_proc("send", "-a", frm, "--to", to, "--amount", f"{i + 1}.25", "--wait", "settled",
                               "--timeout", "20", "--json", env=demo_env(net, 0))
            assert sent.code == 0, sent
            assert sent.json()["status"] == "settled"  # 3 live owners of each side = W
        seen = wallet_proc("balance", "-a", "demo1", "--json", env=demo_env(net, 1))
        assert seen.code == 0, seen
        doc = seen.json()
        # 1 + 3 + 4 = 8.25 + 0.75 sent out, 2.25 received
        assert doc["balance"] == layout.DEMO_BALANCE - 125 - 325 - 425 + 225
        assert (doc["answered"], doc["confirmed"], doc["consistent"]) == (3, True, False)
        assert "did not answer" in seen.err
    finally:
        restart(net, victim)
    # The restarted owner catches up to exactly the same account state as the others.
    for address in (a, b):
        assert wait_until(lambda address=address: replicas_agree(net, address), 30), account_views(net, address)
    views = account_views(net, a)
    assert {v["next_seq"] for v in views} == {3} and {v["credits"] for v in views} == {1}


def _send_in_thread(net: Devnet, name: str, to: bytes, gateway: str, results: dict[str, object]) -> None:
    home = WalletHome(net.wallet_dir())
    genesis = home.pinned_genesis()
    assert genesis is not None
    entry = next(w for w in net.wallets if w.name == name)
    try:
        with PeerClient(gateway) as client:
            results[name] = Account(home, genesis, client, entry.address).send(
                to, 100, "burst", wait="certified", timeout=15.0,
                unlock=lambda: keystore.load(Path(entry.key_file), net.password()))
    except ClientError as exc:  # the gateway went away under this payment: expected for some
        results[name] = exc


def test_gateway_sigterm_during_burst_loses_no_certified_payment(net: Devnet) -> None:
    gateway = net.peers[1]
    home = WalletHome(net.wallet_dir())
    if home.pinned_genesis() is None:
        home.pin_genesis(genesis_file.load(net.genesis_path))
    # Restart the gateway under a Popen this test holds, to read its exit status.
    stop(net, gateway)
    proc = spawn(net, gateway)
    try:
        processes.wait_converged(net, timeout=40)
        recipient = net.wallets[3].address
        senders = [w.name for w in net.wallets[4:4 + BURST]]
        results: dict[str, object] = {}
        threads = [threading.Thread(target=_send_in_thread, args=(net, name, decode_address(recipient),
                                                                 gateway.api, results)) for name in senders]
        for t in threads:
            t.start()
        # SIGTERM once the first payments are certified: the rest are in flight.
        assert wait_until(lambda: sum(isinstance(r, Outcome) for r in results.values()) >= 3, 30, 0.01), results
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, "the gateway did not exit 0 on SIGTERM"
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        gateway.pid = None
        net.save()
    certified = {name: r for name, r in results.items() if isinstance(r, Outcome)}
    assert len(certified) >= 3 and all(o.status in ("certified", "settled") for o in certified.values())
    restart(net, gateway)
    # Every payment reported certified is stored and applied everywhere, the gateway included.
    for name, outcome in certified.items():
        pid = outcome.order.id.hex()
        sender = next(w.address for w in net.wallets if w.name == name)
        for peer in net.peers:
            doc = _get(f"{peer.api}/v1/payments/{pid}")
            assert doc["status"] in ("certified", "settled") and doc["certificate"] is not None, (peer.name, doc)
        assert wait_until(lambda sender=sender: {v["next_seq"] for v in account_views(net, sender)} == {1}, 30), \
            account_views(net, sender)
    # Nothing else was lost or invented: the recipient's credits equal the senders whose seq 0 was used.
    def settled_everywhere() -> bool:
        used = sum(account_views(net, next(w.address for w in net.wallets if w.name == n))[0]["next_seq"]
                   for n in senders)
        views = account_views(net, recipient)
        return replicas_agree(net, recipient) and views[0]["credits"] == used and \
            views[0]["balance"] == layout.DEMO_BALANCE + 100 * used
    assert wait_until(settled_everywhere, 30), account_views(net, recipient)


def _get(url: str) -> dict[str, Any]:
    return httpx.get(url, timeout=5.0).json()
