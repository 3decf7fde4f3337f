"""The devnet as a newcomer uses it, on one real 4-peer devnet (`devnet up --detach`):

the printed `export` line makes the first payment a two-liner; `devnet wallets` prints whole
addresses; `devnet fund` pays from the faucet; `devnet bench` leaves the demo wallets alone;
`devnet check` prints amounts as amounts; peers log each payment's life at debug, as text; every
file is private; the live view keeps a hand-made payment's latency; a peer joins with `peer init`,
seeds and the genesis; `status` tells peers that left from dead ones.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from devnet import processes
from devnet.commands import info
from devnet.layout import DEMO_BALANCE, Devnet, free_ports
from devnet.view import LiveView
from peer.genesis import load as load_genesis
from tests.devnet_support import REPO, devnet, env, pids_of, run, stop_process, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("devnet-cli") / "net"
    up = devnet("up", "--dir", root, "--peers", "4", "--wallets", "3", "--no-fsync", "--log-level", "debug",
                "--detach", "--json", check=True)
    try:
        yield root, json.loads(up.stdout)
    finally:
        devnet("down", "--dir", root, "--wipe")
    assert pids_of(root) == []


def _balance(root: Path, address: str) -> int | None:
    return info.balance(Devnet.load(root), address)


def _address(summary: dict, name: str) -> str:
    return next(w["address"] for w in summary["wallets"] if w["name"] == name)


def test_the_export_line_makes_the_first_payment_two_lines(net: tuple[Path, dict]) -> None:
    root, summary = net
    assert set(summary["env"]) == {"MESHPAY_DEVNET_DIR", "MESHPAY_WALLET_DIR", "MESHPAY_WALLET_PASSWORD_FILE",
                                   "MESHPAY_GENESIS", "MESHPAY_PEER"}
    assert summary["commands"]["send"] == "wallet send -a demo0 --to demo1 --amount 12.50"
    assert summary["commands"]["env"].startswith("export MESHPAY_DEVNET_DIR=")
    assert json.loads(devnet("env", "--dir", root, "--json", check=True).stdout) == summary["env"]
    assert re.fullmatch(r"devnet-[0-9a-f]{6}", summary["name"])
    assert load_genesis(root / "genesis.json").name == summary["name"]
    # What a user pastes into a new terminal (the wallet's own name lookup for --to aside).
    script = (f'eval "$({sys.executable} -m devnet env --dir {root})"\n'
              f'{sys.executable} -m wallet send -a demo0 --to "$({sys.executable} -m wallet address demo1)" '
              f'--amount 12.50 --wait settled --json\n')
    paid = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO, env=env())
    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout)["status"] == "settled"
    assert _balance(root, _address(summary, "demo1")) == DEMO_BALANCE + 1250


def test_wallets_prints_whole_addresses_in_80_columns(net: tuple[Path, dict]) -> None:
    root, summary = net
    proc = devnet("wallets", "--dir", root, check=True, environ=env(COLUMNS="80"))
    for w in summary["wallets"]:
        assert any(line.split()[:2] == [w["name"], w["address"]] for line in proc.stdout.splitlines()), proc.stdout
    assert re.search(r"^faucet +mp1\w{58} ", proc.stdout, re.M), proc.stdout


def test_fund_pays_from_the_faucet(net: tuple[Path, dict]) -> None:
    root, summary = net
    target = _address(summary, "demo2")
    before = _balance(root, target)
    doc = json.loads(devnet("fund", target, "250", "--dir", root, "--json", check=True).stdout)
    assert doc["status"] == "settled" and doc["amount"] == 25000 and doc["amount_text"] == "250.00"
    by_name = devnet("fund", "demo2", "0.50", "--dir", root, check=True)
    assert "settled: paid 0.50 to " + target in by_name.stdout
    assert _balance(root, target) == before + 25050
    bad = devnet("fund", "mp1notanaddress", "1", "--dir", root, "--json")
    assert bad.returncode == 3 and json.loads(bad.stdout)["error"]["kind"] == "bad_address"
    bad = devnet("fund", target, "1.001", "--dir", root, "--json")
    assert bad.returncode == 4 and json.loads(bad.stdout)["error"]["kind"] == "bad_amount"


def test_bench_leaves_the_demo_wallets_alone(net: tuple[Path, dict]) -> None:
    root, _ = net

    def demo_balances() -> dict[str, int | None]:
        net = Devnet.load(root)
        return {w.name: info.balance(net, w.address) for w in net.wallets}

    before = demo_balances()
    report = json.loads(devnet("bench", "--dir", root, "--payments", "30", "--accounts", "6", "--json",
                               check=True, timeout=240).stdout)
    assert report["funded_from"] == "bench accounts" and report["certified"] >= 25
    assert demo_balances() == before


def test_check_prints_amounts_as_amounts(net: tuple[Path, dict]) -> None:
    root, _ = net
    supply = load_genesis(root / "genesis.json").total_supply
    text = f"{supply // 100}.{supply % 100:02d}"
    proc = devnet("check", "--dir", root, check=True, timeout=180)
    assert f"total supply {text} (genesis {text})" in proc.stdout
    assert str(supply) not in proc.stdout
    doc = json.loads(devnet("check", "--dir", root, "--json", check=True, timeout=180).stdout)
    assert doc["total_supply"] == supply and doc["total_supply_text"] == text


def test_peers_log_each_payment_at_debug_as_text(net: tuple[Path, dict]) -> None:
    root, summary = net
    pid = json.loads(devnet("fund", _address(summary, "demo0"), "3", "--dir", root, "--json", check=True).stdout)["payment_id"]
    logs = [root / "peers" / f"peer{i}" / "peer.log" for i in range(4)]

    def lines() -> list[str]:
        return [line for log in logs for line in log.read_text().splitlines() if pid in line]

    wait_for(lambda: any("payment settled" in x for x in lines()) and sum("payment applied" in x for x in lines()) >= 4,
             30, "the payment's life in the logs")
    assert any("payment certified" in x and "ms_since_received=" in x for x in lines())
    # The whole life: received at its gateway, voted by W owners at least, then certified and applied.
    assert sum("payment received" in x for x in lines()) >= 1
    assert sum("payment voted" in x for x in lines()) >= 3
    first = logs[0].read_text().splitlines()[0]
    assert not first.startswith("{") and " info " in first  # text, for people


def test_every_file_of_the_devnet_is_private(net: tuple[Path, dict]) -> None:
    root, _ = net
    open_to_others = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if path.parent.name == "state" and path.suffix == ".lock" and path.stat().st_size == 0:
            continue  # the `wallet` command's own empty flock files (wallet/home.py), in a 0700 directory
        if stat.S_IMODE(mode) & 0o077:
            open_to_others.append(f"{path.relative_to(root)} {stat.filemode(mode)}")
    assert (root / "peers" / "peer0" / "data" / "CURRENT").exists()  # the RocksDB files are among them
    assert not open_to_others, open_to_others


def test_the_view_keeps_a_hand_made_payments_latency(net: tuple[Path, dict]) -> None:
    root, summary = net
    view = LiveView(Devnet.load(root), stops_devnet=False)
    console = Console(record=True, width=200)
    try:
        console.print(view.render())
        devnet("fund", _address(summary, "demo1"), "1", "--dir", root, check=True)
        time.sleep(1.0)
        console.print(view.render())
        assert view.window.latency()[0] >= 1
        time.sleep(1.5)
        console.print(view.render())  # a later refresh with no new payment still shows it
        count, p50, _ = view.window.latency()
        assert count >= 1 and p50 is not None
    finally:
        view.close()
    text = console.export_text()
    assert "Ctrl-C leaves the devnet running" in text and "p50 ≤" in text


def test_a_peer_joins_with_peer_init_a_seed_and_the_genesis(net: tuple[Path, dict], tmp_path: Path) -> None:
    root, summary = net
    password = tmp_path / "pw.txt"
    password.write_text("observer password\n")
    home = tmp_path / "observer"
    port, api_port = free_ports(2)
    init = run("peer", "init", home, "--genesis", root / "genesis.json", "--seed", f"127.0.0.1:{summary['peers'][0]['peer_port']}",
               "--port", str(port), "--api-port", str(api_port), "--password-file", password, check=True)
    assert f"peer run --config {home / 'peer.toml'}" in init.stdout and "observer" in init.stdout
    assert (home / "genesis.json").read_bytes() == (root / "genesis.json").read_bytes()
    log = tmp_path / "observer.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "peer", "run", "--config", str(home / "peer.toml")],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env())
    url = f"http://127.0.0.1:{api_port}"
    try:
        def joined() -> dict | None:
            try:
                doc = httpx.get(url + "/v1/status", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return None
            return doc if doc.get("members", {}).get("alive", 0) >= 4 else None

        wait_for(joined, 60, "the observer to see the committee")
        status = json.loads(run("peer", "status", "--peer", url, "--json", check=True).stdout)
        assert status["committee_member"] is False and status["network_id"] == summary["network_id"]
        # The old option name and variable still work.
        assert run("peer", "status", "--api", url, "--json", check=True).returncode == 0
        assert run("peer", "status", "--json", environ=env(MESHPAY_API=url), check=True).returncode == 0
        # The same data directory cannot be opened twice.
        twice = run("peer", "run", "--config", home / "peer.toml", timeout=60)
        assert twice.returncode == 17, twice.stderr
    finally:
        status = stop_process(proc)
    assert status == 0
    text = log.read_text()
    assert "no seeds" not in text and not text.lstrip().startswith("{")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert all(not stat.S_IMODE(p.stat().st_mode) & 0o077 for p in home.rglob("*")), \
        [(p, oct(p.stat().st_mode)) for p in home.rglob("*") if stat.S_IMODE(p.stat().st_mode) & 0o077]


def test_status_tells_peers_that_left_from_dead_ones(net: tuple[Path, dict]) -> None:
    """Last: it stops a peer."""
    root, _ = net

    def members() -> dict[str, dict]:
        net = Devnet.load(root)
        docs = {p.name: processes.status(p, timeout=2.0) for p in net.peers if processes.is_running(p, net)}
        return {name: doc["members"] for name, doc in docs.items() if doc}

    before = members()  # (an observer that joined and left earlier counts as left already)
    assert set(before) == {"peer0", "peer1", "peer2", "peer3"}
    devnet("kill", "peer3", "--signal", "TERM", "--dir", root, check=True)

    def seen_leaving() -> dict[str, dict] | None:
        now = members()
        return now if set(now) == {"peer0", "peer1", "peer2"} and all(
            now[n]["left"] == before[n]["left"] + 1 for n in now) else None

    try:
        after = wait_for(seen_leaving, 60, "the peers to see peer3 leave", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: before {before}, now {members()}") from None
    assert all(after[n]["dead"] == before[n]["dead"] for n in after)
    rows = json.loads(devnet("status", "--dir", root, "--json", check=True).stdout)["peers"]
    assert [r["running"] for r in rows] == [True, True, True, False]
    assert all(r["members"]["left"] == after[r["name"]]["left"] for r in rows if r["running"])
    table = devnet("status", "--dir", root, check=True).stdout
    assert re.search(r"alive.*suspect.*dead.*left", table)
    assert os.path.exists(root / "peers" / "peer3" / "data")
