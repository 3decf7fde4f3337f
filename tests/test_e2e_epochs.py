"""Epoch changes on real `peer run` processes (127.0.0.1): the committee grows and shrinks under load.

One devnet of 5 peers (N = 4, W = 3, fsync off) with a few hundred extra funded accounts in its
genesis (state to hand off) is shared by the tests of this module, each of which only assumes the
epoch it finds, never a fixed one:

- the committee grows and shrinks while `devnet bench` runs: zero failed payments, `devnet check`
  passes in the final epoch without counting the removed peers, and the new owners of every account
  that moved agree with each other (5 -> 6 -> 5 by default; 5 -> 8 -> 6 in `make soak`);
- a peer started with `peer init --join` joins as an observer and is promoted with `peer epoch
  propose/approve` (the operator commands), SIGKILLed in the middle of its handoff, and restarted:
  its handoff resumes from the cursors it stored (its ready accounts survive), not from zero;
- an account frozen by an equivocating sender (4 different orders for one seq, each sent straight to
  a different owner, so no order can reach W) is usable again after the next epoch change;
- `wallet verify` accepts the certificate of a payment made in epoch >= 2 with only the pinned
  genesis (it follows the chain from a peer), and refuses it through a peer that forges a link.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from crypto import keystore
from crypto.address import encode_address
from crypto.keys import SigningKey
from crypto.messages import Order
from devnet import epochs, layout, processes
from devnet.audit import configured_tokens
from devnet.bench import Bench, BenchConfig, BenchReport
from devnet.layout import Devnet, PeerEntry
from gossip.transport import TcpTransport
from peer.epoch_chain import Chain, EpochApproval, EpochCertificate
from peer.genesis import load as load_genesis
from peer.wire import VoteRequest
from tests.cli_support import devnet as devnet_cli
from tests.cli_support import peer
from tests.wallet_support import LyingProxy, gone, wallet

pytestmark = pytest.mark.slow

EXTRA_ACCOUNTS = 300
HTTP = 15.0


# ---- the shared devnet ----------------------------------------------------------------------------
def pids_of(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(root) in cmd and " run " in cmd:
                    found.append(int(entry.name))
    return found


def stop_everything(root: Path) -> None:
    """Every peer process of this devnet, recorded or not (a test may fail half-way through a change)."""
    pids = pids_of(root)
    for pid in pids:
        for signum in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
    for pid in pids:
        if not gone(pid, 10.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            gone(pid, 5.0)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("epochs") / "net"
    extra = [SigningKey.generate().public for _ in range(EXTRA_ACCOUNTS)]
    devnet = layout.create(root, peers=5, wallets=6, fsync=False, extra_accounts=extra, extra_balance=1000)
    try:
        for entry in devnet.peers:
            processes.start_peer(devnet, entry)
        processes.wait_converged(devnet, timeout=90)
        yield devnet
    finally:
        stop_everything(root)
    assert pids_of(root) == []


def fresh(net: Devnet) -> Devnet:
    """The devnet as its state file says now (the CLI commands change it)."""
    return Devnet.load(net.root)


def epoch_of(devnet: Devnet) -> Chain:
    return epochs.verified_chain(devnet)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(step)
    return time.monotonic() - start


# ---- load ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def bench_running(devnet: Devnet, *, rate: float, accounts: int) -> Iterator[dict[str, Any]]:
    """`devnet bench`'s load (in a thread) until the block ends; the report lands in the dict."""
    stop = threading.Event()
    result: dict[str, Any] = {}
    # `duration` only bounds the orders signed up front: the stop event ends the load.
    config = BenchConfig(accounts=accounts, payments=None, duration=240, rate=rate, stop=stop, settle_timeout=60)

    def run() -> None:
        try:
            result["report"] = trio.run(Bench(devnet, config).run)
        except BaseException as exc:  # handed to the test thread below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        # Funding first (not load): wait until the load itself is flowing through the gateways.
        base = certified_total(devnet)
        wait_until("the bench load", lambda: certified_total(devnet) >= base + accounts + 50 or not thread.is_alive(),
                   240)
        assert thread.is_alive(), f"the bench ended early: {result}"
        yield result
        result["still_running"] = thread.is_alive()  # the load lasted as long as the block
    finally:
        stop.set()
        thread.join(180)
    assert not thread.is_alive(), "the bench did not stop"
    if "error" in result:
        raise result["error"]


