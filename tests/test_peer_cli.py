"""`peer init` and `peer run` as an operator meets them (docs/operator.md), with real processes:
a private directory, the genesis copied in, the next steps printed, a warning for a peer without
seeds, logs for people on the terminal, and the shared exit statuses."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devnet import layout
from peer import config as peer_config
from peer.genesis import load as load_genesis
from tests.devnet_support import REPO, env, run, stop_process, wait_for


def _private(root: Path) -> list[str]:
    return [f"{p} {stat.filemode(p.stat().st_mode)}" for p in [root, *root.rglob("*")]
            if stat.S_IMODE(p.stat().st_mode) & 0o077]


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "pw.txt"
    path.write_text("operator password\n")
    return path


def test_init_without_genesis_or_seeds_says_what_is_missing(tmp_path: Path, password: Path) -> None:
    home = tmp_path / "p"
    proc = run("peer", "init", home, "--password-file", password, "--json", check=True)
    doc = json.loads(proc.stdout)
    steps = "\n".join(doc["next"])
    assert doc["genesis"] is None and f"genesis file at {home / 'genesis.json'}" in steps
    assert "seeds" in steps and f"peer run --config {home / 'peer.toml'}" in steps
    assert _private(home) == [] and stat.S_IMODE(home.stat().st_mode) == 0o700
    settings = peer_config.load(home / "peer.toml")
    assert settings.genesis == home / "genesis.json" and settings.log.format == "text"
    text = run("peer", "init", tmp_path / "q", "--password-file", password, check=True).stdout
    assert "next:\n  1. put the network's genesis file" in text


def test_init_copies_the_genesis_and_a_bad_one_is_refused(tmp_path: Path, password: Path) -> None:
    net = layout.create(tmp_path / "net", peers=1, wallets=0, replication=1, quorum=1)
    home = tmp_path / "p"
    doc = json.loads(run("peer", "init", home, "--genesis", net.genesis_path, "--seed", "127.0.0.1:7000",
                         "--password-file", password, "--json", check=True).stdout)
    assert doc["network"] == net.name
    assert load_genesis(home / "genesis.json").network_id.hex() == net.network_id
    assert not any("genesis file at" in s or "seeds" in s for s in doc["next"])
    assert any("observer" in s for s in doc["next"])  # a new key is in no genesis committee
    (tmp_path / "bad.json").write_text("{}")
    bad = run("peer", "init", tmp_path / "r", "--genesis", tmp_path / "bad.json", "--password-file", password)
    assert bad.returncode == 2 and "--genesis" in bad.stderr and not (tmp_path / "r").exists()


def test_a_peer_without_seeds_warns_logs_text_and_keeps_its_files_private(tmp_path: Path, password: Path) -> None:
    net = layout.create(tmp_path / "net", peers=2, wallets=0, replication=2, quorum=2)
    home = tmp_path / "p"
    port, api_port = layout.free_ports(2)
    run("peer", "init", home, "--genesis", net.genesis_path, "--port", str(port), "--api-port", str(api_port),
        "--password-file", password, check=True)
    log = tmp_path / "run.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "peer", "run", "--config", str(home / "peer.toml"),
                                 "--log-level", "debug"], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env())
    try:
        wait_for(lambda: "peer ready" in log.read_text(), 60, "the peer to start")
    finally:
        status = stop_process(proc)
    assert status == 0
    lines = log.read_text().splitlines()
    assert lines[0].startswith("warning: no seeds") and "starts alone" in lines[0]
    assert not any(line.startswith("{") for line in lines) and any(" info " in line for line in lines)
    assert (home / "data" / "CURRENT").exists() and _private(home) == []


def test_run_exits_with_the_shared_statuses(tmp_path: Path) -> None:
    net = layout.create(tmp_path / "net", peers=1, wallets=0, replication=1, quorum=1)
    config = net.config_path("peer0")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the password\n")
    proc = run("peer", "run", "--config", config, "--password-file", wrong, timeout=60)
    assert proc.returncode == 9, proc.stderr  # wrong password, as the wallet's
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", net.peers[0].port))
        taken.listen()
        proc = run("peer", "run", "--config", config, timeout=60)
    assert proc.returncode == 13 and "already in use" in proc.stderr, proc.stderr
    bad = run("peer", "run", "--config", config, "--log-level", "loud")
    assert bad.returncode == 2 and "--log-level" in bad.stderr


def test_status_names_the_peer_url_the_same_way_as_the_wallet(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    for args, extra in ((["--peer", closed], {}), (["--api", closed], {}), ([], {"MESHPAY_PEER": closed}),
                        ([], {"MESHPAY_API": closed})):
        proc = run("peer", "status", *args, "--json", environ=env(**extra))
        assert proc.returncode == 7, (args, extra, proc.stderr)  # peer unreachable, as the wallet's
        assert closed in proc.stderr and json.loads(proc.stdout)["error"]["kind"] == "peer_unreachable"
    # An explicit option beats the environment.
    proc = run("peer", "status", "--peer", closed, environ=env(MESHPAY_PEER="http://127.0.0.1:1"))
    assert closed in proc.stderr
