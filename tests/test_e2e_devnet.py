"""The devnet end to end, as a newcomer runs it: real `peer run` processes on 127.0.0.1.

`devnet up --detach`, then `devnet bench --payments 2000` while one peer is SIGKILLed and restarted
mid-run, then `devnet check` must pass and every payment the bench saw certified must be stored by
the network; `devnet down --wipe` must leave no process and no file. Bad input gets a clear error, a
non-zero exit, and nothing half-started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devnet import processes
from devnet.audit import configured_tokens
from devnet.layout import Devnet
from tests.devnet_support import devnet, pids_of

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def stored_certificates(net: Devnet) -> set[str]:
    ids: set[str] = set()
    tokens = configured_tokens(net)  # the audit endpoints need each peer's token
    with httpx.Client(timeout=10) as client:
        for peer in net.peers:
            client.headers["Authorization"] = f"Bearer {tokens[peer.name]}"
            after = None
            while True:
                params = {"limit": "5000", **({"after": after} if after else {})}
                doc = client.get(f"{peer.api}/v1/audit/certificates", params=params).json()
                ids.update(row["payment_id"] for row in doc["certificates"])
                after = doc["next_after"]
                if after is None:
                    break
    return ids


@pytest.mark.soak  # 35 s; the default suite kills peers under load in test_e2e_wallet and test_e2e_epochs
def test_bench_with_a_killed_peer_then_check_and_wipe(tmp_path: Path) -> None:
    root = tmp_path / "net"
    ids_file = tmp_path / "certified.txt"
    up = devnet("up", "--dir", str(root), "--peers", "5", "--detach", "--json", check=True)
    summary = json.loads(up.stdout)
    assert len(summary["peers"]) == 5 and len(summary["wallets"]) == 10
    assert all(w["balance"] == 1_000_000_00 for w in summary["wallets"])
    try:
        # 200 accounts busy at once: every gateway always has payments in flight to lose.
        bench = subprocess.Popen(
            [sys.executable, "-m", "devnet", "bench", "--dir", str(root), "--payments", "2000", "--accounts", "200",
             "--json", "--ids-out", str(ids_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        # Wait until the load is flowing (200 funding payments come first), then crash a peer.
        net = Devnet.load(root)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and bench.poll() is None:
            certified = sum(httpx.get(p.api + "/v1/status", timeout=5).json()["counters"].get("gateway_certified", 0)
                            for p in net.peers)
            if certified >= 300:
                break
            time.sleep(0.05)
        assert bench.poll() is None, "the bench ended before the crash could happen"
        # SIGKILL straight from here: starting a `devnet kill` process can take longer than the
        # load lasts on a busy machine. (`devnet kill` itself is covered below.)
        victim = Devnet.load(root).peer("peer2")
        assert processes.signal_peer(Devnet.load(root), victim, signal.SIGKILL)
        assert processes.wait_exit(victim, Devnet.load(root), 10)
        time.sleep(1.5)
        devnet("restart", "peer2", "--dir", str(root), check=True)
        out, err = bench.communicate(timeout=240)
        assert bench.returncode == 0, err[-2000:]
        report = json.loads(out)
        print("bench report:", {k: report[k] for k in ("payments", "certified", "settled", "failures", "resubmits",
                                                       "throughput", "per_gateway")})
        # The crash happened while load was in flight: orders at the dead gateway were resubmitted.
        assert report["resubmits"] > 0, report
        assert report["payments"] >= 1900, report  # accounts whose order was lost mid-crash may stop early
        assert report["certified"] == len(ids_file.read_text().split())
        assert report["certified"] >= 0.95 * report["payments"], report
        # The auditor passes with every peer back.
        check = devnet("check", "--dir", str(root), "--json", "--quiet-timeout", "60", timeout=180)
        verdict = json.loads(check.stdout)
        assert check.returncode == 0 and verdict["ok"], verdict["violations"][:10]
        assert verdict["peers_down"] == [] and verdict["total_supply"] == verdict["genesis_supply"]
        assert verdict["certificates"] >= report["certified"]
        # Every payment the bench saw certified is stored by the network.
        certified = set(ids_file.read_text().split())
        missing = certified - stored_certificates(Devnet.load(root))
        assert not missing, f"{len(missing)} certified payments missing, e.g. {sorted(missing)[:3]}"
    finally:
        down = devnet("down", "--dir", str(root), "--wipe")
    assert down.returncode == 0, down.stderr
    assert not root.exists()
    assert pids_of(root) == []


def test_unknown_peer_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "net"
    devnet("up", "--dir", str(root), "--peers", "4", "--wallets", "1", "--detach", "--json", check=True)
    try:
        for command in (["kill", "peer9"], ["restart", "nobody"], ["logs", "peer7"]):
            proc = devnet(*command, "--dir", str(root))
            assert proc.returncode == 15, proc.stderr  # unknown peer
            assert "no peer named" in proc.stderr and "peer0" in proc.stderr
        # The devnet is untouched by the refusals. (The real names working, kill and restart, is
        # tests/test_devnet_processes.py's and test_bench_with_a_killed_peer_then_check_and_wipe's.)
        status = json.loads(devnet("status", "--dir", str(root), "--json", check=True).stdout)
        assert all(p["running"] for p in status["peers"])
    finally:
        devnet("down", "--dir", str(root), "--wipe", check=True)
    assert pids_of(root) == []


def test_port_in_use_leaves_nothing_running(tmp_path: Path) -> None:
    root = tmp_path / "net"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = devnet("up", "--dir", str(root), "--peers", "4", "--port-base", str(port), "--detach")
        assert proc.returncode == 13, proc.stderr  # port in use
        assert f"127.0.0.1:{port} (peer0 peer port) is in use by pid {os.getpid()}" in proc.stderr
    assert pids_of(root) == []
    assert not root.exists() or not any(root.iterdir())


def test_port_taken_at_resume_stops_what_started(tmp_path: Path) -> None:
    root = tmp_path / "net"
    devnet("up", "--dir", str(root), "--peers", "4", "--wallets", "1", "--detach", "--json", check=True)
    devnet("down", "--dir", str(root), check=True)
    net = Devnet.load(root)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", net.peers[3].api_port))
        taken.listen()
        proc = devnet("up", "--dir", str(root), "--detach")
        assert proc.returncode == 13, proc.stderr
        # The holder is named, and the advice fits a devnet whose ports are fixed.
        assert f"(peer3 API) is in use by pid {os.getpid()}" in proc.stderr
        assert "--port-base" not in proc.stderr
    assert pids_of(root) == [], "peers started before the failure were left running"
    devnet("down", "--dir", str(root), "--wipe", check=True)


def test_dir_holding_something_else_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"\xff\xd8")
    proc = devnet("up", "--dir", str(root), "--detach")
    assert proc.returncode == 14, proc.stderr
    assert "not empty and holds no devnet" in proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["holiday.jpg"]
    for command in ("status", "down", "check"):
        other = devnet(command, "--dir", str(root))
        assert other.returncode == 14 and "no devnet" in other.stderr


@pytest.mark.parametrize(("replication", "quorum", "needle"), [
    ("4", "2", "unsafe"), ("4", "5", "exceeds replication"), ("6", "4", "exceeds the committee"),
])
def test_unsafe_parameters_are_refused(tmp_path: Path, replication: str, quorum: str, needle: str) -> None:
    root = tmp_path / "net"
    proc = devnet("up", "--dir", str(root), "--peers", "5", "--replication", replication, "--quorum", quorum, "--detach")
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert not root.exists()
    assert pids_of(root) == []


def test_bad_bench_arguments_exit_2(tmp_path: Path) -> None:
    proc = devnet("bench", "--dir", str(tmp_path), "--rate", "10", "--concurrency", "5")
    assert proc.returncode == 2 and "either --rate or --concurrency" in proc.stderr
    proc = devnet("kill", "peer0", "--dir", str(tmp_path), "--signal", "BOGUS")
    assert proc.returncode == 14  # no devnet there: refused before the signal is even parsed