def certified_total(devnet: Devnet) -> int:
    total = 0
    for entry in epochs.running(devnet):
        doc = processes.status(entry, timeout=5.0)
        total += doc["counters"].get("gateway_certified", 0) if doc else 0
    return total


def pid_of(devnet: Devnet, entry: PeerEntry) -> int:
    pid = processes.live_pid(devnet, entry)
    assert pid is not None, f"{entry.name} is not running"
    return pid


# ---- checks ------------------------------------------------------------------------------------------
def owner_states(devnet: Devnet, chain: Chain) -> dict[bytes, dict[bytes, tuple]]:
    """account -> {current owner -> its state}, from every running peer's audit listing."""
    states: dict[bytes, dict[bytes, tuple]] = {}
    tokens = configured_tokens(devnet)
    with httpx.Client(timeout=HTTP) as client:
        for entry in epochs.running(devnet):
            after = None
            headers = {"Authorization": f"Bearer {tokens[entry.name]}"}
            while True:
                params = {"limit": "5000", **({"after": after} if after else {})}
                doc = client.get(f"{entry.api}/v1/audit/accounts", params=params, headers=headers).json()
                for row in doc["accounts"]:
                    account = bytes.fromhex(row["account"])
                    if bytes.fromhex(entry.peer_id) in chain.current.owners(account):
                        states.setdefault(account, {})[bytes.fromhex(entry.peer_id)] = (
                            row["balance"], row["next_seq"], row["credits"], row["credit_digest"])
                after = doc["next_after"]
                if after is None:
                    break
    return states


def assert_moved_accounts_agree(devnet: Devnet, before: Chain, after: Chain) -> int:
    """Every account whose owner set changed is held by all its running new owners, identically."""
    live = {bytes.fromhex(p.peer_id) for p in epochs.running(devnet)}
    states = owner_states(devnet, after)
    moved = 0
    for account, held in states.items():
        owners = set(after.current.owners(account))
        if owners == set(before.current.owners(account)):
            continue
        moved += 1
        assert set(held) == owners & live, f"{encode_address(account)}: held by {len(held)} of its owners"
        assert len(set(held.values())) == 1, f"the new owners of {encode_address(account)} disagree: {held}"
    return moved


def check(devnet: Devnet) -> dict[str, Any]:
    proc = devnet_cli("check", "--dir", str(devnet.root), "--json", "--quiet-timeout", "90")
    verdict = json.loads(proc.out)
    assert proc.code == 0 and verdict.get("ok"), verdict.get("violations", verdict)
    return verdict


