"""Devnet process tracking with real processes: every command finds the peers afresh.

- Ctrl-C of a foreground `devnet up` stops a peer that `devnet restart` (another process) started;
- a second `devnet up` on a running devnet says it is running (with pids), warns that creation
  options are ignored, and its Ctrl-C only detaches;
- `down` says what it actually stopped; a stale pid record does not hide a running peer;
- `down --wipe` refuses while a process still holds a file of the devnet;
- new devnets take ports outside the kernel's ephemeral range.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devnet import layout, processes
from devnet.layout import Devnet, ephemeral_range, free_ports
from tests.devnet_support import REPO, devnet, env, pids_of, stop_process, wait_for

pytestmark = pytest.mark.slow

SMALL = ("--peers", "2", "--replication", "2", "--quorum", "2", "--wallets", "1", "--no-fsync")
ONE = ("--peers", "1", "--replication", "1", "--quorum", "1", "--wallets", "0", "--no-fsync")


def _running(root: Path) -> dict[str, int]:
    return processes.running(Devnet.load(root)) if layout.is_devnet(root) else {}


def _foreground(root: Path, *args: str, log: Path) -> subprocess.Popen[str]:
    """`devnet up` in the foreground, its output in a file (read while it runs)."""
    handle = log.open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "devnet", "up", "--dir", str(root), *args], stdout=handle,
                                stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env())
    finally:
        handle.close()


def _interrupt(proc: subprocess.Popen[str], log: Path) -> str:
    stop_process(proc, signal.SIGINT, timeout=60)
    return log.read_text()


def test_ctrl_c_of_the_foreground_up_stops_a_peer_restarted_elsewhere(tmp_path: Path) -> None:
    root, log = tmp_path / "net", tmp_path / "up.log"
    fg = _foreground(root, *SMALL, log=log)
    try:
        wait_for(lambda: (root / "owner.json").exists() and len(_running(root)) == 2, 90, "the devnet to start")
        before = _running(root)
        devnet("restart", "peer1", "--dir", root, check=True)
        after = _running(root)
        assert after["peer1"] != before["peer1"] and after["peer0"] == before["peer0"]
        # `status` (another process) sees the restarted peer's new pid, not "pid None".
        rows = json.loads(devnet("status", "--dir", root, "--json", check=True).stdout)["peers"]
        assert {r["name"]: r["pid"] for r in rows} == after
        text = _interrupt(fg, log)
        assert fg.returncode == 0, text[-2000:]
        assert f"peer1 (pid {after['peer1']})" in text, text[-2000:]  # the one it did not start itself
        assert pids_of(root) == []
        down = devnet("down", "--dir", root, check=True)
        assert "nothing was running" in down.stdout
        assert any(e["action"] == "down" for e in Devnet.load(root).events())
    finally:
        stop_process(fg, signal.SIGKILL)
        devnet("down", "--dir", root, "--wipe")
    assert pids_of(root) == []


def test_a_second_up_only_watches_and_down_says_what_it_stopped(tmp_path: Path) -> None:
    root, log = tmp_path / "net", tmp_path / "second.log"
    devnet("up", "--dir", root, *SMALL, "--detach", "--json", check=True)
    second = None
    try:
        pids = _running(root)
        assert len(pids) == 2
        second = _foreground(root, "--peers", "7", log=log)
        wait_for(lambda: "already running" in log.read_text() and "pay from another terminal" in log.read_text(),
                 60, "the second up to show its view")
        text = _interrupt(second, log)
        assert second.returncode == 0, text[-2000:]
        assert "ignoring --peers 7" in text and "2 peers" in text
        assert "already running: " + ", ".join(f"{n} (pid {p})" for n, p in pids.items()) in text
        assert "detached; the devnet keeps running" in text
        assert _running(root) == pids, "the second view's Ctrl-C stopped the devnet"
        down = json.loads(devnet("down", "--dir", root, "--json", check=True).stdout)
        assert {s["name"]: s["pid"] for s in down["stopped"]} == pids
        again = devnet("down", "--dir", root, check=True)
        assert again.stdout.strip() == "nothing was running"
    finally:
        if second is not None:
            stop_process(second, signal.SIGKILL)
        devnet("down", "--dir", root, "--wipe")
    assert pids_of(root) == []


def test_a_stale_record_hides_no_peer_and_wipe_waits_for_every_holder(tmp_path: Path) -> None:
    root = tmp_path / "net"
    devnet("up", "--dir", root, *ONE, "--detach", "--json", check=True)
    holder = None
    try:
        net = Devnet.load(root)
        real = processes.live_pid(net, net.peers[0])
        assert real is not None
        gone = subprocess.Popen(["true"])
        gone.wait()
        net.pid_path("peer0").write_text(f"{gone.pid}\n")  # the record is stale: that pid is dead
        assert processes.live_pid(Devnet.load(root), net.peers[0]) == real  # found by its database lock
        status = json.loads(devnet("status", "--dir", root, "--json", check=True).stdout)
        assert status["peers"][0]["pid"] == real and status["peers"][0]["running"]
        # Something that is not a peer holds a lock on a file of the devnet.
        holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                                   "f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
                                   "print('locked', flush=True); time.sleep(120)", str(root / "events.log")],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = devnet("down", "--dir", root, "--wipe")
        assert refused.returncode == 20, refused.stderr
        assert f"still in use by pid {holder.pid}" in refused.stderr
        assert root.is_dir() and pids_of(root) == []  # the peer was stopped all the same
        stop_process(holder, signal.SIGKILL)
        wiped = devnet("down", "--dir", root, "--wipe", check=True)
        assert "nothing was running" in wiped.stdout and not root.exists()
    finally:
        if holder is not None:
            stop_process(holder, signal.SIGKILL)
        devnet("down", "--dir", root, "--wipe")
    assert pids_of(root) == []


def test_live_pid_falls_back_to_the_command_line(tmp_path: Path) -> None:
    net = layout.create(tmp_path / "net", peers=1, wallets=0, replication=1, quorum=1)
    entry = net.peers[0]
    # Not a peer, but its command line says `peer run --config <this peer's config>` (relative to its cwd).
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "peer", "run", "--config", "peer.toml"],
                            cwd=net.peer_dir("peer0"))
    try:
        assert wait_for(lambda: processes.live_pid(Devnet.load(net.root), entry), 10, "the scan") == fake.pid
        assert processes.stop_peer(Devnet.load(net.root), entry, timeout=5) == fake.pid
        assert fake.wait(timeout=10) is not None
        assert processes.live_pid(Devnet.load(net.root), entry) is None
    finally:
        stop_process(fake, signal.SIGKILL)


def test_ports_are_free_and_outside_the_ephemeral_range(tmp_path: Path) -> None:
    low, high = ephemeral_range()
    ports = free_ports(60)
    assert len(set(ports)) == 60
    assert all(layout.LOWEST_PORT <= p <= 65535 and not low <= p <= high for p in ports), (low, high, ports)
    net = layout.create(tmp_path / "net", peers=5, wallets=0)
    used = [p for e in net.peers for p in (e.port, e.api_port)]
    assert len(set(used)) == 10 and not any(low <= p <= high for p in used)


def test_a_port_base_in_the_ephemeral_range_is_warned_about(tmp_path: Path) -> None:
    low, high = ephemeral_range()
    # A listener of ours on the first port: refused (and nothing started), after the warning.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for base in range(low + 10, low + 2000):
            try:
                taken.bind(("127.0.0.1", base))
                break
            except OSError:
                continue
        taken.listen()
        proc = devnet("up", "--dir", tmp_path / "net", "--port-base", str(base), "--peers", "1", "--replication",
                      "1", "--quorum", "1", "--wallets", "0", "--detach")
    assert proc.returncode == 13, proc.stderr
    assert f"overlap the kernel's ephemeral range {low}-{high}" in proc.stderr
    assert pids_of(tmp_path / "net") == []
    # Bad parameters are refused before any port is looked at.
    proc = devnet("up", "--dir", tmp_path / "bad", "--port-base", "1", "--peers", "5", "--replication", "6",
                  "--quorum", "4", "--detach")
    assert proc.returncode == 2 and "exceeds the committee" in proc.stderr, proc.stderr
