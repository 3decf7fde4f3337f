"""`devnet up`, `down`, `watch`, `kill` and `restart`: starting and stopping peers.

Who may stop the devnet with Ctrl-C: only the `devnet up` that started it in the foreground (it
records itself in owner.json). A second `devnet up` (or `devnet watch`) on a running devnet says so
and only watches; its Ctrl-C detaches. Every command finds peers afresh (devnet/processes.py), so a
peer restarted by another command is stopped like the others.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from devnet import faults, hosts, layout, processes
from devnet.commands.common import (
    DirOption,
    Fail,
    JsonOption,
    LogLevel,
    check_log_level,
    check_ports,
    emit,
    err,
    load,
    out,
    peer_named,
)
from devnet.commands.info import print_summary, summary
from devnet.hosts import HostsError, Unprivileged
from devnet.layout import Devnet, DevnetError, ephemeral_range
from devnet.view import LiveView
from peer.cli_exit import Exit
from peer.genesis import GenesisError, check_parameters

DEFAULTS = {"peers": 5, "wallets": 10, "replication": 4, "quorum": 3}
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT, "STOP": signal.SIGSTOP,
           "CONT": signal.SIGCONT}


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(watch)
    app.command()(kill)
    app.command()(restart)


# ---- helpers -------------------------------------------------------------------------------------------
def _pids(found: dict[str, int]) -> str:
    return ", ".join(f"{name} (pid {pid})" for name, pid in found.items())


def hosts_failure(exc: HostsError) -> Fail:
    return Fail(str(exc), Exit.PRIVILEGES if isinstance(exc, Unprivileged) else Exit.START)


def release(devnet: Devnet) -> list[str]:
    """Once no peer runs: undo every fault and remove the test hosts the devnet made (its
    records say what). What was removed, as text."""
    undone = [f"healed {f}" for f in faults.heal(devnet)]
    try:
        return undone + [f"removed {what}" for what in hosts.teardown(devnet)]
    except HostsError as exc:
        raise hosts_failure(exc) from exc


def start_all(devnet: Devnet, *, fixed_ports: bool, timeout: float = 40.0) -> list[str]:
    """Start every stopped peer and wait for convergence; on failure stop those started again.
    Returns the names started."""
    started = []
    local = hosts.kind(devnet) == hosts.LOCAL  # test hosts: each peer's ports are its namespace's own
    try:
        for entry in devnet.peers:
            if not processes.is_running(entry, devnet):
                if local:
                        check_ports([(f"{entry.name} peer port", entry.port), (f"{entry.name} API", entry.api_port)],
                                fixed=fixed_ports)
                processes.start_peer(devnet, entry)
                started.append(entry)
        processes.wait_converged(devnet, timeout=timeout)
    except (DevnetError, Fail, KeyboardInterrupt) as exc:  # Ctrl-C while starting too
        processes.stop_peers(devnet, started, timeout=5)
        if not processes.running(devnet):
            release(devnet)
        if not isinstance(exc, DevnetError):
            raise
        raise Fail(f"{exc}\nnothing is left running; logs are in {devnet.root / 'peers'}", Exit.START) from exc
    return [e.name for e in started]


def _owns(devnet: Devnet) -> bool:
    try:
        return json.loads(devnet.owner_path.read_text()).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        return False


def _claim(devnet: Devnet) -> None:
    layout.write_private(devnet.owner_path, json.dumps({"pid": os.getpid(), "since": time.time()}) + "\n")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch_until_interrupted(devnet: Devnet, *, stops_devnet: bool, preface: Callable[[], None] = lambda: None) -> None:
    """`preface()` (the summary), then the live view until Ctrl-C (or SIGTERM/SIGHUP, e.g. the
    terminal closing); then stop the devnet only if this process still owns it. An interrupt at any
    point, even during the summary, ends the same way."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    view: LiveView | None = None
    # No redirection of stdout/stderr and no refresh thread: an interrupt must never leave output
    # parked in rich's proxies (it would be lost at exit).
    live = Live(console=out, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
    try:
        preface()
        view = LiveView(devnet, stops_devnet=stops_devnet)
        live.start()
        while True:
            live.update(view.render(), refresh=True)
            stopper = view.stopped_by()
            if stopper is not None:
                live.stop()
                err.print(f"the devnet was stopped by `devnet {stopper.get('action')}` (pid {stopper.get('pid')}); "
                          "leaving the view")
                return
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()
        if not out.is_terminal:
            out.print()  # end the last view's line before what follows (a terminal's Live does it)
        if view is not None:
            view.close()
    if not stops_devnet:
        err.print(f"detached; the devnet keeps running (stop it with `devnet down --dir {devnet.root}`)")
        return
    if not _owns(devnet):
        err.print("another `devnet up` has taken this devnet over since; leaving it running")
        return
    err.print("stopping the devnet…")
    with devnet.exclusive("devnet up (Ctrl-C)"):
        stopped = processes.stop_peers(devnet)
        devnet.owner_path.unlink(missing_ok=True)
        for line in release(devnet):
            err.print(line, markup=False)
    devnet.note("down", f"stopped {_pids(stopped) or 'nothing'} (Ctrl-C in the foreground `devnet up`)")
    err.print(f"stopped {_pids(stopped) or 'nothing (no peer was running)'}; data kept, `devnet up` resumes it")


# ---- commands ----------------------------------------------------------------------------------------
def up(
    root: DirOption,
    peers: Annotated[int | None, typer.Option(min=1, max=64, help="Peers in the committee [default: 5]")] = None,
    wallets: Annotated[int | None, typer.Option(min=0, max=1000, help="Funded demo wallets [default: 10]")] = None,
    replication: Annotated[int | None, typer.Option(min=1, help="Owners per account (N) [default: 4]")] = None,
    quorum: Annotated[int | None, typer.Option(min=1, help="Votes that certify a payment (W) [default: 3]")] = None,
    port_base: Annotated[int | None, typer.Option(
        help="Use ports from here on (default: free ports outside the kernel's ephemeral range)")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Leave it running and return")] = False,
    fsync: Annotated[bool | None, typer.Option(
        help="Sync votes to disk (turn off only for throwaway tests) [default: on]")] = None,
    log_level: LogLevel = None,
    hosts_kind: Annotated[str | None, typer.Option(
        "--hosts", help="local: every peer on 127.0.0.1; netns: each peer in its own network namespace "
        "with its own address (needs root; docs/chaos.md) [default: local]")] = None,
    json_out: JsonOption = False,
) -> None:
    """Create (or resume) a devnet, start its peers, and show a live status view.

    Creation options (--peers, --wallets, --replication, --quorum, --port-base, --fsync, --hosts)
    apply only to a new devnet; on an existing one they are ignored with a warning."""
    check_log_level(log_level)
    if hosts_kind is not None and hosts_kind not in hosts.KINDS:
        raise Fail(f"--hosts must be one of {', '.join(hosts.KINDS)}", Exit.USAGE)
    root = root.expanduser().absolute()
    if layout.is_devnet(root):
        devnet = load(root)
        given = {"--peers": peers, "--wallets": wallets, "--replication": replication, "--quorum": quorum,
                 "--port-base": port_base, "--fsync/--no-fsync": fsync, "--hosts": hosts_kind}
        ignored = [f"{k} {'' if v is True or v is False else v}".strip() for k, v in given.items() if v is not None]
        if ignored:
            err.print(f"warning: ignoring {', '.join(ignored)}: the devnet in {root} already exists "
                      f"({len(devnet.peers)} peers, {len(devnet.wallets)} demo wallets, replication "
                      f"{devnet.replication}, quorum {devnet.quorum}); to create another, `devnet down --dir {root} "
                      "--wipe` first or choose another --dir", markup=False)
        if log_level is not None and log_level != devnet.log_level:
            devnet.log_level = log_level
            devnet.save()
        with layout.private_umask():
            os.chmod(root, 0o700)  # a devnet made before directories were private
        fixed = True
    else:
        devnet = _create(root, peers, wallets, replication, quorum, port_base, fsync, log_level or "info",
                         hosts_kind or hosts.LOCAL)
        fixed = port_base is not None
    try:
        with devnet.exclusive("devnet up"):
            already = processes.running(devnet)
            if hosts.of(devnet) is not None:
                hosts.ensure(devnet)  # records what it makes first: `down` cleans up even after a crash
            started = start_all(devnet, fixed_ports=fixed)
    except HostsError as exc:
        raise hosts_failure(exc) from exc
    except DevnetError as exc:
        raise Fail(str(exc), Exit.BUSY) from exc
    live = processes.running(devnet)
    owner = not already and not detach
    if started:
        devnet.note("up", f"started {_pids({n: live[n] for n in started if n in live})}")
    if owner:
        _claim(devnet)
    if already and not json_out:
        err.print(f"the devnet in {root} is already running: {_pids(already)}"
                  + (f"; started the stopped ones: {', '.join(started)}" if started else "")
                  + ("" if detach else "; this view's Ctrl-C leaves it running"), markup=False)
    def preface() -> None:
        doc = summary(devnet)
        doc["already_running"] = already
        doc["started"] = started
        if json_out:
            emit(doc)
        else:
            print_summary(doc)

    if detach:
        preface()
    else:
        from devnet.commands.console import alongside

        with alongside(devnet, quiet=json_out):  # the web console, while the view runs
            watch_until_interrupted(devnet, stops_devnet=owner, preface=preface)


def _create(root: Path, peers: int | None, wallets: int | None, replication: int | None, quorum: int | None,
            port_base: int | None, fsync: bool | None, log_level: str, hosts_kind: str) -> Devnet:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise Fail(f"{root} is not empty and holds no devnet; choose another --dir", Exit.NO_DEVNET)
    n = peers or DEFAULTS["peers"]
    try:  # cheapest first: bad parameters are refused before any port is looked at
        check_parameters(n, replication or DEFAULTS["replication"], quorum or DEFAULTS["quorum"])
    except GenesisError as exc:
        raise Fail(str(exc), Exit.USAGE) from exc
    ports = None
    topology = None
    if hosts_kind == hosts.NETNS:
        # Each peer has its own namespace, so all use the same two ports on their own address.
        try:
            topology = hosts.plan([f"peer{i}" for i in range(n)])
        except HostsError as exc:
            raise hosts_failure(exc) from exc
        base = port_base or hosts.PEER_PORT
        ports = [base, port_base + 1 if port_base else hosts.API_PORT] * n
    elif port_base is not None:
        ports = list(range(port_base, port_base + 2 * n))
        if ports[-1] > 65535:
            raise Fail("--port-base leaves too few ports below 65536", Exit.USAGE)
        low, high = ephemeral_range()
        if ports[0] <= high and ports[-1] >= low:
            err.print(f"warning: ports {ports[0]}-{ports[-1]} overlap the kernel's ephemeral range {low}-{high}: "
                      "any outgoing connection may take one of them; a base below "
                      f"{low} avoids that", markup=False)
        check_ports([(f"peer{i // 2} {'API' if i % 2 else 'peer port'}", p) for i, p in enumerate(ports)],
                    fixed=False)
    try:
        return layout.create(root, peers=n, wallets=DEFAULTS["wallets"] if wallets is None else wallets,
                             replication=replication or DEFAULTS["replication"],
                             quorum=quorum or DEFAULTS["quorum"], fsync=True if fsync is None else fsync,
                             ports=ports, log_level=log_level,
                             hosts={**topology.as_dict(), "addresses": [topology.address(i) for i in range(n)]}
                             if topology else None)
    except DevnetError as exc:
        if root.exists() and not any(root.iterdir()):
            root.rmdir()
        raise Fail(str(exc), Exit.USAGE) from exc


def watch(root: DirOption) -> None:
    """The live status view (Ctrl-C leaves the devnet running)."""
    watch_until_interrupted(load(root), stops_devnet=False)


def down(root: DirOption,
         wipe: Annotated[bool, typer.Option("--wipe", help="Also delete the devnet's directory")] = False,
         json_out: JsonOption = False) -> None:
    """Stop every peer (and with --wipe remove all its files, unless a process still uses them)."""
    devnet = load(root)
    try:
        with devnet.exclusive("devnet down"):
            stopped = processes.stop_peers(devnet)
            still = processes.running(devnet)
            if still:
                raise Fail(f"peers still running after SIGKILL: {_pids(still)}", Exit.BUSY)
            devnet.owner_path.unlink(missing_ok=True)
            removed = release(devnet)
            if stopped:
                devnet.note("down", f"stopped {_pids(stopped)}")
            if wipe:
                busy = processes.holders(devnet)
                if busy:
                    raise Fail(f"refusing to delete {devnet.root}: still in use by "
                               + "; ".join(f"pid {pid} ({cmd[:160]})" for pid, cmd in busy), Exit.BUSY)
                shutil.rmtree(devnet.root)
    except DevnetError as exc:
        raise Fail(str(exc), Exit.BUSY) from exc
    if json_out:
        emit({"stopped": [{"name": n, "pid": pid} for n, pid in stopped.items()], "wiped": wipe, "released": removed})
        return
    what = f"stopped {_pids(stopped)}" if stopped else "nothing was running"
    out.print(what + (f"; removed {devnet.root}" if wipe else ""), highlight=False)
    for line in removed:
        out.print(line, highlight=False)


def kill(root: DirOption, peer: Annotated[str, typer.Argument(help="Peer name, e.g. peer2")],
         sig: Annotated[str, typer.Option("--signal", "-s", help="KILL, TERM, INT, STOP or CONT")] = "KILL",
         json_out: JsonOption = False) -> None:
    """Send a signal to one peer (default SIGKILL: a crash)."""
    devnet = load(root)
    entry = peer_named(devnet, peer)
    signum = SIGNALS.get(sig.upper().removeprefix("SIG"))
    if signum is None:
        raise Fail(f"unknown signal {sig!r}; use one of {', '.join(SIGNALS)}", Exit.USAGE)
    pid = processes.signal_peer(devnet, entry, signum)
    if pid is None:
        raise Fail(f"{entry.name} is not running", Exit.UNREACHABLE)
    name = signal.Signals(signum).name
    if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        processes.wait_exit(entry, devnet, 15.0, pid)
    devnet.note("kill", f"sent {name} to {entry.name} (pid {pid})")
    if json_out:
        emit({"peer": entry.name, "pid": pid, "signal": name})
    else:
        out.print(f"sent {name} to {entry.name} (pid {pid})", highlight=False)


def restart(root: DirOption, peer: Annotated[str, typer.Argument(help="Peer name, e.g. peer2")],
            log_level: LogLevel = None, json_out: JsonOption = False) -> None:
    """Stop a peer if it runs, start it again on its data, and wait until it has rejoined."""
    check_log_level(log_level)
    devnet = load(root)
    entry = peer_named(devnet, peer)
    try:
        with devnet.exclusive("devnet restart"):
            old = processes.stop_peer(devnet, entry)
            if hosts.kind(devnet) == hosts.LOCAL:
                check_ports([(f"{entry.name} peer port", entry.port), (f"{entry.name} API", entry.api_port)],
                            fixed=True)
            else:  # test hosts: the ports are the namespace's own; the namespace must exist
                hosts.ensure(devnet)
            pid = processes.start_peer(devnet, entry, log_level=log_level)
    except HostsError as exc:
        raise hosts_failure(exc) from exc
    except DevnetError as exc:
        raise Fail(str(exc), Exit.BUSY) from exc
    devnet.note("restart", f"restarted {entry.name} (pid {old or '-'} -> {pid})")
    try:
        processes.wait_converged(devnet, timeout=40, names=list(processes.running(devnet)))
    except DevnetError as exc:
        raise Fail(f"{exc}\n{processes.tail(devnet, entry.name, 10)}", Exit.START) from exc
    if json_out:
        emit({"peer": entry.name, "pid": pid, "previous_pid": old})
    else:
        out.print(f"{entry.name} restarted (pid {pid}) and rejoined", highlight=False)