# ---- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", [
    pytest.param((1, 1), id="5-6-5"),
    pytest.param((3, 2), id="5-8-6", marks=pytest.mark.soak),
])
def test_committee_grows_and_shrinks_under_bench(net: Devnet, variant: tuple[int, int]) -> None:
    grow, shrink = variant
    start = epoch_of(net)
    size = len(start.current.members)
    clock = time.monotonic()

    def lap(what: str) -> None:
        nonlocal clock
        print(f"{what}: {time.monotonic() - clock:.1f} s")
        clock = time.monotonic()

    with bench_running(net, rate=25, accounts=30) as result:
        lap("bench funded and flowing")
        added = devnet_cli("add-peer", "--dir", str(net.root), "--count", str(grow), "--json")
        assert added.code == 0, added.err
        grown = json.loads(added.out)
        assert grown["epoch"] == start.epoch + 1 and len(grown["committee"]) == size + grow
        assert grown["accounts_moved"] > 0 and grown["bytes_moved"] > 0
        lap(f"add-peer (serving {grown['seconds_to_serving']} s after the proposal)")
        # Remove one genesis member and (when shrinking by two) one of the newcomers.
        victims = [fresh(net).peers[0].name, *grown["added"][: shrink - 1]]
        for victim in victims:
            removed = devnet_cli("remove-peer", victim, "--dir", str(net.root), "--json")
            assert removed.code == 0, removed.err
            assert victim in json.loads(removed.out)["removed"]
            lap(f"remove-peer {victim}")
        time.sleep(2.0)  # some load in the final epoch too
    lap("bench stopped")
    report: BenchReport = result["report"]
    assert result["still_running"], "the load ended before the committee changes did"
    print("bench:", {k: getattr(report, k) for k in ("payments", "certified", "settled", "failures", "resubmits")})
    assert report.payments > 200 and report.failures == {}, report.failures
    assert report.certified == report.payments
    devnet = fresh(net)
    end = epoch_of(devnet)
    assert end.epoch == start.epoch + 1 + shrink and len(end.current.members) == size + grow - shrink
    removed_names = {r["name"] for r in devnet.extra["removed"]}
    assert set(victims) <= removed_names and not removed_names & {p.name for p in devnet.peers}
    verdict = check(devnet)  # waits until the network is quiet
    lap("devnet check")
    assert verdict["epoch"] == end.epoch and verdict["peers_down"] == []
    assert verdict["total_supply"] == verdict["genesis_supply"]
    moved = assert_moved_accounts_agree(devnet, start, end)
    assert moved > EXTRA_ACCOUNTS // 10
    status = json.loads(devnet_cli("status", "--dir", str(devnet.root), "--json").out)
    assert all(p["running"] for p in status["peers"]) and not removed_names & {p["name"] for p in status["peers"]}
    history = json.loads(devnet_cli("epoch", "--dir", str(devnet.root), "--json").out)
    assert [r["epoch"] for r in history["epochs"]] == list(range(end.epoch + 1))
    assert all(r["accounts_moved"] for r in history["epochs"][start.epoch + 1:])


# ---- an operator adds a peer; the peer crashes mid-handoff ----------------------------------------------
def peer_cli(*args: str | Path) -> tuple[int, str, str]:
    ran = peer(*args)
    return ran.code, ran.out, ran.err


def handoff(entry: PeerEntry) -> dict[str, Any] | None:
    doc = epochs.epoch_status(entry, timeout=5.0)
    return None if doc is None else {**doc["handoff"], "peer_epoch": doc["epoch"]}


def approvals_seen(entry: PeerEntry, change_id: str) -> set[str]:
    doc = epochs.epoch_status(entry) or {"proposals": []}
    return {a for p in doc["proposals"] if p["change_id"] == change_id for a in p["approvals"]}


