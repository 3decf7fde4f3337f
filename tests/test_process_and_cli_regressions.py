"""Regressions for bugs outside wallet/ found while building it: a zombie peer process counted as
running, and the peer CLI crashing on usage errors instead of exiting 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devnet import layout, processes
from tests.wallet_support import REPO, gone, wait_until


def test_devnet_is_running_sees_a_dead_child(tmp_path: Path) -> None:
    devnet = layout.create(tmp_path / "z", peers=1, wallets=0, replication=1, quorum=1)
    entry = devnet.peers[0]
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # exits at once; not reaped: a zombie
    try:
        assert wait_until(lambda: Path(f"/proc/{child.pid}/stat").read_text().split(") ", 1)[1][0] == "Z", 5, 0.01)
        devnet.pid_path(entry.name).write_text(f"{child.pid}\n")  # recorded as the peer's pid
        entry.pid = child.pid
        assert not processes.is_running(entry, devnet)
        assert processes.live_pid(devnet, entry) is None
    finally:
        child.wait()
        assert gone(child.pid, 0.1)


def test_peer_cli_usage_error_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "peer", "run", "--bogus"], capture_output=True, text=True,
                          cwd=REPO, timeout=30)
    assert proc.returncode == 2, proc.stderr[-300:]
    assert "Traceback" not in proc.stderr


def test_devnet_waits_for_the_disk_in_the_loop_only_when_peers_outnumber_cores(tmp_path: Path, monkeypatch) -> None:
    # More peers than cores: a hand-off to a disk thread waits for the OS to schedule it.
    from peer import config as peer_config

    def sync_in_thread(root: Path) -> bool:
        return peer_config.load(root / "peers" / "peer0" / "peer.toml").tuning.sync_in_thread

    monkeypatch.setattr(layout.os, "cpu_count", lambda: 2)
    layout.create(tmp_path / "small", peers=2, wallets=0, replication=2, quorum=2)
    layout.create(tmp_path / "big", peers=3, wallets=0, replication=3, quorum=2)
    assert sync_in_thread(tmp_path / "small") is True
    assert sync_in_thread(tmp_path / "big") is False
