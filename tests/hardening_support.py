"""Helpers for the hardening tests: real `peer run` processes started with chosen environment
overrides and file-descriptor limits, and stopped for certain (SIGTERM, then SIGKILL).

The peers are started here rather than by `devnet.processes.start_peer` because an attack test
needs what a devnet does not give: a per-process `RLIMIT_NOFILE` (the limit the attack exhausts)
and per-peer environment overrides.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from crypto import keystore
from devnet import layout
from devnet.layout import PeerEntry
from peer import genesis as genesis_file
from peer.ring import Ring
from tests.test_api import Net as ApiNet
from tests.test_api import wait_for
from tests.wallet_support import REPO, gone


@dataclass
class Net(ApiNet):
    """test_api's running devnet, plus what these peers were started with."""

    env: dict[str, str] = field(default_factory=dict)
    nofile: int | None = None  # RLIMIT_NOFILE of every peer process

    def log(self, entry: PeerEntry) -> str:
        return self.devnet.log_path(entry.name).read_text(errors="replace")


def status(entry: PeerEntry, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        response = httpx.get(entry.api + "/v1/status", timeout=timeout)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def start(net: Net, entry: PeerEntry, env: dict[str, str] | None = None) -> None:
    """Start one peer (its output appended to its peer.log) with the net's limits."""
    devnet = net.devnet
    full = {**os.environ, "MESHPAY_LOG__FORMAT": "text", **net.env, **(env or {})}
    full.pop("MESHPAY_PASSWORD", None)
    nofile = net.nofile

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with devnet.log_path(entry.name).open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "peer", "run", "--config", str(devnet.config_path(entry.name))],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=devnet.peer_dir(entry.name), env={**full, "PYTHONPATH": str(REPO)}, preexec_fn=limit,
        )
    entry.pid = proc.pid
    devnet.save()


def stop(net: Net, entry: PeerEntry, timeout: float = 10.0) -> None:
    pid = entry.pid
    if pid is None:
        return
    for signum in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    if not gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        gone(pid, 5.0)
    entry.pid = None
    net.devnet.save()


def wait_converged(net: Net, entries: list[PeerEntry] | None = None, timeout: float = 40.0) -> None:
    entries = entries if entries is not None else [p for p in net.peers if p.pid is not None]
    alive = len([p for p in net.peers if p.pid is not None])

    def ready() -> bool:
        docs = [status(p) for p in entries]
        return all(d is not None and d["members"]["alive"] >= alive for d in docs)

    wait_for(ready, timeout, "the peers to answer and see each other alive", 0.2)


@contextlib.contextmanager
def running(root: Path, *, peers: int, replication: int, quorum: int, wallets: int = 4,
            env: dict[str, str] | None = None, nofile: int | None = None,
            per_peer_env: Callable[[PeerEntry], dict[str, str]] | None = None,
            skip: frozenset[str] = frozenset(), **create: Any) -> Iterator[Net]:
    """A devnet whose peers (all but those named in `skip`) run until the block ends."""
    devnet = layout.create(root, peers=peers, wallets=wallets, replication=replication, quorum=quorum,
                           fsync=False, **create)
    password = devnet.password()
    keys = {w.name: keystore.load(Path(w.key_file), password) for w in devnet.wallets}
    genesis = genesis_file.load(devnet.genesis_path)
    net = Net(devnet, genesis, Ring(genesis.committee, genesis.replication, genesis.vnodes), keys,
              dict(env or {}), nofile)
    try:
        started = [entry for entry in devnet.peers if entry.name not in skip]
        for entry in started:
            start(net, entry, per_peer_env(entry) if per_peer_env else None)
        wait_converged(net, started)
        yield net
    finally:
        for entry in devnet.peers:
            stop(net, entry)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