def test_an_operator_promotes_a_joined_peer_whose_handoff_survives_sigkill(net: Devnet, tmp_path: Path) -> None:
    devnet = fresh(net)
    before = epoch_of(devnet)
    members = [p for p in epochs.running(devnet) if bytes.fromhex(p.peer_id) in before.current]
    # 1. A new operator: `peer init --join SEED --genesis FILE`, then `peer run`.
    taken = {p.name for p in devnet.peers} | {r["name"] for r in devnet.extra.get("removed", [])}
    name = next(f"peer{i}" for i in range(100) if f"peer{i}" not in taken)
    port, api_port = layout.free_ports(2)
    code, out, err = peer_cli("init", devnet.peer_dir(name), "--join", f"127.0.0.1:{members[0].port}",
                              "--genesis", devnet.genesis_path, "--password-file", devnet.password_file,
                              "--port", str(port), "--api-port", str(api_port), "--json")
    assert code == 0, err
    newcomer = PeerEntry(name, json.loads(out)["peer_id"], port, api_port)
    # Its operator opens the audit listing to the devnet's auditor (`devnet check`), as the others do.
    conf = devnet.config_path(name)
    token = configured_tokens(devnet)[members[0].name]
    conf.write_text(conf.read_text().replace('# audit_token = ""', f'audit_token = "{token}"'))
    devnet.peers.append(newcomer)
    devnet.save()
    processes.start_peer(devnet, newcomer)
    # It joins as an observer: in membership everywhere, following the chain, owning nothing.
    wait_until("the newcomer to join", lambda: all(
        any(r["peer_id"] == newcomer.peer_id and r["state"] == "alive"
            for r in httpx.get(p.api + "/v1/peers", timeout=HTTP).json()["peers"]) for p in members), 90)
    wait_until("the newcomer to learn the chain",
               lambda: (d := epochs.epoch_status(newcomer)) is not None and d["epoch"] == before.epoch, 60)
    doc = epochs.epoch_status(newcomer)
    assert doc is not None and not doc["committee_member"] and doc["committee"] == [m.hex() for m in before.current.members]
    assert httpx.get(newcomer.api + "/v1/status", timeout=HTTP).json()["owned_accounts"] == 0

    # 2. The committee's operators: one proposes, two approve and are then frozen (SIGSTOP) so the
    # newcomer's handoff stalls half-way on the accounts both of them owned; the rest approve.
    proposer, *others = members
    code, out, err = peer_cli("epoch", "propose", "--add", newcomer.peer_id, "--note", "operators add a peer",
                              "--config", devnet.config_path(proposer.name), "--json")
    assert code == 0, err
    change_id = json.loads(out)["change_id"]
    frozen = others[:2]
    stopped: list[PeerEntry] = []
    try:
        for entry in frozen:
            code, _, err = peer_cli("epoch", "approve", change_id[:12], "--config", devnet.config_path(entry.name))
            assert code == 0, err
        wait_until("the frozen peers' approvals to spread",
                   lambda: {p.peer_id for p in frozen} <= approvals_seen(proposer, change_id), 30)
        for entry in frozen:
            os.kill(pid_of(devnet, entry), signal.SIGSTOP)
            stopped.append(entry)
        target = before.epoch + 1
        for entry in others[2:]:
            if (epochs.epoch_status(entry) or {}).get("epoch", 0) >= target:
                continue  # enough approvals already: the certificate reached this peer first
            code, _, err = peer_cli("epoch", "approve", change_id, "--config", devnet.config_path(entry.name))
            assert code == 0 or (epochs.epoch_status(entry) or {}).get("epoch", 0) >= target, err
        wait_until("the newcomer to enter the new epoch", lambda: (h := handoff(newcomer)) is not None
                   and h["peer_epoch"] == target and h["epoch"] == target, 60)
        code, out, _ = peer_cli("epoch", "status", "--config", devnet.config_path(newcomer.name), "--json")
        assert code == 0 and json.loads(out)["committee_member"]
        # The handoff moves what the live old owners can report, then stalls on the rest.
        last: list[dict[str, Any]] = []

        def stalled() -> bool:
            h = handoff(newcomer)
            last.append(h or {})
            recent = last[-15:]
            open_streams = [p for p, st in (h or {}).get("streams", {}).items() if not st["done"]]
            return (len(recent) == 15 and h is not None and h["state"] == "in_progress" and h["accounts_ready"] > 0
                    and h["accounts_pending"] > 0 and sorted(open_streams) == sorted(p.peer_id for p in frozen)
                    and len({json.dumps(r, sort_keys=True) for r in recent}) == 1)

        wait_until("the newcomer's handoff to stall half-way", stalled, 90, step=0.2)
        mid = last[-1]
        # 3. SIGKILL it in the middle of its handoff. Freeze every other peer too, so that nothing can
        # progress after the restart: what it shows then is exactly what it stored.
        victim = processes.live_pid(devnet, newcomer)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        assert gone(victim, 10)
        for entry in members[1:]:
            if entry not in stopped:
                os.kill(pid_of(devnet, entry), signal.SIGSTOP)
                stopped.append(entry)
        os.kill(pid_of(devnet, proposer), signal.SIGSTOP)
        stopped.append(proposer)
        processes.start_peer(devnet, newcomer)
        wait_until("the newcomer to answer again", lambda: handoff(newcomer) is not None, 60)
        resumed = handoff(newcomer)
        print("handoff before the kill:", mid, "\nafter the restart:", resumed)
        assert resumed is not None and resumed["epoch"] == target and resumed["state"] == "in_progress"
        # Resumed from the stored cursors: every stream is where it was (the finished ones are not
        # pulled again), the ready accounts are still ready, the received totals are kept.
        assert resumed["streams"] == mid["streams"]
        done = [p for p, s in mid["streams"].items() if s["done"]]
        assert len(done) == len(mid["streams"]) - len(frozen) and all(mid["streams"][p]["cursor"] for p in done)
        assert resumed["accounts_ready"] == mid["accounts_ready"] > 0
        assert resumed["accounts_pending"] == mid["accounts_pending"] > 0
        assert resumed["bytes_received"] == mid["bytes_received"] > 0
    finally:
        for entry in stopped:
            os.kill(pid_of(devnet, entry), signal.SIGCONT)
    # 4. The frozen peers resume; every handoff completes; the new owners agree.
    wait_until("every handoff into the new epoch", lambda: all(
        epochs.handoff_done(epochs.epoch_status(p), target)
        for p in [*members, newcomer]), 120)
    devnet = fresh(net)
    after = epoch_of(devnet)
    assert after.epoch == target and bytes.fromhex(newcomer.peer_id) in after.current
    assert check(devnet)["epoch"] == target
    assert assert_moved_accounts_agree(devnet, before, after) > 0


