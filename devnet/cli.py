"""The `devnet` command: a local meshpay network of real `peer run` processes on 127.0.0.1.

Exit status: 0 success; 1 unexpected error; 2 bad usage or parameters (e.g. a quorum unsafe for
the replication); 3 the directory holds something else / holds no devnet; 4 a port is in use;
5 a peer failed to start or membership did not converge (everything started is stopped again);
6 unknown peer name; 7 `check` found violations; 8 `bench` could not run.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import platformdirs
import trio
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from devnet import cli_console, layout, processes
from devnet.audit import audit
from devnet.bench import Bench, BenchConfig
from devnet.layout import Devnet, DevnetError
from devnet.view import LiveView
from gossip.links import ConnectError
from peer.cli_exit import CliFailure
from peer.cli_exit import run as run_cli
from peer.genesis import load as load_genesis

EXIT_USAGE, EXIT_DIR, EXIT_PORT, EXIT_START, EXIT_PEER, EXIT_VIOLATIONS, EXIT_BENCH = 2, 3, 4, 5, 6, 7, 8

app = typer.Typer(help="A local meshpay network to play and build on (everything on 127.0.0.1).",
                  no_args_is_help=True, add_completion=False)
# Not a terminal (a pipe, a CI log): rich would squeeze tables into 80 columns and cut addresses.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True)


Fail = CliFailure


def default_dir() -> Path:
    return Path(platformdirs.user_data_dir("meshpay")) / "devnet"


DirOption = Annotated[Path, typer.Option("--dir", envvar="MESHPAY_DEVNET_DIR", help="The devnet's directory",
                                         default_factory=default_dir, show_default="per-user data dir")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _load(root: Path) -> Devnet:
    try:
        return Devnet.load(root)
    except DevnetError as exc:
        raise Fail(str(exc), EXIT_DIR) from exc


def _peer(devnet: Devnet, name: str):
    try:
        return devnet.peer(name)
    except DevnetError as exc:
        raise Fail(str(exc), EXIT_PEER) from exc


def _check_ports(ports: list[int]) -> None:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the peer's own listener does (trio sets SO_REUSEADDR): connections of a killed
            # peer lingering in TIME_WAIT must not count as "in use".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                raise Fail(f"port 127.0.0.1:{port} is in use ({exc.strerror}); choose another --port-base", EXIT_PORT) from exc


def _start_all(devnet: Devnet, timeout: float = 40.0) -> None:
    """Start every stopped peer and wait for convergence; on failure stop them all again."""
    started = []
    try:
        for entry in devnet.peers:
            if not processes.is_running(entry, devnet):
                _check_ports([entry.port, entry.api_port])
                processes.start_peer(devnet, entry)
                started.append(entry)
        processes.wait_converged(devnet, timeout=timeout)
    except (DevnetError, Fail) as exc:
        for entry in started:
            processes.stop_peer(devnet, entry, timeout=5)
        if isinstance(exc, Fail):
            raise
        raise Fail(f"{exc}\nnothing is left running; logs are in {devnet.root / 'peers'}", EXIT_START) from exc


def _stop_all(devnet: Devnet) -> None:
    for entry in devnet.peers:
        processes.signal_peer(devnet, entry, signal.SIGTERM)
    for entry in devnet.peers:
        processes.stop_peer(devnet, entry, timeout=10)


def _balance(devnet: Devnet, address: str) -> int | None:
    """An account's balance from one of its owners (the summary needs no cross-check)."""
    with httpx.Client(timeout=2.0) as client:
        for entry in devnet.peers:
            try:
                r = client.get(f"{entry.api}/v1/accounts/{address}")
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                return r.json()["balance"]
            if r.status_code == 421:
                for owner in r.json()["error"]["owners"]:
                    if owner["api"]:
                        try:
                            r2 = client.get(f"{owner['api']}/v1/accounts/{address}")
                        except httpx.HTTPError:
                            continue
                        if r2.status_code == 200:
                            return r2.json()["balance"]
    return None


