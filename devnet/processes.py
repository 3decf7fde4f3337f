"""Starting, stopping and finding a devnet's `peer run` processes (real processes, 127.0.0.1).

Which process runs a peer is always decided afresh from what is outside this process: the pid
recorded in the peer's `peer.pid` (written by whichever devnet command started it), checked against
/proc; else the process holding the lock of the peer's RocksDB (from /proc/locks); else a process
whose command line is `peer run --config` with the peer's config. A pid kept in memory is at most a
hint, checked the same way. So a peer restarted by another `devnet` command is still found, and a
recycled pid is never taken for a peer.

The two functions other devnet commands build on: `live_pid(devnet, entry)` and
`start_peer(devnet, entry)` / `stop_peers(devnet, entries)`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from devnet import hosts
from devnet.layout import PRIVATE_UMASK, Devnet, DevnetError, PeerEntry, write_private

PROC = Path("/proc")


# ---- /proc -------------------------------------------------------------------------------------------
def _argv(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def command_line(pid: int) -> str:
    return " ".join(_argv(pid))


def _state(pid: int) -> str | None:
    """The process state letter (R, S, Z...), or None when there is no such process."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie is reaped here if it is our child)."""
    state = _state(pid)
    if state == "Z":
        reap(pid)
        return False
    if state is not None:
        return True
    if PROC.is_dir():
        return False
    try:  # no /proc: only the kernel's word that the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(pid: int | None = None) -> None:
    """Collect exited children (one, or all with None), so they do not linger as zombies."""
    with contextlib.suppress(ChildProcessError):  # not our child (an earlier `devnet up`): init reaps it
        if pid is not None:
            os.waitpid(pid, os.WNOHANG)
            return
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _runs_config(pid: int, config: Path) -> bool:
    """`pid` is a `peer run` whose --config is `config` (relative paths taken from its cwd)."""
    argv = _argv(pid)
    if "run" not in argv:
        return False
    value = None
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
    if value is None:
        return False
    if not os.path.isabs(value):
        try:
            value = os.path.join(os.readlink(PROC / str(pid) / "cwd"), value)
        except OSError:
            return False
    return os.path.normpath(value) == os.path.normpath(config)


def _lock_holders(path: Path) -> list[int]:
    """Pids holding a POSIX lock on `path` (RocksDB locks data/LOCK while a peer has it open)."""
    try:
        st = path.stat()
        table = (PROC / "locks").read_text()
    except OSError:
        return []
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        fields = [f for f in line.split() if f != "->"]
        if len(fields) >= 6 and fields[5] == wanted and fields[4].isdigit():
            pids.append(int(fields[4]))
    return pids


def _all_pids() -> Iterable[int]:
    try:
        names = [entry.name for entry in PROC.iterdir()]
    except OSError:
        return []
    return (int(n) for n in names if n.isdigit())


# ---- finding a peer --------------------------------------------------------------------------------
def recorded_pid(devnet: Devnet, entry: PeerEntry) -> int | None:
    try:
        text = devnet.pid_path(entry.name).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _is_peer(pid: int, devnet: Devnet, entry: PeerEntry) -> bool:
    if pid == os.getpid() or not _alive(pid):
        return False
    if not PROC.is_dir():
        return True  # nothing better to check against
    return _runs_config(pid, devnet.config_path(entry.name)) or pid in _lock_holders(devnet.data_dir(entry.name) / "LOCK")


def live_pid(devnet: Devnet, entry: PeerEntry) -> int | None:
    """The pid of the process running this peer now, or None (read fresh every time)."""
    for candidate in (recorded_pid(devnet, entry), entry.pid):
        if candidate is not None and _is_peer(candidate, devnet, entry):
            return candidate
    if not PROC.is_dir():
        return None
    for pid in _lock_holders(devnet.data_dir(entry.name) / "LOCK"):
        if _alive(pid):
            return pid
    config = devnet.config_path(entry.name)
    for pid in _all_pids():
        if pid != os.getpid() and _runs_config(pid, config) and _alive(pid):
            return pid
    return None


def is_running(entry: PeerEntry, devnet: Devnet) -> bool:
    return live_pid(devnet, entry) is not None


def running(devnet: Devnet) -> dict[str, int]:
    """Peer name -> pid of every peer running now."""
    found = {}
    for entry in devnet.peers:
        pid = live_pid(devnet, entry)
        if pid is not None:
            found[entry.name] = pid
    return found


def holders(devnet: Devnet) -> list[tuple[int, str]]:
    """Processes using the devnet's files: its peers, anything with a file in it open, and anything
    holding a lock on one of its files."""
    found: dict[int, str] = {pid: command_line(pid) for pid in running(devnet).values()}
    if not PROC.is_dir():
        return sorted(found.items())
    root = str(devnet.root) + os.sep
    inside = set()
    for path in [devnet.root, *devnet.root.rglob("*")]:
        with contextlib.suppress(OSError):
            st = path.lstat()
            inside.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    with contextlib.suppress(OSError):
        for line in (PROC / "locks").read_text().splitlines():
            fields = [f for f in line.split() if f != "->"]
            if len(fields) >= 6 and fields[5] in inside and fields[4].isdigit():
                found.setdefault(int(fields[4]), "")
    for pid in _all_pids():
        if pid in found or pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(root):
                        found[pid] = ""
                        break
    return sorted((pid, cmd or command_line(pid)) for pid, cmd in found.items() if pid != os.getpid() and _alive(pid))