# ---- an equivocating sender is released by the next epoch change ------------------------------------
async def _vote_requests(network_id: bytes, pairs: list[tuple[PeerEntry, Order]]) -> None:
    """Each order straight to one owner, as a gateway would send it (from a peer outside the committee)."""
    transport = TcpTransport(SigningKey.generate(), network_id)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.serve)
        for entry, order in pairs:
            peer_id = await transport.dial("127.0.0.1", entry.port, expect=bytes.fromhex(entry.peer_id))
            assert transport.send(peer_id, VoteRequest(order).encode())
        await trio.sleep(1.0)  # let the frames leave before the connections close
        nursery.cancel_scope.cancel()


def lock_at(entry: PeerEntry, address: str) -> dict[str, Any] | None:
    return httpx.get(f"{entry.api}/v1/accounts/{address}", timeout=HTTP).json().get("pending")


def pay(entry: PeerEntry, order: Order, timeout: float) -> httpx.Response:
    return httpx.post(f"{entry.api}/v1/payments", json={"order": order.encode().hex(), "wait": "certified",
                                                       "timeout": timeout}, timeout=timeout + 10)


def change_once(devnet: Devnet) -> epochs.ChangeReport:
    """One more epoch: remove a peer added by these tests if the committee grew, else add one."""
    chain = epoch_of(devnet)
    genesis_members = set(bytes.fromhex(p.peer_id) for p in devnet.peers[:5])
    spare = [p for p in epochs.running(devnet) if bytes.fromhex(p.peer_id) in chain.current
             and bytes.fromhex(p.peer_id) not in genesis_members]
    if len(chain.current.members) > 5 and spare:
        return epochs.remove_peer(devnet, spare[-1], timeout=180)
    return epochs.add_peers(devnet, 1, timeout=180)