def _fmt(amount: int | None, decimals: int) -> str:
    if amount is None:
        return "?"
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**decimals)
    return f"{sign}{whole:,}" + (f".{frac:0{decimals}d}" if decimals else "")


def _summary(devnet: Devnet) -> dict:
    genesis = load_genesis(devnet.genesis_path)
    shares = {}
    for entry in devnet.peers:
        doc = processes.status(entry, timeout=2.0)
        shares[entry.name] = doc["ring_share"] if doc else None
    wallets = [{"name": w.name, "address": w.address, "balance": _balance(devnet, w.address)} for w in devnet.wallets]
    first = devnet.peers[0]
    example_to = devnet.wallets[1].address if len(devnet.wallets) > 1 else "<address>"
    return {
        "dir": str(devnet.root), "network_id": devnet.network_id, "decimals": genesis.decimals,
        "replication": devnet.replication, "quorum": devnet.quorum,
        "peers": [{"name": p.name, "peer_id": p.peer_id, "peer_port": p.port, "api": p.api, "pid": p.pid,
                   "ring_share": shares[p.name]} for p in devnet.peers],
        "wallets": wallets,
        "commands": {
            "balance": f"wallet balance -a demo1 --wallet-dir {devnet.wallet_dir()} "
                       f"--genesis {devnet.genesis_path} --peer {first.api}",
            "send": f"wallet send -a demo0 --to {example_to} --amount 12.50 --wait settled "
                    f"--wallet-dir {devnet.wallet_dir()} --password-file {devnet.password_file} "
                    f"--genesis {devnet.genesis_path} --peer {first.api}",
            "status_view": f"devnet watch --dir {devnet.root}",
            "status": f"devnet status --dir {devnet.root}",
            "stop": f"devnet down --dir {devnet.root}",
        },
    }


def _print_summary(doc: dict) -> None:
    peers = Table("peer", "id", "peer port", "api", "ring share", title="peers")
    for p in doc["peers"]:
        share = "?" if p["ring_share"] is None else f"{p['ring_share']:.0%}"
        peers.add_row(p["name"], p["peer_id"][:16], str(p["peer_port"]), p["api"], share)
    out.print(peers)
    wallets = Table("wallet", "address", "balance", title="demo wallets")
    for w in doc["wallets"]:
        wallets.add_row(w["name"], w["address"], _fmt(w["balance"], doc["decimals"]))
    out.print(wallets)
    out.print(f"network {doc['network_id'][:16]}…  replication {doc['replication']}, quorum {doc['quorum']}")
    out.print("\n[bold]send a payment[/bold]")
    print(doc["commands"]["send"])
    out.print("[bold]check a balance[/bold]")
    print(doc["commands"]["balance"])
    out.print("[bold]open the status view[/bold]")
    print(doc["commands"]["status_view"])
    out.print("[bold]stop it[/bold]")
    print(doc["commands"]["stop"])


def _watch(devnet: Devnet, stop_on_exit: bool) -> None:
    view = LiveView(devnet)
    try:
        with Live(view.render(), console=out, refresh_per_second=2) as live:
            while True:
                time.sleep(1.0)
                live.update(view.render())
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
        if stop_on_exit:
            err.print("stopping the devnet…")
            _stop_all(devnet)
            err.print("stopped (data kept; `devnet up` resumes it)")


