"""The `wallet` CLI: every error with its message and exit status, key management round trips and
--json outputs. Commands run in-process (`wallet.cli.run`, CliRunner isolation) against a real
4-peer devnet on 127.0.0.1 (N = 4 owners, W = 3), started once for the module and always stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crypto import keystore
from crypto.account_view import AccountView
from crypto.address import decode_address
from crypto.address import encode_address as addr_of
from crypto.keys import SigningKey
from crypto.messages import Certificate
from devnet import layout
from devnet.layout import Devnet
from tests.wallet_support import (
    REPO,
    LyingProxy,
    demo_env,
    kill,
    restart,
    running_devnet,
    tamper_vote,
    wallet,
    wallet_proc,
)
from wallet import cli
from wallet.client import PeerClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with running_devnet(tmp_path_factory.mktemp("devnet") / "net", wallets=6) as devnet:
        yield devnet


@pytest.fixture
def env(net: Devnet) -> dict[str, str]:
    """The devnet's demo wallets, through peer0, with the devnet password."""
    return demo_env(net)


def addr(net: Devnet, i: int) -> str:
    return net.wallets[i].address


def typo(address: str) -> str:
    """The address with one character of its data part changed to another valid bech32 character."""
    i = 20
    swap = "q" if address[i] != "q" else "p"
    return address[:i] + swap + address[i + 1:]


# ---- keys (no network) ------------------------------------------------------------------------------
def test_new_list_address_round_trip(tmp_path: Path) -> None:
    home = tmp_path / "w"
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    made = wallet("new", "alice", "--wallet-dir", home, "--password-file", pw, "--json")
    assert made.code == 0, made
    doc = made.json()
    assert doc["name"] == "alice" and doc["address"].startswith("mp1") and len(doc["address"]) == 61
    assert "s3cret" not in made.out + made.err  # the password is never printed
    assert (home / "alice.key").stat().st_mode & 0o077 == 0
    assert wallet("new", "bob", "--wallet-dir", home, "--password-file", pw).code == 0
    listed = wallet("list", "--wallet-dir", home, "--json")
    assert [a["name"] for a in listed.json()["accounts"]] == ["alice", "bob"]
    assert listed.json()["accounts"][0]["address"] == doc["address"]
    assert wallet("address", "alice", "--wallet-dir", home).out.strip() == doc["address"]
    assert wallet("address", "--account", "alice", "--wallet-dir", home, "--json").json()["address"] == doc["address"]
    human = wallet("list", "--wallet-dir", home)
    assert "alice" in human.out and doc["address"] in human.out
    # Two accounts: a command needing one without --account says so (usage, exit 2).
    ambiguous = wallet("address", "--wallet-dir", home)
    assert ambiguous.code == cli.EXIT_USAGE and "--account" in ambiguous.err
    again = wallet("new", "alice", "--wallet-dir", home, "--password-file", pw)
    assert again.code == cli.EXIT_USAGE and "already exists" in again.err
    bad_name = wallet("new", "../evil", "--wallet-dir", home, "--password-file", pw)
    assert bad_name.code == cli.EXIT_USAGE and "not allowed" in bad_name.err


def test_password_from_environment_and_missing_password(tmp_path: Path) -> None:
    home = tmp_path / "w"
    made = wallet("new", "carol", "--wallet-dir", home, env={"MESHPAY_WALLET_PASSWORD": "from env"})
    assert made.code == 0, made
    exported = wallet("export", "carol", "-o", tmp_path / "c.key", "--wallet-dir", home,
                      env={"MESHPAY_WALLET_PASSWORD": "from env"})
    assert exported.code == 0, exported
    none = wallet("new", "dave", "--wallet-dir", home)  # no file, no env, no terminal
    assert none.code == cli.EXIT_USAGE and "--password-file" in none.err