def test_an_account_frozen_by_equivocation_is_usable_after_the_next_epoch_change(net: Devnet) -> None:
    devnet = fresh(net)
    chain = epoch_of(devnet)
    nid = bytes.fromhex(devnet.network_id)
    wallet_entry = devnet.wallets[3]
    key = keystore.load(Path(wallet_entry.key_file), devnet.password())
    address = encode_address(key.public)
    by_id = {bytes.fromhex(p.peer_id): p for p in epochs.running(devnet)}
    owners = [by_id[o] for o in chain.current.owners(key.public)]
    seq = httpx.get(f"{owners[0].api}/v1/accounts/{address}", timeout=HTTP).json()["next_seq"]
    split = [Order.create(key, nid, SigningKey.generate().public, 100 + i, seq, "equivocation") for i in range(4)]
    trio.run(_vote_requests, nid, list(zip(owners, split, strict=True)))
    wait_until("each owner to lock a different order", lambda: [
        (lock_at(o, address) or {}).get("payment_id") for o in owners] == [x.id.hex() for x in split], 30)
    # Frozen: no order at this seq can gather W = 3 votes, so a new one is refused.
    blocked = pay(owners[0], Order.create(key, nid, SigningKey.generate().public, 7, seq, "blocked"), 5.0)
    assert blocked.status_code in (409, 504), blocked.text
    report = change_once(devnet)
    # All four old owners report one order each at seq: none reaches T = 2 of 4, so seq is free.
    after = epoch_of(fresh(net))
    assert after.epoch == report.epoch
    by_id = {bytes.fromhex(p.peer_id): p for p in epochs.running(fresh(net))}
    gateway = by_id[after.current.owners(key.public)[0]]
    freed = pay(gateway, Order.create(key, nid, SigningKey.generate().public, 9, seq, "after the change"), 30.0)
    assert freed.status_code == 200 and freed.json()["status"] in ("certified", "settled"), freed.text
    nxt = pay(gateway, Order.create(key, nid, SigningKey.generate().public, 9, seq + 1, "and the next"), 30.0)
    assert nxt.status_code == 200, nxt.text


# ---- wallet verify follows the chain ---------------------------------------------------------------------
class ForgingProxy:
    """A peer's API through a proxy that replaces epoch 2 of its chain with a committee of its own."""

    def __init__(self, upstream: str, network_id: bytes) -> None:
        attackers = [SigningKey.generate() for _ in range(5)]
        proxy = self

        class Forger(LyingProxy):
            def alter(self, path: str, data: bytes) -> bytes:
                if not path.startswith("/v1/epochs"):
                    return data
                doc = json.loads(data)
                for row in doc["certificates"]:
                    if row["epoch"] == 2:
                        row["cbor"] = proxy.forge(EpochCertificate.decode(bytes.fromhex(row["cbor"]))).encode().hex()
                return json.dumps(doc).encode()

        self.attackers = attackers
        self.network_id = network_id
        self.server = Forger(upstream)

    def forge(self, real: EpochCertificate) -> EpochCertificate:
        members = tuple(sorted(k.public for k in self.attackers))
        change = dataclasses.replace(real.change, members=members)
        return EpochCertificate(change, tuple(EpochApproval.create(k, self.network_id, change.id) for k in self.attackers))


def ensure_epoch(devnet: Devnet, epoch: int) -> None:
    while epoch_of(devnet).epoch < epoch:
        change_once(devnet)
        devnet = fresh(devnet)


def test_wallet_verify_follows_the_chain_and_refuses_a_forged_link(net: Devnet, tmp_path: Path) -> None:
    ensure_epoch(fresh(net), 2)
    devnet = fresh(net)
    chain = epoch_of(devnet)
    peer = epochs.running(devnet)[0]
    sender_dir = tmp_path / "sender"
    sender_dir.mkdir()
    source = Path(devnet.wallets[4].key_file)
    (sender_dir / source.name).write_bytes(source.read_bytes())
    (sender_dir / source.name).chmod(0o600)
    common = ["--genesis", devnet.genesis_path, "--json"]
    to = encode_address(SigningKey.generate().public)
    sent = wallet("send", "-a", source.stem, "--to", to, "--amount", "1.25", "--wait", "certified", "--peer", peer.api,
                  "--wallet-dir", sender_dir, "--password-file", devnet.password_file, *common)
    assert sent.code == 0, sent  # the wallet found the current owners through the chain
    payment = sent.json()["payment_id"]
    receipt = tmp_path / "receipt.json"
    assert wallet("receipt", payment, "-o", receipt, "--peer", peer.api, "--wallet-dir", sender_dir, *common).code == 0
    # A wallet that pinned only the genesis follows the chain from a peer, then keeps it.
    verifier = tmp_path / "verifier"
    ok = wallet("verify", receipt, "--wallet-dir", verifier, "--peer", peer.api, *common)
    assert ok.code == 0, ok
    assert ok.json()["valid"] and ok.json()["epoch"] == chain.epoch >= 2
    offline = wallet("verify", receipt, "--wallet-dir", verifier, "--peer", "http://127.0.0.1:9", *common)
    assert offline.code == 0, offline  # the kept chain suffices: no peer needed
    # Through a peer that forges the certificate of epoch 2: refused, naming that peer.
    proxy = ForgingProxy(peer.api, bytes.fromhex(devnet.network_id))
    with proxy.server:
        forged = wallet("verify", receipt, "--wallet-dir", tmp_path / "victim", "--peer", proxy.server.url, *common)
    assert forged.code == 11, forged
    assert proxy.server.url in forged.err and "epoch 2" in forged.err
    assert forged.json()["error"]["kind"] == "verification_failed"


