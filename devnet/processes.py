"""Starting, stopping and watching a devnet's `peer run` processes (real processes, 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devnet.layout import Devnet, DevnetError, PeerEntry


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_running(entry: PeerEntry, devnet: Devnet) -> bool:
    """The recorded pid is alive and is this devnet's peer (not a recycled pid)."""
    if entry.pid is None:
        return False
    try:
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        if Path(f"/proc/{entry.pid}/stat").read_text().split(") ", 1)[1][0] == "Z":
            _reap(entry.pid)
            return False
    except (OSError, IndexError):
        return True  # no /proc: trust the pid
    cmd = _cmdline(entry.pid)
    return "peer" in cmd and str(devnet.config_path(entry.name)) in cmd


def start_peer(devnet: Devnet, entry: PeerEntry) -> int:
    if is_running(entry, devnet):
        return entry.pid  # type: ignore[return-value]
    log = devnet.log_path(entry.name).open("ab")
    env = {**os.environ, "MESHPAY_LOG__FORMAT": os.environ.get("MESHPAY_LOG__FORMAT", "text")}
    env.pop("MESHPAY_PASSWORD", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "peer", "run", "--config", str(devnet.config_path(entry.name))],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        cwd=devnet.peer_dir(entry.name), env=env,
    )
    log.close()
    entry.pid = proc.pid
    devnet.save()
    return proc.pid


def signal_peer(devnet: Devnet, entry: PeerEntry, signum: int) -> bool:
    if not is_running(entry, devnet):
        return False
    os.kill(entry.pid, signum)  # type: ignore[arg-type]
    return True


def wait_exit(entry: PeerEntry, devnet: Devnet, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(entry, devnet):
            _reap(entry.pid)
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ChildProcessError):  # not our child (an earlier `devnet up`): init reaps it
        os.waitpid(pid, os.WNOHANG)


def stop_peer(devnet: Devnet, entry: PeerEntry, *, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if signal_peer(devnet, entry, signal.SIGTERM) and not wait_exit(entry, devnet, timeout):
        signal_peer(devnet, entry, signal.SIGKILL)
        wait_exit(entry, devnet, 5.0)
    entry.pid = None
    devnet.save()


def status(entry: PeerEntry, timeout: float = 1.0) -> dict | None:
    try:
        response = httpx.get(entry.api + "/v1/status", timeout=timeout)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def wait_converged(devnet: Devnet, *, timeout: float = 30.0, names: list[str] | None = None) -> None:
    """Until every running peer answers and sees all running peers alive."""
    deadline = time.monotonic() + timeout
    running = [p for p in devnet.peers if names is None or p.name in names]
    last = ""
    while time.monotonic() < deadline:
        docs = [status(p) for p in running]
        if all(d is not None and d["members"]["alive"] >= len(running) for d in docs):
            return
        dead = [p.name for p in running if not is_running(p, devnet)]
        if dead:
            tails = "; ".join(f"{n}: {tail(devnet, n, 3)}" for n in dead)
            raise DevnetError(f"peer(s) {', '.join(dead)} exited during start-up: {tails}")
        last = ", ".join(f"{p.name}={'down' if d is None else d['members']['alive']}" for p, d in zip(running, docs, strict=True))
        time.sleep(0.2)
    raise DevnetError(f"membership did not converge within {timeout:.0f} s ({last})")


def tail(devnet: Devnet, name: str, lines: int = 20) -> str:
    path = devnet.log_path(name)
    if not path.exists():
        return ""
    data = path.read_bytes()[-64 * 1024:].decode(errors="replace").splitlines()
    return "\n".join(data[-lines:])