def test_export_import_round_trip_and_wrong_passwords(tmp_path: Path) -> None:
    home, other = tmp_path / "w", tmp_path / "other"
    pw, new_pw, wrong = tmp_path / "pw", tmp_path / "new", tmp_path / "wrong"
    pw.write_text("first\n")
    new_pw.write_text("second\n")
    wrong.write_text("nope\n")
    address = wallet("new", "erin", "--wallet-dir", home, "--password-file", pw, "--json").json()["address"]
    out = tmp_path / "erin-export.key"
    bad = wallet("export", "erin", "-o", out, "--wallet-dir", home, "--password-file", wrong, "--json")
    assert bad.code == cli.EXIT_PASSWORD, bad
    assert "wrong password" in bad.err and bad.json()["error"]["kind"] == "wrong_password"
    assert not out.exists()
    done = wallet("export", "erin", "-o", out, "--wallet-dir", home, "--password-file", pw,
                  "--new-password-file", new_pw, "--json")
    assert done.code == 0, done
    assert done.json()["address"] == address and out.stat().st_mode & 0o077 == 0
    # The export is sealed under the new password: the old one no longer opens it.
    refused = wallet("import", out, "--name", "erin2", "--wallet-dir", other, "--password-file", pw)
    assert refused.code == cli.EXIT_PASSWORD and "wrong password" in refused.err
    assert not (other / "erin2.key").exists()
    imported = wallet("import", out, "--name", "erin2", "--wallet-dir", other, "--password-file", new_pw, "--json")
    assert imported.code == 0, imported
    assert imported.json() == {"name": "erin2", "address": address, "key_file": str(other / "erin2.key")}
    assert wallet("address", "--wallet-dir", other).out.strip() == address
    # The same key under another name is refused, naming the account that holds it (issue 15.12).
    again = wallet("import", out, "--wallet-dir", other, "--password-file", new_pw, "--json")
    assert again.code == cli.EXIT_USAGE, again
    assert "already in the wallet as account 'erin2'" in again.err and again.json()["error"]["account"] == "erin2"
    assert not (other / "erin.key").exists()
    # The keystore's own name is the default; a name already taken (by another key) is refused.
    assert wallet("new", "erin", "--wallet-dir", other, "--password-file", pw).code == 0
    stranger = tmp_path / "stranger.key"
    keystore.save(stranger, SigningKey.generate(), "first", name="erin", scrypt_n=keystore.MIN_SCRYPT_N)
    twice = wallet("import", stranger, "--wallet-dir", other, "--password-file", pw)
    assert twice.code == cli.EXIT_USAGE and "already exists" in twice.err
    garbage = tmp_path / "garbage.key"
    garbage.write_text("{}")
    assert wallet("import", garbage, "--wallet-dir", other, "--password-file", pw).code == cli.EXIT_USAGE


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert wallet("send", "--bogus").code == cli.EXIT_USAGE
    assert wallet("show", "not-a-payment-id", "--wallet-dir", tmp_path).code == cli.EXIT_USAGE
    no_genesis = wallet("verify", tmp_path / "r.json", "--wallet-dir", tmp_path)
    assert no_genesis.code == cli.EXIT_USAGE and "--genesis" in no_genesis.err


# ---- input errors ----------------------------------------------------------------------------------
def test_bad_address_one_character_typo(net: Devnet, env: dict[str, str]) -> None:
    wrong = typo(addr(net, 1))
    sent = wallet("send", "-a", "demo0", "--to", wrong, "--amount", "1", "--json", env=env)
    assert sent.code == cli.EXIT_ADDRESS, sent
    assert "checksum" in sent.err and wrong in sent.err
    assert sent.json()["error"]["kind"] == "bad_address"
    looked = wallet("balance", wrong, env=env)
    assert looked.code == cli.EXIT_ADDRESS and "checksum" in looked.err
    self_pay = wallet("send", "-a", "demo0", "--to", addr(net, 0), "--amount", "1", env=env)
    assert self_pay.code == cli.EXIT_ADDRESS and "itself" in self_pay.err


@pytest.mark.parametrize(("amount", "reason", "words"), [
    ("abc", "garbage", "not a decimal number"), ("1,50", "garbage", "thousands separators"),
    ("1e3", "garbage", "not a decimal number"), ("0", "zero", "zero"), ("0.00", "zero", "zero"),
    ("-5", "negative", "negative"), ("1.001", "too_many_decimals", "at most 2 decimals"),
    ("92233720368547758.08", "too_large", "too large"),
])
def test_bad_amount(net: Devnet, env: dict[str, str], amount: str, reason: str, words: str) -> None:
    # --genesis gives the decimals; the amount is refused before anything is signed or sent.
    result = wallet("send", "-a", "demo0", "--to", addr(net, 1), f"--amount={amount}", "--genesis",
                    net.genesis_path, "--peer", "http://127.0.0.1:9", "--json", env=env)
    assert result.code == cli.EXIT_AMOUNT, result
    assert words in result.err
    assert result.json()["error"] == {**result.json()["error"], "kind": "bad_amount", "reason": reason}