@app.command()
def up(
    root: DirOption,
    peers: Annotated[int, typer.Option(min=1, max=64, help="Peers in the committee")] = 5,
    wallets: Annotated[int, typer.Option(min=0, max=1000, help="Funded demo wallets")] = 10,
    replication: Annotated[int, typer.Option(min=1, help="Owners per account (N)")] = 4,
    quorum: Annotated[int, typer.Option(min=1, help="Votes that certify a payment (W)")] = 3,
    port_base: Annotated[int | None, typer.Option(help="Use ports from here on (default: any free ports)")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Leave it running and return")] = False,
    fsync: Annotated[bool, typer.Option(help="Sync votes to disk (turn off only for throwaway tests)")] = True,
    json_out: JsonOption = False,
) -> None:
    """Create (or resume) a devnet, start its peers, and show a live status view."""
    if layout.is_devnet(root):
        devnet = _load(root)
        if not json_out:
            err.print(f"resuming the devnet in {root} (its data is kept)")
    else:
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise Fail(f"{root} is not empty and holds no devnet; choose another --dir", EXIT_DIR)
        ports = None
        if port_base is not None:
            ports = list(range(port_base, port_base + 2 * peers))
            if ports[-1] > 65535:
                raise Fail("--port-base leaves too few ports below 65536", EXIT_USAGE)
            _check_ports(ports)
        try:
            devnet = layout.create(root, peers=peers, wallets=wallets, replication=replication, quorum=quorum,
                                   fsync=fsync, ports=ports)
        except DevnetError as exc:
            if root.exists() and not any(root.iterdir()):
                root.rmdir()
            raise Fail(str(exc), EXIT_USAGE) from exc
    _start_all(devnet)
    doc = _summary(devnet)
    if json_out:
        print(json.dumps(doc))
    else:
        _print_summary(doc)
    if not detach:
        with cli_console.alongside(devnet, quiet=json_out):  # the web console, while the view runs
            _watch(devnet, stop_on_exit=True)


@app.command()
def watch(root: DirOption) -> None:
    """The live status view (Ctrl-C leaves the devnet running)."""
    _watch(_load(root), stop_on_exit=False)


@app.command()
def down(root: DirOption,
         wipe: Annotated[bool, typer.Option("--wipe", help="Also delete the devnet's directory")] = False,
         json_out: JsonOption = False) -> None:
    """Stop every peer (and with --wipe remove all its files)."""
    devnet = _load(root)
    _stop_all(devnet)
    still = [p.name for p in devnet.peers if processes.is_running(p, devnet)]
    if still:
        raise Fail(f"peers still running: {', '.join(still)}", EXIT_START)
    if wipe:
        shutil.rmtree(root)
    if json_out:
        print(json.dumps({"stopped": [p.name for p in devnet.peers], "wiped": wipe}))
    else:
        out.print(f"stopped {len(devnet.peers)} peers" + (f"; removed {root}" if wipe else ""))


@app.command()
def status(root: DirOption, json_out: JsonOption = False) -> None:
    """Each peer: process, ports, membership view and ring share."""
    devnet = _load(root)
    rows = []
    for p in devnet.peers:
        running = processes.is_running(p, devnet)
        doc = processes.status(p, timeout=2.0) if running else None
        rows.append({"name": p.name, "peer_id": p.peer_id, "pid": p.pid if running else None, "running": running,
                     "peer_port": p.port, "api": p.api, "members": doc["members"] if doc else None,
                     "ring_share": doc["ring_share"] if doc else None,
                     "in_flight": doc["queues"]["gateway_in_flight"] if doc else None})
    if json_out:
        print(json.dumps({"dir": str(root), "network_id": devnet.network_id, "peers": rows}))
        return
    table = Table("peer", "id", "pid", "process", "peer port", "api", "alive/suspect/dead", "ring share")
    for r in rows:
        m = r["members"]
        table.add_row(r["name"], r["peer_id"][:12], str(r["pid"] or "-"),
                      "running" if r["running"] else "stopped", str(r["peer_port"]), r["api"],
                      f"{m['alive']}/{m['suspect']}/{m['dead'] + m['left']}" if m else "-",
                      f"{r['ring_share']:.0%}" if r["ring_share"] is not None else "-")
    out.print(table)


@app.command()
def logs(root: DirOption,
         peer: Annotated[str | None, typer.Argument(help="Peer name (default: all)")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", min=0)] = 40) -> None:
    """Print (and follow) peer logs."""
    devnet = _load(root)
    entries = [_peer(devnet, peer)] if peer else devnet.peers
    offsets = {}
    for e in entries:
        path = devnet.log_path(e.name)
        text = processes.tail(devnet, e.name, lines)
        for line in text.splitlines():
            print(f"{e.name}| {line}" if len(entries) > 1 else line)
        offsets[e.name] = path.stat().st_size if path.exists() else 0
    try:
        while follow:
            time.sleep(0.3)
            for e in entries:
                path = devnet.log_path(e.name)
                if not path.exists():
                    continue
                with path.open("rb") as fh:
                    fh.seek(offsets[e.name])
                    chunk = fh.read()
                offsets[e.name] += len(chunk)
                for line in chunk.decode(errors="replace").splitlines():
                    print(f"{e.name}| {line}" if len(entries) > 1 else line, flush=True)
    except KeyboardInterrupt:
        pass


SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT, "STOP": signal.SIGSTOP,
           "CONT": signal.SIGCONT}


@app.command()
def kill(root: DirOption, peer: Annotated[str, typer.Argument(help="Peer name, e.g. peer2")],
         sig: Annotated[str, typer.Option("--signal", "-s", help="KILL, TERM, INT, STOP or CONT")] = "KILL",
         json_out: JsonOption = False) -> None:
    """Send a signal to one peer (default SIGKILL: a crash)."""
    devnet = _load(root)
    entry = _peer(devnet, peer)
    signum = SIGNALS.get(sig.upper().removeprefix("SIG"))
    if signum is None:
        raise Fail(f"unknown signal {sig!r}; use one of {', '.join(SIGNALS)}", EXIT_USAGE)
    if not processes.signal_peer(devnet, entry, signum):
        raise Fail(f"{entry.name} is not running", EXIT_PEER)
    if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        processes.wait_exit(entry, devnet, 15.0)
    if json_out:
        print(json.dumps({"peer": entry.name, "signal": signal.Signals(signum).name}))
    else:
        out.print(f"sent {signal.Signals(signum).name} to {entry.name} (pid {entry.pid})")


@app.command()
def restart(root: DirOption, peer: Annotated[str, typer.Argument(help="Peer name, e.g. peer2")],
            json_out: JsonOption = False) -> None:
    """Stop a peer if it runs, start it again on its data, and wait until it has rejoined."""
    devnet = _load(root)
    entry = _peer(devnet, peer)
    processes.stop_peer(devnet, entry)
    _check_ports([entry.port, entry.api_port])
    processes.start_peer(devnet, entry)
    try:
        processes.wait_converged(devnet, timeout=40,
                                 names=[p.name for p in devnet.peers if processes.is_running(p, devnet)])
    except DevnetError as exc:
        raise Fail(f"{exc}\n{processes.tail(devnet, entry.name, 10)}", EXIT_START) from exc
    if json_out:
        print(json.dumps({"peer": entry.name, "pid": entry.pid}))
    else:
        out.print(f"{entry.name} restarted (pid {entry.pid}) and rejoined")


@app.command()
def bench(
    root: DirOption,
    rate: Annotated[float | None, typer.Option(min=0.1, help="Offered payments per second (open loop)")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Accounts busy at once (closed loop)")] = None,
    duration: Annotated[float | None, typer.Option(min=0.5, help="Seconds of load")] = None,
    payments: Annotated[int | None, typer.Option(min=1, help="Number of payments")] = None,
    accounts: Annotated[int, typer.Option(min=2, max=20_000, help="Accounts generating load")] = 200,
    ids_out: Annotated[Path | None, typer.Option("--ids-out", help="Write the certified payment ids here")] = None,
    via: Annotated[str, typer.Option(help="binary (peer port) or http (the JSON API)")] = "binary",
    json_out: JsonOption = False,
) -> None:
    """Load the devnet and report throughput, latency and the fraction of the signature-cost bound."""
    if rate is not None and concurrency is not None:
        raise Fail("use either --rate or --concurrency, not both", EXIT_USAGE)
    if duration is not None and payments is not None:
        raise Fail("use either --duration or --payments, not both", EXIT_USAGE)
    if duration is None and payments is None:
        payments = 2000
    if via not in ("binary", "http"):
        raise Fail("--via must be binary or http", EXIT_USAGE)
    devnet = _load(root)
    if not any(processes.is_running(p, devnet) for p in devnet.peers):
        raise Fail(f"no peer of {root} is running; start it with `devnet up --dir {root} --detach`", EXIT_BENCH)
    config = BenchConfig(accounts=accounts, payments=payments, duration=duration, rate=rate, concurrency=concurrency,
                         via=via)
    progress = Progress(TextColumn("{task.description:<9}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.completed}/{task.total}"), console=err, disable=json_out, transient=True)
    tasks: dict[str, int] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    try:
        with progress:
            result = trio.run(Bench(devnet, config, report).run)
    except ConnectError as exc:
        raise Fail(f"bench failed: {exc}", EXIT_BENCH) from exc
    doc = result.as_dict()
    ids = doc.pop("certified_ids")
    if ids_out is not None:
        ids_out.write_text("\n".join(ids) + ("\n" if ids else ""))
    if json_out:
        print(json.dumps(doc))
        return
    table = Table(show_header=False, box=None)
    table.add_row("offered load", result.offered)
    table.add_row("payments", f"{result.payments} submitted, {result.certified} certified, {result.settled} settled")
    table.add_row("throughput", f"{result.throughput:.1f} settled payments/s over {result.seconds:.2f} s")
    for label, pct in (("to certified", result.certified_ms), ("to settled", result.settled_ms)):
        table.add_row(f"latency {label}", "  ".join(f"{k} {v:.1f} ms" for k, v in pct.items()))
    table.add_row("failures", ", ".join(f"{k}: {v}" for k, v in result.failures.items()) or "none")
    table.add_row("resubmitted", f"{result.resubmits} (after a gateway was lost)")
    table.add_row("signature bound", f"{result.bound_per_second:.0f} payments/s = {result.bound_formula}")
    table.add_row("fraction of bound", f"{result.fraction_of_bound:.1%}")
    out.print(table)


@app.command()
def check(root: DirOption, quiet_timeout: Annotated[float, typer.Option(min=0)] = 30.0,
          json_out: JsonOption = False) -> None:
    """The auditor: supply, replica agreement, one certificate per (sender, seq), all applied."""
    devnet = _load(root)
    running = [p for p in devnet.peers if processes.is_running(p, devnet)]
    if not running:
        raise Fail(f"no peer of {root} is running", EXIT_START)
    try:
        report = audit(devnet, quiet_timeout=quiet_timeout)
    except httpx.HTTPError as exc:
        raise Fail(f"a peer did not answer the audit: {exc}", EXIT_START) from exc
    if json_out:
        print(json.dumps(report.as_dict()))
    else:
        out.print(f"checked {len(report.peers_checked)} peers, {report.accounts} accounts, "
                  f"{report.certificates} certificates; supply {report.total_supply} (genesis {report.genesis_supply})")
        for note in report.notes:
            out.print(f"note: {note}")
        for v in report.violations:
            out.print(f"[red]VIOLATION[/red] {v}", highlight=False)
        out.print("[green]verdict: OK[/green]" if report.ok else f"[red]verdict: {len(report.violations)} violation(s)[/red]")
    if not report.ok:
        raise typer.Exit(EXIT_VIOLATIONS)


app.command(name="console")(cli_console.console)


def main() -> None:
    run_cli(app, "devnet", err)