# ---- the API ---------------------------------------------------------------------------------------------
def test_epoch_api_pages_the_chain_and_guards_operator_actions(net: Devnet) -> None:
    ensure_epoch(fresh(net), 2)
    devnet = fresh(net)
    truth = epoch_of(devnet)
    entry = next(p for p in epochs.running(devnet) if bytes.fromhex(p.peer_id) in truth.current)
    with httpx.Client(timeout=HTTP) as client:
        # One certificate per page, followed to the end and checked link by link from the genesis.
        certs, first = [], 1
        while first is not None:
            page = client.get(f"{entry.api}/v1/epochs", params={"from": first, "limit": 1}).json()
            assert len(page["certificates"]) == 1 and page["certificates"][0]["epoch"] == first
            certs.append(EpochCertificate.decode(bytes.fromhex(page["certificates"][0]["cbor"])))
            first = page["next_from"]
        chain = Chain.from_genesis(load_genesis(devnet.genesis_path))
        chain.extend_all(certs)
        assert chain.epoch == truth.epoch and chain.current.members == truth.current.members
        row = page["certificates"][0]
        assert row["members"] == [m.hex() for m in truth.current.members] and len(row["approvals"]) >= 2
        for bad in ({"from": "0"}, {"limit": "17"}, {"from": "x"}):
            answer = client.get(f"{entry.api}/v1/epochs", params=bad)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_query"
        doc = client.get(f"{entry.api}/v1/epoch").json()
        assert doc["epoch"] == truth.epoch and doc["committee_member"]
        assert doc["committee"] == [m.hex() for m in truth.current.members]
        assert doc["ring"]["approvals_needed"] == 2 * len(truth.current.members) // 3 + 1
        assert doc["handoff"]["epoch"] == truth.epoch and doc["handoff"]["state"] == "complete"
        # Operator actions need the token; the protocol's refusals are 409 with its reason.
        url = f"{entry.api}/v1/epoch/proposals"
        member = entry.peer_id
        for headers in ({}, {"authorization": "Bearer wrong-token-wrong-token"}, {"authorization": "Basic x"}):
            answer = client.post(url, json={"add": [member]}, headers=headers)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
        auth = {"authorization": f"Bearer {epochs.admin_token(devnet, entry)}"}
        for body, code in (({}, "empty_proposal"), ({"add": ["zz"]}, "bad_peer_id"), ({"add": "x"}, "bad_peer_id"),
                           ({"remove": [member], "note": "x" * 200}, "bad_note")):
            answer = client.post(url, json=body, headers=auth)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == code, answer.text
        answer = client.post(url, json={"add": [member]}, headers=auth)  # already a member
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "epoch_refused"
        answer = client.post(f"{entry.api}/v1/epoch/approvals", json={"change_id": "ab" * 32}, headers=auth)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "epoch_refused"
        metrics = client.get(f"{entry.api}/metrics").text
        assert f"meshpay_epoch {float(truth.epoch)}" in metrics
        assert 'meshpay_handoff_state{state="complete"} 1.0' in metrics