# ---- with the network -------------------------------------------------------------------------------
def test_send_balance_history_show_receipt_json(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    before = wallet("balance", "-a", "demo1", "--json", env=env).json()
    sent = wallet("send", "-a", "demo0", "--to", addr(net, 1), "--amount", "12.50", "--memo", "lunch", "--json", env=env)
    assert sent.code == 0, sent
    doc = sent.json()
    assert doc["status"] in ("certified", "settled") and doc["verified"] is True
    assert doc["amount"] == 1250 and doc["amount_text"] == "12.50" and doc["memo"] == "lunch"
    assert doc["from"] == addr(net, 0) and doc["to"] == addr(net, 1) and len(doc["votes"]) == 3
    pid = doc["payment_id"]
    # Read from another peer than the gateway: the credit is there, all 4 owners agree.
    other = {**env, "MESHPAY_PEER": net.peers[2].api}

    def credited() -> bool:
        now = wallet("balance", "-a", "demo1", "--json", env=other).json()
        return now["balance"] == before["balance"] + 1250 and now["consistent"]

    deadline = time.monotonic() + 10
    while not credited() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert credited()
    human = wallet("balance", "-a", "demo1", env=other)
    assert human.code == 0 and f"{(before['balance'] + 1250) // 100}.50" in human.out
    hist = wallet("history", "-a", "demo0", "--json", env=other)
    assert hist.code == 0, hist
    assert any(e["payment_id"] == pid and e["direction"] == "out" and e["amount_text"] == "12.50"
               for e in hist.json()["entries"])
    assert "12.50" in wallet("history", "-a", "demo0", env=other).out
    shown = wallet("show", pid, "--json", env=other)
    assert shown.code == 0 and shown.json()["status"] in ("certified", "settled") and shown.json()["verified"]
    receipt = tmp_path / "r.json"
    written = wallet("receipt", pid, "-o", receipt, "--json", env=other)
    assert written.code == 0, written
    checked = wallet("verify", receipt, "--genesis", net.genesis_path, "--json")
    assert checked.code == 0, checked
    assert checked.json()["valid"] is True and checked.json()["payment_id"] == pid
    assert checked.json()["amount_text"] == "12.50"


def test_invalid_receipts_exit_11(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    sent = wallet("send", "-a", "demo0", "--to", addr(net, 2), "--amount", "1", "--json", env=env)
    assert sent.code == 0, sent
    receipt = tmp_path / "r.json"
    assert wallet("receipt", sent.json()["payment_id"], "-o", receipt, env=env).code == 0
    doc = json.loads(receipt.read_text())
    cert = Certificate.decode(bytes.fromhex(doc["certificate"]))
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**doc, "certificate": tamper_vote(cert).encode().hex()}))
    bad = wallet("verify", forged, "--genesis", net.genesis_path, "--json")
    assert bad.code == cli.EXIT_INVALID, bad
    assert "invalid signature" in bad.err and bad.json()["error"]["kind"] == "verification_failed"
    lied = tmp_path / "lied.json"
    lied.write_text(json.dumps({**doc, "order": {**doc["order"], "amount": 999999}}))
    assert wallet("verify", lied, "--genesis", net.genesis_path).code == cli.EXIT_INVALID
    short = tmp_path / "short.json"
    short.write_text(json.dumps({**doc, "certificate": Certificate(cert.order, cert.votes[:2]).encode().hex()}))
    too_few = wallet("verify", short, "--genesis", net.genesis_path)
    assert too_few.code == cli.EXIT_INVALID and "2 votes" in too_few.err
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00garbage")
    assert wallet("verify", junk, "--genesis", net.genesis_path).code == cli.EXIT_INVALID
    # Against another network's genesis the genuine receipt proves nothing.
    other = layout.create(tmp_path / "other", peers=4, wallets=0)
    wrong_net = wallet("verify", receipt, "--genesis", other.genesis_path)
    assert wrong_net.code == cli.EXIT_INVALID and "network" in wrong_net.err
    assert wallet("verify", receipt, "--genesis", net.genesis_path).code == 0


