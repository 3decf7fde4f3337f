"""Test hosts for real: `devnet up --hosts netns` puts each peer in its own network namespace, and
the fault commands cut, slow and freeze them (needs root, `ip`, `nft` and `iptables-nft`; skipped
with the reason otherwise).

- A 3-peer devnet on three namespaces (same port everywhere; peer0 listens on the wildcard address
  and advertises its own): a payment across hosts, a partition whose rules are in the namespaces
  and which the peers really see, heal (rules gone, the cut-off peer catches up, the audit
  passes), a slowed link whose measured delay is the one asked for, pause/resume, and `down`
  removing every namespace, link and the bridge.
- `devnet up --hosts netns` SIGKILLed mid-setup: `devnet down` removes what it made, from its
  record, and nothing else (a look-alike namespace and bridge survive).
- Without the privileges: a clear error naming them, exit 21, nothing created.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from devnet import faults, hosts, linkprobe, netns, processes
from devnet.cli import app
from devnet.commands.common import err
from devnet.layout import Devnet
from peer.cli_exit import run as run_cli
from tests.devnet_support import REPO, env, pids_of, stop_process, wait_for
from tests.wallet_support import Result, wallet

SMALL = ("--peers", "3", "--replication", "3", "--quorum", "2", "--wallets", "2", "--no-fsync")


def _unavailable() -> str | None:
    try:
        hosts.require({**hosts.NEEDS, **faults.QUEUE_TOOLS}, "the test hosts tests")
    except hosts.Unprivileged as exc:
        return str(exc)
    if not faults.NFQUEUE_PROC.exists():
        return f"the kernel has no NFQUEUE ({faults.NFQUEUE_PROC} is missing)"
    return None


REASON = _unavailable()
needs_netns = pytest.mark.skipif(REASON is not None, reason=f"needs root and network namespaces: {REASON}")


def dv(*args: str | Path, check: bool = True) -> Result:
    """`devnet ARGS` in this process (no interpreter start-up per command on a loaded machine)."""
    with CliRunner().isolation() as (stdout, stderr, _):
        try:
            run_cli(app, "devnet", err, [str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        sys.stdout.flush()
        sys.stderr.flush()
        result = Result(code, stdout.getvalue().decode(), stderr.getvalue().decode())
    assert not check or code == 0, str(result)
    return result


def members_alive(entry) -> int | None:
    doc = processes.status(entry, timeout=3.0)
    return doc["members"]["alive"] if doc else None


def ruleset(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True,
                          check=True, timeout=30).stdout


@needs_netns
def test_netns_devnet_partition_heal_slow_pause_and_down(tmp_path: Path) -> None:
    root = tmp_path / "net"
    up = dv("up", "--dir", root, "--hosts", "netns", *SMALL, "--detach", "--json", check=False)
    net = Devnet.load(root) if (root / "devnet.json").exists() else None
    try:
        assert up.code == 0, str(up)
        assert net is not None
        topo = hosts.of(net)
        assert topo is not None
        # Distinct addresses in the devnet's own namespaces, the same ports everywhere.
        assert [p.host for p in net.peers] == [topo.address(i) for i in range(3)]
        assert {p.port for p in net.peers} == {hosts.PEER_PORT} and {p.api_port for p in net.peers} == {hosts.API_PORT}
        assert all(netns.exists(ns) for ns in topo.namespaces)
        assert 'listen_host = "0.0.0.0"' in net.config_path("peer0").read_text()
        # peer0 listens on the wildcard address; the others know it by the address it advertises.
        listed = httpx.get(net.peers[1].api + "/v1/peers", timeout=10).json()["peers"]
        row = next(r for r in listed if r["peer_id"] == net.peers[0].peer_id)
        assert (row["host"], row["port"]) == (topo.address(0), hosts.PEER_PORT)

        # A payment across hosts: the wallet (on the host) through peer1, owners in three namespaces.
        wallet_env = {"MESHPAY_WALLET_DIR": str(net.wallet_dir()), "MESHPAY_WALLET_PASSWORD_FILE": str(net.password_file),
                      "MESHPAY_GENESIS": str(net.genesis_path), "MESHPAY_PEER": net.peers[1].api}

        def pay(amount: str) -> None:
            sent = wallet("send", "-a", "demo0", "--to", "demo1", "--amount", amount, "--timeout", "60", env=wallet_env)
            assert sent.code == 0, str(sent)

        pay("1.00")

        # Partition peer0 from the rest: drop rules at each receiver, and the peers see the cut.
        fault = json.loads(dv("partition", "--dir", root, "peer0", "/", "peer1,peer2", "--json").out)
        assert fault["kind"] == "partition"
        assert f"ip saddr {{ {topo.address(1)}, {topo.address(2)} }} drop" in ruleset(topo.namespace("peer0"))
        assert f"ip saddr {topo.address(0)} drop" in ruleset(topo.namespace("peer2"))
        wait_for(lambda: members_alive(net.peers[0]) == 1 and members_alive(net.peers[1]) == 2, 60,
                 "the peers to notice the partition")
        pay("2.00")  # the majority side (2 of 3 owners) still certifies
        assert json.loads(dv("heal", "--dir", root, "--json").out)["healed"]
        assert all(ruleset(ns) == "" for ns in topo.namespaces)
        wait_for(lambda: all(members_alive(p) == 3 for p in net.peers), 60, "membership to heal")
        check = dv("check", "--dir", root, "--quiet-timeout", "60", "--json", check=False)
        assert check.code == 0, str(check)  # peer0 caught up with the payment it missed
        assert json.loads(check.out)["certificates"] == 2

        # Slow peer1's links: 40 +- 5 ms one way, both directions; an unslowed link stays fast.
        dv("slow", "--dir", root, "peer1", "--delay", "40ms", "--jitter", "5ms")
        assert "queue num" in ruleset(topo.namespace("peer0")) and "queue num" in ruleset(topo.namespace("peer1"))
        delayers = [f["delayer"]["pid"] for f in faults.active(net) if f.get("delayer")]
        assert len(delayers) == 1 and "devnet.delayer" in processes.command_line(delayers[0])
        there = linkprobe.measure(topo.namespace("peer1"), topo.namespace("peer0"), topo.address(0), count=200)
        back = linkprobe.measure(topo.namespace("peer0"), topo.namespace("peer1"), topo.address(1), count=200)
        direct = linkprobe.measure(topo.namespace("peer0"), topo.namespace("peer2"), topo.address(2), count=200)
        print("slow 40+-5 ms:", there.as_dict(), back.as_dict(), "unslowed:", direct.as_dict())
        # At least the delay asked for (minus the jitter), and not wildly more; the other link untouched.
        assert there.percentile(1) >= 35 and there.percentile(50) < 120 and back.percentile(1) >= 35
        assert direct.percentile(50) < 20 and there.received == there.sent
        dv("heal", "--dir", root)
        assert all(ruleset(ns) == "" for ns in topo.namespaces)
        assert "devnet.delayer" not in processes.command_line(delayers[0])
        assert linkprobe.measure(topo.namespace("peer1"), topo.namespace("peer0"), topo.address(0), count=50).percentile(50) < 20

        # Pause and resume: the process is stopped, then runs again.
        pid = processes.live_pid(net, net.peers[2])
        dv("pause", "--dir", root, "peer2")
        assert processes._state(pid) == "T"
        dv("resume", "--dir", root, "peer2")
        wait_for(lambda: processes._state(pid) != "T", 10, "peer2 to run again")
    finally:
        down = dv("down", "--dir", root, "--json", check=False)
    assert down.code == 0, str(down)
    assert net is not None and hosts.leftovers(net) == [] and not hosts.record_path(net).exists()
    assert any(line.startswith("removed bridge") for line in json.loads(down.out)["released"])
    assert pids_of(root) == []


@needs_netns
def test_down_cleans_up_after_up_is_killed_mid_setup(tmp_path: Path) -> None:
    root = tmp_path / "net"
    # Look-alikes that are not this devnet's: they must survive its `down`.
    decoy_ns, decoy_br = "mpdecoy-peer0", "mpdecoybr"
    subprocess.run(["ip", "netns", "add", decoy_ns], check=True, timeout=30)
    subprocess.run(["ip", "link", "add", decoy_br, "type", "bridge"], check=True, timeout=30)
    proc = subprocess.Popen([sys.executable, "-m", "devnet", "up", "--dir", str(root), "--hosts", "netns", *SMALL,
                             "--detach"], cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        record = root / hosts.RECORD
        wait_for(record.exists, 120, "the hosts record")
        names = json.loads(record.read_text())["namespaces"]
        wait_for(lambda: any(netns.exists(n) for n in names), 60, "the first namespace")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        net = Devnet.load(root)
        made = hosts.leftovers(net)
        print("made before the kill:", made)
        assert made  # something was made, and the record names it
        dv("down", "--dir", root)
        assert hosts.leftovers(net) == [] and not record.exists()
        assert netns.exists(decoy_ns)
        assert subprocess.run(["ip", "link", "show", decoy_br], capture_output=True, timeout=30).returncode == 0
        assert pids_of(root) == []
    finally:
        stop_process(proc, signal.SIGKILL)
        if (root / "devnet.json").exists():
            dv("down", "--dir", root, check=False)
        subprocess.run(["ip", "netns", "del", decoy_ns], timeout=30)
        subprocess.run(["ip", "link", "del", decoy_br], timeout=30)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop capabilities")
def test_without_privileges_a_clear_error_and_nothing_made(tmp_path: Path) -> None:
    root = tmp_path / "net"
    proc = subprocess.run(["setpriv", "--bounding-set=-net_admin,-sys_admin", "--", sys.executable, "-m", "devnet",
                           "up", "--dir", str(root), "--hosts", "netns", *SMALL, "--detach"],
                          capture_output=True, text=True, cwd=REPO, env=env(), timeout=120)
    if proc.returncode != 0 and "setpriv" in proc.stderr and "devnet" not in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.returncode == 21, proc.stderr
    assert "CAP_NET_ADMIN" in proc.stderr and "CAP_SYS_ADMIN" in proc.stderr and "root" in proc.stderr
    assert not root.exists()


def test_faults_on_a_local_devnet_are_refused_with_the_way_forward(tmp_path: Path) -> None:
    from devnet import layout

    root = tmp_path / "net"
    layout.create(root, peers=3, wallets=0, replication=3, quorum=2, fsync=False)
    for args in (("partition", "peer0", "/", "peer1"), ("slow", "peer0", "--delay", "50ms"),
                 ("chaos", "--nemesis", "kill,partition", "--duration", "30")):
        refused = dv(*args, "--dir", root, check=False)
        assert refused.code == 2 and "--hosts netns" in refused.err, str(refused)