def listener(port: int) -> tuple[int, str] | None:
    """The process listening on TCP `port` (any local address), if /proc can tell."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            for fd in (PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid, command_line(pid)
    return None


# ---- starting and stopping ----------------------------------------------------------------------
def start_peer(devnet: Devnet, entry: PeerEntry, *, log_level: str | None = None) -> int:
    """Start the peer unless it runs already; its pid is recorded in its peer.pid."""
    pid = live_pid(devnet, entry)
    if pid is not None:
        entry.pid = pid
        return pid
    fd = os.open(devnet.log_path(entry.name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    env = {**os.environ, "MESHPAY_LOG__FORMAT": os.environ.get("MESHPAY_LOG__FORMAT", "text")}
    env.pop("MESHPAY_PASSWORD", None)
    try:
        proc = subprocess.Popen(
            # On test hosts `ip netns exec` enters the peer's namespace, then execs: same pid.
            [*hosts.exec_prefix(devnet, entry), sys.executable, "-m", "peer", "run", "--config", str(devnet.config_path(entry.name)),
             "--log-level", log_level or devnet.log_level],
            stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=devnet.peer_dir(entry.name), env=env, umask=PRIVATE_UMASK,
        )
    finally:
        os.close(fd)
    write_private(devnet.pid_path(entry.name), f"{proc.pid}\n")
    entry.pid = proc.pid
    return proc.pid


def signal_peer(devnet: Devnet, entry: PeerEntry, signum: int) -> int | None:
    """Send `signum` to the peer's process; its pid, or None when it is not running. After SIGSTOP
    or SIGCONT it returns once the process is stopped or running again (within a few seconds):
    such a signal lands when the kernel next schedules the process, which on a busy machine can
    be after kill() returns."""
    pid = live_pid(devnet, entry)
    if pid is None:
        return None
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return None
    if signum in (signal.SIGSTOP, signal.SIGCONT):
        _wait_stopped(pid, signum == signal.SIGSTOP)
    return pid


def _wait_stopped(pid: int, stopped: bool, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(pid)
        if state is None or (state in ("T", "t")) == stopped:
            return
        time.sleep(0.01)


def wait_exit(entry: PeerEntry, devnet: Devnet, timeout: float, pid: int | None = None) -> bool:
    """Until the peer (or the given pid of it) is gone; False if it outlived `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if pid is not None:
            reap(pid)
            gone = not _alive(pid)
        else:
            gone = live_pid(devnet, entry) is None
        if gone:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_peers(devnet: Devnet, entries: Iterable[PeerEntry] | None = None, *,
               timeout: float = 10.0) -> dict[str, int]:
    """SIGTERM every running peer at once (SIGCONT first: one may be frozen), SIGKILL whoever has
    not exited after `timeout`. Returns name -> pid of the processes actually stopped."""
    chosen = list(devnet.peers if entries is None else entries)
    targets = {e.name: pid for e in chosen if (pid := live_pid(devnet, e)) is not None}
    for pid in targets.values():
        for signum in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    by_name = {e.name: e for e in chosen}
    for name, pid in targets.items():
        if not wait_exit(by_name[name], devnet, max(0.0, deadline - time.monotonic()), pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_exit(by_name[name], devnet, 5.0, pid)
    for entry in chosen:
        if entry.name in targets or live_pid(devnet, entry) is None:
            devnet.pid_path(entry.name).unlink(missing_ok=True)
            entry.pid = None
    return targets


def stop_peer(devnet: Devnet, entry: PeerEntry, *, timeout: float = 10.0) -> int | None:
    """Stop one peer (see stop_peers); the pid stopped, or None if it was not running."""
    return stop_peers(devnet, [entry], timeout=timeout).get(entry.name)


# ---- talking to peers ----------------------------------------------------------------------------
def status(entry: PeerEntry, timeout: float = 1.0) -> dict | None:
    try:
        response = httpx.get(entry.api + "/v1/status", timeout=timeout)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def wait_converged(devnet: Devnet, *, timeout: float = 30.0, names: list[str] | None = None) -> None:
    """Until every running peer answers and sees all running peers alive."""
    deadline = time.monotonic() + timeout
    running_ = [p for p in devnet.peers if names is None or p.name in names]
    last = ""
    while time.monotonic() < deadline:
        docs = [status(p) for p in running_]
        if all(d is not None and d["members"]["alive"] >= len(running_) for d in docs):
            return
        dead = [p.name for p in running_ if not is_running(p, devnet)]
        if dead:
            tails = "; ".join(f"{n}: {tail(devnet, n, 3)}" for n in dead)
            raise DevnetError(f"peer(s) {', '.join(dead)} exited during start-up: {tails}")
        last = ", ".join(f"{p.name}={'down' if d is None else d['members']['alive']}" for p, d in zip(running_, docs, strict=True))
        time.sleep(0.2)
    raise DevnetError(f"membership did not converge within {timeout:.0f} s ({last})")


def tail(devnet: Devnet, name: str, lines: int = 20) -> str:
    path = devnet.log_path(name)
    if not path.exists():
        return ""
    data = path.read_bytes()[-64 * 1024:].decode(errors="replace").splitlines()
    return "\n".join(data[-lines:])