def test_insufficient_funds(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "poor"
    shutil.copy(net.genesis_path, home.mkdir() or home / "genesis.json")
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    assert wallet("new", "poor", "--wallet-dir", home, "--password-file", pw).code == 0
    poor_env = {**env, "MESHPAY_WALLET_DIR": str(home), "MESHPAY_WALLET_PASSWORD_FILE": str(pw)}
    broke = wallet("send", "--to", addr(net, 1), "--amount", "1.00", "--json", env=poor_env)
    assert broke.code == cli.EXIT_FUNDS, broke
    assert "insufficient funds" in broke.err and "0.00" in broke.err
    assert broke.json()["error"]["kind"] == "insufficient_funds"
    rich = wallet("send", "-a", "demo3", "--to", addr(net, 1), "--amount", "1000000000", env=env)
    assert rich.code == cli.EXIT_FUNDS and "insufficient funds" in rich.err


def test_wrong_password_on_send(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the devnet password\n")
    result = wallet("send", "-a", "demo3", "--to", addr(net, 1), "--amount", "1", "--password-file", wrong, env=env)
    assert result.code == cli.EXIT_PASSWORD, result
    assert "wrong password" in result.err and "not the devnet password" not in result.out + result.err
    # Nothing was signed, so nothing is pending: the right password then just works.
    assert wallet("send", "-a", "demo3", "--to", addr(net, 1), "--amount", "1", env=env).code == 0


def test_peer_unreachable_names_it_and_suggests_another(net: Devnet, env: dict[str, str]) -> None:
    assert wallet("balance", "-a", "demo0", env=env).code == 0  # learns the peers list
    closed = "http://127.0.0.1:9"  # discard port: nothing listens on it
    result = wallet("balance", "-a", "demo0", "--peer", closed, "--json", env=env)
    assert result.code == cli.EXIT_UNREACHABLE, result
    assert closed in result.err and "try --peer http://127.0.0.1:" in result.err
    error = result.json()["error"]
    assert error["url"] == closed and error["suggestion"] in {p.api for p in net.peers}
    sent = wallet("send", "-a", "demo0", "--to", addr(net, 1), "--amount", "1", "--peer", closed, env=env)
    assert sent.code == cli.EXIT_UNREACHABLE and closed in sent.err and "try --peer" in sent.err


def test_network_mismatch_exit_12(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    other = layout.create(tmp_path / "other", peers=4, wallets=0)
    result = wallet("balance", "-a", "demo0", "--genesis", other.genesis_path, env=env)
    assert result.code == cli.EXIT_NETWORK, result
    assert "refusing" in result.err and other.network_id[:16] in result.err


def test_unknown_payment_exit_10(net: Devnet, env: dict[str, str]) -> None:
    result = wallet("show", "ab" * 32, "-a", "demo0", "--json", env=env)
    assert result.code == cli.EXIT_REFUSED, result
    assert "no peer asked knows" in result.err and result.json()["error"]["code"] == "unknown_payment"


def test_a_lying_gateway_is_not_counted_and_a_misdirected_owner_is_reported(net: Devnet,
                                                                             env: dict[str, str]) -> None:
    """A gateway inflates the balance it reports and points one owner's address at another peer.
    Its own answer is not signed over what it says, so it does not count; the other owners' signed
    answers decide, and the owner the wallet could not read is reported (not a majority of one)."""
    with LyingProxy(net.peers[1].api, inflate=500_00, apis={net.peers[3].api: net.peers[0].api}) as liar:
        result = wallet("balance", "-a", "demo5", "--peer", liar.url, "--json", env=env)
    assert result.code == 0, result
    doc = result.json()
    assert doc["balance"] == layout.DEMO_BALANCE
    assert sorted(v["balance"] for v in doc["views"]) == [layout.DEMO_BALANCE] * 3
    assert doc["consistent"] is False and doc["agree"] == 3 and doc["confirmed"] is True
    assert "another peer" in doc["errors"][net.peers[3].peer_id], doc["errors"]
    assert f"owner {net.peers[3].peer_id[:12]} did not answer" in result.err and "1000500.00" not in result.err


def test_sequence_recovered_after_lost_state_and_from_a_second_device(net: Devnet, env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    first = wallet("send", "-a", "demo5", "--to", addr(net, 1), "--amount", "1", "--json", env=env)
    assert first.code == 0, first
    shutil.rmtree(net.wallet_dir() / "state")  # the local state is lost
    second = wallet("send", "-a", "demo5", "--to", addr(net, 1), "--amount", "1", "--json", env=env)
    assert second.code == 0, second
    assert second.json()["seq"] == first.json()["seq"] + 1
    assert any("recovered next sequence number" in n for n in second.json()["notes"])
    # A second device: the same key in another wallet directory, which has never sent.
    device = tmp_path / "device2"
    device.mkdir()
    shutil.copy(net.wallet_dir() / "demo5.key", device / "demo5.key")
    third = wallet("send", "--to", addr(net, 2), "--amount", "1", "--json",
                   env={**env, "MESHPAY_WALLET_DIR": str(device)})
    assert third.code == 0, third
    assert third.json()["seq"] == first.json()["seq"] + 2


def test_timeout_then_conflict_then_idempotent_retry(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    # Two of the four owners down: no quorum (W = 3), so a payment can only time out.
    down = net.peers[2:]
    for entry in down:
        kill(net, entry)
    try:
        timed_out = wallet("send", "-a", "demo2", "--to", addr(net, 1), "--amount", "3", "--timeout", "1.5",
                           "--json", env=env)
        assert timed_out.code == cli.EXIT_TIMEOUT, timed_out
        pid = timed_out.json()["error"]["payment_id"]
        assert len(pid) == 64 and pid in timed_out.err and f"wallet show {pid}" in timed_out.err
        # A different payment now would compete for the same sequence number: refused, naming it.
        other = wallet("send", "-a", "demo2", "--to", addr(net, 1), "--amount", "4", "--json", env=env)
        assert other.code == cli.EXIT_PENDING, other
        assert other.json()["error"]["payment_id"] == pid and pid in other.err
        assert "Repeat that same send" in other.err
        shown = wallet("show", pid, "-a", "demo2", "--json", env=env)
        assert shown.code == 0 and shown.json()["status"] == "pending" and shown.json()["verified"] is False
        # A second device with the same key and no local state sees the owners' locks on that
        # payment at its next sequence number, and refuses too, naming it.
        device = tmp_path / "device2"
        device.mkdir()
        shutil.copy(net.wallet_dir() / "demo2.key", device / "demo2.key")
        elsewhere = wallet("send", "--to", addr(net, 3), "--amount", "5", "--json",
                           env={**env, "MESHPAY_WALLET_DIR": str(device)})
        assert elsewhere.code == cli.EXIT_PENDING, elsewhere
        assert elsewhere.json()["error"]["payment_id"] == pid and "another device" in elsewhere.err
    finally:
        restart(net, *down)
    # The retry re-submits the very same signed order (same payment id), which now certifies.
    retry = wallet("send", "-a", "demo2", "--to", addr(net, 1), "--amount", "3", "--timeout", "25", "--json", env=env)
    assert retry.code == 0, retry
    assert retry.json()["payment_id"] == pid and retry.json()["resubmitted"] is True
    after = wallet("send", "-a", "demo2", "--to", addr(net, 1), "--amount", "4", "--json", env=env)
    assert after.code == 0, after
    assert after.json()["seq"] == retry.json()["seq"] + 1 and after.json()["resubmitted"] is False


def test_send_without_waiting_then_show_records_it(net: Devnet, env: dict[str, str]) -> None:
    sent = wallet("send", "-a", "demo1", "--to", addr(net, 0), "--amount", "0.07", "--wait", "none", "--json", env=env)
    assert sent.code == 0, sent
    assert sent.json()["status"] == "pending" and sent.json()["verified"] is False
    pid = sent.json()["payment_id"]
    deadline = time.monotonic() + 10
    while (shown := wallet("show", pid, "-a", "demo1", "--json", env=env)).json()["status"] == "pending":
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    assert shown.json()["status"] in ("certified", "settled") and shown.json()["verified"] is True
    # `show` recorded the certificate locally: the next, different, payment is not blocked by it.
    nxt = wallet("send", "-a", "demo1", "--to", addr(net, 0), "--amount", "0.08", "--json", env=env)
    assert nxt.code == 0, nxt
    assert nxt.json()["seq"] == sent.json()["seq"] + 1 and not nxt.json()["notes"]


def _signed_view(key: SigningKey, account: str, network_id: bytes, request: httpx.Request, balance: int,
                 next_seq: int = 2) -> dict:
    """An owner's account answer, signed over the request's challenge as peer/api.py signs it."""
    challenge = bytes.fromhex(request.url.params["challenge"])
    view = AccountView(key.public, decode_address(account), balance, next_seq, 1, 3, None, None, None, challenge)
    return {"address": account, "peer_id": key.public.hex(), "balance": balance, "next_seq": next_seq,
            "credits": 1, "history_length": 3, "pending": None, "owners": [],
            "attestation": {"challenge": challenge.hex(), "signature": view.sign(key, network_id).hex()}}


def test_reads_follow_421_and_ignore_impostors() -> None:
    """A peer that does not own the account answers 421 with the owners; the wallet asks them, and an
    answer from a URL that claims to be another peer than the genesis ring says is not counted."""
    network_id = bytes([7]) * 32
    keys = [SigningKey.from_seed(bytes([i]) * 32) for i in range(1, 5)]
    genesis_owners = [k.public for k in keys]
    account = addr_of(SigningKey.from_seed(bytes([9]) * 32).public)

    def handler(request: httpx.Request) -> httpx.Response:
        port = request.url.port
        if port == 8000:  # the chosen peer: not an owner
            owners = [{"peer_id": p.hex(), "api": f"http://o{i}:{8001 + i}", "state": "alive"}
                      for i, p in enumerate(genesis_owners)]
            return httpx.Response(421, json={"error": {"code": "not_owner", "message": "ask", "owners": owners}})
        index = port - 8001
        if index == 3:  # claims to be owner 0
            return httpx.Response(200, json=_signed_view(keys[0], account, network_id, request, 999))
        return httpx.Response(200, json=_signed_view(keys[index], account, network_id, request, 500))

    client = PeerClient("http://gw:8000", transport=httpx.MockTransport(handler))
    reading = client.read_account(account, tuple(genesis_owners), 3, network_id)
    assert sorted(v.balance for v in reading.answered) == [500, 500, 500]
    assert genesis_owners[3] in reading.errors and "another peer" in reading.errors[genesis_owners[3]]
    assert reading.agreed()[1] == 3 and reading.confirmed and not reading.consistent
    assert reading.next_seq(2) == 2


def test_a_gateway_cannot_answer_in_the_owners_place() -> None:
    """A Byzantine gateway lists itself as every owner and answers for them: unsigned answers, answers
    it signed with its own key, and real owners' answers replayed from an earlier challenge all count
    for nothing. Only the one owner whose own signature covers this request's challenge counts."""
    network_id = bytes([7]) * 32
    keys = [SigningKey.from_seed(bytes([i]) * 32) for i in range(1, 5)]
    owners = tuple(k.public for k in keys)
    account = addr_of(SigningKey.from_seed(bytes([9]) * 32).public)
    gateway = SigningKey.from_seed(bytes([42]) * 32)
    old: dict[str, dict] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8000:
            doc = _signed_view(gateway, account, network_id, request, 5, next_seq=9)
            doc["owners"] = [{"peer_id": p.hex(), "api": f"http://gw:{8001 + i}", "state": "alive"}
                             for i, p in enumerate(owners)]
            return httpx.Response(200, json=doc)
        index = request.url.port - 8001
        if index == 0:  # unsigned, claiming seq 9 is used
            doc = _signed_view(keys[0], account, network_id, request, 5, next_seq=9)
            del doc["attestation"]
        elif index == 1:  # signed by the gateway's key in owner 1's name
            doc = _signed_view(gateway, account, network_id, request, 5, next_seq=9)
            doc["peer_id"] = owners[1].hex()
        elif index == 2:  # owner 2's real signature, but over an earlier challenge
            doc = old.setdefault("2", _signed_view(keys[2], account, network_id, request, 5, next_seq=9))
        else:  # the honest owner
            doc = _signed_view(keys[3], account, network_id, request, 100, next_seq=0)
        return httpx.Response(200, json=doc)

    client = PeerClient("http://gw:8000", transport=httpx.MockTransport(handler))
    client.read_account(account, owners, 3, network_id)  # owner 2's answer to this one is replayed next
    reading = client.read_account(account, owners, 3, network_id)
    assert [v.peer_id for v in reading.answered] == [owners[3]]
    assert reading.answered[0].next_seq == 0 and reading.next_seq(2) is None
    assert "not signed for this request" in reading.errors[owners[0]]
    assert "not signed by the owner" in reading.errors[owners[1]]
    assert "not signed for this request" in reading.errors[owners[2]]


def test_subprocess_exit_status_and_streams(net: Devnet, env: dict[str, str]) -> None:
    # The real entry point: errors on stderr, the JSON error on stdout, the documented status.
    result = wallet_proc("send", "-a", "demo0", "--to", typo(addr(net, 1)), "--amount", "1", "--json", env=env)
    assert result.code == cli.EXIT_ADDRESS
    assert result.err.startswith("error: ") and json.loads(result.out)["error"]["exit_status"] == cli.EXIT_ADDRESS


# ---- issue 15 ------------------------------------------------------------------------------------
def test_recipient_by_account_name_with_environment_only(net: Devnet, env: dict[str, str]) -> None:
    """Item 5: `wallet send -a demo0 --to demo1 --amount 12.50` with MESHPAY_WALLET_DIR,
    MESHPAY_WALLET_PASSWORD_FILE and MESHPAY_PEER set, as a real process."""
    sent = wallet_proc("send", "-a", "demo0", "--to", "demo1", "--amount", "12.50", "--json", env=env)
    assert sent.code == 0, sent
    assert sent.json()["to"] == addr(net, 1) and sent.json()["to_name"] == "demo1"
    unknown = wallet("send", "-a", "demo0", "--to", "nobody", "--amount", "1", env=env)
    assert unknown.code == cli.EXIT_ADDRESS and "not the name of an account" in unknown.err


def test_show_asks_the_network_first(net: Devnet, env: dict[str, str]) -> None:
    """Item 9: the sender's own settled payment is shown settled, not `certified` from the receipt."""
    sent = wallet("send", "-a", "demo3", "--to", addr(net, 2), "--amount", "0.50", "--wait", "settled", "--json",
                  env=env)
    assert sent.code == 0, sent
    shown = wallet("show", sent.json()["payment_id"], "-a", "demo3", "--json", env=env)
    assert shown.code == 0, shown
    assert shown.json()["status"] == "settled" and shown.json()["source"].startswith("http"), shown.json()


def test_verify_checks_every_readable_field(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    """Item 10: `amount_text` edited to 9999.99 (or any field the format lacks) makes it invalid."""
    sent = wallet("send", "-a", "demo3", "--to", addr(net, 2), "--amount", "1.25", "--json", env=env)
    assert sent.code == 0, sent
    receipt = tmp_path / "r.json"
    assert wallet("receipt", sent.json()["payment_id"], "-o", receipt, "-a", "demo3", env=env).code == 0
    doc = json.loads(receipt.read_text())
    for name, edited in [("amount_text", {**doc, "order": {**doc["order"], "amount_text": "9999.99"}}),
                         ("note", {**doc, "order": {**doc["order"], "note": "paid in full"}}),
                         ("extra", {**doc, "extra": "x"}),
                         ("seq", {**doc, "order": {**doc["order"], "seq": True if doc["order"]["seq"] == 1 else 1}})]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(edited))
        result = wallet("verify", path, "--genesis", net.genesis_path)
        assert result.code == cli.EXIT_INVALID, (name, result)
    assert wallet("verify", receipt, "--genesis", net.genesis_path).code == 0


def test_recreated_network_mismatch_offers_the_fix(net: Devnet, env: dict[str, str], tmp_path: Path) -> None:
    """Item 8: a wallet pinned to another network's genesis says both networks' names and ids and
    how to trust the new one; `wallet network trust` does it."""
    home = tmp_path / "w"
    shutil.copytree(net.wallet_dir(), home)
    other = layout.create(tmp_path / "other", peers=4, wallets=0)
    shutil.copy(other.genesis_path, home / "genesis.json")  # pinned to the "old" devnet
    mine = {**env, "MESHPAY_WALLET_DIR": str(home)}
    refused = wallet("balance", "-a", "demo0", "--json", env=mine)
    assert refused.code == cli.EXIT_NETWORK, refused
    for text in (net.network_id[:16], other.network_id[:16], "wallet network trust --genesis"):
        assert text in refused.err, refused.err
    trusted = wallet("network", "trust", "--genesis", net.genesis_path, "--json", env=mine)
    assert trusted.code == 0, trusted
    assert trusted.json()["network_id"] == net.network_id and trusted.json()["previous"]["network_id"] == other.network_id
    assert wallet("balance", "-a", "demo0", env=mine).code == 0
    shutil.copy(other.genesis_path, home / "genesis.json")
    assert wallet("network", "trust", "--from-peer", env=mine).code == 0
    assert wallet("network", "show", "--json", env=mine).json()["network_id"] == net.network_id


def test_peer_pointed_at_a_p2p_port(net: Devnet, env: dict[str, str]) -> None:
    """Item 13: the P2P port is named as such, with that peer's API; the hint never names the
    peer the user passed."""
    assert wallet("balance", "-a", "demo0", env=env).code == 0  # learns the peers
    p2p = f"http://127.0.0.1:{net.peers[1].port}"
    result = wallet("balance", "-a", "demo0", "--peer", p2p, "--json", env=env)
    assert result.code == cli.EXIT_UNREACHABLE, result
    assert "not an HTTP API port" in result.err and "P2P port" in result.err
    assert result.json()["error"]["suggestion"] == net.peers[1].api
    # The remembered list holds the very peer the user passed, spelled differently: never suggested.
    (net.wallet_dir() / "peers.json").write_text(json.dumps({"peers": ["http://127.0.0.1:9", net.peers[2].api]}))
    same = wallet("balance", "-a", "demo0", "--peer", "http://localhost:9/", "--json", env=env)
    assert same.code == cli.EXIT_UNREACHABLE, same
    assert same.json()["error"]["suggestion"] == net.peers[2].api, same


def test_sign_prints_the_order_for_curl(net: Devnet, env: dict[str, str]) -> None:
    """Item 16: `wallet sign` prints a POST /v1/payments body; posting it with plain HTTP pays, and
    the wallet's pending order is that very order (a repeated send completes it, not a new one)."""
    signed = wallet("sign", "-a", "demo4", "--to", "demo5", "--amount", "2.00", "--json", env=env)
    assert signed.code == 0, signed
    doc = signed.json()
    assert doc["status"] == "signed" and doc["request"]["order"] == doc["order_cbor"] and "curl -s -X POST" in doc["curl"]
    posted = httpx.post(f"{net.peers[0].api}/v1/payments", json=doc["request"], timeout=40)
    assert posted.status_code == 200 and posted.json()["payment_id"] == doc["payment_id"], posted.text
    again = wallet("send", "-a", "demo4", "--to", "demo5", "--amount", "2.00", "--json", env=env)
    assert again.code == 0 and again.json()["payment_id"] == doc["payment_id"] and again.json()["resubmitted"]
    dry = wallet("send", "-a", "demo4", "--to", "demo5", "--amount", "3", "--dry-run", "--json", env=env)
    assert dry.code == 0 and dry.json()["status"] == "signed" and dry.json()["seq"] == doc["seq"] + 1


def test_python_client_example_in_the_docs_runs(net: Devnet, env: dict[str, str]) -> None:
    """Item 16: docs/wallet.md's scripting example, run as is in a fresh interpreter."""
    text = (REPO / "docs" / "wallet.md").read_text()
    block = text.split("<!-- example: python-client -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    full = {k: v for k, v in os.environ.items() if not k.startswith("MESHPAY_")}
    full.update(env, RECIPIENT=addr(net, 5))
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, env=full, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("demo0: ") and "settled" in done.stdout.splitlines()[-1], done.stdout


def test_an_owners_signed_ids_count_only_in_their_one_spelling() -> None:
    """Found by a review of the signed answers: ids are signed as bytes, but the wallet compares them
    as text, and `bytes.fromhex` reads "AB" and "ab" alike. A gateway that passed the owners' signed
    answers through with the applied payment's id upper-cased made every owner seem to have applied
    *another* payment, so the wallet dropped a paid order and signed the next seq. Only the one
    canonical spelling counts now."""
    network_id = bytes([7]) * 32
    key = SigningKey.from_seed(bytes([1]) * 32)
    account = addr_of(SigningKey.from_seed(bytes([9]) * 32).public)
    paid, locked = bytes([0xAB]) * 32, bytes([0xCD]) * 32

    def answer(request: httpx.Request, spell) -> httpx.Response:
        challenge = bytes.fromhex(request.url.params["challenge"])
        view = AccountView(key.public, decode_address(account), 5, 3, 1, 3, (3, locked), 2, paid, challenge)
        return httpx.Response(200, json={
            "address": account, "peer_id": key.public.hex(), "balance": 5, "next_seq": 3, "credits": 1,
            "history_length": 3, "pending": {"seq": 3, "payment_id": spell(locked.hex())},
            "applied_at": {"seq": 2, "payment_id": spell(paid.hex())},
            "owners": [{"peer_id": key.public.hex(), "api": "http://gw:8000", "state": "alive"}],
            "attestation": {"challenge": challenge.hex(), "signature": view.sign(key, network_id).hex()}})

    for spell, counted in ((str, True), (str.upper, False), (lambda h: h[:2] + " " + h[2:], False)):
        client = PeerClient("http://gw:8000", transport=httpx.MockTransport(lambda r, s=spell: answer(r, s)))
        reading = client.read_account(account, (key.public,), 1, network_id, seq=2)
        if counted:
            [view] = reading.answered
            assert (view.applied, view.pending) == (paid.hex(), (3, locked.hex()))
        else:
            assert not reading.answered and "malformed" in reading.errors.get(key.public, ""), reading.errors
